//! Datagram counters of a node (what `/state` and the agent's Prometheus exposition show).

use std::collections::BTreeMap;

/// Datagram counters: (direction, outcome) → count, and bytes per direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams: BTreeMap<(&'static str, &'static str), u64>,
    pub bytes: BTreeMap<&'static str, u64>,
    pub by_kind_tx: BTreeMap<&'static str, u64>,
}

impl Counters {
    pub(crate) fn count(&mut self, dir: &'static str, outcome: &'static str) {
        *self.datagrams.entry((dir, outcome)).or_default() += 1;
    }
    pub fn get(&self, dir: &'static str, outcome: &'static str) -> u64 {
        self.datagrams.get(&(dir, outcome)).copied().unwrap_or(0)
    }
}
