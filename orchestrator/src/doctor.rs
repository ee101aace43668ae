//! `lightcone doctor`: can this machine run a lab, and with which link engine?
//!
//! Every check tries the real thing where it can: it creates and deletes a throwaway
//! namespace (`lc-doctor-<pid>`) through [`crate::kernel`], a veth pair inside it, an
//! AF_PACKET socket bound to one end, and asks [`netem::kernel_has_netem`] for the qdisc.
//! Nothing is left behind: the throwaway namespace is deleted on every path (a guard), and
//! the veth pair dies with it. A doctor killed mid-check leaves `lc-doctor-<pid>`, which a
//! later doctor reports and `lightcone down --all` removes (see
//! [`crate::apply::stray_namespaces`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::kernel::{self, Netns};
use crate::lab::SupervisorInfo;
use crate::link::engine::EngineChoice;
use crate::link::netem::{self, Availability};
use crate::state::{self, Entry, LabDir, Ledger};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Works, but something optional is missing or something looks off.
    Warn,
    /// A lab cannot be brought up (or not fully) until this is fixed.
    Fail,
}

/// One check: a short name, the outcome, one line on why, and what to do (empty when ok).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub reason: String,
    pub fix: String,
}

impl Check {
    pub(crate) fn ok(name: &'static str, reason: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            reason: reason.into(),
            fix: String::new(),
        }
    }
    pub(crate) fn warn(
        name: &'static str,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: Status::Warn,
            reason: reason.into(),
            fix: fix.into(),
        }
    }
    pub(crate) fn fail(
        name: &'static str,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: Status::Fail,
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

/// Which engine `--link-engine auto` picks on this machine, and why.
#[derive(Debug, Clone, Serialize)]
pub struct EnginePick {
    pub engine: EngineChoice,
    pub why: String,
}

/// Everything the doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub auto_engine: EnginePick,
    /// True when no check failed (the CLI exits 0).
    pub ok: bool,
}

/// Linux capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Where the optional helpers are expected (Debian's packages).
pub const CHROMIUM_BIN: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER_BIN: &str = "/usr/bin/chromedriver";

/// Below this hard open-file limit a large lab may run out of descriptors while building.
const FD_WANT: u64 = 8192;

/// Run every check. Never panics on a hostile machine; each failure becomes a [`Check`].
pub fn run() -> Report {
    let mut checks = Vec::new();
    let privileged = privileges(&mut checks);
    kernel_checks(privileged, &mut checks);
    let netem = netem::kernel_has_netem();
    checks.push(netem_check(&netem));
    checks.push(fd_limit());
    checks.push(state_dir());
    checks.push(agent_binary());
    checks.push(optional_binary(
        "prometheus",
        Path::new(crate::telemetry::PROMETHEUS_BIN),
        "only `up --prometheus` needs it",
        "apt-get install prometheus (tests/setup.sh --deps does)",
    ));
    checks.push(optional_binary(
        "chromium",
        Path::new(CHROMIUM_BIN),
        "only the dashboard's browser test needs it",
        "apt-get install chromium chromium-driver (tests/setup.sh --deps does)",
    ));
    checks.push(optional_binary(
        "chromedriver",
        Path::new(CHROMEDRIVER_BIN),
        "only the dashboard's browser test needs it",
        "apt-get install chromium-driver (tests/setup.sh --deps does)",
    ));
    checks.push(stale_labs());
    checks.push(stray_namespaces());
    let auto_engine = if netem.is_available() {
        EnginePick {
            engine: EngineChoice::Netem,
            why: netem.to_string(),
        }
    } else {
        EnginePick {
            engine: EngineChoice::Wire,
            why: format!("{netem}; the userspace wire engine carries the links instead"),
        }
    };
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    Report {
        checks,
        auto_engine,
        ok,
    }
}

/// Effective capabilities of this process, from `/proc/self/status`.
fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Root and the two capabilities namespaces need. Returns whether both are held.
fn privileges(out: &mut Vec<Check>) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let (net, sys) = (has(CAP_NET_ADMIN), has(CAP_SYS_ADMIN));
    let who = if root {
        "root".to_string()
    } else {
        format!("uid {}", nix::unistd::Uid::effective())
    };
    out.push(if net && sys {
        Check::ok(
            "privileges",
            format!("running as {who} with CAP_NET_ADMIN and CAP_SYS_ADMIN"),
        )
    } else {
        let missing: Vec<&str> = [(net, "CAP_NET_ADMIN"), (sys, "CAP_SYS_ADMIN")]
            .into_iter()
            .filter(|(h, _)| !h)
            .map(|(_, n)| n)
            .collect();
        Check::fail(
            "privileges",
            format!("running as {who} without {}", missing.join(" and ")),
            "run lightcone with sudo (labs create network namespaces)",
        )
    });
    net && sys
}

/// Deletes the throwaway namespace however the checks end.
struct Throwaway(String);

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = Netns::delete(&self.0);
    }
}

/// The throwaway namespace of this doctor process.
pub fn throwaway_name() -> String {
    format!(
        "{}doctor-{}",
        crate::topology::NETNS_PREFIX,
        std::process::id()
    )
}

/// Namespaces, veth pairs and AF_PACKET, each tried for real in a throwaway namespace.
fn kernel_checks(privileged: bool, out: &mut Vec<Check>) {
    const NS: &str = "namespaces";
    const VETH: &str = "veth";
    const PACKET: &str = "af_packet";
    if !privileged {
        let why = "not tried: needs CAP_SYS_ADMIN and CAP_NET_ADMIN";
        let fix = "run `sudo lightcone doctor`";
        out.push(Check::fail(NS, why, fix));
        out.push(Check::fail(VETH, why, fix));
        out.push(Check::fail(PACKET, why, fix));
        return;
    }
    let name = throwaway_name();
    let ns = match Netns::create(&name) {
        Ok(ns) => ns,
        Err(e) => {
            let _ = Netns::delete(&name);
            out.push(Check::fail(
                NS,
                format!("could not create a namespace under /run/netns: {e}"),
                "check that /run is writable and mounts are allowed (not in an unprivileged container)",
            ));
            let why = "not tried: no namespace to try it in";
            out.push(Check::fail(VETH, why, "fix the namespace check first"));
            out.push(Check::fail(PACKET, why, "fix the namespace check first"));
            return;
        }
    };
    let guard = Throwaway(name.clone());
    let veth = veth_in(&ns);
    let packet = match &veth {
        Ok(ifindex) => packet_socket_in(&ns, *ifindex),
        Err(_) => Err("not tried: no veth pair to bind to".to_string()),
    };
    drop(ns);
    drop(guard);
    let gone = !Netns::exists(&name);
    out.push(if gone {
        Check::ok(
            NS,
            format!("created and deleted namespace {name} under /run/netns"),
        )
    } else {
        Check::fail(
            NS,
            format!("created {name} but could not delete it"),
            format!("remove it with `ip netns delete {name}`; check mounts on /run/netns"),
        )
    });
    out.push(match veth {
        Ok(_) => Check::ok(VETH, "created a veth pair inside it and brought it up"),
        Err(e) => Check::fail(
            VETH,
            format!("veth pair: {e}"),
            "load the veth module (`modprobe veth`) or use a kernel with CONFIG_VETH",
        ),
    });
    out.push(match packet {
        Ok(()) => Check::ok(
            PACKET,
            "opened an AF_PACKET socket bound to a veth end in it (the wire engine's I/O)",
        ),
        Err(e) => Check::fail(
            PACKET,
            format!("AF_PACKET socket: {e}"),
            "the wire engine needs CONFIG_PACKET; with netem available use --link-engine netem",
        ),
    });
}

/// Create `lcd0`↔`lcd1` inside `ns`, bring both up; returns the ifindex of `lcd0`.
fn veth_in(ns: &Netns) -> Result<u32, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let h = kernel::handle_in(Some(ns)).map_err(|e| e.to_string())?;
        kernel::netlink::create_veth_between(&h, ns, "lcd0", ns, "lcd1")
            .await
            .map_err(|e| e.to_string())?;
        let a = kernel::ifindex(&h, "lcd0")
            .await
            .map_err(|e| e.to_string())?;
        let b = kernel::ifindex(&h, "lcd1")
            .await
            .map_err(|e| e.to_string())?;
        for i in [a, b] {
            kernel::set_up(&h, i).await.map_err(|e| e.to_string())?;
        }
        Ok(a)
    })
}

/// Open an AF_PACKET socket inside `ns` and bind it to `ifindex`.
fn packet_socket_in(ns: &Netns, ifindex: u32) -> Result<(), String> {
    ns.run(move || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                proto as i32,
            )
        };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: sa is a valid sockaddr_ll of the length given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(format!("bind: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?
}

fn netem_check(a: &Availability) -> Check {
    match a {
        Availability::Available { why } => Check::ok("netem", format!("sch_netem works: {why}")),
        Availability::Unavailable { why } => Check::warn(
            "netem",
            format!("no sch_netem: {why}"),
            "nothing needed: the wire engine runs instead; for kernel netem install the \
             distribution kernel's modules (linux-modules-extra on Ubuntu) or use the Vagrant VM",
        ),
    }
}

fn fd_limit() -> Check {
    use nix::sys::resource::{getrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if hard >= FD_WANT => Check::ok(
            "fd_limit",
            format!("open files: soft {soft}, hard {hard} (a lab raises soft to hard)"),
        ),
        Ok((soft, hard)) => Check::warn(
            "fd_limit",
            format!(
                "open files: soft {soft}, hard {hard}; a lab holds about 3 per node while it \
                 builds, so labs above ~{} nodes may run out",
                hard / 3
            ),
            format!(
                "raise the hard limit to {FD_WANT} or more (ulimit -Hn, or LimitNOFILE in a unit)"
            ),
        ),
        Err(e) => Check::warn("fd_limit", format!("getrlimit: {e}"), "check ulimit -n"),
    }
}

fn state_dir() -> Check {
    let root = state::state_root();
    // The root itself, or the nearest parent that exists (up creates the rest).
    let mut at: PathBuf = root.clone();
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p.to_path_buf(),
            None => break,
        }
    }
    let writable = nix::unistd::access(&at, nix::unistd::AccessFlags::W_OK).is_ok();
    if writable && at.is_dir() {
        Check::ok(
            "state_dir",
            format!("lab state goes under {} (writable)", root.display()),
        )
    } else {
        Check::fail(
            "state_dir",
            format!("{} is not a writable directory", at.display()),
            "run with sudo, or point LIGHTCONE_STATE_DIR at a writable directory",
        )
    }
}

fn agent_binary() -> Check {
    match crate::agents::agent_binary() {
        Some(p) if is_executable(&p) => Check::ok("agent", format!("agent binary {}", p.display())),
        Some(p) => Check::fail(
            "agent",
            format!("{} is not an executable file", p.display()),
            "build it (cargo build --release -p lightcone-agent) or fix LIGHTCONE_AGENT",
        ),
        None => Check::fail(
            "agent",
            "lightcone-agent not found next to lightcone (nor LIGHTCONE_AGENT set)",
            "build both binaries: cargo build --release --workspace --bins (tests/setup.sh does)",
        ),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn optional_binary(name: &'static str, p: &Path, needed_by: &str, fix: &str) -> Check {
    if is_executable(p) {
        Check::ok(name, format!("{} present", p.display()))
    } else {
        Check::warn(name, format!("{} missing; {needed_by}", p.display()), fix)
    }
}

/// True if a lab's supervisor (from supervisor.json, or the ledger while `up` runs) lives.
fn supervised(dir: &LabDir) -> bool {
    if SupervisorInfo::read(dir).is_some_and(|i| i.alive()) {
        return true;
    }
    Ledger::read(dir).iter().any(|e| {
        matches!(e, Entry::Process { pid, start_time, what }
            if what == "supervisor" && state::same_process(*pid, *start_time))
    })
}

fn stale_labs() -> Check {
    let labs = LabDir::all();
    let stale: Vec<String> = labs
        .iter()
        .filter(|l| !supervised(l))
        .map(|l| l.lab.clone())
        .collect();
    if stale.is_empty() {
        Check::ok(
            "stale_labs",
            format!("{} lab(s) up, every one with a live supervisor", labs.len()),
        )
    } else {
        Check::warn(
            "stale_labs",
            format!(
                "state left by labs whose supervisor is gone: {}",
                stale.join(", ")
            ),
            format!(
                "`sudo lightcone down {}` for each (removes their namespaces and state)",
                stale.first().map(String::as_str).unwrap_or("LAB")
            ),
        )
    }
}

fn stray_namespaces() -> Check {
    let stray = crate::apply::stray_namespaces();
    if stray.is_empty() {
        Check::ok(
            "stray_namespaces",
            "no lc-* namespace without a lab that owns it",
        )
    } else {
        Check::warn(
            "stray_namespaces",
            format!(
                "{} lc-* namespace(s) no lab owns: {}",
                stray.len(),
                stray.join(", ")
            ),
            "`sudo lightcone down --all` removes them",
        )
    }
}

/// Human-readable report: one line per check, a fix line under each that is not ok, the
/// engine `auto` picks, and a summary.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    for c in &r.checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        s += &format!("{tag}  {:<17} {}\n", c.name, c.reason);
        if c.status != Status::Ok && !c.fix.is_empty() {
            s += &format!("      {:<17} → {}\n", "", c.fix);
        }
    }
    let engine = match r.auto_engine.engine {
        EngineChoice::Netem => "netem",
        EngineChoice::Wire => "wire",
        EngineChoice::Auto => "auto",
        EngineChoice::None => "none",
    };
    s += &format!(
        "link engine: `--link-engine auto` will use {engine} ({})\n",
        r.auto_engine.why
    );
    let fails = r.checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = r.checks.iter().filter(|c| c.status == Status::Warn).count();
    s += &if fails == 0 {
        format!("ready: no check failed ({warns} warning(s))\n")
    } else {
        format!("not ready: {fails} check(s) failed, {warns} warning(s)\n")
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_marks_each_status_and_shows_fixes_only_when_needed() {
        let r = Report {
            checks: vec![
                Check::ok("privileges", "root"),
                Check::warn("netem", "no sch_netem", "use the VM"),
                Check::fail("agent", "not found", "build it"),
            ],
            auto_engine: EnginePick {
                engine: EngineChoice::Wire,
                why: "no netem".into(),
            },
            ok: false,
        };
        let s = render(&r);
        assert!(s.contains("ok    privileges"), "{s}");
        assert!(s.contains("warn  netem"), "{s}");
        assert!(s.contains("FAIL  agent"), "{s}");
        assert_eq!(s.matches('→').count(), 2, "{s}");
        assert!(s.contains("will use wire (no netem)"), "{s}");
        assert!(
            s.contains("not ready: 1 check(s) failed, 1 warning(s)"),
            "{s}"
        );
    }

    #[test]
    fn json_field_names_are_stable() {
        let r = Report {
            checks: vec![Check::warn("netem", "why", "fix")],
            auto_engine: EnginePick {
                engine: EngineChoice::Wire,
                why: "w".into(),
            },
            ok: true,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["checks"][0]["status"], "warn");
        assert_eq!(v["checks"][0]["name"], "netem");
        assert_eq!(v["checks"][0]["reason"], "why");
        assert_eq!(v["checks"][0]["fix"], "fix");
        assert_eq!(v["auto_engine"]["engine"], "wire");
        assert_eq!(v["ok"], true);
    }

    #[test]
    fn throwaway_namespace_is_not_a_lab_namespace() {
        // `lc-doctor-<pid>`: no `_`, so it never looks like `lc-<lab>_<node>`.
        let n = throwaway_name();
        assert!(n.starts_with("lc-doctor-") && !n.contains('_'), "{n}");
    }
}
