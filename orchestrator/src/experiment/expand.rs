//! Timeline expansion: a scenario's verbs, against its topology and seed, become a flat,
//! time-ordered list of primitive actions (link down/up/set, crash, restart, load start,
//! unsupported). A pure function: the same scenario, topology and seed always give the same
//! list (churn and flap jitter draw from a ChaCha8 stream seeded by the scenario seed and
//! the step's index), so a run can be replayed and two runs compared.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::fault::ClockChange;
use crate::parse::units;
use crate::topology::Topology;

pub use super::action::Action;
use super::scenario::{Scenario, Selector, Verb};

/// One primitive action at an emulated time.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub at_ns: u64,
    #[serde(flatten)]
    pub action: Action,
    /// Which step it came from (`line 12: churn`).
    pub origin: String,
}

/// Why a scenario does not fit its topology (unknown node or link, empty selection).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ExpandError {
    pub line: usize,
    pub message: String,
}

/// Most primitive actions one step may expand to. A `flap` with a period of nanoseconds or a
/// `churn` at an absurd rate would otherwise expand for hours and fill memory before anything
/// runs; shipped scenarios expand to dozens.
pub const MAX_ACTIONS_PER_STEP: usize = 100_000;

fn too_many(line: usize, verb: &str) -> ExpandError {
    ExpandError {
        line,
        message: format!(
            "this {verb} expands to more than {MAX_ACTIONS_PER_STEP} link or node changes; lengthen its period or lower its rate"
        ),
    }
}

/// Names of the topology's nodes a selector list picks, in topology order.
pub fn select(topo: &Topology, sel: &[Selector]) -> Vec<String> {
    topo.nodes
        .iter()
        .filter(|n| sel.iter().any(|s| s.matches(&n.name)))
        .map(|n| n.name.clone())
        .collect()
}

/// Expand the timeline. Pure: depends only on its arguments.
pub fn expand(sc: &Scenario, topo: &Topology) -> Result<Vec<Planned>, ExpandError> {
    let mut out: Vec<Planned> = Vec::new();
    // Links a partition cut and no heal brought back yet, by link index.
    let mut cut: BTreeSet<usize> = BTreeSet::new();
    let mut rollout_at: Option<(usize, u64)> = None;
    let node = |line: usize, n: &str| -> Result<String, ExpandError> {
        if topo.node_index(n).is_some() {
            Ok(n.to_string())
        } else {
            Err(ExpandError {
                line,
                message: format!("no node {n:?} in topology {}", topo.name),
            })
        }
    };
    let link = |line: usize, a: &str, b: &str| -> Result<(String, String), ExpandError> {
        node(line, a)?;
        node(line, b)?;
        match topo.link_between(a, b) {
            Some(_) => Ok((a.to_string(), b.to_string())),
            None => Err(ExpandError {
                line,
                message: format!("no link between {a} and {b} in topology {}", topo.name),
            }),
        }
    };
    let selected = |line: usize, sel: &[Selector], what: &str| {
        let v = select(topo, sel);
        if v.is_empty() {
            Err(ExpandError {
                line,
                message: format!(
                    "{what} selects no node ({})",
                    sel.iter()
                        .map(|s| s.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        } else {
            Ok(v)
        }
    };
    for (idx, step) in sc.timeline.iter().enumerate() {
        let origin = format!("line {}: {}", step.line, step.verb.name());
        let mut push = |at_ns: u64, action: Action| {
            out.push(Planned {
                at_ns,
                action,
                origin: origin.clone(),
            })
        };
        // One RNG stream per step: adding a step does not reshuffle the others.
        let mut rng =
            ChaCha8Rng::seed_from_u64(sc.seed ^ (idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let line = step.line;
        match &step.verb {
            Verb::Partition { groups } => {
                let mut group_of = vec![usize::MAX; topo.nodes.len()];
                let mut named = Vec::new();
                for (g, sel) in groups.iter().enumerate() {
                    let names = selected(line, sel, "a partition group")?;
                    for n in &names {
                        let i = topo.node_index(n).expect("selected from topology");
                        if group_of[i] != usize::MAX {
                            return Err(ExpandError {
                                line,
                                message: format!("{n} is in two partition groups"),
                            });
                        }
                        group_of[i] = g;
                    }
                    named.push(names);
                }
                push(step.at_ns, Action::Partition { groups: named });
                for (li, l) in topo.links.iter().enumerate() {
                    if group_of[l.a] != group_of[l.b] && cut.insert(li) {
                        push(
                            step.at_ns,
                            Action::LinkDown {
                                a: topo.nodes[l.a].name.clone(),
                                b: topo.nodes[l.b].name.clone(),
                            },
                        );
                    }
                }
            }
            Verb::Heal => {
                push(step.at_ns, Action::Heal);
                for li in std::mem::take(&mut cut) {
                    let l = &topo.links[li];
                    push(
                        step.at_ns,
                        Action::LinkUp {
                            a: topo.nodes[l.a].name.clone(),
                            b: topo.nodes[l.b].name.clone(),
                        },
                    );
                }
            }
            Verb::Flap {
                a,
                b,
                period_ns,
                duty,
                until_ns,
                jitter_ns,
            } => {
                let (a, b) = link(line, a, b)?;
                let mut t = step.at_ns;
                let down_ns = ((1.0 - duty) * *period_ns as f64).round() as u64;
                let periods = until_ns.saturating_sub(t).div_ceil(*period_ns);
                if down_ns > 0 && periods.saturating_mul(2) > MAX_ACTIONS_PER_STEP as u64 {
                    return Err(too_many(line, "flap"));
                }
                while t < *until_ns && down_ns > 0 {
                    let shift = if *jitter_ns > 0 {
                        rng.gen_range(0..=*jitter_ns)
                    } else {
                        0
                    };
                    let down_at = (t + shift).min(*until_ns);
                    let up_at = (down_at + down_ns).min(*until_ns);
                    if down_at >= *until_ns {
                        break;
                    }
                    push(
                        down_at,
                        Action::LinkDown {
                            a: a.clone(),
                            b: b.clone(),
                        },
                    );
                    push(
                        up_at,
                        Action::LinkUp {
                            a: a.clone(),
                            b: b.clone(),
                        },
                    );
                    t += period_ns;
                }
            }
            Verb::Churn {
                nodes,
                annual_failure,
                year_ns,
                until_ns,
                replace_after_ns,
            } => {
                // Each node fails as a Poisson process with λ = −ln(1 − p) per year (so
                // P(fail within a year) = p), and is replaced `replace_after` later, after
                // which it is at risk again.
                let lambda_per_ns = -(1.0 - annual_failure).ln() / *year_ns as f64;
                let mut made = 0;
                for n in selected(line, nodes, "churn")? {
                    let mut t = step.at_ns as f64;
                    loop {
                        let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                        t += -u.ln() / lambda_per_ns;
                        if t >= *until_ns as f64 {
                            break;
                        }
                        made += 2;
                        if made > MAX_ACTIONS_PER_STEP {
                            return Err(too_many(line, "churn"));
                        }
                        let at = t as u64;
                        push(at, Action::Crash { node: n.clone() });
                        let back = at.saturating_add(*replace_after_ns);
                        push(back, Action::Restart { node: n.clone() });
                        t = back as f64;
                    }
                }
            }
            Verb::Load { nodes, load } => {
                let names = selected(line, nodes, "load")?;
                push(
                    step.at_ns,
                    Action::LoadStart {
                        nodes: names,
                        load: load.clone(),
                    },
                )
            }
            Verb::Objects { nodes, objects } => {
                let names = selected(line, nodes, "objects")?;
                let Some(store) = &topo.store else {
                    return Err(ExpandError {
                        line,
                        message:
                            "objects needs the object store: the topology has no `store:` section"
                                .into(),
                    });
                };
                // The agent refuses a stripe whose shard frame exceeds one overlay datagram;
                // say so here, before a run.
                let probe = vec![0u8; objects.size_bytes as usize];
                if let Err(e) = lightcone_core::store::machine::frame_check(&probe, &store.class) {
                    return Err(ExpandError {
                        line,
                        message: format!("objects of {} B: {e}", objects.size_bytes),
                    });
                }
                push(
                    step.at_ns,
                    Action::ObjectsStart {
                        nodes: names,
                        objects: objects.clone(),
                    },
                )
            }
            Verb::Many { crash, nodes } => {
                for n in selected(
                    line,
                    std::slice::from_ref(nodes),
                    if *crash { "crash" } else { "restart" },
                )? {
                    push(
                        step.at_ns,
                        if *crash {
                            Action::Crash { node: n }
                        } else {
                            Action::Restart { node: n }
                        },
                    );
                }
            }
            Verb::Once(action) => {
                match action {
                    Action::LinkDown { a, b }
                    | Action::LinkUp { a, b }
                    | Action::LinkSet { a, b, .. } => {
                        link(line, a, b)?;
                    }
                    Action::Crash { node: n }
                    | Action::Restart { node: n }
                    | Action::RotateKey { node: n }
                    | Action::Byzantine { node: n, .. } => {
                        node(line, n)?;
                    }
                    Action::StealKey { node: n, thief } => {
                        node(line, n)?;
                        node(line, thief)?;
                    }
                    Action::Revoke { node: n, by } => {
                        node(line, n)?;
                        node(line, by)?;
                        if !topo.trust.is_some_and(|t| t.bft_verdicts) {
                            return Err(ExpandError {
                                line,
                                message: "revoke needs the cells' BFT groups: give the topology `trust: { bft_verdicts: true }`".into(),
                            });
                        }
                        let addr = |x: &str| topo.node_index(x).map(|i| topo.nodes[i].addr);
                        if !matches!((addr(n), addr(by)), (Some(a), Some(b)) if a.same_cell(&b)) {
                            return Err(ExpandError {
                                line,
                                message: format!(
                                    "revoke: {by} is not in {n}'s cell; the cell's BFT group decides, so ask one of its members"
                                ),
                            });
                        }
                    }
                    Action::Task { node: n, .. } => {
                        node(line, n)?;
                        if topo.thermal.is_none() {
                            return Err(ExpandError {
                                line,
                                message: "task needs the thermal subsystem: the topology has no `thermal:` section".into(),
                            });
                        }
                    }
                    Action::Clock { node: n, fault } => {
                        node(line, n)?;
                        let is_authority = topo.node_index(n).is_some_and(|i| {
                            topo.nodes[i].role == lightcone_core::config::Role::Authority
                        });
                        if matches!(fault.change(), ClockChange::ServeBias { .. }) && !is_authority
                        {
                            return Err(ExpandError {
                                line,
                                message: format!(
                                    "stratum0_compromise needs a stratum-0 authority (`role: authority`); {n} is not one"
                                ),
                            });
                        }
                    }
                    Action::CrashHolders {
                        objects, shards, ..
                    } => {
                        let Some(store) = &topo.store else {
                            return Err(ExpandError {
                                line,
                                message: "crash_holders needs the object store: the topology has no `store:` section".into(),
                            });
                        };
                        if *shards > store.class.n {
                            return Err(ExpandError {
                                line,
                                message: format!(
                                    "crash_holders: shards {shards} is more than the class's n = {}",
                                    store.class.n
                                ),
                            });
                        }
                        let prefixes: Vec<&str> = sc
                            .timeline
                            .iter()
                            .filter_map(|s| match &s.verb {
                                Verb::Objects { objects, .. } if s.at_ns < step.at_ns => {
                                    Some(objects.prefix.as_str())
                                }
                                _ => None,
                            })
                            .collect();
                        for o in objects {
                            if !prefixes.iter().any(|p| {
                                o.strip_prefix(p)
                                    .and_then(|r| r.strip_prefix('-'))
                                    .is_some_and(|r| r.parse::<u32>().is_ok())
                            }) {
                                return Err(ExpandError {
                                    line,
                                    message: format!(
                                        "crash_holders: no earlier `objects` step writes {o:?} (names are PREFIX-NNNN; prefixes before this step: {})",
                                        if prefixes.is_empty() { "none".to_string() } else { prefixes.join(", ") }
                                    ),
                                });
                            }
                        }
                    }
                    Action::Rollout { canary, .. } => {
                        let cells: BTreeSet<String> = topo
                            .nodes
                            .iter()
                            .filter(|n| n.role != lightcone_core::config::Role::Authority)
                            .map(|n| {
                                format!("l{}c{}k{}", n.addr.layer, n.addr.cluster, n.addr.cell)
                            })
                            .collect();
                        if !cells.contains(canary) {
                            let some: Vec<&String> = cells.iter().take(4).collect();
                            return Err(ExpandError {
                                line,
                                message: format!(
                                    "rollout: the topology has no cell of tiles `{canary}` (cells are named lLcCkK, e.g. {})",
                                    some.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                                ),
                            });
                        }
                        rollout_at = Some((line, step.at_ns));
                    }
                    Action::Partition { .. }
                    | Action::Heal
                    | Action::LoadStart { .. }
                    | Action::ObjectsStart { .. } => {}
                }
                push(step.at_ns, action.clone())
            }
        }
    }
    // A rollout is the timeline's last step and runs alone: the timeline waits for it,
    // so nothing may be due after it, and no workload may still run (its stages are judged
    // by their own probes; data written before it is read back at the end).
    if let Some((line, at)) = rollout_at {
        let later = out.iter().find(|p| {
            !matches!(p.action, Action::Rollout { .. })
                && (p.at_ns > at
                    || matches!(&p.action, Action::LoadStart { load, .. } if load.until_ns > at)
                    || matches!(&p.action, Action::ObjectsStart { objects, .. } if objects.until_ns > at))
        });
        if let Some(p) = later {
            return Err(ExpandError {
                line,
                message: format!(
                    "rollout must be the timeline's last step, with every workload over by its time ({}): `{}` (from {}) is due or runs later",
                    units::fmt_ns(at),
                    p.action.describe(),
                    p.origin
                ),
            });
        }
        if out
            .iter()
            .filter(|p| matches!(p.action, Action::Rollout { .. }))
            .count()
            > 1
        {
            return Err(ExpandError {
                line,
                message: "one rollout per scenario: a second would start while the first's record is judged".into(),
            });
        }
    }
    // Stable: actions at the same time keep their source order. Nothing is played after
    // the end (a replacement due later simply does not happen within the run).
    out.sort_by_key(|p| p.at_ns);
    out.retain(|p| p.at_ns <= sc.duration_ns);
    Ok(out)
}

/// The expanded timeline as printed before a run: one line per action.
pub fn render(plan: &[Planned]) -> String {
    let mut s = String::new();
    for p in plan {
        s += &format!(
            "  {:>10}  {}  ({})\n",
            units::fmt_ns(p.at_ns),
            p.action.describe(),
            p.origin
        );
    }
    s
}
