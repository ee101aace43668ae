//! Can this host keep a lab at its time scale? Measured by `up` once the agents run
//! (issue 14: time dilation as a first-class answer).
//!
//! A lab emulates `time_scale` seconds per real second only while its processes get the
//! CPU they ask for. When they do not, timers fire late, and every emulated interval
//! stretches: a lab that cannot keep up reports detection times and clock errors that are
//! the host's, not the protocol's. `up` measures it over a short window:
//!
//! - **timer lateness**: the agents' `lightcone_timer_lateness_seconds` histogram (emulated
//!   seconds), read twice from a sample of tiles — one tile per agent process when tiles
//!   share processes (one event loop per process: its tiles are late together), else up to
//!   [`MAX_SAMPLED`] tiles spread over the lab — and its p99 over the window;
//! - **CPU**: the lab's processes' CPU time over the same window (from `/proc`), against the
//!   host's cores.
//!
//! Each read of the sample has a deadline, [`READ_BOUND`], its requests made at once: an
//! agent process that does not answer `/metrics` within it is counted, not waited for (on
//! an overloaded host a 64-tile process may not run its event loop for minutes; waited for
//! one by one, the check took longer than the lab's bring-up). When most sampled processes
//! do not answer, the lab does not keep up, whatever the few answers say.
//!
//! The p99 is judged against a bound, [`DEFAULT_BOUND`] (the cell scenario's
//! `timer_lateness_p99 <= 50ms`; `LIGHTCONE_LATENESS_BOUND_MS` replaces it). When it is
//! exceeded `up` says so, keeps the lab up, and suggests a time scale: the current one times
//! the smaller of `bound / p99` and `0.6 × host cores / lab cores` (CPU demand grows with the
//! time scale; 0.6 leaves the host headroom), rounded down to 1, 2 or 5 × 10ᵏ. That is a
//! heuristic for the next `up`, not a promise; the report's `timer_lateness_p99` verdict
//! stays the judge of a run's fidelity.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::state::{Entry, LabDir, Ledger};

/// The lateness bound `up` judges by, emulated: the cell scenario's bound.
pub const DEFAULT_BOUND: Duration = Duration::from_millis(50);
/// At most this many tiles are read.
pub const MAX_SAMPLED: usize = 64;
/// The shortest window, real time.
pub const MIN_WINDOW: Duration = Duration::from_secs(2);
/// The longest window: at a slow time scale few timers fire in [`MIN_WINDOW`], and the
/// window grows until [`MIN_FIRINGS`] did or this passes.
pub const MAX_WINDOW: Duration = Duration::from_secs(15);
/// Timer firings (over the sample) below which no p99 is claimed.
pub const MIN_FIRINGS: f64 = 100.0;
/// Share of the host's cores a suggested time scale aims the lab's CPU at.
pub const CPU_HEADROOM: f64 = 0.6;
/// How long one read of the sample waits for its agents (all asked at once).
pub const READ_BOUND: Duration = Duration::from_secs(5);

/// The measurement and its judgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub time_scale: f64,
    /// Emulated seconds.
    pub bound_s: f64,
    /// p99 of timer lateness over the window, emulated seconds (an upper bucket bound;
    /// infinite when past the largest bucket); `None` when too few timers fired.
    pub p99_s: Option<f64>,
    pub firings: f64,
    pub sampled: usize,
    /// Sampled agent processes that did not answer a read within [`READ_BOUND`].
    pub unanswered: usize,
    pub window_s: f64,
    /// CPU the lab's processes used over the window, in cores.
    pub lab_cores: f64,
    pub host_cores: usize,
}

impl Check {
    /// `Some(true)` keeps up, `Some(false)` does not, `None` not judged.
    pub fn keeps_up(&self) -> Option<bool> {
        if self.mostly_silent() {
            return Some(false);
        }
        self.p99_s.map(|p| p <= self.bound_s)
    }

    /// More than half the sampled agent processes did not answer within [`READ_BOUND`].
    fn mostly_silent(&self) -> bool {
        self.sampled > 0 && 2 * self.unanswered > self.sampled
    }

    /// The time scale to try next when the lab does not keep up (see the module doc).
    pub fn suggestion(&self) -> Option<f64> {
        if self.keeps_up() != Some(false) {
            return None;
        }
        // Silent agents: how late is unknown, so at least half, and the CPU term.
        let p = if self.mostly_silent() {
            2.0 * self.bound_s
        } else {
            self.p99_s?
        };
        let by_lateness = if p.is_finite() && p > 0.0 {
            self.bound_s / p
        } else {
            f64::INFINITY
        };
        let by_cpu = if self.lab_cores > 0.0 {
            CPU_HEADROOM * self.host_cores as f64 / self.lab_cores
        } else {
            f64::INFINITY
        };
        let mut f = by_lateness.min(by_cpu);
        if !f.is_finite() || f >= 1.0 {
            // Late although the lab takes little CPU (the host is busy with something
            // else, or the bound is below the host's scheduling latency): slow down twice.
            f = 0.5;
        }
        let s = round_down_nice(self.time_scale * f);
        Some(s.max(crate::topology::TIME_SCALE_MIN))
    }

    /// One line for `up`'s progress.
    pub fn line(&self) -> String {
        let bound = fmt_s(self.bound_s);
        let mut cpu = format!(
            "lab processes used {:.2} of {} cores",
            self.lab_cores, self.host_cores
        );
        if self.unanswered > 0 {
            cpu.push_str(&format!(
                "; {} of {} sampled agent processes did not answer /metrics within {} s",
                self.unanswered,
                self.sampled,
                READ_BOUND.as_secs()
            ));
        }
        if self.mostly_silent() {
            return format!(
                "warning: this host does not keep the lab at time_scale {}: its agents are too busy to answer ({cpu}). The lab stays up, but its timings are the host's: try `lightcone up FILE --time-scale {}`",
                self.time_scale,
                self.suggestion().unwrap_or(crate::topology::TIME_SCALE_MIN)
            );
        }
        match (self.p99_s, self.suggestion()) {
            (None, _) => format!(
                "fidelity not judged: only {:.0} timer firings over {:.1} s on {} sampled tiles (fewer than {MIN_FIRINGS}); {cpu}",
                self.firings, self.window_s, self.sampled
            ),
            (Some(p), None) => format!(
                "fidelity: timer lateness p99 <= {} emulated over {:.1} s ({} sampled tiles, {:.0} firings), bound {bound}: keeps up at time_scale {}; {cpu}",
                fmt_s(p),
                self.window_s,
                self.sampled,
                self.firings,
                self.time_scale
            ),
            (Some(p), Some(s)) => format!(
                "warning: this host does not keep the lab at time_scale {}: timer lateness p99 {} emulated over {:.1} s ({} sampled tiles, {:.0} firings), bound {bound}; {cpu}. The lab stays up, but its timings are the host's: try `lightcone up FILE --time-scale {s}`",
                self.time_scale,
                if p.is_finite() {
                    format!("<= {}", fmt_s(p))
                } else {
                    "past the largest bucket".into()
                },
                self.window_s,
                self.sampled,
                self.firings,
            ),
        }
    }
}

fn fmt_s(s: f64) -> String {
    if !s.is_finite() {
        "inf".into()
    } else if s >= 1.0 {
        format!("{s}s")
    } else if s >= 1e-3 {
        format!("{}ms", (s * 1e6).round() / 1e3)
    } else {
        format!("{}us", (s * 1e9).round() / 1e3)
    }
}

/// The largest 1, 2 or 5 × 10ᵏ at or below `x` (> 0).
pub fn round_down_nice(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return x;
    }
    let k = x.log10().floor();
    let base = 10f64.powf(k);
    let m = x / base;
    let nice = if m >= 5.0 {
        5.0
    } else if m >= 2.0 {
        2.0
    } else {
        1.0
    };
    // powf's rounding: 1e-2 * 5 = 0.05 exactly enough for display and comparison.
    let v = nice * base;
    (v * 1e9).round() / 1e9
}

/// The p99 of a cumulative histogram's buckets `(upper bound, count)` (any order; the
/// `+Inf` bucket as infinity): the smallest bound whose count reaches 99 % of the total.
/// `None` when nothing was counted.
pub fn p99_of(buckets: &[(f64, f64)]) -> Option<(f64, f64)> {
    let mut b = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let p = b
        .iter()
        .find(|(_, c)| *c >= 0.99 * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::INFINITY);
    Some((p, total))
}

/// The lateness buckets in a Prometheus text, summed over every series.
fn lateness_buckets(text: &str) -> BTreeMap<u64, f64> {
    let mut out = BTreeMap::new();
    for (name, labels, v) in crate::telemetry::parse_prometheus(text) {
        if name != "lightcone_timer_lateness_seconds_bucket" {
            continue;
        }
        let Some(le) = labels.get("le") else { continue };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(x) => x,
                Err(_) => continue,
            }
        };
        *out.entry(le.to_bits()).or_insert(0.0) += v;
    }
    out
}

/// The tiles read: the first of each agent process when tiles share processes, else every
/// tile; at most [`MAX_SAMPLED`], spread evenly.
pub fn sample(nodes: usize, tiles_per_process: usize) -> Vec<usize> {
    let all: Vec<usize> = (0..nodes).step_by(tiles_per_process.max(1)).collect();
    if all.len() <= MAX_SAMPLED {
        return all;
    }
    (0..MAX_SAMPLED)
        .map(|i| all[i * all.len() / MAX_SAMPLED])
        .collect()
}

/// One read of the sampled tiles' lateness buckets, all asked at once and waited for at
/// most [`READ_BOUND`]: the buckets summed over the answers, and which ids did not answer.
fn read_sample(dir: &Path, ids: &[usize]) -> (BTreeMap<u64, f64>, BTreeSet<usize>) {
    let answers: Vec<(usize, Option<String>)> = std::thread::scope(|s| {
        let asks: Vec<_> = ids
            .iter()
            .map(|&id| {
                let sock = crate::plan::agent_socket(dir, id);
                s.spawn(move || {
                    match crate::tilegroups::request_within(
                        &sock, "GET", "/metrics", "", READ_BOUND,
                    ) {
                        Ok((200, body)) => (id, Some(body)),
                        _ => (id, None),
                    }
                })
            })
            .collect();
        asks.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut sum = BTreeMap::new();
    let mut silent = BTreeSet::new();
    for (id, body) in answers {
        match body {
            Some(body) => {
                for (k, v) in lateness_buckets(&body) {
                    *sum.entry(k).or_insert(0.0) += v;
                }
            }
            None => {
                silent.insert(id);
            }
        }
    }
    (sum, silent)
}

fn lab_ticks(dir: &LabDir) -> u64 {
    let mut pids: Vec<u32> = Ledger::read(dir)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Process { pid, .. } => Some(pid),
            _ => None,
        })
        .collect();
    pids.push(std::process::id());
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(crate::procstat::cpu_ticks)
        .sum()
}

/// The bound: `LIGHTCONE_LATENESS_BOUND_MS` (emulated ms) or [`DEFAULT_BOUND`].
pub fn bound() -> Duration {
    std::env::var("LIGHTCONE_LATENESS_BOUND_MS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms <= 3.6e6)
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .unwrap_or(DEFAULT_BOUND)
}

/// Measure a running lab (blocking: a few seconds; see the module doc).
pub fn measure(plan: &Plan, dir: &LabDir, bound: Duration) -> Check {
    let ids = sample(plan.nodes.len(), plan.tiles_per_process);
    let hz = crate::procstat::clock_ticks_per_s();
    let (before, mut silent) = read_sample(&dir.path, &ids);
    let (t0, c0) = (Instant::now(), lab_ticks(dir));
    let mut after;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let waited = t0.elapsed();
        if waited < MIN_WINDOW {
            continue;
        }
        let (read, not_now) = read_sample(&dir.path, &ids);
        after = read;
        silent.extend(not_now);
        // Most of the sample silent: a longer window would not change the answer.
        if 2 * silent.len() > ids.len()
            || firings_of(&before, &after) >= MIN_FIRINGS
            || waited >= MAX_WINDOW
        {
            break;
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let lab_cores = lab_ticks(dir).saturating_sub(c0) as f64 / hz / window;
    let inc = increase(&before, &after);
    let p = p99_of(&inc);
    let firings = p.map(|(_, t)| t).unwrap_or(0.0);
    Check {
        time_scale: plan.time_scale,
        bound_s: bound.as_secs_f64(),
        p99_s: p.filter(|(_, t)| *t >= MIN_FIRINGS).map(|(p, _)| p),
        firings,
        sampled: ids.len(),
        unanswered: silent.len(),
        window_s: window,
        lab_cores,
        host_cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    }
}

/// Timer firings over a window: the largest bucket's (the `+Inf` one's) increase.
fn firings_of(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>) -> f64 {
    increase(before, after)
        .iter()
        .map(|(_, c)| *c)
        .fold(0.0, f64::max)
}

fn increase(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(k, a)| {
            (
                f64::from_bits(*k),
                (a - before.get(k).copied().unwrap_or(0.0)).max(0.0),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p99: Option<f64>, lab_cores: f64) -> Check {
        Check {
            time_scale: 1.0,
            bound_s: 0.05,
            p99_s: p99,
            firings: 1000.0,
            sampled: 16,
            unanswered: 0,
            window_s: 3.0,
            lab_cores,
            host_cores: 2,
        }
    }

    #[test]
    fn a_lab_within_the_bound_keeps_up_and_gets_no_suggestion() {
        let c = check(Some(0.01), 0.4);
        assert_eq!(c.keeps_up(), Some(true));
        assert_eq!(c.suggestion(), None);
        assert!(
            c.line().contains("keeps up at time_scale 1"),
            "{}",
            c.line()
        );
    }

    #[test]
    fn a_late_lab_does_not_keep_up_and_is_told_a_slower_time_scale() {
        // 0.5 s late at the 99th percentile against 50 ms: 10x by lateness; the CPU term
        // (0.6 x 2 / 1.9 = 0.63) is the larger, so lateness decides: 0.1.
        let c = check(Some(0.5), 1.9);
        assert_eq!(c.keeps_up(), Some(false));
        assert_eq!(c.suggestion(), Some(0.1));
        let l = c.line();
        assert!(
            l.starts_with("warning: this host does not keep the lab at time_scale 1"),
            "{l}"
        );
        assert!(l.contains("--time-scale 0.1"), "{l}");
        // The CPU term decides when it is the smaller: 0.6 x 2 / 12 = 0.1 vs 0.05/0.06.
        assert_eq!(check(Some(0.06), 12.0).suggestion(), Some(0.1));
        // Past the largest bucket: only the CPU term; 0.6 x 2 / 1.5 = 0.8 -> 0.5.
        assert_eq!(check(Some(f64::INFINITY), 1.5).suggestion(), Some(0.5));
        // Past the largest bucket with an idle lab (the host is busy elsewhere): half.
        assert_eq!(check(Some(f64::INFINITY), 0.01).suggestion(), Some(0.5));
    }

    #[test]
    fn a_lab_whose_agents_mostly_do_not_answer_does_not_keep_up() {
        // 9 of 16 silent: not keeping up, whatever the 7 answers said, and told at least
        // half the time scale (CPU term 0.6 x 2 / 1.9 = 0.63 > 0.5).
        let mut c = check(Some(0.01), 1.9);
        c.unanswered = 9;
        assert_eq!(c.keeps_up(), Some(false));
        assert_eq!(c.suggestion(), Some(0.5));
        let l = c.line();
        assert!(
            l.starts_with("warning: this host does not keep the lab"),
            "{l}"
        );
        assert!(
            l.contains("9 of 16 sampled agent processes did not answer"),
            "{l}"
        );
        assert!(l.contains("--time-scale 0.5"), "{l}");
        // No answer at all, no histogram either: still judged, not "not judged".
        let mut c = check(None, 1.9);
        c.unanswered = 16;
        assert_eq!(c.keeps_up(), Some(false));
        // A few silent ones are said, and the rest judge.
        let mut c = check(Some(0.01), 0.4);
        c.unanswered = 3;
        assert_eq!(c.keeps_up(), Some(true));
        assert!(c.line().contains("keeps up"), "{}", c.line());
        assert!(c.line().contains("3 of 16 sampled"), "{}", c.line());
    }

    #[test]
    fn too_few_firings_are_not_judged() {
        let c = check(None, 0.1);
        assert_eq!(c.keeps_up(), None);
        assert_eq!(c.suggestion(), None);
        assert!(c.line().starts_with("fidelity not judged"), "{}", c.line());
    }

    #[test]
    fn nice_numbers_round_down() {
        assert_eq!(round_down_nice(0.63), 0.5);
        assert_eq!(round_down_nice(0.1), 0.1);
        assert_eq!(round_down_nice(0.0999), 0.05);
        assert_eq!(round_down_nice(3.9), 2.0);
        assert_eq!(round_down_nice(17.0), 10.0);
        assert_eq!(round_down_nice(0.0011), 0.001);
    }

    #[test]
    fn p99_is_the_first_bucket_holding_99_percent() {
        let b = [
            (0.001, 50.0),
            (0.01, 98.0),
            (0.1, 99.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(p99_of(&b), Some((0.1, 100.0)));
        let b = [(0.001, 0.0), (f64::INFINITY, 0.0)];
        assert_eq!(p99_of(&b), None);
        let b = [(0.001, 0.0), (f64::INFINITY, 5.0)];
        assert_eq!(p99_of(&b), Some((f64::INFINITY, 5.0)));
    }

    #[test]
    fn one_tile_per_process_at_most_64_spread() {
        assert_eq!(sample(10, 1), (0..10).collect::<Vec<_>>());
        assert_eq!(sample(258, 16), (0..258).step_by(16).collect::<Vec<_>>());
        let s = sample(9986, 64);
        assert_eq!(s.len(), 64);
        assert_eq!(s[0], 0);
        assert!(s.windows(2).all(|w| w[0] < w[1] && (w[1] - w[0]) % 64 == 0));
        assert_eq!(sample(1000, 1).len(), 64);
    }

    #[test]
    fn buckets_are_summed_over_series() {
        let text = "# TYPE x histogram\n\
            lightcone_timer_lateness_seconds_bucket{node=\"a\",le=\"0.01\"} 3\n\
            lightcone_timer_lateness_seconds_bucket{node=\"a\",le=\"+Inf\"} 4\n\
            lightcone_timer_lateness_seconds_bucket{node=\"b\",le=\"0.01\"} 1\n\
            lightcone_timer_lateness_seconds_bucket{node=\"b\",le=\"+Inf\"} 1\n\
            lightcone_other_bucket{le=\"0.01\"} 100\n";
        let b = lateness_buckets(text);
        assert_eq!(b.get(&0.01f64.to_bits()), Some(&4.0));
        assert_eq!(b.get(&f64::INFINITY.to_bits()), Some(&5.0));
        assert_eq!(b.len(), 2);
    }
}
