//! `lightcone worker --stdio`: build one host's slice of a lab and live exactly as long as
//! stdin stays open (issue 19). The controller (ssh today, a Kubernetes pod later) writes
//! the slice as the first line of stdin; the worker answers with JSON lines on stdout:
//!
//! - `{"event":"progress","message":…}` while it builds (the supervisor's own lines),
//! - `{"event":"ready","lab":…,"host":…,"api":…,"namespaces":[…],"nodes":n,"pid":…}` once
//!   every namespace, link and agent is up,
//! - `{"event":"error","message":…,"changed":false}` if the slice is refused (exit 2), the
//!   lab is already up here (exit 3), it does not run as root (exit 1), or the build failed (`"removed":true`: whatever was
//!   made has been removed; exit 1),
//! - `{"event":"down","why":…}` after teardown.
//!
//! `lightcone worker --identify` prints `{"version":…,"sha256":…}` of this binary: the
//! controller checks it on every host before any worker starts.
//!
//! When stdin closes (EOF: the controller exited, was killed, or its connection dropped)
//! the worker tears down everything it made, through the supervisor's own path
//! ([`lightcone::supervisor::run_plan`] with a [`Cancel`]), not a copy of it.

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::anyhow;
use lightcone::hosts::slice::Slice;
use lightcone::supervisor::{self, Cancel, UpOptions};
use serde_json::json;

use super::{code, Failure};

/// One JSON line on stdout. A closed stdout (the controller is gone) is not an error:
/// the worker still has to tear down.
fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// `lightcone worker --echo IP`: see [`lightcone::hosts::rtt`].
pub(crate) fn cmd_worker_echo(
    ip: std::net::Ipv4Addr,
    port: u16,
    netns: Option<String>,
) -> Result<(), Failure> {
    check_netns(netns.as_deref())?;
    lightcone::hosts::rtt::serve_echo(ip, port, netns.as_deref())
        .map_err(|e| Failure(code::FAILURE, anyhow!("echo on {ip}:{port}: {e}")))
}

/// `--netns` names a lab namespace (`lc-…`), nothing else on the host.
fn check_netns(netns: Option<&str>) -> Result<(), Failure> {
    match netns {
        Some(n) if !n.starts_with(lightcone::topology::NETNS_PREFIX) || n.contains('/') => {
            Err(super::invalid(anyhow!(
                "--netns {n:?}: not a lab namespace ({}…)",
                lightcone::topology::NETNS_PREFIX
            )))
        }
        _ => Ok(()),
    }
}

/// `lightcone worker --ping IP:PORT`: see [`lightcone::hosts::rtt`].
pub(crate) fn cmd_worker_ping(
    to: std::net::SocketAddrV4,
    count: u32,
    wait_ms: u64,
    netns: Option<String>,
) -> Result<(), Failure> {
    check_netns(netns.as_deref())?;
    if count == 0 || count > lightcone::hosts::rtt::MAX_PROBES {
        return Err(super::invalid(anyhow!(
            "--count {count}: 1 to {} probes",
            lightcone::hosts::rtt::MAX_PROBES
        )));
    }
    let s = lightcone::hosts::rtt::ping(
        to,
        count,
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(wait_ms.min(600_000)),
        netns.as_deref(),
    )
    .map_err(|e| Failure(code::FAILURE, anyhow!("probe {to}: {e}")))?;
    println!("{}", serde_json::to_string(&s).map_err(Failure::from)?);
    Ok(())
}

pub(crate) fn cmd_worker(
    stdio: bool,
    identify: bool,
    underlay: Option<String>,
) -> Result<(), Failure> {
    if identify {
        // What the controller compares with its own before it sends a slice, and the
        // underlay the other hosts' VXLAN ends send to.
        let me = lightcone::hosts::slice::Controller::this().map_err(Failure::from)?;
        let underlay = match underlay {
            Some(name) => Some(
                lightcone::hosts::control::underlay_of(&name)
                    .map_err(|e| Failure(code::FAILURE, anyhow!("underlay: {e}")))?,
            ),
            None => None,
        };
        let id = lightcone::hosts::control::Identity {
            version: me.version,
            sha256: me.sha256,
            underlay,
        };
        println!("{}", serde_json::to_string(&id).map_err(Failure::from)?);
        return Ok(());
    }
    if !stdio {
        return Err(super::invalid(anyhow!(
            "`lightcone worker` talks over stdin/stdout only for now: pass --stdio"
        )));
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let slice = match Slice::read_line(&mut input) {
        Ok(s) => s,
        Err(e) => {
            emit(json!({"event": "error", "message": e.to_string(), "changed": false}));
            return Err(Failure(code::INVALID, anyhow!("{e}; nothing was changed")));
        }
    };
    if let Some(c) = slice
        .cross
        .iter()
        .find(|c| c.local_addr.is_none() || c.remote_addr.is_none())
    {
        let msg = format!(
            "cross-host link {} has no underlay addresses: a worker builds a slice `lightcone up --hosts` filled in, not one `lightcone plan` printed",
            c.link
        );
        emit(json!({"event": "error", "message": msg, "changed": false}));
        return Err(Failure(
            code::INVALID,
            anyhow!("{msg}; nothing was changed"),
        ));
    }
    if let Err(Failure(c, e)) = super::need_root("worker") {
        // Said on stdout too: the controller reads events there, not stderr.
        emit(json!({"event": "error", "message": e.to_string(), "changed": false}));
        return Err(Failure(c, e));
    }
    let cancel = Arc::new(Cancel::default());
    // The rest of stdin is the session: its end is the worker's end.
    {
        let cancel = cancel.clone();
        let rest = std::thread::Builder::new().name("worker-stdin".into());
        rest.spawn(move || {
            let mut line = String::new();
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            loop {
                line.clear();
                match input.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            cancel.cancel();
        })
        .map_err(Failure::from)?;
    }
    drop(input);
    let lab = slice.plan.lab.clone();
    let host = slice.host.clone();
    let mut namespaces: Vec<String> = slice.plan.nodes.iter().map(|n| n.netns.clone()).collect();
    namespaces.push(slice.plan.wire_netns.clone());
    let nodes = slice.plan.nodes.len();
    let opts = UpOptions {
        topology: std::path::PathBuf::new(),
        engine: slice.engine,
        agents: slice.agents,
        port: 0,
        prometheus: false,
        time_scale: None,
        cross: slice.cross,
        lab_wide: slice.lab,
        origin: slice.origin,
        host: Some(host.clone()),
    };
    let result = supervisor::run_plan(
        &opts,
        slice.plan,
        None,
        &cancel,
        |m| emit(json!({"event": "progress", "message": m})),
        |api| {
            // Its token, for the controller's runner (the session is ssh's: private).
            let token = lightcone::state::LabDir::new(&lab)
                .ok()
                .and_then(|d| lightcone::lab::SupervisorInfo::read(&d))
                .map(|i| i.token);
            emit(json!({
                "event": "ready",
                "lab": lab,
                "host": host,
                "api": api,
                "token": token,
                "namespaces": namespaces,
                "nodes": nodes,
                "pid": std::process::id(),
            }))
        },
    );
    match result {
        Ok(()) => {
            let why = if cancel.is_cancelled() {
                "stdin closed"
            } else {
                "stopped by a signal or a shutdown request"
            };
            emit(json!({"event": "down", "why": why}));
            Ok(())
        }
        Err(e) => {
            let msg = lightcone::parse::diag::error_chain(anyhow::Chain::new(&e));
            // Busy: the lab is up here already, nothing was touched; otherwise the
            // supervisor has removed what it had created before returning.
            let busy = matches!(e, supervisor::SupervisorError::Busy(_));
            emit(json!({"event": "error", "message": msg, "changed": false, "removed": !busy}));
            let code = if busy { code::STATE } else { code::FAILURE };
            Err(Failure(code, anyhow!(msg)))
        }
    }
}
