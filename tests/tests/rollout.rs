//! Issue 18 (staged update rollout), end to end in a real lab on the wire engine: the
//! shipped `topologies/rollout.yaml` (three cells of four tiles on rings, a ring of cells,
//! one authority: 13 nodes) and its shipped scenarios.
//!
//! - bad input changes nothing: a lab that is not up, a build that is missing or not
//!   executable, a release signed by fewer than t (3 of 5) authority shares;
//! - `rollout-good.yaml` (`lightcone run`, reusing the lab): a sound new build
//!   (`--features variant-b`: a real different binary) reaches every node through canary →
//!   cluster → layer with every gate passing, every agent says it runs it
//!   (`lightcone_agent_build_info`), and every key written before is still held by every
//!   tile of its cell; the same release number again (a replayed manifest) is refused;
//! - `rollout-bad.yaml`: a defective build (`--features defect-drop-forward`: 30 % of
//!   forwarded frames dropped) is caught by the delivery gate at the canary stage and rolled
//!   back before any node outside the canary cell runs it; the status (from another
//!   process) names the gate and the time to rollback;
//! - a second rollout while one runs is refused; `update abort` rolls the running one back.
//!
//! The two variant builds are compiled by this test in the workspace's own target
//! directory (and put beside `lightcone` as `lightcone-agent-VARIANT` for the scenarios'
//! `build:`, removed again at the end) (`cargo build --workspace --bin lightcone-agent --features
//! lightcone-agent/…`: only `lightcone-agent` is compiled again, its dependencies are
//! shared with the suite's build), each copied out at once; the standard
//! agent binary is saved before and put back after, also if the test fails
//! ([`StandardAgent`]), so later tests run the standard build. Needs root.
//!
//! In the default suite since session 15. Until then it was `#[ignore]`d: the variants
//! were built in a second target directory seeded with a copy of `target/debug/{deps,
//! .fingerprint,build}` (18 GB in a clean CI clone, more than the CI machine's free disk).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lightcone_e2e::*;

const CANARY: [&str; 4] = ["l0c0k0t0", "l0c0k0t1", "l0c0k0t2", "l0c0k0t3"];

/// The variant each node's agent says it runs (`lightcone_agent_build_info`).
fn variants(api: &str, nodes: &[String]) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|n| {
            let text = ureq::get(&format!("{api}/nodes/{n}/metrics"))
                .timeout(Duration::from_secs(5))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .unwrap_or_default();
            let v = text
                .lines()
                .find(|l| l.starts_with("lightcone_agent_build_info{"))
                .and_then(|l| l.split("variant=\"").nth(1))
                .and_then(|l| l.split('"').next())
                .unwrap_or("?")
                .to_string();
            (n.clone(), v)
        })
        .collect()
}

/// Agent pids by node, from `lightcone status --json`.
fn pids(lab: &str) -> Vec<(String, u64)> {
    let v: serde_json::Value =
        serde_json::from_str(&lc_ok(&["status", lab, "--json"])).expect("status json");
    v["labs"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["agent"]["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn status_json(lab: &str) -> serde_json::Value {
    serde_json::from_str(&lc_ok(&["update", "status", lab, "--json"])).expect("status json")
}

/// A key-value request through the supervisor (`/nodes/{node}/kv/{key}`; a put with
/// `durability=cell` and the lab's token): status and body.
fn kv(lab: &str, method: &str, node: &str, key: &str, value: &str) -> (u16, String) {
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).expect("supervisor.json"),
    )
    .unwrap();
    let api = info["api_url"].as_str().unwrap();
    let r = if method == "POST" {
        ureq::post(&format!("{api}/nodes/{node}/kv/{key}?durability=cell"))
            .set("x-lightcone-token", info["token"].as_str().unwrap())
            .timeout(Duration::from_secs(10))
            .send_string(value)
    } else {
        ureq::get(&format!("{api}/nodes/{node}/kv/{key}?siblings"))
            .timeout(Duration::from_secs(10))
            .call()
    };
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Variant builds placed beside `lightcone` as `lightcone-agent-VARIANT` (where a
/// scenario's `rollout: { build: VARIANT }` looks), removed when dropped.
struct NamedVariants(Vec<PathBuf>);

impl NamedVariants {
    fn place(builds: &[(&str, &PathBuf)]) -> NamedVariants {
        let mut placed = Vec::new();
        for (name, from) in builds {
            let to = bin_dir().join(format!("lightcone-agent-{name}"));
            std::fs::copy(from, &to).expect("place a variant build");
            placed.push(to);
        }
        NamedVariants(placed)
    }
}

impl Drop for NamedVariants {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Waves over every stage of a rollout's status.
fn st_waves(s: &serde_json::Value) -> u64 {
    s["stages"]
        .as_array()
        .map(|a| a.iter().filter_map(|st| st["waves"].as_u64()).sum())
        .unwrap_or(0)
}

#[test]
fn a_good_build_reaches_every_node_and_a_bad_one_is_rolled_back_at_the_canary() {
    require_root();
    let t = TestLab::shipped("rollout", "rollout.yaml");
    let lab = t.lab.clone();
    let scratch = t.dir().to_path_buf();
    let good: PathBuf = scratch.join("agent-variant-b");
    let bad: PathBuf = scratch.join("agent-defect");
    let keep = StandardAgent::save(&scratch);
    let took_bad = build_variant("defect-drop-forward", &bad);
    let took_good = build_variant("variant-b", &good);
    drop(keep);
    // Where a scenario's `build: variant-b` looks (beside lightcone), for this test only.
    let _named = NamedVariants::place(&[("variant-b", &good), ("defect-drop-forward", &bad)]);
    let standard = bin_dir().join("lightcone-agent");
    println!(
        "variant builds: defect-drop-forward {:.1} s, variant-b {:.1} s; sha256 standard {}, variant-b {}, defect {}",
        took_bad.as_secs_f64(),
        took_good.as_secs_f64(),
        sha256(&standard),
        sha256(&good),
        sha256(&bad)
    );
    assert_ne!(
        sha256(&good),
        sha256(&standard),
        "variant-b is another binary"
    );
    assert_ne!(sha256(&bad), sha256(&standard));

    // Not up yet: refused, nothing created.
    let o = lc(&["update", "start", &lab, "--build", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("is not up"), "{}", text(&o));

    t.up(&[]);
    let api = api_url(&lab);
    let nodes: Vec<String> = pids(&lab).into_iter().map(|(n, _)| n).collect();
    assert_eq!(nodes.len(), 13);
    assert!(
        wait_until(Duration::from_secs(30), || variants(&api, &nodes)
            .iter()
            .all(|(_, v)| v == "standard")),
        "agents never reported their build: {:?}",
        variants(&api, &nodes)
    );

    // The plan.
    let plan = lc_ok(&["update", "plan", &lab]);
    print!("{plan}");
    assert!(
        plan.contains("stage 1 canary      4 nodes  (1 cell: l0c0k0)"),
        "{plan}"
    );
    assert!(
        plan.contains("stage 2 cluster     8 nodes  (2 cells: l0c0k1, l0c0k2)"),
        "{plan}"
    );
    assert!(plan.contains("stage 3 layer       1 node "), "{plan}");
    assert!(plan.ends_with("3 stages, 13 of 13 nodes\n"), "{plan}");

    // Bad input: nothing changes (no rollout record, no agent restarted).
    let before = pids(&lab);
    let missing = scratch.join("no-such-agent");
    let o = lc(&[
        "update",
        "start",
        &lab,
        "--build",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("No such file") && text(&o).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    let plain = scratch.join("plain-file");
    std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
    let o = lc(&["update", "start", &lab, "--build", plain.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not executable"), "{}", text(&o));
    let o = lc(&[
        "update",
        "start",
        &lab,
        "--build",
        good.to_str().unwrap(),
        "--shares",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o)
            .contains("signing refused: only 2 signers, the threshold is 3; nothing was changed"),
        "{}",
        text(&o)
    );
    let o = lc(&["update", "status", &lab]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("no rollout was started"), "{}", text(&o));
    assert_eq!(pids(&lab), before, "a refused start restarted an agent");

    // Data written before the rollouts, with `durability=cell`: after each, every tile of
    // the writer's cell must hold it (a stage replaces a cell in waves of at most f
    // tiles, each refilled by the kv state transfer before the next).
    let tiles: Vec<&String> = nodes.iter().filter(|n| n.contains('t')).collect();
    for n in &tiles {
        let (status, body) = kv(&lab, "POST", n, &format!("before-rollout-{n}"), "kept");
        assert_eq!(status, 200, "put at {n}: {body}");
    }
    let lost = || {
        let mut lost = Vec::new();
        for w in &tiles {
            for r in tiles.iter().filter(|r| r[..6] == w[..6]) {
                let (status, body) = kv(&lab, "GET", r, &format!("before-rollout-{w}"), "");
                if status != 200 || !body.contains("kept") {
                    lost.push(format!("{w}'s write at {r}: {status} {body}"));
                }
            }
        }
        lost
    };
    assert_eq!(lost(), Vec::<String>::new(), "before the rollout");

    // The good build, by the shipped scenario on this lab: every stage passes, every agent
    // runs it, nothing the load wrote is lost.
    let scenarios = t.dir().join("scenarios");
    std::fs::create_dir_all(&scenarios).unwrap();
    let t0 = Instant::now();
    let run_out = scratch.join("run-good");
    let o = run_scenario(
        &scenario_copy(&scenarios, "rollout-good.yaml", &lab),
        &run_out,
    );
    let out = text(&o);
    print!("{out}");
    println!("rollout-good took {:.1} s", t0.elapsed().as_secs_f64());
    assert!(o.status.success(), "{out}");
    assert_eq!(report(&run_out)["passed"], true);
    assert!(out.contains("release 1 accepted"), "{out}");
    assert!(
        out.contains("signed by 3 of 5 authority shares (threshold 3)"),
        "{out}"
    );
    assert!(
        out.contains("rollout complete: every stage passed its gates"),
        "{out}"
    );
    assert!(
        !lab_namespaces(&lab).is_empty(),
        "the run reused the lab and left it up"
    );
    let s = status_json(&lab);
    assert_eq!(s["phase"], "complete");
    for st in s["stages"].as_array().unwrap() {
        assert_eq!(st["status"], "passed", "{st}");
        assert!(st["probes_sent"].as_u64().unwrap() > 0, "{st}");
        assert_eq!(st["probes_delivered"], st["probes_sent"], "{st}");
        // The causal gate judged something: every updated tile wrote each round, and the
        // tiles of cells (not the lone authority) were read back at their cell-mates.
        assert!(st["causal_writes"].as_u64().unwrap() > 0, "{st}");
        if st["name"] != "layer" {
            assert!(st["causal_reads"].as_u64().unwrap() > 0, "{st}");
        }
        // The canary's detection probe: a crashed canary tile seen by a cell-mate < 10 s.
        if st["name"] == "canary" {
            let d = st["detection_s"].as_f64().expect("the canary was probed");
            assert!(d > 0.0 && d < 10.0, "{st}");
        } else {
            assert!(st["detection_s"].is_null(), "{st}");
        }
    }
    let v = variants(&api, &nodes);
    assert!(
        v.iter().all(|(_, v)| v == "variant-b"),
        "not every node runs the release: {v:?}"
    );
    assert!(
        st_waves(&s) == 9,
        "each cell of 4 (f = 1) goes one tile at a time: canary 4 waves, cluster 4 (its two cells side by side), layer 1: {s}"
    );
    assert_eq!(
        lost(),
        Vec::<String>::new(),
        "data lost by the good rollout"
    );
    // Attestation: the rollout approved release 1's build; a binary nobody approved (the
    // same code with one byte appended) runs when put in place by hand, but its neighbours
    // keep it out of routing, and the approved build takes it back.
    let unapproved = scratch.join("agent-unapproved");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.push(0);
    std::fs::write(&unapproved, &bytes).unwrap();
    std::fs::set_permissions(
        &unapproved,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (t0name, mates) = (CANARY[0], [CANARY[1], CANARY[3]]);
    let state = |n: &str| node_state_json(&api, n);
    let id0 = state(t0name)["id"].as_u64().expect("the node's id");
    replace_agent(&lab, t0name, &unapproved);
    let refused_by_mates = || {
        mates.iter().all(|m| {
            state(m)["attest"]["refused"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x[0].as_u64() == Some(id0)))
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), refused_by_mates),
        "{t0name}'s unapproved build not refused by {mates:?}: {} / {}",
        state(mates[0])["attest"],
        state(mates[1])["attest"]
    );
    let route_to = |n: &str| {
        state(n)["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["dest"] == format!("node:{id0}")))
    };
    assert!(
        wait_until(Duration::from_secs(30), || !route_to(CANARY[2])),
        "{} still routes to the unapproved {t0name}",
        CANARY[2]
    );
    for m in mates {
        let c = state(m)["counters"]["datagrams.watch.attest_unapproved"]
            .as_u64()
            .unwrap_or(0);
        assert!(c >= 1, "{m} counted no unapproved attestation");
    }
    replace_agent(&lab, t0name, &good);
    assert!(
        wait_until(Duration::from_secs(30), || route_to(CANARY[2])
            && mates.iter().all(|m| state(m)["attest"]["admitted"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(id0))))),
        "{t0name} not admitted again on the approved build"
    );
    let after_good = pids(&lab);
    assert!(
        after_good
            .iter()
            .zip(&before)
            .all(|(a, b)| a.1 != b.1 && a.1 != 0),
        "every agent process was replaced: {before:?} → {after_good:?}"
    );

    // The same release number again: a replayed manifest, refused.
    let o = lc(&[
        "update",
        "start",
        &lab,
        "--build",
        good.to_str().unwrap(),
        "--release",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("release refused:") && text(&o).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(status_json(&lab)["phase"], "complete");
    assert_eq!(pids(&lab), after_good);

    // The defective build, by the shipped scenario: the canary's delivery gate fires;
    // rolled back to release 1; the scenario's expectations (caught, nothing escaped,
    // rolled back in time, nothing lost) pass.
    let t1 = Instant::now();
    let run_out = scratch.join("run-bad");
    let o = run_scenario(
        &scenario_copy(&scenarios, "rollout-bad.yaml", &lab),
        &run_out,
    );
    print!("{}", text(&o));
    println!("rollout-bad took {:.1} s", t1.elapsed().as_secs_f64());
    assert!(o.status.success(), "{}", text(&o));
    let r = report(&run_out);
    assert_eq!(r["passed"], true);
    let fired = r["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["expectation"] == "rollout_gates_fired == 1")
        .expect("the gates verdict");
    assert!(
        fired["detail"]
            .as_str()
            .unwrap()
            .contains("HALTED at stage canary by gate delivery"),
        "{fired}"
    );
    let s = status_json(&lab);
    let status = lc_ok(&["update", "status", &lab]);
    print!("{status}");
    assert_eq!(s["phase"], "halted", "{s}");
    let h = &s["halt"];
    assert_eq!(h["stage"], "canary", "{s}");
    assert_eq!(h["gate"], "delivery", "{s}");
    let ttr = h["time_to_rollback_s"].as_f64().unwrap();
    assert!(ttr > 0.0, "{s}");
    assert!(
        status.contains("HALTED at stage canary: gate delivery fired")
            && status.contains("time to rollback"),
        "{status}"
    );
    let stages = s["stages"].as_array().unwrap();
    assert_eq!(stages[0]["status"], "rolled_back");
    for st in &stages[1..] {
        assert_eq!(st["status"], "pending", "left the canary cell: {st}");
        assert!(st["deployed_at_s"].is_null(), "{st}");
    }
    let mut rolled: Vec<String> = h["rolled_back"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    rolled.sort();
    assert_eq!(rolled, CANARY);
    // The last tile rolled back may still be starting (it measures its binary first).
    let all_b = || variants(&api, &nodes).iter().all(|(_, v)| v == "variant-b");
    assert!(
        wait_until(Duration::from_secs(10), all_b),
        "every node runs release 1 again: {:?}",
        variants(&api, &nodes)
    );
    assert_eq!(
        lost(),
        Vec::<String>::new(),
        "data lost by the bad rollout's rollback"
    );
    // Nodes outside the canary cell were never restarted by the bad rollout.
    let after_bad = pids(&lab);
    for ((n, a), (_, b)) in after_bad.iter().zip(&after_good) {
        if !CANARY.contains(&n.as_str()) {
            assert_eq!(a, b, "{n} was restarted outside the canary");
        }
    }

    // A second rollout while one runs: refused. Abort rolls the running one back.
    let mut running = Command::new(lightcone_bin())
        .args(["update", "start", &lab, "--build", good.to_str().unwrap()])
        .args(["--soak", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a rollout");
    assert!(
        wait_until(Duration::from_secs(90), || {
            let s = status_json(&lab);
            s["phase"] == "running" && s["stages"][0]["status"] == "soaking"
        }),
        "the rollout never reached its soak: {}",
        status_json(&lab)
    );
    let o = lc(&["update", "start", &lab, "--build", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("a rollout is already running in lab"),
        "{}",
        text(&o)
    );
    let out = lc_ok(&["update", "abort", &lab]);
    print!("{out}");
    let code = running.wait().expect("rollout process").code();
    assert_eq!(code, Some(0), "an aborted rollout exits 0");
    let s = status_json(&lab);
    assert_eq!(s["phase"], "aborted", "{s}");
    assert_eq!(s["stages"][0]["status"], "rolled_back", "{s}");
    assert!(
        wait_until(Duration::from_secs(10), all_b),
        "{:?}",
        variants(&api, &nodes)
    );
    let o = lc(&["update", "abort", &lab]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));

    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}
