//! The agent's configuration: what the orchestrator's plan hands each agent.
//!
//! The orchestrator writes one JSON file per node (`<state>/agents/<node>.json`) and starts
//! `lightcone-agent --config FILE` inside the node's namespace. This type is the contract
//! between the two crates: the orchestrator builds it from the plan, the agent reads it and
//! never looks anywhere else for lab layout.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::addr::{HierAddr, Role};
use crate::byzantine::Byzantine;

/// UDP port every agent listens on, on each of its link addresses.
pub const AGENT_UDP_PORT: u16 = 7946;

/// Every node of the lab, as every agent knows it: the directory of identities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The node's name in the topology.
    pub name: String,
    /// Dense index of the node in the plan (0..n); the wire format uses it as the node id.
    pub id: u32,
    pub addr: HierAddr,
    pub role: Role,
    /// ed25519 public key, hex.
    pub public_key_hex: String,
    /// Position in astronomical units (heliocentric, arbitrary fixed frame).
    pub position_au: [f64; 3],
}

/// A direct link to a neighbour: where to send datagrams for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbor {
    /// Neighbour's node id (index into `AgentConfig::peers`).
    pub id: u32,
    /// Interface in this node's namespace that carries the link.
    pub ifname: String,
    /// This node's address on the link.
    pub local_ip: Ipv4Addr,
    /// The neighbour's address on the link.
    pub peer_ip: Ipv4Addr,
    /// Configured one-way delay of the link in emulated nanoseconds (a routing cost hint).
    pub delay_emulated_ns: u64,
}

/// Everything one agent needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Lab name.
    pub lab: String,
    /// This node's id (index into `peers`).
    pub id: u32,
    /// Emulated seconds per real second.
    pub time_scale: f64,
    /// Seed for the agent's RNG (derived from the lab seed and the node id).
    pub seed: u64,
    /// ed25519 secret key seed (32 bytes), hex. Empty when `secret_key_file` names it
    /// instead (as the orchestrator does: its configs hold no secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_key_hex: String,
    /// A file holding the secret key seed as hex, readable by its owner only (0600); the
    /// driver reads it at start and refuses a file others can read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// UDP port the agent binds on each of its link addresses.
    pub udp_port: u16,
    /// Unix socket for the HTTP control/metrics API.
    pub control_socket: PathBuf,
    /// Every node of the lab, indexed by id.
    pub peers: Vec<PeerInfo>,
    /// Direct links of this node, ordered by neighbour id.
    pub neighbors: Vec<Neighbor>,
    /// The lab epoch on the host's `CLOCK_MONOTONIC`, ns. All namespaces share that clock,
    /// so agents that count emulated time from it agree on "true now" (the ground truth the
    /// time layer measures its error against). `None`: the agent's own start is its epoch.
    #[serde(default)]
    pub epoch_monotonic_ns: Option<u64>,
    /// How well that epoch is known against the lab's, real ns: 0 on one host (one clock);
    /// on a lab across hosts, the bound of the host's clock-offset estimate (issue 19),
    /// so every ground-truth time error this node reports is known only to ± this.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch_uncertainty_ns: u64,
    /// The node's clock (issue 5). `None`: the agent runs without a time layer.
    #[serde(default)]
    pub time: Option<TimeConfig>,
    /// Which boot of this node this is: 1 for the first, one more for each restart (the
    /// supervisor counts). Frames are bound to it (see `wire`), so a restarted agent
    /// rejects frames captured before its restart.
    #[serde(default = "first_boot")]
    pub boot: u32,
    /// The thermal subsystem (issue 15: heat as a schedulable resource). `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal: Option<crate::heat::config::ThermalConfig>,
    /// The protocol version this agent's build speaks (issue 18: it accepts this one and
    /// the one before). `None`: [`crate::wire::VERSION`], as before versions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u8>,
    /// The object store (issue 16), the topology's `store:` section; `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<crate::store::config::StoreConfig>,
    /// The lab's operator public key (Ed25519, hex): the root every capability token on
    /// the agent's control API must chain to (issue 17; the agent's `caps` module).
    /// `None`: the agent accepts no state-changing control request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_public_key_hex: Option<String>,
    /// Revocation ids (hex) of capability tokens the lab revoked before this agent
    /// started: a restarted agent refuses them from its first request, as the running
    /// ones do since `POST /revoke` (issue 17). Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_ids: Vec<String>,
    /// The authorities' threshold group key (FROST t-of-n over Ed25519, 32 bytes hex; issue
    /// 17/18): runtime orders (panic-to-dark, `POST /order`) and trust entries must verify
    /// under it. `None`: the node trusts no authorities and refuses every order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorities_key_hex: Option<String>,
    /// The authorities' threshold signature (64 bytes hex) over the peer directory
    /// ([`crate::directory::Directory::certified_message`]): certifies every node's key at
    /// once. When given, the agent refuses to start unless it verifies under
    /// `authorities_key_hex`. `None`: not checked (a configuration written by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_cert_hex: Option<String>,
    /// The last runtime-order serial the lab signed before this agent started: orders at
    /// or below it are refused as replays (a restarted agent would otherwise take an old
    /// order again). 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub order_serial_floor: u64,
    /// Issue 17's watch hardening, the topology's `trust:` section. `None`: all off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustOptions>,
    /// Agent builds the authorities approved (issue 18's attestation): encoded
    /// `BuildApproval` log entries, hex, each threshold-signed under
    /// `authorities_key_hex`. When given, the agent takes a neighbour into routing only
    /// once it attested an approved build (see `update::attest`), and refuses to start if
    /// an entry does not verify. Empty: attestation not required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_builds: Vec<String>,
    /// Key certificates the authorities issued after `up` (issue 17's key rotation):
    /// encoded `Certificate` log entries, hex, each threshold-signed under
    /// `authorities_key_hex`. Applied at start, so a restarted node takes every rotated key
    /// (its own included: its secret key may be the certified one instead of the
    /// directory's). An entry that does not verify stops the node from starting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}

/// Issue 17's options of the neighbourhood watch a lab turns on (the topology's `trust:`
/// section; `WatchParams::with_trust` in the watch module applies them and says what each
/// does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustOptions {
    /// Suspect/dead claims carry their accuser's signature; forged ones are evidence.
    #[serde(default)]
    pub signed_claims: bool,
    /// Each node logs its verdicts and gossips signed tree heads; a split view is evidence.
    #[serde(default)]
    pub log_heads: bool,
    /// Convictions and re-admissions of a cell's members are decided by the cell's BFT
    /// group (the trust module's verdicts).
    #[serde(default)]
    pub bft_verdicts: bool,
    /// Heat leases within a cell are granted through the cell's BFT log, so no lease is
    /// held by two tiles even when its owner lies (`crate::heat::grants`). Default off.
    #[serde(default)]
    pub bft_leases: bool,
    /// How long a convicted node stays quarantined before its re-admission is considered
    /// (the watch's `quarantine_term`, doubled per earlier conviction), emulated ms. `None`:
    /// the watch's default (300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_term_ms: Option<u64>,
    /// How long our own evidence against a node holds after we found it (the watch's
    /// `evidence_ttl`), emulated ms. `None`: the default (120 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_ttl_ms: Option<u64>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn first_boot() -> u32 {
    crate::wire::FIRST_EPOCH
}

/// What the agent's [`lightcone_timing::NodeClock`] needs beyond the directory (which gives
/// its role and position). The plan chooses these; see `orchestrator/src/plan.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeConfig {
    /// Upstream time servers by node id, best first (empty for an authority; at most 8).
    pub servers: Vec<u32>,
    /// Interval between two-way time transfer exchanges with each server, emulated ns.
    pub poll_interval_ns: u64,
    /// Pulsar integration time per fix, emulated s (1 s ..= 1 day).
    pub pulsar_integration_s: f64,
    /// Assumed bound on each server path's uncalibrated delay asymmetry, emulated s (it
    /// enters σ as (bound/2)²; in a lab it is mostly the agents' scheduling latency).
    pub asymmetry_bound_s: f64,
    /// The lab seed: every node must see the same pulsar sky.
    pub sky_seed: u64,
}

impl AgentConfig {
    /// This node's own directory entry.
    pub fn me(&self) -> &PeerInfo {
        &self.peers[self.id as usize]
    }

    /// The [`AgentConfig::certificates`] as log entries: each must decode and be a
    /// `Certificate` (its signature is checked where the authorities' key is known,
    /// [`crate::Node::new`]).
    pub fn certificate_entries(&self) -> Result<Vec<crate::trust::log::Entry>, ConfigError> {
        hex_entries(
            &self.certificates,
            crate::trust::log::EntryKind::Certificate,
            "a certificate",
            |entry, why| ConfigError::BadCertificate { entry, why },
        )
    }

    /// The approved builds (`approved_builds`) as log entries: each must decode and be a
    /// `BuildApproval` (its signature is checked where the authorities' key is known,
    /// [`crate::Node::require_attestation`]).
    pub fn approved_build_entries(&self) -> Result<Vec<crate::trust::log::Entry>, ConfigError> {
        hex_entries(
            &self.approved_builds,
            crate::trust::log::EntryKind::BuildApproval,
            "a build approval",
            |entry, why| ConfigError::BadApprovedBuild { entry, why },
        )
    }
}

/// Hex-encoded log entries of one `kind`, decoded; `bad(index, why)` names the first that
/// is not.
fn hex_entries(
    list: &[String],
    kind: crate::trust::log::EntryKind,
    what: &str,
    bad: impl Fn(usize, String) -> ConfigError,
) -> Result<Vec<crate::trust::log::Entry>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, h)| {
            let b = hex::decode(h.trim()).map_err(|e| bad(i, e.to_string()))?;
            let e = crate::trust::log::Entry::decode(&b).map_err(|e| bad(i, e.to_string()))?;
            if e.kind != kind {
                return Err(bad(i, format!("a {:?} entry, not {what}", e.kind)));
            }
            Ok(e)
        })
        .collect()
}

/// Body of the agent's `POST /clock` (and of the supervisor's `POST
/// /api/nodes/{node}/clock`): exactly one of the fields. Times are emulated (the lab's time
/// scale), like every time inside a lab.
///
/// ```json
/// {"step_ns": 1000000}        the hardware clock's phase jumps by 1 ms
/// {"drift_ppb": 50}           its frequency changes by 50e-9 (or {"drift": 5e-8})
/// {"serve_bias_ns": 1000000}  it serves time 1 ms off (a compromised authority); 0 clears
/// {"pulsar_loss": true}       it loses (true) or regains (false) sight of the pulsars
/// ```
/// The body of a byzantine fault (agent `POST /byzantine`, supervisor
/// `POST /api/nodes/{node}/byzantine`): `{"behaviour": [...]}` with any of
/// [`Byzantine::BEHAVIOURS`](Byzantine::BEHAVIOURS); `[]` makes the node honest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByzantineRequest {
    pub behaviour: Vec<String>,
}

impl ByzantineRequest {
    /// Parses and checks a request body; the error says what a good one looks like.
    pub fn parse(body: &[u8]) -> Result<Byzantine, String> {
        let r: ByzantineRequest = serde_json::from_slice(body).map_err(|e| {
            format!(
                "body must be JSON {{\"behaviour\": [...]}} with any of {} ([] makes the node honest again): {e}",
                Byzantine::BEHAVIOURS.join(", ")
            )
        })?;
        Byzantine::from_names(&r.behaviour)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockFaultRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ns: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_ppb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_bias_ns: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulsar_loss: Option<bool>,
}

/// Largest clock step accepted, ns (one day: larger is a broken clock, not a fault).
pub const MAX_STEP_NS: f64 = 86_400e9;
/// Largest drift accepted, fractional (1e-3: far beyond any oscillator).
pub const MAX_DRIFT: f64 = 1e-3;
/// Largest served bias accepted, ns (the time layer clamps served bias to ±1 s).
pub const MAX_BIAS_NS: f64 = 1e9;

impl ClockFaultRequest {
    /// The fault, or what is wrong with the request.
    pub fn to_fault(&self) -> Result<lightcone_timing::ClockFault, String> {
        use lightcone_timing::ClockFault;
        let set = [
            self.step_ns.is_some(),
            self.drift_ppb.is_some(),
            self.drift.is_some(),
            self.serve_bias_ns.is_some(),
            self.pulsar_loss.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(format!(
                "give exactly one of step_ns, drift_ppb, drift, serve_bias_ns, pulsar_loss (got {set})"
            ));
        }
        let check = |name: &str, v: f64, max: f64| {
            if v.is_finite() && v.abs() <= max {
                Ok(v)
            } else {
                Err(format!(
                    "{name} = {v} is out of range (finite, |{name}| <= {max})"
                ))
            }
        };
        if let Some(v) = self.step_ns {
            return Ok(ClockFault::Step {
                offset_s: check("step_ns", v, MAX_STEP_NS)? / 1e9,
            });
        }
        if let Some(v) = self.drift_ppb {
            return Ok(ClockFault::Drift {
                freq_offset: check("drift_ppb", v, MAX_DRIFT * 1e9)? / 1e9,
            });
        }
        if let Some(v) = self.drift {
            return Ok(ClockFault::Drift {
                freq_offset: check("drift", v, MAX_DRIFT)?,
            });
        }
        if let Some(v) = self.serve_bias_ns {
            return Ok(ClockFault::ServeBias {
                offset_s: check("serve_bias_ns", v, MAX_BIAS_NS)? / 1e9,
            });
        }
        Ok(ClockFault::PulsarLoss {
            lost: self.pulsar_loss.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_back_what_display_writes() {
        let a = HierAddr {
            layer: 1,
            cluster: 65535,
            cell: 3,
            tile: 12,
        };
        assert_eq!(a.to_string().parse::<HierAddr>(), Ok(a));
        for bad in ["1.2.3", "1.2.3.4.5", "1.x.3.4", "70000.0.0.0", ""] {
            assert!(bad.parse::<HierAddr>().is_err(), "{bad}");
        }
    }
    use lightcone_timing::ClockFault;

    #[test]
    fn clock_fault_requests_map_to_faults_and_bad_ones_say_why() {
        let f = |s: &str| serde_json::from_str::<ClockFaultRequest>(s).map(|r| r.to_fault());
        assert_eq!(
            f(r#"{"step_ns": 1e6}"#).unwrap(),
            Ok(ClockFault::Step { offset_s: 1e-3 })
        );
        assert_eq!(
            f(r#"{"drift_ppb": 50}"#).unwrap(),
            Ok(ClockFault::Drift { freq_offset: 50e-9 })
        );
        assert_eq!(
            f(r#"{"serve_bias_ns": -2000}"#).unwrap(),
            Ok(ClockFault::ServeBias { offset_s: -2e-6 })
        );
        assert_eq!(
            f(r#"{"pulsar_loss": false}"#).unwrap(),
            Ok(ClockFault::PulsarLoss { lost: false })
        );
        assert!(f(r#"{}"#).unwrap().unwrap_err().contains("exactly one"));
        assert!(f(r#"{"step_ns": 1, "drift": 1e-9}"#)
            .unwrap()
            .unwrap_err()
            .contains("exactly one"));
        assert!(f(r#"{"serve_bias_ns": 2e9}"#)
            .unwrap()
            .unwrap_err()
            .contains("out of range"));
        assert!(f(r#"{"steps": 1}"#).is_err(), "unknown fields are refused");
    }
}

/// Errors building a node from its configuration. Nothing is started when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("node id {0} is not in the peer directory")]
    UnknownSelf(u32),
    #[error("peer at index {index} has id {id}: ids must equal their index")]
    IdMismatch { index: usize, id: u32 },
    #[error("secret key must be 32 bytes of hex")]
    BadSecretKey,
    #[error("authorities_key_hex must be a valid Ed25519 public key, 32 bytes of hex")]
    BadAuthoritiesKey,
    #[error("directory_cert_hex is not the authorities' threshold signature over this directory")]
    BadDirectoryCertificate,
    #[error("approved_builds entry {entry}: {why}")]
    BadApprovedBuild { entry: usize, why: String },
    #[error("certificates entry {entry}: {why}")]
    BadCertificate { entry: usize, why: String },
    #[error("public key of peer {0} is not a valid ed25519 key")]
    BadPublicKey(u32),
    #[error("the secret key does not match this node's public key in the directory, nor a certificate of it in `certificates`")]
    KeyMismatch,
    #[error("time server {0} is not in the peer directory")]
    UnknownTimeServer(u32),
    #[error("time layer: {0}")]
    Time(#[from] lightcone_timing::TimingError),
    #[error("thermal subsystem: {0}")]
    Thermal(#[from] crate::heat::model::ThermalError),
    #[error("build: {0}")]
    Build(#[from] crate::update::BuildError),
    #[error("object store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("small-group BFT: {0}")]
    Bft(#[from] crate::trust::bft::BftError),
}
