//! `lightcone simulate`: the digital twin. The same scenario file `lightcone run` reads
//! (checked by [`validate`](crate::experiment::validate), expanded the same way), the same
//! pure [`plan`](crate::plan::plan), the real core ([`lightcone_core::Node`]) for every node
//! in virtual time through [`lightcone_sim::Sim`], the same [`Recording`], expectations
//! ([`evaluate`]) and run directory (`runner/rundir.rs`'s writer) — plus the simulation's
//! own figures.
//!
//! In order: [`config`] (plan → agent configurations with seeded keys → `Sim`) →
//! [`driver`] (warm-up, then the timeline, load sessions and poll rounds in virtual time;
//! final reads) → [`recorder`] (polls, series, counters as the agent exports them) → the
//! verdicts → the run directory. Times in the recording are virtual seconds since the
//! timeline's start, so the recording's time scale is 1 whatever the lab's would be.
//!
//! Determinism: node keys, node RNG seeds and link losses come from the scenario seed;
//! everything iterates in id order; wall-clock figures (wall time, events/s, peak memory)
//! go to stderr and `simulation.json`, never into `report.json`, which is byte-identical
//! for one scenario and seed.

pub mod config;
pub mod crypto;
mod driver;
mod objects;
mod recorder;
mod rollout;
mod scale;
mod store_work;

use std::path::{Path, PathBuf};
use std::time::Instant as WallInstant;

use lightcone_sim::Sim;
use serde::Serialize;

use crate::experiment::expect::{evaluate, Expectation, Metric, Verdict};
use crate::experiment::record::Recording;
use crate::experiment::runner::rundir;
use crate::experiment::{prepare_for, RunError};
use crate::plan::plan;
use crate::topology::Host;

/// What `lightcone simulate` was asked.
pub struct SimulateOptions {
    pub scenario: PathBuf,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// The run directory (default `runs/<scenario>-<seed>-<timestamp>/`).
    pub out: Option<PathBuf>,
    /// Real or modelled signatures ([`crypto`]).
    pub crypto: crypto::CryptoMode,
}

/// The simulation's own figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub seed: u64,
    /// Which signatures ran (`ed25519`: real signing and verifying of every frame).
    pub crypto: String,
    pub keys: String,
    pub nodes: usize,
    pub links: usize,
    /// Virtual seconds simulated (warm-up, timeline, settling).
    pub virtual_s: f64,
    pub events_processed: u64,
    pub datagrams_delivered: u64,
    pub datagrams_lost: u64,
    /// SHA-256 over every delivered datagram, core event and command result.
    pub trace_hash: String,
    /// How the links are carried ([`config::LINK_MODEL`]).
    pub link_model: String,
    /// Frames signed and verified, `[signed, verified]`, when signatures were modelled
    /// (what the CPU tally in `simulation.json` accounts for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modelled_auth_ops: Option<[u64; 2]>,
    /// What a poll round recorded, when not every node's whole view (systems above
    /// [`recorder::FULL_RECORD_MAX`] nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
}

/// Host figures of one simulation: not deterministic, kept out of `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct HostFigures {
    pub wall_s: f64,
    pub events_per_s: f64,
    /// Peak resident set of this process (`VmHWM` of /proc/self/status), KiB.
    pub peak_rss_kib: Option<u64>,
    /// With modelled signatures: what real Ed25519 would have cost, measured on this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crypto_tally: Option<crypto::CryptoTally>,
}

/// What a simulation produced (`lightcone simulate --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct SimOutcome {
    pub scenario: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub verdicts: Vec<Verdict>,
    pub passed: bool,
    pub simulation: Figures,
    pub host: HostFigures,
}

/// Why a metric cannot be measured in the twin yet (`None`: it can).
pub fn not_measured_in_twin(m: Metric) -> Option<&'static str> {
    match m {
        Metric::TimerLatenessP99 => Some(
            "not measured in the twin: timers fire at their deadline in virtual time; lateness is a property of the host running agents",
        ),
        Metric::Overhead => Some(
            "not measured in the twin: no per-tile CPU time in virtual time (the cost per event is in the simulation's figures)",
        ),
        _ => None,
    }
}

/// The twin's reason replaces the lab's for expectations it cannot measure; they still
/// fail (a report never passes on missing data).
fn mark_unmeasured(verdicts: &mut [Verdict], expect: &[Expectation]) {
    let judged = verdicts.len().saturating_sub(expect.len());
    for (v, e) in verdicts[judged..].iter_mut().zip(expect) {
        if let (None, Some(why)) = (v.value, not_measured_in_twin(e.metric)) {
            v.measured = "not measured".into();
            v.pass = false;
            v.detail = why.into();
        }
    }
}

/// Peak resident set of this process, KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Simulate a scenario end to end. `progress` receives lines for the user.
pub fn simulate(
    opts: &SimulateOptions,
    mut progress: impl FnMut(&str),
) -> Result<SimOutcome, RunError> {
    let wall = WallInstant::now();
    let (sc, topo, timeline) = prepare_for(&opts.scenario, opts.seed, Host::Twin)?;
    let dir = opts.out.clone().unwrap_or_else(|| rundir::default_dir(&sc));
    std::fs::create_dir_all(&dir)?;
    rundir::write_timeline(&dir, &sc, &topo, &timeline, &mut progress)?;

    let plan = plan(&topo);
    let configs = config::agent_configs(&plan, sc.seed);
    let links = config::sim_links(&plan);
    let modelled = crypto::modelled(opts.crypto, configs.len());
    let mut params = crypto::params(modelled, sc.seed);
    // The topology's `trust:` section, as every agent of the lab applies it (`Node::new_in`).
    if let Some(t) = &topo.trust {
        params.watch.with_trust(t);
    }
    let crypto = crypto::describe(modelled, opts.crypto, configs.len());
    progress(&format!(
        "twin: {} nodes, {} links, seed {}, crypto {crypto}; keys: {}",
        configs.len(),
        links.len(),
        sc.seed,
        config::key_statement(sc.seed)
    ));
    let mut sim = Sim::from_configs(&configs, &links, sc.seed, params)
        .map_err(|e| RunError::Lab(format!("the twin could not be built: {e}")))?;
    for l in &plan.links {
        sim.shape_link(l.a.node as u32, l.b.node as u32, &l.model)
            .map_err(|e| {
                RunError::Lab(format!(
                    "the twin could not shape link {}-{}: {e}",
                    plan.nodes[l.a.node].name, plan.nodes[l.b.node].name
                ))
            })?;
    }
    let mut twin = driver::Twin::new(sim, &plan, &timeline);
    twin.authorities = config::authorities(&plan, sc.seed);
    twin.store.class = topo.store.as_ref().map(|s| s.class.clone());
    progress(&format!(
        "recording: {}",
        twin.rec.scope.describe(configs.len())
    ));
    twin.warm_up(&mut progress);
    progress(&twin.footprint_line("after warm-up"));
    twin.play(&timeline, sc.duration_ns, sc.seed, &mut progress);
    progress(&twin.footprint_line("at the end"));
    twin.finish_puts();
    twin.final_reads();
    twin.read_back_objects();
    let real_s = twin.sim.now().as_secs_f64() - twin.t0.as_secs_f64();
    let mut metrics_end = twin.rec.samples(&mut twin.sim, &twin.names);
    metrics_end.extend(link_waits(&twin.sim, &plan));
    let rec = Recording {
        time_scale: 1.0,
        addrs: twin.addrs.clone(),
        polls: std::mem::take(&mut twin.rec.polls),
        marks: std::mem::take(&mut twin.marks),
        history: std::mem::take(&mut twin.history),
        local_writes: std::mem::take(&mut twin.local_writes),
        final_reads: std::mem::take(&mut twin.final_reads),
        metrics_start: twin.rec.start.clone(),
        metrics_end,
        agent_cpu_s: None,
        agent_cpu: Vec::new(),
        cores: 1,
        real_s,
        messages_sent: twin.messages_sent,
        messages_refused: twin.messages_refused,
        messages_delivered: Some(twin.messages_delivered),
        failed_injections: std::mem::take(&mut twin.failed),
        objects: std::mem::take(&mut twin.store.objects),
        object_reads: std::mem::take(&mut twin.store.object_reads),
        rollout: twin.rollout.take(),
    };
    let mut verdicts = evaluate(&sc.expect, &rec);
    mark_unmeasured(&mut verdicts, &sc.expect);
    let passed = verdicts.iter().all(|v| v.pass);
    let figures = Figures {
        seed: sc.seed,
        crypto: crypto.clone(),
        keys: config::key_statement(sc.seed),
        nodes: configs.len(),
        links: links.len(),
        virtual_s: twin.sim.now().as_secs_f64(),
        events_processed: twin.sim.events_processed(),
        datagrams_delivered: twin.sim.delivered,
        datagrams_lost: twin.sim.lost,
        trace_hash: twin.sim.trace_hash(),
        link_model: config::LINK_MODEL.into(),
        modelled_auth_ops: modelled.then(|| twin.rec.auth_ops(&twin.sim, twin.names.len())),
        recording: (!twin.rec.scope.full).then(|| twin.rec.scope.describe(configs.len())),
    };
    rundir::write(
        &dir,
        &rundir::Finished {
            sc: &sc,
            topo: &topo,
            plan: &timeline,
            ts: 1.0,
            real_s,
            events: &twin.events,
            rec: &rec,
            series: &twin.rec.series,
            verdicts: &verdicts,
            passed,
            simulation: serde_json::to_value(&figures).ok(),
        },
    )?;
    annotate_html(&dir.join("report.html"), &figures)?;
    let wall_s = wall.elapsed().as_secs_f64();
    let host = HostFigures {
        wall_s,
        events_per_s: figures.events_processed as f64 / wall_s.max(1e-9),
        peak_rss_kib: peak_rss_kib(),
        crypto_tally: figures.modelled_auth_ops.map(crypto::CryptoTally::of),
    };
    write_simulation_json(&dir, &figures, &host)?;
    Ok(SimOutcome {
        scenario: sc.name.clone(),
        seed: sc.seed,
        dir,
        verdicts,
        passed,
        simulation: figures,
        host,
    })
}

/// The report's page says it is the twin's: its times are virtual seconds (the header's
/// "s real" is the virtual time from the timeline's start), and the simulation's figures.
fn annotate_html(path: &Path, f: &Figures) -> std::io::Result<()> {
    let html = std::fs::read_to_string(path)?;
    let html = html.replacen(
        "time_scale 1 (emulated s per real s) · ",
        "virtual time (`lightcone simulate`: every \"real\" time on this page is virtual) · ",
        1,
    );
    let note = format!(
        "<p>digital twin: {} nodes, {} links, {} events processed, {} datagrams delivered, {} lost; crypto {}; keys: {}; trace {}; links: {}</p>",
        f.nodes,
        f.links,
        f.events_processed,
        f.datagrams_delivered,
        f.datagrams_lost,
        f.crypto,
        f.keys,
        f.trace_hash,
        f.link_model
    );
    let html = match html.find("</h1>") {
        Some(i) => format!("{}{note}{}", &html[..i + 5], &html[i + 5..]),
        None => html,
    };
    std::fs::write(path, html)
}

fn write_simulation_json(dir: &Path, f: &Figures, h: &HostFigures) -> std::io::Result<()> {
    let v = serde_json::json!({ "simulation": f, "host": h });
    std::fs::write(
        dir.join("simulation.json"),
        serde_json::to_vec_pretty(&v).unwrap_or_default(),
    )
}

/// The shaped directions' longest waits per class, the longest part of a Class-A wait
/// behind data, and their idle delays, as the wire engine exports them
/// (`lightcone_link_wait_max_seconds`, `lightcone_link_class_a_behind_data_max_seconds`,
/// `lightcone_link_configured_delay_seconds`;
/// time scale 1): only directions where a frame ever waited, so a system of 10⁶ links
/// exports what queued, not every link.
fn link_waits(sim: &lightcone_sim::Sim, plan: &crate::plan::Plan) -> crate::telemetry::Samples {
    use lightcone_link::shaper::Class;
    let mut out = crate::telemetry::Samples::new();
    for l in &plan.links {
        let (a, b) = (l.a.node as u32, l.b.node as u32);
        for (from, to, dir) in [(a, b, "a_to_b"), (b, a, "b_to_a")] {
            let (Some(t), Some(m)) = (sim.link_tally(from, to), sim.link_model(from, to)) else {
                continue;
            };
            if t.wait_max_ns == [0, 0] {
                continue;
            }
            let labels = |extra: Option<&str>| {
                let mut v: std::collections::BTreeMap<String, String> = [
                    ("lab", plan.lab.as_str()),
                    ("link", l.name.as_str()),
                    ("direction", dir),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                if let Some(c) = extra {
                    v.insert("class".into(), c.into());
                }
                v
            };
            out.push((
                "lightcone_link_configured_delay_seconds".into(),
                labels(None),
                m.delay_ns as f64 / 1e9,
            ));
            for c in Class::ALL {
                out.push((
                    crate::link::metrics::WAIT_MAX_SERIES.into(),
                    labels(Some(c.as_str())),
                    t.wait_max_ns[c.index()] as f64 / 1e9,
                ));
            }
            out.push((
                crate::link::metrics::A_BEHIND_DATA_SERIES.into(),
                labels(None),
                t.a_behind_data_max_ns as f64 / 1e9,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmeasurable_metrics_say_why_and_fail() {
        let expect: Vec<Expectation> = ["timer_lateness_p99 <= 50ms", "overhead <= 3%"]
            .iter()
            .map(|t| crate::experiment::expect::parse(t).unwrap())
            .collect();
        let mut v = evaluate(&expect, &Recording::default());
        mark_unmeasured(&mut v, &expect);
        for x in &v {
            assert!(!x.pass, "{x:?}");
            assert_eq!(x.measured, "not measured");
            assert!(x.detail.starts_with("not measured in the twin"), "{x:?}");
        }
        assert!(not_measured_in_twin(Metric::DetectionTime).is_none());
    }

    #[test]
    fn peak_rss_is_read_from_proc() {
        assert!(peak_rss_kib().is_some_and(|k| k > 0));
    }
}
