//! What a run records: the [`Recording`] the expectations are judged on (state polls,
//! injected faults, the load's history, final reads, metrics, CPU), and what the report
//! plots: the timeline's events (`events.jsonl`), the series polled each round
//! (`series.json`) and the nodes' clocks summarized per round. The runner writes these;
//! [`expect`](super::expect) and [`report`](super::report) read them. This module imports
//! neither, so the runner and the report do not import each other through it.

use std::collections::{BTreeMap, BTreeSet};

use lightcone_core::causal::checker::HistoryOp;
use lightcone_core::causal::{Dot, DotContext};
use serde::{Deserialize, Serialize};

use crate::client::TimeState;

/// A member as one node saw it at one poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberObs {
    pub id: u32,
    pub state: String,
    /// The incarnation the observer knows the member by (absent in records made before
    /// session 13: read as 0).
    #[serde(default)]
    pub incarnation: u64,
    pub since_emulated_s: f64,
}

/// One successful `/nodes/{node}/state` poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatePoll {
    pub round: u32,
    /// Real seconds since the run's start (midpoint of the request).
    pub t_real_s: f64,
    pub node: String,
    pub id: u32,
    /// The node's emulated clock when it answered.
    pub now_emulated_s: f64,
    pub members: Vec<MemberObs>,
    /// Ids of the nodes it quarantines.
    #[serde(default)]
    pub quarantine: Vec<u32>,
    /// Destinations of its routing table, as the agent names them (`node:7`, `cell:0.1.2`).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Pulsar fixes it missed so far (its pulsars lost); `None` without a time layer.
    #[serde(default)]
    pub pulsar_missed: Option<u64>,
    /// The object store's shards it holds, with the SHA-256 of their bytes (issue 16);
    /// `None` without a store.
    #[serde(default)]
    pub shards: Option<Vec<HeldShard>>,
    /// Keys its cell's BFT group revoked, and what it took or refused since (issue 17).
    #[serde(default)]
    pub keys: KeyObs,
}

/// What a node's `/state` says of revoked keys (issue 17).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyObs {
    /// Nodes whose keys it refuses: revoked by its cell's BFT group, or by the authorities'
    /// threshold key (a countersigned revocation flooded to the lab).
    pub revoked: Vec<u32>,
    /// App data it delivered from a node whose key it had revoked, so far (its counter
    /// `datagrams.app.revoked_delivered`): zero unless the refusal of revoked keys fails.
    pub revoked_delivered: u64,
    /// Frames it refused for a revoked key so far (`datagrams.rx.key_revoked`).
    pub refused: u64,
    /// Nodes whose key a newer certificate replaced here (`/state` `trust.rotated`).
    #[serde(default)]
    pub rotated: Vec<u32>,
}

pub use lightcone_core::store::machine::HeldShard;

/// One put of an `objects` workload (issue 16): the run's history of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectPut {
    /// Real seconds since the start when the answer came.
    pub t_real_s: f64,
    /// The node the put went to (the writer).
    pub node: String,
    pub object: String,
    /// Acknowledged by the writer.
    pub ok: bool,
    /// Why not, when not.
    #[serde(default)]
    pub error: Option<String>,
    /// The stripe's placement as the writer answered it: the node holding each shard
    /// index (empty when the put failed).
    #[serde(default)]
    pub holders: Vec<String>,
    /// The class: k data shards of n.
    pub k: u16,
    pub n: u16,
    /// SHA-256 (hex) of each of the n shards, computed by the runner from the bytes it
    /// wrote — the ground truth a held shard is checked against.
    pub shard_sha256: Vec<String>,
}

/// An object read back through the API at the end of the run, from a live node: its
/// current holders first, then other live nodes, until one serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectReadBack {
    pub object: String,
    /// The node of the last try: the one that served it, or the last that failed.
    pub node: String,
    /// The bytes came back and equal those written.
    pub ok: bool,
    /// What happened otherwise (an HTTP status, different bytes).
    #[serde(default)]
    pub error: Option<String>,
    /// The tries that failed before the last one, in order.
    #[serde(default)]
    pub misses: Vec<ReadMiss>,
}

/// A read-back try that failed: the node asked and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadMiss {
    pub node: String,
    pub error: String,
}

/// A fault the runner played, at real seconds since the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub t_real_s: f64,
    pub kind: String,
    pub node: Option<String>,
    /// A partition's groups of node names (the rest of the lab is one more side).
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
}

/// A timeline action that could not be carried out: the fault was not injected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedInjection {
    pub t_real_s: f64,
    /// What was asked, e.g. `crash l0c0k0t3`.
    pub action: String,
    pub error: String,
}

/// A final read, after the load stopped: every concurrent value `node` holds for `key`
/// (empty: never written there), each value's dot, and the key's context there (every write
/// the replica has seen: held, or overwritten by a held one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRead {
    pub node: String,
    pub key: String,
    pub values: Vec<String>,
    #[serde(default)]
    pub dots: Vec<Dot>,
    #[serde(default)]
    pub context: Option<DotContext>,
}

impl FinalRead {
    /// The replica holds `dot`, or a value written over it.
    pub fn covers(&self, dot: Dot) -> bool {
        self.dots.contains(&dot) || self.context.as_ref().is_some_and(|c| c.contains(dot))
    }
}

/// Prometheus samples: (metric name, labels, value).
pub use crate::telemetry::Samples;

/// What a run recorded, enough to evaluate every expectation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recording {
    pub time_scale: f64,
    /// Node name → hierarchical address `layer.cluster.cell.tile`.
    pub addrs: BTreeMap<String, String>,
    pub polls: Vec<StatePoll>,
    pub marks: Vec<Mark>,
    pub history: Vec<HistoryOp>,
    /// Acknowledged writes made with durability `local`, as (key, value); every other write
    /// was `cell`.
    #[serde(default)]
    pub local_writes: BTreeSet<(String, String)>,
    /// The final reads of every key written, from every running replica of its cell.
    pub final_reads: Vec<FinalRead>,
    pub metrics_start: Samples,
    pub metrics_end: Samples,
    pub agent_cpu_s: Option<f64>,
    /// Per agent process: (node, CPU seconds, seconds observed alive) over the run.
    #[serde(default)]
    pub agent_cpu: Vec<(String, f64, f64)>,
    pub cores: u32,
    pub real_s: f64,
    /// Load messages the agents took (`POST /send` answered), and those refused.
    #[serde(default)]
    pub messages_sent: u64,
    #[serde(default)]
    pub messages_refused: u64,
    /// Messages the agents delivered over the run, their counters sampled every second so
    /// an agent's restart loses at most its last second (`None`: use start and end only).
    #[serde(default)]
    pub messages_delivered: Option<u64>,
    /// Faults of the timeline that were not injected (each fails the run).
    #[serde(default)]
    pub failed_injections: Vec<FailedInjection>,
    /// The `objects` workloads' puts, in the order their answers came (issue 16).
    #[serde(default)]
    pub objects: Vec<ObjectPut>,
    /// Every acknowledged object read back at the end of the run.
    #[serde(default)]
    pub object_reads: Vec<ObjectReadBack>,
    /// The timeline's rollout, when it has one (issue 18).
    #[serde(default)]
    pub rollout: Option<RolloutOutcome>,
}

/// What a scenario's rollout did (issue 18): the lab's rollout record
/// (`crate::rollout::RolloutState`) or the twin's report (`lightcone_sim::rollout`), in
/// one shape for the expectations and the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RolloutOutcome {
    pub build: String,
    /// `complete`, `halted`, `aborted` or `failed`.
    pub phase: String,
    pub stages: Vec<RolloutStageOutcome>,
    /// The gate that fired, when one did.
    pub halt: Option<RolloutHaltOutcome>,
    /// A rollout that could not run (or ended in error): why.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RolloutStageOutcome {
    pub name: String,
    pub tiles: usize,
    /// `passed`, `rolled_back` or `pending` (never deployed).
    pub status: String,
    pub waves: u32,
    /// The canary's crash probe: emulated seconds until a cell-mate suspected it.
    pub detection_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RolloutHaltOutcome {
    pub stage: String,
    pub gate: String,
    pub reason: String,
    /// Emulated seconds from the gate firing until every tile of the stage ran the
    /// previous build again (rolled back in waves).
    pub time_to_rollback_s: f64,
}

impl RolloutOutcome {
    /// Tiles over every stage.
    pub fn tiles(&self) -> usize {
        self.stages.iter().map(|s| s.tiles).sum()
    }
    /// Tiles that run the release at the end: those of the stages that passed (a halted
    /// stage went back; earlier stages keep the release).
    pub fn on_release(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| s.status == "passed")
            .map(|s| s.tiles)
            .sum()
    }
    /// Tiles outside the first (canary) stage that were given the release.
    pub fn escaped(&self) -> usize {
        self.stages
            .iter()
            .skip(1)
            .filter(|s| s.status != "pending")
            .map(|s| s.tiles)
            .sum()
    }
    /// One line per stage, then the verdict.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for st in &self.stages {
            s += &format!(
                "stage {:<8} {:>5} tiles  {:<11} {} wave{}{}\n",
                st.name,
                st.tiles,
                st.status,
                st.waves,
                if st.waves == 1 { "" } else { "s" },
                st.detection_s.map_or(String::new(), |d| format!(
                    ", canary crash detected in {d:.2} s"
                ))
            );
        }
        match (&self.halt, self.phase.as_str()) {
            (Some(h), _) => {
                s += &format!(
                    "HALTED at stage {} by gate {} ({}); time to rollback {:.2} s\n",
                    h.stage, h.gate, h.reason, h.time_to_rollback_s
                )
            }
            (None, "complete") => s += "complete: every stage passed its gates\n",
            (None, p) => s += &format!("{p}: {}\n", self.note.as_deref().unwrap_or("no record")),
        }
        s
    }
}

/// A point of the plotted series.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeriesPoint {
    pub t_real_s: f64,
    pub alive: u32,
    pub suspect: u32,
    pub dead: u32,
    /// Cumulative cell-level locality since the start, if any traffic was counted.
    pub locality: Option<f64>,
    /// Delay of watched links in seconds (emulated); `None` while down.
    pub links: BTreeMap<String, Option<f64>>,
    /// The nodes' clocks this round; `None` when no polled agent has a time layer.
    pub time: Option<TimeSample>,
    /// Quarantine entries in all polled nodes' `/state` (the neighbourhood watch's verdicts,
    /// and operators').
    pub quarantined: u32,
    /// Routing-table entries in all polled nodes' `/state`: a cut between cells, clusters
    /// or layers shows here (cell membership never crosses it).
    #[serde(default)]
    pub routes: u32,
    /// Highest thermal load ratio per shell this round (`layer 0`, `layer 1`, …), from the
    /// nodes' `lightcone_thermal_load_ratio`; empty without a `thermal:` section.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thermal: BTreeMap<String, f64>,
}

/// The shell (`layer L`) of a node by its hierarchical address text (`L.c.k.t`).
pub fn shell_of(addr: &str) -> String {
    format!("layer {}", addr.split('.').next().unwrap_or("?"))
}

/// Highest load per shell from `(node, load)` readings and the nodes' addresses.
pub fn thermal_by_shell<'a>(
    loads: impl IntoIterator<Item = (&'a str, f64)>,
    addrs: &BTreeMap<String, String>,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (node, load) in loads {
        let Some(a) = addrs.get(node) else { continue };
        let e = out.entry(shell_of(a)).or_insert(0.0);
        *e = e.max(load);
    }
    out
}

impl SeriesPoint {
    /// Adds one node's poll to the round's totals: its members by state, its quarantine
    /// entries and its routes (the lab runner and the twin count a round the same way).
    pub fn count(&mut self, p: &StatePoll) {
        self.quarantined += p.quarantine.len() as u32;
        self.routes += p.routes.len() as u32;
        for m in &p.members {
            match m.state.as_str() {
                "alive" => self.alive += 1,
                "suspect" => self.suspect += 1,
                "dead" => self.dead += 1,
                _ => {}
            }
        }
    }
}

/// One node's clock as its `/state` `time` section reports it. Errors are against the host
/// clock, which every namespace shares: exact ground truth.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeObs {
    /// Best estimate minus ground truth, s; `None` while unsynchronized (the agent sends
    /// NaN, which JSON carries as null).
    pub error_s: Option<f64>,
    /// σ of the estimate, s; `None` while unsynchronized (∞).
    pub sigma_s: Option<f64>,
    pub within_3sigma: bool,
    /// Share of the node's synchronized samples so far with |error| ≤ 3σ.
    pub coverage_ratio: Option<f64>,
    pub in_holdover: bool,
    pub alarm_active: bool,
    pub alarms_total: u64,
}

impl TimeObs {
    /// The `time` section of a `/state` answer, if the agent has one.
    pub fn of_state(v: &serde_json::Value) -> Option<TimeObs> {
        #[derive(serde::Deserialize)]
        struct WithTime {
            #[serde(default)]
            time: Option<TimeState>,
        }
        let w = WithTime::deserialize(v).ok()?;
        w.time.as_ref().map(TimeObs::of_time)
    }

    /// A node's clock as its `/state` `time` section reports it.
    pub fn of_time(t: &TimeState) -> TimeObs {
        let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
        TimeObs {
            error_s: finite(t.true_error_s),
            sigma_s: finite(t.sigma_s),
            within_3sigma: t.within_3sigma,
            coverage_ratio: finite(t.coverage_ratio),
            in_holdover: t.in_holdover,
            alarm_active: t.alarm_active,
            alarms_total: t.alarms_total,
        }
    }
}

/// The clocks of one poll round, summarized over nodes for the report's time plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimeSample {
    /// Nodes that answered with a time section.
    pub nodes: u32,
    /// Of those, nodes synchronized (with a finite error and σ).
    pub synced: u32,
    /// Largest and median |time error| over synchronized nodes, s.
    pub error_abs_max_s: Option<f64>,
    pub error_abs_median_s: Option<f64>,
    /// Median and largest σ over synchronized nodes, s.
    pub sigma_median_s: Option<f64>,
    pub sigma_max_s: Option<f64>,
    /// Synchronized nodes whose error is beyond 3σ in this sample.
    pub outside_3sigma: u32,
    /// Nodes with a clock-compromise alarm active now, and with any alarm so far.
    pub alarm_active: u32,
    pub alarmed_ever: u32,
    pub in_holdover: u32,
    /// The lowest per-node coverage ratio (|error| ≤ 3σ share of its samples so far).
    pub coverage_min: Option<f64>,
}

impl TimeSample {
    /// `None` when no node reported a clock.
    pub fn of(obs: &[TimeObs]) -> Option<TimeSample> {
        if obs.is_empty() {
            return None;
        }
        let synced: Vec<&TimeObs> = obs
            .iter()
            .filter(|o| o.error_s.is_some() && o.sigma_s.is_some())
            .collect();
        let mut errs: Vec<f64> = synced
            .iter()
            .filter_map(|o| o.error_s)
            .map(f64::abs)
            .collect();
        let mut sigmas: Vec<f64> = synced.iter().filter_map(|o| o.sigma_s).collect();
        errs.sort_by(f64::total_cmp);
        sigmas.sort_by(f64::total_cmp);
        let count = |f: &dyn Fn(&TimeObs) -> bool| obs.iter().filter(|o| f(o)).count() as u32;
        Some(TimeSample {
            nodes: obs.len() as u32,
            synced: synced.len() as u32,
            error_abs_max_s: errs.last().copied(),
            error_abs_median_s: median(&errs),
            sigma_median_s: median(&sigmas),
            sigma_max_s: sigmas.last().copied(),
            outside_3sigma: synced.iter().filter(|o| !o.within_3sigma).count() as u32,
            alarm_active: count(&|o| o.alarm_active),
            alarmed_ever: count(&|o| o.alarms_total > 0),
            in_holdover: count(&|o| o.in_holdover),
            coverage_min: obs
                .iter()
                .filter_map(|o| o.coverage_ratio)
                .min_by(f64::total_cmp),
        })
    }
}

/// Median of sorted values.
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// One entry of `events.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub t_real_s: f64,
    pub t_emulated_s: f64,
    pub kind: String,
    pub detail: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_counts_members_by_state_quarantines_and_routes_of_every_poll() {
        let member = |id, state: &str| MemberObs {
            id,
            state: state.into(),
            incarnation: 0,
            since_emulated_s: 0.0,
        };
        let poll = |members, quarantine: Vec<u32>, routes: &[&str]| StatePoll {
            round: 1,
            t_real_s: 1.0,
            node: "n".into(),
            id: 0,
            now_emulated_s: 1.0,
            members,
            quarantine,
            routes: routes.iter().map(|r| r.to_string()).collect(),
            pulsar_missed: None,
            shards: None,
            keys: Default::default(),
        };
        let mut pt = SeriesPoint::default();
        pt.count(&poll(
            vec![member(1, "alive"), member(2, "suspect"), member(3, "left")],
            vec![7],
            &["node:1", "cell:0.0.1"],
        ));
        pt.count(&poll(
            vec![member(0, "alive"), member(3, "dead")],
            vec![],
            &["node:0"],
        ));
        assert_eq!((pt.alive, pt.suspect, pt.dead), (2, 1, 1));
        assert_eq!((pt.quarantined, pt.routes), (1, 3));
    }

    #[test]
    fn time_section_of_state_reads_nan_and_infinity_as_unsynchronized() {
        let v = serde_json::json!({ "time": {
            "true_error_s": 2.5e-6, "sigma_s": 1e-6, "within_3sigma": true, "coverage_ratio": 0.98,
            "in_holdover": false, "alarm_active": true, "alarms_total": 3,
        }});
        let o = TimeObs::of_state(&v).unwrap();
        assert_eq!(o.error_s, Some(2.5e-6));
        assert_eq!(o.sigma_s, Some(1e-6));
        assert!(o.alarm_active && o.within_3sigma);
        assert_eq!(o.alarms_total, 3);
        // serde_json writes NaN and ∞ as null.
        let v = serde_json::json!({ "time": { "true_error_s": null, "sigma_s": null } });
        let o = TimeObs::of_state(&v).unwrap();
        assert_eq!((o.error_s, o.sigma_s), (None, None));
        assert_eq!(
            TimeObs::of_state(&serde_json::json!({ "time": null })),
            None
        );
        assert_eq!(TimeObs::of_state(&serde_json::json!({ "id": 1 })), None);
    }

    #[test]
    fn time_sample_summarizes_synchronized_nodes_and_counts_all() {
        let node = |e: Option<f64>, s: Option<f64>, within: bool, alarms: u64| TimeObs {
            error_s: e,
            sigma_s: s,
            within_3sigma: within,
            coverage_ratio: Some(if within { 1.0 } else { 0.5 }),
            in_holdover: e.is_none(),
            alarm_active: alarms > 0,
            alarms_total: alarms,
        };
        let t = TimeSample::of(&[
            node(Some(-0.05), Some(2e-6), false, 1),
            node(Some(1e-6), Some(4e-6), true, 0),
            node(Some(3e-6), Some(1e-6), true, 0),
            node(None, None, false, 0),
        ])
        .unwrap();
        assert_eq!((t.nodes, t.synced), (4, 3));
        assert_eq!(t.error_abs_max_s, Some(0.05));
        assert_eq!(t.error_abs_median_s, Some(3e-6));
        assert_eq!((t.sigma_median_s, t.sigma_max_s), (Some(2e-6), Some(4e-6)));
        assert_eq!(
            t.outside_3sigma, 1,
            "the unsynchronized node is not counted"
        );
        assert_eq!((t.alarm_active, t.alarmed_ever, t.in_holdover), (1, 1, 1));
        assert_eq!(t.coverage_min, Some(0.5));
        assert_eq!(TimeSample::of(&[]), None);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), Some(2.5));
    }
}
