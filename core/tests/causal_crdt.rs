//! CRDT laws and convergence of the causal store, under random histories.
//!
//! A random history is produced by real replicas: each step one replica either writes (with
//! the context of its own last read, or blindly) or applies a delta produced earlier, so
//! deltas carry the partial knowledge real replicas have. Then the laws are checked on the
//! recorded deltas, and the converged state is compared with an independent model: a write
//! survives iff no other write's context contains its dot.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use lightcone_core::causal::{Delta, Dot, DotContext, Hlc, MvRegister, Store, StoreLimits};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEYS: [&str; 3] = ["a", "b", "c"];

fn roomy() -> StoreLimits {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    StoreLimits {
        max_siblings: nz(10_000),
        max_context_entries: nz(10_000),
        max_delta_keys: nz(10_000),
        ..StoreLimits::default()
    }
}

/// Deltas from a random run of `replicas` replicas over `steps` steps.
fn random_deltas(seed: u64, replicas: u32, steps: usize) -> Vec<Delta> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stores: Vec<Store> = (0..replicas)
        .map(|n| Store::new(u64::from(n), roomy()))
        .collect();
    let mut deltas: Vec<Delta> = Vec::new();
    for step in 0..steps {
        let r = rng.gen_range(0..stores.len());
        if deltas.is_empty() || rng.gen_bool(0.5) {
            let key = KEYS[rng.gen_range(0..KEYS.len())];
            let ctx = if rng.gen_bool(0.7) {
                stores[r].get(key).context
            } else {
                DotContext::new()
            };
            let hlc = Hlc {
                physical_ns: rng.gen_range(0..100),
                logical: 0,
            };
            let value = format!("{r}-{step}").into_bytes();
            deltas.push(stores[r].local_put(key, value, hlc, &ctx).unwrap());
        } else {
            let d = &deltas[rng.gen_range(0..deltas.len())];
            stores[r].apply(d).unwrap();
        }
    }
    deltas
}

/// The model: for each key, the (dot, value) pairs no other write's context covers.
fn model(deltas: &[Delta]) -> BTreeMap<String, BTreeSet<(Dot, Vec<u8>)>> {
    let mut writes: BTreeMap<String, Vec<(Dot, Vec<u8>, DotContext)>> = BTreeMap::new();
    for d in deltas {
        for (k, reg) in &d.entries {
            for (dot, v) in reg.siblings() {
                writes.entry(k.clone()).or_default().push((
                    dot,
                    v.value.clone(),
                    reg.context().clone(),
                ));
            }
        }
    }
    writes
        .into_iter()
        .map(|(k, ws)| {
            let live = ws
                .iter()
                .filter(|(dot, _, _)| {
                    !ws.iter()
                        .any(|(other, _, ctx)| other != dot && ctx.contains(*dot))
                })
                .map(|(dot, v, _)| (*dot, v.clone()))
                .collect();
            (k, live)
        })
        .collect()
}

fn state(s: &Store) -> BTreeMap<String, BTreeSet<(Dot, Vec<u8>)>> {
    s.keys()
        .map(|k| {
            let read = s.get(k);
            (
                k.to_owned(),
                read.siblings
                    .into_iter()
                    .map(|(d, v)| (d, v.value))
                    .collect(),
            )
        })
        .collect()
}

fn join_all(parts: &[&Delta]) -> Delta {
    let mut acc = Delta::default();
    for p in parts {
        acc.merge(p);
    }
    acc
}

/// A random sub-collection of the deltas, joined: a state some replica could hold.
fn random_state(rng: &mut ChaCha8Rng, deltas: &[Delta]) -> Delta {
    let picked: Vec<&Delta> = deltas.iter().filter(|_| rng.gen_bool(0.5)).collect();
    join_all(&picked)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn join_is_commutative_associative_idempotent(seed in any::<u64>(), steps in 1usize..60) {
        let deltas = random_deltas(seed, 4, steps);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let a = random_state(&mut rng, &deltas);
        let b = random_state(&mut rng, &deltas);
        let c = random_state(&mut rng, &deltas);

        let ab = join_all(&[&a, &b]);
        let ba = join_all(&[&b, &a]);
        prop_assert_eq!(&ab, &ba, "commutativity");

        let ab_c = join_all(&[&ab, &c]);
        let bc = join_all(&[&b, &c]);
        let a_bc = join_all(&[&a, &bc]);
        prop_assert_eq!(&ab_c, &a_bc, "associativity");

        let aa = join_all(&[&a, &a]);
        prop_assert_eq!(&aa, &a, "idempotence");

        // The same laws on single registers.
        for k in KEYS {
            let get = |d: &Delta| d.entries.get(k).cloned().unwrap_or_default();
            let (ra, rb) = (get(&a), get(&b));
            let mut x = ra.clone();
            x.join(&rb);
            let mut y = rb.clone();
            y.join(&ra);
            prop_assert_eq!(&x, &y);
            let mut z: MvRegister<_> = ra.clone();
            z.join(&ra);
            prop_assert_eq!(&z, &ra);
        }
    }

    #[test]
    fn replicas_applying_the_same_deltas_in_any_order_converge_to_the_model(
        seed in any::<u64>(),
        steps in 1usize..80,
    ) {
        let deltas = random_deltas(seed, 4, steps);
        let mut rng = ChaCha8Rng::seed_from_u64(seed.rotate_left(17));
        let expected = model(&deltas);
        let mut summaries = Vec::new();
        for replica in 0..3u32 {
            // Every delta at least once, some twice, shuffled.
            let mut order: Vec<&Delta> = deltas.iter().collect();
            order.extend(deltas.iter().filter(|_| rng.gen_bool(0.3)));
            order.shuffle(&mut rng);
            let mut s = Store::new(100 + u64::from(replica), roomy());
            for d in order {
                s.apply(d).unwrap();
            }
            prop_assert_eq!(&state(&s), &expected);
            summaries.push(s.summary());
        }
        prop_assert!(summaries.windows(2).all(|w| w[0] == w[1]), "{:?}", summaries);
    }

    #[test]
    fn anti_entropy_converges_from_any_partial_states(seed in any::<u64>(), steps in 1usize..80) {
        let deltas = random_deltas(seed, 4, steps);
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(31));
        let nz = |n| NonZeroUsize::new(n).unwrap();
        let limits = StoreLimits { max_delta_keys: nz(1), ..roomy() };
        let mut a = Store::new(200, limits.clone());
        let mut b = Store::new(201, limits);
        for d in &deltas {
            match rng.gen_range(0..3) {
                0 => { a.apply(d).unwrap(); }
                1 => { b.apply(d).unwrap(); }
                _ => {}
            }
        }
        // Deltas nobody got are lost for good; anti-entropy syncs what a and b hold.
        let mut rounds = 0;
        while a.summary().hash != b.summary().hash {
            rounds += 1;
            prop_assert!(rounds <= KEYS.len(), "no convergence after {} rounds", rounds);
            let to_b = a.missing_since(&b.digest());
            let to_a = b.missing_since(&a.digest());
            prop_assert!(!to_a.is_empty() || !to_b.is_empty(), "stuck while different");
            b.apply(&to_b).unwrap();
            a.apply(&to_a).unwrap();
        }
        prop_assert_eq!(state(&a), state(&b));
        prop_assert!(a.missing_since(&b.digest()).is_empty());
        prop_assert!(b.missing_since(&a.digest()).is_empty());
    }

    #[test]
    fn deltas_survive_a_serde_round_trip(seed in any::<u64>(), steps in 1usize..40) {
        for d in random_deltas(seed, 3, steps) {
            let json = serde_json::to_vec(&d).unwrap();
            let back: Delta = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(back, d);
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_state_twice() {
    let run = || {
        let mut s = Store::new(9, roomy());
        for d in random_deltas(42, 4, 200) {
            s.apply(&d).unwrap();
        }
        s.summary()
    };
    assert_eq!(run(), run());
}
