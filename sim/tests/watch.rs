//! The neighbourhood watch in the deterministic harness: a byzantine tile (black hole,
//! membership liar, or both) in a ring cell is quarantined by every honest tile, no honest
//! tile is ever accused, and the cell works around it afterwards. Honest faults (loss,
//! crashes, partitions) make no evidence at all.

use std::collections::BTreeSet;
use std::time::Duration;

use lightcone_core::byzantine::Byzantine;
use lightcone_core::io::{Command, Event};
use lightcone_core::wire::MemberState;
use lightcone_sim::{test_params, Sim, Topo};

const MS: Duration = Duration::from_millis(1);
const N: u32 = 12;

fn honest(byz: u32) -> impl Iterator<Item = u32> {
    (0..N).filter(move |i| *i != byz)
}

/// Every honest tile quarantines `byz` (and declares it dead).
fn quarantined_everywhere(sim: &Sim, byz: u32) -> bool {
    honest(byz).all(|i| {
        let n = sim.node(i).unwrap();
        n.routing().is_quarantined(byz) && n.membership().state_of(byz) == Some(MemberState::Dead)
    })
}

/// Nobody holds evidence against, or quarantines, an honest tile.
fn assert_no_honest_accused(sim: &Sim, byz: Option<u32>, seed: u64) {
    for i in 0..N {
        if Some(i) == byz || !sim.is_up(i) {
            continue;
        }
        let n = sim.node(i).unwrap();
        let ev: Vec<u32> = n
            .watch()
            .evidence()
            .keys()
            .copied()
            .filter(|x| Some(*x) != byz)
            .collect();
        assert!(
            ev.is_empty(),
            "seed {seed}: tile {i} holds evidence against honest {ev:?}"
        );
        let q: Vec<u32> = n
            .routing()
            .quarantined()
            .iter()
            .copied()
            .filter(|x| Some(*x) != byz)
            .collect();
        assert!(
            q.is_empty(),
            "seed {seed}: tile {i} quarantines honest {q:?}"
        );
    }
}

fn byzantine(sim: &mut Sim, node: u32, names: &[&str]) {
    let b = Byzantine::from_names(names).unwrap();
    sim.command(node, &Command::Byzantine(b));
}

/// After the quarantine every honest pair still talks: a datagram from each honest tile to
/// the tile opposite it on the ring is delivered.
fn assert_cell_works_around(sim: &mut Sim, byz: u32, seed: u64) {
    let before = sim.events().len();
    for i in honest(byz) {
        let mut dst = (i + N / 2) % N;
        if dst == byz {
            dst = (dst + 1) % N;
        }
        sim.command(
            i,
            &Command::Send {
                dst,
                data: format!("{i}->{dst}").into_bytes(),
            },
        );
    }
    sim.run_for(Duration::from_secs(2));
    let delivered = sim.events()[before..]
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Delivered { .. }))
        .count();
    assert_eq!(
        delivered,
        N as usize - 1,
        "seed {seed}: honest traffic lost after the quarantine"
    );
}

fn ring(seed: u64) -> Sim {
    let topo = Topo::cell(N, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, test_params());
    sim.run_for(Duration::from_secs(5));
    sim
}

fn run_case(names: &[&str], seed: u64) -> Duration {
    let byz = 4;
    let mut sim = ring(seed);
    assert_no_honest_accused(&sim, None, seed);
    let t0 = sim.now();
    byzantine(&mut sim, byz, names);
    let ok = sim.run_until_pred(Duration::from_secs(120), |s| quarantined_everywhere(s, byz));
    let took = sim.now() - t0;
    assert!(
        ok,
        "seed {seed} {names:?}: not quarantined everywhere within 120 s"
    );
    eprintln!(
        "seed {seed} {names:?}: quarantined by all {} honest tiles after {took:?}",
        N - 1
    );
    // Keep running: the quarantine holds, nobody honest is accused, views settle.
    sim.run_for(Duration::from_secs(30));
    assert!(
        quarantined_everywhere(&sim, byz),
        "seed {seed}: the quarantine did not hold"
    );
    assert_no_honest_accused(&sim, Some(byz), seed);
    for i in honest(byz) {
        assert_eq!(
            sim.node(i).unwrap().member_counts(),
            [N - 1, 0, 1],
            "seed {seed} {names:?}: tile {i}'s view"
        );
    }
    assert_cell_works_around(&mut sim, byz, seed);
    // The Quarantined event names a quorum of accusers, all honest.
    let accusers: BTreeSet<u32> = sim
        .events()
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::Quarantined { node, accusers } if *node == byz => Some(accusers.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        accusers.len() >= 2 && !accusers.contains(&byz),
        "seed {seed}: accusers {accusers:?}"
    );
    took
}

#[test]
fn a_black_hole_is_quarantined_by_its_neighbours() {
    for seed in [1, 2] {
        run_case(&["drop_forwarding"], seed);
    }
}

#[test]
fn a_membership_liar_is_quarantined() {
    for seed in [3, 4] {
        run_case(&["lie_membership"], seed);
    }
}

#[test]
fn a_lying_black_hole_is_quarantined() {
    run_case(&["lie_membership", "drop_forwarding"], 5);
}

#[test]
fn honest_faults_make_no_evidence() {
    let seed = 6;
    let mut sim = ring(seed);
    // Loss, a crash and its restart, a partition and its heal, a link flapping.
    sim.set_loss_all(20_000);
    sim.run_for(Duration::from_secs(40));
    sim.crash(3);
    sim.run_for(Duration::from_secs(20));
    sim.restart(3);
    sim.run_for(Duration::from_secs(20));
    let side: BTreeSet<u32> = (0..6).collect();
    for _ in 0..3 {
        sim.partition(&side, true);
        sim.run_for(Duration::from_secs(12));
        sim.partition(&side, false);
        sim.run_for(Duration::from_secs(12));
    }
    for _ in 0..10 {
        sim.set_link(7, 8, false);
        sim.run_for(Duration::from_secs(3));
        sim.set_link(7, 8, true);
        sim.run_for(Duration::from_secs(3));
    }
    sim.set_loss_all(0);
    sim.run_for(Duration::from_secs(30));
    assert_no_honest_accused(&sim, None, seed);
    let audits: u64 = (0..N)
        .map(|i| sim.node(i).unwrap().watch().view().audits_sent)
        .sum();
    assert!(
        audits > 1000,
        "seed {seed}: the watch audited ({audits} audits)"
    );
    for i in 0..N {
        assert_eq!(
            sim.node(i).unwrap().member_counts(),
            [N, 0, 0],
            "seed {seed}: tile {i}"
        );
    }
}

#[test]
fn a_node_made_honest_again_stops_lying() {
    // The verb can be taken back before the watch convicts: nothing more happens.
    let seed = 7;
    let mut sim = ring(seed);
    byzantine(&mut sim, 4, &["drop_forwarding"]);
    sim.run_for(Duration::from_millis(500));
    byzantine(&mut sim, 4, &[]);
    sim.run_for(Duration::from_secs(60));
    assert_no_honest_accused(&sim, Some(4), seed);
    assert!(honest(4).all(|i| !sim.node(i).unwrap().routing().is_quarantined(4)));
}

#[test]
fn unknown_behaviours_are_refused_by_name() {
    let e = Byzantine::from_names(&["lie_membership", "eat_cake"]).unwrap_err();
    assert!(
        e.contains("eat_cake") && e.contains("drop_forwarding"),
        "{e}"
    );
    assert_eq!(
        Byzantine::from_names::<&str>(&[]).unwrap(),
        Byzantine::default()
    );
}
