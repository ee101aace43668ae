//! Topology reading: every shipped topology loads and plans (snapshots), malformed ones
//! fail with positioned messages (snapshots), and generated plans are always well-formed
//! (property test).

use std::collections::BTreeSet;
use std::path::PathBuf;

use lightcone::plan::{plan, IFNAME_MAX};
use lightcone::topology::{self, LoadError};
use proptest::prelude::*;

fn topologies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies")
}

#[test]
fn shipped_topologies_plan_as_snapshotted() {
    for name in ["quickstart", "cell", "backbone", "mercury-testbed"] {
        let path = topologies_dir().join(format!("{name}.yaml"));
        let topo = topology::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = plan(&topo);
        insta::assert_snapshot!(format!("plan_{name}"), p.render());
    }
}

fn error_of(src: &str) -> String {
    match topology::parse_str(src, "bad.yaml") {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(LoadError::Invalid { rendered, .. }) => rendered,
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// Each case is a distinct mistake a user makes; the snapshot is what they read.
const BAD: &[(&str, &str)] = &[
    ("syntax", "name: x\nnodes: [a, b\n"),
    ("unknown_top_field", "name: x\nnodez: {a: {}}\n"),
    ("unknown_link_field", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n    dealy: 20ms\n"),
    ("duplicate_node", "name: x\nnodes:\n  a: {}\n  a: {}\n"),
    ("dangling_endpoint", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, bb]\n"),
    ("self_link", "name: x\nnodes: {a: {}}\nlinks:\n  - endpoints: [a, a]\n"),
    ("loss_over_100", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n    loss: 150%\n"),
    ("negative_delay", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n    delay: -5ms\n"),
    ("zero_rate", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n    rate: 0Mbit\n"),
    ("auto_without_positions", "name: x\nnodes:\n  a: {position: [0, 0, 0]}\n  b: {}\nlinks:\n  - endpoints: [a, b]\n    delay: auto\n"),
    ("name_too_long", "name: x\nnodes:\n  NAME: {}\n"),
    ("pool_exhausted", "name: x\naddressing: {pool: 198.18.0.0/30}\nnodes: {a: {}, b: {}, c: {}}\nlinks:\n  - endpoints: [a, b]\n  - endpoints: [b, c]\n  - endpoints: [a, c]\n"),
    ("duration_without_unit", "name: x\ndefaults:\n  link: {delay: 20}\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n"),
    ("bad_role", "name: x\nnodes:\n  a: {role: authorty}\n"),
    ("bad_lab_name", "name: My Lab\nnodes: {a: {}}\n"),
    ("time_scale_zero", "name: x\ntime_scale: 0\nnodes: {a: {}}\n"),
    ("duplicate_link", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n  - endpoints: [b, a]\n"),
    ("generator_too_big", "name: x\ngenerate:\n  layers:\n    - {radius_au: 1, clusters: 100, cells: 100, tiles: 100}\n"),
    ("generator_missing_radius", "name: x\ngenerate:\n  layers:\n    - {clusters: 2}\n  cell_fabric: tree\n"),
    ("empty", ""),
    ("many_errors_at_once", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, c]\n    loss: 2\n    rate: 10mbps\n  - endpoints: [a]\n"),
    ("ge_loss_without_r", "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n    loss: {model: gilbert_elliott, p: 1%}\n"),
];

#[test]
fn malformed_topologies_report_every_error_with_position() {
    for (name, src) in BAD {
        let src = src.replace("NAME", &"n".repeat(300));
        let out = error_of(&src);
        assert!(
            out.contains("--> bad.yaml:"),
            "{name}: no position in\n{out}"
        );
        assert!(out.contains("nothing was changed"), "{name}");
        insta::assert_snapshot!(format!("error_{name}"), out);
    }
}

#[test]
fn many_errors_are_reported_together() {
    let (_, src) = BAD
        .iter()
        .find(|(n, _)| *n == "many_errors_at_once")
        .unwrap();
    let Err(LoadError::Invalid { diagnostics, .. }) = topology::parse_str(src, "bad.yaml") else {
        panic!("expected errors")
    };
    assert!(diagnostics.len() >= 4, "{diagnostics:#?}");
}

#[test]
fn auto_delay_is_light_time() {
    let src = "name: x\nnodes:\n  a: {position: [1, 0, 0]}\n  b: {position: [2, 0, 0]}\nlinks:\n  - endpoints: [a, b]\n    delay: auto\n";
    let t = topology::parse_str(src, "t.yaml").unwrap();
    // 1 AU of light: 499.004784 s.
    assert_eq!(t.links[0].model.delay_ns, 499_004_783_836);
    assert!(t.links[0].delay_auto);
}

#[test]
fn defaults_apply_below_link_values() {
    let src = "name: x\ndefaults:\n  link: {delay: 5ms, jitter: 1ms}\nnodes: {a: {}, b: {}, c: {}}\nlinks:\n  - endpoints: [a, b]\n    delay: 20ms\n  - endpoints: [b, c]\n";
    let t = topology::parse_str(src, "t.yaml").unwrap();
    assert_eq!(t.links[0].model.delay_ns, 20_000_000);
    assert_eq!(t.links[0].model.jitter_ns, 1_000_000);
    assert_eq!(t.links[1].model.delay_ns, 5_000_000);
}

fn fabric() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("star"), Just("ring"), Just("mesh"), Just("line")]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    /// Every topology the generator accepts plans to unique interface names ≤ 15 bytes per
    /// namespace, unique namespaces and unique addresses.
    #[test]
    fn generated_plans_are_well_formed(
        layers in prop::collection::vec((0.1f64..30.0, 1u16..4, 1u16..4, 1u16..9, 0u16..3), 1..4),
        cf in fabric(), kf in fabric(), lf in fabric(),
    ) {
        let mut src = String::from("name: prop\ngenerate:\n  layers:\n");
        for (r, c, k, t, a) in &layers {
            src += &format!("    - {{radius_au: {r}, clusters: {c}, cells: {k}, tiles: {t}, authorities: {a}}}\n");
        }
        src += &format!("  cell_fabric: {cf}\n  cluster_fabric: {kf}\n  layer_fabric: {lf}\n  links:\n    layer: {{delay: auto}}\n    system: {{delay: auto}}\n");
        let topo = topology::parse_str(&src, "prop.yaml").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let p = plan(&topo);
        let mut addrs = BTreeSet::new();
        let mut netns = BTreeSet::new();
        let mut wire_ifs = BTreeSet::new();
        let mut macs = BTreeSet::new();
        for n in &p.nodes {
            prop_assert!(netns.insert(n.netns.clone()));
            let mut names = BTreeSet::new();
            for i in &n.interfaces {
                prop_assert!(i.name.len() <= IFNAME_MAX, "{}", i.name);
                prop_assert!(names.insert(i.name.clone()), "duplicate {} in {}", i.name, n.name);
                prop_assert!(addrs.insert(i.ip), "duplicate address {}", i.ip);
                // MACs: unique, unicast and locally administered; the peer's is the one
                // the peer's interface has (it becomes a permanent neighbour entry).
                prop_assert!(macs.insert(i.mac.0), "duplicate MAC {}", i.mac);
                prop_assert_eq!(i.mac.0[0] & 0x03, 0x02, "{}", i.mac);
                let peer = p.nodes[i.peer].interfaces.iter().find(|x| x.link == i.link).unwrap();
                prop_assert_eq!(i.peer_mac, peer.mac);
                prop_assert_eq!(i.peer_ip, peer.ip);
                prop_assert!(lightcone::topology::Ipv4Pool::DEFAULT.prefix <= 15);
            }
        }
        for l in &p.links {
            for w in [&l.a.wire_ifname, &l.b.wire_ifname] {
                prop_assert!(w.len() <= IFNAME_MAX);
                prop_assert!(wire_ifs.insert(w.clone()));
            }
        }
        prop_assert!(!netns.contains(&p.wire_netns));
    }
}

#[test]
fn authorities_are_each_a_cell_of_their_own() {
    // Authorities have no links between them; in one shared cell their SWIM would probe
    // each other and see each other dead for ever.
    let topo = topology::load(&topologies_dir().join("mercury-testbed.yaml")).unwrap();
    let p = plan(&topo);
    let auth: Vec<_> = p
        .nodes
        .iter()
        .filter(|n| n.role == lightcone_agent::config::Role::Authority)
        .collect();
    assert!(auth.len() >= 2, "mercury-testbed has several authorities");
    for a in &auth {
        let cellmates = p.nodes.iter().filter(|n| n.addr.same_cell(&a.addr)).count();
        assert_eq!(cellmates, 1, "{} shares its cell", a.name);
    }
}

#[test]
fn time_servers_follow_the_hierarchy() {
    // backbone: per layer 3 clusters × 1 cell × 3 tiles and one authority `l{n}a0`.
    let topo = topology::load(&topologies_dir().join("backbone.yaml")).unwrap();
    let p = plan(&topo);
    let id = |n: &str| p.node_index(n).unwrap();
    let servers = |n: &str| p.time_servers(id(n));
    assert_eq!(servers("l1a0"), Some(vec![]), "authorities follow nobody");
    // Every cell gateway of layer 1 follows layer 1's authority; tiles their gateway.
    for c in 0..3 {
        assert_eq!(
            servers(&format!("l1c{c}k0t0")),
            Some(vec![id("l1a0") as u32])
        );
        assert_eq!(
            servers(&format!("l1c{c}k0t2")),
            Some(vec![id(&format!("l1c{c}k0t0")) as u32])
        );
    }
    let cfg = p.agent_config(id("l2c1k0t1"), std::path::Path::new("/tmp/x"));
    let t = cfg.time.expect("a clock");
    assert_eq!(t.servers, vec![id("l2c1k0t0") as u32]);
    // backbone runs at time_scale 20: one exchange per 2 s real = 40 s emulated.
    assert_eq!(t.poll_interval_ns, 40_000_000_000);
    assert_eq!(t.sky_seed, p.seed);

    // Without any authority nobody has a clock.
    let src = "name: x\nnodes: {a: {role: gateway}, b: {}}\nlinks:\n  - endpoints: [a, b]\n";
    let p = plan(&topology::parse_str(src, "t.yaml").unwrap());
    assert_eq!(p.time_servers(0), None);
    assert!(p
        .agent_config(1, std::path::Path::new("/tmp/x"))
        .time
        .is_none());
}
