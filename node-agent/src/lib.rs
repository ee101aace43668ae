//! The lightcone node agent.
pub mod config;
