//! The controller's record of a multi-host lab (`up --hosts`): which host owns which
//! node, the ssh target and binary of each, and what each worker last said. It lives in
//! `<state root>/.hosts/<lab>/controller.json`, apart from the lab directories of
//! `lightcone up`, because the controller's machine may itself be one of the hosts — its
//! worker then has the lab's own directory there, with the same name.
//!
//! Also the worker's JSON lines ([`WorkerEvent`]), parsed once at the edge.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::{process_start_time, state_root, BadLabName};

/// Where every controller record lives.
pub fn records_root() -> PathBuf {
    state_root().join(".hosts")
}

/// A worker's state as the controller last knew it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Its session is open; not ready yet.
    Starting,
    /// Every namespace, link and agent of its slice is up.
    Ready,
    /// Its stdin was closed; it is tearing down.
    Stopping,
    /// It said `down` (its slice is torn down) or its session ended.
    Down,
    /// It said `error`.
    Failed,
}

/// One host of the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub ssh: String,
    /// The remote `lightcone` binary.
    pub lightcone: String,
    /// Plan names of the nodes it holds.
    pub nodes: Vec<String>,
    pub worker: WorkerState,
    /// The worker's pid on its host (from its `ready`).
    pub worker_pid: Option<u32>,
    /// The worker's API on its host's loopback (from its `ready`).
    pub api: Option<String>,
    /// That API's token (from its `ready`, over the ssh session): what the runner of a
    /// scenario over hosts presents through its port forward ([`super::access`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// The worker's last error or why its session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The underlay round trip to each host this one shares a link with, measured at
    /// `up` ([`super::rtt`]; the smallest of its probes), ms.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub underlay_rtt_ms: std::collections::BTreeMap<String, f64>,
    /// The host's clock minus the controller's, with its bound, sampled at `up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<super::rtt::ClockOffset>,
}

impl HostRecord {
    /// The parts of a host spec ssh needs.
    pub fn spec(&self) -> super::HostSpec {
        super::HostSpec {
            name: self.name.clone(),
            ssh: self.ssh.clone(),
            underlay: String::new(),
            capacity: std::num::NonZeroUsize::MIN,
            mtu: 1500,
            lightcone: self.lightcone.clone(),
            pos: Default::default(),
        }
    }
}

/// `controller.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerRecord {
    pub lab: String,
    /// The controller process (this machine) and its start time, against pid reuse.
    pub pid: u32,
    pub start_time: u64,
    /// `-F` of every ssh.
    pub ssh_config: Option<PathBuf>,
    pub hosts: Vec<HostRecord>,
}

impl ControllerRecord {
    /// Is the controller process that wrote this still running?
    pub fn alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
    /// The host holding node `name`.
    pub fn host_of(&self, node: &str) -> Option<&HostRecord> {
        self.hosts
            .iter()
            .find(|h| h.nodes.iter().any(|n| n == node))
    }
}

/// A lab's controller directory: `<state root>/.hosts/<lab>/`.
#[derive(Debug, Clone)]
pub struct ControlDir {
    pub lab: String,
    pub path: PathBuf,
}

impl ControlDir {
    /// Refuses a name that is not a lab name (no path is built from it).
    pub fn new(lab: &str) -> Result<ControlDir, BadLabName> {
        if !crate::topology::valid_lab_name(lab) {
            return Err(BadLabName {
                name: lab.to_string(),
            });
        }
        Ok(ControlDir {
            lab: lab.to_string(),
            path: records_root().join(lab),
        })
    }
    pub fn exists(&self) -> bool {
        self.path.exists()
    }
    pub fn record_path(&self) -> PathBuf {
        self.path.join("controller.json")
    }
    pub fn log_path(&self) -> PathBuf {
        self.path.join("controller.log")
    }
    /// The whole plan the lab was placed from (what a command about two hosts' nodes
    /// needs: addresses and namespaces on both).
    pub fn plan_path(&self) -> PathBuf {
        self.path.join("plan.json")
    }
    pub fn read(&self) -> Option<ControllerRecord> {
        let b = std::fs::read(self.record_path()).ok()?;
        serde_json::from_slice(&b).ok()
    }
    /// Write the record atomically (a reader never sees half of one).
    pub fn write(&self, r: &ControllerRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.path)?;
        let tmp = self.path.join("controller.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, self.record_path())
    }
    /// Remove the directory; a missing one is fine. Only a real directory directly under
    /// the records root with the lab's name is removed.
    pub fn remove(&self) -> std::io::Result<()> {
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !meta.is_dir() || self.path.parent() != Some(records_root().as_path()) {
            return Err(std::io::Error::other(format!(
                "refusing to remove {}: not a controller directory; nothing was removed",
                self.path.display()
            )));
        }
        std::fs::remove_dir_all(&self.path)
    }
    /// Every lab with a controller record, sorted.
    pub fn all_names() -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(records_root())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| crate::topology::valid_lab_name(n))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// One line a worker writes on stdout (see `lightcone worker`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    Progress {
        message: String,
    },
    Ready {
        lab: String,
        host: String,
        api: String,
        /// The API's token (absent from a worker older than `run` over hosts).
        #[serde(default)]
        token: Option<String>,
        namespaces: Vec<String>,
        nodes: usize,
        pid: u32,
    },
    Error {
        message: String,
        #[serde(default)]
        changed: bool,
        #[serde(default)]
        removed: bool,
    },
    Down {
        why: String,
    },
}

impl WorkerEvent {
    /// A line from a worker; anything else it printed (a login banner, a shell's
    /// complaint) is kept as text.
    pub fn parse(line: &str) -> Result<WorkerEvent, String> {
        serde_json::from_str(line.trim()).map_err(|_| line.trim_end().to_string())
    }
}

/// `lightcone worker --identify [--underlay IF]`'s answer: the binary's version and
/// SHA-256 and, when asked, the underlay interface as the host sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub version: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<Underlay>,
}

impl Identity {
    /// The binary part, to compare with the controller's own.
    pub fn binary(&self) -> super::slice::Controller {
        super::slice::Controller {
            version: self.version.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// A host's underlay interface: its first IPv4 address (the outer source of its VXLAN
/// packets, and where the other hosts send theirs) and its MTU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Underlay {
    pub name: String,
    pub ipv4: std::net::Ipv4Addr,
    pub mtu: u32,
}

/// Read interface `name` of the calling thread's namespace: its first IPv4 address
/// (`getifaddrs`) and MTU (`SIOCGIFMTU`). `Err`: what is missing, said for the hosts file.
pub fn underlay_of(name: &str) -> Result<Underlay, String> {
    use nix::ifaddrs::getifaddrs;
    if name.is_empty() || name.len() > crate::plan::IFNAME_MAX {
        return Err(format!("{name:?} is not an interface name"));
    }
    let addrs = getifaddrs().map_err(|e| format!("getifaddrs: {e}"))?;
    let mut seen = false;
    let mut ipv4 = None;
    for a in addrs.filter(|a| a.interface_name == name) {
        seen = true;
        if let Some(v4) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            ipv4 = Some(v4.ip());
            break;
        }
    }
    if !seen {
        return Err(format!("the host has no interface {name}"));
    }
    let Some(ipv4) = ipv4 else {
        return Err(format!("{name} has no IPv4 address"));
    };
    // SAFETY: a datagram socket we own, and an ifreq with a NUL-terminated name shorter
    // than IFNAMSIZ (checked above); SIOCGIFMTU only writes ifr_mtu.
    let mtu = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = b as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFMTU, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(format!("read the MTU of {name}: {err}"));
        }
        req.ifr_ifru.ifru_mtu
    };
    Ok(Underlay {
        name: name.to_string(),
        ipv4,
        mtu: u32::try_from(mtu).map_err(|_| format!("{name} has MTU {mtu}"))?,
    })
}

/// `lightcone worker --identify`'s answer: the last JSON line of its output (a login
/// banner may come first).
pub fn parse_identity(out: &str) -> Option<Identity> {
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_parse_into_events_and_anything_else_is_text() {
        assert_eq!(
            WorkerEvent::parse("{\"event\":\"progress\",\"message\":\"m\"}\n"),
            Ok(WorkerEvent::Progress {
                message: "m".into()
            })
        );
        assert_eq!(
            WorkerEvent::parse("{\"event\":\"error\",\"message\":\"x\",\"changed\":false}"),
            Ok(WorkerEvent::Error {
                message: "x".into(),
                changed: false,
                removed: false
            })
        );
        let r = WorkerEvent::parse(
            r#"{"event":"ready","lab":"l","host":"h","api":"http://127.0.0.1:1","namespaces":["a"],"nodes":3,"pid":7}"#,
        );
        assert!(
            matches!(
                r,
                Ok(WorkerEvent::Ready {
                    nodes: 3,
                    pid: 7,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(WorkerEvent::parse("Welcome!\n"), Err("Welcome!".into()));
    }

    #[test]
    fn identity_is_the_last_json_line() {
        let id = parse_identity("motd\n{\"version\":\"0.1.0\",\"sha256\":\"ab\"}\n").unwrap();
        assert_eq!((id.version.as_str(), id.sha256.as_str()), ("0.1.0", "ab"));
        assert!(parse_identity("bash: lightcone: command not found\n").is_none());
        let id = parse_identity(
            "{\"version\":\"0.1.0\",\"sha256\":\"ab\",\"underlay\":{\"name\":\"eth0\",\"ipv4\":\"198.19.0.1\",\"mtu\":1500}}",
        )
        .unwrap();
        assert_eq!(
            id.underlay.map(|u| (u.ipv4.to_string(), u.mtu)),
            Some(("198.19.0.1".to_string(), 1500))
        );
    }

    #[test]
    fn the_underlay_is_read_from_the_kernel_and_a_missing_one_is_named() {
        let lo = underlay_of("lo").unwrap();
        assert_eq!(lo.ipv4, std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(lo.mtu, 65536);
        assert_eq!(
            underlay_of("nosuchif0").unwrap_err(),
            "the host has no interface nosuchif0"
        );
        assert!(underlay_of("").is_err());
    }
}
