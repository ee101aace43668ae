//! The parsing toolkit topology and scenario files share: parse, don't validate (STYLE 5).
//!
//! - [`yaml`]: a YAML tree that remembers line:column, built within limits;
//! - [`Reader`]: reads typed values out of that tree, collecting every mistake (unknown,
//!   duplicate or missing keys, wrong kinds of value, bad quantities) as a located
//!   [`Diagnostic`] with a hint, instead of stopping at the first;
//! - [`diag`]: those diagnostics, rendered the way rustc renders errors;
//! - [`units`]: the value parsers (durations, signed durations, percentages, rates, sizes);
//! - [`LoadError`]: why a file could not be loaded (unreadable, or every mistake rendered).
//!
//! `topology::read` and `experiment::scenario` are two users of it; a third file format
//! starts here, not with its own reader.

pub mod diag;
mod reader;
pub mod units;
pub mod yaml;

use std::path::Path;

pub use diag::{did_you_mean, Diagnostic, Diagnostics};
pub use reader::{Fields, Reader};

/// Why a topology or scenario file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read. The I/O error is part of the message, not a chained
    /// source (which would print it twice).
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// The file has mistakes; `rendered` lists every one of them.
    #[error("{rendered}")]
    Invalid {
        diagnostics: Diagnostics,
        rendered: String,
    },
}

impl LoadError {
    /// The diagnostics of `file` (whose text is `src`), sorted and rendered.
    pub fn invalid(mut diagnostics: Diagnostics, file: &str, src: &str) -> Self {
        diagnostics.sort();
        let rendered = diagnostics.render(file, src);
        LoadError::Invalid {
            diagnostics,
            rendered,
        }
    }
}

/// Read a topology or scenario file's text (size-limited, UTF-8; a refusal is located).
pub fn read_source(path: &Path) -> Result<String, LoadError> {
    let file = path.display().to_string();
    yaml::read_source(path).map_err(|e| match e {
        yaml::SourceError::Io(error) => LoadError::Io { path: file, error },
        yaml::SourceError::Invalid { error, text } => {
            let mut d = Diagnostics::default();
            d.yaml_error(&error);
            LoadError::invalid(d, &file, &text)
        }
    })
}

/// The YAML tree of `src`, or the syntax error as diagnostics.
pub fn tree(src: &str) -> Result<yaml::Node, Diagnostics> {
    yaml::parse(src).map_err(|e| {
        let mut d = Diagnostics::default();
        d.yaml_error(&e);
        d
    })
}

/// Read a file and parse its YAML: its text (to render later mistakes against) and its
/// tree.
pub fn read_tree(path: &Path) -> Result<(String, yaml::Node), LoadError> {
    let src = read_source(path)?;
    let root = tree(&src).map_err(|d| LoadError::invalid(d, &path.display().to_string(), &src))?;
    Ok((src, root))
}

/// Parse `src` (named `file` in messages) into a tree and read it with `read`; every
/// mistake, the YAML's own included, comes back rendered.
pub fn parse_str<T>(
    src: &str,
    file: &str,
    read: impl FnOnce(&yaml::Node) -> Result<T, Diagnostics>,
) -> Result<T, LoadError> {
    tree(src)
        .and_then(|root| read(&root))
        .map_err(|d| LoadError::invalid(d, file, src))
}
