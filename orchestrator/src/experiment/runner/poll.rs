//! The poller: each round, every node's `/state` (membership, quarantine, routes, clock);
//! every [`METRICS_EVERY`] rounds the lab status (link delays, agent pids for CPU) and the
//! merged `/metrics` (locality, delivered messages) too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::record::{
    KeyObs, MemberObs, Recording, SeriesPoint, StatePoll, TimeObs, TimeSample,
};
use super::{Shared, STATUS_TIMEOUT};
use crate::client::{Client, NodeState};
use crate::procstat::cpu_ticks;
use crate::telemetry::{parse_prometheus, Samples};

/// Real time between state-poll rounds.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Every how many rounds the lab status and merged metrics are read too.
const METRICS_EVERY: u32 = 2;

/// One `/state` poll: what the expectations use, and the whole (typed) answer.
pub(super) fn poll_state(
    api: &Client,
    node: &str,
    round: u32,
    t0: Instant,
) -> Option<(StatePoll, NodeState)> {
    let a = t0.elapsed().as_secs_f64();
    let r = api.node_state(node, Duration::from_secs(1));
    let z = t0.elapsed().as_secs_f64();
    let v = r.ok()?;
    let poll = state_poll(&v, node, round, (a + z) / 2.0);
    Some((poll, v))
}

/// What the expectations use of one `/state` answer of `node`, taken at `t_real_s`.
pub(crate) fn state_poll(v: &NodeState, node: &str, round: u32, t_real_s: f64) -> StatePoll {
    StatePoll {
        round,
        t_real_s,
        node: node.to_string(),
        id: v.id,
        now_emulated_s: v.now_emulated_s,
        members: v
            .members
            .iter()
            .map(|m| MemberObs {
                id: m.id,
                state: m.state.clone(),
                incarnation: m.incarnation,
                since_emulated_s: m.since_emulated_s,
            })
            .collect(),
        quarantine: v.quarantine.clone(),
        routes: v.routes.iter().map(|r| r.dest.clone()).collect(),
        pulsar_missed: v.time.as_ref().and_then(|t| t.pulsar_missed_total),
        shards: v.store.as_ref().map(|s| s.shards.clone()),
        keys: KeyObs {
            revoked: v.revoked.clone(),
            revoked_delivered: v
                .counters
                .get("datagrams.app.revoked_delivered")
                .copied()
                .unwrap_or(0),
            refused: v
                .counters
                .get("datagrams.rx.key_revoked")
                .copied()
                .unwrap_or(0),
            rotated: v
                .trust
                .as_ref()
                .map(|t| t.rotated.keys().filter_map(|k| k.parse().ok()).collect())
                .unwrap_or_default(),
        },
    }
}

/// What the poller needs from the run.
pub(super) struct Poller {
    pub api: Client,
    pub shared: Arc<Mutex<Shared>>,
    pub stop: Arc<AtomicBool>,
    pub names: Vec<String>,
    /// Node → hierarchical address (for the thermal load per shell).
    pub addrs: BTreeMap<String, String>,
    /// Links whose delay is plotted.
    pub watched: Vec<String>,
    /// The merged `/metrics` at the start: the baseline of counters.
    pub start: Samples,
    pub t0: Instant,
}

impl Poller {
    /// Polls until `stop` is set.
    pub(super) fn run(self) {
        let Poller {
            api,
            shared,
            stop,
            names,
            addrs,
            watched,
            start,
            t0,
        } = self;
        let mut round = 0u32;
        let mut last_links: BTreeMap<String, Option<f64>> = BTreeMap::new();
        let mut last_loc = None;
        let mut last_thermal = BTreeMap::new();
        shared.lock().expect("shared").delivered.baseline(&start);
        while !stop.load(Ordering::Relaxed) {
            let began = Instant::now();
            round += 1;
            let (polls, clocks): (Vec<StatePoll>, Vec<Option<TimeObs>>) = names
                .iter()
                .filter_map(|n| {
                    let (poll, v) = poll_state(&api, n, round, t0)?;
                    Some((poll, v.time.as_ref().map(TimeObs::of_time)))
                })
                .unzip();
            let clocks: Vec<TimeObs> = clocks.into_iter().flatten().collect();
            let mut pt = SeriesPoint {
                t_real_s: t0.elapsed().as_secs_f64(),
                time: TimeSample::of(&clocks),
                ..Default::default()
            };
            for p in &polls {
                pt.count(p);
            }
            let mut pids = Vec::new();
            if round % METRICS_EVERY == 1 {
                if let Ok(st) = api.status(STATUS_TIMEOUT) {
                    last_links = st
                        .links
                        .iter()
                        .filter(|l| watched.contains(&l.name))
                        .map(|l| (l.name.clone(), l.up.then_some(l.delay_s)))
                        .collect();
                    // A pid of another host means nothing (or another process) here.
                    pids = st
                        .nodes
                        .iter()
                        .filter(|_| !api.is_spread())
                        .filter_map(|n| Some((n.agent.pid?, n.name.clone())))
                        .collect();
                }
                if let Ok(text) = api.metrics(Duration::from_secs(5)) {
                    let rec = Recording {
                        metrics_start: start.clone(),
                        metrics_end: parse_prometheus(&text),
                        ..Default::default()
                    };
                    let inc = rec.locality();
                    last_loc = inc.0;
                    last_thermal = crate::experiment::record::thermal_by_shell(
                        rec.metrics_end
                            .iter()
                            .filter(|(n, _, _)| n == "lightcone_thermal_load_ratio")
                            .filter_map(|(_, l, v)| Some((l.get("node")?.as_str(), *v))),
                        &addrs,
                    );
                    shared
                        .lock()
                        .expect("shared")
                        .delivered
                        .observe_delivered(&rec.metrics_end);
                }
            }
            pt.links = last_links.clone();
            pt.locality = last_loc;
            pt.thermal = last_thermal.clone();
            {
                let mut s = shared.lock().expect("shared");
                s.polls.extend(polls);
                s.series.push(pt);
                for (pid, name) in pids {
                    if let Some(t) = cpu_ticks(pid) {
                        s.cpu_seen(pid, &name, t);
                    }
                }
            }
            if let Some(d) = POLL_INTERVAL.checked_sub(began.elapsed()) {
                std::thread::sleep(d);
            }
        }
    }
}
