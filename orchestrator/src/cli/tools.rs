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
