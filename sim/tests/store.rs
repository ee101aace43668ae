//! The object store (issue 16) composed into `Node` and run in the deterministic harness:
//! liveness from each node's membership and routes (no oracle), frames over the overlay
//! (wire kind 20), metadata in the causal store. A crashed holder is repaired by its
//! cell-mates, a whole cell lost by the other cells, and a stripe that loses more than
//! n − k shards is reported lost — exactly that object.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lightcone_core::io::{Command, CommandError, Event, Reply};
use lightcone_core::store::config::StoreConfig;
use lightcone_core::store::Class;
use lightcone_sim::{test_params, Sim, Topo};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
/// Cells of the test lab, and tiles per cell (tile 0 of each is its gateway).
const CELLS: u16 = 4;
const TILES: u16 = 6;

fn cfg() -> StoreConfig {
    let mut c = StoreConfig::with_class(Class::new("t", 4, 8, CELLS).unwrap());
    c.grace_s = 10.0;
    c
}

fn lab(seed: u64) -> Sim {
    let topo = Topo::cluster(CELLS, TILES, 2 * MS, 10 * MS, seed);
    let mut sim = Sim::with_store(&topo, seed, test_params(), cfg()).unwrap();
    sim.run_for(8 * S);
    sim
}

fn object(i: u32) -> Vec<u8> {
    (0..300 + i * 7).map(|b| (b * 31 + i) as u8).collect()
}

/// Puts `count` objects from node 1, waits for every `ObjectStored`.
fn put_all(sim: &mut Sim, count: u32) {
    for i in 0..count {
        let r = sim.command(
            1,
            &Command::ObjectPut {
                request: u64::from(i),
                object: format!("o{i}"),
                data: object(i),
            },
        );
        assert_eq!(
            r,
            Some(Ok(Reply::Pending {
                request: u64::from(i)
            }))
        );
    }
    sim.run_for(3 * S);
    let stored: BTreeSet<u64> = sim
        .events()
        .iter()
        .filter_map(|(_, n, e)| match e {
            Event::ObjectStored { request, .. } if *n == 1 => Some(*request),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), count as usize, "all puts held: {stored:?}");
}

/// Reads `o{i}` at `at` and returns what came back.
fn read(sim: &mut Sim, at: u32, i: u32) -> Result<Vec<u8>, String> {
    let request = 1000 + u64::from(i);
    let r = sim.command(
        at,
        &Command::ObjectGet {
            request,
            object: format!("o{i}"),
        },
    );
    match r {
        Some(Ok(Reply::Pending { .. })) => {}
        Some(Err(e)) => return Err(e.to_string()),
        other => panic!("{other:?}"),
    }
    sim.run_for(3 * S);
    sim.events()
        .iter()
        .rev()
        .find_map(|(_, n, e)| match e {
            Event::ObjectRead { request: r, data } if *n == at && *r == request => {
                Some(Ok(data.clone()))
            }
            Event::ObjectReadFailed { request: r, reason } if *n == at && *r == request => {
                Some(Err(reason.clone()))
            }
            _ => None,
        })
        .unwrap_or_else(|| Err("no answer".into()))
}

/// Object → its holders, as the newest metadata any live node knows says.
fn holders(sim: &Sim) -> BTreeMap<String, Vec<u32>> {
    let mut best: BTreeMap<String, (u64, u32, Vec<u32>)> = BTreeMap::new();
    for i in 0..sim.len() as u32 {
        let Some(st) = sim.node(i).and_then(|n| n.store()) else {
            continue;
        };
        for m in st.store().metas() {
            let e = best.entry(m.object.clone()).or_insert((0, 0, Vec::new()));
            if (m.version, m.by) > (e.0, e.1) {
                *e = (m.version, m.by, m.holders.clone());
            }
        }
    }
    best.into_iter().map(|(o, (_, _, h))| (o, h)).collect()
}

/// Objects every one of whose shards is held by a live tile (full redundancy).
fn full(sim: &Sim) -> usize {
    holders(sim)
        .iter()
        .filter(|(o, hs)| {
            hs.iter().enumerate().all(|(i, &h)| {
                sim.is_up(h)
                    && sim
                        .node(h)
                        .and_then(|n| n.store())
                        .is_some_and(|s| s.store().holds(o, i as u16))
            })
        })
        .count()
}

fn lost(sim: &Sim) -> BTreeSet<String> {
    sim.events()
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::ObjectLost { object } => Some(object.clone()),
            _ => None,
        })
        .collect()
}

fn repairs(sim: &Sim) -> Vec<u64> {
    sim.events()
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::StripeRepaired { after_ms, .. } => Some(*after_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn without_a_store_section_objects_are_refused() {
    let topo = Topo::cell(4, 0, 2 * MS, 1);
    let mut sim = Sim::new(&topo, 1, test_params());
    let r = sim.command(
        0,
        &Command::ObjectPut {
            request: 1,
            object: "a".into(),
            data: vec![1],
        },
    );
    assert_eq!(r, Some(Err(CommandError::NoStore)));
    assert!(sim.node(0).unwrap().store().is_none());
}

#[test]
fn objects_round_trip_across_cells_and_bad_requests_change_nothing() {
    let mut sim = lab(5);
    put_all(&mut sim, 4);
    assert_eq!(full(&sim), 4);
    // Shards spread over the 4 cells: at most ⌈8 / 4⌉ = 2 per cell.
    for (o, hs) in holders(&sim) {
        let mut per_cell = BTreeMap::new();
        for h in &hs {
            *per_cell.entry(h / u32::from(TILES)).or_insert(0) += 1;
        }
        assert!(per_cell.values().all(|&c| c <= 2), "{o}: {hs:?}");
        assert_eq!(per_cell.len(), 4, "{o}: {hs:?}");
    }
    // Read from a tile of another cell.
    for i in 0..4 {
        assert_eq!(read(&mut sim, 20, i), Ok(object(i)), "o{i}");
    }
    assert!(read(&mut sim, 20, 99)
        .unwrap_err()
        .contains("unknown object"));
    let r = sim.command(
        1,
        &Command::ObjectPut {
            request: 7,
            object: String::new(),
            data: vec![1],
        },
    );
    assert!(matches!(r, Some(Err(CommandError::Store(_)))), "{r:?}");
}

#[test]
fn a_crashed_holder_is_repaired_by_its_cell_and_a_lost_cell_by_the_others() {
    let mut sim = lab(7);
    put_all(&mut sim, 6);
    assert_eq!(full(&sim), 6);
    // A holder that is not a gateway (the routes stay): its cell-mates see it dead.
    let victim = holders(&sim)["o0"]
        .iter()
        .copied()
        .find(|h| h % u32::from(TILES) != 0 && *h != 1)
        .unwrap();
    sim.crash(victim);
    let back = sim.run_until_pred(120 * S, |s| full(s) == 6);
    assert!(
        back,
        "one crash: {} of 6 back at full redundancy",
        full(&sim)
    );
    let first = repairs(&sim);
    assert!(!first.is_empty());
    // Grace 10 s + SWIM detection (< 10 s) + the repair: within 60 s.
    assert!(
        first.iter().all(|&ms| (10_000..60_000).contains(&ms)),
        "{first:?}"
    );
    // A whole cell (cell 3: its gateway too) lost: only the other cells can repair.
    for t in 3 * u32::from(TILES)..4 * u32::from(TILES) {
        sim.crash(t);
    }
    let back = sim.run_until_pred(300 * S, |s| full(s) == 6);
    assert!(
        back,
        "cell lost: {} of 6 back at full redundancy",
        full(&sim)
    );
    assert!(lost(&sim).is_empty(), "{:?}", lost(&sim));
    for i in 0..6 {
        assert_eq!(
            read(&mut sim, 8, i),
            Ok(object(i)),
            "o{i} after the repairs"
        );
    }
    for hs in holders(&sim).values() {
        assert!(hs.iter().all(|h| sim.is_up(*h)), "{hs:?}");
    }
}

#[test]
fn a_restarted_tile_comes_back_empty_and_is_given_shards_again() {
    let mut sim = lab(11);
    put_all(&mut sim, 3);
    let victim = holders(&sim)["o1"]
        .iter()
        .copied()
        .find(|h| h % u32::from(TILES) != 0 && *h != 1)
        .unwrap();
    sim.crash(victim);
    sim.run_for(2 * S);
    sim.restart(victim);
    // Back before any grace: its shards are certainly gone (a new boot), so the cell
    // repairs them at once — possibly onto the same tile.
    let back = sim.run_until_pred(60 * S, |s| full(s) == 3);
    assert!(back, "{} of 3 back at full redundancy", full(&sim));
    assert!(lost(&sim).is_empty());
}

#[test]
fn more_than_n_minus_k_losses_report_exactly_those_objects_lost() {
    let mut sim = lab(13);
    put_all(&mut sim, 5);
    let h = holders(&sim);
    // Crash 5 of o2's 8 holders (n − k = 4 may go): o2 cannot survive. Keep the
    // gateways and the writer.
    let victims: Vec<u32> = h["o2"]
        .iter()
        .copied()
        .filter(|t| t % u32::from(TILES) != 0 && *t != 1)
        .take(5)
        .collect();
    assert_eq!(victims.len(), 5, "{:?}", h["o2"]);
    // The objects that lose more than n − k shards with them are the lost set expected.
    let expected: BTreeSet<String> = h
        .iter()
        .filter(|(_, hs)| hs.iter().filter(|t| victims.contains(t)).count() > 4)
        .map(|(o, _)| o.clone())
        .collect();
    assert!(expected.contains("o2"));
    for v in &victims {
        sim.crash(*v);
    }
    sim.run_for(120 * S);
    assert_eq!(lost(&sim), expected);
    // Stewards of different cells may report the same loss concurrently (each sees its
    // own cell's deaths); the `Lost` frame stops the others. Never more than one report
    // per cell holding one of the victims.
    let reported = sim
        .events()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::ObjectLost { .. }))
        .count();
    let cells: BTreeSet<u32> = victims.iter().map(|v| v / u32::from(TILES)).collect();
    assert!(
        reported <= expected.len() * cells.len(),
        "{reported} reports of {expected:?}"
    );
}
