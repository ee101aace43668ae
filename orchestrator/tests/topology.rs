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
    // Issue 11, item 13: mistakes that were accepted.
    ("second_document", "name: x\nnodes: {a: {}}\n---\nname: y\nnodes: {b: {}}\n"),
    ("loopback_pool", "name: x\naddressing: {pool: 127.0.0.0/8}\nnodes: {a: {}}\n"),
    ("interface_node_names", "name: x\nnodes:\n  lo: {}\n  eth0: {}\n  a--b: {}\n"),
    ("time_scale_tiny", "name: x\ntime_scale: 1e-308\nnodes: {a: {}}\n"),
    ("alias_bomb", "name: x\nnodes: {a: {}}\nBOMB"),
    (
        "tiles_per_process",
        "name: x\nagents: {tiles_per_process: 0}\nnodes: {a: {}}\n",
    ),
    (
        "tiles_per_process_huge",
        "name: x\nagents: {tiles_per_process: 5000, pool: 3}\nnodes: {a: {}}\n",
    ),
];

/// A "billion laughs" document: nine levels of nine aliases each, 9⁹ (387 million) strings
/// from a few hundred bytes.
fn billion_laughs(indent: &str) -> String {
    let mut s = format!("{indent}a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9u8 {
        let (prev, cur) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        let aliases = vec![format!("*{prev}"); 9].join(", ");
        s += &format!("{indent}{cur}: &{cur} [{aliases}]\n");
    }
    s
}

#[test]
fn malformed_topologies_report_every_error_with_position() {
    for (name, src) in BAD {
        let src = src.replace("NAME", &"n".repeat(300)).replace(
            "BOMB",
            &format!("defaults:\n  link:\n{}", billion_laughs("    ")),
        );
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
        .filter(|n| n.role == lightcone_core::config::Role::Authority)
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
    let cfg = p.agent_config(id("l2c1k0t1"), std::path::Path::new("/tmp/x"), &[]);
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
        .agent_config(1, std::path::Path::new("/tmp/x"), &[])
        .time
        .is_none());
}

/// Issue 11, item 13: a billion-laughs document (458 bytes in the issue; this one is of the
/// same shape) exhausted memory and aborted `validate`. It is refused where the expansion
/// crosses the limit, after a bounded amount of work.
#[test]
fn billion_laughs_is_refused_with_a_position() {
    let bomb = billion_laughs("");
    assert!(bomb.len() < 500, "{} bytes", bomb.len());
    for src in [
        bomb.clone(),
        format!(
            "name: x\nnodes: {{a: {{}}}}\ngenerate:\n{}",
            billion_laughs("  ")
        ),
    ] {
        let out = error_of(&src);
        assert!(
            out.contains("expand the document past 1000000 values"),
            "{out}"
        );
        assert!(out.contains("--> bad.yaml:"), "{out}");
        assert_eq!(out.matches("error:").count(), 1, "{out}");
    }
    // A file goes through the same parser.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.yaml");
    std::fs::write(&path, &bomb).unwrap();
    let Err(LoadError::Invalid { rendered, .. }) = topology::load(&path) else {
        panic!("the bomb loaded")
    };
    assert!(rendered.contains("bomb.yaml:"), "{rendered}");
}

/// Ordinary anchors and aliases still work, and nesting is bounded without a stack overflow.
#[test]
fn aliases_work_and_nesting_is_bounded() {
    let src = "name: x\ndefaults:\n  link: &l {delay: 5ms}\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n    <<: *l\n";
    // `<<` merge keys are not YAML 1.2; an alias as a value is.
    assert!(error_of(src).contains("unknown key `<<`"));
    let src = "name: x\nlink: &l {delay: 5ms}\n";
    assert!(error_of(src).contains("unknown key `link`"));
    let ok = "name: x\nnodes: {a: &n {}, b: *n}\nlinks:\n  - endpoints: [a, b]\n";
    assert_eq!(topology::parse_str(ok, "t.yaml").unwrap().nodes.len(), 2);
    let deep = format!("name: x\nnodes: {}{}\n", "[".repeat(70), "]".repeat(70));
    let out = error_of(&deep);
    assert!(out.contains("nested more than 64 deep"), "{out}");
    assert!(out.contains("--> bad.yaml:2:"), "{out}");
}

/// Issue 11, item 13: a second document was silently ignored.
#[test]
fn a_second_document_is_an_error_where_it_starts() {
    let out = error_of("name: x\nnodes: {a: {}}\n---\nname: y\n");
    assert!(out.contains("a second YAML document starts here"), "{out}");
    assert!(out.contains("--> bad.yaml:3:1"), "{out}");
    // One document with explicit markers is fine.
    topology::parse_str("---\nname: x\nnodes: {a: {}}\n...\n", "t.yaml").unwrap();
}

/// Issue 11, item 13: the 10,000-node cap held for `generate:` only.
#[test]
fn the_node_cap_applies_to_explicit_nodes() {
    let nodes = |n: usize| {
        let mut s = String::from("name: x\nnodes:\n");
        for i in 0..n {
            s += &format!("  n{i}: {{}}\n");
        }
        s
    };
    let t = topology::parse_str(&nodes(10_000), "t.yaml").unwrap();
    assert_eq!(t.nodes.len(), 10_000);
    let out = error_of(&nodes(10_001));
    assert!(out.contains("more than 10000 nodes"), "{out}");
    // Located at the first node past the cap (line 3 holds n0).
    assert!(out.contains("--> bad.yaml:10003:3"), "{out}");
    // Explicit and generated nodes count together.
    let mut src = nodes(9_990);
    src += "generate:\n  layers:\n    - {radius_au: 1, clusters: 1, cells: 1, tiles: 12}\n";
    let out = error_of(&src);
    assert!(out.contains("besides the 9990 under `nodes:`"), "{out}");
}

/// Issue 11, item 13: `addressing` took 127.0.0.0/8.
#[test]
fn reserved_address_pools_are_refused() {
    for pool in [
        "127.0.0.0/8",
        "169.0.0.0/8", // holds 169.254/16
        "0.0.0.0/8",
        "169.254.0.0/16",
        "169.254.128.0/24",
        "224.0.0.0/8",
        "239.255.0.0/16",
        "240.0.0.0/8",
        "255.255.255.0/24",
    ] {
        let out = error_of(&format!(
            "name: x\naddressing: {{pool: {pool}}}\nnodes: {{a: {{}}}}\n"
        ));
        assert!(out.contains("cannot address a link"), "{pool}: {out}");
        assert!(out.contains("198.18.0.0/15"), "{pool}: no hint: {out}");
        assert!(out.contains("--> bad.yaml:2:20"), "{pool}: {out}");
    }
    for pool in [
        "198.18.0.0/15",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "128.0.0.0/8",
    ] {
        let t = topology::parse_str(
            &format!("name: x\naddressing: {{pool: {pool}}}\nnodes: {{a: {{}}}}\n"),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{pool}: {e}"));
        assert_eq!(t.pool.to_string(), pool);
    }
}

/// Issue 11, item 13: node names `lo` and `eth0` were accepted.
#[test]
fn node_names_that_collide_with_interface_or_link_names_are_refused() {
    for name in ["lo", "eth0", "eth1", "eth12", "w0a", "w17b", "a--b"] {
        let out = error_of(&format!("name: x\nnodes:\n  {name}: {{}}\n"));
        assert!(
            out.contains(&format!("node name `{name}`")),
            "{name}: {out}"
        );
        assert!(out.contains("--> bad.yaml:3:3"), "{name}: {out}");
    }
    for name in [
        "lo1", "loop", "eth", "eth0x", "ethernet", "w0", "wa", "w0c", "a-b",
    ] {
        topology::parse_str(&format!("name: x\nnodes:\n  {name}: {{}}\n"), "t.yaml")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Issue 11, item 13: `time_scale: 1e-308` was accepted. Bounds: 0.001 ..= 100000.
#[test]
fn time_scale_has_bounds() {
    for ts in ["1e-308", "0", "0.0009", "100001", "1e9", "-1"] {
        let out = error_of(&format!("name: x\ntime_scale: {ts}\nnodes: {{a: {{}}}}\n"));
        assert!(
            out.contains(&format!("must be between 0.001 and 100000, got {ts}")),
            "{ts}: {out}"
        );
        assert!(out.contains("--> bad.yaml:2:13"), "{ts}: {out}");
    }
    for (ts, v) in [("0.001", 1e-3), ("1", 1.0), ("1000", 1e3), ("1e5", 1e5)] {
        let t = topology::parse_str(
            &format!("name: x\ntime_scale: {ts}\nnodes: {{a: {{}}}}\n"),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(t.time_scale, v);
    }
}

/// Issue 11, item 13: invalid UTF-8 gave an unlocated message that said its cause twice.
#[test]
fn invalid_utf8_is_one_error_at_the_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        b"name: x\nnodes:\n  a: {}\n  b\xff\xfe: {}\n  \xc3: {}\n",
    )
    .unwrap();
    let Err(LoadError::Invalid { rendered, .. }) = topology::load(&path) else {
        panic!("invalid UTF-8 loaded")
    };
    assert_eq!(rendered.matches("error:").count(), 1, "{rendered}");
    assert!(rendered.contains("byte 0xff at offset 26"), "{rendered}");
    assert!(rendered.contains("bad.yaml:4:4"), "{rendered}");
}

/// A file past the size limit is refused after reading only that much.
#[test]
fn oversized_files_are_refused_where_the_limit_is_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let line = format!("# {}\n", "x".repeat(1021)); // 1 KiB a line
    std::fs::write(&path, line.repeat(5 * 1024)).unwrap();
    let Err(LoadError::Invalid { rendered, .. }) = topology::load(&path) else {
        panic!("a 5 MiB file loaded")
    };
    assert!(rendered.contains("larger than 4 MiB"), "{rendered}");
    // Byte 4 MiB is the first byte of line 4097.
    assert!(rendered.contains("big.yaml:4097:1"), "{rendered}");
}

/// Issue 11 item 12: the plan and the agents' configurations hold no secret. Node keys were
/// SHA-256 of the seed, lab name and node name — all in the YAML — so anyone holding the
/// topology could sign as any node; now they are drawn at `up` and the configuration only
/// names the agent's 0600 key file.
#[test]
fn agent_configs_hold_no_secret_key() {
    let topo = topology::load(&topologies_dir().join("quickstart.yaml")).unwrap();
    let p = plan(&topo);
    let dir = std::path::Path::new("/run/lightcone/quickstart");
    let keys: Vec<String> = (0..p.nodes.len()).map(|i| format!("{i:064x}")).collect();
    for id in 0..p.nodes.len() {
        let cfg = p.agent_config(id, dir, &keys);
        assert_eq!(
            cfg.secret_key_hex, "",
            "node {id}: a secret in its configuration"
        );
        assert_eq!(
            cfg.secret_key_file.as_deref(),
            Some(dir.join(format!("keys/{id}.key")).as_path())
        );
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(!text.contains("secret_key_hex"), "{text}");
        // The directory carries the public keys it was given, by id.
        for (i, peer) in cfg.peers.iter().enumerate() {
            assert_eq!(peer.public_key_hex, keys[i]);
        }
    }
    let plan_json = serde_json::to_string(&p).unwrap();
    assert!(
        !plan_json.contains("key"),
        "the plan holds keys: {plan_json}"
    );
}

/// The reader and `LinkModel::validate` (what the simulator checks before shaping a link)
/// agree: every model the reader makes, shipped or at the edges of what it accepts,
/// validates, so a lab's links can be carried into the simulator unchanged.
#[test]
fn every_link_model_the_reader_makes_validates() {
    for name in ["quickstart", "cell", "backbone", "mercury-testbed"] {
        let path = topologies_dir().join(format!("{name}.yaml"));
        let topo = topology::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for l in &topo.links {
            l.model
                .validate()
                .unwrap_or_else(|e| panic!("{name}: link {}–{}: {e}", l.a, l.b));
            l.model.reversed().validate().unwrap();
        }
    }
    let src = "name: x\nnodes: {a: {}, b: {}, c: {}}\nlinks:\n  - endpoints: [a, b]\n    delay: 1ms\n    jitter: 1ms\n    jitter_correlation: 100%\n    distribution: paretonormal\n    loss: {model: gilbert_elliott, p: 100%, r: 0.01%, loss_bad: 100%, loss_good: 0%}\n    duplicate: 100%\n    duplicate_correlation: 100%\n    corrupt: 0%\n    reorder: 100%\n    reorder_gap: 1\n    rate: 8bit\n    packet_overhead: -1500\n    queue_limit: 1\n    queue_limit_bytes: 1B\n  - endpoints: [b, c]\n    loss: {model: random, probability: 100%, correlation: 100%}\n    packet_overhead: 1500\n";
    let t = topology::parse_str(src, "t.yaml").unwrap();
    for l in &t.links {
        l.model.validate().unwrap();
    }
}
