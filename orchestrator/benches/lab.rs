//! What a user waits for: `lightcone up --detach` and `lightcone down` run as processes, for
//! generated labs of 200 and 1,000 nodes (cells of 10 tiles on a ring, cells of a cluster
//! on a star, clusters of 10 cells), with the wire engine: with agents (one agent process
//! per cell of 10 tiles, `agents.tiles_per_process: 10`), without agents, and, with
//! `LIGHTCONE_BENCH_PER_NODE=1`, with one agent process per node; beside it the same number
//! of Mininet hosts in a line (`mn`'s Python API: `build` + `start`, then `stop`), if `mn`
//! is installed. Under the table, the supervisor's own breakdown of each agents run (kernel
//! objects, wire engine, agents). Needs root; not part of the test suite (`tests/run.sh`
//! never runs benches).
//!
//! Run: `cargo build --release -p lightcone-agent && cargo bench -p lightcone --bench lab`.
//! Sizes: `LIGHTCONE_BENCH_NODES=200,1000` (multiples of 10, the default).
//! Targets (issue 11) on the 2-core reference machine: 1,000 nodes with agents up ≤ 3 s,
//! down ≤ 2 s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How agents run in a timed lab.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Agents {
    /// `--no-agents`.
    None,
    /// One agent process per cell of 10 tiles.
    PerCell,
    /// One agent process per node.
    PerNode,
}

fn topo_src(lab: &str, nodes: usize, agents: Agents) -> String {
    let cells = nodes / 10;
    let clusters = cells.div_ceil(10);
    let per = cells / clusters;
    let grouping = if agents == Agents::PerCell {
        "agents: {tiles_per_process: 10}\n"
    } else {
        ""
    };
    format!(
        "name: {lab}\n{grouping}generate:\n  layers:\n    - {{radius_au: 1.0, clusters: {clusters}, cells: {per}, tiles: 10}}\n  cell_fabric: ring\n  links:\n    cell: {{delay: 1ms}}\n    cluster: {{delay: 5ms}}\n    layer: {{delay: 10ms}}\n"
    )
}

/// One timed command: seconds, or why it failed.
type Timed = Result<f64, String>;

/// The supervisor's own timing lines in a command's output (`kernel objects up in …`,
/// `… agents running (…)`), for the breakdown under the table.
fn breakdown(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("kernel objects up in") || l.contains("agents running ("))
        .map(|l| l.trim().to_string())
        .collect()
}

fn timed(cmd: &mut Command, limit: Duration) -> Timed {
    timed_with_output(cmd, limit).0
}

/// [`timed`], also returning the command's stdout and stderr.
fn timed_with_output(cmd: &mut Command, limit: Duration) -> (Timed, String) {
    let r = (|| -> Result<(f64, String, String, bool), String> {
        let t = Instant::now();
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        // Drain both pipes so a chatty child never blocks on a full one.
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let secs = t.elapsed().as_secs_f64();
        let text = |h: Option<std::thread::JoinHandle<String>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        Ok((secs, text(out), text(err), status.success()))
    })();
    match r {
        Err(e) => (Err(e), String::new()),
        Ok((secs, out, err, true)) => (Ok(secs), format!("{out}{err}")),
        Ok((secs, out, err, false)) => {
            let why = err
                .lines()
                .chain(out.lines())
                .rfind(|l| l.contains("error"))
                .unwrap_or("")
                .trim()
                .to_string();
            (
                Err(format!("failed after {secs:.2} s: {why}")),
                format!("{out}{err}"),
            )
        }
    }
}

fn drain<R: std::io::Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// `lightcone up --detach` then `lightcone down` of a generated lab of `n` nodes; with the
/// supervisor's breakdown of `up`.
fn lightcone(bin: &Path, dir: &Path, n: usize, agents: Agents) -> (Timed, Timed, Vec<String>) {
    let tag = match agents {
        Agents::None => "",
        Agents::PerCell => "g",
        Agents::PerNode => "a",
    };
    let lab = format!("lbench-{n}{tag}");
    let file = dir.join(format!("{lab}.yaml"));
    std::fs::write(&file, topo_src(&lab, n, agents)).expect("write topology");
    let mut up = Command::new(bin);
    up.args(["up", "--detach", "--link-engine", "wire"])
        .arg(&file);
    if agents == Agents::None {
        up.arg("--no-agents");
    }
    let (up, out) = timed_with_output(&mut up, Duration::from_secs(300));
    // Down runs whatever up did: a failed up leaves nothing but must still be cleaned.
    let down = timed(
        Command::new(bin).args(["down", &lab]),
        Duration::from_secs(120),
    );
    (up, down, breakdown(&out))
}

/// N hosts in a line, host to host (no switches, no controller): the same kernel objects
/// as a lightcone line, one shell per host. `Mininet.inited` is set so Mininet does not
/// change the host's sysctls (its `fixLimits`).
const MININET: &str = r#"
import json, resource, sys, time
from mininet.net import Mininet
from mininet.topo import Topo
from mininet.log import setLogLevel
setLogLevel('error')
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
class Line(Topo):
    def build(self):
        hs = [self.addHost('h%d' % i, ip=None) for i in range(n)]
        for i in range(1, n):
            a = 0xc6120000 + 2 * i
            ip = lambda x: '%d.%d.%d.%d/31' % (x >> 24, (x >> 16) & 255, (x >> 8) & 255, x & 255)
            self.addLink(hs[i - 1], hs[i], params1={'ip': ip(a)}, params2={'ip': ip(a + 1)})
Mininet.inited = True
net = Mininet(topo=Line(), controller=None, build=False, autoSetMacs=False)
t = time.time()
try:
    net.build()
    net.start()
    up = time.time() - t
finally:
    t = time.time()
    net.stop()
    down = time.time() - t
print(json.dumps({'up_s': up, 'down_s': down}))
"#;

/// The interpreter `mn` runs under (its `#!` line), if `mn` is installed.
fn mininet_python() -> Option<PathBuf> {
    let mn = std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("mn"))
        .find(|p| p.is_file())?;
    let text = std::fs::read_to_string(mn).ok()?;
    let py = text.lines().next()?.strip_prefix("#!")?.trim();
    Some(PathBuf::from(py.split_whitespace().next()?))
}

fn mininet(py: &Path, n: usize) -> (Timed, Timed) {
    let out = Command::new(py)
        .arg("-c")
        .arg(MININET)
        .arg(n.to_string())
        .output();
    let parsed = out.as_ref().ok().and_then(|o| {
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last()?).ok()?;
        Some((v["up_s"].as_f64()?, v["down_s"].as_f64()?))
    });
    match (parsed, out) {
        (Some((u, d)), _) => (Ok(u), Ok(d)),
        (None, Ok(o)) => {
            let e = String::from_utf8_lossy(&o.stderr);
            let why = e.lines().last().unwrap_or("no output").to_string();
            (Err(why.clone()), Err(why))
        }
        (None, Err(e)) => (Err(e.to_string()), Err(e.to_string())),
    }
}

fn cell(t: &Timed) -> String {
    match t {
        Ok(s) => format!("{s:.2}"),
        Err(_) => "failed".into(),
    }
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("lab bench needs root (network namespaces)");
        std::process::exit(2);
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_lightcone"));
    let agent = bin.with_file_name("lightcone-agent");
    if !agent.is_file() {
        eprintln!(
            "{} is missing: cargo build --release -p lightcone-agent",
            agent.display()
        );
        std::process::exit(2);
    }
    let sizes: Vec<usize> = std::env::var("LIGHTCONE_BENCH_NODES")
        .unwrap_or_else(|_| "200,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n >= 10 && n % 10 == 0)
        .collect();
    let tmp = tempfile::tempdir().expect("temp dir");
    let py = mininet_python();
    if py.is_none() {
        eprintln!("mn is not installed (Debian package mininet): no Mininet column");
    }
    let per_node = std::env::var("LIGHTCONE_BENCH_PER_NODE").is_ok_and(|v| v == "1");
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    for &n in &sizes {
        let (gu, gd, gb) = lightcone(&bin, tmp.path(), n, Agents::PerCell);
        for b in gb {
            notes.push(format!("{n} nodes, agents per cell, supervisor: {b}"));
        }
        let (au, ad) = if per_node {
            let (u, d, b) = lightcone(&bin, tmp.path(), n, Agents::PerNode);
            for b in b {
                notes.push(format!("{n} nodes, agents per node, supervisor: {b}"));
            }
            (u, d)
        } else {
            (Err("not run".into()), Err("not run".into()))
        };
        let (nu, nd, nb) = lightcone(&bin, tmp.path(), n, Agents::None);
        for b in nb {
            notes.push(format!("{n} nodes, no agents, supervisor: {b}"));
        }
        let (mu, md) = match &py {
            Some(py) => mininet(py, n),
            None => (Err("not installed".into()), Err("not installed".into())),
        };
        for (what, t) in [
            ("lightcone+agents (per cell) up", &gu),
            ("lightcone+agents (per cell) down", &gd),
            ("lightcone+agents (per node) up", &au),
            ("lightcone+agents (per node) down", &ad),
            ("lightcone up", &nu),
            ("lightcone down", &nd),
            ("mininet up", &mu),
            ("mininet down", &md),
        ] {
            if let Err(e) = t {
                let skipped = (what.starts_with("mininet") && py.is_none())
                    || (what.contains("per node") && !per_node);
                if !skipped {
                    notes.push(format!("{n} nodes, {what}: {e}"));
                }
            }
        }
        rows.push((n, [gu, gd, au, ad, nu, nd, mu, md]));
    }
    println!(
        "seconds, as processes (wire engine; `up --detach` returns when every namespace, link and tile runs and answers); load before: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!(
        "{:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}",
        "nodes",
        "cell up",
        "cell down",
        "node up",
        "node down",
        "bare up",
        "bare down",
        "mn up",
        "mn down"
    );
    println!(
        "{:>6} | {:>19} | {:>19} | {:>19} | {:>17}",
        "", "agents, 1 proc/cell", "agents, 1 proc/node", "no agents", "mininet"
    );
    for (n, t) in &rows {
        let opt = |on: bool, t: &Timed| if on { cell(t) } else { "-".into() };
        println!(
            "{:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}",
            n,
            cell(&t[0]),
            cell(&t[1]),
            opt(per_node, &t[2]),
            opt(per_node, &t[3]),
            cell(&t[4]),
            cell(&t[5]),
            opt(py.is_some(), &t[6]),
            opt(py.is_some(), &t[7])
        );
    }
    for n in notes {
        println!("  {n}");
    }
}
