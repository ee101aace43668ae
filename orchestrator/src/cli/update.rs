//! `update plan|start|status|abort LAB`: a staged rollout of an agent build in a running lab
//! (issue 18; the work is [`lightcone::rollout`]'s). `start` refuses, changing nothing, a
//! lab that is not up, a build that is missing or not executable, a second rollout while
//! one runs, a release signed by fewer than t authority shares, and a release number that
//! is not newer than the last installed (a replayed or older manifest).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use lightcone::rollout::{
    self, Current, Gates, Phase, RolloutError, RolloutState, Runner, StageRecord, StageStatus,
    Target,
};

use super::{invalid, lab_plan, pick_lab, state, supervisor_of, Failure};

/// `update start`'s options.
#[derive(clap::Args)]
pub(crate) struct StartArgs {
    pub lab: String,
    /// The agent binary to roll out.
    #[arg(long)]
    pub build: PathBuf,
    /// The canary cell (`lLcCkK`); default: the lab's first cell of tiles.
    #[arg(long)]
    pub canary: Option<String>,
    /// Soak of each stage, seconds.
    #[arg(long, default_value_t = Gates::default().soak_s)]
    pub soak: f64,
    /// Updated tiles must be alive in their cells within this, seconds.
    #[arg(long, default_value_t = Gates::default().rejoin_s)]
    pub rejoin: f64,
    /// One probe round, seconds.
    #[arg(long, default_value_t = Gates::default().round_s)]
    pub round: f64,
    /// Least share of a round's probes delivered.
    #[arg(long, default_value_t = Gates::default().delivery_min)]
    pub delivery_min: f64,
    /// Highest thermal load (heat over rejection capacity) of any tile with a thermal
    /// subsystem at the end of a round.
    #[arg(long, default_value_t = Gates::default().thermal_max)]
    pub thermal_max: f64,
    /// The release number (default: one above the last installed; a lower one is refused
    /// as a replayed or older manifest).
    #[arg(long)]
    pub release: Option<u64>,
    /// Sign with this many authority shares instead of the threshold (for testing: fewer
    /// than t are refused).
    #[arg(long)]
    pub shares: Option<usize>,
}

fn failure(e: RolloutError) -> Failure {
    match e {
        RolloutError::Busy { .. } => state(e.to_string()),
        RolloutError::UnknownCanary { .. }
        | RolloutError::NoTiles { .. }
        | RolloutError::Binary(_)
        | RolloutError::Signing(_)
        | RolloutError::Refused(_) => invalid(e),
        RolloutError::Authority(a) => match a {
            lightcone::authority::AuthorityError::TooManyShares { .. }
            | lightcone::authority::AuthorityError::NoKey { .. } => {
                invalid(anyhow!("{a}; nothing was changed"))
            }
            a => Failure::from(a),
        },
        e => Failure::from(e),
    }
}

/// The SHA-256 of the build at `binary` (its measurement), or why it cannot be read.
fn digest(binary: &std::path::Path) -> Result<[u8; 32], Failure> {
    lightcone::state::file_digest(binary).map_err(|e| {
        invalid(anyhow!(
            "--build {}: {e}; nothing was changed",
            binary.display()
        ))
    })
}

/// `lightcone update plan LAB [--canary CELL]`.
pub(crate) fn cmd_update_plan(lab: String, canary: Option<String>) -> Result<(), Failure> {
    let dir = pick_lab(Some(lab))?;
    let plan = lab_plan(&dir)?;
    let stages = rollout::stages(&plan, canary.as_deref()).map_err(failure)?;
    print!("{}", rollout::render_stages(&plan, &stages));
    Ok(())
}

/// `lightcone update start LAB --build PATH [...]`.
pub(crate) fn cmd_update_start(a: StartArgs) -> Result<(), Failure> {
    let dir = pick_lab(Some(a.lab.clone()))?;
    let plan = lab_plan(&dir)?;
    let client = supervisor_of(&dir)?;
    let gates = Gates {
        rejoin_s: a.rejoin,
        soak_s: a.soak,
        round_s: a.round,
        delivery_min: a.delivery_min,
        thermal_max: a.thermal_max,
    };
    gates
        .check()
        .map_err(|e| invalid(anyhow!("{e}; nothing was changed")))?;
    let binary = rollout::check_binary(&a.build).map_err(failure)?;
    rollout::check_idle(&dir).map_err(failure)?;
    let stages = rollout::stages(&plan, a.canary.as_deref()).map_err(failure)?;
    let status = client
        .status(lightcone::client::DEFAULT_TIMEOUT)
        .map_err(super::client_failure)?;
    if status.nodes.iter().any(|n| n.agent.process.is_some()) {
        return Err(invalid(anyhow!(
            "lab {}: {}",
            dir.lab,
            lightcone::agents::AgentError::Grouped
        )));
    }
    if let Some(n) = status.nodes.iter().find(|n| n.agent.state != "running") {
        return Err(state(format!(
            "{}'s agent is {}: a rollout starts on a healthy lab (restart it first); nothing was changed",
            n.name, n.agent.state
        )));
    }
    // The measurement: the binary's SHA-256.
    let sha = digest(&binary)?;
    let sha_hex = hex::encode(sha);
    let release = match a.release {
        Some(r) => r,
        None => rollout::next_release(&dir).map_err(failure)?,
    };
    // The protocol the lab's agents speak, from the configuration `up` wrote them (the
    // release keeps it: a build of another protocol is not what this CLI rolls out).
    let protocol = std::fs::read(dir.agents().join("0.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<lightcone_core::config::AgentConfig>(&b).ok())
        .and_then(|c| lightcone::keys::protocol_for(&c))
        .unwrap_or(lightcone_core::wire::VERSION);
    let m = rollout::manifest(release, sha, protocol, &gates);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let previous: Current = rollout::current(&dir).map_err(failure)?;
    let (m, signed) =
        rollout::release(&dir, &m, a.shares, now_ns, &mut rand::rngs::OsRng).map_err(failure)?;
    println!(
        "release {} accepted: {} (sha256 {sha_hex}); {signed}",
        m.release,
        binary.display()
    );
    let via = stages
        .first()
        .and_then(|st| st.nodes.first())
        .map(|&n| plan.nodes[n].name.clone())
        .unwrap_or_default();
    let approved = rollout::approve(&dir, &client, &via, sha, m.release, &mut rand::rngs::OsRng)
        .map_err(failure)?;
    println!("release {}: {approved}", m.release);
    let me = std::process::id();
    let s = RolloutState {
        lab: dir.lab.clone(),
        phase: Phase::Running,
        pid: me,
        pid_start: lightcone::state::process_start_time(me).unwrap_or(0),
        started_unix_s: now_ns as f64 / 1e9,
        target: Target {
            release: m.release,
            protocol: m.protocol,
            compat: m.compat,
            binary: binary.display().to_string(),
            sha256: sha_hex,
        },
        previous,
        signed,
        gates,
        stages: stages
            .iter()
            .map(|st| StageRecord {
                name: st.name.into(),
                nodes: st
                    .nodes
                    .iter()
                    .map(|n| plan.nodes[*n].name.clone())
                    .collect(),
                status: StageStatus::Pending,
                deployed_at_s: None,
                rejoined_at_s: None,
                probes_sent: 0,
                probes_delivered: 0,
                worst_round: None,
                rounds: 0,
                warmup_rounds: 0,
                causal_writes: 0,
                causal_reads: 0,
                detection_s: None,
                waves: 0,
            })
            .collect(),
        halt: None,
        note: None,
    };
    let _ = std::fs::remove_file(rollout::abort_path(&dir));
    rollout::save(&dir, &s).map_err(failure)?;
    let end = Runner::new(&dir, &plan, &client, s)
        .run(&stages, |line| println!("{line}"))
        .map_err(failure)?;
    print!("{}", end.render());
    match end.phase {
        Phase::Complete | Phase::Aborted => Ok(()),
        _ => Err(Failure::from(anyhow!(
            "rollout of release {} {}",
            end.target.release,
            match &end.halt {
                Some(h) => format!(
                    "halted at stage {} by gate {}; rolled back in {:.2} s",
                    h.stage, h.gate, h.time_to_rollback_s
                ),
                None => "failed".into(),
            }
        ))),
    }
}

/// `lightcone update status LAB [--json]`.
pub(crate) fn cmd_update_status(lab: String, json: bool) -> Result<(), Failure> {
    let dir = pick_lab(Some(lab))?;
    let s = rollout::load(&dir)
        .map_err(failure)?
        .ok_or_else(|| state(format!("lab {}: no rollout was started", dir.lab)))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(Failure::from)?
        );
    } else {
        print!("{}", s.render());
    }
    Ok(())
}

/// `lightcone update approve LAB --build PATH`: t of the lab's authority shares approve the
/// build for attestation (issue 18) without rolling it out — it is entered in the release
/// log and flooded to every agent, so a tile that runs it (put in place by hand, or by a
/// later rollout) is taken into routing. Refused with nothing changed: a lab that is not
/// up, a build that is missing or not executable.
pub(crate) fn cmd_update_approve(lab: String, build: PathBuf) -> Result<(), Failure> {
    let dir = pick_lab(Some(lab))?;
    let client = supervisor_of(&dir)?;
    let binary = rollout::check_binary(&build).map_err(failure)?;
    let sha = digest(&binary)?;
    let sha_hex = hex::encode(sha);
    let status = client
        .status(lightcone::client::DEFAULT_TIMEOUT)
        .map_err(super::client_failure)?;
    let via = status
        .nodes
        .iter()
        .find(|n| n.agent.state == "running")
        .map(|n| n.name.clone())
        .ok_or_else(|| {
            state(format!(
                "lab {}: no agent runs; nothing was changed",
                dir.lab
            ))
        })?;
    let done =
        rollout::approve(&dir, &client, &via, sha, 0, &mut rand::rngs::OsRng).map_err(failure)?;
    println!("{} (sha256 {sha_hex}): {done}", binary.display());
    Ok(())
}

/// `lightcone update abort LAB`: the running rollout stops and rolls back what it updated.
pub(crate) fn cmd_update_abort(lab: String) -> Result<(), Failure> {
    let dir = pick_lab(Some(lab))?;
    let s = rollout::load(&dir).map_err(failure)?.ok_or_else(|| {
        state(format!(
            "lab {}: no rollout was started; nothing was changed",
            dir.lab
        ))
    })?;
    if s.phase != Phase::Running {
        return Err(state(
            format!(
                "lab {}: no rollout is running (release {} is {:?}); nothing was changed",
                dir.lab, s.target.release, s.phase
            )
            .to_lowercase(),
        ));
    }
    if !s.runner_alive() {
        let plan = lab_plan(&dir)?;
        let client = supervisor_of(&dir)?;
        let end = rollout::abort_orphan(&dir, &plan, &client, s).map_err(failure)?;
        print!("{}", end.render());
        return Ok(());
    }
    lightcone::state::write_private(&rollout::abort_path(&dir), b"abort\n")
        .map_err(Failure::from)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        match rollout::load(&dir).map_err(failure)? {
            Some(s) if s.phase != Phase::Running => {
                print!("{}", s.render());
                return Ok(());
            }
            Some(s) if !s.runner_alive() => {
                let plan = lab_plan(&dir)?;
                let client = supervisor_of(&dir)?;
                let end = rollout::abort_orphan(&dir, &plan, &client, s).map_err(failure)?;
                print!("{}", end.render());
                return Ok(());
            }
            _ if std::time::Instant::now() > deadline => {
                return Err(Failure::from(anyhow!(
                    "the rollout did not stop within 600 s; its abort request stays in {}",
                    rollout::abort_path(&dir).display()
                )))
            }
            _ => {}
        }
    }
}
