//! The erasure-coded object store (issue 16): objects cut into stripes of `k` data and
//! `n − k` parity shards, placed on distinct tiles across failure domains, read back from
//! any `k` shards (nearest first, each checked against its hash), and repaired when a
//! holder dies. Off unless a node's configuration enables it.
//!
//! Rooms: [`codec`] (encode, Merkle root and proofs, verify and reconstruct),
//! [`placement`] (which tiles hold which shard, and the replacement of a lost one),
//! [`msg`] (the shard frames, store kinds 20–27, all of those assigned), [`machine`] (the
//! sans-IO store of one tile: puts, reads, repair, counters), [`metrics`] (its Prometheus
//! series), [`harness`] and [`scenarios`] (many stores in virtual time; the durable and
//! overload scenarios).
//!
//! Composed into [`crate::Node`] by [`tile`] when the topology has a `store:` section
//! ([`config`]): frames on the overlay as wire kind 20, liveness from the node (cell-mates
//! by membership, other cells by route, silent holders marked unresponsive), metadata in
//! the causal store. The [`harness`] (an oracle membership) remains for the property-style
//! scenarios of the machine alone; `sim/tests/store.rs` and
//! `sim/examples/store_figures.rs` run the composed store.
//!
//! # The codec, picked on figures
//!
//! `cargo run --release -p lightcone-core --example rs_bench` (k = 20, n = 60; reconstruct
//! from the 20 last parity shards, every data shard lost; median MiB/s of the object;
//! this 2-core machine, shared, 2026-12-05):
//!
//! ```text
//! crate                    object   encode MiB/s reconstruct MiB/s
//! reed-solomon-simd 3       1 KiB          420.8               3.3
//! rs-erasure 6 (cached)     1 KiB          133.2             235.8
//! rs-erasure 6 (cold)       1 KiB          133.2              36.8
//! reed-solomon-simd 3      64 KiB          861.2             115.3
//! rs-erasure 6 (cached)    64 KiB          972.2            1830.4
//! rs-erasure 6 (cold)      64 KiB          980.8            1085.5
//! reed-solomon-simd 3       1 MiB          944.7             164.7
//! rs-erasure 6 (cached)     1 MiB          720.0            1873.8
//! rs-erasure 6 (cold)       1 MiB          646.2            1406.4
//! ```
//!
//! `reed-solomon-erasure` (GF(2^8), `simd-accel`) reconstructs 7–11× faster ("cold": a
//! decode matrix not in its cache, as when stripes lose different shards); `reed-solomon-simd`
//! (GF(2^16), FFT-based) encodes 3× faster at 1 KiB and 1.5× at 1 MiB, and its
//! reconstruct has a fixed cost of ~0.3 ms (3.3 MiB/s at 1 KiB). Picked:
//! **reed-solomon-simd**, because `reed-solomon-erasure` with `simd-accel` pulls `libc`
//! (and `getrandom` through `lru`/`ahash`) into the core, which `tests/check-core-deps.sh`
//! forbids — it could only sit behind a codec trait implemented in each driver — while
//! reed-solomon-simd has no `libc` on x86_64 (cpufeatures, fixedbitset, once_cell). Its
//! slower reconstruct costs ~0.3 ms per 1 KiB stripe, negligible against a repair budget of
//! minutes; a stripe is written once and encoded on every put, read whole mostly from data
//! shards (no decode). GF(2^16) also lifts the 256-shard ceiling of GF(2^8).
pub mod codec;
pub mod config;
pub mod harness;
pub mod machine;
pub mod metrics;
pub mod msg;
pub mod placement;
pub mod scenarios;
pub mod tile;

/// An object class: its stripe shape and how many cells its shards spread over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Class {
    pub name: String,
    /// Data shards (≥ 1).
    pub k: u16,
    /// All shards (> k). The spec's metadata class is k = 20, n = 60.
    pub n: u16,
    /// Cells the shards spread over (≥ 1); losing one whole cell then loses at most
    /// ⌈n / cells⌉ shards of a stripe ([`placement::per_cell_cap`]).
    pub cells: u16,
}

impl Class {
    /// A validated class: k ≥ 1, n > k, n ≤ 32,768 (the codec's limit), cells ≥ 1.
    pub fn new(name: &str, k: u16, n: u16, cells: u16) -> Result<Class, StoreError> {
        let bad = |why: String| {
            Err(StoreError::BadClass {
                class: name.into(),
                why,
            })
        };
        if k == 0 {
            return bad("k must be at least 1".into());
        }
        if n <= k {
            return bad(format!("n ({n}) must exceed k ({k})"));
        }
        if n > 32_768 {
            return bad(format!("n ({n}) exceeds the codec's 32768 shards"));
        }
        if cells == 0 {
            return bad("cells must be at least 1".into());
        }
        Ok(Class {
            name: name.into(),
            k,
            n,
            cells,
        })
    }

    /// The spec's class: k = 20, n = 60 over `cells` cells.
    pub fn spec(cells: u16) -> Class {
        Class {
            name: "spec".into(),
            k: 20,
            n: 60,
            cells: cells.max(1),
        }
    }

    /// Check a class that came from outside (a config, a frame).
    pub fn validate(&self) -> Result<(), StoreError> {
        Class::new(&self.name, self.k, self.n, self.cells).map(|_| ())
    }
}

/// Why the store refused or could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("object class {class:?}: {why}")]
    BadClass { class: String, why: String },
    #[error("object class {class:?} needs n = {n} distinct tiles; {available} are available across the domains")]
    NotEnoughTiles {
        class: String,
        n: usize,
        available: usize,
    },
    #[error("only {have} good shards of the {need} needed to reconstruct")]
    TooFewShards { have: usize, need: usize },
    #[error("bad stripe metadata: {0}")]
    BadMetadata(String),
    #[error("erasure codec: {0}")]
    Codec(String),
    #[error("object too large: {len} bytes over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("a shard frame of this object would be {frame} bytes, over the overlay's {max}: use a smaller object or a larger k")]
    FrameTooLarge { frame: usize, max: usize },
    #[error("bad store frame: {0}")]
    BadFrame(String),
    /// A read's lookup found no tile that knows the object (nothing changed).
    #[error("unknown object {object:?}: none of the {asked} tiles asked knows it")]
    NotFound { object: String, asked: usize },
    /// Too much in flight; nothing changed, try again later.
    #[error("store busy: {0}")]
    Busy(String),
    #[error("store configuration: {0}")]
    BadConfig(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_validated_with_clear_errors() {
        assert!(Class::new("a", 20, 60, 4).is_ok());
        let e = Class::new("a", 0, 60, 4).unwrap_err();
        assert_eq!(e.to_string(), "object class \"a\": k must be at least 1");
        let e = Class::new("a", 20, 20, 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "object class \"a\": n (20) must exceed k (20)"
        );
        assert!(Class::new("a", 20, 40_000, 4).is_err());
        assert!(Class::new("a", 2, 3, 0).is_err());
        assert!(Class {
            name: "x".into(),
            k: 3,
            n: 2,
            cells: 1
        }
        .validate()
        .is_err());
    }
}
