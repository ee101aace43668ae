//! The bodies of lightcone's fuzz targets (issue 17: "a fuzz target on frame and log-entry
//! decoding runs in CI for a bounded time without a crash"), apart from libFuzzer so the
//! seed generator (`src/bin/seeds.rs`) and plain tests build them too.
//!
//! - [`datagram`]: byte strings into a real [`Node`] of a small lab (all sub-machines on),
//!   through [`Node::handle`]: frame parsing, authentication, the replay window and every
//!   wire kind's body decoding down to the store, heat, BFT, order and log messages.
//! - [`log`]: transparency-log entries, tree heads and their inclusion and consistency
//!   proofs ([`lightcone_core::trust::log`]).
//! - [`update`]: release manifests, the TUF bundle check and dark orders
//!   ([`lightcone_core::update`]).
//!
//! Every target asserts invariants besides "no panic" (each module says which).

pub mod datagram;
pub mod input;
pub mod lab;
pub mod log;
pub mod seeds;
pub mod update;

pub use lightcone_core::Node;
