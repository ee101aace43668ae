//! Deterministic placement of a stripe's `n` shards on distinct tiles, spread over as
//! many cells as the class asks, the cells themselves spread over clusters first.
//!
//! Ranks are rendezvous hashes (SHA-256 of seed, object and the candidate's id), so the
//! same seed, object and candidate set always give the same placement, and a change in
//! the candidates moves only the shards that must move.
use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{Class, StoreError};

/// A tile that can hold shards, with its failure domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tile {
    pub id: u32,
    pub cluster: u32,
    pub cell: u32,
}

fn rank(seed: u64, object: &str, what: u8, id: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update((object.len() as u64).to_le_bytes());
    h.update(object.as_bytes());
    h.update([what]);
    h.update(id.to_le_bytes());
    h.finalize().into()
}

/// The most shards of one stripe a single cell may hold under this class: ⌈n / cells⌉
/// where `cells` is the spread actually reached (what losing a whole cell costs).
pub fn per_cell_cap(n: usize, cells: usize) -> usize {
    n.div_ceil(cells.max(1))
}

/// Place shards `0..n` of `object` on distinct tiles among `tiles` (sorted or not; ids
/// must be distinct). Cells are chosen `class.cells` at most, clusters first (one cell
/// per cluster before a second cell of any cluster); shards go round-robin over the
/// chosen cells, at most [`per_cell_cap`] per cell, spilling into further cells (in rank
/// order) only when the chosen ones run out of tiles. Returns the tile of each shard.
pub fn place(
    seed: u64,
    object: &str,
    class: &Class,
    tiles: &[Tile],
) -> Result<Vec<u32>, StoreError> {
    let n = class.n as usize;
    let mut ids: Vec<u32> = tiles.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() < n {
        return Err(StoreError::NotEnoughTiles {
            class: class.name.clone(),
            n,
            available: ids.len(),
        });
    }
    // cell → (cluster, tiles in rank order)
    let mut cells: BTreeMap<u32, (u32, Vec<u32>)> = BTreeMap::new();
    for t in tiles {
        let e = cells.entry(t.cell).or_insert((t.cluster, Vec::new()));
        if !e.1.contains(&t.id) {
            e.1.push(t.id);
        }
    }
    for (_, ts) in cells.values_mut() {
        ts.sort_by_key(|&id| rank(seed, object, b't', id));
    }
    // Cells in rank order within each cluster; clusters in rank order; then take one cell
    // per cluster per round.
    let mut by_cluster: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (&cell, (cluster, _)) in &cells {
        by_cluster.entry(*cluster).or_default().push(cell);
    }
    for cs in by_cluster.values_mut() {
        cs.sort_by_key(|&c| rank(seed, object, b'c', c));
    }
    let mut clusters: Vec<u32> = by_cluster.keys().copied().collect();
    clusters.sort_by_key(|&c| rank(seed, object, b'k', c));
    let mut order: Vec<u32> = Vec::with_capacity(cells.len());
    let mut round = 0;
    while order.len() < cells.len() {
        for cl in &clusters {
            if let Some(&c) = by_cluster[cl].get(round) {
                order.push(c);
            }
        }
        round += 1;
    }
    let want = (class.cells as usize).clamp(1, order.len());
    let cap = per_cell_cap(n, want);
    let mut out = Vec::with_capacity(n);
    let mut used: BTreeMap<u32, usize> = BTreeMap::new();
    // Round-robin over the chosen cells, at most `cap` each; then spill over all cells.
    for (limit, span) in [(cap, want), (usize::MAX, order.len())] {
        loop {
            let before = out.len();
            for &c in &order[..span] {
                if out.len() == n {
                    break;
                }
                let u = used.entry(c).or_insert(0);
                if *u < limit {
                    if let Some(&t) = cells[&c].1.get(*u) {
                        out.push(t);
                        *u += 1;
                    }
                }
            }
            if out.len() == n || out.len() == before {
                break;
            }
        }
    }
    debug_assert_eq!(out.len(), n);
    Ok(out)
}

/// A live tile to hold shard `index` in place of a lost holder: not already holding a
/// shard of this stripe, in the lost holder's cell if one is free there, else in the cell
/// holding the fewest of this stripe's shards (ties by rank). `None` if no tile is free.
pub fn replacement(
    seed: u64,
    object: &str,
    index: usize,
    lost_cell: Option<u32>,
    holders: &[u32],
    live: &[Tile],
) -> Option<u32> {
    let holding: BTreeMap<u32, usize> =
        live.iter()
            .filter(|t| holders.contains(&t.id))
            .fold(BTreeMap::new(), |mut m, t| {
                *m.entry(t.cell).or_insert(0) += 1;
                m
            });
    live.iter()
        .filter(|t| !holders.contains(&t.id))
        .min_by_key(|t| {
            (
                Some(t.cell) != lost_cell,
                holding.get(&t.cell).copied().unwrap_or(0),
                rank(seed, object, index as u8, t.id),
            )
        })
        .map(|t| t.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(clusters: u32, cells: u32, tiles: u32) -> Vec<Tile> {
        let mut v = Vec::new();
        for k in 0..clusters {
            for c in 0..cells {
                for t in 0..tiles {
                    v.push(Tile {
                        id: (k * cells + c) * tiles + t,
                        cluster: k,
                        cell: k * cells + c,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn distinct_tiles_spread_over_the_cells_asked_and_deterministic() {
        let tiles = grid(2, 3, 20); // 120 tiles, 6 cells, 2 clusters
        let class = Class::new("meta", 20, 60, 4).unwrap();
        let p = place(7, "obj", &class, &tiles).unwrap();
        assert_eq!(p.len(), 60);
        let mut d = p.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 60, "distinct tiles");
        let mut per_cell: BTreeMap<u32, usize> = BTreeMap::new();
        let mut clusters = std::collections::BTreeSet::new();
        for id in &p {
            let t = tiles.iter().find(|t| t.id == *id).unwrap();
            *per_cell.entry(t.cell).or_default() += 1;
            clusters.insert(t.cluster);
        }
        assert_eq!(per_cell.len(), 4, "{per_cell:?}");
        assert!(per_cell.values().all(|&c| c == 15), "{per_cell:?}");
        assert_eq!(clusters.len(), 2, "both clusters used");
        assert_eq!(
            place(7, "obj", &class, &tiles).unwrap(),
            p,
            "same seed, same placement"
        );
        assert_ne!(
            place(8, "obj", &class, &tiles).unwrap(),
            p,
            "another seed moves shards"
        );
    }

    #[test]
    fn small_cells_spill_and_too_few_tiles_is_an_error() {
        let tiles = grid(1, 4, 16); // 64 tiles, cells of 16 < cap 20 at cells = 3
        let class = Class::new("c", 20, 60, 3).unwrap();
        let p = place(1, "x", &class, &tiles).unwrap();
        let mut d = p.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 60);
        let few = &tiles[..59];
        assert_eq!(
            place(1, "x", &class, few),
            Err(StoreError::NotEnoughTiles {
                class: "c".into(),
                n: 60,
                available: 59
            })
        );
    }

    #[test]
    fn replacement_prefers_the_lost_cell_then_the_emptiest() {
        let tiles = grid(1, 3, 4);
        // Holders: tiles 0,1 (cell 0), 4 (cell 1). Lost holder was in cell 0.
        let r = replacement(1, "o", 0, Some(0), &[0, 1, 4], &tiles).unwrap();
        assert!(r == 2 || r == 3, "{r}");
        // Cell 0 full of holders: the emptiest cell (2) is used.
        let r = replacement(1, "o", 0, Some(0), &[0, 1, 2, 3, 4], &tiles).unwrap();
        assert!((8..12).contains(&r), "{r}");
        assert_eq!(
            replacement(1, "o", 0, None, &(0..12).collect::<Vec<_>>(), &tiles),
            None
        );
    }
}
