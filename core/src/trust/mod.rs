//! Trust without a global authority (issue 17): a transparency log per cell ([`log`]) and
//! the authorities' threshold key ([`threshold`]), and small-group BFT among a cell's authorities
//! ([`bft`], with its deterministic multi-member harness [`bft_harness`]).

pub mod bft;
pub mod bft_harness;
pub mod log;
pub mod threshold;
pub mod verdicts;

use crate::time::Instant;
use crate::trust::log::{Entry, EntryKind, Log, Observation, TreeHead, Witness};
use ed25519_dalek::SigningKey;
use std::time::Duration;

/// A node's part in the logs of its cell (the watch's `log_heads`): its own log of the
/// quarantine verdicts it reached (it is that log's signer; log id = its node id, epoch =
/// its boot epoch), and a witness of the heads its cell mates gossip. Heads go to every
/// cell member every `every`: ours, and up to seven others' we hold, round-robin, so two
/// members shown different heads of one log meet them. A split view is evidence against
/// the log's signer ([`crate::watch::Reason::SplitView`]).
#[derive(Debug, Clone, Default)]
pub struct CellLog {
    pub log: Log,
    pub witness: Witness,
    cursor: usize,
    last_sent: Option<Instant>,
    /// Byzantine `split_log`: the other branch shown to odd-numbered readers.
    fork: Option<Log>,
}

/// Heads to send this round: our own (per reader parity, for a split signer) and others'.
pub struct HeadsDue {
    pub even: TreeHead,
    pub odd: TreeHead,
    pub others: Vec<TreeHead>,
}

impl CellLog {
    /// Records an entry in our log (already there: nothing changes).
    pub fn record(&mut self, e: &Entry) {
        // The log is bounded (`log::MAX_ENTRIES`); a full log records nothing more.
        let _ = self.log.append(e);
        if let Some(f) = self.fork.as_mut() {
            let _ = f.append(e);
        }
    }

    /// Starts (or ends) showing two branches of our log: one entry differs between them.
    pub fn set_split(&mut self, me: u32, on: bool) {
        if !on {
            self.fork = None;
            return;
        }
        if self.fork.is_some() {
            return;
        }
        let mut fork = self.log.clone();
        let e = |b: &[u8]| Entry {
            kind: EntryKind::QuarantineVerdict,
            subject: me,
            body: b.to_vec(),
        };
        let _ = fork.append(&e(b"branch b"));
        let _ = self.log.append(&e(b"branch a"));
        self.fork = Some(fork);
    }

    /// The heads to gossip, when `every` has passed since the last round.
    pub fn heads_due(
        &mut self,
        now: Instant,
        every: Duration,
        (me, epoch): (u32, u32),
        key: &SigningKey,
    ) -> Option<HeadsDue> {
        if self
            .last_sent
            .is_some_and(|t| now.saturating_since(t) < every)
        {
            return None;
        }
        self.last_sent = Some(now);
        let ts = now.as_nanos();
        let even = self.log.head_at(me, epoch, ts, key);
        let odd = self
            .fork
            .as_ref()
            .map_or(even, |f| f.head_at(me, epoch, ts, key));
        let all: Vec<TreeHead> = self
            .witness
            .heads()
            .filter(|h| h.log_id != me)
            .copied()
            .collect();
        let k = (crate::wire::MAX_TREE_HEADS - 1).min(all.len());
        let mut others = Vec::with_capacity(k);
        for i in 0..k {
            others.push(all[(self.cursor + i) % all.len()]);
        }
        self.cursor = self.cursor.wrapping_add(k);
        Some(HeadsDue { even, odd, others })
    }

    /// Observes gossiped heads; returns the signers caught showing a split view.
    pub fn observe(
        &mut self,
        me: u32,
        heads: &[TreeHead],
        key_of: impl Fn(u32) -> Option<ed25519_dalek::VerifyingKey>,
    ) -> Vec<u32> {
        let mut caught = Vec::new();
        for h in heads.iter().filter(|h| h.log_id != me) {
            let Some(key) = key_of(h.log_id) else {
                continue;
            };
            if let Observation::Split(_) = self.witness.observe(h, &key, None) {
                caught.push(h.log_id);
            }
        }
        caught
    }
}
