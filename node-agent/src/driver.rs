//! The tokio driver: real UDP sockets and scaled real time around the sans-IO [`Node`].
//!
//! One socket per link address (`local_ip:udp_port`); a datagram's source address names
//! the neighbour. Emulated time is real elapsed time × `time_scale` since the driver
//! started; the driver keeps no timer table: it asks the node for its next deadline
//! (`Node::poll_timeout`), sleeps until it, calls `Node::handle_timeout` and measures how
//! late each timer fires (`lightcone_timer_lateness_seconds`, in emulated seconds, so it
//! compares directly with protocol timeouts). Each control request is one
//! `Node::command` whose own result answers it. The HTTP API is served with
//! hyper on the unix socket `control_socket`; every request becomes a message to the single
//! task that owns the node, so the node is never shared.
//!
//! Runs on a current-thread runtime: one agent is one thread, for a small footprint.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::{UdpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot};

use lightcone_core::byzantine::Byzantine;
use lightcone_core::causal::{Dot, DotContext};
use lightcone_core::config::{AgentConfig, ByzantineRequest, ClockFaultRequest, ConfigError};
use lightcone_core::directory::Directory;
use lightcone_core::io::{Command, CommandError, Event, Input, Outbox, Reply as NodeReply};
use lightcone_core::kv::{Durability, Written};
use lightcone_core::node::Node;
use lightcone_core::params::Params;
use lightcone_core::routing::Level;
use lightcone_core::time::Instant;
use lightcone_core::wire::{MAX_BLOB, MAX_DATAGRAM};

use crate::caps::{self, Op, Verifier};

/// Why the driver stopped before a clean shutdown. Sockets already bound are closed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("time_scale must be finite and > 0, got {0}")]
    TimeScale(f64),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("operator_public_key_hex: {0}")]
    OperatorKey(String),
    #[error("revoked_ids: {0}")]
    Revoked(String),
    #[error("authorities_key_hex: {0}")]
    AuthoritiesKey(String),
    /// The directory's certificate is malformed, or not the authorities' threshold
    /// signature over this agent's directory (a key differs from the one certified).
    #[error("directory certificate: {0}")]
    DirectoryCertificate(String),
    #[error("build: {0}")]
    Build(#[from] lightcone_core::update::BuildError),
    /// An approved-build entry is malformed or not the authorities' threshold signature.
    #[error("approved_builds: {0}")]
    ApprovedBuilds(String),
}

/// SHA-256 of this process's own executable (`/proc/self/exe`), read once per process:
/// the build measurement every tile of the process attests (issue 18).
fn own_build() -> Result<[u8; 32], DriverError> {
    use sha2::Digest;
    static BUILD: std::sync::OnceLock<Result<[u8; 32], String>> = std::sync::OnceLock::new();
    BUILD
        .get_or_init(|| {
            let mut f = std::fs::File::open("/proc/self/exe").map_err(|e| e.to_string())?;
            let mut h = sha2::Sha256::new();
            std::io::copy(&mut f, &mut h).map_err(|e| e.to_string())?;
            Ok(h.finalize().into())
        })
        .clone()
        .map_err(|e| DriverError::Io {
            what: "measure /proc/self/exe".into(),
            source: std::io::Error::other(e),
        })
}

/// The tile's measurement: its build and its configuration as parsed (JSON, before the
/// secret key file is read, so no secret is hashed).
fn measure(cfg: &AgentConfig) -> Result<lightcone_core::update::attest::Measurement, DriverError> {
    use sha2::Digest;
    let json = serde_json::to_vec(cfg).map_err(|e| DriverError::Io {
        what: "measure the configuration".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(lightcone_core::update::attest::Measurement {
        build: own_build()?,
        config: sha2::Sha256::digest(&json).into(),
    })
}

/// The authorities' group key from its hex (32 bytes, a valid Ed25519 point).
fn authorities_key(hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let b: [u8; 32] = hex::decode(hex_key.trim())
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "not 32 bytes".to_string())?;
    ed25519_dalek::VerifyingKey::from_bytes(&b).map_err(|e| e.to_string())
}

/// Checks the authorities' threshold signature over `dir` (issue 17: every key of the
/// directory certified at once).
pub fn check_directory_certificate(
    cert_hex: &str,
    authorities_hex: Option<&str>,
    dir: &Directory,
) -> Result<(), String> {
    let group = authorities_key(
        authorities_hex.ok_or("a certificate needs the authorities' key (authorities_key_hex)")?,
    )?;
    dir.check_certificate(cert_hex, &group)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DriverError {
    let what = what.into();
    move |source| DriverError::Io { what, source }
}

/// The secret key seed (hex) from a key file, refusing one that group or others may read:
/// a key others can read lets them sign as this node.
fn read_key_file(p: &std::path::Path) -> Result<String, DriverError> {
    use std::os::unix::fs::PermissionsExt;
    let what = || format!("key file {}", p.display());
    let mode = std::fs::metadata(p)
        .map_err(io(what()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(DriverError::Io {
            what: what(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "mode {:04o} lets others read it; it must be 0600",
                    mode & 0o7777
                ),
            ),
        });
    }
    let text = std::fs::read_to_string(p).map_err(io(what()))?;
    Ok(text.trim().to_string())
}

/// Real ↔ emulated time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Clock {
        Clock {
            start: std::time::Instant::now(),
            scale,
        }
    }

    /// Emulated time counted from the lab epoch `epoch_monotonic_ns` on the host's
    /// `CLOCK_MONOTONIC` (what `std::time::Instant` reads on Linux). Every namespace shares
    /// that clock, so all agents of a lab agree on "now" to within the read latency — the
    /// ground truth of the time layer. An epoch in the future counts from now.
    pub fn with_epoch(scale: f64, epoch_monotonic_ns: u64) -> Clock {
        let now = std::time::Instant::now();
        let elapsed = monotonic_ns().saturating_sub(epoch_monotonic_ns);
        Clock {
            start: now
                .checked_sub(Duration::from_nanos(elapsed))
                .unwrap_or(now),
            scale,
        }
    }
    pub fn now(&self) -> Instant {
        let real = self.start.elapsed().as_secs_f64();
        Instant::from_nanos((real * self.scale * 1e9) as u64)
    }
    pub fn to_real(&self, t: Instant) -> std::time::Instant {
        self.start + Duration::from_secs_f64(t.as_secs_f64() / self.scale)
    }
}

/// The host's `CLOCK_MONOTONIC`, ns (shared by every network namespace).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// One series of the thermal subsystem.
enum HeatSeries {
    Gauge(GaugeVec),
    Counter(prometheus::CounterVec),
}

/// The agent's Prometheus series.
pub struct Metrics {
    registry: Registry,
    members: IntGaugeVec,
    locality: IntCounterVec,
    datagrams: IntCounterVec,
    lateness: HistogramVec,
    local_health: IntGaugeVec,
    time_error: GaugeVec,
    time_sigma: GaugeVec,
    time_coverage: GaugeVec,
    time_holdover: GaugeVec,
    /// How well the ground truth of `time_error` is known (issue 19: a lab across hosts).
    time_truth_uncertainty: GaugeVec,
    time_alarms: IntCounterVec,
    quarantined: IntGaugeVec,
    watch_evidence: IntGaugeVec,
    /// The thermal subsystem's series ([`lightcone_core::heat::machine::METRICS`]), when
    /// it is on: gauges, and counters (`_total`).
    heat: Vec<HeatSeries>,
    /// `lightcone_capability_refused_total{reason}`: control requests refused for their
    /// capability (counted by the HTTP task, see [`Gate`]).
    capability_refused: IntCounterVec,
    node: String,
    /// The tile runtime's own cost (issue 18's budget).
    pub runtime: crate::runtime::Runtime,
}

/// The kill switch's series (issue 18), in the text format like the store's.
fn dark_series(n: &str, d: &lightcone_core::update::dark::Darkness) -> String {
    format!(
        "# HELP lightcone_dark Whether this node is dark (a threshold-signed panic-to-dark order holds it)\n\
         # TYPE lightcone_dark gauge\n\
         lightcone_dark{{node=\"{n}\"}} {}\n\
         # HELP lightcone_dark_orders_refused_total Runtime orders refused (forged, replayed, malformed, no key); nothing was changed\n\
         # TYPE lightcone_dark_orders_refused_total counter\n\
         lightcone_dark_orders_refused_total{{node=\"{n}\"}} {}\n\
         # HELP lightcone_dark_frames_suppressed_total Datagrams this node kept in because it is dark\n\
         # TYPE lightcone_dark_frames_suppressed_total counter\n\
         lightcone_dark_frames_suppressed_total{{node=\"{n}\"}} {}\n",
        u8::from(d.dark_since().is_some()),
        d.refused,
        d.suppressed
    )
}

impl Metrics {
    pub fn new(node: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let members = IntGaugeVec::new(
            Opts::new(
                "lightcone_membership_members",
                "Cell members by state, as seen by this node",
            ),
            &["node", "state"],
        )?;
        let locality = IntCounterVec::new(
            Opts::new(
                "lightcone_locality_bytes_total",
                "Bytes originated here whose destination is inside (local) or outside (remote) the source's scope at each level, by class (workload: application data and its replication; protocol: the DCOS's own)",
            ),
            &["node", "level", "scope", "class"],
        )?;
        let datagrams = IntCounterVec::new(
            Opts::new(
                "lightcone_datagrams_total",
                "Datagrams by direction (rx/tx/fwd) and outcome (incl. reject reasons)",
            ),
            &["node", "direction", "outcome"],
        )?;
        let lateness = HistogramVec::new(
            HistogramOpts::new(
                "lightcone_timer_lateness_seconds",
                "How late timers fire, in emulated seconds",
            )
            .buckets(vec![
                1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0,
            ]),
            &["node"],
        )?;
        let local_health = IntGaugeVec::new(
            Opts::new(
                "lightcone_membership_local_health",
                "Lifeguard local health multiplier score",
            ),
            &["node"],
        )?;
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["node"]);
        let time_error = gauge(
            "lightcone_time_error_seconds",
            "The node's best time estimate minus ground truth (the shared host clock), s; NaN while unsynchronized",
        )?;
        let time_sigma = gauge(
            "lightcone_time_sigma_seconds",
            "The one-sigma uncertainty the node claims for its time estimate, s",
        )?;
        let time_coverage = gauge(
            "lightcone_time_coverage_ratio",
            "Share of the node's time samples (one per sync poll or pulsar fix) with |error| <= 3 sigma",
        )?;
        let time_holdover = gauge(
            "lightcone_time_holdover_seconds",
            "Time since the hierarchy last delivered an accepted measurement, s (0 for an authority, +Inf if never)",
        )?;
        let time_truth_uncertainty = gauge(
            "lightcone_time_ground_truth_uncertainty_seconds",
            "How well this node's ground truth (the lab's true now) is known, emulated s: 0 on one host (one clock); in a lab across hosts the bound of its host's clock-offset estimate, and lightcone_time_error_seconds is known only to +/- this",
        )?;
        let time_alarms = IntCounterVec::new(
            Opts::new(
                "lightcone_time_alarms_total",
                "Clock-compromise alarms: the pulsar check disagreed with the hierarchy beyond the combined bounds",
            ),
            &["node"],
        )?;
        let quarantined = IntGaugeVec::new(
            Opts::new(
                "lightcone_watch_quarantined_nodes",
                "Nodes this node quarantines (by the neighbourhood watch, its own evidence, or an operator)",
            ),
            &["node"],
        )?;
        let watch_evidence = IntGaugeVec::new(
            Opts::new(
                "lightcone_watch_evidence_nodes",
                "Nodes this node holds its own byzantine evidence against",
            ),
            &["node"],
        )?;
        let capability_refused = IntCounterVec::new(
            Opts::new(
                "lightcone_capability_refused_total",
                "State-changing control requests refused for their capability token, by reason (missing, malformed, wrong_root, expired, out_of_scope, revoked, no_operator_key); nothing was changed",
            ),
            &["node", "reason"],
        )?;
        for reason in crate::caps::Refusal::REASONS {
            capability_refused.with_label_values(&[node, reason]);
        }
        registry.register(Box::new(capability_refused.clone()))?;
        registry.register(Box::new(quarantined.clone()))?;
        registry.register(Box::new(watch_evidence.clone()))?;
        for g in [
            &time_error,
            &time_sigma,
            &time_coverage,
            &time_holdover,
            &time_truth_uncertainty,
        ] {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(time_alarms.clone()))?;
        registry.register(Box::new(members.clone()))?;
        registry.register(Box::new(locality.clone()))?;
        registry.register(Box::new(datagrams.clone()))?;
        registry.register(Box::new(lateness.clone()))?;
        registry.register(Box::new(local_health.clone()))?;
        let mut heat = Vec::new();
        for (name, help, counter) in lightcone_core::heat::machine::METRICS {
            if counter {
                let c = prometheus::CounterVec::new(Opts::new(name, help), &["node"])?;
                registry.register(Box::new(c.clone()))?;
                heat.push(HeatSeries::Counter(c));
            } else {
                let g = gauge(name, help)?;
                registry.register(Box::new(g.clone()))?;
                heat.push(HeatSeries::Gauge(g));
            }
        }
        Ok(Metrics {
            runtime: crate::runtime::Runtime::new(),
            registry,
            members,
            locality,
            datagrams,
            lateness,
            local_health,
            time_error,
            time_sigma,
            time_coverage,
            time_holdover,
            time_truth_uncertainty,
            time_alarms,
            quarantined,
            watch_evidence,
            heat,
            capability_refused,
            node: node.to_string(),
        })
    }

    /// Set once at start from the configuration (see [`Metrics::time_truth_uncertainty`]).
    pub fn set_ground_truth_uncertainty(&self, emulated_s: f64) {
        self.time_truth_uncertainty
            .with_label_values(&[&self.node])
            .set(emulated_s);
    }

    pub fn observe_lateness(&self, emulated_s: f64) {
        self.lateness
            .with_label_values(&[&self.node])
            .observe(emulated_s);
    }

    fn inc_to(c: &prometheus::IntCounter, v: u64) {
        let cur = c.get();
        if v > cur {
            c.inc_by(v - cur);
        }
    }

    /// Brings every series up to date with the node and renders the text format.
    /// `now` is true emulated time: the time metrics are measured against it.
    pub fn render(
        &self,
        node: &mut Node,
        now: Instant,
        driver_counters: &BTreeMap<DriverOutcome, u64>,
    ) -> String {
        let n = self.node.as_str();
        if let Some(t) = node.time_metrics(now) {
            self.time_error.with_label_values(&[n]).set(t.true_error_s);
            self.time_sigma.with_label_values(&[n]).set(t.sigma_s);
            self.time_coverage
                .with_label_values(&[n])
                .set(t.coverage_ratio);
            self.time_holdover
                .with_label_values(&[n])
                .set(t.holdover_age_s);
            Self::inc_to(&self.time_alarms.with_label_values(&[n]), t.alarms_total);
        }
        let [a, s, d] = node.member_counts();
        for (st, v) in [("alive", a), ("suspect", s), ("dead", d)] {
            self.members.with_label_values(&[n, st]).set(i64::from(v));
        }
        self.local_health
            .with_label_values(&[n])
            .set(i64::from(node.membership().local_health()));
        self.quarantined
            .with_label_values(&[n])
            .set(node.routing().quarantined().len() as i64);
        self.watch_evidence
            .with_label_values(&[n])
            .set(node.watch().evidence().len() as i64);
        let loc = node.locality();
        for l in Level::ALL {
            for (i, scope) in ["local", "remote"].into_iter().enumerate() {
                let (all, work) = (loc.bytes[l as usize][i], loc.workload[l as usize][i]);
                for (class, v) in [("workload", work), ("protocol", all - work)] {
                    Self::inc_to(
                        &self
                            .locality
                            .with_label_values(&[n, l.as_str(), scope, class]),
                        v,
                    );
                }
            }
        }
        for (dir, outcome, v) in node.counters().labelled() {
            Self::inc_to(&self.datagrams.with_label_values(&[n, dir, outcome]), v);
        }
        if let Some(h) = node.heat() {
            let values = h.stats(now).metric_values();
            for (series, v) in self.heat.iter().zip(values) {
                match series {
                    HeatSeries::Counter(c) => {
                        let c = c.with_label_values(&[n]);
                        if v > c.get() {
                            c.inc_by(v - c.get());
                        }
                    }
                    HeatSeries::Gauge(g) => g.with_label_values(&[n]).set(v),
                }
            }
        }
        for (outcome, v) in driver_counters {
            Self::inc_to(
                &self
                    .datagrams
                    .with_label_values(&[n, "driver", outcome.as_str()]),
                *v,
            );
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        // The object store's series (issue 16), rendered by the core in the same format.
        if let Some(st) = node.store() {
            text.push_str(&st.render(n, now));
        }
        text.push_str(&dark_series(n, node.darkness()));
        text.push_str(&format!(
            "# HELP lightcone_agent_build_info The agent build this node runs (issue 18: its variant and protocol version)\n\
             # TYPE lightcone_agent_build_info gauge\n\
             lightcone_agent_build_info{{node=\"{n}\",variant=\"{}\",protocol=\"{}\"}} 1\n",
            crate::BUILD_VARIANT,
            node.build().version
        ));
        text.push_str(&self.runtime.render(n));
        text
    }
}

/// A control request from the HTTP task to the node task.
#[derive(Debug)]
pub enum Control {
    Metrics,
    State,
    /// `context`: answer the write's dot and overwritten context as JSON instead of "ok".
    /// `durability`: when to answer (see [`Durability`]).
    Put {
        key: String,
        value: Vec<u8>,
        context: bool,
        durability: Durability,
    },
    /// `siblings`: answer every concurrent value as JSON instead of the resolved one.
    Get {
        key: String,
        siblings: bool,
    },
    Quarantine {
        node: u32,
    },
    Clock(lightcone_timing::ClockFault),
    Byzantine(Byzantine),
    /// `POST /steal-key`: hold another node's key and sign frames as it (a test fault).
    StealKey {
        node: u32,
        key: Box<ed25519_dalek::SigningKey>,
    },
    /// `POST /rotate-key`: our new key and the authorities' certificate of it (issue 17),
    /// for `Command::RotateKey`.
    RotateKey {
        secret: Box<ed25519_dalek::SigningKey>,
        certificate: Vec<u8>,
    },
    /// `POST /revoke-key/{node}`: ask our cell's BFT group to revoke `node`'s key.
    RevokeKey {
        node: u32,
    },
    /// Application bytes to a node over the overlay (`POST /send/{node}`).
    Send {
        dst: u32,
        data: Vec<u8>,
    },
    Shutdown,
    /// `POST /order`: a threshold-signed runtime order (panic-to-dark or undark, the
    /// bytes of a [`lightcone_core::update::dark::Order`]), for `Command::Order`.
    Order(Vec<u8>),
    /// `POST /trust-entry`: a threshold-signed trust entry (a revocation or certificate,
    /// the bytes of a [`lightcone_core::trust::log::Entry`]), for `Command::TrustEntry`:
    /// applied here and flooded to the whole lab.
    TrustEntry(Vec<u8>),
    /// `POST /task`: submit a task (issue 15) owned by this node.
    Task(lightcone_core::heat::task::TaskSpec),
    /// `GET /leases`: the leases held here and the tasks owned here, as JSON.
    Leases,
    /// `PUT /objects/{id}`: store the body as an erasure-coded object (issue 16).
    ObjectPut {
        object: String,
        data: Vec<u8>,
    },
    /// `GET /objects/{id}`: read an object back.
    ObjectGet {
        object: String,
    },
}

/// `GET /kv/{key}?siblings`: `{"siblings": [...], "dots": [...], "context": ...}`, every
/// concurrent value as a string in `(hlc, dot)` order, the dot of each, and the key's
/// context (every write seen: held or overwritten by a held one). A value that is not UTF-8
/// cannot travel so: 406, saying so.
fn siblings_reply(siblings: &[Vec<u8>], dots: &[Dot], context: &DotContext) -> Reply {
    let mut values = Vec::with_capacity(siblings.len());
    for v in siblings {
        match std::str::from_utf8(v) {
            Ok(s) => values.push(s),
            Err(_) => {
                return (
                    StatusCode::NOT_ACCEPTABLE,
                    "text/plain",
                    b"a sibling is not UTF-8; read the resolved value without ?siblings\n".to_vec(),
                )
            }
        }
    }
    let body = serde_json::json!({ "siblings": values, "dots": dots, "context": context });
    (
        StatusCode::OK,
        "application/json",
        body.to_string().into_bytes(),
    )
}

/// The answer to an acknowledged put: `ok`, or with `?context` its dot, the context it
/// overwrote, its durability and the nodes known to hold it.
fn put_reply(context: bool, w: &Written, durability: Durability, holders: &[u32]) -> Reply {
    if !context {
        return (StatusCode::OK, "text/plain", b"ok\n".to_vec());
    }
    let body = serde_json::json!({
        "dot": w.dot,
        "context": w.context,
        "durability": durability,
        "holders": holders,
    });
    (
        StatusCode::OK,
        "application/json",
        body.to_string().into_bytes(),
    )
}

/// A refused command's answer: `status` and the refusal in the words the agent has always
/// sent (the [`CommandError`]'s `Display`).
fn refusal(status: StatusCode, e: &CommandError) -> Reply {
    tracing::warn!(reason = %e, "command failed");
    (status, "text/plain", format!("{e}\n").into_bytes())
}

/// An order's answer: what it was and whether this node is dark now (JSON), or why it
/// was refused: 403 for a signature no threshold of the authorities made (or no key to
/// check it), 409 for a replay, 400 for bytes that are no order. A refusal changed nothing.
fn order_reply(
    bytes: &[u8],
    r: Result<NodeReply, CommandError>,
    dark: &lightcone_core::update::dark::Darkness,
) -> Reply {
    use lightcone_core::update::dark::{Order, OrderError};
    match (r, Order::decode(bytes)) {
        (Ok(_), Ok(o)) => {
            let v = serde_json::json!({
                "serial": o.serial,
                "dark": o.dark,
                "node_dark": dark.dark_since().is_some(),
            });
            (
                StatusCode::OK,
                "application/json",
                v.to_string().into_bytes(),
            )
        }
        (Err(e @ CommandError::Order(OrderError::Replayed { .. })), _) => {
            refusal(StatusCode::CONFLICT, &e)
        }
        (Err(e @ CommandError::Order(OrderError::BadSignature | OrderError::NoKey)), _) => {
            refusal(StatusCode::FORBIDDEN, &e)
        }
        (Err(e), _) => refusal(StatusCode::BAD_REQUEST, &e),
        (Ok(_), Err(e)) => refusal(StatusCode::BAD_REQUEST, &CommandError::Order(e)),
    }
}

/// A get's answer: 404, the resolved value, or with `?siblings` every concurrent one.
fn get_reply(all: bool, r: Result<NodeReply, CommandError>) -> Reply {
    match r {
        Ok(NodeReply::KvValue {
            value,
            siblings,
            dots,
            context,
            ..
        }) => match value {
            None => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
            Some(_) if all => siblings_reply(&siblings, &dots, &context),
            Some(v) => (StatusCode::OK, "application/octet-stream", v),
        },
        Ok(other) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("unexpected answer to a get: {other:?}\n").into_bytes(),
        ),
        Err(e) => refusal(StatusCode::NOT_IMPLEMENTED, &e),
    }
}

/// What the driver itself counts (`lightcone_datagrams_total{direction="driver"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DriverOutcome {
    /// A datagram the socket would not take.
    SendError,
    /// A datagram from an address that is no neighbour's.
    UnknownSource,
}

impl DriverOutcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverOutcome::SendError => "send_error",
            DriverOutcome::UnknownSource => "unknown_source",
        }
    }
}

/// Most timers fired per wake-up of the node task before it looks at sockets again.
const MAX_TIMERS_PER_WAKE: usize = 64;

/// The node task's answer: status, content type, body.
pub type Reply = (StatusCode, &'static str, Vec<u8>);

type ControlMsg = (Control, oneshot::Sender<Reply>);

struct Link {
    socket: usize,
    addr: SocketAddr,
}

/// Runs one agent until `shutdown` resolves, `POST /shutdown` arrives, or an I/O error.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), DriverError> {
    prepare(cfg, None, bind_here)?.run(shutdown).await
}

/// Binds one UDP socket per address in the calling thread's network namespace.
pub fn bind_here(addrs: &[SocketAddr]) -> std::io::Result<Vec<std::net::UdpSocket>> {
    addrs.iter().map(std::net::UdpSocket::bind).collect()
}

/// Spawned tasks of one tile (its socket readers and HTTP listener), aborted when the tile
/// ends, however it ends: a crashed tile's sockets and listener close with it.
struct TaskSet(Vec<tokio::task::JoinHandle<()>>);

impl Drop for TaskSet {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A tile ready to run: its node built, its UDP sockets bound and its control socket
/// listening (see [`prepare`]).
pub struct Prepared {
    cfg: AgentConfig,
    node: Node,
    clock: Clock,
    name: String,
    sockets: Vec<Arc<UdpSocket>>,
    links: BTreeMap<u32, Link>,
    peers: BTreeMap<(usize, IpAddr), u32>,
    listener: UnixListener,
    dir: Arc<Directory>,
    verifier: Arc<Verifier>,
}

impl Prepared {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a tile: reads its key, builds its node (with `dir`, a directory shared by the
/// process's tiles, or its own from `cfg.peers`), binds one UDP socket per distinct link
/// address with `bind` (which may enter the tile's network namespace to do so) and its
/// control socket. Must run inside a tokio runtime. Nothing of it runs yet.
pub fn prepare(
    mut cfg: AgentConfig,
    dir: Option<Arc<Directory>>,
    bind: impl FnOnce(&[SocketAddr]) -> std::io::Result<Vec<std::net::UdpSocket>>,
) -> Result<Prepared, DriverError> {
    if !(cfg.time_scale.is_finite() && cfg.time_scale > 0.0) {
        return Err(DriverError::TimeScale(cfg.time_scale));
    }
    let measurement = measure(&cfg)?;
    if let Some(p) = cfg.secret_key_file.take() {
        cfg.secret_key_hex = read_key_file(&p)?;
    }
    let clock = match cfg.epoch_monotonic_ns {
        Some(e) => Clock::with_epoch(cfg.time_scale, e),
        None => Clock::new(cfg.time_scale),
    };
    let dir = match dir {
        Some(d) => d,
        None => Arc::new(Directory::from_peers(&cfg.peers)?),
    };
    let mut node = Node::new_in(&cfg, dir.clone(), clock.now())?;
    // Wall-clock ns as the sequence floor: a restarted agent is never taken for a replay.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    node.raise_sequence_floor(wall);
    // Wall-clock milliseconds (mod 2³²) as the replica's boot epoch: a restart takes far
    // longer than a millisecond, so no two boots of this node share one.
    node.set_boot_epoch((wall / 1_000_000) as u32);
    node.set_wire_epoch(cfg.boot);
    if let Some(k) = &cfg.authorities_key_hex {
        node.set_trust(authorities_key(k).map_err(DriverError::AuthoritiesKey)?);
    }
    if let Some(c) = &cfg.directory_cert_hex {
        check_directory_certificate(c, cfg.authorities_key_hex.as_deref(), &dir)
            .map_err(DriverError::DirectoryCertificate)?;
        let sig: Option<[u8; 64]> = hex::decode(c.trim()).ok().and_then(|b| b.try_into().ok());
        if let Some(sig) = sig {
            node.log_directory_certificate(&sig);
        }
    }
    node.set_measurement(measurement);
    if !cfg.approved_builds.is_empty() {
        let entries = cfg.approved_build_entries()?;
        node.require_attestation(&entries)
            .map_err(|e| DriverError::ApprovedBuilds(e.to_string()))?;
    }
    node.set_order_floor(cfg.order_serial_floor);
    if cfg!(feature = "protocol-n1") {
        // The previous protocol's build (tests of a mixed N/N-1 lab only): one version below
        // what the configuration says, which every neighbour of version N still accepts.
        let v = node.build().version.saturating_sub(1);
        node.set_build(lightcone_core::update::Build::new(v)?);
    }
    if cfg!(feature = "defect-drop-forward") {
        // The deliberately defective build (tests of `lightcone update`'s gates only).
        let b = node.build().with_forward_drop(crate::DEFECT_DROP_PPM)?;
        node.set_build(b);
    }
    tracing::info!(
        build = crate::BUILD_VARIANT,
        protocol = node.build().version,
        forward_drop_ppm = node.build().forward_drop_ppm,
        boot = cfg.boot,
        "agent build"
    );
    let verifier = Verifier::new(cfg.operator_public_key_hex.as_deref(), cfg.id)
        .map_err(DriverError::OperatorKey)?;
    if !cfg.revoked_ids.is_empty() {
        verifier
            .revoke(&cfg.revoked_ids)
            .map_err(|e| DriverError::Revoked(e.to_string()))?;
    }
    let verifier = Arc::new(verifier);
    let name = dir
        .get(cfg.id)
        .map(|e| e.name.clone())
        .unwrap_or_else(|| cfg.id.to_string());

    // Sockets: one per distinct local address.
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut by_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let mut links: BTreeMap<u32, Link> = BTreeMap::new();
    let mut peers: BTreeMap<(usize, IpAddr), u32> = BTreeMap::new();
    for nb in &cfg.neighbors {
        let ip = IpAddr::V4(nb.local_ip);
        let idx = *by_ip.entry(ip).or_insert_with(|| {
            addrs.push(SocketAddr::new(ip, cfg.udp_port));
            addrs.len() - 1
        });
        links.insert(
            nb.id,
            Link {
                socket: idx,
                addr: SocketAddr::new(IpAddr::V4(nb.peer_ip), cfg.udp_port),
            },
        );
        peers.insert((idx, IpAddr::V4(nb.peer_ip)), nb.id);
    }
    let what = || {
        let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        format!("bind {}", a.join(", "))
    };
    let mut sockets = Vec::with_capacity(addrs.len());
    for s in bind(&addrs).map_err(io(what()))? {
        s.set_nonblocking(true).map_err(io(what()))?;
        sockets.push(Arc::new(UdpSocket::from_std(s).map_err(io(what()))?));
    }

    // Control API.
    let sock_path = cfg.control_socket.clone();
    let _ = std::fs::remove_file(&sock_path);
    let listener =
        UnixListener::bind(&sock_path).map_err(io(format!("bind {}", sock_path.display())))?;
    // Only the owner (the supervisor runs as the same user, root) may drive the agent:
    // anyone who can connect can crash its clock or write its store.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("chmod 0600 {}", sock_path.display())))?;
    }
    Ok(Prepared {
        cfg,
        node,
        clock,
        name,
        sockets,
        links,
        peers,
        listener,
        dir,
        verifier,
    })
}

impl Prepared {
    /// Runs the tile until `shutdown` resolves, `POST /shutdown` arrives, or an I/O error.
    /// Dropping the future (a crash fault in a multi-tile agent) ends it at once: its
    /// sockets and listener close, nothing more is sent.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DriverError> {
        let Prepared {
            cfg,
            mut node,
            clock,
            name,
            sockets,
            links,
            peers,
            listener,
            dir,
            verifier,
        } = self;
        let sock_path = cfg.control_socket.clone();
        let metrics = Metrics::new(&name)?;
        metrics
            .set_ground_truth_uncertainty(cfg.epoch_uncertainty_ns as f64 * cfg.time_scale / 1e9);
        let (rx_tx, mut rx) = mpsc::channel::<(usize, SocketAddr, Vec<u8>)>(1024);
        let mut tasks = TaskSet(Vec::new());
        for (i, s) in sockets.iter().enumerate() {
            let s = s.clone();
            let tx = rx_tx.clone();
            tasks.0.push(tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM + 1];
                loop {
                    match s.recv_from(&mut buf).await {
                        Ok((n, from)) => {
                            // Full queue: drop, as a NIC would.
                            let _ = tx.try_send((i, from, buf[..n].to_vec()));
                        }
                        Err(e) => tracing::debug!("recv error: {e}"),
                    }
                }
            }));
        }
        let (ctl_tx, mut ctl) = mpsc::channel::<ControlMsg>(64);
        tasks.0.push(tokio::spawn(serve_http(
            listener,
            ctl_tx,
            dir,
            Arc::new(Gate {
                verifier,
                refused: metrics.capability_refused.clone(),
                node: name.clone(),
            }),
        )));
        tracing::info!(node = %name, addr = %node.addr(), links = links.len(), "agent started");

        let mut driver_counters: BTreeMap<DriverOutcome, u64> = BTreeMap::new();
        let mut out = Outbox::new(
            Params::default().outbox_datagrams,
            Params::default().outbox_events,
        );
        node.start(clock.now(), &mut out);
        // Puts awaiting their answer (a `cell` put's comes when members ack), by request id.
        let mut pending_put: BTreeMap<u64, (bool, oneshot::Sender<Reply>)> = BTreeMap::new();
        // Object puts and reads awaiting their event, by request id (same counter).
        let mut pending_object: BTreeMap<u64, oneshot::Sender<Reply>> = BTreeMap::new();
        let mut next_request = 0u64;
        tokio::pin!(shutdown);
        let mut stop = false;
        while !stop {
            // Apply outputs.
            for t in out.transmits.drain(..) {
                let Some(l) = links.get(&t.to) else { continue };
                if let Err(e) = crate::dscp::try_send_marked(&sockets[l.socket], &t.bytes, l.addr) {
                    *driver_counters.entry(DriverOutcome::SendError).or_default() += 1;
                    tracing::trace!("send to {}: {e}", l.addr);
                }
            }
            for e in out.events.drain(..) {
                match e {
                    Event::MemberChanged {
                        node: m,
                        state,
                        incarnation,
                    } => {
                        tracing::info!(
                            member = m,
                            state = state.as_str(),
                            incarnation,
                            "membership"
                        )
                    }
                    Event::KvWritten {
                        request,
                        written,
                        durability,
                        holders,
                        ..
                    } => {
                        if let Some((ctx, tx)) = pending_put.remove(&request) {
                            let _ = tx.send(put_reply(ctx, &written, durability, &holders));
                        }
                    }
                    Event::KvPutFailed {
                        request,
                        written,
                        holders,
                        needed,
                        reason,
                        ..
                    } => {
                        tracing::warn!(%reason, "cell write not acknowledged");
                        if let Some((_, tx)) = pending_put.remove(&request) {
                            let body = serde_json::json!({
                                "error": reason,
                                "dot": written.dot,
                                "context": written.context,
                                "holders": holders,
                                "needed": needed,
                            });
                            let _ = tx.send((
                                StatusCode::GATEWAY_TIMEOUT,
                                "application/json",
                                body.to_string().into_bytes(),
                            ));
                        }
                    }
                    Event::Quarantined { node: q, accusers } => {
                        tracing::warn!(
                            node = q,
                            ?accusers,
                            "neighbourhood watch quarantined a node"
                        )
                    }
                    Event::Stopped => stop = true,
                    Event::ObjectStored { request, object } => {
                        if let Some(tx) = pending_object.remove(&request) {
                            // The stripe's placement (tile ids by shard index) as the
                            // writer recorded it, so an experiment can record it too.
                            let holders = node
                                .store()
                                .and_then(|st| st.store().meta(&object))
                                .map(|m| m.holders.clone())
                                .unwrap_or_default();
                            let body = serde_json::json!({ "stored": object, "holders": holders });
                            let _ = tx.send((
                                StatusCode::OK,
                                "application/json",
                                body.to_string().into_bytes(),
                            ));
                        }
                    }
                    Event::ObjectPutFailed {
                        request,
                        object,
                        reason,
                    } => {
                        tracing::warn!(%object, %reason, "object put failed");
                        if let Some(tx) = pending_object.remove(&request) {
                            let _ = tx.send((
                                StatusCode::GATEWAY_TIMEOUT,
                                "text/plain",
                                format!("{reason}\n").into_bytes(),
                            ));
                        }
                    }
                    Event::ObjectRead { request, data } => {
                        if let Some(tx) = pending_object.remove(&request) {
                            let _ = tx.send((StatusCode::OK, "application/octet-stream", data));
                        }
                    }
                    Event::ObjectReadFailed { request, reason } => {
                        if let Some(tx) = pending_object.remove(&request) {
                            // No tile asked knows the object: not found, as when the
                            // agent refuses the read itself.
                            let status = if reason.starts_with("unknown object") {
                                StatusCode::NOT_FOUND
                            } else {
                                StatusCode::SERVICE_UNAVAILABLE
                            };
                            let _ =
                                tx.send((status, "text/plain", format!("{reason}\n").into_bytes()));
                        }
                    }
                    Event::ObjectLost { object } => tracing::error!(%object, "object lost"),
                    other => tracing::debug!(?other, "event"),
                }
            }
            if stop {
                break;
            }
            let sleep_to = node
                .poll_timeout()
                .map(|t| clock.to_real(t))
                .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    let _ = node.command(clock.now(), &Command::Shutdown, &mut out);
                }
                Some((msg, reply)) = ctl.recv() => {
                    let now = clock.now();
                    let r: Option<Reply> = match msg {
                        Control::Metrics => Some((StatusCode::OK, "text/plain; version=0.0.4", metrics.render(&mut node, now, &driver_counters).into_bytes())),
                        Control::State => {
                            let mut snap = node.snapshot();
                            snap.time = node.time_view(now);
                            snap.thermal = node.heat().map(|h| h.stats(now));
                            let mut v = serde_json::to_value(&snap).unwrap_or_default();
                            if let Some(o) = v.as_object_mut() {
                                o.insert("runtime".into(), serde_json::to_value(metrics.runtime.view()).unwrap_or_default());
                            }
                            Some((StatusCode::OK, "application/json", serde_json::to_vec_pretty(&v).unwrap_or_default()))
                        }
                        Control::Clock(fault) => {
                            Some(match node.command(now, &Command::ClockFault(fault), &mut out) {
                                Err(e) => refusal(StatusCode::CONFLICT, &e),
                                Ok(_) => {
                                    tracing::warn!(?fault, "clock fault injected");
                                    (StatusCode::OK, "application/json", serde_json::to_vec(&serde_json::json!({ "injected": fault })).unwrap_or_default())
                                }
                            })
                        }
                        Control::Byzantine(b) => {
                            let _ = node.command(now, &Command::Byzantine(b), &mut out);
                            tracing::warn!(behaviour = ?b.names(), "byzantine behaviour set");
                            Some((StatusCode::OK, "application/json", serde_json::to_vec(&serde_json::json!({ "behaviour": b.names() })).unwrap_or_default()))
                        }
                        Control::StealKey { node: victim, key } => {
                            Some(match node.command(now, &Command::StealKey { node: victim, key }, &mut out) {
                                Err(e) => refusal(StatusCode::BAD_REQUEST, &e),
                                Ok(_) => {
                                    tracing::warn!(victim, "signing frames with a stolen key");
                                    (StatusCode::OK, "application/json", serde_json::to_vec(&serde_json::json!({ "impersonating": victim })).unwrap_or_default())
                                }
                            })
                        }
                        Control::RotateKey { secret, certificate } => {
                            Some(match node.command(now, &Command::RotateKey { secret, certificate }, &mut out) {
                                Err(e) => refusal(StatusCode::BAD_REQUEST, &e),
                                Ok(_) => {
                                    tracing::warn!("key rotation: certificate applied and flooded; signing with the new key shortly");
                                    (StatusCode::OK, "text/plain", b"rotated\n".to_vec())
                                }
                            })
                        }
                        Control::TrustEntry(bytes) => {
                            Some(match node.command(now, &Command::TrustEntry(bytes), &mut out) {
                                Err(e) => refusal(StatusCode::BAD_REQUEST, &e),
                                Ok(_) => {
                                    tracing::warn!("threshold-signed trust entry applied and flooded");
                                    (StatusCode::OK, "text/plain", b"applied\n".to_vec())
                                }
                            })
                        }
                        Control::RevokeKey { node: subject } => {
                            Some(match node.command(now, &Command::BftRevoke { node: subject }, &mut out) {
                                Err(e @ CommandError::NoBft) => refusal(StatusCode::CONFLICT, &e),
                                Err(e) => refusal(StatusCode::BAD_REQUEST, &e),
                                Ok(_) => {
                                    tracing::warn!(subject, "key revocation submitted to the cell's BFT group");
                                    (StatusCode::OK, "application/json", serde_json::to_vec(&serde_json::json!({ "submitted": subject })).unwrap_or_default())
                                }
                            })
                        }
                        Control::Send { dst, data } => {
                            Some(match node.command(now, &Command::Send { dst, data }, &mut out) {
                                Err(e) => refusal(StatusCode::BAD_REQUEST, &e),
                                Ok(_) => (StatusCode::OK, "text/plain", b"sent\n".to_vec()),
                            })
                        }
                        Control::Task(spec) => {
                            Some(match node.command(now, &Command::TaskSubmit(spec), &mut out) {
                                Err(e) => refusal(StatusCode::CONFLICT, &e),
                                Ok(r) => (StatusCode::OK, "application/json", serde_json::to_vec(&r).unwrap_or_default()),
                            })
                        }
                        Control::Leases => {
                            let leases = node.heat().map(|h| h.leases(now)).unwrap_or_default();
                            Some((StatusCode::OK, "application/json", serde_json::to_vec_pretty(&leases).unwrap_or_default()))
                        }
                        Control::ObjectPut { object, data } => {
                            next_request += 1;
                            let request = next_request;
                            match node.command(now, &Command::ObjectPut { request, object, data }, &mut out) {
                                Err(e @ CommandError::NoStore) => Some(refusal(StatusCode::NOT_IMPLEMENTED, &e)),
                                Err(e) => Some(refusal(StatusCode::BAD_REQUEST, &e)),
                                Ok(_) => {
                                    pending_object.insert(request, reply);
                                    continue;
                                }
                            }
                        }
                        Control::ObjectGet { object } => {
                            next_request += 1;
                            let request = next_request;
                            match node.command(now, &Command::ObjectGet { request, object }, &mut out) {
                                Err(e @ CommandError::NoStore) => Some(refusal(StatusCode::NOT_IMPLEMENTED, &e)),
                                Err(CommandError::Store(m)) if m.starts_with("unknown object") => Some((StatusCode::NOT_FOUND, "text/plain", format!("{m}\n").into_bytes())),
                                Err(e) => Some(refusal(StatusCode::BAD_REQUEST, &e)),
                                Ok(_) => {
                                    pending_object.insert(request, reply);
                                    continue;
                                }
                            }
                        }
                        Control::Quarantine { node: q } => {
                            let _ = node.command(now, &Command::Quarantine { node: q }, &mut out);
                            Some((StatusCode::OK, "text/plain", format!("quarantined {q}\n").into_bytes()))
                        }
                        Control::Put { key, value, context, durability } => {
                            next_request += 1;
                            let request = next_request;
                            match node.command(now, &Command::Put { request, key, value, durability }, &mut out) {
                                Err(e) => Some(refusal(StatusCode::NOT_IMPLEMENTED, &e)),
                                Ok(NodeReply::KvWritten { written, durability, holders, .. }) => {
                                    Some(put_reply(context, &written, durability, &holders))
                                }
                                // Answered later by its KvWritten / KvPutFailed event.
                                Ok(_) => {
                                    pending_put.insert(request, (context, reply));
                                    continue;
                                }
                            }
                        }
                        Control::Get { key, siblings } => {
                            Some(get_reply(siblings, node.command(now, &Command::Get { key }, &mut out)))
                        }
                        Control::Order(bytes) => {
                            Some(order_reply(&bytes, node.command(now, &Command::Order(bytes.clone()), &mut out), node.darkness()))
                        }
                        Control::Shutdown => {
                            let _ = node.command(now, &Command::Shutdown, &mut out);
                            Some((StatusCode::OK, "text/plain", b"stopping\n".to_vec()))
                        }
                    };
                    if let Some(r) = r {
                        let _ = reply.send(r);
                    }
                }
                Some((sock, from, bytes)) = rx.recv() => {
                    let now = clock.now();
                    match peers.get(&(sock, from.ip())) {
                        Some(id) => node.handle(now, Input::Datagram { from: *id, bytes: &bytes }, &mut out),
                        None => *driver_counters.entry(DriverOutcome::UnknownSource).or_default() += 1,
                    }
                }
                _ = tokio::time::sleep_until(sleep_to.into()) => {
                    let now = clock.now();
                    // Every timer due now, one per call; a bound so a timer that keeps re-arming
                    // for `now` cannot starve the sockets (the rest fire on the next turn).
                    for _ in 0..MAX_TIMERS_PER_WAKE {
                        let Some(at) = node.handle_timeout(now, &mut out) else { break };
                        metrics.observe_lateness(now.saturating_since(at).as_secs_f64());
                    }
                }
            }
        }
        // Flush the goodbye datagrams.
        for t in out.transmits.drain(..) {
            if let Some(l) = links.get(&t.to) {
                let _ = crate::dscp::try_send_marked(&sockets[l.socket], &t.bytes, l.addr);
            }
        }
        drop(tasks);
        let _ = std::fs::remove_file(&sock_path);
        tracing::info!(node = %name, "agent stopped");
        Ok(())
    }
}

/// The capability check of the HTTP task: every state-changing request passes it before it
/// reaches the node (see [`crate::caps`]); refusals are counted.
pub struct Gate {
    verifier: Arc<Verifier>,
    refused: IntCounterVec,
    node: String,
}

impl Gate {
    /// Checks the request's token for `op` on `key`: `None` admits it; a refusal is
    /// counted and is the answer (its status and reason), and nothing is changed.
    fn refusal(
        &self,
        auth: Option<&str>,
        op: Op,
        key: Option<&str>,
    ) -> Option<Response<Full<Bytes>>> {
        let req = caps::Request {
            op,
            key,
            now: std::time::SystemTime::now(),
        };
        let e = self.verifier.check(auth, &req).err()?;
        self.refused
            .with_label_values(&[&self.node, e.reason()])
            .inc();
        tracing::warn!(
            op = op.as_str(),
            reason = e.reason(),
            "control request refused: {e}"
        );
        Some(resp(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
            "text/plain",
            format!("{e}\n").into_bytes(),
        ))
    }
}

/// The capability a control request needs: its operation and the key it writes, or `None`
/// for a read (reads stay open on the 0600 socket: they change nothing).
fn capability_of(c: &Control) -> Option<(Op, Option<&str>)> {
    match c {
        Control::Metrics
        | Control::State
        | Control::Get { .. }
        | Control::Leases
        | Control::ObjectGet { .. } => None,
        Control::Put { key, .. } => Some((Op::KvWrite, Some(key.as_str()))),
        Control::ObjectPut { object, .. } => Some((Op::ObjectPut, Some(object.as_str()))),
        Control::Task(_) => Some((Op::TaskSubmit, None)),
        Control::Send { .. } => Some((Op::Send, None)),
        Control::Clock(_) | Control::Byzantine(_) | Control::StealKey { .. } => {
            Some((Op::Fault, None))
        }
        Control::Quarantine { .. }
        | Control::RevokeKey { .. }
        | Control::Shutdown
        | Control::Order(_)
        | Control::TrustEntry(_)
        | Control::RotateKey { .. } => Some((Op::Order, None)),
    }
}

/// `POST /steal-key` body (a test fault): whose key, and the key's 32-byte seed as hex.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StealKeyBody {
    node: u32,
    key: String,
}

impl StealKeyBody {
    fn parse(body: &[u8]) -> Result<(u32, ed25519_dalek::SigningKey), String> {
        let b: StealKeyBody = serde_json::from_slice(body)
            .map_err(|e| format!("body must be JSON {{\"node\": ID, \"key\": HEX}}: {e}"))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(b.key.trim(), &mut seed)
            .map_err(|e| format!("key must be 64 hex digits (a 32-byte seed): {e}"))?;
        Ok((b.node, ed25519_dalek::SigningKey::from_bytes(&seed)))
    }
}

/// `POST /rotate-key` body: the new key's 32-byte seed and the authorities' certificate
/// entry, both hex.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKeyBody {
    key: String,
    certificate: String,
}

impl RotateKeyBody {
    fn parse(body: &[u8]) -> Result<(ed25519_dalek::SigningKey, Vec<u8>), String> {
        let b: RotateKeyBody = serde_json::from_slice(body).map_err(|e| {
            format!("body must be JSON {{\"key\": HEX, \"certificate\": HEX}}: {e}")
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(b.key.trim(), &mut seed)
            .map_err(|e| format!("key must be 64 hex digits (a 32-byte seed): {e}"))?;
        let cert = hex::decode(b.certificate.trim())
            .map_err(|e| format!("certificate must be hex: {e}"))?;
        Ok((ed25519_dalek::SigningKey::from_bytes(&seed), cert))
    }
}

/// `POST /revoke` body: revocation ids (hex) of tokens to refuse from now on.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    revocation_ids: Vec<String>,
}

async fn serve_http(
    listener: UnixListener,
    ctl: mpsc::Sender<ControlMsg>,
    dir: Arc<Directory>,
    gate: Arc<Gate>,
) {
    let cfg = dir;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctl = ctl.clone();
        let cfg = cfg.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                handle_http(req, ctl.clone(), cfg.clone(), gate.clone())
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

const MAX_BODY: usize = 64 * 1024;

/// A request's body, at most `limit` bytes; the refusal says why.
async fn body_of(req: Request<Incoming>, limit: usize, what: &str) -> Result<Bytes, String> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|_| "unreadable body".to_string())?
        .to_bytes();
    if body.len() > limit {
        return Err(format!("{what}: at most {limit} bytes"));
    }
    Ok(body)
}

/// A node by id or name in the agent's directory.
fn node_of(dir: &Directory, who: &str) -> Option<u32> {
    who.parse::<u32>()
        .ok()
        .filter(|i| (*i as usize) < dir.len())
        .or_else(|| {
            dir.peers
                .iter()
                .position(|p| p.name == who)
                .map(|i| i as u32)
        })
}

fn resp(status: StatusCode, ctype: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle_http(
    req: Request<Incoming>,
    ctl: mpsc::Sender<ControlMsg>,
    cfg: Arc<Directory>,
    gate: Arc<Gate>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let bad = |m: &str| {
        Ok(resp(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{m}\n").into_bytes(),
        ))
    };
    let msg = match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => Control::Metrics,
        (&Method::GET, "/state") => Control::State,
        (&Method::POST, "/shutdown") => Control::Shutdown,
        // Threshold-signed bytes as hex: a runtime order, or a trust entry.
        (&Method::POST, p @ ("/order" | "/trust-entry")) => {
            let what = if p == "/order" { "order" } else { "entry" };
            let body = match body_of(req, MAX_BODY, "body too large").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match std::str::from_utf8(&body)
                .ok()
                .and_then(|t| hex::decode(t.trim()).ok())
            {
                Some(b) if p == "/order" => Control::Order(b),
                Some(b) => Control::TrustEntry(b),
                None => return bad(&format!("body must be the {what}'s bytes as hex")),
            }
        }
        (&Method::POST, "/clock") => {
            let body = match body_of(req, MAX_BODY, "body too large").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            let r: ClockFaultRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return bad(&format!(
                    "body must be JSON with one of step_ns, drift_ppb, drift, serve_bias_ns, pulsar_loss: {e}"
                )),
            };
            match r.to_fault() {
                Ok(f) => Control::Clock(f),
                Err(e) => return bad(&e),
            }
        }
        (&Method::POST, "/byzantine") => {
            let body = match body_of(req, MAX_BODY, "body too large").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match ByzantineRequest::parse(&body) {
                Ok(b) => Control::Byzantine(b),
                Err(e) => return bad(&e),
            }
        }
        (&Method::POST, "/rotate-key") => {
            let body = match body_of(req, MAX_BODY, "body too large").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match RotateKeyBody::parse(&body) {
                Ok((secret, certificate)) => Control::RotateKey {
                    secret: Box::new(secret),
                    certificate,
                },
                Err(e) => return bad(&e),
            }
        }
        (&Method::POST, "/steal-key") => {
            let body = match body_of(req, MAX_BODY, "body too large").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match StealKeyBody::parse(&body) {
                Ok((node, key)) => Control::StealKey {
                    node,
                    key: Box::new(key),
                },
                Err(e) => return bad(&e),
            }
        }
        (m, p) if p.starts_with("/kv/") && p.len() > 4 => {
            // The key is one path segment, percent-encoded by the client (`?` as %3F, `/`
            // as %2F): decoded here, once.
            let key = match crate::pct::decode(&p[4..]) {
                Ok(k) => k,
                Err(e) => return bad(&format!("key: {e}")),
            };
            let query = req.uri().query().unwrap_or("").to_string();
            let flag = |name: &str| {
                query
                    .split('&')
                    .any(|kv| kv == name || kv.strip_prefix(name) == Some("=1"))
            };
            if *m == Method::GET {
                Control::Get {
                    key,
                    siblings: flag("siblings"),
                }
            } else if *m == Method::POST || *m == Method::PUT {
                let body = match body_of(req, MAX_BODY, "body too large").await {
                    Ok(b) => b,
                    Err(e) => return bad(&e),
                };
                let durability = match query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("durability="))
                {
                    None => Durability::default(),
                    Some(d) => match d.parse::<Durability>() {
                        Ok(d) => d,
                        Err(e) => return bad(&e),
                    },
                };
                Control::Put {
                    key,
                    value: body.to_vec(),
                    context: flag("context"),
                    durability,
                }
            } else {
                return Ok(resp(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    Vec::new(),
                ));
            }
        }
        (&Method::POST, "/task") => {
            let body = match body_of(req, MAX_BODY, "body too large").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match serde_json::from_slice::<lightcone_core::heat::task::TaskSpec>(&body) {
                Ok(t) => Control::Task(t),
                Err(e) => return bad(&format!(
                    "body must be JSON {{\"compute\": N, \"duration_ns\": N, \"class\": \"hot\"|\"cold\", \"memory_mib\": N, \"bandwidth_mbps\": N}}: {e}"
                )),
            }
        }
        (&Method::GET, "/leases") => Control::Leases,
        (&Method::POST, "/revoke") => {
            let body = match body_of(req, MAX_BODY, "body too large").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            let ids = match serde_json::from_slice::<RevokeBody>(&body) {
                Ok(r) => r.revocation_ids,
                Err(e) => {
                    return bad(&format!(
                        "body must be JSON {{\"revocation_ids\": [\"hex\", ...]}}: {e}"
                    ))
                }
            };
            if let Some(r) = gate.refusal(auth.as_deref(), Op::Revoke, None) {
                return Ok(r);
            }
            return Ok(match gate.verifier.revoke(&ids) {
                Ok(held) => resp(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({ "held": held }).to_string().into_bytes(),
                ),
                Err(e) => resp(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("{e}\n").into_bytes(),
                ),
            });
        }
        (m, p) if p.starts_with("/objects/") && p.len() > 9 => {
            let object = match crate::pct::decode(&p[9..]) {
                Ok(k) => k,
                Err(e) => return bad(&format!("object id: {e}")),
            };
            if *m == Method::GET {
                Control::ObjectGet { object }
            } else if *m == Method::PUT || *m == Method::POST {
                match body_of(req, MAX_BODY, "object too large").await {
                    Ok(b) => Control::ObjectPut {
                        object,
                        data: b.to_vec(),
                    },
                    Err(e) => return bad(&e),
                }
            } else {
                return Ok(resp(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    Vec::new(),
                ));
            }
        }
        (&Method::POST, p) if p.starts_with("/send/") => {
            let who = &p["/send/".len()..];
            let Some(dst) = node_of(&cfg, who) else {
                return Ok(resp(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no node {who}\n").into_bytes(),
                ));
            };
            let body = match body_of(req, MAX_BLOB, "a message is one datagram").await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            Control::Send {
                dst,
                data: body.to_vec(),
            }
        }
        (&Method::POST, p) if p.starts_with("/quarantine/") || p.starts_with("/revoke-key/") => {
            let (verb, who) = p[1..].split_once('/').unwrap_or_default();
            match node_of(&cfg, who) {
                Some(node) if verb == "quarantine" => Control::Quarantine { node },
                Some(node) => Control::RevokeKey { node },
                None => {
                    return Ok(resp(
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        format!("no node {who}\n").into_bytes(),
                    ))
                }
            }
        }
        _ => {
            return Ok(resp(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found\n".to_vec(),
            ))
        }
    };
    if let Some((op, key)) = capability_of(&msg) {
        if let Some(r) = gate.refusal(auth.as_deref(), op, key) {
            return Ok(r);
        }
    }
    let (tx, rx) = oneshot::channel();
    if ctl.send((msg, tx)).await.is_err() {
        return Ok(resp(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            b"agent stopping\n".to_vec(),
        ));
    }
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok((s, c, b))) => Ok(resp(s, c, b)),
        _ => Ok(resp(
            StatusCode::GATEWAY_TIMEOUT,
            "text/plain",
            b"no answer\n".to_vec(),
        )),
    }
}

/// Where the control socket is (for tools and tests).
pub fn control_socket(cfg: &AgentConfig) -> PathBuf {
    cfg.control_socket.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver's outcome labels are metric label values dashboards read.
    #[test]
    fn driver_outcomes_keep_their_labels() {
        assert_eq!(DriverOutcome::SendError.as_str(), "send_error");
        assert_eq!(DriverOutcome::UnknownSource.as_str(), "unknown_source");
    }

    /// A group key that is not 32 bytes of hex (or not a point) is refused at start.
    #[test]
    fn a_bad_authorities_key_is_refused() {
        assert!(authorities_key("zz").is_err());
        assert!(authorities_key(&"00".repeat(31)).is_err());
        let k = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(authorities_key(&hex::encode(k.as_bytes())), Ok(k));
    }

    /// Orders' refusals: forged 403, replayed 409, junk 400; each changes nothing.
    #[test]
    fn order_refusals_keep_their_statuses() {
        use lightcone_core::update::dark::{Darkness, OrderError};
        let d = Darkness::default();
        let st = |e| order_reply(&[], Err(CommandError::Order(e)), &d).0;
        assert_eq!(st(OrderError::BadSignature), StatusCode::FORBIDDEN);
        assert_eq!(st(OrderError::NoKey), StatusCode::FORBIDDEN);
        assert_eq!(
            st(OrderError::Replayed { found: 1, last: 1 }),
            StatusCode::CONFLICT
        );
        assert_eq!(st(OrderError::Malformed), StatusCode::BAD_REQUEST);
        let (_, _, body) = order_reply(&[], Err(CommandError::Order(OrderError::BadSignature)), &d);
        assert_eq!(
            body,
            b"order refused: the order is not signed by a threshold of the authorities\n"
        );
    }

    /// A refused command answers with the words the agent always sent.
    #[test]
    fn refusals_keep_their_words() {
        let (status, _, body) = refusal(StatusCode::CONFLICT, &CommandError::NoTimeLayer);
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body, b"this node has no time layer\n");
        let (_, _, body) = refusal(
            StatusCode::NOT_IMPLEMENTED,
            &CommandError::TooManyPendingPuts(1024),
        );
        assert_eq!(
            body,
            b"1024 cell writes already await acknowledgement; retry later\n"
        );
        let (_, _, body) = refusal(StatusCode::BAD_REQUEST, &CommandError::NoSuchNode(7));
        assert_eq!(body, b"no node 7 to send to\n");
    }
}
