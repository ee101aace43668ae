//! Agent processes that host many tiles (`agents: {tiles_per_process: N}` in the topology).
//!
//! Nodes go to processes in plan order, `N` per process (a generated lab lists a cell's
//! tiles together, so with `N` = tiles per cell one process hosts one cell). Each process is
//! `lightcone-agent --group SOCKET --directory FILE` started in the host's namespace (it
//! enters each tile's namespace on a throwaway thread to bind that tile's sockets), holding
//! one read-only directory of every node for all its tiles (`agents/directory.json`, written
//! once; the tiles' configs carry no peer list). The supervisor starts and crashes tiles over
//! the process's socket (`lightcone_agent::group`): a crash ends one tile (its node, sockets
//! and control socket, no goodbye) and a restart starts it again, empty, in the same process.
//! A process that dies (killed, the kernel's OOM killer) takes all its tiles: they report
//! `exited`, as crashed; restarting one of them starts a new process for it.
//!
//! Why a fixed count rather than a pool sized to the cores: the tiles' cost is on one event
//! loop per process, so a few processes already use both cores of a small host, while a
//! fixed, topology-given count keeps the blast radius of a process's death and the mapping
//! (shown by `status`, the run dir's `agents/processes.json` and the report) independent of
//! the host the lab happens to run on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::state::{process_start_time, Entry, LabDir, Ledger};

/// Why a group process or one of its tiles could not start. Carried by
/// [`crate::agents::AgentError::Group`].
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not open its socket within {secs} s; see {log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    /// A group process ended before all its tiles ran (a tile's config, key or sockets
    /// were refused): `up` fails and tears the lab down.
    #[error("{what} exited before its tiles were running: {last} (see {log})")]
    Exited {
        what: String,
        last: String,
        log: String,
    },
    /// A group process's socket is there but it does not say all its tiles run.
    #[error("{what} does not answer with all its tiles running: {reason}")]
    NotAnswering { what: String, reason: String },
    #[error("only {started} of {total} agents started within {secs} s (the bound: 30 s + 200 ms per node); the host cannot bring this lab up in time: try a slower `--time-scale`, more `agents.tiles_per_process`, or a smaller lab")]
    NotAllStarted {
        started: usize,
        total: usize,
        secs: u64,
    },
    #[error("interrupted while starting agents ({started} of {total} started)")]
    Interrupted { started: usize, total: usize },
}

/// How tiles map to agent processes (`agents/processes.json`, `status`, the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMap {
    /// Tiles per process, as the topology asked (1: one process per node).
    pub tiles_per_process: usize,
    /// Agent processes planned: ceil(nodes / tiles_per_process).
    pub processes: usize,
    /// Nodes of the lab.
    pub nodes: usize,
    /// Node names of each process, by process index (empty in [`ProcessMap::of_counts`]).
    pub groups: Vec<Vec<String>>,
}

impl ProcessMap {
    pub fn of(plan: &Plan) -> ProcessMap {
        let k = plan.tiles_per_process.max(1);
        let groups: Vec<Vec<String>> = plan
            .nodes
            .chunks(k)
            .map(|c| c.iter().map(|n| n.name.clone()).collect())
            .collect();
        ProcessMap {
            tiles_per_process: k,
            processes: groups.len(),
            nodes: plan.nodes.len(),
            groups,
        }
    }

    /// The counts alone (no names) for `nodes` nodes, `k` per process.
    pub fn of_counts(nodes: usize, k: usize) -> ProcessMap {
        let k = k.max(1);
        ProcessMap {
            tiles_per_process: k,
            processes: nodes.div_ceil(k),
            nodes,
            groups: Vec::new(),
        }
    }

    /// One line for `up`, `status` and the report.
    pub fn summary(&self) -> String {
        let nodes = self.nodes;
        if self.tiles_per_process <= 1 {
            format!("{nodes} agent processes, one per node")
        } else {
            format!(
                "{nodes} tiles in {} agent processes ({} tiles per process, in plan order)",
                self.processes, self.tiles_per_process
            )
        }
    }
}

/// The group process's control socket.
pub fn group_socket(dir: &LabDir, g: usize) -> PathBuf {
    dir.agents().join(format!("group-{g}.sock"))
}

/// A group process's log (stdout and stderr).
pub fn group_log(dir: &LabDir, g: usize) -> PathBuf {
    dir.logs().join(format!("agents-group-{g}.log"))
}

/// The directory every group process reads (every node, with its public key).
pub fn directory_path(dir: &LabDir) -> PathBuf {
    dir.agents().join("directory.json")
}

/// The lab's tile groups (see the module doc). Owned by [`crate::agents::Agents`].
pub struct Groups {
    size: usize,
    /// The lab's state directory (sockets, logs, configs).
    dir: LabDir,
    procs: BTreeMap<usize, Child>,
    /// Tiles started and not crashed since.
    live: BTreeSet<usize>,
}

/// How long a group process may take to open its socket, and a tile request to answer.
const GROUP_READY: Duration = Duration::from_secs(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

impl Groups {
    /// Groups of `size` tiles; writes the shared directory file once.
    pub fn new(
        size: usize,
        plan: &Plan,
        dir: &LabDir,
        public_keys: &[String],
    ) -> Result<Groups, GroupError> {
        let peers = if plan.nodes.is_empty() {
            Vec::new()
        } else {
            plan.agent_config(0, &dir.path, public_keys).peers
        };
        crate::state::write_private(
            &directory_path(dir),
            &serde_json::to_vec(&peers).expect("peers serialize"),
        )
        .map_err(|source| GroupError::Spawn {
            what: "the agents' directory file".into(),
            source,
        })?;
        Ok(Groups {
            size: size.max(1),
            dir: LabDir {
                lab: dir.lab.clone(),
                path: dir.path.clone(),
            },
            procs: BTreeMap::new(),
            live: BTreeSet::new(),
        })
    }

    pub fn group_of(&self, id: usize) -> usize {
        id / self.size
    }

    fn alive(&mut self, g: usize) -> Option<u32> {
        let p = self.procs.get_mut(&g)?;
        matches!(p.try_wait(), Ok(None)).then(|| p.id())
    }

    /// Starts group `g`'s process unless it runs; waits for its socket. A dead process's
    /// tiles are no longer live.
    fn ensure(
        &mut self,
        binary: &Path,
        g: usize,
        dir: &LabDir,
        ledger: &mut Ledger,
    ) -> Result<u32, GroupError> {
        if let Some(pid) = self.alive(g) {
            return Ok(pid);
        }
        let (mut child, entry) = self.spawn(binary, g, None, dir)?;
        let pid = child.id();
        if let Some(e) = entry {
            let _ = ledger.record(&[e]);
        }
        let what = format!("agent group {g}");
        let sock = group_socket(dir, g);
        let deadline = Instant::now() + GROUP_READY;
        while !sock.exists() {
            if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(GroupError::NotReady {
                    what,
                    secs: GROUP_READY.as_secs(),
                    log: group_log(dir, g).display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.procs.insert(g, child);
        Ok(pid)
    }

    /// Spawns group `g`'s process (its tiles no longer live), with the `--tiles` manifest
    /// `tiles` if given; returns it and its ledger entry (for the caller to record: one
    /// `fsync` for many processes). Does not wait for it.
    fn spawn(
        &mut self,
        binary: &Path,
        g: usize,
        tiles: Option<&Path>,
        dir: &LabDir,
    ) -> Result<(Child, Option<Entry>), GroupError> {
        let size = self.size;
        self.live.retain(|t| t / size != g);
        if let Some(mut old) = self.procs.remove(&g) {
            let _ = old.wait();
        }
        let what = format!("agent group {g}");
        let err = |source| GroupError::Spawn {
            what: what.clone(),
            source,
        };
        let sock = group_socket(dir, g);
        let _ = std::fs::remove_file(&sock);
        let log = File::options()
            .create(true)
            .append(true)
            .open(group_log(dir, g))
            .map_err(err)?;
        let mut cmd = Command::new(binary);
        cmd.arg("--group")
            .arg(&sock)
            .arg("--directory")
            .arg(directory_path(dir))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        if let Some(t) = tiles {
            // Held until every process is ready (see `launch_all`).
            cmd.arg("--tiles").arg(t).arg("--hold");
        }
        // SAFETY: only async-signal-safe calls (prctl, setpriority) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                crate::priority::reset_child()
            });
        }
        let child = cmd.spawn().map_err(err)?;
        let pid = child.id();
        let entry = process_start_time(pid).map(|start_time| Entry::Process {
            pid,
            start_time,
            what: what.clone(),
        });
        Ok((child, entry))
    }

    /// Starts every tile of the lab at once: every group's process is spawned with its
    /// tiles' manifest (`agents/group-{g}.tiles.json`; `cfgs[id]` is tile `id`'s config
    /// file) and `--hold`; each process prepares its tiles concurrently (sockets bound,
    /// control sockets listening) and puts its socket in place once all are ready (see
    /// `lightcone_agent::group`); each process is asked once (`GET /tiles`) that all its
    /// tiles are held ready; then all are released together (SIGUSR1). No round trip per
    /// tile, and no process's start waits behind the traffic of tiles already running (a
    /// 1,000-tile lab at time_scale 1 saturates two cores as its tiles start: released as
    /// they came, the last tenth of the processes took 20 s more to start). `progress(tiles
    /// running, total)` after each poll; fails (the processes stay for the caller's
    /// `stop_all`) if a process exits, does not answer, `interrupted()` says so, or
    /// `bound` passes.
    #[allow(clippy::too_many_arguments)]
    pub async fn launch_all(
        &mut self,
        binary: &Path,
        plan: &Plan,
        cfgs: &[PathBuf],
        dir: &LabDir,
        ledger: &mut Ledger,
        bound: Duration,
        mut interrupted: impl FnMut() -> bool,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(), GroupError> {
        let t0 = Instant::now();
        let total = plan.nodes.len();
        let groups = total.div_ceil(self.size);
        let netns_dir = Path::new(crate::kernel::netns::NETNS_RUN_DIR);
        let mut entries = Vec::with_capacity(groups);
        for g in 0..groups {
            let ids = g * self.size..((g + 1) * self.size).min(total);
            let specs: Vec<serde_json::Value> = ids
                .map(|id| {
                    serde_json::json!({
                        "id": id,
                        "config": cfgs[id],
                        "netns": netns_dir.join(&plan.nodes[id].netns),
                    })
                })
                .collect();
            let manifest = dir.agents().join(format!("group-{g}.tiles.json"));
            crate::state::write_private_unsynced(
                &manifest,
                &serde_json::to_vec(&specs).expect("manifest serializes"),
            )
            .map_err(|source| GroupError::Spawn {
                what: format!("agent group {g}'s tile list"),
                source,
            })?;
            let spawned = self.spawn(binary, g, Some(&manifest), dir);
            let (child, entry) = match spawned {
                Ok(x) => x,
                Err(e) => {
                    let _ = ledger.record(&entries);
                    return Err(e);
                }
            };
            // Held by `procs` at once, so `stop_all` reaps it whatever happens next.
            self.procs.insert(g, child);
            entries.extend(entry);
        }
        let _ = ledger.record(&entries);
        let size = self.size;
        let tiles_of = |g: usize| ((g + 1) * size).min(total) - g * size;
        let mut pending: BTreeSet<usize> = (0..groups).collect();
        let mut running = 0usize;
        loop {
            let mut now_ready = Vec::new();
            for &g in &pending {
                if group_socket(dir, g).exists() {
                    now_ready.push(g);
                } else if self.alive(g).is_none() {
                    let log = group_log(dir, g);
                    return Err(GroupError::Exited {
                        what: format!("agent group {g}"),
                        last: last_line(&log),
                        log: log.display().to_string(),
                    });
                }
            }
            for g in now_ready {
                pending.remove(&g);
                running += tiles_of(g);
            }
            progress(running, total);
            if pending.is_empty() {
                break;
            }
            if interrupted() {
                return Err(GroupError::Interrupted {
                    started: running,
                    total,
                });
            }
            if t0.elapsed() > bound {
                return Err(GroupError::NotAllStarted {
                    started: running,
                    total,
                    secs: bound.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Each process once: are all its tiles running? (Asked concurrently: a process
        // busy with its tiles' start-up traffic answers late, not never.)
        let answers: Vec<Result<(), GroupError>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..groups)
                .map(|g| {
                    s.spawn(move || {
                        let want: Vec<u32> = (g * size..((g + 1) * size).min(total))
                            .map(|i| i as u32)
                            .collect();
                        let what = format!("agent group {g}");
                        let (status, body) = request(&group_socket(dir, g), "GET", "/tiles", "")
                            .map_err(|reason| GroupError::NotAnswering {
                                what: what.clone(),
                                reason,
                            })?;
                        let reply: lightcone_agent::group::TilesReply = serde_json::from_str(&body)
                            .map_err(|e| GroupError::NotAnswering {
                                what: what.clone(),
                                reason: format!("HTTP {status}: {e}"),
                            })?;
                        if reply.held != want || !reply.running.is_empty() {
                            return Err(GroupError::NotAnswering {
                                what,
                                reason: format!(
                                    "held {:?}, running {:?}, exited {:?}; expected {:?} held",
                                    reply.held, reply.running, reply.exited, want
                                ),
                            });
                        }
                        Ok(())
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(GroupError::NotAnswering {
                            what: "agent group".into(),
                            reason: "the asking thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        for a in answers {
            a?;
        }
        // Go: every process releases its tiles at once (SIGUSR1; the kernel delivers it
        // whatever the process is doing, so a busy host does not stretch this).
        for g in 0..groups {
            if let Some(pid) = self.alive(g) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGUSR1,
                );
            }
        }
        self.live.extend(0..total);
        Ok(())
    }

    /// Starts tile `id` (config already written at `cfg_path`) in its group's process,
    /// starting that process if it does not run. Returns the process's pid.
    #[allow(clippy::too_many_arguments)]
    pub fn start_tile(
        &mut self,
        binary: &Path,
        plan: &Plan,
        id: usize,
        cfg_path: &Path,
        dir: &LabDir,
        ledger: &mut Ledger,
    ) -> Result<u32, GroupError> {
        let g = self.group_of(id);
        let pid = self.ensure(binary, g, dir, ledger)?;
        let body = serde_json::json!({
            "config": cfg_path,
            "netns": Path::new(crate::kernel::netns::NETNS_RUN_DIR).join(&plan.nodes[id].netns),
        })
        .to_string();
        let log = group_log(dir, g);
        let spawn_err = |m: String| GroupError::Spawn {
            what: format!("agent {}", plan.nodes[id].name),
            source: std::io::Error::other(format!(
                "{m} (agent group {g}, pid {pid}; its log's last line: {})",
                last_line(&log)
            )),
        };
        let (status, text) = request(
            &group_socket(dir, g),
            "POST",
            &format!("/tiles/{id}/start"),
            &body,
        )
        .map_err(spawn_err)?;
        if status != 200 {
            return Err(spawn_err(format!(
                "agent group {g} refused: {}",
                text.trim()
            )));
        }
        self.live.insert(id);
        Ok(pid)
    }

    /// Crashes tile `id` (its process goes on). False if it was not running.
    pub fn crash(&mut self, id: usize) -> bool {
        let g = self.group_of(id);
        if self.alive(g).is_none() || !self.live.remove(&id) {
            return false;
        }
        matches!(
            request(
                &group_socket(&self.dir, g),
                "POST",
                &format!("/tiles/{id}/crash"),
                ""
            ),
            Ok((200, _))
        )
    }

    /// Running (and the process's pid) or not: a tile runs while its process lives, it was
    /// started and not crashed since, and its control socket is there (a tile that stopped
    /// by itself removed it).
    pub fn state(&mut self, id: usize) -> Option<u32> {
        let pid = self.alive(self.group_of(id))?;
        (self.live.contains(&id) && crate::plan::agent_socket(&self.dir.path, id).exists())
            .then_some(pid)
    }

    /// SIGKILL every process at once and reap them (the lab is being torn down).
    pub fn kill_all(&mut self) {
        for p in self.procs.values_mut() {
            let _ = p.kill();
        }
        for p in self.procs.values_mut() {
            let _ = p.wait();
        }
        self.procs.clear();
        self.live.clear();
    }

    /// SIGTERM every process, a short grace period, then SIGKILL.
    pub fn stop_all(&mut self) {
        for p in self.procs.values_mut() {
            if matches!(p.try_wait(), Ok(None)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for p in self.procs.values_mut() {
            while matches!(p.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
        self.procs.clear();
        self.live.clear();
    }
}

/// The last non-empty line of a log, for an error message.
fn last_line(p: &Path) -> String {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "(empty)".into())
}

/// One blocking HTTP/1.1 request over a group's unix socket (the supervisor calls it with
/// the lab locked, from synchronous code): status and body.
pub fn request(sock: &Path, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    request_within(sock, method, path, body, REQUEST_TIMEOUT)
}

/// [`request`] with its own timeout for each read and write (not zero).
pub fn request_within(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let timeout = timeout.max(Duration::from_millis(1));
    let mut s =
        UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write {}: {e}", sock.display()))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .map_err(|e| format!("read {}: {e}", sock.display()))?;
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{}: no HTTP status in the answer", sock.display()))?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(yaml: &str) -> Plan {
        let dir = std::env::temp_dir().join(format!("lc-tilegroups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.yaml");
        std::fs::write(&p, yaml).unwrap();
        let topo = crate::topology::load(&p).unwrap();
        crate::plan::plan(&topo)
    }

    /// Tiles go to processes in plan order, `tiles_per_process` each; the last holds the rest.
    #[test]
    fn tiles_map_to_processes_in_plan_order() {
        let plan = plan_of(
            "name: g\nagents: {tiles_per_process: 2}\nnodes: {a: {}, b: {}, c: {}, d: {}, e: {}}\nlinks: [{endpoints: [a, b]}]\n",
        );
        let m = ProcessMap::of(&plan);
        assert_eq!(m.processes, 3);
        assert_eq!(
            m.groups,
            vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]]
                .into_iter()
                .map(|g| g.into_iter().map(String::from).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            m.summary(),
            "5 tiles in 3 agent processes (2 tiles per process, in plan order)"
        );
        let c = ProcessMap::of_counts(5, 2);
        assert_eq!((c.processes, c.summary()), (3, m.summary()));
        let one = plan_of("name: g\nnodes: {a: {}, b: {}}\nlinks: [{endpoints: [a, b]}]\n");
        assert_eq!(one.tiles_per_process, 1);
        assert_eq!(
            ProcessMap::of(&one).summary(),
            "2 agent processes, one per node"
        );
    }
}
