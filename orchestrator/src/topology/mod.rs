//! Topologies: YAML in, a resolved, validated [`Topology`] out.
//!
//! Parse, don't validate: the YAML is read into a tree that remembers positions
//! ([`yaml`]), then converted field by field into typed values (`read`, with the
//! [`crate::parse`] toolkit's reader), collecting *every* mistake with its file:line:column
//! instead of stopping at the first. Generators
//! ([`generator`]) expand a dozen lines into a hierarchy of layers, clusters, cells and tiles.
//! Light-time delays (`delay: auto`) are resolved from positions here, so the plan and the
//! engines only ever see numbers.

pub mod generator;
mod read;
mod store;
mod thermal;
mod trust;

use std::net::Ipv4Addr;
use std::path::Path;

pub use crate::parse::{Diagnostic, Diagnostics, LoadError};
use lightcone_core::config::{HierAddr, Role};

use lightcone_link::model::LinkModel;

/// Light-time for one astronomical unit, in seconds (IAU 2012: 149 597 870 700 m / c).
pub const AU_LIGHT_SECONDS: f64 = 149_597_870_700.0 / 299_792_458.0;

/// Largest lab this tool builds on one host.
pub const MAX_NODES: usize = 10_000;

/// Largest system the digital twin (`lightcone simulate`) reads: the spec's validation
/// scale ("≥10⁶ node equivalent before any physical deployment"). It builds no namespace,
/// so the lab's per-host cap does not bind it; memory per simulated tile does.
pub const MAX_TWIN_NODES: usize = 1_000_000;

/// What a topology is read for: its size limit and the words of the error past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Host {
    /// A lab of namespaces on one host (`up`, `run`): at most [`MAX_NODES`].
    #[default]
    Lab,
    /// The discrete-event twin (`simulate`): at most [`MAX_TWIN_NODES`].
    Twin,
}

impl Host {
    /// The most nodes a topology may have here.
    pub fn max_nodes(self) -> usize {
        match self {
            Host::Lab => MAX_NODES,
            Host::Twin => MAX_TWIN_NODES,
        }
    }
    /// "a lab on one host holds at most …" / "the digital twin simulates at most …", and
    /// what to do instead.
    pub fn limit_words(self) -> (String, &'static str) {
        match self {
            Host::Lab => (
                format!("a lab on one host holds at most {MAX_NODES}"),
                "the discrete-event simulator is the place for larger systems",
            ),
            Host::Twin => (
                format!("the digital twin simulates at most {MAX_TWIN_NODES}"),
                "lower clusters, cells or tiles (10^6 tiles is the spec's validation scale)",
            ),
        }
    }
}

/// Slowest `time_scale` (emulated seconds per real second): one emulated millisecond is a
/// real second. Slower, the longest delay (7 days emulated) would take decades of real time.
pub const TIME_SCALE_MIN: f64 = 1e-3;
/// Fastest `time_scale`. The agents count emulated time in u64 nanoseconds from the lab's
/// epoch (584 years), which at this scale lasts 2.1 days of real time (at 10⁶ it would run
/// out after 5.1 hours of a lab left up). Already at this scale a 1 ms emulated delay is
/// 10 ns of real time, far below what a host can schedule.
pub const TIME_SCALE_MAX: f64 = 1e5;

/// Most tiles one agent process may host. Each tile holds a few descriptors (its sockets,
/// listener, connections) and its share of one event loop; a process dying (the kernel's
/// OOM killer) takes all its tiles with it, so a group stays a bounded blast radius.
pub const TILES_PER_PROCESS_MAX: usize = 1024;

/// Prefix of every namespace a lab creates: `lc-<lab>-<node>`.
pub const NETNS_PREFIX: &str = "lc-";

/// Namespace of a node (the topology checks its length; the plan names it).
pub fn netns_name(lab: &str, node: &str) -> String {
    format!("{NETNS_PREFIX}{lab}_{node}")
}

/// Longest lab name: it is part of every namespace name and of paths under /run.
pub const LAB_NAME_MAX: usize = 32;

/// The lab name rule, as a hint for whoever wrote a bad one.
pub const LAB_NAME_RULE: &str =
    "use 1 to 32 lowercase letters, digits and dashes, starting with a letter or digit";

/// A usable lab name: 1 to [`LAB_NAME_MAX`] lowercase letters, digits and dashes, starting
/// with a letter or digit. A lab name becomes a directory under the state root and a
/// namespace prefix (`lc-<lab>_`), so it can hold no `/`, `.` or `_`; every place a lab
/// name enters (topology, command line) checks it with this one rule.
pub fn valid_lab_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LAB_NAME_MAX
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A resolved topology: every default applied, every generator expanded, every light-time
/// computed, every name checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub name: String,
    /// Emulated seconds per real second.
    pub time_scale: f64,
    pub seed: u64,
    /// Address pool for link subnets.
    pub pool: Ipv4Pool,
    pub nodes: Vec<NodeSpec>,
    pub links: Vec<LinkSpec>,
    /// Tiles hosted by one agent process (`agents: {tiles_per_process: N}`; 1: one process
    /// per node). Nodes go to processes in plan order, so a generated cell's tiles share one.
    pub tiles_per_process: usize,
    /// The `thermal:` section (issue 15), checked against the layers' radii; `None`: off.
    pub thermal: Option<lightcone_core::heat::config::ThermalConfig>,
    /// The `store:` section (issue 16), checked against the lab's nodes and cells;
    /// `None`: off.
    pub store: Option<lightcone_core::store::config::StoreConfig>,
    /// The `trust:` section (issue 17's watch options); `None`: all off.
    pub trust: Option<lightcone_core::config::TrustOptions>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    pub addr: HierAddr,
    pub position_au: Option<[f64; 3]>,
}

/// Which level of the hierarchy a link belongs to (for defaults and for display).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LinkLevel {
    Cell,
    Cluster,
    Layer,
    System,
    Authority,
    Explicit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Index of the first endpoint in `Topology::nodes`.
    pub a: usize,
    /// Index of the second endpoint.
    pub b: usize,
    pub level: LinkLevel,
    /// True when the delay was computed from positions (`delay: auto`).
    pub delay_auto: bool,
    pub model: LinkModel,
}

/// An IPv4 prefix from which link subnets (/31 each) are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Pool {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Pool {
    /// RFC 2544's benchmarking block, 198.18.0.0/15.
    pub const DEFAULT: Ipv4Pool = Ipv4Pool {
        base: Ipv4Addr::new(198, 18, 0, 0),
        prefix: 15,
    };
    /// How many /31 link subnets fit.
    pub fn capacity_links(&self) -> u64 {
        (1u64 << (32 - self.prefix as u32)) / 2
    }
}

impl std::fmt::Display for Ipv4Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Topology {
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
    /// Index of the link between two named nodes, in either order.
    pub fn link_between(&self, a: &str, b: &str) -> Option<usize> {
        let (a, b) = (self.node_index(a)?, self.node_index(b)?);
        self.links
            .iter()
            .position(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }
}

/// Parse topology source text. `file` is only used in messages.
pub fn parse_str(src: &str, file: &str) -> Result<Topology, LoadError> {
    crate::parse::parse_str(src, file, read::read_tree)
}

/// A topology from an already parsed YAML tree: one written inline in a scenario. The
/// diagnostics carry the tree's positions, to be rendered against its file.
pub fn from_tree(root: &crate::parse::yaml::Node) -> Result<Topology, Diagnostics> {
    read::read_tree(root)
}

/// [`from_tree`] for `host`: the twin reads systems past the lab's per-host cap.
pub fn from_tree_for(root: &crate::parse::yaml::Node, host: Host) -> Result<Topology, Diagnostics> {
    read::read_tree_for(root, host)
}

/// [`parse_str`] for `host`.
pub fn parse_str_for(src: &str, file: &str, host: Host) -> Result<Topology, LoadError> {
    crate::parse::parse_str(src, file, |root| read::read_tree_for(root, host))
}

/// [`load`] for `host`.
pub fn load_for(path: &Path, host: Host) -> Result<Topology, LoadError> {
    let src = crate::parse::read_source(path)?;
    parse_str_for(&src, &path.display().to_string(), host)
}

/// Read and parse a topology file.
pub fn load(path: &Path) -> Result<Topology, LoadError> {
    let src = crate::parse::read_source(path)?;
    parse_str(&src, &path.display().to_string())
}

/// Light-time between two positions, in emulated nanoseconds.
pub fn light_time_ns(a: [f64; 3], b: [f64; 3]) -> u64 {
    let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
    (d * AU_LIGHT_SECONDS * 1e9).round() as u64
}

/// Shared by the section readers' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::{parse_str, LoadError};

    /// The rendered error of a topology that must not load.
    pub(crate) fn error_of(src: &str) -> String {
        match parse_str(src, "bad.yaml") {
            Ok(_) => panic!("expected an error for:\n{src}"),
            Err(LoadError::Invalid { rendered, .. }) => rendered,
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
}
