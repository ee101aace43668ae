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

use crate::kernel::netlink::{add_address, add_neighbour, ifindex, retry, set_up};
use crate::kernel::{KernelError, Netns};
use crate::plan::Mac;

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
    let under = ifindex(host, &end.underlay).await?;
    let what = format!(
        "create vxlan {} (vni {}, {} -> {}:{}) in {}",
        end.ifname,
        end.vni,
        end.local,
        end.remote,
        end.port,
        node.name()
    );
    retry(&what, || {
        let msg = LinkVxlan::new(&end.ifname, end.vni)
            .dev(under)
            .remote(end.remote)
            .local(end.local)
            .port(end.port)
            .learning(false)
            .mtu(end.mtu)
            .address(end.mac.0.to_vec())
            .setns_by_fd(node.fd().as_raw_fd())
            .build();
        host.link().add(msg).execute()
    })
    .await?;
    let h = crate::kernel::handle_in(Some(node))?;
    let idx = ifindex(&h, &end.ifname).await?;
    add_address(&h, idx, end.ip, end.prefix).await?;
    add_neighbour(&h, idx, end.peer_ip, end.peer_mac.0).await?;
    set_up(&h, idx).await?;
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
