//! The deterministic in-process harness: N [`Node`]s in virtual time over modeled links.
//!
//! A discrete-event loop (one binary heap ordered by time, then the order of the call that
//! queued an event, then its place in that call) delivers datagrams after each link's
//! delay, drops them with the link's loss probability, and wakes each node at its
//! [`Node::poll_timeout_order`] to call [`Node::handle_timeout`] — the core's one contract,
//! the same as the tokio driver's; the simulator keeps no timer table. Crashes, restarts,
//! link cuts and partitions are method calls. Everything random comes from one seeded
//! ChaCha8 generator, and every delivered datagram, emitted event and command result is
//! folded into a SHA-256 trace hash, so one seed gives one trace (`tests/harness.rs` runs a
//! seed twice and compares; `tests/trace_hashes.rs` holds three seeds' hashes).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use lightcone_core::addr::{HierAddr, Role};
use lightcone_core::clock::{clock_config, lab_sky, TimeLayer};
use lightcone_core::config::{AgentConfig, ConfigError};
use lightcone_core::directory::{DirEntry, Directory};
use lightcone_core::io::{Command, CommandError, Event, Input, Outbox, Reply};
use lightcone_core::node::Node;
use lightcone_core::params::Params;
use lightcone_core::time::Instant;
use lightcone_core::view::TimeView;
use lightcone_core::wire::Auth;
use lightcone_timing::{NodeClock, NodeClockConfig, PulsarArray, TimeMetrics};

// Staged rollout with health gates (issue 18).
pub mod rollout;
mod shaped;
pub use shaped::LinkModelError;

/// Most datagrams [`Sim::capture`] keeps.
pub const MAX_CAPTURED: usize = 100_000;

/// Parameters for harness runs: defaults, with the cheap test digest instead of Ed25519 in
/// debug builds (unoptimised curve arithmetic would make multi-node tests take minutes).
/// Release builds (the benchmark) use Ed25519.
pub fn test_params() -> Params {
    let mut p = Params::default();
    if cfg!(debug_assertions) {
        p.auth = Auth::TestDigest;
    }
    p
}

/// A lab layout for the harness: nodes (address, role) and undirected links with delays.
#[derive(Debug, Clone, Default)]
pub struct Topo {
    pub nodes: Vec<(HierAddr, Role)>,
    pub links: Vec<(u32, u32, Duration)>,
}

impl Topo {
    fn tile(cell: u16, tile: u16) -> HierAddr {
        HierAddr {
            layer: 0,
            cluster: 0,
            cell,
            tile,
        }
    }

    /// One cell of `n` tiles: a ring plus `chords` random chords per tile (degree ≈ 2 +
    /// 2·chords), every link `delay` long. Small diameter, several disjoint paths.
    pub fn cell(n: u32, chords: u32, delay: Duration, seed: u64) -> Topo {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x70b0);
        let nodes = (0..n)
            .map(|i| (Self::tile(0, i as u16), Role::Tile))
            .collect();
        let mut set = BTreeSet::new();
        for i in 0..n {
            if n > 1 {
                let j = (i + 1) % n;
                if i != j {
                    set.insert((i.min(j), i.max(j)));
                }
            }
            for _ in 0..chords {
                let j = rng.gen_range(0..n);
                if j != i {
                    set.insert((i.min(j), i.max(j)));
                }
            }
        }
        Topo {
            nodes,
            links: set.into_iter().map(|(a, b)| (a, b, delay)).collect(),
        }
    }

    /// `cells` cells of `tiles` each in one cluster; tile 0 of each cell is its gateway, and
    /// gateways form a ring with `inter_delay` links. Cells are rings with one chord each.
    pub fn cluster(
        cells: u16,
        tiles: u16,
        intra_delay: Duration,
        inter_delay: Duration,
        seed: u64,
    ) -> Topo {
        let mut t = Topo::default();
        for c in 0..cells {
            let base = t.nodes.len() as u32;
            let cell = Topo::cell(u32::from(tiles), 1, intra_delay, seed + u64::from(c));
            for (i, _) in cell.nodes.iter().enumerate() {
                let role = if i == 0 { Role::Gateway } else { Role::Tile };
                t.nodes.push((Self::tile(c, i as u16), role));
            }
            t.links
                .extend(cell.links.iter().map(|(a, b, d)| (a + base, b + base, *d)));
        }
        for c in 0..u32::from(cells) {
            let n = u32::from(cells);
            let (a, b) = (c, (c + 1) % n);
            if a != b && !(n == 2 && c == 1) {
                t.links
                    .push((a * u32::from(tiles), b * u32::from(tiles), inter_delay));
            }
        }
        t
    }
}

impl Topo {
    /// A backbone like `topologies/backbone.yaml`: one layer per entry of `ring_delays`,
    /// each of three clusters of one star cell of three tiles (tile 0 the gateway, 50 ms
    /// cell links) and one authority (10 ms to cluster 0's gateway); a layer's gateways form
    /// a ring of `ring_delays[layer]` links, and `system_delays[l]` links cluster 0's
    /// gateway of layer `l` to that of layer `l + 1`. Node `10·layer + 3·cluster + tile` is
    /// a tile, node `10·layer + 9` the layer's authority.
    pub fn backbone(ring_delays: &[Duration], system_delays: &[Duration]) -> Topo {
        let mut t = Topo::default();
        let cell_delay = Duration::from_millis(50);
        for (l, ring) in ring_delays.iter().enumerate() {
            let layer = l as u16;
            let base = 10 * l as u32;
            for c in 0..3u16 {
                for tile in 0..3u16 {
                    let role = if tile == 0 { Role::Gateway } else { Role::Tile };
                    let addr = HierAddr {
                        layer,
                        cluster: c,
                        cell: 0,
                        tile,
                    };
                    t.nodes.push((addr, role));
                }
                let gw = base + 3 * u32::from(c);
                t.links.push((gw, gw + 1, cell_delay));
                t.links.push((gw, gw + 2, cell_delay));
            }
            let auth = HierAddr {
                layer,
                cluster: u16::MAX,
                cell: u16::MAX,
                tile: 0,
            };
            t.nodes.push((auth, Role::Authority));
            t.links.push((base + 9, base, Duration::from_millis(10)));
            for c in 0..3u32 {
                t.links
                    .push((base + 3 * c, base + 3 * ((c + 1) % 3), *ring));
            }
        }
        for (l, d) in system_delays.iter().enumerate() {
            let (a, b) = (10 * l as u32, 10 * (l as u32 + 1));
            if (b as usize) < t.nodes.len() {
                t.links.push((a, b, *d));
            }
        }
        t
    }
}

#[derive(Debug, Clone)]
struct LinkState {
    delay: Duration,
    loss_ppm: u32,
    up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver {
        to: u32,
        from: u32,
        bytes: Vec<u8>,
    },
    /// The node's earliest timer deadline, as [`Node::poll_timeout`] gave it.
    Wake {
        node: u32,
    },
    /// First boot of a node created stopped (see [`Sim::staggered`]).
    Boot {
        node: u32,
    },
    /// A copy a shaped link direction delivers (see `shaped.rs`): offer number `offer` of
    /// its direction, sent at `sent`; `discard`: corrupted where the receiving host's
    /// checks drop it.
    Shaped {
        to: u32,
        from: u32,
        bytes: Vec<u8>,
        offer: u64,
        sent: Instant,
        discard: bool,
    },
    /// The transmitter of shaped direction `from → to` frees: start its waiting copies
    /// (see `shaped.rs`, traffic classes).
    ShapedStart {
        from: u32,
        to: u32,
    },
}

/// The harness. Node ids are indices into the topology's node list.
#[derive(Clone)]
pub struct Sim {
    now: Instant,
    nodes: Vec<Option<Node>>,
    secrets: Vec<[u8; 32]>,
    node_links: Vec<Vec<(u32, u64)>>,
    dir: Arc<Directory>,
    params: Params,
    seed: u64,
    links: BTreeMap<(u32, u32), LinkState>,
    /// Events by (time, order, position within the call that queued it). Every call into
    /// a node gets a fresh order, which the node also stamps on the timers the call sets
    /// ([`Node::set_call_order`]): a wake-up queued at `Node::poll_timeout_order` sits
    /// exactly where a per-timer entry queued by that call would.
    queue: BinaryHeap<Reverse<(Instant, u64, u64, Ev)>>,
    /// The (deadline, order) each node's latest queued wake-up is for (`None`: none).
    /// Not a timer table: the node owns its timers; this only avoids queueing one
    /// wake-up twice.
    wakes: Vec<Option<(Instant, u64)>>,
    next_seq: u64,
    rng: ChaCha8Rng,
    trace: Sha256,
    /// Every event emitted, with time and node (cleared by [`Sim::take_events`]).
    events: Vec<(Instant, u32, Event)>,
    pub delivered: u64,
    pub lost: u64,
    /// Boots per node so far: each boot's replica epoch.
    boots: Vec<u32>,
    /// Delivered datagrams (from, to, bytes) while capturing (adversary tests), at most
    /// [`MAX_CAPTURED`].
    captured: Option<Vec<(u32, u32, Vec<u8>)>>,
    /// Clock configuration per node (`None`: no time layer) and the shared pulsar sky.
    clocks: Vec<Option<NodeClockConfig>>,
    sky: Arc<PulsarArray>,
    /// Link directions carried by the lab's shaper (`shaped.rs`); the rest are plain.
    shaped: shaped::Shaped,
    /// Per node, the RNG seed its configuration gives ([`Sim::from_configs`]); `None`: the
    /// harness derives it from the simulation's seed.
    node_seeds: Option<Vec<u64>>,
    /// The thermal subsystem every node runs (issue 15); `None`: off.
    heat: Option<lightcone_core::heat::config::ThermalConfig>,
    /// The object store every node runs (issue 16); `None`: off.
    store: Option<lightcone_core::store::config::StoreConfig>,
    /// Events taken off the queue so far (deliveries, wake-ups, boots).
    processed: u64,
    /// The build each node runs from its next boot on (issue 18); absent: the default.
    builds: BTreeMap<u32, lightcone_core::update::Build>,
    /// The authorities' threshold key every node trusts from its boot (configs'
    /// `authorities_key_hex`, as the agent does), if any.
    authorities: Option<ed25519_dalek::VerifyingKey>,
    /// Approved builds (issue 18's attestation, configs' `approved_builds`): when any,
    /// every node boots measured ([`attest::twin_build`] of its build and its
    /// configuration's hash) and requires its neighbours to attest an approved build.
    approvals: Vec<lightcone_core::trust::log::Entry>,
    /// The authorities' certificate of the directory (checked in `from_configs`): the
    /// first entry of every node's transparency log, as in the lab.
    directory_cert: Option<[u8; 64]>,
    /// Key certificates issued after the start ([`Sim::rotate_key`]): a node booted later
    /// applies them all, as an agent does its configuration's `certificates`.
    certificates: Vec<lightcone_core::trust::log::Entry>,
    /// Each node's configuration hash (JSON, SHA-256), from [`Sim::from_configs`].
    config_hashes: Vec<[u8; 32]>,
}

/// A modelled link for [`Sim::from_configs`]: both directions get the same one-way delay
/// and loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimLink {
    pub a: u32,
    pub b: u32,
    pub delay: Duration,
    /// Independent random loss, parts per million (0..=1,000,000).
    pub loss_ppm: u32,
}

/// Why [`Sim::from_configs`] refused its input. Nothing was built.
#[derive(Debug)]
pub enum SimError {
    /// No configuration was given.
    NoNodes,
    /// Configuration `index` is for node `id`: configurations must be given in id order.
    ConfigOrder { index: usize, id: u32 },
    /// The directory of the first configuration has `peers` entries for `configs` nodes.
    DirectorySize { peers: usize, configs: usize },
    /// A link names a node that is not configured, or joins a node to itself.
    BadLink { a: u32, b: u32 },
    /// A link's loss is above 1,000,000 ppm.
    BadLoss { a: u32, b: u32, loss_ppm: u32 },
    /// A configuration lists a neighbour no link reaches.
    MissingLink { node: u32, neighbour: u32 },
    /// A node's configuration is not one the core accepts.
    Config { node: u32, error: ConfigError },
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::NoNodes => write!(f, "no node to simulate"),
            SimError::ConfigOrder { index, id } => write!(
                f,
                "configuration {index} is for node {id}: give the configurations in id order"
            ),
            SimError::DirectorySize { peers, configs } => write!(
                f,
                "the directory lists {peers} peers but {configs} configurations were given"
            ),
            SimError::BadLink { a, b } => {
                write!(f, "link {a}--{b} must join two different configured nodes")
            }
            SimError::BadLoss { a, b, loss_ppm } => {
                write!(f, "link {a}--{b}: loss {loss_ppm} ppm is above 1000000 ppm")
            }
            SimError::MissingLink { node, neighbour } => write!(
                f,
                "node {node} lists neighbour {neighbour} but no link joins them"
            ),
            SimError::Config { node, error } => write!(f, "node {node}: {error}"),
        }
    }
}

impl std::error::Error for SimError {}

impl Sim {
    pub fn new(topo: &Topo, seed: u64, params: Params) -> Sim {
        Sim::with_clocks(topo, seed, params, Vec::new())
    }

    /// Like [`Sim::new`], with a time layer on every node whose entry in `clocks` is
    /// `Some` (missing entries: none). Time messages travel as authenticated datagrams over
    /// the modeled links like every other payload; the harness's virtual time is the
    /// ground truth the clocks' errors are measured against.
    pub fn with_clocks(
        topo: &Topo,
        seed: u64,
        params: Params,
        mut clocks: Vec<Option<NodeClockConfig>>,
    ) -> Sim {
        clocks.resize(topo.nodes.len(), None);
        let mut krng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973);
        let secrets: Vec<[u8; 32]> = topo.nodes.iter().map(|_| krng.gen()).collect();
        let peers = topo
            .nodes
            .iter()
            .zip(&secrets)
            .enumerate()
            .map(|(i, ((addr, role), s))| DirEntry {
                name: format!("t{i}"),
                addr: *addr,
                role: *role,
                key: SigningKey::from_bytes(s).verifying_key(),
                position_au: [1.0, 0.0, 0.0],
            })
            .collect();
        let dir = Arc::new(Directory {
            peers,
            ..Default::default()
        });
        let n = topo.nodes.len();
        let mut node_links = vec![Vec::new(); n];
        let mut links = BTreeMap::new();
        for (a, b, d) in &topo.links {
            let ns = d.as_nanos() as u64;
            node_links[*a as usize].push((*b, ns));
            node_links[*b as usize].push((*a, ns));
            for k in [(*a, *b), (*b, *a)] {
                links.insert(
                    k,
                    LinkState {
                        delay: *d,
                        loss_ppm: 0,
                        up: true,
                    },
                );
            }
        }
        for l in &mut node_links {
            l.sort_unstable();
        }
        let mut sim = Sim {
            now: Instant::ZERO,
            nodes: (0..n).map(|_| None).collect(),
            secrets,
            node_links,
            dir,
            params,
            seed,
            links,
            queue: BinaryHeap::new(),
            wakes: vec![None; n],
            next_seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            trace: Sha256::new(),
            events: Vec::new(),
            delivered: 0,
            lost: 0,
            boots: vec![0; topo.nodes.len()],
            captured: None,
            clocks,
            sky: Arc::new(lab_sky(seed)),
            shaped: shaped::Shaped::default(),
            node_seeds: None,
            processed: 0,
            heat: None,
            builds: BTreeMap::new(),
            authorities: None,
            store: None,
            approvals: Vec::new(),
            directory_cert: None,
            certificates: Vec::new(),
            config_hashes: Vec::new(),
        };
        for i in 0..n as u32 {
            sim.boot(i);
        }
        sim
    }

    /// The nodes the orchestrator's plan describes, one per [`AgentConfig`] (in id order,
    /// each with its `secret_key_hex`), over `links`; `seed` draws the links' losses. Each
    /// node is built as the agent builds it: the directory of the configurations' peers
    /// (shared), the configuration's RNG seed (xor the boot's virtual time on a restart),
    /// its neighbours and their delays, and its time layer ([`clock_config`], the sky of
    /// its `sky_seed`). `params` are the core's (the agent uses the defaults). Every check
    /// is made before anything is built.
    pub fn from_configs(
        configs: &[AgentConfig],
        links: &[SimLink],
        seed: u64,
        params: Params,
    ) -> Result<Sim, SimError> {
        let first = configs.first().ok_or(SimError::NoNodes)?;
        let n = configs.len();
        let dir = Directory::from_peers(&first.peers).map_err(|error| SimError::Config {
            node: first.id,
            error,
        })?;
        if dir.peers.len() != n {
            return Err(SimError::DirectorySize {
                peers: dir.peers.len(),
                configs: n,
            });
        }
        let mut builds = BTreeMap::new();
        let mut config_hashes = Vec::with_capacity(n);
        let mut secrets = Vec::with_capacity(n);
        let mut clocks = Vec::with_capacity(n);
        let mut node_links = Vec::with_capacity(n);
        let mut sky_seed = None;
        for (i, cfg) in configs.iter().enumerate() {
            let node = cfg.id;
            if node as usize != i {
                return Err(SimError::ConfigOrder { index: i, id: node });
            }
            let config = |error| SimError::Config { node, error };
            let secret: [u8; 32] = hex::decode(&cfg.secret_key_hex)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(config(ConfigError::BadSecretKey))?;
            let entry = dir
                .get(node)
                .ok_or(config(ConfigError::UnknownSelf(node)))?;
            if SigningKey::from_bytes(&secret).verifying_key() != entry.key {
                return Err(config(ConfigError::KeyMismatch));
            }
            secrets.push(secret);
            config_hashes.push(
                <Sha256 as sha2::Digest>::digest(serde_json::to_vec(cfg).unwrap_or_default())
                    .into(),
            );
            if let Some(v) = cfg.protocol_version {
                let b = lightcone_core::update::Build::new(v);
                builds.insert(node, b.map_err(|e| config(ConfigError::Build(e)))?);
            }
            clocks.push(clock_config(cfg).map_err(config)?);
            if let Some(t) = &cfg.time {
                sky_seed.get_or_insert(t.sky_seed);
            }
            let mut l: Vec<(u32, u64)> = cfg
                .neighbors
                .iter()
                .map(|nb| (nb.id, nb.delay_emulated_ns))
                .collect();
            l.sort_unstable();
            node_links.push(l);
        }
        let mut link_map = BTreeMap::new();
        for l in links {
            if l.a == l.b || l.a as usize >= n || l.b as usize >= n {
                return Err(SimError::BadLink { a: l.a, b: l.b });
            }
            if l.loss_ppm > 1_000_000 {
                return Err(SimError::BadLoss {
                    a: l.a,
                    b: l.b,
                    loss_ppm: l.loss_ppm,
                });
            }
            for k in [(l.a, l.b), (l.b, l.a)] {
                link_map.insert(
                    k,
                    LinkState {
                        delay: l.delay,
                        loss_ppm: l.loss_ppm,
                        up: true,
                    },
                );
            }
        }
        for (i, l) in node_links.iter().enumerate() {
            for (nb, _) in l {
                if !link_map.contains_key(&(i as u32, *nb)) {
                    return Err(SimError::MissingLink {
                        node: i as u32,
                        neighbour: *nb,
                    });
                }
            }
        }
        let mut sim = Sim {
            now: Instant::ZERO,
            nodes: (0..n).map(|_| None).collect(),
            secrets,
            node_links,
            dir: Arc::new(dir),
            params,
            seed,
            links: link_map,
            queue: BinaryHeap::new(),
            wakes: vec![None; n],
            next_seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            trace: Sha256::new(),
            events: Vec::new(),
            delivered: 0,
            lost: 0,
            boots: vec![0; n],
            captured: None,
            clocks,
            sky: Arc::new(lab_sky(sky_seed.unwrap_or(seed))),
            shaped: shaped::Shaped::default(),
            node_seeds: Some(configs.iter().map(|c| c.seed).collect()),
            processed: 0,
            heat: first.thermal.clone(),
            builds,
            store: first.store.clone(),
            authorities: None,
            approvals: Vec::new(),
            directory_cert: None,
            certificates: Vec::new(),
            config_hashes,
        };
        if let Some(hex_key) = &first.authorities_key_hex {
            let key = hex::decode(hex_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                .ok_or(SimError::Config {
                    node: first.id,
                    error: ConfigError::BadAuthoritiesKey,
                })?;
            sim.authorities = Some(key);
            // Approved builds, checked now as the agent checks them at start.
            let bad = |error| SimError::Config {
                node: first.id,
                error,
            };
            let entries = first.approved_build_entries().map_err(bad)?;
            let mut store = lightcone_core::trust::threshold::TrustStore::new(key);
            for (entry, e) in entries.iter().enumerate() {
                store.apply(e).map_err(|t| {
                    bad(ConfigError::BadApprovedBuild {
                        entry,
                        why: t.to_string(),
                    })
                })?;
            }
            sim.approvals = entries;
            // The directory's certificate, as the agent checks it (issue 17).
            if let Some(c) = &first.directory_cert_hex {
                if sim.dir.check_certificate(c, &key).is_err() {
                    return Err(SimError::Config {
                        node: first.id,
                        error: ConfigError::BadDirectoryCertificate,
                    });
                }
                sim.directory_cert = hex::decode(c.trim()).ok().and_then(|b| b.try_into().ok());
            }
        }
        if let Some(s) = &sim.store {
            s.check().map_err(|e| SimError::Config {
                node: first.id,
                error: e.into(),
            })?;
        }
        if let Some(t) = &sim.heat {
            for c in configs {
                lightcone_core::heat::machine::Heat::new(t, c.id, &sim.dir, Instant::ZERO)
                    .map_err(|e| SimError::Config {
                        node: c.id,
                        error: e.into(),
                    })?;
            }
        }
        for i in 0..n as u32 {
            sim.boot(i);
        }
        Ok(sim)
    }

    /// Like [`Sim::new`], with the thermal subsystem on every node (issue 15), each node at
    /// `radius_au(its address)` from the star. Refused (a message) when `cfg` does not fit.
    pub fn with_heat(
        topo: &Topo,
        seed: u64,
        params: Params,
        cfg: lightcone_core::heat::config::ThermalConfig,
        radius_au: impl Fn(&HierAddr) -> f64,
    ) -> Result<Sim, String> {
        let mut sim = Sim::new(topo, seed, params);
        let mut dir = (*sim.dir).clone();
        for e in &mut dir.peers {
            e.position_au = [radius_au(&e.addr), 0.0, 0.0];
        }
        for i in 0..sim.len() as u32 {
            lightcone_core::heat::machine::Heat::new(&cfg, i, &dir, Instant::ZERO)
                .map_err(|e| format!("node {i}: {e}"))?;
        }
        sim.dir = Arc::new(dir);
        sim.heat = Some(cfg);
        sim.reboot_all();
        Ok(sim)
    }

    /// Like [`Sim::new`], with the object store on every node (issue 16). Refused (a
    /// message) when `cfg` does not check.
    pub fn with_store(
        topo: &Topo,
        seed: u64,
        params: Params,
        cfg: lightcone_core::store::config::StoreConfig,
    ) -> Result<Sim, String> {
        cfg.check().map_err(|e| e.to_string())?;
        let mut sim = Sim::new(topo, seed, params);
        sim.store = Some(cfg);
        sim.reboot_all();
        Ok(sim)
    }

    /// Boots every node again from nothing, with the subsystems set since [`Sim::new`]:
    /// what the first boots sent never happened (queue and events cleared), and boot counts
    /// start over.
    fn reboot_all(&mut self) {
        self.queue.clear();
        self.events.clear();
        for i in 0..self.len() as u32 {
            self.crash(i);
            self.boots[i as usize] = 0;
        }
        for i in 0..self.len() as u32 {
            self.boot(i);
        }
    }

    /// Like [`Sim::new`], but node `i` first boots at `boot_at[i]` (missing entries: at
    /// once), as agents of a loaded lab start minutes apart; datagrams reaching a node
    /// before it runs are lost.
    pub fn staggered(topo: &Topo, seed: u64, params: Params, boot_at: &[Duration]) -> Sim {
        let mut sim = Sim::new(topo, seed, params);
        for (i, at) in boot_at.iter().enumerate().take(sim.len()) {
            if !at.is_zero() {
                let i = i as u32;
                sim.crash(i);
                sim.boots[i as usize] = 0;
                let at = Instant::ZERO + *at;
                sim.push(at, Ev::Boot { node: i });
            }
        }
        // What the stopped nodes sent at their immediate boot never happened.
        let stopped: BTreeSet<u32> = (0..sim.len() as u32).filter(|i| !sim.is_up(*i)).collect();
        let queue = std::mem::take(&mut sim.queue);
        sim.queue = queue
            .into_iter()
            .filter(|Reverse((_, _, _, ev))| match ev {
                Ev::Deliver { from, .. } => !stopped.contains(from),
                _ => true,
            })
            .collect();
        sim
    }

    fn boot(&mut self, i: u32) {
        let node_seed = match &self.node_seeds {
            Some(seeds) => seeds[i as usize] ^ self.now.as_nanos(),
            None => {
                self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(i) ^ self.now.as_nanos()
            }
        };
        let store = match self.authorities {
            Some(k) if !self.certificates.is_empty() => {
                let mut t = lightcone_core::trust::threshold::TrustStore::new(k);
                for e in &self.certificates {
                    t.apply(e)
                        .expect("certificates were checked in Sim::rotate_key");
                }
                Some(t)
            }
            _ => None,
        };
        let (secret, links) = (self.secrets[i as usize], &self.node_links[i as usize]);
        let (dir, params, now) = (self.dir.clone(), self.params.clone(), self.now);
        let mut node = match store {
            Some(t) => Node::with_certified_key(i, node_seed, secret, links, dir, params, now, t),
            None => Node::with_directory(i, node_seed, secret, links, dir, params, now),
        }
        .expect("harness builds consistent nodes");
        if let Some(b) = self.builds.get(&i) {
            node.set_build(*b);
        }
        if let Some(k) = self.authorities {
            node.set_trust(k);
            if let Some(sig) = &self.directory_cert {
                node.log_directory_certificate(sig);
            }
        }
        if !self.approvals.is_empty() {
            use lightcone_core::update::attest::{twin_build, Measurement};
            node.set_measurement(Measurement {
                build: twin_build(&node.build()),
                config: self
                    .config_hashes
                    .get(i as usize)
                    .copied()
                    .unwrap_or_default(),
            });
            node.require_attestation(&self.approvals)
                .expect("approvals were checked in Sim::from_configs");
        }
        let boots = &mut self.boots[i as usize];
        node.set_boot_epoch(*boots);
        *boots += 1;
        // The wire epoch counts boots from 1, as the supervisor does.
        node.set_wire_epoch(*boots);
        if let Some(c) = &self.clocks[i as usize] {
            let clock = NodeClock::new(c.clone(), self.now.as_nanos())
                .expect("harness clock configurations are valid");
            node = node.with_time(TimeLayer::new(clock, self.sky.clone()));
        }
        if let Some(t) = &self.heat {
            node = node
                .with_heat(t, self.now)
                .expect("thermal configurations are checked before the first boot");
        }
        if let Some(s) = &self.store {
            node = node
                .with_store(s, self.now)
                .expect("store configurations are checked before the first boot");
        }
        let mut out = self.outbox();
        let call = self.begin_call();
        node.set_call_order(call);
        node.start(self.now, &mut out);
        self.nodes[i as usize] = Some(node);
        self.wakes[i as usize] = None;
        self.process(i, call, out);
    }

    fn outbox(&self) -> Outbox {
        Outbox::new(self.params.outbox_datagrams, self.params.outbox_events)
    }

    pub fn now(&self) -> Instant {
        self.now
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn node(&self, i: u32) -> Option<&Node> {
        self.nodes.get(i as usize).and_then(|n| n.as_ref())
    }
    /// Node `i`, to call a setter that sends nothing (e.g. `Node::apply_trust_entry`).
    pub fn node_mut(&mut self, i: u32) -> Option<&mut Node> {
        self.nodes.get_mut(i as usize).and_then(|n| n.as_mut())
    }
    /// Node `i`'s clock metrics against the harness's virtual time (advances only that
    /// node's emulated oscillator).
    pub fn time_metrics(&mut self, i: u32) -> Option<TimeMetrics> {
        let now = self.now;
        self.nodes.get_mut(i as usize)?.as_mut()?.time_metrics(now)
    }

    /// Node `i`'s `/state` `time` section against the virtual time (advances only that
    /// node's emulated oscillator); `None` when it is down or has no time layer.
    pub fn time_view(&mut self, i: u32) -> Option<TimeView> {
        let now = self.now;
        self.nodes.get_mut(i as usize)?.as_mut()?.time_view(now)
    }

    /// Events taken off the queue so far: datagram deliveries, wake-ups and boots.
    pub fn events_processed(&self) -> u64 {
        self.processed
    }

    /// Boots of node `i` so far (1 after its first boot).
    pub fn boots(&self, i: u32) -> u32 {
        self.boots.get(i as usize).copied().unwrap_or(0)
    }

    pub fn is_up(&self, i: u32) -> bool {
        self.node(i).is_some()
    }
    pub fn directory(&self) -> &Arc<Directory> {
        &self.dir
    }
    /// Node `i`'s secret key seed: what a `steal_key` fault hands the thief.
    /// Every node trusts the authorities' threshold key `key` from now on (running ones at
    /// once, booted ones from their boot), as an agent with `authorities_key_hex` does.
    pub fn set_authorities(&mut self, key: ed25519_dalek::VerifyingKey) {
        self.authorities = Some(key);
        for i in 0..self.len() as u32 {
            if let Some(n) = self.node_mut(i) {
                n.set_trust(key);
            }
        }
    }

    /// Rotates node `i`'s key (issue 17): `certificate` is the authorities' threshold-signed
    /// certificate of `secret`'s public key for `i`; the node applies and floods it
    /// ([`Command::RotateKey`]), and from now on boots with `secret`, and every node booted
    /// later takes the certificate. Refused (the node's error) changing nothing.
    pub fn rotate_key(
        &mut self,
        i: u32,
        secret: [u8; 32],
        certificate: &lightcone_core::trust::log::Entry,
    ) -> Result<(), String> {
        let cmd = Command::RotateKey {
            secret: Box::new(ed25519_dalek::SigningKey::from_bytes(&secret)),
            certificate: certificate.encode(),
        };
        match self.command(i, &cmd) {
            Some(Ok(_)) => {
                self.secrets[i as usize] = secret;
                self.certificates.push(certificate.clone());
                Ok(())
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!("node {i} is not running")),
        }
    }

    pub fn secret(&self, i: u32) -> Option<[u8; 32]> {
        self.secrets.get(i as usize).copied()
    }
    /// Reseeds the link-level randomness (loss draws), e.g. to branch one warmed-up run.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Hex SHA-256 over every delivered datagram and every event so far.
    pub fn trace_hash(&self) -> String {
        hex::encode(self.trace.clone().finalize())
    }
    pub fn events(&self) -> &[(Instant, u32, Event)] {
        &self.events
    }
    pub fn take_events(&mut self) -> Vec<(Instant, u32, Event)> {
        std::mem::take(&mut self.events)
    }

    /// Crash-stop: the node vanishes with its state; datagrams to it are lost.
    pub fn crash(&mut self, i: u32) {
        self.nodes[i as usize] = None;
        self.wakes[i as usize] = None;
    }
    /// Restart a crashed node with fresh state (same identity), as the supervisor would.
    pub fn restart(&mut self, i: u32) {
        self.boot(i);
    }
    /// Installs `build` on node `i` (issue 18), as an update replaces an agent's binary:
    /// a running node stops and boots again at once with it, empty (its cell refills it);
    /// a crashed one runs it from its next restart.
    pub fn set_build(&mut self, i: u32, build: lightcone_core::update::Build) {
        if i as usize >= self.nodes.len() {
            return;
        }
        self.builds.insert(i, build);
        if self.is_up(i) {
            self.crash(i);
            self.boot(i);
        }
    }
    /// This lab with every node running `build` from its first boot (what the first boots
    /// sent never happened), as a lab whose agents all start on one release.
    pub fn with_build(mut self, build: lightcone_core::update::Build) -> Sim {
        self.queue.clear();
        self.events.clear();
        for i in 0..self.len() as u32 {
            self.crash(i);
            self.boots[i as usize] = 0;
            self.builds.insert(i, build);
        }
        for i in 0..self.len() as u32 {
            self.boot(i);
        }
        self
    }
    /// The build node `i` runs (or will run at its next boot).
    pub fn build_of(&self, i: u32) -> lightcone_core::update::Build {
        self.builds.get(&i).copied().unwrap_or_default()
    }
    pub fn set_link(&mut self, a: u32, b: u32, up: bool) {
        for k in [(a, b), (b, a)] {
            if let Some(l) = self.links.get_mut(&k) {
                l.up = up;
            }
        }
        self.set_shaped_up(&[(a, b), (b, a)], up);
    }
    /// Loss on every link, in parts per million.
    pub fn set_loss_all(&mut self, loss_ppm: u32) {
        for l in self.links.values_mut() {
            l.loss_ppm = loss_ppm;
        }
        self.set_shaped_loss_all(loss_ppm);
    }
    /// Loss on the link between `a` and `b` (both directions), in parts per million.
    pub fn set_loss(&mut self, a: u32, b: u32, loss_ppm: u32) {
        for k in [(a, b), (b, a)] {
            if let Some(l) = self.links.get_mut(&k) {
                l.loss_ppm = loss_ppm;
            }
            self.set_shaped_loss(k, loss_ppm);
        }
    }
    /// The one-way delay of the link between `a` and `b` (both directions); datagrams
    /// already on the link keep the delay they left with. Returns whether the link exists.
    pub fn set_delay(&mut self, a: u32, b: u32, delay: Duration) -> bool {
        let mut found = false;
        for k in [(a, b), (b, a)] {
            if let Some(l) = self.links.get_mut(&k) {
                l.delay = delay;
                found = true;
            }
        }
        found
    }
    /// The link between `a` and `b`: (delay, loss ppm, up), as `a` sends on it.
    pub fn link(&self, a: u32, b: u32) -> Option<(Duration, u32, bool)> {
        self.links.get(&(a, b)).map(|l| (l.delay, l.loss_ppm, l.up))
    }

    /// Cuts (or restores) every link between `side` and the rest.
    pub fn partition(&mut self, side: &BTreeSet<u32>, cut: bool) {
        let keys: Vec<(u32, u32)> = self
            .links
            .keys()
            .copied()
            .filter(|(a, b)| side.contains(a) != side.contains(b))
            .collect();
        for (a, b) in &keys {
            if let Some(l) = self.links.get_mut(&(*a, *b)) {
                l.up = !cut;
            }
        }
        self.set_shaped_up(&keys, !cut);
    }

    /// Gives node `i` a command now and returns its result (`None`: the node is down).
    /// The result is folded into the trace after the call's events, written as the event
    /// that carried it before commands returned results (`KvValue`, `KvWritten`,
    /// `CommandFailed { reason }`), so traces compare across that change.
    pub fn command(&mut self, i: u32, c: &Command) -> Option<Result<Reply, CommandError>> {
        let mut out = self.outbox();
        let now = self.now;
        let call = self.begin_call();
        let n = self.nodes[i as usize].as_mut()?;
        n.set_call_order(call);
        let r = n.command(now, c, &mut out);
        self.process(i, call, out);
        let traced = match &r {
            Ok(Reply::Done | Reply::Pending { .. }) => None,
            Ok(reply) => Some(format!("{reply:?}")),
            // A stopped node ignored commands silently before.
            Err(CommandError::Stopped) => None,
            Err(e) => Some(format!("CommandFailed {{ reason: {:?} }}", e.to_string())),
        };
        if let Some(t) = traced {
            self.trace.update(now.as_nanos().to_be_bytes());
            self.trace.update(i.to_be_bytes());
            self.trace.update(t.as_bytes());
        }
        Some(r)
    }

    /// Queues an event of its own (not from a call into a node).
    fn push(&mut self, at: Instant, ev: Ev) {
        let order = self.begin_call();
        self.queue.push(Reverse((at, order, 0, ev)));
    }

    /// A fresh order for a call into a node (or an event of its own).
    fn begin_call(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Applies what call `call` into node `i` produced: its datagrams onto the links (queued
    /// in order), its events into the trace, and a wake-up at its earliest timer.
    fn process(&mut self, i: u32, call: u64, mut out: Outbox) {
        let mut position = 0u64;
        for t in out.transmits.drain(..) {
            let Some(l) = self.links.get(&(i, t.to)) else {
                continue;
            };
            if self.is_shaped(i, t.to) {
                self.offer_shaped(i, t.to, t.bytes, call, &mut position);
                continue;
            }
            if !l.up {
                self.lost += 1;
                continue;
            }
            if l.loss_ppm > 0 && self.rng.gen_range(0..1_000_000) < l.loss_ppm {
                self.lost += 1;
                continue;
            }
            let at = self.now + l.delay;
            position += 1;
            self.queue.push(Reverse((
                at,
                call,
                position,
                Ev::Deliver {
                    to: t.to,
                    from: i,
                    bytes: t.bytes,
                },
            )));
        }
        // After the call's datagrams, as the timer entries of the call came after them.
        let next = self.nodes[i as usize]
            .as_ref()
            .and_then(Node::poll_timeout_order);
        if next != self.wakes[i as usize] {
            self.wakes[i as usize] = next;
            if let Some((at, order)) = next {
                self.queue
                    .push(Reverse((at, order, u64::MAX, Ev::Wake { node: i })));
            }
        }
        for e in out.events.drain(..) {
            self.trace.update(self.now.as_nanos().to_be_bytes());
            self.trace.update(i.to_be_bytes());
            self.trace.update(format!("{e:?}").as_bytes());
            self.events.push((self.now, i, e));
        }
    }

    /// Runs until virtual time `t` (inclusive).
    pub fn run_until(&mut self, t: Instant) {
        while self.step_due(t) {}
        self.now = self.now.max(t);
    }

    /// Takes the next queued event if it is due at or before `end` and processes it;
    /// returns whether there was one.
    fn step_due(&mut self, end: Instant) -> bool {
        match self.queue.peek() {
            Some(Reverse((at, _, _, _))) if *at <= end => {}
            _ => return false,
        }
        let Some(Reverse((at, order, _, ev))) = self.queue.pop() else {
            return false;
        };
        self.now = at;
        self.step(order, ev);
        true
    }

    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until `pred` holds (checked after every step) or `limit` passes; returns
    /// whether it held.
    pub fn run_until_pred(&mut self, limit: Duration, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.step_due(end) {
            if pred(self) {
                return true;
            }
        }
        self.now = self.now.max(end);
        pred(self)
    }

    fn step(&mut self, order: u64, ev: Ev) {
        self.processed += 1;
        let ev = match ev {
            Ev::Shaped {
                to,
                from,
                bytes,
                offer,
                sent,
                discard,
            } => {
                self.shaped_arrived(from, to, bytes.len(), offer, sent);
                if discard {
                    self.lost += 1;
                    return;
                }
                Ev::Deliver { to, from, bytes }
            }
            ev => ev,
        };
        let now = self.now;
        let mut out = self.outbox();
        let call = self.begin_call();
        let i = match ev {
            Ev::Deliver { to, from, bytes } => {
                let Some(n) = self.nodes[to as usize].as_mut() else {
                    self.lost += 1;
                    return;
                };
                self.delivered += 1;
                if let Some(c) = self.captured.as_mut() {
                    if c.len() < MAX_CAPTURED {
                        c.push((from, to, bytes.clone()));
                    }
                }
                self.trace.update(now.as_nanos().to_be_bytes());
                self.trace.update(from.to_be_bytes());
                self.trace.update(to.to_be_bytes());
                self.trace.update(&bytes);
                n.set_call_order(call);
                n.handle(
                    now,
                    Input::Datagram {
                        from,
                        bytes: &bytes,
                    },
                    &mut out,
                );
                to
            }
            Ev::Shaped { .. } => unreachable!("a shaped copy is a Deliver by now"),
            Ev::ShapedStart { from, to } => {
                self.shaped_start(from, to, call);
                return;
            }
            Ev::Boot { node } => {
                if self.nodes[node as usize].is_none() {
                    self.boot(node);
                }
                return;
            }
            Ev::Wake { node } => {
                let Some(n) = self.nodes[node as usize].as_mut() else {
                    return;
                };
                if n.poll_timeout_order() != Some((now, order)) {
                    return; // superseded: the node's earliest timer moved
                }
                self.wakes[node as usize] = None;
                // One timer per wake-up; `process` queues the next (maybe at `now` again).
                n.set_call_order(call);
                if n.handle_timeout(now, &mut out).is_none() {
                    return;
                }
                node
            }
        };
        self.process(i, call, out);
    }

    /// Starts (or stops, returning what was kept) recording every delivered datagram as an
    /// eavesdropper on the links would see it, for replay tests.
    pub fn capture(&mut self, on: bool) -> Vec<(u32, u32, Vec<u8>)> {
        let old = self.captured.take().unwrap_or_default();
        if on {
            self.captured = Some(Vec::new());
        }
        old
    }

    /// Injects raw bytes as if neighbour `from` had sent them to `to` (adversary tests).
    pub fn inject(&mut self, from: u32, to: u32, bytes: Vec<u8>) {
        let now = self.now;
        self.push(now, Ev::Deliver { to, from, bytes });
    }
}

#[cfg(test)]
mod tests {
    //! Time over the modeled links: a stratum-0 authority, a cell gateway (stratum 1)
    //! following it, three tiles (cell holdover oscillators) following the gateway. The
    //! harness's links are symmetric and jitter-free, so two-way time transfer cancels their
    //! delay and the tiles' error is the oscillator and timestamp noise the models carry.
    use super::*;
    use lightcone_timing::{ClockFault, NodeRole, ServerLink, TimeSource, UnsyncReason};

    const AUTH: u32 = 0;
    const GW: u32 = 1;
    const TILES: [u32; 3] = [2, 3, 4];
    /// Pulsar integration per fix in these tests, s (the default is an hour).
    const FIX_S: f64 = 60.0;

    fn lab(seed: u64) -> Sim {
        let tile = |t: u16| HierAddr {
            layer: 0,
            cluster: 0,
            cell: 0,
            tile: t,
        };
        let auth = HierAddr {
            layer: 0,
            cluster: u16::MAX,
            cell: u16::MAX,
            tile: 0,
        };
        let topo = Topo {
            nodes: vec![
                (auth, Role::Authority),
                (tile(0), Role::Gateway),
                (tile(1), Role::Tile),
                (tile(2), Role::Tile),
                (tile(3), Role::Tile),
            ],
            links: vec![
                (AUTH, GW, Duration::from_millis(1)),
                (GW, 2, Duration::from_millis(2)),
                (2, 3, Duration::from_millis(2)),
                (3, 4, Duration::from_millis(2)),
                (4, GW, Duration::from_millis(2)),
            ],
        };
        let link = |server| ServerLink {
            server,
            asymmetry_cal_s: 0.0,
            asymmetry_bound_s: 1e-9,
        };
        let pos = [1.0, 0.0, 0.0];
        let mut clocks = vec![
            NodeClockConfig::preset(AUTH, NodeRole::Authority, [1.0, 0.0, 1e-3], vec![], seed),
            NodeClockConfig::preset(GW, NodeRole::Stratum1, pos, vec![link(AUTH)], seed + 1),
        ];
        for t in TILES {
            clocks.push(NodeClockConfig::preset(
                t,
                NodeRole::Cell,
                pos,
                vec![link(GW)],
                seed + u64::from(t),
            ));
        }
        for c in &mut clocks {
            c.pulsar.integration_s = FIX_S;
        }
        Sim::with_clocks(
            &topo,
            seed,
            test_params(),
            clocks.into_iter().map(Some).collect(),
        )
    }

    fn alarms(sim: &mut Sim, i: u32) -> u64 {
        sim.time_metrics(i).expect("node has a clock").alarms_total
    }

    #[test]
    fn tiles_sync_through_the_gateway_within_nanoseconds_and_no_alarm_without_fault() {
        let mut sim = lab(11);
        sim.run_for(Duration::from_secs(60));
        let mut worst = 0.0f64;
        for _ in 0..54 {
            sim.run_for(Duration::from_secs(10));
            for t in TILES {
                let m = sim.time_metrics(t).unwrap();
                assert_eq!(m.source, TimeSource::Hierarchy { stratum: 2 }, "tile {t}");
                worst = worst.max(m.true_error_s.abs());
                assert!(m.within_3sigma, "tile {t}: {m:?}");
            }
        }
        assert!(worst < 10e-9, "worst tile error {worst:e} s");
        for i in 0..5 {
            let m = sim.time_metrics(i).unwrap();
            assert_eq!(m.alarms_total, 0, "node {i}: {m:?}");
            assert!(m.coverage_ratio >= 0.997, "node {i}: {m:?}");
            assert!(m.samples_total > 0 || i == AUTH);
        }
        // The exchanges were real datagrams through the node's wire layer.
        let sent = |i: u32| {
            sim.node(i)
                .unwrap()
                .counters()
                .by_kind_tx
                .get("time")
                .copied()
                .unwrap_or(0)
        };
        assert!(sent(2) >= 500, "tile requests: {}", sent(2));
        assert!(
            sent(GW) >= sent(2),
            "gateway answers three tiles and asks the authority"
        );
    }

    #[test]
    fn summaries_carry_the_gateways_coordinate_timestamp() {
        let mut sim = lab(13);
        sim.run_for(Duration::from_secs(120));
        let snap = sim.node(GW).unwrap().snapshot();
        let own = snap
            .summaries
            .iter()
            .find(|s| s.scope == "cell:0.0.0")
            .expect("the gateway summarizes its cell");
        let ts = own.taken;
        assert_eq!(ts.source, TimeSource::Hierarchy { stratum: 1 }, "{ts:?}");
        assert_eq!(ts.position_au, [1.0, 0.0, 0.0]);
        // Taken on the gateway's clock when it was recorded (virtual time is the truth).
        let truth_ns = (own.received_emulated_s * 1e9).round() as i64;
        assert!(
            (ts.estimate_ns - truth_ns).abs() <= 10,
            "{ts:?} vs {truth_ns}"
        );
        assert!(ts.sigma_s > 0.0 && ts.sigma_s < 1e-8, "{ts:?}");
        // Through the wire form and back: σ rounds up to whole picoseconds.
        let back = lightcone_core::time::stamp_from_wire(
            &lightcone_core::time::stamp_to_wire(&ts),
            ts.position_au,
        );
        assert_eq!((back.estimate_ns, back.source), (ts.estimate_ns, ts.source));
        assert!(back.sigma_s >= ts.sigma_s && back.sigma_s - ts.sigma_s <= 1e-12);
    }

    #[test]
    fn a_biased_authority_raises_the_alarm_on_every_node_it_serves() {
        let mut sim = lab(12);
        sim.run_for(Duration::from_secs(300));
        for i in 0..5 {
            assert_eq!(
                alarms(&mut sim, i),
                0,
                "no alarm before the fault (node {i})"
            );
        }
        sim.command(
            AUTH,
            &Command::ClockFault(ClockFault::ServeBias { offset_s: 5e-6 }),
        );
        // Bound: the gateway follows the bias within a few polls, its next pulsar fix
        // (≤ one integration) disagrees; the tiles follow the gateway and likewise. Two
        // integrations plus 10 polls cover both.
        let bound = Duration::from_secs_f64(2.0 * FIX_S + 10.0);
        let start = sim.now();
        let mut all = false;
        while sim.now() < start + bound && !all {
            sim.run_for(Duration::from_secs(1));
            all = [GW, 2, 3, 4].iter().all(|i| alarms(&mut sim, *i) > 0);
        }
        assert!(all, "served nodes not all alarmed within {bound:?}");
        let took = sim.now() - start;
        assert_eq!(
            alarms(&mut sim, AUTH),
            0,
            "the authority's own clock is fine"
        );
        // Under the alarm, the served nodes switch to the pulsars and stay close to truth.
        let m = sim.time_metrics(2).unwrap();
        assert_eq!(m.source, TimeSource::Pulsar, "{m:?} after {took:?}");
        assert!(m.true_error_s.abs() < 1e-6, "{m:?}");
    }

    /// Virtual time from now until every node in `nodes` has a finite σ (checked every
    /// 10 ms), or `None` within `limit`.
    fn time_to_finite_sigma(sim: &mut Sim, nodes: &[u32], limit: Duration) -> Option<Duration> {
        let start = sim.now();
        while sim.now() < start + limit {
            sim.run_for(Duration::from_millis(10));
            if nodes
                .iter()
                .all(|i| sim.time_metrics(*i).is_some_and(|m| m.sigma_s.is_finite()))
            {
                return Some(sim.now() - start);
            }
        }
        None
    }

    #[test]
    fn a_star_around_a_stratum0_hub_has_finite_sigma_everywhere_within_3s() {
        // Five nodes: a stratum-0 authority in the middle, four tiles around it that follow
        // it directly (a cell without a gateway), at the plan's cadence for time_scale 1:
        // one exchange per 2 s, 500 µs of assumed asymmetry. A client needs 8 exchanges
        // before it trusts a path, so at the normal cadence the first finite σ came after
        // ~16 s; the start-up burst brings it under 3 s.
        let seed = 5;
        let hub = HierAddr {
            layer: 0,
            cluster: u16::MAX,
            cell: u16::MAX,
            tile: 0,
        };
        let tile = |t: u16| HierAddr {
            layer: 0,
            cluster: 0,
            cell: 0,
            tile: t,
        };
        let mut topo = Topo {
            nodes: vec![(hub, Role::Authority)],
            links: Vec::new(),
        };
        for t in 1..=4u32 {
            topo.nodes.push((tile(t as u16), Role::Tile));
            topo.links.push((0, t, Duration::from_millis(1)));
        }
        let link = ServerLink {
            server: 0,
            asymmetry_cal_s: 0.0,
            asymmetry_bound_s: 500e-6,
        };
        let mut clocks = vec![NodeClockConfig::preset(
            0,
            NodeRole::Authority,
            [1.0, 0.0, 0.0],
            vec![],
            seed,
        )];
        for t in 1..=4u32 {
            clocks.push(NodeClockConfig::preset(
                t,
                NodeRole::Cell,
                [1.0, 0.0, 0.0],
                vec![link],
                seed + u64::from(t),
            ));
        }
        for c in &mut clocks {
            // What the agent's `clock_config` makes of the plan's 2 s interval.
            c.sync = c.sync.with_poll_interval(2_000_000_000);
            c.pulsar.integration_s = 20.0;
        }
        let mut sim = Sim::with_clocks(
            &topo,
            seed,
            test_params(),
            clocks.into_iter().map(Some).collect(),
        );
        // Before any exchange, /state says why there is no time yet.
        let why = |sim: &mut Sim, i: u32| {
            let now = sim.now();
            sim.nodes[i as usize]
                .as_mut()
                .and_then(|n| n.time_view(now))
                .and_then(|v| v.unsynchronized)
        };
        assert_eq!(why(&mut sim, 1), Some(UnsyncReason::AwaitingFirstExchange));
        let took = time_to_finite_sigma(&mut sim, &[1, 2, 3, 4], Duration::from_secs(3));
        eprintln!("star: every tile had a finite σ after {took:?}");
        assert!(
            took.is_some(),
            "seed {seed}: a tile still had σ = ∞ after 3 s"
        );
        assert_eq!(why(&mut sim, 1), None);
        // Without its server, a fresh tile says nobody answers.
        sim.crash(0);
        sim.crash(1);
        sim.restart(1);
        sim.run_for(Duration::from_secs(1));
        assert_eq!(why(&mut sim, 1), Some(UnsyncReason::NoServerReachable));
        // And the chain authority → gateway → tiles of `lab`, one level deeper.
        let mut sim = lab(seed);
        let took = time_to_finite_sigma(&mut sim, &[GW, 2, 3, 4], Duration::from_secs(3));
        eprintln!("chain: every node had a finite σ after {took:?}");
        assert!(took.is_some(), "seed {seed}: chain not finite within 3 s");
    }

    #[test]
    fn clock_fault_without_time_layer_fails_clearly() {
        let mut sim = Sim::new(
            &Topo::cell(3, 0, Duration::from_millis(1), 1),
            1,
            test_params(),
        );
        let r = sim.command(0, &Command::ClockFault(ClockFault::Step { offset_s: 1e-3 }));
        assert_eq!(r, Some(Err(CommandError::NoTimeLayer)));
        assert!(CommandError::NoTimeLayer
            .to_string()
            .contains("no time layer"));
    }
}
