//! The HTML report: a verdict table (expected, measured, verdict, how) and plots over the
//! emulated timeline as inline SVG — membership (alive/suspect/dead entries over all views),
//! locality, link delay — with a marker at every fault. No scripts, no external files.

use std::fmt::Write;

use super::expand::Planned;
use super::expect::Verdict;
use super::runner::{Event, SeriesPoint};
use super::scenario::Scenario;
use crate::topology::units;

const W: f64 = 860.0;
const H: f64 = 200.0;
const L: f64 = 60.0;
const R: f64 = 20.0;
const T: f64 = 16.0;
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
        let pad = if hi.abs() > 0.0 { hi.abs() * 0.01 } else { 1.0 };
        lo -= pad;
        hi += pad;
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
    for i in 0..=4 {
        let y = lo + (hi - lo) * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{tx}" y="{ty:.1}" font-size="10" text-anchor="end">{label}</text>"##,
            x2 = W - R,
            y = sy(y),
            tx = L - 4.0,
            ty = sy(y) + 3.0,
            label = esc(&fmt_y(y))
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
<h2>Expectations</h2><table><tr><th>expectation</th><th>expected</th><th>measured</th><th>verdict</th><th>how</th></tr>"#,
        name = esc(&sc.name),
        cls = if passed { "pass" } else { "fail" },
        verdict = if passed { "PASS" } else { "FAIL" },
        seed = sc.seed,
        dur = units::fmt_ns(sc.duration_ns),
        ts = time_scale,
        real = real_s,
    );
    if verdicts.is_empty() {
        s.push_str("<tr><td colspan=5>no expectations</td></tr>");
    }
    for v in verdicts {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td><td>{}</td></tr>"#,
            esc(&v.expectation),
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
        &|y| units::fmt_ns((y.max(0.0) * 1e9) as u64),
    );
    s.push_str("<h3>Time error and σ</h3><p>Not plotted over time yet: the runner samples agents' <code>/state</code> for membership only. Each agent's clock is in its <code>/state</code> <code>time</code> section and in <code>lightcone_time_*</code> metrics; the expectations <code>time_alarmed_nodes</code> and <code>time_coverage</code> judge them at the end of the run.</p>");
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
