//! `doctor` and `completions`.

use clap::CommandFactory;

use super::{code, Failure};
use crate::Cli;

/// `lightcone doctor [--json]`: exit 1 if any check fails.
pub(crate) fn cmd_doctor(json: bool) -> Result<(), Failure> {
    let r = lightcone::doctor::run();
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
    } else {
        print!("{}", lightcone::doctor::render(&r));
    }
    if r.ok {
        Ok(())
    } else {
        // The report already says what failed and what to do.
        std::process::exit(code::FAILURE as i32)
    }
}

/// `lightcone completions SHELL`.
pub(crate) fn cmd_completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    // Without the hidden internal subcommand (clap_complete would offer it).
    let full = Cli::command();
    let mut visible = clap::Command::new("lightcone")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    if let Some(a) = full.get_about() {
        visible = visible.about(a.clone());
    }
    clap_complete::generate(shell, &mut visible, "lightcone", &mut std::io::stdout());
    Ok(())
}

/// `lightcone doctor --hosts H [--json]`: every host checked over ssh; exit 1 if any
/// check failed.
pub(crate) fn cmd_doctor_hosts(hosts_file: &std::path::Path, json: bool) -> Result<(), Failure> {
    use anyhow::Context;
    use lightcone::hosts;
    let h = hosts::load(hosts_file).map_err(|e| match e {
        lightcone::topology::LoadError::Invalid { rendered, .. } => {
            Failure(code::INVALID, super::Rendered(rendered).into())
        }
        e => super::invalid(e),
    })?;
    let root = hosts::ssh::control_root();
    std::fs::create_dir_all(&root)
        .with_context(|| format!("create the ssh control directory {}", root.display()))?;
    // Its own control sockets: a doctor never shares a lab's master connection.
    let tag = format!("doctor-{}", std::process::id());
    let ssh = hosts::ssh::Ssh::new(&tag, h.ssh_config.clone(), &root).map_err(super::invalid)?;
    let ours = hosts::slice::Controller::this().context("hash this binary")?;
    let r = hosts::doctor::run(&h, &ssh, &ours);
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
    } else {
        print!("{}", hosts::doctor::render(&r));
    }
    if r.ok {
        Ok(())
    } else {
        std::process::exit(code::FAILURE as i32)
    }
}
