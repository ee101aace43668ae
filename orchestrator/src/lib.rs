//! lightcone orchestrator library.
