//! rtnetlink helpers: a connection inside a namespace, veth pairs placed straight into
//! their namespaces, addresses, link state. Transient errors (EBUSY, EAGAIN, ENOBUFS) are
//! retried a bounded number of times.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

use super::{KernelError, Netns};

/// How many times a transient netlink error is retried before it is reported.
const RETRIES: u32 = 5;

/// Open a rtnetlink connection whose socket lives in `ns` (the caller's namespace when
/// `None`). Must be called inside a tokio runtime; the connection task is spawned on it.
pub fn handle_in(ns: Option<&Netns>) -> Result<Handle, KernelError> {
    let rt = tokio::runtime::Handle::current();
    let open = move || {
        let _guard = rt.enter();
        rtnetlink::new_connection()
    };
    let (conn, handle, _) = match ns {
        Some(ns) => ns.run(open)?,
        None => open(),
    }
    .map_err(|e| KernelError::sys("open netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

fn transient(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if matches!(m.code.map(|c| -c.get()), Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR)))
}

/// Run a netlink request, retrying transient errors with a short backoff.
pub async fn retry<F, Fut, T>(what: &str, mut f: F) -> Result<T, KernelError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, rtnetlink::Error>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && attempt < RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            Err(e) => return Err(KernelError::netlink(what, e)),
        }
    }
}

/// Create a veth pair `name_a` (in `ns_a`) ↔ `name_b` (in `ns_b`), both still down: asking
/// for IFF_UP at creation fails with ENOTCONN on some kernels (veth_open before the peer is
/// attached; seen on 6.1 for either end), so bring each end up from its own namespace
/// afterwards. Created through any handle (but see [`create_veth_pair`] for a name the
/// caller's namespace has): the kernel creates each end directly in its namespace, so
/// nothing ever appears in the caller's namespace.
pub async fn create_veth_between(
    h: &Handle,
    ns_a: &Netns,
    name_a: &str,
    ns_b: &Netns,
    name_b: &str,
) -> Result<(), KernelError> {
    create_veth_pair(
        h,
        VethEnd {
            ns: ns_a,
            name: name_a,
            mac: None,
            mtu: None,
        },
        VethEnd {
            ns: ns_b,
            name: name_b,
            mac: None,
            mtu: None,
        },
    )
    .await
}

/// One end of a veth pair to create: its namespace, name and, if given, its MAC (else the
/// kernel picks a random one) and MTU (else the kernel's 1500).
#[derive(Debug, Clone, Copy)]
pub struct VethEnd<'a> {
    pub ns: &'a Netns,
    pub name: &'a str,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// [`create_veth_between`], with the MACs of the ends set at creation (no extra request).
///
/// Older kernels (Debian 12's 6.1; not 6.18) look the new device's name up in the
/// namespace of the socket that asks (rtnl_newlink), not in the one it is created in, and
/// refuse it with EEXIST when that namespace has an interface of the same name: a node's
/// `eth1` while the host's own NIC is `eth1` (found by tests/vm/multihost-vm.sh). So when
/// `a`'s name is one of this process's namespace's own interfaces, the request goes
/// through a socket opened in `a`'s namespace instead of `h` (`h` is in this process's
/// namespace at every call site); otherwise through `h`, as before, with no extra socket
/// per pair (a 10⁴-node lab makes 21,220 of them).
pub async fn create_veth_pair(
    h: &Handle,
    a: VethEnd<'_>,
    b: VethEnd<'_>,
) -> Result<(), KernelError> {
    let what = format!(
        "create veth {}:{} <-> {}:{}",
        a.ns.name(),
        a.name,
        b.ns.name(),
        b.name
    );
    let own;
    let h = if own_interface_names().contains(a.name) {
        own = handle_in(Some(a.ns))?;
        &own
    } else {
        h
    };
    retry(&what, || {
        let mut peer = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
            .name(b.name.to_string())
            .setns_by_fd(b.ns.fd().as_raw_fd());
        if let Some(mac) = b.mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(mtu) = b.mtu {
            peer = peer.mtu(mtu);
        }
        let mut msg = LinkVeth::new(a.name, b.name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .setns_by_fd(a.ns.fd().as_raw_fd());
        if let Some(mac) = a.mac {
            msg = msg.address(mac.to_vec());
        }
        if let Some(mtu) = a.mtu {
            msg = msg.mtu(mtu);
        }
        h.link().add(msg.build()).execute()
    })
    .await
}

/// Interface names of this process's network namespace (`/proc/self/net/dev`), read once:
/// the lab never adds interfaces here (every end is made straight in its own namespace).
fn own_interface_names() -> &'static std::collections::BTreeSet<String> {
    static NAMES: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        std::fs::read_to_string("/proc/self/net/dev")
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| Some(l.split(':').next()?.trim().to_string()))
            .filter(|n| !n.is_empty())
            .collect()
    })
}

/// Add (or replace) a permanent neighbour entry: `ip` is at `mac` on interface `index`.
/// The kernel never resolves (ARP) or expires such an entry.
pub async fn add_neighbour(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> Result<(), KernelError> {
    retry(
        &format!("add permanent neighbour {ip} on interface {index}"),
        || {
            h.neighbours()
                .add(index, IpAddr::V4(ip))
                .link_layer_address(&mac)
                .state(netlink_packet_route::neighbour::NeighbourState::Permanent)
                .replace()
                .execute()
        },
    )
    .await
}

/// Create a veth pair whose first end is in the namespace of `h_a` and whose peer is
/// created in `ns_b`, both down (see [`create_veth_between`]).
pub async fn create_veth(
    h_a: &Handle,
    name_a: &str,
    ns_b: &Netns,
    name_b: &str,
) -> Result<(), KernelError> {
    let what = format!("create veth {name_a} <-> {}:{name_b}", ns_b.name());
    retry(&what, || {
        let peer = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
            .name(name_b.to_string())
            .setns_by_fd(ns_b.fd().as_raw_fd())
            .build();
        let msg = LinkVeth::new(name_a, name_b)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h_a.link().add(msg).execute()
    })
    .await
}

/// Index of the interface `name` in the handle's namespace.
pub async fn ifindex(h: &Handle, name: &str) -> Result<u32, KernelError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(KernelError::NoSuchInterface(name.to_string())),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
        {
            Err(KernelError::NoSuchInterface(name.to_string()))
        }
        Err(e) => Err(KernelError::netlink(format!("look up {name}"), e)),
    }
}

/// Names and indexes of every interface in the handle's namespace.
pub async fn interfaces(h: &Handle) -> Result<Vec<(u32, String)>, KernelError> {
    let mut out = Vec::new();
    let mut links = h.link().get().execute();
    while let Some(msg) = links
        .try_next()
        .await
        .map_err(|e| KernelError::netlink("list interfaces", e))?
    {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        if let Some(name) = name {
            out.push((msg.header.index, name));
        }
    }
    Ok(out)
}

/// Bring an interface up.
pub async fn set_up(h: &Handle, index: u32) -> Result<(), KernelError> {
    retry(&format!("set interface {index} up"), || {
        h.link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
    })
    .await
}

/// Bring an interface down.
pub async fn set_down(h: &Handle, index: u32) -> Result<(), KernelError> {
    retry(&format!("set interface {index} down"), || {
        h.link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).down().build())
            .execute()
    })
    .await
}

/// Add (or replace) an IPv4 address on an interface.
pub async fn add_address(
    h: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), KernelError> {
    retry(
        &format!("add address {addr}/{prefix} to interface {index}"),
        || {
            h.address()
                .add(index, IpAddr::V4(addr), prefix)
                .replace()
                .execute()
        },
    )
    .await
}

/// Add (or replace) a route to `dest/prefix` via `gateway` on interface `index`.
pub async fn add_route(
    h: &Handle,
    dest: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    index: u32,
) -> Result<(), KernelError> {
    retry(&format!("add route {dest}/{prefix} via {gateway}"), || {
        let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, prefix)
            .gateway(gateway)
            .output_interface(index)
            .build();
        h.route().add(msg).replace().execute()
    })
    .await
}
