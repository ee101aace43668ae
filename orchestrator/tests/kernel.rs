//! Namespaces and veth through our own netlink code (needs root).

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use lightcone::kernel::{self, Netns};

struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Netns::delete(n);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn veth_between_namespaces_carries_udp() {
    let a_name = format!("lct-k{}-a", std::process::id());
    let b_name = format!("lct-k{}-b", std::process::id());
    let _c = Cleanup(vec![a_name.clone(), b_name.clone()]);
    let a = Netns::create(&a_name).unwrap();
    let b = Netns::create(&b_name).unwrap();
    assert!(matches!(
        Netns::create(&a_name),
        Err(kernel::KernelError::NamespaceExists(_))
    ));
    let root = kernel::handle_in(None).unwrap();
    kernel::netlink::create_veth_between(&root, &a, "eth1", &b, "eth1")
        .await
        .unwrap();
    // Nothing appeared in the root namespace.
    let root_ifs = kernel::netlink::interfaces(&root).await.unwrap();
    assert!(!root_ifs.iter().any(|(_, n)| n == "eth1"), "{root_ifs:?}");
    for (ns, ip) in [
        (&a, Ipv4Addr::new(198, 18, 0, 0)),
        (&b, Ipv4Addr::new(198, 18, 0, 1)),
    ] {
        let h = kernel::handle_in(Some(ns)).unwrap();
        let idx = kernel::ifindex(&h, "eth1").await.unwrap();
        kernel::add_address(&h, idx, ip, 31).await.unwrap();
        kernel::set_up(&h, idx).await.unwrap();
    }
    let rx = b
        .run(|| UdpSocket::bind((Ipv4Addr::new(198, 18, 0, 1), 9000)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tx = a
        .run(|| UdpSocket::bind((Ipv4Addr::new(198, 18, 0, 0), 0)))
        .unwrap()
        .unwrap();
    tx.send_to(b"hello", (Ipv4Addr::new(198, 18, 0, 1), 9000))
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip(), Ipv4Addr::new(198, 18, 0, 0));
    drop((a, b));
    Netns::delete(&a_name).unwrap();
    Netns::delete(&b_name).unwrap();
    Netns::delete(&b_name).unwrap(); // idempotent
    assert!(!Netns::exists(&a_name));
}
