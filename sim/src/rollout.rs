//! Staged rollout with health gates in the twin (issue 18): an update goes canary cell →
//! the rest of its cluster → the rest of its layer → everything else, each stage gated by
//! invariant monitors over a soak; a violation rolls the stage back to the old build
//! (N−1) and halts the rollout with the gate, its measure and the time to rollback.
//!
//! Deploying a stage installs the new [`Build`] on its tiles ([`Sim::set_build`]: each
//! tile's agent is replaced and rejoins empty, as the manifest's policy says) in waves
//! ([`lightcone_core::update::waves`]: at most `max(1, f)` tiles of a cell at once, `f`
//! the crash faults a `cell` write survives); a wave must rejoin and then **refill** (hold
//! every write its live cell-mates held when it rejoined, by the kv state transfer)
//! within [`Gates::rejoin`] each before the next is replaced — a rollback goes back in
//! waves too. The gates, in order, each with the reason for its bound (the spec gives
//! figures for detection only):
//! - **rejoin**: every updated tile sees its live cell-mates alive, is alive in their
//!   views and has a route to every live tile within
//!   [`Gates::rejoin`] (30 s: three times the spec's < 10 s local detection, since a
//!   restarted tile must be both forgotten and re-admitted); then one unjudged datagram
//!   from every live tile to each restarted one teaches them its new boot epoch (the first
//!   frames bound to its earlier boot are refused by design);
//! - **delivery**: over the soak, every round sends one datagram between every ordered pair
//!   of live tiles; the share delivered within the round must be ≥ [`Gates::delivery_min`]
//!   (99 %, no spec figure: a sound build delivers all of them on loss-free links, the
//!   defect of `rollout-bad` drops 30 % of what the updated tiles forward);
//! - **false deaths**: no live tile is declared dead during the soak (the membership's
//!   safety; a crash rate of zero is what the twin can hold an update to);
//! - **detection** (the spec's < 10 s; canary only, after its soak): an updated canary tile
//!   is crashed, a live cell-mate must hold it suspect or dead in time, and it must rejoin
//!   after its restart ([`detection_probe`]);
//! - **causal** (bound 0): every round each updated live tile writes a key with
//!   `durability=cell`; a write its cell acknowledged within the round must be held by
//!   every live cell-mate at the round's end (a round is ≫ a cell's delay);
//! - **time** (the spec's stated uncertainty, 3σ): no live tile with a time layer has its
//!   true error outside its own 3σ at the end of two rounds in a row;
//! - **thermal** ([`Gates::thermal_max`], 1.0: no tile above its rejection capacity): the
//!   highest thermal load of a live tile with a thermal subsystem, at each round's end.
//!
//! The lab slice, with
//! real agent binaries replaced under `lightcone update`, is the orchestrator's `rollout`
//! module, with the same stages and gates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lightcone_core::addr::HierAddr;
use lightcone_core::causal::VersionVector;
use lightcone_core::io::{Command, Event};
use lightcone_core::update::Build;
use lightcone_core::wire::MemberState;
use lightcone_core::Instant;

use crate::Sim;

/// One stage: a name and the tiles it updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: &'static str,
    pub nodes: Vec<u32>,
}

/// Canary cell → rest of its cluster → rest of its layer → all others; empty stages are
/// left out.
pub fn plan(sim: &Sim, canary: HierAddr) -> Vec<Stage> {
    let dir = sim.directory();
    let mut done = BTreeSet::new();
    let mut stages = Vec::new();
    // The scope each stage widens to: 0 cell, 1 cluster, 2 layer, 3 everything.
    let within = |a: &HierAddr, level: u8| match level {
        0 => a.same_cell(&canary),
        1 => a.layer == canary.layer && a.cluster == canary.cluster,
        2 => a.layer == canary.layer,
        _ => true,
    };
    let scopes = [("canary", 0u8), ("cluster", 1), ("layer", 2), ("all", 3)];
    for (name, level) in scopes {
        let nodes: Vec<u32> = dir
            .ids_where(|a| within(a, level))
            .into_iter()
            .filter(|n| !done.contains(n))
            .collect();
        done.extend(nodes.iter().copied());
        if !nodes.is_empty() {
            stages.push(Stage { name, nodes });
        }
    }
    stages
}

/// The health gates.
#[derive(Debug, Clone)]
pub struct Gates {
    pub rejoin: Duration,
    pub soak: Duration,
    pub round: Duration,
    pub delivery_min: f64,
    /// Highest thermal load of a live tile at a round's end.
    pub thermal_max: f64,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            rejoin: Duration::from_secs(30),
            soak: Duration::from_secs(20),
            round: Duration::from_secs(2),
            delivery_min: 0.99,
            thermal_max: 1.0,
        }
    }
}

/// What a stage did.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    pub name: &'static str,
    pub nodes: Vec<u32>,
    pub deployed_at: Instant,
    /// When its tiles had all rejoined.
    pub rejoined_at: Option<Instant>,
    /// Worst round's delivery over the soak (1.0 when every datagram arrived).
    pub delivery_min: f64,
    pub sent: u64,
    pub delivered: u64,
    /// The canary's detection probe: how long until a cell-mate held the crashed tile
    /// suspect or dead (`None`: not probed).
    pub detection: Option<Duration>,
    /// Waves replaced and settled (rejoined and refilled).
    pub waves: u32,
}

/// Why a rollout halted.
#[derive(Debug, Clone, PartialEq)]
pub struct Halt {
    pub stage: &'static str,
    pub gate: &'static str,
    /// The gate's measure and bound, in words.
    pub reason: String,
    pub detected_at: Instant,
    /// When every tile of the stage ran the old build again, had rejoined and refilled
    /// (the rollback goes in waves, as the deployment).
    pub rolled_back_at: Instant,
    /// A rollback wave that did not rejoin or refill in time (the rest went back anyway).
    pub rollback_trouble: Option<String>,
}

/// A rollout's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutReport {
    pub stages: Vec<StageReport>,
    /// `None`: every stage passed; the new build runs everywhere.
    pub halted: Option<Halt>,
}

impl RolloutReport {
    /// Stage by stage, one line each, then the verdict.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for st in &self.stages {
            s += &format!(
                "stage {:<8} tiles {:>3}  deployed {:>8.3} s  rejoined {:>8}  delivered {}/{}  worst round {:.4}{}\n",
                st.name,
                st.nodes.len(),
                st.deployed_at.as_secs_f64(),
                st.rejoined_at
                    .map_or("never".into(), |t| format!("{:.3} s", t.as_secs_f64())),
                st.delivered,
                st.sent,
                st.delivery_min,
                st.detection
                    .map_or(String::new(), |d| format!("  crash detected in {:.3} s", d.as_secs_f64())),
            );
        }
        match &self.halted {
            None => s += "rollout complete: every stage passed its gates\n",
            Some(h) => {
                s += &format!(
                    "rollout HALTED at stage {}: gate {} fired at {:.3} s ({}); rolled back to N-1 at {:.3} s\n",
                    h.stage,
                    h.gate,
                    h.detected_at.as_secs_f64(),
                    h.reason,
                    h.rolled_back_at.as_secs_f64()
                );
            }
        }
        s
    }
}

fn alive_everywhere(sim: &Sim, nodes: &[u32]) -> bool {
    let dir = sim.directory();
    let live: Vec<u32> = (0..sim.len() as u32).filter(|i| sim.is_up(*i)).collect();
    nodes.iter().all(|&n| {
        let (Some(a), Some(node)) = (dir.addr(n), sim.node(n)) else {
            return false;
        };
        // The restarted tile sees its live cell-mates alive, they see it alive, and it
        // has a route to every live tile.
        let m = node.membership();
        let mates = dir
            .ids_where(|b| b.same_cell(&a))
            .into_iter()
            .filter(|x| *x != n && sim.is_up(*x));
        let routed = live.iter().filter(|x| **x != n).all(|x| {
            node.routing()
                .next_hop(lightcone_core::wire::Dest::Node(*x))
                .is_some()
        });
        routed
            && mates
                .clone()
                .all(|x| m.state_of(x) == Some(MemberState::Alive))
            && mates.into_iter().all(|x| {
                sim.node(x)
                    .is_some_and(|o| o.membership().state_of(n) == Some(MemberState::Alive))
            })
    })
}

/// The rejoin's last step: every live tile sends each restarted tile one datagram, not
/// judged. Frames bound to a tile's earlier boot are refused by design (see
/// `lightcone_core::wire`, boot epochs): a sender learns the new boot from the restarted
/// tile's boot notice, so the first datagrams to it after its restart are lost.
fn handshake(sim: &mut Sim, nodes: &[u32], round: Duration) {
    let live: Vec<u32> = (0..sim.len() as u32).filter(|i| sim.is_up(*i)).collect();
    for &a in &live {
        for &b in nodes.iter().filter(|b| **b != a) {
            sim.command(
                a,
                &Command::Send {
                    dst: b,
                    data: vec![0],
                },
            );
        }
    }
    sim.run_for(round);
    sim.take_events();
}

/// One probe round among the live tiles: (sent, delivered, live tiles declared dead,
/// cell puts acknowledged during the round).
fn probe_round(sim: &mut Sim, round: Duration, tag: u32) -> (u64, u64, Vec<u32>, BTreeSet<u64>) {
    let live: Vec<u32> = (0..sim.len() as u32).filter(|i| sim.is_up(*i)).collect();
    sim.take_events();
    let mut sent = 0;
    for &a in &live {
        for &b in live.iter().filter(|b| **b != a) {
            let data = tag.to_be_bytes().to_vec();
            if let Some(Ok(_)) = sim.command(a, &Command::Send { dst: b, data }) {
                sent += 1;
            }
        }
    }
    sim.run_for(round);
    let mut delivered = 0;
    let mut deaths = Vec::new();
    let mut acked = BTreeSet::new();
    for (_, _, e) in sim.take_events() {
        match e {
            Event::Delivered { data, .. } if data == tag.to_be_bytes() => delivered += 1,
            Event::KvWritten { request, .. } => {
                acked.insert(request);
            }
            Event::MemberChanged {
                node,
                state: MemberState::Dead,
                ..
            } if sim.is_up(node) => deaths.push(node),
            _ => {}
        }
    }
    (sent, delivered, deaths, acked)
}

/// The causal gate's writes of round `tag`: one `cell` put per live tile of `nodes`;
/// (request, writer, key, value) of each.
fn causal_writes(sim: &mut Sim, nodes: &[u32], tag: u32) -> Vec<(u64, u32, String, Vec<u8>)> {
    let mut w = Vec::new();
    let live: Vec<u32> = nodes.iter().copied().filter(|n| sim.is_up(*n)).collect();
    for n in live {
        let request = (u64::from(tag) << 32) | u64::from(n);
        let key = format!("lightcone-rollout/{n}/{tag}");
        let value = format!("round-{tag}").into_bytes();
        let put = Command::Put {
            request,
            key: key.clone(),
            value: value.clone(),
            durability: lightcone_core::kv::Durability::Cell,
        };
        if let Some(Ok(_)) = sim.command(n, &put) {
            w.push((request, n, key, value));
        }
    }
    w
}

/// Acknowledged writes of `writes` a live cell-mate of the writer does not hold:
/// (writer, reader, key).
fn causal_missing(
    sim: &mut Sim,
    writes: &[(u64, u32, String, Vec<u8>)],
    acked: &BTreeSet<u64>,
) -> Vec<(u32, u32, String)> {
    let dir = sim.directory().clone();
    let mut missing = Vec::new();
    for (_, w, key, value) in writes.iter().filter(|x| acked.contains(&x.0)) {
        let Some(a) = dir.addr(*w) else { continue };
        for m in dir.ids_where(|b| b.same_cell(&a)) {
            if m == *w || !sim.is_up(m) {
                continue;
            }
            let got = sim.command(m, &Command::Get { key: key.clone() });
            let held = matches!(got, Some(Ok(lightcone_core::io::Reply::KvValue { siblings, .. })) if siblings.contains(value));
            if !held {
                missing.push((*w, m, key.clone()));
            }
        }
    }
    missing
}

/// The time gate's round: live tiles outside their own 3σ now; the first also outside in
/// `before` (last round's), with its error and σ.
fn time_outside(sim: &mut Sim, before: &mut BTreeSet<u32>) -> Option<(u32, f64, f64)> {
    let mut now = BTreeSet::new();
    let mut worst = None;
    for i in 0..sim.len() as u32 {
        if !sim.is_up(i) {
            continue;
        }
        if let Some(m) = sim.time_metrics(i) {
            if !m.within_3sigma {
                now.insert(i);
                if before.contains(&i) && worst.is_none() {
                    worst = Some((i, m.true_error_s, m.sigma_s));
                }
            }
        }
    }
    *before = now;
    worst
}

/// The thermal gate's round: the live tile with the highest thermal load and its load.
fn hottest(sim: &Sim) -> Option<(u32, f64)> {
    let now = sim.now();
    (0..sim.len() as u32)
        .filter(|i| sim.is_up(*i))
        .filter_map(|i| {
            sim.node(i)
                .and_then(|n| n.heat())
                .map(|h| (i, h.stats(now).load_ratio))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Unjudged probe rounds at most after a stage's waves settled, until one delivers every
/// datagram (the lab's `rollout::WARMUP_ROUNDS`).
pub const WARMUP_ROUNDS: u32 = 5;

/// The spec's local failure detection bound ("< 10 s").
pub const DETECTION_BOUND: Duration = Duration::from_secs(10);

/// The canary's detection probe (the lab's, see `orchestrator/src/rollout.rs`): one
/// updated tile with a live updated cell-mate is crashed; a live cell-mate must hold it
/// suspect or dead within [`DETECTION_BOUND`]; it is restarted on the same build and must
/// rejoin within [`Gates::rejoin`].
fn detection_probe(
    sim: &mut Sim,
    nodes: &[u32],
    g: &Gates,
    st: &mut StageReport,
) -> Option<(&'static str, String)> {
    let dir = sim.directory().clone();
    let mates_of = |n: u32| -> Vec<u32> {
        dir.addr(n)
            .map(|a| dir.ids_where(|b| b.same_cell(&a)))
            .unwrap_or_default()
            .into_iter()
            .filter(|m| *m != n)
            .collect()
    };
    let victim = nodes.iter().copied().find(|n| {
        sim.is_up(*n)
            && mates_of(*n)
                .iter()
                .any(|m| nodes.contains(m) && sim.is_up(*m))
    })?;
    let mates: Vec<u32> = mates_of(victim)
        .into_iter()
        .filter(|m| sim.is_up(*m))
        .collect();
    sim.crash(victim);
    let t0 = sim.now();
    let seen = sim.run_until_pred(DETECTION_BOUND * 3 / 2, |s| {
        mates.iter().any(|m| {
            s.node(*m).is_some_and(|n| {
                matches!(
                    n.membership().state_of(victim),
                    Some(MemberState::Suspect) | Some(MemberState::Dead)
                )
            })
        })
    });
    let took = sim.now().saturating_since(t0);
    sim.take_events();
    if seen {
        st.detection = Some(took);
    }
    sim.restart(victim);
    if !seen || took >= DETECTION_BOUND {
        return Some((
            "detection",
            format!(
                "tile {victim}'s crash {} (the spec: < {:?})",
                if seen {
                    format!("was detected by a cell-mate after {took:?}")
                } else {
                    format!(
                        "was not detected by a cell-mate within {:?}",
                        DETECTION_BOUND * 3 / 2
                    )
                },
                DETECTION_BOUND
            ),
        ));
    }
    if !sim.run_until_pred(g.rejoin, |s| alive_everywhere(s, &[victim])) {
        return Some((
            "rejoin",
            format!(
                "tile {victim} not alive within {:?} of its restart after the detection probe",
                g.rejoin
            ),
        ));
    }
    // Its new boot, taught to every live tile as after a deployment.
    handshake(sim, &[victim], g.round);
    None
}

/// A wave's refill target: for each tile of `wave`, the writes its live cell-mates
/// outside the wave have seen (the join of their vectors, [`Store::writes_seen`]).
///
/// [`Store::writes_seen`]: lightcone_core::causal::Store::writes_seen
fn refill_target(sim: &Sim, wave: &[u32]) -> BTreeMap<u32, VersionVector> {
    let dir = sim.directory();
    let mut want = BTreeMap::new();
    for &n in wave {
        let Some(a) = dir.addr(n) else { continue };
        let mut vv = VersionVector::new();
        for m in dir.ids_where(|b| b.same_cell(&a)) {
            if wave.contains(&m) || !sim.is_up(m) {
                continue;
            }
            if let Some(node) = sim.node(m) {
                vv.merge(&node.kv().store().writes_seen().1);
            }
        }
        want.insert(n, vv);
    }
    want
}

/// Whether every tile of `want` has seen at least the writes its target names.
fn refilled(sim: &Sim, want: &BTreeMap<u32, VersionVector>) -> bool {
    want.iter().all(|(n, vv)| {
        sim.node(*n)
            .is_some_and(|node| node.kv().store().writes_seen().1.dominates(vv))
    })
}

/// Installs `build` on `nodes` in waves ([`lightcone_core::update::waves`]): each wave is
/// replaced, must rejoin within [`Gates::rejoin`] and refill (hold every write its live
/// cell-mates held when it rejoined) within [`Gates::rejoin`] again, before the next
/// wave. The gate and its reason when a wave does not.
fn deploy(
    sim: &mut Sim,
    nodes: &[u32],
    build: Build,
    g: &Gates,
    settled: &mut u32,
) -> Result<(), (&'static str, String)> {
    deploy_waves(sim, nodes, build, g, false, settled)
}

/// [`deploy`]; with `every_wave` a wave that fails its wait does not stop the later ones
/// (a rollback must put every tile back), and the first failure is returned at the end.
fn deploy_waves(
    sim: &mut Sim,
    nodes: &[u32],
    build: Build,
    g: &Gates,
    every_wave: bool,
    settled: &mut u32,
) -> Result<(), (&'static str, String)> {
    let mut first_err = None;
    let dir = sim.directory().clone();
    let cell = |a: HierAddr| (a.layer, a.cluster, a.cell);
    let tiles: Vec<(u32, (u16, u16, u16))> = nodes
        .iter()
        .filter_map(|n| dir.addr(*n).map(|a| (*n, cell(a))))
        .collect();
    // Configured cell sizes, counted once.
    let mut sizes: BTreeMap<(u16, u16, u16), usize> = BTreeMap::new();
    for (_, c) in &tiles {
        sizes.entry(*c).or_insert(0);
    }
    for id in 0..sim.len() as u32 {
        if let Some(n) = dir.addr(id).and_then(|a| sizes.get_mut(&cell(a))) {
            *n += 1;
        }
    }
    let size = |c: &(u16, u16, u16)| sizes.get(c).copied().unwrap_or(1);
    for wave in lightcone_core::update::waves(&tiles, size) {
        for &n in &wave {
            sim.set_build(n, build);
        }
        if !sim.run_until_pred(g.rejoin, |s| alive_everywhere(s, &wave)) {
            let e = (
                "rejoin",
                format!("updated tiles {wave:?} not all alive within {:?}", g.rejoin),
            );
            if every_wave {
                first_err.get_or_insert(e);
                continue;
            }
            return Err((
                "rejoin",
                format!("updated tiles {wave:?} not all alive within {:?}", g.rejoin),
            ));
        }
        let want = refill_target(sim, &wave);
        if !sim.run_until_pred(g.rejoin, |s| refilled(s, &want)) {
            let short: Vec<u32> = want
                .iter()
                .filter(|(n, vv)| {
                    !sim.node(**n)
                        .is_some_and(|x| x.kv().store().writes_seen().1.dominates(vv))
                })
                .map(|(n, _)| *n)
                .collect();
            let e = (
                "refill",
                format!(
                    "tiles {short:?} did not hold their cell's writes within {:?} of rejoining (bound 0 missing: the next wave would empty more of the cell than its writes survive)",
                    g.rejoin
                ),
            );
            if every_wave {
                first_err.get_or_insert(e);
                continue;
            }
            return Err(e);
        }
        handshake(sim, &wave, g.round);
        *settled += 1;
    }
    first_err.map_or(Ok(()), Err)
}

/// Rolls `new` out over `stages`; on a gate's violation the stage's tiles get `old` again
/// and the rollout halts.
pub fn run(sim: &mut Sim, stages: &[Stage], new: Build, old: Build, g: &Gates) -> RolloutReport {
    let mut report = RolloutReport {
        stages: Vec::new(),
        halted: None,
    };
    let mut tag = 0u32;
    for stage in stages {
        let deployed_at = sim.now();
        let mut waves = 0;
        let deployed = deploy(sim, &stage.nodes, new, g, &mut waves);
        let mut st = StageReport {
            name: stage.name,
            nodes: stage.nodes.clone(),
            deployed_at,
            rejoined_at: None,
            delivery_min: 1.0,
            sent: 0,
            delivered: 0,
            detection: None,
            waves,
        };
        let nodes = stage.nodes.clone();
        let fired = if let Err(f) = deployed {
            Some(f)
        } else {
            st.rejoined_at = Some(sim.now());
            // Unjudged rounds, as the lab's (`WARMUP_ROUNDS`): senders learn the replaced
            // tiles' boots and routes through them settle, until a round delivers all.
            for _ in 0..WARMUP_ROUNDS {
                tag += 1;
                let (sent, delivered, _, _) = probe_round(sim, g.round, tag);
                if delivered == sent {
                    break;
                }
            }
            let mut fired = None;
            let rounds = (g.soak.as_nanos() / g.round.as_nanos().max(1)).max(1);
            let mut outside = BTreeSet::new();
            for _ in 0..rounds {
                tag += 1;
                let writes = causal_writes(sim, &nodes, tag);
                let (sent, delivered, deaths, acked) = probe_round(sim, g.round, tag);
                let missing = causal_missing(sim, &writes, &acked);
                st.sent += sent;
                st.delivered += delivered;
                let ratio = if sent == 0 {
                    1.0
                } else {
                    delivered as f64 / sent as f64
                };
                st.delivery_min = st.delivery_min.min(ratio);
                if ratio < g.delivery_min {
                    fired = Some((
                        "delivery",
                        format!(
                            "{delivered} of {sent} datagrams delivered in a {:?} round = {:.4}, bound >= {}",
                            g.round, ratio, g.delivery_min
                        ),
                    ));
                } else if let Some(d) = deaths.first() {
                    fired = Some((
                        "false_deaths",
                        format!("live tile {d} declared dead during the soak, bound 0"),
                    ));
                } else if let Some((w, r, k)) = missing.first() {
                    fired = Some((
                        "causal",
                        format!(
                            "{} cell-acknowledged writes not held by a live cell-mate at the round's end, bound 0; first: {k} written at {w}, missing at {r}",
                            missing.len()
                        ),
                    ));
                } else if let Some((i, e, sigma)) = time_outside(sim, &mut outside) {
                    fired = Some((
                        "time",
                        format!(
                            "tile {i}'s time error {e:.6} s is outside its 3σ = {:.6} s for two rounds",
                            3.0 * sigma
                        ),
                    ));
                } else if let Some((i, load)) = hottest(sim).filter(|h| h.1 > g.thermal_max) {
                    fired = Some((
                        "thermal",
                        format!(
                            "tile {i} carries a thermal load of {load:.3} of its rejection capacity, bound <= {}",
                            g.thermal_max
                        ),
                    ));
                }
                if fired.is_some() {
                    break;
                }
            }
            if fired.is_none() && report.stages.is_empty() {
                fired = detection_probe(sim, &nodes, g, &mut st);
            }
            fired
        };
        report.stages.push(st);
        if let Some((gate, reason)) = fired {
            let detected_at = sim.now();
            // Back in waves too: a rollback must not empty the cell either. A wave that
            // does not rejoin or refill is said, and the rest still goes back.
            let back = deploy_waves(sim, &stage.nodes, old, g, true, &mut 0).err();
            report.halted = Some(Halt {
                stage: stage.name,
                gate,
                reason,
                detected_at,
                rolled_back_at: sim.now(),
                rollback_trouble: back.map(|(g, r)| format!("{g}: {r}")),
            });
            return report;
        }
    }
    report
}

/// Builds per tile now, for checks: tile → protocol version and defect.
pub fn builds(sim: &Sim) -> BTreeMap<u32, Build> {
    (0..sim.len() as u32)
        .map(|i| (i, sim.build_of(i)))
        .collect()
}
