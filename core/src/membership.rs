//! Cell membership and failure detection: SWIM with Lifeguard.
//!
//! SWIM (Das, Gupta, Motivala 2002): every protocol period a member probes one peer chosen
//! in randomized round-robin order; if no ack arrives within the probe timeout it asks `k`
//! other members to probe the target indirectly; if that fails too the target becomes
//! *suspect*, and a suspect that does not refute (by gossiping a higher incarnation) before
//! its suspicion timeout is declared *dead*. Updates travel piggybacked on probes and acks
//! and on a small gossip fan-out, each retransmitted `λ·⌈log10(n+1)⌉` times.
//!
//! Lifeguard (Dadgar, Phillips, Currey 2018) adds:
//! - **local health multiplier** (LHM): a saturating score raised by failed probes and
//!   missing nacks, lowered by acks; probe period and probe timeout are stretched by
//!   `(1 + LHM)` so a slow or overloaded member accuses others less;
//! - **nacks** from indirect-probe helpers, so the requester can tell "target silent" from
//!   "I am not hearing anybody";
//! - **dynamic suspicion**: the timeout starts at `max = β·min` and shrinks toward
//!   `min = α·log10(n)·T` as independent confirmations arrive:
//!   `timeout(C) = max(min, max − (max − min)·ln(C+1)/ln(K+1))`;
//! - **buddy system**: a probe of a suspect member carries the suspicion, so the member can
//!   refute at once.
//!
//! And, in the part memberlist's push-pull plays on join, a **catch-up** ([`Membership::sync_for`],
//! sent by the node): a member that reboots (seen by its cell neighbours as a new boot
//! epoch) or that speaks while we hold it dead is sent the incarnations above 0 and the
//! deaths our view holds. Without it a rebooted view keeps every member at incarnation 0,
//! and its accusations are refused by peers that know higher ones.
//!
//! One instance runs per cell (peers with the same layer/cluster/cell). Probe timeouts add
//! the overlay route's round trip (members may be several hops away).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use crate::io::{Effects, Event};
use crate::time::Instant;
use crate::time::{TimerKey, Timers};
use crate::wire::{Dest, MemberState, Payload, Update};

/// SWIM/Lifeguard parameters (emulated time). Defaults are chosen so that a crashed tile
/// in a 1,000-tile cell is dead at every peer in < 10 s (see `benches/detection.rs`).
#[derive(Debug, Clone)]
pub struct SwimParams {
    /// Protocol period `T` (safe range 100 ms – 10 s). Default 500 ms: half of memberlist's
    /// 1 s, because the 10 s target leaves no room for a 12 s minimum suspicion.
    pub protocol_period: Duration,
    /// Base probe timeout; the route's round trip ×1.5 is added per target. Default 150 ms.
    pub probe_timeout: Duration,
    /// Indirect probes `k` per failed direct probe (0–8). Default 3 (as memberlist).
    pub indirect_probes: usize,
    /// `α`: minimum suspicion = α·max(1, log10 n)·T. Default 2 → 3 s at n = 1,000.
    pub suspicion_alpha: u32,
    /// `β`: maximum suspicion = β·minimum. Default 3 → 9 s at n = 1,000.
    pub suspicion_beta: u32,
    /// Confirmations `K` after which the suspicion timeout reaches its minimum. Default 3.
    pub suspicion_confirmations: u32,
    /// Gossip round interval and fan-out for pending updates. Defaults 100 ms, 3.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// `λ`: retransmissions per update = λ·⌈log10(n+1)⌉. Default 4.
    pub retransmit_mult: u32,
    /// Saturation of the local health multiplier. Default 8.
    pub max_lhm: u32,
    /// Updates piggybacked per message (≤ `wire::MAX_UPDATES`). Default 24.
    pub max_piggyback: usize,
    /// Bound on queued updates (the oldest-most-sent are dropped beyond it). Default 4096.
    pub queue_cap: usize,
    /// Bound on indirect probes this node runs for others at once. Default 64.
    pub max_forwards: usize,
    /// Every this often, probe one member believed dead: if it is alive (after a healed
    /// partition, or a false positive) the buddy piggyback makes it refute and rejoin.
    /// Plays the role of memberlist's push-pull/reconnect. Default 10 s.
    pub reclaim_interval: Duration,
    /// No probes before routes have had time to form after start. Default 1 s.
    pub startup_grace: Duration,
}

impl Default for SwimParams {
    fn default() -> Self {
        SwimParams {
            protocol_period: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(150),
            indirect_probes: 3,
            suspicion_alpha: 2,
            suspicion_beta: 3,
            suspicion_confirmations: 3,
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            retransmit_mult: 4,
            max_lhm: 8,
            max_piggyback: 24,
            queue_cap: 4096,
            max_forwards: 64,
            reclaim_interval: Duration::from_secs(10),
            startup_grace: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone)]
struct Suspicion {
    start: Instant,
    confirmers: BTreeSet<u32>,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Member {
    state: MemberState,
    incarnation: u64,
    since: Instant,
    /// Boxed: at most a handful of a cell's ~10^3 members are suspect at once, and inline
    /// it took 40 of the member's 80 bytes in every tile's table of its cell.
    suspicion: Option<Box<Suspicion>>,
    /// Whose claim made it suspect or dead (kept through the suspicion's expiry), so a
    /// convicted liar's claims can be taken back ([`Membership::discredit`]).
    accuser: Option<u32>,
}

#[derive(Debug, Clone)]
struct Probe {
    id: u32,
    target: u32,
    acked: bool,
    nacks: u32,
    expected_nacks: u32,
    /// Whether we had a route to the target when we probed it.
    reachable: bool,
}

#[derive(Debug, Clone)]
struct Forward {
    requester: u32,
    orig_probe: u32,
    deadline: Instant,
}

/// A member as reported in `/state`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: u32,
    pub state: MemberState,
    pub incarnation: u64,
    pub since_emulated_s: f64,
}

/// Transmit-limited broadcast queue (memberlist `TransmitLimitedQueue`): one pending update
/// per node, least-sent first, dropped after the retransmit limit.
#[derive(Debug, Clone, Default)]
struct BroadcastQueue {
    items: BTreeMap<u32, (Update, u32)>,
}

impl BroadcastQueue {
    fn push(&mut self, u: Update, cap: usize) {
        self.items.insert(u.node, (u, 0));
        while self.items.len() > cap {
            // Drop the most-transmitted (then highest node id): it has spread the furthest.
            let victim = self
                .items
                .iter()
                .max_by_key(|(n, (_, t))| (*t, **n))
                .map(|(n, _)| *n);
            match victim {
                Some(v) => {
                    self.items.remove(&v);
                }
                None => break,
            }
        }
    }

    fn take(&mut self, max: usize, limit: u32, skip: Option<u32>) -> Vec<Update> {
        let mut order: Vec<(u32, u32)> = self
            .items
            .iter()
            .filter(|(n, _)| Some(**n) != skip)
            .map(|(n, (_, t))| (*t, *n))
            .collect();
        order.sort_unstable();
        let mut out = Vec::new();
        for (_, n) in order.into_iter().take(max) {
            if let Some((u, t)) = self.items.get_mut(&n) {
                out.push(*u);
                *t += 1;
                if *t >= limit {
                    self.items.remove(&n);
                }
            }
        }
        out
    }
}

/// SWIM + Lifeguard state of one node for its cell.
#[derive(Debug, Clone)]
pub struct Membership {
    me: u32,
    incarnation: u64,
    params: SwimParams,
    members: BTreeMap<u32, Member>,
    /// Members not dead, sorted: candidates for gossip and indirect probes.
    active: Vec<u32>,
    probe_order: Vec<u32>,
    probe_idx: usize,
    probe: Option<Probe>,
    next_probe_id: u32,
    forwards: BTreeMap<u32, Forward>,
    lhm: u32,
    queue: BroadcastQueue,
    leaving: bool,
}

/// Round trip allowance to reach `node` over the overlay (from the routing table).
pub type RttFn<'a> = &'a dyn Fn(u32) -> Duration;

/// Whether the overlay has a route to `node` now (from the routing table). Gossip and
/// indirect probes go only to members we can reach: a frame to a member with no route is
/// dropped at our own outbox, so sending it would spend an update's retransmissions (or a
/// helper's nack) on nothing. When a churned ring splits in two, that waste left a tile
/// that heard of a death from no one and found it by its own probe 12.5 s later.
pub type ReachFn<'a> = &'a dyn Fn(u32) -> bool;

impl Membership {
    /// Entries held, per structure (see [`crate::Node::footprint`]).
    pub fn footprint(&self, out: &mut Vec<(&'static str, usize)>) {
        out.push(("membership.members", self.members.len()));
        out.push((
            "membership.suspicions",
            self.members
                .values()
                .filter(|m| m.suspicion.is_some())
                .count(),
        ));
        out.push(("membership.active", self.active.len()));
        out.push(("membership.probe_order", self.probe_order.len()));
        out.push(("membership.forwards", self.forwards.len()));
        out.push(("membership.queue", self.queue.items.len()));
    }
    pub fn new(me: u32, incarnation: u64, peers: &[u32], params: SwimParams) -> Self {
        let members = peers
            .iter()
            .filter(|p| **p != me)
            .map(|p| {
                let m = Member {
                    state: MemberState::Alive,
                    incarnation: 0,
                    since: Instant::ZERO,
                    suspicion: None,
                    accuser: None,
                };
                (*p, m)
            })
            .collect::<BTreeMap<_, _>>();
        let active = members.keys().copied().collect();
        Membership {
            me,
            incarnation,
            params,
            members,
            active,
            probe_order: Vec::new(),
            probe_idx: 0,
            probe: None,
            next_probe_id: 1,
            forwards: BTreeMap::new(),
            lhm: 0,
            queue: BroadcastQueue::default(),
            leaving: false,
        }
    }

    /// Starts the probe and gossip timers (with a random phase so members do not beat).
    pub fn start(&mut self, now: Instant, rng: &mut impl Rng, timers: &mut Timers) {
        let phase = rng.gen_range(0..self.params.protocol_period.as_nanos() as u64 + 1);
        let start = now + self.params.startup_grace;
        timers.set(TimerKey::ProbeTick, start + Duration::from_nanos(phase));
        let r = rng.gen_range(0..self.params.reclaim_interval.as_nanos() as u64 + 1);
        timers.set(TimerKey::Reclaim, start + Duration::from_nanos(r));
        let g = rng.gen_range(0..self.params.gossip_interval.as_nanos() as u64 + 1);
        timers.set(TimerKey::Gossip, now + Duration::from_nanos(g));
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
    pub fn local_health(&self) -> u32 {
        self.lhm
    }
    pub fn cell_size(&self) -> usize {
        self.members.len() + 1
    }
    pub fn state_of(&self, node: u32) -> Option<MemberState> {
        if node == self.me {
            return Some(MemberState::Alive);
        }
        self.members.get(&node).map(|m| m.state)
    }
    /// Every member of the cell but us, whatever its state.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.keys().copied()
    }
    /// The incarnation we know `node` by.
    pub fn incarnation_of(&self, node: u32) -> Option<u64> {
        self.members.get(&node).map(|m| m.incarnation)
    }
    pub fn is_member(&self, node: u32) -> bool {
        self.members.contains_key(&node)
    }
    /// Counts of alive, suspect, dead as seen here (self counted alive).
    pub fn counts(&self) -> [u32; 3] {
        let mut c = [1, 0, 0];
        for m in self.members.values() {
            c[m.state as usize] += 1;
        }
        c
    }
    pub fn view(&self) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                id: *id,
                state: m.state,
                incarnation: m.incarnation,
                since_emulated_s: m.since.as_secs_f64(),
            })
            .collect()
    }
    /// One member's entry as [`view`](Self::view) lists it (`None`: not a member), without
    /// listing the whole cell (the twin's recorder reads a few members of many nodes).
    pub fn member_view(&self, node: u32) -> Option<MemberView> {
        self.members.get(&node).map(|m| MemberView {
            id: node,
            state: m.state,
            incarnation: m.incarnation,
            since_emulated_s: m.since.as_secs_f64(),
        })
    }
    /// Members currently alive or suspect, sorted.
    pub fn active(&self) -> &[u32] {
        &self.active
    }
    /// Graceful leave: stop refuting and announce our own death.
    pub fn leave(&mut self) {
        self.leaving = true;
        let u = Update {
            node: self.me,
            state: MemberState::Dead,
            incarnation: self.incarnation,
            from: self.me,
        };
        self.enqueue(u);
    }

    fn n_log(&self) -> f64 {
        (self.cell_size() as f64).log10().max(1.0)
    }
    fn retransmit_limit(&self) -> u32 {
        let n = self.cell_size() as f64 + 1.0;
        self.params.retransmit_mult * (n.log10().ceil() as u32).max(1)
    }
    fn suspicion_bounds(&self) -> (Duration, Duration) {
        let min = self
            .params
            .protocol_period
            .mul_f64(self.params.suspicion_alpha as f64 * self.n_log());
        (min, min * self.params.suspicion_beta)
    }
    fn suspicion_timeout(&self, confirmations: u32) -> Duration {
        let (min, max) = self.suspicion_bounds();
        let k = self.params.suspicion_confirmations.max(1) as f64;
        let frac = ((confirmations as f64 + 1.0).ln() / (k + 1.0).ln()).min(1.0);
        let t = max.as_secs_f64() - (max.as_secs_f64() - min.as_secs_f64()) * frac;
        Duration::from_secs_f64(t.max(min.as_secs_f64()))
    }
    fn multiplier(&self) -> u32 {
        1 + self.lhm
    }
    fn probe_timeout(&self, rtt: Duration) -> Duration {
        (self.params.probe_timeout + rtt) * self.multiplier()
    }

    fn enqueue(&mut self, u: Update) {
        self.queue.push(u, self.params.queue_cap);
    }

    fn piggyback(&mut self, for_node: Option<u32>) -> Vec<Update> {
        let limit = self.retransmit_limit();
        let mut v = Vec::new();
        // Buddy system: tell a suspect (or dead) member what we think of it first.
        if let Some(t) = for_node {
            if let Some(m) = self.members.get(&t) {
                if m.state != MemberState::Alive {
                    v.push(Update {
                        node: t,
                        state: m.state,
                        incarnation: m.incarnation,
                        from: self.me,
                    });
                }
            }
        }
        let skip = if v.is_empty() { None } else { for_node };
        v.extend(
            self.queue
                .take(self.params.max_piggyback - v.len(), limit, skip),
        );
        v
    }

    fn set_state(
        &mut self,
        now: Instant,
        node: u32,
        state: MemberState,
        inc: u64,
        fx: &mut Effects,
    ) {
        let Some(m) = self.members.get_mut(&node) else {
            return;
        };
        let changed = m.state != state;
        m.incarnation = inc;
        if changed {
            m.state = state;
            m.since = now;
            fx.events.push(Event::MemberChanged {
                node,
                state,
                incarnation: inc,
            });
        }
        if state != MemberState::Suspect {
            m.suspicion = None;
        }
        if state == MemberState::Alive {
            m.accuser = None;
        }
        let was_active = self.active.binary_search(&node);
        match (state == MemberState::Dead, was_active) {
            (true, Ok(i)) => {
                self.active.remove(i);
            }
            (false, Err(i)) => self.active.insert(i, node),
            _ => {}
        }
    }

    /// Applies updates received from `src` (piggybacked or gossiped).
    pub fn apply(
        &mut self,
        now: Instant,
        updates: &[Update],
        fx: &mut Effects,
        timers: &mut Timers,
    ) {
        for u in updates {
            self.apply_one(now, u, fx, timers);
        }
    }

    fn apply_one(&mut self, now: Instant, u: &Update, fx: &mut Effects, timers: &mut Timers) {
        if u.node == self.me {
            if u.state != MemberState::Alive && u.incarnation >= self.incarnation && !self.leaving {
                // Refute: a strictly higher incarnation overrides any suspicion or death.
                self.incarnation = u.incarnation + 1;
                let inc = self.incarnation;
                fx.events.push(Event::Refuted { incarnation: inc });
                self.enqueue(Update {
                    node: self.me,
                    state: MemberState::Alive,
                    incarnation: inc,
                    from: self.me,
                });
            } else if u.state != MemberState::Alive && !self.leaving {
                // Someone still holds an old accusation we already refuted: re-announce.
                let inc = self.incarnation;
                self.enqueue(Update {
                    node: self.me,
                    state: MemberState::Alive,
                    incarnation: inc,
                    from: self.me,
                });
            }
            return;
        }
        let Some(m) = self.members.get(&u.node) else {
            return;
        };
        let (cur_state, cur_inc) = (m.state, m.incarnation);
        match u.state {
            MemberState::Alive => {
                if u.incarnation > cur_inc {
                    self.set_state(now, u.node, MemberState::Alive, u.incarnation, fx);
                    self.enqueue(*u);
                }
            }
            MemberState::Suspect => {
                if u.incarnation < cur_inc || cur_state == MemberState::Dead {
                    return;
                }
                if cur_state == MemberState::Suspect && u.incarnation == cur_inc {
                    self.confirm(now, u.node, u.from, timers);
                    return;
                }
                self.suspect(now, u.node, u.incarnation, u.from, fx, timers);
            }
            MemberState::Dead => {
                if u.incarnation < cur_inc || cur_state == MemberState::Dead {
                    return;
                }
                self.set_state(now, u.node, MemberState::Dead, u.incarnation, fx);
                self.set_accuser(u.node, u.from);
                self.enqueue(*u);
            }
        }
    }

    fn set_accuser(&mut self, node: u32, by: u32) {
        if let Some(m) = self.members.get_mut(&node) {
            m.accuser = Some(by);
        }
    }

    /// Takes back what a convicted liar made us believe: members suspect or dead on its
    /// claim are alive again in our view at the same incarnation (no claim is sent; our own
    /// probes find out if one really is gone).
    pub fn discredit(&mut self, now: Instant, liar: u32, fx: &mut Effects, timers: &mut Timers) {
        let victims: Vec<(u32, u64)> = self
            .members
            .iter()
            .filter(|(n, m)| {
                **n != liar && m.state != MemberState::Alive && m.accuser == Some(liar)
            })
            .map(|(n, m)| (*n, m.incarnation))
            .collect();
        for (n, inc) in victims {
            self.set_state(now, n, MemberState::Alive, inc, fx);
        }
        self.schedule_suspicion(timers);
    }

    fn suspect(
        &mut self,
        now: Instant,
        node: u32,
        inc: u64,
        from: u32,
        fx: &mut Effects,
        timers: &mut Timers,
    ) {
        self.set_state(now, node, MemberState::Suspect, inc, fx);
        self.set_accuser(node, from);
        let deadline = now + self.suspicion_timeout(0);
        if let Some(m) = self.members.get_mut(&node) {
            m.suspicion = Some(Box::new(Suspicion {
                start: now,
                confirmers: BTreeSet::from([from]),
                deadline,
            }));
        }
        self.enqueue(Update {
            node,
            state: MemberState::Suspect,
            incarnation: inc,
            from,
        });
        self.schedule_suspicion(timers);
    }

    /// Lifeguard: an independent confirmation shortens the suspicion timeout.
    fn confirm(&mut self, _now: Instant, node: u32, from: u32, timers: &mut Timers) {
        let k = self.params.suspicion_confirmations;
        let Some(s) = self.members.get(&node).and_then(|m| m.suspicion.clone()) else {
            return;
        };
        if s.confirmers.contains(&from) || s.confirmers.len() as u32 > k {
            return;
        }
        let mut s = s;
        s.confirmers.insert(from);
        let c = s.confirmers.len() as u32 - 1;
        s.deadline = s.start + self.suspicion_timeout(c);
        let inc = self.members[&node].incarnation;
        if let Some(m) = self.members.get_mut(&node) {
            m.suspicion = Some(s);
        }
        // Re-gossip so others count the same confirmation.
        self.enqueue(Update {
            node,
            state: MemberState::Suspect,
            incarnation: inc,
            from,
        });
        self.schedule_suspicion(timers);
    }

    fn schedule_suspicion(&self, timers: &mut Timers) {
        let next = self
            .members
            .values()
            .filter_map(|m| m.suspicion.as_ref().map(|s| s.deadline))
            .min();
        match next {
            Some(t) => timers.set(TimerKey::Suspicion, t),
            None => timers.cancel(TimerKey::Suspicion),
        }
    }

    pub fn on_suspicion_timer(&mut self, now: Instant, fx: &mut Effects, timers: &mut Timers) {
        let expired: Vec<(u32, u64)> = self
            .members
            .iter()
            .filter(|(_, m)| m.suspicion.as_ref().is_some_and(|s| s.deadline <= now))
            .map(|(id, m)| (*id, m.incarnation))
            .collect();
        for (node, inc) in expired {
            self.set_state(now, node, MemberState::Dead, inc, fx);
            self.enqueue(Update {
                node,
                state: MemberState::Dead,
                incarnation: inc,
                from: self.me,
            });
        }
        self.schedule_suspicion(timers);
    }

    fn next_target(&mut self, rng: &mut impl Rng) -> Option<u32> {
        for _ in 0..2 {
            while self.probe_idx < self.probe_order.len() {
                let t = self.probe_order[self.probe_idx];
                self.probe_idx += 1;
                if self
                    .members
                    .get(&t)
                    .is_some_and(|m| m.state != MemberState::Dead)
                {
                    return Some(t);
                }
            }
            // Randomized round robin: reshuffle once per pass.
            self.probe_order = self.active.clone();
            self.probe_order.shuffle(rng);
            self.probe_idx = 0;
        }
        None
    }

    /// A hint from the link layer: `n`, a direct neighbour, missed its keepalives. SWIM's
    /// randomized round robin only bounds when `n` is next probed by one pass (n periods,
    /// stretched by the local health multiplier), and a member beside a cut may be the only
    /// one able to find a death at all: it is probed at the next period instead. The probe
    /// is the ordinary one (direct, then through helpers, suspicion on failure): the hint
    /// changes when, never what, so a neighbour that is merely quiet only gets probed early.
    /// With no probe in flight the period starts now.
    pub fn probe_next(&mut self, now: Instant, n: u32, timers: &mut Timers) {
        if n == self.me || self.probe.as_ref().is_some_and(|p| p.target == n) {
            return;
        }
        if self
            .members
            .get(&n)
            .is_none_or(|m| m.state != MemberState::Alive)
        {
            return;
        }
        let at = self.probe_idx.min(self.probe_order.len());
        self.probe_order.insert(at, n);
        if self.probe.is_none() {
            timers.set(TimerKey::ProbeTick, now);
        }
    }

    /// Protocol period: probe the next member.
    pub fn on_probe_tick(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        rtt: RttFn<'_>,
        reach: ReachFn<'_>,
        fx: &mut Effects,
        timers: &mut Timers,
    ) {
        let period = self.params.protocol_period * self.multiplier();
        let Some(target) = self.next_target(rng) else {
            timers.set(TimerKey::ProbeTick, now + period);
            return;
        };
        let pt = self.probe_timeout(rtt(target));
        // The period must leave room for the direct and the indirect phase.
        timers.set(TimerKey::ProbeTick, now + period.max(pt * 4));
        let reachable = reach(target);
        let id = self.next_probe_id;
        self.next_probe_id = self.next_probe_id.wrapping_add(1).max(1);
        self.probe = Some(Probe {
            id,
            target,
            acked: false,
            nacks: 0,
            expected_nacks: 0,
            reachable,
        });
        // A probe of a member we have no route to still runs (its failure is how a
        // partition shows), but carries no updates: they would be dropped with it.
        let updates = if reachable {
            self.piggyback(Some(target))
        } else {
            Vec::new()
        };
        fx.send(Dest::Node(target), Payload::Ping { probe: id, updates });
        timers.set(TimerKey::ProbeTimeout, now + pt);
    }

    pub fn on_probe_timeout(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        rtt: RttFn<'_>,
        reach: ReachFn<'_>,
        fx: &mut Effects,
        timers: &mut Timers,
    ) {
        let Some(p) = self.probe.clone() else { return };
        if p.acked {
            return;
        }
        let mut helpers: Vec<u32> = self
            .active
            .iter()
            .copied()
            .filter(|n| {
                *n != p.target
                    && reach(*n)
                    && self
                        .members
                        .get(n)
                        .is_some_and(|m| m.state == MemberState::Alive)
            })
            .collect();
        helpers.shuffle(rng);
        helpers.truncate(self.params.indirect_probes);
        let mut wait = self.probe_timeout(rtt(p.target));
        for h in &helpers {
            let updates = self.piggyback(Some(*h));
            fx.send(
                Dest::Node(*h),
                Payload::PingReq {
                    probe: p.id,
                    target: p.target,
                    updates,
                },
            );
            wait = wait.max(self.probe_timeout(rtt(*h)) + self.probe_timeout(rtt(p.target)));
        }
        if let Some(pr) = self.probe.as_mut() {
            pr.expected_nacks = helpers.len() as u32;
        }
        timers.set(TimerKey::IndirectTimeout, now + wait);
    }

    pub fn on_indirect_timeout(&mut self, now: Instant, fx: &mut Effects, timers: &mut Timers) {
        let Some(p) = self.probe.take() else { return };
        if p.acked {
            return;
        }
        // Lifeguard counts a failed probe, and a missing nack, against our own health (the
        // local health multiplier stretches our periods and timeouts). We count them only
        // when the probe says something about *us*: we had a route to the target, and no
        // helper answered (or there was none to ask). A helper's nack shows we hear the
        // cell in time, so the failure was the target's or the network's. Lifeguard's rule
        // counted every failed probe: in a cell cut in two, the tiles beside the cut probe
        // members across it over routes not yet withdrawn (a neighbour is down after 4 s of
        // silence), their periods stretched up to 9× and their own detections with them —
        // worst 13.3 s over 60 seeds of a ring cut by two crashes, 5 of 60 over the spec's
        // 10 s; with this rule 8.9 s, none over (`a_ring_cut_…` in sim/tests/harness.rs).
        // A node that is itself slow still hears no nack in time and still backs off.
        let missing = p.expected_nacks.saturating_sub(p.nacks);
        if p.reachable && (p.expected_nacks == 0 || p.nacks == 0) {
            self.lhm = (self.lhm + 1 + u32::from(missing > 0)).min(self.params.max_lhm);
        }
        let Some(m) = self.members.get(&p.target) else {
            return;
        };
        match m.state {
            MemberState::Alive => {
                let inc = m.incarnation;
                self.suspect(now, p.target, inc, self.me, fx, timers);
            }
            MemberState::Suspect => self.confirm(now, p.target, self.me, timers),
            MemberState::Dead => {}
        }
    }

    /// Someone probes us: answer (with our view of them if they look suspect to us).
    pub fn on_ping(&mut self, src: u32, probe: u32, fx: &mut Effects) {
        let updates = self.piggyback(Some(src));
        fx.send(Dest::Node(src), Payload::Ack { probe, updates });
    }

    pub fn on_ack(&mut self, _src: u32, probe: u32, fx: &mut Effects) {
        if let Some(p) = self.probe.as_mut() {
            if p.id == probe && !p.acked {
                p.acked = true;
                self.lhm = self.lhm.saturating_sub(1);
                return;
            }
        }
        if let Some(f) = self.forwards.remove(&probe) {
            let updates = self.piggyback(Some(f.requester));
            fx.send(
                Dest::Node(f.requester),
                Payload::Ack {
                    probe: f.orig_probe,
                    updates,
                },
            );
        }
    }

    pub fn on_nack(&mut self, probe: u32) {
        if let Some(p) = self.probe.as_mut() {
            if p.id == probe {
                p.nacks += 1;
            }
        }
    }

    /// `src` asks us to probe `target` for its probe `probe` (the pair is `req`).
    pub fn on_ping_req(
        &mut self,
        now: Instant,
        src: u32,
        (probe, target): (u32, u32),
        rtt: RttFn<'_>,
        fx: &mut Effects,
        timers: &mut Timers,
    ) {
        if self.forwards.len() >= self.params.max_forwards || target == self.me {
            return;
        }
        let id = self.next_probe_id;
        self.next_probe_id = self.next_probe_id.wrapping_add(1).max(1);
        let deadline = now + self.probe_timeout(rtt(target));
        self.forwards.insert(
            id,
            Forward {
                requester: src,
                orig_probe: probe,
                deadline,
            },
        );
        let updates = self.piggyback(Some(target));
        fx.send(Dest::Node(target), Payload::Ping { probe: id, updates });
        self.schedule_forwards(timers);
    }

    fn schedule_forwards(&self, timers: &mut Timers) {
        match self.forwards.values().map(|f| f.deadline).min() {
            Some(t) => timers.set(TimerKey::ForwardSweep, t),
            None => timers.cancel(TimerKey::ForwardSweep),
        }
    }

    pub fn on_forward_sweep(&mut self, now: Instant, fx: &mut Effects, timers: &mut Timers) {
        let expired: Vec<u32> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = self.forwards.remove(&id) {
                fx.send(
                    Dest::Node(f.requester),
                    Payload::Nack {
                        probe: f.orig_probe,
                    },
                );
            }
        }
        self.schedule_forwards(timers);
    }

    pub fn on_gossip_tick(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        reach: ReachFn<'_>,
        fx: &mut Effects,
        timers: &mut Timers,
    ) {
        timers.set(TimerKey::Gossip, now + self.params.gossip_interval);
        if self.queue.items.is_empty() || self.active.is_empty() {
            return;
        }
        let reachable: Vec<u32> = self.active.iter().copied().filter(|n| reach(*n)).collect();
        let targets: Vec<u32> = reachable
            .choose_multiple(rng, self.params.gossip_fanout)
            .copied()
            .collect();
        for t in targets {
            let updates = self.piggyback(None);
            if updates.is_empty() {
                break;
            }
            fx.send(Dest::Node(t), Payload::Gossip { updates });
        }
    }

    /// Probes one random dead member (see `SwimParams::reclaim_interval`). The probe is
    /// fire-and-forget: an answer carries the member's refutation.
    pub fn on_reclaim_tick(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        fx: &mut Effects,
        timers: &mut Timers,
    ) {
        timers.set(TimerKey::Reclaim, now + self.params.reclaim_interval);
        let dead: Vec<u32> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Dead)
            .map(|(id, _)| *id)
            .collect();
        if let Some(t) = dead.choose(rng).copied() {
            let id = self.next_probe_id;
            self.next_probe_id = self.next_probe_id.wrapping_add(1).max(1);
            let updates = self.piggyback(Some(t));
            fx.send(Dest::Node(t), Payload::Ping { probe: id, updates });
        }
    }

    /// What a rebooted neighbour cannot know: every member we know alive at an incarnation
    /// above the 0 a fresh view starts with, and every member we hold dead, as updates from
    /// us, in frames that fit a datagram. A tile starts its view with every member alive at
    /// incarnation 0, and refutations and deaths it missed are not retransmitted for ever.
    /// Its accusations would name incarnations its peers have left behind, and a peer that
    /// knows the higher one rightly refuses them (a stale death must not kill a member that
    /// rejoined): in the twin's 12-crash agreement scenario (session 13, seeds 9 and 19) the
    /// one tile that never rebooted believed nobody's report of a crash and found it by its
    /// own probe round, 8.5 s late. And a death it missed it must find again by its own
    /// probe, while the deaths it is told it gossips afresh, to peers that may have missed
    /// them too (a pair cut off by the reboot's crash). memberlist's push-pull on join plays
    /// this part. Applying these is ordinary gossip: a higher incarnation wins, nothing
    /// else moves. A death goes out under the member that claimed it, as gossip relays it
    /// (with its kept signature when claims are signed; without one it is left out): sent
    /// as our own, a liar's false deaths came back from honest tiles
    /// (`a_catch_up_relays_each_death_under_its_accuser`).
    pub fn sync_for(&self, peer: u32) -> Vec<Vec<Update>> {
        let alive: Vec<Update> = self
            .members
            .iter()
            .filter(|(n, m)| **n != peer && m.state == MemberState::Alive && m.incarnation > 0)
            .map(|(n, m)| (*n, m.incarnation))
            .chain((self.incarnation > 0).then_some((self.me, self.incarnation)))
            .map(|(node, incarnation)| Update {
                node,
                state: MemberState::Alive,
                incarnation,
                from: self.me,
            })
            .collect();
        let dead: Vec<Update> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Dead)
            .map(|(n, m)| Update {
                node: *n,
                state: MemberState::Dead,
                incarnation: m.incarnation,
                from: m.accuser.unwrap_or(self.me),
            })
            .collect();
        // A death may carry a 64-byte signature beside its 17 bytes: fewer fit a frame.
        let per_claim =
            (crate::wire::MAX_PAYLOAD - 8) / (crate::wire::UPDATE_LEN + crate::wire::SIG_LEN);
        alive
            .chunks(crate::wire::MAX_UPDATES)
            .chain(dead.chunks(per_claim))
            .map(<[Update]>::to_vec)
            .collect()
    }

    /// Marks a member dead at once (e.g. an operator's quarantine), and gossips it.
    pub fn declare_dead(&mut self, now: Instant, node: u32, fx: &mut Effects) {
        let Some(m) = self.members.get(&node) else {
            return;
        };
        if m.state == MemberState::Dead {
            return;
        }
        let inc = m.incarnation;
        self.set_state(now, node, MemberState::Dead, inc, fx);
        self.set_accuser(node, self.me);
        self.enqueue(Update {
            node,
            state: MemberState::Dead,
            incarnation: inc,
            from: self.me,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_timeout_shrinks_with_confirmations() {
        let m = Membership::new(0, 1, &(0..1000).collect::<Vec<_>>(), SwimParams::default());
        let (min, max) = m.suspicion_bounds();
        assert_eq!(min, Duration::from_millis(3000));
        assert_eq!(max, Duration::from_millis(9000));
        assert_eq!(m.suspicion_timeout(0), max);
        assert!(m.suspicion_timeout(1) < max && m.suspicion_timeout(1) > min);
        assert_eq!(m.suspicion_timeout(3), min);
        assert_eq!(m.suspicion_timeout(10), min);
    }

    /// A catch-up relays each death under the member that claimed it, not as ours: sent as
    /// our own claims, a liar's false deaths came back from honest tiles, and in the
    /// watch's coalition test (`sim/tests/watch_hardening.rs`, f = 3 liars in a cell of 12)
    /// honest tiles quarantined honest ones or missed a liar at 6 of seeds 1-30 (3 of 30
    /// with no catch-up at all, 1 with this).
    #[test]
    fn a_catch_up_relays_each_death_under_its_accuser() {
        let mut m = Membership::new(0, 1, &(0..5).collect::<Vec<_>>(), SwimParams::default());
        let (mut fx, mut t) = (Effects::default(), Timers::default());
        let claim = Update {
            node: 3,
            state: MemberState::Dead,
            incarnation: 0,
            from: 2,
        };
        m.apply(Instant::ZERO, &[claim], &mut fx, &mut t);
        assert_eq!(m.state_of(3), Some(MemberState::Dead));
        m.declare_dead(Instant::ZERO, 4, &mut fx);
        let sent: Vec<Update> = m.sync_for(1).concat();
        let death = |n: u32| {
            sent.iter()
                .find(|u| u.node == n && u.state == MemberState::Dead)
        };
        assert_eq!(death(3).map(|u| u.from), Some(2), "{sent:?}");
        assert_eq!(death(4).map(|u| u.from), Some(0), "{sent:?}");
    }

    #[test]
    fn queue_retransmit_limit_and_cap() {
        let mut q = BroadcastQueue::default();
        for n in 0..10 {
            q.push(
                Update {
                    node: n,
                    state: MemberState::Alive,
                    incarnation: 1,
                    from: n,
                },
                5,
            );
        }
        assert_eq!(q.items.len(), 5);
        assert_eq!(q.take(3, 2, None).len(), 3);
        assert_eq!(q.take(10, 2, None).len(), 5);
        // The three sent twice are gone.
        assert_eq!(q.items.len(), 2);
    }
}

#[cfg(test)]
mod footprint_tests {
    use super::*;

    /// Every tile holds a `Member` for each member of its cell (~10^3): the rare suspicion
    /// stays out of line. Inline, a member was 80 bytes.
    #[test]
    fn a_member_stays_compact() {
        println!("size_of Member = {}", std::mem::size_of::<Member>());
        println!("size_of Suspicion = {}", std::mem::size_of::<Suspicion>());
        assert!(std::mem::size_of::<Member>() <= 40);
    }
}
