//! What one link direction did, counted the same way whoever drives the [`Shaper`]: frames
//! offered, lost to the loss model, dropped for queue space or because the link was down,
//! duplicated, corrupted, delivered, delivered out of order, and the achieved delay as a
//! histogram with quantiles.
//!
//! A driver calls [`Tally::offer`] with each verdict (it returns the offer's sequence
//! number), [`Tally::deliver`] when a copy leaves the far end (with that number and the
//! copy's delay) and [`Tally::flush`] for copies discarded on the link (taken down). The
//! simulator keeps one per shaped link direction; tests keep one beside a shaper they drive
//! the way the wire engine does, and compare.
//!
//! # Delay histogram
//! Log-linear buckets (HdrHistogram's layout): values below 256 ns exact, above that 128
//! buckets per power of two, so a bucket is at most 1/128 (0.8 %) of its value wide. Only
//! the buckets in use are stored (a `BTreeMap`), so a link whose delay hardly varies costs
//! a few entries, and the memory per direction is bounded by the 256 + 56 × 128 possible
//! buckets.
//! A quantile is the upper bound of the bucket holding that rank: never below the true
//! value, at most 0.8 % above it. A jittered link fills a few hundred buckets (kilobytes);
//! [`Tally::counts_only`] keeps none, for simulations of millions of link directions.
//!
//! [`Shaper`]: crate::shaper::Shaper

use std::collections::BTreeMap;

use crate::shaper::{Class, Delivery, Drop, Verdict};

/// Sub-buckets per power of two (2^7): relative width ≤ 1/128.
const SUB_BITS: u32 = 7;

/// Counters and delay histogram of one link direction (see the module doc).
/// `Tally::default()` keeps the histogram; [`Tally::counts_only`] does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Frames offered to the shaper.
    pub offered: u64,
    /// Frames the loss model dropped.
    pub lost: u64,
    /// Frames dropped for queue space.
    pub dropped_queue: u64,
    /// Frames offered while the link was down, and copies discarded when it went down.
    pub dropped_down: u64,
    /// Frames sent twice.
    pub duplicated: u64,
    /// Copies with one bit flipped.
    pub corrupted: u64,
    /// Copies that left the far end.
    pub delivered: u64,
    /// Copies that left the far end after a copy of a later offer had.
    pub reordered: u64,
    /// Highest offer sequence number delivered so far (0: none).
    last_delivered_offer: u64,
    /// Achieved delay, ns: bucket index → copies (`None`: not kept).
    delays: Option<BTreeMap<u32, u64>>,
    delay_sum_ns: u128,
    /// Longest wait for the transmitter, per class ([`Class::index`]: A, data), real ns.
    pub wait_max_ns: [u64; 2],
    /// Longest part of a Class-A copy's wait spent behind a data frame, real ns
    /// ([`Delivery::waited_behind_data_real_ns`]): what priority did not spare it.
    pub a_behind_data_max_ns: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            offered: 0,
            lost: 0,
            dropped_queue: 0,
            dropped_down: 0,
            duplicated: 0,
            corrupted: 0,
            delivered: 0,
            reordered: 0,
            last_delivered_offer: 0,
            delays: Some(BTreeMap::new()),
            delay_sum_ns: 0,
            wait_max_ns: [0; 2],
            a_behind_data_max_ns: 0,
        }
    }
}

impl Tally {
    /// A tally without the delay histogram (counts and the mean delay only): a few dozen
    /// bytes, for simulations of millions of link directions. Its quantiles are `None`.
    pub fn counts_only() -> Tally {
        Tally {
            delays: None,
            ..Tally::default()
        }
    }

    /// Counts an offer and its verdict; returns the offer's sequence number (from 1), which
    /// each of its copies carries to [`Tally::deliver`].
    pub fn offer(&mut self, verdict: &Verdict) -> u64 {
        self.offered += 1;
        match verdict {
            Verdict::Drop(Drop::Loss) => self.lost += 1,
            Verdict::Drop(Drop::Queue) => self.dropped_queue += 1,
            Verdict::Drop(Drop::Down) => self.dropped_down += 1,
            Verdict::Deliver { first, duplicate } => {
                self.duplicated += u64::from(duplicate.is_some());
                self.corrupted += u64::from(first.corrupt_bit.is_some());
                self.corrupted += u64::from(duplicate.is_some_and(|d| d.corrupt_bit.is_some()));
            }
            // Its copies' corruption is counted when they start ([`Tally::started`]).
            Verdict::Wait { copies } => self.duplicated += u64::from(*copies > 1),
        }
        self.offered
    }

    /// A copy of class `class` started after waiting `d.waited_real_ns` for the transmitter
    /// (call it for every copy that starts, at once or after [`Verdict::Wait`]).
    pub fn waited(&mut self, class: Class, d: &Delivery) {
        let m = &mut self.wait_max_ns[class.index()];
        *m = (*m).max(d.waited_real_ns);
        if class == Class::A {
            self.a_behind_data_max_ns = self.a_behind_data_max_ns.max(d.waited_behind_data_real_ns);
        }
    }

    /// A copy that waited ([`Verdict::Wait`]) started with this delivery.
    pub fn started(&mut self, d: &Delivery) {
        self.corrupted += u64::from(d.corrupt_bit.is_some());
    }

    /// A copy of offer `offer` left the far end `delay_ns` after it was offered.
    pub fn deliver(&mut self, offer: u64, delay_ns: u64) {
        self.delivered += 1;
        if offer < self.last_delivered_offer {
            self.reordered += 1;
        }
        self.last_delivered_offer = self.last_delivered_offer.max(offer);
        if let Some(d) = self.delays.as_mut() {
            *d.entry(bucket(delay_ns)).or_default() += 1;
        }
        self.delay_sum_ns += u128::from(delay_ns);
    }

    /// `copies` accepted copies were discarded on the link (it went down).
    pub fn flush(&mut self, copies: u64) {
        self.dropped_down += copies;
    }

    /// The `q` quantile (0..=1, nearest rank) of the achieved delay in ns: the upper bound
    /// of its bucket. `None` before the first delivery, or without a histogram.
    pub fn delay_quantile_ns(&self, q: f64) -> Option<u64> {
        let delays = self.delays.as_ref()?;
        if self.delivered == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.delivered as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in delays {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(*b));
            }
        }
        delays.keys().next_back().map(|b| upper_bound(*b))
    }

    /// Delay histogram buckets in use (0 without a histogram): its memory is about 40
    /// bytes each.
    pub fn delay_buckets(&self) -> usize {
        self.delays.as_ref().map_or(0, BTreeMap::len)
    }

    /// Mean achieved delay, ns (exact, not from the buckets).
    pub fn delay_mean_ns(&self) -> Option<f64> {
        (self.delivered > 0).then(|| self.delay_sum_ns as f64 / self.delivered as f64)
    }
}

/// Bucket of `v`: `v` itself below 2^(SUB_BITS+1), else the power of two and the next
/// SUB_BITS bits below the leading one.
fn bucket(v: u64) -> u32 {
    if v < 1 << (SUB_BITS + 1) {
        return v as u32;
    }
    let e = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
    let shift = e - SUB_BITS;
    let top = (v >> shift) as u32; // in 2^SUB_BITS ..< 2^(SUB_BITS+1)
    (shift << SUB_BITS) + top
}

/// Largest value in bucket `b`.
fn upper_bound(b: u32) -> u64 {
    if b < 1 << (SUB_BITS + 1) {
        return u64::from(b);
    }
    let shift = (b >> SUB_BITS) - 1;
    let top = b - (shift << SUB_BITS); // 2^SUB_BITS ..< 2^(SUB_BITS+1), as `bucket` made it
    ((u64::from(top) + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaper::Delivery;

    #[test]
    fn buckets_are_monotonic_and_at_most_one_128th_wide() {
        let mut last = 0;
        let mut v = 0u64;
        while v < u64::MAX / 16 {
            let b = bucket(v);
            assert!(b >= last, "bucket({v}) = {b} < {last}");
            last = b;
            let hi = upper_bound(b);
            assert!(hi >= v, "upper_bound({b}) = {hi} < {v}");
            assert_eq!(
                bucket(hi),
                b,
                "upper bound {hi} of bucket {b} is in another"
            );
            assert!(
                (hi - v) as f64 <= v as f64 / 128.0 + 1.0,
                "{v}: bound {hi} too far"
            );
            v = v * 9 / 8 + 1;
        }
        for v in 0..256 {
            assert_eq!(upper_bound(bucket(v)), v, "exact below 256");
        }
    }

    #[test]
    fn counts_verdicts_reorders_and_quantiles() {
        let d = |at, bit| Delivery {
            at_real_ns: at,
            corrupt_bit: bit,
            waited_real_ns: 0,
            waited_behind_data_real_ns: 0,
        };
        let mut t = Tally::default();
        assert_eq!(t.delay_quantile_ns(0.5), None);
        assert_eq!(t.offer(&Verdict::Drop(Drop::Loss)), 1);
        assert_eq!(t.offer(&Verdict::Drop(Drop::Queue)), 2);
        assert_eq!(t.offer(&Verdict::Drop(Drop::Down)), 3);
        let a = t.offer(&Verdict::Deliver {
            first: d(10, Some(3)),
            duplicate: Some(d(12, None)),
        });
        let b = t.offer(&Verdict::Deliver {
            first: d(5, None),
            duplicate: None,
        });
        t.deliver(b, 1_000);
        t.deliver(a, 2_000); // an earlier offer after a later one
        t.deliver(a, 3_000); // its duplicate: reordered as well
        t.flush(2);
        assert_eq!(
            (t.offered, t.lost, t.dropped_queue, t.dropped_down),
            (5, 1, 1, 3)
        );
        assert_eq!(
            (t.duplicated, t.corrupted, t.delivered, t.reordered),
            (1, 1, 3, 2)
        );
        assert_eq!(t.delay_mean_ns(), Some(2_000.0));
        let p50 = t.delay_quantile_ns(0.5).unwrap();
        assert!((2_000..=2_016).contains(&p50), "p50 {p50}");
        let p100 = t.delay_quantile_ns(1.0).unwrap();
        assert!((3_000..=3_024).contains(&p100), "max {p100}");
        assert!(t.delay_quantile_ns(0.0).unwrap() < 1_008);
        assert_eq!(t.delay_buckets(), 3);
        // Without the histogram: the same counts, the mean, no quantiles.
        let mut c = Tally::counts_only();
        let o = c.offer(&Verdict::Deliver {
            first: d(10, None),
            duplicate: None,
        });
        c.deliver(o, 1_000);
        assert_eq!((c.delivered, c.delay_mean_ns()), (1, Some(1_000.0)));
        assert_eq!((c.delay_quantile_ns(0.5), c.delay_buckets()), (None, 0));
    }
}
