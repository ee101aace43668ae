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
//! Every message type ([`Delta`], [`Digest`], [`Summary`], [`CausalMessage`], [`Object`],
//! [`Hlc`]) derives `serde::{Serialize, Deserialize}`; the wire format is the caller's.
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
