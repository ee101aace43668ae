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
pub mod runtime;

/// Which build of the agent this is (issue 18's rollout tests build variants as cargo
/// features: `defect-drop-forward`, `variant-b`, `protocol-n1`); `standard` without any.
pub const BUILD_VARIANT: &str = if cfg!(feature = "defect-drop-forward") {
    "defect-drop-forward"
} else if cfg!(feature = "variant-b") {
    "variant-b"
} else if cfg!(feature = "protocol-n1") {
    "protocol-n1"
} else {
    "standard"
};

/// What the `defect-drop-forward` build drops of the frames it forwards, ppm (30 %, the
/// issue's example of a defect the canary stage must catch).
pub const DEFECT_DROP_PPM: u32 = 300_000;
