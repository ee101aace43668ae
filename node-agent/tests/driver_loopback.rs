//! The tokio driver over real UDP on loopback (127.0.0.1 ↔ 127.0.0.2) and its HTTP API on
//! unix sockets. No root needed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{http, http_with, operator};
use lightcone_core::config::AgentConfig;

fn configs(dir: &Path, port: u16) -> Vec<AgentConfig> {
    common::pair_configs(dir, port, "loop", "", None)
}

#[test]
fn two_agents_over_loopback_udp() {
    let dir = std::env::temp_dir().join(format!("lc-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let mut cfgs = configs(&dir, port);
    // a reads its key from a 0600 file, as agents in a lab do; b has it inline.
    let key_file = dir.join("a.key");
    common::write_private(&key_file, cfgs[0].secret_key_hex.as_bytes());
    cfgs[0].secret_key_hex.clear();
    cfgs[0].secret_key_file = Some(key_file);
    common::run_pair(&cfgs, Duration::from_secs(30), |sa, sb| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Wait (real ≤ 5 s = 10 s emulated) for each to see the other, with a route.
        let mut ok = false;
        for _ in 0..50 {
            let (st, body) = http(&sa, "GET", "/state", "").await;
            assert_eq!(st, 200);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let alive = v["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == 1 && m["state"] == "alive"));
            let routed = v["routes"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["dest"] == "node:1"));
            let acks = v["counters"]["datagrams.rx.ok"].as_u64().unwrap_or(0);
            if alive && routed && acks > 5 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "agent a never saw b alive with a route");
        let (st, m) = http(&sa, "GET", "/metrics", "").await;
        assert_eq!(st, 200);
        assert!(
            m.contains(r#"lightcone_membership_members{node="a",state="alive"} 2"#),
            "{m}"
        );
        assert!(m.contains("lightcone_timer_lateness_seconds_bucket"), "{m}");
        assert!(
                m.contains(
                    r#"lightcone_locality_bytes_total{class="protocol",level="cell",node="a",scope="local"}"#
                ),
                "{m}"
            );
        assert!(
            m.contains(r#"lightcone_datagrams_total{direction="rx",node="a",outcome="ok"}"#),
            "{m}"
        );
        // b synchronizes to the authority a over real UDP: time exchanges accepted, the
        // time series exported, the /state time section filled.
        let mut tv = serde_json::Value::Null;
        for _ in 0..60 {
            let (_, body) = http(&sb, "GET", "/state", "").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            tv = v["time"].clone();
            if tv["responses_accepted"].as_u64().unwrap_or(0) >= 10 && tv["source"].is_object() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(tv["role"], "cell", "{tv}");
        assert_eq!(tv["servers"], serde_json::json!([0]), "{tv}");
        assert_eq!(
            tv["source"],
            serde_json::json!({"hierarchy": {"stratum": 1}}),
            "{tv}"
        );
        assert!(
            tv["sigma_s"].as_f64().is_some_and(|s| s > 0.0 && s < 1.0),
            "{tv}"
        );
        let (_, m) = http(&sb, "GET", "/metrics", "").await;
        for series in [
            r#"lightcone_time_error_seconds{node="b"}"#,
            r#"lightcone_time_sigma_seconds{node="b"}"#,
            r#"lightcone_time_coverage_ratio{node="b"}"#,
            r#"lightcone_time_holdover_seconds{node="b"}"#,
            r#"lightcone_time_alarms_total{node="b"} 0"#,
        ] {
            assert!(m.contains(series), "{series} missing:\n{m}");
        }
        // Clock faults through the API: bad bodies say why, good ones are applied.
        let (st, msg) = http(&sa, "POST", "/clock", "{\"step\": 1}").await;
        assert_eq!(st, 400, "{msg}");
        assert!(msg.contains("step_ns"), "{msg}");
        let (st, msg) = http(&sa, "POST", "/clock", "{\"serve_bias_ns\": 5e9}").await;
        assert_eq!((st, msg.contains("out of range")), (400, true), "{msg}");
        let (st, msg) = http(&sb, "POST", "/clock", "{\"step_ns\": 1000000}").await;
        assert_eq!(st, 200, "{msg}");
        let (_, body) = http(&sb, "GET", "/state", "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["time"]["faults"],
            serde_json::json!([{"step": {"offset_s": 0.001}}])
        );
        // Only the owner may drive an agent through its control socket.
        {
            use std::os::unix::fs::PermissionsExt;
            for s in [&sa, &sb] {
                let mode = std::fs::metadata(s).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", s.display());
            }
        }
        // Keys holding URL characters travel percent-encoded and are decoded once:
        // `x%3Fcontext` is the key `x?context`, not `x` with the context flag.
        for (key, enc) in [
            ("x?context", "x%3Fcontext"),
            ("a#b", "a%23b"),
            ("100%", "100%25"),
            ("a/b", "a%2Fb"),
            ("with space", "with%20space"),
        ] {
            let (st, body) = http(&sa, "POST", &format!("/kv/{enc}"), key).await;
            assert_eq!((st, body.trim()), (200, "ok"), "{key}");
            let (st, body) = http(&sa, "GET", &format!("/kv/{enc}"), "").await;
            assert_eq!((st, body.as_str()), (200, key), "{key}");
        }
        let (st, _) = http(&sa, "GET", "/kv/x", "").await;
        assert_eq!(st, 404, "`x%3Fcontext` wrote key x");
        let (st, msg) = http(&sa, "GET", "/kv/bad%zz", "").await;
        assert_eq!(st, 400, "{msg}");
        assert!(msg.contains("percent-encoding"), "{msg}");
        // A key written at a is read at b.
        let (st, _) = http(&sa, "POST", "/kv/greeting", "hello").await;
        assert_eq!(st, 200);
        let mut got = (0, String::new());
        for _ in 0..30 {
            got = http(&sb, "GET", "/kv/greeting", "").await;
            if got.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(got, (200, "hello".to_string()));
        // Durability levels: named in the answer with the holders; a bad one is refused.
        let (st, body) = http(
            &sa,
            "POST",
            "/kv/greeting?context&durability=local",
            "again",
        )
        .await;
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (&v["durability"], &v["holders"]),
            (&serde_json::json!("local"), &serde_json::json!([0])),
            "{v}"
        );
        assert!(v["dot"].is_object(), "{v}");
        let (st, msg) = http(&sa, "POST", "/kv/greeting?durability=disk", "x").await;
        assert_eq!((st, msg.contains("local or cell")), (400, true), "{msg}");
        let (st, body) = http(&sa, "GET", "/kv/greeting?siblings", "").await;
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["siblings"], serde_json::json!(["again"]), "{v}");
        assert_eq!(v["dots"].as_array().map(Vec::len), Some(1), "{v}");
        assert!(v["context"].is_object(), "{v}");
        let (st, _) = http(&sb, "GET", "/kv/absent", "").await;
        assert_eq!(st, 404);
        let (st, _) = http(&sa, "GET", "/nope", "").await;
        assert_eq!(st, 404);
        let (st, _) = http(&sa, "POST", "/quarantine/zz", "").await;
        assert_eq!(st, 404);
        let (st, _) = http(&sa, "POST", "/quarantine/b", "").await;
        assert_eq!(st, 200);
        let (_, body) = http(&sa, "GET", "/state", "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["quarantine"], serde_json::json!([1]));
        let (st, _) = http(&sa, "POST", "/shutdown", "").await;
        assert_eq!(st, 200);
        let (st, _) = http(&sb, "POST", "/shutdown", "").await;
        assert_eq!(st, 200);
    });
    assert!(!cfgs[0].control_socket.exists(), "socket removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key file others can read is refused: a key they can read lets them sign as the node.
#[test]
fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("lc-agent-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = configs(&dir, 1).remove(0);
    let p = dir.join("open.key");
    std::fs::write(&p, &cfg.secret_key_hex).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    cfg.secret_key_hex.clear();
    cfg.secret_key_file = Some(p);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(lightcone_agent::driver::run(cfg, std::future::pending()))
        .unwrap_err();
    assert!(e.to_string().contains("must be 0600"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 17, item 3: a write with a valid capability succeeds; an expired, out-of-scope
/// (key prefix, node), forged-root, missing and revoked one is refused with its reason
/// (401/403), counted in `lightcone_capability_refused_total`, and writes nothing.
#[test]
fn writes_need_a_valid_capability_and_refusals_change_nothing() {
    use lightcone_agent::caps::{revocation_ids, Caveats, Op, OperatorKey};
    use std::time::SystemTime;
    let dir = std::env::temp_dir().join(format!("lc-agent-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = 20_000 + ((std::process::id() + 7_919) % 20_000) as u16;
    let cfg = configs(&dir, port).remove(0);
    let sock = cfg.control_socket.clone();
    let op = operator();
    let now = SystemTime::now();
    let kv = |scope: Option<&str>, node: Option<u32>, expires: SystemTime| Caveats {
        op: Some(Op::KvWrite),
        scope: scope.map(String::from),
        node,
        expires: Some(expires),
    };
    let later = now + Duration::from_secs(60);
    let valid = op.mint(&kv(Some("app/"), Some(0), later)).unwrap();
    let expired = op
        .mint(&kv(Some("app/"), Some(0), now - Duration::from_secs(5)))
        .unwrap();
    let other_node = op.mint(&kv(Some("app/"), Some(1), later)).unwrap();
    let forged = OperatorKey::from_seed(&[78; 32])
        .unwrap()
        .mint(&kv(None, None, later))
        .unwrap();
    let to_revoke = op.mint(&kv(Some("app/"), None, later)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = lightcone_agent::driver::run(cfg.clone(), std::future::pending());
        let client = async move {
            for _ in 0..50 {
                if tokio::net::UnixStream::connect(&sock).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let put = |key: &'static str, token: Option<String>| {
                let sock = sock.clone();
                async move {
                    http_with(
                        &sock,
                        "POST",
                        &format!("/kv/{key}?durability=local"),
                        "v",
                        token.as_deref(),
                    )
                    .await
                }
            };
            let absent = |key: &'static str| {
                let sock = sock.clone();
                async move {
                    let (st, _) = http(&sock, "GET", &format!("/kv/{key}"), "").await;
                    assert_eq!(st, 404, "a refused write wrote {key}");
                }
            };
            // Valid: written.
            let (st, body) = put("app%2Fok", Some(valid.clone())).await;
            assert_eq!((st, body.trim()), (200, "ok"), "{body}");
            let (st, body) = http(&sock, "GET", "/kv/app%2Fok", "").await;
            assert_eq!((st, body.as_str()), (200, "v"));
            // Each refusal: status, words, nothing written.
            let cases: [(&str, Option<String>, u16, &str); 6] = [
                ("app%2Fexp", Some(expired), 401, "capability expired"),
                (
                    "etc%2Fscope",
                    Some(valid.clone()),
                    403,
                    "does not allow kv-write",
                ),
                ("app%2Fnode", Some(other_node), 403, "node(1)"),
                (
                    "app%2Fforged",
                    Some(forged),
                    401,
                    "not issued by this lab's operator key",
                ),
                ("app%2Fmissing", None, 401, "no capability"),
                (
                    "app%2Fjunk",
                    Some("not-a-token".into()),
                    401,
                    "malformed capability",
                ),
            ];
            for (key, token, status, words) in cases {
                let (st, body) = put(key, token).await;
                assert_eq!(st, status, "{key}: {body}");
                assert!(body.contains(words), "{key}: {body}");
                absent(key).await;
            }
            // Revocation: good before, refused after; its attenuations too.
            let (st, _) = put("app%2Fbefore", Some(to_revoke.clone())).await;
            assert_eq!(st, 200);
            let ids = revocation_ids(&to_revoke, &operator().public_hex()).unwrap();
            let body = serde_json::json!({ "revocation_ids": [ids[0]] }).to_string();
            // Revoking needs its own capability.
            let (st, msg) = http_with(&sock, "POST", "/revoke", &body, None).await;
            assert_eq!(st, 401, "{msg}");
            let (st, msg) = http(&sock, "POST", "/revoke", &body).await;
            assert_eq!((st, msg.as_str()), (200, r#"{"held":1}"#));
            let (st, msg) = http(&sock, "POST", "/revoke", r#"{"revocation_ids": ["zz"]}"#).await;
            assert_eq!(st, 400, "{msg}");
            let (st, body) = put("app%2Frevoked", Some(to_revoke.clone())).await;
            assert_eq!(st, 401, "{body}");
            assert!(body.contains("capability revoked"), "{body}");
            absent("app%2Frevoked").await;
            // Valid tokens still work.
            let (st, _) = put("app%2Fstill", Some(valid.clone())).await;
            assert_eq!(st, 200);
            // Every other state-changing route is guarded as well.
            let steal = format!(r#"{{"node": 1, "key": "{}"}}"#, "00".repeat(32));
            for (path, body) in [
                ("/shutdown", ""),
                ("/quarantine/b", ""),
                ("/clock", "{\"step_ns\": 1000000}"),
                ("/byzantine", "{\"behaviour\": []}"),
                ("/steal-key", steal.as_str()),
                ("/revoke-key/b", ""),
                ("/send/b", "x"),
                ("/objects/o1", "x"),
            ] {
                let (st, msg) = http_with(&sock, "POST", path, body, None).await;
                assert_eq!(st, 401, "{path}: {msg}");
                // A kv-write token is out of scope for them.
                let (st, msg) = http_with(&sock, "POST", path, body, Some(&valid)).await;
                assert!(st == 403 || st == 401, "{path}: {st} {msg}");
            }
            let (_, m) = http(&sock, "GET", "/metrics", "").await;
            for (reason, n) in [
                ("expired", 1),
                ("wrong_root", 1),
                ("revoked", 1),
                ("malformed", 1),
                ("out_of_scope", 2 + 8),
                ("missing", 2 + 8),
            ] {
                let series = format!(
                    "lightcone_capability_refused_total{{node=\"a\",reason=\"{reason}\"}} {n}\n"
                );
                assert!(m.contains(&series), "{series} missing:\n{m}");
            }
            // The key-theft fault and the key revocation refuse bad requests, saying why:
            // a key that is no hex, a key that is not the node's, a lab without BFT groups,
            // a node that does not exist.
            let zeros = "00".repeat(32);
            for (path, body, status, words) in [
                (
                    "/steal-key",
                    r#"{"node": 1, "key": "zz"}"#.to_string(),
                    400,
                    "64 hex digits",
                ),
                (
                    "/steal-key",
                    format!(r#"{{"node": 1, "key": "{zeros}"}}"#),
                    400,
                    "not node 1's directory key",
                ),
                (
                    "/steal-key",
                    r#"{"victim": "b"}"#.to_string(),
                    400,
                    "body must be JSON",
                ),
                ("/revoke-key/b", String::new(), 409, "runs no BFT group"),
                ("/revoke-key/nobody", String::new(), 404, "no node nobody"),
            ] {
                let (st, msg) = http(&sock, "POST", path, &body).await;
                assert_eq!(st, status, "{path} {body}: {msg}");
                assert!(msg.contains(words), "{path} {body}: {msg}");
            }
            // The state never changed by a refused order: still running, nobody quarantined.
            let (st, body) = http(&sock, "GET", "/state", "").await;
            assert_eq!(st, 200);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["quarantine"], serde_json::json!([]), "{v}");
            assert_eq!(v["byzantine"], serde_json::json!([]), "{v}");
            assert!(v.get("revoked").is_none(), "{v}");
            let (st, _) = http(&sock, "POST", "/shutdown", "").await;
            assert_eq!(st, 200);
        };
        let (ra, ()) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(a, client) })
                .await
                .expect("agent did not stop");
        ra.expect("agent a");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
