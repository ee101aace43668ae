//! Cell-replicated key-value store: the causal layer (`crate::causal`) wired to the
//! overlay, following the recipe in `causal/mod.rs`.
//!
//! - put: HLC timestamp → `Store::local_put` (overwriting what this replica has seen of
//!   the key) → `CausalDelivery::send` → the message to every live cell member;
//! - receive: HLC update (a timestamp too far ahead is refused and counted) →
//!   `CausalDelivery::receive` → apply every delivered delta in causal order;
//! - repair (every `repair_interval`): send our delivered vector to one random member,
//!   which answers with up to `repair_batch` logged messages we lack, so lost broadcasts are
//!   repaired in causal order;
//! - acknowledgement: a member that delivered a write (or receives one again) and holds it
//!   — its store's context for the key covers the write's dot — answers the writer with
//!   [`KvMsg::Ack`] naming the dots it holds. The node counts these for `cell` writes
//!   ([`Durability`]): a put is acknowledged to its client only once enough members hold it.
//!
//! - state transfer (issue 18's rollout waves): a replica boots empty and, until it has
//!   synced, asks one cell-mate per repair tick for its whole store ([`KvMsg::SyncRequest`]);
//!   a synced member answers with [`KvMsg::Sync`] parts (at most [`MAX_SYNC_PARTS`]
//!   datagrams), an unsynced one with [`KvMsg::Unsynced`]. A node's first boot
//!   ([`Replica::first_boot`], wire epoch 1) is synced from the start. The requester adopts the parts
//!   once it holds all of them and counts the sender's delivered vector as delivered
//!   ([`CausalDelivery::fast_forward`]), so broadcasts that depend on messages no log holds
//!   any more are delivered. When every active member said it is unsynced (a new cell), it
//!   counts as synced with nobody. A lying member could feed a syncing replica a false
//!   vector (it would skip writes): the source is trusted as a cell-mate, not checked.
//!
//! Messages travel JSON-encoded inside `Payload::Kv` (one datagram each; a put whose
//! message does not fit is refused). Not wired yet: the digest anti-entropy between synced
//! replicas for what has left every retransmission log, session tokens for roaming clients.

use std::num::{NonZeroU64, NonZeroUsize};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::causal::{
    CausalDelivery, CausalMessage, Delta, Dot, DotContext, HlcClock, NodeId, Receipt, Store,
    StoreLimits, VersionVector,
};
use crate::wire::MAX_BLOB;

/// A KV message on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvMsg {
    Broadcast(CausalMessage<Delta>),
    /// "This is what I have delivered; send me what I lack."
    Repair {
        delivered: VersionVector,
    },
    /// "I booted empty: send me your store" (the state transfer of a joining or rejoining
    /// replica; answered with [`KvMsg::Sync`] parts).
    SyncRequest,
    /// "I am waiting for a state transfer myself": the answer of a replica that has not
    /// synced (a booting cell, or a cell-mate replaced in the same wave). The requester
    /// asks another; once every active member said so, the cell is new and it syncs
    /// with nobody.
    Unsynced,
    /// Part `part` of `parts` of the sender's store, taken when its delivered vector was
    /// `delivered`. The receiver applies the parts once it holds all of them, then counts
    /// every message `delivered` covers as delivered ([`CausalDelivery::fast_forward`]).
    Sync(SyncPart),
    /// "My store holds these writes of yours" (each dot is in my context for its key): the
    /// writer counts the signed sender of this message as a holder. At most
    /// [`MAX_ACK_DOTS`] dots.
    Ack {
        dots: Vec<Dot>,
    },
}

/// Most dots one [`KvMsg::Ack`] carries (a longer one is refused as malformed).
pub const MAX_ACK_DOTS: usize = 32;

/// Most parts of one state transfer ([`KvMsg::Sync`]): a store larger than this many
/// datagrams is not sent whole (the answer is cut there and the requester keeps asking;
/// [`KvOut::sync_cut`] counts it). 256 × ~1.2 kB ≈ 300 kB per answer.
pub const MAX_SYNC_PARTS: u32 = 256;

/// One part of a state transfer ([`KvMsg::Sync`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncPart {
    pub delivered: VersionVector,
    pub part: u32,
    pub parts: u32,
    pub entries: Delta,
}

/// A state transfer being received: from whom, at which vector, the parts so far.
#[derive(Debug, Clone, Default)]
struct SyncIn {
    from: Option<(u32, VersionVector, u32)>,
    parts: BTreeMap<u32, Delta>,
}

/// When a put is acknowledged to its client.
///
/// - `local`: once this replica holds it. A crash of this node before the write reached
///   another member loses it.
/// - `cell`: once `f + 1` members of the cell hold it (this node included), where `N` is the
///   cell's configured size (the directory's, not the current membership view) and
///   `f = ⌊(N − 1) / 2⌋`, the crash faults a cell of `N` can tolerate (`N ≥ 2f + 1`). So a
///   `cell` write survives any `f` crashes of the cell's members (a cell of 3 or 4: one
///   other member holds it; of 8: three others). The configured size, not
///   the live view, because a writer cut off from its cell sees its view shrink and would
///   otherwise acknowledge a write that only it holds. A put that does not reach `f + 1`
///   holders within the node's acknowledgement timeout fails as *indeterminate*: it stands
///   locally and may still spread.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    Local,
    #[default]
    Cell,
}

impl Durability {
    pub fn as_str(&self) -> &'static str {
        match self {
            Durability::Local => "local",
            Durability::Cell => "cell",
        }
    }

    /// Holders a `cell` write needs in a cell of `n` configured members: `f + 1` with
    /// `f = ⌊(n − 1) / 2⌋` (1 for a cell of one or two).
    pub fn cell_quorum(n: usize) -> usize {
        n.saturating_sub(1) / 2 + 1
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "local" => Ok(Durability::Local),
            "cell" => Ok(Durability::Cell),
            other => Err(format!("durability {other:?}: want local or cell")),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a KV operation failed. Nothing changed in the replica.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("clock: {0}")]
    Clock(String),
    #[error("store: {0}")]
    Store(String),
    #[error("value too large for one datagram (message ~{0} bytes, max {MAX_BLOB})")]
    TooLarge(usize),
}

/// What a local write was, for clients that record histories: the dot the store gave it and
/// the context it overwrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub dot: Option<Dot>,
    pub context: DotContext,
}

/// Why a received KV message was refused (counted as direction `kv`, outcome `kv_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvRefusal {
    /// Not a KV message, or an ack with too many dots.
    Malformed,
    /// Its timestamp is too far ahead of our clock.
    HlcAhead,
    /// The store refused the delta.
    StoreRefused,
    /// Already delivered.
    Duplicate,
    /// Causal delivery refused it.
    DeliveryRefused,
}

/// What handling a KV message produced: messages to send (to a node), dots the sender
/// says it holds (from a [`KvMsg::Ack`]), and counters.
#[derive(Debug, Default)]
pub struct KvOut {
    pub sends: Vec<(u32, Vec<u8>)>,
    pub acked: Vec<Dot>,
    pub applied: u64,
    pub refused: Vec<KvRefusal>,
    /// A state transfer completed (this replica adopted a peer's store).
    pub synced: bool,
    /// An answer to a sync request was cut at [`MAX_SYNC_PARTS`] (or a register did not
    /// fit one datagram and was left out).
    pub sync_cut: bool,
}

/// The node a replica id belongs to (see [`replica_id`]).
pub fn node_of_replica(id: NodeId) -> u32 {
    (id & 0xffff_ffff) as u32
}

/// One node's replica.
///
/// Its identity in the causal layer (dots, version vectors, the causal broadcast) is not
/// the node id but the node id *and a boot epoch*: a restarted agent has lost its replica,
/// and reusing `(node, counter)` dots or broadcast sequence numbers its peers already hold
/// would make them drop its new writes as already seen (found by the crash scenarios'
/// checker). So every boot writes under a fresh replica id, `epoch << 32 | node`.
#[derive(Debug, Clone)]
pub struct Replica {
    me: NodeId,
    hlc: HlcClock,
    store: Store,
    delivery: CausalDelivery<Delta>,
    pub repair_batch: usize,
    /// Until a state transfer completes, this replica asks a cell-mate for its store
    /// instead of for logged messages (a boot starts empty; the messages that built its
    /// cell's state may have left every retransmission log).
    needs_sync: bool,
    sync_in: SyncIn,
    /// The peer the last sync request went to: only its parts are taken.
    sync_asked: Option<u32>,
    /// Members that answered [`KvMsg::Unsynced`] since this boot.
    unsynced_peers: std::collections::BTreeSet<u32>,
}

/// The causal-layer id of `node`'s replica in boot `epoch`.
pub fn replica_id(node: u32, epoch: u32) -> NodeId {
    (u64::from(epoch) << 32) | u64::from(node)
}

/// Largest accepted distance of a remote HLC ahead of ours: one emulated day. Agents start
/// their emulated clocks at their own process start, so this is a sanity bound only.
const MAX_OFFSET_NS: u64 = 86_400_000_000_000;

impl Replica {
    /// The replica of `node` in boot `epoch` (distinct for every boot of the node; the
    /// driver uses wall-clock milliseconds at start, the harness a restart count).
    pub fn new(node: u32, epoch: u32) -> Replica {
        let me = replica_id(node, epoch);
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Replica {
            me,
            hlc: HlcClock::new(NonZeroU64::new(MAX_OFFSET_NS).unwrap_or(NonZeroU64::MIN)),
            store: Store::new(me, StoreLimits::default()),
            delivery: CausalDelivery::new(me, nz(4096), nz(4096)).with_log_capacity(1024),
            repair_batch: 8,
            needs_sync: true,
            sync_in: SyncIn::default(),
            sync_asked: None,
            unsynced_peers: Default::default(),
        }
    }

    /// A node's first boot: its cell is as new as it is, there is nothing to transfer
    /// (it answers sync requests with its store from the start).
    pub fn first_boot(&mut self) {
        self.needs_sync = false;
        self.sync_asked = None;
    }

    /// Whether this replica still waits for a state transfer from a cell-mate.
    pub fn needs_sync(&self) -> bool {
        self.needs_sync
    }

    /// The periodic maintenance messages, given the cell's active members and a choice of
    /// one at random: a repair request to one member and, until a state transfer completed,
    /// a sync request to one that has not said it is unsynced itself. With every active
    /// member unsynced (or none active) the cell is new: this replica counts as synced
    /// with nobody.
    pub fn maintenance(
        &mut self,
        active: &[u32],
        choose: &mut impl FnMut(&[u32]) -> Option<u32>,
    ) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(peer) = choose(active) {
            out.push((peer, self.repair_request()));
        }
        if self.needs_sync {
            let ask: Vec<u32> = active
                .iter()
                .copied()
                .filter(|p| !self.unsynced_peers.contains(p))
                .collect();
            match choose(&ask) {
                Some(peer) => {
                    self.sync_asked = Some(peer);
                    out.push((
                        peer,
                        serde_json::to_vec(&KvMsg::SyncRequest).unwrap_or_default(),
                    ));
                }
                None => {
                    self.needs_sync = false;
                    self.sync_asked = None;
                }
            }
        }
        out
    }

    /// This replica's store as [`KvMsg::Sync`] parts of at most [`MAX_BLOB`] bytes each,
    /// and whether it had to be cut.
    fn sync_parts(&self) -> (Vec<Vec<u8>>, bool) {
        let delivered = self.delivery.delivered().clone();
        let encode = |part: u32, parts: u32, entries: &Delta| {
            serde_json::to_vec(&KvMsg::Sync(SyncPart {
                delivered: delivered.clone(),
                part,
                parts,
                entries: entries.clone(),
            }))
            .unwrap_or_default()
        };
        // Packed by measured size: the envelope (vector, part numbers) plus each entry.
        let envelope = encode(u32::MAX, u32::MAX, &Delta::default()).len();
        let mut chunks: Vec<Delta> = vec![Delta::default()];
        let mut size = envelope;
        let mut cut = false;
        for key in self.store.keys() {
            let Some(reg) = self.store.register(key) else {
                continue;
            };
            let one = serde_json::to_vec(&(key, reg)).map_or(usize::MAX, |b| b.len() + 1);
            if envelope.saturating_add(one) > MAX_BLOB {
                cut = true; // a register that fits no datagram: left out
                continue;
            }
            if size + one > MAX_BLOB {
                if chunks.len() as u32 >= MAX_SYNC_PARTS {
                    cut = true;
                    break;
                }
                chunks.push(Delta::default());
                size = envelope;
            }
            size += one;
            if let Some(last) = chunks.last_mut() {
                last.entries.insert(key.to_owned(), reg.clone());
            }
        }
        let parts = chunks.len() as u32;
        let out = chunks
            .iter()
            .enumerate()
            .map(|(i, d)| encode(i as u32, parts, d))
            .filter(|b| b.len() <= MAX_BLOB)
            .collect::<Vec<_>>();
        let cut = cut || out.len() as u32 != parts;
        (out, cut)
    }

    /// Takes one [`KvMsg::Sync`] part from `src`; once all are held, applies them and
    /// fast-forwards delivery.
    fn sync_part(&mut self, src: u32, p: SyncPart, now_ns: u64, out: &mut KvOut) {
        let SyncPart {
            delivered,
            part,
            parts,
            entries,
        } = p;
        if !self.needs_sync || self.sync_asked != Some(src) {
            return; // unasked (or already synced): ignored
        }
        if parts == 0 || part >= parts || parts > MAX_SYNC_PARTS {
            out.refused.push(KvRefusal::Malformed);
            return;
        }
        let from = (src, delivered, parts);
        if self.sync_in.from.as_ref() != Some(&from) {
            self.sync_in = SyncIn {
                from: Some(from),
                parts: BTreeMap::new(),
            };
        }
        self.sync_in.parts.insert(part, entries);
        if self.sync_in.parts.len() as u32 != parts {
            return;
        }
        let got = std::mem::take(&mut self.sync_in);
        let Some((_, vv, _)) = got.from else { return };
        // All or nothing: applied to a copy, adopted when every part applied.
        let mut next = self.store.clone();
        for chunk in got.parts.values() {
            if next.apply(chunk).is_err() {
                out.refused.push(KvRefusal::StoreRefused);
                return;
            }
        }
        self.store = next;
        if let Some(ts) = got.parts.values().filter_map(Delta::max_hlc).max() {
            // Keep our clock ahead of what we adopted (one too far ahead is left out, as a
            // broadcast's would be refused).
            let _ = self.hlc.update(now_ns, ts);
        }
        for m in self.delivery.fast_forward(&vv) {
            if self.store.apply(&m.payload).is_ok() {
                out.applied += 1;
            }
        }
        self.needs_sync = false;
        self.sync_asked = None;
        out.synced = true;
    }

    /// This boot's identity in the causal layer.
    pub fn id(&self) -> NodeId {
        self.me
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn delivered(&self) -> &VersionVector {
        self.delivery.delivered()
    }

    /// The resolved value of `key` (greatest (HLC, dot) among concurrent siblings).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).resolved().map(|v| v.value.clone())
    }

    /// Every live value of `key` (concurrent siblings of a multi-value register), in
    /// `(hlc, dot)` order, so the last is [`Replica::get`]'s. Empty if never written.
    pub fn siblings(&self, key: &str) -> Vec<Vec<u8>> {
        self.versions(key).0.into_iter().map(|(_, v)| v).collect()
    }

    /// [`Replica::siblings`] with each value's dot, and the key's context (every write this
    /// replica has seen of the key: held, or overwritten by a held one). What a history
    /// checker needs to tell a lost write from an overwritten one.
    pub fn versions(&self, key: &str) -> (Vec<(Dot, Vec<u8>)>, DotContext) {
        let r = self.store.get(key);
        let mut s = r.siblings;
        s.sort_by_key(|(dot, v)| (v.hlc, *dot));
        (
            s.into_iter().map(|(d, v)| (d, v.value)).collect(),
            r.context,
        )
    }

    /// True when this replica holds the write `dot` of `key` or a write that overwrote it.
    pub fn covers(&self, key: &str, dot: Dot) -> bool {
        self.store
            .register(key)
            .is_some_and(|r| r.context().contains(dot))
    }

    /// Local write; returns the encoded broadcast for the cell and what the write was: its
    /// dot and the context it overwrote (everything this replica had seen of the key).
    pub fn put(
        &mut self,
        now_ns: u64,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(Vec<u8>, Written), KvError> {
        // JSON spells bytes as decimal numbers (≤ 4 characters each) and the clock costs
        // ≤ ~32 characters per entry: refuse up front what cannot fit, so a refused put
        // changes nothing.
        let ctx = self.store.get(key).context;
        let estimate =
            4 * value.len() + 2 * key.len() + 32 * (self.delivery.delivered().len() + 1) + 256;
        if estimate > MAX_BLOB {
            return Err(KvError::TooLarge(estimate));
        }
        let ts = self
            .hlc
            .now(now_ns)
            .map_err(|e| KvError::Clock(e.to_string()))?;
        let delta = self
            .store
            .local_put(key, value, ts, &ctx)
            .map_err(|e| KvError::Store(e.to_string()))?;
        // The delta's register holds exactly the value this write created, under its dot.
        let dot = delta
            .entries
            .get(key)
            .and_then(|r| r.siblings().next())
            .map(|(d, _)| d);
        let msg = self.delivery.send(delta);
        let bytes = serde_json::to_vec(&KvMsg::Broadcast(msg))
            .map_err(|e| KvError::Store(e.to_string()))?;
        if bytes.len() > MAX_BLOB {
            // The estimate was wrong: the write stands locally and reaches peers only
            // through repair, which cannot carry it either. Say so.
            return Err(KvError::TooLarge(bytes.len()));
        }
        Ok((bytes, Written { dot, context: ctx }))
    }

    pub fn repair_request(&self) -> Vec<u8> {
        serde_json::to_vec(&KvMsg::Repair {
            delivered: self.delivery.delivered().clone(),
        })
        .unwrap_or_default()
    }

    /// Handles a KV message from `src`.
    pub fn receive(&mut self, now_ns: u64, src: u32, bytes: &[u8]) -> KvOut {
        let mut out = KvOut::default();
        let msg: KvMsg = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(_) => {
                out.refused.push(KvRefusal::Malformed);
                return out;
            }
        };
        match msg {
            KvMsg::Broadcast(m) => {
                if m.sender == self.me {
                    return out;
                }
                if let Some(ts) = m.payload.max_hlc() {
                    if self.hlc.update(now_ns, ts).is_err() {
                        out.refused.push(KvRefusal::HlcAhead);
                        return out;
                    }
                }
                // Writes this replica now holds, to acknowledge to their writers.
                let mut held: Vec<(String, Dot)> = Vec::new();
                let again = writes_of(&m.payload);
                match self.delivery.receive(m) {
                    Ok(Receipt::Delivered(ms)) => {
                        for d in ms {
                            match self.store.apply(&d.payload) {
                                Ok(_) => {
                                    out.applied += 1;
                                    held.extend(writes_of(&d.payload));
                                }
                                Err(_) => out.refused.push(KvRefusal::StoreRefused),
                            }
                        }
                    }
                    Ok(Receipt::Buffered) => {}
                    Ok(Receipt::Duplicate) => {
                        // A writer retransmits to members whose ack it lacks: ack again.
                        out.refused.push(KvRefusal::Duplicate);
                        held.extend(again);
                    }
                    Err(_) => out.refused.push(KvRefusal::DeliveryRefused),
                }
                self.acks_for(&held, &mut out);
            }
            KvMsg::Ack { dots } => {
                if dots.len() > MAX_ACK_DOTS {
                    out.refused.push(KvRefusal::Malformed);
                } else {
                    out.acked = dots;
                }
            }
            KvMsg::Unsynced => {
                if self.needs_sync && self.sync_asked == Some(src) {
                    self.unsynced_peers.insert(src);
                    self.sync_asked = None;
                }
            }
            KvMsg::SyncRequest if self.needs_sync => {
                let b = serde_json::to_vec(&KvMsg::Unsynced).unwrap_or_default();
                out.sends.push((src, b));
            }
            KvMsg::SyncRequest => {
                let (parts, cut) = self.sync_parts();
                out.sync_cut = cut;
                out.sends.extend(parts.into_iter().map(|b| (src, b)));
            }
            KvMsg::Sync(p) => self.sync_part(src, p, now_ns, &mut out),
            KvMsg::Repair { delivered } => {
                for m in self
                    .delivery
                    .missing_from(&delivered)
                    .take(self.repair_batch)
                {
                    if let Ok(b) = serde_json::to_vec(&KvMsg::Broadcast(m.clone())) {
                        if b.len() <= MAX_BLOB {
                            out.sends.push((src, b));
                        }
                    }
                }
            }
        }
        out
    }

    /// One [`KvMsg::Ack`] per writer for the writes in `held` this store covers.
    fn acks_for(&self, held: &[(String, Dot)], out: &mut KvOut) {
        let mut by_writer: std::collections::BTreeMap<u32, Vec<Dot>> = Default::default();
        for (key, dot) in held {
            if dot.node != self.me && self.covers(key, *dot) {
                by_writer
                    .entry(node_of_replica(dot.node))
                    .or_default()
                    .push(*dot);
            }
        }
        for (writer, dots) in by_writer {
            for chunk in dots.chunks(MAX_ACK_DOTS) {
                if let Ok(b) = serde_json::to_vec(&KvMsg::Ack {
                    dots: chunk.to_vec(),
                }) {
                    out.sends.push((writer, b));
                }
            }
        }
    }
}

/// The writes a delta carries: (key, dot) of every value in it.
fn writes_of(delta: &Delta) -> Vec<(String, Dot)> {
    delta
        .entries
        .iter()
        .flat_map(|(k, r)| r.siblings().map(move |(d, _)| (k.clone(), d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_reports_its_dot_and_the_context_it_overwrote() {
        let mut r = Replica::new(3, 7);
        let me = replica_id(3, 7);
        let (_, first) = r.put(10, "k", b"a".to_vec()).unwrap();
        assert_eq!(first.dot, Some(Dot::new(me, 1)));
        assert!(!first.context.contains(Dot::new(me, 1)), "nothing seen yet");
        let (_, second) = r.put(20, "k", b"b".to_vec()).unwrap();
        assert_eq!(second.dot, Some(Dot::new(me, 2)));
        assert!(
            second.context.contains(Dot::new(me, 1)),
            "overwrote the first"
        );
        assert_eq!(r.siblings("k"), vec![b"b".to_vec()]);
        let (versions, ctx) = r.versions("k");
        assert_eq!(versions, vec![(Dot::new(me, 2), b"b".to_vec())]);
        assert!(ctx.contains(Dot::new(me, 1)) && ctx.contains(Dot::new(me, 2)));
    }

    /// A replica that boots after its cell wrote more than every retransmission log holds
    /// adopts a cell-mate's store and then delivers new writes; by repair alone it could
    /// not (the first messages have left the log, and every later one depends on them).
    #[test]
    fn a_replica_booting_late_adopts_a_cell_mates_store_and_then_delivers_new_writes() {
        let mut a = Replica::new(1, 0);
        // a is alone in its cell: synced with nobody.
        assert!(a.maintenance(&[], &mut first).is_empty());
        assert!(!a.needs_sync());
        for i in 0..1100u32 {
            a.put(u64::from(i) + 1, &format!("key-{}", i % 700), vec![7; 40])
                .unwrap();
        }
        // By repair: b gets the oldest logged messages, which wait on ones no log holds.
        let mut b = Replica::new(2, 0);
        assert!(b.needs_sync());
        let repair = b.repair_request();
        let out = a.receive(2_000, 2, &repair);
        for (_, m) in &out.sends {
            assert_eq!(
                b.receive(2_001, 1, m).applied,
                0,
                "blocked on messages gone from the log"
            );
        }
        // By state transfer: b asks a, a answers in parts, b adopts them all.
        let ask = b.maintenance(&[1], &mut first);
        assert_eq!(ask.len(), 2, "a repair request and a sync request");
        let out = a.receive(3_000, 2, &ask[1].1);
        assert!(!out.sync_cut, "700 keys fit {MAX_SYNC_PARTS} parts");
        assert!(out.sends.len() > 1, "{} parts", out.sends.len());
        assert!(out
            .sends
            .iter()
            .all(|(to, m)| *to == 2 && m.len() <= MAX_BLOB));
        let n = out.sends.len();
        // A part from a node b did not ask is ignored; b syncs only when every part is in.
        assert!(!b.receive(3_001, 9, &out.sends[0].1).synced);
        for (k, (_, m)) in out.sends.iter().enumerate() {
            let got = b.receive(3_001, 1, m);
            assert_eq!(got.synced, k + 1 == n, "part {k} of {n}");
        }
        assert!(!b.needs_sync());
        assert_eq!(b.store().writes_seen(), a.store().writes_seen());
        assert_eq!(b.siblings("key-699"), vec![vec![7; 40]]);
        // A new write of a's is delivered at once (its clock covers all 1100).
        let (bytes, _) = a.put(4_000, "after", b"x".to_vec()).unwrap();
        assert_eq!(b.receive(4_001, 1, &bytes).applied, 1);
        assert_eq!(b.siblings("after"), vec![b"x".to_vec()]);
        // Once synced, the maintenance message is a repair request only.
        let again = b.maintenance(&[1], &mut first);
        assert_eq!(again.len(), 1);
        assert!(matches!(
            serde_json::from_slice::<KvMsg>(&again[0].1).unwrap(),
            KvMsg::Repair { .. }
        ));
    }

    fn first(p: &[u32]) -> Option<u32> {
        p.first().copied()
    }

    /// Replicas that boot together (a new cell, or two cell-mates replaced in one wave)
    /// answer each other "unsynced": a requester asks the others, and counts itself synced
    /// with nobody only once every active member said so.
    #[test]
    fn an_unsynced_member_is_not_a_sync_source_and_a_new_cell_syncs_with_nobody() {
        let mut a = Replica::new(1, 0);
        let mut b = Replica::new(2, 0);
        let mut c = Replica::new(3, 0);
        assert!(c.maintenance(&[], &mut first).is_empty()); // c: synced, alone
        c.put(5, "k", b"v".to_vec()).unwrap();
        // b asks a (unsynced): told so, asks c next and adopts c's store.
        let ask = b.maintenance(&[1, 3], &mut first);
        let reply = a.receive(10, 2, &ask[1].1);
        assert_eq!(reply.sends.len(), 1);
        b.receive(11, 1, &reply.sends[0].1);
        assert!(b.needs_sync(), "an unsynced member's answer does not sync");
        let ask = b.maintenance(&[1, 3], &mut first);
        assert_eq!(
            ask[1].0, 3,
            "asks the member that has not said it is unsynced"
        );
        for (_, m) in c.receive(20, 2, &ask[1].1).sends {
            b.receive(21, 3, &m);
        }
        assert!(!b.needs_sync());
        assert_eq!(b.siblings("k"), vec![b"v".to_vec()]);
        // a's only member (b, before b synced) is unsynced too: a new cell.
        let mut d = Replica::new(4, 0);
        let ask = a.maintenance(&[4], &mut first);
        let reply = d.receive(30, 1, &ask[1].1);
        a.receive(31, 4, &reply.sends[0].1);
        assert!(a.needs_sync());
        assert_eq!(a.maintenance(&[4], &mut first).len(), 1, "repair only");
        assert!(
            !a.needs_sync(),
            "every active member unsynced: synced with nobody"
        );
    }

    #[test]
    fn sync_parts_out_of_range_are_refused_and_change_nothing() {
        let mut b = Replica::new(2, 0);
        b.maintenance(&[1], &mut first);
        for (part, parts) in [(0, 0), (3, 3), (0, MAX_SYNC_PARTS + 1)] {
            let bad = serde_json::to_vec(&KvMsg::Sync(SyncPart {
                delivered: VersionVector::new(),
                part,
                parts,
                entries: Delta::default(),
            }))
            .unwrap();
            let out = b.receive(10, 1, &bad);
            assert_eq!(out.refused, vec![KvRefusal::Malformed], "{part}/{parts}");
            assert!(b.needs_sync());
        }
    }

    #[test]
    fn a_member_acknowledges_the_writes_it_holds_and_again_on_a_retransmission() {
        let mut a = Replica::new(1, 0);
        let mut b = Replica::new(2, 0);
        let (bytes, w) = a.put(10, "k", b"v".to_vec()).unwrap();
        let dot = w.dot.unwrap();
        let out = b.receive(20, 1, &bytes);
        assert_eq!(out.applied, 1);
        assert_eq!(out.sends.len(), 1, "{out:?}");
        let (to, ack) = &out.sends[0];
        assert_eq!(*to, 1, "to the writer's node");
        let back = a.receive(30, 2, ack);
        assert_eq!(back.acked, vec![dot]);
        // A retransmission is a duplicate for b, which acks again (the first ack was lost).
        let out = b.receive(40, 1, &bytes);
        assert_eq!(out.refused, vec![KvRefusal::Duplicate]);
        assert_eq!(a.receive(50, 2, &out.sends[0].1).acked, vec![dot]);
        // An ack naming too many dots is refused.
        let long = serde_json::to_vec(&KvMsg::Ack {
            dots: vec![dot; MAX_ACK_DOTS + 1],
        })
        .unwrap();
        let out = a.receive(60, 2, &long);
        assert!(out.acked.is_empty());
        assert_eq!(out.refused, vec![KvRefusal::Malformed]);
    }

    #[test]
    fn durability_parses_and_the_cell_quorum_is_f_plus_one() {
        assert_eq!("local".parse::<Durability>(), Ok(Durability::Local));
        assert_eq!("cell".parse::<Durability>(), Ok(Durability::Cell));
        assert!("disk"
            .parse::<Durability>()
            .unwrap_err()
            .contains("local or cell"));
        assert_eq!(Durability::default(), Durability::Cell);
        // f = ⌊(n − 1)/2⌋, f + 1 holders: n = 1 → 1, 3 → 2, 4 → 2, 5 → 3, 8 → 4.
        let q: Vec<usize> = [1, 2, 3, 4, 5, 8]
            .iter()
            .map(|n| Durability::cell_quorum(*n))
            .collect();
        assert_eq!(q, vec![1, 1, 2, 2, 3, 4]);
    }
}
