//! Warm-up: the timeline starts once every node sees each of its cell peers as a member
//! not held dead (alive, or suspect: a suspicion is a check in progress, not a verdict, and
//! at 10^4 tiles some member is always under one somewhere) and has a route to every
//! destination of its table (a fresh lab's first messages across levels were lost
//! for want of routes: ~2 % of a load's messages), or after [`WARMUP_MAX`] regardless.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::super::expect;
use super::super::record::{Recording, StatePoll};
use super::poll::poll_state;
use super::{cell_key, LabView};
use crate::client::Client;
use crate::lab::LabStatus;
use crate::parse::units;

/// Longest real wait for the cell's membership to converge before the timeline starts.
const WARMUP_MAX: Duration = Duration::from_secs(30);

/// Waits until membership and routes converged (or [`WARMUP_MAX`] passed), saying which.
pub(super) fn wait(
    api: &Client,
    lab: &LabView,
    status: &LabStatus,
    progress: &mut impl FnMut(&str),
) {
    let warm = Instant::now();
    let probe = Recording {
        time_scale: lab.ts,
        addrs: lab.addrs.clone(),
        ..Default::default()
    };
    loop {
        let polls: Vec<(StatePoll, BTreeSet<String>)> = lab
            .names
            .iter()
            .filter_map(|n| {
                let (poll, _) = poll_state(api, n, 0, warm)?;
                let routes = poll.routes.iter().cloned().collect();
                Some((poll, routes))
            })
            .collect();
        let states: Vec<StatePoll> = polls.iter().map(|(p, _)| p.clone()).collect();
        let ids: BTreeMap<String, u32> = states.iter().map(|p| (p.node.clone(), p.id)).collect();
        let missing = polls.iter().find_map(|(p, routes)| {
            let want = expected_routes(&lab.addrs, &ids, &p.node);
            want.difference(routes)
                .next()
                .map(|d| format!("{} has no route to {d}", p.node))
        });
        let complete = polls.len() == lab.names.len() && ids.len() == lab.names.len();
        if complete && converged(&probe, &states) && missing.is_none() {
            progress(&format!(
                "membership and routes converged after {:.1}s real; starting the timeline",
                warm.elapsed().as_secs_f64()
            ));
            return;
        }
        if warm.elapsed() > WARMUP_MAX {
            // Routes across light-minute links take a few one-way delays to form.
            let longest = status.links.iter().map(|l| l.delay_s).fold(0.0, f64::max);
            progress(&format!(
                "not converged within {}s real ({}; the longest link is {} one way, {:.1}s real); starting anyway",
                WARMUP_MAX.as_secs(),
                missing.unwrap_or_else(|| "membership".into()),
                units::fmt_ns((longest * 1e9) as u64),
                longest / lab.ts
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The destinations `node`'s routing table must hold, as the agent names them: the table
/// key of every other node ([`routing::node_key`](lightcone_core::routing::node_key)).
/// Authorities (cluster 65535, a cell each) have no route to each other's cells: that pair
/// is left out.
pub(crate) fn expected_routes(
    addrs: &BTreeMap<String, String>,
    ids: &BTreeMap<String, u32>,
    node: &str,
) -> BTreeSet<String> {
    let Some(&me) = ids.get(node) else {
        return BTreeSet::new();
    };
    addrs
        .keys()
        .filter_map(|m| expect::route_key(addrs, node, me, m, *ids.get(m)?))
        .collect()
}

/// Whether every polled node sees every polled node of its cell as a member, alive or
/// suspect (not dead, not unknown).
pub(crate) fn converged(rec: &Recording, polls: &[StatePoll]) -> bool {
    let ids: BTreeMap<&str, u32> = polls.iter().map(|p| (p.node.as_str(), p.id)).collect();
    polls.iter().all(|p| {
        let cell = rec.addrs.get(&p.node).map(|a| cell_key(a));
        polls
            .iter()
            .filter(|q| q.node != p.node && rec.addrs.get(&q.node).map(|a| cell_key(a)) == cell)
            .all(|q| {
                p.members.iter().any(|m| {
                    Some(&m.id) == ids.get(q.node.as_str())
                        && (m.state == "alive" || m.state == "suspect")
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::record::MemberObs;

    #[test]
    fn a_suspect_member_counts_as_converged_a_dead_or_unknown_one_does_not() {
        let addrs: BTreeMap<String, String> =
            [("t0", "0.0.0.0"), ("t1", "0.0.0.1"), ("u0", "0.0.1.0")]
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect();
        let rec = Recording {
            addrs,
            ..Default::default()
        };
        let poll = |node: &str, id: u32, members: &[(u32, &str)]| StatePoll {
            node: node.into(),
            id,
            members: members
                .iter()
                .map(|(id, state)| MemberObs {
                    id: *id,
                    state: state.to_string(),
                    incarnation: 0,
                    since_emulated_s: 0.0,
                })
                .collect(),
            round: 0,
            t_real_s: 0.0,
            now_emulated_s: 0.0,
            quarantine: vec![],
            routes: vec![],
            pulsar_missed: None,
            shards: None,
            keys: Default::default(),
        };
        let with = |t0_sees_t1: Option<&str>| {
            let t0: Vec<(u32, &str)> = t0_sees_t1.map(|s| (1, s)).into_iter().collect();
            vec![
                poll("t0", 0, &t0),
                poll("t1", 1, &[(0, "alive")]),
                // another cell: u0 needs no member
                poll("u0", 2, &[]),
            ]
        };
        assert!(converged(&rec, &with(Some("alive"))));
        assert!(converged(&rec, &with(Some("suspect"))));
        assert!(!converged(&rec, &with(Some("dead"))));
        assert!(!converged(&rec, &with(None)));
    }

    #[test]
    fn expected_routes_follow_the_hierarchy_and_skip_authority_pairs() {
        let addrs: BTreeMap<String, String> = [
            ("t0", "0.0.0.0"),
            ("t1", "0.0.0.1"),
            ("u0", "0.0.1.0"),
            ("v0", "0.1.0.0"),
            ("w0", "1.0.0.0"),
            ("a0", "0.65535.65535.0"),
            ("a1", "0.65535.65534.0"),
        ]
        .iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect();
        let ids: BTreeMap<String, u32> = addrs
            .keys()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let got =
            |n: &str| -> Vec<String> { expected_routes(&addrs, &ids, n).into_iter().collect() };
        let t1 = ids["t1"];
        assert_eq!(
            got("t0"),
            [
                "cell:0.0.1".to_string(),
                "cluster:0.1".into(),
                "cluster:0.65535".into(),
                "layer:1".into(),
                format!("node:{t1}"),
            ]
        );
        // An authority: the layer's clusters and the other layers, not the other authority.
        assert_eq!(
            got("a0"),
            [
                "cluster:0.0".to_string(),
                "cluster:0.1".into(),
                "layer:1".into()
            ]
        );
    }
}
