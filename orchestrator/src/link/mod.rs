//! Links: one model ([`model::LinkModel`]), engines behind one type ([`engine::LinkEngine`]:
//! netem in the kernel, wire in user space, or unshaped veth pairs), and what they measure
//! in one vocabulary ([`stats`]). See DESIGN.md, "Links".
pub mod engine;
pub mod metrics;
pub mod model;
pub mod netem;
pub mod probe;
pub mod shaper;
pub mod stats;
pub mod wire;
pub use model::LinkModel;
