//! The lightcone node agent: the tokio/UDP driver of the sans-IO core
//! ([`lightcone_core::Node`]), with the HTTP control and the Prometheus metrics API.
//!
//! - [`caps`]: capability tokens (biscuit) every state-changing request carries;
//! - [`driver`]: sockets, the real clock, the HTTP control and metrics API;
//! - [`pct`]: percent-encoding of one URL path segment (keys in `/kv/{key}`).
//!
//! The core (state machine, wire format, sub-machines) is the `lightcone-core` crate; the
//! deterministic simulator is `lightcone-sim`.
pub mod caps;
pub mod driver;
pub mod dscp;
pub mod group;
pub mod pct;
