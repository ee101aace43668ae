//! The store of one tile, sans-IO: puts (encode, place, send shards), reads (any `k`
//! shards, nearest first, each checked against its hash), and repair (a steward per
//! stripe, elected among the live tiles holding its metadata, rebuilds lost shards on
//! live tiles in the right domains, rate-limited). Time is an input; every map is a
//! `BTreeMap`; the only randomness is the seeded rendezvous hash of [`placement`].
//!
//! The driver tells it who is alive ([`Store::member`]), hands it frames from the overlay
//! ([`Store::on_frame`]), calls [`Store::tick`] every [`StoreParams::tick`], and carries
//! out the [`StoreOut`]s: frames to send, metadata to write into the causal store,
//! answers to puts and reads, and what was repaired or lost.
//!
//! **Grace period** ([`StoreParams::grace`], 30 s): a holder declared dead is repaired
//! only 30 s later. SWIM here declares a crashed tile dead at every peer in < 10 s
//! (`membership::SwimParams`), and a falsely declared tile is probed every 10 s
//! (`reclaim_interval`) and refutes, so 30 s is three reclaim rounds in which a false
//! suspicion or a short partition heals without moving a byte, and still leaves > 4 of the
//! spec's "within minutes" (taken as 5 min) for the repair itself. A tile that comes back
//! *empty* (a new boot) needs no grace: its shards are certainly gone.
//!
//! **Backup stewards** ([`TAKEOVER_GRACES`]): every tile elects a stripe's steward from its
//! own view, and views differ across cells (a tile knows its cell-mates by SWIM, other
//! cells' tiles only by route), so tiles can defer to a steward that does not act — a
//! holder in another cell that died but is still routed to, which its cell-mates have
//! already left out. A stripe that stays degraded in a tile's view therefore falls to the
//! next tiles of its own ranked electorate in turn: the tile ranked `r` acts too once the
//! stripe has been degraded for `r × TAKEOVER_GRACES × grace`. Two stewards acting at once
//! converge on one metadata version (the higher `(version, by)` wins), so a takeover costs
//! repair bytes, never the stripe. Found by the lab run of `store-durable` (seed 16):
//! obj-0020 was never repaired.
//!
//! **Merged metadata, self-healing holders** (found by the twin, seeds 1–40 of
//! `store-durable`): a stripe's metadata merges slot by slot ([`StripeMeta::merge`]: each
//! index keeps the holder set at the higher (stamp, holder)), so repairs made from
//! different views — a backup steward, two cells that saw different deaths, the two sides
//! of a partition — all survive instead of the newest record re-naming old holders for
//! slots another repair had moved. A tile whose view a [`Msg::Meta`] changed while the
//! sender lacked some of it tells every holder (the views met). A tile named for two
//! indexes gives up the lower one ([`StripeMeta::duplicate`]). And a holder named for a
//! shard it does not hold for [`StoreParams::ack_timeout`] rebuilds it itself from k
//! others (`Purpose::Heal`): whatever made the hole, the tile the metadata names fills it.
//!
//! **Reads at any tile** ([`Store::get`]): the stripe's metadata travels with its shards
//! (every holder keeps it, and the writer), and the causal store spreads it over the
//! writer's and holders' cells only. A tile that knows no metadata of the object — a
//! tile of another cell, a holder that came back empty — finds it where placement put
//! it: it computes the object's rendezvous placement over every tile it knows (where a
//! put with all of them alive would have put the shards) and over the tiles alive now
//! (where a put or a repair now would), and asks those tiles, nearest first,
//! [`LOOKUP_FANOUT`] at a time, for the metadata ([`Msg::MetaGet`]). Any holder, current
//! or replaced, answers with its version (a stale one still names ≥ k current holders
//! unless more than n − k shards moved, and a fetch follows newer metadata as it
//! arrives); a tile that knows none says so ([`NO_META`]) so the next is asked at once.
//! No directory, no broadcast: O(n) asks at most, found in the first round unless the
//! placement moved since the put. Found by the lab run of `store-durable` (seed 16):
//! obj-0004 and obj-0016, 24 valid shards each, read back as "unknown object" from a
//! tile that had restarted empty.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::codec::{self, ShardHash};
use super::metrics::{Redundancy, StoreCounters, StoreMetrics};

/// A shard as held and sent: its bytes and its Merkle proof.
type Shard = (Vec<u8>, Vec<ShardHash>);
use super::msg::{Msg, StripeMeta, MAX_NAME, NO_META};
use super::placement::{self, Tile};
use super::{Class, StoreError};
use crate::time::Instant;

/// A backup steward of rank `r` acts once a stripe has been degraded in its view for
/// `r × TAKEOVER_GRACES` grace periods (module doc, "Backup stewards"): longer than a
/// steward's repair normally takes (the 60-tile lab's repairs ended 21–22 s after a crash,
/// grace 10 s included), so a live steward is rarely doubled, and short enough that a
/// first backup can still finish inside the store-durable scenario's 60 s bound.
pub const TAKEOVER_GRACES: u32 = 2;

/// Tiles a metadata lookup asks at once (module doc, "Reads at any tile"): one answer
/// suffices, three cover a silent or emptied tile without a second round.
pub const LOOKUP_FANOUT: usize = 3;

/// Metadata lookups in flight at one tile; a read beyond them is refused
/// ([`StoreError::Busy`]), nothing changed.
pub const MAX_LOOKUPS: usize = 256;

/// The store's tunables (emulated time).
#[derive(Debug, Clone)]
pub struct StoreParams {
    /// Seed of placement and steward election.
    pub seed: u64,
    /// After membership declares a holder dead, wait this long before repairing. 30 s
    /// (see the module doc).
    pub grace: Duration,
    /// Repair traffic a steward sends, bytes per second (token bucket). 1 MiB/s.
    pub repair_rate: u64,
    /// The bucket's depth, bytes. 256 KiB.
    pub repair_burst: u64,
    /// A shard asked for and not answered within this is asked elsewhere. 2 s.
    pub fetch_timeout: Duration,
    /// A put or a repair's placements not all acknowledged within this stop waiting. 5 s.
    pub ack_timeout: Duration,
    /// How often the driver calls [`Store::tick`]. 1 s.
    pub tick: Duration,
    /// Largest object accepted, bytes: a shard must fit one overlay frame (1400 bytes
    /// less headers) at the class's k; 64 KiB is the ceiling for any class.
    pub max_object: usize,
}

impl Default for StoreParams {
    fn default() -> Self {
        StoreParams {
            seed: 0,
            grace: Duration::from_secs(30),
            repair_rate: 1 << 20,
            repair_burst: 256 << 10,
            fetch_timeout: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            max_object: 64 << 10,
        }
    }
}

/// What the store asks its driver to do, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOut {
    /// Send this frame to tile `to` over the overlay.
    Send { to: u32, msg: Msg },
    /// Write this stripe metadata into the causal store under `store/<object>`.
    MetaWrite { meta: StripeMeta },
    /// A put is held by every holder (or by at least k + 1 of them when the ack timeout
    /// passed; repair restores the rest).
    PutDone { request: u64, object: String },
    PutFailed {
        request: u64,
        object: String,
        why: String,
    },
    /// A read's answer.
    Read {
        request: u64,
        result: Result<Vec<u8>, StoreError>,
    },
    /// This stripe is back at full redundancy; `after` is the time since the first of its
    /// holders was declared dead (or came back empty).
    Repaired { object: String, after: Duration },
    /// Fewer than k of this stripe's shards survive: the object is lost.
    Lost { object: String },
}

#[derive(Debug, Clone)]
struct Member {
    tile: Tile,
    alive: bool,
    since: Instant,
}

#[derive(Debug, Clone)]
enum Purpose {
    Read(u64),
    Repair,
    /// This tile rebuilds a shard its metadata names it for and it does not hold (module
    /// doc, "Self-healing holders").
    Heal,
}

#[derive(Debug, Clone)]
struct Fetch {
    object: String,
    purpose: Purpose,
    /// Index → deadline of the ask.
    asked: BTreeMap<u16, Instant>,
    got: BTreeMap<u16, Shard>,
    failed: BTreeSet<u16>,
}

/// A read of an object this tile knows no metadata of, waiting for a tile to tell it.
#[derive(Debug, Clone)]
struct Lookup {
    object: String,
    request: u64,
    /// Tiles still to ask, best first.
    next: Vec<u32>,
    /// Tiles asked and not answered yet, with the deadline of the ask.
    asked: BTreeMap<u32, Instant>,
    /// Tiles asked so far (for the error when none knows).
    tried: usize,
}

#[derive(Debug, Clone)]
struct Placing {
    meta: StripeMeta,
    waiting: BTreeSet<u16>,
    deadline: Instant,
    /// Shards to send once the token bucket allows (index, bytes).
    queued: Vec<(u16, Shard)>,
}

#[derive(Debug, Clone)]
struct PendingPut {
    request: u64,
    k: usize,
    acked: BTreeSet<u16>,
    n: usize,
    deadline: Instant,
}

/// One tile's store.
#[derive(Debug, Clone)]
pub struct Store {
    me: Tile,
    params: StoreParams,
    members: BTreeMap<u32, Member>,
    metas: BTreeMap<String, StripeMeta>,
    shards: BTreeMap<(String, u16), Shard>,
    /// Shards known gone though their holder is alive (it came back empty).
    gone: BTreeSet<(String, u16)>,
    fetches: BTreeMap<u64, Fetch>,
    /// Reads waiting for metadata, by ask id (shares the counter of `fetches`).
    lookups: BTreeMap<u64, Lookup>,
    placing: BTreeMap<String, Placing>,
    puts: BTreeMap<String, PendingPut>,
    lost: BTreeSet<String>,
    /// A repair that could place nothing (no free live tile) waits until then.
    retry_at: BTreeMap<String, Instant>,
    /// Tiles that did not answer an ask or acknowledge a placement in time, and since
    /// when. Inside a node a tile of another cell is "alive" while its cell is routed to
    /// (membership is per cell), so silence is how a holder's death there shows here; a
    /// frame from the tile clears its entry.
    unresponsive: BTreeMap<u32, Instant>,
    /// The last metadata version this tile's repairs used, per object.
    attempted: BTreeMap<String, u64>,
    /// Since when each stripe has been degraded in this tile's view (backup stewards).
    degraded_since: BTreeMap<String, Instant>,
    /// Shards this tile's metadata names it for and it does not hold, since when.
    lacking: BTreeMap<(String, u16), Instant>,
    next_req: u64,
    tokens: u64,
    refilled: Instant,
    counters: StoreCounters,
}

/// A stripe's shards and each shard's Merkle proof.
type Encoded = (Vec<Vec<u8>>, Vec<Vec<ShardHash>>);

/// A decoded object's shards and proofs again, for a repair or a self-heal; `None` when
/// they would not verify against `meta`'s root (cannot happen for an object that decoded
/// against it: refuse rather than place or keep shards the metadata would not verify).
fn reencode(object: &[u8], meta: &StripeMeta) -> Option<Encoded> {
    let encoded = codec::encode(object, &meta.class).ok()?;
    let (root, proofs) = codec::merkle(&encoded);
    (root == meta.root).then_some((encoded, proofs))
}

/// The tiles a stripe's metadata concerns: its holders and its writer.
fn stakeholders(meta: &StripeMeta) -> BTreeSet<u32> {
    let mut to: BTreeSet<u32> = meta.holders.iter().copied().collect();
    to.insert(meta.writer);
    to
}

fn distance(a: &Tile, b: &Tile) -> u8 {
    if a.id == b.id {
        0
    } else if a.cell == b.cell {
        1
    } else if a.cluster == b.cluster {
        2
    } else {
        3
    }
}

impl Store {
    pub fn new(me: Tile, params: StoreParams, now: Instant) -> Store {
        let mut members = BTreeMap::new();
        members.insert(
            me.id,
            Member {
                tile: me,
                alive: true,
                since: now,
            },
        );
        Store {
            me,
            tokens: params.repair_burst,
            params,
            members,
            metas: BTreeMap::new(),
            shards: BTreeMap::new(),
            gone: BTreeSet::new(),
            fetches: BTreeMap::new(),
            lookups: BTreeMap::new(),
            placing: BTreeMap::new(),
            puts: BTreeMap::new(),
            lost: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            unresponsive: BTreeMap::new(),
            attempted: BTreeMap::new(),
            degraded_since: BTreeMap::new(),
            lacking: BTreeMap::new(),
            next_req: 1,
            refilled: now,
            counters: StoreCounters::default(),
        }
    }

    pub fn params(&self) -> &StoreParams {
        &self.params
    }
    pub fn counters(&self) -> &StoreCounters {
        &self.counters
    }
    /// Shards this tile holds.
    pub fn shards_held(&self) -> usize {
        self.shards.len()
    }
    /// The metadata this tile knows for `object`.
    pub fn meta(&self, object: &str) -> Option<&StripeMeta> {
        self.metas.get(object)
    }
    pub fn metas(&self) -> impl Iterator<Item = &StripeMeta> {
        self.metas.values()
    }

    /// Membership news: `tile` is alive or dead as of `now`. `rebooted`: it came back
    /// with a new boot (empty), so every shard it held is gone.
    pub fn member(
        &mut self,
        now: Instant,
        tile: Tile,
        alive: bool,
        rebooted: bool,
        out: &mut Vec<StoreOut>,
    ) {
        if tile.id == self.me.id {
            return;
        }
        let was = self.members.get(&tile.id).map(|m| m.alive);
        if alive && was == Some(false) {
            // Back in view (a healed partition, a route again): ask it again.
            self.unresponsive.remove(&tile.id);
        }
        if was != Some(alive) {
            self.members.insert(
                tile.id,
                Member {
                    tile,
                    alive,
                    since: now,
                },
            );
        }
        if rebooted {
            for m in self.metas.values() {
                if let Some(i) = m.holders.iter().position(|&h| h == tile.id) {
                    self.gone.insert((m.object.clone(), i as u16));
                }
            }
        }
        // A tile back in view (a healed partition, a refuted suspicion): the steward of
        // each stripe it holds tells it our metadata, so the newer version wins on both
        // sides (an older one is answered with the newer).
        if alive && was == Some(false) && !rebooted {
            for m in self.metas.values() {
                if (m.holders.contains(&tile.id) || m.writer == tile.id)
                    && self.steward(m) == Some(self.me.id)
                {
                    out.push(StoreOut::Send {
                        to: tile.id,
                        msg: Msg::Meta { meta: m.clone() },
                    });
                }
            }
        }
    }

    fn alive(&self, id: u32) -> bool {
        self.members.get(&id).is_some_and(|m| m.alive) && !self.unresponsive.contains_key(&id)
    }

    /// Since when `id` counts as down: declared dead by membership, or silent to our
    /// asks (see [`Store::unresponsive`]); `None`: up.
    fn down_since(&self, id: u32) -> Option<Instant> {
        match self.members.get(&id) {
            Some(m) if !m.alive => Some(m.since),
            Some(_) => self.unresponsive.get(&id).copied(),
            None => None,
        }
    }

    /// `id` did not answer an ask or a placement in time: down for the store until a
    /// frame from it arrives (its cell's membership may see it alive or not at all).
    fn mark_unresponsive(&mut self, now: Instant, id: u32) {
        if id != self.me.id {
            self.unresponsive.entry(id).or_insert(now);
        }
    }

    fn live_tiles(&self) -> Vec<Tile> {
        self.members
            .values()
            .filter(|m| m.alive && !self.unresponsive.contains_key(&m.tile.id))
            .map(|m| m.tile)
            .collect()
    }

    /// Metadata learned from the causal store (another tile's put).
    pub fn learn_meta(&mut self, meta: StripeMeta) -> Result<(), StoreError> {
        meta.validate()?;
        self.adopt(meta);
        Ok(())
    }

    /// Merge `meta` into ours ([`StripeMeta::merge`]); drop the shards the result no
    /// longer gives us. Whether ours changed.
    fn adopt(&mut self, meta: StripeMeta) -> bool {
        let meta = match self.metas.get(&meta.object) {
            Some(old) => {
                let m = old.merge(&meta);
                if &m == old {
                    return false;
                }
                m
            }
            None => meta,
        };
        let o = meta.object.clone();
        let me = self.me.id;
        self.shards
            .retain(|(obj, i), _| obj != &o || meta.holders.get(*i as usize) == Some(&me));
        self.gone.retain(|(obj, i)| {
            obj != &o || {
                // Still gone only if the same holder is still named for it.
                let old = self.metas.get(&o).and_then(|m| m.holders.get(*i as usize));
                old.is_some() && old == meta.holders.get(*i as usize)
            }
        });
        self.metas.insert(o, meta);
        true
    }

    /// Write `object` under `class`: encode, place on live tiles, send the shards.
    pub fn put(
        &mut self,
        now: Instant,
        request: u64,
        object: &str,
        bytes: &[u8],
        class: &Class,
        out: &mut Vec<StoreOut>,
    ) -> Result<(), StoreError> {
        class.validate()?;
        if object.is_empty() || object.len() > MAX_NAME {
            return Err(StoreError::BadMetadata(format!(
                "object name of {} bytes (1..={MAX_NAME})",
                object.len()
            )));
        }
        if bytes.len() > self.params.max_object {
            return Err(StoreError::TooLarge {
                len: bytes.len(),
                max: self.params.max_object,
            });
        }
        if self.puts.contains_key(object) {
            return Err(StoreError::BadMetadata(format!(
                "a put of {object:?} is in flight"
            )));
        }
        let holders = placement::place(self.params.seed, object, class, &self.live_tiles())?;
        let shards = codec::encode(bytes, class)?;
        let (root, proofs) = codec::merkle(&shards);
        let version = self.metas.get(object).map_or(1, |m| m.version + 1);
        let meta = StripeMeta {
            object: object.into(),
            class: class.clone(),
            len: bytes.len() as u64,
            version,
            writer: self.me.id,
            by: self.me.id,
            root,
            stamps: vec![version; holders.len()],
            holders,
        };
        shard_frame_fits(&meta, &proofs[0], &shards[0])?;
        // A new put replaces the object: its loss state starts over.
        self.lost.remove(object);
        self.metas.remove(object);
        self.adopt(meta.clone());
        let mut acked = BTreeSet::new();
        for (i, (s, proof)) in shards.into_iter().zip(proofs).enumerate() {
            let to = meta.holders[i];
            if to == self.me.id {
                self.shards.insert((object.into(), i as u16), (s, proof));
                acked.insert(i as u16);
            } else {
                out.push(StoreOut::Send {
                    to,
                    msg: Msg::ShardPut {
                        meta: meta.clone(),
                        index: i as u16,
                        proof,
                        bytes: s,
                    },
                });
            }
        }
        out.push(StoreOut::MetaWrite { meta: meta.clone() });
        self.puts.insert(
            object.into(),
            PendingPut {
                request,
                k: class.k as usize,
                acked,
                n: class.n as usize,
                deadline: now + self.params.ack_timeout,
            },
        );
        self.check_put(object, out);
        Ok(())
    }

    fn check_put(&mut self, object: &str, out: &mut Vec<StoreOut>) {
        if let Some(p) = self.puts.get(object) {
            if p.acked.len() == p.n {
                let p = self.puts.remove(object).expect("present");
                out.push(StoreOut::PutDone {
                    request: p.request,
                    object: object.into(),
                });
            }
        }
    }

    /// Read `object`: ask the nearest live holders for k shards. A tile that knows no
    /// metadata of it first asks the tiles `class` would place it on (module doc, "Reads
    /// at any tile"); `class` is the class the reader expects (the node's configured one)
    /// and serves only to find them. Refused, nothing changed: a bad name, or
    /// [`MAX_LOOKUPS`] lookups already waiting.
    pub fn get(
        &mut self,
        now: Instant,
        request: u64,
        object: &str,
        class: &Class,
        out: &mut Vec<StoreOut>,
    ) -> Result<(), StoreError> {
        if self.metas.contains_key(object) {
            self.start_fetch(now, object, Purpose::Read(request), out);
            return Ok(());
        }
        if object.is_empty() || object.len() > MAX_NAME {
            return Err(StoreError::BadMetadata(format!(
                "object name of {} bytes (1..={MAX_NAME})",
                object.len()
            )));
        }
        class.validate()?;
        if self.lookups.len() >= MAX_LOOKUPS {
            return Err(StoreError::Busy(format!(
                "{MAX_LOOKUPS} reads already wait for metadata"
            )));
        }
        let req = self.next_req;
        self.next_req += 1;
        self.lookups.insert(
            req,
            Lookup {
                object: object.into(),
                request,
                next: self.lookup_order(object, class),
                asked: BTreeMap::new(),
                tried: 0,
            },
        );
        self.ask_meta(now, req, out);
        Ok(())
    }

    /// The tiles a lookup of `object` asks, best first: the object's placement under
    /// `class` over every tile known, then over the tiles alive now (placement and repair
    /// both pick by the same rendezvous ranks), each list nearest first; live tiles
    /// only, each once, this tile never.
    fn lookup_order(&self, object: &str, class: &Class) -> Vec<u32> {
        let all: Vec<Tile> = self.members.values().map(|m| m.tile).collect();
        let mut order: Vec<u32> = Vec::new();
        for tiles in [all, self.live_tiles()] {
            let Ok(placed) = placement::place(self.params.seed, object, class, &tiles) else {
                continue;
            };
            let mut ranked: Vec<(u8, usize, u32)> = placed
                .iter()
                .enumerate()
                .filter(|&(_, &t)| t != self.me.id && self.alive(t) && !order.contains(&t))
                .filter_map(|(i, &t)| Some((distance(&self.me, &self.members.get(&t)?.tile), i, t)))
                .collect();
            ranked.sort_unstable();
            order.extend(ranked.into_iter().map(|(_, _, t)| t));
        }
        order
    }

    /// Ask more tiles for lookup `req`'s metadata, or fail it when none is left to ask.
    fn ask_meta(&mut self, now: Instant, req: u64, out: &mut Vec<StoreOut>) {
        let Some(l) = self.lookups.get_mut(&req) else {
            return;
        };
        while l.asked.len() < LOOKUP_FANOUT && !l.next.is_empty() {
            let to = l.next.remove(0);
            l.asked.insert(to, now + self.params.fetch_timeout);
            l.tried += 1;
            out.push(StoreOut::Send {
                to,
                msg: Msg::MetaGet {
                    object: l.object.clone(),
                    req,
                },
            });
        }
        if l.asked.is_empty() {
            let l = self.lookups.remove(&req).expect("present");
            out.push(StoreOut::Read {
                request: l.request,
                result: Err(StoreError::NotFound {
                    object: l.object,
                    asked: l.tried,
                }),
            });
        }
    }

    /// Metadata of `object` arrived: every lookup waiting for it becomes a fetch.
    fn lookups_found(&mut self, now: Instant, object: &str, out: &mut Vec<StoreOut>) {
        let done: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.object == object)
            .map(|(&r, _)| r)
            .collect();
        for r in done {
            let l = self.lookups.remove(&r).expect("present");
            self.start_fetch(now, object, Purpose::Read(l.request), out);
        }
    }

    fn start_fetch(
        &mut self,
        now: Instant,
        object: &str,
        purpose: Purpose,
        out: &mut Vec<StoreOut>,
    ) {
        let req = self.next_req;
        self.next_req += 1;
        let mut f = Fetch {
            object: object.into(),
            purpose,
            asked: BTreeMap::new(),
            got: BTreeMap::new(),
            failed: BTreeSet::new(),
        };
        for ((o, i), s) in self
            .shards
            .range((object.to_string(), 0)..=(object.to_string(), u16::MAX))
        {
            debug_assert_eq!(o, object);
            f.got.insert(*i, s.clone());
        }
        self.fetches.insert(req, f);
        self.advance(now, req, out);
    }

    /// Ask more holders, or finish the fetch `req`.
    fn advance(&mut self, now: Instant, req: u64, out: &mut Vec<StoreOut>) {
        let Some(f) = self.fetches.get(&req) else {
            return;
        };
        let Some(meta) = self.metas.get(&f.object).cloned() else {
            self.fetches.remove(&req);
            return;
        };
        let k = meta.class.k as usize;
        if f.got.len() >= k {
            let f = self.fetches.remove(&req).expect("present");
            self.fetched(now, meta, f, out);
            return;
        }
        let mut cands: Vec<(u8, u16)> = (0..meta.class.n)
            .filter(|i| !f.got.contains_key(i) && !f.failed.contains(i) && !f.asked.contains_key(i))
            .filter(|&i| !self.gone.contains(&(meta.object.clone(), i)))
            .filter_map(|i| {
                let h = meta.holders[i as usize];
                let m = self
                    .members
                    .get(&h)
                    .filter(|m| self.alive(m.tile.id) && h != self.me.id)?;
                Some((distance(&self.me, &m.tile), i))
            })
            .collect();
        cands.sort_unstable();
        let need = k - f.got.len();
        let more = need.saturating_sub(f.asked.len());
        if f.asked.is_empty() && cands.is_empty() {
            let f = self.fetches.remove(&req).expect("present");
            let have = f.got.len();
            match f.purpose {
                Purpose::Read(request) => out.push(StoreOut::Read {
                    request,
                    result: Err(StoreError::TooFewShards { have, need: k }),
                }),
                Purpose::Repair => self.declare_lost_if(now, &meta, out),
                // Retried at a later tick while the shard is still lacking.
                Purpose::Heal => {}
            }
            return;
        }
        let deadline = now + self.params.fetch_timeout;
        let f = self.fetches.get_mut(&req).expect("present");
        for &(_, i) in cands.iter().take(more) {
            f.asked.insert(i, deadline);
            out.push(StoreOut::Send {
                to: meta.holders[i as usize],
                msg: Msg::ShardGet {
                    object: meta.object.clone(),
                    index: i,
                    req,
                },
            });
        }
    }

    fn fetched(&mut self, now: Instant, meta: StripeMeta, f: Fetch, out: &mut Vec<StoreOut>) {
        let offered: Vec<codec::Offered<'_>> = f
            .got
            .iter()
            .map(|(&i, (b, p))| (i as usize, &b[..], &p[..]))
            .collect();
        let decoded = codec::decode(&meta.class, meta.len as usize, &meta.root, &offered);
        match f.purpose {
            Purpose::Read(request) => {
                out.push(StoreOut::Read {
                    request,
                    result: decoded.map(|d| d.object),
                });
            }
            Purpose::Repair => {
                if let Ok(d) = decoded {
                    self.counters.repair_bytes_total +=
                        f.got.values().map(|(b, _)| b.len() as u64).sum::<u64>();
                    self.rebuild(now, meta, &d.object, out);
                }
            }
            Purpose::Heal => {
                let Ok(d) = decoded else { return };
                let Some((encoded, proofs)) = reencode(&d.object, &meta) else {
                    return;
                };
                self.counters.repair_bytes_total +=
                    f.got.values().map(|(b, _)| b.len() as u64).sum::<u64>();
                let me = self.me.id;
                for (i, &h) in meta.holders.iter().enumerate() {
                    let key = (meta.object.clone(), i as u16);
                    if h == me && !self.shards.contains_key(&key) {
                        self.shards
                            .insert(key.clone(), (encoded[i].clone(), proofs[i].clone()));
                        self.lacking.remove(&key);
                    }
                }
            }
        }
    }

    /// The stripe's missing shard indexes as this tile sees them (holders dead past the
    /// grace period, or back empty), and the earliest such loss.
    fn missing(&self, now: Instant, meta: &StripeMeta) -> (Vec<u16>, Option<Instant>) {
        let mut miss = Vec::new();
        let mut first: Option<Instant> = None;
        for (i, &h) in meta.holders.iter().enumerate() {
            let gone = self.gone.contains(&(meta.object.clone(), i as u16)) || meta.duplicate(i);
            let dead = self
                .down_since(h)
                .filter(|&t| now.saturating_since(t) >= self.params.grace);
            if gone || dead.is_some() {
                miss.push(i as u16);
                let at = dead.unwrap_or(now);
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        (miss, first)
    }

    /// The stripe's steward: the live tile holding its metadata (a holder not gone, or the
    /// writer) with the lowest rendezvous rank — among the live holders in the cell of the
    /// first shard missing in this tile's view when that cell has any. In a node,
    /// liveness is per cell (SWIM runs per cell; other cells are alive while routed to),
    /// so a holder's death is seen first, or only, by its cell-mates: they elect among
    /// themselves, and tiles of other cells (which see nothing missing) stay out. A whole
    /// cell lost is seen by every other cell, which elects among all live holders.
    fn steward(&self, meta: &StripeMeta) -> Option<u32> {
        self.electorate(meta).first().copied()
    }

    /// The tiles [`Self::steward`] elects from, best first (the steward, then its backups).
    fn electorate(&self, meta: &StripeMeta) -> Vec<u32> {
        let holding = |i: usize, h: u32| {
            self.alive(h) && !self.gone.contains(&(meta.object.clone(), i as u16))
        };
        let cell_of = |h: u32| self.members.get(&h).map(|m| m.tile.cell);
        let first_missing = meta
            .holders
            .iter()
            .enumerate()
            .find(|(i, &h)| !holding(*i, h))
            .and_then(|(_, &h)| cell_of(h));
        let mut electorate: Vec<u32> = meta
            .holders
            .iter()
            .enumerate()
            .filter(|(i, &h)| holding(*i, h))
            .map(|(_, &h)| h)
            .collect();
        if let Some(c) = first_missing {
            let local: Vec<u32> = electorate
                .iter()
                .copied()
                .filter(|&h| cell_of(h) == Some(c))
                .collect();
            if !local.is_empty() {
                electorate = local;
            }
        }
        if electorate.is_empty() && self.alive(meta.writer) {
            electorate.push(meta.writer);
        }
        electorate.sort_by_cached_key(|&id| {
            let mut h = <sha2::Sha256 as sha2::Digest>::new();
            sha2::Digest::update(&mut h, self.params.seed.to_le_bytes());
            sha2::Digest::update(&mut h, meta.object.as_bytes());
            sha2::Digest::update(&mut h, id.to_le_bytes());
            <[u8; 32]>::from(sha2::Digest::finalize(h))
        });
        electorate
    }

    /// Whether this tile repairs `meta` now: it is the steward, or a backup whose turn
    /// came (the stripe degraded in its view for `rank × TAKEOVER_GRACES × grace`).
    fn repairs_now(&self, now: Instant, meta: &StripeMeta) -> bool {
        let Some(rank) = self.electorate(meta).iter().position(|&t| t == self.me.id) else {
            return false;
        };
        let since = self
            .degraded_since
            .get(&meta.object)
            .copied()
            .unwrap_or(now);
        rank == 0
            || now.saturating_since(since) >= self.params.grace * TAKEOVER_GRACES * rank as u32
    }

    /// Reports `meta`'s object lost when fewer than k of its shards survive in this
    /// tile's view: holders gone, or down (dead, or silent to our asks) for the grace
    /// period — a partition shorter than the grace loses nothing.
    fn declare_lost_if(&mut self, now: Instant, meta: &StripeMeta, out: &mut Vec<StoreOut>) {
        let down = self.missing(now, meta).0.len();
        if meta.class.n as usize - down < meta.class.k as usize
            && self.lost.insert(meta.object.clone())
        {
            self.counters.objects_lost_total += 1;
            out.push(StoreOut::Lost {
                object: meta.object.clone(),
            });
            for t in stakeholders(meta) {
                if t != self.me.id && self.alive(t) {
                    out.push(StoreOut::Send {
                        to: t,
                        msg: Msg::Lost {
                            object: meta.object.clone(),
                        },
                    });
                }
            }
        }
    }

    /// Re-encode the object, place the missing shards on live tiles, send them.
    fn rebuild(&mut self, now: Instant, meta: StripeMeta, object: &[u8], out: &mut Vec<StoreOut>) {
        let (miss, _) = self.missing(now, &meta);
        if miss.is_empty() || self.placing.contains_key(&meta.object) {
            return;
        }
        let Some((encoded, proofs)) = reencode(object, &meta) else {
            return;
        };
        let live = self.live_tiles();
        let mut new = meta.clone();
        let mut queued = Vec::new();
        let keep: Vec<u32> = meta
            .holders
            .iter()
            .enumerate()
            .filter(|(i, _)| !miss.contains(&(*i as u16)))
            .map(|(_, &h)| h)
            .collect();
        let mut taken = keep.clone();
        for &i in &miss {
            let lost_cell = self
                .members
                .get(&meta.holders[i as usize])
                .map(|m| m.tile.cell);
            // A tile that came back empty may take its own index again; a tile named
            // twice may not (it keeps its other index).
            let dup = meta.duplicate(i as usize);
            let mut busy = taken.clone();
            busy.retain(|&h| h != meta.holders[i as usize] || !self.alive(h) || dup);
            if !self.alive(meta.holders[i as usize]) {
                busy.push(meta.holders[i as usize]);
            }
            let Some(r) = placement::replacement(
                self.params.seed,
                &meta.object,
                i as usize,
                lost_cell,
                &busy,
                &live,
            ) else {
                continue;
            };
            new.holders[i as usize] = r;
            taken.push(r);
            queued.push((i, (encoded[i as usize].clone(), proofs[i as usize].clone())));
        }
        if queued.is_empty() {
            // No free live tile in any domain: try again after a grace period, not every tick.
            self.retry_at
                .insert(meta.object.clone(), now + self.params.grace);
            return;
        }
        // Above any version an earlier attempt of ours used: a placement that failed may
        // have left its metadata on the tiles that acknowledged, and an equal rank with
        // other holders would never replace it there.
        let floor = self.attempted.get(&meta.object).copied().unwrap_or(0);
        new.version = new.version.max(floor) + 1;
        new.by = self.me.id;
        for (i, _) in &queued {
            new.stamps[*i as usize] = new.version;
        }
        self.attempted.insert(meta.object.clone(), new.version);
        if new.validate().is_err() {
            return;
        }
        self.placing.insert(
            meta.object.clone(),
            Placing {
                meta: new,
                waiting: queued.iter().map(|q| q.0).collect(),
                deadline: now + self.params.ack_timeout,
                queued,
            },
        );
        self.send_placements(now, out);
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_since(self.refilled);
        let add = (dt.as_nanos() * self.params.repair_rate as u128 / 1_000_000_000) as u64;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.params.repair_burst);
            self.refilled = now;
        }
    }

    /// Send queued repair shards as the token bucket allows.
    fn send_placements(&mut self, now: Instant, out: &mut Vec<StoreOut>) {
        self.refill(now);
        let me = self.me.id;
        let objects: Vec<String> = self.placing.keys().cloned().collect();
        let mut local = Vec::new();
        'objects: for o in objects {
            let p = self.placing.get_mut(&o).expect("present");
            while let Some((i, (bytes, proof))) = p.queued.first() {
                let cost = bytes.len() as u64;
                if cost > self.tokens && self.tokens < self.params.repair_burst {
                    // Out of tokens: the rest waits for a later tick (a shard larger than
                    // the bucket goes alone when the bucket is full).
                    break 'objects;
                }
                self.tokens = self.tokens.saturating_sub(cost);
                self.counters.repair_bytes_total += cost;
                let (i, bytes, proof) = (*i, bytes.clone(), proof.clone());
                p.queued.remove(0);
                p.deadline = now + self.params.ack_timeout;
                let to = p.meta.holders[i as usize];
                if to == me {
                    local.push((o.clone(), i, (bytes, proof)));
                } else {
                    out.push(StoreOut::Send {
                        to,
                        msg: Msg::ShardPut {
                            meta: p.meta.clone(),
                            index: i,
                            proof,
                            bytes,
                        },
                    });
                }
            }
        }
        for (o, i, bytes) in local {
            self.shards.insert((o.clone(), i), bytes);
            let version = self.placing[&o].meta.version;
            self.on_ack(now, &o, version, i, out);
        }
    }

    fn on_ack(
        &mut self,
        now: Instant,
        object: &str,
        version: u64,
        index: u16,
        out: &mut Vec<StoreOut>,
    ) {
        if let Some(p) = self.puts.get_mut(object) {
            if self.metas.get(object).is_some_and(|m| m.version == version) {
                p.acked.insert(index);
            }
            self.check_put(object, out);
        }
        let Some(p) = self.placing.get_mut(object) else {
            return;
        };
        if p.meta.version != version {
            return;
        }
        p.waiting.remove(&index);
        if !p.waiting.is_empty() {
            return;
        }
        let p = self.placing.remove(object).expect("present");
        let first = self.metas.get(object).map(|m| self.missing(now, m).1);
        self.adopt(p.meta);
        // What we tell is the merge: slots other repairs set meanwhile stay theirs.
        let meta = self.metas[object].clone();
        self.tell_meta(&meta, stakeholders(&meta), out);
        out.push(StoreOut::MetaWrite { meta: meta.clone() });
        self.counters.repairs_total += 1;
        if self.missing(now, &meta).0.is_empty() {
            let after = first
                .flatten()
                .map_or(Duration::ZERO, |f| now.saturating_since(f));
            out.push(StoreOut::Repaired {
                object: object.into(),
                after,
            });
        }
    }

    /// A frame from tile `from` (already authenticated by the overlay). A frame that does
    /// not decode, or does not fit our state, changes nothing and is counted.
    pub fn on_frame(&mut self, now: Instant, from: u32, bytes: &[u8], out: &mut Vec<StoreOut>) {
        self.unresponsive.remove(&from);
        let msg = match Msg::decode(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.counters.bad_frames_total += 1;
                return;
            }
        };
        match msg {
            Msg::Lost { object } => {
                // Known lost elsewhere: do not repair or report it again here — unless
                // we still see k shards (the teller is cut off from them, we are not).
                let fewer_than_k = self.metas.get(&object).is_some_and(|m| {
                    (m.class.n as usize) < self.missing(now, m).0.len() + m.class.k as usize
                });
                if fewer_than_k {
                    self.lost.insert(object);
                }
            }
            Msg::ShardPut {
                meta,
                index,
                proof,
                bytes,
            } => {
                let ok = meta.holders[index as usize] == self.me.id
                    && bytes.len() == codec::shard_len(meta.len as usize, meta.class.k as usize)
                    && codec::verify(
                        &meta.root,
                        meta.class.n as usize,
                        index as usize,
                        &bytes,
                        &proof,
                    );
                if !ok {
                    self.counters.corrupt_shards_total += 1;
                    return;
                }
                let (object, version, root) = (meta.object.clone(), meta.version, meta.root);
                self.adopt(meta);
                if self.metas.get(&object).is_some_and(|m| m.root != root) {
                    return; // superseded by a newer write of the object
                }
                // Acknowledged either way; kept only if the merge still names us for it (a
                // newer repair may have placed this index elsewhere: that slot wins, here
                // and at the sender once the metadata meets).
                let named = self
                    .metas
                    .get(&object)
                    .is_some_and(|m| m.holders.get(index as usize) == Some(&self.me.id));
                if named {
                    self.gone.remove(&(object.clone(), index));
                    self.shards.insert((object.clone(), index), (bytes, proof));
                }
                out.push(StoreOut::Send {
                    to: from,
                    msg: Msg::ShardPutAck {
                        object,
                        version,
                        index,
                    },
                });
            }
            Msg::ShardPutAck {
                object,
                version,
                index,
            } => self.on_ack(now, &object, version, index, out),
            Msg::ShardGet { object, index, req } => {
                let msg = match self.shards.get(&(object.clone(), index)) {
                    Some((b, p)) => Msg::ShardData {
                        object,
                        index,
                        req,
                        proof: p.clone(),
                        bytes: b.clone(),
                    },
                    None => Msg::ShardNone { object, index, req },
                };
                out.push(StoreOut::Send { to: from, msg });
            }
            Msg::ShardData {
                object,
                index,
                req,
                proof,
                bytes,
            } => {
                let Some(f) = self.fetches.get_mut(&req) else {
                    return;
                };
                if f.object != object || f.asked.remove(&index).is_none() {
                    return;
                }
                let good = self.metas.get(&object).is_some_and(|m| {
                    bytes.len() == codec::shard_len(m.len as usize, m.class.k as usize)
                        && codec::verify(
                            &m.root,
                            m.class.n as usize,
                            index as usize,
                            &bytes,
                            &proof,
                        )
                });
                if good {
                    f.got.insert(index, (bytes, proof));
                } else {
                    self.counters.corrupt_shards_total += 1;
                    f.failed.insert(index);
                }
                self.advance(now, req, out);
            }
            Msg::ShardNone { object, index, req } if index == NO_META => {
                // A lookup's ask: that tile knows no metadata; ask the next.
                let Some(l) = self.lookups.get_mut(&req) else {
                    return;
                };
                if l.object != object || l.asked.remove(&from).is_none() {
                    return;
                }
                self.ask_meta(now, req, out);
            }
            Msg::ShardNone { object, index, req } => {
                let Some(f) = self.fetches.get_mut(&req) else {
                    return;
                };
                if f.object != object || f.asked.remove(&index).is_none() {
                    return;
                }
                f.failed.insert(index);
                self.advance(now, req, out);
            }
            Msg::MetaGet { object, req } => {
                let msg = match self.metas.get(&object) {
                    Some(m) => Msg::Meta { meta: m.clone() },
                    None => Msg::ShardNone {
                        object,
                        index: NO_META,
                        req,
                    },
                };
                out.push(StoreOut::Send { to: from, msg });
            }
            Msg::Meta { meta } => {
                let mine = meta.holders.contains(&self.me.id) || meta.writer == self.me.id;
                // Asked for by a lookup of ours (from a tile it asked).
                let wanted = self
                    .lookups
                    .values()
                    .any(|l| l.object == meta.object && l.asked.contains_key(&from));
                if !(mine || wanted || self.metas.contains_key(&meta.object)) {
                    return;
                }
                let object = meta.object.clone();
                let changed = self.adopt(meta.clone());
                if changed {
                    self.lookups_found(now, &object, out);
                }
                if let Some(m) = self.metas.get(&object).filter(|m| **m != meta) {
                    // The sender lacks some of what we know. If we lacked some of what it
                    // knew too (two views met: a healed partition, concurrent repairs),
                    // every holder may lack the merge: tell them all; else the sender.
                    let mut to = if changed {
                        stakeholders(m)
                    } else {
                        BTreeSet::new()
                    };
                    to.insert(from);
                    self.tell_meta(m, to, out);
                }
            }
        }
    }

    /// Every [`StoreParams::tick`]: time out asks and placements, start repairs this tile
    /// stewards, report losses, send rate-limited repair shards.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<StoreOut>) {
        // Asks past their deadline fail; ask elsewhere.
        let reqs: Vec<u64> = self.fetches.keys().copied().collect();
        for req in reqs {
            let f = self.fetches.get_mut(&req).expect("present");
            let late: Vec<u16> = f
                .asked
                .iter()
                .filter(|(_, &d)| d <= now)
                .map(|(&i, _)| i)
                .collect();
            if !late.is_empty() {
                let object = f.object.clone();
                for &i in &late {
                    f.asked.remove(&i);
                    f.failed.insert(i);
                }
                if let Some(m) = self.metas.get(&object) {
                    let silent: Vec<u32> = late
                        .iter()
                        .filter_map(|&i| m.holders.get(i as usize).copied())
                        .collect();
                    for h in silent {
                        self.mark_unresponsive(now, h);
                    }
                }
                self.advance(now, req, out);
            }
        }
        // Lookup asks past their deadline: ask the next tiles.
        let reqs: Vec<u64> = self.lookups.keys().copied().collect();
        for req in reqs {
            let l = self.lookups.get_mut(&req).expect("present");
            let before = l.asked.len();
            l.asked.retain(|_, d| *d > now);
            if l.asked.len() < before {
                self.ask_meta(now, req, out);
            }
        }
        // Puts: done with at least k + 1 acks once the timeout passed (repair restores
        // the rest), failed with fewer.
        let late: Vec<String> = self
            .puts
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(o, _)| o.clone())
            .collect();
        for o in late {
            let p = self.puts.remove(&o).expect("present");
            if p.acked.len() > p.k {
                out.push(StoreOut::PutDone {
                    request: p.request,
                    object: o,
                });
            } else {
                out.push(StoreOut::PutFailed {
                    request: p.request,
                    object: o,
                    why: format!("{} of {} shards acknowledged", p.acked.len(), p.n),
                });
            }
        }
        // Placements not acknowledged in time: drop, the next tick starts over (away from
        // the tiles that stayed silent).
        let mut silent = Vec::new();
        self.placing.retain(|_, p| {
            let late = p.queued.is_empty() && p.deadline <= now;
            if late {
                silent.extend(p.waiting.iter().map(|&i| p.meta.holders[i as usize]));
            }
            !late
        });
        for h in silent {
            self.mark_unresponsive(now, h);
        }
        self.send_placements(now, out);
        // Repairs this tile stewards.
        let objects: Vec<String> = self.metas.keys().cloned().collect();
        for o in objects {
            if self.lost.contains(&o) {
                // Lost in our view is a verdict on what we see, not the end: a partition
                // that leaves each side fewer than k shards for longer than the grace has
                // both sides declare the object lost, and when it heals the shards are
                // all back. Found again (k or more in view), repair resumes (session 13:
                // the twin's store-durable seed 32, the k0 gateway crashed for 30 s, left
                // 22 stripes degraded to the end with every steward holding them lost).
                let meta = &self.metas[&o];
                let (miss, _) = self.missing(now, meta);
                if (meta.class.n as usize) < miss.len() + meta.class.k as usize {
                    continue;
                }
                self.lost.remove(&o);
                self.counters.objects_found_again_total += 1;
            }
            if self.placing.contains_key(&o) || self.retry_at.get(&o).is_some_and(|&t| t > now) {
                continue;
            }
            if self
                .fetches
                .values()
                .any(|f| f.object == o && matches!(f.purpose, Purpose::Repair))
            {
                continue;
            }
            let meta = &self.metas[&o];
            let (miss, _) = self.missing(now, meta);
            if miss.is_empty() {
                self.degraded_since.remove(&o);
                continue;
            }
            self.degraded_since.entry(o.clone()).or_insert(now);
            let meta = &self.metas[&o];
            if !self.repairs_now(now, meta) {
                continue;
            }
            let meta = meta.clone();
            if meta.class.n as usize - miss.len() < meta.class.k as usize {
                self.declare_lost_if(now, &meta, out);
                continue;
            }
            self.start_fetch(now, &o, Purpose::Repair, out);
        }
        self.heal(now, out);
    }

    /// Send `meta` to the tiles `to` (not to ourselves).
    fn tell_meta(&self, meta: &StripeMeta, to: BTreeSet<u32>, out: &mut Vec<StoreOut>) {
        for t in to.into_iter().filter(|&t| t != self.me.id) {
            out.push(StoreOut::Send {
                to: t,
                msg: Msg::Meta { meta: meta.clone() },
            });
        }
    }

    /// Self-healing holders (module doc): rebuild each shard this tile's metadata has
    /// named it for, without its holding it, for [`StoreParams::ack_timeout`] (a placement
    /// in flight arrives within it).
    fn heal(&mut self, now: Instant, out: &mut Vec<StoreOut>) {
        let me = self.me.id;
        let mut lacking = BTreeMap::new();
        for m in self.metas.values() {
            if self.lost.contains(&m.object) {
                continue;
            }
            for (i, &h) in m.holders.iter().enumerate() {
                let key = (m.object.clone(), i as u16);
                if h == me && !self.shards.contains_key(&key) {
                    let since = self.lacking.get(&key).copied().unwrap_or(now);
                    lacking.insert(key, since);
                }
            }
        }
        self.lacking = lacking;
        let due: BTreeSet<String> = self
            .lacking
            .iter()
            .filter(|(_, &t)| now.saturating_since(t) >= self.params.ack_timeout)
            .map(|((o, _), _)| o.clone())
            .collect();
        for o in due {
            let busy = self.placing.contains_key(&o)
                || self
                    .fetches
                    .values()
                    .any(|f| f.object == o && !matches!(f.purpose, Purpose::Read(_)));
            if !busy {
                self.counters.self_heals_total += 1;
                self.start_fetch(now, &o, Purpose::Heal, out);
            }
        }
    }

    /// Redundancy of the stripes this tile stewards, as it sees them now.
    pub fn redundancy(&self, now: Instant) -> Redundancy {
        let mut r = Redundancy::default();
        for m in self.metas.values() {
            if self.lost.contains(&m.object) || self.steward(m) != Some(self.me.id) {
                continue;
            }
            let live = m
                .holders
                .iter()
                .enumerate()
                .filter(|(i, &h)| {
                    self.alive(h) && !self.gone.contains(&(m.object.clone(), *i as u16))
                })
                .count();
            let (n, k) = (m.class.n as usize, m.class.k as usize);
            if live == n {
                r.full += 1;
            } else if live <= k + 1 {
                r.critical += 1;
            } else {
                r.reduced += 1;
            }
            if !self.missing(now, m).0.is_empty() {
                r.repair_queue += 1;
            }
        }
        r
    }

    /// This tile's figures now (see [`super::metrics`]).
    pub fn metrics(&self, now: Instant) -> StoreMetrics {
        StoreMetrics {
            redundancy: self.redundancy(now),
            shards_held: self.shards.len() as u64,
            objects_lost_now: self.lost.len() as u64,
            counters: self.counters.clone(),
        }
    }

    /// Whether this tile holds shard `index` of `object`.
    pub fn holds(&self, object: &str, index: u16) -> bool {
        self.shards.contains_key(&(object.to_string(), index))
    }

    /// Objects this tile declared lost.
    pub fn lost(&self) -> &BTreeSet<String> {
        &self.lost
    }

    /// Every shard this tile holds, with the SHA-256 of the bytes it holds now: what an
    /// experiment checks against the hashes of the object it wrote (the tile's own
    /// verification is not trusted for that), in (object, index) order.
    pub fn inventory(&self) -> Vec<HeldShard> {
        self.shards
            .iter()
            .map(|((object, index), (bytes, _))| HeldShard {
                object: object.clone(),
                index: *index,
                sha256: hex(&codec::shard_hash(bytes)),
            })
            .collect()
    }
}

/// Whether an object of `bytes` under `class`, named with up to 40 bytes, makes shard
/// frames that fit one overlay datagram (what [`Store::put`] refuses otherwise): for tools
/// that check a workload before running it. The same check as the put's
/// ([`shard_frame_fits`]), on a stand-in metadata.
pub fn frame_check(bytes: &[u8], class: &Class) -> Result<(), StoreError> {
    class.validate()?;
    let shards = codec::encode(bytes, class)?;
    let (root, proofs) = codec::merkle(&shards);
    let meta = StripeMeta {
        object: "o".repeat(40),
        class: class.clone(),
        len: bytes.len() as u64,
        version: 1,
        writer: u32::MAX,
        by: u32::MAX,
        root,
        holders: (0..u32::from(class.n)).map(|i| u32::MAX - i).collect(),
        stamps: vec![1; class.n as usize],
    };
    shard_frame_fits(&meta, &proofs[0], &shards[0])
}

/// A shard frame (metadata, proof, shard) must fit one overlay datagram: the frame of
/// shard 0 (every shard of a stripe has the same length and proof depth).
fn shard_frame_fits(
    meta: &StripeMeta,
    proof: &[ShardHash],
    shard: &[u8],
) -> Result<(), StoreError> {
    let frame = Msg::ShardPut {
        meta: meta.clone(),
        index: 0,
        proof: proof.to_vec(),
        bytes: shard.to_vec(),
    }
    .encode()
    .len();
    if frame > crate::wire::MAX_BLOB {
        return Err(StoreError::FrameTooLarge {
            frame,
            max: crate::wire::MAX_BLOB,
        });
    }
    Ok(())
}

/// One shard a tile holds, as [`Store::inventory`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldShard {
    pub object: String,
    pub index: u16,
    /// SHA-256 of the shard's bytes, lower-case hex.
    pub sha256: String,
}

/// Lower-case hex of a hash.
pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::harness::{Harness, Record};
    use super::super::Class;
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    fn repaired(h: &Harness) -> Vec<(Duration, String)> {
        h.records
            .iter()
            .filter_map(|r| match r {
                Record::Repaired { at, object, .. } => Some((*at, object.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_crashed_holder_is_repaired_only_after_the_grace_period() {
        let mut h = Harness::grid(
            2,
            3,
            4,
            Class::new("c", 4, 8, 4).unwrap(),
            StoreParams::default(),
        );
        h.put_at(s(1), 0, "a", b"some bytes worth keeping".to_vec());
        h.run_until(s(5));
        let m = h.meta("a").unwrap();
        let victim = m.holders[3];
        h.crash_at(s(10), victim);
        // Declared dead at 18 s; grace 30 s: nothing before 48 s.
        h.run_until(s(47));
        assert!(repaired(&h).is_empty(), "{:?}", h.records);
        h.run_until(s(60));
        let r = repaired(&h);
        assert_eq!(r.len(), 1, "{:?}", h.records);
        assert!(r[0].0 >= s(48) && r[0].0 < s(50), "{r:?}");
        assert_eq!(h.redundancy_of("a"), Some((8, 8)));
        let now = h.meta("a").unwrap();
        assert!(!now.holders.contains(&victim) && now.version == m.version + 1);
    }

    #[test]
    fn a_partition_shorter_than_the_grace_moves_nothing() {
        let mut h = Harness::grid(
            2,
            3,
            4,
            Class::new("c", 4, 8, 4).unwrap(),
            StoreParams::default(),
        );
        h.put_at(s(1), 0, "a", vec![7; 300]);
        h.run_until(s(5));
        let side = h.cluster(0);
        h.partition_at(s(10), s(20), side);
        h.run_until(s(120));
        assert!(repaired(&h).is_empty(), "{:?}", h.records);
        assert_eq!(h.redundancy_of("a"), Some((8, 8)));
    }

    #[test]
    fn a_partition_longer_than_the_grace_repairs_and_converges_on_one_placement() {
        let mut h = Harness::grid(
            2,
            3,
            4,
            Class::new("c", 4, 8, 4).unwrap(),
            StoreParams::default(),
        );
        h.put_at(s(1), 0, "a", vec![9; 500]);
        h.run_until(s(5));
        let side = h.cluster(0);
        h.partition_at(s(10), s(90), side);
        h.run_until(s(200));
        assert!(!repaired(&h).is_empty());
        assert_eq!(h.redundancy_of("a"), Some((8, 8)), "{:?}", h.records);
        let m = h.meta("a").unwrap();
        for (_, st) in h.stores() {
            if let Some(mm) = st.meta("a") {
                if m.holders.contains(&st_id(&h, st)) {
                    assert_eq!(
                        (&mm.holders, &mm.stamps),
                        (&m.holders, &m.stamps),
                        "every holder on the merged placement"
                    );
                }
            }
        }
        h.read_at(s(201), 0, "a");
        h.run_until(s(210));
        assert!(
            matches!(h.records.last(), Some(Record::Read { ok: true, .. })),
            "{:?}",
            h.records.last()
        );
    }

    /// A partition that leaves each side fewer than k shards for longer than the grace:
    /// both sides declare the object lost (rightly, in their views), and the heal brings
    /// every shard back. The verdict must not outlive the partition: repair resumes and
    /// the stripe is full again (the twin's store-durable seed 32, session 13: 22 stripes
    /// degraded to the end, their stewards holding them lost).
    #[test]
    fn an_object_lost_to_a_partition_is_found_again_and_repaired_after_the_heal() {
        let mut h = Harness::grid(
            2,
            3,
            4,
            Class::new("c", 5, 8, 4).unwrap(),
            StoreParams::default(),
        );
        h.put_at(s(1), 0, "a", vec![3; 400]);
        h.run_until(s(5));
        let side = h.cluster(0);
        let m = h.meta("a").unwrap();
        let inside = m.holders.iter().filter(|x| side.contains(x)).count();
        assert!(
            inside < 5 && m.holders.len() - inside < 5,
            "premise: each side holds fewer than k = 5 of {:?}",
            m.holders
        );
        h.partition_at(s(10), s(90), side);
        // And one shard really lost meanwhile: after the heal the stripe needs a repair.
        h.crash_at(s(30), m.holders[0]);
        h.run_until(s(90));
        assert!(
            h.records
                .iter()
                .any(|r| matches!(r, Record::Lost { object, .. } if object == "a")),
            "premise: declared lost during the partition: {:?}",
            h.records
        );
        let held = h.metrics();
        assert!(
            held.objects_lost_now > 0 && held.counters.objects_lost_total > 0,
            "held lost during the partition: {held:?}"
        );
        h.run_until(s(240));
        // The verdicts are counted, and no tile holds the object lost any more.
        let after = h.metrics();
        assert_eq!(after.objects_lost_now, 0, "{after:?}");
        assert!(after.counters.objects_lost_total >= held.counters.objects_lost_total);
        assert_eq!(h.redundancy_of("a"), Some((8, 8)), "{:?}", h.records);
        let found: u64 = h
            .stores()
            .map(|(_, st)| st.counters().objects_found_again_total)
            .sum();
        assert!(found > 0, "no tile counted the object found again");
        h.read_at(s(241), 0, "a");
        h.run_until(s(250));
        assert!(
            matches!(h.records.last(), Some(Record::Read { ok: true, .. })),
            "{:?}",
            h.records.last()
        );
    }

    /// The lab's `store-durable` failure (seed 16, obj-0020): a whole cell lost (so every
    /// tile elects from all live holders) and, at once, the holder that ranks first among
    /// them crashed where only its cell-mates see it (other cells keep it "alive" while
    /// its cell is routed to). Tiles outside its cell defer to it; its cell-mates defer to
    /// the next-ranked holder, of another cell, which defers to it too: without backup
    /// stewards no one ever repairs. With them the next-ranked holder takes over after
    /// `TAKEOVER_GRACES` graces of degradation.
    #[test]
    fn a_steward_dead_in_its_cell_only_is_taken_over_by_the_next_ranked_holder() {
        let class = Class::new("c", 4, 12, 4).unwrap();
        // Find an object whose ranking puts, after the lost cell's holders are left out,
        // two holders of different cells first (the lab's case); deterministic search.
        for n in 0..64 {
            let object = format!("o{n}");
            let mut h = Harness::grid(1, 4, 6, class.clone(), StoreParams::default());
            h.put_at(s(1), 0, &object, vec![n as u8; 400]);
            h.run_until(s(5));
            let m = h.meta(&object).unwrap();
            let cell_of = |h: &Harness, t: u32| h.tiles[t as usize].cell;
            let lost_cell = cell_of(&h, m.holders[0]);
            let ranked: Vec<u32> = h
                .store(m.holders[1])
                .unwrap()
                .electorate(&m)
                .into_iter()
                .filter(|&t| cell_of(&h, t) != lost_cell)
                .collect();
            let (v, r) = (ranked[0], ranked[1]);
            if cell_of(&h, v) == cell_of(&h, r) || v == 0 {
                continue;
            }
            let lost: Vec<u32> = h
                .tiles
                .iter()
                .filter(|t| t.cell == lost_cell)
                .map(|t| t.id)
                .collect();
            for t in lost {
                h.crash_at(s(10), t);
            }
            h.crash_seen_by_its_cell_at(s(10), v);
            // Declared dead at 18 s, degraded from 48 s (grace 30 s); the backup's turn at
            // 48 + 2 × 30 = 108 s.
            h.run_until(s(107));
            assert!(repaired(&h).is_empty(), "{:?}", h.records);
            h.run_until(s(200));
            let r_at: Vec<_> = repaired(&h);
            assert!(!r_at.is_empty(), "never repaired: {:?}", h.records);
            let now = h.meta(&object).unwrap();
            assert!(
                !now.holders.iter().any(|t| cell_of(&h, *t) == lost_cell)
                    && !now.holders.contains(&v),
                "{now:?}"
            );
            // The backups whose turn came at 108 s: `r` (second in its own view, which
            // still counts `v`) and `v`'s cell-mates' second (they left `v` out).
            assert!(r_at[0].0 >= s(108), "{r_at:?}");
            assert!(now.by != v && cell_of(&h, now.by) != lost_cell, "{now:?}");
            return;
        }
        panic!("no object in 64 has the lab's ranking");
    }

    fn st_id(h: &Harness, st: &Store) -> u32 {
        *h.stores().find(|(_, x)| std::ptr::eq(*x, st)).unwrap().0
    }

    #[test]
    fn a_replaced_empty_tile_receives_its_shard_again_without_waiting_for_grace() {
        // One tile per cell: the lost holder's cell has no other tile to take its shard.
        let mut h = Harness::grid(
            2,
            3,
            1,
            Class::new("c", 2, 4, 4).unwrap(),
            StoreParams::default(),
        );
        h.put_at(s(1), 0, "a", vec![1, 2, 3, 4, 5]);
        h.run_until(s(5));
        let m = h.meta("a").unwrap();
        let victim = *m.holders.iter().find(|&&t| t != 0).unwrap();
        h.crash_at(s(10), victim);
        h.restart_at(s(12), victim); // back empty before it is declared dead
        h.run_until(s(20));
        let now = h.meta("a").unwrap();
        let i = now.holders.iter().position(|&t| t == victim).unwrap();
        assert!(
            h.store(victim).unwrap().holds("a", i as u16),
            "{:?}",
            h.records
        );
        assert_eq!(h.redundancy_of("a"), Some((4, 4)));
    }

    #[test]
    fn a_read_asks_the_nearest_holders_first() {
        // Reader 0 in cell 0 of cluster 0; holders: 1 (its cell), 2 (its cluster), 3 and 4
        // (the other cluster), in an order that is not the distance order.
        let t = |id, cluster, cell| Tile { id, cluster, cell };
        let tiles = [t(0, 0, 0), t(1, 0, 0), t(2, 0, 1), t(3, 1, 2), t(4, 1, 3)];
        let class = Class::new("c", 2, 4, 3).unwrap();
        let shards = codec::encode(b"near first", &class).unwrap();
        let meta = StripeMeta {
            object: "o".into(),
            class: class.clone(),
            len: 10,
            version: 1,
            writer: 3,
            by: 3,
            holders: vec![4, 3, 2, 1],
            stamps: vec![1; 4],
            root: codec::merkle(&shards).0,
        };
        let now = Instant::from_nanos(0);
        let mut st = Store::new(tiles[0], StoreParams::default(), now);
        let mut out = Vec::new();
        for x in &tiles[1..] {
            st.member(now, *x, true, false, &mut out);
        }
        st.learn_meta(meta).unwrap();
        st.get(now, 1, "o", &class, &mut out).unwrap();
        let asked: Vec<u32> = out
            .iter()
            .filter_map(|o| match o {
                StoreOut::Send {
                    to,
                    msg: Msg::ShardGet { .. },
                } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![1, 2], "k = 2 asks, nearest first");
        // The cell neighbour has nothing: the next nearest (another cluster) is asked.
        let mut out = Vec::new();
        let none = Msg::ShardNone {
            object: "o".into(),
            index: 3,
            req: 1,
        }
        .encode();
        st.on_frame(now, 1, &none, &mut out);
        assert!(
            matches!(
                &out[..],
                [StoreOut::Send {
                    to: 3 | 4,
                    msg: Msg::ShardGet { .. }
                }]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn repair_traffic_is_rate_limited() {
        let run = |rate: u64, burst: u64| {
            let params = StoreParams {
                repair_rate: rate,
                repair_burst: burst,
                ..StoreParams::default()
            };
            let mut h = Harness::grid(2, 3, 4, Class::new("c", 4, 8, 4).unwrap(), params);
            h.put_at(s(1), 0, "a", vec![5; 2000]); // 500-byte shards
            h.run_until(s(5));
            let m = h.meta("a").unwrap();
            for &v in m.holders.iter().filter(|&&t| t != 0).take(3) {
                h.crash_at(s(10), v);
            }
            h.run_until(s(120));
            let r = repaired(&h);
            assert_eq!(r.len(), 1, "{:?}", h.records);
            assert_eq!(h.redundancy_of("a"), Some((8, 8)));
            (r[0].0, h.metrics().counters.repair_bytes_total)
        };
        let (fast, fast_bytes) = run(1 << 20, 256 << 10);
        // 500 bytes a second: three 500-byte shards take two refills.
        let (slow, slow_bytes) = run(500, 500);
        assert!(slow >= fast + s(2), "limited {slow:?}, unlimited {fast:?}");
        assert_eq!(slow_bytes, fast_bytes, "the same repair, only later");
    }

    #[test]
    fn garbage_frames_change_nothing() {
        let me = Tile {
            id: 1,
            cluster: 0,
            cell: 0,
        };
        let mut st = Store::new(me, StoreParams::default(), Instant::from_nanos(0));
        let mut out = Vec::new();
        for b in [&[][..], &[20, 1, 2], &[99], &[22, 0, 0, 0, 0, 0, 0]] {
            st.on_frame(Instant::from_nanos(1), 2, b, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(st.counters().bad_frames_total, 4);
        assert_eq!(st.shards_held(), 0);
        // A shard whose bytes do not match its hash is refused and not acknowledged.
        let class = Class::new("c", 1, 2, 1).unwrap();
        let shards = codec::encode(b"xy", &class).unwrap();
        let meta = StripeMeta {
            object: "o".into(),
            class,
            len: 2,
            version: 1,
            writer: 2,
            by: 2,
            holders: vec![1, 2],
            stamps: vec![1; 2],
            root: codec::merkle(&shards).0,
        };
        let proof = codec::merkle(&shards).1[0].clone();
        let mut bad = shards[0].clone();
        bad[0] ^= 1;
        let f = Msg::ShardPut {
            meta: meta.clone(),
            index: 0,
            proof: proof.clone(),
            bytes: bad,
        }
        .encode();
        st.on_frame(Instant::from_nanos(2), 2, &f, &mut out);
        assert!(out.is_empty() && st.shards_held() == 0);
        assert_eq!(st.counters().corrupt_shards_total, 1);
        let f = Msg::ShardPut {
            meta,
            index: 0,
            proof,
            bytes: shards[0].clone(),
        }
        .encode();
        st.on_frame(Instant::from_nanos(3), 2, &f, &mut out);
        assert_eq!(st.shards_held(), 1);
        assert!(matches!(
            &out[..],
            [StoreOut::Send {
                to: 2,
                msg: Msg::ShardPutAck { .. }
            }]
        ));
    }

    #[test]
    fn put_refuses_bad_input_and_changes_nothing() {
        let mut h = Harness::grid(
            1,
            2,
            2,
            Class::new("c", 2, 4, 2).unwrap(),
            StoreParams::default(),
        );
        h.put_at(s(1), 0, "", vec![1]);
        h.put_at(s(1), 0, "big", vec![0; 70_000]);
        // k = 2: 3,000 bytes make 1,500-byte shards, over one datagram.
        h.put_at(s(1), 0, "wide", vec![0; 3_000]);
        h.run_until(s(3));
        let why: Vec<String> = h
            .records
            .iter()
            .filter_map(|r| match r {
                Record::PutFailed { why, .. } => Some(why.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why[1].contains("too large"), "{why:?}");
        assert!(why[2].contains("over the overlay's 1290"), "{why:?}");
        assert!(h.meta("big").is_none() && h.meta("wide").is_none());
        assert_eq!(h.metrics().shards_held, 0);
        // n greater than the tiles available.
        let mut h = Harness::grid(
            1,
            2,
            2,
            Class::new("c", 2, 5, 2).unwrap(),
            StoreParams::default(),
        );
        h.put_at(s(1), 0, "x", vec![1]);
        h.run_until(s(2));
        assert!(
            matches!(&h.records[..], [Record::PutFailed { why, .. }] if why.contains("needs n = 5 distinct tiles; 4 are available")),
            "{:?}",
            h.records
        );
    }

    fn reads(h: &Harness) -> Vec<(String, bool)> {
        h.records
            .iter()
            .filter_map(|r| match r {
                Record::Read { object, ok, .. } => Some((object.clone(), *ok)),
                _ => None,
            })
            .collect()
    }

    fn grid_4_of_8() -> Harness {
        // Six cells of four tiles over two clusters; k = 4, n = 8 over four cells.
        Harness::grid(
            2,
            3,
            4,
            Class::new("c", 4, 8, 4).unwrap(),
            StoreParams::default(),
        )
    }

    #[test]
    fn a_tile_of_another_cell_reads_an_object_it_never_heard_of() {
        let mut h = grid_4_of_8();
        h.put_at(s(1), 0, "a", b"read me from anywhere".to_vec());
        h.run_until(s(5));
        let m = h.meta("a").unwrap();
        // A tile outside the writer's cell holding no shard: it knows nothing of "a".
        let reader = h
            .tiles
            .iter()
            .find(|t| t.cell != h.tiles[0].cell && !m.holders.contains(&t.id))
            .unwrap()
            .id;
        assert!(h.store(reader).unwrap().meta("a").is_none());
        h.read_by_at(s(6), reader, "a");
        h.run_until(s(8));
        assert_eq!(reads(&h), [("a".to_string(), true)], "{:?}", h.records);
        // An object no tile knows: a clear failure once the tiles asked said so, no hang.
        h.read_by_at(s(9), reader, "never-written");
        h.run_until(s(11));
        assert_eq!(
            reads(&h)[1],
            ("never-written".to_string(), false),
            "{:?}",
            h.records
        );
    }

    #[test]
    fn a_holder_back_empty_reads_the_object_after_its_shard_moved() {
        let mut h = grid_4_of_8();
        h.put_at(s(1), 0, "a", vec![42; 600]);
        h.run_until(s(5));
        let m = h.meta("a").unwrap();
        // A holder outside the writer's cell (the causal store does not bring it back).
        let victim = *m
            .holders
            .iter()
            .find(|&&t| h.tiles[t as usize].cell != h.tiles[0].cell)
            .unwrap();
        h.crash_at(s(10), victim);
        // Declared dead at 18 s, repaired after the 30 s grace.
        h.run_until(s(60));
        assert_eq!(repaired(&h).len(), 1, "{:?}", h.records);
        assert!(!h.meta("a").unwrap().holders.contains(&victim));
        h.restart_at(s(61), victim);
        h.run_until(s(62));
        assert!(h.store(victim).unwrap().meta("a").is_none());
        h.read_by_at(s(63), victim, "a");
        h.run_until(s(66));
        assert_eq!(reads(&h), [("a".to_string(), true)], "{:?}", h.records);
    }

    #[test]
    fn a_lookup_asks_three_placed_tiles_then_the_next_on_a_miss_or_silence() {
        // Reader 0 alone in its cell; tiles 1..=9 in five other cells; n = 7, so at least
        // six placed tiles besides the reader.
        let t = |id, cell| Tile {
            id,
            cluster: cell,
            cell,
        };
        let tiles: Vec<Tile> = (0..10).map(|i| t(i, i.div_ceil(2))).collect();
        let class = Class::new("c", 2, 7, 3).unwrap();
        let now = Instant::from_nanos(0);
        let mut st = Store::new(tiles[0], StoreParams::default(), now);
        let mut out = Vec::new();
        for x in &tiles[1..] {
            st.member(now, *x, true, false, &mut out);
        }
        let asks = |out: &[StoreOut]| -> Vec<(u32, u64)> {
            out.iter()
                .filter_map(|o| match o {
                    StoreOut::Send {
                        to,
                        msg: Msg::MetaGet { req, .. },
                    } => Some((*to, *req)),
                    _ => None,
                })
                .collect()
        };
        st.get(now, 9, "o", &class, &mut out).unwrap();
        let first = asks(&out);
        let placed = placement::place(0, "o", &class, &tiles).unwrap();
        let placed: Vec<u32> = placed.into_iter().filter(|&x| x != 0).collect();
        assert_eq!(first.len(), LOOKUP_FANOUT, "{out:?}");
        assert!(
            first.iter().all(|(x, _)| placed.contains(x)),
            "{first:?} {placed:?}"
        );
        let req = first[0].1;
        // The first says it knows nothing: one more is asked at once.
        let mut out = Vec::new();
        let none = Msg::ShardNone {
            object: "o".into(),
            index: NO_META,
            req,
        };
        st.on_frame(now, first[0].0, &none.encode(), &mut out);
        let second = asks(&out);
        assert_eq!(second.len(), 1, "{out:?}");
        assert!(!first.iter().any(|f| f.0 == second[0].0));
        // The other two stay silent past the timeout: two more are asked.
        let mut out = Vec::new();
        st.tick(now + s(3), &mut out);
        let third = asks(&out);
        assert_eq!(third.len(), 2, "{out:?}");
        // One answers with the metadata: the read fetches k shards from its holders.
        let shards = codec::encode(b"found", &class).unwrap();
        let meta = StripeMeta {
            object: "o".into(),
            class: class.clone(),
            len: 5,
            version: 1,
            writer: 5,
            by: 5,
            holders: vec![1, 3, 5, 6, 7, 8, 9],
            stamps: vec![1; 7],
            root: codec::merkle(&shards).0,
        };
        // A metadata from a tile not asked is not taken.
        let mut out = Vec::new();
        let m = Msg::Meta { meta: meta.clone() }.encode();
        let stranger = (1..10).find(|x| {
            ![
                first[0].0,
                first[1].0,
                first[2].0,
                second[0].0,
                third[0].0,
                third[1].0,
            ]
            .contains(x)
        });
        if let Some(x) = stranger {
            st.on_frame(now + s(3), x, &m, &mut out);
            assert!(st.meta("o").is_none());
        }
        st.on_frame(now + s(3), third[0].0, &m, &mut out);
        assert_eq!(st.meta("o"), Some(&meta));
        let gets = out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    StoreOut::Send {
                        msg: Msg::ShardGet { .. },
                        ..
                    }
                )
            })
            .count();
        assert_eq!(gets, 2, "{out:?}");
        // A tile asked for metadata answers with what it knows, or says it knows none.
        let mut out = Vec::new();
        let ask = |o: &str| {
            Msg::MetaGet {
                object: o.into(),
                req: 4,
            }
            .encode()
        };
        st.on_frame(now, 2, &ask("o"), &mut out);
        st.on_frame(now, 2, &ask("p"), &mut out);
        assert_eq!(
            out,
            [
                StoreOut::Send {
                    to: 2,
                    msg: Msg::Meta { meta }
                },
                StoreOut::Send {
                    to: 2,
                    msg: Msg::ShardNone {
                        object: "p".into(),
                        index: NO_META,
                        req: 4
                    }
                },
            ]
        );
        // Nobody left to ask: the read fails, named, nothing held.
        let mut st = Store::new(tiles[0], StoreParams::default(), now);
        let mut out = Vec::new();
        st.get(now, 3, "o", &class, &mut out).unwrap();
        assert_eq!(
            out,
            [StoreOut::Read {
                request: 3,
                result: Err(StoreError::NotFound {
                    object: "o".into(),
                    asked: 0
                })
            }]
        );
        assert!(st.get(now, 3, "", &class, &mut out).is_err());
    }
}
