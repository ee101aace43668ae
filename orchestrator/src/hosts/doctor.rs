//! `lightcone doctor --hosts hosts.yaml`: can every host run its part of a lab? Each host
//! is asked over the lab's own ssh path ([`super::ssh`], BatchMode): can we log in, as
//! root, is its `lightcone` this build, does its kernel make a VXLAN device (tried in a
//! scratch namespace that the probe removes), has it netem, is the underlay interface
//! there with the MTU hosts.yaml says, and how far is its clock from ours.
//!
//! The clock offset is Cristian's: the host's `date +%s.%N` against the midpoint of our
//! clock before and after the round trip; the true offset is within half the round trip
//! of the estimate (the bound printed with it). The samples go over one open session (a
//! line in, the host's clock out), and of [`CLOCK_SAMPLES`] the one with the shortest
//! round trip is kept, as NTP's clock filter does.
//!
//! Everything that only formats or judges (parsing the probe's output, the checks, the
//! report) is pure and unit-tested; [`run`] does the ssh.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::slice::Controller;
use super::ssh::{sh_quote, Ssh};
use super::{HostSpec, Hosts};
use crate::doctor::{Check, Status};

/// What the probe script prints, one `key=value` a line. `$1` is the underlay interface;
/// its MTU comes from netlink (`ip`), which answers for the shell's network namespace even
/// where /sys was mounted for another.
pub const PROBE_SCRIPT: &str = r#"echo "uid=$(id -u)"
m=$(ip -o link show dev "$1" 2>/dev/null | sed -n 's/.* mtu \([0-9][0-9]*\) .*/\1/p')
if [ -n "$m" ]; then echo "mtu=$m"; elif [ -r "/sys/class/net/$1/mtu" ]; then echo "mtu=$(cat "/sys/class/net/$1/mtu")"; else echo "mtu=none"; fi
if [ -d /sys/module/sch_netem ] || modinfo sch_netem >/dev/null 2>&1; then echo "netem=yes"; else echo "netem=no"; fi
ns="lc-doctor-vx$$"
if ip netns add "$ns" 2>/dev/null; then
  if err=$(ip -n "$ns" link add lcvx0 type vxlan id 42 dstport 4789 2>&1); then echo "vxlan=yes"; else echo "vxlan=no $err"; fi
  ip netns del "$ns"
elif [ -d /sys/module/vxlan ]; then echo "vxlan=module"
else echo "vxlan=unknown"
fi
"#;

/// A clock offset within this is fine for a lab (agents' time sync works on top of it).
pub const CLOCK_OK_MS: f64 = 10.0;
/// Clock samples per host; the one with the shortest round trip is kept.
pub const CLOCK_SAMPLES: usize = 8;
/// Beyond this the hosts' time-error figures would be meaningless.
pub const CLOCK_FAIL_MS: f64 = 1000.0;

/// What the probe found on a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    pub uid: Option<u32>,
    /// `None`: no such interface.
    pub mtu: Option<u32>,
    pub netem: Option<bool>,
    /// `Some(Ok(()))` made one; `Some(Err(why))` the kernel refused; `None` untried.
    pub vxlan: Option<Result<(), String>>,
    /// The vxlan module is loaded but no device was tried (no scratch namespace).
    pub vxlan_module: bool,
}

/// Read the probe's `key=value` lines; unknown lines are ignored.
pub fn parse_probe(out: &str) -> Probe {
    let mut p = Probe::default();
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "uid" => p.uid = v.trim().parse().ok(),
            "mtu" => p.mtu = v.trim().parse().ok(),
            "netem" => p.netem = Some(v.trim() == "yes"),
            "vxlan" => {
                let v = v.trim();
                if v == "yes" {
                    p.vxlan = Some(Ok(()));
                } else if let Some(why) = v.strip_prefix("no") {
                    p.vxlan = Some(Err(why.trim().to_string()));
                } else if v == "module" {
                    p.vxlan_module = true;
                }
            }
            _ => {}
        }
    }
    p
}

pub use super::rtt::{clock_offset, ClockOffset};

/// Everything learnt about one host; `None` where it could not be asked.
#[derive(Debug, Clone)]
pub struct Findings {
    /// `Ok(round trip)` or `Err(ssh's message)`.
    pub ssh: Result<Duration, String>,
    pub probe: Option<Probe>,
    /// `Ok(its identity)` or `Err(what it said)`.
    pub binary: Option<Result<Controller, String>>,
    pub clock: Option<ClockOffset>,
}

/// The checks of one host, judged (pure).
pub fn checks(h: &HostSpec, ours: &Controller, f: &Findings) -> Vec<Check> {
    let mut v = Vec::new();
    match &f.ssh {
        Ok(rtt) => v.push(Check::ok(
            "ssh",
            format!(
                "`ssh {}` logs in without a prompt ({} ms)",
                h.ssh,
                rtt.as_millis()
            ),
        )),
        Err(e) => {
            v.push(Check::fail(
                "ssh",
                format!("`ssh -o BatchMode=yes {}` failed: {e}", h.ssh),
                format!("make it log in without a prompt: put this machine's public key in the host's ~/.ssh/authorized_keys (ssh-copy-id {}), accept its host key once (ssh {}), or set `ssh_config:` in the hosts file", h.ssh, h.ssh),
            ));
            return v;
        }
    }
    if let Some(p) = &f.probe {
        v.push(match p.uid {
            Some(0) => Check::ok("root", "logged in as root"),
            Some(u) => Check::fail(
                "root",
                format!("logged in as uid {u}, not root"),
                "log in as root (`ssh: root@HOST`): a worker creates network namespaces",
            ),
            None => Check::fail(
                "root",
                "`id -u` gave no answer",
                "check the host's login shell runs POSIX sh commands",
            ),
        });
    }
    v.push(match &f.binary {
        Some(Ok(theirs)) if theirs == ours => Check::ok(
            "binary",
            format!("{} is this build (lightcone {}, sha256 {}…)", h.lightcone, ours.version, &ours.sha256[..ours.sha256.len().min(16)]),
        ),
        Some(Ok(theirs)) => Check::fail(
            "binary",
            format!("{} is lightcone {} (sha256 {}), this is lightcone {} (sha256 {})", h.lightcone, theirs.version, theirs.sha256, ours.version, ours.sha256),
            format!("copy this build there: scp \"$(command -v lightcone)\" {}:{} (or name it with `lightcone:` in the hosts file)", h.ssh, h.lightcone),
        ),
        Some(Err(e)) => Check::fail(
            "binary",
            format!("`{} worker --identify` failed: {e}", h.lightcone),
            format!("install this lightcone build on the host (scp it to {}:/usr/local/bin/) or name its path with `lightcone:` in the hosts file", h.ssh),
        ),
        None => Check::warn("binary", "not checked", "run doctor again"),
    });
    if let Some(p) = &f.probe {
        v.push(match (&p.vxlan, p.vxlan_module) {
            (Some(Ok(())), _) => {
                Check::ok("vxlan", "a VXLAN device was made in a scratch namespace")
            }
            (Some(Err(why)), _) => Check::fail(
                "vxlan",
                format!("the kernel refused a VXLAN device: {why}"),
                "load the module (modprobe vxlan) or use a kernel built with CONFIG_VXLAN",
            ),
            (None, true) => Check::warn(
                "vxlan",
                "the vxlan module is loaded, but no scratch namespace could be made to try it",
                "log in as root so the doctor can try a device",
            ),
            (None, false) => Check::fail(
                "vxlan",
                "no vxlan module is loaded and no device could be tried",
                "log in as root, and load the module (modprobe vxlan)",
            ),
        });
        v.push(match p.netem {
            Some(true) => Check::ok("netem", "sch_netem is available (netem engine)"),
            _ => Check::warn(
                "netem",
                "no sch_netem: `auto` picks the wire engine there",
                "for the netem engine install the kernel's extra modules (Debian/Ubuntu: linux-modules-extra-$(uname -r)) and modprobe sch_netem",
            ),
        });
        v.push(match p.mtu {
            None => Check::fail(
                "underlay",
                format!("the host has no interface {}", h.underlay),
                "set `underlay:` to the interface VXLAN packets leave by (`ip -br link` on the host)",
            ),
            Some(m) if m < h.mtu => Check::fail(
                "underlay",
                format!("{} has MTU {m}, the hosts file says {}", h.underlay, h.mtu),
                format!("write `mtu: {m}` for this host in the hosts file, or raise the interface's MTU (ip link set {} mtu {})", h.underlay, h.mtu),
            ),
            Some(m) => Check::ok("underlay", format!("{} is up with MTU {m}", h.underlay)),
        });
    }
    if let Some(c) = f.clock {
        let worst = c.offset_ms.abs() - c.bound_ms;
        let what = format!(
            "clock offset {:+.1} ms ± {:.1} ms (host minus here)",
            c.offset_ms, c.bound_ms
        );
        let fix = "run a time daemon on both (chrony or systemd-timesyncd) against the same source";
        v.push(if worst <= CLOCK_OK_MS {
            Check::ok("clock", what)
        } else if worst <= CLOCK_FAIL_MS {
            Check::warn("clock", what, fix)
        } else {
            Check::fail("clock", what, fix)
        });
    }
    v
}

/// One host's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub ssh: String,
    pub checks: Vec<Check>,
    pub clock: Option<ClockOffset>,
    pub ok: bool,
}

/// `doctor --hosts`'s report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub hosts: Vec<HostReport>,
    pub ok: bool,
}

impl Report {
    pub fn of(hosts: Vec<HostReport>) -> Report {
        let ok = hosts.iter().all(|h| h.ok);
        Report { hosts, ok }
    }
}

/// Human-readable: a block per host, a fix under each check that is not ok, a summary.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    for h in &r.hosts {
        s += &format!("host {} ({})\n", h.host, h.ssh);
        for c in &h.checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            s += &format!("  {tag}  {:<9} {}\n", c.name, c.reason);
            if c.status != Status::Ok && !c.fix.is_empty() {
                s += &format!("        {:<9} → {}\n", "", c.fix);
            }
        }
    }
    let bad: Vec<&str> = r
        .hosts
        .iter()
        .filter(|h| !h.ok)
        .map(|h| h.host.as_str())
        .collect();
    s += &if bad.is_empty() {
        format!("ready: every host ({}) passed\n", r.hosts.len())
    } else {
        format!(
            "not ready: {} of {} host(s) failed a check ({})\n",
            bad.len(),
            r.hosts.len(),
            bad.join(", ")
        )
    };
    s
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Ask one host everything (over ssh; a scratch namespace made and removed there).
pub fn examine(ssh: &Ssh, h: &HostSpec, ours: &Controller) -> HostReport {
    let bound = Duration::from_secs(20);
    let reach = ssh.run(h, &["true"], bound);
    let ssh_result = match reach {
        Ok(o) if o.code == Some(0) => Ok(o.took),
        Ok(o) => Err(o.stderr.trim().to_string()),
        Err(e) => Err(e.to_string()),
    };
    let mut f = Findings {
        ssh: ssh_result,
        probe: None,
        binary: None,
        clock: None,
    };
    if f.ssh.is_ok() {
        f.probe = ssh
            .run_with_input(
                h,
                &["sh", "-s", "--", &sh_quote(&h.underlay)],
                PROBE_SCRIPT,
                bound,
            )
            .ok()
            .map(|o| parse_probe(&o.stdout));
        f.binary = Some(
            match ssh.run(h, &[&h.lightcone, "worker", "--identify"], bound) {
                Ok(o) => match super::control::parse_identity(&o.stdout) {
                    Some(id) if o.code == Some(0) => Ok(id.binary()),
                    _ => Err(format!(
                        "exit {}: {}",
                        o.code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "by signal".into()),
                        o.stderr.trim()
                    )),
                },
                Err(e) => Err(e.to_string()),
            },
        );
        f.clock = sample_clock(ssh, h);
    }
    let checks = checks(h, ours, &f);
    HostReport {
        host: h.name.clone(),
        ssh: h.ssh.clone(),
        ok: checks.iter().all(|c| c.status != Status::Fail),
        clock: f.clock,
        checks,
    }
}

/// Cristian's estimate over one ssh session that answers each line on its stdin with the
/// host's `date +%s.%N`: a sample's round trip is the channel's (plus one `date`), not
/// ssh's start-up. Of [`CLOCK_SAMPLES`] the one with the shortest round trip is kept.
/// `None` if the session does not answer within 5 s.
pub fn sample_clock(ssh: &Ssh, h: &HostSpec) -> Option<ClockOffset> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let mut c = ssh.command(h, &["sh", "-c", "'while read l; do date +%s.%N; done'"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().ok()?;
    let mut stdin = child.stdin.take()?;
    let out = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut best: Option<ClockOffset> = None;
    for _ in 0..CLOCK_SAMPLES {
        let before = now_s();
        if stdin.write_all(b"\n").and_then(|_| stdin.flush()).is_err() {
            break;
        }
        let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        let after = now_s();
        let Ok(remote) = line.trim().parse::<f64>() else {
            break;
        };
        let c = clock_offset(before, remote, after);
        if best.is_none_or(|b| c.bound_ms < b.bound_ms) {
            best = Some(c);
        }
    }
    drop(stdin);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    best
}

/// Examine every host of `hosts` (one after another), then end the ssh masters.
pub fn run(hosts: &Hosts, ssh: &Ssh, ours: &Controller) -> Report {
    let mut reports: Vec<HostReport> = hosts.hosts.iter().map(|h| examine(ssh, h, ours)).collect();
    // UDP between the underlays, on the lab's VXLAN port, around the ring of hosts (each
    // host sends to the next once and hears from the previous once): n checks, not n².
    let n = hosts.hosts.len();
    if n > 1 {
        let usable: Vec<bool> = reports.iter().map(|r| r.ok).collect();
        for i in 0..n {
            let j = (i + 1) % n;
            let (a, b) = (&hosts.hosts[i], &hosts.hosts[j]);
            let check = if !(usable[i] && usable[j]) {
                Check::warn(
                    "udp",
                    format!("UDP to {} not checked: a check above failed", b.name),
                    "fix the failures above and run doctor again",
                )
            } else {
                udp_check(ssh, a, b, hosts.vxlan_port)
            };
            reports[i].checks.push(check);
            reports[i].ok = reports[i].checks.iter().all(|c| c.status != Status::Fail);
        }
    }
    for h in &hosts.hosts {
        ssh.close_master(h);
    }
    Report::of(reports)
}

/// UDP from `a` to `b`'s underlay address on `port` (what VXLAN packets of a link between
/// them use): an echo bound there on `b`, 20 probes from `a`.
fn udp_check(ssh: &Ssh, a: &HostSpec, b: &HostSpec, port: u16) -> Check {
    let bound = Duration::from_secs(20);
    let ip = match ssh.run(
        b,
        &[
            &b.lightcone,
            "worker",
            "--identify",
            "--underlay",
            &b.underlay,
        ],
        bound,
    ) {
        Ok(o) => super::control::parse_identity(&o.stdout).and_then(|id| id.underlay),
        Err(_) => None,
    };
    let Some(u) = ip else {
        return Check::fail(
            "udp",
            format!(
                "{}'s underlay {} has no IPv4 address to send to",
                b.name, b.underlay
            ),
            "give the underlay interface an IPv4 address the other hosts reach",
        );
    };
    match super::rtt::measure(ssh, a, b, u.ipv4, port, bound) {
        Ok(s) => Check::ok(
            "udp",
            format!(
                "UDP to {} ({}:{port}) answered: round trip min {:.3} ms ({} of {})",
                b.name, u.ipv4, s.min_ms, s.received, s.sent
            ),
        ),
        Err(e) if e.contains("Address in use") || e.contains("address already in use") => {
            Check::warn(
                "udp",
                format!("UDP port {port} on {} is in use ({e})", b.name),
                "a lab is up there (its VXLAN links hold the port): check again when it is down, or give this lab another vxlan_port",
            )
        }
        Err(e) => Check::fail(
            "udp",
            format!("UDP to {} ({}:{port}): {e}", b.name, u.ipv4),
            format!(
                "let UDP port {port} pass between the hosts' underlay addresses (firewall, security group), or set vxlan_port to one that passes"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostSpec {
        crate::hosts::parse_str(
            "hosts:\n  h1: { ssh: root@h1, underlay: eth0, capacity: 3, mtu: 1500 }\n",
            "hosts.yaml",
        )
        .unwrap()
        .hosts
        .remove(0)
    }

    fn ours() -> Controller {
        Controller {
            version: "0.1.0".into(),
            sha256: "ab".repeat(32),
        }
    }

    fn good() -> Findings {
        Findings {
            ssh: Ok(Duration::from_millis(4)),
            probe: Some(parse_probe("uid=0\nmtu=1500\nnetem=no\nvxlan=yes\n")),
            binary: Some(Ok(ours())),
            clock: Some(clock_offset(100.000, 100.0021, 100.002)),
        }
    }

    #[test]
    fn the_probe_output_parses() {
        let p = parse_probe("banner\nuid=0\nmtu=9000\nnetem=yes\nvxlan=no RTNETLINK answers: Operation not supported\n");
        assert_eq!(p.uid, Some(0));
        assert_eq!(p.mtu, Some(9000));
        assert_eq!(p.netem, Some(true));
        assert_eq!(
            p.vxlan,
            Some(Err("RTNETLINK answers: Operation not supported".into()))
        );
        let p = parse_probe("uid=1000\nmtu=none\nvxlan=module\n");
        assert_eq!(
            (p.uid, p.mtu, p.vxlan_module, p.vxlan),
            (Some(1000), None, true, None)
        );
    }

    #[test]
    fn the_clock_offset_is_against_the_midpoint_within_half_the_round_trip() {
        let c = clock_offset(10.0, 10.5, 10.2);
        assert!((c.offset_ms - 400.0).abs() < 1e-6, "{c:?}");
        assert!((c.bound_ms - 100.0).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn a_good_host_passes_with_a_netem_warning() {
        let r = Report::of(vec![HostReport {
            host: "h1".into(),
            ssh: "root@h1".into(),
            checks: checks(&host(), &ours(), &good()),
            clock: None,
            ok: true,
        }]);
        let text = render(&r);
        assert!(text.starts_with("host h1 (root@h1)\n  ok    ssh       `ssh root@h1` logs in without a prompt (4 ms)\n  ok    root"), "{text}");
        assert!(text.contains("  warn  netem     no sch_netem"), "{text}");
        assert!(
            text.contains("  ok    clock     clock offset +1.1 ms ± 1.0 ms"),
            "{text}"
        );
        assert!(text.ends_with("ready: every host (1) passed\n"), "{text}");
    }

    #[test]
    fn each_failure_says_what_to_do() {
        let mut f = good();
        f.probe = Some(parse_probe(
            "uid=1000\nmtu=1400\nnetem=yes\nvxlan=no Operation not supported\n",
        ));
        f.binary = Some(Ok(Controller {
            version: "0.1.0".into(),
            sha256: "cd".repeat(32),
        }));
        f.clock = Some(clock_offset(100.0, 102.0, 100.01));
        let c = checks(&host(), &ours(), &f);
        let failed: Vec<(&str, &str)> = c
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| (c.name, c.fix.as_str()))
            .collect();
        let names: Vec<&str> = failed.iter().map(|x| x.0).collect();
        assert_eq!(names, ["root", "binary", "vxlan", "underlay", "clock"]);
        assert!(failed.iter().all(|(_, fix)| !fix.is_empty()));
        let under = c.iter().find(|c| c.name == "underlay").unwrap();
        assert!(under.fix.contains("`mtu: 1400`"), "{}", under.fix);
        let bin = c.iter().find(|c| c.name == "binary").unwrap();
        assert!(
            bin.reason.contains(&"cd".repeat(32)) && bin.reason.contains(&"ab".repeat(32)),
            "{}",
            bin.reason
        );
    }

    #[test]
    fn an_unreachable_host_stops_at_ssh() {
        let f = Findings {
            ssh: Err("Connection refused".into()),
            probe: None,
            binary: None,
            clock: None,
        };
        let c = checks(&host(), &ours(), &f);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].fix.contains("ssh-copy-id root@h1"), "{}", c[0].fix);
        let r = Report::of(vec![HostReport {
            host: "h1".into(),
            ssh: "root@h1".into(),
            checks: c,
            clock: None,
            ok: false,
        }]);
        assert!(render(&r).ends_with("not ready: 1 of 1 host(s) failed a check (h1)\n"));
    }
}
