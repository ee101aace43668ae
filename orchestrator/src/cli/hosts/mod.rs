//! The OpenSSH controller of a multi-host lab (issue 19): `up FILE --hosts H [--detach]`
//! (the hidden `__control` when detached), and the parts of `status` and `down` that
//! find such a lab through its controller record ([`lightcone::hosts::control`]).
//!
//! The controller places the plan, checks every host's `lightcone` binary (version and
//! SHA-256 against its own) before anything is built anywhere, then starts one
//! `lightcone worker --stdio` per host that holds nodes, each over its own ssh session
//! (multiplexed: [`lightcone::hosts::ssh`]). The session's stdin is the worker's life:
//! the controller holds it open while the lab is up; closing it (Ctrl-C, `down`, a failed
//! host, or the controller being killed) makes every worker tear its slice down.
//!
//! Here: `up --hosts` (placing, the detached controller, signals) and `down`; in
//! [`session`] the controller's loop over the workers' sessions; in [`learn`] what `up`
//! learns of the hosts before it sends slices; in [`status`] the merged `status`; in
//! [`route`] commands about nodes run on their hosts, and `probe` across hosts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context};
use lightcone::hosts::control::{ControlDir, HostRecord};
use lightcone::hosts::slice::Slice;
use lightcone::hosts::ssh::{control_root, Ssh};
use lightcone::hosts::{self, Hosts};
use lightcone::link::engine::EngineChoice;
use lightcone::plan::{self, Plan};
use lightcone::progress::Renderer;

use super::{code, engine_arg, invalid, load, state, Failure, Rendered};

mod learn;
mod route;
mod session;
mod status;

pub(crate) use route::{probe_across, route_to_host};
use session::control;
pub(crate) use status::{all_lab_names, status_json, status_print};

/// How long the version check of one host may take (connection and authentication
/// included).
const IDENTIFY_BOUND: Duration = Duration::from_secs(30);
/// How long every worker has, after its stdin closed, to report its slice torn down.
pub(crate) const TEARDOWN_BOUND: Duration = Duration::from_secs(45);
/// Lines of a worker's stderr kept for the error message.
const STDERR_TAIL: usize = 8;

/// A lab placed on its hosts, one slice per host that holds nodes; nothing started.
struct Prepared {
    lab: String,
    /// The whole lab's plan.
    plan: Plan,
    hosts: Hosts,
    /// (host index, its slice), in hosts.yaml order.
    slices: Vec<(usize, Slice)>,
}

/// Load, place and slice; refuse what cannot be run today. Nothing is changed.
fn prepare(
    file: &Path,
    hosts_file: &Path,
    engine: EngineChoice,
    no_agents: bool,
) -> Result<Prepared, Failure> {
    let topo = load(file)?;
    let p: Plan = plan::plan(&topo);
    let h = hosts::load(hosts_file).map_err(|e| match e {
        lightcone::topology::LoadError::Invalid { rendered, .. } => {
            Failure(code::INVALID, Rendered(rendered).into())
        }
        e => invalid(e),
    })?;
    let placed = hosts::placement::place(&p, &h).map_err(|e| {
        invalid(anyhow!(
            "{} cannot be placed on the hosts of {}: {e}; nothing was changed",
            file.display(),
            hosts_file.display()
        ))
    })?;
    if !placed.crossing.is_empty() && p.tiles_per_process > 1 {
        return Err(invalid(anyhow!(
            "{}: agents with {} tiles per process cannot span hosts yet, and {} link(s) cross hosts; set `agents: {{ tiles_per_process: 1 }}` or keep the lab on one host; nothing was changed",
            file.display(),
            p.tiles_per_process,
            placed.crossing.len()
        )));
    }
    refuse_if_up(&p.lab)?;
    let mut slices = Vec::new();
    for i in 0..h.hosts.len() {
        if placed.nodes_on(i).is_empty() {
            continue;
        }
        let mut s = Slice::of(&p, &h, &placed, i).map_err(Failure::from)?;
        s.engine = engine;
        s.agents = !no_agents;
        slices.push((i, s));
    }
    Ok(Prepared {
        lab: p.lab.clone(),
        plan: p,
        hosts: h,
        slices,
    })
}

/// A lab of this name is up here already (as a multi-host lab or a local one).
fn refuse_if_up(lab: &str) -> Result<(), Failure> {
    let ctl = ControlDir::new(lab).map_err(invalid)?;
    if let Some(r) = ctl.read() {
        return Err(state(if r.alive() {
            format!("lab {lab} is already up on hosts (controller pid {}); run `lightcone down {lab}` first", r.pid)
        } else {
            format!("lab {lab} has a controller record whose controller is gone; run `lightcone down {lab}` to clean it up")
        }));
    }
    if ctl.exists() {
        return Err(state(format!(
            "lab {lab} has a controller directory ({}); run `lightcone down {lab}` to clean it up",
            ctl.path.display()
        )));
    }
    lightcone::supervisor::check_not_up(lab).map_err(|e| state(e.to_string()))
}

/// `lightcone up FILE --hosts H [--detach]`.
pub(crate) fn cmd_up_hosts(
    file: PathBuf,
    hosts_file: PathBuf,
    detach: bool,
    engine: EngineChoice,
    no_agents: bool,
) -> Result<(), Failure> {
    // Refusals (bad files, crossing links, a lab already up) before anything starts.
    let prep = prepare(&file, &hosts_file, engine, no_agents)?;
    if detach {
        return up_detached(&file, &hosts_file, engine, no_agents);
    }
    // The controller writes to the sessions' stdin: a session that died is an EPIPE to
    // handle, not a signal that kills the controller before it closes the others.
    // SAFETY: setting a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let progress = std::cell::RefCell::new(Renderer::default());
    control(
        prep,
        |l| progress.borrow_mut().line(l, false),
        |rec| {
            progress.borrow_mut().clear();
            println!("lab {} is up on {} host(s)", rec.lab, rec.hosts.len());
            for h in &rec.hosts {
                println!("  {}", host_line(h));
            }
            println!("press Ctrl-C to tear it down");
        },
    )
}

/// `lightcone __control FILE --hosts H`: the detached controller; progress and `READY`
/// on stdout, then its log.
pub(crate) fn cmd_control(
    file: PathBuf,
    hosts_file: PathBuf,
    engine: EngineChoice,
    no_agents: bool,
) -> Result<(), Failure> {
    let prep = prepare(&file, &hosts_file, engine, no_agents)?;
    let log = ControlDir::new(&prep.lab).map_err(invalid)?.log_path();
    control(
        prep,
        |l| {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{l}");
            let _ = o.flush();
        },
        |rec| {
            let mut o = std::io::stdout().lock();
            for h in &rec.hosts {
                let _ = writeln!(o, "  {}", host_line(h));
            }
            let _ = writeln!(o, "\u{1}READY {}", std::process::id());
            let _ = o.flush();
            drop(o);
            super::up::redirect_stdio(&log);
        },
    )
}

fn host_line(h: &HostRecord) -> String {
    format!(
        "host {} ({}): {} nodes, worker pid {}",
        h.name,
        h.ssh,
        h.nodes.len(),
        h.worker_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into())
    )
}

/// Start `__control` as a daemon and relay its progress until every host is ready.
fn up_detached(
    file: &Path,
    hosts_file: &Path,
    engine: EngineChoice,
    no_agents: bool,
) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("find lightcone executable")?;
    let mut c = Command::new(exe);
    c.arg("__control")
        .arg(file)
        .arg("--hosts")
        .arg(hosts_file)
        .arg("--link-engine")
        .arg(engine_arg(engine));
    if no_agents {
        c.arg("--no-agents");
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = c.spawn().context("start the controller")?;
    let out = BufReader::new(child.stdout.take().expect("piped"));
    let mut progress = Renderer::default();
    let mut hosts = Vec::new();
    for line in out.lines() {
        let line = line.unwrap_or_default();
        if line.starts_with("\u{1}READY ") {
            progress.clear();
            println!("lab is up (controller pid {})", child.id());
            for h in &hosts {
                println!("{h}");
            }
            println!("tear it down with `lightcone down`");
            return Ok(());
        }
        if line.starts_with("  host ") {
            hosts.push(line);
            continue;
        }
        progress.line(&line, false);
    }
    progress.clear();
    Err(super::up::exited_before_up(&mut child, "the controller"))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set [`STOP`]; the controller's loops look at it every 100 ms.
fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
}

/// `down LAB` of a multi-host lab: stop its controller (it closes every session and waits
/// for the teardowns), then end what a killed controller left (its ssh masters, its
/// record). `Ok(false)`: the lab has no controller record.
pub(crate) fn down_controller(lab: &str) -> Result<bool, Failure> {
    let ctl = ControlDir::new(lab).map_err(invalid)?;
    if !ctl.exists() {
        return Ok(false);
    }
    let rec = ctl.read();
    if let Some(r) = rec.as_ref().filter(|r| r.alive()) {
        lightcone::apply::stop_process(
            r.pid,
            r.start_time,
            TEARDOWN_BOUND + Duration::from_secs(15),
        );
        println!(
            "lab {lab}: controller pid {} stopped; every host's worker tore its slice down",
            r.pid
        );
    }
    if let Some(r) = &rec {
        if let Ok(ssh) = Ssh::new(lab, r.ssh_config.clone(), &control_root()) {
            for h in &r.hosts {
                ssh.close_master(&h.spec());
            }
        }
    }
    ctl.remove()
        .with_context(|| format!("remove {}", ctl.path.display()))?;
    Ok(true)
}
