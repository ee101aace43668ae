//! Issue 6, telemetry: `lightcone up --prometheus` starts a real Prometheus server (Debian's
//! package) that scrapes every agent and the link engine. Checked through its HTTP API with
//! PromQL, then the lab goes down and the server with it. Needs root.

use std::time::Duration;

use lightcone_e2e::*;
use serde_json::Value;

fn query(prom: &str, q: &str) -> Option<Vec<Value>> {
    let v: Value = ureq::get(&format!("{prom}/api/v1/query"))
        .query("query", q)
        .timeout(Duration::from_secs(3))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned()
}

fn prometheus_pids(config_dir: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("prometheus") && cmd.contains(config_dir) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn prometheus_scrapes_every_agent_and_link() {
    require_root();
    let t = TestLab::shipped("prom", "quickstart.yaml");
    let lab = t.lab.clone();
    t.up(&["--prometheus"]);

    // `status --json` names the server.
    let st: Value = serde_json::from_str(&lc_ok(&["status", &lab, "--json"])).unwrap();
    let s = &st["labs"][0];
    let prom = s["prometheus_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no prometheus_url in status: {s}"))
        .to_string();
    assert!(prom.starts_with("http://127.0.0.1:"), "{prom}");
    let nodes: Vec<String> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes.len(), 3);
    let state_dir = format!("/run/lightcone/{lab}/prometheus");
    assert_eq!(
        prometheus_pids(&state_dir).len(),
        1,
        "one server for the lab"
    );

    // Every agent target reports up == 1, and the link engine's job is up too.
    let mut last = Vec::new();
    let all_up = wait_until(Duration::from_secs(60), || {
        let Some(r) = query(&prom, "up") else {
            return false;
        };
        last = r.clone();
        let agent_up = |n: &str| {
            r.iter().any(|x| {
                x["metric"]["job"] == "lightcone_agents"
                    && x["metric"]["node"] == n
                    && x["value"][1] == "1"
            })
        };
        let links_up = r
            .iter()
            .any(|x| x["metric"]["job"] == "lightcone_links" && x["value"][1] == "1");
        links_up && nodes.iter().all(|n| agent_up(n))
    });
    assert!(all_up, "not every target is up; last `up` answer: {last:?}");
    let agent_targets = last
        .iter()
        .filter(|x| x["metric"]["job"] == "lightcone_agents")
        .count();
    assert_eq!(
        agent_targets,
        nodes.len(),
        "one agent target per node: {last:?}"
    );

    // Per-link delay and per-node membership series exist.
    let mut delay = Vec::new();
    let mut members = Vec::new();
    let found = wait_until(Duration::from_secs(30), || {
        delay = query(&prom, "lightcone_link_delay_seconds_count").unwrap_or_default();
        members = query(&prom, "lightcone_membership_members").unwrap_or_default();
        !delay.is_empty() && !members.is_empty()
    });
    assert!(
        found,
        "missing series: delay {delay:?}, membership {members:?}"
    );
    let links: std::collections::BTreeSet<&str> = delay
        .iter()
        .filter_map(|x| x["metric"]["link"].as_str())
        .collect();
    assert_eq!(
        links.len(),
        3,
        "delay series for each of the 3 links: {links:?}"
    );
    for n in &nodes {
        assert!(
            members.iter().any(|x| x["metric"]["node"] == n.as_str()),
            "no membership series of {n}: {members:?}"
        );
    }
    println!(
        "prometheus {prom}: {} targets up, {} link delay series, {} membership series",
        last.len(),
        delay.len(),
        members.len()
    );

    // Every query of the shipped Grafana dashboard is valid PromQL against this server, and
    // the panels on series every lab has are not empty.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("dashboards/grafana/lightcone.json")).unwrap(),
    )
    .unwrap();
    let must_have = [
        "sum(up{",
        "count(up{",
        "sum by (state) (lightcone_membership_members",
        "lightcone_membership_local_health",
        "histogram_quantile(0.5, sum by (link, le) (rate(lightcone_link_delay_seconds_bucket",
        "lightcone_link_configured_delay_seconds",
        "sum by (outcome) (rate(lightcone_link_packets_total",
        "lightcone_datagrams_total",
    ];
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$lab", &lab)
                .replace("$__rate_interval", "30s");
            let needed = must_have.iter().any(|m| expr.contains(m));
            let mut got = Vec::new();
            let ok = wait_until(Duration::from_secs(if needed { 20 } else { 0 }), || {
                got = query(&prom, &expr).expect("query answered");
                !needed || !got.is_empty()
            });
            assert!(ok, "panel {:?}: {expr} is empty", panel["title"]);
            checked += 1;
        }
    }
    println!("{checked} Grafana panel queries valid");

    // Crash one agent: its target goes to 0 while the others stay 1.
    lc_ok(&["fault", "crash", "b", "--lab", &lab]);
    let b_down = wait_until(Duration::from_secs(20), || {
        query(&prom, "up{job=\"lightcone_agents\",node=\"b\"}")
            .is_some_and(|r| r.len() == 1 && r[0]["value"][1] == "0")
    });
    assert!(b_down, "up{{node=\"b\"}} did not drop to 0 after a crash");

    lc_ok(&["down", &lab]);
    assert_gone(&lab);
    assert!(
        prometheus_pids(&state_dir).is_empty(),
        "prometheus still running"
    );
    assert!(ureq::get(&format!("{prom}/-/ready"))
        .timeout(Duration::from_secs(1))
        .call()
        .is_err());
}

/// The server is in the lab's ledger: when the supervisor dies without tearing down
/// (kill -9), `down` still stops Prometheus.
#[test]
fn prometheus_goes_with_down_after_supervisor_kill9() {
    require_root();
    let t = TestLab::shipped("prom9", "quickstart.yaml");
    let lab = t.lab.clone();
    t.up(&["--prometheus"]);
    let state_dir = format!("/run/lightcone/{lab}/prometheus");
    let pids = prometheus_pids(&state_dir);
    assert_eq!(pids.len(), 1, "one server for the lab");
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/lightcone/{lab}/supervisor.json")).unwrap(),
    )
    .unwrap();
    let sup = info["pid"].as_u64().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-9", &sup])
        .status()
        .unwrap()
        .success());
    assert!(wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{sup}")).exists()
    }));
    assert_eq!(
        prometheus_pids(&state_dir),
        pids,
        "prometheus outlives its supervisor until `down`"
    );
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
    assert!(
        prometheus_pids(&state_dir).is_empty(),
        "prometheus still running after down"
    );
}
