//! Causal state for a system with no global "now": the DCOS baseline is causal
//! consistency, and this module is everything the node agent needs for it, as a sans-IO,
//! deterministic sub-library (time is a parameter, no I/O, no OS randomness, ordered
//! collections, every buffer bounded).
//!
//! | module | what | algorithm |
//! |---|---|---|
//! | [`hlc`] | timestamps that respect causality and stay near physical time, with a drift bound | Hybrid Logical Clocks, Kulkarni et al., OPODIS 2014 |
//! | [`dvv`] | version vectors, dot contexts, the multi-value register | Dotted Version Vectors, Preguiça et al. 2010/2012; causal CRDTs, Almeida, Shoker, Baquero, JPDC 2018 |
//! | [`store`] | the cell's replicated key-value store: deltas, digests, anti-entropy, summaries | delta-state CRDTs, Almeida et al. 2018 |
//! | [`delivery`] | causal broadcast delivery buffer | Birman, Schiper, Stephenson, TOCS 1991 |
//! | [`objects`] | content-addressed immutable objects | SHA-256 (FIPS 180-4) |
//! | [`checker`] | finds causal anomalies in recorded histories | causal memory, Ahamad et al. 1995; session guarantees, Terry et al. 1994; bad patterns, Bouajjani et al. POPL 2017 |
//!
//! ## How the node wires it
//!
//! One [`HlcClock`], one [`Store`], one [`CausalDelivery<Delta>`](CausalDelivery) and one
//! [`ObjectStore`] per node:
//! - client put: `hlc.now(now)` → `store.local_put(key, value, ts, &ctx)` →
//!   `delivery.send(delta)` → send the [`CausalMessage`] to every cell peer.
//! - datagram with a [`CausalMessage<Delta>`](CausalMessage): `hlc.update(now, max_hlc)`
//!   (drop and count on [`HlcError`]), then `delivery.receive(msg)`, then `store.apply` each
//!   delivered delta in order (a delta refused for limits is lost to this replica until
//!   slow anti-entropy: count it). Applying in causal order is what makes reads causally
//!   consistent across keys; the CRDT alone only guarantees convergence.
//! - repair timer: exchange `delivery.delivered()` vectors with a peer and send it
//!   [`CausalDelivery::missing_from`] (or answer [`CausalDelivery::blocked_on`] requests with
//!   [`CausalDelivery::retransmit`]): lost broadcasts are repaired *in causal order*.
//! - slow anti-entropy timer, for what has left every retransmission log (long partitions,
//!   a rejoining node): exchange [`Summary`] hashes, then [`BucketHashes`], then
//!   [`Digest`]s, answer with [`Store::missing_since`]. This repairs the data but bypasses
//!   the delivery buffer, so until it completes that replica may serve values out of causal
//!   order; do not serve session-token reads from it meanwhile.
//! - client get: serve it only if `delivery.has_delivered(&client_token)`; reply with the
//!   siblings, the context, and `delivery.delivered()` to merge into the client's token.
//!
//! `node-agent/tests/causal_checker.rs` runs the put / receive / get part of this recipe
//! with sticky and roaming clients and checks the histories with [`check`];
//! `causal_delivery.rs` runs the repair part under loss.
//!
//! Every message type ([`CausalMessage<Delta>`](CausalMessage), [`Delta`], [`Digest`],
//! [`BucketHashes`], [`Summary`], [`VersionVector`], [`Dot`], [`Object`], [`Hlc`]) derives `serde::{Serialize, Deserialize}`; the wire format is the caller's.
//! Values from the network are re-validated on the way in (contexts normalised on
//! deserialisation, registers checked on [`Store::apply`], objects re-hashed on
//! [`ObjectStore::insert`]).

pub mod checker;
pub mod delivery;
pub mod dvv;
pub mod hlc;
pub mod objects;
pub mod store;

pub use checker::{check, Anomaly, AnomalyKind, HistoryError, HistoryOp, OpKind, OpStatus, Report};
pub use delivery::{CausalDelivery, CausalMessage, DeliveryError, Receipt};
pub use dvv::{Dot, DotContext, MvRegister, NodeId, VersionVector};
pub use hlc::{Hlc, HlcClock, HlcError};
pub use objects::{Object, ObjectError, ObjectId, ObjectLimits, ObjectStore};
pub use store::{
    ApplyOutcome, BucketHashes, Delta, Digest, Read, Register, StateHash, Store, StoreError,
    StoreLimits, Summary, Versioned,
};
