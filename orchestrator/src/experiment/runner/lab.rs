//! The run's lab: reuse one that is up under the topology's name — on this machine, or
//! spread over hosts by a controller (`up --hosts`), reached then through
//! [`crate::hosts::access`] — else bring it up with `lightcone up --detach` (with
//! `--hosts` when the run was given a hosts file), and down again when the run ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::super::scenario::{Scenario, TopologySource};
use super::RunError;
use crate::client::Client;
use crate::hosts::access::{self, Access};
use crate::hosts::control::{ControlDir, ControllerRecord};
use crate::lab::SupervisorInfo;
use crate::state::LabDir;
use crate::topology::Topology;

/// This executable. `/proc/self/exe` still runs when a rebuild replaced the file on disk
/// mid-run (then `current_exe()` names a deleted path); elsewhere, `current_exe()`.
pub(super) fn self_exe() -> PathBuf {
    let p = PathBuf::from("/proc/self/exe");
    if p.exists() {
        p
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("lightcone"))
    }
}

/// Brings the lab down on drop if this run brought it up.
pub(super) struct LabOwner {
    lab: String,
    /// This run brought the lab up (else it reused one that was up).
    pub owned: bool,
    /// Where `lightcone down`'s output goes.
    log: PathBuf,
    /// The port forwards to the hosts of a lab spread over hosts (closed before the lab
    /// is brought down).
    pub access: Option<Access>,
}

impl Drop for LabOwner {
    fn drop(&mut self) {
        drop(self.access.take());
        if self.owned {
            let out = std::fs::File::create(&self.log).ok();
            let err = out.as_ref().and_then(|f| f.try_clone().ok());
            {
                let _ = Command::new(self_exe())
                    .args(["down", &self.lab])
                    .stdin(Stdio::null())
                    .stdout(out.map(Stdio::from).unwrap_or_else(Stdio::null))
                    .stderr(err.map(Stdio::from).unwrap_or_else(Stdio::null))
                    .status();
            }
        }
    }
}

/// The record of lab `name` when a live controller spreads it over hosts.
fn spread_record(name: &str) -> Option<ControllerRecord> {
    ControlDir::new(name).ok()?.read().filter(|r| r.alive())
}

/// The lab of `topo`, up, and a client of its supervisor (of every host's, for a lab over
/// hosts). The owner brings the lab down when dropped if this run brought it up (`dir`
/// gets its `down.log`, and the topology of an inline scenario). With `hosts`, a lab not
/// yet up is brought up over that hosts file's hosts.
pub(super) fn attach(
    sc: &Scenario,
    topo: &Topology,
    dir: &Path,
    hosts: Option<&Path>,
    progress: &mut impl FnMut(&str),
) -> Result<(LabOwner, Client), RunError> {
    let lab_dir = LabDir::new(&topo.name).map_err(|e| RunError::Lab(e.to_string()))?;
    let spread = spread_record(&topo.name);
    let local = lab_dir.exists() && SupervisorInfo::read(&lab_dir).is_some_and(|i| i.alive());
    let mut owner = LabOwner {
        lab: topo.name.clone(),
        owned: false,
        log: dir.join("down.log"),
        access: None,
    };
    if let Some(r) = &spread {
        let names: Vec<&str> = r.hosts.iter().map(|h| h.name.as_str()).collect();
        progress(&format!(
            "reusing lab {} (already up over hosts {})",
            topo.name,
            names.join(", ")
        ));
    } else if local && hosts.is_some() {
        return Err(RunError::Lab(format!(
            "lab {} is up on this machine alone, and --hosts asks for it over hosts; run `lightcone down {}` first, or drop --hosts to use it",
            topo.name, topo.name
        )));
    } else if local {
        progress(&format!("reusing lab {} (already up)", topo.name));
    } else {
        let file = match &sc.topology {
            TopologySource::File(p) => p.clone(),
            TopologySource::Inline(src) => {
                let p = dir.join("topology.yaml");
                std::fs::write(&p, src)?;
                p
            }
        };
        progress(&format!(
            "bringing lab {} up (wire engine{})",
            topo.name,
            hosts
                .map(|h| format!(", over the hosts of {}", h.display()))
                .unwrap_or_default()
        ));
        owner.owned = true;
        bring_up(&file, hosts, progress)?;
    }
    let api = match spread.or_else(|| hosts.and_then(|_| spread_record(&topo.name))) {
        Some(rec) => {
            let (api, access) = access::connect(&rec).map_err(RunError::Lab)?;
            progress(&format!(
                "reaching the supervisors of {} hosts through ssh forwards (clocks within ± {} of the controller's)",
                rec.hosts.iter().filter(|h| !h.nodes.is_empty()).count(),
                access
                    .clock_bound_ms()
                    .map(|b| format!("{b:.3} ms"))
                    .unwrap_or_else(|| "an unmeasured bound".into())
            ));
            owner.access = Some(access);
            api
        }
        None => Client::connect(&lab_dir)
            .ok_or_else(|| RunError::Lab(format!("lab {} has no running supervisor", topo.name)))?,
    };
    Ok((owner, api))
}

fn bring_up(
    file: &Path,
    hosts: Option<&Path>,
    progress: &mut impl FnMut(&str),
) -> Result<(), RunError> {
    let mut up = Command::new(self_exe());
    up.arg("up")
        .arg(file)
        .args(["--detach", "--link-engine", "wire"]);
    if let Some(h) = hosts {
        up.arg("--hosts").arg(h);
    }
    let mut child = up
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            progress(&format!("  up: {l}"));
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let st = child.wait()?;
    if !st.success() {
        return Err(RunError::Lab(format!(
            "`lightcone up {}` failed: {}",
            file.display(),
            err.trim()
        )));
    }
    Ok(())
}
