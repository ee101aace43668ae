//! Signed membership claims (issue 17, watch hardening).
//!
//! A suspect or dead claim names its accuser (`Update::from`), and Lifeguard counts
//! independent accusers. Unsigned, a liar can put any id there, so the watch could not
//! attribute lies it relays. With the watch's `signed_claims` on, the accuser signs
//! `(accused, state, incarnation, accuser)` under a domain tag; relays keep the signature
//! beside the claim ([`ClaimSigs`]) and send it on unchanged inside a
//! [`Payload::Signed`](crate::wire::Payload::Signed) frame. A receiver verifies every claim
//! against the directory key of the accuser it names: a claim that does not check is
//! dropped, and since an honest relay verifies before it relays, it is evidence against the
//! frame's (authenticated) sender. An unsigned claim is dropped and counted.
//!
//! The signature is Ed25519 (`ed25519-dalek`), or the harness-only digest of
//! [`Auth::TestDigest`] in debug builds, exactly like frames.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::wire::{Auth, MemberState, Payload, Update, MAX_PAYLOAD, SIG_LEN};

/// Domain separation: a claim signature is never a valid frame signature and vice versa
/// (frames start with the magic "LC").
const DOMAIN: &[u8] = b"lightcone/claim/v1";

/// Claim signatures kept for relaying, at most. The oldest is forgotten first; a claim
/// whose signature we forgot is no longer relayed by us (others still hold it).
pub const MAX_KEPT: usize = 4096;

type Key = (u32, u8, u64, u32);

fn key(u: &Update) -> Key {
    (u.node, state_byte(u.state), u.incarnation, u.from)
}

fn state_byte(s: MemberState) -> u8 {
    match s {
        MemberState::Alive => 0,
        MemberState::Suspect => 1,
        MemberState::Dead => 2,
    }
}

/// The signed message of a claim.
pub fn message(u: &Update) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 17);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&u.node.to_be_bytes());
    m.push(state_byte(u.state));
    m.extend_from_slice(&u.incarnation.to_be_bytes());
    m.extend_from_slice(&u.from.to_be_bytes());
    m
}

/// Signs claim `u` with `key` (the accuser's).
pub fn sign(key: &SigningKey, auth: Auth, u: &Update) -> [u8; SIG_LEN] {
    let m = message(u);
    match auth {
        Auth::Ed25519 => key.sign(&m).to_bytes(),
        Auth::TestDigest => crate::wire::digest_sig(&key.verifying_key(), &m),
        Auth::Modelled(secret) => crate::wire::modelled_sig(&secret, &key.verifying_key(), &m),
    }
}

/// True when `sig` is the signature of `u`'s accuser, whose key is `key`.
pub fn verify(key: &VerifyingKey, auth: Auth, u: &Update, sig: &[u8; SIG_LEN]) -> bool {
    let m = message(u);
    match auth {
        Auth::Ed25519 => key.verify(&m, &Signature::from_bytes(sig)).is_ok(),
        Auth::TestDigest => crate::wire::digest_sig(key, &m) == *sig,
        Auth::Modelled(secret) => crate::wire::modelled_sig(&secret, key, &m) == *sig,
    }
}

/// Signatures of claims we verified (or made), kept to relay them unchanged.
#[derive(Debug, Clone, Default)]
pub struct ClaimSigs {
    sigs: BTreeMap<Key, [u8; SIG_LEN]>,
    order: VecDeque<Key>,
}

impl ClaimSigs {
    pub fn insert(&mut self, u: &Update, sig: [u8; SIG_LEN]) {
        let k = key(u);
        if self.sigs.insert(k, sig).is_none() {
            self.order.push_back(k);
            while self.order.len() > MAX_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.sigs.remove(&old);
                }
            }
        }
    }
    pub fn get(&self, u: &Update) -> Option<[u8; SIG_LEN]> {
        self.sigs.get(&key(u)).copied()
    }
    pub fn len(&self) -> usize {
        self.sigs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }
}

/// Wraps the suspect/dead claims of an outgoing membership payload with their accusers'
/// signatures: ours are signed now (`me`, `key`), others' come from `kept`; a claim whose
/// signature we do not hold is not relayed. A `forger` (the byzantine `forge_accuser`
/// mode) signs every claim it cannot relay with its own key. Trailing updates are dropped
/// until the frame fits a datagram. Payloads without claims go out unchanged.
pub fn seal(
    mut payload: Payload,
    me: u32,
    key: &SigningKey,
    auth: Auth,
    kept: &ClaimSigs,
    forger: bool,
) -> Payload {
    let Some(updates) = payload.updates_mut() else {
        return payload;
    };
    let mut claims: Vec<[u8; SIG_LEN]> = Vec::new();
    updates.retain(|u| {
        if u.state == MemberState::Alive {
            return true;
        }
        let sig = if u.from == me {
            Some(sign(key, auth, u))
        } else {
            kept.get(u).or_else(|| forger.then(|| sign(key, auth, u)))
        };
        claims.extend(sig);
        sig.is_some()
    });
    if claims.is_empty() {
        return payload;
    }
    // Fit: drop trailing updates (and their signatures) until the frame fits.
    loop {
        let size = 3 + payload.encoded_len() + 1 + SIG_LEN * claims.len();
        if size <= MAX_PAYLOAD {
            break;
        }
        let Some(updates) = payload.updates_mut() else {
            break;
        };
        match updates.pop() {
            Some(u) if u.state != MemberState::Alive => {
                claims.pop();
            }
            Some(_) => {}
            None => break,
        }
    }
    if claims.is_empty() {
        return payload;
    }
    Payload::Signed {
        inner: Box::new(payload),
        sigs: claims,
    }
}

/// What [`open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opened {
    /// Claims whose signature did not check under the named accuser's key (dropped).
    pub forged: usize,
    /// Claims that came without a signature (dropped).
    pub unsigned: usize,
}

/// Checks the claims of an incoming membership payload: signed claims that verify under
/// their accuser's key (`key_of`: the directory's, or a rotated one) are kept (and their
/// signatures kept in `kept` to relay); forged or unsigned claims are dropped and counted.
/// Returns the plain payload.
pub fn open(
    payload: Payload,
    key_of: impl Fn(u32) -> Option<ed25519_dalek::VerifyingKey>,
    auth: Auth,
    kept: &mut ClaimSigs,
) -> (Payload, Opened) {
    let mut o = Opened::default();
    let (mut inner, sigs) = match payload {
        Payload::Signed { inner, sigs } => (*inner, sigs),
        p => (p, Vec::new()),
    };
    let Some(updates) = inner.updates_mut() else {
        return (inner, o);
    };
    let mut sigs = sigs.into_iter();
    updates.retain(|u| {
        if u.state == MemberState::Alive {
            return true;
        }
        let Some(sig) = sigs.next() else {
            o.unsigned += 1;
            return false;
        };
        let ok = key_of(u.from).is_some_and(|k| verify(&k, auth, u, &sig));
        if ok {
            kept.insert(u, sig);
        } else {
            o.forged += 1;
        }
        ok
    });
    (inner, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(from: u32) -> Update {
        Update {
            node: 4,
            state: MemberState::Dead,
            incarnation: 7,
            from,
        }
    }

    #[test]
    fn a_claim_checks_only_under_its_accusers_key_and_fields() {
        for auth in [Auth::Ed25519, Auth::TestDigest] {
            let a = SigningKey::from_bytes(&[1; 32]);
            let b = SigningKey::from_bytes(&[2; 32]);
            let u = claim(1);
            let s = sign(&a, auth, &u);
            assert!(verify(&a.verifying_key(), auth, &u, &s));
            // Signed by a relay (b) while naming 1 as accuser: caught.
            assert!(!verify(&a.verifying_key(), auth, &u, &sign(&b, auth, &u)));
            // Any field changed: caught.
            for v in [
                Update { node: 5, ..u },
                Update {
                    state: MemberState::Suspect,
                    ..u
                },
                Update {
                    incarnation: 8,
                    ..u
                },
                Update { from: 2, ..u },
            ] {
                assert!(!verify(&a.verifying_key(), auth, &v, &s), "{v:?}");
            }
        }
    }

    #[test]
    fn kept_signatures_are_bounded() {
        let mut k = ClaimSigs::default();
        for i in 0..(MAX_KEPT as u32 + 10) {
            k.insert(&claim(i), [1; SIG_LEN]);
        }
        assert_eq!(k.len(), MAX_KEPT);
        assert!(k.get(&claim(0)).is_none(), "the oldest is forgotten first");
        assert!(k.get(&claim(MAX_KEPT as u32 + 9)).is_some());
    }

    #[test]
    fn sealed_claims_open_and_forgeries_are_dropped() {
        use crate::addr::{HierAddr, Role};
        use crate::directory::{DirEntry, Directory};
        let keys: Vec<SigningKey> = (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let dir = Directory {
            peers: keys
                .iter()
                .enumerate()
                .map(|(i, k)| DirEntry {
                    name: format!("n{i}"),
                    addr: HierAddr {
                        layer: 0,
                        cluster: 0,
                        cell: 0,
                        tile: i as u16,
                    },
                    role: Role::Tile,
                    key: k.verifying_key(),
                    position_au: [0.0; 3],
                })
                .collect(),
            certified: Default::default(),
        };
        let alive = Update {
            node: 2,
            state: MemberState::Alive,
            incarnation: 1,
            from: 2,
        };
        let ours = claim(0);
        let theirs = claim(1);
        let p = Payload::Gossip {
            updates: vec![alive, ours, theirs],
        };
        // Node 0 holds no signature of 1's claim: it is not relayed.
        let sealed = seal(
            p.clone(),
            0,
            &keys[0],
            Auth::Ed25519,
            &ClaimSigs::default(),
            false,
        );
        let bytes = sealed.encoded_len();
        assert!(bytes > 64);
        let mut kept = ClaimSigs::default();
        let (open_p, o) = open(
            sealed.clone(),
            |n| dir.get(n).map(|e| e.key),
            Auth::Ed25519,
            &mut kept,
        );
        assert_eq!(o, Opened::default());
        assert_eq!(
            open_p,
            Payload::Gossip {
                updates: vec![alive, ours]
            }
        );
        assert!(kept.get(&ours).is_some());
        // A forger (node 0 signing 1's claim with its own key): dropped, counted.
        let forged = seal(p, 0, &keys[0], Auth::Ed25519, &ClaimSigs::default(), true);
        let (open_p, o) = open(
            forged,
            |n| dir.get(n).map(|e| e.key),
            Auth::Ed25519,
            &mut ClaimSigs::default(),
        );
        assert_eq!(o.forged, 1);
        assert_eq!(
            open_p,
            Payload::Gossip {
                updates: vec![alive, ours]
            }
        );
        // Unsigned claims: dropped, counted.
        let plain = Payload::Gossip {
            updates: vec![alive, ours],
        };
        let (_, o) = open(
            plain,
            |n| dir.get(n).map(|e| e.key),
            Auth::Ed25519,
            &mut ClaimSigs::default(),
        );
        assert_eq!(o.unsigned, 1);
    }

    #[test]
    fn signed_payloads_round_trip_and_garbage_never_panics() {
        use rand::{Rng, RngCore, SeedableRng};
        let k = SigningKey::from_bytes(&[1; 32]);
        let p = Payload::Ping {
            probe: 9,
            updates: vec![claim(0), claim(0)],
        };
        let sealed = seal(p, 0, &k, Auth::Ed25519, &ClaimSigs::default(), false);
        assert!(matches!(sealed, Payload::Signed { .. }));
        // Round trip through the frame codec.
        let kind = sealed.kind();
        let enc = {
            let h = crate::wire::Header {
                kind,
                ttl: 1,
                src: 0,
                dst: crate::wire::Dest::Node(1),
                seq: 1,
                hlc: 1,
                src_epoch: 1,
                dst_epoch: 1,
            };
            crate::wire::encode(&h, &sealed, &k)
        };
        let f = crate::wire::parse(&enc).unwrap();
        assert_eq!(f.decode_payload(), Ok(sealed));
        // Fuzz-style, bounded: random and mutated kind-28 payloads decode or fail cleanly.
        let good = f.payload.to_vec();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(28);
        for i in 0..20_000 {
            let b = if i % 2 == 0 {
                let mut b = good.clone();
                let j = rng.gen_range(0..b.len());
                b[j] ^= rng.r#gen::<u8>() | 1;
                b
            } else {
                let mut b = vec![0u8; rng.gen_range(0..400)];
                rng.fill_bytes(&mut b);
                b
            };
            let _ = Payload::decode(crate::wire::KIND_SIGNED, &b);
        }
    }
}
