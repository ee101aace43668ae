//! `fault crash|restart|clock|byzantine|steal-key`: inject a fault through the supervisor;
//! `revoke-key`: the operator's answer to a stolen key.

use anyhow::anyhow;
use lightcone::client::{ByzantineSet, ClockInjected};

use lightcone::fault::{ByzantineFault, ClockFault, NodeFault};

use super::{api, client_failure, invalid, lab_plan, pick_lab, supervisor_of, Failure};

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
    let fault = ClockFault::from_flags(
        step.as_deref(),
        drift,
        bias.as_deref(),
        pulsar_loss,
        pulsar_restore,
    )
    .map_err(|e| invalid(anyhow!(e)))?;
    let v = node_fault(lab, &node, &NodeFault::Clock(fault))?;
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
    let fault = if honest {
        ByzantineFault::honest()
    } else {
        ByzantineFault::from_names(behaviour).map_err(|e| invalid(anyhow!(e)))?
    };
    let v = node_fault(lab, &node, &NodeFault::Byzantine(fault))?;
    let r: ByzantineSet = decode(v)?;
    if r.behaviour.is_empty() {
        println!("byzantine {node}: honest again");
    } else {
        println!("byzantine {node}: {}", json(&r.behaviour));
    }
    Ok(())
}

/// `lightcone fault steal-key THIEF --key-of VICTIM`.
pub(crate) fn cmd_steal_key(
    thief: String,
    victim: String,
    lab: Option<String>,
) -> Result<(), Failure> {
    let dir = pick_lab(lab)?;
    known_nodes(&dir, &[&thief, &victim])?;
    let r = supervisor_of(&dir)?
        .steal_key(&thief, &victim)
        .map_err(client_failure)?;
    println!("steal-key: {} signs as {}", r.thief, r.victim);
    Ok(())
}

/// `lightcone revoke-key NODE --by MEMBER`.
pub(crate) fn cmd_revoke_key(node: String, by: String, lab: Option<String>) -> Result<(), Failure> {
    let dir = pick_lab(lab)?;
    known_nodes(&dir, &[&node, &by])?;
    let r = supervisor_of(&dir)?
        .revoke_key(&by, &node)
        .map_err(client_failure)?;
    println!(
        "revoke-key: {}'s revocation submitted to {}'s cell group (decided: {} in its members' /state `revoked`)",
        r.node, r.by, r.node
    );
    Ok(())
}

/// `lightcone rotate-key NODE`.
pub(crate) fn cmd_rotate_key(node: String, lab: Option<String>) -> Result<(), Failure> {
    let dir = pick_lab(lab)?;
    known_nodes(&dir, &[&node])?;
    let r = supervisor_of(&dir)?
        .rotate_key(&node)
        .map_err(client_failure)?;
    println!(
        "rotate-key: {} signs with key {} (certificate serial {}) from a second from now; \
         every node lists it in /state `trust.rotated` once the certificate reaches it",
        r.node, r.key, r.serial
    );
    Ok(())
}

/// A usage error (exit 2) naming the first of `nodes` the lab does not have.
fn known_nodes(dir: &lightcone::state::LabDir, nodes: &[&str]) -> Result<(), Failure> {
    let plan = lab_plan(dir)?;
    match nodes.iter().find(|n| plan.node_index(n).is_none()) {
        Some(n) => Err(invalid(anyhow!(
            "lab {} has no node {n:?} (`lightcone status {}` lists them)",
            dir.lab,
            dir.lab
        ))),
        None => Ok(()),
    }
}

/// Posts a fault to the picked lab's supervisor, after checking the lab has that node (an
/// unknown node is a usage error, exit 2).
fn node_fault(
    lab: Option<String>,
    node: &str,
    fault: &NodeFault,
) -> Result<serde_json::Value, Failure> {
    let dir = pick_lab(lab)?;
    known_nodes(&dir, &[node])?;
    let client = supervisor_of(&dir)?;
    api(&client, "POST", &fault.api_path(node), Some(fault.body()))
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
