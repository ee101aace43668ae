//! `Sim::from_configs`: nodes built from the orchestrator's `AgentConfig`s, as the agent
//! builds them, over links with their own delays and loss; every bad input refused before
//! anything runs.

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lightcone_core::addr::{HierAddr, Role};
use lightcone_core::config::{AgentConfig, ConfigError, Neighbor, PeerInfo};
use lightcone_core::wire::Auth;
use lightcone_sim::{test_params, Sim, SimError, SimLink};

/// A ring of `n` tiles in one cell, 1 ms links; secrets from `seed`.
fn ring(n: u32, seed: u64) -> (Vec<AgentConfig>, Vec<SimLink>) {
    let secrets: Vec<[u8; 32]> = (0..n)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s[8..12].copy_from_slice(&i.to_le_bytes());
            s
        })
        .collect();
    let peers: Vec<PeerInfo> = (0..n)
        .map(|i| PeerInfo {
            name: format!("n{i}"),
            id: i,
            addr: HierAddr {
                layer: 0,
                cluster: 0,
                cell: 0,
                tile: i as u16,
            },
            role: Role::Tile,
            public_key_hex: hex::encode(
                SigningKey::from_bytes(&secrets[i as usize])
                    .verifying_key()
                    .as_bytes(),
            ),
            position_au: [1.0, 0.0, 0.0],
        })
        .collect();
    let links: Vec<SimLink> = (0..n)
        .map(|i| SimLink {
            a: i,
            b: (i + 1) % n,
            delay: Duration::from_millis(1),
            loss_ppm: 0,
        })
        .collect();
    let configs = (0..n)
        .map(|i| {
            let mut neighbors: Vec<Neighbor> = [(i + n - 1) % n, (i + 1) % n]
                .iter()
                .map(|&id| Neighbor {
                    id,
                    ifname: format!("eth{id}"),
                    local_ip: [198, 18, 0, 0].into(),
                    peer_ip: [198, 18, 0, 1].into(),
                    delay_emulated_ns: 1_000_000,
                })
                .collect();
            neighbors.sort_by_key(|nb| nb.id);
            AgentConfig {
                lab: "ring".into(),
                id: i,
                time_scale: 1.0,
                seed: seed ^ u64::from(i),
                secret_key_hex: hex::encode(secrets[i as usize]),
                secret_key_file: None,
                udp_port: 7946,
                control_socket: PathBuf::from("/nonexistent"),
                peers: peers.clone(),
                neighbors,
                epoch_monotonic_ns: None,
                epoch_uncertainty_ns: 0,
                time: None,
                boot: 1,
                thermal: None,
                protocol_version: None,
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
        })
        .collect();
    (configs, links)
}

fn all_alive(sim: &Sim) -> bool {
    (0..sim.len() as u32).all(|i| {
        sim.node(i).is_some_and(|n| {
            let v = n.snapshot().members;
            (0..sim.len() as u32)
                .filter(|j| *j != i)
                .all(|j| v.iter().any(|m| m.id == j && m.state.as_str() == "alive"))
        })
    })
}

#[test]
fn nodes_from_configs_form_their_cell_and_one_seed_gives_one_trace() {
    let run = |seed: u64| {
        let (configs, links) = ring(6, seed);
        let mut sim = Sim::from_configs(&configs, &links, seed, test_params()).unwrap();
        sim.run_for(Duration::from_secs(10));
        assert!(all_alive(&sim), "seed {seed}: the ring did not converge");
        assert!(sim.events_processed() > 0 && sim.delivered > 0);
        (sim.trace_hash(), sim.events_processed())
    };
    let a = run(3);
    assert_eq!(a, run(3), "same configs and seed, same trace");
    assert_ne!(a.0, run(4).0, "other keys and node seeds, another trace");
}

#[test]
fn a_crash_is_detected_and_the_names_come_from_the_configs() {
    let (configs, links) = ring(5, 9);
    let mut params = test_params();
    params.auth = Auth::TestDigest;
    let mut sim = Sim::from_configs(&configs, &links, 9, params).unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.node(2).unwrap().snapshot().node, "n2");
    sim.crash(2);
    let dead = sim.run_until_pred(Duration::from_secs(30), |s| {
        [0u32, 1, 3, 4].iter().all(|i| {
            s.node(*i).is_some_and(|n| {
                n.snapshot()
                    .members
                    .iter()
                    .any(|m| m.id == 2 && m.state.as_str() == "dead")
            })
        })
    });
    assert!(dead, "the crash of n2 was not detected within 30 s");
    sim.restart(2);
    assert_eq!(sim.boots(2), 2);
    assert!(sim.run_until_pred(Duration::from_secs(30), all_alive));
}

#[test]
fn link_delay_and_loss_apply_per_link() {
    let (configs, mut links) = ring(4, 1);
    links[0].loss_ppm = 1_000_000;
    let mut sim = Sim::from_configs(&configs, &links, 1, test_params()).unwrap();
    assert_eq!(
        sim.link(0, 1),
        Some((Duration::from_millis(1), 1_000_000, true))
    );
    assert!(sim.set_delay(1, 2, Duration::from_millis(40)));
    assert_eq!(sim.link(2, 1), Some((Duration::from_millis(40), 0, true)));
    assert!(
        !sim.set_delay(0, 2, Duration::from_millis(40)),
        "no such link"
    );
    sim.run_for(Duration::from_secs(2));
    assert!(sim.lost > 0, "a link losing everything lost nothing");
}

#[test]
fn bad_inputs_are_refused_with_what_is_wrong() {
    let (configs, links) = ring(4, 2);
    let err = |c: &[AgentConfig], l: &[SimLink]| {
        Sim::from_configs(c, l, 2, test_params())
            .err()
            .expect("refused")
    };
    assert!(matches!(err(&[], &links), SimError::NoNodes));
    let mut swapped = configs.clone();
    swapped.swap(0, 1);
    assert!(matches!(
        err(&swapped, &links),
        SimError::ConfigOrder { index: 0, id: 1 }
    ));
    assert!(matches!(
        err(&configs[..3], &links),
        SimError::DirectorySize {
            peers: 4,
            configs: 3
        }
    ));
    let mut self_link = links.clone();
    self_link[0].b = 0;
    assert!(matches!(
        err(&configs, &self_link),
        SimError::BadLink { a: 0, b: 0 }
    ));
    let mut lossy = links.clone();
    lossy[1].loss_ppm = 1_000_001;
    let e = err(&configs, &lossy);
    assert!(e.to_string().contains("above 1000000 ppm"), "{e}");
    let e = err(&configs, &links[1..]);
    assert!(matches!(e, SimError::MissingLink { .. }), "{e}");
    let mut other_key = configs.clone();
    other_key[2].secret_key_hex = configs[3].secret_key_hex.clone();
    assert!(matches!(
        err(&other_key, &links),
        SimError::Config {
            node: 2,
            error: ConfigError::KeyMismatch
        }
    ));
    let mut no_key = configs.clone();
    no_key[1].secret_key_hex = String::new();
    let e = err(&no_key, &links);
    assert_eq!(e.to_string(), "node 1: secret key must be 32 bytes of hex");
}

#[test]
fn a_configured_protocol_version_is_run_and_a_mixed_ring_converges() {
    let (mut configs, links) = ring(6, 11);
    for c in configs.iter_mut().take(3) {
        c.protocol_version = Some(3);
    }
    let mut sim = Sim::from_configs(&configs, &links, 11, test_params()).unwrap();
    sim.run_for(Duration::from_secs(10));
    assert!(all_alive(&sim), "the mixed ring did not converge");
    for i in 0..6u32 {
        let v = sim.node(i).unwrap().versions();
        assert_eq!(v.build().version, if i < 3 { 3 } else { 2 });
        assert_eq!(v.tx_by_version.contains_key(&3), i < 3, "node {i}");
    }
    // A version this code does not implement is refused before anything runs.
    configs[4].protocol_version = Some(9);
    match Sim::from_configs(&configs, &links, 11, test_params()) {
        Err(SimError::Config { node: 4, error }) => {
            assert!(error.to_string().contains("protocol version 9"), "{error}")
        }
        other => panic!("not refused: {:?}", other.err()),
    }
}

/// Issue 18's attestation in the twin: in a ring of 6 whose configurations approve only the
/// version-2 build, node 3 runs version 3 (its own, unapproved build): its neighbours hear
/// it but take no route through it or to it, and the ring routes around it (so the others
/// cannot reach it: it is cut off); the approval of its build, flooded from node 0, admits
/// it, and every node sees every other alive again.
#[test]
fn an_unapproved_build_is_kept_out_of_routing_until_approved() {
    use lightcone_core::io::Command;
    use lightcone_core::trust::threshold::{self, BuildApproval};
    use lightcone_core::update::{attest::twin_build, Build};
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let (shares, group) = threshold::dkg(&[100, 101, 102], 2, &mut rng).unwrap();
    let signers: Vec<&threshold::Share> = shares.values().take(2).collect();
    let approval = |b: Build, rng: &mut rand_chacha::ChaCha20Rng| {
        let a = BuildApproval {
            sha256: twin_build(&b),
            release: u64::from(b.version),
        };
        a.entry(&threshold::sign(&group, &signers, &a.message(), rng).unwrap())
            .encode()
    };
    let v2 = approval(Build::new(2).unwrap(), &mut rng);
    let v3 = approval(Build::new(3).unwrap(), &mut rng);
    let (mut configs, links) = ring(6, 11);
    for c in &mut configs {
        c.authorities_key_hex = Some(hex::encode(group.key.as_bytes()));
        c.protocol_version = Some(if c.id == 3 { 3 } else { 2 });
    }
    configs[0].approved_builds = vec![hex::encode(&v2)];
    let mut sim = Sim::from_configs(&configs, &links, 11, test_params()).unwrap();
    sim.run_for(Duration::from_secs(10));
    let routes = |sim: &Sim, i: u32| sim.node(i).unwrap().snapshot().routes;
    let count = |sim: &Sim, i: u32, what: &str| {
        sim.node(i)
            .unwrap()
            .snapshot()
            .counters
            .get(what)
            .copied()
            .unwrap_or(0)
    };
    for n in [2, 4] {
        assert!(count(&sim, n, "datagrams.watch.attest_unapproved") >= 1);
        let a = sim.node(n).unwrap().attestation();
        assert_eq!(a.refused.len(), 1, "node {n}: {a:?}");
        assert_eq!(a.refused[0].0, 3);
        assert!(routes(&sim, n).iter().all(|r| r.route.next_hop != 3));
    }
    for n in [0, 1, 2, 4, 5] {
        assert!(
            routes(&sim, n).iter().all(|r| r.dest != "node:3"),
            "node {n} has a route to the unapproved node 3"
        );
    }
    // Node 2 reaches node 4 the long way round (2 → 1 → 0 → 5 → 4), not through 3.
    let to4 = routes(&sim, 2)
        .into_iter()
        .find(|r| r.dest == "node:4")
        .unwrap();
    assert_eq!((to4.route.next_hop, to4.route.hops), (1, 4));
    // A forged approval changes nothing; the authorities' one admits node 3.
    let mut forged = v3.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(sim
        .command(0, &Command::TrustEntry(forged))
        .unwrap()
        .is_err());
    sim.run_for(Duration::from_secs(2));
    assert!(routes(&sim, 0).iter().all(|r| r.dest != "node:3"));
    assert!(sim.command(0, &Command::TrustEntry(v3)).unwrap().is_ok());
    assert!(
        sim.run_until_pred(Duration::from_secs(60), all_alive),
        "node 3 not alive everywhere within 60 s of its approval"
    );
    for n in [0, 1, 2, 4, 5] {
        assert!(
            routes(&sim, n).iter().any(|r| r.dest == "node:3"),
            "node {n}: no route to node 3 after its build was approved"
        );
    }
    let to4 = routes(&sim, 2)
        .into_iter()
        .find(|r| r.dest == "node:4")
        .unwrap();
    assert_eq!((to4.route.next_hop, to4.route.hops), (3, 2));
}
