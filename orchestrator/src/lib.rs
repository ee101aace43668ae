//! lightcone orchestrator library: topology → plan → apply → supervise.
pub mod kernel;
pub mod link;
pub mod plan;
pub mod topology;
