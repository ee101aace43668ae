//! Links: one model ([`model::LinkModel`]), two engines (netem in the kernel, wire in user
//! space). See DESIGN.md, "Links".
pub mod model;
pub mod shaper;
pub use model::LinkModel;
