//! Experiments without a lab: scenario parse errors with positions (snapshots), timeline
//! expansion determinism, expectation evaluation on hand-made recordings.

use std::collections::BTreeMap;
use std::path::Path;

use lightcone::experiment::expect::{FinalRead, Mark, MemberObs, StatePoll};
use lightcone::experiment::scenario::{self, ScenarioError};
use lightcone::experiment::{evaluate, expand, Recording};
use lightcone::topology;
use lightcone_core::causal::checker::{HistoryOp, OpKind, OpStatus};

fn errors(src: &str) -> String {
    match scenario::parse_str(src, "s.yaml", Path::new(".")) {
        Err(ScenarioError::Invalid { rendered, .. }) => rendered,
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => panic!("{e}"),
    }
}

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn unknown_verb_has_position_and_suggestion() {
    insta::assert_snapshot!(errors(
        "topology: ../cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, crashh: a }\n"
    ));
}

#[test]
fn bad_units_and_missing_fields_are_all_reported() {
    insta::assert_snapshot!(errors(
        "topology: ../cell.yaml\nduration: 10 parsecs\ntimeline:\n  - { crash: a }\n  - { at: 2s, churn: { rate: 5%, year: 10s, until: 1s } }\n  - { at: 3s, flap: { link: [a], period: 0s, until: 9s } }\nexpect:\n  - detection_tme <= 10s\n  - locality >= 99.99\n"
    ));
}

#[test]
fn step_after_end_and_two_verbs() {
    insta::assert_snapshot!(errors(
        "topology: x.yaml\nduration: 10s\ntimeline:\n  - { at: 11s, heal: }\n  - { at: 1s, crash: a, restart: a }\n"
    ));
}

#[test]
fn shipped_scenarios_parse_and_expand() {
    let dir = repo().join("topologies/scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("yaml") {
            continue;
        }
        let (sc, topo, plan) = lightcone::experiment::prepare(&p, None)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!plan.is_empty(), "{}: empty timeline", p.display());
        assert!(!sc.expect.is_empty(), "{}: no expectations", p.display());
        assert!(
            plan.iter().all(|a| a.at_ns <= sc.duration_ns),
            "{}",
            p.display()
        );
        let _ = topo;
        n += 1;
    }
    assert!(n >= 3, "only {n} shipped scenarios");
}

const CHURN: &str = "topology: ../cell.yaml\nseed: 11\nduration: 120s\ntimeline:\n  - { at: 0s, churn: { rate: 5%/year, year: 10s, until: 100s, nodes: \"l0c0k0*\", replace_after: 15s } }\n  - { at: 5s, flap: { link: [l0c0k0t1, l0c0k0t2], period: 4s, duty: 75%, until: 30s, jitter: 1s } }\nexpect:\n  - detection_time < 10s\n";

fn expanded(src: &str, seed: Option<u64>) -> String {
    let dir = repo().join("topologies/scenarios");
    let mut sc = scenario::parse_str(src, "churn.yaml", &dir).unwrap();
    if let Some(s) = seed {
        sc.seed = s;
    }
    let topo = topology::load(&repo().join("topologies/cell.yaml")).unwrap();
    serde_json::to_string(&expand(&sc, &topo).unwrap()).unwrap()
}

/// `expanded`'s expansion error, as the CLI shows it.
fn expanded_err(src: &str) -> String {
    let dir = repo().join("topologies/scenarios");
    let sc = scenario::parse_str(src, "s.yaml", &dir).unwrap();
    let topo = topology::load(&repo().join("topologies/cell.yaml")).unwrap();
    match expand(&sc, &topo) {
        Ok(_) => panic!("expected an expansion error for:\n{src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn expansion_is_a_function_of_the_seed() {
    let a = expanded(CHURN, None);
    assert_eq!(a, expanded(CHURN, None), "same seed, different timeline");
    assert_ne!(a, expanded(CHURN, Some(12)), "the seed does not matter");
    let v: Vec<serde_json::Value> = serde_json::from_str(&a).unwrap();
    let crashes = v.iter().filter(|x| x["action"] == "crash").count();
    let restarts = v.iter().filter(|x| x["action"] == "restart").count();
    // 12 tiles × 10 compressed years at 5 %/year: ~6 failures expected; far from 0 or 100.
    assert!((1..=20).contains(&crashes), "{crashes} crashes");
    assert_eq!(crashes, restarts);
    // Flap: 75 % up of each 4 s period from 5 s to 30 s → 7 down/up pairs.
    let downs = v.iter().filter(|x| x["action"] == "link_down").count();
    assert_eq!(downs, 7);
    let times: Vec<u64> = v.iter().map(|x| x["at_ns"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not time-ordered");
}

#[test]
fn partition_cuts_only_links_between_groups_and_heal_restores_them() {
    let src = "topology: ../cell.yaml\nduration: 20s\ntimeline:\n  - { at: 1s, partition: [[\"l0c0k0t1\", l0c0k0t2, l0c0k0t3]] }\n  - { at: 5s, heal: }\nexpect: [causal_anomalies == 0]\n";
    let v: Vec<serde_json::Value> = serde_json::from_str(&expanded(src, None)).unwrap();
    let down: Vec<String> = v
        .iter()
        .filter(|x| x["action"] == "link_down")
        .map(|x| format!("{}--{}", x["a"].as_str().unwrap(), x["b"].as_str().unwrap()))
        .collect();
    assert_eq!(down, ["l0c0k0t0--l0c0k0t1", "l0c0k0t3--l0c0k0t4"]);
    let up = v.iter().filter(|x| x["action"] == "link_up").count();
    assert_eq!(up, 2);
}

#[test]
fn hierarchical_prefixes_stop_at_boundaries() {
    let s = scenario::Selector("l1*".into());
    assert!(s.matches("l1c0k0t0"));
    assert!(!s.matches("l10c0k0t0"));
    assert!(scenario::Selector("*".into()).matches("anything"));
    assert!(!scenario::Selector("l1c0".into()).matches("l1c0k0t0"));
}

fn ex(text: &str) -> lightcone::experiment::Expectation {
    lightcone::experiment::expect::parse(text).unwrap()
}

fn poll(round: u32, t: f64, node: &str, id: u32, members: &[(u32, &str, f64)]) -> StatePoll {
    // Each node's emulated clock = real time + 100 s (it started earlier), time_scale 1.
    StatePoll {
        round,
        t_real_s: t,
        node: node.into(),
        id,
        now_emulated_s: t + 100.0,
        members: members
            .iter()
            .map(|(id, s, since)| MemberObs {
                id: *id,
                state: s.to_string(),
                incarnation: 0,
                since_emulated_s: *since,
            })
            .collect(),
        quarantine: Vec::new(),
        routes: Vec::new(),
        pulsar_missed: None,
        shards: None,
        keys: Default::default(),
    }
}

fn rec() -> Recording {
    let mut addrs = BTreeMap::new();
    for (n, a) in [
        ("a", "0.0.0.0"),
        ("b", "0.0.0.1"),
        ("c", "0.0.0.2"),
        ("z", "0.1.0.0"),
    ] {
        addrs.insert(n.to_string(), a.to_string());
    }
    Recording {
        time_scale: 1.0,
        addrs,
        real_s: 30.0,
        cores: 2,
        ..Default::default()
    }
}

#[test]
fn detection_time_is_the_slowest_cell_peer_from_its_own_clock() {
    let mut r = rec();
    r.marks.push(Mark {
        t_real_s: 10.0,
        kind: "crash".into(),
        node: Some("c".into()),
        groups: Vec::new(),
    });
    r.polls = vec![
        poll(1, 5.0, "c", 2, &[]),
        poll(1, 5.0, "z", 9, &[]),
        poll(2, 12.0, "a", 0, &[(2, "suspect", 111.0)]),
        poll(2, 12.0, "b", 1, &[(2, "dead", 111.5)]),
        // a reports dead at emulated 114.2 = real 14.2 → 4.2 s after the crash.
        poll(3, 15.0, "a", 0, &[(2, "dead", 114.2)]),
    ];
    let v = evaluate(&[ex("detection_time <= 5s")], &r);
    assert!(v[0].pass, "{v:?}");
    assert!((v[0].value.unwrap() - 4.2).abs() < 1e-6, "{v:?}");
    // With 1 ms the same data fails (the report never passes what it measured as slower).
    let v = evaluate(&[ex("detection_time <= 1ms")], &r);
    assert!(!v[0].pass);
    assert_eq!(v[0].measured, "4.2s");
}

#[test]
fn a_peer_that_never_reports_makes_detection_infinite() {
    let mut r = rec();
    r.marks.push(Mark {
        t_real_s: 10.0,
        kind: "crash".into(),
        node: Some("c".into()),
        groups: Vec::new(),
    });
    r.polls = vec![
        poll(1, 5.0, "c", 2, &[]),
        poll(2, 12.0, "a", 0, &[(2, "dead", 111.0)]),
        poll(2, 12.0, "b", 1, &[(2, "alive", 50.0)]),
    ];
    let (v, why) = r.detection_time();
    assert_eq!(v, Some(f64::INFINITY));
    assert!(why.contains("b never reported c dead"), "{why}");
}

#[test]
fn nothing_measured_fails() {
    let r = rec();
    for e in [
        "detection_time < 10s",
        "converged_after_heal <= 10s",
        "causal_anomalies == 0",
        "locality > 99.99%",
        "no_acknowledged_write_lost",
    ] {
        let v = evaluate(&[ex(e)], &r);
        assert!(!v[0].pass, "{e} passed on no data");
        assert_eq!(v[0].measured, "not measured");
    }
}

fn w(p: u32, key: &str, v: &str, s: u64, e: u64, st: OpStatus) -> HistoryOp {
    HistoryOp {
        process: p,
        node: None,
        key: key.into(),
        op: OpKind::Write { value: v.into() },
        status: st,
        dot: None,
        context: None,
        start_ns: s,
        end_ns: e,
    }
}

fn rd(p: u32, key: &str, vals: &[&str], s: u64, e: u64) -> HistoryOp {
    HistoryOp {
        process: p,
        node: None,
        key: key.into(),
        op: OpKind::Read {
            values: vals.iter().map(|v| v.to_string()).collect(),
        },
        status: OpStatus::Ok,
        dot: None,
        context: None,
        start_ns: s,
        end_ns: e,
    }
}

#[test]
fn causal_anomalies_come_from_the_agents_checker() {
    let mut r = rec();
    // Process 1 writes x=1 then reads x and gets nothing: read-your-writes broken.
    r.history = vec![w(1, "x", "1", 0, 10, OpStatus::Ok), rd(1, "x", &[], 20, 30)];
    let (n, why) = r.causal_anomalies();
    assert_eq!(n, Some(1.0), "{why}");
    r.history = vec![
        w(1, "x", "1", 0, 10, OpStatus::Ok),
        rd(1, "x", &["1"], 20, 30),
    ];
    assert_eq!(r.causal_anomalies().0, Some(0.0));
}

/// A final read of `key` at `node`: values with their dots, and the key's context.
fn fr(
    node: &str,
    key: &str,
    held: &[(&str, lightcone_core::causal::Dot)],
    seen: &[lightcone_core::causal::Dot],
) -> FinalRead {
    let mut context = lightcone_core::causal::DotContext::new();
    for d in seen.iter().chain(held.iter().map(|(_, d)| d)) {
        context.insert(*d);
    }
    FinalRead {
        node: node.into(),
        key: key.into(),
        values: held.iter().map(|(v, _)| v.to_string()).collect(),
        dots: held.iter().map(|(_, d)| *d).collect(),
        context: Some(context),
    }
}

fn dotted(mut o: HistoryOp, node: u64, counter: u64) -> HistoryOp {
    o.dot = Some(lightcone_core::causal::Dot { node, counter });
    o
}

#[test]
fn lost_writes_follow_causal_contexts_only() {
    use lightcone_core::causal::Dot;
    let (a1, b1, c1, a2) = (
        Dot::new(1, 1),
        Dot::new(2, 1),
        Dot::new(3, 1),
        Dot::new(1, 2),
    );
    let mut r = rec();
    // Three writes to x, each one after the previous completed, by three replicas; and y.
    r.history = vec![
        dotted(w(1, "x", "1", 0, 10, OpStatus::Ok), 1, 1),
        dotted(w(2, "x", "2", 20, 30, OpStatus::Ok), 2, 1),
        dotted(w(3, "x", "3", 40, 50, OpStatus::Ok), 3, 1),
        dotted(w(1, "y", "4", 0, 10, OpStatus::Ok), 1, 2),
        w(1, "z", "5", 0, 10, OpStatus::Info),
    ];
    // Legitimately overwritten: the replicas that wrote 2 and 3 had seen 1 and 2, so the
    // final value's context covers them; y is held by b only; z was never acknowledged.
    r.final_reads = vec![
        fr("a", "x", &[("3", c1)], &[a1, b1]),
        fr("a", "y", &[], &[]),
        fr("b", "y", &[("4", a2)], &[]),
    ];
    let (n, why) = r.acknowledged_writes_lost();
    assert_eq!(n, Some(0.0), "{why}");
    assert!(
        why.contains("4 acknowledged writes (4 at durability cell, 0 local)"),
        "{why}"
    );
    // The mutation: write 3 was taken by a replica that had never seen write 2 (its context
    // holds 1 only), and no replica holds 2. Two later writes to x exist, and 2 is still
    // lost: it is flagged.
    r.final_reads[0] = fr("a", "x", &[("3", c1)], &[a1]);
    let (n, why) = r.acknowledged_writes_lost();
    assert_eq!(n, Some(1.0), "{why}");
    assert!(why.contains("x=2") && !why.contains("x=1"), "{why}");
    // Another running replica still holding 2 (a concurrent sibling there) keeps it.
    r.final_reads
        .push(fr("b", "x", &[("2", b1), ("3", c1)], &[a1]));
    assert_eq!(r.acknowledged_writes_lost().0, Some(0.0));
    // Nobody has y any more: lost.
    r.final_reads.retain(|f| f.key != "y");
    let (n, why) = r.acknowledged_writes_lost();
    assert_eq!(n, Some(1.0));
    assert!(why.contains("y=4"), "{why}");
    // An acknowledged write without a recorded dot cannot be checked: counted lost.
    r.history.push(w(4, "x", "6", 60, 70, OpStatus::Ok));
    r.final_reads.push(fr("a", "y", &[("4", a2)], &[]));
    let (n, why) = r.acknowledged_writes_lost();
    assert_eq!(n, Some(1.0), "{why}");
    assert!(why.contains("x=6 (no dot recorded)"), "{why}");
}

#[test]
fn a_local_write_lost_in_a_crash_is_reported_lost_and_counted_as_local() {
    use lightcone_core::causal::Dot;
    let mut r = rec();
    // k=1 was written `local` at a node that crashed before it spread: no running replica
    // holds it. k=2 (`cell`) reached the others.
    r.history = vec![
        dotted(w(1, "k", "1", 0, 10, OpStatus::Ok), 9, 1),
        dotted(w(2, "k", "2", 0, 10, OpStatus::Ok), 8, 1),
    ];
    r.local_writes.insert(("k".into(), "1".into()));
    r.final_reads = vec![
        fr("a", "k", &[("2", Dot::new(8, 1))], &[]),
        fr("b", "k", &[("2", Dot::new(8, 1))], &[]),
    ];
    let (n, why) = r.acknowledged_writes_lost();
    assert_eq!(n, Some(1.0), "{why}");
    assert!(
        why.contains("(1 at durability cell, 1 local)")
            && why.contains("lost 1 (0 cell, 1 local): k=1"),
        "{why}"
    );
}

#[test]
fn locality_lateness_and_overhead_from_metrics() {
    let mut r = rec();
    let s = |name: &str, labels: &[(&str, &str)], v: f64| {
        (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            v,
        )
    };
    let loc = "lightcone_locality_bytes_total";
    let lat = "lightcone_timer_lateness_seconds_bucket";
    r.metrics_start = vec![
        s(
            loc,
            &[("node", "a"), ("level", "cell"), ("scope", "local")],
            1000.0,
        ),
        s(
            loc,
            &[("node", "a"), ("level", "cell"), ("scope", "remote")],
            0.0,
        ),
    ];
    r.metrics_end = vec![
        s(
            loc,
            &[("node", "a"), ("level", "cell"), ("scope", "local")],
            1_000_999.0,
        ),
        s(
            loc,
            &[("node", "a"), ("level", "cell"), ("scope", "remote")],
            1.0,
        ),
        // b restarted: its counter went down; the end value is its increase.
        s(
            loc,
            &[("node", "b"), ("level", "cell"), ("scope", "local")],
            1000.0,
        ),
        s(lat, &[("node", "a"), ("le", "0.001")], 980.0),
        s(lat, &[("node", "a"), ("le", "0.01")], 995.0),
        s(lat, &[("node", "a"), ("le", "+Inf")], 1000.0),
    ];
    let (l, _) = r.locality();
    assert!((l.unwrap() - 1_000_999.0 / 1_001_000.0).abs() < 1e-12);
    assert_eq!(r.timer_lateness_p99().0, Some(0.01));
    // Overhead: the busiest agent's share of one core; a short-lived process (under 2 s
    // observed) is left out, whatever its share.
    r.agent_cpu_s = Some(1.2);
    assert_eq!(r.overhead().0, None, "no per-agent samples");
    r.agent_cpu = vec![
        ("a".into(), 0.3, 30.0),
        ("b".into(), 0.6, 30.0),
        ("c".into(), 1.0, 1.5),
    ];
    let (o, why) = r.overhead();
    assert!((o.unwrap() - 0.02).abs() < 1e-12, "{why}");
    assert!(why.contains("busiest agent b 2.00 %"), "{why}");
    assert!(why.contains("mean 1.50 % over 2 agents"), "{why}");
}

#[test]
fn converged_after_heal_uses_the_last_alive_change() {
    let mut r = rec();
    r.addrs.remove("z");
    r.addrs.remove("c");
    r.marks.push(Mark {
        t_real_s: 10.0,
        kind: "heal".into(),
        node: None,
        groups: Vec::new(),
    });
    r.polls = vec![
        poll(1, 9.0, "a", 0, &[(1, "dead", 105.0)]),
        poll(1, 9.0, "b", 1, &[(0, "dead", 105.0)]),
        poll(2, 12.0, "a", 0, &[(1, "alive", 111.0)]),
        poll(2, 12.0, "b", 1, &[(0, "dead", 105.0)]),
        poll(3, 14.0, "a", 0, &[(1, "alive", 111.0)]),
        poll(3, 14.0, "b", 1, &[(0, "alive", 113.5)]),
    ];
    // Routes inside the cell are keyed by node.
    for p in &mut r.polls {
        p.routes = vec![format!("node:{}", 1 - p.id)];
    }
    let (v, _) = r.converged_after_heal();
    assert!((v.unwrap() - 3.5).abs() < 1e-9, "{v:?}");
}

#[test]
fn clock_verbs_expand_to_clock_requests_and_bad_ones_are_refused() {
    let src = "topology: ../cell.yaml\nduration: 20s\ntimeline:\n  - { at: 1s, clock_step: { node: l0c0k0t1, offset: -2ms } }\n  - { at: 2s, clock_drift: { node: l0c0k0t2, ppb: 50 } }\n  - { at: 3s, stratum0_compromise: { node: l0a0, offset: 50ms } }\n  - { at: 4s, pulsar_loss: { node: l0c0k0t3 } }\nexpect: [timer_lateness_p99 <= 1s]\n";
    let v: Vec<serde_json::Value> = serde_json::from_str(&expanded(src, None)).unwrap();
    let got: Vec<(String, String, serde_json::Value)> = v
        .iter()
        .map(|x| {
            assert_eq!(x["action"], "clock", "{x}");
            (
                x["verb"].as_str().unwrap().to_string(),
                x["node"].as_str().unwrap().to_string(),
                x["request"].clone(),
            )
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        got,
        [
            (
                "clock_step".into(),
                "l0c0k0t1".into(),
                json!({"step_ns": -2e6})
            ),
            (
                "clock_drift".into(),
                "l0c0k0t2".into(),
                json!({"drift_ppb": 50.0})
            ),
            (
                "stratum0_compromise".into(),
                "l0a0".into(),
                json!({"serve_bias_ns": 5e7})
            ),
            (
                "pulsar_loss".into(),
                "l0c0k0t3".into(),
                json!({"pulsar_loss": true})
            ),
        ]
    );
    let e = errors("topology: ../cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, clock_drift: { node: a, ppb: fast } }\n  - { at: 2s, stratum0_compromise: { node: l0a0, offset: 5s } }\n  - { at: 3s, clock_step: { node: a } }\n");
    assert!(e.contains("ppb must be a number"), "{e}");
    assert!(e.contains("out of range"), "{e}");
    assert!(e.contains("clock_step needs `offset`"), "{e}");
    // A compromise needs an authority.
    let dir = repo().join("topologies/scenarios");
    let sc = scenario::parse_str(
        "topology: ../cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, stratum0_compromise: { node: l0c0k0t1, offset: 1ms } }\nexpect: [timer_lateness_p99 <= 1s]\n",
        "s.yaml",
        &dir,
    )
    .unwrap();
    let topo = topology::load(&repo().join("topologies/cell.yaml")).unwrap();
    let err = expand(&sc, &topo).unwrap_err().to_string();
    assert!(err.contains("is not one"), "{err}");
}

#[test]
fn time_alarms_and_coverage_from_metrics() {
    let mut r = rec();
    let s = |name: &str, node: &str, v: f64| {
        (
            name.to_string(),
            BTreeMap::from([("node".to_string(), node.to_string())]),
            v,
        )
    };
    let alarms = "lightcone_time_alarms_total";
    let cov = "lightcone_time_coverage_ratio";
    assert_eq!(
        r.time_alarmed_nodes(None).0,
        None,
        "nothing exported: not measured"
    );
    assert_eq!(r.time_coverage().0, None);
    // a alarmed before the run only; b during it; c restarted (counter reset) and alarmed.
    r.metrics_start = vec![
        s(alarms, "a", 1.0),
        s(alarms, "b", 0.0),
        s(alarms, "c", 3.0),
    ];
    r.metrics_end = vec![
        s(alarms, "a", 1.0),
        s(alarms, "b", 2.0),
        s(alarms, "c", 1.0),
        s(cov, "a", 1.0),
        s(cov, "b", 0.75),
        s(cov, "c", f64::NAN),
    ];
    let (n, detail) = r.time_alarmed_nodes(None);
    assert_eq!(n, Some(2.0), "{detail}");
    assert!(detail.contains("b c"), "{detail}");
    let (c, detail) = r.time_coverage();
    assert_eq!(c, Some(0.75));
    assert!(detail.contains('b'), "{detail}");
}

#[test]
fn byzantine_verb_expands_and_bad_behaviours_are_refused() {
    let src = "topology: ../cell.yaml\nduration: 20s\ntimeline:\n  - { at: 1s, byzantine: { node: l0c0k0t4, behaviour: [lie_membership, drop_forwarding] } }\n  - { at: 5s, byzantine: { node: l0c0k0t4, behaviour: [] } }\n  - { at: 6s, byzantine: { node: l0c0k0t5, behaviour: drop_forwarding } }\nexpect: [quarantine_time <= 10s, false_quarantines == 0]\n";
    let v: Vec<serde_json::Value> = serde_json::from_str(&expanded(src, None)).unwrap();
    let got: Vec<(String, serde_json::Value)> = v
        .iter()
        .map(|x| {
            assert_eq!(x["action"], "byzantine", "{x}");
            (
                x["node"].as_str().unwrap().to_string(),
                x["behaviour"].clone(),
            )
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        got,
        [
            (
                "l0c0k0t4".into(),
                json!(["lie_membership", "drop_forwarding"])
            ),
            ("l0c0k0t4".into(), json!([])),
            ("l0c0k0t5".into(), json!(["drop_forwarding"])),
        ]
    );
    let e = errors("topology: ../cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, byzantine: { node: a, behaviour: [eat_cake] } }\n  - { at: 2s, byzantine: { node: a } }\n");
    assert!(
        e.contains("s.yaml:4:") && e.contains("unknown byzantine behaviour \"eat_cake\""),
        "{e}"
    );
    assert!(e.contains("known: lie_membership, drop_forwarding"), "{e}");
    assert!(e.contains("byzantine needs `behaviour`"), "{e}");
}

fn quarantine_poll(round: u32, t: f64, node: &str, id: u32, q: &[u32]) -> StatePoll {
    let mut p = poll(round, t, node, id, &[]);
    p.quarantine = q.to_vec();
    p
}

#[test]
fn quarantine_time_waits_for_every_cell_peer_and_honest_quarantines_are_counted() {
    let mut r = rec();
    r.marks.push(Mark {
        t_real_s: 10.0,
        kind: "byzantine".into(),
        node: Some("c".into()),
        groups: Vec::new(),
    });
    r.polls = vec![
        quarantine_poll(1, 5.0, "c", 2, &[]),
        quarantine_poll(1, 5.0, "z", 9, &[]),
        quarantine_poll(2, 12.0, "a", 0, &[2]),
        quarantine_poll(2, 12.0, "b", 1, &[]),
        quarantine_poll(3, 15.0, "a", 0, &[2]),
        quarantine_poll(3, 15.5, "b", 1, &[2]),
    ];
    let (v, why) = r.quarantine_time();
    assert_eq!(v, Some(5.5), "{why}");
    assert!(why.contains("quarantined by all 2 cell peers"), "{why}");
    assert_eq!(r.false_quarantines().0, Some(0.0));
    // b also quarantines a, which was never byzantine: one false quarantine.
    r.polls.push(quarantine_poll(4, 20.0, "b", 1, &[2, 0]));
    let (f, why) = r.false_quarantines();
    assert_eq!(f, Some(1.0));
    assert!(why.contains("b quarantined a"), "{why}");
    // A peer that never quarantines makes it infinite, and says who.
    r.polls
        .retain(|p| !(p.node == "b" && p.quarantine.contains(&2)));
    let (v, why) = r.quarantine_time();
    assert_eq!(v, Some(f64::INFINITY));
    assert!(why.contains("not by: b"), "{why}");
    // "Honest again" marks are not byzantine nodes to quarantine.
    let mut r = rec();
    r.marks.push(Mark {
        t_real_s: 1.0,
        kind: "honest".into(),
        node: Some("c".into()),
        groups: Vec::new(),
    });
    assert_eq!(r.quarantine_time().0, None);
}

fn key_poll(round: u32, t: f64, node: &str, id: u32, revoked: &[u32], delivered: u64) -> StatePoll {
    let mut p = poll(round, t, node, id, &[]);
    p.keys.revoked = revoked.to_vec();
    p.keys.revoked_delivered = delivered;
    p.keys.refused = 3 * u64::from(!revoked.is_empty());
    p
}

/// Issue 17's key compromise: `revocation_time` waits for every running cell peer of the
/// revoked node (not the node itself), `false_revocations` counts keys revoked that no
/// `revoke` asked for, `revoked_key_accepted` sums each node's highest count of data
/// delivered from a revoked sender; each fails on a recording made to fail it.
#[test]
fn revocation_metrics_wait_for_every_cell_peer_and_count_what_went_wrong() {
    let mut r = rec();
    r.marks.push(Mark {
        t_real_s: 10.0,
        kind: "revoke".into(),
        node: Some("c".into()),
        groups: Vec::new(),
    });
    r.polls = vec![
        key_poll(1, 5.0, "c", 2, &[], 0),
        key_poll(1, 5.0, "z", 9, &[], 0),
        key_poll(2, 12.0, "a", 0, &[2], 0),
        key_poll(2, 12.0, "b", 1, &[], 0),
        key_poll(3, 14.0, "a", 0, &[2], 0),
        key_poll(3, 14.5, "b", 1, &[2], 0),
        // c never hears it (its frames are refused): it does not count.
        key_poll(3, 14.5, "c", 2, &[], 0),
    ];
    let (v, why) = r.revocation_time();
    assert_eq!(v, Some(4.5), "{why}");
    assert!(why.contains("revoked by all 2 cell peers"), "{why}");
    assert!(why.contains("6 frames refused"), "{why}");
    let v = evaluate(
        &[
            ex("revocation_time <= 5s"),
            ex("false_revocations == 0"),
            ex("revoked_key_accepted == 0"),
        ],
        &r,
    );
    assert!(v.iter().all(|v| v.pass), "{v:?}");
    assert!(!evaluate(&[ex("revocation_time <= 4s")], &r)[0].pass);
    // Lab-wide: z, in another cell, has not heard of it — the cell's decision alone does
    // not reach it, so the reach is never.
    let (v, why) = r.revocation_reach_time();
    assert_eq!(v, Some(f64::INFINITY), "{why}");
    assert!(why.contains("not by: z"), "{why}");
    assert!(!evaluate(&[ex("revocation_reach_time <= 6s")], &r)[0].pass);
    // The countersigned flood reaches z in the same poll round, at 15 s: 5 s after asking.
    r.polls.push(key_poll(3, 15.0, "z", 9, &[2], 0));
    let (v, why) = r.revocation_reach_time();
    assert_eq!(v, Some(5.0), "{why}");
    assert!(why.contains("revoked by all 3 nodes of the lab"), "{why}");
    assert!(evaluate(&[ex("revocation_reach_time <= 6s")], &r)[0].pass);
    assert!(!evaluate(&[ex("revocation_reach_time <= 4.9s")], &r)[0].pass);
    // b also revokes a's key, which nobody asked for; and delivers 2 frames from c after
    // revoking it (then 1 after a restart: the highest count stands).
    r.polls.push(key_poll(4, 20.0, "b", 1, &[2, 0], 2));
    r.polls.push(key_poll(5, 21.0, "b", 1, &[2], 1));
    let (f, why) = r.false_revocations();
    assert_eq!(f, Some(1.0));
    assert!(why.contains("b revoked a's key"), "{why}");
    let (a, why) = r.revoked_key_accepted();
    assert_eq!(a, Some(2.0));
    assert!(why.contains("b 2"), "{why}");
    // A peer that never revokes makes it infinite, and says who.
    r.polls
        .retain(|p| p.node != "b" || p.keys.revoked.is_empty());
    let (v, why) = r.revocation_time();
    assert_eq!(v, Some(f64::INFINITY));
    assert!(why.contains("not by: b"), "{why}");
    // No revoke asked for: not measured, so an expectation on it fails.
    let mut r = rec();
    r.polls = vec![key_poll(1, 5.0, "a", 0, &[], 0)];
    assert_eq!(r.revocation_time().0, None);
    assert!(!evaluate(&[ex("revocation_time <= 5s")], &r)[0].pass);
}

#[test]
fn steal_key_and_revoke_verbs_expand_and_bad_ones_are_refused() {
    let src = "topology: ../cell.yaml\nduration: 20s\ntimeline:\n  - { at: 1s, steal_key: { node: l0c0k0t2, thief: l0c0k0t5 } }\n  - { at: 3s, revoke: { node: l0c0k0t2, by: l0c0k0t0 } }\nexpect: [revocation_time <= 5s]\n";
    // cell.yaml has no BFT groups: revoke is refused with the fix named.
    let e = expanded_err(src);
    assert!(e.contains("trust: { bft_verdicts: true }"), "{e}");
    let e = errors("topology: ../cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, steal_key: { node: a, thief: a } }\n  - { at: 2s, revoke: { node: a } }\n");
    assert!(e.contains("a cannot steal its own key"), "{e}");
    assert!(e.contains("revoke needs `by`"), "{e}");
}

#[test]
fn message_delivery_is_delivered_over_taken() {
    let mut r = rec();
    let (v, why) = r.message_delivery();
    assert_eq!(v, None);
    assert!(why.contains("messages: P%"), "{why}");
    r.messages_sent = 200;
    r.messages_refused = 3;
    r.messages_delivered = Some(194);
    let (v, why) = r.message_delivery();
    assert_eq!(v, Some(0.97));
    assert!(
        why.contains("194 of 200") && why.contains("3 more refused"),
        "{why}"
    );
    // Never above one (a duplicate delivery is not a second message).
    r.messages_delivered = Some(205);
    assert_eq!(r.message_delivery().0, Some(1.0));
    let e = ex("message_delivery >= 95%");
    assert_eq!(
        (e.metric.name(), e.op, e.bound),
        (
            "message_delivery",
            lightcone::experiment::expect::Cmp::Ge,
            0.95
        )
    );
}

fn routed(mut p: StatePoll, routes: &[&str]) -> StatePoll {
    p.routes = routes.iter().map(|r| r.to_string()).collect();
    p
}

/// Issue 11 item 4: convergence looks at the pairs the partition separated (here z, in
/// another cluster, cut off from a and b), through their routes; a cut nobody saw is not
/// a convergence of 0 s but a run that measured nothing.
#[test]
fn convergence_follows_the_pairs_the_partition_separated() {
    let mut r = rec();
    r.addrs.remove("c");
    let mark = |t: f64, kind: &str, groups: Vec<Vec<String>>| Mark {
        t_real_s: t,
        kind: kind.into(),
        node: None,
        groups,
    };
    r.marks = vec![
        mark(5.0, "partition", vec![vec!["z".to_string()]]),
        mark(10.0, "heal", Vec::new()),
    ];
    let alive = |id: u32| vec![(id, "alive", 50.0)];
    // Cell membership never changes (a and b were on the same side): only routes tell.
    let before = |round: u32, t: f64, z_routes: &[&str], a_routes: &[&str]| {
        vec![
            routed(poll(round, t, "a", 0, &alive(1)), a_routes),
            routed(
                poll(round, t, "b", 1, &alive(0)),
                &["node:0", "cluster:0.1"],
            ),
            routed(poll(round, t, "z", 9, &[]), z_routes),
        ]
    };
    let all = ["node:1", "cluster:0.1"];
    // The old definition (cell peers alive) would say 0 s here.
    r.polls = [
        before(1, 4.0, &["cluster:0.0"], &all),
        before(2, 7.0, &["cluster:0.0"], &all),
        before(3, 12.0, &["cluster:0.0"], &all),
    ]
    .concat();
    let (v, why) = r.converged_after_heal();
    assert_eq!(v, None, "a cut no route lost is not measured: {why}");
    assert!(why.contains("never seen"), "{why}");
    // Routes lost during the cut and back after the heal: z at 12 s, a at 14 s.
    r.polls = [
        before(1, 4.0, &["cluster:0.0"], &all),
        before(2, 7.0, &[], &["node:1"]),
        before(3, 12.0, &["cluster:0.0"], &["node:1"]),
        before(4, 14.0, &["cluster:0.0"], &all),
    ]
    .concat();
    let (v, why) = r.converged_after_heal();
    assert_eq!(v, Some(4.0), "{why}");
    assert!(why.contains("layer 4s"), "{why}");
    // A cut across which no route had formed yet separated nothing.
    let saved = r.polls.clone();
    for p in r.polls.iter_mut().filter(|p| p.round == 1) {
        p.routes.retain(|r| r.starts_with("node:"));
    }
    let (v, why) = r.converged_after_heal();
    assert_eq!(v, None, "{why}");
    assert!(
        why.contains("separated no pair that was connected"),
        "{why}"
    );
    r.polls = saved;
    // Never back: infinite, naming the level.
    r.polls.truncate(9);
    let (v, why) = r.converged_after_heal();
    assert_eq!(v, Some(f64::INFINITY), "{why}");
    assert!(why.contains("at level layer"), "{why}");
}

/// Issue 11 item 5: a peer that still shows a node dead from its previous crash does not
/// score 0 s for the next one.
#[test]
fn detection_is_per_incident() {
    let mut r = rec();
    r.real_s = 40.0;
    for (t, kind) in [(10.0, "crash"), (20.0, "restart"), (30.0, "crash")] {
        r.marks.push(Mark {
            t_real_s: t,
            kind: kind.into(),
            node: Some("c".into()),
            groups: Vec::new(),
        });
    }
    r.polls = vec![
        poll(1, 5.0, "c", 2, &[]),
        poll(2, 12.0, "a", 0, &[(2, "dead", 111.0)]),
        poll(2, 12.0, "b", 1, &[(2, "dead", 111.0)]),
        // b sees c back after its restart; a never does.
        poll(3, 25.0, "a", 0, &[(2, "dead", 111.0)]),
        poll(3, 25.0, "b", 1, &[(2, "alive", 121.0)]),
        // a's entry is the old one; b's began 3 s after the second crash.
        poll(4, 34.0, "a", 0, &[(2, "dead", 111.0)]),
        poll(4, 34.0, "b", 1, &[(2, "dead", 133.0)]),
    ];
    let (v, why) = r.detection_time();
    assert_eq!(v, Some(3.0), "{why}");
    assert!(why.contains("a left out"), "{why}");
    // Had b also kept its old entry, nobody detected the second crash: not measured.
    r.polls[4] = poll(3, 25.0, "b", 1, &[(2, "dead", 111.0)]);
    r.polls[6] = poll(4, 34.0, "b", 1, &[(2, "dead", 111.0)]);
    let (v, why) = r.detection_time();
    assert_eq!(v, None, "{why}");
    // A peer that saw c back, then declared it dead while it was alive (25 s, a false
    // death, as across a cut) and held that through the crash at 30 s had nothing left to
    // detect: it is left out and named, scoring neither 0 s nor a miss (crash-storm seed
    // 108 failed on "never" this way). With a left out as stale too, nobody measured it.
    r.polls[4] = poll(3, 25.0, "b", 1, &[(2, "alive", 121.0)]);
    r.polls[6] = poll(4, 34.0, "b", 1, &[(2, "dead", 125.0)]);
    let (v, why) = r.detection_time();
    assert_eq!(v, None, "{why}");
    assert!(why.contains("dead in view before the crash: b"), "{why}");
    // A third peer that detects it normally is measured, and b is named.
    r.addrs.insert("d".into(), "0.0.0.3".into());
    r.polls.push(poll(2, 12.0, "d", 3, &[(2, "dead", 111.0)]));
    r.polls.push(poll(3, 25.0, "d", 3, &[(2, "alive", 121.0)]));
    r.polls.push(poll(4, 34.0, "d", 3, &[(2, "dead", 134.0)]));
    let (v, why) = r.detection_time();
    assert_eq!(v, Some(4.0), "{why}");
    assert!(
        why.contains("b left out: held it dead from before the crash"),
        "{why}"
    );
    // But a peer that saw c back and never holds it dead after the crash missed it.
    r.polls[6] = poll(4, 34.0, "b", 1, &[(2, "alive", 121.0)]);
    let (v, why) = r.detection_time();
    assert_eq!(v, Some(f64::INFINITY), "{why}");
    assert!(why.contains("b never reported c dead"), "{why}");
}

/// Issue 11 item 2: a fault that was not injected fails the run.
#[test]
fn a_failed_injection_is_a_failed_verdict() {
    let mut r = rec();
    r.failed_injections
        .push(lightcone::experiment::expect::FailedInjection {
            t_real_s: 3.0,
            action: "crash l0c0k0t3".into(),
            error: "no such node".into(),
        });
    let v = evaluate(&[ex("causal_anomalies == 0")], &r);
    assert_eq!(v.len(), 2);
    assert!(!v[0].pass);
    assert_eq!(v[0].expectation, "injection failed: crash l0c0k0t3");
    assert!(v[0].detail.contains("no such node"));
    // Without it, an empty recording still fails on its own expectation only.
    r.failed_injections.clear();
    assert_eq!(evaluate(&[ex("causal_anomalies == 0")], &r).len(), 1);
}

/// Issue 11 item 7: the spec's figure stands beside the bound; a looser bound needs a
/// stated reason and is marked.
#[test]
fn bounds_looser_than_the_spec_must_say_why() {
    use lightcone::experiment::expect::parse;
    for t in [
        "locality >= 85%",
        "locality >= 99.99%",
        "detection_time <= 10s",
        "overhead <= 5%",
        "time_coverage >= 99%",
        "workload_locality >= 90%",
    ] {
        let e = parse(t).expect_err(t);
        assert!(e.contains("looser than the spec"), "{t}: {e}");
    }
    for t in [
        "locality > 99.99%",
        "detection_time < 5s",
        "overhead <= 1%",
        "time_coverage >= 99.7%",
        "converged_after_heal <= 60s",
    ] {
        let e = parse(t).unwrap();
        assert!(e.looser_than_spec().is_none(), "{t}");
    }
    let e = parse("locality >= 85% because cells of 3 tiles").unwrap();
    assert_eq!(e.reason.as_deref(), Some("cells of 3 tiles"));
    let v = evaluate(&[e], &rec());
    assert_eq!(v[0].looser_than_spec.as_deref(), Some("cells of 3 tiles"));
    assert!(
        v[0].spec.as_deref().unwrap().contains("> 99.9900%"),
        "{v:?}"
    );
    assert!(parse("locality >= 85% because ").is_err());
}

/// Issue 11 item 6: alarms and pulsar losses are counted over named nodes.
#[test]
fn node_selections_name_who_must_alarm_and_who_stays_quiet() {
    let mut r = rec();
    let s = |node: &str, v: f64| {
        (
            "lightcone_time_alarms_total".to_string(),
            BTreeMap::from([("node".to_string(), node.to_string())]),
            v,
        )
    };
    r.metrics_start = vec![s("a", 0.0), s("b", 0.0), s("z", 0.0)];
    r.metrics_end = vec![s("a", 2.0), s("b", 1.0), s("z", 1.0)];
    let count = |r: &Recording, t: &str| evaluate(&[ex(t)], r)[0].value;
    assert_eq!(count(&r, "time_alarmed_nodes(a b) == 2"), Some(2.0));
    assert_eq!(count(&r, "time_alarmed_nodes(z) == 0"), Some(1.0));
    assert!(!evaluate(&[ex("time_alarmed_nodes(z) == 0")], &r)[0].pass);
    assert_eq!(count(&r, "time_alarmed_nodes(*) == 3"), Some(3.0));
    assert!(evaluate(&[ex("time_alarmed_nodes(q*) == 0")], &r)[0]
        .value
        .is_none());
    assert!(lightcone::experiment::expect::parse("overhead(a) <= 1%").is_err());
    // Pulsar fixes missed, from the state polls.
    let missed = |node: &str, id: u32, t: f64, m: u64| {
        let mut p = poll(1, t, node, id, &[]);
        p.pulsar_missed = Some(m);
        p
    };
    r.polls = vec![
        missed("a", 0, 1.0, 0),
        missed("a", 0, 9.0, 0),
        missed("b", 1, 1.0, 0),
        missed("b", 1, 9.0, 2),
    ];
    assert_eq!(count(&r, "pulsar_missed_nodes(b) == 1"), Some(1.0));
    assert_eq!(count(&r, "pulsar_missed_nodes == 1"), Some(1.0));
    assert_eq!(count(&r, "pulsar_missed_nodes(a) == 0"), Some(0.0));
}

/// Issue 11 item 7: workload and protocol traffic are measured apart.
#[test]
fn locality_per_traffic_class() {
    let mut r = rec();
    let s = |class: &str, scope: &str, v: f64| {
        (
            "lightcone_locality_bytes_total".to_string(),
            BTreeMap::from([
                ("node".to_string(), "a".to_string()),
                ("level".to_string(), "cell".to_string()),
                ("scope".to_string(), scope.to_string()),
                ("class".to_string(), class.to_string()),
            ]),
            v,
        )
    };
    r.metrics_end = vec![
        s("workload", "local", 900.0),
        s("workload", "remote", 100.0),
        s("protocol", "local", 1000.0),
        s("protocol", "remote", 0.0),
    ];
    let v = |t: &str| evaluate(&[ex(t)], &r)[0].clone();
    assert_eq!(v("workload_locality > 99.99%").value, Some(0.9));
    assert_eq!(v("protocol_locality > 99.99%").value, Some(1.0));
    let all = v("locality > 99.99%");
    assert_eq!(all.value, Some(0.95));
    assert!(all.detail.contains("workload: 90.0000%"), "{}", all.detail);
    assert!(all.detail.contains("protocol: 100.0000%"), "{}", all.detail);
}

/// Check a scenario written to `dir/name` (beside the shipped topologies when `dir` is
/// `topologies/scenarios`), returning the rendered refusal.
fn refusal(dir: &Path, name: &str, src: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, src).unwrap();
    let r = lightcone::experiment::validate::check_file(&path);
    std::fs::remove_file(&path).unwrap();
    match r {
        Err(ScenarioError::Invalid { rendered, .. }) => rendered,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted:\n{src}"),
    }
}

/// A scratch directory holding a copy of the shipped cell topology, for scenarios that name
/// it as `cell.yaml`.
fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("topologies/cell.yaml"),
        d.path().join("cell.yaml"),
    )
    .unwrap();
    d
}

/// Issue 11, item 3: a scenario without expectations proves nothing; `validate` and `run`
/// (both through `validate::check_scenario`) refuse it, missing or empty.
#[test]
fn a_scenario_without_expectations_is_refused() {
    let d = scratch();
    for (src, at) in [
        ("topology: cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, crash: l0c0k0t1 }\n", "s.yaml:1:1"),
        ("topology: cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, crash: l0c0k0t1 }\nexpect: []\n", "s.yaml:5:9"),
        ("topology: cell.yaml\nduration: 10s\nexpect:\n", "s.yaml:3:1"),
    ] {
        let out = refusal(d.path(), "s.yaml", src);
        assert!(out.contains("the scenario has no expectations"), "{out}");
        assert!(out.contains(at), "{at}: {out}");
        let path = d.path().join("run.yaml");
        std::fs::write(&path, src).unwrap();
        let e = lightcone::experiment::prepare(&path, None).unwrap_err();
        assert!(e.is_invalid() && e.to_string().contains("no expectations"), "{e}");
    }
}

/// Issue 11, item 3: `validate` read a scenario as a topology. Now the scenario, its
/// topology, its timeline against that topology and its expectations are checked, each
/// refusal located in the file it is about.
#[test]
fn validate_checks_a_scenario_its_topology_timeline_and_expectations() {
    use lightcone::experiment::validate::{check_file, CheckedFile};
    let d = scratch();
    // A shipped scenario is recognised as one.
    let Ok(CheckedFile::Scenario(c)) = check_file(&repo().join("topologies/scenarios/cell.yaml"))
    else {
        panic!("cell scenario not checked as a scenario")
    };
    assert_eq!(c.topology.name, "cell");
    assert!(!c.plan.is_empty());
    // A node the topology lacks: at the verb, not "line 4".
    let out = refusal(
        d.path(),
        "s.yaml",
        "topology: cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, crash: nosuch }\nexpect: [detection_time < 10s]\n",
    );
    assert!(out.contains("no node \"nosuch\" in topology cell"), "{out}");
    assert!(out.contains("--> "), "{out}");
    assert!(out.contains("s.yaml:4:15"), "{out}");
    // A topology file that is not there: at the `topology:` value.
    let out = refusal(
        d.path(),
        "s.yaml",
        "topology: nosuch.yaml\nduration: 10s\nexpect: [overhead <= 3%]\n",
    );
    assert!(out.contains("cannot read the topology"), "{out}");
    assert!(out.contains("s.yaml:1:11"), "{out}");
    // A topology with mistakes: located in the topology file.
    std::fs::write(
        d.path().join("bad.yaml"),
        "name: x\nnodes: {a: {}}\nlinkz: []\n",
    )
    .unwrap();
    let out = refusal(
        d.path(),
        "s.yaml",
        "topology: bad.yaml\nduration: 10s\nexpect: [overhead <= 3%]\n",
    );
    assert!(out.contains("unknown key `linkz`"), "{out}");
    assert!(out.contains("bad.yaml:3:1"), "{out}");
    // An inline topology's mistakes point into the scenario file.
    let out = refusal(
        d.path(),
        "s.yaml",
        "topology:\n  name: x\n  nodes: {a: {}, eth0: {}}\nduration: 10s\nexpect: [overhead <= 3%]\n",
    );
    assert!(out.contains("node name `eth0`"), "{out}");
    assert!(out.contains("s.yaml:3:18"), "{out}");
}

/// Issue 13: an incident observed for less than its bound (a crash restarted 4 s later
/// against a 10-s detection bound, a heal 4.5 s before the end against a 10-s convergence
/// bound) reads as never (FAIL) if not seen in time; the scenario is accepted, with a
/// located warning. Windows at least as long as the bound give none.
#[test]
fn incidents_observed_for_less_than_their_bound_are_warned() {
    use lightcone::experiment::validate::{check_file, CheckedFile};
    let d = scratch();
    let warnings = |src: &str| {
        let path = d.path().join("w.yaml");
        std::fs::write(&path, src).unwrap();
        match check_file(&path) {
            Ok(CheckedFile::Scenario(c)) => c.warnings,
            Ok(_) => panic!("not a scenario"),
            Err(e) => panic!("{e}"),
        }
    };
    let p = "[[l0c0k0t0, l0c0k0t1, l0c0k0t2], [l0c0k0t3, l0c0k0t4, l0c0k0t5, l0c0k0t6, l0c0k0t7, l0c0k0t8, l0c0k0t9, l0c0k0t10, l0c0k0t11]]";
    let short = format!(
        "topology: cell.yaml\nduration: 12.5s\ntimeline:\n  - {{ at: 1s, crash: l0c0k0t3 }}\n  - {{ at: 5s, restart: l0c0k0t3 }}\n  - {{ at: 6s, partition: {p} }}\n  - {{ at: 8s, heal: }}\nexpect:\n  - detection_time < 10s\n  - converged_after_heal <= 10s\n  - overhead <= 3%\n"
    );
    let w = warnings(&short);
    assert!(
        w.contains("warning: `detection_time < 10s`: 1 of 1 incidents are observed for less than the bound; l0c0k0t3 crashed at 1s, and is restarted 4s later, at 5s"),
        "{w}"
    );
    assert!(w.contains("w.yaml:9:5"), "{w}");
    assert!(
        w.contains("warning: `converged_after_heal <= 10s`: 1 of 1 incidents are observed for less than the bound; the heal at 8s, and the run ends 4.5s later, at 12.5s"),
        "{w}"
    );
    assert!(w.contains("w.yaml:10:5"), "{w}");
    assert_eq!(w.matches("warning:").count(), 2, "{w}");
    // The same incidents with windows as long as the bounds: no warning.
    let long = short
        .replace("12.5s", "30s")
        .replace("{ at: 5s, restart", "{ at: 11s, restart")
        .replace("{ at: 6s, partition", "{ at: 12s, partition")
        .replace("{ at: 8s, heal", "{ at: 14s, heal");
    assert_eq!(warnings(&long), "", "{long}");
    // The shipped scenarios give their incidents at least their bounds.
    let dir = repo().join("topologies/scenarios");
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "yaml") {
            if let Ok(CheckedFile::Scenario(c)) = check_file(&f) {
                assert_eq!(c.warnings, "", "{}", f.display());
            }
        }
    }
}

/// Issue 11, item 3: an expectation that nothing in the run could measure would fail
/// whatever the system did; it is refused before anything runs.
#[test]
fn expectations_nothing_could_measure_are_refused() {
    let d = scratch();
    let out = refusal(
        d.path(),
        "s.yaml",
        "topology: cell.yaml\nduration: 10s\ntimeline:\n  - { at: 1s, link_down: [l0c0k0t1, l0c0k0t2] }\nexpect:\n  - detection_time < 10s\n  - converged_after_heal <= 5s\n  - quarantine_time <= 5s\n  - message_delivery >= 99%\n  - no_acknowledged_write_lost\n  - causal_anomalies == 0\n  - overhead <= 3%\n  - time_alarmed_nodes(nobody*) == 0\n",
    );
    for (what, line) in [
        ("`detection_time < 10s` needs a crash", 6),
        ("`converged_after_heal <= 5s` needs a heal", 7),
        ("`quarantine_time <= 5s` needs a byzantine node", 8),
        (
            "`message_delivery >= 99%` needs a load that sends messages",
            9,
        ),
        ("`no_acknowledged_write_lost` needs a load that writes", 10),
        ("`causal_anomalies == 0` needs a load", 11),
        ("`time_alarmed_nodes(nobody*) == 0` selects no node", 13),
    ] {
        assert!(out.contains(what), "{what}: {out}");
        assert!(out.contains(&format!("s.yaml:{line}:5")), "{what}: {out}");
    }
    assert!(out.contains("7 errors found"), "{out}");
    // Time metrics need clocks, which need an authority.
    std::fs::write(
        d.path().join("noclock.yaml"),
        "name: nc\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n",
    )
    .unwrap();
    let out = refusal(
        d.path(),
        "s.yaml",
        "topology: noclock.yaml\nduration: 10s\nexpect: [time_coverage >= 99.7%, time_alarmed_nodes == 0]\n",
    );
    assert_eq!(out.matches("needs clocks").count(), 2, "{out}");
}

/// Issue 11, item 13: scenario files share the parser, so a billion-laughs scenario is
/// refused with a position too.
#[test]
fn a_billion_laughs_scenario_is_refused() {
    let mut bomb = String::from("topology: cell.yaml\nduration: 10s\nexpect: [overhead <= 3%]\ntimeline:\n  - { at: 1s, load: { nodes: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol] } }\n");
    for i in 1..9u8 {
        let (prev, cur) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        let aliases = vec![format!("*{prev}"); 9].join(", ");
        bomb += &format!("  - {{ at: 1s, load: {{ nodes: &{cur} [{aliases}] }} }}\n");
    }
    assert!(bomb.len() < 1024);
    let out = errors(&bomb);
    assert!(
        out.contains("expand the document past 1000000 values"),
        "{out}"
    );
    assert!(out.contains("--> s.yaml:"), "{out}");
    let d = scratch();
    let out = refusal(d.path(), "s.yaml", &bomb);
    assert!(out.contains("expand the document past"), "{out}");
}

/// A flap or churn that would expand to millions of actions is refused at once instead of
/// expanding for hours (found checking verbs without running them).
#[test]
fn verbs_that_expand_without_bound_are_refused() {
    let d = scratch();
    for step in [
        "flap: { link: [l0c0k0t1, l0c0k0t2], period: 1ns, until: 100s }",
        "churn: { rate: 99%/year, year: 1us, until: 100s, replace_after: 0s }",
    ] {
        let t = std::time::Instant::now();
        let out = refusal(
            d.path(),
            "s.yaml",
            &format!("topology: cell.yaml\nduration: 100s\ntimeline:\n  - {{ at: 0s, {step} }}\nexpect: [detection_time < 10s]\n"),
        );
        assert!(out.contains("expands to more than 100000"), "{out}");
        assert!(out.contains("s.yaml:4:15"), "{out}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[test]
fn load_durability_defaults_to_cell_and_bad_levels_are_refused() {
    use lightcone::experiment::scenario::Verb;
    use lightcone_core::kv::Durability;
    let durability = |load: &str| {
        let src = format!(
            "topology: ../cell.yaml\nduration: 20s\ntimeline:\n  - {{ at: 0s, load: {{ until: 10s, {load} }} }}\nexpect: [no_acknowledged_write_lost]\n"
        );
        let sc = scenario::parse_str(&src, "s.yaml", Path::new(".")).unwrap();
        match &sc.timeline[0].verb {
            Verb::Load { load, .. } => load.durability,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(durability("keys: 2"), Durability::Cell);
    assert_eq!(durability("durability: local"), Durability::Local);
    assert_eq!(durability("durability: cell"), Durability::Cell);
    let e = errors(
        "topology: ../cell.yaml\nduration: 20s\ntimeline:\n  - { at: 0s, load: { until: 10s, durability: disk } }\n",
    );
    assert!(e.contains("durability \"disk\": want local or cell"), "{e}");
}
