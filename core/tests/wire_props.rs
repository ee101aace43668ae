//! Property tests of the wire format: roundtrip, and no input panics the decoder.

use lightcone_core::wire::{
    self, Dest, Header, MemberState, Payload, RouteEntry, Summary, Update, WireStamp,
    STAMP_SOURCE_MAX,
};
use proptest::prelude::*;

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        any::<u32>().prop_map(Dest::Node),
        (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(layer, cluster, cell)| Dest::Cell {
            layer,
            cluster,
            cell
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(layer, cluster)| Dest::Cluster { layer, cluster }),
        any::<u16>().prop_map(|layer| Dest::Layer { layer }),
        Just(Dest::Link),
    ]
}

fn update() -> impl Strategy<Value = Update> {
    (any::<u32>(), 0u8..3, any::<u64>(), any::<u32>()).prop_map(|(node, s, incarnation, from)| {
        Update {
            node,
            state: [MemberState::Alive, MemberState::Suspect, MemberState::Dead][s as usize],
            incarnation,
            from,
        }
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    let ups = || prop::collection::vec(update(), 0..wire::MAX_UPDATES);
    let blob = || prop::collection::vec(any::<u8>(), 0..wire::MAX_BLOB);
    prop_oneof![
        (any::<u32>(), ups()).prop_map(|(probe, updates)| Payload::Ping { probe, updates }),
        (any::<u32>(), ups()).prop_map(|(probe, updates)| Payload::Ack { probe, updates }),
        (any::<u32>(), any::<u32>(), ups()).prop_map(|(probe, target, updates)| Payload::PingReq {
            probe,
            target,
            updates
        }),
        any::<u32>().prop_map(|probe| Payload::Nack { probe }),
        ups().prop_map(|updates| Payload::Gossip { updates }),
        (
            any::<bool>(),
            prop::collection::vec(
                (dest(), any::<u32>(), any::<u8>()),
                0..wire::MAX_ROUTE_ENTRIES
            )
        )
            .prop_map(|(full, es)| Payload::Route {
                full,
                entries: es
                    .into_iter()
                    .map(|(dest, cost_us, hops)| RouteEntry {
                        dest,
                        cost_us,
                        hops
                    })
                    .collect()
            }),
        (
            dest(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            (
                any::<i64>(),
                any::<u64>(),
                0u8..=STAMP_SOURCE_MAX,
                any::<u8>()
            )
        )
            .prop_map(
                |(
                    scope,
                    alive,
                    suspect,
                    dead,
                    version,
                    (estimate_ns, sigma_ps, source, stratum),
                )| {
                    Payload::Summary(Summary {
                        scope,
                        alive,
                        suspect,
                        dead,
                        version,
                        stamp: WireStamp {
                            estimate_ns,
                            sigma_ps,
                            source,
                            stratum,
                        },
                    })
                }
            ),
        blob().prop_map(Payload::Kv),
        blob().prop_map(Payload::Time),
        blob().prop_map(Payload::Data),
        (any::<u32>(), any::<bool>()).prop_map(|(nonce, reply)| Payload::Watch { nonce, reply }),
        any::<u32>().prop_map(|node| Payload::Accuse { node }),
        Just(Payload::Boot),
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<bool>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(build, config, reply, half)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&half);
                sig[32..].copy_from_slice(&build);
                Payload::Attest {
                    build,
                    config,
                    reply,
                    sig,
                }
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn codec_roundtrip(p in payload(), src in any::<u32>(), dst in dest(), seq in any::<u64>(), hlc in any::<u64>(), ttl in any::<u8>(), epochs in any::<(u32, u32)>()) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let h = Header { kind: 0, ttl, src, dst, seq, hlc, src_epoch: epochs.0, dst_epoch: epochs.1 };
        let b = wire::encode_with(&h, &p, &key, wire::Auth::TestDigest);
        prop_assert!(b.len() <= wire::MAX_DATAGRAM);
        let f = wire::parse(&b).unwrap();
        prop_assert_eq!(f.header.src, src);
        prop_assert_eq!(f.header.dst, dst);
        prop_assert_eq!(f.header.seq, seq);
        prop_assert_eq!(f.header.hlc, hlc);
        prop_assert_eq!(f.header.ttl, ttl);
        prop_assert_eq!((f.header.src_epoch, f.header.dst_epoch), epochs);
        prop_assert_eq!(f.decode_payload().unwrap(), p);
        prop_assert!(f.verify_with(&key.verifying_key(), wire::Auth::TestDigest).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(f) = wire::parse(&b) {
            let _ = f.decode_payload();
            let _ = f.verify_with(&ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key(), wire::Auth::TestDigest);
        }
    }

    #[test]
    fn mutated_frames_never_panic(p in payload(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let h = Header { kind: 0, ttl: 9, src: 1, dst: Dest::Node(2), seq: 5, hlc: 6, src_epoch: 1, dst_epoch: 1 };
        let mut b = wire::encode_with(&h, &p, &key, wire::Auth::TestDigest);
        for (i, x) in flips {
            let n = b.len();
            b[i % n] ^= x;
        }
        b.truncate(cut % (b.len() + 1));
        if let Ok(f) = wire::parse(&b) {
            let _ = f.decode_payload();
        }
        // Structurally valid payload bytes of any kind must not panic either.
        for kind in 0..=14u8 {
            let _ = Payload::decode(kind, &b);
        }
    }
}
