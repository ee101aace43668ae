//! Fusion of time estimates: Marzullo interval intersection, an offset+frequency Kalman
//! filter, and the clock-compromise check between the optical hierarchy and the pulsars.
//!
//! * **Marzullo** (K. Marzullo, "Maintaining the time in a distributed system", PhD thesis,
//!   Stanford 1984; the NTP "intersection algorithm" descends from it): given n intervals
//!   each claimed to contain the true value, find the smallest interval consistent with the
//!   largest number of them.
//! * **Kalman** (R. E. Kalman 1960) with the two-state clock model used in time-keeping
//!   (offset θ and fractional frequency f; e.g. Galleani & Tavella's clock Kalman filters):
//!   θ' = θ + f·dt, process noise from the oscillator model. Updates use the Joseph form so
//!   the covariance stays symmetric positive semi-definite.
//! * **Compromise check**: the hierarchy and the pulsar estimates of the same clock offset
//!   are independent; their difference d has σ_d = √(σ_h² + σ_p²). An alarm is raised when
//!   |d| > k·σ_d. With Gaussian errors and k = 5 a healthy check fires with probability
//!   5.7·10⁻⁷; biases below k·σ_d cannot be told from noise and go undetected by design.

use serde::{Deserialize, Serialize};

/// A closed interval `[lo, hi]` claimed to contain the true value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// `center ± k·sigma`.
    pub fn around(center: f64, sigma: f64, k: f64) -> Self {
        let h = (k * sigma).abs();
        Interval {
            lo: center - h,
            hi: center + h,
        }
    }
}

/// Result of [`marzullo`]: the best intersection and how many intervals agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MarzulloResult {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
}

impl MarzulloResult {
    pub fn midpoint(&self) -> f64 {
        (self.lo + self.hi) / 2.0
    }
}

/// Marzullo's algorithm. Intervals with a NaN/infinite end or `lo > hi` are ignored (they
/// cannot vote). Returns `None` when no valid interval is given. Touching intervals
/// (`a.hi == b.lo`) count as overlapping. Ties between equally supported regions go to the
/// leftmost (deterministic). O(n log n).
pub fn marzullo(intervals: &[Interval]) -> Option<MarzulloResult> {
    // Edges: (value, type) with type -1 = start, +1 = end; starts sort before ends at the
    // same value so touching intervals overlap.
    let mut edges: Vec<(f64, i8)> = Vec::with_capacity(intervals.len() * 2);
    for iv in intervals {
        if iv.lo.is_finite() && iv.hi.is_finite() && iv.lo <= iv.hi {
            edges.push((iv.lo, -1));
            edges.push((iv.hi, 1));
        }
    }
    if edges.is_empty() {
        return None;
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut best, mut cnt) = (0usize, 0usize);
    let mut best_lo = 0.0;
    let mut best_hi = 0.0;
    for (i, &(v, t)) in edges.iter().enumerate() {
        if t < 0 {
            cnt += 1;
            if cnt > best {
                best = cnt;
                best_lo = v;
                // The region ends at the next edge (which must exist: every start has an end).
                best_hi = edges.get(i + 1).map(|e| e.0).unwrap_or(v);
            }
        } else {
            cnt -= 1;
        }
    }
    Some(MarzulloResult {
        lo: best_lo,
        hi: best_hi,
        count: best,
    })
}

/// Result of [`fuse`]: the combined estimate of the sources that agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fused {
    pub offset_s: f64,
    pub sigma_s: f64,
    /// Indices (into the input) of the sources in the agreeing majority.
    pub truechimers: Vec<usize>,
    /// Indices of the sources outside it (falsetickers, in NTP's word).
    pub falsetickers: Vec<usize>,
}

/// Most sources [`fuse`] considers; further ones are ignored.
pub const MAX_FUSE_SOURCES: usize = 32;

/// Selects and combines time sources the way NTP does (Marzullo, then combine): each source
/// `(offset_s, sigma_s)` claims the interval offset ± k·σ; Marzullo finds the region most of
/// them share; sources whose interval contains it are truechimers and are combined by
/// inverse-variance weighting (the static Kalman/BLUE combination of independent
/// estimates); the rest are falsetickers. `None` if no source is valid (finite, σ > 0) or
/// the best region is not supported by a strict majority of the valid sources.
pub fn fuse(sources: &[(f64, f64)], k: f64) -> Option<Fused> {
    let k = if k.is_finite() && k > 0.0 {
        k
    } else {
        DEFAULT_ALARM_K
    };
    let valid: Vec<usize> = sources
        .iter()
        .enumerate()
        .take(MAX_FUSE_SOURCES)
        .filter(|(_, (o, s))| o.is_finite() && s.is_finite() && *s > 0.0)
        .map(|(i, _)| i)
        .collect();
    let intervals: Vec<Interval> = valid
        .iter()
        .map(|&i| Interval::around(sources[i].0, sources[i].1, k))
        .collect();
    let best = marzullo(&intervals)?;
    if 2 * best.count <= valid.len() {
        return None;
    }
    let (mut truechimers, mut falsetickers) = (Vec::new(), Vec::new());
    let (mut w, mut wz) = (0.0, 0.0);
    for (j, &i) in valid.iter().enumerate() {
        let iv = intervals[j];
        if iv.lo <= best.lo && best.hi <= iv.hi {
            let inv = 1.0 / sources[i].1.powi(2);
            w += inv;
            wz += inv * sources[i].0;
            truechimers.push(i);
        } else {
            falsetickers.push(i);
        }
    }
    Some(Fused {
        offset_s: wz / w,
        sigma_s: (1.0 / w).sqrt(),
        truechimers,
        falsetickers,
    })
}

/// Two-state (offset, frequency) Kalman filter. Time is kept by the caller; `predict(dt)`
/// moves the state forward. All inputs are sanitised: a non-finite or negative `dt`, `z` or
/// `r` makes the call a no-op and returns `None`/`false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffsetFreqKalman {
    /// [offset (s), fractional frequency].
    pub x: [f64; 2],
    /// Covariance.
    pub p: [[f64; 2]; 2],
}

/// What one update did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Innovation {
    /// Measurement minus prediction, s.
    pub residual_s: f64,
    /// Predicted variance of the residual, s².
    pub variance_s2: f64,
}

impl Innovation {
    /// |residual| in units of its predicted σ.
    pub fn normalized(&self) -> f64 {
        self.residual_s.abs() / self.variance_s2.sqrt().max(1e-300)
    }
}

impl OffsetFreqKalman {
    /// Starts from an offset measurement `z_s` with variance `r_s2` and a frequency prior
    /// of 0 ± `freq_sigma`.
    pub fn new(z_s: f64, r_s2: f64, freq_sigma: f64) -> Self {
        let z = if z_s.is_finite() { z_s } else { 0.0 };
        let r = if r_s2.is_finite() && r_s2 > 0.0 {
            r_s2
        } else {
            1.0
        };
        let f = if freq_sigma.is_finite() {
            freq_sigma
        } else {
            1e-3
        };
        OffsetFreqKalman {
            x: [z, 0.0],
            p: [[r, 0.0], [0.0, f * f]],
        }
    }

    /// Predicted offset `dt_s` ahead without changing the state.
    pub fn offset_after(&self, dt_s: f64) -> f64 {
        self.x[0] + self.x[1] * dt_s
    }

    /// Predicted covariance `dt_s` ahead with process noise (q_phase, q_freq).
    pub fn covariance_after(&self, dt_s: f64, q_phase: f64, q_freq: f64) -> [[f64; 2]; 2] {
        let dt = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        let p = self.p;
        let p00 = p[0][0] + 2.0 * dt * p[0][1] + dt * dt * p[1][1];
        let p01 = p[0][1] + dt * p[1][1];
        let p11 = p[1][1];
        [
            [
                p00 + q_phase * dt + q_freq * dt.powi(3) / 3.0,
                p01 + q_freq * dt * dt / 2.0,
            ],
            [p01 + q_freq * dt * dt / 2.0, p11 + q_freq * dt],
        ]
    }

    /// Time update.
    pub fn predict(&mut self, dt_s: f64, q_phase: f64, q_freq: f64) -> bool {
        if !(dt_s.is_finite() && dt_s >= 0.0 && q_phase.is_finite() && q_freq.is_finite()) {
            return false;
        }
        self.p = self.covariance_after(dt_s, q_phase.max(0.0), q_freq.max(0.0));
        self.x[0] += self.x[1] * dt_s;
        true
    }

    /// The innovation an offset measurement would produce, without applying it.
    pub fn innovation(&self, z_s: f64, r_s2: f64) -> Option<Innovation> {
        if !(z_s.is_finite() && r_s2.is_finite() && r_s2 >= 0.0) {
            return None;
        }
        Some(Innovation {
            residual_s: z_s - self.x[0],
            variance_s2: self.p[0][0] + r_s2,
        })
    }

    /// Measurement update with an offset measurement `z_s` of variance `r_s2`.
    pub fn update(&mut self, z_s: f64, r_s2: f64) -> Option<Innovation> {
        let inn = self.innovation(z_s, r_s2)?;
        let s = inn.variance_s2;
        if s <= 0.0 {
            return None;
        }
        let k0 = self.p[0][0] / s;
        let k1 = self.p[1][0] / s;
        self.x[0] += k0 * inn.residual_s;
        self.x[1] += k1 * inn.residual_s;
        // Joseph form: P = (I−KH) P (I−KH)ᵀ + K r Kᵀ, H = [1 0].
        let a = [[1.0 - k0, 0.0], [-k1, 1.0]];
        let p = self.p;
        let mut ap = [[0.0; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                ap[i][j] = a[i][0] * p[0][j] + a[i][1] * p[1][j];
            }
        }
        let mut np = [[0.0; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                np[i][j] = ap[i][0] * a[j][0] + ap[i][1] * a[j][1];
            }
        }
        let k = [k0, k1];
        for i in 0..2 {
            for j in 0..2 {
                np[i][j] += k[i] * r_s2 * k[j];
            }
        }
        np[0][1] = (np[0][1] + np[1][0]) / 2.0;
        np[1][0] = np[0][1];
        self.p = np;
        Some(inn)
    }

    /// One-sigma of the offset, s.
    pub fn offset_sigma_s(&self) -> f64 {
        self.p[0][0].max(0.0).sqrt()
    }
}

/// Outcome of one compromise check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Hierarchy offset minus pulsar offset, s.
    pub discrepancy_s: f64,
    /// k·√(σ_h² + σ_p²), s.
    pub bound_s: f64,
    pub alarm: bool,
}

/// Default k of the compromise check (see the module doc for the false-alarm rate).
pub const DEFAULT_ALARM_K: f64 = 5.0;
/// Consecutive passing checks needed to clear an active alarm.
pub const ALARM_CLEAR_AFTER: u32 = 3;

/// Compares the hierarchy and the pulsar estimates and counts alarms (rising edges).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompromiseMonitor {
    k: f64,
    active: bool,
    passes: u32,
    alarms_total: u64,
    checks_total: u64,
    last: Option<Verdict>,
}

impl CompromiseMonitor {
    /// `k` must be finite and ≥ 1; otherwise [`DEFAULT_ALARM_K`] is used (documented clamp).
    pub fn new(k: f64) -> Self {
        let k = if k.is_finite() && k >= 1.0 {
            k
        } else {
            DEFAULT_ALARM_K
        };
        CompromiseMonitor {
            k,
            active: false,
            passes: 0,
            alarms_total: 0,
            checks_total: 0,
            last: None,
        }
    }

    pub fn k(&self) -> f64 {
        self.k
    }

    /// Checks hierarchy offset `h_s ± sh_s` against pulsar offset `p_s ± sp_s` (both
    /// estimates of the same local clock offset at the same instant). Non-finite inputs are
    /// not checked (returns `None`, state unchanged).
    pub fn check(&mut self, h_s: f64, sh_s: f64, p_s: f64, sp_s: f64) -> Option<Verdict> {
        if ![h_s, sh_s, p_s, sp_s].iter().all(|v| v.is_finite()) {
            return None;
        }
        let d = h_s - p_s;
        let bound = self.k * (sh_s * sh_s + sp_s * sp_s).sqrt();
        let alarm = d.abs() > bound;
        self.checks_total += 1;
        if alarm {
            if !self.active {
                self.alarms_total += 1;
            }
            self.active = true;
            self.passes = 0;
        } else if self.active {
            self.passes += 1;
            if self.passes >= ALARM_CLEAR_AFTER {
                self.active = false;
            }
        }
        let v = Verdict {
            discrepancy_s: d,
            bound_s: bound,
            alarm,
        };
        self.last = Some(v);
        Some(v)
    }

    /// An alarm is active (raised and not yet cleared by [`ALARM_CLEAR_AFTER`] passes).
    pub fn alarm_active(&self) -> bool {
        self.active
    }
    /// Alarms raised so far (rising edges) — `lightcone_time_alarms_total`.
    pub fn alarms_total(&self) -> u64 {
        self.alarms_total
    }
    pub fn checks_total(&self) -> u64 {
        self.checks_total
    }
    pub fn last(&self) -> Option<Verdict> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn iv(lo: f64, hi: f64) -> Interval {
        Interval { lo, hi }
    }

    #[test]
    fn marzullo_known_intervals() {
        // The classic example: [8,12], [11,13], [10,12] → [11,12] agreed by all three.
        let r = marzullo(&[iv(8.0, 12.0), iv(11.0, 13.0), iv(10.0, 12.0)]).unwrap();
        assert_eq!((r.lo, r.hi, r.count), (11.0, 12.0, 3));
        // A falseticker: [8,9] disagrees; the best is still [11,12] with 3.
        let r = marzullo(&[iv(8.0, 9.0), iv(8.0, 12.0), iv(11.0, 13.0), iv(10.0, 12.0)]).unwrap();
        assert_eq!((r.lo, r.hi, r.count), (11.0, 12.0, 3));
        // Disjoint pair: one vote each, leftmost wins deterministically.
        let r = marzullo(&[iv(5.0, 6.0), iv(1.0, 2.0)]).unwrap();
        assert_eq!((r.lo, r.hi, r.count), (1.0, 2.0, 1));
        // Touching intervals overlap at a point.
        let r = marzullo(&[iv(0.0, 1.0), iv(1.0, 2.0)]).unwrap();
        assert_eq!((r.lo, r.hi, r.count), (1.0, 1.0, 2));
        // Invalid intervals do not vote.
        assert!(marzullo(&[iv(f64::NAN, 1.0), iv(2.0, 1.0)]).is_none());
        let r = marzullo(&[iv(f64::NAN, 1.0), iv(0.0, 4.0)]).unwrap();
        assert_eq!((r.lo, r.hi, r.count), (0.0, 4.0, 1));
        assert_eq!(r.midpoint(), 2.0);
    }

    proptest::proptest! {
        #[test]
        fn marzullo_result_is_inside_count_intervals(
            raw in proptest::collection::vec((-100.0f64..100.0, 0.0f64..50.0), 1..20)
        ) {
            let ivs: Vec<Interval> = raw.iter().map(|&(c, w)| iv(c, c + w)).collect();
            let r = marzullo(&ivs).unwrap();
            proptest::prop_assert!(r.lo <= r.hi);
            let inside = ivs.iter().filter(|i| i.lo <= r.lo && r.hi <= i.hi).count();
            proptest::prop_assert_eq!(inside, r.count);
            // No point is covered by more intervals than the result's count.
            for i in &ivs {
                let c = ivs.iter().filter(|j| j.lo <= i.lo && i.lo <= j.hi).count();
                proptest::prop_assert!(c <= r.count);
            }
        }
    }

    #[test]
    fn fuse_outvotes_a_falseticker_and_weights_by_variance() {
        // Two honest sources near 0 and one lying by 1 µs.
        let f = fuse(&[(1e-9, 1e-9), (-1e-9, 2e-9), (1e-6, 1e-9)], 5.0).unwrap();
        assert_eq!(f.truechimers, vec![0, 1]);
        assert_eq!(f.falsetickers, vec![2]);
        // Inverse-variance mean: (1/1 · 1 + 1/4 · (−1)) / (1 + 1/4) = 0.6 ns, σ = √0.8 ns.
        assert!((f.offset_s - 0.6e-9).abs() < 1e-18);
        assert!((f.sigma_s - 0.8f64.sqrt() * 1e-9).abs() < 1e-18);
        // Two sources that disagree: no majority, no answer.
        assert!(fuse(&[(0.0, 1e-9), (1e-6, 1e-9)], 5.0).is_none());
        // Invalid sources do not vote.
        let f = fuse(&[(f64::NAN, 1e-9), (0.0, 0.0), (2e-9, 1e-9)], 5.0).unwrap();
        assert_eq!(f.truechimers, vec![2]);
        assert!(fuse(&[], 5.0).is_none());
    }

    #[test]
    fn kalman_converges_on_offset_and_frequency() {
        // Truth: offset 1 µs, frequency 2e-9, no process noise (so the filter runs with q = 0
        // and its σ must match the actual error spread); 1 s measurements with 1 ns noise.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let noise = Normal::new(0.0, 1e-9).unwrap();
        let r = 1e-18;
        let mut k = OffsetFreqKalman::new(1e-6 + noise.sample(&mut rng), r, 1e-8);
        for i in 1..=2000 {
            let t = i as f64;
            k.predict(1.0, 0.0, 0.0);
            let truth = 1e-6 + 2e-9 * t;
            k.update(truth + noise.sample(&mut rng), r).unwrap();
        }
        let truth = 1e-6 + 2e-9 * 2000.0;
        println!(
            "kalman: offset err {:.3e} s (σ {:.3e}), freq err {:.3e}",
            k.x[0] - truth,
            k.offset_sigma_s(),
            k.x[1] - 2e-9
        );
        assert!((k.x[0] - truth).abs() < 3.0 * k.offset_sigma_s());
        assert!(k.offset_sigma_s() < 0.2e-9);
        assert!((k.x[1] - 2e-9).abs() < 1e-12);
    }

    #[test]
    fn kalman_sigma_is_consistent_over_many_runs() {
        // Truth with the process noise the filter assumes (white FM 1e-11, random-walk FM);
        // the normalized estimation error squared (NEES) averaged over runs must be ≈ 1.
        let (q_phase, q_freq, r): (f64, f64, f64) = (1e-22, 1e-26, 1e-18);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
        let n01 = Normal::new(0.0, 1.0).unwrap();
        let runs = 300;
        let mut nees = 0.0;
        for _ in 0..runs {
            let (mut x, mut y) = (1e-6 * n01.sample(&mut rng), 1e-9 * n01.sample(&mut rng));
            let mut k = OffsetFreqKalman::new(x + 1e-9 * n01.sample(&mut rng), r, 1e-9);
            k.p[0][0] = r;
            for _ in 0..200 {
                // Exact discretisation of the two-state model over dt = 1 s.
                let (n1, n2) = (n01.sample(&mut rng), n01.sample(&mut rng));
                let dy = q_freq.sqrt() * n1;
                x += y
                    + q_phase.sqrt() * n01.sample(&mut rng)
                    + dy / 2.0
                    + (q_freq / 12.0).sqrt() * n2;
                y += dy;
                k.predict(1.0, q_phase, q_freq);
                k.update(x + 1e-9 * n01.sample(&mut rng), r).unwrap();
            }
            nees += ((k.x[0] - x) / k.offset_sigma_s()).powi(2);
        }
        let m = nees / runs as f64;
        println!("kalman: mean NEES over {runs} runs {m:.3}");
        assert!(m > 0.8 && m < 1.2, "NEES {m}");
    }

    #[test]
    fn kalman_rejects_bad_inputs() {
        let mut k = OffsetFreqKalman::new(0.0, 1e-18, 1e-9);
        let before = k.clone();
        assert!(!k.predict(f64::NAN, 0.0, 0.0));
        assert!(!k.predict(-1.0, 0.0, 0.0));
        assert!(k.update(f64::INFINITY, 1e-18).is_none());
        assert!(k.update(0.0, f64::NAN).is_none());
        assert_eq!(k, before);
        let k2 = OffsetFreqKalman::new(f64::NAN, f64::NAN, f64::NAN);
        assert!(k2.x[0] == 0.0 && k2.p[0][0] > 0.0);
    }

    #[test]
    fn monitor_counts_rising_edges_and_clears() {
        let mut m = CompromiseMonitor::new(5.0);
        // 3e-9 apart, combined σ 1.414e-9 → bound 7.07e-9: pass.
        assert!(!m.check(3e-9, 1e-9, 0.0, 1e-9).unwrap().alarm);
        let v = m.check(1e-6, 1e-9, 0.0, 1e-9).unwrap();
        assert!(v.alarm && m.alarm_active());
        assert!((v.bound_s - 5.0 * 2f64.sqrt() * 1e-9).abs() < 1e-18);
        m.check(1e-6, 1e-9, 0.0, 1e-9);
        assert_eq!(m.alarms_total(), 1);
        for _ in 0..ALARM_CLEAR_AFTER {
            assert!(m.alarm_active());
            m.check(0.0, 1e-9, 0.0, 1e-9);
        }
        assert!(!m.alarm_active());
        m.check(1e-6, 1e-9, 0.0, 1e-9);
        assert_eq!(m.alarms_total(), 2);
        assert!(m.check(f64::NAN, 1.0, 0.0, 1.0).is_none());
        assert_eq!(m.checks_total(), 2 + ALARM_CLEAR_AFTER as u64 + 2);
        assert_eq!(CompromiseMonitor::new(f64::NAN).k(), DEFAULT_ALARM_K);
    }
}
