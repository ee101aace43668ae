//! Hierarchical distance-vector overlay routing, quarantine and locality accounting.
//!
//! Addresses are hierarchical (layer.cluster.cell.tile). Like area routing in IS-IS or the
//! hierarchy of Kleinrock & Kamoun (1977), a node keeps one route per *tile of its own
//! cell*, one per *other cell of its cluster*, one per *other cluster of its layer* and one
//! per *other layer*, so tables grow with the fan-out of each level, not with the system.
//! A frame for a node outside the cell follows the route of the smallest scope holding it;
//! the first node inside that scope resolves the next level.
//!
//! Routes are computed by Bellman–Ford over the node's links (RIP-like, RFC 2453): link
//! cost is the configured one-way delay (µs), each neighbour's last advertisement is kept,
//! split horizon with poisoned reverse is applied, a hop limit bounds count-to-infinity,
//! changes are sent as triggered updates and the full table is refreshed periodically.
//! A neighbour silent for `neighbor_timeout` (or declared dead by membership, or
//! quarantined) is dropped and its routes heal onto the other links.
//!
//! Quarantine (the spec's "suspect nodes are quarantined at the routing layer"): a
//! quarantined node gets no transit (never a next hop), and frames from or to it are
//! dropped. A *distrusted* neighbour (the neighbourhood watch holds its own evidence
//! against it, not yet a quorum) only loses transit: it is never a next hop except for
//! frames to itself, and its frames are still taken.
//!
//! Locality accounting: every frame this node *originates* is counted once per level
//! (cell, cluster, layer) as local when its destination lies inside the source's scope at
//! that level, remote otherwise; summing over nodes gives the system's locality ratio.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::addr::HierAddr;
use crate::directory::Directory;
use crate::time::Instant;
use crate::wire::{Dest, RouteEntry, MAX_ROUTE_ENTRIES};

/// A cost that means "unreachable" (a withdrawn or poisoned route).
pub const INFINITY_US: u32 = u32::MAX;

/// Routing parameters (emulated time).
#[derive(Debug, Clone)]
pub struct RouteParams {
    /// Send a keepalive to a neighbour we have sent nothing to for this long. Default 1 s.
    /// A link longer than `hello_interval × hello_per_delay` gets keepalives every
    /// `one-way delay / hello_per_delay` instead: no failure on it can be seen sooner than
    /// its delay, and light-minute links would otherwise carry most of a cell's bytes.
    pub hello_interval: Duration,
    /// See `hello_interval`. Default 10.
    pub hello_per_delay: u32,
    /// A neighbour not heard from for this long is down (times the link's keepalive interval
    /// over `hello_interval`, for long links). Default 4 s.
    pub neighbor_timeout: Duration,
    /// Full-table refresh to every neighbour. Default 30 s.
    pub refresh_interval: Duration,
    /// Advertised entries expire if not refreshed for this long. Default 100 s.
    pub entry_lifetime: Duration,
    /// Batching delay of triggered updates. Default 50 ms.
    pub triggered_delay: Duration,
    /// A triggered update (and the full table a neighbour gets when its link comes up) is
    /// sent once more this long after, with the entries' values then; zero: never. Sent
    /// once, a triggered update lost on every link into a tile left the destination
    /// unreachable from it until the next full refresh (traced at 10^4 tiles with 1 % loss:
    /// `docs/twin-scale.md` §6; with repeats the shipped 10^4 scenario converged 1.5 s
    /// virtual into its warm-up). Default 1 s.
    pub repeat_after: Duration,
    /// Hop limit: routes longer than this are unreachable (bounds count-to-infinity).
    pub max_hops: u8,
}

impl Default for RouteParams {
    fn default() -> Self {
        RouteParams {
            hello_interval: Duration::from_secs(1),
            hello_per_delay: 10,
            neighbor_timeout: Duration::from_secs(4),
            refresh_interval: Duration::from_secs(30),
            entry_lifetime: Duration::from_secs(100),
            triggered_delay: Duration::from_millis(50),
            repeat_after: Duration::from_secs(1),
            max_hops: 30,
        }
    }
}

#[derive(Debug, Clone)]
struct Link {
    cost_us: u32,
    /// Keepalive interval and silence timeout of this link (see [`RouteParams`]).
    hello: Duration,
    timeout: Duration,
    up: bool,
    last_heard: Option<Instant>,
    last_sent: Option<Instant>,
    /// Silences longer than `hello` ended by a frame: the link (or the neighbour) was quiet
    /// for longer than it keeps alive. The watch excuses an audit across one.
    silences: u64,
}

/// One route of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Route {
    pub next_hop: u32,
    pub cost_us: u32,
    pub hops: u8,
}

/// Per level, bytes whose destination is inside (local) or outside (remote) the source's
/// scope at that level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Locality {
    /// All originated bytes, indexed by [`Level`] then 0 = local, 1 = remote.
    pub bytes: [[u64; 2]; 3],
    /// The workload's share of `bytes` (application data and its replication: `Data` and
    /// `Kv` frames); the rest is the protocol's own (membership, routing, time, watch).
    pub workload: [[u64; 2]; 3],
}

/// Hierarchy levels for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Cell = 0,
    Cluster = 1,
    Layer = 2,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Cell, Level::Cluster, Level::Layer];
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Cell => "cell",
            Level::Cluster => "cluster",
            Level::Layer => "layer",
        }
    }
}

impl Locality {
    pub fn local_ratio(&self, level: Level) -> Option<f64> {
        let [l, r] = self.bytes[level as usize];
        (l + r > 0).then(|| l as f64 / (l + r) as f64)
    }
}

/// Where a node sits: what it needs to map an advertised destination to the key its own
/// table keeps it under ([`Routing::localize`]). Fixed for a node's life.
#[derive(Clone, Copy)]
struct Here<'a> {
    me: u32,
    my: HierAddr,
    dir: &'a Directory,
}

impl Here<'_> {
    fn localize(&self, raw: Dest) -> Option<Dest> {
        let my = &self.my;
        match raw {
            Dest::Node(x) => node_key(my, self.me, x, &self.dir.addr(x)?),
            Dest::Cell {
                layer,
                cluster,
                cell,
            } => scope_key(my, layer, Some(cluster), Some(cell)),
            Dest::Cluster { layer, cluster } => scope_key(my, layer, Some(cluster), None),
            Dest::Layer { layer } => scope_key(my, layer, None, None),
            Dest::Link => None,
        }
    }

    /// The local key of a kept entry (kept entries always have one: see
    /// [`Routing::on_advert`]; `Link`, which none has, would sort last).
    fn key(&self, raw: Dest) -> Dest {
        self.localize(raw).unwrap_or(Dest::Link)
    }
}

/// One advertised entry: what a neighbour said about `raw` (24 bytes; its local key is
/// derived from `raw`, never stored).
#[derive(Debug, Clone, Copy)]
struct Advert {
    raw: Dest,
    heard: Instant,
    cost_us: u32,
    hops: u8,
}

/// What one neighbour advertised: (local destination, raw advertised destination) →
/// (cost, hops, when heard), in that key order (the order the `BTreeMap` of those keys it
/// replaced iterated, so every walk over it visits entries as before).
///
/// A sorted vector, not a `BTreeMap`: a tile keeps one of these per neighbour with an entry
/// for nearly every destination of its cell (~3,000 entries a tile in 1,000-tile cells of
/// degree 4), and a B-tree built by in-order inserts leaves its nodes about half full
/// (~60 bytes an entry with the stored local key, the largest share of a tile's memory in
/// the twin). Here an entry is 24 bytes (the local key is a pure function of the raw one
/// for a given node, so it is recomputed, not kept) and the vector grows by an eighth at a
/// time. Inserting a new key moves the tail (a few KiB at most), which happens when a
/// neighbour first tells us of a destination.
#[derive(Debug, Clone, Default)]
struct Adverts {
    entries: Vec<Advert>,
}

impl Adverts {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, here: Here<'_>, local: Dest, raw: Dest) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|a| (here.key(a.raw), a.raw).cmp(&(local, raw)))
    }

    /// Sets the entry for `raw`, kept under `local` (= `here.localize(raw)`).
    fn insert(
        &mut self,
        here: Here<'_>,
        local: Dest,
        raw: Dest,
        cost_us: u32,
        hops: u8,
        heard: Instant,
    ) {
        let a = Advert {
            raw,
            heard,
            cost_us,
            hops,
        };
        match self.find(here, local, raw) {
            Ok(i) => self.entries[i] = a,
            Err(i) => {
                if self.entries.len() == self.entries.capacity() {
                    self.entries.reserve_exact((self.entries.len() / 8).max(16));
                }
                self.entries.insert(i, a);
            }
        }
    }

    fn remove(&mut self, here: Here<'_>, local: Dest, raw: Dest) {
        if let Ok(i) = self.find(here, local, raw) {
            self.entries.remove(i);
        }
    }

    /// The entries kept under our destination `local`.
    fn under(&self, here: Here<'_>, local: Dest) -> &[Advert] {
        let from = self.entries.partition_point(|a| here.key(a.raw) < local);
        let to = from + self.entries[from..].partition_point(|a| here.key(a.raw) == local);
        &self.entries[from..to]
    }
}

/// The key under which a node at `my` keeps its route to a scope (layer `l`, cluster `c`,
/// cell `ce`): the smallest scope holding it that is not ours; `None` when it is ours (or
/// encloses ours).
fn scope_key(my: &HierAddr, l: u16, c: Option<u16>, ce: Option<u16>) -> Option<Dest> {
    if l != my.layer {
        return Some(Dest::Layer { layer: l });
    }
    let c = c?;
    if c != my.cluster {
        return Some(Dest::Cluster {
            layer: l,
            cluster: c,
        });
    }
    let ce = ce?;
    if ce != my.cell {
        return Some(Dest::Cell {
            layer: l,
            cluster: c,
            cell: ce,
        });
    }
    None
}

/// The key under which node `me` at `my` keeps its route to node `x` at `xa`: the node
/// itself inside our cell, else its smallest scope that is not ours; `None` for ourselves.
pub fn node_key(my: &HierAddr, me: u32, x: u32, xa: &HierAddr) -> Option<Dest> {
    if x == me {
        return None;
    }
    scope_key(my, xa.layer, Some(xa.cluster), Some(xa.cell)).or(Some(Dest::Node(x)))
}

/// Routing state of one node.
#[derive(Debug, Clone)]
pub struct Routing {
    me: u32,
    my: HierAddr,
    dir: Arc<Directory>,
    params: RouteParams,
    links: BTreeMap<u32, Link>,
    /// Per neighbour: what it advertised, keyed by our local destination first.
    adverts: BTreeMap<u32, Adverts>,
    table: BTreeMap<Dest, Route>,
    /// Destinations changed since the last triggered update.
    dirty: BTreeSet<Dest>,
    /// Neighbours owed a full table (just came up).
    owe_full: BTreeSet<u32>,
    /// Neighbours whose adverts we dropped when their link went down here: when it comes
    /// back up, we ask for their table ([`Routing::heard`] says so), since they may never
    /// have noticed and would resend it only at the next periodic refresh.
    dropped: BTreeSet<u32>,
    /// Destinations sent in a triggered update, with when (the last time): each is sent
    /// again `repeat_after` later ([`Routing::take_repeats`]).
    repeat: BTreeMap<Dest, Instant>,
    /// Neighbours sent a full table on link-up, with when: owed it once more.
    repeat_full: BTreeMap<u32, Instant>,
    quarantine: BTreeSet<u32>,
    distrust: BTreeSet<u32>,
    /// Attestation required (issue 18): a link comes up only to an admitted neighbour.
    gated: bool,
    /// Neighbours whose attestation was accepted (`crate::update::attest`).
    admitted: BTreeSet<u32>,
    pub locality: Locality,
}

impl Routing {
    /// Entries held, per structure (see [`crate::Node::footprint`]).
    pub fn footprint(&self, out: &mut Vec<(&'static str, usize)>) {
        out.push(("routing.links", self.links.len()));
        out.push((
            "routing.adverts",
            self.adverts.values().map(|a| a.len()).sum(),
        ));
        out.push(("routing.table", self.table.len()));
        out.push(("routing.dirty", self.dirty.len()));
        out.push(("routing.repeat", self.repeat.len() + self.repeat_full.len()));
    }
    pub fn new(me: u32, dir: Arc<Directory>, links: &[(u32, u64)], params: RouteParams) -> Self {
        let my = dir.addr(me).unwrap_or(HierAddr {
            layer: 0,
            cluster: 0,
            cell: 0,
            tile: 0,
        });
        let links = links
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, ns)| {
                let cost_us = (ns / 1000).clamp(1, u64::from(INFINITY_US / 4)) as u32;
                let base = params.hello_interval;
                let hello = (Duration::from_nanos(*ns) / params.hello_per_delay.max(1)).max(base);
                let timeout = params
                    .neighbor_timeout
                    .mul_f64(hello.as_secs_f64() / base.as_secs_f64().max(1e-9));
                (
                    *id,
                    Link {
                        cost_us,
                        hello,
                        timeout,
                        up: false,
                        last_heard: None,
                        last_sent: None,
                        silences: 0,
                    },
                )
            })
            .collect();
        Routing {
            me,
            my,
            dir,
            params,
            links,
            adverts: BTreeMap::new(),
            table: BTreeMap::new(),
            dirty: BTreeSet::new(),
            owe_full: BTreeSet::new(),
            dropped: BTreeSet::new(),
            repeat: BTreeMap::new(),
            repeat_full: BTreeMap::new(),
            quarantine: BTreeSet::new(),
            distrust: BTreeSet::new(),
            gated: false,
            admitted: BTreeSet::new(),
            locality: Locality::default(),
        }
    }

    pub fn params(&self) -> &RouteParams {
        &self.params
    }
    pub fn is_neighbor(&self, n: u32) -> bool {
        self.links.contains_key(&n)
    }
    pub fn neighbors(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.keys().copied()
    }
    /// The one-way delay of the link to neighbour `n` (its configured cost).
    pub fn link_delay(&self, n: u32) -> Option<Duration> {
        self.links
            .get(&n)
            .map(|l| Duration::from_micros(u64::from(l.cost_us)))
    }
    pub fn neighbor_up(&self, n: u32) -> bool {
        self.links.get(&n).is_some_and(|l| l.up)
    }
    /// How many times neighbour `n` fell silent for longer than its keepalive interval and
    /// was heard again (the watch excuses audits across a silence: the link, not the
    /// neighbour, lost them).
    pub fn silences(&self, n: u32) -> u64 {
        self.links.get(&n).map_or(0, |l| l.silences)
    }
    /// The keepalive interval of the link to neighbour `n` (zero when not a neighbour).
    pub fn keepalive(&self, n: u32) -> Duration {
        self.links.get(&n).map_or(Duration::ZERO, |l| l.hello)
    }
    /// True when neighbour `n` was heard within its keepalive interval.
    pub fn heard_lately(&self, n: u32, now: Instant) -> bool {
        self.links.get(&n).is_some_and(|l| {
            l.last_heard
                .is_some_and(|t| now.saturating_since(t) <= l.hello)
        })
    }
    /// Neighbours whose link is up but that missed two keepalive intervals: not down yet
    /// (that takes `neighbor_timeout`), but worth a membership probe now.
    pub fn quiet_neighbors(&self, now: Instant) -> BTreeSet<u32> {
        self.links
            .iter()
            .filter(|(_, l)| Self::quiet(l, now))
            .map(|(n, _)| *n)
            .collect()
    }
    fn quiet(l: &Link, now: Instant) -> bool {
        l.up && l
            .last_heard
            .is_some_and(|t| now.saturating_since(t) > l.hello * 2)
    }
    /// Whether a frame to node `n` has somewhere to go: a route whose next hop has not gone
    /// quiet. A route through a quiet neighbour is still in the table until
    /// `neighbor_timeout`, but whatever is sent along it meanwhile is most likely lost.
    pub fn reaches(&self, n: u32, now: Instant) -> bool {
        self.next_hop(Dest::Node(n))
            .is_some_and(|h| !self.links.get(&h).is_some_and(|l| Self::quiet(l, now)))
    }
    pub fn is_quarantined(&self, n: u32) -> bool {
        self.quarantine.contains(&n)
    }
    pub fn quarantined(&self) -> &BTreeSet<u32> {
        &self.quarantine
    }
    pub fn table(&self) -> &BTreeMap<Dest, Route> {
        &self.table
    }
    pub fn has_pending_update(&self) -> bool {
        !self.dirty.is_empty() || !self.owe_full.is_empty()
    }

    /// The destination key this node's table uses for `raw` (None: it is us / our scope).
    pub fn localize(&self, raw: Dest) -> Option<Dest> {
        self.here().localize(raw)
    }

    fn here(&self) -> Here<'_> {
        Here {
            me: self.me,
            my: self.my,
            dir: &self.dir,
        }
    }

    /// True when a frame for `dst` is for this node.
    pub fn is_local(&self, dst: Dest) -> bool {
        match dst {
            Dest::Node(x) => x == self.me,
            Dest::Link => true,
            scope => scope.contains(&self.my),
        }
    }

    /// Tiles of our cell that neighbour `s` advertises at one hop (its own neighbours) and
    /// that we reach through `s`: what a forwarding audit of `s` can test (see
    /// [`crate::watch`]).
    pub fn audit_targets(&self, s: u32) -> Vec<u32> {
        let Some(ads) = self.adverts.get(&s) else {
            return Vec::new();
        };
        let here = self.here();
        ads.entries
            .iter()
            .filter_map(|a| match here.key(a.raw) {
                d @ Dest::Node(x)
                    if a.hops == 1
                        && x != self.me
                        && self.table.get(&d).is_some_and(|r| r.next_hop == s) =>
                {
                    Some(x)
                }
                _ => None,
            })
            .collect()
    }

    /// Next hop towards `dst`, if any.
    pub fn next_hop(&self, dst: Dest) -> Option<u32> {
        if let Dest::Node(x) = dst {
            if self.quarantine.contains(&x) {
                return None;
            }
        }
        let d = self.localize(dst)?;
        // A node outside our cell that is our direct neighbour is one hop away, whatever
        // the aggregated route to its scope says (in a star, the route to the hub's cell
        // of leaves points at one leaf, which reaches the others only back through us).
        if let (Dest::Node(x), false) = (dst, matches!(d, Dest::Node(_))) {
            if self.links.get(&x).is_some_and(|l| l.up) {
                return Some(x);
            }
        }
        self.table.get(&d).map(|r| r.next_hop)
    }

    /// One-way cost to `dst` (zero if unknown).
    pub fn one_way(&self, dst: u32) -> Duration {
        self.localize(Dest::Node(dst))
            .and_then(|d| self.table.get(&d))
            .map(|r| Duration::from_micros(u64::from(r.cost_us)))
            .unwrap_or_default()
    }

    /// Anything heard from neighbour `n` proves the link works.
    ///
    /// Returns true when the link came back up after its adverts were dropped here: the
    /// caller asks the neighbour for its table (an empty full advert).
    pub fn heard(&mut self, n: u32, now: Instant) -> bool {
        let Some(l) = self.links.get_mut(&n) else {
            return false;
        };
        if l.last_heard
            .is_some_and(|t| now.saturating_since(t) > l.hello)
        {
            l.silences += 1;
        }
        l.last_heard = Some(now);
        let admitted = !self.gated || self.admitted.contains(&n);
        if !l.up && !self.quarantine.contains(&n) && admitted {
            l.up = true;
            self.owe_full.insert(n);
            self.recompute_via(n);
            return self.dropped.remove(&n);
        }
        false
    }

    /// Neighbour `n` (re)booted and asks for our whole table. A restart faster than
    /// `neighbor_timeout` never took the link down here, so without the request the new
    /// boot would wait for the next periodic refresh for its routes.
    pub fn table_requested(&mut self, n: u32) {
        if self.links.get(&n).is_some_and(|l| l.up) && !self.quarantine.contains(&n) {
            self.owe_full.insert(n);
        }
    }

    pub fn sent(&mut self, n: u32, now: Instant) {
        if let Some(l) = self.links.get_mut(&n) {
            l.last_sent = Some(now);
        }
    }

    /// Neighbours that need a keepalive now.
    pub fn hello_due(&self, now: Instant) -> Vec<u32> {
        self.links
            .iter()
            .filter(|(n, l)| {
                !self.quarantine.contains(n)
                    && l.last_sent
                        .is_none_or(|t| now.saturating_since(t) >= l.hello)
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// Marks silent neighbours down.
    pub fn sweep(&mut self, now: Instant) {
        let silent: Vec<u32> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.up && l
                    .last_heard
                    .is_none_or(|t| now.saturating_since(t) > l.timeout)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in silent {
            self.link_down(n);
        }
    }

    /// Expires advertised entries not refreshed within `entry_lifetime`.
    pub fn expire_entries(&mut self, now: Instant) {
        let life = self.params.entry_lifetime;
        let mut touched = BTreeSet::new();
        let here = Here {
            me: self.me,
            my: self.my,
            dir: &self.dir,
        };
        for ads in self.adverts.values_mut() {
            ads.entries.retain(|a| {
                let keep = now.saturating_since(a.heard) <= life;
                if !keep {
                    touched.insert(here.key(a.raw));
                }
                keep
            });
        }
        for d in touched {
            self.recompute(d);
        }
    }

    /// A neighbour is gone (silent, dead or quarantined): forget what it told us.
    pub fn link_down(&mut self, n: u32) {
        let Some(l) = self.links.get_mut(&n) else {
            return;
        };
        l.up = false;
        let here = Here {
            me: self.me,
            my: self.my,
            dir: &self.dir,
        };
        let dests: BTreeSet<Dest> = self
            .adverts
            .remove(&n)
            .map(|a| a.entries.into_iter().map(|e| here.key(e.raw)).collect())
            .unwrap_or_default();
        if !dests.is_empty() {
            self.dropped.insert(n);
        }
        let via = self.routes_via(n);
        for d in dests.into_iter().chain(via) {
            self.recompute(d);
        }
    }

    /// Destinations whose route goes through neighbour `n`.
    fn routes_via(&self, n: u32) -> Vec<Dest> {
        self.table
            .iter()
            .filter(|(_, r)| r.next_hop == n)
            .map(|(d, _)| *d)
            .collect()
    }

    /// No transit through neighbour `n` (see the module notes). Routes via it move at once.
    pub fn distrust(&mut self, n: u32) {
        if self.distrust.insert(n) {
            for d in self.routes_via(n) {
                self.recompute(d);
            }
        }
    }

    /// Ends a distrust (the watch's evidence against `n` lapsed and it was re-admitted).
    pub fn trust_again(&mut self, n: u32) {
        if self.distrust.remove(&n) {
            for d in self.routes_via(n) {
                self.recompute(d);
            }
        }
    }

    pub fn set_quarantine(&mut self, n: u32, on: bool) {
        if on {
            if self.quarantine.insert(n) {
                self.link_down(n);
                // Routes to it are useless: frames to it are dropped.
                let d = self.localize(Dest::Node(n));
                if let Some(d) = d {
                    if matches!(d, Dest::Node(_)) {
                        self.recompute(d);
                    }
                }
            }
        } else if self.quarantine.remove(&n) {
            // The link comes back when the neighbour is next heard.
        }
    }

    /// From now on a link comes up only to a neighbour admitted by attestation
    /// ([`Routing::admit`]; issue 18, `crate::update::attest`).
    pub fn set_gated(&mut self) {
        self.gated = true;
    }

    /// Neighbour `n`'s attestation was accepted: its link comes up if it was heard within
    /// its timeout (else when next heard), with the routes it advertised meanwhile. True
    /// when the link came up now.
    pub fn admit(&mut self, n: u32, now: Instant) -> bool {
        self.admitted.insert(n);
        let Some(l) = self.links.get_mut(&n) else {
            return false;
        };
        let fresh = l
            .last_heard
            .is_some_and(|t| now.saturating_since(t) <= l.timeout);
        if !l.up && fresh && !self.quarantine.contains(&n) {
            l.up = true;
            self.owe_full.insert(n);
            self.recompute_via(n);
            return true;
        }
        false
    }

    /// Neighbour `n` must attest again (it rebooted): its link goes down until it does.
    pub fn unadmit(&mut self, n: u32) {
        if self.gated && self.admitted.remove(&n) {
            self.link_down(n);
        }
    }

    /// Applies an advertisement from neighbour `n`. A neighbour heard but not yet admitted
    /// by attestation has its adverts kept, unused until it is.
    pub fn on_advert(&mut self, n: u32, now: Instant, entries: &[RouteEntry]) {
        let waiting = self.gated && !self.admitted.contains(&n);
        if !self.links.get(&n).is_some_and(|l| l.up || waiting) {
            return;
        }
        let mut touched = BTreeSet::new();
        for e in entries {
            let Some(d) = self.localize(e.dest) else {
                continue;
            };
            let here = Here {
                me: self.me,
                my: self.my,
                dir: &self.dir,
            };
            let ads = self.adverts.entry(n).or_default();
            if e.cost_us == INFINITY_US || e.hops >= self.params.max_hops {
                ads.remove(here, d, e.dest);
            } else {
                ads.insert(here, d, e.dest, e.cost_us, e.hops, now);
            }
            touched.insert(d);
        }
        for d in touched {
            self.recompute(d);
        }
    }

    fn recompute_via(&mut self, n: u32) {
        let dests: BTreeSet<Dest> = self
            .adverts
            .get(&n)
            .map(|a| {
                let here = self.here();
                a.entries.iter().map(|e| here.key(e.raw)).collect()
            })
            .unwrap_or_default();
        for d in dests {
            self.recompute(d);
        }
        // The neighbour itself is reachable directly.
        if let Some(d) = self.localize(Dest::Node(n)) {
            self.recompute(d);
        }
    }

    fn recompute(&mut self, d: Dest) {
        let mut best: Option<Route> = None;
        let quarantined_dest = matches!(d, Dest::Node(x) if self.quarantine.contains(&x));
        if !quarantined_dest {
            for (n, l) in &self.links {
                if !l.up || self.quarantine.contains(n) {
                    continue;
                }
                let mut cand: Option<(u32, u8)> = None;
                // A neighbour is its own zero-cost advertisement.
                if self.localize(Dest::Node(*n)) == Some(d) {
                    cand = Some((0, 0));
                }
                let transit = !self.distrust.contains(n);
                if let Some(ads) = self.adverts.get(n).filter(|_| transit) {
                    for a in ads.under(self.here(), d) {
                        if cand.is_none_or(|(bc, bh)| (a.cost_us, a.hops) < (bc, bh)) {
                            cand = Some((a.cost_us, a.hops));
                        }
                    }
                }
                let Some((c, h)) = cand else { continue };
                let cost = c.saturating_add(l.cost_us);
                let hops = h.saturating_add(1);
                if cost == INFINITY_US || hops > self.params.max_hops {
                    continue;
                }
                let r = Route {
                    next_hop: *n,
                    cost_us: cost,
                    hops,
                };
                if best.is_none_or(|b| {
                    (r.cost_us, r.hops, r.next_hop) < (b.cost_us, b.hops, b.next_hop)
                }) {
                    best = Some(r);
                }
            }
        }
        let old = self.table.get(&d).copied();
        if old != best {
            match best {
                Some(r) => self.table.insert(d, r),
                None => self.table.remove(&d),
            };
            self.dirty.insert(d);
        }
    }

    fn entry_for(&self, d: Dest, to: u32) -> RouteEntry {
        match self.table.get(&d) {
            // Split horizon with poisoned reverse.
            Some(r) if r.next_hop != to => RouteEntry {
                dest: d,
                cost_us: r.cost_us,
                hops: r.hops,
            },
            _ => RouteEntry {
                dest: d,
                cost_us: INFINITY_US,
                hops: self.params.max_hops,
            },
        }
    }

    fn chunks(entries: Vec<RouteEntry>) -> Vec<Vec<RouteEntry>> {
        entries
            .chunks(MAX_ROUTE_ENTRIES)
            .map(|c| c.to_vec())
            .collect()
    }

    /// Full table for neighbour `to`, in datagram-sized chunks.
    pub fn full_advert(&self, to: u32) -> Vec<Vec<RouteEntry>> {
        let mut v = vec![RouteEntry {
            dest: Dest::Node(self.me),
            cost_us: 0,
            hops: 0,
        }];
        v.extend(self.table.keys().map(|d| self.entry_for(*d, to)));
        Self::chunks(v)
    }

    /// Neighbours our adverts go to: every configured link except quarantined neighbours,
    /// *whether or not we have heard from it yet*. Waiting for a neighbour to be up before
    /// advertising costs a whole extra light-time per hop: over a 2,160 s link, the far
    /// side learned our routes only 2 × 2,160 s after it booted (our adverts left only once
    /// its first frame had crossed to us), and with staggered starts never within a
    /// 6,000 s lab run. Adverts to a neighbour that is really gone are lost, like the
    /// keepalives we send it anyway; it applies ours once it has heard us (it is then up).
    pub fn advert_targets(&self) -> Vec<u32> {
        self.links
            .keys()
            .filter(|n| !self.quarantine.contains(n))
            .copied()
            .collect()
    }

    /// Triggered update at `now`: per neighbour (see [`Routing::advert_targets`]), the
    /// changed entries (full tables to new links). Each is owed once more
    /// ([`Routing::take_repeats`]).
    pub fn take_triggered(&mut self, now: Instant) -> Vec<(u32, Vec<Vec<RouteEntry>>)> {
        let dirty = std::mem::take(&mut self.dirty);
        let owe = std::mem::take(&mut self.owe_full);
        if !self.params.repeat_after.is_zero() {
            for d in &dirty {
                self.repeat.insert(*d, now);
            }
            for n in &owe {
                self.repeat_full.insert(*n, now);
            }
        }
        self.adverts_to_links(&owe, &dirty)
    }

    /// Per neighbour (quarantined ones left out): the whole table to those in `full`, the
    /// entries of `dests` to the others (nothing when `dests` is empty).
    fn adverts_to_links<'a>(
        &self,
        full: &BTreeSet<u32>,
        dests: impl IntoIterator<Item = &'a Dest> + Clone,
    ) -> Vec<(u32, Vec<Vec<RouteEntry>>)> {
        let mut out = Vec::new();
        for n in self.links.keys() {
            if self.quarantine.contains(n) {
                continue;
            }
            if full.contains(n) {
                out.push((*n, self.full_advert(*n)));
            } else {
                let v: Vec<RouteEntry> = dests
                    .clone()
                    .into_iter()
                    .map(|d| self.entry_for(*d, *n))
                    .collect();
                if !v.is_empty() {
                    out.push((*n, Self::chunks(v)));
                }
            }
        }
        out
    }

    /// The repeats due at `now`: per neighbour, the current entries of the destinations a
    /// triggered update carried `repeat_after` ago (a withdrawal is repeated as one), or the
    /// whole table to a neighbour whose link-up table went out then. Each is sent once: a
    /// loss of both copies on every link into a tile still waits for the periodic refresh.
    pub fn take_repeats(&mut self, now: Instant) -> Vec<(u32, Vec<Vec<RouteEntry>>)> {
        let after = self.params.repeat_after;
        let dests: Vec<Dest> = take_due(&mut self.repeat, now, after);
        let full: BTreeSet<u32> = take_due(&mut self.repeat_full, now, after)
            .into_iter()
            .collect();
        if dests.is_empty() && full.is_empty() {
            return Vec::new();
        }
        self.adverts_to_links(&full, &dests)
    }

    /// Counts an originated frame of `bytes` for `dst` in the locality ledger, as workload
    /// traffic or the protocol's own.
    pub fn account(&mut self, dst: Dest, bytes: usize, workload: bool) {
        let my = self.my;
        let (cell, cluster, layer) = match dst {
            Dest::Node(x) => match self.dir.addr(x) {
                Some(a) => (my.same_cell(&a), my.same_cluster(&a), my.same_layer(&a)),
                None => (false, false, false),
            },
            Dest::Link => (true, true, true),
            Dest::Cell {
                layer,
                cluster,
                cell,
            } => {
                let sl = layer == my.layer;
                let sc = sl && cluster == my.cluster;
                (sc && cell == my.cell, sc, sl)
            }
            Dest::Cluster { layer, cluster } => {
                let sl = layer == my.layer;
                (false, sl && cluster == my.cluster, sl)
            }
            Dest::Layer { layer } => (false, false, layer == my.layer),
        };
        for (lvl, local) in [cell, cluster, layer].into_iter().enumerate() {
            self.locality.bytes[lvl][usize::from(!local)] += bytes as u64;
            if workload {
                self.locality.workload[lvl][usize::from(!local)] += bytes as u64;
            }
        }
    }
}

/// Removes the entries of `m` set at least `after` before `now` and returns their keys, in
/// order.
fn take_due<K: Ord + Copy>(m: &mut BTreeMap<K, Instant>, now: Instant, after: Duration) -> Vec<K> {
    let mut out = Vec::new();
    m.retain(|k, t| {
        let keep = now.saturating_since(*t) < after;
        if !keep {
            out.push(*k);
        }
        keep
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PeerInfo, Role};
    use ed25519_dalek::SigningKey;

    /// The sorted-vector adverts behave as the `BTreeMap<(Dest, Dest), (u32, u8, Instant)>`
    /// keyed by (local, raw) they replaced: same entries, same iteration order, same
    /// per-destination ranges, under a seeded mix of inserts, overwrites, removals and
    /// expiries of destinations inside our cell, in other cells and in other clusters.
    #[test]
    fn adverts_match_the_btreemap_they_replaced() {
        use rand::Rng;
        use rand::SeedableRng;
        let peers: Vec<PeerInfo> = (0..60u32)
            .map(|i| PeerInfo {
                name: format!("n{i}"),
                id: i,
                addr: HierAddr {
                    layer: 0,
                    cluster: (i / 30) as u16,
                    cell: (i % 3) as u16,
                    tile: i as u16,
                },
                role: Role::Tile,
                public_key_hex: hex::encode(
                    SigningKey::from_bytes(&[i as u8 + 1; 32])
                        .verifying_key()
                        .as_bytes(),
                ),
                position_au: [0.0; 3],
            })
            .collect();
        let dir = Directory::from_peers(&peers).unwrap();
        let here = Here {
            me: 0,
            my: dir.addr(0).unwrap(),
            dir: &dir,
        };
        let seed = 20261206u64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut ads = Adverts::default();
        let mut map: BTreeMap<(Dest, Dest), (u32, u8, Instant)> = BTreeMap::new();
        let dest = |rng: &mut rand_chacha::ChaCha8Rng| match rng.gen_range(0..4) {
            0 | 1 => Dest::Node(rng.gen_range(0..60)),
            2 => Dest::Cell {
                layer: 0,
                cluster: rng.gen_range(0..2),
                cell: rng.gen_range(0..3),
            },
            _ => Dest::Cluster {
                layer: rng.gen_range(0..2),
                cluster: rng.gen_range(0..2),
            },
        };
        let mut kinds = BTreeSet::new();
        for step in 0..20_000u64 {
            let r = dest(&mut rng);
            let Some(l) = here.localize(r) else { continue };
            kinds.insert((
                matches!(l, Dest::Node(_)),
                matches!(l, Dest::Cell { .. }),
                l == r,
            ));
            let now = Instant::ZERO + Duration::from_millis(step);
            match rng.gen_range(0..10) {
                0..=5 => {
                    let (c, h) = (rng.gen_range(1..5_000u32), rng.gen_range(0..30u8));
                    ads.insert(here, l, r, c, h, now);
                    map.insert((l, r), (c, h, now));
                }
                6..=8 => {
                    ads.remove(here, l, r);
                    map.remove(&(l, r));
                }
                _ => {
                    let life = Duration::from_millis(3_000);
                    ads.entries
                        .retain(|a| now.saturating_since(a.heard) <= life);
                    map.retain(|_, (_, _, t)| now.saturating_since(*t) <= life);
                }
            }
            let got: Vec<_> = ads
                .entries
                .iter()
                .map(|a| ((here.key(a.raw), a.raw), (a.cost_us, a.hops, a.heard)))
                .collect();
            let want: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(got, want, "seed {seed}, step {step}");
            let under: Vec<_> = ads.under(here, l).iter().map(|a| a.raw).collect();
            let range: Vec<_> = map
                .range((l, Dest::Node(0))..)
                .take_while(|((d, _), _)| *d == l)
                .map(|((_, r), _)| *r)
                .collect();
            assert_eq!(under, range, "seed {seed}, step {step}");
        }
        assert!(ads.len() > 0, "the mix left entries to compare");
        // Node keys (raw = local), cell keys and cluster keys (several raw per local).
        assert!(kinds.len() >= 3, "{kinds:?}");
        assert_eq!(std::mem::size_of::<Advert>(), 24);
    }

    fn dir(n: u32) -> Arc<Directory> {
        let peers: Vec<PeerInfo> = (0..n)
            .map(|i| PeerInfo {
                name: format!("n{i}"),
                id: i,
                addr: HierAddr {
                    layer: 0,
                    cluster: 0,
                    cell: i as u16,
                    tile: 0,
                },
                role: Role::Gateway,
                public_key_hex: hex::encode(
                    SigningKey::from_bytes(&[i as u8 + 1; 32])
                        .verifying_key()
                        .as_bytes(),
                ),
                position_au: [0.0; 3],
            })
            .collect();
        Arc::new(Directory::from_peers(&peers).unwrap())
    }

    #[test]
    fn a_link_back_up_after_its_adverts_were_dropped_asks_for_the_table() {
        let mut r = Routing::new(0, dir(4), &[(1, 1_000), (2, 1_000)], RouteParams::default());
        let t0 = Instant::from_nanos(1_000_000_000);
        assert!(
            !r.heard(1, t0),
            "a first link-up: both sides send full tables anyway"
        );
        assert!(!r.heard(2, t0));
        let e = RouteEntry {
            dest: Dest::Node(3),
            cost_us: 10,
            hops: 1,
        };
        let before = r.table().len();
        r.on_advert(1, t0, &[e]);
        assert_eq!(r.table().len(), before + 1, "node 3 (its cell) via 1");
        // Taken down here (a death claim, a silence): its adverts are gone …
        r.link_down(1);
        r.link_down(2);
        assert!(r.table().is_empty());
        // … and when it is heard again the node must ask for them, once.
        assert!(r.heard(1, t0), "link back up with its adverts dropped");
        assert!(!r.heard(1, t0), "asked once");
        // Neighbour 2 had advertised nothing: nothing was dropped, nothing to ask.
        assert!(!r.heard(2, t0));
    }

    #[test]
    fn long_links_get_keepalives_and_timeouts_scaled_to_their_delay() {
        const S: u64 = 1_000_000_000;
        // Neighbour 1 is 2 ms away, neighbour 2 is 249 s (half an AU) away.
        let mut r = Routing::new(
            0,
            dir(3),
            &[(1, 2_000_000), (2, 249 * S)],
            RouteParams::default(),
        );
        let t0 = Instant::from_nanos(1000 * S);
        r.heard(1, t0);
        r.heard(2, t0);
        r.sent(1, t0);
        r.sent(2, t0);
        // After 2 s only the short link needs a keepalive; the long one every 24.9 s.
        let at = |s: f64| Instant::from_nanos(1000 * S + (s * 1e9) as u64);
        assert_eq!(r.hello_due(at(2.0)), vec![1]);
        assert_eq!(r.hello_due(at(25.0)), vec![1, 2]);
        // Silence: the short link is down after 4 s, the long one only after 99.6 s.
        r.sweep(at(5.0));
        assert!(!r.neighbor_up(1));
        assert!(r.neighbor_up(2));
        r.sweep(at(100.0));
        assert!(!r.neighbor_up(2));
    }
}
