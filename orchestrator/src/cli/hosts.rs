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

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use lightcone::hosts::control::{
    parse_identity, ControlDir, ControllerRecord, HostRecord, WorkerEvent, WorkerState,
};
use lightcone::hosts::slice::{Controller, Slice};
use lightcone::hosts::ssh::{control_root, Ssh};
use lightcone::hosts::{self, Hosts};
use lightcone::link::engine::EngineChoice;
use lightcone::plan::{self, Plan};
use lightcone::progress::Renderer;
use lightcone::state::{process_start_time, LabDir};

use super::{code, engine_arg, invalid, load, state, Failure, Rendered};

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
            redirect_stdio(&log);
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
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let st = child.wait().context("wait for the controller")?;
    let msg = err.trim().trim_start_matches("error: ").to_string();
    let code = st.code().unwrap_or(1) as u8;
    Err(Failure(
        if code == 0 { 1 } else { code },
        anyhow!(if msg.is_empty() {
            "the controller exited before the lab was up".into()
        } else {
            msg
        }),
    ))
}

/// After `READY` nobody reads the controller's output: send it to its log.
fn redirect_stdio(log: &Path) {
    if let Ok(f) = std::fs::File::options().create(true).append(true).open(log) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: dup2 on descriptors this process owns.
        unsafe {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
        }
    }
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

/// What the reader threads send the controller.
enum Msg {
    Event(usize, WorkerEvent),
    /// A stdout line that is no worker event, or a stderr line.
    Text(usize, String),
    /// The session's stdout closed.
    Closed(usize),
}

/// One worker's ssh session.
struct Session {
    /// Index in the record's `hosts`.
    at: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    closed: bool,
    stderr_tail: Vec<String>,
}

/// Identify every host, start every worker, wait for all to be ready, hold the lab until
/// a signal or a worker's end, then close every session and wait for the teardowns.
fn control(
    prep: Prepared,
    mut report: impl FnMut(&str),
    ready: impl FnOnce(&ControllerRecord),
) -> Result<(), Failure> {
    catch_stop_signals();
    let Prepared {
        lab,
        plan: whole,
        hosts,
        slices,
    } = prep;
    let ctl = ControlDir::new(&lab).map_err(invalid)?;
    let root = control_root();
    std::fs::create_dir_all(&root)
        .with_context(|| format!("create the ssh control directory {}", root.display()))?;
    let ssh = Ssh::new(&lab, hosts.ssh_config.clone(), &root).map_err(invalid)?;
    let ours = Controller::this().context("hash this binary")?;
    // 1. The record, made exclusively: two `up`s of one lab cannot both pass here.
    let mut rec = ControllerRecord {
        lab: lab.clone(),
        pid: std::process::id(),
        start_time: process_start_time(std::process::id()).unwrap_or(0),
        ssh_config: hosts.ssh_config.clone(),
        hosts: slices
            .iter()
            .map(|(i, s)| HostRecord {
                name: hosts.hosts[*i].name.clone(),
                ssh: hosts.hosts[*i].ssh.clone(),
                lightcone: hosts.hosts[*i].lightcone.clone(),
                nodes: s.plan.nodes.iter().map(|n| n.name.clone()).collect(),
                worker: WorkerState::Starting,
                worker_pid: None,
                api: None,
                api_token: None,
                message: None,
                underlay_rtt_ms: Default::default(),
                clock: None,
            })
            .collect(),
    };
    std::fs::create_dir_all(lightcone::hosts::control::records_root())
        .context("create the controller records directory")?;
    std::fs::create_dir(&ctl.path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            state(format!(
                "lab {lab} is being brought up by another controller; nothing was changed"
            ))
        } else {
            Failure::from(anyhow!("create {}: {e}", ctl.path.display()))
        }
    })?;
    if let Err(e) = ctl.write(&rec).and_then(|()| {
        std::fs::write(
            ctl.plan_path(),
            serde_json::to_vec(&whole).map_err(std::io::Error::other)?,
        )
    }) {
        let _ = ctl.remove();
        return Err(anyhow!("write {}: {e}", ctl.path.display()).into());
    }
    // 2. Every host's binary (and, if links cross hosts, its underlay), before anything
    //    is built anywhere.
    let crossing = slices.iter().any(|(_, s)| !s.cross.is_empty());
    let mut underlays = std::collections::BTreeMap::new();
    for (i, _) in &slices {
        let h = &hosts.hosts[*i];
        report(&format!(
            "[{}] checking {} over ssh {}",
            h.name, h.lightcone, h.ssh
        ));
        match identify(&ssh, h, &ours, crossing) {
            Ok(Some(u)) => {
                underlays.insert(h.name.clone(), u.ipv4);
            }
            Ok(None) => {}
            Err(e) => {
                for (j, _) in &slices {
                    ssh.close_master(&hosts.hosts[*j]);
                }
                let _ = ctl.remove();
                return Err(e);
            }
        }
    }
    // 2b. What the hosts are to each other: underlay round trips, clocks; the slices'
    //     cross-host ends and the lab-wide part filled in.
    let mut slices = slices;
    if let Err(e) = learn_hosts(
        &ssh,
        &hosts,
        &whole,
        &underlays,
        &mut slices,
        &mut rec,
        &mut report,
    ) {
        for (j, _) in &slices {
            ssh.close_master(&hosts.hosts[*j]);
        }
        let _ = ctl.remove();
        return Err(e);
    }
    let _ = ctl.write(&rec);
    let slices = slices;
    // 3. The sessions.
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut sessions: Vec<Session> = Vec::new();
    let total_nodes: usize = slices.iter().map(|(_, s)| s.plan.nodes.len()).sum();
    for (at, (i, slice)) in slices.iter().enumerate() {
        let h = &hosts.hosts[*i];
        match start_worker(&ssh, h, slice, at, &tx) {
            Ok(s) => sessions.push(s),
            Err(e) => {
                let e = anyhow!("host {}: {e}", h.name);
                finish(
                    &ctl,
                    &ssh,
                    &hosts,
                    &slices,
                    &mut rec,
                    &mut sessions,
                    &rx,
                    &mut report,
                );
                return Err(Failure(code::FAILURE, e));
            }
        }
    }
    drop(tx);
    // 4. Every worker ready, within a bound.
    let bound = lightcone::supervisor::agents_ready_bound(total_nodes) + IDENTIFY_BOUND;
    let deadline = Instant::now() + bound;
    let failed: Option<(u8, String)> = loop {
        if STOP.load(Ordering::SeqCst) {
            break Some((code::FAILURE, "interrupted before the lab was up".into()));
        }
        if rec.hosts.iter().all(|h| h.worker == WorkerState::Ready) {
            break None;
        }
        if Instant::now() > deadline {
            let waiting: Vec<&str> = rec
                .hosts
                .iter()
                .filter(|h| h.worker != WorkerState::Ready)
                .map(|h| h.name.as_str())
                .collect();
            break Some((
                code::FAILURE,
                format!(
                    "host(s) {} not ready within {}s",
                    waiting.join(", "),
                    bound.as_secs()
                ),
            ));
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => {
                if let Some(f) = handle(m, &mut rec, &mut sessions, &mut report) {
                    break Some(f);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Some((code::FAILURE, "every session ended".into()))
            }
        }
    };
    if let Some((c, msg)) = failed {
        let _ = ctl.write(&rec);
        let codes = finish(
            &ctl,
            &ssh,
            &hosts,
            &slices,
            &mut rec,
            &mut sessions,
            &rx,
            &mut report,
        );
        // The worker's own exit code when it gave one (2 refused, 3 busy).
        let c = codes
            .into_iter()
            .flatten()
            .find(|&x| (1..=3).contains(&x))
            .map(|x| x as u8)
            .unwrap_or(c);
        return Err(Failure(c, anyhow!(msg)));
    }
    let _ = ctl.write(&rec);
    ready(&rec);
    // 5. Hold the lab until a signal, or until a worker ends on its own.
    let ended: Option<String> = loop {
        if STOP.load(Ordering::SeqCst) {
            break None;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => {
                if let Some((_, msg)) = handle(m, &mut rec, &mut sessions, &mut report) {
                    break Some(msg);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Some("every session ended".into()),
        }
    };
    let _ = ctl.write(&rec);
    finish(
        &ctl,
        &ssh,
        &hosts,
        &slices,
        &mut rec,
        &mut sessions,
        &rx,
        &mut report,
    );
    match ended {
        None => {
            report(&format!("lab {lab} is down"));
            Ok(())
        }
        Some(msg) => Err(Failure(
            code::FAILURE,
            anyhow!("{msg}; every host's slice was torn down"),
        )),
    }
}

/// A worker's progress line as the controller relays it: with its host's name, except a
/// count marker ([`lightcone::progress::marker`]), relayed as it is for the renderer.
fn progress_line(host: &str, message: &str) -> String {
    if lightcone::progress::parse(message).is_some() {
        message.to_string()
    } else {
        format!("[{host}] {message}")
    }
}

/// Apply one message to the record; `Some((code, message))` when it ends the lab.
fn handle(
    m: Msg,
    rec: &mut ControllerRecord,
    sessions: &mut [Session],
    report: &mut impl FnMut(&str),
) -> Option<(u8, String)> {
    match m {
        Msg::Event(at, e) => {
            let h = &mut rec.hosts[at];
            match e {
                WorkerEvent::Progress { message } => report(&progress_line(&h.name, &message)),
                WorkerEvent::Ready {
                    pid,
                    api,
                    token,
                    nodes,
                    ..
                } => {
                    h.worker = WorkerState::Ready;
                    h.worker_pid = Some(pid);
                    h.api = Some(api);
                    h.api_token = token;
                    report(&format!(
                        "[{}] ready: {nodes} nodes, worker pid {pid}",
                        h.name
                    ));
                }
                WorkerEvent::Error { message, .. } => {
                    h.worker = WorkerState::Failed;
                    h.message = Some(message.clone());
                    return Some((code::FAILURE, format!("host {}: {message}", h.name)));
                }
                WorkerEvent::Down { why } => {
                    h.worker = WorkerState::Down;
                    h.message = Some(why.clone());
                    return Some((
                        code::FAILURE,
                        format!("host {}: the worker tore its slice down ({why})", h.name),
                    ));
                }
            }
            None
        }
        Msg::Text(at, t) => {
            if let Some(s) = sessions.iter_mut().find(|s| s.at == at) {
                if s.stderr_tail.len() == STDERR_TAIL {
                    s.stderr_tail.remove(0);
                }
                s.stderr_tail.push(t.clone());
            }
            report(&format!("[{}] {t}", rec.hosts[at].name));
            None
        }
        Msg::Closed(at) => {
            let tail = sessions
                .iter_mut()
                .find(|s| s.at == at)
                .map(|s| {
                    s.closed = true;
                    s.stderr_tail.join(" | ")
                })
                .unwrap_or_default();
            let h = &mut rec.hosts[at];
            if h.worker == WorkerState::Failed {
                return None;
            }
            h.worker = WorkerState::Down;
            let msg = format!(
                "host {}: the ssh session ended{}",
                h.name,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            );
            h.message = Some(msg.clone());
            Some((code::FAILURE, msg))
        }
    }
}

/// Close every session's stdin (each worker tears down), wait for the sessions to end
/// within [`TEARDOWN_BOUND`], end the ssh masters and remove the record. Returns each
/// session's exit code.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctl: &ControlDir,
    ssh: &Ssh,
    hosts: &Hosts,
    slices: &[(usize, Slice)],
    rec: &mut ControllerRecord,
    sessions: &mut [Session],
    rx: &mpsc::Receiver<Msg>,
    report: &mut impl FnMut(&str),
) -> Vec<Option<i32>> {
    for s in sessions.iter_mut() {
        s.stdin = None;
        if rec.hosts[s.at].worker != WorkerState::Failed {
            rec.hosts[s.at].worker = WorkerState::Stopping;
        }
    }
    let _ = ctl.write(rec);
    let deadline = Instant::now() + TEARDOWN_BOUND;
    while sessions.iter().any(|s| !s.closed) && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Event(at, WorkerEvent::Down { why })) => {
                rec.hosts[at].worker = WorkerState::Down;
                report(&format!("[{}] down ({why})", rec.hosts[at].name));
            }
            Ok(Msg::Event(at, WorkerEvent::Progress { message })) => {
                report(&progress_line(&rec.hosts[at].name, &message))
            }
            Ok(Msg::Closed(at)) => {
                if let Some(s) = sessions.iter_mut().find(|s| s.at == at) {
                    s.closed = true;
                }
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut codes = Vec::new();
    for s in sessions.iter_mut() {
        if !s.closed {
            report(&format!(
                "[{}] no end of session within {}s; closing its ssh",
                rec.hosts[s.at].name,
                TEARDOWN_BOUND.as_secs()
            ));
            let _ = s.child.kill();
        }
        codes.push(s.child.wait().ok().and_then(|st| st.code()));
    }
    for (i, _) in slices {
        ssh.close_master(&hosts.hosts[*i]);
    }
    let _ = ctl.remove();
    codes
}

/// Between the binary check and the sessions: the underlay round trip between every two
/// hosts a link joins and every host's clock (into `rec`), then each slice's cross-host
/// ends (underlay addresses, half the round trip taken off each delay) and, when links
/// cross hosts, its lab-wide part. `Err`: a refusal; nothing was built anywhere.
fn learn_hosts(
    ssh: &Ssh,
    hosts: &Hosts,
    whole: &Plan,
    underlays: &std::collections::BTreeMap<String, std::net::Ipv4Addr>,
    slices: &mut [(usize, Slice)],
    rec: &mut ControllerRecord,
    report: &mut impl FnMut(&str),
) -> Result<(), Failure> {
    let crossing = slices.iter().any(|(_, s)| !s.cross.is_empty());
    let spec = |name: &str| hosts.hosts.iter().find(|h| h.name == name);
    let mut pairs = std::collections::BTreeSet::new();
    for (_, s) in slices.iter() {
        for c in &s.cross {
            pairs.insert(if s.host < c.remote_host {
                (s.host.clone(), c.remote_host.clone())
            } else {
                (c.remote_host.clone(), s.host.clone())
            });
        }
    }
    let mut rtt = std::collections::BTreeMap::new();
    for (a, b) in &pairs {
        let (Some(ha), Some(hb), Some(ip_b)) = (spec(a), spec(b), underlays.get(b)) else {
            continue;
        };
        match lightcone::hosts::rtt::measure(ssh, ha, hb, *ip_b, 0, IDENTIFY_BOUND) {
            Ok(s) => {
                report(&format!(
                    "[{a}] underlay to {b}: round trip min {:.3} ms, p50 {:.3} ms, max {:.3} ms ({} of {} probes)",
                    s.min_ms, s.p50_ms, s.max_ms, s.received, s.sent
                ));
                rtt.insert((a.clone(), b.clone()), s.min_ms);
                rtt.insert((b.clone(), a.clone()), s.min_ms);
            }
            Err(e) => {
                return Err(Failure(code::FAILURE, anyhow!(
                    "the underlay from host {a} to host {b} ({ip_b}) could not be measured: {e}; check that UDP passes between the hosts' underlay addresses (`lightcone doctor --hosts`); nothing was built on any host"
                )));
            }
        }
    }
    for (k, (i, _)) in slices.iter().enumerate() {
        let h = &hosts.hosts[*i];
        rec.hosts[k].clock = lightcone::hosts::doctor::sample_clock(ssh, h);
        rec.hosts[k].underlay_rtt_ms = rtt
            .iter()
            .filter(|((from, _), _)| from == &h.name)
            .map(|((_, to), ms)| (to.clone(), *ms))
            .collect();
        match rec.hosts[k].clock {
            Some(c) => report(&format!(
                "[{}] clock {:+.3} ms ± {:.3} ms from this controller's",
                h.name, c.offset_ms, c.bound_ms
            )),
            None => report(&format!("[{}] clock: no answer within 5 s", h.name)),
        }
    }
    // 2c. The slices' cross-host ends: addresses, and the underlay's one-way time taken
    //     off each link's delay (so the link is as long as configured end to end).
    let mut refusal = None;
    for (_, s) in slices.iter_mut() {
        let time_scale = s.plan.time_scale;
        for c in &mut s.cross {
            c.local_addr = underlays.get(&s.host).copied();
            c.remote_addr = underlays.get(&c.remote_host).copied();
            let Some(ms) = rtt.get(&(s.host.clone(), c.remote_host.clone())) else {
                continue;
            };
            let one_way_ns = (ms * 1e6 / 2.0).round() as u64;
            let emulated = (one_way_ns as f64 * time_scale).round() as u64;
            if emulated > c.model.delay_ns {
                refusal.get_or_insert(format!(
                    "link {} between host {} and host {} is {:.3} ms one way ({:.3} ms real at time_scale {time_scale}), but the underlay alone takes {:.3} ms one way (half its measured round trip): keep it on one host (pin both cells to one host) or slow the lab (a smaller time_scale); nothing was built on any host",
                    c.link,
                    s.host,
                    c.remote_host,
                    c.model.delay_ns as f64 / 1e6,
                    c.model.delay_ns as f64 / 1e6 / time_scale,
                    one_way_ns as f64 / 1e6
                ));
                continue;
            }
            c.model.delay_ns -= emulated;
            c.underlay_one_way_ns = one_way_ns;
        }
    }
    // One lab over the hosts a link joins: the whole plan, a seed for the lab's keys
    // (from this machine's OS RNG), the epoch and each host's clock offset.
    if crossing && refusal.is_none() {
        let mut seed = [0u8; 32];
        if let Err(e) = lightcone::keys::fill(&mut rand::rngs::OsRng, &mut seed) {
            refusal = Some(format!("{e}; nothing was built on any host"));
        }
        let epoch = lightcone::hosts::rtt::realtime_ns();
        let lab_bound = rec
            .hosts
            .iter()
            .filter_map(|h| h.clock.map(|c| c.bound_ms))
            .fold(0.0, f64::max);
        for (k, (_, s)) in slices.iter_mut().enumerate() {
            let Some(c) = rec.hosts[k].clock else {
                refusal.get_or_insert(format!(
                    "host {}: its clock could not be sampled over ssh, and agents on hosts joined by a link count time from one epoch; nothing was built on any host",
                    s.host
                ));
                continue;
            };
            s.lab = Some(lightcone::hosts::slice::LabWide {
                plan: whole.clone(),
                secret_hex: hex::encode(seed),
                epoch_realtime_ns: epoch,
                clock_offset_ms: c.offset_ms,
                clock_offset_bound_ms: c.bound_ms,
                lab_clock_bound_ms: lab_bound,
            });
        }
    }
    match refusal {
        Some(msg) => Err(Failure(code::FAILURE, anyhow!(msg))),
        None => Ok(()),
    }
}

/// `BIN worker --identify` on the host: refuse a binary that is not ours. With `underlay`,
/// also the host's underlay interface (address and MTU), refused if it is missing or its
/// MTU is below what the hosts file says (the lab MTU was computed from that).
fn identify(
    ssh: &Ssh,
    h: &hosts::HostSpec,
    ours: &Controller,
    underlay: bool,
) -> Result<Option<lightcone::hosts::control::Underlay>, Failure> {
    let mut args = vec![h.lightcone.as_str(), "worker", "--identify"];
    if underlay {
        args.extend(["--underlay", h.underlay.as_str()]);
    }
    let o = ssh.run(h, &args, IDENTIFY_BOUND).map_err(Failure::from)?;
    match (o.code, parse_identity(&o.stdout)) {
        (Some(0), Some(theirs)) if &theirs.binary() == ours => match theirs.underlay {
            Some(u) if u.mtu < h.mtu => Err(Failure(code::FAILURE, anyhow!(
                "host {}: underlay {} has MTU {}, the hosts file says {}: write `mtu: {}` for this host (or raise the interface's MTU); nothing was built on any host",
                h.name, u.name, u.mtu, h.mtu, u.mtu
            ))),
            Some(u) => Ok(Some(u)),
            None if underlay => Err(Failure(code::FAILURE, anyhow!(
                "host {}: `{} worker --identify --underlay {}` gave no underlay; nothing was built on any host",
                h.name, h.lightcone, h.underlay
            ))),
            None => Ok(None),
        },
        (Some(0), Some(theirs)) => Err(Failure(code::FAILURE, anyhow!(
            "host {}: {} is lightcone {} (sha256 {}), this controller is lightcone {} (sha256 {}): copy this build to the host (or name it with `lightcone:` in the hosts file); nothing was built on any host",
            h.name, h.lightcone, theirs.version, theirs.sha256, ours.version, ours.sha256
        ))),
        (Some(1), _) if underlay && o.stderr.contains("underlay: ") => Err(Failure(code::FAILURE, anyhow!(
            "host {}: {}; set `underlay:` for this host to the interface VXLAN packets leave by, with an IPv4 address (`lightcone doctor --hosts` checks it); nothing was built on any host",
            h.name, o.stderr.trim().trim_start_matches("error: ")
        ))),
        (Some(255), _) => Err(Failure(code::FAILURE, anyhow!(
            "host {}: ssh {} failed: {}; check it with `lightcone doctor --hosts` (ssh must log in without a prompt: BatchMode); nothing was built on any host",
            h.name, h.ssh, o.stderr.trim()
        ))),
        _ => Err(Failure(code::FAILURE, anyhow!(
            "host {}: `{} worker --identify` did not answer (exit {}): {}; install this lightcone build there (or name it with `lightcone:` in the hosts file); nothing was built on any host",
            h.name, h.lightcone,
            o.code.map(|c| c.to_string()).unwrap_or_else(|| "by signal".into()),
            if o.stderr.trim().is_empty() { o.stdout.trim() } else { o.stderr.trim() }
        ))),
    }
}

/// Open the worker's session and hand it its slice.
fn start_worker(
    ssh: &Ssh,
    h: &hosts::HostSpec,
    slice: &Slice,
    at: usize,
    tx: &mpsc::Sender<Msg>,
) -> anyhow::Result<Session> {
    let mut c = ssh.command(h, &[&h.lightcone, "worker", "--stdio"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("start ssh")?;
    let mut stdin = child.stdin.take().expect("piped");
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let m = match WorkerEvent::parse(&line) {
                    Ok(e) => Msg::Event(at, e),
                    Err(t) if t.is_empty() => continue,
                    Err(t) => Msg::Text(at, t),
                };
                if tx.send(m).is_err() {
                    break;
                }
            }
            let _ = tx.send(Msg::Closed(at));
        });
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if !line.trim().is_empty() && tx.send(Msg::Text(at, line)).is_err() {
                    break;
                }
            }
        });
    }
    let mut line = serde_json::to_vec(slice).context("encode the slice")?;
    line.push(b'\n');
    // A session that died at once shows as its stdout closing; the write error says less.
    let _ = stdin.write_all(&line).and_then(|_| stdin.flush());
    Ok(Session {
        at,
        child,
        stdin: Some(stdin),
        closed: false,
        stderr_tail: Vec::new(),
    })
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

/// `status` of a multi-host lab: each host's worker asked over ssh for its slice's
/// status; nodes gain `host`, and `hosts[]` says who holds what.
pub(crate) fn status_json(lab: &str) -> Option<serde_json::Value> {
    let ctl = ControlDir::new(lab).ok()?;
    let Some(rec) = ctl.read() else {
        if !ctl.exists() {
            return None;
        }
        return Some(
            serde_json::json!({"name": lab, "state": "stale", "hosts": [], "hint": format!("the controller record is unreadable; run `lightcone down {lab}`")}),
        );
    };
    let alive = rec.alive();
    let ssh = Ssh::new(lab, rec.ssh_config.clone(), &control_root()).ok();
    let mut nodes = Vec::new();
    let mut links = Vec::new();
    let mut hosts_out = Vec::new();
    for h in &rec.hosts {
        let mut error = None;
        if let (true, Some(ssh)) = (alive, &ssh) {
            match ssh.run(
                &h.spec(),
                &[&h.lightcone, "status", lab, "--json", "--local"],
                Duration::from_secs(20),
            ) {
                Ok(o) if o.code == Some(0) => {
                    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
                    let l = &v["labs"][0];
                    for n in l["nodes"].as_array().into_iter().flatten() {
                        let mut n = n.clone();
                        n["host"] = h.name.clone().into();
                        nodes.push(n);
                    }
                    for k in l["links"].as_array().into_iter().flatten() {
                        let mut k = k.clone();
                        k["host"] = h.name.clone().into();
                        links.push(k);
                    }
                }
                Ok(o) => {
                    error = Some(format!(
                        "`{} status` on the host: {}",
                        h.lightcone,
                        o.stderr.trim()
                    ))
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        hosts_out.push(serde_json::json!({
            "name": h.name,
            "ssh": h.ssh,
            "nodes": h.nodes,
            "worker_pid": h.worker_pid,
            "worker_state": h.worker,
            "worker_api": h.api,
            "message": h.message,
            "error": error,
            // Measured at `up`: the smallest round trip to each host it shares a link
            // with (empty: no link crosses from it), and its clock against the
            // controller's (null: the host did not answer).
            "underlay_rtt_ms": h.underlay_rtt_ms,
            "clock_offset_ms": h.clock.map(|c| c.offset_ms),
            "clock_offset_bound_ms": h.clock.map(|c| c.bound_ms),
        }));
    }
    Some(if alive {
        serde_json::json!({
            "name": lab,
            "state": "up",
            "controller_pid": rec.pid,
            "hosts": hosts_out,
            "nodes": nodes,
            "links": links,
        })
    } else {
        serde_json::json!({
            "name": lab,
            "state": "stale",
            "controller_pid": rec.pid,
            "hosts": hosts_out,
            "hint": format!("the controller is gone (its workers tore down when their sessions closed); run `lightcone down {lab}`"),
        })
    })
}

/// One line per multi-host lab for `status` without `--json`.
pub(crate) fn status_print(v: &serde_json::Value) {
    let name = v["name"].as_str().unwrap_or("?");
    if v["state"] != "up" {
        println!("{name}: stale ({})", v["hint"].as_str().unwrap_or(""));
        return;
    }
    let nodes = v["nodes"].as_array().map(|a| a.len()).unwrap_or(0);
    let running = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["agent"]["state"] == "running")
        .count();
    let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
    println!(
        "{name}: up on {} host(s) (controller pid {}), {nodes} nodes ({running} agents running)",
        hosts.len(),
        v["controller_pid"]
    );
    for h in hosts {
        println!(
            "  host {} ({}): {} nodes, worker {} pid {}{}",
            h["name"].as_str().unwrap_or("?"),
            h["ssh"].as_str().unwrap_or("?"),
            h["nodes"].as_array().map(|a| a.len()).unwrap_or(0),
            h["worker_state"].as_str().unwrap_or("?"),
            h["worker_pid"],
            h["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        // What `up` measured: the clock, and the underlay to each host a link joins.
        let mut measured = Vec::new();
        if let (Some(o), Some(b)) = (
            h["clock_offset_ms"].as_f64(),
            h["clock_offset_bound_ms"].as_f64(),
        ) {
            measured.push(format!("clock {o:+.3} ms ± {b:.3} ms"));
        }
        for (to, ms) in h["underlay_rtt_ms"].as_object().into_iter().flatten() {
            if let Some(ms) = ms.as_f64() {
                measured.push(format!("underlay to {to} {ms:.3} ms round trip"));
            }
        }
        if !measured.is_empty() {
            println!("    {}", measured.join(", "));
        }
    }
    for l in v["links"].as_array().into_iter().flatten() {
        if let Some(to) = l["to_host"].as_str() {
            println!(
                "  link {} from host {} to {to}: {}, delay {:.3} ms (underlay {:.3} ms of it), loss {:.2} %",
                l["name"].as_str().unwrap_or("?"),
                l["host"].as_str().unwrap_or("?"),
                if l["up"] == true { "up" } else { "DOWN" },
                l["delay_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                l["underlay_one_way_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                l["loss"].as_f64().unwrap_or(f64::NAN) * 100.0
            );
        }
    }
}

/// Lab names with a controller record, and those of `lightcone up` without one.
pub(crate) fn all_lab_names() -> (Vec<String>, Vec<LabDir>) {
    let ctl = ControlDir::all_names();
    let local = LabDir::all()
        .into_iter()
        .filter(|d| !ctl.contains(&d.lab))
        .collect();
    (ctl, local)
}

/// `lightcone probe A B` of a multi-host lab whose `a` and `b` are on two hosts: an echo in
/// `b`'s namespace on its host, probes from `a`'s namespace on its host (10 ms apart), both
/// over the lab's ssh ([`lightcone::hosts::rtt::measure_with`]), across the link between
/// them. Round trips and round-trip loss only: one-way figures would need the two hosts'
/// clocks, known only to their offset bounds. `None`: not a multi-host lab, or both nodes
/// on one host (the command is routed to it as it is).
#[allow(clippy::too_many_arguments)]
pub(crate) fn probe_across(
    lab: Option<&str>,
    a: &str,
    b: &str,
    count: u32,
    interval: &str,
    burst: u32,
    json: bool,
) -> Option<Result<u8, Failure>> {
    let (ctl, rec) = multi_host_lab(lab)?;
    let on = |n: &str| rec.hosts.iter().find(|h| h.nodes.iter().any(|m| m == n));
    let (ha, hb) = (on(a)?, on(b)?);
    if ha.name == hb.name {
        return None;
    }
    if burst > 0 || interval != "10ms" {
        return Some(Err(invalid(anyhow!(
            "{a} is on host {} and {b} on host {}: a probe across hosts sends one probe every 10 ms and no throughput burst (--interval and --burst are not built across hosts yet); nothing was sent",
            ha.name, hb.name
        ))));
    }
    Some(probe_between_hosts(&ctl, &rec, ha, hb, a, b, count, json))
}

#[allow(clippy::too_many_arguments)]
fn probe_between_hosts(
    ctl: &ControlDir,
    rec: &ControllerRecord,
    ha: &HostRecord,
    hb: &HostRecord,
    a: &str,
    b: &str,
    count: u32,
    json: bool,
) -> Result<u8, Failure> {
    if !rec.alive() {
        return Err(state(format!(
            "lab {} has a controller record whose controller is gone; run `lightcone down {}` to clean it up",
            rec.lab, rec.lab
        )));
    }
    let plan: Plan = std::fs::read(ctl.plan_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Failure(
                code::FAILURE,
                anyhow!("{} is missing or unreadable", ctl.plan_path().display()),
            )
        })?;
    let Some((l, ea, eb)) = plan.link_ends(a, b) else {
        return Err(invalid(anyhow!(
            "lab {} has no link between {a} and {b} (probe measures one link); nothing was sent",
            rec.lab
        )));
    };
    // The live configuration of the direction a sends (after `link set`), from a's host.
    let live = status_json(&rec.lab).and_then(|v| {
        v["links"].as_array().and_then(|ls| {
            ls.iter()
                .find(|x| x["name"] == l.name.as_str() && x["host"] == ha.name.as_str())
                .cloned()
        })
    });
    let ts = plan.time_scale;
    let delay_s = live
        .as_ref()
        .and_then(|x| x["delay_s"].as_f64())
        .unwrap_or(l.model.delay_ns as f64 / 1e9);
    let loss = live
        .as_ref()
        .and_then(|x| x["loss"].as_f64())
        .unwrap_or(0.0);
    let up = live.as_ref().map(|x| x["up"] != false).unwrap_or(true);
    let underlay_ms = live
        .as_ref()
        .and_then(|x| x["underlay_one_way_s"].as_f64())
        .unwrap_or(0.0)
        * 2e3;
    let configured_rtt_ms = 2.0 * delay_s / ts * 1e3;
    let wait =
        Duration::from_secs(2).max(Duration::from_secs_f64(3.0 * configured_rtt_ms / 1e3 + 0.5));
    let how = lightcone::hosts::rtt::Between {
        port: 0,
        echo_netns: Some(plan.nodes[eb.node].netns.clone()),
        ping_netns: Some(plan.nodes[ea.node].netns.clone()),
        count,
        wait,
    };
    let ssh = Ssh::new(&rec.lab, rec.ssh_config.clone(), &control_root()).map_err(invalid)?;
    let s = lightcone::hosts::rtt::measure_with(
        &ssh,
        &ha.spec(),
        &hb.spec(),
        eb.ip,
        &how,
        IDENTIFY_BOUND,
    )
    .map_err(|e| Failure(code::FAILURE, anyhow!("probe {}: {e}", l.name)))?;
    let lost = s.sent - s.received;
    // Each direction loses independently: the round trip survives both.
    let rt_loss = 1.0 - (1.0 - loss).powi(2);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "link": l.name,
                "from": a, "to": b,
                "from_host": ha.name, "to_host": hb.name,
                "count": s.sent,
                "received": s.received,
                "lost": lost,
                "rtt_ms": if s.received > 0 {
                    serde_json::json!({"min": s.min_ms, "p50": s.p50_ms, "max": s.max_ms})
                } else {
                    serde_json::Value::Null
                },
                "configured": {
                    "up": up,
                    "rtt_ms": configured_rtt_ms,
                    "underlay_rtt_ms": underlay_ms,
                    "loss_round_trip": rt_loss,
                },
                "one_way": "not measured across hosts (the hosts' clocks are known only to their offset bounds)",
            })
        );
    } else {
        println!(
            "probe {} across hosts {} -> {} ({} probes, time_scale {ts})",
            l.name, ha.name, hb.name, s.sent
        );
        println!("                       measured                  configured");
        if s.received > 0 {
            println!(
                "  rtt min/p50/max  {:9.3} / {:.3} / {:.3} ms   {configured_rtt_ms:.3} ms (underlay {underlay_ms:.3} ms of it){}",
                s.min_ms,
                s.p50_ms,
                s.max_ms,
                if up { "" } else { ", link DOWN" }
            );
        } else {
            println!(
                "  rtt              no answer                  {configured_rtt_ms:.3} ms{}",
                if up { "" } else { ", link DOWN" }
            );
        }
        println!(
            "  loss round trip  {lost} of {} ({:.2} %)            {:.2} %",
            s.sent,
            100.0 * f64::from(lost) / f64::from(s.sent.max(1)),
            100.0 * rt_loss
        );
        println!("  one-way delay and loss: not measured across hosts (clocks known only to their offset bounds)");
    }
    Ok(0)
}

/// Set on a command the controller routed to a host: run it there.
const ROUTED_ENV: &str = "LIGHTCONE_ROUTED";
const ROUTED_ENV_SET: &str = "LIGHTCONE_ROUTED=1";

/// A command about `nodes` of a lab that spans hosts runs on the host that holds them:
/// the same command line over ssh (each word quoted for the host's shell), with `--lab`
/// put in after its `tokens` subcommand words when the user left it out, its output and
/// exit code passed through. `None`: the lab is not a multi-host lab (run it here). Nodes
/// not in the lab are refused with nothing run; nodes on two hosts too, unless `spread`
/// (a link between hosts: each host changes its end, in hosts-file order, and the first
/// failure's exit code is the command's).
pub(crate) fn route_to_host(
    lab: Option<&str>,
    nodes: &[&str],
    tokens: usize,
    spread: bool,
) -> Option<Result<u8, Failure>> {
    let (_, rec) = multi_host_lab(lab)?;
    Some(forward(&rec, nodes, tokens, spread))
}

/// The multi-host lab a command about nodes means — `lab`, or the only lab up when that
/// is a multi-host one — with its controller record; `None`: run the command here (no
/// such lab, a local lab, or a command the controller already routed to this host).
fn multi_host_lab(lab: Option<&str>) -> Option<(ControlDir, ControllerRecord)> {
    if std::env::var_os(ROUTED_ENV).is_some() {
        return None;
    }
    let lab = match lab {
        Some(l) => l.to_string(),
        None => match all_lab_names() {
            (ctl, local) if ctl.len() == 1 && local.is_empty() => ctl[0].clone(),
            _ => return None,
        },
    };
    let ctl = ControlDir::new(&lab).ok()?;
    let rec = ctl.read()?;
    Some((ctl, rec))
}

fn forward(
    rec: &ControllerRecord,
    nodes: &[&str],
    tokens: usize,
    spread: bool,
) -> Result<u8, Failure> {
    let mut on: Vec<&HostRecord> = Vec::new();
    for n in nodes {
        match rec.hosts.iter().find(|h| h.nodes.iter().any(|m| m == n)) {
            Some(h) => on.push(h),
            None => {
                return Err(invalid(anyhow!(
                    "lab {} has no node {n} (its hosts hold {}); nothing was changed",
                    rec.lab,
                    rec.hosts
                        .iter()
                        .map(|h| format!("{}: {}", h.name, h.nodes.join(" ")))
                        .collect::<Vec<_>>()
                        .join("; ")
                )))
            }
        }
    }
    let Some(h) = on.first() else {
        return Err(invalid(anyhow!("no node named; nothing was changed")));
    };
    if let Some(other) = on.iter().find(|o| o.name != h.name).filter(|_| !spread) {
        return Err(invalid(anyhow!(
            "{} is on host {} and {} on host {}: a command about nodes on two hosts is not built yet (each host runs its own part of lab {}); nothing was changed",
            nodes[0],
            h.name,
            nodes[on.iter().position(|o| o.name == other.name).unwrap_or(0)],
            other.name,
            rec.lab
        )));
    }
    if !rec.alive() {
        return Err(state(format!(
            "lab {} has a controller record whose controller is gone; run `lightcone down {}` to clean it up",
            rec.lab, rec.lab
        )));
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--lab" || a.starts_with("--lab=")) {
        let at = tokens.min(args.len());
        args.splice(at..at, ["--lab".to_string(), rec.lab.clone()]);
    }
    let quoted: Vec<String> = args
        .iter()
        .map(|a| lightcone::hosts::ssh::sh_quote(a))
        .collect();
    let ssh = Ssh::new(&rec.lab, rec.ssh_config.clone(), &control_root()).map_err(invalid)?;
    // Each host once, in the controller record's (hosts-file) order.
    let mut code = 0u8;
    for h in rec
        .hosts
        .iter()
        .filter(|h| on.iter().any(|o| o.name == h.name))
    {
        let c = run_on(&ssh, h, &quoted)?;
        if code == 0 {
            code = c;
        }
    }
    Ok(code)
}

/// `quoted` (words already quoted for the host's shell) run by `h`'s `lightcone` over
/// `ssh`, marked as routed; its output here as it comes, its exit code returned.
fn run_on(ssh: &Ssh, h: &HostRecord, quoted: &[String]) -> Result<u8, Failure> {
    // Marked, so the host runs it itself even when it is also the controller's machine
    // (whose controller record would route it again).
    let mut remote: Vec<&str> = vec!["env", ROUTED_ENV_SET, h.lightcone.as_str()];
    remote.extend(quoted.iter().map(String::as_str));
    let mut c = ssh.command(&h.spec(), &remote);
    c.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let status = c
        .status()
        .with_context(|| format!("run ssh to host {} ({})", h.name, h.ssh))?;
    match status.code() {
        Some(255) => Err(Failure(
            code::FAILURE,
            anyhow!(
                "host {}: ssh {} failed (exit 255); check it with `lightcone doctor --hosts`",
                h.name,
                h.ssh
            ),
        )),
        Some(c) => Ok(u8::try_from(c).unwrap_or(1)),
        None => Err(Failure(
            code::FAILURE,
            anyhow!("host {}: ssh ended by a signal", h.name),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_relayed_with_the_host_name_and_count_markers_as_they_are() {
        assert_eq!(
            progress_line("h1", "kernel objects up"),
            "[h1] kernel objects up"
        );
        let m = lightcone::progress::marker("namespaces", 1, 3);
        assert_eq!(progress_line("h1", &m), m);
    }
}
