//! From the marked YAML tree to a [`Topology`], reporting every mistake at once.

use crate::parse::units;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use lightcone_core::config::{HierAddr, Role};

use super::generator::{Fabric, GenSpec, LayerGen};
use super::{
    light_time_ns, Ipv4Pool, LinkLevel, LinkSpec, NodeSpec, Topology, NETNS_PREFIX, TIME_SCALE_MAX,
    TIME_SCALE_MIN,
};
use crate::parse::yaml::{Node, Pos, Value};
use crate::parse::{did_you_mean, Diagnostics, Fields, Reader};
use lightcone_link::model::{link_seed, Chance, DelayDistribution, LinkModel, LossModel};

const TOP_FIELDS: &[&str] = &[
    "name",
    "time_scale",
    "seed",
    "addressing",
    "defaults",
    "nodes",
    "links",
    "generate",
    "agents",
    "thermal",
    "store",
    "trust",
];
const NODE_FIELDS: &[&str] = &["position", "role", "layer", "cluster", "cell"];
const LINK_FIELDS: &[&str] = &[
    "delay",
    "jitter",
    "jitter_correlation",
    "distribution",
    "loss",
    "loss_correlation",
    "duplicate",
    "duplicate_correlation",
    "corrupt",
    "corrupt_correlation",
    "reorder",
    "reorder_correlation",
    "reorder_gap",
    "rate",
    "packet_overhead",
    "queue_limit",
    "queue_limit_bytes",
    "seed",
];
const ROLES: &[&str] = &["tile", "gateway", "authority"];
const DISTRIBUTIONS: &[&str] = &["uniform", "normal", "pareto", "paretonormal"];

/// Longest namespace name the kernel's /run/netns can hold (a file name).
const NETNS_NAME_MAX: usize = 255;

/// Link parameters as written at one level; `None` = not given here.
#[derive(Debug, Clone, Default)]
struct RawLink {
    delay: Option<(Pos, Option<u64>)>, // None inside = `auto`
    jitter: Option<u64>,
    jitter_correlation: Option<f64>,
    distribution: Option<DelayDistribution>,
    loss: Option<LossModel>,
    loss_correlation: Option<f64>,
    duplicate: Option<f64>,
    duplicate_correlation: Option<f64>,
    corrupt: Option<f64>,
    corrupt_correlation: Option<f64>,
    reorder: Option<f64>,
    reorder_correlation: Option<f64>,
    reorder_gap: Option<u32>,
    rate: Option<u64>,
    packet_overhead: Option<i32>,
    queue_limit: Option<u32>,
    queue_limit_bytes: Option<u64>,
    seed: Option<u64>,
}

macro_rules! or_fields {
    ($self:ident, $base:ident, $($f:ident),*) => {
        RawLink { $($f: $self.$f.or($base.$f.clone()),)* }
    };
}

impl RawLink {
    /// This level's values, falling back to `base` for what is not given here.
    fn or(&self, base: &RawLink) -> RawLink {
        let s = self.clone();
        or_fields!(
            s,
            base,
            delay,
            jitter,
            jitter_correlation,
            distribution,
            loss,
            loss_correlation,
            duplicate,
            duplicate_correlation,
            corrupt,
            corrupt_correlation,
            reorder,
            reorder_correlation,
            reorder_gap,
            rate,
            packet_overhead,
            queue_limit,
            queue_limit_bytes,
            seed
        )
    }
}

impl Reader {
    /// Read link parameters from already-split fields (keys in `LINK_FIELDS`).
    fn link_params(&mut self, fields: &Fields<'_>) -> RawLink {
        let mut r = RawLink::default();
        for (key, v) in fields {
            let what = format!("`{key}`");
            let pct =
                |me: &mut Reader| me.unit(v, &what, "a percentage such as 1%", units::percent);
            match *key {
                "delay" => {
                    if v.scalar() == Some("auto") {
                        r.delay = Some((v.pos, None));
                    } else if let Some(ns) = self.unit(
                        v,
                        &what,
                        "a duration such as 20ms, or auto",
                        units::duration_ns,
                    ) {
                        r.delay = Some((v.pos, Some(ns)));
                    }
                }
                "jitter" => {
                    r.jitter = self.unit(v, &what, "a duration such as 2ms", units::duration_ns)
                }
                "jitter_correlation" => r.jitter_correlation = pct(self),
                "distribution" => {
                    r.distribution = self.choice(v, "distribution", DISTRIBUTIONS, |s| {
                        Some(match s {
                            "uniform" => DelayDistribution::Uniform,
                            "normal" => DelayDistribution::Normal,
                            "pareto" => DelayDistribution::Pareto,
                            "paretonormal" => DelayDistribution::Paretonormal,
                            _ => return None,
                        })
                    })
                }
                "loss" => r.loss = self.loss(v),
                "loss_correlation" => r.loss_correlation = pct(self),
                "duplicate" => r.duplicate = pct(self),
                "duplicate_correlation" => r.duplicate_correlation = pct(self),
                "corrupt" => r.corrupt = pct(self),
                "corrupt_correlation" => r.corrupt_correlation = pct(self),
                "reorder" => r.reorder = pct(self),
                "reorder_correlation" => r.reorder_correlation = pct(self),
                "reorder_gap" => {
                    r.reorder_gap = self.uint(v, &what, u32::MAX as u64).map(|g| g as u32)
                }
                "rate" => r.rate = self.unit(v, &what, "a rate such as 100Mbit", units::rate_bps),
                "packet_overhead" => {
                    if let Some(s) = self.scalar(v, &what, "a whole number of bytes") {
                        match s.parse::<i32>() {
                            Ok(o) if (-1500..=1500).contains(&o) => r.packet_overhead = Some(o),
                            _ => self.d.error(
                                v.pos,
                                format!("`packet_overhead` must be a whole number of bytes between -1500 and 1500, got {s:?}"),
                            ),
                        }
                    }
                }
                "queue_limit" => match self.uint(v, &what, 10_000_000) {
                    Some(0) => self
                        .d
                        .error(v.pos, "`queue_limit` must be at least 1 packet"),
                    Some(q) => r.queue_limit = Some(q as u32),
                    None => {}
                },
                "queue_limit_bytes" => {
                    r.queue_limit_bytes = self.unit(v, &what, "a size such as 1MiB", units::bytes)
                }
                "seed" => r.seed = self.uint(v, &what, u64::MAX),
                _ => {}
            }
        }
        r
    }

    fn loss(&mut self, v: &Node) -> Option<LossModel> {
        if let Value::Map(_) = v.value {
            const LOSS_FIELDS: &[&str] = &[
                "model",
                "probability",
                "correlation",
                "p",
                "r",
                "loss_bad",
                "loss_good",
            ];
            let fields = self.fields(v, LOSS_FIELDS, "`loss`")?;
            let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            let model = match get("model") {
                Some(m) => self.choice(
                    m,
                    "loss model",
                    &["random", "gilbert_elliott"],
                    |s| match s {
                        "random" => Some(false),
                        "gilbert_elliott" | "gemodel" => Some(true),
                        _ => None,
                    },
                )?,
                None => {
                    self.d.error_help(
                        v.pos,
                        "`loss` as a mapping needs a `model`",
                        "write `model: random` with `probability`, or `model: gilbert_elliott` with `p`, `r`, `loss_bad`, `loss_good`",
                    );
                    return None;
                }
            };
            let pct = |me: &mut Reader, k: &str, default: Option<f64>| -> Option<f64> {
                match get(k) {
                    Some(n) => me.unit(n, &format!("`loss.{k}`"), "a percentage", units::percent),
                    None if default.is_some() => default,
                    None => {
                        me.d.error(v.pos, format!("`loss` is missing `{k}`"));
                        None
                    }
                }
            };
            if model {
                for k in ["probability", "correlation"] {
                    if let Some(n) = get(k) {
                        self.d.error(
                            n.pos,
                            format!("`{k}` belongs to the random loss model, not gilbert_elliott"),
                        );
                    }
                }
                let p = pct(self, "p", None);
                let r = pct(self, "r", None);
                let loss_bad = pct(self, "loss_bad", Some(1.0));
                let loss_good = pct(self, "loss_good", Some(0.0));
                if let (Some(r), Some(n)) = (r, get("r")) {
                    if r == 0.0 {
                        self.d.error_help(
                            n.pos,
                            "`loss.r` of 0% would never leave the bad state",
                            "give r > 0%; the mean burst length is 1/r",
                        );
                    }
                }
                Some(LossModel::GilbertElliott {
                    p: p?,
                    r: r?,
                    loss_bad: loss_bad?,
                    loss_good: loss_good?,
                })
            } else {
                for k in ["p", "r", "loss_bad", "loss_good"] {
                    if let Some(n) = get(k) {
                        self.d.error(
                            n.pos,
                            format!("`{k}` belongs to the gilbert_elliott loss model, not random"),
                        );
                    }
                }
                let probability = pct(self, "probability", None)?;
                let correlation = pct(self, "correlation", Some(0.0))?;
                Some(LossModel::Random {
                    probability,
                    correlation,
                })
            }
        } else {
            let p = self.unit(
                v,
                "`loss`",
                "a percentage such as 1% or a loss model mapping",
                units::percent,
            )?;
            Some(if p == 0.0 {
                LossModel::None
            } else {
                LossModel::Random {
                    probability: p,
                    correlation: 0.0,
                }
            })
        }
    }

    fn link_params_of(&mut self, node: &Node, what: &str) -> RawLink {
        match self.fields(node, LINK_FIELDS, what) {
            Some(f) => self.link_params(&f),
            None => RawLink::default(),
        }
    }

    fn generator(&mut self, node: &Node) -> Option<(GenSpec, BTreeMap<LinkLevel, RawLink>)> {
        const GEN_FIELDS: &[&str] = &[
            "layers",
            "cell_fabric",
            "cluster_fabric",
            "layer_fabric",
            "links",
        ];
        const LAYER_FIELDS: &[&str] = &["radius_au", "clusters", "cells", "tiles", "authorities"];
        const LEVELS: &[&str] = &["cell", "cluster", "layer", "system", "authority"];
        let fields = self.fields(node, GEN_FIELDS, "`generate`")?;
        let mut spec = GenSpec {
            layers: Vec::new(),
            cell_fabric: Fabric::Star,
            cluster_fabric: Fabric::Star,
            layer_fabric: Fabric::Ring,
        };
        let mut levels = BTreeMap::new();
        let mut ok = true;
        let mut saw_layers = false;
        for (key, v) in &fields {
            match *key {
                "layers" => {
                    saw_layers = true;
                    let Value::Seq(items) = &v.value else {
                        self.d.error(
                            v.pos,
                            format!("`layers` must be a list, found {}", v.kind()),
                        );
                        ok = false;
                        continue;
                    };
                    if items.is_empty() {
                        self.d
                            .error(v.pos, "`layers` is empty; give at least one layer");
                        ok = false;
                    }
                    for item in items {
                        let Some(lf) = self.fields(item, LAYER_FIELDS, "a layer") else {
                            ok = false;
                            continue;
                        };
                        let mut layer = LayerGen {
                            radius_au: f64::NAN,
                            clusters: 1,
                            cells: 1,
                            tiles: 1,
                            authorities: 0,
                        };
                        for (k, lv) in &lf {
                            match *k {
                                "radius_au" => match self.float(lv, "`radius_au`") {
                                    Some(r) if r > 0.0 && r <= 1e5 => layer.radius_au = r,
                                    Some(r) => {
                                        self.d.error(lv.pos, format!("`radius_au` must be between 0 and 100000 AU, got {r}"));
                                        ok = false;
                                    }
                                    None => ok = false,
                                },
                                _ => {
                                    let min = if *k == "authorities" { 0 } else { 1 };
                                    match self.uint(lv, &format!("`{k}`"), u16::MAX as u64 - 1) {
                                        Some(n) if n >= min => {
                                            let n = n as u16;
                                            match *k {
                                                "clusters" => layer.clusters = n,
                                                "cells" => layer.cells = n,
                                                "tiles" => layer.tiles = n,
                                                _ => layer.authorities = n,
                                            }
                                        }
                                        Some(_) => {
                                            self.d
                                                .error(lv.pos, format!("`{k}` must be at least 1"));
                                            ok = false;
                                        }
                                        None => ok = false,
                                    }
                                }
                            }
                        }
                        if layer.radius_au.is_nan() {
                            if !lf.iter().any(|(k, _)| *k == "radius_au") {
                                self.d.error_help(
                                    item.pos,
                                    "a layer needs `radius_au`",
                                    "give the shell's radius in AU, e.g. radius_au: 1.0",
                                );
                            }
                            ok = false;
                        }
                        spec.layers.push(layer);
                    }
                }
                "cell_fabric" | "cluster_fabric" | "layer_fabric" => {
                    match self.choice(v, &format!("`{key}`"), Fabric::NAMES, Fabric::parse) {
                        Some(f) => match *key {
                            "cell_fabric" => spec.cell_fabric = f,
                            "cluster_fabric" => spec.cluster_fabric = f,
                            _ => spec.layer_fabric = f,
                        },
                        None => ok = false,
                    }
                }
                "links" => {
                    if let Some(lf) = self.fields(v, LEVELS, "`generate.links`") {
                        for (lk, lv) in lf {
                            let level = match lk {
                                "cell" => LinkLevel::Cell,
                                "cluster" => LinkLevel::Cluster,
                                "layer" => LinkLevel::Layer,
                                "system" => LinkLevel::System,
                                _ => LinkLevel::Authority,
                            };
                            let raw = self.link_params_of(lv, &format!("`generate.links.{lk}`"));
                            levels.insert(level, raw);
                        }
                    }
                }
                _ => {}
            }
        }
        if !saw_layers {
            self.d.error_help(
                node.pos,
                "`generate` needs `layers`",
                "list layers, e.g. layers: [{radius_au: 1.0, clusters: 2, cells: 2, tiles: 8}]",
            );
            ok = false;
        }
        ok.then_some((spec, levels))
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Why a well-formed node name still cannot be used, with what to do instead. The plan
/// names a node's interfaces `lo` and `eth1`, `eth2`, … (and the wire engine's ends
/// `w<link>a`/`w<link>b`), and a link `a--b` after its ends; a node named like one of those
/// makes the plan, `ip` inside the lab, the dashboard and the metrics' labels ambiguous.
fn name_collision(s: &str) -> Option<(String, &'static str)> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let wire_end = s
        .strip_prefix('w')
        .and_then(|t| t.strip_suffix('a').or_else(|| t.strip_suffix('b')))
        .is_some_and(digits);
    if s == "lo" || s.strip_prefix("eth").is_some_and(digits) || wire_end {
        return Some((
            format!("node name `{s}` is also the name of an interface the lab creates"),
            "the plan names interfaces lo, eth1, eth2, … in every node and w<N>a/w<N>b in the wire namespace; choose another name",
        ));
    }
    if s.contains("--") {
        return Some((
            format!(
                "node name `{s}` contains `--`, which joins the two ends of a link's name (`a--b`)"
            ),
            "use a single `-`, `_` or `.`; with `--` two different links could get the same name",
        ));
    }
    None
}

fn parse_pool(s: &str) -> Result<Ipv4Pool, String> {
    let help = "write an IPv4 prefix such as 198.18.0.0/15";
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a prefix; {help}"))?;
    let base: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IPv4 address; {help}"))?;
    let prefix: u8 = p
        .parse()
        .map_err(|_| format!("{p:?} is not a prefix length; {help}"))?;
    if !(8..=30).contains(&prefix) {
        return Err(format!(
            "prefix length must be between 8 and 30, got /{prefix}"
        ));
    }
    let mask = u32::MAX << (32 - prefix as u32);
    if u32::from(base) & !mask != 0 {
        return Err(format!(
            "{s} has host bits set; did you mean {}/{prefix}?",
            Ipv4Addr::from(u32::from(base) & mask)
        ));
    }
    let (first, last) = (u32::from(base), u32::from(base) | !mask);
    for (r_base, r_prefix, what) in RESERVED_POOLS {
        let r_first = u32::from(*r_base);
        let r_last = r_first | !(u32::MAX << (32 - *r_prefix as u32));
        if first <= r_last && r_first <= last {
            let overlap = if (first, last) == (r_first, r_last) {
                format!("{s} is the {what} range")
            } else {
                format!("{s} overlaps {r_base}/{r_prefix}, the {what} range")
            };
            return Err(format!(
                "{overlap}, which cannot address a link; leave `addressing` out to use the default {}, RFC 2544's benchmarking block",
                Ipv4Pool::DEFAULT
            ));
        }
    }
    Ok(Ipv4Pool { base, prefix })
}

/// Ranges a link subnet cannot come from: the kernel treats them specially (loopback is
/// local to every namespace, multicast and class E are not unicast, 0/8 is "this network",
/// link-local is autoconfiguration's).
const RESERVED_POOLS: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved (class E and broadcast)",
    ),
];

/// Default seed when a topology gives none; printed wherever a run reports its seed.
pub const DEFAULT_SEED: u64 = 1;

/// A topology from an already parsed tree (a file's, or one written inline in a scenario,
/// whose positions are the scenario file's).
/// `agents: {tiles_per_process: N}`: how many tiles one agent process hosts (1 when absent:
/// one process per node, as before), from 1 to [`super::TILES_PER_PROCESS_MAX`].
fn read_agents(r: &mut Reader, node: Option<&Node>) -> usize {
    let Some(node) = node else { return 1 };
    let Some(fields) = r.fields(node, &["tiles_per_process"], "`agents`") else {
        return 1;
    };
    let mut n = 1;
    for (_, v) in fields {
        let max = super::TILES_PER_PROCESS_MAX as u64;
        match r.uint(v, "`agents.tiles_per_process`", max) {
            Some(0) => r.d.error_help(
                v.pos,
                "`agents.tiles_per_process` must be at least 1, got 0",
                "1 runs one agent process per node; 16 runs a ring cell of 16 tiles in one",
            ),
            Some(k) => n = k as usize,
            None => {}
        }
    }
    n
}

pub(super) fn read_tree(root: &Node) -> Result<Topology, Diagnostics> {
    read_tree_for(root, super::Host::Lab)
}

/// The topology in `root`, read for `host` (its node limit).
pub(super) fn read_tree_for(root: &Node, host: super::Host) -> Result<Topology, Diagnostics> {
    let max_nodes = host.max_nodes();
    let (limit_text, limit_help) = host.limit_words();
    let mut r = Reader {
        d: Diagnostics::default(),
    };
    if root.is_null() {
        r.d.error_help(
            root.pos,
            "the topology is empty",
            "a topology needs at least `name:` and `nodes:` (or `generate:`)",
        );
        return Err(r.d);
    }
    let Some(top) = r.fields(root, TOP_FIELDS, "the topology") else {
        return Err(r.d);
    };
    let get = |k: &str| top.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);

    // name
    let mut name = String::from("lab");
    match get("name") {
        None => r.d.error_help(
            root.pos,
            "the topology has no `name`",
            "add e.g. `name: demo` (lowercase letters, digits and dashes)",
        ),
        Some(n) => {
            if let Some(s) = r.string(n, "`name`") {
                if super::valid_lab_name(&s) {
                    name = s;
                } else {
                    r.d.error_help(
                        n.pos,
                        format!("lab name {s:?} is not usable"),
                        super::LAB_NAME_RULE,
                    );
                }
            }
        }
    }
    let time_scale = match get("time_scale") {
        None => 1.0,
        Some(n) => match r.float(n, "`time_scale`") {
            Some(t) if (TIME_SCALE_MIN..=TIME_SCALE_MAX).contains(&t) => t,
            Some(_) => {
                let text = n.scalar().unwrap_or_default();
                r.d.error_help(n.pos, format!("`time_scale` must be between {TIME_SCALE_MIN} and {TIME_SCALE_MAX}, got {text}"), "it is emulated seconds per real second: 1 is real time, 1000 plays 1000 s in one second, 0.001 plays one second in 1000");
                1.0
            }
            None => 1.0,
        },
    };
    let seed = get("seed")
        .and_then(|n| r.uint(n, "`seed`", u64::MAX))
        .unwrap_or(DEFAULT_SEED);
    let tiles_per_process = read_agents(&mut r, get("agents"));
    let mut pool = Ipv4Pool::DEFAULT;
    let mut pool_pos = root.pos;
    if let Some(a) = get("addressing") {
        if let Some(af) = r.fields(a, &["pool"], "`addressing`") {
            for (_, v) in af {
                pool_pos = v.pos;
                if let Some(p) = r.unit(v, "`pool`", "an IPv4 prefix", parse_pool) {
                    pool = p;
                }
            }
        }
    }
    let mut defaults = RawLink::default();
    if let Some(dn) = get("defaults") {
        if let Some(df) = r.fields(dn, &["link"], "`defaults`") {
            for (_, v) in df {
                defaults = r.link_params_of(v, "`defaults.link`");
            }
        }
    }

    // nodes
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut node_pos: Vec<Pos> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(nn) = get("nodes") {
        match &nn.value {
            Value::Map(pairs) => {
                let mut tiles_in_cell: BTreeMap<(u16, u16, u16), u16> = BTreeMap::new();
                for (k, v) in pairs {
                    let Some(nname) = r.scalar(k, "a node name", "a name") else {
                        continue;
                    };
                    if nodes.len() == max_nodes {
                        r.d.error_help(
                            k.pos,
                            format!("more than {max_nodes} nodes: {limit_text}"),
                            limit_help,
                        );
                        break;
                    }
                    if !valid_name(nname) {
                        r.d.error_help(k.pos, format!("node name {nname:?} is not usable"), "use letters, digits, `-`, `_` and `.`, starting with a letter or digit");
                        continue;
                    }
                    if let Some((message, help)) = name_collision(nname) {
                        r.d.error_help(k.pos, message, help);
                        continue;
                    }
                    let netns = super::netns_name(&name, nname);
                    if netns.len() > NETNS_NAME_MAX {
                        r.d.error_help(k.pos, format!("node name is too long: its namespace name would be {} bytes, the kernel holds at most {NETNS_NAME_MAX}", netns.len()), format!("shorten the node name to at most {} characters", NETNS_NAME_MAX - NETNS_PREFIX.len() - name.len() - 1));
                        continue;
                    }
                    if let Some(&first) = index.get(nname) {
                        r.d.error(
                            k.pos,
                            format!(
                                "duplicate node name `{nname}` (first at line {})",
                                node_pos[first].line
                            ),
                        );
                        continue;
                    }
                    let Some(nf) = r.fields(v, NODE_FIELDS, &format!("node `{nname}`")) else {
                        continue;
                    };
                    let mut spec = NodeSpec {
                        name: nname.to_string(),
                        role: Role::Tile,
                        addr: HierAddr {
                            layer: 0,
                            cluster: 0,
                            cell: 0,
                            tile: 0,
                        },
                        position_au: None,
                    };
                    for (f, fv) in nf {
                        match f {
                            "position" => {
                                let ok = match &fv.value {
                                    Value::Seq(items) if items.len() == 3 => {
                                        let mut p = [0.0; 3];
                                        let mut all = true;
                                        for (i, it) in items.iter().enumerate() {
                                            match r.float(it, "a position coordinate") {
                                                Some(x) => p[i] = x,
                                                None => all = false,
                                            }
                                        }
                                        if all {
                                            spec.position_au = Some(p);
                                        }
                                        true
                                    }
                                    _ => false,
                                };
                                if !ok {
                                    r.d.error_help(
                                        fv.pos,
                                        "`position` must be a list of three numbers",
                                        "write e.g. position: [1.0, 0.0, 0.0] (astronomical units)",
                                    );
                                }
                            }
                            "role" => {
                                if let Some(role) = r.choice(fv, "role", ROLES, |s| match s {
                                    "tile" => Some(Role::Tile),
                                    "gateway" => Some(Role::Gateway),
                                    "authority" => Some(Role::Authority),
                                    _ => None,
                                }) {
                                    spec.role = role;
                                }
                            }
                            lvl => {
                                if let Some(x) =
                                    r.uint(fv, &format!("`{lvl}`"), u16::MAX as u64 - 1)
                                {
                                    match lvl {
                                        "layer" => spec.addr.layer = x as u16,
                                        "cluster" => spec.addr.cluster = x as u16,
                                        _ => spec.addr.cell = x as u16,
                                    }
                                }
                            }
                        }
                    }
                    let t = tiles_in_cell
                        .entry((spec.addr.layer, spec.addr.cluster, spec.addr.cell))
                        .or_default();
                    spec.addr.tile = *t;
                    *t = t.saturating_add(1);
                    index.insert(nname.to_string(), nodes.len());
                    nodes.push(spec);
                    node_pos.push(k.pos);
                }
            }
            _ if nn.is_null() => {}
            _ => r.d.error_help(
                nn.pos,
                format!(
                    "`nodes` must be a mapping of node names, found {}",
                    nn.kind()
                ),
                "write e.g. nodes: { a: {}, b: {} }",
            ),
        }
    }

    // links (explicit ones first, so generator links can be appended after)
    struct PendingLink {
        a: usize,
        b: usize,
        level: LinkLevel,
        raw: RawLink,
        pos: Pos,
    }
    let mut pending: Vec<PendingLink> = Vec::new();
    let mut gen_levels = BTreeMap::new();
    if let Some(g) = get("generate") {
        if let Some((spec, levels)) = r.generator(g) {
            let (n, l) = spec.size();
            if n as usize + nodes.len() > max_nodes {
                let explicit = match nodes.len() {
                    0 => String::new(),
                    e => format!(" besides the {e} under `nodes:`"),
                };
                let help = match host {
                    super::Host::Lab => "lower clusters, cells or tiles; the discrete-event simulator is the place for 10^6 tiles",
                    super::Host::Twin => limit_help,
                };
                r.d.error_help(
                    g.pos,
                    format!("the generator would make {n} nodes{explicit}; {limit_text}"),
                    help,
                );
            } else if l > 4 * max_nodes as u64 * 10 {
                r.d.error_help(
                    g.pos,
                    format!("the generator would make {l} links"),
                    "use a sparser fabric (star, ring or line) for large cells",
                );
            } else {
                let (gnodes, glinks) = spec.expand(nodes.len());
                for gn in gnodes {
                    if let Some(&first) = index.get(&gn.name) {
                        r.d.error(
                            node_pos[first],
                            format!("node name `{}` is also made by `generate`", gn.name),
                        );
                        continue;
                    }
                    index.insert(gn.name.clone(), nodes.len());
                    node_pos.push(g.pos);
                    nodes.push(NodeSpec {
                        name: gn.name,
                        role: gn.role,
                        addr: gn.addr,
                        position_au: Some(gn.position_au),
                    });
                }
                gen_levels = levels;
                for gl in glinks {
                    pending.push(PendingLink {
                        a: gl.a,
                        b: gl.b,
                        level: gl.level,
                        raw: RawLink::default(),
                        pos: g.pos,
                    });
                }
            }
        }
    }
    if nodes.is_empty() && r.d.is_empty() {
        r.d.error_help(
            root.pos,
            "the topology has no nodes",
            "add `nodes:` (e.g. nodes: { a: {}, b: {} }) or a `generate:` section",
        );
    }
    if let Some(ln) = get("links") {
        match &ln.value {
            Value::Seq(items) => {
                let mut link_fields: Vec<&str> = vec!["endpoints"];
                link_fields.extend_from_slice(LINK_FIELDS);
                for item in items {
                    let Some(lf) = r.fields(item, &link_fields, "a link") else {
                        continue;
                    };
                    let mut ends: Option<(usize, usize)> = None;
                    let mut saw_endpoints = false;
                    let mut params: Fields<'_> = Vec::new();
                    for (k, v) in lf {
                        if k != "endpoints" {
                            params.push((k, v));
                            continue;
                        }
                        saw_endpoints = true;
                        let Value::Seq(e) = &v.value else {
                            r.d.error_help(
                                v.pos,
                                format!(
                                    "`endpoints` must be a list of two node names, found {}",
                                    v.kind()
                                ),
                                "write e.g. endpoints: [a, b]",
                            );
                            continue;
                        };
                        if e.len() != 2 {
                            r.d.error_help(
                                v.pos,
                                format!("a link has exactly two endpoints, found {}", e.len()),
                                "write e.g. endpoints: [a, b]; for more nodes, add more links",
                            );
                            continue;
                        }
                        let mut idx = [None, None];
                        for (i, en) in e.iter().enumerate() {
                            let Some(s) = r.scalar(en, "an endpoint", "a node name") else {
                                continue;
                            };
                            match index.get(s) {
                                Some(&n) => idx[i] = Some(n),
                                None => {
                                    let names: Vec<&str> =
                                        index.keys().map(String::as_str).collect();
                                    let help = match did_you_mean(s, &names) {
                                        Some(m) => format!("did you mean `{m}`?"),
                                        None if names.len() <= 12 => {
                                            format!("known nodes: {}", names.join(", "))
                                        }
                                        None => "declare it under `nodes:` first".to_string(),
                                    };
                                    r.d.error_help(
                                        en.pos,
                                        format!(
                                            "link endpoint `{s}` is not a node of this topology"
                                        ),
                                        help,
                                    );
                                }
                            }
                        }
                        if let [Some(a), Some(b)] = idx {
                            if a == b {
                                r.d.error_help(
                                    v.pos,
                                    format!("link from `{}` to itself", nodes[a].name),
                                    "a link joins two different nodes",
                                );
                            } else {
                                ends = Some((a, b));
                            }
                        }
                    }
                    if !saw_endpoints {
                        r.d.error_help(
                            item.pos,
                            "a link needs `endpoints`",
                            "write e.g. endpoints: [a, b]",
                        );
                    }
                    let raw = r.link_params(&params);
                    if let Some((a, b)) = ends {
                        pending.push(PendingLink {
                            a,
                            b,
                            level: LinkLevel::Explicit,
                            raw,
                            pos: item.pos,
                        });
                    }
                }
            }
            _ if ln.is_null() => {}
            _ => r.d.error_help(
                ln.pos,
                format!("`links` must be a list, found {}", ln.kind()),
                "write each link as `- endpoints: [a, b]`",
            ),
        }
    }

    // Resolve links: defaults, light-time, duplicates, addresses.
    let mut seen: BTreeMap<(usize, usize), Pos> = BTreeMap::new();
    let mut links = Vec::new();
    for (i, pl) in pending.iter().enumerate() {
        let key = (pl.a.min(pl.b), pl.a.max(pl.b));
        if let Some(first) = seen.get(&key) {
            r.d.error_help(
                pl.pos,
                format!(
                    "a second link between `{}` and `{}` (first at line {})",
                    nodes[key.0].name, nodes[key.1].name, first.line
                ),
                "keep one link per pair; change its parameters instead",
            );
            continue;
        }
        seen.insert(key, pl.pos);
        let level_raw = gen_levels.get(&pl.level).cloned().unwrap_or_default();
        let raw = pl.raw.or(&level_raw).or(&defaults);
        let (delay_pos, delay) = raw.delay.unwrap_or((pl.pos, Some(0)));
        let (delay_ns, delay_auto) = match delay {
            Some(ns) => (ns, false),
            None => match (nodes[pl.a].position_au, nodes[pl.b].position_au) {
                (Some(pa), Some(pb)) => (light_time_ns(pa, pb), true),
                (pa, _) => {
                    let missing = if pa.is_none() {
                        &nodes[pl.a].name
                    } else {
                        &nodes[pl.b].name
                    };
                    r.d.error_help(delay_pos, format!("`delay: auto` needs positions for both endpoints, but `{missing}` has none"), format!("give `{missing}` a position: [x, y, z] in AU, or write a fixed delay such as 20ms"));
                    (0, true)
                }
            },
        };
        if delay_ns > units::MAX_DURATION_NS {
            r.d.error(delay_pos, format!("the light-time between `{}` and `{}` is {}, longer than the longest supported delay (7 days)", nodes[pl.a].name, nodes[pl.b].name, units::fmt_ns(delay_ns)));
        }
        let loss = match raw.loss.unwrap_or_default() {
            LossModel::Random {
                probability,
                correlation,
            } => LossModel::Random {
                probability,
                correlation: if correlation == 0.0 {
                    raw.loss_correlation.unwrap_or(0.0)
                } else {
                    correlation
                },
            },
            other => other,
        };
        let chance = |p: Option<f64>, c: Option<f64>| Chance {
            probability: p.unwrap_or(0.0),
            correlation: c.unwrap_or(0.0),
        };
        let model = LinkModel {
            delay_ns,
            jitter_ns: raw.jitter.unwrap_or(0),
            jitter_correlation: raw.jitter_correlation.unwrap_or(0.0),
            distribution: raw.distribution.unwrap_or_default(),
            loss,
            duplicate: chance(raw.duplicate, raw.duplicate_correlation),
            corrupt: chance(raw.corrupt, raw.corrupt_correlation),
            reorder: chance(raw.reorder, raw.reorder_correlation),
            reorder_gap: raw.reorder_gap.unwrap_or(0),
            rate_bps: raw.rate,
            packet_overhead_bytes: raw.packet_overhead.unwrap_or(0),
            queue_limit_packets: raw.queue_limit,
            queue_limit_bytes: raw.queue_limit_bytes,
            seed: raw.seed.unwrap_or_else(|| link_seed(seed, i as u64)),
        };
        links.push(LinkSpec {
            a: pl.a,
            b: pl.b,
            level: pl.level,
            delay_auto,
            model,
        });
    }
    if links.len() as u64 > pool.capacity_links() {
        r.d.error_help(pool_pos, format!("address pool {pool} holds {} link subnets (/31 each) but the lab has {} links", pool.capacity_links(), links.len()), "use a larger pool under `addressing: {pool: …}` (the default 198.18.0.0/15 holds 65536 links)");
    }
    let thermal = match get("thermal") {
        Some(t) if r.d.is_empty() => super::thermal::read(&mut r, t, &nodes),
        _ => None,
    };
    let store = match get("store") {
        Some(t) if r.d.is_empty() => super::store::read(&mut r, t, &nodes),
        _ => None,
    };
    let trust = match get("trust") {
        Some(t) if r.d.is_empty() => super::trust::read(&mut r, t),
        _ => None,
    };
    if r.d.is_empty() {
        Ok(Topology {
            name,
            time_scale,
            seed,
            pool,
            nodes,
            links,
            tiles_per_process,
            thermal,
            store,
            trust,
        })
    } else {
        Err(r.d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped JSON schema names every key the reader accepts (and the reader is the
    /// reference: a key only in the schema would be rejected by `validate`).
    #[test]
    fn json_schema_lists_every_key() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../topologies/lightcone-topology.schema.json"
        );
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let props = |v: &serde_json::Value| -> Vec<String> {
            v["properties"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut top = props(&schema);
        top.sort();
        let mut want: Vec<String> = TOP_FIELDS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(top, want);
        let node = &schema["properties"]["nodes"]["additionalProperties"]["oneOf"][1];
        let mut n = props(node);
        n.sort();
        let mut want: Vec<String> = NODE_FIELDS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(n, want);
        let mut l = props(&schema["$defs"]["linkParams"]);
        l.sort();
        let mut want: Vec<String> = LINK_FIELDS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(l, want);
    }
}
