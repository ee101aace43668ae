//! One lab across several hosts (issue 19): the `hosts.yaml` file, [`placement`] of a plan
//! onto its hosts, the plan [`slice`] a `lightcone worker` builds, and cross-host links
//! over kernel [`vxlan`].
//!
//! `hosts.yaml` is read with the same toolkit as topologies ([`crate::parse`]): every
//! mistake is reported at once, with file:line:column and what would be valid.
//!
//! ```yaml
//! underlay_latency: 250us   # one-way latency between any two hosts' underlays
//! latency_margin: 1ms       # a link shorter than latency + margin never crosses hosts
//! vxlan_port: 4789          # UDP port of every cross-host link (one per lab)
//! vni_base: 1000            # link i crossing hosts gets VNI vni_base + i
//! hosts:
//!   h1: { ssh: root@198.18.255.1, underlay: eth0, capacity: 40, mtu: 1500 }
//!   h2: { ssh: root@198.18.255.2, underlay: ens3, capacity: 40, lightcone: /opt/lc/lightcone }
//! ssh_config: ssh_config    # optional: `ssh -F FILE` (relative to this file)
//! pin:
//!   l0a0: h1        # a node: its whole cell goes with it
//!   0.1.0: h2       # a cell, as layer.cluster.cell
//! ```

pub mod access;
pub mod control;
pub mod doctor;
pub mod placement;
pub mod rtt;
pub mod slice;
pub mod ssh;
pub mod vxlan;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use crate::parse::yaml::{Node, Pos};
use crate::parse::{Diagnostics, LoadError, Reader};

/// Most hosts one lab spans. Each is an ssh session and a worker; the controller holds a
/// line-reader per host.
pub const MAX_HOSTS: usize = 64;

/// Largest VNI a VXLAN header holds (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// What VXLAN adds to every frame on the underlay: outer Ethernet 14 + IPv4 20 + UDP 8 +
/// VXLAN 8 bytes. Every lab link gets the smallest underlay MTU minus this, so placing a
/// link on one host or across two never changes its MTU.
pub const VXLAN_OVERHEAD_BYTES: u32 = 50;

/// Smallest underlay MTU accepted: IPv4's minimum (576) plus the VXLAN overhead would do
/// for IP, but the agents' datagrams need ~1200 bytes; 1280 is IPv6's minimum link MTU.
pub const UNDERLAY_MTU_MIN: u32 = 1280;
/// Largest underlay MTU accepted (jumbo frames).
pub const UNDERLAY_MTU_MAX: u32 = 9216;

/// Default `underlay_latency`: 250 µs one-way, a LAN between two machines.
pub const DEFAULT_UNDERLAY_LATENCY_NS: u64 = 250_000;
/// Default `latency_margin`: 1 ms. A 500 µs link (issue 19's refusal case) cannot cross.
pub const DEFAULT_LATENCY_MARGIN_NS: u64 = 1_000_000;
/// IANA's VXLAN port.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
pub const DEFAULT_VNI_BASE: u32 = 1000;

/// A host that can hold part of a lab.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    pub name: String,
    /// What `ssh` is given to reach it (`user@host`, an alias of `~/.ssh/config`).
    pub ssh: String,
    /// The interface VXLAN packets leave by.
    pub underlay: String,
    /// Most nodes (namespaces with an agent) the host holds.
    pub capacity: NonZeroUsize,
    /// The underlay interface's MTU (default 1500).
    pub mtu: u32,
    /// The `lightcone` binary on the host, as its login shell finds it (default
    /// `lightcone` on its PATH). Only characters a shell takes literally.
    pub lightcone: String,
    /// Where the host is written in hosts.yaml.
    pub pos: Pos,
}

/// What a pin names: a node (its whole cell follows it) or a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Node(String),
    /// layer.cluster.cell
    Cell([u16; 3]),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Node(n) => write!(f, "node {n}"),
            Selector::Cell([l, c, k]) => write!(f, "cell {l}.{c}.{k}"),
        }
    }
}

/// `pin: {selector: host}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub selector: Selector,
    /// Index in [`Hosts::hosts`].
    pub host: usize,
    pub pos: Pos,
}

/// A resolved hosts.yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct Hosts {
    pub hosts: Vec<HostSpec>,
    pub pins: Vec<Pin>,
    /// One-way underlay latency between two hosts, real ns.
    pub underlay_latency_ns: u64,
    /// Added to the latency: a link whose real one-way delay is below the sum never
    /// crosses hosts (the underlay would eat it).
    pub latency_margin_ns: u64,
    pub vxlan_port: u16,
    pub vni_base: u32,
    /// `ssh_config:` — an OpenSSH client configuration given to every ssh as `-F`
    /// (relative paths are resolved against the hosts file's directory by [`load`]).
    pub ssh_config: Option<PathBuf>,
}

impl Hosts {
    /// The MTU every lab link gets: the smallest underlay MTU minus the VXLAN overhead.
    pub fn lab_mtu(&self) -> u32 {
        self.hosts.iter().map(|h| h.mtu).min().unwrap_or(1500) - VXLAN_OVERHEAD_BYTES
    }
    /// Shortest real one-way delay a link crossing hosts may have.
    pub fn min_crossing_delay_ns(&self) -> u64 {
        self.underlay_latency_ns
            .saturating_add(self.latency_margin_ns)
    }
    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }
}

const TOP_FIELDS: &[&str] = &[
    "underlay_latency",
    "latency_margin",
    "vxlan_port",
    "vni_base",
    "hosts",
    "pin",
    "ssh_config",
];
const HOST_FIELDS: &[&str] = &["ssh", "underlay", "capacity", "mtu", "lightcone"];

/// Default remote binary: `lightcone` on the host's PATH.
pub const DEFAULT_REMOTE_BINARY: &str = "lightcone";

/// Parse hosts.yaml text. `file` is only used in messages.
pub fn parse_str(src: &str, file: &str) -> Result<Hosts, LoadError> {
    crate::parse::parse_str(src, file, read_tree)
}

/// Read and parse a hosts file.
pub fn load(path: &Path) -> Result<Hosts, LoadError> {
    let src = crate::parse::read_source(path)?;
    let mut h = parse_str(&src, &path.display().to_string())?;
    if let Some(c) = h.ssh_config.take() {
        let base = path.parent().unwrap_or(Path::new("."));
        h.ssh_config = Some(if c.is_absolute() { c } else { base.join(c) });
    }
    Ok(h)
}

/// A remote binary path the host's shell runs as written: an absolute or bare name of
/// letters, digits and `/ . _ - +` (ssh hands the command line to the login shell, so
/// nothing it would expand or split may be in it).
fn valid_remote_binary(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 4096
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
}

/// A usable host name: the same rule as a lab name (it appears in messages, metrics
/// labels and state paths).
fn valid_host_name(s: &str) -> bool {
    crate::topology::valid_lab_name(s)
}

/// An interface name the kernel accepts: 1 to 15 bytes, no `/`, whitespace or `:`.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= crate::plan::IFNAME_MAX
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// An ssh target that cannot be taken for an option or carry a command.
fn valid_ssh_target(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_:[]".contains(c))
}

fn read_tree(root: &Node) -> Result<Hosts, Diagnostics> {
    let mut r = Reader::default();
    if root.is_null() {
        r.d.error_help(
            root.pos,
            "the hosts file is empty",
            "it needs `hosts:`, a mapping of host names to {ssh, underlay, capacity}",
        );
        return Err(r.d);
    }
    let Some(top) = r.fields(root, TOP_FIELDS, "the hosts file") else {
        return Err(r.d);
    };
    let underlay_latency_ns = Reader::get(&top, "underlay_latency")
        .and_then(|n| r.duration(n, "`underlay_latency`"))
        .unwrap_or(DEFAULT_UNDERLAY_LATENCY_NS);
    let latency_margin_ns = Reader::get(&top, "latency_margin")
        .and_then(|n| r.duration(n, "`latency_margin`"))
        .unwrap_or(DEFAULT_LATENCY_MARGIN_NS);
    let vxlan_port = match Reader::get(&top, "vxlan_port") {
        None => DEFAULT_VXLAN_PORT,
        Some(n) => match r.uint(n, "`vxlan_port`", u16::MAX as u64) {
            Some(0) => {
                r.d.error_help(
                    n.pos,
                    "`vxlan_port` must not be 0",
                    "4789 is VXLAN's port; use another one per lab sharing hosts",
                );
                DEFAULT_VXLAN_PORT
            }
            Some(p) => p as u16,
            None => DEFAULT_VXLAN_PORT,
        },
    };
    let vni_base = match Reader::get(&top, "vni_base") {
        None => DEFAULT_VNI_BASE,
        Some(n) => match r.uint(n, "`vni_base`", VNI_MAX as u64) {
            Some(0) => {
                r.d.error_help(
                    n.pos,
                    "`vni_base` must be at least 1",
                    "VNI 0 is often reserved; the default is 1000",
                );
                DEFAULT_VNI_BASE
            }
            Some(v) => v as u32,
            None => DEFAULT_VNI_BASE,
        },
    };
    let ssh_config = Reader::get(&top, "ssh_config").and_then(|n| {
        let s = r.string(n, "`ssh_config`")?;
        if s.is_empty() || s.contains('\0') {
            r.d.error_help(
                n.pos,
                "`ssh_config` is not a file name",
                "name an OpenSSH client configuration file, e.g. `ssh_config: ./ssh_config`",
            );
            return None;
        }
        Some(PathBuf::from(s))
    });
    let mut hosts = Vec::new();
    match r.required(&top, "hosts", root.pos, "the hosts file") {
        None => {}
        Some(hn) => {
            let Some(entries) = r.fields_any(hn, "`hosts`") else {
                return Err(r.d);
            };
            if entries.is_empty() {
                r.d.error_help(
                    hn.pos,
                    "`hosts` lists no host",
                    "add e.g. `h1: {ssh: root@10.0.0.1, underlay: eth0, capacity: 40}`",
                );
            }
            if entries.len() > MAX_HOSTS {
                r.d.error(
                    hn.pos,
                    format!(
                        "a lab spans at most {MAX_HOSTS} hosts, this file lists {}",
                        entries.len()
                    ),
                );
            }
            for (key, name, node) in entries {
                if !valid_host_name(name) {
                    r.d.error_help(
                        key.pos,
                        format!("host name {name:?} is not usable"),
                        crate::topology::LAB_NAME_RULE,
                    );
                    continue;
                }
                if let Some(h) = read_host(&mut r, name, key.pos, node) {
                    hosts.push(h);
                }
            }
        }
    }
    let mut pins = Vec::new();
    if let Some(pn) = Reader::get(&top, "pin") {
        if let Some(entries) = r.fields_any(pn, "`pin`") {
            let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            for (key, sel, node) in entries {
                let selector = parse_selector(sel);
                let Some(host_name) = r.name(node, "a pin's host") else {
                    continue;
                };
                match hosts.iter().position(|h| h.name == host_name) {
                    Some(host) => pins.push(Pin {
                        selector,
                        host,
                        pos: key.pos,
                    }),
                    None => {
                        let hint = crate::parse::did_you_mean(&host_name, &names)
                            .map(|m| format!("did you mean `{m}`? "))
                            .unwrap_or_default();
                        r.d.error_help(
                            node.pos,
                            format!("pin of {selector} names host {host_name:?}, which is not in `hosts`"),
                            format!("{hint}hosts: {}", names.join(", ")),
                        );
                    }
                }
            }
        }
    }
    if !r.d.is_empty() {
        return Err(r.d);
    }
    Ok(Hosts {
        hosts,
        pins,
        underlay_latency_ns,
        latency_margin_ns,
        vxlan_port,
        vni_base,
        ssh_config,
    })
}

/// `L.C.K` is a cell; anything else a node name.
fn parse_selector(s: &str) -> Selector {
    let parts: Vec<Option<u16>> = s.split('.').map(|p| p.parse::<u16>().ok()).collect();
    match parts[..] {
        [Some(l), Some(c), Some(k)] => Selector::Cell([l, c, k]),
        _ => Selector::Node(s.to_string()),
    }
}

fn read_host(r: &mut Reader, name: &str, at: Pos, node: &Node) -> Option<HostSpec> {
    let what = format!("host `{name}`");
    let f = r.fields(node, HOST_FIELDS, &what)?;
    let ssh = r
        .required(&f, "ssh", at, &what)
        .and_then(|n| r.string(n, "`ssh`").map(|s| (n, s)))
        .and_then(|(n, s)| {
            if valid_ssh_target(&s) {
                Some(s)
            } else {
                r.d.error_help(
                    n.pos,
                    format!("ssh target {s:?} is not usable"),
                    "write `user@host`, `host` or an alias of ~/.ssh/config (letters, digits, @ . - _ : [ ]; not starting with -)",
                );
                None
            }
        });
    let underlay = r
        .required(&f, "underlay", at, &what)
        .and_then(|n| r.string(n, "`underlay`").map(|s| (n, s)))
        .and_then(|(n, s)| {
            if valid_ifname(&s) {
                Some(s)
            } else {
                r.d.error_help(
                    n.pos,
                    format!("underlay interface {s:?} is not an interface name"),
                    "an interface name has 1 to 15 bytes and no `/`, `:` or spaces (e.g. eth0)",
                );
                None
            }
        });
    let capacity = r
        .required(&f, "capacity", at, &what)
        .and_then(|n| {
            r.uint(n, "`capacity`", crate::topology::MAX_NODES as u64)
                .map(|c| (n, c))
        })
        .and_then(|(n, c)| match NonZeroUsize::new(c as usize) {
            Some(c) => Some(c),
            None => {
                r.d.error_help(
                    n.pos,
                    "`capacity` must be at least 1",
                    "it is how many nodes (namespaces with an agent) the host holds",
                );
                None
            }
        });
    let mtu = match Reader::get(&f, "mtu") {
        None => Some(1500),
        Some(n) => match r.uint(n, "`mtu`", u32::MAX as u64) {
            Some(m) if (UNDERLAY_MTU_MIN as u64..=UNDERLAY_MTU_MAX as u64).contains(&m) => {
                Some(m as u32)
            }
            Some(m) => {
                r.d.error_help(
                    n.pos,
                    format!("`mtu` {m} is out of range"),
                    format!("an underlay MTU is {UNDERLAY_MTU_MIN} to {UNDERLAY_MTU_MAX} bytes (VXLAN takes {VXLAN_OVERHEAD_BYTES} of it)"),
                );
                None
            }
            None => None,
        },
    };
    let lightcone = match Reader::get(&f, "lightcone") {
        None => Some(DEFAULT_REMOTE_BINARY.to_string()),
        Some(n) => r.string(n, "`lightcone`").and_then(|s| {
            if valid_remote_binary(&s) {
                Some(s)
            } else {
                r.d.error_help(
                    n.pos,
                    format!("`lightcone` {s:?} is not a usable binary path"),
                    "write a path of letters, digits and / . _ - + (the host's shell runs it as written), e.g. /usr/local/bin/lightcone",
                );
                None
            }
        }),
    };
    Some(HostSpec {
        name: name.to_string(),
        ssh: ssh?,
        underlay: underlay?,
        capacity: capacity?,
        mtu: mtu?,
        lightcone: lightcone?,
        pos: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "underlay_latency: 300us
hosts:
  h1: { ssh: root@198.18.255.1, underlay: eth0, capacity: 40 }
  h2: { ssh: h2-alias, underlay: ens3, capacity: 8, mtu: 9000 }
pin:
  l0a0: h1
  0.1.0: h2
";

    fn error_of(src: &str) -> String {
        match parse_str(src, "hosts.yaml") {
            Ok(h) => panic!("expected an error for:\n{src}\ngot {h:?}"),
            Err(LoadError::Invalid { rendered, .. }) => rendered,
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }

    #[test]
    fn a_good_file_reads_with_defaults() {
        let h = parse_str(GOOD, "hosts.yaml").unwrap();
        assert_eq!(h.hosts.len(), 2);
        assert_eq!(h.hosts[0].name, "h1");
        assert_eq!(h.hosts[1].mtu, 9000);
        assert_eq!(h.hosts[0].mtu, 1500);
        assert_eq!(h.underlay_latency_ns, 300_000);
        assert_eq!(h.latency_margin_ns, DEFAULT_LATENCY_MARGIN_NS);
        assert_eq!(h.vxlan_port, 4789);
        assert_eq!(h.lab_mtu(), 1450);
        assert_eq!(h.min_crossing_delay_ns(), 1_300_000);
        assert_eq!(
            h.pins,
            [
                Pin {
                    selector: Selector::Node("l0a0".into()),
                    host: 0,
                    pos: Pos { line: 6, col: 3 }
                },
                Pin {
                    selector: Selector::Cell([0, 1, 0]),
                    host: 1,
                    pos: Pos { line: 7, col: 3 }
                },
            ]
        );
    }

    #[test]
    fn empty_file_is_refused() {
        assert!(error_of("").contains("the hosts file is empty"));
    }

    #[test]
    fn missing_hosts_is_refused() {
        let e = error_of("vxlan_port: 4790\n");
        assert!(e.contains("the hosts file needs `hosts`"), "{e}");
    }

    #[test]
    fn no_host_listed_is_refused() {
        let e = error_of("hosts: {}\n");
        assert!(e.contains("`hosts` lists no host"), "{e}");
    }

    #[test]
    fn unknown_keys_are_located_with_a_suggestion() {
        let e = error_of("hosts:\n  h1: { ssh: a, underlay: eth0, capacty: 4 }\n");
        assert!(e.contains("hosts.yaml:2:33"), "{e}");
        assert!(e.contains("unknown key `capacty` in host `h1`"), "{e}");
        assert!(e.contains("did you mean `capacity`?"), "{e}");
        assert!(e.contains("host `h1` needs `capacity`"), "{e}");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let e = error_of(
            "hosts:
  H_1: { ssh: a, underlay: eth0, capacity: 1 }
  h2: { ssh: -oProxyCommand=x, underlay: a/b, capacity: 0, mtu: 100 }
  h3: { ssh: a, underlay: averyveryverylongname, capacity: 10001 }
vxlan_port: 0
vni_base: 16777216
underlay_latency: 5
",
        );
        for want in [
            "hosts.yaml:2:3",
            "host name \"H_1\" is not usable",
            "hosts.yaml:3:14",
            "ssh target \"-oProxyCommand=x\" is not usable",
            "underlay interface \"a/b\" is not an interface name",
            "`capacity` must be at least 1",
            "`mtu` 100 is out of range",
            "underlay interface \"averyveryverylongname\"",
            "`capacity` must be at most 10000, got 10001",
            "`vxlan_port` must not be 0",
            "`vni_base` must be at most 16777215",
            "`underlay_latency`: \"5\" has no unit",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn a_duplicate_host_is_refused() {
        let e = error_of(
            "hosts:\n  h1: { ssh: a, underlay: eth0, capacity: 1 }\n  h1: { ssh: b, underlay: eth0, capacity: 1 }\n",
        );
        assert!(e.contains("hosts.yaml:3:3"), "{e}");
        assert!(e.contains("duplicate key `h1` in `hosts`"), "{e}");
    }

    #[test]
    fn a_pin_to_an_unknown_host_is_refused_with_a_suggestion() {
        let e = error_of(
            "hosts:\n  alpha: { ssh: a, underlay: eth0, capacity: 1 }\npin:\n  x: alpah\n",
        );
        assert!(e.contains("hosts.yaml:4:6"), "{e}");
        assert!(
            e.contains("names host \"alpah\", which is not in `hosts`"),
            "{e}"
        );
        assert!(e.contains("did you mean `alpha`?"), "{e}");
    }

    #[test]
    fn the_remote_binary_and_ssh_config_are_read_and_checked() {
        let h = parse_str(
            "ssh_config: cfg/ssh_config\nhosts:\n  h1: { ssh: a, underlay: eth0, capacity: 1, lightcone: /opt/lc-1.0/lightcone }\n  h2: { ssh: b, underlay: eth0, capacity: 1 }\n",
            "hosts.yaml",
        )
        .unwrap();
        assert_eq!(h.hosts[0].lightcone, "/opt/lc-1.0/lightcone");
        assert_eq!(h.hosts[1].lightcone, DEFAULT_REMOTE_BINARY);
        assert_eq!(h.ssh_config, Some(PathBuf::from("cfg/ssh_config")));
        let e = error_of(
            "hosts:\n  h1: { ssh: a, underlay: eth0, capacity: 1, lightcone: \"lightcone; rm -rf /\" }\n",
        );
        assert!(e.contains("hosts.yaml:2:57"), "{e}");
        assert!(
            e.contains("`lightcone` \"lightcone; rm -rf /\" is not a usable binary path"),
            "{e}"
        );
        let e = error_of(
            "ssh_config: 3\nhosts:\n  h1: { ssh: a, underlay: eth0, capacity: 1, lightcone: -x }\n",
        );
        assert!(
            e.contains("`lightcone` \"-x\" is not a usable binary path"),
            "{e}"
        );
    }

    #[test]
    fn hosts_must_be_a_mapping() {
        let e = error_of("hosts: [a, b]\n");
        assert!(e.contains("`hosts` must be a mapping, found a list"), "{e}");
    }
}
