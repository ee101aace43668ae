//! The underlay's round trip between two hosts, and a host's clock offset (issue 19), measured at `up` with the
//! lab's own binary on both ends, over the same path VXLAN packets take: an echo bound to
//! one host's underlay address (`lightcone worker --echo IP`) and probes from the other
//! (`lightcone worker --ping IP:PORT`). The controller subtracts half the smallest round
//! trip from each cross-host link's delay, so a link's end-to-end one-way delay is what
//! the topology says, not that plus the hosts' network.
//!
//! A probe is [`PROBE_BYTES`] bytes: a magic word, a session, a sequence number and the
//! sender's monotonic send time. The echo answers only datagrams that start with the magic
//! word (anything else on its port is ignored), and lives until its stdin closes or
//! [`ECHO_LIFETIME`] passes, whichever is first.

use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use std::process::Stdio;

use serde::{Deserialize, Serialize};

use super::ssh::Ssh;
use super::HostSpec;

const MAGIC: u32 = 0x6c63_7274; // "lcrt"
/// Bytes of one probe.
pub const PROBE_BYTES: usize = 24;
/// Longest an echo serves, whatever its stdin does.
pub const ECHO_LIFETIME: Duration = Duration::from_secs(60);
/// Most probes one `--ping` sends.
pub const MAX_PROBES: u32 = 1000;

/// What `--ping` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttSummary {
    pub sent: u32,
    pub received: u32,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// Bind an echo on `ip`:`port` (0: any free port), print `{"port":P}` on stdout, then answer probes until
/// stdin closes or [`ECHO_LIFETIME`] passes.
pub fn serve_echo(ip: Ipv4Addr, port: u16, netns: Option<&str>) -> io::Result<()> {
    let sock = bind_in(netns, SocketAddrV4::new(ip, port))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let port = sock.local_addr()?.port();
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", serde_json::json!({ "port": port }))?;
        out.flush()?;
    }
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let closed = closed.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let stdin = io::stdin();
            let mut input = stdin.lock();
            while matches!(input.read_line(&mut line), Ok(n) if n > 0) {
                line.clear();
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while !closed.load(std::sync::atomic::Ordering::SeqCst) && start.elapsed() < ECHO_LIFETIME {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if n == PROBE_BYTES && buf[..4] == MAGIC.to_be_bytes() => {
                let _ = sock.send_to(&buf[..n], from);
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A UDP socket bound to `at`, in network namespace `netns` (a lab node's) when given: it
/// stays there whichever thread uses it.
fn bind_in(netns: Option<&str>, at: SocketAddrV4) -> io::Result<UdpSocket> {
    match netns {
        None => UdpSocket::bind(at),
        Some(name) => crate::kernel::Netns::open(name)
            .map_err(io::Error::other)?
            .run(|| UdpSocket::bind(at))
            .map_err(io::Error::other)?,
    }
}

/// Send `count` probes to `to`, one every `interval`, and wait up to `wait` after the last
/// for answers. `Err` if nothing could be sent; `received` 0 if nothing came back.
pub fn ping(
    to: SocketAddrV4,
    count: u32,
    interval: Duration,
    wait: Duration,
    netns: Option<&str>,
) -> io::Result<RttSummary> {
    let count = count.clamp(1, MAX_PROBES);
    let sock = bind_in(netns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    sock.set_read_timeout(Some(Duration::from_millis(5)))?;
    let session: u32 = rand::random();
    let t0 = Instant::now();
    let mut rtts: Vec<Option<f64>> = vec![None; count as usize];
    let mut buf = [0u8; 64];
    let mut drain = |sock: &UdpSocket, rtts: &mut Vec<Option<f64>>| {
        while let Ok(n) = sock.recv(&mut buf) {
            if n != PROBE_BYTES
                || buf[..4] != MAGIC.to_be_bytes()
                || buf[4..8] != session.to_be_bytes()
            {
                continue;
            }
            let seq = u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes")) as usize;
            let sent = u64::from_be_bytes(buf[12..20].try_into().expect("8 bytes"));
            let now = t0.elapsed().as_nanos() as u64;
            if let Some(slot) = rtts.get_mut(seq) {
                slot.get_or_insert(now.saturating_sub(sent) as f64 / 1e6);
            }
        }
    };
    for seq in 0..count {
        let mut p = [0u8; PROBE_BYTES];
        p[..4].copy_from_slice(&MAGIC.to_be_bytes());
        p[4..8].copy_from_slice(&session.to_be_bytes());
        p[8..12].copy_from_slice(&seq.to_be_bytes());
        p[12..20].copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_be_bytes());
        sock.send_to(&p, to)?;
        let next = t0 + interval * (seq + 1);
        while Instant::now() < next {
            drain(&sock, &mut rtts);
        }
    }
    let end = Instant::now() + wait;
    while Instant::now() < end && rtts.iter().any(Option::is_none) {
        drain(&sock, &mut rtts);
    }
    Ok(summarize(count, rtts.into_iter().flatten().collect()))
}

/// The summary of `got` round trips (ms) out of `sent` probes.
pub fn summarize(sent: u32, mut got: Vec<f64>) -> RttSummary {
    got.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if got.is_empty() {
            0.0
        } else {
            got[((got.len() - 1) as f64 * q).round() as usize]
        }
    };
    RttSummary {
        sent,
        received: got.len() as u32,
        min_ms: at(0.0),
        p50_ms: at(0.5),
        max_ms: at(1.0),
    }
}

/// The underlay round trip from host `a` to host `b`'s underlay address `ip_b`: an echo
/// on `b` (`worker --echo IP --port P`; port 0: any free one), 20 probes from `a`
/// (`worker --ping`), both over `ssh`, each step within `bound`. `Err`: what failed, with
/// the host named (no probe came back, the echo could not bind, ssh failed).
pub fn measure(
    ssh: &Ssh,
    a: &HostSpec,
    b: &HostSpec,
    ip_b: Ipv4Addr,
    port: u16,
    bound: Duration,
) -> Result<RttSummary, String> {
    let s = measure_with(ssh, a, b, ip_b, &Between::hosts(port), bound)?;
    if s.received == 0 {
        return Err(format!(
            "none of {} UDP probes from host {} to {ip_b} came back",
            s.sent, a.name
        ));
    }
    Ok(s)
}

/// Where [`measure_with`] probes: the echo's port and namespace on `b`, the prober's
/// namespace on `a`, how many probes, and how long to wait for late answers.
#[derive(Debug, Clone)]
pub struct Between {
    pub port: u16,
    pub echo_netns: Option<String>,
    pub ping_netns: Option<String>,
    pub count: u32,
    pub wait: Duration,
}

impl Between {
    /// The hosts' own underlays: 20 probes.
    pub fn hosts(port: u16) -> Between {
        Between {
            port,
            echo_netns: None,
            ping_netns: None,
            count: 20,
            wait: Duration::from_secs(2),
        }
    }
}

/// [`measure`], between namespaces of the two hosts when `how` names them (a lab link
/// between two nodes on two hosts: `lightcone probe` across hosts). `received` 0 is an
/// answer here (a link that is down), not an error.
pub fn measure_with(
    ssh: &Ssh,
    a: &HostSpec,
    b: &HostSpec,
    ip_b: Ipv4Addr,
    how: &Between,
    bound: Duration,
) -> Result<RttSummary, String> {
    let ip = ip_b.to_string();
    let port_arg = how.port.to_string();
    let mut words: Vec<&str> = vec![&b.lightcone, "worker", "--echo", &ip, "--port", &port_arg];
    if let Some(ns) = &how.echo_netns {
        words.extend(["--netns", ns.as_str()]);
    }
    let mut echo = ssh.command(b, &words);
    echo.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = echo
        .spawn()
        .map_err(|e| format!("start ssh to host {}: {e}", b.name))?;
    let stdin = child.stdin.take();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let result = (|| {
        let line = rx
            .recv_timeout(bound)
            .map_err(|_| format!("host {}: the echo did not start within {bound:?}", b.name))?;
        let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|_| {
            let mut e = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(err), &mut e);
            format!(
                "host {}: the echo did not start: {}",
                b.name,
                if e.trim().is_empty() {
                    line.trim()
                } else {
                    e.trim()
                }
            )
        })?;
        let port = v["port"]
            .as_u64()
            .ok_or_else(|| format!("host {}: the echo said {:?}", b.name, line.trim()))?;
        let to = format!("{ip}:{port}");
        let count = how.count.to_string();
        let wait_ms = how.wait.as_millis().to_string();
        let mut words: Vec<&str> = vec![
            &a.lightcone,
            "worker",
            "--ping",
            &to,
            "--count",
            &count,
            "--wait-ms",
            &wait_ms,
        ];
        if let Some(ns) = &how.ping_netns {
            words.extend(["--netns", ns.as_str()]);
        }
        let o = ssh
            .run(
                a,
                &words,
                bound + how.wait + Duration::from_millis(10) * how.count,
            )
            .map_err(|e| format!("host {}: {e}", a.name))?;
        let s: RttSummary = o
            .stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l.trim()).ok())
            .ok_or_else(|| {
                format!(
                    "host {}: `worker --ping {to}` said {:?} {:?}",
                    a.name,
                    o.stdout.trim(),
                    o.stderr.trim()
                )
            })?;
        Ok(s)
    })();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `CLOCK_REALTIME` now, ns since the Unix epoch.
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The clock offset estimate: the host's clock minus ours at the midpoint, and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClockOffset {
    pub offset_ms: f64,
    pub bound_ms: f64,
}

/// From our clock before and after (seconds since the epoch) and the host's reading.
pub fn clock_offset(before_s: f64, remote_s: f64, after_s: f64) -> ClockOffset {
    let mid = (before_s + after_s) / 2.0;
    ClockOffset {
        offset_ms: (remote_s - mid) * 1e3,
        bound_ms: (after_s - before_s).max(0.0) / 2.0 * 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_takes_order_statistics_of_what_came_back() {
        let s = summarize(5, vec![3.0, 1.0, 2.0]);
        assert_eq!((s.sent, s.received), (5, 3));
        assert_eq!((s.min_ms, s.p50_ms, s.max_ms), (1.0, 2.0, 3.0));
        let none = summarize(4, vec![]);
        assert_eq!((none.received, none.min_ms), (0, 0.0));
    }

    #[test]
    fn probes_to_nothing_come_back_as_nothing() {
        // A port on loopback nobody serves: ICMP unreachable or silence, never an answer.
        let free = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let to = match free {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let s = ping(
            to,
            3,
            Duration::from_millis(1),
            Duration::from_millis(20),
            None,
        )
        .unwrap();
        assert_eq!((s.sent, s.received), (3, 0));
    }
}
