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
//!
//! `--tiles FILE` ([`TileSpec`] list, JSON) starts the listed tiles at launch, all at once:
//! each tile is prepared (config, key, UDP sockets bound in its namespace, control socket)
//! on a thread of its own, and only when every one of them is ready is the group's socket
//! put in place; their tasks run then, or with `--hold` when the process gets SIGUSR1 (the
//! supervisor's go once every process is ready; `GET /tiles` lists them as `held` until
//! then). So the supervisor makes no round trip per tile:
//! the socket's appearance is the one readiness report of the whole process, and a tile
//! that cannot start makes the process exit with the reason (nothing of the group runs).

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

use crate::driver::{prepare, DriverError, Prepared};

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

/// One line of the `--tiles FILE` manifest: a tile to start at launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileSpec {
    pub id: u32,
    #[serde(flatten)]
    pub start: StartTile,
}

/// Most tiles a group prepares at once at launch (one thread each, ended when prepared).
const PREPARE_THREADS: usize = 16;

/// `GET /tiles`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TilesReply {
    pub running: Vec<u32>,
    pub exited: Vec<u32>,
    /// Listed tiles prepared and held until the go signal (`--hold`, SIGUSR1).
    #[serde(default)]
    pub held: Vec<u32>,
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
    /// The `--tiles` manifest could not be read, or a tile in it could not start; no tile
    /// of the group was started.
    #[error("tiles {path}: {reason}")]
    Tiles { path: String, reason: String },
}

/// The `--tiles` manifest.
pub fn read_tiles(path: &Path) -> Result<Vec<TileSpec>, GroupError> {
    let err = |reason: String| GroupError::Tiles {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let tiles: Vec<TileSpec> = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    for t in &tiles {
        if !seen.insert(t.id) {
            return Err(err(format!("tile {} is listed twice", t.id)));
        }
    }
    Ok(tiles)
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
    /// Listed tiles prepared and not yet released (`--hold`).
    held: Mutex<std::collections::BTreeSet<u32>>,
}

type Reply = (StatusCode, Vec<u8>);

impl Group {
    fn start(&self, id: u32, req: &StartTile) -> Reply {
        match self.prepare_tile(id, req) {
            Ok(p) => {
                let name = self.launch(id, p);
                (StatusCode::OK, format!("started {name}\n").into_bytes())
            }
            Err(r) => r,
        }
    }

    /// Everything of tile `id` but its task: config, key, node, sockets, control socket.
    /// Dropping the result closes what it opened.
    fn prepare_tile(&self, id: u32, req: &StartTile) -> Result<Prepared, Reply> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, format!("{m}\n").into_bytes());
        if let Some(t) = self.tiles.lock().expect("tiles").get(&id) {
            if !t.task.is_finished() {
                return Err((
                    StatusCode::CONFLICT,
                    format!("tile {id} is running\n").into_bytes(),
                ));
            }
        }
        let text = std::fs::read(&req.config)
            .map_err(|e| bad(format!("config {}: {e}", req.config.display())))?;
        let mut cfg: AgentConfig = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("config {}: {e}", req.config.display())))?;
        if cfg.id != id {
            return Err(bad(format!(
                "config {} is node {}, not {id}",
                req.config.display(),
                cfg.id
            )));
        }
        if !cfg.peers.is_empty() && cfg.peers != self.peers {
            return Err(bad(format!(
                "config {}: its peers differ from the group's directory",
                req.config.display()
            )));
        }
        cfg.peers = Vec::new();
        let netns = req.netns.clone();
        prepare(cfg, Some(self.dir.clone()), |a| bind_in_netns(&netns, a))
            .map_err(|e| bad(format!("tile {id}: {e}")))
    }

    /// Runs a prepared tile as a task of this runtime; its name.
    fn launch(&self, id: u32, prepared: Prepared) -> String {
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
        name
    }

    /// Prepares every tile of `specs` concurrently ([`PREPARE_THREADS`] at a time); all or
    /// none: if one cannot start, none is kept (what was opened is closed) and the reasons
    /// are returned. The tiles run once [`Group::launch_all`]ed.
    fn prepare_all(&self, specs: &[TileSpec]) -> Result<Vec<(u32, Prepared)>, String> {
        let handle = tokio::runtime::Handle::current();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, Result<Prepared, Reply>)>> =
            Mutex::new(Vec::with_capacity(specs.len()));
        std::thread::scope(|s| {
            for _ in 0..PREPARE_THREADS.min(specs.len()) {
                s.spawn(|| {
                    // The sockets register with this runtime's reactor.
                    let _rt = handle.enter();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(t) = specs.get(i) else { break };
                        let r = self.prepare_tile(t.id, &t.start);
                        done.lock().expect("prepared").push((i, r));
                    }
                });
            }
        });
        let mut done = done.into_inner().expect("prepared");
        done.sort_by_key(|(i, _)| *i);
        let errors: Vec<String> = done
            .iter()
            .filter_map(|(i, r)| {
                r.as_ref().err().map(|(_, b)| {
                    format!(
                        "tile {}: {}",
                        specs[*i].id,
                        String::from_utf8_lossy(b).trim_end()
                    )
                })
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let prepared: Vec<(u32, Prepared)> = done
            .into_iter()
            .filter_map(|(i, r)| r.ok().map(|p| (specs[i].id, p)))
            .collect();
        self.held
            .lock()
            .expect("held")
            .extend(prepared.iter().map(|(id, _)| *id));
        Ok(prepared)
    }

    /// Runs prepared tiles (no longer held).
    fn launch_all(&self, prepared: Vec<(u32, Prepared)>) {
        for (id, p) in prepared {
            self.held.lock().expect("held").remove(&id);
            self.launch(id, p);
        }
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
        let mut r = TilesReply {
            held: self.held.lock().expect("held").iter().copied().collect(),
            ..TilesReply::default()
        };
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
/// With `tiles` (the `--tiles` manifest), those tiles are prepared first, all at once, and
/// the socket appears only once every one is ready; they run at once, or with `hold` on
/// the go signal (SIGUSR1), so that a lab's tiles all start together once every process
/// is ready, rather than the first ones' traffic slowing the start of the rest.
pub async fn serve(
    socket: &Path,
    directory: &Path,
    tiles: Option<&Path>,
    hold: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GroupError> {
    // Before anything can send it: SIGUSR1's default action ends the process.
    let mut go_signal = if hold {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).map_err(
                |source| GroupError::Bind {
                    path: "SIGUSR1 handler".into(),
                    source,
                },
            )?,
        )
    } else {
        None
    };
    let (peers, dir) = read_directory(directory)?;
    let group = Arc::new(Group {
        peers,
        dir,
        tiles: Mutex::new(BTreeMap::new()),
        held: Mutex::new(Default::default()),
    });
    let mut prepared = Vec::new();
    if let Some(path) = tiles {
        let specs = read_tiles(path)?;
        let t0 = std::time::Instant::now();
        prepared = group
            .prepare_all(&specs)
            .map_err(|reason| GroupError::Tiles {
                path: path.display().to_string(),
                reason,
            })?;
        tracing::info!(
            tiles = prepared.len(),
            ms = t0.elapsed().as_millis() as u64,
            "tiles prepared"
        );
    }
    let go = {
        let group = group.clone();
        async move {
            if let Some(sig) = go_signal.as_mut() {
                sig.recv().await;
            }
            if !prepared.is_empty() {
                let n = prepared.len();
                group.launch_all(prepared);
                tracing::info!(tiles = n, "tiles running");
            }
            std::future::pending::<()>().await
        }
    };
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
        _ = go => {}
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
