//! The store's frames, wire payload kinds 20–27 (assigned to issue 16): one kind byte,
//! then the body, little-endian, every length checked. Decoding garbage is an error,
//! never a panic, and allocates no more than the input's length.
use super::codec::ShardHash;
use super::{Class, StoreError};

pub const KIND_SHARD_PUT: u8 = 20;
pub const KIND_SHARD_PUT_ACK: u8 = 21;
pub const KIND_SHARD_GET: u8 = 22;
pub const KIND_SHARD_DATA: u8 = 23;
pub const KIND_SHARD_NONE: u8 = 24;
pub const KIND_META: u8 = 25;
pub const KIND_LOST: u8 = 26;
pub const KIND_META_GET: u8 = 27;
/// The first and last kinds this module owns.
pub const KINDS: std::ops::RangeInclusive<u8> = 20..=27;

/// Longest object name, in bytes.
pub const MAX_NAME: usize = 200;
/// The index a [`Msg::ShardNone`] carries when it answers a [`Msg::MetaGet`]: the asked
/// tile knows no metadata of the object. No shard has it (n ≤ 32,768).
pub const NO_META: u16 = u16::MAX;
/// Longest Merkle proof (n ≤ 32,768 = 2^15).
pub const MAX_PROOF: usize = 15;

/// A stripe's metadata: what the causal store holds under `store/<object>` and every
/// holder keeps beside its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeMeta {
    pub object: String,
    pub class: Class,
    /// The object's length in bytes.
    pub len: u64,
    /// Raised by every repair; the higher (version, by) wins.
    pub version: u64,
    /// The tile that wrote the object (it keeps the metadata even holding no shard).
    pub writer: u32,
    /// The tile that made this version (the writer, or a repairer).
    pub by: u32,
    /// The tile holding each shard index (`n` entries). Normally distinct; a merge of two
    /// concurrent repairs can name one tile twice, and the lower slot then counts as
    /// missing until a repair moves it ([`StripeMeta::duplicate`]).
    pub holders: Vec<u32>,
    /// Per index, the version at which its holder was set (a put sets every slot to its
    /// version, a repair the slots it re-placed). Two metadata of one stripe merge slot by
    /// slot ([`StripeMeta::merge`]).
    pub stamps: Vec<u64>,
    /// The Merkle root over the `n` shards ([`super::codec::merkle`]).
    pub root: ShardHash,
}

impl StripeMeta {
    /// The order between two versions of one stripe's metadata.
    pub fn rank(&self) -> (u64, u32) {
        (self.version, self.by)
    }
    /// The merge of two metadata of one object: the same stripe (same root, class,
    /// length and writer) merges slot by slot — each index keeps the holder with the
    /// higher (stamp, holder) — so two repairs made from different views, each re-placing
    /// the indexes it found missing, both survive, in any order of arrival (a
    /// join-semilattice: commutative, associative, idempotent). A different stripe (an
    /// object written again) replaces the other whole, by [`StripeMeta::rank`].
    pub fn merge(&self, other: &StripeMeta) -> StripeMeta {
        let same = self.object == other.object
            && self.root == other.root
            && self.class == other.class
            && self.len == other.len
            && self.writer == other.writer
            && self.holders.len() == other.holders.len()
            && self.stamps.len() == other.stamps.len();
        if !same {
            return if other.rank() > self.rank() {
                other.clone()
            } else {
                self.clone()
            };
        }
        let mut m = if other.rank() > self.rank() {
            other.clone()
        } else {
            self.clone()
        };
        for i in 0..m.holders.len() {
            let (a, b) = (
                (self.stamps[i], self.holders[i]),
                (other.stamps[i], other.holders[i]),
            );
            let (s, h) = a.max(b);
            m.stamps[i] = s;
            m.holders[i] = h;
        }
        m
    }

    /// Whether index `i`'s holder is also named, at a higher (stamp, index), for another
    /// index: then `i` counts as missing (a stripe spreads over n distinct tiles).
    pub fn duplicate(&self, i: usize) -> bool {
        let h = self.holders[i];
        self.holders
            .iter()
            .enumerate()
            .any(|(j, &g)| j != i && g == h && (self.stamps[j], j) > (self.stamps[i], i))
    }

    /// Checks a metadata that came from outside.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.class.validate()?;
        let n = self.class.n as usize;
        if self.object.is_empty() || self.object.len() > MAX_NAME {
            return Err(StoreError::BadMetadata(format!(
                "object name of {} bytes (1..={MAX_NAME})",
                self.object.len()
            )));
        }
        if self.holders.len() != n {
            return Err(StoreError::BadMetadata(format!(
                "{} holders for n = {n}",
                self.holders.len()
            )));
        }
        if self.stamps.len() != n {
            return Err(StoreError::BadMetadata(format!(
                "{} slot stamps for n = {n}",
                self.stamps.len()
            )));
        }
        if self
            .stamps
            .iter()
            .any(|&s| s > self.version || s > u64::from(u32::MAX))
        {
            return Err(StoreError::BadMetadata(
                "a slot stamped above the metadata's version or 2^32".into(),
            ));
        }
        Ok(())
    }
}

/// One store frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Hold shard `index` of the stripe described by `meta` (a put, or a repair).
    ShardPut {
        meta: StripeMeta,
        index: u16,
        proof: Vec<ShardHash>,
        bytes: Vec<u8>,
    },
    /// The shard is held.
    ShardPutAck {
        object: String,
        version: u64,
        index: u16,
    },
    /// Send me shard `index` (a read or a repair, `req` its id).
    ShardGet {
        object: String,
        index: u16,
        req: u64,
    },
    /// The shard asked for.
    ShardData {
        object: String,
        index: u16,
        req: u64,
        proof: Vec<ShardHash>,
        bytes: Vec<u8>,
    },
    /// I do not hold that shard; with index [`NO_META`], the answer to a
    /// [`Msg::MetaGet`]: I know no metadata of this object.
    ShardNone {
        object: String,
        index: u16,
        req: u64,
    },
    /// A newer metadata (after a repair) for every holder.
    Meta { meta: StripeMeta },
    /// The sender reported this object lost (fewer than k shards survive): the other
    /// holders stop repairing it and do not report it again.
    Lost { object: String },
    /// Send me your metadata of `object` (a read at a tile that knows none; `req` its
    /// id): answered by [`Msg::Meta`], or by [`Msg::ShardNone`] with index [`NO_META`].
    MetaGet { object: String, req: u64 },
}

struct W(Vec<u8>);
impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend(v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend(v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend(v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend(b);
    }
    fn meta(&mut self, m: &StripeMeta) {
        self.bytes(m.object.as_bytes());
        self.bytes(m.class.name.as_bytes());
        self.u16(m.class.k);
        self.u16(m.class.n);
        self.u16(m.class.cells);
        self.u64(m.len);
        self.u64(m.version);
        self.u32(m.writer);
        self.u32(m.by);
        for h in &m.holders {
            self.u32(*h);
        }
        for s in &m.stamps {
            // Four bytes on the wire ([`StripeMeta::validate`] keeps stamps below 2³²).
            self.u32(*s as u32);
        }
        self.0.extend(m.root);
    }
    fn proof(&mut self, p: &[ShardHash]) {
        self.u8(p.len() as u8);
        for h in p {
            self.0.extend(h);
        }
    }
}

struct R<'a>(&'a [u8]);
impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::BadFrame(format!(
                "truncated: {n} bytes wanted, {} left",
                self.0.len()
            )));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, StoreError> {
        let b = self.bytes()?;
        if b.len() > MAX_NAME {
            return Err(StoreError::BadFrame(format!("name of {} bytes", b.len())));
        }
        String::from_utf8(b).map_err(|_| StoreError::BadFrame("name not UTF-8".into()))
    }
    fn proof(&mut self) -> Result<Vec<ShardHash>, StoreError> {
        let n = self.u8()? as usize;
        if n > MAX_PROOF {
            return Err(StoreError::BadFrame(format!("a proof of {n} hashes")));
        }
        (0..n)
            .map(|_| Ok(self.take(32)?.try_into().expect("32 bytes")))
            .collect()
    }
    fn meta(&mut self) -> Result<StripeMeta, StoreError> {
        let object = self.string()?;
        let name = self.string()?;
        let (k, n, cells) = (self.u16()?, self.u16()?, self.u16()?);
        let class = Class::new(&name, k, n, cells)?;
        let (len, version, writer, by) = (self.u64()?, self.u64()?, self.u32()?, self.u32()?);
        // Bound the allocation by what the frame can hold before reading n entries.
        if self.0.len() < n as usize * 8 + 32 {
            return Err(StoreError::BadFrame(format!(
                "metadata for n = {n} truncated"
            )));
        }
        let holders = (0..n).map(|_| self.u32()).collect::<Result<_, _>>()?;
        let stamps = (0..n)
            .map(|_| self.u32().map(u64::from))
            .collect::<Result<_, _>>()?;
        let root = self.take(32)?.try_into().expect("32 bytes");
        let m = StripeMeta {
            object,
            class,
            len,
            version,
            writer,
            by,
            holders,
            stamps,
            root,
        };
        m.validate()?;
        Ok(m)
    }
}

impl Msg {
    pub fn kind(&self) -> u8 {
        match self {
            Msg::ShardPut { .. } => KIND_SHARD_PUT,
            Msg::ShardPutAck { .. } => KIND_SHARD_PUT_ACK,
            Msg::ShardGet { .. } => KIND_SHARD_GET,
            Msg::ShardData { .. } => KIND_SHARD_DATA,
            Msg::ShardNone { .. } => KIND_SHARD_NONE,
            Msg::Meta { .. } => KIND_META,
            Msg::Lost { .. } => KIND_LOST,
            Msg::MetaGet { .. } => KIND_META_GET,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::new());
        w.u8(self.kind());
        match self {
            Msg::ShardPut {
                meta,
                index,
                proof,
                bytes,
            } => {
                w.meta(meta);
                w.u16(*index);
                w.proof(proof);
                w.bytes(bytes);
            }
            Msg::ShardPutAck {
                object,
                version,
                index,
            } => {
                w.bytes(object.as_bytes());
                w.u64(*version);
                w.u16(*index);
            }
            Msg::ShardGet { object, index, req } | Msg::ShardNone { object, index, req } => {
                w.bytes(object.as_bytes());
                w.u16(*index);
                w.u64(*req);
            }
            Msg::ShardData {
                object,
                index,
                req,
                proof,
                bytes,
            } => {
                w.bytes(object.as_bytes());
                w.u16(*index);
                w.u64(*req);
                w.proof(proof);
                w.bytes(bytes);
            }
            Msg::Meta { meta } => w.meta(meta),
            Msg::Lost { object } => w.bytes(object.as_bytes()),
            Msg::MetaGet { object, req } => {
                w.bytes(object.as_bytes());
                w.u64(*req);
            }
        }
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<Msg, StoreError> {
        let mut r = R(b);
        let kind = r.u8()?;
        let m = match kind {
            KIND_SHARD_PUT => {
                let meta = r.meta()?;
                let index = r.u16()?;
                if index >= meta.class.n {
                    return Err(StoreError::BadFrame(format!("shard index {index} ≥ n")));
                }
                Msg::ShardPut {
                    meta,
                    index,
                    proof: r.proof()?,
                    bytes: r.bytes()?,
                }
            }
            KIND_SHARD_PUT_ACK => Msg::ShardPutAck {
                object: r.string()?,
                version: r.u64()?,
                index: r.u16()?,
            },
            KIND_SHARD_GET => Msg::ShardGet {
                object: r.string()?,
                index: r.u16()?,
                req: r.u64()?,
            },
            KIND_SHARD_NONE => Msg::ShardNone {
                object: r.string()?,
                index: r.u16()?,
                req: r.u64()?,
            },
            KIND_SHARD_DATA => Msg::ShardData {
                object: r.string()?,
                index: r.u16()?,
                req: r.u64()?,
                proof: r.proof()?,
                bytes: r.bytes()?,
            },
            KIND_META => Msg::Meta { meta: r.meta()? },
            KIND_LOST => Msg::Lost {
                object: r.string()?,
            },
            KIND_META_GET => Msg::MetaGet {
                object: r.string()?,
                req: r.u64()?,
            },
            k => return Err(StoreError::BadFrame(format!("unknown store kind {k}"))),
        };
        if !r.0.is_empty() {
            return Err(StoreError::BadFrame(format!(
                "{} trailing bytes",
                r.0.len()
            )));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> StripeMeta {
        StripeMeta {
            object: "o".into(),
            class: Class::new("c", 2, 4, 2).unwrap(),
            len: 10,
            version: 3,
            writer: 1,
            by: 2,
            holders: vec![5, 6, 7, 8],
            stamps: vec![1, 3, 1, 2],
            root: [1; 32],
        }
    }

    #[test]
    fn concurrent_repairs_merge_slot_by_slot_in_any_order() {
        let base = meta();
        // Two repairs from the same base, each re-placing a different index.
        let mut a = base.clone();
        a.version = 4;
        a.by = 5;
        a.holders[0] = 9;
        a.stamps[0] = 4;
        let mut b = base.clone();
        b.version = 4;
        b.by = 6;
        b.holders[2] = 10;
        b.stamps[2] = 4;
        let ab = a.merge(&b);
        assert_eq!(ab, b.merge(&a), "commutative");
        assert_eq!(ab.holders, vec![9, 6, 10, 8], "both repairs kept");
        assert_eq!(ab.merge(&ab), ab, "idempotent");
        assert_eq!(ab.merge(&base), ab, "an older view changes nothing");
        let c = {
            let mut c = base.clone();
            c.version = 5;
            c.holders[3] = 11;
            c.stamps[3] = 5;
            c
        };
        assert_eq!(ab.merge(&c).merge(&a), a.merge(&c.merge(&b)), "associative");
        // The same index re-placed twice: the higher (stamp, holder) wins everywhere.
        let mut d = base.clone();
        d.version = 4;
        d.holders[0] = 12;
        d.stamps[0] = 4;
        assert_eq!(a.merge(&d).holders[0], 12);
        assert_eq!(d.merge(&a).holders[0], 12);
        // A tile named twice: the lower slot is the duplicate.
        let mut e = base.clone();
        e.holders[0] = 8;
        e.stamps[0] = 3;
        assert!(
            e.duplicate(3) && !e.duplicate(0),
            "slot 0 (stamp 3) beats slot 3 (stamp 2)"
        );
        // A different stripe (the object written again) replaces by rank, whole.
        let mut f = base.clone();
        f.root = [2; 32];
        f.version = 9;
        assert_eq!(a.merge(&f), f);
        assert_eq!(f.merge(&a), f);
    }

    #[test]
    fn every_frame_round_trips() {
        let all = [
            Msg::ShardPut {
                meta: meta(),
                index: 3,
                proof: vec![[3; 32], [4; 32]],
                bytes: vec![1, 2, 3],
            },
            Msg::ShardPutAck {
                object: "o".into(),
                version: 9,
                index: 1,
            },
            Msg::ShardGet {
                object: "o".into(),
                index: 1,
                req: 77,
            },
            Msg::ShardData {
                object: "o".into(),
                index: 1,
                req: 77,
                proof: vec![[5; 32]],
                bytes: vec![9; 40],
            },
            Msg::ShardNone {
                object: "o".into(),
                index: 2,
                req: 5,
            },
            Msg::Meta { meta: meta() },
            Msg::Lost { object: "o".into() },
            Msg::MetaGet {
                object: "o".into(),
                req: 12,
            },
        ];
        for m in all {
            assert!(KINDS.contains(&m.kind()));
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn bad_frames_are_clear_errors() {
        let mut b = Msg::ShardPut {
            meta: meta(),
            index: 3,
            proof: vec![],
            bytes: vec![1],
        }
        .encode();
        b.push(0);
        assert_eq!(
            Msg::decode(&b),
            Err(StoreError::BadFrame("1 trailing bytes".into()))
        );
        assert!(Msg::decode(&[28])
            .unwrap_err()
            .to_string()
            .contains("unknown store kind 28"));
        assert!(Msg::decode(&[KIND_META_GET, 1, 0, 0, 0, b'o'])
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let mut m = meta();
        m.stamps[1] = 4;
        assert!(
            Msg::decode(&Msg::Meta { meta: m }.encode()).is_err(),
            "a slot stamped above the version"
        );
        let mut m = meta();
        m.stamps.pop();
        assert!(
            Msg::decode(&Msg::Meta { meta: m }.encode()).is_err(),
            "n − 1 stamps"
        );
        let b = Msg::ShardPut {
            meta: meta(),
            index: 4,
            proof: vec![],
            bytes: vec![],
        }
        .encode();
        assert!(Msg::decode(&b).is_err(), "index ≥ n");
    }

    proptest! {
        /// Garbage and truncated frames never panic.
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<prop::sample::Index>()) {
            let _ = Msg::decode(&b);
            let good = Msg::ShardPut { meta: meta(), index: 1, proof: vec![[7; 32]; 2], bytes: b.clone() }.encode();
            let _ = Msg::decode(&good[..cut.index(good.len())]);
        }
    }
}
