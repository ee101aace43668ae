//! The hierarchical generator: layers at radii (AU) → clusters → cells → tiles.
//!
//! Naming: `l{layer}c{cluster}k{cell}t{tile}` for tiles (k for cell, since c is taken by
//! cluster) and `l{layer}a{n}` for a layer's stratum-0 authorities. Tile 0 of every cell is
//! the cell's gateway; the gateway of cell 0 is its cluster's gateway; the gateway of
//! cluster 0 is its layer's gateway.
//!
//! Geometry: a layer is a shell of radius `radius_au`. Its clusters are spread evenly around
//! the shell's equator; the cells of a cluster sit on a short arc about one light-second
//! apart (the spec's cluster: seconds of RTT); tiles of a cell share their cell's position
//! (a cell is sub-second, so cell links take their delay from `links.cell`, not from light).

use lightcone_core::config::{HierAddr, Role};

use super::LinkLevel;

/// How the members of one level are wired together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fabric {
    /// Everyone to the first member.
    Star,
    /// A closed ring.
    Ring,
    /// Everyone to everyone.
    Mesh,
    /// An open chain.
    Line,
}

impl Fabric {
    pub const NAMES: &'static [&'static str] = &["star", "ring", "mesh", "line"];
    pub fn parse(s: &str) -> Option<Fabric> {
        Some(match s {
            "star" => Fabric::Star,
            "ring" => Fabric::Ring,
            "mesh" => Fabric::Mesh,
            "line" => Fabric::Line,
            _ => return None,
        })
    }
    /// Index pairs wiring `n` members.
    pub fn pairs(self, n: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        match self {
            Fabric::Star => out.extend((1..n).map(|i| (0, i))),
            Fabric::Line => out.extend((1..n).map(|i| (i - 1, i))),
            Fabric::Ring => {
                out.extend((1..n).map(|i| (i - 1, i)));
                if n > 2 {
                    out.push((n - 1, 0));
                }
            }
            Fabric::Mesh => {
                for i in 0..n {
                    for j in i + 1..n {
                        out.push((i, j));
                    }
                }
            }
        }
        out
    }
    /// Links a fabric of `n` members needs, without building them.
    pub fn count(self, n: u64) -> u64 {
        match self {
            Fabric::Star | Fabric::Line => n.saturating_sub(1),
            Fabric::Ring if n > 2 => n,
            Fabric::Ring => n.saturating_sub(1),
            Fabric::Mesh => n * n.saturating_sub(1) / 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerGen {
    pub radius_au: f64,
    pub clusters: u16,
    pub cells: u16,
    pub tiles: u16,
    pub authorities: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    pub layers: Vec<LayerGen>,
    pub cell_fabric: Fabric,
    pub cluster_fabric: Fabric,
    pub layer_fabric: Fabric,
}

/// Angular spacing of cells within a cluster: about one light-second at 1 AU.
const CELL_SPACING_RAD: f64 = 1.0 / super::AU_LIGHT_SECONDS;

pub struct GenNode {
    pub name: String,
    pub role: Role,
    pub addr: HierAddr,
    pub position_au: [f64; 3],
}

pub struct GenLink {
    pub a: usize,
    pub b: usize,
    pub level: LinkLevel,
}

impl GenSpec {
    /// Nodes and links the spec would make, computed without making them (to refuse
    /// absurd sizes before allocating).
    pub fn size(&self) -> (u64, u64) {
        let (mut nodes, mut links) = (0u64, 0u64);
        for l in &self.layers {
            let cells = l.clusters as u64 * l.cells as u64;
            nodes += cells * l.tiles as u64 + l.authorities as u64;
            links += cells * self.cell_fabric.count(l.tiles as u64);
            links += l.clusters as u64 * self.cluster_fabric.count(l.cells as u64);
            links += self.layer_fabric.count(l.clusters as u64);
            links += l.authorities as u64;
        }
        links += self.layers.len().saturating_sub(1) as u64;
        (nodes, links)
    }

    /// Expand into nodes and links; `first` is the index the first generated node will have.
    pub fn expand(&self, first: usize) -> (Vec<GenNode>, Vec<GenLink>) {
        let mut nodes = Vec::new();
        let mut links = Vec::new();
        let mut layer_gateways = Vec::new();
        for (li, layer) in self.layers.iter().enumerate() {
            let li16 = li as u16;
            let mut cluster_gateways = Vec::new();
            for c in 0..layer.clusters {
                let theta0 = std::f64::consts::TAU * c as f64 / layer.clusters as f64;
                let mut cell_gateways = Vec::new();
                for k in 0..layer.cells {
                    let theta = theta0 + CELL_SPACING_RAD * k as f64 / layer.radius_au.max(1e-9);
                    let pos = [
                        layer.radius_au * theta.cos(),
                        layer.radius_au * theta.sin(),
                        0.0,
                    ];
                    let start = first + nodes.len();
                    for t in 0..layer.tiles {
                        nodes.push(GenNode {
                            name: format!("l{li}c{c}k{k}t{t}"),
                            role: if t == 0 { Role::Gateway } else { Role::Tile },
                            addr: HierAddr {
                                layer: li16,
                                cluster: c,
                                cell: k,
                                tile: t,
                            },
                            position_au: pos,
                        });
                    }
                    for (i, j) in self.cell_fabric.pairs(layer.tiles as usize) {
                        links.push(GenLink {
                            a: start + i,
                            b: start + j,
                            level: LinkLevel::Cell,
                        });
                    }
                    if layer.tiles > 0 {
                        cell_gateways.push(start);
                    }
                }
                for (i, j) in self.cluster_fabric.pairs(cell_gateways.len()) {
                    links.push(GenLink {
                        a: cell_gateways[i],
                        b: cell_gateways[j],
                        level: LinkLevel::Cluster,
                    });
                }
                if let Some(&g) = cell_gateways.first() {
                    cluster_gateways.push(g);
                }
            }
            for (i, j) in self.layer_fabric.pairs(cluster_gateways.len()) {
                links.push(GenLink {
                    a: cluster_gateways[i],
                    b: cluster_gateways[j],
                    level: LinkLevel::Layer,
                });
            }
            let layer_gateway = cluster_gateways.first().copied();
            for a in 0..layer.authorities {
                // Authorities sit beside the layer gateway, off the equator.
                let pos = [0.0, 0.0, layer.radius_au];
                nodes.push(GenNode {
                    name: format!("l{li}a{a}"),
                    role: Role::Authority,
                    // Each authority is a cell of its own, outside every cluster: they are
                    // independent references with no links between them, so one shared
                    // "cell" would have them probe each other and see each other dead.
                    addr: HierAddr {
                        layer: li16,
                        cluster: u16::MAX,
                        cell: u16::MAX - a,
                        tile: 0,
                    },
                    position_au: pos,
                });
                if let Some(g) = layer_gateway {
                    links.push(GenLink {
                        a: first + nodes.len() - 1,
                        b: g,
                        level: LinkLevel::Authority,
                    });
                }
            }
            if let Some(g) = layer_gateway {
                layer_gateways.push(g);
            }
        }
        for w in layer_gateways.windows(2) {
            links.push(GenLink {
                a: w[0],
                b: w[1],
                level: LinkLevel::System,
            });
        }
        (nodes, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fabric_counts_match_pairs() {
        for f in [Fabric::Star, Fabric::Ring, Fabric::Mesh, Fabric::Line] {
            for n in 0..12 {
                assert_eq!(f.pairs(n).len() as u64, f.count(n as u64), "{f:?} {n}");
            }
        }
    }

    #[test]
    fn size_matches_expansion() {
        let g = GenSpec {
            layers: vec![
                LayerGen {
                    radius_au: 0.5,
                    clusters: 3,
                    cells: 2,
                    tiles: 5,
                    authorities: 1,
                },
                LayerGen {
                    radius_au: 2.0,
                    clusters: 2,
                    cells: 3,
                    tiles: 4,
                    authorities: 0,
                },
            ],
            cell_fabric: Fabric::Ring,
            cluster_fabric: Fabric::Star,
            layer_fabric: Fabric::Mesh,
        };
        let (n, l) = g.expand(0);
        assert_eq!(g.size(), (n.len() as u64, l.len() as u64));
    }
}
