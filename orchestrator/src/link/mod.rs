//! Links: engines behind one type ([`engine::LinkEngine`]: netem in the kernel, wire in user
//! space, or unshaped veth pairs) carrying one model ([`lightcone_link::model::LinkModel`],
//! shaped by [`lightcone_link::shaper::Shaper`] in the wire engine and the simulator alike),
//! and what they measure in one vocabulary ([`stats`]). See DESIGN.md, "Links".
pub mod engine;
pub mod metrics;
pub mod netem;
pub mod probe;
pub mod stats;
pub mod wire;
