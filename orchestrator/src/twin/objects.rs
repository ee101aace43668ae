//! The object store's workload in the twin (issue 16), as the lab runner plays it
//! (`experiment/runner/objects.rs`): an `objects` step's puts as core commands at their
//! virtual times, each recorded with its answer's time, the placement the writer holds
//! and the SHA-256 of each shard (from the bytes written); `crash_holders` aimed at that
//! record; every acknowledged object read back at the end from its current holders, then
//! other live nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use lightcone_core::io::Command;
use lightcone_core::time::Instant;

use super::driver::Twin;
use super::store_work::{Job, Pending, OBJECT_TIMEOUT};
use crate::experiment::action::{shard_hashes, Action, ObjectLoad};
use crate::experiment::expand::Planned;
use crate::experiment::record::{Event, FailedInjection, ObjectPut};
use crate::experiment::runner::objects::{expected_bytes, read_order, read_tries};
use crate::experiment::runner::timeline::record_injection;
use crate::parse::units;

impl Twin {
    /// Schedules an `objects` step's puts, round-robin over its nodes.
    pub(super) fn start_objects(
        &mut self,
        at_ns: u64,
        nodes: &[String],
        o: &ObjectLoad,
        seed: u64,
    ) {
        self.store.seed = seed;
        let load = self.store.loads.len();
        self.store.loads.push((at_ns, o.clone()));
        let ids: Vec<u32> = nodes.iter().filter_map(|n| self.id(n).ok()).collect();
        if ids.is_empty() {
            return;
        }
        for (i, t) in o.times(at_ns).into_iter().enumerate() {
            self.store.jobs.push(Job {
                at: self.t0 + Duration::from_nanos(t),
                node: ids[i % ids.len()],
                load,
                i: i as u32,
            });
        }
        self.store.jobs.sort_by_key(|j| j.at);
    }

    /// Sends the puts that are due; fails the puts past their deadline.
    pub(super) fn step_objects(&mut self) {
        let now = self.sim.now();
        let late: Vec<(u32, u64)> = self
            .store
            .pending
            .iter()
            .filter(|(_, p)| p.sent + OBJECT_TIMEOUT <= now)
            .map(|(k, _)| *k)
            .collect();
        for (node, request) in late {
            self.object_answer(node, request, now, Err("no answer in time".into()));
        }
        while self.store.jobs.first().is_some_and(|j| j.at <= now) {
            let j = self.store.jobs.remove(0);
            let Some(class) = self.store.class.clone() else {
                return;
            };
            let o = &self.store.loads[j.load].1;
            let (object, data) = (o.name(j.i), o.bytes(self.store.seed, j.i));
            let hashes = shard_hashes(&data, &class).unwrap_or_default();
            self.next_request += 1;
            let request = self.next_request;
            let cmd = Command::ObjectPut {
                request,
                object: object.clone(),
                data,
            };
            let t = self.t_s();
            match self.sim.command(j.node, &cmd) {
                Some(Ok(_)) => {
                    self.store.pending.insert(
                        (j.node, request),
                        Pending {
                            object,
                            hashes,
                            sent: now,
                        },
                    );
                }
                r => {
                    let error = match r {
                        Some(Err(e)) => e.to_string(),
                        _ => format!("{} is not running", self.names[j.node as usize]),
                    };
                    self.store.objects.push(ObjectPut {
                        t_real_s: t,
                        node: self.names[j.node as usize].clone(),
                        object,
                        ok: false,
                        error: Some(error),
                        holders: Vec::new(),
                        k: class.k,
                        n: class.n,
                        shard_sha256: hashes,
                    });
                }
            }
        }
    }

    /// A put's answer: recorded with the placement the writer holds.
    pub(super) fn object_answer(
        &mut self,
        node: u32,
        request: u64,
        at: Instant,
        r: Result<(), String>,
    ) {
        let Some(p) = self.store.pending.remove(&(node, request)) else {
            return;
        };
        let Some(class) = self.store.class.clone() else {
            return;
        };
        let holders: Vec<String> = match &r {
            Ok(()) => self
                .sim
                .node(node)
                .and_then(|n| n.store())
                .and_then(|st| st.store().meta(&p.object))
                .map(|m| {
                    m.holders
                        .iter()
                        .map(|h| {
                            self.names
                                .get(*h as usize)
                                .cloned()
                                .unwrap_or_else(|| format!("tile {h}"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        self.store.objects.push(ObjectPut {
            t_real_s: (at - self.t0).as_secs_f64(),
            node: self.names[node as usize].clone(),
            object: p.object,
            ok: r.is_ok(),
            error: r.err(),
            holders,
            k: class.k,
            n: class.n,
            shard_sha256: p.hashes,
        });
    }

    /// `crash_holders`: one crash (and mark) per holder of the named objects' first shards.
    pub(super) fn crash_holders(
        &mut self,
        p: &Planned,
        objects: &[String],
        shards: u16,
        except: &[String],
        progress: &mut impl FnMut(&str),
    ) {
        let t = self.t_s();
        let nodes = match crate::experiment::runner::objects::holders_to_crash(
            &self.store.objects,
            objects,
            shards,
            except,
        ) {
            Ok(v) => v,
            Err(e) => {
                self.failed.push(FailedInjection {
                    t_real_s: t,
                    action: p.action.describe(),
                    error: e,
                });
                return;
            }
        };
        for node in nodes {
            let c = Action::Crash { node };
            let r = self.inject(&c);
            record_injection(&c, t, &r, &mut self.marks, &mut self.failed);
            progress(&format!(
                "[{:>9} virtual] {} ({})",
                units::fmt_ns((t * 1e9) as u64),
                c.describe(),
                p.action.describe()
            ));
            self.events.push(Event {
                t_real_s: t,
                t_emulated_s: t,
                kind: c.kind().into(),
                detail: format!("{} ({})", c.describe(), p.action.describe()),
                ok: r.is_ok(),
                error: r.err(),
            });
        }
    }

    /// Waits for the puts still unanswered (each at most until its deadline).
    pub fn finish_puts(&mut self) {
        while let Some(due) = self
            .store
            .pending
            .values()
            .map(|p| p.sent + OBJECT_TIMEOUT)
            .min()
        {
            self.advance(due.max(self.sim.now()));
            self.step_objects();
        }
    }

    /// Every acknowledged object read back as the lab's runner does
    /// ([`read_order`]: its current holders — the running nodes whose store holds a
    /// shard of it with the hash written, by lowest index — then other running nodes);
    /// the bytes compared with those written.
    pub fn read_back_objects(&mut self) {
        let puts: Vec<ObjectPut> = self
            .store
            .objects
            .iter()
            .filter(|p| p.ok)
            .cloned()
            .collect();
        let running: Vec<u32> = (0..self.names.len() as u32)
            .filter(|i| self.sim.is_up(*i))
            .collect();
        // Object → (index, node) of every valid shard on a running node.
        let mut held: BTreeMap<String, Vec<(u16, u32)>> = BTreeMap::new();
        for &i in &running {
            let Some(st) = self.sim.node(i).and_then(|n| n.store()) else {
                continue;
            };
            for s in st.store().inventory() {
                let valid = puts.iter().any(|p| {
                    p.object == s.object && p.shard_sha256.get(s.index as usize) == Some(&s.sha256)
                });
                if valid {
                    held.entry(s.object).or_default().push((s.index, i));
                }
            }
        }
        let running: Vec<String> = running
            .iter()
            .map(|&i| self.names[i as usize].clone())
            .collect();
        for p in puts {
            let Some(bytes) = expected_bytes(&self.store.loads, &p.object, self.store.seed) else {
                continue;
            };
            let mut by_index = held.remove(&p.object).unwrap_or_default();
            by_index.sort_unstable();
            let mut holders: Vec<String> = Vec::new();
            for (_, i) in by_index {
                let n = &self.names[i as usize];
                if !holders.contains(n) {
                    holders.push(n.clone());
                }
            }
            let order = read_order(&holders, &running);
            if order.is_empty() {
                break;
            }
            let r = read_tries(
                &p.object,
                &order,
                |node| self.read_object(node, &p.object),
                &bytes,
            );
            self.store.object_reads.push(r);
        }
    }

    /// One read of `object` at `node`, waited for in virtual time (at most
    /// [`OBJECT_TIMEOUT`]).
    fn read_object(&mut self, node: &str, object: &str) -> Result<Vec<u8>, String> {
        let i = self.id(node).map_err(|e| e.to_string())?;
        self.next_request += 1;
        let request = self.next_request;
        let cmd = Command::ObjectGet {
            request,
            object: object.into(),
        };
        match self.sim.command(i, &cmd) {
            Some(Ok(_)) => {
                let deadline = self.sim.now() + OBJECT_TIMEOUT;
                while !self.store.reads.contains_key(&(i, request)) && self.sim.now() < deadline {
                    let limit = deadline - self.sim.now();
                    let hit = self.sim.run_until_pred(limit, |s| !s.events().is_empty());
                    self.take_events();
                    if !hit {
                        break;
                    }
                }
                self.store
                    .reads
                    .remove(&(i, request))
                    .unwrap_or_else(|| Err("no answer in time".into()))
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("not running".into()),
        }
    }
}
