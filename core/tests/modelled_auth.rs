//! The digital twin's modelled signatures (`Auth::Modelled`): an honest frame verifies as
//! with Ed25519; a tampered frame, a frame whose signature field came from another sender's
//! key, one made under another run's secret, an Ed25519-signed frame and garbage all fail
//! as bad signatures; the mode is never the default.

use ed25519_dalek::SigningKey;
use lightcone_core::params::Params;
use lightcone_core::wire::{self, Auth, Dest, Header, Payload, WireError};

fn header(src: u32) -> Header {
    Header {
        kind: 0,
        ttl: 9,
        src,
        dst: Dest::Node(2),
        seq: 5,
        hlc: 6,
        src_epoch: 1,
        dst_epoch: 1,
    }
}

const SECRET: [u8; 32] = [42; 32];

#[test]
fn honest_frames_verify_and_forged_ones_fail() {
    let alice = SigningKey::from_bytes(&[3; 32]);
    let mallory = SigningKey::from_bytes(&[4; 32]);
    let auth = Auth::Modelled(SECRET);
    let p = Payload::Data(b"hello".to_vec());
    let b = wire::encode_with(&header(1), &p, &alice, auth);
    let f = wire::parse(&b).unwrap();
    assert_eq!(f.verify_with(&alice.verifying_key(), auth), Ok(()));
    // The same frame size as Ed25519's: the signature field keeps its 64 bytes.
    assert_eq!(b.len(), wire::encode(&header(1), &p, &alice).len());
    // Forwarding rewrites the TTL, which the signature leaves out.
    let mut fwd = b.clone();
    wire::set_ttl(&mut fwd, 3);
    assert_eq!(
        wire::parse(&fwd)
            .unwrap()
            .verify_with(&alice.verifying_key(), auth),
        Ok(())
    );
    let bad = Err(WireError::BadSignature);
    // Mallory's core signs a frame claiming to be Alice's: it names Alice's id but its MAC
    // covers Mallory's key.
    let forged = wire::encode_with(&header(1), &p, &mallory, auth);
    assert_eq!(
        wire::parse(&forged)
            .unwrap()
            .verify_with(&alice.verifying_key(), auth),
        bad
    );
    // Another run's secret, an Ed25519 signature, and every flipped bit fail.
    let other = wire::encode_with(&header(1), &p, &alice, Auth::Modelled([43; 32]));
    assert_eq!(
        wire::parse(&other)
            .unwrap()
            .verify_with(&alice.verifying_key(), auth),
        bad
    );
    let real = wire::encode(&header(1), &p, &alice);
    assert_eq!(
        wire::parse(&real)
            .unwrap()
            .verify_with(&alice.verifying_key(), auth),
        bad
    );
    let ttl_at = 4; // magic (2), version, kind, then the TTL
    for i in 0..b.len() {
        if i == ttl_at {
            continue;
        }
        let mut t = b.clone();
        t[i] ^= 0x10;
        if let Ok(f) = wire::parse(&t) {
            assert_eq!(f.verify_with(&alice.verifying_key(), auth), bad, "byte {i}");
        }
    }
}

#[test]
fn the_default_parameters_sign_with_ed25519() {
    assert_eq!(Params::default().auth, Auth::Ed25519);
    assert_eq!(Auth::default(), Auth::Ed25519);
}
