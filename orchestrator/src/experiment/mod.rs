//! Experiments: scenario files played against a live lab, judged by the spec's numbers.
//!
//! Pipeline, one direction: [`scenario`] (YAML with positions → typed [`Scenario`]) →
//! [`expand`] (verbs + topology + seed → a flat, deterministic list of primitive actions) →
//! [`runner`] (plays them through the supervisor's API, polls agents, records a
//! [`expect::Recording`] and the [`record`] types) → [`expect`] (pure evaluation of each
//! expectation) → [`report`] (report.json, report.html with inline SVG plots; it reads
//! [`record`], never [`runner`]). Emulated times in scenarios become real
//! times through the lab's `time_scale`. [`validate`] checks a scenario, its topology, its
//! timeline and its expectations without running anything; `run` starts from what it
//! accepted.

pub mod action;
pub mod expand;
pub mod expect;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
mod store;
mod thermal;
pub mod validate;

pub use expand::{expand, Action, Planned};
pub use expect::{evaluate, Expectation, Metric, Recording, Verdict};
pub use runner::{prepare, prepare_for, run, Outcome, RunError, RunOptions};
pub use scenario::{Scenario, Step, Verb};
