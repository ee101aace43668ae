//! The thermal sub-machine: steps the tile's [`model`](super::model), gossips its
//! [`Descriptor`] within its cell, summarises per level through the gateways (cell →
//! cluster → layer → the other layers), sends the Class-A [`ShellSignal`] down each layer
//! (heat landing from the shell inside; backpressure when a shell outside passes 90 %),
//! and places tasks under leases.
//!
//! # Leases
//!
//! A task submitted to a tile (its *owner*) is placed on a tile of its cell with headroom
//! (the owner itself included), the one with the most heat headroom first; an owner that
//! is a gateway also knows its summaries and may place on the best tile of another cell,
//! preferring inner layers for hot work and outer layers for cold work. The owner offers
//! the terms ([`HeatMsg::Offer`], signed by the owner as every frame is); the tile accepts
//! ([`HeatMsg::Accept`], signed by it) or refuses. A lease holds until an absolute emulated
//! expiry the owner chose; the owner renews it while the task runs, the holder drops it at
//! expiry without renewal. **A lease is never held by two tiles**: the owner offers a task
//! to another tile only once every expiry it ever sent for that task has passed, so a
//! holder that did not hear (lost renewal, crashed owner, lost accept) has already let go.
//! This relies on the lab's shared time base (all namespaces read one host clock; the
//! twin has one virtual clock). A lease the owner lost before the task's end (no renewal
//! answered before the confirmed expiry) is an SLA violation and is placed again.
//!
//! That guarantee rests on the owner's honesty: a lying owner (byzantine `double_lease`)
//! can offer one lease to two tiles at once and both take it. With the trust option
//! `bft_leases` ([`Heat::set_bft_leases`]) a placement inside the owner's cell is not
//! offered directly: the owner hands a [`Grant`] to the node, which submits it to the
//! cell's BFT log, and the holder takes (or renews) the lease only when its own log
//! decides the grant and the agreed [`LeaseTable`](super::grants::LeaseTable) accepts it
//! ([`Heat::on_grant`]); direct offers and renewals from a cell mate are then ignored
//! (counted `offers_unbound`). See [`super::grants`] for the rule and its stated limits
//! (a gateway placing into another cell still offers directly).
//!
//! Backpressure: while a shell outside is at or above 90 % load
//! ([`BACKPRESSURE_LOAD`](super::model::BACKPRESSURE_LOAD)) a tile admits no new lease and
//! runs its leased work at [`THROTTLE_FACTOR`] of its power; it lets go below 85 % (the
//! hysteresis keeps the signal from flapping at the threshold).

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::ThermalConfig;
use super::grants::Grant;
use super::model::{LayerThermal, TileThermal, BACKPRESSURE_LOAD};
use super::msg::{
    ppm, Descriptor, HeatMsg, HeatSummary, LeaseTerms, Refusal, ShellSignal, TaskClass,
};
use super::task::TaskSpec;
use crate::addr::{HierAddr, Role};
use crate::directory::Directory;
use crate::time::Instant;
use crate::wire::Dest;

/// Power factor of leased work while throttled.
pub const THROTTLE_FACTOR: f64 = 0.5;
/// Backpressure lets go below this load (ppm); it starts at 90 %.
pub const RELEASE_PPM: u32 = 850_000;
/// Start of backpressure, ppm.
pub const THROTTLE_PPM: u32 = (BACKPRESSURE_LOAD * 1e6) as u32;
/// Most tasks a tile owns at once, and most leases it holds.
pub const MAX_TASKS: usize = 1024;
/// A descriptor or summary older than this many intervals is not used.
const STALE_INTERVALS: u64 = 4;
/// Most input-stream frames a tile queues per round (a quarter of the node's outbox; beyond,
/// the input is shed and counted).
const MAX_DATA_FRAMES: usize = 1024;
/// A lease runs this many intervals past its last renewal.
const LEASE_INTERVALS: u64 = 4;

fn mw(w: f64) -> u64 {
    if w.is_finite() && w > 0.0 {
        (w * 1000.0).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Why a task was refused at submission (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("compute must be 1 to {max} units (the most one tile offers)")]
    Compute { max: u32 },
    #[error("duration must be 1 ms to 30 days emulated")]
    Duration,
    #[error("{0} tasks already; retry later")]
    TooMany(usize),
    #[error("traffic_kbps must be at most {max}")]
    Traffic { max: u32 },
}

#[derive(Debug, Clone)]
struct Held {
    owner: u32,
    terms: LeaseTerms,
    expiry: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum TaskState {
    /// No lease: looking for a tile (after `wait_until`).
    Unplaced,
    /// Offered to `holder`, no answer yet.
    Offered,
    /// Held by `holder`.
    Leased,
}

#[derive(Debug, Clone)]
struct Task {
    spec: TaskSpec,
    end: Instant,
    state: TaskState,
    holder: u32,
    lease: u64,
    /// The latest expiry ever sent for this task: no other tile before it passes.
    sent_expiry: Instant,
    /// The latest expiry the holder confirmed.
    confirmed: Instant,
    /// Tiles that refused, with when (skipped for a while).
    refused: BTreeMap<u32, Instant>,
    /// Input stream: fed up to this time, and bytes owed short of a frame.
    fed: Instant,
    owed: usize,
    /// Byzantine `double_lease`: the second tile offered the same lease (an accept from it
    /// is taken like one from `holder`).
    also: Option<u32>,
}

/// Grant latency at a holder (`bft_leases`): from the owner's submission (the grant's
/// start) to this tile taking the lease, over the grants taken here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GrantLatency {
    pub taken: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
    /// Direct offers and renewals from a cell mate, ignored (only the log grants).
    pub offers_unbound: u64,
}

/// Counters and gauges of the subsystem (the agent exports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HeatStats {
    pub load_ratio: f64,
    pub temp_k: f64,
    pub capacity_w: f64,
    pub power_w: f64,
    pub received_w: f64,
    pub rejected_j: f64,
    pub passed_outward_j: f64,
    pub stored_j: f64,
    pub produced_j: f64,
    pub throttled: bool,
    pub throttle_onsets: u64,
    pub compute_in_use: u32,
    pub leases_held: u64,
    pub leases_placed: u64,
    pub leases_expired: u64,
    pub leases_refused: u64,
    pub sla_violations: u64,
    pub tasks_done: u64,
    pub tasks_active: u64,
    pub bad_messages: u64,
    /// Bytes of task input streams this tile (an owner) queued for its leases' holders.
    pub traffic_bytes: u64,
    /// Input-stream bytes shed: more than [`MAX_DATA_FRAMES`] frames in one round.
    pub traffic_shed_bytes: u64,
    /// Highest thermal load seen (at each round).
    pub load_peak_ratio: f64,
    /// Longest time from the first tile of a shell outside passing 90 % to this tile being
    /// throttled, s (0: never throttled).
    pub throttle_lag_max_s: f64,
}

/// A lease as listed on the node page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseView {
    pub id: u64,
    pub task: u64,
    pub owner: u32,
    pub holder: u32,
    pub compute: u32,
    pub class: TaskClass,
    pub expiry_ns: u64,
    pub state: &'static str,
}

/// The sub-machine.
#[derive(Debug, Clone)]
pub struct Heat {
    me: u32,
    addr: HierAddr,
    params: LayerThermal,
    tile: TileThermal,
    interval_ns: u64,
    last_step: Instant,
    received_w: f64,
    throttled: bool,
    /// Since when this tile's load is at or above 90 % (`None`: below).
    crossed: Option<Instant>,
    shell_version: u64,
    cell: BTreeMap<u32, (Descriptor, Instant)>,
    summaries: BTreeMap<Dest, (HeatSummary, Instant)>,
    held: BTreeMap<u64, Held>,
    tasks: BTreeMap<u64, Task>,
    next_id: u32,
    stats: HeatStats,
    /// Input-stream frames for the node to send ([`Heat::take_data`]).
    data_out: Vec<(u32, usize)>,
    /// Trust option `bft_leases`: placements in the cell go through its BFT log.
    bft_leases: bool,
    /// Grants for the node to submit to the log ([`Heat::take_grants`]).
    grants_out: Vec<Grant>,
    grant_latency: GrantLatency,
    /// Byzantine `double_lease`: offer each new lease to two tiles at once.
    double_lease: bool,
}

/// What the sub-machine asks to send: (destination node, message).
pub type Sends = Vec<(u32, HeatMsg)>;

impl Heat {
    /// The sub-machine of node `me` (its directory entry gives layer and radius).
    pub fn new(
        cfg: &ThermalConfig,
        me: u32,
        dir: &Directory,
        now: Instant,
    ) -> Result<Heat, super::model::ThermalError> {
        cfg.check_interval()?;
        let e = dir.get(me).ok_or(super::model::ThermalError {
            field: "layers",
            message: format!("node {me} is not in the directory"),
        })?;
        let tile = cfg.tile(e.addr.layer, super::config::radius_au(e.position_au))?;
        Ok(Heat {
            me,
            addr: e.addr,
            params: cfg.layers[&e.addr.layer].clone(),
            tile,
            interval_ns: cfg.interval_ns,
            last_step: now,
            received_w: 0.0,
            throttled: false,
            crossed: None,
            shell_version: 0,
            cell: BTreeMap::new(),
            summaries: BTreeMap::new(),
            held: BTreeMap::new(),
            tasks: BTreeMap::new(),
            next_id: 0,
            stats: HeatStats::default(),
            data_out: Vec::new(),
            bft_leases: false,
            grants_out: Vec::new(),
            grant_latency: GrantLatency::default(),
            double_lease: false,
        })
    }

    /// Places leases inside the cell through its BFT log (trust option `bft_leases`; the
    /// node calls this once its cell's BFT group runs). See the module doc.
    pub fn set_bft_leases(&mut self, on: bool) {
        self.bft_leases = on;
    }

    /// Byzantine `double_lease`: each new lease is offered (or granted) to two tiles.
    pub fn set_double_lease(&mut self, on: bool) {
        self.double_lease = on;
    }

    /// The grants the last call queued, for the node to sign and submit to the log.
    pub fn take_grants(&mut self) -> Vec<Grant> {
        std::mem::take(&mut self.grants_out)
    }

    /// Grant latencies at this holder (`bft_leases`).
    pub fn grant_latency(&self) -> GrantLatency {
        self.grant_latency
    }

    /// True when a lease between this tile and `peer` goes through the log: `bft_leases`
    /// on and `peer` in this tile's cell (its BFT group).
    fn by_log(&self, peer: u32, dir: &Directory) -> bool {
        self.bft_leases && dir.addr(peer).is_some_and(|a| a.same_cell(&self.addr))
    }

    /// A grant the cell's log decided and its lease table accepted (`renewal`: it extended
    /// the task's current lease). Only the grant's holder acts: it takes a new lease if
    /// the lease has started by its clock and it has room (answering `Accept`, else
    /// `Refuse`), or extends one it still holds (`Renewed`, else `Refuse` expired).
    pub fn on_grant(
        &mut self,
        now: Instant,
        g: &Grant,
        renewal: bool,
        live_cell: &[u32],
        dir: &Directory,
        out: &mut Sends,
    ) {
        if g.holder != self.me || !self.bft_leases {
            return;
        }
        let t = g.terms;
        let held = self
            .held
            .get(&t.id)
            .is_some_and(|h| h.owner == g.owner && h.expiry > now);
        if renewal || held {
            match self.held.get_mut(&t.id) {
                Some(h) if h.owner == g.owner && h.expiry > now => {
                    h.expiry = h.expiry.max(Instant::from_nanos(t.expiry_ns));
                    let expiry_ns = h.expiry.as_nanos();
                    out.push((
                        g.owner,
                        HeatMsg::Renewed {
                            id: t.id,
                            expiry_ns,
                        },
                    ));
                }
                _ => out.push((
                    g.owner,
                    HeatMsg::Refuse {
                        id: t.id,
                        why: Refusal::Expired,
                    },
                )),
            }
        } else {
            // A lease that has not started here yet is not taken: holding it early could
            // overlap the task's previous lease, which runs until this one's start.
            let why = if g.start_ns > now.as_nanos() {
                Some(Refusal::Expired)
            } else {
                self.admit(now, &t)
            };
            match why {
                None => {
                    self.held.insert(
                        t.id,
                        Held {
                            owner: g.owner,
                            terms: t,
                            expiry: Instant::from_nanos(t.expiry_ns),
                        },
                    );
                    let l = now.as_nanos().saturating_sub(g.start_ns);
                    let gl = &mut self.grant_latency;
                    gl.taken += 1;
                    gl.sum_ns = gl.sum_ns.saturating_add(l);
                    gl.max_ns = gl.max_ns.max(l);
                    out.push((
                        g.owner,
                        HeatMsg::Accept {
                            id: t.id,
                            expiry_ns: t.expiry_ns,
                        },
                    ));
                }
                Some(why) => out.push((g.owner, HeatMsg::Refuse { id: t.id, why })),
            }
        }
        self.settle(now, live_cell, dir, out);
    }

    /// A thermal message that did not decode (refused whole).
    pub fn note_bad_message(&mut self) {
        self.stats.bad_messages += 1;
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.interval_ns)
    }
    fn stale(&self, at: Instant, now: Instant) -> bool {
        now.as_nanos().saturating_sub(at.as_nanos()) > STALE_INTERVALS * self.interval_ns
    }
    fn lease_span(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(LEASE_INTERVALS * self.interval_ns)
    }

    /// The sum of one term over the leases running now.
    fn held_sum(&self, now: Instant, term: impl Fn(&LeaseTerms) -> u32) -> u32 {
        self.held
            .values()
            .filter(|h| h.expiry > now)
            .map(|h| term(&h.terms))
            .sum()
    }
    /// Compute units held by running leases.
    fn in_use(&self, now: Instant) -> u32 {
        self.held_sum(now, |t| t.compute)
    }
    fn memory_in_use(&self, now: Instant) -> u32 {
        self.held_sum(now, |t| t.memory_mib)
    }
    fn power_w(&self, now: Instant) -> f64 {
        let work = self.params.power_per_unit_w * f64::from(self.in_use(now));
        self.params.idle_power_w
            + if self.throttled {
                work * THROTTLE_FACTOR
            } else {
                work
            }
    }

    /// The leases this tile holds now, by id (the harness checks no id has two holders).
    pub fn holding(&self, now: Instant) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.held
            .iter()
            .filter(move |(_, h)| h.expiry > now)
            .map(|(id, h)| (*id, h.terms.task))
    }
    pub fn stats(&self, now: Instant) -> HeatStats {
        let mut s = self.stats;
        let p = self.power_w(now);
        s.power_w = p;
        s.received_w = self.received_w;
        s.load_ratio = self.tile.load_ratio(p, self.received_w);
        s.temp_k = self.tile.temp_k();
        s.capacity_w = self.tile.capacity_w();
        s.rejected_j = self.tile.total.rejected_j;
        s.passed_outward_j = self.tile.total.passed_outward_j;
        s.stored_j = self.tile.total.stored_j;
        s.produced_j = self.tile.total.produced_j;
        s.throttled = self.throttled;
        s.compute_in_use = self.in_use(now);
        s.leases_held = self.holding(now).count() as u64;
        s.tasks_active = self.tasks.len() as u64;
        s
    }
    /// Leases held here and tasks owned here.
    pub fn leases(&self, now: Instant) -> Vec<LeaseView> {
        let mut v: Vec<LeaseView> = self
            .held
            .iter()
            .filter(|(_, h)| h.expiry > now)
            .map(|(id, h)| LeaseView {
                id: *id,
                task: h.terms.task,
                owner: h.owner,
                holder: self.me,
                compute: h.terms.compute,
                class: h.terms.class,
                expiry_ns: h.expiry.as_nanos(),
                state: "held",
            })
            .collect();
        v.extend(self.tasks.iter().map(|(id, t)| LeaseView {
            id: t.lease,
            task: *id,
            owner: self.me,
            holder: t.holder,
            compute: t.spec.compute,
            class: t.spec.class.into(),
            expiry_ns: t.confirmed.as_nanos(),
            state: match t.state {
                TaskState::Unplaced => "unplaced",
                TaskState::Offered => "offered",
                TaskState::Leased => "leased",
            },
        }));
        v
    }

    fn descriptor(&self, now: Instant) -> Descriptor {
        let p = self.power_w(now);
        let cap = self.tile.capacity_w();
        let heat = p + self.received_w;
        let used = self.in_use(now);
        Descriptor {
            version: now.as_nanos(),
            compute_total: self.params.compute_units,
            compute_free: self.params.compute_units.saturating_sub(used),
            memory_free_mib: self
                .params
                .memory_mib
                .saturating_sub(self.memory_in_use(now)),
            bandwidth_free_mbps: self.params.bandwidth_mbps,
            headroom_mw: mw(BACKPRESSURE_LOAD * cap - heat),
            load_ppm: ppm(mw(heat), mw(cap)),
            capacity_mw: mw(cap),
            heat_mw: mw(heat),
            outward_mw: mw(self.tile.outward_w()),
            throttled: self.throttled,
            crossed_ns: self.crossed.map_or(0, |c| c.as_nanos().max(1)),
        }
    }

    /// Submits a task owned by this tile; placement starts at the next tick.
    pub fn submit(&mut self, now: Instant, spec: TaskSpec) -> Result<u64, TaskError> {
        if spec.compute == 0 || spec.compute > self.params.compute_units {
            return Err(TaskError::Compute {
                max: self.params.compute_units,
            });
        }
        if !(1_000_000..=30 * 86_400 * 1_000_000_000).contains(&spec.duration_ns) {
            return Err(TaskError::Duration);
        }
        if self.tasks.len() >= MAX_TASKS {
            return Err(TaskError::TooMany(self.tasks.len()));
        }
        if spec.traffic_kbps > super::task::MAX_TRAFFIC_KBPS {
            return Err(TaskError::Traffic {
                max: super::task::MAX_TRAFFIC_KBPS,
            });
        }
        let id = self.fresh_id();
        self.tasks.insert(
            id,
            Task {
                spec,
                end: now + std::time::Duration::from_nanos(spec.duration_ns),
                state: TaskState::Unplaced,
                holder: self.me,
                lease: 0,
                sent_expiry: now,
                confirmed: now,
                refused: BTreeMap::new(),
                fed: now,
                owed: 0,
                also: None,
            },
        );
        Ok(id)
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        (u64::from(self.me) << 32) | u64::from(self.next_id)
    }

    /// One round: step the model, run the leases, gossip, summarise. `live_cell` is this
    /// node and its live cell members, ascending.
    pub fn on_tick(&mut self, now: Instant, live_cell: &[u32], dir: &Directory, out: &mut Sends) {
        let dt = now.saturating_since(self.last_step).as_secs_f64();
        let p = self.power_w(self.last_step);
        self.tile.step(dt, p, self.received_w);
        self.last_step = now;
        let load = self.tile.load_ratio(self.power_w(now), self.received_w);
        self.stats.load_peak_ratio = self.stats.load_peak_ratio.max(load);
        if load >= BACKPRESSURE_LOAD {
            self.crossed.get_or_insert(now);
        } else {
            self.crossed = None;
        }
        // Leases held: drop the expired.
        let expired: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.held.remove(&id);
            self.stats.leases_expired += 1;
        }
        self.run_tasks(now, dir, out);
        // Descriptor to the cell.
        let d = self.descriptor(now);
        self.cell.insert(self.me, (d, now));
        for &m in live_cell {
            if m != self.me {
                out.push((m, HeatMsg::Descriptor(d)));
            }
        }
        let stale: Vec<u32> = self
            .cell
            .iter()
            .filter(|(_, (_, at))| self.stale(*at, now))
            .map(|(n, _)| *n)
            .collect();
        for n in stale {
            self.cell.remove(&n);
        }
        self.summarise(now, live_cell, dir, out);
        self.settle(now, live_cell, dir, out);
    }

    /// Hands the messages this tile sent itself (a lease on its own tile) to itself.
    fn settle(&mut self, now: Instant, live_cell: &[u32], dir: &Directory, out: &mut Sends) {
        for _ in 0..8 {
            let (mine, rest): (Sends, Sends) = out.drain(..).partition(|(to, _)| *to == self.me);
            *out = rest;
            if mine.is_empty() {
                return;
            }
            for (_, m) in mine {
                self.handle(now, self.me, m, live_cell, dir, out);
            }
        }
    }

    /// The lowest live gateway of the cell, else its lowest live node (as membership's
    /// summaries choose it, so the two fail over together).
    fn cell_gateway(live_cell: &[u32], dir: &Directory) -> Option<u32> {
        live_cell
            .iter()
            .copied()
            .filter(|i| dir.get(*i).is_some_and(|e| e.role == Role::Gateway))
            .min()
            .or(live_cell.iter().copied().min())
    }

    fn summarise(&mut self, now: Instant, live_cell: &[u32], dir: &Directory, out: &mut Sends) {
        let my = self.addr;
        let cell = Dest::cell_of(&my);
        let cluster = Dest::Cluster {
            layer: my.layer,
            cluster: my.cluster,
        };
        let layer = Dest::Layer { layer: my.layer };
        if Self::cell_gateway(live_cell, dir) == Some(self.me) {
            let mut s = empty(cell, now);
            for (n, (d, _)) in &self.cell {
                s.tiles += 1;
                s.compute_total += u64::from(d.compute_total);
                s.compute_free += u64::from(d.compute_free);
                // Descriptors are peers' words: sums saturate (see `add`).
                s.capacity_mw = s.capacity_mw.saturating_add(d.capacity_mw);
                s.heat_mw = s.heat_mw.saturating_add(d.heat_mw);
                s.outward_mw = s.outward_mw.saturating_add(d.outward_mw);
                s.max_load_ppm = s.max_load_ppm.max(d.load_ppm);
                if d.compute_free > s.best_free && !d.throttled {
                    s.best_free = d.compute_free;
                    s.best_tile = *n;
                }
                s.crossed_ns = earliest(s.crossed_ns, d.crossed_ns);
            }
            self.summaries.insert(cell, (s, now));
            if let Some(g) = dir.gateway_of(cluster) {
                if g != self.me {
                    out.push((g, HeatMsg::Summary(s)));
                }
            }
        }
        for (scope, child_is_cell) in [(cluster, true), (layer, false)] {
            if dir.gateway_of(scope) != Some(self.me) {
                continue;
            }
            let mut agg = empty(scope, now);
            let mut any = false;
            for (d, (s, at)) in &self.summaries {
                let child = matches!(
                    (child_is_cell, d),
                    (true, Dest::Cell { .. }) | (false, Dest::Cluster { .. })
                ) && scope.holds_scope(d);
                if child && !self.stale(*at, now) {
                    add(&mut agg, s);
                    any = true;
                }
            }
            if !any {
                continue;
            }
            self.summaries.insert(scope, (agg, now));
            if child_is_cell {
                if let Some(g) = dir.gateway_of(layer) {
                    if g != self.me {
                        out.push((g, HeatMsg::Summary(agg)));
                    }
                }
            } else {
                let layers: std::collections::BTreeSet<u16> =
                    dir.peers.iter().map(|e| e.addr.layer).collect();
                for l in layers.into_iter().filter(|l| *l != my.layer) {
                    if let Some(g) = dir.gateway_of(Dest::Layer { layer: l }) {
                        out.push((g, HeatMsg::Summary(agg)));
                    }
                }
                self.shell_signal(now, live_cell, dir, out);
            }
        }
    }

    /// As the layer gateway: the signal for this layer, from the summaries of the others.
    fn shell_signal(&mut self, now: Instant, live_cell: &[u32], dir: &Directory, out: &mut Sends) {
        let my = self.addr.layer;
        let fresh = |d: &Dest| {
            self.summaries
                .get(d)
                .filter(|(_, at)| !self.stale(*at, now))
                .map(|(s, _)| *s)
        };
        let layers: std::collections::BTreeSet<u16> =
            dir.peers.iter().map(|e| e.addr.layer).collect();
        let inner = layers.range(..my).next_back().copied();
        let received_total = inner
            .and_then(|l| fresh(&Dest::Layer { layer: l }))
            .map_or(0, |s| s.outward_mw);
        let tiles = dir.ids_where(|a| a.layer == my).len().max(1) as u64;
        let (mut outer_load, mut outer_layer, mut outer_crossed) = (0u32, my, 0u64);
        for l in layers.range(my + 1..) {
            if let Some(s) = fresh(&Dest::Layer { layer: *l }) {
                if s.load_ppm() >= outer_load {
                    outer_load = s.load_ppm();
                    outer_layer = *l;
                }
                outer_crossed = earliest(outer_crossed, s.crossed_ns);
            }
        }
        let throttle = if self.throttled {
            outer_load >= RELEASE_PPM
        } else {
            outer_load >= THROTTLE_PPM
        };
        let sig = ShellSignal {
            layer: my,
            version: now.as_nanos(),
            received_per_tile_mw: received_total / tiles,
            outer_load_ppm: outer_load,
            outer_layer,
            throttle,
            outer_crossed_ns: outer_crossed,
        };
        self.on_shell(now, self.me, sig, live_cell, dir, out);
    }

    /// A shell signal for this layer: apply it and pass it down (layer gateway → cluster
    /// gateways → cell gateways → cell members). Older versions are ignored.
    fn on_shell(
        &mut self,
        now: Instant,
        _src: u32,
        s: ShellSignal,
        live_cell: &[u32],
        dir: &Directory,
        out: &mut Sends,
    ) {
        if s.layer != self.addr.layer || s.version <= self.shell_version {
            return;
        }
        self.shell_version = s.version;
        self.received_w = s.received_per_tile_mw as f64 / 1000.0;
        if s.throttle && !self.throttled {
            self.stats.throttle_onsets += 1;
            if s.outer_crossed_ns > 0 {
                let lag = now.as_nanos().saturating_sub(s.outer_crossed_ns) as f64 / 1e9;
                self.stats.throttle_lag_max_s = self.stats.throttle_lag_max_s.max(lag);
            }
            // Every lease running here now runs below its terms: an SLA violation each.
            let running = self.held.values().filter(|h| h.expiry > now).count() as u64;
            self.stats.sla_violations += running;
        }
        self.throttled = s.throttle;
        let my = self.addr;
        let mut to: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
        if dir.gateway_of(Dest::Layer { layer: my.layer }) == Some(self.me) {
            let clusters: std::collections::BTreeSet<u16> = dir
                .peers
                .iter()
                .filter(|e| e.addr.layer == my.layer)
                .map(|e| e.addr.cluster)
                .collect();
            for c in clusters {
                to.extend(dir.gateway_of(Dest::Cluster {
                    layer: my.layer,
                    cluster: c,
                }));
            }
        }
        if dir.gateway_of(Dest::Cluster {
            layer: my.layer,
            cluster: my.cluster,
        }) == Some(self.me)
        {
            let cells: std::collections::BTreeSet<u16> = dir
                .peers
                .iter()
                .filter(|e| e.addr.layer == my.layer && e.addr.cluster == my.cluster)
                .map(|e| e.addr.cell)
                .collect();
            for c in cells {
                to.extend(dir.gateway_of(Dest::Cell {
                    layer: my.layer,
                    cluster: my.cluster,
                    cell: c,
                }));
            }
        }
        if Self::cell_gateway(live_cell, dir) == Some(self.me)
            || dir.gateway_of(Dest::cell_of(&my)) == Some(self.me)
        {
            to.extend(live_cell.iter().copied());
        }
        to.remove(&self.me);
        for t in to {
            out.push((t, HeatMsg::Shell(s)));
        }
    }

    /// A message from `src` (the frame's verified sender).
    pub fn on_message(
        &mut self,
        now: Instant,
        src: u32,
        m: HeatMsg,
        live_cell: &[u32],
        dir: &Directory,
        out: &mut Sends,
    ) {
        self.handle(now, src, m, live_cell, dir, out);
        self.settle(now, live_cell, dir, out);
    }

    fn handle(
        &mut self,
        now: Instant,
        src: u32,
        m: HeatMsg,
        live_cell: &[u32],
        dir: &Directory,
        out: &mut Sends,
    ) {
        match m {
            HeatMsg::Descriptor(d) => {
                let same_cell = dir
                    .addr(src)
                    .is_some_and(|a| Dest::cell_of(&self.addr).contains(&a));
                if same_cell
                    && self
                        .cell
                        .get(&src)
                        .is_none_or(|(o, _)| o.version < d.version)
                {
                    self.cell.insert(src, (d, now));
                }
            }
            HeatMsg::Summary(s) => {
                // Only the scope's own gateway speaks for it.
                let from_gw = match s.scope {
                    Dest::Cell { .. } => dir.addr(src).is_some_and(|a| s.scope.contains(&a)),
                    _ => dir.gateway_of(s.scope) == Some(src),
                };
                if from_gw
                    && self
                        .summaries
                        .get(&s.scope)
                        .is_none_or(|(o, _)| o.version < s.version)
                {
                    self.summaries.insert(s.scope, (s, now));
                }
            }
            HeatMsg::Shell(s) => {
                if dir.addr(src).is_some_and(|a| a.layer == s.layer) {
                    self.on_shell(now, src, s, live_cell, dir, out);
                }
            }
            HeatMsg::Offer(_) | HeatMsg::Renew { .. } if self.by_log(src, dir) => {
                // Within the cell only the log grants and renews (`bft_leases`).
                self.grant_latency.offers_unbound += 1;
            }
            HeatMsg::Offer(t) => {
                let why = self.admit(now, &t);
                match why {
                    None => {
                        let expiry = Instant::from_nanos(t.expiry_ns);
                        self.held.insert(
                            t.id,
                            Held {
                                owner: src,
                                terms: t,
                                expiry,
                            },
                        );
                        out.push((
                            src,
                            HeatMsg::Accept {
                                id: t.id,
                                expiry_ns: t.expiry_ns,
                            },
                        ));
                    }
                    Some(why) => out.push((src, HeatMsg::Refuse { id: t.id, why })),
                }
            }
            HeatMsg::Renew { id, expiry_ns } => match self.held.get_mut(&id) {
                Some(h) if h.owner == src && h.expiry > now => {
                    h.expiry = h.expiry.max(Instant::from_nanos(expiry_ns));
                    out.push((
                        src,
                        HeatMsg::Renewed {
                            id,
                            expiry_ns: h.expiry.as_nanos(),
                        },
                    ));
                }
                _ => out.push((
                    src,
                    HeatMsg::Refuse {
                        id,
                        why: Refusal::Expired,
                    },
                )),
            },
            HeatMsg::Release { id } => {
                if self.held.get(&id).is_some_and(|h| h.owner == src) {
                    self.held.remove(&id);
                }
            }
            HeatMsg::Accept { id, expiry_ns } | HeatMsg::Renewed { id, expiry_ns } => {
                // Byzantine `double_lease`: the second tile's accept is as good.
                if matches!(m, HeatMsg::Accept { .. }) && self.task_of(id, src).is_none() {
                    if let Some(t) = self.tasks.values_mut().find(|t| {
                        t.lease == id && t.also == Some(src) && t.state == TaskState::Offered
                    }) {
                        t.holder = src;
                        t.also = None;
                    }
                }
                if let Some(t) = self.task_of(id, src) {
                    t.state = TaskState::Leased;
                    t.confirmed = t
                        .confirmed
                        .max(Instant::from_nanos(expiry_ns).min(t.sent_expiry));
                    if matches!(m, HeatMsg::Accept { .. }) {
                        self.stats.leases_placed += 1;
                    }
                }
            }
            HeatMsg::Refuse { id, why } => {
                let mut refused = false;
                if let Some(t) = self.task_of(id, src) {
                    if t.state == TaskState::Offered || why == Refusal::Expired {
                        // The tile holds nothing: safe to place elsewhere after the expiry
                        // we sent (it may still be in flight to it).
                        t.state = TaskState::Unplaced;
                        t.refused.insert(src, now);
                        refused = true;
                    }
                }
                if refused {
                    self.stats.leases_refused += 1;
                }
            }
        }
    }

    fn task_of(&mut self, lease: u64, holder: u32) -> Option<&mut Task> {
        self.tasks
            .values_mut()
            .find(|t| t.lease == lease && t.holder == holder && t.state != TaskState::Unplaced)
    }

    /// Admission of an offered lease: `None` to take it.
    fn admit(&self, now: Instant, t: &LeaseTerms) -> Option<Refusal> {
        if t.expiry_ns <= now.as_nanos() {
            return Some(Refusal::Expired);
        }
        if self.throttled {
            return Some(Refusal::Throttled);
        }
        if self.held.len() >= MAX_TASKS
            || self.params.compute_units.saturating_sub(self.in_use(now)) < t.compute
        {
            return Some(Refusal::NoCompute);
        }
        if self
            .params
            .memory_mib
            .saturating_sub(self.memory_in_use(now))
            < t.memory_mib
        {
            return Some(Refusal::NoMemory);
        }
        let extra = self.params.power_per_unit_w * f64::from(t.compute);
        let heat = self.power_w(now) + self.received_w + extra;
        if heat > BACKPRESSURE_LOAD * self.tile.capacity_w() {
            return Some(Refusal::NoHeadroom);
        }
        None
    }

    fn run_tasks(&mut self, now: Instant, dir: &Directory, out: &mut Sends) {
        let span = self.lease_span();
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            let mut t = self.tasks[&id].clone();
            if now >= t.end {
                if t.state != TaskState::Unplaced {
                    out.push((t.holder, HeatMsg::Release { id: t.lease }));
                }
                self.tasks.remove(&id);
                self.stats.tasks_done += 1;
                continue;
            }
            match t.state {
                TaskState::Leased => {
                    self.feed(now, &mut t);
                    if t.confirmed <= now {
                        // Lost: no renewal answered in time.
                        self.stats.sla_violations += 1;
                        t.state = TaskState::Unplaced;
                        t.refused.insert(t.holder, now);
                    } else if t.confirmed.saturating_since(now) <= span / 2 {
                        let e = (now + span).min(t.end.max(now + span / 4));
                        let extends = e > t.sent_expiry;
                        t.sent_expiry = t.sent_expiry.max(e);
                        if !self.by_log(t.holder, dir) {
                            out.push((
                                t.holder,
                                HeatMsg::Renew {
                                    id: t.lease,
                                    expiry_ns: t.sent_expiry.as_nanos(),
                                },
                            ));
                        } else if extends {
                            // (A renewal extending nothing the log rejects as unchanged:
                            // not submitted.)
                            self.grants_out.push(Grant {
                                owner: self.me,
                                holder: t.holder,
                                start_ns: now.as_nanos(),
                                terms: terms_of(id, &t),
                            });
                        }
                    }
                }
                TaskState::Offered => {
                    if t.sent_expiry <= now {
                        t.state = TaskState::Unplaced;
                        t.refused.insert(t.holder, now);
                    }
                }
                TaskState::Unplaced => {}
            }
            if t.state == TaskState::Unplaced && t.sent_expiry <= now {
                if let Some(to) = self.choose(now, &t, dir) {
                    t.lease = self.fresh_id();
                    t.holder = to;
                    t.state = TaskState::Offered;
                    t.sent_expiry = now + span;
                    t.confirmed = now;
                    t.also = None;
                    let terms = terms_of(id, &t);
                    let mut tos = vec![to];
                    if self.double_lease {
                        let mut other = t.clone();
                        other.refused.insert(to, now);
                        if let Some(to2) = self.choose(now, &other, dir) {
                            t.also = Some(to2);
                            tos.push(to2);
                        }
                    }
                    for to in tos {
                        if self.by_log(to, dir) {
                            self.grants_out.push(Grant {
                                owner: self.me,
                                holder: to,
                                start_ns: now.as_nanos(),
                                terms,
                            });
                        } else {
                            out.push((to, HeatMsg::Offer(terms)));
                        }
                    }
                }
            }
            t.refused.retain(|_, at| !self.stale(*at, now));
            self.tasks.insert(id, t);
        }
    }

    /// A leased task's input stream since its last round: `traffic_kbps` × the time since,
    /// queued for the node to send to the holder as data frames (a task on this tile
    /// itself gets nothing over the network).
    fn feed(&mut self, now: Instant, t: &mut Task) {
        // At most two rounds' worth: a task just leased again is not owed its unplaced time.
        let since = now.saturating_since(t.fed).min(self.interval() * 2);
        t.fed = now;
        if t.spec.traffic_kbps == 0 || t.holder == self.me {
            return;
        }
        let bits = u128::from(t.spec.traffic_kbps) * 1000 * since.as_nanos() / 1_000_000_000;
        let mut bytes = (bits / 8) as usize + t.owed;
        let frame = super::task::TRAFFIC_FRAME_BYTES;
        while bytes >= frame && self.data_out.len() < MAX_DATA_FRAMES {
            self.data_out.push((t.holder, frame));
            self.stats.traffic_bytes += frame as u64;
            bytes -= frame;
        }
        // Less than a frame waits for the next round; beyond the per-round bound is shed.
        if bytes >= frame {
            self.stats.traffic_shed_bytes += (bytes - bytes % frame) as u64;
        }
        t.owed = bytes % frame;
    }

    /// The input-stream frames queued by the last round, (holder, payload bytes): the node
    /// sends them as `Data`.
    pub fn take_data(&mut self) -> Vec<(u32, usize)> {
        std::mem::take(&mut self.data_out)
    }

    /// The tile to offer a task to: one of the cell with room (most headroom first), else
    /// (a gateway) the best tile of a known cell elsewhere, inner layers first for hot
    /// work and outer layers first for cold.
    fn choose(&self, now: Instant, t: &Task, _dir: &Directory) -> Option<u32> {
        let need = t.spec.compute;
        let power = self.params.power_per_unit_w * f64::from(need);
        let fits = |n: &u32, d: &Descriptor| {
            !d.throttled
                && d.compute_free >= need
                && d.memory_free_mib >= t.spec.memory_mib
                && d.headroom_mw >= mw(power)
                && !t.refused.contains_key(n)
        };
        let own = self
            .cell
            .iter()
            .filter(|(n, (d, at))| !self.stale(*at, now) && fits(n, d))
            .max_by_key(|(n, (d, _))| (d.headroom_mw, std::cmp::Reverse(**n)))
            .map(|(n, _)| *n);
        if own.is_some() {
            return own;
        }
        let hot = TaskClass::from(t.spec.class) == TaskClass::Hot;
        let my = self.addr;
        let mut far: Vec<(u8, i32, u32)> = self
            .summaries
            .iter()
            .filter(|(d, (s, at))| {
                matches!(d, Dest::Cell { .. })
                    && !self.stale(*at, now)
                    && s.best_free >= need
                    && !t.refused.contains_key(&s.best_tile)
                    && !d.contains(&my)
            })
            .map(|(d, (s, _))| {
                let (l, c) = match d {
                    Dest::Cell { layer, cluster, .. } => (*layer, *cluster),
                    _ => (0, 0),
                };
                let level = if l == my.layer && c == my.cluster {
                    0
                } else {
                    1
                };
                let dir_rank = if hot { i32::from(l) } else { -i32::from(l) };
                (level, dir_rank, s.best_tile)
            })
            .collect();
        far.sort();
        far.first().map(|f| f.2)
    }
}

/// The terms of task `id`'s current lease, as last sent (`sent_expiry`).
fn terms_of(id: u64, t: &Task) -> LeaseTerms {
    LeaseTerms {
        id: t.lease,
        task: id,
        compute: t.spec.compute,
        memory_mib: t.spec.memory_mib,
        bandwidth_mbps: t.spec.bandwidth_mbps,
        class: t.spec.class.into(),
        expiry_ns: t.sent_expiry.as_nanos(),
        end_ns: t.end.as_nanos(),
    }
}

fn empty(scope: Dest, now: Instant) -> HeatSummary {
    HeatSummary {
        scope,
        version: now.as_nanos(),
        tiles: 0,
        compute_total: 0,
        compute_free: 0,
        capacity_mw: 0,
        heat_mw: 0,
        outward_mw: 0,
        max_load_ppm: 0,
        best_tile: 0,
        best_free: 0,
        crossed_ns: 0,
    }
}

/// Sums saturate: a summary is a peer's word (a forged or corrupt one must not overflow,
/// which panicked under overflow checks: found by the `datagram` fuzz target).
fn add(a: &mut HeatSummary, s: &HeatSummary) {
    a.tiles = a.tiles.saturating_add(s.tiles);
    a.compute_total = a.compute_total.saturating_add(s.compute_total);
    a.compute_free = a.compute_free.saturating_add(s.compute_free);
    a.capacity_mw = a.capacity_mw.saturating_add(s.capacity_mw);
    a.heat_mw = a.heat_mw.saturating_add(s.heat_mw);
    a.outward_mw = a.outward_mw.saturating_add(s.outward_mw);
    a.max_load_ppm = a.max_load_ppm.max(s.max_load_ppm);
    if s.best_free > a.best_free {
        a.best_free = s.best_free;
        a.best_tile = s.best_tile;
    }
    a.crossed_ns = earliest(a.crossed_ns, s.crossed_ns);
}

/// The earlier of two crossing times, 0 meaning none.
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

/// The subsystem's series as the agent exports them (label `node`) and the twin records
/// them: name, help, and whether it is a counter (else a gauge). One list, so the lab and
/// the twin cannot name them differently.
pub const METRICS: [(&str, &str, bool); 18] = [
    ("lightcone_thermal_load_ratio", "Thermal load: heat to reject (own power + heat received from the shell inside) / radiator capacity", false),
    ("lightcone_thermal_load_peak_ratio", "Highest thermal load seen at a round since the node started", false),
    ("lightcone_thermal_temperature_kelvin", "The tile's modelled temperature, K", false),
    ("lightcone_thermal_capacity_watts", "Radiator capacity at the shell's radius (emission at the radiator's limit), W", false),
    ("lightcone_thermal_power_watts", "Power drawn by the tile's work (all of it heat), W", false),
    ("lightcone_thermal_received_watts", "Heat landing on the tile from the shell inside, W", false),
    ("lightcone_thermal_rejected_joules_total", "Heat radiated to deep space, J", true),
    ("lightcone_thermal_passed_outward_joules_total", "Heat radiated onto the shell outside, J", true),
    ("lightcone_thermal_throttled", "1 while backpressure holds (a shell outside at or above 90 %)", false),
    ("lightcone_thermal_throttle_onsets_total", "Times backpressure started here", true),
    ("lightcone_thermal_throttle_lag_max_seconds", "Longest time from the first outer tile passing 90 % to this tile throttling, s", false),
    ("lightcone_leases_active", "Leases this tile holds now", false),
    ("lightcone_leases_placed_total", "Leases placed for tasks this tile owns", true),
    ("lightcone_leases_expired_total", "Leases that expired at this tile without renewal", true),
    ("lightcone_leases_refused_total", "Lease offers of this tile's tasks refused", true),
    ("lightcone_leases_violated_total", "SLA violations: leases lost before their task's end, and leases throttled", true),
    ("lightcone_tasks_done_total", "Tasks owned here that reached their end", true),
    ("lightcone_tasks_active", "Tasks owned here not yet done", false),
];

impl HeatStats {
    /// The values of [`METRICS`], in its order.
    pub fn metric_values(&self) -> [f64; 18] {
        [
            self.load_ratio,
            self.load_peak_ratio,
            self.temp_k,
            self.capacity_w,
            self.power_w,
            self.received_w,
            self.rejected_j.max(0.0),
            self.passed_outward_j.max(0.0),
            f64::from(u8::from(self.throttled)),
            self.throttle_onsets as f64,
            self.throttle_lag_max_s,
            self.leases_held as f64,
            self.leases_placed as f64,
            self.leases_expired as f64,
            self.leases_refused as f64,
            self.sla_violations as f64,
            self.tasks_done as f64,
            self.tasks_active as f64,
        ]
    }
}
