//! Issue 17's watch hardening in the deterministic harness: votes only from the accused's
//! group, votes that lapse, signed suspicion claims (a relay naming another node as accuser
//! is caught), and re-admission of a quarantined node by its group after its term.
//! Each test has a control run (the hardening off, or the fault kept up) that shows what
//! the test would see without it.

use std::collections::BTreeSet;
use std::time::Duration;

use lightcone_core::byzantine::Byzantine;
use lightcone_core::counters::{Direction, Outcome};
use lightcone_core::io::{Command, Event};
use lightcone_core::params::Params;
use lightcone_core::watch::Reason;
use lightcone_core::wire::MemberState;
use lightcone_sim::{test_params, Sim, Topo};

const MS: Duration = Duration::from_millis(1);

fn byzantine(sim: &mut Sim, node: u32, names: &[&str]) {
    let b = Byzantine::from_names(names).unwrap();
    sim.command(node, &Command::Byzantine(b));
}

/// (holder, quarantined) pairs among live nodes.
fn quarantines(sim: &Sim, n: u32) -> BTreeSet<(u32, u32)> {
    let mut v = BTreeSet::new();
    for i in 0..n {
        if let Some(node) = sim.node(i) {
            for q in node.routing().quarantined() {
                v.insert((i, *q));
            }
        }
    }
    v
}

fn counter(sim: &Sim, n: u32, o: Outcome) -> u64 {
    (0..n)
        .filter_map(|i| sim.node(i))
        .map(|x| x.counters().get(Direction::Watch, o))
        .sum()
}

/// Three cells of six; tiles 8 and 9 of cell 1 (not gateways) accuse every node of the
/// cluster. Returns the quarantines after 60 s.
fn coalition_in_cell_1(seed: u64) -> (Sim, BTreeSet<(u32, u32)>) {
    let topo = Topo::cluster(3, 6, MS, 5 * MS, seed);
    let mut sim = Sim::new(&topo, seed, test_params());
    sim.run_for(Duration::from_secs(5));
    for liar in [8, 9] {
        byzantine(&mut sim, liar, &["false_accuse"]);
    }
    sim.run_for(Duration::from_secs(60));
    let q = quarantines(&sim, 18);
    (sim, q)
}

#[test]
fn accusations_from_outside_the_accused_cell_are_refused() {
    let (sim, q) = coalition_in_cell_1(11);
    let cell1: BTreeSet<u32> = (6..12).collect();
    // No node outside cell 1 is quarantined anywhere: the coalition is not its group.
    let outside: Vec<_> = q.iter().filter(|(_, x)| !cell1.contains(x)).collect();
    assert!(
        outside.is_empty(),
        "quarantined outside cell 1: {outside:?}"
    );
    assert!(
        counter(&sim, 18, Outcome::AccusationRefused) > 100,
        "the refused votes are counted"
    );
    // What breaks (the stated f + 1 outcome): two colluders are the quorum of two in their
    // own cell, so every honest member of cell 1 is quarantined by its honest cell mates
    // (and, where the accusations got through before the cell was cut off, beyond).
    for honest in [6, 7, 10, 11] {
        for holder in [6, 7, 10, 11].into_iter().filter(|h| *h != honest) {
            assert!(
                q.contains(&(holder, honest)),
                "f + 1 = 2 colluders quarantine honest {honest} at {holder}: {q:?}"
            );
        }
    }
}

/// Two liars in a 12-tile ring accuse everyone, one after the other, `gap` apart.
fn liars_in_turn(params: Params, gap: Duration, seed: u64) -> BTreeSet<(u32, u32)> {
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, params);
    sim.run_for(Duration::from_secs(5));
    for liar in [3, 8] {
        byzantine(&mut sim, liar, &["false_accuse"]);
        sim.run_for(Duration::from_millis(1500));
        byzantine(&mut sim, liar, &[]);
        sim.run_for(gap);
    }
    quarantines(&sim, 12)
}

#[test]
fn votes_lapse_so_old_accusations_make_no_quorum() {
    let seed = 12;
    let q = liars_in_turn(test_params(), Duration::from_secs(40), seed);
    assert!(q.is_empty(), "seed {seed}: quarantines {q:?}");
    // Control: votes that never lapse add up into a quorum against every honest tile.
    let mut p = test_params();
    p.watch.vote_ttl = Duration::from_secs(3600);
    let q = liars_in_turn(p, Duration::from_secs(40), seed);
    let victims: BTreeSet<u32> = q.iter().map(|(_, x)| *x).collect();
    assert_eq!(
        victims,
        (0..12).filter(|x| *x != 3 && *x != 8).collect(),
        "seed {seed}: without expiry the old votes convict"
    );
}

fn signed_params(on: bool) -> Params {
    let mut p = test_params();
    p.watch.signed_claims = on;
    p
}

fn quarantined_everywhere(sim: &Sim, n: u32, byz: u32) -> bool {
    (0..n).filter(|i| *i != byz).all(|i| {
        let x = sim.node(i).unwrap();
        x.routing().is_quarantined(byz) && x.membership().state_of(byz) == Some(MemberState::Dead)
    })
}

fn assert_no_honest_quarantined(sim: &Sim, n: u32, byz: Option<u32>) {
    let bad: Vec<_> = quarantines(sim, n)
        .into_iter()
        .filter(|(_, x)| Some(*x) != byz)
        .collect();
    assert!(bad.is_empty(), "honest quarantined: {bad:?}");
    for i in (0..n).filter(|i| Some(*i) != byz) {
        let ev: Vec<u32> = sim.node(i).map_or(vec![], |x| {
            x.watch()
                .evidence()
                .keys()
                .copied()
                .filter(|e| Some(*e) != byz)
                .collect()
        });
        assert!(ev.is_empty(), "{i} holds evidence against honest {ev:?}");
    }
}

#[test]
fn signed_claims_keep_honest_membership_working() {
    // Loss, a crash and a restart with signed claims: suspicions and deaths still spread
    // (relays carry the signatures), nothing is counted forged, views settle.
    let seed = 13;
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, signed_params(true));
    sim.set_loss_all(20_000);
    sim.run_for(Duration::from_secs(20));
    sim.crash(3);
    let dead = sim.run_until_pred(Duration::from_secs(30), |s| {
        (0..12)
            .filter(|i| *i != 3)
            .all(|i| s.node(i).unwrap().membership().state_of(3) == Some(MemberState::Dead))
    });
    assert!(
        dead,
        "the crash was detected everywhere through signed claims"
    );
    sim.restart(3);
    sim.set_loss_all(0);
    sim.run_for(Duration::from_secs(30));
    for i in 0..12 {
        assert_eq!(sim.node(i).unwrap().member_counts(), [12, 0, 0], "tile {i}");
    }
    assert_eq!(counter(&sim, 12, Outcome::ClaimForged), 0);
    assert_eq!(counter(&sim, 12, Outcome::ClaimUnsigned), 0);
    assert_no_honest_quarantined(&sim, 12, None);
}

/// Tile 4 claims live members dead in the name of another member. Returns the run and
/// how long the quarantine everywhere took (None: not within 90 s).
fn forger(signed: bool, seed: u64) -> (Sim, Option<Duration>) {
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, signed_params(signed));
    sim.run_for(Duration::from_secs(5));
    let t0 = sim.now();
    byzantine(&mut sim, 4, &["forge_accuser"]);
    let caught = sim.run_until_pred(Duration::from_secs(90), |s| {
        quarantined_everywhere(s, 12, 4)
    });
    let took = caught.then(|| sim.now() - t0);
    (sim, took)
}

/// Deaths of live honest members that honest tiles believed (forged claims taken).
fn false_deaths(sim: &Sim) -> usize {
    sim.events()
        .iter()
        .filter(|(_, i, e)| {
            *i != 4
                && matches!(e, Event::MemberChanged { node, state: MemberState::Dead, .. } if *node != 4)
        })
        .count()
}

/// Nodes holding their own evidence against 4 because it relayed a forged claim.
fn forgery_witnesses(sim: &Sim) -> usize {
    (0..12)
        .filter(|i| *i != 4)
        .filter(|i| sim.node(*i).unwrap().watch().evidence().get(&4) == Some(&Reason::ForgedClaim))
        .count()
}

#[test]
fn a_relay_naming_another_accuser_is_caught_when_claims_are_signed() {
    let seed = 14;
    let (mut sim, took) = forger(true, seed);
    eprintln!("signed claims: forger quarantined everywhere after {took:?}");
    assert!(
        took.is_some(),
        "seed {seed}: the forger was not quarantined everywhere"
    );
    assert!(counter(&sim, 12, Outcome::ClaimForged) > 0);
    assert_eq!(
        false_deaths(&sim),
        0,
        "seed {seed}: a forged death was believed"
    );
    // The forgery itself is the evidence, first-hand, at a quorum of its receivers.
    assert!(
        forgery_witnesses(&sim) >= 2,
        "seed {seed}: {} witnesses",
        forgery_witnesses(&sim)
    );
    sim.run_for(Duration::from_secs(20));
    assert_no_honest_quarantined(&sim, 12, Some(4));
    // Control: unsigned, nobody can tell the forged accuser from a real one.
    let (sim, took) = forger(false, seed);
    eprintln!("unsigned claims: forger quarantined everywhere after {took:?}");
    assert_eq!(counter(&sim, 12, Outcome::ClaimForged), 0);
    assert_eq!(forgery_witnesses(&sim), 0);
    let believed = false_deaths(&sim);
    eprintln!("unsigned claims: {believed} forged deaths believed");
    assert!(
        believed > 0,
        "seed {seed}: unsigned, forged deaths are believed"
    );
}

fn readmit_params() -> Params {
    let mut p = test_params();
    p.watch.vote_ttl = Duration::from_secs(15);
    p.watch.evidence_ttl = Duration::from_secs(30);
    p.watch.quarantine_term = Duration::from_secs(60);
    p
}

#[test]
fn a_quarantined_node_that_behaves_is_readmitted_after_its_term() {
    let seed = 15;
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, readmit_params());
    sim.run_for(Duration::from_secs(5));
    byzantine(&mut sim, 4, &["drop_forwarding"]);
    assert!(
        sim.run_until_pred(Duration::from_secs(90), |s| quarantined_everywhere(
            s, 12, 4
        ))
    );
    let convicted = sim.now();
    byzantine(&mut sim, 4, &[]);
    // It serves its term: still quarantined everywhere 55 s on.
    sim.run_for(Duration::from_secs(55));
    assert!(quarantines(&sim, 12).iter().any(|(_, x)| *x == 4));
    let back = sim.run_until_pred(Duration::from_secs(120), |s| {
        (0..12).filter(|i| *i != 4).all(|i| {
            let x = s.node(i).unwrap();
            !x.routing().is_quarantined(4) && x.membership().state_of(4) == Some(MemberState::Alive)
        })
    });
    assert!(back, "seed {seed}: not re-admitted everywhere");
    let took = sim.now() - convicted;
    assert!(
        took >= Duration::from_secs(60),
        "re-admitted before its term ({took:?})"
    );
    let readmitted: BTreeSet<u32> = sim
        .events()
        .iter()
        .filter_map(|(_, i, e)| matches!(e, Event::Readmitted { node: 4 }).then_some(*i))
        .collect();
    assert_eq!(
        readmitted.len(),
        11,
        "every honest tile decided: {readmitted:?}"
    );
    sim.run_for(Duration::from_secs(20));
    assert_no_honest_quarantined(&sim, 12, None);
    // Misbehaving again: convicted again (a second term, twice as long).
    byzantine(&mut sim, 4, &["drop_forwarding"]);
    assert!(
        sim.run_until_pred(Duration::from_secs(90), |s| quarantined_everywhere(
            s, 12, 4
        ))
    );
    assert_eq!(
        sim.node(0).unwrap().watch().view().convicted.get(&4),
        Some(&2)
    );
}

#[test]
fn a_node_that_keeps_misbehaving_is_convicted_again_after_release() {
    let seed = 16;
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, readmit_params());
    sim.run_for(Duration::from_secs(5));
    byzantine(&mut sim, 4, &["drop_forwarding"]);
    assert!(
        sim.run_until_pred(Duration::from_secs(90), |s| quarantined_everywhere(
            s, 12, 4
        ))
    );
    sim.run_for(Duration::from_secs(300));
    // At tile 0: quarantined, released after its term, caught again, released after a
    // term twice as long, caught again.
    let marks: Vec<(Duration, bool)> = sim
        .events()
        .iter()
        .filter(|(_, i, _)| *i == 0)
        .filter_map(|(t, _, e)| match e {
            Event::Quarantined { node: 4, .. } => {
                Some((t.saturating_since(Default::default()), true))
            }
            Event::Readmitted { node: 4 } => Some((t.saturating_since(Default::default()), false)),
            _ => None,
        })
        .collect();
    eprintln!("tile 0 on tile 4 (time, quarantined): {marks:?}");
    assert!(marks.len() >= 4, "{marks:?}");
    assert!(
        marks[0].1 && !marks[1].1 && marks[2].1 && !marks[3].1,
        "{marks:?}"
    );
    assert!(
        marks[1].0 - marks[0].0 >= Duration::from_secs(60),
        "first term"
    );
    assert!(
        marks[3].0 - marks[2].0 >= Duration::from_secs(120),
        "second term doubled"
    );
    assert!(
        marks[2].0 - marks[1].0 <= Duration::from_secs(30),
        "caught again quickly"
    );
    assert_no_honest_quarantined(&sim, 12, Some(4));
}

fn log_params() -> Params {
    let mut p = test_params();
    p.watch.log_heads = true;
    p
}

#[test]
fn gossiped_tree_heads_make_no_evidence_among_honest_tiles() {
    // Convictions enter the logs (a black hole), a restart starts a new log epoch: no
    // honest signer is ever caught.
    let seed = 17;
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, log_params());
    sim.run_for(Duration::from_secs(5));
    byzantine(&mut sim, 4, &["drop_forwarding"]);
    assert!(
        sim.run_until_pred(Duration::from_secs(90), |s| quarantined_everywhere(
            s, 12, 4
        ))
    );
    sim.crash(3);
    sim.run_for(Duration::from_secs(20));
    sim.restart(3);
    sim.run_for(Duration::from_secs(40));
    assert_eq!(counter(&sim, 12, Outcome::SplitView), 0);
    assert_no_honest_quarantined(&sim, 12, Some(4));
    let logged = sim
        .node(0)
        .unwrap()
        .counters()
        .get(Direction::Watch, Outcome::Quarantined);
    assert!(logged >= 1);
}

#[test]
fn a_signer_showing_a_split_view_of_its_log_is_quarantined() {
    let seed = 18;
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, log_params());
    sim.run_for(Duration::from_secs(5));
    let t0 = sim.now();
    byzantine(&mut sim, 4, &["split_log"]);
    let caught = sim.run_until_pred(Duration::from_secs(60), |s| {
        quarantined_everywhere(s, 12, 4)
    });
    eprintln!(
        "split view: quarantined everywhere after {:?}",
        sim.now() - t0
    );
    assert!(caught, "seed {seed}: the split signer was not quarantined");
    assert!(counter(&sim, 12, Outcome::SplitView) >= 2);
    let witnesses = (0..12)
        .filter(|i| *i != 4)
        .filter(|i| sim.node(*i).unwrap().watch().evidence().get(&4) == Some(&Reason::SplitView))
        .count();
    assert!(witnesses >= 2, "{witnesses} witnesses");
    sim.run_for(Duration::from_secs(10));
    assert_no_honest_quarantined(&sim, 12, Some(4));
    // Control: without head gossip the same signer goes unseen.
    let mut sim = Sim::new(&topo, seed, test_params());
    sim.run_for(Duration::from_secs(5));
    byzantine(&mut sim, 4, &["split_log"]);
    sim.run_for(Duration::from_secs(60));
    assert!(quarantines(&sim, 12).is_empty());
}

/// A coalition of `liars` in a ring cell of `n` with the quorum at f + 1, f = ⌊(n−1)/3⌋:
/// each liar lies about live members (first-hand) and accuses every honest member. Returns
/// the quarantines after `secs`.
fn coalition(n: u32, liars: &[u32], secs: u64, seed: u64) -> (Sim, BTreeSet<(u32, u32)>) {
    coalition_with(n, liars, secs, seed, false)
}

/// [`coalition`], the verdicts decided by each member from the votes it hears
/// (`bft = false`) or by the cell's BFT group (`bft = true`, watch `bft_verdicts`).
fn coalition_with(
    n: u32,
    liars: &[u32],
    secs: u64,
    seed: u64,
    bft: bool,
) -> (Sim, BTreeSet<(u32, u32)>) {
    let f = (n - 1) / 3;
    let mut p = test_params();
    p.watch.quorum = f as usize + 1;
    p.watch.bft_verdicts = bft;
    let topo = Topo::cell(n, 1, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, p);
    sim.run_for(Duration::from_secs(5));
    for l in liars {
        byzantine(&mut sim, *l, &["lie_membership", "false_accuse"]);
    }
    sim.run_for(Duration::from_secs(secs));
    let q = quarantines(&sim, n);
    (sim, q)
}

#[test]
fn f_colluding_liars_are_all_quarantined_and_no_honest_tile_is() {
    let n = 12;
    let liars = [2, 5, 8]; // f = 3, quorum 4
    let (_, q) = coalition(n, &liars, 90, 19);
    for h in (0..n).filter(|h| !liars.contains(h)) {
        let held: BTreeSet<u32> = q.iter().filter(|(i, _)| *i == h).map(|(_, x)| *x).collect();
        // Every honest tile decided the same: exactly the liars.
        assert_eq!(held, liars.iter().copied().collect(), "tile {h}");
    }
}

#[test]
fn f_plus_one_colluders_quarantine_honest_tiles() {
    // The stated outcome beyond f: f + 1 = 4 false accusers are a quorum, so honest tiles
    // are quarantined (the run ends on time; this is what breaks).
    let n = 12;
    let liars = [2, 5, 8, 11];
    let (_, q) = coalition(n, &liars, 60, 19);
    let honest_victims: BTreeSet<u32> = q
        .iter()
        .map(|(_, x)| *x)
        .filter(|x| !liars.contains(x))
        .collect();
    eprintln!("f + 1 colluders: honest tiles quarantined somewhere: {honest_victims:?}");
    assert!(!honest_victims.is_empty());
}

/// The group's agreement among `members`: every member's decided log is a prefix of the
/// longest (BFT safety), and the members that decided all of it hold the same verdicts
/// (convicted, accusers of each). Returns those verdicts and how many members hold them.
fn assert_agreed(sim: &Sim, members: &[u32]) -> (Vec<(u32, Vec<u32>)>, usize) {
    let logs: Vec<(u32, Vec<Vec<u8>>)> = members
        .iter()
        .map(|m| {
            let b = sim.node(*m).unwrap().bft().expect("bft on");
            (*m, b.decided().iter().map(|d| d.entry.clone()).collect())
        })
        .collect();
    let longest = logs.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let tip = logs
        .iter()
        .find(|(_, l)| l.len() == longest)
        .unwrap()
        .1
        .clone();
    for (m, l) in &logs {
        assert_eq!(
            l[..],
            tip[..l.len()],
            "tile {m}'s log is not a prefix of the longest"
        );
    }
    let state = |m: u32| {
        let v = sim.node(m).unwrap().verdicts().expect("bft_verdicts on");
        let c = v.convicted();
        c.iter().map(|x| (*x, v.accusers(*x))).collect::<Vec<_>>()
    };
    let at_tip: Vec<u32> = logs
        .iter()
        .filter(|(_, l)| l.len() == longest)
        .map(|(m, _)| *m)
        .collect();
    let first = state(at_tip[0]);
    for m in &at_tip {
        assert_eq!(
            state(*m),
            first,
            "tile {m} decided otherwise than tile {}",
            at_tip[0]
        );
    }
    (first, at_tip.len())
}

#[test]
fn f_colluding_liars_are_quarantined_by_the_groups_agreed_log() {
    // Issue 17: "decisions agreed by all honest members". The liars also vote against
    // every honest member in the group's log (f votes, one short of the quorum f + 1).
    let n = 12;
    let liars = [2, 5, 8];
    let (sim, q) = coalition_with(n, &liars, 90, 19, true);
    let honest: Vec<u32> = (0..n).filter(|h| !liars.contains(h)).collect();
    for h in &honest {
        let held: BTreeSet<u32> = q.iter().filter(|(i, _)| i == h).map(|(_, x)| *x).collect();
        assert_eq!(held, liars.iter().copied().collect(), "tile {h}");
    }
    let (agreed, at_tip) = assert_agreed(&sim, &honest);
    assert!(at_tip >= 8, "{at_tip} honest tiles hold the whole log");
    let convicted: Vec<u32> = agreed.iter().map(|(x, _)| *x).collect();
    assert_eq!(convicted, liars.to_vec());
    for (x, accusers) in &agreed {
        // The quorum f + 1 = 4 holds an honest accuser (liars accuse each other too).
        assert!(accusers.len() >= 4, "{x} convicted by {accusers:?}");
        assert!(
            accusers.iter().any(|a| !liars.contains(a)),
            "{x}: {accusers:?}"
        );
    }
    // `/state` shows the agreed verdicts (at a tile holding the whole log).
    let tip = honest
        .iter()
        .copied()
        .max_by_key(|h| sim.node(*h).unwrap().bft().unwrap().decided().len())
        .unwrap();
    let view = sim
        .node(tip)
        .unwrap()
        .snapshot()
        .verdicts
        .expect("bft_verdicts on");
    assert_eq!(
        view.convicted.keys().copied().collect::<Vec<_>>(),
        liars.to_vec()
    );
    assert_eq!(view.quorum, 4);
    assert!(view.decided > 0 && view.applied > 0, "{view:?}");
    // The liars' votes against honest members were decided and counted for nothing.
    let v = sim.node(0).unwrap().verdicts().unwrap();
    assert!(v.counters().applied > 12, "{:?}", v.counters());
    for h in &honest {
        let a = v.accusers(*h);
        assert!(
            a.len() <= 3 && a.iter().all(|x| liars.contains(x)),
            "{h}: {a:?}"
        );
    }
}

#[test]
fn f_plus_one_colluders_convict_honest_tiles_and_every_honest_tile_agrees() {
    // Beyond f the outcome is wrong but still agreed: f + 1 = 4 liars' votes are a quorum
    // in the log, so honest tiles are convicted — by every honest member alike.
    let n = 12;
    let liars = [2, 5, 8, 11];
    let (sim, _) = coalition_with(n, &liars, 60, 19, true);
    let honest: Vec<u32> = (0..n).filter(|h| !liars.contains(h)).collect();
    let (agreed, _) = assert_agreed(&sim, &honest);
    let victims: Vec<u32> = agreed
        .iter()
        .map(|(x, _)| *x)
        .filter(|x| !liars.contains(x))
        .collect();
    eprintln!("f + 1 colluders, agreed convictions: {agreed:?}");
    assert!(!victims.is_empty());
}

/// Seeds 1..=30 of the f-liar coalition: with the group's log every honest tile convicts
/// exactly the liars in every run. The same check on verdicts each member draws from the
/// votes it hears is printed beside it (it failed seed 30 when written: members that
/// heard different votes decided differently), so the check can fail.
#[test]
fn the_groups_log_convicts_exactly_the_liars_over_seeds_1_to_30() {
    let n = 12;
    let liars = [2, 5, 8];
    let mut failed = [Vec::new(), Vec::new()];
    for (i, bft) in [false, true].into_iter().enumerate() {
        for seed in 1..=30 {
            let (_, q) = coalition_with(n, &liars, 90, seed, bft);
            let ok = (0..n).filter(|h| !liars.contains(h)).all(|h| {
                let held: BTreeSet<u32> =
                    q.iter().filter(|(i, _)| *i == h).map(|(_, x)| *x).collect();
                held == liars.iter().copied().collect()
            });
            if !ok {
                failed[i].push(seed);
            }
        }
    }
    eprintln!(
        "seeds 1..=30 where some honest tile did not convict exactly the liars: each member \
         from the votes it hears {:?}, the group's log {:?}",
        failed[0], failed[1]
    );
    assert!(
        failed[1].is_empty(),
        "with the group's log: {:?}",
        failed[1]
    );
    // Without the group's log `/state` has no verdicts section.
    let (sim, _) = coalition_with(n, &liars, 10, 1, false);
    assert!(sim.node(0).unwrap().snapshot().verdicts.is_none());
}

#[test]
fn a_black_hole_seen_by_fewer_than_f_plus_one_neighbours_is_not_convicted_by_the_group() {
    // What the group's quorum costs: forwarding audits make evidence only at the black
    // hole's neighbours, two in a ring cell, fewer than f + 1 = 4 of 12. The votes each
    // member hears (quorum 2) convict it; the group's log does not (a stated limit).
    let seed = 15;
    let n = 12;
    for bft in [false, true] {
        let mut p = readmit_params();
        p.watch.bft_verdicts = bft;
        let topo = Topo::cell(n, 0, 2 * MS, seed);
        let mut sim = Sim::new(&topo, seed, p);
        sim.run_for(Duration::from_secs(5));
        byzantine(&mut sim, 4, &["drop_forwarding"]);
        let caught =
            sim.run_until_pred(Duration::from_secs(90), |s| quarantined_everywhere(s, n, 4));
        assert_eq!(caught, !bft, "bft_verdicts {bft}");
        let witnesses = (0..n)
            .filter(|i| sim.node(*i).unwrap().watch().evidence().contains_key(&4))
            .count();
        assert!(witnesses <= 2, "bft_verdicts {bft}: {witnesses} witnesses");
    }
}

#[test]
fn the_group_readmits_a_node_that_behaves_at_one_slot_and_convicts_it_again() {
    let seed = 15;
    let n = 12;
    let mut p = readmit_params();
    p.watch.bft_verdicts = true;
    let topo = Topo::cell(n, 1, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, p);
    sim.run_for(Duration::from_secs(5));
    byzantine(&mut sim, 4, &["lie_membership"]);
    assert!(sim.run_until_pred(Duration::from_secs(90), |s| quarantined_everywhere(s, n, 4)));
    let convicted = sim.now();
    byzantine(&mut sim, 4, &[]);
    sim.run_for(Duration::from_secs(55));
    assert!(
        quarantines(&sim, n).iter().any(|(_, x)| *x == 4),
        "held through its term"
    );
    let honest: Vec<u32> = (0..n).filter(|i| *i != 4).collect();
    let back = sim.run_until_pred(Duration::from_secs(120), |s| {
        honest
            .iter()
            .all(|i| !s.node(*i).unwrap().routing().is_quarantined(4))
    });
    assert!(back, "seed {seed}: not re-admitted everywhere");
    let took = sim.now() - convicted;
    assert!(
        took >= Duration::from_secs(60),
        "re-admitted before its term ({took:?})"
    );
    // Every honest tile applied the same re-admission entry: term 1 everywhere.
    for i in &honest {
        let v = sim.node(*i).unwrap().verdicts().unwrap();
        assert_eq!((v.term(4), v.is_convicted(4)), (1, false), "tile {i}");
    }
    let readmitted: BTreeSet<u32> = sim
        .events()
        .iter()
        .filter_map(|(_, i, e)| matches!(e, Event::Readmitted { node: 4 }).then_some(*i))
        .collect();
    assert_eq!(readmitted.len(), 11, "every honest tile: {readmitted:?}");
    sim.run_for(Duration::from_secs(20));
    assert_no_honest_quarantined(&sim, n, None);
    // Lying again: convicted again, in term 1, by votes of term 1 only.
    byzantine(&mut sim, 4, &["lie_membership"]);
    assert!(sim.run_until_pred(Duration::from_secs(90), |s| quarantined_everywhere(s, n, 4)));
    assert_eq!(
        sim.node(0).unwrap().watch().view().convicted.get(&4),
        Some(&2)
    );
    let (agreed, _) = assert_agreed(&sim, &honest);
    assert_eq!(agreed.iter().map(|(x, _)| *x).collect::<Vec<_>>(), vec![4]);
}

#[test]
fn honest_faults_make_no_evidence_with_signed_claims_and_head_gossip() {
    honest_faults_with_every_option(20);
}

/// The same over ten more seeds: before failed audits were judged across link silences,
/// seeds 21 and 27 of 20–29 convicted an honest tile next to the flapping link
/// (`DropsForwarding`: echoes lost on the link while it was down were laid on the
/// neighbour). One lucky seed is not the claim.
#[test]
fn honest_faults_make_no_evidence_over_ten_seeds() {
    for seed in 21..31 {
        eprintln!("seed {seed}"); // shown with a failure
        honest_faults_with_every_option(seed);
    }
}

fn honest_faults_with_every_option(seed: u64) {
    // Loss, a crash and restart, partitions healed, a flapping link, with every issue-17
    // option on: nothing forged, no split view, nobody honest accused, views settle.
    let mut p = test_params();
    p.watch.signed_claims = true;
    p.watch.log_heads = true;
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, p);
    sim.run_for(Duration::from_secs(5));
    sim.set_loss_all(20_000);
    sim.run_for(Duration::from_secs(30));
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
    for _ in 0..5 {
        sim.set_link(7, 8, false);
        sim.run_for(Duration::from_secs(3));
        sim.set_link(7, 8, true);
        sim.run_for(Duration::from_secs(3));
    }
    sim.set_loss_all(0);
    sim.run_for(Duration::from_secs(30));
    assert_eq!(counter(&sim, 12, Outcome::ClaimForged), 0);
    assert_eq!(counter(&sim, 12, Outcome::SplitView), 0);
    assert_no_honest_quarantined(&sim, 12, None);
    for i in 0..12 {
        assert_eq!(sim.node(i).unwrap().member_counts(), [12, 0, 0], "tile {i}");
    }
}

#[test]
fn a_revoked_tile_key_is_refused_from_the_next_datagram() {
    use lightcone_core::trust::threshold::{dkg, sign, Revocation, Share};
    use rand::SeedableRng;
    let seed = 21;
    let topo = Topo::cell(12, 0, 2 * MS, seed);
    let mut sim = Sim::new(&topo, seed, test_params());
    // The authorities' 2-of-3 key (authorities 0, 6 and 9 of the cell), trusted by all.
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let (shares, group) = dkg(&[0, 6, 9], 2, &mut rng).unwrap();
    for i in 0..12 {
        sim.node_mut(i).unwrap().set_trust(group.key);
    }
    sim.run_for(Duration::from_secs(5));
    let send = |sim: &mut Sim, tag: &str| {
        let before = sim.events().len();
        sim.command(
            4,
            &Command::Send {
                dst: 9,
                data: tag.as_bytes().to_vec(),
            },
        );
        sim.run_for(Duration::from_millis(500));
        sim.events()[before..]
            .iter()
            .any(|(_, i, e)| *i == 9 && matches!(e, Event::Delivered { .. }))
    };
    assert!(send(&mut sim, "before"), "delivered before the revocation");
    // Node 4's key is revoked by two of the three authorities.
    let key = sim.node(4).unwrap().public_key().to_bytes();
    let rev = Revocation {
        subject: 4,
        key,
        at_ns: sim.now().as_nanos(),
    };
    let signers: Vec<&Share> = [&shares[&0], &shares[&9]].into();
    let sig = sign(&group, &signers, &rev.message(), &mut rng).unwrap();
    let entry = rev.entry(&sig);
    // One authority alone cannot: its signature is no group signature.
    let lone = sign(&group, &[&shares[&6]], &rev.message(), &mut rng);
    assert!(lone.is_err());
    let mut bad = entry.clone();
    bad.body[40] ^= 1;
    for i in 0..12 {
        assert!(sim.node_mut(i).unwrap().apply_trust_entry(&bad).is_err());
        sim.node_mut(i).unwrap().apply_trust_entry(&entry).unwrap();
    }
    let refused_before = (0..12)
        .map(|i| {
            sim.node(i)
                .unwrap()
                .counters()
                .get(Direction::Rx, Outcome::KeyRevoked)
        })
        .sum::<u64>();
    assert_eq!(refused_before, 0);
    assert!(
        !send(&mut sim, "after"),
        "a revoked key's data was delivered"
    );
    let refused: u64 = (0..12)
        .map(|i| {
            sim.node(i)
                .unwrap()
                .counters()
                .get(Direction::Rx, Outcome::KeyRevoked)
        })
        .sum();
    assert!(refused > 0, "refusals are counted");
}
