//! Cross-host links over kernel VXLAN (RFC 7348), built through rtnetlink like every
//! other kernel object here (no `ip` process).
//!
//! One VXLAN device per link end and one VNI per link: the device is created by a netlink
//! socket in the host's namespace (where the underlay interface lives, so its UDP socket
//! and route lookups stay there) and placed straight into the node's namespace in the same
//! request (`IFLA_NET_NS_FD`, as `ip link add … netns N` does), named as the plan names
//! the node's interface, with the planned MAC, the lab's MTU (smallest underlay MTU − 50),
//! a unicast remote (the other host's underlay address; never multicast, which would
//! leave the host) and learning off: the peer's MAC is a permanent neighbour entry, as on
//! every lab link, so no ARP crosses the link.
//!
//! Teardown is the namespace's: deleting the node's namespace destroys the device and
//! closes its UDP socket in the host's namespace (the kernel drops the socket with the
//! last VXLAN device using the port).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use netlink_packet_route::link::{InfoData, LinkAttribute, LinkInfo};
use rtnetlink::{Handle, LinkVxlan};

use super::slice::CrossEnd;
use crate::apply::Layout;
use crate::kernel::netlink::{
    add_address, add_neighbour, create_veth_pair, ifindex, retry, set_up, VethEnd,
};
use crate::kernel::{KernelError, Netns};
use crate::plan::{Mac, Plan};

/// One end of a cross-host link on this host.
#[derive(Debug, Clone)]
pub struct VxlanEnd {
    /// The interface's name inside the node's namespace (the plan's `ethN`).
    pub ifname: String,
    pub vni: u32,
    /// UDP destination port (and the local socket's port).
    pub port: u16,
    /// The underlay interface's name in the host's namespace.
    pub underlay: String,
    /// This host's underlay address (the outer source).
    pub local: Ipv4Addr,
    /// The other host's underlay address (the outer destination).
    pub remote: Ipv4Addr,
    pub mtu: u32,
    pub mac: Mac,
    /// The node end's address on the link (a /31 like every lab link).
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub peer_ip: Ipv4Addr,
    pub peer_mac: Mac,
}

/// Create `end` with `host` (a netlink handle in the host's namespace) directly inside
/// `node`, address it, install the peer's neighbour entry and bring it up. On error the
/// device may exist in `node` (it goes with the namespace); nothing is left in the host's
/// namespace but what the kernel keeps for a device that exists.
pub async fn create_end(host: &Handle, node: &Netns, end: &VxlanEnd) -> Result<(), KernelError> {
    add_device(host, node, &end.ifname, Some(end.mac), end).await?;
    let h = crate::kernel::handle_in(Some(node))?;
    let idx = ifindex(&h, &end.ifname).await?;
    add_address(&h, idx, end.ip, end.prefix).await?;
    add_neighbour(&h, idx, end.peer_ip, end.peer_mac.0).await?;
    set_up(&h, idx).await?;
    Ok(())
}

/// Create the VXLAN device `name` of `end`'s link (VNI, port, underlay, addresses, MTU)
/// through `host`, straight into `into`, down. `mac`: its address (`None`: the kernel's
/// random one).
async fn add_device(
    host: &Handle,
    into: &Netns,
    name: &str,
    mac: Option<Mac>,
    end: &VxlanEnd,
) -> Result<(), KernelError> {
    let under = ifindex(host, &end.underlay).await?;
    // Older kernels look the new device's name up in the namespace of the socket that asks,
    // not in the one it goes to (see create_veth_pair), and the VXLAN device must be
    // asked for from the host's namespace (its socket and underlay are there). So a name
    // the host itself has (its NIC `eth1`, a node's `eth1`) is created under a name of its
    // own and renamed inside `into`.
    let clash = ifindex(host, name).await.is_ok();
    let made = if clash {
        format!("lcvx{}", end.vni)
    } else {
        name.to_string()
    };
    let what = format!(
        "create vxlan {made} (vni {}, {} -> {}:{} over {}) in {}",
        end.vni,
        end.local,
        end.remote,
        end.port,
        end.underlay,
        into.name()
    );
    retry(&what, || {
        let mut msg = LinkVxlan::new(&made, end.vni)
            .dev(under)
            .remote(end.remote)
            .local(end.local)
            .port(end.port)
            .learning(false)
            .mtu(end.mtu)
            .setns_by_fd(into.fd().as_raw_fd());
        if let Some(mac) = mac {
            msg = msg.address(mac.0.to_vec());
        }
        host.link().add(msg.build()).execute()
    })
    .await?;
    if clash {
        let h = crate::kernel::handle_in(Some(into))?;
        let idx = ifindex(&h, &made).await?;
        retry(
            &format!("rename {made} to {name} in {}", into.name()),
            || {
                h.link()
                    .set(
                        rtnetlink::LinkUnspec::new_with_index(idx)
                            .name(name.to_string())
                            .build(),
                    )
                    .execute()
            },
        )
        .await?;
    }
    Ok(())
}

/// Build this host's ends of the links to other hosts (`ends`, from the slice), after
/// [`crate::apply::build`] made the namespaces; the handle of the calling thread's
/// namespace is the host's (the VXLAN sockets open there, on the underlay).
///
/// - [`Layout::Direct`] (netem, unshaped): the node's interface *is* the VXLAN device
///   ([`create_end`]); netem, if any, goes on it.
/// - [`Layout::Wire`]: the node's interface is a veth into the wire namespace, like every
///   link's, and a VXLAN device named as the far end's wire interface sits in the wire
///   namespace; the engine forwards between the two ([`crate::link::engine::LinkEngine::add_cross`]).
///
/// Every device is in a lab namespace, so teardown (deleting the namespaces) removes them
/// and the kernel closes the UDP socket with the last one. An end without underlay
/// addresses (a slice not filled in by the controller) is an error before anything is made.
pub async fn build_cross(
    plan: &Plan,
    layout: Layout,
    ends: &[CrossEnd],
) -> Result<(), KernelError> {
    let mut resolved = Vec::with_capacity(ends.len());
    for c in ends {
        let (Some(local), Some(remote)) = (c.local_addr, c.remote_addr) else {
            return Err(KernelError::sys(
                format!("cross-host link {}", c.link),
                std::io::Error::other(
                    "the slice has no underlay addresses for it (the controller fills them in at `up`)",
                ),
            ));
        };
        resolved.push((c, local, remote));
    }
    let host = crate::kernel::handle_in(None)?;
    let mtu = plan.link_mtu.unwrap_or(1500);
    let wire = match layout {
        Layout::Wire => Some(Netns::open(&plan.wire_netns)?),
        Layout::Direct => None,
    };
    for (c, local, remote) in resolved {
        let node = Netns::open(&plan.nodes[c.node].netns)?;
        let end = VxlanEnd {
            ifname: c.ifname.clone(),
            vni: c.vni,
            port: c.port,
            underlay: c.underlay.clone(),
            local,
            remote,
            mtu,
            mac: c.mac,
            ip: c.ip,
            prefix: c.prefix,
            peer_ip: c.peer_ip,
            peer_mac: c.peer_mac,
        };
        let Some(w) = &wire else {
            create_end(&host, &node, &end).await?;
            continue;
        };
        create_veth_pair(
            &host,
            VethEnd {
                ns: &node,
                name: &c.ifname,
                mac: Some(c.mac.0),
                mtu: Some(mtu),
            },
            VethEnd {
                ns: w,
                name: &c.wire_ifname,
                mac: None,
                mtu: Some(mtu),
            },
        )
        .await?;
        add_device(&host, w, &c.far_wire_ifname, None, &end).await?;
        let h = crate::kernel::handle_in(Some(&node))?;
        let idx = ifindex(&h, &c.ifname).await?;
        add_address(&h, idx, c.ip, c.prefix).await?;
        set_up(&h, idx).await?;
        add_neighbour(&h, idx, c.peer_ip, c.peer_mac.0).await?;
        let hw = crate::kernel::handle_in(Some(w))?;
        for name in [&c.wire_ifname, &c.far_wire_ifname] {
            let i = ifindex(&hw, name).await?;
            set_up(&hw, i).await?;
        }
    }
    Ok(())
}

/// What the kernel says about a VXLAN device: VNI, port, MTU. `None`: no such device or
/// not a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    pub name: String,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub mtu: Option<u32>,
}

/// Every VXLAN device in the handle's namespace.
pub async fn vxlan_devices(h: &Handle) -> Result<Vec<VxlanInfo>, KernelError> {
    use futures::TryStreamExt;
    use netlink_packet_route::link::InfoVxlan;
    let mut out = Vec::new();
    let mut links = h.link().get().execute();
    while let Some(msg) = links
        .try_next()
        .await
        .map_err(|e| KernelError::netlink("list interfaces", e))?
    {
        let mut info = VxlanInfo {
            name: String::new(),
            vni: None,
            port: None,
            mtu: None,
        };
        let mut is_vxlan = false;
        for a in &msg.attributes {
            match a {
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::Mtu(m) => info.mtu = Some(*m),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(vx)) = i {
                            is_vxlan = true;
                            for v in vx {
                                match v {
                                    InfoVxlan::Id(id) => info.vni = Some(*id),
                                    InfoVxlan::Port(p) => info.port = Some(*p),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if is_vxlan {
            out.push(info);
        }
    }
    Ok(out)
}

/// UDP ports with a bound socket in the calling thread's namespace (`/proc/thread-self/
/// net/udp`), to check that a torn-down link left no VXLAN socket behind. Call it inside
/// [`Netns::run`] to look into a namespace.
pub fn udp_ports_bound() -> std::io::Result<Vec<u16>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/udp")?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let local = l.split_whitespace().nth(1)?;
            let port = local.rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect())
}
