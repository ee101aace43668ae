//! `lightcone run`: play an expanded timeline against a live lab through the supervisor's
//! API ([`crate::client`]), record what the agents say, judge the expectations, write the
//! run directory.
//!
//! One run, in order: [`lab`] (reuse or bring up the lab) → [`warmup`] (wait for membership
//! and routes) → [`timeline`] (play the actions; [`load`] sessions as `load` steps start
//! them; the [`poll`]er records each round) → [`final_reads`] → the recording judged by
//! [`expect`](super::expect) → [`rundir`] (files, report).
//!
//! Threads: the main thread plays actions at `t0 + at / time_scale`; a poller reads every
//! node's `/state` each round (and the lab status and merged `/metrics` every few rounds);
//! one load thread per loaded node runs a sequential client session. Every timestamp is
//! real time since `t0` on the host clock, which all namespaces share.
//!
//! Imports go one way: the runner uses [`report`](super::report) (to write `report.html`),
//! and both use the recorded types of [`record`](super::record) and
//! [`expect`](super::expect); `report` imports nothing of the runner.

mod final_reads;
mod lab;
mod load;
pub(crate) mod objects;
pub(crate) mod poll;
pub(crate) mod rollout;
pub(crate) mod rundir;
pub(crate) mod timeline;
pub(crate) mod warmup;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightcone_core::causal::checker::HistoryOp;
use serde::Serialize;

use super::expand::Planned;
use super::expect::{self, Verdict};
use super::record::{Recording, SeriesPoint, StatePoll};
use super::scenario::{self, Scenario};
use super::validate;
use crate::client::ClientError;
use crate::lab::LabStatus;
use crate::procstat::{clock_ticks_per_s, cpu_ticks};
use crate::telemetry::{parse_prometheus, Samples};
use crate::topology::Topology;

/// How long a `GET /api/status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `GET /metrics` (all agents' series, merged) may take at the start and end.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run produced (`lightcone run --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The scenario's name and the seed it ran with.
    pub scenario: String,
    pub seed: u64,
    /// The lab it ran on, and that lab's emulated seconds per real second.
    pub lab: String,
    pub time_scale: f64,
    /// The run directory.
    pub dir: PathBuf,
    /// One per expectation (and per failed injection); `passed` when all pass.
    pub verdicts: Vec<Verdict>,
    pub passed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario, its topology, its timeline or its expectations have mistakes (see
    /// [`validate`]); nothing was run.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// The lab could not be brought up or reached. A lab this run started was brought down.
    #[error("{0}")]
    Lab(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl RunError {
    /// True when the input was at fault (exit code 2).
    pub fn is_invalid(&self) -> bool {
        matches!(self, RunError::Scenario(_))
    }
}

/// Load a scenario and its topology, apply the seed override, expand the timeline: every
/// check `lightcone validate` makes ([`validate::check_scenario`]).
pub fn prepare(
    path: &Path,
    seed: Option<u64>,
) -> Result<(Scenario, Topology, Vec<Planned>), RunError> {
    let c = validate::check_scenario(path, seed)?;
    Ok((c.scenario, c.topology, c.plan))
}

/// [`prepare`] for `host`: `simulate` reads systems past the lab's per-host cap
/// ([`Host::Twin`](crate::topology::Host)).
pub fn prepare_for(
    path: &Path,
    seed: Option<u64>,
    host: crate::topology::Host,
) -> Result<(Scenario, Topology, Vec<Planned>), RunError> {
    let c = validate::check_scenario_for(path, seed, host)?;
    Ok((c.scenario, c.topology, c.plan))
}

/// The lab as the run sees it: its time scale, and its nodes' names and addresses.
pub(super) struct LabView {
    /// The lab's name (a `rollout` step runs `lightcone update start` on it).
    pub name: String,
    pub ts: f64,
    pub addrs: BTreeMap<String, String>,
    pub names: Vec<String>,
}

impl LabView {
    fn of(status: &LabStatus) -> LabView {
        LabView {
            name: status.name.clone(),
            ts: status.time_scale,
            addrs: status
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.addr.clone()))
                .collect(),
            names: status.nodes.iter().map(|n| n.name.clone()).collect(),
        }
    }
}

/// The lab's API failed the run: the words a user sees.
fn lab_err(e: ClientError) -> RunError {
    RunError::Lab(match e {
        ClientError::Connect { message, .. } => message,
        ClientError::Status { path, status, .. } => format!("{path}: HTTP {status}"),
        e => e.to_string(),
    })
}

/// Key prefix of a node's cell: `c<layer>-<cluster>-<cell>`.
pub(crate) fn cell_key(addr: &str) -> String {
    let parts: Vec<&str> = addr.split('.').collect();
    format!("c{}", parts[..parts.len().saturating_sub(1)].join("-"))
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) polls: Vec<StatePoll>,
    pub(super) series: Vec<SeriesPoint>,
    pub(super) history: Vec<HistoryOp>,
    /// Acknowledged writes made with `durability: local`, as (key, value).
    pub(super) local_writes: BTreeSet<(String, String)>,
    /// Per agent pid: its node and its first and last CPU samples.
    pub(super) cpu_per_pid: BTreeMap<u32, CpuSeen>,
    pub(super) metrics_start: Option<Samples>,
    /// Load messages an agent took (`POST /send` answered 200), and those refused or lost
    /// on the way to the agent.
    pub(super) messages_sent: u64,
    pub(super) messages_refused: u64,
    /// Per node, the agents' delivered-message counter as sampled (restarts reset it).
    pub(super) delivered: ResetCounter,
    /// The `objects` workloads' puts (issue 16).
    pub(super) objects: Vec<super::record::ObjectPut>,
}

/// A counter per label that may reset (an agent restarts): its total increase over the
/// samples, counting what was there before each reset (Prometheus' `increase`).
#[derive(Default)]
pub(super) struct ResetCounter {
    /// Per label: first value seen, last value, increase carried over resets.
    per: BTreeMap<String, (f64, f64, f64)>,
    /// The baseline was taken: a label first seen later counted from 0 (an agent's
    /// counter series appears at its first increment).
    based: bool,
}

impl ResetCounter {
    pub(super) fn observe(&mut self, label: &str, v: f64) {
        let first = if self.based { 0.0 } else { v };
        let e = self
            .per
            .entry(label.to_string())
            .or_insert((first, first, 0.0));
        if v < e.1 {
            e.2 += e.1;
        }
        e.1 = v;
    }
    pub(super) fn increase(&self) -> f64 {
        self.per
            .values()
            .map(|(first, last, carried)| last + carried - first)
            .sum()
    }
    /// The run's baseline: counters there count from their value, others from 0.
    pub(super) fn baseline(&mut self, samples: &Samples) {
        self.observe_delivered(samples);
        self.based = true;
    }
    /// Samples the delivered-message counters in a `/metrics` text.
    pub(super) fn observe_delivered(&mut self, samples: &Samples) {
        for (name, l, v) in samples {
            if name == "lightcone_datagrams_total"
                && l.get("direction").map(String::as_str) == Some("app")
                && l.get("outcome").map(String::as_str) == Some("delivered")
            {
                self.observe(l.get("node").map(String::as_str).unwrap_or(""), *v);
            }
        }
    }
}

pub(super) struct CpuSeen {
    node: String,
    first: u64,
    first_at: Instant,
    last: u64,
    last_at: Instant,
}

impl Shared {
    pub(super) fn cpu_seen(&mut self, pid: u32, node: &str, ticks: u64) {
        let now = Instant::now();
        let c = self.cpu_per_pid.entry(pid).or_insert_with(|| CpuSeen {
            node: node.to_string(),
            first: ticks,
            first_at: now,
            last: ticks,
            last_at: now,
        });
        c.last = ticks;
        c.last_at = now;
    }
}

/// What `lightcone run` was asked.
pub struct RunOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// The run directory (default `runs/<scenario>-<seed>-<timestamp>/`).
    pub out: Option<PathBuf>,
    /// A hosts file: a lab not yet up is brought up over its hosts (`up --hosts`).
    pub hosts: Option<PathBuf>,
}

/// Run a scenario end to end. `progress` receives lines for the user.
pub fn run(opts: &RunOptions, mut progress: impl FnMut(&str)) -> Result<Outcome, RunError> {
    let (sc, topo, plan) = prepare(&opts.scenario, opts.seed)?;
    let dir = opts.out.clone().unwrap_or_else(|| rundir::default_dir(&sc));
    std::fs::create_dir_all(&dir)?;
    rundir::write_timeline(&dir, &sc, &topo, &plan, &mut progress)?;

    let (owner, api) = lab::attach(&sc, &topo, &dir, opts.hosts.as_deref(), &mut progress)?;
    // The agents' pids are this machine's only when the lab is: a lab over hosts has no
    // CPU figure here (the overhead verdict says it was not measured).
    let here = !api.is_spread();
    let status = api.status(STATUS_TIMEOUT).map_err(lab_err)?;
    let lab = LabView::of(&status);
    let ts = lab.ts;
    if status.nodes.iter().all(|n| n.agent.pid.is_none()) {
        return Err(RunError::Lab(format!(
            "lab {} runs no agents (--no-agents); scenarios need agents",
            topo.name
        )));
    }
    warmup::wait(&api, &lab, &status, &mut progress);

    let watched = timeline::watched_links(&plan, &status);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let start_metrics = api.metrics(METRICS_TIMEOUT).map_err(lab_err)?;
    std::fs::write(dir.join("metrics-start.prom"), &start_metrics)?;
    let cell_totals_start = parse_prometheus(&start_metrics);
    {
        let mut s = shared.lock().expect("shared");
        for n in status.nodes.iter().filter(|_| here) {
            if let Some(pid) = n.agent.pid {
                if let Some(t) = cpu_ticks(pid) {
                    s.cpu_seen(pid, &n.name, t);
                }
            }
        }
        s.metrics_start = Some(cell_totals_start.clone());
    }
    let t0 = Instant::now();
    let poller = poll::Poller {
        api: api.clone(),
        shared: shared.clone(),
        stop: stop.clone(),
        names: lab.names.clone(),
        addrs: lab.addrs.clone(),
        watched,
        start: cell_totals_start.clone(),
        t0,
    };
    let poller = std::thread::spawn(move || poller.run());

    let ctx = load::LoadCtx {
        api: &api,
        shared: &shared,
        procs: &Arc::new(AtomicU32::new(0)),
        lab: &lab,
        seed: sc.seed,
        duration_ns: sc.duration_ns,
        t0,
        class: topo.store.as_ref().map(|s| s.class.clone()),
        // A reused lab still holds the keys an earlier run wrote, under the same names and
        // values (they come from the session and op numbers): this run's keys get a suffix
        // of its own so the causal checker does not take the old values for thin-air
        // reads. A lab brought up for the run (the default, and the twin) has none.
        key_suffix: if owner.owned {
            String::new()
        } else {
            let s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            progress(&format!(
                "keys of this run's load end in -run{s} (the reused lab holds earlier runs' keys)"
            ));
            format!("-run{s}")
        },
    };
    let played = timeline::play_all(&plan, &ctx, &mut progress);
    let final_reads = final_reads::read_all(&api, &shared, t0)?;
    let object_loads: Vec<(u64, super::action::ObjectLoad)> = plan
        .iter()
        .filter_map(|p| match &p.action {
            super::action::Action::ObjectsStart { objects, .. } => Some((p.at_ns, objects.clone())),
            _ => None,
        })
        .collect();
    let object_reads = if object_loads.is_empty() {
        Vec::new()
    } else {
        let running: Vec<String> = api
            .status(STATUS_TIMEOUT)
            .map_err(lab_err)?
            .nodes
            .iter()
            .filter(|n| n.agent.state == "running")
            .map(|n| n.name.clone())
            .collect();
        progress("reading every acknowledged object back");
        objects::read_back(
            &api,
            &shared,
            &played.marks,
            &running,
            &object_loads,
            sc.seed,
        )
    };
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let real_s = t0.elapsed().as_secs_f64();
    let end_metrics = api.metrics(METRICS_TIMEOUT).map_err(lab_err)?;
    std::fs::write(dir.join("metrics-end.prom"), &end_metrics)?;
    let status_end = api.status(STATUS_TIMEOUT).ok();
    let mut shared = Arc::try_unwrap(shared)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    shared
        .delivered
        .observe_delivered(&parse_prometheus(&end_metrics));
    if let Some(s) = status_end.as_ref().filter(|_| here) {
        for n in &s.nodes {
            if let Some(pid) = n.agent.pid {
                if let Some(t) = cpu_ticks(pid) {
                    shared.cpu_seen(pid, &n.name, t);
                }
            }
        }
    }
    let tps = clock_ticks_per_s();
    let agent_cpu: Vec<(String, f64, f64)> = shared
        .cpu_per_pid
        .values()
        .map(|c| {
            (
                c.node.clone(),
                c.last.saturating_sub(c.first) as f64 / tps,
                c.last_at.duration_since(c.first_at).as_secs_f64(),
            )
        })
        .collect();
    // Host-wide: every agent process's CPU between its first and last sample.
    let cpu_total: f64 = agent_cpu.iter().map(|(_, cpu, _)| cpu).sum();
    let rec = Recording {
        time_scale: ts,
        addrs: lab.addrs,
        polls: shared.polls,
        marks: played.marks,
        history: shared.history,
        local_writes: shared.local_writes,
        final_reads,
        metrics_start: cell_totals_start,
        metrics_end: parse_prometheus(&end_metrics),
        agent_cpu_s: here.then_some(cpu_total),
        agent_cpu,
        messages_sent: shared.messages_sent,
        messages_refused: shared.messages_refused,
        messages_delivered: Some(shared.delivered.increase().round() as u64),
        failed_injections: played.failed_injections,
        objects: shared.objects,
        object_reads,
        rollout: played.rollout,
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        real_s,
    };
    let verdicts = expect::evaluate(&sc.expect, &rec);
    let passed = verdicts.iter().all(|v| v.pass);
    rundir::write(
        &dir,
        &rundir::Finished {
            sc: &sc,
            topo: &topo,
            plan: &plan,
            ts,
            real_s,
            events: &played.events,
            rec: &rec,
            series: &shared.series,
            verdicts: &verdicts,
            passed,
            simulation: None,
        },
    )?;
    drop(owner);
    Ok(Outcome {
        scenario: sc.name.clone(),
        seed: sc.seed,
        lab: topo.name.clone(),
        time_scale: ts,
        dir,
        verdicts,
        passed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_counter_counts_across_restarts() {
        let mut c = ResetCounter::default();
        c.baseline(&vec![(
            "lightcone_datagrams_total".to_string(),
            [
                ("direction", "app"),
                ("outcome", "delivered"),
                ("node", "a"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            5.0,
        )]);
        for (n, v) in [("b", 3.0), ("a", 9.0), ("b", 4.0), ("a", 2.0), ("a", 6.0)] {
            c.observe(n, v);
        }
        // a: 5 → 9 (+4), restart, 0 → 6 (+6, the 2 before the sample included); b appeared
        // after the baseline, so from 0: +4.
        assert_eq!(c.increase(), 4.0 + 6.0 + 4.0);
    }
}
