//! Delay distribution tables for netem (`TCA_NETEM_DELAY_DIST`), computed here.
//!
//! The kernel has no built-in shapes: `tc` reads a table of 4096 signed 16-bit values from
//! `/usr/lib/tc/{normal,pareto,paretonormal}.dist` and sends it. The kernel picks a uniform
//! random entry `t` and adds `jitter × t / 8192` (NETEM_DIST_SCALE) to the delay, so a table
//! is the quantile function of a zero-mean, unit-scale distribution sampled at 4096 evenly
//! spaced probabilities, times 8192, clamped to `i16`.
//!
//! We compute the tables from the math instead of shipping files, and reproduce the values
//! iproute2 ships bit for bit (checked against captured `tc` requests in
//! `tests/netem_golden.rs`), because the same `jitter` then means the same delay spread
//! whichever tool set it up:
//!
//! * **normal**: quantiles of N(0,1). iproute2's tables come from sampling the CDF
//!   Φ(x) = ½·erfc(−x/√2) on a grid (x from −10 in steps of 5·10⁻⁵ while x < 10.05, the
//!   step accumulated in `f64`), dropping each grid point into one of 16384 buckets
//!   `rint(16384·Φ(x))`, keeping the *last* x per bucket, and emitting every 4th bucket.
//!   Entry j is therefore ≈ Φ⁻¹((4j + ½)/16384) on that grid; we do exactly that (entry 0 is
//!   the lower tail, clamped to −32768).
//! * **pareto**: Pareto with shape a = 3 and scale 1 (mean 1.5, variance 0.75): entry j is the
//!   quantile at u = j/4096, `(1 − u)^(−1/3)`, centred by the mean and multiplied by 4/3
//!   (1/variance), times 8192.
//! * **paretonormal**: the comonotone mixture ¼·normal + ¾·pareto of the two quantiles at
//!   the same index (before clamping the normal part; the pareto part clamped to i16::MAX),
//!   with C's truncating integer division by 4.
//!
//! erf/erfc are not in `std`; we evaluate them with the Taylor series
//! erf(x) = 2/√π · e^(−x²) · Σ (2x²)ⁿ·x / (1·3·…·(2n+1)) for |x| < 2.5 and Lentz's continued
//! fraction for erfc beyond; both are accurate to a few ulp, which is what bucket edges need.

use std::sync::OnceLock;

use lightcone_link::model::DelayDistribution;

/// Entries per table, as shipped by iproute2 (the kernel accepts up to 16384).
pub const DIST_TABLE_LEN: usize = 4096;
/// netem's fixed-point scale: a table entry of 8192 means one `jitter`.
pub const NETEM_DIST_SCALE: f64 = 8192.0;
/// Number of CDF buckets sampled; every `BUCKETS / DIST_TABLE_LEN`-th one is kept.
const BUCKETS: usize = 16384;

/// The table for `dist`, or `None` for [`DelayDistribution::Uniform`] (netem's built-in).
pub fn table(dist: DelayDistribution) -> Option<&'static [i16]> {
    static NORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETO: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETONORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    match dist {
        DelayDistribution::Uniform => None,
        DelayDistribution::Normal => Some(NORMAL.get_or_init(normal_table)),
        DelayDistribution::Pareto => Some(PARETO.get_or_init(pareto_table)),
        DelayDistribution::Paretonormal => Some(PARETONORMAL.get_or_init(paretonormal_table)),
    }
}

/// A table for uniform jitter on [−σ, σ]: evenly spaced quantiles, so `tabledist` draws
/// uniformly with a resolution of σ/2048. The kernel's own uniform (no table) is the same
/// law; this table exists because a qdisc that once loaded a table keeps it on change.
pub fn uniform_table() -> &'static [i16] {
    static UNIFORM: OnceLock<Vec<i16>> = OnceLock::new();
    UNIFORM.get_or_init(|| {
        let n = DIST_TABLE_LEN as f64;
        (0..DIST_TABLE_LEN)
            .map(|i| {
                let q = (2.0 * i as f64 + 1.0) / n - 1.0; // bucket midpoints in (−1, 1)
                clamp_i16((q * NETEM_DIST_SCALE).round_ties_even() as i64)
            })
            .collect()
    })
}

fn clamp_i16(v: i64) -> i16 {
    v.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// For every kept bucket, the unclamped value `rint(8192 · x)` of its last grid point.
fn normal_scaled() -> Vec<i64> {
    let mut last_x: Vec<Option<f64>> = vec![None; BUCKETS + 1];
    let mut x = -10.0_f64;
    while x < 10.05 {
        let bucket = (BUCKETS as f64 * std_normal_cdf(x)).round_ties_even() as usize;
        last_x[bucket.min(BUCKETS)] = Some(x);
        x += 0.00005;
    }
    // Every kept bucket is hit (the grid is 3× finer than the buckets at the mode, finer
    // still in the tails); fall back to the nearest lower one all the same.
    let mut fallback = -10.0;
    let mut kept = Vec::with_capacity(DIST_TABLE_LEN);
    for (i, slot) in last_x.iter().take(BUCKETS).enumerate() {
        if let Some(v) = slot {
            fallback = *v;
        }
        if i % (BUCKETS / DIST_TABLE_LEN) == 0 {
            let v = slot.unwrap_or(fallback);
            kept.push((v * NETEM_DIST_SCALE).round_ties_even() as i64);
        }
    }
    kept
}

fn normal_table() -> Vec<i16> {
    normal_scaled().into_iter().map(clamp_i16).collect()
}

/// Standardised Pareto(a = 3) quantile at u = j/4096, × 8192, unclamped.
fn pareto_scaled(j: usize) -> f64 {
    const SHAPE: f64 = 3.0;
    // 1 − j/4096, exact in f64.
    let survival = (65536 - 16 * j) as f64 / 65536.0;
    let quantile = 1.0 / survival.powf(1.0 / SHAPE);
    (quantile - 1.5) * (4.0 / 3.0) * NETEM_DIST_SCALE
}

fn pareto_table() -> Vec<i16> {
    (0..DIST_TABLE_LEN)
        .map(|j| clamp_i16(pareto_scaled(j).round_ties_even() as i64))
        .collect()
}

fn paretonormal_table() -> Vec<i16> {
    normal_scaled()
        .into_iter()
        .enumerate()
        .map(|(j, normal)| {
            let pareto = (pareto_scaled(j).round_ties_even() as i64).min(i64::from(i16::MAX));
            // Rust's `/` truncates toward zero, like C's.
            clamp_i16((normal + 3 * pareto) / 4)
        })
        .collect()
}

/// Φ(x) for the standard normal distribution.
fn std_normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    if x.abs() < 2.5 {
        1.0 - erf_series(x)
    } else if x > 0.0 {
        erfc_contfrac(x)
    } else {
        2.0 - erfc_contfrac(-x)
    }
}

/// erf(x) = 2/√π · e^(−x²) · Σₙ (2x²)ⁿ · x / (2n+1)!!  (all terms positive: no cancellation).
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > sum.abs() * 1e-17 {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if n > 200.0 {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
}

/// erfc(x) for x ≥ 2.5: e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated with
/// the modified Lentz algorithm.
fn erfc_contfrac(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..300 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Reference values (Abramowitz & Stegun table 7.1, extended precision).
        let cases = [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
        ];
        for (x, want) in cases {
            let got = 1.0 - erfc(x);
            assert!((got - want).abs() < 1e-15, "erf({x}) = {got}, want {want}");
        }
        // erfc(3) = 2.209049699858544e-5 (continued-fraction branch).
        let got = erfc(3.0);
        assert!(
            (got / 2.209_049_699_858_544e-5 - 1.0).abs() < 1e-13,
            "erfc(3) = {got}"
        );
        // The branches agree where they meet.
        let (a, b) = (1.0 - erf_series(2.5), erfc_contfrac(2.5));
        // (1 − erf loses ~3 digits to cancellation at 2.5; both are far inside bucket precision.)
        assert!((a / b - 1.0).abs() < 1e-11, "{a} vs {b}");
    }

    #[test]
    fn uniform_table_is_uniform_on_minus_one_to_one() {
        let t = uniform_table();
        assert_eq!(t.len(), DIST_TABLE_LEN);
        assert!(t.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!((t[0], t[DIST_TABLE_LEN - 1]), (-8190, 8190));
        let mean: f64 = t.iter().map(|&v| f64::from(v)).sum::<f64>() / DIST_TABLE_LEN as f64;
        assert!(mean.abs() < 0.5, "mean {mean}");
        // Variance of U(−1, 1) is 1/3.
        let var: f64 = t
            .iter()
            .map(|&v| (f64::from(v) / NETEM_DIST_SCALE).powi(2))
            .sum::<f64>()
            / DIST_TABLE_LEN as f64;
        assert!((var - 1.0 / 3.0).abs() < 1e-4, "variance {var}");
    }

    #[test]
    fn tables_have_the_expected_shape() {
        for dist in [
            DelayDistribution::Normal,
            DelayDistribution::Pareto,
            DelayDistribution::Paretonormal,
        ] {
            let t = table(dist).unwrap();
            assert_eq!(t.len(), DIST_TABLE_LEN);
            assert!(t.windows(2).all(|w| w[0] <= w[1]), "{dist:?} not monotone");
        }
        let n = table(DelayDistribution::Normal).unwrap();
        // Symmetric around 0 and unit scale: the median is ~0, the 84th percentile ~+1σ.
        assert!(n[2048].abs() <= 3, "median {}", n[2048]);
        let p84 = f64::from(n[(0.8413 * 4096.0) as usize]) / NETEM_DIST_SCALE;
        assert!((p84 - 1.0).abs() < 0.01, "84th percentile {p84}");
        let mean: f64 = n.iter().map(|&v| f64::from(v)).sum::<f64>() / 4096.0;
        assert!(mean.abs() < 20.0, "mean {mean}");
        // Pareto starts at (1 − 1.5)·4/3 = −2/3 and its tail saturates.
        let p = table(DelayDistribution::Pareto).unwrap();
        assert_eq!(p[0], -5461);
        assert_eq!(p[4095], i16::MAX);
        assert!(table(DelayDistribution::Uniform).is_none());
    }
}
