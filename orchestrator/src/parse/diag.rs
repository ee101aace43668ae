//! Diagnostics: every mistake in a topology or scenario, with file:line:column, what is wrong and what
//! would be valid, rendered the way rustc renders errors.

use std::fmt::Write;

use super::yaml::{Pos, SyntaxError};

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

/// All the diagnostics of one file, in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.items.push(Diagnostic {
            pos,
            message: message.into(),
            help: None,
        });
    }
    pub fn error_help(&mut self, pos: Pos, message: impl Into<String>, help: impl Into<String>) {
        self.items.push(Diagnostic {
            pos,
            message: message.into(),
            help: Some(help.into()),
        });
    }
    /// A document that could not be read as YAML (or crossed one of the reader's limits).
    pub fn yaml_error(&mut self, e: &SyntaxError) {
        match &e.help {
            Some(help) => self.error_help(e.pos, e.message.clone(), help.clone()),
            None => self.error_help(
                e.pos,
                format!("not valid YAML: {}", e.message),
                "check indentation, brackets and quotes near this place",
            ),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| a.pos.cmp(&b.pos).then(a.message.cmp(&b.message)));
        self.items.dedup();
    }

    /// Render every diagnostic with a source excerpt and a caret under the column.
    pub fn render(&self, file: &str, src: &str) -> String {
        let mut out = self.render_items("error", file, src);
        let n = self.items.len();
        let _ = writeln!(
            out,
            "{file}: {n} error{} found; nothing was changed",
            if n == 1 { "" } else { "s" }
        );
        out
    }

    /// Render every diagnostic as a warning (the file is accepted), as [`render`] does.
    ///
    /// [`render`]: Diagnostics::render
    pub fn render_warnings(&self, file: &str, src: &str) -> String {
        self.render_items("warning", file, src)
    }

    fn render_items(&self, label: &str, file: &str, src: &str) -> String {
        let lines: Vec<&str> = src.lines().collect();
        let mut out = String::new();
        for d in &self.items {
            let _ = writeln!(out, "{label}: {}", d.message);
            let _ = writeln!(out, "  --> {}:{}:{}", file, d.pos.line, d.pos.col);
            if let Some(line) = d.pos.line.checked_sub(1).and_then(|i| lines.get(i)) {
                let num = d.pos.line.to_string();
                let pad = " ".repeat(num.len());
                let _ = writeln!(out, "{pad} |");
                let (excerpt, caret_col) = excerpt(line, d.pos.col.saturating_sub(1));
                let _ = writeln!(out, "{num} | {excerpt}");
                let _ = writeln!(out, "{pad} | {}^", " ".repeat(caret_col));
            }
            if let Some(help) = &d.help {
                let _ = writeln!(out, "  = help: {help}");
            }
            out.push('\n');
        }
        out
    }
}

/// Longest source line shown under a message, in characters.
const EXCERPT_MAX: usize = 100;

/// The part of `line` shown under a message, and the caret's column in it: the whole line
/// when short, else a window around `col` (0-based, in characters) marked with `…`.
fn excerpt(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    let col = col.min(chars.len());
    if chars.len() <= EXCERPT_MAX {
        return (line.to_string(), col);
    }
    let start = col.saturating_sub(EXCERPT_MAX / 2);
    let end = (start + EXCERPT_MAX).min(chars.len());
    let mut s: String = chars[start..end].iter().collect();
    let mut caret = col - start;
    if start > 0 {
        s.insert(0, '…');
        caret += 1;
    }
    if end < chars.len() {
        s.push('…');
    }
    (s, caret)
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `options` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    options
        .iter()
        .map(|o| (distance(word, o), *o))
        .filter(|(d, o)| *d <= 2.max(o.len() / 3))
        .min()
        .map(|(_, o)| o)
}

/// An error and its sources on one line, `outer: inner: …`, leaving out a source whose text
/// the line already holds. Errors here often name their source in their own message
/// (`cannot read x: {source}`) and return it from `source()` too; printing the whole chain
/// then said everything twice.
pub fn error_chain<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut out = String::new();
    for e in chain {
        let m = e.to_string();
        if m.is_empty() || out.contains(&m) {
            continue;
        }
        if !out.is_empty() {
            out += ": ";
        }
        out += &m;
    }
    out
}
