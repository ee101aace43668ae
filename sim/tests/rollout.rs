//! Issue 18's twin scenarios `rollout-good` and `rollout-bad`: a staged rollout (canary cell
//! → rest of the cluster → …) of protocol 3 over a cluster of four cells, gated by delivery,
//! rejoin and false-death monitors over a soak. The sound build reaches every tile with
//! nothing lost; the defective one (drops 30 % of the frames it forwards) is caught at the
//! canary and rolled back before any tile outside the canary cell runs it.

use std::time::Duration;

use lightcone_core::addr::HierAddr;
use lightcone_core::io::{Command, Event, Reply};
use lightcone_core::kv::Durability;
use lightcone_core::update::Build;
use lightcone_sim::rollout::{builds, plan, run, Gates};
use lightcone_sim::{test_params, Sim, Topo};

const MS: Duration = Duration::from_millis(1);
const CANARY: HierAddr = HierAddr {
    layer: 0,
    cluster: 0,
    cell: 1,
    tile: 0,
};

fn lab(seed: u64) -> Sim {
    let topo = Topo::cluster(4, 5, 3 * MS, 20 * MS, seed);
    let mut sim = Sim::new(&topo, seed, test_params());
    sim.run_for(Duration::from_secs(15));
    sim
}

/// Every tile writes `keys` keys with `durability=cell`; the (tile, key, value) of each
/// write its cell acknowledged.
fn write_cell_data(sim: &mut Sim, keys: u32) -> Vec<(u32, String, Vec<u8>)> {
    let mut asked = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    for k in 0..keys {
        for n in 0..sim.len() as u32 {
            let request = u64::from(n) << 16 | u64::from(k);
            let (key, value) = (format!("data/{n}/{k}"), format!("v{n}.{k}").into_bytes());
            let put = Command::Put {
                request,
                key: key.clone(),
                value: value.clone(),
                durability: Durability::Cell,
            };
            match sim.command(n, &put) {
                Some(Ok(Reply::KvWritten { .. })) => {
                    asked.insert(request, (n, key, value, true));
                }
                Some(Ok(_)) => {
                    asked.insert(request, (n, key, value, false));
                }
                other => errors.push(format!("{other:?}")),
            }
        }
        sim.run_for(Duration::from_secs(1));
    }
    assert_eq!(errors, Vec::<String>::new());
    sim.run_for(Duration::from_secs(2));
    for (_, _, e) in sim.take_events() {
        if let Event::KvWritten { request, .. } = e {
            if let Some(w) = asked.get_mut(&request) {
                w.3 = true;
            }
        }
    }
    asked
        .into_values()
        .filter(|w| w.3)
        .map(|(n, k, v, _)| (n, k, v))
        .collect()
}

/// The acknowledged writes of `data` some tile of the writer's cell does not hold now:
/// (writer, reader, key).
fn lost(sim: &mut Sim, data: &[(u32, String, Vec<u8>)]) -> Vec<(u32, u32, String)> {
    let dir = sim.directory().clone();
    let mut out = Vec::new();
    for (w, key, value) in data {
        let a = dir.addr(*w).unwrap();
        for r in dir.ids_where(|b| b.same_cell(&a)) {
            let got = sim.command(r, &Command::Get { key: key.clone() });
            let held = matches!(got, Some(Ok(Reply::KvValue { siblings, .. })) if siblings.contains(value));
            if !held {
                out.push((*w, r, key.clone()));
            }
        }
    }
    out
}

/// No data lost: what every cell held before the rollout, every tile of it holds after,
/// because a wave never empties more of a cell than a `cell` write survives and the next
/// wave waits for the last to refill. Replacing the whole canary cell at once (what the
/// rollout did before its waves) loses it: the check fails there.
#[test]
fn rollout_good_keeps_every_acknowledged_write_and_a_whole_cell_at_once_does_not() {
    let mut sim = lab(33);
    let data = write_cell_data(&mut sim, 4);
    assert_eq!(
        data.len(),
        80,
        "every write acknowledged before the rollout"
    );
    let stages = plan(&sim, CANARY);
    let new = Build::new(3).unwrap();
    let r = run(&mut sim, &stages, new, Build::default(), &Gates::default());
    assert_eq!(r.halted, None, "{}", r.render());
    assert_eq!(lost(&mut sim, &data), Vec::new());

    let mut sim = lab(33);
    let data = write_cell_data(&mut sim, 4);
    for n in &stages[0].nodes {
        sim.set_build(*n, new);
    }
    sim.run_for(Duration::from_secs(30));
    let gone = lost(&mut sim, &data);
    assert!(
        gone.iter().any(|(w, _, _)| stages[0].nodes.contains(w)),
        "the canary cell's writes survived its whole cell restarting empty: {gone:?}"
    );
}

#[test]
fn rollout_good_reaches_every_tile_through_all_stages_with_nothing_lost() {
    let mut sim = lab(31);
    let stages = plan(&sim, CANARY);
    let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
    assert_eq!(names, ["canary", "cluster"], "one layer of one cluster");
    assert_eq!(stages[0].nodes, (5..10).collect::<Vec<u32>>());
    let new = Build::new(3).unwrap();
    let r = run(&mut sim, &stages, new, Build::default(), &Gates::default());
    eprint!("rollout-good\n{}", r.render());
    assert_eq!(r.halted, None);
    assert!(builds(&sim).values().all(|b| *b == new));
    for st in &r.stages {
        assert!(st.sent > 0);
        assert_eq!(st.delivered, st.sent, "stage {}: data lost", st.name);
    }
    // The canary's detection probe ran and held the spec's bound; later stages were not
    // crashed.
    let d = r.stages[0].detection.expect("the canary was probed");
    assert!(d < lightcone_sim::rollout::DETECTION_BOUND, "{d:?}");
    assert!(r.stages[1..].iter().all(|s| s.detection.is_none()));
}

/// The detection gate: a lab whose membership probes every 12 s (the spec's detection is
/// < 10 s) passes every soak round but not the canary's crash probe.
#[test]
fn a_slow_failure_detector_fires_the_detection_gate_at_the_canary() {
    let topo = Topo::cluster(4, 5, 3 * MS, 20 * MS, 35);
    let mut params = test_params();
    params.swim.protocol_period = Duration::from_secs(12);
    params.swim.probe_timeout = Duration::from_secs(4);
    let mut sim = Sim::new(&topo, 35, params);
    sim.run_for(Duration::from_secs(60));
    let stages = plan(&sim, CANARY);
    let g = Gates {
        soak: Duration::from_secs(4),
        ..Gates::default()
    };
    let r = run(
        &mut sim,
        &stages,
        Build::new(3).unwrap(),
        Build::default(),
        &g,
    );
    eprint!("slow detector\n{}", r.render());
    let h = r
        .halted
        .as_ref()
        .expect("a 12 s probe period passed the detection gate");
    assert_eq!((h.stage, h.gate), ("canary", "detection"), "{h:?}");
    assert!(builds(&sim).values().all(|b| *b == Build::default()));
}

#[test]
fn rollout_bad_is_caught_at_the_canary_and_rolled_back_before_it_leaves_the_cell() {
    let mut sim = lab(32);
    let stages = plan(&sim, CANARY);
    let bad = Build::new(3).unwrap().with_forward_drop(300_000).unwrap();
    let r = run(&mut sim, &stages, bad, Build::default(), &Gates::default());
    eprint!("rollout-bad\n{}", r.render());
    let h = r.halted.as_ref().expect("the defect was not caught");
    assert_eq!(h.stage, "canary");
    assert_eq!(h.gate, "delivery");
    assert_eq!(r.stages.len(), 1, "no stage after the canary ran");
    assert!(builds(&sim).values().all(|b| *b == Build::default()));
    // Tiles outside the canary cell never restarted: they never ran the bad build.
    for i in (0..20).filter(|i| !(5..10).contains(i)) {
        assert_eq!(sim.boots(i), 1, "tile {i} was updated");
    }
    let to_rollback = h.rolled_back_at.saturating_since(r.stages[0].deployed_at);
    eprintln!(
        "time to rollback: {:.3} s after the canary's deployment",
        to_rollback.as_secs_f64()
    );
    assert!(to_rollback <= Gates::default().rejoin + Gates::default().soak);
}

#[test]
fn a_canary_tile_that_cannot_rejoin_fires_the_rejoin_gate() {
    let mut sim = lab(33);
    let stages = plan(&sim, CANARY);
    // Tile 7 of the canary cell loses every link just as the update lands.
    for peer in 0..20 {
        sim.set_link(7, peer, false);
    }
    let new = Build::new(3).unwrap();
    let r = run(&mut sim, &stages, new, Build::default(), &Gates::default());
    eprint!("rollout with a cut canary tile\n{}", r.render());
    let h = r.halted.as_ref().expect("the rejoin gate did not fire");
    assert_eq!((h.stage, h.gate), ("canary", "rejoin"));
    assert_eq!(r.stages[0].rejoined_at, None);
}

#[test]
fn rollout_good_on_a_backbone_goes_canary_then_layer_then_all() {
    // Two layers of three clusters (one cell of three tiles each) and an authority per
    // layer: clusters hold one cell, so the cluster stage is empty and left out.
    let topo = Topo::backbone(&[20 * MS, 20 * MS], &[30 * MS]);
    let mut sim = Sim::new(&topo, 34, test_params());
    sim.run_for(Duration::from_secs(20));
    let canary = sim.directory().addr(0).unwrap();
    let stages = plan(&sim, canary);
    let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
    assert_eq!(names, ["canary", "layer", "all"]);
    let new = Build::new(3).unwrap();
    let r = run(&mut sim, &stages, new, Build::default(), &Gates::default());
    eprint!("rollout-good (backbone)\n{}", r.render());
    assert_eq!(r.halted, None);
    assert!(builds(&sim).values().all(|b| *b == new));
    assert!(r.stages.iter().all(|s| s.sent > 0 && s.delivered == s.sent));
}

#[test]
fn rollout_bad_on_a_backbone_never_leaves_the_canary_cell() {
    let topo = Topo::backbone(&[20 * MS, 20 * MS], &[30 * MS]);
    let mut sim = Sim::new(&topo, 35, test_params());
    sim.run_for(Duration::from_secs(20));
    let canary = sim.directory().addr(0).unwrap();
    let stages = plan(&sim, canary);
    let bad = Build::new(3).unwrap().with_forward_drop(300_000).unwrap();
    let r = run(&mut sim, &stages, bad, Build::default(), &Gates::default());
    eprint!("rollout-bad (backbone)\n{}", r.render());
    let h = r.halted.as_ref().expect("the defect was not caught");
    assert_eq!((h.stage, h.gate), ("canary", "delivery"));
    assert!(builds(&sim).values().all(|b| *b == Build::default()));
    for i in (0..sim.len() as u32).filter(|i| !stages[0].nodes.contains(i)) {
        assert_eq!(sim.boots(i), 1, "tile {i} was updated");
    }
}

#[test]
fn one_seed_gives_one_rollout() {
    let go = |seed: u64| {
        let mut sim = lab(seed);
        let stages = plan(&sim, CANARY);
        let bad = Build::new(3).unwrap().with_forward_drop(300_000).unwrap();
        let r = run(&mut sim, &stages, bad, Build::default(), &Gates::default());
        (r, sim.trace_hash())
    };
    let a = go(36);
    assert_eq!(a, go(36));
    assert_ne!(a.1, go(37).1);
}

/// The causal gate: with the delivery gate switched off (a bound of 0), the defective
/// build's forwarding drops lose cell-acknowledged writes on their way to cell-mates, and
/// the causal gate catches it at the canary instead.
#[test]
fn with_delivery_unjudged_the_causal_gate_catches_the_defect_at_the_canary() {
    let mut sim = lab(32);
    let stages = plan(&sim, CANARY);
    let bad = Build::new(3).unwrap().with_forward_drop(300_000).unwrap();
    let g = Gates {
        delivery_min: 0.0,
        ..Gates::default()
    };
    let r = run(&mut sim, &stages, bad, Build::default(), &g);
    eprint!("rollout-bad, delivery unjudged\n{}", r.render());
    let h = r.halted.as_ref().expect("the defect was not caught");
    assert_eq!((h.stage, h.gate), ("canary", "causal"), "{h:?}");
    assert!(
        h.reason.contains("not held by a live cell-mate"),
        "{}",
        h.reason
    );
    assert!(builds(&sim).values().all(|b| *b == Build::default()));
}

/// The thermal gate: tiles running the thermal subsystem are judged on their load at
/// each round's end; an idle lab passes the spec's bound of 1.0 and fails a bound below
/// its actual load.
#[test]
fn the_thermal_gate_passes_an_idle_lab_and_fires_below_its_load() {
    use lightcone_core::heat::config::ThermalConfig;
    use lightcone_core::heat::model::LayerThermal;
    let heat = || {
        let topo = Topo::cluster(4, 5, 3 * MS, 20 * MS, 34);
        let cfg = ThermalConfig {
            layers: std::collections::BTreeMap::from([(0, LayerThermal::default())]),
            interval_ns: 1_000_000_000,
        };
        let mut sim = Sim::with_heat(&topo, 34, test_params(), cfg, |_| 1.0).unwrap();
        sim.run_for(Duration::from_secs(15));
        sim
    };
    let new = Build::new(3).unwrap();
    let mut sim = heat();
    let stages = plan(&sim, CANARY);
    let r = run(&mut sim, &stages, new, Build::default(), &Gates::default());
    assert_eq!(r.halted, None, "{}", r.render());
    let mut sim = heat();
    let g = Gates {
        thermal_max: 1e-9,
        ..Gates::default()
    };
    let r = run(&mut sim, &stages, new, Build::default(), &g);
    eprint!("thermal bound 1e-9\n{}", r.render());
    let h = r.halted.as_ref().expect("a load above 1e-9 passed");
    assert_eq!((h.stage, h.gate), ("canary", "thermal"), "{h:?}");
}
