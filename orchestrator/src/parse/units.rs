//! Quantities written with units in topology and scenario files and on the command line:
//! durations (`20ms`, `1.5h`), signed durations (`-500us`), percentages (`1%`), bit rates
//! (`100Mbit`), byte sizes (`64KiB`). Each parser returns a message that says what would be
//! valid.

/// Longest duration a link can hold: a week of emulated time (light-hours are the norm).
pub const MAX_DURATION_NS: u64 = 7 * 24 * 3600 * 1_000_000_000;

fn split_number(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let end = t
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')
        })
        .unwrap_or(t.len());
    // `e` may start a unit only if no digit follows it; keep scientific notation simple:
    // accept it only when what follows the number is a unit of letters.
    let (num, unit) = t.split_at(end);
    let (num, unit) = if num.ends_with(['e', 'E']) {
        (&num[..num.len() - 1], &t[end - 1..])
    } else {
        (num, unit)
    };
    let v: f64 = num.parse().ok()?;
    Some((v, unit.trim()))
}

/// A duration such as `20ms`, `2.5 s`, `499s`, `1h`, `250us`, `10ns`, or `0`.
pub fn duration_ns(text: &str) -> Result<u64, String> {
    const HELP: &str = "write a duration with a unit: ns, us, ms, s, min or h (e.g. 20ms, 1.5s)";
    let (v, unit) =
        split_number(text).ok_or_else(|| format!("{text:?} is not a duration; {HELP}"))?;
    if !v.is_finite() {
        return Err(format!("{text:?} is not a finite duration"));
    }
    if v < 0.0 {
        return Err(format!("a duration cannot be negative (got {text})"));
    }
    let scale = match unit {
        "" if v == 0.0 => 1.0,
        "" => return Err(format!("{text:?} has no unit; {HELP}")),
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "min" | "m" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        other => return Err(format!("unknown duration unit {other:?}; {HELP}")),
    };
    let ns = v * scale;
    if ns > MAX_DURATION_NS as f64 {
        return Err(format!(
            "{text} is longer than the longest supported duration (7 days)"
        ));
    }
    Ok(ns.round() as u64)
}

/// A signed duration (`-1.5ms`, `+2s`, `20ms`), in ns: a clock step or a served bias. One
/// sign at most (`+` is read by [`duration_ns`]'s number).
pub fn signed_duration_ns(text: &str) -> Result<f64, String> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let ns = duration_ns(rest)? as f64;
    Ok(if neg { -ns } else { ns })
}

/// A percentage `1%`, `0.5 %`, `100%`, returned as a fraction in 0..=1.
pub fn percent(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let Some(num) = t.strip_suffix('%') else {
        return Err(format!(
            "{t:?} is not a percentage; write it with a % sign, e.g. 1% or 0.5%"
        ));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{t:?} is not a percentage; write e.g. 1% or 0.5%"))?;
    if !(0.0..=100.0).contains(&v) || !v.is_finite() {
        return Err(format!("a percentage must be between 0% and 100%, got {t}"));
    }
    Ok(v / 100.0)
}

/// A bit rate `100Mbit`, `10 Mbit/s`, `1.5Gbit`, `64kbit`, returned in bits per second.
/// Byte-based forms (`MB/s`, tc's `mbps`) are refused on purpose: tc reads `mbps` as
/// megabytes per second, a classic source of 8× mistakes.
pub fn rate_bps(text: &str) -> Result<u64, String> {
    const HELP: &str =
        "write a rate in bits per second: bit, kbit, Mbit, Gbit or Tbit (e.g. 100Mbit)";
    let (v, unit) = split_number(text).ok_or_else(|| format!("{text:?} is not a rate; {HELP}"))?;
    let unit = unit.strip_suffix("/s").unwrap_or(unit).to_ascii_lowercase();
    let scale = match unit.as_str() {
        "bit" | "bits" => 1.0,
        "kbit" | "kbits" => 1e3,
        "mbit" | "mbits" => 1e6,
        "gbit" | "gbits" => 1e9,
        "tbit" | "tbits" => 1e12,
        "" => return Err(format!("{text:?} has no unit; {HELP}")),
        u if u.ends_with("bps") || u.ends_with('b') => {
            return Err(format!("{text:?} is ambiguous (bytes or bits?); {HELP}"))
        }
        other => return Err(format!("unknown rate unit {other:?}; {HELP}")),
    };
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("a rate must be greater than 0, got {text}"));
    }
    let bps = v * scale;
    if bps < 8.0 {
        return Err(format!(
            "a rate below 8 bit/s cannot carry a byte per second, got {text}"
        ));
    }
    if bps > 1e15 {
        return Err(format!(
            "{text} is above the largest supported rate (1000 Tbit)"
        ));
    }
    Ok(bps.round() as u64)
}

/// A size in bytes: `1500`, `64KiB`, `1MiB`, `10MB`.
pub fn bytes(text: &str) -> Result<u64, String> {
    const HELP: &str = "write a size in bytes: B, KB, KiB, MB, MiB, GB or GiB (e.g. 64KiB)";
    let (v, unit) = split_number(text).ok_or_else(|| format!("{text:?} is not a size; {HELP}"))?;
    let scale = match unit {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?}; {HELP}")),
    };
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("a size must be greater than 0, got {text}"));
    }
    Ok((v * scale).round() as u64)
}

/// Format nanoseconds the way a person writes them (`20ms`, `499s`, `1.5us`).
pub fn fmt_ns(ns: u64) -> String {
    let (scale, unit) = if ns >= 3_600_000_000_000 && ns.is_multiple_of(60_000_000_000) {
        (3.6e12, "h")
    } else {
        largest_unit(ns, &[(1e9, "s"), (1e6, "ms"), (1e3, "us")], "ns")
    };
    fmt_scaled(ns as f64 / scale, unit)
}

/// Format bits per second (`100Mbit`).
pub fn fmt_bps(bps: u64) -> String {
    let (scale, unit) = largest_unit(bps, &[(1e9, "Gbit"), (1e6, "Mbit"), (1e3, "kbit")], "bit");
    fmt_scaled(bps as f64 / scale, unit)
}

/// The first of `units` (largest first) that `v` reaches, else `base` (scale 1).
fn largest_unit(v: u64, units: &[(f64, &'static str)], base: &'static str) -> (f64, &'static str) {
    units
        .iter()
        .copied()
        .find(|(scale, _)| v as f64 >= *scale)
        .unwrap_or((1.0, base))
}

/// `v` with at most three decimals, trailing zeros dropped, then `unit`.
fn fmt_scaled(v: f64, unit: &str) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `(text, value)` parses to `value`; each `(text, words)` is refused with a
    /// message holding `words`.
    fn check<T: PartialEq + std::fmt::Debug>(
        parse: impl Fn(&str) -> Result<T, String>,
        good: &[(&str, T)],
        bad: &[(&str, &str)],
    ) {
        for (text, want) in good {
            assert_eq!(parse(text).as_ref(), Ok(want), "{text}");
        }
        for (text, words) in bad {
            let e = parse(text).expect_err(text);
            assert!(e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn durations() {
        check(
            duration_ns,
            &[
                ("20ms", 20_000_000),
                ("1.5s", 1_500_000_000),
                ("499 s", 499_000_000_000),
                ("250us", 250_000),
                ("2h", 7_200_000_000_000),
                ("0", 0),
            ],
            &[
                ("-5ms", "negative"),
                ("20", "no unit"),
                ("20 parsecs", "unknown duration unit"),
                ("8d", "longest"),
            ],
        );
    }

    #[test]
    fn signed_durations() {
        check(
            signed_duration_ns,
            &[("-500us", -500_000.0), ("+2ms", 2_000_000.0), ("1s", 1e9)],
            &[
                ("--1ms", "negative"),
                ("++1ms", "not a duration"),
                ("-5", "no unit"),
            ],
        );
    }

    #[test]
    fn percents() {
        check(
            percent,
            &[("1%", 0.01), ("100 %", 1.0)],
            &[("150%", "between 0% and 100%"), ("0.3", "% sign")],
        );
    }

    #[test]
    fn rates() {
        check(
            rate_bps,
            &[
                ("100Mbit", 100_000_000),
                ("10 Mbit/s", 10_000_000),
                ("1.5gbit", 1_500_000_000),
            ],
            &[("0Mbit", "greater than 0"), ("10mbps", "ambiguous")],
        );
    }

    #[test]
    fn sizes_and_formatting() {
        check(bytes, &[("64KiB", 65536), ("1500", 1500)], &[]);
        assert_eq!(fmt_ns(20_000_000), "20ms");
        assert_eq!(fmt_ns(499_004_784_000), "499.005s");
        assert_eq!(fmt_ns(7_200_000_000_000), "2h");
        assert_eq!(fmt_bps(100_000_000), "100Mbit");
        assert_eq!(fmt_bps(1_500), "1.5kbit");
    }
}
