//! Scenario files: a topology, a seed, an emulated duration, a timeline of fault verbs and
//! the expectations a run is judged by. Read like topologies, with the same toolkit
//! ([`crate::parse`]): the marked YAML tree → typed [`Scenario`], every mistake collected
//! with file:line:column in [`Diagnostics`]. Fault verbs become typed payloads
//! ([`crate::fault`]) here, once.

use std::path::{Path, PathBuf};

use crate::fault::{ByzantineFault, ClockChange, ClockFault};
use crate::lab::LinkChange;
use crate::parse::yaml::{Node, Pos, Value};
use crate::parse::{did_you_mean, units, Diagnostics, Fields, LoadError, Reader};

use super::action::Action;
pub use super::action::{Load, ObjectLoad};
use super::expect::{Expectation, Metric};

const TOP_FIELDS: &[&str] = &["name", "topology", "seed", "duration", "timeline", "expect"];

/// Verbs a timeline step may use.
pub const VERBS: &[&str] = &[
    "partition",
    "heal",
    "crash",
    "restart",
    "link_set",
    "link_down",
    "link_up",
    "flap",
    "churn",
    "load",
    "clock_step",
    "clock_drift",
    "stratum0_compromise",
    "pulsar_loss",
    "byzantine",
    "steal_key",
    "rotate_key",
    "revoke",
    "task",
    "objects",
    "crash_holders",
    "rollout",
];

/// Where the lab's topology comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TopologySource {
    /// A file, resolved against the scenario file's directory.
    File(PathBuf),
    /// Written inline; the text is a YAML (flow) rendering of the subtree.
    Inline(String),
}

/// A scenario, resolved.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub topology: TopologySource,
    pub seed: u64,
    /// How long the timeline runs, emulated.
    pub duration_ns: u64,
    pub timeline: Vec<Step>,
    pub expect: Vec<Expectation>,
}

/// One timeline entry.
#[derive(Debug, Clone)]
pub struct Step {
    pub at_ns: u64,
    pub verb: Verb,
    /// Source line, for messages.
    pub line: usize,
    /// Where the step's verb is written, for located messages.
    pub pos: Pos,
}

/// A set of nodes: a name, or a hierarchical name prefix ending in `*` (`l0c1*` is the
/// cluster, `l0c1k2*` the cell, `l1*` the layer), or `*` for every node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selector(pub String);

impl Selector {
    /// Whether `name` is selected. A prefix matches on hierarchy boundaries only: `l1*`
    /// selects `l1c0k0t0` but not `l10c0k0t0`.
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some("") => true,
            Some(p) => {
                name.starts_with(p)
                    && !name[p.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_digit())
            }
            None => self.0 == name,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Verb {
    /// Cut every link between nodes of different groups (nodes in no group form one more).
    Partition { groups: Vec<Vec<Selector>> },
    /// Bring back every link a partition cut.
    Heal,
    /// A verb that is one action, played as written once the topology has its node or
    /// link: `crash`, `restart`, `link_set`, `link_down`, `link_up`, the clock faults
    /// (`clock_step`, `clock_drift`, `stratum0_compromise`, `pulsar_loss`) and `byzantine`.
    /// Never a marker or a load start: those come from their own verbs.
    Once(Action),
    /// Link down for `(1 - duty)` of each `period`, up for `duty`, until `until_ns`
    /// (absolute, emulated). Each period's phase is shifted by up to `jitter_ns` (seeded).
    Flap {
        a: String,
        b: String,
        period_ns: u64,
        duty: f64,
        until_ns: u64,
        jitter_ns: u64,
    },
    /// Independent exponential failures of each selected node at `rate` per emulated year,
    /// where one year lasts `year_ns` of the scenario's emulated time (a compressed year),
    /// each failed node replaced (restarted) `replace_after_ns` later.
    Churn {
        nodes: Vec<Selector>,
        annual_failure: f64,
        year_ns: u64,
        until_ns: u64,
        replace_after_ns: u64,
    },
    /// A workload on the selected nodes (see [`Load`]).
    Load { nodes: Vec<Selector>, load: Load },
    /// Objects written to the store by the selected nodes (see [`ObjectLoad`]).
    Objects {
        nodes: Vec<Selector>,
        objects: ObjectLoad,
    },
    /// `crash` or `restart` of every node a selector picks (`crash: l0c0k1*`: a whole
    /// cell); a plain name is [`Verb::Once`].
    Many { crash: bool, nodes: Selector },
}

impl Verb {
    /// The verb as written in the scenario.
    pub fn name(&self) -> &str {
        match self {
            Verb::Partition { .. } => "partition",
            Verb::Heal => "heal",
            Verb::Once(Action::Clock { fault, .. }) => fault.verb(),
            // `kind` says "honest" for `behaviour: []`; the verb is still `byzantine`.
            Verb::Once(Action::Byzantine { .. }) => "byzantine",
            Verb::Once(a) => a.kind(),
            Verb::Flap { .. } => "flap",
            Verb::Churn { .. } => "churn",
            Verb::Load { .. } => "load",
            Verb::Objects { .. } => "objects",
            Verb::Many { crash: true, .. } => "crash",
            Verb::Many { crash: false, .. } => "restart",
        }
    }
}

/// Why a scenario could not be loaded: the toolkit's [`LoadError`], as for topologies.
pub type ScenarioError = LoadError;

/// Parse a scenario. `file` names it in messages; `dir` resolves `topology:` paths.
pub fn parse_str(src: &str, file: &str, dir: &Path) -> Result<Scenario, ScenarioError> {
    crate::parse::parse_str(src, file, |root| parse_tree(root, file, dir))
}

/// A scenario from its parsed YAML tree. An inline topology is not read here (see
/// [`super::validate`], which reads it from the same tree).
pub fn parse_tree(root: &Node, file: &str, dir: &Path) -> Result<Scenario, Diagnostics> {
    let mut r = Reader::default();
    match r.scenario(root, file, dir) {
        Some(s) if r.d.is_empty() => Ok(s),
        _ => Err(r.d),
    }
}

/// Read and parse a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let src = crate::parse::read_source(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse_str(&src, &path.display().to_string(), dir)
}

/// The scenario's own readers; the generic ones are the toolkit's.
impl Reader {
    /// A clock verb whose fault passes the agent's own checks (else a mistake at `at`).
    fn clock_verb(
        &mut self,
        verb: &str,
        node: String,
        change: ClockChange,
        at: Pos,
    ) -> Option<Verb> {
        match ClockFault::new(change) {
            Ok(fault) => Some(Verb::Once(Action::Clock { node, fault })),
            Err(e) => {
                self.d.error(at, format!("{verb}: {e}"));
                None
            }
        }
    }

    /// `task: {node: N, compute: 10, duration: 600s, class: hot|cold, count: 1,
    /// memory_mib: 0, bandwidth_mbps: 0}`: tasks submitted to one node (issue 15).
    fn task_verb(&mut self, v: &Node) -> Option<Verb> {
        const F: &[&str] = &[
            "node",
            "compute",
            "duration",
            "class",
            "count",
            "memory_mib",
            "bandwidth_mbps",
            "traffic_kbps",
        ];
        let f = self.fields(v, F, "task")?;
        let nn = self.required(&f, "node", v.pos, "task")?;
        let node = self.name(nn, "node")?;
        let c = self.required(&f, "compute", v.pos, "task")?;
        let compute = self.uint(c, "compute", 1_000_000)? as u32;
        if compute == 0 {
            self.d.error(c.pos, "compute must be at least 1 unit");
            return None;
        }
        let d = self.required(&f, "duration", v.pos, "task")?;
        let duration_ns = self.duration(d, "duration")?;
        if !(1_000_000..=30 * 86_400 * 1_000_000_000).contains(&duration_ns) {
            self.d
                .error(d.pos, "duration must be 1ms to 30 days (emulated)");
            return None;
        }
        let cl = self.required(&f, "class", v.pos, "task")?;
        let class = self.choice(cl, "class", &["hot", "cold"], |s| match s {
            "hot" => Some(lightcone_core::heat::task::TaskClassName::Hot),
            "cold" => Some(lightcone_core::heat::task::TaskClassName::Cold),
            _ => None,
        })?;
        let count = match Self::get(&f, "count") {
            Some(n) => match self.uint(n, "count", 1024)? {
                0 => {
                    self.d.error(n.pos, "count must be 1 to 1024");
                    return None;
                }
                k => k as u32,
            },
            None => 1,
        };
        let mib = |r: &mut Reader, k: &str| match Self::get(&f, k) {
            Some(n) => r.uint(n, k, u64::from(u32::MAX)).map(|x| x as u32),
            None => Some(0),
        };
        let memory_mib = mib(self, "memory_mib")?;
        let bandwidth_mbps = mib(self, "bandwidth_mbps")?;
        let traffic_kbps = mib(self, "traffic_kbps")?;
        let max = lightcone_core::heat::task::MAX_TRAFFIC_KBPS;
        if traffic_kbps > max {
            let n = Self::get(&f, "traffic_kbps").expect("read above");
            self.d.error(
                n.pos,
                format!("traffic_kbps must be at most {max} (a task's input stream)"),
            );
            return None;
        }
        Some(Verb::Once(Action::Task {
            node,
            count,
            spec: lightcone_core::heat::task::TaskSpec {
                compute,
                memory_mib,
                bandwidth_mbps,
                duration_ns,
                class,
                traffic_kbps,
            },
        }))
    }

    /// `objects: {nodes: SELECTOR, count: 30, interval: 1s, size: 4KiB, until: 60s,
    /// prefix: obj}`: objects written to the store (issue 16).
    fn objects_verb(&mut self, v: &Node, at_ns: u64) -> Option<Verb> {
        const F: &[&str] = &["nodes", "count", "interval", "size", "until", "prefix"];
        let f = self.fields(v, F, "objects")?;
        let nodes = match Self::get(&f, "nodes") {
            Some(n) => self.selectors(n, "objects nodes")?,
            None => vec![Selector("*".into())],
        };
        let cn = self.required(&f, "count", v.pos, "objects")?;
        let count = match self.uint(cn, "count", u64::from(super::action::MAX_OBJECTS))? {
            0 => {
                self.d.error(
                    cn.pos,
                    format!("count must be 1 to {}", super::action::MAX_OBJECTS),
                );
                return None;
            }
            c => c as u32,
        };
        let inn = self.required(&f, "interval", v.pos, "objects")?;
        let interval_ns = self.duration(inn, "interval")?;
        if interval_ns == 0 {
            self.d.error(inn.pos, "interval must be longer than 0");
            return None;
        }
        let sn = self.required(&f, "size", v.pos, "objects")?;
        let size_bytes = match sn.scalar().map(units::bytes) {
            Some(Ok(b)) if b <= u64::from(super::action::MAX_OBJECT_BYTES) => b as u32,
            Some(Ok(b)) => {
                self.d.error(
                    sn.pos,
                    format!(
                        "size {b} B is over the store's largest object ({} B)",
                        super::action::MAX_OBJECT_BYTES
                    ),
                );
                return None;
            }
            Some(Err(e)) => {
                self.d.error(sn.pos, format!("size: {e}"));
                return None;
            }
            None => {
                self.d.error(
                    sn.pos,
                    format!("size must be a size in bytes, found {}", show(sn)),
                );
                return None;
            }
        };
        let un = self.required(&f, "until", v.pos, "objects")?;
        let until_ns = self.duration(un, "until")?;
        if until_ns <= at_ns {
            self.d.error(
                un.pos,
                format!(
                    "until ({}) must be after the step's at ({})",
                    units::fmt_ns(until_ns),
                    units::fmt_ns(at_ns)
                ),
            );
            return None;
        }
        let prefix = match Self::get(&f, "prefix") {
            Some(p) => {
                let x = self.name(p, "prefix")?;
                if x.is_empty()
                    || x.len() > 32
                    || !x
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    self.d
                        .error(p.pos, "prefix must be 1 to 32 letters, digits, `-` or `_`");
                    return None;
                }
                x
            }
            None => "obj".into(),
        };
        Some(Verb::Objects {
            nodes,
            objects: ObjectLoad {
                prefix,
                count,
                interval_ns,
                size_bytes,
                until_ns,
            },
        })
    }

    fn selectors(&mut self, n: &Node, what: &str) -> Option<Vec<Selector>> {
        match &n.value {
            Value::Seq(items) => {
                let v: Vec<Selector> = items
                    .iter()
                    .filter_map(|i| self.name(i, what).map(Selector))
                    .collect();
                (v.len() == items.len()).then_some(v)
            }
            Value::Scalar { .. } => self.name(n, what).map(|s| vec![Selector(s)]),
            Value::Map(_) => {
                self.d.error_help(
                    n.pos,
                    format!("{what} must be a node name or a list of them"),
                    "write e.g. [l0c0k0t1, l0c0k0t2] or a prefix such as l0c0k0*",
                );
                None
            }
        }
    }

    /// `[a, b]`: the two endpoints of a link.
    fn endpoints(&mut self, n: &Node, what: &str) -> Option<(String, String)> {
        if let Value::Seq(items) = &n.value {
            if let [a, b] = items.as_slice() {
                let a = self.name(a, what)?;
                let b = self.name(b, what)?;
                return Some((a, b));
            }
        }
        self.d.error_help(
            n.pos,
            format!("{what} must name a link by its two endpoints"),
            "write it as [a, b]",
        );
        None
    }

    fn scenario(&mut self, root: &Node, file: &str, dir: &Path) -> Option<Scenario> {
        let f = self.fields(root, TOP_FIELDS, "the scenario")?;
        let name = match Self::get(&f, "name") {
            Some(n) => self.name(n, "name"),
            None => Some(
                Path::new(file)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "scenario".into()),
            ),
        };
        let topology = match self.required(&f, "topology", root.pos, "a scenario") {
            Some(n) => match &n.value {
                Value::Scalar { text, .. } if !n.is_null() => {
                    Some(TopologySource::File(dir.join(text)))
                }
                Value::Map(_) => Some(TopologySource::Inline(flow(n))),
                _ => {
                    self.d.error_help(
                        n.pos,
                        format!("topology must be a file path or a mapping, found {}", n.kind()),
                        "write `topology: ../cell.yaml` (relative to this file) or the topology inline",
                    );
                    None
                }
            },
            None => None,
        };
        let seed = match Self::get(&f, "seed") {
            Some(n) => self.uint(n, "seed", u64::MAX),
            None => Some(0),
        };
        let duration_ns = match self.required(&f, "duration", root.pos, "a scenario") {
            Some(n) => match self.duration(n, "duration") {
                Some(0) => {
                    self.d.error(n.pos, "duration must be longer than 0");
                    None
                }
                v => v,
            },
            None => None,
        };
        let mut timeline = match Self::get(&f, "timeline") {
            Some(t) => self.list(t, "timeline", "a list of steps", Self::step),
            None => Vec::new(),
        };
        if let Some(d) = duration_ns {
            for s in &timeline {
                if s.at_ns > d {
                    self.d.error(
                        Pos {
                            line: s.line,
                            col: 1,
                        },
                        format!(
                            "step at {} is after the end of the scenario (duration {})",
                            units::fmt_ns(s.at_ns),
                            units::fmt_ns(d)
                        ),
                    );
                }
            }
        }
        timeline.sort_by_key(|s| s.at_ns);
        // A rollout's build given as a path is the scenario file's, like its topology.
        for s in &mut timeline {
            if let Verb::Once(Action::Rollout { build, .. }) = &mut s.verb {
                if build.contains('/') && Path::new(build.as_str()).is_relative() {
                    *build = dir.join(build.as_str()).display().to_string();
                }
            }
        }
        let expect = match Self::get(&f, "expect") {
            Some(e) => self.list(e, "expect", "a list", Self::expectation),
            None => Vec::new(),
        };
        let listed = match Self::get(&f, "expect").map(|e| &e.value) {
            Some(Value::Seq(items)) => !items.is_empty(),
            Some(Value::Map(_)) => true, // reported above
            _ => false,
        };
        if !listed {
            // At the empty list, or at the key when it holds nothing (a null's position is
            // where the next line begins), or at the top when there is no key.
            let key = match &root.value {
                Value::Map(pairs) => pairs.iter().find(|(k, _)| k.scalar() == Some("expect")),
                _ => None,
            };
            let at = match key {
                Some((k, v)) if v.is_null() => k.pos,
                Some((_, v)) => v.pos,
                None => root.pos,
            };
            self.d.error_help(
                at,
                "the scenario has no expectations: a run of it would prove nothing",
                format!(
                    "add `expect:` with at least one line, e.g. `- detection_time < 10s`; metrics: {}",
                    Metric::ALL.map(|m| m.name()).join(", ")
                ),
            );
        }
        Some(Scenario {
            name: name?,
            topology: topology?,
            seed: seed?,
            duration_ns: duration_ns?,
            timeline,
            expect,
        })
    }

    fn step(&mut self, n: &Node) -> Option<Step> {
        let Value::Map(pairs) = &n.value else {
            self.d.error_help(
                n.pos,
                format!("a timeline step must be a mapping, found {}", n.kind()),
                "write e.g. `- { at: 10s, crash: l0c0k0t3 }`",
            );
            return None;
        };
        let mut at = None;
        let mut verb: Option<(&str, &Node, Pos)> = None;
        for (k, v) in pairs {
            let key = k.scalar().unwrap_or("");
            if key == "at" {
                at = self.duration(v, "at");
            } else if VERBS.contains(&key) {
                if let Some((first, _, _)) = verb {
                    self.d.error_help(
                        k.pos,
                        format!("a step has one verb; this one has `{first}` and `{key}`"),
                        "split it into two steps at the same time",
                    );
                    return None;
                }
                verb = Some((VERBS[VERBS.iter().position(|x| *x == key)?], v, k.pos));
            } else {
                let help = match did_you_mean(key, VERBS) {
                    Some(s) => format!("did you mean `{s}`? verbs: {}", VERBS.join(", ")),
                    None => format!("verbs: {}", VERBS.join(", ")),
                };
                self.d
                    .error_help(k.pos, format!("unknown verb `{key}`"), help);
                return None;
            }
        }
        let Some((name, v, vpos)) = verb else {
            self.d.error_help(
                n.pos,
                "this step has no verb",
                format!("verbs: {}", VERBS.join(", ")),
            );
            return None;
        };
        let Some(at_ns) = at else {
            if !pairs.iter().any(|(k, _)| k.scalar() == Some("at")) {
                self.d
                    .error(n.pos, "this step has no `at:` (when, in emulated time)");
            }
            return None;
        };
        let verb = self.verb(name, v, vpos, at_ns)?;
        Some(Step {
            at_ns,
            verb,
            line: n.pos.line,
            pos: vpos,
        })
    }

    fn verb(&mut self, name: &str, v: &Node, pos: Pos, at_ns: u64) -> Option<Verb> {
        let until = |r: &mut Reader, f: &Fields<'_>, what: &str| -> Option<u64> {
            let n = r.required(f, "until", v.pos, what)?;
            let u = r.duration(n, "until")?;
            if u <= at_ns {
                r.d.error(
                    n.pos,
                    format!(
                        "until ({}) must be after the step's at ({})",
                        units::fmt_ns(u),
                        units::fmt_ns(at_ns)
                    ),
                );
                return None;
            }
            Some(u)
        };
        match name {
            "partition" => {
                let groups_node = match &v.value {
                    Value::Map(_) => {
                        let f = self.fields(v, &["groups"], "partition")?;
                        self.required(&f, "groups", v.pos, "partition")?
                    }
                    _ => v,
                };
                let Value::Seq(groups) = &groups_node.value else {
                    self.d.error_help(
                        groups_node.pos,
                        "partition needs a list of node groups",
                        "write e.g. `partition: [[l0c0k0t0, l0c0k0t1], [l0c0k0t6]]`; nodes in no group form one more group",
                    );
                    return None;
                };
                let mut out = Vec::new();
                for g in groups {
                    out.push(self.selectors(g, "a partition group")?);
                }
                if out.is_empty() {
                    self.d
                        .error(groups_node.pos, "partition needs at least one group");
                    return None;
                }
                Some(Verb::Partition { groups: out })
            }
            "heal" => {
                if !(v.is_null() || v.scalar() == Some("all")) {
                    self.d.error_help(
                        v.pos,
                        "heal takes no arguments",
                        "write `heal:` or `heal: all`; it brings back every link a partition cut",
                    );
                    return None;
                }
                Some(Verb::Heal)
            }
            "crash" | "restart" => {
                let node = self.name(v, name)?;
                let crash = name == "crash";
                Some(if node.ends_with('*') {
                    Verb::Many {
                        crash,
                        nodes: Selector(node),
                    }
                } else if crash {
                    Verb::Once(Action::Crash { node })
                } else {
                    Verb::Once(Action::Restart { node })
                })
            }
            "objects" => self.objects_verb(v, at_ns),
            "crash_holders" => {
                let f = self.fields(v, &["objects", "shards", "except"], name)?;
                let on = self.required(&f, "objects", v.pos, name)?;
                let objects: Vec<String> = self
                    .selectors(on, "crash_holders objects")?
                    .into_iter()
                    .map(|s| s.0)
                    .collect();
                let sn = self.required(&f, "shards", v.pos, name)?;
                let shards = match self.uint(sn, "shards", u64::from(u16::MAX))? {
                    0 => {
                        self.d.error(sn.pos, "shards must be at least 1");
                        return None;
                    }
                    x => x as u16,
                };
                let except: Vec<String> = match Self::get(&f, "except") {
                    Some(n) => self
                        .selectors(n, "crash_holders except")?
                        .into_iter()
                        .map(|s| s.0)
                        .collect(),
                    None => Vec::new(),
                };
                Some(Verb::Once(Action::CrashHolders {
                    objects,
                    shards,
                    except,
                }))
            }
            "link_down" | "link_up" => {
                let (a, b) = self.endpoints(v, name)?;
                Some(Verb::Once(if name == "link_down" {
                    Action::LinkDown { a, b }
                } else {
                    Action::LinkUp { a, b }
                }))
            }
            "link_set" => {
                let f = self.fields(
                    v,
                    &[
                        "link",
                        "delay",
                        "jitter",
                        "loss",
                        "rate",
                        "duplicate",
                        "corrupt",
                        "reorder",
                    ],
                    "link_set",
                )?;
                let ln = self.required(&f, "link", v.pos, "this verb")?;
                let (a, b) = self.endpoints(ln, "link")?;
                let s = |k: &str| Self::get(&f, k).and_then(|n| n.scalar().map(String::from));
                let change = LinkChange {
                    delay: s("delay"),
                    jitter: s("jitter"),
                    loss: s("loss"),
                    rate: s("rate"),
                    duplicate: s("duplicate"),
                    corrupt: s("corrupt"),
                    reorder: s("reorder"),
                };
                let mut probe = lightcone_link::model::LinkModel::default();
                if let Err(e) = change.apply_to(&mut probe) {
                    self.d.error(v.pos, format!("link_set: {e}"));
                    return None;
                }
                Some(Verb::Once(Action::LinkSet { a, b, change }))
            }
            "flap" => {
                let f = self.fields(v, &["link", "period", "duty", "until", "jitter"], "flap")?;
                let ln = self.required(&f, "link", v.pos, "this verb")?;
                let (a, b) = self.endpoints(ln, "link")?;
                let pn = self.required(&f, "period", v.pos, "flap")?;
                let period_ns = self.duration(pn, "period")?;
                if period_ns == 0 {
                    self.d.error(pn.pos, "period must be longer than 0");
                    return None;
                }
                let duty = match Self::get(&f, "duty") {
                    Some(n) => self.percent(n, "duty (share of each period the link is up)")?,
                    None => 0.5,
                };
                let jitter_ns = match Self::get(&f, "jitter") {
                    Some(n) => self.duration(n, "jitter")?,
                    None => 0,
                };
                let until_ns = until(self, &f, "flap")?;
                Some(Verb::Flap {
                    a,
                    b,
                    period_ns,
                    duty,
                    until_ns,
                    jitter_ns,
                })
            }
            "churn" => {
                let f = self.fields(
                    v,
                    &["rate", "year", "until", "nodes", "replace_after"],
                    "churn",
                )?;
                let rn = self.required(&f, "rate", v.pos, "churn")?;
                let annual_failure = match rn.scalar().and_then(|s| s.strip_suffix("/year")) {
                    Some(p) => match units::percent(p) {
                        Ok(x) if x < 1.0 => x,
                        Ok(_) => {
                            self.d.error(rn.pos, "churn rate must be below 100%/year");
                            return None;
                        }
                        Err(e) => {
                            self.d.error(rn.pos, format!("churn rate: {e}"));
                            return None;
                        }
                    },
                    None => {
                        self.d.error_help(
                            rn.pos,
                            format!(
                                "churn rate must be a failure rate per year, found {}",
                                show(rn)
                            ),
                            "write it like the spec: `rate: 5%/year`",
                        );
                        return None;
                    }
                };
                let yn = self.required(&f, "year", v.pos, "churn")?;
                let year_ns = self.duration(yn, "year (how long one emulated year lasts here)")?;
                if year_ns == 0 {
                    self.d.error(yn.pos, "year must be longer than 0");
                    return None;
                }
                let until_ns = until(self, &f, "churn")?;
                let nodes = match Self::get(&f, "nodes") {
                    Some(n) => self.selectors(n, "churn nodes")?,
                    None => vec![Selector("*".into())],
                };
                let replace_after_ns = match Self::get(&f, "replace_after") {
                    Some(n) => self.duration(n, "replace_after")?,
                    None => 30_000_000_000,
                };
                Some(Verb::Churn {
                    nodes,
                    annual_failure,
                    year_ns,
                    until_ns,
                    replace_after_ns,
                })
            }
            "load" => {
                let f = self.fields(
                    v,
                    &[
                        "nodes",
                        "keys",
                        "interval",
                        "until",
                        "writes",
                        "messages",
                        "durability",
                    ],
                    "load",
                )?;
                let nodes = match Self::get(&f, "nodes") {
                    Some(n) => self.selectors(n, "load nodes")?,
                    None => vec![Selector("*".into())],
                };
                let mut load = Load::default();
                if let Some(n) = Self::get(&f, "keys") {
                    load.keys = match self.uint(n, "keys", u64::MAX)? {
                        k @ 1..=1000 => k as u32,
                        _ => {
                            self.d.error(n.pos, "keys must be between 1 and 1000");
                            return None;
                        }
                    };
                }
                if let Some(n) = Self::get(&f, "interval") {
                    load.interval_ns = self.duration(n, "interval")?;
                }
                if let Some(n) = Self::get(&f, "writes") {
                    load.write_fraction = self.percent(n, "writes (share of ops that write)")?;
                }
                if let Some(n) = Self::get(&f, "messages") {
                    load.message_fraction =
                        self.percent(n, "messages (share of ops that send a message)")?;
                }
                if let Some(n) = Self::get(&f, "durability") {
                    let d = self.name(n, "durability")?;
                    load.durability = match d.parse() {
                        Ok(d) => d,
                        Err(e) => {
                            self.d.error(n.pos, e);
                            return None;
                        }
                    };
                }
                load.until_ns = until(self, &f, "load")?;
                Some(Verb::Load { nodes, load })
            }
            "clock_step" | "stratum0_compromise" => {
                let f = self.fields(v, &["node", "offset"], name)?;
                let nn = self.required(&f, "node", v.pos, name)?;
                let node = self.name(nn, "node")?;
                let o = self.required(&f, "offset", v.pos, name)?;
                let offset_ns = self.signed_duration(o, "offset")?;
                let change = if name == "clock_step" {
                    ClockChange::Step { offset_ns }
                } else {
                    ClockChange::ServeBias { offset_ns }
                };
                self.clock_verb(name, node, change, o.pos)
            }
            "clock_drift" => {
                let f = self.fields(v, &["node", "ppb"], name)?;
                let nn = self.required(&f, "node", v.pos, name)?;
                let node = self.name(nn, "node")?;
                let n = self.required(&f, "ppb", v.pos, name)?;
                let Some(ppb) = n.scalar().and_then(|s| s.parse::<f64>().ok()) else {
                    self.d.error(
                        n.pos,
                        format!(
                            "ppb must be a number (parts per billion), found {}",
                            show(n)
                        ),
                    );
                    return None;
                };
                self.clock_verb(name, node, ClockChange::Drift { ppb }, n.pos)
            }
            "pulsar_loss" => {
                let f = self.fields(v, &["node", "restore"], name)?;
                let nn = self.required(&f, "node", v.pos, name)?;
                let node = self.name(nn, "node")?;
                let restore = match Self::get(&f, "restore") {
                    None => false,
                    Some(r) => match r.scalar() {
                        Some("true") => true,
                        Some("false") => false,
                        _ => {
                            self.d.error(r.pos, "restore must be true or false");
                            return None;
                        }
                    },
                };
                self.clock_verb(
                    name,
                    node,
                    ClockChange::PulsarLoss { lost: !restore },
                    v.pos,
                )
            }
            "byzantine" => {
                let f = self.fields(v, &["node", "behaviour"], name)?;
                let nn = self.required(&f, "node", v.pos, name)?;
                let node = self.name(nn, "node")?;
                let b = self.required(&f, "behaviour", v.pos, name)?;
                let names: Vec<String> = match &b.value {
                    Value::Seq(items) => {
                        let v: Vec<String> = items
                            .iter()
                            .filter_map(|i| self.name(i, "behaviour"))
                            .collect();
                        if v.len() != items.len() {
                            return None;
                        }
                        v
                    }
                    _ => vec![self.name(b, "behaviour")?],
                };
                match ByzantineFault::from_names(names) {
                    Ok(behaviour) => Some(Verb::Once(Action::Byzantine { node, behaviour })),
                    Err(e) => {
                        self.d.error_help(
                            b.pos,
                            e,
                            "write e.g. [lie_membership, drop_forwarding], or [] to make the node honest again",
                        );
                        None
                    }
                }
            }
            "steal_key" => {
                let f = self.fields(v, &["node", "thief"], name)?;
                let nn = self.required(&f, "node", v.pos, name)?;
                let node = self.name(nn, "node")?;
                let t = self.required(&f, "thief", v.pos, name)?;
                let thief = self.name(t, "thief")?;
                if thief == node {
                    self.d.error_help(
                        t.pos,
                        format!("{node} cannot steal its own key"),
                        "name another node as the thief",
                    );
                    return None;
                }
                Some(Verb::Once(Action::StealKey { node, thief }))
            }
            "rotate_key" => {
                let f = self.fields(v, &["node"], name)?;
                let nn = self.required(&f, "node", v.pos, name)?;
                let node = self.name(nn, "node")?;
                Some(Verb::Once(Action::RotateKey { node }))
            }
            "revoke" => {
                let f = self.fields(v, &["node", "by"], name)?;
                let nn = self.required(&f, "node", v.pos, name)?;
                let node = self.name(nn, "node")?;
                let b = self.required(&f, "by", v.pos, name)?;
                let by = self.name(b, "by")?;
                Some(Verb::Once(Action::Revoke { node, by }))
            }
            "task" => self.task_verb(v),
            "rollout" => {
                let f = self.fields(v, &["build", "canary", "soak"], name)?;
                let b = self.required(&f, "build", v.pos, name)?;
                let build = self.name(b, "build")?;
                let known = crate::experiment::action::ROLLOUT_BUILDS;
                if !known.contains(&build.as_str()) && !build.contains('/') {
                    self.d.error_help(
                        b.pos,
                        format!("unknown build `{build}`"),
                        format!(
                            "name one of the agent's builds ({}) or, for a lab, a path to an agent binary (with a `/`)",
                            known.join(", ")
                        ),
                    );
                    return None;
                }
                let c = self.required(&f, "canary", v.pos, name)?;
                let canary = self.name(c, "canary")?;
                let soak_ns = match Self::get(&f, "soak") {
                    Some(n) => self.duration(n, "soak")?,
                    None => 20_000_000_000,
                };
                if soak_ns < 1_000_000_000 {
                    self.d.error_help(
                        v.pos,
                        "soak must be at least 1s",
                        "the gates judge rounds of one second or more",
                    );
                    return None;
                }
                Some(Verb::Once(Action::Rollout {
                    build,
                    canary,
                    soak_ns,
                }))
            }
            other => {
                let _ = pos;
                self.d
                    .error(v.pos, format!("internal: verb {other} has no reader"));
                None
            }
        }
    }

    fn expectation(&mut self, n: &Node) -> Option<Expectation> {
        let Some(text) = n.scalar().filter(|_| !n.is_null()) else {
            self.d.error_help(
                n.pos,
                format!("an expectation must be a line of text, found {}", n.kind()),
                "write e.g. `detection_time < 10s`",
            );
            return None;
        };
        match super::expect::parse(text) {
            Ok(e) => Some(e),
            Err(e) => {
                let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                let word = text.split_whitespace().next().unwrap_or("");
                let help = match did_you_mean(word, &names) {
                    Some(s) if s != word => {
                        format!("did you mean `{s}`? {}", super::expect::SYNTAX)
                    }
                    _ => super::expect::SYNTAX.to_string(),
                };
                self.d.error_help(n.pos, e, help);
                None
            }
        }
    }
}

fn show(n: &Node) -> String {
    match n.scalar() {
        Some(s) if !n.is_null() => format!("`{s}`"),
        _ => n.kind().to_string(),
    }
}

/// Render a subtree as YAML flow text (quoted scalars stay quoted), for inline topologies
/// and for printing a verb's arguments.
pub fn flow(n: &Node) -> String {
    match &n.value {
        Value::Scalar { text, quoted } => {
            if *quoted {
                serde_json::to_string(text).unwrap_or_default()
            } else {
                text.clone()
            }
        }
        Value::Seq(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(pairs) => format!(
            "{{{}}}",
            pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_verbs_read_into_their_payloads() {
        let src = "topology: x.yaml\nduration: 60s\ntimeline:\n  - { at: 2s, objects: { nodes: \"l0c0*\", count: 5, interval: 500ms, size: 2KiB, until: 9s, prefix: meta } }\n  - { at: 10s, crash: \"l0c0k1*\" }\n  - { at: 11s, crash_holders: { objects: [meta-0001], shards: 3 } }\nexpect: [objects_lost == 0]\n";
        let sc = parse_str(src, "s.yaml", Path::new(".")).unwrap();
        let Verb::Objects { nodes, objects } = &sc.timeline[0].verb else {
            panic!("{:?}", sc.timeline[0].verb)
        };
        assert_eq!(nodes, &[Selector("l0c0*".into())]);
        assert_eq!(
            (
                objects.count,
                objects.interval_ns,
                objects.size_bytes,
                objects.until_ns
            ),
            (5, 500_000_000, 2048, 9_000_000_000)
        );
        assert_eq!(objects.name(1), "meta-0001");
        // One put per interval from the step's time, none at or after `until`.
        assert_eq!(objects.times(2_000_000_000).len(), 5);
        assert_eq!(objects.times(7_000_000_000).len(), 4);
        assert!(
            matches!(&sc.timeline[1].verb, Verb::Many { crash: true, nodes } if nodes.0 == "l0c0k1*")
        );
        assert_eq!(sc.timeline[1].verb.name(), "crash");
        assert!(matches!(
            &sc.timeline[2].verb,
            Verb::Once(Action::CrashHolders { objects, shards: 3, except }) if objects == &["meta-0001"] && except.is_empty()
        ));
        assert_eq!(sc.timeline[2].verb.name(), "crash_holders");
    }

    /// Regression: with the one-action verbs carrying their `Action`, a byzantine step back
    /// to honest (`behaviour: []`) was named by the action's kind, `honest`, in the
    /// expanded timeline's origins; it is the verb `byzantine`.
    #[test]
    fn verbs_keep_their_written_names() {
        let src = "topology: x.yaml\nduration: 20s\ntimeline:\n  - { at: 1s, byzantine: { node: a, behaviour: [] } }\n  - { at: 2s, stratum0_compromise: { node: a, offset: 1ms } }\n  - { at: 3s, pulsar_loss: { node: a, restore: true } }\n  - { at: 4s, link_set: { link: [a, b], delay: 1ms } }\n  - { at: 5s, crash: a }\nexpect: [causal_anomalies == 0]\n";
        let sc = parse_str(src, "s.yaml", Path::new(".")).unwrap();
        let names: Vec<&str> = sc.timeline.iter().map(|s| s.verb.name()).collect();
        assert_eq!(
            names,
            [
                "byzantine",
                "stratum0_compromise",
                "pulsar_loss",
                "link_set",
                "crash"
            ]
        );
    }
}
