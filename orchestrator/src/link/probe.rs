//! `lightcone probe`: measure what a path between two namespaces actually does — RTT,
//! one-way delay each way, loss each way, loss burst length, throughput — so a user can
//! compare it with the configured link before trusting a result.
//!
//! Both ends run in this process: an echo server on a UDP socket created inside `ns_b`
//! and a client socket created inside `ns_a` (sockets stay in the namespace they were
//! made in, whichever thread uses them). All namespaces share the host's clock, so the
//! server's receive stamp gives exact one-way delays, not just RTT halves. Receive times
//! are the kernel's (`SO_TIMESTAMPNS`), so a probe thread that gets the CPU late on a busy
//! host does not inflate what it measures.
//!
//! Two phases: `count` echo probes paced every `interval` (RTT, one-way delays, loss per
//! direction, runs of consecutive a→b losses), then, if asked, a burst of
//! `throughput_packets` datagrams sent as fast as the client can, whose arrival rate at
//! `b` is the throughput. Throughput is reported in **L2 frame bits/s** (UDP payload + 42
//! bytes of UDP/IPv4/Ethernet headers), the unit a link's `rate_bps` limits (with zero
//! per-packet overhead).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::os::fd::AsRawFd;

use super::wire::{enable_rx_timestamps, monotonic_ns, realtime_ns, recv_stamped};
use crate::kernel::{KernelError, Netns};

/// Bytes of UDP + IPv4 + Ethernet headers around a probe payload.
pub const L2_OVERHEAD_BYTES: usize = 42;
/// Smallest payload: the probe header.
pub const HEADER_BYTES: usize = 29;
const MAGIC: u32 = 0x6c63_7072; // "lcpr"
const KIND_ECHO: u8 = 1;
const KIND_BURST: u8 = 2;
/// Most probes in one run (memory bound of the per-probe tables).
pub const MAX_COUNT: u32 = 10_000_000;

/// What to send.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Echo probes, at most [`MAX_COUNT`].
    pub count: u32,
    pub interval: Duration,
    /// UDP payload of an echo probe, ≥ [`HEADER_BYTES`].
    pub payload_bytes: usize,
    /// After the last probe, wait at least this long for late replies, unless every
    /// reply is in; see [`reply_wait`] for the whole rule.
    pub wait: Duration,
    /// The link's configured round trip in real time (both one-way delays, without
    /// jitter): no probe counts as lost before it could have come back.
    pub expected_rtt: Duration,
    /// The configured jitter, real time, one way (the round trip may be up to twice this
    /// longer).
    pub expected_jitter: Duration,
    /// Datagrams in the throughput burst; 0 skips the phase.
    pub throughput_packets: u32,
    pub throughput_payload_bytes: usize,
    /// UDP port of the echo server in `ns_b` (0 = any free port).
    pub port: u16,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            count: 1000,
            interval: Duration::from_millis(2),
            payload_bytes: 64,
            wait: Duration::from_millis(500),
            expected_rtt: Duration::ZERO,
            expected_jitter: Duration::ZERO,
            throughput_packets: 0,
            throughput_payload_bytes: 1000,
            port: 0,
        }
    }
}

/// What was measured. Times in real seconds; NaN where nothing was received.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    pub sent: u32,
    /// Probes that reached `b`.
    pub received_at_b: u32,
    /// Replies that came back to `a`.
    pub received: u32,
    pub rtt_mean_s: f64,
    pub rtt_p50_s: f64,
    pub rtt_p99_s: f64,
    pub rtt_min_s: f64,
    pub rtt_max_s: f64,
    pub one_way_a_to_b_mean_s: f64,
    pub one_way_b_to_a_mean_s: f64,
    /// Round-trip loss: 1 − received / sent.
    pub loss: f64,
    pub loss_a_to_b: f64,
    /// Share of probes that reached `b` whose reply was lost.
    pub loss_b_to_a: f64,
    /// Mean length of runs of consecutive probes lost a→b (NaN if none was lost).
    pub mean_loss_burst_a_to_b: f64,
    /// Number of such runs.
    pub loss_bursts_a_to_b: u32,
    /// L2 bits/s of the burst at `b`, measured first to last arrival.
    pub throughput_bps: Option<f64>,
    /// Share of the burst that did not arrive.
    pub throughput_loss: Option<f64>,
}

/// Why a probe could not run. Nothing is left behind in either case.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid probe options: {0}")]
    Options(&'static str),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProbeError {
    let what = what.into();
    move |source| ProbeError::Io { what, source }
}

struct ServerLog {
    arrived_ns: Vec<u64>,
    burst_count: u32,
    burst_first_ns: u64,
    burst_last_ns: u64,
    burst_bytes_after_first: u64,
}

const NOT_YET: u64 = u64::MAX;

fn header(buf: &mut [u8], session: u32, kind: u8, seq: u32, sent_ns: u64) {
    buf[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    buf[4..8].copy_from_slice(&session.to_be_bytes());
    buf[8] = kind;
    buf[9..13].copy_from_slice(&seq.to_be_bytes());
    buf[13..21].copy_from_slice(&sent_ns.to_be_bytes());
    buf[21..29].copy_from_slice(&0u64.to_be_bytes());
}

struct Parsed {
    kind: u8,
    seq: u32,
    sent_ns: u64,
    server_ns: u64,
}

fn parse(buf: &[u8], session: u32) -> Option<Parsed> {
    if buf.len() < HEADER_BYTES
        || buf[0..4] != MAGIC.to_be_bytes()
        || buf[4..8] != session.to_be_bytes()
    {
        return None;
    }
    let u64_at = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    Some(Parsed {
        kind: buf[8],
        seq: u32::from_be_bytes(buf[9..13].try_into().expect("4 bytes")),
        sent_ns: u64_at(13),
        server_ns: u64_at(21),
    })
}

/// Sleep until the monotonic clock reaches `t_ns` (sleep most, spin the last 100 µs).
fn sleep_until(t_ns: u64) {
    loop {
        let now = monotonic_ns();
        if now >= t_ns {
            return;
        }
        let left = t_ns - now;
        if left > 150_000 {
            std::thread::sleep(Duration::from_nanos(left - 100_000));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// How long to wait after the last probe before counting the missing replies as lost: the
/// longest of `opts.wait`, 3 × the largest RTT seen so far, and the configured round trip
/// plus twice the one-way jitter plus a margin (half the round trip, at least
/// [`RTT_MARGIN_MIN`]) for a busy host. The last probe left at the start of the wait, so
/// its reply is due one round trip later: on a 1 AU link at time scale 1,000 (998 ms) a
/// fixed 500 ms would count every probe as lost.
pub fn reply_wait(opts: &ProbeOptions, max_rtt_seen: Duration) -> Duration {
    let rtt = opts.expected_rtt + 2 * opts.expected_jitter;
    let margin = (opts.expected_rtt / 2).max(RTT_MARGIN_MIN);
    opts.wait.max(3 * max_rtt_seen).max(rtt + margin)
}

/// Least extra wait beyond the configured round trip (see [`reply_wait`]).
pub const RTT_MARGIN_MIN: Duration = Duration::from_millis(200);

/// Probe the path from `ip_a` in `ns_a` to `ip_b` in `ns_b`. Blocks for about
/// `count × interval +` [`reply_wait`] (+ the burst). Sockets and threads end before it returns.
pub fn probe(
    ns_a: &Netns,
    ip_a: Ipv4Addr,
    ns_b: &Netns,
    ip_b: Ipv4Addr,
    opts: &ProbeOptions,
) -> Result<ProbeReport, ProbeError> {
    if opts.count > MAX_COUNT || opts.throughput_packets > MAX_COUNT {
        return Err(ProbeError::Options("count above MAX_COUNT"));
    }
    if opts.payload_bytes < HEADER_BYTES
        || opts.payload_bytes > 65_000
        || (opts.throughput_packets > 0
            && !(HEADER_BYTES..=65_000).contains(&opts.throughput_payload_bytes))
    {
        return Err(ProbeError::Options("payload must be 29..=65000 bytes"));
    }
    let server = ns_b
        .run(|| UdpSocket::bind(SocketAddrV4::new(ip_b, opts.port)))?
        .map_err(io(format!("bind {ip_b}:{} in {}", opts.port, ns_b.name())))?;
    let server_addr = server.local_addr().map_err(io("server address"))?;
    let client = ns_a
        .run(|| UdpSocket::bind(SocketAddrV4::new(ip_a, 0)))?
        .map_err(io(format!("bind {ip_a} in {}", ns_a.name())))?;
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_millis(10)))
            .map_err(io("set read timeout"))?;
        // room for a few hundred ms of probes, so a probe thread that gets the CPU late
        // does not turn into loss (best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN)
        let bytes: libc::c_int = 8 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: an int socket option on a socket we own.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&bytes as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
        if !enable_rx_timestamps(s.as_raw_fd()) {
            return Err(io("SO_TIMESTAMPNS")(std::io::Error::last_os_error()));
        }
    }
    let client_addr = client.local_addr().map_err(io("client address"))?;
    server
        .connect(client_addr)
        .map_err(io(format!("connect to {client_addr}")))?;
    let session = (monotonic_ns() as u32) ^ std::process::id().rotate_left(16);
    let count = opts.count as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(ServerLog {
        arrived_ns: vec![NOT_YET; count],
        burst_count: 0,
        burst_first_ns: 0,
        burst_last_ns: 0,
        burst_bytes_after_first: 0,
    }));
    // (rtt, a→b, b→a) per seq, first reply only
    let replies = Arc::new(Mutex::new(vec![None::<(u64, u64, u64)>; count]));
    let received = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let max_rtt_ns = Arc::new(std::sync::atomic::AtomicU64::new(0));

    std::thread::scope(|s| -> Result<ProbeReport, ProbeError> {
        let server_thread = {
            let (stop, log, server) = (stop.clone(), log.clone(), &server);
            s.spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, stamp)) = recv_stamped(server.as_raw_fd(), &mut buf, 0) else {
                        continue;
                    };
                    let now = stamp.unwrap_or_else(realtime_ns);
                    let Some(p) = parse(&buf[..n], session) else {
                        continue;
                    };
                    let mut l = log.lock().expect("log");
                    match p.kind {
                        KIND_ECHO if (p.seq as usize) < l.arrived_ns.len() => {
                            let slot = &mut l.arrived_ns[p.seq as usize];
                            if *slot == NOT_YET {
                                *slot = now;
                            }
                            drop(l);
                            buf[21..29].copy_from_slice(&now.to_be_bytes());
                            let _ = server.send(&buf[..n]);
                        }
                        KIND_BURST => {
                            if l.burst_count == 0 {
                                l.burst_first_ns = now;
                            } else {
                                l.burst_bytes_after_first += (n + L2_OVERHEAD_BYTES) as u64;
                            }
                            l.burst_count += 1;
                            l.burst_last_ns = now;
                        }
                        _ => {}
                    }
                }
            })
        };
        let client_thread = {
            let (stop, replies, received, max_rtt_ns, client) = (
                stop.clone(),
                replies.clone(),
                received.clone(),
                max_rtt_ns.clone(),
                &client,
            );
            s.spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, stamp)) = recv_stamped(client.as_raw_fd(), &mut buf, 0) else {
                        continue;
                    };
                    let now = stamp.unwrap_or_else(realtime_ns);
                    let Some(p) = parse(&buf[..n], session) else {
                        continue;
                    };
                    if p.kind != KIND_ECHO || p.seq as usize >= count {
                        continue;
                    }
                    let mut r = replies.lock().expect("replies");
                    let slot = &mut r[p.seq as usize];
                    if slot.is_none() {
                        let rtt = now.saturating_sub(p.sent_ns);
                        *slot = Some((
                            rtt,
                            p.server_ns.saturating_sub(p.sent_ns),
                            now.saturating_sub(p.server_ns),
                        ));
                        received.fetch_add(1, Ordering::Relaxed);
                        max_rtt_ns.fetch_max(rtt, Ordering::Relaxed);
                    }
                }
            })
        };
        let result = (|| -> Result<(), ProbeError> {
            client
                .connect(server_addr)
                .map_err(io(format!("connect to {server_addr}")))?;
            let mut buf = vec![0u8; opts.payload_bytes];
            let start = monotonic_ns();
            let interval_ns = opts.interval.as_nanos() as u64;
            for seq in 0..opts.count {
                sleep_until(start + u64::from(seq) * interval_ns);
                header(&mut buf, session, KIND_ECHO, seq, realtime_ns());
                // A failed send is a lost probe; the report shows it as loss.
                let _ = client.send(&buf);
            }
            let last = monotonic_ns();
            loop {
                let seen = Duration::from_nanos(max_rtt_ns.load(Ordering::Relaxed));
                let wait_ns = reply_wait(opts, seen).as_nanos() as u64;
                if received.load(Ordering::Relaxed) == opts.count
                    || monotonic_ns() >= last + wait_ns
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if opts.throughput_packets > 0 {
                let mut buf = vec![0u8; opts.throughput_payload_bytes];
                for seq in 0..opts.throughput_packets {
                    header(&mut buf, session, KIND_BURST, seq, realtime_ns());
                    let _ = client.send(&buf);
                }
                // wait until the burst stops arriving
                let seen = Duration::from_nanos(max_rtt_ns.load(Ordering::Relaxed));
                let quiet_ns = reply_wait(opts, seen).as_nanos() as u64;
                let sent_done = realtime_ns();
                loop {
                    std::thread::sleep(Duration::from_millis(5));
                    let (n, lastn) = {
                        let l = log.lock().expect("log");
                        (l.burst_count, l.burst_last_ns)
                    };
                    if n == opts.throughput_packets
                        || realtime_ns() > lastn.max(sent_done) + quiet_ns
                    {
                        break;
                    }
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let _ = server_thread.join();
        let _ = client_thread.join();
        result?;

        let log = log.lock().expect("log");
        let replies = replies.lock().expect("replies");
        let got: Vec<(u64, u64, u64)> = replies.iter().flatten().copied().collect();
        let mut rtts: Vec<f64> = got.iter().map(|r| r.0 as f64 / 1e9).collect();
        rtts.sort_by(f64::total_cmp);
        let at_b = log.arrived_ns.iter().filter(|t| **t != NOT_YET).count() as u32;
        let mut bursts = Vec::new();
        let mut run = 0u32;
        for t in &log.arrived_ns {
            if *t == NOT_YET {
                run += 1;
            } else if run > 0 {
                bursts.push(f64::from(run));
                run = 0;
            }
        }
        if run > 0 {
            bursts.push(f64::from(run));
        }
        let n = opts.count.max(1) as f64;
        let throughput = (opts.throughput_packets > 0).then(|| {
            let span = log.burst_last_ns.saturating_sub(log.burst_first_ns);
            if log.burst_count < 2 || span == 0 {
                f64::NAN
            } else {
                log.burst_bytes_after_first as f64 * 8.0 / (span as f64 / 1e9)
            }
        });
        Ok(ProbeReport {
            sent: opts.count,
            received_at_b: at_b,
            received: got.len() as u32,
            rtt_mean_s: mean(&rtts),
            rtt_p50_s: percentile(&rtts, 0.5),
            rtt_p99_s: percentile(&rtts, 0.99),
            rtt_min_s: rtts.first().copied().unwrap_or(f64::NAN),
            rtt_max_s: rtts.last().copied().unwrap_or(f64::NAN),
            one_way_a_to_b_mean_s: mean(&got.iter().map(|r| r.1 as f64 / 1e9).collect::<Vec<_>>()),
            one_way_b_to_a_mean_s: mean(&got.iter().map(|r| r.2 as f64 / 1e9).collect::<Vec<_>>()),
            loss: 1.0 - got.len() as f64 / n,
            loss_a_to_b: 1.0 - f64::from(at_b) / n,
            loss_b_to_a: if at_b == 0 {
                f64::NAN
            } else {
                1.0 - got.len() as f64 / f64::from(at_b)
            },
            mean_loss_burst_a_to_b: mean(&bursts),
            loss_bursts_a_to_b: bursts.len() as u32,
            throughput_bps: throughput,
            throughput_loss: (opts.throughput_packets > 0)
                .then(|| 1.0 - f64::from(log.burst_count) / f64::from(opts.throughput_packets)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_other_sessions() {
        let mut b = [0u8; HEADER_BYTES];
        header(&mut b, 42, KIND_ECHO, 7, 123_456);
        let p = parse(&b, 42).expect("parses");
        assert_eq!(
            (p.kind, p.seq, p.sent_ns, p.server_ns),
            (KIND_ECHO, 7, 123_456, 0)
        );
        assert!(parse(&b, 43).is_none());
        assert!(parse(&b[..20], 42).is_none());
    }

    #[test]
    fn reply_wait_covers_the_configured_round_trip() {
        let ms = Duration::from_millis;
        let opts = |rtt, jitter| ProbeOptions {
            expected_rtt: rtt,
            expected_jitter: jitter,
            ..ProbeOptions::default()
        };
        // 1 AU at time scale 1000: 998 ms round trip; a probe may come back after 998 ms
        // and must not be counted lost before then (the old rule waited 500 ms).
        let long = reply_wait(&opts(ms(998), Duration::ZERO), Duration::ZERO);
        assert!(long >= ms(998) + RTT_MARGIN_MIN, "{long:?}");
        assert_eq!(long, ms(998) + ms(499));
        // jitter each way widens the round trip by up to twice the one-way jitter
        let jit = reply_wait(&opts(ms(998), ms(100)), Duration::ZERO);
        assert_eq!(jit, ms(998) + ms(200) + ms(499));
        // short links keep the default floor
        assert_eq!(reply_wait(&opts(ms(40), ms(2)), Duration::ZERO), ms(500));
        // a larger RTT seen than configured (a busy host) still stretches the wait
        assert_eq!(reply_wait(&opts(ms(40), ms(2)), ms(300)), ms(900));
        // unknown configuration (zero) behaves as before
        assert_eq!(
            reply_wait(&opts(Duration::ZERO, Duration::ZERO), ms(10)),
            ms(500)
        );
    }

    #[test]
    fn percentile_picks_nearest_rank() {
        let xs: Vec<f64> = (0..101).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.5), 50.0);
        assert_eq!(percentile(&xs, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
