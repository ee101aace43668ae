//! All tunables of the core in one value, with the defaults the agent runs with.

use std::time::Duration;

use crate::membership::SwimParams;
use crate::routing::RouteParams;
use crate::watch::WatchParams;
use crate::wire;

/// All tunables of the core.
#[derive(Debug, Clone)]
pub struct Params {
    pub swim: SwimParams,
    pub route: RouteParams,
    /// Cell gateways report summaries upward this often. Default 5 s.
    pub summary_interval: Duration,
    /// KV repair exchange with one random cell member this often. Default 2 s.
    pub kv_repair_interval: Duration,
    /// A `cell` put that has not reached its quorum of holders this long after it was taken
    /// fails as indeterminate ([`Durability`](crate::kv::Durability)). Default 2 s; [`Node::new`](crate::node::Node::new) raises it to
    /// 2 s of *real* time at time scales above 1 (host scheduling latency is real time).
    pub kv_ack_timeout: Duration,
    /// A `cell` put is sent again to the members whose ack is missing this often (lost
    /// broadcasts or acks). Default 250 ms, scaled like `kv_ack_timeout`.
    pub kv_ack_retry: Duration,
    pub watch: WatchParams,
    /// Outbox bounds. Defaults 4096 datagrams, 1024 events.
    pub outbox_datagrams: usize,
    pub outbox_events: usize,
    /// Frame authentication; `Ed25519` except in debug-build harness runs (see
    /// [`wire::Auth`]).
    pub auth: wire::Auth,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            swim: SwimParams::default(),
            route: RouteParams::default(),
            summary_interval: Duration::from_secs(5),
            kv_repair_interval: Duration::from_secs(2),
            kv_ack_timeout: Duration::from_secs(2),
            kv_ack_retry: Duration::from_millis(250),
            watch: WatchParams::default(),
            outbox_datagrams: 4096,
            outbox_events: 1024,
            auth: wire::Auth::Ed25519,
        }
    }
}
