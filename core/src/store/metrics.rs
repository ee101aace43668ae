//! The store's telemetry: one tile's figures ([`StoreMetrics`], from
//! [`Store::metrics`](super::machine::Store::metrics)) and their Prometheus text, the series
//! an agent exports and the expectations read. `lightcone_storage_objects_lost_total` must
//! stay 0 while no stripe loses more than n − k shards.
use std::fmt::Write;

/// Counters (monotonic) and gauges of one tile's store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounters {
    pub repair_bytes_total: u64,
    pub repairs_total: u64,
    pub objects_lost_total: u64,
    pub corrupt_shards_total: u64,
    pub bad_frames_total: u64,
    /// Shards this node rebuilt for itself: named their holder by its metadata, not held.
    pub self_heals_total: u64,
    /// Objects this node had declared lost that came back into its view with k or more
    /// shards (a partition healed): their repair resumed.
    pub objects_found_again_total: u64,
}

/// Redundancy of the stripes this tile stewards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Redundancy {
    /// All n holders live.
    pub full: u32,
    /// Fewer than n, more than k + 1 live.
    pub reduced: u32,
    /// At most k + 1 live: two more losses lose the object.
    pub critical: u32,
    /// Stripes waiting for or under repair.
    pub repair_queue: u32,
}

/// One tile's store figures (or a sum over tiles, [`StoreMetrics::add`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreMetrics {
    /// Stripes this tile stewards, by redundancy (each stripe counted by one tile).
    pub redundancy: Redundancy,
    pub shards_held: u64,
    /// Objects this tile holds lost now (fewer than k shards in its view). A verdict a
    /// partition caused leaves this when the shards come back into view, while
    /// `objects_lost_total` keeps counting it.
    pub objects_lost_now: u64,
    pub counters: StoreCounters,
}

impl StoreMetrics {
    pub fn add(&mut self, o: &StoreMetrics) {
        let (r, q) = (&mut self.redundancy, &o.redundancy);
        r.full += q.full;
        r.reduced += q.reduced;
        r.critical += q.critical;
        r.repair_queue += q.repair_queue;
        self.shards_held += o.shards_held;
        self.objects_lost_now += o.objects_lost_now;
        let (c, d) = (&mut self.counters, &o.counters);
        c.repair_bytes_total += d.repair_bytes_total;
        c.repairs_total += d.repairs_total;
        c.objects_lost_total += d.objects_lost_total;
        c.corrupt_shards_total += d.corrupt_shards_total;
        c.bad_frames_total += d.bad_frames_total;
        c.self_heals_total += d.self_heals_total;
        c.objects_found_again_total += d.objects_found_again_total;
    }

    /// Prometheus text exposition, every series labelled `node`.
    pub fn render(&self, node: &str) -> String {
        let mut s = String::new();
        let l = format!("node=\"{node}\"");
        let r = &self.redundancy;
        let c = &self.counters;
        let _ = writeln!(s, "# HELP lightcone_storage_stripes Stripes this node stewards, by redundancy: full (n live shards), reduced, critical (at most k + 1 live).");
        let _ = writeln!(s, "# TYPE lightcone_storage_stripes gauge");
        for (name, v) in [
            ("full", r.full),
            ("reduced", r.reduced),
            ("critical", r.critical),
        ] {
            let _ = writeln!(
                s,
                "lightcone_storage_stripes{{{l},redundancy=\"{name}\"}} {v}"
            );
        }
        for (name, kind, help, v) in [
            (
                "lightcone_storage_shards_held",
                "gauge",
                "Shards held by this node.",
                self.shards_held,
            ),
            (
                "lightcone_storage_objects_lost",
                "gauge",
                "Objects this node holds lost now (fewer than k shards in its view); a verdict a partition caused leaves it when the shards come back into view.",
                self.objects_lost_now,
            ),
            (
                "lightcone_storage_repair_queue",
                "gauge",
                "Stripes this node stewards that wait for or are under repair.",
                r.repair_queue as u64,
            ),
            (
                "lightcone_storage_repair_bytes_total",
                "counter",
                "Shard bytes read and written for repairs.",
                c.repair_bytes_total,
            ),
            (
                "lightcone_storage_repairs_total",
                "counter",
                "Stripe repairs completed.",
                c.repairs_total,
            ),
            (
                "lightcone_storage_objects_lost_total",
                "counter",
                "Lost verdicts this node reached (fewer than k shards in its view), including any later found again (objects_found_again_total); lightcone_storage_objects_lost is how many it holds lost now.",
                c.objects_lost_total,
            ),
            (
                "lightcone_storage_corrupt_shards_total",
                "counter",
                "Shards refused because their bytes did not match their hash.",
                c.corrupt_shards_total,
            ),
            (
                "lightcone_storage_bad_frames_total",
                "counter",
                "Store frames that did not decode.",
                c.bad_frames_total,
            ),
            (
                "lightcone_storage_self_heals_total",
                "counter",
                "Rebuilds this node started of a shard its metadata names it for and it did not hold.",
                c.self_heals_total,
            ),
            (
                "lightcone_storage_objects_found_again_total",
                "counter",
                "Objects this node had declared lost whose shards came back into view (k or more): repair resumed.",
                c.objects_found_again_total,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} {kind}");
            let _ = writeln!(s, "{name}{{{l}}} {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_its_value() {
        let mut m = StoreMetrics::default();
        m.redundancy.full = 3;
        m.redundancy.critical = 1;
        m.counters.objects_lost_total = 2;
        m.shards_held = 17;
        m.objects_lost_now = 1;
        let mut sum = StoreMetrics::default();
        sum.add(&m);
        sum.add(&m);
        let t = sum.render("t1");
        assert!(
            t.contains("lightcone_storage_stripes{node=\"t1\",redundancy=\"full\"} 6\n"),
            "{t}"
        );
        assert!(t.contains("lightcone_storage_stripes{node=\"t1\",redundancy=\"critical\"} 2\n"));
        assert!(t.contains("lightcone_storage_objects_lost_total{node=\"t1\"} 4\n"));
        assert!(
            t.contains("lightcone_storage_objects_lost{node=\"t1\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("lightcone_storage_shards_held{node=\"t1\"} 34\n"));
        assert!(t.contains("# TYPE lightcone_storage_repair_bytes_total counter\n"));
    }
}
