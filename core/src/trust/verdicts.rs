//! Quarantine verdicts decided by the cell's BFT group (issue 17: "full BFT protocols are
//! used only within small groups"; watch `bft_verdicts`).
//!
//! Without it, each member of a cell counts the accusations it hears and convicts once
//! `quorum` distinct accusers hold: members that heard different votes (a lost datagram, a
//! vote that lapsed a moment earlier here than there) can decide differently, and a
//! coalition can play on that. With it, a member's vote is an entry in the group's
//! agreed log ([`crate::trust::bft`]), and every member applies the same entries in the
//! same order with the same rule, so all honest members convict and re-admit alike.
//!
//! **A vote** is a [`QuarantineVerdict`](crate::trust::log::EntryKind::QuarantineVerdict)
//! log entry about the accused (`subject`), its body `op voter term seq signature`:
//! - `op`: [`Op::Accuse`] (the voter holds its own evidence), [`Op::Withdraw`] (its
//!   evidence lapsed), [`Op::Readmit`] (the voter's quarantine term of a convicted node
//!   is over and it holds no new evidence);
//! - `term`: how many times the accused was convicted before, by this log: a vote counts
//!   only in the term it names, so an old accusation cannot be topped up into a new quorum
//!   after a re-admission, and a replayed vote is an entry already decided (ignored);
//! - `seq`: the voter's own counter, so its later votes are new entries;
//! - `signature`: the voter's, over a domain tag, the group id, the subject and the rest of
//!   the body. The BFT orders entries it cannot attribute (any member may submit any
//!   bytes), so the vote carries its author's signature: a member that submits a vote in
//!   another's name gets an entry every member ignores.
//!
//! **The rule** every member applies, in log order, to valid votes (voter and subject
//! members of the group, voter ≠ subject, signature good, term current):
//! - not convicted: Accuse adds the voter to the accusers, Withdraw removes it; when the
//!   accusers reach the quorum the subject is **convicted** (at that slot);
//! - convicted: Readmit adds the voter to the re-admitters; when they reach the quorum
//!   the subject is **re-admitted**, its term goes up by one and both sets empty.
//!
//! **Quorum**: at least f + 1 of the group (f = ⌊(n−1)/3⌋), so f colluding members can
//! neither convict an honest member nor re-admit one of their own; n − f ≥ f + 1 honest
//! members can always do both. A watch quorum set higher is kept.
//!
//! Sans-IO and deterministic: no clock, no randomness; maps iterate in order.

use std::collections::{BTreeMap, BTreeSet};

use crate::trust::bft::{Group, Sig};
use crate::trust::log::{Entry, EntryKind};
use crate::wire::SIG_LEN;

const D_VERDICT: &[u8] = b"lightcone/verdict/v1";

/// Bytes of a vote's body.
pub const BODY_LEN: usize = 1 + 4 + 4 + 4 + SIG_LEN;

/// What a vote says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Accuse = 1,
    Withdraw = 2,
    Readmit = 3,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Accuse,
            2 => Op::Withdraw,
            3 => Op::Readmit,
            _ => return None,
        })
    }
}

/// One member's vote about `subject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub subject: u32,
    pub op: Op,
    pub voter: u32,
    pub term: u32,
    pub seq: u32,
}

impl Vote {
    fn signed_msg(&self, group: u32) -> Vec<u8> {
        let mut m = Vec::with_capacity(D_VERDICT.len() + 21);
        m.extend_from_slice(D_VERDICT);
        m.extend_from_slice(&group.to_be_bytes());
        m.extend_from_slice(&self.subject.to_be_bytes());
        m.push(self.op as u8);
        m.extend_from_slice(&self.voter.to_be_bytes());
        m.extend_from_slice(&self.term.to_be_bytes());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m
    }

    /// The vote as a signed log entry (encoded), ready to submit to the group.
    pub fn to_entry(&self, group: &Group, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        let sig = group.sign_bytes(key, &self.signed_msg(group.id));
        let mut body = Vec::with_capacity(BODY_LEN);
        body.push(self.op as u8);
        body.extend_from_slice(&self.voter.to_be_bytes());
        body.extend_from_slice(&self.term.to_be_bytes());
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.extend_from_slice(&sig);
        Entry {
            kind: EntryKind::QuarantineVerdict,
            subject: self.subject,
            body,
        }
        .encode()
    }

    /// Reads a vote from a decided entry and checks its signature. `None` for anything
    /// that is not a well-formed vote signed by its voter, a member of `group`.
    pub fn from_entry(e: &Entry, group: &Group) -> Option<Vote> {
        if e.kind != EntryKind::QuarantineVerdict || e.body.len() != BODY_LEN {
            return None;
        }
        let b = &e.body;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let v = Vote {
            subject: e.subject,
            op: Op::from_u8(b[0])?,
            voter: u32_at(1),
            term: u32_at(5),
            seq: u32_at(9),
        };
        let mut sig: Sig = [0u8; SIG_LEN];
        sig.copy_from_slice(&b[13..]);
        group
            .verify_bytes(v.voter, &v.signed_msg(group.id), &sig)
            .ok()?;
        Some(v)
    }
}

/// The `verdicts` section of `/state`: the agreed state as this member's log has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerdictView {
    /// Accusers (and re-admitters) that decide.
    pub quorum: usize,
    /// Entries of the group's log decided here (all kinds).
    pub decided: usize,
    /// Convicted members: their accusers (ascending) and the log slot of the conviction.
    pub convicted: BTreeMap<u32, (Vec<u32>, u64)>,
    /// Members with a standing accusation not (yet) a quorum, and its accusers.
    pub accused: BTreeMap<u32, Vec<u32>>,
    /// Per member convicted before: its current term (re-admissions so far).
    pub terms: BTreeMap<u32, u32>,
    pub applied: u64,
    pub invalid: u64,
    pub stale: u64,
}

/// What applying a decided entry changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `node` convicted by `accusers` (ascending) at log slot `slot`.
    Convicted {
        node: u32,
        accusers: Vec<u32>,
        slot: u64,
    },
    /// `node` re-admitted at log slot `slot`; it is now in term `term`.
    Readmitted { node: u32, term: u32, slot: u64 },
}

/// The agreed state of one accused member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Case {
    term: u32,
    accusers: BTreeSet<u32>,
    convicted_at: Option<u64>,
    readmitters: BTreeSet<u32>,
}

/// Counts of what the rule did with decided entries (for tests and `/state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounters {
    pub applied: u64,
    /// Not a vote, badly signed, or about / by a non-member.
    pub invalid: u64,
    /// A vote for a term that is over (or not begun).
    pub stale: u64,
}

/// The agreed verdict state of a group, and this member's own voting.
#[derive(Debug, Clone)]
pub struct Verdicts {
    me: u32,
    quorum: usize,
    cases: BTreeMap<u32, Case>,
    counters: VerdictCounters,
    /// Our next vote's `seq`.
    next_seq: u32,
    /// Our standing vote per subject in its current term (what we last submitted).
    ours: BTreeMap<u32, (u32, Op)>,
}

impl Verdicts {
    /// `quorum`: accusers (and re-admitters) that decide; raised to f + 1 of `group`.
    pub fn new(me: u32, group: &Group, quorum: usize) -> Verdicts {
        Verdicts {
            me,
            quorum: quorum.max(group.f + 1),
            cases: BTreeMap::new(),
            counters: VerdictCounters::default(),
            next_seq: 1,
            ours: BTreeMap::new(),
        }
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn counters(&self) -> VerdictCounters {
        self.counters
    }

    /// The subject's current term (convictions before this one).
    pub fn term(&self, node: u32) -> u32 {
        self.cases.get(&node).map_or(0, |c| c.term)
    }

    /// True while the log holds `node` convicted.
    pub fn is_convicted(&self, node: u32) -> bool {
        self.cases
            .get(&node)
            .is_some_and(|c| c.convicted_at.is_some())
    }

    /// Convicted nodes, ascending.
    pub fn convicted(&self) -> Vec<u32> {
        self.cases
            .iter()
            .filter(|(_, c)| c.convicted_at.is_some())
            .map(|(n, _)| *n)
            .collect()
    }

    /// The agreed accusers of `node` in its current term, ascending.
    pub fn accusers(&self, node: u32) -> Vec<u32> {
        self.cases
            .get(&node)
            .map(|c| c.accusers.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Our vote `op` about `subject`, as a vote to submit, unless it is already our
    /// standing vote in the subject's current term (a vote is submitted once; the BFT
    /// carries it to decision). Accuse and Withdraw replace each other; Readmit only
    /// about a convicted subject.
    pub fn vote(&mut self, subject: u32, op: Op) -> Option<Vote> {
        if subject == self.me {
            return None;
        }
        let term = self.term(subject);
        let convicted = self.is_convicted(subject);
        match op {
            Op::Readmit if !convicted => return None,
            Op::Accuse | Op::Withdraw if convicted => return None,
            // Nothing to withdraw: we never accused in this term.
            Op::Withdraw
                if self
                    .ours
                    .get(&subject)
                    .is_none_or(|(t, o)| *t != term || *o != Op::Accuse) =>
            {
                return None
            }
            _ => {}
        }
        if self.ours.get(&subject) == Some(&(term, op)) {
            return None;
        }
        self.ours.insert(subject, (term, op));
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Some(Vote {
            subject,
            op,
            voter: self.me,
            term,
            seq,
        })
    }

    /// Applies one decided entry (in log order) with the rule above.
    pub fn apply(&mut self, slot: u64, entry: &[u8], group: &Group) -> Option<Change> {
        let Some(v) = Entry::decode(entry)
            .ok()
            .and_then(|e| Vote::from_entry(&e, group))
            .filter(|v| v.voter != v.subject && group.is_member(v.subject))
        else {
            self.counters.invalid += 1;
            return None;
        };
        let q = self.quorum;
        let case = self.cases.entry(v.subject).or_default();
        if v.term != case.term {
            self.counters.stale += 1;
            return None;
        }
        self.counters.applied += 1;
        match (case.convicted_at.is_some(), v.op) {
            (false, Op::Accuse) => {
                case.accusers.insert(v.voter);
                if case.accusers.len() >= q {
                    case.convicted_at = Some(slot);
                    case.readmitters.clear();
                    return Some(Change::Convicted {
                        node: v.subject,
                        accusers: case.accusers.iter().copied().collect(),
                        slot,
                    });
                }
            }
            (false, Op::Withdraw) => {
                case.accusers.remove(&v.voter);
            }
            (true, Op::Readmit) => {
                case.readmitters.insert(v.voter);
                if case.readmitters.len() >= q {
                    case.term += 1;
                    case.accusers.clear();
                    case.readmitters.clear();
                    case.convicted_at = None;
                    return Some(Change::Readmitted {
                        node: v.subject,
                        term: case.term,
                        slot,
                    });
                }
            }
            // Accusing the convicted, withdrawing from them, re-admitting the free: no
            // change (they may be late votes of this term).
            _ => {}
        }
        None
    }

    /// The `/state` view; `decided`: how many entries the group's log decided here.
    pub fn view(&self, decided: usize) -> VerdictView {
        let mut v = VerdictView {
            quorum: self.quorum,
            decided,
            convicted: BTreeMap::new(),
            accused: BTreeMap::new(),
            terms: BTreeMap::new(),
            applied: self.counters.applied,
            invalid: self.counters.invalid,
            stale: self.counters.stale,
        };
        for (n, c) in &self.cases {
            let accusers: Vec<u32> = c.accusers.iter().copied().collect();
            match c.convicted_at {
                Some(slot) => {
                    v.convicted.insert(*n, (accusers, slot));
                }
                None if !accusers.is_empty() => {
                    v.accused.insert(*n, accusers);
                }
                None => {}
            }
            if c.term > 0 {
                v.terms.insert(*n, c.term);
            }
        }
        v
    }

    /// Entries held (see [`crate::Node::footprint`]).
    pub fn footprint(&self) -> usize {
        self.cases
            .values()
            .map(|c| 1 + c.accusers.len() + c.readmitters.len())
            .sum::<usize>()
            + self.ours.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Auth;
    use ed25519_dalek::SigningKey;

    fn group(n: u32) -> (Group, Vec<SigningKey>) {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let g = Group::new(
            7,
            keys.iter()
                .enumerate()
                .map(|(i, k)| (i as u32, k.verifying_key()))
                .collect(),
            Auth::TestDigest,
        )
        .unwrap();
        (g, keys)
    }

    fn entry(
        g: &Group,
        keys: &[SigningKey],
        voter: u32,
        subject: u32,
        op: Op,
        term: u32,
    ) -> Vec<u8> {
        Vote {
            subject,
            op,
            voter,
            term,
            seq: 1,
        }
        .to_entry(g, &keys[voter as usize])
    }

    #[test]
    fn f_accusers_do_not_convict_and_f_plus_one_do() {
        let (g, keys) = group(7); // f = 2
        let mut v = Verdicts::new(0, &g, 2);
        assert_eq!(v.quorum(), 3, "the quorum is raised to f + 1");
        assert_eq!(v.apply(1, &entry(&g, &keys, 1, 6, Op::Accuse, 0), &g), None);
        assert_eq!(v.apply(2, &entry(&g, &keys, 2, 6, Op::Accuse, 0), &g), None);
        assert!(!v.is_convicted(6));
        let c = v.apply(3, &entry(&g, &keys, 3, 6, Op::Accuse, 0), &g);
        assert_eq!(
            c,
            Some(Change::Convicted {
                node: 6,
                accusers: vec![1, 2, 3],
                slot: 3
            })
        );
        assert!(v.is_convicted(6));
    }

    #[test]
    fn a_withdrawn_vote_no_longer_counts() {
        let (g, keys) = group(4); // f = 1, quorum 2
        let mut v = Verdicts::new(0, &g, 2);
        v.apply(1, &entry(&g, &keys, 1, 3, Op::Accuse, 0), &g);
        v.apply(2, &entry(&g, &keys, 1, 3, Op::Withdraw, 0), &g);
        assert_eq!(v.apply(3, &entry(&g, &keys, 2, 3, Op::Accuse, 0), &g), None);
        assert_eq!(v.accusers(3), vec![2]);
    }

    #[test]
    fn a_vote_in_anothers_name_or_about_a_stranger_is_ignored() {
        let (g, keys) = group(4);
        let mut v = Verdicts::new(0, &g, 2);
        // Member 2 signs a vote that names member 1 as its voter.
        let forged = Vote {
            subject: 3,
            op: Op::Accuse,
            voter: 1,
            term: 0,
            seq: 1,
        }
        .to_entry(&g, &keys[2]);
        assert_eq!(v.apply(1, &forged, &g), None);
        assert_eq!(
            v.apply(2, &entry(&g, &keys, 1, 99, Op::Accuse, 0), &g),
            None
        );
        assert_eq!(v.apply(3, &entry(&g, &keys, 1, 1, Op::Accuse, 0), &g), None);
        assert_eq!(v.apply(4, b"garbage", &g), None);
        assert_eq!(v.counters().invalid, 4);
        assert!(v.accusers(3).is_empty());
        // The control: the same vote signed by its voter counts.
        v.apply(5, &entry(&g, &keys, 1, 3, Op::Accuse, 0), &g);
        assert_eq!(v.accusers(3), vec![1]);
    }

    #[test]
    fn readmission_takes_the_quorum_and_old_votes_do_not_carry_over() {
        let (g, keys) = group(4);
        let mut v = Verdicts::new(0, &g, 2);
        v.apply(1, &entry(&g, &keys, 1, 3, Op::Accuse, 0), &g);
        v.apply(2, &entry(&g, &keys, 2, 3, Op::Accuse, 0), &g);
        assert!(v.is_convicted(3));
        assert_eq!(
            v.apply(3, &entry(&g, &keys, 1, 3, Op::Readmit, 0), &g),
            None
        );
        assert_eq!(
            v.apply(4, &entry(&g, &keys, 2, 3, Op::Readmit, 0), &g),
            Some(Change::Readmitted {
                node: 3,
                term: 1,
                slot: 4
            })
        );
        assert!(!v.is_convicted(3));
        // A term-0 accusation decided late counts for nothing now.
        let late = Vote {
            subject: 3,
            op: Op::Accuse,
            voter: 0,
            term: 0,
            seq: 9,
        }
        .to_entry(&g, &keys[0]);
        assert_eq!(v.apply(5, &late, &g), None);
        assert_eq!(v.counters().stale, 1);
        assert!(v.accusers(3).is_empty());
    }

    #[test]
    fn our_votes_are_submitted_once_per_term_and_state() {
        let (g, keys) = group(4);
        let mut v = Verdicts::new(0, &g, 2);
        assert_eq!(v.vote(3, Op::Withdraw), None, "nothing to withdraw");
        assert_eq!(v.vote(3, Op::Readmit), None, "not convicted");
        let a = v.vote(3, Op::Accuse).expect("a first accusation");
        assert_eq!(v.vote(3, Op::Accuse), None, "already standing");
        assert_eq!(v.vote(0, Op::Accuse), None, "not about ourselves");
        let w = v.vote(3, Op::Withdraw).expect("a withdrawal");
        assert_ne!(a.seq, w.seq);
        let a2 = v.vote(3, Op::Accuse).expect("accuse again");
        assert_ne!(
            a.to_entry(&g, &keys[0]),
            a2.to_entry(&g, &keys[0]),
            "a new entry"
        );
    }
}
