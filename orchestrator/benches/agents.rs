//! Agent RSS and CPU in a 100-node lab, idle and gossiping (issue #4). Needs root.
//!
//! Brings up a generated 100-node lab with agents (wire engine, the release `lightcone` and
//! `lightcone-agent` next to it), waits until every agent runs and membership has settled,
//! then measures each agent process over two 30 s windows:
//! - idle: no client load, only membership, routing and time traffic;
//! - gossiping: a light KV workload, every node 2 writes/s through the supervisor's
//!   `POST /nodes/{node}/kv/{key}` proxy.
//!
//! RSS is `VmRSS` of `/proc/PID/status` (each agent's peak over the window's samples), CPU is
//! `utime + stime` of `/proc/PID/stat` over the window, as a share of one core. Targets:
//! RSS ≤ 8 MiB, idle CPU ≤ 0.5 % of one core; judged on the worst agent (max).
//!
//! Run: `cargo build --release -p lightcone-agent && cargo bench -p lightcone --bench agents`.
//! The lab always comes down (a guard runs `lightcone down` on every exit path but SIGKILL).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightcone::client::Client;
use lightcone::lab::LabStatus;
use lightcone::procstat::{clock_ticks_per_s, cpu_ticks};
use lightcone::state::LabDir;
use lightcone_core::kv::Durability;

const WINDOW: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const WRITES_PER_NODE_PER_S: f64 = 2.0;
const LOAD_THREADS: usize = 4;

/// The lab's seed.
const SEED: u64 = 11;

/// 2 clusters × 4 cells × 12 tiles (ring cells; tile 0 of each cell is its gateway) and 4
/// stratum-0 authorities: 100 nodes, 107 links.
fn topology(lab: &str) -> String {
    format!(
        "name: {lab}\nseed: {SEED}\ngenerate:\n  layers:\n    - {{ radius_au: 1.0, clusters: 2, cells: 4, tiles: 12, authorities: 4 }}\n  cell_fabric: ring\n  links:\n    cell: {{ delay: 2ms }}\n    cluster: {{ delay: 5ms }}\n    authority: {{ delay: 1ms }}\n"
    )
}

/// Runs `lightcone down LAB` when dropped, so an error or panic leaves nothing behind.
struct LabDown {
    bin: PathBuf,
    lab: String,
}

impl Drop for LabDown {
    fn drop(&mut self) {
        match Command::new(&self.bin).args(["down", &self.lab]).output() {
            Ok(o) if o.status.success() => eprintln!("lab {} down", self.lab),
            Ok(o) => eprintln!(
                "lightcone down {} failed: {}",
                self.lab,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("could not run lightcone down {}: {e}", self.lab),
        }
    }
}

fn lc(bin: &Path, args: &[&str]) -> Result<String, String> {
    let o = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    if !o.status.success() {
        return Err(format!(
            "lightcone {args:?} exited {:?}: {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn status(bin: &Path, lab: &str) -> Result<LabStatus, String> {
    #[derive(serde::Deserialize)]
    struct Labs {
        labs: Vec<LabStatus>,
    }
    let out = lc(bin, &["status", lab, "--json"])?;
    let js: Labs = serde_json::from_str(&out).map_err(|e| format!("status --json: {e}"))?;
    js.labs
        .into_iter()
        .next()
        .ok_or_else(|| format!("status --json lists no lab {lab}"))
}

/// Nodes with their agent's pid, once every agent runs.
fn agent_pids(st: &LabStatus) -> Option<Vec<(String, u32)>> {
    st.nodes
        .iter()
        .map(|n| Some((n.name.clone(), n.agent.pid?)))
        .collect()
}

/// Sum over nodes of `lightcone_membership_members{state}` from the merged `/metrics`.
fn membership(api: &Client) -> Option<BTreeMap<String, i64>> {
    let text = api.metrics(Duration::from_secs(10)).ok()?;
    let mut by_state = BTreeMap::new();
    let mut nodes = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("lightcone_membership_members{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ")?;
        let state = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("state=\""))?
            .trim_end_matches('"');
        if state == "alive" {
            nodes += 1;
        }
        *by_state.entry(state.to_string()).or_insert(0) += value.trim().parse::<f64>().ok()? as i64;
    }
    by_state.insert("reporting_nodes".into(), nodes);
    Some(by_state)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Per process: CPU % of one core over the window and peak RSS in MiB.
struct Window {
    cpu_pct: Vec<f64>,
    rss_mib: Vec<f64>,
    supervisor_cpu_pct: f64,
    wall: Duration,
}

fn measure(pids: &[u32], supervisor: u32, window: Duration) -> Result<Window, String> {
    let read_all = |ps: &[u32]| -> Result<Vec<u64>, String> {
        ps.iter()
            .map(|&p| cpu_ticks(p).ok_or_else(|| format!("process {p} is gone")))
            .collect()
    };
    let mut all = pids.to_vec();
    all.push(supervisor);
    let mut peak = vec![0u64; pids.len()];
    let sample_rss = |peak: &mut Vec<u64>| -> Result<(), String> {
        for (pk, &p) in peak.iter_mut().zip(pids) {
            *pk = (*pk).max(rss_kib(p).ok_or_else(|| format!("agent {p} is gone"))?);
        }
        Ok(())
    };
    let t0 = Instant::now();
    let c0 = read_all(&all)?;
    sample_rss(&mut peak)?;
    while t0.elapsed() < window {
        std::thread::sleep(SAMPLE_EVERY.min(window.saturating_sub(t0.elapsed())));
        sample_rss(&mut peak)?;
    }
    let c1 = read_all(&all)?;
    let wall = t0.elapsed();
    let tck = clock_ticks_per_s();
    let pct: Vec<f64> = c0
        .iter()
        .zip(&c1)
        .map(|(a, b)| (b.saturating_sub(*a)) as f64 / tck / wall.as_secs_f64() * 100.0)
        .collect();
    Ok(Window {
        cpu_pct: pct[..pids.len()].to_vec(),
        rss_mib: peak.iter().map(|k| *k as f64 / 1024.0).collect(),
        supervisor_cpu_pct: pct[pids.len()],
        wall,
    })
}

/// Nearest-rank percentile of `v` (0 < q ≤ 1).
fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// A KV load: `LOAD_THREADS` threads, each owning a share of the nodes, each node writing
/// `WRITES_PER_NODE_PER_S` on a fixed schedule (no catch-up bursts when behind).
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(api: &Client, nodes: &[String]) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for t in 0..LOAD_THREADS {
            let mine: Vec<String> = nodes
                .iter()
                .skip(t)
                .step_by(LOAD_THREADS)
                .cloned()
                .collect();
            let (api, stop, ok, failed) = (api.clone(), stop.clone(), ok.clone(), failed.clone());
            threads.push(std::thread::spawn(move || {
                let period = Duration::from_secs_f64(
                    1.0 / (WRITES_PER_NODE_PER_S * mine.len().max(1) as f64),
                );
                let start = Instant::now();
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let due = start + period * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let node = &mine[i as usize % mine.len()];
                    let key = format!("bench-{node}-{}", (i / mine.len() as u64) % 16);
                    let r = api.kv_put(
                        node,
                        &key,
                        &format!("v{i}"),
                        Durability::Local,
                        Duration::from_secs(5),
                    );
                    match r {
                        Ok((raw, _)) if raw.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            }));
        }
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The targets of issue #4, judged on the worst agent.
const RSS_TARGET_MIB: f64 = 8.0;
const IDLE_CPU_TARGET_PCT: f64 = 0.5;

fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "PASS"
    } else {
        "MISS"
    }
}

fn row(phase: &str, w: &Window, cpu_target: Option<f64>) {
    let rss_max = pct(&w.rss_mib, 1.0);
    let cpu_max = pct(&w.cpu_pct, 1.0);
    let cpu_col = match cpu_target {
        Some(t) => format!("≤{t:.1}% {}", verdict(cpu_max, t)),
        None => "-".into(),
    };
    println!(
        "{:<10} {:>6} {:>8.2} {:>8.2} {:>8.3} {:>8.3} {:>8.3} {:>8.1}  {:<12} {}",
        phase,
        w.rss_mib.len(),
        pct(&w.rss_mib, 0.5),
        rss_max,
        pct(&w.cpu_pct, 0.5),
        pct(&w.cpu_pct, 0.99),
        cpu_max,
        w.supervisor_cpu_pct,
        format!(
            "≤{RSS_TARGET_MIB:.0}MiB {}",
            verdict(rss_max, RSS_TARGET_MIB)
        ),
        cpu_col
    );
}

fn run(bin: &Path, lab: &str, file: &Path) -> Result<(), String> {
    let t = Instant::now();
    lc(
        bin,
        &[
            "up",
            file.to_str().ok_or("temp path is not UTF-8")?,
            "--detach",
            "--link-engine",
            "wire",
        ],
    )?;
    println!("up in {:.1} s", t.elapsed().as_secs_f64());

    // Every agent has a pid and is an agent process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (st, agents) = loop {
        let st = status(bin, lab)?;
        if let Some(a) = agent_pids(&st) {
            break (st, a);
        }
        if Instant::now() > deadline {
            return Err("agents did not all get a pid within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for (node, pid) in &agents {
        let c = comm(*pid);
        if !c.starts_with("lightcone-agen") {
            return Err(format!("{node}: pid {pid} is {c:?}, not an agent"));
        }
    }
    let dir = LabDir::new(lab).map_err(|e| e.to_string())?;
    let api = Client::connect(&dir).ok_or("the lab has no running supervisor")?;
    let supervisor = st.supervisor_pid;
    println!(
        "{} agents running, engine {}, time_scale {}",
        agents.len(),
        format!("{:?}", st.engine).to_lowercase(),
        st.time_scale
    );

    // Settled: no suspect members anywhere, every node reporting, and the same counts on
    // three polls in a row 2 s apart. Dead entries may be steady (the authorities are one
    // membership group without links between them: each sees the others dead), so they
    // only have to stop changing.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(180);
    let mut last = None;
    let mut same = 0;
    let settled = loop {
        let m = membership(&api);
        if let Some(m) = &m {
            let clean = m.get("suspect").copied().unwrap_or(0) == 0
                && m.get("reporting_nodes").copied() == Some(agents.len() as i64);
            same = if clean && last.as_ref() == Some(m) {
                same + 1
            } else {
                0
            };
            if same >= 2 {
                break Some(m.clone());
            }
        }
        last = m;
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    match &settled {
        Some(m) => println!(
            "membership settled in {:.1} s: {} alive, {} dead member entries over {} nodes",
            t.elapsed().as_secs_f64(),
            m.get("alive").copied().unwrap_or(0),
            m.get("dead").copied().unwrap_or(0),
            agents.len()
        ),
        None => println!(
            "WARNING: membership not settled after 180 s (last {last:?}); measuring anyway"
        ),
    }

    let pids: Vec<u32> = agents.iter().map(|(_, p)| *p).collect();
    let idle = measure(&pids, supervisor, WINDOW)?;

    let names: Vec<String> = agents.iter().map(|(n, _)| n.clone()).collect();
    let load = Load::start(&api, &names);
    let busy = measure(&pids, supervisor, WINDOW);
    let (ok, failed) = load.stop();
    let busy = busy?;

    println!();
    let h = [
        "phase",
        "agents",
        "rss_p50",
        "rss_max",
        "cpu_p50",
        "cpu_p99",
        "cpu_max",
        "sup_cpu",
        "rss_target",
        "cpu_target",
    ];
    println!(
        "{:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {:<12} {}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]
    );
    let u = ["", "", "MiB", "MiB", "%core", "%core", "%core", "%core"];
    println!(
        "{:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]
    );
    row("idle", &idle, Some(IDLE_CPU_TARGET_PCT));
    row("gossiping", &busy, None);
    println!();
    println!(
        "windows {:.1} s / {:.1} s; KV load {} writes ok, {} failed ({:.1}/s over {} nodes, target {:.0}/s per node)",
        idle.wall.as_secs_f64(),
        busy.wall.as_secs_f64(),
        ok,
        failed,
        ok as f64 / busy.wall.as_secs_f64(),
        names.len(),
        WRITES_PER_NODE_PER_S
    );
    let hot = agents
        .iter()
        .zip(&idle.cpu_pct)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|((n, _), c)| format!("{n} {c:.3}%"))
        .unwrap_or_default();
    println!(
        "busiest agent idle: {hot}; sup_cpu is the supervisor (wire engine + API), not an agent"
    );
    if settled.is_none() {
        return Err("membership never settled: numbers above are not of a settled lab".into());
    }
    Ok(())
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("agents bench needs root (network namespaces)");
        std::process::exit(2);
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_lightcone"));
    let agent = bin.with_file_name("lightcone-agent");
    if std::env::var_os("LIGHTCONE_AGENT").is_none() && !agent.is_file() {
        eprintln!(
            "{} is missing: build it first (cargo build --release -p lightcone-agent)",
            agent.display()
        );
        std::process::exit(2);
    }
    let lab = format!("b{}-ag", std::process::id());
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join(format!("{lab}.yaml"));
    std::fs::write(&file, topology(&lab)).expect("write topology");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "lab {lab}, seed {SEED}, 100 nodes (2 clusters × 4 cells × 12 tiles + 4 authorities), wire engine"
    );
    println!(
        "host: {cores} cores, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("binaries: {} and {}", bin.display(), agent.display());

    let result = {
        let _down = LabDown {
            bin: bin.clone(),
            lab: lab.clone(),
        };
        std::panic::catch_unwind(|| run(&bin, &lab, &file))
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("agents bench: {e}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(101),
    }
}
