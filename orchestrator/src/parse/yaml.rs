//! A YAML tree that remembers where every value came from, so each mistake in a topology
//! or scenario can be reported with file:line:column. Built from yaml-rust2's marked event
//! stream, driven one event at a time (its own `load` recurses once per nesting level, so a
//! deeply nested document would overflow the stack); anchors and aliases are expanded.
//!
//! Limits (STYLE 7), each reported at the place in the source where it is crossed:
//! - [`MAX_DOCUMENT_BYTES`]: the whole file; 10,000 nodes and 20,000 links with a delay
//!   each, written out one by one, take 1,034,474 bytes.
//! - [`MAX_TREE_NODES`]: YAML values in the tree after aliases are expanded. An alias is a
//!   copy of its anchor's subtree, so nine aliases of nine aliases of … ("billion laughs")
//!   make 10⁹ values out of a few hundred bytes; counting copies as they are made refuses
//!   that before the memory is spent.
//! - [`MAX_DEPTH`]: nesting of lists and mappings; a topology needs six.
//! - one document per file: a second `---` document would otherwise be silently ignored.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based position in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar: its text and whether it was quoted (a quoted `1` is a string).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Key/value pairs in source order; duplicate keys are kept so they can be reported.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if text.is_empty() || text == "~" || text == "null")
    }
    /// The scalar's text, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
    /// What kind of YAML value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "nothing (null)",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Why a document could not be read as YAML at all.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    /// What to do about it, when there is more to say than the message.
    pub help: Option<String>,
}

impl SyntaxError {
    fn new(pos: Pos, message: impl Into<String>, help: impl Into<String>) -> Self {
        SyntaxError {
            pos,
            message: message.into(),
            help: Some(help.into()),
        }
    }
}

/// Largest file read as a topology or scenario, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// Most YAML values (scalars, lists, mappings) in one document once aliases are expanded.
pub const MAX_TREE_NODES: usize = 1_000_000;
/// Deepest nesting of lists and mappings.
pub const MAX_DEPTH: usize = 64;

#[derive(Default)]
struct Builder {
    /// Open lists and mappings: where each began, its anchor, and `made` when it began.
    stack: Vec<(Pos, usize, usize, Frame)>,
    /// Anchored subtrees and how many values each holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    /// Values made so far, alias copies included.
    made: usize,
    /// Values held in the anchors' own copies (kept apart from `made`, which sizes
    /// subtrees).
    anchor_copies: usize,
}

enum Frame {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), SyntaxError> {
        if anchor > 0 {
            // The anchor keeps its own copy: counted like an alias's, or nested anchors
            // would each hold a copy of everything inside them.
            self.anchor_copies = self.anchor_copies.saturating_add(size);
            self.make(0, node.pos, true)?;
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some((_, _, _, Frame::Seq(items))) => items.push(node),
            Some((_, _, _, Frame::Map(pairs, key))) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
        }
        Ok(())
    }

    /// Count `n` more values, refusing to pass [`MAX_TREE_NODES`].
    fn make(&mut self, n: usize, pos: Pos, alias: bool) -> Result<(), SyntaxError> {
        self.made = self.made.saturating_add(n);
        if self.made.saturating_add(self.anchor_copies) <= MAX_TREE_NODES {
            return Ok(());
        }
        Err(if alias {
            SyntaxError::new(
                pos,
                format!("anchors and aliases here expand the document past {MAX_TREE_NODES} values"),
                "each alias is a copy of its anchor; aliases of anchors that hold aliases multiply (a \"billion laughs\" document); write the values out or use fewer levels of aliases",
            )
        } else {
            SyntaxError::new(
                pos,
                format!("the document holds more than {MAX_TREE_NODES} values"),
                "a lab on one host holds at most 10000 nodes; use `generate:` for large labs",
            )
        })
    }

    fn on_event(&mut self, ev: Event, pos: Pos) -> Result<(), SyntaxError> {
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.make(1, pos, false)?;
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_value(
                    Node {
                        pos,
                        value: Value::Scalar { text, quoted },
                    },
                    anchor,
                    1,
                )?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError::new(
                        pos,
                        format!("lists and mappings are nested more than {MAX_DEPTH} deep here"),
                        "a topology or scenario needs a handful of levels; check for unclosed brackets",
                    ));
                }
                self.make(1, pos, false)?;
                let frame = match ev {
                    Event::SequenceStart(..) => Frame::Seq(Vec::new()),
                    _ => Frame::Map(Vec::new(), None),
                };
                self.stack.push((pos, anchor, self.made, frame));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((mut pos, anchor, made_before, frame)) = self.stack.pop() {
                    let value = match frame {
                        Frame::Seq(items) => Value::Seq(items),
                        Frame::Map(pairs, _) => {
                            // A block mapping's start is marked after its first key; a
                            // message about the whole mapping points at that key instead.
                            if let Some((k, _)) = pairs.first() {
                                pos = pos.min(k.pos);
                            }
                            Value::Map(pairs)
                        }
                    };
                    let size = self.made - made_before + 1;
                    self.push_value(Node { pos, value }, anchor, size)?;
                }
            }
            Event::Alias(id) => {
                let Some((_, size)) = self.anchors.get(&id) else {
                    return Err(SyntaxError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                        help: None,
                    });
                };
                let size = *size;
                // Count before copying: the copy is what would exhaust memory.
                self.make(size, pos, true)?;
                let mut node = self.anchors[&id].0.clone();
                node.pos = pos;
                self.push_value(node, 0, size)?;
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
        Ok(())
    }
}

/// The position of byte `offset` of `src` (which holds at least `offset` bytes).
pub fn pos_of_byte(src: &[u8], offset: usize) -> Pos {
    let before = &src[..offset.min(src.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // Columns count characters, as the YAML scanner's do.
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Pos { line, col }
}

/// Parse one YAML document into a marked tree. An empty document is a null scalar.
/// Every limit of this module is checked; nothing grows past it.
pub fn parse(src: &str) -> Result<Node, SyntaxError> {
    if src.len() > MAX_DOCUMENT_BYTES {
        return Err(too_large(src.as_bytes()));
    }
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    let mut documents = 0;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| SyntaxError {
            pos: Pos::from(*e.marker()),
            message: e.info().to_string(),
            help: None,
        })?;
        let pos = Pos::from(mark);
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError::new(
                        pos,
                        "a second YAML document starts here",
                        "a file holds one topology or scenario; remove this `---` and what follows, or move it to its own file",
                    ));
                }
            }
            ev => b.on_event(ev, pos)?,
        }
    }
    Ok(b.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        value: Value::Scalar {
            text: String::new(),
            quoted: false,
        },
    }))
}

fn too_large(src: &[u8]) -> SyntaxError {
    SyntaxError::new(
        pos_of_byte(src, MAX_DOCUMENT_BYTES),
        format!(
            "the file is larger than {} MiB; reading stopped here",
            MAX_DOCUMENT_BYTES >> 20
        ),
        "use `generate:` for large labs; a file this size is not a topology or scenario written by hand",
    )
}

/// Why a source file could not be turned into text.
#[derive(Debug)]
pub enum SourceError {
    Io(std::io::Error),
    /// The bytes are not text this reader takes. `text` is what could be read (up to the
    /// bad place, lossily decoded), for the excerpt under the message.
    Invalid {
        error: SyntaxError,
        text: String,
    },
}

/// Read a topology or scenario file: at most [`MAX_DOCUMENT_BYTES`], UTF-8, every refusal
/// located at the first byte that is wrong.
pub fn read_source(path: &std::path::Path) -> Result<String, SourceError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(SourceError::Io)?;
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(SourceError::Io)?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        let error = too_large(&bytes);
        bytes.truncate(MAX_DOCUMENT_BYTES);
        return Err(SourceError::Invalid {
            error,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        SourceError::Invalid {
            error: SyntaxError::new(
                pos_of_byte(bytes, at),
                format!(
                    "the file is not UTF-8 text: byte 0x{:02x} at offset {at} is not valid here",
                    bytes[at]
                ),
                "save the file as UTF-8",
            ),
            text: String::from_utf8_lossy(bytes).into_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_values() {
        let n = parse("a: 1\nb:\n  c: [x, y]\n").unwrap();
        let Value::Map(pairs) = &n.value else {
            panic!("not a map")
        };
        assert_eq!(pairs[0].1.pos, Pos { line: 1, col: 4 });
        let Value::Map(inner) = &pairs[1].1.value else {
            panic!("not a map")
        };
        assert_eq!(inner[0].0.scalar(), Some("c"));
        let Value::Seq(items) = &inner[0].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].pos, Pos { line: 3, col: 10 });
    }

    #[test]
    fn duplicate_keys_are_kept() {
        let n = parse("a: 1\na: 2\n").unwrap();
        let Value::Map(pairs) = &n.value else {
            panic!("not a map")
        };
        assert_eq!(pairs.len(), 2);
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }

    #[test]
    fn byte_positions_count_lines_and_characters() {
        let src = b"ab\n\xc3\xa7d\xffe";
        assert_eq!(pos_of_byte(src, 0), Pos { line: 1, col: 1 });
        assert_eq!(pos_of_byte(src, 3), Pos { line: 2, col: 1 });
        // `ç` is two bytes and one column.
        assert_eq!(pos_of_byte(src, 6), Pos { line: 2, col: 3 });
    }

    #[test]
    fn nested_anchors_count_their_copies() {
        // Each anchor keeps a copy of everything inside it: 40 nested anchors around
        // 40,000 values would hold 1.6 million copies without being aliased once.
        let inner = vec!["x"; 40_000].join(", ");
        let mut src = format!("[{inner}]");
        for i in 0..40 {
            src = format!("[&a{i} {src}]");
        }
        let e = parse(&src).unwrap_err();
        assert!(e.message.contains("past 1000000 values"), "{e:?}");
        // One level is fine.
        assert!(parse(&format!("a: &a [{inner}]\nb: 1\n")).is_ok());
    }

    #[test]
    fn aliases_expand() {
        let n = parse("x: &d {delay: 1ms}\ny: *d\n").unwrap();
        let Value::Map(pairs) = &n.value else {
            panic!("not a map")
        };
        assert!(matches!(pairs[1].1.value, Value::Map(_)));
    }
}
