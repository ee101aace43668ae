//! The tokio driver over real UDP on loopback (127.0.0.1 ↔ 127.0.0.2) and its HTTP API on
//! unix sockets. No root needed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http;
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = lightcone_agent::driver::run(cfgs[0].clone(), std::future::pending());
        let b = lightcone_agent::driver::run(cfgs[1].clone(), std::future::pending());
        let sa = cfgs[0].control_socket.clone();
        let sb = cfgs[1].control_socket.clone();
        let client = async move {
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
                if tv["responses_accepted"].as_u64().unwrap_or(0) >= 10 && tv["source"].is_object()
                {
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
        };
        let (ra, rb, ()) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(a, b, client)
        })
        .await
        .expect("agents stop after /shutdown");
        ra.unwrap();
        rb.unwrap();
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
