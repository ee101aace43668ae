//! `LinkModel`: the one description of a link's behaviour that both engines carry
//! (netem in the kernel, wire in user space). All durations are *emulated* time; an engine
//! divides by the lab's `time_scale` to get real time.

use serde::{Deserialize, Serialize};

/// Shape of the jitter distribution (netem's `distribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayDistribution {
    #[default]
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

/// How packets are lost.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "model")]
pub enum LossModel {
    #[default]
    None,
    /// Independent (or correlated) random loss, netem's `loss random P [CORR]`.
    Random { probability: f64, correlation: f64 },
    /// Gilbert–Elliott two-state model, netem's `loss gemodel p r 1-h 1-k`:
    /// `p` good→bad, `r` bad→good, `loss_bad` = 1-h, `loss_good` = 1-k.
    GilbertElliott {
        p: f64,
        r: f64,
        loss_bad: f64,
        loss_good: f64,
    },
}

/// A probability with a correlation to the previous decision (netem style).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Chance {
    pub probability: f64,
    pub correlation: f64,
}

/// Full link model. Values are validated by the topology resolver (probabilities in 0..=1,
/// rate > 0); engines may assume them valid.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LinkModel {
    /// One-way delay, emulated nanoseconds.
    pub delay_ns: u64,
    /// Jitter (± around `delay_ns`), emulated nanoseconds.
    pub jitter_ns: u64,
    /// Correlation of successive jitter values, 0..=1.
    pub jitter_correlation: f64,
    pub distribution: DelayDistribution,
    pub loss: LossModel,
    pub duplicate: Chance,
    pub corrupt: Chance,
    /// Reorder: this share of packets (after `reorder_gap` in-order ones) is sent at once.
    pub reorder: Chance,
    pub reorder_gap: u32,
    /// Rate limit in bits per second (emulated); `None` = unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes added to (or, if negative, removed from) each packet for rate accounting.
    pub packet_overhead_bytes: i32,
    /// Queue limit in packets; `None` = engine default sized from rate × delay.
    pub queue_limit_packets: Option<u32>,
    /// Queue limit in bytes; `None` = no byte limit.
    pub queue_limit_bytes: Option<u64>,
    /// Seed of the link's random decisions (derived from the lab seed when not given).
    pub seed: u64,
}
