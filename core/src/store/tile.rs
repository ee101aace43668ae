//! The store as a sub-machine of [`crate::Node`] (issue 16): the node owns one
//! [`StoreTile`] when its configuration has a `store:` section, calls
//! [`StoreTile::observe`] and [`StoreTile::tick`] on its `Store` timer, hands it the
//! store frames (wire kind 20, [`crate::wire::KIND_STORE`]) and the client's
//! `object put|get` commands, and carries out what comes back ([`Effects`]): frames to
//! send, stripe metadata to write into the causal store, events for the client.
//!
//! **Liveness comes from the node, not from an oracle.** SWIM runs per cell, so a tile
//! knows the state of its cell-mates and, beyond its cell, only whether the overlay
//! still routes to a tile's cell. [`StoreTile::observe`] therefore tells the store:
//! a cell-mate is alive while membership has it `alive` or `suspect`, and dead once
//! membership declares it `dead`; a tile of another cell is alive while the routing table
//! has a route to it (a whole cell lost, or cut off by a partition, loses its route);
//! a tile whose boot epoch rose (frames bound to a new boot) came back empty. Each cell
//! thus repairs the shards its own dead tiles held (the steward of a stripe is elected
//! among the live holders in the cell of its first missing shard,
//! [`super::machine::Store`]), and the other cells repair a whole cell's shards once its
//! route is gone.
//!
//! **Metadata in the causal store.** Every stripe metadata the machine writes
//! (`MetaWrite`, at a put and after a repair) is also written under `store/<object>` into
//! the node's causal store (a `local` write, replicated to the cell by the kv's
//! anti-entropy), and [`StoreTile::learn_from_kv`] reads it back on each tick: a tile that
//! restarts empty relearns from its cell the metadata of the stripes its cell wrote.
//! Across cells the metadata travels in the shard frames themselves (every holder keeps
//! the metadata beside its shard): the causal store replicates per cell, not further. A
//! read at a tile that knows no metadata of the object (another cell's tile, a tile back
//! empty whose cell never wrote it) asks the tiles the object's placement names
//! ([`Store::get`], "Reads at any tile" in [`super::machine`]).
use std::collections::BTreeMap;
use std::time::Duration;

use super::config::StoreConfig;
use super::machine::{Store, StoreOut};
use super::metrics::StoreMetrics;
use super::msg::{Msg, StripeMeta};
use super::placement::Tile;
use super::StoreError;
use crate::addr::HierAddr;
use crate::directory::Directory;
use crate::io::Event;
use crate::time::Instant;

/// The causal-store key of an object's stripe metadata.
pub fn meta_key(object: &str) -> String {
    format!("store/{object}")
}

/// The prefix of every stripe metadata key.
pub const META_PREFIX: &str = "store/";

/// Upper bounds (emulated s) of the repair-time histogram buckets.
pub const REPAIR_BUCKETS_S: [f64; 10] =
    [5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0];

/// A tile's failure domains for placement: its cluster and cell as globally unique
/// numbers (layer folded in; a collision would only merge two domains' labels).
pub fn tile_of(id: u32, a: &HierAddr) -> Tile {
    let layer = u32::from(a.layer).wrapping_mul(0x9E37_79B9);
    Tile {
        id,
        cluster: layer ^ u32::from(a.cluster),
        cell: layer ^ (u32::from(a.cluster) << 16 | u32::from(a.cell)),
    }
}

/// What the node must do for the store after a call.
#[derive(Debug, Default)]
pub struct Effects {
    /// Frames for tiles (encoded store messages: the payload of a kind-20 frame).
    pub sends: Vec<(u32, Vec<u8>)>,
    /// Metadata to write into the causal store: (key, value).
    pub kv_writes: Vec<(String, Vec<u8>)>,
    /// Events for the client.
    pub events: Vec<Event>,
}

/// One tile's store inside a node.
#[derive(Debug, Clone)]
pub struct StoreTile {
    store: Store,
    cfg: StoreConfig,
    /// What we last told the store of each tile: alive, boot epoch.
    seen: BTreeMap<u32, (bool, u32)>,
    /// Repair times of the stripes this tile repaired, by [`REPAIR_BUCKETS_S`] bucket
    /// (the last entry counts those above the last bound), and their sum in s.
    repair_hist: [u64; REPAIR_BUCKETS_S.len() + 1],
    repair_sum_s: f64,
    /// Kv values already read back (key → value), so a value is parsed once.
    kv_seen: BTreeMap<String, Vec<u8>>,
    /// The metadata this tile last wrote into the causal store, per object.
    kv_written: BTreeMap<String, StripeMeta>,
}

impl StoreTile {
    /// The store of tile `me` (checked configuration; nothing is built on an error).
    pub fn new(
        cfg: &StoreConfig,
        me: Tile,
        seed: u64,
        now: Instant,
    ) -> Result<StoreTile, StoreError> {
        cfg.check()?;
        Ok(StoreTile {
            store: Store::new(me, cfg.params(seed), now),
            cfg: cfg.clone(),
            seen: BTreeMap::new(),
            repair_hist: [0; REPAIR_BUCKETS_S.len() + 1],
            repair_sum_s: 0.0,
            kv_seen: BTreeMap::new(),
            kv_written: BTreeMap::new(),
        })
    }

    /// How often the node calls [`StoreTile::tick`].
    pub fn interval(&self) -> Duration {
        self.store.params().tick
    }
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tells the store what the node knows of every tile of the directory: `alive(id)` as
    /// the module doc says, `epoch(id)` the boot epoch last heard from it. Only changes
    /// reach the store.
    pub fn observe(
        &mut self,
        now: Instant,
        dir: &Directory,
        alive: impl Fn(u32, &HierAddr) -> bool,
        epoch: impl Fn(u32) -> u32,
        fx: &mut Effects,
    ) {
        let mut out = Vec::new();
        for (i, e) in dir.peers.iter().enumerate() {
            let id = i as u32;
            let (a, ep) = (alive(id, &e.addr), epoch(id));
            let before = self.seen.insert(id, (a, ep));
            if before == Some((a, ep)) {
                continue;
            }
            // A higher boot epoch than we knew: a new boot, empty.
            let rebooted = before.is_some_and(|(_, old)| ep > old);
            self.store
                .member(now, tile_of(id, &e.addr), a, rebooted, &mut out);
        }
        self.carry(out, fx);
    }

    /// Reads back the stripe metadata the causal store holds (`store/<object>` keys):
    /// `get(key)` is the store's resolved value.
    pub fn learn_from_kv<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a str>,
        get: impl Fn(&str) -> Option<Vec<u8>>,
    ) {
        for key in keys.filter(|k| k.starts_with(META_PREFIX)) {
            let Some(v) = get(key) else { continue };
            if self.kv_seen.get(key) == Some(&v) {
                continue;
            }
            self.kv_seen.insert(key.to_string(), v.clone());
            // A value that is not a metadata frame (someone else's key) changes nothing.
            if let Ok(Msg::Meta { meta }) = Msg::decode(&v) {
                let _ = self.store.learn_meta(meta);
            }
        }
    }

    /// A client's put of `object` under the configured class.
    pub fn put(
        &mut self,
        now: Instant,
        request: u64,
        object: &str,
        bytes: &[u8],
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let mut out = Vec::new();
        let class = self.cfg.class.clone();
        self.store
            .put(now, request, object, bytes, &class, &mut out)?;
        self.carry(out, fx);
        Ok(())
    }

    /// A client's read of `object`.
    pub fn get(
        &mut self,
        now: Instant,
        request: u64,
        object: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let mut out = Vec::new();
        let class = self.cfg.class.clone();
        self.store.get(now, request, object, &class, &mut out)?;
        self.carry(out, fx);
        Ok(())
    }

    /// A store frame from `from` (its overlay frame verified).
    ///
    /// A holder that adopts a newer metadata (a first put's shard, a finished repair's
    /// news) writes it into the causal store too, so every cell holding a shard of the stripe
    /// has its metadata, and a reader there finds the holders.
    pub fn on_frame(&mut self, now: Instant, from: u32, bytes: &[u8], fx: &mut Effects) {
        let mut out = Vec::new();
        self.store.on_frame(now, from, bytes, &mut out);
        self.carry(out, fx);
        // Only a metadata that is final: a first put's, or a finished repair's `Meta`. A
        // repair's shard frame carries metadata whose placement may still fail; spread
        // through the causal store it would reach the repairer's cell-mates as if final.
        let object = match Msg::decode(bytes) {
            Ok(Msg::ShardPut { meta, .. }) if meta.version == 1 => meta.object,
            Ok(Msg::Meta { meta }) => meta.object,
            _ => return,
        };
        if let Some(m) = self.store.meta(&object) {
            if self.kv_written.get(&object) != Some(m) {
                let m = m.clone();
                self.kv_written.insert(object, m.clone());
                fx.kv_writes.push(kv_write(&m));
            }
        }
    }

    /// The store's round.
    pub fn tick(&mut self, now: Instant, fx: &mut Effects) {
        let mut out = Vec::new();
        self.store.tick(now, &mut out);
        self.carry(out, fx);
    }

    /// This tile's figures.
    pub fn metrics(&self, now: Instant) -> StoreMetrics {
        self.store.metrics(now)
    }

    /// The repair-time histogram: (bucket upper bounds in s, cumulative counts with the
    /// `+Inf` count last, sum in s).
    pub fn repair_histogram(&self) -> (&'static [f64], Vec<u64>, f64) {
        let mut acc = 0;
        let cum = self
            .repair_hist
            .iter()
            .map(|c| {
                acc += c;
                acc
            })
            .collect();
        (&REPAIR_BUCKETS_S, cum, self.repair_sum_s)
    }

    /// The `lightcone_storage_*` series of this tile in the Prometheus text format:
    /// [`StoreMetrics::render`] and the repair-time histogram
    /// `lightcone_storage_repair_seconds` (stripes this tile repaired, emulated s from the
    /// first loss to full redundancy).
    pub fn render(&self, node: &str, now: Instant) -> String {
        let mut s = self.metrics(now).render(node);
        let (bounds, cum, sum) = self.repair_histogram();
        let name = "lightcone_storage_repair_seconds";
        s.push_str(&format!("# HELP {name} Time from a stripe's first lost shard to its full redundancy again, emulated s (stripes this node repaired).\n# TYPE {name} histogram\n"));
        for (b, c) in bounds.iter().zip(&cum) {
            s.push_str(&format!(
                "{name}_bucket{{node=\"{node}\",le=\"{b}\"}} {c}\n"
            ));
        }
        let all = cum.last().copied().unwrap_or(0);
        s.push_str(&format!(
            "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {all}\n"
        ));
        s.push_str(&format!(
            "{name}_sum{{node=\"{node}\"}} {sum}\n{name}_count{{node=\"{node}\"}} {all}\n"
        ));
        s
    }

    fn carry(&mut self, out: Vec<StoreOut>, fx: &mut Effects) {
        for o in out {
            match o {
                StoreOut::Send { to, msg } => fx.sends.push((to, msg.encode())),
                StoreOut::MetaWrite { meta } => {
                    self.kv_written.insert(meta.object.clone(), meta.clone());
                    fx.kv_writes.push(kv_write(&meta))
                }
                StoreOut::PutDone { request, object } => {
                    fx.events.push(Event::ObjectStored { request, object })
                }
                StoreOut::PutFailed {
                    request,
                    object,
                    why,
                } => fx.events.push(Event::ObjectPutFailed {
                    request,
                    object,
                    reason: why,
                }),
                StoreOut::Read { request, result } => fx.events.push(match result {
                    Ok(data) => Event::ObjectRead { request, data },
                    Err(e) => Event::ObjectReadFailed {
                        request,
                        reason: e.to_string(),
                    },
                }),
                StoreOut::Repaired { object, after } => {
                    let s = after.as_secs_f64();
                    let b = REPAIR_BUCKETS_S
                        .iter()
                        .position(|&u| s <= u)
                        .unwrap_or(REPAIR_BUCKETS_S.len());
                    self.repair_hist[b] += 1;
                    self.repair_sum_s += s;
                    fx.events.push(Event::StripeRepaired {
                        object,
                        after_ms: after.as_millis() as u64,
                    })
                }
                StoreOut::Lost { object } => fx.events.push(Event::ObjectLost { object }),
            }
        }
    }
}

fn kv_write(meta: &StripeMeta) -> (String, Vec<u8>) {
    (
        meta_key(&meta.object),
        Msg::Meta { meta: meta.clone() }.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_domains_are_distinct_per_cell_and_layer() {
        let a = |layer, cluster, cell| HierAddr {
            layer,
            cluster,
            cell,
            tile: 0,
        };
        let t = |x: HierAddr| tile_of(1, &x);
        assert_eq!(t(a(0, 1, 2)).cell, t(a(0, 1, 2)).cell);
        assert_ne!(t(a(0, 1, 2)).cell, t(a(0, 1, 3)).cell);
        assert_ne!(t(a(0, 1, 2)).cell, t(a(0, 2, 2)).cell);
        assert_ne!(t(a(0, 1, 2)).cell, t(a(1, 1, 2)).cell);
        assert_ne!(t(a(0, 1, 2)).cluster, t(a(1, 1, 2)).cluster);
        assert_eq!(t(a(0, 1, 2)).cluster, t(a(0, 1, 5)).cluster);
    }
}
