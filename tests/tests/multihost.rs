//! One lab across several hosts (issue 19), the parts that run on one machine: `plan
//! --hosts` (placement printed, refusals exit 2) and `lightcone worker --stdio` (a slice
//! built, torn down when stdin closes; a malformed slice refused with nothing changed).
//! Real binaries; the worker tests need root and run under the lab lock.

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
