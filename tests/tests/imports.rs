//! No import circle between the files of any crate (issue 12), and the core's sub-machines
//! do not import the composition (`node`).
//!
//! The graph: each `.rs` file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`); every
//! `crate::…`, `super::…` and `self::…` path in its code (comments and `#[cfg(test)]` items
//! left out) is an edge to the deepest module the path names, and a module has an edge to
//! each of its children (it holds them, so importing it reaches them). Paths between a
//! module and its own ancestors are no edge (a child using its parent's items is inside
//! the parent's room). Strongly connected components of two or more modules are circles.
//!
//! Needs no root; it lives with the end-to-end tests because it reads the whole tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose `src/` is checked, from the workspace root.
const CRATES: &[&str] = &[
    "core/src",
    "link/src",
    "sim/src",
    "node-agent/src",
    "timing/src",
    "orchestrator/src",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Module path of a file below `src` (`experiment/runner/mod.rs` → `experiment::runner`;
/// `lib.rs`/`main.rs` → the crate root, "").
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("below src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without what follows its first `#[cfg(test)]`
/// (test modules sit at the end of a file in this tree).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths such as `crate::a::b`, `super::x`, and each item of `crate::a::{b, c::d}`.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| bytes[i..].starts_with(p.as_bytes()))
            .filter(|_| i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':');
        let Some(_) = starts else {
            i += 1;
            continue;
        };
        // Read segments separated by `::`.
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            if s == j {
                break;
            }
            segs.push(code[s..j].to_string());
            if code[j..].starts_with("::") {
                j += 2;
            } else {
                break;
            }
        }
        if code[j..].starts_with('{') {
            // A group: each comma-separated item's leading segments.
            if let Some(end) = code[j..].find('}') {
                for item in code[j + 1..j + end].split(',') {
                    let item = item.split(" as ").next().unwrap_or("").trim();
                    let first: Vec<String> = item
                        .split("::")
                        .map(|s| s.trim().to_string())
                        .take_while(|s| !s.is_empty() && s.bytes().all(is_ident))
                        .collect();
                    if !first.is_empty() && first[0] != "self" {
                        let mut p = segs.clone();
                        p.extend(first);
                        out.push(p);
                    }
                }
            }
        }
        out.push(segs);
        i = j.max(i + 1);
    }
    out
}

/// The module a path names from module `cur`: the deepest existing module it reaches.
fn resolve(modules: &BTreeSet<String>, cur: &str, path: &[String]) -> Option<String> {
    let mut base: Vec<String> = if cur.is_empty() {
        Vec::new()
    } else {
        cur.split("::").map(str::to_string).collect()
    };
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut best = None;
    for n in 0..=rest.len() {
        let mut m = base.clone();
        m.extend(rest[..n].iter().cloned());
        let m = m.join("::");
        if modules.contains(&m) {
            best = Some(m);
        }
    }
    best
}

fn is_within(a: &str, b: &str) -> bool {
    b.is_empty() || a == b || a.starts_with(&format!("{b}::"))
}

/// The import graph of the crate whose source root is `src`.
fn graph_of(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut g = Graph::new();
    // A module holds its children: an edge into a module reaches the files below it.
    for m in &modules {
        if let Some((parent, _)) = m.rsplit_once("::") {
            g.entry(parent.to_string()).or_default().insert(m.clone());
        }
    }
    for f in &files {
        let m = module_of(src, f);
        let code = code_of(&std::fs::read_to_string(f).expect("read source"));
        let edges = g.entry(m.clone()).or_default();
        for p in paths_in(&code) {
            if let Some(t) = resolve(&modules, &m, &p) {
                // Paths into its own room (the module, what holds it, what it holds) are
                // no edge; the structural parent → child edges stand for the latter.
                if !is_within(&m, &t) && !is_within(&t, &m) {
                    edges.insert(t);
                }
            }
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    let root = workspace_root();
    let mut found = Vec::new();
    for c in CRATES {
        let g = graph_of(&root.join(c));
        let edges: usize = g.values().map(BTreeSet::len).sum();
        println!("{c}: {} modules, {edges} edges", g.len());
        for circle in circles(&g) {
            found.push(format!("{c}: {}", circle.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_cores_sub_machines_do_not_import_the_composition() {
    let g = graph_of(&workspace_root().join("core/src"));
    let users: Vec<&String> = g
        .iter()
        .filter(|(m, to)| !m.is_empty() && to.contains("node"))
        .map(|(m, _)| m)
        .collect();
    assert!(
        users.is_empty(),
        "modules importing `node` (use io/time/directory/params/view instead): {users:?}"
    );
}

/// The check finds a circle where there is one: a tree written for the test.
#[test]
fn the_check_finds_a_circle_through_super_and_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("exp")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod exp;\npub mod lab;\n").unwrap();
    std::fs::write(src.join("exp/mod.rs"), "pub mod report;\npub mod runner;\n").unwrap();
    // report → runner through a group, runner → report through super.
    std::fs::write(
        src.join("exp/report.rs"),
        "use crate::exp::{runner::Outcome, self};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("exp/runner.rs"),
        "// use crate::lab; (a comment is no edge)\nuse super::report::Report;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("lab.rs"),
        "#[cfg(test)]\nmod t { use crate::exp::runner; }\n",
    )
    .unwrap();
    let g = graph_of(src);
    assert_eq!(
        circles(&g),
        vec![vec!["exp::report".to_string(), "exp::runner".to_string()]]
    );
    assert!(g["exp::runner"].iter().all(|t| t != "lab"), "{g:?}");
    assert!(g["lab"].is_empty(), "test modules are left out: {g:?}");
}
