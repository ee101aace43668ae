//! Issue 5, end to end: agents in namespaces keep time through the optical hierarchy over
//! the wire engine's links, export the time metrics, and `lightcone fault clock <authority>
//! --bias …` (a compromised stratum-0) raises `lightcone_time_alarms_total` on the nodes it
//! serves — its layer's gateway directly, the cell's tiles through the gateway — while the
//! authority itself stays quiet. Needs root.
//!
//! Bound on the alarm (real time, time_scale 1, the plan's rates: one exchange per 2 s, one
//! pulsar fix per 20 s): a served node follows the bias after its step detector's 3
//! exchanges (≈ 6 s), then its next pulsar fix (≤ 20 s) disagrees. The gateway alarms
//! within ≈ 26 s, the tiles (one more hop) within ≈ 52 s; the test allows 90 s.

use std::time::{Duration, Instant};

use lightcone_e2e::*;

const TOPO: &str = "\
name: time
time_scale: 1
seed: 5
generate:
  layers:
    - { radius_au: 1.0, clusters: 1, cells: 1, tiles: 3, authorities: 1 }
  cell_fabric: star
  links:
    cell: { delay: 2ms, jitter: 100us, rate: 1Gbit }
    authority: { delay: 1ms }
";

const AUTHORITY: &str = "l0a0";
const GATEWAY: &str = "l0c0k0t0";
const TILES: [&str; 2] = ["l0c0k0t1", "l0c0k0t2"];
const ALARM_BOUND: Duration = Duration::from_secs(90);

fn api_url(lab: &str) -> String {
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).expect("supervisor.json"),
    )
    .unwrap();
    info["api_url"].as_str().unwrap().to_string()
}

fn get(url: &str) -> Option<String> {
    ureq::get(url)
        .timeout(Duration::from_secs(3))
        .call()
        .ok()?
        .into_string()
        .ok()
}

/// Value of `series{node="<node>"}` in an agent's metrics.
fn series(api: &str, node: &str, name: &str) -> Option<f64> {
    let m = get(&format!("{api}/nodes/{node}/metrics"))?;
    let prefix = format!("{name}{{node=\"{node}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn time_state(api: &str, node: &str) -> Option<serde_json::Value> {
    let s: serde_json::Value =
        serde_json::from_str(&get(&format!("{api}/nodes/{node}/state"))?).ok()?;
    Some(s["time"].clone())
}

#[test]
fn agents_export_time_and_a_biased_authority_alarms_the_nodes_it_serves() {
    require_root();
    let t = TestLab::from_src("time", TOPO);
    let lab = t.lab.clone();
    t.up(&[]);
    let api = api_url(&lab);
    let all: Vec<&str> = [AUTHORITY, GATEWAY].into_iter().chain(TILES).collect();

    // Every served node synchronizes through the hierarchy and has had a pulsar fix.
    let synced = wait_until(Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(500));
        all.iter().all(|n| {
            time_state(&api, n).is_some_and(|tv| {
                (*n == AUTHORITY || tv["source"].get("hierarchy").is_some())
                    && tv["pulsar_fixes_total"].as_u64().unwrap_or(0) >= 1
            })
        })
    });
    let states: Vec<_> = all.iter().map(|n| (n, time_state(&api, n))).collect();
    assert!(synced, "not all nodes synchronized: {states:#?}");
    for n in &all {
        for s in [
            "lightcone_time_error_seconds",
            "lightcone_time_sigma_seconds",
            "lightcone_time_coverage_ratio",
            "lightcone_time_holdover_seconds",
        ] {
            let v = series(&api, n, s);
            assert!(v.is_some_and(f64::is_finite), "{n}: {s} = {v:?}");
        }
        assert_eq!(
            series(&api, n, "lightcone_time_alarms_total"),
            Some(0.0),
            "{n}: no alarm without a fault"
        );
    }
    let tile = time_state(&api, TILES[0]).unwrap();
    eprintln!("tile before the fault: {tile}");
    assert_eq!(
        tile["stratum"], 2,
        "tile follows the stratum-1 gateway: {tile}"
    );
    // The claimed σ covers the measured error (the error is real: ground truth is the
    // shared host clock, so this is the lab's scheduling noise, not a model's).
    let (err, sigma) = (
        tile["true_error_s"].as_f64().unwrap(),
        tile["sigma_s"].as_f64().unwrap(),
    );
    assert!(
        err.abs() <= 3.0 * sigma,
        "tile error {err} vs 3σ {}",
        3.0 * sigma
    );

    // Clear errors for bad requests.
    let o = lc(&["fault", "clock", "nosuch", "--lab", &lab, "--bias", "1ms"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no node \"nosuch\""));
    let o = lc(&["fault", "clock", AUTHORITY, "--lab", &lab, "--bias", "5s"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("out of range"));

    // The supervisor route is token-checked like every POST /api, and checks the body.
    let url = format!("{api}/api/nodes/{AUTHORITY}/clock");
    match ureq::post(&url).send_json(serde_json::json!({"serve_bias_ns": 1e6})) {
        Err(ureq::Error::Status(code, _)) => assert!(code == 401 || code == 403, "{code}"),
        other => panic!("clock fault without token: {other:?}"),
    }
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).unwrap(),
    )
    .unwrap();
    let token = info["token"].as_str().unwrap();
    match ureq::post(&url)
        .set("x-lightcone-token", token)
        .send_json(serde_json::json!({"serve_bias_ns": 1e6, "step_ns": 1}))
    {
        Err(ureq::Error::Status(400, r)) => {
            let t = r.into_string().unwrap();
            assert!(t.contains("exactly one"), "{t}");
        }
        other => panic!("two faults at once: {other:?}"),
    }
    assert_eq!(
        series(&api, AUTHORITY, "lightcone_time_alarms_total"),
        Some(0.0),
        "refused requests changed nothing"
    );

    // A compromised stratum-0: it serves time 20 ms off while its own clock is fine.
    let out = lc_ok(&["fault", "clock", AUTHORITY, "--lab", &lab, "--bias", "20ms"]);
    assert!(out.contains("serve_bias"), "{out}");
    let start = Instant::now();
    let served = [GATEWAY, TILES[0], TILES[1]];
    let mut first: Vec<Option<Duration>> = vec![None; served.len()];
    let all_alarmed = wait_until(ALARM_BOUND, || {
        std::thread::sleep(Duration::from_millis(250));
        for (i, n) in served.iter().enumerate() {
            if first[i].is_none()
                && series(&api, n, "lightcone_time_alarms_total").is_some_and(|v| v >= 1.0)
            {
                first[i] = Some(start.elapsed());
            }
        }
        first.iter().all(Option::is_some)
    });
    eprintln!(
        "alarm after: {:?}",
        served.iter().zip(&first).collect::<Vec<_>>()
    );
    assert!(
        all_alarmed,
        "not every served node alarmed within {ALARM_BOUND:?}: {:?}",
        served.iter().zip(&first).collect::<Vec<_>>()
    );
    assert_eq!(
        series(&api, AUTHORITY, "lightcone_time_alarms_total"),
        Some(0.0),
        "the authority's own clock is fine"
    );
    let tile = time_state(&api, TILES[0]).unwrap();
    eprintln!("tile after the fault: {tile}");
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}
