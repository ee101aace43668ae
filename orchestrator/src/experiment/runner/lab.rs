//! The run's lab: reuse one that is up under the topology's name, else bring it up with
//! `lightcone up --detach` (and down again when the run ends).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::super::scenario::{Scenario, TopologySource};
use super::RunError;
use crate::client::Client;
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
}

impl Drop for LabOwner {
    fn drop(&mut self) {
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

/// The lab of `topo`, up, and a client of its supervisor. The owner brings the lab down
/// when dropped if this run brought it up (`dir` gets its `down.log`, and the topology of
/// an inline scenario).
pub(super) fn attach(
    sc: &Scenario,
    topo: &Topology,
    dir: &Path,
    progress: &mut impl FnMut(&str),
) -> Result<(LabOwner, Client), RunError> {
    let lab_dir = LabDir::new(&topo.name).map_err(|e| RunError::Lab(e.to_string()))?;
    let reuse = lab_dir.exists() && SupervisorInfo::read(&lab_dir).is_some_and(|i| i.alive());
    let mut owner = LabOwner {
        lab: topo.name.clone(),
        owned: false,
        log: dir.join("down.log"),
    };
    if reuse {
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
        progress(&format!("bringing lab {} up (wire engine)", topo.name));
        owner.owned = true;
        bring_up(&file, progress)?;
    }
    let api = Client::connect(&lab_dir)
        .ok_or_else(|| RunError::Lab(format!("lab {} has no running supervisor", topo.name)))?;
    Ok((owner, api))
}

fn bring_up(file: &Path, progress: &mut impl FnMut(&str)) -> Result<(), RunError> {
    let mut child = Command::new(self_exe())
        .arg("up")
        .arg(file)
        .args(["--detach", "--link-engine", "wire"])
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
