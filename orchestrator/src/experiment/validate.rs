//! Checking a scenario without running it: the file, its topology (a file beside it or
//! written inline), its timeline against that topology (every node, link and selection it
//! names, expanded with the run's seed) and its expectations (at least one, each measurable
//! by this timeline on this topology). `lightcone validate` and `lightcone run` both go
//! through here, so a scenario `validate` accepts is one `run` starts, and every refusal
//! carries file:line:column.

use std::path::Path;

use lightcone_core::config::Role;

use crate::parse::yaml::{Node, Value};
use crate::parse::{self, Diagnostics, LoadError};
use crate::topology::{self, Topology};

use super::expand::{self, Action, Planned};
use super::expect::{Cmp, Expectation, Metric};
use super::scenario::{self, Scenario, ScenarioError, TopologySource};
use crate::parse::units::fmt_ns;

/// Keys only a scenario has, and keys only a topology has: how `validate` tells them apart.
const SCENARIO_KEYS: &[&str] = &["topology", "duration", "timeline", "expect"];
const TOPOLOGY_KEYS: &[&str] = &[
    "nodes",
    "links",
    "generate",
    "addressing",
    "defaults",
    "time_scale",
];

/// A scenario that passed every check, ready to run.
#[derive(Debug, Clone)]
pub struct Checked {
    pub scenario: Scenario,
    pub topology: Topology,
    /// The timeline expanded with the scenario's (or the overriding) seed.
    pub plan: Vec<Planned>,
    /// What the file is accepted with but a user should know, rendered with file:line:col
    /// (empty: nothing): an expectation whose observation windows are shorter than its bound
    /// ([`short_windows`]).
    pub warnings: String,
}

/// What a file turned out to be, checked.
#[derive(Debug, Clone)]
pub enum CheckedFile {
    Topology(Box<Topology>),
    Scenario(Box<Checked>),
}

/// Whether a parsed file is a scenario: it has a scenario's keys and none of a topology's.
pub fn is_scenario(root: &Node) -> bool {
    let Value::Map(pairs) = &root.value else {
        return false;
    };
    let has = |keys: &[&str]| {
        pairs
            .iter()
            .any(|(k, _)| k.scalar().is_some_and(|k| keys.contains(&k)))
    };
    has(SCENARIO_KEYS) && !has(TOPOLOGY_KEYS)
}

/// Check a topology or a scenario file, whichever it is (`lightcone validate`).
pub fn check_file(path: &Path) -> Result<CheckedFile, ScenarioError> {
    let (src, root) = parse::read_tree(path)?;
    if is_scenario(&root) {
        check_tree(&root, path, &src, None, topology::Host::Lab)
            .map(|c| CheckedFile::Scenario(Box::new(c)))
    } else {
        topology::from_tree(&root)
            .map(|t| CheckedFile::Topology(Box::new(t)))
            .map_err(|d| LoadError::invalid(d, &path.display().to_string(), &src))
    }
}

/// Check a scenario file (`lightcone run`), with an optional seed override.
pub fn check_scenario(path: &Path, seed: Option<u64>) -> Result<Checked, ScenarioError> {
    check_scenario_for(path, seed, topology::Host::Lab)
}

/// [`check_scenario`] for `host`: `simulate` reads systems past the lab's per-host cap.
pub fn check_scenario_for(
    path: &Path,
    seed: Option<u64>,
    host: topology::Host,
) -> Result<Checked, ScenarioError> {
    let (src, root) = parse::read_tree(path)?;
    check_tree(&root, path, &src, seed, host)
}

/// The value of `key` in a mapping.
fn field<'a>(root: &'a Node, key: &str) -> Option<&'a Node> {
    match &root.value {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn check_tree(
    root: &Node,
    path: &Path,
    src: &str,
    seed: Option<u64>,
    host: topology::Host,
) -> Result<Checked, ScenarioError> {
    let file = path.display().to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |d: Diagnostics| LoadError::invalid(d, &file, src);
    let mut sc = scenario::parse_tree(root, &file, dir).map_err(fail)?;
    if let Some(s) = seed {
        sc.seed = s;
    }
    let topo_node = field(root, "topology").expect("a parsed scenario has a topology");
    let topo = match &sc.topology {
        TopologySource::Inline(_) => topology::from_tree_for(topo_node, host).map_err(fail)?,
        TopologySource::File(p) => match topology::load_for(p, host) {
            Ok(t) => t,
            Err(e @ LoadError::Invalid { .. }) => return Err(e),
            Err(LoadError::Io { path, error }) => {
                let mut d = Diagnostics::default();
                d.error_help(
                    topo_node.pos,
                    format!("cannot read the topology {path}: {error}"),
                    "a relative path is taken from the scenario file's directory",
                );
                return Err(fail(d));
            }
        },
    };
    let plan = match expand::expand(&sc, &topo) {
        Ok(p) => p,
        Err(e) => {
            let pos = sc
                .timeline
                .iter()
                .find(|s| s.line == e.line)
                .map_or(root.pos, |s| s.pos);
            let mut d = Diagnostics::default();
            d.error(pos, e.message);
            return Err(fail(d));
        }
    };
    let (mut d, mut w) = (Diagnostics::default(), Diagnostics::default());
    if let Some(Value::Seq(items)) = field(root, "expect").map(|n| &n.value) {
        // The scenario parsed without errors: one expectation per item, in order.
        for (e, item) in sc.expect.iter().zip(items) {
            if let Some((message, help)) = unmeasurable(e, &plan, &topo) {
                d.error_help(item.pos, message, help);
            } else if let Some((message, help)) = short_windows(e, &plan, sc.duration_ns) {
                w.error_help(item.pos, message, help);
            }
        }
    }
    if !d.is_empty() {
        return Err(fail(d));
    }
    Ok(Checked {
        scenario: sc,
        topology: topo,
        plan,
        warnings: if w.is_empty() {
            String::new()
        } else {
            w.render_warnings(&file, src)
        },
    })
}

/// An upper bound on a time whose incidents are observed for less than the bound: a crash
/// restarted (or the run ending) sooner after it than `detection_time`'s bound, a heal
/// followed by the next partition (or the end) sooner than `converged_after_heal`'s. Such
/// an incident not seen in its window reads as never (FAIL), though the system may have
/// needed no more than the bound: the verdict then says more about the timeline than about
/// the system. Accepted (it can pass), but said.
fn short_windows(e: &Expectation, plan: &[Planned], duration_ns: u64) -> Option<(String, String)> {
    if !matches!(e.op, Cmp::Lt | Cmp::Le) {
        return None;
    }
    let bound_ns = (e.bound * 1e9) as u64;
    let windows: Vec<(String, u64, u64, bool)> = match e.metric {
        Metric::DetectionTime => plan
            .iter()
            .filter_map(|p| match &p.action {
                Action::Crash { node } => {
                    let back = plan.iter().find(|q| {
                        q.at_ns > p.at_ns
                            && matches!(&q.action, Action::Restart { node: n } if n == node)
                    });
                    Some((
                        format!("{node} crashed at {}", fmt_ns(p.at_ns)),
                        p.at_ns,
                        back.map_or(duration_ns, |q| q.at_ns),
                        back.is_some(),
                    ))
                }
                _ => None,
            })
            .collect(),
        Metric::ConvergedAfterHeal => plan
            .iter()
            .filter(|p| matches!(p.action, Action::Heal))
            .map(|p| {
                let cut = plan
                    .iter()
                    .find(|q| q.at_ns > p.at_ns && matches!(q.action, Action::Partition { .. }));
                (
                    format!("the heal at {}", fmt_ns(p.at_ns)),
                    p.at_ns,
                    cut.map_or(duration_ns, |q| q.at_ns),
                    cut.is_some(),
                )
            })
            .collect(),
        _ => return None,
    };
    let short: Vec<&(String, u64, u64, bool)> = windows
        .iter()
        .filter(|(_, from, to, _)| to.saturating_sub(*from) < bound_ns)
        .collect();
    let (what, from, to, cut_short) = short.first()?;
    let ends = match (e.metric, cut_short) {
        (Metric::DetectionTime, true) => "is restarted",
        (Metric::ConvergedAfterHeal, true) => "the next partition begins",
        _ => "the run ends",
    };
    Some((
        format!(
            "`{}`: {} of {} incidents are observed for less than the bound; {what}, and {ends} {} later, at {}",
            e.text.trim(),
            short.len(),
            windows.len(),
            fmt_ns(to - from),
            fmt_ns(*to),
        ),
        "an incident not seen in its window reads as never (FAIL) though the system may need no more than the bound: give each at least the bound (a later restart, heal or end, or a longer `duration:`)".to_string(),
    ))
}

/// Why `e` could not be measured by a run of `plan` on `topo` (and so would fail whatever
/// the system did), with what would make it measurable.
fn unmeasurable(e: &Expectation, plan: &[Planned], topo: &Topology) -> Option<(String, String)> {
    let any = |f: &dyn Fn(&Action) -> bool| plan.iter().any(|p| f(&p.action));
    let load = |f: &dyn Fn(f64, f64) -> bool| {
        any(&|a| {
            matches!(a, Action::LoadStart { load, .. }
                if f(load.write_fraction, load.message_fraction))
        })
    };
    let name = e.text.trim();
    if let (Metric::ObjectsLost, Some(sel)) = (e.metric, &e.selector) {
        let names: Vec<String> = plan
            .iter()
            .filter_map(|p| match &p.action {
                Action::ObjectsStart { objects, .. } => Some(
                    (0..objects.times(p.at_ns).len() as u32)
                        .map(|i| objects.name(i))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        if !names.iter().any(|n| super::expect::selected(sel, n)) {
            return Some((
                format!("`{name}` selects no object the `objects` steps write"),
                "name objects as the steps write them, PREFIX-NNNN (e.g. obj-0003); `*` matches any run of characters".to_string(),
            ));
        }
    } else if let Some(sel) = &e.selector {
        if !topo
            .nodes
            .iter()
            .any(|n| super::expect::selected(sel, &n.name))
        {
            return Some((
                format!("`{name}` selects no node of the topology"),
                "name nodes of this lab; `*` matches any run of characters".to_string(),
            ));
        }
    }
    let (ok, needs, help) = match e.metric {
        Metric::DetectionTime => (
            any(&|a| matches!(a, Action::Crash { .. })),
            "a crash",
            "add a `crash:` step, or a `churn:` that fails a node within the duration with this seed",
        ),
        Metric::ConvergedAfterHeal => (
            any(&|a| matches!(a, Action::Heal)),
            "a heal",
            "add a `partition:` and a later `heal:`",
        ),
        Metric::QuarantineTime => (
            any(&|a| matches!(a, Action::Byzantine { behaviour, .. } if !behaviour.is_honest())),
            "a byzantine node",
            "add a `byzantine:` step with a behaviour",
        ),
        Metric::CausalAnomalies => (
            load(&|_, _| true),
            "a load",
            "add a `load:` step; its history is what is checked",
        ),
        Metric::AcknowledgedWritesLost => (
            load(&|w, m| w > 0.0 && m < 1.0),
            "a load that writes",
            "add a `load:` step with `writes:` above 0%",
        ),
        Metric::MessageDelivery => (
            load(&|_, m| m > 0.0),
            "a load that sends messages",
            "give a `load:` step `messages:` above 0%",
        ),
        Metric::WorkloadLocality => (
            load(&|_, _| true)
                || any(&|a| matches!(a, Action::Task { spec, .. } if spec.traffic_kbps > 0)),
            "a load, or tasks with an input stream",
            "add a `load:` step (its data and replication are the workload), or give a `task:` step `traffic_kbps:`",
        ),
        Metric::TimeAlarmedNodes | Metric::TimeCoverage | Metric::PulsarMissedNodes => (
            topo.nodes.iter().any(|n| n.role == Role::Authority),
            "clocks",
            "agents keep a clock only when the topology has a stratum-0 authority (`role: authority`, or `authorities:` in `generate`)",
        ),
        Metric::ClassALatencyExcess | Metric::DataLatencyExcess => (
            crate::plan::plan(topo)
                .links
                .iter()
                .any(|l| l.model.rate_bps.is_some()),
            "a link with a rate",
            "give links a `rate:` (a link without one never queues, so nothing waits)",
        ),
        Metric::ThermalLoadMax | Metric::ThrottleLag | Metric::SlaViolations => (
            topo.thermal.is_some(),
            "the thermal subsystem",
            "add a `thermal:` section to the topology (see lightcone-topology.schema.json)",
        ),
        Metric::ObjectsLost | Metric::RepairTime => (
            any(&|a| matches!(a, Action::ObjectsStart { .. })),
            "objects written",
            "add an `objects:` step (the topology needs a `store:` section)",
        ),
        Metric::RepairBytes => (
            topo.store.is_some(),
            "the object store",
            "add a `store:` section to the topology",
        ),
        Metric::RevocationTime | Metric::RevocationReachTime | Metric::RevokedKeyAccepted => (
            any(&|a| matches!(a, Action::Revoke { .. })),
            "a key revocation",
            "add a `revoke:` step (the topology needs `trust: { bft_verdicts: true }`)",
        ),
        Metric::ReadmissionTime => (
            any(&|a| matches!(a, Action::Byzantine { behaviour, .. } if behaviour.is_honest())),
            "a byzantine node made honest again",
            "add a `byzantine:` step with `behaviour: []` after the node's conviction",
        ),
        Metric::RotationTime => (
            any(&|a| matches!(a, Action::RotateKey { .. })),
            "a key rotation",
            "add a `rotate_key:` step",
        ),
        Metric::RolloutReach
        | Metric::RolloutEscaped
        | Metric::RolloutGatesFired
        | Metric::TimeToRollback => (
            any(&|a| matches!(a, Action::Rollout { .. })),
            "a rollout",
            "add a `rollout:` step (the timeline's last)",
        ),
        Metric::FalseRevocations => (
            topo.trust.is_some_and(|t| t.bft_verdicts),
            "the cells' BFT groups",
            "give the topology `trust: { bft_verdicts: true }` (without them no key is ever revoked)",
        ),
        Metric::Locality
        | Metric::ProtocolLocality
        | Metric::TimerLatenessP99
        | Metric::Overhead
        | Metric::FalseQuarantines => (true, "", ""),
    };
    (!ok).then(|| {
        (
            format!(
                "`{name}` needs {needs} in the run, and this scenario has none: it could only fail"
            ),
            help.to_string(),
        )
    })
}
