//! Many tiles in one agent process (`lightcone-agent --group SOCKET --directory FILE`).
//!
//! One current-thread tokio runtime hosts every tile of the group: each tile is one task
//! (its own [`Node`](lightcone_core::node::Node), keys, state, UDP sockets and control
//! socket, exactly as a one-tile agent has), all sharing the runtime's one event loop and
//! timer wheel, and one read-only [`Directory`] (`Arc`) instead of one copy per tile.
//!
//! A tile's UDP sockets are opened inside the tile's own network namespace: a fresh thread
//! enters it (`setns`), binds, and ends, so no thread of the runtime ever changes namespace.
//!
//! The supervisor drives the group over the unix socket `SOCKET` (HTTP/1.1):
//! - `POST /tiles/{id}/start`, body [`StartTile`]: builds and starts tile `id`
//!   (`200` once its sockets are bound and its control socket listens; `409` if it runs;
//!   `400` with the reason if its configuration, key or sockets are refused);
//! - `POST /tiles/{id}/crash`: ends tile `id` at once, as a killed process would: its task is
//!   dropped, its sockets and listener close, no goodbye is sent (`404` if it does not run);
//! - `GET /tiles`: `{"running": [ids…], "exited": [ids…]}`.
//!
//! A tile's own `POST /shutdown` still stops it cleanly (goodbyes sent); the group goes on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use lightcone_core::config::{AgentConfig, PeerInfo};
use lightcone_core::directory::Directory;

use crate::driver::{prepare, DriverError};

/// `POST /tiles/{id}/start`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTile {
    /// The tile's [`AgentConfig`] (JSON). Its `peers` may be empty: the group's directory
    /// is used either way; a non-empty list must equal the group's.
    pub config: PathBuf,
    /// The tile's network namespace (e.g. `/run/netns/lc-lab-n3`); its UDP sockets are
    /// bound there.
    pub netns: PathBuf,
}

/// `GET /tiles`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TilesReply {
    pub running: Vec<u32>,
    pub exited: Vec<u32>,
}

/// Why a group could not start.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("directory {path}: {reason}")]
    Directory { path: String, reason: String },
    #[error("bind {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The group's directory file: every node of the lab (`Vec<PeerInfo>` JSON), read once.
pub fn read_directory(path: &Path) -> Result<(Vec<PeerInfo>, Arc<Directory>), GroupError> {
    let err = |reason: String| GroupError::Directory {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let peers: Vec<PeerInfo> = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
    let dir = Directory::from_peers(&peers).map_err(|e| err(e.to_string()))?;
    Ok((peers, Arc::new(dir)))
}

/// Binds `addrs` inside the network namespace `netns`, on a thread of its own that enters
/// it and ends (so the caller's thread never changes namespace).
pub fn bind_in_netns(
    netns: &Path,
    addrs: &[SocketAddr],
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let ns = std::fs::File::open(netns)?;
    let addrs = addrs.to_vec();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on this thread only, with an fd we own; the thread ends next.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            crate::driver::bind_here(&addrs)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("bind thread panicked")))
    })
}

struct Tile {
    task: JoinHandle<()>,
}

/// The group's tiles and shared directory.
struct Group {
    peers: Vec<PeerInfo>,
    dir: Arc<Directory>,
    tiles: Mutex<BTreeMap<u32, Tile>>,
}

type Reply = (StatusCode, Vec<u8>);

impl Group {
    fn start(&self, id: u32, req: &StartTile) -> Reply {
        let bad = |m: String| (StatusCode::BAD_REQUEST, format!("{m}\n").into_bytes());
        if let Some(t) = self.tiles.lock().expect("tiles").get(&id) {
            if !t.task.is_finished() {
                return (
                    StatusCode::CONFLICT,
                    format!("tile {id} is running\n").into_bytes(),
                );
            }
        }
        let text = match std::fs::read(&req.config) {
            Ok(t) => t,
            Err(e) => return bad(format!("config {}: {e}", req.config.display())),
        };
        let mut cfg: AgentConfig = match serde_json::from_slice(&text) {
            Ok(c) => c,
            Err(e) => return bad(format!("config {}: {e}", req.config.display())),
        };
        if cfg.id != id {
            return bad(format!(
                "config {} is node {}, not {id}",
                req.config.display(),
                cfg.id
            ));
        }
        if !cfg.peers.is_empty() && cfg.peers != self.peers {
            return bad(format!(
                "config {}: its peers differ from the group's directory",
                req.config.display()
            ));
        }
        cfg.peers = Vec::new();
        let netns = req.netns.clone();
        let prepared = match prepare(cfg, Some(self.dir.clone()), |a| bind_in_netns(&netns, a)) {
            Ok(p) => p,
            Err(e) => return bad(format!("tile {id}: {e}")),
        };
        let name = prepared.name().to_string();
        let span = tracing::info_span!("tile", node = %name);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let r: Result<(), DriverError> = prepared.run(std::future::pending()).await;
                if let Err(e) = r {
                    tracing::error!("tile stopped: {e}");
                }
            },
            span,
        ));
        self.tiles.lock().expect("tiles").insert(id, Tile { task });
        (StatusCode::OK, format!("started {name}\n").into_bytes())
    }

    fn crash(&self, id: u32) -> Reply {
        let mut tiles = self.tiles.lock().expect("tiles");
        match tiles.get(&id) {
            Some(t) if !t.task.is_finished() => {
                // Dropping the task's future drops the tile: node, sockets, listener. No
                // goodbye is sent; the control socket's file stays, as a killed process's.
                t.task.abort();
                tiles.remove(&id);
                tracing::warn!(tile = id, "tile crashed (fault)");
                (StatusCode::OK, format!("crashed {id}\n").into_bytes())
            }
            _ => (
                StatusCode::NOT_FOUND,
                format!("tile {id} is not running\n").into_bytes(),
            ),
        }
    }

    fn list(&self) -> TilesReply {
        let tiles = self.tiles.lock().expect("tiles");
        let mut r = TilesReply::default();
        for (id, t) in tiles.iter() {
            if t.task.is_finished() {
                r.exited.push(*id);
            } else {
                r.running.push(*id);
            }
        }
        r
    }
}

/// Raises this process's open-file limit to its hard limit: a group holds a few
/// descriptors per tile (sockets, listener, connections), beyond the usual 1,024.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Serves the group on `socket` until `shutdown` resolves; every tile then stops with it.
pub async fn serve(
    socket: &Path,
    directory: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GroupError> {
    let (peers, dir) = read_directory(directory)?;
    let group = Arc::new(Group {
        peers,
        dir,
        tiles: Mutex::new(BTreeMap::new()),
    });
    let _ = std::fs::remove_file(socket);
    let bind_err = |source| GroupError::Bind {
        path: socket.display().to_string(),
        source,
    };
    // Bound and listening under a temporary name, then renamed: the socket's path appears
    // only once it accepts (bind creates the file before listen, and a supervisor that saw
    // the file in between would be refused).
    let mut tmp = socket.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    }
    std::fs::rename(&tmp, socket).map_err(bind_err)?;
    tracing::info!(socket = %socket.display(), nodes = group.dir.len(), "tile group ready");
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let g = group.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, g.clone()));
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = accept => {}
    }
    let _ = std::fs::remove_file(socket);
    tracing::info!("tile group stopped");
    Ok(())
}

fn resp(status: StatusCode, ctype: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    g: Arc<Group>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let text = |(s, b): Reply| Ok(resp(s, "text/plain", b));
    if method == Method::GET && path == "/tiles" {
        let body = serde_json::to_vec(&g.list()).unwrap_or_default();
        return Ok(resp(StatusCode::OK, "application/json", body));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (id, action) = match parts.as_slice() {
        ["tiles", id, action] if method == Method::POST => match id.parse::<u32>() {
            Ok(id) => (id, *action),
            Err(_) => {
                return text((
                    StatusCode::BAD_REQUEST,
                    format!("tile id {id:?} is not a number\n").into_bytes(),
                ))
            }
        },
        _ => return text((StatusCode::NOT_FOUND, b"not found\n".to_vec())),
    };
    match action {
        "start" => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return text((StatusCode::BAD_REQUEST, b"unreadable body\n".to_vec())),
            };
            if body.len() > 64 * 1024 {
                return text((StatusCode::BAD_REQUEST, b"body too large\n".to_vec()));
            }
            match serde_json::from_slice::<StartTile>(&body) {
                Ok(s) => text(g.start(id, &s)),
                Err(e) => text((
                    StatusCode::BAD_REQUEST,
                    format!("body must be JSON {{\"config\": path, \"netns\": path}}: {e}\n")
                        .into_bytes(),
                )),
            }
        }
        "crash" => text(g.crash(id)),
        other => text((
            StatusCode::NOT_FOUND,
            format!("no tile action {other:?}; use start or crash\n").into_bytes(),
        )),
    }
}
