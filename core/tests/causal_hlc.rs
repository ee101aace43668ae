//! Hybrid logical clock properties under random message exchanges between nodes whose
//! physical clocks are offset, drift and sometimes step backwards.

use std::num::NonZeroU64;

use lightcone_core::causal::{Hlc, HlcClock, HlcError};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MAX_OFFSET_NS: u64 = 1_000;

struct Node {
    clock: HlcClock,
    /// Offset of this node's physical clock from true time (may exceed the bound).
    offset_ns: i64,
    last_issued: Hlc,
    max_physical_read_ns: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hlc_is_monotonic_causal_and_bounded(seed in any::<u64>(), steps in 1usize..400) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut nodes: Vec<Node> = (0..4)
            .map(|_| Node {
                clock: HlcClock::new(NonZeroU64::new(MAX_OFFSET_NS).unwrap()),
                // Sometimes beyond the bound, so rejections happen.
                offset_ns: rng.gen_range(-1_500..1_500),
                last_issued: Hlc::ZERO,
                max_physical_read_ns: 0,
            })
            .collect();
        let mut in_flight: Vec<Hlc> = Vec::new();
        let mut true_ns: u64 = 10_000;
        for _ in 0..steps {
            true_ns += rng.gen_range(0..50);
            let i = rng.gen_range(0..nodes.len());
            let n = &mut nodes[i];
            // Physical readings: offset, plus occasional backwards steps of up to 200 ns.
            let jitter: i64 = if rng.gen_bool(0.1) { -rng.gen_range(0..200) } else { 0 };
            let pt = (true_ns as i64 + n.offset_ns + jitter).max(0) as u64;
            n.max_physical_read_ns = n.max_physical_read_ns.max(pt);
            let receive = !in_flight.is_empty() && rng.gen_bool(0.5);
            let result = if receive {
                let remote = in_flight.swap_remove(rng.gen_range(0..in_flight.len()));
                let before = n.clock.last();
                match n.clock.update(pt, remote) {
                    Ok(ts) => {
                        prop_assert!(ts > remote, "receive {} not after remote {}", ts, remote);
                        Some(ts)
                    }
                    Err(HlcError::RemoteTooFarAhead { ahead_ns, .. }) => {
                        prop_assert!(remote.physical_ns > pt + MAX_OFFSET_NS);
                        prop_assert_eq!(ahead_ns, remote.physical_ns - pt);
                        prop_assert_eq!(n.clock.last(), before, "rejection moved the clock");
                        None
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            } else {
                Some(n.clock.now(pt).unwrap())
            };
            if let Some(ts) = result {
                prop_assert!(ts > n.last_issued, "not monotonic: {} after {}", ts, n.last_issued);
                prop_assert!(ts.physical_ns >= pt, "behind physical time");
                // The bound: never further ahead of the largest local reading than the
                // accepted offset.
                prop_assert!(
                    ts.physical_ns <= n.max_physical_read_ns + MAX_OFFSET_NS,
                    "{} exceeds max physical {} + offset", ts, n.max_physical_read_ns
                );
                n.last_issued = ts;
                if !receive || rng.gen_bool(0.5) {
                    in_flight.push(ts);
                }
            }
        }
    }
}

#[test]
fn a_runaway_clock_cannot_drag_the_others() {
    let mut honest = HlcClock::new(NonZeroU64::new(MAX_OFFSET_NS).unwrap());
    let mut liar = HlcClock::new(NonZeroU64::new(MAX_OFFSET_NS).unwrap());
    for t in (0..100u64).map(|k| 1_000_000 + k * 10) {
        let forged = liar.now(t + 1_000_000_000).unwrap();
        assert!(honest.update(t, forged).is_err());
        let ts = honest.now(t).unwrap();
        assert_eq!(ts.physical_ns, t);
    }
}
