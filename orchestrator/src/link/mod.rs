//! Links: one model ([`model::LinkModel`]), two engines (netem in the kernel, wire in user
//! space). See DESIGN.md, "Links".
pub mod metrics;
pub mod model;
pub mod netem;
pub mod probe;
pub mod shaper;
pub mod wire;
pub use model::LinkModel;
