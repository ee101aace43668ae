//! Agent processes: one `lightcone-agent` per node, started inside the node's namespace,
//! logged to the lab's state directory, recorded in the ledger, killed and restarted on
//! request. Talks to each agent over its unix control socket.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::kernel::Netns;
use crate::keys::LabKeys;
use crate::plan::Plan;
use crate::state::{process_start_time, Entry, LabDir, Ledger};
use crate::tilegroups::Groups;

/// Where the agent binary is: `$LIGHTCONE_AGENT`, else next to this executable (and, for
/// `cargo test`/`cargo bench` binaries in `target/*/deps`, one directory up).
pub fn agent_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIGHTCONE_AGENT") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("lightcone-agent"),
        dir.parent()?.join("lightcone-agent"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Running,
    /// Killed by a fault or exited by itself.
    Exited,
    /// Not started (`--no-agents`).
    None,
}

struct Proc {
    child: Child,
}

/// The lab's agents. Spawns only from the thread that owns it (the supervisor's main
/// thread): agents get `PR_SET_PDEATHSIG`, which fires when the *thread* that forked them
/// ends, so a short-lived worker thread must never spawn them.
pub struct Agents {
    binary: PathBuf,
    procs: BTreeMap<usize, Proc>,
    /// The lab epoch on the host's `CLOCK_MONOTONIC`: every agent (and every restart)
    /// counts emulated time from it, so they agree on "true now".
    epoch_monotonic_ns: u64,
    /// Boots of each node's agent so far: the next start is boot `n + 1` (the agent binds
    /// frames to it, so a restarted agent rejects frames captured before its restart).
    boots: BTreeMap<usize, u32>,
    /// The lab's node keys (public halves; the secrets are in the state dir's `keys/`).
    keys: LabKeys,
    /// Many tiles per process (`agents: {tiles_per_process: N}`, N > 1); `None`: one
    /// process per node.
    groups: Option<Groups>,
    /// Nodes whose agent runs another binary than `binary` (`lightcone update`, issue 18).
    replaced: BTreeMap<usize, PathBuf>,
    /// A lab across hosts: agents are numbered in the whole plan (each of this plan's
    /// node `i` is node `origin[i]` there) and know every node of it.
    wide: Option<Wide>,
    /// How well `epoch_monotonic_ns` is known against the lab's epoch, real ns (0: one host).
    epoch_uncertainty_ns: u64,
}

/// See [`Agents::lab_wide`].
struct Wide {
    plan: Plan,
    origin: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the agent binary was not found next to `lightcone` (set LIGHTCONE_AGENT to its path)"
    )]
    NoBinary,
    #[error("start agent {node}: {source}")]
    Spawn {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted while waiting for agents to start")]
    Interrupted,
    /// Nothing was changed: the node's agent shares its process with other tiles.
    #[error("tiles share agent processes in this lab (agents.tiles_per_process > 1): one tile's binary cannot be replaced alone; nothing was changed")]
    Grouped,
    #[error(transparent)]
    Group(#[from] crate::tilegroups::GroupError),
    #[error("only {started} of {total} agents started within {secs} s (the bound: 30 s + 200 ms per node); the host cannot bring this lab up in time: try a slower `--time-scale`, more `agents.tiles_per_process`, or a smaller lab")]
    NotAllStarted {
        started: usize,
        total: usize,
        secs: u64,
    },
    #[error("agent {node} did not open its control socket within {secs} s ({ready} of {total} agents ready); see {log}")]
    NotReady {
        node: String,
        secs: u64,
        log: String,
        ready: usize,
        total: usize,
    },
}

impl Agents {
    /// Agents of a lab whose node keys are `keys` (drawn at `up`, see [`crate::keys`]).
    /// Node `id`'s public key (hex), as its peers' directories hold it.
    pub fn public_key_hex(&self, id: usize) -> Option<&str> {
        self.keys.public_hex().get(id).map(String::as_str)
    }

    pub fn new(keys: LabKeys) -> Result<Agents, AgentError> {
        Ok(Agents {
            binary: agent_binary().ok_or(AgentError::NoBinary)?,
            procs: BTreeMap::new(),
            epoch_monotonic_ns: lightcone_agent::driver::monotonic_ns(),
            boots: BTreeMap::new(),
            keys,
            groups: None,
            replaced: BTreeMap::new(),
            wide: None,
            epoch_uncertainty_ns: 0,
        })
    }

    /// Number this host's agents in the whole lab's plan `whole` (node `i` here is node
    /// `origin[i]` there), give each the whole lab's directory and neighbours (links to
    /// other hosts included), and count emulated time from `epoch_monotonic_ns` (the
    /// lab's epoch placed on this host's clock). Refused with many tiles per process
    /// (their shared directory is built from this host's plan).
    pub fn lab_wide(
        mut self,
        whole: Plan,
        origin: Vec<usize>,
        epoch_monotonic_ns: u64,
        epoch_uncertainty_ns: u64,
    ) -> Result<Agents, AgentError> {
        if self.groups.is_some() {
            return Err(AgentError::Spawn {
                node: whole.lab.clone(),
                source: std::io::Error::other(
                    "agents with several tiles per process cannot span hosts yet (agents: { tiles_per_process: 1 } in the topology)",
                ),
            });
        }
        self.epoch_monotonic_ns = epoch_monotonic_ns;
        self.epoch_uncertainty_ns = epoch_uncertainty_ns;
        self.wide = Some(Wide {
            plan: whole,
            origin,
        });
        Ok(self)
    }

    /// Node `id` of this host's plan as the agents know it: its number in the whole lab's
    /// plan for a lab across hosts ([`Agents::lab_wide`]), else `id`. What a capability
    /// minted for the node must name.
    pub fn lab_id(&self, id: usize) -> usize {
        self.wide
            .as_ref()
            .and_then(|w| w.origin.get(id).copied())
            .unwrap_or(id)
    }

    /// True for a lab across hosts ([`Agents::lab_wide`]).
    pub fn is_lab_wide(&self) -> bool {
        self.wide.is_some()
    }

    /// Host the plan's tiles `plan.tiles_per_process` to a process when that is above 1
    /// (see [`crate::tilegroups`]); writes the shared directory file.
    pub fn grouped(mut self, plan: &Plan, dir: &LabDir) -> Result<Agents, AgentError> {
        if plan.tiles_per_process > 1 {
            self.groups = Some(Groups::new(
                plan.tiles_per_process,
                plan,
                dir,
                self.keys.public_hex(),
            )?);
        }
        Ok(self)
    }

    /// The agent process index of node `id` when tiles share processes.
    pub fn group_of(&self, id: usize) -> Option<usize> {
        self.groups.as_ref().map(|g| g.group_of(id))
    }

    /// Start (or restart) the agent of node `id`.
    pub fn start(
        &mut self,
        plan: &Plan,
        id: usize,
        dir: &LabDir,
        ledger: &mut Ledger,
    ) -> Result<u32, AgentError> {
        self.kill(id);
        let node = &plan.nodes[id];
        let mut cfg = match &self.wide {
            Some(w) => {
                // Its whole-lab identity (id, key file, peers, neighbours on other hosts);
                // its control socket where this host's supervisor looks for it.
                let mut c = w
                    .plan
                    .agent_config(w.origin[id], &dir.path, self.keys.public_hex());
                c.control_socket = crate::plan::agent_socket(&dir.path, id);
                c
            }
            None => plan.agent_config(id, &dir.path, self.keys.public_hex()),
        };
        cfg.epoch_monotonic_ns = Some(self.epoch_monotonic_ns);
        cfg.epoch_uncertainty_ns = self.epoch_uncertainty_ns;
        self.keys.configure(&mut cfg);
        cfg.revoked_ids = crate::keys::revoked_ids(dir);
        // The builds the authorities approved: neighbours must attest one (issue 18).
        cfg.approved_builds = crate::authority::approvals(dir);
        // Keys rotated since `up` (issue 17): this node's own included.
        cfg.certificates = crate::authority::certificates(dir);
        // A restart: orders the lab signed before are replays to this agent too.
        cfg.order_serial_floor = crate::authority::last_serial(dir);
        let boot = self.boots.entry(id).or_insert(0);
        *boot += 1;
        cfg.boot = *boot;
        let _ = std::fs::remove_file(&cfg.control_socket);
        if self.groups.is_some() {
            // The group's process holds the directory once for all its tiles.
            cfg.peers = Vec::new();
        }
        let cfg_path = dir.agents().join(format!("{id}.json"));
        let err = |source| AgentError::Spawn {
            node: node.name.clone(),
            source,
        };
        crate::state::write_private_unsynced(
            &cfg_path,
            &serde_json::to_vec_pretty(&cfg).expect("config serializes"),
        )
        .map_err(err)?;
        if let Some(g) = self.groups.as_mut() {
            return Ok(g.start_tile(&self.binary, plan, id, &cfg_path, dir, ledger)?);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.logs().join(format!("{}.log", node.name)))
            .map_err(err)?;
        let ns = Netns::open(&node.netns).map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let ns_fd = ns.fd().as_raw_fd();
        let mut cmd = Command::new(self.replaced.get(&id).unwrap_or(&self.binary));
        cmd.arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        // SAFETY: only async-signal-safe calls (setns, prctl, setpriority) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                crate::priority::reset_child()
            });
        }
        let child = cmd.spawn().map_err(err)?;
        let pid = child.id();
        if let Some(start_time) = process_start_time(pid) {
            let _ = ledger.record(&[Entry::Process {
                pid,
                start_time,
                what: format!("agent {}", node.name),
            }]);
        }
        self.procs.insert(id, Proc { child });
        Ok(pid)
    }

    /// Replaces node `id`'s agent with `binary` (`None`: the lab's own agent binary) and
    /// restarts it with the same configuration and a new boot (it rejoins empty and
    /// refills from its cell, see `lightcone_core::update`). Refused, with nothing
    /// changed, when tiles share processes; a spawn error leaves the node's agent stopped
    /// and its binary set (a restart tries the same binary again).
    pub fn replace(
        &mut self,
        plan: &Plan,
        id: usize,
        binary: Option<PathBuf>,
        dir: &LabDir,
        ledger: &mut Ledger,
    ) -> Result<u32, AgentError> {
        if self.groups.is_some() {
            return Err(AgentError::Grouped);
        }
        match binary {
            Some(b) if b != self.binary => {
                self.replaced.insert(id, b);
            }
            _ => {
                self.replaced.remove(&id);
            }
        }
        self.start(plan, id, dir, ledger)
    }

    /// The binary node `id`'s agent runs (or would run at its next start).
    pub fn binary_of(&self, id: usize) -> &Path {
        self.replaced.get(&id).unwrap_or(&self.binary)
    }

    /// The lab's own agent binary (what `up` started every node with).
    pub fn lab_binary(&self) -> &Path {
        &self.binary
    }

    /// Whether tiles share processes (`agents.tiles_per_process` > 1).
    pub fn is_grouped(&self) -> bool {
        self.groups.is_some()
    }

    /// Start every node's tile at once in a grouped lab (see
    /// [`crate::tilegroups::Groups::launch_all`]): configs written concurrently, every
    /// process spawned with its tiles' list, readiness once per process. `progress(tiles
    /// running, total)`. Fails, leaving the processes for [`Agents::stop_all`], as
    /// `launch_all` does.
    pub async fn start_grouped(
        &mut self,
        plan: &Plan,
        dir: &LabDir,
        ledger: &mut Ledger,
        bound: Duration,
        interrupted: impl FnMut() -> bool,
        progress: impl FnMut(usize, usize),
    ) -> Result<(), AgentError> {
        let n = plan.nodes.len();
        let epoch = self.epoch_monotonic_ns;
        let keys = &self.keys;
        let mut boots = Vec::with_capacity(n);
        for id in 0..n {
            let boot = self.boots.entry(id).or_insert(0);
            *boot += 1;
            boots.push(*boot);
        }
        let cfgs: Vec<PathBuf> = (0..n)
            .map(|id| dir.agents().join(format!("{id}.json")))
            .collect();
        // Configs: built and written a few threads at a time (a thousand files).
        let written: Vec<Result<(), AgentError>> = std::thread::scope(|s| {
            let chunk = n.div_ceil(4).max(1);
            let hs: Vec<_> = (0..n)
                .collect::<Vec<_>>()
                .chunks(chunk)
                .map(|ids| {
                    let ids = ids.to_vec();
                    let (cfgs, boots) = (&cfgs, &boots);
                    s.spawn(move || {
                        for id in ids {
                            let mut cfg = plan.tile_config(id, &dir.path);
                            cfg.epoch_monotonic_ns = Some(epoch);
                            keys.configure(&mut cfg);
                            cfg.boot = boots[id];
                            let _ = std::fs::remove_file(&cfg.control_socket);
                            crate::state::write_private_unsynced(
                                &cfgs[id],
                                &serde_json::to_vec_pretty(&cfg).expect("config serializes"),
                            )
                            .map_err(|source| AgentError::Spawn {
                                node: plan.nodes[id].name.clone(),
                                source,
                            })?;
                        }
                        Ok(())
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(Err(AgentError::Interrupted)))
                .collect()
        });
        for w in written {
            w?;
        }
        let Some(g) = self.groups.as_mut() else {
            return Err(AgentError::NoBinary);
        };
        g.launch_all(
            &self.binary,
            plan,
            &cfgs,
            dir,
            ledger,
            bound,
            interrupted,
            progress,
        )
        .await?;
        Ok(())
    }

    /// Wait until every running agent has opened its control socket, or `interrupted`
    /// says to give up.
    pub async fn wait_ready(
        &mut self,
        plan: &Plan,
        dir: &LabDir,
        timeout: Duration,
        mut interrupted: impl FnMut() -> bool,
    ) -> Result<(), AgentError> {
        let deadline = Instant::now() + timeout;
        if let Some(g) = self.groups.as_mut() {
            // A group answers a start once the tile's sockets are bound and its control
            // socket listens: check each is there and its process alive.
            for id in 0..plan.nodes.len() {
                if g.state(id).is_none() && !interrupted() {
                    return Err(AgentError::NotReady {
                        node: plan.nodes[id].name.clone(),
                        secs: timeout.as_secs(),
                        ready: (0..plan.nodes.len())
                            .filter(|i| g.state(*i).is_some())
                            .count(),
                        total: plan.nodes.len(),
                        log: dir
                            .logs()
                            .join(format!("agents-group-{}.log", g.group_of(id)))
                            .display()
                            .to_string(),
                    });
                }
            }
            return if interrupted() {
                Err(AgentError::Interrupted)
            } else {
                Ok(())
            };
        }
        let total = self.procs.len();
        for (ready, (&id, p)) in self.procs.iter_mut().enumerate() {
            let sock = crate::plan::agent_socket(&dir.path, id);
            loop {
                if sock.exists() {
                    break;
                }
                if interrupted() {
                    return Err(AgentError::Interrupted);
                }
                let exited = matches!(p.child.try_wait(), Ok(Some(_)));
                if exited || Instant::now() > deadline {
                    return Err(AgentError::NotReady {
                        node: plan.nodes[id].name.clone(),
                        secs: timeout.as_secs(),
                        ready,
                        total,
                        log: dir
                            .logs()
                            .join(format!("{}.log", plan.nodes[id].name))
                            .display()
                            .to_string(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// SIGKILL an agent (the `crash` fault). Returns false if it was not running.
    pub fn kill(&mut self, id: usize) -> bool {
        if let Some(g) = self.groups.as_mut() {
            return g.crash(id);
        }
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        let running = matches!(p.child.try_wait(), Ok(None));
        let _ = p.child.kill();
        let _ = p.child.wait();
        running
    }

    pub fn state(&mut self, id: usize) -> (AgentState, Option<u32>) {
        if let Some(g) = self.groups.as_mut() {
            return match g.state(id) {
                Some(pid) => (AgentState::Running, Some(pid)),
                None if self.boots.contains_key(&id) => (AgentState::Exited, None),
                None => (AgentState::None, None),
            };
        }
        match self.procs.get_mut(&id) {
            None => (AgentState::None, None),
            Some(p) => match p.child.try_wait() {
                Ok(None) => (AgentState::Running, Some(p.child.id())),
                _ => (AgentState::Exited, None),
            },
        }
    }

    /// Kill every agent process at once (SIGKILL, no grace) and reap them: the lab is
    /// being torn down.
    pub fn kill_all(&mut self) {
        if let Some(g) = self.groups.as_mut() {
            g.kill_all();
        }
        for p in self.procs.values_mut() {
            let _ = p.child.kill();
        }
        for p in self.procs.values_mut() {
            let _ = p.child.wait();
        }
        self.procs.clear();
    }

    /// Stop every agent: SIGTERM, a short grace period, then SIGKILL.
    pub fn stop_all(&mut self) {
        if let Some(g) = self.groups.as_mut() {
            g.stop_all();
        }
        for p in self.procs.values_mut() {
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for p in self.procs.values_mut() {
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.clear();
    }
}

/// One HTTP/1.1 request to an agent's unix control socket: status and body.
/// `capability`: the token (base64) a state-changing request carries (see
/// [`lightcone_agent::caps`]); `None` for reads.
pub async fn agent_request(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
    capability: Option<&str>,
) -> Result<(u16, Bytes), String> {
    agent_exchange(socket, method, path, body, timeout, capability)
        .await
        .map(|(status, _, body)| (status, body))
}

/// [`agent_request`], also returning the answer's content type (for proxies).
pub async fn agent_exchange(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
    capability: Option<&str>,
) -> Result<(u16, Option<String>, Bytes), String> {
    let auth = capability.map(|t| format!("Bearer {t}"));
    let fut = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "agent");
        if let Some(a) = &auth {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, content_type, bytes))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{} did not answer within {timeout:?}", socket.display()))?
}
