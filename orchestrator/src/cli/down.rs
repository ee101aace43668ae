//! `down`: stop the supervisor (it tears its own lab down), then remove whatever the
//! ledger still names. Harmless when the lab is not up.

use std::time::Duration;

use anyhow::anyhow;
use lightcone::apply;
use lightcone::lab::SupervisorInfo;
use lightcone::state::LabDir;

use super::{invalid, lab_dir, need_root, Failure};

/// `lightcone down [LAB | --all]`.
pub(crate) fn cmd_down(lab: Option<String>, all: bool) -> Result<(), Failure> {
    need_root("down")?;
    // Labs of `up --hosts` (a controller record) and of `up`, each name once.
    let names = || {
        let mut v = lightcone::hosts::control::ControlDir::all_names();
        v.extend(LabDir::all_names());
        v.sort();
        v.dedup();
        v
    };
    let labs = if all {
        names()
    } else {
        match lab {
            Some(l) => vec![l],
            None => match names().as_slice() {
                [] => {
                    println!("no lab is up; nothing to do");
                    vec![]
                }
                [one] => vec![one.clone()],
                many => {
                    return Err(invalid(anyhow!(
                        "{} labs are up ({}); say which, or use --all",
                        many.len(),
                        many.join(", ")
                    )))
                }
            },
        }
    };
    for l in labs {
        down_one(&l)?;
    }
    if all {
        for s in apply::stray_namespaces() {
            apply::remove_stray(&s)?;
            println!("removed stray namespace {s}");
        }
    }
    Ok(())
}

fn down_one(lab: &str) -> Result<(), Failure> {
    let dir = lab_dir(lab)?;
    // A multi-host lab: its controller closes every session, the workers tear down.
    let multi = super::hosts::down_controller(lab)?;
    if multi && !dir.exists() {
        println!("lab {lab} is down");
        return Ok(());
    }
    if !dir.exists() {
        println!("lab {lab} is not up; nothing to do");
        return Ok(());
    }
    // The agents first, all at once and from here: a busy lab's agents would otherwise
    // keep the CPU from the supervisor that is to stop them.
    apply::kill_agents(&dir);
    if let Some(info) = SupervisorInfo::read(&dir).filter(|i| i.alive()) {
        // Ask the supervisor to tear down its own lab; it knows its engine and agents.
        apply::stop_process(info.pid, info.start_time, Duration::from_secs(15));
    } else {
        // Before supervisor.json exists (mid-`up`), the ledger still names the supervisor.
        for e in lightcone::state::Ledger::read(&dir) {
            if let lightcone::state::Entry::Process {
                pid,
                start_time,
                what,
            } = e
            {
                if what == "supervisor" {
                    apply::stop_process(pid, start_time, Duration::from_secs(15));
                }
            }
        }
    }
    let removed = apply::teardown(&dir, None)?;
    println!(
        "lab {lab} is down{}",
        if removed.namespaces > 0 {
            format!(" (removed {} leftover namespaces)", removed.namespaces)
        } else {
            String::new()
        }
    );
    Ok(())
}
