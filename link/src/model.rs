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

/// Why a [`LinkModel`] was refused by [`LinkModel::validate`]. Nothing was changed: a caller
/// that validates before applying keeps its old model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A probability or correlation outside 0..=1 (or not a number).
    #[error("link model: `{field}` must be between 0 and 1, got {value}")]
    OutOfUnit { field: &'static str, value: f64 },
    /// A limit that would stop the link carrying anything.
    #[error("link model: `{field}` must be at least 1 (leave it unset for the default)")]
    Zero { field: &'static str },
    /// A Gilbert–Elliott chain that, once bad, stays bad.
    #[error(
        "link model: `loss.r` of 0 would never leave the bad state (the mean burst length is 1/r)"
    )]
    NeverRecovers,
    /// A per-packet overhead beyond a frame's size either way.
    #[error("link model: `packet_overhead_bytes` must be between -1500 and 1500, got {0}")]
    Overhead(i32),
}

impl LinkModel {
    /// Checks what the shaper assumes (the topology reader checks the same with positions
    /// in the YAML): every probability and correlation in 0..=1, a Gilbert–Elliott `r`
    /// above 0, rate and queue limits at least 1 when set, packet overhead within ±1500
    /// bytes.
    pub fn validate(&self) -> Result<(), ModelError> {
        let unit = |field: &'static str, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(ModelError::OutOfUnit { field, value })
            }
        };
        unit("jitter_correlation", self.jitter_correlation)?;
        match self.loss {
            LossModel::None => {}
            LossModel::Random {
                probability,
                correlation,
            } => {
                unit("loss.probability", probability)?;
                unit("loss.correlation", correlation)?;
            }
            LossModel::GilbertElliott {
                p,
                r,
                loss_bad,
                loss_good,
            } => {
                unit("loss.p", p)?;
                unit("loss.r", r)?;
                if r == 0.0 {
                    return Err(ModelError::NeverRecovers);
                }
                unit("loss.loss_bad", loss_bad)?;
                unit("loss.loss_good", loss_good)?;
            }
        }
        for (p, rho, c) in [
            (
                "duplicate.probability",
                "duplicate.correlation",
                self.duplicate,
            ),
            ("corrupt.probability", "corrupt.correlation", self.corrupt),
            ("reorder.probability", "reorder.correlation", self.reorder),
        ] {
            unit(p, c.probability)?;
            unit(rho, c.correlation)?;
        }
        if self.rate_bps == Some(0) {
            return Err(ModelError::Zero { field: "rate_bps" });
        }
        if self.queue_limit_packets == Some(0) {
            return Err(ModelError::Zero {
                field: "queue_limit_packets",
            });
        }
        if self.queue_limit_bytes == Some(0) {
            return Err(ModelError::Zero {
                field: "queue_limit_bytes",
            });
        }
        if !(-1500..=1500).contains(&self.packet_overhead_bytes) {
            return Err(ModelError::Overhead(self.packet_overhead_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_each_bad_field_by_name() {
        assert_eq!(LinkModel::default().validate(), Ok(()));
        let bad = |m: LinkModel| m.validate().unwrap_err().to_string();
        let base = LinkModel::default;
        assert!(bad(LinkModel {
            jitter_correlation: 1.5,
            ..base()
        })
        .contains("`jitter_correlation` must be between 0 and 1, got 1.5"));
        assert!(bad(LinkModel {
            loss: LossModel::Random {
                probability: f64::NAN,
                correlation: 0.0
            },
            ..base()
        })
        .contains("`loss.probability`"));
        assert!(bad(LinkModel {
            loss: LossModel::GilbertElliott {
                p: 0.1,
                r: -0.1,
                loss_bad: 1.0,
                loss_good: 0.0
            },
            ..base()
        })
        .contains("`loss.r`"));
        assert!(bad(LinkModel {
            loss: LossModel::GilbertElliott {
                p: 0.1,
                r: 0.0,
                loss_bad: 1.0,
                loss_good: 0.0
            },
            ..base()
        })
        .contains("never leave the bad state"));
        assert!(bad(LinkModel {
            reorder: Chance {
                probability: 0.5,
                correlation: 2.0
            },
            ..base()
        })
        .contains("`reorder.correlation`"));
        assert!(bad(LinkModel {
            duplicate: Chance {
                probability: 1.01,
                correlation: 0.0
            },
            ..base()
        })
        .contains("`duplicate.probability`"));
        assert!(bad(LinkModel {
            rate_bps: Some(0),
            ..base()
        })
        .contains("`rate_bps` must be at least 1"));
        assert!(bad(LinkModel {
            queue_limit_packets: Some(0),
            ..base()
        })
        .contains("`queue_limit_packets`"));
        assert!(bad(LinkModel {
            queue_limit_bytes: Some(0),
            ..base()
        })
        .contains("`queue_limit_bytes`"));
        assert!(bad(LinkModel {
            packet_overhead_bytes: -1501,
            ..base()
        })
        .contains("-1501"));
    }

    #[test]
    fn the_reverse_direction_draws_from_its_own_stream() {
        let m = LinkModel {
            seed: 42,
            delay_ns: 7,
            ..LinkModel::default()
        };
        let r = m.reversed();
        assert_eq!(r.seed, link_seed(42, 1));
        assert_ne!(r.seed, m.seed);
        assert_eq!(LinkModel { seed: 42, ..r }, m);
    }
}
