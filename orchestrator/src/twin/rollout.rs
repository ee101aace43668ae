//! A scenario's `rollout` step in the twin (issue 18): `lightcone_sim::rollout` — the
//! lab's stages, waves and gates, on the simulation — run to its end at the step's time.
//! The twin has no binaries: a build is its model against what the tiles run now
//! (`standard` and `variant-b`: the same protocol and behaviour, a new build;
//! `defect-drop-forward`: drops the agent's `DEFECT_DROP_PPM` of forwarded frames;
//! `protocol-n1`: one protocol version lower).

use std::time::Duration;

use lightcone_core::addr::HierAddr;
use lightcone_core::update::Build;
use lightcone_sim::rollout::{self, Gates, RolloutReport, Stage};
use lightcone_sim::Sim;

use crate::experiment::record::{RolloutHaltOutcome, RolloutOutcome, RolloutStageOutcome};

/// A cell's name `lLcCkK` as its first tile's address.
fn cell_addr(name: &str) -> Option<HierAddr> {
    let rest = name.strip_prefix('l')?;
    let (l, rest) = rest.split_once('c')?;
    let (c, k) = rest.split_once('k')?;
    Some(HierAddr {
        layer: l.parse().ok()?,
        cluster: c.parse().ok()?,
        cell: k.parse().ok()?,
        tile: 0,
    })
}

/// The twin's model of `build`, against `now` (what the tiles run).
fn model(build: &str, now: Build) -> Result<Build, String> {
    let e = |e: lightcone_core::update::BuildError| format!("build {build}: {e}");
    match build {
        "standard" | "variant-b" => Ok(now),
        "defect-drop-forward" => now
            .with_forward_drop(lightcone_agent::DEFECT_DROP_PPM)
            .map_err(e),
        "protocol-n1" => Build::new(now.version.saturating_sub(1)).map_err(e),
        other => Err(format!(
            "the twin models the agent's builds by name (standard, variant-b, defect-drop-forward, protocol-n1), not a binary: {other}"
        )),
    }
}

/// Runs the rollout on `sim`; the outcome says what it did (`note` and no stages when it
/// could not start).
pub(super) fn play(sim: &mut Sim, build: &str, canary: &str, soak_ns: u64) -> RolloutOutcome {
    let mut out = RolloutOutcome {
        build: build.to_string(),
        phase: "failed".into(),
        ..Default::default()
    };
    let Some(at) = cell_addr(canary) else {
        out.note = Some(format!("{canary} is not a cell name (lLcCkK)"));
        return out;
    };
    let stages = rollout::plan(sim, at);
    let Some(first) = stages.first().and_then(|s| s.nodes.first()) else {
        out.note = Some(format!("the topology has no tiles in cell {canary}"));
        return out;
    };
    let old = sim.build_of(*first);
    let new = match model(build, old) {
        Ok(b) => b,
        Err(e) => {
            out.note = Some(e);
            return out;
        }
    };
    let g = Gates {
        soak: Duration::from_nanos(soak_ns),
        ..Gates::default()
    };
    let report = rollout::run(sim, &stages, new, old, &g);
    of_report(build, &stages, &report)
}

/// The twin's report as a run's outcome.
fn of_report(build: &str, stages: &[Stage], r: &RolloutReport) -> RolloutOutcome {
    let halted = r.halted.as_ref().map(|h| h.stage);
    RolloutOutcome {
        build: build.to_string(),
        phase: if r.halted.is_some() {
            "halted"
        } else {
            "complete"
        }
        .into(),
        stages: stages
            .iter()
            .map(|s| {
                let ran = r.stages.iter().find(|x| x.name == s.name);
                RolloutStageOutcome {
                    name: s.name.to_string(),
                    tiles: s.nodes.len(),
                    status: match ran {
                        None => "pending",
                        Some(_) if halted == Some(s.name) => "rolled_back",
                        Some(_) => "passed",
                    }
                    .into(),
                    waves: ran.map_or(0, |x| x.waves),
                    detection_s: ran.and_then(|x| x.detection).map(|d| d.as_secs_f64()),
                }
            })
            .collect(),
        halt: r.halted.as_ref().map(|h| RolloutHaltOutcome {
            stage: h.stage.to_string(),
            gate: h.gate.to_string(),
            reason: match &h.rollback_trouble {
                Some(t) => format!("{}; rollback: {t}", h.reason),
                None => h.reason.clone(),
            },
            time_to_rollback_s: h
                .rolled_back_at
                .saturating_since(h.detected_at)
                .as_secs_f64(),
        }),
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_names_parse_and_builds_model() {
        assert_eq!(
            cell_addr("l1c22k3"),
            Some(HierAddr {
                layer: 1,
                cluster: 22,
                cell: 3,
                tile: 0
            })
        );
        for bad in ["", "l1c2", "x1c2k3", "l1c2k", "l1cxk3"] {
            assert_eq!(cell_addr(bad), None, "{bad}");
        }
        let now = Build::new(3).unwrap();
        assert_eq!(model("variant-b", now), Ok(now));
        assert_eq!(
            model("defect-drop-forward", now).unwrap().forward_drop_ppm,
            lightcone_agent::DEFECT_DROP_PPM
        );
        assert_eq!(model("protocol-n1", now).unwrap().version, 2);
        assert!(model("/bin/agent", now).unwrap_err().contains("by name"));
    }
}
