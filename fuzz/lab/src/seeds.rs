//! Seed corpora from valid objects: the datagram target's seeds are the real signed frames
//! node 0 receives while the five-node lab runs for [`RUN`] (every sub-machine on, with
//! kv puts, data, an object put, a dark order, a BFT revocation and a crash to make every
//! kind flow), plus frames of the kinds that run does not produce (accusations, boot
//! notices, watch replies), signed by their real sources. The log and update targets'
//! seeds come from their modules.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lightcone_core::heat::task::{TaskClassName, TaskSpec};
use lightcone_core::io::{Command, Input, Outbox};
use lightcone_core::kv::Durability;
use lightcone_core::time::Instant;
use lightcone_core::trust::threshold::Share;
use lightcone_core::update::dark::Order;
use lightcone_core::wire::{self, Auth, Dest, Header, Payload};
use lightcone_core::Node;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::input::{put_record, RESIGN, TICK};
use crate::lab::{self, build_node, CAP_EVENTS, CAP_TRANSMITS, NODES, T0, UNDER_TEST};

/// How long the lab runs for the datagram seeds (emulated).
pub const RUN: Duration = Duration::from_secs(20);
/// Seeds kept per (kind, first payload byte).
pub const PER_KIND: usize = 3;
/// Records per sequence seed.
pub const SEQ_LEN: usize = 12;

/// A datagram node 0 received: when, from which neighbour, the bytes.
pub struct Received {
    pub at: Instant,
    pub from: u32,
    pub bytes: Vec<u8>,
}

/// Runs the lab and returns what node 0 received, in order.
pub fn capture() -> Vec<Received> {
    let lab = lab::lab();
    let mut nodes: Vec<Node> = (0..NODES).map(|i| build_node(i, T0)).collect();
    let delay = Duration::from_millis(2);
    // (arrival, order) -> (to, from, bytes)
    let mut queue: BTreeMap<(Instant, u64), (u32, u32, Vec<u8>)> = BTreeMap::new();
    let mut order = 0u64;
    let mut got = Vec::new();
    let mut out = Outbox::new(CAP_TRANSMITS, CAP_EVENTS);
    let mut post = |from: u32,
                    out: &mut Outbox,
                    now: Instant,
                    queue: &mut BTreeMap<(Instant, u64), (u32, u32, Vec<u8>)>| {
        for t in out.transmits.drain(..) {
            order += 1;
            queue.insert((now + delay, order), (t.to, from, t.bytes));
        }
        out.events.clear();
    };
    for (i, n) in nodes.iter_mut().enumerate() {
        n.start(T0, &mut out);
        post(i as u32, &mut out, T0, &mut queue);
    }
    let shares: Vec<&Share> = lab.shares.values().take(2).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(lab::SEED);
    // Undark the cell (it is not dark: the order is checked, obeyed and relayed).
    let cell = Dest::Cell {
        layer: 0,
        cluster: 0,
        cell: 0,
    };
    let undark = Order::sign(&lab.group, &shares, 1, cell, false, &mut rng)
        .expect("an order")
        .encode();
    let s = |x: u64| T0 + Duration::from_secs(x);
    let mut commands: Vec<(Instant, u32, Command)> = vec![
        (
            s(3),
            1,
            Command::Put {
                request: 1,
                key: "k".into(),
                value: b"v".to_vec(),
                durability: Durability::Cell,
            },
        ),
        (
            s(3),
            1,
            Command::Send {
                dst: 0,
                data: b"data".to_vec(),
            },
        ),
        (
            s(3),
            4,
            Command::Send {
                dst: 2,
                data: b"transit".to_vec(),
            },
        ),
        (
            s(4),
            1,
            Command::ObjectPut {
                request: 2,
                object: "o".into(),
                data: (0..2000u32).map(|i| i as u8).collect(),
            },
        ),
        (
            s(4),
            2,
            Command::TaskSubmit(TaskSpec {
                compute: 10,
                memory_mib: 1,
                bandwidth_mbps: 1,
                duration_ns: 1_000_000_000,
                class: TaskClassName::Hot,
                traffic_kbps: 64,
            }),
        ),
        (s(6), 1, Command::Order(undark)),
        (s(12), 1, Command::BftRevoke { node: 3 }),
        (s(14), 2, Command::Shutdown),
    ];
    commands.reverse();
    let end = T0 + RUN;
    loop {
        let next_msg = queue.keys().next().map(|k| k.0);
        let next_timer = nodes.iter().filter_map(|n| n.poll_timeout()).min();
        let next_cmd = commands.last().map(|c| c.0);
        let Some(now) = [next_msg, next_timer, next_cmd].into_iter().flatten().min() else {
            break;
        };
        if now > end {
            break;
        }
        if next_cmd == Some(now) {
            let (_, id, cmd) = commands.pop().expect("a command");
            let _ = nodes[id as usize].command(now, &cmd, &mut out);
            post(id, &mut out, now, &mut queue);
            continue;
        }
        if next_msg == Some(now) {
            let (key, (to, from, bytes)) = queue.pop_first().expect("a message");
            debug_assert_eq!(key.0, now);
            if to == UNDER_TEST {
                got.push(Received {
                    at: now,
                    from,
                    bytes: bytes.clone(),
                });
            }
            let n = &mut nodes[to as usize];
            n.handle(
                now,
                Input::Datagram {
                    from,
                    bytes: &bytes,
                },
                &mut out,
            );
            post(to, &mut out, now, &mut queue);
            continue;
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now, &mut out);
                post(i as u32, &mut out, now, &mut queue);
            }
        }
    }
    got
}

fn from_ix(from: u32) -> u8 {
    lab::lab().links[UNDER_TEST as usize]
        .iter()
        .position(|l| l.0 == from)
        .expect("a neighbour") as u8
}

/// Frames of kinds the run does not produce, signed by node 1 for node 0.
fn crafted() -> Vec<Vec<u8>> {
    let key = lab::key_of(1).expect("node 1");
    let mut seq = 1u64 << 40;
    let payloads = [
        Payload::Accuse { node: 3 },
        Payload::Boot,
        Payload::Watch {
            nonce: 7,
            reply: true,
        },
        Payload::Watch {
            nonce: 8,
            reply: false,
        },
        Payload::Nack { probe: 3 },
        Payload::Hello {
            min: 2,
            max: 3,
            reply: false,
        },
        Payload::Time(Vec::new()),
        Payload::Kv(vec![0]),
        // A revocation entry, well formed, whose signature is no threshold signature.
        Payload::Trust(
            lightcone_core::trust::threshold::Revocation {
                subject: 3,
                key: [1; 32],
                at_ns: 5,
            }
            .entry(&[0; 64])
            .encode(),
        ),
        // An attestation whose signature is no tile's.
        Payload::Attest {
            build: [2; 32],
            config: [3; 32],
            reply: false,
            sig: [4; 64],
        },
    ];
    payloads
        .into_iter()
        .map(|p| {
            seq += 1;
            let h = Header {
                kind: p.kind(),
                ttl: wire::DEFAULT_TTL,
                src: 1,
                dst: Dest::Node(UNDER_TEST),
                seq,
                hlc: 0,
                src_epoch: wire::FIRST_EPOCH,
                dst_epoch: wire::FIRST_EPOCH,
            };
            wire::encode_versioned(&h, &p, &key, Auth::Ed25519, wire::VERSION_MAX)
        })
        .collect()
}

/// The datagram target's seeds (name, bytes).
pub fn datagram_seeds() -> Vec<(String, Vec<u8>)> {
    let got = capture();
    let mut v = Vec::new();
    let mut per: BTreeMap<(u8, u8), usize> = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    for r in &got {
        let Ok(f) = wire::parse(&r.bytes) else {
            continue;
        };
        let k = (f.header.kind, f.payload.first().copied().unwrap_or(0));
        let n = per.entry(k).or_default();
        if *n < PER_KIND {
            *n += 1;
            kinds.insert(f.header.kind);
            let mut w = Vec::new();
            put_record(&mut w, RESIGN, from_ix(r.from), 0, &r.bytes);
            v.push((format!("kind{:02}-{:02x}-{n}", k.0, k.1), w));
        }
    }
    for (i, b) in crafted().into_iter().enumerate() {
        let mut w = Vec::new();
        put_record(&mut w, RESIGN, from_ix(1), 0, &b);
        v.push((format!("crafted-{i}"), w));
    }
    // Sequences as they arrived, with the time between them.
    let step = (got.len() / 16).max(1);
    for start in (0..got.len().saturating_sub(SEQ_LEN)).step_by(step) {
        let mut w = Vec::new();
        let mut prev = got[start].at;
        for r in &got[start..start + SEQ_LEN] {
            let dt = r.at.saturating_since(prev).as_millis() / 10;
            prev = r.at;
            put_record(
                &mut w,
                RESIGN | TICK,
                from_ix(r.from),
                dt.min(255) as u8,
                &r.bytes,
            );
        }
        v.push((format!("seq-{start:05}"), w));
    }
    eprintln!(
        "datagram seeds: {} datagrams captured, kinds {:?}, {} seeds",
        got.len(),
        kinds,
        v.len()
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_seeds_cover_every_kind_and_run_clean() {
        let seeds = datagram_seeds();
        let mut kinds = BTreeSet::new();
        for (name, s) in &seeds {
            for r in crate::input::records(s) {
                if let Ok(f) = wire::parse(r.bytes) {
                    kinds.insert(f.header.kind);
                }
            }
            eprintln!("{name}");
            crate::datagram::run(s);
        }
        let want: BTreeSet<u8> = (1..=13)
            .chain([16, 20, 28, 29, 30, 34, 35, 38, 39])
            .collect();
        assert_eq!(kinds, want, "kinds in the seeds");
    }
}
