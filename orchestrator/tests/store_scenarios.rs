//! Issue 16: the object store's scenario verbs (`objects`, `crash_holders`, `crash` of a
//! selector) and expectations (`objects_lost`, `repair_time`, `repair_bytes`) are read and
//! checked like every other: the shipped store scenarios are accepted, and each bad use
//! is refused once, located at file:line:column, with nothing run.

use std::path::Path;

use lightcone::experiment::scenario::ScenarioError;
use lightcone::experiment::validate::check_file;
use lightcone::experiment::Action;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A scratch directory with copies of the store and cell topologies.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for t in ["store-60.yaml", "cell.yaml"] {
        std::fs::copy(repo().join("topologies").join(t), d.path().join(t)).unwrap();
    }
    d
}

fn refusal(dir: &Path, src: &str) -> String {
    let path = dir.join("s.yaml");
    std::fs::write(&path, src).unwrap();
    match check_file(&path) {
        Err(ScenarioError::Invalid { rendered, .. }) => rendered,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted:\n{src}"),
    }
}

#[test]
fn the_shipped_store_scenarios_are_accepted_and_expand_to_what_they_say() {
    for name in ["store-durable.yaml", "store-overload.yaml"] {
        let p = repo().join("topologies/scenarios").join(name);
        let (sc, topo, plan) =
            lightcone::experiment::prepare(&p, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(topo.nodes.len() >= 60, "{name}: {} tiles", topo.nodes.len());
        let store = topo.store.as_ref().expect("a store section");
        assert_eq!(
            (store.class.k, store.class.n, store.class.cells),
            (8, 24, 4)
        );
        assert!(plan
            .iter()
            .any(|p| matches!(p.action, Action::ObjectsStart { .. })));
        assert!(!sc.expect.is_empty());
    }
    // The durable one loses a whole cell (15 crashes at 20 s), churns, and partitions.
    let p = repo().join("topologies/scenarios/store-durable.yaml");
    let (_, _, plan) = lightcone::experiment::prepare(&p, None).unwrap();
    let cell: Vec<&str> = plan
        .iter()
        .filter(|p| p.at_ns == 20_000_000_000)
        .filter_map(|p| match &p.action {
            Action::Crash { node } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(cell.len(), 15, "{cell:?}");
    assert!(cell.iter().all(|n| n.starts_with("l0c0k1t")), "{cell:?}");
    assert!(plan.iter().any(|p| p.origin.ends_with("churn")));
    assert!(plan
        .iter()
        .any(|p| matches!(p.action, Action::Partition { .. })));
}

const HEAD: &str = "topology: store-60.yaml\nduration: 60s\ntimeline:\n";

#[test]
fn bad_object_verbs_are_refused_with_their_position() {
    let d = scratch();
    let mut bad = Vec::new();
    for (step, at, says) in [
        (
            "  - { at: 1s, objects: { count: 0, interval: 1s, size: 1KiB, until: 9s } }\n",
            "s.yaml:4:33",
            "count must be 1 to 10000",
        ),
        (
            "  - { at: 1s, objects: { count: 3, interval: 1s, size: 1MiB, until: 9s } }\n",
            "s.yaml:4:56",
            "over the store's largest object",
        ),
        (
            "  - { at: 1s, objects: { count: 3, interval: 1s, size: 1KiB, until: 1s } }\n",
            "s.yaml:4:69",
            "until (1s) must be after",
        ),
        (
            "  - { at: 1s, objects: { count: 3, intervl: 1s, size: 1KiB, until: 9s } }\n",
            "s.yaml:4:36",
            "intervl",
        ),
        (
            "  - { at: 1s, objects: { count: 3, interval: 1s, size: 1KiB, until: 9s, prefix: \"a b\" } }\n",
            "s.yaml:4:",
            "prefix must be 1 to 32 letters",
        ),
        (
            "  - { at: 1s, objects: { count: 3, interval: 1s, size: 1KiB, until: 9s } }\n  - { at: 5s, crash_holders: { objects: [other-0001], shards: 17 } }\n",
            "s.yaml:5:15",
            "no earlier `objects` step writes \"other-0001\"",
        ),
        (
            "  - { at: 1s, objects: { count: 3, interval: 1s, size: 1KiB, until: 9s } }\n  - { at: 5s, crash_holders: { objects: [obj-0001], shards: 25 } }\n",
            "s.yaml:5:15",
            "more than the class's n = 24",
        ),
        (
            "  - { at: 1s, objects: { count: 3, interval: 1s, size: 1KiB, until: 9s } }\n  - { at: 5s, crash_holders: { objects: [obj-0001], shards: 0 } }\n",
            "s.yaml:5:",
            "shards must be at least 1",
        ),
        (
            "  - { at: 5s, crash: \"l9*\" }\n",
            "s.yaml:4:15",
            "crash selects no node",
        ),
    ] {
        let src = format!("{HEAD}{step}expect:\n  - objects_lost == 0\n");
        let out = refusal(d.path(), &src);
        if !(out.contains(at) && out.contains(says)) {
            bad.push(format!("{at} / {says} for {step}: {out}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // No store in the topology: the verb is refused where it is written.
    let src = "topology: cell.yaml\nduration: 60s\ntimeline:\n  - { at: 1s, objects: { count: 3, interval: 1s, size: 1KiB, until: 9s } }\nexpect:\n  - objects_lost == 0\n";
    let out = refusal(d.path(), src);
    assert!(
        out.contains("s.yaml:4:15") && out.contains("no `store:` section"),
        "{out}"
    );
    // A shard frame larger than one datagram (k = 8: 64 KiB makes 8 KiB shards).
    let src = format!("{HEAD}  - {{ at: 1s, objects: {{ count: 3, interval: 1s, size: 64KiB, until: 9s }} }}\nexpect:\n  - objects_lost == 0\n");
    let out = refusal(d.path(), &src);
    assert!(
        out.contains("s.yaml:4:15") && out.contains("would be"),
        "{out}"
    );
}

#[test]
fn store_expectations_are_refused_where_nothing_could_measure_them() {
    let d = scratch();
    let objects = "  - { at: 1s, objects: { count: 3, interval: 1s, size: 1KiB, until: 9s } }\n";
    // No objects written: nothing to lose or repair.
    let out = refusal(
        d.path(),
        &format!("{HEAD}  - {{ at: 5s, crash: l0c0k0t1 }}\nexpect:\n  - repair_time <= 60s\n"),
    );
    assert!(
        out.contains("s.yaml:6:5") && out.contains("needs objects written"),
        "{out}"
    );
    // A selection naming no object the steps write.
    let out = refusal(
        d.path(),
        &format!("{HEAD}{objects}expect:\n  - objects_lost(obj-0007) == 0\n"),
    );
    assert!(
        out.contains("s.yaml:6:5") && out.contains("selects no object"),
        "{out}"
    );
    // Looser than the spec's 0 lost, or its minutes, without a reason.
    for e in ["objects_lost == 1", "repair_time <= 10m"] {
        let out = refusal(d.path(), &format!("{HEAD}{objects}expect:\n  - {e}\n"));
        assert!(
            out.contains("s.yaml:6:5") && out.contains("looser than the spec"),
            "{out}"
        );
    }
    // repair_bytes with no store section.
    let out = refusal(
        d.path(),
        "topology: cell.yaml\nduration: 60s\ntimeline:\n  - { at: 5s, crash: l0c0k0t1 }\nexpect:\n  - repair_bytes > 0\n",
    );
    assert!(out.contains("needs the object store"), "{out}");
}
