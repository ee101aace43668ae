//! Helpers shared by the end-to-end tests: run the real `lightcone` binary, make unique
//! labs, and check what is left in the kernel and the process table. These tests need root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The workspace's target directory holding `lightcone` and `lightcone-agent`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn lightcone_bin() -> PathBuf {
    let p = bin_dir().join("lightcone");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Fail loudly (not skip) when not root: these tests exist to touch the kernel.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "end-to-end tests need root (network namespaces); run the suite with sudo"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Run `lightcone ARGS…` and return its output.
pub fn lc(args: &[&str]) -> Output {
    Command::new(lightcone_bin())
        .args(args)
        .output()
        .expect("run lightcone")
}

/// Run and require success, returning stdout.
pub fn lc_ok(args: &[&str]) -> String {
    let o = lc(args);
    assert!(
        o.status.success(),
        "lightcone {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A lab name unique to this test process and `tag`: `t<pid>-<tag>`, or with another
/// prefix than `t` from `$LIGHTCONE_TEST_LAB_PREFIX` (lowercase letters; for running
/// tests beside other users of the machine's labs).
pub fn lab_name(tag: &str) -> String {
    let prefix = std::env::var("LIGHTCONE_TEST_LAB_PREFIX")
        .ok()
        .filter(|p| {
            // Lowercase letters and digits, a letter first (within the lab-name rule).
            p.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .unwrap_or_else(|| "t".into());
    format!("{prefix}{}-{tag}", std::process::id())
}

/// Write a topology to a temp file, replacing its `name:` with `lab`.
pub fn topology_file(dir: &Path, src: &str, lab: &str) -> PathBuf {
    let mut out = String::new();
    for line in src.lines() {
        if line.starts_with("name:") {
            out += &format!("name: {lab}\n");
        } else {
            out += line;
            out.push('\n');
        }
    }
    let p = dir.join(format!("{lab}.yaml"));
    std::fs::write(&p, out).expect("write topology");
    p
}

pub fn shipped(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("topologies").join(name)).expect("shipped topology")
}

/// Namespaces of a lab currently mounted.
pub fn lab_namespaces(lab: &str) -> Vec<String> {
    let prefix = format!("lc-{lab}_");
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Processes whose command line mentions the lab's state directory or its topology file
/// (agents, supervisors).
pub fn lab_processes(lab: &str) -> Vec<(u32, String)> {
    let needle = format!("/{lab}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("lightcone") && cmd.contains(&needle) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// Poll `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Brings a lab down when dropped, so a failing test leaves nothing behind.
pub struct LabGuard(pub String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = lc(&["down", &self.0]);
    }
}

/// Assert nothing of the lab remains: namespaces, processes, state directory.
pub fn assert_gone(lab: &str) {
    let ns = lab_namespaces(lab);
    assert!(ns.is_empty(), "namespaces left: {ns:?}");
    let procs = lab_processes(lab);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    assert!(
        !Path::new("/run/lightcone").join(lab).exists(),
        "state directory left"
    );
}

/// A test's own lab: a unique name, its topology file in a temp dir, and a guard that
/// brings it down when the test ends (even by panic).
pub struct TestLab {
    // Declared first so it drops first: the lab goes down before its temp dir goes.
    _guard: LabGuard,
    pub lab: String,
    pub file: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestLab {
    /// A uniquely named copy of a shipped topology (not up yet).
    pub fn shipped(tag: &str, topology: &str) -> TestLab {
        TestLab::from_src(tag, &shipped(topology))
    }

    /// A uniquely named lab from topology source (its `name:` is replaced).
    pub fn from_src(tag: &str, src: &str) -> TestLab {
        let tmp = tempfile::tempdir().expect("temp dir");
        let lab = lab_name(tag);
        let file = topology_file(tmp.path(), src, &lab);
        TestLab {
            _guard: LabGuard(lab.clone()),
            lab,
            file,
            _tmp: tmp,
        }
    }

    /// The test's temp dir (holds the topology file; free for other scratch files).
    pub fn dir(&self) -> &Path {
        self._tmp.path()
    }

    /// `lightcone up FILE --detach --link-engine wire EXTRA…`, which must succeed.
    pub fn up(&self, extra: &[&str]) -> String {
        let mut args = vec![
            "up",
            self.file.to_str().expect("utf-8 path"),
            "--detach",
            "--link-engine",
            "wire",
        ];
        args.extend_from_slice(extra);
        lc_ok(&args)
    }

    /// `lightcone up FILE --detach --link-engine wire` with one environment variable set,
    /// whatever its outcome (for the bounds `up` reads from the environment).
    pub fn up_env(&self, var: &str, value: &str) -> Output {
        Command::new(lightcone_bin())
            .args([
                "up",
                self.file.to_str().expect("utf-8 path"),
                "--detach",
                "--link-engine",
                "wire",
            ])
            .env(var, value)
            .output()
            .expect("run lightcone")
    }
}

/// One request to an agent's own unix control socket (`/run/lightcone/LAB/agents/ID.sock`)
/// with curl; a state-changing request carries a capability (issue 17) minted for its
/// operation with `lightcone token mint`. Whether curl succeeded (HTTP 2xx), and the body.
pub fn agent_request(lab: &str, id: u64, method: &str, path: &str, body: &str) -> (bool, String) {
    let sock = format!("/run/lightcone/{lab}/agents/{id}.sock");
    let auth = match (method, path) {
        ("GET", _) => String::new(),
        (_, p) => {
            let op = if p.starts_with("/kv/") {
                "kv-write"
            } else if p == "/byzantine" || p == "/clock" {
                "fault"
            } else {
                "order"
            };
            let t = lc_ok(&["token", "mint", "--lab", lab, "--op", op, "--ttl", "60s"]);
            format!("Authorization: Bearer {}", t.trim())
        }
    };
    let mut args = vec![
        "-s",
        "-f",
        "--max-time",
        "5",
        "--unix-socket",
        &sock,
        "-X",
        method,
        "--data-binary",
        body,
    ];
    if !auth.is_empty() {
        args.extend(["-H", auth.as_str()]);
    }
    let o = std::process::Command::new("curl")
        .args(&args)
        .arg(format!("http://agent{path}"))
        .output()
        .expect("curl");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// Copy a shipped scenario into `dir`, pointing it at a copy of its topology renamed `lab`
/// (an inline topology is renamed in place).
pub fn scenario_copy(dir: &Path, name: &str, lab: &str) -> PathBuf {
    let src = std::fs::read_to_string(repo_root().join("topologies/scenarios").join(name))
        .expect("shipped scenario");
    let mut out = String::new();
    for line in src.lines() {
        if let Some(rel) = line.strip_prefix("topology: ../") {
            let topo = topology_file(dir, &shipped(rel.trim()), lab);
            out += &format!("topology: {}\n", topo.display());
        } else if line.starts_with("  name: ") {
            // An inline topology's name is the lab's.
            out += &format!("  name: {lab}\n");
        } else {
            out += line;
            out.push('\n');
        }
    }
    let p = dir.join(name);
    std::fs::write(&p, out).expect("write scenario");
    p
}

/// `lightcone run SCENARIO --out OUT`.
pub fn run_scenario(scenario: &Path, out: &Path) -> Output {
    lc(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

/// A command's exit code, stdout and stderr, for an assertion's message.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `report.json` of the run directory `out`.
pub fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
        .expect("report json")
}

/// A shipped scenario run on its own lab: the lab's name, its guard, the run directory
/// (inside the returned tempdir) and the command's output.
pub struct ShippedRun {
    // Fields drop in order: the guard (lab down) before the tempdir.
    _guard: LabGuard,
    _tmp: tempfile::TempDir,
    pub lab: String,
    pub out: PathBuf,
    pub output: Output,
}

pub fn run_shipped(name: &str, tag: &str) -> ShippedRun {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab_name(tag);
    let sc = scenario_copy(tmp.path(), name, &lab);
    let guard = LabGuard(lab.clone());
    let out = tmp.path().join("run");
    let output = run_scenario(&sc, &out);
    ShippedRun {
        _guard: guard,
        _tmp: tmp,
        lab,
        out,
        output,
    }
}

/// Run a shipped scenario, require it to pass, its files to be written and its lab to be
/// gone; the run (and its directory) is returned for further checks.
pub fn shipped_passes(name: &str, tag: &str) -> ShippedRun {
    let run = run_shipped(name, tag);
    let ShippedRun {
        lab,
        out,
        output: o,
        ..
    } = &run;
    let r = report(out);
    assert!(o.status.success(), "{name} failed:\n{}", text(o));
    assert_eq!(r["passed"], true);
    for f in [
        "events.jsonl",
        "metrics-start.prom",
        "metrics-end.prom",
        "report.html",
        "series.json",
        "timeline.txt",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_gone(lab);
    run
}

/// The length (s) of the timer-lateness window `up` printed in its fidelity line
/// (`… over 2.0 s …`, `orchestrator/src/fidelity.rs`), if it printed one.
pub fn fidelity_window_s(up_output: &str) -> Option<f64> {
    up_output
        .lines()
        .find(|l| l.starts_with("fidelity") || l.starts_with("warning: this host does not keep"))?
        .split(" over ")
        .nth(1)?
        .split(" s")
        .next()?
        .parse()
        .ok()
}

// ---- agent builds (issue 18: rollouts and mixed labs) ----

/// The standard agent binary, saved before the variant builds replace it in the target
/// directory and put back (byte for byte) when dropped.
pub struct StandardAgent {
    path: PathBuf,
    saved: PathBuf,
}

impl StandardAgent {
    pub fn save(scratch: &Path) -> StandardAgent {
        let path = bin_dir().join("lightcone-agent");
        let saved = scratch.join("agent-standard");
        std::fs::copy(&path, &saved).expect("save the standard agent");
        StandardAgent { path, saved }
    }
}

impl Drop for StandardAgent {
    fn drop(&mut self) {
        // Replace, not write through: the uplifted file may be a hard link into deps/.
        let tmp = self.path.with_extension("restoring");
        let restored =
            std::fs::copy(&self.saved, &tmp).and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = restored {
            eprintln!(
                "could not put the standard agent back at {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Builds the agent with `feature` in the workspace's target directory and copies it to
/// `to`; how long the build took. The target's `lightcone-agent` is then the variant until
/// [`StandardAgent`] puts the standard one back.
pub fn build_variant(feature: &str, to: &Path) -> Duration {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let t0 = Instant::now();
    let o = Command::new(cargo)
        .current_dir(repo_root())
        // `--workspace`: the dependencies' features unified as the suite's own
        // `cargo build --workspace --bins` unified them, so only the agent is compiled
        // again (24 s here; `-p lightcone-agent` alone rebuilt dependencies: 188 s).
        .args([
            "build",
            "--workspace",
            "--bin",
            "lightcone-agent",
            "--features",
        ])
        .arg(format!("lightcone-agent/{feature}"))
        .output()
        .expect("run cargo");
    assert!(
        o.status.success(),
        "cargo build --features {feature} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::copy(bin_dir().join("lightcone-agent"), to).expect("copy the build");
    t0.elapsed()
}

/// SHA-256 of a file, hex (`sha256sum`).
pub fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `GET {api}/nodes/{node}/state` as JSON (`null` when the agent does not answer).
pub fn node_state_json(api: &str, node: &str) -> serde_json::Value {
    ureq::get(&format!("{api}/nodes/{node}/state"))
        .timeout(Duration::from_secs(5))
        .call()
        .ok()
        .and_then(|r| r.into_json().ok())
        .unwrap_or_default()
}

/// The lab's supervisor API URL, from its `supervisor.json`.
pub fn api_url(lab: &str) -> String {
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).expect("supervisor.json"),
    )
    .unwrap();
    info["api_url"].as_str().unwrap().to_string()
}

/// Replaces `node`'s agent with `binary` through the supervisor
/// (`POST /api/nodes/{node}/update`, the lab's token), as a rollout does for each tile.
pub fn replace_agent(lab: &str, node: &str, binary: &Path) {
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).expect("supervisor.json"),
    )
    .unwrap();
    let api = info["api_url"].as_str().unwrap();
    let token = info["token"].as_str().unwrap();
    let r = ureq::post(&format!("{api}/api/nodes/{node}/update"))
        .set("x-lightcone-token", token)
        .timeout(Duration::from_secs(30))
        .send_json(serde_json::json!({
            "binary": binary.to_str().unwrap(),
            "sha256": sha256(binary),
        }));
    assert!(r.is_ok(), "update {node} to {}: {r:?}", binary.display());
}
