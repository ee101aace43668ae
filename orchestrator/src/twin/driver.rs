//! The timeline driver: the expanded timeline played against the simulation in virtual
//! time, as the lab runner plays it against agents in real time. Between two due moments
//! (an action, a load op, a poll round, a put's answer) the simulation runs on its own;
//! the driver never reads a clock. Actions become what the supervisor would do: a crash
//! drops the node with its state, a restart boots it afresh (next boot epoch), link
//! changes and partitions cut or restore the links, `link_set` changes the link's model on
//! the wire engine's shaper (delay, jitter, loss, …, as in a lab), clock faults and byzantine behaviours are core commands. `load` sessions are
//! sequential clients as in the lab (`runner/load.rs`): same seeds, same key and value
//! names, a `cell` put waits for the core's answer (at most [`PUT_TIMEOUT`], the lab
//! client's), and each op is recorded for the causal checker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lightcone_core::byzantine::Byzantine;
use lightcone_core::causal::checker::{HistoryOp, OpKind, OpStatus};
use lightcone_core::causal::DotContext;
use lightcone_core::io::{Command, Event as CoreEvent, Reply};
use lightcone_core::kv::Durability;
use lightcone_core::time::Instant;
use lightcone_sim::Sim;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::recorder::{Recorder, Scope};
use crate::experiment::action::{Action, Load};
use crate::experiment::expand::Planned;
use crate::experiment::record::{Event, FailedInjection, FinalRead, Mark, Recording};
use crate::experiment::runner::cell_key;
use crate::experiment::runner::timeline::record_injection;
use crate::experiment::runner::warmup::{converged, expected_routes};
use crate::parse::units;
use crate::plan::Plan;
use lightcone_link::model::LinkModel;

/// Virtual time between two poll rounds (the lab's poller: 500 ms real).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest virtual wait for membership and routes before the timeline starts.
pub const WARMUP_MAX: Duration = Duration::from_secs(30);
/// How long a load client waits for a put's answer (the lab client's timeout).
pub const PUT_TIMEOUT: Duration = Duration::from_secs(3);
/// Shortest pause between two ops of one session (the lab's).
const MIN_LOAD_INTERVAL: Duration = Duration::from_millis(10);
/// Virtual pause after the timeline before the final reads (the lab's settle time).
const SETTLE: Duration = Duration::from_secs(3);
/// Most recorded load operations (the lab's bound).
const MAX_OPS: usize = 200_000;

enum State {
    Idle {
        next: Instant,
    },
    Waiting {
        request: u64,
        key: String,
        value: String,
        start: Instant,
    },
    Done,
}

struct Session {
    node: u32,
    cell: String,
    load: Load,
    destinations: Vec<u32>,
    interval: Duration,
    until: Instant,
    rng: ChaCha8Rng,
    proc_id: u32,
    seq: u64,
    state: State,
}

/// A twin run in progress.
pub(super) struct Twin {
    pub sim: Sim,
    pub names: Vec<String>,
    pub addrs: BTreeMap<String, String>,
    pub ids: BTreeMap<String, u32>,
    /// The current model of each planned link, by (a, b) node ids, both orders.
    models: BTreeMap<(u32, u32), LinkModel>,
    /// Links whose delay is plotted, by name, with their ends.
    watched: Vec<(String, u32, u32)>,
    pub rec: Recorder,
    /// Virtual time of the timeline's start.
    pub t0: Instant,
    sessions: Vec<Session>,
    procs: u32,
    pub(super) next_request: u64,
    pub history: Vec<HistoryOp>,
    pub local_writes: BTreeSet<(String, String)>,
    pub messages_sent: u64,
    pub messages_refused: u64,
    pub messages_delivered: u64,
    pub events: Vec<Event>,
    pub marks: Vec<Mark>,
    pub failed: Vec<FailedInjection>,
    pub final_reads: Vec<FinalRead>,
    /// The object store's workload (issue 16; `super::objects`).
    pub store: super::store_work::StoreWork,
    /// The authorities' shares and group (issue 17): they countersign a cell's revocation.
    pub authorities: Option<(
        BTreeMap<u32, lightcone_core::trust::threshold::Share>,
        lightcone_core::trust::threshold::Group,
    )>,
    /// Each node's cell (layer, cluster, cell) and whether it is an authority, by id.
    cells: Vec<(u16, u16, u16, bool)>,
    /// Revocations asked of a cell and not yet countersigned: (subject, asked through, the
    /// cell's BFT quorum, members that decided it so far).
    revocations: Vec<(u32, u32, usize, BTreeSet<u32>)>,
    /// Each rotated node's newest certificate serial (`rotate_key`).
    rotations: BTreeMap<u32, u64>,
    /// The `rollout` step's outcome (issue 18).
    pub rollout: Option<crate::experiment::record::RolloutOutcome>,
}

impl Twin {
    pub fn new(sim: Sim, plan: &Plan, timeline: &[Planned]) -> Twin {
        let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
        let addrs = plan
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr.to_string()))
            .collect();
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let mut models = BTreeMap::new();
        for l in &plan.links {
            let (a, b) = (l.a.node as u32, l.b.node as u32);
            models.insert((a, b), l.model.clone());
            models.insert((b, a), l.model.clone());
        }
        // As the lab's `watched_links`: those the timeline touches (at most 6), else the first.
        let mut watched: Vec<(String, u32, u32)> = Vec::new();
        for p in timeline {
            if let Action::LinkDown { a, b }
            | Action::LinkUp { a, b }
            | Action::LinkSet { a, b, .. } = &p.action
            {
                if let Some(l) = plan.link_between(a, b) {
                    if !watched.iter().any(|w| w.0 == l.name) && watched.len() < 6 {
                        watched.push((l.name.clone(), l.a.node as u32, l.b.node as u32));
                    }
                }
            }
        }
        if watched.is_empty() {
            if let Some(l) = plan.links.first() {
                watched.push((l.name.clone(), l.a.node as u32, l.b.node as u32));
            }
        }
        let rec = Recorder::new(Scope::of(&names, &addrs, timeline));
        Twin {
            sim,
            names,
            addrs,
            ids,
            models,
            watched,
            rec,
            t0: Instant::ZERO,
            sessions: Vec::new(),
            procs: 0,
            next_request: 0,
            history: Vec::new(),
            local_writes: BTreeSet::new(),
            messages_sent: 0,
            messages_refused: 0,
            messages_delivered: 0,
            events: Vec::new(),
            marks: Vec::new(),
            failed: Vec::new(),
            final_reads: Vec::new(),
            store: super::store_work::StoreWork::default(),
            authorities: None,
            cells: plan
                .nodes
                .iter()
                .map(|n| {
                    let a = n.addr;
                    let auth = n.role == lightcone_core::config::Role::Authority;
                    (a.layer, a.cluster, a.cell, auth)
                })
                .collect(),
            revocations: Vec::new(),
            rotations: BTreeMap::new(),
            rollout: None,
        }
    }

    /// The members of node `i`'s cell's BFT group (its cell's nodes but authorities).
    fn cell_members(&self, i: u32) -> Vec<u32> {
        let Some(&(l, k, c, _)) = self.cells.get(i as usize) else {
            return Vec::new();
        };
        (0..self.cells.len() as u32)
            .filter(|j| {
                let (l2, k2, c2, auth) = self.cells[*j as usize];
                (l2, k2, c2) == (l, k, c) && !auth
            })
            .collect()
    }

    /// As the lab's supervisor does (`api::countersign_revocation`): once a BFT quorum of
    /// the cell (n − f of n) decided a revocation, the authorities sign it with t shares
    /// (their RNG seeded from the revocation, so the run repeats) and the member it was asked
    /// through floods it (`Command::TrustEntry`). The lab reaches the same point up to its
    /// 100-ms state polls later.
    fn countersign_decided(&mut self) {
        let mut ready = Vec::new();
        self.revocations.retain(|(v, by, quorum, decided)| {
            let keep = decided.len() < *quorum;
            if !keep {
                ready.push((*v, *by));
            }
            keep
        });
        for (v, by) in ready {
            let Some((shares, group)) = self.authorities.as_ref() else {
                continue;
            };
            // The key `v` signs with now as `by` knows it (rotated, or the directory's).
            let key = match self.sim.node(by).and_then(|n| n.peer_key(v)) {
                Some(k) => k,
                None => match self.sim.directory().get(v) {
                    Some(e) => e.key,
                    None => continue,
                },
            };
            let rev = lightcone_core::trust::threshold::Revocation {
                subject: v,
                key: key.to_bytes(),
                at_ns: self.sim.now().as_nanos(),
            };
            let signers: Vec<&lightcone_core::trust::threshold::Share> =
                shares.values().take(usize::from(group.t)).collect();
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(
                u64::from(v) ^ self.sim.now().as_nanos().rotate_left(29),
            );
            let Ok(sig) =
                lightcone_core::trust::threshold::sign(group, &signers, &rev.message(), &mut rng)
            else {
                continue;
            };
            let entry = rev.entry(&sig).encode();
            let t_of_n = group.t;
            let name = self.names[by as usize].clone();
            let r = self.command(by, &name, &Command::TrustEntry(entry));
            // In the report's events, as the lab's supervisor logs it.
            let t = self.t_s();
            let subject = self.names[v as usize].clone();
            self.events.push(Event {
                t_real_s: t,
                t_emulated_s: t,
                kind: "revocation_countersigned".into(),
                detail: format!(
                    "{subject}'s key revoked by a quorum of {name}'s cell, countersigned by \
                     {t_of_n} authorities, flooded from {name}"
                ),
                ok: r.is_ok(),
                error: r.err(),
            });
        }
    }

    /// Entries held by all live tiles, per structure ([`lightcone_core::Node::footprint`]),
    /// and the virtual time: what per-tile memory grows with.
    pub(super) fn footprint_line(&self, when: &str) -> String {
        let mut sums: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut live = 0usize;
        for i in 0..self.names.len() as u32 {
            if let Some(n) = self.sim.node(i) {
                live += 1;
                for (k, v) in n.footprint() {
                    *sums.entry(k).or_default() += v;
                }
            }
        }
        let parts: Vec<String> = sums.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "state entries {when} ({live} live tiles, {} virtual): {}",
            units::fmt_ns(self.sim.now().as_nanos()),
            parts.join(" ")
        )
    }

    /// Seconds since the timeline's start.
    pub(super) fn t_s(&self) -> f64 {
        (self.sim.now() - self.t0).as_secs_f64()
    }

    /// Runs until every node sees its cell alive and has every route it should, checked
    /// every poll interval, or [`WARMUP_MAX`]; the timeline starts there.
    pub fn warm_up(&mut self, progress: &mut impl FnMut(&str)) {
        let probe = Recording {
            time_scale: 1.0,
            addrs: self.addrs.clone(),
            ..Default::default()
        };
        let start = self.sim.now();
        let mut sampled = None;
        loop {
            let (complete, missing) = if self.rec.scope.full {
                let polls: Vec<_> = (0..self.names.len() as u32)
                    .filter_map(|i| Recorder::whole_poll(&mut self.sim, i, &self.names[i as usize]))
                    .collect();
                let ids: BTreeMap<String, u32> =
                    polls.iter().map(|p| (p.node.clone(), p.id)).collect();
                let missing = polls.iter().find_map(|p| {
                    let have: BTreeSet<String> = p.routes.iter().cloned().collect();
                    expected_routes(&self.addrs, &ids, &p.node)
                        .difference(&have)
                        .next()
                        .map(|d| format!("{} has no route to {d}", p.node))
                });
                (
                    polls.len() == self.names.len() && converged(&probe, &polls),
                    missing,
                )
            } else {
                let s = sampled.get_or_insert_with(|| {
                    super::scale::WarmupSample::new(
                        &self.rec.scope.subjects,
                        &self.names,
                        &self.addrs,
                        &self.ids,
                    )
                });
                s.check(&self.names, &self.sim)
            };
            let waited = self.sim.now() - start;
            if complete && missing.is_none() {
                progress(&format!(
                    "membership and routes converged after {} virtual; starting the timeline",
                    units::fmt_ns(waited.as_nanos() as u64)
                ));
                break;
            }
            if waited >= WARMUP_MAX {
                progress(&format!(
                    "not converged within {} virtual ({}); starting anyway",
                    units::fmt_ns(WARMUP_MAX.as_nanos() as u64),
                    missing.unwrap_or_else(|| "membership".into())
                ));
                break;
            }
            self.sim.run_for(POLL_INTERVAL);
            self.take_events();
        }
        self.t0 = self.sim.now();
        self.rec.begin(&mut self.sim, &self.names);
    }

    /// Plays `timeline` until `duration_ns` after the start, polling every
    /// [`POLL_INTERVAL`] and reporting progress every `progress_every` of virtual time.
    pub fn play(
        &mut self,
        timeline: &[Planned],
        duration_ns: u64,
        seed: u64,
        progress: &mut impl FnMut(&str),
    ) {
        let end = self.t0 + Duration::from_nanos(duration_ns);
        let mut next_poll = self.t0;
        let mut next_report = self.t0;
        let report_every = Duration::from_nanos((duration_ns / 10).max(1));
        let mut ai = 0;
        loop {
            let next_action = timeline
                .get(ai)
                .map(|p| self.t0 + Duration::from_nanos(p.at_ns));
            let next_load = self.sessions.iter().filter_map(|s| s.due()).min();
            let next_object = self.store.due();
            let target = [
                next_action,
                next_load,
                next_object,
                Some(next_poll),
                Some(end),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end)
            .max(self.sim.now());
            self.advance(target);
            let now = self.sim.now();
            while let Some(p) = timeline.get(ai) {
                if self.t0 + Duration::from_nanos(p.at_ns) > now {
                    break;
                }
                self.act(p, duration_ns, seed, progress);
                ai += 1;
            }
            self.step_sessions();
            self.step_objects();
            if next_poll <= now {
                let links = self.watched_delays();
                let t = self.t_s();
                self.rec.poll(&mut self.sim, &self.names, t, links);
                // After a step that ran the simulation itself (a rollout), one poll, not
                // one per interval it took.
                next_poll = (next_poll + POLL_INTERVAL).max(now);
            }
            if next_report <= now {
                progress(&format!(
                    "[{:>9} virtual] {} events processed",
                    units::fmt_ns((now - self.t0).as_nanos() as u64),
                    self.sim.events_processed()
                ));
                next_report = next_report + report_every;
            }
            if now >= end && ai >= timeline.len() {
                break;
            }
        }
        // Sessions still waiting for an answer get it or time out.
        while self
            .sessions
            .iter()
            .any(|s| matches!(s.state, State::Waiting { .. }))
        {
            let due = self.sessions.iter().filter_map(|s| s.due()).min();
            let Some(due) = due else { break };
            self.advance(due.max(self.sim.now()));
            self.step_sessions();
        }
        progress(&format!(
            "[{:>9} virtual] end of timeline",
            units::fmt_ns((self.sim.now() - self.t0).as_nanos() as u64)
        ));
    }

    /// Runs the simulation to `target`, stopping at each batch of core events while a put
    /// waits for its answer (so the answer's time is exact).
    pub(super) fn advance(&mut self, target: Instant) {
        loop {
            let waiting = !self.revocations.is_empty()
                || self
                    .sessions
                    .iter()
                    .any(|s| matches!(s.state, State::Waiting { .. }));
            if !waiting {
                self.sim.run_until(target);
                self.take_events();
                return;
            }
            let limit = target - self.sim.now();
            let hit = self.sim.run_until_pred(limit, |s| !s.events().is_empty());
            self.take_events();
            if !hit || self.sim.now() >= target {
                return;
            }
        }
    }

    /// Takes the core's events: deliveries counted, put answers given to their sessions.
    pub(super) fn take_events(&mut self) {
        for (at, node, e) in self.sim.take_events() {
            match e {
                CoreEvent::Delivered { .. } => self.messages_delivered += 1,
                CoreEvent::KvWritten {
                    request, written, ..
                } => self.answer(node, request, at, OpStatus::Ok, written),
                CoreEvent::KvPutFailed {
                    request, written, ..
                } => self.answer(node, request, at, OpStatus::Info, written),
                CoreEvent::ObjectStored { request, .. } => {
                    self.object_answer(node, request, at, Ok(()))
                }
                CoreEvent::ObjectPutFailed {
                    request, reason, ..
                } => self.object_answer(node, request, at, Err(reason)),
                CoreEvent::ObjectRead { request, data } => {
                    self.store.reads.insert((node, request), Ok(data));
                }
                CoreEvent::ObjectReadFailed { request, reason } => {
                    self.store.reads.insert((node, request), Err(reason));
                }
                CoreEvent::KeyRevokedByGroup { node: v, .. } => {
                    for (subject, _, _, decided) in &mut self.revocations {
                        if *subject == v {
                            decided.insert(node);
                        }
                    }
                }
                _ => {}
            }
        }
        if !self.revocations.is_empty() {
            self.countersign_decided();
        }
    }

    /// A put's answer: the op recorded with its dot and context, the session idle again.
    fn answer(
        &mut self,
        node: u32,
        request: u64,
        at: Instant,
        status: OpStatus,
        written: lightcone_core::kv::Written,
    ) {
        let t0 = self.t0;
        let Some(s) = self.sessions.iter_mut().find(|s| {
            s.node == node && matches!(s.state, State::Waiting { request: r, .. } if r == request)
        }) else {
            return;
        };
        let State::Waiting {
            key, value, start, ..
        } = std::mem::replace(&mut s.state, State::Done)
        else {
            return;
        };
        if status == OpStatus::Ok && s.load.durability == Durability::Local {
            self.local_writes.insert((key.clone(), value.clone()));
        }
        let op = HistoryOp {
            process: s.proc_id,
            node: Some(node),
            key,
            op: OpKind::Write { value },
            status,
            dot: written.dot,
            context: Some(written.context),
            start_ns: (start - t0).as_nanos() as u64,
            end_ns: (at - t0).as_nanos() as u64,
        };
        if status != OpStatus::Ok {
            s.proc_id = next_proc(&mut self.procs);
        }
        s.state = State::Idle {
            next: at + s.interval,
        };
        if self.history.len() < MAX_OPS {
            self.history.push(op);
        }
    }

    fn watched_delays(&self) -> BTreeMap<String, Option<f64>> {
        self.watched
            .iter()
            .map(|(name, a, b)| {
                // The shaped direction's model delay (what `link_set` changed), as the lab
                // plots its links' configured delay.
                let d = self.sim.link(*a, *b).and_then(|(d, _, up)| {
                    up.then_some(
                        self.sim
                            .link_model(*a, *b)
                            .map_or(d.as_secs_f64(), |m| m.delay_ns as f64 / 1e9),
                    )
                });
                (name.clone(), d)
            })
            .collect()
    }

    pub(super) fn id(&self, name: &str) -> Result<u32, String> {
        self.ids
            .get(name)
            .copied()
            .ok_or_else(|| format!("no node {name}"))
    }

    /// Plays one action; records its event, its mark (when injected) or its failure.
    fn act(&mut self, p: &Planned, duration_ns: u64, seed: u64, progress: &mut impl FnMut(&str)) {
        let t = self.t_s();
        if let Action::CrashHolders {
            objects,
            shards,
            except,
        } = &p.action
        {
            self.crash_holders(p, objects, *shards, except, progress);
            return;
        }
        if let Action::ObjectsStart { nodes, objects } = &p.action {
            self.start_objects(p.at_ns, nodes, objects, seed);
        }
        let r = self.inject(&p.action);
        if let Action::LoadStart { nodes, load } = &p.action {
            self.start_load(nodes, load, duration_ns, seed);
        }
        let kind = p.action.kind().to_string();
        record_injection(&p.action, t, &r, &mut self.marks, &mut self.failed);
        progress(&format!(
            "[{:>9} virtual] {}{}",
            units::fmt_ns((t * 1e9) as u64),
            p.action.describe(),
            match &r {
                Ok(()) => String::new(),
                Err(e) => format!(" — FAILED: {e}"),
            }
        ));
        self.events.push(Event {
            t_real_s: t,
            t_emulated_s: t,
            kind,
            detail: p.action.describe(),
            ok: r.is_ok(),
            error: r.err(),
        });
    }

    /// What the supervisor would do for `a`, on the simulation. An error says why the
    /// fault was not injected (it fails the run).
    pub(super) fn inject(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Rollout {
                build,
                canary,
                soak_ns,
            } => {
                let outcome = super::rollout::play(&mut self.sim, build, canary, *soak_ns);
                let r = match &outcome.note {
                    Some(why) if outcome.stages.is_empty() => Err(why.clone()),
                    _ => Ok(()),
                };
                self.rollout = Some(outcome);
                r
            }
            Action::LinkDown { a, b } | Action::LinkUp { a, b } => {
                let (x, y) = self.link_ends(a, b)?;
                self.sim
                    .set_link(x, y, matches!(action, Action::LinkUp { .. }));
                Ok(())
            }
            Action::LinkSet { a, b, change } => {
                let (x, y) = self.link_ends(a, b)?;
                let mut m = self.models.get(&(x, y)).cloned().unwrap_or_default();
                change.apply_to(&mut m)?;
                // Both directions on the shaper, as the wire engine sets them; a model the
                // shaper refuses changes nothing and fails the injection.
                self.sim
                    .shape_link(x, y, &m)
                    .map_err(|e| format!("link {a}-{b}: {e}"))?;
                self.models.insert((x, y), m.clone());
                self.models.insert((y, x), m);
                Ok(())
            }
            Action::Crash { node } => {
                let i = self.id(node)?;
                // As the supervisor: crashing a node that is not running injects nothing.
                if !self.sim.is_up(i) {
                    return Err(format!(
                        "{node}'s agent is not running: nothing to crash (restart it first)"
                    ));
                }
                self.rec.before_crash(&mut self.sim, i, node);
                self.sim.crash(i);
                Ok(())
            }
            Action::Restart { node } => {
                let i = self.id(node)?;
                if self.sim.is_up(i) {
                    self.rec.before_crash(&mut self.sim, i, node);
                    self.sim.crash(i);
                }
                self.sim.restart(i);
                Ok(())
            }
            Action::Clock { node, fault } => {
                let i = self.id(node)?;
                let f = fault.request().to_fault()?;
                self.command(i, node, &Command::ClockFault(f))
            }
            Action::Byzantine { node, behaviour } => {
                let i = self.id(node)?;
                let b = Byzantine::from_names(behaviour.names())?;
                self.command(i, node, &Command::Byzantine(b))
            }
            Action::StealKey { node, thief } => {
                let (v, t) = (self.id(node)?, self.id(thief)?);
                let seed = self
                    .sim
                    .secret(v)
                    .ok_or_else(|| format!("{node} has no key"))?;
                let key = Box::new(ed25519_dalek::SigningKey::from_bytes(&seed));
                self.command(t, thief, &Command::StealKey { node: v, key })
            }
            Action::RotateKey { node } => {
                // As the lab's supervisor does (`api::api_node_rotate_key`), with a key and a
                // signing RNG seeded from the node and the virtual time, so the run repeats.
                let v = self.id(node)?;
                let (shares, group) = self
                    .authorities
                    .as_ref()
                    .ok_or("the twin has no authorities to certify a key")?;
                let mix = u64::from(v) ^ self.sim.now().as_nanos().rotate_left(23) ^ 0x726f_7461;
                let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(mix);
                let secret: [u8; 32] = rand::Rng::gen(&mut rng);
                let key = ed25519_dalek::SigningKey::from_bytes(&secret)
                    .verifying_key()
                    .to_bytes();
                let serial = self.rotations.get(&v).map_or(1, |s| s + 1);
                let c = lightcone_core::trust::threshold::Certificate {
                    subject: v,
                    key,
                    serial,
                    not_after_ns: u64::MAX,
                };
                let signers: Vec<&lightcone_core::trust::threshold::Share> =
                    shares.values().take(usize::from(group.t)).collect();
                let sig =
                    lightcone_core::trust::threshold::sign(group, &signers, &c.message(), &mut rng)
                        .map_err(|e| e.to_string())?;
                let entry = c.entry(&sig);
                self.sim.rotate_key(v, secret, &entry)?;
                self.rotations.insert(v, serial);
                // The certificate is flooded from a running cell mate too: the node's own
                // flood goes under its old key, which a thief holding it may have silenced
                // (receivers' replay windows pushed past its sequence numbers).
                let mate = self
                    .cell_members(v)
                    .into_iter()
                    .find(|m| *m != v && self.sim.is_up(*m));
                if let Some(m) = mate {
                    let name = self.names[m as usize].clone();
                    self.command(m, &name, &Command::TrustEntry(entry.encode()))?;
                }
                Ok(())
            }
            Action::Revoke { node, by } => {
                let (v, b) = (self.id(node)?, self.id(by)?);
                self.command(b, by, &Command::BftRevoke { node: v })?;
                let n = self.cell_members(b).len();
                let quorum = n - n.saturating_sub(1) / 3;
                self.revocations.push((v, b, quorum, BTreeSet::new()));
                Ok(())
            }
            Action::Partition { .. }
            | Action::Heal
            | Action::LoadStart { .. }
            | Action::ObjectsStart { .. } => Ok(()),
            Action::CrashHolders { .. } => Err("crash_holders is resolved by the driver".into()),
            Action::Task { node, count, spec } => {
                let i = self.id(node)?;
                for _ in 0..*count {
                    self.command(i, node, &Command::TaskSubmit(*spec))?;
                }
                Ok(())
            }
        }
    }

    fn link_ends(&self, a: &str, b: &str) -> Result<(u32, u32), String> {
        let (x, y) = (self.id(a)?, self.id(b)?);
        match self.sim.link(x, y) {
            Some(_) => Ok((x, y)),
            None => Err(format!("no link between {a} and {b}")),
        }
    }

    fn command(&mut self, i: u32, node: &str, c: &Command) -> Result<(), String> {
        match self.sim.command(i, c) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(format!("{node}: {e}")),
            None => Err(format!("{node} is not running")),
        }
    }

    /// One session per node of a `load` action, seeded as the lab's.
    fn start_load(&mut self, nodes: &[String], load: &Load, duration_ns: u64, seed: u64) {
        let until = self.t0 + Duration::from_nanos(load.until_ns.min(duration_ns));
        let interval = Duration::from_nanos(load.interval_ns).max(MIN_LOAD_INTERVAL);
        let now = self.sim.now();
        for (i, n) in nodes.iter().enumerate() {
            let Ok(node) = self.id(n) else { continue };
            let cell = cell_key(self.addrs.get(n).map(String::as_str).unwrap_or(""));
            let mut destinations: Vec<u32> = self
                .names
                .iter()
                .enumerate()
                .filter(|(_, x)| {
                    cell_key(self.addrs.get(*x).map(String::as_str).unwrap_or("")) != cell
                })
                .map(|(j, _)| j as u32)
                .collect();
            if destinations.is_empty() {
                destinations = (0..self.names.len() as u32)
                    .filter(|j| *j != node)
                    .collect();
            }
            let proc_id = next_proc(&mut self.procs);
            self.sessions.push(Session {
                node,
                cell,
                load: load.clone(),
                destinations,
                interval,
                until,
                rng: ChaCha8Rng::seed_from_u64(seed ^ ((i as u64 + 1) << 32)),
                proc_id,
                seq: 0,
                state: State::Idle { next: now },
            });
        }
    }

    /// Every session whose moment has come takes its next step (in session order).
    fn step_sessions(&mut self) {
        let now = self.sim.now();
        for k in 0..self.sessions.len() {
            match &self.sessions[k].state {
                State::Idle { next } if *next <= now => self.op(k),
                State::Waiting { start, .. }
                    if *start + PUT_TIMEOUT <= now || !self.sim.is_up(self.sessions[k].node) =>
                {
                    self.give_up(k)
                }
                _ => {}
            }
        }
    }

    /// A put that got no answer in time (or whose node died): indeterminate, no dot.
    fn give_up(&mut self, k: usize) {
        let (now, t0) = (self.sim.now(), self.t0);
        let s = &mut self.sessions[k];
        let State::Waiting {
            key, value, start, ..
        } = std::mem::replace(&mut s.state, State::Done)
        else {
            return;
        };
        let op = HistoryOp {
            process: s.proc_id,
            node: Some(s.node),
            key,
            op: OpKind::Write { value },
            status: OpStatus::Info,
            dot: None,
            context: None,
            start_ns: (start - t0).as_nanos() as u64,
            end_ns: (now - t0).as_nanos() as u64,
        };
        s.proc_id = next_proc(&mut self.procs);
        s.state = State::Idle {
            next: now + s.interval,
        };
        if self.history.len() < MAX_OPS {
            self.history.push(op);
        }
    }

    /// Session `k`'s next op: a message, a put or a get, as the lab's session draws it.
    fn op(&mut self, k: usize) {
        let (now, t0) = (self.sim.now(), self.t0);
        let s = &mut self.sessions[k];
        if now >= s.until {
            s.state = State::Done;
            return;
        }
        let node = s.node;
        let mf = s.load.message_fraction;
        if mf > 0.0 && !s.destinations.is_empty() && s.rng.gen_bool(mf.clamp(0.0, 1.0)) {
            s.seq += 1;
            let dst = s.destinations[s.rng.gen_range(0..s.destinations.len())];
            let data = format!("m{}-{}", s.proc_id, s.seq).into_bytes();
            s.state = State::Idle {
                next: now + s.interval,
            };
            match self.sim.command(node, &Command::Send { dst, data }) {
                Some(Ok(_)) => self.messages_sent += 1,
                _ => self.messages_refused += 1,
            }
            return;
        }
        let key = format!("{}-k{}", s.cell, s.rng.gen_range(0..s.load.keys.max(1)));
        let write = s.rng.gen_bool(s.load.write_fraction.clamp(0.0, 1.0));
        let proc_id = s.proc_id;
        let (op, status, dot, context) = if write {
            s.seq += 1;
            let value = format!("p{}-{}", s.proc_id, s.seq);
            let durability = s.load.durability;
            self.next_request += 1;
            let request = self.next_request;
            let put = Command::Put {
                request,
                key: key.clone(),
                value: value.clone().into_bytes(),
                durability,
            };
            match self.sim.command(node, &put) {
                Some(Ok(Reply::Pending { request })) => {
                    self.sessions[k].state = State::Waiting {
                        request,
                        key,
                        value,
                        start: now,
                    };
                    return;
                }
                Some(Ok(Reply::KvWritten { written, .. })) => {
                    if durability == Durability::Local {
                        self.local_writes.insert((key.clone(), value.clone()));
                    }
                    (
                        OpKind::Write { value },
                        OpStatus::Ok,
                        written.dot,
                        Some(written.context),
                    )
                }
                // Refused (nothing changed) or no agent to take it: the write never happened.
                _ => (OpKind::Write { value }, OpStatus::Fail, None, None),
            }
        } else {
            match self.sim.command(node, &Command::Get { key: key.clone() }) {
                Some(Ok(Reply::KvValue { siblings, .. })) => (
                    OpKind::Read {
                        values: siblings
                            .iter()
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .collect(),
                    },
                    OpStatus::Ok,
                    None,
                    None,
                ),
                _ => (OpKind::Read { values: vec![] }, OpStatus::Info, None, None),
            }
        };
        let s = &mut self.sessions[k];
        if status != OpStatus::Ok {
            s.proc_id = next_proc(&mut self.procs);
        }
        s.state = State::Idle {
            next: now + s.interval,
        };
        if self.history.len() < MAX_OPS {
            self.history.push(HistoryOp {
                process: proc_id,
                node: Some(node),
                key,
                op,
                status,
                dot,
                context,
                start_ns: (now - t0).as_nanos() as u64,
                end_ns: (now - t0).as_nanos() as u64,
            });
        }
    }

    /// After the timeline and a settling pause: every key written, from every running
    /// node of its cell (each read is a history op too, as in the lab).
    pub fn final_reads(&mut self) {
        let mut keys: Vec<String> = self.history.iter().map(|o| o.key.clone()).collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return;
        }
        self.advance(self.sim.now() + SETTLE);
        let t = (self.sim.now() - self.t0).as_nanos() as u64;
        for i in 0..self.names.len() as u32 {
            if !self.sim.is_up(i) {
                continue;
            }
            let name = self.names[i as usize].clone();
            let cell = cell_key(self.addrs.get(&name).map(String::as_str).unwrap_or(""));
            for key in keys.iter().filter(|k| k.starts_with(&format!("{cell}-"))) {
                let Some(Ok(Reply::KvValue {
                    siblings,
                    dots,
                    context,
                    ..
                })) = self.sim.command(i, &Command::Get { key: key.clone() })
                else {
                    continue;
                };
                let values: Vec<String> = siblings
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                // A key never written here reads empty with an empty context, as the
                // agent's 404 is recorded.
                let context = if values.is_empty() {
                    Some(DotContext::new())
                } else {
                    Some(context)
                };
                self.history.push(HistoryOp {
                    process: 1_000_000 + i,
                    node: Some(i),
                    key: key.clone(),
                    op: OpKind::Read {
                        values: values.clone(),
                    },
                    status: OpStatus::Ok,
                    dot: None,
                    context: None,
                    start_ns: t,
                    end_ns: t,
                });
                self.final_reads.push(FinalRead {
                    node: name.clone(),
                    key: key.clone(),
                    values,
                    dots,
                    context,
                });
            }
        }
    }
}

fn next_proc(procs: &mut u32) -> u32 {
    let p = *procs;
    *procs += 1;
    p
}

impl Session {
    /// When this session next needs the driver: its next op, or its put's deadline.
    fn due(&self) -> Option<Instant> {
        match &self.state {
            State::Idle { next } => Some(*next),
            State::Waiting { start, .. } => Some(*start + PUT_TIMEOUT),
            State::Done => None,
        }
    }
}
