//! Final reads: after the load stops and the lab settles, every key written, from every
//! running replica of its cell, in parallel (one reader per node: slow agents must not
//! stretch the run). Each read is also a history op, so the checker sees the end state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightcone_core::causal::checker::{HistoryOp, OpKind, OpStatus};
use lightcone_core::causal::DotContext;

use super::super::record::FinalRead;
use super::{cell_key, lab_err, RunError, Shared, STATUS_TIMEOUT};
use crate::client::{Client, KvRead};

/// Real pause after the load stops and before the final reads (replication, repair).
const SETTLE: Duration = Duration::from_secs(3);

/// Reads every key the load wrote (none: nothing to read, no pause).
pub(super) fn read_all(
    api: &Client,
    shared: &Arc<Mutex<Shared>>,
    t0: Instant,
) -> Result<Vec<FinalRead>, RunError> {
    let mut final_reads = Vec::new();
    let keys: Vec<String> = {
        let s = shared.lock().expect("shared");
        let mut k: Vec<String> = s.history.iter().map(|o| o.key.clone()).collect();
        k.sort();
        k.dedup();
        k
    };
    if keys.is_empty() {
        return Ok(final_reads);
    }
    std::thread::sleep(SETTLE);
    let status = api.status(STATUS_TIMEOUT).map_err(lab_err)?;
    let readers: Vec<_> = status
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.agent.state == "running")
        .map(|(i, n)| {
            let cell = cell_key(&n.addr);
            let mine: Vec<String> = keys
                .iter()
                .filter(|k| k.starts_with(&format!("{cell}-")))
                .cloned()
                .collect();
            let (api, shared, name) = (api.clone(), shared.clone(), n.name.clone());
            std::thread::spawn(move || read_node(&api, &shared, t0, i, &name, mine))
        })
        .collect();
    for r in readers {
        final_reads.extend(r.join().unwrap_or_default());
    }
    Ok(final_reads)
}

/// One node's reads of `keys` (node index `i` in the lab status).
fn read_node(
    api: &Client,
    shared: &Mutex<Shared>,
    t0: Instant,
    i: usize,
    name: &str,
    keys: Vec<String>,
) -> Vec<FinalRead> {
    let mut reads = Vec::new();
    for k in keys {
        let start = t0.elapsed().as_nanos() as u64;
        let r = api.kv_get(name, &k, Duration::from_secs(3));
        let end = t0.elapsed().as_nanos() as u64;
        let (values, dots, context) = match r {
            Ok(KvRead::Found(v)) => (v.siblings, v.dots, v.context),
            Ok(KvRead::Missing) => (Vec::new(), Vec::new(), Some(DotContext::new())),
            _ => continue,
        };
        shared.lock().expect("shared").history.push(HistoryOp {
            process: 1_000_000 + i as u32,
            node: Some(i as u32),
            key: k.clone(),
            op: OpKind::Read {
                values: values.clone(),
            },
            status: OpStatus::Ok,
            dot: None,
            context: None,
            start_ns: start,
            end_ns: end,
        });
        reads.push(FinalRead {
            node: name.to_string(),
            key: k,
            values,
            dots,
            context,
        });
    }
    reads
}
