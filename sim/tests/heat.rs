//! The thermal subsystem (issue 15) in the deterministic harness: leases under loss and
//! crash (never two holders; an expired lease frees its resources), descriptors and
//! summaries, and backpressure from an outer shell to the inner one.

use std::collections::BTreeMap;
use std::time::Duration;

use lightcone_core::addr::HierAddr;
use lightcone_core::heat::config::ThermalConfig;
use lightcone_core::heat::model::LayerThermal;
use lightcone_core::heat::task::{TaskClassName, TaskSpec};
use lightcone_core::io::{Command, CommandError, Reply};
use lightcone_sim::{test_params, Sim, Topo};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn one_shell() -> ThermalConfig {
    ThermalConfig {
        layers: BTreeMap::from([(0, LayerThermal::default())]),
        interval_ns: 1_000_000_000,
    }
}

fn task(compute: u32, secs: u64) -> Command {
    Command::TaskSubmit(TaskSpec {
        traffic_kbps: 0,
        compute,
        memory_mib: 256,
        bandwidth_mbps: 0,
        duration_ns: secs * 1_000_000_000,
        class: TaskClassName::Cold,
    })
}

/// Lease id → the tiles holding it now. A lease held by two tiles is the defect.
fn holders(sim: &Sim) -> BTreeMap<u64, Vec<u32>> {
    let mut m: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for i in 0..sim.len() as u32 {
        if let Some(h) = sim.node(i).and_then(|n| n.heat()) {
            for (_, task) in h.holding(sim.now()) {
                m.entry(task).or_default().push(i);
            }
        }
    }
    m
}

/// Runs `d` in 50 ms steps, checking after each that no task is held by two tiles.
fn run_checked(sim: &mut Sim, d: Duration, seed: u64) {
    let end = sim.now() + d;
    while sim.now() < end {
        sim.run_for(50 * MS);
        for (task, tiles) in holders(sim) {
            assert!(
                tiles.len() <= 1,
                "seed {seed}: task {task} held by {tiles:?} at {}",
                sim.now()
            );
        }
    }
}

fn in_use(sim: &Sim) -> u32 {
    (0..sim.len() as u32)
        .filter_map(|i| sim.node(i).and_then(|n| n.heat()))
        .map(|h| h.stats(sim.now()).compute_in_use)
        .sum()
}

#[test]
fn without_a_thermal_section_tasks_are_refused_and_nothing_changes() {
    let topo = Topo::cell(4, 0, 2 * MS, 1);
    let mut sim = Sim::new(&topo, 1, test_params());
    assert_eq!(
        sim.command(0, &task(4, 10)),
        Some(Err(CommandError::NoThermal))
    );
    assert!(sim.node(0).unwrap().heat().is_none());
}

#[test]
fn tasks_are_placed_in_the_cell_and_expired_leases_free_their_resources() {
    let seed = 3;
    let topo = Topo::cluster(2, 4, 2 * MS, 10 * MS, seed);
    let mut sim = Sim::with_heat(&topo, seed, test_params(), one_shell(), |_| 1.0).unwrap();
    sim.run_for(5 * S);
    // Bad tasks are refused whole.
    for bad in [task(0, 10), task(65, 10), task(4, 0)] {
        assert!(
            matches!(sim.command(1, &bad), Some(Err(CommandError::Task(_)))),
            "{bad:?}"
        );
    }
    let mut ids = Vec::new();
    for _ in 0..6 {
        match sim.command(1, &task(16, 20)) {
            Some(Ok(Reply::TaskSubmitted { task })) => ids.push(task),
            other => panic!("{other:?}"),
        }
    }
    run_checked(&mut sim, 5 * S, seed);
    let held = holders(&sim);
    assert_eq!(held.len(), 6, "every task holds a lease: {held:?}");
    // All in the owner's cell (cell 0: nodes 0..4).
    assert!(held.values().flatten().all(|n| *n < 4), "{held:?}");
    assert_eq!(in_use(&sim), 6 * 16);
    let owner = sim.node(1).unwrap().heat().unwrap().stats(sim.now());
    assert_eq!(owner.leases_placed, 6);
    // The tasks end at 20 s: leases released or expired, resources free.
    run_checked(&mut sim, 25 * S, seed);
    assert_eq!(in_use(&sim), 0);
    assert!(holders(&sim).is_empty());
    let owner = sim.node(1).unwrap().heat().unwrap().stats(sim.now());
    assert_eq!(owner.tasks_done, 6);
    assert_eq!(owner.sla_violations, 0);
}

#[test]
fn under_loss_and_crashes_no_lease_has_two_holders_and_lost_leases_are_placed_again() {
    for seed in 1u64..=12 {
        let topo = Topo::cluster(1, 6, 2 * MS, 10 * MS, seed);
        let mut sim = Sim::with_heat(&topo, seed, test_params(), one_shell(), |_| 1.0).unwrap();
        sim.run_for(5 * S);
        sim.set_loss_all(100_000); // 10 % of every datagram lost
        for _ in 0..8 {
            let r = sim.command(2, &task(12, 60));
            assert!(matches!(r, Some(Ok(Reply::TaskSubmitted { .. }))), "{r:?}");
        }
        run_checked(&mut sim, 8 * S, seed);
        // Crash the busiest holder (not the owner); its leases are lost.
        let held = holders(&sim);
        let mut load: BTreeMap<u32, usize> = BTreeMap::new();
        for t in held.values().flatten() {
            if *t != 2 {
                *load.entry(*t).or_default() += 1;
            }
        }
        let victim = *load
            .iter()
            .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
            .unwrap()
            .0;
        sim.crash(victim);
        // Re-placement waits for every expiry the owner sent for the lost lease, then runs
        // offer rounds that 10 % loss can cost. The branch checked at a fixed 20 s; over
        // seeds 1..=12 that failed on 2 seeds (1 and 10 with today's membership; 9 and 10
        // with the one before), the last task still on offer; all 12 were placed again by
        // 22 s (seeds 1 and 10: 21 s, 22 s). No spec figure governs this; the bound is 30 s,
        // loosened from the branch's 20 s for the reason above, and the time is printed.
        let t0 = sim.now();
        let mut held = holders(&sim);
        while sim.now() - t0 < 30 * S && !(sim.now() - t0 >= 20 * S && held.len() == 8) {
            run_checked(&mut sim, S, seed);
            held = holders(&sim);
        }
        eprintln!(
            "seed {seed}: {} of 8 tasks held {:?} after the crash",
            held.len(),
            sim.now() - t0
        );
        let owner = sim.node(2).unwrap().heat().unwrap().stats(sim.now());
        assert!(
            owner.sla_violations >= 1,
            "seed {seed}: the crash cost a lease: {owner:?}"
        );
        assert_eq!(
            held.len(),
            8,
            "seed {seed}: every task placed again within 30 s: {held:?}"
        );
        assert!(held.values().flatten().all(|n| *n != victim));
        sim.restart(victim);
        run_checked(&mut sim, 10 * S, seed);
        // The owner crashes: every lease expires at its holder, freeing its units.
        sim.crash(2);
        run_checked(&mut sim, 10 * S, seed);
        assert_eq!(
            in_use(&sim),
            0,
            "seed {seed}: expired leases free their resources"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed: u64| {
        let topo = Topo::cluster(2, 3, 2 * MS, 10 * MS, seed);
        let mut sim = Sim::with_heat(&topo, seed, test_params(), one_shell(), |_| 1.0).unwrap();
        sim.set_loss_all(50_000);
        for _ in 0..4 {
            sim.command(1, &task(8, 15));
        }
        sim.run_for(30 * S);
        sim.trace_hash()
    };
    assert_eq!(run(4), run(4));
    assert_ne!(run(4), run(5));
}

/// Two shells: the inner at 0.7 AU, the outer at 1.5 AU with a small radiator, so the
/// heat the inner passes outward saturates the outer.
fn two_shells() -> ThermalConfig {
    let inner = LayerThermal {
        thermal_mass_j_per_k: 200.0,
        ..LayerThermal::default()
    };
    let outer = LayerThermal {
        thermal_mass_j_per_k: 200.0,
        radiator_area_m2: 0.3,
        ..LayerThermal::default()
    };
    ThermalConfig {
        layers: BTreeMap::from([(0, inner), (1, outer)]),
        interval_ns: 1_000_000_000,
    }
}

fn radius(a: &HierAddr) -> f64 {
    if a.layer == 0 {
        0.7
    } else {
        1.5
    }
}

#[test]
fn an_outer_shell_past_90_percent_throttles_the_inner_one() {
    let seed = 7;
    let topo = Topo::backbone(&[20 * MS, 20 * MS], &[50 * MS]);
    let mut sim = Sim::with_heat(&topo, seed, test_params(), two_shells(), radius).unwrap();
    sim.run_for(10 * S);
    let dir = sim.directory().clone();
    let layer_of = |i: u32| dir.get(i).unwrap().addr.layer;
    let inner_tiles: Vec<u32> = (0..sim.len() as u32)
        .filter(|i| layer_of(*i) == 0)
        .collect();
    assert!(inner_tiles.iter().all(|i| !sim
        .node(*i)
        .unwrap()
        .heat()
        .unwrap()
        .stats(sim.now())
        .throttled));
    // Load the inner shell: each inner tile gets tasks owned by itself.
    for &i in &inner_tiles {
        for _ in 0..6 {
            sim.command(i, &task(10, 600));
        }
    }
    let mut outer_crossed = None;
    let mut throttled_at = None;
    let end = sim.now() + Duration::from_secs(240);
    while sim.now() < end && throttled_at.is_none() {
        sim.run_for(100 * MS);
        let now = sim.now();
        let outer_max = (0..sim.len() as u32)
            .filter(|i| layer_of(*i) == 1)
            .map(|i| sim.node(i).unwrap().heat().unwrap().stats(now).load_ratio)
            .fold(0.0, f64::max);
        if outer_crossed.is_none() && outer_max >= 0.9 {
            outer_crossed = Some(now);
        }
        if inner_tiles
            .iter()
            .all(|i| sim.node(*i).unwrap().heat().unwrap().stats(now).throttled)
        {
            throttled_at = Some(now);
        }
    }
    for i in 0..sim.len() as u32 {
        eprintln!(
            "{i}: {:?}",
            sim.node(i).unwrap().heat().unwrap().stats(sim.now())
        );
    }
    let (crossed, throttled) = (
        outer_crossed.expect("the outer shell passes 90 %"),
        throttled_at.expect("the inner shell is throttled"),
    );
    let lag = throttled - crossed;
    eprintln!("outer passed 90 % at {crossed}, inner throttled at {throttled}: {lag:?}");
    // Up: descriptor → cell → cluster → layer gateway (≤ 3 rounds), the other layer's
    // gateway (≤ 1 round), down the layer (cluster → cell → members, forwarded at once):
    // 5 rounds of 1 s plus the link delays.
    assert!(lag <= Duration::from_secs(6), "{lag:?}");
    // The core measures the same lag itself, from the first outer tile's crossing.
    for &i in &inner_tiles {
        let s = sim.node(i).unwrap().heat().unwrap().stats(sim.now());
        assert!(
            s.throttle_lag_max_s > 0.0 && s.throttle_lag_max_s <= 6.0,
            "node {i}: {s:?}"
        );
        assert!(s.load_peak_ratio <= 1.0, "node {i}: {s:?}");
    }
    // Throttled tiles admit nothing new: a task submitted now is not placed.
    let held = |sim: &Sim| -> u64 {
        inner_tiles
            .iter()
            .map(|i| {
                sim.node(*i)
                    .unwrap()
                    .heat()
                    .unwrap()
                    .stats(sim.now())
                    .leases_held
            })
            .sum()
    };
    let before = held(&sim);
    let r = sim.command(inner_tiles[1], &task(4, 60));
    assert!(matches!(r, Some(Ok(Reply::TaskSubmitted { .. }))), "{r:?}");
    sim.run_for(3 * S);
    assert!(inner_tiles.iter().all(|i| sim
        .node(*i)
        .unwrap()
        .heat()
        .unwrap()
        .stats(sim.now())
        .throttled));
    assert!(held(&sim) <= before, "{} > {before}", held(&sim));
    // No shell went above 100 %.
    for i in 0..sim.len() as u32 {
        let s = sim.node(i).unwrap().heat().unwrap().stats(sim.now());
        assert!(s.load_ratio <= 1.0, "node {i}: {s:?}");
    }
}
