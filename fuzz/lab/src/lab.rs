//! The small lab every datagram input runs in: five nodes, cell 0 = nodes 0–3 on a ring,
//! node 4 alone in cell 1 linked to node 0. Node 0 is the node under test, a gateway with
//! every sub-machine on — time layer, thermal subsystem, object store, small-group BFT,
//! signed claims, tree-head gossip, the authorities' threshold key (orders, revocations)
//! and protocol version 3 (so it accepts versions 2 and 3 and every kind) — with real
//! Ed25519 frame authentication, as the agent runs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lightcone_core::clock::{clock_config_in, lab_sky, TimeLayer};
use lightcone_core::config::{AgentConfig, HierAddr, Neighbor, PeerInfo, Role, TimeConfig};
use lightcone_core::directory::Directory;
use lightcone_core::heat::config::{ThermalConfig, DEFAULT_INTERVAL_NS};
use lightcone_core::heat::model::LayerThermal;
use lightcone_core::params::Params;
use lightcone_core::store::config::StoreConfig;
use lightcone_core::store::Class;
use lightcone_core::time::Instant;
use lightcone_core::trust::bft::BftParams;
use lightcone_core::trust::threshold::{dkg, Group, Share};
use lightcone_core::update::Build;
use lightcone_core::wire::Auth;
use lightcone_core::{Node, Outbox};
use lightcone_timing::NodeClock;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Nodes in the lab.
pub const NODES: u32 = 5;
/// The node the datagram target feeds.
pub const UNDER_TEST: u32 = 0;
/// When the lab starts (emulated); seeds and inputs count from here.
pub const T0: Instant = Instant::from_nanos(1_000_000_000);
/// The lab's seed (keys, RNGs, the pulsar sky, the authorities' key generation).
pub const SEED: u64 = 17;
/// Outbox bounds of every call (the agent's defaults are larger; these are the bounds the
/// target checks).
pub const CAP_TRANSMITS: usize = 4096;
pub const CAP_EVENTS: usize = 1024;

/// The lab: directory, secrets, links and the authorities' threshold key.
pub struct Lab {
    pub dir: Arc<Directory>,
    pub secrets: Vec<[u8; 32]>,
    /// Per node: (neighbour, one-way delay ns), ascending.
    pub links: Vec<Vec<(u32, u64)>>,
    pub peers: Vec<PeerInfo>,
    /// The authorities (ids 100–102, 2 of 3) and their group.
    pub shares: BTreeMap<u32, Share>,
    pub group: Group,
}

fn addr(cell: u16, tile: u16) -> HierAddr {
    HierAddr {
        layer: 0,
        cluster: 0,
        cell,
        tile,
    }
}

/// The lab (built once per process).
pub fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let addrs = [addr(0, 0), addr(0, 1), addr(0, 2), addr(0, 3), addr(1, 0)];
        let roles = [
            Role::Gateway,
            Role::Authority,
            Role::Tile,
            Role::Tile,
            Role::Gateway,
        ];
        let secrets: Vec<[u8; 32]> = (0..NODES as u8).map(|i| [i + 1; 32]).collect();
        let peers: Vec<PeerInfo> = (0..NODES as usize)
            .map(|i| PeerInfo {
                name: format!("n{i}"),
                id: i as u32,
                addr: addrs[i],
                role: roles[i],
                public_key_hex: hex(SigningKey::from_bytes(&secrets[i])
                    .verifying_key()
                    .as_bytes()),
                position_au: [1.0, 0.001 * i as f64, 0.0],
            })
            .collect();
        let dir = Arc::new(Directory::from_peers(&peers).expect("the lab's directory"));
        let ms = |m: u64| m * 1_000_000;
        let mut links = vec![Vec::new(); NODES as usize];
        for (a, b) in [(0u32, 1u32), (1, 2), (2, 3), (3, 0), (0, 4)] {
            links[a as usize].push((b, ms(2)));
            links[b as usize].push((a, ms(2)));
        }
        for l in &mut links {
            l.sort_unstable();
        }
        let mut rng = ChaCha20Rng::seed_from_u64(SEED);
        let (shares, group) = dkg(&[100, 101, 102], 2, &mut rng).expect("2-of-3 key generation");
        Lab {
            dir,
            secrets,
            links,
            peers,
            shares,
            group,
        }
    })
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The parameters of every lab node: the agent's defaults with the watch's signed claims
/// and tree-head gossip on, verdicts by the cell's BFT group (all off by default) and real
/// Ed25519.
pub fn params() -> Params {
    let mut p = Params::default();
    p.watch.signed_claims = true;
    p.watch.bft_verdicts = true;
    p.watch.log_heads = true;
    p.auth = Auth::Ed25519;
    p
}

fn agent_config(id: u32) -> AgentConfig {
    let lab = lab();
    let servers = if id == 1 { Vec::new() } else { vec![1] };
    AgentConfig {
        lab: "fuzz".into(),
        id,
        time_scale: 1.0,
        seed: SEED ^ u64::from(id),
        secret_key_hex: hex(&lab.secrets[id as usize]),
        secret_key_file: None,
        udp_port: 7946,
        control_socket: PathBuf::from("/nonexistent"),
        peers: lab.peers.clone(),
        neighbors: lab.links[id as usize]
            .iter()
            .map(|(n, d)| Neighbor {
                id: *n,
                ifname: format!("e{n}"),
                local_ip: Ipv4Addr::new(198, 18, 0, 1),
                peer_ip: Ipv4Addr::new(198, 18, 0, 2),
                delay_emulated_ns: *d,
            })
            .collect(),
        epoch_monotonic_ns: None,
        epoch_uncertainty_ns: 0,
        time: Some(TimeConfig {
            servers,
            poll_interval_ns: 1_000_000_000,
            pulsar_integration_s: 60.0,
            asymmetry_bound_s: 1e-4,
            sky_seed: SEED,
        }),
        boot: 1,
        thermal: None,
        protocol_version: Some(3),
        store: None,
        operator_public_key_hex: None,
        revoked_ids: Vec::new(),
        authorities_key_hex: None,
        directory_cert_hex: None,
        order_serial_floor: 0,
        trust: None,
        approved_builds: Vec::new(),
        certificates: Vec::new(),
    }
}

/// Builds lab node `id` with every sub-machine on, not yet started.
pub fn build_node(id: u32, now: Instant) -> Node {
    let lab = lab();
    let cfg = agent_config(id);
    let clock = clock_config_in(&cfg, &lab.dir)
        .expect("the lab's clock configuration")
        .expect("a time layer");
    let time = TimeLayer::new(
        NodeClock::new(clock, now.as_nanos()).expect("the lab's clock"),
        Arc::new(lab_sky(SEED)),
    );
    let thermal = ThermalConfig {
        layers: BTreeMap::from([(0u16, LayerThermal::default())]),
        interval_ns: DEFAULT_INTERVAL_NS,
    };
    let store = StoreConfig::with_class(Class::new("fuzz", 2, 4, 2).expect("the lab's class"));
    let mut node = Node::with_directory(
        id,
        cfg.seed,
        lab.secrets[id as usize],
        &lab.links[id as usize],
        lab.dir.clone(),
        params(),
        now,
    )
    .expect("the lab's node")
    .with_time(time)
    .with_heat(&thermal, now)
    .expect("the lab's thermal configuration")
    .with_store(&store, now)
    .expect("the lab's store");
    node.set_build(Build::new(3).expect("version 3"));
    node.set_trust(lab.group.key);
    node.enable_bft(BftParams {
        base_timeout: Duration::from_millis(500),
        ..BftParams::default()
    })
    .expect("the cell's BFT group");
    node
}

/// The node under test, started at [`T0`] (what its start sent is dropped); each input
/// runs on a clone of it, so every input starts from the same state.
pub fn node_under_test() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let mut n = build_node(UNDER_TEST, T0);
        let mut out = Outbox::new(CAP_TRANSMITS, CAP_EVENTS);
        n.start(T0, &mut out);
        n
    })
}

/// The signing key of lab node `id`, if there is one.
pub fn key_of(id: u32) -> Option<SigningKey> {
    lab().secrets.get(id as usize).map(SigningKey::from_bytes)
}
