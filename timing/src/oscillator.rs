//! Seeded oscillator (hardware clock) models and the Allan deviation.
//!
//! A clock's phase error `x(t)` (seconds ahead of true time) integrates its fractional
//! frequency error `y(t)`. The model is the classic power-law noise sum of frequency-stability
//! analysis (Allan 1966; Barnes et al. 1971; IEEE Std 1139) plus deterministic terms:
//!
//! * **white FM** — `x` is a Wiener process; σ_y(τ) = a_w·τ^-1/2;
//! * **flicker FM** — a bank of Ornstein–Uhlenbeck frequency processes with time constants
//!   spaced a decade apart (10 s … 10⁶ s); equal variance per pole gives S_y(f) ∝ 1/f in that
//!   band and σ_y(τ) ≈ a_f, the flicker floor (the "sum of first-order Gauss–Markov
//!   processes" approximation to 1/f noise);
//! * **random-walk FM** — `y` is a Wiener process; σ_y(τ) = a_rw·τ^+1/2;
//! * **linear aging** `D` (frequency drift per second), σ_y(τ) = D·τ/√2;
//! * **temperature sensitivity** `k_T` (fractional frequency per kelvin) driven by a
//!   sinusoidal environment (amplitude `A` K, period `P` s);
//! * **injected faults**: phase steps and frequency offsets.
//!
//! Every stochastic part is advanced with its *exact* discrete-time transition for any step
//! length (joint Gaussian sampling of frequency and integrated frequency), so the result does
//! not depend on how often the caller advances the clock — only on the seed and the times.
//! Deterministic parts are integrated analytically.
//!
//! Parametrisation: each noise level is the Allan deviation it produces at τ = 1 s (white and
//! random-walk FM) or its flat floor (flicker FM), so presets read like data sheets.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{check_range, TimingError};

/// Flicker-FM poles: time constants 10^1 … 10^6 s (one per decade).
pub const FLICKER_POLES: usize = 6;
const FLICKER_TAU_MIN_S: f64 = 10.0;
const FLICKER_RATIO: f64 = 10.0;

/// Model parameters of one oscillator. All fields must be finite and ≥ 0 (checked by
/// [`OscillatorParams::validate`]); `temp_period_s` must be > 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OscillatorParams {
    /// White-FM Allan deviation at τ = 1 s.
    pub white_fm_adev_1s: f64,
    /// Flicker-FM Allan deviation floor (flat between ~10 s and ~10⁶ s).
    pub flicker_fm_floor: f64,
    /// Random-walk-FM Allan deviation at τ = 1 s.
    pub random_walk_fm_adev_1s: f64,
    /// Linear frequency drift, fractional frequency per second (aging).
    pub aging_per_s: f64,
    /// Temperature coefficient, fractional frequency per kelvin.
    pub temp_coeff_per_k: f64,
    /// Amplitude of the sinusoidal temperature swing, K.
    pub temp_amplitude_k: f64,
    /// Period of the temperature swing, s (a day by default).
    pub temp_period_s: f64,
    /// σ of the phase error at power-up, s (how well the clock was set before any sync).
    pub initial_phase_sigma_s: f64,
    /// σ of the frequency offset at power-up (fractional).
    pub initial_freq_sigma: f64,
}

/// Bound on every noise coefficient: anything larger is not a clock.
const MAX_COEFF: f64 = 1e-3;

impl OscillatorParams {
    /// Cell holdover oscillator: oven-controlled crystal (OCXO) class. Typical data-sheet
    /// values: 1e-12 at 1 s, 3e-13 flicker floor, 1e-10/day aging, 1e-11/K with a ±0.5 K
    /// daily swing; set to 1 µs and 1e-9 at power-up.
    pub fn ocxo_holdover() -> Self {
        OscillatorParams {
            white_fm_adev_1s: 1e-12,
            flicker_fm_floor: 3e-13,
            random_walk_fm_adev_1s: 3e-15,
            aging_per_s: 1e-10 / 86_400.0,
            temp_coeff_per_k: 1e-11,
            temp_amplitude_k: 0.5,
            temp_period_s: 86_400.0,
            initial_phase_sigma_s: 1e-6,
            initial_freq_sigma: 1e-9,
        }
    }

    /// Layer stratum-1, rubidium class: 3e-12 at 1 s, 5e-14 floor, 5e-11/month aging.
    pub fn rubidium() -> Self {
        OscillatorParams {
            white_fm_adev_1s: 3e-12,
            flicker_fm_floor: 5e-14,
            random_walk_fm_adev_1s: 1e-16,
            aging_per_s: 5e-11 / (30.0 * 86_400.0),
            temp_coeff_per_k: 1e-13,
            temp_amplitude_k: 0.5,
            temp_period_s: 86_400.0,
            initial_phase_sigma_s: 1e-6,
            initial_freq_sigma: 1e-11,
        }
    }

    /// Layer stratum-1, active hydrogen maser class: 1e-13 at 1 s, 1e-15 floor.
    pub fn hydrogen_maser() -> Self {
        OscillatorParams {
            white_fm_adev_1s: 1e-13,
            flicker_fm_floor: 1e-15,
            random_walk_fm_adev_1s: 1e-18,
            aging_per_s: 1e-16 / 86_400.0,
            temp_coeff_per_k: 1e-15,
            temp_amplitude_k: 0.5,
            temp_period_s: 86_400.0,
            initial_phase_sigma_s: 1e-6,
            initial_freq_sigma: 1e-13,
        }
    }

    /// Stratum-0 optical clock: 1e-16 at 1 s averaging down to a ~1e-18 floor. It defines
    /// the lab's time scale, so it starts exactly on time.
    pub fn optical() -> Self {
        OscillatorParams {
            white_fm_adev_1s: 1e-16,
            flicker_fm_floor: 1e-18,
            random_walk_fm_adev_1s: 0.0,
            aging_per_s: 0.0,
            temp_coeff_per_k: 1e-19,
            temp_amplitude_k: 0.5,
            temp_period_s: 86_400.0,
            initial_phase_sigma_s: 0.0,
            initial_freq_sigma: 0.0,
        }
    }

    /// A perfect clock (all terms zero); useful in tests.
    pub fn ideal() -> Self {
        OscillatorParams {
            white_fm_adev_1s: 0.0,
            flicker_fm_floor: 0.0,
            random_walk_fm_adev_1s: 0.0,
            aging_per_s: 0.0,
            temp_coeff_per_k: 0.0,
            temp_amplitude_k: 0.0,
            temp_period_s: 86_400.0,
            initial_phase_sigma_s: 0.0,
            initial_freq_sigma: 0.0,
        }
    }

    /// Rejects NaN, infinities, negative values and absurd magnitudes (> 1e-3, or phase
    /// σ > 1 s, or a temperature period outside 1 s … 10⁹ s). State is unchanged on error.
    pub fn validate(&self) -> Result<(), TimingError> {
        let nonneg = "finite, >= 0 and <= 1e-3";
        check_range(
            "white_fm_adev_1s",
            self.white_fm_adev_1s,
            0.0,
            MAX_COEFF,
            nonneg,
        )?;
        check_range(
            "flicker_fm_floor",
            self.flicker_fm_floor,
            0.0,
            MAX_COEFF,
            nonneg,
        )?;
        check_range(
            "random_walk_fm_adev_1s",
            self.random_walk_fm_adev_1s,
            0.0,
            MAX_COEFF,
            nonneg,
        )?;
        check_range(
            "aging_per_s",
            self.aging_per_s,
            -MAX_COEFF,
            MAX_COEFF,
            "|x| <= 1e-3",
        )?;
        check_range(
            "temp_coeff_per_k",
            self.temp_coeff_per_k,
            -MAX_COEFF,
            MAX_COEFF,
            "|x| <= 1e-3",
        )?;
        check_range(
            "temp_amplitude_k",
            self.temp_amplitude_k,
            0.0,
            1e3,
            "0..=1000 K",
        )?;
        check_range(
            "temp_period_s",
            self.temp_period_s,
            1.0,
            1e9,
            "1 s ..= 1e9 s",
        )?;
        check_range(
            "initial_phase_sigma_s",
            self.initial_phase_sigma_s,
            0.0,
            1.0,
            "0..=1 s",
        )?;
        check_range(
            "initial_freq_sigma",
            self.initial_freq_sigma,
            0.0,
            MAX_COEFF,
            nonneg,
        )?;
        Ok(())
    }

    fn flicker_pole_variance(&self) -> f64 {
        // Equal-variance poles a ratio r apart give S_y(f) ≈ s²/(f ln r) (one-sided), and a
        // flicker floor σ_y² = 2 ln2 h₋₁, so s² = a_f² ln r / (2 ln 2).
        self.flicker_fm_floor.powi(2) * FLICKER_RATIO.ln() / (2.0 * std::f64::consts::LN_2)
    }

    fn flicker_taus_s() -> [f64; FLICKER_POLES] {
        let mut t = [0.0; FLICKER_POLES];
        for (i, v) in t.iter_mut().enumerate() {
            *v = FLICKER_TAU_MIN_S * FLICKER_RATIO.powi(i as i32);
        }
        t
    }

    /// The Allan deviation this model should show at averaging time `tau_s` (> 0):
    /// √(a_w²/τ + a_f² + a_rw²·τ + D²τ²/2 + sinusoidal-FM term). Flicker is the ideal floor
    /// (the OU bank rolls off below 10 s and above 10⁶ s). Non-positive or NaN τ → NaN.
    pub fn allan_deviation_model(&self, tau_s: f64) -> f64 {
        if !(tau_s.is_finite() && tau_s > 0.0) {
            return f64::NAN;
        }
        let temp = {
            // Sinusoidal FM of amplitude y₀ at f_m: σ_y(τ) = y₀·sin²(πf_mτ)/(πf_mτ).
            let y0 = self.temp_coeff_per_k * self.temp_amplitude_k;
            let a = std::f64::consts::PI * tau_s / self.temp_period_s;
            y0 * a.sin().powi(2) / a
        };
        (self.white_fm_adev_1s.powi(2) / tau_s
            + self.flicker_fm_floor.powi(2)
            + self.random_walk_fm_adev_1s.powi(2) * tau_s
            + self.aging_per_s.powi(2) * tau_s * tau_s / 2.0
            + temp * temp)
            .sqrt()
    }

    /// Variance (s²) of the time error accumulated over `tau_s` of free running (holdover),
    /// when phase and frequency were known exactly at its start and the frequency is held:
    ///
    /// * white FM a_w²·τ and random-walk FM a_rw²·τ³ (exact for this parametrisation);
    /// * flicker FM: exact for the OU bank — per pole, the held frequency decays towards 0
    ///   (bias s²(τ − (1−e^{−τ/T})T)²) plus the pole's integrated noise;
    /// * aging and temperature are systematic, counted as one σ at their worst case:
    ///   (Dτ²/2)² and (k_T·A·min(ωτ²/2, 2τ))².
    ///
    /// Negative or NaN τ → 0.
    pub fn holdover_variance_s2(&self, tau_s: f64) -> f64 {
        if !(tau_s.is_finite() && tau_s > 0.0) {
            return 0.0;
        }
        let t = tau_s;
        let mut v =
            self.white_fm_adev_1s.powi(2) * t + self.random_walk_fm_adev_1s.powi(2) * t.powi(3);
        let s2 = self.flicker_pole_variance();
        if s2 > 0.0 {
            for tc in Self::flicker_taus_s() {
                let lambda = 1.0 / tc;
                let u = lambda * t;
                let mean_gap = if u < 1e-4 {
                    lambda * t * t / 2.0
                } else {
                    t - (-(-u).exp_m1()) / lambda
                };
                v += s2 * mean_gap * mean_gap + ou_integral_variance(s2, lambda, t);
            }
        }
        v += (self.aging_per_s * t * t / 2.0).powi(2);
        let omega = 2.0 * std::f64::consts::PI / self.temp_period_s;
        let temp = self.temp_coeff_per_k.abs()
            * self.temp_amplitude_k
            * (omega * t * t / 2.0).min(2.0 * t);
        v += temp * temp;
        v
    }

    /// Process noise for an offset+frequency Kalman filter tracking this oscillator:
    /// `(q_phase_s2_per_s, q_freq_per_s)`. White FM gives phase diffusion a_w²; random-walk FM
    /// gives frequency diffusion 3·a_rw². Flicker, aging and temperature are not random walks;
    /// they are folded in as an equivalent random-walk FM whose spread over a 1000 s filter
    /// window matches theirs (a_f²/1000 s, (D·1000 s)²/1000 s, (k_T·A·ω·1000 s)²/1000 s) —
    /// conservative, it makes the filter track rather than trust a stale frequency.
    pub fn kalman_process_noise(&self) -> (f64, f64) {
        const WINDOW_S: f64 = 1000.0;
        let omega = 2.0 * std::f64::consts::PI / self.temp_period_s;
        let temp_rate = self.temp_coeff_per_k.abs() * self.temp_amplitude_k * omega;
        let q_phase = self.white_fm_adev_1s.powi(2);
        let q_freq = 3.0 * self.random_walk_fm_adev_1s.powi(2)
            + 3.0 * self.flicker_fm_floor.powi(2) / WINDOW_S
            + (self.aging_per_s * WINDOW_S).powi(2) / WINDOW_S
            + (temp_rate * WINDOW_S).powi(2) / WINDOW_S;
        (q_phase, q_freq)
    }
}

/// Variance of ∫₀ᵗ y for an OU process of stationary variance s² and rate λ, given y(0).
fn ou_integral_variance(s2: f64, lambda: f64, t: f64) -> f64 {
    let u = lambda * t;
    if u < 1e-3 {
        // Series of (2s²/λ²)[u − 2(1−e^{−u}) + (1−e^{−2u})/2] = (2s²/λ²)(u³/3 − u⁴/4 + …).
        2.0 * s2 / (lambda * lambda) * (u.powi(3) / 3.0 - u.powi(4) / 4.0)
    } else {
        let a = -(-u).exp_m1();
        let b = -(-2.0 * u).exp_m1();
        (2.0 * s2 / (lambda * lambda) * (u - 2.0 * a + b / 2.0)).max(0.0)
    }
}

#[derive(Debug, Clone)]
struct FlickerPole {
    lambda_per_s: f64,
    y: f64,
}

/// One emulated hardware clock. Call [`Oscillator::advance_to`] with true time, then read
/// [`Oscillator::phase_error_s`]. Time never runs backwards: an earlier `true_now_ns` is a
/// no-op (documented clamping, not a panic).
#[derive(Debug, Clone)]
pub struct Oscillator {
    params: OscillatorParams,
    rng: ChaCha8Rng,
    start_ns: u64,
    now_ns: u64,
    x_s: f64,
    /// Constant frequency offset: initial offset plus injected drifts.
    y_offset: f64,
    y_rw: f64,
    flicker: Vec<FlickerPole>,
    flicker_s2: f64,
    temp_phase_rad: f64,
}

impl Oscillator {
    /// A clock powered up at `start_ns` with the given model and seed. The initial phase,
    /// frequency, flicker state and temperature phase are drawn from the seed.
    pub fn new(params: OscillatorParams, seed: u64, start_ns: u64) -> Result<Self, TimingError> {
        params.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x_s = params.initial_phase_sigma_s * gauss(&mut rng);
        let y_offset = params.initial_freq_sigma * gauss(&mut rng);
        let flicker_s2 = params.flicker_pole_variance();
        let flicker = OscillatorParams::flicker_taus_s()
            .iter()
            .map(|tc| FlickerPole {
                lambda_per_s: 1.0 / tc,
                y: flicker_s2.sqrt() * gauss(&mut rng),
            })
            .collect();
        let temp_phase_rad = 2.0 * std::f64::consts::PI * rand::Rng::gen::<f64>(&mut rng);
        Ok(Oscillator {
            params,
            rng,
            start_ns,
            now_ns: start_ns,
            x_s,
            y_offset,
            y_rw: 0.0,
            flicker,
            flicker_s2,
            temp_phase_rad,
        })
    }

    /// The preset constructors, seeded, starting at t = 0.
    pub fn ocxo_holdover(seed: u64) -> Self {
        Self::new(OscillatorParams::ocxo_holdover(), seed, 0).expect("preset is valid")
    }
    pub fn rubidium(seed: u64) -> Self {
        Self::new(OscillatorParams::rubidium(), seed, 0).expect("preset is valid")
    }
    pub fn hydrogen_maser(seed: u64) -> Self {
        Self::new(OscillatorParams::hydrogen_maser(), seed, 0).expect("preset is valid")
    }
    pub fn optical(seed: u64) -> Self {
        Self::new(OscillatorParams::optical(), seed, 0).expect("preset is valid")
    }

    pub fn params(&self) -> &OscillatorParams {
        &self.params
    }

    /// True time the clock has been advanced to, ns.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Phase error (clock − true time) at [`Oscillator::now_ns`], s.
    pub fn phase_error_s(&self) -> f64 {
        self.x_s
    }

    /// Advances to `true_now_ns` and returns the phase error there, s.
    pub fn phase_error_at(&mut self, true_now_ns: u64) -> f64 {
        self.advance_to(true_now_ns);
        self.x_s
    }

    /// Raw reading of this clock at `true_now_ns` (advances it).
    pub fn read(&mut self, true_now_ns: u64) -> crate::ClockStamp {
        self.advance_to(true_now_ns);
        crate::ClockStamp::from_true_ns(self.now_ns, self.x_s)
    }

    /// Current fractional frequency error (all terms), at [`Oscillator::now_ns`].
    pub fn frequency_error(&self) -> f64 {
        let t = self.elapsed_s(self.now_ns);
        self.y_offset
            + self.y_rw
            + self.flicker.iter().map(|p| p.y).sum::<f64>()
            + self.params.aging_per_s * t
            + self.temp_y(t)
    }

    /// Fault: the phase jumps by `step_s` (ignored if non-finite; clamped to ±1 s).
    pub fn inject_step(&mut self, step_s: f64) {
        if step_s.is_finite() {
            self.x_s += step_s.clamp(-1.0, 1.0);
        }
    }

    /// Fault: the frequency changes by `freq_offset` from now on (ignored if non-finite;
    /// clamped to ±1e-3).
    pub fn inject_drift(&mut self, freq_offset: f64) {
        if freq_offset.is_finite() {
            self.y_offset += freq_offset.clamp(-MAX_COEFF, MAX_COEFF);
        }
    }

    fn elapsed_s(&self, t_ns: u64) -> f64 {
        t_ns.saturating_sub(self.start_ns) as f64 * 1e-9
    }

    fn temp_y(&self, t_s: f64) -> f64 {
        let omega = 2.0 * std::f64::consts::PI / self.params.temp_period_s;
        self.params.temp_coeff_per_k
            * self.params.temp_amplitude_k
            * (omega * t_s + self.temp_phase_rad).sin()
    }

    /// Advances the model to `true_now_ns` with exact transitions. Earlier times: no-op.
    pub fn advance_to(&mut self, true_now_ns: u64) {
        if true_now_ns <= self.now_ns {
            return;
        }
        let dt = (true_now_ns - self.now_ns) as f64 * 1e-9;
        let ta = self.elapsed_s(self.now_ns);
        let tb = self.elapsed_s(true_now_ns);
        let p = self.params;
        // Deterministic terms, integrated analytically.
        let mut dx = self.y_offset * dt;
        dx += p.aging_per_s * (tb - ta) * (tb + ta) / 2.0;
        if p.temp_coeff_per_k != 0.0 && p.temp_amplitude_k != 0.0 {
            let omega = 2.0 * std::f64::consts::PI / p.temp_period_s;
            dx += p.temp_coeff_per_k * p.temp_amplitude_k / omega
                * ((omega * ta + self.temp_phase_rad).cos()
                    - (omega * tb + self.temp_phase_rad).cos());
        }
        // White FM: phase diffusion a_w² per second.
        if p.white_fm_adev_1s > 0.0 {
            dx += p.white_fm_adev_1s * dt.sqrt() * gauss(&mut self.rng);
        }
        // Random-walk FM: y Wiener with diffusion q = 3a²; exact joint (Δy, ∫Δy).
        if p.random_walk_fm_adev_1s > 0.0 {
            let q = 3.0 * p.random_walk_fm_adev_1s.powi(2);
            let l11 = (q * dt).sqrt();
            let l21 = l11 * dt / 2.0;
            let l22 = (q * dt.powi(3) / 12.0).sqrt();
            let (n1, n2) = (gauss(&mut self.rng), gauss(&mut self.rng));
            dx += self.y_rw * dt + l21 * n1 + l22 * n2;
            self.y_rw += l11 * n1;
        }
        // Flicker FM: OU poles; exact joint (y(t+dt), ∫y).
        if self.flicker_s2 > 0.0 {
            let s2 = self.flicker_s2;
            for pole in &mut self.flicker {
                let lambda = pole.lambda_per_s;
                let u = lambda * dt;
                let one_minus_e = -(-u).exp_m1();
                let e = 1.0 - one_minus_e;
                let v1 = s2 * (-(-2.0 * u).exp_m1());
                let c = s2 / lambda * one_minus_e * one_minus_e;
                let v2 = ou_integral_variance(s2, lambda, dt);
                let l11 = v1.sqrt();
                let l21 = if l11 > 0.0 { c / l11 } else { 0.0 };
                let l22 = (v2 - l21 * l21).max(0.0).sqrt();
                let (n1, n2) = (gauss(&mut self.rng), gauss(&mut self.rng));
                dx += pole.y * one_minus_e / lambda + l21 * n1 + l22 * n2;
                pole.y = pole.y * e + l11 * n1;
            }
        }
        self.x_s += dx;
        self.now_ns = true_now_ns;
    }
}

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Overlapping Allan deviation (Allan 1966; IEEE Std 1139 estimator) from phase samples
/// `phase_s` (seconds) taken every `tau0_s`, at averaging time τ = m·τ0:
///
/// σ_y²(τ) = Σ_{i=0}^{N−2m−1} (x_{i+2m} − 2x_{i+m} + x_i)² / (2τ²(N − 2m)).
///
/// Errors: τ0 not finite and positive, m = 0, fewer than 2m+1 samples, or any non-finite
/// sample.
pub fn allan_deviation(phase_s: &[f64], tau0_s: f64, m: usize) -> Result<f64, TimingError> {
    check_range(
        "tau0_s",
        tau0_s,
        f64::MIN_POSITIVE,
        f64::MAX,
        "finite and > 0",
    )?;
    if m == 0 {
        return Err(TimingError::InvalidParameter {
            name: "m",
            value: 0.0,
            expected: ">= 1",
        });
    }
    let needed = 2 * m + 1;
    if phase_s.len() < needed {
        return Err(TimingError::NotEnoughSamples {
            needed,
            got: phase_s.len(),
        });
    }
    if let Some(bad) = phase_s.iter().find(|v| !v.is_finite()) {
        return Err(TimingError::InvalidParameter {
            name: "phase_s[i]",
            value: *bad,
            expected: "finite",
        });
    }
    let n = phase_s.len() - 2 * m;
    let tau = m as f64 * tau0_s;
    let sum: f64 = (0..n)
        .map(|i| (phase_s[i + 2 * m] - 2.0 * phase_s[i + m] + phase_s[i]).powi(2))
        .sum();
    Ok((sum / (2.0 * tau * tau * n as f64)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(f: impl FnOnce(&mut OscillatorParams)) -> OscillatorParams {
        let mut p = OscillatorParams::ideal();
        f(&mut p);
        p
    }

    fn phase_series(p: OscillatorParams, seed: u64, tau0_s: f64, n: usize) -> Vec<f64> {
        let mut o = Oscillator::new(p, seed, 0).unwrap();
        (0..n)
            .map(|i| o.phase_error_at((i as f64 * tau0_s * 1e9) as u64))
            .collect()
    }

    /// Least-squares slope of log σ vs log τ over the given m's.
    fn adev_slope(x: &[f64], tau0_s: f64, ms: &[usize]) -> f64 {
        let pts: Vec<(f64, f64)> = ms
            .iter()
            .map(|&m| {
                let a = allan_deviation(x, tau0_s, m).unwrap();
                ((m as f64 * tau0_s).ln(), a.ln())
            })
            .collect();
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        sxy / sxx
    }

    #[test]
    fn adev_white_fm_slope_is_minus_half_and_level_matches() {
        let p = only(|p| p.white_fm_adev_1s = 1e-12);
        let x = phase_series(p, 7, 1.0, 20_000);
        let slope = adev_slope(&x, 1.0, &[1, 2, 4, 8, 16, 32, 64, 128]);
        let a1 = allan_deviation(&x, 1.0, 1).unwrap();
        println!("white FM: slope {slope:.3}, adev(1 s) {a1:.3e}");
        assert!((slope + 0.5).abs() < 0.08, "slope {slope}");
        assert!((a1 / 1e-12 - 1.0).abs() < 0.05, "adev(1 s) {a1}");
    }

    #[test]
    fn adev_random_walk_fm_slope_is_plus_half() {
        let p = only(|p| p.random_walk_fm_adev_1s = 1e-14);
        let x = phase_series(p, 11, 1.0, 20_000);
        let slope = adev_slope(&x, 1.0, &[4, 8, 16, 32, 64, 128, 256]);
        let a16 = allan_deviation(&x, 1.0, 16).unwrap();
        println!("random-walk FM: slope {slope:.3}, adev(16 s) {a16:.3e} (model 4e-14)");
        assert!((slope - 0.5).abs() < 0.15, "slope {slope}");
        assert!((a16 / 4e-14 - 1.0).abs() < 0.3, "adev(16 s) {a16}");
    }

    #[test]
    fn adev_flicker_fm_is_flat_near_floor() {
        let p = only(|p| p.flicker_fm_floor = 1e-13);
        let x = phase_series(p, 3, 10.0, 20_000);
        let slope = adev_slope(&x, 10.0, &[2, 4, 8, 16, 32, 64, 128]);
        let a = allan_deviation(&x, 10.0, 10).unwrap();
        println!("flicker FM: slope {slope:.3}, adev(100 s) {a:.3e}");
        assert!(slope.abs() < 0.2, "slope {slope}");
        assert!(a > 0.6e-13 && a < 1.5e-13, "adev(100 s) {a}");
    }

    #[test]
    fn preset_adev_follows_model() {
        for (name, p) in [
            ("ocxo", OscillatorParams::ocxo_holdover()),
            ("rubidium", OscillatorParams::rubidium()),
            ("maser", OscillatorParams::hydrogen_maser()),
            ("optical", OscillatorParams::optical()),
        ] {
            let x = phase_series(p, 5, 1.0, 10_000);
            for m in [1usize, 10, 100] {
                let sim = allan_deviation(&x, 1.0, m).unwrap();
                let model = p.allan_deviation_model(m as f64);
                println!("{name}: tau {m} s adev sim {sim:.3e} model {model:.3e}");
                assert!(sim / model > 0.6 && sim / model < 1.6, "{name} m={m}");
            }
        }
    }

    #[test]
    fn transitions_do_not_depend_on_step_size_in_distribution() {
        // One 1000 s step vs 1000 steps of 1 s: same phase-error variance (RW FM + flicker).
        let p = only(|p| {
            p.random_walk_fm_adev_1s = 1e-14;
            p.flicker_fm_floor = 1e-13;
        });
        let (mut v1, mut v2) = (0.0, 0.0);
        let n = 250;
        for s in 0..n {
            let mut a = Oscillator::new(p, s, 0).unwrap();
            let x0 = a.phase_error_s();
            let y0 = a.frequency_error();
            v1 += (a.phase_error_at(1_000_000_000_000) - x0 - y0 * 1000.0).powi(2);
            let mut b = Oscillator::new(p, s + 10_000, 0).unwrap();
            let x0 = b.phase_error_s();
            let y0 = b.frequency_error();
            for k in 1..=1000u64 {
                b.advance_to(k * 1_000_000_000);
            }
            v2 += (b.phase_error_s() - x0 - y0 * 1000.0).powi(2);
        }
        let model = p.holdover_variance_s2(1000.0);
        let (r1, r2) = (v1 / n as f64 / model, v2 / n as f64 / model);
        println!("holdover variance ratio to model: one step {r1:.3}, 1000 steps {r2:.3}");
        assert!(r1 > 0.75 && r1 < 1.3 && r2 > 0.75 && r2 < 1.3);
    }

    #[test]
    fn deterministic_terms_and_faults() {
        let p = only(|p| p.aging_per_s = 1e-12);
        let mut o = Oscillator::new(p, 1, 0).unwrap();
        // x = D t²/2 = 1e-12 · 100²/2 = 5e-9 at t = 100 s.
        assert!((o.phase_error_at(100_000_000_000) - 5e-9).abs() < 1e-18);
        o.inject_step(1e-6);
        o.inject_drift(1e-9);
        o.inject_step(f64::NAN);
        o.advance_to(50); // backwards: ignored
        let x = o.phase_error_at(101_000_000_000);
        let expect = 1e-12 * 101f64.powi(2) / 2.0 + 1e-6 + 1e-9;
        assert!((x - expect).abs() < 1e-15, "{x} vs {expect}");
        assert!((o.frequency_error() - (1e-9 + 1e-12 * 101.0)).abs() < 1e-20);
    }

    #[test]
    fn temperature_term_integrates_sine() {
        let p = only(|p| {
            p.temp_coeff_per_k = 1e-11;
            p.temp_amplitude_k = 1.0;
            p.temp_period_s = 1000.0;
        });
        let mut o = Oscillator::new(p, 9, 0).unwrap();
        // Over a whole period the sinusoidal FM integrates to zero phase.
        let x0 = o.phase_error_s();
        let mid = o.phase_error_at(500_000_000_000);
        assert!((o.phase_error_at(1_000_000_000_000) - x0).abs() < 1e-18);
        assert!((mid - x0).abs() > 0.0);
        assert!((mid - x0).abs() <= 2.0 * 1e-11 * 1000.0 / (2.0 * std::f64::consts::PI) + 1e-18);
    }

    #[test]
    fn bad_inputs_are_rejected_not_panicking() {
        let mut p = OscillatorParams::ocxo_holdover();
        p.white_fm_adev_1s = f64::NAN;
        assert!(Oscillator::new(p, 0, 0).is_err());
        p = OscillatorParams::ocxo_holdover();
        p.temp_period_s = 0.0;
        assert!(p.validate().is_err());
        assert!(allan_deviation(&[0.0; 4], 1.0, 2).is_err());
        assert!(allan_deviation(&[0.0; 5], 0.0, 2).is_err());
        assert!(allan_deviation(&[0.0, f64::NAN, 0.0], 1.0, 1).is_err());
        assert!(allan_deviation(&[0.0; 5], 1.0, 0).is_err());
        assert!(p.allan_deviation_model(f64::NAN).is_nan());
        assert_eq!(
            OscillatorParams::ocxo_holdover().holdover_variance_s2(-1.0),
            0.0
        );
    }

    #[test]
    fn same_seed_same_clock() {
        let mut a = Oscillator::ocxo_holdover(42);
        let mut b = Oscillator::ocxo_holdover(42);
        let mut c = Oscillator::ocxo_holdover(43);
        for k in 1..100u64 {
            let t = k * 7_777_777_777;
            assert_eq!(a.phase_error_at(t).to_bits(), b.phase_error_at(t).to_bits());
            let _ = c.phase_error_at(t);
        }
        assert_ne!(a.phase_error_s(), c.phase_error_s());
    }
}
