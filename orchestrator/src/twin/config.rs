//! The twin's nodes and links, from the same pure [`plan`](crate::plan::plan) the lab is
//! built from: one [`AgentConfig`] per node ([`Plan::agent_config`]) with a key derived from
//! the seed (the lab draws its keys from the OS RNG at `up`; the twin must be reproducible),
//! one [`SimLink`] per planned link with the link model's delay and loss. Every link is then
//! put on the wire engine's shaper with its planned [`LinkModel`] ([`LINK_MODEL`]), so jitter,
//! correlated and Gilbert–Elliott loss, duplication, corruption, reordering, rate and queue
//! mean in the twin what they mean on the wire engine.
//!
//! The core's parameters are the defaults ([`Params::default`](lightcone_core::params::Params)),
//! as `Node::new` gives an agent at time scale 1; above it the agent stretches its KV ack
//! timeouts for the host scheduler's real-time latency, which virtual time does not have,
//! so the twin does not.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lightcone_core::config::AgentConfig;
use lightcone_sim::SimLink;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::plan::Plan;
use lightcone_link::model::{LinkModel, LossModel};

/// Xored into the scenario seed to seed the node keys' ChaCha8 stream.
pub const KEY_STREAM: u64 = 0x7477_696e_6b65_7973; // "twinkeys"

/// How the node keys were made, for the report.
pub fn key_statement(seed: u64) -> String {
    format!(
        "ed25519, one 32-byte secret per node in id order from ChaCha8 seeded with seed ^ {KEY_STREAM:#x} (seed {seed}); the lab draws its keys from the OS RNG"
    )
}

/// Each node's secret, in id order: the same seed always gives the same keys.
pub fn secrets(n: usize, seed: u64) -> Vec<[u8; 32]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ KEY_STREAM);
    (0..n).map(|_| rng.gen()).collect()
}

/// The authorities' threshold group key (hex) as a lab's `up` makes it
/// ([`crate::authority::members`]: the same holders and threshold), from a DKG seeded with
/// the scenario seed (the lab draws from the OS RNG); `None` if the DKG fails.
fn authorities_key_hex(plan: &Plan, seed: u64) -> Option<String> {
    let (_, group) = authorities(plan, seed)?;
    Some(hex::encode(group.key.as_bytes()))
}

/// The authorities' shares and group as [`authorities_key_hex`] derives them: what the twin
/// signs a countersigned revocation with (the lab signs with its `keys/` shares).
pub fn authorities(
    plan: &Plan,
    seed: u64,
) -> Option<(
    std::collections::BTreeMap<u32, lightcone_core::trust::threshold::Share>,
    lightcone_core::trust::threshold::Group,
)> {
    let (ids, t, _) = crate::authority::members(plan);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ KEY_STREAM.rotate_left(32));
    lightcone_core::trust::threshold::dkg(&ids, t, &mut rng).ok()
}

/// A node's RNG seed in the twin: the plan's (derived from the topology's seed and the
/// node id), mixed with the scenario seed so another seed is another run.
fn node_seed(plan_seed: u64, seed: u64) -> u64 {
    plan_seed ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93).rotate_left(17)
}

/// The agent configurations of every node, each with its secret (no file: nothing is
/// written), in id order. A node without a time layer keeps no peer list unless it is the
/// first: [`Sim::from_configs`](lightcone_sim::Sim::from_configs) builds the directory all
/// nodes share from the first configuration alone, and only a time layer's clock
/// configuration reads a node's own list. Otherwise N configurations of N peers each take
/// O(N²) memory (20 GB peak RSS at 10⁴ nodes, measured, still in the warm-up).
pub fn agent_configs(plan: &Plan, seed: u64) -> Vec<AgentConfig> {
    let secrets = secrets(plan.nodes.len(), seed);
    let public: Vec<String> = secrets
        .iter()
        .map(|s| hex::encode(SigningKey::from_bytes(s).verifying_key().as_bytes()))
        .collect();
    let authorities = authorities_key_hex(plan, seed);
    // The directory certified by t of the authorities, as a lab's `up` does
    // (`authority::certify_directory`); the simulator checks it at every boot.
    let directory_cert = certify(plan, &public, seed);
    let mut configs: Vec<AgentConfig> = (0..plan.nodes.len())
        .map(|id| {
            let mut cfg = plan.agent_config(id, Path::new("/nonexistent-twin"), &public);
            // As a lab's `up` (`keys::LabKeys::configure`): the authorities' group key and
            // the protocol version their orders need, so the twin speaks what labs speak.
            cfg.authorities_key_hex = authorities.clone();
            cfg.directory_cert_hex = directory_cert.clone();
            cfg.protocol_version = crate::keys::protocol_for(&cfg);
            cfg.secret_key_file = None;
            cfg.secret_key_hex = hex::encode(secrets[id]);
            cfg.seed = node_seed(cfg.seed, seed);
            if id > 0 && cfg.time.is_none() {
                cfg.peers = Vec::new();
            }
            cfg
        })
        .collect();
    // The builds the twin's nodes run, approved by t of the authorities as a lab's `up`
    // approves its agent binary (issue 18's attestation; the twin measures a build as
    // `attest::twin_build`). Only the first configuration carries them: the simulator
    // reads them from it, as it reads the directory.
    let versions: std::collections::BTreeSet<u8> = configs
        .iter()
        .map(|c| c.protocol_version.unwrap_or(lightcone_core::wire::VERSION))
        .collect();
    let approvals = approve(plan, &versions, seed);
    if let Some(first) = configs.first_mut() {
        first.approved_builds = approvals;
    }
    configs
}

/// Threshold-signed approvals (hex entries) of the sound twin build of each protocol
/// version in `versions`, by the shares [`authorities`] derives; none if the DKG fails.
fn approve(plan: &Plan, versions: &std::collections::BTreeSet<u8>, seed: u64) -> Vec<String> {
    let Some((shares, group)) = authorities(plan, seed) else {
        return Vec::new();
    };
    let signers: Vec<&lightcone_core::trust::threshold::Share> =
        shares.values().take(usize::from(group.t)).collect();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 0x6275_696c_6473);
    versions
        .iter()
        .filter_map(|v| lightcone_core::update::Build::new(*v).ok())
        .filter_map(|b| {
            let a = lightcone_core::trust::threshold::BuildApproval {
                sha256: lightcone_core::update::attest::twin_build(&b),
                release: 0,
            };
            let sig =
                lightcone_core::trust::threshold::sign(&group, &signers, &a.message(), &mut rng)
                    .ok()?;
            Some(hex::encode(a.entry(&sig).encode()))
        })
        .collect()
}

/// The authorities' threshold signature over the twin's directory (hex), from the shares
/// [`authorities`] derives; `None` if the DKG or signing fails (then nothing is checked).
fn certify(plan: &Plan, public: &[String], seed: u64) -> Option<String> {
    let (shares, group) = authorities(plan, seed)?;
    let signers: Vec<&lightcone_core::trust::threshold::Share> =
        shares.values().take(usize::from(group.t)).collect();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 0x6469_7265_6374);
    crate::authority::sign_directory(plan, public, &group, &signers, &mut rng).ok()
}

/// How the twin carries a link, for the report.
pub const LINK_MODEL: &str = "every link on the wire engine's shaper (lightcone-link) with its planned model: delay, jitter and its distribution, random/correlated/Gilbert-Elliott loss, duplication, corruption, reordering, rate and queue; a datagram is offered as the frame that carries it in a lab";

/// Loss in parts per million of a plain simulator link, when the model's loss is none or
/// independent random loss (the shaper carries every other kind once the link is shaped).
pub fn loss_ppm(m: &LinkModel) -> Option<u32> {
    match m.loss {
        LossModel::None => Some(0),
        LossModel::Random {
            probability,
            correlation,
        } if correlation <= 0.0 => Some((probability * 1e6).round().clamp(0.0, 1e6) as u32),
        _ => None,
    }
}

/// One [`SimLink`] per planned link, its delay and independent loss: what the simulator's
/// plain links carry until [`simulate`](super::simulate) shapes every one of them.
pub fn sim_links(plan: &Plan) -> Vec<SimLink> {
    plan.links
        .iter()
        .map(|l| SimLink {
            a: l.a.node as u32,
            b: l.b.node as u32,
            delay: Duration::from_nanos(l.model.delay_ns),
            loss_ppm: loss_ppm(&l.model).unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_seed_and_differ_between_nodes() {
        assert_eq!(secrets(3, 7), secrets(3, 7));
        assert_ne!(secrets(3, 7), secrets(3, 8));
        let s = secrets(3, 7);
        assert!(s[0] != s[1] && s[1] != s[2]);
        assert!(key_statement(7).contains("seed 7"));
    }

    #[test]
    fn plain_links_carry_independent_loss_only() {
        let mut m = LinkModel {
            delay_ns: 2_000_000,
            ..Default::default()
        };
        assert_eq!(loss_ppm(&m), Some(0));
        m.loss = LossModel::Random {
            probability: 0.01,
            correlation: 0.0,
        };
        assert_eq!(loss_ppm(&m), Some(10_000));
        m.loss = LossModel::Random {
            probability: 0.01,
            correlation: 0.25,
        };
        assert_eq!(loss_ppm(&m), None);
    }
}
