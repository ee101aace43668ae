//! Issue: node agent, end to end. Agents in real namespaces over the wire engine: views
//! converge, a crashed tile is declared dead by every cell peer within the spec's 10 s,
//! and a key written at one tile is read at another. Needs root.

use std::process::Command;
use std::time::{Duration, Instant};

use lightcone_e2e::*;

/// GET an agent's `/state` through the supervisor's per-node proxy.
fn state(api: &str, node: &str) -> Option<serde_json::Value> {
    ureq::get(&format!("{api}/nodes/{node}/state"))
        .timeout(Duration::from_secs(3))
        .call()
        .ok()?
        .into_json()
        .ok()
}

fn api_url(lab: &str) -> String {
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/lightcone/{lab}/supervisor.json")).expect("supervisor.json"),
    )
    .unwrap();
    info["api_url"].as_str().unwrap().to_string()
}

/// States of `member` (by node id) as seen by `node`.
fn view_of(api: &str, node: &str, member: u64) -> Option<String> {
    let s = state(api, node)?;
    s["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"].as_u64() == Some(member))
        .and_then(|m| m["state"].as_str().map(String::from))
}

fn node_ids(lab: &str) -> Vec<(String, u64)> {
    let js: serde_json::Value = serde_json::from_str(&lc_ok(&["status", lab, "--json"])).unwrap();
    js["labs"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, n)| (n["name"].as_str().unwrap().to_string(), i as u64))
        .collect()
}

/// Talk to an agent's unix control socket directly (the agent's own API).
fn agent_http(lab: &str, id: u64, method: &str, path: &str, body: &str) -> (bool, String) {
    lightcone_e2e::agent_request(lab, id, method, path, body)
}

/// The shipped twelve-tile cell up as a test lab: the lab, its API and its tiles (name, id).
fn cell_lab(tag: &str) -> (TestLab, String, Vec<(String, u64)>) {
    let t = TestLab::shipped(tag, "cell.yaml");
    t.up(&[]);
    let api = api_url(&t.lab);
    let tiles: Vec<(String, u64)> = node_ids(&t.lab)
        .into_iter()
        .filter(|(n, _)| n.starts_with("l0c0k0t"))
        .collect();
    assert_eq!(tiles.len(), 12);
    (t, api, tiles)
}

#[test]
fn cell_agents_converge_detect_a_crash_and_replicate_keys() {
    require_root();
    let (t, api, tiles) = cell_lab("cell");
    let lab = t.lab.clone();

    // Every tile sees every other tile of its cell alive.
    let converged = wait_until(Duration::from_secs(30), || {
        tiles.iter().all(|(n, _)| {
            tiles
                .iter()
                .filter(|(m, _)| m != n)
                .all(|(_, mid)| view_of(&api, n, *mid).as_deref() == Some("alive"))
        })
    });
    assert!(converged, "cell views did not converge within 30 s");

    // A key written at one tile is read at another.
    let (w, wid) = &tiles[1];
    let (r, rid) = &tiles[7];
    let (ok, _) = agent_http(&lab, *wid, "POST", "/kv/e2e-key", "light-cone");
    assert!(ok, "put at {w} failed");
    // Without a capability the agent refuses a write (issue 17): 401, nothing written.
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args([
            "--unix-socket",
            &format!("/run/lightcone/{lab}/agents/{wid}.sock"),
        ])
        .args([
            "-X",
            "POST",
            "--data-binary",
            "x",
            "http://agent/kv/e2e-nocap",
        ])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "401",
        "a write without a token"
    );
    assert!(!agent_http(&lab, *wid, "GET", "/kv/e2e-nocap", "").0);
    let seen = wait_until(Duration::from_secs(15), || {
        agent_http(&lab, *rid, "GET", "/kv/e2e-key", "")
            .1
            .contains("light-cone")
    });
    assert!(seen, "key written at {w} never read at {r}");

    // Crash one tile: every other tile marks it dead within 10 s (time_scale 1).
    let (victim, vid) = tiles[5].clone();
    let t0 = Instant::now();
    lc_ok(&["fault", "crash", &victim, "--lab", &lab]);
    let mut marked: Vec<(String, f64)> = Vec::new();
    let deadline = t0 + Duration::from_secs(20);
    let mut pending: Vec<String> = tiles
        .iter()
        .filter(|(n, _)| *n != victim)
        .map(|(n, _)| n.clone())
        .collect();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|n| {
            if view_of(&api, n, vid).as_deref() == Some("dead") {
                marked.push((n.clone(), t0.elapsed().as_secs_f64()));
                false
            } else {
                true
            }
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        pending.is_empty(),
        "never marked {victim} dead: {pending:?}"
    );
    let worst = marked.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    println!("detection of {victim}: worst peer after {worst:.2} s real (time_scale 1)");
    // The lab's scrape says which agent it is missing, not silently.
    let metrics = ureq::get(&format!("{api}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for (n, _) in &tiles {
        let want = if *n == victim { 0 } else { 1 };
        let line = format!("lightcone_agent_scrape_ok{{node=\"{n}\"}} {want}\n");
        assert!(metrics.contains(&line), "no `{}` in /metrics", line.trim());
    }
    assert!(
        worst <= 10.0,
        "a peer took {worst:.2} s to mark {victim} dead; the spec wants < 10 s"
    );

    // Restart: it comes back alive in its peers' views.
    lc_ok(&["fault", "restart", &victim, "--lab", &lab]);
    let back = wait_until(Duration::from_secs(30), || {
        tiles
            .iter()
            .filter(|(n, _)| *n != victim)
            .all(|(n, _)| view_of(&api, n, vid).as_deref() == Some("alive"))
    });
    assert!(back, "{victim} not alive again after restart");

    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

/// `lightcone fault byzantine` on a running lab: bad requests are refused with what to fix
/// and change nothing; a black hole is quarantined by every other tile of its cell (and
/// no honest tile is), and shows up in its own `/state` and in the watch's metrics.
#[test]
fn a_byzantine_tile_is_quarantined_by_its_cell() {
    require_root();
    let (t, api, tiles) = cell_lab("byz");
    let lab = t.lab.clone();
    let (byz, bid) = tiles[4].clone();

    let o = lc(&[
        "fault",
        "byzantine",
        "nosuch",
        "--lab",
        &lab,
        "--behaviour",
        "drop_forwarding",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no node \"nosuch\""));
    let o = lc(&[
        "fault",
        "byzantine",
        &byz,
        "--lab",
        &lab,
        "--behaviour",
        "eat_cake",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("eat_cake") && e.contains("lie_membership"),
        "{e}"
    );
    let (ok, _) = agent_http(&lab, bid, "POST", "/byzantine", "{\"behaviour\": 3}");
    assert!(!ok, "the agent took a malformed byzantine request");
    assert_eq!(
        state(&api, &byz).unwrap()["byzantine"],
        serde_json::json!([])
    );

    let out = lc_ok(&[
        "fault",
        "byzantine",
        &byz,
        "--lab",
        &lab,
        "--behaviour",
        "drop_forwarding",
    ]);
    assert!(out.contains("drop_forwarding"), "{out}");
    assert_eq!(
        state(&api, &byz).unwrap()["byzantine"],
        serde_json::json!(["drop_forwarding"])
    );
    let t0 = Instant::now();
    let quarantined = |n: &str| {
        state(&api, n).is_some_and(|s| {
            s["quarantine"]
                .as_array()
                .is_some_and(|q| q.iter().any(|x| x.as_u64() == Some(bid)))
        })
    };
    let all = wait_until(Duration::from_secs(60), || {
        tiles
            .iter()
            .filter(|(n, _)| *n != byz)
            .all(|(n, _)| quarantined(n))
    });
    assert!(all, "not every tile quarantined the black hole {byz}");
    println!(
        "black hole {byz} quarantined by all {} cell peers after {:.1} s real",
        tiles.len() - 1,
        t0.elapsed().as_secs_f64()
    );
    for (n, _) in tiles.iter().filter(|(n, _)| *n != byz) {
        let s = state(&api, n).unwrap();
        assert_eq!(
            s["quarantine"],
            serde_json::json!([bid]),
            "{n} quarantines an honest tile"
        );
    }
    let metrics = ureq::get(&format!("{api}/nodes/{}/metrics", tiles[3].0))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lightcone_watch_quarantined_nodes{") && l.ends_with(" 1")),
        "{metrics}"
    );
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

#[test]
fn quickstart_agents_see_each_other_and_export_metrics() {
    require_root();
    let t = TestLab::shipped("qsag", "quickstart.yaml");
    let lab = t.lab.clone();
    t.up(&[]);
    let api = api_url(&lab);
    let ok = wait_until(Duration::from_secs(30), || {
        ["a", "b", "c"].iter().all(|n| {
            [0u64, 1, 2]
                .iter()
                .filter(|&&m| ["a", "b", "c"][m as usize] != *n)
                .all(|&m| view_of(&api, n, m).as_deref() == Some("alive"))
        })
    });
    assert!(ok, "quickstart views did not converge");
    let metrics = ureq::get(&format!("{api}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for series in [
        "lightcone_membership_members{",
        "lightcone_locality_bytes_total{",
        "lightcone_timer_lateness_seconds_bucket{",
        "lightcone_link_packets_total{",
        "lightcone_link_delay_seconds_bucket{",
        "lightcone_agent_scrape_ok{node=\"a\"} 1\n",
    ] {
        assert!(metrics.contains(series), "no {series} in /metrics");
    }
    for n in ["a", "b", "c"] {
        assert!(
            metrics.contains(&format!("node=\"{n}\"")),
            "no series for node {n}"
        );
    }
    lc_ok(&["down", &lab]);
    assert_gone(&lab);
}

/// One raw HTTP/1.1 exchange with the supervisor (`Connection: close`): status and body.
/// Raw so the test controls `Host` and `Origin` exactly, as a browser or an attacker would.
fn raw_http(port: u16, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{head}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn mode_of(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Issue 11 item 12 and the kv/slow-header bullets of item 13, against a real supervisor:
/// every state-changing route needs the token (kv writes and overlay sends took none),
/// requests under another Host (DNS rebinding) or from another Origin are refused, keys
/// with URL characters stay keys, the lab's secrets are random and root's only, and a
/// connection that sends half a request head is closed.
#[test]
fn control_surfaces_check_token_host_and_origin() {
    require_root();
    let t = TestLab::shipped("ctlsurf", "quickstart.yaml");
    t.up(&[]);
    let dir = std::path::PathBuf::from(format!("/run/lightcone/{}", t.lab));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("supervisor.json")).unwrap()).unwrap();
    let token = info["token"].as_str().unwrap().to_string();
    let port: u16 = info["api_url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let host = format!("Host: 127.0.0.1:{port}");
    let with_token = format!("{host}\r\nx-lightcone-token: {token}");

    // A text/plain POST any web page can send without a preflight: refused without the token.
    for path in ["/nodes/a/kv/k1", "/nodes/a/send/b"] {
        let (st, body) = raw_http(
            port,
            &format!("POST {path} HTTP/1.1\r\n{host}\r\nContent-Type: text/plain"),
            "x",
        );
        assert_eq!(st, 401, "POST {path} without token: {body}");
        assert!(body.contains("x-lightcone-token"), "{body}");
    }
    let (st, body) = raw_http(
        port,
        &format!("POST /nodes/a/kv/k1 HTTP/1.1\r\n{with_token}"),
        "v1",
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = raw_http(port, &format!("GET /nodes/b/kv/k1 HTTP/1.1\r\n{host}"), "");
    assert!(st == 200 || st == 404, "{st} {body}");

    // DNS rebinding: our page (which embeds the token) under another name is refused.
    let (st, body) = raw_http(port, "GET / HTTP/1.1\r\nHost: rebind.example:80", "");
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("not this supervisor's address"), "{body}");
    assert!(!body.contains(&token));
    let (st, _) = raw_http(
        port,
        &format!("GET / HTTP/1.1\r\nHost: localhost:{port}"),
        "",
    );
    assert_eq!(st, 200);
    // Another origin is refused even with the token.
    let (st, body) = raw_http(
        port,
        &format!("POST /api/nodes/b/crash HTTP/1.1\r\n{with_token}\r\nOrigin: http://evil.example"),
        "{}",
    );
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("cross-origin"), "{body}");

    // `x%3Fcontext` is the key `x?context`, not key `x` with the context flag.
    let (st, body) = raw_http(
        port,
        &format!("POST /nodes/a/kv/x%3Fcontext HTTP/1.1\r\n{with_token}"),
        "q",
    );
    assert_eq!(
        (st, body.trim()),
        (200, "ok"),
        "written as key x with ?context"
    );
    for (enc, value) in [
        ("x%3Fcontext", "q"),
        ("a%23b", "h"),
        ("p%25", "pc"),
        ("s%2Ft", "sl"),
        ("sp%20ace", "sp"),
    ] {
        if value != "q" {
            let (st, body) = raw_http(
                port,
                &format!("POST /nodes/a/kv/{enc} HTTP/1.1\r\n{with_token}"),
                value,
            );
            assert_eq!(st, 200, "{enc}: {body}");
        }
        let (st, body) = raw_http(
            port,
            &format!("GET /nodes/a/kv/{enc} HTTP/1.1\r\n{host}"),
            "",
        );
        assert_eq!((st, body.as_str()), (200, value), "{enc}");
    }
    let (st, _) = raw_http(port, &format!("GET /nodes/a/kv/x HTTP/1.1\r\n{host}"), "");
    assert_eq!(st, 404, "key x was written");

    // Secrets: random per lab, root's only; configs and the plan hold none.
    assert_eq!(mode_of(&dir.join("supervisor.json")), 0o600);
    assert_eq!(mode_of(&dir.join("keys")), 0o700);
    for id in 0..3 {
        assert_eq!(mode_of(&dir.join(format!("keys/{id}.key"))), 0o600);
        assert_eq!(mode_of(&dir.join(format!("agents/{id}.sock"))), 0o600);
        let cfg = std::fs::read_to_string(dir.join(format!("agents/{id}.json"))).unwrap();
        assert!(
            !cfg.contains("secret_key_hex"),
            "agent {id} config holds its secret"
        );
        let key = std::fs::read_to_string(dir.join(format!("keys/{id}.key"))).unwrap();
        assert!(!std::fs::read_to_string(dir.join("plan.json"))
            .unwrap()
            .contains(key.trim()));
    }

    // Half a request head, then silence: closed within the header timeout (10 s).
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(format!("GET / HTTP/1.1\r\n{host}\r\nX-Slow: ").as_bytes())
            .unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 256];
        let closed = loop {
            match c.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        };
        let waited = t0.elapsed();
        assert!(
            closed && waited < Duration::from_secs(12),
            "open after {waited:?}"
        );
    }
    lc_ok(&["down", &t.lab]);
    assert_gone(&t.lab);
}

/// A kv write to node `id`'s agent with `token` (over its control socket, curl): the HTTP
/// status and the body.
fn write_with(lab: &str, id: usize, key: &str, token: &str) -> (String, String) {
    let o = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "5"])
        .args([
            "--unix-socket",
            &format!("/run/lightcone/{lab}/agents/{id}.sock"),
        ])
        .args(["-X", "POST", "--data-binary", "x"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://agent/kv/{key}"))
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.to_string(), body.to_string())
}

/// Issue 17: a revocation outlives a restart. A token revoked with `lightcone token revoke`
/// is refused by the agents running then, and by an agent crashed and restarted after the
/// revocation (the lab keeps its revocation ids and configures every agent it starts with
/// them; before, a restarted agent accepted the revoked token until it expired).
#[test]
fn a_revoked_token_is_refused_by_an_agent_restarted_after_the_revocation() {
    require_root();
    let t = TestLab::shipped("revk", "quickstart.yaml");
    t.up(&[]);
    let token = lc_ok(&[
        "token", "mint", "--lab", &t.lab, "--op", "kv-write", "--ttl", "600s",
    ])
    .trim()
    .to_string();
    let (code, body) = write_with(&t.lab, 1, "before", &token);
    assert_eq!(code, "200", "a valid token: {body}");
    let out = lc_ok(&["token", "revoke", "--lab", &t.lab, &token]);
    assert!(
        out.contains("\"agents\":3") && out.contains("\"unreachable\":[]"),
        "{out}"
    );
    let (code, body) = write_with(&t.lab, 1, "revoked", &token);
    assert_eq!(code, "401", "revoked at a running agent: {body}");
    assert!(body.contains("revoked"), "{body}");
    lc_ok(&["fault", "crash", "--lab", &t.lab, "b"]);
    lc_ok(&["fault", "restart", "--lab", &t.lab, "b"]);
    let sock = format!("/run/lightcone/{}/agents/1.sock", t.lab);
    assert!(
        wait_until(Duration::from_secs(10), || std::path::Path::new(&sock)
            .exists()),
        "b's agent never came back"
    );
    let (code, body) = write_with(&t.lab, 1, "after-restart", &token);
    assert_eq!(code, "401", "revoked at the restarted agent: {body}");
    assert!(body.contains("revoked"), "{body}");
    // A fresh token still works there: the restarted agent refuses only what was revoked.
    let fresh = lc_ok(&[
        "token", "mint", "--lab", &t.lab, "--op", "kv-write", "--ttl", "60s",
    ]);
    let (code, body) = write_with(&t.lab, 1, "fresh", fresh.trim());
    assert_eq!(code, "200", "a fresh token at the restarted agent: {body}");
    lc_ok(&["down", &t.lab]);
    assert_gone(&t.lab);
}
