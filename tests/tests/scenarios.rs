//! Issue: experiments. `lightcone run` against real labs: every shipped scenario the lab's
//! agents support runs and its report passes (every shipped one, byzantine, the
//! byzantine coalition and the key compromise included); a
//! scenario whose expectation cannot hold (detection ≤ 1 ms) fails
//! with a clear line and exit code 1. Each run brings its own uniquely named lab up and
//! down; run directories go to a tempdir. Needs root. Elsewhere: `across-hosts.yaml` runs
//! across two hosts in multihost.rs (and the VM script), the store and rollout scenarios
//! in store.rs and rollout.rs, the heat ones in heat.rs.

use lightcone_e2e::*;

#[test]
fn cell_partition_and_heal_passes() {
    shipped_passes("cell.yaml", "scp");
}

/// Issue 18: a mixed N/N−1 lab of two real builds passes the cell scenario. The cell's
/// lab is brought up (protocol 3, the lab's N), a build of the previous protocol
/// (`--features protocol-n1`: it speaks 2) is approved for attestation (`update approve`)
/// and put in place on every odd tile; once each tile routes to all eleven others, the
/// shipped cell scenario runs on that lab (`run` reuses a lab that is up) and passes —
/// detection, convergence after the heal, causal consistency, no acknowledged write lost —
/// and the restarted N−1 tile still runs N−1.
#[test]
fn cell_partition_and_heal_passes_in_a_mixed_n_and_n_minus_1_lab() {
    use std::time::Duration;
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab_name("smx");
    let sc = scenario_copy(tmp.path(), "cell.yaml", &lab);
    let topo = topology_file(tmp.path(), &shipped("cell.yaml"), &lab);
    let n1 = tmp.path().join("agent-protocol-n1");
    let keep = StandardAgent::save(tmp.path());
    let took = build_variant("protocol-n1", &n1);
    drop(keep);
    println!(
        "protocol-n1 build {:.1} s, sha256 {}",
        took.as_secs_f64(),
        sha256(&n1)
    );
    let _guard = LabGuard(lab.clone());
    lc_ok(&["up", topo.to_str().unwrap(), "--detach"]);
    let approved = lc_ok(&["update", "approve", &lab, "--build", n1.to_str().unwrap()]);
    assert!(
        approved.contains("build approved for attestation"),
        "{approved}"
    );
    let tiles: Vec<String> = (0..12).map(|i| format!("l0c0k0t{i}")).collect();
    let old: Vec<&String> = tiles.iter().skip(1).step_by(2).collect();
    for t in &old {
        replace_agent(&lab, t, &n1);
    }
    let api = api_url(&lab);
    let state = |n: &str| node_state_json(&api, n);
    let mixed = || {
        tiles.iter().enumerate().all(|(i, t)| {
            let s = state(t);
            let want = if i % 2 == 1 { 2 } else { 3 };
            s["protocol_version"] == want
                && s["routes"].as_array().is_some_and(|r| {
                    tiles
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .all(|(j, _)| r.iter().any(|x| x["dest"] == format!("node:{j}")))
                })
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), mixed),
        "the mixed lab did not converge: {}",
        tiles
            .iter()
            .map(|t| format!(
                "{t}: protocol {} routes {}",
                state(t)["protocol_version"],
                state(t)["routes"].as_array().map_or(0, |r| r.len())
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let out = tmp.path().join("run");
    let o = run_scenario(&sc, &out);
    assert!(
        o.status.success(),
        "cell on a mixed lab failed:\n{}",
        text(&o)
    );
    assert!(text(&o).contains("(already up)"), "{}", text(&o));
    assert_eq!(report(&out)["passed"], true);
    // The tile runtime's own cost (issue 18's budget), as each agent reports it.
    for t in &tiles {
        let r = &state(t)["runtime"];
        println!(
            "runtime {t}: cpu {:.3} s over {:.1} s = {:.3} % of a core (budget {} %), rss {} kB, binary {} MB",
            r["cpu_s"].as_f64().unwrap_or(f64::NAN),
            r["uptime_s"].as_f64().unwrap_or(f64::NAN),
            100.0 * r["cpu_share"].as_f64().unwrap_or(f64::NAN),
            100.0 * r["budget_share"].as_f64().unwrap_or(f64::NAN),
            r["rss_bytes"].as_u64().unwrap_or(0) / 1024,
            r["binary_bytes"].as_u64().unwrap_or(0) / 1_000_000
        );
        assert!(r["cpu_s"].as_f64().is_some(), "{t} reports no runtime: {r}");
    }
    // l0c0k0t3 was crashed and restarted by the scenario: still the N−1 build.
    assert_eq!(state("l0c0k0t3")["protocol_version"], 2);
    assert_eq!(state("l0c0k0t2")["protocol_version"], 3);
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

#[test]
fn crash_storm_passes() {
    shipped_passes("crash-storm.yaml", "scs");
}

/// Messages across cells, clusters and layers arrive (message_delivery), a tile crash is
/// detected, the data stays causal and whole.
#[test]
fn hierarchy_messages_pass() {
    shipped_passes("hierarchy.yaml", "shi");
}

#[test]
fn backbone_layer_cut_passes() {
    shipped_passes("backbone.yaml", "sbb");
}

/// The compromised stratum-0 is played through the clock API; every node it serves
/// (the cell's 12 tiles) alarms, the authority does not (`time_alarmed_nodes == 12`). The
/// report plots the clocks over the timeline, and the sampled series shows the served
/// nodes following the 50 ms lie before their pulsar checks catch it.
#[test]
fn stratum0_compromise_passes() {
    let run = shipped_passes("stratum0.yaml", "ss0");
    let html = std::fs::read_to_string(run.out.join("report.html")).unwrap();
    for title in [
        "<h3>Time error: ",
        "<h3>σ: ",
        "<h3>Clocks in trouble: nodes</h3>",
    ] {
        assert!(html.contains(title), "report.html has no {title:?} plot");
    }
    assert!(!html.contains("Not plotted over time yet"));
    let series: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.out.join("series.json")).unwrap()).unwrap();
    let points = series.as_array().expect("series.json is a list");
    let clocked = points.iter().filter(|p| p["time"]["nodes"] == 13).count();
    assert!(
        clocked * 2 > points.len(),
        "{clocked} of {} samples have all 13 clocks",
        points.len()
    );
    let max = |key: &str| {
        points
            .iter()
            .filter_map(|p| p["time"][key].as_f64())
            .fold(0.0f64, f64::max)
    };
    let err = max("error_abs_max_s");
    assert!(
        err > 0.01,
        "no node followed the 50 ms bias (largest |error| {err} s)"
    );
    assert_eq!(max("alarmed_ever"), 12.0);
}

/// l0c0k0t4 lies in membership and forwards nothing; its eleven cell peers quarantine it
/// (quarantine_time), nobody honest is quarantined, and the data stays causal and whole.
#[test]
fn byzantine_tile_is_quarantined_passes() {
    let ShippedRun {
        lab,
        out,
        output: o,
        ..
    } = &run_shipped("byzantine.yaml", "sbz");
    assert!(o.status.success(), "byzantine failed:\n{}", text(o));
    let r = report(out);
    assert_eq!(r["passed"], true);
    let verdict = |name: &str| {
        r["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["expectation"].as_str().unwrap().starts_with(name))
            .cloned()
            .unwrap_or_else(|| panic!("no verdict {name}"))
    };
    let q = verdict("quarantine_time");
    assert!(
        q["detail"]
            .as_str()
            .unwrap()
            .contains("quarantined by all 11 cell peers"),
        "{q}"
    );
    assert_eq!(verdict("false_quarantines")["value"], 0.0);
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert!(events.contains("\"kind\":\"byzantine\""), "{events}");
    assert_gone(lab);
}

/// Four liars, one in each cell of two clusters, lie about their cell mates and accuse
/// everyone (issue 17's coalition), with the topology's `trust:` hardening on: each liar
/// is quarantined by all its cell peers, nobody honest by anyone, and the convictions were
/// the cells' BFT logs' — every honest member of each liar's cell (5 of 6) applied the
/// agreed conviction (`verdict_agreed`; 20 in a local run, with 31 votes submitted).
#[test]
fn byzantine_coalition_is_convicted_by_the_cells_bft_logs() {
    let run = shipped_passes("byzantine-coalition.yaml", "sbc");
    let prom = std::fs::read_to_string(run.out.join("metrics-end.prom")).unwrap();
    let total = |outcome: &str| -> f64 {
        prom.lines()
            .filter(|l| l.starts_with("lightcone_datagrams_total{"))
            .filter(|l| {
                l.contains("direction=\"watch\"") && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (agreed, votes) = (total("verdict_agreed"), total("vote_submitted"));
    assert!(
        agreed >= 20.0,
        "verdict_agreed {agreed} (4 liars x 5 honest cell peers)"
    );
    // Each conviction took the quorum f + 1 = 2 of a 6-tile cell in votes.
    assert!(votes >= 8.0, "vote_submitted {votes}");
}

/// A stolen key (issue 17's key-compromise scenario): l0c0k0t5 signs data frames as
/// l0c0k0t2 through the supervisor's `steal-key` fault, an operator at l0c0k0t0 asks the
/// cell's BFT group to revoke l0c0k0t2's key, and every cell peer refuses it within the
/// bound; no other key is revoked and nothing from the revoked sender is delivered. The
/// agents' counters show the fault was real: forged frames sent, frames refused for the
/// revoked key.
#[test]
fn key_compromise_is_revoked_by_the_cells_bft_group() {
    let run = shipped_passes("key-compromise.yaml", "skc");
    let total = |direction: &str, outcome: &str| datagrams_total(&run, direction, outcome);
    assert!(
        total("tx", "forged") > 0.0,
        "no frame signed with the stolen key"
    );
    assert!(
        total("rx", "key_revoked") > 0.0,
        "no frame refused for the revoked key"
    );
    // The authorities' countersigned revocation reached every node: each applied it once
    // (the victim included, 14), and the flood's echoes were duplicates, not re-applies.
    assert_eq!(
        total("watch", "trust_applied"),
        14.0,
        "nodes that applied the countersigned revocation"
    );
    assert_eq!(total("watch", "trust_refused"), 0.0);
    let events = std::fs::read_to_string(run.out.join("events.jsonl")).unwrap();
    for kind in ["\"kind\":\"steal_key\"", "\"kind\":\"revoke\""] {
        assert!(events.contains(kind), "{kind} not in {events}");
    }
}

/// `lightcone_datagrams_total{direction, outcome}` summed over the agents at a run's end.
fn datagrams_total(run: &ShippedRun, direction: &str, outcome: &str) -> f64 {
    let prom = std::fs::read_to_string(run.out.join("metrics-end.prom")).unwrap();
    prom.lines()
        .filter(|l| l.starts_with("lightcone_datagrams_total{"))
        .filter(|l| {
            l.contains(&format!("direction=\"{direction}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A convicted liar made honest is re-admitted by its cell's BFT group (issue 17's
/// byzantine-readmit scenario): quarantined within the bound, no honest tile quarantined,
/// and every cell peer lifts the quarantine within the bound after its term.
#[test]
fn a_convicted_liar_made_honest_is_readmitted_by_its_cell() {
    let run = shipped_passes("byzantine-readmit.yaml", "sra");
    let readmitted = datagrams_total(&run, "watch", "readmitted");
    // Each of the six honest members lifted the quarantine (once each).
    assert!(readmitted >= 6.0, "readmitted {readmitted}");
}

/// A stolen key rotated instead of revoked (issue 17's key-rotation scenario): the
/// supervisor's authorities certify a fresh key for l0c0k0t2 while l0c0k0t5 signs frames
/// with the stolen one; every node of the lab takes the new key within the bound, the
/// thief's frames are refused once the grace is over, and the tile, crashed and restarted
/// after the rotation (its key file rewritten, the certificate in every agent's
/// configuration), is alive in every cell peer's view at the end.
#[test]
fn key_rotation_keeps_the_tile_in_service() {
    let run = shipped_passes("key-rotation.yaml", "skr");
    let total = |direction: &str, outcome: &str| datagrams_total(&run, direction, outcome);
    assert!(
        total("tx", "forged") > 0.0,
        "no frame signed with the stolen key"
    );
    // Frames under the old key after the grace fail their signature check.
    assert!(
        total("rx", "bad_signature") > 0.0,
        "no frame refused under the old key"
    );
    assert_eq!(total("watch", "trust_refused"), 0.0);
    let events = std::fs::read_to_string(run.out.join("events.jsonl")).unwrap();
    assert!(events.contains("\"kind\":\"rotate_key\""), "{events}");
    // Alive again after its restart with the new key, in every cell peer's last poll.
    let polls = std::fs::read_to_string(run.out.join("polls.jsonl")).unwrap();
    let mut last: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for q in polls
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        last.insert(q["node"].as_str().unwrap_or("").to_string(), q);
    }
    for peer in ["l0c0k0t0", "l0c0k0t1", "l0c0k0t3", "l0c0k0t4", "l0c0k0t6"] {
        let q = &last[peer];
        let t2 = q["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == 2)
            .cloned()
            .unwrap_or_default();
        assert_eq!(t2["state"], "alive", "{peer} sees l0c0k0t2 as {t2}");
    }
}

#[test]
fn impossible_detection_fails_with_a_clear_line() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab_name("s1ms");
    let topo = topology_file(tmp.path(), &shipped("cell.yaml"), &lab);
    let sc = tmp.path().join("impossible.yaml");
    std::fs::write(
        &sc,
        format!(
            "topology: {}\nseed: 1\nduration: 12s\ntimeline:\n  - {{ at: 1s, crash: l0c0k0t4 }}\n  - {{ at: 2s, crash: l0c0k0t4 }}\nexpect:\n  - detection_time <= 1ms\n",
            topo.display()
        ),
    )
    .unwrap();
    let _g = LabGuard(lab.clone());
    let out = tmp.path().join("run");
    let o = run_scenario(&sc, &out);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("FAIL detection_time <= 1ms: measured "),
        "{t}"
    );
    // The second crash finds the node down: that fault was not injected, and says so as
    // a failed line of its own (issue 11 item 2).
    assert!(
        stdout.contains("FAIL injection failed: crash l0c0k0t4: measured not injected"),
        "{t}"
    );
    assert!(stdout.contains("nothing to crash"), "{t}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "scenario impossible failed: injection failed: crash l0c0k0t4; detection_time <= 1ms"
        ),
        "{t}"
    );
    let r = report(&out);
    assert_eq!(r["passed"], false);
    assert_eq!(r["verdicts"][0]["pass"], false);
    assert_eq!(r["verdicts"][1]["pass"], false);
    // The crash was played and recorded.
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert!(events.contains("\"kind\":\"crash\""), "{events}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("FAIL"),
        "report.html lacks plots or verdict"
    );
    assert_gone(&lab);
}
