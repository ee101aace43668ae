//! lightcone orchestrator library: topology → plan → apply → supervise.
pub mod link;
