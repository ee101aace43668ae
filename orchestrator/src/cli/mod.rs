//! The CLI's commands, one function per subcommand (`cmd_*`), and what they share: the
//! exit-code carrying [`Failure`], picking a lab, and a [`Client`] of its supervisor.
//! `main.rs` parses the arguments and dispatches.

mod dark;
mod down;
mod exec;
mod fault;
mod files;
mod hosts;
mod link;
mod object;
mod probe;
mod run;
mod simulate;
mod status;
mod task;
mod token;
mod tools;
mod up;
mod update;
mod worker;

pub(crate) use dark::{cmd_order, OrderArgs};
pub(crate) use down::cmd_down;
pub(crate) use exec::cmd_exec;
pub(crate) use fault::{
    cmd_byzantine, cmd_clock, cmd_crash_restart, cmd_revoke_key, cmd_rotate_key, cmd_steal_key,
    Life,
};
pub(crate) use files::{cmd_graph, cmd_plan, cmd_validate};
pub(crate) use hosts::{cmd_control, cmd_up_hosts, probe_across, route_to_host};
pub(crate) use link::cmd_link;
pub(crate) use object::{cmd_object_get, cmd_object_put};
pub(crate) use probe::cmd_probe;
pub(crate) use run::cmd_run;
pub(crate) use simulate::cmd_simulate;
pub(crate) use status::cmd_status;
pub(crate) use task::cmd_task_submit;
pub(crate) use token::{cmd_token_attenuate, cmd_token_mint, cmd_token_revoke};
pub(crate) use tools::{cmd_completions, cmd_doctor, cmd_doctor_hosts};
pub(crate) use up::{cmd_supervise, cmd_up, parse_time_scale};
pub(crate) use update::{
    cmd_update_abort, cmd_update_approve, cmd_update_plan, cmd_update_start, cmd_update_status,
    StartArgs,
};
pub(crate) use worker::{cmd_worker, cmd_worker_echo, cmd_worker_ping};

use anyhow::anyhow;
use lightcone::client::{Client, ClientError};
use lightcone::link::engine::EngineChoice;
use lightcone::plan::{self, Plan};
use lightcone::state::LabDir;
use lightcone::topology::{self, LoadError};

/// Exit codes, also listed in `--help`.
pub(crate) mod code {
    pub const FAILURE: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const STATE: u8 = 3;
}

/// An error with the exit code it maps to.
pub(crate) struct Failure(pub u8, pub anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(code::FAILURE, e.into())
    }
}

pub(crate) fn invalid(e: impl Into<anyhow::Error>) -> Failure {
    Failure(code::INVALID, e.into())
}
pub(crate) fn state(msg: String) -> Failure {
    Failure(code::STATE, anyhow!(msg))
}

pub(crate) fn load(file: &std::path::Path) -> Result<topology::Topology, Failure> {
    topology::load(file).map_err(|e| match e {
        LoadError::Invalid { rendered, .. } => Failure(code::INVALID, Rendered(rendered).into()),
        e => invalid(e),
    })
}

/// Diagnostics already rendered (each begins `error:`, with file:line:column): printed as
/// they are, not behind another `error:`.
#[derive(Debug)]
pub(crate) struct Rendered(pub String);

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for Rendered {}

/// A scenario's (or a file's) refusal, exit code 2.
pub(crate) fn invalid_rendered(e: lightcone::experiment::scenario::ScenarioError) -> Failure {
    use lightcone::experiment::scenario::ScenarioError;
    match e {
        ScenarioError::Invalid { rendered, .. } => {
            Failure(code::INVALID, Rendered(rendered).into())
        }
        e => invalid(e),
    }
}

pub(crate) fn need_root(what: &str) -> Result<(), Failure> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(Failure(code::FAILURE, anyhow!("`lightcone {what}` needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to manage network namespaces; run it as root (with sudo if you are not root)")));
    }
    Ok(())
}

/// The state directory of a lab named on the command line; a name that is not a lab name
/// (`../../tmp/x`, `/tmp/x`) is invalid input, refused before any path is built from it.
pub(crate) fn lab_dir(name: &str) -> Result<LabDir, Failure> {
    LabDir::new(name).map_err(|e| invalid(anyhow!("{e}; nothing was changed")))
}

/// The lab a command means: the named one, or the only one that is up.
pub(crate) fn pick_lab(lab: Option<String>) -> Result<LabDir, Failure> {
    if let Some(l) = lab {
        let d = lab_dir(&l)?;
        if !d.exists() {
            return Err(state(format!("lab {l} is not up")));
        }
        return Ok(d);
    }
    let mut all = LabDir::all();
    match all.len() {
        0 => Err(state(
            "no lab is up; start one with `lightcone up FILE`".into(),
        )),
        1 => Ok(all.remove(0)),
        n => Err(invalid(anyhow!(
            "{n} labs are up ({}); say which with --lab",
            LabDir::all_names().join(", ")
        ))),
    }
}

pub(crate) fn lab_plan(dir: &LabDir) -> Result<Plan, Failure> {
    if !dir.topology_path().exists() && dir.plan_path().exists() {
        // A multi-host worker's slice (issue 19): no topology file, the plan it runs.
        let bytes = std::fs::read(dir.plan_path()).map_err(|e| {
            Failure(
                code::FAILURE,
                anyhow!("read {}: {e}", dir.plan_path().display()),
            )
        })?;
        return serde_json::from_slice(&bytes).map_err(|e| {
            Failure(
                code::FAILURE,
                anyhow!("parse {}: {e}", dir.plan_path().display()),
            )
        });
    }
    let topo = topology::load(&dir.topology_path()).map_err(|e| match e {
        LoadError::Invalid { rendered, .. } => Failure(code::FAILURE, Rendered(rendered).into()),
        e => Failure(code::FAILURE, anyhow!("lab {}: {e}", dir.lab)),
    })?;
    Ok(plan::plan(&topo))
}

/// A client of the lab's running supervisor (exit 3 if it has none).
pub(crate) fn supervisor_of(dir: &LabDir) -> Result<Client, Failure> {
    Client::connect(dir).ok_or_else(|| {
        state(format!(
            "lab {} has no running supervisor; run `lightcone down {}` to clean it up",
            dir.lab, dir.lab
        ))
    })
}

/// What a failed API request means to the CLI: the supervisor's refusal of the input
/// (400, 404) is a usage error (exit 2) in its own words; anything else exit 1.
pub(crate) fn client_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Status { status, error, .. } => {
            let msg = error.unwrap_or_else(|| "request failed".into());
            if status == 404 || status == 400 {
                invalid(anyhow!(msg))
            } else {
                Failure(code::FAILURE, anyhow!(msg))
            }
        }
        ClientError::Connect { url, message, .. } => {
            Failure(code::FAILURE, anyhow!("lab API at {url}: {message}"))
        }
        ClientError::Decode { message, .. } => Failure(
            code::FAILURE,
            anyhow::Error::msg(message).context("read API answer"),
        ),
    }
}

/// A JSON request to the supervisor (`GET` or `POST`), the answer as JSON: what
/// `node_fault` sends its fault bodies with.
pub(crate) fn api(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    match method {
        "GET" => client.get_json(path, lightcone::client::DEFAULT_TIMEOUT),
        _ => client.post_json(path, &body.unwrap_or_else(|| serde_json::json!({}))),
    }
    .map_err(client_failure)
}

/// The `--link-engine` spelling of an engine.
pub(crate) fn engine_arg(e: EngineChoice) -> &'static str {
    match e {
        EngineChoice::Auto => "auto",
        EngineChoice::Netem => "netem",
        EngineChoice::Wire => "wire",
        EngineChoice::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_refusals_map_to_exit_codes_in_the_supervisors_words() {
        let status = |status: u16, error: Option<&str>| ClientError::Status {
            path: "/p".into(),
            status,
            body: String::new(),
            error: error.map(str::to_string),
        };
        let f = client_failure(status(404, Some("lab l has no node \"x\"")));
        assert_eq!(
            (f.0, f.1.to_string()),
            (code::INVALID, "lab l has no node \"x\"".into())
        );
        assert_eq!(client_failure(status(400, None)).0, code::INVALID);
        let f = client_failure(status(409, Some("x's agent is not running")));
        assert_eq!(
            (f.0, f.1.to_string()),
            (code::FAILURE, "x's agent is not running".into())
        );
        assert_eq!(
            client_failure(status(502, None)).1.to_string(),
            "request failed"
        );
        let f = client_failure(ClientError::Connect {
            url: "http://127.0.0.1:1/api/status".into(),
            path: "/api/status".into(),
            message: "refused".into(),
        });
        assert_eq!(
            (f.0, f.1.to_string()),
            (
                code::FAILURE,
                "lab API at http://127.0.0.1:1/api/status: refused".into()
            )
        );
    }
}
