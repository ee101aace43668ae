//! The lab's supervisor: the one process that owns a running lab, and its lifecycle. It
//! builds the kernel objects from the plan, starts the link engine
//! ([`crate::link::engine::LinkEngine`]) and the agents, builds the lab model
//! ([`crate::lab::Lab`]), serves the control API ([`crate::api`]) and the dashboard
//! ([`crate::dashboard`]) on loopback from one route table (`router`), and tears
//! everything down on SIGINT/SIGTERM or `POST /api/shutdown`.
//!
//! What lives where: the lab model, its status types, link changes and the
//! `supervisor.json` record in [`crate::lab`]; handlers, replies, errors and the
//! Host/Origin/token guard in [`crate::api`]; the HTTP/1.1 server in [`crate::http`]; here,
//! `run`/`serve`, `up`'s options, `up`'s refusal ([`LabBusy`]) and the lifecycle's error
//! ([`SupervisorError`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::agents::{AgentError, Agents};
use crate::api::{self, ApiState};
use crate::apply::{self, ApplyError, Layout};
use crate::dashboard::{self, Dash};
use crate::kernel::KernelError;
use crate::keys::SecretError;
use crate::lab::{Lab, SupervisorInfo};
use crate::link::engine::{resolve_engine, EngineChoice, EngineError, LinkEngine};
use crate::plan::{self, Plan};
use crate::state::{process_start_time, BadLabName, Entry, LabDir, Ledger};
use crate::telemetry::TelemetryError;
use crate::topology::{self, LoadError};

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
    /// `up --time-scale S`: overrides the topology's `time_scale` (checked like it).
    #[serde(default)]
    pub time_scale: Option<f64>,
    /// This host's ends of links to other hosts (a multi-host worker's slice, issue 19),
    /// built over VXLAN after the lab's own links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cross: Vec<crate::hosts::slice::CrossEnd>,
    /// One lab over several hosts (a worker's slice whose links cross hosts): the whole
    /// plan its agents are numbered in, the seed of the lab's keys, the epoch; with
    /// `origin`, each of this plan's nodes' index in the whole plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab_wide: Option<crate::hosts::slice::LabWide>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin: Vec<usize>,
    /// The host this is a part of (a worker's slice): its series carry it as `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// How long `up` waits for every agent to be started and ready: 30 s, plus 200 ms per
/// node (258 nodes: 81.6 s; 1,026: 235.2 s). Beyond it `up` fails, saying how many were
/// started or ready, and tears the lab down. (On this 2-core host under other load, 258
/// one-process-per-node agents took about 50 s to start; 1,026 tiles 16 to a process 122 s
/// at time_scale 1: benches/multitile.sh.)
pub fn agents_ready_bound(nodes: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(200) * nodes as u32
}

/// Why `up` refuses a lab: it is up, or an earlier run left state behind. Nothing was
/// created or changed.
#[derive(Debug, thiserror::Error)]
pub enum LabBusy {
    #[error(transparent)]
    BadName(#[from] BadLabName),
    #[error("lab {lab} is already up (supervisor pid {pid}, {api_url}); run `lightcone down {lab}` first")]
    AlreadyUp {
        lab: String,
        pid: u32,
        api_url: String,
    },
    #[error("lab {lab} has leftovers of an earlier run whose supervisor is gone ({}); run `lightcone down {lab}` to remove them", .state_dir.display())]
    Leftovers { lab: String, state_dir: PathBuf },
}

/// Why `up` refuses a lab that already has a state directory.
pub fn check_not_up(lab: &str) -> Result<(), LabBusy> {
    let dir = LabDir::new(lab)?;
    if !dir.exists() {
        return Ok(());
    }
    match SupervisorInfo::read(&dir) {
        Some(info) if info.alive() => Err(LabBusy::AlreadyUp {
            lab: lab.into(),
            pid: info.pid,
            api_url: info.api_url,
        }),
        _ => Err(LabBusy::Leftovers {
            lab: lab.into(),
            state_dir: dir.path,
        }),
    }
}

/// Why a supervisor stopped with an error. Apart from [`SupervisorError::Topology`] and
/// [`SupervisorError::Busy`] (nothing was created), [`run`] has removed whatever the lab
/// had created (its ledger's teardown) before returning one; messages are the underlying
/// errors', unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Topology(#[from] LoadError),
    #[error(transparent)]
    Busy(#[from] LabBusy),
    #[error("create state directory {}", .path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error("authorities' key: {0}")]
    Authorities(#[from] crate::authority::AuthorityError),
    #[error(transparent)]
    Build(#[from] ApplyError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Agents(#[from] AgentError),
    #[error(transparent)]
    Prometheus(#[from] TelemetryError),
    /// SIGINT or SIGTERM before the lab was up.
    #[error("{0}")]
    Interrupted(String),
    #[error("bind 127.0.0.1:{port}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The teardown itself failed (the lab was up and is partly removed).
    #[error(transparent)]
    Teardown(#[from] KernelError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The router's state: the API's and the dashboard's, each handler taking its own part.
#[derive(Clone)]
struct Served {
    api: ApiState,
    dash: Dash,
}

impl FromRef<Served> for ApiState {
    fn from_ref(s: &Served) -> ApiState {
        s.api.clone()
    }
}

impl FromRef<Served> for Dash {
    fn from_ref(s: &Served) -> Dash {
        s.dash.clone()
    }
}

/// Every route the supervisor serves, API's and dashboard's, in one table, behind the
/// [`api::Guard`] and then the stamp ([`api::stamp`]).
fn router(api: ApiState, dash: Dash, guard: Arc<api::Guard>) -> Router {
    Router::new()
        .route("/api/status", get(api::api_status))
        .route("/api/links/{a}/{b}/set", post(api::api_link_set))
        .route("/api/links/{a}/{b}/{what}", post(api::api_link_state))
        .route("/api/nodes/{node}/clock", post(api::api_node_clock))
        .route("/api/nodes/{node}/byzantine", post(api::api_node_byzantine))
        .route("/api/nodes/{node}/steal-key", post(api::api_node_steal_key))
        .route(
            "/api/nodes/{node}/revoke-key",
            post(api::api_node_revoke_key),
        )
        .route(
            "/api/nodes/{node}/rotate-key",
            post(api::api_node_rotate_key),
        )
        .route("/api/nodes/{node}/task", post(api::api_node_task))
        .route("/api/nodes/{node}/order", post(api::api_node_order))
        .route(
            "/api/nodes/{node}/trust-entry",
            post(api::api_node_trust_entry),
        )
        .route("/api/nodes/{node}/update", post(api::api_node_update))
        .route("/api/nodes/{node}/{what}", post(api::api_node_fault))
        .route("/api/shutdown", post(api::api_shutdown))
        .route("/api/revoke", post(api::api_revoke))
        .route("/api/partition", post(api::api_partition))
        .route("/metrics", get(api::metrics_all))
        .route("/metrics/links", get(api::metrics_links))
        .route("/nodes/{node}/{what}", get(api::node_proxy))
        .route(
            "/nodes/{node}/kv/{key}",
            get(api::node_kv).post(api::node_kv),
        )
        .route("/nodes/{node}/send/{dst}", post(api::node_send))
        .route(
            "/nodes/{node}/objects/{id}",
            get(api::node_object).put(api::node_object),
        )
        // The dashboard: its page and the read-only JSON it draws from.
        .route("/", get(dashboard::page))
        .route("/api/topology", get(dashboard::topology))
        .route("/api/health", get(dashboard::health_route))
        .route("/api/linkstats", get(dashboard::linkstats_route))
        .route("/api/events", get(dashboard::events_route))
        .route("/api/log/{node}", get(dashboard::log_route))
        .route("/api/stream", get(dashboard::stream))
        // Inside the guard (the later layer runs first): a stamped verb waits only once
        // it has been let in.
        .layer(axum::middleware::from_fn(api::stamp))
        .layer(axum::middleware::from_fn_with_state(guard, api::guard))
        .with_state(Served { api, dash })
}

/// Bring a lab up and supervise it until told to stop. `report` receives progress lines;
/// `ready` is called once with the API URL when everything is up. On error, whatever was
/// created is removed before returning.
pub fn run(
    opts: &UpOptions,
    report: impl FnMut(&str),
    ready: impl FnOnce(&str),
) -> Result<(), SupervisorError> {
    let topo = topology::load(&opts.topology)?;
    let plan = plan::plan(&topo);
    run_plan(
        opts,
        plan,
        Some(&opts.topology),
        &Cancel::default(),
        report,
        ready,
    )
}

/// A stop request from outside the process's signals: `lightcone worker` cancels its lab
/// when its stdin closes. Checked wherever the supervisor checks for SIGINT/SIGTERM.
#[derive(Debug, Default)]
pub struct Cancel {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Cancel {
    /// Ask the lab to stop (from any thread); it is torn down as on SIGTERM.
    pub fn cancel(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }
    async fn cancelled(&self) {
        loop {
            let n = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            // Re-checks the flag at least every 100 ms: a `cancel` between the check and
            // the wait is not lost.
            let _ = tokio::time::timeout(Duration::from_millis(100), n).await;
        }
    }
}

/// [`run`] for a plan already made: `up` (from its topology file, copied into the state
/// directory) and `lightcone worker` (a slice of a plan, no topology file). `cancel` stops
/// the lab like SIGTERM does.
pub fn run_plan(
    opts: &UpOptions,
    mut plan: Plan,
    topology_file: Option<&std::path::Path>,
    cancel: &Cancel,
    mut report: impl FnMut(&str),
    ready: impl FnOnce(&str),
) -> Result<(), SupervisorError> {
    check_not_up(&plan.lab)?;
    if let Some(s) = opts.time_scale {
        report(&format!(
            "time scale {s} (--time-scale; the topology says {})",
            plan.time_scale
        ));
        plan.time_scale = s;
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
    let dir = LabDir::new(&plan.lab).map_err(LabBusy::from)?;
    let mut ledger = Ledger::create(&dir).map_err(|source| SupervisorError::StateDir {
        path: dir.path.clone(),
        source,
    })?;
    let me = std::process::id();
    ledger.record(&[Entry::Process {
        pid: me,
        start_time: process_start_time(me).unwrap_or(0),
        what: "supervisor".into(),
    }])?;
    let raised = crate::priority::raise();
    report(&raised);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lab_name = plan.lab.clone();
    let result = rt.block_on(serve(
        opts,
        plan,
        topology_file,
        cancel,
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
            crate::parse::diag::error_chain(anyhow::Chain::new(e))
        ));
        if let Ok(dir) = LabDir::new(&lab_name) {
            let _ = apply::teardown(&dir, Some(me));
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    opts: &UpOptions,
    plan: Plan,
    topology_file: Option<&std::path::Path>,
    cancel: &Cancel,
    dir: LabDir,
    mut ledger: Ledger,
    engine_choice: EngineChoice,
    engine_reason: String,
    report: &mut impl FnMut(&str),
    ready: impl FnOnce(&str),
) -> Result<(), SupervisorError> {
    // The signals are ours from the start: a `down` (SIGTERM) or Ctrl-C while the lab is
    // still coming up ends the start-up and tears down what was made (by the default action
    // the process would die with the lab's kernel objects still there).
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    std::fs::write(dir.plan_path(), serde_json::to_vec_pretty(&plan)?)?;
    if let Some(t) = topology_file {
        let _ = std::fs::copy(t, dir.topology_path());
    }
    // The lab's secrets, from the OS RNG before anything is built: without it, no lab.
    // A lab across hosts derives the lab's keys from the seed all its hosts share, for
    // the whole lab (its agents are numbered in the whole plan); the API token is this
    // host's own.
    let mut os_rng = rand::rngs::OsRng;
    let token = crate::keys::token(&mut os_rng)?;
    let (mut lab_rng, key_plan) = match &opts.lab_wide {
        Some(w) => (
            crate::keys::LabRng::seeded(w.secret().ok_or_else(|| {
                SecretError::Rng("the lab-wide seed is not 32 bytes of hex".into())
            })?),
            &w.plan,
        ),
        None => (crate::keys::LabRng::Os(os_rng), &plan),
    };
    let keys = if opts.agents {
        let mut keys = crate::keys::LabKeys::generate(&dir, key_plan.nodes.len(), &mut lab_rng)?;
        // The authorities' threshold key (FROST DKG; shares 0600 in `keys/`): agents get
        // its public half and obey only orders it signed (`lightcone dark`).
        let auth = crate::authority::generate(&dir, key_plan, &mut lab_rng)?;
        report(&format!(
            "authorities: {}-of-{} threshold key ({})",
            auth.t,
            auth.members.len(),
            match auth.holders {
                crate::authority::Holders::Nodes => "shares held by the authority nodes",
                crate::authority::Holders::Lab => "too few authority nodes: shares held by the lab",
            }
        ));
        keys.set_authorities(auth.group_key_hex);
        // Every node key certified at once by t of the authorities (issue 17).
        let cert =
            crate::authority::certify_directory(&dir, key_plan, keys.public_hex(), &mut lab_rng)?;
        keys.set_directory_cert(cert);
        // The lab's agent build approved by t of the authorities (release 0): agents take
        // a neighbour into routing only once it attested an approved build (issue 18).
        if let Some(bin) = crate::agents::agent_binary() {
            let sha = crate::authority::approve_binary(&dir, &bin, 0, &mut lab_rng)?;
            report(&format!(
                "attestation: agent build {} (sha256 {}…) approved",
                bin.display(),
                &hex::encode(sha)[..16]
            ));
        }
        Some(keys)
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
    if !opts.cross.is_empty() {
        let t = Instant::now();
        crate::hosts::vxlan::build_cross(&plan, layout, &opts.cross)
            .await
            .map_err(apply::ApplyError::from)?;
        report(&format!(
            "{} link(s) to other hosts up over VXLAN in {:.2}s",
            opts.cross.len(),
            t.elapsed().as_secs_f64()
        ));
        for c in &opts.cross {
            report(&format!(
                "  {} to host {} (vni {}): shaped here {:.3} ms + underlay {:.3} ms one way (half the round trip measured at up), real time",
                c.link,
                c.remote_host,
                c.vni,
                c.model.delay_ns as f64 / 1e6 / plan.time_scale,
                c.underlay_one_way_ns as f64 / 1e6
            ));
        }
    }
    let links = Lab::initial_links(&plan);
    let engine = LinkEngine::start(engine_choice, &plan).await?;
    for c in &opts.cross {
        engine
            .add_cross(
                &c.link,
                &plan.nodes[c.node].netns,
                &c.ifname,
                &c.wire_ifname,
                &c.far_wire_ifname,
                &c.model,
            )
            .await?;
    }
    if let Some(line) = engine.describe() {
        report(&line);
    }
    let mut interrupted = || {
        use futures::FutureExt;
        cancel.is_cancelled()
            || sigterm.recv().now_or_never().is_some()
            || sigint.recv().now_or_never().is_some()
    };
    if interrupted() {
        return Err(SupervisorError::Interrupted(
            "interrupted while the lab was coming up".into(),
        ));
    }
    // The operator root key the supervisor mints its per-request tokens from (written at
    // `LabKeys::generate`, read back once).
    let operator = match &keys {
        Some(_) => Some(Arc::new(crate::keys::operator_key(&dir)?)),
        None => None,
    };
    let agents = if let Some(keys) = keys {
        let n = plan.nodes.len();
        let map = crate::tilegroups::ProcessMap::of(&plan);
        std::fs::write(
            dir.agents().join("processes.json"),
            serde_json::to_vec_pretty(&map)?,
        )?;
        report(&map.summary());
        let mut agents = Agents::new(keys)?.grouped(&plan, &dir)?;
        if let Some(w) = &opts.lab_wide {
            let epoch = w.epoch_monotonic_ns(
                crate::hosts::rtt::realtime_ns(),
                lightcone_agent::driver::monotonic_ns(),
            );
            agents = agents.lab_wide(
                w.plan.clone(),
                opts.origin.clone(),
                epoch,
                // This host's placement of the epoch against the controller's, plus the
                // worst other host's: how far two agents' ground truths may differ.
                ((w.clock_offset_bound_ms + w.lab_clock_bound_ms) * 1e6).round() as u64,
            )?;
            report(&format!(
                "agents numbered in the whole lab ({} nodes on every host); lab epoch from the controller, this host's clock {:+.3} ms ± {:.3} ms from it",
                w.plan.nodes.len(),
                w.clock_offset_ms,
                w.clock_offset_bound_ms
            ));
        }
        // `LIGHTCONE_AGENTS_BOUND_S` (seconds) replaces the bound, for tests of the failure.
        let bound = std::env::var("LIGHTCONE_AGENTS_BOUND_S")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s))
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| agents_ready_bound(n));
        let t_agents = Instant::now();
        let started = async {
            if agents.is_grouped() {
                // Every process at once, each starting its tiles at once; one readiness
                // report per process (see `tilegroups::Groups::launch_all`).
                return agents
                    .start_grouped(
                        &plan,
                        &dir,
                        &mut ledger,
                        bound,
                        &mut interrupted,
                        |done, total| {
                            if let Some(m) = throttle.tick("agents", done as u64, total as u64) {
                                report(&m);
                            }
                        },
                    )
                    .await
                    .map_err(SupervisorError::from);
            }
            for id in 0..n {
                agents.start(&plan, id, &dir, &mut ledger)?;
                if let Some(m) = throttle.tick("agents", id as u64 + 1, n as u64) {
                    report(&m);
                }
                // lets the runtime see a signal
                tokio::task::yield_now().await;
                if interrupted() {
                    return Err(SupervisorError::Interrupted(format!(
                        "interrupted while starting agents ({} of {n} started)",
                        id + 1
                    )));
                }
                if id + 1 < n && t_agents.elapsed() > bound {
                    return Err(AgentError::NotAllStarted {
                        started: id + 1,
                        total: n,
                        secs: bound.as_secs(),
                    }
                    .into());
                }
            }
            let left = bound.saturating_sub(t_agents.elapsed());
            agents
                .wait_ready(
                    &plan,
                    &dir,
                    left.max(Duration::from_secs(1)),
                    &mut interrupted,
                )
                .await?;
            Ok(())
        }
        .await;
        if let Err(e) = started {
            // reaped here, not left to init as zombies
            agents.stop_all();
            return Err(e);
        }
        report(&format!(
            "{n} agents running ({:.2}s; bound {} s)",
            t_agents.elapsed().as_secs_f64(),
            bound.as_secs()
        ));
        // Can the host keep the lab at its time scale? Measured on a thread (a few
        // seconds) while this runtime keeps watching for an interrupt.
        let measuring = {
            let (plan, dir) = (
                plan.clone(),
                LabDir {
                    lab: dir.lab.clone(),
                    path: dir.path.clone(),
                },
            );
            std::thread::spawn(move || {
                crate::fidelity::measure(&plan, &dir, crate::fidelity::bound())
            })
        };
        while !measuring.is_finished() {
            if interrupted() {
                agents.stop_all();
                return Err(SupervisorError::Interrupted(
                    "interrupted while measuring timer lateness".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Ok(check) = measuring.join() {
            report(&check.line());
        }
        Some(agents)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], opts.port)))
        .await
        .map_err(|source| SupervisorError::Bind {
            port: opts.port,
            source,
        })?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let guard = Arc::new(api::Guard {
        token: token.clone(),
        port: listener.local_addr()?.port(),
    });
    let info = SupervisorInfo {
        pid: std::process::id(),
        start_time: process_start_time(std::process::id()).unwrap_or(0),
        api_url: api_url.clone(),
        engine: engine_choice,
        engine_reason,
        token,
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
    let time_scale_of_plan = plan.time_scale;
    let lab = Arc::new(Mutex::new(Lab {
        plan,
        dir,
        ledger,
        engine,
        info,
        agents,
        links,
        cross: opts
            .cross
            .iter()
            .map(|c| crate::lab::CrossRuntime::of(c, time_scale_of_plan))
            .collect(),
        started: Instant::now(),
        events: Default::default(),
        prometheus_url: prom.as_ref().map(|p| p.url.clone()),
        host: opts.host.clone(),
    }));
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let api_state = ApiState {
        lab: lab.clone(),
        shutdown: shutdown.clone(),
        operator,
    };
    ready(&api_url);
    let stop = async {
        tokio::select! {
            _ = sigint.recv() => "interrupt",
            _ = sigterm.recv() => "terminate",
            _ = shutdown.notified() => "shutdown request",
            _ = cancel.cancelled() => "cancelled (the worker's stdin closed)",
        }
    };
    let server = crate::http::serve(
        listener,
        router(api_state, Dash::new(lab.clone()), guard),
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
    // Agents first, killed at once (`down` has usually killed them already): they are the
    // lab's load. Then the wire engine stops forwarding and closes its socket in the
    // background (the close waits for an RCU grace period) while namespaces go.
    if let Some(a) = lab.agents.as_mut() {
        a.kill_all();
    }
    let closing = lab.engine.stop();
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
