//! Releases as signed artefacts (issue 18): a build's manifest in the shape of TUF (The
//! Update Framework, spec 1.0: root, targets, snapshot and timestamp roles), each role's
//! metadata signed by a t-of-n FROST threshold signature of the authorities
//! ([`crate::trust::threshold`]) and the release entered in a transparency log
//! ([`crate::trust::log`], an `UpdateApproval` entry with its inclusion proof).
//!
//! **Why not the `tough` crate.** `tough` is a maintained TUF client, but (1) it judges
//! expiry by the wall clock (`chrono::Utc::now`), where the twin and the core need
//! emulated time as an input; (2) its loader is async over URL transports (tokio, and
//! reqwest under `http`), which the sans-IO core may not depend on; (3) its role threshold
//! counts distinct per-key signatures, where ours is one FROST aggregate under the group
//! key. So the TUF *checks* are here, written against the spec's client workflow (§5),
//! and every signature is checked by `ed25519-dalek` (a FROST(Ed25519) aggregate is a plain
//! Ed25519 signature): no cryptography of our own.
//!
//! What [`Verifier::accept`] refuses, each with its own [`ReleaseError`] and nothing
//! changed: a role signed by another role's key, or by fewer than t authorities (FROST
//! cannot aggregate fewer than t shares; anything else is not a valid signature under the
//! group key); a metadata version older than one already trusted (**rollback**); a release
//! not newer than the installed one (**replayed manifest**); metadata past its expiry at
//! `now` (a **frozen** timestamp: an attacker replaying a once-valid timestamp is stopped
//! by its short expiry); a snapshot or targets file that is not the one its parent pins by
//! version and SHA-256 (**mix-and-match**); a release absent from the log.

use sha2::{Digest, Sha256};

use crate::trust::log::{self, Entry, EntryKind, TreeHead};
use crate::trust::threshold;
use ed25519_dalek::VerifyingKey;

/// A TUF role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Root = 1,
    Targets = 2,
    Snapshot = 3,
    Timestamp = 4,
}

/// How a release is to be rolled out (the manifest's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutPolicy {
    /// Soak at each stage before the next, emulated seconds.
    pub soak_s: u32,
    /// Updated tiles rejoin empty (`false`) or hand over their state (`true`; not built).
    pub hand_over_state: bool,
}

/// The target of a release: what build, for which protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// Release number: strictly increasing across releases.
    pub release: u64,
    /// The protocol version the build speaks (it accepts this and the one before).
    pub protocol: u8,
    /// SHA-256 of the agent binary.
    pub binary_sha256: [u8; 32],
    /// Lowest and highest protocol versions the build interoperates with.
    pub compat: (u8, u8),
    pub policy: RolloutPolicy,
}

impl Manifest {
    pub const LEN: usize = 8 + 1 + 32 + 2 + 4 + 1;
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(Self::LEN);
        w.extend_from_slice(&self.release.to_be_bytes());
        w.push(self.protocol);
        w.extend_from_slice(&self.binary_sha256);
        w.extend_from_slice(&[self.compat.0, self.compat.1]);
        w.extend_from_slice(&self.policy.soak_s.to_be_bytes());
        w.push(u8::from(self.policy.hand_over_state));
        w
    }
    pub fn decode(b: &[u8]) -> Result<Manifest, ReleaseError> {
        if b.len() != Self::LEN || b[Self::LEN - 1] > 1 {
            return Err(ReleaseError::Malformed);
        }
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&b[9..41]);
        Ok(Manifest {
            release: u64::from_be_bytes(b[0..8].try_into().map_err(|_| ReleaseError::Malformed)?),
            protocol: b[8],
            binary_sha256: sha,
            compat: (b[41], b[42]),
            policy: RolloutPolicy {
                soak_s: u32::from_be_bytes(
                    b[43..47].try_into().map_err(|_| ReleaseError::Malformed)?,
                ),
                hand_over_state: b[47] == 1,
            },
        })
    }
}

/// One role's signed metadata: `role, version, expires, body` under one threshold
/// signature. Bodies: targets = a [`Manifest`]; snapshot = the targets' version and
/// SHA-256; timestamp = the snapshot's version and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub role: Role,
    pub version: u64,
    /// Not valid at or after this emulated time, ns.
    pub expires_ns: u64,
    pub body: Vec<u8>,
    pub sig: [u8; 64],
}

impl Signed {
    const DOMAIN: &'static [u8] = b"lightcone/tuf/v1";
    /// The message the role's threshold key signs.
    pub fn message(role: Role, version: u64, expires_ns: u64, body: &[u8]) -> Vec<u8> {
        let mut m = Self::DOMAIN.to_vec();
        m.push(role as u8);
        m.extend_from_slice(&version.to_be_bytes());
        m.extend_from_slice(&expires_ns.to_be_bytes());
        m.extend_from_slice(body);
        m
    }
    /// SHA-256 of the whole signed metadata (what a parent role pins).
    pub fn sha256(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(Self::message(
            self.role,
            self.version,
            self.expires_ns,
            &self.body,
        ));
        h.update(self.sig);
        h.finalize().into()
    }
    /// A pin of this metadata: its version and hash (a snapshot's or timestamp's body).
    pub fn pin(&self) -> Vec<u8> {
        let mut b = self.version.to_be_bytes().to_vec();
        b.extend_from_slice(&self.sha256());
        b
    }
}

/// The root of trust: one threshold key per role and the log's signer (TUF's root.json;
/// shipped out of band, as TUF says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub targets: VerifyingKey,
    pub snapshot: VerifyingKey,
    pub timestamp: VerifyingKey,
    /// Signs the heads of the log releases are entered in.
    pub log: VerifyingKey,
}

/// A release as it travels: the three roles' metadata and the log proof.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub timestamp: Signed,
    pub snapshot: Signed,
    pub targets: Signed,
    /// The log's head, the release's entry index in it and the inclusion proof.
    pub head: TreeHead,
    pub index: u64,
    pub proof: Vec<u8>,
}

/// The log entry approving a release: subject = release number (low 32 bits), body = the
/// targets metadata's SHA-256.
pub fn approval_entry(targets: &Signed) -> Result<Entry, ReleaseError> {
    let m = Manifest::decode(&targets.body)?;
    Ok(Entry {
        kind: EntryKind::UpdateApproval,
        subject: m.release as u32,
        body: targets.sha256().to_vec(),
    })
}

/// Why a release was refused. Nothing is changed by a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0:?} metadata: its signature is not a threshold signature of the {0:?} role's authorities (fewer than t signers, another role's key, or tampered)")]
    BadSignature(Role),
    #[error("{role:?} metadata claims to be {found:?} (mix-and-match of roles)")]
    WrongRole { role: Role, found: Role },
    #[error("{role:?} metadata version {found} is older than the trusted {trusted} (rollback)")]
    Rollback {
        role: Role,
        found: u64,
        trusted: u64,
    },
    #[error("{0:?} metadata expired at {1} ns (frozen or stale metadata)")]
    Expired(Role, u64),
    #[error("{0:?} metadata is not the one its parent role pins (mix-and-match)")]
    MixAndMatch(Role),
    #[error(
        "release {found} is not newer than the installed release {installed} (replayed manifest)"
    )]
    Replayed { found: u64, installed: u64 },
    #[error("the release is not in the transparency log (bad head or inclusion proof)")]
    NotLogged,
    #[error("malformed metadata")]
    Malformed,
}

/// A tile's (or the orchestrator's) trusted state: the root and the newest metadata
/// versions and release it accepted (TUF's client-side store).
#[derive(Debug, Clone)]
pub struct Verifier {
    root: Root,
    trusted: [u64; 3],
    installed: u64,
}

fn pin_of(b: &[u8]) -> Result<(u64, [u8; 32]), ReleaseError> {
    if b.len() != 40 {
        return Err(ReleaseError::Malformed);
    }
    let v = u64::from_be_bytes(b[..8].try_into().map_err(|_| ReleaseError::Malformed)?);
    let mut h = [0u8; 32];
    h.copy_from_slice(&b[8..]);
    Ok((v, h))
}

impl Verifier {
    pub fn new(root: Root) -> Verifier {
        Verifier {
            root,
            trusted: [0; 3],
            installed: 0,
        }
    }

    /// A verifier that already trusts metadata versions `trusted` (targets, snapshot,
    /// timestamp) and release `installed`: TUF's client store read back (the orchestrator
    /// keeps it in the lab's state directory between `lightcone update` runs).
    pub fn resume(root: Root, trusted: [u64; 3], installed: u64) -> Verifier {
        Verifier {
            root,
            trusted,
            installed,
        }
    }

    /// The release installed last (0: none).
    pub fn installed(&self) -> u64 {
        self.installed
    }

    /// The newest metadata versions trusted: targets, snapshot, timestamp.
    pub fn trusted(&self) -> [u64; 3] {
        self.trusted
    }

    fn check(&self, s: &Signed, role: Role, now_ns: u64) -> Result<(), ReleaseError> {
        if s.role != role {
            return Err(ReleaseError::WrongRole {
                role,
                found: s.role,
            });
        }
        let key = match role {
            Role::Targets => &self.root.targets,
            Role::Snapshot => &self.root.snapshot,
            Role::Timestamp | Role::Root => &self.root.timestamp,
        };
        let msg = Signed::message(s.role, s.version, s.expires_ns, &s.body);
        if !threshold::verify(key, &msg, &s.sig) {
            return Err(ReleaseError::BadSignature(role));
        }
        let slot = match role {
            Role::Targets => 0,
            Role::Snapshot => 1,
            Role::Timestamp | Role::Root => 2,
        };
        if s.version < self.trusted[slot] {
            return Err(ReleaseError::Rollback {
                role,
                found: s.version,
                trusted: self.trusted[slot],
            });
        }
        if now_ns >= s.expires_ns {
            return Err(ReleaseError::Expired(role, s.expires_ns));
        }
        Ok(())
    }

    /// Checks a release at emulated time `now_ns` (TUF client order: timestamp, snapshot,
    /// targets; then the log) and, if it holds, trusts its versions and installs it.
    pub fn accept(&mut self, b: &Bundle, now_ns: u64) -> Result<Manifest, ReleaseError> {
        self.check(&b.timestamp, Role::Timestamp, now_ns)?;
        if pin_of(&b.timestamp.body)? != (b.snapshot.version, b.snapshot.sha256()) {
            return Err(ReleaseError::MixAndMatch(Role::Snapshot));
        }
        self.check(&b.snapshot, Role::Snapshot, now_ns)?;
        if pin_of(&b.snapshot.body)? != (b.targets.version, b.targets.sha256()) {
            return Err(ReleaseError::MixAndMatch(Role::Targets));
        }
        self.check(&b.targets, Role::Targets, now_ns)?;
        let m = Manifest::decode(&b.targets.body)?;
        if m.release <= self.installed {
            return Err(ReleaseError::Replayed {
                found: m.release,
                installed: self.installed,
            });
        }
        let entry = approval_entry(&b.targets)?;
        b.head
            .verify(&self.root.log)
            .map_err(|_| ReleaseError::NotLogged)?;
        log::verify_inclusion(&b.head, &entry, b.index, &b.proof)
            .map_err(|_| ReleaseError::NotLogged)?;
        self.trusted = [b.targets.version, b.snapshot.version, b.timestamp.version];
        self.installed = m.release;
        Ok(m)
    }
}

/// Signs one role's metadata with the shares of `signers` (at least t of the role's group).
pub fn sign_role(
    group: &threshold::Group,
    signers: &[&threshold::Share],
    role: Role,
    version: u64,
    expires_ns: u64,
    body: Vec<u8>,
    rng: &mut (impl rand::RngCore + rand::CryptoRng),
) -> Result<Signed, threshold::ThresholdError> {
    let sig = threshold::sign(
        group,
        signers,
        &Signed::message(role, version, expires_ns, &body),
        rng,
    )?;
    Ok(Signed {
        role,
        version,
        expires_ns,
        body,
        sig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::log::Log;
    use crate::trust::threshold::{dkg, Group, Share, ThresholdError};
    use ed25519_dalek::SigningKey;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::collections::BTreeMap;

    const SEC: u64 = 1_000_000_000;

    struct Authorities {
        shares: BTreeMap<u32, Share>,
        group: Group,
        log_key: SigningKey,
        log: Log,
        rng: ChaCha20Rng,
    }

    impl Authorities {
        fn new() -> Authorities {
            let mut rng = ChaCha20Rng::seed_from_u64(18);
            // 3-of-5; one group signs every role here, and the test of role mixing uses
            // a second group for the timestamp role.
            let (shares, group) = dkg(&[1, 2, 3, 4, 5], 3, &mut rng).unwrap();
            Authorities {
                shares,
                group,
                log_key: SigningKey::from_bytes(&[7; 32]),
                log: Log::new(),
                rng,
            }
        }
        fn root(&self) -> Root {
            Root {
                targets: self.group.key,
                snapshot: self.group.key,
                timestamp: self.group.key,
                log: self.log_key.verifying_key(),
            }
        }
        fn signers(&self, n: usize) -> Vec<&Share> {
            self.shares.values().take(n).collect()
        }
        /// Release `release`, metadata version `v`, expiring at `exp` s, logged.
        fn release(&mut self, release: u64, v: u64, exp: u64) -> Bundle {
            let m = Manifest {
                release,
                protocol: 3,
                binary_sha256: [release as u8; 32],
                compat: (2, 3),
                policy: RolloutPolicy {
                    soak_s: 60,
                    hand_over_state: false,
                },
            };
            let mut rng = self.rng.clone();
            let signers = self.signers(3);
            let g = &self.group;
            let targets = sign_role(
                g,
                &signers,
                Role::Targets,
                v,
                exp * SEC,
                m.encode(),
                &mut rng,
            )
            .unwrap();
            let snapshot = sign_role(
                g,
                &signers,
                Role::Snapshot,
                v,
                exp * SEC,
                targets.pin(),
                &mut rng,
            )
            .unwrap();
            let timestamp = sign_role(
                g,
                &signers,
                Role::Timestamp,
                v,
                exp * SEC,
                snapshot.pin(),
                &mut rng,
            )
            .unwrap();
            self.rng = rng;
            let index = self.log.append(&approval_entry(&targets).unwrap()).unwrap();
            Bundle {
                timestamp,
                snapshot,
                targets,
                head: self.log.head(9, 0, &self.log_key),
                index,
                proof: self.log.prove_inclusion(index).unwrap(),
            }
        }
    }

    #[test]
    fn a_release_signed_by_t_authorities_and_logged_is_installed() {
        let mut a = Authorities::new();
        let mut v = Verifier::new(a.root());
        let b1 = a.release(1, 1, 100);
        assert_eq!(v.accept(&b1, 10 * SEC).unwrap().release, 1);
        let b2 = a.release(2, 2, 100);
        assert_eq!(v.accept(&b2, 20 * SEC).unwrap().protocol, 3);
        assert_eq!(v.installed(), 2);
    }

    #[test]
    fn fewer_than_t_signers_cannot_sign_and_one_authority_alone_is_refused() {
        let mut a = Authorities::new();
        let two = a.signers(2);
        let r = sign_role(
            &a.group,
            &two,
            Role::Targets,
            1,
            SEC,
            vec![],
            &mut a.rng.clone(),
        );
        assert_eq!(r, Err(ThresholdError::TooFewSigners { have: 2, t: 3 }));
        // A metadata file "signed" by one authority's own key is no group signature.
        let mut b = a.release(1, 1, 100);
        let lone = SigningKey::from_bytes(&[1; 32]);
        use ed25519_dalek::Signer;
        let t = &b.timestamp;
        b.timestamp.sig = lone
            .sign(&Signed::message(t.role, t.version, t.expires_ns, &t.body))
            .to_bytes();
        let mut v = Verifier::new(a.root());
        assert_eq!(
            v.accept(&b, SEC),
            Err(ReleaseError::BadSignature(Role::Timestamp))
        );
        assert_eq!(v.installed(), 0, "nothing changed");
    }

    #[test]
    fn a_replayed_older_manifest_is_refused() {
        let mut a = Authorities::new();
        let mut v = Verifier::new(a.root());
        let b1 = a.release(1, 1, 100);
        let b2 = a.release(2, 2, 100);
        v.accept(&b2, SEC).unwrap();
        // The old release with its old metadata: a rollback of the timestamp role.
        assert_eq!(
            v.accept(&b1, SEC),
            Err(ReleaseError::Rollback {
                role: Role::Timestamp,
                found: 1,
                trusted: 2
            })
        );
        // The same release again (fresh metadata around it): a replayed manifest.
        let b2_again = a.release(2, 3, 100);
        assert_eq!(
            v.accept(&b2_again, SEC),
            Err(ReleaseError::Replayed {
                found: 2,
                installed: 2
            })
        );
        assert_eq!(v.installed(), 2);
    }

    #[test]
    fn a_frozen_timestamp_is_refused_after_its_expiry() {
        let mut a = Authorities::new();
        let mut v = Verifier::new(a.root());
        let b = a.release(1, 1, 30);
        assert_eq!(
            v.accept(&b, 30 * SEC),
            Err(ReleaseError::Expired(Role::Timestamp, 30 * SEC))
        );
        assert_eq!(v.accept(&b, 29 * SEC).unwrap().release, 1);
    }

    #[test]
    fn mixing_roles_and_releases_is_refused() {
        let mut a = Authorities::new();
        let b1 = a.release(1, 1, 100);
        let b2 = a.release(2, 2, 100);
        let root = a.root();
        // The snapshot of release 2 with the targets of release 1.
        let mut mix = b2.clone();
        mix.targets = b1.targets.clone();
        assert_eq!(
            Verifier::new(root).accept(&mix, SEC),
            Err(ReleaseError::MixAndMatch(Role::Targets))
        );
        // A targets file presented as the timestamp.
        let mut swap = b2.clone();
        swap.timestamp = b2.targets.clone();
        assert_eq!(
            Verifier::new(root).accept(&swap, SEC),
            Err(ReleaseError::WrongRole {
                role: Role::Timestamp,
                found: Role::Targets
            })
        );
        // Timestamp signed by the right group, but the root gives that role another key.
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let (_, other) = dkg(&[1, 2, 3], 2, &mut rng).unwrap();
        let root2 = Root {
            timestamp: other.key,
            ..root
        };
        assert_eq!(
            Verifier::new(root2).accept(&b2, SEC),
            Err(ReleaseError::BadSignature(Role::Timestamp))
        );
    }

    #[test]
    fn a_release_missing_from_the_log_is_refused() {
        let mut a = Authorities::new();
        let mut b = a.release(1, 1, 100);
        let other = a.release(2, 2, 100);
        b.proof = other.proof.clone();
        b.index = other.index;
        b.head = other.head;
        let mut v = Verifier::new(a.root());
        assert_eq!(v.accept(&b, SEC), Err(ReleaseError::NotLogged));
        assert!(Manifest::decode(&[0; 3]).is_err());
    }
}
