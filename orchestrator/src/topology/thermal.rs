//! The topology's `thermal:` section (issue 15): per-layer parameters of the thermal model
//! (`lightcone_core::heat`), defaults for every layer, each checked against the radius of
//! the layer's nodes, every mistake located.
//!
//! ```yaml
//! thermal:
//!   interval: 1s                 # model step and descriptor round (emulated)
//!   defaults: {emissivity: 0.9}  # any layer field, for every layer
//!   layers:
//!     0: {max_temp_k: 500, outward_fraction: 0.6}
//! ```

use std::collections::BTreeMap;

use lightcone_core::heat::config::{radius_au, ThermalConfig, DEFAULT_INTERVAL_NS};
use lightcone_core::heat::model::{sink_temp_k, LayerThermal};

use super::NodeSpec;
use crate::parse::yaml::{Node, Pos, Value};
use crate::parse::{Fields, Reader};

/// Keys of the `thermal:` section.
pub(super) const THERMAL_FIELDS: &[&str] = &["interval", "defaults", "layers"];
/// Keys of one layer's parameters (and of `defaults`).
pub(super) const LAYER_THERMAL_FIELDS: &[&str] = &[
    "radiator_area_m2",
    "emissivity",
    "max_temp_k",
    "thermal_mass_j_per_k",
    "idle_power_w",
    "power_per_unit_w",
    "compute_units",
    "memory_mib",
    "bandwidth_mbps",
    "outward_fraction",
];

/// Applies the fields written in `f` over `p`; remembers where each was written.
fn layer_fields(
    r: &mut Reader,
    f: &Fields<'_>,
    p: &mut LayerThermal,
    at: &mut BTreeMap<&'static str, Pos>,
) {
    for (k, v) in f {
        let Some(name) = LAYER_THERMAL_FIELDS.iter().find(|n| *n == k) else {
            continue;
        };
        let what = format!("`{name}`");
        at.insert(name, v.pos);
        match *name {
            "compute_units" | "memory_mib" | "bandwidth_mbps" => {
                if let Some(x) = r.uint(v, &what, u32::MAX as u64) {
                    let x = x as u32;
                    match *name {
                        "compute_units" => p.compute_units = x,
                        "memory_mib" => p.memory_mib = x,
                        _ => p.bandwidth_mbps = x,
                    }
                }
            }
            _ => {
                if let Some(x) = r.float(v, &what) {
                    match *name {
                        "radiator_area_m2" => p.radiator_area_m2 = x,
                        "emissivity" => p.emissivity = x,
                        "max_temp_k" => p.max_temp_k = x,
                        "thermal_mass_j_per_k" => p.thermal_mass_j_per_k = x,
                        "idle_power_w" => p.idle_power_w = x,
                        "power_per_unit_w" => p.power_per_unit_w = x,
                        _ => p.outward_fraction = Some(x),
                    }
                }
            }
        }
    }
}

/// Reads `thermal:` (at `node`) for a lab of `nodes`; `None` when a mistake was reported.
pub(super) fn read(r: &mut Reader, node: &Node, nodes: &[NodeSpec]) -> Option<ThermalConfig> {
    let before = r.d.len();
    let top = r.fields(node, THERMAL_FIELDS, "`thermal`")?;
    let mut interval_ns = DEFAULT_INTERVAL_NS;
    let mut defaults = LayerThermal::default();
    let mut default_at = BTreeMap::new();
    let mut given: BTreeMap<u16, (Pos, LayerThermal, BTreeMap<&'static str, Pos>)> =
        BTreeMap::new();
    for (k, v) in &top {
        match *k {
            "interval" => {
                if let Some(ns) = r.duration(v, "`thermal.interval`") {
                    interval_ns = ns;
                }
            }
            "defaults" => {
                if let Some(f) = r.fields(v, LAYER_THERMAL_FIELDS, "`thermal.defaults`") {
                    layer_fields(r, &f, &mut defaults, &mut default_at);
                }
            }
            _ => {}
        }
    }
    // Layers after defaults, whatever the order they were written in.
    if let Some((_, v)) = top.iter().find(|(k, _)| *k == "layers") {
        if let Value::Map(pairs) = &v.value {
            for (k, lv) in pairs {
                let Some(n) = r.uint(k, "a layer number in `thermal.layers`", u16::MAX as u64)
                else {
                    continue;
                };
                let n = n as u16;
                if !nodes.iter().any(|s| s.addr.layer == n) {
                    r.d.error_help(
                        k.pos,
                        format!("layer {n} has no nodes in this topology"),
                        "list only the layers the topology has",
                    );
                    continue;
                }
                if let Some(f) =
                    r.fields(lv, LAYER_THERMAL_FIELDS, &format!("`thermal.layers.{n}`"))
                {
                    let mut p = defaults.clone();
                    let mut at = default_at.clone();
                    layer_fields(r, &f, &mut p, &mut at);
                    given.insert(n, (k.pos, p, at));
                }
            }
        } else if !v.is_null() {
            r.d.error_help(
                v.pos,
                format!("`thermal.layers` must be a mapping, found {}", v.kind()),
                "map layer numbers to parameters, e.g. layers: {0: {max_temp_k: 500}}",
            );
        }
    }
    // Each layer's radius: its nodes' distances from the star.
    let mut radii: BTreeMap<u16, (f64, f64, f64, usize)> = BTreeMap::new();
    for s in nodes {
        let Some(p) = s.position_au else {
            r.d.error_help(node.pos, format!("node `{}` has no `position`: the thermal model needs each node's distance from the star", s.name), "give every node a position (generated topologies have them)");
            continue;
        };
        let rad = radius_au(p);
        let e = radii
            .entry(s.addr.layer)
            .or_insert((f64::INFINITY, 0.0, 0.0, 0));
        e.0 = e.0.min(rad);
        e.1 = e.1.max(rad);
        e.2 += rad;
        e.3 += 1;
    }
    if r.d.len() > before {
        return None;
    }
    let outermost = radii.keys().next_back().copied();
    let mut layers = BTreeMap::new();
    let mut prev: Option<(u16, f64)> = None;
    for (&l, &(min_r, _max_r, sum, count)) in &radii {
        let mean = sum / count as f64;
        if let Some((pl, pm)) = prev {
            if mean <= pm {
                r.d.error_help(node.pos, format!("layer {l} (mean radius {mean:.4} AU) is not outside layer {pl} ({pm:.4} AU): the thermal model passes heat outward by layer number"), "number the layers from the star outward");
            }
        }
        prev = Some((l, mean));
        let (pos, p, at) = match given.get(&l) {
            Some((pos, p, at)) => (*pos, p.clone(), at.clone()),
            None => (node.pos, defaults.clone(), default_at.clone()),
        };
        // The innermost node of the layer sees the hottest sink: check there.
        if let Err(e) = p.check(min_r, outermost == Some(l)) {
            let at = at.get(e.field).copied().unwrap_or(pos);
            r.d.error_help(
                at,
                format!("thermal parameters of layer {l}: {e}"),
                format!(
                    "the layer's innermost node is at {min_r:.4} AU, where the sink is {:.1} K",
                    sink_temp_k(min_r)
                ),
            );
        }
        layers.insert(l, p);
    }
    let cfg = ThermalConfig {
        layers,
        interval_ns,
    };
    if let Err(e) = cfg.check_interval() {
        let at = top
            .iter()
            .find(|(k, _)| *k == "interval")
            .map_or(node.pos, |(_, v)| v.pos);
        r.d.error(at, format!("`thermal.{}`: {}", e.field, e.message));
    }
    (r.d.len() == before).then_some(cfg)
}

#[cfg(test)]
mod tests {
    use crate::topology::parse_str;
    use crate::topology::tests_support::error_of;

    const TWO_SHELLS: &str = "name: t\ngenerate:\n  layers:\n    - { radius_au: 0.7, clusters: 1, cells: 2, tiles: 3 }\n    - { radius_au: 1.5, clusters: 1, cells: 2, tiles: 3 }\n";

    #[test]
    fn no_section_means_off_and_a_section_gives_every_layer_its_parameters() {
        assert_eq!(parse_str(TWO_SHELLS, "t.yaml").unwrap().thermal, None);
        let src = format!("{TWO_SHELLS}thermal:\n  interval: 500ms\n  defaults: {{emissivity: 0.8}}\n  layers:\n    0: {{max_temp_k: 450, outward_fraction: 0.6}}\n");
        let t = parse_str(&src, "t.yaml").unwrap().thermal.unwrap();
        assert_eq!(t.interval_ns, 500_000_000);
        assert_eq!(t.layers.len(), 2);
        assert_eq!(t.layers[&0].max_temp_k, 450.0);
        assert_eq!(t.layers[&0].emissivity, 0.8);
        assert_eq!(t.layers[&0].outward_fraction, Some(0.6));
        assert_eq!(
            t.layers[&1].emissivity, 0.8,
            "defaults reach unnamed layers"
        );
        assert_eq!(t.layers[&1].max_temp_k, 400.0);
        assert_eq!(t.outermost(), Some(1));
    }

    #[test]
    fn mistakes_are_located_and_say_what_is_wrong() {
        let cases = [
            (
                "  layers:\n    1: {outward_fraction: 0.2}\n",
                "bad.yaml:8:",
                "outermost layer",
            ),
            (
                "  layers:\n    0: {emisivity: 0.2}\n",
                "bad.yaml:8:",
                "did you mean `emissivity`",
            ),
            (
                "  layers:\n    7: {}\n",
                "bad.yaml:8:",
                "layer 7 has no nodes",
            ),
            (
                "  defaults: {emissivity: 2}\n",
                "bad.yaml:7:",
                "`emissivity`: 2 is out of range",
            ),
            (
                "  interval: 2h\n",
                "bad.yaml:7:",
                "out of range (1 ms to 1 h",
            ),
            // At 0.7 AU the sink is 332.7 K: a 300 K radiator rejects nothing.
            (
                "  layers:\n    0: {max_temp_k: 300}\n",
                "bad.yaml:8:",
                "can reject nothing",
            ),
        ];
        for (section, at, says) in cases {
            let out = error_of(&format!("{TWO_SHELLS}thermal:\n{section}"));
            assert!(out.contains(at) && out.contains(says), "{section}\n{out}");
        }
        let no_pos = error_of("name: x\nnodes: {a: {}}\nthermal: {}\n");
        assert!(no_pos.contains("node `a` has no `position`"), "{no_pos}");
    }
}
