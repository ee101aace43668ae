//! The cell's replicated key-value store: a map from keys to multi-value registers
//! ([`MvRegister`], dotted-version-vector siblings), replicated by deltas and repaired by
//! anti-entropy (delta-state CRDTs, Almeida, Shoker, Baquero, JPDC 2018).
//!
//! Every replica of a cell holds a [`Store`]. The call order:
//! - a client write: [`Store::local_put`] with the context the client last read for that key
//!   (empty for a blind write) returns a [`Delta`]; send it to the cell's other replicas.
//! - a delta received: [`Store::apply`]. Deltas commute, so they can be lost, duplicated,
//!   reordered; anti-entropy repairs loss.
//! - anti-entropy with a peer (push–pull): send [`Store::digest`]; the peer answers with
//!   [`Store::missing_since`] (what it has that our digest lacks) and its own digest; we
//!   answer with ours. Compare [`Store::summary`] hashes first to skip in-sync peers; for
//!   large stores exchange [`Store::bucket_hashes`] next and digest only the buckets that
//!   differ ([`Store::digest_of`]).
//! - the cell gateway carries [`Store::summary`] upward: counts, per-writer write totals and
//!   a hash equal on two replicas exactly when their states are equal.
//!
//! **Concurrent writes are kept, not lost**: a read returns every sibling and the context to
//! write back. For callers that need one value, [`Read::resolved`] picks deterministically:
//! the sibling with the greatest `(hlc, dot)` — latest hybrid-logical timestamp, ties broken
//! by coordinating node id, then counter. Every replica with the same siblings picks the
//! same one; nothing is discarded by that choice.
//!
//! Limits: key and value sizes, contexts, siblings per key, keys, bytes, and keys per delta
//! are all bounded ([`StoreLimits`]). A write or delta that would exceed one is rejected as
//! a whole, and the store is left unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::dvv::{Dot, DotContext, MvRegister, NodeId, VersionVector};
use super::hlc::Hlc;

/// A stored value and the HLC timestamp of its write (used only by [`Read::resolved`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// When the write happened, on the coordinator's hybrid logical clock.
    pub hlc: Hlc,
    /// The bytes written.
    pub value: Vec<u8>,
}

/// The register type each key holds.
pub type Register = MvRegister<Versioned>;

/// Limits of one replica's store. Defaults suit a tile with a few MiB to spare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreLimits {
    /// Longest key, bytes (default 256).
    pub max_key_bytes: NonZeroUsize,
    /// Largest value, bytes (default 64 KiB). Larger things belong in the object store.
    pub max_value_bytes: NonZeroUsize,
    /// Most keys (default 65 536).
    pub max_keys: NonZeroUsize,
    /// Most bytes charged (keys, values, contexts; default 64 MiB).
    pub max_store_bytes: NonZeroUsize,
    /// Most concurrent siblings per key (default 16).
    pub max_siblings: NonZeroUsize,
    /// Most entries in a context (vector entries plus detached dots; default 1024).
    pub max_context_entries: NonZeroUsize,
    /// Most keys in one delta, both accepted and produced by `missing_since` (default 256).
    pub max_delta_keys: NonZeroUsize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        let nz = |n: usize| NonZeroUsize::new(n).expect("non-zero default");
        Self {
            max_key_bytes: nz(256),
            max_value_bytes: nz(64 * 1024),
            max_keys: nz(65_536),
            max_store_bytes: nz(64 * 1024 * 1024),
            max_siblings: nz(16),
            max_context_entries: nz(1024),
            max_delta_keys: nz(256),
        }
    }
}

/// Bytes charged per sibling beyond its value (dot, timestamp, map overhead).
const SIBLING_OVERHEAD_BYTES: usize = 48;
/// Bytes charged per key beyond its name (map entries, cached hash).
const KEY_OVERHEAD_BYTES: usize = 64;
/// Bytes charged per context entry.
const CONTEXT_ENTRY_BYTES: usize = 16;

/// Why a write or delta was refused. In every case the store is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key is empty or longer than `max_key_bytes`.
    #[error("key of {len} bytes is outside 1..={max}")]
    KeySize {
        /// Key length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A value is longer than `max_value_bytes`.
    #[error("value of {len} bytes exceeds the {max}-byte limit for key {key:?}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// Value length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A context has more entries than `max_context_entries`.
    #[error("context with {entries} entries exceeds {max} for key {key:?}")]
    ContextTooLarge {
        /// The key.
        key: String,
        /// Entries.
        entries: usize,
        /// Limit.
        max: usize,
    },
    /// The key would hold more concurrent values than `max_siblings`. Read the key and write
    /// back with the context returned to collapse its siblings.
    #[error(
        "key {key:?} would hold {siblings} siblings (max {max}); write with a covering context"
    )]
    TooManySiblings {
        /// The key.
        key: String,
        /// Siblings it would hold.
        siblings: usize,
        /// Limit.
        max: usize,
    },
    /// The store would hold more than `max_keys` keys.
    #[error("store would hold {keys} keys (max {max})")]
    TooManyKeys {
        /// Keys it would hold.
        keys: usize,
        /// Limit.
        max: usize,
    },
    /// The store would exceed `max_store_bytes`.
    #[error("store would hold {bytes} bytes (max {max})")]
    StoreFull {
        /// Bytes it would hold.
        bytes: usize,
        /// Limit.
        max: usize,
    },
    /// A delta carried more than `max_delta_keys` keys.
    #[error("delta with {keys} keys exceeds {max}")]
    DeltaTooLarge {
        /// Keys in the delta.
        keys: usize,
        /// Limit.
        max: usize,
    },
    /// This node's write counter for the key is exhausted (only a forged dot carrying
    /// `u64::MAX` for this node can cause it); the key can no longer be written here.
    #[error("write counter of node {node} for key {key:?} is exhausted")]
    CounterExhausted {
        /// The key.
        key: String,
        /// This node.
        node: NodeId,
    },
    /// A delta's register has a sibling whose dot is not in its context (forged or corrupt).
    #[error("malformed register for key {key:?}: a sibling's dot is outside its context")]
    Malformed {
        /// The key.
        key: String,
    },
}

/// A state fragment to merge into other replicas: for each key, a register to join.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Key → register fragment.
    pub entries: BTreeMap<String, Register>,
}

impl Delta {
    /// Whether the delta carries nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The latest HLC timestamp of any value carried: feed it to
    /// [`HlcClock::update`](super::hlc::HlcClock::update) on receipt so local clocks stay
    /// ahead of what they have seen.
    pub fn max_hlc(&self) -> Option<Hlc> {
        self.entries
            .values()
            .flat_map(|r| r.siblings().map(|(_, v)| v.hlc))
            .max()
    }

    /// Combine two deltas (join per key), e.g. to batch several writes into one message.
    pub fn merge(&mut self, other: &Delta) {
        for (k, r) in &other.entries {
            self.entries.entry(k.clone()).or_default().join(r);
        }
    }
}

/// What a replica has seen, per key: the anti-entropy request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Key → every write seen for it.
    pub entries: BTreeMap<String, DotContext>,
    /// If set, the digest covers only keys in these buckets ([`Store::digest_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<BTreeSet<u16>>,
}

/// Number of anti-entropy buckets.
pub const BUCKETS: usize = 64;

/// The bucket of a key: its SHA-256, first two bytes, modulo [`BUCKETS`].
pub fn bucket_of(key: &str) -> u16 {
    let h = Sha256::digest(key.as_bytes());
    u16::from_be_bytes([h[0], h[1]]) % BUCKETS as u16
}

/// Per-bucket state hashes ([`Store::bucket_hashes`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketHashes {
    /// Hash of bucket `i` at index `i`; [`BUCKETS`] entries.
    pub hashes: Vec<StateHash>,
}

impl BucketHashes {
    /// Buckets whose hashes differ (all of them if the shapes disagree).
    pub fn differing(&self, other: &BucketHashes) -> BTreeSet<u16> {
        if self.hashes.len() != BUCKETS || other.hashes.len() != BUCKETS {
            return (0..BUCKETS as u16).collect();
        }
        (0..BUCKETS as u16)
            .filter(|&i| self.hashes[usize::from(i)] != other.hashes[usize::from(i)])
            .collect()
    }
}

/// SHA-256 over a canonical encoding of a store's state. Serialised as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateHash(pub [u8; 32]);

impl fmt::Debug for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateHash({self})")
    }
}

impl fmt::Display for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for StateHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for StateHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

/// A small summary of a replica's state, for peers (skip anti-entropy when hashes match) and
/// for the cell gateway to carry up the hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Keys held.
    pub keys: u64,
    /// Live values over all keys.
    pub siblings: u64,
    /// Bytes charged against the limit.
    pub bytes: u64,
    /// Per coordinating node: writes seen (over all keys). Grows monotonically; two replicas
    /// with equal `writes` have seen the same number of writes from each node.
    pub writes: VersionVector,
    /// Equal on two replicas exactly when their states are equal (up to SHA-256 collisions).
    pub hash: StateHash,
}

/// The result of a read: every live value, and the context to write back with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// Concurrent values, in dot order. Empty if the key was never written.
    pub siblings: Vec<(Dot, Versioned)>,
    /// Every write seen for the key; pass to [`Store::local_put`] to overwrite these values.
    pub context: DotContext,
}

impl Read {
    /// The deterministic single value: greatest `(hlc, dot)`. `None` if there is no value.
    pub fn resolved(&self) -> Option<&Versioned> {
        self.siblings
            .iter()
            .max_by_key(|(dot, v)| (v.hlc, *dot))
            .map(|(_, v)| v)
    }
}

/// What [`Store::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Keys whose state changed, in order (empty for a duplicate delta).
    pub changed: Vec<String>,
}

/// One replica's store. See the module documentation for the call order.
#[derive(Clone, Debug)]
pub struct Store {
    node: NodeId,
    limits: StoreLimits,
    keys: BTreeMap<String, Register>,
    /// SHA-256 of each key's state, kept in step with `keys` so summaries cost O(keys), not
    /// O(bytes).
    key_hashes: BTreeMap<String, [u8; 32]>,
    bytes: usize,
}

impl Store {
    /// An empty replica that coordinates writes as `node`. `node` must be unique in the cell
    /// and a restarted replica must not reuse it with an empty store (its dots would repeat).
    pub fn new(node: NodeId, limits: StoreLimits) -> Self {
        Self {
            node,
            limits,
            keys: BTreeMap::new(),
            key_hashes: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// This replica's node id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The limits.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes charged against `max_store_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys.keys().map(String::as_str)
    }

    /// The register of `key`, if any.
    pub fn register(&self, key: &str) -> Option<&Register> {
        self.keys.get(key)
    }

    /// Read `key`: all siblings and the context to write back with.
    pub fn get(&self, key: &str) -> Read {
        match self.keys.get(key) {
            None => Read::default(),
            Some(r) => Read {
                siblings: r.siblings().map(|(d, v)| (d, v.clone())).collect(),
                context: r.context().clone(),
            },
        }
    }

    /// Write `value` to `key` at HLC time `hlc`, overwriting the writes in `ctx` (what the
    /// client read; empty for a blind write, which leaves existing values as siblings).
    /// Returns the delta to send to the other replicas. On error nothing changed.
    pub fn local_put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        hlc: Hlc,
        ctx: &DotContext,
    ) -> Result<Delta, StoreError> {
        self.check_key(key)?;
        self.check_value(key, value.len())?;
        self.check_context(key, ctx)?;
        let current = self.keys.get(key);
        let mut next = current.cloned().unwrap_or_default();
        if next.next_dot(self.node, ctx).counter == u64::MAX {
            return Err(StoreError::CounterExhausted {
                key: key.to_owned(),
                node: self.node,
            });
        }
        let delta = next.write(self.node, Versioned { hlc, value }, ctx);
        self.check_register(key, &next)?;
        let old_cost = current.map_or(0, |r| cost(key, r));
        let new_cost = cost(key, &next);
        self.check_totals(usize::from(current.is_none()), old_cost, new_cost)?;
        self.bytes = self.bytes - old_cost + new_cost;
        self.key_hashes.insert(key.to_owned(), key_hash(key, &next));
        self.keys.insert(key.to_owned(), next);
        let mut entries = BTreeMap::new();
        entries.insert(key.to_owned(), delta);
        Ok(Delta { entries })
    }

    /// Join a delta (from [`Store::local_put`] or [`Store::missing_since`] of any replica).
    /// All or nothing: on error nothing changed.
    pub fn apply(&mut self, delta: &Delta) -> Result<ApplyOutcome, StoreError> {
        let max = self.limits.max_delta_keys.get();
        if delta.entries.len() > max {
            return Err(StoreError::DeltaTooLarge {
                keys: delta.entries.len(),
                max,
            });
        }
        let mut staged = Vec::new();
        let (mut new_keys, mut old_total, mut new_total) = (0usize, 0usize, 0usize);
        for (key, frag) in &delta.entries {
            self.check_key(key)?;
            if !frag.is_well_formed() {
                return Err(StoreError::Malformed { key: key.clone() });
            }
            self.check_context(key, frag.context())?;
            for (_, v) in frag.siblings() {
                self.check_value(key, v.value.len())?;
            }
            let current = self.keys.get(key);
            let mut next = current.cloned().unwrap_or_default();
            next.join(frag);
            let unchanged = match current {
                Some(c) => *c == next,
                None => next.context().is_empty(),
            };
            if unchanged {
                continue;
            }
            self.check_register(key, &next)?;
            new_keys += usize::from(current.is_none());
            old_total += current.map_or(0, |r| cost(key, r));
            new_total += cost(key, &next);
            staged.push((key.clone(), next));
        }
        self.check_totals(new_keys, old_total, new_total)?;
        self.bytes = self.bytes - old_total + new_total;
        let mut changed = Vec::with_capacity(staged.len());
        for (key, reg) in staged {
            changed.push(key.clone());
            self.key_hashes.insert(key.clone(), key_hash(&key, &reg));
            self.keys.insert(key, reg);
        }
        Ok(ApplyOutcome { changed })
    }

    /// What this replica has seen, per key; send it to a peer, which answers with
    /// [`Store::missing_since`].
    pub fn digest(&self) -> Digest {
        Digest {
            entries: self
                .keys
                .iter()
                .map(|(k, r)| (k.clone(), r.context().clone()))
                .collect(),
            buckets: None,
        }
    }

    /// The registers a peer with `digest` lacks something of: keys it does not have, and
    /// keys where we have seen a write it has not. At most `max_delta_keys` keys, in key
    /// order; the next round (after the peer applied this) continues where this one stopped.
    pub fn missing_since(&self, digest: &Digest) -> Delta {
        let max = self.limits.max_delta_keys.get();
        let entries = self
            .keys
            .iter()
            .filter(|(k, _)| {
                digest
                    .buckets
                    .as_ref()
                    .is_none_or(|b| b.contains(&bucket_of(k)))
            })
            .filter(|(k, r)| {
                digest
                    .entries
                    .get(*k)
                    .is_none_or(|theirs| !theirs.covers(r.context()))
            })
            .take(max)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        Delta { entries }
    }

    /// Keys held and, per writing replica, the writes seen over all keys: the summary's
    /// counts without hashing the state. O(keys).
    pub fn writes_seen(&self) -> (u64, VersionVector) {
        let mut writes = VersionVector::new();
        for reg in self.keys.values() {
            let ctx = reg.context();
            for node in ctx.nodes() {
                let total = writes.get(node).saturating_add(ctx.count(node));
                writes.raise(node, total);
            }
        }
        (self.keys.len() as u64, writes)
    }

    /// Counts, per-writer totals and a hash of the whole state. O(keys) (per-key hashes are
    /// cached); call it at gossip intervals, not per message.
    pub fn summary(&self) -> Summary {
        let mut h = Sha256::new();
        let mut siblings = 0u64;
        h.update((self.keys.len() as u64).to_be_bytes());
        for (key, reg) in &self.keys {
            h.update(self.key_hashes[key]);
            siblings += reg.sibling_count() as u64;
        }
        let (_, writes) = self.writes_seen();
        Summary {
            keys: self.keys.len() as u64,
            siblings,
            bytes: self.bytes as u64,
            writes,
            hash: StateHash(h.finalize().into()),
        }
    }

    /// One hash per bucket of keys (a one-level Merkle tree): exchange these when summary
    /// hashes differ, then [`Store::digest_of`] only the buckets that differ, so a large,
    /// nearly-synchronised store does not ship a context for every key. O(keys).
    pub fn bucket_hashes(&self) -> BucketHashes {
        let mut hashers: Vec<Sha256> = (0..BUCKETS).map(|_| Sha256::new()).collect();
        for (key, hash) in &self.key_hashes {
            hashers[usize::from(bucket_of(key))].update(hash);
        }
        BucketHashes {
            hashes: hashers
                .into_iter()
                .map(|h| StateHash(h.finalize().into()))
                .collect(),
        }
    }

    /// The digest restricted to keys in `buckets` (see [`Store::bucket_hashes`]); the
    /// peer's [`Store::missing_since`] then ignores keys outside them.
    pub fn digest_of(&self, buckets: &BTreeSet<u16>) -> Digest {
        Digest {
            entries: self
                .keys
                .iter()
                .filter(|(k, _)| buckets.contains(&bucket_of(k)))
                .map(|(k, r)| (k.clone(), r.context().clone()))
                .collect(),
            buckets: Some(buckets.clone()),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), StoreError> {
        let max = self.limits.max_key_bytes.get();
        if key.is_empty() || key.len() > max {
            return Err(StoreError::KeySize {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_value(&self, key: &str, len: usize) -> Result<(), StoreError> {
        let max = self.limits.max_value_bytes.get();
        if len > max {
            return Err(StoreError::ValueTooLarge {
                key: key.to_owned(),
                len,
                max,
            });
        }
        Ok(())
    }

    fn check_context(&self, key: &str, ctx: &DotContext) -> Result<(), StoreError> {
        let max = self.limits.max_context_entries.get();
        if ctx.entries() > max {
            return Err(StoreError::ContextTooLarge {
                key: key.to_owned(),
                entries: ctx.entries(),
                max,
            });
        }
        Ok(())
    }

    fn check_register(&self, key: &str, reg: &Register) -> Result<(), StoreError> {
        self.check_context(key, reg.context())?;
        let max = self.limits.max_siblings.get();
        if reg.sibling_count() > max {
            return Err(StoreError::TooManySiblings {
                key: key.to_owned(),
                siblings: reg.sibling_count(),
                max,
            });
        }
        Ok(())
    }

    fn check_totals(
        &self,
        new_keys: usize,
        old_cost: usize,
        new_cost: usize,
    ) -> Result<(), StoreError> {
        let keys = self.keys.len() + new_keys;
        if keys > self.limits.max_keys.get() {
            return Err(StoreError::TooManyKeys {
                keys,
                max: self.limits.max_keys.get(),
            });
        }
        let bytes = self.bytes - old_cost + new_cost;
        if bytes > self.limits.max_store_bytes.get() {
            return Err(StoreError::StoreFull {
                bytes,
                max: self.limits.max_store_bytes.get(),
            });
        }
        Ok(())
    }
}

/// Bytes charged for one key.
fn cost(key: &str, reg: &Register) -> usize {
    KEY_OVERHEAD_BYTES
        + 2 * key.len()
        + CONTEXT_ENTRY_BYTES * reg.context().entries()
        + reg
            .siblings()
            .map(|(_, v)| v.value.len() + SIBLING_OVERHEAD_BYTES)
            .sum::<usize>()
}

/// SHA-256 of one key's canonical encoding: key, context (vector, detached dots), siblings
/// (dot, HLC, value), each length-prefixed. Canonical because contexts are.
fn key_hash(key: &str, reg: &Register) -> [u8; 32] {
    let mut h = Sha256::new();
    put_bytes(&mut h, key.as_bytes());
    let ctx = reg.context();
    h.update((ctx.vv().len() as u64).to_be_bytes());
    for (node, n) in ctx.vv().iter() {
        h.update(node.to_be_bytes());
        h.update(n.to_be_bytes());
    }
    let detached: Vec<Dot> = ctx.detached().collect();
    h.update((detached.len() as u64).to_be_bytes());
    for d in detached {
        put_dot(&mut h, d);
    }
    h.update((reg.sibling_count() as u64).to_be_bytes());
    for (dot, v) in reg.siblings() {
        put_dot(&mut h, dot);
        h.update(v.hlc.physical_ns.to_be_bytes());
        h.update(v.hlc.logical.to_be_bytes());
        put_bytes(&mut h, &v.value);
    }
    h.finalize().into()
}

fn put_bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_be_bytes());
    h.update(b);
}

fn put_dot(h: &mut Sha256, d: Dot) {
    h.update(d.node.to_be_bytes());
    h.update(d.counter.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: u64) -> Hlc {
        Hlc {
            physical_ns: ns,
            logical: 0,
        }
    }

    fn limits() -> StoreLimits {
        StoreLimits::default()
    }

    #[test]
    fn put_get_and_overwrite_with_context() {
        let mut s = Store::new(1, limits());
        s.local_put("k", b"a".to_vec(), t(1), &DotContext::new())
            .unwrap();
        let r = s.get("k");
        assert_eq!(r.siblings.len(), 1);
        s.local_put("k", b"b".to_vec(), t(2), &r.context).unwrap();
        let r = s.get("k");
        assert_eq!(r.siblings.len(), 1);
        assert_eq!(r.resolved().unwrap().value, b"b");
        assert_eq!(s.get("missing"), Read::default());
    }

    #[test]
    fn concurrent_writes_are_siblings_resolved_by_hlc_then_dot() {
        let mut a = Store::new(1, limits());
        let mut b = Store::new(2, limits());
        let da = a
            .local_put("k", b"from-a".to_vec(), t(5), &DotContext::new())
            .unwrap();
        let db = b
            .local_put("k", b"from-b".to_vec(), t(5), &DotContext::new())
            .unwrap();
        a.apply(&db).unwrap();
        b.apply(&da).unwrap();
        let (ra, rb) = (a.get("k"), b.get("k"));
        assert_eq!(ra, rb);
        assert_eq!(ra.siblings.len(), 2);
        // Same HLC: the higher node id wins the tie, on both replicas.
        assert_eq!(ra.resolved().unwrap().value, b"from-b");
        assert_eq!(a.summary(), b.summary());
    }

    #[test]
    fn later_hlc_wins_resolution() {
        let mut a = Store::new(9, limits());
        let mut b = Store::new(2, limits());
        let da = a
            .local_put("k", b"early".to_vec(), t(1), &DotContext::new())
            .unwrap();
        b.local_put("k", b"late".to_vec(), t(7), &DotContext::new())
            .unwrap();
        b.apply(&da).unwrap();
        assert_eq!(b.get("k").resolved().unwrap().value, b"late");
    }

    #[test]
    fn limits_reject_and_leave_the_store_unchanged() {
        let nz = |n| NonZeroUsize::new(n).unwrap();
        let l = StoreLimits {
            max_key_bytes: nz(4),
            max_value_bytes: nz(8),
            max_keys: nz(2),
            max_siblings: nz(2),
            ..StoreLimits::default()
        };
        let mut s = Store::new(1, l);
        let e = DotContext::new();
        assert!(matches!(
            s.local_put("", vec![], t(1), &e),
            Err(StoreError::KeySize { len: 0, max: 4 })
        ));
        assert!(matches!(
            s.local_put("toolong", vec![], t(1), &e),
            Err(StoreError::KeySize { len: 7, .. })
        ));
        assert!(matches!(
            s.local_put("k", vec![0; 9], t(1), &e),
            Err(StoreError::ValueTooLarge { len: 9, .. })
        ));
        s.local_put("a", vec![1], t(1), &e).unwrap();
        s.local_put("a", vec![2], t(2), &e).unwrap();
        let before = s.summary();
        assert!(matches!(
            s.local_put("a", vec![3], t(3), &e),
            Err(StoreError::TooManySiblings {
                siblings: 3,
                max: 2,
                ..
            })
        ));
        assert_eq!(s.summary(), before);
        // Writing back with the read context collapses the siblings.
        let ctx = s.get("a").context;
        s.local_put("a", vec![4], t(4), &ctx).unwrap();
        assert_eq!(s.get("a").siblings.len(), 1);
        s.local_put("b", vec![1], t(5), &e).unwrap();
        assert!(matches!(
            s.local_put("c", vec![1], t(6), &e),
            Err(StoreError::TooManyKeys { keys: 3, max: 2 })
        ));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn store_bytes_limit_rejects_a_whole_delta() {
        let nz = |n| NonZeroUsize::new(n).unwrap();
        let mut big = Store::new(1, limits());
        let e = DotContext::new();
        let mut delta = Delta::default();
        for k in ["a", "b", "c"] {
            delta.merge(&big.local_put(k, vec![0; 100], t(1), &e).unwrap());
        }
        let mut small = Store::new(
            2,
            StoreLimits {
                max_store_bytes: nz(400),
                ..limits()
            },
        );
        let err = small.apply(&delta).unwrap_err();
        assert!(
            matches!(err, StoreError::StoreFull { max: 400, .. }),
            "{err}"
        );
        assert!(small.is_empty());
        assert_eq!(small.bytes(), 0);
    }

    #[test]
    fn malformed_and_oversized_deltas_are_rejected() {
        let mut s = Store::new(1, limits());
        let json = r#"{"entries":{"k":{"siblings":[[{"node":3,"counter":5},{"hlc":{"physical_ns":1,"logical":0},"value":[1]}]],"context":{"vv":{}}}}}"#;
        let forged: Delta = serde_json::from_str(json).unwrap();
        assert_eq!(
            s.apply(&forged),
            Err(StoreError::Malformed { key: "k".into() })
        );
        let mut other = Store::new(2, limits());
        let mut delta = Delta::default();
        for i in 0..257 {
            delta.merge(
                &other
                    .local_put(&format!("k{i}"), vec![], t(1), &DotContext::new())
                    .unwrap(),
            );
        }
        assert!(matches!(
            s.apply(&delta),
            Err(StoreError::DeltaTooLarge {
                keys: 257,
                max: 256
            })
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn anti_entropy_repairs_lost_deltas_in_bounded_rounds() {
        let nz = |n| NonZeroUsize::new(n).unwrap();
        let l = StoreLimits {
            max_delta_keys: nz(3),
            ..limits()
        };
        let mut a = Store::new(1, l.clone());
        let mut b = Store::new(2, l);
        for i in 0..7 {
            a.local_put(&format!("a{i}"), vec![i], t(1), &DotContext::new())
                .unwrap();
        }
        b.local_put("b", vec![9], t(1), &DotContext::new()).unwrap();
        let mut rounds = 0;
        while a.summary().hash != b.summary().hash {
            rounds += 1;
            assert!(rounds <= 3, "anti-entropy did not converge");
            let to_b = a.missing_since(&b.digest());
            let to_a = b.missing_since(&a.digest());
            assert!(to_b.entries.len() <= 3 && to_a.entries.len() <= 3);
            b.apply(&to_b).unwrap();
            a.apply(&to_a).unwrap();
        }
        assert_eq!(rounds, 3);
        assert!(a.missing_since(&b.digest()).is_empty());
        let sa = a.summary();
        assert_eq!(sa.keys, 8);
        assert_eq!(sa.writes.get(1), 7);
        assert_eq!(sa.writes.get(2), 1);
        // Re-applying is a no-op.
        assert!(a
            .apply(&b.missing_since(&Digest::default()))
            .unwrap()
            .changed
            .is_empty());
    }

    #[test]
    fn bucketed_anti_entropy_ships_only_differing_buckets() {
        let mut a = Store::new(1, limits());
        let mut b = Store::new(2, limits());
        let e = DotContext::new();
        for i in 0..200 {
            let d = a.local_put(&format!("k{i}"), vec![1], t(1), &e).unwrap();
            b.apply(&d).unwrap();
        }
        assert_eq!(a.bucket_hashes(), b.bucket_hashes());
        let lost = a
            .local_put("k7", vec![2], t(2), &a.get("k7").context)
            .unwrap();
        let diff = b.bucket_hashes().differing(&a.bucket_hashes());
        assert_eq!(diff, BTreeSet::from([bucket_of("k7")]));
        let digest = b.digest_of(&diff);
        assert!(digest.entries.len() < 20, "{} keys", digest.entries.len());
        let repair = a.missing_since(&digest);
        assert_eq!(repair, lost);
        b.apply(&repair).unwrap();
        assert_eq!(a.summary(), b.summary());
        // A scoped digest does not make keys outside its buckets look missing.
        let other = (0..BUCKETS as u16).find(|x| !diff.contains(x)).unwrap();
        assert!(a
            .missing_since(&b.digest_of(&BTreeSet::from([other])))
            .is_empty());
    }

    #[test]
    fn cached_key_hashes_match_the_state() {
        let mut a = Store::new(1, limits());
        let mut b = Store::new(2, limits());
        let e = DotContext::new();
        for i in 0..20u8 {
            let k = format!("k{}", i % 5);
            let ctx = if i % 3 == 0 {
                e.clone()
            } else {
                a.get(&k).context
            };
            let d = a.local_put(&k, vec![i], t(u64::from(i)), &ctx).unwrap();
            if i % 2 == 0 {
                b.apply(&d).unwrap();
            }
        }
        for s in [&a, &b] {
            assert_eq!(s.key_hashes.len(), s.keys.len());
            for (k, reg) in &s.keys {
                assert_eq!(s.key_hashes[k], key_hash(k, reg), "stale hash for {k}");
            }
            let recomputed: usize = s.keys.iter().map(|(k, r)| cost(k, r)).sum();
            assert_eq!(s.bytes(), recomputed);
        }
    }

    #[test]
    fn summary_serde_is_hex() {
        let s = Store::new(1, limits()).summary();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(&s.hash.to_string()));
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
