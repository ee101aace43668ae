//! A deterministic harness of many [`Store`]s in virtual time: frames travel with a
//! latency by failure domain (1 ms in a cell, 5 ms in a cluster, 20 ms between clusters),
//! membership is an oracle that declares a crashed tile dead at every live tile
//! [`Harness::detect`] after the crash (SWIM's < 10 s bound), tiles crash, come back
//! empty, lose whole cells, and clusters partition. It runs the real store, codec and
//! placement; only the overlay and SWIM are stood in for (the node integration is not
//! there yet). Same seed, same run.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::machine::{Store, StoreOut, StoreParams};
use super::placement::Tile;
use super::Class;
use crate::time::Instant;

#[derive(Debug)]
enum Ev {
    Frame {
        to: u32,
        from: u32,
        bytes: Vec<u8>,
    },
    Tick(u32),
    Member {
        obs: u32,
        about: u32,
        alive: bool,
        rebooted: bool,
    },
    /// A crash; `cell_only`: only the tile's cell-mates learn of it (a node's view).
    Crash {
        id: u32,
        cell_only: bool,
    },
    Restart(u32),
    Partition(BTreeSet<u32>),
    Heal,
    Put {
        by: u32,
        object: String,
        bytes: Vec<u8>,
    },
    Read {
        by: u32,
        object: String,
        /// Read at tile `by` itself, whether it knows the object or not.
        exact: bool,
    },
}

/// What happened, in order (the trace two runs of one seed must share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    PutDone {
        at: Duration,
        object: String,
    },
    PutFailed {
        at: Duration,
        object: String,
        why: String,
    },
    Read {
        at: Duration,
        object: String,
        ok: bool,
    },
    Repaired {
        at: Duration,
        object: String,
        by: u32,
        after: Duration,
    },
    Lost {
        at: Duration,
        object: String,
        by: u32,
    },
    Crash {
        at: Duration,
        tile: u32,
    },
    Restart {
        at: Duration,
        tile: u32,
    },
}

/// The harness: tiles, their stores, the event line.
pub struct Harness {
    pub tiles: Vec<Tile>,
    pub params: StoreParams,
    pub class: Class,
    /// Crash to "declared dead" everywhere. 8 s.
    pub detect: Duration,
    stores: BTreeMap<u32, Store>,
    up: BTreeSet<u32>,
    partition: Option<BTreeSet<u32>>,
    q: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    now: u64,
    req: u64,
    pub records: Vec<Record>,
    /// Bytes each object was written with (for the final reads).
    pub written: BTreeMap<String, Vec<u8>>,
    /// Frames delivered, and their bytes.
    pub frames: u64,
    pub frame_bytes: u64,
    /// Largest frame sent (bytes of the store frame).
    pub max_frame: usize,
    reads: BTreeMap<u64, (u32, String)>,
}

impl Harness {
    /// The ids of cluster `c`'s tiles (one side of a partition).
    pub fn cluster(&self, c: u32) -> BTreeSet<u32> {
        self.tiles
            .iter()
            .filter(|t| t.cluster == c)
            .map(|t| t.id)
            .collect()
    }

    /// `clusters × cells × tiles` tiles, ids from 0, cell ids global.
    pub fn grid(
        clusters: u32,
        cells: u32,
        tiles: u32,
        class: Class,
        params: StoreParams,
    ) -> Harness {
        let mut v = Vec::new();
        for k in 0..clusters {
            for c in 0..cells {
                for t in 0..tiles {
                    v.push(Tile {
                        id: (k * cells + c) * tiles + t,
                        cluster: k,
                        cell: k * cells + c,
                    });
                }
            }
        }
        let mut h = Harness {
            tiles: v.clone(),
            params,
            class,
            detect: Duration::from_secs(8),
            stores: BTreeMap::new(),
            up: BTreeSet::new(),
            partition: None,
            q: BTreeMap::new(),
            seq: 0,
            now: 0,
            req: 0,
            records: Vec::new(),
            written: BTreeMap::new(),
            frames: 0,
            frame_bytes: 0,
            max_frame: 0,
            reads: BTreeMap::new(),
        };
        for t in &v {
            h.boot(t.id);
        }
        // Tiles booted earlier learn of those booted after them.
        let now = Instant::from_nanos(0);
        let mut sink = Vec::new();
        for s in h.stores.values_mut() {
            for t in &v {
                s.member(now, *t, true, false, &mut sink);
            }
        }
        h
    }

    fn tile(&self, id: u32) -> Tile {
        self.tiles[id as usize]
    }

    fn boot(&mut self, id: u32) {
        let now = Instant::from_nanos(self.now);
        let mut s = Store::new(self.tile(id), self.params.clone(), now);
        let mut sink = Vec::new();
        for &o in &self.up {
            s.member(now, self.tile(o), true, false, &mut sink);
        }
        self.stores.insert(id, s);
        self.up.insert(id);
        // Ticks spread over the tick period by id.
        let off = self.params.tick.as_nanos() as u64 * (id as u64 % 97) / 97;
        self.at(self.now + off + 1, Ev::Tick(id));
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.q.insert((t.max(self.now), self.seq), ev);
    }

    fn at_s(&mut self, t: Duration, ev: Ev) {
        self.at(t.as_nanos() as u64, ev);
    }

    pub fn put_at(&mut self, t: Duration, by: u32, object: &str, bytes: Vec<u8>) {
        self.at_s(
            t,
            Ev::Put {
                by,
                object: object.into(),
                bytes,
            },
        );
    }
    pub fn read_at(&mut self, t: Duration, by: u32, object: &str) {
        self.at_s(
            t,
            Ev::Read {
                by,
                object: object.into(),
                exact: false,
            },
        );
    }
    /// A read at tile `by` itself, whatever it knows (a tile of another cell, a tile
    /// back empty).
    pub fn read_by_at(&mut self, t: Duration, by: u32, object: &str) {
        self.at_s(
            t,
            Ev::Read {
                by,
                object: object.into(),
                exact: true,
            },
        );
    }
    pub fn crash_at(&mut self, t: Duration, tile: u32) {
        self.at_s(
            t,
            Ev::Crash {
                id: tile,
                cell_only: false,
            },
        );
    }
    /// A crash only the tile's cell-mates learn of, as in a node: membership is per cell
    /// and a tile of another cell stays "alive" while its cell is routed to.
    pub fn crash_seen_by_its_cell_at(&mut self, t: Duration, tile: u32) {
        self.at_s(
            t,
            Ev::Crash {
                id: tile,
                cell_only: true,
            },
        );
    }
    /// The tile comes back empty (a replaced tile).
    pub fn restart_at(&mut self, t: Duration, tile: u32) {
        self.at_s(t, Ev::Restart(tile));
    }
    /// Partition `side` (tile ids) from the rest from `t` for `d`.
    pub fn partition_at(&mut self, t: Duration, d: Duration, side: BTreeSet<u32>) {
        self.at_s(t, Ev::Partition(side));
        self.at_s(t + d, Ev::Heal);
    }

    fn split(&self, a: u32, b: u32) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|s| s.contains(&a) != s.contains(&b))
    }

    fn latency(&self, a: u32, b: u32) -> u64 {
        let (x, y) = (self.tile(a), self.tile(b));
        let ms = if x.cell == y.cell {
            1
        } else if x.cluster == y.cluster {
            5
        } else {
            20
        };
        ms * 1_000_000
    }

    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// Run until `t`.
    pub fn run_until(&mut self, t: Duration) {
        let end = t.as_nanos() as u64;
        while let Some(entry) = self.q.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let ((when, _), ev) = entry.remove_entry();
            self.now = when;
            self.step(ev);
        }
        self.now = end;
    }

    fn step(&mut self, ev: Ev) {
        let now = Instant::from_nanos(self.now);
        let mut out = Vec::new();
        let who;
        match ev {
            Ev::Frame { to, from, bytes } => {
                if !self.up.contains(&to) || self.split(to, from) {
                    return;
                }
                self.frames += 1;
                self.frame_bytes += bytes.len() as u64;
                who = to;
                self.stores
                    .get_mut(&to)
                    .expect("up")
                    .on_frame(now, from, &bytes, &mut out);
            }
            Ev::Tick(id) => {
                let Some(s) = self.stores.get_mut(&id) else {
                    return;
                };
                if !self.up.contains(&id) {
                    return;
                }
                who = id;
                s.tick(now, &mut out);
                let next = self.now + self.params.tick.as_nanos() as u64;
                self.at(next, Ev::Tick(id));
            }
            Ev::Member {
                obs,
                about,
                alive,
                rebooted,
            } => {
                if !self.up.contains(&obs) {
                    return;
                }
                // Truth at delivery: a tile declared dead that is up and reachable again
                // is not reported dead (a refuted suspicion).
                if !alive && self.up.contains(&about) && !self.split(obs, about) {
                    return;
                }
                who = obs;
                let t = self.tile(about);
                self.stores
                    .get_mut(&obs)
                    .expect("up")
                    .member(now, t, alive, rebooted, &mut out);
            }
            Ev::Crash { id, cell_only } => {
                if self.up.remove(&id) {
                    self.stores.remove(&id);
                    self.records.push(Record::Crash {
                        at: self.now(),
                        tile: id,
                    });
                    let cell = self.tile(id).cell;
                    let obs: Vec<u32> = self
                        .up
                        .iter()
                        .copied()
                        .filter(|&o| !cell_only || self.tile(o).cell == cell)
                        .collect();
                    let t = self.now + self.detect.as_nanos() as u64;
                    for o in obs {
                        self.at(
                            t,
                            Ev::Member {
                                obs: o,
                                about: id,
                                alive: false,
                                rebooted: false,
                            },
                        );
                    }
                }
                return;
            }
            Ev::Restart(id) => {
                if !self.up.contains(&id) {
                    self.boot(id);
                    self.records.push(Record::Restart {
                        at: self.now(),
                        tile: id,
                    });
                    let obs: Vec<u32> = self.up.iter().copied().filter(|&o| o != id).collect();
                    let t = self.now + 1_000_000_000;
                    for o in obs {
                        self.at(
                            t,
                            Ev::Member {
                                obs: o,
                                about: id,
                                alive: true,
                                rebooted: true,
                            },
                        );
                    }
                }
                return;
            }
            Ev::Partition(side) => {
                self.partition = Some(side.clone());
                let t = self.now + self.detect.as_nanos() as u64;
                let up: Vec<u32> = self.up.iter().copied().collect();
                for &o in &up {
                    for &a in &up {
                        if side.contains(&o) != side.contains(&a) {
                            self.at(
                                t,
                                Ev::Member {
                                    obs: o,
                                    about: a,
                                    alive: false,
                                    rebooted: false,
                                },
                            );
                        }
                    }
                }
                return;
            }
            Ev::Heal => {
                let Some(side) = self.partition.take() else {
                    return;
                };
                let t = self.now + 1_000_000_000;
                let up: Vec<u32> = self.up.iter().copied().collect();
                for &o in &up {
                    for &a in &up {
                        if side.contains(&o) != side.contains(&a) {
                            self.at(
                                t,
                                Ev::Member {
                                    obs: o,
                                    about: a,
                                    alive: true,
                                    rebooted: false,
                                },
                            );
                        }
                    }
                }
                return;
            }
            Ev::Put { by, object, bytes } => {
                let Some(s) = self.stores.get_mut(&by) else {
                    return;
                };
                self.req += 1;
                who = by;
                match s.put(
                    now,
                    self.req,
                    &object,
                    &bytes,
                    &self.class.clone(),
                    &mut out,
                ) {
                    Ok(()) => {
                        self.written.insert(object, bytes);
                    }
                    Err(e) => self.records.push(Record::PutFailed {
                        at: self.now(),
                        object,
                        why: e.to_string(),
                    }),
                }
            }
            Ev::Read { by, object, exact } => {
                // The reader: `by` itself when exact, else among live tiles that know the
                // object's metadata (its writer's cell, from the causal store; its
                // holders), the `by`-th.
                let knowers: Vec<u32> = self
                    .stores
                    .iter()
                    .filter(|(id, s)| {
                        self.up.contains(id)
                            && if exact {
                                **id == by
                            } else {
                                s.meta(&object).is_some()
                            }
                    })
                    .map(|(&id, _)| id)
                    .collect();
                if knowers.is_empty() {
                    self.records.push(Record::Read {
                        at: self.now(),
                        object,
                        ok: false,
                    });
                    return;
                }
                let by = knowers[by as usize % knowers.len()];
                let Some(s) = self.stores.get_mut(&by) else {
                    return;
                };
                self.req += 1;
                who = by;
                if s.get(now, self.req, &object, &self.class.clone(), &mut out)
                    .is_err()
                {
                    self.records.push(Record::Read {
                        at: self.now(),
                        object,
                        ok: false,
                    });
                } else {
                    self.reads.insert(self.req, (by, object));
                }
            }
        }
        self.outputs(who, out);
    }

    fn outputs(&mut self, who: u32, out: Vec<StoreOut>) {
        for o in out {
            match o {
                StoreOut::Send { to, msg } => {
                    let bytes = msg.encode();
                    self.max_frame = self.max_frame.max(bytes.len());
                    let t = self.now + self.latency(who, to);
                    self.at(
                        t,
                        Ev::Frame {
                            to,
                            from: who,
                            bytes,
                        },
                    );
                }
                StoreOut::MetaWrite { meta } => {
                    // The causal store replicates it through the writer's cell.
                    let cell = self.tile(who).cell;
                    let peers: Vec<u32> = self
                        .tiles
                        .iter()
                        .filter(|t| t.cell == cell && t.id != who)
                        .map(|t| t.id)
                        .collect();
                    for p in peers {
                        if self.up.contains(&p) {
                            let _ = self
                                .stores
                                .get_mut(&p)
                                .expect("up")
                                .learn_meta(meta.clone());
                        }
                    }
                }
                StoreOut::PutDone { object, .. } => self.records.push(Record::PutDone {
                    at: self.now(),
                    object,
                }),
                StoreOut::PutFailed { object, why, .. } => self.records.push(Record::PutFailed {
                    at: self.now(),
                    object,
                    why,
                }),
                StoreOut::Read { request, result } => {
                    if let Some((_, object)) = self.reads.remove(&request) {
                        // A failed read of an object never written is a failure too.
                        let ok = result
                            .as_ref()
                            .is_ok_and(|b| self.written.get(&object) == Some(b));
                        self.records.push(Record::Read {
                            at: self.now(),
                            object,
                            ok,
                        });
                    }
                }
                StoreOut::Repaired { object, after } => self.records.push(Record::Repaired {
                    at: self.now(),
                    object,
                    by: who,
                    after,
                }),
                StoreOut::Lost { object } => self.records.push(Record::Lost {
                    at: self.now(),
                    object,
                    by: who,
                }),
            }
        }
    }

    /// The merge of `object`'s metadata over the live tiles (what they converge on).
    pub fn meta(&self, object: &str) -> Option<super::msg::StripeMeta> {
        self.stores
            .iter()
            .filter(|(id, _)| self.up.contains(id))
            .filter_map(|(_, s)| s.meta(object))
            .fold(None, |acc: Option<super::msg::StripeMeta>, m| {
                Some(acc.map_or_else(|| m.clone(), |a| a.merge(m)))
            })
    }

    /// Shards of `object` actually held, per the newest metadata: (held by a live tile that
    /// its metadata names, n).
    pub fn redundancy_of(&self, object: &str) -> Option<(usize, usize)> {
        let m = self.meta(object)?;
        let held = m
            .holders
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                self.up.contains(h)
                    && self.stores[h]
                        .meta(object)
                        .is_some_and(|mm| mm.root == m.root && mm.holders[*i] == **h)
                    && self.stores[h].holds(object, *i as u16)
            })
            .count();
        Some((held, m.class.n as usize))
    }

    /// The figures of every live tile, summed.
    pub fn metrics(&self) -> super::metrics::StoreMetrics {
        let now = Instant::from_nanos(self.now);
        let mut m = super::metrics::StoreMetrics::default();
        for (id, s) in &self.stores {
            if self.up.contains(id) {
                m.add(&s.metrics(now));
            }
        }
        m
    }

    pub fn is_up(&self, id: u32) -> bool {
        self.up.contains(&id)
    }
    pub fn store(&self, id: u32) -> Option<&Store> {
        self.stores.get(&id)
    }
    pub fn stores(&self) -> impl Iterator<Item = (&u32, &Store)> {
        self.stores.iter()
    }

    /// Crash times drawn for churn at `per_year` (a fraction, 0.05) over the tiles, one year
    /// compressed into `year`: exponential gaps, victims uniform among `among`.
    pub fn churn(
        seed: u64,
        among: &[u32],
        per_year: f64,
        year: Duration,
        from: Duration,
    ) -> Vec<(Duration, u32)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rate = among.len() as f64 * per_year / year.as_secs_f64(); // crashes per second
        let mut t = from.as_secs_f64();
        let end = from.as_secs_f64() + year.as_secs_f64();
        let mut v = Vec::new();
        loop {
            let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            t += -u.ln() / rate;
            if t >= end {
                break;
            }
            v.push((
                Duration::from_secs_f64(t),
                among[rng.gen_range(0..among.len())],
            ));
        }
        v
    }
}
