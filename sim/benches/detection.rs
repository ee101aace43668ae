//! Detection-time distribution at N = 1,000 in the deterministic harness.
//!
//! `cargo bench -p lightcone-sim --bench detection` (release; real Ed25519 on every
//! frame). One 1,000-tile cell (ring + random chords, 2 ms links), default SWIM/Lifeguard
//! parameters. After a warm-up, 20 seeded crashes are injected in rounds of
//! `LC_BENCH_PARALLEL` (default 5) simultaneous victims; a victim's detection time is the
//! time from its crash until the *last* live peer marks it dead. Then the false-positive
//! rate is measured with 1 % loss on every link. Environment: `LC_BENCH_N`,
//! `LC_BENCH_CRASHES`, `LC_BENCH_PARALLEL`, `LC_BENCH_SEED`, `LC_BENCH_LOSS_S`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lightcone_core::counters::{Direction, Outcome};
use lightcone_core::io::Event;
use lightcone_core::params::Params;
use lightcone_core::time::Instant;
use lightcone_core::wire::MemberState;
use lightcone_sim::{Sim, Topo};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let n = env("LC_BENCH_N", 1000) as u32;
    let crashes = env("LC_BENCH_CRASHES", 20) as usize;
    let parallel = env("LC_BENCH_PARALLEL", 5).max(1) as usize;
    let seed = env("LC_BENCH_SEED", 2026);
    let loss_s = env("LC_BENCH_LOSS_S", 10);
    let params = Params::default();
    println!(
        "detection bench: N={n} crashes={crashes} parallel={parallel} seed={seed} auth={:?} \
         T={:?} probe_timeout={:?} k={} alpha={} beta={} K={} gossip={:?}x{}",
        params.auth,
        params.swim.protocol_period,
        params.swim.probe_timeout,
        params.swim.indirect_probes,
        params.swim.suspicion_alpha,
        params.swim.suspicion_beta,
        params.swim.suspicion_confirmations,
        params.swim.gossip_interval,
        params.swim.gossip_fanout
    );
    let wall = std::time::Instant::now();
    let topo = Topo::cell(n, 1, Duration::from_millis(2), seed);
    let mut sim = Sim::new(&topo, seed, params);
    sim.run_for(Duration::from_secs(8));
    let warm = sim.take_events();
    let warm_suspects = warm
        .iter()
        .filter(|(_, _, e)| {
            matches!(
                e,
                Event::MemberChanged {
                    state: MemberState::Suspect,
                    ..
                }
            )
        })
        .count();
    println!(
        "warm-up 8 s emulated in {:.1} s real: {} links, {} datagrams delivered, {} suspect events",
        wall.elapsed().as_secs_f64(),
        topo.links.len(),
        sim.delivered,
        warm_suspects
    );

    print_traffic(&sim, n, "warm-up");
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a5);
    let mut ids: Vec<u32> = (0..n).collect();
    ids.shuffle(&mut rng);
    let victims: Vec<u32> = ids.into_iter().take(crashes).collect();
    let mut times: Vec<f64> = Vec::new();
    let mut undetected = 0usize;
    let mut false_dead = 0usize;
    let mut crashed: BTreeSet<u32> = BTreeSet::new();
    for round in victims.chunks(parallel) {
        let t0 = sim.now();
        for v in round {
            sim.crash(*v);
            crashed.insert(*v);
        }
        // First Dead event per (observer, victim).
        let mut seen: BTreeMap<u32, BTreeMap<u32, Instant>> = BTreeMap::new();
        let live: Vec<u32> = (0..n).filter(|i| !crashed.contains(i)).collect();
        let deadline = t0 + Duration::from_secs(30);
        while sim.now() < deadline {
            sim.run_for(Duration::from_millis(250));
            for (t, obs, e) in sim.take_events() {
                if let Event::MemberChanged {
                    node,
                    state: MemberState::Dead,
                    ..
                } = e
                {
                    if round.contains(&node) {
                        seen.entry(node).or_default().entry(obs).or_insert(t);
                    } else if !crashed.contains(&node) {
                        false_dead += 1;
                    }
                }
            }
            let done = round.iter().all(|v| {
                seen.get(v)
                    .is_some_and(|m| live.iter().all(|o| m.contains_key(o)))
            });
            if done {
                break;
            }
        }
        for v in round {
            let m = seen.get(v);
            match m.filter(|m| live.iter().all(|o| m.contains_key(o))) {
                Some(m) => {
                    let last = m.values().max().copied().unwrap_or(t0);
                    let first = m.values().min().copied().unwrap_or(t0);
                    let d = (last - t0).as_secs_f64();
                    println!(
                        "  crash tile {v:4} at {t0}: first peer marks dead after {:.2} s, all {} peers after {d:.2} s",
                        (first - t0).as_secs_f64(),
                        live.len()
                    );
                    times.push(d);
                }
                None => {
                    undetected += 1;
                    println!(
                        "  crash tile {v:4}: NOT dead everywhere within 30 s ({} peers saw it)",
                        m.map_or(0, |m| m.len())
                    );
                }
            }
        }
        // Let the dead-updates drain before the next round.
        sim.run_for(Duration::from_secs(2));
        sim.take_events();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    if !times.is_empty() {
        println!(
            "detection time (crash -> dead at every live peer), {} crashes, N={n}: min {:.2} s, p50 {:.2} s, p99 {:.2} s, max {:.2} s; undetected {undetected}; within 10 s: {}/{}",
            times.len(),
            times[0],
            pct(&times, 0.5),
            pct(&times, 0.99),
            times[times.len() - 1],
            times.iter().filter(|t| **t < 10.0).count(),
            crashes
        );
    }
    println!("false deaths of live tiles during the crash rounds: {false_dead}");
    println!(
        "crash rounds done after {:.1} s real",
        wall.elapsed().as_secs_f64()
    );

    if loss_s > 0 {
        sim.set_loss_all(10_000);
        sim.take_events();
        let t0 = sim.now();
        sim.run_for(Duration::from_secs(loss_s));
        let ev = sim.take_events();
        let live = (0..n).filter(|i| !crashed.contains(i)).count();
        // A suspicion is one (member, incarnation); it shows up once per observer.
        let mut suspicions = BTreeSet::new();
        let mut suspect_events = 0usize;
        let mut dead = BTreeSet::new();
        for (_, _, e) in &ev {
            if let Event::MemberChanged {
                node,
                state,
                incarnation,
            } = e
            {
                if crashed.contains(node) {
                    continue;
                }
                match state {
                    MemberState::Suspect => {
                        suspect_events += 1;
                        suspicions.insert((*node, *incarnation));
                    }
                    MemberState::Dead => {
                        dead.insert(*node);
                    }
                    MemberState::Alive => {}
                }
            }
        }
        let probes = live as f64 * loss_s as f64 / 0.5;
        println!(
            "1 % loss on every link, {loss_s} s emulated from {t0}, {live} live tiles (~{probes:.0} probes): \
             {} distinct suspicions of live tiles ({:.4} % of probes; {suspect_events} observer-events), \
             live tiles falsely declared dead: {}",
            suspicions.len(),
            100.0 * suspicions.len() as f64 / probes,
            dead.len()
        );
        print_traffic(&sim, n, "whole run");
    }
    println!("total {:.1} s real", wall.elapsed().as_secs_f64());
}

fn print_traffic(sim: &Sim, n: u32, what: &str) {
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut fwd = 0u64;
    for i in 0..n {
        if let Some(node) = sim.node(i) {
            for (k, v) in &node.counters().by_kind_tx {
                *kinds.entry(k).or_default() += v;
            }
            fwd += node.counters().get(Direction::Fwd, Outcome::Ok);
        }
    }
    let secs = sim.now().as_secs_f64();
    let per: Vec<String> = kinds
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", *v as f64 / f64::from(n) / secs))
        .collect();
    println!(
        "{what}: originated frames per tile per emulated second: {}; forwarded {:.2}",
        per.join(", "),
        fwd as f64 / f64::from(n) / secs
    );
}
