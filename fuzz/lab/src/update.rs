//! The update target ([`lightcone_core::update`]): release manifests, the TUF bundle check
//! ([`Verifier::accept`]) and threshold-signed dark orders ([`Darkness::apply`]). An input
//! is a list of chunks ([`crate::input::Chunks`]): a manifest, an order, then a bundle —
//! for each of the timestamp, snapshot and targets roles: role, version, expiry, body,
//! signature — then a tree head, an entry index, an inclusion proof and the time.
//!
//! Invariants:
//! - manifests that decode encode back to the same bytes; decode(encode(order)) = order;
//! - an order is obeyed only if the authorities' threshold key signed it, and only once
//!   (the same bytes again are refused as a replay); a refused order changes nothing but
//!   the refusal count; a node that trusts no key obeys none;
//! - a bundle is installed only if every role's signature holds under the real keys and
//!   its targets are in the real log; then the same bundle again is refused (replayed
//!   manifest); a refused bundle changes nothing.

use std::sync::OnceLock;

use lightcone_core::config::HierAddr;
use lightcone_core::time::Instant;
use lightcone_core::trust::log::{Log, TreeHead};
use lightcone_core::trust::threshold::{self, Share};
use lightcone_core::update::dark::{Darkness, Order, OrderError};
use lightcone_core::update::release::{
    approval_entry, sign_role, Bundle, Manifest, ReleaseError, Role, RolloutPolicy, Root, Signed,
    Verifier,
};
use lightcone_core::wire::Dest;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::input::{put, put_u64, Chunks};
use crate::lab;

/// The node the orders are applied at (the lab's node 0, cell 0 of layer 0).
pub const NODE: u32 = 0;
pub const ADDR: HierAddr = HierAddr {
    layer: 0,
    cluster: 0,
    cell: 0,
    tile: 0,
};
/// Emulated time the bundle seeds are checked at, ns (their metadata expires later).
pub const NOW_NS: u64 = 10_000_000_000;

fn root() -> Root {
    let g = lab::lab().group.key;
    Root {
        targets: g,
        snapshot: g,
        timestamp: g,
        log: crate::log::log_key().verifying_key(),
    }
}

fn role_of(b: u8) -> Role {
    match b % 4 {
        0 => Role::Root,
        1 => Role::Targets,
        2 => Role::Snapshot,
        _ => Role::Timestamp,
    }
}

fn role_byte(r: Role) -> u8 {
    match r {
        Role::Root => 0,
        Role::Targets => 1,
        Role::Snapshot => 2,
        Role::Timestamp => 3,
    }
}

fn signed(c: &mut Chunks<'_>) -> Signed {
    let role = role_of(c.u8());
    let version = c.u64();
    let expires_ns = c.u64();
    let body = c.bytes().to_vec();
    let mut sig = [0u8; 64];
    let s = c.bytes();
    let n = s.len().min(64);
    sig[..n].copy_from_slice(&s[..n]);
    Signed {
        role,
        version,
        expires_ns,
        body,
        sig,
    }
}

fn put_signed(w: &mut Vec<u8>, s: &Signed) {
    put(w, &[role_byte(s.role)]);
    put_u64(w, s.version);
    put_u64(w, s.expires_ns);
    put(w, &s.body);
    put(w, &s.sig);
}

/// Runs one input (see the module doc); panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut c = Chunks(data);
    let manifest = c.bytes();
    let order = c.bytes();
    if let Ok(m) = Manifest::decode(manifest) {
        assert_eq!(m.encode(), manifest, "manifest: encode(decode(b)) != b");
    }
    check_order(order);

    let timestamp = signed(&mut c);
    let snapshot = signed(&mut c);
    let targets = signed(&mut c);
    let Ok(head) = TreeHead::decode(c.bytes()) else {
        return;
    };
    let bundle = Bundle {
        timestamp,
        snapshot,
        targets,
        head,
        index: c.u64(),
        proof: c.bytes().to_vec(),
    };
    let now_ns = c.u64();
    let mut v = Verifier::new(root());
    let before = format!("{v:?}");
    match v.accept(&bundle, now_ns) {
        Ok(m) => {
            assert_eq!(v.installed(), m.release);
            let key = lab::lab().group.key;
            for s in [&bundle.timestamp, &bundle.snapshot, &bundle.targets] {
                let msg = Signed::message(s.role, s.version, s.expires_ns, &s.body);
                assert!(
                    threshold::verify(&key, &msg, &s.sig),
                    "a bundle was installed with a {:?} role the authorities did not sign",
                    s.role
                );
            }
            let entry = approval_entry(&bundle.targets).expect("installed targets decode");
            assert!(
                crate::log::fixture().log.contains(&entry) || release_log().contains(&entry),
                "a bundle was installed that no real log holds"
            );
            assert!(
                matches!(
                    v.accept(&bundle, now_ns),
                    Err(ReleaseError::Replayed { .. })
                ),
                "the same bundle was installed twice"
            );
        }
        Err(_) => assert_eq!(format!("{v:?}"), before, "a refused bundle changed state"),
    }
}

fn check_order(bytes: &[u8]) {
    if let Ok(o) = Order::decode(bytes) {
        assert_eq!(
            Order::decode(&o.encode()),
            Ok(o),
            "order: decode(encode(o)) != o"
        );
    }
    let now = Instant::from_nanos(NOW_NS);
    let mut keyless = Darkness::default();
    assert!(keyless.apply(bytes, NODE, &ADDR, now).is_err());
    assert_eq!(keyless.dark_since(), None, "a node without a key obeyed");
    let mut d = Darkness::default();
    d.set_key(lab::lab().group.key);
    let before = format!("{d:?}");
    match d.apply(bytes, NODE, &ADDR, now) {
        Ok(_) => {
            let o = Order::decode(bytes).expect("an obeyed order decodes");
            let m = Order::message(o.serial, o.scope, o.dark).expect("an obeyed order's scope");
            assert!(
                threshold::verify(&lab::lab().group.key, &m, &o.sig),
                "an order the authorities did not sign was obeyed"
            );
            assert!(
                matches!(
                    d.apply(bytes, NODE, &ADDR, now),
                    Err(OrderError::Replayed { .. })
                ),
                "the same order was obeyed twice"
            );
        }
        Err(_) => {
            d.refused -= 1;
            assert_eq!(format!("{d:?}"), before, "a refused order changed state");
        }
    }
}

/// The log the release seeds are entered in (its approval entries), signed by the log key.
fn release_log() -> &'static Log {
    &release_fixture().1
}

fn release_fixture() -> &'static (Vec<Bundle>, Log) {
    static F: OnceLock<(Vec<Bundle>, Log)> = OnceLock::new();
    F.get_or_init(|| {
        let lab = lab::lab();
        let shares: Vec<&Share> = lab.shares.values().take(2).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(lab::SEED);
        let exp = NOW_NS + 60_000_000_000;
        let mut log = Log::new();
        let mut made = Vec::new();
        for release in 1..=2u64 {
            let m = Manifest {
                release,
                protocol: 3,
                binary_sha256: [release as u8; 32],
                compat: (2, 3),
                policy: RolloutPolicy {
                    soak_s: 30,
                    hand_over_state: false,
                },
            };
            let sign = |role, version, body, rng: &mut ChaCha20Rng| {
                sign_role(&lab.group, &shares, role, version, exp, body, rng).expect("sign")
            };
            let targets = sign(Role::Targets, release, m.encode(), &mut rng);
            let snapshot = sign(Role::Snapshot, release, targets.pin(), &mut rng);
            let timestamp = sign(Role::Timestamp, release, snapshot.pin(), &mut rng);
            let index = log
                .append(&approval_entry(&targets).expect("entry"))
                .expect("room");
            made.push((timestamp, snapshot, targets, index));
        }
        let head = log.head_at(7, 1, NOW_NS, &crate::log::log_key());
        let bundles = made
            .into_iter()
            .map(|(timestamp, snapshot, targets, index)| Bundle {
                timestamp,
                snapshot,
                targets,
                head,
                index,
                proof: log.prove_inclusion(index).expect("in range"),
            })
            .collect();
        (bundles, log)
    })
}

/// Seed inputs from a real manifest, real dark orders and real bundles (name, bytes).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let lab = lab::lab();
    let shares: Vec<&Share> = lab.shares.values().take(2).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(lab::SEED + 1);
    let orders = [
        (1, Dest::Node(NODE), true),
        (2, Dest::Node(NODE), false),
        (
            3,
            Dest::Cell {
                layer: 0,
                cluster: 0,
                cell: 0,
            },
            true,
        ),
        (4, Dest::Layer { layer: 0 }, true),
        (5, Dest::Node(4), true),
    ];
    let mut v = Vec::new();
    for (i, b) in release_fixture().0.iter().enumerate() {
        let (serial, scope, dark) = orders[i % orders.len()];
        let o = Order::sign(&lab.group, &shares, serial, scope, dark, &mut rng).expect("sign");
        let mut w = Vec::new();
        put(&mut w, &b.targets.body);
        put(&mut w, &o.encode());
        put_signed(&mut w, &b.timestamp);
        put_signed(&mut w, &b.snapshot);
        put_signed(&mut w, &b.targets);
        put(&mut w, &b.head.encode());
        put_u64(&mut w, b.index);
        put(&mut w, &b.proof);
        put_u64(&mut w, NOW_NS);
        v.push((format!("bundle-{}", i + 1), w));
    }
    for (serial, scope, dark) in orders {
        let o = Order::sign(&lab.group, &shares, serial, scope, dark, &mut rng).expect("sign");
        let mut w = Vec::new();
        put(&mut w, &release_fixture().0[0].targets.body);
        put(&mut w, &o.encode());
        v.push((format!("order-{serial}"), w));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_run_clean_and_the_real_bundles_install() {
        for (name, s) in seeds() {
            eprintln!("{name}");
            run(&s);
        }
        let mut v = Verifier::new(root());
        let b = &release_fixture().0[0];
        assert_eq!(v.accept(b, NOW_NS).map(|m| m.release), Ok(1));
        run(&[]);
    }
}
