//! Neighbourhood watch: the spec's immune defence ("tiles monitor neighbours, suspect nodes
//! are quarantined at the routing layer, full BFT only within small groups").
//!
//! A node gathers its *own* evidence against a node in two ways:
//! - **forwarding audits**: every `audit_interval` (every `audit_fast` while a recent audit
//!   of it failed) it sends, for each up neighbour `S`, an echo to a node `X` that `S`
//!   advertises at one hop and that we reach through `S`; `X` answers over the link the echo
//!   came in on, so all `S` has to do is hand the echo over, both ways. An audit where `X`
//!   did not answer while `S` was heard from lately (it is up and talking) and our membership
//!   view holds `X` alive is a strike against `S`; `failures` strikes among its last `judged` audits are evidence (a ratio,
//!   not a count: a lossy link loses some echoes, a black hole all of them). Audits only blame
//!   the first hop for a destination it claims as its own neighbour, so an honest node
//!   upstream of a black hole is never blamed for it.
//! - **lies about us**: a membership claim, first-hand (the frame's signed source is the
//!   claim's accuser), that *we* are suspect or dead at the incarnation we refuted to less
//!   than `lie_quick` ago. An honest accuser needs failed probes and a suspicion timeout
//!   before it claims anything about a new incarnation of ours — and after a partition its
//!   claims are about the old one; a liar answers each refutation at once. `lie_strikes`
//!   such claims (distinct incarnations) by one node within `lie_window` are evidence.
//!
//! Evidence is a vote: the node sends [`Payload::Accuse`](crate::wire::Payload::Accuse) to
//! its cell and neighbours, and quarantines a node once `quorum` distinct nodes (itself
//! included) accuse it. With the default quorum of 2 (f = 1 per cell), one byzantine node
//! cannot get an honest one quarantined by accusing it, and one honest node mistaken by a
//! lossy link cannot either.
//!
//! Hardening (issue 17):
//! - **Votes only from the accused's group**: an accusation counts only when the accuser is
//!   in the accused's cell, or is a gateway of the accused's cluster (the node checks this
//!   against the directory, [`may_accuse`]); two colluders elsewhere in the lab cannot
//!   quarantine a cell's member.
//! - **Votes and evidence expire**: a vote lapses `vote_ttl` after it was last heard (its
//!   accuser repeats it every `accuse_interval` while it holds evidence), and our own
//!   evidence lapses `evidence_ttl` after we found it. An old accusation cannot be topped up
//!   into a quorum much later.
//! - **Re-admission by the group**: a convicted node stays quarantined for a term
//!   (`quarantine_term`, doubled for each earlier conviction, at most 8x); when the term is
//!   over and fewer than `quorum` live votes against it remain, each member lifts the
//!   quarantine on its own. Every honest member sees the same votes, so they decide alike
//!   (a simple rule, not a BFT agreement). A re-admitted node is audited afresh; if it
//!   misbehaves again it is convicted again, for a longer term.
//! - **Verdicts by the group's log** (`bft_verdicts`): the per-member rule above can
//!   diverge (members that heard different votes decide differently; a sweep of seeds
//!   1–30 of a 12-tile cell with 3 liars found one such run). With it, each member's
//!   vote about a member of its cell is a signed entry in the cell's BFT log and every
//!   member applies the same entries in the same order ([`crate::trust::verdicts`]):
//!   convictions and re-admissions are agreed, at one log slot. The quorum becomes at least
//!   f + 1 of the cell, so a fault only a node's neighbours can witness (a black hole in a
//!   ring cell: two witnesses) is no longer enough to convict it when f + 1 > 2.
//! - **Signed claims** (`signed_claims`): every suspect/dead claim carries its accuser's
//!   own signature over (accused, state, incarnation, accuser), relays pass it on
//!   unchanged, and a claim whose signature does not check is dropped and is evidence
//!   against the relay that sent it (honest relays verify before they relay), so a liar
//!   that names another node as accuser is caught. See [`crate::claims`].
//!
//! Sans-IO like the rest of the node: times come in as arguments, outputs go out as return
//! values, and every map iterates in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::Serialize;

use crate::time::Instant;

/// Watch parameters (emulated time).
#[derive(Debug, Clone)]
pub struct WatchParams {
    /// Forwarding audits per neighbour, this often while they pass. Default 5 s.
    pub audit_interval: Duration,
    /// ... and this often while one of its last judged audits failed. Default 1 s.
    pub audit_fast: Duration,
    /// Failed audits among the last `judged` ones of a neighbour that make evidence.
    /// Defaults 7 of 8: with 8 % of audits lost to honest loss (2 % per link, four
    /// crossings) a false conviction takes ~1.5e-7 per judgement; a black hole is caught
    /// after 7 audits.
    pub failures: usize,
    pub judged: usize,
    /// Distinct incarnations of ours one node accused first-hand, each within `lie_quick`
    /// of our refutation to it, within `lie_window`, that make evidence. Defaults 3 in
    /// 60 s, 3 s quick.
    pub lie_strikes: usize,
    pub lie_window: Duration,
    pub lie_quick: Duration,
    /// Accusers (including ourselves) needed to quarantine. Default 2.
    pub quorum: usize,
    /// Our accusations are repeated this often (datagrams get lost). Default 5 s.
    pub accuse_interval: Duration,
    /// A vote lapses this long after its accuser last repeated it. Default 30 s (six
    /// repeats lost in a row).
    pub vote_ttl: Duration,
    /// Our own evidence lapses this long after we found it (we stop voting). Default 120 s.
    pub evidence_ttl: Duration,
    /// A convicted node stays quarantined at least this long (doubled per earlier
    /// conviction, at most 8x); then it is re-admitted once fewer than `quorum` live votes
    /// against it remain. Default 300 s.
    pub quarantine_term: Duration,
    /// Convictions and re-admissions of our cell's members are decided by the cell's BFT
    /// group ([`crate::trust::verdicts`]): every vote is an entry in the group's agreed
    /// log, so all honest members decide alike; the quorum is at least f + 1 of the cell.
    /// Nodes outside our cell are still judged by the votes we hear. Default off.
    pub bft_verdicts: bool,
    /// Suspect/dead claims carry their accuser's signature (kind 28 frames, see
    /// [`crate::claims`]); unsigned or forged claims are dropped. Default off (the wire of
    /// existing labs and the simulator's golden traces are unchanged).
    pub signed_claims: bool,
    /// Every node keeps a transparency log of its quarantine verdicts and gossips signed
    /// tree heads (kind 29) to its cell every `accuse_interval`; a split view is evidence
    /// against the log's signer ([`crate::trust::CellLog`]). Default off.
    pub log_heads: bool,
    /// Heat leases whose owner and holder share a cell are granted through the cell's BFT
    /// log ([`crate::heat::grants`]): a holder takes a lease only once its grant is decided,
    /// and every member rejects a grant that overlaps a running one, so a lying owner
    /// cannot have one lease held by two tiles. Turns the cell's BFT group on. Default off
    /// (leases as before: the owner's word).
    pub bft_leases: bool,
}

impl WatchParams {
    /// Turns on what a lab's `trust:` section asks for (never turns anything off).
    pub fn with_trust(&mut self, t: &crate::config::TrustOptions) {
        self.signed_claims |= t.signed_claims;
        self.log_heads |= t.log_heads;
        self.bft_verdicts |= t.bft_verdicts;
        self.bft_leases |= t.bft_leases;
        if let Some(ms) = t.quarantine_term_ms {
            self.quarantine_term = Duration::from_millis(ms);
        }
        if let Some(ms) = t.evidence_ttl_ms {
            self.evidence_ttl = Duration::from_millis(ms);
        }
    }
}

impl Default for WatchParams {
    fn default() -> Self {
        WatchParams {
            audit_interval: Duration::from_secs(5),
            audit_fast: Duration::from_secs(1),
            failures: 7,
            judged: 8,
            lie_strikes: 3,
            lie_window: Duration::from_secs(60),
            lie_quick: Duration::from_secs(3),
            quorum: 2,
            accuse_interval: Duration::from_secs(5),
            vote_ttl: Duration::from_secs(30),
            evidence_ttl: Duration::from_secs(120),
            quarantine_term: Duration::from_secs(300),
            bft_verdicts: false,
            signed_claims: false,
            log_heads: false,
            bft_leases: false,
        }
    }
}

/// One outstanding forwarding audit of neighbour `via`.
#[derive(Debug, Clone)]
struct Audit {
    target: u32,
    nonce: u32,
    deadline: Instant,
    answered: bool,
    /// The neighbour's link silences when the audit began ([`LinkState::silences`]).
    silences: u64,
}

/// A failed audit waiting 1.5 keepalive intervals of its neighbour past its deadline
/// before it is judged, so that a link that was down across it shows as a silence (or as
/// not heard) first.
#[derive(Debug, Clone)]
struct Doubt {
    via: u32,
    target: u32,
    silences: u64,
    judge_at: Instant,
}

/// What the node's routing knows of its link to a neighbour, for judging audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Heard from within its keepalive interval.
    pub heard: bool,
    /// Silences longer than its keepalive interval so far, each ended by a frame
    /// (`Routing::silences`).
    pub silences: u64,
    /// Its keepalive interval.
    pub keepalive: Duration,
}

/// Why we hold evidence against a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It did not forward audits to its own neighbours.
    DropsForwarding,
    /// It told us we were suspect or dead, again and again.
    LiesAboutUs,
    /// It relayed a suspect/dead claim whose accuser's signature does not check.
    ForgedClaim,
    /// It signed two heads of its log with equal size and different roots (a split view).
    SplitView,
}

/// An echo to send: `nonce` to node `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub to: u32,
    pub nonce: u32,
}

/// What the watch reports in `/state`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchView {
    /// Nodes we hold our own evidence against, and why.
    pub evidence: BTreeMap<u32, Reason>,
    /// Per accused node, who accused it (us included when we hold evidence).
    pub accusers: BTreeMap<u32, BTreeSet<u32>>,
    /// Failed forwarding audits per neighbour among its last judged ones.
    pub strikes: BTreeMap<u32, usize>,
    pub audits_sent: u64,
    pub audits_failed: u64,
    /// Nodes we convicted and keep quarantined, with how many times each was convicted.
    pub convicted: BTreeMap<u32, u32>,
    pub readmitted: u64,
}

/// A conviction we hold: since when, and which conviction of this node it is (1 = first).
#[derive(Debug, Clone, Copy)]
struct Conviction {
    since: Instant,
    count: u32,
    /// Decided by the group's log ([`WatchParams::bft_verdicts`]): lifted only by it.
    agreed: bool,
}

/// Who may vote against `accused`: members of its cell, and gateways of its cluster.
pub fn may_accuse(dir: &crate::directory::Directory, accuser: u32, accused: u32) -> bool {
    let (Some(a), Some(b)) = (dir.get(accuser), dir.addr(accused)) else {
        return false;
    };
    a.addr.same_cell(&b) || (a.role == crate::addr::Role::Gateway && a.addr.same_cluster(&b))
}

/// The watch state of one node.
#[derive(Debug, Clone)]
pub struct Watch {
    me: u32,
    params: WatchParams,
    next_nonce: u32,
    audits: BTreeMap<u32, Audit>,
    /// Failed audits not judged yet, oldest first.
    doubts: VecDeque<Doubt>,
    /// Per neighbour: when its next audit is due.
    next_audit: BTreeMap<u32, Instant>,
    /// Round-robin position per neighbour over its audit targets.
    cursor: BTreeMap<u32, usize>,
    /// Per neighbour: its last `judged` audit results (true = failed).
    results: BTreeMap<u32, VecDeque<bool>>,
    /// Per accuser: incarnations of ours it accused, and when.
    lies: BTreeMap<u32, BTreeMap<u64, Instant>>,
    evidence: BTreeMap<u32, Reason>,
    /// When we found each piece of our evidence.
    evidence_since: BTreeMap<u32, Instant>,
    /// Per accused node: its accusers, and when each last voted (our own vote is refreshed
    /// while our evidence holds).
    accusers: BTreeMap<u32, BTreeMap<u32, Instant>>,
    convictions: BTreeMap<u32, Conviction>,
    /// Per node: how often it was convicted before (its next term doubles).
    offences: BTreeMap<u32, u32>,
    readmitted: u64,
    audits_sent: u64,
    audits_failed: u64,
    /// When we last sent our accusations.
    last_accuse: Option<Instant>,
}

impl Watch {
    /// Entries held, per structure (see [`crate::Node::footprint`]).
    pub fn footprint(&self, out: &mut Vec<(&'static str, usize)>) {
        out.push(("watch.audits", self.audits.len() + self.doubts.len()));
        out.push((
            "watch.per_neighbour",
            self.next_audit.len() + self.cursor.len() + self.results.len(),
        ));
        out.push(("watch.lies", self.lies.values().map(|m| m.len()).sum()));
        out.push((
            "watch.accusers",
            self.accusers.values().map(|m| m.len()).sum(),
        ));
        out.push((
            "watch.other",
            self.evidence.len()
                + self.evidence_since.len()
                + self.convictions.len()
                + self.offences.len(),
        ));
    }
    pub fn new(me: u32, params: WatchParams) -> Watch {
        Watch {
            me,
            params,
            next_nonce: 1,
            audits: BTreeMap::new(),
            doubts: VecDeque::new(),
            next_audit: BTreeMap::new(),
            cursor: BTreeMap::new(),
            results: BTreeMap::new(),
            lies: BTreeMap::new(),
            evidence: BTreeMap::new(),
            evidence_since: BTreeMap::new(),
            accusers: BTreeMap::new(),
            convictions: BTreeMap::new(),
            offences: BTreeMap::new(),
            readmitted: 0,
            audits_sent: 0,
            audits_failed: 0,
            last_accuse: None,
        }
    }

    /// Nodes we hold our own evidence against.
    pub fn evidence(&self) -> &BTreeMap<u32, Reason> {
        &self.evidence
    }

    pub fn view(&self) -> WatchView {
        WatchView {
            evidence: self.evidence.clone(),
            accusers: self
                .accusers
                .iter()
                .map(|(n, a)| (*n, a.keys().copied().collect()))
                .collect(),
            strikes: self
                .results
                .iter()
                .map(|(n, r)| (*n, r.iter().filter(|f| **f).count()))
                .filter(|(_, f)| *f > 0)
                .collect(),
            audits_sent: self.audits_sent,
            audits_failed: self.audits_failed,
            convicted: self
                .convictions
                .iter()
                .map(|(n, c)| (*n, c.count))
                .collect(),
            readmitted: self.readmitted,
        }
    }

    fn nonce(&mut self) -> u32 {
        let n = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1).max(1);
        n
    }

    /// Judges the audits whose deadline passed and returns the nodes on which we now hold
    /// new evidence. `alive(x)`: our membership view holds `x` alive; `link(s)`: what
    /// routing knows of the link to neighbour `s`.
    ///
    /// An answered audit passes at once. A failed one waits 1.5 keepalive intervals of its
    /// neighbour past its deadline and is then a strike only if the neighbour is heard lately, the target is
    /// alive, and the link had no silence (longer than its keepalive) since the audit
    /// began: otherwise the neighbour or the target is down, or the link was, and the echo
    /// died there, not at the neighbour (a flapping link made honest neighbours look like
    /// black holes before: `sim/tests/watch_hardening.rs`, honest faults). A black hole
    /// keeps talking, so its strikes stand; short outages within the keepalive interval
    /// count like loss, which the `failures`-of-`judged` ratio allows for.
    pub fn judge(
        &mut self,
        now: Instant,
        alive: &dyn Fn(u32) -> bool,
        link: &dyn Fn(u32) -> LinkState,
    ) -> Vec<u32> {
        let due: Vec<u32> = self
            .audits
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        let mut verdicts: Vec<(u32, bool)> = Vec::new();
        for s in due {
            let Some(a) = self.audits.remove(&s) else {
                continue;
            };
            if a.answered {
                if link(s).heard && alive(a.target) {
                    verdicts.push((s, false));
                }
            } else {
                self.doubts.push_back(Doubt {
                    via: s,
                    target: a.target,
                    silences: a.silences,
                    // Past one keepalive after the deadline (with a margin), "heard lately"
                    // means heard since the deadline: a link down across the audit shows
                    // either as not heard or as a silence by then.
                    judge_at: a.deadline + link(s).keepalive * 3 / 2,
                });
            }
        }
        let mut keep = VecDeque::new();
        while let Some(d) = self.doubts.pop_front() {
            if d.judge_at > now {
                keep.push_back(d);
                continue;
            }
            let l = link(d.via);
            if l.heard && l.silences == d.silences && alive(d.target) {
                verdicts.push((d.via, true));
            }
        }
        self.doubts = keep;
        let mut new = Vec::new();
        for (s, failed) in verdicts {
            self.audits_failed += u64::from(failed);
            let q = self.results.entry(s).or_default();
            q.push_back(failed);
            while q.len() > self.params.judged {
                q.pop_front();
            }
            let failures = q.iter().filter(|f| **f).count();
            if failed
                && failures >= self.params.failures
                && self.add_evidence(now, s, Reason::DropsForwarding)
            {
                new.push(s);
            }
        }
        new
    }

    /// True when neighbour `via` is due an audit: none outstanding, no evidence against it
    /// yet, its cadence come round.
    pub fn audit_due(&self, now: Instant, via: u32) -> bool {
        !self.audits.contains_key(&via)
            && !self.evidence.contains_key(&via)
            && self.next_audit.get(&via).is_none_or(|t| now >= *t)
    }

    /// Starts an audit of neighbour `via` through one of `targets` (its own neighbours that
    /// we reach through it) if one is due. `rtt(x)` bounds the answer's round trip from `x`;
    /// `silences` is the link's [`LinkState::silences`] now. Returns the echo to send.
    pub fn audit(
        &mut self,
        now: Instant,
        via: u32,
        targets: &[u32],
        rtt: &dyn Fn(u32) -> Duration,
        silences: u64,
    ) -> Option<Echo> {
        if targets.is_empty() || !self.audit_due(now, via) {
            return None;
        }
        let c = self.cursor.entry(via).or_default();
        let target = targets[*c % targets.len()];
        *c = c.wrapping_add(1);
        let nonce = self.nonce();
        let suspicious = self.results.get(&via).is_some_and(|r| r.iter().any(|f| *f));
        let every = if suspicious {
            self.params.audit_fast
        } else {
            self.params.audit_interval
        };
        self.next_audit.insert(via, now + every);
        self.audits.insert(
            via,
            Audit {
                target,
                nonce,
                deadline: now + (rtt(target) * 2).max(self.params.audit_fast),
                answered: false,
                silences,
            },
        );
        self.audits_sent += 1;
        Some(Echo { to: target, nonce })
    }

    /// An echo reply from `src`. Only a reply from the node the echo went to counts.
    pub fn on_reply(&mut self, src: u32, nonce: u32) {
        for a in self.audits.values_mut() {
            if a.nonce == nonce && src == a.target {
                a.answered = true;
            }
        }
    }

    /// A first-hand claim by `accuser` that we are suspect or dead at `claimed`; we are at
    /// incarnation `ours` since `since`. Returns true when it makes new evidence.
    pub fn on_claim(
        &mut self,
        now: Instant,
        accuser: u32,
        claimed: u64,
        ours: (u64, Instant),
    ) -> bool {
        let (inc, since) = ours;
        if claimed != inc || now.saturating_since(since) > self.params.lie_quick {
            return false;
        }
        self.on_lie(now, accuser, claimed)
    }

    fn on_lie(&mut self, now: Instant, accuser: u32, incarnation: u64) -> bool {
        let window = self.params.lie_window;
        let seen = self.lies.entry(accuser).or_default();
        seen.insert(incarnation, now);
        seen.retain(|_, t| now.saturating_since(*t) <= window);
        seen.len() >= self.params.lie_strikes
            && self.add_evidence(now, accuser, Reason::LiesAboutUs)
    }

    /// `relay` sent us a suspect/dead claim whose accuser's signature does not check: an
    /// honest relay verifies before it relays, so this is evidence against `relay`.
    /// Returns true when it makes new evidence.
    pub fn on_forged_claim(&mut self, now: Instant, relay: u32) -> bool {
        self.add_evidence(now, relay, Reason::ForgedClaim)
    }

    /// We hold two heads of `signer`'s log that split (see [`crate::trust::log`]): evidence
    /// anyone can check. Returns true when it makes new evidence.
    pub fn on_split_view(&mut self, now: Instant, signer: u32) -> bool {
        self.add_evidence(now, signer, Reason::SplitView)
    }

    fn add_evidence(&mut self, now: Instant, node: u32, why: Reason) -> bool {
        if node == self.me || self.evidence.contains_key(&node) {
            return false;
        }
        self.evidence.insert(node, why);
        self.evidence_since.insert(node, now);
        self.audits.remove(&node);
        self.accusers.entry(node).or_default().insert(self.me, now);
        true
    }

    /// Lapses old evidence and votes, and returns the convicted nodes whose term is over
    /// and against which fewer than `quorum` live votes remain: they are re-admitted now
    /// (their audit history starts afresh).
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let ttl = self.params.evidence_ttl;
        let lapsed: Vec<u32> = self
            .evidence_since
            .iter()
            .filter(|(_, t)| now.saturating_since(**t) >= ttl)
            .map(|(n, _)| *n)
            .collect();
        for n in lapsed {
            self.evidence.remove(&n);
            self.evidence_since.remove(&n);
        }
        // Our own vote is fresh while our evidence holds.
        for n in self.evidence.keys() {
            self.accusers.entry(*n).or_default().insert(self.me, now);
        }
        let vote_ttl = self.params.vote_ttl;
        for votes in self.accusers.values_mut() {
            votes.retain(|_, t| now.saturating_since(*t) < vote_ttl);
        }
        self.accusers.retain(|_, v| !v.is_empty());
        let term = self.params.quarantine_term;
        let due: Vec<u32> = self
            .convictions
            .iter()
            .filter(|(n, c)| {
                let factor = 1u32 << (c.count - 1).min(3);
                !c.agreed && now.saturating_since(c.since) >= term * factor && !self.convicted(**n)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in &due {
            self.convictions.remove(n);
            self.forget(*n);
        }
        due
    }

    /// A re-admitted node's audit history starts afresh.
    fn forget(&mut self, n: u32) {
        self.results.remove(&n);
        self.lies.remove(&n);
        self.next_audit.remove(&n);
        self.readmitted += 1;
    }

    /// The group's log convicted `node` ([`WatchParams::bft_verdicts`]): held until the
    /// log re-admits it ([`Watch::end_agreed`]). Returns false if we held it already.
    pub fn record_agreed(&mut self, now: Instant, node: u32) -> bool {
        if node == self.me {
            return false;
        }
        if let Some(c) = self.convictions.get_mut(&node) {
            c.agreed = true;
            return false;
        }
        self.open_conviction(now, node, true);
        true
    }

    /// Records a new conviction of `node` (one more offence: its term doubles) and ends
    /// its audits.
    fn open_conviction(&mut self, now: Instant, node: u32, agreed: bool) {
        let count = {
            let o = self.offences.entry(node).or_default();
            *o += 1;
            *o
        };
        self.convictions.insert(
            node,
            Conviction {
                since: now,
                count,
                agreed,
            },
        );
        self.audits.remove(&node);
    }

    /// The group's log re-admitted `node`. Returns false if we did not hold it.
    pub fn end_agreed(&mut self, node: u32) -> bool {
        if self.convictions.remove(&node).is_none() {
            return false;
        }
        self.forget(node);
        true
    }

    /// Agreed convictions whose term (doubled per earlier conviction, at most 8x) is over
    /// here and against which we hold no evidence: our re-admission votes are due.
    pub fn agreed_terms_over(&self, now: Instant) -> Vec<u32> {
        let term = self.params.quarantine_term;
        self.convictions
            .iter()
            .filter(|(n, c)| {
                let factor = 1u32 << (c.count - 1).min(3);
                c.agreed
                    && now.saturating_since(c.since) >= term * factor
                    && !self.evidence.contains_key(n)
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// Our evidence, when it is time to repeat our accusations (every `accuse_interval`).
    pub fn accusations_due(&mut self, now: Instant) -> Vec<u32> {
        let every = self.params.accuse_interval;
        if self
            .last_accuse
            .is_some_and(|t| now.saturating_since(t) < every)
        {
            return Vec::new();
        }
        self.last_accuse = Some(now);
        self.evidence.keys().copied().collect()
    }

    /// Who accused `node` (us included when we hold evidence), in id order.
    pub fn accusers_of(&self, node: u32) -> Vec<u32> {
        self.accusers
            .get(&node)
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default()
    }

    /// `accuser` says (now) it holds evidence against `node`; the caller has checked that
    /// it may ([`may_accuse`]). Returns true when this makes the quorum (so `node` is to be
    /// quarantined now; its audits end).
    pub fn on_accuse(&mut self, now: Instant, accuser: u32, node: u32) -> bool {
        if node == self.me || accuser == node {
            return false;
        }
        self.accusers.entry(node).or_default().insert(accuser, now);
        self.check_quorum(now, node)
    }

    /// Records a conviction of `node` when its live votes make the quorum and it is not
    /// convicted yet. Returns true for a new conviction.
    pub fn check_quorum(&mut self, now: Instant, node: u32) -> bool {
        if !self.convicted(node) || self.convictions.contains_key(&node) {
            return false;
        }
        self.open_conviction(now, node, false);
        true
    }

    /// True when `node` has the quorum of (live) accusers.
    pub fn convicted(&self, node: u32) -> bool {
        self.accusers
            .get(&node)
            .is_some_and(|s| s.len() >= self.params.quorum)
    }

    /// True while we hold `node` convicted (its term not over, or votes still a quorum).
    pub fn is_convicted(&self, node: u32) -> bool {
        self.convictions.contains_key(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    /// A link heard lately, never silent, with a keepalive of one second.
    fn talking(_: u32) -> LinkState {
        LinkState {
            heard: true,
            silences: 0,
            keepalive: Duration::from_secs(1),
        }
    }

    /// Runs audits of neighbour 2 once a second for `secs`; `answers(round)` says whether the
    /// target answered. Returns the rounds at which new evidence appeared.
    fn audits(w: &mut Watch, secs: u64, answers: &dyn Fn(u64) -> bool) -> Vec<u64> {
        let mut got = Vec::new();
        for round in 0..secs {
            let t = at(round);
            if !w.judge(t, &|_| true, &talking).is_empty() {
                got.push(round);
            }
            if let Some(e) = w.audit(t, 2, &[3], &|_| Duration::from_millis(10), 0) {
                assert_eq!(e.to, 3);
                if answers(round) {
                    w.on_reply(3, e.nonce);
                }
            }
        }
        got
    }

    #[test]
    fn a_black_hole_is_evidence_after_seven_failures_and_audits_speed_up() {
        let mut w = Watch::new(1, WatchParams::default());
        let got = audits(&mut w, 60, &|_| false);
        // Audits at 0 s (failed at its 1 s deadline, judged 1.5 keepalives later, at the
        // 3 s tick), at 5 s (the slow cadence), then one a second: failures judged at 3, 8,
        // 9, 10, 11, 12 and 13 s. The audits sent at 11 and 12 s are still waiting when the
        // evidence is found.
        assert_eq!(got, vec![13]);
        assert_eq!(w.evidence().get(&2), Some(&Reason::DropsForwarding));
        assert_eq!(w.view().audits_sent, 9);
    }

    #[test]
    fn an_honest_neighbour_is_audited_slowly_and_never_blamed() {
        let mut w = Watch::new(1, WatchParams::default());
        assert!(audits(&mut w, 100, &|_| true).is_empty());
        assert_eq!(w.view().audits_sent, 20);
        assert_eq!(w.view().audits_failed, 0);
    }

    #[test]
    fn a_lossy_path_is_not_a_black_hole() {
        // Every other audit through the neighbour fails, for ever: never 7 of the last 8.
        let mut w = Watch::new(1, WatchParams::default());
        assert!(audits(&mut w, 300, &|r| r % 2 == 0).is_empty());
        assert!(w.evidence().is_empty());
        assert!(w.view().audits_failed > 50);
    }

    #[test]
    fn audits_are_not_judged_when_the_target_is_dead_or_the_neighbour_silent() {
        let mut w = Watch::new(1, WatchParams::default());
        for round in 0..60u64 {
            let t = at(round);
            let alive = |x: u32| round % 2 == 0 || x != 3;
            let heard = |_: u32| LinkState {
                heard: round % 2 == 1,
                ..talking(2)
            };
            assert!(w.judge(t, &alive, &heard).is_empty());
            w.audit(t, 2, &[3], &|_| Duration::ZERO, 0);
        }
        assert!(w.evidence().is_empty());
        assert_eq!(w.view().audits_failed, 0);
    }

    #[test]
    fn a_reply_from_the_wrong_node_does_not_count() {
        let mut w = Watch::new(1, WatchParams::default());
        let e = w.audit(at(0), 2, &[3], &|_| Duration::ZERO, 0).unwrap();
        w.on_reply(2, e.nonce); // the neighbour answering in its target's place
        w.judge(at(2), &|_| true, &talking);
        assert_eq!(
            w.view().audits_failed,
            0,
            "judged 1.5 keepalives after its deadline"
        );
        w.judge(at(3), &|_| true, &talking);
        assert_eq!(w.view().audits_failed, 1);
    }

    /// An echo sent while the link to the neighbour is down dies on the link. The audit is
    /// judged a keepalive after its deadline; by then the link is back and the neighbour
    /// heard again, but it was silent for longer than its keepalive since the audit began,
    /// so the audit is excused. Without the silence (a neighbour that talks all along and
    /// drops the echo) the same audit is a strike.
    #[test]
    fn an_audit_across_a_link_silence_is_excused_and_one_without_is_a_strike() {
        for silent in [true, false] {
            let mut w = Watch::new(1, WatchParams::default());
            w.audit(at(0), 2, &[3], &|_| Duration::from_millis(10), 4)
                .unwrap();
            let link = |_: u32| LinkState {
                heard: true,
                silences: if silent { 5 } else { 4 },
                keepalive: Duration::from_secs(1),
            };
            w.judge(at(2), &|_| true, &link);
            assert_eq!(
                w.view().audits_failed,
                0,
                "not judged before deadline + 1.5 keepalives"
            );
            w.judge(at(3), &|_| true, &link);
            assert_eq!(
                w.view().audits_failed,
                u64::from(!silent),
                "silent: {silent}"
            );
        }
    }

    /// A link that flaps (down 3 s, up 3 s) for two minutes, the neighbour honest: never
    /// blamed; a neighbour that talks all along and forwards nothing: evidence.
    #[test]
    fn a_flapping_link_does_not_make_a_black_hole_and_a_talking_black_hole_is_one() {
        let run = |flapping: bool| {
            let mut w = Watch::new(1, WatchParams::default());
            let mut silences = 0u64;
            let mut was_down = false;
            for ms in (0..120_000u64).step_by(250) {
                let t = Instant::ZERO + Duration::from_millis(ms);
                let down = flapping && (ms / 3000) % 2 == 1;
                if was_down && !down {
                    silences += 1; // the first frame after the outage ends a silence
                }
                was_down = down;
                let link = |_: u32| LinkState {
                    heard: !down,
                    silences,
                    keepalive: Duration::from_secs(1),
                };
                w.judge(t, &|_| true, &link);
                if let Some(e) = w.audit(t, 2, &[3], &|_| Duration::from_millis(10), silences) {
                    if flapping && !down {
                        w.on_reply(3, e.nonce);
                    }
                }
            }
            w
        };
        let honest = run(true);
        assert!(honest.evidence().is_empty(), "{:?}", honest.view().strikes);
        let hole = run(false);
        assert_eq!(hole.evidence().get(&2), Some(&Reason::DropsForwarding));
    }

    #[test]
    fn only_quick_claims_on_our_current_incarnation_are_lies() {
        let mut w = Watch::new(1, WatchParams::default());
        // After each of many partitions an honest node claims us dead: on an old
        // incarnation (it has not heard our refutation), or long after we refuted.
        for k in 0..10u64 {
            assert!(!w.on_claim(at(100 * k + 50), 5, k, (k + 1, at(100 * k + 40))));
            assert!(!w.on_claim(at(100 * k + 50), 5, k + 1, (k + 1, at(100 * k + 40))));
        }
        // A liar: each refutation answered within a second.
        assert!(!w.on_claim(at(2000), 6, 7, (7, at(1999))));
        assert!(!w.on_claim(at(2002), 6, 8, (8, at(2001))));
        assert!(w.on_claim(at(2004), 6, 9, (9, at(2003))));
        assert!(w.evidence().contains_key(&6) && !w.evidence().contains_key(&5));
    }

    #[test]
    fn lies_count_once_per_incarnation() {
        let mut w = Watch::new(1, WatchParams::default());
        for i in 0..10 {
            assert!(!w.on_lie(at(i), 5, 7));
        }
        assert!(!w.on_lie(at(1), 6, 7));
        assert!(!w.on_lie(at(2), 6, 8));
        assert!(w.on_lie(at(3), 6, 9));
        assert_eq!(w.evidence().get(&6), Some(&Reason::LiesAboutUs));
        assert!(!w.evidence().contains_key(&5));
    }

    #[test]
    fn one_accuser_is_not_a_quorum() {
        let mut w = Watch::new(1, WatchParams::default());
        assert!(!w.on_accuse(at(0), 9, 4));
        assert!(
            !w.on_accuse(at(0), 9, 4),
            "the same accuser twice is one vote"
        );
        assert!(!w.convicted(4));
        assert!(w.on_accuse(at(0), 8, 4));
        assert!(w.convicted(4));
        assert!(!w.on_accuse(at(0), 7, 4), "the quorum is reported once");
        // Nobody gets us quarantined at ourselves, and nobody accuses itself.
        assert!(!w.on_accuse(at(0), 9, 1) && !w.on_accuse(at(0), 8, 1));
        assert!(!w.on_accuse(at(0), 3, 3));
        assert!(!w.convicted(1) && !w.convicted(3));
    }

    #[test]
    fn own_evidence_is_one_vote() {
        let mut w = Watch::new(1, WatchParams::default());
        assert!(!w.on_lie(at(0), 6, 1));
        assert!(!w.on_lie(at(0), 6, 2));
        assert!(w.on_lie(at(0), 6, 3));
        assert!(!w.convicted(6));
        assert!(w.on_accuse(at(0), 2, 6));
        assert!(w.convicted(6));
    }

    #[test]
    fn votes_lapse_unless_repeated() {
        let mut w = Watch::new(1, WatchParams::default());
        assert!(!w.on_accuse(at(0), 9, 4));
        // 9's vote lapsed 30 s later: 8's alone is no quorum, and 9's next one comes after
        // 8's lapsed.
        w.expire(at(30));
        assert!(!w.on_accuse(at(31), 8, 4));
        w.expire(at(61));
        assert!(!w.on_accuse(at(62), 9, 4));
        assert!(!w.convicted(4));
        // Repeated within a vote's life, two votes are a quorum.
        w.expire(at(80));
        assert!(w.on_accuse(at(85), 8, 4));
        assert!(w.is_convicted(4));
    }

    #[test]
    fn own_evidence_lapses_after_its_ttl() {
        let mut w = Watch::new(1, WatchParams::default());
        assert!(!w.on_lie(at(0), 6, 1));
        assert!(!w.on_lie(at(0), 6, 2));
        assert!(w.on_lie(at(0), 6, 3));
        w.expire(at(119));
        assert!(w.evidence().contains_key(&6), "evidence held for its ttl");
        assert_eq!(w.accusers_of(6), vec![1]);
        w.expire(at(120));
        assert!(w.evidence().is_empty(), "evidence lapsed after 120 s");
        // Our vote lapses a vote ttl after our last refresh of it (at 119 s).
        w.expire(at(148));
        assert_eq!(w.accusers_of(6), vec![1]);
        w.expire(at(149));
        assert!(w.accusers_of(6).is_empty());
    }

    #[test]
    fn a_convicted_node_is_readmitted_after_its_term_once_votes_lapse() {
        let mut w = Watch::new(1, WatchParams::default());
        w.on_accuse(at(0), 8, 4);
        assert!(w.on_accuse(at(0), 9, 4));
        // Votes kept up by the accusers: no re-admission even after the term.
        for t in (5..=400).step_by(5) {
            w.on_accuse(at(t), 8, 4);
            w.on_accuse(at(t), 9, 4);
            assert!(
                w.expire(at(t)).is_empty(),
                "re-admitted at {t} s with live votes"
            );
        }
        // The accusers stop (their evidence lapsed): re-admitted once the votes lapse.
        assert!(w.expire(at(429)).is_empty());
        assert_eq!(w.expire(at(430)), vec![4]);
        assert!(!w.is_convicted(4));
        assert_eq!(w.view().readmitted, 1);
        // A second conviction: a term twice as long.
        w.on_accuse(at(500), 8, 4);
        assert!(w.on_accuse(at(500), 9, 4));
        assert_eq!(w.view().convicted.get(&4), Some(&2));
        assert!(w.expire(at(1099)).is_empty());
        assert_eq!(w.expire(at(1100)), vec![4]);
    }

    #[test]
    fn the_term_is_served_even_when_votes_lapse_early() {
        let mut w = Watch::new(1, WatchParams::default());
        w.on_accuse(at(0), 8, 4);
        assert!(w.on_accuse(at(0), 9, 4));
        assert!(w.expire(at(299)).is_empty());
        assert_eq!(w.expire(at(300)), vec![4]);
    }
}
