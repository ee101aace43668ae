//! A deterministic multi-member harness for [`super::bft`] (as quinn's `tests/util.rs`
//! `Pair`): members exchange *encoded* messages over a modelled network (one-way delay,
//! uniform jitter, random loss, timed partitions, all from one seed) in virtual time.
//! Members may be honest, crashed (silent from the start or from a time), or
//! equivocating: a Byzantine member runs two honest-looking replicas with one key and
//! shows each half of the honest members a different world — the coalition's members
//! agree on which half sees which (the strongest split attack against a quorum protocol).
//!
//! It checks agreement as it goes: the first entry any honest member decides at a slot
//! is the slot's value; another honest member deciding something else there is a
//! disagreement (counted, never hidden). Latency: for each entry, the time from its
//! submission to its decision at each honest member.
//!
//! Used by the unit tests below and by `examples/bft_bench.rs` (the latency figures).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bft::{entry_hash, BftParams, Group, Hash, Out, Replica};
use crate::time::Instant;
use crate::wire::Auth;

/// What a member does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Honest,
    /// Receives nothing and sends nothing from `at` on (a crashed or silent member).
    CrashAt(Instant),
    /// Byzantine: shows the members in [`NetConfig::world_b`] one world and the others
    /// another (equivocating proposals, votes and timeouts).
    Split,
}

/// Messages between members on opposite sides are dropped in `[from, until)` (not those
/// of `Split` members).
#[derive(Debug, Clone)]
pub struct Partition {
    pub from: Instant,
    pub until: Instant,
    pub side: BTreeSet<u32>,
}

/// The network and the group.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub n: usize,
    pub one_way: Duration,
    pub jitter: Duration,
    /// Probability a message is lost, 0.0..1.0.
    pub loss: f64,
    pub seed: u64,
    pub auth: Auth,
    pub params: BftParams,
    pub roles: BTreeMap<u32, Role>,
    /// Honest members shown world B by the `Split` members.
    pub world_b: BTreeSet<u32>,
    pub partitions: Vec<Partition>,
}

impl NetConfig {
    /// n honest members 0..n, 50 ms one way, no loss.
    pub fn new(n: usize, seed: u64) -> NetConfig {
        NetConfig {
            n,
            one_way: Duration::from_millis(50),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            seed,
            auth: Auth::TestDigest,
            params: BftParams {
                base_timeout: Duration::from_millis(1000),
                ..BftParams::default()
            },
            roles: BTreeMap::new(),
            world_b: BTreeSet::new(),
            partitions: Vec::new(),
        }
    }

    pub fn rtt(&self) -> Duration {
        self.one_way * 2
    }

    fn role(&self, id: u32) -> Role {
        self.roles.get(&id).copied().unwrap_or(Role::Honest)
    }
}

enum Member {
    Honest(Box<Replica>),
    Crash(Box<Replica>, Instant),
    Split(Box<[Replica; 2]>),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    to: u32,
    /// For a `Split` receiver: which of its worlds.
    world: usize,
    from: u32,
    bytes: Vec<u8>,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sent: u64,
    pub lost: u64,
    pub bytes: u64,
    /// Honest members that decided a different entry at a slot than another honest one.
    pub disagreements: u64,
    /// Submission to decision, per (honest member, entry).
    pub latencies: Vec<Duration>,
}

pub struct Harness {
    pub cfg: NetConfig,
    pub now: Instant,
    members: BTreeMap<u32, Member>,
    queue: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    rng: ChaCha8Rng,
    submits: BTreeMap<(Instant, u64), (u32, Vec<u8>)>,
    submitted_at: BTreeMap<Hash, Instant>,
    /// Slot → the first honest decision there.
    slots: BTreeMap<u64, Vec<u8>>,
    seen: BTreeMap<u32, usize>,
    pub report: Report,
}

/// The signing key of member `id` in harness runs (seeded).
pub fn member_key(seed: u64, id: u32) -> SigningKey {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(id) << 32) ^ 0xB0F7);
    let mut k = [0u8; 32];
    r.fill(&mut k);
    SigningKey::from_bytes(&k)
}

impl Harness {
    pub fn new(cfg: NetConfig) -> Harness {
        let keys: BTreeMap<u32, SigningKey> = (0..cfg.n as u32)
            .map(|i| (i, member_key(cfg.seed, i)))
            .collect();
        let group = Group::new(
            7,
            keys.iter().map(|(i, k)| (*i, k.verifying_key())).collect(),
            cfg.auth,
        )
        .expect("harness group is valid");
        let mk = |i: u32| {
            Replica::new(group.clone(), i, keys[&i].clone(), cfg.params.clone())
                .expect("harness member is valid")
        };
        let members = (0..cfg.n as u32)
            .map(|i| {
                let m = match cfg.role(i) {
                    Role::Honest => Member::Honest(Box::new(mk(i))),
                    Role::CrashAt(t) => Member::Crash(Box::new(mk(i)), t),
                    Role::Split => Member::Split(Box::new([mk(i), mk(i)])),
                };
                (i, m)
            })
            .collect();
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut h = Harness {
            cfg,
            now: Instant::ZERO,
            members,
            queue: BTreeMap::new(),
            seq: 0,
            rng,
            submits: BTreeMap::new(),
            submitted_at: BTreeMap::new(),
            slots: BTreeMap::new(),
            seen: BTreeMap::new(),
            report: Report::default(),
        };
        let ids: Vec<u32> = h.members.keys().copied().collect();
        for i in ids {
            for w in 0..2 {
                let mut out = Vec::new();
                let now = h.now;
                if let Some(r) = h.replica_mut(i, w) {
                    r.start(now, &mut out);
                }
                h.route(i, w, out);
            }
        }
        h
    }

    /// The replica of honest (or not yet crashed) member `id` (world 0 of a Split).
    pub fn replica(&self, id: u32) -> Option<&Replica> {
        match self.members.get(&id)? {
            Member::Honest(r) => Some(r),
            Member::Crash(r, _) => Some(r),
            Member::Split(rs) => Some(&rs[0]),
        }
    }

    fn replica_mut(&mut self, id: u32, world: usize) -> Option<&mut Replica> {
        let now = self.now;
        match self.members.get_mut(&id)? {
            Member::Honest(r) if world == 0 => Some(r),
            Member::Crash(r, t) if world == 0 && now < *t => Some(r),
            Member::Split(rs) => Some(&mut rs[world.min(1)]),
            _ => None,
        }
    }

    fn is_split(&self, id: u32) -> bool {
        matches!(self.members.get(&id), Some(Member::Split(_)))
    }

    /// The honest members (not Byzantine, not crashed by the end).
    pub fn honest(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter(|(_, m)| matches!(m, Member::Honest(_)))
            .map(|(i, _)| *i)
            .collect()
    }

    fn world_of(&self, id: u32) -> usize {
        usize::from(self.cfg.world_b.contains(&id))
    }

    /// Schedules `entry` to be submitted at member `at_member` at `t`.
    pub fn submit_at(&mut self, t: Instant, at_member: u32, entry: Vec<u8>) {
        self.seq += 1;
        self.submits.insert((t, self.seq), (at_member, entry));
    }

    /// A `Split` member is never cut off: the adversary keeps its own links to both sides.
    fn partitioned(&self, a: u32, b: u32) -> bool {
        if self.is_split(a) || self.is_split(b) {
            return false;
        }
        self.cfg.partitions.iter().any(|p| {
            self.now >= p.from && self.now < p.until && (p.side.contains(&a) != p.side.contains(&b))
        })
    }

    fn send_one(&mut self, from: u32, world: usize, to: u32, bytes: &[u8]) {
        if to == from {
            return;
        }
        // A Split sender's world-w replica reaches honest members of world w, and the
        // other Split members' world-w replicas.
        let to_world = if self.is_split(from) {
            if self.is_split(to) {
                world
            } else if self.world_of(to) != world {
                return;
            } else {
                0
            }
        } else if self.is_split(to) {
            self.world_of(from)
        } else {
            0
        };
        self.report.sent += 1;
        self.report.bytes += bytes.len() as u64;
        if self.partitioned(from, to) || self.rng.gen_bool(self.cfg.loss.clamp(0.0, 1.0)) {
            self.report.lost += 1;
            return;
        }
        let j = self.cfg.jitter.as_nanos() as u64;
        let extra = if j > 0 { self.rng.gen_range(0..j) } else { 0 };
        let at = self.now + self.cfg.one_way + Duration::from_nanos(extra);
        self.seq += 1;
        self.queue.insert(
            (at, self.seq),
            Delivery {
                to,
                world: to_world,
                from,
                bytes: bytes.to_vec(),
            },
        );
    }

    fn route(&mut self, from: u32, world: usize, out: Vec<Out>) {
        let n = self.cfg.n as u32;
        for o in out {
            match o {
                Out::To(to, m) => {
                    let b = m.encode();
                    self.send_one(from, world, to, &b);
                }
                Out::All(m) => {
                    let b = m.encode();
                    for to in 0..n {
                        self.send_one(from, world, to, &b);
                    }
                }
            }
        }
    }

    fn next_timer(&self) -> Option<(Instant, u32, usize)> {
        let mut best: Option<(Instant, u32, usize)> = None;
        for (i, m) in &self.members {
            let cands: Vec<(Option<Instant>, usize)> = match m {
                Member::Honest(r) => vec![(r.poll_timeout(), 0)],
                Member::Crash(r, t) => vec![(r.poll_timeout().filter(|d| d < t), 0)],
                Member::Split(rs) => vec![(rs[0].poll_timeout(), 0), (rs[1].poll_timeout(), 1)],
            };
            for (d, w) in cands {
                if let Some(d) = d {
                    if best.is_none_or(|b| d < b.0) {
                        best = Some((d, *i, w));
                    }
                }
            }
        }
        best
    }

    /// Runs until `end` (virtual time) or until nothing is left to happen.
    pub fn run_until(&mut self, end: Instant) {
        loop {
            let q = self.queue.keys().next().copied();
            let s = self.submits.keys().next().copied();
            let t = self.next_timer();
            let mut next = end;
            if let Some((a, _)) = q {
                next = next.min(a);
            }
            if let Some((a, _)) = s {
                next = next.min(a);
            }
            if let Some((a, _, _)) = t {
                next = next.min(a);
            }
            if next >= end && q.is_none_or(|x| x.0 >= end) {
                self.now = end.max(self.now);
                break;
            }
            self.now = next.max(self.now);
            let now = self.now;
            if let Some(k) = s.filter(|k| k.0 == next) {
                let (m, e) = self.submits.remove(&k).expect("key just read");
                self.submitted_at.entry(entry_hash(&e)).or_insert(now);
                let mut out = Vec::new();
                if let Some(r) = self.replica_mut(m, 0) {
                    let _ = r.submit(now, e, &mut out);
                }
                self.route(m, 0, out);
            } else if let Some(k) = q.filter(|k| k.0 == next) {
                let d = self.queue.remove(&k).expect("key just read");
                let mut out = Vec::new();
                if let Some(r) = self.replica_mut(d.to, d.world) {
                    let _ = r.handle_bytes(now, d.from, &d.bytes, &mut out);
                }
                self.route(d.to, d.world, out);
                self.check(d.to);
            } else if let Some((_, i, w)) = t.filter(|x| x.0 == next) {
                let mut out = Vec::new();
                if let Some(r) = self.replica_mut(i, w) {
                    r.handle_timeout(now, &mut out);
                }
                self.route(i, w, out);
                self.check(i);
            }
        }
    }

    fn check(&mut self, id: u32) {
        let Some(Member::Honest(r)) = self.members.get(&id) else {
            return;
        };
        let from = self.seen.get(&id).copied().unwrap_or(0);
        let new: Vec<_> = r.decided()[from..].to_vec();
        self.seen.insert(id, from + new.len());
        for d in new {
            match self.slots.get(&d.slot) {
                Some(e) if *e != d.entry => self.report.disagreements += 1,
                Some(_) => {}
                None => {
                    self.slots.insert(d.slot, d.entry.clone());
                }
            }
            if let Some(t0) = self.submitted_at.get(&entry_hash(&d.entry)) {
                self.report.latencies.push(self.now.saturating_since(*t0));
            }
        }
    }

    /// A one-line state of member `id`, for failure messages.
    pub fn debug(&self, id: u32) -> String {
        self.replica(id).map_or("-".into(), |r| r.debug_line())
    }

    /// The decided logs of the honest members.
    pub fn logs(&self) -> BTreeMap<u32, Vec<Vec<u8>>> {
        self.honest()
            .into_iter()
            .filter_map(|i| {
                let r = self.replica(i)?;
                Some((i, r.decided().iter().map(|d| d.entry.clone()).collect()))
            })
            .collect()
    }
}

/// Percentile `p` (0..=100) of `v` (sorted here), in units of `unit`.
pub fn percentile(v: &[Duration], p: f64, unit: Duration) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)].as_secs_f64() / unit.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    fn entries(h: &mut Harness, k: usize, every: Duration) -> Vec<Vec<u8>> {
        // Submitted at honest members (one that crashes later would lose them).
        let live = h.honest();
        (0..k)
            .map(|i| {
                let e = format!("revoke tile {i}").into_bytes();
                let t = Instant::ZERO + every * (i as u32 + 1);
                h.submit_at(t, live[(i * 7 + 1) % live.len()], e.clone());
                e
            })
            .collect()
    }

    /// Every honest member decided exactly `want` (in one order, the same for all).
    fn assert_agreed(h: &Harness, want: &[Vec<u8>], ctx: &str) {
        let logs = h.logs();
        let first = logs.values().next().expect("an honest member").clone();
        for (i, l) in &logs {
            let states: Vec<String> = logs.keys().map(|j| h.debug(*j)).collect();
            assert_eq!(
                *l, first,
                "{ctx}: member {i} decided another log; {states:#?}"
            );
        }
        let got: BTreeSet<_> = first.iter().cloned().collect();
        let want: BTreeSet<_> = want.iter().cloned().collect();
        assert_eq!(got, want, "{ctx}: decided set");
        assert_eq!(first.len(), want.len(), "{ctx}: an entry decided twice");
        assert_eq!(h.report.disagreements, 0, "{ctx}");
    }

    #[test]
    fn honest_group_decides_every_entry_in_one_order() {
        let mut h = Harness::new(NetConfig::new(4, 1));
        let want = entries(&mut h, 10, Duration::from_millis(30));
        h.run_until(secs(30));
        assert_agreed(&h, &want, "n=4 no loss");
        // An idle group stops: no timer armed once everything is decided.
        for i in h.honest() {
            assert_eq!(
                h.replica(i).unwrap().poll_timeout(),
                None,
                "member {i} idle"
            );
        }
    }

    #[test]
    fn agreement_under_loss_and_partitions_over_seeds() {
        for n in [4usize, 7] {
            for seed in 1..=64u64 {
                let mut cfg = NetConfig::new(n, seed);
                cfg.loss = 0.05;
                // A minority cut off for 4 s, then a majority-less split for 3 s.
                cfg.partitions = vec![
                    Partition {
                        from: secs(1),
                        until: secs(5),
                        side: [0u32].into_iter().collect(),
                    },
                    Partition {
                        from: secs(8),
                        until: secs(11),
                        side: (0..n as u32 / 2).collect(),
                    },
                ];
                let mut h = Harness::new(cfg);
                let want = entries(&mut h, 12, Duration::from_millis(700));
                h.run_until(secs(300));
                assert_agreed(&h, &want, &format!("n={n} seed={seed}"));
            }
        }
    }

    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let mut cfg = NetConfig::new(7, seed);
            cfg.loss = 0.1;
            let mut h = Harness::new(cfg);
            entries(&mut h, 8, Duration::from_millis(100));
            h.run_until(secs(120));
            (h.logs(), h.report.sent, h.report.lost, h.report.latencies)
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5).1, run(6).1, "another seed, another run");
    }

    #[test]
    fn crashed_leader_is_replaced_by_a_view_change() {
        // Round 1's leader (member 1) and, for n = 7, f = 2 members are down from the
        // start: the round timer expires, a TC forms and the next leaders decide.
        for (n, down) in [(4usize, vec![1u32]), (7, vec![1, 2])] {
            let mut cfg = NetConfig::new(n, 3);
            for d in &down {
                cfg.roles.insert(*d, Role::CrashAt(Instant::ZERO));
            }
            let mut h = Harness::new(cfg);
            let want = entries(&mut h, 6, Duration::from_millis(200));
            h.run_until(secs(120));
            assert_agreed(&h, &want, &format!("n={n} crashed {down:?}"));
            let tcs: u64 = h
                .honest()
                .iter()
                .map(|i| h.replica(*i).unwrap().counters().tcs_formed)
                .sum();
            assert!(tcs > 0, "a view change happened");
        }
    }

    #[test]
    fn leader_crashing_mid_run_is_replaced() {
        let mut cfg = NetConfig::new(4, 9);
        cfg.loss = 0.01;
        cfg.roles.insert(2, Role::CrashAt(secs(2)));
        let mut h = Harness::new(cfg);
        let want = entries(&mut h, 10, Duration::from_millis(400));
        h.run_until(secs(200));
        assert_agreed(&h, &want, "leader 2 crashes at 2 s");
    }

    /// f equivocating members (each shows two worlds), with the honest members split
    /// across the worlds and cut from each other for a while: still one log.
    #[test]
    fn f_equivocators_cannot_split_the_honest() {
        for seed in 1..=48u64 {
            for (n, byz) in [(4usize, vec![3u32]), (7, vec![5, 6])] {
                let mut cfg = NetConfig::new(n, seed);
                cfg.loss = 0.02;
                for b in &byz {
                    cfg.roles.insert(*b, Role::Split);
                }
                let honest: Vec<u32> = (0..n as u32).filter(|i| !byz.contains(i)).collect();
                let half = honest.len() / 2;
                cfg.world_b = honest[half..].iter().copied().collect();
                cfg.partitions = vec![Partition {
                    from: Instant::ZERO,
                    until: secs(20),
                    side: cfg.world_b.clone(),
                }];
                let mut h = Harness::new(cfg);
                // Different entries on each side, so a fork would show as a disagreement.
                let a = b"quarantine 40".to_vec();
                let b = b"quarantine 41".to_vec();
                h.submit_at(secs(1), honest[0], a.clone());
                h.submit_at(secs(1), honest[half], b.clone());
                h.run_until(secs(400));
                assert_agreed(&h, &[a, b], &format!("n={n} seed={seed} byz={byz:?}"));
            }
        }
    }

    /// With f + 1 colluding equivocators the quorums of the two worlds no longer need a
    /// common honest member: the honest sides decide different entries at one slot. The
    /// run ends at its deadline (no hang), and the harness reports the fork.
    #[test]
    fn f_plus_one_equivocators_fork_the_log_and_it_is_seen() {
        let mut cfg = NetConfig::new(4, 1);
        cfg.roles.insert(2, Role::Split);
        cfg.roles.insert(3, Role::Split);
        cfg.world_b = [1u32].into_iter().collect();
        cfg.partitions = vec![Partition {
            from: Instant::ZERO,
            until: secs(1000),
            side: cfg.world_b.clone(),
        }];
        let mut h = Harness::new(cfg);
        h.submit_at(secs(1), 0, b"revoke 9".to_vec());
        h.submit_at(secs(1), 1, b"keep 9".to_vec());
        h.run_until(secs(60));
        assert_eq!(h.now, secs(60), "the run ended at its deadline");
        assert!(
            h.report.disagreements > 0,
            "the fork at slot 0 is reported: {} / {} / {:?}",
            h.debug(0),
            h.debug(1),
            match h.members.get(&2) {
                Some(Member::Split(rs)) => rs[1].debug_line(),
                _ => String::new(),
            }
        );
        let logs = h.logs();
        assert_eq!(logs[&0], vec![b"revoke 9".to_vec()]);
        assert_eq!(logs[&1], vec![b"keep 9".to_vec()]);
    }
}
