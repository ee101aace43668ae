//! What the twin records, in the lab runner's own types, read from the cores directly (no
//! `/state` JSON round trip): each poll round a [`StatePoll`] per polled node, the plotted
//! [`SeriesPoint`], and the counters the core keeps as Prometheus-style [`Samples`] named
//! as the agent exports them (`lightcone_locality_bytes_total`,
//! `lightcone_datagrams_total`, `lightcone_time_coverage_ratio`,
//! `lightcone_time_alarms_total`). A crash loses a node's counters with its state, as an
//! agent's do; here what it had counted is carried over, so the run's increase is exact (the
//! lab samples every second and may lose the last one).
//!
//! **What a round costs** ([`Scope`]). Up to [`FULL_RECORD_MAX`] nodes every node's whole
//! view is recorded, as the lab's poller records it (members, quarantine, routes): the
//! polls are O(N²) per round but N is small. Above it a round is O(N) in time and
//! O(polled × subjects) in memory:
//! - *subjects* are the nodes the timeline names (crash, restart, byzantine, clock, link
//!   and partition verbs); *polled* are the subjects and every node of their cells;
//! - a polled node's poll lists its membership entries for the subjects only, its
//!   quarantine, and (for a subject itself) its whole cell membership and routing table;
//! - so detection (every cell peer of a crashed node is polled, with its entry for it),
//!   quarantine, false quarantines among the polled and convergence after a heal **from the
//!   subjects' side** (their routes to every node and their cell membership) are judged as
//!   in the lab; pairs whose first node is not a subject are not judged at scale;
//! - the series' member, route and quarantine counts are over the polled nodes; locality
//!   and clocks are over every node (aggregates kept as numbers, not per-node samples).
//!
//! `polls.jsonl` therefore holds one line per polled node per round (the subjects' cells),
//! never one line per node of a 10⁵-tile system.

use std::collections::{BTreeMap, BTreeSet};

use lightcone_core::counters::{Direction, Outcome};
use lightcone_core::routing::Level;
use lightcone_core::view::{dest_name, TimeView};
use lightcone_sim::Sim;

use crate::experiment::action::Action;
use crate::experiment::expand::Planned;
use crate::experiment::record::{
    KeyObs, MemberObs, Recording, SeriesPoint, StatePoll, TimeObs, TimeSample,
};
use crate::experiment::runner::cell_key;
use crate::telemetry::Samples;

/// Largest system whose every node's whole view is recorded every round.
pub const FULL_RECORD_MAX: usize = 100;

type Labels = BTreeMap<String, String>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Node `i`'s counters and clock gauges now (empty when it is down).
fn node_samples(sim: &mut Sim, i: u32, name: &str) -> (Samples, Samples) {
    let (mut counters, mut gauges) = (Samples::new(), Samples::new());
    let Some(node) = sim.node(i) else {
        return (counters, gauges);
    };
    let loc = node.locality();
    for l in Level::ALL {
        for (k, scope) in ["local", "remote"].into_iter().enumerate() {
            let (all, work) = (loc.bytes[l as usize][k], loc.workload[l as usize][k]);
            for (class, v) in [("workload", work), ("protocol", all - work)] {
                counters.push((
                    "lightcone_locality_bytes_total".into(),
                    labels(&[
                        ("node", name),
                        ("level", l.as_str()),
                        ("scope", scope),
                        ("class", class),
                    ]),
                    v as f64,
                ));
            }
        }
    }
    for (dir, outcome, v) in node.counters().labelled() {
        counters.push((
            "lightcone_datagrams_total".into(),
            labels(&[("node", name), ("direction", dir), ("outcome", outcome)]),
            v as f64,
        ));
    }
    if let Some(h) = sim.node(i).and_then(|n| n.heat()) {
        let values = h.stats(sim.now()).metric_values();
        for ((metric, _, counter), v) in lightcone_core::heat::machine::METRICS.iter().zip(values) {
            let s = (metric.to_string(), labels(&[("node", name)]), v);
            if *counter {
                counters.push(s);
            } else {
                gauges.push(s);
            }
        }
    }
    if let Some(st) = sim.node(i).and_then(|n| n.store()) {
        // The store's counter the expectations read, as the agent exports it.
        counters.push((
            "lightcone_storage_repair_bytes_total".into(),
            labels(&[("node", name)]),
            st.store().counters().repair_bytes_total as f64,
        ));
    }
    if let Some(t) = sim.time_metrics(i) {
        counters.push((
            "lightcone_time_alarms_total".into(),
            labels(&[("node", name)]),
            t.alarms_total as f64,
        ));
        gauges.push((
            "lightcone_time_coverage_ratio".into(),
            labels(&[("node", name)]),
            t.coverage_ratio,
        ));
    }
    (counters, gauges)
}

/// Locality bytes as numbers: `[level][local, remote][workload, protocol]`.
type LocalityTally = [[[u64; 2]; 2]; 3];

fn add_locality(sim: &Sim, i: u32, into: &mut LocalityTally) {
    let Some(node) = sim.node(i) else { return };
    let loc = node.locality();
    for l in Level::ALL {
        for (k, t) in into[l as usize].iter_mut().enumerate() {
            let (all, work) = (loc.bytes[l as usize][k], loc.workload[l as usize][k]);
            t[0] += work;
            t[1] += all - work;
        }
    }
}

/// The tally as samples without a node label (the locality verdict sums over nodes).
fn locality_samples(t: &LocalityTally) -> Samples {
    let mut out = Samples::new();
    for l in Level::ALL {
        for (k, scope) in ["local", "remote"].into_iter().enumerate() {
            for (c, class) in ["workload", "protocol"].into_iter().enumerate() {
                out.push((
                    "lightcone_locality_bytes_total".into(),
                    labels(&[("level", l.as_str()), ("scope", scope), ("class", class)]),
                    t[l as usize][k][c] as f64,
                ));
            }
        }
    }
    out
}

/// Which nodes a poll round reads, and how much of each (see the module doc).
#[derive(Debug, Clone)]
pub(super) struct Scope {
    /// Every node's whole view (small systems).
    pub full: bool,
    /// Polled nodes, in id order.
    pub polled: Vec<u32>,
    /// Nodes whose membership entries every polled node's poll lists, in id order.
    pub subjects: Vec<u32>,
    /// Nodes whose poll is whole (all members, all routes), by id.
    whole: BTreeSet<u32>,
}

impl Scope {
    /// The scope for a system of `names` (with `addrs`) and its timeline.
    pub fn of(names: &[String], addrs: &BTreeMap<String, String>, timeline: &[Planned]) -> Scope {
        let n = names.len() as u32;
        if names.len() <= FULL_RECORD_MAX {
            return Scope {
                full: true,
                polled: (0..n).collect(),
                subjects: (0..n).collect(),
                whole: (0..n).collect(),
            };
        }
        let ids: BTreeMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, x)| (x.as_str(), i as u32))
            .collect();
        let mut named: BTreeSet<u32> = BTreeSet::new();
        let mut add = |x: &str| {
            if let Some(i) = ids.get(x) {
                named.insert(*i);
            }
        };
        for p in timeline {
            match &p.action {
                Action::Crash { node }
                | Action::Restart { node }
                | Action::Clock { node, .. }
                | Action::Byzantine { node, .. }
                | Action::RotateKey { node }
                | Action::Task { node, .. } => add(node),
                Action::LinkDown { a, b }
                | Action::LinkUp { a, b }
                | Action::LinkSet { a, b, .. }
                | Action::StealKey { node: a, thief: b }
                | Action::Revoke { node: a, by: b } => {
                    add(a);
                    add(b);
                }
                Action::Partition { groups } => groups.iter().flatten().for_each(|x| add(x)),
                // A rollout's canary cell is sampled (its tiles are replaced first).
                Action::Rollout { canary, .. } => {
                    let prefix = format!("{canary}t");
                    if let Some(x) = names.iter().find(|x| x.starts_with(&prefix)) {
                        add(x);
                    }
                }
                Action::Heal
                | Action::LoadStart { .. }
                | Action::ObjectsStart { .. }
                | Action::CrashHolders { .. } => {}
            }
        }
        let cell = |i: u32| cell_key(addrs.get(&names[i as usize]).map_or("", String::as_str));
        // Without a named node, the first node's cell is the sample.
        let cells: BTreeSet<String> = if named.is_empty() {
            std::iter::once(cell(0)).collect()
        } else {
            named.iter().map(|i| cell(*i)).collect()
        };
        // A revocation is judged lab-wide (`revocation_reach_time`): sample the first node of
        // every other cell too.
        let revoking = timeline
            .iter()
            .any(|p| matches!(p.action, Action::Revoke { .. } | Action::RotateKey { .. }));
        let mut seen_cells: BTreeSet<String> = BTreeSet::new();
        let polled: Vec<u32> = (0..n)
            .filter(|i| {
                let c = cell(*i);
                let first_of_cell = revoking && seen_cells.insert(c.clone());
                named.contains(i) || cells.contains(&c) || first_of_cell
            })
            .collect();
        Scope {
            full: false,
            polled,
            subjects: named.iter().copied().collect(),
            whole: named,
        }
    }

    /// One line for the progress and the report.
    pub fn describe(&self, nodes: usize) -> String {
        if self.full {
            format!("every node's whole view each poll round ({nodes} nodes ≤ {FULL_RECORD_MAX})")
        } else {
            format!(
                "sampled: {} of {nodes} nodes polled each round (the timeline's {} named nodes and their cells), each listing the named nodes' membership entries; the named nodes' polls are whole",
                self.polled.len(),
                self.subjects.len()
            )
        }
    }
}

/// Node `i`'s clock as a poll reads it.
fn time_obs(t: &TimeView) -> TimeObs {
    let finite = |x: f64| Some(x).filter(|x| x.is_finite());
    let m = &t.metrics;
    TimeObs {
        error_s: finite(m.true_error_s),
        sigma_s: finite(m.sigma_s),
        within_3sigma: m.within_3sigma,
        coverage_ratio: finite(m.coverage_ratio),
        in_holdover: m.in_holdover,
        alarm_active: m.alarm_active,
        alarms_total: m.alarms_total,
    }
}

/// The polls, series and counters of one twin run.
pub(super) struct Recorder {
    pub scope: Scope,
    pub polls: Vec<StatePoll>,
    pub series: Vec<SeriesPoint>,
    /// What crashed nodes had counted, per series.
    carried: BTreeMap<(String, Labels), f64>,
    /// What crashed nodes had counted of locality, as numbers.
    carried_locality: LocalityTally,
    /// Frames crashed nodes had signed and verified.
    carried_auth: [u64; 2],
    round: u32,
    /// The samples at the start of the timeline: the baseline of the final verdicts.
    pub start: Samples,
    /// The locality tally at the start: the baseline of the locality series.
    start_locality: Samples,
}

impl Recorder {
    pub fn new(scope: Scope) -> Recorder {
        Recorder {
            scope,
            polls: Vec::new(),
            series: Vec::new(),
            carried: BTreeMap::new(),
            carried_locality: LocalityTally::default(),
            carried_auth: [0; 2],
            round: 0,
            start: Samples::new(),
            start_locality: Samples::new(),
        }
    }

    /// Every node's counters (carried over its crashes) and clock gauges, now.
    pub fn samples(&self, sim: &mut Sim, names: &[String]) -> Samples {
        let mut total = self.carried.clone();
        let mut gauges = Samples::new();
        for (i, n) in names.iter().enumerate() {
            let (c, g) = node_samples(sim, i as u32, n);
            for (m, l, v) in c {
                *total.entry((m, l)).or_default() += v;
            }
            gauges.extend(g);
        }
        let mut out: Samples = total.into_iter().map(|((m, l), v)| (m, l, v)).collect();
        out.extend(gauges);
        out
    }

    /// Sets the baselines at the timeline's start.
    pub fn begin(&mut self, sim: &mut Sim, names: &[String]) {
        self.start = self.samples(sim, names);
        self.start_locality = self.locality_now(sim, names.len());
    }

    /// Every node's locality bytes (carried over crashes), as node-less samples.
    fn locality_now(&self, sim: &Sim, n: usize) -> Samples {
        let mut t = self.carried_locality;
        for i in 0..n as u32 {
            add_locality(sim, i, &mut t);
        }
        locality_samples(&t)
    }

    /// Keeps what node `i` counted before it crashes (call before [`Sim::crash`]).
    pub fn before_crash(&mut self, sim: &mut Sim, i: u32, name: &str) {
        let (c, _) = node_samples(sim, i, name);
        for (m, l, v) in c {
            *self.carried.entry((m, l)).or_default() += v;
        }
        add_locality(sim, i, &mut self.carried_locality);
        if let Some(n) = sim.node(i) {
            let a = n.counters().auth_ops;
            self.carried_auth = [self.carried_auth[0] + a[0], self.carried_auth[1] + a[1]];
        }
    }

    /// Frames signed and verified so far by every node (carried over crashes).
    pub fn auth_ops(&self, sim: &Sim, n: usize) -> [u64; 2] {
        let mut t = self.carried_auth;
        for i in 0..n as u32 {
            if let Some(node) = sim.node(i) {
                let a = node.counters().auth_ops;
                t = [t[0] + a[0], t[1] + a[1]];
            }
        }
        t
    }

    /// One poll round at `t_s` seconds since the timeline's start; `links` are the watched
    /// links' delays (`None`: down).
    pub fn poll(
        &mut self,
        sim: &mut Sim,
        names: &[String],
        t_s: f64,
        links: BTreeMap<String, Option<f64>>,
    ) {
        self.round += 1;
        let mut clocks = Vec::new();
        let mut pt = SeriesPoint {
            t_real_s: t_s,
            links,
            ..Default::default()
        };
        // Clocks of every node (a time view per node, in id order, as the lab's poller
        // reads every node's `/state`).
        let mut polled = self.scope.polled.iter().peekable();
        for i in 0..names.len() as u32 {
            let tv = sim.time_view(i);
            if let Some(t) = &tv {
                clocks.push(time_obs(t));
            }
            if polled.peek() != Some(&&i) {
                continue;
            }
            polled.next();
            let Some(mut p) = self.read(sim, i, &names[i as usize], t_s) else {
                continue;
            };
            p.pulsar_missed = tv.as_ref().map(|t| t.pulsar_missed_total);
            if self.scope.full {
                pt.count(&p);
            } else if let Some(node) = sim.node(i) {
                let [a, s, d] = node.membership().counts();
                // `count` does not count a node itself (its view lists its peers).
                pt.alive += a.saturating_sub(1);
                pt.suspect += s;
                pt.dead += d;
                pt.quarantined += p.quarantine.len() as u32;
                pt.routes += node.routing().table().len() as u32;
            }
            self.polls.push(p);
        }
        pt.time = TimeSample::of(&clocks);
        // Thermal load per shell, from every node's thermal sub-machine (when it has one).
        let now = sim.now();
        for i in 0..names.len() as u32 {
            let Some(node) = sim.node(i) else { continue };
            let Some(h) = node.heat() else { continue };
            let load = h.stats(now).load_ratio;
            let e = pt
                .thermal
                .entry(format!("layer {}", node.addr().layer))
                .or_insert(0.0);
            *e = e.max(load);
        }
        let rec = Recording {
            metrics_start: self.start_locality.clone(),
            metrics_end: self.locality_now(sim, names.len()),
            ..Default::default()
        };
        pt.locality = rec.locality().0;
        self.series.push(pt);
    }

    /// Node `i`'s poll as the scope reads it (`None`: it is down).
    fn read(&self, sim: &Sim, i: u32, name: &str, t_s: f64) -> Option<StatePoll> {
        let node = sim.node(i)?;
        let whole = self.scope.whole.contains(&i);
        let obs = |m: lightcone_core::membership::MemberView| MemberObs {
            id: m.id,
            state: m.state.as_str().to_string(),
            incarnation: m.incarnation,
            since_emulated_s: m.since_emulated_s,
        };
        let members: Vec<MemberObs> = if whole {
            node.membership().view().into_iter().map(obs).collect()
        } else {
            self.scope
                .subjects
                .iter()
                .filter_map(|s| node.membership().member_view(*s))
                .map(obs)
                .collect()
        };
        let routes = if whole {
            node.routing().table().keys().map(dest_name).collect()
        } else {
            Vec::new()
        };
        Some(StatePoll {
            round: self.round,
            t_real_s: t_s,
            node: name.to_string(),
            id: node.id(),
            // The virtual time is the node's clock when it answered.
            now_emulated_s: sim.now().as_secs_f64(),
            members,
            quarantine: node.routing().quarantined().iter().copied().collect(),
            routes,
            pulsar_missed: None,
            shards: node.store().map(|st| st.store().inventory()),
            keys: KeyObs {
                revoked: node.revoked_nodes(),
                rotated: node.rotated_nodes(),
                revoked_delivered: node
                    .counters()
                    .get(Direction::App, Outcome::RevokedDelivered),
                refused: node.counters().get(Direction::Rx, Outcome::KeyRevoked),
            },
        })
    }

    /// Node `i`'s whole poll (warm-up), outside the recording.
    pub fn whole_poll(sim: &mut Sim, i: u32, name: &str) -> Option<StatePoll> {
        let scope = Scope {
            full: true,
            polled: vec![i],
            subjects: vec![],
            whole: std::iter::once(i).collect(),
        };
        let r = Recorder::new(scope);
        r.read(sim, i, name, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(cells: usize, tiles: usize) -> (Vec<String>, BTreeMap<String, String>) {
        let mut names = Vec::new();
        let mut addrs = BTreeMap::new();
        for k in 0..cells {
            for t in 0..tiles {
                let n = format!("l0c0k{k}t{t}");
                addrs.insert(n.clone(), format!("0.0.{k}.{t}"));
                names.push(n);
            }
        }
        (names, addrs)
    }

    fn at(action: Action) -> Planned {
        Planned {
            at_ns: 0,
            action,
            origin: "test".into(),
        }
    }

    #[test]
    fn a_small_system_is_recorded_whole() {
        let (names, addrs) = system(2, 50);
        let s = Scope::of(&names, &addrs, &[]);
        assert!(s.full);
        assert_eq!(s.polled.len(), 100);
        assert!(s.describe(100).starts_with("every node's whole view"));
    }

    #[test]
    fn a_large_system_polls_the_named_nodes_cells_and_lists_the_named_nodes() {
        let (names, addrs) = system(4, 100);
        let timeline = [
            at(Action::Crash {
                node: "l0c0k1t5".into(),
            }),
            at(Action::Partition {
                groups: vec![vec!["l0c0k3t7".into()]],
            }),
            at(Action::Heal),
        ];
        let s = Scope::of(&names, &addrs, &timeline);
        assert!(!s.full);
        // Cells 1 and 3 (ids 100..200 and 300..400), not cells 0 and 2.
        assert_eq!(s.polled.len(), 200);
        assert!(s
            .polled
            .iter()
            .all(|i| (100..200).contains(i) || (300..400).contains(i)));
        assert_eq!(s.subjects, vec![105, 307]);
        assert!(s.whole.contains(&105) && !s.whole.contains(&106));
        assert!(s.describe(400).contains("200 of 400 nodes polled"));
        // Without a named node, the first cell is the sample.
        let s = Scope::of(&names, &addrs, &[]);
        assert_eq!(s.polled, (0..100).collect::<Vec<u32>>());
        assert!(s.subjects.is_empty());
    }

    #[test]
    fn the_locality_tally_reads_as_the_per_node_samples_do() {
        let mut t = LocalityTally::default();
        t[0][0] = [10, 5];
        t[0][1] = [0, 1];
        let rec = Recording {
            metrics_start: locality_samples(&LocalityTally::default()),
            metrics_end: locality_samples(&t),
            ..Default::default()
        };
        let (f, _) = rec.locality();
        assert_eq!(f, Some(15.0 / 16.0));
    }
}
