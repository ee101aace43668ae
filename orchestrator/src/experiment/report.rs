//! The HTML report: a verdict table (expected, measured, verdict, how) and plots over the
//! emulated timeline as inline SVG — membership (alive/suspect/dead entries over all views),
//! locality, link delay, the nodes' time error against ground truth, their σ, and the clocks
//! in trouble (alarms, beyond 3σ, holdover) — with a marker at every fault. No scripts, no
//! external files.

use std::fmt::Write;

use super::expand::Planned;
use super::expect::Verdict;
use super::record::{Event, SeriesPoint, TimeSample};
use super::scenario::Scenario;
use crate::parse::units;

/// A plot's width and height, px (the SVG's viewBox).
const W: f64 = 860.0;
const H: f64 = 200.0;
/// Left margin: room for tick labels like `50.822ms` beside the rotated axis title.
const L: f64 = 72.0;
/// Right margin, px.
const R: f64 = 20.0;
/// Top margin, px: room for the title.
const T: f64 = 16.0;
/// Bottom margin, px: room for the time axis labels.
const B: f64 = 28.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn marker_color(kind: &str) -> &'static str {
    match kind {
        "crash" => "#c0392b",
        "restart" => "#27ae60",
        "partition" => "#e67e22",
        "heal" => "#2980b9",
        "byzantine" | "honest" => "#8e44ad",
        "clock" => "#16a085",
        _ => "#999999",
    }
}

/// A named, coloured series of (x, y) points; `None` is a gap.
type Series<'a> = (&'a str, &'a str, Vec<(f64, Option<f64>)>);

/// One plot: several named series of (x, y) with gaps (`None`), markers at fault times.
fn plot(
    title: &str,
    y_label: &str,
    x_max: f64,
    series: &[Series<'_>],
    marks: &[(f64, String, &'static str)],
    fmt_y: &dyn Fn(f64) -> String,
) -> String {
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().filter_map(|(_, y)| *y))
        .filter(|y| y.is_finite())
        .collect();
    let (mut lo, mut hi) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if !lo.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    if hi - lo < 1e-12 {
        // A flat series: its value on a scale from zero (the value in the middle), or 0..4
        // (whole ticks) when it is all zero, so the axis reads like the data instead of
        // `1, 0, 0, -0, -1`.
        let v = hi;
        (lo, hi) = if v > 0.0 {
            (0.0, 2.0 * v)
        } else if v < 0.0 {
            (2.0 * v, 0.0)
        } else {
            (0.0, 4.0)
        };
    }
    let x_max = x_max.max(1e-9);
    let sx = |x: f64| L + (x / x_max) * (W - L - R);
    let sy = |y: f64| T + (1.0 - (y - lo) / (hi - lo)) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<h3>{}</h3><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{}"><rect x="{L}" y="{T}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        esc(title),
        esc(title),
        W - L - R,
        H - T - B
    );
    let mut last_label = String::new();
    for i in 0..=4 {
        let y = lo + (hi - lo) * i as f64 / 4.0;
        // No `-0`, and no tick repeating the one below it (a count axis 0..1 has two).
        let y = if y.abs() < (hi - lo) * 1e-9 { 0.0 } else { y };
        let label = fmt_y(y);
        if label == last_label {
            continue;
        }
        last_label.clone_from(&label);
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{tx}" y="{ty:.1}" font-size="10" text-anchor="end">{label}</text>"##,
            x2 = W - R,
            y = sy(y),
            tx = L - 4.0,
            ty = sy(y) + 3.0,
            label = esc(&label)
        );
    }
    for i in 0..=5 {
        let x = x_max * i as f64 / 5.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            sx(x),
            H - 10.0,
            esc(&units::fmt_ns((x * 1e9) as u64))
        );
    }
    let _ = write!(
        s,
        r#"<text x="12" y="{:.1}" font-size="10" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"#,
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for (x, label, color) in marks {
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{T}" y2="{1}" stroke="{2}" stroke-dasharray="3,2"><title>{3}</title></line>"#,
            sx(*x),
            H - B,
            color,
            esc(label)
        );
    }
    for (name, color, pts) in series {
        let mut d = String::new();
        let mut pen = false;
        for (x, y) in pts {
            match y {
                Some(y) if y.is_finite() => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        sx(*x),
                        sy(*y)
                    );
                    pen = true;
                }
                _ => pen = false,
            }
        }
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.5"><title>{}</title></path>"#,
            esc(name)
        );
    }
    s.push_str("</svg><div class=legend>");
    for (name, color, _) in series {
        let _ = write!(s, r#"<span style="color:{color}">■ {}</span> "#, esc(name));
    }
    s.push_str("</div>");
    s
}

const TIME_ERROR_TITLE: &str =
    "Time error: |estimate − true time| over synchronized nodes (truth: the shared host clock)";
const SIGMA_TITLE: &str = "σ: the uncertainty nodes claim for their time estimate";
const CLOCKS_TITLE: &str = "Clocks in trouble: nodes";
const QUARANTINE_TITLE: &str =
    "Neighbourhood watch: quarantine entries in all nodes' views (a byzantine node quarantined by its n cell peers counts n)";

/// Seconds as the report writes durations (`1.25us`, `50ms`); below a nanosecond, `0ns`.
fn fmt_s(y: f64) -> String {
    units::fmt_ns((y.max(0.0) * 1e9).round() as u64)
}

/// The clocks over the timeline: |time error| against ground truth (the host clock every
/// namespace shares), the σ the nodes claim, and how many are in trouble. A node whose error
/// leaves its 3σ while σ stays small is being lied to (a compromised stratum-0), which the
/// first two plots show side by side and the third counts.
fn time_plots(
    series: &[SeriesPoint],
    x: &dyn Fn(&SeriesPoint) -> f64,
    x_max: f64,
    marks: &[(f64, String, &'static str)],
) -> String {
    if series.iter().all(|p| p.time.is_none()) {
        return "<h3>Time error and σ</h3><p>No agent reported a clock (a lab without a <code>role: authority</code> node runs no time layer).</p>".into();
    }
    let pts = |f: &dyn Fn(&TimeSample) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        series
            .iter()
            .map(|p| (x(p), p.time.as_ref().and_then(f)))
            .collect()
    };
    let count = |f: fn(&TimeSample) -> u32| pts(&move |t| Some(f64::from(f(t))));
    let mut s = plot(
        TIME_ERROR_TITLE,
        "|error|",
        x_max,
        &[
            ("largest |error|", "#c0392b", pts(&|t| t.error_abs_max_s)),
            ("median |error|", "#2980b9", pts(&|t| t.error_abs_median_s)),
        ],
        marks,
        &fmt_s,
    );
    s += &plot(
        SIGMA_TITLE,
        "σ",
        x_max,
        &[
            ("largest σ", "#8e44ad", pts(&|t| t.sigma_max_s)),
            ("median σ", "#2980b9", pts(&|t| t.sigma_median_s)),
        ],
        marks,
        &fmt_s,
    );
    s += &plot(
        CLOCKS_TITLE,
        "nodes",
        x_max,
        &[
            (
                "compromise alarm active",
                "#c0392b",
                count(|t| t.alarm_active),
            ),
            ("alarmed so far", "#8e44ad", count(|t| t.alarmed_ever)),
            ("error beyond 3σ", "#e67e22", count(|t| t.outside_3sigma)),
            ("in holdover", "#7f8c8d", count(|t| t.in_holdover)),
            ("not synchronized", "#34495e", count(|t| t.nodes - t.synced)),
        ],
        marks,
        &|y| format!("{y:.0}"),
    );
    s
}

/// The title of the thermal plot.
const THERMAL_TITLE: &str =
    "Thermal load per shell (highest tile), with the 90 % backpressure line";

/// Thermal load per shell over the run, with the spec's ~90 % backpressure threshold as a
/// line; nothing when no node has a thermal sub-machine.
fn thermal_plot(
    series: &[SeriesPoint],
    x: &dyn Fn(&SeriesPoint) -> f64,
    x_max: f64,
    marks: &[(f64, String, &'static str)],
) -> String {
    const COLORS: [&str; 6] = [
        "#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#e67e22", "#34495e",
    ];
    let shells: std::collections::BTreeSet<&String> =
        series.iter().flat_map(|p| p.thermal.keys()).collect();
    if shells.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = shells.iter().map(|s| s.to_string()).collect();
    let mut lines: Vec<Series<'_>> = shells
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (shell, label))| {
            (
                label.as_str(),
                COLORS[i % COLORS.len()],
                series
                    .iter()
                    .map(|p| (x(p), p.thermal.get(*shell).copied()))
                    .collect(),
            )
        })
        .collect();
    lines.push((
        "90 % (backpressure starts)",
        "#7f8c8d",
        series.iter().map(|p| (x(p), Some(0.9))).collect(),
    ));
    plot(THERMAL_TITLE, "load", x_max, &lines, marks, &|y| {
        format!("{:.0} %", y * 100.0)
    })
}

/// Render the report.
pub fn html(
    sc: &Scenario,
    time_scale: f64,
    plan: &[Planned],
    events: &[Event],
    series: &[SeriesPoint],
    verdicts: &[Verdict],
    real_s: f64,
) -> String {
    let passed = verdicts.iter().all(|v| v.pass);
    let x_max = (sc.duration_ns as f64 / 1e9).max(real_s * time_scale);
    let marks: Vec<(f64, String, &'static str)> = events
        .iter()
        // Only faults that were injected are drawn (a failed one is a failed verdict).
        .filter(|e| e.ok)
        .filter(|e| !e.kind.starts_with("link") || events.len() < 200)
        .map(|e| {
            (
                e.t_emulated_s,
                format!("{:.1}s: {}", e.t_emulated_s, e.detail),
                marker_color(&e.kind),
            )
        })
        .collect();
    let x = |p: &SeriesPoint| p.t_real_s * time_scale;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>lightcone run: {name}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:920px;margin:1em auto;color:#222}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ddd;padding:4px 6px;font-size:13px;vertical-align:top}}
.pass{{color:#1e7e34;font-weight:bold}}.fail{{color:#b00020;font-weight:bold}}.legend{{font-size:12px;margin-bottom:1em}}
pre{{background:#f6f6f6;padding:6px;font-size:12px;overflow:auto;max-height:300px}}</style></head><body>
<h1>{name}: <span class="{cls}">{verdict}</span></h1>
<p>seed {seed} · duration {dur} emulated · time_scale {ts} (emulated s per real s) · {real:.1} s real</p>
<h2>Expectations</h2><table><tr><th>expectation</th><th>spec</th><th>expected</th><th>measured</th><th>verdict</th><th>how</th></tr>"#,
        name = esc(&sc.name),
        cls = if passed { "pass" } else { "fail" },
        verdict = if passed { "PASS" } else { "FAIL" },
        seed = sc.seed,
        dur = units::fmt_ns(sc.duration_ns),
        ts = time_scale,
        real = real_s,
    );
    if verdicts.is_empty() {
        s.push_str("<tr><td colspan=6>no expectations</td></tr>");
    }
    for v in verdicts {
        let spec = match (&v.spec, &v.looser_than_spec) {
            (Some(spec), Some(why)) => format!(
                r#"{}<br><b class="fail">looser than spec</b>: {}"#,
                esc(spec),
                esc(why)
            ),
            (Some(spec), None) => esc(spec),
            (None, _) => "—".to_string(),
        };
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td><td>{}</td></tr>"#,
            esc(&v.expectation),
            spec,
            esc(&v.expected),
            esc(&v.measured),
            if v.pass { "pass" } else { "fail" },
            if v.pass { "PASS" } else { "FAIL" },
            esc(&v.detail)
        );
    }
    s.push_str("</table><h2>Over the timeline</h2><p>x: emulated time since the timeline started. Dashed lines: faults (red crash, green restart, orange partition, blue heal, grey link change, teal clock fault, purple byzantine node); hover for details.</p>");
    let pts = |f: &dyn Fn(&SeriesPoint) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        series.iter().map(|p| (x(p), f(p))).collect()
    };
    s += &plot(
        "Membership: entries in all nodes' views, by state",
        "entries",
        x_max,
        &[
            ("alive", "#27ae60", pts(&|p| Some(f64::from(p.alive)))),
            ("suspect", "#e67e22", pts(&|p| Some(f64::from(p.suspect)))),
            ("dead", "#c0392b", pts(&|p| Some(f64::from(p.dead)))),
        ],
        &marks,
        &|y| format!("{y:.0}"),
    );
    s += &plot(
        "Routes: entries in all nodes' routing tables (a cut between cells, clusters or layers shows here)",
        "routes",
        x_max,
        &[("routes", "#8e44ad", pts(&|p| Some(f64::from(p.routes))))],
        &marks,
        &|y| format!("{y:.0}"),
    );
    s += &plot(
        QUARANTINE_TITLE,
        "entries",
        x_max,
        &[(
            "quarantine entries",
            "#8e44ad",
            pts(&|p| Some(f64::from(p.quarantined))),
        )],
        &marks,
        &|y| format!("{y:.0}"),
    );
    s += &plot(
        "Locality: share of bytes staying inside the source's cell (cumulative since start)",
        "local",
        x_max,
        &[("cell locality", "#2980b9", pts(&|p| p.locality))],
        &marks,
        &|y| format!("{:.3}%", y * 100.0),
    );
    let links: Vec<String> = series
        .iter()
        .flat_map(|p| p.links.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let colors = [
        "#34495e", "#16a085", "#d35400", "#8e44ad", "#2c3e50", "#c0392b",
    ];
    let link_series: Vec<Series<'_>> = links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.as_str(),
                colors[i % colors.len()],
                series
                    .iter()
                    .map(|p| (x(p), p.links.get(l).copied().flatten()))
                    .collect(),
            )
        })
        .collect();
    s += &plot(
        "Link delay (emulated, one way; gaps while the link is down)",
        "delay",
        x_max,
        &link_series,
        &marks,
        &fmt_s,
    );
    s += &time_plots(series, &x, x_max, &marks);
    s += &thermal_plot(series, &x, x_max, &marks);
    s.push_str("<h2>Expanded timeline</h2><pre>");
    s += &esc(&super::expand::render(plan));
    s.push_str("</pre><h2>Events</h2><pre>");
    for e in events {
        let _ = writeln!(
            s,
            "{:>10.3}s emulated  {:>8.3}s real  {}{}",
            e.t_emulated_s,
            e.t_real_s,
            esc(&e.detail),
            e.error
                .as_ref()
                .map(|x| format!("  — FAILED: {}", esc(x)))
                .unwrap_or_default()
        );
    }
    s.push_str("</pre></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::scenario::TopologySource;

    fn scenario() -> Scenario {
        Scenario {
            name: "synthetic".into(),
            topology: TopologySource::Inline(String::new()),
            seed: 1,
            duration_ns: 90_000_000_000,
            timeline: Vec::new(),
            expect: Vec::new(),
        }
    }

    /// The `<svg>` that follows the `<h3>` titled `title`, if any.
    fn svg_after<'a>(html: &'a str, title: &str) -> Option<&'a str> {
        let at = html.find(&format!("<h3>{}</h3>", esc(title)))?;
        let rest = &html[at..];
        let start = rest.find("<svg")?;
        let end = rest[start..].find("</svg>")?;
        Some(&rest[start..start + end])
    }

    /// Drawn points of the polylines of an svg (`M`/`L` commands of its paths).
    fn points(svg: &str) -> usize {
        svg.split("<path d=\"")
            .skip(1)
            .map(|p| p[..p.find('"').unwrap()].matches(['M', 'L']).count())
            .sum()
    }

    /// A stratum-0 compromise at 25 s: every node's error jumps to 50 ms while σ stays at
    /// microseconds, and the served nodes alarm.
    fn compromised_series() -> Vec<SeriesPoint> {
        (0..=90)
            .map(|t| {
                let after = t >= 25;
                SeriesPoint {
                    t_real_s: f64::from(t),
                    alive: 156,
                    time: Some(TimeSample {
                        nodes: 13,
                        synced: 13,
                        error_abs_max_s: Some(if after { 0.05 } else { 2e-6 }),
                        error_abs_median_s: Some(if after { 0.05 } else { 1e-6 }),
                        sigma_median_s: Some(3e-6),
                        sigma_max_s: Some(8e-6),
                        outside_3sigma: if after { 12 } else { 0 },
                        alarm_active: if t >= 40 { 12 } else { 0 },
                        alarmed_ever: if t >= 40 { 12 } else { 0 },
                        in_holdover: 0,
                        coverage_min: Some(1.0),
                    }),
                    ..Default::default()
                }
            })
            .collect()
    }

    #[test]
    fn time_error_and_sigma_are_plotted_with_the_fault_marker() {
        let events = vec![Event {
            t_real_s: 25.0,
            t_emulated_s: 25.0,
            kind: "clock".into(),
            detail: "stratum0_compromise l0a0 +50ms".into(),
            ok: true,
            error: None,
        }];
        let html = html(
            &scenario(),
            1.0,
            &[],
            &events,
            &compromised_series(),
            &[],
            90.0,
        );
        assert!(!html.contains("Not plotted over time yet"));
        for title in [TIME_ERROR_TITLE, SIGMA_TITLE, CLOCKS_TITLE] {
            let svg = svg_after(&html, title).unwrap_or_else(|| panic!("no plot {title:?}"));
            assert!(points(svg) >= 2 * 91, "{title}: polylines not drawn: {svg}");
            assert!(
                svg.contains(r##"stroke="#16a085" stroke-dasharray"##),
                "{title}: no clock-fault marker"
            );
        }
        let err = svg_after(&html, TIME_ERROR_TITLE).unwrap();
        assert!(
            err.contains(">50ms<"),
            "the error axis reaches 50 ms: {err}"
        );
        let sigma = svg_after(&html, SIGMA_TITLE).unwrap();
        assert!(sigma.contains("us<"), "σ is in microseconds: {sigma}");
    }

    #[test]
    fn a_lab_without_clocks_says_so_instead_of_plotting() {
        let series: Vec<SeriesPoint> = (0..10)
            .map(|t| SeriesPoint {
                t_real_s: f64::from(t),
                ..Default::default()
            })
            .collect();
        let html = html(&scenario(), 1.0, &[], &[], &series, &[], 10.0);
        assert!(html.contains("No agent reported a clock"));
        assert!(!html.contains("Clocks in trouble"));
    }

    #[test]
    fn gaps_while_unsynchronized_break_the_line() {
        let mut series = compromised_series();
        for p in &mut series[40..50] {
            let t = p.time.as_mut().unwrap();
            t.error_abs_max_s = None;
            t.error_abs_median_s = None;
        }
        let html = html(&scenario(), 1.0, &[], &[], &series, &[], 90.0);
        let err = svg_after(&html, TIME_ERROR_TITLE).unwrap();
        // Each of the two series restarts after the gap: two moves each.
        assert_eq!(err.matches("d=\"M").count(), 2);
        assert_eq!(err.matches(" M").count(), 2, "{err}");
    }

    #[test]
    fn quarantine_spreading_is_plotted_with_the_byzantine_marker() {
        let series: Vec<SeriesPoint> = (0..40)
            .map(|t| SeriesPoint {
                t_real_s: f64::from(t),
                quarantined: if t < 12 { 0 } else { (t - 11).min(11) as u32 },
                ..Default::default()
            })
            .collect();
        let events = vec![Event {
            t_real_s: 8.0,
            t_emulated_s: 8.0,
            kind: "byzantine".into(),
            detail: "byzantine l0c0k0t4: drop_forwarding".into(),
            ok: true,
            error: None,
        }];
        let html = html(&scenario(), 1.0, &[], &events, &series, &[], 40.0);
        let svg = svg_after(&html, QUARANTINE_TITLE).expect("a quarantine plot");
        assert_eq!(points(svg), 40, "polyline not drawn: {svg}");
        assert!(
            svg.contains(r##"stroke="#8e44ad" stroke-dasharray"##),
            "no byzantine marker: {svg}"
        );
        assert!(svg.contains(">11<"), "the axis reaches 11 entries: {svg}");
    }

    /// The y-axis tick labels of a plot, bottom to top.
    fn y_labels(svg: &str) -> Vec<&str> {
        svg.split(r#"text-anchor="end">"#)
            .skip(1)
            .map(|t| &t[..t.find('<').unwrap()])
            .collect()
    }

    /// Issue 11: a plot whose series are all zero reads `0 … 4`, not `1, 0, 0, -0, -1`.
    #[test]
    fn flat_plots_have_a_sensible_axis() {
        let zeros = vec![(0.0, Some(0.0)), (10.0, Some(0.0))];
        let svg = plot("t", "n", 10.0, &[("s", "#000", zeros)], &[], &|y| {
            format!("{y:.0}")
        });
        assert!(!svg.contains(">-0<") && !svg.contains(">-1<"), "{svg}");
        let labels = y_labels(&svg);
        assert_eq!(labels, ["0", "1", "2", "3", "4"], "{svg}");
        // A flat non-zero series sits inside a scale from zero.
        let flat = vec![(0.0, Some(12.0)), (10.0, Some(12.0))];
        let svg = plot("t", "n", 10.0, &[("s", "#000", flat)], &[], &|y| {
            format!("{y:.0}")
        });
        let labels = y_labels(&svg);
        assert_eq!(labels, ["0", "6", "12", "18", "24"], "{svg}");
    }

    /// Issue 11 item 2: a fault that failed is not drawn as if it happened.
    #[test]
    fn thermal_load_is_plotted_per_shell_with_the_90_percent_line() {
        let series: Vec<SeriesPoint> = (0..20)
            .map(|i| SeriesPoint {
                t_real_s: f64::from(i),
                thermal: [
                    ("layer 0".to_string(), 0.5),
                    ("layer 1".to_string(), 0.04 * f64::from(i)),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            })
            .collect();
        let x = |p: &SeriesPoint| p.t_real_s;
        let html = thermal_plot(&series, &x, 20.0, &[]);
        let svg = svg_after(&html, THERMAL_TITLE).expect("a thermal plot");
        assert_eq!(points(svg), 3 * 20, "two shells and the 90 % line: {svg}");
        assert!(html.contains("layer 0") && html.contains("layer 1") && html.contains("90 %"));
        // No thermal section: no plot.
        let none: Vec<SeriesPoint> = vec![SeriesPoint::default(); 3];
        assert!(thermal_plot(&none, &x, 3.0, &[]).is_empty());
    }

    #[test]
    fn failed_injections_are_not_drawn() {
        let ev = |ok: bool| Event {
            t_real_s: 5.0,
            t_emulated_s: 5.0,
            kind: "crash".into(),
            detail: "crash l0c0k0t3".into(),
            ok,
            error: (!ok).then(|| "no such node".into()),
        };
        let drawn = html(&scenario(), 1.0, &[], &[ev(true)], &[], &[], 10.0);
        let not = html(&scenario(), 1.0, &[], &[ev(false)], &[], &[], 10.0);
        assert!(drawn.contains("<title>5.0s: crash l0c0k0t3</title>"));
        assert!(!not.contains("<title>5.0s: crash l0c0k0t3</title>"));
    }
}
