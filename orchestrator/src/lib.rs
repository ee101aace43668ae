//! lightcone orchestrator library: topology → plan → apply → supervise.
pub mod agents;
pub mod apply;
pub mod dashboard;
pub mod doctor;
pub mod experiment;
pub mod fault;
pub mod http;
pub mod kernel;
pub mod keys;
pub mod link;
pub mod parse;
pub mod plan;
pub mod progress;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod topology;
