//! Client load: one sequential session per loaded node, KV reads and writes (and messages
//! to other cells) through the supervisor's proxy, recorded as a history for the checker.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lightcone_core::causal::checker::{HistoryOp, OpKind, OpStatus};
use lightcone_core::kv::Durability;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::action::{Action, Load};
use super::{cell_key, LabView, Shared};
use crate::client::{Client, KvRead};

/// Shortest real pause between two ops of one load session.
const MIN_LOAD_INTERVAL: Duration = Duration::from_millis(10);
/// Most recorded load operations (bounded history).
const MAX_OPS: usize = 200_000;

/// What the load sessions share with the run.
pub(super) struct LoadCtx<'a> {
    pub api: &'a Client,
    pub shared: &'a Arc<Mutex<Shared>>,
    pub procs: &'a Arc<AtomicU32>,
    pub lab: &'a LabView,
    pub seed: u64,
    pub duration_ns: u64,
    pub t0: Instant,
    /// The object store's class, when the topology has a `store:` section.
    pub class: Option<lightcone_core::store::Class>,
    /// Appended to every key the load writes (empty unless the lab was reused).
    pub key_suffix: String,
}

/// Starts one session per node of a `load` action (any other action starts nothing).
pub(super) fn start(ctx: &LoadCtx<'_>, action: &Action, out: &mut Vec<JoinHandle<()>>) {
    let Action::LoadStart {
        nodes,
        load:
            Load {
                until_ns,
                interval_ns,
                keys,
                durability,
                write_fraction: wf,
                message_fraction: mf,
            },
    } = action
    else {
        return;
    };
    let ts = ctx.lab.ts;
    let until = Duration::from_secs_f64((*until_ns).min(ctx.duration_ns) as f64 / 1e9 / ts);
    let interval = Duration::from_secs_f64(*interval_ns as f64 / 1e9 / ts).max(MIN_LOAD_INTERVAL);
    let (names, addrs) = (&ctx.lab.names, &ctx.lab.addrs);
    for (i, n) in nodes.iter().enumerate() {
        let node_idx = names.iter().position(|x| x == n).unwrap_or(0) as u32;
        let cell = cell_key(addrs.get(n).map(String::as_str).unwrap_or(""));
        // Message destinations: every node outside the session's cell (its own cell's other
        // nodes in a one-cell lab).
        let mut destinations: Vec<String> = names
            .iter()
            .filter(|x| cell_key(addrs.get(*x).map(String::as_str).unwrap_or("")) != cell)
            .cloned()
            .collect();
        if destinations.is_empty() {
            destinations = names.iter().filter(|x| *x != n).cloned().collect();
        }
        let session = LoadSession {
            api: ctx.api.clone(),
            shared: ctx.shared.clone(),
            procs: ctx.procs.clone(),
            node: n.clone(),
            node_idx,
            cell,
            keys: *keys,
            write_fraction: *wf,
            message_fraction: *mf,
            durability: *durability,
            destinations,
            interval,
            until: ctx.t0 + until,
            t0: ctx.t0,
            seed: ctx.seed ^ ((i as u64 + 1) << 32),
            key_suffix: ctx.key_suffix.clone(),
        };
        out.push(std::thread::spawn(move || load_loop(session)));
    }
}

struct LoadSession {
    api: Client,
    shared: Arc<Mutex<Shared>>,
    procs: Arc<AtomicU32>,
    node: String,
    node_idx: u32,
    cell: String,
    keys: u32,
    write_fraction: f64,
    message_fraction: f64,
    durability: Durability,
    destinations: Vec<String>,
    interval: Duration,
    until: Instant,
    t0: Instant,
    seed: u64,
    key_suffix: String,
}

/// One client session at a time on one node: sequential ops; after an op with an unknown
/// outcome (or a failure) the session ends and a new one (new process id) begins, as in
/// Jepsen, so the checker never holds a session to a replica that may have lost its state.
fn load_loop(s: LoadSession) {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut proc_id = s.procs.fetch_add(1, Ordering::Relaxed);
    let mut seq = 0u64;
    while Instant::now() < s.until {
        // Drawn only when messages are asked for, so a load without them keeps its sequence.
        if s.message_fraction > 0.0
            && !s.destinations.is_empty()
            && rng.gen_bool(s.message_fraction.clamp(0.0, 1.0))
        {
            seq += 1;
            let dst = &s.destinations[rng.gen_range(0..s.destinations.len())];
            let payload = format!("m{proc_id}-{seq}");
            let ok = s
                .api
                .send_message(&s.node, dst, payload.as_bytes(), Duration::from_secs(3))
                .is_ok();
            {
                let mut sh = s.shared.lock().expect("shared");
                if ok {
                    sh.messages_sent += 1;
                } else {
                    sh.messages_refused += 1;
                }
            }
            std::thread::sleep(s.interval);
            continue;
        }
        let key = format!("{}-k{}{}", s.cell, rng.gen_range(0..s.keys), s.key_suffix);
        let write = rng.gen_bool(s.write_fraction.clamp(0.0, 1.0));
        let start = s.t0.elapsed().as_nanos() as u64;
        let (mut dot, mut context) = (None, None);
        let (op, status) = if write {
            seq += 1;
            let value = format!("p{proc_id}-{seq}");
            // `?context`: the answer names the write's dot and the context it overwrote, so
            // the checker knows which writes this one causally follows. The agent answers
            // once the write is as durable as asked (`cell`: f + 1 members hold it).
            let r = s
                .api
                .kv_put(&s.node, &key, &value, s.durability, Duration::from_secs(3));
            // A `cell` write the agent could not get acknowledged in time (504) is
            // indeterminate, but the agent names its dot and context too: without them the
            // checker could not tell that a later read legitimately shows a value written
            // over earlier ones.
            let r = r.map(|(raw, written)| {
                if let Some(w) = written {
                    dot = w.dot;
                    context = Some(w.context);
                }
                raw
            });
            if let Ok(raw) = &r {
                if raw.status == 200 && s.durability == Durability::Local {
                    s.shared
                        .lock()
                        .expect("shared")
                        .local_writes
                        .insert((key.clone(), value.clone()));
                }
            }
            let st = match &r {
                Ok(raw) => match raw.status {
                    200 => OpStatus::Ok,
                    // The supervisor could not connect to the agent: the write never reached
                    // it. Any other 502 ("connection closed before message completed": the
                    // agent died holding it) is indeterminate — it may have applied and sent
                    // the write first, as a crash right after a put does.
                    502 if raw.body.contains(&format!("agent {}: connect ", s.node)) => {
                        OpStatus::Fail
                    }
                    501 => OpStatus::Fail,
                    _ => OpStatus::Info,
                },
                Err(_) => OpStatus::Info,
            };
            (OpKind::Write { value }, st)
        } else {
            // Every concurrent sibling: the store is a multi-value register, and a read that
            // saw only the resolved sibling would hide the others from the checker.
            match s.api.kv_get(&s.node, &key, Duration::from_secs(5)) {
                Ok(KvRead::Found(v)) => (OpKind::Read { values: v.siblings }, OpStatus::Ok),
                Ok(KvRead::Unreadable) => (OpKind::Read { values: vec![] }, OpStatus::Info),
                Ok(KvRead::Missing) => (OpKind::Read { values: vec![] }, OpStatus::Ok),
                Err(_) => (OpKind::Read { values: vec![] }, OpStatus::Info),
            }
        };
        let end = s.t0.elapsed().as_nanos() as u64;
        {
            let mut sh = s.shared.lock().expect("shared");
            if sh.history.len() < MAX_OPS {
                sh.history.push(HistoryOp {
                    process: proc_id,
                    node: Some(s.node_idx),
                    key,
                    op,
                    status,
                    dot,
                    context,
                    start_ns: start,
                    end_ns: end.max(start),
                });
            }
        }
        if status != OpStatus::Ok {
            proc_id = s.procs.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(s.interval);
    }
}
