//! Cross-host links over kernel VXLAN (issue 19), on one machine: two namespaces play two
//! hosts joined by a veth underlay (198.19.255.0/30, inside RFC 2544's 198.18.0.0/15),
//! each with a node namespace. The VXLAN device of each end is created from its host's
//! namespace straight into its node's namespace (`lightcone::hosts::vxlan`), and must
//! carry UDP between the two nodes; deleting the node namespaces must leave no VXLAN
//! device and no UDP socket on the port. Needs root; run under the lab lock.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use lightcone::hosts::vxlan::{self, VxlanEnd};
use lightcone::kernel::{self, Netns};
use lightcone::plan::mac_of;

/// Namespaces created by this test, deleted on drop (also when an assertion fails).
struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Netns::delete(n);
        }
    }
}

/// A port no other test uses, so a leftover socket can only be ours.
const PORT: u16 = 47_89;
const VNI: u32 = 4_242;

/// The test's namespaces: two fake hosts and a node on each, `TAG_h1`, `_h2`, `_n1`, `_n2`.
fn ns_names(tag: &str) -> Vec<String> {
    ["h1", "h2", "n1", "n2"]
        .iter()
        .map(|s| format!("{tag}_{s}"))
        .collect()
}

/// The fake hosts' underlay: one veth `under0` between namespaces `h1` and `h2` (MTU 1500),
/// 198.19.255.1/30 and .2, up with their loopbacks; a netlink handle in each.
async fn underlay(h1: &Netns, h2: &Netns) -> ([rtnetlink::Handle; 2], [Ipv4Addr; 2]) {
    let root = kernel::handle_in(None).unwrap();
    kernel::netlink::create_veth_between(&root, h1, "under0", h2, "under0")
        .await
        .unwrap();
    let under = [
        Ipv4Addr::new(198, 19, 255, 1),
        Ipv4Addr::new(198, 19, 255, 2),
    ];
    let hh = [
        kernel::handle_in(Some(h1)).unwrap(),
        kernel::handle_in(Some(h2)).unwrap(),
    ];
    for (h, ip) in hh.iter().zip(under) {
        let idx = kernel::ifindex(h, "under0").await.unwrap();
        kernel::add_address(h, idx, ip, 30).await.unwrap();
        kernel::set_up(h, idx).await.unwrap();
        let lo = kernel::ifindex(h, "lo").await.unwrap();
        kernel::set_up(h, lo).await.unwrap();
    }
    (hh, under)
}

#[tokio::test(flavor = "current_thread")]
async fn vxlan_between_two_fake_hosts_carries_udp_and_leaves_nothing() {
    let tag = format!("lc-multihost{}", std::process::id());
    let names = ns_names(&tag);
    let _c = Cleanup(names.clone());
    let (h1, h2) = (
        &Netns::create(&names[0]).unwrap(),
        &Netns::create(&names[1]).unwrap(),
    );
    // Node namespaces: their handles are dropped before the namespaces are deleted (an
    // open handle keeps a namespace, and the devices in it, alive).
    let (n1_own, n2_own) = (
        Netns::create(&names[2]).unwrap(),
        Netns::create(&names[3]).unwrap(),
    );
    let (n1, n2) = (&n1_own, &n2_own);
    // The underlay: one veth between the two "hosts", MTU 1500.
    let (hh, under) = underlay(h1, h2).await;
    // The lab link: 198.18.200.0/31, one end per node.
    let ips = [
        Ipv4Addr::new(198, 18, 200, 0),
        Ipv4Addr::new(198, 18, 200, 1),
    ];
    let lab_mtu = 1500 - lightcone::hosts::VXLAN_OVERHEAD_BYTES;
    for (i, (h, node)) in hh.iter().zip([n1, n2]).enumerate() {
        let end = VxlanEnd {
            ifname: "eth1".into(),
            vni: VNI,
            port: PORT,
            underlay: "under0".into(),
            local: under[i],
            remote: under[1 - i],
            mtu: lab_mtu,
            mac: mac_of(ips[i]),
            ip: ips[i],
            prefix: 31,
            peer_ip: ips[1 - i],
            peer_mac: mac_of(ips[1 - i]),
        };
        vxlan::create_end(h, node, &end).await.unwrap();
    }
    // The devices are in the node namespaces, with the VNI, port and MTU asked for, and
    // none is in the host namespaces; the hosts hold the UDP sockets.
    for node in [n1, n2] {
        let h = kernel::handle_in(Some(node)).unwrap();
        let devs = vxlan::vxlan_devices(&h).await.unwrap();
        assert_eq!(devs.len(), 1, "{devs:?}");
        assert_eq!(devs[0].name, "eth1");
        assert_eq!(devs[0].vni, Some(VNI));
        assert_eq!(devs[0].port, Some(PORT));
        assert_eq!(devs[0].mtu, Some(1450));
    }
    for (h, host) in hh.iter().zip([h1, h2]) {
        assert!(vxlan::vxlan_devices(h).await.unwrap().is_empty());
        let ports = host.run(vxlan::udp_ports_bound).unwrap().unwrap();
        assert!(
            ports.contains(&PORT),
            "no VXLAN socket on {PORT}: {ports:?}"
        );
    }
    // UDP from node 1 to node 2 and back, over the VXLAN link.
    let rx = n2.run(|| UdpSocket::bind((ips[1], 9000))).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tx = n1.run(|| UdpSocket::bind((ips[0], 0))).unwrap().unwrap();
    tx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A payload as large as the lab MTU allows (1450 − 20 IP − 8 UDP), unfragmented.
    let big = vec![0x5a_u8; 1422];
    tx.send_to(&big, (ips[1], 9000)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(n, big.len());
    assert_eq!(from.ip(), ips[0]);
    rx.send_to(b"pong", from).unwrap();
    let (n, _) = tx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    drop((rx, tx));
    // Teardown: the node namespaces go, and with them the devices and the sockets.
    drop((n1_own, n2_own));
    Netns::delete(&names[2]).unwrap();
    Netns::delete(&names[3]).unwrap();
    let t0 = std::time::Instant::now();
    let gone = async {
        let mut left = Vec::new();
        for _ in 0..100 {
            left.clear();
            for (h, host) in hh.iter().zip([h1, h2]) {
                left.extend(
                    vxlan::vxlan_devices(h)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|d| d.name),
                );
                let ports = host.run(vxlan::udp_ports_bound).unwrap().unwrap();
                if ports.contains(&PORT) {
                    left.push(format!("udp port {PORT} in {}", host.name()));
                }
            }
            if left.is_empty() {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        left
    };
    let left = gone.await;
    assert!(left.is_empty(), "outlived the node namespaces: {left:?}");
    println!(
        "VXLAN devices and sockets gone {:?} after the node namespaces were deleted",
        t0.elapsed()
    );
    let root_devs = vxlan::vxlan_devices(&kernel::handle_in(None).unwrap())
        .await
        .unwrap();
    assert!(
        !root_devs.iter().any(|d| d.vni == Some(VNI)),
        "{root_devs:?}"
    );
    let ports = vxlan::udp_ports_bound().unwrap();
    assert!(!ports.contains(&PORT), "port {PORT} bound on the host");
}

/// The same link with a remote nobody answers on: creation succeeds (VXLAN is
/// connectionless), but a datagram is not delivered — the test above can fail.
#[tokio::test(flavor = "current_thread")]
async fn vxlan_to_a_wrong_remote_delivers_nothing() {
    let tag = format!("lc-multihost{}x", std::process::id());
    let names = ns_names(&tag);
    let _c = Cleanup(names.clone());
    let ns: Vec<Netns> = names.iter().map(|n| Netns::create(n).unwrap()).collect();
    let (h1, h2, n1, n2) = (&ns[0], &ns[1], &ns[2], &ns[3]);
    let (hh, under) = underlay(h1, h2).await;
    let ips = [
        Ipv4Addr::new(198, 18, 200, 0),
        Ipv4Addr::new(198, 18, 200, 1),
    ];
    for (i, (h, node)) in hh.iter().zip([n1, n2]).enumerate() {
        let end = VxlanEnd {
            ifname: "eth1".into(),
            // different VNIs at the two ends: the receiver drops what it gets
            vni: VNI + i as u32,
            port: PORT + 1,
            underlay: "under0".into(),
            local: under[i],
            remote: under[1 - i],
            mtu: 1450,
            mac: mac_of(ips[i]),
            ip: ips[i],
            prefix: 31,
            peer_ip: ips[1 - i],
            peer_mac: mac_of(ips[1 - i]),
        };
        vxlan::create_end(h, node, &end).await.unwrap();
    }
    let rx = n2.run(|| UdpSocket::bind((ips[1], 9000))).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let tx = n1.run(|| UdpSocket::bind((ips[0], 0))).unwrap().unwrap();
    tx.send_to(b"hello", (ips[1], 9000)).unwrap();
    let mut buf = [0u8; 64];
    assert!(rx.recv_from(&mut buf).is_err(), "a VNI mismatch delivered");
}
