//! A typed client of a lab's supervisor API, used by the CLI and the experiment runner.
//!
//! One place sets what every request carries: the lab's token ([`TOKEN_HEADER`], read from
//! the lab's `supervisor.json`) and a `Host` naming the supervisor's own loopback address
//! (the API refuses other names, against DNS rebinding: see [`crate::http`]). Each endpoint
//! has a method whose reply is a typed struct; the status types are the supervisor's own
//! ([`LabStatus`], [`LinkRuntime`]); replies the supervisor builds ad hoc have small structs
//! here with its field names. Errors are one type: the supervisor could not be reached, or
//! it answered with an HTTP status and (usually) its `{"error": …}` words.
//!
//! The client is blocking (ureq) and cheap to clone: clones share one connection pool, so
//! the runner's poller and load threads each hold one.

use std::collections::BTreeMap;
use std::time::Duration;

use lightcone_agent::pct;
use lightcone_core::causal::{Dot, DotContext};
use lightcone_core::kv::{Durability, Written};
use serde::{Deserialize, Serialize};

use crate::http::{AT_HEADER, TOKEN_HEADER};
use crate::lab::{LabStatus, LinkChange, LinkRuntime, SupervisorInfo};
use crate::state::LabDir;

/// How long a request may take unless a call says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no usable answer. No request is retried unless a method says so; a
/// `POST` that failed with [`ClientError::Connect`] may or may not have been applied.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The supervisor could not be reached, or the connection broke before an answer.
    #[error("{path}: {message}")]
    Connect {
        /// The whole URL asked for.
        url: String,
        path: String,
        message: String,
    },
    /// The supervisor answered with a status other than 2xx.
    #[error("{path}: HTTP {status}: {body}")]
    Status {
        path: String,
        status: u16,
        /// The answer's body, trimmed.
        body: String,
        /// The supervisor's words (`{"error": …}`), when the body carries them.
        error: Option<String>,
    },
    /// A 2xx answer that is not what the endpoint promises.
    #[error("{path}: {message}")]
    Decode { path: String, message: String },
}

impl ClientError {
    /// The HTTP status, for an answer that had one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The supervisor's `{"error": …}` body.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// A raw answer: status and body, for endpoints whose non-2xx answers carry meaning (an
/// agent's KV answers: 404 is "no such key", 504 an indeterminate write).
#[derive(Debug, Clone)]
pub struct Raw {
    pub status: u16,
    pub body: String,
}

/// `POST /api/nodes/{node}/crash`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crashed {
    pub node: String,
    pub was_running: bool,
}

/// `POST /api/nodes/{node}/restart`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restarted {
    pub node: String,
    pub pid: u32,
}

/// `POST /api/nodes/{node}/clock`: the fault as the agent took it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockInjected {
    pub node: String,
    pub injected: serde_json::Value,
}

/// `POST /api/nodes/{node}/byzantine`: the node's behaviours now (`[]`: honest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByzantineSet {
    pub node: String,
    pub behaviour: Vec<String>,
}

/// `POST /api/partition`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partitioned {
    pub links: usize,
    pub up: bool,
}

/// The parts of a node's `/state` the CLI and the runner read.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeState {
    /// The node's id in the lab's directory.
    pub id: u32,
    /// The node's clock (emulated seconds since the lab's epoch).
    pub now_emulated_s: f64,
    /// Its cell's membership as it sees it.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Nodes it has quarantined (the neighbourhood watch's verdicts, and operators').
    #[serde(default)]
    pub quarantine: Vec<u32>,
    /// Nodes whose keys its cell's BFT group revoked (absent: none).
    #[serde(default)]
    pub revoked: Vec<u32>,
    /// Its datagram counters (`datagrams.DIRECTION.OUTCOME`, `bytes.DIRECTION`).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Its routing table's destinations.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Its time layer; `None` without one.
    #[serde(default)]
    pub time: Option<TimeState>,
    /// Its cell's key-value replica (absent from an agent older than issue 18's waves).
    #[serde(default)]
    pub kv: Option<KvState>,
    /// Its object store's shards; `None` without a store.
    #[serde(default)]
    pub store: Option<StoreState>,
    /// Its thermal subsystem; `None` without one.
    #[serde(default)]
    pub thermal: Option<ThermalState>,
    /// What it holds under the authorities' key (issue 17); `None` when it trusts none.
    #[serde(default)]
    pub trust: Option<TrustState>,
}

/// The `trust` section of a node's `/state`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TrustState {
    /// Nodes whose key a newer certificate replaced (id as text → the serial).
    #[serde(default)]
    pub rotated: BTreeMap<String, u64>,
    /// Entries in its transparency log.
    #[serde(default)]
    pub log_size: u64,
    /// The key it signs with now (hex).
    #[serde(default)]
    pub key: String,
}

/// The `kv` section of a node's `/state`: what a rollout's refill wait reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KvState {
    #[serde(default)]
    pub keys: u64,
    /// A state transfer from a cell-mate completed since this boot.
    #[serde(default)]
    pub synced: bool,
    /// Writing replica → writes of it this replica has seen.
    #[serde(default)]
    pub writes: BTreeMap<String, u64>,
}

impl KvState {
    /// Whether this replica has seen every write `other` names.
    pub fn covers(&self, other: &BTreeMap<String, u64>) -> bool {
        other
            .iter()
            .all(|(k, n)| self.writes.get(k).copied().unwrap_or(0) >= *n)
    }
}

/// The `thermal` section of a node's `/state` (issue 15): what the rollout's thermal gate
/// reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ThermalState {
    /// Heat to reject over the tile's rejection capacity (1 = at capacity).
    #[serde(default)]
    pub load_ratio: f64,
}

/// The `store` section of a node's `/state` (issue 16).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StoreState {
    #[serde(default)]
    pub shards: Vec<lightcone_core::store::machine::HeldShard>,
}

/// One entry of a node's membership view.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub id: u32,
    pub state: String,
    #[serde(default)]
    pub incarnation: u64,
    #[serde(default)]
    pub since_emulated_s: f64,
}

/// One entry of a node's routing table.
#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub dest: String,
}

/// The `time` section of a node's `/state`. NaN and ∞ travel as `null`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TimeState {
    #[serde(default)]
    pub true_error_s: Option<f64>,
    #[serde(default)]
    pub sigma_s: Option<f64>,
    #[serde(default)]
    pub within_3sigma: bool,
    #[serde(default)]
    pub coverage_ratio: Option<f64>,
    #[serde(default)]
    pub in_holdover: bool,
    #[serde(default)]
    pub alarm_active: bool,
    #[serde(default)]
    pub alarms_total: u64,
    #[serde(default)]
    pub pulsar_missed_total: Option<u64>,
}

/// A key's versions (`GET /nodes/{n}/kv/{key}?siblings`): every concurrent value, each
/// value's dot and the key's context (`None` from an agent that does not report them).
#[derive(Debug, Clone, Deserialize)]
pub struct Versions {
    pub siblings: Vec<String>,
    #[serde(default)]
    pub dots: Vec<Dot>,
    #[serde(default)]
    pub context: Option<DotContext>,
}

/// What a KV read found.
#[derive(Debug, Clone)]
pub enum KvRead {
    /// 200 with the key's versions.
    Found(Versions),
    /// 200, but not the shape of a `?siblings` answer.
    Unreadable,
    /// 404: the node holds no value for the key.
    Missing,
}

/// One supervisor the client talks to: a local lab's, or one host's of a multi-host lab
/// (reached through an ssh port forward, so `base` and `host` differ in port).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host's name in the hosts file (`""` for a local lab).
    pub name: String,
    /// Where requests go (`http://127.0.0.1:PORT`).
    base: String,
    /// The `Host` header: the supervisor's own `127.0.0.1:PORT` on its host, which its
    /// guard requires (against DNS rebinding) even through a tunnel.
    host: String,
    token: String,
    /// The host's clock minus the controller's, ns: added to a stamp ([`Client::stamped`])
    /// so the host acts at the same instant.
    clock_offset_ns: i64,
}

impl Endpoint {
    /// The supervisor whose API is `api_url` on its host, reached at `base` (the same URL
    /// for a local lab; a forwarded port for another host's).
    pub fn new(name: &str, api_url: &str, base: &str, token: &str, clock_offset_ns: i64) -> Self {
        let authority = |u: &str| {
            u.split_once("://")
                .map_or(u, |(_, rest)| rest)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        Endpoint {
            name: name.to_string(),
            base: base.trim_end_matches('/').to_string(),
            host: authority(api_url),
            token: token.to_string(),
            clock_offset_ns,
        }
    }
}

/// Where a request goes: one supervisor, the two holding a link's ends, or every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    One(usize),
    Two(usize, usize),
    All,
}

/// A client of one lab's supervisor — or, for a lab spread over hosts, of every host's
/// supervisor at once: each request goes to the host that holds the node it names, a
/// link's change to the hosts of both its ends (concurrently), and `status` and
/// `metrics` are every host's, merged. Callers do not see the difference.
#[derive(Clone)]
pub struct Client {
    eps: std::sync::Arc<Vec<Endpoint>>,
    /// Node → the endpoint of its host; empty with one endpoint.
    owner: std::sync::Arc<BTreeMap<String, usize>>,
    agent: ureq::Agent,
    /// State-changing requests are to take effect at this instant (controller's clock).
    at: Option<std::time::SystemTime>,
}

impl Client {
    /// A client of the supervisor that wrote `info`.
    pub fn new(info: &SupervisorInfo) -> Client {
        Client::spread(
            vec![Endpoint::new(
                "",
                &info.api_url,
                &info.api_url,
                &info.token,
                0,
            )],
            BTreeMap::new(),
        )
    }

    /// A client of several hosts' supervisors; `owner` says which endpoint holds each node.
    pub fn spread(eps: Vec<Endpoint>, owner: BTreeMap<String, usize>) -> Client {
        Client {
            eps: std::sync::Arc::new(eps),
            owner: std::sync::Arc::new(owner),
            agent: ureq::AgentBuilder::new().build(),
            at: None,
        }
    }

    /// A client of a lab's running supervisor; `None` if the lab has none (not up, or its
    /// supervisor is gone).
    pub fn connect(dir: &LabDir) -> Option<Client> {
        SupervisorInfo::read(dir)
            .filter(|i| i.alive())
            .map(|i| Client::new(&i))
    }

    /// The (first) API's base URL (`http://127.0.0.1:PORT`).
    pub fn base(&self) -> &str {
        &self.eps[0].base
    }

    /// True when the lab is spread over several hosts.
    pub fn is_spread(&self) -> bool {
        self.eps.len() > 1
    }

    /// This client with its state-changing requests stamped to take effect at `at` (this
    /// machine's clock; each host's measured offset is added): the runner sends a verb
    /// ahead of its time so that hosts far from the controller act on time, and both ends
    /// of a link between hosts change at the same instant.
    pub fn stamped(&self, at: std::time::SystemTime) -> Client {
        Client {
            at: Some(at),
            ..self.clone()
        }
    }

    /// Which endpoint(s) `path` concerns: a node's (`/api/nodes/N/…`, `/nodes/N/…`), a
    /// link's two ends (`/api/links/A/B/…`), or the lab's (everything else). A node no
    /// host holds goes to the first, which answers that it has no such node.
    fn route(&self, path: &str) -> To {
        if self.eps.len() == 1 {
            return To::One(0);
        }
        let at = |n: &str| {
            self.owner
                .get(pct::decode(n).as_deref().unwrap_or(n))
                .copied()
                .unwrap_or(0)
        };
        let p = path.split('?').next().unwrap_or(path);
        let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            ["api", "nodes", n, ..] | ["nodes", n, ..] => To::One(at(n)),
            ["api", "links", a, b, ..] => match (at(a), at(b)) {
                (x, y) if x == y => To::One(x),
                (x, y) => To::Two(x, y),
            },
            _ => To::All,
        }
    }

    /// The one place a request is built: token, Host and stamp set here.
    fn request_to(
        &self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        timeout: Duration,
    ) -> ureq::Request {
        let r = self
            .agent
            .request(method, &format!("{}{}", ep.base, path))
            .set("Host", &ep.host)
            .set(TOKEN_HEADER, &ep.token)
            .timeout(timeout);
        match self.at.filter(|_| method != "GET") {
            Some(at) => {
                let ns = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128)
                    + i128::from(ep.clock_offset_ns);
                r.set(AT_HEADER, &ns.to_string())
            }
            None => r,
        }
    }

    fn connect_error(&self, ep: &Endpoint, path: &str, e: impl std::fmt::Display) -> ClientError {
        ClientError::Connect {
            url: format!("{}{}", ep.base, path),
            path: path.to_string(),
            message: if ep.name.is_empty() {
                e.to_string()
            } else {
                format!("host {}: {e}", ep.name)
            },
        }
    }

    /// Sends a request to one endpoint; any status comes back as [`Raw`], only a
    /// transport failure is an error. A `POST` is retried once after a transport error:
    /// every state-changing verb is idempotent (set a link's state, crash a node that is
    /// running), and a pooled keep-alive connection the server closed while idle fails
    /// with "Unexpected EOF" before the request is read (ureq retries only idempotent
    /// methods by itself).
    fn send_to(
        &self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Option<(&[u8], Option<&str>)>,
        timeout: Duration,
    ) -> Result<Raw, ClientError> {
        let once = || {
            let req = self.request_to(ep, method, path, timeout);
            match body {
                Some((b, ctype)) => match ctype {
                    Some(t) => req.set("Content-Type", t).send_bytes(b),
                    None => req.send_bytes(b),
                },
                None => req.call(),
            }
            .map_err(Box::new)
        };
        let r = match once() {
            Err(e) if method == "POST" && matches!(*e, ureq::Error::Transport(_)) => once(),
            r => r,
        };
        match r.map_err(|e| *e) {
            Ok(r) => Ok(Raw {
                status: r.status(),
                body: r.into_string().unwrap_or_default(),
            }),
            Err(ureq::Error::Status(status, r)) => Ok(Raw {
                status,
                body: r.into_string().unwrap_or_default(),
            }),
            Err(e) => Err(self.connect_error(ep, path, e)),
        }
    }

    /// Sends a request where [`Client::route`] says: to every endpoint it concerns at once
    /// (a state change of a link between hosts, a lab-wide `POST`); the answer is the
    /// first failure's, else the first endpoint's. A lab-wide `GET` asks the first.
    fn send_body(
        &self,
        method: &str,
        path: &str,
        body: Option<(&[u8], Option<&str>)>,
        timeout: Duration,
    ) -> Result<Raw, ClientError> {
        let targets: Vec<usize> = match self.route(path) {
            To::One(i) => vec![i],
            To::Two(i, j) if method != "GET" => vec![i, j],
            To::Two(i, _) => vec![i],
            To::All if method != "GET" => (0..self.eps.len()).collect(),
            To::All => vec![0],
        };
        if let [i] = targets.as_slice() {
            return self.send_to(&self.eps[*i], method, path, body, timeout);
        }
        let answers: Vec<Result<Raw, ClientError>> = std::thread::scope(|s| {
            let hs: Vec<_> = targets
                .iter()
                .map(|&i| s.spawn(move || self.send_to(&self.eps[i], method, path, body, timeout)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("request thread"))
                .collect()
        });
        let mut first = None;
        for a in answers {
            match a {
                Err(e) => return Err(e),
                Ok(r) if !(200..300).contains(&r.status) => return Ok(r),
                Ok(r) => {
                    first.get_or_insert(r);
                }
            }
        }
        Ok(first.expect("at least one target"))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Raw, ClientError> {
        self.send_body(method, path, body.map(|b| (b, None)), timeout)
    }

    /// A 2xx answer's body, or the error the status means.
    fn ok(path: &str, raw: Raw) -> Result<String, ClientError> {
        if (200..300).contains(&raw.status) {
            return Ok(raw.body);
        }
        let error = serde_json::from_str::<ErrorBody>(&raw.body)
            .ok()
            .map(|e| e.error);
        Err(ClientError::Status {
            path: path.to_string(),
            status: raw.status,
            body: raw.body.trim().to_string(),
            error,
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(path: &str, body: &str) -> Result<T, ClientError> {
        serde_json::from_str(body).map_err(|e| ClientError::Decode {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET path`, a 2xx JSON answer as `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let raw = self.send("GET", path, None, timeout)?;
        Self::decode(path, &Self::ok(path, raw)?)
    }

    /// `POST path` with a JSON body, a 2xx JSON answer as `T` (retried once after a
    /// transport error: see [`Client::send_to`]).
    pub fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let raw = self.send_body(
            "POST",
            path,
            Some((&bytes, Some("application/json"))),
            DEFAULT_TIMEOUT,
        )?;
        Self::decode(path, &Self::ok(path, raw)?)
    }

    /// `GET /api/status`; of a lab over hosts, every host's merged: nodes and links in
    /// host order, a link between hosts once (as the first host lists its end).
    pub fn status(&self, timeout: Duration) -> Result<LabStatus, ClientError> {
        let path = "/api/status";
        let mut all = Vec::with_capacity(self.eps.len());
        for ep in self.eps.iter() {
            let raw = self.send_to(ep, "GET", path, None, timeout)?;
            all.push(Self::decode::<LabStatus>(path, &Self::ok(path, raw)?)?);
        }
        let mut it = all.into_iter();
        let mut st = it.next().expect("one endpoint at least");
        for s in it {
            st.nodes.extend(s.nodes);
            for l in s.links {
                let same = |k: &crate::lab::LinkStatus| {
                    (k.a == l.a && k.b == l.b) || (k.a == l.b && k.b == l.a)
                };
                if !st.links.iter().any(same) {
                    st.links.push(l);
                }
            }
        }
        Ok(st)
    }

    /// `POST /api/links/{a}/{b}/set`: the link's configuration after the change.
    pub fn link_set(&self, a: &str, b: &str, c: &LinkChange) -> Result<LinkRuntime, ClientError> {
        self.post_json(&format!("/api/links/{a}/{b}/set"), c)
    }

    /// `POST /api/links/{a}/{b}/up` or `…/down`.
    pub fn link_state(&self, a: &str, b: &str, up: bool) -> Result<LinkRuntime, ClientError> {
        let what = if up { "up" } else { "down" };
        self.post_json(
            &format!("/api/links/{a}/{b}/{what}"),
            &serde_json::json!({}),
        )
    }

    /// `POST /api/partition`: take the links down (or, with `heal`, up) as one event.
    pub fn partition(
        &self,
        links: &[(String, String)],
        heal: bool,
    ) -> Result<Partitioned, ClientError> {
        self.post_json(
            "/api/partition",
            &serde_json::json!({ "links": links, "heal": heal }),
        )
    }

    /// `POST /api/nodes/{node}/crash`.
    pub fn crash(&self, node: &str) -> Result<Crashed, ClientError> {
        self.post_json(&format!("/api/nodes/{node}/crash"), &serde_json::json!({}))
    }

    /// `POST /api/nodes/{node}/restart`.
    pub fn restart(&self, node: &str) -> Result<Restarted, ClientError> {
        self.post_json(
            &format!("/api/nodes/{node}/restart"),
            &serde_json::json!({}),
        )
    }

    /// `POST /api/nodes/{node}/clock` with the agent's clock-fault request
    /// ([`ClockFaultRequest`](lightcone_core::config::ClockFaultRequest) JSON).
    pub fn clock(
        &self,
        node: &str,
        request: &impl Serialize,
    ) -> Result<ClockInjected, ClientError> {
        self.post_json(&format!("/api/nodes/{node}/clock"), request)
    }

    /// `POST /api/nodes/{node}/byzantine` (`[]` makes the node honest again).
    pub fn byzantine(
        &self,
        node: &str,
        behaviour: &[impl Serialize],
    ) -> Result<ByzantineSet, ClientError> {
        self.post_json(
            &format!("/api/nodes/{node}/byzantine"),
            &serde_json::json!({ "behaviour": behaviour }),
        )
    }

    /// `POST /api/nodes/{node}/rotate-key`: the authorities rotate `node`'s key.
    pub fn rotate_key(&self, node: &str) -> Result<crate::api::RotateKeyReply, ClientError> {
        self.post_json(
            &format!("/api/nodes/{node}/rotate-key"),
            &serde_json::json!({}),
        )
    }

    /// `POST /api/nodes/{thief}/steal-key`: `thief` signs frames as `victim` (a test fault).
    pub fn steal_key(
        &self,
        thief: &str,
        victim: &str,
    ) -> Result<crate::api::StealKeyReply, ClientError> {
        self.post_json(
            &format!("/api/nodes/{thief}/steal-key"),
            &crate::api::StealKey {
                victim: victim.to_string(),
            },
        )
    }

    /// `POST /api/nodes/{by}/revoke-key`: `by`'s cell's BFT group is asked to revoke
    /// `node`'s key.
    pub fn revoke_key(
        &self,
        by: &str,
        node: &str,
    ) -> Result<crate::api::RevokeKeyReply, ClientError> {
        self.post_json(
            &format!("/api/nodes/{by}/revoke-key"),
            &crate::api::RevokeKey {
                node: node.to_string(),
            },
        )
    }

    /// `POST /api/nodes/{node}/trust-entry`: `node`'s agent checks the threshold-signed
    /// entry (hex) and floods it.
    pub fn trust_entry(
        &self,
        node: &str,
        entry_hex: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.post_json(
            &format!("/api/nodes/{node}/trust-entry"),
            &crate::api::TrustEntryRequest {
                entry_hex: entry_hex.to_string(),
            },
        )
    }

    /// `GET /metrics`: every agent's and the link engine's series, merged (text format).
    /// Of a lab over hosts, every host's exposition merged (one `HELP`/`TYPE` per family).
    pub fn metrics(&self, timeout: Duration) -> Result<String, ClientError> {
        let mut texts = Vec::with_capacity(self.eps.len());
        for ep in self.eps.iter() {
            let raw = self.send_to(ep, "GET", "/metrics", None, timeout)?;
            texts.push(Self::ok("/metrics", raw)?);
        }
        Ok(match texts.len() {
            1 => texts.pop().expect("one"),
            _ => crate::api::merge_expositions(&texts),
        })
    }

    /// `GET /nodes/{node}/state`, as the agent's JSON (for whoever needs more than
    /// [`NodeState`]) and typed.
    pub fn node_state(&self, node: &str, timeout: Duration) -> Result<NodeState, ClientError> {
        self.get_json(&format!("/nodes/{node}/state"), timeout)
    }

    /// `GET /nodes/{node}/kv/{key}?siblings`.
    pub fn kv_get(&self, node: &str, key: &str, timeout: Duration) -> Result<KvRead, ClientError> {
        let path = format!("/nodes/{node}/kv/{}?siblings", pct::encode(key));
        let raw = self.send("GET", &path, None, timeout)?;
        match raw.status {
            200 => Ok(serde_json::from_str(&raw.body)
                .map(KvRead::Found)
                .unwrap_or(KvRead::Unreadable)),
            404 => Ok(KvRead::Missing),
            _ => Self::ok(&path, raw).map(|_| KvRead::Unreadable),
        }
    }

    /// `POST /nodes/{node}/kv/{key}?context&durability=…`: the raw answer (200 written,
    /// 504 indeterminate, 502 the agent was unreachable or died holding it) and, when the
    /// agent names them, the write's dot and the context it overwrote.
    pub fn kv_put(
        &self,
        node: &str,
        key: &str,
        value: &str,
        durability: Durability,
        timeout: Duration,
    ) -> Result<(Raw, Option<Written>), ClientError> {
        let path = format!(
            "/nodes/{node}/kv/{}?context&durability={durability}",
            pct::encode(key)
        );
        let raw = self.send("POST", &path, Some(value.as_bytes()), timeout)?;
        let written = match raw.status {
            200 | 504 => serde_json::from_str::<Written>(&raw.body).ok(),
            _ => None,
        };
        Ok((raw, written))
    }

    /// `POST /api/nodes/{node}/task`: submit a task (issue 15); the agent's answer
    /// (`{"reply": "task_submitted", "task": N}`).
    pub fn task_submit(
        &self,
        node: &str,
        spec: &lightcone_core::heat::task::TaskSpec,
    ) -> Result<serde_json::Value, ClientError> {
        self.post_json(&format!("/api/nodes/{node}/task"), spec)
    }

    /// `POST /api/revoke`: revoke `token` (and its attenuations) at every running agent;
    /// the supervisor's [`crate::api::RevokeReply`] as JSON.
    pub fn revoke(&self, token: &str) -> Result<serde_json::Value, ClientError> {
        self.post_json("/api/revoke", &serde_json::json!({ "token": token }))
    }

    /// `PUT /nodes/{node}/objects/{id}`: store `data` as an erasure-coded object (issue
    /// 16); the raw answer (200 stored, 400 refused, 501 no store, 504 not acknowledged).
    pub fn object_put(
        &self,
        node: &str,
        id: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Raw, ClientError> {
        let path = format!("/nodes/{node}/objects/{}", pct::encode(id));
        self.send("PUT", &path, Some(data), timeout)
    }

    /// `GET /nodes/{node}/objects/{id}`: the raw answer (200 with the object, 404 unknown,
    /// 503 too few good shards reachable).
    pub fn object_get(&self, node: &str, id: &str, timeout: Duration) -> Result<Raw, ClientError> {
        let path = format!("/nodes/{node}/objects/{}", pct::encode(id));
        self.send("GET", &path, None, timeout)
    }

    /// `GET /nodes/{node}/objects/{id}` as bytes (an object need not be text): the status
    /// and the body.
    pub fn object_get_bytes(
        &self,
        node: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let path = format!("/nodes/{node}/objects/{}", pct::encode(id));
        let read = |r: ureq::Response| {
            use std::io::Read;
            let mut v = Vec::new();
            let _ = r.into_reader().take(1 << 20).read_to_end(&mut v);
            v
        };
        let ep = match self.route(&path) {
            To::One(i) | To::Two(i, _) => &self.eps[i],
            To::All => &self.eps[0],
        };
        match self.request_to(ep, "GET", &path, timeout).call() {
            Ok(r) => Ok((r.status(), read(r))),
            Err(ureq::Error::Status(status, r)) => Ok((status, read(r))),
            Err(e) => Err(self.connect_error(ep, &path, e)),
        }
    }

    /// `POST /nodes/{node}/send/{dst}`: an application message; `Ok` when the agent took it.
    pub fn send_message(
        &self,
        node: &str,
        dst: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let path = format!("/nodes/{node}/send/{dst}");
        let raw = self.send("POST", &path, Some(payload), timeout)?;
        if raw.status == 200 {
            Ok(())
        } else {
            Self::ok(&path, raw).map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(url: &str) -> SupervisorInfo {
        SupervisorInfo {
            pid: 1,
            start_time: 0,
            api_url: url.into(),
            engine: crate::link::engine::EngineChoice::Wire,
            engine_reason: String::new(),
            token: "t0k".into(),
        }
    }

    #[test]
    fn host_is_the_api_urls_authority() {
        let c = Client::new(&info("http://127.0.0.1:4000"));
        assert_eq!(
            (c.base(), c.eps[0].host.as_str()),
            ("http://127.0.0.1:4000", "127.0.0.1:4000")
        );
        let c = Client::new(&info("http://127.0.0.1:4000/"));
        assert_eq!(
            (c.base(), c.eps[0].host.as_str()),
            ("http://127.0.0.1:4000", "127.0.0.1:4000")
        );
    }

    #[test]
    fn a_spread_lab_routes_by_node_and_link_end() {
        let ep = |n: &str, port: u16| {
            let url = format!("http://127.0.0.1:{port}");
            Endpoint::new(n, &url, "http://127.0.0.1:9", "t", 0)
        };
        let owner: BTreeMap<String, usize> = [("a1", 0), ("a2", 0), ("b1", 1), ("x y", 1)]
            .into_iter()
            .map(|(n, i)| (n.to_string(), i))
            .collect();
        let c = Client::spread(vec![ep("a", 1), ep("b", 2)], owner);
        assert!(c.is_spread());
        assert_eq!(c.route("/api/nodes/b1/crash"), To::One(1));
        assert_eq!(c.route("/nodes/a2/state"), To::One(0));
        assert_eq!(c.route("/nodes/x%20y/kv/k?siblings"), To::One(1));
        assert_eq!(c.route("/api/links/a1/a2/down"), To::One(0));
        assert_eq!(c.route("/api/links/a1/b1/set"), To::Two(0, 1));
        assert_eq!(c.route("/api/links/b1/a1/up"), To::Two(1, 0));
        assert_eq!(c.route("/api/partition"), To::All);
        // A node no host holds: the first host answers that it has none.
        assert_eq!(c.route("/api/nodes/zz/crash"), To::One(0));
        // One endpoint: everything goes there.
        let one = Client::new(&info("http://127.0.0.1:4000"));
        assert!(!one.is_spread());
        assert_eq!(one.route("/api/links/a1/b1/set"), To::One(0));
    }

    #[test]
    fn a_stamp_carries_the_hosts_offset_and_only_on_state_changes() {
        let late = Endpoint::new("b", "http://127.0.0.1:2", "http://127.0.0.1:9", "t", -1_500);
        let c = Client::spread(vec![late], BTreeMap::new())
            .stamped(std::time::UNIX_EPOCH + Duration::from_secs(10));
        let r = c.request_to(&c.eps[0], "POST", "/api/nodes/b1/crash", DEFAULT_TIMEOUT);
        assert_eq!(r.header(AT_HEADER), Some("9999998500"));
        assert_eq!(r.header("Host"), Some("127.0.0.1:2"));
        assert_eq!(r.url(), "http://127.0.0.1:9/api/nodes/b1/crash");
        let g = c.request_to(&c.eps[0], "GET", "/nodes/b1/state", DEFAULT_TIMEOUT);
        assert_eq!(g.header(AT_HEADER), None);
    }

    #[test]
    fn a_refusal_carries_the_supervisors_words() {
        let e = Client::ok(
            "/api/nodes/x/crash",
            Raw {
                status: 409,
                body: "{\"error\":\"x's agent is not running\"}\n".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.status(), Some(409));
        assert!(
            matches!(&e, ClientError::Status { error: Some(w), .. } if w == "x's agent is not running")
        );
        assert_eq!(
            e.to_string(),
            "/api/nodes/x/crash: HTTP 409: {\"error\":\"x's agent is not running\"}"
        );
        let e = Client::ok(
            "/p",
            Raw {
                status: 502,
                body: "bad gateway".into(),
            },
        )
        .unwrap_err();
        assert!(matches!(
            e,
            ClientError::Status {
                error: None,
                status: 502,
                ..
            }
        ));
    }

    #[test]
    fn state_reads_nan_as_unsynchronized_and_tolerates_missing_sections() {
        let s: NodeState = serde_json::from_str(
            r#"{"id":3,"now_emulated_s":1.5,"members":[{"id":1,"state":"alive"}],
                "time":{"true_error_s":null,"sigma_s":null,"alarms_total":2}}"#,
        )
        .unwrap();
        assert_eq!(
            (s.id, s.members.len(), s.members[0].since_emulated_s),
            (3, 1, 0.0)
        );
        let t = s.time.unwrap();
        assert_eq!((t.true_error_s, t.sigma_s, t.alarms_total), (None, None, 2));
        let s: NodeState =
            serde_json::from_str(r#"{"id":3,"now_emulated_s":0,"time":null}"#).unwrap();
        assert!(s.time.is_none() && s.routes.is_empty());
    }

    /// A one-shot HTTP server on loopback: answers `status` with `body` and hands back the
    /// request it read.
    fn serve_once(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head += &line;
                if line == "\r\n" {
                    break;
                }
            }
            let mut b = vec![0; len];
            r.read_exact(&mut b).unwrap();
            head += &String::from_utf8_lossy(&b);
            let mut s = s;
            write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            head
        });
        (url, h)
    }

    #[test]
    fn every_request_carries_the_token_and_the_host() {
        let (url, h) = serve_once(200, r#"{"node":"a","was_running":true}"#);
        let c = Client::new(&info(&url));
        let r = c.crash("a").unwrap();
        assert!(r.was_running);
        let req = h.join().unwrap().to_ascii_lowercase();
        assert!(req.starts_with("post /api/nodes/a/crash http/1.1"), "{req}");
        assert!(req.contains(&format!("{TOKEN_HEADER}: t0k\r\n")), "{req}");
        assert!(
            req.contains(&format!("host: {}\r\n", &url["http://".len()..])),
            "{req}"
        );
        assert_eq!(req.matches("host:").count(), 1, "{req}");
        assert!(req.contains("content-type: application/json"), "{req}");
    }

    #[test]
    fn an_http_refusal_is_a_status_error_with_the_words() {
        let (url, h) = serve_once(404, r#"{"error":"lab x has no node \"q\""}"#);
        let e = Client::new(&info(&url)).restart("q").unwrap_err();
        h.join().unwrap();
        match e {
            ClientError::Status { status, error, .. } => {
                assert_eq!(
                    (status, error.as_deref()),
                    (404, Some("lab x has no node \"q\""))
                )
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn no_server_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let e = Client::new(&info(&url))
            .status(Duration::from_secs(2))
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Connect { url: u, .. } if u.ends_with("/api/status")),
            "{e}"
        );
    }
}
