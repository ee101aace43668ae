//! Stripes: an object cut into `k` data shards plus `n − k` parity shards
//! (Reed–Solomon over GF(2^16), `reed-solomon-simd`), each shard with its SHA-256.
//! Pure functions; the figures that picked the codec are in the module doc of
//! [`super`].
//!
//! The metadata carries one hash for all `n` shards, the root of a SHA-256 Merkle tree
//! over them (leaves `H(0x00 ‖ shard)`, nodes `H(0x01 ‖ left ‖ right)`, as RFC 6962
//! separates them; the leaves padded to a power of two with `H(0x02)`), and each shard
//! travels with its proof (⌈log₂ n⌉ hashes: 192 bytes at n = 60). So the metadata of a
//! k = 20, n = 60 stripe is ~330 bytes instead of 60 × 32 hashes, and a shard frame fits
//! the overlay's 1400-byte datagram.
use sha2::{Digest, Sha256};

use super::{Class, StoreError};

/// A shard's SHA-256.
pub type ShardHash = [u8; 32];

/// The hash a shard is checked against before it is used.
pub fn shard_hash(bytes: &[u8]) -> ShardHash {
    Sha256::digest(bytes).into()
}

fn leaf(bytes: &[u8]) -> ShardHash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

fn node(l: &ShardHash, r: &ShardHash) -> ShardHash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

fn pad() -> ShardHash {
    Sha256::digest([2u8]).into()
}

/// The Merkle root over `shards` and each shard's proof (siblings, leaf level first).
pub fn merkle(shards: &[Vec<u8>]) -> (ShardHash, Vec<Vec<ShardHash>>) {
    let width = shards.len().next_power_of_two();
    let mut level: Vec<ShardHash> = shards.iter().map(|s| leaf(s)).collect();
    level.resize(width, pad());
    let mut proofs = vec![Vec::new(); shards.len()];
    let mut w = width;
    while w > 1 {
        for (i, p) in proofs.iter_mut().enumerate() {
            let pos = i >> p.len();
            p.push(level[pos ^ 1]);
        }
        level = level.chunks(2).map(|c| node(&c[0], &c[1])).collect();
        w /= 2;
    }
    (level[0], proofs)
}

/// Whether `bytes` is shard `index` of the `n`-shard stripe whose Merkle root is `root`.
pub fn verify(root: &ShardHash, n: usize, index: usize, bytes: &[u8], proof: &[ShardHash]) -> bool {
    if index >= n || proof.len() != n.next_power_of_two().trailing_zeros() as usize {
        return false;
    }
    let mut h = leaf(bytes);
    let mut pos = index;
    for sib in proof {
        h = if pos & 1 == 0 {
            node(&h, sib)
        } else {
            node(sib, &h)
        };
        pos >>= 1;
    }
    &h == root
}

/// The length of every shard of an object of `len` bytes at `k` data shards: the object
/// split evenly, rounded up to an even number (the codec works on 16-bit symbols), never 0.
pub fn shard_len(len: usize, k: usize) -> usize {
    let l = len.div_ceil(k.max(1)).max(2);
    l + l % 2
}

/// The object's `n` shards: data shards `0..k` (the object, zero-padded), then parity.
pub fn encode(object: &[u8], class: &Class) -> Result<Vec<Vec<u8>>, StoreError> {
    let (k, n) = (class.k as usize, class.n as usize);
    let len = shard_len(object.len(), k);
    let mut shards: Vec<Vec<u8>> = (0..k)
        .map(|i| {
            let mut s = vec![0u8; len];
            let lo = (i * len).min(object.len());
            let hi = ((i + 1) * len).min(object.len());
            s[..hi - lo].copy_from_slice(&object[lo..hi]);
            s
        })
        .collect();
    let parity = reed_solomon_simd::encode(k, n - k, &shards)
        .map_err(|e| StoreError::Codec(e.to_string()))?;
    shards.extend(parity);
    Ok(shards)
}

/// What a reconstruction used and refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The object's bytes.
    pub object: Vec<u8>,
    /// Shard indexes offered whose bytes did not match their hash (not used).
    pub corrupt: Vec<usize>,
}

/// A shard offered to [`decode`]: its index, bytes and Merkle proof.
pub type Offered<'a> = (usize, &'a [u8], &'a [ShardHash]);

/// Rebuild the object of `object_len` bytes from the shards offered.
/// Every shard is checked against the stripe's Merkle `root` first; a shard that fails (or
/// has the wrong length, or an index ≥ n) is not used and is listed in
/// [`Decoded::corrupt`]. Fails with [`StoreError::TooFewShards`] if fewer than `k` good
/// shards remain.
pub fn decode(
    class: &Class,
    object_len: usize,
    root: &ShardHash,
    offered: &[Offered<'_>],
) -> Result<Decoded, StoreError> {
    let (k, n) = (class.k as usize, class.n as usize);
    let len = shard_len(object_len, k);
    let mut good: std::collections::BTreeMap<usize, &[u8]> = Default::default();
    let mut corrupt = Vec::new();
    for &(i, bytes, proof) in offered {
        if bytes.len() != len || !verify(root, n, i, bytes, proof) {
            corrupt.push(i);
        } else {
            good.entry(i).or_insert(bytes);
        }
    }
    if good.len() < k {
        return Err(StoreError::TooFewShards {
            have: good.len(),
            need: k,
        });
    }
    let mut data: Vec<Option<Vec<u8>>> = (0..k).map(|i| good.get(&i).map(|b| b.to_vec())).collect();
    if data.iter().any(Option::is_none) {
        // Any k good shards suffice: give the codec the data shards we have and parity
        // up to k in all (more is wasted work).
        let have_data = data.iter().filter(|d| d.is_some()).count();
        let parity: Vec<(usize, &[u8])> = good
            .range(k..)
            .take(k - have_data)
            .map(|(&i, &b)| (i - k, b))
            .collect();
        let originals = good.range(..k).map(|(&i, &b)| (i, b));
        let restored = reed_solomon_simd::decode(k, n - k, originals, parity)
            .map_err(|e| StoreError::Codec(e.to_string()))?;
        for (i, slot) in data.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = restored.get(&i).cloned();
            }
        }
    }
    let mut object = Vec::with_capacity(k * len);
    for d in data {
        object.extend(d.ok_or_else(|| StoreError::Codec("a data shard was not restored".into()))?);
    }
    object.truncate(object_len);
    Ok(Decoded { object, corrupt })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn class(k: u16, n: u16) -> Class {
        Class::new("t", k, n, 1).unwrap()
    }

    #[test]
    fn encodes_n_shards_of_one_length_and_round_trips() {
        let c = class(20, 60);
        let obj: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let shards = encode(&obj, &c).unwrap();
        assert_eq!(shards.len(), 60);
        assert!(shards.iter().all(|s| s.len() == shard_len(1000, 20)));
        let (root, proofs) = merkle(&shards);
        assert!(proofs.iter().all(|p| p.len() == 6), "⌈log2 60⌉ = 6 hashes");
        // Only the last 20 parity shards.
        let offered: Vec<Offered<'_>> = (40..60)
            .map(|i| (i, &shards[i][..], &proofs[i][..]))
            .collect();
        let d = decode(&c, obj.len(), &root, &offered).unwrap();
        assert_eq!(d.object, obj);
        assert!(d.corrupt.is_empty());
    }

    #[test]
    fn k_minus_one_good_shards_is_an_error_not_a_guess() {
        let c = class(4, 6);
        let shards = encode(b"hello, stripes", &c).unwrap();
        let (root, proofs) = merkle(&shards);
        let offered: Vec<Offered<'_>> = (0..3)
            .map(|i| (i, &shards[i][..], &proofs[i][..]))
            .collect();
        assert_eq!(
            decode(&c, 14, &root, &offered),
            Err(StoreError::TooFewShards { have: 3, need: 4 })
        );
    }

    #[test]
    fn a_proof_binds_the_shard_to_its_index() {
        let c = class(3, 7);
        let shards = encode(b"bind me to my place", &c).unwrap();
        let (root, proofs) = merkle(&shards);
        for i in 0..7 {
            assert!(verify(&root, 7, i, &shards[i], &proofs[i]));
            assert!(
                !verify(&root, 7, (i + 1) % 7, &shards[i], &proofs[i]),
                "shard {i} at another index"
            );
            assert!(
                !verify(&root, 7, i, &shards[i], &proofs[i][1..]),
                "a short proof"
            );
        }
        assert!(!verify(&root, 7, 7, &shards[0], &proofs[0]), "index ≥ n");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any ≤ n − k lost shards: the original bytes come back.
        #[test]
        fn any_n_minus_k_losses_reconstruct(
            k in 1u16..24, extra in 1u16..40, len in 0usize..3000, seed in any::<u64>(),
            lost_frac in 0.0f64..=1.0,
        ) {
            let n = k + extra;
            let c = class(k, n);
            let obj: Vec<u8> = (0..len).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 13) as u8).collect();
            let shards = encode(&obj, &c).unwrap();
            let (root, proofs) = merkle(&shards);
            // A seeded choice of up to n − k shards to lose.
            let lose = ((extra as f64) * lost_frac).round() as usize;
            let mut idx: Vec<usize> = (0..n as usize).collect();
            let mut x = seed | 1;
            for i in (1..idx.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                idx.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let kept: Vec<Offered<'_>> = idx[lose..].iter().map(|&i| (i, &shards[i][..], &proofs[i][..])).collect();
            let d = decode(&c, len, &root, &kept).unwrap();
            prop_assert_eq!(d.object, obj);
        }

        /// A corrupted shard is detected by its hash and not used: with exactly k shards
        /// offered and one corrupted, decoding refuses; with a spare good shard it succeeds
        /// and names the corrupted index.
        #[test]
        fn a_corrupt_shard_is_detected_and_not_used(
            k in 1u16..16, extra in 1u16..20, len in 1usize..2000, which in any::<prop::sample::Index>(),
            byte in any::<prop::sample::Index>(), flip in 1u8..=255,
        ) {
            let n = k + extra;
            let c = class(k, n);
            let obj: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut shards = encode(&obj, &c).unwrap();
            let (root, proofs) = merkle(&shards);
            let bad = which.index(k as usize + 1);
            let b = byte.index(shards[bad].len());
            shards[bad][b] ^= flip;
            let exactly_k: Vec<Offered<'_>> = (0..k as usize).map(|i| (i, &shards[i][..], &proofs[i][..])).collect();
            if bad < k as usize {
                prop_assert_eq!(
                    decode(&c, len, &root, &exactly_k),
                    Err(StoreError::TooFewShards { have: k as usize - 1, need: k as usize })
                );
            }
            let spare: Vec<Offered<'_>> = (0..=k as usize).map(|i| (i, &shards[i][..], &proofs[i][..])).collect();
            let d = decode(&c, len, &root, &spare).unwrap();
            prop_assert_eq!(d.corrupt, vec![bad]);
            prop_assert_eq!(d.object, obj);
        }
    }
}
