//! A two-node lab for wire-engine tests and the wire benchmark: namespaces `a` and `b`,
//! each with `eth0`, joined either through a "wire" namespace `w` (`a:eth0 ↔ w:wa`,
//! `b:eth0 ↔ w:wb`, the layout the plan builds) or directly (`a:eth0 ↔ b:eth0`, the
//! unshaped baseline). Every namespace is deleted when the [`Lab`] drops, also when a
//! test panics half-way through building it. Needs root.
//!
//! Included with `#[path]` by `wire_e2e.rs` and `benches/wire.rs`; on its own it is an
//! (empty) test target.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use lightcone::kernel::{self, Netns};
use lightcone::link::wire::PortSpec;

pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// The addresses of link `i`'s a and b ends in a [`Lab::many_links`] lab: a /30 each in
/// 198.18.0.0/15, i < 32,768.
pub fn many_ips(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 4 * i as u32;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

pub struct Lab {
    pub a: Netns,
    pub b: Netns,
    /// The wire namespace (`None` for a direct lab).
    pub w: Option<Netns>,
    _guard: NsGuard,
}

/// Deletes the namespaces named in it on drop.
struct NsGuard(Vec<String>);

impl Drop for NsGuard {
    fn drop(&mut self) {
        for n in &self.0 {
            if let Err(e) = Netns::delete(n) {
                eprintln!("cleanup: delete namespace {n}: {e}");
            }
        }
    }
}

fn quiet_ipv6(ns: &Netns) {
    // fewer stray frames (ND, MLD) through the links under test
    ns.run(|| {
        for k in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{k}/disable_ipv6"), "1");
        }
    })
    .expect("enter namespace");
}

/// A veth pair `name` (in the handle's namespace) ↔ `peer_name` (in `peer_ns`), both down.
/// (Not `kernel::create_veth`: asking for the peer to be up at creation fails with
/// ENOTCONN, since veth cannot open an end whose peer is not attached yet.)
async fn veth(h: &rtnetlink::Handle, name: &str, peer_ns: &Netns, peer_name: &str) {
    use netlink_packet_route::link::{InfoData, InfoVeth};
    use std::os::fd::AsRawFd;
    let peer = rtnetlink::LinkMessageBuilder::<rtnetlink::LinkUnspec>::new()
        .name(peer_name.to_string())
        .setns_by_fd(peer_ns.fd().as_raw_fd())
        .build();
    let msg = rtnetlink::LinkVeth::new(name, peer_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("veth {name} <-> {}:{peer_name}: {e}", peer_ns.name()));
}

impl Lab {
    /// `a ↔ w ↔ b`: the wire engine forwards between `w:wa` and `w:wb`.
    pub fn through_wire(tag: &str) -> Lab {
        Self::build(tag, true)
    }

    /// `a ↔ b` over one veth pair: the unshaped baseline.
    pub fn direct(tag: &str) -> Lab {
        Self::build(tag, false)
    }

    fn build(tag: &str, wire: bool) -> Lab {
        Self::build_with(tag, wire, true)
    }

    /// The namespaces; with `eth0s` also the two-node links described in the module doc.
    fn build_with(tag: &str, wire: bool, eth0s: bool) -> Lab {
        let pid = std::process::id();
        let name = |r: &str| format!("lct-{pid}-{tag}-{r}");
        let mut guard = NsGuard(Vec::new());
        let mut make = |r: &str| {
            let n = name(r);
            // a leftover of an earlier crashed run with our pid: remove it first
            let _ = Netns::delete(&n);
            guard.0.push(n.clone());
            let ns = Netns::create(&n).unwrap_or_else(|e| panic!("create namespace {n}: {e}"));
            quiet_ipv6(&ns);
            ns
        };
        let a = make("a");
        let b = make("b");
        let w = wire.then(|| make("w"));
        if !eth0s {
            return Lab {
                a,
                b,
                w,
                _guard: guard,
            };
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            // each pair is made inside its node namespace with the peer placed straight in
            // its own: nothing ever appears in the host namespace
            let ha = kernel::handle_in(Some(&a)).expect("netlink a");
            let hb = kernel::handle_in(Some(&b)).expect("netlink b");
            match &w {
                Some(w) => {
                    veth(&ha, "eth0", w, "wa").await;
                    veth(&hb, "eth0", w, "wb").await;
                    let hw = kernel::handle_in(Some(w)).expect("netlink w");
                    for i in ["wa", "wb"] {
                        let idx = kernel::ifindex(&hw, i).await.expect("wire end");
                        kernel::set_up(&hw, idx).await.expect("wire end up");
                    }
                }
                None => {
                    veth(&ha, "eth0", &b, "eth0").await;
                }
            }
            for (ns, ip) in [(&a, IP_A), (&b, IP_B)] {
                let h = kernel::handle_in(Some(ns)).expect("netlink in ns");
                let idx = kernel::ifindex(&h, "eth0").await.expect("eth0");
                kernel::add_address(&h, idx, ip, 24).await.expect("address");
                kernel::set_up(&h, idx).await.expect("up");
            }
        });
        Lab {
            a,
            b,
            w,
            _guard: guard,
        }
    }

    /// `n` links side by side, `a:aI ↔ w:waI` and `b:bI ↔ w:wbI` for I in 0..n, link I's
    /// ends addressed [`many_ips`]`(I)` (a /30 each), every wire end up.
    pub fn many_links(tag: &str, n: usize) -> Lab {
        let lab = Self::build_with(tag, true, false);
        let (a, b, w) = (&lab.a, &lab.b, lab.w.as_ref().expect("wire"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let ha = kernel::handle_in(Some(a)).expect("netlink a");
            let hb = kernel::handle_in(Some(b)).expect("netlink b");
            let hw = kernel::handle_in(Some(w)).expect("netlink w");
            for i in 0..n {
                let (ip_a, ip_b) = many_ips(i);
                for (h, side, ip) in [(&ha, "a", ip_a), (&hb, "b", ip_b)] {
                    let name = format!("{side}{i}");
                    let wire = format!("w{side}{i}");
                    veth(h, &name, w, &wire).await;
                    let idx = kernel::ifindex(&hw, &wire).await.expect("wire end");
                    kernel::set_up(&hw, idx).await.expect("wire end up");
                    let idx = kernel::ifindex(h, &name).await.expect("node end");
                    kernel::add_address(h, idx, ip, 30).await.expect("address");
                    kernel::set_up(h, idx).await.expect("node end up");
                }
            }
        });
        lab
    }

    /// The wire ends of link `i` of a [`Lab::many_links`] lab.
    pub fn many_ports(&self, i: usize) -> (PortSpec, PortSpec) {
        let w = self.w.as_ref().expect("a lab through the wire");
        let p = |i: String| PortSpec::Netns {
            netns: w.name().to_string(),
            ifname: i,
        };
        (p(format!("wa{i}")), p(format!("wb{i}")))
    }

    /// The two wire-namespace ends, for [`lightcone::link::wire::WireEngine::add_link`].
    pub fn ports(&self) -> (PortSpec, PortSpec) {
        let w = self.w.as_ref().expect("a lab through the wire");
        let p = |i: &str| PortSpec::Netns {
            netns: w.name().to_string(),
            ifname: i.to_string(),
        };
        (p("wa"), p("wb"))
    }
}
