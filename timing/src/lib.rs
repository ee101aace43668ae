//! Clock and time-reference models for lightcone (issue 5: dual time references).
//!
//! The spec has no global "now": every timestamp is a (position, local estimate, σ) tuple
//! kept by an internal optical clock hierarchy and checked against millisecond pulsars that
//! an insider cannot forge (seed spec, "Time Authority Architecture", recommendation 2).
//!
//! Everything here is **sans-IO and deterministic**: no clock is read, no socket touched, no
//! OS randomness used. Ground truth ("true time") is an *input*: all lightcone namespaces share
//! the host clock, so the driver passes `true_now_ns` (emulated nanoseconds since the lab
//! epoch, a `u64`) into every call, and the models use it to emulate imperfect hardware and to
//! measure the true error of every simulated clock exactly. Randomness comes from seeded
//! `ChaCha8Rng`s; collections are ordered.
//!
//! Data flows one way:
//!
//! ```text
//! oscillator (emulated hardware clock: raw phase error x(t))
//!     │ raw readings (ClockStamp)
//!     ├──▶ sync    (two-way time transfer, Kalman offset+frequency, stratum, σ)
//!     ├──▶ pulsar  (TOAs corrected by the Roemer delay → independent offset, σ)
//!     └──▶ fusion  (Marzullo, Kalman, k·σ compromise check)
//!              └──▶ node::NodeClock (what an agent embeds) ──▶ timestamp::CoordTimestamp
//! sim: a virtual-time harness running a small hierarchy over modeled links.
//! ```
//!
//! Units are last in names (`offset_s`, `sigma_s`, `period_ps`, `true_now_ns`).

pub mod fusion;
pub mod node;
pub mod oscillator;
pub mod pulsar;
pub mod sim;
pub mod sync;
pub mod timestamp;

pub use fusion::{
    fuse, marzullo, CompromiseMonitor, Fused, Interval, MarzulloResult, OffsetFreqKalman, Verdict,
};
pub use node::{ClockFault, NodeClock, NodeClockConfig, NodeRole, TimeMetrics};
pub use oscillator::{allan_deviation, Oscillator, OscillatorParams};
pub use pulsar::{Pulsar, PulsarArray, PulsarClock, PulsarConfig, PulsarFix};
pub use sync::{
    Estimate, Outgoing, PeerId, ServerLink, SyncConfig, SyncRequest, SyncResponse, SyncRole,
    SyncStats, TimeMessage, TimeSync, UnsyncReason,
};
pub use timestamp::{ClockStamp, CoordTimestamp, TimeSource, AU_LIGHT_S, AU_M, C_M_PER_S};

/// Errors of this crate. Constructors that return one have changed no state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimingError {
    /// A parameter was NaN, infinite, negative or otherwise outside its documented range.
    #[error("invalid parameter `{name}` = {value}: {expected}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    /// Not enough samples for the requested statistic.
    #[error("need at least {needed} samples, got {got}")]
    NotEnoughSamples { needed: usize, got: usize },
    /// A received time message could not be decoded (nothing was changed).
    #[error("malformed time message: {0}")]
    Malformed(&'static str),
    /// A referenced node, pulsar or link does not exist.
    #[error("unknown {what} {id}")]
    Unknown { what: &'static str, id: u64 },
}

/// Checks that `value` is finite and within `[lo, hi]`.
pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    expected: &'static str,
) -> Result<f64, TimingError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(TimingError::InvalidParameter {
            name,
            value,
            expected,
        })
    }
}

/// Derives an independent, deterministic sub-seed (SplitMix64 finaliser) so that every node
/// and component has its own RNG stream from one lab seed.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
