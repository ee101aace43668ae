//! The tile runtime's own cost against the spec's budget (issue 18): "a tiny … kernel
//! (target ~1–10 MB code, < 0.5–1 % compute overhead per tile)".
//!
//! Measured from the process itself: CPU time (utime + stime, `/proc/self/stat`), resident
//! memory (`/proc/self/statm`) and the size of the binary (`/proc/self/exe`). A process
//! that runs several tiles (a multi-tile agent) charges each tile an equal share. The
//! share of compute is CPU time over wall time since the tile started, of one core: the
//! lab gives each tile no "compute" of its own, so one host core stands for a tile's
//! compute, which is generous to the tile (a real tile's core is busy with its workload,
//! and the budget is a share of it). [`BUDGET_SHARE`] is the spec's upper figure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

/// The spec's per-tile compute budget, upper end (< 0.5–1 %).
pub const BUDGET_SHARE: f64 = 0.01;
/// The spec's code size target, upper end (~1–10 MB).
pub const CODE_TARGET_BYTES: u64 = 10 * 1024 * 1024;

/// Tiles this process runs (each [`Runtime::new`] counts one).
static TILES: AtomicUsize = AtomicUsize::new(0);

/// One tile's view of its process's cost.
#[derive(Debug)]
pub struct Runtime {
    started: Instant,
    cpu_at_start_s: f64,
}

/// What `/state` shows as `runtime` and the metrics export.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuntimeView {
    /// This tile's share of its process's CPU time since the tile started, seconds.
    pub cpu_s: f64,
    /// Wall time since the tile started, seconds.
    pub uptime_s: f64,
    /// `cpu_s / uptime_s`: the share of one core this tile used.
    pub cpu_share: f64,
    /// The spec's budget for it ([`BUDGET_SHARE`]).
    pub budget_share: f64,
    pub within_budget: bool,
    /// This tile's share of the process's resident memory, bytes.
    pub rss_bytes: u64,
    /// The agent binary's size, bytes, and the spec's code target.
    pub binary_bytes: u64,
    pub code_target_bytes: u64,
    /// Tiles the process runs (its CPU and memory are divided among them).
    pub tiles_in_process: usize,
}

/// The process's CPU time (utime + stime), seconds; `None` if `/proc` cannot tell.
fn process_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// The process's resident set, bytes.
fn process_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}

impl Runtime {
    /// A tile starts in this process.
    pub fn new() -> Runtime {
        TILES.fetch_add(1, Ordering::Relaxed);
        Runtime {
            started: Instant::now(),
            cpu_at_start_s: process_cpu_s().unwrap_or(0.0),
        }
    }

    /// The tile's cost now.
    pub fn view(&self) -> RuntimeView {
        let tiles = TILES.load(Ordering::Relaxed).max(1);
        let uptime_s = self.started.elapsed().as_secs_f64();
        // A single-tile process is charged everything since exec (its start-up too).
        let since = if tiles == 1 { 0.0 } else { self.cpu_at_start_s };
        let cpu_s = (process_cpu_s().unwrap_or(0.0) - since).max(0.0) / tiles as f64;
        let cpu_share = if uptime_s > 0.0 {
            cpu_s / uptime_s
        } else {
            0.0
        };
        RuntimeView {
            cpu_s,
            uptime_s,
            cpu_share,
            budget_share: BUDGET_SHARE,
            within_budget: cpu_share <= BUDGET_SHARE,
            rss_bytes: process_rss_bytes().unwrap_or(0) / tiles as u64,
            binary_bytes: std::fs::metadata("/proc/self/exe")
                .map(|m| m.len())
                .unwrap_or(0),
            code_target_bytes: CODE_TARGET_BYTES,
            tiles_in_process: tiles,
        }
    }

    /// The view as Prometheus series for tile `node`.
    pub fn render(&self, node: &str) -> String {
        let v = self.view();
        format!(
            "# HELP lightcone_tile_runtime_cpu_seconds This tile's share of its agent process's CPU time since it started (issue 18's runtime budget)\n\
             # TYPE lightcone_tile_runtime_cpu_seconds gauge\n\
             lightcone_tile_runtime_cpu_seconds{{node=\"{node}\"}} {}\n\
             # HELP lightcone_tile_runtime_cpu_share CPU time over wall time since the tile started, of one core; the spec's budget is < 0.5-1 %\n\
             # TYPE lightcone_tile_runtime_cpu_share gauge\n\
             lightcone_tile_runtime_cpu_share{{node=\"{node}\"}} {}\n\
             # HELP lightcone_tile_runtime_budget_share The spec's per-tile compute budget (upper figure)\n\
             # TYPE lightcone_tile_runtime_budget_share gauge\n\
             lightcone_tile_runtime_budget_share{{node=\"{node}\"}} {}\n\
             # HELP lightcone_tile_runtime_resident_bytes This tile's share of its agent process's resident memory\n\
             # TYPE lightcone_tile_runtime_resident_bytes gauge\n\
             lightcone_tile_runtime_resident_bytes{{node=\"{node}\"}} {}\n",
            v.cpu_s, v.cpu_share, v.budget_share, v.rss_bytes
        )
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_sees_its_process_cost_and_the_budget() {
        let r = Runtime::new();
        // Burn some CPU so the share is not zero.
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 7);
        let v = r.view();
        assert!(v.uptime_s >= 0.05);
        assert!(v.rss_bytes > 0 && v.binary_bytes > 0);
        assert!(v.tiles_in_process >= 1);
        // The burn is seen: 50 ms of a busy core over ~50 ms of uptime, shared among the
        // few tiles this test process counts, is far above the 1 % budget.
        assert!(v.cpu_s > 0.0, "{v:?}");
        assert!(
            v.cpu_share > 10.0 * BUDGET_SHARE && !v.within_budget,
            "a busy loop within budget: {v:?}"
        );
        let text = r.render("n1");
        assert!(text.contains("lightcone_tile_runtime_cpu_share{node=\"n1\"}"));
        assert!(text.contains("lightcone_tile_runtime_budget_share{node=\"n1\"} 0.01"));
    }
}
