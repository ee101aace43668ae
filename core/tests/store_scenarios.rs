//! The store's scenarios (issue 16) judged: `lightcone_core::store::scenarios`.
//!
//! Durable: 0 objects lost and every stripe back at full redundancy within 300 s of a
//! failure (the spec's "within minutes", taken as 5 min; only failure arrivals are time-
//! compressed, repair runs at 1:1). Overload: exactly the objects with more than n − k
//! shards in the lost cells are reported lost, once each.
use std::collections::BTreeSet;

use lightcone_core::store::harness::Record;
use lightcone_core::store::scenarios::{durable, figures, overload, quantile};

/// The spec's "within minutes", read as 5 minutes (failure to full redundancy).
const REPAIR_BOUND_S: f64 = 300.0;

#[test]
fn durable_loses_nothing_and_repairs_within_minutes() {
    let (h, churn) = durable(1);
    let f = figures(&h);
    assert!(
        !churn.is_empty(),
        "churn drew no crash: the scenario would test nothing"
    );
    assert_eq!(f.puts_done, 30);
    assert_eq!(f.objects_lost_total, 0);
    assert!(f.lost_reports.is_empty(), "{:?}", f.lost_reports);
    assert_eq!(f.reads_failed, 0);
    assert!(f.reads_ok >= 200, "{}", f.reads_ok);
    // Repairs happened (the cell loss alone touches every stripe placed in cell 0).
    let repaired: BTreeSet<String> = h
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Repaired { object, .. } => Some(object.clone()),
            _ => None,
        })
        .collect();
    assert!(repaired.len() >= 10, "{repaired:?}");
    let max = quantile(&f.repair_secs, 1.0);
    assert!(
        max <= REPAIR_BOUND_S,
        "slowest repair {max} s > {REPAIR_BOUND_S} s (spec: within minutes)"
    );
    for i in 0..30 {
        let o = format!("obj-{i:02}");
        assert_eq!(
            h.redundancy_of(&o).map(|(a, n)| a == n),
            Some(true),
            "{o} not at full redundancy"
        );
        let m = h.meta(&o).unwrap();
        assert!(
            m.holders.iter().all(|t| h.is_up(*t)),
            "{o}: a holder is down"
        );
    }
    assert!(f.repair_bytes > 0);
    // Every store frame fits one overlay datagram (1400 bytes less header and signature).
    assert!(
        h.max_frame <= lightcone_core::wire::MAX_BLOB,
        "{} bytes",
        h.max_frame
    );
    // The telemetry says the same: every stripe full, nothing queued, nothing lost.
    let m = h.metrics();
    assert_eq!(m.counters.objects_lost_total, 0);
    assert_eq!(
        (
            m.redundancy.full,
            m.redundancy.reduced,
            m.redundancy.critical
        ),
        (30, 0, 0)
    );
    assert_eq!(m.redundancy.repair_queue, 0);
    assert_eq!(m.shards_held, 30 * 60);
}

#[test]
fn overload_reports_exactly_the_objects_past_n_minus_k() {
    let (h, expected) = overload(1);
    let f = figures(&h);
    assert!(
        !expected.is_empty() && expected.len() < 60,
        "{expected:?}: the check would not discriminate"
    );
    let reported: BTreeSet<String> = f.lost_reports.iter().cloned().collect();
    assert_eq!(reported, expected);
    assert_eq!(
        f.lost_reports.len(),
        reported.len(),
        "an object reported lost twice"
    );
    assert_eq!(f.objects_lost_total, expected.len() as u64);
    let m = h.metrics();
    assert_eq!(m.counters.objects_lost_total, expected.len() as u64);
    assert_eq!(m.redundancy.full as usize, 60 - expected.len());
    assert_eq!(m.redundancy.repair_queue, 0);
    for i in 0..60 {
        let o = format!("obj-{i:02}");
        if !expected.contains(&o) {
            assert_eq!(h.redundancy_of(&o).map(|(a, n)| a == n), Some(true), "{o}");
        }
    }
}

#[test]
fn same_seed_same_run() {
    let (a, _) = overload(3);
    let (b, _) = overload(3);
    assert_eq!(a.records, b.records);
    assert_eq!((a.frames, a.frame_bytes), (b.frames, b.frame_bytes));
}
