//! A plan slice: what one host's `lightcone worker --stdio` builds. The controller places
//! a plan on its hosts ([`super::placement`]), cuts out each host's nodes and the links
//! between them ([`Slice::of`]), and sends each worker its slice as one JSON line.
//!
//! A slice is versioned ([`SLICE_FORMAT`]) and names the controller's binary (version
//! and SHA-256): a worker running another build refuses it, since the two would disagree
//! on what a plan means. A slice is input from another machine, so [`Slice::check`]
//! verifies everything apply relies on (names derived from the lab, indices in range,
//! interface names the kernel takes, link models valid) before anything is built: a
//! malformed slice is refused and nothing changes.
//!
//! Links crossing hosts are listed as [`CrossEnd`]s, one per host, and built by the
//! worker over kernel VXLAN ([`super::vxlan::build_cross`]). Not yet: the slice's agents
//! are numbered within the slice (ids 0..n on each host), so agents on different hosts do
//! not know each other; a lab whose agents talk across hosts needs one numbering and one
//! key directory for the whole lab.

use std::io::{BufRead, Read};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::placement::Placement;
use super::Hosts;
use crate::link::engine::EngineChoice;
use crate::plan::{self, Mac, Plan, IFNAME_MAX};
use crate::topology::{self, MAX_NODES, TILES_PER_PROCESS_MAX, TIME_SCALE_MAX, TIME_SCALE_MIN};
use lightcone_link::model::LinkModel;

/// The slice format this build reads and writes.
pub const SLICE_FORMAT: u32 = 1;

/// Largest slice a worker reads (one JSON line): a 10⁴-node plan is a few MiB.
pub const MAX_SLICE_BYTES: usize = 64 << 20;

/// The binary that cut the slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    pub version: String,
    /// SHA-256 of the `lightcone` binary, hex.
    pub sha256: String,
}

impl Controller {
    /// This binary: its package version and the SHA-256 of `/proc/self/exe`.
    pub fn this() -> std::io::Result<Controller> {
        let mut f = std::fs::File::open("/proc/self/exe")?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(Controller {
            version: env!("CARGO_PKG_VERSION").to_string(),
            sha256: hex::encode(h.finalize()),
        })
    }
}

/// One end of a link between hosts, on this slice's host. The worker builds it (see
/// [`super::vxlan::build_cross`]): the node's interface, and a VXLAN device whose far end
/// is the other host's; with the wire engine the node's interface is a veth into the wire
/// namespace and the VXLAN device sits there, named as the far end's wire interface, so
/// the engine forwards between them as between any two ends. Each host shapes only the
/// direction it sends ([`CrossEnd::model`]): the link is shaped once, at its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossEnd {
    /// The link's name in the whole plan (`a--b`).
    pub link: String,
    pub vni: u32,
    pub port: u16,
    /// The node (index in the slice's plan) holding this end.
    pub node: usize,
    pub ifname: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub peer_ip: Ipv4Addr,
    pub peer_mac: Mac,
    /// This end's interface in this host's wire namespace (wire engine).
    pub wire_ifname: String,
    /// The VXLAN device in this host's wire namespace that stands for the far end (named
    /// as the far end's wire interface; wire engine).
    pub far_wire_ifname: String,
    /// What this host does to the frames it sends over the link; the far host shapes the
    /// other direction.
    pub model: LinkModel,
    /// The host at the other end.
    pub remote_host: String,
    /// This host's underlay interface (the VXLAN devices' lower device).
    pub underlay: String,
    /// This host's and the far host's underlay IPv4 addresses, learnt at `up` from each
    /// host (`lightcone worker --identify --underlay IF`); `None` in a slice `plan` prints.
    pub local_addr: Option<Ipv4Addr>,
    pub remote_addr: Option<Ipv4Addr>,
    /// Half the underlay's measured round trip to the far host, real ns, already taken
    /// off [`CrossEnd::model`]'s delay by the controller (0 in a slice `plan` prints).
    #[serde(default)]
    pub underlay_one_way_ns: u64,
}

/// What makes the agents of every host one lab (a lab with links between hosts): one
/// numbering, one directory and one set of keys, and one epoch.
///
/// Every host derives the lab's keys (node identities, the operator key, the authorities'
/// threshold key, the directory certificate and the build approval) from one secret the
/// controller draws from the OS RNG at `up` and sends over each host's ssh session: the
/// same on every host, never written into a plan. So every host holds every node's
/// secret key (a host is trusted with the lab, as the one machine of a local lab is).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabWide {
    /// The whole lab's plan: agents are numbered in it and its directory is every agent's.
    pub plan: Plan,
    /// 32 bytes, hex: the seed of the lab's keys.
    pub secret_hex: String,
    /// Emulated time 0 on the controller's `CLOCK_REALTIME`, ns since the Unix epoch.
    pub epoch_realtime_ns: u64,
    /// This host's clock minus the controller's (sampled at `up`), ms, and the bound of
    /// that estimate: the worker places the epoch on its own clock with it, and time
    /// errors between agents of two hosts are only known to within the two bounds.
    pub clock_offset_ms: f64,
    pub clock_offset_bound_ms: f64,
    /// The largest of every host's bound, ms: two hosts' placements of the epoch differ by
    /// at most this host's bound plus it, and so may the ground truth of two agents whose
    /// clocks one synchronizes from the other. Absent from an older controller: 0.
    #[serde(default)]
    pub lab_clock_bound_ms: f64,
}

impl std::fmt::Debug for LabWide {
    /// Everything but the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabWide")
            .field("lab", &self.plan.lab)
            .field("nodes", &self.plan.nodes.len())
            .field("epoch_realtime_ns", &self.epoch_realtime_ns)
            .field("clock_offset_ms", &self.clock_offset_ms)
            .finish_non_exhaustive()
    }
}

impl LabWide {
    /// The 32-byte seed, if `secret_hex` is one.
    pub fn secret(&self) -> Option<[u8; 32]> {
        hex::decode(&self.secret_hex).ok()?.try_into().ok()
    }

    /// The lab's epoch on this host's `CLOCK_MONOTONIC` (what agents count emulated time
    /// from), given this host's realtime and monotonic clocks read together now.
    pub fn epoch_monotonic_ns(&self, realtime_now_ns: u64, monotonic_now_ns: u64) -> u64 {
        // The controller's epoch as this host's clock reads it.
        let here = self.epoch_realtime_ns as f64 + self.clock_offset_ms * 1e6;
        let since = realtime_now_ns as f64 - here;
        (monotonic_now_ns as f64 - since).max(0.0) as u64
    }
}

/// The wire namespace of a lab's slice on host `host`: the lab's wire namespace name with
/// the host's, so two hosts that share one kernel (the tests' fake hosts) never share one.
pub fn host_wire_netns(lab: &str, host: &str) -> String {
    format!("{}-{host}", plan::wire_netns_name(lab))
}

/// What one worker builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slice {
    pub format: u32,
    pub controller: Controller,
    /// The host this slice is for.
    pub host: String,
    pub engine: EngineChoice,
    /// Start agents (false: namespaces and links only).
    pub agents: bool,
    /// MTU of every lab link (smallest underlay MTU − 50).
    pub lab_mtu: u32,
    /// The host's nodes and the links between them, renumbered from 0.
    pub plan: Plan,
    /// Index in the whole plan of each of `plan.nodes`.
    pub origin: Vec<usize>,
    pub cross: Vec<CrossEnd>,
    /// One lab over every host (set by the controller at `up` when links cross hosts;
    /// `None` in what `plan` prints): see [`LabWide`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab: Option<LabWide>,
}

/// Why a slice cannot be cut or read. Nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("cannot hash this binary (/proc/self/exe): {0}")]
    Hash(#[source] std::io::Error),
    #[error("cannot read the slice from stdin: {0}")]
    Read(#[source] std::io::Error),
    #[error("no slice on stdin: it closed before a line arrived")]
    Empty,
    #[error("the slice is larger than {MAX_SLICE_BYTES} bytes")]
    TooLarge,
    #[error("the slice is not valid JSON for format {SLICE_FORMAT}: {0}")]
    Json(#[source] serde_json::Error),
    #[error("slice format {got}, this worker reads format {SLICE_FORMAT}: run the same lightcone build on every host")]
    Format { got: u32 },
    #[error("the slice was cut by lightcone {} (sha256 {}), this worker is {} (sha256 {}): copy the controller's binary to this host", .theirs.version, .theirs.sha256, .ours.version, .ours.sha256)]
    Binary {
        theirs: Controller,
        ours: Controller,
    },
    #[error("the slice is inconsistent: {0}")]
    Invalid(String),
}

impl Slice {
    /// The slice of `plan` for host `host` of `hosts`, placed by `placed`.
    pub fn of(
        plan: &Plan,
        hosts: &Hosts,
        placed: &Placement,
        host: usize,
    ) -> Result<Slice, SliceError> {
        let keep = placed.nodes_on(host);
        let (sub, origin) = plan.restrict(&keep);
        let mut cross = Vec::new();
        for c in &placed.crossing {
            let l = &plan.links[c.link];
            let (mine, theirs, remote) = if c.a_host == host {
                (&l.a, &l.b, c.b_host)
            } else if c.b_host == host {
                (&l.b, &l.a, c.a_host)
            } else {
                continue;
            };
            let node = origin
                .iter()
                .position(|&o| o == mine.node)
                .expect("a crossing end on this host is in its slice");
            let prefix = plan.nodes[mine.node]
                .interfaces
                .iter()
                .find(|f| f.link == l.index)
                .map(|f| f.prefix)
                .expect("a link's end is one of its node's interfaces");
            cross.push(CrossEnd {
                link: l.name.clone(),
                vni: c.vni,
                port: hosts.vxlan_port,
                node,
                ifname: mine.ifname.clone(),
                mac: mine.mac,
                ip: mine.ip,
                prefix,
                peer_ip: theirs.ip,
                peer_mac: theirs.mac,
                wire_ifname: mine.wire_ifname.clone(),
                far_wire_ifname: theirs.wire_ifname.clone(),
                // The planned model is a → b; b → a draws from its own stream, as on a
                // link within one host.
                model: if c.a_host == host {
                    l.model.clone()
                } else {
                    l.model.reversed()
                },
                remote_host: hosts.hosts[remote].name.clone(),
                underlay: hosts.hosts[host].underlay.clone(),
                local_addr: None,
                remote_addr: None,
                underlay_one_way_ns: 0,
            });
        }
        let mut sub = sub;
        sub.wire_netns = host_wire_netns(&plan.lab, &hosts.hosts[host].name);
        sub.link_mtu = Some(placed.lab_mtu);
        Ok(Slice {
            format: SLICE_FORMAT,
            controller: Controller::this().map_err(SliceError::Hash)?,
            host: hosts.hosts[host].name.clone(),
            engine: EngineChoice::Auto,
            agents: true,
            lab_mtu: placed.lab_mtu,
            plan: sub,
            origin,
            cross,
            lab: None,
        })
    }

    /// Read one slice (the first line of `input`) and check it against this binary.
    pub fn read_line(input: &mut impl BufRead) -> Result<Slice, SliceError> {
        let mut line = Vec::new();
        let n = input
            .take(MAX_SLICE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(SliceError::Read)?;
        if n == 0 {
            return Err(SliceError::Empty);
        }
        if line.len() > MAX_SLICE_BYTES {
            return Err(SliceError::TooLarge);
        }
        let s: Slice = serde_json::from_slice(&line).map_err(SliceError::Json)?;
        s.check(&Controller::this().map_err(SliceError::Hash)?)?;
        Ok(s)
    }

    /// Everything apply and the engines rely on, checked (see the module doc).
    pub fn check(&self, ours: &Controller) -> Result<(), SliceError> {
        if self.format != SLICE_FORMAT {
            return Err(SliceError::Format { got: self.format });
        }
        if &self.controller != ours {
            return Err(SliceError::Binary {
                theirs: self.controller.clone(),
                ours: ours.clone(),
            });
        }
        let bad = |m: String| Err(SliceError::Invalid(m));
        let p = &self.plan;
        if !topology::valid_lab_name(&p.lab) {
            return bad(format!("lab name {:?}: {}", p.lab, topology::LAB_NAME_RULE));
        }
        if !topology::valid_lab_name(&self.host) {
            return bad(format!(
                "host name {:?}: {}",
                self.host,
                topology::LAB_NAME_RULE
            ));
        }
        if p.nodes.is_empty() || p.nodes.len() > MAX_NODES {
            return bad(format!(
                "{} nodes; a slice holds 1 to {MAX_NODES}",
                p.nodes.len()
            ));
        }
        if !(TIME_SCALE_MIN..=TIME_SCALE_MAX).contains(&p.time_scale) {
            return bad(format!("time_scale {} is out of range", p.time_scale));
        }
        if !(1..=TILES_PER_PROCESS_MAX).contains(&p.tiles_per_process) {
            return bad(format!(
                "tiles_per_process {} is out of range",
                p.tiles_per_process
            ));
        }
        if !(super::UNDERLAY_MTU_MIN - super::VXLAN_OVERHEAD_BYTES
            ..=super::UNDERLAY_MTU_MAX - super::VXLAN_OVERHEAD_BYTES)
            .contains(&self.lab_mtu)
        {
            return bad(format!("lab MTU {} is out of range", self.lab_mtu));
        }
        if p.wire_netns != host_wire_netns(&p.lab, &self.host) {
            return bad(format!(
                "wire namespace {:?} is not the lab's on host {} ({:?})",
                p.wire_netns,
                self.host,
                host_wire_netns(&p.lab, &self.host)
            ));
        }
        if p.link_mtu != Some(self.lab_mtu) {
            return bad(format!(
                "link MTU {:?} is not the lab MTU {}",
                p.link_mtu, self.lab_mtu
            ));
        }
        if self.origin.len() != p.nodes.len() {
            return bad("origin does not list every node".into());
        }
        let ifname_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= IFNAME_MAX
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, n) in p.nodes.iter().enumerate() {
            if n.name.is_empty()
                || n.name.len() > 64
                || !n
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return bad(format!("node {i}'s name {:?} is not a node name", n.name));
            }
            if !names.insert(n.name.as_str()) {
                return bad(format!("node {:?} appears twice", n.name));
            }
            if n.netns != plan::netns_name(&p.lab, &n.name) {
                return bad(format!(
                    "node {}'s namespace {:?} is not the lab's ({:?})",
                    n.name,
                    n.netns,
                    plan::netns_name(&p.lab, &n.name)
                ));
            }
            for f in &n.interfaces {
                if !ifname_ok(&f.name) {
                    return bad(format!(
                        "node {}: interface name {:?} is not usable",
                        n.name, f.name
                    ));
                }
                let Some(l) = p.links.get(f.link) else {
                    return bad(format!(
                        "node {}: interface {} names link {}, the slice has {}",
                        n.name,
                        f.name,
                        f.link,
                        p.links.len()
                    ));
                };
                if f.peer >= p.nodes.len() || !(l.a.node == i || l.b.node == i) {
                    return bad(format!(
                        "node {}: interface {} does not match link {}",
                        n.name, f.name, l.name
                    ));
                }
            }
        }
        for (li, l) in p.links.iter().enumerate() {
            if l.index != li {
                return bad(format!("link {} has index {}, not {li}", l.name, l.index));
            }
            for e in [&l.a, &l.b] {
                let Some(n) = p.nodes.get(e.node) else {
                    return bad(format!("link {} names node {}", l.name, e.node));
                };
                let has = n
                    .interfaces
                    .iter()
                    .any(|f| f.link == li && f.name == e.ifname && f.ip == e.ip);
                if !has || !ifname_ok(&e.wire_ifname) {
                    return bad(format!(
                        "link {}'s end {} on {} is not one of the node's interfaces",
                        l.name, e.ifname, n.name
                    ));
                }
            }
            if l.a.node == l.b.node {
                return bad(format!("link {} joins a node to itself", l.name));
            }
            if let Err(e) = l.model.validate() {
                return bad(format!("link {}: {e}", l.name));
            }
        }
        if let Some(w) = &self.lab {
            if w.plan.lab != p.lab || w.secret().is_none() {
                return bad("the lab-wide part does not match the slice".into());
            }
            if !w.clock_offset_ms.is_finite()
                || !w.clock_offset_bound_ms.is_finite()
                || w.clock_offset_bound_ms < 0.0
                || !w.lab_clock_bound_ms.is_finite()
                || w.lab_clock_bound_ms < 0.0
            {
                return bad("the lab-wide clock offset is not a number".into());
            }
            if w.plan.nodes.len() > MAX_NODES
                || w.plan.nodes.iter().any(|n| {
                    n.interfaces
                        .iter()
                        .any(|f| f.link >= w.plan.links.len() || f.peer >= w.plan.nodes.len())
                })
            {
                return bad("the whole lab's plan is inconsistent".into());
            }
            for (k, &o) in self.origin.iter().enumerate() {
                if w.plan.nodes.get(o).map(|n| &n.name) != Some(&p.nodes[k].name) {
                    return bad(format!(
                        "node {} is not node {o} of the whole lab",
                        p.nodes[k].name
                    ));
                }
            }
        }
        let mut taken: std::collections::BTreeSet<&str> = p
            .links
            .iter()
            .flat_map(|l| [l.a.wire_ifname.as_str(), l.b.wire_ifname.as_str()])
            .collect();
        for c in &self.cross {
            let node_has = |name: &str| {
                p.nodes
                    .get(c.node)
                    .is_some_and(|n| n.interfaces.iter().any(|f| f.name == name))
            };
            if c.node >= p.nodes.len()
                || !ifname_ok(&c.ifname)
                || node_has(&c.ifname)
                || !ifname_ok(&c.wire_ifname)
                || !ifname_ok(&c.far_wire_ifname)
                || !ifname_ok(&c.underlay)
                || !taken.insert(&c.wire_ifname)
                || !taken.insert(&c.far_wire_ifname)
                || c.vni > super::VNI_MAX
                || c.port == 0
                || c.prefix > 32
            {
                return bad(format!("cross-host link {} is not usable", c.link));
            }
            if let Err(e) = c.model.validate() {
                return bad(format!("cross-host link {}: {e}", c.link));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::placement::place;

    fn slice() -> (Slice, Controller) {
        let t = topology::parse_str(
            "name: multihost-s
generate:
  layers:
    - { radius_au: 1.0, clusters: 2, cells: 1, tiles: 3, authorities: 0 }
  cell_fabric: star
  links:
    cell: { delay: 1ms }
    cluster: { delay: 10ms }
    layer: { delay: 10ms }
",
            "t.yaml",
        )
        .unwrap();
        let p = plan::plan(&t);
        let h = crate::hosts::parse_str(
            "hosts:\n  a: {ssh: a, underlay: eth0, capacity: 3}\n  b: {ssh: b, underlay: eth0, capacity: 3}\n",
            "h.yaml",
        )
        .unwrap();
        let pl = place(&p, &h).unwrap();
        let s = Slice::of(&p, &h, &pl, 1).unwrap();
        let c = s.controller.clone();
        (s, c)
    }

    #[test]
    fn a_slice_round_trips_and_checks() {
        let (s, c) = slice();
        assert_eq!(s.plan.nodes.len(), 3);
        assert_eq!(s.origin, [3, 4, 5]);
        assert_eq!(s.plan.links.len(), 2);
        assert_eq!(s.cross.len(), 1, "{:?}", s.cross);
        assert_eq!(s.cross[0].remote_host, "a");
        // Host b holds the link's b end: it sends (and shapes) b → a, drawn from the
        // reversed model's own stream, like a link within one host.
        let p = plan::plan(
            &topology::parse_str(
                "name: multihost-s\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 2, cells: 1, tiles: 3, authorities: 0 }\n  cell_fabric: star\n  links:\n    cell: { delay: 1ms }\n    cluster: { delay: 10ms }\n    layer: { delay: 10ms }\n",
                "t.yaml",
            )
            .unwrap(),
        );
        let whole = p.links.iter().find(|l| l.name == s.cross[0].link).unwrap();
        assert_eq!(s.cross[0].model, whole.model.reversed());
        assert_eq!(s.cross[0].wire_ifname, whole.b.wire_ifname);
        assert_eq!(s.cross[0].far_wire_ifname, whole.a.wire_ifname);
        assert_eq!(
            (s.cross[0].local_addr, s.cross[0].remote_addr),
            (None, None)
        );
        assert_eq!(s.plan.wire_netns, "lc-multihost-s__wire-b");
        assert_eq!(s.plan.link_mtu, Some(s.lab_mtu));
        let text = serde_json::to_string(&s).unwrap();
        let back: Slice = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        back.check(&c).unwrap();
    }

    #[test]
    fn the_lab_wide_epoch_lands_on_this_hosts_clock_and_a_mismatch_is_refused() {
        let (mut s, c) = slice();
        let whole = {
            let t = topology::parse_str(
                "name: multihost-s\ngenerate:\n  layers:\n    - { radius_au: 1.0, clusters: 2, cells: 1, tiles: 3, authorities: 0 }\n  cell_fabric: star\n  links:\n    cell: { delay: 1ms }\n    cluster: { delay: 10ms }\n    layer: { delay: 10ms }\n",
                "t.yaml",
            )
            .unwrap();
            plan::plan(&t)
        };
        let w = LabWide {
            plan: whole,
            secret_hex: "ab".repeat(32),
            epoch_realtime_ns: 1_000_000_000_000,
            clock_offset_ms: 2.0,
            clock_offset_bound_ms: 0.5,
            lab_clock_bound_ms: 0.5,
        };
        // The controller's epoch is this host's 1_000.002 s; read 3 s later on the host's
        // realtime clock, when its monotonic clock reads 50 s: the epoch was at 47 s.
        assert_eq!(
            w.epoch_monotonic_ns(1_003_002_000_000, 50_000_000_000),
            47_000_000_000
        );
        assert_eq!(w.secret(), Some([0xab; 32]));
        assert!(
            !format!("{w:?}").contains("abab"),
            "the secret stays out of logs"
        );
        s.lab = Some(w.clone());
        s.check(&c).unwrap();
        for (mutate, want) in [
            (
                Box::new(|w: &mut LabWide| w.secret_hex = "00".into()) as Box<dyn Fn(&mut LabWide)>,
                "lab-wide part",
            ),
            (
                Box::new(|w: &mut LabWide| w.plan.nodes.swap(3, 4)),
                "is not node",
            ),
            (
                Box::new(|w: &mut LabWide| w.plan.nodes[0].interfaces[0].link = 999),
                "inconsistent",
            ),
            (
                Box::new(|w: &mut LabWide| w.clock_offset_ms = f64::NAN),
                "clock offset",
            ),
        ] {
            let mut bad = s.clone();
            mutate(bad.lab.as_mut().unwrap());
            let e = bad.check(&c).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn each_inconsistency_is_refused() {
        let (s, c) = slice();
        type Mutation = Box<dyn Fn(&mut Slice)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("format", Box::new(|s| s.format = 2)),
            (
                "cut by lightcone",
                Box::new(|s| s.controller.sha256 = "00".into()),
            ),
            ("lab name", Box::new(|s| s.plan.lab = "../x".into())),
            (
                "namespace",
                Box::new(|s| s.plan.nodes[0].netns = "lc-other_x".into()),
            ),
            (
                "wire namespace",
                Box::new(|s| s.plan.wire_netns = "x".into()),
            ),
            (
                "interface name",
                Box::new(|s| s.plan.nodes[0].interfaces[0].name = "a/b".into()),
            ),
            (
                "names link",
                Box::new(|s| s.plan.nodes[0].interfaces[0].link = 99),
            ),
            ("inconsistent", Box::new(|s| s.plan.links[0].b.node = 42)),
            (
                "loss",
                Box::new(|s| {
                    s.plan.links[0].model.loss = lightcone_link::model::LossModel::Random {
                        probability: 2.0,
                        correlation: 0.0,
                    }
                }),
            ),
            ("time_scale", Box::new(|s| s.plan.time_scale = 0.0)),
            ("lab MTU", Box::new(|s| s.lab_mtu = 10)),
            ("link MTU", Box::new(|s| s.plan.link_mtu = Some(1500))),
            ("nodes", Box::new(|s| s.plan.nodes.clear())),
            (
                "cross-host link",
                Box::new(|s| s.cross[0].far_wire_ifname = s.plan.links[0].a.wire_ifname.clone()),
            ),
            (
                "cross-host link",
                Box::new(|s| s.cross[0].ifname = s.plan.nodes[0].interfaces[0].name.clone()),
            ),
            ("cross-host link", Box::new(|s| s.cross[0].port = 0)),
            (
                "cross-host link",
                Box::new(|s| s.cross[0].underlay = "a b".into()),
            ),
            (
                "cross-host link",
                Box::new(|s| {
                    s.cross[0].model.loss = lightcone_link::model::LossModel::Random {
                        probability: 2.0,
                        correlation: 0.0,
                    }
                }),
            ),
        ];
        for (want, mutate) in cases {
            let mut bad = s.clone();
            mutate(&mut bad);
            let e = bad.check(&c).expect_err(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn reading_refuses_garbage_and_nothing() {
        let e = Slice::read_line(&mut &b""[..]).unwrap_err();
        assert!(matches!(e, SliceError::Empty));
        let e = Slice::read_line(&mut &b"{\"format\": 1}\n"[..]).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }
}
