//! lightcone orchestrator library: topology → plan → apply → supervise.
pub mod agents;
pub mod api;
pub mod apply;
pub mod dashboard;
pub mod doctor;
pub mod experiment;
pub mod http;
pub mod kernel;
pub mod keys;
pub mod lab;
pub mod link;
pub mod plan;
pub mod progress;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod topology;
