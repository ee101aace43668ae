//! `object put|get`: objects in a running lab's erasure-coded store (issue 16), through
//! the supervisor (a put carries the lab's token like every state-changing request).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{client_failure, invalid, pick_lab, state, supervisor_of, Failure};

/// Time to wait for the agent's answer (its shards come from other tiles).
const TIMEOUT: Duration = Duration::from_secs(20);

/// `lightcone object put NODE ID (VALUE | --file F)`: prints `stored ID` once every shard
/// (or more than k of them) is held.
pub(crate) fn cmd_object_put(
    node: String,
    id: String,
    value: Option<String>,
    file: Option<PathBuf>,
    lab: Option<String>,
) -> Result<(), Failure> {
    let data = match (value, file) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(f)) => std::fs::read(&f)
            .map_err(|e| invalid(anyhow::anyhow!("--file {}: {e}", f.display())))?,
        _ => {
            return Err(invalid(anyhow::anyhow!(
                "give the object's bytes as VALUE or as --file, not both"
            )))
        }
    };
    let client = supervisor_of(&pick_lab(lab)?)?;
    let raw = client
        .object_put(&node, &id, &data, TIMEOUT)
        .map_err(client_failure)?;
    if raw.status == 200 {
        println!("stored {id} ({} bytes) through {node}", data.len());
        Ok(())
    } else {
        Err(state(format!(
            "object put {id} through {node}: {} {}",
            raw.status,
            raw.body.trim()
        )))
    }
}

/// `lightcone object get NODE ID`: the object's bytes on stdout.
pub(crate) fn cmd_object_get(node: String, id: String, lab: Option<String>) -> Result<(), Failure> {
    let client = supervisor_of(&pick_lab(lab)?)?;
    let raw = client
        .object_get(&node, &id, TIMEOUT)
        .map_err(client_failure)?;
    if raw.status == 200 {
        let mut out = std::io::stdout();
        out.write_all(raw.body.as_bytes())?;
        out.flush()?;
        Ok(())
    } else {
        Err(state(format!(
            "object get {id} through {node}: {} {}",
            raw.status,
            raw.body.trim()
        )))
    }
}
