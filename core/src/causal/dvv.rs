//! Version vectors, dotted version vectors and the multi-value register built on them.
//!
//! A *dot* `(node, counter)` names one write. A [`VersionVector`] names a downward-closed set
//! of dots: `{node: n}` means dots `(node, 1..=n)`. Preguiça, Baquero, Almeida, Fonte,
//! Gonçalves, "Dotted Version Vectors: Logical Clocks for Optimistic Replication" (2010/2012)
//! observed that a version vector alone cannot tell two concurrent writes coordinated by the
//! same node apart, and attached one extra *dot* to the vector. [`DotContext`] is the
//! generalisation used by delta-state causal CRDTs (Almeida, Shoker, Baquero, "Delta State
//! Replicated Data Types", JPDC 2018): a version vector plus a set of detached dots, so a
//! replica that receives deltas out of order still knows *exactly* which writes it has seen.
//! It is kept canonical (every dot that extends the contiguous prefix is folded into the
//! vector), so equal sets of dots have equal representations and equal hashes.
//!
//! [`MvRegister`] is the optimised multi-value register of the same paper (the "DVV-set"
//! register of Riak): the values whose dots are not covered by a later write, plus the
//! context of every dot seen. Its join is a lattice join — commutative, associative and
//! idempotent — so replicas that receive the same deltas in any order, any number of times,
//! end in the same state.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Node identifier within the causal layer.
pub type NodeId = u64;

/// One event: the `counter`-th write coordinated by `node` (counters start at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The coordinating node.
    pub node: NodeId,
    /// Its per-node sequence number, ≥ 1.
    pub counter: u64,
}

impl Dot {
    /// Shorthand constructor.
    pub const fn new(node: NodeId, counter: u64) -> Self {
        Self { node, counter }
    }
}

/// A version vector: for each node, how many of its events are included. Zero entries are
/// never stored, so derived equality is set equality.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "BTreeMap<NodeId, u64>", into = "BTreeMap<NodeId, u64>")]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl From<BTreeMap<NodeId, u64>> for VersionVector {
    fn from(mut map: BTreeMap<NodeId, u64>) -> Self {
        map.retain(|_, n| *n > 0);
        Self(map)
    }
}

impl From<VersionVector> for BTreeMap<NodeId, u64> {
    fn from(vv: VersionVector) -> Self {
        vv.0
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (node, n) in iter {
            vv.raise(node, n);
        }
        vv
    }
}

impl VersionVector {
    /// The empty vector.
    pub fn new() -> Self {
        Self(BTreeMap::new())
    }

    /// How many events of `node` are included.
    pub fn get(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    /// Raise `node`'s entry to at least `n`.
    pub fn raise(&mut self, node: NodeId, n: u64) {
        if n > 0 {
            let e = self.0.entry(node).or_insert(0);
            *e = (*e).max(n);
        }
    }

    /// Count one more event of `node` and return its sequence number. Saturates at
    /// `u64::MAX`, which 2^64 events cannot reach in practice.
    pub fn increment(&mut self, node: NodeId) -> u64 {
        let e = self.0.entry(node).or_insert(0);
        *e = e.saturating_add(1);
        *e
    }

    /// Whether the dot is included.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.node)
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&node, &n) in &other.0 {
            self.raise(node, n);
        }
    }

    /// `self ≥ other` pointwise: everything `other` has seen, `self` has seen.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&node, &n)| self.get(node) >= n)
    }

    /// The causal order: `Less` if `self` happened before `other`, `None` if concurrent.
    pub fn causal_cmp(&self, other: &VersionVector) -> Option<Ordering> {
        match (self.dominates(other), other.dominates(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }

    /// Entries in node order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().map(|(&k, &v)| (k, v))
    }

    /// Number of non-zero entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no event is included.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total number of events included.
    pub fn total(&self) -> u64 {
        self.0.values().fold(0u64, |a, &n| a.saturating_add(n))
    }
}

/// An exact set of dots: a version vector plus detached dots above it (a dotted version
/// vector with any number of dots). Always canonical: no detached dot is covered by, or
/// adjacent to, the vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "RawDotContext", into = "RawDotContext")]
pub struct DotContext {
    vv: VersionVector,
    dots: BTreeSet<Dot>,
}

/// Wire shape of [`DotContext`]; normalised on the way in so a peer cannot hand us a
/// non-canonical context that would hash differently from an equal one.
#[derive(Serialize, Deserialize)]
struct RawDotContext {
    vv: VersionVector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dots: Vec<Dot>,
}

impl From<RawDotContext> for DotContext {
    fn from(raw: RawDotContext) -> Self {
        let mut ctx = DotContext {
            vv: raw.vv,
            dots: raw.dots.into_iter().filter(|d| d.counter > 0).collect(),
        };
        ctx.compact();
        ctx
    }
}

impl From<DotContext> for RawDotContext {
    fn from(ctx: DotContext) -> Self {
        RawDotContext {
            vv: ctx.vv,
            dots: ctx.dots.into_iter().collect(),
        }
    }
}

impl From<VersionVector> for DotContext {
    fn from(vv: VersionVector) -> Self {
        Self {
            vv,
            dots: BTreeSet::new(),
        }
    }
}

impl DotContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The contiguous part.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The detached dots (those above a gap).
    pub fn detached(&self) -> impl Iterator<Item = Dot> + '_ {
        self.dots.iter().copied()
    }

    /// Whether `dot` is in the set.
    pub fn contains(&self, dot: Dot) -> bool {
        self.vv.contains(dot) || self.dots.contains(&dot)
    }

    /// Add one dot.
    pub fn insert(&mut self, dot: Dot) {
        if dot.counter > 0 && !self.contains(dot) {
            self.dots.insert(dot);
            self.compact();
        }
    }

    /// Set union.
    pub fn merge(&mut self, other: &DotContext) {
        self.vv.merge(&other.vv);
        self.dots.extend(other.dots.iter().copied());
        self.compact();
    }

    /// Whether every dot of `other` is in `self`.
    pub fn covers(&self, other: &DotContext) -> bool {
        // `self` is canonical, so `(n, vv[n] + 1)` is never detached: if `other`'s vector
        // reaches past ours for any node, we lack that dot.
        self.vv.dominates(&other.vv) && other.dots.iter().all(|&d| self.contains(d))
    }

    /// The largest counter of `node` in the set (0 if none).
    pub fn max_counter(&self, node: NodeId) -> u64 {
        let detached = self
            .dots
            .range(Dot::new(node, 0)..=Dot::new(node, u64::MAX))
            .next_back()
            .map_or(0, |d| d.counter);
        self.vv.get(node).max(detached)
    }

    /// Number of dots of `node` in the set.
    pub fn count(&self, node: NodeId) -> u64 {
        let detached = self
            .dots
            .range(Dot::new(node, 0)..=Dot::new(node, u64::MAX))
            .count() as u64;
        self.vv.get(node).saturating_add(detached)
    }

    /// Nodes that have at least one dot in the set, in order.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.vv
            .iter()
            .map(|(n, _)| n)
            .chain(self.dots.iter().map(|d| d.node))
            .collect()
    }

    /// Size of the representation in entries (vector entries plus detached dots); what
    /// limits are charged against.
    pub fn entries(&self) -> usize {
        self.vv.len() + self.dots.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.dots.is_empty()
    }

    /// Fold detached dots that extend the vector into it. One pass suffices because dots
    /// iterate in `(node, counter)` order.
    fn compact(&mut self) {
        let mut keep = BTreeSet::new();
        for d in std::mem::take(&mut self.dots) {
            let have = self.vv.get(d.node);
            if d.counter <= have {
                continue;
            }
            if d.counter == have + 1 {
                self.vv.raise(d.node, d.counter);
            } else {
                keep.insert(d);
            }
        }
        self.dots = keep;
    }
}

/// A multi-value register: the concurrent values not yet overwritten, each tagged with the
/// dot of the write that produced it, and the context of every write seen for this register.
///
/// Invariant: every sibling's dot is in the context. [`MvRegister::is_well_formed`] checks it
/// for registers that arrive from the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "V: Serialize", deserialize = "V: Deserialize<'de>"))]
pub struct MvRegister<V> {
    #[serde(with = "entries")]
    siblings: BTreeMap<Dot, V>,
    context: DotContext,
}

impl<V> Default for MvRegister<V> {
    fn default() -> Self {
        Self {
            siblings: BTreeMap::new(),
            context: DotContext::new(),
        }
    }
}

impl<V: Clone> MvRegister<V> {
    /// The empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live values, in dot order.
    pub fn siblings(&self) -> impl Iterator<Item = (Dot, &V)> + '_ {
        self.siblings.iter().map(|(&d, v)| (d, v))
    }

    /// Number of live values.
    pub fn sibling_count(&self) -> usize {
        self.siblings.len()
    }

    /// Every write seen; hand it back to [`MvRegister::write`] to overwrite what was read.
    pub fn context(&self) -> &DotContext {
        &self.context
    }

    /// Whether every sibling's dot is in the context.
    pub fn is_well_formed(&self) -> bool {
        self.siblings.keys().all(|&d| self.context.contains(d))
    }

    /// The dot `node` would use for its next write: one past any counter of `node` we or
    /// the reader have seen, so it is fresh as long as this replica kept its state.
    pub fn next_dot(&self, node: NodeId, read: &DotContext) -> Dot {
        let counter = self
            .context
            .max_counter(node)
            .max(read.max_counter(node))
            .saturating_add(1);
        Dot::new(node, counter)
    }

    /// The delta that writes `value` at `node`, overwriting exactly the writes in `read` (the
    /// context the writer read; an empty context creates a sibling of everything). Does not
    /// change `self`; join the delta to apply it.
    pub fn write_delta(&self, node: NodeId, value: V, read: &DotContext) -> MvRegister<V> {
        let dot = self.next_dot(node, read);
        let mut context = read.clone();
        context.insert(dot);
        let mut siblings = BTreeMap::new();
        siblings.insert(dot, value);
        MvRegister { siblings, context }
    }

    /// Write locally and return the delta to ship to the other replicas.
    pub fn write(&mut self, node: NodeId, value: V, read: &DotContext) -> MvRegister<V> {
        let delta = self.write_delta(node, value, read);
        self.join(&delta);
        delta
    }

    /// Lattice join: a value survives if the other side has it too, or has never seen its
    /// dot. Contexts unite.
    ///
    /// For well-formed registers from honest replicas one dot names one value; if two sides
    /// disagree on a dot's value (a forged delta), `self`'s is kept.
    pub fn join(&mut self, other: &MvRegister<V>) {
        let ours = std::mem::take(&mut self.siblings);
        for (dot, v) in ours {
            if other.siblings.contains_key(&dot) || !other.context.contains(dot) {
                self.siblings.insert(dot, v);
            }
        }
        for (&dot, v) in &other.siblings {
            if !self.siblings.contains_key(&dot) && !self.context.contains(dot) {
                self.siblings.insert(dot, v.clone());
            }
        }
        self.context.merge(&other.context);
    }
}

/// Serialises a map with struct keys as a sequence of pairs (JSON maps need string keys).
mod entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S, K, V>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        let pairs = Vec::<(K, V)>::deserialize(d)?;
        let n = pairs.len();
        let map: BTreeMap<K, V> = pairs.into_iter().collect();
        if map.len() != n {
            return Err(serde::de::Error::custom("duplicate key in map"));
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dots: &[(NodeId, u64)]) -> DotContext {
        let mut c = DotContext::new();
        for &(n, k) in dots {
            c.insert(Dot::new(n, k));
        }
        c
    }

    #[test]
    fn version_vector_order() {
        let a: VersionVector = [(1, 2), (2, 1)].into_iter().collect();
        let b: VersionVector = [(1, 3), (2, 1)].into_iter().collect();
        let c: VersionVector = [(1, 1), (2, 5)].into_iter().collect();
        assert_eq!(a.causal_cmp(&b), Some(Ordering::Less));
        assert_eq!(b.causal_cmp(&a), Some(Ordering::Greater));
        assert_eq!(a.causal_cmp(&a), Some(Ordering::Equal));
        assert_eq!(b.causal_cmp(&c), None);
        let zero: VersionVector = [(7, 0)].into_iter().collect();
        assert_eq!(zero, VersionVector::new());
    }

    #[test]
    fn dot_context_is_canonical_whatever_the_insertion_order() {
        let a = ctx(&[(1, 3), (1, 1), (1, 2), (2, 5)]);
        let b = ctx(&[(2, 5), (1, 2), (1, 3), (1, 1)]);
        assert_eq!(a, b);
        assert_eq!(a.vv().get(1), 3);
        assert_eq!(a.detached().collect::<Vec<_>>(), vec![Dot::new(2, 5)]);
        assert_eq!(a.max_counter(2), 5);
        assert_eq!(a.count(2), 1);
        assert!(!a.contains(Dot::new(2, 4)));
        assert!(a.covers(&ctx(&[(1, 2), (2, 5)])));
        assert!(!a.covers(&ctx(&[(1, 4)])));
        assert!(!a.covers(&ctx(&[(2, 4)])));
    }

    #[test]
    fn dot_context_normalises_what_it_deserialises() {
        let json = r#"{"vv":{"1":2,"3":0},"dots":[{"node":1,"counter":3},{"node":1,"counter":1},{"node":2,"counter":0}]}"#;
        let c: DotContext = serde_json::from_str(json).unwrap();
        assert_eq!(c, ctx(&[(1, 1), (1, 2), (1, 3)]));
    }

    #[test]
    fn concurrent_writes_become_siblings_and_a_covering_write_resolves_them() {
        let mut a = MvRegister::<&str>::new();
        let mut b = MvRegister::<&str>::new();
        let da = a.write(1, "x", &DotContext::new());
        let db = b.write(2, "y", &DotContext::new());
        a.join(&db);
        b.join(&da);
        assert_eq!(a, b);
        assert_eq!(a.sibling_count(), 2);
        let read = a.context().clone();
        let dc = a.write(1, "z", &read);
        b.join(&dc);
        assert_eq!(a, b);
        assert_eq!(a.siblings().map(|(_, v)| *v).collect::<Vec<_>>(), vec!["z"]);
    }

    #[test]
    fn two_writes_by_one_node_with_the_same_stale_context_are_both_kept() {
        // The case a plain version vector gets wrong (Preguiça et al. §2).
        let mut r = MvRegister::<u8>::new();
        r.write(1, 1, &DotContext::new());
        let read = r.context().clone();
        r.write(1, 2, &read);
        r.write(1, 3, &read);
        let mut values: Vec<u8> = r.siblings().map(|(_, v)| *v).collect();
        values.sort_unstable();
        assert_eq!(values, vec![2, 3]);
    }

    #[test]
    fn an_overwrite_that_arrives_before_the_value_it_overwrites_wins() {
        let mut origin = MvRegister::<u8>::new();
        let d1 = origin.write(1, 1, &DotContext::new());
        let read = origin.context().clone();
        let d2 = origin.write(1, 2, &read);
        let mut late = MvRegister::<u8>::new();
        late.join(&d2);
        late.join(&d1);
        assert_eq!(late, origin);
        assert_eq!(late.siblings().count(), 1);
    }

    #[test]
    fn register_serde_round_trip() {
        let mut r = MvRegister::<String>::new();
        r.write(4, "a".into(), &DotContext::new());
        r.write(9, "b".into(), &DotContext::new());
        let json = serde_json::to_string(&r).unwrap();
        let back: MvRegister<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let dup = r#"{"siblings":[[{"node":1,"counter":1},"a"],[{"node":1,"counter":1},"b"]],"context":{"vv":{"1":1}}}"#;
        assert!(serde_json::from_str::<MvRegister<String>>(dup).is_err());
    }
}
