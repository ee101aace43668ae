//! Runs the store's two scenarios (`lightcone_core::store::scenarios`) and prints their
//! figures: repair time distribution, repair bytes, objects lost.
//!
//! ```text
//! cargo run --release -p lightcone-core --example store_scenarios [SEED]
//! ```
use lightcone_core::store::scenarios::{durable, figures, overload, quantile};

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let t = std::time::Instant::now();
    let (h, churn) = durable(seed);
    let f = figures(&h);
    println!("durable (seed {seed}): 96 tiles, 6 cells, k=20 n=60 over 4 cells; {} churn crashes in a year compressed to 600 s, cell 0 lost at 200 s, 20 s partition at 450 s", churn.len());
    println!(
        "  puts done {}  reads ok {} failed {}",
        f.puts_done, f.reads_ok, f.reads_failed
    );
    let r = &f.repair_secs;
    println!(
        "  stripe repairs {}  time from failure to full redundancy (s): min {:.1} p50 {:.1} p95 {:.1} max {:.1}",
        r.len(), quantile(r, 0.0), quantile(r, 0.5), quantile(r, 0.95), quantile(r, 1.0)
    );
    println!(
        "  repair bytes {} (repairs counted {}), objects lost {} (reports {})",
        f.repair_bytes,
        f.repairs,
        f.objects_lost_total,
        f.lost_reports.len()
    );
    let full = (0..30)
        .filter(|i| {
            h.redundancy_of(&format!("obj-{i:02}"))
                .is_some_and(|(a, n)| a == n)
        })
        .count();
    println!("  stripes at full redundancy at the end: {full}/30; frames {} ({} bytes), largest store frame {} bytes", h.frames, h.frame_bytes, h.max_frame);
    print!("{}", h.metrics().render("all"));
    let (h, expected) = overload(seed);
    let f = figures(&h);
    let mut reported = f.lost_reports.clone();
    reported.sort();
    println!("overload (seed {seed}): 128 tiles, 8 cells, cells 0, 1, 4 lost at 60 s");
    println!("  expected lost (> 40 shards in the lost cells): {expected:?}");
    println!("  reported lost: {reported:?}");
    let r = &f.repair_secs;
    println!(
        "  stripe repairs {}  time to full (s): p50 {:.1} max {:.1}; repair bytes {}",
        r.len(),
        quantile(r, 0.5),
        quantile(r, 1.0),
        f.repair_bytes
    );
    print!("{}", h.metrics().render("all"));
    println!("  wall time {:.2} s", t.elapsed().as_secs_f64());
}
