//! Attestation: an emulated secure boot (issue 18's tile runtime).
//!
//! At start a node is given its **measurement** ([`Measurement`]): the SHA-256 of its agent
//! build (the binary's bytes, as the agent driver reads `/proc/self/exe`; the twin uses
//! [`twin_build`] of the build it models) and of its configuration file. It signs the
//! measurement with its tile key, bound to its boot epoch ([`message`]), and tells every
//! neighbour ([`crate::wire::Payload::Attest`], kind 39, link-local).
//!
//! A node that **requires** attestation (it was given approvals: threshold-signed
//! [`crate::trust::threshold::BuildApproval`] entries (kind `BuildApproval`) of the
//! lab's release log) takes a neighbour into routing only once that neighbour presented,
//! for its current boot, a measurement signed by its own key whose build the authorities
//! approved: until then the link stays down in [`crate::routing::Routing`] (no route
//! through it, no route learned from it; membership and every other protocol still hear
//! it, so the refused tile is *seen* alive and *routed around*). An approval that arrives
//! later (flooded as a trust entry) admits the neighbours it approves at once. A neighbour
//! that reboots is forgotten until it attests again: its new boot may run another build.
//!
//! The configuration's hash is carried, recorded and shown (`/state`), not judged: each
//! tile's configuration differs (its id, its links), and the lab's configurations are the
//! supervisor's, which the directory certificate already binds the keys of.
//!
//! Refusals, counted on the `watch` direction: `attest_forged` (the signature does not
//! verify under the sender's key for its current boot: a forgery, or a replay of another
//! boot's attestation) and `attest_unapproved` (a valid attestation of a build nobody
//! approved). Neither changes anything but the counter and the neighbour's record.
//!
//! Exchange: a node sends its attestation to every neighbour at start; a neighbour heard
//! from without a valid attestation is asked again (an attestation with `reply` false)
//! at most once per [`ATTEST_RETRY`] (or three link delays, if longer); an attestation
//! that is not a reply is answered with ours. Loss only delays admission.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::wire::Auth;
use serde::Serialize;
use sha2::Digest;

use crate::time::Instant;
use crate::wire::Payload;

/// A neighbour without a valid attestation is asked again after this long.
pub const ATTEST_RETRY: Duration = Duration::from_secs(2);

const DOMAIN: &[u8] = b"lightcone/attest/v1";

/// What a node runs: the SHA-256 of its build and of its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measurement {
    pub build: [u8; 32],
    pub config: [u8; 32],
}

/// The bytes a node signs to attest `m` for boot `epoch`.
pub fn message(node: u32, epoch: u32, m: &Measurement) -> Vec<u8> {
    let mut v = DOMAIN.to_vec();
    v.extend_from_slice(&node.to_be_bytes());
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(&m.build);
    v.extend_from_slice(&m.config);
    v
}

/// Signs `msg` as the node's frames are signed (`auth`: Ed25519 in labs; the twin's
/// modelled signatures above its real-crypto size, as [`crate::claims`] does).
fn sign_as(key: &SigningKey, auth: Auth, msg: &[u8]) -> [u8; 64] {
    match auth {
        Auth::Ed25519 => key.sign(msg).to_bytes(),
        Auth::TestDigest => crate::wire::digest_sig(&key.verifying_key(), msg),
        Auth::Modelled(secret) => crate::wire::modelled_sig(&secret, &key.verifying_key(), msg),
    }
}

fn verify_as(key: &VerifyingKey, auth: Auth, msg: &[u8], sig: &[u8; 64]) -> bool {
    match auth {
        Auth::Ed25519 => key.verify(msg, &Signature::from_bytes(sig)).is_ok(),
        Auth::TestDigest => crate::wire::digest_sig(key, msg) == *sig,
        Auth::Modelled(secret) => crate::wire::modelled_sig(&secret, key, msg) == *sig,
    }
}

/// The build measurement the twin gives a node running `build` (it has no binary): the
/// SHA-256 of a tag, the protocol version and the defect, so every distinct build the twin
/// models has its own hash.
pub fn twin_build(build: &crate::update::Build) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(b"lightcone/twin-build/v1");
    h.update([build.version]);
    h.update(build.forward_drop_ppm.to_be_bytes());
    h.finalize().into()
}

/// A neighbour's attestation, as last checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAttestation {
    /// The boot it was signed for.
    pub epoch: u32,
    pub measurement: Measurement,
    /// Whether its build is approved (and the neighbour admitted to routing).
    pub admitted: bool,
}

/// What [`Attestation::on_attest`] made of an attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and approved: admit the neighbour (`newly`: it was not admitted before).
    Admitted { newly: bool },
    /// Valid, but its build is not approved.
    Unapproved,
    /// The signature does not verify for the sender's current boot.
    Forged,
}

/// A node's attestation state: its own signed measurement and its neighbours'.
#[derive(Debug, Clone, Default)]
pub struct Attestation {
    measurement: Option<Measurement>,
    /// Our signature over the measurement for this boot (set at [`Attestation::sign`]).
    sig: Option<[u8; 64]>,
    required: bool,
    peers: BTreeMap<u32, PeerAttestation>,
    asked: BTreeMap<u32, Instant>,
}

/// What `/state` shows of attestation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttestView {
    /// This node's build and configuration SHA-256 (hex), if measured.
    pub build: Option<String>,
    pub config: Option<String>,
    /// Whether this node admits only neighbours with an approved build.
    pub required: bool,
    /// Neighbours that attested an approved build (admitted to routing).
    pub admitted: Vec<u32>,
    /// Neighbours that attested a build not approved, with its SHA-256 (hex).
    pub refused: Vec<(u32, String)>,
}

impl Attestation {
    /// Sets this node's measurement (signed at [`Attestation::sign`]).
    pub fn set_measurement(&mut self, m: Measurement) {
        self.measurement = Some(m);
    }

    /// From now on, neighbours are admitted to routing only with an approved build.
    pub fn require(&mut self) {
        self.required = true;
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Signs the measurement for boot `epoch` of node `me` (at start; nothing without a
    /// measurement).
    pub fn sign(&mut self, key: &SigningKey, auth: Auth, me: u32, epoch: u32) {
        if let Some(m) = self.measurement {
            let sig = sign_as(key, auth, &message(me, epoch, &m));
            self.sig = Some(sig);
        }
    }

    /// Our attestation as a payload (`None`: not measured).
    pub fn payload(&self, reply: bool) -> Option<Payload> {
        let (m, sig) = (self.measurement?, self.sig?);
        Some(Payload::Attest {
            build: m.build,
            config: m.config,
            reply,
            sig,
        })
    }

    /// Whether neighbour `n` holds a valid, approved attestation.
    pub fn admitted(&self, n: u32) -> bool {
        self.peers.get(&n).is_some_and(|p| p.admitted)
    }

    /// Forgets neighbour `n` (it rebooted); true when it was admitted.
    pub fn forget(&mut self, n: u32) -> bool {
        self.asked.remove(&n);
        self.peers.remove(&n).is_some_and(|p| p.admitted)
    }

    /// Checks neighbour `n`'s attestation for its boot `epoch` under its key.
    #[allow(clippy::too_many_arguments)]
    pub fn on_attest(
        &mut self,
        n: u32,
        epoch: u32,
        key: &VerifyingKey,
        auth: Auth,
        measurement: Measurement,
        sig: &[u8; 64],
        approved: impl Fn(&[u8; 32]) -> bool,
    ) -> Verdict {
        let msg = message(n, epoch, &measurement);
        if !verify_as(key, auth, &msg, sig) {
            return Verdict::Forged;
        }
        let ok = approved(&measurement.build);
        let was = self.admitted(n);
        self.peers.insert(
            n,
            PeerAttestation {
                epoch,
                measurement,
                admitted: ok,
            },
        );
        if ok {
            Verdict::Admitted { newly: !was }
        } else {
            Verdict::Unapproved
        }
    }

    /// A new approval arrived: neighbours it approves are admitted; their ids.
    pub fn recheck(&mut self, approved: impl Fn(&[u8; 32]) -> bool) -> Vec<u32> {
        let mut now_in = Vec::new();
        for (n, p) in &mut self.peers {
            if !p.admitted && approved(&p.measurement.build) {
                p.admitted = true;
                now_in.push(*n);
            }
        }
        now_in
    }

    /// Neighbours of `heard` (heard from lately) to ask for their attestation now: those
    /// without a valid one, not asked within the retry interval (`delay` of each link).
    pub fn due(&mut self, now: Instant, heard: &[(u32, Duration)]) -> Vec<u32> {
        if self.sig.is_none() {
            return Vec::new();
        }
        let mut due = Vec::new();
        for &(n, delay) in heard {
            if self.peers.contains_key(&n) {
                continue;
            }
            let retry = ATTEST_RETRY.max(delay.saturating_mul(3));
            if self
                .asked
                .get(&n)
                .is_some_and(|t| now.saturating_since(*t) < retry)
            {
                continue;
            }
            self.asked.insert(n, now);
            due.push(n);
        }
        due
    }

    /// Records that neighbour `n` was sent our attestation at `now`.
    pub fn sent(&mut self, n: u32, now: Instant) {
        self.asked.insert(n, now);
    }

    /// A neighbour's record, if it attested.
    pub fn peer(&self, n: u32) -> Option<&PeerAttestation> {
        self.peers.get(&n)
    }

    /// Entries held (see [`crate::Node::footprint`]).
    pub fn len(&self) -> usize {
        self.peers.len() + self.asked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn view(&self) -> AttestView {
        AttestView {
            build: self.measurement.map(|m| hex::encode(m.build)),
            config: self.measurement.map(|m| hex::encode(m.config)),
            required: self.required,
            admitted: self
                .peers
                .iter()
                .filter(|(_, p)| p.admitted)
                .map(|(n, _)| *n)
                .collect(),
            refused: self
                .peers
                .iter()
                .filter(|(_, p)| !p.admitted)
                .map(|(n, p)| (*n, hex::encode(p.measurement.build)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Auth = Auth::Ed25519;

    fn m(b: u8) -> Measurement {
        Measurement {
            build: [b; 32],
            config: [b.wrapping_add(1); 32],
        }
    }

    #[test]
    fn only_a_signed_approved_build_of_the_current_boot_is_admitted() {
        let k = SigningKey::from_bytes(&[1; 32]);
        let mut a = Attestation::default();
        a.require();
        let approve_5 = |h: &[u8; 32]| *h == [5u8; 32];
        let sig = k.sign(&message(7, 2, &m(5))).to_bytes();
        // Another node's name, another boot, another build, another key: forged.
        let vk = k.verifying_key();
        assert_eq!(
            a.on_attest(8, 2, &vk, E, m(5), &sig, approve_5),
            Verdict::Forged
        );
        assert_eq!(
            a.on_attest(7, 3, &vk, E, m(5), &sig, approve_5),
            Verdict::Forged
        );
        assert_eq!(
            a.on_attest(7, 2, &vk, E, m(6), &sig, approve_5),
            Verdict::Forged
        );
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key();
        assert_eq!(
            a.on_attest(7, 2, &other, E, m(5), &sig, approve_5),
            Verdict::Forged
        );
        assert!(!a.admitted(7) && a.peer(7).is_none());
        // Valid: admitted once; the echo is not new.
        assert_eq!(
            a.on_attest(7, 2, &vk, E, m(5), &sig, approve_5),
            Verdict::Admitted { newly: true }
        );
        assert_eq!(
            a.on_attest(7, 2, &vk, E, m(5), &sig, approve_5),
            Verdict::Admitted { newly: false }
        );
        // A valid attestation of an unapproved build.
        let sig6 = k.sign(&message(9, 1, &m(6))).to_bytes();
        assert_eq!(
            a.on_attest(9, 1, &vk, E, m(6), &sig6, approve_5),
            Verdict::Unapproved
        );
        assert!(!a.admitted(9));
        assert_eq!(a.view().refused, vec![(9, hex::encode([6u8; 32]))]);
        // Its approval arrives: admitted without another exchange.
        assert_eq!(a.recheck(|h| *h == [5u8; 32] || *h == [6u8; 32]), vec![9]);
        assert!(a.admitted(9));
        // A reboot forgets.
        assert!(a.forget(7));
        assert!(!a.admitted(7));
    }

    #[test]
    fn neighbours_are_asked_again_only_after_the_retry() {
        let k = SigningKey::from_bytes(&[1; 32]);
        let mut a = Attestation::default();
        let t0 = Instant::from_nanos(0);
        // Not measured: asks nobody.
        assert!(a.due(t0, &[(1, Duration::ZERO)]).is_empty());
        a.set_measurement(m(1));
        a.sign(&k, E, 0, 1);
        assert!(a.payload(false).is_some());
        let heard = [(1, Duration::ZERO), (2, Duration::from_secs(1))];
        assert_eq!(a.due(t0, &heard), vec![1, 2]);
        assert!(a.due(t0 + Duration::from_millis(1999), &heard).is_empty());
        assert_eq!(a.due(t0 + ATTEST_RETRY, &heard), vec![1]);
        assert_eq!(a.due(t0 + Duration::from_secs(3), &heard), vec![2]);
        // Twin builds differ by version and by defect.
        let b = crate::update::Build::default();
        assert_ne!(twin_build(&b), twin_build(&b.with_forward_drop(1).unwrap()));
    }
}
