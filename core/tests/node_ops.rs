//! Operation-sequence property test of the sans-IO core, in the style of s2n-quic's
//! model-based fuzz targets: one `Node` driven through random inputs — valid frames from
//! its neighbours, the same frames mutated or truncated, garbage, its own timers, time
//! jumps, every client command, shutdown — with the invariants checked after every step:
//! no panic; an `Outbox` never holds more than its bounds; membership lists only other
//! members of its own cell; every route leaves by a link the node has; a stopped node says
//! nothing more.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lightcone_core::byzantine::Byzantine;
use lightcone_core::config::{HierAddr, Role};
use lightcone_core::directory::{DirEntry, Directory};
use lightcone_core::io::{Command, CommandError, Input, Outbox, Reply};
use lightcone_core::kv::Durability;
use lightcone_core::node::Node;
use lightcone_core::params::Params;
use lightcone_core::time::Instant;
use lightcone_core::wire::Auth;
use proptest::prelude::*;

/// The simulator's parameters: defaults with the cheap test digest instead of Ed25519 (as
/// `lightcone_sim::test_params` in debug builds).
fn test_params() -> Params {
    Params {
        auth: Auth::TestDigest,
        ..Params::default()
    }
}

const CAP_TRANSMITS: usize = 64;
const CAP_EVENTS: usize = 32;

/// Node 0 (under test) and its cell peers 1..=3 on a ring, node 4 in another cell linked
/// to node 0 (its gateway's view of the next cell).
struct World {
    dir: Arc<Directory>,
    secrets: Vec<[u8; 32]>,
    links: Vec<Vec<(u32, u64)>>,
}

fn world() -> World {
    let addr = |cell: u16, tile: u16| HierAddr {
        layer: 0,
        cluster: 0,
        cell,
        tile,
    };
    let addrs = [addr(0, 0), addr(0, 1), addr(0, 2), addr(0, 3), addr(1, 0)];
    let secrets: Vec<[u8; 32]> = (0..addrs.len() as u8).map(|i| [i + 1; 32]).collect();
    let peers = addrs
        .iter()
        .zip(&secrets)
        .enumerate()
        .map(|(i, (a, s))| DirEntry {
            name: format!("n{i}"),
            addr: *a,
            role: Role::Tile,
            key: SigningKey::from_bytes(s).verifying_key(),
            position_au: [1.0, 0.0, 0.0],
        })
        .collect();
    let ms = |m: u64| m * 1_000_000;
    let edges = [(0u32, 1u32), (1, 2), (2, 3), (3, 0), (0, 4)];
    let mut links = vec![Vec::new(); addrs.len()];
    for (a, b) in edges {
        links[a as usize].push((b, ms(2)));
        links[b as usize].push((a, ms(2)));
    }
    for l in &mut links {
        l.sort_unstable();
    }
    World {
        dir: Arc::new(Directory {
            peers,
            ..Default::default()
        }),
        secrets,
        links,
    }
}

impl World {
    fn node(&self, id: u32, seed: u64) -> Node {
        Node::with_directory(
            id,
            seed,
            self.secrets[id as usize],
            &self.links[id as usize],
            self.dir.clone(),
            test_params(),
            Instant::ZERO,
        )
        .expect("consistent test world")
    }

    /// Valid frames node 0's neighbours send it: each neighbour started, then driven
    /// through a few seconds of its own timers, and everything it addressed to node 0 kept.
    fn frames_for_node0(&self) -> Vec<(u32, Vec<u8>)> {
        let mut frames = Vec::new();
        for from in [1u32, 3, 4] {
            let mut n = self.node(from, 7 + u64::from(from));
            let mut out = Outbox::new(1024, 1024);
            n.start(Instant::ZERO, &mut out);
            for _ in 0..200 {
                for t in out.transmits.drain(..) {
                    if t.to == 0 {
                        frames.push((from, t.bytes));
                    }
                }
                out.events.clear();
                let Some(at) = n.poll_timeout() else {
                    break;
                };
                if at.as_nanos() > 5_000_000_000 {
                    break;
                }
                n.handle_timeout(at, &mut out);
            }
        }
        frames
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Deliver captured frame `i` (mod the number captured) as sent.
    Valid(usize),
    /// The same frame with one byte changed.
    Flipped(usize, usize, u8),
    /// The same frame cut short.
    Truncated(usize, usize),
    /// Bytes from a neighbour that are no frame at all.
    Garbage(u32, Vec<u8>),
    /// Advance time and fire every timer now due.
    Advance(u64),
    Put(u8, Vec<u8>, bool),
    Get(u8),
    Send(u32, Vec<u8>),
    Quarantine(u32),
    Unquarantine(u32),
    Byzantine(bool, bool),
    Shutdown,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<usize>().prop_map(Op::Valid),
        3 => (any::<usize>(), any::<usize>(), 1u8..=255).prop_map(|(i, p, x)| Op::Flipped(i, p, x)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, l)| Op::Truncated(i, l)),
        2 => (0u32..6, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(f, b)| Op::Garbage(f, b)),
        6 => (0u64..3_000).prop_map(Op::Advance),
        2 => (0u8..4, proptest::collection::vec(any::<u8>(), 0..64), any::<bool>())
            .prop_map(|(k, v, c)| Op::Put(k, v, c)),
        1 => (0u8..4).prop_map(Op::Get),
        1 => (0u32..6, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(d, b)| Op::Send(d, b)),
        1 => (0u32..6).prop_map(Op::Quarantine),
        1 => (0u32..6).prop_map(Op::Unquarantine),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Op::Byzantine(a, b)),
        1 => Just(Op::Shutdown),
    ]
}

/// What every command's own result must be: a stopped node refuses everything with
/// `Stopped` (and only a stopped node does); commands that cannot fail do not.
fn check_reply(
    c: &Command,
    r: &Result<Reply, CommandError>,
    stopped_before: bool,
) -> Result<(), TestCaseError> {
    if stopped_before {
        prop_assert_eq!(
            r,
            &Err(CommandError::Stopped),
            "a stopped node took {:?}",
            c
        );
        return Ok(());
    }
    prop_assert!(
        r != &Err(CommandError::Stopped),
        "a running node said it was stopped"
    );
    if matches!(
        c,
        Command::Quarantine { .. }
            | Command::Unquarantine { .. }
            | Command::Byzantine(_)
            | Command::Shutdown
    ) {
        prop_assert_eq!(r, &Ok(Reply::Done), "{:?} cannot fail", c);
    }
    Ok(())
}

/// The invariants that hold after every step.
fn check(node: &Node, out: &Outbox, w: &World, stopped_before: bool) -> Result<(), TestCaseError> {
    prop_assert!(
        out.transmits.len() <= CAP_TRANSMITS,
        "outbox over its bound"
    );
    prop_assert!(out.events.len() <= CAP_EVENTS, "event queue over its bound");
    if node.is_stopped() {
        prop_assert_eq!(node.poll_timeout(), None, "a stopped node wants no wake-up");
    }
    prop_assert_eq!(
        node.poll_timeout_order().map(|(at, _)| at),
        node.poll_timeout(),
        "the ordered deadline is the deadline"
    );
    if stopped_before {
        prop_assert!(
            out.transmits.is_empty(),
            "a stopped node sent {:?}",
            out.transmits
        );
    }
    let me = w.dir.peers[0].addr;
    for m in node.membership().members() {
        prop_assert!(m != 0, "a node lists itself as a member");
        let Some(e) = w.dir.peers.get(m as usize) else {
            return Err(TestCaseError::fail(format!(
                "member {m} is not in the directory"
            )));
        };
        prop_assert!(e.addr.same_cell(&me), "member {m} is not of our cell");
    }
    let counts = node.membership().counts();
    prop_assert_eq!(
        counts.iter().sum::<u32>() as usize,
        node.membership().members().count() + 1,
        "counts cover every member once, plus us"
    );
    let neighbours: Vec<u32> = w.links[0].iter().map(|(n, _)| *n).collect();
    for (d, r) in node.routing().table() {
        prop_assert!(
            neighbours.contains(&r.next_hop),
            "route to {d:?} via {} which is no neighbour",
            r.next_hop
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_node_keeps_its_invariants_through_any_sequence_of_inputs(
        ops in proptest::collection::vec(op(), 1..120),
        seed in any::<u64>(),
    ) {
        let w = world();
        let frames = w.frames_for_node0();
        prop_assert!(!frames.is_empty(), "the neighbours sent node 0 nothing to replay");
        let mut node = w.node(0, seed);
        let mut out = Outbox::new(CAP_TRANSMITS, CAP_EVENTS);
        let mut now = Instant::ZERO;
        node.start(now, &mut out);
        let mut request = 0u64;
        for op in ops {
            let stopped = node.is_stopped();
            out.transmits.clear();
            out.events.clear();
            let frame = |i: usize| &frames[i % frames.len()];
            match &op {
                Op::Valid(i) => {
                    let (from, b) = frame(*i);
                    node.handle(now, Input::Datagram { from: *from, bytes: b }, &mut out);
                }
                Op::Flipped(i, p, x) => {
                    let (from, b) = frame(*i);
                    let mut b = b.clone();
                    let p = p % b.len();
                    b[p] ^= x;
                    node.handle(now, Input::Datagram { from: *from, bytes: &b }, &mut out);
                }
                Op::Truncated(i, l) => {
                    let (from, b) = frame(*i);
                    let b = &b[..l % b.len()];
                    node.handle(now, Input::Datagram { from: *from, bytes: b }, &mut out);
                }
                Op::Garbage(from, b) => {
                    node.handle(now, Input::Datagram { from: *from, bytes: b }, &mut out);
                }
                Op::Advance(ms) => {
                    let until = Instant::from_nanos(now.as_nanos() + ms * 1_000_000);
                    // Fire due timers in order, as a driver does (the node's one contract:
                    // ask for the deadline, wake then); a handler may set more.
                    for _ in 0..10_000 {
                        let Some(at) = node.poll_timeout() else {
                            break;
                        };
                        if at > until {
                            break;
                        }
                        now = now.max(at);
                        out.transmits.clear();
                        out.events.clear();
                        let fired = node.handle_timeout(now, &mut out);
                        prop_assert_eq!(fired, Some(at), "the deadline asked for fires at it");
                        check(&node, &out, &w, stopped)?;
                    }
                    now = now.max(until);
                    // A wake-up before the next deadline is a no-op.
                    if let Some(next) = node.poll_timeout() {
                        if next > now {
                            out.transmits.clear();
                            out.events.clear();
                            prop_assert_eq!(node.handle_timeout(now, &mut out), None);
                            prop_assert!(out.transmits.is_empty() && out.events.is_empty(), "an early wake-up did something");
                            prop_assert_eq!(node.poll_timeout(), Some(next), "an early wake-up moved the deadline");
                        }
                    }
                }
                Op::Put(k, v, cell) => {
                    request += 1;
                    let c = Command::Put {
                        request,
                        key: format!("k{k}"),
                        value: v.clone(),
                        durability: if *cell { Durability::Cell } else { Durability::Local },
                    };
                    let r = node.command(now, &c, &mut out);
                    check_reply(&c, &r, stopped)?;
                    if let Ok(Reply::KvWritten { request: got, holders, .. }) = &r {
                        prop_assert_eq!(*got, request, "the answer names its request");
                        prop_assert_eq!(holders.first(), Some(&0), "the writer holds it first");
                    }
                    if let Ok(Reply::Pending { request: got }) = &r {
                        prop_assert!(*cell, "only a cell put waits for acks");
                        prop_assert_eq!(*got, request, "the pending answer names its request");
                    }
                }
                Op::Get(k) => {
                    let c = Command::Get { key: format!("k{k}") };
                    let r = node.command(now, &c, &mut out);
                    check_reply(&c, &r, stopped)?;
                    if let Ok(reply) = &r {
                        let is_value = matches!(reply, Reply::KvValue { key, .. } if *key == format!("k{k}"));
                        prop_assert!(is_value, "a get answers its key's value: {:?}", reply);
                    }
                }
                Op::Send(dst, data) => {
                    let c = Command::Send { dst: *dst, data: data.clone() };
                    let r = node.command(now, &c, &mut out);
                    check_reply(&c, &r, stopped)?;
                    if !stopped {
                        // Refused exactly when there is no such other node (the data is small).
                        let known = *dst != 0 && (*dst as usize) < w.dir.peers.len();
                        prop_assert_eq!(r.is_ok(), known, "send to {}: {:?}", dst, r);
                    }
                }
                Op::Quarantine(n) => {
                    let c = Command::Quarantine { node: *n };
                    let r = node.command(now, &c, &mut out);
                    check_reply(&c, &r, stopped)?;
                }
                Op::Unquarantine(n) => {
                    let c = Command::Unquarantine { node: *n };
                    let r = node.command(now, &c, &mut out);
                    check_reply(&c, &r, stopped)?;
                }
                Op::Byzantine(lie, drop) => {
                    let c = Command::Byzantine(Byzantine { lie_membership: *lie, drop_forwarding: *drop, ..Default::default() });
                    let r = node.command(now, &c, &mut out);
                    check_reply(&c, &r, stopped)?;
                }
                Op::Shutdown => {
                    let r = node.command(now, &Command::Shutdown, &mut out);
                    check_reply(&Command::Shutdown, &r, stopped)?;
                }
            }
            // Shutdown itself says goodbye; after it, nothing more.
            let was_stopped = stopped && !matches!(op, Op::Shutdown);
            check(&node, &out, &w, was_stopped)?;
        }
    }
}

/// The test drives real protocol traffic, not only garbage: replaying the neighbours'
/// frames makes node 0 learn its cell (so the invariants above are checked on a populated
/// membership and routing table, not on empty ones).
#[test]
fn replayed_neighbour_frames_populate_membership_and_routes() {
    let w = world();
    let (node, frames) = taught_node0(&w);
    assert!(
        node.membership().members().count() >= 2,
        "{frames} frames taught node 0 only {:?}",
        node.membership().view()
    );
    assert!(!node.routing().table().is_empty());
}

/// Node 0, started, after its neighbours' frames ([`World::frames_for_node0`]) arrived at
/// 10 ms; and how many frames that was.
fn taught_node0(w: &World) -> (Node, usize) {
    let frames = w.frames_for_node0();
    let mut node = w.node(0, 1);
    let mut out = Outbox::new(CAP_TRANSMITS, CAP_EVENTS);
    node.start(Instant::ZERO, &mut out);
    let now = Instant::from_nanos(Duration::from_millis(10).as_nanos() as u64);
    for (from, b) in &frames {
        out.transmits.clear();
        out.events.clear();
        node.handle(
            now,
            Input::Datagram {
                from: *from,
                bytes: b,
            },
            &mut out,
        );
    }
    (node, frames.len())
}

/// A frame naming node 0 as its source that arrives from a link is not passed on: it is
/// either one of node 0's frames come back round a loop or another's made to look like
/// node 0's (the datagram fuzz target's regression, fuzz/regressions/datagram). The same
/// frame from another source is forwarded, so the refusal is for the source alone.
#[test]
fn a_transit_frame_claiming_our_own_source_is_not_forwarded() {
    use lightcone_core::counters::{Direction, Outcome};
    use lightcone_core::wire::{self, Dest, Header, Payload};
    let w = world();
    let (mut node, _) = taught_node0(&w);
    let mut out = Outbox::new(CAP_TRANSMITS, CAP_EVENTS);
    let now = Instant::from_nanos(Duration::from_millis(10).as_nanos() as u64);
    assert!(node.routing().next_hop(Dest::Node(4)).is_some());
    let frame = |src: u32| {
        let h = Header {
            kind: 10,
            ttl: 8,
            src,
            dst: Dest::Node(4),
            seq: 1,
            hlc: 1,
            src_epoch: 1,
            dst_epoch: 0,
        };
        let key = SigningKey::from_bytes(&w.secrets[src as usize]);
        wire::encode_with(&h, &Payload::Data(vec![7; 16]), &key, Auth::TestDigest)
    };
    let fwd = |n: &Node, o: Outcome| n.counters().get(Direction::Fwd, o);
    for (src, forwarded) in [(2u32, true), (0, false)] {
        out.transmits.clear();
        let (ok, looped) = (fwd(&node, Outcome::Ok), fwd(&node, Outcome::Loop));
        let bytes = frame(src);
        node.handle(
            now,
            Input::Datagram {
                from: 1,
                bytes: &bytes,
            },
            &mut out,
        );
        let sent = out
            .transmits
            .iter()
            .any(|t| t.to == 4 && t.bytes[8..] == bytes[8..]);
        assert_eq!(sent, forwarded, "source {src}");
        assert_eq!(
            fwd(&node, Outcome::Ok) - ok,
            u64::from(forwarded),
            "source {src}"
        );
        assert_eq!(
            fwd(&node, Outcome::Loop) - looped,
            u64::from(!forwarded),
            "source {src}"
        );
    }
}

/// The `steal_key` test fault: a key that is not the named node's, the node's own key or
/// an unknown node is refused and changes nothing; the owner's key makes the node send,
/// at its watch ticks, data frames that carry the owner's name and verify under the owner's
/// key, to each other member of the owner's cell; made honest again, it stops.
#[test]
fn a_stolen_key_signs_frames_as_its_owner_until_the_node_is_honest_again() {
    use lightcone_core::counters::{Direction, Outcome};
    use lightcone_core::wire::{self, Dest};
    let w = world();
    let (mut node, _) = taught_node0(&w);
    let mut out = Outbox::new(1024, 1024);
    let key = |i: usize| Box::new(SigningKey::from_bytes(&w.secrets[i]));
    let at = |ms: u64| Instant::from_nanos(Duration::from_millis(ms).as_nanos() as u64);
    for (cmd, want) in [
        (
            Command::StealKey {
                node: 2,
                key: key(3),
            },
            CommandError::NotTheKey(2),
        ),
        (
            Command::StealKey {
                node: 0,
                key: key(0),
            },
            CommandError::OwnKey,
        ),
        (
            Command::StealKey {
                node: 9,
                key: key(2),
            },
            CommandError::NoSuchNode(9),
        ),
    ] {
        assert_eq!(node.command(at(20), &cmd, &mut out), Err(want));
    }
    assert!(
        node.snapshot().byzantine.is_empty(),
        "a refused steal changes nothing"
    );
    // Forged frames from node 0 as seen on its links over `ms` of timers.
    let run = |node: &mut Node, out: &mut Outbox, until: u64| {
        let mut frames = Vec::new();
        while let Some(t) = node.poll_timeout().filter(|t| *t <= at(until)) {
            out.transmits.clear();
            node.handle_timeout(t, out);
            for tx in &out.transmits {
                let f = wire::parse(&tx.bytes).expect("a frame");
                if f.header.src == 2 {
                    f.verify_with(&w.dir.peers[2].key, Auth::TestDigest)
                        .expect("signed with node 2's key");
                    frames.push(f.header.dst);
                }
            }
            out.events.clear();
        }
        frames
    };
    assert!(
        run(&mut node, &mut out, 3_000).is_empty(),
        "honest: nothing forged"
    );
    node.command(
        at(3_000),
        &Command::StealKey {
            node: 2,
            key: key(2),
        },
        &mut out,
    )
    .expect("node 2's own key is taken");
    assert_eq!(node.snapshot().byzantine, vec!["steal_key"]);
    let forged = run(&mut node, &mut out, 6_000);
    assert!(forged.len() >= 2, "{forged:?}");
    // Node 2's cell is 0..=3: the thief (0) and the owner (2) are left out.
    assert!(
        forged
            .iter()
            .all(|d| matches!(d, Dest::Node(1) | Dest::Node(3))),
        "{forged:?}"
    );
    assert_eq!(
        node.counters().get(Direction::Tx, Outcome::Forged),
        forged.len() as u64
    );
    node.command(
        at(6_000),
        &Command::Byzantine(Byzantine::default()),
        &mut out,
    )
    .unwrap();
    assert!(
        run(&mut node, &mut out, 9_000).is_empty(),
        "honest again: nothing forged"
    );
}

/// Issue 18's attestation: approvals are checked before anything changes — none without
/// the authorities' key, a forged one, or an entry of another kind — and a node given
/// valid ones shows that it requires attestation.
#[test]
fn attestation_is_required_only_with_approvals_the_authorities_signed() {
    use lightcone_core::trust::log::{Entry, EntryKind};
    use lightcone_core::trust::threshold::{self, BuildApproval, ThresholdError};
    use rand::SeedableRng;
    let w = world();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let (shares, group) = threshold::dkg(&[10, 11, 12], 2, &mut rng).unwrap();
    let signers: Vec<&threshold::Share> = shares.values().take(2).collect();
    let a = BuildApproval {
        sha256: [7; 32],
        release: 0,
    };
    let good = a.entry(&threshold::sign(&group, &signers, &a.message(), &mut rng).unwrap());
    let mut n = w.node(0, 1);
    // No authorities' key yet: nothing to check approvals with.
    assert_eq!(
        n.require_attestation(std::slice::from_ref(&good)),
        Err(ThresholdError::BadSignature)
    );
    n.set_trust(group.key);
    let mut forged = good.clone();
    forged.body[0] ^= 1;
    assert_eq!(
        n.require_attestation(&[good.clone(), forged]),
        Err(ThresholdError::BadSignature)
    );
    let other = Entry {
        kind: EntryKind::UpdateApproval,
        ..good.clone()
    };
    assert_eq!(
        n.require_attestation(&[other]),
        Err(ThresholdError::WrongKind)
    );
    assert!(!n.attestation().required, "a refused call changed nothing");
    n.require_attestation(&[good]).unwrap();
    let v = n.attestation();
    assert!(v.required && v.build.is_none() && v.admitted.is_empty());
}
