//! Issue 7, CLI polish: `--json` on `probe` and `run` prints one JSON document on stdout with
//! the field names the README documents, and nothing else on stdout; no progress markers
//! leak into output that is not a terminal. Needs root.
//!
//! Issue 11, `validate` of topologies and scenarios as a user runs it: these tests bring no
//! lab up and need neither root nor namespaces (`validate`, and `run` refusing before it
//! touches anything).

use std::time::Duration;

use lightcone_e2e::*;
use serde_json::Value;

fn has_all(v: &Value, fields: &[&str], what: &str) {
    for f in fields {
        assert!(v.get(*f).is_some(), "{what} lacks {f}: {v:#}");
    }
}

#[test]
fn probe_json_has_the_documented_fields() {
    require_root();
    let t = TestLab::shipped("cpj", "quickstart.yaml");
    let up = t.up(&[]);
    assert!(
        !up.contains('\u{2}'),
        "progress markers in non-terminal output:\n{up:?}"
    );
    let out = lc_ok(&[
        "probe",
        "a",
        "b",
        "--lab",
        &t.lab,
        "--count",
        "40",
        "--interval",
        "5ms",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("probe --json is one JSON document");
    has_all(
        &v,
        &[
            "link",
            "time_scale",
            "sent",
            "received",
            "measured",
            "configured",
        ],
        "probe",
    );
    has_all(
        &v["measured"],
        &[
            "rtt_mean_s",
            "rtt_p50_s",
            "rtt_p99_s",
            "loss",
            "throughput_bps",
        ],
        "measured",
    );
    has_all(
        &v["configured"],
        &[
            "rtt_real_s",
            "jitter_real_s",
            "loss_round_trip",
            "rate_bps",
            "up",
        ],
        "configured",
    );
    assert_eq!(v["link"], "a--b");
    assert_eq!(v["sent"], 40);
    // a--b is 20 ms each way in the quick start: the measured RTT is about 40 ms.
    let rtt = v["measured"]["rtt_mean_s"].as_f64().expect("rtt measured");
    assert!((0.035..0.08).contains(&rtt), "rtt {rtt}");
    assert!((v["configured"]["rtt_real_s"].as_f64().unwrap() - 0.04).abs() < 1e-9);
}

#[test]
fn run_json_is_the_only_thing_on_stdout() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab_name("crj");
    let topo = topology_file(tmp.path(), &shipped("quickstart.yaml"), &lab);
    let sc = tmp.path().join("short.yaml");
    // An expectation every run meets (agents cannot use more than the whole host), so the
    // verdict is known: a passing run, whose "passed" line must not land on stdout.
    std::fs::write(
        &sc,
        format!(
            "topology: {}\nseed: 5\nduration: 4s\ntimeline:\n  - {{ at: 1s, crash: b }}\nexpect:\n  - overhead <= 100% because this test needs a verdict every run meets\n",
            topo.display()
        ),
    )
    .unwrap();
    let _g = LabGuard(lab.clone());
    let out_dir = tmp.path().join("run");
    let o = lc(&[
        "run",
        sc.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    has_all(
        &v,
        &[
            "scenario",
            "seed",
            "lab",
            "time_scale",
            "dir",
            "verdicts",
            "passed",
        ],
        "run",
    );
    assert_eq!(v["seed"], 5);
    assert_eq!(v["lab"], lab.as_str());
    assert_eq!(v["passed"], true);
    let verdict = &v["verdicts"][0];
    has_all(
        verdict,
        &[
            "expectation",
            "expected",
            "measured",
            "value",
            "pass",
            "detail",
        ],
        "verdict",
    );
    assert_eq!(verdict["pass"], true);
    assert_eq!(verdict["expectation"], "overhead <= 100%");
    // Progress lines and the verdict line went to stderr, and no progress marker anywhere
    // (not a terminal).
    assert!(stderr.contains("end of timeline"), "{stderr}");
    assert!(stderr.contains("passed"), "{stderr}");
    assert!(!stderr.contains('\u{2}') && !stdout.contains('\u{2}'));
    assert!(wait_until(Duration::from_secs(10), || lab_namespaces(&lab).is_empty()));
    assert_gone(&lab);
}

/// The doctor's check of `name`, from `doctor --json`.
fn doctor_check(name: &str) -> Value {
    let o = lc(&["doctor", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("doctor --json");
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} check: {v:#}"))
}

#[test]
fn doctor_reports_leftovers_and_its_fixes_work() {
    require_root();
    // A lab whose supervisor is gone: a state directory with an empty ledger.
    let lab = lab_name("cdst");
    let dir = std::path::Path::new("/run/lightcone").join(&lab);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ledger.jsonl"), "").unwrap();
    let _g = LabGuard(lab.clone());
    // A killed doctor's throwaway namespace: a pid that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let ns = format!("lc-doctor-{dead}");
    let made = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(made.success());

    let stale = doctor_check("stale_labs");
    let stray = doctor_check("stray_namespaces");
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", &ns])
        .status();
    assert_eq!(stale["status"], "warn", "{stale}");
    assert!(stale["reason"].as_str().unwrap().contains(&lab), "{stale}");
    assert!(
        stale["fix"].as_str().unwrap().contains("lightcone down"),
        "{stale}"
    );
    assert_eq!(stray["status"], "warn", "{stray}");
    assert!(stray["reason"].as_str().unwrap().contains(&ns), "{stray}");

    // The stale lab's fix: `lightcone down LAB`.
    lc_ok(&["down", &lab]);
    assert!(!dir.exists());
    let stale = doctor_check("stale_labs");
    assert!(!stale["reason"].as_str().unwrap().contains(&lab), "{stale}");
}

/// Run `lightcone ARGS…`: (exit code, stdout, stderr).
fn lc_out(args: &[&str]) -> (Option<i32>, String, String) {
    let o = lc(args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every shipped topology and scenario validates clean, as a process; a scenario is
/// checked as one (not read as a topology with four unknown keys).
#[test]
fn every_shipped_topology_and_scenario_validates() {
    let root = repo_root().join("topologies");
    let mut seen = (0, 0);
    for dir in [root.clone(), root.join("scenarios")] {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let (code, out, err) = lc_out(&["validate", f.to_str().unwrap()]);
            assert_eq!(code, Some(0), "{}:\n{out}{err}", f.display());
            assert!(err.is_empty(), "{}: {err}", f.display());
            assert!(out.contains(": ok — "), "{out}");
            if dir == root {
                assert!(out.contains(": ok — lab "), "{out}");
                seen.0 += 1;
            } else {
                assert!(out.contains(": ok — scenario "), "{out}");
                assert!(out.contains("expectations; its topology: lab "), "{out}");
                seen.1 += 1;
            }
        }
    }
    assert!(seen.0 >= 4 && seen.1 >= 6, "{seen:?}");
}

/// Issue 11, item 3: errors printed `error: error:`, and a cause named in an error's own
/// message was printed again as its source. Each message appears once, behind one
/// `error:`, with exit code 2.
#[test]
fn validate_and_run_print_each_error_once() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("topologies/cell.yaml"),
        tmp.path().join("cell.yaml"),
    )
    .unwrap();
    let sc = tmp.path().join("s.yaml");
    std::fs::write(
        &sc,
        "topology: cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, crash: nosuch }\nexpect: [detection_time < 10s]\n",
    )
    .unwrap();
    let bad8 = tmp.path().join("bad8.yaml");
    std::fs::write(&bad8, b"name: x\nnodes:\n  a: {}\n  b\xff: {}\n").unwrap();
    let missing = tmp.path().join("missing.yaml");
    for (args, want, at) in [
        (
            vec!["validate", sc.to_str().unwrap()],
            "no node \"nosuch\"",
            "s.yaml:4:15",
        ),
        (
            vec!["run", sc.to_str().unwrap()],
            "no node \"nosuch\"",
            "s.yaml:4:15",
        ),
        (
            vec!["validate", bad8.to_str().unwrap()],
            "not UTF-8",
            "bad8.yaml:4:4",
        ),
        (
            vec!["plan", bad8.to_str().unwrap()],
            "not UTF-8",
            "bad8.yaml:4:4",
        ),
        (
            vec!["validate", missing.to_str().unwrap()],
            "No such file or directory",
            "cannot read",
        ),
        (
            vec!["run", missing.to_str().unwrap()],
            "No such file or directory",
            "cannot read",
        ),
    ] {
        let (code, out, err) = lc_out(&args);
        assert_eq!(code, Some(2), "{args:?}:\n{out}{err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(!err.contains("error: error:"), "{args:?}:\n{err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}:\n{err}");
        assert_eq!(err.matches(want).count(), 1, "{args:?}:\n{err}");
        assert!(
            err.starts_with("error: ") && err.contains(at),
            "{args:?}:\n{err}"
        );
    }
}

/// Issue 11 item 13: a lab name that is a path (`down ../../tmp/x`, `down /tmp/x`, and the
/// same through `--lab` and `status`) is refused as invalid input; the directory it names
/// is left as it was (it used to be deleted recursively).
#[test]
fn a_lab_name_that_is_a_path_removes_nothing() {
    require_root();
    let victim = tempfile::Builder::new()
        .prefix("ctl-xyz")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(victim.path().join("keep"), "precious").unwrap();
    let name = victim.path().file_name().unwrap().to_str().unwrap();
    let relative = format!("../../tmp/{name}");
    let absolute = victim.path().to_str().unwrap().to_string();
    for args in [
        vec!["down", relative.as_str()],
        vec!["down", absolute.as_str()],
        vec!["status", relative.as_str()],
        vec!["exec", "--lab", relative.as_str(), "a", "--", "true"],
        vec!["fault", "crash", "a", "--lab", absolute.as_str()],
    ] {
        let o = lc(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is not a lab name"), "{args:?}: {stderr}");
        assert_eq!(
            std::fs::read_to_string(victim.path().join("keep"))
                .ok()
                .as_deref(),
            Some("precious"),
            "{args:?} touched {}",
            victim.path().display()
        );
    }
}

/// Issue 11, item 3: a scenario without expectations is refused by `validate` and by `run`
/// (before `run` needs root or touches a lab).
#[test]
fn a_scenario_without_expectations_is_refused_by_validate_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("topologies/cell.yaml"),
        tmp.path().join("cell.yaml"),
    )
    .unwrap();
    let sc = tmp.path().join("s.yaml");
    std::fs::write(
        &sc,
        "topology: cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, crash: l0c0k0t1 }\n",
    )
    .unwrap();
    for cmd in ["validate", "run"] {
        let (code, out, err) = lc_out(&[cmd, sc.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{cmd}:\n{out}{err}");
        assert!(
            err.contains("the scenario has no expectations: a run of it would prove nothing"),
            "{cmd}: {err}"
        );
        assert!(err.contains("s.yaml:1:1"), "{cmd}: {err}");
    }
}

/// Issue 11 item 13: `probe --count 0` reported 100 % loss and exit 0; it is a usage error.
#[test]
fn probe_count_zero_is_refused() {
    let o = lc(&["probe", "a", "b", "--count", "0"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("at least 1"), "{stderr}");
    assert!(o.stdout.is_empty());
}

/// Issue 11 item 13: after `kill -9` of a detached supervisor, `status` says `stale`
/// (its unreaped zombie kept the pid and start time and read as alive: `unreachable`), and
/// `down` cleans up.
#[test]
fn status_after_kill_9_of_the_supervisor_says_stale() {
    require_root();
    // This process adopts the orphaned supervisor (`up --detach` exits), so the killed
    // supervisor surely stays a zombie until this test reaps it below, as it does under an
    // init that never reaps.
    // SAFETY: prctl with integer arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let t = TestLab::shipped("ctlk9", "quickstart.yaml");
    t.up(&["--no-agents"]);
    let info: Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{}/supervisor.json", t.lab)).unwrap(),
    )
    .unwrap();
    let pid = info["pid"].as_u64().unwrap() as i32;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Dead, whether or not anything reaps it.
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z ") || s.contains(") X "))
            .unwrap_or(true)
    }));
    let st: Value = serde_json::from_str(&lc_ok(&["status", &t.lab, "--json"])).unwrap();
    assert_eq!(st["labs"][0]["state"], "stale", "{st:#}");
    // SAFETY: reaping our own (adopted) child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    lc_ok(&["down", &t.lab]);
    assert!(wait_until(Duration::from_secs(10), || lab_namespaces(
        &t.lab
    )
    .is_empty()));
    assert_gone(&t.lab);
}
