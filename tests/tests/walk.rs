//! Issue 7, a new user's walk: one test per step of the README's story after setup
//! (`tests/run.sh` runs `setup.sh --deps` twice already). Each step stands alone with its
//! own uniquely named copy of `topologies/quickstart.yaml` brought up as the README says
//! (`up FILE --detach`, engine `auto`), so the steps can run in any order. Needs root.
//!
//! (a) `lightcone doctor` passes and names the link engine;
//! (b) `up … --detach` prints the dashboard URL and the URL answers 200 with the page; the
//!     README's command 1 (`up` in the foreground) does too and tears down on Ctrl-C;
//! (c) a partition made the way the dashboard page makes it (its embedded token, `POST
//!     /api/partition` with the links crossing the marked set) makes the agents on both
//!     sides see each other suspect or dead, and heal brings them back alive;
//! (d) `lightcone down` leaves nothing: namespaces, processes, state;
//! (e) `lightcone completions bash` is a script bash loads.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use lightcone_e2e::*;
use serde_json::{json, Value};

/// `up FILE --detach` exactly as the README has it (no engine flag: `auto`).
fn up_as_in_readme(t: &TestLab) -> String {
    lc_ok(&["up", t.file.to_str().unwrap(), "--detach"])
}

/// The dashboard URL `up` printed (`  dashboard: http://127.0.0.1:PORT/`).
fn dashboard_url(up_out: &str) -> String {
    up_out
        .lines()
        .find_map(|l| l.trim().strip_prefix("dashboard: "))
        .unwrap_or_else(|| panic!("`up` printed no dashboard URL:\n{up_out}"))
        .trim()
        .to_string()
}

fn get(url: &str) -> ureq::Response {
    ureq::get(url)
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[test]
fn a_doctor_passes_and_names_the_engine() {
    require_root();
    let o = lc(&["doctor"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "doctor failed ({:?}):\n{out}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("link engine: `--link-engine auto` will use wire")
            || out.contains("link engine: `--link-engine auto` will use netem"),
        "doctor does not name the engine:\n{out}"
    );
    for name in [
        "privileges",
        "namespaces",
        "veth",
        "af_packet",
        "netem",
        "agent",
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "no {name} check:\n{out}"
        );
    }
    // The JSON form agrees, and names the same engine as `up` will use.
    let js: Value = serde_json::from_str(&lc_ok(&["doctor", "--json"])).expect("doctor --json");
    assert_eq!(js["ok"], true, "{js:#}");
    let engine = js["auto_engine"]["engine"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(engine == "wire" || engine == "netem", "{js:#}");
    for c in js["checks"].as_array().expect("checks") {
        assert_ne!(c["status"], "fail", "{c}");
        assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "{c}");
    }
    // Its throwaway namespace is gone.
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("lc-doctor-"))
        .collect();
    assert!(left.is_empty(), "doctor left namespaces: {left:?}");

    // `up` with `auto` really picks the engine doctor named.
    let t = TestLab::shipped("wka", "quickstart.yaml");
    up_as_in_readme(&t);
    let st: Value = serde_json::from_str(&lc_ok(&["status", &t.lab, "--json"])).unwrap();
    assert_eq!(st["labs"][0]["engine"], engine.as_str(), "{st:#}");
}

#[test]
fn b_up_prints_a_dashboard_url_that_answers() {
    require_root();
    let t = TestLab::shipped("wkb", "quickstart.yaml");
    let out = up_as_in_readme(&t);
    let url = dashboard_url(&out);
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "dashboard not on loopback: {url}"
    );
    let r = get(&url);
    assert_eq!(r.status(), 200);
    let page = r.into_string().unwrap();
    assert!(
        page.contains(&format!("const LAB = \"{}\"", t.lab)),
        "the page is not this lab's dashboard"
    );
    // What the page loads next answers too.
    let topo: Value = get(&format!("{url}api/topology")).into_json().unwrap();
    assert_eq!(topo["nodes"].as_array().map(Vec::len), Some(3), "{topo}");
}

#[test]
fn b_foreground_up_as_in_command_1_holds_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    require_root();
    let t = TestLab::shipped("wkf", "quickstart.yaml");
    // Command 1 without --detach: the lab lives as long as this process.
    let mut child = Command::new(lightcone_bin())
        .args(["up", t.file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("press Ctrl-C") {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.wait();
            panic!("`up` ended before the lab was up:\n{seen}");
        }
        seen += &line;
    }
    let url = dashboard_url(&seen);
    assert_eq!(get(&url).status(), 200);
    assert!(!lab_namespaces(&t.lab).is_empty());
    // Ctrl-C: SIGINT to the process; it tears everything down and exits 0.
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "exit {st:?}:\n{seen}{rest}");
    assert!(rest.contains(&format!("lab {} is down", t.lab)), "{rest}");
    assert_gone(&t.lab);
}

/// The token the page embeds (`const TOKEN = "…";`), which its controls send.
fn page_token(page: &str) -> String {
    let start = page.find("const TOKEN = \"").expect("page embeds a token") + 15;
    let end = start + page[start..].find('"').expect("token ends");
    page[start..end].to_string()
}

/// What `node` thinks of every other member, by node name.
fn views(api: &str, node: &str, names: &[String]) -> Option<BTreeMap<String, String>> {
    let s: Value = ureq::get(&format!("{api}nodes/{node}/state"))
        .timeout(Duration::from_secs(3))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    Some(
        s["members"]
            .as_array()?
            .iter()
            .filter_map(|m| {
                let name = names.get(m["id"].as_u64()? as usize)?;
                Some((name.clone(), m["state"].as_str()?.to_string()))
            })
            .filter(|(n, _)| n != node)
            .collect(),
    )
}

fn post(url: &str, token: Option<&str>, body: Value) -> Result<Value, (u16, String)> {
    let mut r = ureq::post(url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        r = r.set("x-lightcone-token", t);
    }
    match r.send_json(body) {
        Ok(r) => Ok(r.into_json().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => Err((c, r.into_string().unwrap_or_default())),
        Err(e) => Err((0, e.to_string())),
    }
}

#[test]
fn c_partition_from_the_dashboard_and_heal() {
    require_root();
    let t = TestLab::shipped("wkc", "quickstart.yaml");
    let url = dashboard_url(&up_as_in_readme(&t));
    let page = get(&url).into_string().unwrap();
    let token = page_token(&page);
    let topo: Value = get(&format!("{url}api/topology")).into_json().unwrap();
    // Node ids are plan indices, in the order the topology lists them.
    let names: Vec<String> = topo["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    let all_alive = |n: &str| {
        views(&url, n, &names)
            .is_some_and(|v| v.len() == names.len() - 1 && v.values().all(|s| s == "alive"))
    };
    assert!(
        wait_until(Duration::from_secs(60), || names
            .iter()
            .all(|n| all_alive(n))),
        "the quick start never converged: {:?}",
        names
            .iter()
            .map(|n| (n, views(&url, n, &names)))
            .collect::<Vec<_>>()
    );

    // Mark {a} and press "cut off": the page posts every link crossing the marked set.
    let inside = "a";
    let cut: Vec<Value> = topo["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| (l["a"] == inside) != (l["b"] == inside))
        .map(|l| json!([l["a"], l["b"]]))
        .collect();
    assert_eq!(cut.len(), 2, "a has two links in the quick start");
    let api = format!("{url}api/partition");
    // Without the page's token nothing changes.
    let refused = post(&api, None, json!({ "links": cut })).unwrap_err();
    assert_eq!(refused.0, 401, "{refused:?}");
    post(&api, Some(&token), json!({ "links": cut })).expect("partition");

    // Both sides see each other suspect or dead; b and c still see each other alive.
    let gone = |s: Option<&String>| s.is_some_and(|s| s == "suspect" || s == "dead");
    let split = wait_until(Duration::from_secs(40), || {
        let (Some(va), Some(vb), Some(vc)) = (
            views(&url, "a", &names),
            views(&url, "b", &names),
            views(&url, "c", &names),
        ) else {
            return false;
        };
        gone(va.get("b")) && gone(va.get("c")) && gone(vb.get("a")) && gone(vc.get("a"))
    });
    let now: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), views(&url, n, &names)))
        .collect();
    assert!(split, "the partition was not seen on both sides: {now:?}");
    let st: Value = serde_json::from_str(&lc_ok(&["status", &t.lab, "--json"])).unwrap();
    let down: Vec<&str> = st["labs"][0]["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["up"] == false)
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(down.len(), 2, "{st:#}");

    // "heal": the page posts the links that are down, with heal set.
    let down_pairs: Vec<Value> = st["labs"][0]["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["up"] == false)
        .map(|l| json!([l["a"], l["b"]]))
        .collect();
    post(
        &api,
        Some(&token),
        json!({ "links": down_pairs, "heal": true }),
    )
    .expect("heal");
    let healed = wait_until(Duration::from_secs(60), || {
        names.iter().all(|n| all_alive(n))
    });
    let now: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), views(&url, n, &names)))
        .collect();
    assert!(
        healed,
        "heal did not bring every member back alive: {now:?}"
    );
    // The page's timeline has both events.
    let ev: Value = get(&format!("{url}api/events")).into_json().unwrap();
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"partition") && kinds.contains(&"heal"),
        "{ev}"
    );
}

#[test]
fn d_down_leaves_nothing() {
    require_root();
    let t = TestLab::shipped("wkd", "quickstart.yaml");
    up_as_in_readme(&t);
    assert!(!lab_namespaces(&t.lab).is_empty());
    assert!(!lab_processes(&t.lab).is_empty());
    let out = lc_ok(&["down", &t.lab]);
    assert!(out.contains(&format!("lab {} is down", t.lab)), "{out}");
    assert_gone(&t.lab);
    // `ip netns list` (what a user would look at) agrees.
    let ip = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ip = String::from_utf8_lossy(&ip.stdout);
    assert!(!ip.contains(&format!("lc-{}_", t.lab)), "{ip}");
    // Again: harmless.
    let again = lc_ok(&["down", &t.lab]);
    assert!(again.contains("not up; nothing to do"), "{again}");
}

#[test]
fn e_bash_completions_load() {
    let script = lc_ok(&["completions", "bash"]);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("lightcone.bash");
    std::fs::write(&f, &script).unwrap();
    let n = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(
        n.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&n.stderr)
    );
    // Sourced, it completes subcommands (and never offers the internal one).
    let probe = format!(
        "source {f}; COMP_WORDS=(lightcone d); COMP_CWORD=1; _lightcone lightcone d lightcone; \
         echo \"${{COMPREPLY[*]}}\"; COMP_WORDS=(lightcone _); _lightcone lightcone _ lightcone; \
         echo \"[${{COMPREPLY[*]}}]\"",
        f = f.display()
    );
    let o = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let mut lines = out.lines();
    let first: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert!(
        first.contains(&"down") && first.contains(&"doctor"),
        "completions of `lightcone d`: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(lines.next(), Some("[]"), "{out}");
}

/// The sh block under "## The two commands" in the README: its commands, one per `&&` part
/// of each non-comment line.
fn readme_two_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = readme
        .split("## The two commands")
        .nth(1)
        .expect("README has `## The two commands`");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block under the two commands");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(|l| l.split("&&").map(|c| c.trim().to_string()))
        .collect()
}

/// Issue 11 item 14: the README's two commands work in a root shell that has no `sudo` (a
/// container, a minimal VM) as well as through sudo: each runs through `tests/as-root`, which
/// needs no sudo when root. Run here with a PATH that holds no `sudo`.
#[test]
fn f_readme_commands_work_as_root_without_sudo() {
    require_root();
    let cmds = readme_two_commands();
    assert_eq!(cmds.len(), 3, "setup && up, then run: {cmds:?}");
    for c in &cmds {
        let words: Vec<&str> = c.split_whitespace().collect();
        assert_eq!(
            words[0], "tests/as-root",
            "`{c}` needs sudo, which a root shell may lack"
        );
        assert!(
            words[1].starts_with("target/release/") || repo_root().join(words[1]).is_file(),
            "`{c}`: {} does not exist",
            words[1]
        );
    }
    // A PATH with `id` (the wrapper's root check) and no sudo.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/bin/id", bin.path().join("id")).unwrap();
    let o = Command::new(repo_root().join("tests/as-root"))
        .args(["id", "-u"])
        .env("PATH", bin.path())
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tests/as-root as root without sudo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
}
