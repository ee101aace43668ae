//! Messages from the network are hostile: arbitrary (well-typed but nonsensical) deltas,
//! digests and causal messages must never panic the causal layer, and whatever the store
//! accepts must leave it consistent. Also: the message types round-trip through serde.

use std::num::NonZeroUsize;

use lightcone_core::causal::{
    BucketHashes, CausalDelivery, CausalMessage, Delta, Digest, DotContext, Hlc, Object, Store,
    StoreLimits, Summary,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn dot() -> impl Strategy<Value = Value> {
    (0u64..4, prop_oneof![0u64..6, Just(u64::MAX)])
        .prop_map(|(node, counter)| json!({"node": node, "counter": counter}))
}

fn context() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(0u64..4, prop_oneof![0u64..6, Just(u64::MAX)], 0..4),
        prop::collection::vec(dot(), 0..4),
    )
        .prop_map(|(vv, dots)| {
            let vv: serde_json::Map<String, Value> = vv
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            json!({"vv": vv, "dots": dots})
        })
}

fn register() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            (
                dot(),
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..8),
            ),
            0..4,
        ),
        context(),
    )
        .prop_map(|(sibs, ctx)| {
            // Duplicate dots are a decode error, which is fine too; keep the first.
            let mut seen = std::collections::BTreeSet::new();
            let siblings: Vec<Value> = sibs
                .into_iter()
                .filter(|(d, _, _)| seen.insert(d.to_string()))
                .map(
                    |(d, ns, v)| json!([d, {"hlc": {"physical_ns": ns, "logical": 0}, "value": v}]),
                )
                .collect();
            json!({"siblings": siblings, "context": ctx})
        })
}

fn delta() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop_oneof![Just("a"), Just("b"), Just("")],
        register(),
        0..3,
    )
    .prop_map(|m| json!({ "entries": m }))
}

fn small_store(node: u64) -> Store {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    Store::new(
        node,
        StoreLimits {
            max_siblings: nz(3),
            max_context_entries: nz(6),
            max_store_bytes: nz(600),
            ..StoreLimits::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn hostile_deltas_never_panic_and_accepted_ones_keep_the_store_consistent(
        deltas in prop::collection::vec(delta(), 1..6),
    ) {
        let mut s = small_store(0);
        for d in deltas {
            let Ok(d) = serde_json::from_value::<Delta>(d) else { continue };
            let before = s.summary();
            match s.apply(&d) {
                Ok(_) => {
                    // Re-applying what was accepted changes nothing.
                    let after = s.summary();
                    prop_assert!(s.apply(&d).unwrap().changed.is_empty());
                    prop_assert_eq!(s.summary(), after);
                }
                Err(_) => prop_assert_eq!(s.summary(), before, "a refused delta changed state"),
            }
            for k in s.keys().map(str::to_owned).collect::<Vec<_>>() {
                let reg = s.register(&k).unwrap();
                prop_assert!(reg.is_well_formed());
                prop_assert!(reg.sibling_count() <= 3);
            }
            prop_assert!(s.bytes() <= 600);
            // A local write after hostile input either works or is refused; never panics,
            // and never reuses a dot.
            let read = s.get("a");
            if let Ok(out) = s.local_put("a", vec![1], Hlc::ZERO, &read.context) {
                let (dot, _) = out.entries["a"].siblings().next().unwrap();
                prop_assert!(!read.context.contains(dot), "dot {:?} reused", dot);
            }
            // Anti-entropy against a hostile digest.
            let digest = Digest { entries: [("a".to_owned(), DotContext::new())].into(), buckets: None };
            let _ = s.missing_since(&digest);
        }
    }

    #[test]
    fn hostile_causal_messages_never_panic(
        msgs in prop::collection::vec(
            (0u64..4, prop::collection::btree_map(0u64..6, prop_oneof![0u64..4, Just(u64::MAX)], 0..6)),
            1..30,
        ),
    ) {
        let mut d = CausalDelivery::<u8>::new(0, NonZeroUsize::new(4).unwrap(), NonZeroUsize::new(4).unwrap());
        for (sender, clock) in msgs {
            let msg = CausalMessage { sender, clock: clock.into(), payload: 0 };
            let _ = d.receive(msg);
            prop_assert!(d.pending_len() <= 4);
            let _ = d.blocked_on();
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<Delta>(&bytes);
        let _ = serde_json::from_slice::<Digest>(&bytes);
        let _ = serde_json::from_slice::<Summary>(&bytes);
        let _ = serde_json::from_slice::<BucketHashes>(&bytes);
        let _ = serde_json::from_slice::<CausalMessage<Delta>>(&bytes);
        let _ = serde_json::from_slice::<Object>(&bytes);
    }
}

#[test]
fn message_types_round_trip() {
    let mut a = Store::new(1, StoreLimits::default());
    let delta = a
        .local_put(
            "k",
            b"v".to_vec(),
            Hlc {
                physical_ns: 5,
                logical: 1,
            },
            &DotContext::new(),
        )
        .unwrap();
    let rt = |v: &Value| v.clone();
    let d2: Delta = serde_json::from_value(rt(&serde_json::to_value(&delta).unwrap())).unwrap();
    assert_eq!(d2, delta);
    let digest = a.digest();
    let g2: Digest = serde_json::from_value(serde_json::to_value(&digest).unwrap()).unwrap();
    assert_eq!(g2, digest);
    let summary = a.summary();
    let s2: Summary = serde_json::from_value(serde_json::to_value(&summary).unwrap()).unwrap();
    assert_eq!(s2, summary);
    let buckets = a.bucket_hashes();
    let b2: BucketHashes = serde_json::from_value(serde_json::to_value(&buckets).unwrap()).unwrap();
    assert_eq!(b2, buckets);
    let mut cd = CausalDelivery::<Delta>::new(
        1,
        NonZeroUsize::new(1).unwrap(),
        NonZeroUsize::new(1).unwrap(),
    );
    let msg = cd.send(delta);
    let m2: CausalMessage<Delta> =
        serde_json::from_value(serde_json::to_value(&msg).unwrap()).unwrap();
    assert_eq!(m2, msg);
    let obj = Object::new(b"bytes".to_vec());
    let o2: Object = serde_json::from_value(serde_json::to_value(&obj).unwrap()).unwrap();
    assert_eq!(o2, obj);
}
