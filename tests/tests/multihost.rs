//! One lab across several hosts (issue 19), the parts that run on one machine: `plan
//! --hosts` (placement printed, refusals exit 2), `lightcone worker --stdio` (a slice
//! built, torn down when stdin closes; a malformed slice refused with nothing changed),
//! and the OpenSSH controller: `up --hosts` / `status` / `down` / `doctor --hosts` through
//! a private `sshd` on 127.0.0.1 (a throwaway host key and client key in a temp dir),
//! with this machine as the one host. Real binaries; the worker and ssh tests need root
//! and run under the lab lock.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lightcone_e2e::*;

/// Two clusters of one 3-tile cell each, joined by a 200 ms / 2 % link (the VM
/// lab; between clusters of a layer it is a layer-level link), no authority.
const TWO_CLUSTERS: &str = "name: x
seed: 5
generate:
  layers:
    - { radius_au: 1.0, clusters: 2, cells: 1, tiles: 3, authorities: 0 }
  cell_fabric: star
  links:
    cell: { delay: 2ms }
    layer: { delay: 200ms, loss: 2% }
";

const HOSTS: &str = "hosts:
  vm1: { ssh: root@vm1, underlay: eth0, capacity: 3 }
  vm2: { ssh: root@vm2, underlay: eth0, capacity: 3, mtu: 1400 }
";

/// A lab name starting with this branch's name, unique to the process.
fn lab(tag: &str) -> String {
    format!("multihost{}-{tag}", std::process::id())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn plan_with_hosts_prints_the_placement_and_the_crossing_links() {
    let tmp = tempfile::tempdir().unwrap();
    let topo = write(
        tmp.path(),
        "t.yaml",
        &TWO_CLUSTERS.replace("name: x", "name: mh"),
    );
    let hosts = write(tmp.path(), "hosts.yaml", HOSTS);
    let out = lc_ok(&["plan", &topo, "--hosts", &hosts]);
    println!("{out}");
    assert!(out.contains("lab link MTU 1350"), "{out}");
    assert!(
        out.contains(
            "host vm1 (root@vm1, underlay eth0): 3 of 3 nodes: l0c0k0t0 l0c0k0t1 l0c0k0t2"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "host vm2 (root@vm2, underlay eth0): 3 of 3 nodes: l0c1k0t0 l0c1k0t1 l0c1k0t2"
        ),
        "{out}"
    );
    assert!(
        out.contains("cross l0c0k0t0--l0c1k0t0 layer l0c0k0t0@vm1 <-> l0c1k0t0@vm2 vni"),
        "{out}"
    );
}

#[test]
fn plan_with_hosts_refuses_what_cannot_be_placed_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let topo = write(
        tmp.path(),
        "t.yaml",
        &TWO_CLUSTERS.replace("name: x", "name: mh"),
    );
    let short = write(
        tmp.path(),
        "short.yaml",
        &TWO_CLUSTERS.replace("name: x", "name: mh").replace(
            "layer: { delay: 200ms, loss: 2% }",
            "layer: { delay: 500us }",
        ),
    );
    let hosts = write(tmp.path(), "hosts.yaml", HOSTS);
    let small = write(
        tmp.path(),
        "small.yaml",
        "hosts:\n  vm1: { ssh: vm1, underlay: eth0, capacity: 3 }\n  vm2: { ssh: vm2, underlay: eth0, capacity: 2 }\n",
    );
    let pinned = write(
        tmp.path(),
        "pinned.yaml",
        &format!("{HOSTS}pin:\n  l0c0k0t0: vm1\n  l0c0k0t2: vm2\n"),
    );
    let typo = write(
        tmp.path(),
        "typo.yaml",
        "hosts:\n  vm1: { ssh: vm1, underlay: eth0, capacty: 3 }\n",
    );
    for (hosts_file, topo_file, want) in [
        (&hosts, &short, "link l0c0k0t0--l0c1k0t0 (link 4, layer level, l0c0k0t0 on host vm1 to l0c1k0t0 on host vm2) would cross hosts with a real one-way delay of 500us"),
        (&small, &topo, "no host has room for cell 0.1.0"),
        (&pinned, &topo, "pins cannot both hold"),
        (&typo, &topo, "typo.yaml:2:36"),
    ] {
        let o = lc(&["plan", topo_file, "--hosts", hosts_file]);
        let err = String::from_utf8_lossy(&o.stderr);
        println!("{err}");
        assert_eq!(o.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "want {want:?} in:\n{err}");
        assert!(o.stdout.is_empty());
    }
}

/// Read JSON lines from the worker until one has `event == want` (or the deadline).
fn wait_event(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    want: &str,
    deadline: Instant,
    seen: &mut Vec<String>,
) -> Option<serde_json::Value> {
    while Instant::now() < deadline {
        let line = lines.next()?.ok()?;
        seen.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        if v["event"] == want {
            return Some(v);
        }
        if v["event"] == "error" {
            return None;
        }
    }
    None
}

fn vxlan_or_lab_ifaces_in_root() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("multihost"))
        .collect()
}

/// `lightcone worker --stdio` with its three streams piped.
fn spawn_worker() -> std::process::Child {
    Command::new(lightcone_bin())
        .args(["worker", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

/// `plan --slice one` of a one-cell lab named `lab` on one host: a 3-tile slice with no
/// link to another host.
fn one_cell_slice(dir: &Path, lab: &str) -> String {
    let single = write(
        dir,
        "single.yaml",
        &TWO_CLUSTERS
            .replace("name: x", &format!("name: {lab}"))
            .replace("clusters: 2", "clusters: 1"),
    );
    let one = write(
        dir,
        "one.yaml",
        "hosts:\n  one: { ssh: one, underlay: eth0, capacity: 3 }\n",
    );
    lc_ok(&["plan", &single, "--hosts", &one, "--slice", "one"])
}

#[test]
fn worker_builds_a_cell_slice_and_tears_it_down_when_stdin_closes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab("wk");
    let slice = one_cell_slice(tmp.path(), &lab);
    let _guard = LabGuard(lab.clone());
    let mut w = spawn_worker();
    let mut stdin = w.stdin.take().unwrap();
    stdin.write_all(slice.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let ready = wait_event(
        &mut lines,
        "ready",
        Instant::now() + Duration::from_secs(60),
        &mut seen,
    );
    let Some(ready) = ready else {
        let _ = w.kill();
        let o = w.wait_with_output().unwrap();
        panic!(
            "no ready line; saw {seen:#?}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    println!("ready: {ready}");
    assert_eq!(ready["lab"], lab.as_str());
    assert_eq!(ready["nodes"], 3);
    // Three node namespaces and the wire engine's (this host has no netem).
    let mut want_ns: Vec<String> = ready["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    want_ns.sort();
    assert_eq!(want_ns.len(), 4);
    assert_eq!(lab_namespaces(&lab), want_ns, "the worker's namespaces");
    let procs = lab_processes(&lab);
    assert!(procs.len() >= 3, "agents: {procs:?}");
    // Close stdin: the controller went away.
    let t0 = Instant::now();
    drop(stdin);
    let gone = wait_until(Duration::from_secs(10), || {
        lab_namespaces(&lab).is_empty()
            && lab_processes(&lab).is_empty()
            && !Path::new("/run/lightcone").join(&lab).exists()
            && w.try_wait().ok().flatten().is_some()
    });
    let took = t0.elapsed();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    println!("after stdin closed: {rest:?}; gone in {took:?}");
    assert!(gone, "not torn down within 10 s of stdin closing: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("\"event\":\"down\"")),
        "{rest:?}"
    );
    assert!(w.wait().unwrap().success());
    assert_gone(&lab);
    assert!(vxlan_or_lab_ifaces_in_root().is_empty());
}

#[test]
fn worker_refuses_a_malformed_slice_and_changes_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab("bad");
    let good = one_cell_slice(tmp.path(), &lab);
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["plan"]["nodes"][0]["netns"] = "lc-someoneelse_x".into();
    let renamed = v.to_string() + "\n";
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["controller"]["sha256"] = "00".into();
    let other_build = v.to_string() + "\n";
    let netns_before: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for (input, want) in [
        (
            "{\"format\": 1, \"plan\": 3}\n".to_string(),
            "not valid JSON",
        ),
        (String::new(), "no slice on stdin"),
        (
            renamed,
            "namespace \\\"lc-someoneelse_x\\\" is not the lab's",
        ),
        (other_build, "copy the controller's binary to this host"),
    ] {
        let mut w = spawn_worker();
        let mut stdin = w.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let o = w.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        println!("{out}");
        assert_eq!(o.status.code(), Some(2), "{want}: {out}");
        assert!(out.contains("\"event\":\"error\""), "{out}");
        assert!(out.contains("\"changed\":false"), "{out}");
        assert!(out.contains(want), "want {want:?} in {out}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("nothing was changed"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_gone(&lab);
    }
    let netns_after: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        netns_after
            .iter()
            .all(|n| netns_before.contains(n) || !n.contains(&lab)),
        "{netns_after:?}"
    );
}

/// A private `sshd` on 127.0.0.1 on a free port, with a throwaway host key and an
/// authorized client key in a temp dir, and an ssh client configuration naming it as host
/// `sshlab`. Dropped: sshd is killed and the temp dir removed (also when a test fails).
struct Sshd {
    child: std::process::Child,
    port: u16,
    // Declared last: removed after sshd is gone.
    dir: tempfile::TempDir,
}

impl Sshd {
    /// After a multi-host lab is gone: no controller record of `lab` and no ssh process of
    /// this sshd's sessions within 15 s.
    fn assert_no_controller_left(&self, lab: &str) {
        assert!(!Path::new("/run/lightcone/.hosts").join(lab).exists());
        assert!(
            wait_until(Duration::from_secs(15), || self.ssh_processes().is_empty()),
            "ssh processes left: {:?}",
            self.ssh_processes()
        );
    }

    fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for key in ["host_key", "id"] {
            let o = Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "lightcone-test",
                    "-f",
                ])
                .arg(d.join(key))
                .output()
                .expect("ssh-keygen (openssh-client)");
            assert!(o.status.success(), "{}", text(&o));
        }
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        // A free port: bound, read, released (sshd takes it an instant later).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A port nothing listens on: host `sshdown`.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = |f: &str| d.join(f).to_str().unwrap().to_string();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nStrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nMaxSessions 32\nLogLevel ERROR\n",
                p("host_key"),
                p("authorized_keys")
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host sshlab\n  HostName 127.0.0.1\n  Port {port}\nHost sshdown\n  HostName 127.0.0.1\n  Port {closed}\nHost *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
                p("id"),
                p("known_hosts")
            ),
        )
        .unwrap();
        // sshd's privilege separation directory (Debian's package makes it at boot).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("start /usr/sbin/sshd (openssh-server; tests/setup.sh installs it)");
        let mut s = Sshd { child, port, dir };
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok()
        });
        if !up {
            let _ = s.child.kill();
            panic!(
                "sshd did not listen on 127.0.0.1:{}: {}",
                s.port,
                std::fs::read_to_string(s.dir.path().join("sshd.log")).unwrap_or_default()
            );
        }
        s
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_str().unwrap().to_string()
    }

    /// A hosts file: the one host `here` is this machine through the private sshd.
    fn hosts_file(&self, binary: &str) -> String {
        self.hosts_file_to("sshlab", binary)
    }

    /// A hosts file whose one host `here` is ssh target `target`.
    fn hosts_file_to(&self, target: &str, binary: &str) -> String {
        write(
            self.dir.path(),
            "hosts.yaml",
            &format!(
                "ssh_config: {}\nhosts:\n  here: {{ ssh: {target}, underlay: lo, capacity: 3, lightcone: {binary} }}\n",
                self.path("ssh_config")
            ),
        )
    }

    /// ssh processes that use this test's client configuration (masters, sessions).
    fn ssh_processes(&self) -> Vec<String> {
        let cfg = self.path("ssh_config");
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.starts_with("ssh") && cmd.contains(&cfg) {
                    out.push(cmd);
                }
            }
        }
        out
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 3-tile, one-cell lab `lab`.
fn one_cell_topology(dir: &Path, lab: &str) -> String {
    write(
        dir,
        "cell.yaml",
        &TWO_CLUSTERS
            .replace("name: x", &format!("name: {lab}"))
            .replace("clusters: 2", "clusters: 1"),
    )
}

fn controller_pid(lab: &str) -> Option<u32> {
    let p = Path::new("/run/lightcone/.hosts")
        .join(lab)
        .join("controller.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

fn identity(binary: &str) -> String {
    let o = Command::new(binary)
        .args(["worker", "--identify"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["sha256"].as_str().unwrap().to_string()
}

#[test]
fn ssh_controller_runs_a_cell_on_one_host_and_kill_9_tears_the_worker_down() {
    require_root();
    let sshd = Sshd::start();
    let lab = format!("ssh{}-up", std::process::id());
    let topo = one_cell_topology(sshd.dir.path(), &lab);
    let hosts = sshd.hosts_file(lightcone_bin().to_str().unwrap());
    let _guard = LabGuard(lab.clone());
    let t0 = Instant::now();
    let up = lc(&["up", &topo, "--hosts", &hosts, "--detach"]);
    println!("{}", text(&up));
    assert!(up.status.success(), "{}", text(&up));
    println!("up --hosts over ssh took {:?}", t0.elapsed());
    let out = String::from_utf8_lossy(&up.stdout);
    assert!(
        out.contains("host here (sshlab): 3 nodes, worker pid"),
        "{out}"
    );
    // A second `up` of the same lab is refused, nothing changed.
    let again = lc(&["up", &topo, "--hosts", &hosts, "--detach"]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up on hosts"));

    let st = lc_ok(&["status", &lab, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    let l = &v["labs"][0];
    println!("hosts: {}", l["hosts"]);
    assert_eq!(l["state"], "up", "{st}");
    assert_eq!(l["hosts"][0]["name"], "here");
    assert_eq!(l["hosts"][0]["ssh"], "sshlab");
    assert_eq!(l["hosts"][0]["worker_state"], "ready");
    assert!(l["hosts"][0]["worker_pid"].as_u64().is_some(), "{st}");
    assert!(l["hosts"][0]["underlay_rtt_ms"].is_null());
    assert!(l["hosts"][0]["clock_offset_ms"].is_null());
    let nodes = l["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{st}");
    for n in nodes {
        assert_eq!(n["host"], "here", "{n}");
        assert_eq!(n["agent"]["state"], "running", "{n}");
    }
    assert_eq!(
        lab_namespaces(&lab).len(),
        4,
        "3 nodes and the wire engine's"
    );
    let human = lc_ok(&["status", &lab]);
    println!("{human}");
    assert!(
        human.contains("up on 1 host(s)") && human.contains("3 agents running"),
        "{human}"
    );

    // kill -9 of the controller: its ssh session's stdin closes, the worker tears down.
    let pid = controller_pid(&lab).expect("controller.json names the controller");
    let t0 = Instant::now();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let gone = wait_until(Duration::from_secs(10), || {
        lab_namespaces(&lab).is_empty()
            && lab_processes(&lab).is_empty()
            && !Path::new("/run/lightcone").join(&lab).exists()
    });
    let took = t0.elapsed();
    println!("after kill -9 of the controller the worker tore down in {took:?}");
    assert!(
        gone,
        "not torn down within 10 s: {:?}",
        lab_namespaces(&lab)
    );
    let stale = lc_ok(&["status", &lab, "--json"]);
    assert!(stale.contains("\"state\": \"stale\""), "{stale}");
    // `down` twice: the first removes the record and the ssh master, the second has
    // nothing to do.
    let d1 = lc_ok(&["down", &lab]);
    let d2 = lc_ok(&["down", &lab]);
    println!("{d1}{d2}");
    assert!(d2.contains("is not up; nothing to do"), "{d2}");
    assert!(!Path::new("/run/lightcone/.hosts").join(&lab).exists());
    assert_gone(&lab);
    let left = wait_until(Duration::from_secs(15), || sshd.ssh_processes().is_empty());
    assert!(left, "ssh processes left: {:?}", sshd.ssh_processes());
}

#[test]
fn ssh_controller_down_ends_a_detached_lab_in_order() {
    require_root();
    let sshd = Sshd::start();
    let lab = format!("ssh{}-down", std::process::id());
    let topo = one_cell_topology(sshd.dir.path(), &lab);
    let hosts = sshd.hosts_file(lightcone_bin().to_str().unwrap());
    let _guard = LabGuard(lab.clone());
    lc_ok(&["up", &topo, "--hosts", &hosts, "--detach", "--no-agents"]);
    assert_eq!(lab_namespaces(&lab).len(), 4);
    let t0 = Instant::now();
    let d1 = lc_ok(&["down", &lab]);
    println!("{d1}down took {:?}", t0.elapsed());
    assert!(
        d1.contains("every host's worker tore its slice down"),
        "{d1}"
    );
    assert_gone(&lab);
    assert!(lc_ok(&["down", &lab]).contains("nothing to do"));
    sshd.assert_no_controller_left(&lab);
}

#[test]
fn ssh_controller_refuses_another_build_and_builds_nothing() {
    require_root();
    let sshd = Sshd::start();
    let lab = format!("ssh{}-hash", std::process::id());
    let topo = one_cell_topology(sshd.dir.path(), &lab);
    // Another build: the same binary with a byte appended (it still runs).
    let other = sshd.path("lightcone-other");
    let mut bytes = std::fs::read(lightcone_bin()).unwrap();
    bytes.push(0);
    std::fs::write(&other, bytes).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hosts = sshd.hosts_file(&other);
    let _guard = LabGuard(lab.clone());
    let o = lc(&["up", &topo, "--hosts", &hosts, "--detach"]);
    let err = String::from_utf8_lossy(&o.stderr);
    println!("{err}");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains("host here:"), "{err}");
    assert!(err.contains(&identity(&other)), "{err}");
    assert!(
        err.contains(&identity(lightcone_bin().to_str().unwrap())),
        "{err}"
    );
    assert!(err.contains("nothing was built on any host"), "{err}");
    assert_gone(&lab);
    assert!(!Path::new("/run/lightcone/.hosts").join(&lab).exists());
    // doctor --hosts says the same, with a fix, and passes the rest.
    let d = lc(&["doctor", "--hosts", &hosts]);
    let out = String::from_utf8_lossy(&d.stdout);
    println!("{out}");
    assert_eq!(d.status.code(), Some(1), "{}", text(&d));
    assert!(out.contains("FAIL  binary"), "{out}");
    assert!(out.contains("copy this build there"), "{out}");
    for ok in [
        "ok    ssh",
        "ok    root",
        "ok    vxlan",
        "ok    underlay",
        "ok    clock",
    ] {
        assert!(out.contains(ok), "want {ok:?} in {out}");
    }
    let good = sshd.hosts_file(lightcone_bin().to_str().unwrap());
    let d = lc(&["doctor", "--hosts", &good, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    println!(
        "{}",
        serde_json::to_string_pretty(&v["hosts"][0]["clock"]).unwrap()
    );
    assert_eq!(v["ok"], true, "{}", text(&d));
    assert!(
        wait_until(Duration::from_secs(15), || sshd.ssh_processes().is_empty()),
        "ssh processes left: {:?}",
        sshd.ssh_processes()
    );
}

#[test]
fn up_with_hosts_refuses_links_between_hosts_until_the_worker_builds_vxlan() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = format!("ssh{}-cross", std::process::id());
    let topo = write(
        tmp.path(),
        "t.yaml",
        &TWO_CLUSTERS.replace("name: x", &format!("name: {lab}")),
    );
    let hosts = write(tmp.path(), "hosts.yaml", HOSTS);
    let o = lc(&["up", &topo, "--hosts", &hosts]);
    let err = String::from_utf8_lossy(&o.stderr);
    println!("{err}");
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not build VXLAN links yet"), "{err}");
    assert!(err.contains("between host vm1 and host vm2"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!Path::new("/run/lightcone/.hosts").join(&lab).exists());
}

#[test]
fn ssh_controller_in_the_foreground_tears_down_on_ctrl_c() {
    require_root();
    let sshd = Sshd::start();
    let lab = format!("ssh{}-fg", std::process::id());
    let topo = one_cell_topology(sshd.dir.path(), &lab);
    let hosts = sshd.hosts_file(lightcone_bin().to_str().unwrap());
    let _guard = LabGuard(lab.clone());
    let mut up = Command::new(lightcone_bin())
        .args(["up", &topo, "--hosts", &hosts, "--no-agents"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(l)) = lines.next() else { break };
        seen.push(l.clone());
        if l.contains("press Ctrl-C") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("is up on 1 host(s)")),
        "{seen:#?}"
    );
    assert_eq!(lab_namespaces(&lab).len(), 4);
    let t0 = Instant::now();
    unsafe {
        libc::kill(up.id() as i32, libc::SIGINT);
    }
    let st = up.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    println!("after Ctrl-C ({:?}): {rest:?}", t0.elapsed());
    assert!(st.success(), "{st:?} {rest:?}");
    assert!(rest.iter().any(|l| l.contains("is down")), "{rest:?}");
    assert_gone(&lab);
    sshd.assert_no_controller_left(&lab);
}

/// A worker that fails mid-build (the netem engine on a kernel without netem): the
/// controller closes every session and exits with the worker's code and message; the
/// worker has removed what it made.
#[test]
fn ssh_controller_passes_on_a_workers_error_and_leaves_nothing() {
    require_root();
    let sshd = Sshd::start();
    let lab = format!("ssh{}-err", std::process::id());
    let topo = one_cell_topology(sshd.dir.path(), &lab);
    let hosts = sshd.hosts_file(lightcone_bin().to_str().unwrap());
    let _guard = LabGuard(lab.clone());
    let o = lc(&[
        "up",
        &topo,
        "--hosts",
        &hosts,
        "--detach",
        "--link-engine",
        "netem",
        "--no-agents",
    ]);
    println!("{}", text(&o));
    if o.status.success() {
        // This kernel has netem: nothing fails here to test.
        lc_ok(&["down", &lab]);
        println!("netem is available here; the failure path was not exercised");
        return;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains("host here:"), "{err}");
    assert!(err.contains("netem"), "{err}");
    assert_gone(&lab);
    sshd.assert_no_controller_left(&lab);
}

#[test]
fn ssh_controller_and_doctor_name_an_unreachable_host_and_build_nothing() {
    require_root();
    let sshd = Sshd::start();
    let lab = format!("ssh{}-unreach", std::process::id());
    let topo = one_cell_topology(sshd.dir.path(), &lab);
    let hosts = sshd.hosts_file_to("sshdown", lightcone_bin().to_str().unwrap());
    let _guard = LabGuard(lab.clone());
    let o = lc(&["up", &topo, "--hosts", &hosts, "--detach"]);
    let err = String::from_utf8_lossy(&o.stderr);
    println!("{err}");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.contains("host here: ssh sshdown failed"), "{err}");
    assert!(err.contains("lightcone doctor --hosts"), "{err}");
    assert!(err.contains("nothing was built on any host"), "{err}");
    assert_gone(&lab);
    assert!(!Path::new("/run/lightcone/.hosts").join(&lab).exists());
    let d = lc(&["doctor", "--hosts", &hosts]);
    let out = String::from_utf8_lossy(&d.stdout);
    println!("{out}");
    assert_eq!(d.status.code(), Some(1), "{}", text(&d));
    assert!(out.contains("FAIL  ssh"), "{out}");
    assert!(out.contains("ssh-copy-id sshdown"), "{out}");
    assert!(
        out.contains("not ready: 1 of 1 host(s) failed a check (here)"),
        "{out}"
    );
}
