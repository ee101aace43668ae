//! Issue 18: versions N and N−1 in one cell. Nodes updated to protocol 3 negotiate it with
//! each other per neighbour and keep speaking 2 to the rest; the mixed cell converges and
//! carries data both ways, and a frame a node's build cannot accept is counted and dropped.

use std::time::Duration;

use lightcone_core::counters::{Direction, Outcome};
use lightcone_core::io::{Command, Event};
use lightcone_core::update::Build;
use lightcone_sim::{test_params, Sim, Topo};

const MS: Duration = Duration::from_millis(1);

fn all_alive(sim: &Sim) -> bool {
    let n = sim.len() as u32;
    (0..n).all(|i| {
        sim.node(i).is_some_and(|node| {
            let v = node.snapshot().members;
            (0..n)
                .filter(|j| *j != i)
                .all(|j| v.iter().any(|m| m.id == j && m.state.as_str() == "alive"))
        })
    })
}

/// Data from every node to every other arrives (each sends one datagram to each).
fn all_pairs_deliver(sim: &mut Sim) -> bool {
    let n = sim.len() as u32;
    sim.take_events();
    for a in 0..n {
        for b in (0..n).filter(|b| *b != a) {
            let data = vec![a as u8, b as u8];
            sim.command(a, &Command::Send { dst: b, data });
        }
    }
    sim.run_for(Duration::from_secs(2));
    let got = sim
        .take_events()
        .into_iter()
        .filter(|(_, _, e)| matches!(e, Event::Delivered { .. }))
        .count();
    got == (n * (n - 1)) as usize
}

/// A cell of 8 booted at version 2; `updated` get version 3 (a restart with the new build).
fn mixed(seed: u64, updated: &[u32]) -> Sim {
    let topo = Topo::cell(8, 1, 3 * MS, seed);
    let mut sim = Sim::new(&topo, seed, test_params());
    sim.run_for(Duration::from_secs(3));
    for &i in updated {
        sim.set_build(i, Build::new(3).unwrap());
    }
    sim
}

#[test]
fn a_mixed_cell_converges_both_ways_and_speaks_3_only_between_updated_neighbours() {
    // Mostly N−1 with a few N, then mostly N with a few N−1.
    for (seed, updated) in [(5u64, vec![0u32, 1, 2]), (6, vec![0, 1, 2, 3, 4, 5])] {
        let mut sim = mixed(seed, &updated);
        let ok = sim.run_until_pred(Duration::from_secs(30), all_alive);
        assert!(ok, "seed {seed}: the mixed cell did not converge");
        sim.run_for(Duration::from_secs(5));
        assert!(all_pairs_deliver(&mut sim), "seed {seed}: data lost");
        for i in 0..sim.len() as u32 {
            let node = sim.node(i).unwrap();
            let v = node.versions();
            let c = node.counters();
            assert_eq!(
                c.get(Direction::Rx, Outcome::UnknownVersion),
                0,
                "seed {seed}: node {i} was sent a version it does not accept"
            );
            if updated.contains(&i) {
                assert_eq!(v.build().version, 3);
                let up_neighbour = node
                    .routing()
                    .neighbors()
                    .any(|n| updated.contains(&n) && v.peer_range(n) == Some((2, 3)));
                assert!(up_neighbour, "seed {seed}: node {i} negotiated with no one");
                assert!(v.tx_by_version.get(&3).copied().unwrap_or(0) > 0);
                assert!(v.rx_by_version.get(&3).copied().unwrap_or(0) > 0);
                // Its version-2 neighbours were never greeted into version 3.
                for n in node.routing().neighbors().filter(|n| !updated.contains(n)) {
                    assert_eq!(v.peer_range(n), None, "seed {seed}: {i} thinks {n} is new");
                }
            } else {
                assert_eq!(v.build().version, 2);
                assert_eq!(v.rx_by_version.get(&3), None);
                assert_eq!(v.tx_by_version.get(&3), None);
            }
        }
        // The old nodes next to new ones dropped the hellos as unknown kinds, counted.
        let dropped: u64 = (0..sim.len() as u32)
            .filter(|i| !updated.contains(i))
            .map(|i| {
                sim.node(i)
                    .unwrap()
                    .counters()
                    .get(Direction::Rx, Outcome::UnknownKind)
            })
            .sum();
        assert!(dropped > 0, "seed {seed}: no hello reached an old node");
    }
}

#[test]
fn a_version_3_frame_is_refused_by_a_version_2_node_and_taken_by_a_version_3_node() {
    let mut sim = mixed(7, &[0, 1]);
    sim.run_until_pred(Duration::from_secs(30), all_alive);
    // Capture what 0 sends 1 at version 3, then replay it from 0 into 7 (a version-2
    // neighbour of 0 in the ring) and into 1 again.
    sim.capture(true);
    sim.run_for(Duration::from_secs(2));
    let captured = sim.capture(false);
    let v3 = captured
        .iter()
        .find(|(f, t, b)| *f == 0 && *t == 1 && b[2] == 3)
        .expect("0 speaks 3 to 1")
        .2
        .clone();
    let before = |sim: &Sim, i: u32| {
        sim.node(i)
            .unwrap()
            .counters()
            .get(Direction::Rx, Outcome::UnknownVersion)
    };
    let (b7, b1) = (before(&sim, 7), before(&sim, 1));
    sim.inject(0, 7, v3.clone());
    sim.inject(0, 1, v3);
    sim.run_for(MS);
    assert_eq!(
        before(&sim, 7),
        b7 + 1,
        "node 7 (version 2) refuses version 3"
    );
    assert_eq!(
        before(&sim, 1),
        b1,
        "node 1 (version 3) parses it (a replay, then)"
    );
}

#[test]
fn a_rollback_to_2_is_learned_from_the_reboot_and_the_cell_converges_again() {
    let mut sim = mixed(8, &[0, 1, 2, 3]);
    assert!(sim.run_until_pred(Duration::from_secs(30), all_alive));
    sim.run_for(Duration::from_secs(5));
    for n in [0, 2] {
        let v = sim.node(n).unwrap().versions();
        assert_eq!(
            v.peer_range(1),
            Some((2, 3)),
            "{n} never learned 1 speaks 3"
        );
    }
    sim.set_build(1, Build::default());
    sim.run_for(Duration::from_secs(10));
    assert!(sim.run_until_pred(Duration::from_secs(30), all_alive));
    // Its neighbours learned of the reboot and speak 2 to it again: nothing more refused.
    let refused = |sim: &Sim| {
        sim.node(1)
            .unwrap()
            .counters()
            .get(Direction::Rx, Outcome::UnknownVersion)
    };
    let before = refused(&sim);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        refused(&sim),
        before,
        "still sent version 3 after the rollback"
    );
    assert!(all_pairs_deliver(&mut sim), "data lost after the rollback");
    for n in [0, 2] {
        let v = sim.node(n).unwrap().versions();
        assert_eq!(v.peer_range(1), None, "{n} still thinks 1 speaks 3");
    }
}

/// Regression (found by the rollback test): a tile restarted after its neighbours had
/// restarted sent them its table request bound to their first boot; they rejected it as
/// stale and it was never asked again, so the tile had no routes until the periodic
/// refresh. Now a boot notice from a neighbour that has not advertised to us yet makes us
/// ask again.
#[test]
fn a_tile_restarted_after_its_neighbours_restarted_gets_its_routes() {
    let topo = Topo::cell(8, 1, 3 * MS, 8);
    let mut sim = Sim::new(&topo, 8, test_params());
    sim.run_for(Duration::from_secs(5));
    for i in [1, 0, 2] {
        sim.set_build(i, Build::default());
        sim.run_for(Duration::from_secs(5));
    }
    sim.set_build(1, Build::default());
    sim.run_for(Duration::from_secs(8));
    assert!(all_pairs_deliver(&mut sim));
}
