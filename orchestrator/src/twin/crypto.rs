//! Which signatures a twin run uses. Up to [`CRYPTO_REAL_MAX`] nodes every frame is signed
//! and verified with real Ed25519, as in a lab. Above it (or with `--crypto modelled`)
//! signing and verifying are *modelled* ([`Auth::Modelled`]): HMAC-SHA256 under a secret
//! derived from the scenario seed, held only by the simulation's cores, over the sender's
//! public key and the frame. An honest frame verifies exactly as it would with Ed25519
//! (same outcome, same bytes on the wire: the signature field keeps its 64 bytes); a frame
//! not made by the claimed sender's core — forged, tampered with, garbage — fails as a bad
//! signature. The cost is accounted: the run counts every sign and verify its cores did
//! (the core's `auth_ops` counters), and the host figures multiply them by this host's
//! measured cost of one Ed25519 sign and one verify ([`measure_ed25519`]). The lab never
//! runs this mode: only `lightcone simulate` sets [`Params::auth`] to it.

use std::time::Instant as WallInstant;

use ed25519_dalek::{Signer, SigningKey, Verifier};
use lightcone_core::params::Params;
use lightcone_core::wire::Auth;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Largest system that signs with real Ed25519 unless asked otherwise.
pub const CRYPTO_REAL_MAX: usize = 1_000;

/// What `--crypto` asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CryptoMode {
    /// Real up to [`CRYPTO_REAL_MAX`] nodes, modelled above.
    #[default]
    Auto,
    Real,
    Modelled,
}

impl std::str::FromStr for CryptoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CryptoMode::Auto),
            "real" => Ok(CryptoMode::Real),
            "modelled" | "modeled" => Ok(CryptoMode::Modelled),
            _ => Err(format!(
                "unknown crypto mode {s:?}: use auto, real or modelled"
            )),
        }
    }
}

/// Whether a run of `nodes` nodes asked `mode` models its signatures.
pub fn modelled(mode: CryptoMode, nodes: usize) -> bool {
    match mode {
        CryptoMode::Auto => nodes > CRYPTO_REAL_MAX,
        CryptoMode::Real => false,
        CryptoMode::Modelled => true,
    }
}

/// The modelled mode's secret for a scenario seed (one per run; the same seed, the same
/// bytes on the wire).
pub fn secret(seed: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lightcone twin modelled signatures v1");
    h.update(seed.to_le_bytes());
    h.finalize().into()
}

/// The core parameters of a run: [`Params::default`] with its authentication set.
pub fn params(modelled: bool, seed: u64) -> Params {
    let mut p = Params::default();
    if modelled {
        p.auth = Auth::Modelled(secret(seed));
    }
    p
}

/// The report's words for the mode that ran.
pub fn describe(modelled: bool, mode: CryptoMode, nodes: usize) -> String {
    if !modelled {
        return "ed25519 (every frame signed and verified)".into();
    }
    let why = match mode {
        CryptoMode::Modelled => "asked with --crypto modelled".to_string(),
        _ => format!("{nodes} nodes > {CRYPTO_REAL_MAX}, the real-crypto size"),
    };
    format!(
        "modelled ({why}): HMAC-SHA256 under the simulation's secret stands for Ed25519; honest frames verify, forged ones fail; Ed25519's measured cost per op is added to the CPU tally"
    )
}

/// This host's cost of one Ed25519 sign and one verify of a 200-byte frame, s (the mean
/// of `n` of each).
pub fn measure_ed25519(n: u32) -> (f64, f64) {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let vk = key.verifying_key();
    let msg = [0x5au8; 200];
    let n = n.max(1);
    let t = WallInstant::now();
    let mut sig = key.sign(&msg);
    for _ in 1..n {
        sig = key.sign(std::hint::black_box(&msg));
    }
    let sign_s = t.elapsed().as_secs_f64() / n as f64;
    let t = WallInstant::now();
    for _ in 0..n {
        let ok = vk.verify(std::hint::black_box(&msg), &sig).is_ok();
        std::hint::black_box(ok);
    }
    let verify_s = t.elapsed().as_secs_f64() / n as f64;
    (sign_s, verify_s)
}

/// The modelled mode's CPU tally (host figures; not deterministic).
#[derive(Debug, Clone, Serialize)]
pub struct CryptoTally {
    pub signed: u64,
    pub verified: u64,
    pub ed25519_sign_s: f64,
    pub ed25519_verify_s: f64,
    /// What the ops would have cost with real Ed25519 on this host, s of CPU.
    pub ed25519_cpu_s: f64,
}

impl CryptoTally {
    pub fn of(ops: [u64; 2]) -> CryptoTally {
        let (s, v) = measure_ed25519(200);
        CryptoTally {
            signed: ops[0],
            verified: ops[1],
            ed25519_sign_s: s,
            ed25519_verify_s: v,
            ed25519_cpu_s: ops[0] as f64 * s + ops[1] as f64 * v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_real_up_to_the_stated_size_and_modelled_above() {
        assert!(!modelled(CryptoMode::Auto, CRYPTO_REAL_MAX));
        assert!(modelled(CryptoMode::Auto, CRYPTO_REAL_MAX + 1));
        assert!(!modelled(CryptoMode::Real, 1_000_000));
        assert!(modelled(CryptoMode::Modelled, 2));
        assert_eq!(params(false, 7).auth, Auth::Ed25519);
        assert_eq!(params(true, 7).auth, Auth::Modelled(secret(7)));
        assert_ne!(secret(7), secret(8));
        assert_eq!("modelled".parse::<CryptoMode>(), Ok(CryptoMode::Modelled));
        assert!("fast".parse::<CryptoMode>().is_err());
        assert!(describe(true, CryptoMode::Auto, 5_000).contains("5000 nodes > 1000"));
    }
}
