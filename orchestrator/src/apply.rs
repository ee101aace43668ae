//! Carry out a [`Plan`]: namespaces, veth pairs, addresses — through netlink, in parallel,
//! with every object recorded in the ledger first — and tear it all down again.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::kernel::netlink::VethEnd;
use crate::kernel::{self, KernelError, Netns};
use crate::plan::{Endpoint, Plan};
use crate::state::{processes_in_netns, same_process, Entry, LabDir, Ledger};

/// How links are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One veth pair between the two node namespaces (netem engine, or unshaped).
    Direct,
    /// Each node end paired with an end in the wire namespace (wire engine).
    Wire,
}

/// Parallel netlink requests in flight while building.
const CONCURRENCY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Kernel(#[from] KernelError),
    #[error("ledger: {0}")]
    Ledger(#[from] std::io::Error),
}

/// What happened, for progress output and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct BuildTimes {
    pub namespaces: Duration,
    pub links: Duration,
    pub addresses: Duration,
}

/// Every namespace the plan needs for `layout`, in creation order.
pub fn namespaces(plan: &Plan, layout: Layout) -> Vec<String> {
    let mut v: Vec<String> = plan.nodes.iter().map(|n| n.netns.clone()).collect();
    if layout == Layout::Wire {
        v.push(plan.wire_netns.clone());
    }
    v
}

fn disable_ipv6() {
    // Keep links quiet: no router solicitations or DAD probes in the link metrics.
    for k in ["all", "default"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{k}/disable_ipv6"), "1");
    }
}

/// Build the lab's kernel objects, calling `progress(what, done, total)` after every
/// namespace, link and namespace addressed (callers throttle). On error, what was made stays recorded in the ledger
/// for [`teardown`] to remove.
pub async fn build(
    plan: &Plan,
    layout: Layout,
    ledger: &mut Ledger,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<BuildTimes, ApplyError> {
    kernel::netns::raise_fd_limit();
    let mut times = BuildTimes::default();
    let t0 = Instant::now();
    let names = namespaces(plan, layout);
    let entries: Vec<Entry> = names
        .iter()
        .map(|n| Entry::Netns { name: n.clone() })
        .collect();
    ledger.record(&entries)?;
    let total = names.len();
    // Namespace creation is a few syscalls on a fresh thread; run a few at a time.
    let mut made: Vec<Netns> = Vec::with_capacity(total);
    // Every creation is awaited even after an error, so none completes after teardown.
    let mut finished = 0usize;
    let results: Vec<Result<Netns, KernelError>> = stream::iter(names.iter().cloned())
        .map(|name| tokio::task::spawn_blocking(move || Netns::create_with(&name, disable_ipv6)))
        .buffered(8)
        .map(|r| r.unwrap_or(Err(KernelError::ThreadPanicked)))
        .inspect(|_| {
            finished += 1;
            progress("namespaces", finished, total);
        })
        .collect()
        .await;
    for r in results {
        made.push(r?);
    }
    times.namespaces = t0.elapsed();
    let t1 = Instant::now();
    let root = kernel::handle_in(None)?;
    let made_ref: &[Netns] = &made;
    let wire_ns = (layout == Layout::Wire).then(|| &made[plan.nodes.len()]);
    let mut done = 0usize;
    let nlinks = plan.links.len();
    let mut s = stream::iter(plan.links.iter())
        .map(|l| {
            let root = &root;
            async move {
                let node_end = |e| node_end(made_ref, e, plan.link_mtu);
                match wire_ns {
                    None => {
                        kernel::netlink::create_veth_pair(root, node_end(&l.a), node_end(&l.b))
                            .await
                    }
                    Some(w) => {
                        kernel::netlink::create_veth_pair(
                            root,
                            node_end(&l.a),
                            wire_end(w, &l.a, plan.link_mtu),
                        )
                        .await?;
                        kernel::netlink::create_veth_pair(
                            root,
                            node_end(&l.b),
                            wire_end(w, &l.b, plan.link_mtu),
                        )
                        .await
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(r) = s.next().await {
        r?;
        done += 1;
        progress("links", done, nlinks);
    }
    drop(s);
    times.links = t1.elapsed();
    let t2 = Instant::now();
    // Per namespace: loopback up, addresses, peer ends up.
    let jobs: Vec<usize> = (0..made.len()).collect();
    let mut addressed = 0usize;
    let mut s = stream::iter(jobs)
        .map(|i| {
            let made = &made;
            async move {
                let ns = &made[i];
                let h = kernel::handle_in(Some(ns))?;
                let lo = kernel::ifindex(&h, "lo").await?;
                kernel::set_up(&h, lo).await?;
                if i < plan.nodes.len() {
                    for iface in &plan.nodes[i].interfaces {
                        let idx = kernel::ifindex(&h, &iface.name).await?;
                        kernel::add_address(&h, idx, iface.ip, iface.prefix).await?;
                        kernel::set_up(&h, idx).await?;
                        // The peer is known: no ARP over the emulated link, ever.
                        kernel::netlink::add_neighbour(&h, idx, iface.peer_ip, iface.peer_mac.0)
                            .await?;
                    }
                } else {
                    for l in &plan.links {
                        for name in [&l.a.wire_ifname, &l.b.wire_ifname] {
                            let idx = kernel::ifindex(&h, name).await?;
                            kernel::set_up(&h, idx).await?;
                        }
                    }
                }
                Ok::<(), KernelError>(())
            }
        })
        .buffer_unordered(CONCURRENCY / 4);
    while let Some(r) = s.next().await {
        r?;
        addressed += 1;
        progress("addresses", addressed, made.len());
    }
    drop(s);
    times.addresses = t2.elapsed();
    Ok(times)
}

/// The node end of a link as a veth end to create, with the plan's MAC and link MTU.
pub(crate) fn node_end<'x>(made: &'x [Netns], e: &'x Endpoint, mtu: Option<u32>) -> VethEnd<'x> {
    VethEnd {
        ns: &made[e.node],
        name: &e.ifname,
        mac: Some(e.mac.0),
        mtu,
    }
}

/// The wire-namespace end of a link's node end (a random MAC: the engine forwards frames
/// whatever their addresses).
pub(crate) fn wire_end<'x>(w: &'x Netns, e: &'x Endpoint, mtu: Option<u32>) -> VethEnd<'x> {
    VethEnd {
        ns: w,
        name: &e.wire_ifname,
        mac: None,
        mtu,
    }
}

/// Stop a recorded process: SIGTERM, then SIGKILL after `grace`.
pub fn stop_process(pid: u32, start_time: u64, grace: Duration) {
    stop_processes(&[(pid, start_time)], grace);
}

/// Stop recorded processes (pid, start time) together: SIGTERM to all, one shared `grace`,
/// then SIGKILL to those still there. Processes that are gone (or whose pid was recycled)
/// are skipped. Returns how many were running.
pub fn stop_processes(procs: &[(u32, u64)], grace: Duration) -> usize {
    let mut alive: Vec<(u32, u64)> = procs
        .iter()
        .copied()
        .filter(|&(pid, st)| running(pid, st))
        .collect();
    let count = alive.len();
    for &(pid, _) in &alive {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while !alive.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        alive.retain(|&(pid, st)| running(pid, st));
    }
    for &(pid, _) in &alive {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    count
}

/// SIGKILL every recorded agent process of a lab (ledger entries `agent …`) at once, no
/// grace: the lab is going, its peers with it, so a goodbye would reach nobody, and on a
/// loaded host the agents are what keeps the CPU busy while the lab is torn down (a
/// 1,000-tile lab's start-up traffic delayed the supervisor's own teardown by seconds).
/// Gone or recycled pids are skipped. Returns how many were signalled.
pub fn kill_agents(dir: &LabDir) -> usize {
    let agents: Vec<(u32, u64)> = Ledger::read(dir)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Process {
                pid,
                start_time,
                what,
            } if what.starts_with("agent") => Some((pid, start_time)),
            _ => None,
        })
        .filter(|&(pid, st)| running(pid, st))
        .collect();
    for &(pid, _) in &agents {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    agents.len()
}

/// The recorded process is alive and not a zombie. A detached supervisor's parent is
/// init, which may reap it only a second or more after it exited; it is gone for us the
/// moment it has exited.
fn running(pid: u32, start_time: u64) -> bool {
    same_process(pid, start_time)
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            // the state follows the command name, which ends at the last ')'
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
}

/// Kill every process inside a namespace (SIGKILL: they are the lab's, and the lab is going).
fn kill_processes_in(netns: &str) {
    let path = Path::new(kernel::netns::NETNS_RUN_DIR).join(netns);
    for _ in 0..50 {
        let pids = processes_in_netns(&path);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Threads that unmount and remove a lab's namespaces at once. Each removal is an
/// `umount2` and an `unlink`, mostly waiting in the kernel; with 4 threads a 1,026-node
/// wire lab's 1,027 namespaces took 1.56 s on the 2-core reference machine.
const TEARDOWN_THREADS: usize = 16;

/// What teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub processes: usize,
    pub namespaces: usize,
}

/// Remove everything the ledger lists, then the state directory. Idempotent: objects that
/// are already gone are skipped; a missing lab directory is a no-op.
pub fn teardown(dir: &LabDir, skip_pid: Option<u32>) -> Result<Removed, KernelError> {
    let entries = Ledger::read(dir);
    let mut removed = Removed::default();
    // Processes first, all at once (a lab may have a thousand agents).
    let procs: Vec<(u32, u64)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Process {
                pid, start_time, ..
            } if Some(*pid) != skip_pid => Some((*pid, *start_time)),
            _ => None,
        })
        .collect();
    removed.processes = stop_processes(&procs, Duration::from_millis(500));
    let names: Vec<&String> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Netns { name } => Some(name),
            _ => None,
        })
        .collect();
    let mut first_err = None;
    // One scan of /proc finds every process still inside any of the lab's namespaces;
    // only those namespaces need the kill-and-wait loop.
    let inhabited = crate::state::inhabited_netns(
        names
            .iter()
            .map(|n| Path::new(kernel::netns::NETNS_RUN_DIR).join(n)),
    );
    // Unmounting is independent per namespace: [`TEARDOWN_THREADS`] threads at a time.
    let results: Vec<Result<bool, KernelError>> = std::thread::scope(|sc| {
        let chunks: Vec<_> = names
            .chunks(names.len().div_ceil(TEARDOWN_THREADS).max(1))
            .map(|chunk| {
                let inhabited = &inhabited;
                sc.spawn(move || {
                    chunk
                        .iter()
                        .map(|name| {
                            if !Netns::exists(name) {
                                return Ok(false);
                            }
                            if inhabited.contains(name.as_str()) {
                                kill_processes_in(name);
                            }
                            Netns::delete(name).map(|()| true)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(KernelError::ThreadPanicked)])
            })
            .collect()
    });
    for r in results {
        match r {
            Ok(true) => removed.namespaces += 1,
            Ok(false) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    dir.remove()
        .map_err(|e| KernelError::sys(format!("remove {}", dir.path.display()), e))?;
    Ok(removed)
}

/// Namespaces that look like a lab's (`lc-<lab>_…`) but that no ledger lists: leftovers
/// of a lab whose state directory was lost; and throwaway `lc-doctor-<pid>` namespaces of
/// a `lightcone doctor` that is no longer running. `down --all` removes them too.
pub fn stray_namespaces() -> Vec<String> {
    let known: std::collections::BTreeSet<String> = LabDir::all()
        .iter()
        .flat_map(Ledger::read)
        .filter_map(|e| match e {
            Entry::Netns { name } => Some(name),
            _ => None,
        })
        .collect();
    Netns::list()
        .into_iter()
        .filter(|n| {
            let Some(rest) = n.strip_prefix(crate::topology::NETNS_PREFIX) else {
                return false;
            };
            if let Some(pid) = rest.strip_prefix("doctor-") {
                return pid
                    .parse::<u32>()
                    .is_ok_and(|p| crate::state::process_start_time(p).is_none());
            }
            rest.contains('_') && !known.contains(n)
        })
        .collect()
}

/// Remove one stray namespace (processes inside first).
pub fn remove_stray(name: &str) -> Result<(), KernelError> {
    kill_processes_in(name);
    Netns::delete(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that has exited but was not reaped yet (a detached supervisor waiting for
    /// init) is gone: `down` used to wait a second or more for init to reap it.
    #[test]
    fn a_zombie_counts_as_stopped_at_once() {
        // alive long enough to read its start time, then a zombie until waited for
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let start = crate::state::process_start_time(pid).expect("start time");
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        let t = Instant::now();
        while !zombie() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(zombie(), "child did not exit");
        let t = Instant::now();
        let running = stop_processes(&[(pid, start)], Duration::from_secs(3));
        let took = t.elapsed();
        let _ = child.wait();
        assert_eq!(running, 0);
        assert!(
            took < Duration::from_millis(500),
            "waited {took:?} for a zombie"
        );
    }
}
