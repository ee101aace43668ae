//! The transparency-log target ([`lightcone_core::trust::log`]). An input is a list of
//! chunks ([`crate::input::Chunks`]): flags, an entry, a tree head, a proof, an index, then
//! up to [`MAX_EXTRA`] more entries. Flag [`RESIGN_HEAD`] signs the head with the log's
//! real key first (so the fuzzer reaches the witness's size and proof checks); flag
//! [`WITH_PROOF`] hands the proof to the witness.
//!
//! Invariants:
//! - entries and heads that decode encode back to the same bytes (both formats are strict);
//! - an inclusion proof (any bytes) verifies an entry against the real log's head only if
//!   the entry is that log's entry at that index;
//! - no proof (any bytes) shows a forked log's head consistent with the real one;
//! - the witness: a head whose signature fails changes nothing; a split view it reports
//!   can be checked again by anyone with the signer's key;
//! - entries that decode, appended to the real log, have inclusion proofs that verify, the
//!   grown log is consistent with the old head, merging two logs gives one entry set, and
//!   the log's own proofs of other entries never verify an entry it does not hold.

use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey};
use lightcone_core::trust::log::{
    verify_consistency, verify_inclusion, Entry, EntryKind, Log, Observation, TreeHead, Witness,
};

use crate::input::{put, put_u64, Chunks};

/// Flag: sign the input's head with the log's key.
pub const RESIGN_HEAD: u8 = 1;
/// Flag: give the witness the input's proof.
pub const WITH_PROOF: u8 = 2;
/// Extra entries appended per input, at most.
pub const MAX_EXTRA: usize = 8;
/// Entries of the real log.
pub const REAL_SIZE: u64 = 13;
/// The real log's id and epoch.
pub const LOG_ID: u32 = 1;
pub const EPOCH: u32 = 1;

/// The log's signing key.
pub fn log_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// Entry `i` of the real log (kinds in turn, bodies of growing length).
pub fn entry(i: u32) -> Entry {
    let kind = match i % 4 {
        0 => EntryKind::Certificate,
        1 => EntryKind::Revocation,
        2 => EntryKind::UpdateApproval,
        _ => EntryKind::QuarantineVerdict,
    };
    Entry {
        kind,
        subject: i,
        body: (0..(i * 7) as u8).collect(),
    }
}

/// The real log, a fork of its first 6 entries (entry 2 differs), their heads and a
/// witness that holds the real head.
pub struct Fixture {
    pub log: Log,
    pub head: TreeHead,
    pub fork_head: TreeHead,
    pub witness: Witness,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = log_key();
        let mut log = Log::new();
        for i in 0..REAL_SIZE as u32 {
            log.append(&entry(i)).expect("append");
        }
        let head = log.head_at(LOG_ID, EPOCH, 5, &key);
        let mut fork = Log::new();
        for i in 0..6 {
            let mut e = entry(i);
            if i == 2 {
                e.subject = 99;
            }
            fork.append(&e).expect("append");
        }
        let fork_head = fork.head_at(LOG_ID, EPOCH, 4, &key);
        let mut witness = Witness::default();
        let o = witness.observe(&head, &key.verifying_key(), None);
        assert_eq!(o, Observation::Accepted);
        Fixture {
            log,
            head,
            fork_head,
            witness,
        }
    })
}

/// Signs `h` (its fields as they are) with the log's key.
pub fn sign_head(h: &mut TreeHead) {
    let m = TreeHead::message(h.log_id, h.epoch, h.size, &h.root, h.timestamp_ns);
    h.sig = log_key().sign(&m).to_bytes();
}

/// Runs one input (see the module doc); panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let fx = fixture();
    let key = log_key();
    let vk = key.verifying_key();
    let mut c = Chunks(data);
    let flags = c.u8();
    let entry_bytes = c.bytes();
    let head_bytes = c.bytes();
    let proof = c.bytes();
    let idx = c.u64();

    let entry = Entry::decode(entry_bytes).ok();
    if let Some(e) = &entry {
        assert_eq!(e.encode(), entry_bytes, "entry: encode(decode(b)) != b");
        assert_eq!(Entry::decode(&e.encode()).as_ref(), Ok(e));
    }
    let mut head = TreeHead::decode(head_bytes).ok();
    if let Some(h) = &mut head {
        assert_eq!(&h.encode()[..], head_bytes, "head: encode(decode(b)) != b");
        if flags & RESIGN_HEAD != 0 {
            sign_head(h);
        }
    }

    if let Some(e) = &entry {
        if verify_inclusion(&fx.head, e, idx, proof).is_ok() {
            assert_eq!(
                fx.log.get(idx).as_ref(),
                Some(e),
                "an inclusion proof verified an entry the log does not hold at {idx}"
            );
        }
        if let Some(h) = &head {
            let _ = verify_inclusion(h, e, idx, proof);
        }
    }
    assert!(
        verify_consistency(&fx.fork_head, &fx.head, proof).is_err(),
        "a proof showed a forked head consistent with the real log"
    );
    if let Some(h) = &head {
        let _ = verify_consistency(h, &fx.head, proof);
        let _ = verify_consistency(&fx.head, h, proof);
        let mut w = fx.witness.clone();
        let given = (flags & WITH_PROOF != 0).then_some(proof);
        match w.observe(h, &vk, given) {
            Observation::BadSignature => assert_eq!(
                format!("{w:?}"),
                format!("{:?}", fx.witness),
                "a badly signed head changed the witness"
            ),
            Observation::Split(s) => {
                assert!(s.check(&vk), "split-view evidence that does not check")
            }
            _ => {}
        }
    }

    // Entries that decode, appended to the real log.
    let mut grown = fx.log.clone();
    let mut added = Vec::new();
    while !c.is_empty() && added.len() < MAX_EXTRA {
        if let Ok(e) = Entry::decode(c.bytes()) {
            let before = grown.len();
            let at = grown.append(&e).expect("a small log has room");
            assert!(grown.contains(&e));
            if grown.len() > before {
                added.push((at, e));
            } else {
                assert_eq!(grown.get(at).as_ref(), Some(&e), "a duplicate's index");
            }
        }
    }
    if !added.is_empty() {
        let h2 = grown.head_at(LOG_ID, EPOCH, 6, &key);
        for (at, e) in &added {
            let p = grown.prove_inclusion(*at).expect("in range");
            assert_eq!(verify_inclusion(&h2, e, *at, &p), Ok(()), "entry {at}");
        }
        let p = grown.prove_consistency(REAL_SIZE).expect("grown");
        assert_eq!(
            verify_consistency(&fx.head, &h2, &p),
            Ok(()),
            "an appended log is not consistent with its old head"
        );
        // The set union is the same whichever way it is taken.
        let mut other = Log::new();
        for (_, e) in &added {
            other.append(e).expect("room");
        }
        let ge: Vec<Entry> = grown.entries().collect();
        other.merge(&ge).expect("room");
        let mut a: Vec<Entry> = other.entries().collect();
        let mut b = ge;
        a.sort();
        b.sort();
        assert_eq!(a, b, "merging gave another entry set");
        if let Some(e) = &entry {
            if !grown.contains(e) {
                for i in 0..grown.len().min(4) {
                    let p = grown.prove_inclusion(i).expect("in range");
                    assert!(
                        verify_inclusion(&h2, e, i, &p).is_err(),
                        "entry {i}'s proof verified an entry the log does not hold"
                    );
                }
            }
        }
    }
}

/// Seed inputs from real entries, heads and proofs (name, bytes).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let fx = fixture();
    let key = log_key();
    let mut v = Vec::new();
    for i in 0..REAL_SIZE {
        let e = fx.log.get(i).expect("in range");
        let mut w = Vec::new();
        put(&mut w, &[0]);
        put(&mut w, &e.encode());
        put(&mut w, &fx.head.encode());
        put(&mut w, &fx.log.prove_inclusion(i).expect("in range"));
        put_u64(&mut w, i);
        v.push((format!("inclusion-{i}"), w));
    }
    // A grown log: its head with the consistency proof from the real head, and entries.
    let mut grown = fx.log.clone();
    for i in 20..24 {
        grown.append(&entry(i)).expect("room");
    }
    let h2 = grown.head_at(LOG_ID, EPOCH, 7, &key);
    let mut w = Vec::new();
    put(&mut w, &[WITH_PROOF]);
    put(&mut w, &entry(21).encode());
    put(&mut w, &h2.encode());
    put(&mut w, &grown.prove_consistency(REAL_SIZE).expect("grown"));
    put_u64(&mut w, 14);
    for i in 30..34 {
        put(&mut w, &entry(i).encode());
    }
    v.push(("consistency-grown".into(), w));
    // A split view: a head of the real log's size with another root.
    let mut split = fx.head;
    split.root[0] ^= 1;
    sign_head(&mut split);
    let mut w = Vec::new();
    put(&mut w, &[RESIGN_HEAD]);
    put(&mut w, &entry(1).encode());
    put(&mut w, &split.encode());
    put(&mut w, &[]);
    put_u64(&mut w, 1);
    v.push(("split-view".into(), w));
    // The fork's head with the real log's consistency proof from its size.
    let mut w = Vec::new();
    put(&mut w, &[WITH_PROOF]);
    put(&mut w, &entry(2).encode());
    put(&mut w, &fx.fork_head.encode());
    put(&mut w, &fx.log.prove_consistency(6).expect("in range"));
    put_u64(&mut w, 2);
    v.push(("fork".into(), w));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_run_clean() {
        for (name, s) in seeds() {
            eprintln!("{name}");
            run(&s);
        }
        run(&[]);
    }
}
