//! The plan: a pure function from a [`Topology`] to every kernel object and process a lab
//! needs — namespace names, interface names (≤ 15 bytes), link subnets, agent
//! configurations. It holds no secret: node keys are drawn at `up` (see [`crate::keys`]). `apply` only carries it out, so layout decisions are tested here, with
//! snapshots, without root.
//!
//! Layout. Every node gets a namespace `lc-<lab>_<node>` (a lab name has no `_`, so two
//! labs can never claim the same namespace). A link A–B gets a /31 from the pool: A takes
//! the even address, B the odd one. Inside a node, its links are `eth1`, `eth2`, … in the
//! order the topology lists them. With the netem engine a link is one veth pair between the
//! two node namespaces. With the wire engine each node end is paired with an end in the
//! lab's wire namespace (`lc-<lab>__wire`, ends `w<link>a`/`w<link>b`) and the engine
//! forwards frames between those two ends. Every node end has a MAC derived from its
//! address ([`mac_of`]) and knows its peer's as a permanent neighbour entry, so no ARP
//! ever crosses an emulated link (a light-time link would delay or lose it). Only
//! connected routes exist in the kernel:
//! traffic beyond a neighbour is forwarded by the agents' overlay routing, hop by hop, as
//! the DCOS does it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use lightcone_core::config::{
    AgentConfig, HierAddr, Neighbor, PeerInfo, Role, TimeConfig, AGENT_UDP_PORT,
};
use serde::{Deserialize, Serialize};

use crate::topology::{LinkLevel, Topology, NETNS_PREFIX};
use lightcone_link::model::LinkModel;

/// Longest interface name the kernel holds (IFNAMSIZ − 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub lab: String,
    pub time_scale: f64,
    pub seed: u64,
    /// The namespace that holds the wire engine's link ends.
    pub wire_netns: String,
    pub nodes: Vec<NodePlan>,
    pub links: Vec<LinkPlan>,
    /// Tiles per agent process (see [`Topology::tiles_per_process`]); 1: one per node.
    pub tiles_per_process: usize,
    /// The thermal subsystem every agent gets (issue 15); `None`: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thermal: Option<lightcone_core::heat::config::ThermalConfig>,
    /// The object store every agent gets (issue 16); `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<lightcone_core::store::config::StoreConfig>,
    /// The topology's `trust:` section (issue 17's watch options), for every agent.
    pub trust: Option<lightcone_core::config::TrustOptions>,
    /// MTU of every lab link (both veth ends and the wire engine's ends). `None`: the
    /// kernel's default (1500). A multi-host slice sets it to the smallest underlay MTU −
    /// 50 ([`crate::hosts::VXLAN_OVERHEAD_BYTES`]), so a link has the same MTU whether it
    /// stays on one host or crosses two over VXLAN (issue 19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    pub netns: String,
    pub role: Role,
    pub addr: HierAddr,
    pub position_au: Option<[f64; 3]>,
    pub interfaces: Vec<IfacePlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IfacePlan {
    pub name: String,
    pub link: usize,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// This interface's MAC ([`mac_of`] its address).
    pub mac: Mac,
    pub peer: usize,
    pub peer_ip: Ipv4Addr,
    /// The peer end's MAC: installed as a permanent neighbour entry for `peer_ip`.
    pub peer_mac: Mac,
}

/// An Ethernet address. Serialized as `02:6c:c6:12:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    /// Six hex bytes separated by `:`, as [`Mac`]'s `Display` writes them.
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut b = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "bad MAC {s:?}: want six hex bytes like 02:6c:c6:12:00:01"
            ));
        }
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("bad MAC {s:?}: byte {p:?} is not two hex digits"));
            }
            b[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("bad MAC {s:?}: byte {p:?} is not hex"))?;
        }
        Ok(Mac(b))
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The MAC of the node end that holds `ip`: `02:6c` (locally administered, unicast; `l`)
/// followed by the four bytes of the address. Addresses are unique within a lab, so MACs
/// are too, and anyone reading a capture can tell which end sent a frame.
pub fn mac_of(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    Mac([0x02, 0x6c, o[0], o[1], o[2], o[3]])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub node: usize,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// This end's interface in the wire namespace (wire engine only).
    pub wire_ifname: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkPlan {
    pub index: usize,
    /// `a--b`, the name used in metrics and on the command line.
    pub name: String,
    pub level: LinkLevel,
    pub delay_auto: bool,
    pub a: Endpoint,
    pub b: Endpoint,
    pub model: LinkModel,
}

pub use crate::topology::netns_name;

/// Namespace holding the wire engine's ends.
pub fn wire_netns_name(lab: &str) -> String {
    format!("{NETNS_PREFIX}{lab}__wire")
}

/// Prefix shared by every namespace of a lab.
pub fn lab_netns_prefix(lab: &str) -> String {
    format!("{NETNS_PREFIX}{lab}_")
}

/// Build the plan. Pure: same topology, same plan.
pub fn plan(topo: &Topology) -> Plan {
    let base = u32::from(topo.pool.base);
    let mut nodes: Vec<NodePlan> = topo
        .nodes
        .iter()
        .map(|n| NodePlan {
            name: n.name.clone(),
            netns: netns_name(&topo.name, &n.name),
            role: n.role,
            addr: n.addr,
            position_au: n.position_au,
            interfaces: Vec::new(),
        })
        .collect();
    let mut links = Vec::with_capacity(topo.links.len());
    for (i, l) in topo.links.iter().enumerate() {
        let ip_a = Ipv4Addr::from(base + 2 * i as u32);
        let ip_b = Ipv4Addr::from(base + 2 * i as u32 + 1);
        let if_a = format!("eth{}", nodes[l.a].interfaces.len() + 1);
        let if_b = format!("eth{}", nodes[l.b].interfaces.len() + 1);
        nodes[l.a].interfaces.push(IfacePlan {
            name: if_a.clone(),
            link: i,
            ip: ip_a,
            prefix: 31,
            mac: mac_of(ip_a),
            peer: l.b,
            peer_ip: ip_b,
            peer_mac: mac_of(ip_b),
        });
        nodes[l.b].interfaces.push(IfacePlan {
            name: if_b.clone(),
            link: i,
            ip: ip_b,
            prefix: 31,
            mac: mac_of(ip_b),
            peer: l.a,
            peer_ip: ip_a,
            peer_mac: mac_of(ip_a),
        });
        links.push(LinkPlan {
            index: i,
            name: format!("{}--{}", topo.nodes[l.a].name, topo.nodes[l.b].name),
            level: l.level,
            delay_auto: l.delay_auto,
            a: Endpoint {
                node: l.a,
                ifname: if_a,
                ip: ip_a,
                mac: mac_of(ip_a),
                wire_ifname: format!("w{i}a"),
            },
            b: Endpoint {
                node: l.b,
                ifname: if_b,
                ip: ip_b,
                mac: mac_of(ip_b),
                wire_ifname: format!("w{i}b"),
            },
            model: l.model.clone(),
        });
    }
    Plan {
        lab: topo.name.clone(),
        time_scale: topo.time_scale,
        seed: topo.seed,
        wire_netns: wire_netns_name(&topo.name),
        nodes,
        links,
        tiles_per_process: topo.tiles_per_process.max(1),
        thermal: topo.thermal.clone(),
        store: topo.store.clone(),
        trust: topo.trust,
        link_mtu: None,
    }
}

impl Plan {
    /// The plan of the nodes `keep` (indices, in plan order) and the links between them,
    /// renumbered from 0, with the index in `self` of each kept node. Names, namespaces,
    /// interface names, addresses and MACs stay as planned, so a node is the same on
    /// whichever host it lands; interfaces of links leaving the set are left out.
    pub fn restrict(&self, keep: &[usize]) -> (Plan, Vec<usize>) {
        let mut new_of = vec![usize::MAX; self.nodes.len()];
        for (k, &i) in keep.iter().enumerate() {
            new_of[i] = k;
        }
        let mut link_of = vec![usize::MAX; self.links.len()];
        let mut links = Vec::new();
        for l in &self.links {
            if new_of[l.a.node] == usize::MAX || new_of[l.b.node] == usize::MAX {
                continue;
            }
            link_of[l.index] = links.len();
            let mut l2 = l.clone();
            l2.index = links.len();
            l2.a.node = new_of[l.a.node];
            l2.b.node = new_of[l.b.node];
            links.push(l2);
        }
        let nodes = keep
            .iter()
            .map(|&i| {
                let mut n = self.nodes[i].clone();
                n.interfaces.retain(|f| link_of[f.link] != usize::MAX);
                for f in &mut n.interfaces {
                    f.link = link_of[f.link];
                    f.peer = new_of[f.peer];
                }
                n
            })
            .collect();
        (
            Plan {
                nodes,
                links,
                ..self.clone()
            },
            keep.to_vec(),
        )
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The link between two named nodes, in either order.
    pub fn link_between(&self, a: &str, b: &str) -> Option<&LinkPlan> {
        let (a, b) = (self.node_index(a)?, self.node_index(b)?);
        self.links
            .iter()
            .find(|l| (l.a.node == a && l.b.node == b) || (l.a.node == b && l.b.node == a))
    }

    /// The link between `a` and `b` with its ends seen from `a`: (link, `a`'s end, `b`'s).
    pub fn link_ends(&self, a: &str, b: &str) -> Option<(&LinkPlan, &Endpoint, &Endpoint)> {
        let l = self.link_between(a, b)?;
        Some(if self.nodes[l.a.node].name == a {
            (l, &l.a, &l.b)
        } else {
            (l, &l.b, &l.a)
        })
    }

    /// The configuration of node `id`'s agent. `state_dir` is the lab's state directory;
    /// `public_keys` (hex, by node id) are the lab's node keys drawn at `up`. The
    /// configuration holds no secret: it names the agent's 0600 key file
    /// (`<state_dir>/keys/<id>.key`, see [`crate::keys`]).
    pub fn agent_config(&self, id: usize, state_dir: &Path, public_keys: &[String]) -> AgentConfig {
        let peers = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| PeerInfo {
                name: n.name.clone(),
                id: i as u32,
                addr: n.addr,
                role: n.role,
                public_key_hex: public_keys.get(i).cloned().unwrap_or_default(),
                position_au: n.position_au.unwrap_or([0.0; 3]),
            })
            .collect();
        AgentConfig {
            peers,
            ..self.tile_config(id, state_dir)
        }
    }

    /// [`Plan::agent_config`] without the peer list: a tile of a multi-tile agent process
    /// reads the lab's directory once for all its tiles (`crate::tilegroups`), and building
    /// the list for every node is quadratic in the lab's size.
    pub fn tile_config(&self, id: usize, state_dir: &Path) -> AgentConfig {
        let mut neighbors: Vec<Neighbor> = self.nodes[id]
            .interfaces
            .iter()
            .map(|i| Neighbor {
                id: i.peer as u32,
                ifname: i.name.clone(),
                local_ip: i.ip,
                peer_ip: i.peer_ip,
                delay_emulated_ns: self.links[i.link].model.delay_ns,
            })
            .collect();
        neighbors.sort_by_key(|n| n.id);
        AgentConfig {
            lab: self.lab.clone(),
            id: id as u32,
            time_scale: self.time_scale,
            seed: self.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            secret_key_hex: String::new(),
            secret_key_file: Some(agent_key_file(state_dir, id)),
            udp_port: AGENT_UDP_PORT,
            control_socket: agent_socket(state_dir, id),
            peers: Vec::new(),
            neighbors,
            epoch_monotonic_ns: None,
            epoch_uncertainty_ns: 0,
            time: self.time_config(id),
            boot: lightcone_core::wire::FIRST_EPOCH,
            thermal: self.thermal.clone(),
            protocol_version: None,
            store: self.store.clone(),
            operator_public_key_hex: None,
            revoked_ids: Vec::new(),
            authorities_key_hex: None,
            directory_cert_hex: None,
            approved_builds: Vec::new(),
            certificates: Vec::new(),
            order_serial_floor: 0,
            trust: self.trust,
        }
    }

    /// Upstream time servers of node `id` (issue 5), best first, or `None` when the node
    /// can have no clock (no authority in the lab to follow). Authorities are stratum 0 and
    /// follow nobody; a gateway follows the authorities of its layer (all of the lab's, by
    /// distance, when its layer has none); a tile follows its cell's gateway, or the
    /// authorities like a gateway when its cell has none. At most 8 servers.
    pub fn time_servers(&self, id: usize) -> Option<Vec<u32>> {
        let me = &self.nodes[id];
        let authorities = || -> Vec<u32> {
            let pos = |i: usize| self.nodes[i].position_au.unwrap_or([0.0; 3]);
            let dist = |i: usize| {
                let (a, b) = (pos(id), pos(i));
                (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f64>()
            };
            let all: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].role == Role::Authority)
                .collect();
            let mut same: Vec<usize> = all
                .iter()
                .copied()
                .filter(|i| self.nodes[*i].addr.layer == me.addr.layer)
                .collect();
            if same.is_empty() {
                same = all;
                same.sort_by(|a, b| dist(*a).total_cmp(&dist(*b)).then(a.cmp(b)));
            }
            same.into_iter().take(8).map(|i| i as u32).collect()
        };
        if me.role == Role::Authority {
            return Some(Vec::new());
        }
        let servers = match me.role {
            Role::Tile => match (0..self.nodes.len()).find(|i| {
                self.nodes[*i].role == Role::Gateway && self.nodes[*i].addr.same_cell(&me.addr)
            }) {
                Some(g) => vec![g as u32],
                None => authorities(),
            },
            _ => authorities(),
        };
        // No authority in the lab: nothing to follow, hence no clock at all.
        (!servers.is_empty() && self.nodes.iter().any(|n| n.role == Role::Authority))
            .then_some(servers)
    }

    /// The agent's clock configuration: servers from [`Plan::time_servers`]; rates chosen in
    /// *real* time so agents stay cheap at any time scale: one exchange per server every 2 s
    /// real and one pulsar fix every 20 s real (never below the models' 1 ms / 1 s
    /// minimum). The asymmetry bound (σ's (bound/2)² term) is 500 µs of real time: in a lab
    /// the path asymmetry two-way transfer cannot see is the agents' scheduling latency on
    /// a shared host, which scales with the time scale like every real duration.
    pub fn time_config(&self, id: usize) -> Option<TimeConfig> {
        let s = self.time_scale;
        Some(TimeConfig {
            servers: self.time_servers(id)?,
            poll_interval_ns: (2e9 * s).clamp(1e6, 86_400e9) as u64,
            pulsar_integration_s: (20.0 * s).clamp(1.0, 86_400.0),
            asymmetry_bound_s: (500e-6 * s).clamp(1e-9, 1e3),
            sky_seed: self.seed,
        })
    }

    /// A compact, human-readable rendering (one line per node and per link), used for
    /// snapshots and `lightcone plan`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "lab {} time_scale {} seed {} wire_netns {}",
            self.lab, self.time_scale, self.seed, self.wire_netns
        );
        for n in &self.nodes {
            let ifs: Vec<String> = n
                .interfaces
                .iter()
                .map(|i| format!("{}={}/{}@{}", i.name, i.ip, i.prefix, i.mac))
                .collect();
            let _ = writeln!(
                s,
                "node {} netns={} role={:?} addr={} {}",
                n.name,
                n.netns,
                n.role,
                n.addr,
                ifs.join(" ")
            );
        }
        for l in &self.links {
            let m = &l.model;
            let _ = writeln!(
                s,
                "link {} {:?} {}:{}({}) <-> {}:{}({}) delay={}{} jitter={} loss={:?} rate={}",
                l.name,
                l.level,
                self.nodes[l.a.node].name,
                l.a.ifname,
                l.a.wire_ifname,
                self.nodes[l.b.node].name,
                l.b.ifname,
                l.b.wire_ifname,
                crate::parse::units::fmt_ns(m.delay_ns),
                if l.delay_auto { "(auto)" } else { "" },
                crate::parse::units::fmt_ns(m.jitter_ns),
                m.loss,
                m.rate_bps
                    .map(crate::parse::units::fmt_bps)
                    .unwrap_or_else(|| "unlimited".into()),
            );
        }
        s
    }
}

/// Secret key file of node `id` (hex, 0600), written at `up` by [`crate::keys`].
pub fn agent_key_file(state_dir: &Path, id: usize) -> PathBuf {
    state_dir.join("keys").join(format!("{id}.key"))
}

/// Control socket of agent `id` (by id, not name: a unix socket path holds 107 bytes).
pub fn agent_socket(state_dir: &Path, id: usize) -> PathBuf {
    state_dir.join("agents").join(format!("{id}.sock"))
}
