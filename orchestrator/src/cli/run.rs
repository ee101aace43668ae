//! `run`: play a scenario, print its verdicts; exit 1 if any expectation failed.

use std::path::PathBuf;

use anyhow::anyhow;
use lightcone::progress::Renderer;

use super::{code, invalid_rendered, need_root, Failure};

/// The scenario checked and expanded as `run` and `simulate` both do before anything is
/// built: a bad file is a located error and exit 2.
pub(crate) fn check_scenario(
    scenario: &std::path::Path,
    seed: Option<u64>,
) -> Result<lightcone::experiment::Scenario, Failure> {
    check_scenario_for(scenario, seed, lightcone::topology::Host::Lab)
}

/// [`check_scenario`] for `host` (`simulate` reads systems past the lab's cap).
pub(crate) fn check_scenario_for(
    scenario: &std::path::Path,
    seed: Option<u64>,
    host: lightcone::topology::Host,
) -> Result<lightcone::experiment::Scenario, Failure> {
    let c = lightcone::experiment::validate::check_scenario_for(scenario, seed, host)
        .map_err(invalid_rendered)?;
    eprint!("{}", c.warnings);
    Ok(c.scenario)
}

/// A run that could not be carried out: exit 2 when its input was invalid, 1 otherwise.
pub(crate) fn run_failure(e: lightcone::experiment::RunError) -> Failure {
    Failure(
        if e.is_invalid() {
            code::INVALID
        } else {
            code::FAILURE
        },
        anyhow!(e),
    )
}

/// `lightcone run`: progress to stdout (stderr with --json), one line per failed expectation.
pub(crate) fn cmd_run(
    scenario: PathBuf,
    seed: Option<u64>,
    out: Option<PathBuf>,
    json: bool,
    hosts: Option<PathBuf>,
) -> Result<(), Failure> {
    use lightcone::experiment;
    let sc = check_scenario(&scenario, seed)?;
    need_root("run")?;
    let opts = experiment::RunOptions {
        scenario,
        seed,
        out,
        hosts,
    };
    let mut progress = Renderer::default();
    let o = experiment::run(&opts, |l| progress.line(l, json)).map_err(run_failure)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&o).expect("json"));
    } else {
        print_verdicts(&o.verdicts);
        println!("report: {}", o.dir.join("report.html").display());
    }
    drop(progress);
    if o.passed {
        // With --json, stdout holds the JSON document only.
        if json {
            eprintln!("scenario {} (seed {}) passed", sc.name, o.seed);
        } else {
            println!("scenario {} (seed {}) passed", sc.name, o.seed);
        }
        Ok(())
    } else {
        Err(failed(&sc.name, &o.verdicts, &o.dir))
    }
}

/// The verdict table: one line per expectation (and per failed injection).
pub(super) fn print_verdicts(verdicts: &[lightcone::experiment::Verdict]) {
    for v in verdicts {
        println!(
            "{} {}: measured {} (expected {}{}){}",
            if v.pass { "PASS" } else { "FAIL" },
            v.expectation,
            v.measured,
            v.expected,
            match (&v.spec, &v.looser_than_spec) {
                (Some(spec), Some(_)) => format!("; looser than spec: {spec}"),
                (Some(spec), None) => format!("; spec {spec}"),
                _ => String::new(),
            },
            if v.pass {
                String::new()
            } else {
                format!(" — {}", v.detail)
            }
        );
    }
}

/// The run failed: which expectations, and where the report is (exit 1).
pub(super) fn failed(
    name: &str,
    verdicts: &[lightcone::experiment::Verdict],
    dir: &std::path::Path,
) -> Failure {
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.pass)
        .map(|v| v.expectation.as_str())
        .collect();
    Failure(
        code::FAILURE,
        anyhow!(
            "scenario {name} failed: {} (report: {})",
            failed.join("; "),
            dir.join("report.html").display()
        ),
    )
}
