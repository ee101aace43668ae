//! The object store (issue 16) through the agent: `PUT /objects/{id}` on one agent,
//! `GET /objects/{id}` on the other over real UDP on loopback, and the
//! `lightcone_storage_*` series in `/metrics`. No root needed.

mod common;

use std::path::Path;
use std::time::Duration;

use lightcone_core::config::AgentConfig;
use lightcone_core::store::config::StoreConfig;
use lightcone_core::store::Class;

fn configs(dir: &Path, port: u16) -> Vec<AgentConfig> {
    let store = StoreConfig::with_class(Class::new("t", 1, 2, 1).unwrap());
    common::pair_configs(dir, port, "store-loop", "-store", Some(store))
}

async fn http(sock: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    common::try_http(sock, method, path, body)
        .await
        .unwrap_or_else(|| panic!("no answer on {}", sock.display()))
}

#[test]
fn an_object_put_on_one_agent_is_read_on_the_other() {
    let dir = std::env::temp_dir().join(format!("lc-store-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = 20_000 + ((std::process::id() + 7_919) % 20_000) as u16;
    let cfgs = configs(&dir, port);
    common::run_pair(&cfgs, Duration::from_secs(60), |sa, sb| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let data: Vec<u8> = (0..900u32).map(|i| (i * 7) as u8).collect();
        // Until b is alive in a's view (the store's liveness comes from membership),
        // a put has too few tiles: it is refused with a clear error, then accepted.
        // Wait (real ≤ 5 s) for a route from a to b: the shards travel the overlay.
        for _ in 0..50 {
            let (_, body) = http(&sa, "GET", "/state", b"").await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let routed = v["routes"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["dest"] == "node:1"));
            if routed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut stored = false;
        for _ in 0..100 {
            let (st, body) = http(&sa, "PUT", "/objects/blob-1", &data).await;
            if st == 200 {
                assert!(String::from_utf8_lossy(&body).contains("blob-1"));
                stored = true;
                break;
            }
            // 400: too few live tiles yet; 504: a shard not acknowledged in time.
            assert!(
                [400, 504].contains(&st),
                "{st} {}",
                String::from_utf8_lossy(&body)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, last) = http(&sa, "PUT", "/objects/blob-1", &data).await;
        assert!(
            stored,
            "the put never succeeded: {}",
            String::from_utf8_lossy(&last)
        );
        // b learns the metadata from the shard a sent it, and reads the object back.
        let (st, body) = http(&sb, "GET", "/objects/blob-1", b"").await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, data);
        let (st, body) = http(&sb, "GET", "/objects/nothing", b"").await;
        assert_eq!(st, 404, "{}", String::from_utf8_lossy(&body));
        let (st, _) = http(&sa, "PUT", "/objects/big", &vec![0u8; 70_000]).await;
        assert_eq!(st, 400, "a body over 64 KiB is refused");
        let (st, body) = http(&sa, "GET", "/metrics", b"").await;
        assert_eq!(st, 200);
        let m = String::from_utf8_lossy(&body);
        assert!(
            m.contains("lightcone_storage_shards_held{node=\"a\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("lightcone_storage_objects_lost_total{node=\"a\"} 0"),
            "{m}"
        );
        assert!(
            m.contains("lightcone_storage_repair_seconds_count{node=\"a\"} 0"),
            "{m}"
        );
        for s in [&sa, &sb] {
            let _ = http(s, "POST", "/shutdown", b"").await;
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
