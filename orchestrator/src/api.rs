//! The supervisor's control API: the handlers of `/api/…` (status, link and node faults,
//! partitions, shutdown), `/metrics` (the link engine's series merged with every agent's)
//! and `/nodes/{n}/…` (an agent's metrics, state, key-value store and overlay sends,
//! proxied), their typed replies and their one error type ([`ApiError`], answered as
//! `{"error": "…"}`), and the [`Guard`] every route sits behind (`Host`, `Origin`, token).
//!
//! It works on the lab model ([`crate::lab`]) only; the dashboard is its neighbour, not its
//! dependency. The lifecycle ([`crate::supervisor`]) mounts these handlers and the
//! dashboard's in one route table.
//!
//! # Guard
//! Checked before any handler, in this order:
//! 1. `Host` must name the supervisor itself: `127.0.0.1:PORT`, `localhost:PORT` or
//!    `[::1]:PORT`. A page served from an attacker's domain that re-resolves to 127.0.0.1
//!    (DNS rebinding) sends its own domain as `Host` and is refused, so it can read neither
//!    the dashboard (which embeds the token) nor any JSON.
//! 2. `Origin`, when present, must be `http://` + one of those: browsers send it on
//!    cross-origin requests, and a form or a `text/plain` fetch from another site needs no
//!    CORS preflight, so this refuses them even before the token check.
//! 3. Every method other than `GET`/`HEAD` changes state and needs the lab's token in
//!    [`TOKEN_HEADER`] (the dashboard page embeds it; the CLI and the runner read it from
//!    `supervisor.json`, which is 0600).
//!
//! Refusals are `403` (address or origin) or `401` (token) with a JSON `{"error": …}` that
//! says what was wrong; the handler never ran, so nothing changed.
//!
//! # Replies
//! Typed (`Serialize + Deserialize`, so a client reads what the supervisor writes). Their
//! fields are declared in the order the `serde_json::json!` objects they replace printed
//! them (sorted), so the bytes on the wire are the same.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::agents::{agent_exchange, agent_request};
use crate::http::{error_response, AT_HEADER, TOKEN_HEADER};
use crate::lab::{status_of, Lab, LabError, LabStatus, LinkChange, LinkRuntime, Partition};
use crate::link::metrics as link_metrics;
use crate::plan;
use lightcone_agent::caps::{Caveats, Op, OperatorKey};

/// Why the API refused or failed a request; answered as its status with
/// `{"error": message}`. Each variant says what was left changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `404`: a node or link the lab does not have. Nothing changed.
    #[error(transparent)]
    Unknown(#[from] LabError),
    /// `404`: a path that names no action or resource. Nothing changed.
    #[error("{0}")]
    NoSuchAction(String),
    /// `400`: a request the lab cannot take (a bad value or body, no agents, unshaped
    /// links). Nothing changed.
    #[error("{0}")]
    Bad(String),
    /// `409`: the agent to crash is not running. Nothing changed.
    #[error("{node}'s agent is not running: nothing to crash (restart it first)")]
    NotRunning { node: String },
    /// `500`: the link engine or an agent start failed. The lab's record (link models,
    /// events) already holds the change; the engine got as far as the error.
    #[error("{0}")]
    Internal(String),
    /// `502`: the node's agent could not be reached. The fault was not forwarded.
    #[error("agent {node}: {error}")]
    Unreachable { node: String, error: String },
    /// The node's agent refused the forwarded request, with its own status and words.
    #[error("agent {node}: {message}")]
    Agent {
        status: StatusCode,
        node: String,
        message: String,
    },
    /// `403`: the guard refused the `Host` or `Origin`. The handler never ran.
    #[error("{0}")]
    Forbidden(String),
    /// `401`: the guard found no or a wrong token. The handler never ran.
    #[error("{0}")]
    Unauthorized(String),
}

impl ApiError {
    /// The status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unknown(_) | ApiError::NoSuchAction(_) => StatusCode::NOT_FOUND,
            ApiError::Bad(_) => StatusCode::BAD_REQUEST,
            ApiError::NotRunning { .. } => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Agent { status, .. } => *status,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    fn unreachable(node: &str, e: impl std::fmt::Display) -> Self {
        ApiError::Unreachable {
            node: node.into(),
            error: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status(), self.to_string())
    }
}

/// `POST /api/nodes/{node}/crash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashReply {
    pub node: String,
    pub was_running: bool,
}

/// `POST /api/nodes/{node}/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartReply {
    pub node: String,
    /// The new agent process.
    pub pid: u32,
}

/// `POST /api/nodes/{node}/{crash|restart}`: one of the two, as its own JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeFaultReply {
    Crash(CrashReply),
    Restart(RestartReply),
}

/// `POST /api/nodes/{node}/clock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockReply {
    pub injected: lightcone_timing::ClockFault,
    pub node: String,
}

/// `POST /api/nodes/{node}/byzantine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByzantineReply {
    /// The behaviours now on; empty: honest again.
    pub behaviour: Vec<String>,
    pub node: String,
}

/// `POST /api/nodes/{node}/steal-key`: `{"victim": NAME}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StealKey {
    pub victim: String,
}

/// `POST /api/nodes/{node}/steal-key`'s answer: `thief` now signs frames as `victim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StealKeyReply {
    pub thief: String,
    pub victim: String,
}

/// `POST /api/nodes/{node}/rotate-key`'s answer: the node's new key and its certificate's
/// serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyReply {
    pub node: String,
    pub serial: u64,
    /// The new public key (hex).
    pub key: String,
}

/// `POST /api/nodes/{node}/revoke-key`: `{"node": NAME}`, the node whose key to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    pub node: String,
}

/// `POST /api/nodes/{node}/revoke-key`'s answer: submitted to `by`'s cell's BFT group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeKeyReply {
    pub by: String,
    pub node: String,
}

/// `POST /api/partition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReply {
    /// Links changed.
    pub links: usize,
    /// Whether they are up now (a heal) or down (a partition).
    pub up: bool,
}

/// `POST /api/shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownReply {
    pub shutting_down: bool,
}

/// What the API's handlers share: the lab and the lifecycle's shutdown signal.
#[derive(Clone)]
pub struct ApiState {
    pub lab: Arc<Mutex<Lab>>,
    pub shutdown: Arc<tokio::sync::Notify>,
    /// The lab's operator root key (`None` without agents): the supervisor mints, for each
    /// request it forwards to an agent, a token for that operation on that node (and key),
    /// valid for [`PROXY_TOKEN_TTL`].
    pub operator: Option<Arc<OperatorKey>>,
}

/// Lifetime of the token the supervisor mints for one forwarded request: longer than the
/// longest forward (15 s, object puts), short enough that a copy seen in a log is soon
/// useless.
pub const PROXY_TOKEN_TTL: Duration = Duration::from_secs(30);

/// Refuses `verb` on a lab across hosts: the key verbs read node key files and name nodes
/// by number, and across hosts a host's numbering is not the lab's. Nothing is changed.
fn not_across_hosts(s: &ApiState, verb: &str) -> Result<(), ApiError> {
    let lab = s.lab.lock().expect("lab lock");
    if lab.agents.as_ref().is_some_and(|a| a.is_lab_wide()) {
        return Err(ApiError::Bad(format!(
            "{verb} is not built for a lab across hosts yet (lab {} is one host's part of one); nothing was changed",
            lab.dir.lab
        )));
    }
    Ok(())
}

/// A token for `op` on node `id` (and, with `key`, that key or object id and those it
/// prefixes), minted by the supervisor for one forwarded request. `id` is this host's; the
/// token names the node's number in the whole lab (they differ in a lab across hosts).
fn grant(s: &ApiState, id: usize, op: Op, key: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(k) = &s.operator else {
        return Ok(None);
    };
    let node = {
        let lab = s.lab.lock().expect("lab lock");
        lab.agents.as_ref().map_or(id, |a| a.lab_id(id))
    };
    let c = Caveats {
        op: Some(op),
        scope: key.map(String::from),
        node: Some(node as u32),
        expires: Some(std::time::SystemTime::now() + PROXY_TOKEN_TTL),
    };
    k.mint(&c).map(Some).map_err(ApiError::internal)
}

/// `GET /api/status`.
pub async fn api_status(State(s): State<ApiState>) -> Json<LabStatus> {
    Json(status_of(&mut s.lab.lock().expect("lab lock")))
}

/// `POST /api/links/{a}/{b}/set`: change both directions' model. A bad value changes
/// nothing; an engine error leaves the lab's record changed and the engine as far as it got.
pub async fn api_link_set(
    State(s): State<ApiState>,
    UrlPath((a, b)): UrlPath<(String, String)>,
    Json(change): Json<LinkChange>,
) -> Result<Json<LinkRuntime>, ApiError> {
    let cross = s.lab.lock().expect("lab lock").cross_index(&a, &b);
    if let Some(k) = cross {
        return cross_change(&s, k, Some(&change), None).await;
    }
    let (i, snapshot) = {
        let mut lab = s.lab.lock().expect("lab lock");
        let i = lab.link_index(&a, &b)?;
        if !lab.engine.shapes() && change.shapes() {
            return Err(ApiError::Bad(format!("lab {} runs unshaped links (--link-engine none); bring it up with --link-engine wire or netem to shape links", lab.plan.lab)));
        }
        let mut rt = lab.links[i].clone();
        change.apply_to(&mut rt.a_to_b).map_err(ApiError::Bad)?;
        change.apply_to(&mut rt.b_to_a).map_err(ApiError::Bad)?;
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

/// Change this host's end `k` of a link to another host (a multi-host worker's): `change`
/// applies to the direction this host sends (the far host's worker applies it to the
/// other, `lightcone link` asks both), `up` takes the link up or down. The answer gives
/// this host's configured direction for both.
async fn cross_change(
    s: &ApiState,
    k: usize,
    change: Option<&LinkChange>,
    up: Option<bool>,
) -> Result<Json<LinkRuntime>, ApiError> {
    let (pending, rt) = {
        let mut lab = s.lab.lock().expect("lab lock");
        let mut rt = lab.cross[k].clone();
        if let Some(change) = change {
            if !lab.engine.shapes() && change.shapes() {
                return Err(ApiError::Bad(format!("lab {} runs unshaped links (--link-engine none); bring it up with --link-engine wire or netem to shape links", lab.plan.lab)));
            }
            change.apply_to(&mut rt.configured).map_err(ApiError::Bad)?;
        }
        if let Some(up) = up {
            rt.up = up;
        }
        let shaped = rt.shaped(lab.plan.time_scale).map_err(ApiError::Bad)?;
        lab.cross[k] = rt.clone();
        let e = &rt.end;
        lab.event(
            match (change, up) {
                (Some(_), _) => "link_set",
                (None, Some(true)) => "link_up",
                _ => "link_down",
            },
            format!(
                "{} (to host {}) {}",
                e.link,
                e.remote_host,
                change
                    .map(|c| serde_json::to_string(c).unwrap_or_default())
                    .unwrap_or_default()
            ),
        );
        let netns = lab.plan.nodes[e.node].netns.clone();
        (
            lab.engine.set_cross(
                &e.link,
                &netns,
                &e.ifname,
                (e.peer_ip, e.peer_mac.0),
                &shaped,
                rt.up,
            ),
            rt,
        )
    };
    pending.await.map_err(ApiError::internal)?;
    Ok(Json(LinkRuntime {
        a_to_b: rt.configured.clone(),
        b_to_a: rt.configured,
        up: rt.up,
    }))
}

/// Hand link `i`'s runtime to the engine. The lock is held only for the engine's
/// synchronous part; its kernel part is awaited after.
async fn push(s: &ApiState, i: usize) -> Result<(), ApiError> {
    let pending = {
        let lab = s.lab.lock().expect("lab lock");
        let rt = &lab.links[i];
        lab.engine.set(i, &rt.a_to_b, &rt.b_to_a, rt.up)
    };
    pending.await.map_err(ApiError::internal)
}

/// `POST /api/links/{a}/{b}/{up|down}`.
pub async fn api_link_state(
    State(s): State<ApiState>,
    UrlPath((a, b, what)): UrlPath<(String, String, String)>,
) -> Result<Json<LinkRuntime>, ApiError> {
    let up = match what.as_str() {
        "up" => true,
        "down" => false,
        _ => {
            return Err(ApiError::NoSuchAction(format!(
                "no link action {what:?}; use up or down"
            )))
        }
    };
    let cross = s.lab.lock().expect("lab lock").cross_index(&a, &b);
    if let Some(k) = cross {
        return cross_change(&s, k, None, Some(up)).await;
    }
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

fn no_agents(lab: &Lab) -> ApiError {
    ApiError::Bad(format!(
        "lab {} runs without agents (--no-agents)",
        lab.plan.lab
    ))
}

/// `POST /api/nodes/{node}/{crash|restart}`.
pub async fn api_node_fault(
    State(s): State<ApiState>,
    UrlPath((node, what)): UrlPath<(String, String)>,
) -> Result<Json<NodeFaultReply>, ApiError> {
    let mut guard = s.lab.lock().expect("lab lock");
    let lab = &mut *guard;
    let id = lab.node(&node)?;
    let Some(agents) = lab.agents.as_mut() else {
        return Err(no_agents(lab));
    };
    match what.as_str() {
        "crash" => {
            // Crashing a node that is not running injects nothing: say so, so a scenario
            // that meant to crash it fails instead of measuring a fault that never was.
            if !agents.kill(id) {
                return Err(ApiError::NotRunning { node });
            }
            lab.event("crash", node.clone());
            Ok(Json(NodeFaultReply::Crash(CrashReply {
                node,
                was_running: true,
            })))
        }
        "restart" => {
            let pid = agents
                .start(&lab.plan, id, &lab.dir, &mut lab.ledger)
                .map_err(ApiError::internal)?;
            lab.event("restart", node.clone());
            Ok(Json(NodeFaultReply::Restart(RestartReply { node, pid })))
        }
        _ => Err(ApiError::NoSuchAction(format!(
            "no node action {what:?}; use crash or restart"
        ))),
    }
}

/// `POST /api/nodes/{node}/clock`: a clock fault (body: the agent's
/// [`ClockFaultRequest`](lightcone_core::config::ClockFaultRequest) JSON), checked here and
/// forwarded to the node's agent (`POST /clock`).
pub async fn api_node_clock(
    State(s): State<ApiState>,
    UrlPath(node): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<ClockReply>, ApiError> {
    let req: lightcone_core::config::ClockFaultRequest = serde_json::from_slice(&body)
        .map_err(|e| {
            ApiError::Bad(format!(
                "body must be JSON with one of step_ns, drift_ppb, drift, serve_bias_ns, pulsar_loss: {e}"
            ))
        })?;
    let fault = req.to_fault().map_err(ApiError::Bad)?;
    let body = serde_json::to_vec(&req).unwrap_or_default();
    forward_node_fault(&s, &node, "/clock", body).await?;
    s.lab
        .lock()
        .expect("lab lock")
        .event("clock", format!("{node} {fault:?}"));
    Ok(Json(ClockReply {
        injected: fault,
        node,
    }))
}

/// `POST /api/nodes/{node}/byzantine`: `{"behaviour": [...]}` (any of
/// [`Byzantine::BEHAVIOURS`](lightcone_core::byzantine::Byzantine::BEHAVIOURS); `[]` makes the
/// node honest again), checked here and forwarded to the node's agent.
pub async fn api_node_byzantine(
    State(s): State<ApiState>,
    UrlPath(node): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<ByzantineReply>, ApiError> {
    let b = lightcone_core::config::ByzantineRequest::parse(&body).map_err(ApiError::Bad)?;
    let names: Vec<String> = b.names().into_iter().map(String::from).collect();
    let checked = lightcone_core::config::ByzantineRequest {
        behaviour: names.clone(),
    };
    let body = serde_json::to_vec(&checked).unwrap_or_default();
    forward_node_fault(&s, &node, "/byzantine", body).await?;
    s.lab.lock().expect("lab lock").event(
        "byzantine",
        if names.is_empty() {
            format!("{node} honest again")
        } else {
            format!("{node} {}", names.join(","))
        },
    );
    Ok(Json(ByzantineReply {
        behaviour: names,
        node,
    }))
}

/// `POST /api/nodes/{node}/steal-key` (a test fault, the scenario verb `steal_key`): hands
/// `node`'s agent the victim's secret key from the lab's `keys/`, and the agent signs data
/// frames as the victim to the victim's cell. Both must be nodes of the lab with agents.
pub async fn api_node_steal_key(
    State(s): State<ApiState>,
    UrlPath(thief): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<StealKeyReply>, ApiError> {
    let req: StealKey = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Bad(format!("body must be JSON {{\"victim\": NODE}}: {e}")))?;
    not_across_hosts(&s, "steal_key")?;
    let (vid, path) = {
        let lab = s.lab.lock().expect("lab lock");
        let vid = lab.node(&req.victim)?;
        (vid, crate::keys::secret_path(&lab.dir, vid))
    };
    if req.victim == thief {
        return Err(ApiError::Bad(format!("{thief} cannot steal its own key")));
    }
    let key = std::fs::read_to_string(&path).map_err(|e| {
        ApiError::Bad(format!(
            "{}'s key {}: {e} (only a lab with agents has node keys)",
            req.victim,
            path.display()
        ))
    })?;
    let body = serde_json::to_vec(&serde_json::json!({ "node": vid, "key": key.trim() }))
        .unwrap_or_default();
    forward_node_fault(&s, &thief, "/steal-key", body).await?;
    s.lab
        .lock()
        .expect("lab lock")
        .event("steal_key", format!("{thief} signs as {}", req.victim));
    Ok(Json(StealKeyReply {
        thief,
        victim: req.victim,
    }))
}

/// `POST /api/nodes/{node}/revoke-key`: asks `node`'s cell's BFT group (the topology's
/// `trust: {bft_verdicts: true}`) to revoke the named node's key; once decided, every
/// member refuses frames signed with it. The answer says the request was submitted; the
/// decision shows in the members' `/state` `revoked`.
pub async fn api_node_revoke_key(
    State(s): State<ApiState>,
    UrlPath(by): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<RevokeKeyReply>, ApiError> {
    let req: RevokeKey = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Bad(format!("body must be JSON {{\"node\": NODE}}: {e}")))?;
    not_across_hosts(&s, "revoke_key")?;
    let subject = s.lab.lock().expect("lab lock").node(&req.node)?;
    let path = format!("/revoke-key/{subject}");
    forward_to_agent(&s, &by, Op::Order, &path, Vec::new()).await?;
    s.lab.lock().expect("lab lock").event(
        "revoke_key",
        format!("{by} asks its cell to revoke {}", req.node),
    );
    tokio::spawn(countersign_revocation(s.clone(), by.clone(), subject));
    Ok(Json(RevokeKeyReply { by, node: req.node }))
}

/// `POST /api/nodes/{node}/rotate-key` (issue 17): the lab's authorities certify a fresh key
/// for `node` (t of their shares sign a certificate with the next serial) and hand both to
/// its agent, which floods the certificate and signs with the new key a second later; then
/// the new key replaces the node's key file and the certificate joins the lab's
/// `certificates`, so a restart boots with it and every agent started later takes it. An
/// agent that refuses changes nothing (no file is written).
pub async fn api_node_rotate_key(
    State(s): State<ApiState>,
    UrlPath(node): UrlPath<String>,
) -> Result<Json<RotateKeyReply>, ApiError> {
    not_across_hosts(&s, "rotate_key")?;
    let (id, dir, key_path) = {
        let lab = s.lab.lock().expect("lab lock");
        let id = lab.node(&node)?;
        if lab.agents.is_none() {
            return Err(no_agents(&lab));
        }
        (
            id,
            crate::state::LabDir {
                lab: lab.dir.lab.clone(),
                path: lab.dir.path.clone(),
            },
            crate::keys::secret_path(&lab.dir, id),
        )
    };
    let secret = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let public = secret.verifying_key().to_bytes();
    let (entry, serial) =
        crate::authority::certify_key(&dir, id as u32, public, &mut rand::rngs::OsRng)
            .map_err(|e| ApiError::Bad(format!("{node}'s key not rotated: {e}")))?;
    let seed = hex::encode(secret.to_bytes());
    let body = serde_json::to_vec(&serde_json::json!({ "key": seed, "certificate": entry }))
        .unwrap_or_default();
    forward_to_agent(&s, &node, Op::Order, "/rotate-key", body).await?;
    // Flooded from a running cell mate too: the node's own flood goes under its old key,
    // which a thief holding it may have silenced (receivers' replay windows pushed past its
    // sequence numbers). The certificate is threshold-signed, so any node may carry it.
    let mates: Vec<String> = {
        let lab = s.lab.lock().expect("lab lock");
        let a = lab.plan.nodes[id].addr;
        lab.plan
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                *i != id
                    && n.role != lightcone_core::config::Role::Authority
                    && (n.addr.layer, n.addr.cluster, n.addr.cell) == (a.layer, a.cluster, a.cell)
            })
            .map(|(_, n)| n.name.clone())
            .collect()
    };
    let mut carried = None;
    for m in &mates {
        let b = entry.clone().into_bytes();
        if forward_to_agent(&s, m, Op::Order, "/trust-entry", b)
            .await
            .is_ok()
        {
            carried = Some(m.clone());
            break;
        }
    }
    let saved = crate::state::write_private(&key_path, seed.as_bytes())
        .and_then(|()| crate::authority::add_certificate(&dir, &entry));
    if let Err(e) = saved {
        // The running agent has its new key; a restart would boot with the old one, which
        // the lab no longer accepts. Say so loudly.
        tracing::error!("{node}'s key rotated but not saved: {e}");
        return Err(ApiError::Bad(format!(
            "{node}'s key rotated in its agent but not saved ({e}): restart it only after \
             rotating again"
        )));
    }
    s.lab.lock().expect("lab lock").event(
        "rotate_key",
        format!(
            "{node}'s key rotated: certificate serial {serial}, flooded from {node}{}",
            carried.map_or(String::new(), |m| format!(" and {m}"))
        ),
    );
    Ok(Json(RotateKeyReply {
        node,
        serial,
        key: hex::encode(public),
    }))
}

/// How long the authorities wait for a cell's decision on a revocation before giving up.
pub const REVOCATION_WAIT: Duration = Duration::from_secs(30);

/// After `by`'s cell was asked to revoke `subject`'s key: the lab's authorities countersign
/// the cell's decision once a BFT quorum of the cell (n − f of its n members, f = ⌊(n−1)/3⌋:
/// at least f + 1 honest ones among them) lists it in `/state` `revoked` — a Revocation entry
/// signed with t of the authorities' threshold shares — and `by`'s agent floods it to the
/// whole lab (`POST /trust-entry`, `Payload::Trust`), so that tiles outside the cell refuse
/// the key too. Polls every 100 ms, gives up after [`REVOCATION_WAIT`]; what happened is a
/// lab event either way.
async fn countersign_revocation(s: ApiState, by: String, subject: usize) {
    let outcome = countersign(&s, &by, subject).await;
    let (kind, what) = match outcome {
        Ok(line) => ("revocation_signed", line),
        Err(why) => ("revocation_not_signed", why),
    };
    match kind {
        "revocation_signed" => tracing::info!("{what}"),
        _ => tracing::warn!("{what}"),
    }
    s.lab.lock().expect("lab lock").event(kind, what);
}

async fn countersign(s: &ApiState, by: &str, subject: usize) -> Result<String, String> {
    let (members, dir, name, public) = {
        let lab = s.lab.lock().expect("lab lock");
        let plan = &lab.plan;
        let cell = |i: usize| {
            let a = plan.nodes[i].addr;
            (a.layer, a.cluster, a.cell)
        };
        let byi = plan
            .nodes
            .iter()
            .position(|n| n.name == by)
            .ok_or_else(|| format!("no node {by}"))?;
        let members: Vec<(String, PathBuf)> = (0..plan.nodes.len())
            .filter(|i| cell(*i) == cell(byi))
            .filter(|i| plan.nodes[*i].role != lightcone_core::config::Role::Authority)
            .map(|i| {
                (
                    plan.nodes[i].name.clone(),
                    plan::agent_socket(&lab.dir.path, i),
                )
            })
            .collect();
        (
            members,
            crate::state::LabDir {
                lab: lab.dir.lab.clone(),
                path: lab.dir.path.clone(),
            },
            plan.nodes[subject].name.clone(),
            lab.agents
                .as_ref()
                .and_then(|a| a.public_key_hex(subject))
                .map(str::to_string),
        )
    };
    let n = members.len();
    let quorum = n - n.saturating_sub(1) / 3;
    let deadline = tokio::time::Instant::now() + REVOCATION_WAIT;
    let mut listed = 0;
    while listed < quorum {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{name}'s revocation not countersigned: {listed} of {n} members of {by}'s cell \
                 list it after {} s, a quorum is {quorum}",
                REVOCATION_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let polls = members.iter().map(|(_, sock)| {
            agent_request(
                sock,
                Method::GET,
                "/state",
                Vec::new(),
                Duration::from_millis(500),
                None,
            )
        });
        listed = futures::future::join_all(polls)
            .await
            .into_iter()
            .flatten()
            .filter(|(status, body)| {
                *status == 200
                    && serde_json::from_slice::<serde_json::Value>(body)
                        .ok()
                        .and_then(|v| {
                            v["revoked"]
                                .as_array()
                                .map(|a| a.iter().any(|x| x.as_u64() == Some(subject as u64)))
                        })
                        .unwrap_or(false)
            })
            .count();
    }
    // The key the cell revoked: the one `subject` signs with (its newest certificate's, or
    // the directory's).
    let key: [u8; 32] = match crate::authority::rotated_key(&dir, subject as u32) {
        Some((k, _)) => k,
        None => public
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{name} has no public key in the lab (no agents?)"))?,
    };
    let rec = crate::authority::record(&dir).map_err(|e| e.to_string())?;
    let (group, shares) =
        crate::authority::group_and_shares(&dir, usize::from(rec.t)).map_err(|e| e.to_string())?;
    let rev = lightcone_core::trust::threshold::Revocation {
        subject: subject as u32,
        key,
        at_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    let signers: Vec<&lightcone_core::trust::threshold::Share> = shares.iter().collect();
    let sig = lightcone_core::trust::threshold::sign(
        &group,
        &signers,
        &rev.message(),
        &mut rand::rngs::OsRng,
    )
    .map_err(|e| e.to_string())?;
    let entry = rev.entry(&sig).encode();
    forward_to_agent(
        s,
        by,
        Op::Order,
        "/trust-entry",
        hex::encode(entry).into_bytes(),
    )
    .await
    .map_err(|e| format!("{name}'s revocation signed but not flooded: {e}"))?;
    Ok(format!(
        "{name}'s key revoked by {listed} of {n} members of {by}'s cell, countersigned by {} of \
         {} authorities, flooded from {by}",
        rec.t,
        rec.members.len()
    ))
}

/// The control socket of `node`'s agent; a `400` when the lab runs without agents.
fn agent_socket(s: &ApiState, node: &str) -> Result<(usize, PathBuf), ApiError> {
    let lab = s.lab.lock().expect("lab lock");
    let id = lab.node(node)?;
    if lab.agents.is_none() {
        return Err(no_agents(&lab));
    }
    Ok((id, plan::agent_socket(&lab.dir.path, id)))
}

/// Forwards a checked fault request to `node`'s agent (`POST path`); the agent's refusal
/// comes back with its status and words.
async fn forward_node_fault(
    s: &ApiState,
    node: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(), ApiError> {
    forward_to_agent(s, node, Op::Fault, path, body)
        .await
        .map(drop)
}

/// `POST path` with `body` to `node`'s agent, with a capability for `op`: the agent's
/// answer, or its refusal with its status and words.
async fn forward_to_agent(
    s: &ApiState,
    node: &str,
    op: Op,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    let (id, sock) = agent_socket(s, node)?;
    let token = grant(s, id, op, None)?;
    let (status, reply) = agent_request(
        &sock,
        Method::POST,
        path,
        body,
        Duration::from_secs(5),
        token.as_deref(),
    )
    .await
    .map_err(|e| ApiError::unreachable(node, e))?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_success() {
        Ok(reply.to_vec())
    } else {
        Err(ApiError::Agent {
            status,
            node: node.into(),
            message: String::from_utf8_lossy(&reply).trim().to_string(),
        })
    }
}

/// `POST /api/partition`: see [`Partition`]. A bad link name changes nothing.
pub async fn api_partition(
    State(s): State<ApiState>,
    Json(p): Json<Partition>,
) -> Result<Json<PartitionReply>, ApiError> {
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
    Ok(Json(PartitionReply {
        links: idx.len(),
        up: p.heal,
    }))
}

/// `POST /api/shutdown`: the lifecycle tears the lab down.
pub async fn api_shutdown(State(s): State<ApiState>) -> Json<ShutdownReply> {
    s.shutdown.notify_one();
    Json(ShutdownReply {
        shutting_down: true,
    })
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

/// The supervisor's own metric families: the link engine's (the wire engine's registry, or
/// a netem lab's qdiscs read now).
async fn own_families(s: &ApiState) -> Vec<prometheus::proto::MetricFamily> {
    let (pending, host, cross) = {
        let lab = s.lab.lock().expect("lab lock");
        let ts = lab.plan.time_scale;
        let cross: Vec<link_metrics::CrossSample> = lab
            .cross
            .iter()
            .map(|c| link_metrics::CrossSample {
                link: c.end.link.clone(),
                to_host: c.end.remote_host.clone(),
                configured_s: c.configured.delay_ns as f64 / 1e9 / ts,
                underlay_s: c.end.underlay_one_way_ns as f64 / 1e9,
                up: c.up,
            })
            .collect();
        (
            lab.engine.families(lab.configured_delays_ns()),
            lab.host.clone(),
            link_metrics::cross_families(&lab.plan.lab, &cross),
        )
    };
    // Families cannot fail to read as a whole: unreadable ends are left out and logged.
    let mut fams = pending.await.unwrap_or_default();
    fams.extend(cross);
    fams.sort_by(|a, b| a.name().cmp(b.name()));
    if let Some(h) = host {
        link_metrics::label_all(&mut fams, "host", &h);
    }
    fams
}

/// `GET /metrics`: the link engine's series and every agent's, each family once.
pub async fn metrics_all(State(s): State<ApiState>) -> Response {
    let own = link_metrics::render(&own_families(&s).await);
    let sockets: Vec<(String, PathBuf)> = {
        let lab = s.lab.lock().expect("lab lock");
        lab.plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), plan::agent_socket(&lab.dir.path, i)))
            .filter(|_| lab.agents.is_some())
            .collect()
    };
    let mut texts = vec![own];
    let reqs = sockets.iter().map(|(_, p)| {
        agent_request(
            p,
            Method::GET,
            "/metrics",
            Vec::new(),
            Duration::from_millis(500),
            None,
        )
    });
    let answers = futures::future::join_all(reqs).await;
    // Which agents this scrape holds: one that did not answer in time (crashed, dark, or
    // too busy on an overloaded host) is missing from every family below, and says so here
    // rather than silently.
    let mut scraped = String::from(
        "# HELP lightcone_agent_scrape_ok 1 if the agent answered this scrape within 500 ms, else 0 (its series are missing from it)\n# TYPE lightcone_agent_scrape_ok gauge\n",
    );
    for ((name, _), answer) in sockets.iter().zip(answers) {
        let ok = match answer {
            Ok((200, body)) => {
                texts.push(String::from_utf8_lossy(&body).into_owned());
                1
            }
            _ => 0,
        };
        scraped.push_str(&format!(
            "lightcone_agent_scrape_ok{{node=\"{name}\"}} {ok}\n"
        ));
    }
    if !sockets.is_empty() {
        texts.push(scraped);
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
pub async fn metrics_links(State(s): State<ApiState>) -> Response {
    let text = link_metrics::render(&own_families(&s).await);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /nodes/{node}/{metrics|state|leases}`: the agent's own, passed through.
pub async fn node_proxy(
    State(s): State<ApiState>,
    UrlPath((node, what)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let path = match what.as_str() {
        "metrics" => "/metrics",
        "state" => "/state",
        "leases" => "/leases",
        _ => return Err(ApiError::NoSuchAction(format!("no node resource {what:?}"))),
    };
    proxy_to_agent(
        &s,
        &node,
        Method::GET,
        path,
        Vec::new(),
        Duration::from_secs(2),
        None,
    )
    .await
}

/// Forwards one request to `node`'s agent and answers with the agent's status, content type
/// and body, unchanged. `grant`: the operation (and key) a state-changing request does, for
/// which a token is minted; `None` for a read.
async fn proxy_to_agent(
    s: &ApiState,
    node: &str,
    method: Method,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
    grant_for: Option<(Op, Option<&str>)>,
) -> Result<Response, ApiError> {
    let (id, sock) = {
        let lab = s.lab.lock().expect("lab lock");
        let id = lab.node(node)?;
        (id, plan::agent_socket(&lab.dir.path, id))
    };
    let token = match grant_for {
        Some((op, key)) => grant(s, id, op, key)?,
        None => None,
    };
    let (status, content_type, body) =
        agent_exchange(&sock, method, path, body, timeout, token.as_deref())
            .await
            .map_err(|e| ApiError::unreachable(node, e))?;
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
pub async fn node_kv(
    State(s): State<ApiState>,
    method: Method,
    UrlPath((node, key)): UrlPath<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (m, grant_for) = if method == Method::GET {
        (Method::GET, None)
    } else {
        (Method::POST, Some((Op::KvWrite, Some(key.as_str()))))
    };
    // axum decoded the key once; encoded again, a `?`, `#`, `%` or `/` in it stays part
    // of the key on the agent's side instead of starting a query or a fragment.
    let encoded = lightcone_agent::pct::encode(&key);
    let path = match &query {
        Some(q) => format!("/kv/{encoded}?{q}"),
        None => format!("/kv/{encoded}"),
    };
    proxy_to_agent(
        &s,
        &node,
        m,
        &path,
        body.to_vec(),
        Duration::from_secs(5),
        grant_for,
    )
    .await
}

/// `GET|PUT /nodes/{node}/objects/{id}`: the agent's object store (issue 16), proxied;
/// a put needs the token like every state-changing request ([`Guard`]). The agent's
/// status, content type and body are passed through unchanged.
pub async fn node_object(
    State(s): State<ApiState>,
    method: Method,
    UrlPath((node, id)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (m, grant_for) = if method == Method::GET {
        (Method::GET, None)
    } else {
        (Method::PUT, Some((Op::ObjectPut, Some(id.as_str()))))
    };
    let path = format!("/objects/{}", lightcone_agent::pct::encode(&id));
    // A read or a put waits for shards from other tiles (fetch and ack timeouts of a few
    // emulated seconds); 15 s real covers them at time_scale ≥ 1.
    proxy_to_agent(
        &s,
        &node,
        m,
        &path,
        body.to_vec(),
        Duration::from_secs(15),
        grant_for,
    )
    .await
}

/// `POST /api/nodes/{node}/task`: a task (issue 15, `lightcone_core::heat::task::TaskSpec`
/// as JSON) submitted to `node`'s agent; checked here, the agent's answer passed through.
pub async fn api_node_task(
    State(s): State<ApiState>,
    UrlPath(node): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let spec: lightcone_core::heat::task::TaskSpec =
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::Bad(format!(
                "body must be a task (compute, duration_ns, class): {e}"
            ))
        })?;
    let body = serde_json::to_vec(&spec).unwrap_or_default();
    proxy_to_agent(
        &s,
        &node,
        Method::POST,
        "/task",
        body,
        Duration::from_secs(5),
        Some((Op::TaskSubmit, None)),
    )
    .await
}

/// `POST /api/nodes/{node}/update` body (issue 18, `lightcone update`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The agent binary to run (an absolute path); `None`: the lab's own agent binary.
    #[serde(default)]
    pub binary: Option<String>,
    /// With `binary`: its SHA-256 (hex) as the release's manifest names it. The file is
    /// hashed again here, just before it runs: another file is refused.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// What `POST /api/nodes/{node}/update` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReply {
    pub node: String,
    /// The new agent process.
    pub pid: u32,
    /// The binary it runs and its SHA-256 (hex).
    pub binary: String,
    pub sha256: String,
}

/// Why a file cannot be run as an agent binary: missing, not a regular file, or not
/// executable. `None`: it can.
pub fn not_runnable(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(e) => Some(format!("{}: {e}", path.display())),
        Ok(m) if !m.is_file() => Some(format!("{} is not a regular file", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(format!(
            "{} is not executable (chmod +x it)",
            path.display()
        )),
        Ok(_) => None,
    }
}

/// `POST /api/nodes/{node}/update`: replaces `node`'s agent process with another binary
/// (same configuration, new boot: it rejoins empty), or with the lab's own binary again
/// (a rollback). A binary that is missing, not executable or not the one `sha256` names
/// is refused (`400`) and nothing changes; so is a lab whose tiles share processes.
pub async fn api_node_update(
    State(s): State<ApiState>,
    UrlPath(node): UrlPath<String>,
    Json(req): Json<UpdateRequest>,
) -> Result<Json<UpdateReply>, ApiError> {
    let asked = match (&req.binary, &req.sha256) {
        (None, None) => None,
        (Some(b), Some(want)) => {
            let p = PathBuf::from(b);
            if !p.is_absolute() {
                return Err(ApiError::Bad(format!(
                    "binary {b:?} is not an absolute path; nothing was changed"
                )));
            }
            if let Some(why) = not_runnable(&p) {
                return Err(ApiError::Bad(format!("{why}; nothing was changed")));
            }
            let have =
                crate::state::file_sha256(&p).map_err(|e| ApiError::Bad(format!("{b}: {e}")))?;
            if !have.eq_ignore_ascii_case(want.trim()) {
                return Err(ApiError::Bad(format!(
                    "{b} has SHA-256 {have}, the release names {}; nothing was changed",
                    want.trim()
                )));
            }
            Some((p, have))
        }
        (Some(_), None) => {
            return Err(ApiError::Bad(
                "binary without sha256: say which build it must be; nothing was changed".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::Bad(
                "sha256 without binary; nothing was changed".into(),
            ))
        }
    };
    let lab_binary = {
        let lab = s.lab.lock().expect("lab lock");
        let id = lab.node(&node)?;
        let Some(agents) = lab.agents.as_ref() else {
            return Err(no_agents(&lab));
        };
        if agents.is_grouped() {
            return Err(ApiError::Bad(
                crate::agents::AgentError::Grouped.to_string(),
            ));
        }
        let _ = id;
        agents.lab_binary().to_path_buf()
    };
    let (path, sha) = match asked {
        Some(x) => x,
        None => {
            let sha = crate::state::file_sha256(&lab_binary).map_err(ApiError::internal)?;
            (lab_binary, sha)
        }
    };
    let mut guard = s.lab.lock().expect("lab lock");
    let lab = &mut *guard;
    let id = lab.node(&node)?;
    let Some(agents) = lab.agents.as_mut() else {
        return Err(no_agents(lab));
    };
    let pid = agents
        .replace(&lab.plan, id, Some(path.clone()), &lab.dir, &mut lab.ledger)
        .map_err(ApiError::internal)?;
    lab.event(
        "update",
        format!("{node} runs {} (sha256 {sha})", path.display()),
    );
    Ok(Json(UpdateReply {
        node,
        pid,
        binary: path.display().to_string(),
        sha256: sha,
    }))
}

/// `POST /api/nodes/{node}/trust-entry` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustEntryRequest {
    /// A threshold-signed trust log entry (a build approval, a revocation), hex.
    pub entry_hex: String,
}

/// `POST /api/nodes/{node}/trust-entry`: hands `node`'s agent a threshold-signed trust
/// entry, which it checks and floods over every link (`Payload::Trust`). A malformed
/// entry is refused (`400`) before any agent sees it.
pub async fn api_node_trust_entry(
    State(s): State<ApiState>,
    UrlPath(node): UrlPath<String>,
    Json(req): Json<TrustEntryRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bytes = hex::decode(req.entry_hex.trim())
        .map_err(|e| ApiError::Bad(format!("entry_hex: {e}; nothing was changed")))?;
    let e = lightcone_core::trust::log::Entry::decode(&bytes)
        .map_err(|e| ApiError::Bad(format!("entry_hex: {e}; nothing was changed")))?;
    let body = hex::encode(&bytes).into_bytes();
    forward_to_agent(&s, &node, Op::Order, "/trust-entry", body).await?;
    s.lab.lock().expect("lab lock").event(
        "trust_entry",
        format!("{:?} entry for {} flooded from {node}", e.kind, e.subject),
    );
    Ok(Json(
        serde_json::json!({ "node": node, "kind": format!("{:?}", e.kind) }),
    ))
}

/// `POST /api/nodes/{node}/order` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// A threshold-signed runtime order ([`lightcone_core::update::dark::Order`]), hex.
    pub order_hex: String,
}

/// What `node`'s agent did with an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderReply {
    pub node: String,
    pub serial: u64,
    pub dark: bool,
    /// Whether the agent is dark now.
    pub node_dark: bool,
}

/// `POST /api/nodes/{node}/order`: hands a runtime order (panic-to-dark or undark) to
/// `node`'s agent, which checks its threshold signature and serial, obeys it if its scope
/// holds the node, and floods it inside the scope. Bytes that are no order: `400`, not
/// forwarded; the agent's refusal (forged `403`, replayed `409`) comes back in its words.
/// A refused order changed nothing.
pub async fn api_node_order(
    State(s): State<ApiState>,
    UrlPath(node): UrlPath<String>,
    Json(req): Json<OrderRequest>,
) -> Result<Json<OrderReply>, ApiError> {
    let bytes =
        hex::decode(req.order_hex.trim()).map_err(|e| ApiError::Bad(format!("order_hex: {e}")))?;
    let o = lightcone_core::update::dark::Order::decode(&bytes)
        .map_err(|e| ApiError::Bad(format!("order_hex: {e}")))?;
    let body = hex::encode(&bytes).into_bytes();
    let reply = forward_to_agent(&s, &node, Op::Order, "/order", body).await?;
    let v: serde_json::Value = serde_json::from_slice(&reply).map_err(ApiError::internal)?;
    let node_dark = v["node_dark"].as_bool().unwrap_or(false);
    s.lab.lock().expect("lab lock").event(
        if o.dark { "dark" } else { "undark" },
        format!("{:?} serial {} via {node}", o.scope, o.serial),
    );
    Ok(Json(OrderReply {
        node,
        serial: o.serial,
        dark: o.dark,
        node_dark,
    }))
}

/// `POST /nodes/{node}/send/{dst}`: the body, sent by `node`'s agent to `dst` over the
/// overlay as one datagram (experiments' cross-level messages); the agent's answer is
/// passed through.
pub async fn node_send(
    State(s): State<ApiState>,
    UrlPath((node, dst)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let path = format!("/send/{}", lightcone_agent::pct::encode(&dst));
    proxy_to_agent(
        &s,
        &node,
        Method::POST,
        &path,
        body.to_vec(),
        Duration::from_secs(5),
        Some((Op::Send, None)),
    )
    .await
}

/// `POST /api/revoke` body: the token to revoke (it and every token attenuated from it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub token: String,
}

/// `POST /api/revoke`'s answer: the revocation id pushed, the agents that hold it now, and
/// those that could not be reached (crashed or not answering within 5 s).
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeReply {
    pub revocation_id: String,
    pub agents: usize,
    pub unreachable: Vec<String>,
}

/// `POST /api/revoke`: revokes a token at every running agent. The id pushed is the token's
/// last block's, so the token and its attenuations are refused and its parent is not. The
/// bound: the revocation holds at an agent from the moment that agent answered, and this
/// route answers once every agent answered or failed (all at once, 5 s each). A token not
/// issued by the lab's key is refused (400) and nothing is pushed.
pub async fn api_revoke(
    State(s): State<ApiState>,
    Json(r): Json<RevokeRequest>,
) -> Result<Json<RevokeReply>, ApiError> {
    let Some(op) = &s.operator else {
        let lab = s.lab.lock().expect("lab lock");
        return Err(no_agents(&lab));
    };
    let ids = lightcone_agent::caps::revocation_ids(&r.token, &op.public_hex())
        .map_err(|e| ApiError::Bad(format!("not a token of this lab: {e}")))?;
    let Some(id) = ids.last().cloned() else {
        return Err(ApiError::Bad("the token has no block".into()));
    };
    let targets: Vec<(usize, String, PathBuf)> = {
        let lab = s.lab.lock().expect("lab lock");
        // Kept before it is pushed: an agent (re)started from now on is configured with it.
        crate::keys::add_revoked(&lab.dir, &id)
            .map_err(|e| ApiError::Internal(format!("keep the revocation: {e}")))?;
        lab.plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.name.clone(), plan::agent_socket(&lab.dir.path, i)))
            .collect()
    };
    let body = serde_json::json!({ "revocation_ids": [id] }).to_string();
    let mut pushes = Vec::with_capacity(targets.len());
    for (i, name, sock) in targets {
        let token = grant(&s, i, Op::Revoke, None)?;
        let body = body.clone().into_bytes();
        pushes.push(async move {
            let r = agent_request(
                &sock,
                Method::POST,
                "/revoke",
                body,
                Duration::from_secs(5),
                token.as_deref(),
            )
            .await;
            (name, matches!(r, Ok((200, _))))
        });
    }
    let results = futures::future::join_all(pushes).await;
    let agents = results.iter().filter(|(_, ok)| *ok).count();
    let unreachable: Vec<String> = results
        .into_iter()
        .filter(|(_, ok)| !*ok)
        .map(|(n, _)| n)
        .collect();
    s.lab.lock().expect("lab lock").event(
        "revoke",
        format!(
            "{id} at {agents} agents ({} unreachable)",
            unreachable.len()
        ),
    );
    Ok(Json(RevokeReply {
        revocation_id: id,
        agents,
        unreachable,
    }))
}

/// What the guard checks requests against (see the module doc).
#[derive(Debug, Clone)]
pub struct Guard {
    pub token: String,
    /// The port the supervisor listens on (loopback).
    pub port: u16,
}

/// Compare tokens without an early exit on the first differing byte.
pub fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Guard {
    /// The `host[:port]` forms that name this supervisor.
    fn own_hosts(&self) -> Vec<String> {
        let p = self.port;
        let mut v = vec![
            format!("127.0.0.1:{p}"),
            format!("localhost:{p}"),
            format!("[::1]:{p}"),
        ];
        if p == 80 {
            v.extend(["127.0.0.1", "localhost", "[::1]"].map(String::from));
        }
        v
    }

    /// Why a request must be refused (status and message), or `None` to let it through.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Option<ApiError> {
        let own = self.own_hosts();
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        match host {
            Some(h) if own.iter().any(|o| o.eq_ignore_ascii_case(h)) => {}
            _ => {
                return Some(ApiError::Forbidden(
                    format!(
                        "Host {} is not this supervisor's address; use http://127.0.0.1:{}/ (requests under other names are refused, against DNS rebinding; a tunnel must keep port {} on both ends)",
                        host.map(|h| format!("{h:?}")).unwrap_or_else(|| "(missing)".into()),
                        self.port,
                        self.port
                    ),
                ))
            }
        }
        if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
            let o = origin.to_str().unwrap_or("");
            let same = o
                .strip_prefix("http://")
                .is_some_and(|h| own.iter().any(|x| x.eq_ignore_ascii_case(h)));
            if !same {
                return Some(ApiError::Forbidden(
                    format!(
                        "cross-origin request from {o:?} refused: only pages served by this supervisor (http://127.0.0.1:{}) may call it",
                        self.port
                    ),
                ));
            }
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            let got = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
            if !got.is_some_and(|g| token_eq(g, &self.token)) {
                return Some(ApiError::Unauthorized(
                    format!("missing or wrong {TOKEN_HEADER} header: every {method} needs the lab's token (it is in the lab's supervisor.json)"),
                ));
            }
        }
        None
    }
}

/// axum middleware: [`Guard::check`] before any route.
pub async fn guard(
    State(g): State<Arc<Guard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match g.check(req.method(), req.headers()) {
        Some(refusal) => refusal.into_response(),
        None => next.run(req).await,
    }
}

/// How far ahead a stamped request may be sent ([`stamp`]).
pub const STAMP_AHEAD_MAX: Duration = Duration::from_secs(60);
/// The reply header saying how late a stamped request was applied, ms (0: on time).
pub const LATE_HEADER: &str = "x-lightcone-late-ms";

/// `t` in UNIX nanoseconds (0 before the epoch).
fn unix_ns(t: SystemTime) -> i128 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The instant a stamped request ([`AT_HEADER`]) names: UNIX ns on this host's clock.
pub fn stamp_at(header: &str) -> Result<i128, ApiError> {
    header.trim().parse().map_err(|_| {
        ApiError::Bad(format!(
            "{AT_HEADER} must be an instant in UNIX nanoseconds, not {header:?}; nothing was changed"
        ))
    })
}

/// How long a request stamped `at_ns` waits from `now` (zero when the instant has
/// passed), or why it is refused.
pub fn stamp_wait(at_ns: i128, now: SystemTime) -> Result<Duration, ApiError> {
    let ahead = at_ns - unix_ns(now);
    if ahead > STAMP_AHEAD_MAX.as_nanos() as i128 {
        return Err(ApiError::Bad(format!(
            "{} is {:.1} s ahead of this host's clock (at most {} s): is its clock, or the controller's offset for it, wrong? nothing was changed",
            AT_HEADER,
            ahead as f64 / 1e9,
            STAMP_AHEAD_MAX.as_secs()
        )));
    }
    Ok(Duration::from_nanos(
        u64::try_from(ahead.max(0)).unwrap_or(0),
    ))
}

/// axum middleware: a state-changing request stamped with an instant waits for it, then
/// runs; its reply says how late it ran ([`LATE_HEADER`]). The runner stamps the verbs of
/// a lab spread over hosts and sends them ahead of their time, so that a host far from the
/// controller acts on time and both ends of a link between hosts change at once.
pub async fn stamp(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let Some(h) = req.headers().get(AT_HEADER) else {
        return next.run(req).await;
    };
    let waited = stamp_at(h.to_str().unwrap_or(""))
        .and_then(|at| Ok((at, stamp_wait(at, SystemTime::now())?)));
    let (at_ns, wait) = match waited {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    tokio::time::sleep(wait).await;
    let late_ms = (unix_ns(SystemTime::now()) - at_ns).max(0) as f64 / 1e6;
    let mut resp = next.run(req).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{late_ms:.3}")) {
        resp.headers_mut().insert(LATE_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn g() -> Guard {
        Guard {
            token: "t0k".into(),
            port: 4000,
        }
    }

    #[test]
    fn a_stamp_waits_until_its_instant_and_refuses_nonsense() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
        let wait = |h: &str| stamp_at(h).and_then(|at| stamp_wait(at, now));
        assert_eq!(wait("1000250000000").unwrap(), Duration::from_millis(250));
        // Past: at once.
        assert_eq!(wait("999000000000").unwrap(), Duration::ZERO);
        assert_eq!(wait("-5").unwrap(), Duration::ZERO);
        let far = wait("1061000000000").unwrap_err();
        assert_eq!(far.status(), StatusCode::BAD_REQUEST);
        assert!(far.to_string().contains("61.0 s ahead"), "{far}");
        let junk = wait("soon").unwrap_err();
        assert!(junk.to_string().contains("UNIX nanoseconds"), "{junk}");
    }

    #[test]
    fn token_compare() {
        assert!(token_eq("abc", "abc"));
        assert!(!token_eq("abc", "abd"));
        assert!(!token_eq("abc", "abcd"));
        assert!(!token_eq("", "a"));
    }

    #[test]
    fn every_state_changing_request_needs_the_token() {
        let host = ("host", "127.0.0.1:4000");
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            // The routes that took no token before: kv writes and overlay sends.
            let e = g().check(&m, &headers(&[host])).expect("refused");
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED, "{m}");
            assert!(e.to_string().contains(TOKEN_HEADER), "{e}");
            let wrong = g().check(&m, &headers(&[host, (TOKEN_HEADER, "t0x")]));
            assert_eq!(wrong.map(|r| r.status()), Some(StatusCode::UNAUTHORIZED));
            assert_eq!(
                g().check(&m, &headers(&[host, (TOKEN_HEADER, "t0k")])),
                None
            );
        }
        assert_eq!(g().check(&Method::GET, &headers(&[host])), None);
        assert_eq!(g().check(&Method::HEAD, &headers(&[host])), None);
    }

    #[test]
    fn other_hosts_and_origins_are_refused() {
        let ok_token = (TOKEN_HEADER, "t0k");
        for h in [
            "127.0.0.1:4000",
            "localhost:4000",
            "LOCALHOST:4000",
            "[::1]:4000",
        ] {
            assert_eq!(
                g().check(&Method::GET, &headers(&[("host", h)])),
                None,
                "{h}"
            );
        }
        // DNS rebinding: the attacker's name, or the right address on another port.
        for h in [
            "evil.example:4000",
            "127.0.0.1:4001",
            "127.0.0.1",
            "0.0.0.0:4000",
        ] {
            let e = g().check(&Method::GET, &headers(&[("host", h)])).expect(h);
            assert_eq!(e.status(), StatusCode::FORBIDDEN);
            assert!(
                e.to_string().contains("not this supervisor's address"),
                "{e}"
            );
        }
        let e = g().check(&Method::GET, &headers(&[])).expect("no Host");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        // A page of another origin: refused even with the right token and Host.
        for o in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:4000",
            "http://127.0.0.1:4001",
        ] {
            let r = g().check(
                &Method::POST,
                &headers(&[("host", "127.0.0.1:4000"), ("origin", o), ok_token]),
            );
            let e = r.expect(o);
            assert_eq!(e.status(), StatusCode::FORBIDDEN, "{o}");
            assert!(e.to_string().contains("cross-origin"), "{e}");
        }
        // The dashboard's own page.
        let own = headers(&[
            ("host", "127.0.0.1:4000"),
            ("origin", "http://127.0.0.1:4000"),
            ok_token,
        ]);
        assert_eq!(g().check(&Method::POST, &own), None);
        // Port 80: browsers leave the port out of Host.
        let g80 = Guard {
            token: "t".into(),
            port: 80,
        };
        assert_eq!(
            g80.check(&Method::GET, &headers(&[("host", "localhost")])),
            None
        );
    }

    #[test]
    fn errors_keep_their_status_and_words() {
        let cases = [
            (
                ApiError::from(LabError::NoNode {
                    lab: "l".into(),
                    node: "x".into(),
                }),
                404,
                r#"lab l has no node "x""#,
            ),
            (
                ApiError::NotRunning { node: "n1".into() },
                409,
                "n1's agent is not running: nothing to crash (restart it first)",
            ),
            (
                ApiError::unreachable("n1", "connection refused"),
                502,
                "agent n1: connection refused",
            ),
            (
                ApiError::Agent {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    node: "n1".into(),
                    message: "no".into(),
                },
                422,
                "agent n1: no",
            ),
        ];
        for (e, status, words) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.to_string(), words);
        }
    }

    #[test]
    fn replies_keep_their_json_field_names() {
        let j = |v: serde_json::Value| v.to_string();
        let crash = NodeFaultReply::Crash(CrashReply {
            node: "n1".into(),
            was_running: true,
        });
        assert_eq!(
            serde_json::to_string(&crash).unwrap(),
            j(serde_json::json!({ "node": "n1", "was_running": true }))
        );
        let restart = NodeFaultReply::Restart(RestartReply {
            node: "n1".into(),
            pid: 42,
        });
        assert_eq!(
            serde_json::to_string(&restart).unwrap(),
            j(serde_json::json!({ "node": "n1", "pid": 42 }))
        );
        // Untagged: each reads back as what it is.
        for r in [crash, restart] {
            let back: NodeFaultReply =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
        assert_eq!(
            serde_json::to_string(&PartitionReply {
                links: 3,
                up: false
            })
            .unwrap(),
            j(serde_json::json!({ "links": 3, "up": false }))
        );
        assert_eq!(
            serde_json::to_string(&ShutdownReply {
                shutting_down: true
            })
            .unwrap(),
            j(serde_json::json!({ "shutting_down": true }))
        );
        assert_eq!(
            serde_json::to_string(&ByzantineReply {
                behaviour: vec!["lie_membership".into()],
                node: "n1".into(),
            })
            .unwrap(),
            j(serde_json::json!({ "node": "n1", "behaviour": ["lie_membership"] }))
        );
    }
}
