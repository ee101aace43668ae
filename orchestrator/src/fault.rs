//! Typed fault payloads, parsed once at the edge.
//!
//! A fault is read from text once, where it enters (a `lightcone fault` argument, a
//! scenario verb), into a [`NodeFault`] that holds only values the agent accepts, and it
//! travels as that type to the one place it leaves the process: the supervisor's
//! `POST /api/nodes/{node}/{crash|restart|clock|byzantine}`, whose JSON bodies are the
//! agent's own request types ([`ClockFaultRequest`], [`ByzantineRequest`]). Nothing between
//! the edge and the request re-reads a string.

use lightcone_agent::config::{ByzantineRequest, ClockFaultRequest};

/// A clock fault (emulated time), within the agent's limits
/// ([`ClockFaultRequest::to_fault`]). Built with [`ClockFault::checked`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockFault {
    /// The hardware clock's phase jumps by this much (`clock_step`, `--step`).
    Step { offset_ns: f64 },
    /// Its frequency changes by this many parts per billion (`clock_drift`, `--drift`).
    Drift { ppb: f64 },
    /// It serves time off by this much, a compromised authority (`stratum0_compromise`,
    /// `--bias`); 0 clears it.
    ServeBias { offset_ns: f64 },
    /// It loses (`true`) or regains (`false`) sight of the pulsars (`pulsar_loss`,
    /// `--pulsar-loss`, `--pulsar-restore`).
    PulsarLoss { lost: bool },
}

impl ClockFault {
    /// Scenario verbs that make a clock fault, one per kind.
    pub const VERBS: [&'static str; 4] = [
        "clock_step",
        "clock_drift",
        "stratum0_compromise",
        "pulsar_loss",
    ];

    /// The fault if the agent would take it, else the agent's own reason (e.g.
    /// `step_ns = … is out of range …`).
    pub fn checked(self) -> Result<Self, String> {
        self.request().to_fault()?;
        Ok(self)
    }

    /// The scenario verb that makes this fault.
    pub fn verb(&self) -> &'static str {
        match self {
            ClockFault::Step { .. } => "clock_step",
            ClockFault::Drift { .. } => "clock_drift",
            ClockFault::ServeBias { .. } => "stratum0_compromise",
            ClockFault::PulsarLoss { .. } => "pulsar_loss",
        }
    }

    /// The body of the agent's `POST /clock` (and the supervisor's).
    pub fn request(&self) -> ClockFaultRequest {
        let mut r = ClockFaultRequest::default();
        match *self {
            ClockFault::Step { offset_ns } => r.step_ns = Some(offset_ns),
            ClockFault::Drift { ppb } => r.drift_ppb = Some(ppb),
            ClockFault::ServeBias { offset_ns } => r.serve_bias_ns = Some(offset_ns),
            ClockFault::PulsarLoss { lost } => r.pulsar_loss = Some(lost),
        }
        r
    }
}

/// Byzantine behaviours a node takes on, each a name the agent knows
/// ([`Byzantine::BEHAVIOURS`](lightcone_agent::node::Byzantine::BEHAVIOURS)); none: honest.
/// Recorded as the list of names.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct ByzantineFault(Vec<String>);

impl ByzantineFault {
    /// The behaviours named, if the agent knows every one; the error lists the known ones.
    pub fn from_names(names: Vec<String>) -> Result<Self, String> {
        lightcone_agent::node::Byzantine::from_names(&names)?;
        Ok(ByzantineFault(names))
    }

    /// Honest again.
    pub fn honest() -> Self {
        ByzantineFault::default()
    }

    pub fn is_honest(&self) -> bool {
        self.0.is_empty()
    }

    /// The behaviour names, as written.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The body of the agent's `POST /byzantine` (and the supervisor's).
    pub fn request(&self) -> ByzantineRequest {
        ByzantineRequest {
            behaviour: self.0.clone(),
        }
    }
}

/// A fault injected into one node through the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeFault {
    /// Kill the node's agent (SIGKILL).
    Crash,
    /// Start the node's agent again.
    Restart,
    Clock(ClockFault),
    Byzantine(ByzantineFault),
}

impl NodeFault {
    /// The last segment of the supervisor's `/api/nodes/{node}/…` for this fault.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeFault::Crash => "crash",
            NodeFault::Restart => "restart",
            NodeFault::Clock(_) => "clock",
            NodeFault::Byzantine(_) => "byzantine",
        }
    }

    /// The supervisor's path for this fault on `node`.
    pub fn api_path(&self, node: &str) -> String {
        format!("/api/nodes/{node}/{}", self.kind())
    }

    /// The request body, as JSON the supervisor (and behind it the agent) accepts.
    pub fn body(&self) -> serde_json::Value {
        let v = match self {
            NodeFault::Crash | NodeFault::Restart => Ok(serde_json::json!({})),
            NodeFault::Clock(c) => serde_json::to_value(c.request()),
            NodeFault::Byzantine(b) => serde_json::to_value(b.request()),
        };
        v.expect("plain structs of numbers, booleans and strings serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_are_the_agents_request_json() {
        let step = NodeFault::Clock(ClockFault::Step { offset_ns: -2e6 });
        assert_eq!(step.body(), json!({"step_ns": -2e6}));
        assert_eq!(step.api_path("a"), "/api/nodes/a/clock");
        let bias = ClockFault::ServeBias { offset_ns: 5e7 };
        assert_eq!(bias.verb(), "stratum0_compromise");
        assert_eq!(NodeFault::Clock(bias).body(), json!({"serve_bias_ns": 5e7}));
        let lost = NodeFault::Clock(ClockFault::PulsarLoss { lost: false });
        assert_eq!(lost.body(), json!({"pulsar_loss": false}));
        let b = ByzantineFault::from_names(vec!["drop_forwarding".into()]).unwrap();
        assert_eq!(
            NodeFault::Byzantine(b).body(),
            json!({"behaviour": ["drop_forwarding"]})
        );
        assert_eq!(NodeFault::Crash.body(), json!({}));
        assert_eq!(NodeFault::Restart.api_path("b"), "/api/nodes/b/restart");
        // What is sent is what the agent parses back to the same fault.
        for c in [
            ClockFault::Step { offset_ns: 1e6 },
            ClockFault::Drift { ppb: -3.5 },
            ClockFault::ServeBias { offset_ns: 0.0 },
            ClockFault::PulsarLoss { lost: true },
        ] {
            let body = NodeFault::Clock(c).body().to_string();
            let back: ClockFaultRequest = serde_json::from_str(&body).unwrap();
            assert_eq!(back, c.request());
            assert!(back.to_fault().is_ok(), "{body}");
        }
    }

    #[test]
    fn faults_outside_the_agents_limits_are_refused_at_the_edge() {
        let e = ClockFault::Step { offset_ns: 2e14 }.checked().unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(ClockFault::Drift { ppb: f64::NAN }.checked().is_err());
        assert!(ClockFault::ServeBias { offset_ns: 2e9 }.checked().is_err());
        assert!(ClockFault::Drift { ppb: 50.0 }.checked().is_ok());
        let e = ByzantineFault::from_names(vec!["eat_cake".into()]).unwrap_err();
        assert!(e.contains("known: lie_membership, drop_forwarding"), "{e}");
        assert!(ByzantineFault::from_names(vec![]).unwrap().is_honest());
    }
}
