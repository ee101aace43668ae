//! Issue: foundation. A topology becomes live namespaces and comes back down, even after a
//! crash. Real kernel, real binaries; needs root.

use std::time::Duration;

use lightcone_e2e::*;

#[test]
fn quickstart_up_ping_status_down() {
    require_root();
    let t = TestLab::shipped("qs", "quickstart.yaml");
    let lab = t.lab.clone();
    let out = t.up(&[]);
    assert!(out.contains("dashboard: http://127.0.0.1:"), "{out}");

    // The planned namespaces exist: one per node plus the wire engine's.
    let ns = lab_namespaces(&lab);
    assert_eq!(
        ns,
        vec![
            format!("lc-{lab}__wire"),
            format!("lc-{lab}_a"),
            format!("lc-{lab}_b"),
            format!("lc-{lab}_c")
        ]
    );
    // The planned interfaces carry the planned addresses.
    let addrs = lc_ok(&[
        "exec", "--lab", &lab, "a", "--", "ip", "-o", "-4", "addr", "show",
    ]);
    assert!(
        addrs.contains("eth1") && addrs.contains("198.18.0.0/31"),
        "{addrs}"
    );
    assert!(
        addrs.contains("eth2") && addrs.contains("198.18.0.4/31"),
        "{addrs}"
    );

    // Neighbours answer ping over the emulated links (a--b is 20 ms ± 2 ms, 1 % loss).
    let ping = lc(&[
        "exec",
        "--lab",
        &lab,
        "a",
        "--",
        "ping",
        "-c",
        "5",
        "-i",
        "0.2",
        "-W",
        "2",
        "198.18.0.1",
    ]);
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "ping a→b failed: {text}");
    let rtt_avg_ms: f64 = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .expect("ping summary");
    assert!(
        (30.0..80.0).contains(&rtt_avg_ms),
        "a→b RTT {rtt_avg_ms} ms, configured 40 ms"
    );
    lc_ok(&[
        "exec",
        "--lab",
        &lab,
        "c",
        "--",
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        "198.18.0.2",
    ]);

    // status --json has what tools need.
    let js: serde_json::Value = serde_json::from_str(&lc_ok(&["status", &lab, "--json"])).unwrap();
    let l = &js["labs"][0];
    assert_eq!(l["name"], lab.as_str());
    assert_eq!(l["state"], "up");
    assert_eq!(l["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(l["nodes"][0]["netns"], format!("lc-{lab}_a"));
    assert_eq!(l["nodes"][0]["agent"]["state"], "running");
    assert_eq!(l["links"].as_array().unwrap().len(), 3);
    assert!(l["dashboard_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert!(l["metrics_url"].as_str().unwrap().ends_with("/metrics"));

    // down removes everything; a second down is a no-op.
    let out = lc_ok(&["down", &lab]);
    assert!(out.contains("is down"), "{out}");
    assert_gone(&lab);
    let again = lc(&["down", &lab]);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("not up"));
}

#[test]
fn up_of_a_lab_already_up_is_an_error_and_changes_nothing() {
    require_root();
    let t = TestLab::shipped("twice", "quickstart.yaml");
    let (lab, file) = (t.lab.clone(), t.file.clone());
    t.up(&["--no-agents"]);
    let before = lab_namespaces(&lab);
    let status_before = lc_ok(&["status", &lab, "--json"]);
    let o = lc(&[
        "up",
        file.to_str().unwrap(),
        "--detach",
        "--link-engine",
        "wire",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already up") && err.contains("lightcone down"),
        "{err}"
    );
    assert_eq!(lab_namespaces(&lab), before);
    let v1: serde_json::Value = serde_json::from_str(&status_before).unwrap();
    let v2: serde_json::Value = serde_json::from_str(&lc_ok(&["status", &lab, "--json"])).unwrap();
    assert_eq!(
        v1["labs"][0]["supervisor_pid"],
        v2["labs"][0]["supervisor_pid"]
    );
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

#[test]
fn kill_9_of_the_supervisor_mid_up_then_down_leaves_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab_name("kill");
    // 600 nodes: large enough that `up` is still building when we strike.
    let src = "name: x\ngenerate:\n  layers:\n    - {radius_au: 1.0, clusters: 6, cells: 10, tiles: 10}\n  cell_fabric: ring\n  links:\n    cell: {delay: 1ms}\n    cluster: {delay: 2ms}\n    layer: {delay: 5ms}\n";
    let file = topology_file(tmp.path(), src, &lab);
    let _g = LabGuard(lab.clone());
    let mut child = std::process::Command::new(lightcone_bin())
        .args(["up", file.to_str().unwrap(), "--link-engine", "wire"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || lab_namespaces(&lab).len() >= 50),
        "up never started creating namespaces"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = lab_namespaces(&lab);
    assert!(!left.is_empty(), "expected leftovers to clean up");
    // up refuses to run over leftovers and says what to do.
    let o = lc(&["up", file.to_str().unwrap(), "--detach"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lightcone down"));
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

#[test]
fn kill_9_of_a_supervisor_with_agents_then_down_leaves_no_agent() {
    require_root();
    let t = TestLab::shipped("killag", "cell.yaml");
    let lab = t.lab.clone();
    t.up(&[]);
    let procs = lab_processes(&lab);
    assert!(
        procs.len() >= 13,
        "expected agents and a supervisor: {procs:?}"
    );
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).unwrap(),
    )
    .unwrap();
    let pid = info["pid"].as_u64().unwrap() as i32;
    // SAFETY: plain kill(2) of a pid we just read.
    unsafe { libc_kill(pid, 9) };
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn commands_on_missing_labs_and_nodes_say_so() {
    require_root();
    let o = lc(&["status", "no-such-lab"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not up"));
    let o = lc(&["exec", "--lab", "no-such-lab", "a", "--", "true"]);
    assert_eq!(o.status.code(), Some(3));

    let t = TestLab::shipped("missing", "quickstart.yaml");
    let lab = t.lab.clone();
    t.up(&["--no-agents"]);
    let o = lc(&["exec", "--lab", &lab, "zz", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no node \"zz\""));
    let o = lc(&["link", "set", "a", "zz", "--lab", &lab, "--delay", "5ms"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = lc(&[
        "link",
        "set",
        "a",
        "b",
        "--lab",
        &lab,
        "--delay",
        "5 parsecs",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--delay"));
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

#[test]
fn validate_reports_errors_with_positions_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.yaml");
    std::fs::write(
        &p,
        "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, q]\n    loss: 150%\n",
    )
    .unwrap();
    let o = lc(&["validate", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yaml:4:20"), "{err}");
    assert!(err.contains("bad.yaml:5:11"), "{err}");
    for t in [
        "quickstart.yaml",
        "cell.yaml",
        "backbone.yaml",
        "mercury-testbed.yaml",
    ] {
        let p = repo_root().join("topologies").join(t);
        lc_ok(&["validate", p.to_str().unwrap()]);
    }
}
