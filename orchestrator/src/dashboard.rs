//! The dashboard the supervisor serves on loopback: one page (`dashboards/index.html`,
//! rendered with tera) plus the read-only JSON it draws from, and a server-sent-event
//! stream that pushes a snapshot every second so the page never reloads.
//!
//! It reads the lab model ([`crate::lab`]) only, not the API: the lifecycle
//! ([`crate::supervisor`]) mounts both. Its replies are typed views (`Serialize +
//! Deserialize`), their fields in the order the `json!` objects they replaced printed them.
//!
//! Routes (all GET; the fault controls reuse the supervisor's `POST /api/…` routes):
//! - `/` the page, with the lab's token embedded (see below)
//! - `/api/topology` nodes (hierarchical address, role) and links (level) for the layout
//! - `/api/health` per node: the agent process state and how its peers see it (counts of
//!   alive/suspect/dead over every running agent's membership view, from `/state`)
//! - `/api/linkstats` the wire engine's per-direction counters and achieved mean delay
//! - `/api/events?since=T` the lab's fault/control events after `T` seconds
//! - `/api/log/{node}?lines=N` the tail of `<state>/logs/<node>.log` (≤ 200 lines, last 64 KiB)
//! - `/api/stream` SSE: `snapshot` events with status, health, link stats and new events
//!
//! Threat model of the token: the API and the page listen on 127.0.0.1 only. Every request
//! that is not `GET`/`HEAD` needs the per-lab token in `x-lightcone-token` (see
//! [`crate::api::Guard`]); the page gets it embedded when served. Any local process that can open
//! a TCP connection to loopback can fetch the page and so the token: the token does not
//! separate local users (a multi-user host needs a firewall or a unix socket). What it does
//! stop is a web page of another origin in the user's browser forging requests (it cannot
//! send the custom header without a CORS preflight, which we never answer; its `Origin` is
//! refused anyway), reading our page to learn the token (a `Host` other than our own
//! address, as DNS rebinding sends, is refused), and scripts that poke the port without
//! reading supervisor.json.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agents::{agent_request, AgentState};
use crate::http::error_response;
use crate::lab::{agent_state_name, status_of, Lab, LabEvent, LabStatus};
use crate::link::engine::EngineChoice;

const PAGE: &str = include_str!("../../dashboards/index.html");
/// Health is recomputed at most this often, however many pages are open; large labs wait
/// longer (10 ms per node), since every recomputation asks every agent for its state.
const HEALTH_MAX_AGE: Duration = Duration::from_millis(900);
const HEALTH_AGE_PER_NODE: Duration = Duration::from_millis(10);
/// Time an agent gets to answer `/state` for the health view.
const STATE_TIMEOUT: Duration = Duration::from_millis(800);
const LOG_MAX_LINES: usize = 200;
const LOG_MAX_BYTES: u64 = 64 * 1024;
/// Events sent in the first snapshot of a stream (the page's timeline keeps the rest).
const STREAM_FIRST_EVENTS: usize = 500;
const STREAM_PERIOD: Duration = Duration::from_secs(1);

/// What the dashboard's handlers share: the lab and the cached health view.
#[derive(Clone)]
pub struct Dash {
    lab: Arc<Mutex<Lab>>,
    /// The lab's state directory (fixed for the supervisor's life), read without the lock.
    dir: Arc<crate::state::LabDir>,
    health: Arc<tokio::sync::Mutex<Option<(Instant, Health)>>>,
}

impl Dash {
    pub fn new(lab: Arc<Mutex<Lab>>) -> Dash {
        let dir = {
            let l = lab.lock().expect("lab lock");
            Arc::new(crate::state::LabDir {
                lab: l.dir.lab.clone(),
                path: l.dir.path.clone(),
            })
        };
        Dash {
            lab,
            dir,
            health: Default::default(),
        }
    }
}

/// `GET /api/topology`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyView {
    pub lab: String,
    pub links: Vec<TopologyLink>,
    pub nodes: Vec<TopologyNode>,
    pub time_scale: f64,
}

/// A node of [`TopologyView`]: name, role and hierarchical address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyNode {
    pub addr: String,
    pub cell: u16,
    pub cluster: u16,
    pub layer: u16,
    pub name: String,
    pub role: lightcone_core::config::Role,
    pub tile: u16,
}

/// A link of [`TopologyView`], with its level in the hierarchy (`cell`, `cluster`, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyLink {
    pub a: String,
    pub b: String,
    pub level: String,
    pub name: String,
}

/// `GET /api/health`: per node name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub nodes: BTreeMap<String, NodeHealth>,
}

/// One node's health: its agent process and how its peers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeHealth {
    /// Whether its agent answered `/state` this time.
    pub answers: bool,
    /// The SHA-256 (hex) of the agent build the node attests (issue 18's attestation);
    /// `None` without an answer or a measurement.
    #[serde(default)]
    pub build: Option<String>,
    /// Its share of one core since it started (issue 18's runtime budget: the spec's
    /// < 0.5–1 %); `None` without an answer.
    #[serde(default)]
    pub cpu_share: Option<f64>,
    pub local_health: Option<i64>,
    pub peers: PeerCounts,
    /// `running`, `exited` or `none`.
    pub process: String,
    /// The protocol version its build speaks (N or N−1 of a rollout).
    #[serde(default)]
    pub protocol: Option<u64>,
    /// Its thermal load (heat to reject ÷ radiator capacity) and whether it is throttled,
    /// as its agent reported them; `None` without a thermal model or an answer.
    pub thermal_load: Option<f64>,
    pub throttled: Option<bool>,
    /// See [`peer_view`].
    pub view: String,
}

/// Peers reporting a node in each membership state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PeerCounts {
    pub alive: u32,
    pub dead: u32,
    pub suspect: u32,
}

/// `GET /api/linkstats`: the wire engine's counters (no rows for netem or unshaped links).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatsView {
    pub engine: EngineChoice,
    pub links: Vec<LinkStatRow>,
    pub time_scale: f64,
}

/// One link direction of [`LinkStatsView`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatRow {
    pub configured_delay_s: f64,
    pub delay_sum_s: f64,
    pub direction: String,
    pub dropped_down: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub forwarded: u64,
    pub link: String,
    /// Achieved mean one-way delay, real seconds; `null` before the first frame.
    pub mean_delay_s: Option<f64>,
    pub queue_packets: u64,
    pub tx_errors: u64,
    pub up: bool,
}

/// `GET /api/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsView {
    pub events: Vec<LabEvent>,
}

/// `GET /api/log/{node}`: the tail of the node's log, or why it could not be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub lines: Vec<String>,
    pub node: String,
}

/// One `snapshot` event of `/api/stream`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub events: Vec<LabEvent>,
    pub health: Health,
    pub linkstats: LinkStatsView,
    pub status: LabStatus,
    /// The lab's rollout (issue 18, `lightcone update`), as its record says now; `None`
    /// when none was started.
    #[serde(default)]
    pub rollout: Option<crate::rollout::RolloutState>,
}

/// Render the page with the lab's name and token.
pub fn render_page(lab: &str, token: &str) -> Result<String, tera::Error> {
    let mut ctx = tera::Context::new();
    ctx.insert("lab", lab);
    ctx.insert("token", token);
    tera::Tera::one_off(PAGE, &ctx, true)
}

/// `GET /`: the page.
pub async fn page(State(d): State<Dash>) -> Response {
    let (lab, token) = {
        let l = d.lab.lock().expect("lab lock");
        (l.plan.lab.clone(), l.info.token.clone())
    };
    match render_page(&lab, &token) {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")).into_response(),
    }
}

/// `GET /api/topology`.
pub async fn topology(State(d): State<Dash>) -> Json<TopologyView> {
    let lab = d.lab.lock().expect("lab lock");
    let p = &lab.plan;
    let nodes = p
        .nodes
        .iter()
        .map(|n| TopologyNode {
            addr: n.addr.to_string(),
            cell: n.addr.cell,
            cluster: n.addr.cluster,
            layer: n.addr.layer,
            name: n.name.clone(),
            role: n.role,
            tile: n.addr.tile,
        })
        .collect();
    let links = p
        .links
        .iter()
        .map(|l| TopologyLink {
            a: p.nodes[l.a.node].name.clone(),
            b: p.nodes[l.b.node].name.clone(),
            level: serde_json::to_value(l.level)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            name: l.name.clone(),
        })
        .collect();
    Json(TopologyView {
        lab: p.lab.clone(),
        links,
        nodes,
        time_scale: p.time_scale,
    })
}

/// Per node: agent process state, and its peers' view of it.
async fn compute_health(lab: &Arc<Mutex<Lab>>) -> Health {
    let (names, mut procs, sockets) = {
        let mut l = lab.lock().expect("lab lock");
        let names: Vec<String> = l.plan.nodes.iter().map(|n| n.name.clone()).collect();
        let dir = l.dir.path.clone();
        let mut procs = Vec::with_capacity(names.len());
        let mut sockets = Vec::new();
        for i in 0..names.len() {
            let st = match l.agents.as_mut() {
                Some(a) => a.state(i).0,
                None => AgentState::None,
            };
            if st == AgentState::Running {
                sockets.push((i, crate::plan::agent_socket(&dir, i)));
            }
            procs.push(agent_state_name(st));
        }
        (names, procs, sockets)
    };
    let reqs = sockets.iter().map(|(i, p)| async move {
        let r = agent_request(
            p,
            hyper::Method::GET,
            "/state",
            Vec::new(),
            STATE_TIMEOUT,
            None,
        )
        .await;
        (*i, r)
    });
    // counts[node] = [alive, suspect, dead] as reported by peers.
    let mut counts = vec![[0u32; 3]; names.len()];
    let mut local_health: Vec<Option<i64>> = vec![None; names.len()];
    let mut thermal: Vec<(Option<f64>, Option<bool>)> = vec![(None, None); names.len()];
    let mut answered = vec![false; names.len()];
    let mut builds: Vec<(Option<String>, Option<f64>, Option<u64>)> =
        vec![(None, None, None); names.len()];
    for (i, r) in futures::future::join_all(reqs).await {
        let Ok((200, body)) = r else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        answered[i] = true;
        local_health[i] = v["local_health"].as_i64();
        thermal[i] = (
            v["thermal"]["load_ratio"].as_f64(),
            v["thermal"]["throttled"].as_bool(),
        );
        builds[i] = (
            v["attest"]["build"].as_str().map(String::from),
            v["runtime"]["cpu_share"].as_f64(),
            v["protocol_version"].as_u64(),
        );
        for m in v["members"].as_array().into_iter().flatten() {
            let (Some(id), Some(st)) = (m["id"].as_u64(), m["state"].as_str()) else {
                continue;
            };
            let k = match st {
                "alive" => 0,
                "suspect" => 1,
                "dead" => 2,
                _ => continue,
            };
            if let Some(c) = counts.get_mut(id as usize) {
                c[k] += 1;
            }
        }
    }
    let nodes = names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let [alive, suspect, dead] = counts[i];
            let h = NodeHealth {
                answers: answered[i],
                local_health: local_health[i],
                peers: PeerCounts {
                    alive,
                    dead,
                    suspect,
                },
                process: std::mem::take(&mut procs[i]),
                thermal_load: thermal[i].0,
                throttled: thermal[i].1,
                build: builds[i].0.take(),
                cpu_share: builds[i].1,
                protocol: builds[i].2,
                view: peer_view(alive, suspect, dead).into(),
            };
            (n, h)
        })
        .collect();
    Health { nodes }
}

/// How a node's peers see it: `dead` once a strict majority of the peers reporting it say
/// dead (one confused peer on a loaded host does not kill a node on the page), `suspect`
/// while anyone suspects or declares it dead, `unknown` when no peer reports it.
pub fn peer_view(alive: u32, suspect: u32, dead: u32) -> &'static str {
    let reporters = alive + suspect + dead;
    if reporters == 0 {
        "unknown"
    } else if 2 * dead > reporters {
        "dead"
    } else if suspect + dead > 0 {
        "suspect"
    } else {
        "alive"
    }
}

async fn health(d: &Dash) -> Health {
    let nodes = d.lab.lock().expect("lab lock").plan.nodes.len() as u32;
    let max_age = HEALTH_MAX_AGE.max(HEALTH_AGE_PER_NODE * nodes);
    let mut cache = d.health.lock().await;
    if let Some((at, v)) = cache.as_ref() {
        if at.elapsed() < max_age {
            return v.clone();
        }
    }
    let v = compute_health(&d.lab).await;
    *cache = Some((Instant::now(), v.clone()));
    v
}

/// `GET /api/health`.
pub async fn health_route(State(d): State<Dash>) -> Json<Health> {
    Json(health(&d).await)
}

fn linkstats(lab: &Lab) -> LinkStatsView {
    let links = lab
        .engine
        .stats()
        .into_iter()
        .map(|s| {
            let mean = if s.forwarded > 0 {
                Some(s.delay_sum_s / s.forwarded as f64)
            } else {
                None
            };
            LinkStatRow {
                configured_delay_s: s.configured_delay_s,
                delay_sum_s: s.delay_sum_s,
                direction: s.direction.label().into(),
                dropped_down: s.dropped_down,
                dropped_loss: s.dropped_loss,
                dropped_queue: s.dropped_queue,
                forwarded: s.forwarded,
                link: s.link,
                mean_delay_s: mean,
                queue_packets: s.queue_packets,
                tx_errors: s.tx_errors,
                up: s.up,
            }
        })
        .collect();
    LinkStatsView {
        engine: lab.info.engine,
        links,
        time_scale: lab.plan.time_scale,
    }
}

/// `GET /api/linkstats`.
pub async fn linkstats_route(State(d): State<Dash>) -> Json<LinkStatsView> {
    Json(linkstats(&d.lab.lock().expect("lab lock")))
}

#[derive(Deserialize)]
pub struct Since {
    since: Option<f64>,
}

/// `GET /api/events?since=T`.
pub async fn events_route(State(d): State<Dash>, Query(q): Query<Since>) -> Json<EventsView> {
    let lab = d.lab.lock().expect("lab lock");
    Json(EventsView {
        events: lab.events_after(q.since.unwrap_or(-1.0), usize::MAX),
    })
}

#[derive(Deserialize)]
pub struct Lines {
    lines: Option<usize>,
}

/// The last `n` lines of a file, reading at most its last `LOG_MAX_BYTES`.
pub fn tail(path: &std::path::Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(LOG_MAX_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(LOG_MAX_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in the middle
    }
    Ok(lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect())
}

/// A log line without its terminal colours (`ESC [ … m`).
fn strip_ansi(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut it = l.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET /api/log/{node}?lines=N`.
pub async fn log_route(
    State(d): State<Dash>,
    UrlPath(node): UrlPath<String>,
    Query(q): Query<Lines>,
) -> Response {
    let (path, group) = {
        let lab = d.lab.lock().expect("lab lock");
        let id = match lab.node(&node) {
            Ok(id) => id,
            Err(e) => return error_response(StatusCode::NOT_FOUND, e.to_string()),
        };
        // A tile in a multi-tile agent logs into its process's log, each line in its span.
        match lab.agents.as_ref().and_then(|a| a.group_of(id)) {
            Some(g) => (
                lab.dir.logs().join(format!("agents-group-{g}.log")),
                Some(format!("tile{{node={node}}}")),
            ),
            None => (lab.dir.logs().join(format!("{node}.log")), None),
        }
    };
    let n = q.lines.unwrap_or(50).min(LOG_MAX_LINES);
    let lines = match &group {
        None => tail(&path, n),
        Some(span) => tail(&path, usize::MAX).map(|all| {
            let mine: Vec<String> = all
                .into_iter()
                .map(|l| strip_ansi(&l))
                .filter(|l| l.contains(span.as_str()))
                .collect();
            mine[mine.len().saturating_sub(n)..].to_vec()
        }),
    };
    let view = match lines {
        Ok(lines) => LogView {
            error: None,
            lines,
            node,
        },
        Err(e) => LogView {
            error: Some(e.to_string()),
            lines: Vec::new(),
            node,
        },
    };
    Json(view).into_response()
}

async fn snapshot(d: &Dash, since: f64, first: bool) -> (Snapshot, f64) {
    let h = health(d).await;
    // The rollout's record is rewritten atomically after every step, by whichever process
    // runs it; an unreadable one is shown as none. Read before the lab's lock is taken.
    let rollout = crate::rollout::load(&d.dir).ok().flatten();
    let mut lab = d.lab.lock().expect("lab lock");
    let max = if first {
        STREAM_FIRST_EVENTS
    } else {
        usize::MAX
    };
    let events = lab.events_after(since, max);
    let last = lab.events.back().map(|e| e.t_s).unwrap_or(since).max(since);
    let status = status_of(&mut lab);
    let v = Snapshot {
        events,
        health: h,
        linkstats: linkstats(&lab),
        status,
        rollout,
    };
    (v, last)
}

/// `GET /api/stream`: server-sent `snapshot` events, one a second.
pub async fn stream(State(d): State<Dash>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let s = futures::stream::unfold((d, -1.0f64, true), |(d, since, first)| async move {
        if !first {
            tokio::time::sleep(STREAM_PERIOD).await;
        }
        let (v, last) = snapshot(&d, since, first).await;
        let ev = Event::default()
            .event("snapshot")
            .data(serde_json::to_string(&v).unwrap_or_default());
        Some((Ok(ev), (d, last, false)))
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tile's lines in its group's log are found by their span, colours or not.
    #[test]
    fn ansi_colours_are_stripped_from_log_lines() {
        let l = "\u{1b}[2m2026\u{1b}[0m \u{1b}[1mtile\u{1b}[0m{\u{1b}[3mnode\u{1b}[0m\u{1b}[2m=\u{1b}[0ma1}: up";
        assert_eq!(strip_ansi(l), "2026 tile{node=a1}: up");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn peer_view_rules() {
        assert_eq!(peer_view(0, 0, 0), "unknown");
        assert_eq!(peer_view(5, 0, 0), "alive");
        assert_eq!(peer_view(4, 1, 0), "suspect");
        assert_eq!(peer_view(4, 0, 1), "suspect");
        assert_eq!(peer_view(2, 1, 2), "suspect");
        assert_eq!(peer_view(1, 0, 2), "dead");
        assert_eq!(peer_view(0, 0, 1), "dead");
    }

    #[test]
    fn page_embeds_lab_and_token() {
        let html = render_page("lab-1", "00ff").unwrap();
        assert!(html.contains("\"00ff\""), "token not embedded");
        assert!(html.contains("\"lab-1\""));
        assert!(!html.contains("{{"), "unrendered template tags");
    }

    /// The typed views print the bytes the `json!` objects they replaced printed.
    #[test]
    fn views_print_as_the_json_they_replaced() {
        use serde_json::json;
        let same = |typed: String, old: Value| assert_eq!(typed, old.to_string());
        let row = LinkStatRow {
            configured_delay_s: 0.5,
            delay_sum_s: 2.0,
            direction: "a_to_b".into(),
            dropped_down: 1,
            dropped_loss: 2,
            dropped_queue: 3,
            forwarded: 4,
            link: "a--b".into(),
            mean_delay_s: Some(0.5),
            queue_packets: 5,
            tx_errors: 6,
            up: true,
        };
        same(
            serde_json::to_string(&row).unwrap(),
            json!({
                "link": "a--b", "direction": "a_to_b", "up": true,
                "forwarded": 4, "dropped_loss": 2,
                "dropped_queue": 3, "dropped_down": 1,
                "tx_errors": 6, "queue_packets": 5,
                "configured_delay_s": 0.5, "delay_sum_s": 2.0,
                "mean_delay_s": 0.5,
            }),
        );
        let h = NodeHealth {
            answers: true,
            local_health: None,
            peers: PeerCounts {
                alive: 3,
                dead: 1,
                suspect: 0,
            },
            process: "running".into(),
            thermal_load: Some(0.25),
            throttled: Some(false),
            build: Some("ab".into()),
            cpu_share: Some(0.004),
            protocol: Some(3),
            view: "suspect".into(),
        };
        same(
            serde_json::to_string(&h).unwrap(),
            json!({
                "process": "running", "answers": true, "local_health": null,
                "build": "ab", "cpu_share": 0.004, "protocol": 3,
                "peers": { "alive": 3, "suspect": 0, "dead": 1 },
                "thermal_load": 0.25, "throttled": false,
                "view": "suspect",
            }),
        );
        let ev = LabEvent {
            detail: "n1".into(),
            kind: "crash".into(),
            t_s: 1.25,
        };
        same(
            serde_json::to_string(&ev).unwrap(),
            json!({ "t_s": 1.25, "kind": "crash", "detail": "n1" }),
        );
        let failed = LogView {
            error: Some("gone".into()),
            lines: Vec::new(),
            node: "n1".into(),
        };
        same(
            serde_json::to_string(&failed).unwrap(),
            json!({ "node": "n1", "lines": [], "error": "gone" }),
        );
        let ok = LogView {
            error: None,
            lines: vec!["x".into()],
            node: "n1".into(),
        };
        same(
            serde_json::to_string(&ok).unwrap(),
            json!({ "node": "n1", "lines": ["x"] }),
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let t = tail(&p, 3).unwrap();
        assert_eq!(t, vec!["line 997", "line 998", "line 999"]);
    }
}
