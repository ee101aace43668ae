//! The topology's `store:` section (issue 16): the erasure-coded object store every agent
//! runs (`lightcone_core::store`), its object class checked against the lab's tiles and
//! cells, every mistake located. No section: the store is off.
//!
//! ```yaml
//! store:
//!   k: 20            # data shards (≥ 1)
//!   n: 60            # all shards (> k, ≤ the lab's nodes); the spec's metadata class
//!   cells: 4         # cells a stripe spreads over (≤ the lab's cells)
//!   grace: 30s       # wait after a holder is declared dead before repairing (emulated)
//!   repair_rate: 1048576   # repair bytes per emulated second a steward sends
//! ```
use std::collections::BTreeSet;

use lightcone_core::store::config::StoreConfig;
use lightcone_core::store::Class;

use super::NodeSpec;
use crate::parse::yaml::Node;
use crate::parse::Reader;

/// Keys of the `store:` section.
pub(super) const STORE_FIELDS: &[&str] = &["k", "n", "cells", "grace", "repair_rate"];

/// Reads `store:` (at `node`) for a lab of `nodes`; `None` when a mistake was reported.
pub(super) fn read(r: &mut Reader, node: &Node, nodes: &[NodeSpec]) -> Option<StoreConfig> {
    let before = r.d.len();
    let top = r.fields(node, STORE_FIELDS, "`store`")?;
    let mut cfg = StoreConfig::with_class(Class::spec(1));
    let cells_in_lab = nodes
        .iter()
        .map(|s| (s.addr.layer, s.addr.cluster, s.addr.cell))
        .collect::<BTreeSet<_>>()
        .len();
    let mut given_cells = false;
    for (k, v) in &top {
        match *k {
            "k" | "n" | "cells" => {
                if let Some(x) = r.uint(v, &format!("`store.{k}`"), u16::MAX as u64) {
                    match *k {
                        "k" => cfg.class.k = x as u16,
                        "n" => cfg.class.n = x as u16,
                        _ => {
                            cfg.class.cells = x as u16;
                            given_cells = true;
                        }
                    }
                }
            }
            "grace" => {
                if let Some(ns) = r.duration(v, "`store.grace`") {
                    cfg.grace_s = ns as f64 / 1e9;
                }
            }
            "repair_rate" => {
                if let Some(x) = r.uint(v, "`store.repair_rate`", u64::MAX) {
                    cfg.repair_rate_bps = x;
                }
            }
            _ => {}
        }
    }
    if !given_cells {
        cfg.class.cells = cells_in_lab.min(u16::MAX as usize) as u16;
    }
    cfg.class.name = format!("k{}n{}", cfg.class.k, cfg.class.n);
    if r.d.len() > before {
        return None;
    }
    let at = |key: &str| {
        top.iter()
            .find(|(k, _)| *k == key)
            .map_or(node.pos, |(_, v)| v.pos)
    };
    if let Err(e) = cfg.check() {
        let key = match e.to_string() {
            m if m.contains("grace") => "grace",
            m if m.contains("repair_rate") => "repair_rate",
            m if m.contains("cells") => "cells",
            m if m.contains("k must") => "k",
            _ => "n",
        };
        r.d.error(at(key), format!("`store`: {e}"));
    } else if cfg.class.n as usize > nodes.len() {
        r.d.error_help(
            at("n"),
            format!(
                "`store.n` is {} but the lab has {} nodes: every shard of a stripe needs its own tile",
                cfg.class.n,
                nodes.len()
            ),
            "lower n, or use a topology with at least n nodes",
        );
    } else if cfg.class.cells as usize > cells_in_lab {
        r.d.error_help(
            at("cells"),
            format!(
                "`store.cells` is {} but the lab has {cells_in_lab} cells",
                cfg.class.cells
            ),
            "spread over at most the lab's cells",
        );
    }
    (r.d.len() == before).then_some(cfg)
}

#[cfg(test)]
mod tests {
    use crate::topology::parse_str;
    use crate::topology::tests_support::error_of;

    const LAB: &str = "name: t\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 1, cells: 2, tiles: 4 }\n";

    #[test]
    fn no_section_means_off_and_a_section_gives_the_class() {
        assert_eq!(parse_str(LAB, "t.yaml").unwrap().store, None);
        let src = format!("{LAB}store:\n  k: 4\n  n: 8\n  grace: 10s\n");
        let s = parse_str(&src, "t.yaml").unwrap().store.unwrap();
        assert_eq!((s.class.k, s.class.n, s.class.cells), (4, 8, 2));
        assert_eq!(s.grace_s, 10.0);
    }

    #[test]
    fn the_shipped_store_lab_loads_with_its_class() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/store-lab.yaml");
        let t = crate::topology::load(std::path::Path::new(path)).unwrap();
        let s = t.store.unwrap();
        assert_eq!((s.class.k, s.class.n, s.class.cells), (4, 8, 2));
        assert_eq!(s.grace_s, 10.0);
        assert_eq!(t.nodes.len(), 10);
    }

    #[test]
    fn mistakes_are_located_and_say_what_is_wrong() {
        let cases = [
            ("  k: 4\n  n: 9\n", "bad.yaml:7:", "the lab has 8 nodes"),
            ("  k: 4\n  n: 4\n", "bad.yaml:7:", "must exceed k"),
            (
                "  k: 2\n  n: 4\n  cells: 3\n",
                "bad.yaml:8:",
                "the lab has 2 cells",
            ),
            (
                "  k: 2\n  n: 4\n  grase: 1s\n",
                "bad.yaml:8:",
                "did you mean `grace`",
            ),
        ];
        for (section, at, says) in cases {
            let out = error_of(&format!("{LAB}store:\n{section}"));
            assert!(out.contains(at) && out.contains(says), "{section}\n{out}");
        }
    }
}
