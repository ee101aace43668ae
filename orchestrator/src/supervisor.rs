//! The lab's supervisor: the one process that owns a running lab. It builds the kernel
//! objects from the plan, runs the link engine (the wire engine's event loop lives here),
//! starts and restarts agents, serves the control API, `/metrics` and the dashboard on
//! loopback, and tears everything down on SIGINT/SIGTERM or `POST /api/shutdown`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::agents::{agent_exchange, agent_request, AgentState, Agents};
use crate::apply::{self, Layout};
use crate::kernel::{self, Netns};
use crate::link::metrics::{self as link_metrics, NetemSample};
use crate::link::wire::{Direction, PortSpec, WireEngine, WireMetrics};
use crate::link::{netem, LinkModel};
use crate::plan::{self, Plan};
use crate::state::{process_start_time, Entry, LabDir, Ledger};
use crate::topology;

/// Which link engine carries the lab's links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// netem if the kernel has it, else wire.
    Auto,
    /// The kernel's netem qdisc on each veth end.
    Netem,
    /// lightcone's userspace emulator (AF_PACKET), works on any kernel.
    Wire,
    /// Plain veth pairs, no shaping at all (for bring-up benchmarks and debugging).
    None,
}

/// What `lightcone up` asks of a supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpOptions {
    pub topology: PathBuf,
    pub engine: EngineChoice,
    pub agents: bool,
    /// Port of the API/dashboard on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Start a Prometheus server scraping the lab (see `telemetry`).
    #[serde(default)]
    pub prometheus: bool,
}

/// Written to `supervisor.json` once the lab is up; `status` and the CLI read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorInfo {
    pub pid: u32,
    pub start_time: u64,
    pub api_url: String,
    pub engine: EngineChoice,
    pub engine_reason: String,
    /// Per-lab token the dashboard's controls must present.
    pub token: String,
}

impl SupervisorInfo {
    pub fn read(dir: &LabDir) -> Option<SupervisorInfo> {
        serde_json::from_slice(&std::fs::read(dir.supervisor_path()).ok()?).ok()
    }
    pub fn alive(&self) -> bool {
        crate::state::same_process(self.pid, self.start_time)
    }
}

enum EngineRt {
    Wire(WireEngine),
    Netem,
    None,
}

/// Runtime state of one link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRuntime {
    pub a_to_b: LinkModel,
    pub b_to_a: LinkModel,
    pub up: bool,
}

pub struct Lab {
    pub plan: Plan,
    pub dir: LabDir,
    ledger: Ledger,
    engine: EngineRt,
    pub engine_choice: EngineChoice,
    pub engine_reason: String,
    pub agents: Option<Agents>,
    pub registry: prometheus::Registry,
    pub links: Vec<LinkRuntime>,
    pub started: Instant,
    pub token: String,
    pub api_url: String,
    /// Fault and control events, newest last (bounded).
    pub events: std::collections::VecDeque<LabEvent>,
    /// Base URL of the lab's Prometheus server, when `--prometheus` started one.
    pub prometheus_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabEvent {
    /// Seconds since the lab came up (real).
    pub t_s: f64,
    pub kind: String,
    pub detail: String,
}

const MAX_EVENTS: usize = 10_000;

/// Decide the engine for `auto`, with the reason shown to the user.
pub fn resolve_engine(choice: EngineChoice) -> (EngineChoice, String) {
    match choice {
        EngineChoice::Auto => {
            let a = netem::kernel_has_netem();
            if a.is_available() {
                (EngineChoice::Netem, format!("auto: {a}"))
            } else {
                (
                    EngineChoice::Wire,
                    format!("auto: {a}; using the userspace wire engine"),
                )
            }
        }
        EngineChoice::Netem => (EngineChoice::Netem, "asked for netem".into()),
        EngineChoice::Wire => (EngineChoice::Wire, "asked for wire".into()),
        EngineChoice::None => (EngineChoice::None, "asked for unshaped links".into()),
    }
}

/// Why `up` refuses a lab that already has a state directory.
pub fn check_not_up(lab: &str) -> Result<(), String> {
    let dir = LabDir::new(lab).map_err(|e| e.to_string())?;
    if !dir.exists() {
        return Ok(());
    }
    match SupervisorInfo::read(&dir) {
        Some(info) if info.alive() => Err(format!(
            "lab {lab} is already up (supervisor pid {}, {}); run `lightcone down {lab}` first",
            info.pid, info.api_url
        )),
        _ => Err(format!(
            "lab {lab} has leftovers of an earlier run whose supervisor is gone ({}); run `lightcone down {lab}` to remove them",
            dir.path.display()
        )),
    }
}

impl Lab {
    /// Per-direction counters of the wire engine (empty for netem and unshaped links).
    pub fn wire_stats(&self) -> Vec<crate::link::wire::LinkStats> {
        match &self.engine {
            EngineRt::Wire(w) => w.stats(),
            _ => Vec::new(),
        }
    }

    fn event(&mut self, kind: &str, detail: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(LabEvent {
            t_s: self.started.elapsed().as_secs_f64(),
            kind: kind.into(),
            detail,
        });
    }

    fn link_index(&self, a: &str, b: &str) -> Result<usize, ApiError> {
        for n in [a, b] {
            if self.plan.node_index(n).is_none() {
                return Err(ApiError::not_found(format!(
                    "lab {} has no node {n:?}",
                    self.plan.lab
                )));
            }
        }
        self.plan
            .link_between(a, b)
            .map(|l| l.index)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "lab {} has no link between {a} and {b}",
                    self.plan.lab
                ))
            })
    }

    fn node(&self, name: &str) -> Result<usize, ApiError> {
        self.plan.node_index(name).ok_or_else(|| {
            ApiError::not_found(format!("lab {} has no node {name:?}", self.plan.lab))
        })
    }
}

/// A change to a link's model; `None` leaves a parameter as it is. Units as in topologies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinkChange {
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss: Option<String>,
    pub rate: Option<String>,
    pub duplicate: Option<String>,
    pub corrupt: Option<String>,
    pub reorder: Option<String>,
}

impl LinkChange {
    /// Apply to a model; errors name the parameter and what would be valid.
    pub fn apply_to(&self, m: &mut LinkModel) -> Result<(), String> {
        use crate::link::model::LossModel;
        use topology::units;
        let f = |name: &str, e: String| format!("--{name}: {e}");
        if let Some(d) = &self.delay {
            m.delay_ns = units::duration_ns(d).map_err(|e| f("delay", e))?;
        }
        if let Some(d) = &self.jitter {
            m.jitter_ns = units::duration_ns(d).map_err(|e| f("jitter", e))?;
        }
        if let Some(l) = &self.loss {
            let p = units::percent(l).map_err(|e| f("loss", e))?;
            m.loss = if p == 0.0 {
                LossModel::None
            } else {
                LossModel::Random {
                    probability: p,
                    correlation: 0.0,
                }
            };
        }
        if let Some(r) = &self.rate {
            m.rate_bps = if r == "unlimited" {
                None
            } else {
                Some(units::rate_bps(r).map_err(|e| f("rate", e))?)
            };
        }
        if let Some(p) = &self.duplicate {
            m.duplicate.probability = units::percent(p).map_err(|e| f("duplicate", e))?;
        }
        if let Some(p) = &self.corrupt {
            m.corrupt.probability = units::percent(p).map_err(|e| f("corrupt", e))?;
        }
        if let Some(p) = &self.reorder {
            m.reorder.probability = units::percent(p).map_err(|e| f("reorder", e))?;
        }
        Ok(())
    }
}

/// An API error: status and a message for a person.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn not_found(m: String) -> Self {
        ApiError(StatusCode::NOT_FOUND, m)
    }
    fn bad(m: String) -> Self {
        ApiError(StatusCode::BAD_REQUEST, m)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Status of a lab, as `lightcone status --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabStatus {
    pub name: String,
    pub state: String,
    pub engine: EngineChoice,
    pub engine_reason: String,
    pub time_scale: f64,
    pub seed: u64,
    pub supervisor_pid: u32,
    pub uptime_s: f64,
    pub api_url: String,
    pub dashboard_url: String,
    pub metrics_url: String,
    /// Prometheus server of the lab (`up --prometheus`).
    #[serde(default)]
    pub prometheus_url: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub links: Vec<LinkStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub netns: String,
    pub role: lightcone_agent::config::Role,
    pub addr: String,
    pub agent: AgentStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub state: String,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub a: String,
    pub b: String,
    pub up: bool,
    pub delay_s: f64,
    pub jitter_s: f64,
    pub loss: f64,
    pub rate_bps: Option<u64>,
}

pub fn status_of(lab: &mut Lab) -> LabStatus {
    let plan = &lab.plan;
    let mut nodes = Vec::with_capacity(plan.nodes.len());
    for (i, n) in plan.nodes.iter().enumerate() {
        let (state, pid) = match lab.agents.as_mut() {
            Some(a) => a.state(i),
            None => (AgentState::None, None),
        };
        nodes.push(NodeStatus {
            name: n.name.clone(),
            netns: n.netns.clone(),
            role: n.role,
            addr: n.addr.to_string(),
            agent: AgentStatus {
                state: serde_json::to_value(state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                pid,
            },
        });
    }
    let links = plan
        .links
        .iter()
        .zip(&lab.links)
        .map(|(l, rt)| LinkStatus {
            name: l.name.clone(),
            a: plan.nodes[l.a.node].name.clone(),
            b: plan.nodes[l.b.node].name.clone(),
            up: rt.up,
            delay_s: rt.a_to_b.delay_ns as f64 / 1e9,
            jitter_s: rt.a_to_b.jitter_ns as f64 / 1e9,
            loss: match rt.a_to_b.loss {
                crate::link::model::LossModel::None => 0.0,
                crate::link::model::LossModel::Random { probability, .. } => probability,
                crate::link::model::LossModel::GilbertElliott {
                    p,
                    r,
                    loss_bad,
                    loss_good,
                } => {
                    let bad = p / (p + r);
                    bad * loss_bad + (1.0 - bad) * loss_good
                }
            },
            rate_bps: rt.a_to_b.rate_bps,
        })
        .collect();
    LabStatus {
        name: plan.lab.clone(),
        state: "up".into(),
        engine: lab.engine_choice,
        engine_reason: lab.engine_reason.clone(),
        time_scale: plan.time_scale,
        seed: plan.seed,
        supervisor_pid: std::process::id(),
        uptime_s: lab.started.elapsed().as_secs_f64(),
        api_url: lab.api_url.clone(),
        dashboard_url: format!("{}/", lab.api_url),
        metrics_url: format!("{}/metrics", lab.api_url),
        prometheus_url: lab.prometheus_url.clone(),
        nodes,
        links,
    }
}

type Shared = Arc<Mutex<Lab>>;

#[derive(Clone)]
struct AppState {
    lab: Shared,
    shutdown: Arc<tokio::sync::Notify>,
    /// Host/Origin/token checks in front of every route (see [`crate::http`]).
    guard: Arc<crate::http::Guard>,
}

async fn api_status(State(s): State<AppState>) -> Json<LabStatus> {
    Json(status_of(&mut s.lab.lock().expect("lab lock")))
}

async fn api_link_set(
    State(s): State<AppState>,
    UrlPath((a, b)): UrlPath<(String, String)>,
    Json(change): Json<LinkChange>,
) -> Result<Json<LinkRuntime>, ApiError> {
    let (i, snapshot) = {
        let mut lab = s.lab.lock().expect("lab lock");
        let i = lab.link_index(&a, &b)?;
        if matches!(lab.engine, EngineRt::None)
            && (change.delay.is_some()
                || change.loss.is_some()
                || change.jitter.is_some()
                || change.rate.is_some())
        {
            return Err(ApiError::bad(format!("lab {} runs unshaped links (--link-engine none); bring it up with --link-engine wire or netem to shape links", lab.plan.lab)));
        }
        let mut rt = lab.links[i].clone();
        change.apply_to(&mut rt.a_to_b).map_err(ApiError::bad)?;
        change.apply_to(&mut rt.b_to_a).map_err(ApiError::bad)?;
        lab.links[i] = rt.clone();
        lab.event(
            "link_set",
            format!(
                "{a}--{b} {}",
                serde_json::to_string(&change).unwrap_or_default()
            ),
        );
        (i, rt)
    };
    push(&s, i).await?;
    Ok(Json(snapshot))
}

async fn push(s: &AppState, i: usize) -> Result<(), ApiError> {
    // The engine call may await netlink; hold the lock only to copy what it needs.
    let lab = s.lab.clone();
    let fut = {
        let guard = lab.lock().expect("lab lock");
        // Wire engine calls are synchronous and quick; netlink calls need awaits, below.
        if let EngineRt::Wire(w) = &guard.engine {
            let (l, rt) = (&guard.plan.links[i], &guard.links[i]);
            w.set_model(&l.name, Some(rt.a_to_b.clone()), Some(rt.b_to_a.clone()))
                .map_err(ApiError::internal)?;
            w.set_up(&l.name, rt.up).map_err(ApiError::internal)?;
            return Ok(());
        }
        let plan = guard.plan.clone();
        let rt = guard.links[i].clone();
        let netem = matches!(guard.engine, EngineRt::Netem);
        async move {
            let l = &plan.links[i];
            for (end, peer, model) in [(&l.a, &l.b, &rt.a_to_b), (&l.b, &l.a, &rt.b_to_a)] {
                let ns = Netns::open(&plan.nodes[end.node].netns).map_err(ApiError::internal)?;
                let h = kernel::handle_in(Some(&ns)).map_err(ApiError::internal)?;
                let idx = kernel::ifindex(&h, &end.ifname)
                    .await
                    .map_err(ApiError::internal)?;
                if netem {
                    netem::apply(&h, idx, model, plan.time_scale)
                        .await
                        .map_err(ApiError::internal)?;
                }
                if rt.up {
                    kernel::set_up(&h, idx).await.map_err(ApiError::internal)?;
                    // Taking the interface down flushed its permanent neighbour entry.
                    kernel::netlink::add_neighbour(&h, idx, peer.ip, peer.mac.0).await
                } else {
                    kernel::netlink::set_down(&h, idx).await
                }
                .map_err(ApiError::internal)?;
            }
            Ok::<(), ApiError>(())
        }
    };
    fut.await
}

async fn api_link_state(
    State(s): State<AppState>,
    UrlPath((a, b, what)): UrlPath<(String, String, String)>,
) -> Result<Json<LinkRuntime>, ApiError> {
    let up = match what.as_str() {
        "up" => true,
        "down" => false,
        _ => {
            return Err(ApiError::not_found(format!(
                "no link action {what:?}; use up or down"
            )))
        }
    };
    let (i, rt) = {
        let mut lab = s.lab.lock().expect("lab lock");
        let i = lab.link_index(&a, &b)?;
        lab.links[i].up = up;
        lab.event(
            if up { "link_up" } else { "link_down" },
            format!("{a}--{b}"),
        );
        (i, lab.links[i].clone())
    };
    push(&s, i).await?;
    Ok(Json(rt))
}

async fn api_node_fault(
    State(s): State<AppState>,
    UrlPath((node, what)): UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut guard = s.lab.lock().expect("lab lock");
    let lab = &mut *guard;
    let id = lab.node(&node)?;
    let Some(agents) = lab.agents.as_mut() else {
        return Err(ApiError::bad(format!(
            "lab {} runs without agents (--no-agents)",
            lab.plan.lab
        )));
    };
    match what.as_str() {
        "crash" => {
            // Crashing a node that is not running injects nothing: say so, so a scenario
            // that meant to crash it fails instead of measuring a fault that never was.
            if !agents.kill(id) {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("{node}'s agent is not running: nothing to crash (restart it first)"),
                ));
            }
            lab.event("crash", node.clone());
            Ok(Json(
                serde_json::json!({ "node": node, "was_running": true }),
            ))
        }
        "restart" => {
            let pid = agents
                .start(&lab.plan, id, &lab.dir, &mut lab.ledger)
                .map_err(ApiError::internal)?;
            lab.event("restart", node.clone());
            Ok(Json(serde_json::json!({ "node": node, "pid": pid })))
        }
        _ => Err(ApiError::not_found(format!(
            "no node action {what:?}; use crash or restart"
        ))),
    }
}

/// `POST /api/nodes/{node}/clock`: a clock fault (body: the agent's
/// [`ClockFaultRequest`](lightcone_agent::config::ClockFaultRequest) JSON), checked here and
/// forwarded to the node's agent (`POST /clock`).
async fn api_node_clock(
    State(s): State<AppState>,
    UrlPath(node): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: lightcone_agent::config::ClockFaultRequest = serde_json::from_slice(&body)
        .map_err(|e| {
            ApiError::bad(format!(
                "body must be JSON with one of step_ns, drift_ppb, drift, serve_bias_ns, pulsar_loss: {e}"
            ))
        })?;
    let fault = req.to_fault().map_err(ApiError::bad)?;
    let body = serde_json::to_vec(&req).unwrap_or_default();
    forward_node_fault(&s, &node, "/clock", body).await?;
    s.lab
        .lock()
        .expect("lab lock")
        .event("clock", format!("{node} {fault:?}"));
    let reply = serde_json::json!({ "node": node, "injected": fault });
    Ok(Json(reply).into_response())
}

/// `POST /api/nodes/{node}/byzantine`: `{"behaviour": [...]}` (any of
/// [`Byzantine::BEHAVIOURS`](lightcone_agent::node::Byzantine::BEHAVIOURS); `[]` makes the
/// node honest again), checked here and forwarded to the node's agent.
async fn api_node_byzantine(
    State(s): State<AppState>,
    UrlPath(node): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b = lightcone_agent::config::ByzantineRequest::parse(&body).map_err(ApiError::bad)?;
    let body =
        serde_json::to_vec(&serde_json::json!({ "behaviour": b.names() })).unwrap_or_default();
    forward_node_fault(&s, &node, "/byzantine", body).await?;
    let names = b.names();
    s.lab.lock().expect("lab lock").event(
        "byzantine",
        if names.is_empty() {
            format!("{node} honest again")
        } else {
            format!("{node} {}", names.join(","))
        },
    );
    Ok(Json(serde_json::json!({ "node": node, "behaviour": names })).into_response())
}

/// Forwards a checked fault request to `node`'s agent (`POST path`); the agent's refusal
/// comes back with its status and words.
async fn forward_node_fault(
    s: &AppState,
    node: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(), ApiError> {
    let sock = {
        let lab = s.lab.lock().expect("lab lock");
        let id = lab.node(node)?;
        if lab.agents.is_none() {
            return Err(ApiError::bad(format!(
                "lab {} runs without agents (--no-agents)",
                lab.plan.lab
            )));
        }
        plan::agent_socket(&lab.dir.path, id)
    };
    let (status, reply) = agent_request(
        &sock,
        hyper::Method::POST,
        path,
        body,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("agent {node}: {e}")))?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_success() {
        Ok(())
    } else {
        Err(ApiError(
            status,
            format!("agent {node}: {}", String::from_utf8_lossy(&reply).trim()),
        ))
    }
}

/// `POST /api/partition`: take a set of links down (or, with `heal`, up) as one event.
/// Every link is resolved before anything changes, so a bad name changes nothing.
#[derive(Debug, Clone, Deserialize)]
pub struct Partition {
    pub links: Vec<(String, String)>,
    #[serde(default)]
    pub heal: bool,
}

async fn api_partition(
    State(s): State<AppState>,
    Json(p): Json<Partition>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let idx = {
        let mut lab = s.lab.lock().expect("lab lock");
        let idx = p
            .links
            .iter()
            .map(|(a, b)| lab.link_index(a, b))
            .collect::<Result<Vec<_>, _>>()?;
        for &i in &idx {
            lab.links[i].up = p.heal;
        }
        let names: Vec<String> = p.links.iter().map(|(a, b)| format!("{a}--{b}")).collect();
        lab.event(if p.heal { "heal" } else { "partition" }, names.join(" "));
        idx
    };
    for &i in &idx {
        push(&s, i).await?;
    }
    Ok(Json(
        serde_json::json!({ "links": idx.len(), "up": p.heal }),
    ))
}

pub use crate::http::TOKEN_HEADER;

async fn api_shutdown(State(s): State<AppState>) -> Json<serde_json::Value> {
    s.shutdown.notify_one();
    Json(serde_json::json!({ "shutting_down": true }))
}

/// Merge Prometheus text expositions so each metric family appears once.
pub fn merge_expositions(texts: &[String]) -> String {
    let mut fams: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for t in texts {
        let mut current = String::new();
        for line in t.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split_whitespace().next().unwrap_or("").to_string();
                let e = fams.entry(name.clone()).or_default();
                if !e.0.iter().any(|h| h == line) && e.0.len() < 2 {
                    e.0.push(line.to_string());
                }
                current = name;
            } else if !line.is_empty() && !line.starts_with('#') {
                fams.entry(current.clone())
                    .or_default()
                    .1
                    .push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for (_, (head, samples)) in fams {
        for h in head {
            out.push_str(&h);
            out.push('\n');
        }
        for s in samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}

/// Read every link end's netem root qdisc, in its node's namespace (one netlink socket per
/// node, nodes read concurrently). An end that cannot be read (interface or qdisc gone in
/// a race with teardown) is left out of this scrape and logged.
async fn netem_samples(plan: &Plan, links: &[LinkRuntime]) -> Vec<NetemSample> {
    // node → (link, interface, direction its egress carries, configured real delay)
    let mut by_node: BTreeMap<usize, Vec<(usize, &str, Direction, f64)>> = BTreeMap::new();
    for (l, rt) in plan.links.iter().zip(links) {
        for (end, d, m) in [
            (&l.a, Direction::AToB, &rt.a_to_b),
            (&l.b, Direction::BToA, &rt.b_to_a),
        ] {
            let delay_s = m.delay_ns as f64 / 1e9 / plan.time_scale;
            by_node
                .entry(end.node)
                .or_default()
                .push((l.index, &end.ifname, d, delay_s));
        }
    }
    let reads = by_node.into_iter().map(|(node, ends)| async move {
        let netns = &plan.nodes[node].netns;
        let h = match Netns::open(netns).and_then(|ns| kernel::handle_in(Some(&ns))) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("netem stats: namespace {netns}: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (l, ifname, direction, configured_delay_s) in ends {
            let stats = match kernel::ifindex(&h, ifname).await {
                Ok(idx) => netem::stats(&h, idx).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match stats {
                Ok(stats) => out.push(NetemSample {
                    link: plan.links[l].name.clone(),
                    direction,
                    stats,
                    configured_delay_s,
                }),
                Err(e) => tracing::warn!("netem stats: {netns} {ifname}: {e}"),
            }
        }
        out
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The supervisor's own metric families: its registry (the wire engine's series) and, for a
/// netem lab, the link series read from the kernel's qdiscs now.
async fn own_families(s: &AppState) -> Vec<prometheus::proto::MetricFamily> {
    let (mut fams, netem) = {
        let lab = s.lab.lock().expect("lab lock");
        let netem =
            matches!(lab.engine, EngineRt::Netem).then(|| (lab.plan.clone(), lab.links.clone()));
        (lab.registry.gather(), netem)
    };
    if let Some((plan, links)) = netem {
        let samples = netem_samples(&plan, &links).await;
        fams.extend(link_metrics::netem_families(&plan.lab, &samples));
    }
    fams
}

async fn metrics_all(State(s): State<AppState>) -> Response {
    let own = link_metrics::render(&own_families(&s).await);
    let sockets: Vec<PathBuf> = {
        let lab = s.lab.lock().expect("lab lock");
        (0..lab.plan.nodes.len())
            .map(|i| plan::agent_socket(&lab.dir.path, i))
            .filter(|_| lab.agents.is_some())
            .collect()
    };
    let mut texts = vec![own];
    let reqs = sockets.iter().map(|p| {
        agent_request(
            p,
            hyper::Method::GET,
            "/metrics",
            Vec::new(),
            Duration::from_millis(500),
        )
    });
    for (status, body) in futures::future::join_all(reqs).await.into_iter().flatten() {
        if status == 200 {
            texts.push(String::from_utf8_lossy(&body).into_owned());
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        merge_expositions(&texts),
    )
        .into_response()
}

/// `GET /metrics/links`: only the supervisor's own series (link engine series: the wire
/// engine's registry, or a netem lab's qdisc counters), for the Prometheus job that must
/// not see agent series twice.
async fn metrics_links(State(s): State<AppState>) -> Response {
    let text = link_metrics::render(&own_families(&s).await);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn node_proxy(
    State(s): State<AppState>,
    UrlPath((node, what)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let path = match what.as_str() {
        "metrics" => "/metrics",
        "state" => "/state",
        _ => return Err(ApiError::not_found(format!("no node resource {what:?}"))),
    };
    proxy_to_agent(
        &s,
        &node,
        hyper::Method::GET,
        path,
        Vec::new(),
        Duration::from_secs(2),
    )
    .await
}

/// Forwards one request to `node`'s agent and answers with the agent's status, content type
/// and body, unchanged.
async fn proxy_to_agent(
    s: &AppState,
    node: &str,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Response, ApiError> {
    let sock = {
        let lab = s.lab.lock().expect("lab lock");
        let id = lab.node(node)?;
        plan::agent_socket(&lab.dir.path, id)
    };
    let (status, content_type, body) = agent_exchange(&sock, method, path, body, timeout)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("agent {node}: {e}")))?;
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".into());
    Ok((
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", content_type)],
        body,
    )
        .into_response())
}

/// `GET|POST /nodes/{node}/kv/{key}`: the agent's key-value API, proxied (experiments'
/// load generators use it, `GET …?siblings` for every concurrent value as JSON). The
/// agent's status, content type and body are passed through unchanged.
async fn node_kv(
    State(s): State<AppState>,
    method: axum::http::Method,
    UrlPath((node, key)): UrlPath<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let m = if method == axum::http::Method::GET {
        hyper::Method::GET
    } else {
        hyper::Method::POST
    };
    // axum decoded the key once; encoded again, a `?`, `#`, `%` or `/` in it stays part
    // of the key on the agent's side instead of starting a query or a fragment.
    let key = lightcone_agent::pct::encode(&key);
    let path = match &query {
        Some(q) => format!("/kv/{key}?{q}"),
        None => format!("/kv/{key}"),
    };
    proxy_to_agent(&s, &node, m, &path, body.to_vec(), Duration::from_secs(5)).await
}

/// `POST /nodes/{node}/send/{dst}`: the body, sent by `node`'s agent to `dst` over the
/// overlay as one datagram (experiments' cross-level messages); the agent's answer is
/// passed through.
async fn node_send(
    State(s): State<AppState>,
    UrlPath((node, dst)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let path = format!("/send/{}", lightcone_agent::pct::encode(&dst));
    proxy_to_agent(
        &s,
        &node,
        hyper::Method::POST,
        &path,
        body.to_vec(),
        Duration::from_secs(5),
    )
    .await
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/status", get(api_status))
        .route("/api/links/{a}/{b}/set", post(api_link_set))
        .route("/api/links/{a}/{b}/{what}", post(api_link_state))
        .route("/api/nodes/{node}/clock", post(api_node_clock))
        .route("/api/nodes/{node}/byzantine", post(api_node_byzantine))
        .route("/api/nodes/{node}/{what}", post(api_node_fault))
        .route("/api/shutdown", post(api_shutdown))
        .route("/api/partition", post(api_partition))
        .route("/metrics", get(metrics_all))
        .route("/metrics/links", get(metrics_links))
        .route("/nodes/{node}/{what}", get(node_proxy))
        .route("/nodes/{node}/kv/{key}", get(node_kv).post(node_kv))
        .route("/nodes/{node}/send/{dst}", post(node_send))
        .merge(crate::dashboard::routes(state.lab.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            crate::http::guard,
        ))
        .with_state(state)
}

/// Bring a lab up and supervise it until told to stop. `report` receives progress lines;
/// `ready` is called once with the API URL when everything is up. On error, whatever was
/// created is removed before returning.
pub fn run(opts: &UpOptions, mut report: impl FnMut(&str), ready: impl FnOnce(&str)) -> Result<()> {
    let topo = topology::load(&opts.topology)?;
    let plan = plan::plan(&topo);
    if let Err(e) = check_not_up(&plan.lab) {
        bail!(e);
    }
    let (engine_choice, engine_reason) = resolve_engine(opts.engine);
    report(&format!(
        "lab {}: {} nodes, {} links, engine {} ({engine_reason}), seed {}",
        plan.lab,
        plan.nodes.len(),
        plan.links.len(),
        format!("{engine_choice:?}").to_lowercase(),
        plan.seed
    ));
    let dir = LabDir::new(&plan.lab)?;
    let mut ledger = Ledger::create(&dir)
        .with_context(|| format!("create state directory {}", dir.path.display()))?;
    let me = std::process::id();
    ledger.record(&[Entry::Process {
        pid: me,
        start_time: process_start_time(me).unwrap_or(0),
        what: "supervisor".into(),
    }])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(serve(
        opts,
        plan,
        dir,
        ledger,
        engine_choice,
        engine_reason,
        &mut report,
        ready,
    ));
    if let Err(e) = &result {
        report(&format!(
            "error: {}; removing what was created",
            crate::topology::diag::error_chain(e.chain())
        ));
        if let Ok(dir) = LabDir::new(&topo.name) {
            let _ = apply::teardown(&dir, Some(me));
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    opts: &UpOptions,
    plan: Plan,
    dir: LabDir,
    mut ledger: Ledger,
    engine_choice: EngineChoice,
    engine_reason: String,
    report: &mut impl FnMut(&str),
    ready: impl FnOnce(&str),
) -> Result<()> {
    // The signals are ours from the start: a `down` (SIGTERM) or Ctrl-C while the lab is
    // still coming up ends the start-up and tears down what was made, the wire engine's
    // sockets closed concurrently (by the default action they would be closed one by one at
    // exit, each waiting for an RCU grace period: half a minute for a 1,000-node lab).
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    std::fs::write(dir.plan_path(), serde_json::to_vec_pretty(&plan)?)?;
    let _ = std::fs::copy(&opts.topology, dir.topology_path());
    // The lab's secrets, from the OS RNG before anything is built: without it, no lab.
    let mut os_rng = rand::rngs::OsRng;
    let token = crate::keys::token(&mut os_rng)?;
    let keys = if opts.agents {
        Some(crate::keys::LabKeys::generate(
            &dir,
            plan.nodes.len(),
            &mut os_rng,
        )?)
    } else {
        None
    };
    let layout = if engine_choice == EngineChoice::Wire {
        Layout::Wire
    } else {
        Layout::Direct
    };
    let t0 = Instant::now();
    // Counts for the CLI's progress line (drawn on a terminal only; see `progress`).
    let mut throttle = crate::progress::Throttle::new(Duration::from_millis(100));
    let times = apply::build(&plan, layout, &mut ledger, |what, done, total| {
        if let Some(m) = throttle.tick(what, done as u64, total as u64) {
            report(&m);
        }
    })
    .await?;
    report(&format!(
        "kernel objects up in {:.2}s (namespaces {:.2}s, links {:.2}s, addresses {:.2}s)",
        t0.elapsed().as_secs_f64(),
        times.namespaces.as_secs_f64(),
        times.links.as_secs_f64(),
        times.addresses.as_secs_f64()
    ));
    let registry = prometheus::Registry::new();
    let links: Vec<LinkRuntime> = plan
        .links
        .iter()
        .map(|l| LinkRuntime {
            a_to_b: l.model.clone(),
            b_to_a: l.model.clone(),
            up: true,
        })
        .collect();
    let engine = match engine_choice {
        EngineChoice::Wire => {
            let metrics = WireMetrics::register(&registry, &plan.lab)?;
            let w = WireEngine::start_with_metrics(plan.time_scale, Some(metrics))?;
            for l in &plan.links {
                let port = |e: &plan::Endpoint| PortSpec::Netns {
                    netns: plan.wire_netns.clone(),
                    ifname: e.wire_ifname.clone(),
                };
                // Reverse direction gets its own seed so the two directions are independent.
                let mut back = l.model.clone();
                back.seed = crate::topology::link_seed(l.model.seed, 1);
                w.add_link(&l.name, port(&l.a), port(&l.b), l.model.clone(), back)?;
            }
            report(&format!(
                "wire engine forwarding {} links",
                plan.links.len()
            ));
            EngineRt::Wire(w)
        }
        EngineChoice::Netem => {
            for l in &plan.links {
                for end in [&l.a, &l.b] {
                    let ns = Netns::open(&plan.nodes[end.node].netns)?;
                    let h = kernel::handle_in(Some(&ns))?;
                    let idx = kernel::ifindex(&h, &end.ifname).await?;
                    netem::apply(&h, idx, &l.model, plan.time_scale).await?;
                }
            }
            report(&format!(
                "netem qdiscs on {} interfaces",
                2 * plan.links.len()
            ));
            EngineRt::Netem
        }
        _ => EngineRt::None,
    };
    let mut interrupted = || {
        use futures::FutureExt;
        sigterm.recv().now_or_never().is_some() || sigint.recv().now_or_never().is_some()
    };
    if interrupted() {
        bail!("interrupted while the lab was coming up");
    }
    let agents = if let Some(keys) = keys {
        let mut agents = Agents::new(keys)?;
        let n = plan.nodes.len();
        let started = async {
            for id in 0..n {
                agents.start(&plan, id, &dir, &mut ledger)?;
                if let Some(m) = throttle.tick("agents", id as u64 + 1, n as u64) {
                    report(&m);
                }
                // lets the runtime see a signal
                tokio::task::yield_now().await;
                if interrupted() {
                    bail!(
                        "interrupted while starting agents ({} of {n} started)",
                        id + 1
                    );
                }
            }
            agents
                .wait_ready(&plan, &dir, Duration::from_secs(20), &mut interrupted)
                .await?;
            Ok(())
        }
        .await;
        if let Err(e) = started {
            // reaped here, not left to init as zombies
            agents.stop_all();
            return Err(e);
        }
        report(&format!("{n} agents running"));
        Some(agents)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], opts.port)))
        .await
        .with_context(|| format!("bind 127.0.0.1:{}", opts.port))?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let guard = Arc::new(crate::http::Guard {
        token: token.clone(),
        port: listener.local_addr()?.port(),
    });
    let info = SupervisorInfo {
        pid: std::process::id(),
        start_time: process_start_time(std::process::id()).unwrap_or(0),
        api_url: api_url.clone(),
        engine: engine_choice,
        engine_reason: engine_reason.clone(),
        token: token.clone(),
    };
    // It holds the token: root's only.
    crate::state::write_private(&dir.supervisor_path(), &serde_json::to_vec_pretty(&info)?)?;
    let prom = if opts.prometheus {
        let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
        let p =
            crate::telemetry::Prometheus::start(&dir, &mut ledger, listener.local_addr()?, &names)?;
        report(&format!(
            "prometheus: {} (config {})",
            p.url,
            p.config.display()
        ));
        Some(p)
    } else {
        None
    };
    let lab = Arc::new(Mutex::new(Lab {
        plan,
        dir,
        ledger,
        engine,
        engine_choice,
        engine_reason,
        agents,
        registry,
        links,
        started: Instant::now(),
        token,
        api_url: api_url.clone(),
        events: Default::default(),
        prometheus_url: prom.as_ref().map(|p| p.url.clone()),
    }));
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let state = AppState {
        lab: lab.clone(),
        shutdown: shutdown.clone(),
        guard,
    };
    ready(&api_url);
    let stop = async {
        tokio::select! {
            _ = sigint.recv() => "interrupt",
            _ = sigterm.recv() => "terminate",
            _ = shutdown.notified() => "shutdown request",
        }
    };
    let server = crate::http::serve(
        listener,
        router(state),
        crate::http::HEADER_READ_TIMEOUT,
        crate::http::MAX_CONNECTIONS,
    );
    let why = tokio::select! {
        () = server => "server ended",
        why = stop => why,
    };
    report(&format!("stopping ({why}): agents, links, namespaces"));
    if let Some(mut p) = prom {
        p.stop();
    }
    let mut lab = lab.lock().expect("lab lock");
    // The wire engine stops forwarding at once and closes its sockets in the background
    // (each close waits for an RCU grace period) while agents and namespaces go.
    let closing = match std::mem::replace(&mut lab.engine, EngineRt::None) {
        EngineRt::Wire(w) => w.stop(),
        _ => None,
    };
    if let Some(a) = lab.agents.as_mut() {
        a.stop_all();
    }
    let removed = apply::teardown(&lab.dir, Some(std::process::id()));
    if let Some(c) = closing {
        let _ = c.join();
    }
    let removed = removed?;
    report(&format!(
        "lab {} is down ({} namespaces removed)",
        lab.plan.lab, removed.namespaces
    ));
    Ok(())
}
