//! Secrets of a running lab, drawn from the OS RNG (`getrandom(2)` through `rand`'s
//! `OsRng`) each time a lab comes up: the API token and one ed25519 identity per node.
//!
//! Nothing secret is derived from the topology: the plan stays a pure function of the YAML
//! (snapshot-tested), and anyone holding the topology file still cannot sign as a node or
//! drive the API. Node keys are written as hex, one file per node, 0600 in the lab's
//! `keys/` directory (0700); an agent's configuration names its file and holds only public
//! keys. The lab's operator root key (issue 17: every capability token of the lab chains to
//! it, see [`lightcone_agent::caps`]) is drawn the same way into `keys/operator.key`; agents
//! get its public half. A restarted agent reads the same file, so its peers keep trusting it. If the OS
//! RNG fails, `up` fails: there is no fallback to a weaker source.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use lightcone_agent::caps::OperatorKey;
use rand::RngCore;

use crate::state::{write_private_unsynced, LabDir};

/// Why a lab's secrets could not be made. Nothing was written that a running lab uses.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the OS random number generator failed ({0}); refusing to make a lab token or node keys without it")]
    Rng(String),
    #[error("write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("read {path}: {source} (a lab brought up without agents has no operator key)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} lets group or others read it; an operator key must be 0600")]
    NotPrivate { path: String },
    #[error("operator key {path}: {why}")]
    Operator { path: String, why: String },
}

/// Where a lab's secrets come from: the OS RNG, or — for a lab across hosts, whose hosts
/// must hold the same keys — ChaCha20 seeded with the secret the controller drew from its
/// OS RNG (see `hosts::slice::LabWide`).
pub enum LabRng {
    Os(rand::rngs::OsRng),
    Seeded(Box<rand_chacha::ChaCha20Rng>),
}

impl LabRng {
    pub fn seeded(seed: [u8; 32]) -> LabRng {
        use rand::SeedableRng;
        LabRng::Seeded(Box::new(rand_chacha::ChaCha20Rng::from_seed(seed)))
    }
}

impl RngCore for LabRng {
    fn next_u32(&mut self) -> u32 {
        match self {
            LabRng::Os(r) => r.next_u32(),
            LabRng::Seeded(r) => r.next_u32(),
        }
    }
    fn next_u64(&mut self) -> u64 {
        match self {
            LabRng::Os(r) => r.next_u64(),
            LabRng::Seeded(r) => r.next_u64(),
        }
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        match self {
            LabRng::Os(r) => r.fill_bytes(dest),
            LabRng::Seeded(r) => r.fill_bytes(dest),
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        match self {
            LabRng::Os(r) => r.try_fill_bytes(dest),
            LabRng::Seeded(r) => r.try_fill_bytes(dest),
        }
    }
}

// Both are cryptographically secure generators.
impl rand::CryptoRng for LabRng {}

/// Fill `buf` from `rng`, or say why it could not be.
pub fn fill(rng: &mut impl RngCore, buf: &mut [u8]) -> Result<(), SecretError> {
    rng.try_fill_bytes(buf)
        .map_err(|e| SecretError::Rng(e.to_string()))
}

/// A fresh API token: 128 bits from `rng`, hex.
pub fn token(rng: &mut impl RngCore) -> Result<String, SecretError> {
    let mut b = [0u8; 16];
    fill(rng, &mut b)?;
    Ok(hex::encode(b))
}

/// The public halves of a lab's node keys, by node id.
#[derive(Debug, Clone)]
pub struct LabKeys {
    public_hex: Vec<String>,
    operator_public_hex: String,
    /// The authorities' threshold group key (hex; [`crate::authority`]), once made.
    authorities_hex: Option<String>,
    /// The authorities' threshold signature over the lab's directory (hex), once made.
    directory_cert_hex: Option<String>,
}

/// Where the lab's operator root key lives (hex seed, 0600).
pub fn operator_path(dir: &LabDir) -> PathBuf {
    dir.keys().join("operator.key")
}

/// The lab's operator root key, read from its 0600 file (written at `up`).
pub fn operator_key(dir: &LabDir) -> Result<OperatorKey, SecretError> {
    let path = operator_path(dir);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| SecretError::Read {
        path: shown.clone(),
        source,
    })?;
    if !is_private(&path) {
        return Err(SecretError::NotPrivate { path: shown });
    }
    let bad = |why: String| SecretError::Operator {
        path: shown.clone(),
        why,
    };
    let seed: [u8; 32] = hex::decode(text.trim())
        .map_err(|e| bad(e.to_string()))?
        .try_into()
        .map_err(|_| bad("not 32 bytes".into()))?;
    OperatorKey::from_seed(&seed).map_err(|e| bad(e.to_string()))
}

/// Where the lab keeps the revocation ids it pushed (`POST /api/revoke`), so that an agent
/// started later (a restart) is configured with them.
pub fn revoked_path(dir: &LabDir) -> PathBuf {
    dir.keys().join("revoked.json")
}

/// The revocation ids the lab pushed so far, oldest first (none when the file is absent
/// or unreadable: a lab that never revoked).
pub fn revoked_ids(dir: &LabDir) -> Vec<String> {
    std::fs::read(revoked_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds `id` to the lab's revocation list (once), written before it is pushed: an agent
/// restarting meanwhile reads it from its configuration.
pub fn add_revoked(dir: &LabDir, id: &str) -> std::io::Result<()> {
    let mut ids = revoked_ids(dir);
    if ids.iter().any(|x| x == id) {
        return Ok(());
    }
    ids.push(id.to_string());
    let bytes = serde_json::to_vec_pretty(&ids).map_err(std::io::Error::other)?;
    crate::state::write_private(&revoked_path(dir), &bytes)
}

/// Where node `id`'s secret key lives (the path its agent's configuration names).
pub fn secret_path(dir: &LabDir, id: usize) -> PathBuf {
    crate::plan::agent_key_file(&dir.path, id)
}

impl LabKeys {
    /// Draw `nodes` keys from `rng` and write each secret 0600 into the lab's `keys/`.
    pub fn generate(
        dir: &LabDir,
        nodes: usize,
        rng: &mut impl RngCore,
    ) -> Result<LabKeys, SecretError> {
        let mut public_hex = Vec::with_capacity(nodes);
        for id in 0..nodes {
            let mut seed = [0u8; 32];
            fill(rng, &mut seed)?;
            let key = SigningKey::from_bytes(&seed);
            let path = secret_path(dir, id);
            write_private_unsynced(&path, hex::encode(key.to_bytes()).as_bytes()).map_err(
                |source| SecretError::Write {
                    path: path.display().to_string(),
                    source,
                },
            )?;
            public_hex.push(hex::encode(key.verifying_key().as_bytes()));
        }
        let mut seed = [0u8; 32];
        fill(rng, &mut seed)?;
        let path = operator_path(dir);
        let operator = OperatorKey::from_seed(&seed).map_err(|e| SecretError::Operator {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        write_private_unsynced(&path, hex::encode(seed).as_bytes()).map_err(|source| {
            SecretError::Write {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(LabKeys {
            public_hex,
            operator_public_hex: operator.public_hex(),
            authorities_hex: None,
            directory_cert_hex: None,
        })
    }

    /// Every agent gets the authorities' group key `hex` (see [`crate::authority`]).
    pub fn set_authorities(&mut self, hex: String) {
        self.authorities_hex = Some(hex);
    }

    /// Every agent gets the authorities' certificate of the directory (hex; see
    /// [`crate::authority::certify_directory`]) and checks it when it starts.
    pub fn set_directory_cert(&mut self, hex: String) {
        self.directory_cert_hex = Some(hex);
    }

    /// Gives an agent's configuration the lab's public keys: the operator root (capability
    /// tokens) and the authorities' group key (runtime orders), with the protocol version
    /// orders need ([`protocol_for`]).
    pub fn configure(&self, cfg: &mut lightcone_core::config::AgentConfig) {
        cfg.operator_public_key_hex = Some(self.operator_public_hex.clone());
        cfg.authorities_key_hex = self.authorities_hex.clone();
        cfg.directory_cert_hex = self.directory_cert_hex.clone();
        cfg.protocol_version = protocol_for(cfg);
    }

    /// The authorities' group key (hex) agents check orders with, if the lab has one.
    pub fn authorities_hex(&self) -> Option<&str> {
        self.authorities_hex.as_deref()
    }

    /// The operator root key's public half (hex), for agents' configurations.
    pub fn operator_public_hex(&self) -> &str {
        &self.operator_public_hex
    }

    /// Public keys (hex), by node id.
    pub fn public_hex(&self) -> &[String] {
        &self.public_hex
    }
}

/// The protocol version an agent holding the authorities' key runs: orders (kind 35) are
/// parsed from version 3 on, and a version-2 tile drops a relayed order as `unknown_kind`
/// (`lightcone_core::update`), so a scope of version-2 tiles darkens only the tile the
/// CLI handed the order to. An explicit version in the configuration is kept.
pub fn protocol_for(cfg: &lightcone_core::config::AgentConfig) -> Option<u8> {
    let needed = lightcone_core::wire::kind_since(lightcone_core::wire::KIND_ORDER);
    match (cfg.protocol_version, &cfg.authorities_key_hex) {
        (Some(v), _) => Some(v),
        (None, Some(_)) => Some(needed.max(lightcone_core::wire::VERSION)),
        (None, None) => None,
    }
}

/// Whether a key file is private to its owner (no group or other permission bits).
pub fn is_private(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    /// An RNG that always fails, as `getrandom` does when the kernel gives no entropy
    /// source (no `getrandom(2)`, no `/dev/urandom` in a broken chroot).
    struct Broken;
    impl RngCore for Broken {
        fn next_u32(&mut self) -> u32 {
            unreachable!("only try_fill_bytes is used")
        }
        fn next_u64(&mut self) -> u64 {
            unreachable!("only try_fill_bytes is used")
        }
        fn fill_bytes(&mut self, _: &mut [u8]) {
            unreachable!("only try_fill_bytes is used")
        }
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), rand::Error> {
            Err(rand::Error::new(std::io::Error::other("no entropy source")))
        }
    }

    #[test]
    fn a_failing_rng_fails_instead_of_giving_zeros() {
        let e = token(&mut Broken).unwrap_err();
        assert!(e.to_string().contains("no entropy source"), "{e}");
        let t = token(&mut OsRng).unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, "0".repeat(32));
        assert_ne!(t, token(&mut OsRng).unwrap());
    }

    #[test]
    fn node_keys_are_random_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LabDir {
            lab: "k".into(),
            path: tmp.path().to_path_buf(),
        };
        std::fs::create_dir(dir.keys()).unwrap();
        let a = LabKeys::generate(&dir, 3, &mut OsRng).unwrap();
        let first = std::fs::read_to_string(secret_path(&dir, 0)).unwrap();
        let b = LabKeys::generate(&dir, 3, &mut OsRng).unwrap();
        // Two labs from the same topology (same seed, names) get different identities.
        assert_ne!(a.public_hex(), b.public_hex());
        assert_ne!(
            first,
            std::fs::read_to_string(secret_path(&dir, 0)).unwrap()
        );
        for id in 0..3 {
            assert!(is_private(&secret_path(&dir, id)), "key {id} not 0600");
            let hexkey = std::fs::read_to_string(secret_path(&dir, id)).unwrap();
            let seed: [u8; 32] = hex::decode(hexkey).unwrap().try_into().unwrap();
            assert_eq!(
                hex::encode(SigningKey::from_bytes(&seed).verifying_key().as_bytes()),
                b.public_hex()[id]
            );
        }
        // The operator key: private, random per lab, its public half what agents get.
        assert!(is_private(&operator_path(&dir)));
        assert_eq!(
            operator_key(&dir).unwrap().public_hex(),
            b.operator_public_hex()
        );
        assert_ne!(a.operator_public_hex(), b.operator_public_hex());
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(operator_path(&dir), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        assert!(matches!(
            operator_key(&dir),
            Err(SecretError::NotPrivate { .. })
        ));
        assert!(matches!(
            LabKeys::generate(&dir, 1, &mut Broken),
            Err(SecretError::Rng(_))
        ));
    }
}
