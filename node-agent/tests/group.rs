//! Many tiles in one agent process (`lightcone_agent::group`): three tiles of one cell over
//! real UDP on loopback, each bound "inside its namespace" (here the test's own, entered
//! by a fresh thread as in a lab: needs root, as a lab does), driven over the group's
//! control socket. A crash fault kills exactly one tile: its control socket stops
//! answering, the others keep answering and keep their state, and its cell peers declare
//! it failed; a restart brings it back empty in the same process.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lightcone_core::config::{AgentConfig, Neighbor};

const N: u32 = 3;

/// Three tiles of one cell, full mesh on 127.0.3.{1,2,3}; configs with empty `peers`
/// (the group's directory file holds them), keys in 0600 files. Returns the directory file
/// and each tile's config file.
fn lab(dir: &Path, port: u16) -> (PathBuf, Vec<PathBuf>) {
    let keys = common::keys(N, 70);
    let peers = common::peers(&keys, |i| format!("t{i}"));
    let directory = dir.join("directory.json");
    std::fs::write(&directory, serde_json::to_vec(&peers).unwrap()).unwrap();
    let ip = |i: u32| std::net::Ipv4Addr::new(127, 0, 3, i as u8 + 1);
    let epoch = lightcone_agent::driver::monotonic_ns();
    let files = (0..N)
        .map(|i| {
            let key = dir.join(format!("t{i}.key"));
            common::write_private(&key, hex::encode(keys[i as usize].to_bytes()).as_bytes());
            let cfg = AgentConfig {
                lab: "group".into(),
                id: i,
                time_scale: 4.0,
                seed: u64::from(i) + 1,
                secret_key_hex: String::new(),
                secret_key_file: Some(key),
                udp_port: port,
                control_socket: dir.join(format!("t{i}.sock")),
                peers: Vec::new(),
                neighbors: (0..N)
                    .filter(|j| *j != i)
                    .map(|j| Neighbor {
                        id: j,
                        ifname: "lo".into(),
                        local_ip: ip(i),
                        peer_ip: ip(j),
                        delay_emulated_ns: 1_000_000,
                    })
                    .collect(),
                epoch_monotonic_ns: Some(epoch),
                epoch_uncertainty_ns: 0,
                boot: 1,
                // A time layer, whose role and position come from the group's directory
                // (the configs carry no peers): t0 is the cell's reference.
                time: Some(common::time_config(i)),
                thermal: None,
                protocol_version: None,
                store: None,
                operator_public_key_hex: Some(common::operator().public_hex()),
                revoked_ids: Vec::new(),
                authorities_key_hex: None,
                directory_cert_hex: None,
                order_serial_floor: 0,
                trust: None,
                approved_builds: Vec::new(),
                certificates: Vec::new(),
            };
            let f = dir.join(format!("t{i}.json"));
            std::fs::write(&f, serde_json::to_vec(&cfg).unwrap()).unwrap();
            f
        })
        .collect();
    (directory, files)
}

/// One HTTP/1.1 request over a unix socket; `None` if nothing listens.
async fn http(sock: &Path, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let (st, body) = common::try_http(sock, method, path, body.as_bytes()).await?;
    Some((st, String::from_utf8_lossy(&body).into_owned()))
}

/// The state of member `id` in `sock`'s tile's view ("alive", "suspect", "dead").
async fn member_state(sock: &Path, id: u32) -> Option<String> {
    let (st, body) = http(sock, "GET", "/state", "").await?;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["state"].as_str().map(String::from))
}

#[test]
fn a_crash_in_a_multi_tile_process_kills_one_tile_only() {
    let dir = std::env::temp_dir().join(format!("lc-group-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = 20_000 + (std::process::id() % 20_000) as u16 + 7;
    let (directory, files) = lab(&dir, port);
    let group_sock = dir.join("group.sock");
    let tile_sock = |i: u32| dir.join(format!("t{i}.sock"));
    // The namespace a fresh thread enters to bind: the test's own (entering it needs
    // CAP_SYS_ADMIN, as entering a lab's does).
    let netns = "/proc/self/ns/net";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let g = group_sock.clone();
        let d = directory.clone();
        tokio::spawn(async move {
            lightcone_agent::group::serve(&g, &d, None, false, std::future::pending())
                .await
                .unwrap();
        });
        for _ in 0..100 {
            if group_sock.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let start =
            |i: u32| serde_json::json!({"config": files[i as usize], "netns": netns}).to_string();
        // A bad body or a config of another node says why; nothing starts.
        let (st, body) = http(&group_sock, "POST", "/tiles/1/start", "{\"config\": 3}")
            .await
            .unwrap();
        assert_eq!(st, 400, "{body}");
        let (st, body) = http(&group_sock, "POST", "/tiles/1/start", &start(2))
            .await
            .unwrap();
        assert_eq!(
            (st, body.contains("is node 2, not 1")),
            (400, true),
            "{body}"
        );
        for i in 0..N {
            let (st, body) = http(&group_sock, "POST", &format!("/tiles/{i}/start"), &start(i))
                .await
                .expect("group answers");
            assert_eq!(st, 200, "start t{i}: {body}");
        }
        // A running tile is not started twice; a bad body says why; nothing changes.
        let (st, body) = http(&group_sock, "POST", "/tiles/0/start", &start(0))
            .await
            .unwrap();
        assert_eq!((st, body.as_str()), (409, "tile 0 is running\n"));
        // All see all alive.
        let mut all = false;
        for _ in 0..100 {
            let mut ok = true;
            for i in 0..N {
                for j in (0..N).filter(|j| *j != i) {
                    ok &= member_state(&tile_sock(i), j).await.as_deref() == Some("alive");
                }
            }
            if ok {
                all = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(all, "the three tiles never all saw each other alive");
        // State: a key on t0 (to be lost by its crash) and on t1 (to be kept).
        for i in [0, 1] {
            let (st, body) = http(
                &tile_sock(i),
                "POST",
                "/kv/k?durability=local",
                &format!("v{i}"),
            )
            .await
            .unwrap();
            assert_eq!(st, 200, "{body}");
        }
        // Crash t0: only t0 stops answering.
        let (st, body) = http(&group_sock, "POST", "/tiles/0/crash", "")
            .await
            .unwrap();
        assert_eq!((st, body.as_str()), (200, "crashed 0\n"));
        assert!(
            http(&tile_sock(0), "GET", "/state", "").await.is_none(),
            "the crashed tile still answers"
        );
        let (st, body) = http(&group_sock, "POST", "/tiles/0/crash", "")
            .await
            .unwrap();
        assert_eq!((st, body.as_str()), (404, "tile 0 is not running\n"));
        let (_, tiles) = http(&group_sock, "GET", "/tiles", "").await.unwrap();
        let tiles: lightcone_agent::group::TilesReply = serde_json::from_str(&tiles).unwrap();
        assert_eq!(tiles.running, vec![1, 2]);
        let (st, v) = http(&tile_sock(1), "GET", "/kv/k", "").await.unwrap();
        assert_eq!((st, v.as_str()), (200, "v1"), "t1 lost its state");
        // Its cell peers detect it (the spec's 10 s emulated: 2.5 s real at scale 4).
        let t0 = std::time::Instant::now();
        let mut detected = false;
        while t0.elapsed() < Duration::from_millis(2500) {
            let s1 = member_state(&tile_sock(1), 0).await;
            let s2 = member_state(&tile_sock(2), 0).await;
            if s1.as_deref() != Some("alive") && s2.as_deref() != Some("alive") {
                detected = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            detected,
            "t1 and t2 did not detect t0's crash within 10 s emulated"
        );
        // t1 and t2 still see each other alive.
        assert_eq!(
            member_state(&tile_sock(1), 2).await.as_deref(),
            Some("alive")
        );
        assert_eq!(
            member_state(&tile_sock(2), 1).await.as_deref(),
            Some("alive")
        );
        // Restart: t0 is back, in this same process, empty.
        let (st, body) = http(&group_sock, "POST", "/tiles/0/start", &start(0))
            .await
            .unwrap();
        assert_eq!(st, 200, "{body}");
        let (st, _) = http(&tile_sock(0), "GET", "/kv/k", "").await.unwrap();
        assert_eq!(st, 404, "a restarted tile starts empty");
        let (st, v) = http(&tile_sock(1), "GET", "/kv/k", "").await.unwrap();
        assert_eq!((st, v.as_str()), (200, "v1"));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--tiles FILE`: the listed tiles are prepared at launch, all at once, and the group's
/// socket appears only when every one of them is ready; with `--hold` they run on SIGUSR1
/// (then every control socket answers); a list with one tile that cannot start starts
/// none, and the group says which and why.
#[test]
fn a_tile_list_starts_every_tile_before_the_socket_appears_or_none() {
    let dir = std::env::temp_dir().join(format!("lc-group-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = 20_000 + (std::process::id() % 20_000) as u16 + 11;
    let (directory, files) = lab(&dir, port);
    let netns = "/proc/self/ns/net";
    let list = |cfgs: &[(u32, &PathBuf)]| {
        let v: Vec<serde_json::Value> = cfgs
            .iter()
            .map(|(id, c)| serde_json::json!({"id": id, "config": c, "netns": netns}))
            .collect();
        serde_json::to_vec(&v).unwrap()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Tile 1's entry names tile 2's config: refused, and nothing of the group runs.
        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            list(&[(0, &files[0]), (1, &files[2]), (2, &files[2])]),
        )
        .unwrap();
        let g = dir.join("bad.sock");
        let err = lightcone_agent::group::serve(
            &g,
            &directory,
            Some(&bad),
            false,
            std::future::pending(),
        )
        .await
        .expect_err("a list with a bad tile is refused");
        let msg = err.to_string();
        assert!(
            msg.contains("tile 1: config") && msg.contains("is node 2, not 1"),
            "{msg}"
        );
        assert!(!g.exists(), "the group's socket appeared");
        for i in 0..N {
            assert!(
                http(&dir.join(format!("t{i}.sock")), "GET", "/state", "")
                    .await
                    .is_none(),
                "tile {i} answers although the list was refused"
            );
        }
        // A tile listed twice is refused before anything starts.
        let twice = dir.join("twice.json");
        std::fs::write(&twice, list(&[(0, &files[0]), (0, &files[0])])).unwrap();
        let err = lightcone_agent::group::serve(
            &g,
            &directory,
            Some(&twice),
            false,
            std::future::pending(),
        )
        .await
        .expect_err("a tile listed twice is refused");
        assert!(err.to_string().contains("tile 0 is listed twice"), "{err}");

        // The good list: when the socket is there, every tile answers.
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            list(&[(0, &files[0]), (1, &files[1]), (2, &files[2])]),
        )
        .unwrap();
        let gs = dir.join("good.sock");
        let (d, l, s) = (directory.clone(), good.clone(), gs.clone());
        tokio::spawn(async move {
            lightcone_agent::group::serve(&s, &d, Some(&l), true, std::future::pending())
                .await
                .unwrap();
        });
        let mut up = false;
        for _ in 0..500 {
            if gs.exists() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(up, "the group's socket never appeared");
        // Held (`--hold`): prepared, not running, until the go signal.
        let (_, tiles) = http(&gs, "GET", "/tiles", "").await.unwrap();
        let tiles: lightcone_agent::group::TilesReply = serde_json::from_str(&tiles).unwrap();
        assert_eq!((tiles.held, tiles.running), (vec![0, 1, 2], vec![]));
        // SAFETY: a signal to this process, whose handler `serve` installed.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        let mut released = false;
        for _ in 0..200 {
            let (_, t) = http(&gs, "GET", "/tiles", "").await.unwrap();
            let t: lightcone_agent::group::TilesReply = serde_json::from_str(&t).unwrap();
            if t.running == vec![0, 1, 2] && t.held.is_empty() {
                released = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(released, "the go signal did not release the held tiles");
        for i in 0..N {
            let (st, body) = http(&dir.join(format!("t{i}.sock")), "GET", "/state", "")
                .await
                .unwrap_or_else(|| panic!("tile {i} does not answer once the socket is there"));
            assert_eq!(st, 200, "{body}");
        }
        let (_, tiles) = http(&gs, "GET", "/tiles", "").await.unwrap();
        let tiles: lightcone_agent::group::TilesReply = serde_json::from_str(&tiles).unwrap();
        assert_eq!(tiles.running, vec![0, 1, 2]);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
