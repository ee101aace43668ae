//! Where a node sits and what it is for: its hierarchical address and role. The
//! vocabulary of the wire format and the directory, kept apart so neither imports the other.

use serde::{Deserialize, Serialize};

/// Position in the hierarchy: Tile → Cell → Cluster → Layer → System.
///
/// Ordered so that nodes sort by layer, then cluster, then cell, then tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HierAddr {
    pub layer: u16,
    pub cluster: u16,
    pub cell: u16,
    pub tile: u16,
}

/// `layer.cluster.cell.tile`, as [`HierAddr`]'s `Display` writes it.
impl std::str::FromStr for HierAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<HierAddr, String> {
        let parts: Vec<u16> = s
            .split('.')
            .map(|p| p.parse::<u16>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad address {s:?}: {e}"))?;
        match parts[..] {
            [layer, cluster, cell, tile] => Ok(HierAddr {
                layer,
                cluster,
                cell,
                tile,
            }),
            _ => Err(format!("bad address {s:?}: want layer.cluster.cell.tile")),
        }
    }
}

impl HierAddr {
    /// True when both addresses are in the same cell (and hence the same cluster and layer).
    pub fn same_cell(&self, other: &HierAddr) -> bool {
        self.layer == other.layer && self.cluster == other.cluster && self.cell == other.cell
    }
    pub fn same_cluster(&self, other: &HierAddr) -> bool {
        self.layer == other.layer && self.cluster == other.cluster
    }
    pub fn same_layer(&self, other: &HierAddr) -> bool {
        self.layer == other.layer
    }
}

impl std::fmt::Display for HierAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.layer, self.cluster, self.cell, self.tile
        )
    }
}

/// What a node is for. Authorities hold stratum-0 optical clocks; gateways carry their
/// cell's summaries up the hierarchy; tiles are everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Tile,
    Gateway,
    Authority,
}
