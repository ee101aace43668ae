//! The thermal model of one tile (equations and sources in [`crate::heat`]).

use serde::{Deserialize, Serialize};

/// Stefan–Boltzmann constant, W m⁻² K⁻⁴ (CODATA 2018, exact since the 2019 SI).
pub const STEFAN_BOLTZMANN: f64 = 5.670_374_419e-8;
/// The Sun's nominal effective temperature, K (IAU 2015 Resolution B3).
pub const SUN_TEMPERATURE_K: f64 = 5772.0;
/// The Sun's nominal radius in astronomical units (IAU 2015 B3: 695 700 km; IAU 2012 B2:
/// 1 AU = 149 597 870 700 m).
pub const SUN_RADIUS_AU: f64 = 695_700_000.0 / 149_597_870_700.0;
/// The spec's backpressure threshold: "~90 % thermal load".
pub const BACKPRESSURE_LOAD: f64 = 0.9;

/// The thermal parameters of the tiles of one layer (shell). Every field has a default, so
/// a topology names only what it changes. Safe ranges are checked by [`LayerThermal::check`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerThermal {
    /// Radiator area per tile, m² (0 < A ≤ 10⁶). Default 1.
    pub radiator_area_m2: f64,
    /// Radiator emissivity ε (0 < ε ≤ 1). Default 0.9 (white paint, OSR: 0.8–0.9).
    pub emissivity: f64,
    /// Highest temperature the radiator and electronics stand, K (must exceed the sink at
    /// the shell's radius; ≤ 2000). Default 400 K.
    pub max_temp_k: f64,
    /// Thermal mass per tile, J/K (0 < C ≤ 10¹²). Default 2000 J/K (about 2 kg of
    /// aluminium), a time constant of minutes at the defaults.
    pub thermal_mass_j_per_k: f64,
    /// Power drawn with no work, W (0 ≤ P ≤ 10⁹). Default 50 W.
    pub idle_power_w: f64,
    /// Power one compute unit dissipates while in use, W (0 < p ≤ 10⁹). Default 10 W.
    pub power_per_unit_w: f64,
    /// Compute units a tile offers (1 ..= 10⁶). Default 64.
    pub compute_units: u32,
    /// Memory a tile offers, MiB. Default 4096.
    pub memory_mib: u32,
    /// Bandwidth a tile offers to workload traffic, Mbit/s. Default 1000.
    pub bandwidth_mbps: u32,
    /// Fraction of the radiator's emission that lands on the shell outside (view factor,
    /// 0 ≤ f < 1; must be 0 on the outermost layer, which has nothing around it). Default:
    /// 0.5 on inner layers, 0 on the outermost.
    pub outward_fraction: Option<f64>,
}

impl Default for LayerThermal {
    fn default() -> Self {
        LayerThermal {
            radiator_area_m2: 1.0,
            emissivity: 0.9,
            max_temp_k: 400.0,
            thermal_mass_j_per_k: 2000.0,
            idle_power_w: 50.0,
            power_per_unit_w: 10.0,
            compute_units: 64,
            memory_mib: 4096,
            bandwidth_mbps: 1000,
            outward_fraction: None,
        }
    }
}

/// Default view factor of the enclosing shell for an inner layer.
pub const DEFAULT_OUTWARD_FRACTION: f64 = 0.5;

/// Why a layer's thermal parameters cannot be used: the field, and what is wrong. Nothing
/// is built from parameters that fail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct ThermalError {
    /// The parameter's name as written in a topology.
    pub field: &'static str,
    pub message: String,
}

fn range(field: &'static str, v: f64, lo_open: f64, hi: f64) -> Result<(), ThermalError> {
    if v.is_finite() && v > lo_open && v <= hi {
        Ok(())
    } else {
        Err(ThermalError {
            field,
            message: format!("{v} is out of range (more than {lo_open}, at most {hi})"),
        })
    }
}

/// Temperature of the sink a radiator at `radius_au` sees, K (see [`crate::heat`]).
pub fn sink_temp_k(radius_au: f64) -> f64 {
    SUN_TEMPERATURE_K * (SUN_RADIUS_AU / (2.0 * radius_au)).sqrt()
}

impl LayerThermal {
    /// Checks every field for a layer at `radius_au`; `outermost` layers may not pass heat
    /// outward. The first mistake is returned.
    pub fn check(&self, radius_au: f64, outermost: bool) -> Result<(), ThermalError> {
        range("radiator_area_m2", self.radiator_area_m2, 0.0, 1e6)?;
        range("emissivity", self.emissivity, 0.0, 1.0)?;
        range("thermal_mass_j_per_k", self.thermal_mass_j_per_k, 0.0, 1e12)?;
        range("power_per_unit_w", self.power_per_unit_w, 0.0, 1e9)?;
        range("max_temp_k", self.max_temp_k, 0.0, 2000.0)?;
        if !(self.idle_power_w.is_finite() && (0.0..=1e9).contains(&self.idle_power_w)) {
            return Err(ThermalError {
                field: "idle_power_w",
                message: format!("{} is out of range (0 to 1e9 W)", self.idle_power_w),
            });
        }
        if !(1..=1_000_000).contains(&self.compute_units) {
            return Err(ThermalError {
                field: "compute_units",
                message: format!("{} is out of range (1 to 1000000)", self.compute_units),
            });
        }
        if let Some(f) = self.outward_fraction {
            if !(f.is_finite() && (0.0..1.0).contains(&f)) {
                return Err(ThermalError {
                    field: "outward_fraction",
                    message: format!("{f} is out of range (0 to below 1)"),
                });
            }
            if outermost && f != 0.0 {
                return Err(ThermalError {
                    field: "outward_fraction",
                    message: format!("{f} on the outermost layer, which has no shell around it to take the heat: it must be 0"),
                });
            }
        }
        if !(radius_au.is_finite() && radius_au > 0.0) {
            return Err(ThermalError {
                field: "radius_au",
                message: format!("{radius_au} is not a radius (positive AU)"),
            });
        }
        let sink = sink_temp_k(radius_au);
        if self.max_temp_k <= sink {
            return Err(ThermalError {
                field: "max_temp_k",
                message: format!(
                    "{} K is not above the sink at {radius_au} AU ({sink:.1} K): a radiator there can reject nothing",
                    self.max_temp_k
                ),
            });
        }
        Ok(())
    }

    /// The view factor in force: the given one, else the default for the layer's place.
    pub fn outward(&self, outermost: bool) -> f64 {
        if outermost {
            0.0
        } else {
            self.outward_fraction.unwrap_or(DEFAULT_OUTWARD_FRACTION)
        }
    }
}

/// Energy booked over one or more steps, J. `produced + received = rejected +
/// passed_outward + stored`, to rounding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Flows {
    /// Heat from the tile's own work.
    pub produced_j: f64,
    /// Heat landed on the tile from the shell inside it.
    pub received_j: f64,
    /// Heat radiated to deep space.
    pub rejected_j: f64,
    /// Heat radiated onto the shell outside.
    pub passed_outward_j: f64,
    /// Change of the tile's stored heat (`C ΔT`; negative when it cools).
    pub stored_j: f64,
}

impl Flows {
    fn add(&mut self, o: &Flows) {
        self.produced_j += o.produced_j;
        self.received_j += o.received_j;
        self.rejected_j += o.rejected_j;
        self.passed_outward_j += o.passed_outward_j;
        self.stored_j += o.stored_j;
    }
    /// `produced + received − rejected − passed outward − stored`: zero but for rounding.
    pub fn imbalance_j(&self) -> f64 {
        self.produced_j + self.received_j - self.rejected_j - self.passed_outward_j - self.stored_j
    }
}

/// One tile's thermal state: its parameters resolved for its shell, and its temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct TileThermal {
    area_eps_sigma: f64,
    sink4: f64,
    sink_k: f64,
    max_temp_k: f64,
    mass: f64,
    outward: f64,
    /// Longest stable Euler step, s.
    max_step_s: f64,
    temp_k: f64,
    /// Everything booked since construction.
    pub total: Flows,
}

impl TileThermal {
    /// A tile of a layer at `radius_au` (parameters checked), starting at its sink's
    /// temperature.
    pub fn new(p: &LayerThermal, radius_au: f64, outermost: bool) -> Result<Self, ThermalError> {
        p.check(radius_au, outermost)?;
        let sink = sink_temp_k(radius_au);
        let aes = p.radiator_area_m2 * p.emissivity * STEFAN_BOLTZMANN;
        let tau = p.thermal_mass_j_per_k / (4.0 * aes * p.max_temp_k.powi(3));
        Ok(TileThermal {
            area_eps_sigma: aes,
            sink4: sink.powi(4),
            sink_k: sink,
            max_temp_k: p.max_temp_k,
            mass: p.thermal_mass_j_per_k,
            outward: p.outward(outermost),
            max_step_s: tau / 10.0,
            temp_k: sink,
            total: Flows::default(),
        })
    }
    pub fn temp_k(&self) -> f64 {
        self.temp_k
    }
    pub fn sink_k(&self) -> f64 {
        self.sink_k
    }
    pub fn outward_fraction(&self) -> f64 {
        self.outward
    }
    /// Net emission at temperature `t`, W.
    fn emission_w(&self, t: f64) -> f64 {
        self.area_eps_sigma * (t.powi(4) - self.sink4)
    }
    /// The most heat the radiator rejects in steady state (at `max_temp_k`), W.
    pub fn capacity_w(&self) -> f64 {
        self.emission_w(self.max_temp_k)
    }
    /// Thermal load: heat to reject (own power + heat received) over capacity.
    pub fn load_ratio(&self, power_w: f64, received_w: f64) -> f64 {
        (power_w + received_w) / self.capacity_w()
    }
    /// Heat the tile passes outward right now, W.
    pub fn outward_w(&self) -> f64 {
        self.outward * self.emission_w(self.temp_k)
    }
    /// Advances `dt_s` seconds with the tile drawing `power_w` and receiving `received_w`
    /// from inside; returns what this interval booked (also added to [`Self::total`]).
    /// Non-finite or negative inputs count as 0 (the callers are ours; nothing panics).
    pub fn step(&mut self, dt_s: f64, power_w: f64, received_w: f64) -> Flows {
        let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let (mut left, p, q) = (clean(dt_s), clean(power_w), clean(received_w));
        let mut f = Flows::default();
        while left > 0.0 {
            let h = left.min(self.max_step_s);
            left -= h;
            let e = self.emission_w(self.temp_k);
            let dtemp = (p + q - e) * h / self.mass;
            f.produced_j += p * h;
            f.received_j += q * h;
            f.passed_outward_j += self.outward * e * h;
            f.rejected_j += (1.0 - self.outward) * e * h;
            f.stored_j += self.mass * dtemp;
            self.temp_k += dtemp;
        }
        self.total.add(&f);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(r: f64, outermost: bool) -> TileThermal {
        TileThermal::new(&LayerThermal::default(), r, outermost).unwrap()
    }

    #[test]
    fn the_sink_at_one_au_is_the_suns_equilibrium_temperature() {
        assert!(
            (sink_temp_k(1.0) - 278.33).abs() < 0.01,
            "{}",
            sink_temp_k(1.0)
        );
        // Four times closer, twice the temperature (T ∝ r^-1/2).
        assert!((sink_temp_k(0.25) / sink_temp_k(1.0) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn energy_balances_over_a_ramp_heating_and_cooling() {
        for (r, outermost) in [(0.6, false), (1.0, true), (2.0, false)] {
            let mut t = tile(r, outermost);
            // Ramp up, hold, cut: heating stores heat, cooling gives it back.
            for i in 0..600 {
                let p = if i < 300 { 50.0 + i as f64 } else { 0.0 };
                let f = t.step(1.0, p, if i % 7 == 0 { 20.0 } else { 0.0 });
                let scale = f.produced_j + f.received_j + f.rejected_j.abs() + 1.0;
                assert!(f.imbalance_j().abs() <= 1e-9 * scale, "{f:?}");
            }
            let tot = t.total;
            assert!(tot.produced_j > 0.0 && tot.rejected_j > 0.0);
            if outermost {
                assert_eq!(tot.passed_outward_j, 0.0);
            } else {
                assert!(tot.passed_outward_j > 0.0);
            }
            let scale = tot.produced_j + tot.received_j;
            assert!(tot.imbalance_j().abs() <= 1e-9 * scale, "{tot:?}");
        }
    }

    #[test]
    fn a_held_load_settles_where_emission_equals_input() {
        let mut t = tile(1.0, false);
        for _ in 0..5000 {
            t.step(1.0, 500.0, 100.0);
        }
        // Steady state: E(T) = P + Q_in, so nothing more is stored.
        let f = t.step(10.0, 500.0, 100.0);
        assert!(f.stored_j.abs() < 1e-3 * f.produced_j, "{f:?}");
        assert!(
            (t.outward_w() - 0.5 * 600.0).abs() < 0.5,
            "{}",
            t.outward_w()
        );
        assert!(t.temp_k() < 400.0 && t.temp_k() > t.sink_k());
    }

    #[test]
    fn closer_to_the_star_the_same_radiator_rejects_less() {
        let caps: Vec<f64> = [0.5, 0.7, 1.0, 5.0]
            .iter()
            .map(|r| tile(*r, true).capacity_w())
            .collect();
        assert!(caps.windows(2).all(|w| w[0] < w[1]), "{caps:?}");
        // At 1 AU: 0.9 σ (400⁴ − 278.33⁴) = 1000.2 W per m².
        assert!((caps[2] - 1000.2).abs() < 0.1, "{}", caps[2]);
        let t = tile(1.0, true);
        assert!((t.load_ratio(850.0, 50.0) - 0.9).abs() < 0.001);
    }

    #[test]
    fn bad_parameters_name_the_field_and_build_nothing() {
        let bad = |f: &dyn Fn(&mut LayerThermal), r: f64, outermost: bool| {
            let mut p = LayerThermal::default();
            f(&mut p);
            TileThermal::new(&p, r, outermost).unwrap_err().field
        };
        assert_eq!(bad(&|p| p.emissivity = 1.5, 1.0, true), "emissivity");
        assert_eq!(
            bad(&|p| p.radiator_area_m2 = f64::NAN, 1.0, true),
            "radiator_area_m2"
        );
        assert_eq!(
            bad(&|p| p.thermal_mass_j_per_k = 0.0, 1.0, true),
            "thermal_mass_j_per_k"
        );
        assert_eq!(bad(&|p| p.idle_power_w = -1.0, 1.0, true), "idle_power_w");
        assert_eq!(bad(&|p| p.compute_units = 0, 1.0, true), "compute_units");
        assert_eq!(
            bad(&|p| p.outward_fraction = Some(1.0), 1.0, false),
            "outward_fraction"
        );
        assert_eq!(
            bad(&|p| p.outward_fraction = Some(0.3), 1.0, true),
            "outward_fraction"
        );
        // 0.1 AU: the sink is 880 K, above the default 400 K limit.
        let e = TileThermal::new(&LayerThermal::default(), 0.1, true).unwrap_err();
        assert_eq!(e.field, "max_temp_k");
        assert!(e.to_string().contains("can reject nothing"), "{e}");
        assert_eq!(bad(&|_| {}, 0.0, true), "radius_au");
    }

    #[test]
    fn garbage_inputs_count_as_nothing() {
        let mut t = tile(1.0, true);
        let f = t.step(f64::NAN, f64::INFINITY, -5.0);
        assert_eq!(f, Flows::default());
        let f = t.step(1.0, f64::NAN, -5.0);
        assert_eq!(f.produced_j, 0.0);
        assert!(t.temp_k().is_finite());
    }
}
