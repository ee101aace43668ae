//! A real Prometheus server for one lab (`lightcone up --prometheus`).
//!
//! The supervisor writes `<state>/prometheus/prometheus.yml` from
//! `dashboards/prometheus.yml.tera` and starts Debian's `prometheus` as a child recorded in
//! the lab's ledger, so `down` stops it even if the supervisor died. Scrape layout:
//!
//! - job `lightcone_links` scrapes `/metrics/links`: the supervisor's own registry (link
//!   engine series). It does not scrape the merged `/metrics`, which would duplicate every
//!   agent series and hide which agent is down.
//! - job `lightcone_agents` has one target per node at `/nodes/<node>/metrics` (the
//!   supervisor proxies to the agent's unix socket) labelled `node`, so `up{node="x"}` is 0
//!   exactly when agent x does not answer.
//!
//! Prometheus listens on 127.0.0.1 only. Its port is found by binding port 0 and closing it
//! again; another process could take it in between, in which case the start fails with the
//! server's log named in the error.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::{process_start_time, Entry, LabDir, Ledger};

/// Debian's package puts the server here; `LIGHTCONE_PROMETHEUS` overrides it.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Scrape interval, real seconds: the dashboard and tests want to see a crash within seconds.
pub const SCRAPE_INTERVAL: &str = "1s";
/// Bound on the server's disk use (the state directory is a tmpfs).
pub const RETENTION_SIZE: &str = "256MB";
/// How long a fresh server may take to answer `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

const TEMPLATE: &str = include_str!("../../dashboards/prometheus.yml.tera");

/// Why the Prometheus server could not be started. Whatever was started is stopped again
/// before the error is returned; the state directory may hold the config and the log.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("render the Prometheus configuration: {0}")]
    Template(#[from] tera::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{bin} is missing; install Debian's `prometheus` package (tests/setup.sh --deps does) or run without --prometheus")]
    Missing { bin: String },
    #[error("prometheus did not become ready within {secs} s; see {log}")]
    NotReady { secs: u64, log: String },
    #[error("prometheus exited at start ({status}); see {log}")]
    Exited { status: String, log: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TelemetryError {
    let what = what.into();
    move |source| TelemetryError::Io { what, source }
}

/// The scrape configuration for a lab whose supervisor listens on `target` (host:port).
pub fn scrape_config(lab: &str, target: &str, nodes: &[String]) -> Result<String, TelemetryError> {
    let mut ctx = tera::Context::new();
    ctx.insert("lab", lab);
    ctx.insert("target", target);
    ctx.insert("scrape_interval", SCRAPE_INTERVAL);
    ctx.insert("scrape_timeout", "900ms");
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| serde_json::json!({ "name": n, "path": format!("/nodes/{n}/metrics") }))
        .collect();
    ctx.insert("nodes", &nodes);
    Ok(tera::Tera::one_off(TEMPLATE, &ctx, false)?)
}

/// A running Prometheus server owned by the supervisor.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub config: PathBuf,
}

impl Prometheus {
    /// Write the config under `<state>/prometheus/`, start the server, record it in the
    /// ledger and wait until it is ready.
    pub fn start(
        dir: &LabDir,
        ledger: &mut Ledger,
        api: SocketAddr,
        nodes: &[String],
    ) -> Result<Prometheus, TelemetryError> {
        let bin = std::env::var("LIGHTCONE_PROMETHEUS").unwrap_or_else(|_| PROMETHEUS_BIN.into());
        if !Path::new(&bin).is_file() {
            return Err(TelemetryError::Missing { bin });
        }
        let root = dir.path.join("prometheus");
        let data = root.join("data");
        fs::create_dir_all(&data).map_err(io_err(format!("create {}", data.display())))?;
        let config = root.join("prometheus.yml");
        fs::write(&config, scrape_config(&dir.lab, &api.to_string(), nodes)?)
            .map_err(io_err(format!("write {}", config.display())))?;
        let port = free_port()?;
        let log_path = dir.logs().join("prometheus.log");
        let log = fs::File::create(&log_path)
            .map_err(io_err(format!("create {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(io_err("duplicate log handle"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--storage.tsdb.retention.size={RETENTION_SIZE}"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C on the foreground `up` reaches the supervisor,
            // which stops Prometheus in order.
            .process_group(0);
        // SAFETY: only an async-signal-safe call (setpriority) between fork and exec.
        unsafe {
            cmd.pre_exec(crate::priority::reset_child);
        }
        let child = cmd.spawn().map_err(io_err(format!("start {bin}")))?;
        let pid = child.id();
        let mut p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            config,
        };
        ledger
            .record(&[Entry::Process {
                pid,
                start_time: process_start_time(pid).unwrap_or(0),
                what: "prometheus".into(),
            }])
            .map_err(io_err("record prometheus in the ledger"))?;
        let log = log_path.display().to_string();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(TelemetryError::Exited {
                    status: st.to_string(),
                    log,
                });
            }
            let ready = ureq::get(&format!("{}/-/ready", p.url))
                .timeout(Duration::from_millis(500))
                .call()
                .is_ok();
            if ready {
                return Ok(p);
            }
            if Instant::now() > deadline {
                p.stop();
                return Err(TelemetryError::NotReady {
                    secs: READY_TIMEOUT.as_secs(),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; reaps the child. Idempotent.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, TelemetryError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("find a free port"))?;
    Ok(l.local_addr().map_err(io_err("find a free port"))?.port())
}

/// Samples of a Prometheus text exposition: (metric name, labels, value) per line.
pub type Samples = Vec<(String, std::collections::BTreeMap<String, String>, f64)>;

/// Parse the Prometheus text format (the subset our exporters write): comments and blank
/// lines skipped, a line without a parsable value skipped, `\"` kept inside label values.
pub fn parse_prometheus(text: &str) -> Samples {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], head[i + 1..].trim_end_matches('}')),
            None => (head, ""),
        };
        let mut l = std::collections::BTreeMap::new();
        let mut rest = labels;
        while let Some(eq) = rest.find("=\"") {
            let k = rest[..eq].trim_start_matches(',').trim().to_string();
            let after = &rest[eq + 2..];
            let mut end = 0;
            let bytes = after.as_bytes();
            while end < bytes.len()
                && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
            {
                end += 1;
            }
            l.insert(k, after[..end.min(after.len())].to_string());
            rest = &after[(end + 1).min(after.len())..];
        }
        out.push((name.to_string(), l, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_config_has_one_agent_target_per_node_and_parses() {
        let y = scrape_config("lab1", "127.0.0.1:4000", &["a".into(), "b-2".into()]).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(v["global"]["scrape_interval"], "1s");
        let jobs = v["scrape_configs"].as_sequence().unwrap();
        assert_eq!(jobs[0]["job_name"], "lightcone_links");
        assert_eq!(jobs[0]["metrics_path"], "/metrics/links");
        let agents = jobs[1]["static_configs"].as_sequence().unwrap();
        assert_eq!(agents.len(), 2);
        assert_eq!(agents[1]["labels"]["node"], "b-2");
        assert_eq!(
            agents[1]["labels"]["__metrics_path__"],
            "/nodes/b-2/metrics"
        );
        assert_eq!(agents[1]["targets"][0], "127.0.0.1:4000");
    }

    #[test]
    fn prometheus_text_is_parsed_into_samples() {
        let s = super::parse_prometheus(
            "# HELP x y\nlightcone_up 1\nlightcone_q{node=\"a\",what=\"say \\\"hi\\\"\"} 2.5\nbroken\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0.as_str(), s[0].2), ("lightcone_up", 1.0));
        assert_eq!(s[1].1["node"], "a");
        assert_eq!(s[1].1["what"], "say \\\"hi\\\"");
        assert_eq!(s[1].2, 2.5);
    }
}
