//! Progress of long work (`up` of a big lab, `run`'s timeline) as counts on one line.
//!
//! Producers ([`crate::supervisor::run`], [`crate::experiment::run`]) report progress through
//! their ordinary line callback as *marker lines* ([`marker`]); the detached `up` relays them
//! through its pipe unchanged. Only the CLI renders them ([`Renderer`]): redrawn in place on
//! stderr when stderr is a terminal, dropped otherwise, so logs, pipes and tests never see
//! them.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// First character of a marker line (ASCII STX: never in ordinary output).
const MARK: char = '\u{2}';

/// A marker line: `done` of `total` `what` (namespaces, links, addresses, agents, timeline).
pub fn marker(what: &str, done: u64, total: u64) -> String {
    format!("{MARK}PROGRESS {what} {done} {total}")
}

/// The `(what, done, total)` of a marker line, or `None` for an ordinary line.
pub fn parse(line: &str) -> Option<(&str, u64, u64)> {
    let rest = line.strip_prefix(MARK)?.strip_prefix("PROGRESS ")?;
    let mut it = rest.split(' ');
    let (what, done, total) = (it.next()?, it.next()?, it.next()?);
    Some((what, done.parse().ok()?, total.parse().ok()?))
}

/// Throttles marker lines at the producer: at most one per `every` for each kind, and
/// always the last (`done == total`).
pub struct Throttle {
    every: Duration,
    last: Vec<(String, Instant)>,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: Vec::new(),
        }
    }

    /// The marker line to emit now, if any.
    pub fn tick(&mut self, what: &str, done: u64, total: u64) -> Option<String> {
        let now = Instant::now();
        let slot = match self.last.iter().position(|(w, _)| w == what) {
            Some(i) => &mut self.last[i].1,
            None => {
                self.last.push((what.to_string(), now - self.every));
                &mut self.last.last_mut().expect("just pushed").1
            }
        };
        if done >= total || now.duration_since(*slot) >= self.every {
            *slot = now;
            Some(marker(what, done, total))
        } else {
            None
        }
    }
}

/// Draws progress on stderr (terminal only) and prints ordinary lines, clearing the
/// progress line first so the two never interleave on screen.
pub struct Renderer {
    tty: bool,
    shown: bool,
    counts: Vec<(String, u64, u64)>,
    unit: fn(&str, u64) -> String,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new(std::io::stderr().is_terminal())
    }
}

impl Renderer {
    /// `tty`: whether to draw at all (normally: stderr is a terminal).
    pub fn new(tty: bool) -> Renderer {
        Renderer {
            tty,
            shown: false,
            counts: Vec::new(),
            unit: |what, n| {
                if what == "timeline" {
                    format!("{:.1}s", n as f64 / 1000.0)
                } else {
                    n.to_string()
                }
            },
        }
    }

    /// Handle one line from a producer: markers update the progress line, anything else
    /// goes to `out` (stdout or stderr, as the command wants).
    pub fn line(&mut self, line: &str, to_stderr: bool) {
        if let Some((what, done, total)) = parse(line) {
            self.progress(what, done, total);
            return;
        }
        self.clear();
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    /// Update one count and redraw.
    pub fn progress(&mut self, what: &str, done: u64, total: u64) {
        match self.counts.iter_mut().find(|(w, _, _)| w == what) {
            Some(c) => (c.1, c.2) = (done, total),
            None => self.counts.push((what.to_string(), done, total)),
        }
        if !self.tty {
            return;
        }
        let text = self.text();
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{text}");
        let _ = e.flush();
        self.shown = true;
    }

    /// The progress line as drawn, e.g. `namespaces 300/300  links 120/450`.
    pub fn text(&self) -> String {
        self.counts
            .iter()
            .map(|(w, d, t)| format!("{w} {}/{}", (self.unit)(w, *d), (self.unit)(w, *t)))
            .collect::<Vec<_>>()
            .join("  ")
    }

    /// Erase the progress line (before ordinary output, and at the end).
    pub fn clear(&mut self) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
            self.shown = false;
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_ordinary_lines_are_not_markers() {
        assert_eq!(parse(&marker("links", 12, 450)), Some(("links", 12, 450)));
        assert_eq!(parse("links 12/450"), None);
        assert_eq!(parse("\u{2}PROGRESS links x 4"), None);
    }

    #[test]
    fn throttle_keeps_the_first_and_last_and_drops_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert!(t.tick("namespaces", 1, 100).is_some());
        assert!(t.tick("namespaces", 2, 100).is_none());
        assert!(
            t.tick("links", 1, 10).is_some(),
            "each kind has its own clock"
        );
        assert!(t.tick("namespaces", 100, 100).is_some());
    }

    #[test]
    fn renderer_counts_every_kind_in_order_and_draws_nothing_without_a_tty() {
        let mut r = Renderer::new(false);
        r.line(&marker("namespaces", 300, 300), false);
        r.line(&marker("links", 120, 450), false);
        r.line(&marker("namespaces", 300, 300), false);
        assert_eq!(r.text(), "namespaces 300/300  links 120/450");
        assert!(!r.shown);
        let mut t = Renderer::new(false);
        t.progress("timeline", 12_345, 60_000);
        assert_eq!(t.text(), "timeline 12.3s/60.0s");
    }
}
