//! The `/state` view types: plain serializable snapshots of a node, built by
//! [`Node::snapshot`](crate::node::Node::snapshot) and [`Node::time_view`](crate::node::Node::time_view).

use std::collections::BTreeMap;

use lightcone_timing::{ClockFault, CoordTimestamp, NodeRole, TimeMetrics, UnsyncReason};
use serde::Serialize;

use crate::addr::Role;
use crate::membership::MemberView;
use crate::routing::Route;
use crate::watch::WatchView;
use crate::wire::{Dest, Summary};

/// A received summary of some scope.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryView {
    pub scope: String,
    pub from: u32,
    #[serde(flatten)]
    pub summary: Summary,
    pub received_emulated_s: f64,
    /// When the reporting gateway took it, as a coordinate-tagged timestamp (its
    /// position from the directory, its clock's estimate, σ and source).
    pub taken: CoordTimestamp,
}

/// `/state` JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub node: String,
    pub id: u32,
    pub addr: String,
    pub role: Role,
    pub now_emulated_s: f64,
    pub incarnation: u64,
    pub local_health: u32,
    pub members: Vec<MemberView>,
    pub routes: Vec<RouteView>,
    pub quarantine: Vec<u32>,
    /// Nodes whose keys our cell's BFT group revoked (issue 17; absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<u32>,
    /// The protocol version this node's build speaks (issue 18: it accepts this one and
    /// the one before).
    pub protocol_version: u8,
    /// This node's attestation and its neighbours' (issue 18), when measured or required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attest: Option<crate::update::attest::AttestView>,
    /// Behaviours this node was told to play (empty when honest).
    pub byzantine: Vec<&'static str>,
    /// The neighbourhood watch: evidence, accusers, audit strikes.
    pub watch: WatchView,
    pub counters: BTreeMap<String, u64>,
    pub locality: BTreeMap<String, [u64; 2]>,
    pub summaries: Vec<SummaryView>,
    /// The cell's key-value replica on this node: keys held and, per writing replica,
    /// the writes it has seen (issue 18: a rollout's next wave waits until a restarted
    /// tile's vector covers what its cell held when the wave began).
    pub kv: KvView,
    /// The object store's shards on this node (issue 16); `None` without a store.
    pub store: Option<StoreView>,
    /// The time layer (filled by [`Node::time_view`](crate::node::Node::time_view); `None` without one).
    pub time: Option<TimeView>,
    /// The thermal subsystem's gauges and counters (issue 15: the dashboard colours nodes by
    /// `load_ratio`), filled by the caller at its clock's now like `time` (the agent's
    /// `/state`); `None` when the topology has no `thermal` section.
    pub thermal: Option<crate::heat::machine::HeatStats>,
    /// Quarantine verdicts decided by the cell's BFT group (watch `bft_verdicts`); absent
    /// when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdicts: Option<crate::trust::verdicts::VerdictView>,
    /// What this node holds under the authorities' threshold key (issue 17); absent when
    /// it trusts no authorities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustView>,
}

/// The `trust` section of `/state`.
#[derive(Debug, Clone, Serialize)]
pub struct TrustView {
    /// Entries in this node's transparency log (verdicts, certificates, revocations,
    /// approvals, the directory certificate) and its Merkle root (hex).
    pub log_size: u64,
    pub log_root: String,
    /// Nodes whose key a newer certificate replaced here, with that certificate's serial.
    pub rotated: BTreeMap<u32, u64>,
    /// The public key this node signs with now (hex).
    pub key: String,
}

/// The `store` section of `/state`: the shards this node holds (object, index and the
/// SHA-256 of the bytes held), for experiments to check against what they wrote.
#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    pub shards: Vec<crate::store::machine::HeldShard>,
}

/// The `kv` section of `/state`: [`crate::causal::store::Summary`]'s counts without its
/// hash (O(keys) per read).
#[derive(Debug, Clone, Serialize)]
pub struct KvView {
    pub keys: u64,
    /// Whether a state transfer from a cell-mate has completed since this boot.
    pub synced: bool,
    /// Writing replica (node and boot) → writes of it this replica has seen.
    pub writes: crate::causal::VersionVector,
}

/// The `time` section of `/state`.
#[derive(Debug, Clone, Serialize)]
pub struct TimeView {
    pub role: NodeRole,
    pub servers: Vec<u32>,
    /// Hierarchy stratum (0 for an authority), if synchronized to the hierarchy.
    pub stratum: Option<u8>,
    /// Current server of the hierarchy sync.
    pub server: Option<u32>,
    /// Why the node has no time yet (`null` once it has): `awaiting_first_exchange`,
    /// `no_server_reachable` (requests unanswered: servers down, cut off, or without time
    /// themselves), `collecting_samples` (answers arrive; a path is trusted after 8), or
    /// `responses_rejected`. An active clock-compromise alarm shows as `alarm_active`.
    pub unsynchronized: Option<UnsyncReason>,
    #[serde(flatten)]
    pub metrics: TimeMetrics,
    /// A coordinate-tagged timestamp for "now" (what this node's messages carry).
    pub stamp: CoordTimestamp,
    pub requests_sent: u64,
    pub responses_accepted: u64,
    pub responses_rejected: u64,
    pub pulsar_fixes_total: u64,
    /// Pulsar fixes that were due but could not be taken (the pulsars are lost).
    pub pulsar_missed_total: u64,
    /// Faults injected so far (latest last, at most 16 kept).
    pub faults: Vec<ClockFault>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    pub dest: String,
    #[serde(flatten)]
    pub route: Route,
}

pub fn dest_name(d: &Dest) -> String {
    match d {
        Dest::Node(x) => format!("node:{x}"),
        Dest::Cell {
            layer,
            cluster,
            cell,
        } => format!("cell:{layer}.{cluster}.{cell}"),
        Dest::Cluster { layer, cluster } => format!("cluster:{layer}.{cluster}"),
        Dest::Layer { layer } => format!("layer:{layer}"),
        Dest::Link => "link".into(),
    }
}
