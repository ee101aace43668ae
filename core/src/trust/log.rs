//! A transparency log per cell, in the shape of Certificate Transparency (RFC 6962, and its
//! successor RFC 9162 §2): an append-only Merkle tree of entries (certificates,
//! revocations, update approvals, quarantine verdicts) whose signer publishes signed tree
//! heads; anyone holding two heads checks with a consistency proof that the older is a
//! prefix of the newer, and with an inclusion proof that an entry is in a head.
//!
//! The tree is the maintained `ct-merkle` crate over SHA-256: leaves hash as
//! `SHA-256(0x00 ‖ entry)` and interior nodes as `SHA-256(0x01 ‖ left ‖ right)`, the
//! domain separation of RFC 6962 §2.1 (RFC 9162 §2.1.1), so a leaf can never pass for a
//! node. Tree heads are signed with Ed25519 over a domain-tagged encoding
//! ([`TreeHead::message`]).
//!
//! **Split views.** Tiles gossip the heads they hold ([`Witness::observe`]). Two heads of
//! one log, both validly signed by its signer, with the same size and different roots can
//! only come from a signer that showed different logs to different readers: that pair is
//! [`SplitView`] evidence that anyone can check again with the signer's public key alone.
//! Heads of different sizes are checked with a consistency proof; one that fails is
//! reported too ([`Observation::Inconsistent`]), though it convinces only its checker
//! (the proof is not signed).
//!
//! **Merging across partitions (the spec's "CRDT-backed").** The *set* of entries is a
//! grow-only set (a G-Set CRDT keyed by leaf hash): union is commutative, associative and
//! idempotent, so replicas that saw different entries during a partition agree on the set
//! once they exchange. The Merkle log is its signer's linearisation of that set: merging
//! ([`Log::merge`]) appends the entries it lacks, in leaf-hash order, after its own —
//! never reordering or dropping what it already signed. So every head the log signed stays
//! a prefix of every later head (the log never forks silently), and two replicas of a log
//! hold the same entry set after merging both ways (their orders may differ; only the
//! signer's order is signed). A signer that signed two diverging trees (say, two keepers
//! of one key on two sides of a partition) is caught as a split view when heads meet.

use std::collections::BTreeMap;

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2_011::{Digest, Sha256};

/// SHA-256 output.
pub type Hash = [u8; 32];

/// Bytes of an entry's body, at most (an entry must fit a datagram with its framing).
pub const MAX_BODY: usize = 1024;
/// Entries one log holds, at most (a bound on memory; a full log refuses appends).
pub const MAX_ENTRIES: usize = 1 << 20;

/// Why a log operation or a decode failed. A failed operation changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("truncated")]
    Truncated,
    #[error("trailing bytes")]
    Trailing,
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    #[error("entry body longer than {MAX_BODY} bytes")]
    BodyTooLong,
    #[error("the log is full ({MAX_ENTRIES} entries)")]
    Full,
    #[error("tree head signature does not verify")]
    BadSignature,
    #[error("index out of range")]
    OutOfRange,
    #[error("proof does not verify")]
    BadProof,
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A tile key certified by the authorities' threshold key.
    Certificate = 1,
    /// A key revoked by a threshold-signed entry.
    Revocation = 2,
    /// An update approved for rollout.
    UpdateApproval = 3,
    /// A quarantine (or re-admission) decided by a group.
    QuarantineVerdict = 4,
    /// An agent build (its SHA-256) the authorities' threshold key approved to run: what
    /// attestation admits (issue 18, `crate::trust::threshold::BuildApproval`).
    BuildApproval = 5,
    /// A heat lease granted through a cell's BFT log, signed by the task's owner
    /// (`crate::heat::grants`, trust option `bft_leases`).
    LeaseGrant = 6,
    /// The authorities' threshold signature over a lab's whole directory (every node's
    /// identity and key at `up`): body = SHA-256 of the certified message ‖ signature.
    DirectoryCertificate = 7,
}

impl EntryKind {
    fn from_u8(b: u8) -> Result<EntryKind, LogError> {
        Ok(match b {
            1 => EntryKind::Certificate,
            2 => EntryKind::Revocation,
            3 => EntryKind::UpdateApproval,
            4 => EntryKind::QuarantineVerdict,
            5 => EntryKind::BuildApproval,
            6 => EntryKind::LeaseGrant,
            7 => EntryKind::DirectoryCertificate,
            k => return Err(LogError::UnknownKind(k)),
        })
    }
}

/// One log entry: its kind, the node it is about, and a body whose meaning the kind gives
/// (for a certificate: the key and the threshold signature over it, see
/// [`crate::trust::threshold`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub kind: EntryKind,
    pub subject: u32,
    pub body: Vec<u8>,
}

impl Entry {
    /// `kind(1) subject(4) len(2) body`.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.body.len().min(MAX_BODY);
        let mut w = Vec::with_capacity(7 + n);
        w.push(self.kind as u8);
        w.extend_from_slice(&self.subject.to_be_bytes());
        w.extend_from_slice(&(n as u16).to_be_bytes());
        w.extend_from_slice(&self.body[..n]);
        w
    }

    /// Total: any byte string gives an entry or an error, never a panic.
    pub fn decode(b: &[u8]) -> Result<Entry, LogError> {
        if b.len() < 7 {
            return Err(LogError::Truncated);
        }
        let kind = EntryKind::from_u8(b[0])?;
        let subject = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let n = u16::from_be_bytes([b[5], b[6]]) as usize;
        if n > MAX_BODY {
            return Err(LogError::BodyTooLong);
        }
        let body = b.get(7..7 + n).ok_or(LogError::Truncated)?;
        if b.len() != 7 + n {
            return Err(LogError::Trailing);
        }
        Ok(Entry {
            kind,
            subject,
            body: body.to_vec(),
        })
    }

    /// RFC 6962 leaf hash: SHA-256(0x00 ‖ encoded entry).
    pub fn leaf_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(self.encode());
        h.finalize().into()
    }
}

/// A signed tree head: the log's size and root at a time, signed by the log's signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Which log (the signer's node id).
    pub log_id: u32,
    /// Which instance of the signer's log: a signer that lost its log (a restart without
    /// state) starts a new one under a new epoch (its boot epoch).
    pub epoch: u32,
    pub size: u64,
    pub root: Hash,
    /// The signer's time (emulated ns).
    pub timestamp_ns: u64,
    pub sig: [u8; 64],
}

impl TreeHead {
    pub const LEN: usize = 4 + 4 + 8 + 32 + 8 + 64;
    const DOMAIN: &'static [u8] = b"lightcone/sth/v1";

    /// The signed message: domain tag, log id, epoch, size, root, timestamp.
    pub fn message(log_id: u32, epoch: u32, size: u64, root: &Hash, timestamp_ns: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(Self::DOMAIN.len() + 56);
        m.extend_from_slice(Self::DOMAIN);
        m.extend_from_slice(&log_id.to_be_bytes());
        m.extend_from_slice(&epoch.to_be_bytes());
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(root);
        m.extend_from_slice(&timestamp_ns.to_be_bytes());
        m
    }

    pub fn verify(&self, key: &VerifyingKey) -> Result<(), LogError> {
        let m = Self::message(
            self.log_id,
            self.epoch,
            self.size,
            &self.root,
            self.timestamp_ns,
        );
        key.verify(&m, &Signature::from_bytes(&self.sig))
            .map_err(|_| LogError::BadSignature)
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut w = [0u8; Self::LEN];
        w[0..4].copy_from_slice(&self.log_id.to_be_bytes());
        w[4..8].copy_from_slice(&self.epoch.to_be_bytes());
        w[8..16].copy_from_slice(&self.size.to_be_bytes());
        w[16..48].copy_from_slice(&self.root);
        w[48..56].copy_from_slice(&self.timestamp_ns.to_be_bytes());
        w[56..].copy_from_slice(&self.sig);
        w
    }

    /// Total: structure only (the signature is checked by [`TreeHead::verify`]).
    pub fn decode(b: &[u8]) -> Result<TreeHead, LogError> {
        if b.len() < Self::LEN {
            return Err(LogError::Truncated);
        }
        if b.len() > Self::LEN {
            return Err(LogError::Trailing);
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(&b[16..48]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[56..]);
        let u64at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Ok(TreeHead {
            log_id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            epoch: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            size: u64at(8),
            root,
            timestamp_ns: u64at(48),
            sig,
        })
    }

    fn root_hash(&self) -> RootHash<Sha256> {
        RootHash::new(self.root.into(), self.size)
    }
}

/// An append-only Merkle log (one replica).
#[derive(Debug, Clone, Default)]
pub struct Log {
    tree: MemoryBackedTree<Sha256, Vec<u8>>,
    /// Leaf hash → index: the entry set (the G-Set), for de-duplication and merging.
    index: BTreeMap<Hash, u64>,
}

impl Log {
    pub fn new() -> Log {
        Log::default()
    }
    pub fn len(&self) -> u64 {
        self.tree.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
    pub fn get(&self, idx: u64) -> Option<Entry> {
        let i = usize::try_from(idx).ok()?;
        self.tree.get(i).and_then(|b| Entry::decode(b).ok())
    }

    /// Appends `e` and returns its index; an entry already in the log is not appended
    /// again (its index is returned). Fails, changing nothing, when the log is full.
    pub fn append(&mut self, e: &Entry) -> Result<u64, LogError> {
        let h = e.leaf_hash();
        if let Some(i) = self.index.get(&h) {
            return Ok(*i);
        }
        if self.tree.len() as usize >= MAX_ENTRIES {
            return Err(LogError::Full);
        }
        let i = self.tree.len();
        self.tree.push(e.encode());
        self.index.insert(h, i);
        Ok(i)
    }

    /// True when the entry is in the log.
    pub fn contains(&self, e: &Entry) -> bool {
        self.index.contains_key(&e.leaf_hash())
    }

    /// The entries of the log, in log order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.tree
            .items()
            .iter()
            .filter_map(|b| Entry::decode(b).ok())
    }

    /// Merges another replica's entries (the G-Set union): those we lack are appended in
    /// leaf-hash order, after ours. Returns how many were appended.
    pub fn merge<'a>(
        &mut self,
        other: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<usize, LogError> {
        let mut missing: BTreeMap<Hash, &Entry> = BTreeMap::new();
        for e in other {
            let h = e.leaf_hash();
            if !self.index.contains_key(&h) {
                missing.insert(h, e);
            }
        }
        let mut n = 0;
        for e in missing.values() {
            self.append(e)?;
            n += 1;
        }
        Ok(n)
    }

    pub fn root(&self) -> Hash {
        let r = self.tree.root();
        let mut h = [0u8; 32];
        h.copy_from_slice(r.as_bytes().as_slice());
        h
    }

    /// Signs the current head (epoch 1; see [`Log::head_at`]).
    pub fn head(&self, log_id: u32, timestamp_ns: u64, key: &SigningKey) -> TreeHead {
        self.head_at(log_id, 1, timestamp_ns, key)
    }

    /// Signs the current head of this log, instance `epoch` of `log_id`.
    pub fn head_at(
        &self,
        log_id: u32,
        epoch: u32,
        timestamp_ns: u64,
        key: &SigningKey,
    ) -> TreeHead {
        let (size, root) = (self.len(), self.root());
        let sig = key
            .sign(&TreeHead::message(log_id, epoch, size, &root, timestamp_ns))
            .to_bytes();
        TreeHead {
            log_id,
            epoch,
            size,
            root,
            timestamp_ns,
            sig,
        }
    }

    /// The audit path of entry `idx` in the current tree (RFC 6962 `PATH(m, D[n])`).
    pub fn prove_inclusion(&self, idx: u64) -> Result<Vec<u8>, LogError> {
        if idx >= self.len() {
            return Err(LogError::OutOfRange);
        }
        Ok(self.tree.prove_inclusion(idx as usize).as_bytes().to_vec())
    }

    /// The consistency proof from the head of size `old` to the current tree (RFC 6962
    /// `PROOF(m, D[n])`).
    pub fn prove_consistency(&self, old: u64) -> Result<Vec<u8>, LogError> {
        if old == 0 || old >= self.len() {
            return Err(LogError::OutOfRange);
        }
        Ok(self
            .tree
            .prove_consistency((self.len() - old) as usize)
            .as_bytes()
            .to_vec())
    }
}

/// Checks that `e` is entry `idx` of the tree `head` describes (the head's signature is
/// the caller's to check). Garbage proofs are errors, never panics.
pub fn verify_inclusion(
    head: &TreeHead,
    e: &Entry,
    idx: u64,
    proof: &[u8],
) -> Result<(), LogError> {
    // ct-merkle 0.3 loops forever (or overflows) computing the proof's shape for a tree
    // of more than 2^63 leaves (fuzz target `log_decode` found it with a decoded head);
    // no log here holds more than MAX_ENTRIES, so a head claiming more is refused first.
    if head.size > MAX_ENTRIES as u64 || idx >= head.size {
        return Err(LogError::BadProof);
    }
    let p =
        InclusionProof::<Sha256>::try_from_bytes(proof.to_vec()).map_err(|_| LogError::BadProof)?;
    head.root_hash()
        .verify_inclusion(&e.encode(), idx, &p)
        .map_err(|_| LogError::BadProof)
}

/// Checks that `old` is a prefix of `new` (same log; signatures are the caller's).
pub fn verify_consistency(old: &TreeHead, new: &TreeHead, proof: &[u8]) -> Result<(), LogError> {
    // As in `verify_inclusion`: no head of a real log is larger than MAX_ENTRIES.
    if old.size > MAX_ENTRIES as u64 || new.size > MAX_ENTRIES as u64 {
        return Err(LogError::BadProof);
    }
    if old.size == new.size {
        return if old.root == new.root {
            Ok(())
        } else {
            Err(LogError::BadProof)
        };
    }
    let p = ConsistencyProof::<Sha256>::try_from_bytes(proof.to_vec())
        .map_err(|_| LogError::BadProof)?;
    new.root_hash()
        .verify_consistency(&old.root_hash(), &p)
        .map_err(|_| LogError::BadProof)
}

/// Two heads of one log, both validly signed by its signer, of equal size and different
/// roots: proof that the signer showed different logs to different readers. Anyone with
/// the signer's public key can check it again ([`SplitView::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitView {
    pub a: TreeHead,
    pub b: TreeHead,
}

impl SplitView {
    pub fn check(&self, signer: &VerifyingKey) -> bool {
        self.a.log_id == self.b.log_id
            && self.a.epoch == self.b.epoch
            && self.a.size == self.b.size
            && self.a.root != self.b.root
            && self.a.verify(signer).is_ok()
            && self.b.verify(signer).is_ok()
    }
}

/// What observing a gossiped head found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The first head of this log we hold, or a newer one proved consistent.
    Accepted,
    /// Not newer than what we hold, and consistent with it.
    Known,
    /// Newer, but no consistency proof was given: ask the log for one.
    NeedProof { from: u64, to: u64 },
    /// A consistency proof was given and does not verify.
    Inconsistent,
    /// Equal size, different root, both signed: evidence against the signer.
    Split(Box<SplitView>),
    /// The head's signature does not verify (changes nothing).
    BadSignature,
}

/// Holds the latest verified head of each log it watches and detects split views.
#[derive(Debug, Clone, Default)]
pub struct Witness {
    heads: BTreeMap<(u32, u32), TreeHead>,
    /// Every head seen, per (log, epoch, size): the first one kept (to catch equal-size
    /// forks against any size we saw, not only the latest).
    by_size: BTreeMap<(u32, u32, u64), TreeHead>,
    /// The largest validly signed head seen per log (proved or not): what we gossip on, so
    /// readers shown different heads meet them.
    recent: BTreeMap<(u32, u32), TreeHead>,
    pub evidence: Vec<SplitView>,
}

/// Heads remembered per log by size, at most (oldest sizes forgotten first).
pub const MAX_SIZES_KEPT: usize = 256;

impl Witness {
    /// Entries held, per structure (see [`crate::Node::footprint`]).
    pub fn footprint(&self, out: &mut Vec<(&'static str, usize)>) {
        out.push(("witness.heads", self.heads.len()));
        out.push(("witness.by_size", self.by_size.len()));
        out.push(("witness.recent", self.recent.len()));
        out.push(("witness.evidence", self.evidence.len()));
    }
    /// The latest head we hold of `log_id` (its newest epoch).
    pub fn latest(&self, log_id: u32) -> Option<&TreeHead> {
        self.heads
            .range((log_id, 0)..=(log_id, u32::MAX))
            .next_back()
            .map(|(_, h)| h)
    }

    /// Every log's largest validly signed head we saw (per epoch), in log order: the
    /// heads to gossip on.
    pub fn heads(&self) -> impl Iterator<Item = &TreeHead> + '_ {
        self.recent.values()
    }

    /// Observes head `h` from the signer with key `signer`; `proof` is a consistency proof
    /// from our latest head of that log to `h` (when `h` is larger).
    pub fn observe(
        &mut self,
        h: &TreeHead,
        signer: &VerifyingKey,
        proof: Option<&[u8]>,
    ) -> Observation {
        if h.verify(signer).is_err() {
            return Observation::BadSignature;
        }
        let log = (h.log_id, h.epoch);
        if self.recent.get(&log).is_none_or(|r| h.size > r.size) {
            self.recent.insert(log, *h);
        }
        if let Some(seen) = self.by_size.get(&(h.log_id, h.epoch, h.size)) {
            if seen.root != h.root {
                let s = SplitView { a: *seen, b: *h };
                self.evidence.push(s);
                return Observation::Split(Box::new(s));
            }
        } else {
            self.by_size.insert((h.log_id, h.epoch, h.size), *h);
            let range = (h.log_id, h.epoch, 0)..=(h.log_id, h.epoch, u64::MAX);
            if self.by_size.range(range.clone()).count() > MAX_SIZES_KEPT {
                let oldest = self.by_size.range(range).next().map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.by_size.remove(&k);
                }
            }
        }
        let Some(cur) = self.heads.get(&log).copied() else {
            self.heads.insert(log, *h);
            return Observation::Accepted;
        };
        if h.size <= cur.size {
            return Observation::Known;
        }
        let Some(p) = proof else {
            return Observation::NeedProof {
                from: cur.size,
                to: h.size,
            };
        };
        if cur.size == 0 || verify_consistency(&cur, h, p).is_ok() {
            self.heads.insert(log, *h);
            Observation::Accepted
        } else {
            Observation::Inconsistent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn entry(i: u32) -> Entry {
        Entry {
            kind: EntryKind::Certificate,
            subject: i,
            body: format!("key of {i}").into_bytes(),
        }
    }

    fn log(n: u32) -> Log {
        let mut l = Log::new();
        for i in 0..n {
            l.append(&entry(i)).unwrap();
        }
        l
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    /// Found by the `log_decode` fuzz target: a decoded head claiming 2^64 - 1 entries sent
    /// ct-merkle's inclusion check into an endless loop (an overflow panic with overflow
    /// checks on); such heads are refused before ct-merkle sees them, and so are indices
    /// past a head's size and oversized heads in a consistency check.
    #[test]
    fn fuzz_head_claiming_more_entries_than_a_log_holds_is_refused_not_a_hang() {
        let l = log(3);
        let mut h = l.head(1, 5, &key());
        let e = entry(0);
        let p = l.prove_inclusion(0).unwrap();
        assert_eq!(verify_inclusion(&h, &e, 0, &p), Ok(()));
        assert_eq!(verify_inclusion(&h, &e, 3, &p), Err(LogError::BadProof));
        for size in [MAX_ENTRIES as u64 + 1, 1 << 63, (1 << 63) + 1, u64::MAX] {
            h.size = size;
            for idx in [0, 1 << 62, (1 << 63) + 1, size - 1] {
                assert_eq!(verify_inclusion(&h, &e, idx, &p), Err(LogError::BadProof));
            }
            let small = l.head(1, 5, &key());
            assert_eq!(verify_consistency(&small, &h, &[]), Err(LogError::BadProof));
            assert_eq!(verify_consistency(&h, &small, &[]), Err(LogError::BadProof));
        }
    }

    #[test]
    fn leaves_and_nodes_are_hashed_apart() {
        // RFC 6962 §2.1: MTH({d0}) = SHA-256(0x00 ‖ d0); MTH of two = SHA-256(0x01 ‖ l ‖ r).
        let l = log(1);
        assert_eq!(l.root(), entry(0).leaf_hash());
        let l2 = log(2);
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(entry(0).leaf_hash());
        h.update(entry(1).leaf_hash());
        let want: Hash = h.finalize().into();
        assert_eq!(l2.root(), want);
        assert_ne!(l2.root(), l.root());
    }

    #[test]
    fn inclusion_proofs_check_and_tampering_fails() {
        let l = log(13);
        let h = l.head(1, 5, &key());
        for i in 0..13 {
            let p = l.prove_inclusion(i).unwrap();
            assert_eq!(verify_inclusion(&h, &entry(i as u32), i, &p), Ok(()));
            // Another entry, another index, a flipped proof byte: refused.
            assert!(verify_inclusion(&h, &entry(99), i, &p).is_err());
            assert!(verify_inclusion(&h, &entry(i as u32), (i + 1) % 13, &p).is_err());
            if !p.is_empty() {
                let mut q = p.clone();
                q[0] ^= 1;
                assert!(verify_inclusion(&h, &entry(i as u32), i, &q).is_err());
            }
        }
        assert_eq!(l.prove_inclusion(13), Err(LogError::OutOfRange));
    }

    #[test]
    fn consistency_proofs_check_prefixes_only() {
        let k = key();
        let mut l = log(5);
        let old = l.head(1, 1, &k);
        for i in 5..21 {
            l.append(&entry(i)).unwrap();
        }
        let new = l.head(1, 2, &k);
        let p = l.prove_consistency(5).unwrap();
        assert_eq!(verify_consistency(&old, &new, &p), Ok(()));
        // A tree that rewrote history: not a prefix.
        let mut other = Log::new();
        for i in (0..21).rev() {
            other.append(&entry(i)).unwrap();
        }
        let forged = other.head(1, 2, &k);
        assert!(verify_consistency(&old, &forged, &p).is_err());
        assert!(verify_consistency(&old, &forged, &other.prove_consistency(5).unwrap()).is_err());
    }

    #[test]
    fn a_split_view_is_evidence_anyone_can_check() {
        let k = key();
        let honest = log(8);
        let mut fork = log(7);
        fork.append(&entry(1000)).unwrap();
        let a = honest.head(3, 10, &k);
        let b = fork.head(3, 11, &k);
        let mut w = Witness::default();
        assert_eq!(
            w.observe(&a, &k.verifying_key(), None),
            Observation::Accepted
        );
        let Observation::Split(s) = w.observe(&b, &k.verifying_key(), None) else {
            panic!("split view not detected");
        };
        assert!(s.check(&k.verifying_key()));
        // Not evidence under another key, nor when both heads agree.
        assert!(!s.check(&SigningKey::from_bytes(&[8; 32]).verifying_key()));
        assert!(!SplitView { a, b: a }.check(&k.verifying_key()));
        // A head with a bad signature changes nothing.
        let mut bad = b;
        bad.sig[0] ^= 1;
        assert_eq!(
            w.observe(&bad, &k.verifying_key(), None),
            Observation::BadSignature
        );
        assert_eq!(w.evidence.len(), 1);
    }

    #[test]
    fn a_witness_accepts_growth_with_proof_and_catches_a_rewrite() {
        let k = key();
        let vk = k.verifying_key();
        let mut l = log(4);
        let mut w = Witness::default();
        assert_eq!(
            w.observe(&l.head(1, 1, &k), &vk, None),
            Observation::Accepted
        );
        for i in 4..9 {
            l.append(&entry(i)).unwrap();
        }
        let h = l.head(1, 2, &k);
        assert_eq!(
            w.observe(&h, &vk, None),
            Observation::NeedProof { from: 4, to: 9 }
        );
        let p = l.prove_consistency(4).unwrap();
        assert_eq!(w.observe(&h, &vk, Some(&p)), Observation::Accepted);
        assert_eq!(w.latest(1).map(|h| h.size), Some(9));
        // A larger head of a rewritten log, with the only proof its signer can give.
        let mut r = Log::new();
        for i in (0..12).rev() {
            r.append(&entry(i)).unwrap();
        }
        let rh = r.head(1, 3, &k);
        assert_eq!(
            w.observe(&rh, &vk, Some(&r.prove_consistency(9).unwrap())),
            Observation::Inconsistent
        );
    }

    #[test]
    fn merging_is_a_set_union_that_keeps_each_log_append_only() {
        let k = key();
        let mut a = log(3);
        let mut b = log(3);
        for i in 10..14 {
            a.append(&entry(i)).unwrap();
        }
        for i in 20..23 {
            b.append(&entry(i)).unwrap();
        }
        let (a0, b0) = (a.head(1, 1, &k), b.head(2, 1, &k));
        let (ea, eb): (Vec<Entry>, Vec<Entry>) = (a.entries().collect(), b.entries().collect());
        assert_eq!(a.merge(&eb).unwrap(), 3);
        assert_eq!(b.merge(&ea).unwrap(), 4);
        // Idempotent.
        assert_eq!(a.merge(&eb).unwrap(), 0);
        let set = |l: &Log| {
            let mut v: Vec<Entry> = l.entries().collect();
            v.sort();
            v
        };
        assert_eq!(set(&a), set(&b));
        assert_eq!(a.len(), 10);
        // Each replica's old head is a prefix of its new one.
        let (a1, b1) = (a.head(1, 2, &k), b.head(2, 2, &k));
        assert_eq!(
            verify_consistency(&a0, &a1, &a.prove_consistency(a0.size).unwrap()),
            Ok(())
        );
        assert_eq!(
            verify_consistency(&b0, &b1, &b.prove_consistency(b0.size).unwrap()),
            Ok(())
        );
        // The same entry appended twice is one leaf.
        assert_eq!(a.append(&entry(0)).unwrap(), 0);
        assert_eq!(a.len(), 10);
    }

    #[test]
    fn codecs_round_trip() {
        let e = entry(42);
        assert_eq!(Entry::decode(&e.encode()), Ok(e));
        let h = log(3).head(9, 77, &key());
        assert_eq!(TreeHead::decode(&h.encode()), Ok(h));
        assert_eq!(
            Entry::decode(&[9, 0, 0, 0, 0, 0, 0]),
            Err(LogError::UnknownKind(9))
        );
        assert_eq!(
            Entry::decode(&[1, 0, 0, 0, 0, 0, 5, 1]),
            Err(LogError::Truncated)
        );
        assert_eq!(
            Entry::decode(&[1, 0, 0, 0, 0, 0, 0, 1]),
            Err(LogError::Trailing)
        );
    }

    /// Fuzz-style, bounded: seeded random and mutated inputs to every decoder and proof
    /// checker of the log; none may panic.
    #[test]
    fn garbage_never_panics() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x17);
        let l = log(9);
        let h = l.head(1, 1, &key());
        let good_entry = entry(3).encode();
        let good_proof = l.prove_inclusion(3).unwrap();
        let good_cons = {
            let mut l2 = l.clone();
            l2.append(&entry(50)).unwrap();
            (l2.head(1, 2, &key()), l2.prove_consistency(9).unwrap())
        };
        let mut w = Witness::default();
        let vk = key().verifying_key();
        for i in 0..20_000 {
            let n = rng.gen_range(0..200);
            let mut b = vec![0u8; n];
            rng.fill_bytes(&mut b);
            // Half the time: a mutation of a valid input.
            if i % 2 == 0 {
                b = good_entry.clone();
                let k = rng.gen_range(0..b.len());
                b[k] ^= rng.r#gen::<u8>() | 1;
            }
            let _ = Entry::decode(&b);
            let _ = TreeHead::decode(&b);
            if let Ok(th) = TreeHead::decode(&h.encode()) {
                let mut th = th;
                th.size = rng.r#gen::<u64>() % 64;
                let _ = w.observe(&th, &vk, Some(&b));
            }
            let _ = verify_inclusion(&h, &entry(3), rng.gen_range(0..12), &b);
            let mut p = good_proof.clone();
            if !p.is_empty() {
                let k = rng.gen_range(0..p.len());
                p[k] ^= 1;
            }
            assert!(verify_inclusion(&h, &entry(3), 3, &p).is_err());
            let _ = verify_consistency(&h, &good_cons.0, &b);
        }
    }
}
