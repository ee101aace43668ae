//! The agent's configuration: what the orchestrator's plan hands each agent.
//!
//! The orchestrator writes one JSON file per node (`<state>/agents/<node>.json`) and starts
//! `lightcone-agent --config FILE` inside the node's namespace. This type is the contract
//! between the two crates: the orchestrator builds it from the plan, the agent reads it and
//! never looks anywhere else for lab layout.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// UDP port every agent listens on, on each of its link addresses.
pub const AGENT_UDP_PORT: u16 = 7946;

/// Position in the hierarchy: Tile → Cell → Cluster → Layer → System.
///
/// Ordered so that nodes sort by layer, then cluster, then cell, then tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HierAddr {
    pub layer: u16,
    pub cluster: u16,
    pub cell: u16,
    pub tile: u16,
}

impl HierAddr {
    /// True when both addresses are in the same cell (and hence the same cluster and layer).
    pub fn same_cell(&self, other: &HierAddr) -> bool {
        self.layer == other.layer && self.cluster == other.cluster && self.cell == other.cell
    }
    pub fn same_cluster(&self, other: &HierAddr) -> bool {
        self.layer == other.layer && self.cluster == other.cluster
    }
    pub fn same_layer(&self, other: &HierAddr) -> bool {
        self.layer == other.layer
    }
}

impl std::fmt::Display for HierAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.layer, self.cluster, self.cell, self.tile
        )
    }
}

/// What a node is for. Authorities hold stratum-0 optical clocks; gateways carry their
/// cell's summaries up the hierarchy; tiles are everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Tile,
    Gateway,
    Authority,
}

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
    /// ed25519 secret key seed (32 bytes), hex.
    pub secret_key_hex: String,
    /// UDP port the agent binds on each of its link addresses.
    pub udp_port: u16,
    /// Unix socket for the HTTP control/metrics API.
    pub control_socket: PathBuf,
    /// Every node of the lab, indexed by id.
    pub peers: Vec<PeerInfo>,
    /// Direct links of this node, ordered by neighbour id.
    pub neighbors: Vec<Neighbor>,
}

impl AgentConfig {
    /// This node's own directory entry.
    pub fn me(&self) -> &PeerInfo {
        &self.peers[self.id as usize]
    }
}
