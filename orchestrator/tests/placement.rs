//! Placement of the shipped topologies on hosts (issue 19), snapshotted like their plans:
//! which node goes on which host, which links cross, their VNIs. A change in the packing
//! shows up here as a diff to review.

use std::path::PathBuf;

use lightcone::hosts::{self, placement};
use lightcone::plan::plan;
use lightcone::topology;

fn topologies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies")
}

/// `n` hosts of `capacity` nodes each.
fn hosts_file(n: usize, capacity: usize) -> hosts::Hosts {
    let mut s = String::from("hosts:\n");
    for i in 1..=n {
        s += &format!("  h{i}: {{ ssh: root@h{i}, underlay: eth0, capacity: {capacity} }}\n");
    }
    hosts::parse_str(&s, "hosts.yaml").unwrap()
}

#[test]
fn shipped_topologies_place_as_snapshotted() {
    // (topology, hosts, capacity): enough hosts that clusters must spread.
    for (name, n, cap) in [
        ("backbone", 3, 14),
        ("mercury-testbed", 3, 100),
        ("cell", 2, 13),
        ("quickstart", 2, 3),
    ] {
        let path = topologies_dir().join(format!("{name}.yaml"));
        let topo = topology::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = plan(&topo);
        let h = hosts_file(n, cap);
        let placed = placement::place(&p, &h).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Deterministic: the same inputs place the same way.
        assert_eq!(placement::place(&p, &h).unwrap(), placed, "{name}");
        for (i, spec) in h.hosts.iter().enumerate() {
            assert!(placed.nodes_on(i).len() <= spec.capacity.get(), "{name}");
        }
        insta::assert_snapshot!(format!("placement_{name}"), placed.render(&p, &h));
    }
}

#[test]
fn a_lab_too_large_for_its_hosts_is_refused() {
    let topo = topology::load(&topologies_dir().join("mercury-testbed.yaml")).unwrap();
    let p = plan(&topo);
    let e = placement::place(&p, &hosts_file(2, 100)).unwrap_err();
    assert!(
        matches!(
            *e,
            placement::PlacementError::CapacityExceeded {
                total: 258,
                capacity: 200,
                ..
            }
        ),
        "{e}"
    );
}
