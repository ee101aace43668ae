//! `lightcone simulate`, the digital twin: one scenario and seed give byte-identical run
//! files and one trace; the shipped cell scenario runs to its verdict table; an impossible
//! bound fails the run (exit 1); a bad scenario gets the same located error and exit code
//! as `lightcone run`. No root, no lab.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lightcone::twin::{simulate, SimOutcome, SimulateOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cell_scenario() -> PathBuf {
    root().join("topologies/scenarios/cell.yaml")
}

fn sim(scenario: &Path, seed: Option<u64>, out: &Path) -> SimOutcome {
    simulate(
        &SimulateOptions {
            scenario: scenario.to_path_buf(),
            seed,
            out: Some(out.to_path_buf()),
            crypto: Default::default(),
        },
        |_| {},
    )
    .expect("the scenario simulates")
}

fn lightcone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightcone"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("lightcone runs")
}

#[test]
fn one_scenario_and_seed_give_identical_files_and_trace_another_seed_another_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let x = sim(&cell_scenario(), None, &a);
    let y = sim(&cell_scenario(), None, &b);
    assert_eq!(x.seed, 7, "the scenario's own seed");
    assert_eq!(x.simulation.trace_hash, y.simulation.trace_hash);
    assert!(x.simulation.events_processed > 10_000, "{:?}", x.simulation);
    for f in [
        "report.json",
        "report.html",
        "series.json",
        "history.jsonl",
        "polls.jsonl",
        "events.jsonl",
    ] {
        let (p, q) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(!p.is_empty(), "{f} is empty");
        assert!(p == q, "{f} differs between two runs of seed 7");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["simulation"]["trace_hash"].as_str(),
        Some(x.simulation.trace_hash.as_str())
    );
    assert!(report["simulation"]["keys"]
        .as_str()
        .unwrap()
        .contains("seed 7"));
    assert!(report["load"]["ops"].as_u64().unwrap() > 100, "{report}");
    let html = std::fs::read_to_string(a.join("report.html")).unwrap();
    assert!(html.contains("<p>digital twin: 13 nodes"), "{html}");
    assert!(html.contains("every \"real\" time on this page is virtual"));
    assert!(!html.contains("emulated s per real s"));
    // Wall-clock figures stay out of report.json and go to simulation.json.
    assert!(report["simulation"].get("wall_s").is_none());
    let host: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("simulation.json")).unwrap()).unwrap();
    assert!(host["host"]["wall_s"].as_f64().unwrap() > 0.0);
    assert!(host["host"]["peak_rss_kib"].as_u64().unwrap() > 0);
    let z = sim(&cell_scenario(), Some(8), &c);
    assert_eq!(z.seed, 8);
    assert_ne!(
        x.simulation.trace_hash, z.simulation.trace_hash,
        "seed 8 ran the same trace as seed 7"
    );
}

#[test]
fn the_cell_scenario_runs_to_its_verdict_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = lightcone(&[
        "simulate",
        "topologies/scenarios/cell.yaml",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("end of timeline"), "{stderr}");
    assert!(stderr.contains("crash l0c0k0t3"), "{stderr}");
    // Every expectation has its line; the protocol's pass, the two the twin cannot measure
    // yet fail as not measured (so the run exits 1).
    for e in [
        "detection_time < 10s",
        "converged_after_heal <= 10s",
        "causal_anomalies == 0",
        "no_acknowledged_write_lost",
        "locality >= 99.5%",
        "workload_locality > 99.99%",
        "time_coverage >= 99.7%",
        "false_quarantines == 0",
    ] {
        assert!(
            stdout.contains(&format!("PASS {e}:")),
            "{e} did not pass:\n{stdout}"
        );
    }
    for e in ["timer_lateness_p99 <= 50ms", "overhead <= 3%"] {
        assert!(
            stdout.contains(&format!("FAIL {e}: measured not measured")),
            "{e}:\n{stdout}"
        );
    }
    assert!(stdout.contains("not measured in the twin"), "{stdout}");
    assert!(
        stdout.contains("events/s") && stdout.contains("peak RSS"),
        "{stdout}"
    );
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(out.join("report.html").is_file() && out.join("report.json").is_file());
}

/// A short scenario on the cell topology: one crash, one expectation.
fn crash_scenario(dir: &Path, expect: &str) -> PathBuf {
    let p = dir.join(format!("crash-{}.yaml", expect.len()));
    std::fs::write(
        &p,
        format!(
            "name: crash\ntopology: {}\nseed: 3\nduration: 12s\ntimeline:\n  - {{ at: 2s, crash: l0c0k0t3 }}\nexpect:\n  - {expect}\n",
            root().join("topologies/cell.yaml").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn an_impossible_bound_fails_the_run_and_a_possible_one_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |expect: &str| {
        let s = crash_scenario(tmp.path(), expect);
        let out = tmp.path().join(format!("out-{}", expect.len()));
        lightcone(&[
            "simulate",
            s.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = run("detection_time < 1ms");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL detection_time < 1ms: measured "),
        "{stdout}"
    );
    let o = run("detection_time < 10s");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS detection_time < 10s"), "{stdout}");
}

#[test]
fn a_bad_scenario_gets_the_same_located_error_and_exit_code_as_run() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\nduration: 10s\nexpect:\n  - detection_tme < 10s\n",
    )
    .unwrap();
    let missing = tmp.path().join("missing.yaml");
    for p in [&bad, &missing] {
        let p = p.to_str().unwrap();
        let (r, s) = (lightcone(&["run", p]), lightcone(&["simulate", p]));
        assert_eq!(s.status.code(), Some(2), "{p}");
        assert_eq!(r.status.code(), s.status.code(), "{p}");
        assert_eq!(
            String::from_utf8_lossy(&r.stderr),
            String::from_utf8_lossy(&s.stderr),
            "{p}"
        );
        assert!(s.stdout.is_empty(), "{p}");
    }
    let e = String::from_utf8_lossy(&lightcone(&["simulate", bad.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(e.contains("bad.yaml:4:"), "not located: {e}");
}

#[test]
fn link_set_changes_delay_loss_and_jitter_on_the_wire_engines_shaper() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("links.yaml");
    // The twin's links run on the wire engine's shaper: a change of delay and loss, and one
    // of jitter, are carried out as in a lab.
    std::fs::write(
        &p,
        format!(
            "name: links\ntopology: {}\nseed: 4\nduration: 8s\ntimeline:\n  \
             - {{ at: 2s, link_set: {{ link: [l0c0k0t0, l0c0k0t1], delay: 50ms, loss: 100% }} }}\n  \
             - {{ at: 4s, link_set: {{ link: [l0c0k0t0, l0c0k0t1], jitter: 1ms }} }}\n\
             expect:\n  - false_quarantines == 0\n",
            root().join("topologies/cell.yaml").display()
        ),
    )
    .unwrap();
    let o = sim(&p, None, &tmp.path().join("out"));
    let failed: Vec<_> = o
        .verdicts
        .iter()
        .filter(|v| v.expectation.starts_with("injection failed"))
        .collect();
    assert!(failed.is_empty(), "{:#?}", o.verdicts);
    assert!(o.passed, "{:#?}", o.verdicts);
    // The delay plotted for the link is the new one after 2 s.
    let series: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/series.json")).unwrap())
            .unwrap();
    let delay_at = |t: f64| {
        series
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["t_real_s"].as_f64().unwrap() >= t)
            .and_then(|p| p["links"].as_object()?.values().next()?.as_f64())
    };
    assert_eq!(delay_at(1.0), Some(0.002));
    assert_eq!(delay_at(3.0), Some(0.05));
    // Everything sent on the link was lost from 2 s on.
    assert!(o.simulation.datagrams_lost > 0);
}

#[test]
fn crashing_a_crashed_node_is_a_failed_injection_as_in_the_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("twice.yaml");
    std::fs::write(
        &p,
        format!(
            "name: twice\ntopology: {}\nseed: 5\nduration: 10s\ntimeline:\n  \
             - {{ at: 2s, crash: l0c0k0t3 }}\n  - {{ at: 3s, crash: l0c0k0t3 }}\n\
             expect:\n  - detection_time < 10s\n",
            root().join("topologies/cell.yaml").display()
        ),
    )
    .unwrap();
    let o = sim(&p, None, &tmp.path().join("out"));
    let v = &o.verdicts[0];
    assert_eq!(v.expectation, "injection failed: crash l0c0k0t3", "{v:?}");
    assert!(v.detail.contains("not running: nothing to crash"), "{v:?}");
    assert!(!v.pass);
    // The first crash was injected and detected.
    assert!(o.verdicts[1].pass, "{:?}", o.verdicts[1]);
    assert!(!o.passed);
}

/// The verdict of `expectation` in `o`.
fn verdict<'a>(o: &'a SimOutcome, expectation: &str) -> &'a lightcone::experiment::Verdict {
    o.verdicts
        .iter()
        .find(|v| v.expectation == expectation)
        .unwrap_or_else(|| panic!("no verdict {expectation}: {:#?}", o.verdicts))
}

#[test]
fn byzantine_and_clock_faults_reach_the_core_as_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let scenarios = root().join("topologies/scenarios");
    // A node made byzantine is quarantined by its cell; no honest one is.
    let o = sim(
        &scenarios.join("byzantine.yaml"),
        None,
        &tmp.path().join("b"),
    );
    for e in [
        "quarantine_time <= 20s",
        "false_quarantines == 0",
        "causal_anomalies == 0",
    ] {
        assert!(verdict(&o, e).pass, "{:?}", verdict(&o, e));
    }
    assert!(verdict(&o, "quarantine_time <= 20s").value.unwrap() > 0.0);
    // A compromised authority makes every tile it serves alarm, itself not; a pulsar loss
    // shows at that tile only.
    let o = sim(
        &scenarios.join("stratum0.yaml"),
        None,
        &tmp.path().join("s"),
    );
    for e in [
        "time_alarmed_nodes(l0c0k0t*) == 12",
        "time_alarmed_nodes(l0a0) == 0",
        "pulsar_missed_nodes(l0c0k0t2) == 1",
        "pulsar_missed_nodes == 1",
    ] {
        assert!(verdict(&o, e).pass, "{:?}", verdict(&o, e));
    }
    assert!(
        o.verdicts
            .iter()
            .all(|v| !v.expectation.starts_with("injection failed")),
        "{:#?}",
        o.verdicts
    );
}

/// Issue 15: the shipped thermal-surge scenario passes in the twin with each of its
/// expectations measured (Class A near the idle delay while the tasks' streams saturate
/// the cell links around the outer shell's crossing of 90 %), and each fails with an
/// impossible bound on the same run.
#[test]
fn thermal_surge_passes_and_each_expectation_fails_on_an_impossible_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = root().join("topologies/scenarios/thermal-surge.yaml");
    let o = sim(&shipped, None, &tmp.path().join("surge"));
    assert!(o.passed, "{:?}", o.verdicts);
    // The report plots each shell's load with the 90 % line; the outer shell crosses it.
    let html = std::fs::read_to_string(tmp.path().join("surge/report.html")).unwrap();
    assert!(html.contains("Thermal load per shell"), "no thermal plot");
    let series = std::fs::read_to_string(tmp.path().join("surge/series.json")).unwrap();
    let series: serde_json::Value = serde_json::from_str(&series).unwrap();
    let outer_peak = series
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["thermal"]["layer 1"].as_f64())
        .fold(0.0, f64::max);
    assert!(outer_peak > 0.9, "outer shell peak {outer_peak}");
    for e in [
        "thermal_load_max",
        "throttle_lag",
        "sla_violations",
        "class_a_latency_excess",
        "data_latency_excess",
    ] {
        let v = o
            .verdicts
            .iter()
            .find(|v| v.expectation.starts_with(e))
            .unwrap();
        assert!(v.pass && v.value.is_some(), "{v:?}");
    }
    let src = std::fs::read_to_string(&shipped).unwrap();
    let (head, _) = src.split_once("expect:").unwrap();
    let impossible = tmp.path().join("impossible.yaml");
    std::fs::write(
        &impossible,
        format!("{head}expect:\n  - thermal_load_max <= 10%\n  - throttle_lag <= 1ms\n  - sla_violations == 0\n  - class_a_latency_excess <= 0%\n  - data_latency_excess <= 1%\n"),
    )
    .unwrap();
    let o = sim(&impossible, None, &tmp.path().join("impossible"));
    assert!(!o.passed);
    assert!(
        o.verdicts.iter().all(|v| !v.pass && v.value.is_some()),
        "{:?}",
        o.verdicts
    );
}

#[test]
fn modelled_signatures_give_the_same_verdicts_and_say_so() {
    use lightcone::twin::crypto::CryptoMode;
    let tmp = tempfile::tempdir().unwrap();
    let run = |crypto, dir: &str| {
        simulate(
            &SimulateOptions {
                scenario: cell_scenario(),
                seed: None,
                out: Some(tmp.path().join(dir)),
                crypto,
            },
            |_| {},
        )
        .expect("the scenario simulates")
    };
    let real = run(CryptoMode::Auto, "real");
    let modelled = run(CryptoMode::Modelled, "modelled");
    assert!(
        real.simulation.crypto.starts_with("ed25519"),
        "13 nodes: real"
    );
    assert!(real.simulation.modelled_auth_ops.is_none() && real.host.crypto_tally.is_none());
    assert!(modelled
        .simulation
        .crypto
        .starts_with("modelled (asked with --crypto modelled)"));
    // Honest frames verify exactly: the same protocol outcome, verdict for verdict.
    let table = |o: &SimOutcome| -> Vec<(String, String, bool)> {
        o.verdicts
            .iter()
            .map(|v| (v.expectation.clone(), v.measured.clone(), v.pass))
            .collect()
    };
    assert_eq!(table(&real), table(&modelled));
    assert_eq!(
        real.simulation.datagrams_delivered,
        modelled.simulation.datagrams_delivered
    );
    // Other signature bytes on the wire: another trace.
    assert_ne!(real.simulation.trace_hash, modelled.simulation.trace_hash);
    let ops = modelled.simulation.modelled_auth_ops.unwrap();
    assert!(ops[0] > 1_000 && ops[1] > 1_000, "{ops:?}");
    let t = modelled.host.crypto_tally.as_ref().unwrap();
    assert!(t.ed25519_sign_s > 0.0 && t.ed25519_verify_s > 0.0);
    assert!(t.ed25519_cpu_s > 0.0);
    let report = std::fs::read_to_string(tmp.path().join("modelled/report.json")).unwrap();
    assert!(report.contains("HMAC-SHA256 under the simulation's secret"));
    // The CLI takes the mode and refuses an unknown one (a usage error, nothing run).
    let o = lightcone(&[
        "simulate",
        cell_scenario().to_str().unwrap(),
        "--crypto",
        "fast",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown crypto mode"));
}

/// A system above the whole-view size (200 tiles in four 50-tile rings, 1 % loss): the
/// sampled recording (the named nodes' cells polled, their entries listed), modelled
/// signatures, and the same scenario and seed giving the same trace and the same files.
#[test]
fn a_sampled_system_is_deterministic_and_detects_its_crash() {
    use lightcone::twin::crypto::CryptoMode;
    let tmp = tempfile::tempdir().unwrap();
    let sc = tmp.path().join("t200.yaml");
    std::fs::write(
        &sc,
        "name: t200
topology:
  name: t200
  seed: 5
  generate:
    layers:
      - { radius_au: 1.0, clusters: 1, cells: 4, tiles: 50, authorities: 0 }
    cell_fabric: ring
    cluster_fabric: ring
    links:
      cell: { delay: 2ms, loss: 1% }
      cluster: { delay: 5ms }
seed: 5
duration: 20s
timeline:
  - { at: 0s, load: { nodes: \"l0c0k1t1*\", keys: 6, interval: 250ms, until: 15s } }
  - { at: 2s, crash: l0c0k0t20 }
  - { at: 12s, restart: l0c0k0t20 }
expect:
  - detection_time < 10s
  - causal_anomalies == 0
  - no_acknowledged_write_lost
  - false_quarantines == 0
",
    )
    .unwrap();
    let run = |dir: &str| {
        simulate(
            &SimulateOptions {
                scenario: sc.clone(),
                seed: None,
                out: Some(tmp.path().join(dir)),
                crypto: CryptoMode::Modelled,
            },
            |_| {},
        )
        .expect("the scenario simulates")
    };
    let (x, y) = (run("a"), run("b"));
    assert!(x.passed, "{:#?}", x.verdicts);
    assert_eq!(x.simulation.trace_hash, y.simulation.trace_hash);
    for f in ["report.json", "series.json", "polls.jsonl", "history.jsonl"] {
        let p = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let q = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(
            !p.is_empty() && p == q,
            "{f} differs between two runs of seed 5"
        );
    }
    let rec = x.simulation.recording.as_deref().unwrap();
    assert!(rec.starts_with("sampled: 50 of 200 nodes polled"), "{rec}");
    // One line per polled node (cell 0, the named node's; the load's nodes are not named)
    // per round, each listing
    // the named nodes only; the named nodes' own polls list their whole cell.
    let polls = std::fs::read_to_string(tmp.path().join("a/polls.jsonl")).unwrap();
    let rounds = 41; // 20 s at 500 ms, both ends
    let lines: Vec<serde_json::Value> = polls
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() <= 50 * rounds, "{} poll lines", lines.len());
    assert!(lines
        .iter()
        .all(|p| p["node"].as_str().unwrap().starts_with("l0c0k0t")));
    let members = |p: &serde_json::Value| p["members"].as_array().unwrap().len();
    assert!(lines
        .iter()
        .filter(|p| p["node"] != "l0c0k0t20")
        .all(|p| members(p) <= 1));
    assert!(lines
        .iter()
        .any(|p| p["node"] == "l0c0k0t20" && members(p) == 49));
}

/// Issue 15: the shipped heat-locality scenario keeps every byte of its tasks' input
/// streams in their cells (> 99.99 %, measured over megabytes); given one cell more work
/// than it holds, its gateway places the rest in other cells and the same expectation fails.
#[test]
fn heat_locality_passes_and_fails_when_a_cell_overflows() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = root().join("topologies/scenarios/heat-locality.yaml");
    let o = sim(&shipped, None, &tmp.path().join("ok"));
    assert!(o.passed, "{:?}", o.verdicts);
    let v = o
        .verdicts
        .iter()
        .find(|v| v.expectation.starts_with("workload_locality"))
        .unwrap();
    assert!(v.pass && v.value == Some(1.0), "{v:?}");
    assert!(v.detail.contains("cell 100.0000% of"), "{v:?}");
    let src = std::fs::read_to_string(&shipped).unwrap();
    let over = src.replacen(
        "node: l0c0k0t0, compute: 16, duration: 120s, class: cold, count: 6",
        "node: l0c0k0t0, compute: 16, duration: 120s, class: cold, count: 24",
        1,
    );
    assert_ne!(over, src);
    let path = tmp.path().join("over.yaml");
    std::fs::write(&path, over).unwrap();
    let o = sim(&path, None, &tmp.path().join("over"));
    assert!(!o.passed);
    let v = o
        .verdicts
        .iter()
        .find(|v| v.expectation.starts_with("workload_locality"))
        .unwrap();
    assert!(!v.pass && v.value.is_some_and(|x| x < 0.99), "{v:?}");
}

/// Issue 15: the shipped class-a scenario passes in the twin (Class A waits for at most
/// the data frame on the transmitter, data for more than an idle delay); on 2 Mbit/s links
/// that one frame ahead is ~47 % of the idle delay and the Class-A bound fails.
#[test]
fn class_a_passes_and_its_bound_fails_on_slow_links() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = root().join("topologies/scenarios/class-a.yaml");
    let o = sim(&shipped, None, &tmp.path().join("ok"));
    assert!(o.passed, "{:?}", o.verdicts);
    let value = |o: &SimOutcome, e: &str| {
        o.verdicts
            .iter()
            .find(|v| v.expectation.starts_with(e))
            .and_then(|v| v.value)
            .unwrap()
    };
    assert!(
        value(&o, "class_a_latency_excess") > 0.0,
        "a Class-A frame waited behind data"
    );
    assert!(value(&o, "data_latency_excess") >= 1.0);
    let src = std::fs::read_to_string(&shipped).unwrap();
    let slow = src.replace("rate: 20Mbit", "rate: 2Mbit");
    assert_ne!(slow, src);
    let path = tmp.path().join("slow.yaml");
    std::fs::write(&path, slow).unwrap();
    let o = sim(&path, None, &tmp.path().join("slow"));
    assert!(!o.passed);
    let v = value(&o, "class_a_latency_excess");
    assert!((0.10..1.0).contains(&v), "{v}");
    // Without a rate nothing ever waits: the expectations are refused, not passed empty.
    let norate = tmp.path().join("norate.yaml");
    std::fs::write(&norate, src.replace(", rate: 20Mbit", "")).unwrap();
    let out = lightcone(&["validate", norate.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a link with a rate"));
}

/// Issue 17's key compromise in the twin: the shipped scenario passes (every cell peer of
/// the owner revokes the stolen key within the bound, frames signed with it are refused
/// and counted, no other key revoked, nothing delivered from the revoked sender); in a
/// cell that lost its quorum the revocation is never decided and the run fails.
#[test]
fn key_compromise_passes_and_fails_in_a_cell_without_a_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = root().join("topologies/scenarios/key-compromise.yaml");
    let o = sim(&shipped, None, &tmp.path().join("ok"));
    for e in [
        "revocation_time <= 5s",
        "revocation_reach_time <= 6s",
        "false_revocations == 0",
        "revoked_key_accepted == 0",
    ] {
        assert!(verdict(&o, e).pass, "{:?}", verdict(&o, e));
    }
    // The other cell learned it from the authorities' countersigned flood.
    let reach = verdict(&o, "revocation_reach_time <= 6s");
    assert!(
        reach.detail.contains("revoked by all 13 nodes of the lab"),
        "{}",
        reach.detail
    );
    let r = verdict(&o, "revocation_time <= 5s");
    assert!(
        r.detail.contains("revoked by all 6 cell peers"),
        "{}",
        r.detail
    );
    // The fault was real: frames signed with the stolen key were refused once revoked.
    let refused: u64 = r
        .detail
        .split("; ")
        .find_map(|s| s.strip_suffix(" frames refused for a revoked key"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "{}", r.detail);
    // The same theft in a cell that lost three of its seven members first: the group
    // (quorum 5 of 7, and the owner silenced by the thief's sequence numbers) cannot
    // decide, so the key is never revoked and the run fails, saying by whom not.
    let text = std::fs::read_to_string(&shipped).unwrap().replace(
        "  - { at: 12s, revoke",
        "  - { at: 10s, crash: l0c0k0t1 }\n  - { at: 10s, crash: l0c0k0t3 }\n  - { at: 10s, crash: l0c0k0t4 }\n  - { at: 12s, revoke",
    );
    let crippled = tmp.path().join("crippled.yaml");
    std::fs::write(&crippled, text).unwrap();
    let o = sim(&crippled, None, &tmp.path().join("crippled"));
    let r = verdict(&o, "revocation_time <= 5s");
    assert!(!r.pass, "{r:?}");
    assert_eq!(r.measured, "never", "{r:?}");
    assert!(
        r.detail.contains("not by: l0c0k0t0 l0c0k0t5 l0c0k0t6"),
        "{}",
        r.detail
    );
    // Beyond 100 nodes the twin polls a sample: the named nodes' cells and, with a revoke
    // in the timeline, the first node of every other cell, so the lab-wide reach is still
    // judged in every cell, and says over how many nodes.
    let big = std::fs::read_to_string(&shipped).unwrap().replace(
        "clusters: 1, cells: 2, tiles: 7",
        "clusters: 4, cells: 4, tiles: 16",
    );
    let big_file = tmp.path().join("big.yaml");
    std::fs::write(&big_file, big).unwrap();
    let ob = sim(&big_file, None, &tmp.path().join("big"));
    let r = verdict(&ob, "revocation_reach_time <= 6s");
    assert!(r.pass, "{r:?}");
    assert!(
        r.detail
            .contains("revoked by all 30 nodes of the lab (the 30 polled of 255)"),
        "{}",
        r.detail
    );
    // No quorum decided it, so the authorities signed nothing and no other cell refuses
    // the key either.
    let r = verdict(&o, "revocation_reach_time <= 6s");
    assert!(!r.pass, "{r:?}");
    assert!(r.detail.contains("l0c0k1t0"), "{}", r.detail);
}

/// A shipped rollout scenario, its topology made absolute and `from` replaced by `to`,
/// written to `dir`.
fn rollout_variant(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let shipped = root().join(format!("topologies/scenarios/{name}.yaml"));
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(text.contains(from), "{name} has no `{from}`");
    let text = text
        .replace(
            "topology: ../rollout.yaml",
            &format!(
                "topology: {}",
                root().join("topologies/rollout.yaml").display()
            ),
        )
        .replace(from, to);
    let p = dir.join(format!("{name}-variant.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Issue 18's shipped `rollout-good` and `rollout-bad` in the twin: the sound build
/// reaches every tile through all stages with every acknowledged write kept; the
/// defective one is halted at the canary and rolled back with nothing outside the canary
/// cell ever running it. Each expectation fails where it should: rollout-good's with the
/// defective build, rollout-bad's with the sound one, and the time to rollback against a
/// bound below what it took.
#[test]
fn rollout_good_and_bad_pass_and_each_expectation_fails_with_the_other_build() {
    let tmp = tempfile::tempdir().unwrap();
    let good = root().join("topologies/scenarios/rollout-good.yaml");
    let o = sim(&good, None, &tmp.path().join("good"));
    assert!(o.passed, "{:#?}", o.verdicts);
    let reach = verdict(&o, "rollout_reach == 100%");
    assert!(
        reach.detail.contains("13 of 13 tiles on the release")
            && reach.detail.contains("stage canary")
            && reach.detail.contains("stage cluster")
            && reach.detail.contains("stage layer")
            && reach.detail.contains("canary crash detected in"),
        "{}",
        reach.detail
    );
    let kept = verdict(&o, "no_acknowledged_write_lost");
    assert!(
        !kept.detail.starts_with("0 acknowledged"),
        "{}",
        kept.detail
    );

    let bad = root().join("topologies/scenarios/rollout-bad.yaml");
    let o = sim(&bad, None, &tmp.path().join("bad"));
    assert!(o.passed, "{:#?}", o.verdicts);
    let fired = verdict(&o, "rollout_gates_fired == 1");
    assert!(
        fired.detail.contains("HALTED at stage canary by gate")
            && fired.detail.matches(" pending ").count() == 2,
        "{}",
        fired.detail
    );
    let ttr = verdict(&o, "time_to_rollback <= 60s");
    let took = ttr.value.expect("a time to rollback");
    assert!(took > 0.0, "{ttr:?}");

    // rollout-good with the defective build: halted, so neither reach nor gates hold.
    let p = rollout_variant(
        tmp.path(),
        "rollout-good",
        "build: variant-b",
        "build: defect-drop-forward",
    );
    let o = sim(&p, None, &tmp.path().join("good-with-defect"));
    assert!(!o.passed);
    assert!(!verdict(&o, "rollout_reach == 100%").pass);
    assert!(!verdict(&o, "rollout_gates_fired == 0").pass);
    // rollout-bad with the sound build: nothing fires, it reaches every tile.
    let p = rollout_variant(
        tmp.path(),
        "rollout-bad",
        "build: defect-drop-forward",
        "build: variant-b",
    );
    let o = sim(&p, None, &tmp.path().join("bad-with-sound"));
    for e in [
        "rollout_gates_fired == 1",
        "rollout_escaped == 0",
        "rollout_reach == 0%",
        "time_to_rollback <= 60s",
    ] {
        assert!(!verdict(&o, e).pass, "{:?}", verdict(&o, e));
    }
    assert_eq!(
        verdict(&o, "time_to_rollback <= 60s").measured,
        "not measured"
    );
    // A bound below the measured time to rollback fails.
    let p = rollout_variant(
        tmp.path(),
        "rollout-bad",
        "time_to_rollback <= 60s",
        &format!("time_to_rollback <= {}ms", (took * 1000.0) as u64 / 2),
    );
    let o = sim(&p, None, &tmp.path().join("bad-tight"));
    let v = o
        .verdicts
        .iter()
        .find(|v| v.expectation.starts_with("time_to_rollback"))
        .unwrap();
    assert!(!v.pass, "{v:?}");
}

/// A rollout that is not the timeline's last step, a canary that is not a cell and an
/// unknown build are refused before anything runs, at their line.
#[test]
fn a_rollout_step_is_checked_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    for (from, to, says) in [
        (
            "until: 10s }",
            "until: 20s }",
            "rollout must be the timeline's last step",
        ),
        (
            "canary: l0c0k0",
            "canary: l0c0k9",
            "no cell of tiles `l0c0k9`",
        ),
        (
            "build: variant-b",
            "build: nightly",
            "unknown build `nightly`",
        ),
        ("soak: 5s", "soak: 10ms", "soak must be at least 1s"),
    ] {
        let p = rollout_variant(tmp.path(), "rollout-good", from, to);
        let o = lightcone(&[
            "simulate",
            p.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{from} → {to}: {err}");
        assert!(err.contains(says), "{from} → {to}: {err}");
        assert!(!tmp.path().join("x").exists(), "nothing written");
    }
}

#[test]
fn key_rotation_passes_and_fails_when_a_cell_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = root().join("topologies/scenarios/key-rotation.yaml");
    let o = sim(&shipped, None, &tmp.path().join("ok"));
    for e in [
        "rotation_time <= 2s",
        "false_quarantines == 0",
        "false_revocations == 0",
    ] {
        assert!(verdict(&o, e).pass, "{:?}", verdict(&o, e));
    }
    // The tile crashed and restarted after the rotation: it booted with its new key and
    // its cell took it back (alive in l0c0k0t0's last poll, at a higher incarnation).
    let polls = std::fs::read_to_string(tmp.path().join("ok/polls.jsonl")).unwrap();
    let last = polls
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|q| q["node"] == "l0c0k0t0")
        .unwrap();
    let t2 = last["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 2)
        .unwrap();
    assert_eq!(t2["state"], "alive", "{t2}");
    // Every node of the lab, the other cell included, took the new key (the certificate
    // floods lab-wide; the thief's replays of the old identity did not stop it).
    let r = verdict(&o, "rotation_time <= 2s");
    assert!(
        r.detail.contains("taken by all 13 nodes of the lab"),
        "{}",
        r.detail
    );
    // The same rotation with the other cell cut off (a partition from 10 s, never healed):
    // the certificate cannot reach it, so the run fails and says who never took the key.
    let text = std::fs::read_to_string(&shipped).unwrap().replace(
        "  - { at: 12s, rotate_key",
        "  - { at: 10s, partition: [[\"l0c0k1*\"]] }\n  - { at: 12s, rotate_key",
    );
    let cut = tmp.path().join("cut.yaml");
    std::fs::write(&cut, text).unwrap();
    let o = sim(&cut, None, &tmp.path().join("cut"));
    let r = verdict(&o, "rotation_time <= 2s");
    assert!(!r.pass, "{r:?}");
    assert_eq!(r.measured, "never", "{r:?}");
    assert!(r.detail.contains("l0c0k1t0"), "{}", r.detail);
}

#[test]
fn a_convicted_liar_made_honest_is_readmitted_and_a_longer_term_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = root().join("topologies/scenarios/byzantine-readmit.yaml");
    let o = sim(&shipped, None, &tmp.path().join("ok"));
    for e in [
        "quarantine_time <= 20s",
        "false_quarantines == 0",
        "readmission_time <= 15s",
    ] {
        assert!(verdict(&o, e).pass, "{:?}", verdict(&o, e));
    }
    let r = verdict(&o, "readmission_time <= 15s");
    assert!(
        r.detail.contains("re-admitted by all 6 cell peers"),
        "{}",
        r.detail
    );
    // Seed 6 stalled before links brought back up asked for the neighbour's table: tiles
    // 4 and 5 had no route to 0-2 for 21 s after the conviction (until the routing's 30 s
    // refresh), so the group could not gather a quorum and never re-admitted the node.
    let o6 = sim(&shipped, Some(6), &tmp.path().join("seed6"));
    assert!(
        verdict(&o6, "readmission_time <= 15s").pass,
        "{:?}",
        verdict(&o6, "readmission_time <= 15s")
    );
    // A term longer than the run: the liar is never re-admitted and the run fails.
    let text = std::fs::read_to_string(&shipped)
        .unwrap()
        .replace("quarantine_term: 10s", "quarantine_term: 60s");
    let long = tmp.path().join("long.yaml");
    std::fs::write(&long, text).unwrap();
    let o = sim(&long, None, &tmp.path().join("long"));
    let r = verdict(&o, "readmission_time <= 15s");
    assert!(!r.pass, "{r:?}");
    assert_eq!(r.measured, "never", "{r:?}");
}
