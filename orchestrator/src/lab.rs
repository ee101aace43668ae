//! The model of a running lab, as the supervisor holds it: the plan, the link engine and
//! each link's current models ([`LinkRuntime`]), the agents, the ownership ledger, and the
//! fault/control events ([`LabEvent`], bounded). Both the control API ([`crate::api`]) and
//! the dashboard ([`crate::dashboard`]) read and change a lab only through this module;
//! neither knows the other, and the lifecycle ([`crate::supervisor`]) builds the [`Lab`] and
//! mounts them both.
//!
//! Also here: the status a lab reports ([`LabStatus`] and its parts, what `GET /api/status`
//! and `lightcone status --json` print) and the requests that change links ([`LinkChange`],
//! [`Partition`]). Every one is `Serialize + Deserialize`, so a client reads the same types
//! the supervisor writes.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::agents::{AgentState, Agents};
use crate::link::engine::{EngineChoice, LinkEngine};
use crate::plan::Plan;
use crate::state::{LabDir, Ledger};
use lightcone_link::model::{LinkModel, LossModel};

/// Runtime state of one link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRuntime {
    pub a_to_b: LinkModel,
    pub b_to_a: LinkModel,
    pub up: bool,
}

/// This host's end of a link to another host (a multi-host worker's, issue 19). This host
/// shapes only what it sends; the far host shapes the other direction.
#[derive(Debug, Clone)]
pub struct CrossRuntime {
    pub end: crate::hosts::slice::CrossEnd,
    /// The direction this host sends, as configured end to end (the underlay's one-way
    /// time not taken off).
    pub configured: LinkModel,
    pub up: bool,
}

impl CrossRuntime {
    /// This host's end as the worker built it: the configured model is the shaped one
    /// with the underlay's one-way time put back.
    pub fn of(end: &crate::hosts::slice::CrossEnd, time_scale: f64) -> CrossRuntime {
        let mut configured = end.model.clone();
        configured.delay_ns += underlay_emulated_ns(end, time_scale);
        CrossRuntime {
            end: end.clone(),
            configured,
            up: true,
        }
    }

    /// What the engine applies: the configured model less the underlay's one-way time.
    /// `Err`: the configured delay is shorter than the underlay.
    pub fn shaped(&self, time_scale: f64) -> Result<LinkModel, String> {
        let under = underlay_emulated_ns(&self.end, time_scale);
        let mut m = self.configured.clone();
        m.delay_ns = m.delay_ns.checked_sub(under).ok_or_else(|| {
            format!(
                "link {} crosses hosts over an underlay of {:.3} ms one way (real); its delay cannot be shorter",
                self.end.link,
                self.end.underlay_one_way_ns as f64 / 1e6
            )
        })?;
        Ok(m)
    }
}

fn underlay_emulated_ns(end: &crate::hosts::slice::CrossEnd, time_scale: f64) -> u64 {
    (end.underlay_one_way_ns as f64 * time_scale).round() as u64
}

/// Events kept at most; the oldest go first.
pub const MAX_EVENTS: usize = 10_000;

/// A running lab (see the module doc). The supervisor keeps it behind one mutex.
pub struct Lab {
    pub plan: Plan,
    pub dir: LabDir,
    pub ledger: Ledger,
    pub engine: LinkEngine,
    /// What `supervisor.json` says of this lab: its supervisor, API URL, engine and token.
    pub info: SupervisorInfo,
    pub agents: Option<Agents>,
    /// One per planned link, in plan order.
    pub links: Vec<LinkRuntime>,
    /// This host's ends of links to other hosts (a multi-host worker's; else empty).
    pub cross: Vec<CrossRuntime>,
    /// The host this lab is a part of (a multi-host worker's; else `None`).
    pub host: Option<String>,
    pub started: Instant,
    /// Fault and control events, newest last (at most [`MAX_EVENTS`]).
    pub events: VecDeque<LabEvent>,
    /// Base URL of the lab's Prometheus server, when `--prometheus` started one.
    pub prometheus_url: Option<String>,
}

/// Written to `supervisor.json` once the lab is up; `status` and the CLI read it, and the
/// running [`Lab`] keeps it.
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

/// A fault or control event of the lab (the dashboard's timeline). Fields in the order the
/// dashboard has always sent them (sorted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabEvent {
    pub detail: String,
    pub kind: String,
    /// Seconds since the lab came up (real).
    pub t_s: f64,
}

/// A name that is not in the lab. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabError {
    #[error("lab {lab} has no node {node:?}")]
    NoNode { lab: String, node: String },
    #[error("lab {lab} has no link between {a} and {b}")]
    NoLink { lab: String, a: String, b: String },
}

impl Lab {
    /// One planned link per runtime, each direction starting at the planned model, up.
    pub fn initial_links(plan: &Plan) -> Vec<LinkRuntime> {
        plan.links
            .iter()
            .map(|l| LinkRuntime {
                a_to_b: l.model.clone(),
                b_to_a: l.model.clone(),
                up: true,
            })
            .collect()
    }

    /// Record an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn event(&mut self, kind: &str, detail: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(LabEvent {
            t_s: self.started.elapsed().as_secs_f64(),
            kind: kind.into(),
            detail,
        });
    }

    /// The last `max` events after `since` seconds, oldest first.
    pub fn events_after(&self, since: f64, max: usize) -> Vec<LabEvent> {
        let new: Vec<&LabEvent> = self.events.iter().filter(|e| e.t_s > since).collect();
        new[new.len().saturating_sub(max)..]
            .iter()
            .map(|e| (*e).clone())
            .collect()
    }

    /// The index of the link between nodes `a` and `b` (either order).
    /// This host's end of the link to another host between `a` and `b`, if there is one.
    pub fn cross_index(&self, a: &str, b: &str) -> Option<usize> {
        let (ab, ba) = (format!("{a}--{b}"), format!("{b}--{a}"));
        self.cross
            .iter()
            .position(|c| c.end.link == ab || c.end.link == ba)
    }

    pub fn link_index(&self, a: &str, b: &str) -> Result<usize, LabError> {
        for n in [a, b] {
            self.node(n)?;
        }
        self.plan
            .link_between(a, b)
            .map(|l| l.index)
            .ok_or_else(|| LabError::NoLink {
                lab: self.plan.lab.clone(),
                a: a.into(),
                b: b.into(),
            })
    }

    /// The index of node `name`.
    pub fn node(&self, name: &str) -> Result<usize, LabError> {
        self.plan.node_index(name).ok_or_else(|| LabError::NoNode {
            lab: self.plan.lab.clone(),
            node: name.into(),
        })
    }

    /// Each link's configured one-way delay per direction (a→b, b→a), emulated ns, as the
    /// engine's [`LinkEngine::families`] wants it.
    pub fn configured_delays_ns(&self) -> Vec<[u64; 2]> {
        self.links
            .iter()
            .map(|rt| [rt.a_to_b.delay_ns, rt.b_to_a.delay_ns])
            .collect()
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
        use crate::parse::units;
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

    /// Whether the change touches what only a shaping engine can do (delay, jitter, loss,
    /// rate); unshaped links refuse it.
    pub fn shapes(&self) -> bool {
        self.delay.is_some() || self.loss.is_some() || self.jitter.is_some() || self.rate.is_some()
    }
}

/// `POST /api/partition`: take a set of links down (or, with `heal`, up) as one event.
/// Every link is resolved before anything changes, so a bad name changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partition {
    pub links: Vec<(String, String)>,
    #[serde(default)]
    pub heal: bool,
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
    /// In plan order.
    pub nodes: Vec<NodeStatus>,
    /// In plan order.
    pub links: Vec<LinkStatus>,
    /// How tiles map to agent processes, one line (see [`crate::tilegroups::ProcessMap`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_processes: Option<String>,
}

/// One node of a [`LabStatus`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    /// The node's network namespace.
    pub netns: String,
    pub role: lightcone_core::config::Role,
    /// Hierarchical address, as text.
    pub addr: String,
    pub agent: AgentStatus,
}

/// A node's agent process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    /// `running`, `exited` or `none` (see [`AgentState`]).
    pub state: String,
    pub pid: Option<u32>,
    /// The agent process hosting this node, by index, when tiles share processes
    /// (`agents: {tiles_per_process: N}`); absent when each node has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<usize>,
}

/// One link of a [`LabStatus`]: its a→b model now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub a: String,
    pub b: String,
    pub up: bool,
    pub delay_s: f64,
    pub jitter_s: f64,
    /// Mean loss probability (a Gilbert–Elliott model's stationary mean).
    pub loss: f64,
    pub rate_bps: Option<u64>,
    /// A link to another host (issue 19): the host at its other end. This host's entry
    /// gives the direction it sends (`a` is its node), configured end to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_host: Option<String>,
    /// With `to_host`: the underlay's one-way time (real seconds, measured at `up`) that
    /// is part of `delay_s` (the engine shapes the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_one_way_s: Option<f64>,
}

/// A model's mean loss probability (a Gilbert–Elliott model's stationary mean).
fn mean_loss(m: &LinkModel) -> f64 {
    match m.loss {
        LossModel::None => 0.0,
        LossModel::Random { probability, .. } => probability,
        LossModel::GilbertElliott {
            p,
            r,
            loss_bad,
            loss_good,
        } => {
            let bad = p / (p + r);
            bad * loss_bad + (1.0 - bad) * loss_good
        }
    }
}

/// The agent state's JSON name (`running`, `exited`, `none`).
pub fn agent_state_name(state: AgentState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The lab's status now (asks each agent process whether it still runs).
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
                state: agent_state_name(state),
                pid,
                process: lab.agents.as_ref().and_then(|a| a.group_of(i)),
            },
        });
    }
    let mut links: Vec<LinkStatus> = plan
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
            loss: mean_loss(&rt.a_to_b),
            rate_bps: rt.a_to_b.rate_bps,
            to_host: None,
            underlay_one_way_s: None,
        })
        .collect();
    links.extend(lab.cross.iter().map(|c| {
        let here = plan.nodes[c.end.node].name.clone();
        let there = c
            .end
            .link
            .split("--")
            .find(|n| *n != here)
            .unwrap_or_default()
            .to_string();
        LinkStatus {
            name: c.end.link.clone(),
            a: here,
            b: there,
            up: c.up,
            delay_s: c.configured.delay_ns as f64 / 1e9,
            jitter_s: c.configured.jitter_ns as f64 / 1e9,
            loss: mean_loss(&c.configured),
            rate_bps: c.configured.rate_bps,
            to_host: Some(c.end.remote_host.clone()),
            underlay_one_way_s: Some(c.end.underlay_one_way_ns as f64 / 1e9),
        }
    }));
    LabStatus {
        name: plan.lab.clone(),
        state: "up".into(),
        engine: lab.info.engine,
        engine_reason: lab.info.engine_reason.clone(),
        time_scale: plan.time_scale,
        seed: plan.seed,
        supervisor_pid: lab.info.pid,
        uptime_s: lab.started.elapsed().as_secs_f64(),
        api_url: lab.info.api_url.clone(),
        dashboard_url: format!("{}/", lab.info.api_url),
        metrics_url: format!("{}/metrics", lab.info.api_url),
        prometheus_url: lab.prometheus_url.clone(),
        nodes,
        links,
        agent_processes: lab
            .agents
            .as_ref()
            .map(|_| crate::tilegroups::ProcessMap::of(plan).summary()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /api/status` as the supervisor wrote it before its types were split out (the
    /// field names and order of this literal), read by the typed client and written back
    /// byte for byte.
    #[test]
    fn status_json_reads_back_as_written() {
        let text = r#"{"name":"lab1","state":"up","engine":"wire","engine_reason":"asked for wire","time_scale":100.0,"seed":7,"supervisor_pid":42,"uptime_s":1.5,"api_url":"http://127.0.0.1:4000","dashboard_url":"http://127.0.0.1:4000/","metrics_url":"http://127.0.0.1:4000/metrics","prometheus_url":null,"nodes":[{"name":"n1","netns":"lc-lab1-n1","role":"tile","addr":"1.1.1.1","agent":{"state":"running","pid":43}}],"links":[{"name":"n1--n2","a":"n1","b":"n2","up":true,"delay_s":0.01,"jitter_s":0.0,"loss":0.0,"rate_bps":null}]}"#;
        let st: LabStatus = serde_json::from_str(text).expect("status reads");
        assert_eq!(st.nodes[0].agent.state, "running");
        assert_eq!(st.engine, EngineChoice::Wire);
        assert_eq!(serde_json::to_string(&st).unwrap(), text);
    }

    #[test]
    fn unknown_names_keep_their_words() {
        let e = LabError::NoNode {
            lab: "lab1".into(),
            node: "x".into(),
        };
        assert_eq!(e.to_string(), r#"lab lab1 has no node "x""#);
        let e = LabError::NoLink {
            lab: "lab1".into(),
            a: "a".into(),
            b: "b".into(),
        };
        assert_eq!(e.to_string(), "lab lab1 has no link between a and b");
    }

    #[test]
    fn only_delay_jitter_loss_and_rate_need_a_shaping_engine() {
        assert!(!LinkChange::default().shapes());
        let dup = LinkChange {
            duplicate: Some("1%".into()),
            ..LinkChange::default()
        };
        assert!(!dup.shapes());
        for c in [
            LinkChange {
                delay: Some("1ms".into()),
                ..LinkChange::default()
            },
            LinkChange {
                rate: Some("unlimited".into()),
                ..LinkChange::default()
            },
        ] {
            assert!(c.shapes(), "{c:?}");
        }
    }
}
