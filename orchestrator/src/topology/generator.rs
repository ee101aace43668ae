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
    /// A closed ring plus one chord per member to a member picked by a fixed hash of its
    /// index ([`chord_partner`]): degree about 4 and a diameter that grows like log n
    /// (about 11 hops at 1,000 members, where a ring needs 500). The routing core bounds
    /// routes at `RouteParams::max_hops` (30) against count-to-infinity, so a ring of more
    /// than ~60 members never converges; a cell of the spec's ~10³ tiles with sub-second
    /// RTT needs a small-diameter fabric like this one.
    Chords,
}

/// The chord partner of member `i` of `n` in [`Fabric::Chords`]: splitmix64 of `i` and
/// `n`, modulo `n`. Fixed, so the same topology always has the same links.
pub fn chord_partner(i: usize, n: usize) -> usize {
    let mut z = (i as u64) ^ ((n as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

impl Fabric {
    pub const NAMES: &'static [&'static str] = &["star", "ring", "mesh", "line", "chords"];
    pub fn parse(s: &str) -> Option<Fabric> {
        Some(match s {
            "star" => Fabric::Star,
            "ring" => Fabric::Ring,
            "mesh" => Fabric::Mesh,
            "line" => Fabric::Line,
            "chords" => Fabric::Chords,
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
            Fabric::Chords => {
                let mut set: std::collections::BTreeSet<(usize, usize)> = Fabric::Ring
                    .pairs(n)
                    .into_iter()
                    .map(|(a, b)| (a.min(b), a.max(b)))
                    .collect();
                out.extend(Fabric::Ring.pairs(n));
                for i in 0..n {
                    let j = chord_partner(i, n);
                    if j != i && set.insert((i.min(j), i.max(j))) {
                        out.push((i.min(j), i.max(j)));
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
            // Chords are deduplicated against the ring and each other: count them by
            // building them (at most 65,535 members, so cheap).
            Fabric::Chords => Fabric::Chords.pairs(n.min(u16::MAX as u64) as usize).len() as u64,
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
        for f in [
            Fabric::Star,
            Fabric::Ring,
            Fabric::Mesh,
            Fabric::Line,
            Fabric::Chords,
        ] {
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

    /// Hop distances from member 0 of a fabric of `n` (breadth-first search).
    fn diameter(f: Fabric, n: usize) -> usize {
        let mut adj = vec![Vec::new(); n];
        for (a, b) in f.pairs(n) {
            adj[a].push(b);
            adj[b].push(a);
        }
        let mut worst = 0;
        for s in [0, n / 3, n - 1] {
            let mut dist = vec![usize::MAX; n];
            dist[s] = 0;
            let mut q = std::collections::VecDeque::from([s]);
            while let Some(u) = q.pop_front() {
                for &v in &adj[u] {
                    if dist[v] == usize::MAX {
                        dist[v] = dist[u] + 1;
                        q.push_back(v);
                    }
                }
            }
            worst = worst.max(*dist.iter().max().unwrap());
        }
        worst
    }

    /// Regression: 1,000-tile ring cells never converged in the twin (tiles-1e4.yaml):
    /// a ring of 1,000 is 500 hops across, beyond the routing core's 30-hop limit. The
    /// chords fabric keeps a cell of the spec's ~10^3 tiles well inside it.
    #[test]
    fn chords_keep_a_thousand_tile_cell_within_the_hop_limit() {
        let max_hops = lightcone_core::routing::RouteParams::default().max_hops as usize;
        assert_eq!(diameter(Fabric::Ring, 1000), 500);
        assert!(diameter(Fabric::Ring, 1000) > max_hops);
        let d = diameter(Fabric::Chords, 1000);
        assert!(d <= 16, "chords diameter at 1,000: {d}");
        let links = Fabric::Chords.count(1000);
        assert!((1900..=2000).contains(&links), "{links} links");
        assert_eq!(Fabric::Chords.pairs(1000), Fabric::Chords.pairs(1000));
        assert_eq!(Fabric::parse("chords"), Some(Fabric::Chords));
    }
}
