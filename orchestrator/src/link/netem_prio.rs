//! Class A before data on a netem link (issue 15): the qdisc tree the netem engine builds
//! on a link with a rate.
//!
//! A link queues only where it serialises, so priority matters only in front of the rate.
//! netem's own rate (`TCA_NETEM_RATE`) computes each packet's departure at enqueue, one FIFO
//! behind the other, so a control frame that arrives behind a burst of data waits for all of
//! it. On a link with a rate the engine therefore takes the rate out of netem and hangs the
//! transmitter below it, with strict priority in front:
//!
//! ```text
//! root R: netem  the model without its rate (delay, jitter, loss, …)   = the delay line
//!  └─ R:1 → 10: tbf   rate = the link's, bucket two full frames        = the transmitter
//!           └─ 10:1 → 20: prio, bands 2, priomap all → band 20:2       = strict priority
//!                  ├─ filter u32 "ip dsfield & 0xc0 == 0xc0" → 20:1     = DSCP ≥ 48 (CS6, CS7)
//!                  ├─ 20:1 → 21: pfifo, 1,000 packets                  = Class A
//!                  └─ 20:2 → 22: pfifo, 1,000 packets                  = data
//! ```
//!
//! netem hands each packet to its child when its delay has passed; tbf releases the next one
//! its tokens allow, asking band 20:1 first, so a Class-A frame waits at most for the frame
//! on the transmitter while data queues behind data. The delay is applied before the
//! transmitter rather than after; with a constant delay both orders give every packet the
//! same departure time. One netem a tree: kernels since mid-2025 refuse a duplicating netem
//! in a tree with another netem (`check_netem_in_tree`, EINVAL, found in the VM), so the
//! classes share the delay line and split only at the transmitter. Agents mark Class A with
//! DSCP CS6 per datagram (`node-agent/src/dscp.rs`), which the u32 filter reads (the kernel
//! does not derive `skb->priority` from an `IP_TOS` control message, so the priomap alone
//! would put everything in one band). IPv6 traffic is not matched and goes with data (the lab
//! numbers IPv4).
//!
//! Differences from netem's own rate, stated: (1) an idle transmitter holds tokens for
//! [`burst_bytes`], so a packet on an idle link leaves without its own serialisation time (at
//! 200 Mbit/s, 60 µs for 1,514 bytes), as from a NIC whose queue is empty; (2) tbf's
//! per-packet overhead is unsigned, so a negative `packet_overhead_bytes` on a rated link is
//! refused ([`super::NetemError::NegativeOverhead`]); (3) netem's queue limit
//! ([`super::queue_limit`]) bounds the delay line, and the transmitter's backlog is bounded
//! by each band's pfifo ([`BAND_LIMIT_PACKETS`], a veth's default `txqueuelen`). The pfifos
//! are grafted explicitly, not left as prio's defaults, because the kernel hides default
//! children from dumps and the engine reads the Class-A band's counters.
//!
//! Encodings are iproute2's (golden bytes from `tc` in `tests/golden/netem/`): `tbf` as
//! `TCA_TBF_PARMS` + `TCA_TBF_BURST` (+ `TCA_TBF_RATE64`), without `TCA_TBF_RTAB` — the
//! kernel reads the rate table only for `TC_LINKLAYER_UNAWARE` rates, and ours say Ethernet;
//! `prio` as `struct tc_prio_qopt` (+ the empty compat attribute `tc` appends); the filter as
//! `TCA_U32_CLASSID` + `TCA_U32_SEL`.

use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::put_attr;

/// `TCA_OPTIONS` in a `tcmsg`.
const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_SEL: u16 = 5;
/// `TC_LINKLAYER_ETHERNET`: the kernel then needs no rate table.
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `TC_U32_TERMINAL`: a match ends classification.
const TC_U32_TERMINAL: u8 = 1;
/// `ETH_P_IP`.
const ETH_P_IP: u16 = 0x0800;

/// The tree's handles (below netem's, which the kernel numbers).
pub const TBF: TcHandle = TcHandle {
    major: 0x10,
    minor: 0,
};
pub const TBF_CLASS: TcHandle = TcHandle {
    major: 0x10,
    minor: 1,
};
pub const PRIO: TcHandle = TcHandle {
    major: 0x20,
    minor: 0,
};
pub const CLASS_A_BAND: TcHandle = TcHandle {
    major: 0x20,
    minor: 1,
};
pub const DATA_BAND: TcHandle = TcHandle {
    major: 0x20,
    minor: 2,
};
pub const CLASS_A_QUEUE: TcHandle = TcHandle {
    major: 0x21,
    minor: 0,
};
pub const DATA_QUEUE: TcHandle = TcHandle {
    major: 0x22,
    minor: 0,
};
/// Each band's queue, in packets: a veth's default `txqueuelen`, what prio's default child
/// would hold.
pub const BAND_LIMIT_PACKETS: u32 = 1000;
/// The filter's preference (`pref 1`).
pub const FILTER_PREF: u16 = 1;

/// The largest frame on a lab link: 1,500-byte MTU plus the Ethernet header (what
/// `psched_mtu` gives for a veth).
pub const FRAME_BYTES: u32 = 1514;

/// tbf's bucket: two full frames, the least tbf accepts with margin (it drops a packet larger
/// than its bucket and warns below one MTU). Bigger buckets let bursts leave at line speed.
pub fn burst_bytes() -> u32 {
    2 * FRAME_BYTES
}

/// One psched tick in ns.
const PSCHED_TICK_NS: u128 = 64;

/// `struct tc_ratespec` for `bytes_per_s` (saturated at `u32::MAX`; `TCA_TBF_RATE64` then
/// carries the rate), Ethernet link layer, `overhead` bytes a packet. `cell_log` 3 and
/// `cell_align` −1 are what `tc` writes (they only shape the rate table, which we omit).
fn ratespec(bytes_per_s: u64, overhead: u16) -> [u8; 12] {
    let rate32 = u32::try_from(bytes_per_s)
        .ok()
        .filter(|r| *r < u32::MAX)
        .unwrap_or(u32::MAX);
    let mut r = [0u8; 12];
    r[0] = 3; // cell_log
    r[1] = TC_LINKLAYER_ETHERNET;
    r[2..4].copy_from_slice(&overhead.to_ne_bytes());
    r[4..6].copy_from_slice(&(-1i16).to_ne_bytes()); // cell_align
    r[6..8].copy_from_slice(&0u16.to_ne_bytes()); // mpu
    r[8..12].copy_from_slice(&rate32.to_ne_bytes());
    r
}

/// tbf's `TCA_OPTIONS` payload: rate `bytes_per_s` (real), `burst` bytes of bucket,
/// `overhead` bytes added to each packet's length, `limit` bytes for a default bfifo child
/// (the engine sends 0: no default child, the prio qdisc is grafted right after).
pub fn tbf_options(bytes_per_s: u64, burst: u32, overhead: u16, limit: u32) -> Vec<u8> {
    // buffer: the bucket as time, in psched ticks (the kernel recomputes it from
    // TCA_TBF_BURST; sent for kernels that read the struct alone).
    let buffer_ticks =
        (u128::from(burst) * 1_000_000_000 / u128::from(bytes_per_s.max(1)) / PSCHED_TICK_NS)
            .min(u128::from(u32::MAX)) as u32;
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(bytes_per_s, overhead));
    parms.extend_from_slice(&[0u8; 12]); // peakrate: none
    parms.extend_from_slice(&limit.to_ne_bytes());
    parms.extend_from_slice(&buffer_ticks.to_ne_bytes());
    parms.extend_from_slice(&0u32.to_ne_bytes()); // mtu (peak bucket): none
    let mut out = Vec::with_capacity(64);
    put_attr(&mut out, TCA_TBF_PARMS, &parms);
    if bytes_per_s >= u64::from(u32::MAX) {
        put_attr(&mut out, TCA_TBF_RATE64, &bytes_per_s.to_ne_bytes());
    }
    put_attr(&mut out, TCA_TBF_BURST, &burst.to_ne_bytes());
    out
}

/// prio's `TCA_OPTIONS` payload: `struct tc_prio_qopt { int bands = 2; u8 priomap[16] }`
/// with every priority on band index 1 (20:2, data), then the empty nested attribute `tc`
/// appends (`addattr_nest_compat`).
pub fn prio_options() -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&2i32.to_ne_bytes());
    out.extend_from_slice(&[1u8; 16]);
    put_attr(&mut out, TCA_OPTIONS, &[]);
    out
}

/// pfifo's `TCA_OPTIONS` payload: `struct tc_fifo_qopt { u32 limit }`, in packets.
pub fn pfifo_options(limit_packets: u32) -> Vec<u8> {
    limit_packets.to_ne_bytes().to_vec()
}

/// The u32 filter's `TCA_OPTIONS` payload: classid 20:1, one key matching the IPv4 TOS
/// byte's top two bits (DSCP 48–63: CS6, CS7 and what lies between), terminal.
pub fn class_a_filter_options() -> Vec<u8> {
    let mut sel = Vec::with_capacity(32);
    // struct tc_u32_sel { flags, offshift, nkeys, (pad), offmask be16, off, offoff, hoff,
    // hmask be32 }
    sel.extend_from_slice(&[TC_U32_TERMINAL, 0, 1, 0]);
    sel.extend_from_slice(&[0u8; 12]);
    // struct tc_u32_key { mask be32, val be32, off int, offmask int }: the TOS byte is the
    // second byte of the IPv4 header's first word.
    sel.extend_from_slice(&0x00c0_0000u32.to_be_bytes());
    sel.extend_from_slice(&0x00c0_0000u32.to_be_bytes());
    sel.extend_from_slice(&0i32.to_ne_bytes());
    sel.extend_from_slice(&0i32.to_ne_bytes());
    let mut out = Vec::with_capacity(48);
    put_attr(
        &mut out,
        TCA_U32_CLASSID,
        &u32::from(CLASS_A_BAND).to_ne_bytes(),
    );
    put_attr(&mut out, TCA_U32_SEL, &sel);
    out
}

/// An `RTM_NEWQDISC` request for `kind` at `parent` with `handle` on `ifindex`, flags
/// REQUEST | ACK | CREATE | REPLACE (`tc qdisc replace`).
pub fn qdisc_request(
    ifindex: u32,
    parent: TcHandle,
    handle: TcHandle,
    kind: &str,
    options: Vec<u8>,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = parent;
    msg.header.handle = handle;
    msg.attributes.push(TcAttribute::Kind(kind.to_string()));
    msg.attributes
        .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    req
}

/// The `RTM_NEWTFILTER` request that sends DSCP ≥ 48 to band 20:1 (`tc filter add dev …
/// parent 20: protocol ip pref 1 u32 match ip dsfield 0xc0 0xc0 flowid 20:1`, flags
/// included).
pub fn filter_request(ifindex: u32) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = PRIO;
    // tcm_info: preference in the upper half, protocol (network order) in the lower.
    msg.header.info = (u32::from(FILTER_PREF) << 16) | u32::from(ETH_P_IP.to_be());
    msg.attributes.push(TcAttribute::Kind("u32".to_string()));
    msg.attributes.push(TcAttribute::Other(DefaultNla::new(
        TCA_OPTIONS,
        class_a_filter_options(),
    )));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewTrafficFilter(msg));
    // `tc filter add`: the prio qdisc was just created, so the filter is new.
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_rate64_only_when_the_rate_does_not_fit() {
        let small = tbf_options(25_000_000, burst_bytes(), 0, 0);
        assert_eq!(small.len(), 4 + 36 + 8);
        let big = tbf_options(5_000_000_000, burst_bytes(), 0, 0);
        assert_eq!(big.len(), 4 + 36 + 12 + 8);
        // The struct's rate saturates; the attribute carries the rate.
        assert_eq!(&big[4 + 8..4 + 12], &u32::MAX.to_ne_bytes());
        assert_eq!(&big[44..52], &5_000_000_000u64.to_ne_bytes());
    }

    #[test]
    fn the_bucket_holds_one_full_frame_at_least() {
        assert!(burst_bytes() >= FRAME_BYTES);
    }
}
