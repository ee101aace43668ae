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

/// `lightcone status [LAB] [--json]`.
pub(crate) fn cmd_status(lab: Option<String>, json: bool) -> Result<(), Failure> {
    let labs = match lab {
        Some(l) => {
            let d = lab_dir(&l)?;
            if !d.exists() {
                return Err(state(format!("lab {l} is not up")));
            }
            vec![d]
        }
        None => LabDir::all(),
    };
    let seen: Vec<Seen> = labs.iter().map(Seen::of).collect();
    if json {
        let out: Vec<serde_json::Value> = seen.iter().map(Seen::json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "labs": out })).expect("json")
        );
        return Ok(());
    }
    if seen.is_empty() {
        println!("no lab is up");
    }
    for s in &seen {
        s.print();
    }
    Ok(())
}
