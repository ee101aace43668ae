//! The run directory: `timeline.txt`/`timeline.json` before the run, and after it
//! `events.jsonl`, `history.jsonl`, `polls.jsonl`, `report.json`, `series.json` and
//! `report.html` (the metrics snapshots are written as they are read).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::super::expand::{self, Planned};
use super::super::expect::Verdict;
use super::super::record::{Event, Recording, SeriesPoint};
use super::super::report;
use super::super::scenario::Scenario;
use crate::parse::units;
use crate::topology::Topology;

/// `runs/<scenario>-<seed>-<UTC timestamp>/`.
pub(crate) fn default_dir(sc: &Scenario) -> PathBuf {
    PathBuf::from("runs").join(format!("{}-{}-{}", sc.name, sc.seed, timestamp()))
}

/// Says what will be played, and writes the expanded timeline.
pub(crate) fn write_timeline(
    dir: &Path,
    sc: &Scenario,
    topo: &Topology,
    plan: &[Planned],
    progress: &mut impl FnMut(&str),
) -> std::io::Result<()> {
    progress(&format!(
        "scenario {} on lab {} (seed {}, duration {} emulated); expanded timeline ({} actions):",
        sc.name,
        topo.name,
        sc.seed,
        units::fmt_ns(sc.duration_ns),
        plan.len()
    ));
    let rendered = expand::render(plan);
    for l in rendered.lines() {
        progress(l);
    }
    std::fs::write(dir.join("timeline.txt"), &rendered)?;
    std::fs::write(
        dir.join("timeline.json"),
        serde_json::to_vec_pretty(plan).unwrap_or_default(),
    )?;
    Ok(())
}

/// What the run directory is written from.
pub(crate) struct Finished<'a> {
    pub sc: &'a Scenario,
    pub topo: &'a Topology,
    pub plan: &'a [Planned],
    pub ts: f64,
    pub real_s: f64,
    pub events: &'a [Event],
    pub rec: &'a Recording,
    pub series: &'a [SeriesPoint],
    pub verdicts: &'a [Verdict],
    pub passed: bool,
    /// `lightcone simulate`'s own figures (seed, crypto mode, events, trace hash), written
    /// as `report.json`'s `simulation`; `None` for a lab run.
    pub simulation: Option<serde_json::Value>,
}

/// Writes the records, `report.json` and `report.html`.
pub(crate) fn write(dir: &Path, f: &Finished<'_>) -> std::io::Result<()> {
    jsonl(&dir.join("events.jsonl"), f.events)?;
    jsonl(&dir.join("history.jsonl"), &f.rec.history)?;
    jsonl(&dir.join("polls.jsonl"), &f.rec.polls)?;
    let mut report_json = serde_json::json!({
        "scenario": f.sc.name,
        "seed": f.sc.seed,
        "lab": f.topo.name,
        "time_scale": f.ts,
        "duration_emulated_s": f.sc.duration_ns as f64 / 1e9,
        "real_s": f.real_s,
        "passed": f.passed,
        "verdicts": f.verdicts,
        "timeline": f.plan,
        "events": f.events,
        "load": {
            "ops": f.rec.history.len(),
            "final_reads": f.rec.final_reads.len(),
        },
        "overhead_definition": "the busiest agent's CPU seconds (utime+stime from /proc) / the seconds it was observed alive: its share of one core, a tile's compute; agents observed under 2 s are left out; the host-wide share is in the detail",
    });
    if let (Some(sim), Some(o)) = (&f.simulation, report_json.as_object_mut()) {
        o.insert("simulation".into(), sim.clone());
    }
    // How the lab's tiles mapped to agent processes (a lab run; the twin runs no agents).
    if let (None, Some(o)) = (&f.simulation, report_json.as_object_mut()) {
        let map =
            crate::tilegroups::ProcessMap::of_counts(f.topo.nodes.len(), f.topo.tiles_per_process);
        o.insert(
            "agent_processes".into(),
            serde_json::json!({
                "tiles_per_process": map.tiles_per_process,
                "processes": map.processes,
                "summary": map.summary(),
            }),
        );
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report_json).unwrap_or_default(),
    )?;
    std::fs::write(
        dir.join("series.json"),
        serde_json::to_vec(f.series).unwrap_or_default(),
    )?;
    std::fs::write(
        dir.join("report.html"),
        report::html(f.sc, f.ts, f.plan, f.events, f.series, f.verdicts, f.real_s),
    )?;
    Ok(())
}

/// One JSON document per line.
fn jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    for i in items {
        writeln!(f, "{}", serde_json::to_string(i).unwrap_or_default())?;
    }
    Ok(())
}

fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
