//! Stripes: an object cut into `k` data shards plus `n − k` parity shards
//! (Reed–Solomon over GF(2^16), `reed-solomon-simd`), each shard with its SHA-256.
//! Pure functions; the figures that picked the codec are in the module doc of
//! [`super`].
use sha2::{Digest, Sha256};

use super::{Class, StoreError};

/// A shard's SHA-256.
pub type ShardHash = [u8; 32];

/// The hash a shard is checked against before it is used.
pub fn shard_hash(bytes: &[u8]) -> ShardHash {
    Sha256::digest(bytes).into()
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

/// Rebuild the object of `object_len` bytes from the shards offered (index, bytes).
/// Every shard is checked against `hashes[index]` first; a shard that fails (or has the
/// wrong length, or an index ≥ n, or repeats an index) is not used and is listed in
/// [`Decoded::corrupt`]. Fails with [`StoreError::TooFewShards`] if fewer than `k` good
/// shards remain.
pub fn decode(
    class: &Class,
    object_len: usize,
    hashes: &[ShardHash],
    offered: &[(usize, &[u8])],
) -> Result<Decoded, StoreError> {
    let (k, n) = (class.k as usize, class.n as usize);
    if hashes.len() != n {
        return Err(StoreError::BadMetadata(format!(
            "{} shard hashes for n = {n}",
            hashes.len()
        )));
    }
    let len = shard_len(object_len, k);
    let mut good: std::collections::BTreeMap<usize, &[u8]> = Default::default();
    let mut corrupt = Vec::new();
    for &(i, bytes) in offered {
        if i >= n || bytes.len() != len || shard_hash(bytes) != hashes[i] {
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
        let hashes: Vec<_> = shards.iter().map(|s| shard_hash(s)).collect();
        // Only the last 20 parity shards.
        let offered: Vec<(usize, &[u8])> = (40..60).map(|i| (i, &shards[i][..])).collect();
        let d = decode(&c, obj.len(), &hashes, &offered).unwrap();
        assert_eq!(d.object, obj);
        assert!(d.corrupt.is_empty());
    }

    #[test]
    fn k_minus_one_good_shards_is_an_error_not_a_guess() {
        let c = class(4, 6);
        let shards = encode(b"hello, stripes", &c).unwrap();
        let hashes: Vec<_> = shards.iter().map(|s| shard_hash(s)).collect();
        let offered: Vec<(usize, &[u8])> = (0..3).map(|i| (i, &shards[i][..])).collect();
        assert_eq!(
            decode(&c, 14, &hashes, &offered),
            Err(StoreError::TooFewShards { have: 3, need: 4 })
        );
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
            let hashes: Vec<_> = shards.iter().map(|s| shard_hash(s)).collect();
            // A seeded choice of up to n − k shards to lose.
            let lose = ((extra as f64) * lost_frac).round() as usize;
            let mut idx: Vec<usize> = (0..n as usize).collect();
            let mut x = seed | 1;
            for i in (1..idx.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                idx.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let kept: Vec<(usize, &[u8])> = idx[lose..].iter().map(|&i| (i, &shards[i][..])).collect();
            let d = decode(&c, len, &hashes, &kept).unwrap();
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
            let hashes: Vec<_> = shards.iter().map(|s| shard_hash(s)).collect();
            let bad = which.index(k as usize + 1);
            let b = byte.index(shards[bad].len());
            shards[bad][b] ^= flip;
            let exactly_k: Vec<(usize, &[u8])> = (0..k as usize).map(|i| (i, &shards[i][..])).collect();
            if bad < k as usize {
                prop_assert_eq!(
                    decode(&c, len, &hashes, &exactly_k),
                    Err(StoreError::TooFewShards { have: k as usize - 1, need: k as usize })
                );
            }
            let spare: Vec<(usize, &[u8])> = (0..=k as usize).map(|i| (i, &shards[i][..])).collect();
            let d = decode(&c, len, &hashes, &spare).unwrap();
            prop_assert_eq!(d.corrupt, vec![bad]);
            prop_assert_eq!(d.object, obj);
        }
    }
}
