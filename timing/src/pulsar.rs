//! Millisecond pulsars as an external time reference nobody inside the system can forge.
//!
//! A pulsar is a sky direction n̂ (unit vector, lab frame), a spin period and a timing-noise
//! model. The timing model predicts when pulse N reaches the lab origin; a node at position
//! **r** sees the (plane) wavefront earlier by the **Roemer delay** r·n̂/c (1 AU = 499.005
//! light-seconds). The node time-tags each pulse with its own raw clock, subtracts the
//! prediction for *its* position, and the residual is its clock offset plus noise — an
//! estimate independent of the optical hierarchy (Gemini's "Chronos" in the seed spec).
//!
//! Noise per pulsar and per fix (integration time T):
//! * white TOA jitter σ_1h·√(1 h / T) — PSR J1909−3744 reaches ~8 ns in an hour;
//! * intrinsic red timing noise, common to all observers, as a sum of sinusoids with seeded
//!   random phases (the Fourier-basis red-noise model used in pulsar-timing-array analyses,
//!   e.g. Lentati et al. 2013); periods of months to years, so over hours it is a bias;
//! * ephemeris error (a seeded constant per pulsar) of σ `ephemeris_sigma_s`;
//! * the node's position error: it predicts with its *believed* position, off by a seeded
//!   vector of σ `position_sigma_m` per axis, which biases every pulsar by ε·n̂/c.
//!
//! Fixes combine pulsars by inverse-variance weighting; σ² = 1/Σσᵢ⁻² + (position σ / c)²
//! (the position term is common to all pulsars and does not average down). Fixes feed an
//! offset+frequency Kalman filter so the pulsar estimate exists between fixes, growing as
//! the oscillator model says; with no fix for `max_age_s` the estimate is unavailable.
//!
//! Limits and simplifications (documented, not hidden): the pulse-number ambiguity means the
//! local clock must already be within ±P/2 (≈ ±1.5 ms) of true time; the fold over an
//! integration is modeled as one TOA at the fix time with the integrated noise (a real fold
//! uses the node's own frequency estimate, so its drift does not smear the profile);
//! parallax/curvature, dispersion, Shapiro delay and proper motion are ignored.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::fusion::OffsetFreqKalman;
use crate::sync::propagated_variance_s2;
use crate::{check_range, ClockStamp, Estimate, OscillatorParams, TimeSource, TimingError};
use crate::{AU_LIGHT_S, C_M_PER_S};

/// Most pulsars an array may hold.
pub const MAX_PULSARS: usize = 64;
/// Sinusoids in each red-noise realisation.
pub const RED_NOISE_TERMS: usize = 8;
/// Red-noise base period (the shortest component is this / RED_NOISE_TERMS), s.
const RED_NOISE_SPAN_S: f64 = 10.0 * 365.25 * 86_400.0;

/// One millisecond pulsar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulsar {
    pub name: String,
    /// Unit vector towards the pulsar (normalised on construction).
    pub direction: [f64; 3],
    /// Spin period, ps (defines the timing model exactly).
    pub period_ps: u64,
    /// Arrival of pulse 0 at the origin, ps after the lab epoch (in `0..period_ps`).
    pub epoch_ps: u64,
    /// White TOA jitter for one hour of integration, s.
    pub jitter_1h_s: f64,
    /// RMS of the red timing noise, s.
    pub red_noise_rms_s: f64,
    /// Ephemeris error of this pulsar's model (constant), s. Unknown to nodes.
    ephemeris_error_s: f64,
    /// (frequency Hz, amplitude s, phase rad) of each red-noise sinusoid.
    red: Vec<(f64, f64, f64)>,
}

impl Pulsar {
    /// Roemer delay at `position_au`: how much earlier than at the origin a pulse arrives, s.
    pub fn roemer_delay_s(&self, position_au: [f64; 3]) -> f64 {
        roemer_delay_s(position_au, self.direction)
    }

    /// Red timing noise at true time `t_s`, s.
    pub fn red_noise_s(&self, t_s: f64) -> f64 {
        self.red
            .iter()
            .map(|&(f, a, ph)| a * (2.0 * std::f64::consts::PI * f * t_s + ph).sin())
            .sum()
    }

    /// Model arrival (no noise) at `position_au` of the last pulse at or before `t_ps`.
    fn model_arrival_ps(&self, position_au: [f64; 3], t_ps: i128, round: bool) -> i128 {
        let roemer_ps = (self.roemer_delay_s(position_au) * 1e12).round() as i128;
        let p = self.period_ps.max(1) as i128;
        let rel = t_ps + roemer_ps - self.epoch_ps as i128;
        let n = if round {
            (rel + p / 2).div_euclid(p)
        } else {
            rel.div_euclid(p)
        };
        self.epoch_ps as i128 + n * p - roemer_ps
    }
}

/// Roemer delay r·n̂/c for `position_au` and a unit `direction`, s (non-finite → 0).
pub fn roemer_delay_s(position_au: [f64; 3], direction: [f64; 3]) -> f64 {
    let d: f64 = (0..3).map(|i| position_au[i] * direction[i]).sum::<f64>() * AU_LIGHT_S;
    if d.is_finite() {
        d
    } else {
        0.0
    }
}

/// Unit vector for right ascension / declination (degrees), equatorial frame.
pub fn direction_from_ra_dec_deg(ra_deg: f64, dec_deg: f64) -> [f64; 3] {
    let (a, d) = (ra_deg.to_radians(), dec_deg.to_radians());
    [d.cos() * a.cos(), d.cos() * a.sin(), d.sin()]
}

/// The sky: a fixed set of pulsars with seeded noise realisations, shared by all nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulsarArray {
    pulsars: Vec<Pulsar>,
}

/// Catalogue entry used by [`PulsarArray::new`]: name, RA°, Dec°, period s, jitter(1 h) s,
/// red-noise rms s.
pub type PulsarSpec = (&'static str, f64, f64, f64, f64, f64);

/// Seven well-timed millisecond pulsars. Positions and periods are the catalogue values
/// rounded; jitter and red-noise levels are order-of-magnitude figures from pulsar-timing-
/// array data releases (J1909−3744 ≈ 8 ns per hour is the anchor), not a fit.
pub const STANDARD_PULSARS: [PulsarSpec; 7] = [
    ("J1909-3744", 287.447, -37.737, 0.002_947_108, 8e-9, 1e-9),
    ("J0437-4715", 69.316, -47.253, 0.005_757_452, 40e-9, 3e-9),
    ("J1713+0747", 258.456, 7.794, 0.004_570_136, 30e-9, 2e-9),
    ("J1744-1134", 266.122, -11.581, 0.004_074_546, 40e-9, 2e-9),
    ("J1600-3053", 240.216, -30.898, 0.003_597_929, 60e-9, 2e-9),
    ("J0030+0451", 7.614, 4.861, 0.004_865_453, 150e-9, 3e-9),
    ("J2145-0750", 326.460, -7.838, 0.016_052_424, 200e-9, 5e-9),
];

impl PulsarArray {
    /// Builds an array from specs, drawing phases, ephemeris errors (σ `ephemeris_sigma_s`)
    /// and red-noise realisations from `seed`. Rejects non-finite or out-of-range values
    /// and more than [`MAX_PULSARS`].
    pub fn new(
        specs: &[PulsarSpec],
        ephemeris_sigma_s: f64,
        seed: u64,
    ) -> Result<Self, TimingError> {
        if specs.len() > MAX_PULSARS {
            return Err(TimingError::InvalidParameter {
                name: "pulsars",
                value: specs.len() as f64,
                expected: "<= 64",
            });
        }
        check_range(
            "ephemeris_sigma_s",
            ephemeris_sigma_s,
            0.0,
            1e-3,
            "0..=1 ms",
        )?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pulsars = Vec::with_capacity(specs.len());
        for &(name, ra, dec, period_s, jitter, red_rms) in specs {
            check_range("ra_deg", ra, -360.0, 360.0, "-360..=360")?;
            check_range("dec_deg", dec, -90.0, 90.0, "-90..=90")?;
            check_range("period_s", period_s, 1e-4, 10.0, "0.1 ms ..= 10 s")?;
            check_range("jitter_1h_s", jitter, 0.0, 1e-3, "0..=1 ms")?;
            check_range("red_noise_rms_s", red_rms, 0.0, 1e-3, "0..=1 ms")?;
            let period_ps = (period_s * 1e12).round() as u64;
            let epoch_ps = rng.gen_range(0..period_ps);
            // Red spectrum ∝ f^-γ with γ = 4 (amplitude ∝ f^-2), normalised to the rms.
            let weights: Vec<f64> = (1..=RED_NOISE_TERMS).map(|k| (k as f64).powi(-2)).collect();
            let norm = (weights.iter().map(|w| w * w / 2.0).sum::<f64>()).sqrt();
            let red = (1..=RED_NOISE_TERMS)
                .map(|k| {
                    let f = k as f64 / RED_NOISE_SPAN_S;
                    let a = red_rms * weights[k - 1] / norm;
                    (f, a, rng.gen_range(0.0..std::f64::consts::TAU))
                })
                .collect();
            let eph: f64 = StandardNormal.sample(&mut rng);
            pulsars.push(Pulsar {
                name: name.to_string(),
                direction: direction_from_ra_dec_deg(ra, dec),
                period_ps,
                epoch_ps,
                jitter_1h_s: jitter,
                red_noise_rms_s: red_rms,
                ephemeris_error_s: eph * ephemeris_sigma_s,
                red,
            });
        }
        Ok(PulsarArray { pulsars })
    }

    /// [`STANDARD_PULSARS`] with 1 ns ephemeris errors.
    pub fn standard(seed: u64) -> Self {
        Self::new(&STANDARD_PULSARS, 1e-9, seed).expect("catalogue is valid")
    }

    pub fn pulsars(&self) -> &[Pulsar] {
        &self.pulsars
    }

    /// True arrival time (ps since the lab epoch) at `position_au` of the last pulse of
    /// pulsar `idx` at or before true time `true_now_ns`, including red noise and ephemeris
    /// error. `None` for an unknown index.
    pub fn true_arrival_ps(
        &self,
        idx: usize,
        position_au: [f64; 3],
        true_now_ns: u64,
    ) -> Option<i128> {
        let p = self.pulsars.get(idx)?;
        let t_ps = true_now_ns as i128 * 1000;
        let model = p.model_arrival_ps(position_au, t_ps, false);
        let noise_s = p.red_noise_s(true_now_ns as f64 * 1e-9) + p.ephemeris_error_s;
        Some(model + (noise_s * 1e12).round() as i128)
    }
}

/// Per-node pulsar observing configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PulsarConfig {
    /// Integration time per fix, s (1 s ..= 1 day).
    pub integration_s: f64,
    /// σ per axis of the node's knowledge of its own position, m (0 ..= 10⁶ m).
    pub position_sigma_m: f64,
    /// σ the node assumes for each pulsar's ephemeris, s.
    pub ephemeris_sigma_s: f64,
    /// After this long without a fix the pulsar estimate is unavailable, s.
    pub max_age_s: f64,
}

impl Default for PulsarConfig {
    fn default() -> Self {
        PulsarConfig {
            integration_s: 3600.0,
            position_sigma_m: 0.3,
            ephemeris_sigma_s: 1e-9,
            max_age_s: 7.0 * 86_400.0,
        }
    }
}

impl PulsarConfig {
    pub fn validate(&self) -> Result<(), TimingError> {
        check_range(
            "integration_s",
            self.integration_s,
            1.0,
            86_400.0,
            "1 s ..= 1 day",
        )?;
        check_range(
            "position_sigma_m",
            self.position_sigma_m,
            0.0,
            1e6,
            "0..=1e6 m",
        )?;
        check_range(
            "ephemeris_sigma_s",
            self.ephemeris_sigma_s,
            0.0,
            1e-3,
            "0..=1 ms",
        )?;
        check_range("max_age_s", self.max_age_s, 1.0, 1e9, "1 s ..= 1e9 s")?;
        Ok(())
    }
}

/// One pulsar fix: the node's raw clock offset measured against the pulsars.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PulsarFix {
    /// Raw local reading the fix refers to.
    pub at: ClockStamp,
    pub offset_s: f64,
    pub sigma_s: f64,
    pub pulsars_used: u32,
}

/// A node's pulsar receiver and pulsar-only clock estimate. Inputs: [`PulsarClock::poll`]
/// (timer); getters: [`PulsarClock::estimate`], [`PulsarClock::last_fix`]; commands:
/// [`PulsarClock::set_lost`], [`PulsarClock::set_pulsar_lost`] (faults).
#[derive(Debug, Clone)]
pub struct PulsarClock {
    cfg: PulsarConfig,
    params: OscillatorParams,
    q: (f64, f64),
    position_au: [f64; 3],
    believed_position_au: [f64; 3],
    rng: ChaCha8Rng,
    next_fix_ns: u64,
    all_lost: bool,
    lost: BTreeSet<usize>,
    kalman: Option<(OffsetFreqKalman, ClockStamp)>,
    last_fix: Option<PulsarFix>,
    fixes_total: u64,
    missed_total: u64,
}

impl PulsarClock {
    /// `params` is the local oscillator model; the first fix completes at
    /// `start_ns + integration`.
    pub fn new(
        cfg: PulsarConfig,
        params: OscillatorParams,
        position_au: [f64; 3],
        seed: u64,
        start_ns: u64,
    ) -> Result<Self, TimingError> {
        cfg.validate()?;
        params.validate()?;
        for v in position_au {
            check_range("position_au", v, -1e6, 1e6, "finite, |x| <= 1e6 AU")?;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut believed = position_au;
        for b in &mut believed {
            let e: f64 = StandardNormal.sample(&mut rng);
            *b += e * cfg.position_sigma_m / crate::AU_M;
        }
        Ok(PulsarClock {
            q: params.kalman_process_noise(),
            params,
            position_au,
            believed_position_au: believed,
            rng,
            next_fix_ns: start_ns.saturating_add((cfg.integration_s * 1e9) as u64),
            all_lost: false,
            lost: BTreeSet::new(),
            kalman: None,
            last_fix: None,
            fixes_total: 0,
            missed_total: 0,
            cfg,
        })
    }

    pub fn next_timeout_ns(&self) -> u64 {
        self.next_fix_ns
    }
    pub fn last_fix(&self) -> Option<PulsarFix> {
        self.last_fix
    }
    pub fn fixes_total(&self) -> u64 {
        self.fixes_total
    }
    /// Integrations that ended without any visible pulsar.
    pub fn missed_total(&self) -> u64 {
        self.missed_total
    }
    pub fn config(&self) -> &PulsarConfig {
        &self.cfg
    }

    /// Fault: the node sees no pulsars at all (`true`) or sees them again (`false`).
    pub fn set_lost(&mut self, lost: bool) {
        self.all_lost = lost;
    }
    /// Fault: one pulsar is hidden from this node (occultation, receiver band loss).
    pub fn set_pulsar_lost(&mut self, idx: usize, lost: bool) {
        if lost {
            if self.lost.len() < MAX_PULSARS {
                self.lost.insert(idx);
            }
        } else {
            self.lost.remove(&idx);
        }
    }

    /// Timer input. When an integration ends, time-tags one pulse of each visible pulsar
    /// with the raw clock (true arrival + `raw_offset_s`, the emulated hardware's phase error
    /// now, + jitter), and returns the fix. `local` is the raw reading at `true_now_ns`.
    pub fn poll(
        &mut self,
        true_now_ns: u64,
        raw_offset_s: f64,
        local: ClockStamp,
        sky: &PulsarArray,
    ) -> Option<PulsarFix> {
        if true_now_ns < self.next_fix_ns {
            return None;
        }
        let period = ((self.cfg.integration_s * 1e9) as u64).max(1);
        let behind = (true_now_ns - self.next_fix_ns) / period + 1;
        self.next_fix_ns = self
            .next_fix_ns
            .saturating_add(behind.saturating_mul(period));
        if self.all_lost || !raw_offset_s.is_finite() {
            self.missed_total += 1;
            return None;
        }
        let (mut wsum, mut zsum, mut used) = (0.0, 0.0, 0u32);
        for (i, p) in sky.pulsars().iter().enumerate() {
            if self.lost.contains(&i) {
                continue;
            }
            let arrival_ps = sky.true_arrival_ps(i, self.position_au, true_now_ns)?;
            let jitter_s = p.jitter_1h_s * (3600.0 / self.cfg.integration_s).sqrt();
            let n: f64 = StandardNormal.sample(&mut self.rng);
            let toa = ClockStamp::from_total_ps(arrival_ps).offset_by(raw_offset_s + n * jitter_s);
            // The node's prediction: nearest model pulse for its believed position.
            let pred = p.model_arrival_ps(self.believed_position_au, toa.total_ps(), true);
            let z = toa.seconds_since(ClockStamp::from_total_ps(pred));
            let var =
                jitter_s.powi(2) + p.red_noise_rms_s.powi(2) + self.cfg.ephemeris_sigma_s.powi(2);
            if var > 0.0 && z.is_finite() {
                wsum += 1.0 / var;
                zsum += z / var;
                used += 1;
            }
        }
        if used == 0 {
            self.missed_total += 1;
            return None;
        }
        let pos_s = self.cfg.position_sigma_m / C_M_PER_S;
        let fix = PulsarFix {
            at: local,
            offset_s: zsum / wsum,
            sigma_s: (1.0 / wsum + pos_s * pos_s).sqrt(),
            pulsars_used: used,
        };
        let r = fix.sigma_s.powi(2);
        match &mut self.kalman {
            None => {
                let f = self.params.initial_freq_sigma.max(1e-12);
                self.kalman = Some((OffsetFreqKalman::new(fix.offset_s, r, f), local));
            }
            Some((k, at)) => {
                let dt = local.seconds_since(*at).max(0.0);
                k.predict(dt, self.q.0, self.q.1);
                k.update(fix.offset_s, r);
                *at = local;
            }
        }
        self.fixes_total += 1;
        self.last_fix = Some(fix);
        Some(fix)
    }

    /// Pulsar-only estimate of the raw clock offset at raw reading `local`; `None` before
    /// the first fix or when the last one is older than `max_age_s`. σ grows between fixes
    /// as the oscillator model says.
    pub fn estimate(&self, local: ClockStamp) -> Option<Estimate> {
        let (k, at) = self.kalman.as_ref()?;
        let dt = local.seconds_since(*at).max(0.0);
        if dt > self.cfg.max_age_s {
            return None;
        }
        let v = propagated_variance_s2(k, dt, dt, self.q, &self.params);
        Some(Estimate {
            offset_s: k.offset_after(dt),
            sigma_s: v.sqrt(),
            source: TimeSource::Pulsar,
            age_s: dt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roemer_delay_geometry() {
        let n = [0.0, 0.0, 1.0];
        // Towards the pulsar by 1 AU: 499.005 s earlier. Away: later. Perpendicular: same.
        assert!((roemer_delay_s([0.0, 0.0, 1.0], n) - 499.004_783_8).abs() < 1e-6);
        assert!((roemer_delay_s([0.0, 0.0, -2.0], n) + 2.0 * AU_LIGHT_S).abs() < 1e-9);
        assert_eq!(roemer_delay_s([5.0, -3.0, 0.0], n), 0.0);
        // 60° off axis: cos 60° = 0.5.
        let d = direction_from_ra_dec_deg(0.0, 30.0); // 60° from the z axis
        assert!((roemer_delay_s([0.0, 0.0, 1.0], d) - 0.5 * AU_LIGHT_S).abs() < 1e-9);
        assert_eq!(roemer_delay_s([f64::NAN, 0.0, 0.0], n), 0.0);
        let unit: f64 = direction_from_ra_dec_deg(287.4, -37.7)
            .iter()
            .map(|v| v * v)
            .sum();
        assert!((unit - 1.0).abs() < 1e-12);
    }

    #[test]
    fn arrivals_shift_by_roemer_delay_between_positions() {
        let sky = PulsarArray::new(&STANDARD_PULSARS[..1], 0.0, 1).unwrap();
        let p = &sky.pulsars()[0];
        let t = 10_000_000_000_000u64;
        let a = sky.true_arrival_ps(0, [0.0; 3], t).unwrap();
        // A node 1e-6 AU towards the pulsar (≈ 0.5 ms) sees the same pulse 499 µs earlier.
        let pos = [
            p.direction[0] * 1e-6,
            p.direction[1] * 1e-6,
            p.direction[2] * 1e-6,
        ];
        let b = sky.true_arrival_ps(0, pos, t).unwrap();
        let expected_ps = (1e-6 * AU_LIGHT_S * 1e12).round() as i128;
        let diff = (a - b).rem_euclid(p.period_ps as i128);
        assert!((diff - expected_ps).abs() <= 1, "{diff} vs {expected_ps}");
        assert!(a <= t as i128 * 1000 + 1000 && b <= t as i128 * 1000 + 1000);
    }

    #[test]
    fn fix_measures_clock_offset_with_honest_sigma() {
        // A node at 3 AU with a clock 700 ns fast: every fix should see ≈ 700 ns.
        let sky = PulsarArray::standard(4);
        let cfg = PulsarConfig::default();
        let pos = [1.0, 2.0, -2.0];
        let mut hits = 0;
        let n = 200;
        for s in 0..n {
            let mut pc = PulsarClock::new(cfg, OscillatorParams::ideal(), pos, s, 0).unwrap();
            let t = 3_600_000_000_000u64;
            let fix = pc
                .poll(t, 700e-9, ClockStamp::from_true_ns(t, 700e-9), &sky)
                .unwrap();
            assert_eq!(fix.pulsars_used, 7);
            if (fix.offset_s - 700e-9).abs() <= 3.0 * fix.sigma_s {
                hits += 1;
            }
            assert!(fix.sigma_s > 6e-9 && fix.sigma_s < 10e-9, "{}", fix.sigma_s);
        }
        println!("pulsar fix 3σ coverage {hits}/{n}");
        assert!(hits >= n * 97 / 100);
    }

    #[test]
    fn loss_makes_estimate_age_and_vanish() {
        let sky = PulsarArray::standard(4);
        let cfg = PulsarConfig {
            integration_s: 600.0,
            max_age_s: 10_000.0,
            ..PulsarConfig::default()
        };
        let params = OscillatorParams::ocxo_holdover();
        let mut pc = PulsarClock::new(cfg, params, [1.0, 0.0, 0.0], 1, 0).unwrap();
        let at = |s: f64| ClockStamp::from_true_ns((s * 1e9) as u64, 0.0);
        assert!(pc.poll(600_000_000_000, 0.0, at(600.0), &sky).is_some());
        let s0 = pc.estimate(at(600.0)).unwrap().sigma_s;
        pc.set_lost(true);
        assert!(pc.poll(1_200_000_000_000, 0.0, at(1200.0), &sky).is_none());
        assert_eq!(pc.missed_total(), 1);
        let s1 = pc.estimate(at(5000.0)).unwrap().sigma_s;
        assert!(s1 > s0, "{s1} <= {s0}");
        assert!(pc.estimate(at(600.0 + 10_001.0)).is_none());
        // Partial loss: hiding J1909 worsens σ of the next fix.
        pc.set_lost(false);
        let full = pc.poll(1_800_000_000_000, 0.0, at(1800.0), &sky).unwrap();
        pc.set_pulsar_lost(0, true);
        let part = pc.poll(2_400_000_000_000, 0.0, at(2400.0), &sky).unwrap();
        assert_eq!(part.pulsars_used, 6);
        assert!(part.sigma_s > 1.5 * full.sigma_s);
    }

    #[test]
    fn bad_config_is_rejected() {
        let bad = PulsarConfig {
            integration_s: f64::NAN,
            ..PulsarConfig::default()
        };
        assert!(PulsarClock::new(bad, OscillatorParams::ideal(), [0.0; 3], 0, 0).is_err());
        assert!(PulsarClock::new(
            PulsarConfig::default(),
            OscillatorParams::ideal(),
            [f64::INFINITY, 0.0, 0.0],
            0,
            0
        )
        .is_err());
        let spec = [("x", 0.0, 100.0, 0.003, 1e-9, 0.0)];
        assert!(PulsarArray::new(&spec, 0.0, 0).is_err());
    }
}
