//! What the twin records, in the lab runner's own types: each poll round every running
//! node's `/state` as the agent would answer it (the core's [`Snapshot`] with its
//! [`TimeView`](lightcone_core::view::TimeView), through the same JSON and the same
//! [`state_poll`] as the lab's poller), the plotted [`SeriesPoint`], and the counters the
//! core keeps as Prometheus-style [`Samples`] named as the agent exports them
//! (`lightcone_locality_bytes_total`, `lightcone_datagrams_total`,
//! `lightcone_time_coverage_ratio`, `lightcone_time_alarms_total`). A crash loses a node's
//! counters with its state, as an agent's do; here what it had counted is carried over, so
//! the run's increase is exact (the lab samples every second and may lose the last one).

use std::collections::BTreeMap;

use lightcone_core::routing::Level;
use lightcone_sim::Sim;

use crate::client::NodeState;
use crate::experiment::record::{Recording, SeriesPoint, StatePoll, TimeObs, TimeSample};
use crate::experiment::runner::poll::state_poll;
use crate::telemetry::Samples;

type Labels = BTreeMap<String, String>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Node `i`'s counters and clock gauges now (empty when it is down).
fn node_samples(sim: &mut Sim, i: u32, name: &str) -> (Samples, Samples) {
    let (mut counters, mut gauges) = (Samples::new(), Samples::new());
    let Some(node) = sim.node(i) else {
        return (counters, gauges);
    };
    let loc = node.locality();
    for l in Level::ALL {
        for (k, scope) in ["local", "remote"].into_iter().enumerate() {
            let (all, work) = (loc.bytes[l as usize][k], loc.workload[l as usize][k]);
            for (class, v) in [("workload", work), ("protocol", all - work)] {
                counters.push((
                    "lightcone_locality_bytes_total".into(),
                    labels(&[
                        ("node", name),
                        ("level", l.as_str()),
                        ("scope", scope),
                        ("class", class),
                    ]),
                    v as f64,
                ));
            }
        }
    }
    for (dir, outcome, v) in node.counters().labelled() {
        counters.push((
            "lightcone_datagrams_total".into(),
            labels(&[("node", name), ("direction", dir), ("outcome", outcome)]),
            v as f64,
        ));
    }
    if let Some(h) = sim.node(i).and_then(|n| n.heat()) {
        let values = h.stats(sim.now()).metric_values();
        for ((metric, _, counter), v) in lightcone_core::heat::machine::METRICS.iter().zip(values) {
            let s = (metric.to_string(), labels(&[("node", name)]), v);
            if *counter {
                counters.push(s);
            } else {
                gauges.push(s);
            }
        }
    }
    if let Some(t) = sim.time_metrics(i) {
        counters.push((
            "lightcone_time_alarms_total".into(),
            labels(&[("node", name)]),
            t.alarms_total as f64,
        ));
        gauges.push((
            "lightcone_time_coverage_ratio".into(),
            labels(&[("node", name)]),
            t.coverage_ratio,
        ));
    }
    (counters, gauges)
}

/// The polls, series and counters of one twin run.
#[derive(Default)]
pub(super) struct Recorder {
    pub polls: Vec<StatePoll>,
    pub series: Vec<SeriesPoint>,
    /// What crashed nodes had counted, per series.
    carried: BTreeMap<(String, Labels), f64>,
    round: u32,
    /// The samples at the start of the timeline: the baseline of the locality series.
    pub start: Samples,
}

impl Recorder {
    /// Every node's counters (carried over its crashes) and clock gauges, now.
    pub fn samples(&self, sim: &mut Sim, names: &[String]) -> Samples {
        let mut total = self.carried.clone();
        let mut gauges = Samples::new();
        for (i, n) in names.iter().enumerate() {
            let (c, g) = node_samples(sim, i as u32, n);
            for (m, l, v) in c {
                *total.entry((m, l)).or_default() += v;
            }
            gauges.extend(g);
        }
        let mut out: Samples = total.into_iter().map(|((m, l), v)| (m, l, v)).collect();
        out.extend(gauges);
        out
    }

    /// Keeps what node `i` counted before it crashes (call before [`Sim::crash`]).
    pub fn before_crash(&mut self, sim: &mut Sim, i: u32, name: &str) {
        let (c, _) = node_samples(sim, i, name);
        for (m, l, v) in c {
            *self.carried.entry((m, l)).or_default() += v;
        }
    }

    /// One poll round at `t_s` seconds since the timeline's start; `links` are the watched
    /// links' delays (`None`: down).
    pub fn poll(
        &mut self,
        sim: &mut Sim,
        names: &[String],
        t_s: f64,
        links: BTreeMap<String, Option<f64>>,
    ) {
        self.round += 1;
        let now_s = sim.now().as_secs_f64();
        let mut clocks = Vec::new();
        let mut pt = SeriesPoint {
            t_real_s: t_s,
            links,
            ..Default::default()
        };
        for (i, n) in names.iter().enumerate() {
            let Some(state) = node_state(sim, i as u32) else {
                continue;
            };
            let mut p = state_poll(&state, n, self.round, t_s);
            // The virtual time is the node's clock when it answered (the snapshot holds
            // the time of the node's last input).
            p.now_emulated_s = now_s;
            if let Some(t) = &state.time {
                clocks.push(TimeObs::of_time(t));
            }
            pt.count(&p);
            self.polls.push(p);
        }
        pt.time = TimeSample::of(&clocks);
        let rec = Recording {
            metrics_start: self.start.clone(),
            metrics_end: self.samples(sim, names),
            ..Default::default()
        };
        pt.locality = rec.locality().0;
        self.series.push(pt);
    }
}

/// Node `i`'s `/state` as its agent would serve it (`None`: it is down).
pub(super) fn node_state(sim: &mut Sim, i: u32) -> Option<NodeState> {
    let mut snap = sim.node(i)?.snapshot();
    snap.time = sim.time_view(i);
    serde_json::to_value(&snap)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
}
