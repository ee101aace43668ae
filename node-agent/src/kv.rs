//! Cell-replicated key-value store: the causal layer (`crate::causal`) wired to the
//! overlay, following the recipe in `causal/mod.rs`.
//!
//! - put: HLC timestamp → `Store::local_put` (overwriting what this replica has seen of
//!   the key) → `CausalDelivery::send` → the message to every live cell member;
//! - receive: HLC update (a timestamp too far ahead is refused and counted) →
//!   `CausalDelivery::receive` → apply every delivered delta in causal order;
//! - repair (every `repair_interval`): send our delivered vector to one random member,
//!   which answers with up to `repair_batch` logged messages we lack, so lost broadcasts are
//!   repaired in causal order.
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

/// What handling a KV message produced: messages to send (to a node), and counters.
#[derive(Debug, Default)]
pub struct KvOut {
    pub sends: Vec<(u32, Vec<u8>)>,
    pub applied: u64,
    pub refused: Vec<&'static str>,
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
        let mut s = self.store.get(key).siblings;
        s.sort_by_key(|(dot, v)| (v.hlc, *dot));
        s.into_iter().map(|(_, v)| v.value).collect()
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
                out.refused.push("kv_malformed");
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
                        out.refused.push("kv_hlc_ahead");
                        return out;
                    }
                }
                match self.delivery.receive(m) {
                    Ok(Receipt::Delivered(ms)) => {
                        for d in ms {
                            match self.store.apply(&d.payload) {
                                Ok(_) => out.applied += 1,
                                Err(_) => out.refused.push("kv_store_refused"),
                            }
                        }
                    }
                    Ok(Receipt::Buffered) => {}
                    Ok(Receipt::Duplicate) => out.refused.push("kv_duplicate"),
                    Err(_) => out.refused.push("kv_delivery_refused"),
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
    }
}
