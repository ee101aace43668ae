//! A causal-consistency checker for recorded read/write histories of the key-value store.
//!
//! The model is causal consistency for multi-value registers (Ahamad, Neiger, Burns, Kohli,
//! Hutto, "Causal memory", Distributed Computing 1995; the session guarantees of Terry et
//! al., "Session Guarantees for Weakly Consistent Replicated Data", PDIS 1994; the
//! "bad patterns" of Bouajjani, Enea, Guerraoui, Hamza, "On Verifying Causal Consistency",
//! POPL 2017). The causal order `→co` of a history is the transitive closure of
//! - *session order*: the operations of one process, ordered by start time,
//! - *reads-from*: the write of a value precedes every read that returns that value, and
//! - *overwrites*: a write whose recorded context holds the recorded dot of another write
//!   follows it (the store's put overwrites what its replica had seen of the key, an
//!   implicit read; without recorded dots and contexts a write is blind).
//!
//! A read `r` of key `k` must *see* every write `w` to `k` with `w →co r`: either return `w`
//! or return a value whose write causally follows `w`. A write it misses is an anomaly,
//! named by how `w` got into `r`'s past:
//! - [`AnomalyKind::ReadYourWrites`]: the reader wrote `w` itself;
//! - [`AnomalyKind::MonotonicReads`]: the reader's previous read of `k` saw `w`;
//! - [`AnomalyKind::MonotonicWrites`]: the reader read a later write of `w`'s writer;
//! - [`AnomalyKind::WritesFollowReads`]: the reader read a write made by someone who had
//!   seen `w`;
//! - [`AnomalyKind::CausalOrder`]: any other causal path.
//!
//! Also reported: values never written ([`AnomalyKind::ThinAirRead`]) or only written by a
//! failed write, values read before their write started ([`AnomalyKind::FutureRead`]: the
//! testbed's namespaces share one host clock, so start/end times are ground truth), a
//! causal cycle ([`AnomalyKind::CyclicCausality`]), and a read returning a value together
//! with a write that overwrote it ([`AnomalyKind::ObsoleteSibling`], decided from the dots
//! and contexts recorded, since blind writes may legitimately leave siblings).
//!
//! Requirements on the history: every write of a key writes a distinct value (use unique
//! values in experiments), and a process runs one operation at a time.
//!
//! Cost: each operation carries a vector of one entry per process (the causal past as a
//! vector clock: session order makes a process's past a prefix), so time and memory are
//! O(ops × processes); histories beyond [`MAX_CLOCK_CELLS`] are refused.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::dvv::{Dot, DotContext};

/// Most `ops × processes` the checker accepts (about 256 MiB of clocks).
pub const MAX_CLOCK_CELLS: usize = 64 << 20;
/// Most anomalies listed; the rest are only counted.
pub const MAX_ANOMALIES_LISTED: usize = 10_000;

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOp {
    /// The client session that issued it (a sequential process).
    pub process: u32,
    /// The replica that served it, if known (reported in explanations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// The key.
    pub key: String,
    /// Read or write, with the values.
    pub op: OpKind,
    /// Outcome.
    #[serde(default)]
    pub status: OpStatus,
    /// For a write: the dot the store assigned, if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot: Option<Dot>,
    /// For a write: the context it overwrote; for a read: the context returned. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<DotContext>,
    /// Invocation time, ns on the shared host clock.
    pub start_ns: u64,
    /// Completion time, ns, ≥ `start_ns`.
    pub end_ns: u64,
}

/// Read or write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpKind {
    /// Wrote `value`.
    Write {
        /// The value written; unique per key.
        value: String,
    },
    /// Read and got `values` (all siblings; empty if the key had no value).
    Read {
        /// The values returned.
        values: Vec<String>,
    },
}

/// How an operation ended (Jepsen's ok/fail/info).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// Completed.
    #[default]
    Ok,
    /// Definitely did not take effect.
    Fail,
    /// Unknown (timed out). A write may or may not be visible; an unknown read is ignored.
    Info,
}

/// Kinds of anomaly; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A value that no (non-failed) write wrote.
    ThinAirRead,
    /// A value written only by a write that reported failure.
    ReadOfFailedWrite,
    /// A value returned before its write began (shared ground-truth clock).
    FutureRead,
    /// The causal order has a cycle.
    CyclicCausality,
    /// A value returned together with a write whose context overwrote it.
    ObsoleteSibling,
    /// A process did not see its own earlier write.
    ReadYourWrites,
    /// A process saw less than its previous read of the key.
    MonotonicReads,
    /// A process saw a later write of a writer but not an earlier one.
    MonotonicWrites,
    /// A process saw a write but not what its writer had read before writing.
    WritesFollowReads,
    /// A read missed a write in its causal past by a longer path.
    CausalOrder,
}

/// One anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// What kind.
    pub kind: AnomalyKind,
    /// Index (in the input) of the operation where it shows, usually a read.
    pub op: usize,
    /// Indices of the other operations involved (the missed or overwriting write, …).
    pub related: Vec<usize>,
    /// The key.
    pub key: String,
    /// A sentence for humans.
    pub explanation: String,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Anomalies, by operation index then kind; at most [`MAX_ANOMALIES_LISTED`].
    pub anomalies: Vec<Anomaly>,
    /// Anomalies found beyond the listed ones.
    pub unlisted: u64,
    /// Operations considered (failed ones and unknown reads are skipped).
    pub ops_checked: u64,
    /// Reads checked.
    pub reads_checked: u64,
    /// Misses not reported because the read returned an indeterminate write whose context
    /// was never recorded (its replica died before answering): it may have overwritten the
    /// missed write, and the history cannot say. What the checker could not check.
    #[serde(default)]
    pub misses_excused: u64,
}

impl Report {
    /// Whether the history is causally consistent as far as the checker can tell.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty() && self.unlisted == 0
    }

    /// Count per kind (listed anomalies only).
    pub fn counts(&self) -> BTreeMap<AnomalyKind, u64> {
        let mut m = BTreeMap::new();
        for a in &self.anomalies {
            *m.entry(a.kind).or_insert(0) += 1;
        }
        m
    }
}

/// A history the checker cannot judge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Two writes of one key wrote the same value; reads could not tell them apart.
    #[error("ops {first} and {second} both write {value:?} to key {key:?}; values must be unique per key")]
    DuplicateWrite {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// First op index.
        first: usize,
        /// Second op index.
        second: usize,
    },
    /// One process had two operations in flight at once.
    #[error("process {process} runs ops {first} and {second} concurrently; a process must be sequential")]
    OverlappingSession {
        /// Process.
        process: u32,
        /// Earlier op index.
        first: usize,
        /// Overlapping op index.
        second: usize,
    },
    /// `end_ns < start_ns`.
    #[error("op {op} ends before it starts")]
    BadInterval {
        /// Op index.
        op: usize,
    },
    /// Too large to check.
    #[error(
        "history of {ops} ops by {processes} processes exceeds the checker's {max} clock cells"
    )]
    TooLarge {
        /// Ops.
        ops: usize,
        /// Processes.
        processes: usize,
        /// Limit.
        max: usize,
    },
}

/// A process's writes of one key: `(position in session, op index)`, in session order.
type SessionWrites = Vec<(u32, usize)>;

/// An operation that takes part in the check.
struct Live {
    idx: usize,
    proc: usize,
    /// 1-based position in its process's session.
    pos: u32,
    /// For reads: the writes (op indices) it read from. For writes: the writes its recorded
    /// context overwrote.
    reads_from: Vec<usize>,
}

/// Check `history` (operations in any order) for causal anomalies.
pub fn check(history: &[HistoryOp]) -> Result<Report, HistoryError> {
    let mut report = Report::default();
    let mut found: Vec<Anomaly> = Vec::new();

    // Writes by (key, value); failed writes separately.
    let mut writes: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut failed: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        if op.end_ns < op.start_ns {
            return Err(HistoryError::BadInterval { op: i });
        }
        if let OpKind::Write { value } = &op.op {
            let k = (op.key.as_str(), value.as_str());
            if op.status == OpStatus::Fail {
                failed.entry(k).or_insert(i);
            } else if let Some(&first) = writes.get(&k) {
                return Err(HistoryError::DuplicateWrite {
                    key: op.key.clone(),
                    value: value.clone(),
                    first,
                    second: i,
                });
            } else {
                writes.insert(k, i);
            }
        }
    }

    // Sessions: the ops that take part, per process, by start time.
    let takes_part = |op: &HistoryOp| {
        !matches!(
            (&op.op, op.status),
            (_, OpStatus::Fail) | (OpKind::Read { .. }, OpStatus::Info)
        )
    };
    let mut sessions: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        if takes_part(op) {
            sessions.entry(op.process).or_default().push(i);
        }
    }
    let processes = sessions.len();
    let live_ops: usize = sessions.values().map(Vec::len).sum();
    if live_ops.saturating_mul(processes.max(1)) > MAX_CLOCK_CELLS {
        return Err(HistoryError::TooLarge {
            ops: live_ops,
            processes,
            max: MAX_CLOCK_CELLS,
        });
    }
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut session_of: Vec<Vec<usize>> = Vec::with_capacity(processes);
    for (p, (&pid, ops)) in sessions.iter_mut().enumerate() {
        ops.sort_by_key(|&i| (history[i].start_ns, i));
        for w in ops.windows(2) {
            if history[w[1]].start_ns < history[w[0]].end_ns {
                return Err(HistoryError::OverlappingSession {
                    process: pid,
                    first: w[0],
                    second: w[1],
                });
            }
        }
        for (n, &i) in ops.iter().enumerate() {
            live.insert(
                i,
                Live {
                    idx: i,
                    proc: p,
                    pos: u32::try_from(n + 1).expect("bounded by MAX_CLOCK_CELLS"),
                    reads_from: Vec::new(),
                },
            );
        }
        session_of.push(ops.clone());
    }
    report.ops_checked = live_ops as u64;

    // Reads-from, thin-air and future reads.
    for (&i, l) in live.iter_mut() {
        let op = &history[i];
        let OpKind::Read { values } = &op.op else {
            continue;
        };
        let mut seen = BTreeSet::new();
        for v in values {
            if !seen.insert(v.as_str()) {
                continue;
            }
            let k = (op.key.as_str(), v.as_str());
            match writes.get(&k) {
                Some(&w) => {
                    l.reads_from.push(w);
                    if history[w].start_ns > op.end_ns {
                        found.push(Anomaly {
                            kind: AnomalyKind::FutureRead,
                            op: i,
                            related: vec![w],
                            key: op.key.clone(),
                            explanation: format!(
                                "process {} read {v:?} at [{}, {}] ns, but the write of {v:?} \
                                 (op {w}, process {}) only started at {} ns",
                                op.process,
                                op.start_ns,
                                op.end_ns,
                                history[w].process,
                                history[w].start_ns
                            ),
                        });
                    }
                }
                None => {
                    let (kind, why) = match failed.get(&k) {
                        Some(&f) => (
                            AnomalyKind::ReadOfFailedWrite,
                            format!("only op {f}, which failed, wrote it"),
                        ),
                        None => (AnomalyKind::ThinAirRead, "no write wrote it".to_owned()),
                    };
                    found.push(Anomaly {
                        kind,
                        op: i,
                        related: failed.get(&k).copied().into_iter().collect(),
                        key: op.key.clone(),
                        explanation: format!(
                            "process {} read {v:?} from key {:?}{}: {why}",
                            op.process,
                            op.key,
                            served_by(op)
                        ),
                    });
                }
            }
        }
    }

    // Overwrites: a write follows every recorded write whose dot its context holds.
    // Dots are per key (each key is its own register).
    let mut by_dot: BTreeMap<&str, BTreeMap<Dot, usize>> = BTreeMap::new();
    for &i in live.keys() {
        if let (OpKind::Write { .. }, Some(d), OpStatus::Ok) =
            (&history[i].op, history[i].dot, history[i].status)
        {
            by_dot
                .entry(history[i].key.as_str())
                .or_default()
                .insert(d, i);
        }
    }
    for (&i, l) in live.iter_mut() {
        let op = &history[i];
        let (OpKind::Write { .. }, Some(ctx)) = (&op.op, &op.context) else {
            continue;
        };
        for (&d, &w) in by_dot.get(op.key.as_str()).into_iter().flatten() {
            if w != i && ctx.contains(d) {
                l.reads_from.push(w);
            }
        }
    }

    // Causal pasts in topological order (Kahn): session predecessor, reads-from and
    // overwrite edges.
    let mut indegree: BTreeMap<usize, usize> = BTreeMap::new();
    let mut readers: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&i, l) in &live {
        let session_pred = usize::from(l.pos > 1);
        indegree.insert(i, session_pred + l.reads_from.len());
        for &w in &l.reads_from {
            readers.entry(w).or_default().push(i);
        }
    }
    let mut ready: VecDeque<usize> = indegree
        .iter()
        .filter(|(_, &d)| d == 0)
        .map(|(&i, _)| i)
        .collect();
    // Clocks: the running clock of each process, and a stored clock per write.
    let mut proc_clock: Vec<Vec<u32>> = vec![vec![0; processes]; processes];
    let mut write_clock: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    // Writes (Ok status) per key per process: (pos, op index), in session order.
    let mut key_writes: BTreeMap<&str, BTreeMap<usize, SessionWrites>> = BTreeMap::new();
    for l in live.values() {
        let op = &history[l.idx];
        if matches!(op.op, OpKind::Write { .. }) && op.status == OpStatus::Ok {
            key_writes
                .entry(op.key.as_str())
                .or_default()
                .entry(l.proc)
                .or_default()
                .push((l.pos, l.idx));
        }
    }
    for per_proc in key_writes.values_mut() {
        for v in per_proc.values_mut() {
            v.sort_unstable();
        }
    }
    // Per process, per key: the writes returned by its latest read of that key.
    let mut last_read: BTreeMap<(usize, &str), Vec<usize>> = BTreeMap::new();
    // Per process: every write it read from, with the position of the read.
    let mut read_log: Vec<Vec<(u32, usize)>> = vec![Vec::new(); processes];
    let mut done = 0usize;

    while let Some(i) = ready.pop_front() {
        done += 1;
        let l = &live[&i];
        let op = &history[i];
        let mut clock = proc_clock[l.proc].clone();
        for w in &l.reads_from {
            for (c, &x) in clock.iter_mut().zip(&write_clock[w]) {
                *c = (*c).max(x);
            }
        }
        clock[l.proc] = l.pos;
        let before = |w: usize, clock: &[u32]| {
            let lw = &live[&w];
            clock[lw.proc] >= lw.pos
        };

        match &op.op {
            OpKind::Write { .. } => {
                write_clock.insert(i, clock.clone());
            }
            OpKind::Read { .. } => {
                report.reads_checked += 1;
                let returned = &l.reads_from;
                let covers = |w: usize| {
                    returned
                        .iter()
                        .any(|&s| s == w || before(w, &write_clock[&s]))
                };
                // A write whose outcome never came back (the agent died holding it) has no
                // recorded context, yet it took effect if a read returns it: it may have
                // overwritten any write of the key that began before it ended. Treating it
                // as blind would report every such overwrite as a miss.
                let excused = |w: usize| {
                    returned.iter().any(|&s| {
                        history[s].status == OpStatus::Info
                            && history[s].context.is_none()
                            && history[w].start_ns < history[s].end_ns
                    })
                };
                // Obsolete siblings, from recorded dots and contexts.
                for &a in returned {
                    for &b in returned {
                        let (Some(dot), Some(ctx)) = (history[a].dot, &history[b].context) else {
                            continue;
                        };
                        if a != b && ctx.contains(dot) {
                            found.push(Anomaly {
                                kind: AnomalyKind::ObsoleteSibling,
                                op: i,
                                related: vec![a, b],
                                key: op.key.clone(),
                                explanation: format!(
                                    "process {} read {:?} together with {:?}, whose write \
                                     (op {b}) overwrote it (its context holds dot {}:{})",
                                    op.process,
                                    value_of(&history[a]),
                                    value_of(&history[b]),
                                    dot.node,
                                    dot.counter
                                ),
                            });
                        }
                    }
                }
                // Every write to the key in the causal past must be seen. For each process
                // the latest such write suffices: earlier ones precede it in session order.
                if let Some(per_proc) = key_writes.get(op.key.as_str()) {
                    for (&q, ws) in per_proc {
                        let upto = clock[q];
                        let n = ws.partition_point(|&(pos, _)| pos <= upto);
                        let Some(&(_, w)) = n.checked_sub(1).map(|n| &ws[n]) else {
                            continue;
                        };
                        if covers(w) {
                            continue;
                        }
                        if excused(w) {
                            report.misses_excused += 1;
                            continue;
                        }
                        let kind = classify(
                            w,
                            l,
                            &live,
                            &write_clock,
                            last_read.get(&(l.proc, op.key.as_str())),
                            &read_log[l.proc],
                        );
                        found.push(Anomaly {
                            kind,
                            op: i,
                            related: vec![w],
                            key: op.key.clone(),
                            explanation: format!(
                                "process {} read key {:?}{} and got {:?}, missing {:?} written \
                                 by process {} (op {w}), which causally precedes the read",
                                op.process,
                                op.key,
                                served_by(op),
                                returned
                                    .iter()
                                    .map(|&s| value_of(&history[s]))
                                    .collect::<Vec<_>>(),
                                value_of(&history[w]),
                                history[w].process
                            ),
                        });
                    }
                }
                last_read.insert((l.proc, op.key.as_str()), returned.clone());
                read_log[l.proc].extend(returned.iter().map(|&s| (l.pos, s)));
            }
        }
        proc_clock[l.proc] = clock;

        // Release successors: the next op of the session, and readers of a write.
        let sess = &session_of[l.proc];
        let mut next: Vec<usize> = Vec::new();
        if let Some(&n) = sess.get(l.pos as usize) {
            next.push(n);
        }
        if let Some(rs) = readers.get(&i) {
            next.extend(rs.iter().copied());
        }
        for n in next {
            let d = indegree.get_mut(&n).expect("live op");
            *d -= 1;
            if *d == 0 {
                ready.push_back(n);
            }
        }
    }

    if done < live.len() {
        let stuck: Vec<usize> = indegree
            .iter()
            .filter(|(_, &d)| d > 0)
            .map(|(&i, _)| i)
            .collect();
        let first = stuck[0];
        found.push(Anomaly {
            kind: AnomalyKind::CyclicCausality,
            op: first,
            related: stuck.iter().skip(1).take(16).copied().collect(),
            key: history[first].key.clone(),
            explanation: format!(
                "{} ops are on or after a causal cycle (a read returns a value whose write \
                 depends on that read); they were not checked further",
                stuck.len()
            ),
        });
    }

    found.sort_by(|a, b| (a.op, a.kind, &a.related).cmp(&(b.op, b.kind, &b.related)));
    if found.len() > MAX_ANOMALIES_LISTED {
        report.unlisted = (found.len() - MAX_ANOMALIES_LISTED) as u64;
        found.truncate(MAX_ANOMALIES_LISTED);
    }
    report.anomalies = found;
    Ok(report)
}

/// Name the path by which the missed write `w` entered the read's causal past.
fn classify(
    w: usize,
    r: &Live,
    live: &BTreeMap<usize, Live>,
    write_clock: &BTreeMap<usize, Vec<u32>>,
    last_read_of_key: Option<&Vec<usize>>,
    read_log: &[(u32, usize)],
) -> AnomalyKind {
    let lw = &live[&w];
    let precedes = |w: usize, x: usize| {
        let lw = &live[&w];
        w == x || write_clock[&x][lw.proc] >= lw.pos
    };
    if lw.proc == r.proc {
        return AnomalyKind::ReadYourWrites;
    }
    if last_read_of_key.is_some_and(|s| s.iter().any(|&x| precedes(w, x))) {
        return AnomalyKind::MonotonicReads;
    }
    let via: Vec<usize> = read_log
        .iter()
        .filter(|&&(pos, x)| pos < r.pos && precedes(w, x))
        .map(|&(_, x)| x)
        .collect();
    if via.iter().any(|x| live[x].proc == lw.proc) {
        AnomalyKind::MonotonicWrites
    } else if !via.is_empty() {
        AnomalyKind::WritesFollowReads
    } else {
        AnomalyKind::CausalOrder
    }
}

fn value_of(op: &HistoryOp) -> &str {
    match &op.op {
        OpKind::Write { value } => value,
        OpKind::Read { .. } => "<read>",
    }
}

fn served_by(op: &HistoryOp) -> String {
    op.node.map(|n| format!(" at node {n}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builder: ops get consecutive, non-overlapping times in the order written.
    #[derive(Default)]
    struct H(Vec<HistoryOp>);

    impl H {
        fn push(&mut self, process: u32, key: &str, op: OpKind) -> usize {
            let t = self.0.len() as u64 * 10;
            self.0.push(HistoryOp {
                process,
                node: None,
                key: key.into(),
                op,
                status: OpStatus::Ok,
                dot: None,
                context: None,
                start_ns: t,
                end_ns: t + 5,
            });
            self.0.len() - 1
        }
        fn w(&mut self, p: u32, k: &str, v: &str) -> usize {
            self.push(p, k, OpKind::Write { value: v.into() })
        }
        fn r(&mut self, p: u32, k: &str, vs: &[&str]) -> usize {
            self.push(
                p,
                k,
                OpKind::Read {
                    values: vs.iter().map(|s| s.to_string()).collect(),
                },
            )
        }
        fn kinds(&self) -> Vec<(usize, AnomalyKind)> {
            check(&self.0)
                .unwrap()
                .anomalies
                .iter()
                .map(|a| (a.op, a.kind))
                .collect()
        }
    }

    #[test]
    fn a_correct_history_is_clean() {
        let mut h = H::default();
        h.w(1, "x", "x1");
        h.r(2, "x", &["x1"]);
        h.w(2, "y", "y1");
        h.r(3, "y", &["y1"]);
        h.r(3, "x", &["x1"]);
        h.r(1, "y", &[]); // y1 is not in process 1's past: an empty read is allowed.
        h.w(1, "x", "x2");
        h.r(1, "x", &["x2"]);
        let report = check(&h.0).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.reads_checked, 5);
    }

    #[test]
    fn read_your_writes() {
        let mut h = H::default();
        let w = h.w(1, "x", "x1");
        let r = h.r(1, "x", &[]);
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::ReadYourWrites)]);
        let a = &check(&h.0).unwrap().anomalies[0];
        assert_eq!(a.related, vec![w]);
        assert!(a.explanation.contains("\"x1\""), "{}", a.explanation);
    }

    #[test]
    fn monotonic_reads() {
        let mut h = H::default();
        h.w(1, "x", "x1");
        h.w(1, "x", "x2");
        h.r(2, "x", &["x2"]);
        let r = h.r(2, "x", &["x1"]);
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::MonotonicReads)]);
    }

    #[test]
    fn monotonic_writes() {
        let mut h = H::default();
        h.w(1, "x", "x1");
        h.w(1, "y", "y1");
        h.r(2, "y", &["y1"]);
        let r = h.r(2, "x", &[]);
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::MonotonicWrites)]);
    }

    #[test]
    fn writes_follow_reads() {
        let mut h = H::default();
        h.w(1, "x", "question");
        h.r(2, "x", &["question"]);
        h.w(2, "y", "answer");
        h.r(3, "y", &["answer"]);
        let r = h.r(3, "x", &[]);
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::WritesFollowReads)]);
    }

    #[test]
    fn longer_causal_chain() {
        // x1 → (p2 reads, writes y1) → (p3 reads y1, writes z1) → p4 reads z1, misses x1.
        let mut h = H::default();
        h.w(1, "x", "x1");
        h.r(2, "x", &["x1"]);
        h.w(2, "y", "y1");
        h.r(3, "y", &["y1"]);
        h.w(3, "z", "z1");
        h.r(4, "z", &["z1"]);
        let r = h.r(4, "x", &[]);
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::WritesFollowReads)]);
    }

    #[test]
    fn stale_value_is_caught_even_when_something_is_returned() {
        let mut h = H::default();
        h.w(1, "x", "x1");
        h.w(1, "x", "x2");
        let r = h.r(1, "x", &["x1"]);
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::ReadYourWrites)]);
    }

    #[test]
    fn concurrent_siblings_are_fine() {
        let mut h = H::default();
        h.w(1, "x", "a");
        h.w(2, "x", "b");
        h.r(3, "x", &["a", "b"]);
        h.r(3, "x", &["b", "a"]);
        assert!(h.kinds().is_empty());
    }

    #[test]
    fn thin_air_failed_and_future_reads() {
        let mut h = H::default();
        let r1 = h.r(1, "x", &["ghost"]);
        let f = h.w(2, "x", "failed");
        h.0[f].status = OpStatus::Fail;
        let r2 = h.r(1, "x", &["failed"]);
        let r3 = h.r(1, "y", &["later"]);
        h.w(2, "y", "later");
        let info = h.w(2, "z", "maybe");
        h.0[info].status = OpStatus::Info;
        h.r(1, "z", &["maybe"]);
        assert_eq!(
            h.kinds(),
            vec![
                (r1, AnomalyKind::ThinAirRead),
                (r2, AnomalyKind::ReadOfFailedWrite),
                (r3, AnomalyKind::FutureRead)
            ]
        );
    }

    #[test]
    fn cycles_are_reported() {
        // p1 reads y1 then writes x1; p2 reads x1 then writes y1: each read depends on the
        // other's later write.
        let mut h = H::default();
        h.r(1, "y", &["y1"]);
        h.r(2, "x", &["x1"]);
        h.w(1, "x", "x1");
        h.w(2, "y", "y1");
        let report = check(&h.0).unwrap();
        let kinds: Vec<AnomalyKind> = report.anomalies.iter().map(|a| a.kind).collect();
        assert!(kinds.contains(&AnomalyKind::CyclicCausality), "{report:?}");
    }

    #[test]
    fn obsolete_sibling_from_recorded_contexts() {
        let mut h = H::default();
        let a = h.w(1, "x", "old");
        h.0[a].dot = Some(Dot::new(7, 1));
        let b = h.w(2, "x", "new");
        let mut ctx = DotContext::new();
        ctx.insert(Dot::new(7, 1));
        h.0[b].context = Some(ctx);
        let r = h.r(3, "x", &["old", "new"]);
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::ObsoleteSibling)]);
    }

    #[test]
    fn a_write_whose_context_overwrote_yours_satisfies_read_your_writes() {
        // Process 1 writes at its replica; process 2's put at another replica, after it
        // received that write, overwrites it (its context holds the dot). Process 1 then
        // reads only the newer value: causal, because the overwrite is an implicit read.
        let mut h = H::default();
        let a = h.w(1, "x", "mine");
        h.0[a].dot = Some(Dot::new(1, 1));
        let b = h.w(2, "x", "theirs");
        h.0[b].dot = Some(Dot::new(2, 1));
        let mut ctx = DotContext::new();
        ctx.insert(Dot::new(1, 1));
        h.0[b].context = Some(ctx);
        // The same dot on another key is another write: it must not order anything here.
        let y = h.w(3, "y", "elsewhere");
        h.0[y].dot = Some(Dot::new(1, 1));
        let r = h.r(1, "x", &["theirs"]);
        assert_eq!(h.kinds(), vec![]);
        // Without the recorded context the second write is blind: the read missed "mine".
        h.0[b].context = None;
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::ReadYourWrites)]);
    }

    #[test]
    fn an_indeterminate_write_of_unknown_context_may_have_overwritten_earlier_writes() {
        // The crash-storm pattern: process 1 writes "mine"; process 2's write of "theirs"
        // at a replica that had "mine" never answers (the replica crashed after applying and
        // replicating it). Process 1 then reads "theirs" only.
        let mut h = H::default();
        let mine = h.w(1, "k", "mine");
        let theirs = h.w(2, "k", "theirs");
        let r = h.r(1, "k", &["theirs"]);
        // Recorded as a completed blind write, the read missed "mine".
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::ReadYourWrites)]);
        h.0[theirs].status = OpStatus::Info;
        let report = check(&h.0).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.misses_excused, 1);
        // Not if "mine" began only after the indeterminate write had ended: that write
        // cannot have seen it.
        let end = h.0[theirs].end_ns;
        h.0[mine].start_ns = end + 1;
        h.0[mine].end_ns = end + 2;
        h.0[r].start_ns = end + 3;
        h.0[r].end_ns = end + 4;
        assert_eq!(h.kinds(), vec![(r, AnomalyKind::ReadYourWrites)]);
        // Nor if its context was recorded (a 504 names it) and does not hold "mine".
        h.0[mine].start_ns = 0;
        h.0[theirs].dot = Some(Dot::new(9, 1));
        h.0[theirs].context = Some(DotContext::new());
        assert!(!check(&h.0).unwrap().is_clean());
    }

    #[test]
    fn malformed_histories_are_errors() {
        let mut h = H::default();
        h.w(1, "x", "v");
        h.w(2, "x", "v");
        assert!(matches!(
            check(&h.0),
            Err(HistoryError::DuplicateWrite {
                first: 0,
                second: 1,
                ..
            })
        ));
        let mut h = H::default();
        h.w(1, "x", "a");
        h.w(1, "x", "b");
        h.0[1].start_ns = 2;
        assert!(matches!(
            check(&h.0),
            Err(HistoryError::OverlappingSession { process: 1, .. })
        ));
        let mut h = H::default();
        h.w(1, "x", "a");
        h.0[0].end_ns = 0;
        h.0[0].start_ns = 1;
        assert_eq!(check(&h.0), Err(HistoryError::BadInterval { op: 0 }));
    }

    #[test]
    fn history_json_shape() {
        let json = r#"[
          {"process":1,"key":"x","op":{"kind":"write","value":"a"},"start_ns":0,"end_ns":1},
          {"process":2,"key":"x","op":{"kind":"read","values":["a"]},"status":"ok","start_ns":2,"end_ns":3}
        ]"#;
        let ops: Vec<HistoryOp> = serde_json::from_str(json).unwrap();
        assert!(check(&ops).unwrap().is_clean());
    }
}
