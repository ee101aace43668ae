//! Expectations and their evaluation on what a run recorded. Pure: a [`Recording`] in,
//! [`Verdict`]s out, so every definition below is tested on hand-made recordings.
//!
//! Definitions (emulated time unless said otherwise):
//! - `detection_time`: for each crash of node X (each incident), the time until *every*
//!   cell peer of X that was running reports X `dead`, from the peer's own
//!   `since_emulated_s` of the change (mapped through the peer's emulated clock read at each
//!   poll, so the resolution is the poll's round trip, not the poll interval); the worst
//!   crash counts. Only a `dead` entry that began with this crash counts: a peer that still
//!   shows X dead from an earlier crash (it never saw X back after its restart) is left out
//!   of this incident and named in the detail, and an incident no peer could detect is not
//!   measured. A peer that never reports X dead before X restarts or the run ends makes it
//!   infinite.
//! - `converged_after_heal`: after each heal, the pairs the partition before it separated
//!   (on different sides — its groups and the rest of the lab — and connected at the last
//!   poll round before the cut; every pair when links were cut one by one) must have their
//!   routes back (the route to the other's cell, cluster or layer, as
//!   the agent keys it) and, inside one cell, each other `alive`; the time to that, per
//!   level (the smallest scope holding both: cell, cluster, layer, system), the worst level
//!   and heal counting. A cut that no node saw (no route or member lost across it while it
//!   lasted) is not measured: there was nothing to converge. Gateways' summaries are not
//!   checked apart (the routes across levels are built from them).
//! - `locality`: bytes originated by agents whose destination stays inside the source's
//!   scope, over the run, per level (cell, cluster, layer) from
//!   `lightcone_locality_bytes_total`; the lowest level counts. `workload_locality` and
//!   `protocol_locality` are the same over one `class` of traffic: the workload (load data
//!   and its replication: `Data` and `Kv` frames) or the protocol's own (membership,
//!   routing, time, watch); `locality`'s detail shows both.
//! - `causal_anomalies`: anomalies found by `lightcone_core::causal::check` in the load's
//!   history (client sessions are sticky to one node and start afresh after a failed op).
//! - `pulsar_missed_nodes`: nodes whose missed pulsar fixes (`/state` `time`
//!   `pulsar_missed_total`) rose over the run: a pulsar loss as the nodes saw it.
//! - `no_acknowledged_write_lost` (`acknowledged_writes_lost == 0`): causal contexts only. An
//!   acknowledged write (its dot recorded from the agent's answer) is lost iff, at the end,
//!   no running replica of its cell holds its dot or a context covering it (a value written
//!   over it by a replica that had it). Nothing else counts as superseding it — not a later
//!   write to the key (which may simply not have seen it). An acknowledged write without a
//!   recorded dot cannot be checked and counts as lost. "Acknowledged" is the write's
//!   durability level (`lightcone_core::kv::Durability`): `cell` writes were held by f + 1
//!   members when acknowledged, `local` ones only by their writer; the detail says how many
//!   of each there were and were lost.
//! - `timer_lateness_p99`: the 99th percentile of `lightcone_timer_lateness_seconds` over
//!   the run, all agents together; the upper bound of the histogram bucket holding it.
//! - `time_alarmed_nodes`: nodes whose `lightcone_time_alarms_total` (clock-compromise
//!   alarms: the pulsar check disagreed with the optical hierarchy) rose during the run.
//! - `time_coverage`: the lowest `lightcone_time_coverage_ratio` of any agent at the end
//!   (share of its time samples whose true error was within its claimed 3σ).
//! - `quarantine_time`: for each node made byzantine, the time until every running cell
//!   peer of it lists it in its `/state` `quarantine` (the neighbourhood watch's verdict),
//!   at the resolution of the state polls; the worst counts, infinite if a peer never does.
//! - `false_quarantines`: distinct (node, quarantined node) pairs seen in any poll where the
//!   quarantined node was never made byzantine in the run — an honest node quarantined.
//! - `revocation_time` (issue 17): for each `revoke` of node X's key, the time until every
//!   running cell peer of X (not X: its own frames are refused, so it may never hear the
//!   decision) lists X in its `/state` `revoked`, at the resolution of the state polls; the
//!   worst counts, infinite if a peer never does. The detail adds the frames refused for a
//!   revoked key, the evidence the fault had an effect.
//! - `revocation_reach_time` (issue 17): the same, over every running node of the lab but
//!   X: the cell's decision, countersigned by the authorities' threshold key and flooded
//!   (`Payload::Trust`), is what tells the other cells.
//! - `rotation_time` (issue 17): for each `rotate_key` of node X, the time until every
//!   running node of the lab but X lists X in its `/state` `trust.rotated` (it took X's
//!   newly certified key), at the resolution of the state polls; the worst counts,
//!   infinite if a node never does.
//! - `readmission_time` (issue 17): for each node made honest again (`byzantine` with no
//!   behaviour) after some peer had quarantined it, the time until every running cell
//!   peer has re-admitted it (no longer lists it in `quarantine`): the group's re-admission
//!   after the node's quarantine term, at the polls' resolution; the worst counts,
//!   infinite if a peer never does.
//! - `false_revocations`: distinct (node, revoked node) pairs seen in any poll where no
//!   `revoke` named the revoked node.
//! - `revoked_key_accepted`: app data delivered from a sender after the receiver had revoked
//!   its key (each agent's `revoked_delivered`, its highest count), summed: counted at
//!   delivery, apart from the refusal, so a refusal that stops working shows here.
//! - `message_delivery`: the load's messages (one datagram each, to a random node outside
//!   the sender's cell) delivered, over those the agents took: the increase of
//!   `lightcone_datagrams_total{direction="app",outcome="delivered"}` summed over agents,
//!   sampled every second across restarts (a crashed agent's last second of deliveries is
//!   lost with its counters, so this errs low), against the runner's count of accepted sends.
//! - `overhead`: the busiest agent's CPU share of one core (utime + stime from /proc over the
//!   seconds it was observed alive). The spec caps the OS at 1–3 % of each tile's compute; an
//!   agent is one tile, and a tile's compute is taken as one core — the lab packs many tiles
//!   onto few cores, so the host-wide share (also reported) grows with the number of nodes
//!   per core and says nothing about a tile. Agents observed for under 2 s are left out
//!   (their start-up dominates).
//!
//! Node-counting metrics (`time_alarmed_nodes`, `pulsar_missed_nodes`) take a selection,
//! `time_alarmed_nodes(l0c0k0t*) == 12`, so a scenario names who must alarm and who must
//! stay quiet. Where the spec gives a figure ([`Metric::spec`]), every verdict shows it
//! beside the bound, and a bound looser than it is refused unless the expectation says why
//! (`locality >= 99.5% because …`); the report marks it `looser than spec` with that reason.

use std::collections::{BTreeMap, BTreeSet};

use lightcone_core::causal::checker::{self, HistoryOp, OpKind, OpStatus};
use serde::{Deserialize, Serialize};

use crate::parse::units;

pub const SYNTAX: &str =
    "write `METRIC OP VALUE`, e.g. `detection_time < 10s`, `locality > 99.99%`, \
`causal_anomalies == 0`, `overhead <= 3%`, `time_alarmed_nodes(l0c0*) == 12` or \
`no_acknowledged_write_lost`; a bound looser than the spec's adds `because REASON`";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    DetectionTime,
    ConvergedAfterHeal,
    Locality,
    CausalAnomalies,
    AcknowledgedWritesLost,
    TimerLatenessP99,
    Overhead,
    TimeAlarmedNodes,
    TimeCoverage,
    QuarantineTime,
    FalseQuarantines,
    MessageDelivery,
    WorkloadLocality,
    ProtocolLocality,
    PulsarMissedNodes,
    /// Issue 15 (`experiment/thermal.rs`).
    ThermalLoadMax,
    ThrottleLag,
    SlaViolations,
    ClassALatencyExcess,
    DataLatencyExcess,
    /// Issue 16 (`experiment/store.rs`).
    ObjectsLost,
    RepairTime,
    RepairBytes,
    /// Issue 17's key compromise (`steal_key`, `revoke`).
    RevocationTime,
    RevocationReachTime,
    RotationTime,
    ReadmissionTime,
    FalseRevocations,
    RevokedKeyAccepted,
    /// Issue 18's rollout (`rollout`).
    RolloutReach,
    RolloutEscaped,
    RolloutGatesFired,
    TimeToRollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Duration,
    Fraction,
    Count,
}

impl Metric {
    pub const ALL: [Metric; 33] = [
        Metric::DetectionTime,
        Metric::ConvergedAfterHeal,
        Metric::Locality,
        Metric::CausalAnomalies,
        Metric::AcknowledgedWritesLost,
        Metric::TimerLatenessP99,
        Metric::Overhead,
        Metric::TimeAlarmedNodes,
        Metric::TimeCoverage,
        Metric::QuarantineTime,
        Metric::FalseQuarantines,
        Metric::MessageDelivery,
        Metric::WorkloadLocality,
        Metric::ProtocolLocality,
        Metric::PulsarMissedNodes,
        Metric::ThermalLoadMax,
        Metric::ThrottleLag,
        Metric::SlaViolations,
        Metric::ClassALatencyExcess,
        Metric::DataLatencyExcess,
        Metric::ObjectsLost,
        Metric::RepairTime,
        Metric::RepairBytes,
        Metric::RevocationTime,
        Metric::RevocationReachTime,
        Metric::RotationTime,
        Metric::ReadmissionTime,
        Metric::FalseRevocations,
        Metric::RevokedKeyAccepted,
        Metric::RolloutReach,
        Metric::RolloutEscaped,
        Metric::RolloutGatesFired,
        Metric::TimeToRollback,
    ];
    pub fn name(&self) -> &'static str {
        match self {
            Metric::DetectionTime => "detection_time",
            Metric::ConvergedAfterHeal => "converged_after_heal",
            Metric::Locality => "locality",
            Metric::CausalAnomalies => "causal_anomalies",
            Metric::AcknowledgedWritesLost => "acknowledged_writes_lost",
            Metric::TimerLatenessP99 => "timer_lateness_p99",
            Metric::Overhead => "overhead",
            Metric::TimeAlarmedNodes => "time_alarmed_nodes",
            Metric::TimeCoverage => "time_coverage",
            Metric::QuarantineTime => "quarantine_time",
            Metric::FalseQuarantines => "false_quarantines",
            Metric::MessageDelivery => "message_delivery",
            Metric::WorkloadLocality => "workload_locality",
            Metric::ProtocolLocality => "protocol_locality",
            Metric::PulsarMissedNodes => "pulsar_missed_nodes",
            Metric::ThermalLoadMax => "thermal_load_max",
            Metric::ThrottleLag => "throttle_lag",
            Metric::SlaViolations => "sla_violations",
            Metric::ClassALatencyExcess => "class_a_latency_excess",
            Metric::DataLatencyExcess => "data_latency_excess",
            Metric::ObjectsLost => "objects_lost",
            Metric::RepairTime => "repair_time",
            Metric::RepairBytes => "repair_bytes",
            Metric::RevocationTime => "revocation_time",
            Metric::RevocationReachTime => "revocation_reach_time",
            Metric::RotationTime => "rotation_time",
            Metric::ReadmissionTime => "readmission_time",
            Metric::FalseRevocations => "false_revocations",
            Metric::RevokedKeyAccepted => "revoked_key_accepted",
            Metric::RolloutReach => "rollout_reach",
            Metric::RolloutEscaped => "rollout_escaped",
            Metric::RolloutGatesFired => "rollout_gates_fired",
            Metric::TimeToRollback => "time_to_rollback",
        }
    }
    fn kind(&self) -> Kind {
        match self {
            Metric::DetectionTime
            | Metric::ConvergedAfterHeal
            | Metric::TimerLatenessP99
            | Metric::QuarantineTime
            | Metric::ThrottleLag
            | Metric::RepairTime
            | Metric::RevocationTime
            | Metric::RevocationReachTime
            | Metric::RotationTime
            | Metric::ReadmissionTime
            | Metric::TimeToRollback => Kind::Duration,
            Metric::Locality
            | Metric::Overhead
            | Metric::TimeCoverage
            | Metric::MessageDelivery
            | Metric::WorkloadLocality
            | Metric::ProtocolLocality
            | Metric::ThermalLoadMax
            | Metric::ClassALatencyExcess
            | Metric::DataLatencyExcess
            | Metric::RolloutReach => Kind::Fraction,
            Metric::CausalAnomalies
            | Metric::AcknowledgedWritesLost
            | Metric::TimeAlarmedNodes
            | Metric::FalseQuarantines
            | Metric::PulsarMissedNodes
            | Metric::SlaViolations
            | Metric::ObjectsLost
            | Metric::RepairBytes
            | Metric::FalseRevocations
            | Metric::RevokedKeyAccepted
            | Metric::RolloutEscaped
            | Metric::RolloutGatesFired => Kind::Count,
        }
    }
    /// Format a value of this metric (seconds, fraction or count).
    pub fn fmt(&self, v: f64) -> String {
        if v.is_infinite() {
            return "never".into();
        }
        if v.is_nan() {
            return "not measured".into();
        }
        match self.kind() {
            Kind::Duration => units::fmt_ns((v * 1e9).round() as u64),
            Kind::Fraction => format!("{:.4}%", v * 100.0),
            Kind::Count => format!("{v:.0}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "==")]
    Eq,
}

impl Cmp {
    fn as_str(&self) -> &'static str {
        match self {
            Cmp::Le => "<=",
            Cmp::Lt => "<",
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
            Cmp::Eq => "==",
        }
    }
    fn holds(&self, v: f64, bound: f64) -> bool {
        match self {
            Cmp::Le => v <= bound,
            Cmp::Lt => v < bound,
            Cmp::Ge => v >= bound,
            Cmp::Gt => v > bound,
            Cmp::Eq => v == bound,
        }
    }
}

/// The spec's own figure for a metric (`../shared/seed/`), where it gives one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpecFigure {
    pub op: Cmp,
    pub bound: f64,
    /// Where the spec says so, in its words.
    pub source: &'static str,
}

impl Metric {
    /// The spec's figure for this metric, if it states one.
    pub fn spec(&self) -> Option<SpecFigure> {
        let f = |op, bound, source| Some(SpecFigure { op, bound, source });
        match self {
            Metric::DetectionTime => f(
                Cmp::Lt,
                10.0,
                "gossip-based failure detection (<10 seconds local), in a cell of ~10^3 tiles",
            ),
            Metric::Locality | Metric::WorkloadLocality | Metric::ProtocolLocality => f(
                Cmp::Gt,
                0.9999,
                ">99.99% of traffic retained locally within each level",
            ),
            Metric::Overhead => f(
                Cmp::Le,
                0.03,
                "total DCOS overhead at <=1-3% of compute (the upper end)",
            ),
            Metric::TimeCoverage => f(
                Cmp::Ge,
                0.997,
                "time with a stated 3 sigma: |true error| <= 3 sigma for >= 99.7% of samples",
            ),
            Metric::AcknowledgedWritesLost => f(
                Cmp::Eq,
                0.0,
                "design for 5%/year hardware loss: nothing acknowledged is lost",
            ),
            Metric::ObjectsLost => f(
                Cmp::Eq,
                0.0,
                "up to 5% annual hard-failure rate ... erasure coding (e.g., k=20, n=60 for metadata): no object lost",
            ),
            Metric::RepairTime => f(
                Cmp::Le,
                300.0,
                "autonomous self-healing repair within minutes (taken as 5 min from a loss to full redundancy)",
            ),
            Metric::ClassALatencyExcess => f(
                Cmp::Le,
                0.0,
                "safety/control traffic (Class A) always preempt user data: taken as no wait behind data",
            ),
            Metric::ThermalLoadMax => f(
                Cmp::Le,
                0.90,
                "thermal backpressure throttles inner layers when outer layers approach saturation (~90% thermal load)",
            ),
            _ => None,
        }
    }
}

impl SpecFigure {
    /// Whether `op bound` admits values the spec's figure does not (a looser bound).
    /// Bounds in the other direction are not comparable and are not called looser.
    pub fn looser(&self, op: Cmp, bound: f64) -> bool {
        // `99.99%` parses to 0.9999 give or take a rounding step: equal is equal.
        let tol = 1e-9 * self.bound.abs().max(1e-9);
        let bound = if (bound - self.bound).abs() <= tol {
            self.bound
        } else {
            bound
        };
        let upper = |c: Cmp| matches!(c, Cmp::Le | Cmp::Lt);
        let lower = |c: Cmp| matches!(c, Cmp::Ge | Cmp::Gt);
        match (self.op, op) {
            (s, o) if upper(s) && upper(o) => {
                bound > self.bound || (bound == self.bound && s == Cmp::Lt && o == Cmp::Le)
            }
            (s, o) if lower(s) && lower(o) => {
                bound < self.bound || (bound == self.bound && s == Cmp::Gt && o == Cmp::Ge)
            }
            (Cmp::Eq, Cmp::Eq) => bound != self.bound,
            (Cmp::Eq, o) if upper(o) => bound > self.bound,
            _ => false,
        }
    }
    pub fn describe(&self, m: Metric) -> String {
        format!("{} {}", self.op.as_str(), m.fmt(self.bound))
    }
}

/// One expectation: `metric op bound`, the bound in seconds, a fraction or a count;
/// optionally on a selection of nodes and with the reason a bound differs from the spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expectation {
    pub metric: Metric,
    pub op: Cmp,
    pub bound: f64,
    pub text: String,
    /// Node-name patterns (`*` matches any run of characters), for metrics counting nodes.
    pub selector: Option<Vec<String>>,
    /// Why the bound is looser than the spec's figure (`… because REASON`).
    pub reason: Option<String>,
}

impl Expectation {
    /// The spec's figure when this bound is looser than it.
    pub fn looser_than_spec(&self) -> Option<SpecFigure> {
        self.metric.spec().filter(|s| s.looser(self.op, self.bound))
    }
}

/// Whether `name` matches one of `patterns` (`*` matches any run of characters).
pub fn selected(patterns: &[String], name: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
        }
    }
    patterns.iter().any(|p| glob(p.as_bytes(), name.as_bytes()))
}

/// Parse `METRIC[(NODES)] OP VALUE [because REASON]` (or `no_acknowledged_write_lost`).
/// A bound looser than the spec's figure must say why: an unexplained one is refused, so a
/// seed number is never lowered silently.
pub fn parse(text: &str) -> Result<Expectation, String> {
    let full = text.trim();
    let (t, reason) = match full.split_once(" because ") {
        Some((e, r)) if !r.trim().is_empty() => (e.trim(), Some(r.trim().to_string())),
        Some(_) => return Err("`because` must be followed by the reason".into()),
        None => (full, None),
    };
    let (metric, op, bound, selector) = if t == "no_acknowledged_write_lost" {
        (Metric::AcknowledgedWritesLost, Cmp::Eq, 0.0, None)
    } else {
        parse_bound(t)?
    };
    let e = Expectation {
        metric,
        op,
        bound,
        text: full.to_string(),
        selector,
        reason,
    };
    if let Some(spec) = e.looser_than_spec() {
        if e.reason.is_none() {
            return Err(format!(
                "`{t}` is looser than the spec's {} ({}); keep the spec's bound or say why \
                 with `{t} because …`",
                spec.describe(metric),
                spec.source
            ));
        }
    }
    Ok(e)
}

type Bound = (Metric, Cmp, f64, Option<Vec<String>>);

fn parse_bound(t: &str) -> Result<Bound, String> {
    let t = t.replace('≤', "<=").replace('≥', ">=");
    let ops = [
        ("<=", Cmp::Le),
        (">=", Cmp::Ge),
        ("==", Cmp::Eq),
        ("<", Cmp::Lt),
        (">", Cmp::Gt),
    ];
    let Some((i, s, op)) = ops
        .iter()
        .filter_map(|(s, op)| t.find(s).map(|i| (i, *s, *op)))
        .min_by_key(|(i, s, _)| (*i, usize::MAX - s.len()))
    else {
        return Err(format!("`{t}` has no comparison"));
    };
    let head = t[..i].trim();
    let value = t[i + s.len()..].trim();
    let (name, selector) = match head.split_once('(') {
        Some((n, rest)) => {
            let Some(inner) = rest.trim().strip_suffix(')') else {
                return Err(format!(
                    "`{head}`: a node selection is `METRIC(NODE NODE …)`"
                ));
            };
            let pats: Vec<String> = inner
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            if pats.is_empty() {
                return Err(format!("`{head}` selects no node"));
            }
            (n.trim(), Some(pats))
        }
        None => (head, None),
    };
    let metric = Metric::ALL
        .iter()
        .find(|m| m.name() == name)
        .copied()
        .ok_or_else(|| format!("unknown metric `{name}`"))?;
    if selector.is_some()
        && !matches!(
            metric,
            Metric::TimeAlarmedNodes | Metric::PulsarMissedNodes | Metric::ObjectsLost
        )
    {
        return Err(format!(
            "{name} takes no selection (only time_alarmed_nodes and pulsar_missed_nodes take nodes, objects_lost objects)"
        ));
    }
    let bound = match metric.kind() {
        Kind::Duration => units::duration_ns(value).map(|ns| ns as f64 / 1e9)?,
        Kind::Fraction => units::percent(value)?,
        Kind::Count => value
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|_| format!("{name} is a count; `{value}` is not a whole number"))?,
    };
    Ok((metric, op, bound, selector))
}

pub use super::record::{
    FailedInjection, FinalRead, Mark, MemberObs, Recording, Samples, StatePoll,
};

/// The outcome of one expectation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub expectation: String,
    pub expected: String,
    pub measured: String,
    /// Seconds / fraction / count; `null` when not measurable.
    pub value: Option<f64>,
    pub pass: bool,
    /// How it was measured, or why not.
    pub detail: String,
    /// The spec's figure for this metric and where it says so, if it gives one.
    pub spec: Option<String>,
    /// Set when the bound is looser than the spec's figure: the scenario's reason.
    pub looser_than_spec: Option<String>,
}

/// How far before a crash a peer's `dead` entry may seem to begin and still be this
/// crash's, real seconds: mapping a peer's emulated clock to real time through a poll is
/// exact to the poll's round trip, well under this.
const MAPPING_SLACK_S: f64 = 0.25;

fn cell_of(addr: &str) -> &str {
    addr.rsplit_once('.').map(|(c, _)| c).unwrap_or(addr)
}

/// The key under which node `a` (id `a_id`) keeps its route to node `b`, as the agent names
/// it in `/state` (`node:7`, `cell:0.1.2`; [`routing::node_key`](lightcone_core::routing::node_key)).
/// `None` when no route is expected: to itself, between authorities (a cell each, with no
/// route to each other's cells), or for an unknown address.
pub fn route_key(
    addrs: &BTreeMap<String, String>,
    a: &str,
    a_id: u32,
    b: &str,
    b_id: u32,
) -> Option<String> {
    use lightcone_core::config::HierAddr;
    let addr = |n: &str| addrs.get(n).and_then(|x| x.parse::<HierAddr>().ok());
    let (my, xa) = (addr(a)?, addr(b)?);
    let authority = |h: &HierAddr| h.cluster == u16::MAX;
    if authority(&my) && authority(&xa) {
        return None;
    }
    lightcone_core::routing::node_key(&my, a_id, b_id, &xa)
        .map(|d| lightcone_core::view::dest_name(&d))
}

impl Recording {
    fn running_at(&self, node: &str, t: f64) -> bool {
        let mut up = true;
        for m in &self.marks {
            if m.t_real_s > t {
                break;
            }
            if m.node.as_deref() == Some(node) {
                match m.kind.as_str() {
                    "crash" => up = false,
                    "restart" => up = true,
                    _ => {}
                }
            }
        }
        up
    }
    fn peers(&self, node: &str) -> Vec<&str> {
        let Some(a) = self.addrs.get(node) else {
            return Vec::new();
        };
        self.addrs
            .iter()
            .filter(|(n, b)| n.as_str() != node && cell_of(b) == cell_of(a))
            .map(|(n, _)| n.as_str())
            .collect()
    }
    fn ids(&self) -> BTreeMap<&str, u32> {
        self.polls.iter().map(|p| (p.node.as_str(), p.id)).collect()
    }
    /// Peer's emulated clock reading → real seconds since the start.
    fn to_real(&self, p: &StatePoll, emulated_s: f64) -> f64 {
        p.t_real_s - (p.now_emulated_s - emulated_s) / self.time_scale
    }

    /// Whether `peer` saw `x` (id `xid`) not dead at some poll between x's last restart
    /// before `t` and `t` (always true when x never restarted before `t`).
    fn saw_back(&self, peer: &str, xid: u32, x: &str, t: f64) -> bool {
        let Some(restart) = self
            .marks
            .iter()
            .filter(|m| m.kind == "restart" && m.node.as_deref() == Some(x) && m.t_real_s < t)
            .map(|m| m.t_real_s)
            .reduce(f64::max)
        else {
            return true;
        };
        self.polls.iter().any(|q| {
            q.node == peer
                && q.t_real_s > restart
                && q.t_real_s <= t
                && q.members.iter().any(|m| m.id == xid && m.state != "dead")
        })
    }

    /// Worst detection time over all crashes, emulated seconds; with an explanation.
    pub fn detection_time(&self) -> (Option<f64>, String) {
        let ids = self.ids();
        let crashes: Vec<&Mark> = self.marks.iter().filter(|m| m.kind == "crash").collect();
        if crashes.is_empty() {
            return (None, "no crash in the run, nothing to detect".into());
        }
        let mut worst: f64 = 0.0;
        let mut notes = Vec::new();
        for c in crashes {
            let x = c.node.as_deref().unwrap_or("");
            let Some(&xid) = ids.get(x) else {
                return (
                    None,
                    format!("{x} never answered a state poll; its id is unknown"),
                );
            };
            let end = self
                .marks
                .iter()
                .find(|m| {
                    m.t_real_s > c.t_real_s && m.kind == "restart" && m.node.as_deref() == Some(x)
                })
                .map(|m| m.t_real_s)
                .unwrap_or(self.real_s);
            let mut this: f64 = 0.0;
            let mut n_peers = 0;
            let mut stale: Vec<&str> = Vec::new();
            let mut already: Vec<&str> = Vec::new();
            for p in self.peers(x) {
                if !self.running_at(p, c.t_real_s) {
                    continue;
                }
                let polls = self
                    .polls
                    .iter()
                    .filter(|q| q.node == p && q.t_real_s > c.t_real_s && q.t_real_s <= end);
                // Per incident: a peer that still shows x dead from an earlier crash (it
                // never saw x back after its restart) did not detect this one; it is left
                // out, and a dead entry counts only if it began with this crash.
                if !self.saw_back(p, xid, x, c.t_real_s) {
                    stale.push(p);
                    continue;
                }
                let mut found = None;
                let mut held_before = false;
                for q in polls {
                    if let Some(m) = q.members.iter().find(|m| m.id == xid && m.state == "dead") {
                        let since = self.to_real(q, m.since_emulated_s);
                        if since < c.t_real_s - MAPPING_SLACK_S {
                            held_before = true;
                            continue;
                        }
                        found = Some((since.max(c.t_real_s) - c.t_real_s) * self.time_scale);
                        break;
                    }
                }
                // A peer that crashed itself before detecting does not count.
                let peer_died = self.marks.iter().any(|m| {
                    m.kind == "crash"
                        && m.node.as_deref() == Some(p)
                        && m.t_real_s > c.t_real_s
                        && m.t_real_s <= end
                });
                match found {
                    Some(d) => {
                        n_peers += 1;
                        this = this.max(d);
                    }
                    None if peer_died => {}
                    // x was alive, yet this peer had declared it dead before the crash (a
                    // false death, as across a cut) and held it dead through the window: it
                    // had nothing left to detect, and scores neither 0 s nor a miss. Left
                    // out and named, like a stale view.
                    None if held_before => already.push(p),
                    None => {
                        return (
                            Some(f64::INFINITY),
                            format!(
                                "{p} never reported {x} dead (crash at {:.1}s real, window {:.1}s real)",
                                c.t_real_s,
                                end - c.t_real_s
                            ),
                        )
                    }
                }
            }
            if n_peers == 0 {
                return (
                    None,
                    format!(
                        "no running peer of {x} could detect its crash at {:.1}s real (not back in view: {}; dead in view before the crash: {})",
                        c.t_real_s,
                        stale.join(" "),
                        already.join(" ")
                    ),
                );
            }
            notes.push(format!(
                "{x}: {} by {n_peers} peers{}{}",
                Metric::DetectionTime.fmt(this),
                if stale.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} left out: never saw it back after its restart)",
                        stale.join(" ")
                    )
                },
                if already.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} left out: held it dead from before the crash, a false death)",
                        already.join(" ")
                    )
                }
            ));
            worst = worst.max(this);
        }
        (
            Some(worst),
            format!("per crash, all cell peers: {}", notes.join("; ")),
        )
    }

    /// The key under which `a` keeps its route to `b` ([`route_key`]).
    pub fn route_key(&self, ids: &BTreeMap<&str, u32>, a: &str, b: &str) -> Option<String> {
        route_key(&self.addrs, a, *ids.get(a)?, b, *ids.get(b)?)
    }

    /// The level at which two nodes' addresses part: `cell` (same cell), `cluster`, `layer`,
    /// `system` (different layers).
    fn level_between(&self, a: &str, b: &str) -> &'static str {
        let parts = |n: &str| -> Vec<String> {
            self.addrs
                .get(n)
                .map(|x| x.split('.').map(str::to_string).collect())
                .unwrap_or_default()
        };
        let (pa, pb) = (parts(a), parts(b));
        let same = |k: usize| pa.len() > k && pb.len() > k && pa[..=k] == pb[..=k];
        if same(2) {
            "cell"
        } else if same(1) {
            "cluster"
        } else if same(0) {
            "layer"
        } else {
            "system"
        }
    }

    /// The ordered pairs (a, b) of distinct nodes that a partition separated: on different
    /// sides (its groups, and the rest of the lab as one more side).
    fn separated(&self, groups: &[Vec<String>]) -> Vec<(&str, &str)> {
        let side = |n: &str| {
            groups
                .iter()
                .position(|g| g.iter().any(|m| m == n))
                .unwrap_or(usize::MAX)
        };
        let names: Vec<&str> = self.addrs.keys().map(String::as_str).collect();
        let mut out = Vec::new();
        for a in &names {
            for b in &names {
                if a != b && side(a) != side(b) {
                    out.push((*a, *b));
                }
            }
        }
        out
    }

    /// Whether `p` (a poll of `a`) has `b` back: its route to b's scope and, in one cell,
    /// b `alive` in its membership. Returns the real time since when, if so (membership
    /// from the entry's own change time, routes at the poll's resolution).
    fn pair_back(&self, ids: &BTreeMap<&str, u32>, p: &StatePoll, b: &str) -> Option<Option<f64>> {
        if let Some(key) = self.route_key(ids, &p.node, b) {
            if !p.routes.contains(&key) {
                return None;
            }
        }
        if self.level_between(&p.node, b) == "cell" {
            let bid = ids.get(b)?;
            let m = p.members.iter().find(|m| m.id == *bid)?;
            if m.state != "alive" {
                return None;
            }
            return Some(Some(self.to_real(p, m.since_emulated_s).min(p.t_real_s)));
        }
        Some(None)
    }

    /// Worst convergence time over all heals, emulated seconds, per level of the pairs the
    /// partition before the heal separated.
    pub fn converged_after_heal(&self) -> (Option<f64>, String) {
        let heals: Vec<f64> = self
            .marks
            .iter()
            .filter(|m| m.kind == "heal")
            .map(|m| m.t_real_s)
            .collect();
        if heals.is_empty() {
            return (None, "no heal in the run".into());
        }
        let ids = self.ids();
        let mut rounds: BTreeMap<u32, Vec<&StatePoll>> = BTreeMap::new();
        for p in &self.polls {
            rounds.entry(p.round).or_default().push(p);
        }
        let mut worst: f64 = 0.0;
        let mut notes = Vec::new();
        let mut prev_heal = f64::NEG_INFINITY;
        for h in heals {
            // What was cut: the partitions since the previous heal; without one (links
            // taken down one by one), every pair of nodes.
            let cuts: Vec<&Mark> = self
                .marks
                .iter()
                .filter(|m| m.kind == "partition" && m.t_real_s > prev_heal && m.t_real_s < h)
                .collect();
            let cut_at = cuts.first().map(|m| m.t_real_s).unwrap_or(prev_heal);
            prev_heal = h;
            let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
            if cuts.is_empty() {
                for a in self.addrs.keys() {
                    for b in self.addrs.keys() {
                        if a != b {
                            pairs.insert((a.as_str(), b.as_str()));
                        }
                    }
                }
            } else {
                for m in &cuts {
                    pairs.extend(self.separated(&m.groups));
                }
            }
            // A cut separates only what was connected: pairs with their route (and cell
            // membership) at the last complete poll round before it. A pair that never had
            // a route (a link nothing had crossed yet) was not cut by it.
            if !cuts.is_empty() {
                let before = rounds
                    .values()
                    .rfind(|polls| polls.iter().all(|p| p.t_real_s < cut_at));
                let by_node: BTreeMap<&str, &StatePoll> = before
                    .map(|polls| polls.iter().map(|p| (p.node.as_str(), *p)).collect())
                    .unwrap_or_default();
                pairs.retain(|(a, b)| {
                    by_node
                        .get(a)
                        .is_some_and(|p| self.pair_back(&ids, p, b).is_some())
                });
                if pairs.is_empty() {
                    return (
                        None,
                        format!(
                            "the partition at {cut_at:.1}s real separated no pair that was connected before it (no route across it had formed yet)"
                        ),
                    );
                }
            }
            let (mut seen_cut, mut any_checked) = (cuts.is_empty(), false);
            // Per pair: real time since when it has been back (None: not back).
            let mut back: BTreeMap<(&str, &str), f64> = BTreeMap::new();
            let mut done: BTreeMap<&'static str, f64> = BTreeMap::new();
            let levels: BTreeSet<&'static str> = pairs
                .iter()
                .map(|(a, b)| self.level_between(a, b))
                .collect();
            for polls in rounds.values() {
                let Some(t_round) = polls.iter().map(|p| p.t_real_s).reduce(f64::max) else {
                    continue;
                };
                let before_heal = polls.iter().all(|p| p.t_real_s < h);
                let during_cut = before_heal && polls.iter().all(|p| p.t_real_s > cut_at);
                if !before_heal && polls.iter().any(|p| p.t_real_s < h) {
                    continue;
                }
                let by_node: BTreeMap<&str, &StatePoll> =
                    polls.iter().map(|p| (p.node.as_str(), *p)).collect();
                let mut complete: BTreeMap<&'static str, bool> =
                    levels.iter().map(|l| (*l, true)).collect();
                for (a, b) in &pairs {
                    if !self.running_at(a, t_round) || !self.running_at(b, t_round) {
                        continue;
                    }
                    let level = self.level_between(a, b);
                    let Some(p) = by_node.get(a) else {
                        complete.insert(level, false);
                        continue;
                    };
                    let ok = self.pair_back(&ids, p, b);
                    if during_cut && ok.is_none() {
                        seen_cut = true;
                    }
                    if before_heal {
                        continue;
                    }
                    any_checked = true;
                    match ok {
                        Some(since) => {
                            let t = since.unwrap_or(p.t_real_s).max(h);
                            back.entry((a, b)).or_insert(t);
                        }
                        None => {
                            back.remove(&(*a, *b));
                            complete.insert(level, false);
                        }
                    }
                }
                if before_heal {
                    continue;
                }
                for (level, ok) in complete {
                    if ok && !done.contains_key(level) {
                        let t = pairs
                            .iter()
                            .filter(|(a, b)| self.level_between(a, b) == level)
                            .filter_map(|k| back.get(k))
                            .copied()
                            .fold(h, f64::max);
                        done.insert(level, (t - h) * self.time_scale);
                    }
                }
                if done.len() == levels.len() {
                    break;
                }
            }
            if !seen_cut {
                return (
                    None,
                    format!(
                        "the partition before the heal at {h:.1}s real was never seen: no node lost a route or a member across it, so there was nothing to converge"
                    ),
                );
            }
            if !any_checked {
                return (
                    None,
                    format!("no state poll after the heal at {h:.1}s real"),
                );
            }
            let missing: Vec<&str> = levels
                .iter()
                .filter(|l| !done.contains_key(*l))
                .copied()
                .collect();
            if !missing.is_empty() {
                return (
                    Some(f64::INFINITY),
                    format!(
                        "after the heal at {h:.1}s real, pairs the cut separated never all had their routes and cell membership back at level {}",
                        missing.join(", ")
                    ),
                );
            }
            let this = done.values().copied().fold(0.0, f64::max);
            worst = worst.max(this);
            notes.push(format!(
                "heal at {h:.1}s real, {} separated pairs: {}",
                pairs.len(),
                done.iter()
                    .map(|(l, d)| format!("{l} {}", Metric::ConvergedAfterHeal.fmt(*d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        (
            Some(worst),
            format!(
                "{} (routes and cell membership; state polls' resolution for routes)",
                notes.join("; ")
            ),
        )
    }

    /// Sum of a counter family's increase over the run, per label value of `by`,
    /// treating a decrease (agent restart) as a reset.
    pub(crate) fn increase(&self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        let start: BTreeMap<&BTreeMap<String, String>, f64> = self
            .metrics_start
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l, *v))
            .collect();
        let mut out: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for (n, l, v) in &self.metrics_end {
            if n != name {
                continue;
            }
            let s = start.get(l).copied().unwrap_or(0.0);
            let inc = if *v >= s { v - s } else { *v };
            let k = keys
                .iter()
                .map(|k| l.get(*k).cloned().unwrap_or_default())
                .collect();
            *out.entry(k).or_default() += inc;
        }
        out
    }

    /// Locality over all traffic (`None`), or over one class (`workload`: load data and its
    /// replication; `protocol`: membership, routing, time, watch).
    pub fn locality(&self) -> (Option<f64>, String) {
        self.locality_of(None)
    }

    fn locality_of(&self, class: Option<&str>) -> (Option<f64>, String) {
        let by_class = self.increase(
            "lightcone_locality_bytes_total",
            &["level", "scope", "class"],
        );
        let mut inc: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for (k, v) in by_class {
            if class.is_none_or(|c| k[2] == c) {
                *inc.entry(k[..2].to_vec()).or_default() += v;
            }
        }
        let mut worst: Option<(f64, String)> = None;
        let mut notes = Vec::new();
        for level in ["cell", "cluster", "layer"] {
            let get = |s: &str| {
                inc.get(&vec![level.to_string(), s.to_string()])
                    .copied()
                    .unwrap_or(0.0)
            };
            let (l, r) = (get("local"), get("remote"));
            if l + r <= 0.0 {
                continue;
            }
            let f = l / (l + r);
            notes.push(format!("{level} {:.4}% of {:.0} B", f * 100.0, l + r));
            if worst.as_ref().is_none_or(|(w, _)| f < *w) {
                worst = Some((f, level.to_string()));
            }
        }
        match worst {
            Some((f, level)) => (
                Some(f),
                format!("lowest level {level}; {}", notes.join(", ")),
            ),
            None => (
                None,
                format!(
                    "no {}traffic was counted",
                    class.map(|c| format!("{c} ")).unwrap_or_default()
                ),
            ),
        }
    }

    /// Both classes side by side, for the detail of every locality verdict.
    fn locality_classes(&self) -> String {
        ["workload", "protocol"]
            .iter()
            .map(|c| match self.locality_of(Some(c)) {
                (Some(f), d) => format!("{c}: {:.4}% ({d})", f * 100.0),
                (None, d) => format!("{c}: {d}"),
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }

    pub fn timer_lateness_p99(&self) -> (Option<f64>, String) {
        let inc = self.increase("lightcone_timer_lateness_seconds_bucket", &["le"]);
        let buckets: Vec<(f64, f64)> = inc
            .iter()
            .filter_map(|(k, v)| {
                let le = &k[0];
                let b = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((b, *v))
            })
            .collect();
        if buckets.is_empty() {
            return (None, "no timer lateness histogram".into());
        }
        let Some((p, total)) = crate::fidelity::p99_of(&buckets) else {
            return (None, "no timer fired during the run".into());
        };
        (
            Some(p),
            format!(
                "{total:.0} timer firings; p99 at or below the {} bucket",
                Metric::TimerLatenessP99.fmt(p)
            ),
        )
    }

    fn byzantine_marks(&self) -> impl Iterator<Item = &Mark> {
        self.marks.iter().filter(|m| m.kind == "byzantine")
    }

    pub fn quarantine_time(&self) -> (Option<f64>, String) {
        let marks: Vec<&Mark> = self.byzantine_marks().collect();
        if marks.is_empty() {
            return (None, "no node was made byzantine in the run".into());
        }
        self.until_every_peer_lists(&marks, Metric::QuarantineTime, "", "quarantined", |q| {
            &q.quarantine
        })
    }

    /// For each mark naming node x: the time until every cell peer of x running at the
    /// mark lists x in `list` of its poll, in one poll round after the mark (at the polls'
    /// resolution); the worst mark counts, infinite (saying who did not) if a round never
    /// came. `whose` and `done` word the notes: "{x}{whose}: {done} by all N cell peers".
    fn until_every_peer_lists(
        &self,
        marks: &[&Mark],
        metric: Metric,
        whose: &str,
        done: &str,
        list: impl Fn(&StatePoll) -> &[u32],
    ) -> (Option<f64>, String) {
        self.until_all_list(marks, metric, whose, done, false, list)
    }

    /// [`Self::until_every_peer_lists`] over every node of the lab (`lab_wide`) or the
    /// marked node's cell peers.
    fn until_all_list(
        &self,
        marks: &[&Mark],
        metric: Metric,
        whose: &str,
        done: &str,
        lab_wide: bool,
        list: impl Fn(&StatePoll) -> &[u32],
    ) -> (Option<f64>, String) {
        self.until_all(marks, metric, whose, done, lab_wide, |q, x| {
            list(q).contains(&x)
        })
    }

    /// [`Self::until_all_list`] with any per-poll test of the marked node's id.
    fn until_all(
        &self,
        marks: &[&Mark],
        metric: Metric,
        whose: &str,
        done: &str,
        lab_wide: bool,
        holds: impl Fn(&StatePoll, u32) -> bool,
    ) -> (Option<f64>, String) {
        let who = if lab_wide {
            "nodes of the lab"
        } else {
            "cell peers"
        };
        let ids = self.ids();
        let mut worst: f64 = 0.0;
        let mut notes = Vec::new();
        for m in marks {
            let x = m.node.as_deref().unwrap_or("");
            let Some(&xid) = ids.get(x) else {
                return (
                    None,
                    format!("{x} never answered a state poll; its id is unknown"),
                );
            };
            let peers: Vec<&str> = if lab_wide {
                // The nodes the recording polled: every node in a lab; in a twin of more
                // than 100 nodes its sample (the named nodes' cells and the first node of
                // every other cell), said in the detail.
                self.addrs
                    .keys()
                    .map(String::as_str)
                    .filter(|n| *n != x && ids.contains_key(n))
                    .collect()
            } else {
                self.peers(x)
            };
            let peers: Vec<&str> = peers
                .into_iter()
                .filter(|p| self.running_at(p, m.t_real_s))
                .collect();
            let mut rounds: BTreeMap<u32, Vec<&StatePoll>> = BTreeMap::new();
            for q in self.polls.iter().filter(|q| q.t_real_s > m.t_real_s) {
                if peers.contains(&q.node.as_str()) {
                    rounds.entry(q.round).or_default().push(q);
                }
            }
            let lists = |q: &StatePoll| holds(q, xid);
            let first = rounds
                .values()
                .find(|polls| polls.len() == peers.len() && polls.iter().all(|q| lists(q)));
            let Some(polls) = first else {
                let last = rounds.values().next_back();
                let missing: Vec<&str> = peers
                    .iter()
                    .copied()
                    .filter(|p| {
                        !last.is_some_and(|polls| polls.iter().any(|q| q.node == *p && lists(q)))
                    })
                    .collect();
                return (
                    Some(f64::INFINITY),
                    format!(
                        "{x}{whose} was never {done} by all its {who}; at the last poll not by: {}",
                        missing.join(" ")
                    ),
                );
            };
            let t = polls.iter().map(|q| q.t_real_s).fold(0.0, f64::max);
            let d = (t - m.t_real_s) * self.time_scale;
            worst = worst.max(d);
            let of = if lab_wide && peers.len() + 1 < self.addrs.len() {
                format!(" (the {} polled of {})", peers.len(), self.addrs.len() - 1)
            } else {
                String::new()
            };
            notes.push(format!(
                "{x}{whose}: {done} by all {} {who}{of} within {}",
                peers.len(),
                metric.fmt(d)
            ));
        }
        (
            Some(worst),
            format!("{} (state polls' resolution)", notes.join("; ")),
        )
    }

    /// For each node made honest again after its cell quarantined it: the time until every
    /// running cell peer has re-admitted it (no longer lists it in `quarantine`).
    pub fn readmission_time(&self) -> (Option<f64>, String) {
        let ids = self.ids();
        let marks: Vec<&Mark> = self
            .marks
            .iter()
            .filter(|m| m.kind == "honest")
            .filter(|m| {
                // Quarantined by some peer before it was made honest: something to undo.
                let x = m.node.as_deref().and_then(|x| ids.get(x)).copied();
                x.is_some_and(|x| {
                    self.polls
                        .iter()
                        .any(|q| q.t_real_s <= m.t_real_s && q.quarantine.contains(&x))
                })
            })
            .collect();
        if marks.is_empty() {
            return (
                None,
                "no quarantined node was made honest again in the run".into(),
            );
        }
        self.until_all(
            &marks,
            Metric::ReadmissionTime,
            "",
            "re-admitted",
            false,
            |q, x| !q.quarantine.contains(&x),
        )
    }

    pub fn false_quarantines(&self) -> (Option<f64>, String) {
        let marks: Vec<&Mark> = self.byzantine_marks().collect();
        self.unasked_pairs(
            &marks,
            |q| &q.quarantine,
            |n, x| format!("{n} quarantined {x}"),
            "no honest node quarantined",
        )
    }

    /// Distinct (node, listed node) pairs of any poll's `list` whose listed node no mark
    /// named: the count, and the first 8 worded by `pair` (or `none`).
    fn unasked_pairs(
        &self,
        marks: &[&Mark],
        list: impl Fn(&StatePoll) -> &[u32],
        pair: impl Fn(&str, &str) -> String,
        none: &str,
    ) -> (Option<f64>, String) {
        if self.polls.is_empty() {
            return (None, "no state poll answered".into());
        }
        let ids = self.ids();
        let asked: BTreeSet<u32> = marks
            .iter()
            .filter_map(|m| m.node.as_deref().and_then(|n| ids.get(n)).copied())
            .collect();
        let names: BTreeMap<u32, &str> = ids.iter().map(|(n, i)| (*i, *n)).collect();
        let pairs: BTreeSet<(&str, u32)> = self
            .polls
            .iter()
            .flat_map(|q| list(q).iter().map(move |x| (q.node.as_str(), *x)))
            .filter(|(_, x)| !asked.contains(x))
            .collect();
        let shown: Vec<String> = pairs
            .iter()
            .take(8)
            .map(|(n, x)| pair(n, names.get(x).copied().unwrap_or("?")))
            .collect();
        (
            Some(pairs.len() as f64),
            if pairs.is_empty() {
                format!("{none} in {} state polls", self.polls.len())
            } else {
                shown.join("; ")
            },
        )
    }

    fn revoke_marks(&self) -> impl Iterator<Item = &Mark> {
        self.marks_of("revoke")
    }

    fn marks_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Mark> {
        self.marks.iter().filter(move |m| m.kind == kind)
    }

    pub fn revocation_time(&self) -> (Option<f64>, String) {
        let marks: Vec<&Mark> = self.revoke_marks().collect();
        if marks.is_empty() {
            return (None, "no key revocation was asked for in the run".into());
        }
        // The node's running cell peers, not the node: its own frames are refused
        // everywhere else, so it may well never hear the decision.
        let (v, detail) =
            self.until_every_peer_lists(&marks, Metric::RevocationTime, "'s key", "revoked", |q| {
                &q.keys.revoked
            });
        // Evidence the revocation did something: frames refused for a revoked key.
        let refused: u64 = self.last_polls().map(|q| q.keys.refused).sum();
        (
            v,
            format!("{detail}; {refused} frames refused for a revoked key"),
        )
    }

    pub fn revocation_reach_time(&self) -> (Option<f64>, String) {
        let marks: Vec<&Mark> = self.revoke_marks().collect();
        if marks.is_empty() {
            return (None, "no key revocation was asked for in the run".into());
        }
        self.until_all_list(
            &marks,
            Metric::RevocationReachTime,
            "'s key",
            "revoked",
            true,
            |q| &q.keys.revoked,
        )
    }

    pub fn rotation_time(&self) -> (Option<f64>, String) {
        let marks: Vec<&Mark> = self.marks_of("rotate_key").collect();
        if marks.is_empty() {
            return (None, "no key rotation was asked for in the run".into());
        }
        self.until_all_list(
            &marks,
            Metric::RotationTime,
            "'s new key",
            "taken",
            true,
            |q| &q.keys.rotated,
        )
    }

    /// Each node's last poll (counters only grow while an agent runs).
    fn last_polls(&self) -> impl Iterator<Item = &StatePoll> {
        let mut last: BTreeMap<&str, &StatePoll> = BTreeMap::new();
        for q in &self.polls {
            last.insert(q.node.as_str(), q);
        }
        last.into_values()
    }

    pub fn false_revocations(&self) -> (Option<f64>, String) {
        let marks: Vec<&Mark> = self.revoke_marks().collect();
        self.unasked_pairs(
            &marks,
            |q| &q.keys.revoked,
            |n, x| format!("{n} revoked {x}'s key"),
            "no key revoked but those asked for,",
        )
    }

    pub fn revoked_key_accepted(&self) -> (Option<f64>, String) {
        if self.polls.is_empty() {
            return (None, "no state poll answered".into());
        }
        // Per node the highest count seen (a restarted agent starts again from zero).
        let mut most: BTreeMap<&str, u64> = BTreeMap::new();
        for q in &self.polls {
            let e = most.entry(q.node.as_str()).or_default();
            *e = (*e).max(q.keys.revoked_delivered);
        }
        let total: u64 = most.values().sum();
        let who: Vec<String> = most
            .iter()
            .filter(|(_, n)| **n > 0)
            .take(8)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        (
            Some(total as f64),
            if who.is_empty() {
                format!(
                    "no node delivered data from a node whose key it had revoked ({} state polls)",
                    self.polls.len()
                )
            } else {
                format!(
                    "delivered after revoking the sender's key: {}",
                    who.join(", ")
                )
            },
        )
    }

    pub fn message_delivery(&self) -> (Option<f64>, String) {
        if self.messages_sent == 0 {
            return (
                None,
                format!(
                    "the load sent no message ({} refused); give it `messages: P%`",
                    self.messages_refused
                ),
            );
        }
        let delivered = match self.messages_delivered {
            Some(d) => d as f64,
            None => self
                .increase("lightcone_datagrams_total", &["direction", "outcome"])
                .get(&vec!["app".to_string(), "delivered".to_string()])
                .copied()
                .unwrap_or(0.0),
        };
        let sent = self.messages_sent as f64;
        (
            Some((delivered / sent).min(1.0)),
            format!(
                "{delivered:.0} of {} messages delivered ({} more refused by agents or unreachable)",
                self.messages_sent, self.messages_refused
            ),
        )
    }

    pub fn time_alarmed_nodes(&self, sel: Option<&[String]>) -> (Option<f64>, String) {
        let mut inc = self.increase("lightcone_time_alarms_total", &["node"]);
        if inc.is_empty() {
            return (None, "no agent exports lightcone_time_alarms_total".into());
        }
        if let Some(sel) = sel {
            inc.retain(|k, _| selected(sel, &k[0]));
            if inc.is_empty() {
                return (None, format!("no clocked node matches {}", sel.join(" ")));
            }
        }
        let alarmed: Vec<&str> = inc
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, _)| k[0].as_str())
            .collect();
        (
            Some(alarmed.len() as f64),
            format!(
                "{} of {} clocked nodes alarmed: {}",
                alarmed.len(),
                inc.len(),
                if alarmed.is_empty() {
                    "none".to_string()
                } else {
                    alarmed.join(" ")
                }
            ),
        )
    }

    /// Nodes (of the selection) whose missed pulsar fixes rose between their first and
    /// last state poll: the loss of their pulsars, as the nodes themselves saw it.
    pub fn pulsar_missed_nodes(&self, sel: Option<&[String]>) -> (Option<f64>, String) {
        let mut span: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for p in &self.polls {
            if sel.is_some_and(|s| !selected(s, &p.node)) {
                continue;
            }
            if let Some(m) = p.pulsar_missed {
                let e = span.entry(p.node.as_str()).or_insert((m, m));
                e.0 = e.0.min(m);
                e.1 = e.1.max(m);
            }
        }
        if span.is_empty() {
            return (None, "no polled node reports pulsar fixes".into());
        }
        let missed: Vec<String> = span
            .iter()
            .filter(|(_, (a, b))| b > a)
            .map(|(n, (a, b))| format!("{n} ({} missed)", b - a))
            .collect();
        (
            Some(missed.len() as f64),
            format!(
                "{} of {} clocked nodes missed pulsar fixes: {}",
                missed.len(),
                span.len(),
                if missed.is_empty() {
                    "none".to_string()
                } else {
                    missed.join(", ")
                }
            ),
        )
    }

    pub fn time_coverage(&self) -> (Option<f64>, String) {
        let worst = self
            .metrics_end
            .iter()
            .filter(|(n, _, v)| n == "lightcone_time_coverage_ratio" && v.is_finite())
            .map(|(_, l, v)| (*v, l.get("node").cloned().unwrap_or_default()))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        match worst {
            Some((v, node)) => (Some(v), format!("lowest at {node}")),
            None => (
                None,
                "no agent exports lightcone_time_coverage_ratio".into(),
            ),
        }
    }

    pub fn causal_anomalies(&self) -> (Option<f64>, String) {
        if self.history.is_empty() {
            return (None, "no load history recorded".into());
        }
        match checker::check(&self.history) {
            Ok(r) => {
                let n = r.anomalies.len() as u64 + r.unlisted;
                let kinds: Vec<String> = r
                    .counts()
                    .iter()
                    .map(|(k, v)| format!("{k:?}×{v}"))
                    .collect();
                // The first few, explained, so a failed run says what went wrong.
                let first: Vec<String> = r
                    .anomalies
                    .iter()
                    .take(3)
                    .map(|a| format!("{:?}: {}", a.kind, a.explanation))
                    .collect();
                (
                    Some(n as f64),
                    format!(
                        "{} ops, {} reads checked{}{}{}",
                        r.ops_checked,
                        r.reads_checked,
                        if r.misses_excused > 0 {
                            format!(
                                "; {} misses not judged (the read returned a write whose \
                                 agent died before answering: its context is unknown)",
                                r.misses_excused
                            )
                        } else {
                            String::new()
                        },
                        if kinds.is_empty() {
                            String::new()
                        } else {
                            format!("; {}", kinds.join(", "))
                        },
                        if first.is_empty() {
                            String::new()
                        } else {
                            format!("; first: {}", first.join(" | "))
                        }
                    ),
                )
            }
            Err(e) => (None, format!("history not checkable: {e}")),
        }
    }

    pub fn acknowledged_writes_lost(&self) -> (Option<f64>, String) {
        let writes: Vec<&HistoryOp> = self
            .history
            .iter()
            .filter(|o| o.status == OpStatus::Ok && matches!(o.op, OpKind::Write { .. }))
            .collect();
        if writes.is_empty() {
            return (None, "no acknowledged write".into());
        }
        let value_of = |o: &HistoryOp| match &o.op {
            OpKind::Write { value } => value.clone(),
            OpKind::Read { .. } => String::new(),
        };
        let is_local = |o: &HistoryOp| self.local_writes.contains(&(o.key.clone(), value_of(o)));
        let (mut lost, mut lost_local, mut undotted) = (Vec::new(), 0usize, 0usize);
        for w in &writes {
            // A dot held or covered by some running replica's context: kept. Nothing else.
            let kept = match w.dot {
                Some(d) => self
                    .final_reads
                    .iter()
                    .any(|r| r.key == w.key && r.covers(d)),
                None => {
                    undotted += 1;
                    false
                }
            };
            if !kept {
                lost_local += usize::from(is_local(w));
                lost.push(format!(
                    "{}={}{}",
                    w.key,
                    value_of(w),
                    if w.dot.is_none() {
                        " (no dot recorded)"
                    } else {
                        ""
                    }
                ));
            }
        }
        let local = writes.iter().filter(|w| is_local(w)).count();
        let detail = format!(
            "{} acknowledged writes ({} at durability cell, {} local), {} final reads; a write is kept iff a running replica holds its dot or a context covering it{}{}",
            writes.len(),
            writes.len() - local,
            local,
            self.final_reads.len(),
            if undotted > 0 {
                format!("; {undotted} acknowledged without a recorded dot (uncheckable, counted lost)")
            } else {
                String::new()
            },
            if lost.is_empty() {
                String::new()
            } else {
                format!(
                    "; lost {} ({} cell, {} local): {}",
                    lost.len(),
                    lost.len() - lost_local,
                    lost_local,
                    lost.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                )
            }
        );
        (Some(lost.len() as f64), detail)
    }

    pub fn overhead(&self) -> (Option<f64>, String) {
        let shares: Vec<(&str, f64)> = self
            .agent_cpu
            .iter()
            .filter(|(_, _, alive)| *alive >= 2.0)
            .map(|(n, cpu, alive)| (n.as_str(), cpu / alive))
            .collect();
        let Some(&(busiest, max)) = shares.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
            return (None, "agent CPU time was not measured".into());
        };
        let mean = shares.iter().map(|s| s.1).sum::<f64>() / shares.len() as f64;
        let host = match self.agent_cpu_s {
            Some(cpu) if self.real_s > 0.0 && self.cores > 0 => format!(
                "; host-wide {:.2} % ({cpu:.2} CPU-s of {} cores × {:.1} s)",
                100.0 * cpu / (self.cores as f64 * self.real_s),
                self.cores,
                self.real_s
            ),
            _ => String::new(),
        };
        (
            Some(max),
            format!(
                "busiest agent {busiest} {:.2} % of one core, mean {:.2} % over {} agents \
                 (utime+stime from /proc/<pid>/stat){host}",
                100.0 * max,
                100.0 * mean,
                shares.len()
            ),
        )
    }

    pub fn measure(&self, m: Metric, sel: Option<&[String]>) -> (Option<f64>, String) {
        match m {
            Metric::DetectionTime => self.detection_time(),
            Metric::ConvergedAfterHeal => self.converged_after_heal(),
            Metric::Locality => {
                let (v, d) = self.locality();
                (v, format!("{d}; {}", self.locality_classes()))
            }
            Metric::WorkloadLocality => self.locality_of(Some("workload")),
            Metric::ProtocolLocality => self.locality_of(Some("protocol")),
            Metric::CausalAnomalies => self.causal_anomalies(),
            Metric::AcknowledgedWritesLost => self.acknowledged_writes_lost(),
            Metric::TimerLatenessP99 => self.timer_lateness_p99(),
            Metric::Overhead => self.overhead(),
            Metric::TimeAlarmedNodes => self.time_alarmed_nodes(sel),
            Metric::PulsarMissedNodes => self.pulsar_missed_nodes(sel),
            Metric::TimeCoverage => self.time_coverage(),
            Metric::QuarantineTime => self.quarantine_time(),
            Metric::FalseQuarantines => self.false_quarantines(),
            Metric::MessageDelivery => self.message_delivery(),
            Metric::ThermalLoadMax => self.thermal_load_max(),
            Metric::ThrottleLag => self.throttle_lag(),
            Metric::SlaViolations => self.sla_violations(),
            Metric::ClassALatencyExcess => self.latency_excess("a"),
            Metric::DataLatencyExcess => self.latency_excess("data"),
            Metric::ObjectsLost => self.objects_lost(sel),
            Metric::RepairTime => self.repair_time(),
            Metric::RepairBytes => self.repair_bytes(),
            Metric::RevocationTime => self.revocation_time(),
            Metric::RotationTime => self.rotation_time(),
            Metric::ReadmissionTime => self.readmission_time(),
            Metric::RevocationReachTime => self.revocation_reach_time(),
            Metric::FalseRevocations => self.false_revocations(),
            Metric::RevokedKeyAccepted => self.revoked_key_accepted(),
            Metric::RolloutReach
            | Metric::RolloutEscaped
            | Metric::RolloutGatesFired
            | Metric::TimeToRollback => self.rollout_metric(m),
        }
    }

    /// Issue 18's rollout metrics, from the run's rollout outcome.
    fn rollout_metric(&self, m: Metric) -> (Option<f64>, String) {
        let Some(r) = &self.rollout else {
            return (None, "no rollout ran in the timeline".into());
        };
        let detail = r.render().trim_end().replace('\n', "; ");
        let v = match m {
            Metric::RolloutReach if r.tiles() > 0 => Some(r.on_release() as f64 / r.tiles() as f64),
            Metric::RolloutEscaped => Some(r.escaped() as f64),
            Metric::RolloutGatesFired => Some(f64::from(u8::from(r.halt.is_some()))),
            Metric::TimeToRollback => r.halt.as_ref().map(|h| h.time_to_rollback_s),
            _ => None,
        };
        let detail = match m {
            Metric::RolloutReach => format!(
                "{} of {} tiles on the release at the end; {detail}",
                r.on_release(),
                r.tiles()
            ),
            Metric::RolloutEscaped => format!(
                "{} tiles outside the canary stage were given the release; {detail}",
                r.escaped()
            ),
            Metric::TimeToRollback if r.halt.is_none() => {
                format!("no gate fired, nothing rolled back; {detail}")
            }
            _ => detail,
        };
        (v, detail)
    }
}

/// Judge every expectation. An expectation that cannot be measured fails: a report never
/// passes on missing data. Every fault of the timeline that was not injected comes first,
/// as a failed line of its own: the run did not test what it says.
pub fn evaluate(expect: &[Expectation], rec: &Recording) -> Vec<Verdict> {
    let failed = rec.failed_injections.iter().map(|f| Verdict {
        expectation: format!("injection failed: {}", f.action),
        expected: "the fault injected".into(),
        measured: "not injected".into(),
        value: None,
        pass: false,
        detail: format!("at {:.1}s real: {}", f.t_real_s, f.error),
        spec: None,
        looser_than_spec: None,
    });
    let judged = expect.iter().map(|e| {
        let (v, detail) = rec.measure(e.metric, e.selector.as_deref());
        let pass = v.is_some_and(|v| e.op.holds(v, e.bound));
        let name = match &e.selector {
            Some(s) => format!("{}({})", e.metric.name(), s.join(" ")),
            None => e.metric.name().to_string(),
        };
        Verdict {
            // The reason stands in `looser_than_spec`, not in every line that names it.
            expectation: e
                .text
                .split_once(" because ")
                .map_or(e.text.as_str(), |(t, _)| t.trim())
                .to_string(),
            expected: format!("{name} {} {}", e.op.as_str(), e.metric.fmt(e.bound)),
            measured: v
                .map(|v| e.metric.fmt(v))
                .unwrap_or_else(|| "not measured".into()),
            value: v.filter(|v| v.is_finite()),
            pass,
            detail,
            spec: e
                .metric
                .spec()
                .map(|s| format!("{} ({})", s.describe(e.metric), s.source)),
            looser_than_spec: e
                .looser_than_spec()
                .map(|_| e.reason.clone().unwrap_or_else(|| "no reason given".into())),
        }
    });
    failed.chain(judged).collect()
}
