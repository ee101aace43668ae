//! Small-group Byzantine fault tolerance (issue 17): a cell's authority group of n members,
//! tolerating f = ⌊(n−1)/3⌋ Byzantine ones, agrees on an ordered log of trust entries
//! (revocations, quarantine verdicts, certificate issues). Sans-IO: [`Replica::handle`],
//! [`Replica::submit`] and [`Replica::handle_timeout`] take the time as input and push
//! [`Out`] messages; nothing here reads a clock, a socket or OS randomness.
//!
//! **Protocol: Jolteon** (Gelashvili, Kokoris-Kogias, Sonnino, Spiegelman, Xiang, "Jolteon
//! and Ditto: Network-Adaptive Efficient Consensus with Asynchronous Fallback", FC 2022;
//! the same rules as DiemBFT v4): chained HotStuff with a two-chain commit and a
//! quadratic view change. Rounds have a round-robin leader. Written from the paper's
//! pseudo-code, no code copied.
//! - The leader of round r proposes a block that carries a quorum certificate (QC) for
//!   round r−1, or, after a failed round, extends the highest QC named in a timeout
//!   certificate (TC) for round r−1.
//! - A member votes for at most one block per round, and only if
//!   `block.round > highest_vote_round` and either `block.qc.round + 1 == block.round` or
//!   (`tc.round + 1 == block.round` and `block.qc.round ≥ max(tc.high_qc_rounds)`); votes
//!   go to the next round's leader, who forms the QC.
//! - When a QC forms for a block B whose own QC certifies its parent P in round
//!   `B.round − 1`, P and its ancestors are committed (the two-chain rule).
//! - A member whose round timer expires signs a timeout for the round carrying its highest
//!   QC and broadcasts it (again at every expiry, for lossy links); it votes no more in
//!   that round. A quorum of timeouts is a TC and moves everyone to the next round.
//!   Timers back off exponentially with the number of rounds since the last QC, so after
//!   GST honest members overlap in one round long enough for an honest leader
//!   (liveness after GST with a crashed or silent leader).
//!
//! **Quorum.** q = ⌊(n+f)/2⌋+1 (2f+1 when n = 3f+1): any two quorums share f+1 members,
//! so at least one honest one, who voted once per round. Safety argument (the paper's
//! Lemma 1–3): a committed block at round r has a QC at r and a QC on a child at r+1; an
//! honest member of the second quorum holds `high_qc.round ≥ r` before it times out of
//! r+1, so every TC at a round > r names a high QC ≥ r, and no block at a higher round
//! can be voted for unless it extends the committed one.
//!
//! **Signatures.** Proposals, votes and timeouts are signed with the member's Ed25519 key
//! (`ed25519-dalek`, as frames) under domain tags of their own, so a vote is never a
//! frame signature nor a vote of another group or round. A forged vote (non-member, bad
//! signature) is refused and counted; a replayed one is a vote for its own round and
//! block only, so it cannot be counted anywhere else. A leader's two signed proposals for
//! one round, or a member's two votes in one round, are kept as [`Evidence`].
//!
//! **Entries** are opaque bytes (≤ [`MAX_ENTRY`]); the group orders them, each once, and
//! the consumer (the trust store) checks each decided entry deterministically, so all
//! honest members reach the same state. An entry is decided at most once (by its hash).
//!
//! **Bounds.** Members ≤ [`MAX_MEMBERS`]; entries per block ≤ [`MAX_BATCH`]; pending
//! entries ≤ [`BftParams::max_pending`]; blocks kept ≤ [`BftParams::max_blocks`] (older
//! committed blocks are forgotten: a member more than that far behind would need a state
//! transfer, not built). On the wire (one datagram, [`crate::wire::MAX_PAYLOAD`]) a QC of
//! q signatures must fit: [`max_wire_members`] says up to which n a proposal with a full
//! entry does; larger groups (the 100-member figure) run in the harness only — they would
//! need an aggregated (threshold) QC or fragmentation, not built.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::time::Instant;
use crate::wire::{Auth, SIG_LEN};

pub type Hash = [u8; 32];
pub type Sig = [u8; SIG_LEN];

const D_BLOCK: &[u8] = b"lightcone/bft/block/v1";
const D_VOTE: &[u8] = b"lightcone/bft/vote/v1";
const D_TIMEOUT: &[u8] = b"lightcone/bft/timeout/v1";
const D_ENTRY: &[u8] = b"lightcone/bft/entry/v1";

/// Members of one group, at most.
pub const MAX_MEMBERS: usize = 128;
/// Bytes of one entry, at most.
pub const MAX_ENTRY: usize = 256;
/// Entries in one block, at most.
pub const MAX_BATCH: usize = 16;
/// Rounds ahead of ours whose timeouts we keep (a bound on memory a liar can fill).
const MAX_AHEAD: u64 = 64;

/// The genesis block's hash: every group's chain starts here, at round 0.
pub const GENESIS: Hash = [0u8; 32];

/// Why a message or a command was refused. Nothing is changed by a refused one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BftError {
    #[error("a group needs 1..={MAX_MEMBERS} members with keys, and this member among them")]
    BadGroup,
    #[error("malformed BFT message: {0}")]
    Malformed(&'static str),
    #[error("node {0} is not a member of the group")]
    NotMember(u32),
    #[error("bad signature by member {0}")]
    BadSignature(u32),
    #[error("invalid quorum certificate: {0}")]
    BadQc(&'static str),
    #[error("invalid timeout certificate: {0}")]
    BadTc(&'static str),
    #[error("invalid proposal: {0}")]
    BadProposal(&'static str),
    #[error("entry of {0} bytes (1..={MAX_ENTRY})")]
    EntrySize(usize),
    #[error("pending queue full ({0} entries)")]
    QueueFull(usize),
}

/// A quorum certificate: q members' votes for `block` in `round`. Votes are sorted by
/// member id, one each. The genesis QC (round 0) has no votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qc {
    pub round: u64,
    pub block: Hash,
    pub votes: Vec<(u32, Sig)>,
}

impl Qc {
    pub fn genesis() -> Qc {
        Qc {
            round: 0,
            block: GENESIS,
            votes: Vec::new(),
        }
    }
}

/// A timeout certificate: q members' signed timeouts for `round`, each with the round of
/// the highest QC its signer held. Sorted by member id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc {
    pub round: u64,
    pub entries: Vec<(u32, u64, Sig)>,
}

impl Tc {
    /// The highest QC round any signer named.
    pub fn high_qc_round(&self) -> u64 {
        self.entries.iter().map(|e| e.1).max().unwrap_or(0)
    }
}

/// A block: `qc` certifies its parent (`qc.block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub round: u64,
    pub author: u32,
    pub qc: Qc,
    pub payload: Vec<Vec<u8>>,
}

/// A signed timeout for `round`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    pub round: u64,
    pub author: u32,
    pub high_qc: Qc,
    pub sig: Sig,
}

/// A message between members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The leader's block for its round, signed by it.
    Propose {
        block: Block,
        sig: Sig,
    },
    Vote {
        round: u64,
        block: Hash,
        voter: u32,
        sig: Sig,
    },
    Timeout(Timeout),
    /// A TC, sent by the next leader before its proposal (so a proposal fits a datagram).
    Tc(Tc),
    /// An entry to order (sent to every member, so any leader can propose it).
    Submit(Vec<u8>),
    /// Asks for a block we lack (to commit its descendants).
    Fetch(Hash),
    /// A block asked for.
    Deliver(Block),
    /// A QC, sent to a member still timing out of a round we left.
    Sync(Qc),
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    To(u32, Msg),
    /// To every other member.
    All(Msg),
}

/// One decided entry: `slot` is its place in the group's log (0, 1, 2, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub slot: u64,
    pub round: u64,
    pub entry: Vec<u8>,
}

/// Proof that a member signed two conflicting things in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Two proposals by the round's leader.
    Equivocation {
        round: u64,
        author: u32,
        a: (Hash, Sig),
        b: (Hash, Sig),
    },
    /// Two votes by one member in one round.
    DoubleVote {
        round: u64,
        voter: u32,
        a: (Hash, Sig),
        b: (Hash, Sig),
    },
}

/// What a replica counted (never reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BftCounters {
    pub proposals: u64,
    pub votes_sent: u64,
    pub timeouts_sent: u64,
    pub qcs_formed: u64,
    pub tcs_formed: u64,
    pub committed_blocks: u64,
    /// Refused: bad signature (forged) or sender not a member.
    pub forged: u64,
    pub not_member: u64,
    pub malformed: u64,
    /// Invalid certificates or proposals from members.
    pub invalid: u64,
    pub equivocations: u64,
    /// Messages for rounds already passed (replays land here too).
    pub stale: u64,
    /// A commit that does not extend our committed chain. Impossible with ≤ f Byzantine
    /// members; counted (and refused) so a test of f+1 colluders can see the break.
    pub conflicting_commits: u64,
}

/// Tunables. Defaults: 1 s base round timer, 60 s cap, 4096 pending, 4096 blocks kept.
#[derive(Debug, Clone)]
pub struct BftParams {
    /// The round timer at the first round after a QC; doubles with every round since.
    /// Set it above a few link round trips (a round needs two one-way delays).
    pub base_timeout: Duration,
    pub max_timeout: Duration,
    pub max_pending: usize,
    pub max_blocks: usize,
}

impl Default for BftParams {
    fn default() -> Self {
        BftParams {
            base_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(60),
            max_pending: 4096,
            max_blocks: 4096,
        }
    }
}

/// The group: members (sorted), their keys, f and the quorum.
#[derive(Debug, Clone)]
pub struct Group {
    /// Binds every signature to one group (e.g. the cell's id).
    pub id: u32,
    members: Vec<u32>,
    keys: BTreeMap<u32, VerifyingKey>,
    /// A rotated member's previous key, still taken until it is retired (votes and QCs
    /// signed before the rotation stay valid for its grace; see [`Group::rekey`]).
    previous: BTreeMap<u32, VerifyingKey>,
    pub f: usize,
    pub quorum: usize,
    pub auth: Auth,
}

impl Group {
    /// A group of the members in `keys`. Errors if empty or above [`MAX_MEMBERS`].
    pub fn new(id: u32, keys: BTreeMap<u32, VerifyingKey>, auth: Auth) -> Result<Group, BftError> {
        let n = keys.len();
        if n == 0 || n > MAX_MEMBERS {
            return Err(BftError::BadGroup);
        }
        let f = (n - 1) / 3;
        Ok(Group {
            id,
            members: keys.keys().copied().collect(),
            keys,
            previous: BTreeMap::new(),
            f,
            quorum: (n + f) / 2 + 1,
            auth,
        })
    }

    pub fn members(&self) -> &[u32] {
        &self.members
    }

    pub fn is_member(&self, id: u32) -> bool {
        self.keys.contains_key(&id)
    }

    /// The leader of `round` (round robin).
    pub fn leader(&self, round: u64) -> u32 {
        let n = self.members.len() as u64;
        self.members[usize::try_from(round % n).unwrap_or(0)]
    }

    fn sign(&self, key: &SigningKey, m: &[u8]) -> Sig {
        match self.auth {
            Auth::Ed25519 => key.sign(m).to_bytes(),
            Auth::TestDigest => crate::wire::digest_sig(&key.verifying_key(), m),
            Auth::Modelled(s) => crate::wire::modelled_sig(&s, &key.verifying_key(), m),
        }
    }

    /// Member `who`'s key is now `key` (a key rotation, issue 17): signatures under its
    /// previous key are still taken until [`Group::retire`]. Not a member: nothing changes.
    pub fn rekey(&mut self, who: u32, key: VerifyingKey) {
        if let Some(old) = self.keys.get_mut(&who) {
            if *old != key {
                self.previous.insert(who, *old);
                *old = key;
            }
        }
    }

    /// Ends the grace of `who`'s previous key.
    pub fn retire(&mut self, who: u32) {
        self.previous.remove(&who);
    }

    fn verify(&self, who: u32, m: &[u8], sig: &Sig) -> Result<(), BftError> {
        let key = self.keys.get(&who).ok_or(BftError::NotMember(who))?;
        let check = |key: &VerifyingKey| match self.auth {
            Auth::Ed25519 => key.verify(m, &Signature::from_bytes(sig)).is_ok(),
            Auth::TestDigest => crate::wire::digest_sig(key, m) == *sig,
            Auth::Modelled(s) => crate::wire::modelled_sig(&s, key, m) == *sig,
        };
        let ok = check(key) || self.previous.get(&who).is_some_and(check);
        if ok {
            Ok(())
        } else {
            Err(BftError::BadSignature(who))
        }
    }

    /// Signs `m` as a member, with the group's authentication (for messages the group
    /// orders but does not sign itself, such as [`crate::trust::verdicts`] votes; give
    /// them a domain tag of their own).
    pub fn sign_bytes(&self, key: &SigningKey, m: &[u8]) -> Sig {
        self.sign(key, m)
    }

    /// Checks member `who`'s signature over `m` (see [`Group::sign_bytes`]).
    pub fn verify_bytes(&self, who: u32, m: &[u8], sig: &Sig) -> Result<(), BftError> {
        self.verify(who, m, sig)
    }

    /// The signed message of a vote.
    pub fn vote_msg(&self, round: u64, block: &Hash) -> Vec<u8> {
        let mut m = Vec::with_capacity(D_VOTE.len() + 44);
        m.extend_from_slice(D_VOTE);
        m.extend_from_slice(&self.id.to_be_bytes());
        m.extend_from_slice(&round.to_be_bytes());
        m.extend_from_slice(block);
        m
    }

    /// The signed message of a timeout.
    pub fn timeout_msg(&self, round: u64, high_qc_round: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(D_TIMEOUT.len() + 20);
        m.extend_from_slice(D_TIMEOUT);
        m.extend_from_slice(&self.id.to_be_bytes());
        m.extend_from_slice(&round.to_be_bytes());
        m.extend_from_slice(&high_qc_round.to_be_bytes());
        m
    }

    /// A block's hash (it does not cover the QC's signatures: two vote sets for one block
    /// certify the same thing).
    pub fn block_hash(&self, b: &Block) -> Hash {
        let mut h = Sha256::new();
        h.update(D_BLOCK);
        h.update(self.id.to_be_bytes());
        h.update(b.round.to_be_bytes());
        h.update(b.author.to_be_bytes());
        h.update(b.qc.round.to_be_bytes());
        h.update(b.qc.block);
        h.update((b.payload.len() as u32).to_be_bytes());
        for e in &b.payload {
            h.update((e.len() as u32).to_be_bytes());
            h.update(e);
        }
        h.finalize().into()
    }

    /// Signs a block as its author.
    pub fn sign_block(&self, key: &SigningKey, b: &Block) -> Sig {
        let h = self.block_hash(b);
        self.sign(key, &[D_BLOCK, &h[..]].concat())
    }

    /// Signs a vote.
    pub fn sign_vote(&self, key: &SigningKey, round: u64, block: &Hash) -> Sig {
        self.sign(key, &self.vote_msg(round, block))
    }

    /// Signs a timeout.
    pub fn sign_timeout(&self, key: &SigningKey, round: u64, high_qc_round: u64) -> Sig {
        self.sign(key, &self.timeout_msg(round, high_qc_round))
    }

    /// Checks a QC: q distinct members (sorted), each signature valid.
    pub fn check_qc(&self, qc: &Qc) -> Result<(), BftError> {
        if qc.round == 0 {
            return if qc.block == GENESIS && qc.votes.is_empty() {
                Ok(())
            } else {
                Err(BftError::BadQc("round 0 is genesis only"))
            };
        }
        if qc.votes.len() < self.quorum {
            return Err(BftError::BadQc("fewer votes than the quorum"));
        }
        if !qc.votes.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(BftError::BadQc("votes not sorted or repeated"));
        }
        let m = self.vote_msg(qc.round, &qc.block);
        for (who, sig) in &qc.votes {
            self.verify(*who, &m, sig)
                .map_err(|_| BftError::BadQc("a vote does not verify"))?;
        }
        Ok(())
    }

    /// Checks a TC: q distinct members (sorted), each signature valid.
    pub fn check_tc(&self, tc: &Tc) -> Result<(), BftError> {
        if tc.entries.len() < self.quorum {
            return Err(BftError::BadTc("fewer timeouts than the quorum"));
        }
        if !tc.entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(BftError::BadTc("timeouts not sorted or repeated"));
        }
        for (who, hq, sig) in &tc.entries {
            if *hq >= tc.round {
                return Err(BftError::BadTc("high QC round not below the TC's round"));
            }
            self.verify(*who, &self.timeout_msg(tc.round, *hq), sig)
                .map_err(|_| BftError::BadTc("a timeout does not verify"))?;
        }
        Ok(())
    }
}

/// The hash by which an entry is decided once.
pub fn entry_hash(e: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(D_ENTRY);
    h.update(e);
    h.finalize().into()
}

/// One member's consensus state.
#[derive(Debug, Clone)]
pub struct Replica {
    group: Group,
    me: u32,
    key: SigningKey,
    params: BftParams,
    round: u64,
    highest_vote_round: u64,
    high_qc: Qc,
    last_tc: Option<Tc>,
    proposed_round: u64,
    my_timeout: Option<Timeout>,
    blocks: BTreeMap<Hash, Block>,
    /// QCs already checked (round, block): a QC is verified once.
    checked_qcs: BTreeSet<(u64, Hash)>,
    votes: BTreeMap<(u64, Hash), BTreeMap<u32, Sig>>,
    /// Per round, each voter's first vote (double-vote evidence).
    voted: BTreeMap<(u64, u32), (Hash, Sig)>,
    timeouts: BTreeMap<u64, BTreeMap<u32, (u64, Sig)>>,
    proposals: BTreeMap<(u64, u32), (Hash, Sig)>,
    evidence: Vec<Evidence>,
    committed_tip: Hash,
    committed_round: u64,
    /// The highest block we know is committed but cannot yet link (ancestors missing).
    commit_goal: Option<Hash>,
    fetching: BTreeSet<Hash>,
    decided: Vec<Decision>,
    decided_set: BTreeSet<Hash>,
    pending: VecDeque<Vec<u8>>,
    pending_set: BTreeSet<Hash>,
    deadline: Option<Instant>,
    counters: BftCounters,
    /// Messages to ourselves (we are the next leader), handled before returning.
    local: VecDeque<Msg>,
}

impl Replica {
    /// Member `me` of `group`, signing with `key`.
    pub fn new(
        group: Group,
        me: u32,
        key: SigningKey,
        params: BftParams,
    ) -> Result<Replica, BftError> {
        if group.keys.get(&me) != Some(&key.verifying_key()) {
            return Err(BftError::BadGroup);
        }
        Ok(Replica {
            group,
            me,
            key,
            params,
            round: 1,
            highest_vote_round: 0,
            high_qc: Qc::genesis(),
            last_tc: None,
            proposed_round: 0,
            my_timeout: None,
            blocks: BTreeMap::new(),
            checked_qcs: BTreeSet::new(),
            votes: BTreeMap::new(),
            voted: BTreeMap::new(),
            timeouts: BTreeMap::new(),
            proposals: BTreeMap::new(),
            evidence: Vec::new(),
            committed_tip: GENESIS,
            committed_round: 0,
            commit_goal: None,
            fetching: BTreeSet::new(),
            decided: Vec::new(),
            decided_set: BTreeSet::new(),
            pending: VecDeque::new(),
            pending_set: BTreeSet::new(),
            deadline: None,
            counters: BftCounters::default(),
            local: VecDeque::new(),
        })
    }

    /// Member `who` rotated its key to `key` (see [`Group::rekey`]).
    pub fn rekey(&mut self, who: u32, key: VerifyingKey) {
        self.group.rekey(who, key);
    }

    /// Ends the grace of `who`'s previous key.
    pub fn retire(&mut self, who: u32) {
        self.group.retire(who);
    }

    /// We rotated our own key: sign with `key` from now on (the group takes it once
    /// [`Replica::rekey`] told it, as every member's node does on the certificate).
    pub fn set_signing_key(&mut self, key: SigningKey) {
        self.group.rekey(self.me, key.verifying_key());
        self.key = key;
    }

    // ---- getters ----

    pub fn id(&self) -> u32 {
        self.me
    }
    pub fn group(&self) -> &Group {
        &self.group
    }
    pub fn round(&self) -> u64 {
        self.round
    }
    /// The decided log, in slot order.
    pub fn decided(&self) -> &[Decision] {
        &self.decided
    }
    pub fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }
    pub fn counters(&self) -> BftCounters {
        self.counters
    }
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
    /// A one-line summary of the state, for test failure messages.
    pub fn debug_line(&self) -> String {
        format!(
            "member {} round {} high_qc {} voted {} committed {} decided {} pending {} fetching {} goal {:?} deadline {:?} {:?}",
            self.me,
            self.round,
            self.high_qc.round,
            self.highest_vote_round,
            self.committed_round,
            self.decided.len(),
            self.pending.len(),
            self.fetching.len(),
            self.commit_goal.map(|g| g[0]),
            self.deadline,
            self.counters
        )
    }

    /// When [`Replica::handle_timeout`] wants to be called (`None`: idle, nothing to order).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    // ---- commands and inputs ----

    /// Asks the group to order `entry` (sent to every member). An entry already decided
    /// or pending is accepted and changes nothing.
    pub fn submit(
        &mut self,
        now: Instant,
        entry: Vec<u8>,
        out: &mut Vec<Out>,
    ) -> Result<(), BftError> {
        self.add_pending(&entry)?;
        out.push(Out::All(Msg::Submit(entry)));
        self.arm(now);
        self.try_propose(out);
        self.drain_local(now, out);
        Ok(())
    }

    /// Decodes and handles a message from member `from` (the frame's authenticated
    /// sender). Errors leave the state unchanged (beyond counters).
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        from: u32,
        b: &[u8],
        out: &mut Vec<Out>,
    ) -> Result<(), BftError> {
        match Msg::decode(b) {
            Ok(m) => self.handle(now, from, m, out),
            Err(e) => {
                self.counters.malformed += 1;
                Err(e)
            }
        }
    }

    /// Handles a message from member `from`.
    pub fn handle(
        &mut self,
        now: Instant,
        from: u32,
        msg: Msg,
        out: &mut Vec<Out>,
    ) -> Result<(), BftError> {
        if !self.group.is_member(from) {
            self.counters.not_member += 1;
            return Err(BftError::NotMember(from));
        }
        let r = self.on_msg(now, from, msg, out);
        if let Err(e) = &r {
            match e {
                BftError::BadSignature(_) => self.counters.forged += 1,
                BftError::NotMember(_) => self.counters.not_member += 1,
                BftError::Malformed(_) | BftError::EntrySize(_) => self.counters.malformed += 1,
                BftError::QueueFull(_) => {}
                _ => self.counters.invalid += 1,
            }
        }
        self.drain_local(now, out);
        r
    }

    /// Fires the round timer if due: signs (or re-sends) our timeout for the round, and
    /// asks again for blocks still missing. A call before the deadline is a no-op.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Out>) {
        let Some(d) = self.deadline else { return };
        if now < d {
            return;
        }
        self.fire_timeout(now, out);
        self.drain_local(now, out);
    }

    fn fire_timeout(&mut self, now: Instant, out: &mut Vec<Out>) {
        let t = match &self.my_timeout {
            Some(t) if t.round == self.round => t.clone(),
            _ => {
                let sig = self
                    .group
                    .sign_timeout(&self.key, self.round, self.high_qc.round);
                let t = Timeout {
                    round: self.round,
                    author: self.me,
                    high_qc: self.high_qc.clone(),
                    sig,
                };
                // No vote in this round after timing out of it.
                self.highest_vote_round = self.highest_vote_round.max(self.round);
                self.my_timeout = Some(t.clone());
                self.record_timeout(&t);
                t
            }
        };
        self.counters.timeouts_sent += 1;
        out.push(Out::All(Msg::Timeout(t)));
        if let Some(tc) = &self.last_tc {
            if tc.round + 1 == self.round {
                out.push(Out::All(Msg::Tc(tc.clone())));
            }
        }
        for h in &self.fetching {
            out.push(Out::All(Msg::Fetch(*h)));
        }
        // Our pending entries again: a member that missed them (lost, cut off) may be
        // idle, and an idle group would never make the round we need.
        for e in self.pending.iter().take(MAX_BATCH) {
            out.push(Out::All(Msg::Submit(e.clone())));
        }
        self.deadline = Some(now + self.round_timer());
        self.maybe_form_tc(now, out);
    }

    /// Starts: arms the timer if there is work and proposes if we lead round 1.
    pub fn start(&mut self, now: Instant, out: &mut Vec<Out>) {
        self.arm(now);
        self.try_propose(out);
        self.drain_local(now, out);
    }

    // ---- internals ----

    /// Work is a pending entry, or an entry in a block not yet committed here (or a block
    /// we lack). An idle group sends nothing and arms no timer.
    fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.commit_goal.is_some() || self.uncommitted_payload()
    }

    fn uncommitted_payload(&self) -> bool {
        let mut cur = self.high_qc.block;
        let mut steps = 0;
        while cur != self.committed_tip && steps < 1024 {
            let Some(b) = self.blocks.get(&cur) else {
                return true;
            };
            if b.round <= self.committed_round {
                return false;
            }
            if !b.payload.is_empty() {
                return true;
            }
            cur = b.qc.block;
            steps += 1;
        }
        false
    }

    /// A leader proposes when there is work, or when its new QC is the one that commits
    /// a non-empty block (the others learn that QC only from the next proposal).
    fn should_propose(&self) -> bool {
        self.has_work()
            || self
                .blocks
                .get(&self.high_qc.block)
                .and_then(|b| self.blocks.get(&b.qc.block))
                .is_some_and(|p| !p.payload.is_empty())
    }

    fn round_timer(&self) -> Duration {
        let k = self.round.saturating_sub(self.high_qc.round + 1).min(16);
        let t = self.params.base_timeout.saturating_mul(1u32 << k);
        t.min(self.params.max_timeout)
    }

    /// Arms the round timer if there is work and it is not armed.
    fn arm(&mut self, now: Instant) {
        if self.deadline.is_none() && self.has_work() {
            self.deadline = Some(now + self.round_timer());
        }
    }

    fn add_pending(&mut self, entry: &[u8]) -> Result<bool, BftError> {
        if entry.is_empty() || entry.len() > MAX_ENTRY {
            return Err(BftError::EntrySize(entry.len()));
        }
        let h = entry_hash(entry);
        if self.decided_set.contains(&h) || self.pending_set.contains(&h) {
            return Ok(false);
        }
        if self.pending.len() >= self.params.max_pending {
            return Err(BftError::QueueFull(self.pending.len()));
        }
        self.pending_set.insert(h);
        self.pending.push_back(entry.to_vec());
        Ok(true)
    }

    fn send(&mut self, to: u32, m: Msg, out: &mut Vec<Out>) {
        if to == self.me {
            self.local.push_back(m);
        } else {
            out.push(Out::To(to, m));
        }
    }

    fn drain_local(&mut self, now: Instant, out: &mut Vec<Out>) {
        while let Some(m) = self.local.pop_front() {
            let me = self.me;
            let _ = self.on_msg(now, me, m, out);
        }
    }

    fn on_msg(
        &mut self,
        now: Instant,
        from: u32,
        msg: Msg,
        out: &mut Vec<Out>,
    ) -> Result<(), BftError> {
        match msg {
            Msg::Propose { block, sig } => self.on_propose(now, from, block, sig, out),
            Msg::Vote {
                round,
                block,
                voter,
                sig,
            } => self.on_vote(now, from, round, block, voter, sig, out),
            Msg::Timeout(t) => self.on_timeout_msg(now, from, t, out),
            Msg::Sync(qc) => {
                self.check_qc_cached(&qc)?;
                self.process_qc(now, qc, out);
                Ok(())
            }
            Msg::Tc(tc) => {
                self.process_tc(now, tc, out)?;
                Ok(())
            }
            Msg::Submit(e) => {
                if self.add_pending(&e)? {
                    self.arm(now);
                    self.try_propose(out);
                }
                Ok(())
            }
            Msg::Fetch(h) => {
                if let Some(b) = self.blocks.get(&h) {
                    let b = b.clone();
                    self.send(from, Msg::Deliver(b), out);
                }
                Ok(())
            }
            Msg::Deliver(b) => {
                let h = self.group.block_hash(&b);
                if !self.fetching.contains(&h) {
                    self.counters.stale += 1;
                    return Ok(());
                }
                self.check_block(&b)?;
                self.fetching.remove(&h);
                self.store_block(h, b);
                if let Some(g) = self.commit_goal {
                    self.commit(g, out);
                }
                let top = self.high_qc.block;
                self.commit_rule(top, out);
                Ok(())
            }
        }
    }

    fn check_qc_cached(&mut self, qc: &Qc) -> Result<(), BftError> {
        if qc.round == 0 || !self.checked_qcs.contains(&(qc.round, qc.block)) {
            self.group.check_qc(qc)?;
            if qc.round > 0 {
                self.checked_qcs.insert((qc.round, qc.block));
            }
        }
        Ok(())
    }

    /// A block's own validity (not whether we vote for it).
    fn check_block(&mut self, b: &Block) -> Result<(), BftError> {
        if !self.group.is_member(b.author) {
            return Err(BftError::NotMember(b.author));
        }
        if self.group.leader(b.round) != b.author {
            return Err(BftError::BadProposal("author is not the round's leader"));
        }
        if b.qc.round >= b.round {
            return Err(BftError::BadProposal("QC not below the block's round"));
        }
        if b.payload.len() > MAX_BATCH
            || b.payload
                .iter()
                .any(|e| e.is_empty() || e.len() > MAX_ENTRY)
        {
            return Err(BftError::BadProposal("payload out of bounds"));
        }
        self.check_qc_cached(&b.qc)
    }

    fn store_block(&mut self, h: Hash, b: Block) {
        self.blocks.insert(h, b);
        if self.blocks.len() > self.params.max_blocks {
            // Forget the oldest committed block (never one we may still need to link).
            let old = self
                .blocks
                .iter()
                .filter(|(_, b)| b.round < self.committed_round)
                .min_by_key(|(_, b)| b.round)
                .map(|(h, _)| *h);
            if let Some(o) = old {
                self.blocks.remove(&o);
            }
        }
    }

    fn on_propose(
        &mut self,
        now: Instant,
        from: u32,
        block: Block,
        sig: Sig,
        out: &mut Vec<Out>,
    ) -> Result<(), BftError> {
        if from != block.author {
            return Err(BftError::BadProposal("relayed by another member"));
        }
        let h = self.group.block_hash(&block);
        if from != self.me {
            self.group
                .verify(block.author, &[D_BLOCK, &h[..]].concat(), &sig)?;
        }
        self.check_block(&block)?;
        match self.proposals.get(&(block.round, block.author)) {
            Some((h0, s0)) if *h0 != h => {
                self.counters.equivocations += 1;
                self.evidence.push(Evidence::Equivocation {
                    round: block.round,
                    author: block.author,
                    a: (*h0, *s0),
                    b: (h, sig),
                });
                return Ok(());
            }
            Some(_) => {
                self.counters.stale += 1;
                return Ok(());
            }
            None => {
                self.proposals.insert((block.round, block.author), (h, sig));
            }
        }
        let (round, qc) = (block.round, block.qc.clone());
        self.store_block(h, block);
        self.fetching.remove(&h);
        self.process_qc(now, qc, out);
        // Vote rule (Jolteon `safe_to_vote`).
        let Some(b) = self.blocks.get(&h) else {
            return Ok(());
        };
        let consecutive = b.qc.round + 1 == round;
        let extends_tc = self
            .last_tc
            .as_ref()
            .is_some_and(|tc| tc.round + 1 == round && b.qc.round >= tc.high_qc_round());
        if round == self.round && round > self.highest_vote_round && (consecutive || extends_tc) {
            self.highest_vote_round = round;
            let sig = self.group.sign_vote(&self.key, round, &h);
            self.counters.votes_sent += 1;
            let next = self.group.leader(round + 1);
            let me = self.me;
            self.send(
                next,
                Msg::Vote {
                    round,
                    block: h,
                    voter: me,
                    sig,
                },
                out,
            );
        } else if round < self.round {
            self.counters.stale += 1;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_vote(
        &mut self,
        now: Instant,
        from: u32,
        round: u64,
        block: Hash,
        voter: u32,
        sig: Sig,
        out: &mut Vec<Out>,
    ) -> Result<(), BftError> {
        if from != voter {
            return Err(BftError::BadProposal("vote relayed by another member"));
        }
        self.group
            .verify(voter, &self.group.vote_msg(round, &block), &sig)?;
        if self.group.leader(round + 1) != self.me
            || round + 1 < self.round
            || round > self.round + MAX_AHEAD
            || self.high_qc.round >= round
        {
            self.counters.stale += 1;
            return Ok(());
        }
        match self.voted.get(&(round, voter)) {
            Some((h0, s0)) if *h0 != block => {
                self.counters.equivocations += 1;
                self.evidence.push(Evidence::DoubleVote {
                    round,
                    voter,
                    a: (*h0, *s0),
                    b: (block, sig),
                });
                return Ok(());
            }
            Some(_) => return Ok(()),
            None => {
                self.voted.insert((round, voter), (block, sig));
            }
        }
        let set = self.votes.entry((round, block)).or_default();
        set.insert(voter, sig);
        if set.len() >= self.group.quorum {
            let qc = Qc {
                round,
                block,
                votes: set.iter().map(|(k, v)| (*k, *v)).collect(),
            };
            self.counters.qcs_formed += 1;
            self.checked_qcs.insert((round, block));
            self.process_qc(now, qc, out);
        }
        Ok(())
    }

    fn record_timeout(&mut self, t: &Timeout) {
        self.timeouts
            .entry(t.round)
            .or_default()
            .insert(t.author, (t.high_qc.round, t.sig));
    }

    fn on_timeout_msg(
        &mut self,
        now: Instant,
        from: u32,
        t: Timeout,
        out: &mut Vec<Out>,
    ) -> Result<(), BftError> {
        if t.high_qc.round >= t.round {
            return Err(BftError::Malformed("timeout's high QC not below its round"));
        }
        self.group.verify(
            t.author,
            &self.group.timeout_msg(t.round, t.high_qc.round),
            &t.sig,
        )?;
        self.check_qc_cached(&t.high_qc)?;
        self.process_qc(now, t.high_qc.clone(), out);
        // A laggard (its round, or its highest QC, behind ours): show it our highest QC,
        // which it may have missed (the QC that ends a burst travels in one proposal).
        if self.high_qc.round > t.high_qc.round && from != self.me {
            out.push(Out::To(from, Msg::Sync(self.high_qc.clone())));
        }
        if t.round < self.round {
            self.counters.stale += 1;
            return Ok(());
        }
        if t.round > self.round + MAX_AHEAD {
            self.counters.stale += 1;
            return Ok(());
        }
        self.record_timeout(&t);
        // Bracha-style amplification: f+1 timeouts for our round mean at least one honest
        // member gave up on it; join them so a TC forms even if our timer is later.
        let n = self.timeouts.get(&self.round).map_or(0, |m| m.len());
        let mine = self
            .my_timeout
            .as_ref()
            .is_some_and(|m| m.round == self.round);
        if t.round == self.round && n > self.group.f && !mine {
            self.fire_timeout(now, out);
        }
        self.maybe_form_tc(now, out);
        Ok(())
    }

    fn maybe_form_tc(&mut self, now: Instant, out: &mut Vec<Out>) {
        let r = self.round;
        let Some(m) = self.timeouts.get(&r) else {
            return;
        };
        if m.len() < self.group.quorum {
            return;
        }
        let tc = Tc {
            round: r,
            entries: m.iter().map(|(a, (q, s))| (*a, *q, *s)).collect(),
        };
        self.counters.tcs_formed += 1;
        self.install_tc(now, tc, out);
    }

    fn process_tc(&mut self, now: Instant, tc: Tc, out: &mut Vec<Out>) -> Result<(), BftError> {
        if tc.round < self.round {
            self.counters.stale += 1;
            return Ok(());
        }
        self.group.check_tc(&tc)?;
        self.install_tc(now, tc, out);
        Ok(())
    }

    fn install_tc(&mut self, now: Instant, tc: Tc, out: &mut Vec<Out>) {
        if tc.round < self.round {
            return;
        }
        let r = tc.round + 1;
        let lead = self.group.leader(r) == self.me;
        self.last_tc = Some(tc.clone());
        self.advance(now, r);
        if lead {
            // Everyone needs the TC to vote for our block; send it first.
            out.push(Out::All(Msg::Tc(tc)));
            self.try_propose(out);
        }
    }

    fn process_qc(&mut self, now: Instant, qc: Qc, out: &mut Vec<Out>) {
        if qc.round > self.high_qc.round {
            self.high_qc = qc.clone();
        }
        if qc.round > self.committed_round {
            self.commit_rule(qc.block, out);
        }
        if qc.round >= self.round {
            self.advance(now, qc.round + 1);
            self.try_propose(out);
        }
    }

    /// Two-chain commit: a QC certifies B; if B's own QC certifies B's parent one round
    /// earlier, the parent is committed.
    fn commit_rule(&mut self, certified: Hash, out: &mut Vec<Out>) {
        if certified == GENESIS {
            return;
        }
        if let Some(b) = self.blocks.get(&certified) {
            if b.qc.round > 0 && b.qc.round + 1 == b.round {
                let p = b.qc.block;
                self.commit(p, out);
            }
        } else {
            self.fetch(certified, out);
        }
    }

    fn advance(&mut self, now: Instant, r: u64) {
        if r <= self.round {
            return;
        }
        self.round = r;
        self.deadline = None;
        self.arm(now);
        // Forget what no longer matters (bounded memory).
        let keep = r.saturating_sub(2);
        self.timeouts = self.timeouts.split_off(&keep);
        self.votes = self.votes.split_off(&(keep, [0u8; 32]));
        self.voted = self.voted.split_off(&(keep, 0));
        self.checked_qcs = self.checked_qcs.split_off(&(keep, [0u8; 32]));
        let pkeep = self.committed_round.saturating_sub(16);
        self.proposals = self.proposals.split_off(&(pkeep, 0));
    }

    fn fetch(&mut self, h: Hash, out: &mut Vec<Out>) {
        if h != GENESIS && !self.blocks.contains_key(&h) && self.fetching.insert(h) {
            out.push(Out::All(Msg::Fetch(h)));
        }
    }

    fn try_propose(&mut self, out: &mut Vec<Out>) {
        let r = self.round;
        if self.group.leader(r) != self.me || self.proposed_round >= r {
            return;
        }
        let via_qc = self.high_qc.round + 1 == r;
        let via_tc = self.last_tc.as_ref().is_some_and(|t| t.round + 1 == r);
        if !(via_qc || via_tc) || !self.should_propose() {
            return;
        }
        // Entries not yet decided nor in the uncommitted chain we extend.
        let mut in_chain = BTreeSet::new();
        let mut cur = self.high_qc.block;
        let mut steps = 0;
        while cur != self.committed_tip && steps < 1024 {
            let Some(b) = self.blocks.get(&cur) else {
                break;
            };
            if b.round <= self.committed_round {
                break;
            }
            for e in &b.payload {
                in_chain.insert(entry_hash(e));
            }
            cur = b.qc.block;
            steps += 1;
        }
        let mut block = Block {
            round: r,
            author: self.me,
            qc: self.high_qc.clone(),
            payload: Vec::new(),
        };
        fill_block(
            &mut block,
            self.pending
                .iter()
                .filter(|e| !in_chain.contains(&entry_hash(e))),
        );
        let sig = self.group.sign_block(&self.key, &block);
        self.proposed_round = r;
        self.counters.proposals += 1;
        out.push(Out::All(Msg::Propose {
            block: block.clone(),
            sig,
        }));
        self.local.push_back(Msg::Propose { block, sig });
    }

    /// Commits `target` and its uncommitted ancestors, oldest first.
    fn commit(&mut self, target: Hash, out: &mut Vec<Out>) {
        let Some(t_round) = self.blocks.get(&target).map(|b| b.round) else {
            self.fetch(target, out);
            self.commit_goal = Some(target);
            return;
        };
        if t_round <= self.committed_round {
            if target != self.committed_tip && t_round == self.committed_round {
                self.counters.conflicting_commits += 1;
            }
            return;
        }
        let mut chain = Vec::new();
        let mut cur = target;
        loop {
            if cur == self.committed_tip {
                break;
            }
            let Some(b) = self.blocks.get(&cur) else {
                // An ancestor is missing: fetch it, commit when it arrives.
                self.fetch(cur, out);
                if self
                    .commit_goal
                    .and_then(|g| self.blocks.get(&g))
                    .is_none_or(|g| g.round < t_round)
                {
                    self.commit_goal = Some(target);
                }
                return;
            };
            if b.round <= self.committed_round {
                // Does not extend what we committed: only possible with > f liars.
                self.counters.conflicting_commits += 1;
                return;
            }
            chain.push(cur);
            cur = b.qc.block;
        }
        for h in chain.into_iter().rev() {
            let Some(b) = self.blocks.get(&h) else { return };
            let round = b.round;
            let entries = b.payload.clone();
            for e in entries {
                let eh = entry_hash(&e);
                if self.decided_set.insert(eh) {
                    self.decided.push(Decision {
                        slot: self.decided.len() as u64,
                        round,
                        entry: e,
                    });
                }
                if self.pending_set.remove(&eh) {
                    self.pending.retain(|p| entry_hash(p) != eh);
                }
            }
            self.committed_tip = h;
            self.committed_round = round;
            self.counters.committed_blocks += 1;
        }
        if self.commit_goal.is_some_and(|g| {
            self.blocks
                .get(&g)
                .is_none_or(|b| b.round <= self.committed_round)
        }) {
            self.commit_goal = None;
        }
        if !self.has_work() {
            self.deadline = None;
        }
    }
}

// ---- codec: bounded, never panics on input ----

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BftError> {
        if self.b.len() < n {
            return Err(BftError::Malformed("truncated"));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, BftError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, BftError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, BftError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, BftError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn hash(&mut self) -> Result<Hash, BftError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn sig(&mut self) -> Result<Sig, BftError> {
        let mut a = [0u8; SIG_LEN];
        a.copy_from_slice(self.take(SIG_LEN)?);
        Ok(a)
    }
    fn count(&mut self, max: usize) -> Result<usize, BftError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(BftError::Malformed("count above its bound"));
        }
        Ok(n)
    }
    fn qc(&mut self) -> Result<Qc, BftError> {
        let round = self.u64()?;
        let block = self.hash()?;
        let n = self.count(MAX_MEMBERS)?;
        let mut votes = Vec::with_capacity(n);
        for _ in 0..n {
            votes.push((self.u32()?, self.sig()?));
        }
        Ok(Qc {
            round,
            block,
            votes,
        })
    }
    fn block(&mut self) -> Result<Block, BftError> {
        let round = self.u64()?;
        let author = self.u32()?;
        let qc = self.qc()?;
        let n = self.count(MAX_BATCH)?;
        let mut payload = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.count(MAX_ENTRY)?;
            payload.push(self.take(len)?.to_vec());
        }
        Ok(Block {
            round,
            author,
            qc,
            payload,
        })
    }
}

fn put_qc(w: &mut Vec<u8>, qc: &Qc) {
    w.extend_from_slice(&qc.round.to_be_bytes());
    w.extend_from_slice(&qc.block);
    w.extend_from_slice(&(qc.votes.len() as u16).to_be_bytes());
    for (id, s) in &qc.votes {
        w.extend_from_slice(&id.to_be_bytes());
        w.extend_from_slice(s);
    }
}

fn put_block(w: &mut Vec<u8>, b: &Block) {
    w.extend_from_slice(&b.round.to_be_bytes());
    w.extend_from_slice(&b.author.to_be_bytes());
    put_qc(w, &b.qc);
    w.extend_from_slice(&(b.payload.len() as u16).to_be_bytes());
    for e in &b.payload {
        w.extend_from_slice(&(e.len() as u16).to_be_bytes());
        w.extend_from_slice(e);
    }
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(256);
        match self {
            Msg::Propose { block, sig } => {
                w.push(1);
                put_block(&mut w, block);
                w.extend_from_slice(sig);
            }
            Msg::Vote {
                round,
                block,
                voter,
                sig,
            } => {
                w.push(2);
                w.extend_from_slice(&round.to_be_bytes());
                w.extend_from_slice(block);
                w.extend_from_slice(&voter.to_be_bytes());
                w.extend_from_slice(sig);
            }
            Msg::Timeout(t) => {
                w.push(3);
                w.extend_from_slice(&t.round.to_be_bytes());
                w.extend_from_slice(&t.author.to_be_bytes());
                w.extend_from_slice(&t.sig);
                put_qc(&mut w, &t.high_qc);
            }
            Msg::Tc(tc) => {
                w.push(4);
                w.extend_from_slice(&tc.round.to_be_bytes());
                w.extend_from_slice(&(tc.entries.len() as u16).to_be_bytes());
                for (a, q, s) in &tc.entries {
                    w.extend_from_slice(&a.to_be_bytes());
                    w.extend_from_slice(&q.to_be_bytes());
                    w.extend_from_slice(s);
                }
            }
            Msg::Submit(e) => {
                w.push(5);
                w.extend_from_slice(&(e.len() as u16).to_be_bytes());
                w.extend_from_slice(e);
            }
            Msg::Fetch(h) => {
                w.push(6);
                w.extend_from_slice(h);
            }
            Msg::Deliver(b) => {
                w.push(7);
                put_block(&mut w, b);
            }
            Msg::Sync(qc) => {
                w.push(8);
                put_qc(&mut w, qc);
            }
        }
        w
    }

    /// Decodes a message; every length is bounded, trailing bytes are an error.
    pub fn decode(b: &[u8]) -> Result<Msg, BftError> {
        let mut r = Reader { b };
        let m = match r.u8()? {
            1 => {
                let block = r.block()?;
                let sig = r.sig()?;
                Msg::Propose { block, sig }
            }
            2 => Msg::Vote {
                round: r.u64()?,
                block: r.hash()?,
                voter: r.u32()?,
                sig: r.sig()?,
            },
            3 => {
                let round = r.u64()?;
                let author = r.u32()?;
                let sig = r.sig()?;
                let high_qc = r.qc()?;
                Msg::Timeout(Timeout {
                    round,
                    author,
                    high_qc,
                    sig,
                })
            }
            4 => {
                let round = r.u64()?;
                let n = r.count(MAX_MEMBERS)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((r.u32()?, r.u64()?, r.sig()?));
                }
                Msg::Tc(Tc { round, entries })
            }
            5 => {
                let n = r.count(MAX_ENTRY)?;
                Msg::Submit(r.take(n)?.to_vec())
            }
            6 => Msg::Fetch(r.hash()?),
            7 => Msg::Deliver(r.block()?),
            8 => Msg::Sync(r.qc()?),
            _ => return Err(BftError::Malformed("unknown message type")),
        };
        if !r.b.is_empty() {
            return Err(BftError::Malformed("trailing bytes"));
        }
        Ok(m)
    }
}

/// Puts into `block` as many of `entries` (up to [`MAX_BATCH`], at least one) as fit one
/// datagram with its QC: a proposal cut short on the wire would be malformed everywhere,
/// and its round lost.
fn fill_block<'a>(block: &mut Block, entries: impl Iterator<Item = &'a Vec<u8>>) {
    for e in entries.take(MAX_BATCH) {
        block.payload.push(e.clone());
        let size = Msg::Propose {
            block: block.clone(),
            sig: [0u8; SIG_LEN],
        }
        .encode()
        .len();
        if size > crate::wire::MAX_BLOB && block.payload.len() > 1 {
            block.payload.pop();
            break;
        }
    }
}

/// The largest group whose proposal (a full QC and one [`MAX_ENTRY`] entry) fits one
/// datagram's payload ([`crate::wire::MAX_PAYLOAD`], minus `overhead` bytes of framing).
pub fn max_wire_members(overhead: usize) -> usize {
    let budget = crate::wire::MAX_PAYLOAD.saturating_sub(overhead);
    (1..=MAX_MEMBERS)
        .take_while(|&n| {
            let f = (n - 1) / 3;
            let q = (n + f) / 2 + 1;
            let qc = 8 + 32 + 2 + q * (4 + SIG_LEN);
            let propose = 1 + 8 + 4 + qc + 2 + 2 + MAX_ENTRY + SIG_LEN;
            let tc = 1 + 8 + 2 + q * (4 + 8 + SIG_LEN);
            propose <= budget && tc <= budget
        })
        .last()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::bft_harness::member_key;
    use proptest::prelude::*;

    const T0: Instant = Instant::ZERO;

    /// A group of 4 with real Ed25519 signatures; returns the keys too.
    fn group4() -> (Group, Vec<SigningKey>) {
        let keys: Vec<SigningKey> = (0..4).map(|i| member_key(11, i)).collect();
        let g = Group::new(
            7,
            keys.iter()
                .enumerate()
                .map(|(i, k)| (i as u32, k.verifying_key()))
                .collect(),
            Auth::Ed25519,
        )
        .unwrap();
        (g, keys)
    }

    fn replica(g: &Group, keys: &[SigningKey], me: u32) -> Replica {
        Replica::new(
            g.clone(),
            me,
            keys[me as usize].clone(),
            BftParams::default(),
        )
        .unwrap()
    }

    fn block(g: &Group, round: u64, payload: &[u8]) -> Block {
        Block {
            round,
            author: g.leader(round),
            qc: Qc::genesis(),
            payload: vec![payload.to_vec()],
        }
    }

    fn votes_in(out: &[Out]) -> Vec<(u32, u64, Hash)> {
        out.iter()
            .filter_map(|o| match o {
                Out::To(to, Msg::Vote { round, block, .. }) => Some((*to, *round, *block)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn quorum_and_f_follow_n() {
        let mk = |n: u32| {
            let keys = (0..n)
                .map(|i| (i, member_key(1, i).verifying_key()))
                .collect();
            let g = Group::new(1, keys, Auth::TestDigest).unwrap();
            (g.f, g.quorum)
        };
        assert_eq!(mk(4), (1, 3));
        assert_eq!(mk(7), (2, 5));
        assert_eq!(mk(12), (3, 8), "n = 12: quorums of 8 share 4 = f+1 members");
        assert_eq!(mk(100), (33, 67));
        assert_eq!(
            Group::new(1, BTreeMap::new(), Auth::Ed25519).unwrap_err(),
            BftError::BadGroup
        );
    }

    #[test]
    fn equivocating_leader_gets_one_vote_and_is_recorded() {
        let (g, keys) = group4();
        let mut r = replica(&g, &keys, 0);
        let leader = g.leader(1) as usize;
        let (a, b) = (block(&g, 1, b"revoke 5"), block(&g, 1, b"revoke 6"));
        let (sa, sb) = (
            g.sign_block(&keys[leader], &a),
            g.sign_block(&keys[leader], &b),
        );
        let mut out = Vec::new();
        r.handle(
            T0,
            leader as u32,
            Msg::Propose {
                block: a.clone(),
                sig: sa,
            },
            &mut out,
        )
        .unwrap();
        r.handle(
            T0,
            leader as u32,
            Msg::Propose {
                block: b.clone(),
                sig: sb,
            },
            &mut out,
        )
        .unwrap();
        let v = votes_in(&out);
        assert_eq!(v.len(), 1, "one vote in round 1: {v:?}");
        assert_eq!(v[0].2, g.block_hash(&a));
        assert_eq!(r.counters().equivocations, 1);
        match &r.evidence()[0] {
            Evidence::Equivocation {
                round,
                author,
                a: ea,
                b: eb,
            } => {
                assert_eq!((*round, *author), (1, leader as u32));
                // The evidence proves itself: both signatures verify under the leader's key.
                for (h, s) in [ea, eb] {
                    g.verify(*author, &[D_BLOCK, &h[..]].concat(), s).unwrap();
                }
            }
            e => panic!("wrong evidence {e:?}"),
        }
    }

    #[test]
    fn forged_and_replayed_votes_are_refused_and_counted() {
        let (g, keys) = group4();
        // Member 2 leads round 2: it collects round 1's votes.
        let next = g.leader(2);
        let mut r = replica(&g, &keys, next);
        let b = block(&g, 1, b"x");
        let h = g.block_hash(&b);
        let mut out = Vec::new();
        // Forged: member 0's id, signed with an outsider's key.
        let outsider = member_key(99, 0);
        let forged = Msg::Vote {
            round: 1,
            block: h,
            voter: 0,
            sig: g.sign_vote(&outsider, 1, &h),
        };
        assert_eq!(
            r.handle(T0, 0, forged, &mut out),
            Err(BftError::BadSignature(0))
        );
        assert_eq!(r.counters().forged, 1);
        // A non-member sender.
        let v = Msg::Vote {
            round: 1,
            block: h,
            voter: 9,
            sig: g.sign_vote(&outsider, 1, &h),
        };
        assert_eq!(r.handle(T0, 9, v, &mut out), Err(BftError::NotMember(9)));
        assert_eq!(r.counters().not_member, 1);
        // Replayed: a genuine vote of round 1 presented as one for round 3.
        let genuine = g.sign_vote(&keys[0], 1, &h);
        let replay = Msg::Vote {
            round: 3,
            block: h,
            voter: 0,
            sig: genuine,
        };
        assert_eq!(
            r.handle(T0, 0, replay, &mut out),
            Err(BftError::BadSignature(0))
        );
        // Another group's vote (same keys, same round and block) does not count here.
        let other = Group::new(8, g.keys.clone(), Auth::Ed25519).unwrap();
        let cross = Msg::Vote {
            round: 1,
            block: h,
            voter: 0,
            sig: other.sign_vote(&keys[0], 1, &h),
        };
        assert_eq!(
            r.handle(T0, 0, cross, &mut out),
            Err(BftError::BadSignature(0))
        );
        assert_eq!(r.counters().forged, 3);
        // The genuine vote, twice (a replay of the same vote), counts once: no QC from
        // one voter.
        for _ in 0..2 {
            let v = Msg::Vote {
                round: 1,
                block: h,
                voter: 0,
                sig: genuine,
            };
            r.handle(T0, 0, v, &mut out).unwrap();
        }
        assert_eq!(r.counters().qcs_formed, 0);
        assert!(
            out.is_empty(),
            "nothing sent on refused or lone votes: {out:?}"
        );
        // A QC holding a forged vote is refused.
        let qc = Qc {
            round: 1,
            block: h,
            votes: vec![
                (0, genuine),
                (1, g.sign_vote(&keys[1], 1, &h)),
                (3, g.sign_vote(&outsider, 1, &h)),
            ],
        };
        assert_eq!(
            g.check_qc(&qc),
            Err(BftError::BadQc("a vote does not verify"))
        );
        // Two votes of one member (sorted check) are not a quorum of two.
        let dup = Qc {
            round: 1,
            block: h,
            votes: vec![
                (0, genuine),
                (0, genuine),
                (1, g.sign_vote(&keys[1], 1, &h)),
            ],
        };
        assert!(g.check_qc(&dup).is_err());
    }

    #[test]
    fn votes_far_ahead_are_not_kept() {
        // A member signing votes for rounds far ahead cannot fill the leader's memory.
        let (g, keys) = group4();
        let mut r = replica(&g, &keys, 0);
        let mut out = Vec::new();
        let round = (1..)
            .map(|k| k * 4 + 3)
            .find(|x| *x > MAX_AHEAD + 1)
            .unwrap();
        assert_eq!(g.leader(round + 1), 0);
        let v = Msg::Vote {
            round,
            block: [5; 32],
            voter: 1,
            sig: g.sign_vote(&keys[1], round, &[5; 32]),
        };
        r.handle(T0, 1, v, &mut out).unwrap();
        assert_eq!(r.counters().stale, 1);
        assert!(r.votes.is_empty() && r.voted.is_empty());
    }

    #[test]
    fn proposal_from_a_non_leader_or_with_a_bad_qc_is_refused() {
        let (g, keys) = group4();
        let mut r = replica(&g, &keys, 0);
        let mut out = Vec::new();
        let mut b = block(&g, 1, b"x");
        b.author = 3; // not round 1's leader
        let sig = g.sign_block(&keys[3], &b);
        assert_eq!(
            r.handle(T0, 3, Msg::Propose { block: b, sig }, &mut out),
            Err(BftError::BadProposal("author is not the round's leader"))
        );
        let mut b = block(&g, 2, b"x");
        b.qc = Qc {
            round: 1,
            block: [1; 32],
            votes: vec![],
        };
        let l = g.leader(2);
        let sig = g.sign_block(&keys[l as usize], &b);
        assert!(matches!(
            r.handle(T0, l, Msg::Propose { block: b, sig }, &mut out),
            Err(BftError::BadQc(_))
        ));
        assert!(votes_in(&out).is_empty());
        assert_eq!(r.counters().invalid, 2);
    }

    #[test]
    fn a_tampered_block_does_not_verify() {
        let (g, keys) = group4();
        let mut r = replica(&g, &keys, 0);
        let l = g.leader(1);
        let b = block(&g, 1, b"revoke 5");
        let sig = g.sign_block(&keys[l as usize], &b);
        let mut t = b.clone();
        t.payload[0] = b"revoke 6".to_vec();
        let mut out = Vec::new();
        assert_eq!(
            r.handle(T0, l, Msg::Propose { block: t, sig }, &mut out),
            Err(BftError::BadSignature(l))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_proposal_takes_only_the_entries_that_fit_one_datagram() {
        // Sixteen 84-byte entries (quarantine votes' size) and the QC of a 12-member group
        // (8 votes) do not fit one datagram's payload: the block takes as many as fit, the
        // rest wait for later blocks. Before, all 16 went in and every member refused the
        // proposal as malformed (a 12-tile cell's verdicts stalled at timeouts).
        let qc = Qc {
            round: 3,
            block: [1; 32],
            votes: (0..8).map(|i| (i, [0u8; SIG_LEN])).collect(),
        };
        let entries: Vec<Vec<u8>> = (0..MAX_BATCH as u8).map(|i| vec![i; 84]).collect();
        let mut b = Block {
            round: 4,
            author: 1,
            qc,
            payload: Vec::new(),
        };
        fill_block(&mut b, entries.iter());
        let bytes = Msg::Propose {
            block: b.clone(),
            sig: [0u8; SIG_LEN],
        }
        .encode()
        .len();
        assert!(bytes <= crate::wire::MAX_BLOB, "{bytes} bytes");
        assert!(
            (1..MAX_BATCH).contains(&b.payload.len()),
            "{} entries",
            b.payload.len()
        );
        assert_eq!(b.payload[..], entries[..b.payload.len()]);
        // One entry always goes in (an entry is at most MAX_ENTRY, which fits).
        let mut one = Block {
            payload: Vec::new(),
            ..b
        };
        fill_block(&mut one, [vec![9u8; MAX_ENTRY]].iter());
        assert_eq!(one.payload.len(), 1);
    }

    #[test]
    fn submit_refuses_bad_entries() {
        let (g, keys) = group4();
        let mut r = replica(&g, &keys, 0);
        let mut out = Vec::new();
        assert_eq!(r.submit(T0, vec![], &mut out), Err(BftError::EntrySize(0)));
        assert_eq!(
            r.submit(T0, vec![0; MAX_ENTRY + 1], &mut out),
            Err(BftError::EntrySize(MAX_ENTRY + 1))
        );
        assert_eq!(r.pending(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn wire_carries_groups_up_to_19() {
        // MAX_PAYLOAD (1292 bytes) holds a proposal with a 19-member QC (q = 13) and one
        // full entry; a 20-member QC (q = 14) does not. Larger groups: harness only.
        assert_eq!(
            max_wire_members(2),
            19,
            "a Bft payload is a 2-byte length and the message"
        );
        let (g, keys) = group4();
        let b = Block {
            round: 2,
            author: g.leader(2),
            qc: Qc {
                round: 1,
                block: [3; 32],
                votes: (0..13).map(|i| (i, [7u8; 64])).collect(),
            },
            payload: vec![vec![1; MAX_ENTRY]],
        };
        let m = Msg::Propose {
            sig: g.sign_block(&keys[2], &b),
            block: b,
        };
        assert!(m.encode().len() <= crate::wire::MAX_PAYLOAD);
    }

    fn sample_msgs() -> Vec<Msg> {
        let qc = Qc {
            round: 4,
            block: [9; 32],
            votes: vec![(1, [1; 64]), (2, [2; 64]), (3, [3; 64])],
        };
        let b = Block {
            round: 5,
            author: 1,
            qc: qc.clone(),
            payload: vec![b"a".to_vec(), vec![0; MAX_ENTRY]],
        };
        vec![
            Msg::Propose {
                block: b.clone(),
                sig: [5; 64],
            },
            Msg::Vote {
                round: 5,
                block: [8; 32],
                voter: 2,
                sig: [6; 64],
            },
            Msg::Timeout(Timeout {
                round: 6,
                author: 3,
                high_qc: qc.clone(),
                sig: [4; 64],
            }),
            Msg::Tc(Tc {
                round: 6,
                entries: vec![(0, 4, [1; 64]), (1, 3, [2; 64])],
            }),
            Msg::Submit(b"revoke".to_vec()),
            Msg::Fetch([2; 32]),
            Msg::Deliver(b),
            Msg::Sync(qc),
        ]
    }

    #[test]
    fn codec_round_trips_and_refuses_truncation() {
        for m in sample_msgs() {
            let b = m.encode();
            assert_eq!(Msg::decode(&b).unwrap(), m);
            for cut in 0..b.len() {
                assert!(Msg::decode(&b[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(
                Msg::decode(&long),
                Err(BftError::Malformed("trailing bytes"))
            );
        }
    }

    proptest! {
        /// Garbage never panics the decoder nor a replica, and changes no decision.
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600), from in 0u32..6) {
            let _ = Msg::decode(&b);
            let (g, keys) = group4();
            let mut r = replica(&g, &keys, 0);
            let mut out = Vec::new();
            let _ = r.handle_bytes(T0, from, &b, &mut out);
            prop_assert!(r.decided().is_empty());
        }

        /// Mutated valid messages never panic either.
        #[test]
        fn mutated_messages_never_panic(i in 0usize..8, pos in any::<usize>(), byte in any::<u8>()) {
            let mut b = sample_msgs()[i].encode();
            let p = pos % b.len();
            b[p] = byte;
            let (g, keys) = group4();
            let mut r = replica(&g, &keys, 0);
            let mut out = Vec::new();
            let _ = r.handle_bytes(T0, 1, &b, &mut out);
        }
    }
}
