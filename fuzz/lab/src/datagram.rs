//! The datagram target: an input is up to [`MAX_RECORDS`](crate::input::MAX_RECORDS)
//! datagrams ([`crate::input::records`]) delivered in order to a clone of the lab's node
//! under test ([`crate::lab::node_under_test`]) through [`Node::handle`], each from one of
//! its neighbours, optionally after advancing time and firing every due timer. A record
//! flagged [`RESIGN`] is first made authentic: its length field is set to its size and it
//! is signed with the real Ed25519 key of the source its header names (when that is a lab
//! node), so mutations of real frames get past authentication and into every kind's body
//! decoding (membership, routing, summaries, kv, time, data, watch, signed claims, tree
//! heads, heat, BFT, version hellos, dark orders, the object store).
//!
//! Invariants checked on every datagram:
//! - **garbage changes nothing**: a datagram that does not parse as a frame leaves the node
//!   exactly as an empty datagram would (its whole state, by its `Debug` form, counters
//!   aside), produces no datagram and no event, and is counted as rejected;
//! - **the unauthenticated change nothing visible**: a frame for this node whose signature
//!   does not verify under its source's key (or whose source is unknown) produces no
//!   datagram and no event and is not counted `ok`;
//! - **decode(encode(x)) = x** for every payload that decodes, and for the store, heat,
//!   BFT, order and time messages inside it;
//! - **what the node sends is well formed**: every datagram in the outbox parses (and
//!   decodes, unless it is a transit frame passed on as it came), fits [`wire::MAX_DATAGRAM`], and the outbox holds no more than its bounds;
//! - **time is bounded**: firing due timers settles within a bounded number of calls.

use std::time::Duration;

use ed25519_dalek::Signer;
use lightcone_core::counters::{Direction, Outcome};
use lightcone_core::io::{Input, Outbox};
use lightcone_core::time::Instant;
use lightcone_core::update::dark::Order;
use lightcone_core::wire::{self, Auth, Dest, Header, Payload, WireError};
use lightcone_core::Node;

use crate::input::{records, RESIGN, TICK};
use crate::lab::{self, CAP_EVENTS, CAP_TRANSMITS, T0, UNDER_TEST};

/// Timer firings one tick may take before it counts as a hang.
pub const MAX_TIMER_CALLS: usize = 100_000;

/// Runs one input (see the module doc); panics when an invariant breaks.
pub fn run(data: &[u8]) {
    run_node(data);
}

/// [`run`], returning the node as the input left it.
pub fn run_node(data: &[u8]) -> Node {
    let lab = lab::lab();
    let neighbours: Vec<u32> = lab.links[UNDER_TEST as usize].iter().map(|l| l.0).collect();
    let mut node = lab::node_under_test().clone();
    let mut now = T0;
    let mut out = Outbox::new(CAP_TRANSMITS, CAP_EVENTS);
    for rec in records(data) {
        if rec.flags & TICK != 0 {
            now = now + Duration::from_millis(10 * u64::from(rec.step_10ms));
            tick(&mut node, now, &mut out);
            check_outputs(&mut out);
        }
        let from = neighbours[usize::from(rec.from_ix) % neighbours.len()];
        let mut bytes = rec.bytes.to_vec();
        let signed = rec.flags & RESIGN != 0 && resign(&mut bytes);
        deliver(&mut node, now, from, &bytes, signed, &mut out);
        check_outputs(&mut out);
    }
    node
}

/// Fires every due timer at `now` (bounded: a timer storm is a hang).
pub fn tick(node: &mut Node, now: Instant, out: &mut Outbox) {
    let mut calls = 0;
    while node.poll_timeout().is_some_and(|t| t <= now) {
        node.handle_timeout(now, out);
        calls += 1;
        assert!(
            calls < MAX_TIMER_CALLS,
            "timers still due after {MAX_TIMER_CALLS} firings at {now:?}"
        );
    }
}

/// Sets the length field of a frame-sized datagram to its size and signs it as the source
/// its header names (a lab node), TTL zeroed as the wire format signs. Anything else is
/// left as it is. True when it signed.
pub fn resign(b: &mut [u8]) -> bool {
    if b.len() < wire::HEADER_LEN + wire::SIG_LEN || b.len() > wire::MAX_DATAGRAM {
        return false;
    }
    let len = b.len() - wire::HEADER_LEN - wire::SIG_LEN;
    b[6..8].copy_from_slice(&(len as u16).to_be_bytes());
    let src = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let Some(key) = lab::key_of(src) else {
        return false;
    };
    let body = b.len() - wire::SIG_LEN;
    let ttl = b[4];
    b[4] = 0;
    let sig = key.sign(&b[..body]).to_bytes();
    b[body..].copy_from_slice(&sig);
    b[4] = ttl;
    true
}

/// What the node should do with a datagram, judged apart from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not a frame.
    Unparsed(WireError),
    /// A frame for another node (forwarded after structural checks only).
    Transit,
    /// A frame for this node that its named source did not sign.
    Unauthentic,
    /// A frame for this node, signed by its source.
    Authentic,
}

/// `signed`: [`resign`] signed it (so it is authentic if it parses; one verification
/// fewer per datagram).
fn classify(node: &Node, b: &[u8], signed: bool) -> Kind {
    let f = match wire::parse(b) {
        Ok(f) => f,
        Err(e) => return Kind::Unparsed(e),
    };
    if !node.routing().is_local(f.header.dst) {
        return Kind::Transit;
    }
    let src = f.header.src;
    match lab::lab().dir.get(src) {
        Some(e) if src != node.id() && (signed || f.verify(&e.key).is_ok()) => Kind::Authentic,
        _ => Kind::Unauthentic,
    }
}

/// The node's `Debug` form with its counters written as `counters` says: what "nothing
/// changed but a counter" compares.
fn state_with_counters(node: &Node, counters: &str) -> String {
    let s = format!("{node:?}");
    let own = format!("{:?}", node.counters());
    assert!(
        s.contains(&own),
        "a node's Debug form holds its counters' (the comparison relies on it)"
    );
    s.replacen(&own, counters, 1)
}

fn deliver(node: &mut Node, now: Instant, from: u32, bytes: &[u8], signed: bool, out: &mut Outbox) {
    let kind = classify(node, bytes, signed);
    let ok_before = node.counters().get(Direction::Rx, Outcome::Ok);
    let received_before = node.counters().get(Direction::Rx, Outcome::Received);
    let reference = match kind {
        Kind::Unparsed(_) => {
            let mut r = node.clone();
            let mut o = Outbox::new(CAP_TRANSMITS, CAP_EVENTS);
            r.handle(now, Input::Datagram { from, bytes: &[] }, &mut o);
            assert!(o.transmits.is_empty() && o.events.is_empty());
            Some(r)
        }
        _ => None,
    };
    let (t0, e0) = (out.transmits.len(), out.events.len());
    node.handle(now, Input::Datagram { from, bytes }, out);
    let c = node.counters();
    assert_eq!(
        c.get(Direction::Rx, Outcome::Received),
        received_before + 1,
        "every datagram is counted received"
    );
    let ok = c.get(Direction::Rx, Outcome::Ok) > ok_before;
    match kind {
        Kind::Unparsed(e) => {
            assert!(!ok, "unparseable datagram ({e}) counted ok");
            assert_eq!(
                (out.transmits.len(), out.events.len()),
                (t0, e0),
                "an unparseable datagram ({e}) produced output"
            );
            let r = reference.expect("a reference for unparsed datagrams");
            let rc = format!("{:?}", r.counters());
            assert!(
                state_with_counters(node, &rc) == format!("{r:?}"),
                "an unparseable datagram ({e}) changed the node beyond its counters"
            );
        }
        Kind::Unauthentic => {
            assert!(!ok, "an unauthenticated frame was counted ok");
            assert_eq!(
                (out.transmits.len(), out.events.len()),
                (t0, e0),
                "an unauthenticated frame produced output"
            );
        }
        Kind::Transit => {}
        Kind::Authentic => {
            if ok {
                let f = wire::parse(bytes).expect("it parsed when classified");
                roundtrip_payload(f.header.kind, f.payload);
            }
        }
    }
}

/// decode(encode(x)) = x for a payload and the messages inside it.
pub fn roundtrip_payload(kind: u8, body: &[u8]) {
    let Ok(p) = Payload::decode(kind, body) else {
        return;
    };
    let h = Header {
        kind,
        ttl: 1,
        src: 1,
        dst: Dest::Node(0),
        seq: 1,
        hlc: 0,
        src_epoch: 1,
        dst_epoch: 1,
    };
    let key = lab::key_of(1).expect("node 1");
    let b = wire::encode_versioned(&h, &p, &key, Auth::TestDigest, wire::VERSION_MAX);
    let again = wire::parse(&b)
        .expect("an encoded frame parses")
        .decode_payload()
        .expect("an encoded payload decodes");
    assert_eq!(again, p, "decode(encode(payload)) differs");
    match &p {
        Payload::Store(b) => {
            use lightcone_core::store::msg::Msg;
            if let Ok(m) = Msg::decode(b) {
                assert_eq!(Msg::decode(&m.encode()).as_ref(), Ok(&m), "store message");
            }
        }
        Payload::Heat(b) => {
            use lightcone_core::heat::msg::HeatMsg;
            if let Ok(m) = HeatMsg::decode(b) {
                assert_eq!(HeatMsg::decode(&m.encode()), Ok(m), "heat message");
            }
        }
        Payload::Bft(b) => {
            use lightcone_core::trust::bft::Msg;
            if let Ok(m) = Msg::decode(b) {
                assert_eq!(Msg::decode(&m.encode()).as_ref(), Ok(&m), "BFT message");
            }
        }
        Payload::Order(b) => {
            if let Ok(o) = Order::decode(b) {
                assert_eq!(Order::decode(&o.encode()), Ok(o), "dark order");
            }
        }
        Payload::Time(b) => {
            use lightcone_timing::sync::TimeMessage;
            // Bytes, not values: a time message may carry a NaN, which equals nothing.
            if let Ok(m) = TimeMessage::decode(b) {
                let e = m.encode();
                let m2 = TimeMessage::decode(&e).expect("an encoded time message decodes");
                assert_eq!(m2.encode(), e, "time message");
            }
        }
        _ => {}
    }
}

/// What the node put in the outbox is well formed and within bounds; drains it.
fn check_outputs(out: &mut Outbox) {
    assert!(out.transmits.len() <= CAP_TRANSMITS && out.events.len() <= CAP_EVENTS);
    for t in out.transmits.drain(..) {
        assert!(
            t.bytes.len() <= wire::MAX_DATAGRAM,
            "oversize datagram sent"
        );
        let f = wire::parse(&t.bytes)
            .unwrap_or_else(|e| panic!("the node sent a datagram that does not parse: {e}"));
        // Transit frames are passed on as they came (checked for structure only).
        if f.header.src != UNDER_TEST {
            continue;
        }
        if let Err(e) = f.decode_payload() {
            panic!(
                "the node sent a {} payload that does not decode: {e}; payload {:02x?}",
                f.header.kind, f.payload
            );
        }
    }
    out.events.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::put_record;

    /// The first frame of each kind in the seeds, as the run captured it.
    fn kind_seeds() -> Vec<(String, Vec<u8>)> {
        crate::seeds::datagram_seeds()
            .into_iter()
            .filter(|(n, _)| n.starts_with("kind") || n.starts_with("crafted"))
            .collect()
    }

    #[test]
    fn resigned_seed_frames_are_accepted_or_taken_for_forwarding() {
        let mut refused = Vec::new();
        for (name, s) in kind_seeds() {
            let n = run_node(&s);
            // Accepted here, or taken for forwarding: a transit frame is checked for
            // structure only (a fresh node has no route yet: counted fwd no_route).
            let c = n.counters();
            let fwd: u64 = c.labelled().filter(|l| l.0 == "fwd").map(|l| l.2).sum();
            if c.get(Direction::Rx, Outcome::Ok) + fwd != 1 {
                let why: Vec<_> = c.labelled().filter(|l| l.2 > 0).collect();
                refused.push(format!("{name}: {why:?}"));
            }
        }
        assert!(refused.is_empty(), "seeds not accepted: {refused:?}");
    }

    #[test]
    fn the_nothing_changed_check_sees_a_change() {
        // A real frame changes the node beyond its counters: the comparison the garbage
        // invariant uses must say so, or it could not fail.
        let (_, s) = kind_seeds().into_iter().next().expect("a seed");
        let before = node_under_test_debug();
        let n = run_node(&s);
        let base = lab::node_under_test();
        assert_ne!(
            state_with_counters(&n, &format!("{:?}", base.counters())),
            before
        );
    }

    fn node_under_test_debug() -> String {
        format!("{:?}", lab::node_under_test())
    }

    #[test]
    fn a_forged_frame_is_judged_unauthentic_and_changes_nothing_visible() {
        let (_, s) = kind_seeds().into_iter().next().expect("a seed");
        let rec = crate::input::records(&s)[0];
        let mut b = rec.bytes.to_vec();
        assert!(resign(&mut b));
        let node = lab::node_under_test();
        assert_eq!(classify(node, &b, false), Kind::Authentic);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(classify(node, &b, false), Kind::Unauthentic);
        let mut w = Vec::new();
        put_record(&mut w, 0, rec.from_ix, 0, &b);
        let n = run_node(&w);
        assert_eq!(n.counters().get(Direction::Rx, Outcome::BadSignature), 1);
        assert_eq!(n.counters().get(Direction::Rx, Outcome::Ok), 0);
    }
}
