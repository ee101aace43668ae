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

impl LinkModel {
    /// The model of the link's other direction: the same, drawing from its own stream
    /// (`seed` → [`link_seed`]`(seed, 1)`), so the two directions decide independently. The
    /// wire engine and the simulator both build a link's `b → a` shaper from this.
    pub fn reversed(&self) -> LinkModel {
        LinkModel {
            seed: link_seed(self.seed, 1),
            ..self.clone()
        }
    }
}

/// Per-link seed derived from the lab seed (SplitMix64 of seed ⊕ index), so each link's
/// random decisions are independent and reproducible.
pub fn link_seed(lab_seed: u64, index: u64) -> u64 {
    let mut z = lab_seed
        ^ index
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
