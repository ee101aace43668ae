//! Issue 11, items 9 and 10: links of light-time length. Neighbours are known from the
//! plan (no ARP crosses an emulated link), so the first datagram over a 10 s link gets
//! through; `probe` waits for the configured round trip before it counts a probe lost.
//! Real kernel, real binaries; needs root.

use std::time::Duration;

use lightcone_e2e::*;

/// Two nodes 1 AU apart: 499.005 s of light each way, emulated.
fn one_au(time_scale: u32) -> String {
    format!(
        "name: x\ntime_scale: {time_scale}\nnodes:\n  a: {{position: [0, 0, 0]}}\n  b: {{position: [1, 0, 0]}}\nlinks:\n  - endpoints: [a, b]\n    delay: auto\n"
    )
}

/// A sample of the lab's `/metrics`: the first series of family `name` that has every
/// label pair in `labels` (written `key="value"`).
fn metric(lab: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let js: serde_json::Value = serde_json::from_str(&lc_ok(&["status", lab, "--json"])).ok()?;
    let url = js["labs"][0]["metrics_url"].as_str()?.to_string();
    let text = ureq::get(&url)
        .timeout(Duration::from_secs(10))
        .call()
        .ok()?
        .into_string()
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn neighbours_are_permanent_entries_with_planned_macs() {
    require_root();
    let t = TestLab::from_src("neigh", &one_au(1000));
    t.up(&["--no-agents"]);
    let link = lc_ok(&[
        "exec", "--lab", &t.lab, "a", "--", "ip", "-o", "link", "show", "eth1",
    ]);
    assert!(link.contains("link/ether 02:6c:c6:12:00:00"), "{link}");
    let neigh = lc_ok(&[
        "exec", "--lab", &t.lab, "a", "--", "ip", "neigh", "show", "dev", "eth1",
    ]);
    assert!(
        neigh.contains("198.18.0.1 lladdr 02:6c:c6:12:00:01 PERMANENT"),
        "a's neighbour on eth1: {neigh}"
    );
    let neigh = lc_ok(&[
        "exec", "--lab", &t.lab, "b", "--", "ip", "neigh", "show", "dev", "eth1",
    ]);
    assert!(
        neigh.contains("198.18.0.0 lladdr 02:6c:c6:12:00:00 PERMANENT"),
        "b's neighbour on eth1: {neigh}"
    );
}

#[test]
fn first_ping_over_one_au_at_time_scale_100_returns_after_the_configured_rtt() {
    require_root();
    let t = TestLab::from_src("au100", &one_au(100));
    t.up(&["--no-agents"]);
    let ping = lc(&[
        "exec",
        "--lab",
        &t.lab,
        "a",
        "--",
        "ping",
        "-n",
        "-c",
        "1",
        "-W",
        "30",
        "198.18.0.1",
    ]);
    let text = String::from_utf8_lossy(&ping.stdout).into_owned();
    assert!(
        ping.status.success(),
        "first ping over 1 AU (time_scale 100) failed:\n{text}{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    let rtt_ms: f64 = text
        .split("time=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("ping reply time");
    // 2 × 499.004784 s / 100
    let configured_ms = 2.0 * 499_004.784 / 100.0;
    println!("first ping over 1 AU at time_scale 100: RTT {rtt_ms} ms (configured {configured_ms:.1} ms)");
    assert!(
        (configured_ms - 5.0..configured_ms + 300.0).contains(&rtt_ms),
        "RTT {rtt_ms} ms, configured {configured_ms:.1} ms"
    );
    // Nothing but the echo request and its reply crossed the link: no ARP.
    for dir in ["a_to_b", "b_to_a"] {
        let fwd = metric(
            &t.lab,
            "lightcone_link_packets_total",
            &[
                &format!("direction=\"{dir}\""),
                "link=\"a--b\"",
                "outcome=\"forwarded\"",
            ],
        );
        assert_eq!(fwd, Some(1.0), "frames forwarded {dir}");
    }
}

#[test]
fn probe_on_a_one_second_link_waits_for_the_replies() {
    require_root();
    // 1 AU at time_scale 1000: 998 ms round trip. Five probes are sent within 50 ms; the
    // first reply can only be back after 998 ms.
    let t = TestLab::from_src("probe", &one_au(1000));
    t.up(&["--no-agents"]);
    let out = lc_ok(&[
        "probe",
        "--lab",
        &t.lab,
        "a",
        "b",
        "--count",
        "5",
        "--interval",
        "10ms",
        "--json",
    ]);
    println!("probe over 1 AU at time_scale 1000: {out}");
    let js: serde_json::Value = serde_json::from_str(&out).expect("probe json");
    assert_eq!(js["sent"], 5);
    let loss = js["measured"]["loss"].as_f64().expect("loss");
    assert!(loss < 0.01, "loss {loss} on a working 998 ms link: {out}");
    let rtt = js["measured"]["rtt_mean_s"].as_f64().expect("rtt");
    assert!((0.99..1.3).contains(&rtt), "rtt {rtt} s: {out}");
}
