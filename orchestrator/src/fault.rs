//! Typed fault payloads, parsed once at the edge.
//!
//! A fault is read from text once, where it enters (a `lightcone fault` argument, a
//! scenario verb), into a [`NodeFault`] that holds only values the agent accepts, and it
//! travels as that type to the one place it leaves the process: the supervisor's
//! `POST /api/nodes/{node}/{crash|restart|clock|byzantine}`, whose JSON bodies are the
//! agent's own request types ([`ClockFaultRequest`], [`ByzantineRequest`]). Nothing between
//! the edge and the request re-reads a string.

use lightcone_core::config::{
    ByzantineRequest, ClockFaultRequest, MAX_BIAS_NS, MAX_DRIFT, MAX_STEP_NS,
};

use crate::parse::units;

/// What a clock fault does to a node's clock (emulated time); unchecked. A
/// [`ClockFault`] is one the agent accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockChange {
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

impl ClockChange {
    /// The body of the agent's `POST /clock` (and the supervisor's) for this change.
    fn request(&self) -> ClockFaultRequest {
        let mut r = ClockFaultRequest::default();
        match *self {
            ClockChange::Step { offset_ns } => r.step_ns = Some(offset_ns),
            ClockChange::Drift { ppb } => r.drift_ppb = Some(ppb),
            ClockChange::ServeBias { offset_ns } => r.serve_bias_ns = Some(offset_ns),
            ClockChange::PulsarLoss { lost } => r.pulsar_loss = Some(lost),
        }
        r
    }
}

/// A clock fault within the agent's limits ([`ClockFaultRequest::to_fault`]): only
/// [`ClockFault::new`] makes one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockFault(ClockChange);

impl ClockFault {
    /// The fault if the agent would take it, else the agent's own reason (e.g.
    /// `step_ns = … is out of range …`).
    pub fn new(change: ClockChange) -> Result<Self, String> {
        change.request().to_fault()?;
        Ok(ClockFault(change))
    }

    /// The fault `lightcone fault clock` asks for with its flags (clap lets exactly one
    /// be given): `--step` and `--bias` are signed durations, `--drift` is in ppb. A value
    /// past the agent's limits is refused here, in the flag's own units, before any
    /// request.
    pub fn from_flags(
        step: Option<&str>,
        drift_ppb: Option<f64>,
        bias: Option<&str>,
        pulsar_loss: bool,
        pulsar_restore: bool,
    ) -> Result<Self, String> {
        let signed = |flag: &str, text: &str| {
            units::signed_duration_ns(text).map_err(|e| format!("{flag}: {e}"))
        };
        let change = match (step, drift_ppb, bias) {
            (Some(s), _, _) => ClockChange::Step {
                offset_ns: signed("--step", s)?,
            },
            (None, Some(ppb), _) => ClockChange::Drift { ppb },
            (None, None, Some(b)) => ClockChange::ServeBias {
                offset_ns: signed("--bias", b)?,
            },
            (None, None, None) if pulsar_loss || pulsar_restore => {
                ClockChange::PulsarLoss { lost: pulsar_loss }
            }
            (None, None, None) => {
                return Err(
                    "give one of --step, --drift, --bias, --pulsar-loss, --pulsar-restore".into(),
                )
            }
        };
        let out_of_range = |what: String, max: &str| {
            format!("{what} is out of range: at most ±{max} (a larger value is a broken clock, not a fault)")
        };
        match change {
            ClockChange::Step { offset_ns: v } if v.abs() > MAX_STEP_NS => Err(out_of_range(
                format!("--step {} s", v * 1e-9),
                "1 day (86400 s)",
            )),
            ClockChange::Drift { ppb: v } if !v.is_finite() || v.abs() > MAX_DRIFT * 1e9 => {
                Err(out_of_range(format!("--drift {v} ppb"), "1e6 ppb"))
            }
            ClockChange::ServeBias { offset_ns: v } if v.abs() > MAX_BIAS_NS => {
                Err(out_of_range(format!("--bias {} s", v * 1e-9), "1 s"))
            }
            _ => ClockFault::new(change),
        }
    }

    pub fn change(&self) -> ClockChange {
        self.0
    }

    /// The scenario verb that makes this fault.
    pub fn verb(&self) -> &'static str {
        match self.0 {
            ClockChange::Step { .. } => "clock_step",
            ClockChange::Drift { .. } => "clock_drift",
            ClockChange::ServeBias { .. } => "stratum0_compromise",
            ClockChange::PulsarLoss { .. } => "pulsar_loss",
        }
    }

    /// The body of the agent's `POST /clock` (and the supervisor's).
    pub fn request(&self) -> ClockFaultRequest {
        self.0.request()
    }
}

/// Byzantine behaviours a node takes on, each a name the agent knows
/// ([`Byzantine::BEHAVIOURS`](lightcone_core::byzantine::Byzantine::BEHAVIOURS)); none: honest.
/// Recorded as the list of names.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct ByzantineFault(Vec<String>);

impl ByzantineFault {
    /// The behaviours named, if the agent knows every one; the error lists the known ones.
    pub fn from_names(names: Vec<String>) -> Result<Self, String> {
        lightcone_core::byzantine::Byzantine::from_names(&names)?;
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
        let step =
            NodeFault::Clock(ClockFault::new(ClockChange::Step { offset_ns: -2e6 }).unwrap());
        assert_eq!(step.body(), json!({"step_ns": -2e6}));
        assert_eq!(step.api_path("a"), "/api/nodes/a/clock");
        let bias = ClockFault::new(ClockChange::ServeBias { offset_ns: 5e7 }).unwrap();
        assert_eq!(bias.verb(), "stratum0_compromise");
        assert_eq!(NodeFault::Clock(bias).body(), json!({"serve_bias_ns": 5e7}));
        let lost =
            NodeFault::Clock(ClockFault::new(ClockChange::PulsarLoss { lost: false }).unwrap());
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
            ClockChange::Step { offset_ns: 1e6 },
            ClockChange::Drift { ppb: -3.5 },
            ClockChange::ServeBias { offset_ns: 0.0 },
            ClockChange::PulsarLoss { lost: true },
        ] {
            let c = ClockFault::new(c).unwrap();
            let body = NodeFault::Clock(c).body().to_string();
            let back: ClockFaultRequest = serde_json::from_str(&body).unwrap();
            assert_eq!(back, c.request());
            assert!(back.to_fault().is_ok(), "{body}");
        }
    }

    #[test]
    fn cli_flags_parse_once_into_a_fault() {
        let f = |step, drift, bias, loss, restore| {
            ClockFault::from_flags(step, drift, bias, loss, restore).map(|c| c.change())
        };
        assert_eq!(
            f(Some("-500us"), None, None, false, false),
            Ok(ClockChange::Step { offset_ns: -5e5 })
        );
        assert_eq!(
            f(None, Some(-3.5), None, false, false),
            Ok(ClockChange::Drift { ppb: -3.5 })
        );
        assert_eq!(
            f(None, None, Some("20ms"), false, false),
            Ok(ClockChange::ServeBias { offset_ns: 2e7 })
        );
        assert_eq!(
            f(None, None, None, false, true),
            Ok(ClockChange::PulsarLoss { lost: false })
        );
        let e = f(None, None, Some("5s"), false, false).unwrap_err();
        assert!(
            e.starts_with("--bias 5 s is out of range: at most ±1 s"),
            "{e}"
        );
        let e = f(Some("2d"), None, None, false, false).unwrap_err();
        assert!(e.contains("--step 172800 s is out of range"), "{e}");
        let e = f(None, Some(f64::INFINITY), None, false, false).unwrap_err();
        assert!(e.contains("--drift inf ppb is out of range"), "{e}");
        let e = f(Some("5"), None, None, false, false).unwrap_err();
        assert!(e.starts_with("--step: \"5\" has no unit"), "{e}");
    }

    #[test]
    fn faults_outside_the_agents_limits_are_refused_at_the_edge() {
        let e = ClockFault::new(ClockChange::Step { offset_ns: 2e14 }).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(ClockFault::new(ClockChange::Drift { ppb: f64::NAN }).is_err());
        assert!(ClockFault::new(ClockChange::ServeBias { offset_ns: 2e9 }).is_err());
        assert!(ClockFault::new(ClockChange::Drift { ppb: 50.0 }).is_ok());
        let e = ByzantineFault::from_names(vec!["eat_cake".into()]).unwrap_err();
        assert!(e.contains("known: lie_membership, drop_forwarding"), "{e}");
        assert!(ByzantineFault::from_names(vec![]).unwrap().is_honest());
    }
}
