//! The thermal subsystem's configuration, as the topology's `thermal:` section gives it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{LayerThermal, ThermalError, TileThermal};

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
