//! Issue 17's BFT decision-latency figures: the small-group BFT ([`lightcone_core::trust::bft`])
//! in its deterministic harness, groups of 4, 12 and 100 members, 1 % random loss on every
//! message, 50 ms one way (+ 0–5 ms jitter, so one link RTT is ~100 ms), real Ed25519
//! signatures. Entries are submitted one per second at honest members in turn; latency is
//! submission → decision at each honest member, in link RTTs (virtual time, so the figures
//! are the protocol's, not this host's). Also a group of 12 whose round-1 leader and two
//! more members are crashed (view changes included), and one with f equivocators.
//!
//! `cargo run -p lightcone-core --example bft_bench` (add `--release` for speed; the
//! figures are the same, virtual time is seeded).
//!
//! Printed at commit time (seed 1 / seed 2), latency in link RTTs:
//! - n = 4, 1 % loss: p50 3.10 / 3.11, p99 13.68 / 4.16
//! - n = 12, 1 % loss: p50 3.15 / 3.15, p99 4.23 / 4.20
//! - n = 12, 3 crashed (incl. round 1's leader): p50 23.72 / 23.71, p99 34.33 / 34.32
//! - n = 12, 3 equivocators: p50 4.24 / 13.56, p99 26.91 / 155.37
//! - n = 100, 1 % loss: p50 3.17 / 3.17, p99 13.16 / 12.03
//!
//! Why: a decision needs ~3 RTTs (submit → proposal → votes → next proposal → votes → the
//! proposal carrying the committing QC); a lost message costs a round timer (1 s = 10
//! RTTs here), which is the p99 tail; a crashed leader costs a timer every time its turn
//! comes round. No spec figure exists for BFT decision latency.

use std::time::{Duration, Instant as Wall};

use lightcone_core::time::Instant;
use lightcone_core::trust::bft::BftParams;
use lightcone_core::trust::bft_harness::{percentile, Harness, NetConfig, Role};
use lightcone_core::wire::Auth;

struct Case {
    name: &'static str,
    n: usize,
    entries: usize,
    crashed: Vec<u32>,
    split: Vec<u32>,
}

fn run(c: &Case, seed: u64) {
    let mut cfg = NetConfig::new(c.n, seed);
    cfg.loss = 0.01;
    cfg.auth = Auth::Ed25519;
    cfg.params = BftParams {
        base_timeout: Duration::from_millis(1000),
        ..BftParams::default()
    };
    for m in &c.crashed {
        cfg.roles.insert(*m, Role::CrashAt(Instant::ZERO));
    }
    for m in &c.split {
        cfg.roles.insert(*m, Role::Split);
    }
    // The Split members show the upper half of the honest members another world.
    let honest: Vec<u32> = (0..c.n as u32)
        .filter(|i| !c.crashed.contains(i) && !c.split.contains(i))
        .collect();
    if !c.split.is_empty() {
        cfg.world_b = honest[honest.len() / 2..].iter().copied().collect();
    }
    let rtt = cfg.rtt();
    let wall = Wall::now();
    let mut h = Harness::new(cfg);
    for i in 0..c.entries {
        let at = Instant::ZERO + Duration::from_secs(1 + i as u64);
        h.submit_at(
            at,
            honest[i % honest.len()],
            format!("revoke tile {i}").into_bytes(),
        );
    }
    let end = Instant::ZERO + Duration::from_secs(c.entries as u64 + 300);
    h.run_until(end);
    let logs = h.logs();
    let complete = logs.values().filter(|l| l.len() == c.entries).count();
    let first = logs.values().next().cloned().unwrap_or_default();
    let same = logs.values().all(|l| *l == first);
    let lat = &h.report.latencies;
    println!(
        "{:<34} n={:<3} f={:<2} seed={seed} decided {}/{} honest complete, same log {}, disagreements {} | latency RTTs p50 {:.2} p99 {:.2} max {:.2} | msgs {} lost {} MB {:.1} | wall {:.1} s",
        c.name,
        c.n,
        (c.n - 1) / 3,
        complete,
        logs.len(),
        same,
        h.report.disagreements,
        percentile(lat, 50.0, rtt),
        percentile(lat, 99.0, rtt),
        percentile(lat, 100.0, rtt),
        h.report.sent,
        h.report.lost,
        h.report.bytes as f64 / 1e6,
        wall.elapsed().as_secs_f64()
    );
}

fn main() {
    let cases = [
        Case {
            name: "honest, 1% loss",
            n: 4,
            entries: 40,
            crashed: vec![],
            split: vec![],
        },
        Case {
            name: "honest, 1% loss",
            n: 12,
            entries: 40,
            crashed: vec![],
            split: vec![],
        },
        Case {
            name: "3 crashed incl. round-1 leader",
            n: 12,
            entries: 40,
            crashed: vec![1, 5, 9],
            split: vec![],
        },
        Case {
            name: "3 equivocators (split worlds)",
            n: 12,
            entries: 40,
            crashed: vec![],
            split: vec![9, 10, 11],
        },
        Case {
            name: "honest, 1% loss",
            n: 100,
            entries: 20,
            crashed: vec![],
            split: vec![],
        },
    ];
    for c in &cases {
        for seed in [1, 2] {
            run(c, seed);
        }
    }
}
