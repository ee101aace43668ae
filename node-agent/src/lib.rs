//! The lightcone node agent: the tokio/UDP driver of the sans-IO core
//! ([`lightcone_core::Node`]), with the HTTP control and the Prometheus metrics API.
//!
//! - [`driver`]: sockets, the real clock, the HTTP control and metrics API;
//! - [`pct`]: percent-encoding of one URL path segment (keys in `/kv/{key}`).
//!
//! The core (state machine, wire format, sub-machines) is the `lightcone-core` crate; the
//! deterministic simulator is `lightcone-sim`.
pub mod driver;
pub mod pct;

// Compat paths until the orchestrator imports lightcone_core directly: the modules that
// lived in this crate before the core became its own crate, at their old paths.
#[doc(hidden)]
pub use lightcone_core::{causal, config, kv, membership, routing, time, watch, wire};

/// Compat paths until the orchestrator imports lightcone_core directly: what
/// `lightcone_agent::node` held before it was split into the core's rooms.
#[doc(hidden)]
pub mod node {
    pub use lightcone_core::byzantine::Byzantine;
    pub use lightcone_core::clock::{clock_config, lab_sky, TimeLayer};
    pub use lightcone_core::config::ConfigError;
    pub use lightcone_core::counters::Counters;
    pub use lightcone_core::directory::{DirEntry, Directory};
    pub use lightcone_core::io::{Command, Effects, Event, Input, Outbox, Transmit};
    pub use lightcone_core::node::{Node, MAX_PENDING_PUTS};
    pub use lightcone_core::params::Params;
    pub use lightcone_core::time::{stamp_from_wire, stamp_to_wire, TimerKey, Timers};
    pub use lightcone_core::view::{dest_name, RouteView, Snapshot, SummaryView, TimeView};
}
