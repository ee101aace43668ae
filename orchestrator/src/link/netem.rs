//! The netem engine: a [`LinkModel`] carried by the kernel's `sch_netem` qdisc, configured
//! over rtnetlink (no `tc` process).
//!
//! The netlink crates know nothing of netem's options, so we encode them here, byte for byte
//! as iproute2's `tc` does (golden bytes captured from `tc` in `tests/golden/netem/`):
//!
//! ```text
//! TCA_OPTIONS = struct tc_netem_qopt            (24 bytes, NOT an attribute, no padding)
//!               TCA_NETEM_CORR      (if any correlation ≠ 0)
//!               TCA_NETEM_REORDER   (if reorder > 0)
//!               TCA_NETEM_CORRUPT   (if corrupt > 0)
//!               TCA_NETEM_LOSS      (nested, NETEM_LOSS_GE, for Gilbert–Elliott)
//!               TCA_NETEM_LATENCY64 (only if the 32-bit ticks overflow, delay ≥ 274.9 s)
//!               TCA_NETEM_RATE64    (if the rate does not fit 32 bits of bytes/s)
//!               TCA_NETEM_RATE      (if a rate is set)
//!               TCA_NETEM_DELAY_DIST (normal/pareto/paretonormal table, see `netem_dist.rs`)
//!               TCA_NETEM_PRNG_SEED (always; kernels before 6.3 ignore it)
//! ```
//!
//! The kernel (`netem_change` → `parse_attr`) reads the fixed struct first and parses the
//! attributes that follow it with `nla_parse` at offset `NLA_ALIGN(sizeof(qopt))`.
//!
//! Units: the legacy struct holds delays in psched ticks (64 ns, `PSCHED_SHIFT` = 6) and
//! probabilities as fractions of `u32::MAX`; rates are bytes per second. All model values are
//! emulated; delays are divided and rates multiplied by `time_scale` on the way in.
//!
//! Queue limit: netem keeps every delayed packet in its own queue, whose `limit` (packets)
//! defaults to 1000 — a 1 Gbit/s link at 50 ms already holds ~4000 full-size frames, and a
//! light-second link far more, so a default limit drops silently. [`queue_limit`] sizes it
//! from rate × delay, clamps it, and says whether it clamped.
//!
//! Limits we enforce because the kernel would otherwise change the link silently: jitter is
//! capped by netem at `INT_MAX` ns (≈ 2.147 s real), so larger jitter is an error
//! ([`NetemError::JitterTooLarge`]); there is then no need for TCA_NETEM_JITTER64.
//! Not encoded: TCA_NETEM_SLOT (slotting), TCA_NETEM_ECN, the 4-state GI loss model, and
//! cell-size rate accounting — the model has no such fields.
//!
//! Semantics checked on a real kernel (Debian 6.1, `tests/vm/netem-vm.sh`): every attribute
//! above is accepted and read back as sent, and Gilbert–Elliott loss with `loss_bad` = 1
//! measures p/(p+r), i.e. `h` = 1 − loss_bad is the chance to *deliver* in the bad state.
//!
//! Replacing over an existing netem (`netem_change`) keeps every optional attribute the new
//! request leaves out — a rate, reorder, corruption, correlations, a delay table — so
//! [`apply`] sends [`encode_replacing`]: the same bytes plus those attributes zeroed (and a
//! uniform table where one is needed). [`encode_options`] stays `tc`'s exact request.
//!
//! Ownership: we only ever *replace* the root qdisc of an interface (NLM_F_CREATE |
//! NLM_F_REPLACE, DESIGN.md / STYLE.md 11), so re-applying a model is a diff, not a teardown,
//! and [`remove`] deletes the root qdisc only when it is netem. Transient errnos (EBUSY,
//! EAGAIN, ENOBUFS, EINTR) are retried a few times with a short backoff.

use std::fmt;
use std::path::Path;

use futures::StreamExt;
use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption, TcStats2};
use netlink_packet_route::RouteNetlinkMessage;

use lightcone_link::model::{LinkModel, LossModel};

#[path = "netem_dist.rs"]
pub mod dist;
#[path = "netem_prio.rs"]
pub mod prio;

/// `TCA_OPTIONS` in a `tcmsg`.
const TCA_OPTIONS: u16 = 2;
const TCA_NETEM_CORR: u16 = 1;
const TCA_NETEM_DELAY_DIST: u16 = 2;
const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_LOSS: u16 = 5;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_PRNG_SEED: u16 = 14;
/// Inside TCA_NETEM_LOSS: the Gilbert–Elliott parameters (`struct tc_netem_gemodel`).
const NETEM_LOSS_GE: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
/// `sizeof(struct tc_netem_qopt)`: six u32.
const QOPT_LEN: usize = 24;
/// One psched tick in ns (`PSCHED_SHIFT` = 6 since Linux 2.6.31).
const PSCHED_TICK_NS: u64 = 64;

/// Largest jitter netem honours: the kernel silently caps it at `INT_MAX` ns.
pub const MAX_JITTER_NS: u64 = i32::MAX as u64;
/// netem's default queue limit (what `tc` sends without `limit`); also our floor.
pub const DEFAULT_LIMIT_PACKETS: u32 = 1000;
/// Upper bound on the queue limit we configure: 2²⁰ packets. netem itself accepts any u32,
/// but every queued packet pins an skb (≈ 1–3 KiB of kernel memory with full-size frames),
/// so 2²⁰ packets can pin gigabytes; links that need more belong on the wire engine.
pub const MAX_LIMIT_PACKETS: u32 = 1 << 20;
/// Packet size assumed when turning a rate × delay byte count into packets: a minimal
/// Ethernet frame, so the limit holds the worst case (all small packets at full rate).
pub const SIZING_PACKET_BYTES: u64 = 64;
/// Packet rate assumed for links without a rate limit: above what an unshaped veth carries on
/// our 2-core CI machine (≈ 160 kpps, MACHINE.md).
pub const ASSUMED_UNLIMITED_PPS: u64 = 250_000;
/// Frame size used to turn `queue_limit_bytes` into packets (netem only counts packets).
pub const BYTE_LIMIT_FRAME_BYTES: u64 = 1514;

/// Errors of the netem engine. Encoding errors change nothing; for netlink errors, the
/// kernel applies a qdisc replace atomically, so a failed [`apply`] of a link without a rate
/// leaves the previous root qdisc in place. On a link with a rate, a step of the tree below
/// netem that fails takes the tree down: the link is left with the kernel's default qdisc.
#[derive(Debug, thiserror::Error)]
pub enum NetemError {
    /// `time_scale` must be finite and positive. Nothing was changed.
    #[error("time_scale must be finite and > 0, got {0}")]
    BadTimeScale(f64),
    /// netem reorders by sending some packets without the delay, so reordering needs a
    /// delay (tc refuses the same). Nothing was changed.
    #[error(
        "reorder needs a delay > 0 on the netem engine (it sends reordered packets undelayed)"
    )]
    ReorderWithoutDelay,
    /// netem caps jitter at `INT_MAX` ns (≈ 2.147 s real; `netem_change`, "capping jitter to
    /// the range acceptable by tabledist()") without telling anyone; we refuse instead of
    /// shaping a different link than the model. Use the wire engine. Nothing was changed.
    #[error(
        "jitter of {jitter_ns} ns (real time) exceeds netem's cap of {MAX_JITTER_NS} ns; \
         use the wire engine or a larger time_scale"
    )]
    JitterTooLarge { jitter_ns: u64 },
    /// The kernel does not know the qdisc kind "netem" (no `sch_netem`, not loadable).
    /// Nothing was changed.
    #[error("the kernel has no sch_netem qdisc (ifindex {ifindex}): {message}")]
    NotSupported { ifindex: u32, message: String },
    /// The kernel refused a request. For `apply`, see the enum's note on what is left.
    #[error("netem {op} on ifindex {ifindex} failed: {source}")]
    Netlink {
        op: &'static str,
        ifindex: u32,
        #[source]
        source: rtnetlink::Error,
    },
    /// On a link with a rate the engine shapes the rate with tbf in front of a prio qdisc
    /// ([`prio`]), whose per-packet overhead is unsigned. Nothing was changed.
    #[error(
        "packet_overhead_bytes {0} is negative: on a link with a rate the netem engine \
         shapes with tbf (Class A before data), which adds 0..=65535 bytes a packet; use the \
         wire engine or an overhead >= 0"
    )]
    NegativeOverhead(i32),
    /// The interface's root qdisc is not netem (nothing of ours to read).
    #[error(
        "ifindex {0} has no netem root qdisc (or, for a band's counters, no rated tree below it)"
    )]
    NotNetem(u32),
    /// The netlink socket could not be opened (used by [`kernel_has_netem`]).
    #[error("rtnetlink connection: {0}")]
    Connection(#[from] std::io::Error),
}

impl NetemError {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetemError::Netlink { source, .. } => netlink_errno(source),
            _ => None,
        }
    }
}

fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// How the queue limit was chosen; see [`queue_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    /// The value sent to the kernel.
    pub packets: u32,
    /// What the sizing rule asked for before clamping to
    /// [`DEFAULT_LIMIT_PACKETS`]..=[`MAX_LIMIT_PACKETS`] (or the user's value).
    pub wanted_packets: u64,
    /// True if `packets < wanted_packets`: long delays at full rate will drop at the queue.
    pub clamped: bool,
}

/// The netem queue limit for `model` at `time_scale`.
///
/// * `queue_limit_packets` given: used as is (at least 1, at most [`MAX_LIMIT_PACKETS`]).
/// * otherwise: packets in flight over the longest delay (delay + jitter, real time) plus
///   [`DEFAULT_LIMIT_PACKETS`] of headroom for bursts, where "in flight" is
///   rate × delay ÷ [`SIZING_PACKET_BYTES`] with a rate, or
///   [`ASSUMED_UNLIMITED_PPS`] × delay without one; clamped to
///   [`DEFAULT_LIMIT_PACKETS`]..=[`MAX_LIMIT_PACKETS`].
/// * `queue_limit_bytes` given: additionally capped at bytes ÷ [`BYTE_LIMIT_FRAME_BYTES`]
///   (netem counts packets only, so a byte limit is exact for full-size frames and stricter
///   for small ones).
pub fn queue_limit(model: &LinkModel, time_scale: f64) -> Result<QueueLimit, NetemError> {
    check_time_scale(time_scale)?;
    let wanted = match model.queue_limit_packets {
        Some(p) => u64::from(p.max(1)),
        None => {
            let max_delay_s = (real_ns(model.delay_ns, time_scale) as f64
                + real_ns(model.jitter_ns, time_scale) as f64)
                / 1e9;
            let in_flight = match real_rate_bytes_per_s(model, time_scale) {
                Some(bytes_per_s) => bytes_per_s as f64 * max_delay_s / SIZING_PACKET_BYTES as f64,
                None => ASSUMED_UNLIMITED_PPS as f64 * max_delay_s,
            };
            (in_flight.ceil() as u64).saturating_add(u64::from(DEFAULT_LIMIT_PACKETS))
        }
    };
    let mut packets = wanted.clamp(1, u64::from(MAX_LIMIT_PACKETS));
    if let Some(bytes) = model.queue_limit_bytes {
        packets = packets.min((bytes / BYTE_LIMIT_FRAME_BYTES).max(1));
    }
    Ok(QueueLimit {
        packets: packets as u32,
        wanted_packets: wanted,
        clamped: packets < wanted,
    })
}

fn check_time_scale(time_scale: f64) -> Result<(), NetemError> {
    if time_scale.is_finite() && time_scale > 0.0 {
        Ok(())
    } else {
        Err(NetemError::BadTimeScale(time_scale))
    }
}

/// Emulated ns → real ns.
fn real_ns(emulated_ns: u64, time_scale: f64) -> u64 {
    if time_scale == 1.0 {
        emulated_ns
    } else {
        (emulated_ns as f64 / time_scale).round() as u64
    }
}

/// Emulated bits/s → real bytes/s (a compressed second carries the same bits).
fn real_rate_bytes_per_s(model: &LinkModel, time_scale: f64) -> Option<u64> {
    model.rate_bps.map(|bps| {
        if time_scale == 1.0 {
            bps / 8
        } else {
            (bps as f64 * time_scale / 8.0).round() as u64
        }
    })
}

/// A probability as netem stores it: a fraction of `u32::MAX`, rounded like C's `rint`.
fn prob_u32(p: f64) -> u32 {
    if p.is_nan() {
        return 0;
    }
    (p.clamp(0.0, 1.0) * f64::from(u32::MAX)).round_ties_even() as u32
}

/// ns → psched ticks for the legacy 32-bit fields, saturating (the 64-bit attribute then
/// carries the real value).
fn ticks_u32(ns: u64) -> (u32, bool) {
    let ticks = ns / PSCHED_TICK_NS;
    match u32::try_from(ticks) {
        Ok(t) if t < u32::MAX => (t, false),
        _ => (u32::MAX, true),
    }
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    let len16 = u16::try_from(len).expect("netem attribute larger than 64 KiB: encoder bug");
    buf.extend_from_slice(&len16.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// The `TCA_OPTIONS` payload (`tc_netem_qopt` followed by `TCA_NETEM_*` attributes) for
/// `model` at `time_scale`. Pure; byte-compatible with iproute2 6.1's `tc` (see
/// `tests/netem_golden.rs`), plus a trailing `TCA_NETEM_PRNG_SEED` carrying `model.seed`.
pub fn encode_options(model: &LinkModel, time_scale: f64) -> Result<Vec<u8>, NetemError> {
    encode(model, time_scale, Sticky::AsTc, RateIn::Netem)
}

/// Where a rated link's rate is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateIn {
    /// In netem (`TCA_NETEM_RATE`), as `tc … netem rate R` does.
    Netem,
    /// In the tbf below netem, in front of the prio qdisc ([`prio`]): netem gets no rate
    /// (but the queue limit the rate calls for).
    Tbf,
}

/// What to do with the attributes `netem_change` keeps from the previous configuration when
/// a request leaves them out (correlations, reorder, corrupt, rate, the delay table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sticky {
    /// Leave out what the model does not use, as `tc` does: right for a new qdisc only.
    AsTc,
    /// Send every sticky attribute, zeroed when unused, so a replace over an existing netem
    /// leaves nothing of the old model behind. `uniform_table`: also send a uniform delay
    /// table when the model's jitter is uniform (the kernel cannot drop a table once set).
    Reset { uniform_table: bool },
}

/// The `TCA_OPTIONS` payload that makes an existing netem qdisc carry exactly `model`.
///
/// `tc qdisc replace` over an existing netem is `netem_change`, which updates only the
/// attributes present: a rate, reorder, corruption or correlation from the previous model
/// would silently stay (found in the VM: a 40 Gbit/s rate left behind a 499 s packet made the
/// next model lose everything). This encoding is [`encode_options`] plus those attributes
/// zeroed when unused; with `uniform_table`, uniform jitter travels as an explicit table
/// ([`dist::uniform_table`]) because a Normal/Pareto table, once loaded, cannot be removed.
pub fn encode_replacing(
    model: &LinkModel,
    time_scale: f64,
    uniform_table: bool,
) -> Result<Vec<u8>, NetemError> {
    encode(
        model,
        time_scale,
        Sticky::Reset { uniform_table },
        RateIn::Netem,
    )
}

/// [`encode_replacing`] for the netem of a rated link's tree ([`prio`]): the model without
/// its rate (the tbf below netem carries it), with the queue limit of the whole model.
pub fn encode_without_rate(
    model: &LinkModel,
    time_scale: f64,
    uniform_table: bool,
) -> Result<Vec<u8>, NetemError> {
    encode(
        model,
        time_scale,
        Sticky::Reset { uniform_table },
        RateIn::Tbf,
    )
}

fn encode(
    model: &LinkModel,
    time_scale: f64,
    sticky: Sticky,
    rate_in: RateIn,
) -> Result<Vec<u8>, NetemError> {
    let reset = matches!(sticky, Sticky::Reset { .. });
    check_time_scale(time_scale)?;
    let delay_ns = real_ns(model.delay_ns, time_scale);
    let jitter_ns = real_ns(model.jitter_ns, time_scale);
    let (latency_ticks, latency_wide) = ticks_u32(delay_ns);
    if jitter_ns > MAX_JITTER_NS {
        return Err(NetemError::JitterTooLarge { jitter_ns });
    }
    // ≤ 2³¹ ns, so it fits the legacy field: TCA_NETEM_JITTER64 is never needed.
    let jitter_ticks = (jitter_ns / PSCHED_TICK_NS) as u32;
    let limit = queue_limit(model, time_scale)?;

    let (loss, loss_corr) = match model.loss {
        LossModel::Random {
            probability,
            correlation,
        } => (prob_u32(probability), prob_u32(correlation)),
        LossModel::None | LossModel::GilbertElliott { .. } => (0, 0),
    };
    let reordering = model.reorder.probability > 0.0;
    if reordering && delay_ns == 0 {
        return Err(NetemError::ReorderWithoutDelay);
    }
    // The kernel reorders only with gap ≥ 1 (gap 0 disables it); tc makes the same default.
    let gap = if reordering {
        model.reorder_gap.max(1)
    } else {
        0
    };

    let mut out = Vec::with_capacity(QOPT_LEN + 64);
    // struct tc_netem_qopt { latency, limit, loss, gap, duplicate, jitter }
    out.extend_from_slice(&u32s(&[
        latency_ticks,
        limit.packets,
        loss,
        gap,
        prob_u32(model.duplicate.probability),
        jitter_ticks,
    ]));

    let corr = [
        prob_u32(model.jitter_correlation),
        loss_corr,
        prob_u32(model.duplicate.correlation),
    ];
    if reset || corr.iter().any(|&c| c != 0) {
        put_attr(&mut out, TCA_NETEM_CORR, &u32s(&corr));
    }
    if reordering {
        let r = [
            prob_u32(model.reorder.probability),
            prob_u32(model.reorder.correlation),
        ];
        put_attr(&mut out, TCA_NETEM_REORDER, &u32s(&r));
    } else if reset {
        put_attr(&mut out, TCA_NETEM_REORDER, &u32s(&[0, 0]));
    }
    if model.corrupt.probability > 0.0 {
        let c = [
            prob_u32(model.corrupt.probability),
            prob_u32(model.corrupt.correlation),
        ];
        put_attr(&mut out, TCA_NETEM_CORRUPT, &u32s(&c));
    } else if reset {
        put_attr(&mut out, TCA_NETEM_CORRUPT, &u32s(&[0, 0]));
    }
    if let LossModel::GilbertElliott {
        p,
        r,
        loss_bad,
        loss_good,
    } = model.loss
    {
        // struct tc_netem_gemodel { p, r, h, k1 }: h is the chance to *deliver* in the bad
        // state (1 − loss_bad), k1 the chance to lose in the good state (tc's "1-k").
        let mut nested = Vec::with_capacity(20);
        let ge = [
            prob_u32(p),
            prob_u32(r),
            prob_u32(1.0 - loss_bad),
            prob_u32(loss_good),
        ];
        put_attr(&mut nested, NETEM_LOSS_GE, &u32s(&ge));
        put_attr(&mut out, TCA_NETEM_LOSS | NLA_F_NESTED, &nested);
    }
    if latency_wide {
        put_attr(
            &mut out,
            TCA_NETEM_LATENCY64,
            &to_s64(delay_ns).to_ne_bytes(),
        );
    }
    let netem_rate = match rate_in {
        RateIn::Netem => real_rate_bytes_per_s(model, time_scale),
        RateIn::Tbf => None,
    };
    if let Some(bytes_per_s) = netem_rate {
        let rate32 = match u32::try_from(bytes_per_s) {
            Ok(r) if r < u32::MAX => r,
            _ => {
                put_attr(&mut out, TCA_NETEM_RATE64, &bytes_per_s.to_ne_bytes());
                u32::MAX
            }
        };
        // struct tc_netem_rate { u32 rate; s32 packet_overhead; u32 cell_size; s32 cell_overhead }
        let mut r = Vec::with_capacity(16);
        r.extend_from_slice(&rate32.to_ne_bytes());
        r.extend_from_slice(&model.packet_overhead_bytes.to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes());
        r.extend_from_slice(&0i32.to_ne_bytes());
        put_attr(&mut out, TCA_NETEM_RATE, &r);
    } else if reset {
        // struct tc_netem_rate all zero: no rate, no overhead, no cells.
        put_attr(&mut out, TCA_NETEM_RATE, &[0; 16]);
    }
    if jitter_ns > 0 {
        let table = match (dist::table(model.distribution), sticky) {
            (Some(t), _) => Some(t),
            (
                None,
                Sticky::Reset {
                    uniform_table: true,
                },
            ) => Some(dist::uniform_table()),
            (None, _) => None,
        };
        if let Some(table) = table {
            let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_ne_bytes()).collect();
            put_attr(&mut out, TCA_NETEM_DELAY_DIST, &bytes);
        }
    }
    put_attr(&mut out, TCA_NETEM_PRNG_SEED, &model.seed.to_ne_bytes());
    Ok(out)
}

fn to_s64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// The `RTM_NEWQDISC` message [`apply`] sends (root qdisc of `ifindex`, kind netem).
pub fn new_qdisc_message(ifindex: u32, options: Vec<u8>) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::ROOT;
    msg.attributes.push(TcAttribute::Kind("netem".to_string()));
    // netem's options are a struct followed by attributes, not a list of attributes, so they
    // travel as one opaque TCA_OPTIONS.
    msg.attributes
        .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    msg
}

/// The whole `RTM_NEWQDISC` request [`apply`] sends: `tc qdisc replace dev … root netem …`,
/// i.e. NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE (never NLM_F_EXCL: an
/// existing root qdisc is replaced, not an error). Compared byte for byte with `tc`'s request
/// in `tests/netem_golden.rs`.
pub fn replace_request(ifindex: u32, options: Vec<u8>) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(new_qdisc_message(
        ifindex, options,
    )));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    req
}

/// Sends `req` and waits for the kernel's acknowledgement.
async fn request_ack(
    handle: &rtnetlink::Handle,
    mut req: NetlinkMessage<RouteNetlinkMessage>,
) -> Result<(), rtnetlink::Error> {
    req.header.flags |= NLM_F_REQUEST | NLM_F_ACK;
    let mut attempt = 0;
    loop {
        match request_ack_once(handle, req.clone()).await {
            Err(e) if attempt < TRANSIENT_RETRIES && is_transient(&e) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// How often a transient errno is retried (10, 20, 40 ms apart).
const TRANSIENT_RETRIES: u32 = 3;

fn is_transient(e: &rtnetlink::Error) -> bool {
    matches!(
        netlink_errno(e),
        Some(libc::EBUSY | libc::EAGAIN | libc::ENOBUFS | libc::EINTR)
    )
}

async fn request_ack_once(
    handle: &rtnetlink::Handle,
    req: NetlinkMessage<RouteNetlinkMessage>,
) -> Result<(), rtnetlink::Error> {
    let mut responses = handle.clone().request(req)?;
    while let Some(msg) = responses.next().await {
        if let NetlinkPayload::Error(err) = msg.payload {
            if err.code.is_some() {
                return Err(rtnetlink::Error::NetlinkError(err));
            }
        }
    }
    Ok(())
}

/// Sets `model` (at `time_scale`) as the root qdisc of `ifindex`, replacing whatever is there
/// (`tc qdisc replace dev … root netem …`). On a link with a rate, netem carries everything
/// but the rate, and below it the tree of [`prio`] (tbf → prio → a queue a class) serialises
/// at the rate with Class A first. Applying the same model twice is harmless; applying a
/// new one changes the link in place (queued packets stay queued) and nothing of the
/// previous model survives ([`encode_replacing`]; a rate that went away takes its tree with
/// it).
pub async fn apply(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    model: &LinkModel,
    time_scale: f64,
) -> Result<(), NetemError> {
    check_time_scale(time_scale)?;
    let rate = real_rate_bytes_per_s(model, time_scale);
    // Encode everything before changing anything: an encoding error changes nothing.
    let tbf = match rate {
        Some(bytes_per_s) => {
            let overhead = u16::try_from(model.packet_overhead_bytes)
                .map_err(|_| NetemError::NegativeOverhead(model.packet_overhead_bytes))?;
            Some(prio::tbf_options(
                bytes_per_s.max(1),
                prio::burst_bytes(),
                overhead,
                0,
            ))
        }
        None => None,
    };
    // Only uniform jitter over an existing netem needs to know what is there: it may hold a
    // table from an earlier model that only an explicit uniform table replaces.
    let uniform_table = model.jitter_ns > 0
        && dist::table(model.distribution).is_none()
        && match root_qdisc(handle, ifindex).await {
            Ok(root) => root.as_ref().is_some_and(is_netem),
            Err(_) => true,
        };
    let options = match rate {
        Some(_) => encode_without_rate(model, time_scale, uniform_table)?,
        None => encode_replacing(model, time_scale, uniform_table)?,
    };
    request_ack(handle, replace_request(ifindex, options))
        .await
        .map_err(|source| refused("replace", ifindex, source))?;
    // What is below our netem now (one dump): its handle (the kernel numbers it) and our
    // tbf, if any.
    let now = qdiscs(handle, ifindex).await?;
    let Some(root) = now.iter().find(|tc| tc.header.parent == TcHandle::ROOT) else {
        return Err(NetemError::NotNetem(ifindex));
    };
    let netem_class = TcHandle {
        major: root.header.handle.major,
        minor: 1,
    };
    let tbf_below = now.iter().any(|tc| {
        tc.header.parent == netem_class && tc.header.handle == prio::TBF && is_kind(tc, "tbf")
    });
    match tbf {
        None if tbf_below => delete_child(handle, ifindex, netem_class, prio::TBF).await,
        None => Ok(()),
        Some(tbf) => {
            let mut steps = vec![(
                "replace tbf",
                prio::qdisc_request(ifindex, netem_class, prio::TBF, "tbf", tbf),
            )];
            if !tbf_below {
                steps.push((
                    "add prio",
                    prio::qdisc_request(
                        ifindex,
                        prio::TBF_CLASS,
                        prio::PRIO,
                        "prio",
                        prio::prio_options(),
                    ),
                ));
                for (band, queue) in [
                    (prio::CLASS_A_BAND, prio::CLASS_A_QUEUE),
                    (prio::DATA_BAND, prio::DATA_QUEUE),
                ] {
                    steps.push((
                        "add band queue",
                        prio::qdisc_request(
                            ifindex,
                            band,
                            queue,
                            "pfifo",
                            prio::pfifo_options(prio::BAND_LIMIT_PACKETS),
                        ),
                    ));
                }
                steps.push(("add class-A filter", prio::filter_request(ifindex)));
            }
            for (op, req) in steps {
                if let Err(source) = request_ack(handle, req).await {
                    // Half a tree would be a link without its rate or its priority: leave
                    // the kernel's default qdisc instead, and say what failed.
                    let _ = delete_root(handle, ifindex).await;
                    return Err(refused(op, ifindex, source));
                }
            }
            Ok(())
        }
    }
}

/// A kernel refusal as an error: ENOENT from `qdisc_create` is "Specified qdisc kind is
/// unknown" (sch_netem, or sch_tbf/sch_prio/cls_u32 for a rated link, neither built in nor
/// loadable).
fn refused(op: &'static str, ifindex: u32, source: rtnetlink::Error) -> NetemError {
    if netlink_errno(&source) == Some(libc::ENOENT) {
        NetemError::NotSupported {
            ifindex,
            message: format!("{op}: {source}"),
        }
    } else {
        NetemError::Netlink {
            op,
            ifindex,
            source,
        }
    }
}

/// Deletes the qdisc `child` grafted at `parent` (netem then sends without a child again).
async fn delete_child(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    parent: TcHandle,
    child: TcHandle,
) -> Result<(), NetemError> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = parent;
    msg.header.handle = child;
    let req = NetlinkMessage::from(RouteNetlinkMessage::DelQueueDiscipline(msg));
    match request_ack(handle, req).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(netlink_errno(&e), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
        Err(source) => Err(NetemError::Netlink {
            op: "delete tbf",
            ifindex,
            source,
        }),
    }
}

/// The root qdisc of `ifindex`, if the kernel reports one.
async fn root_qdisc(
    handle: &rtnetlink::Handle,
    ifindex: u32,
) -> Result<Option<TcMessage>, NetemError> {
    find_qdisc(handle, ifindex, |tc| tc.header.parent == TcHandle::ROOT).await
}

/// The first qdisc of `ifindex` that `pred` accepts, from one dump.
async fn find_qdisc(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    pred: impl Fn(&TcMessage) -> bool,
) -> Result<Option<TcMessage>, NetemError> {
    Ok(qdiscs(handle, ifindex)
        .await?
        .into_iter()
        .find(|tc| pred(tc)))
}

/// Every qdisc of `ifindex`, from one dump of the namespace's qdiscs.
async fn qdiscs(handle: &rtnetlink::Handle, ifindex: u32) -> Result<Vec<TcMessage>, NetemError> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetQueueDiscipline(
        TcMessage::with_index(ifindex as i32),
    ));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let err = |source| NetemError::Netlink {
        op: "dump",
        ifindex,
        source,
    };
    let mut responses = handle.clone().request(req).map_err(err)?;
    let mut found = Vec::new();
    // Drain the whole dump, so the request completes cleanly.
    while let Some(msg) = responses.next().await {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewQueueDiscipline(tc))
                if tc.header.index == ifindex as i32 =>
            {
                found.push(tc);
            }
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(err(rtnetlink::Error::NetlinkError(e)))
            }
            _ => {}
        }
    }
    Ok(found)
}

fn is_kind(tc: &TcMessage, kind: &str) -> bool {
    tc.attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == kind))
}

fn is_netem(tc: &TcMessage) -> bool {
    is_kind(tc, "netem")
}

/// Removes the netem root qdisc of `ifindex` (with the tree below it on a rated link),
/// restoring the interface's default qdisc. Idempotent: a missing interface, or a root qdisc that is not
/// ours, is Ok and left untouched.
pub async fn remove(handle: &rtnetlink::Handle, ifindex: u32) -> Result<(), NetemError> {
    let root = match root_qdisc(handle, ifindex).await {
        Ok(r) => r,
        Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !root.as_ref().is_some_and(is_netem) {
        return Ok(());
    }
    delete_root(handle, ifindex).await
}

/// Deletes the root qdisc of `ifindex`, whatever it is; gone already is Ok.
async fn delete_root(handle: &rtnetlink::Handle, ifindex: u32) -> Result<(), NetemError> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::ROOT;
    let req = NetlinkMessage::from(RouteNetlinkMessage::DelQueueDiscipline(msg));
    match request_ack(handle, req).await {
        Ok(()) => Ok(()),
        // Gone meanwhile (interface or qdisc): the goal state holds.
        Err(e) if matches!(netlink_errno(&e), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
        Err(source) => Err(NetemError::Netlink {
            op: "delete",
            ifindex,
            source,
        }),
    }
}

/// Counters of a netem root qdisc (TCA_STATS2), cumulative since it was created.
///
/// netem counts its loss-model drops and queue-limit drops in one `drops` counter; they are
/// not separable from the kernel's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetemStats {
    /// Packets handed to the device after the delay.
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// Packets dropped: loss model plus queue overflow.
    pub dropped_packets: u64,
    /// Packets currently held (delayed) in the qdisc.
    pub queue_packets: u32,
    pub backlog_bytes: u32,
    pub requeues: u32,
    pub overlimits: u32,
}

/// The kernel's current `TCA_OPTIONS` payload of the netem root qdisc on `ifindex`, in the
/// layout [`encode_options`] writes (the kernel adds attributes it always dumps, e.g.
/// TCA_NETEM_LATENCY64/JITTER64); [`NetemError::NotNetem`] if the root is something else.
pub async fn current_options(
    handle: &rtnetlink::Handle,
    ifindex: u32,
) -> Result<Vec<u8>, NetemError> {
    let tc = match root_qdisc(handle, ifindex).await? {
        Some(tc) if is_netem(&tc) => tc,
        _ => return Err(NetemError::NotNetem(ifindex)),
    };
    for attr in &tc.attributes {
        // netlink-packet-route keeps unknown kinds' TCA_OPTIONS as one opaque attribute.
        if let TcAttribute::Options(opts) = attr {
            if let [TcOption::Other(nla)] = opts.as_slice() {
                let mut bytes = vec![0; nla.value_len()];
                nla.emit_value(&mut bytes);
                return Ok(bytes);
            }
        }
    }
    Err(NetemError::NotNetem(ifindex))
}

/// Reads the counters of the netem root qdisc on `ifindex` (on a rated link they cover the
/// tree below it: netem counts what its child drops and holds); [`NetemError::NotNetem`] if
/// the root qdisc is something else.
pub async fn stats(handle: &rtnetlink::Handle, ifindex: u32) -> Result<NetemStats, NetemError> {
    match root_qdisc(handle, ifindex).await? {
        Some(tc) if is_netem(&tc) => Ok(read_stats(&tc)),
        _ => Err(NetemError::NotNetem(ifindex)),
    }
}

/// The counters of the Class-A band's queue (21: at 20:1) on a rated link: what the
/// filter sent ahead of data; [`NetemError::NotNetem`] if `ifindex` has no such tree.
pub async fn class_a_stats(
    handle: &rtnetlink::Handle,
    ifindex: u32,
) -> Result<NetemStats, NetemError> {
    let all = qdiscs(handle, ifindex).await?;
    let root_is_netem = all
        .iter()
        .any(|tc| tc.header.parent == TcHandle::ROOT && is_netem(tc));
    all.iter()
        .find(|tc| {
            root_is_netem
                && tc.header.parent == prio::CLASS_A_BAND
                && tc.header.handle == prio::CLASS_A_QUEUE
        })
        .map(read_stats)
        .ok_or(NetemError::NotNetem(ifindex))
}

fn read_stats(tc: &TcMessage) -> NetemStats {
    let mut s = NetemStats::default();
    let mut have_stats2 = false;
    for attr in &tc.attributes {
        if let TcAttribute::Stats2(items) = attr {
            have_stats2 = true;
            for item in items {
                match item {
                    TcStats2::Basic(b) => {
                        s.sent_packets = u64::from(b.packets);
                        s.sent_bytes = b.bytes;
                    }
                    TcStats2::Queue(q) => {
                        s.queue_packets = q.qlen;
                        s.backlog_bytes = q.backlog;
                        s.dropped_packets = u64::from(q.drops);
                        s.requeues = q.requeues;
                        s.overlimits = q.overlimits;
                    }
                    _ => {}
                }
            }
        }
    }
    if !have_stats2 {
        // Kernels always send TCA_STATS2 today; the legacy TCA_STATS is the fallback.
        for attr in &tc.attributes {
            if let TcAttribute::Stats(st) = attr {
                s.sent_packets = u64::from(st.packets);
                s.sent_bytes = st.bytes;
                s.dropped_packets = u64::from(st.drops);
                s.queue_packets = st.qlen;
                s.backlog_bytes = st.backlog;
                s.overlimits = st.overlimits;
            }
        }
    }
    s
}

/// Whether this kernel can run the netem engine, and why we think so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available { why: String },
    Unavailable { why: String },
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available { .. })
    }
    pub fn why(&self) -> &str {
        match self {
            Availability::Available { why } | Availability::Unavailable { why } => why,
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Availability::Available { why } => write!(f, "netem available: {why}"),
            Availability::Unavailable { why } => write!(f, "netem unavailable: {why}"),
        }
    }
}

/// Detects `sch_netem` for `--link-engine auto`.
///
/// The decisive test is to try it: on a dedicated thread that enters a fresh, unnamed network
/// namespace (`unshare(CLONE_NEWNET)`; it vanishes with the thread, nothing to clean up) we
/// replace the root qdisc of that namespace's `lo` with netem. The kernel loads the module
/// itself if it can (`request_module("sch_netem")`). If the probe cannot run (no
/// CAP_SYS_ADMIN/CAP_NET_ADMIN), we fall back to hints: `/sys/module/sch_netem` (loaded or
/// built in), then `modules.builtin` / `modules.dep` under `/lib/modules/$(uname -r)`.
pub fn kernel_has_netem() -> Availability {
    let probe = std::thread::Builder::new()
        .name("netem-probe".into())
        .spawn(probe_in_throwaway_netns)
        .map_err(|e| ProbeFailure::Other(format!("spawn probe thread: {e}")))
        .and_then(|h| {
            h.join()
                .map_err(|_| ProbeFailure::Other("probe thread panicked".into()))
        })
        .and_then(|r| r);
    match probe {
        Ok(()) => Availability::Available {
            why: "replaced the root qdisc of lo with netem in a throwaway network namespace".into(),
        },
        Err(ProbeFailure::Refused(e)) if e == libc::ENOENT => Availability::Unavailable {
            why: format!(
                "the kernel answers \"qdisc kind unknown\" (ENOENT) for netem; {}",
                module_hints()
            ),
        },
        Err(other) => {
            let hint = module_hints();
            let why = format!("probe failed ({other}); {hint}");
            if hint_says_present() {
                Availability::Available { why }
            } else {
                Availability::Unavailable { why }
            }
        }
    }
}

#[derive(Debug)]
enum ProbeFailure {
    /// The kernel refused the qdisc with this errno.
    Refused(i32),
    Other(String),
}

impl From<String> for ProbeFailure {
    fn from(s: String) -> Self {
        ProbeFailure::Other(s)
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Refused(errno) => write!(
                f,
                "kernel refused netem: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            ProbeFailure::Other(s) => f.write_str(s),
        }
    }
}

fn probe_in_throwaway_netns() -> Result<(), ProbeFailure> {
    // Only this thread moves; the namespace dies when the thread and its socket are gone.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("rtnetlink socket: {e}"))?;
        let task = tokio::spawn(conn);
        let lo_ifindex = 1; // loopback is always ifindex 1 in a new namespace
        let model = LinkModel {
            delay_ns: 1_000_000,
            ..LinkModel::default()
        };
        let result = apply(&handle, lo_ifindex, &model, 1.0).await;
        task.abort();
        match result {
            Ok(()) => Ok(()),
            Err(NetemError::NotSupported { .. }) => Err(ProbeFailure::Refused(libc::ENOENT)),
            Err(e) => match e.errno() {
                Some(errno) => Err(ProbeFailure::Refused(errno)),
                None => Err(ProbeFailure::Other(e.to_string())),
            },
        }
    })
}

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

fn module_listed(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .map(|s| s.lines().any(|l| l.contains("/sch_netem.ko")))
        .unwrap_or(false)
}

fn hint_says_present() -> bool {
    Path::new("/sys/module/sch_netem").exists()
        || kernel_release().is_some_and(|rel| {
            let dir = Path::new("/lib/modules").join(rel);
            module_listed(&dir.join("modules.builtin")) || module_listed(&dir.join("modules.dep"))
        })
}

fn module_hints() -> String {
    if Path::new("/sys/module/sch_netem").exists() {
        return "/sys/module/sch_netem exists (module loaded or built in)".into();
    }
    let Some(rel) = kernel_release() else {
        return "kernel release unknown (/proc/sys/kernel/osrelease unreadable)".into();
    };
    let dir = Path::new("/lib/modules").join(&rel);
    if module_listed(&dir.join("modules.builtin")) {
        format!("sch_netem is built into kernel {rel} (modules.builtin)")
    } else if module_listed(&dir.join("modules.dep")) {
        format!("sch_netem.ko is installed for kernel {rel} (modules.dep) but not loaded")
    } else if dir.exists() {
        format!(
            "sch_netem is not loaded, not built in, and not among {}'s modules",
            dir.display()
        )
    } else {
        format!(
            "sch_netem is not loaded and {} does not exist",
            dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcone_link::model::{Chance, DelayDistribution};

    fn attrs(opts: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = QOPT_LEN;
        while off + 4 <= opts.len() {
            let len = u16::from_ne_bytes([opts[off], opts[off + 1]]) as usize;
            let kind = u16::from_ne_bytes([opts[off + 2], opts[off + 3]]);
            out.push((kind, opts[off + 4..off + len].to_vec()));
            off += (len + 3) & !3;
        }
        assert_eq!(off, opts.len(), "attributes must tile the payload exactly");
        out
    }

    fn qopt(opts: &[u8]) -> [u32; 6] {
        let mut q = [0; 6];
        for (i, v) in q.iter_mut().enumerate() {
            *v = u32::from_ne_bytes(opts[4 * i..4 * i + 4].try_into().unwrap());
        }
        q
    }

    #[test]
    fn replacing_resets_every_sticky_attribute_it_does_not_use() {
        let plain = LinkModel {
            delay_ns: 10_000_000,
            ..LinkModel::default()
        };
        let fresh = attrs(&encode_options(&plain, 1.0).unwrap());
        let kinds: Vec<u16> = fresh.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            vec![TCA_NETEM_PRNG_SEED],
            "tc's bytes carry nothing unused"
        );
        let replacing = encode_replacing(&plain, 1.0, false).unwrap();
        let a = attrs(&replacing);
        for kind in [
            TCA_NETEM_CORR,
            TCA_NETEM_REORDER,
            TCA_NETEM_CORRUPT,
            TCA_NETEM_RATE,
        ] {
            let (_, v) = a
                .iter()
                .find(|(k, _)| *k == kind)
                .unwrap_or_else(|| panic!("attribute {kind} missing from a replace"));
            assert!(
                v.iter().all(|&b| b == 0),
                "attribute {kind} not zeroed: {v:?}"
            );
        }
        assert!(a.iter().all(|(k, _)| *k != TCA_NETEM_DELAY_DIST));
        assert_eq!(
            qopt(&replacing),
            qopt(&encode_options(&plain, 1.0).unwrap()),
            "the fixed struct is tc's"
        );
    }

    #[test]
    fn replacing_keeps_what_the_model_uses() {
        let m = LinkModel {
            delay_ns: 20_000_000,
            jitter_ns: 2_000_000,
            jitter_correlation: 0.25,
            reorder: Chance {
                probability: 0.1,
                correlation: 0.0,
            },
            corrupt: Chance {
                probability: 0.01,
                correlation: 0.0,
            },
            rate_bps: Some(10_000_000),
            distribution: DelayDistribution::Normal,
            ..LinkModel::default()
        };
        // Every attribute the model uses is there, so both encodings are the same bytes.
        assert_eq!(
            encode_replacing(&m, 1.0, true).unwrap(),
            encode_options(&m, 1.0).unwrap()
        );
    }

    #[test]
    fn uniform_jitter_over_an_old_table_travels_as_a_uniform_table() {
        let m = LinkModel {
            delay_ns: 20_000_000,
            jitter_ns: 2_000_000,
            ..LinkModel::default()
        };
        let find = |opts: &[u8]| {
            attrs(opts)
                .into_iter()
                .find(|(k, _)| *k == TCA_NETEM_DELAY_DIST)
                .map(|(_, v)| v)
        };
        assert!(find(&encode_replacing(&m, 1.0, false).unwrap()).is_none());
        let table = find(&encode_replacing(&m, 1.0, true).unwrap()).expect("a table");
        let values: Vec<i16> = table
            .chunks(2)
            .map(|c| i16::from_ne_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(values, dist::uniform_table());
    }

    #[test]
    fn probabilities_round_like_tc() {
        assert_eq!(prob_u32(0.01), 42_949_673);
        assert_eq!(prob_u32(0.5), 0x8000_0000);
        assert_eq!(prob_u32(1.0), u32::MAX);
        assert_eq!(prob_u32(0.0), 0);
        assert_eq!(prob_u32(-1.0), 0);
        assert_eq!(prob_u32(f64::NAN), 0);
    }

    #[test]
    fn time_scale_divides_delay_and_multiplies_rate() {
        let emulated = LinkModel {
            delay_ns: 499_000_000_000, // 1 AU of light-time
            jitter_ns: 1_000_000_000,
            rate_bps: Some(1_000_000),
            queue_limit_packets: Some(10),
            ..LinkModel::default()
        };
        let opts = encode_options(&emulated, 1000.0).unwrap();
        let q = qopt(&opts);
        assert_eq!(q[0], 499_000_000 / 64); // 499 ms real
        assert_eq!(q[5], 1_000_000 / 64); // 1 ms real
        let rate = attrs(&opts)
            .into_iter()
            .find(|(k, _)| *k == TCA_NETEM_RATE)
            .unwrap()
            .1;
        assert_eq!(
            u32::from_ne_bytes(rate[0..4].try_into().unwrap()),
            125_000_000
        );
    }

    #[test]
    fn long_delays_use_64_bit_latency_and_jitter_is_capped() {
        // 1 AU unscaled: 499 s does not fit 2³² ticks of 64 ns (274.9 s).
        let m = LinkModel {
            delay_ns: 499_000_000_000,
            jitter_ns: 1_000_000_000,
            queue_limit_packets: Some(100),
            ..LinkModel::default()
        };
        let opts = encode_options(&m, 1.0).unwrap();
        assert_eq!(qopt(&opts)[0], u32::MAX);
        assert_eq!(qopt(&opts)[5], 1_000_000_000 / 64);
        let a = attrs(&opts);
        let lat = a.iter().find(|(k, _)| *k == TCA_NETEM_LATENCY64).unwrap();
        assert_eq!(
            i64::from_ne_bytes(lat.1.clone().try_into().unwrap()),
            499_000_000_000
        );
        // Just below the edge: no 64-bit attribute (as tc).
        let short = LinkModel {
            delay_ns: 274_000_000_000,
            ..m.clone()
        };
        let opts = encode_options(&short, 1.0).unwrap();
        assert!(attrs(&opts).iter().all(|(k, _)| *k != TCA_NETEM_LATENCY64));
        // The kernel would silently cap jitter at 2³¹ − 1 ns: refuse instead.
        let wide = LinkModel {
            jitter_ns: MAX_JITTER_NS + 1,
            ..m.clone()
        };
        assert!(matches!(
            encode_options(&wide, 1.0),
            Err(NetemError::JitterTooLarge { .. })
        ));
        let at_cap = LinkModel {
            jitter_ns: MAX_JITTER_NS,
            ..m
        };
        assert!(encode_options(&at_cap, 1.0).is_ok());
    }

    #[test]
    fn queue_limit_grows_with_rate_times_delay_and_clamps() {
        let base = LinkModel {
            delay_ns: 50_000_000,
            ..LinkModel::default()
        };
        // No rate: 250 kpps × 50 ms = 12 500 packets + 1000 headroom.
        let l = queue_limit(&base, 1.0).unwrap();
        assert_eq!((l.packets, l.clamped), (13_500, false));
        // 1 Gbit/s × 50 ms = 6.25 MB = 97 657 minimal frames (+1000).
        let rated = LinkModel {
            rate_bps: Some(1_000_000_000),
            ..base.clone()
        };
        assert_eq!(queue_limit(&rated, 1.0).unwrap().packets, 98_657);
        // A light-second at 10 Gbit/s wants 19.5 M packets: clamped, and says so.
        let huge = LinkModel {
            delay_ns: 1_000_000_000,
            rate_bps: Some(10_000_000_000),
            ..base.clone()
        };
        let l = queue_limit(&huge, 1.0).unwrap();
        assert_eq!(l.packets, MAX_LIMIT_PACKETS);
        assert!(l.clamped && l.wanted_packets > 19_000_000);
        // No delay: the default.
        assert_eq!(
            queue_limit(&LinkModel::default(), 1.0).unwrap().packets,
            1000
        );
        // The user's value wins; a byte limit caps it.
        let user = LinkModel {
            queue_limit_packets: Some(300),
            queue_limit_bytes: Some(1514 * 100),
            ..base
        };
        assert_eq!(queue_limit(&user, 1.0).unwrap().packets, 100);
        assert!(queue_limit(&user, 0.0).is_err());
        assert!(queue_limit(&user, f64::NAN).is_err());
    }

    #[test]
    fn gilbert_elliott_and_reorder_rules() {
        let m = LinkModel {
            delay_ns: 10_000_000,
            loss: LossModel::GilbertElliott {
                p: 0.01,
                r: 0.25,
                loss_bad: 1.0,
                loss_good: 0.0,
            },
            reorder: Chance {
                probability: 0.1,
                correlation: 0.0,
            },
            reorder_gap: 0,
            queue_limit_packets: Some(1000),
            ..LinkModel::default()
        };
        let opts = encode_options(&m, 1.0).unwrap();
        assert_eq!(
            qopt(&opts)[2],
            0,
            "GE loss travels in TCA_NETEM_LOSS, not qopt.loss"
        );
        assert_eq!(qopt(&opts)[3], 1, "reorder without gap means gap 1");
        let a = attrs(&opts);
        let loss = &a
            .iter()
            .find(|(k, _)| *k == TCA_NETEM_LOSS | NLA_F_NESTED)
            .unwrap()
            .1;
        assert_eq!(loss.len(), 20);
        assert_eq!(u16::from_ne_bytes([loss[2], loss[3]]), NETEM_LOSS_GE);
        let h = u32::from_ne_bytes(loss[12..16].try_into().unwrap());
        assert_eq!(h, 0, "loss_bad = 1 means never deliver in the bad state");
        // The seed always travels last.
        let (k, v) = a.last().unwrap();
        assert_eq!((*k, v.len()), (TCA_NETEM_PRNG_SEED, 8));

        let no_delay = LinkModel { delay_ns: 0, ..m };
        assert!(matches!(
            encode_options(&no_delay, 1.0),
            Err(NetemError::ReorderWithoutDelay)
        ));
    }

    #[test]
    fn distribution_table_only_with_jitter() {
        let m = LinkModel {
            delay_ns: 10_000_000,
            distribution: DelayDistribution::Normal,
            queue_limit_packets: Some(1000),
            ..LinkModel::default()
        };
        let no_jitter = encode_options(&m, 1.0).unwrap();
        assert!(attrs(&no_jitter)
            .iter()
            .all(|(k, _)| *k != TCA_NETEM_DELAY_DIST));
        let with = LinkModel {
            jitter_ns: 1_000_000,
            ..m
        };
        let opts = encode_options(&with, 1.0).unwrap();
        let a = attrs(&opts);
        let table = &a
            .iter()
            .find(|(k, _)| *k == TCA_NETEM_DELAY_DIST)
            .unwrap()
            .1;
        assert_eq!(table.len(), 2 * dist::DIST_TABLE_LEN);
    }

    #[test]
    fn message_is_a_root_netem_with_opaque_options() {
        let opts = encode_options(&LinkModel::default(), 1.0).unwrap();
        let msg = new_qdisc_message(7, opts.clone());
        assert_eq!(msg.header.index, 7);
        assert_eq!(msg.header.parent, TcHandle::ROOT);
        assert!(is_netem(&msg));
        assert!(msg.attributes.iter().any(
            |a| matches!(a, TcAttribute::Other(n) if netlink_packet_core::Nla::kind(n) == TCA_OPTIONS)
        ));
    }
}
