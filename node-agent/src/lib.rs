//! The lightcone node agent: a sans-IO DCOS core ([`node::Node`]) and its drivers.
//!
//! - [`node`]: the state machine (inputs in, outbox out) and its timer table;
//! - [`wire`]: the signed, versioned binary format;
//! - [`membership`]: SWIM + Lifeguard failure detection per cell;
//! - [`routing`]: hierarchical distance-vector overlay routing, quarantine, locality;
//! - [`watch`]: the neighbourhood watch (forwarding audits, lie evidence, quarantine votes);
//! - [`sim`]: the deterministic in-process harness (virtual time, modeled links);
//! - [`driver`]: the tokio/UDP driver with the HTTP control and metrics API;
//! - [`pct`]: percent-encoding of one URL path segment (keys in `/kv/{key}`).
pub mod causal;
pub mod config;
pub mod driver;
pub mod kv;
pub mod membership;
pub mod node;
pub mod pct;
pub mod routing;
pub mod sim;
pub mod time;
pub mod watch;
pub mod wire;
