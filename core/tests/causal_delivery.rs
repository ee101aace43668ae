//! Causal delivery under random interleavings, duplication and buffer overflow, checked
//! against ground-truth dependencies tracked independently of vector clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use lightcone_core::causal::{CausalDelivery, CausalMessage, DeliveryError, Receipt};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Msg = CausalMessage<u32>;

struct Sim {
    nodes: Vec<CausalDelivery<u32>>,
    /// Ground truth: message id → ids it causally depends on.
    deps: BTreeMap<u32, BTreeSet<u32>>,
    /// Per node: ids delivered (or sent), in order.
    log: Vec<Vec<u32>>,
    /// Copies in flight: (destination, message).
    net: Vec<(usize, Msg)>,
    next_id: u32,
}

impl Sim {
    fn new(n: usize, max_pending: usize) -> Self {
        Self {
            nodes: (0..n)
                .map(|i| {
                    CausalDelivery::new(
                        i as u64,
                        NonZeroUsize::new(max_pending).unwrap(),
                        NonZeroUsize::new(n).unwrap(),
                    )
                    .with_log_capacity(100_000)
                })
                .collect(),
            deps: BTreeMap::new(),
            log: vec![Vec::new(); n],
            net: Vec::new(),
            next_id: 0,
        }
    }

    fn send(&mut self, from: usize) {
        let id = self.next_id;
        self.next_id += 1;
        // Everything `from` has delivered or sent, and their dependencies.
        let mut deps = BTreeSet::new();
        for &m in &self.log[from] {
            deps.insert(m);
            deps.extend(self.deps[&m].iter().copied());
        }
        self.deps.insert(id, deps);
        self.log[from].push(id);
        let msg = self.nodes[from].send(id);
        for to in 0..self.nodes.len() {
            if to != from {
                self.net.push((to, msg.clone()));
            }
        }
    }

    /// Deliver one copy.
    fn receive(&mut self, k: usize) -> Result<(), TestCaseError> {
        let (to, msg) = self.net.swap_remove(k);
        match self.nodes[to].receive(msg) {
            Ok(Receipt::Delivered(ms)) => {
                for m in ms {
                    let id = m.payload;
                    let seen: BTreeSet<u32> = self.log[to].iter().copied().collect();
                    prop_assert!(!seen.contains(&id), "node {} delivered {} twice", to, id);
                    let missing: Vec<u32> = self.deps[&id].difference(&seen).copied().collect();
                    prop_assert!(
                        missing.is_empty(),
                        "node {} delivered {} before its dependencies {:?}",
                        to,
                        id,
                        missing
                    );
                    self.log[to].push(id);
                }
            }
            Ok(Receipt::Buffered | Receipt::Duplicate) => {}
            // Refused for lack of space: dropped; the log repair below resends it.
            Err(DeliveryError::Overflow { .. }) => {}
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        }
        Ok(())
    }
}

fn run(
    seed: u64,
    nodes: usize,
    steps: usize,
    max_pending: usize,
    loss: f64,
) -> Result<Sim, TestCaseError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sim = Sim::new(nodes, max_pending);
    for _ in 0..steps {
        if sim.net.is_empty() || rng.gen_bool(0.3) {
            sim.send(rng.gen_range(0..nodes));
        } else {
            let k = rng.gen_range(0..sim.net.len());
            if rng.gen_bool(0.1) {
                // Duplicate the copy.
                let dup = sim.net[k].clone();
                sim.net.push(dup);
            }
            if rng.gen_bool(loss) {
                sim.net.swap_remove(k);
            } else {
                sim.receive(k)?;
            }
        }
    }
    // Drain: with retransmission of refused copies and repair of lost ones from the logs
    // (peers compare delivered vectors), everything must get through.
    let mut budget = 100_000;
    loop {
        while !sim.net.is_empty() {
            budget -= 1;
            prop_assert!(budget > 0, "delivery did not finish");
            let k = rng.gen_range(0..sim.net.len());
            sim.receive(k)?;
        }
        for from in 0..nodes {
            for to in 0..nodes {
                if from != to {
                    let copies: Vec<Msg> = sim.nodes[from]
                        .missing_from(sim.nodes[to].delivered())
                        .cloned()
                        .collect();
                    sim.net.extend(copies.into_iter().map(|m| (to, m)));
                }
            }
        }
        if sim.net.is_empty() {
            break;
        }
    }
    for (i, log) in sim.log.iter().enumerate() {
        prop_assert_eq!(
            log.len(),
            sim.next_id as usize,
            "node {} missed messages",
            i
        );
        prop_assert_eq!(sim.nodes[i].pending_len(), 0);
        prop_assert!(sim.nodes[i].blocked_on().is_empty());
    }
    Ok(sim)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn never_delivers_out_of_causal_order(seed in any::<u64>(), steps in 1usize..300) {
        run(seed, 4, steps, 10_000, 0.0)?;
    }

    #[test]
    fn lost_messages_are_repaired_without_breaking_causal_order(seed in any::<u64>(), steps in 1usize..300) {
        run(seed, 4, steps, 10_000, 0.3)?;
    }

    #[test]
    fn a_tiny_buffer_refuses_but_never_reorders_or_loses(seed in any::<u64>(), steps in 1usize..200) {
        run(seed, 3, steps, 2, 0.0)?;
    }
}

#[test]
fn the_same_seed_delivers_in_the_same_order() {
    let a = run(7, 5, 400, 16, 0.1).unwrap();
    let b = run(7, 5, 400, 16, 0.1).unwrap();
    assert_eq!(a.log, b.log);
}
