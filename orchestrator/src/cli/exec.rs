//! `exec`: run a command inside a node's network namespace (`setns` before `exec`).

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{anyhow, Context};
use lightcone::kernel::Netns;

use super::{invalid, lab_plan, need_root, pick_lab, Failure};

/// `lightcone exec [--lab LAB] NODE -- CMD…`: exits with the command's code.
pub(crate) fn cmd_exec(lab: Option<String>, node: String, cmd: Vec<String>) -> Result<(), Failure> {
    need_root("exec")?;
    let dir = pick_lab(lab)?;
    let p = lab_plan(&dir)?;
    let Some(i) = p.node_index(&node) else {
        return Err(invalid(anyhow!("lab {} has no node {node:?}", dir.lab)));
    };
    let ns = Netns::open(&p.nodes[i].netns)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ns.fd());
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    // SAFETY: setns is async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let st = c
        .status()
        .with_context(|| format!("run {:?} in {}", cmd[0], p.nodes[i].netns))?;
    match st.code() {
        Some(0) => Ok(()),
        Some(c) => std::process::exit(c),
        None => Err(anyhow!("{} killed by a signal", cmd[0]).into()),
    }
}
