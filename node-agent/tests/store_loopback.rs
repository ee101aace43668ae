//! The object store (issue 16) through the agent: `PUT /objects/{id}` on one agent,
//! `GET /objects/{id}` on the other over real UDP on loopback, and the
//! `lightcone_storage_*` series in `/metrics`. No root needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lightcone_core::config::{AgentConfig, HierAddr, Neighbor, PeerInfo, Role, TimeConfig};
use lightcone_core::store::config::StoreConfig;
use lightcone_core::store::Class;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn configs(dir: &Path, port: u16) -> Vec<AgentConfig> {
    let keys: Vec<ed25519_dalek::SigningKey> = (0..2u8)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + 40; 32]))
        .collect();
    let peers: Vec<PeerInfo> = (0..2u32)
        .map(|i| PeerInfo {
            name: ["a", "b"][i as usize].into(),
            id: i,
            addr: HierAddr {
                layer: 0,
                cluster: 0,
                cell: 0,
                tile: i as u16,
            },
            role: if i == 0 { Role::Authority } else { Role::Tile },
            public_key_hex: hex::encode(keys[i as usize].verifying_key().as_bytes()),
            position_au: [1.0, 0.0, 0.0],
        })
        .collect();
    let ips = ["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
    // One lab epoch on the shared monotonic clock; b follows the authority a.
    let epoch = lightcone_agent::driver::monotonic_ns();
    (0..2u32)
        .map(|i| {
            let other = 1 - i;
            let store = StoreConfig::with_class(Class::new("t", 1, 2, 1).unwrap());
            AgentConfig {
                lab: "store-loop".into(),
                id: i,
                time_scale: 2.0,
                seed: u64::from(i) + 1,
                secret_key_hex: hex::encode(keys[i as usize].to_bytes()),
                secret_key_file: None,
                udp_port: port,
                control_socket: dir.join(format!("{}-store.sock", peers[i as usize].name)),
                peers: peers.clone(),
                neighbors: vec![Neighbor {
                    id: other,
                    ifname: "lo".into(),
                    local_ip: ips[i as usize],
                    peer_ip: ips[other as usize],
                    delay_emulated_ns: 1_000_000,
                }],
                epoch_monotonic_ns: Some(epoch),
                boot: 1,
                thermal: None,
                store: Some(store),
                operator_public_key_hex: Some(operator().public_hex()),
                protocol_version: None,
                time: Some(TimeConfig {
                    servers: if i == 0 { vec![] } else { vec![0] },
                    poll_interval_ns: 200_000_000,
                    pulsar_integration_s: 2.0,
                    asymmetry_bound_s: 1e-3,
                    sky_seed: 9,
                }),
            }
        })
        .collect()
}

/// The operator key of these tests (a lab draws its own at `up`).
fn operator() -> lightcone_agent::caps::OperatorKey {
    lightcone_agent::caps::OperatorKey::from_seed(&[77; 32]).unwrap()
}

/// A token for what `method path` does, valid for a minute (none for a read).
fn token_for(method: &str, path: &str) -> Option<String> {
    use lightcone_agent::caps::{Caveats, Op};
    let op = match path {
        _ if method == "GET" => return None,
        p if p.starts_with("/kv/") => Op::KvWrite,
        p if p.starts_with("/objects/") => Op::ObjectPut,
        "/clock" | "/byzantine" => Op::Fault,
        p if p.starts_with("/quarantine/") || p == "/shutdown" => Op::Order,
        p if p.starts_with("/send/") => Op::Send,
        "/task" => Op::TaskSubmit,
        "/revoke" => Op::Revoke,
        _ => return None,
    };
    let c = Caveats {
        op: Some(op),
        expires: Some(std::time::SystemTime::now() + Duration::from_secs(60)),
        ..Default::default()
    };
    Some(operator().mint(&c).unwrap())
}

fn auth_line(token: Option<&str>) -> String {
    token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

async fn http(sock: &PathBuf, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("connect control socket");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n{}Content-Length: {}\r\n\r\n",
        auth_line(token_for(method, path).as_deref()),
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |p| p + 4);
    (status, buf[at..].to_vec())
}

#[test]
fn an_object_put_on_one_agent_is_read_on_the_other() {
    let dir = std::env::temp_dir().join(format!("lc-store-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = 20_000 + ((std::process::id() + 7_919) % 20_000) as u16;
    let cfgs = configs(&dir, port);
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
        };
        let (ra, rb, ()) = tokio::join!(a, b, client);
        ra.unwrap();
        rb.unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
