//! What the link engines measure, in one vocabulary: a link's [`Direction`], the counters of
//! one direction ([`LinkStats`]) and the buckets of the achieved-delay histogram
//! ([`DELAY_BUCKETS_S`]). The wire engine fills them and [`super::metrics`] renders them;
//! both import this module and neither imports the other's internals, so the metrics
//! module does not depend on the wire engine (it did, and the wire engine on it: a circle).

/// Upper bounds (real seconds) of the achieved-delay histogram: 10 µs × 2^k, to ~45 min.
pub const DELAY_BUCKETS_S: [f64; 29] = {
    let mut b = [0.0; 29];
    let mut i = 0;
    let mut v = 1e-5;
    while i < 29 {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// A link's direction: from end `a` to end `b`, or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    AToB,
    BToA,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::AToB => "a_to_b",
            Direction::BToA => "b_to_a",
        }
    }
}

/// Counters of one link direction, read by [`super::wire::WireEngine::stats`] (and by
/// [`super::engine::LinkEngine::stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStats {
    pub link: String,
    pub direction: Direction,
    pub up: bool,
    pub forwarded: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub dropped_down: u64,
    /// Frames the kernel refused to send (counted apart from the model's drops).
    pub tx_errors: u64,
    pub queue_packets: u64,
    pub queue_bytes: u64,
    /// Configured one-way delay, real seconds (emulated ÷ time_scale, without jitter).
    pub configured_delay_s: f64,
    /// Achieved one-way delay: counts per bucket, upper bounds in [`DELAY_BUCKETS_S`]; the
    /// last element counts frames above the last bound.
    pub delay_buckets: Vec<u64>,
    /// Sum of achieved delays, real seconds (mean = sum / forwarded).
    pub delay_sum_s: f64,
    /// Class-A frames (DSCP CS6/CS7) among `forwarded`, the sum and the largest of their
    /// achieved delays, real seconds: what strict priority keeps near the configured delay.
    pub class_a_forwarded: u64,
    pub class_a_delay_sum_s: f64,
    pub class_a_delay_max_s: f64,
    /// The latest the engine sent a frame, or gave a waiting frame the transmitter, after
    /// the time its model set, real seconds: how far this host's scheduling stretched the
    /// model (a few µs on a host that keeps up; a stalled engine thread shows here).
    pub late_max_s: f64,
}
