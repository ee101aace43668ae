//! A task (a capsule) as a user submits it.

use serde::Serialize;

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
