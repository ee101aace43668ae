//! The store's two scenarios, run in the [`Harness`]: what the tests judge and
//! `examples/store_scenarios.rs` prints.
//!
//! **Durable** (the spec's class k = 20, n = 60 over 4 cells; 96 tiles = 2 clusters × 3
//! cells × 16): 30 objects written under reads; churn at 5 %/year per tile with one year
//! compressed into 600 s (×52,560; only failure *arrivals* are compressed — detection,
//! grace and repair run at 1:1, so the repair bound is the spec's "within minutes" itself,
//! taken as 300 s from a failure to full redundancy); each churned tile is replaced
//! (empty) 60 s later; cell 0 lost whole at 200 s and replaced empty at 400 s; clusters
//! partitioned for 20 s at 450 s (shorter than detection + grace: nothing is repaired for
//! it).
//!
//! **Overload**: the same class on 128 tiles (2 clusters × 4 cells × 16), 60 objects; at
//! 60 s three whole cells (0, 1 and 4) are lost for good. A stripe with more than
//! n − k = 40 shards there is lost; every other one is repaired.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::harness::{Harness, Record};
use super::machine::StoreParams;
use super::Class;

fn object_bytes(i: usize) -> Vec<u8> {
    (0..1000 + 37 * i)
        .map(|j| (j * 131 + i * 7 + 3) as u8)
        .collect()
}

/// Seconds.
fn s(x: f64) -> Duration {
    Duration::from_secs_f64(x)
}

/// The durable scenario's end: the harness after the run, and its churn (time, tile).
pub fn durable(seed: u64) -> (Harness, Vec<(Duration, u32)>) {
    let params = StoreParams {
        seed,
        ..StoreParams::default()
    };
    let mut h = Harness::grid(2, 3, 16, Class::spec(4), params);
    let n_tiles = h.tiles.len() as u32;
    for i in 0..30usize {
        let by = (i as u32 * 7) % n_tiles;
        h.put_at(
            s(1.0 + i as f64),
            by,
            &format!("obj-{i:02}"),
            object_bytes(i),
        );
    }
    // Reads under churn: one every 5 s from a rotating tile.
    for r in 0..180usize {
        h.read_at(
            s(40.0 + 5.0 * r as f64),
            (r as u32 * 13 + 5) % n_tiles,
            &format!("obj-{:02}", r % 30),
        );
    }
    let all: Vec<u32> = (0..n_tiles).collect();
    let churn = Harness::churn(seed ^ 0xc0ffee, &all, 0.05, s(600.0), s(60.0));
    for &(t, tile) in &churn {
        h.crash_at(t, tile);
        h.restart_at(t + s(60.0), tile);
    }
    let cell0: Vec<u32> = h
        .tiles
        .iter()
        .filter(|t| t.cell == 0)
        .map(|t| t.id)
        .collect();
    for &t in &cell0 {
        h.crash_at(s(200.0), t);
        h.restart_at(s(400.0), t);
    }
    let side = h.cluster(0);
    h.partition_at(s(450.0), s(20.0), side);
    h.run_until(s(960.0));
    // Final reads from live tiles that know the metadata (the writer, a holder).
    for i in 0..30usize {
        let o = format!("obj-{i:02}");
        if let Some(m) = h.meta(&o) {
            let by = *m.holders.iter().find(|&&t| h.is_up(t)).unwrap_or(&m.writer);
            h.read_at(s(961.0), by, &o);
        }
    }
    h.run_until(s(975.0));
    (h, churn)
}

/// The overload scenario's end: the harness, and the objects whose stripes had more than
/// n − k shards in the lost cells (computed from the metadata before the loss).
pub fn overload(seed: u64) -> (Harness, BTreeSet<String>) {
    let params = StoreParams {
        seed,
        ..StoreParams::default()
    };
    let mut h = Harness::grid(2, 4, 16, Class::spec(4), params);
    let n_tiles = h.tiles.len() as u32;
    for i in 0..60usize {
        h.put_at(
            s(1.0 + 0.5 * i as f64),
            (i as u32 * 11) % n_tiles,
            &format!("obj-{i:02}"),
            object_bytes(i),
        );
    }
    h.run_until(s(59.0));
    let lost_cells = [0u32, 1, 4];
    let dead: BTreeSet<u32> = h
        .tiles
        .iter()
        .filter(|t| lost_cells.contains(&t.cell))
        .map(|t| t.id)
        .collect();
    let mut expected = BTreeSet::new();
    for i in 0..60usize {
        let o = format!("obj-{i:02}");
        let m = h.meta(&o).expect("written");
        let gone = m.holders.iter().filter(|t| dead.contains(t)).count();
        if gone > (m.class.n - m.class.k) as usize {
            expected.insert(o);
        }
    }
    for &t in &dead {
        h.crash_at(s(60.0), t);
    }
    h.run_until(s(400.0));
    (h, expected)
}

/// Figures of a run: repair times (s, from the failure: declared dead + detection),
/// objects reported lost (with duplicates), reads ok/failed, repair bytes.
#[derive(Debug)]
pub struct Figures {
    pub repair_secs: Vec<f64>,
    pub lost_reports: Vec<String>,
    pub reads_ok: usize,
    pub reads_failed: usize,
    pub puts_done: usize,
    pub repair_bytes: u64,
    pub repairs: u64,
    pub objects_lost_total: u64,
}

pub fn figures(h: &Harness) -> Figures {
    let mut f = Figures {
        repair_secs: Vec::new(),
        lost_reports: Vec::new(),
        reads_ok: 0,
        reads_failed: 0,
        puts_done: 0,
        repair_bytes: 0,
        repairs: 0,
        objects_lost_total: 0,
    };
    for r in &h.records {
        match r {
            Record::Repaired { after, .. } => f.repair_secs.push((*after + h.detect).as_secs_f64()),
            Record::Lost { object, .. } => f.lost_reports.push(object.clone()),
            Record::Read { ok: true, .. } => f.reads_ok += 1,
            Record::Read { ok: false, .. } => f.reads_failed += 1,
            Record::PutDone { .. } => f.puts_done += 1,
            _ => {}
        }
    }
    // Counters of the tiles up at the end (a crashed tile's counters went with it).
    let mut per: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
    for (&id, st) in h.stores() {
        let c = st.counters();
        per.insert(
            id,
            (c.repair_bytes_total, c.repairs_total, c.objects_lost_total),
        );
    }
    for (b, r, l) in per.values() {
        f.repair_bytes += b;
        f.repairs += r;
        f.objects_lost_total += l;
    }
    f.repair_secs.sort_by(|a, b| a.total_cmp(b));
    f
}

/// The q-quantile (nearest rank) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
