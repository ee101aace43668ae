//! Picks the store's Reed–Solomon codec on figures (issue 16): encode and reconstruct at
//! k = 20, n = 60 for 1 KiB, 64 KiB and 1 MiB objects with `reed-solomon-simd` (GF(2^16),
//! SIMD chosen at run time) and `reed-solomon-erasure` (GF(2^8), `simd-accel`).
//!
//! Reconstruct is the worst case the store meets: all 20 data shards and 20 parity shards
//! lost, the object rebuilt from the 20 parity shards left. Throughput is object bytes per
//! second (MiB/s); each figure is the median of the repetitions. reed-solomon-erasure keeps
//! an LRU cache of inverted matrices per loss pattern: "cached" repeats one pattern, "cold"
//! builds a new codec per reconstruct (the store's stripes lose different shards).
//!
//! ```text
//! cargo run --release -p lightcone-core --example rs_bench
//! ```
use std::time::Instant;

const K: usize = 20;
const N: usize = 60;

fn object(len: usize) -> Vec<u8> {
    // Deterministic bytes (an LCG), so each run codes the same object.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect()
}

/// Data shards of equal, even length (reed-solomon-simd wants a multiple of 2).
fn split(obj: &[u8]) -> Vec<Vec<u8>> {
    let mut len = obj.len().div_ceil(K);
    len += len % 2;
    (0..K)
        .map(|i| {
            let mut s = vec![0u8; len];
            let lo = (i * len).min(obj.len());
            let hi = ((i + 1) * len).min(obj.len());
            s[..hi - lo].copy_from_slice(&obj[lo..hi]);
            s
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mibps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / (1024.0 * 1024.0)
}

fn bench_simd(obj: &[u8], reps: usize) -> (f64, f64) {
    let data = split(obj);
    let (mut enc, mut rec) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let parity = reed_solomon_simd::encode(K, N - K, &data).expect("encode");
        enc.push(t.elapsed().as_secs_f64());
        // Lose every data shard and the first 20 parity shards.
        let t = Instant::now();
        let restored = reed_solomon_simd::decode(
            K,
            N - K,
            std::iter::empty::<(usize, &Vec<u8>)>(),
            parity.iter().enumerate().skip(N - 2 * K),
        )
        .expect("decode");
        rec.push(t.elapsed().as_secs_f64());
        for (i, d) in data.iter().enumerate() {
            assert_eq!(&restored[&i], d, "simd: shard {i} differs");
        }
    }
    (mibps(obj.len(), median(enc)), mibps(obj.len(), median(rec)))
}

/// `cold`: a new codec for each reconstruct, so its cache of inverted decode matrices
/// (keyed by the loss pattern) is empty, as when stripes lose different shards.
fn bench_erasure(obj: &[u8], reps: usize, cold: bool) -> (f64, f64) {
    use reed_solomon_erasure::galois_8::ReedSolomon;
    let mut rs = ReedSolomon::new(K, N - K).expect("codec");
    let data = split(obj);
    let len = data[0].len();
    let (mut enc, mut rec) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        if cold {
            rs = ReedSolomon::new(K, N - K).expect("codec");
        }
        let mut shards: Vec<Vec<u8>> = data.clone();
        shards.extend((0..N - K).map(|_| vec![0u8; len]));
        let t = Instant::now();
        rs.encode(&mut shards).expect("encode");
        enc.push(t.elapsed().as_secs_f64());
        let mut lossy: Vec<Option<Vec<u8>>> = shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i >= 2 * K).then_some(s))
            .collect();
        let t = Instant::now();
        rs.reconstruct_data(&mut lossy).expect("reconstruct");
        rec.push(t.elapsed().as_secs_f64());
        for (i, d) in data.iter().enumerate() {
            assert_eq!(lossy[i].as_ref(), Some(d), "erasure: shard {i} differs");
        }
    }
    (mibps(obj.len(), median(enc)), mibps(obj.len(), median(rec)))
}

fn main() {
    println!("k={K} n={N}; reconstruct from the {K} last parity shards (every data shard lost)");
    println!(
        "{:<22} {:>8} {:>14} {:>17}",
        "crate", "object", "encode MiB/s", "reconstruct MiB/s"
    );
    for (label, len, reps) in [
        ("1 KiB", 1024, 2001),
        ("64 KiB", 64 * 1024, 201),
        ("1 MiB", 1024 * 1024, 21),
    ] {
        let obj = object(len);
        let (e, r) = bench_simd(&obj, reps);
        println!(
            "{:<22} {:>8} {:>14.1} {:>17.1}",
            "reed-solomon-simd 3", label, e, r
        );
        let (e, r) = bench_erasure(&obj, reps, false);
        println!(
            "{:<22} {:>8} {:>14.1} {:>17.1}",
            "rs-erasure 6 (cached)", label, e, r
        );
        let (e, r) = bench_erasure(&obj, reps, true);
        println!(
            "{:<22} {:>8} {:>14.1} {:>17.1}",
            "rs-erasure 6 (cold)", label, e, r
        );
    }
}
