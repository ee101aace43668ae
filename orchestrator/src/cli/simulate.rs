//! `simulate`: the digital twin of a scenario (no lab, no root); prints its verdicts and
//! the simulation's figures; exit 1 if any expectation failed, 2 for a bad scenario.

use std::path::PathBuf;

use lightcone::progress::Renderer;

use super::run::{check_scenario_for, failed, print_verdicts, run_failure};
use super::Failure;

/// `lightcone simulate`: progress on stderr, the verdict table and figures on stdout (the
/// outcome as JSON with --json).
pub(crate) fn cmd_simulate(
    scenario: PathBuf,
    seed: Option<u64>,
    out: Option<PathBuf>,
    json: bool,
    crypto: lightcone::twin::crypto::CryptoMode,
) -> Result<(), Failure> {
    use lightcone::twin;
    // The same checks and the same located errors as `run`, before anything is built.
    check_scenario_for(&scenario, seed, lightcone::topology::Host::Twin)?;
    let opts = twin::SimulateOptions {
        scenario,
        seed,
        out,
        crypto,
    };
    let mut progress = Renderer::default();
    // Progress always goes to stderr: stdout holds the verdicts (or the JSON).
    let o = twin::simulate(&opts, |l| progress.line(l, true)).map_err(run_failure)?;
    drop(progress);
    let f = &o.simulation;
    let h = &o.host;
    let tally = h
        .crypto_tally
        .as_ref()
        .map(|t| {
            format!(
                "; modelled signatures: {} signed, {} verified, {:.1} s of CPU with Ed25519 here ({:.1} µs a sign, {:.1} µs a verify)",
                t.signed,
                t.verified,
                t.ed25519_cpu_s,
                t.ed25519_sign_s * 1e6,
                t.ed25519_verify_s * 1e6
            )
        })
        .unwrap_or_default();
    let figures = format!(
        "simulated {:.1} s virtual of {} nodes in {:.2} s wall: {} events, {:.0} events/s, peak RSS {}; seed {}, crypto {}; trace {}{tally}",
        f.virtual_s,
        f.nodes,
        h.wall_s,
        f.events_processed,
        h.events_per_s,
        h.peak_rss_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "unknown".into()),
        f.seed,
        f.crypto,
        f.trace_hash
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&o).expect("json"));
        eprintln!("{figures}");
    } else {
        print_verdicts(&o.verdicts);
        println!("{figures}");
        println!("report: {}", o.dir.join("report.html").display());
    }
    if o.passed {
        if json {
            eprintln!(
                "scenario {} (seed {}) passed in the twin",
                o.scenario, o.seed
            );
        } else {
            println!(
                "scenario {} (seed {}) passed in the twin",
                o.scenario, o.seed
            );
        }
        Ok(())
    } else {
        Err(failed(&o.scenario, &o.verdicts, &o.dir))
    }
}
