//! A scenario run against a lab spread over hosts (`lightcone run` on a lab brought up
//! with `--hosts`): one [`Client`] of every host's supervisor, each reached through an ssh
//! port forward on the lab's own master connection to that host. Nothing new listens on a
//! host: the supervisor keeps its loopback-only API, its token and its Host guard (the
//! client sends the host's own `127.0.0.1:PORT`); ssh carries the requests.
//!
//! Each endpoint carries its host's clock offset measured at `up`, so a verb stamped with
//! an instant of the controller's clock ([`Client::stamped`]) is applied at that instant on
//! every host, to within the offset's bound ([`Access::clock_bound_ms`]).

use std::collections::BTreeMap;

use super::control::{ControllerRecord, HostRecord, WorkerState};
use super::ssh::{control_root, Ssh};
use super::HostSpec;
use crate::client::{Client, Endpoint};

/// The forwards a run opened; closed when dropped.
pub struct Access {
    ssh: Ssh,
    forwards: Vec<(HostSpec, u16, u16)>,
    /// The largest clock-offset bound of the hosts, ms (`None`: some host's clock was not
    /// measured).
    clock_bound_ms: Option<f64>,
}

impl Access {
    /// The largest of the hosts' clock-offset bounds, ms: how far apart two hosts may
    /// apply a verb stamped for the same instant, and how uncertain a node's ground
    /// truth is on a host that is not the controller's.
    pub fn clock_bound_ms(&self) -> Option<f64> {
        self.clock_bound_ms
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        for (h, local, remote) in &self.forwards {
            let _ = self.ssh.cancel_forward(h, *local, *remote);
        }
    }
}

/// The port of `http://127.0.0.1:PORT`.
fn port_of(api: &str) -> Option<u16> {
    api.trim_end_matches('/').rsplit(':').next()?.parse().ok()
}

/// A free port on this machine's loopback (the kernel's choice; released for ssh to
/// bind, which it does at once).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What a host's record lacks for a run to reach it, if anything.
fn unreachable_why(rec: &ControllerRecord, h: &HostRecord) -> Option<String> {
    if h.worker != WorkerState::Ready {
        return Some(format!(
            "host {}'s worker is {:?}, not ready{}; see `lightcone status {}`",
            h.name,
            h.worker,
            h.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            rec.lab
        ));
    }
    match (&h.api, &h.api_token) {
        (Some(api), Some(_)) if port_of(api).is_some() => None,
        (Some(api), Some(_)) => Some(format!("host {}'s worker API {api:?} has no port", h.name)),
        _ => Some(format!(
            "host {}'s worker did not give its API and token (a lightcone older than the controller's?); bring lab {} down and up again",
            h.name, rec.lab
        )),
    }
}

/// A client of every host of `rec`'s lab, and the forwards that carry it.
pub fn connect(rec: &ControllerRecord) -> Result<(Client, Access), String> {
    if !rec.alive() {
        return Err(format!(
            "lab {} has a controller record whose controller is gone; run `lightcone down {}`",
            rec.lab, rec.lab
        ));
    }
    let ssh =
        Ssh::new(&rec.lab, rec.ssh_config.clone(), &control_root()).map_err(|e| e.to_string())?;
    let mut access = Access {
        ssh: ssh.clone(),
        forwards: Vec::new(),
        clock_bound_ms: Some(0.0),
    };
    let mut eps = Vec::new();
    let mut owner = BTreeMap::new();
    for h in rec.hosts.iter().filter(|h| !h.nodes.is_empty()) {
        if let Some(why) = unreachable_why(rec, h) {
            return Err(why);
        }
        let (api, token) = (
            h.api.as_deref().unwrap_or_default(),
            h.api_token.as_deref().unwrap_or_default(),
        );
        let remote = port_of(api).unwrap_or_default();
        let spec = h.spec();
        // A port another process takes between our probe and ssh's bind makes the
        // forward fail; one more try with a new port.
        let mut local = 0;
        for attempt in 0..2 {
            local = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
            match ssh.forward(&spec, local, remote) {
                Ok(()) => break,
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => {}
            }
        }
        access.forwards.push((spec, local, remote));
        access.clock_bound_ms = match (access.clock_bound_ms, h.clock) {
            (Some(b), Some(c)) => Some(b.max(c.bound_ms)),
            _ => None,
        };
        let offset_ns = h.clock.map_or(0, |c| (c.offset_ms * 1e6).round() as i64);
        for n in &h.nodes {
            owner.insert(n.clone(), eps.len());
        }
        eps.push(Endpoint::new(
            &h.name,
            api,
            &format!("http://127.0.0.1:{local}"),
            token,
            offset_ns,
        ));
    }
    if eps.is_empty() {
        return Err(format!("lab {} has no host holding nodes", rec.lab));
    }
    Ok((Client::spread(eps, owner), access))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(h: HostRecord) -> ControllerRecord {
        ControllerRecord {
            lab: "l".into(),
            pid: std::process::id(),
            start_time: 0,
            ssh_config: None,
            hosts: vec![h],
        }
    }

    fn host() -> HostRecord {
        HostRecord {
            name: "b".into(),
            ssh: "root@b".into(),
            lightcone: "lightcone".into(),
            nodes: vec!["n1".into()],
            worker: WorkerState::Ready,
            worker_pid: Some(7),
            api: Some("http://127.0.0.1:4100".into()),
            api_token: Some("t".into()),
            message: None,
            underlay_rtt_ms: Default::default(),
            clock: None,
        }
    }

    #[test]
    fn a_host_a_run_cannot_reach_is_named_with_why() {
        assert_eq!(port_of("http://127.0.0.1:4100"), Some(4100));
        assert_eq!(port_of("http://127.0.0.1:4100/"), Some(4100));
        assert_eq!(port_of("http://127.0.0.1"), None);
        let ok = host();
        assert_eq!(unreachable_why(&rec(ok.clone()), &ok), None);
        let old = HostRecord {
            api_token: None,
            ..host()
        };
        let why = unreachable_why(&rec(old.clone()), &old).unwrap();
        assert!(
            why.contains("host b") && why.contains("down and up"),
            "{why}"
        );
        let failed = HostRecord {
            worker: WorkerState::Failed,
            message: Some("agent n1 exited".into()),
            ..host()
        };
        let why = unreachable_why(&rec(failed.clone()), &failed).unwrap();
        assert!(
            why.contains("Failed") && why.contains("agent n1 exited"),
            "{why}"
        );
    }
}
