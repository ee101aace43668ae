//! Heat as a schedulable resource (issue 15): the thermal model of a tile ([`model`]) and,
//! built on it, what a tile offers its cell ([`descriptor`]).
//!
//! # The model and its sources
//!
//! Every tile of a shell (a layer of the topology, at radius `r` from the star) runs work
//! that dissipates all the electrical power it draws as heat, and gets rid of it through a
//! radiator. The equations, all in SI units (W, J, K, m²):
//!
//! - **Power from work.** `P = P_idle + p_unit · u · s`, with `u` the compute units in use,
//!   `p_unit` the watts one unit dissipates and `s ∈ [0, 1]` the throttle factor (1 = not
//!   throttled). Every watt drawn ends as heat (first law; a computer does no external work).
//! - **The sink a shell's radiator sees.** `T_sink(r) = T★ · √(R★ / (2 r))`: the radiative
//!   equilibrium temperature of a black isothermal sphere at distance `r` from a star of
//!   effective temperature `T★` and radius `R★`, zero albedo (the planetary equilibrium
//!   temperature; e.g. de Pater & Lissauer, *Planetary Sciences*, ch. 3). For the Sun
//!   (IAU 2015 Resolution B3: `T★` = 5772 K, `R★` = 695 700 km = 0.00465047 AU) it is
//!   278.3 K at 1 AU (tested). A shell
//!   closer to the star sees a hotter sink, so the same radiator rejects less there: this
//!   is how the shell's radius enters.
//! - **Heat the radiator emits.** Stefan–Boltzmann, net exchange of a grey body with its
//!   sink: `E(T) = ε σ A (T⁴ − T_sink⁴)`, `σ` = 5.670 374 419 × 10⁻⁸ W m⁻² K⁻⁴ (CODATA
//!   2018), `ε` the emissivity, `A` the radiator area, `T` the tile's temperature.
//! - **Heat passed outward.** A Matroska shell radiates into the one outside it: a
//!   fraction `f` of `E` (the view factor of the enclosing shell, a per-layer parameter)
//!   lands on the next shell out, which must reject it in turn; the rest, `(1 − f) E`, is
//!   **rejected** to deep space. The outermost shell has nothing around it: `f = 0`. The
//!   heat a tile receives from the shell inside it, `Q_in`, is an input of the model.
//! - **Heat stored.** The tile's thermal mass `C` (J/K): `C dT/dt = P + Q_in − E(T)`.
//!   Integrated by explicit Euler steps no longer than a tenth of the radiator's time
//!   constant `C / (4 ε σ A T_max³)` (stable, since `dE/dT = 4 ε σ A T³`). Each step books
//!   produced `P h`, received `Q_in h`, rejected `(1−f) E h`, passed outward `f E h` and
//!   stored `C ΔT`, with `ΔT = (P + Q_in − E) h / C`, so **produced + received = rejected +
//!   passed outward + stored** holds to rounding (tested).
//! - **Capacity and thermal load.** The most a radiator can emit in steady state is at its
//!   material limit `T_max`: `Q_cap = ε σ A (T_max⁴ − T_sink⁴)`. The **thermal load** is the
//!   heat to reject over the capacity: `ρ = (P + Q_in) / Q_cap`. Above 1 the tile heats
//!   without bound; the spec's backpressure threshold is ρ = 0.9 ("~90 % thermal load").
//!
//! What the model leaves out, on purpose: conduction between tiles of one shell, the
//! absorbed starlight (folded into `T_sink`), the enclosing shell's own temperature (it
//! is cooler than `T_sink(r)` of the inner shell, so `T_sink` is the conservative bound).

pub mod machine;
pub mod model;
pub mod msg;

/// Puts Class-A frames (everything but workload: membership, routing, time, thermal
/// signals, leases) before workload frames (`Data`, `Kv`), keeping each class's order: the
/// node's outbox sends control before data (issue 15). Reads the kind byte of each
/// encoded frame, so forwarded frames are ordered too.
pub fn class_a_first(q: &mut std::collections::VecDeque<crate::io::Transmit>) {
    let workload = |t: &crate::io::Transmit| {
        matches!(
            t.bytes.get(3).copied(),
            Some(k) if k == crate::wire::KIND_DATA || k == crate::wire::KIND_KV
        )
    };
    if q.iter().any(workload) {
        let (mut a, b): (std::collections::VecDeque<_>, std::collections::VecDeque<_>) =
            q.drain(..).partition(|t| !workload(t));
        a.extend(b);
        *q = a;
    }
}

/// This node and the live members of its cell, ascending.
pub fn live_cell(me: u32, m: &crate::membership::Membership) -> Vec<u32> {
    let mut v: Vec<u32> = std::iter::once(me)
        .chain(
            m.active()
                .iter()
                .copied()
                .filter(|n| m.state_of(*n) == Some(crate::wire::MemberState::Alive)),
        )
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use model::{LayerThermal, ThermalError, TileThermal};

/// Longest interval between two steps of the model and descriptor rounds, emulated ns
/// (one hour); the shortest is 1 ms.
pub const MAX_INTERVAL_NS: u64 = 3_600_000_000_000;
/// Shortest interval, emulated ns.
pub const MIN_INTERVAL_NS: u64 = 1_000_000;

/// The thermal subsystem's configuration, the same for every agent of a lab (the topology's
/// `thermal:` section). `None` in [`AgentConfig`](crate::config::AgentConfig): the
/// subsystem is off and the node behaves as before it existed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThermalConfig {
    /// Parameters of each layer (shell) by layer number; layer numbers grow outward, the
    /// highest is the outermost shell. Every layer of the lab has an entry.
    pub layers: BTreeMap<u16, LayerThermal>,
    /// How often a tile steps its model and gossips its descriptor, emulated ns.
    pub interval_ns: u64,
}

/// Default interval between descriptor rounds: 1 s emulated.
pub const DEFAULT_INTERVAL_NS: u64 = 1_000_000_000;

impl ThermalConfig {
    /// The outermost layer's number (the highest), if any.
    pub fn outermost(&self) -> Option<u16> {
        self.layers.keys().next_back().copied()
    }
    /// The model of a tile of `layer` at `radius_au`; the error names the parameter.
    pub fn tile(&self, layer: u16, radius_au: f64) -> Result<TileThermal, ThermalError> {
        let p = self.layers.get(&layer).ok_or_else(|| ThermalError {
            field: "layers",
            message: format!("no thermal parameters for layer {layer}"),
        })?;
        TileThermal::new(p, radius_au, self.outermost() == Some(layer))
    }
    /// Checks the interval (the layers are checked where their radius is known).
    pub fn check_interval(&self) -> Result<(), ThermalError> {
        if (MIN_INTERVAL_NS..=MAX_INTERVAL_NS).contains(&self.interval_ns) {
            Ok(())
        } else {
            Err(ThermalError {
                field: "interval",
                message: format!(
                    "{} ns is out of range (1 ms to 1 h emulated)",
                    self.interval_ns
                ),
            })
        }
    }
}

/// Distance from the star (the frame's origin), AU: a tile's shell radius.
pub fn radius_au(position_au: [f64; 3]) -> f64 {
    position_au.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Transmit;

    #[test]
    fn class_a_frames_leave_before_workload_in_their_own_order() {
        let t = |to: u32, kind: u8| Transmit {
            to,
            bytes: vec![b'L', b'C', 2, kind],
        };
        let mut q: std::collections::VecDeque<Transmit> = [
            t(1, crate::wire::KIND_DATA),
            t(2, 1),
            t(3, crate::wire::KIND_KV),
            t(4, crate::wire::KIND_HEAT),
            t(5, 5),
        ]
        .into();
        class_a_first(&mut q);
        let order: Vec<u32> = q.iter().map(|t| t.to).collect();
        assert_eq!(order, vec![2, 4, 5, 1, 3]);
    }
}
