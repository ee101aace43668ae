//! Heat leases granted through the cell's BFT log (issue 17's "full BFT protocols are used
//! only within small groups"; trust option `bft_leases`).
//!
//! Without it, "a lease is never held by two tiles" rests on the owner's bookkeeping (see
//! [`super::machine`]): a lying owner can offer one task to two tiles at once and both
//! take it. With it, an owner whose holder is in its own cell does not offer directly: it
//! submits a **grant** to the cell's agreed log ([`crate::trust::bft`]), every member
//! applies the decided grants in log order to the same [`LeaseTable`] with the same rule,
//! and the holder takes the lease only when its own log decides the grant and the table
//! accepts it. Two grants that overlap cannot both be accepted, so two tiles cannot hold
//! one task's lease at once, whatever the owner sends.
//!
//! **A grant** is a [`LeaseGrant`](crate::trust::log::EntryKind::LeaseGrant) log entry
//! whose subject is the owner, its body `terms holder start signature`:
//! - `terms`: the [`LeaseTerms`] (lease id, task id, resources, class, `expiry_ns`,
//!   `end_ns`), so the holder needs nothing but the decided entry;
//! - `holder`: the tile that is to run it; `start`: the owner's emulated time when it
//!   asked, ns (the lease runs over `[start, expiry)`);
//! - `signature`: the owner's, over a domain tag, the group id, the owner and the rest of
//!   the body. The BFT orders bytes any member may submit, so the grant carries its author:
//!   a grant signed by anyone but the owner named in it is refused by every member, and
//!   the owner must be the one whose id the lease and task ids carry (an owner mints both
//!   with its id in the high 32 bits), so nobody grants another's task.
//!
//! **The rule**, per task, in log order (all members alike):
//! - a grant for the task's current lease with the same holder is a **renewal**: the
//!   expiry becomes the later of the two (a replayed grant changes nothing);
//! - any other grant is rejected if it starts before the current lease's expiry
//!   (`start < expiry`): one lease at a time per task, and a lease id is never granted to
//!   a second task while it is current;
//! - otherwise it becomes the task's current lease.
//!
//! **Why the holders then never overlap.** A holder holds a lease only within what the
//! table accepted: it takes a new grant only if `start ≤ now` (its clock, the lab's shared
//! time base as in [`super::machine`]) and drops it at the accepted expiry; it extends only
//! on an accepted renewal. Accepted grants of one task have disjoint `[start, expiry)`
//! intervals, so their holders' holding times are disjoint too.
//!
//! **Bounds.** The table keeps at most [`MAX_GRANTS`] tasks; beyond, the lease that
//! expires first is forgotten and the table's **floor** rises to its expiry: from then on
//! every member rejects any grant that starts before the floor (a forgotten lease cannot
//! be overlapped by a grant the table no longer sees). Entries decode with bounded,
//! checked reads and are refused, never panicked on.
//!
//! **Stated limits.** Only placements inside the owner's cell use the log (the group is the
//! cell). A gateway placing a task into another cell offers directly as before: those
//! leases rest on the owner's honesty. A grant costs a BFT decision (a few link round
//! trips; the harness prints the figure), so a lease starts that much later and runs that
//! much shorter before its first renewal. A grant lost to a full BFT queue is lost as an
//! offer in a lost datagram is (the owner places the task again after its expiry).
//!
//! Sans-IO and deterministic: no clock, no randomness; maps iterate in order.

use std::collections::{BTreeMap, BTreeSet};

use super::msg::{LeaseTerms, TaskClass};
use crate::trust::bft::{Group, Sig};
use crate::trust::log::{Entry, EntryKind};
use crate::wire::SIG_LEN;

const D_GRANT: &[u8] = b"lightcone/lease-grant/v1";

/// Bytes of the encoded terms.
const TERMS_LEN: usize = 8 + 8 + 4 + 4 + 4 + 1 + 8 + 8;
/// Bytes of a grant's body.
pub const BODY_LEN: usize = TERMS_LEN + 4 + 8 + SIG_LEN;
/// Tasks the table keeps at most (see the module doc for what happens beyond).
pub const MAX_GRANTS: usize = 4096;

/// One owner's grant of a lease to a holder of its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub owner: u32,
    pub holder: u32,
    /// The owner's emulated time when it asked, ns.
    pub start_ns: u64,
    pub terms: LeaseTerms,
}

/// Why every member rejects a decided entry as a grant (the table is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("not a well-formed lease grant")]
    Malformed,
    #[error("owner or holder not a member of the group")]
    NotMember,
    #[error("not signed by the owner it names")]
    BadSignature,
    #[error("lease or task id not minted by the owner")]
    NotOwner,
    #[error("starts at or after its expiry")]
    Empty,
    #[error("starts before the table's floor (a forgotten lease may still run)")]
    BeforeFloor,
    #[error("the task's lease {lease:#x} is held by {holder} until {until_ns} ns")]
    Conflict {
        lease: u64,
        holder: u32,
        until_ns: u64,
    },
    #[error("the lease id is current for another task")]
    LeaseReused,
    #[error("a renewal that extends nothing (a replay)")]
    Unchanged,
}

/// What an accepted grant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new lease: the task's current one now.
    Granted(Grant),
    /// The current lease extended to `expiry_ns` (the grant's terms carry it).
    Renewed(Grant),
}

impl Outcome {
    pub fn grant(&self) -> &Grant {
        match self {
            Outcome::Granted(g) | Outcome::Renewed(g) => g,
        }
    }
}

impl Grant {
    fn body_unsigned(&self) -> Vec<u8> {
        let t = &self.terms;
        let mut b = Vec::with_capacity(BODY_LEN);
        b.extend_from_slice(&t.id.to_be_bytes());
        b.extend_from_slice(&t.task.to_be_bytes());
        b.extend_from_slice(&t.compute.to_be_bytes());
        b.extend_from_slice(&t.memory_mib.to_be_bytes());
        b.extend_from_slice(&t.bandwidth_mbps.to_be_bytes());
        b.push(match t.class {
            TaskClass::Hot => 0,
            TaskClass::Cold => 1,
        });
        b.extend_from_slice(&t.expiry_ns.to_be_bytes());
        b.extend_from_slice(&t.end_ns.to_be_bytes());
        b.extend_from_slice(&self.holder.to_be_bytes());
        b.extend_from_slice(&self.start_ns.to_be_bytes());
        b
    }

    fn signed_msg(&self, group: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(D_GRANT.len() + 8 + body.len());
        m.extend_from_slice(D_GRANT);
        m.extend_from_slice(&group.to_be_bytes());
        m.extend_from_slice(&self.owner.to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// The grant as a log entry (encoded) signed with `key`, ready to submit to the group.
    /// Only the owner's key makes an entry the group accepts.
    pub fn to_entry(&self, group: &Group, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        let mut body = self.body_unsigned();
        let sig = group.sign_bytes(key, &self.signed_msg(group.id, &body));
        body.extend_from_slice(&sig);
        Entry {
            kind: EntryKind::LeaseGrant,
            subject: self.owner,
            body,
        }
        .encode()
    }

    /// Reads a grant from a decided entry and checks it is the owner's: members, ids
    /// minted by the owner, the owner's signature. Bounded reads; never panics.
    pub fn from_entry(e: &Entry, group: &Group) -> Result<Grant, Rejected> {
        if e.kind != EntryKind::LeaseGrant || e.body.len() != BODY_LEN {
            return Err(Rejected::Malformed);
        }
        let b = &e.body;
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let class = match b[28] {
            0 => TaskClass::Hot,
            1 => TaskClass::Cold,
            _ => return Err(Rejected::Malformed),
        };
        let g = Grant {
            owner: e.subject,
            holder: u32_at(TERMS_LEN),
            start_ns: u64_at(TERMS_LEN + 4),
            terms: LeaseTerms {
                id: u64_at(0),
                task: u64_at(8),
                compute: u32_at(16),
                memory_mib: u32_at(20),
                bandwidth_mbps: u32_at(24),
                class,
                expiry_ns: u64_at(29),
                end_ns: u64_at(37),
            },
        };
        if !group.is_member(g.owner) || !group.is_member(g.holder) {
            return Err(Rejected::NotMember);
        }
        if g.terms.id >> 32 != u64::from(g.owner) || g.terms.task >> 32 != u64::from(g.owner) {
            return Err(Rejected::NotOwner);
        }
        let (unsigned, sig_bytes) = b.split_at(BODY_LEN - SIG_LEN);
        let mut sig: Sig = [0u8; SIG_LEN];
        sig.copy_from_slice(sig_bytes);
        group
            .verify_bytes(g.owner, &g.signed_msg(group.id, unsigned), &sig)
            .map_err(|_| Rejected::BadSignature)?;
        Ok(g)
    }
}

/// A task's current lease, as the log has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Current {
    lease: u64,
    holder: u32,
    start_ns: u64,
    expiry_ns: u64,
}

/// Counts of what the rule did with decided grants (never reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GrantCounters {
    pub granted: u64,
    pub renewed: u64,
    /// Overlapping a running lease of the task (or reusing a current lease id).
    pub conflicts: u64,
    /// Malformed, not the owner's, not members, empty or before the floor.
    pub invalid: u64,
    /// Renewals that extended nothing (replays).
    pub unchanged: u64,
    /// Leases forgotten to keep the table within [`MAX_GRANTS`].
    pub forgotten: u64,
}

/// The agreed lease table of a cell: every member that applies the same decided entries in
/// the same order holds an equal table (compare with `==`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    by_task: BTreeMap<u64, Current>,
    /// Current lease id → its task.
    by_lease: BTreeMap<u64, u64>,
    /// (expiry, task) of every current lease: what to forget first.
    by_expiry: BTreeSet<(u64, u64)>,
    floor_ns: u64,
    counters: GrantCounters,
}

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    pub fn counters(&self) -> GrantCounters {
        self.counters
    }

    /// Tasks with a lease in the table.
    pub fn len(&self) -> usize {
        self.by_task.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    /// Grants starting before this are rejected (0 until the table forgot a lease).
    pub fn floor_ns(&self) -> u64 {
        self.floor_ns
    }

    /// The task's current lease: (lease id, holder, expiry ns).
    pub fn current(&self, task: u64) -> Option<(u64, u32, u64)> {
        self.by_task
            .get(&task)
            .map(|c| (c.lease, c.holder, c.expiry_ns))
    }

    /// Applies one decided entry (in log order): decode, check it is the owner's, then the
    /// rule. An error says why every member rejects it; the table is unchanged then
    /// (beyond the counters).
    pub fn apply(&mut self, entry: &[u8], group: &Group) -> Result<Outcome, Rejected> {
        let g = Entry::decode(entry)
            .map_err(|_| Rejected::Malformed)
            .and_then(|e| Grant::from_entry(&e, group));
        match g {
            Ok(g) => self.apply_grant(g),
            Err(r) => {
                self.counters.invalid += 1;
                Err(r)
            }
        }
    }

    /// The rule, on a grant already checked to be its owner's.
    fn apply_grant(&mut self, g: Grant) -> Result<Outcome, Rejected> {
        let (lease, task) = (g.terms.id, g.terms.task);
        if g.start_ns >= g.terms.expiry_ns {
            self.counters.invalid += 1;
            return Err(Rejected::Empty);
        }
        if g.start_ns < self.floor_ns {
            self.counters.invalid += 1;
            return Err(Rejected::BeforeFloor);
        }
        if self.by_lease.get(&lease).is_some_and(|t| *t != task) {
            self.counters.conflicts += 1;
            return Err(Rejected::LeaseReused);
        }
        if let Some(c) = self.by_task.get(&task).copied() {
            if c.lease == lease && c.holder == g.holder {
                if g.terms.expiry_ns <= c.expiry_ns {
                    self.counters.unchanged += 1;
                    return Err(Rejected::Unchanged);
                }
                self.by_expiry.remove(&(c.expiry_ns, task));
                self.by_expiry.insert((g.terms.expiry_ns, task));
                self.by_task.insert(
                    task,
                    Current {
                        expiry_ns: g.terms.expiry_ns,
                        ..c
                    },
                );
                self.counters.renewed += 1;
                return Ok(Outcome::Renewed(g));
            }
            if g.start_ns < c.expiry_ns {
                self.counters.conflicts += 1;
                return Err(Rejected::Conflict {
                    lease: c.lease,
                    holder: c.holder,
                    until_ns: c.expiry_ns,
                });
            }
            self.by_lease.remove(&c.lease);
            self.by_expiry.remove(&(c.expiry_ns, task));
        }
        self.by_task.insert(
            task,
            Current {
                lease,
                holder: g.holder,
                start_ns: g.start_ns,
                expiry_ns: g.terms.expiry_ns,
            },
        );
        self.by_lease.insert(lease, task);
        self.by_expiry.insert((g.terms.expiry_ns, task));
        self.counters.granted += 1;
        while self.by_task.len() > MAX_GRANTS {
            let Some((expiry, t)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(c) = self.by_task.remove(&t) {
                self.by_lease.remove(&c.lease);
            }
            self.floor_ns = self.floor_ns.max(expiry);
            self.counters.forgotten += 1;
        }
        Ok(Outcome::Granted(g))
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
            3,
            keys.iter()
                .enumerate()
                .map(|(i, k)| (i as u32, k.verifying_key()))
                .collect(),
            Auth::TestDigest,
        )
        .unwrap();
        (g, keys)
    }

    /// Owner `owner`'s lease `n` of its task `task`, to `holder`, over `[start, expiry)`.
    fn grant(owner: u32, n: u32, task: u32, holder: u32, start: u64, expiry: u64) -> Grant {
        let o = u64::from(owner) << 32;
        Grant {
            owner,
            holder,
            start_ns: start,
            terms: LeaseTerms {
                id: o | u64::from(n),
                task: o | u64::from(task),
                compute: 4,
                memory_mib: 256,
                bandwidth_mbps: 0,
                class: TaskClass::Cold,
                expiry_ns: expiry,
                end_ns: 1_000,
            },
        }
    }

    fn signed(g: &Grant, grp: &Group, keys: &[SigningKey]) -> Vec<u8> {
        g.to_entry(grp, &keys[g.owner as usize])
    }

    #[test]
    fn a_grant_round_trips_through_its_entry_and_fits_a_bft_entry() {
        let (grp, keys) = group(4);
        let g = grant(1, 7, 2, 3, 10, 50);
        let e = signed(&g, &grp, &keys);
        assert!(e.len() <= crate::trust::bft::MAX_ENTRY, "{}", e.len());
        let back = Grant::from_entry(&Entry::decode(&e).unwrap(), &grp).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn a_grant_overlapping_the_running_lease_is_rejected_and_one_after_it_is_taken() {
        let (grp, keys) = group(4);
        let mut t = LeaseTable::new();
        let a = grant(1, 7, 2, 2, 10, 50);
        assert_eq!(
            t.apply(&signed(&a, &grp, &keys), &grp),
            Ok(Outcome::Granted(a))
        );
        // The same lease id to another tile (a double lease), and a new lease of the task,
        // both before lease 7's expiry: rejected.
        let twin = grant(1, 7, 2, 3, 10, 50);
        assert_eq!(
            t.apply(&signed(&twin, &grp, &keys), &grp),
            Err(Rejected::Conflict {
                lease: a.terms.id,
                holder: 2,
                until_ns: 50
            })
        );
        let early = grant(1, 8, 2, 3, 49, 90);
        assert!(matches!(
            t.apply(&signed(&early, &grp, &keys), &grp),
            Err(Rejected::Conflict { .. })
        ));
        assert_eq!(t.current(a.terms.task), Some((a.terms.id, 2, 50)));
        // Lease 7's id given to another task while current: rejected.
        let reuse = grant(1, 7, 5, 3, 60, 90);
        assert_eq!(
            t.apply(&signed(&reuse, &grp, &keys), &grp),
            Err(Rejected::LeaseReused)
        );
        // From its expiry on, another tile may get the task.
        let after = grant(1, 8, 2, 3, 50, 90);
        assert_eq!(
            t.apply(&signed(&after, &grp, &keys), &grp),
            Ok(Outcome::Granted(after))
        );
        assert_eq!(t.current(a.terms.task), Some((after.terms.id, 3, 90)));
        assert_eq!(t.counters().conflicts, 3);
    }

    #[test]
    fn a_renewal_by_the_same_holder_extends_and_a_replay_changes_nothing() {
        let (grp, keys) = group(4);
        let mut t = LeaseTable::new();
        let a = grant(1, 7, 2, 2, 10, 50);
        let a_bytes = signed(&a, &grp, &keys);
        t.apply(&a_bytes, &grp).unwrap();
        let renew = grant(1, 7, 2, 2, 30, 80);
        assert_eq!(
            t.apply(&signed(&renew, &grp, &keys), &grp),
            Ok(Outcome::Renewed(renew))
        );
        assert_eq!(t.current(a.terms.task), Some((a.terms.id, 2, 80)));
        // A grant to another tile starting within the renewed lease: rejected.
        let other = grant(1, 8, 2, 3, 60, 100);
        assert!(t.apply(&signed(&other, &grp, &keys), &grp).is_err());
        // Replays of decided grants (the first one, the renewal) change nothing.
        let before = t.clone();
        assert_eq!(t.apply(&a_bytes, &grp), Err(Rejected::Unchanged));
        assert_eq!(
            t.apply(&signed(&renew, &grp, &keys), &grp),
            Err(Rejected::Unchanged)
        );
        assert_eq!(t.by_task, before.by_task);
        assert_eq!(t.by_lease, before.by_lease);
        assert_eq!(t.by_expiry, before.by_expiry);
        assert_eq!(t.counters().unchanged, 2);
    }

    #[test]
    fn a_grant_by_anyone_but_the_owner_is_refused() {
        let (grp, keys) = group(4);
        let mut t = LeaseTable::new();
        // Member 3 signs a grant of owner 1's task, naming 1 as the owner.
        let g = grant(1, 7, 2, 3, 10, 50);
        let forged = g.to_entry(&grp, &keys[3]);
        assert_eq!(t.apply(&forged, &grp), Err(Rejected::BadSignature));
        // Member 3 grants owner 1's task in its own name (ids minted by 1).
        let mut theirs = g;
        theirs.owner = 3;
        assert_eq!(
            t.apply(&signed(&theirs, &grp, &keys), &grp),
            Err(Rejected::NotOwner)
        );
        // A holder outside the group, garbage, an empty lease.
        let stranger = grant(1, 7, 2, 9, 10, 50);
        assert_eq!(
            t.apply(&signed(&stranger, &grp, &keys), &grp),
            Err(Rejected::NotMember)
        );
        assert_eq!(t.apply(b"garbage", &grp), Err(Rejected::Malformed));
        let empty = grant(1, 7, 2, 2, 50, 50);
        assert_eq!(
            t.apply(&signed(&empty, &grp, &keys), &grp),
            Err(Rejected::Empty)
        );
        assert!(t.is_empty());
        assert_eq!(t.counters().invalid, 5);
        // The control: the owner's own grant is taken.
        assert!(t.apply(&signed(&g, &grp, &keys), &grp).is_ok());
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_grant_is_refused_without_panic() {
        let (grp, keys) = group(4);
        let e = signed(&grant(1, 7, 2, 3, 10, 50), &grp, &keys);
        let mut t = LeaseTable::new();
        for n in 0..e.len() {
            assert!(t.apply(&e[..n], &grp).is_err(), "truncated at {n}");
        }
        for i in 0..e.len() {
            let mut f = e.clone();
            f[i] ^= 0x01;
            // Flips in the header or body: refused (bad kind, length or signature).
            assert!(t.apply(&f, &grp).is_err(), "flip at {i}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_forgets_the_earliest_expiry_and_rejects_grants_before_it() {
        let (grp, keys) = group(4);
        let mut t = LeaseTable::new();
        for i in 0..=MAX_GRANTS as u32 {
            let g = grant(1, i + 1, i + 1, 2, 10, 100 + u64::from(i));
            t.apply_grant(g).unwrap();
        }
        assert_eq!(t.len(), MAX_GRANTS);
        assert_eq!(t.floor_ns(), 100, "the earliest expiry was forgotten");
        assert_eq!(t.counters().forgotten, 1);
        // The forgotten task cannot be granted again before its old expiry.
        let again = grant(1, 90_000, 1, 3, 99, 200);
        assert_eq!(
            t.apply(&signed(&again, &grp, &keys), &grp),
            Err(Rejected::BeforeFloor)
        );
        let later = grant(1, 90_000, 1, 3, 100, 200);
        assert!(t.apply(&signed(&later, &grp, &keys), &grp).is_ok());
    }
}
