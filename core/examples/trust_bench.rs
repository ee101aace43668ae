//! Issue 17's benchmark figures: FROST(Ed25519) DKG, threshold signing and verification
//! (beside a single-key Ed25519 signature, the baseline), and the transparency log's
//! append, inclusion and consistency proofs at several sizes. Prints a table; wall-clock
//! medians of repeated runs on this host.
//!
//! `cargo run -p lightcone-core --example trust_bench` (the dev profile builds the crypto
//! dependencies at opt-level 2, see the workspace Cargo.toml; `--release` for the core's
//! own code optimised too).

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use lightcone_core::trust::log::{verify_consistency, verify_inclusion, Entry, EntryKind, Log};
use lightcone_core::trust::threshold::{dkg, sign, verify, Share};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f());
        v.push(t.elapsed());
    }
    median(v)
}

fn entry(i: u32) -> Entry {
    Entry {
        kind: EntryKind::Certificate,
        subject: i,
        body: vec![(i % 251) as u8; 112],
    }
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let msg = b"certificate of tile 7: key, serial, not-after";
    println!("what                                         median");
    let single = SigningKey::from_bytes(&[5; 32]);
    let d = time(200, || single.sign(msg));
    println!("ed25519 single-key sign (baseline)           {d:>10.2?}");
    let sig = single.sign(msg).to_bytes();
    let d = time(200, || verify(&single.verifying_key(), msg, &sig));
    println!("ed25519 verify (baseline; = threshold verify) {d:>10.2?}");
    for (n, t) in [(3u32, 2u16), (5, 3), (7, 5), (12, 9)] {
        let ids: Vec<u32> = (0..n).collect();
        let d = time(5, || dkg(&ids, t, &mut rng).unwrap());
        println!("FROST DKG {t}-of-{n} (all rounds, in memory)     {d:>10.2?}");
        let (shares, g) = dkg(&ids, t, &mut rng).unwrap();
        let signers: Vec<&Share> = shares.values().take(usize::from(t)).collect();
        let d = time(20, || sign(&g, &signers, msg, &mut rng).unwrap());
        println!("FROST sign {t}-of-{n} (2 rounds + aggregate)      {d:>10.2?}");
        let sig = sign(&g, &signers, msg, &mut rng).unwrap();
        let d = time(200, || verify(&g.key, msg, &sig));
        println!("FROST {t}-of-{n} signature verify (ed25519)       {d:>10.2?}");
    }
    for size in [1_000u32, 10_000, 100_000] {
        let mut log = Log::new();
        let t0 = Instant::now();
        for i in 0..size {
            log.append(&entry(i)).unwrap();
        }
        let per = t0.elapsed() / size;
        println!("log append, to {size:>6} entries (per entry)   {per:>10.2?}");
        let key = SigningKey::from_bytes(&[6; 32]);
        let d = time(50, || log.head(1, 0, &key));
        println!("log signed tree head at {size:>6}              {d:>10.2?}");
        let head = log.head(1, 0, &key);
        let idx = u64::from(size / 3);
        let d = time(200, || log.prove_inclusion(idx).unwrap());
        let p = log.prove_inclusion(idx).unwrap();
        println!(
            "log inclusion proof at {size:>6} ({:>3} B)       {d:>10.2?}",
            p.len()
        );
        let e = entry(size / 3);
        let d = time(200, || verify_inclusion(&head, &e, idx, &p).unwrap());
        println!("log inclusion verify at {size:>6}              {d:>10.2?}");
        let old = u64::from(size / 2);
        let mut small = Log::new();
        for i in 0..size / 2 {
            small.append(&entry(i)).unwrap();
        }
        let old_head = small.head(1, 0, &key);
        let d = time(200, || log.prove_consistency(old).unwrap());
        let c = log.prove_consistency(old).unwrap();
        println!(
            "log consistency proof {old:>6}->{size:<6} ({:>3} B) {d:>10.2?}",
            c.len()
        );
        let d = time(200, || verify_consistency(&old_head, &head, &c).unwrap());
        println!("log consistency verify {old:>6}->{size:<6}      {d:>10.2?}");
    }
}
