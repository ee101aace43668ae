//! The store's configuration, as the topology's `store:` section gives it (the same for
//! every agent of a lab). `None` in [`AgentConfig`](crate::config::AgentConfig): the store
//! is off and the node behaves as before it existed.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::machine::StoreParams;
use super::{Class, StoreError};

/// Longest grace period, emulated s (one day); the shortest is 0.
pub const MAX_GRACE_S: f64 = 86_400.0;

/// The `store:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// The object class every put of this lab uses (k data shards of n, spread over
    /// `cells` cells). The spec's metadata class is k = 20, n = 60.
    pub class: Class,
    /// Wait after membership declares a holder dead before repairing it, emulated s
    /// (default 30 s: see [`StoreParams::grace`]).
    #[serde(default = "default_grace_s")]
    pub grace_s: f64,
    /// Repair bytes a steward sends per emulated second (default 1 MiB/s).
    #[serde(default = "default_repair_rate")]
    pub repair_rate_bps: u64,
}

fn default_grace_s() -> f64 {
    30.0
}
fn default_repair_rate() -> u64 {
    1 << 20
}

impl StoreConfig {
    /// A configuration with the given class and the default grace and rate.
    pub fn with_class(class: Class) -> StoreConfig {
        StoreConfig {
            class,
            grace_s: default_grace_s(),
            repair_rate_bps: default_repair_rate(),
        }
    }

    /// Checks the class, the grace and the rate; the error names what is wrong.
    pub fn check(&self) -> Result<(), StoreError> {
        self.class.validate()?;
        if !(self.grace_s.is_finite() && (0.0..=MAX_GRACE_S).contains(&self.grace_s)) {
            return Err(StoreError::BadConfig(format!(
                "grace_s {} is out of range (0 to {MAX_GRACE_S} emulated s)",
                self.grace_s
            )));
        }
        if self.repair_rate_bps == 0 {
            return Err(StoreError::BadConfig(
                "repair_rate_bps must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The machine's parameters for this configuration and the node's seed.
    pub fn params(&self, seed: u64) -> StoreParams {
        StoreParams {
            seed,
            grace: Duration::from_secs_f64(self.grace_s),
            repair_rate: self.repair_rate_bps,
            ..StoreParams::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sections_are_refused_by_name() {
        let ok = StoreConfig::with_class(Class::spec(4));
        assert!(ok.check().is_ok());
        let mut c = ok.clone();
        c.grace_s = -1.0;
        assert!(c.check().unwrap_err().to_string().contains("grace_s"));
        let mut c = ok.clone();
        c.repair_rate_bps = 0;
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("repair_rate_bps"));
        let mut c = ok;
        c.class.n = c.class.k;
        assert!(c.check().unwrap_err().to_string().contains("must exceed"));
        // The section as YAML/JSON gives it: grace and rate default.
        let c: StoreConfig =
            serde_json::from_str(r#"{"class":{"name":"m","k":4,"n":8,"cells":2}}"#).unwrap();
        assert_eq!(c.grace_s, 30.0);
        assert!(c.check().is_ok());
    }
}
