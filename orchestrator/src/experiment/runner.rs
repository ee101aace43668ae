//! `lightcone run`: play an expanded timeline against a live lab through the supervisor's
//! API, record what the agents say, judge the expectations, write the run directory.
//!
//! Threads: the main thread plays actions at `t0 + at / time_scale`; a poller reads every
//! node's `/state` each round (and the lab status and merged `/metrics` every few rounds);
//! one load thread per loaded node runs a sequential client session. Every timestamp is
//! real time since `t0` on the host clock, which all namespaces share.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightcone_agent::causal::checker::{HistoryOp, OpKind, OpStatus};
use lightcone_agent::causal::{Dot, DotContext};
use lightcone_agent::kv::{Durability, Written};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::expand::{self, Action, Planned};
use super::expect::{
    self, FailedInjection, FinalRead, Mark, MemberObs, Recording, Samples, StatePoll, Verdict,
};
use super::report;
use super::scenario::{self, Scenario, TopologySource};
use super::validate;
use crate::state::LabDir;
use crate::supervisor::{LabStatus, SupervisorInfo};
use crate::topology::{units, Topology};
use lightcone_agent::pct;

/// Real time between state-poll rounds.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Every how many rounds the lab status and merged metrics are read too.
const METRICS_EVERY: u32 = 2;
/// Longest real wait for the cell's membership to converge before the timeline starts.
const WARMUP_MAX: Duration = Duration::from_secs(30);
/// Shortest real pause between two ops of one load session.
const MIN_LOAD_INTERVAL: Duration = Duration::from_millis(10);
/// Real pause after the load stops and before the final reads (replication, repair).
const SETTLE: Duration = Duration::from_secs(3);
/// Most recorded load operations (bounded history).
const MAX_OPS: usize = 200_000;

pub struct RunOptions {
    pub scenario: PathBuf,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub lab: String,
    pub time_scale: f64,
    pub dir: PathBuf,
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

/// The supervisor's API, as a client.
#[derive(Clone)]
struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn get(&self, path: &str, timeout: Duration) -> Result<(u16, String), String> {
        self.call("GET", path, None, timeout)
    }
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let req = self
            .agent
            .request(method, &format!("{}{}", self.base, path))
            .set("x-lightcone-token", &self.token)
            .timeout(timeout);
        let r = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match r {
            Ok(r) => Ok((r.status(), r.into_string().unwrap_or_default())),
            Err(ureq::Error::Status(c, r)) => Ok((c, r.into_string().unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    }
    /// POSTs a fault verb. The verbs are idempotent (set a link's state, crash a node that
    /// is running), so a transport error is retried once: a pooled keep-alive connection the
    /// server closed while idle fails with "Unexpected EOF" before the request is read, and
    /// ureq retries only idempotent methods by itself.
    fn post_json(&self, path: &str, v: &serde_json::Value) -> Result<(), String> {
        let send = || {
            self.agent
                .post(&format!("{}{}", self.base, path))
                .set("x-lightcone-token", &self.token)
                .timeout(Duration::from_secs(30))
                .send_json(v)
                .map_err(Box::new)
        };
        let r = match send() {
            Err(e) if matches!(*e, ureq::Error::Transport(_)) => send(),
            r => r,
        };
        match r.map_err(|e| *e) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(c, r)) => Err(format!(
                "{path}: HTTP {c}: {}",
                r.into_string().unwrap_or_default().trim()
            )),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }
    fn status(&self) -> Result<LabStatus, String> {
        let (c, b) = self.get("/api/status", Duration::from_secs(10))?;
        if c != 200 {
            return Err(format!("/api/status: HTTP {c}"));
        }
        serde_json::from_str(&b).map_err(|e| format!("/api/status: {e}"))
    }
}

/// This executable. `/proc/self/exe` still runs when a rebuild replaced the file on disk
/// mid-run (then `current_exe()` names a deleted path); elsewhere, `current_exe()`.
fn self_exe() -> PathBuf {
    let p = PathBuf::from("/proc/self/exe");
    if p.exists() {
        p
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("lightcone"))
    }
}

/// Brings the lab down on drop if this run brought it up.
struct LabOwner {
    lab: String,
    owned: bool,
    /// Where `lightcone down`'s output goes.
    log: PathBuf,
}

impl Drop for LabOwner {
    fn drop(&mut self) {
        if self.owned {
            let out = std::fs::File::create(&self.log).ok();
            let err = out.as_ref().and_then(|f| f.try_clone().ok());
            {
                let _ = Command::new(self_exe())
                    .args(["down", &self.lab])
                    .stdin(Stdio::null())
                    .stdout(out.map(Stdio::from).unwrap_or_else(Stdio::null))
                    .stderr(err.map(Stdio::from).unwrap_or_else(Stdio::null))
                    .status();
            }
        }
    }
}

/// Parse the Prometheus text format (the subset our exporters write).
pub fn parse_prometheus(text: &str) -> Samples {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], head[i + 1..].trim_end_matches('}')),
            None => (head, ""),
        };
        let mut l = BTreeMap::new();
        let mut rest = labels;
        while let Some(eq) = rest.find("=\"") {
            let k = rest[..eq].trim_start_matches(',').trim().to_string();
            let after = &rest[eq + 2..];
            let mut end = 0;
            let bytes = after.as_bytes();
            while end < bytes.len()
                && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
            {
                end += 1;
            }
            l.insert(k, after[..end.min(after.len())].to_string());
            rest = &after[(end + 1).min(after.len())..];
        }
        out.push((name.to_string(), l, v));
    }
    out
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(3) … utime(14) stime(15) → indices 11, 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
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
        let t = v.get("time").filter(|t| t.is_object())?;
        let finite = |k: &str| t[k].as_f64().filter(|x| x.is_finite());
        Some(TimeObs {
            error_s: finite("true_error_s"),
            sigma_s: finite("sigma_s"),
            within_3sigma: t["within_3sigma"].as_bool().unwrap_or(false),
            coverage_ratio: finite("coverage_ratio"),
            in_holdover: t["in_holdover"].as_bool().unwrap_or(false),
            alarm_active: t["alarm_active"].as_bool().unwrap_or(false),
            alarms_total: t["alarms_total"].as_u64().unwrap_or(0),
        })
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

#[derive(Default)]
struct Shared {
    polls: Vec<StatePoll>,
    series: Vec<SeriesPoint>,
    history: Vec<HistoryOp>,
    /// Acknowledged writes made with `durability: local`, as (key, value).
    local_writes: BTreeSet<(String, String)>,
    /// Per agent pid: its node and its first and last CPU samples.
    cpu_per_pid: BTreeMap<u32, CpuSeen>,
    metrics_start: Option<Samples>,
    /// Load messages an agent took (`POST /send` answered 200), and those refused or lost
    /// on the way to the agent.
    messages_sent: u64,
    messages_refused: u64,
    /// Per node, the agents' delivered-message counter as sampled (restarts reset it).
    delivered: ResetCounter,
}

/// A counter per label that may reset (an agent restarts): its total increase over the
/// samples, counting what was there before each reset (Prometheus' `increase`).
#[derive(Default)]
struct ResetCounter {
    /// Per label: first value seen, last value, increase carried over resets.
    per: BTreeMap<String, (f64, f64, f64)>,
    /// The baseline was taken: a label first seen later counted from 0 (an agent's
    /// counter series appears at its first increment).
    based: bool,
}

impl ResetCounter {
    fn observe(&mut self, label: &str, v: f64) {
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
    fn increase(&self) -> f64 {
        self.per
            .values()
            .map(|(first, last, carried)| last + carried - first)
            .sum()
    }
    /// The run's baseline: counters there count from their value, others from 0.
    fn baseline(&mut self, samples: &Samples) {
        self.observe_delivered(samples);
        self.based = true;
    }
    /// Samples the delivered-message counters in a `/metrics` text.
    fn observe_delivered(&mut self, samples: &Samples) {
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

struct CpuSeen {
    node: String,
    first: u64,
    first_at: Instant,
    last: u64,
    last_at: Instant,
}

impl Shared {
    fn cpu_seen(&mut self, pid: u32, node: &str, ticks: u64) {
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

fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn members_of(v: &serde_json::Value) -> Vec<MemberObs> {
    v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    Some(MemberObs {
                        id: m["id"].as_u64()? as u32,
                        state: m["state"].as_str()?.to_string(),
                        since_emulated_s: m["since_emulated_s"].as_f64().unwrap_or(0.0),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Run a scenario end to end. `progress` receives lines for the user.
pub fn run(opts: &RunOptions, mut progress: impl FnMut(&str)) -> Result<Outcome, RunError> {
    let (sc, topo, plan) = prepare(&opts.scenario, opts.seed)?;
    let dir = opts.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("{}-{}-{}", sc.name, sc.seed, timestamp()))
    });
    std::fs::create_dir_all(&dir)?;
    progress(&format!(
        "scenario {} on lab {} (seed {}, duration {} emulated); expanded timeline ({} actions):",
        sc.name,
        topo.name,
        sc.seed,
        units::fmt_ns(sc.duration_ns),
        plan.len()
    ));
    let rendered = expand::render(&plan);
    for l in rendered.lines() {
        progress(l);
    }
    std::fs::write(dir.join("timeline.txt"), &rendered)?;
    std::fs::write(
        dir.join("timeline.json"),
        serde_json::to_vec_pretty(&plan).unwrap_or_default(),
    )?;

    // The lab: reuse one that is up under the topology's name, else bring it up.
    let lab_dir = LabDir::new(&topo.name).map_err(|e| RunError::Lab(e.to_string()))?;
    let reuse = lab_dir.exists() && SupervisorInfo::read(&lab_dir).is_some_and(|i| i.alive());
    let mut owner = LabOwner {
        lab: topo.name.clone(),
        owned: false,
        log: dir.join("down.log"),
    };
    if reuse {
        progress(&format!("reusing lab {} (already up)", topo.name));
    } else {
        let file = match &sc.topology {
            TopologySource::File(p) => p.clone(),
            TopologySource::Inline(src) => {
                let p = dir.join("topology.yaml");
                std::fs::write(&p, src)?;
                p
            }
        };
        progress(&format!("bringing lab {} up (wire engine)", topo.name));
        owner.owned = true;
        bring_up(&file, &mut progress)?;
    }
    let info = SupervisorInfo::read(&lab_dir)
        .filter(|i| i.alive())
        .ok_or_else(|| RunError::Lab(format!("lab {} has no running supervisor", topo.name)))?;
    let api = Api {
        base: info.api_url.clone(),
        token: info.token.clone(),
        agent: ureq::AgentBuilder::new().build(),
    };
    let status = api.status().map_err(RunError::Lab)?;
    let ts = status.time_scale;
    let addrs: BTreeMap<String, String> = status
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.addr.clone()))
        .collect();
    let names: Vec<String> = status.nodes.iter().map(|n| n.name.clone()).collect();
    if status.nodes.iter().all(|n| n.agent.pid.is_none()) {
        return Err(RunError::Lab(format!(
            "lab {} runs no agents (--no-agents); scenarios need agents",
            topo.name
        )));
    }

    // Warm-up: the timeline starts once every node sees its cell peers alive and has a
    // route to every destination of its table (a fresh lab's first messages across levels
    // were lost for want of routes: ~2 % of a load's messages).
    let warm = Instant::now();
    let probe = Recording {
        time_scale: ts,
        addrs: addrs.clone(),
        ..Default::default()
    };
    loop {
        let polls: Vec<(StatePoll, BTreeSet<String>)> = names
            .iter()
            .filter_map(|n| poll_state_and_routes(&api, n, warm))
            .collect();
        let states: Vec<StatePoll> = polls.iter().map(|(p, _)| p.clone()).collect();
        let ids: BTreeMap<String, u32> = states.iter().map(|p| (p.node.clone(), p.id)).collect();
        let missing = polls.iter().find_map(|(p, routes)| {
            let want = expected_routes(&addrs, &ids, &p.node);
            want.difference(routes)
                .next()
                .map(|d| format!("{} has no route to {d}", p.node))
        });
        let complete = polls.len() == names.len() && ids.len() == names.len();
        if complete && converged(&probe, &states) && missing.is_none() {
            progress(&format!(
                "membership and routes converged after {:.1}s real; starting the timeline",
                warm.elapsed().as_secs_f64()
            ));
            break;
        }
        if warm.elapsed() > WARMUP_MAX {
            // Routes across light-minute links take a few one-way delays to form.
            let longest = status.links.iter().map(|l| l.delay_s).fold(0.0, f64::max);
            progress(&format!(
                "not converged within {}s real ({}; the longest link is {} one way, {:.1}s real); starting anyway",
                WARMUP_MAX.as_secs(),
                missing.unwrap_or_else(|| "membership".into()),
                units::fmt_ns((longest * 1e9) as u64),
                longest / ts
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let watched = watched_links(&plan, &status);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (_, start_metrics) = api
        .get("/metrics", Duration::from_secs(10))
        .map_err(RunError::Lab)?;
    std::fs::write(dir.join("metrics-start.prom"), &start_metrics)?;
    let cell_totals_start = parse_prometheus(&start_metrics);
    {
        let mut s = shared.lock().expect("shared");
        for n in &status.nodes {
            if let Some(pid) = n.agent.pid {
                if let Some(t) = cpu_ticks(pid) {
                    s.cpu_seen(pid, &n.name, t);
                }
            }
        }
        s.metrics_start = Some(cell_totals_start.clone());
    }
    let t0 = Instant::now();
    let poller = {
        let (api, shared, stop, names, watched) = (
            api.clone(),
            shared.clone(),
            stop.clone(),
            names.clone(),
            watched.clone(),
        );
        let start = cell_totals_start.clone();
        std::thread::spawn(move || poll_loop(api, shared, stop, names, watched, start, t0))
    };

    let mut events: Vec<Event> = Vec::new();
    let mut marks: Vec<Mark> = Vec::new();
    let mut failed_injections: Vec<FailedInjection> = Vec::new();
    let mut loads = Vec::new();
    let procs = Arc::new(AtomicU32::new(0));
    let end_real = Duration::from_secs_f64(sc.duration_ns as f64 / 1e9 / ts);
    // Wait until `until` (real, from t0), reporting the timeline's progress in between.
    let total_ms = end_real.as_millis() as u64;
    let mut throttle = crate::progress::Throttle::new(Duration::from_millis(250));
    let mut wait_until = |until: Duration, progress: &mut dyn FnMut(&str)| loop {
        let now = t0.elapsed();
        let done_ms = (now.as_millis() as u64).min(total_ms);
        if let Some(m) = throttle.tick("timeline", done_ms, total_ms) {
            progress(&m);
        }
        match until.checked_sub(now) {
            Some(d) if !d.is_zero() => std::thread::sleep(d.min(Duration::from_millis(250))),
            _ => break,
        }
    };
    for p in &plan {
        let at = Duration::from_secs_f64(p.at_ns as f64 / 1e9 / ts);
        wait_until(at, &mut progress);
        let t = t0.elapsed().as_secs_f64();
        let r = play(&api, &p.action);
        if let Action::LoadStart {
            nodes,
            load:
                scenario::Load {
                    keys,
                    interval_ns,
                    until_ns,
                    write_fraction,
                    message_fraction,
                    durability,
                },
        } = &p.action
        {
            let until = Duration::from_secs_f64((*until_ns).min(sc.duration_ns) as f64 / 1e9 / ts);
            let interval =
                Duration::from_secs_f64(*interval_ns as f64 / 1e9 / ts).max(MIN_LOAD_INTERVAL);
            for (i, n) in nodes.iter().enumerate() {
                let node_idx = names.iter().position(|x| x == n).unwrap_or(0) as u32;
                let cell = cell_key(addrs.get(n).map(String::as_str).unwrap_or(""));
                let (api, shared, procs) = (api.clone(), shared.clone(), procs.clone());
                let (n, keys, wf, mf) = (n.clone(), *keys, *write_fraction, *message_fraction);
                let durability = *durability;
                // Message destinations: every node outside the session's cell (its own cell's
                // other nodes in a one-cell lab).
                let mut destinations: Vec<String> = names
                    .iter()
                    .filter(|x| cell_key(addrs.get(*x).map(String::as_str).unwrap_or("")) != cell)
                    .cloned()
                    .collect();
                if destinations.is_empty() {
                    destinations = names.iter().filter(|x| **x != n).cloned().collect();
                }
                let seed = sc.seed ^ ((i as u64 + 1) << 32);
                loads.push(std::thread::spawn(move || {
                    load_loop(LoadSession {
                        api,
                        shared,
                        procs,
                        node: n,
                        node_idx,
                        cell,
                        keys,
                        write_fraction: wf,
                        message_fraction: mf,
                        durability,
                        destinations,
                        interval,
                        until: t0 + until,
                        t0,
                        seed,
                    })
                }));
            }
        }
        let kind = p.action.kind().to_string();
        let node = match &p.action {
            Action::Crash { node }
            | Action::Restart { node }
            | Action::Clock { node, .. }
            | Action::Byzantine { node, .. } => Some(node.clone()),
            _ => None,
        };
        // Only what was injected is marked: a failed injection is a failed verdict line
        // of its own, not a fault the plots and expectations assume happened.
        let groups = match &p.action {
            Action::Partition { groups } => groups.clone(),
            _ => Vec::new(),
        };
        if r.is_ok()
            && (matches!(
                kind.as_str(),
                "crash" | "restart" | "heal" | "partition" | "clock" | "byzantine" | "honest"
            ) || kind.starts_with("link"))
        {
            marks.push(Mark {
                t_real_s: t,
                kind: kind.clone(),
                node,
                groups,
            });
        }
        if let Err(e) = &r {
            failed_injections.push(FailedInjection {
                t_real_s: t,
                action: p.action.describe(),
                error: e.clone(),
            });
        }
        let line = format!(
            "[{:>9} emulated | {:>7.2}s real] {}{}",
            units::fmt_ns((t * ts * 1e9) as u64),
            t,
            p.action.describe(),
            match &r {
                Ok(()) => String::new(),
                Err(e) => format!(" — FAILED: {e}"),
            }
        );
        progress(&line);
        events.push(Event {
            t_real_s: t,
            t_emulated_s: t * ts,
            kind,
            detail: p.action.describe(),
            ok: r.is_ok(),
            error: r.err(),
        });
    }
    wait_until(end_real, &mut progress);
    for l in loads {
        let _ = l.join();
    }
    let t_end = t0.elapsed().as_secs_f64();
    progress(&format!(
        "[{:>9} emulated | {:>7.2}s real] end of timeline",
        units::fmt_ns((t_end * ts * 1e9) as u64),
        t_end
    ));

    // Final reads: every key written, from every running replica of its cell.
    let mut final_reads = Vec::new();
    let keys: Vec<String> = {
        let s = shared.lock().expect("shared");
        let mut k: Vec<String> = s.history.iter().map(|o| o.key.clone()).collect();
        k.sort();
        k.dedup();
        k
    };
    if !keys.is_empty() {
        std::thread::sleep(SETTLE);
        let status = api.status().map_err(RunError::Lab)?;
        // One reader per running node, in parallel: slow agents must not stretch the run.
        let readers: Vec<_> = status
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.agent.state == "running")
            .map(|(i, n)| {
                let cell = cell_key(&n.addr);
                let mine: Vec<String> = keys
                    .iter()
                    .filter(|k| k.starts_with(&format!("{cell}-")))
                    .cloned()
                    .collect();
                let (api, shared, name) = (api.clone(), shared.clone(), n.name.clone());
                std::thread::spawn(move || {
                    let mut reads = Vec::new();
                    for k in mine {
                        let start = t0.elapsed().as_nanos() as u64;
                        let r = api.get(
                            &format!("/nodes/{name}/kv/{}?siblings", pct::encode(&k)),
                            Duration::from_secs(3),
                        );
                        let end = t0.elapsed().as_nanos() as u64;
                        let (values, dots, context) = match r {
                            Ok((200, body)) => match versions_of(&body) {
                                Some(v) => v,
                                None => continue,
                            },
                            Ok((404, _)) => (Vec::new(), Vec::new(), Some(DotContext::new())),
                            _ => continue,
                        };
                        shared.lock().expect("shared").history.push(HistoryOp {
                            process: 1_000_000 + i as u32,
                            node: Some(i as u32),
                            key: k.clone(),
                            op: OpKind::Read {
                                values: values.clone(),
                            },
                            status: OpStatus::Ok,
                            dot: None,
                            context: None,
                            start_ns: start,
                            end_ns: end,
                        });
                        reads.push(FinalRead {
                            node: name.clone(),
                            key: k,
                            values,
                            dots,
                            context,
                        });
                    }
                    reads
                })
            })
            .collect();
        for r in readers {
            final_reads.extend(r.join().unwrap_or_default());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let real_s = t0.elapsed().as_secs_f64();
    let (_, end_metrics) = api
        .get("/metrics", Duration::from_secs(10))
        .map_err(RunError::Lab)?;
    std::fs::write(dir.join("metrics-end.prom"), &end_metrics)?;
    let status_end = api.status().ok();
    let mut shared = Arc::try_unwrap(shared)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    shared
        .delivered
        .observe_delivered(&parse_prometheus(&end_metrics));
    if let Some(s) = &status_end {
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
        addrs,
        polls: shared.polls,
        marks: marks.clone(),
        history: shared.history,
        local_writes: shared.local_writes,
        final_reads,
        metrics_start: cell_totals_start,
        metrics_end: parse_prometheus(&end_metrics),
        agent_cpu_s: Some(cpu_total),
        agent_cpu,
        messages_sent: shared.messages_sent,
        messages_refused: shared.messages_refused,
        messages_delivered: Some(shared.delivered.increase().round() as u64),
        failed_injections,
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        real_s,
    };
    let verdicts = expect::evaluate(&sc.expect, &rec);
    let passed = verdicts.iter().all(|v| v.pass);

    // The run directory.
    let mut f = std::fs::File::create(dir.join("events.jsonl"))?;
    for e in &events {
        writeln!(f, "{}", serde_json::to_string(e).unwrap_or_default())?;
    }
    let mut f = std::fs::File::create(dir.join("history.jsonl"))?;
    for o in &rec.history {
        writeln!(f, "{}", serde_json::to_string(o).unwrap_or_default())?;
    }
    let mut f = std::fs::File::create(dir.join("polls.jsonl"))?;
    for p in &rec.polls {
        writeln!(f, "{}", serde_json::to_string(p).unwrap_or_default())?;
    }
    let outcome = Outcome {
        scenario: sc.name.clone(),
        seed: sc.seed,
        lab: topo.name.clone(),
        time_scale: ts,
        dir: dir.clone(),
        verdicts: verdicts.clone(),
        passed,
    };
    let report_json = serde_json::json!({
        "scenario": sc.name,
        "seed": sc.seed,
        "lab": topo.name,
        "time_scale": ts,
        "duration_emulated_s": sc.duration_ns as f64 / 1e9,
        "real_s": real_s,
        "passed": passed,
        "verdicts": verdicts,
        "timeline": plan,
        "events": events,
        "load": {
            "ops": rec.history.len(),
            "final_reads": rec.final_reads.len(),
        },
        "overhead_definition": "the busiest agent's CPU seconds (utime+stime from /proc) / the seconds it was observed alive: its share of one core, a tile's compute; agents observed under 2 s are left out; the host-wide share is in the detail",
    });
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report_json).unwrap_or_default(),
    )?;
    std::fs::write(
        dir.join("series.json"),
        serde_json::to_vec(&shared.series).unwrap_or_default(),
    )?;
    std::fs::write(
        dir.join("report.html"),
        report::html(&sc, ts, &plan, &events, &shared.series, &verdicts, real_s),
    )?;
    drop(owner);
    let _ = &mut marks;
    Ok(outcome)
}

/// Key prefix of a node's cell: `c<layer>-<cluster>-<cell>`.
fn cell_key(addr: &str) -> String {
    let parts: Vec<&str> = addr.split('.').collect();
    format!("c{}", parts[..parts.len().saturating_sub(1)].join("-"))
}

fn bring_up(file: &Path, progress: &mut impl FnMut(&str)) -> Result<(), RunError> {
    let mut child = Command::new(self_exe())
        .arg("up")
        .arg(file)
        .args(["--detach", "--link-engine", "wire"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            progress(&format!("  up: {l}"));
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let st = child.wait()?;
    if !st.success() {
        return Err(RunError::Lab(format!(
            "`lightcone up {}` failed: {}",
            file.display(),
            err.trim()
        )));
    }
    Ok(())
}

/// Links whose delay is plotted: those the timeline touches (at most 6), else the first.
fn watched_links(plan: &[Planned], st: &LabStatus) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for p in plan {
        if let Action::LinkDown { a, b } | Action::LinkUp { a, b } | Action::LinkSet { a, b, .. } =
            &p.action
        {
            if let Some(l) = st
                .links
                .iter()
                .find(|l| (l.a == *a && l.b == *b) || (l.a == *b && l.b == *a))
            {
                if !v.contains(&l.name) && v.len() < 6 {
                    v.push(l.name.clone());
                }
            }
        }
    }
    if v.is_empty() {
        v.extend(st.links.first().map(|l| l.name.clone()));
    }
    v
}

fn play(api: &Api, a: &Action) -> Result<(), String> {
    match a {
        Action::LinkDown { a, b } => {
            api.post_json(&format!("/api/links/{a}/{b}/down"), &serde_json::json!({}))
        }
        Action::LinkUp { a, b } => {
            api.post_json(&format!("/api/links/{a}/{b}/up"), &serde_json::json!({}))
        }
        Action::LinkSet { a, b, change } => api.post_json(
            &format!("/api/links/{a}/{b}/set"),
            &serde_json::to_value(change).unwrap_or_default(),
        ),
        Action::Crash { .. }
        | Action::Restart { .. }
        | Action::Clock { .. }
        | Action::Byzantine { .. } => match a.node_fault() {
            Some((node, fault)) => api.post_json(&fault.api_path(node), &fault.body()),
            None => Ok(()),
        },
        Action::Partition { .. } | Action::Heal | Action::LoadStart { .. } => Ok(()),
    }
}

/// A node's `/state`: its membership view, and its clock if it has a time layer.
fn poll_state_and_clock(
    api: &Api,
    node: &str,
    round: u32,
    t0: Instant,
) -> Option<(StatePoll, Option<TimeObs>)> {
    let (poll, v) = poll_state(api, node, round, t0)?;
    Some((poll, TimeObs::of_state(&v)))
}

/// A node's state poll and the destinations of its routing table (`/state` `routes`).
fn poll_state_and_routes(
    api: &Api,
    node: &str,
    t0: Instant,
) -> Option<(StatePoll, BTreeSet<String>)> {
    let (poll, v) = poll_state(api, node, 0, t0)?;
    let routes = v["routes"]
        .as_array()?
        .iter()
        .filter_map(|r| r["dest"].as_str().map(str::to_string))
        .collect();
    Some((poll, routes))
}

/// One `/state` poll: what the expectations use, and the whole answer.
fn poll_state(
    api: &Api,
    node: &str,
    round: u32,
    t0: Instant,
) -> Option<(StatePoll, serde_json::Value)> {
    let a = t0.elapsed().as_secs_f64();
    let (c, b) = api
        .get(&format!("/nodes/{node}/state"), Duration::from_secs(1))
        .ok()?;
    let z = t0.elapsed().as_secs_f64();
    if c != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&b).ok()?;
    let poll = StatePoll {
        round,
        t_real_s: (a + z) / 2.0,
        node: node.to_string(),
        id: v["id"].as_u64()? as u32,
        now_emulated_s: v["now_emulated_s"].as_f64()?,
        members: members_of(&v),
        quarantine: v["quarantine"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default(),
        routes: v["routes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["dest"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        pulsar_missed: v["time"]["pulsar_missed_total"].as_u64(),
    };
    Some((poll, v))
}

/// The destinations `node`'s routing table must hold, as the agent names them: the table
/// key of every other node ([`routing::node_key`](lightcone_agent::routing::node_key)).
/// Authorities (cluster 65535, a cell each) have no route to each other's cells: that pair
/// is left out.
fn expected_routes(
    addrs: &BTreeMap<String, String>,
    ids: &BTreeMap<String, u32>,
    node: &str,
) -> BTreeSet<String> {
    let Some(&me) = ids.get(node) else {
        return BTreeSet::new();
    };
    addrs
        .keys()
        .filter_map(|m| expect::route_key(addrs, node, me, m, *ids.get(m)?))
        .collect()
}

/// Whether every polled node sees every polled node of its cell alive.
fn converged(rec: &Recording, polls: &[StatePoll]) -> bool {
    let ids: BTreeMap<&str, u32> = polls.iter().map(|p| (p.node.as_str(), p.id)).collect();
    polls.iter().all(|p| {
        let cell = rec.addrs.get(&p.node).map(|a| cell_key(a));
        polls
            .iter()
            .filter(|q| q.node != p.node && rec.addrs.get(&q.node).map(|a| cell_key(a)) == cell)
            .all(|q| {
                p.members
                    .iter()
                    .any(|m| Some(&m.id) == ids.get(q.node.as_str()) && m.state == "alive")
            })
    })
}

fn poll_loop(
    api: Api,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    names: Vec<String>,
    watched: Vec<String>,
    start: Samples,
    t0: Instant,
) {
    let mut round = 0u32;
    let mut last_links: BTreeMap<String, Option<f64>> = BTreeMap::new();
    let mut last_loc = None;
    shared.lock().expect("shared").delivered.baseline(&start);
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        round += 1;
        let (polls, clocks): (Vec<StatePoll>, Vec<Option<TimeObs>>) = names
            .iter()
            .filter_map(|n| poll_state_and_clock(&api, n, round, t0))
            .unzip();
        let clocks: Vec<TimeObs> = clocks.into_iter().flatten().collect();
        let mut pt = SeriesPoint {
            t_real_s: t0.elapsed().as_secs_f64(),
            time: TimeSample::of(&clocks),
            ..Default::default()
        };
        for p in &polls {
            pt.quarantined += p.quarantine.len() as u32;
            pt.routes += p.routes.len() as u32;
            for m in &p.members {
                match m.state.as_str() {
                    "alive" => pt.alive += 1,
                    "suspect" => pt.suspect += 1,
                    "dead" => pt.dead += 1,
                    _ => {}
                }
            }
        }
        let mut pids = Vec::new();
        if round % METRICS_EVERY == 1 {
            if let Ok(st) = api.status() {
                last_links = st
                    .links
                    .iter()
                    .filter(|l| watched.contains(&l.name))
                    .map(|l| (l.name.clone(), l.up.then_some(l.delay_s)))
                    .collect();
                pids = st
                    .nodes
                    .iter()
                    .filter_map(|n| Some((n.agent.pid?, n.name.clone())))
                    .collect();
            }
            if let Ok((200, text)) = api.get("/metrics", Duration::from_secs(5)) {
                let rec = Recording {
                    metrics_start: start.clone(),
                    metrics_end: parse_prometheus(&text),
                    ..Default::default()
                };
                let inc = rec.locality();
                last_loc = inc.0;
                shared
                    .lock()
                    .expect("shared")
                    .delivered
                    .observe_delivered(&rec.metrics_end);
            }
        }
        pt.links = last_links.clone();
        pt.locality = last_loc;
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

/// The values of an agent's `GET /kv/{key}?siblings` answer, with each value's dot and the
/// key's context (`None` from an agent that does not report them).
fn versions_of(body: &str) -> Option<(Vec<String>, Vec<Dot>, Option<DotContext>)> {
    let values = siblings_of(body)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let dots: Vec<Dot> = serde_json::from_value(v["dots"].clone()).unwrap_or_default();
    let context: Option<DotContext> = serde_json::from_value(v["context"].clone()).ok();
    Some((values, dots, context))
}

/// The values of an agent's `GET /kv/{key}?siblings` answer.
fn siblings_of(body: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["siblings"]
        .as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

struct LoadSession {
    api: Api,
    shared: Arc<Mutex<Shared>>,
    procs: Arc<AtomicU32>,
    node: String,
    node_idx: u32,
    cell: String,
    keys: u32,
    write_fraction: f64,
    message_fraction: f64,
    durability: Durability,
    destinations: Vec<String>,
    interval: Duration,
    until: Instant,
    t0: Instant,
    seed: u64,
}

/// One client session at a time on one node: sequential ops; after an op with an unknown
/// outcome (or a failure) the session ends and a new one (new process id) begins, as in
/// Jepsen, so the checker never holds a session to a replica that may have lost its state.
fn load_loop(s: LoadSession) {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut proc_id = s.procs.fetch_add(1, Ordering::Relaxed);
    let mut seq = 0u64;
    while Instant::now() < s.until {
        // Drawn only when messages are asked for, so a load without them keeps its sequence.
        if s.message_fraction > 0.0
            && !s.destinations.is_empty()
            && rng.gen_bool(s.message_fraction.clamp(0.0, 1.0))
        {
            seq += 1;
            let dst = &s.destinations[rng.gen_range(0..s.destinations.len())];
            let r = s.api.call(
                "POST",
                &format!("/nodes/{}/send/{dst}", s.node),
                Some(format!("m{proc_id}-{seq}").as_bytes()),
                Duration::from_secs(3),
            );
            let ok = matches!(r, Ok((200, _)));
            {
                let mut sh = s.shared.lock().expect("shared");
                if ok {
                    sh.messages_sent += 1;
                } else {
                    sh.messages_refused += 1;
                }
            }
            std::thread::sleep(s.interval);
            continue;
        }
        let key = format!("{}-k{}", s.cell, rng.gen_range(0..s.keys));
        let write = rng.gen_bool(s.write_fraction.clamp(0.0, 1.0));
        let start = s.t0.elapsed().as_nanos() as u64;
        let (mut dot, mut context) = (None, None);
        let (op, status) = if write {
            seq += 1;
            let value = format!("p{proc_id}-{seq}");
            // `?context`: the answer names the write's dot and the context it overwrote, so
            // the checker knows which writes this one causally follows. The agent answers
            // once the write is as durable as asked (`cell`: f + 1 members hold it).
            let r = s.api.call(
                "POST",
                &format!(
                    "/nodes/{}/kv/{}?context&durability={}",
                    s.node,
                    pct::encode(&key),
                    s.durability
                ),
                Some(value.as_bytes()),
                Duration::from_secs(3),
            );
            // A `cell` write the agent could not get acknowledged in time (504) is
            // indeterminate, but the agent names its dot and context too: without them the
            // checker could not tell that a later read legitimately shows a value written
            // over earlier ones.
            if let Ok((200 | 504, body)) = &r {
                if let Ok(w) = serde_json::from_str::<Written>(body) {
                    dot = w.dot;
                    context = Some(w.context);
                }
            }
            if let Ok((200, _)) = &r {
                if s.durability == Durability::Local {
                    s.shared
                        .lock()
                        .expect("shared")
                        .local_writes
                        .insert((key.clone(), value.clone()));
                }
            }
            let st = match &r {
                Ok((200, _)) => OpStatus::Ok,
                // The supervisor could not connect to the agent: the write never reached
                // it. Any other 502 ("connection closed before message completed": the
                // agent died holding it) is indeterminate — it may have applied and sent
                // the write first, as a crash right after a put does.
                Ok((502, b)) if b.contains(&format!("agent {}: connect ", s.node)) => {
                    OpStatus::Fail
                }
                Ok((501, _)) => OpStatus::Fail,
                _ => OpStatus::Info,
            };
            (OpKind::Write { value }, st)
        } else {
            // Every concurrent sibling: the store is a multi-value register, and a read that
            // saw only the resolved sibling would hide the others from the checker.
            let r = s.api.get(
                &format!("/nodes/{}/kv/{}?siblings", s.node, pct::encode(&key)),
                Duration::from_secs(5),
            );
            match r {
                Ok((200, body)) => match siblings_of(&body) {
                    Some(values) => (OpKind::Read { values }, OpStatus::Ok),
                    None => (OpKind::Read { values: vec![] }, OpStatus::Info),
                },
                Ok((404, _)) => (OpKind::Read { values: vec![] }, OpStatus::Ok),
                _ => (OpKind::Read { values: vec![] }, OpStatus::Info),
            }
        };
        let end = s.t0.elapsed().as_nanos() as u64;
        {
            let mut sh = s.shared.lock().expect("shared");
            if sh.history.len() < MAX_OPS {
                sh.history.push(HistoryOp {
                    process: proc_id,
                    node: Some(s.node_idx),
                    key,
                    op,
                    status,
                    dot,
                    context,
                    start_ns: start,
                    end_ns: end.max(start),
                });
            }
        }
        if status != OpStatus::Ok {
            proc_id = s.procs.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(s.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_routes_follow_the_hierarchy_and_skip_authority_pairs() {
        let addrs: BTreeMap<String, String> = [
            ("t0", "0.0.0.0"),
            ("t1", "0.0.0.1"),
            ("u0", "0.0.1.0"),
            ("v0", "0.1.0.0"),
            ("w0", "1.0.0.0"),
            ("a0", "0.65535.65535.0"),
            ("a1", "0.65535.65534.0"),
        ]
        .iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect();
        let ids: BTreeMap<String, u32> = addrs
            .keys()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let got =
            |n: &str| -> Vec<String> { expected_routes(&addrs, &ids, n).into_iter().collect() };
        let t1 = ids["t1"];
        assert_eq!(
            got("t0"),
            [
                "cell:0.0.1".to_string(),
                "cluster:0.1".into(),
                "cluster:0.65535".into(),
                "layer:1".into(),
                format!("node:{t1}"),
            ]
        );
        // An authority: the layer's clusters and the other layers, not the other authority.
        assert_eq!(
            got("a0"),
            [
                "cluster:0.0".to_string(),
                "cluster:0.1".into(),
                "layer:1".into()
            ]
        );
    }

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
