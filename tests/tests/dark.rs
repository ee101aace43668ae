//! Issue 18 (the tile runtime's kill switch), end to end: `lightcone dark` a cell of a real
//! lab on the wire engine and watch its tiles' links. Four cells of three tiles on a ring
//! of cells (13 nodes with the authority): darkening cell k1 must stop every frame leaving
//! its tiles within the bound of `core/src/update/dark.rs` (the order's flood time across
//! the cell + `DARK_GRACE`), cells k0 and k2 must still reach each other (around by k3),
//! an order signed by fewer than t authority shares, forged, or replayed (also to a tile
//! restarted since) must be refused and change nothing, and `undark` must light the cell
//! again. Needs root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lightcone_e2e::*;

const TOPOLOGY: &str = "\
name: dark
seed: 18
generate:
  layers:
    - { radius_au: 1.0, clusters: 1, cells: 4, tiles: 3, authorities: 1 }
  cell_fabric: ring
  cluster_fabric: ring
  links:
    cell: { delay: 2ms }
    cluster: { delay: 5ms }
    authority: { delay: 1ms }
";

/// The order's flood time across the darkened cell: a three-tile ring is one hop from
/// the tile that takes the order to each other tile, over a 2 ms link; the bound adds
/// `DARK_GRACE` (1 s, `core/src/update/dark.rs`).
const FLOOD: Duration = Duration::from_millis(2);
const DARK_GRACE: Duration = Duration::from_secs(1);
/// How often the test reads the wire engine's counters.
const POLL: Duration = Duration::from_millis(100);

fn get_text(url: &str) -> String {
    ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .expect("GET")
        .into_string()
        .expect("text")
}

/// Frames the wire engine took from each link direction leaving a node whose name starts
/// with `prefix` (every outcome: forwarded or dropped, a frame that left the tile), keyed
/// by `link direction`.
fn frames_leaving(api: &str, prefix: &str) -> BTreeMap<String, u64> {
    let text = get_text(&format!("{api}/metrics/links"));
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("lightcone_link_packets_total{") else {
            continue;
        };
        let (labels, v) = rest.split_once("} ").expect("sample");
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let (link, dir) = (label("link"), label("direction"));
        let (a, b) = link.split_once("--").expect("a--b");
        let from = if dir == "a_to_b" { a } else { b };
        if from.starts_with(prefix) {
            *out.entry(format!("{link} {dir}")).or_default() += v.parse::<u64>().unwrap();
        }
    }
    out
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// A node's agent metric (summed over the series of `name` whose labels hold all of
/// `with`).
fn agent_metric(api: &str, node: &str, name: &str, with: &[&str]) -> u64 {
    let text = get_text(&format!("{api}/nodes/{node}/metrics"));
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn delivered(api: &str, node: &str) -> u64 {
    agent_metric(
        api,
        node,
        "lightcone_datagrams_total",
        &["direction=\"app\"", "outcome=\"delivered\""],
    )
}

fn is_dark(api: &str, node: &str) -> bool {
    agent_metric(api, node, "lightcone_dark", &[]) == 1
}

/// The lab's supervisor: its API URL and token.
struct Api {
    url: String,
    token: String,
}

impl std::ops::Deref for Api {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

fn api_of(lab: &str) -> Api {
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).expect("supervisor.json"),
    )
    .unwrap();
    Api {
        url: info["api_url"].as_str().unwrap().to_string(),
        token: info["token"].as_str().unwrap().to_string(),
    }
}

/// Sends one overlay message `from` → `to` through the supervisor (the agent answers
/// once it is handed to the overlay).
fn send(api: &Api, from: &str, to: &str) -> bool {
    ureq::post(&format!("{}/nodes/{from}/send/{to}", api.url))
        .set("x-lightcone-token", &api.token)
        .timeout(Duration::from_secs(5))
        .send_bytes(b"hello")
        .is_ok()
}

/// Until a message `from` → `to` is delivered (one sent every 300 ms), or `within`.
fn reaches(api: &Api, from: &str, to: &str, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let before = delivered(api, to);
    while t0.elapsed() < within {
        send(api, from, to);
        std::thread::sleep(Duration::from_millis(300));
        if delivered(api, to) > before {
            return Some(t0.elapsed());
        }
    }
    None
}

/// Other members of its own cell `node` sees alive (from its `/state`; itself not listed).
fn alive_seen(api: &str, node: &str) -> usize {
    let s: serde_json::Value = ureq::get(&format!("{api}/nodes/{node}/state"))
        .timeout(Duration::from_secs(3))
        .call()
        .ok()
        .and_then(|r| r.into_json().ok())
        .unwrap_or_default();
    s["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["state"] == "alive").count())
        .unwrap_or(0)
}

#[test]
fn a_dark_cell_sends_nothing_its_neighbours_route_around_and_only_t_signers_switch_it() {
    require_root();
    let t = TestLab::from_src("dark", TOPOLOGY);
    let lab = t.lab.clone();
    let up = t.up(&[]);
    assert!(
        up.contains(
            "authorities: 3-of-5 threshold key (too few authority nodes: shares held by the lab)"
        ),
        "{up}"
    );
    let api = api_of(&lab);
    let cell = "l0c0k1";
    let tiles = ["l0c0k1t0", "l0c0k1t1", "l0c0k1t2"];

    // Keys: shares private, every agent configured with the group key.
    let keys = format!("/run/lightcone/{lab}/keys");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{keys}/authorities.json")).unwrap())
            .unwrap();
    for id in 0..5 {
        let p = format!("{keys}/authority-{id}.share");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{p} is {mode:o}");
    }
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/agents/4.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["authorities_key_hex"], rec["group_key_hex"]);

    // The cells converge and k0 reaches k2 before anything is dark.
    assert!(
        wait_until(Duration::from_secs(30), || tiles
            .iter()
            .all(|n| alive_seen(&api, n) >= 2)),
        "cell {cell} never converged"
    );
    assert!(
        reaches(&api, "l0c0k0t1", "l0c0k2t1", Duration::from_secs(20)).is_some(),
        "k0 never reached k2 with every cell lit"
    );
    // The counters see the cell's frames while it is lit (else "nothing leaves" is void).
    let lit0 = total(&frames_leaving(&api, cell));
    std::thread::sleep(Duration::from_secs(1));
    let lit1 = total(&frames_leaving(&api, cell));
    assert!(
        lit1 > lit0,
        "no frame left the lit cell in 1 s ({lit0} → {lit1})"
    );
    println!(
        "lit: {} frames left cell {cell}'s tiles in 1 s",
        lit1 - lit0
    );

    // An unknown scope: a usage error listing what exists.
    let o = lc(&["dark", "l0c0k9", "--lab", &lab]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("cells l0c0k0, l0c0k1, l0c0k2, l0c0k3; layers l0"),
        "{e}"
    );

    // Fewer than t shares: the signing step refuses; forged anyway: the agent refuses.
    let o = lc(&["dark", cell, "--lab", &lab, "--shares", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("signing refused: only 2 signers, the threshold is 3; nothing was sent"),
        "{}",
        text(&o)
    );
    let o = lc(&[
        "dark",
        cell,
        "--lab",
        &lab,
        "--shares",
        "2",
        "--deliver-anyway",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("order refused: the order is not signed by a threshold of the authorities"),
        "{}",
        text(&o)
    );
    let before = total(&frames_leaving(&api, cell));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        total(&frames_leaving(&api, cell)) > before,
        "a forged order darkened the cell"
    );
    assert!(tiles.iter().all(|n| !is_dark(&api, n)));
    let refused: u64 = tiles
        .iter()
        .map(|n| agent_metric(&api, n, "lightcone_dark_orders_refused_total", &[]))
        .sum();
    assert_eq!(
        refused, 1,
        "the forged order counted where it was delivered"
    );

    // Dark: no frame leaves the cell's tiles after the flood time + DARK_GRACE.
    let t0 = Instant::now();
    let out = lc_ok(&["dark", cell, "--lab", &lab]);
    let cli = t0.elapsed();
    println!("{}", out.trim());
    assert!(
        out.contains("dark cell l0c0k1 (3 nodes): order serial"),
        "{out}"
    );
    // A frame seen between two reads of the counters left after the first read began:
    // if that is past the bound, a frame surely left late.
    let mut read_at = t0.elapsed();
    let mut last = frames_leaving(&api, cell);
    let (mut left_after, mut seen_by) = (Duration::ZERO, Duration::ZERO);
    let watch = Instant::now();
    while watch.elapsed() < DARK_GRACE + Duration::from_secs(4) {
        std::thread::sleep(POLL);
        let at = t0.elapsed();
        let now = frames_leaving(&api, cell);
        if now != last {
            (left_after, seen_by) = (read_at, t0.elapsed());
            last = now;
        }
        read_at = at;
    }
    let bound = cli + FLOOD + DARK_GRACE;
    println!(
        "dark: the last frame left cell {cell}'s tiles between {:.3} s and {:.3} s after `lightcone dark` started (the command took {:.3} s; bound {:.3} s = command + flood {} ms + DARK_GRACE {} s; counters read every {} ms)",
        left_after.as_secs_f64(),
        seen_by.as_secs_f64(),
        cli.as_secs_f64(),
        bound.as_secs_f64(),
        FLOOD.as_millis(),
        DARK_GRACE.as_secs(),
        POLL.as_millis()
    );
    assert!(
        left_after <= bound,
        "a frame left cell {cell} after {left_after:?} (bound {bound:?})"
    );
    assert!(
        tiles.iter().all(|n| is_dark(&api, n)),
        "every tile of the cell is dark"
    );
    assert!(!is_dark(&api, "l0c0k0t0") && !is_dark(&api, "l0c0k2t0"));

    // The other cells reach each other around the dark one (k0 → k3 → k2).
    let around = reaches(&api, "l0c0k0t1", "l0c0k2t1", Duration::from_secs(20));
    println!("route around: k0 reached k2 {around:?} after the frame check");
    assert!(around.is_some(), "k0 no longer reaches k2 with k1 dark");
    assert_eq!(
        total(&frames_leaving(&api, cell)),
        total(&last),
        "the dark cell sent while the others routed around it"
    );

    // Undark lights it: frames leave again, the cell's view recovers.
    let t1 = Instant::now();
    let out = lc_ok(&["undark", cell, "--lab", &lab]);
    println!("{}", out.trim());
    assert!(
        wait_until(Duration::from_secs(5), || total(&frames_leaving(
            &api, cell
        )) > total(&last)),
        "no frame left the cell after undark"
    );
    assert!(tiles.iter().all(|n| !is_dark(&api, n)));
    let recovered = wait_until(Duration::from_secs(30), || {
        tiles.iter().all(|n| alive_seen(&api, n) >= 2)
    });
    println!(
        "undark: cell {cell} members all alive again {:.1} s after `lightcone undark`",
        t1.elapsed().as_secs_f64()
    );
    assert!(recovered, "the cell's membership did not recover");
    assert!(
        reaches(&api, "l0c0k0t1", "l0c0k1t1", Duration::from_secs(20)).is_some(),
        "k0 does not reach the lit cell again"
    );

    // A replayed dark order is refused and changes nothing.
    let o = lc(&["dark", cell, "--lab", &lab, "--replay-last"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(replayed)"),
        "{}",
        text(&o)
    );
    let before = total(&frames_leaving(&api, cell));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        total(&frames_leaving(&api, cell)) > before,
        "a replay darkened the cell"
    );
    assert!(tiles.iter().all(|n| !is_dark(&api, n)));

    // A restarted tile is told the lab's last serial: the old dark order handed to it
    // directly is still a replay.
    lc_ok(&["fault", "restart", "l0c0k1t2", "--lab", &lab]);
    assert!(
        wait_until(Duration::from_secs(10), || ureq::get(&format!(
            "{}/nodes/l0c0k1t2/metrics",
            api.url
        ))
        .timeout(Duration::from_secs(2))
        .call()
        .is_ok()),
        "the restarted tile never answered"
    );
    let o = lc(&["dark", "l0c0k1t2", "--lab", &lab, "--replay-last"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(replayed)"),
        "{}",
        text(&o)
    );
    assert!(
        !is_dark(&api, "l0c0k1t2"),
        "a replay darkened the restarted tile"
    );

    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}
