//! Figures of the object store (issue 16) composed into `Node`, in the twin's harness:
//! `cargo run --release -p lightcone-sim --example store_figures [CELLS TILES OBJECTS SEED]`.
//!
//! A cluster of CELLS cells of TILES tiles (tile 0 of each the gateway; 2 ms cell links,
//! 10 ms between gateways), the spec's class k = 20, n = 60 over every cell, OBJECTS
//! objects of 1 KiB written from tile 1. Then one emulated hour stands for one year at 5 %
//! hard failures: ⌈5 % of the tiles⌉ non-gateway tiles crash at even intervals (compression
//! 8,760×: one year → one hour) and come back empty 10 min later (a replaced tile); at
//! 30 min a whole cell is lost for good; at 40 min one cell is cut off for 20 s (shorter
//! than the 30 s grace: nothing should move). Prints the repair times (first loss → full
//! redundancy, emulated s), the repair bytes, the stripes at full redundancy at the end and
//! the objects reported lost.
use std::collections::BTreeSet;
use std::time::Duration;

use lightcone_core::io::{Command, Event};
use lightcone_core::store::config::StoreConfig;
use lightcone_core::store::Class;
use lightcone_sim::{test_params, Sim, Topo};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: CELLS TILES OBJECTS SEED"))
        .collect();
    let cells = args.first().copied().unwrap_or(6) as u16;
    let tiles = args.get(1).copied().unwrap_or(12) as u16;
    let objects = args.get(2).copied().unwrap_or(40) as u32;
    let seed = args.get(3).copied().unwrap_or(1);
    let n_tiles = u32::from(cells) * u32::from(tiles);
    let s = Duration::from_secs(1);
    let wall = std::time::Instant::now();
    let topo = Topo::cluster(
        cells,
        tiles,
        2 * Duration::from_millis(1),
        10 * Duration::from_millis(1),
        seed,
    );
    let cfg = StoreConfig::with_class(Class::spec(cells));
    // The test digest instead of Ed25519 (as debug builds use): the figures are the
    // store's, not the signatures' cost.
    let mut params = test_params();
    params.auth = lightcone_core::wire::Auth::TestDigest;
    let mut sim = Sim::with_store(&topo, seed, params, cfg).expect("config");
    sim.run_for(10 * s);
    for i in 0..objects {
        let data: Vec<u8> = (0..1024u32).map(|b| (b * 31 + i) as u8).collect();
        let r = sim.command(
            1,
            &Command::ObjectPut {
                request: u64::from(i),
                object: format!("o{i}"),
                data,
            },
        );
        assert!(matches!(r, Some(Ok(_))), "put o{i}: {r:?}");
        sim.run_for(s / 10);
    }
    sim.run_for(10 * s);
    let stored = sim
        .events()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::ObjectStored { .. }))
        .count();
    let t0 = sim.now();
    let hour = Duration::from_secs(3600);
    let crashes = (n_tiles as f64 * 0.05).ceil() as u32;
    let lost_cell = cells - 1;
    let cut_cell = 1u16;
    // The schedule: (offset, action).
    let mut plan: Vec<(Duration, String, u32)> = Vec::new();
    for c in 0..crashes {
        let at = hour * (c + 1) / (crashes + 1);
        // A non-gateway tile of a cell that is neither lost nor cut, not the writer.
        let cell = u32::from(c as u16 % (cells - 1).max(1));
        let cell = if cell == u32::from(cut_cell) && cells > 3 {
            cell + 1
        } else {
            cell
        };
        let tile = cell * u32::from(tiles) + 2 + (c / u32::from(cells)) % (u32::from(tiles) - 2);
        plan.push((at, "crash".into(), tile));
        plan.push((at + Duration::from_secs(600), "restart".into(), tile));
    }
    for t in 0..u32::from(tiles) {
        plan.push((
            hour / 2,
            "crash".into(),
            u32::from(lost_cell) * u32::from(tiles) + t,
        ));
    }
    plan.push((hour * 2 / 3, "cut".into(), u32::from(cut_cell)));
    plan.push((hour * 2 / 3 + 20 * s, "heal".into(), u32::from(cut_cell)));
    plan.sort();
    let side: BTreeSet<u32> = (0..u32::from(tiles))
        .map(|t| u32::from(cut_cell) * u32::from(tiles) + t)
        .collect();
    for (at, what, x) in &plan {
        sim.run_until(t0 + *at);
        match what.as_str() {
            "crash" => sim.crash(*x),
            "restart" => sim.restart(*x),
            "cut" => sim.partition(&side, true),
            _ => sim.partition(&side, false),
        }
    }
    sim.run_until(t0 + hour + Duration::from_secs(600));
    let mut repairs: Vec<f64> = sim
        .events()
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::StripeRepaired { after_ms, .. } => Some(*after_ms as f64 / 1000.0),
            _ => None,
        })
        .collect();
    repairs.sort_by(f64::total_cmp);
    let lost: BTreeSet<String> = sim
        .events()
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::ObjectLost { object } => Some(object.clone()),
            _ => None,
        })
        .collect();
    let mut bytes = 0u64;
    let mut full = 0u32;
    let mut reduced = 0u32;
    let mut critical = 0u32;
    for i in 0..n_tiles {
        if let Some(st) = sim.node(i).and_then(|n| n.store()) {
            let m = st.metrics(sim.now());
            bytes += m.counters.repair_bytes_total;
            full += m.redundancy.full;
            reduced += m.redundancy.reduced;
            critical += m.redundancy.critical;
        }
    }
    let q = |p: f64| {
        if repairs.is_empty() {
            f64::NAN
        } else {
            repairs[((repairs.len() - 1) as f64 * p).round() as usize]
        }
    };
    println!("tiles {n_tiles} ({cells} cells x {tiles}), class k=20 n=60 over {cells} cells, seed {seed}");
    println!("objects put {objects}, stored {stored}");
    println!(
        "churn: {crashes} tile crashes (5 %/year, 1 year -> 1 emulated hour), each back empty after 600 s; cell {lost_cell} lost at 1800 s; cell {cut_cell} cut off 20 s at 2400 s"
    );
    println!(
        "repairs {}: p50 {:.1} s, p95 {:.1} s, max {:.1} s (emulated, first loss -> full redundancy)",
        repairs.len(),
        q(0.5),
        q(0.95),
        repairs.last().copied().unwrap_or(f64::NAN)
    );
    println!("repair bytes {bytes}");
    println!("stripes by steward at the end: full {full}, reduced {reduced}, critical {critical}");
    println!("objects lost {} {:?}", lost.len(), lost);
    println!(
        "events {}, wall {:.1} s",
        sim.events_processed(),
        wall.elapsed().as_secs_f64()
    );
}
