//! What the agent's loopback tests share: tile keys and the directory of a one-cell lab,
//! the two-agent configuration on 127.0.0.1 ↔ 127.0.0.2, 0600 key files, and one HTTP/1.1
//! request over a control socket, and running the pair with a client until it shuts them
//! down. Each test file uses part of it.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lightcone_core::config::{AgentConfig, HierAddr, Neighbor, PeerInfo, Role, TimeConfig};
use lightcone_core::store::config::StoreConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `n` tile keys from fixed bytes (`base + i`): the tests' labs are throwaway.
pub fn keys(n: u32, base: u8) -> Vec<ed25519_dalek::SigningKey> {
    (0..n as u8)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + base; 32]))
        .collect()
}

/// The directory of one cell: tile `i` is `name(i)`, tile 0 the cell's authority.
pub fn peers(keys: &[ed25519_dalek::SigningKey], name: impl Fn(u32) -> String) -> Vec<PeerInfo> {
    (0..keys.len() as u32)
        .map(|i| PeerInfo {
            name: name(i),
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
        .collect()
}

/// The time layer of a cell whose reference is tile 0 (it follows no one).
pub fn time_config(i: u32) -> TimeConfig {
    TimeConfig {
        servers: if i == 0 { vec![] } else { vec![0] },
        poll_interval_ns: 200_000_000,
        pulsar_integration_s: 2.0,
        asymmetry_bound_s: 1e-3,
        sky_seed: 9,
    }
}

/// Two agents `a` (the authority) and `b` on 127.0.0.1 ↔ 127.0.0.2, UDP port `port`,
/// control sockets `dir/{a,b}{sock_suffix}.sock`, time_scale 2, keys inline; with the
/// object store `store` on both if given.
pub fn pair_configs(
    dir: &Path,
    port: u16,
    lab: &str,
    sock_suffix: &str,
    store: Option<StoreConfig>,
) -> Vec<AgentConfig> {
    let keys = keys(2, 40);
    let peers = peers(&keys, |i| ["a", "b"][i as usize].into());
    let ips = ["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
    // One lab epoch on the shared monotonic clock; b follows the authority a.
    let epoch = lightcone_agent::driver::monotonic_ns();
    (0..2u32)
        .map(|i| {
            let other = 1 - i;
            AgentConfig {
                lab: lab.into(),
                id: i,
                time_scale: 2.0,
                seed: u64::from(i) + 1,
                secret_key_hex: hex::encode(keys[i as usize].to_bytes()),
                secret_key_file: None,
                udp_port: port,
                control_socket: dir.join(format!("{}{sock_suffix}.sock", peers[i as usize].name)),
                peers: peers.clone(),
                neighbors: vec![Neighbor {
                    id: other,
                    ifname: "lo".into(),
                    local_ip: ips[i as usize],
                    peer_ip: ips[other as usize],
                    delay_emulated_ns: 1_000_000,
                }],
                epoch_monotonic_ns: Some(epoch),
                epoch_uncertainty_ns: 0,
                boot: 1,
                thermal: None,
                store: store.clone(),
                operator_public_key_hex: Some(operator().public_hex()),
                revoked_ids: Vec::new(),
                authorities_key_hex: None,
                directory_cert_hex: None,
                order_serial_floor: 0,
                trust: None,
                approved_builds: Vec::new(),
                certificates: Vec::new(),
                protocol_version: None,
                time: Some(time_config(i)),
            }
        })
        .collect()
}

/// Write `bytes` to `p`, readable by its owner only (as a lab writes tile keys).
pub fn write_private(p: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// The operator key of these tests (a lab draws its own at `up`).
pub fn operator() -> lightcone_agent::caps::OperatorKey {
    lightcone_agent::caps::OperatorKey::from_seed(&[77; 32]).unwrap()
}

/// A token for what `method path` does, valid for a minute (none for a read).
pub fn token_for(method: &str, path: &str) -> Option<String> {
    use lightcone_agent::caps::{Caveats, Op};
    let op = match path {
        _ if method == "GET" => return None,
        p if p.starts_with("/kv/") => Op::KvWrite,
        p if p.starts_with("/objects/") => Op::ObjectPut,
        "/clock" | "/byzantine" | "/steal-key" => Op::Fault,
        p if p.starts_with("/quarantine/") || p.starts_with("/revoke-key/") || p == "/shutdown" => {
            Op::Order
        }
        p if p.starts_with("/send/") => Op::Send,
        "/task" => Op::TaskSubmit,
        "/revoke" => Op::Revoke,
        _ => return None,
    };
    let c = Caveats {
        op: Some(op),
        expires: Some(std::time::SystemTime::now() + std::time::Duration::from_secs(60)),
        ..Default::default()
    };
    Some(operator().mint(&c).unwrap())
}

/// One HTTP/1.1 request over the unix socket `sock`, carrying the capability its
/// operation needs ([`token_for`]): its status and body; `None` if nothing listens there or
/// the exchange breaks off.
pub async fn try_http(
    sock: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let token = token_for(method, path);
    try_http_with(sock, method, path, body, token.as_deref()).await
}

/// [`try_http`] carrying `token` (or none) instead.
pub async fn try_http_with(
    sock: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Option<(u16, Vec<u8>)> {
    let mut s = tokio::net::UnixStream::connect(sock).await.ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(body).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok())?;
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |p| p + 4);
    Some((status, buf[at..].to_vec()))
}

/// [`try_http`] that must be answered, with the body as text.
pub async fn http(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let token = token_for(method, path);
    http_with(sock, method, path, body, token.as_deref()).await
}

/// [`http`] carrying `token` (or none) instead.
pub async fn http_with(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let (st, body) = try_http_with(sock, method, path, body.as_bytes(), token)
        .await
        .unwrap_or_else(|| panic!("no answer on {}", sock.display()));
    (st, String::from_utf8_lossy(&body).into_owned())
}

/// Runs agents `cfgs[0]` and `cfgs[1]` on one current-thread runtime beside
/// `client(a's control socket, b's control socket)`, which must end by shutting both down
/// (`POST /shutdown`); both must then stop cleanly within `limit`.
pub fn run_pair<F>(
    cfgs: &[AgentConfig],
    limit: Duration,
    client: impl FnOnce(PathBuf, PathBuf) -> F,
) where
    F: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = lightcone_agent::driver::run(cfgs[0].clone(), std::future::pending());
        let b = lightcone_agent::driver::run(cfgs[1].clone(), std::future::pending());
        let client = client(
            cfgs[0].control_socket.clone(),
            cfgs[1].control_socket.clone(),
        );
        let (ra, rb, ()) = tokio::time::timeout(limit, async { tokio::join!(a, b, client) })
            .await
            .expect("agents stop after /shutdown");
        ra.unwrap();
        rb.unwrap();
    });
}
