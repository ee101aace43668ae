//! Staged update rollout in a running lab (issue 18, `lightcone update`): an agent build is
//! released as a threshold-signed, logged manifest ([`lightcone_core::update::release`]),
//! then deployed canary cell → the rest of its cluster → the rest of its layer →
//! everything else. Deploying a tile makes the supervisor really replace its agent
//! process with the new binary (`POST /api/nodes/{n}/update`: same configuration, a new
//! boot; the tile rejoins empty and refills from its cell by the kv state transfer, as `lightcone_core::update`
//! says). Each stage is then held to health gates read from the agents themselves; a gate
//! that fires rolls the stage's tiles back to the binary they ran before, records the gate,
//! its measure and the time to rollback, and halts the rollout. The twin's rollout
//! (`lightcone_sim::rollout`) is the model; the gates and their bounds are the same:
//!
//! A stage replaces its tiles in **waves** ([`lightcone_core::update::waves`]): at most
//! `max(1, f)` tiles of a cell of `N` at once, `f = ⌊(N − 1) / 2⌋` (the crash faults a
//! `cell` write survives), since a replaced tile boots empty; the next wave waits until
//! this one has rejoined and refilled. A rollback goes back in waves too.
//!
//! - **rejoin** (bound [`Gates::rejoin_s`] per wave, 30 s: three times the spec's < 10 s local
//!   detection, since a restarted tile must be forgotten and admitted again): every
//!   updated tile's agent runs, sees each running cell-mate `alive`, and each of them sees
//!   it `alive` (`/nodes/{n}/state`).
//! - **refill** (bound [`Gates::rejoin_s`] per wave, 0 writes missing): each tile of the
//!   wave has seen every write its running cell-mates outside the wave had seen when it
//!   rejoined (`/state`'s `kv.writes`, filled by the kv state transfer,
//!   `lightcone_core::kv::KvMsg::Sync`). Without it the next wave could empty more of the
//!   cell than its acknowledged writes survive. Then up to [`WARMUP_ROUNDS`] unjudged probe rounds teach every
//!   tile the restarted tiles' new boot epochs (frames bound to an earlier boot are
//!   refused by design).
//! - **delivery** (bound [`Gates::delivery_min`], 99 %; the spec gives no figure: a sound
//!   build delivers everything on the lab's loss-free links): every round of the soak sends
//!   one overlay datagram between every ordered pair of running agents
//!   (`/nodes/{a}/send/{b}`) and counts what their `datagrams.app.delivered` counters
//!   gained.
//! - **crash** (bound 0): no agent of the lab exits or is restarted during the soak (its
//!   pid, from `/api/status`, is the one it had when the soak began).
//! - **membership** (bound 0): no running agent is `dead` in a running cell-mate's view
//!   during the soak.
//!
//! - **detection** (the spec's < 10 s local detection, emulated time; canary stage only,
//!   after its soak): one updated canary tile with an updated cell-mate is crashed, a running
//!   cell-mate must hold it suspect or dead within the bound; it is then restarted on the same
//!   build and must rejoin within [`Gates::rejoin_s`]. The canary is the stage that may take
//!   that risk; later stages are not crashed.
//! - **causal** (bound 0): every round each updated tile writes a key with
//!   `durability=cell`; a write its cell acknowledged must be held by every running
//!   cell-mate one round later (a round is ≫ a cell's delay; the lab's links lose nothing),
//!   or the round counts a causal anomaly — an acknowledged write a reader cannot see.
//! - **time** (bound: the spec's stated uncertainty, 3σ): no running tile's true time error
//!   lies outside its own 3σ for two rounds in a row (one round is forgiven: a restarted
//!   tile is still settling). Judged only on tiles with a time layer.
//! - **thermal** (bound [`Gates::thermal_max`], 1.0: no tile above its rejection capacity):
//!   judged only on tiles with a thermal subsystem, at the end of each round.
//!
//! **Attestation** (the tile runtime's emulated secure boot, `lightcone_core::update::attest`):
//! before the first stage, [`approve`] has t of the authorities sign a `BuildApproval` of the
//! release's SHA-256, enters it in the release log and floods it from the canary's first
//! tile; every agent started from then on is configured with it (`approved-builds`). A tile
//! running a build nobody approved is kept out of its neighbours' routing.
//!
//! **State** lives in the lab's state directory: `rollout.json` (the rollout's record,
//! rewritten atomically after every step, so `update status` works from any process), and
//! `releases/` (the release trust store: the TUF metadata versions and release installed
//! last, the lab's release log's entries, and the binary the lab's agents run after the
//! last complete rollout). An `update abort` asks the running rollout to stop by creating
//! `rollout.abort`; the rollout rolls back every tile it updated and records `aborted`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use lightcone_core::config::Role;
use lightcone_core::trust::log::{Entry, Log};
use lightcone_core::update::release::{
    self, Bundle, Manifest, ReleaseError, RolloutPolicy, Root, Verifier,
};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::api::{UpdateReply, UpdateRequest};
use crate::authority::{self, AuthorityError};
use crate::client::{Client, NodeState};
use crate::plan::Plan;
use crate::state::{write_private, LabDir};

/// The rollout's record in the lab's state directory.
pub const STATE_FILE: &str = "rollout.json";
/// Created by `update abort` to stop a running rollout.
pub const ABORT_FILE: &str = "rollout.abort";
/// How long release metadata stays valid after signing (TUF expiry; a frozen timestamp is
/// refused after it).
pub const METADATA_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why a rollout could not start, or what stopped it. Each variant says what was changed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// Nothing was changed.
    #[error("lab {lab} has no cell {name:?} to start with; its cells are {listed}")]
    UnknownCanary {
        lab: String,
        name: String,
        listed: String,
    },
    /// Nothing was changed.
    #[error("lab {lab} has no tiles to update")]
    NoTiles { lab: String },
    /// Nothing was changed.
    #[error("{0}; nothing was changed")]
    Binary(String),
    /// Nothing was changed.
    #[error("a rollout is already running in lab {lab} (process {pid}, stage {stage}); wait for it, or stop it with `lightcone update abort {lab}`; nothing was changed")]
    Busy {
        lab: String,
        pid: u32,
        stage: String,
    },
    /// Nothing was changed (the shares, the trust store and the log are as they were).
    #[error("signing refused: {0}; nothing was changed")]
    Signing(String),
    /// Nothing was changed: the release was not trusted, no tile was touched.
    #[error("release refused: {0}; nothing was changed")]
    Refused(#[from] ReleaseError),
    /// Nothing was changed.
    #[error("{0}")]
    Authority(#[from] AuthorityError),
    /// As the message says.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// As the message says.
    #[error("{path}: {why}")]
    Corrupt { path: String, why: String },
    /// The rollout stopped where it was; its record says which tiles run what.
    #[error("lab API: {0}")]
    Api(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RolloutError + '_ {
    move |source| RolloutError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One stage: its name and the plan's nodes it updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: &'static str,
    pub nodes: Vec<usize>,
}

fn cell_of(plan: &Plan, i: usize) -> (u16, u16, u16) {
    let a = &plan.nodes[i].addr;
    (a.layer, a.cluster, a.cell)
}

fn cell_name((l, c, k): (u16, u16, u16)) -> String {
    format!("l{l}c{c}k{k}")
}

/// The tiles' cells (authorities are not in a cell of tiles), in order.
fn tile_cells(plan: &Plan) -> BTreeSet<(u16, u16, u16)> {
    (0..plan.nodes.len())
        .filter(|i| plan.nodes[*i].role != Role::Authority)
        .map(|i| cell_of(plan, i))
        .collect()
}

/// Canary cell (`canary`, a cell name `lLcCkK`, or the first cell of tiles) → the rest of
/// its cluster → the rest of its layer → every other node; empty stages are left out.
pub fn stages(plan: &Plan, canary: Option<&str>) -> Result<Vec<Stage>, RolloutError> {
    let cells = tile_cells(plan);
    let first = match canary {
        None => *cells.iter().next().ok_or_else(|| RolloutError::NoTiles {
            lab: plan.lab.clone(),
        })?,
        Some(name) => *cells
            .iter()
            .find(|c| cell_name(**c) == name)
            .ok_or_else(|| RolloutError::UnknownCanary {
                lab: plan.lab.clone(),
                name: name.into(),
                listed: cells
                    .iter()
                    .map(|c| cell_name(*c))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };
    let within = |i: usize, level: u8| {
        let c = cell_of(plan, i);
        match level {
            0 => c == first && plan.nodes[i].role != Role::Authority,
            1 => (c.0, c.1) == (first.0, first.1),
            2 => c.0 == first.0,
            _ => true,
        }
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for (name, level) in [("canary", 0u8), ("cluster", 1), ("layer", 2), ("all", 3)] {
        let nodes: Vec<usize> = (0..plan.nodes.len())
            .filter(|i| within(*i, level) && !done.contains(i))
            .collect();
        done.extend(nodes.iter().copied());
        if !nodes.is_empty() {
            out.push(Stage { name, nodes });
        }
    }
    Ok(out)
}

/// `update plan`'s table: one line per stage, then the total.
pub fn render_stages(plan: &Plan, stages: &[Stage]) -> String {
    let mut s = String::new();
    let mut total = 0;
    for (i, st) in stages.iter().enumerate() {
        total += st.nodes.len();
        let cells: BTreeSet<String> = st
            .nodes
            .iter()
            .map(|n| cell_name(cell_of(plan, *n)))
            .collect();
        let names: Vec<&str> = st
            .nodes
            .iter()
            .map(|n| plan.nodes[*n].name.as_str())
            .collect();
        s += &format!(
            "stage {} {:<8} {:>4} node{}  ({} cell{}: {})  {}\n",
            i + 1,
            st.name,
            st.nodes.len(),
            if st.nodes.len() == 1 { " " } else { "s" },
            cells.len(),
            if cells.len() == 1 { "" } else { "s" },
            cells.into_iter().collect::<Vec<_>>().join(", "),
            abbreviate(&names),
        );
    }
    s += &format!(
        "{} stages, {total} of {} nodes\n",
        stages.len(),
        plan.nodes.len()
    );
    s
}

fn abbreviate(names: &[&str]) -> String {
    const MAX: usize = 8;
    let mut s = names
        .iter()
        .take(MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if names.len() > MAX {
        s += &format!(" … and {} more", names.len() - MAX);
    }
    s
}

/// The health gates' bounds (see the module docs for each one's reason).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Updated tiles must have rejoined within this, s (real).
    pub rejoin_s: f64,
    /// Soak of each stage, s (real).
    pub soak_s: f64,
    /// One probe round, s (real).
    pub round_s: f64,
    /// Least share of a round's probes delivered.
    pub delivery_min: f64,
    /// Highest thermal load (heat to reject over rejection capacity) of any running tile
    /// with a thermal subsystem, at the end of a round.
    #[serde(default = "default_thermal_max")]
    pub thermal_max: f64,
}

fn default_thermal_max() -> f64 {
    1.0
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            rejoin_s: 30.0,
            soak_s: 10.0,
            round_s: 1.0,
            delivery_min: 0.99,
            thermal_max: default_thermal_max(),
        }
    }
}

impl Gates {
    /// Checks the bounds; a bad one says what would be valid.
    pub fn check(&self) -> Result<(), String> {
        let pos = |v: f64, name: &str, max: f64| {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(format!("{name} {v} is out of range (0, {max}] s"))
            }
        };
        pos(self.rejoin_s, "--rejoin", 3600.0)?;
        pos(self.soak_s, "--soak", 86_400.0)?;
        pos(self.round_s, "--round", 60.0)?;
        if self.round_s > self.soak_s {
            return Err(format!(
                "--round {} s is longer than --soak {} s",
                self.round_s, self.soak_s
            ));
        }
        if !(self.thermal_max.is_finite() && self.thermal_max > 0.0) {
            return Err(format!(
                "--thermal-max {} is not a load ratio above 0",
                self.thermal_max
            ));
        }
        if !(self.delivery_min.is_finite() && (0.0..=1.0).contains(&self.delivery_min)) {
            return Err(format!(
                "--delivery-min {} is not a share in [0, 1]",
                self.delivery_min
            ));
        }
        Ok(())
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    /// Every stage passed: the new build runs everywhere.
    Complete,
    /// A gate fired: the stage was rolled back, the rollout stopped.
    Halted,
    /// `update abort`: every updated tile was rolled back.
    Aborted,
    /// The lab's API failed mid-way; the record says which tiles run what.
    Failed,
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Pending,
    Deploying,
    Soaking,
    Passed,
    RolledBack,
}

/// One stage's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub nodes: Vec<String>,
    pub status: StageStatus,
    /// Seconds since the rollout started.
    pub deployed_at_s: Option<f64>,
    pub rejoined_at_s: Option<f64>,
    pub probes_sent: u64,
    pub probes_delivered: u64,
    /// The worst soak round's delivered share.
    pub worst_round: Option<f64>,
    pub rounds: u32,
    /// Unjudged rounds before the soak (at most [`WARMUP_ROUNDS`]).
    #[serde(default)]
    pub warmup_rounds: u32,
    /// The causal gate's cell-acknowledged writes, and the cell-mate reads that checked
    /// them (a gate that wrote nothing judged nothing: the render says so).
    #[serde(default)]
    pub causal_writes: u64,
    #[serde(default)]
    pub causal_reads: u64,
    /// The canary's detection probe: emulated seconds until a cell-mate held the crashed
    /// canary tile suspect or dead (`None`: not probed).
    #[serde(default)]
    pub detection_s: Option<f64>,
    /// Waves replaced, rejoined and refilled ([`lightcone_core::update::waves`]).
    #[serde(default)]
    pub waves: u32,
}

/// Why a rollout halted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaltRecord {
    pub stage: String,
    pub gate: String,
    /// The gate's measure and bound, in words.
    pub reason: String,
    /// Seconds since the rollout started.
    pub detected_at_s: f64,
    /// When every tile of the stage ran the previous binary again.
    pub rolled_back_at_s: f64,
    pub time_to_rollback_s: f64,
    pub rolled_back: Vec<String>,
}

/// What a rollout deploys and what it rolls back to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub release: u64,
    pub protocol: u8,
    pub compat: (u8, u8),
    pub binary: String,
    pub sha256: String,
}

/// The binary the lab's agents run when no rollout replaced it: `None` is the lab's own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Current {
    pub release: u64,
    pub binary: Option<String>,
    pub sha256: Option<String>,
}

/// `rollout.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutState {
    pub lab: String,
    pub phase: Phase,
    /// The process running the rollout, and its start time (clock ticks since boot).
    pub pid: u32,
    pub pid_start: u64,
    /// Wall clock at the start, s since the Unix epoch.
    pub started_unix_s: f64,
    pub target: Target,
    /// What updated tiles are rolled back to.
    pub previous: Current,
    /// How the release was signed, in words.
    pub signed: String,
    pub gates: Gates,
    pub stages: Vec<StageRecord>,
    pub halt: Option<HaltRecord>,
    /// Why the rollout failed or was aborted.
    pub note: Option<String>,
}

fn state_path(dir: &LabDir) -> PathBuf {
    dir.path.join(STATE_FILE)
}

/// The `update abort` request file.
pub fn abort_path(dir: &LabDir) -> PathBuf {
    dir.path.join(ABORT_FILE)
}

fn releases(dir: &LabDir) -> PathBuf {
    dir.path.join("releases")
}

fn write_atomic(p: &Path, bytes: &[u8]) -> Result<(), RolloutError> {
    let tmp = p.with_extension("tmp");
    write_private(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, p).map_err(io(p))
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<Option<T>, RolloutError> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RolloutError::Corrupt {
                path: p.display().to_string(),
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(p)(e)),
    }
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<(), RolloutError> {
    let b = serde_json::to_vec_pretty(v).map_err(|e| RolloutError::Corrupt {
        path: p.display().to_string(),
        why: e.to_string(),
    })?;
    write_atomic(p, &b)
}

/// The lab's rollout record, if a rollout was started.
pub fn load(dir: &LabDir) -> Result<Option<RolloutState>, RolloutError> {
    read_json(&state_path(dir))
}

/// Writes the rollout record (atomically: a reader sees the old or the new one).
pub fn save(dir: &LabDir, s: &RolloutState) -> Result<(), RolloutError> {
    write_json(&state_path(dir), s)
}

impl RolloutState {
    /// Whether the process running this rollout is still alive.
    pub fn runner_alive(&self) -> bool {
        crate::state::same_process(self.pid, self.pid_start)
    }

    /// The stage being worked on (or the last one).
    pub fn current_stage(&self) -> String {
        self.stages
            .iter()
            .rev()
            .find(|s| s.status != StageStatus::Pending)
            .map_or("none yet".into(), |s| s.name.clone())
    }

    /// `update status`: the release, each stage, the verdict.
    pub fn render(&self) -> String {
        let mut s = format!(
            "lab {}: rollout of release {} ({}; sha256 {}; protocol {}, compatible {}..={}): {}\n",
            self.lab,
            self.target.release,
            self.target.binary,
            &self.target.sha256,
            self.target.protocol,
            self.target.compat.0,
            self.target.compat.1,
            match self.phase {
                Phase::Running if !self.runner_alive() => format!(
                    "RUNNING, but its process {} is gone: `lightcone update abort {}` rolls back what it updated",
                    self.pid, self.lab
                ),
                Phase::Running => format!("RUNNING (process {})", self.pid),
                Phase::Complete => "COMPLETE".into(),
                Phase::Halted => "HALTED".into(),
                Phase::Aborted => "ABORTED".into(),
                Phase::Failed => "FAILED".into(),
            }
        );
        s += &format!("  signed: {}\n", self.signed);
        s += &format!(
            "  gates: rejoin and refill <= {} s per wave, soak {} s in rounds of {} s, delivery >= {}, crashes 0, membership deaths 0, causal anomalies 0, time error within 3σ, thermal load <= {}, canary crash detected < 10 s\n",
            self.gates.rejoin_s, self.gates.soak_s, self.gates.round_s, self.gates.delivery_min, self.gates.thermal_max
        );
        for st in &self.stages {
            let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} s"));
            s += &format!(
                "  stage {:<8} {:>3} nodes  {:<11} deployed {:>8}  in {} wave{}, rejoined and refilled {:>8}  warm-up rounds {}  soak rounds {}  delivered {}/{}  worst round {}  causal writes {} read back {} times{}\n",
                st.name,
                st.nodes.len(),
                serde_json::to_value(st.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                opt(st.deployed_at_s),
                st.waves,
                if st.waves == 1 { "" } else { "s" },
                opt(st.rejoined_at_s),
                st.warmup_rounds,
                st.rounds,
                st.probes_delivered,
                st.probes_sent,
                st.worst_round.map_or("-".into(), |w| format!("{w:.4}")),
                st.causal_writes,
                st.causal_reads,
                st.detection_s
                    .map_or(String::new(), |d| format!("  crash detected in {d:.2} s")),
            );
        }
        if let Some(h) = &self.halt {
            s += &format!(
                "  HALTED at stage {}: gate {} fired at {:.2} s ({}); {} node{} rolled back to the previous build at {:.2} s: time to rollback {:.2} s\n",
                h.stage,
                h.gate,
                h.detected_at_s,
                h.reason,
                h.rolled_back.len(),
                if h.rolled_back.len() == 1 { "" } else { "s" },
                h.rolled_back_at_s,
                h.time_to_rollback_s
            );
        }
        if let Some(n) = &self.note {
            s += &format!("  note: {n}\n");
        }
        if self.phase == Phase::Complete {
            s += "  rollout complete: every stage passed its gates; the release runs on every node\n";
        }
        s
    }
}

/// Refuses a start while another rollout runs (its process alive). Nothing is changed.
pub fn check_idle(dir: &LabDir) -> Result<(), RolloutError> {
    if let Some(s) = load(dir)? {
        if s.phase == Phase::Running && s.runner_alive() {
            return Err(RolloutError::Busy {
                lab: dir.lab.clone(),
                pid: s.pid,
                stage: s.current_stage(),
            });
        }
    }
    Ok(())
}

/// Why `path` cannot be deployed: it must exist, be a regular file and executable.
pub fn check_binary(path: &Path) -> Result<PathBuf, RolloutError> {
    let abs = std::path::absolute(path).map_err(io(path))?;
    if let Some(why) = crate::api::not_runnable(&abs) {
        return Err(RolloutError::Binary(format!("--build {why}")));
    }
    Ok(abs)
}

// ---------------------------------------------------------------------------------------
// Releases: signed by t of the lab's authority shares, logged, accepted by a TUF verifier
// whose store lives in `releases/`.

/// The release trust store (`releases/trusted.json`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Trusted {
    /// Targets, snapshot, timestamp metadata versions.
    versions: [u64; 3],
    installed: u64,
}

fn log_key(dir: &LabDir) -> Result<SigningKey, RolloutError> {
    let p = dir.keys().join("release-log.key");
    match std::fs::read_to_string(&p) {
        Ok(t) => {
            let b: [u8; 32] = hex::decode(t.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| RolloutError::Corrupt {
                    path: p.display().to_string(),
                    why: "not 32 bytes of hex".into(),
                })?;
            Ok(SigningKey::from_bytes(&b))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = SigningKey::generate(&mut rand::rngs::OsRng);
            write_private(&p, hex::encode(k.to_bytes()).as_bytes()).map_err(io(&p))?;
            Ok(k)
        }
        Err(e) => Err(io(&p)(e)),
    }
}

/// The lab's release log, read back from its entries.
fn release_log(dir: &LabDir) -> Result<(Log, Vec<String>), RolloutError> {
    let p = releases(dir).join("log.json");
    let entries: Vec<String> = read_json(&p)?.unwrap_or_default();
    let mut log = Log::new();
    for e in &entries {
        let entry = hex::decode(e)
            .ok()
            .and_then(|b| Entry::decode(&b).ok())
            .ok_or_else(|| RolloutError::Corrupt {
                path: p.display().to_string(),
                why: "an entry does not decode".into(),
            })?;
        log.append(&entry).map_err(|e| RolloutError::Corrupt {
            path: p.display().to_string(),
            why: e.to_string(),
        })?;
    }
    Ok((log, entries))
}

/// The release number after the last installed one.
pub fn next_release(dir: &LabDir) -> Result<u64, RolloutError> {
    let t: Trusted = read_json(&releases(dir).join("trusted.json"))?.unwrap_or_default();
    Ok(t.installed + 1)
}

/// What the lab's agents run now (the last complete rollout's binary, or the lab's own).
pub fn current(dir: &LabDir) -> Result<Current, RolloutError> {
    Ok(read_json(&releases(dir).join("current.json"))?.unwrap_or_default())
}

/// Signs `m` as release metadata (targets, snapshot, timestamp; metadata version = the
/// release number) with the lab's first `shares` authority shares, enters it in the lab's
/// release log, and accepts it with the lab's TUF verifier at `now_ns` (Unix ns). Only an
/// accepted release changes anything: the log's new entry and the trust store are written
/// then. Fewer than t shares: refused by the signing step; an older or replayed release:
/// refused by the verifier.
pub fn release(
    dir: &LabDir,
    m: &Manifest,
    shares: Option<usize>,
    now_ns: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Manifest, String), RolloutError> {
    let record = authority::record(dir)?;
    let n = shares.unwrap_or(usize::from(record.t));
    let (group, held) = authority::group_and_shares(dir, n)?;
    let signers: Vec<_> = held.iter().collect();
    let expires = now_ns.saturating_add(METADATA_LIFETIME.as_nanos() as u64);
    let v = m.release;
    let sign = |role, body: Vec<u8>, rng: &mut _| {
        release::sign_role(&group, &signers, role, v, expires, body, rng)
            .map_err(|e| RolloutError::Signing(e.to_string()))
    };
    let targets = sign(release::Role::Targets, m.encode(), rng)?;
    let snapshot = sign(release::Role::Snapshot, targets.pin(), rng)?;
    let timestamp = sign(release::Role::Timestamp, snapshot.pin(), rng)?;
    let key = log_key(dir)?;
    let (mut log, mut entries) = release_log(dir)?;
    let entry = release::approval_entry(&targets)?;
    let index = log.append(&entry).map_err(|e| RolloutError::Corrupt {
        path: "release log".into(),
        why: e.to_string(),
    })?;
    let bundle = Bundle {
        timestamp,
        snapshot,
        targets,
        head: log.head(0x7e1e, now_ns, &key),
        index,
        proof: log
            .prove_inclusion(index)
            .map_err(|e| RolloutError::Corrupt {
                path: "release log".into(),
                why: e.to_string(),
            })?,
    };
    let accepted = accept(dir, &bundle, &key.verifying_key(), now_ns)?;
    entries.push(hex::encode(entry.encode()));
    write_json(&releases(dir).join("log.json"), &entries)?;
    Ok((
        accepted,
        format!(
            "targets, snapshot and timestamp metadata version {v} signed by {n} of {} authority shares (threshold {}); log entry {index}",
            record.members.len(),
            record.t
        ),
    ))
}

/// Approves the accepted release's build for attestation (issue 18): t of the
/// authorities sign a `BuildApproval` of its SHA-256 ([`authority::approve_build`]: agents
/// started from now on are configured with it), entered in the lab's release log after
/// the release's own entry, and handed to `via`'s agent, which floods it to every running
/// tile, so that the tiles the rollout updates are taken back into routing. A build the
/// lab approved already is not approved again. Returns what was done, in words.
pub fn approve(
    dir: &LabDir,
    client: &Client,
    via: &str,
    sha256: [u8; 32],
    release: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, RolloutError> {
    // A lab that never ran a rollout has no release store yet.
    std::fs::create_dir_all(releases(dir)).map_err(io(&releases(dir)))?;
    let (mut log, mut entries) = release_log(dir)?;
    let entry_hex = authority::approve_build(dir, sha256, release, rng)?;
    let logged = if entries.contains(&entry_hex) {
        "already in the release log".to_string()
    } else {
        let bytes = hex::decode(&entry_hex).map_err(|e| RolloutError::Corrupt {
            path: authority::approvals_path(dir).display().to_string(),
            why: e.to_string(),
        })?;
        let entry = Entry::decode(&bytes).map_err(|e| RolloutError::Corrupt {
            path: authority::approvals_path(dir).display().to_string(),
            why: e.to_string(),
        })?;
        let index = log.append(&entry).map_err(|e| RolloutError::Corrupt {
            path: "release log".into(),
            why: e.to_string(),
        })?;
        entries.push(entry_hex.clone());
        write_json(&releases(dir).join("log.json"), &entries)?;
        format!("release log entry {index}")
    };
    client
        .trust_entry(via, &entry_hex)
        .map_err(|e| RolloutError::Api(format!("the build approval was not flooded: {e}")))?;
    Ok(format!(
        "build approved for attestation by the authorities' threshold key ({logged}), flooded from {via}"
    ))
}

/// The lab's TUF verifier accepts `b` (or refuses it, changing nothing) and keeps its
/// store. The root: the authorities' group key for every role, `log` for the log.
pub fn accept(
    dir: &LabDir,
    b: &Bundle,
    log: &VerifyingKey,
    now_ns: u64,
) -> Result<Manifest, RolloutError> {
    let record = authority::record(dir)?;
    let group_key = hex::decode(&record.group_key_hex)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| RolloutError::Corrupt {
            path: "keys/authorities.json".into(),
            why: "group_key_hex is no Ed25519 key".into(),
        })?;
    let root = Root {
        targets: group_key,
        snapshot: group_key,
        timestamp: group_key,
        log: *log,
    };
    let p = releases(dir).join("trusted.json");
    let t: Trusted = read_json(&p)?.unwrap_or_default();
    let mut v = Verifier::resume(root, t.versions, t.installed);
    let m = v.accept(b, now_ns)?;
    std::fs::create_dir_all(releases(dir)).map_err(io(&releases(dir)))?;
    write_json(
        &p,
        &Trusted {
            versions: v.trusted(),
            installed: v.installed(),
        },
    )?;
    Ok(m)
}

/// The manifest of release `release` for a binary with SHA-256 `sha` speaking `protocol`.
pub fn manifest(release: u64, sha: [u8; 32], protocol: u8, gates: &Gates) -> Manifest {
    let lo = protocol
        .saturating_sub(1)
        .max(lightcone_core::wire::VERSION_MIN);
    Manifest {
        release,
        protocol,
        binary_sha256: sha,
        compat: (lo, protocol),
        policy: RolloutPolicy {
            soak_s: gates.soak_s.ceil() as u32,
            hand_over_state: false,
        },
    }
}

// ---------------------------------------------------------------------------------------
// The rollout itself.

const PROBE: &[u8] = b"lightcone rollout probe";

/// Unjudged probe rounds after a stage rejoined, until one delivers everything: frames
/// bound to a restarted tile's earlier boot are refused by design, and routes through it
/// are learned again (see the module docs).
pub const WARMUP_ROUNDS: u32 = 5;

/// Runs a rollout against the lab's supervisor: stage by stage, gates, rollback. `say`
/// gets progress lines. The record is saved after every step.
pub struct Runner<'a> {
    pub dir: &'a LabDir,
    pub plan: &'a Plan,
    pub client: &'a Client,
    pub state: RolloutState,
    t0: Instant,
}

/// Why a gate fired: (gate, reason).
type Fired = (&'static str, String);

/// A probe round's outcome: sent, delivered, and the running agents seen dead by a
/// running cell-mate (observer, the dead one).
type Round = (u64, u64, Vec<(usize, usize)>, BTreeMap<usize, NodeState>);

/// The key a causal probe writes at `node` in round `round`.
fn causal_key(node: &str, round: u32) -> String {
    format!("lightcone-rollout/{node}/{round}")
}

/// The thermal gate: the running tile with the highest thermal load, if above `max`.
pub fn judge_thermal(plan: &Plan, states: &BTreeMap<usize, NodeState>, max: f64) -> Option<Fired> {
    let (i, load) = states
        .iter()
        .filter_map(|(i, s)| s.thermal.as_ref().map(|t| (*i, t.load_ratio)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (load > max).then(|| {
        (
            "thermal",
            format!(
                "{} carries a thermal load of {load:.3} of its rejection capacity (bound <= {max})",
                plan.nodes[i].name
            ),
        )
    })
}

/// The time gate: a running tile whose true time error lies outside its own 3σ in this
/// round and the one before (`outside_before`: last round's; one round out is forgiven:
/// a tile that just restarted is still settling its estimate). Updates `outside_before`.
pub fn judge_time(
    plan: &Plan,
    states: &BTreeMap<usize, NodeState>,
    outside_before: &mut BTreeSet<usize>,
) -> Option<Fired> {
    let outside: BTreeSet<usize> = states
        .iter()
        .filter(|(_, s)| {
            s.time
                .as_ref()
                .is_some_and(|t| !t.within_3sigma && t.true_error_s.is_some())
        })
        .map(|(i, _)| *i)
        .collect();
    let twice = outside.intersection(outside_before).next().copied();
    *outside_before = outside;
    let i = twice?;
    let t = states[&i].time.as_ref()?;
    Some((
        "time",
        format!(
            "{}'s time error {:.6} s is outside its 3σ = {:.6} s for two rounds (the spec: every timestamp honours its stated uncertainty)",
            plan.nodes[i].name,
            t.true_error_s.unwrap_or(f64::NAN),
            3.0 * t.sigma_s.unwrap_or(f64::NAN)
        ),
    ))
}

/// The spec's local failure detection bound, emulated seconds ("< 10 s").
pub const DETECTION_BOUND_S: f64 = 10.0;

/// The detection gate: `detected_s`, emulated seconds until a cell-mate held the crashed
/// tile suspect or dead (`None`: not within the wait), against the spec's < 10 s.
pub fn judge_detection(victim: &str, detected_s: Option<f64>, waited_s: f64) -> Option<Fired> {
    match detected_s {
        Some(d) if d < DETECTION_BOUND_S => None,
        Some(d) => Some((
            "detection",
            format!("{victim}'s crash was detected by a cell-mate after {d:.2} s (the spec: < {DETECTION_BOUND_S} s)"),
        )),
        None => Some((
            "detection",
            format!("no cell-mate held the crashed {victim} suspect or dead within {waited_s:.1} s (the spec: < {DETECTION_BOUND_S} s)"),
        )),
    }
}

/// The causal gate: writes acknowledged by their cell (`durability=cell`) that a running
/// cell-mate did not hold a round later — (writer, reader, key) triples.
pub fn judge_causal(plan: &Plan, missing: &[(usize, usize, String)]) -> Option<Fired> {
    let (w, r, k) = missing.first()?;
    Some((
        "causal",
        format!(
            "{} of the round's cell-acknowledged writes not visible at a cell-mate a round later (bound 0); first: {k} written at {}, missing at {}",
            missing.len(),
            plan.nodes[*w].name,
            plan.nodes[*r].name
        ),
    ))
}

impl<'a> Runner<'a> {
    pub fn new(
        dir: &'a LabDir,
        plan: &'a Plan,
        client: &'a Client,
        state: RolloutState,
    ) -> Runner<'a> {
        Runner {
            dir,
            plan,
            client,
            state,
            t0: Instant::now(),
        }
    }

    fn now_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn save(&self) -> Result<(), RolloutError> {
        save(self.dir, &self.state)
    }

    fn aborted(&self) -> bool {
        abort_path(self.dir).exists()
    }

    fn api<T: serde::de::DeserializeOwned>(
        &self,
        r: Result<T, crate::client::ClientError>,
    ) -> Result<T, RolloutError> {
        r.map_err(|e| RolloutError::Api(e.to_string()))
    }

    /// Replaces `node`'s agent binary: the release's, or the previous one (`None`).
    fn replace(&self, node: &str, to_target: bool) -> Result<UpdateReply, RolloutError> {
        let req = if to_target {
            UpdateRequest {
                binary: Some(self.state.target.binary.clone()),
                sha256: Some(self.state.target.sha256.clone()),
            }
        } else {
            UpdateRequest {
                binary: self.state.previous.binary.clone(),
                sha256: self.state.previous.sha256.clone(),
            }
        };
        let body = serde_json::to_value(&req).map_err(|e| RolloutError::Api(e.to_string()))?;
        self.api(
            self.client
                .post_json(&format!("/api/nodes/{node}/update"), &body),
        )
    }

    /// Running agents by plan index, with their pids.
    fn running(&self) -> Result<BTreeMap<usize, u32>, RolloutError> {
        let st = self.api(self.client.status(crate::client::DEFAULT_TIMEOUT))?;
        Ok(st
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.agent.state == "running")
            .filter_map(|(i, n)| n.agent.pid.map(|p| (i, p)))
            .collect())
    }

    fn node_state(&self, i: usize) -> Option<NodeState> {
        self.client
            .node_state(&self.plan.nodes[i].name, Duration::from_secs(2))
            .ok()
    }

    fn mates(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let c = cell_of(self.plan, i);
        (0..self.plan.nodes.len()).filter(move |j| *j != i && cell_of(self.plan, *j) == c)
    }

    /// Whether every node of `nodes` runs, sees its running cell-mates alive and is alive
    /// in their views.
    fn rejoined(&self, nodes: &[usize]) -> Result<bool, RolloutError> {
        let running = self.running()?;
        let alive_in = |s: &NodeState, id: usize| {
            s.members
                .iter()
                .any(|m| m.id as usize == id && m.state == "alive")
        };
        for &n in nodes {
            if !running.contains_key(&n) {
                return Ok(false);
            }
            let Some(mine) = self.node_state(n) else {
                return Ok(false);
            };
            for m in self.mates(n).filter(|m| running.contains_key(m)) {
                if !alive_in(&mine, m) {
                    return Ok(false);
                }
                match self.node_state(m) {
                    Some(theirs) if alive_in(&theirs, n) => {}
                    _ => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    /// The running agents' delivered app datagrams (`datagrams.app.delivered` of their
    /// `/state`), and their states.
    fn delivered(
        &self,
        running: &BTreeMap<usize, u32>,
    ) -> (BTreeMap<usize, u64>, BTreeMap<usize, NodeState>) {
        let mut counts = BTreeMap::new();
        let mut states = BTreeMap::new();
        for &i in running.keys() {
            let Ok(v) = self.client.get_json::<serde_json::Value>(
                &format!("/nodes/{}/state", self.plan.nodes[i].name),
                Duration::from_secs(2),
            ) else {
                continue;
            };
            counts.insert(
                i,
                v["counters"]["datagrams.app.delivered"]
                    .as_u64()
                    .unwrap_or(0),
            );
            if let Ok(s) = serde_json::from_value::<NodeState>(v) {
                states.insert(i, s);
            }
        }
        (counts, states)
    }

    /// One probe round: (sent, delivered, (node, cell-mate it sees dead) pairs).
    fn probe_round(&self) -> Result<Round, RolloutError> {
        let running = self.running()?;
        let (before, _) = self.delivered(&running);
        let mut sent = 0;
        for &a in running.keys() {
            for &b in running.keys().filter(|b| **b != a) {
                let (na, nb) = (&self.plan.nodes[a].name, &self.plan.nodes[b].name);
                if self
                    .client
                    .send_message(na, nb, PROBE, Duration::from_secs(2))
                    .is_ok()
                {
                    sent += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_secs_f64(self.state.gates.round_s));
        let (after, states) = self.delivered(&running);
        let delivered: u64 = after
            .iter()
            .map(|(i, v)| v.saturating_sub(before.get(i).copied().unwrap_or(0)))
            .sum();
        let mut dead = Vec::new();
        for (&i, s) in &states {
            for m in &s.members {
                let j = m.id as usize;
                if m.state == "dead" && running.contains_key(&j) && self.mates(i).any(|x| x == j) {
                    dead.push((i, j));
                }
            }
        }
        Ok((sent, delivered.min(sent), dead, states))
    }

    /// The causal gate's writes of a round: one key per running node of `nodes`, written
    /// there with `durability=cell`; the (writer, key, value) of each acknowledged one.
    fn causal_writes(
        &self,
        nodes: &[usize],
        round: u32,
    ) -> Result<Vec<(usize, String, String)>, RolloutError> {
        let running = self.running()?;
        let mut done = Vec::new();
        for &n in nodes.iter().filter(|n| running.contains_key(n)) {
            let name = &self.plan.nodes[n].name;
            let key = causal_key(name, round);
            let value = format!("release-{}-round-{round}", self.state.target.release);
            if let Ok((raw, _)) = self.client.kv_put(
                name,
                &key,
                &value,
                lightcone_core::kv::Durability::Cell,
                Duration::from_secs(5),
            ) {
                if raw.status == 200 {
                    done.push((n, key, value));
                }
            }
        }
        Ok(done)
    }

    /// Each acknowledged write of `writes` that a running cell-mate of its writer does not
    /// hold now: (writer, reader, key); and how many reads checked them.
    fn causal_reads(
        &self,
        writes: &[(usize, String, String)],
        running: &BTreeMap<usize, u32>,
    ) -> (Vec<(usize, usize, String)>, u64) {
        let mut missing = Vec::new();
        let mut reads = 0;
        for (w, key, value) in writes {
            for m in self.mates(*w).filter(|m| running.contains_key(m)) {
                let held = matches!(
                    self.client.kv_get(&self.plan.nodes[m].name, key, Duration::from_secs(2)),
                    Ok(crate::client::KvRead::Found(v)) if v.siblings.iter().any(|s| s == value)
                );
                reads += 1;
                if !held {
                    missing.push((*w, m, key.clone()));
                }
            }
        }
        (missing, reads)
    }

    /// The canary's detection probe (the canary is the stage that may take risks): crashes
    /// one updated tile that has an updated cell-mate, measures (emulated time) until a
    /// running cell-mate holds it suspect or dead, restarts it on the same build and waits
    /// for it to rejoin. `Ok(None)` with no such tile (nothing probed).
    fn detection_probe(
        &mut self,
        k: usize,
        nodes: &[usize],
    ) -> Result<Option<Fired>, RolloutError> {
        let running = self.running()?;
        let Some(&victim) = nodes.iter().find(|n| {
            running.contains_key(n)
                && self
                    .mates(**n)
                    .any(|m| nodes.contains(&m) && running.contains_key(&m))
        }) else {
            return Ok(None);
        };
        let name = self.plan.nodes[victim].name.clone();
        let mates: Vec<usize> = self
            .mates(victim)
            .filter(|m| running.contains_key(m))
            .collect();
        let ts = self.plan.time_scale.max(1e-9);
        let wait_s = 1.5 * DETECTION_BOUND_S / ts;
        self.api(self.client.crash(&name))?;
        let t0 = Instant::now();
        let mut detected = None;
        while t0.elapsed().as_secs_f64() < wait_s {
            let seen = mates.iter().any(|&m| {
                self.node_state(m).is_some_and(|s| {
                    s.members.iter().any(|x| {
                        x.id as usize == victim && (x.state == "suspect" || x.state == "dead")
                    })
                })
            });
            if seen {
                detected = Some(t0.elapsed().as_secs_f64() * ts);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.state.stages[k].detection_s = detected;
        self.save()?;
        self.api(self.client.restart(&name))?;
        if let Some(f) = judge_detection(&name, detected, wait_s * ts) {
            return Ok(Some(f));
        }
        let deadline = Instant::now() + Duration::from_secs_f64(self.state.gates.rejoin_s);
        while !self.rejoined(&[victim])? {
            if Instant::now() > deadline {
                return Ok(Some((
                    "rejoin",
                    format!(
                        "{name} not alive in its cell within {} s of its restart after the detection probe",
                        self.state.gates.rejoin_s
                    ),
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(None)
    }

    /// Deploys stage `k` and judges it; `Some` when a gate fired.
    fn stage(&mut self, k: usize, nodes: &[usize]) -> Result<Option<Fired>, RolloutError> {
        let g = self.state.gates;
        self.state.stages[k].status = StageStatus::Deploying;
        self.state.stages[k].deployed_at_s = Some(self.now_s());
        self.save()?;
        // In waves: each rejoins and refills before the next is replaced.
        for wave in self.waves(nodes) {
            if self.aborted() {
                return Ok(None);
            }
            for &n in &wave {
                let r = self.replace(&self.plan.nodes[n].name, true)?;
                tracing::info!(node = %r.node, pid = r.pid, "updated");
            }
            if let Err(fired) = self.settle(&wave) {
                return Ok(Some(fired));
            }
            self.state.stages[k].waves += 1;
            self.save()?;
        }
        self.state.stages[k].rejoined_at_s = Some(self.now_s());
        self.state.stages[k].status = StageStatus::Soaking;
        self.save()?;
        // Unjudged rounds: senders learn the restarted tiles' boots, routes settle.
        for _ in 0..WARMUP_ROUNDS {
            let (sent, delivered, _, _) = self.probe_round()?;
            self.state.stages[k].warmup_rounds += 1;
            if delivered == sent {
                break;
            }
        }
        // Soak.
        let pids = self.running()?;
        let rounds = ((g.soak_s / g.round_s).round() as u32).max(1);
        let mut outside_3sigma = BTreeSet::new();
        for round in 0..rounds {
            if self.aborted() {
                return Ok(None);
            }
            let writes = self.causal_writes(nodes, round)?;
            let (sent, delivered, dead, states) = self.probe_round()?;
            let now = self.running()?;
            let (missing, reads) = self.causal_reads(&writes, &now);
            let st = &mut self.state.stages[k];
            st.rounds += 1;
            st.causal_writes += writes.len() as u64;
            st.causal_reads += reads;
            st.probes_sent += sent;
            st.probes_delivered += delivered;
            let ratio = if sent == 0 {
                1.0
            } else {
                delivered as f64 / sent as f64
            };
            st.worst_round = Some(st.worst_round.map_or(ratio, |w| w.min(ratio)));
            self.save()?;
            if let Some((&i, _)) = pids.iter().find(|(i, p)| now.get(i) != Some(p)) {
                return Ok(Some((
                    "crash",
                    format!(
                        "agent of {} exited or restarted during the soak (bound 0)",
                        self.plan.nodes[i].name
                    ),
                )));
            }
            if ratio < g.delivery_min {
                return Ok(Some((
                    "delivery",
                    format!(
                        "{delivered} of {sent} probe datagrams delivered in a {} s round = {ratio:.4}, bound >= {}",
                        g.round_s, g.delivery_min
                    ),
                )));
            }
            if let Some((i, j)) = dead.first() {
                return Ok(Some((
                    "membership",
                    format!(
                        "{} sees its cell-mate {} dead during the soak (bound 0)",
                        self.plan.nodes[*i].name, self.plan.nodes[*j].name
                    ),
                )));
            }
            let judged = judge_causal(self.plan, &missing)
                .or_else(|| judge_time(self.plan, &states, &mut outside_3sigma))
                .or_else(|| judge_thermal(self.plan, &states, g.thermal_max));
            if judged.is_some() {
                return Ok(judged);
            }
        }
        if k == 0 {
            if let Some(f) = self.detection_probe(k, nodes)? {
                return Ok(Some(f));
            }
        }
        self.state.stages[k].status = StageStatus::Passed;
        self.save()?;
        Ok(None)
    }

    /// Rolls every node of `nodes` back to the previous build, in waves as a deployment
    /// (a rollback must not empty a cell either); their names. A wave that does not
    /// rejoin or refill in time does not stop the later ones.
    fn roll_back(&self, nodes: &[usize]) -> Result<Vec<String>, RolloutError> {
        let mut done = Vec::new();
        for wave in self.waves(nodes) {
            for &n in &wave {
                let r = self.replace(&self.plan.nodes[n].name, false)?;
                done.push(r.node);
            }
            if let Err((gate, why)) = self.settle(&wave) {
                tracing::warn!(%gate, %why, "rollback wave");
            }
        }
        Ok(done)
    }

    /// `nodes` in waves ([`lightcone_core::update::waves`]): at most `max(1, f)` of any
    /// one cell at once.
    fn waves(&self, nodes: &[usize]) -> Vec<Vec<usize>> {
        let tiles: Vec<(u32, (u16, u16, u16))> = nodes
            .iter()
            .map(|&n| (n as u32, cell_of(self.plan, n)))
            .collect();
        let mut sizes: BTreeMap<(u16, u16, u16), usize> = BTreeMap::new();
        for i in 0..self.plan.nodes.len() {
            *sizes.entry(cell_of(self.plan, i)).or_insert(0) += 1;
        }
        lightcone_core::update::waves(&tiles, |c| sizes.get(c).copied().unwrap_or(1))
            .into_iter()
            .map(|w| w.into_iter().map(|n| n as usize).collect())
            .collect()
    }

    /// Waits for a just-replaced wave to rejoin (within [`Gates::rejoin_s`]) and then to
    /// refill: each of its tiles must have seen every write its running cell-mates outside
    /// the wave had seen when it rejoined (`/state`'s `kv.writes`), within
    /// [`Gates::rejoin_s`] again. The gate and why when it does not.
    fn settle(&self, wave: &[usize]) -> Result<(), Fired> {
        let g = self.state.gates;
        let deadline = Instant::now() + Duration::from_secs_f64(g.rejoin_s);
        loop {
            match self.rejoined(wave) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(("rejoin", e.to_string())),
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = wave
                    .iter()
                    .map(|n| self.plan.nodes[*n].name.as_str())
                    .collect();
                return Err((
                    "rejoin",
                    format!(
                        "updated nodes {names:?} not all alive in their cells within {} s (bound {} s)",
                        g.rejoin_s, g.rejoin_s
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let running = self.running().map_err(|e| ("refill", e.to_string()))?;
        // Each running cell-mate outside the wave read once (a wave may hold several
        // tiles of one cell, which share their mates).
        let mut seen: BTreeMap<usize, BTreeMap<String, u64>> = BTreeMap::new();
        let mut want: BTreeMap<usize, BTreeMap<String, u64>> = BTreeMap::new();
        for &n in wave {
            let mut vv: BTreeMap<String, u64> = BTreeMap::new();
            for m in self
                .mates(n)
                .filter(|m| !wave.contains(m) && running.contains_key(m))
            {
                let writes = seen.entry(m).or_insert_with(|| {
                    self.node_state(m)
                        .and_then(|s| s.kv)
                        .map(|kv| kv.writes)
                        .unwrap_or_default()
                });
                for (k, c) in writes.iter() {
                    let e = vv.entry(k.clone()).or_insert(0);
                    *e = (*e).max(*c);
                }
            }
            want.insert(n, vv);
        }
        let deadline = Instant::now() + Duration::from_secs_f64(g.rejoin_s);
        loop {
            let short: Vec<&str> = want
                .iter()
                .filter(|(n, vv)| {
                    !self
                        .node_state(**n)
                        .and_then(|s| s.kv)
                        .is_some_and(|kv| kv.covers(vv))
                })
                .map(|(n, _)| self.plan.nodes[*n].name.as_str())
                .collect();
            if short.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err((
                    "refill",
                    format!(
                        "{short:?} did not hold their cell's writes within {} s of rejoining (bound 0 missing: the next wave would empty more of the cell than its writes survive)",
                        g.rejoin_s
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs every stage; the record's phase says how it ended.
    pub fn run(
        mut self,
        stages: &[Stage],
        mut say: impl FnMut(&str),
    ) -> Result<RolloutState, RolloutError> {
        let mut updated: Vec<usize> = Vec::new();
        for (k, stage) in stages.iter().enumerate() {
            say(&format!(
                "stage {} {}: updating {} node{}",
                k + 1,
                stage.name,
                stage.nodes.len(),
                if stage.nodes.len() == 1 { "" } else { "s" }
            ));
            let fired = match self.stage(k, &stage.nodes) {
                Ok(f) => f,
                Err(e) => {
                    self.state.phase = Phase::Failed;
                    self.state.note = Some(format!("stage {}: {e}", stage.name));
                    self.save()?;
                    return Err(e);
                }
            };
            updated.extend(stage.nodes.iter().copied());
            if self.aborted() {
                let back = self.roll_back(&updated)?;
                for st in &mut self.state.stages {
                    if st.status != StageStatus::Pending {
                        st.status = StageStatus::RolledBack;
                    }
                }
                self.state.phase = Phase::Aborted;
                self.state.note = Some(format!(
                    "aborted by `lightcone update abort` during stage {}: {} node{} rolled back at {:.2} s",
                    stage.name,
                    back.len(),
                    if back.len() == 1 { "" } else { "s" },
                    self.now_s()
                ));
                let _ = std::fs::remove_file(abort_path(self.dir));
                self.save()?;
                say(self.state.note.as_deref().unwrap_or_default());
                return Ok(self.state);
            }
            if let Some((gate, reason)) = fired {
                let detected = self.now_s();
                say(&format!(
                    "stage {}: gate {gate} fired ({reason}); rolling back",
                    stage.name
                ));
                let back = self.roll_back(&stage.nodes)?;
                let at = self.now_s();
                self.state.stages[k].status = StageStatus::RolledBack;
                self.state.halt = Some(HaltRecord {
                    stage: stage.name.into(),
                    gate: gate.into(),
                    reason,
                    detected_at_s: detected,
                    rolled_back_at_s: at,
                    time_to_rollback_s: at - detected,
                    rolled_back: back,
                });
                self.state.phase = Phase::Halted;
                self.save()?;
                return Ok(self.state);
            }
            let st = &self.state.stages[k];
            say(&format!(
                "stage {} {}: passed (rejoined at {:.2} s; delivered {}/{}, worst round {:.4})",
                k + 1,
                stage.name,
                st.rejoined_at_s.unwrap_or(0.0),
                st.probes_delivered,
                st.probes_sent,
                st.worst_round.unwrap_or(1.0)
            ));
        }
        self.state.phase = Phase::Complete;
        self.save()?;
        write_json(
            &releases(self.dir).join("current.json"),
            &Current {
                release: self.state.target.release,
                binary: Some(self.state.target.binary.clone()),
                sha256: Some(self.state.target.sha256.clone()),
            },
        )?;
        Ok(self.state)
    }
}

/// `update abort` when the rollout's process is gone: rolls back every node a stage began
/// to update, and records `aborted`.
pub fn abort_orphan(
    dir: &LabDir,
    plan: &Plan,
    client: &Client,
    mut s: RolloutState,
) -> Result<RolloutState, RolloutError> {
    let names: Vec<String> = s
        .stages
        .iter()
        .filter(|st| st.status != StageStatus::Pending)
        .flat_map(|st| st.nodes.clone())
        .collect();
    let runner = Runner::new(dir, plan, client, s.clone());
    let ids: Vec<usize> = names.iter().filter_map(|n| plan.node_index(n)).collect();
    let back = runner.roll_back(&ids)?;
    for st in &mut s.stages {
        if st.status != StageStatus::Pending {
            st.status = StageStatus::RolledBack;
        }
    }
    s.phase = Phase::Aborted;
    s.note = Some(format!(
        "aborted by `lightcone update abort` after its process {} was gone: {} node{} rolled back",
        s.pid,
        back.len(),
        if back.len() == 1 { "" } else { "s" }
    ));
    save(dir, &s)?;
    let _ = std::fs::remove_file(abort_path(dir));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        let topo = crate::topology::parse_str(yaml, "t.yaml").unwrap();
        crate::plan::plan(&topo)
    }

    const TWO_CLUSTERS: &str = "name: t\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 2, cells: 2, tiles: 3, authorities: 1 }\n    - { radius_au: 2.0, clusters: 1, cells: 1, tiles: 2 }\n";

    fn state(json: serde_json::Value) -> NodeState {
        let mut v = serde_json::json!({ "id": 0, "now_emulated_s": 1.0 });
        for (k, x) in json.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_thermal_gate_fires_above_its_bound_and_names_the_hottest_tile() {
        let p = plan(TWO_CLUSTERS);
        let mut st = BTreeMap::new();
        // Tiles without a thermal subsystem are not judged.
        st.insert(0, state(serde_json::json!({})));
        assert_eq!(judge_thermal(&p, &st, 1.0), None);
        st.insert(
            1,
            state(serde_json::json!({ "thermal": { "load_ratio": 0.7 } })),
        );
        st.insert(
            2,
            state(serde_json::json!({ "thermal": { "load_ratio": 1.02 } })),
        );
        assert_eq!(judge_thermal(&p, &st, 1.05), None);
        let (gate, why) = judge_thermal(&p, &st, 1.0).unwrap();
        assert_eq!(gate, "thermal");
        assert!(
            why.contains(&p.nodes[2].name) && why.contains("1.020"),
            "{why}"
        );
    }

    #[test]
    fn the_time_gate_forgives_one_round_outside_3_sigma_but_not_two() {
        let p = plan(TWO_CLUSTERS);
        let out = || {
            state(
                serde_json::json!({ "time": { "true_error_s": 0.5, "sigma_s": 0.01, "within_3sigma": false } }),
            )
        };
        let inside = || {
            state(
                serde_json::json!({ "time": { "true_error_s": 0.001, "sigma_s": 0.01, "within_3sigma": true } }),
            )
        };
        let mut before = BTreeSet::new();
        let round = |a: NodeState, b: NodeState| BTreeMap::from([(0usize, a), (1usize, b)]);
        assert_eq!(judge_time(&p, &round(out(), inside()), &mut before), None);
        // Node 0 back inside, node 1 out: each out once, not twice in a row.
        assert_eq!(judge_time(&p, &round(inside(), out()), &mut before), None);
        let (gate, why) = judge_time(&p, &round(inside(), out()), &mut before).unwrap();
        assert_eq!(gate, "time");
        assert!(
            why.contains(&p.nodes[1].name) && why.contains("two rounds"),
            "{why}"
        );
        // Without a time layer nothing is judged.
        let none = BTreeMap::from([(0usize, state(serde_json::json!({})))]);
        assert_eq!(judge_time(&p, &none, &mut BTreeSet::from([0])), None);
    }

    #[test]
    fn the_detection_gate_holds_the_spec_s_ten_seconds() {
        assert_eq!(judge_detection("t0", Some(2.5), 15.0), None);
        let (gate, why) = judge_detection("t0", Some(10.0), 15.0).unwrap();
        assert_eq!(gate, "detection");
        assert!(
            why.contains("after 10.00 s") && why.contains("< 10 s"),
            "{why}"
        );
        let (_, why) = judge_detection("t0", None, 15.0).unwrap();
        assert!(why.contains("within 15.0 s"), "{why}");
    }

    #[test]
    fn the_causal_gate_fires_on_one_missing_write() {
        let p = plan(TWO_CLUSTERS);
        assert_eq!(judge_causal(&p, &[]), None);
        let (gate, why) = judge_causal(&p, &[(0, 1, causal_key("a", 3))]).unwrap();
        assert_eq!(gate, "causal");
        assert!(
            why.starts_with("1 of the round's") && why.contains("lightcone-rollout/a/3"),
            "{why}"
        );
    }

    #[test]
    fn stages_widen_from_one_cell_to_everything_and_cover_each_node_once() {
        let p = plan(TWO_CLUSTERS);
        let s = stages(&p, None).unwrap();
        let names: Vec<_> = s.iter().map(|s| (s.name, s.nodes.len())).collect();
        // 3 tiles of l0c0k0; 3 more of l0c0; the other cluster's 6 and the authority; the
        // second layer's 2.
        assert_eq!(
            names,
            [("canary", 3), ("cluster", 3), ("layer", 7), ("all", 2)]
        );
        let all: BTreeSet<usize> = s.iter().flat_map(|s| s.nodes.clone()).collect();
        assert_eq!(all.len(), p.nodes.len());
        for n in &s[0].nodes {
            assert!(
                p.nodes[*n].name.starts_with("l0c0k0t"),
                "{}",
                p.nodes[*n].name
            );
        }
        let s = stages(&p, Some("l0c1k1")).unwrap();
        assert!(s[0]
            .nodes
            .iter()
            .all(|n| p.nodes[*n].name.starts_with("l0c1k1t")));
        assert_eq!(s[1].nodes.len(), 3, "the rest of cluster l0c1");
        let e = stages(&p, Some("l0c9k0")).unwrap_err().to_string();
        assert!(
            e.contains("no cell \"l0c9k0\"") && e.contains("l0c0k0, l0c0k1, l0c1k0"),
            "{e}"
        );
        let text = render_stages(&p, &stages(&p, None).unwrap());
        assert!(
            text.contains("stage 1 canary      3 nodes  (1 cell: l0c0k0)"),
            "{text}"
        );
        assert!(text.ends_with("4 stages, 15 of 15 nodes\n"), "{text}");
    }

    #[test]
    fn gates_refuse_nonsense_bounds() {
        assert!(Gates::default().check().is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let g = Gates {
                thermal_max: bad,
                ..Gates::default()
            };
            assert!(g.check().unwrap_err().contains("--thermal-max"));
        }
        // A record written before the thermal gate existed reads with its default.
        let mut v = serde_json::to_value(Gates::default()).unwrap();
        v.as_object_mut().unwrap().remove("thermal_max");
        let back: Gates = serde_json::from_value(v).unwrap();
        assert_eq!(back.thermal_max, 1.0);
        for g in [
            Gates {
                soak_s: 0.0,
                ..Gates::default()
            },
            Gates {
                round_s: 20.0,
                ..Gates::default()
            },
            Gates {
                delivery_min: 1.5,
                ..Gates::default()
            },
            Gates {
                rejoin_s: f64::NAN,
                ..Gates::default()
            },
        ] {
            assert!(g.check().is_err(), "{g:?}");
        }
    }

    fn lab() -> (tempfile::TempDir, LabDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LabDir {
            lab: "r".into(),
            path: tmp.path().to_path_buf(),
        };
        std::fs::create_dir(dir.keys()).unwrap();
        let p = plan(TWO_CLUSTERS);
        authority::generate(&dir, &p, &mut rand::rngs::OsRng).unwrap();
        (tmp, dir)
    }

    const NOW: u64 = 1_800_000_000 * 1_000_000_000;

    #[test]
    fn a_release_needs_t_shares_and_a_newer_number_and_a_refusal_changes_nothing() {
        let (_t, dir) = lab();
        let g = Gates::default();
        let mut rng = rand::rngs::OsRng;
        assert_eq!(next_release(&dir).unwrap(), 1);
        // Fewer than t (3) shares: refused, nothing written.
        let m1 = manifest(1, [1; 32], 3, &g);
        let e = release(&dir, &m1, Some(2), NOW, &mut rng).unwrap_err();
        assert!(
            e.to_string()
                .contains("signing refused: only 2 signers, the threshold is 3"),
            "{e}"
        );
        assert!(!releases(&dir).exists(), "nothing written");
        let (m, how) = release(&dir, &m1, None, NOW, &mut rng).unwrap();
        assert_eq!((m.release, m.compat), (1, (2, 3)));
        assert!(how.contains("signed by 3 of 5 authority shares"), "{how}");
        assert_eq!(next_release(&dir).unwrap(), 2);
        let log_before = std::fs::read(releases(&dir).join("log.json")).unwrap();
        // The same release number again, and an older one: refused, nothing written.
        for old in [1, 0] {
            let e = release(&dir, &manifest(old, [2; 32], 3, &g), None, NOW, &mut rng)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("release refused:") && e.ends_with("nothing was changed"),
                "{e}"
            );
        }
        assert_eq!(
            std::fs::read(releases(&dir).join("log.json")).unwrap(),
            log_before
        );
        assert_eq!(next_release(&dir).unwrap(), 2);
        // Release 2: accepted, logged after release 1.
        let (_, how) = release(&dir, &manifest(2, [2; 32], 3, &g), None, NOW, &mut rng).unwrap();
        assert!(how.ends_with("log entry 1"), "{how}");
    }

    #[test]
    fn a_bundle_not_signed_by_the_threshold_is_refused_by_the_verifier() {
        let (_t, dir) = lab();
        let mut rng = rand::rngs::OsRng;
        let key = log_key(&dir).unwrap();
        // A coalition below t can at best sign with a key of its own (FROST will not
        // aggregate fewer than t shares): a valid signature, but not the group's.
        let (own_shares, own) =
            lightcone_core::trust::threshold::dkg(&[1, 2, 3], 2, &mut rng).unwrap();
        let signers: Vec<_> = own_shares.values().take(2).collect();
        let m = manifest(1, [1; 32], 3, &Gates::default());
        let exp = NOW + 1_000_000_000_000;
        let targets = release::sign_role(
            &own,
            &signers,
            release::Role::Targets,
            1,
            exp,
            m.encode(),
            &mut rng,
        )
        .unwrap();
        let snapshot = release::sign_role(
            &own,
            &signers,
            release::Role::Snapshot,
            1,
            exp,
            targets.pin(),
            &mut rng,
        )
        .unwrap();
        let timestamp = release::sign_role(
            &own,
            &signers,
            release::Role::Timestamp,
            1,
            exp,
            snapshot.pin(),
            &mut rng,
        )
        .unwrap();
        let mut log = Log::new();
        let index = log
            .append(&release::approval_entry(&targets).unwrap())
            .unwrap();
        let b = Bundle {
            timestamp,
            snapshot,
            targets,
            head: log.head(1, NOW, &key),
            index,
            proof: log.prove_inclusion(index).unwrap(),
        };
        let e = accept(&dir, &b, &key.verifying_key(), NOW).unwrap_err();
        assert!(
            matches!(e, RolloutError::Refused(ReleaseError::BadSignature(_))),
            "{e}"
        );
        assert!(
            !releases(&dir).join("trusted.json").exists(),
            "nothing changed"
        );
    }

    #[test]
    fn a_running_rollout_whose_process_lives_refuses_another() {
        let (_t, dir) = lab();
        check_idle(&dir).unwrap();
        let me = std::process::id();
        let mut s = RolloutState {
            lab: "r".into(),
            phase: Phase::Running,
            pid: me,
            pid_start: crate::state::process_start_time(me).unwrap_or(0),
            started_unix_s: 0.0,
            target: Target {
                release: 1,
                protocol: 3,
                compat: (2, 3),
                binary: "/x".into(),
                sha256: "00".into(),
            },
            previous: Current::default(),
            signed: String::new(),
            gates: Gates::default(),
            stages: vec![],
            halt: None,
            note: None,
        };
        save(&dir, &s).unwrap();
        let e = check_idle(&dir).unwrap_err().to_string();
        assert!(e.contains("a rollout is already running in lab r"), "{e}");
        // Its process gone: not running any more (abort rolls it back).
        s.pid_start += 1;
        save(&dir, &s).unwrap();
        check_idle(&dir).unwrap();
        assert!(load(&dir).unwrap().unwrap().render().contains("is gone"));
        // Binaries: missing and not executable.
        let e = check_binary(Path::new("/nonexistent/agent"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--build /nonexistent/agent: No such file"),
            "{e}"
        );
        let f = dir.path.join("plain");
        std::fs::write(&f, b"x").unwrap();
        let e = check_binary(&f).unwrap_err().to_string();
        assert!(
            e.contains("is not executable (chmod +x it); nothing was changed"),
            "{e}"
        );
    }
}
