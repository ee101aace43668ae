//! Coordinate-tagged timestamps and picosecond clock readings.
//!
//! The spec forbids a global "now": a timestamp is a tuple (position, local time estimate,
//! uncertainty σ, source) — seed spec recommendation 2. [`CoordTimestamp`] is that tuple as a
//! serde type the agent's messages carry; the hybrid logical clocks of the causal layer build
//! on it. Comparisons follow special relativity only as far as the spec needs: two events are
//! *certainly ordered* when their estimates differ by more than k combined σ, and *causally
//! unrelated* (spacelike) when even the extreme ends of their σ bands are closer in time than
//! light needs to cross the distance between them.
//!
//! [`ClockStamp`] is a raw clock reading with picosecond resolution (two-way time transfer
//! needs sub-nanosecond stamps; an `f64` of seconds loses them after ~10⁶ s).

use serde::{Deserialize, Serialize};

/// Speed of light in vacuum, m/s (exact, SI).
pub const C_M_PER_S: f64 = 299_792_458.0;
/// Astronomical unit, m (exact, IAU 2012).
pub const AU_M: f64 = 149_597_870_700.0;
/// Light time across one AU, s (≈ 499.005 s).
pub const AU_LIGHT_S: f64 = AU_M / C_M_PER_S;

/// Largest clock offset a stamp conversion accepts, s. Larger (or non-finite) offsets are
/// clamped: a clock a day off is broken, not synchronised, and clamping keeps the `i128`
/// arithmetic far from overflow.
pub const MAX_OFFSET_S: f64 = 86_400.0;

/// A clock reading: `ns` nanoseconds plus `ps` picoseconds since the lab epoch, on *some*
/// clock's time scale (raw oscillator or a node's served time).
///
/// `ps` is normally in `0..1000`; a larger value received from the network is not rejected,
/// it simply adds (all arithmetic goes through [`ClockStamp::total_ps`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct ClockStamp {
    pub ns: i64,
    pub ps: u16,
}

impl ClockStamp {
    /// From a total count of picoseconds (saturating at the `i64` nanosecond range).
    pub fn from_total_ps(total_ps: i128) -> Self {
        let ns = total_ps.div_euclid(1000);
        let ps = total_ps.rem_euclid(1000) as u16;
        let ns = ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        ClockStamp { ns, ps }
    }

    /// Total picoseconds.
    pub fn total_ps(self) -> i128 {
        self.ns as i128 * 1000 + self.ps as i128
    }

    /// The reading of a clock that is `offset_s` ahead of true time at `true_ns`.
    /// Non-finite offsets read as 0, offsets beyond ±[`MAX_OFFSET_S`] are clamped.
    pub fn from_true_ns(true_ns: u64, offset_s: f64) -> Self {
        let off = if offset_s.is_finite() {
            offset_s.clamp(-MAX_OFFSET_S, MAX_OFFSET_S)
        } else {
            0.0
        };
        Self::from_total_ps(true_ns as i128 * 1000 + (off * 1e12).round() as i128)
    }

    /// `self - earlier` in seconds (exact to the picosecond for spans below ~10⁴ s, then
    /// limited by `f64`).
    pub fn seconds_since(self, earlier: ClockStamp) -> f64 {
        (self.total_ps() - earlier.total_ps()) as f64 * 1e-12
    }

    /// This stamp shifted by `delta_s` (non-finite deltas are ignored).
    pub fn offset_by(self, delta_s: f64) -> Self {
        if !delta_s.is_finite() {
            return self;
        }
        let d = delta_s.clamp(-MAX_OFFSET_S, MAX_OFFSET_S);
        Self::from_total_ps(self.total_ps() + (d * 1e12).round() as i128)
    }
}

/// Where a time estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// A stratum-0 authority's own optical clock (it defines the lab's time scale).
    Authority,
    /// Two-way time transfer through the optical hierarchy; `stratum` = hops from stratum 0.
    Hierarchy { stratum: u8 },
    /// The hierarchy estimate extrapolated by the local oscillator after sync was lost.
    Holdover { stratum: u8 },
    /// Pulsar timing only (the hierarchy is lost or under a compromise alarm).
    Pulsar,
    /// No estimate at all; σ is meaningless.
    Unsynchronized,
}

/// A coordinate-tagged timestamp: where, the local best estimate of (lab) time, its σ and
/// where the estimate comes from.
///
/// `estimate_ns` is rounded to whole nanoseconds; `sigma_s` already includes that rounding
/// (0.29 ns, the σ of a uniform ±0.5 ns error) in quadrature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoordTimestamp {
    /// Position of the node that made the stamp, AU, in the lab's fixed frame.
    pub position_au: [f64; 3],
    /// Best estimate of true time, ns since the lab epoch.
    pub estimate_ns: i64,
    /// One-sigma uncertainty of `estimate_ns`, s.
    pub sigma_s: f64,
    pub source: TimeSource,
}

/// σ of rounding to whole nanoseconds (uniform on ±0.5 ns).
pub const ROUNDING_SIGMA_S: f64 = 0.5e-9 / 1.732_050_807_568_877_2;

impl CoordTimestamp {
    /// Light time between the two positions, s.
    pub fn light_time_s(&self, other: &CoordTimestamp) -> f64 {
        light_time_s(self.position_au, other.position_au)
    }

    /// Combined one-sigma of the difference of the two estimates, s. Non-finite σ → ∞.
    pub fn combined_sigma_s(&self, other: &CoordTimestamp) -> f64 {
        let s = (self.sigma_s.powi(2) + other.sigma_s.powi(2)).sqrt();
        if s.is_finite() {
            s
        } else {
            f64::INFINITY
        }
    }

    /// `other - self`, s.
    pub fn seconds_until(&self, other: &CoordTimestamp) -> f64 {
        (other.estimate_ns as i128 - self.estimate_ns as i128) as f64 * 1e-9
    }

    /// True when `self` happened before `other` with confidence `k` sigma (e.g. k = 3):
    /// the estimates differ by more than k combined σ. Unsynchronized stamps are never
    /// certainly ordered.
    pub fn certainly_before(&self, other: &CoordTimestamp, k: f64) -> bool {
        if self.source == TimeSource::Unsynchronized || other.source == TimeSource::Unsynchronized {
            return false;
        }
        let k = if k.is_finite() {
            k.max(0.0)
        } else {
            return false;
        };
        self.seconds_until(other) > k * self.combined_sigma_s(other)
    }

    /// True when the two events certainly cannot be causally related: even allowing k
    /// combined σ, their time difference is shorter than the light time between them.
    pub fn certainly_spacelike(&self, other: &CoordTimestamp, k: f64) -> bool {
        if self.source == TimeSource::Unsynchronized || other.source == TimeSource::Unsynchronized {
            return false;
        }
        let k = if k.is_finite() {
            k.max(0.0)
        } else {
            return false;
        };
        self.seconds_until(other).abs() + k * self.combined_sigma_s(other)
            < self.light_time_s(other)
    }
}

/// Light time between two positions given in AU, s. Non-finite coordinates give ∞.
pub fn light_time_s(a_au: [f64; 3], b_au: [f64; 3]) -> f64 {
    let d2: f64 = (0..3).map(|i| (a_au[i] - b_au[i]).powi(2)).sum();
    let t = d2.sqrt() * AU_LIGHT_S;
    if t.is_finite() {
        t
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(pos: [f64; 3], ns: i64, sigma_s: f64) -> CoordTimestamp {
        CoordTimestamp {
            position_au: pos,
            estimate_ns: ns,
            sigma_s,
            source: TimeSource::Hierarchy { stratum: 2 },
        }
    }

    #[test]
    fn stamp_roundtrip_and_negative_values() {
        let s = ClockStamp::from_true_ns(5, -7.5e-9);
        assert_eq!(s.total_ps(), 5_000 - 7_500);
        assert_eq!(s, ClockStamp { ns: -3, ps: 500 });
        let t = ClockStamp::from_true_ns(1_000_000_000, 1.234e-12);
        assert_eq!(t.total_ps(), 1_000_000_000_001);
        assert!((t.seconds_since(s) - (1.0 + 2.501e-9)).abs() < 1e-15);
        assert_eq!(ClockStamp::from_true_ns(10, f64::NAN).total_ps(), 10_000);
        assert_eq!(
            ClockStamp::from_true_ns(0, 1e30).total_ps(),
            (MAX_OFFSET_S * 1e12) as i128
        );
        assert_eq!(
            t.offset_by(-1.234e-12).offset_by(f64::INFINITY).ns,
            1_000_000_000
        );
    }

    #[test]
    fn au_light_time_is_499_seconds() {
        assert!((AU_LIGHT_S - 499.004_783_8).abs() < 1e-6);
        let a = ts([1.0, 0.0, 0.0], 0, 1e-9);
        let b = ts([0.0, 0.0, 0.0], 0, 1e-9);
        assert!((a.light_time_s(&b) - AU_LIGHT_S).abs() < 1e-9);
    }

    #[test]
    fn ordering_respects_sigma() {
        let a = ts([0.0; 3], 0, 1e-9);
        let b = ts([0.0; 3], 10, 1e-9);
        // 10 ns apart, combined σ 1.41 ns: ordered at 3σ, not at 10σ.
        assert!(a.certainly_before(&b, 3.0));
        assert!(!a.certainly_before(&b, 10.0));
        assert!(!b.certainly_before(&a, 3.0));
        let mut u = b;
        u.source = TimeSource::Unsynchronized;
        assert!(!a.certainly_before(&u, 3.0));
        assert!(!a.certainly_before(&b, f64::NAN));
    }

    #[test]
    fn spacelike_needs_distance() {
        let here = ts([1.0, 0.0, 0.0], 0, 1e-6);
        let there = ts([1.0, 0.01, 0.0], 1_000_000_000, 1e-6); // 1 s apart, 4.99 light-s away
        assert!(here.certainly_spacelike(&there, 3.0));
        let near = ts([1.0, 0.0, 0.0], 1_000_000_000, 1e-6);
        assert!(!here.certainly_spacelike(&near, 3.0));
    }

    #[test]
    fn serde_roundtrip() {
        let a = ts([1.0, -2.5, 0.125], -42, 3e-9);
        let j = serde_json::to_string(&a).unwrap();
        let b: CoordTimestamp = serde_json::from_str(&j).unwrap();
        assert_eq!(a, b);
        assert!(j.contains("\"hierarchy\""));
    }
}
