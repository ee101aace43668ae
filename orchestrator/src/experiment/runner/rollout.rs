//! A scenario's `rollout` step in a lab (issue 18): `lightcone update start` run as a
//! process — the same release, threshold signature, approval and staged rollout a user
//! runs — and waited for; its record (`rollout.json`) is read back into the run's
//! [`RolloutOutcome`]. The twin plays the same step with `lightcone_sim::rollout`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::experiment::record::{RolloutHaltOutcome, RolloutOutcome, RolloutStageOutcome};
use crate::rollout::{self, RolloutState};
use crate::state::LabDir;

/// The agent binary a rollout's `build` names: a path as written (the scenario reader
/// made it the scenario file's), or a build variant of the agent beside this `lightcone`
/// binary — `lightcone-agent` for `standard`, `lightcone-agent-VARIANT` for the others.
pub(crate) fn agent_build(build: &str) -> Result<PathBuf, String> {
    if build.contains('/') {
        let p = PathBuf::from(build);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("the rollout's build {build} is not a file"))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("where is lightcone? {e}"))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let path = if build == "standard" {
        dir.join("lightcone-agent")
    } else {
        dir.join(format!("lightcone-agent-{build}"))
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the agent's `{build}` build is not at {}: build it with `cargo build -p lightcone-agent --features {build} --target-dir target/{build}` and copy its lightcone-agent there (the twin needs no binary)",
            path.display()
        ))
    }
}

/// Runs the rollout to its end (`soak_ns` emulated per stage, at the lab's time scale
/// `ts`); progress lines go to `progress`. A rollout halted by a gate is a result, not an
/// error: the error is for one that could not run (refused, or failed mid-way), with the
/// outcome as far as it got.
pub(crate) fn play(
    lab: &str,
    build: &str,
    canary: &str,
    soak_ns: u64,
    ts: f64,
    progress: &mut dyn FnMut(&str),
) -> (Result<(), String>, RolloutOutcome) {
    let mut outcome = RolloutOutcome {
        build: build.to_string(),
        phase: "failed".into(),
        ..Default::default()
    };
    let path = match agent_build(build) {
        Ok(p) => p,
        Err(e) => {
            outcome.note = Some(e.clone());
            return (Err(e), outcome);
        }
    };
    // This executable, as the run's own `lightcone up`/`down` (robust to a rebuild).
    let exe = super::lab::self_exe();
    let soak_s = soak_ns as f64 / 1e9 / ts.max(1e-9);
    let child = Command::new(exe)
        .args(["update", "start", lab, "--canary", canary])
        .arg("--build")
        .arg(&path)
        .args(["--soak", &format!("{soak_s}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (Err(format!("lightcone update start: {e}")), outcome),
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            progress(&format!("  rollout: {line}"));
        }
    }
    let mut err = String::new();
    if let Some(e) = child.stderr.take() {
        for line in BufReader::new(e).lines().map_while(Result::ok) {
            err += &line;
            err.push('\n');
        }
    }
    let code = child.wait().ok().and_then(|s| s.code());
    let record = LabDir::new(lab)
        .ok()
        .and_then(|d| rollout::load(&d).ok().flatten());
    if let Some(s) = &record {
        outcome = of_state(build, s, ts);
    }
    match code {
        // 0: complete (or aborted); 1: a gate fired and the stage was rolled back.
        Some(0) | Some(1) if record.is_some() => (Ok(()), outcome),
        _ => {
            let why = format!(
                "lightcone update start exited {}: {}",
                code.map_or("by a signal".into(), |c| c.to_string()),
                err.trim()
            );
            outcome.note.get_or_insert(why.clone());
            (Err(why), outcome)
        }
    }
}

/// The lab's rollout record as a run's outcome; its times (real seconds) made emulated.
pub(crate) fn of_state(build: &str, s: &RolloutState, ts: f64) -> RolloutOutcome {
    let word = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    RolloutOutcome {
        build: build.to_string(),
        phase: word(serde_json::to_value(s.phase)),
        stages: s
            .stages
            .iter()
            .map(|st| RolloutStageOutcome {
                name: st.name.clone(),
                tiles: st.nodes.len(),
                status: word(serde_json::to_value(st.status)),
                waves: st.waves,
                detection_s: st.detection_s,
            })
            .collect(),
        halt: s.halt.as_ref().map(|h| RolloutHaltOutcome {
            stage: h.stage.clone(),
            gate: h.gate.clone(),
            reason: h.reason.clone(),
            time_to_rollback_s: h.time_to_rollback_s * ts,
        }),
        note: s.note.clone(),
    }
}
