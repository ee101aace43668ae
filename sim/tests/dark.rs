//! Issue 18: panic-to-dark of a cell. A threshold-signed order given to one tile of a cell
//! darkens the whole cell: no frame leaves its tiles after the bound (the order's flood
//! through the cell, under 100 ms here, plus `DARK_GRACE`), the other cells route around
//! it, and only a threshold-signed undark lights it again. Unsigned, under-signed and
//! replayed orders are refused and change nothing.

use std::time::Duration;

use lightcone_core::counters::Direction;
use lightcone_core::io::{Command, CommandError, Event};
use lightcone_core::trust::threshold::{dkg, Group, Share};
use lightcone_core::update::dark::{Order, OrderError, DARK_GRACE};
use lightcone_core::update::Build;
use lightcone_core::wire::Dest;
use lightcone_sim::{test_params, Sim, Topo};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const MS: Duration = Duration::from_millis(1);
/// The order's flood through one cell of four 3 ms links, with room to spare.
const FLOOD: Duration = Duration::from_millis(100);
const CELL1: Dest = Dest::Cell {
    layer: 0,
    cluster: 0,
    cell: 1,
};

/// Four cells of four tiles, gateways 0, 4, 8, 12 in a ring; every node runs protocol 3
/// and trusts the authorities' 3-of-5 key.
fn lab(seed: u64) -> (Sim, BTreeMap<u32, Share>, Group, ChaCha8Rng) {
    let topo = Topo::cluster(4, 4, 3 * MS, 20 * MS, seed);
    let mut sim = Sim::new(&topo, seed, test_params()).with_build(Build::new(3).unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (shares, group) = dkg(&[100, 101, 102, 103, 104], 3, &mut rng).unwrap();
    for i in 0..sim.len() as u32 {
        sim.node_mut(i).unwrap().set_trust(group.key);
    }
    (sim, shares, group, rng)
}

/// Delivered data among `nodes`, each pair once each way, after `wait`.
fn delivered(sim: &mut Sim, nodes: &[u32], wait: Duration) -> usize {
    sim.take_events();
    for &a in nodes {
        for &b in nodes.iter().filter(|b| **b != a) {
            sim.command(
                a,
                &Command::Send {
                    dst: b,
                    data: vec![1],
                },
            );
        }
    }
    sim.run_for(wait);
    sim.take_events()
        .into_iter()
        .filter(|(_, _, e)| matches!(e, Event::Delivered { .. }))
        .count()
}

fn tx_bytes(sim: &Sim, i: u32) -> u64 {
    let c = sim.node(i).unwrap().counters();
    c.bytes.get(&Direction::Tx).copied().unwrap_or(0)
}

fn pairs(n: usize) -> usize {
    n * (n - 1)
}

#[test]
fn a_dark_cell_goes_silent_within_its_bound_is_routed_around_and_only_undark_lights_it() {
    let (mut sim, shares, group, mut rng) = lab(21);
    let signers: Vec<&Share> = shares.values().collect();
    sim.run_for(Duration::from_secs(15));
    let everyone: Vec<u32> = (0..16).collect();
    assert_eq!(
        delivered(&mut sim, &everyone, Duration::from_secs(2)),
        pairs(16)
    );

    // Refused, nothing changed: two authorities cannot sign; one authority's own key
    // (here: a tile's) is no threshold signature.
    assert!(Order::sign(&group, &signers[..2], 1, CELL1, true, &mut rng).is_err());
    let mut forged = Order::sign(&group, &signers[..3], 1, CELL1, true, &mut rng).unwrap();
    forged.sig[0] ^= 1;
    assert_eq!(
        sim.command(5, &Command::Order(forged.encode())),
        Some(Err(CommandError::Order(OrderError::BadSignature)))
    );
    sim.run_for(Duration::from_secs(2));
    assert!(sim.node(5).unwrap().versions().dark.dark_since().is_none());

    // The order, to one tile of cell 1 (tiles 4..=7).
    let order = Order::sign(&group, &signers[2..], 1, CELL1, true, &mut rng).unwrap();
    let t0 = sim.now();
    assert!(matches!(
        sim.command(5, &Command::Order(order.encode())),
        Some(Ok(_))
    ));
    sim.run_for(FLOOD);
    let dark: Vec<u32> = (4..8).collect();
    for &i in &dark {
        let since = sim.node(i).unwrap().versions().dark.dark_since();
        assert!(
            since.is_some_and(|t| t.saturating_since(t0) <= FLOOD),
            "{i}"
        );
    }
    let spread = dark
        .iter()
        .filter_map(|&i| sim.node(i).unwrap().versions().dark.dark_since())
        .map(|t| t.saturating_since(t0))
        .max()
        .unwrap_or_default();
    eprintln!(
        "the order reached the last tile of the cell {:.3} ms after it was given; checked: no byte leaves the cell from {:?} + {:?} on",
        spread.as_secs_f64() * 1e3,
        FLOOD,
        DARK_GRACE
    );
    // The other cells' tiles obeyed nothing.
    for i in (0..16).filter(|i| !dark.contains(i)) {
        assert!(sim.node(i).unwrap().versions().dark.dark_since().is_none());
    }
    sim.run_for(DARK_GRACE);
    let at_bound: Vec<u64> = dark.iter().map(|&i| tx_bytes(&sim, i)).collect();
    sim.run_for(Duration::from_secs(20));
    let later: Vec<u64> = dark.iter().map(|&i| tx_bytes(&sim, i)).collect();
    assert_eq!(
        at_bound, later,
        "a frame left the dark cell after flood + DARK_GRACE"
    );
    assert!(dark
        .iter()
        .all(|&i| sim.node(i).unwrap().versions().dark.suppressed > 0));
    // The rest route around it: cell 0 reaches cell 2 through cell 3.
    let lit: Vec<u32> = (0..16).filter(|i| !dark.contains(i)).collect();
    assert_eq!(delivered(&mut sim, &lit, Duration::from_secs(2)), pairs(12));
    assert_eq!(delivered(&mut sim, &[1, 6], Duration::from_secs(2)), 0);

    // A replay of the dark order later is refused; the undark lights the cell again.
    let undark = Order::sign(&group, &signers[..3], 2, CELL1, false, &mut rng).unwrap();
    assert!(matches!(
        sim.command(6, &Command::Order(undark.encode())),
        Some(Ok(_))
    ));
    assert_eq!(
        sim.command(6, &Command::Order(order.encode())),
        Some(Err(CommandError::Order(OrderError::Replayed {
            found: 1,
            last: 2
        })))
    );
    sim.run_for(FLOOD);
    for &i in &dark {
        assert!(sim.node(i).unwrap().versions().dark.dark_since().is_none());
    }
    let mut ok = false;
    for _ in 0..6 {
        if delivered(&mut sim, &everyone, Duration::from_secs(10)) == pairs(16) {
            ok = true;
            break;
        }
    }
    assert!(ok, "the cell did not come back after the undark");
}
