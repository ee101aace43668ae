//! Causal broadcast delivery (Birman, Schiper, Stephenson, "Lightweight Causal and Atomic
//! Group Multicast", ACM TOCS 1991; Schiper, Eggli, Sandoz 1989).
//!
//! Each broadcast carries the sender's vector clock with its own entry incremented. A
//! receiver delivers a message from `s` with clock `V` once it has delivered
//! `V[s] − 1` messages from `s` and at least `V[k]` from every other `k`: everything the
//! sender had delivered before sending. Until then the message waits in a bounded buffer.
//! Messages may arrive lost, duplicated and in any order; delivery order still respects
//! happened-before. Lost messages block their dependents until retransmitted —
//! [`CausalDelivery::blocked_on`] names the missing ones so the caller can ask for them.
//!
//! Lost messages are repaired from a bounded retransmission log of recent messages (sent
//! and delivered): peers exchange [`CausalDelivery::delivered`] vectors now and then, and
//! each sends what [`CausalDelivery::missing_from`] finds the other lacks; a node can also
//! ask for the exact ids [`CausalDelivery::blocked_on`] names ([`CausalDelivery::retransmit`]).
//! A message older than every log that held it is gone for this layer: the store's own
//! anti-entropy repairs the data, without the causal-order guarantee.
//!
//! The buffer is bounded: when it is full, a message that cannot be delivered immediately is
//! refused with [`DeliveryError::Overflow`] and nothing changes; the sender's retransmission
//! (or anti-entropy) brings it back later.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

use super::dvv::{Dot, NodeId, VersionVector};

/// A broadcast message: sender, its vector clock at send, and the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalMessage<P> {
    /// The broadcasting node.
    pub sender: NodeId,
    /// Sender's delivered vector at send time, with `clock[sender]` = this message's
    /// sequence number (≥ 1).
    pub clock: VersionVector,
    /// The payload.
    pub payload: P,
}

impl<P> CausalMessage<P> {
    /// The message's identity: `(sender, sequence number)`.
    pub fn id(&self) -> Dot {
        Dot::new(self.sender, self.clock.get(self.sender))
    }
}

/// What happened to a received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receipt<P> {
    /// Already delivered or already waiting; dropped (count it).
    Duplicate,
    /// Waiting for messages it depends on.
    Buffered,
    /// Delivered, together with any waiting messages it unblocked: in a causal order.
    Delivered(Vec<CausalMessage<P>>),
}

/// Why a message was refused. In every case the buffer is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The message cannot be delivered yet and the buffer is full.
    #[error("causal delivery buffer full ({max} messages); message {sender}:{seq} refused")]
    Overflow {
        /// Sender.
        sender: NodeId,
        /// Sequence number.
        seq: u64,
        /// Capacity.
        max: usize,
    },
    /// `clock[sender]` is zero: the message does not count itself.
    #[error("message from {sender} carries no sequence number for its sender")]
    NoSequence {
        /// Sender.
        sender: NodeId,
    },
    /// The clock has more entries than allowed.
    #[error("message clock has {entries} entries (max {max})")]
    ClockTooLarge {
        /// Entries.
        entries: usize,
        /// Limit.
        max: usize,
    },
    /// A message claiming to be ours that we never sent (another node using our id, or our
    /// state was lost in a restart).
    #[error("message {seq} claims to come from this node, which has sent only {sent}")]
    ForgedSelf {
        /// Its sequence number.
        seq: u64,
        /// How many we sent.
        sent: u64,
    },
}

/// One node's causal delivery state. Call order: [`CausalDelivery::send`] to broadcast;
/// [`CausalDelivery::receive`] for every copy received from the network.
#[derive(Clone, Debug)]
pub struct CausalDelivery<P> {
    me: NodeId,
    delivered: VersionVector,
    pending: BTreeMap<Dot, CausalMessage<P>>,
    max_pending: usize,
    max_clock_entries: usize,
    log: BTreeMap<Dot, CausalMessage<P>>,
    log_order: VecDeque<Dot>,
    max_log: usize,
}

impl<P: Clone> CausalDelivery<P> {
    /// A node `me` buffering at most `max_pending` undeliverable messages, accepting clocks
    /// of at most `max_clock_entries` entries (the size of the broadcast group). The
    /// retransmission log keeps the last `max_pending` messages; see
    /// [`CausalDelivery::with_log_capacity`].
    pub fn new(me: NodeId, max_pending: NonZeroUsize, max_clock_entries: NonZeroUsize) -> Self {
        Self {
            me,
            delivered: VersionVector::new(),
            pending: BTreeMap::new(),
            max_pending: max_pending.get(),
            max_clock_entries: max_clock_entries.get(),
            log: BTreeMap::new(),
            log_order: VecDeque::new(),
            max_log: max_pending.get(),
        }
    }

    /// Keep the last `max_log` sent or delivered messages for retransmission (0: none).
    /// Size it to cover a partition you want healed by this layer: messages per second of
    /// the group times the outage.
    pub fn with_log_capacity(mut self, max_log: usize) -> Self {
        self.max_log = max_log;
        while self.log_order.len() > max_log {
            if let Some(old) = self.log_order.pop_front() {
                self.log.remove(&old);
            }
        }
        self
    }

    /// A logged copy of message `id`, to resend to a peer that is blocked on it.
    pub fn retransmit(&self, id: Dot) -> Option<&CausalMessage<P>> {
        self.log.get(&id)
    }

    /// Logged messages a peer whose delivered vector is `peer_delivered` has not delivered,
    /// in id order. Whatever the peer lacks that has left the log is not listed.
    pub fn missing_from<'a>(
        &'a self,
        peer_delivered: &'a VersionVector,
    ) -> impl Iterator<Item = &'a CausalMessage<P>> + 'a {
        self.log
            .iter()
            .filter(move |(id, _)| !peer_delivered.contains(**id))
            .map(|(_, m)| m)
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Messages delivered so far, per sender (our own sends included).
    pub fn delivered(&self) -> &VersionVector {
        &self.delivered
    }

    /// Whether everything in `token` has been delivered here. A session token (the join of
    /// [`CausalDelivery::delivered`] at every replica a client talked to) lets a client move
    /// between replicas and stay causally consistent: serve it only where this holds.
    pub fn has_delivered(&self, token: &VersionVector) -> bool {
        self.delivered.dominates(token)
    }

    /// Messages waiting.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Stamp a broadcast of `payload`. It counts as delivered locally at once.
    pub fn send(&mut self, payload: P) -> CausalMessage<P> {
        self.delivered.increment(self.me);
        let msg = CausalMessage {
            sender: self.me,
            clock: self.delivered.clone(),
            payload,
        };
        self.remember(&msg);
        msg
    }

    /// Handle a received message; returns what became deliverable, in causal order.
    pub fn receive(&mut self, msg: CausalMessage<P>) -> Result<Receipt<P>, DeliveryError> {
        let id = msg.id();
        if id.counter == 0 {
            return Err(DeliveryError::NoSequence { sender: msg.sender });
        }
        if msg.clock.len() > self.max_clock_entries {
            return Err(DeliveryError::ClockTooLarge {
                entries: msg.clock.len(),
                max: self.max_clock_entries,
            });
        }
        if msg.sender == self.me {
            let sent = self.delivered.get(self.me);
            return if id.counter <= sent {
                Ok(Receipt::Duplicate)
            } else {
                Err(DeliveryError::ForgedSelf {
                    seq: id.counter,
                    sent,
                })
            };
        }
        if self.delivered.contains(id) || self.pending.contains_key(&id) {
            return Ok(Receipt::Duplicate);
        }
        if !self.deliverable(&msg) {
            if self.pending.len() >= self.max_pending {
                return Err(DeliveryError::Overflow {
                    sender: id.node,
                    seq: id.counter,
                    max: self.max_pending,
                });
            }
            self.pending.insert(id, msg);
            return Ok(Receipt::Buffered);
        }
        let mut out = vec![self.deliver(msg)];
        self.drain(&mut out);
        Ok(Receipt::Delivered(out))
    }

    /// Adopts a state snapshot taken at a peer whose delivered vector was `vv` (a replica
    /// that joined or rejoined empty is given the peer's store instead of the messages that
    /// built it, which may have left every log): counts every message `vv` covers as
    /// delivered, drops the waiting ones it covers, and returns those now deliverable, in
    /// causal order. The caller applies the snapshot's state first.
    pub fn fast_forward(&mut self, vv: &VersionVector) -> Vec<CausalMessage<P>> {
        let own = self.delivered.get(self.me);
        self.delivered.merge(vv);
        // Our own sends are ours to count: a peer cannot have seen more of them.
        if self.delivered.get(self.me) != own {
            let mut back: BTreeMap<NodeId, u64> = self.delivered.iter().collect();
            back.insert(self.me, own);
            self.delivered = back.into_iter().collect();
        }
        let covered: Vec<Dot> = self
            .pending
            .keys()
            .copied()
            .filter(|d| self.delivered.contains(*d))
            .collect();
        for d in covered {
            self.pending.remove(&d);
        }
        let mut out = Vec::new();
        self.drain(&mut out);
        out
    }

    /// Delivers every waiting message that has become deliverable, into `out`.
    fn drain(&mut self, out: &mut Vec<CausalMessage<P>>) {
        // Each delivery can unblock the next message of any sender; repeat until none is.
        loop {
            let senders: BTreeSet<NodeId> = self.pending.keys().map(|d| d.node).collect();
            let next = senders.into_iter().find_map(|s| {
                let candidate = Dot::new(s, self.delivered.get(s).saturating_add(1));
                self.pending
                    .get(&candidate)
                    .filter(|m| self.deliverable(m))
                    .map(|_| candidate)
            });
            match next.and_then(|id| self.pending.remove(&id)) {
                Some(m) => out.push(self.deliver(m)),
                None => break,
            }
        }
    }

    /// Messages the waiting ones depend on that have not arrived: for each sender we lag
    /// behind, the first message we lack. Ask their senders (or any peer) to retransmit.
    pub fn blocked_on(&self) -> Vec<Dot> {
        let mut wanted = VersionVector::new();
        for m in self.pending.values() {
            for (node, n) in m.clock.iter() {
                let needed = if node == m.sender { n - 1 } else { n };
                wanted.raise(node, needed);
            }
        }
        wanted
            .iter()
            .filter(|&(node, n)| n > self.delivered.get(node))
            .map(|(node, _)| Dot::new(node, self.delivered.get(node).saturating_add(1)))
            .filter(|d| !self.pending.contains_key(d))
            .collect()
    }

    fn deliverable(&self, m: &CausalMessage<P>) -> bool {
        m.clock.iter().all(|(node, n)| {
            if node == m.sender {
                n == self.delivered.get(node).saturating_add(1)
            } else {
                n <= self.delivered.get(node)
            }
        }) && m.clock.get(m.sender) > 0
    }

    fn deliver(&mut self, m: CausalMessage<P>) -> CausalMessage<P> {
        self.delivered.raise(m.sender, m.clock.get(m.sender));
        self.remember(&m);
        m
    }

    fn remember(&mut self, m: &CausalMessage<P>) {
        if self.max_log == 0 {
            return;
        }
        if self.log_order.len() >= self.max_log {
            if let Some(old) = self.log_order.pop_front() {
                self.log.remove(&old);
            }
        }
        self.log.insert(m.id(), m.clone());
        self.log_order.push_back(m.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(me: NodeId, max_pending: usize) -> CausalDelivery<&'static str> {
        CausalDelivery::new(
            me,
            NonZeroUsize::new(max_pending).unwrap(),
            NonZeroUsize::new(16).unwrap(),
        )
    }

    fn payloads(r: Receipt<&'static str>) -> Vec<&'static str> {
        match r {
            Receipt::Delivered(v) => v.into_iter().map(|m| m.payload).collect(),
            other => panic!("expected delivery, got {other:?}"),
        }
    }

    #[test]
    fn a_reply_waits_for_the_message_it_answers() {
        let (mut a, mut b, mut c) = (node(1, 8), node(2, 8), node(3, 8));
        let question = a.send("question");
        assert_eq!(
            payloads(b.receive(question.clone()).unwrap()),
            vec!["question"]
        );
        let answer = b.send("answer");
        // c hears the answer first: it must wait.
        assert_eq!(c.receive(answer.clone()).unwrap(), Receipt::Buffered);
        assert_eq!(c.blocked_on(), vec![Dot::new(1, 1)]);
        assert_eq!(
            payloads(c.receive(question.clone()).unwrap()),
            vec!["question", "answer"]
        );
        assert_eq!(c.receive(answer).unwrap(), Receipt::Duplicate);
        assert_eq!(c.receive(question).unwrap(), Receipt::Duplicate);
        assert_eq!(c.pending_len(), 0);
        assert!(c.blocked_on().is_empty());
    }

    #[test]
    fn lost_messages_are_repaired_from_the_log_and_old_ones_age_out() {
        let (mut a, mut b) = (node(1, 8).with_log_capacity(2), node(2, 8));
        let _lost1 = a.send("1");
        let _lost2 = a.send("2");
        let m3 = a.send("3");
        assert_eq!(
            a.retransmit(Dot::new(1, 1)),
            None,
            "aged out of a 2-message log"
        );
        assert_eq!(b.receive(m3).unwrap(), Receipt::Buffered);
        assert_eq!(b.blocked_on(), vec![Dot::new(1, 1)]);
        let missing: Vec<Dot> = a.missing_from(b.delivered()).map(|m| m.id()).collect();
        assert_eq!(missing, vec![Dot::new(1, 2), Dot::new(1, 3)]);
        // With a larger log the gap can be filled.
        let (mut a, mut b) = (node(1, 8), node(2, 8));
        let _lost = a.send("1");
        let m2 = a.send("2");
        assert_eq!(b.receive(m2).unwrap(), Receipt::Buffered);
        let again = a.retransmit(b.blocked_on()[0]).unwrap().clone();
        assert_eq!(payloads(b.receive(again).unwrap()), vec!["1", "2"]);
        assert_eq!(a.missing_from(b.delivered()).count(), 0);
        // b logged what it delivered, so it can serve a third node too.
        assert_eq!(b.missing_from(&VersionVector::new()).count(), 2);
    }

    #[test]
    fn fifo_per_sender() {
        let (mut a, mut b) = (node(1, 8), node(2, 8));
        let m1 = a.send("1");
        let m2 = a.send("2");
        let m3 = a.send("3");
        assert_eq!(b.receive(m3).unwrap(), Receipt::Buffered);
        assert_eq!(b.receive(m2).unwrap(), Receipt::Buffered);
        assert_eq!(payloads(b.receive(m1).unwrap()), vec!["1", "2", "3"]);
    }

    #[test]
    fn overflow_is_refused_without_changing_state_and_retry_succeeds() {
        let (mut a, mut b) = (node(1, 8), node(2, 1));
        let m1 = a.send("1");
        let m2 = a.send("2");
        let m3 = a.send("3");
        assert_eq!(b.receive(m2.clone()).unwrap(), Receipt::Buffered);
        assert_eq!(
            b.receive(m3.clone()),
            Err(DeliveryError::Overflow {
                sender: 1,
                seq: 3,
                max: 1
            })
        );
        assert_eq!(b.pending_len(), 1);
        // A deliverable message needs no buffer space even when the buffer is full.
        assert_eq!(payloads(b.receive(m1).unwrap()), vec!["1", "2"]);
        assert_eq!(payloads(b.receive(m3).unwrap()), vec!["3"]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut b = node(2, 4);
        let no_seq = CausalMessage {
            sender: 1,
            clock: VersionVector::new(),
            payload: "x",
        };
        assert_eq!(
            b.receive(no_seq),
            Err(DeliveryError::NoSequence { sender: 1 })
        );
        let forged = CausalMessage {
            sender: 2,
            clock: [(2, 1)].into_iter().collect(),
            payload: "x",
        };
        assert_eq!(
            b.receive(forged),
            Err(DeliveryError::ForgedSelf { seq: 1, sent: 0 })
        );
        let huge = CausalMessage {
            sender: 1,
            clock: (1..=17).map(|n| (n, 1)).collect(),
            payload: "x",
        };
        assert_eq!(
            b.receive(huge),
            Err(DeliveryError::ClockTooLarge {
                entries: 17,
                max: 16
            })
        );
        assert_eq!(b.pending_len(), 0);
    }
}
