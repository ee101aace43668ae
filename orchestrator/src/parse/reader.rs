//! One reader over the marked YAML tree: typed values out, every mistake in (located, with
//! what would be valid). The mapping is the unit of reading: [`Reader::fields`] refuses
//! unknown and duplicate keys with "did you mean", [`Reader::required`] reports a missing
//! one at its mapping, and each value reader says what kind of value it wanted.

use std::collections::BTreeMap;

use super::diag::{did_you_mean, Diagnostics};
use super::units;
use super::yaml::{Node, Pos, Value};

/// The known keys of a mapping and their values, in source order.
pub type Fields<'a> = Vec<(&'a str, &'a Node)>;

/// Reads values out of a tree, collecting every mistake in `d`. A reader method that
/// returns `None` has already said why in `d`.
#[derive(Debug, Default)]
pub struct Reader {
    pub d: Diagnostics,
}

impl Reader {
    /// The fields of a mapping, checking for unknown and duplicate keys. `null` reads as an
    /// empty mapping (`a:` and `a: {}` mean the same).
    pub fn fields<'a>(
        &mut self,
        node: &'a Node,
        allowed: &[&str],
        what: &str,
    ) -> Option<Fields<'a>> {
        let help = format!(
            "write it as `key: value` lines; valid keys: {}",
            allowed.join(", ")
        );
        let entries = self.entries(node, what, help, Some(allowed))?;
        Some(entries.into_iter().map(|(_, key, v)| (key, v)).collect())
    }

    /// The entries of a mapping whose keys are names the user chooses (hosts, pins):
    /// each key node, its text and its value, in source order. A duplicate key is reported
    /// and left out; `null` reads as an empty mapping.
    pub fn fields_any<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
    ) -> Option<Vec<(&'a Node, &'a str, &'a Node)>> {
        self.entries(node, what, "write it as `name: value` lines".into(), None)
    }

    /// A mapping's entries in source order, each key a plain name given once and, when
    /// `allowed` is given, one of those (a key that is not, or a duplicate, is reported
    /// where it stands and left out); `null` reads as an empty mapping; anything else is a
    /// mistake with `help`.
    fn entries<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        help: String,
        allowed: Option<&[&str]>,
    ) -> Option<Vec<(&'a Node, &'a str, &'a Node)>> {
        if node.is_null() {
            return Some(Vec::new());
        }
        let Value::Map(pairs) = &node.value else {
            self.d.error_help(
                node.pos,
                format!("{what} must be a mapping, found {}", node.kind()),
                help,
            );
            return None;
        };
        let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
        let mut out = Vec::new();
        for (k, v) in pairs {
            let Some(key) = k.scalar().filter(|_| !k.is_null()) else {
                self.d
                    .error(k.pos, format!("a key in {what} must be a plain name"));
                continue;
            };
            if let Some(first) = seen.get(key) {
                self.d.error(
                    k.pos,
                    format!(
                        "duplicate key `{key}` in {what} (first at line {})",
                        first.line
                    ),
                );
                continue;
            }
            seen.insert(key, k.pos);
            if let Some(allowed) = allowed.filter(|a| !a.contains(&key)) {
                let help = match did_you_mean(key, allowed) {
                    Some(s) => format!("did you mean `{s}`? valid keys: {}", allowed.join(", ")),
                    None => format!("valid keys: {}", allowed.join(", ")),
                };
                self.d
                    .error_help(k.pos, format!("unknown key `{key}` in {what}"), help);
                continue;
            }
            out.push((k, key, v));
        }
        Some(out)
    }

    /// A non-null scalar's text; anything else is a mistake saying `what` must be
    /// `expected` (`a name`, `a duration such as 2ms`, …).
    pub fn scalar<'a>(&mut self, node: &'a Node, what: &str, expected: &str) -> Option<&'a str> {
        match node.scalar() {
            Some(s) if !node.is_null() => Some(s),
            _ => {
                self.d.error(
                    node.pos,
                    format!("{what} must be {expected}, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A string: any non-null scalar.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        self.scalar(node, what, "a string").map(str::to_string)
    }

    /// A scalar parsed by `f` (one of [`units`]' parsers, or any with the same contract);
    /// its refusal is reported as `{what}: {message}` at the value.
    pub fn unit<T>(
        &mut self,
        node: &Node,
        what: &str,
        expected: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.scalar(node, what, expected)?;
        match f(s) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.d.error(node.pos, format!("{what}: {msg}"));
                None
            }
        }
    }

    /// A whole number in `0..=max`.
    pub fn uint(&mut self, node: &Node, what: &str, max: u64) -> Option<u64> {
        let s = self.scalar(node, what, "a whole number")?;
        match s.parse::<u64>() {
            Ok(v) if v <= max => Some(v),
            Ok(v) => {
                self.d
                    .error(node.pos, format!("{what} must be at most {max}, got {v}"));
                None
            }
            Err(_) => {
                self.d.error(
                    node.pos,
                    format!("{what} must be a whole number between 0 and {max}, got {s:?}"),
                );
                None
            }
        }
    }

    /// A finite number.
    pub fn float(&mut self, node: &Node, what: &str) -> Option<f64> {
        let s = self.scalar(node, what, "a number")?;
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                self.d.error(
                    node.pos,
                    format!("{what} must be a finite number, got {s:?}"),
                );
                None
            }
        }
    }

    /// One of a few names, turned into a value by `f`; an unknown one gets "did you mean"
    /// among `options`.
    pub fn choice<T>(
        &mut self,
        node: &Node,
        what: &str,
        options: &[&str],
        f: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let s = self.scalar(node, what, "a name")?;
        match f(s) {
            Some(v) => Some(v),
            None => {
                let hint = did_you_mean(s, options)
                    .map(|m| format!("did you mean `{m}`? "))
                    .unwrap_or_default();
                self.d.error_help(
                    node.pos,
                    format!("{what} {s:?} is not known"),
                    format!("{hint}expected one of: {}", options.join(", ")),
                );
                None
            }
        }
    }

    /// A list, each item read by `item` (which reports its own mistakes; such an item is
    /// left out). Null reads as an empty list.
    pub fn list<T>(
        &mut self,
        node: &Node,
        what: &str,
        expected: &str,
        mut item: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Vec<T> {
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(|i| item(self, i)).collect(),
            _ if node.is_null() => Vec::new(),
            _ => {
                self.d.error(
                    node.pos,
                    format!("{what} must be {expected}, found {}", node.kind()),
                );
                Vec::new()
            }
        }
    }

    /// The value of `key`, if the mapping has it.
    pub fn get<'a>(f: &Fields<'a>, key: &str) -> Option<&'a Node> {
        f.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The value of `key`, or a mistake at `at` (the mapping's position) saying that
    /// `what` needs it.
    pub fn required<'a>(
        &mut self,
        f: &Fields<'a>,
        key: &str,
        at: Pos,
        what: &str,
    ) -> Option<&'a Node> {
        let v = Self::get(f, key);
        if v.is_none() {
            self.d.error(at, format!("{what} needs `{key}`"));
        }
        v
    }

    /// A name (of a node, a behaviour, …): any non-null scalar.
    pub fn name(&mut self, node: &Node, what: &str) -> Option<String> {
        self.scalar(node, what, "a name").map(str::to_string)
    }

    /// A duration such as `30s` ([`units::duration_ns`]), in ns.
    pub fn duration(&mut self, node: &Node, what: &str) -> Option<u64> {
        self.unit(node, what, "a duration such as 30s", units::duration_ns)
    }

    /// A duration that may be negative, such as `-500us` ([`units::signed_duration_ns`]).
    pub fn signed_duration(&mut self, node: &Node, what: &str) -> Option<f64> {
        self.unit(
            node,
            what,
            "a signed duration such as -500us",
            units::signed_duration_ns,
        )
    }

    /// A percentage such as `50%` ([`units::percent`]), as a fraction in 0..=1.
    pub fn percent(&mut self, node: &Node, what: &str) -> Option<f64> {
        self.unit(node, what, "a percentage such as 50%", units::percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::yaml;

    fn messages(r: &Reader) -> Vec<String> {
        r.d.items
            .iter()
            .map(|d| format!("{}:{} {}", d.pos.line, d.pos.col, d.message))
            .collect()
    }

    #[test]
    fn fields_report_unknown_duplicate_and_missing_keys_where_they_stand() {
        let root = yaml::parse(
            "a: 1
bb: 2
a: 3
x: 4
",
        )
        .unwrap();
        let mut r = Reader::default();
        let f = r.fields(&root, &["a", "b"], "the thing").unwrap();
        assert_eq!(f.len(), 1);
        assert!(r.required(&f, "b", root.pos, "the thing").is_none());
        assert_eq!(
            messages(&r),
            [
                "2:1 unknown key `bb` in the thing",
                "3:1 duplicate key `a` in the thing (first at line 1)",
                "4:1 unknown key `x` in the thing",
                "1:1 the thing needs `b`",
            ]
        );
        assert!(r.d.items[0]
            .help
            .as_deref()
            .unwrap()
            .contains("did you mean `b`?"));
    }

    #[test]
    fn values_are_read_with_the_shared_unit_parsers() {
        let root = yaml::parse(
            "d: 30s
n: -500us
p: 50%
bad: 5
l: [1s, x]
z:
",
        )
        .unwrap();
        let mut r = Reader::default();
        let f = r
            .fields(&root, &["d", "n", "p", "bad", "l", "z"], "t")
            .unwrap();
        let get = |k| Reader::get(&f, k).unwrap();
        assert_eq!(r.duration(get("d"), "d"), Some(30_000_000_000));
        assert_eq!(r.signed_duration(get("n"), "n"), Some(-500_000.0));
        assert_eq!(r.percent(get("p"), "p"), Some(0.5));
        assert_eq!(r.duration(get("bad"), "bad"), None);
        let l = r.list(get("l"), "l", "a list", |r, n| r.duration(n, "item"));
        assert_eq!(l, [1_000_000_000]);
        assert!(r
            .list(get("z"), "z", "a list", |r, n| r.name(n, "z"))
            .is_empty());
        assert_eq!(r.name(get("z"), "z"), None);
        assert_eq!(
            messages(&r),
            [
                "4:6 bad: \"5\" has no unit; write a duration with a unit: ns, us, ms, s, min or h (e.g. 20ms, 1.5s)",
                "5:9 item: \"x\" is not a duration; write a duration with a unit: ns, us, ms, s, min or h (e.g. 20ms, 1.5s)",
                "7:1 z must be a name, found nothing (null)",
            ]
        );
    }
}
