//! `status`: every lab (or one), as its supervisor reports it.

use lightcone::client::{Client, DEFAULT_TIMEOUT};
use lightcone::lab::LabStatus;
use lightcone::state::LabDir;

use super::{client_failure, engine_arg, lab_dir, state, Failure};

/// One lab as `status` shows it.
enum Seen {
    Up(Box<LabStatus>),
    /// The supervisor runs but did not answer.
    Unreachable {
        name: String,
        error: String,
    },
    /// The state directory is there, its supervisor is not.
    Stale {
        name: String,
    },
}

impl Seen {
    fn of(dir: &LabDir) -> Seen {
        let name = dir.lab.clone();
        match Client::connect(dir) {
            Some(c) => match c.status(DEFAULT_TIMEOUT) {
                Ok(s) => Seen::Up(Box::new(s)),
                Err(e) => Seen::Unreachable {
                    name,
                    error: client_failure(e).1.to_string(),
                },
            },
            None => Seen::Stale { name },
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Seen::Up(s) => serde_json::to_value(s).expect("json"),
            Seen::Unreachable { name, error } => {
                serde_json::json!({"name": name, "state": "unreachable", "error": error})
            }
            Seen::Stale { name } => {
                serde_json::json!({"name": name, "state": "stale", "hint": format!("supervisor is gone; run `lightcone down {name}`")})
            }
        }
    }

    fn print(&self) {
        match self {
            Seen::Up(s) => {
                let running = s
                    .nodes
                    .iter()
                    .filter(|n| n.agent.state == "running")
                    .count();
                let up = s.links.iter().filter(|l| l.up).count();
                println!(
                    "{}: up {:.0}s, engine {}, {} nodes ({} agents running), {}/{} links up",
                    s.name,
                    s.uptime_s,
                    engine_arg(s.engine),
                    s.nodes.len(),
                    running,
                    up,
                    s.links.len()
                );
                if let Some(p) = &s.agent_processes {
                    println!("  agents: {p}");
                }
                println!("  dashboard {}  metrics {}", s.dashboard_url, s.metrics_url);
                if let Some(p) = &s.prometheus_url {
                    println!("  prometheus {p}");
                }
            }
            Seen::Unreachable { name, error } => println!("{name}: unreachable ({error})"),
            Seen::Stale { name } => {
                println!("{name}: stale (supervisor is gone; run `lightcone down {name}`)")
            }
        }
    }
}

/// `lightcone status [LAB] [--json]`. A multi-host lab (`up --hosts`) is shown through
/// its controller: every host's worker asked over ssh, each node with its `host`, and
/// `hosts[]` (before a local lab of the same name: this machine may be one of its hosts).
pub(crate) fn cmd_status(lab: Option<String>, json: bool, local: bool) -> Result<(), Failure> {
    let (multi, labs) = match lab {
        Some(l) => {
            let d = lab_dir(&l)?;
            match (!local).then(|| super::hosts::status_json(&l)).flatten() {
                Some(v) => (vec![v], vec![]),
                None if d.exists() => (vec![], vec![d]),
                None => return Err(state(format!("lab {l} is not up"))),
            }
        }
        None if local => (vec![], LabDir::all()),
        None => {
            let (ctl, local) = super::hosts::all_lab_names();
            (
                ctl.iter()
                    .filter_map(|l| super::hosts::status_json(l))
                    .collect(),
                local,
            )
        }
    };
    let seen: Vec<Seen> = labs.iter().map(Seen::of).collect();
    if json {
        let mut out: Vec<serde_json::Value> = multi.clone();
        out.extend(seen.iter().map(Seen::json));
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "labs": out })).expect("json")
        );
        return Ok(());
    }
    if seen.is_empty() && multi.is_empty() {
        println!("no lab is up");
    }
    for v in &multi {
        super::hosts::status_print(v);
    }
    for s in &seen {
        s.print();
    }
    Ok(())
}
