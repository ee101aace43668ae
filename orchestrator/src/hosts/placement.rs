//! Placement: which host holds each node of a plan. Pure and deterministic (same plan,
//! same hosts file, same placement), so it is snapshot-tested like the plan.
//!
//! The rules (issue 19):
//! 1. **Units never split.** A unit is a cell (its tiles and gateway, by address) joined
//!    with everything it reaches over links that may not cross hosts: every link but
//!    cluster, layer and system links (so each authority goes with its gateway's cell, and
//!    an explicit topology's nodes stay together). Union–find over those links.
//! 2. **Pins first.** `pin:` puts a unit on a host; two pins of one unit naming two hosts,
//!    or pins exceeding a host's capacity, are refused.
//! 3. **Clusters packed together.** The other units in plan order (which is cluster
//!    order): a cluster's first unit goes to the host the previous unit went to if the
//!    whole cluster fits there, else to the first host (in file order) where it fits;
//!    later units go to the host holding most of their cluster. Where that has no room
//!    (or no host holds a whole cluster), the previous unit's host if the unit fits, else
//!    the first host with room: a cluster splits only when no host can hold it. No room
//!    anywhere: refused.
//! 4. **Crossing links must be long enough.** A link between hosts is carried by the
//!    underlay, which adds its own latency; a link whose real one-way delay (emulated
//!    delay ÷ time scale) is below `underlay_latency + latency_margin` is refused with
//!    its name, level and endpoints, never silently made slower.
//!
//! Each crossing link gets VNI `vni_base + link index` (one VNI per link, unique in the
//! lab) and every lab link the MTU `min(underlay MTU) − 50`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Hosts, Selector, VNI_MAX};
use crate::parse::units::fmt_ns;
use crate::plan::Plan;
use crate::topology::LinkLevel;
use lightcone_core::config::Role;

/// Where every node of a plan goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// Host index (in [`Hosts::hosts`]) of each plan node.
    pub host_of: Vec<usize>,
    /// The links between hosts, in plan order.
    pub crossing: Vec<Crossing>,
    /// MTU of every lab link (smallest underlay MTU − 50).
    pub lab_mtu: u32,
}

/// A link carried between two hosts by VXLAN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossing {
    pub link: usize,
    pub vni: u32,
    pub a_host: usize,
    pub b_host: usize,
}

/// Why a plan cannot be placed on the hosts. Nothing was created; each message names
/// what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    #[error("{unit} has {nodes} nodes, more than any host holds (largest capacity {largest}, host {host}); cells never split across hosts: raise a host's capacity or make cells smaller")]
    UnitTooLarge {
        unit: String,
        nodes: usize,
        largest: usize,
        host: String,
    },
    #[error("no host has room for {unit}, {nodes} nodes that stay together: the lab has {total} nodes, the hosts hold {capacity} in all ({free}); add a host or raise capacities")]
    CapacityExceeded {
        unit: String,
        nodes: usize,
        total: usize,
        capacity: usize,
        free: String,
    },
    #[error("pin at line {line}:{col} names {selector}, which is not in lab {lab}")]
    PinUnknown {
        selector: String,
        lab: String,
        line: usize,
        col: usize,
    },
    #[error("pins cannot both hold: {first} (line {first_line}) puts {unit} on host {first_host}, {second} (line {second_line}) puts it on host {second_host}; a cell and the nodes linked to it by cell, authority or explicit links share one host")]
    PinConflict {
        unit: String,
        first: String,
        first_line: usize,
        first_host: String,
        second: String,
        second_line: usize,
        second_host: String,
    },
    #[error("pins put {pinned} nodes on host {host}, whose capacity is {capacity}")]
    PinOverCapacity {
        host: String,
        pinned: usize,
        capacity: usize,
    },
    #[error("link {name} (link {index}, {level} level, {a} on host {a_host} to {b} on host {b_host}) would cross hosts with a real one-way delay of {delay} (emulated {emulated} at time_scale {time_scale}), below the underlay's {underlay} plus the margin {margin}: the underlay would add more delay than the link has. Pin both ends' cells to one host, lengthen the link, or lower the time scale")]
    TooShortToCross {
        name: String,
        index: usize,
        level: String,
        a: String,
        a_host: String,
        b: String,
        b_host: String,
        delay: String,
        emulated: String,
        time_scale: f64,
        underlay: String,
        margin: String,
    },
    #[error(
        "link {index} would get VNI {vni}, past VXLAN's 24 bits ({VNI_MAX}); lower `vni_base`"
    )]
    VniRange { index: usize, vni: u64 },
}

/// Disjoint sets over node indices; the smallest index is a set's representative, so the
/// result does not depend on the order of unions.
struct Sets(Vec<usize>);

impl Sets {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        let (lo, hi) = (a.min(b), a.max(b));
        self.0[hi] = lo;
    }
}

/// Whether a link of this level may be carried between hosts.
pub fn may_cross(level: LinkLevel) -> bool {
    matches!(
        level,
        LinkLevel::Cluster | LinkLevel::Layer | LinkLevel::System
    )
}

fn level_name(l: LinkLevel) -> String {
    format!("{l:?}").to_lowercase()
}

/// Place `plan` on `hosts` (see the module doc).
/// The error is boxed: it is rare and large (it names everything needed to fix it).
pub fn place(plan: &Plan, hosts: &Hosts) -> Result<Placement, Box<PlacementError>> {
    let n = plan.nodes.len();
    let mut sets = Sets((0..n).collect());
    // 1. Units: cells by address (tiles and gateways), then links that may not cross.
    let mut cell_first: BTreeMap<(u16, u16, u16), usize> = BTreeMap::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        if node.role == Role::Authority {
            continue;
        }
        let key = (node.addr.layer, node.addr.cluster, node.addr.cell);
        match cell_first.get(&key) {
            Some(&f) => sets.union(f, i),
            None => {
                cell_first.insert(key, i);
            }
        }
    }
    for l in &plan.links {
        if !may_cross(l.level) {
            sets.union(l.a.node, l.b.node);
        }
    }
    // Units in plan order of their first node (the representative).
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = sets.find(i);
        members.entry(r).or_default().push(i);
    }
    let unit_name = |rep: usize, m: &[usize]| -> String {
        let node = &plan.nodes[rep];
        let a = node.addr;
        if node.role != Role::Authority && m.len() > 1 {
            format!(
                "cell {}.{}.{} (from node {}, with {} nodes)",
                a.layer,
                a.cluster,
                a.cell,
                node.name,
                m.len()
            )
        } else {
            format!("the unit of node {}", node.name)
        }
    };
    let largest = hosts
        .hosts
        .iter()
        .enumerate()
        .max_by_key(|(i, h)| (h.capacity.get(), std::cmp::Reverse(*i)))
        .map(|(i, h)| (i, h.capacity.get()))
        .unwrap_or((0, 0));
    for (&rep, m) in &members {
        if m.len() > largest.1 {
            return Err(Box::new(PlacementError::UnitTooLarge {
                unit: unit_name(rep, m),
                nodes: m.len(),
                largest: largest.1,
                host: hosts.hosts[largest.0].name.clone(),
            }));
        }
    }
    // 2. Pins.
    let mut pinned: BTreeMap<usize, (usize, usize)> = BTreeMap::new(); // rep -> (host, pin)
    for (pi, pin) in hosts.pins.iter().enumerate() {
        let nodes: Vec<usize> = match &pin.selector {
            Selector::Node(name) => plan.node_index(name).into_iter().collect(),
            Selector::Cell([l, c, k]) => (0..n)
                .filter(|&i| {
                    let a = plan.nodes[i].addr;
                    plan.nodes[i].role != Role::Authority
                        && (a.layer, a.cluster, a.cell) == (*l, *c, *k)
                })
                .collect(),
        };
        let Some(&first) = nodes.first() else {
            return Err(Box::new(PlacementError::PinUnknown {
                selector: pin.selector.to_string(),
                lab: plan.lab.clone(),
                line: pin.pos.line,
                col: pin.pos.col,
            }));
        };
        let rep = sets.find(first);
        if let Some(&(host, other)) = pinned.get(&rep) {
            if host != pin.host {
                let o = &hosts.pins[other];
                return Err(Box::new(PlacementError::PinConflict {
                    unit: unit_name(rep, &members[&rep]),
                    first: o.selector.to_string(),
                    first_line: o.pos.line,
                    first_host: hosts.hosts[host].name.clone(),
                    second: pin.selector.to_string(),
                    second_line: pin.pos.line,
                    second_host: hosts.hosts[pin.host].name.clone(),
                }));
            }
            continue;
        }
        pinned.insert(rep, (pin.host, pi));
    }
    let mut used = vec![0usize; hosts.hosts.len()];
    let mut host_of = vec![usize::MAX; n];
    for (&rep, &(host, _)) in &pinned {
        used[host] += members[&rep].len();
        for &i in &members[&rep] {
            host_of[i] = host;
        }
    }
    for (h, spec) in hosts.hosts.iter().enumerate() {
        if used[h] > spec.capacity.get() {
            return Err(Box::new(PlacementError::PinOverCapacity {
                host: spec.name.clone(),
                pinned: used[h],
                capacity: spec.capacity.get(),
            }));
        }
    }
    // 3. The rest, cluster by cluster.
    let fits = |used: &[usize], h: usize, k: usize| used[h] + k <= hosts.hosts[h].capacity.get();
    let mut cluster_on: BTreeMap<(u16, u16), BTreeMap<usize, usize>> = BTreeMap::new();
    for (&rep, m) in &members {
        if let Some(&(h, _)) = pinned.get(&rep) {
            let a = plan.nodes[rep].addr;
            *cluster_on
                .entry((a.layer, a.cluster))
                .or_default()
                .entry(h)
                .or_default() += m.len();
        }
    }
    // Nodes of each cluster still to place (pinned units are placed already).
    let mut cluster_left: BTreeMap<(u16, u16), usize> = BTreeMap::new();
    for (&rep, m) in &members {
        if !pinned.contains_key(&rep) {
            let a = plan.nodes[rep].addr;
            *cluster_left.entry((a.layer, a.cluster)).or_default() += m.len();
        }
    }
    let mut cursor = 0usize;
    for (&rep, m) in &members {
        if pinned.contains_key(&rep) {
            continue;
        }
        let a = plan.nodes[rep].addr;
        let cluster = (a.layer, a.cluster);
        let k = m.len();
        // The host holding most of this cluster (lowest index on a tie).
        let by_cluster = cluster_on.get(&cluster).and_then(|hs| {
            hs.iter()
                .max_by_key(|(h, c)| (**c, std::cmp::Reverse(**h)))
                .map(|(h, _)| *h)
        });
        // A cluster's first unit goes where the whole cluster fits, if any host has room
        // for all of it (the cursor first); later units follow the cluster.
        let whole = cluster_left.get(&cluster).copied().unwrap_or(k);
        let for_whole = if by_cluster.is_none() {
            Some(cursor)
                .filter(|&h| fits(&used, h, whole))
                .or_else(|| (0..hosts.hosts.len()).find(|&h| fits(&used, h, whole)))
        } else {
            None
        };
        let host = by_cluster
            .filter(|&h| fits(&used, h, k))
            .or(for_whole)
            .or_else(|| Some(cursor).filter(|&h| fits(&used, h, k)))
            .or_else(|| (0..hosts.hosts.len()).find(|&h| fits(&used, h, k)));
        let Some(host) = host else {
            let total = n;
            let capacity: usize = hosts.hosts.iter().map(|h| h.capacity.get()).sum();
            let free = hosts
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| format!("{} {} free", h.name, h.capacity.get() - used[i]))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Box::new(PlacementError::CapacityExceeded {
                unit: unit_name(rep, m),
                nodes: k,
                total,
                capacity,
                free,
            }));
        };
        used[host] += k;
        cursor = host;
        if let Some(left) = cluster_left.get_mut(&cluster) {
            *left -= k;
        }
        *cluster_on
            .entry(cluster)
            .or_default()
            .entry(host)
            .or_default() += k;
        for &i in m {
            host_of[i] = host;
        }
    }
    // 4. Crossing links.
    let min_ns = hosts.min_crossing_delay_ns();
    let mut crossing = Vec::new();
    for l in &plan.links {
        let (ha, hb) = (host_of[l.a.node], host_of[l.b.node]);
        if ha == hb {
            continue;
        }
        assert!(
            may_cross(l.level),
            "units keep non-crossing links on one host"
        );
        let real_ns = l.model.delay_ns as f64 / plan.time_scale;
        if real_ns < min_ns as f64 {
            return Err(Box::new(PlacementError::TooShortToCross {
                name: l.name.clone(),
                index: l.index,
                level: level_name(l.level),
                a: plan.nodes[l.a.node].name.clone(),
                a_host: hosts.hosts[ha].name.clone(),
                b: plan.nodes[l.b.node].name.clone(),
                b_host: hosts.hosts[hb].name.clone(),
                delay: fmt_ns(real_ns.round() as u64),
                emulated: fmt_ns(l.model.delay_ns),
                time_scale: plan.time_scale,
                underlay: fmt_ns(hosts.underlay_latency_ns),
                margin: fmt_ns(hosts.latency_margin_ns),
            }));
        }
        let vni = hosts.vni_base as u64 + l.index as u64;
        if vni > VNI_MAX as u64 {
            return Err(Box::new(PlacementError::VniRange {
                index: l.index,
                vni,
            }));
        }
        crossing.push(Crossing {
            link: l.index,
            vni: vni as u32,
            a_host: ha,
            b_host: hb,
        });
    }
    Ok(Placement {
        host_of,
        crossing,
        lab_mtu: hosts.lab_mtu(),
    })
}

impl Placement {
    /// Indices of the nodes on host `h`, in plan order.
    pub fn nodes_on(&self, h: usize) -> Vec<usize> {
        (0..self.host_of.len())
            .filter(|&i| self.host_of[i] == h)
            .collect()
    }

    /// What `lightcone plan FILE --hosts H` prints: per host its nodes, then the links
    /// crossing hosts with their VNIs.
    pub fn render(&self, plan: &Plan, hosts: &Hosts) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "placement of lab {} on {} hosts: lab link MTU {} (smallest underlay MTU - 50), VXLAN port {}, crossing links need >= {} real one-way delay",
            plan.lab,
            hosts.hosts.len(),
            self.lab_mtu,
            hosts.vxlan_port,
            fmt_ns(hosts.min_crossing_delay_ns())
        );
        for (h, spec) in hosts.hosts.iter().enumerate() {
            let on = self.nodes_on(h);
            let names: Vec<&str> = on.iter().map(|&i| plan.nodes[i].name.as_str()).collect();
            let _ = writeln!(
                s,
                "host {} ({}, underlay {}): {} of {} nodes: {}",
                spec.name,
                spec.ssh,
                spec.underlay,
                on.len(),
                spec.capacity,
                if names.is_empty() {
                    "-".to_string()
                } else {
                    names.join(" ")
                }
            );
        }
        if self.crossing.is_empty() {
            let _ = writeln!(s, "no link crosses hosts");
        }
        for c in &self.crossing {
            let l = &plan.links[c.link];
            let _ = writeln!(
                s,
                "cross {} {} {}@{} <-> {}@{} vni {} delay {} (real {})",
                l.name,
                level_name(l.level),
                plan.nodes[l.a.node].name,
                hosts.hosts[c.a_host].name,
                plan.nodes[l.b.node].name,
                hosts.hosts[c.b_host].name,
                c.vni,
                fmt_ns(l.model.delay_ns),
                fmt_ns((l.model.delay_ns as f64 / plan.time_scale).round() as u64),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::parse_str as hosts_of;
    use crate::plan::plan;
    use crate::topology::parse_str as topo_of;

    /// Two layers, two clusters each, two cells of 3 tiles per cluster, one authority per
    /// layer: 2 × (2 × 2 × 3 + 1) = 26 nodes; cluster links 10 ms, layer links auto.
    const TOPO: &str = "name: mh
seed: 1
generate:
  layers:
    - { radius_au: 1.0, clusters: 2, cells: 2, tiles: 3, authorities: 1 }
    - { radius_au: 2.0, clusters: 2, cells: 2, tiles: 3, authorities: 1 }
  cell_fabric: star
  links:
    cell: { delay: 1ms }
    cluster: { delay: 10ms }
    layer: { delay: auto }
    system: { delay: auto }
    authority: { delay: 1ms }
";

    fn hosts(caps: &[usize], extra: &str) -> Hosts {
        let mut s = String::from("hosts:\n");
        for (i, c) in caps.iter().enumerate() {
            s += &format!("  h{i}: {{ ssh: root@h{i}, underlay: eth0, capacity: {c} }}\n");
        }
        s += extra;
        hosts_of(&s, "hosts.yaml").unwrap()
    }

    fn p() -> Plan {
        plan(&topo_of(TOPO, "t.yaml").unwrap())
    }

    #[test]
    fn cells_stay_whole_and_authorities_go_with_their_gateway() {
        let p = p();
        let h = hosts(&[10, 10, 10], "");
        let pl = place(&p, &h).unwrap();
        for l in &p.links {
            if !may_cross(l.level) {
                assert_eq!(pl.host_of[l.a.node], pl.host_of[l.b.node], "{}", l.name);
            }
        }
        for (i, a) in p.nodes.iter().enumerate() {
            for (j, b) in p.nodes.iter().enumerate() {
                if a.role != Role::Authority
                    && b.role != Role::Authority
                    && a.addr.same_cell(&b.addr)
                {
                    assert_eq!(pl.host_of[i], pl.host_of[j]);
                }
            }
        }
        // every host within capacity
        for (hi, spec) in h.hosts.iter().enumerate() {
            assert!(pl.nodes_on(hi).len() <= spec.capacity.get());
        }
        assert_eq!(place(&p, &h).unwrap(), pl, "deterministic");
    }

    #[test]
    fn capacity_exceeded_is_refused() {
        let e = place(&p(), &hosts(&[10, 10], "")).unwrap_err();
        assert!(
            matches!(
                *e,
                PlacementError::CapacityExceeded {
                    total: 26,
                    capacity: 20,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("add a host or raise capacities"));
    }

    #[test]
    fn a_cell_larger_than_every_host_is_refused() {
        let e = place(&p(), &hosts(&[3, 3, 3, 3, 3, 3, 3, 3, 3, 3], "")).unwrap_err();
        assert!(
            matches!(*e, PlacementError::UnitTooLarge { nodes: 4, .. }),
            "{e}"
        );
    }

    #[test]
    fn an_impossible_pin_is_refused() {
        // a tile and its own gateway pinned apart
        let e = place(
            &p(),
            &hosts(&[20, 20], "pin:\n  l0c0k0t0: h0\n  l0c0k0t1: h1\n"),
        )
        .unwrap_err();
        assert!(matches!(*e, PlacementError::PinConflict { .. }), "{e}");
        assert!(e.to_string().contains("(line 5)"), "{e}");
        // an unknown node
        let e = place(&p(), &hosts(&[20, 20], "pin:\n  nosuch: h0\n")).unwrap_err();
        assert!(
            matches!(
                *e,
                PlacementError::PinUnknown {
                    line: 5,
                    col: 3,
                    ..
                }
            ),
            "{e}"
        );
        // more pinned onto a host than it holds
        let e = place(&p(), &hosts(&[4, 30], "pin:\n  0.0.0: h0\n  0.0.1: h0\n")).unwrap_err();
        assert!(
            matches!(
                *e,
                PlacementError::PinOverCapacity {
                    pinned: 7,
                    capacity: 4,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_pin_moves_a_cell_and_its_authority() {
        let p = p();
        let pl = place(&p, &hosts(&[20, 20], "pin:\n  l0a0: h1\n")).unwrap();
        let a = p.node_index("l0a0").unwrap();
        let g = p.node_index("l0c0k0t0").unwrap();
        assert_eq!(pl.host_of[a], 1);
        assert_eq!(pl.host_of[g], 1);
    }

    #[test]
    fn a_link_too_short_to_cross_is_refused_with_its_name() {
        let short = TOPO.replace("cluster: { delay: 10ms }", "cluster: { delay: 500us }");
        let p = plan(&topo_of(&short, "t.yaml").unwrap());
        // one cell per host: every cluster link crosses
        let eight = [5; 8];
        let e = place(&p, &hosts(&eight, "")).unwrap_err();
        let PlacementError::TooShortToCross { name, level, .. } = &*e else {
            panic!("{e}")
        };
        assert_eq!(level, "cluster");
        assert!(e.to_string().contains(&format!("link {name}")));
        assert!(e.to_string().contains("500us"), "{e}");
        // on one host nothing crosses, so the same plan places
        assert!(place(&p, &hosts(&[26], "")).unwrap().crossing.is_empty());
        // the figure is the real delay: time_scale 10 makes 10ms emulated 1ms real
        let fast = TOPO.replace("seed: 1", "seed: 1\ntime_scale: 10");
        let p = plan(&topo_of(&fast, "t.yaml").unwrap());
        let e = place(&p, &hosts(&eight, "")).unwrap_err();
        assert!(e.to_string().contains("real one-way delay of 1ms"), "{e}");
    }

    #[test]
    fn crossing_links_get_one_vni_each() {
        let p = p();
        let pl = place(&p, &hosts(&[14, 14], "vni_base: 7\n")).unwrap();
        assert!(!pl.crossing.is_empty());
        for c in &pl.crossing {
            assert_eq!(c.vni, 7 + c.link as u32);
            assert!(may_cross(p.links[c.link].level));
        }
        let e = place(&p, &hosts(&[14, 14], "vni_base: 16777215\n")).unwrap_err();
        assert!(matches!(*e, PlacementError::VniRange { .. }), "{e}");
    }
}
