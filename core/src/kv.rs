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
//! Messages travel JSON-encoded inside `Payload::Kv` (one datagram each; a put whose
//! message does not fit is refused). Not wired yet: the slow digest anti-entropy for what
//! has left every retransmission log, session tokens for roaming clients, the object store.

use std::num::{NonZeroU64, NonZeroUsize};

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
    /// "My store holds these writes of yours" (each dot is in my context for its key): the
    /// writer counts the signed sender of this message as a holder. At most
    /// [`MAX_ACK_DOTS`] dots.
    Ack {
        dots: Vec<Dot>,
    },
}

/// Most dots one [`KvMsg::Ack`] carries (a longer one is refused as malformed).
pub const MAX_ACK_DOTS: usize = 32;

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
        }
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
