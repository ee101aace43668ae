//! A task (a capsule) as a user submits it.

use serde::Serialize;

/// Payload bytes of one frame of a task's input stream.
pub const TRAFFIC_FRAME_BYTES: usize = 1024;
/// The most input a task may ask for, kbit per emulated second (8 Mbit/s: what one owner
/// sends per one-second round within its per-round bound of 1,024 frames).
pub const MAX_TRAFFIC_KBPS: u32 = 8_000;

/// A task as submitted (`lightcone task submit`, scenario verb `task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub compute: u32,
    #[serde(default)]
    pub memory_mib: u32,
    #[serde(default)]
    pub bandwidth_mbps: u32,
    /// How long it runs, emulated ns.
    pub duration_ns: u64,
    /// The task's input stream (issue 15, workload traffic): while the task holds a lease
    /// its owner sends the holder this many kbit per emulated second over the overlay, as
    /// `Data` frames of at most [`TRAFFIC_FRAME_BYTES`] (workload: counted by the locality
    /// ledger, sent below Class A). 0: none.
    #[serde(default)]
    pub traffic_kbps: u32,
    pub class: TaskClassName,
}

/// [`TaskClass`](super::msg::TaskClass) as written by a user: `hot` (fast, inward) or `cold` (deep, outward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskClassName {
    Hot,
    Cold,
}

impl From<TaskClassName> for super::msg::TaskClass {
    fn from(c: TaskClassName) -> Self {
        match c {
            TaskClassName::Hot => super::msg::TaskClass::Hot,
            TaskClassName::Cold => super::msg::TaskClass::Cold,
        }
    }
}
