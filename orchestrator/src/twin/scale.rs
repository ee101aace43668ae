//! What the twin does differently above [`FULL_RECORD_MAX`](super::recorder::FULL_RECORD_MAX)
//! nodes, where reading every node's whole view would cost O(N²) per check.
//!
//! The warm-up's convergence check: every node sees its whole cell alive or suspect, none
//! dead (its own counts,
//! O(cell) per node, stopping at the first that does not), and a sample of nodes — the
//! timeline's named nodes and the first node of each of the first [`ROUTE_SAMPLE_CELLS`]
//! cells — holds every route it should ([`expected_routes`], computed once per sampled
//! node). Below the threshold the lab's own check runs on every node.

use std::collections::{BTreeMap, BTreeSet};

use lightcone_core::view::dest_name;

use crate::experiment::runner::cell_key;
use crate::experiment::runner::warmup::expected_routes;
use lightcone_sim::Sim;

/// Cells whose first node's routes the warm-up checks (besides the named nodes).
pub const ROUTE_SAMPLE_CELLS: usize = 16;

/// The sampled nodes and the routes each must hold.
pub(super) struct WarmupSample {
    routes: Vec<(u32, BTreeSet<String>)>,
}

impl WarmupSample {
    /// `subjects`: the timeline's named nodes (the recorder's scope); `names`, `addrs` and
    /// `ids` as the twin holds them.
    pub fn new(
        subjects: &[u32],
        names: &[String],
        addrs: &BTreeMap<String, String>,
        ids: &BTreeMap<String, u32>,
    ) -> WarmupSample {
        let mut sample: BTreeSet<u32> = subjects.iter().copied().collect();
        let mut cells = BTreeSet::new();
        for (i, n) in names.iter().enumerate() {
            if cells.len() >= ROUTE_SAMPLE_CELLS {
                break;
            }
            if cells.insert(cell_key(addrs.get(n).map_or("", String::as_str))) {
                sample.insert(i as u32);
            }
        }
        let routes = sample
            .into_iter()
            .map(|i| {
                let name = &names[i as usize];
                (i, expected_routes(addrs, ids, name))
            })
            .collect();
        WarmupSample { routes }
    }

    /// (every node sees its cell alive or suspect — a suspicion is a check in progress, as
    /// the lab's [`converged`](crate::experiment::runner::warmup::converged) counts it —,
    /// the first sampled node missing a route).
    pub fn check(&self, names: &[String], sim: &Sim) -> (bool, Option<String>) {
        let alive = (0..names.len() as u32).all(|i| {
            sim.node(i).is_some_and(|n| {
                let m = n.membership();
                let [alive, suspect, _dead] = m.counts();
                (alive + suspect) as usize == m.cell_size()
            })
        });
        let missing = self.routes.iter().find_map(|(i, want)| {
            let name = &names[*i as usize];
            let Some(node) = sim.node(*i) else {
                return Some(format!("{name} is down"));
            };
            let have: BTreeSet<String> = node.routing().table().keys().map(dest_name).collect();
            want.difference(&have)
                .next()
                .map(|d| format!("{name} has no route to {d}"))
        });
        (alive, missing)
    }
}
