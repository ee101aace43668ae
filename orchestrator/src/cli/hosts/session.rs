//! The controller of a multi-host lab at work: its loop over the workers' sessions
//! ([`control`]: version checks, what `up` learns of the hosts, the slices, `ready`,
//! teardown) and one worker's session ([`start_worker`]).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use lightcone::hosts::control::{
    ControlDir, ControllerRecord, HostRecord, WorkerEvent, WorkerState,
};
use lightcone::hosts::slice::{Controller, Slice};
use lightcone::hosts::ssh::{control_root, Ssh};
use lightcone::hosts::{self, Hosts};
use lightcone::state::process_start_time;

use super::learn::{identify, learn_hosts};
use super::{
    catch_stop_signals, code, invalid, state, Failure, Prepared, IDENTIFY_BOUND, STDERR_TAIL, STOP,
    TEARDOWN_BOUND,
};

/// What the reader threads send the controller.
pub(super) enum Msg {
    Event(usize, WorkerEvent),
    /// A stdout line that is no worker event, or a stderr line.
    Text(usize, String),
    /// The session's stdout closed.
    Closed(usize),
}

/// One worker's ssh session.
pub(super) struct Session {
    /// Index in the record's `hosts`.
    at: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    closed: bool,
    stderr_tail: Vec<String>,
}

/// Identify every host, start every worker, wait for all to be ready, hold the lab until
/// a signal or a worker's end, then close every session and wait for the teardowns.
pub(super) fn control(
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
pub(super) fn progress_line(host: &str, message: &str) -> String {
    if lightcone::progress::parse(message).is_some() {
        message.to_string()
    } else {
        format!("[{host}] {message}")
    }
}

/// Apply one message to the record; `Some((code, message))` when it ends the lab.
pub(super) fn handle(
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
pub(super) fn finish(
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

/// Open the worker's session and hand it its slice.
pub(super) fn start_worker(
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
