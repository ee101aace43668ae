//! The thermal expectations (issue 15), measured from the series every node exports
//! (`lightcone_core::heat::machine::METRICS`) at the end of the run: the lab scrapes them
//! from the agents, the twin reads them from the cores.
//!
//! - `thermal_load_max`: the highest thermal load any node reached at one of its rounds
//!   (`lightcone_thermal_load_peak_ratio`); the issue bounds it at 100 %.
//! - `throttle_lag`: the longest time, over the nodes that were throttled, from the first
//!   tile of a shell outside passing 90 % to the node throttling
//!   (`lightcone_thermal_throttle_lag_max_seconds`, measured by the core on the shared
//!   time base). A run where no node throttled has nothing to measure: not measured.
//! - `sla_violations`: leases lost before their task's end plus leases throttled
//!   (`lightcone_leases_violated_total`, summed).

use super::record::Recording;

impl Recording {
    fn heat_values(&self, metric: &str) -> Vec<(String, f64)> {
        self.metrics_end
            .iter()
            .filter(|(n, _, _)| n == metric)
            .map(|(_, l, v)| (l.get("node").cloned().unwrap_or_default(), *v))
            .collect()
    }

    pub(crate) fn thermal_load_max(&self) -> (Option<f64>, String) {
        let v = self.heat_values("lightcone_thermal_load_peak_ratio");
        match v.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            None => (
                None,
                "no node reports a thermal load (no `thermal:` section?)".into(),
            ),
            Some((node, peak)) => (
                Some(*peak),
                format!(
                    "highest peak load {:.2} % at {node}, over {} nodes",
                    peak * 100.0,
                    v.len()
                ),
            ),
        }
    }

    pub(crate) fn throttle_lag(&self) -> (Option<f64>, String) {
        let lags: Vec<(String, f64)> = self
            .heat_values("lightcone_thermal_throttle_lag_max_seconds")
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .collect();
        match lags.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            None => (None, "no node was throttled: nothing to measure".into()),
            Some((node, lag)) => (
                Some(*lag),
                format!(
                    "{} nodes throttled; slowest {node}, {lag:.3} s after the first outer tile passed 90 %",
                    lags.len()
                ),
            ),
        }
    }

    pub(crate) fn sla_violations(&self) -> (Option<f64>, String) {
        let v = self.heat_values("lightcone_leases_violated_total");
        if v.is_empty() {
            return (
                None,
                "no node reports leases (no `thermal:` section?)".into(),
            );
        }
        let placed: f64 = self
            .heat_values("lightcone_leases_placed_total")
            .iter()
            .map(|x| x.1)
            .sum();
        let total: f64 = v.iter().map(|x| x.1).sum();
        (
            Some(total),
            format!("{total:.0} SLA violations over {placed:.0} leases placed"),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::experiment::expect::{evaluate, parse};
    use crate::experiment::record::Recording;

    fn rec(peak: f64, lag: f64, violated: f64) -> Recording {
        let l = |n: &str| [("node".to_string(), n.to_string())].into_iter().collect();
        Recording {
            metrics_end: vec![
                ("lightcone_thermal_load_peak_ratio".into(), l("a"), 0.5),
                ("lightcone_thermal_load_peak_ratio".into(), l("b"), peak),
                (
                    "lightcone_thermal_throttle_lag_max_seconds".into(),
                    l("a"),
                    lag,
                ),
                ("lightcone_leases_violated_total".into(), l("a"), violated),
                ("lightcone_leases_placed_total".into(), l("a"), 10.0),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn each_thermal_expectation_passes_and_fails_on_its_data() {
        // Looser than the spec's ~90 %, so it must say why.
        assert!(parse("thermal_load_max <= 100%").is_err());
        let e: Vec<_> = [
            "thermal_load_max <= 100% because 90 % is where throttling starts",
            "throttle_lag <= 6s",
            "sla_violations <= 3",
        ]
        .iter()
        .map(|t| parse(t).unwrap())
        .collect();
        let ok = evaluate(&e, &rec(0.97, 3.1, 2.0));
        assert!(ok.iter().all(|v| v.pass), "{ok:?}");
        let bad = evaluate(&e, &rec(1.02, 7.0, 4.0));
        assert!(bad.iter().all(|v| !v.pass), "{bad:?}");
        // An impossible bound fails on good data.
        let imp = evaluate(
            &[parse("throttle_lag <= 1ms").unwrap()],
            &rec(0.9, 3.1, 0.0),
        );
        assert!(!imp[0].pass);
        // No throttling, no thermal section: not measured, failed.
        let none = evaluate(&e, &Recording::default());
        assert!(
            none.iter().all(|v| !v.pass && v.value.is_none()),
            "{none:?}"
        );
    }
}
