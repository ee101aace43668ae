//! `fault crash|restart|clock|byzantine`: inject a fault through the supervisor.

use anyhow::anyhow;
use lightcone::client::{ByzantineSet, ClockInjected};

use super::{client_failure, invalid, pick_lab, supervisor_of, Failure};
use crate::{clock_request, node_fault};

/// A node's crash or restart.
#[derive(Clone, Copy)]
pub(crate) enum Life {
    Crash,
    Restart,
}

/// `lightcone fault crash|restart NODE`: prints the supervisor's answer.
pub(crate) fn cmd_crash_restart(
    what: Life,
    node: String,
    lab: Option<String>,
) -> Result<(), Failure> {
    let client = supervisor_of(&pick_lab(lab)?)?;
    let (what, reply) = match what {
        Life::Crash => ("crash", client.crash(&node).map(|r| json(&r))),
        Life::Restart => ("restart", client.restart(&node).map(|r| json(&r))),
    };
    println!("{what} {node}: {}", reply.map_err(client_failure)?);
    Ok(())
}

/// `lightcone fault clock NODE --step|--drift|--bias|--pulsar-loss|--pulsar-restore`.
pub(crate) fn cmd_clock(
    node: String,
    lab: Option<String>,
    step: Option<String>,
    drift: Option<f64>,
    bias: Option<String>,
    pulsar_loss: bool,
    pulsar_restore: bool,
) -> Result<(), Failure> {
    let req = clock_request(step, drift, bias, pulsar_loss, pulsar_restore)
        .map_err(|e| invalid(anyhow!(e)))?;
    let body = serde_json::to_value(&req).map_err(|e| anyhow!(e))?;
    let v = node_fault(lab, &node, "clock", body)?;
    let r: ClockInjected = decode(v)?;
    println!("clock {node}: {}", r.injected);
    Ok(())
}

/// `lightcone fault byzantine NODE --behaviour …|--honest`.
pub(crate) fn cmd_byzantine(
    node: String,
    lab: Option<String>,
    behaviour: Vec<String>,
    honest: bool,
) -> Result<(), Failure> {
    let behaviour = if honest { Vec::new() } else { behaviour };
    lightcone_agent::node::Byzantine::from_names(&behaviour).map_err(|e| invalid(anyhow!(e)))?;
    let body = serde_json::json!({ "behaviour": behaviour });
    let v = node_fault(lab, &node, "byzantine", body)?;
    let r: ByzantineSet = decode(v)?;
    if r.behaviour.is_empty() {
        println!("byzantine {node}: honest again");
    } else {
        println!("byzantine {node}: {}", json(&r.behaviour));
    }
    Ok(())
}

/// A reply as the supervisor wrote it (compact JSON).
fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `node_fault`'s JSON answer, typed.
fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(v)
        .map_err(|e| Failure::from(anyhow::Error::new(e).context("read API answer")))
}
