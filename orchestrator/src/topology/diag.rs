//! Diagnostics: every mistake in a topology, with file:line:column, what is wrong and what
//! would be valid, rendered the way rustc renders errors.

use std::fmt::Write;

use super::yaml::Pos;

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
        let lines: Vec<&str> = src.lines().collect();
        let mut out = String::new();
        for d in &self.items {
            let _ = writeln!(out, "error: {}", d.message);
            let _ = writeln!(out, "  --> {}:{}:{}", file, d.pos.line, d.pos.col);
            if let Some(line) = d.pos.line.checked_sub(1).and_then(|i| lines.get(i)) {
                let num = d.pos.line.to_string();
                let pad = " ".repeat(num.len());
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{num} | {line}");
                let caret_col = d.pos.col.saturating_sub(1).min(line.chars().count());
                let _ = writeln!(out, "{pad} | {}^", " ".repeat(caret_col));
            }
            if let Some(help) = &d.help {
                let _ = writeln!(out, "  = help: {help}");
            }
            out.push('\n');
        }
        let n = self.items.len();
        let _ = writeln!(
            out,
            "{file}: {n} error{} found; nothing was changed",
            if n == 1 { "" } else { "s" }
        );
        out
    }
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
