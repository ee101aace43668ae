//! `lightcone`: YAML topology in, network namespaces joined by optical-backbone links out.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{CommandFactory, Parser, Subcommand};
use lightcone::apply;
use lightcone::fault::{ByzantineFault, ClockFault, NodeFault};
use lightcone::kernel::Netns;
use lightcone::link::probe::{self, ProbeOptions};
use lightcone::plan::{self, Plan};
use lightcone::progress::Renderer;
use lightcone::state::LabDir;
use lightcone::supervisor::{self, EngineChoice, LabStatus, LinkChange, SupervisorInfo, UpOptions};
use lightcone::topology::diag::error_chain;
use lightcone::topology::{self, units, LoadError};

/// Exit codes, also listed in `--help`.
mod code {
    pub const FAILURE: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const STATE: u8 = 3;
}

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  the operation failed (kernel, process or I/O error); the message says what\n  2  invalid input: a malformed topology or bad arguments; nothing was changed\n  3  lab state conflict: the lab is already up, or is not up; nothing was changed";

#[derive(Parser)]
#[command(name = "lightcone", version, about = "Emulate the optical backbone of a star-spanning computer in network namespaces", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a topology or a scenario file (with its topology, timeline and expectations);
    /// print every error with file:line:column. Runs nothing.
    Validate { file: PathBuf },
    /// Print the plan (namespaces, interfaces, addresses, link parameters) of a topology.
    Plan { file: PathBuf },
    /// Print the topology as a graph (DOT for Graphviz, or Mermaid).
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Bring a lab up: namespaces, links, agents, API and dashboard.
    Up {
        file: PathBuf,
        /// Return once the lab is up, leaving a supervisor process that owns it.
        #[arg(long, short)]
        detach: bool,
        #[arg(long, value_enum, default_value = "auto")]
        link_engine: EngineChoice,
        /// Build namespaces and links only; start no agents.
        #[arg(long)]
        no_agents: bool,
        /// Port of the API and dashboard on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Also start a Prometheus server (Debian's package) scraping every agent and link.
        #[arg(long)]
        prometheus: bool,
    },
    /// Tear a lab down: agents, links, namespaces, state. Harmless if it is not up.
    Down {
        lab: Option<String>,
        /// Every lab, and stray namespaces of labs whose state was lost.
        #[arg(long, conflicts_with = "lab")]
        all: bool,
    },
    /// Show running labs.
    Status {
        lab: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node's network namespace.
    Exec {
        /// Lab name (needed when more than one lab is up).
        #[arg(long)]
        lab: Option<String>,
        node: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Change a link of a running lab (a diff: nothing else restarts).
    Link {
        #[command(subcommand)]
        action: LinkCmd,
    },
    /// Measure RTT, loss and throughput of a link and print them beside its configuration.
    Probe {
        #[arg(long)]
        lab: Option<String>,
        a: String,
        b: String,
        /// Echo probes to send (at least 1).
        #[arg(long, default_value_t = 200, value_parser = probe_count)]
        count: u32,
        #[arg(long, default_value = "10ms")]
        interval: String,
        /// Datagrams in a throughput burst after the echo probes (0 = skip).
        #[arg(long, default_value_t = 0)]
        burst: u32,
        #[arg(long)]
        json: bool,
    },
    /// Inject faults into a running lab.
    Fault {
        #[command(subcommand)]
        action: FaultCmd,
    },
    /// Play a scenario (faults on a timeline) against its lab and judge its expectations;
    /// writes a run directory (events, metrics, report.json, report.html). Exit 1 if any
    /// expectation failed.
    Run {
        scenario: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Run directory (default runs/<scenario>-<seed>-<timestamp>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the outcome as JSON on stdout (progress goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Check that this machine can run labs: privileges, namespaces, veth, netem,
    /// AF_PACKET, descriptors, binaries, leftovers; says which link engine `auto` picks.
    /// Exit 1 if any check fails. Creates a throwaway namespace and removes it.
    Doctor {
        /// Print the checks as JSON (fields: checks[{name, status, reason, fix}],
        /// auto_engine{engine, why}, ok).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script, e.g. `lightcone completions bash >
    /// /etc/bash_completion.d/lightcone`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[command(hide = true, name = "__supervise")]
    Supervise {
        file: PathBuf,
        #[arg(long, value_enum)]
        link_engine: EngineChoice,
        #[arg(long)]
        no_agents: bool,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        prometheus: bool,
    },
}

#[derive(Subcommand)]
enum LinkCmd {
    /// Set link parameters (units as in topologies: 20ms, 1%, 10Mbit).
    Set {
        a: String,
        b: String,
        #[arg(long)]
        lab: Option<String>,
        #[arg(long)]
        delay: Option<String>,
        #[arg(long)]
        jitter: Option<String>,
        #[arg(long)]
        loss: Option<String>,
        /// A rate such as 10Mbit, or `unlimited`.
        #[arg(long)]
        rate: Option<String>,
        #[arg(long)]
        duplicate: Option<String>,
        #[arg(long)]
        corrupt: Option<String>,
        #[arg(long)]
        reorder: Option<String>,
    },
    /// Take a link down (100 % loss).
    Down {
        a: String,
        b: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Bring a link back up.
    Up {
        a: String,
        b: String,
        #[arg(long)]
        lab: Option<String>,
    },
}

#[derive(Subcommand)]
enum FaultCmd {
    /// Kill a node's agent (SIGKILL).
    Crash {
        node: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Start a node's agent again.
    Restart {
        node: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Fault a node's clock (emulated time): step its phase, change its frequency, make an
    /// authority serve biased time (a compromised stratum-0: the nodes it serves raise
    /// lightcone_time_alarms_total), or hide the pulsars from it.
    #[command(group(clap::ArgGroup::new("fault").required(true)))]
    Clock {
        node: String,
        #[arg(long)]
        lab: Option<String>,
        /// Phase step, a signed duration (e.g. 1ms, -500us).
        #[arg(long, group = "fault", allow_hyphen_values = true)]
        step: Option<String>,
        /// Frequency change in parts per billion (e.g. 50, -3.5).
        #[arg(long, group = "fault", allow_hyphen_values = true)]
        drift: Option<f64>,
        /// Serve time shifted by this signed duration (0 clears it); meant for authorities.
        #[arg(long, group = "fault", allow_hyphen_values = true)]
        bias: Option<String>,
        /// The node loses sight of all pulsars.
        #[arg(long, group = "fault")]
        pulsar_loss: bool,
        /// The node sees the pulsars again.
        #[arg(long, group = "fault")]
        pulsar_restore: bool,
    },
    /// Make a node byzantine: it lies in membership (claims live cell members dead) and/or
    /// stops forwarding. Its neighbours' watch should quarantine it (`lightcone status`,
    /// /state `quarantine`, lightcone_watch_quarantined_nodes).
    #[command(group(clap::ArgGroup::new("mode").required(true)))]
    Byzantine {
        node: String,
        #[arg(long)]
        lab: Option<String>,
        /// Comma-separated: lie_membership, drop_forwarding.
        #[arg(long, group = "mode", value_delimiter = ',')]
        behaviour: Vec<String>,
        /// Make the node honest again.
        #[arg(long, group = "mode")]
        honest: bool,
    },
}

/// Inject `fault` into `node` of the picked lab (`POST /api/nodes/{node}/{kind}` with the
/// fault's JSON body), after checking the lab has that node (an unknown node is a usage
/// error, exit 2).
fn node_fault(
    lab: Option<String>,
    node: &str,
    fault: &NodeFault,
) -> Result<serde_json::Value, Failure> {
    let dir = pick_lab(lab)?;
    if lab_plan(&dir)?.node_index(node).is_none() {
        return Err(invalid(anyhow!(
            "lab {} has no node {node:?} (`lightcone status {}` lists them)",
            dir.lab,
            dir.lab
        )));
    }
    let info = supervisor_of(&dir)?;
    api(&info, "POST", &fault.api_path(node), Some(fault.body()))
}

/// The fault of `lightcone fault clock`, parsed from its flags once.
fn clock_request(
    step: Option<String>,
    drift: Option<f64>,
    bias: Option<String>,
    pulsar_loss: bool,
    pulsar_restore: bool,
) -> Result<ClockFault, String> {
    ClockFault::from_flags(
        step.as_deref(),
        drift,
        bias.as_deref(),
        pulsar_loss,
        pulsar_restore,
    )
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

/// An error with the exit code it maps to.
struct Failure(u8, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(code::FAILURE, e.into())
    }
}

fn invalid(e: impl Into<anyhow::Error>) -> Failure {
    Failure(code::INVALID, e.into())
}
fn state(msg: String) -> Failure {
    Failure(code::STATE, anyhow!(msg))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Supervise { .. }) {
        // `lightcone status | head` ends quietly, as other tools do, instead of panicking
        // on EPIPE. The supervisor keeps ignoring SIGPIPE: it must outlive a closed pipe.
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            if e.is::<Rendered>() {
                eprintln!("{e}");
            } else {
                eprintln!("error: {}", error_chain(e.chain()));
            }
            ExitCode::from(code)
        }
    }
}

fn load(file: &std::path::Path) -> Result<topology::Topology, Failure> {
    topology::load(file).map_err(|e| match e {
        LoadError::Invalid { rendered, .. } => Failure(code::INVALID, Rendered(rendered).into()),
        e => invalid(e),
    })
}

/// Diagnostics already rendered (each begins `error:`, with file:line:column): printed as
/// they are, not behind another `error:`.
#[derive(Debug)]
struct Rendered(String);

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for Rendered {}

/// A scenario's (or a file's) refusal, exit code 2.
fn invalid_rendered(e: lightcone::experiment::scenario::ScenarioError) -> Failure {
    use lightcone::experiment::scenario::ScenarioError;
    match e {
        ScenarioError::Invalid { rendered, .. } => {
            Failure(code::INVALID, Rendered(rendered).into())
        }
        e => invalid(e),
    }
}

fn need_root(what: &str) -> Result<(), Failure> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(Failure(code::FAILURE, anyhow!("`lightcone {what}` needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to manage network namespaces; run it as root (with sudo if you are not root)")));
    }
    Ok(())
}

/// `--count` of `probe`: a number of probes, at least one.
fn probe_count(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err(
            "must be at least 1: zero probes measure nothing (and would read as 100 % loss)".into(),
        ),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

/// The state directory of a lab named on the command line; a name that is not a lab name
/// (`../../tmp/x`, `/tmp/x`) is invalid input, refused before any path is built from it.
fn lab_dir(name: &str) -> Result<LabDir, Failure> {
    LabDir::new(name).map_err(|e| invalid(anyhow!("{e}; nothing was changed")))
}

/// The lab a command means: the named one, or the only one that is up.
fn pick_lab(lab: Option<String>) -> Result<LabDir, Failure> {
    if let Some(l) = lab {
        let d = lab_dir(&l)?;
        if !d.exists() {
            return Err(state(format!("lab {l} is not up")));
        }
        return Ok(d);
    }
    let mut all = LabDir::all();
    match all.len() {
        0 => Err(state(
            "no lab is up; start one with `lightcone up FILE`".into(),
        )),
        1 => Ok(all.remove(0)),
        n => Err(invalid(anyhow!(
            "{n} labs are up ({}); say which with --lab",
            LabDir::all_names().join(", ")
        ))),
    }
}

fn lab_plan(dir: &LabDir) -> Result<Plan, Failure> {
    let topo = topology::load(&dir.topology_path()).map_err(|e| match e {
        LoadError::Invalid { rendered, .. } => Failure(code::FAILURE, Rendered(rendered).into()),
        e => Failure(code::FAILURE, anyhow!("lab {}: {e}", dir.lab)),
    })?;
    Ok(plan::plan(&topo))
}

fn supervisor_of(dir: &LabDir) -> Result<SupervisorInfo, Failure> {
    match SupervisorInfo::read(dir) {
        Some(i) if i.alive() => Ok(i),
        _ => Err(state(format!(
            "lab {} has no running supervisor; run `lightcone down {}` to clean it up",
            dir.lab, dir.lab
        ))),
    }
}

fn api(
    info: &SupervisorInfo,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    let url = format!("{}{}", info.api_url, path);
    let req = ureq::request(method, &url)
        .set("x-lightcone-token", &info.token)
        .timeout(Duration::from_secs(30));
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match resp {
        Ok(r) => Ok(r.into_json().context("read API answer")?),
        Err(ureq::Error::Status(code, r)) => {
            let v: serde_json::Value = r.into_json().unwrap_or_default();
            let msg = v["error"].as_str().unwrap_or("request failed").to_string();
            Err(if code == 404 || code == 400 {
                invalid(anyhow!(msg))
            } else {
                Failure(1, anyhow!(msg))
            })
        }
        Err(e) => Err(anyhow!("lab API at {url}: {e}").into()),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Validate { file } => {
            use lightcone::experiment::validate::{self, CheckedFile};
            let describe = |t: &topology::Topology| {
                format!(
                    "lab {}, {} nodes, {} links, time_scale {}, seed {}",
                    t.name,
                    t.nodes.len(),
                    t.links.len(),
                    t.time_scale,
                    t.seed
                )
            };
            match validate::check_file(&file).map_err(invalid_rendered)? {
                CheckedFile::Topology(t) => {
                    println!("{}: ok — {}", file.display(), describe(&t))
                }
                CheckedFile::Scenario(c) => println!(
                    "{}: ok — scenario {}, seed {}, duration {}, {} steps ({} actions), {} expectations; its topology: {}",
                    file.display(),
                    c.scenario.name,
                    c.scenario.seed,
                    units::fmt_ns(c.scenario.duration_ns),
                    c.scenario.timeline.len(),
                    c.plan.len(),
                    c.scenario.expect.len(),
                    describe(&c.topology)
                ),
            }
            Ok(())
        }
        Cmd::Plan { file } => {
            print!("{}", plan::plan(&load(&file)?).render());
            Ok(())
        }
        Cmd::Graph { file, format } => {
            print!("{}", graph(&load(&file)?, format));
            Ok(())
        }
        Cmd::Up {
            file,
            detach,
            link_engine,
            no_agents,
            port,
            prometheus,
        } => {
            let topo = load(&file)?;
            supervisor::check_not_up(&topo.name).map_err(state)?;
            need_root("up")?;
            if link_engine == EngineChoice::Netem {
                let a = lightcone::link::netem::kernel_has_netem();
                if !a.is_available() {
                    return Err(Failure(code::FAILURE, anyhow!("--link-engine netem: {a}. Use --link-engine wire (works on any kernel) or the Vagrant VM")));
                }
            }
            if detach {
                up_detached(&file, link_engine, no_agents, port, prometheus)
            } else {
                let opts = UpOptions {
                    topology: file,
                    engine: link_engine,
                    agents: !no_agents,
                    port,
                    prometheus,
                };
                let progress = std::cell::RefCell::new(Renderer::default());
                supervisor::run(
                    &opts,
                    |l| progress.borrow_mut().line(l, false),
                    |url| {
                        progress.borrow_mut().clear();
                        println!("lab {} is up", topo.name);
                        println!("  dashboard: {url}/");
                        println!("  metrics:   {url}/metrics");
                        println!("press Ctrl-C to tear it down");
                    },
                )
                .map_err(Failure::from)
            }
        }
        Cmd::Supervise {
            file,
            link_engine,
            no_agents,
            port,
            prometheus,
        } => {
            let opts = UpOptions {
                topology: file,
                engine: link_engine,
                agents: !no_agents,
                port,
                prometheus,
            };
            let r = supervisor::run(
                &opts,
                // Write errors are ignored: if `up --detach` went away, the lab still comes up.
                |l| {
                    let mut o = std::io::stdout().lock();
                    let _ = writeln!(o, "{l}");
                    let _ = o.flush();
                },
                |url| {
                    let mut o = std::io::stdout().lock();
                    let _ = writeln!(o, "\u{1}READY {url}");
                    let _ = o.flush();
                    drop(o);
                    detach_stdio();
                },
            );
            r.map_err(Failure::from)
        }
        Cmd::Down { lab, all } => {
            need_root("down")?;
            let labs = if all {
                LabDir::all_names()
            } else {
                match lab {
                    Some(l) => vec![l],
                    None => match LabDir::all_names().as_slice() {
                        [] => {
                            println!("no lab is up; nothing to do");
                            vec![]
                        }
                        [one] => vec![one.clone()],
                        many => {
                            return Err(invalid(anyhow!(
                                "{} labs are up ({}); say which, or use --all",
                                many.len(),
                                many.join(", ")
                            )))
                        }
                    },
                }
            };
            for l in labs {
                down_one(&l)?;
            }
            if all {
                for s in apply::stray_namespaces() {
                    apply::remove_stray(&s)?;
                    println!("removed stray namespace {s}");
                }
            }
            Ok(())
        }
        Cmd::Status { lab, json } => status(lab, json),
        Cmd::Doctor { json } => {
            let r = lightcone::doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&r).expect("json"));
            } else {
                print!("{}", lightcone::doctor::render(&r));
            }
            if r.ok {
                Ok(())
            } else {
                // The report already says what failed and what to do.
                std::process::exit(code::FAILURE as i32)
            }
        }
        Cmd::Completions { shell } => {
            // Without the hidden internal subcommand (clap_complete would offer it).
            let full = Cli::command();
            let mut visible = clap::Command::new("lightcone")
                .version(env!("CARGO_PKG_VERSION"))
                .subcommand_required(true)
                .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
            if let Some(a) = full.get_about() {
                visible = visible.about(a.clone());
            }
            clap_complete::generate(shell, &mut visible, "lightcone", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Run {
            scenario,
            seed,
            out,
            json,
        } => run_scenario(scenario, seed, out, json),
        Cmd::Exec { lab, node, cmd } => {
            need_root("exec")?;
            let dir = pick_lab(lab)?;
            let p = lab_plan(&dir)?;
            let Some(i) = p.node_index(&node) else {
                return Err(invalid(anyhow!("lab {} has no node {node:?}", dir.lab)));
            };
            let ns = Netns::open(&p.nodes[i].netns)?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&ns.fd());
            let mut c = Command::new(&cmd[0]);
            c.args(&cmd[1..]);
            // SAFETY: setns is async-signal-safe.
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let st = c
                .status()
                .with_context(|| format!("run {:?} in {}", cmd[0], p.nodes[i].netns))?;
            match st.code() {
                Some(0) => Ok(()),
                Some(c) => std::process::exit(c),
                None => Err(anyhow!("{} killed by a signal", cmd[0]).into()),
            }
        }
        Cmd::Link { action } => {
            let (lab, a, b, path, body) = match action {
                LinkCmd::Set {
                    a,
                    b,
                    lab,
                    delay,
                    jitter,
                    loss,
                    rate,
                    duplicate,
                    corrupt,
                    reorder,
                } => {
                    let change = LinkChange {
                        delay,
                        jitter,
                        loss,
                        rate,
                        duplicate,
                        corrupt,
                        reorder,
                    };
                    // Check units here so a typo never reaches the lab.
                    change
                        .apply_to(&mut Default::default())
                        .map_err(|e| invalid(anyhow!(e)))?;
                    (
                        lab,
                        a.clone(),
                        b.clone(),
                        format!("/api/links/{a}/{b}/set"),
                        Some(serde_json::to_value(&change).expect("serializes")),
                    )
                }
                LinkCmd::Down { a, b, lab } => (
                    lab,
                    a.clone(),
                    b.clone(),
                    format!("/api/links/{a}/{b}/down"),
                    Some(serde_json::json!({})),
                ),
                LinkCmd::Up { a, b, lab } => (
                    lab,
                    a.clone(),
                    b.clone(),
                    format!("/api/links/{a}/{b}/up"),
                    Some(serde_json::json!({})),
                ),
            };
            let dir = pick_lab(lab)?;
            let info = supervisor_of(&dir)?;
            let v = api(&info, "POST", &path, body)?;
            println!("{a}--{b}: {}", summarize_link(&v));
            Ok(())
        }
        Cmd::Fault {
            action:
                FaultCmd::Clock {
                    node,
                    lab,
                    step,
                    drift,
                    bias,
                    pulsar_loss,
                    pulsar_restore,
                },
        } => {
            let fault = clock_request(step, drift, bias, pulsar_loss, pulsar_restore)
                .map_err(|e| invalid(anyhow!(e)))?;
            let v = node_fault(lab, &node, &NodeFault::Clock(fault))?;
            println!("clock {node}: {}", v["injected"]);
            Ok(())
        }
        Cmd::Fault {
            action:
                FaultCmd::Byzantine {
                    node,
                    lab,
                    behaviour,
                    honest,
                },
        } => {
            let fault = if honest {
                ByzantineFault::honest()
            } else {
                ByzantineFault::from_names(behaviour).map_err(|e| invalid(anyhow!(e)))?
            };
            let v = node_fault(lab, &node, &NodeFault::Byzantine(fault))?;
            let b = &v["behaviour"];
            if b.as_array().is_some_and(|a| a.is_empty()) {
                println!("byzantine {node}: honest again");
            } else {
                println!("byzantine {node}: {b}");
            }
            Ok(())
        }
        Cmd::Fault { action } => {
            let (lab, node, what) = match action {
                FaultCmd::Crash { node, lab } => (lab, node, "crash"),
                FaultCmd::Restart { node, lab } => (lab, node, "restart"),
                FaultCmd::Clock { .. } | FaultCmd::Byzantine { .. } => {
                    return Err(Failure(
                        1,
                        anyhow!("internal: clock and byzantine faults are handled above"),
                    ))
                }
            };
            let dir = pick_lab(lab)?;
            let info = supervisor_of(&dir)?;
            let v = api(
                &info,
                "POST",
                &format!("/api/nodes/{node}/{what}"),
                Some(serde_json::json!({})),
            )?;
            println!("{what} {node}: {v}");
            Ok(())
        }
        Cmd::Probe {
            lab,
            a,
            b,
            count,
            interval,
            burst,
            json,
        } => {
            need_root("probe")?;
            let dir = pick_lab(lab)?;
            let p = lab_plan(&dir)?;
            let Some(l) = p.link_between(&a, &b) else {
                for n in [&a, &b] {
                    if p.node_index(n).is_none() {
                        return Err(invalid(anyhow!("lab {} has no node {n:?}", dir.lab)));
                    }
                }
                return Err(invalid(anyhow!(
                    "lab {} has no link between {a} and {b} (probe measures one link)",
                    dir.lab
                )));
            };
            let (ea, eb) = if p.nodes[l.a.node].name == a {
                (&l.a, &l.b)
            } else {
                (&l.b, &l.a)
            };
            let interval = Duration::from_nanos(
                units::duration_ns(&interval).map_err(|e| invalid(anyhow!("--interval: {e}")))?,
            );
            // The live configuration may differ from the topology after `link set`.
            let live = SupervisorInfo::read(&dir)
                .filter(|i| i.alive())
                .and_then(|i| api(&i, "GET", "/api/status", None).ok());
            let na = Netns::open(&p.nodes[ea.node].netns)?;
            let nb = Netns::open(&p.nodes[eb.node].netns)?;
            let conf = live.as_ref().and_then(|v| {
                v["links"]
                    .as_array()?
                    .iter()
                    .find(|x| x["name"] == l.name.as_str())
                    .cloned()
            });
            let ts = p.time_scale;
            let (cdelay, cjit, closs, crate_bps, up) = match &conf {
                Some(c) => (
                    c["delay_s"].as_f64().unwrap_or(0.0),
                    c["jitter_s"].as_f64().unwrap_or(0.0),
                    c["loss"].as_f64().unwrap_or(0.0),
                    c["rate_bps"].as_u64(),
                    c["up"].as_bool().unwrap_or(true),
                ),
                None => (
                    l.model.delay_ns as f64 / 1e9,
                    l.model.jitter_ns as f64 / 1e9,
                    0.0,
                    l.model.rate_bps,
                    true,
                ),
            };
            // No probe counts as lost before the configured round trip could bring it back.
            let real =
                |emulated_s: f64| Duration::try_from_secs_f64(emulated_s / ts).unwrap_or_default();
            let opts = ProbeOptions {
                count,
                interval,
                throughput_packets: burst,
                expected_rtt: real(2.0 * cdelay),
                expected_jitter: real(cjit),
                ..Default::default()
            };
            let r = probe::probe(&na, ea.ip, &nb, eb.ip, &opts)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "link": l.name, "time_scale": ts, "sent": r.sent, "received": r.received,
                        "measured": {"rtt_mean_s": r.rtt_mean_s, "rtt_p50_s": r.rtt_p50_s, "rtt_p99_s": r.rtt_p99_s, "loss": r.loss, "throughput_bps": r.throughput_bps},
                        "configured": {"rtt_real_s": 2.0 * cdelay / ts, "jitter_real_s": cjit / ts, "loss_round_trip": 1.0 - (1.0 - closs).powi(2), "rate_bps": crate_bps, "up": up}
                    })
                );
            } else {
                println!("probe {} ({} probes, time_scale {ts})", l.name, r.sent);
                println!("                 measured        configured");
                println!(
                    "  rtt mean    {:>12}    {:>12}",
                    ms(r.rtt_mean_s),
                    ms(2.0 * cdelay / ts)
                );
                println!(
                    "  rtt p50/p99 {:>12}    ± {} jitter each way",
                    format!("{}/{}", ms(r.rtt_p50_s), ms(r.rtt_p99_s)),
                    ms(cjit / ts)
                );
                println!(
                    "  loss (rtt)  {:>11.2}%    {:>11.2}%{}",
                    r.loss * 100.0,
                    (1.0 - (1.0 - closs).powi(2)) * 100.0,
                    if up { "" } else { " (link down)" }
                );
                if let Some(t) = r.throughput_bps {
                    println!(
                        "  throughput  {:>12}    {:>12}",
                        format!("{:.2} Mbit/s", t / 1e6),
                        crate_bps
                            .map(|b| format!("{:.2} Mbit/s", b as f64 * ts / 1e6))
                            .unwrap_or_else(|| "unlimited".into())
                    );
                }
            }
            Ok(())
        }
    }
}

fn ms(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else {
        format!("{:.3} ms", s * 1e3)
    }
}

fn summarize_link(v: &serde_json::Value) -> String {
    let m = &v["a_to_b"];
    format!(
        "{} delay {} jitter {} loss {} rate {}",
        if v["up"].as_bool() == Some(true) {
            "up,"
        } else {
            "DOWN,"
        },
        units::fmt_ns(m["delay_ns"].as_u64().unwrap_or(0)),
        units::fmt_ns(m["jitter_ns"].as_u64().unwrap_or(0)),
        fmt_loss(&m["loss"]),
        m["rate_bps"]
            .as_u64()
            .map(units::fmt_bps)
            .unwrap_or_else(|| "unlimited".into())
    )
}

/// A link's loss model as the topology writes it: `0%`, `5%`, `5% (25% correlated)`,
/// `gilbert_elliott p 1% r 25% …`.
fn fmt_loss(v: &serde_json::Value) -> String {
    let pct = |k: &str| format!("{}%", (v[k].as_f64().unwrap_or(0.0) * 1e4).round() / 1e2);
    match v["model"].as_str() {
        Some("random") if v["correlation"].as_f64().unwrap_or(0.0) > 0.0 => {
            format!("{} ({} correlated)", pct("probability"), pct("correlation"))
        }
        Some("random") => pct("probability"),
        Some("gilbert_elliott") => format!(
            "gilbert_elliott p {} r {} loss_bad {} loss_good {}",
            pct("p"),
            pct("r"),
            pct("loss_bad"),
            pct("loss_good")
        ),
        _ => "0%".into(),
    }
}

fn down_one(lab: &str) -> Result<(), Failure> {
    let dir = lab_dir(lab)?;
    if !dir.exists() {
        println!("lab {lab} is not up; nothing to do");
        return Ok(());
    }
    if let Some(info) = SupervisorInfo::read(&dir).filter(|i| i.alive()) {
        // Ask the supervisor to tear down its own lab; it knows its engine and agents.
        apply::stop_process(info.pid, info.start_time, Duration::from_secs(15));
    } else {
        // Before supervisor.json exists (mid-`up`), the ledger still names the supervisor.
        for e in lightcone::state::Ledger::read(&dir) {
            if let lightcone::state::Entry::Process {
                pid,
                start_time,
                what,
            } = e
            {
                if what == "supervisor" {
                    apply::stop_process(pid, start_time, Duration::from_secs(15));
                }
            }
        }
    }
    let removed = apply::teardown(&dir, None)?;
    println!(
        "lab {lab} is down{}",
        if removed.namespaces > 0 {
            format!(" (removed {} leftover namespaces)", removed.namespaces)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn status(lab: Option<String>, json: bool) -> Result<(), Failure> {
    let labs = match lab {
        Some(l) => {
            let d = lab_dir(&l)?;
            if !d.exists() {
                return Err(state(format!("lab {l} is not up")));
            }
            vec![d]
        }
        None => LabDir::all(),
    };
    let mut out: Vec<serde_json::Value> = Vec::new();
    for dir in &labs {
        let l = &dir.lab;
        match SupervisorInfo::read(dir).filter(|i| i.alive()) {
            Some(info) => match api(&info, "GET", "/api/status", None) {
                Ok(v) => out.push(v),
                Err(Failure(_, e)) => out.push(serde_json::json!({"name": l, "state": "unreachable", "error": e.to_string()})),
            },
            None => out.push(serde_json::json!({"name": l, "state": "stale", "hint": format!("supervisor is gone; run `lightcone down {l}`")})),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "labs": out })).expect("json")
        );
        return Ok(());
    }
    if out.is_empty() {
        println!("no lab is up");
    }
    for v in out {
        match serde_json::from_value::<LabStatus>(v.clone()) {
            Ok(s) => {
                let running = s
                    .nodes
                    .iter()
                    .filter(|n| n.agent.state == "running")
                    .count();
                let up = s.links.iter().filter(|l| l.up).count();
                println!(
                    "{}: up {:.0}s, engine {}, {} nodes ({} agents running), {}/{} links up",
                    s.name,
                    s.uptime_s,
                    engine_arg(s.engine),
                    s.nodes.len(),
                    running,
                    up,
                    s.links.len()
                );
                println!("  dashboard {}  metrics {}", s.dashboard_url, s.metrics_url);
                if let Some(p) = &s.prometheus_url {
                    println!("  prometheus {p}");
                }
            }
            Err(_) => println!(
                "{}: {} ({})",
                v["name"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?"),
                v["hint"].as_str().or(v["error"].as_str()).unwrap_or("")
            ),
        }
    }
    Ok(())
}

/// Start the supervisor as a daemon and relay its progress until it is ready.
fn up_detached(
    file: &PathBuf,
    engine: EngineChoice,
    no_agents: bool,
    port: u16,
    prometheus: bool,
) -> Result<(), Failure> {
    let exe = std::env::current_exe().context("find lightcone executable")?;
    let mut c = Command::new(exe);
    c.arg("__supervise")
        .arg(file)
        .arg("--link-engine")
        .arg(engine_arg(engine))
        .arg("--port")
        .arg(port.to_string());
    if no_agents {
        c.arg("--no-agents");
    }
    if prometheus {
        c.arg("--prometheus");
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = c.spawn().context("start supervisor")?;
    let out = BufReader::new(child.stdout.take().expect("piped"));
    let mut progress = Renderer::default();
    for line in out.lines() {
        let line = line.unwrap_or_default();
        if let Some(url) = line.strip_prefix("\u{1}READY ") {
            progress.clear();
            println!("lab is up (supervisor pid {})", child.id());
            println!("  dashboard: {url}/");
            println!("  metrics:   {url}/metrics");
            println!("tear it down with `lightcone down`");
            return Ok(());
        }
        progress.line(&line, false);
    }
    progress.clear();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let st = child.wait().context("wait for supervisor")?;
    let msg = err.trim().trim_start_matches("error: ").to_string();
    let code = st.code().unwrap_or(1) as u8;
    Err(Failure(
        if code == 0 { 1 } else { code },
        anyhow!(if msg.is_empty() {
            "supervisor exited before the lab was up".into()
        } else {
            msg
        }),
    ))
}

fn engine_arg(e: EngineChoice) -> &'static str {
    match e {
        EngineChoice::Auto => "auto",
        EngineChoice::Netem => "netem",
        EngineChoice::Wire => "wire",
        EngineChoice::None => "none",
    }
}

/// After `READY`, the parent stops reading: point stdout/stderr at the supervisor's log.
fn detach_stdio() {
    let log = LabDir::all()
        .into_iter()
        .filter(|d| SupervisorInfo::read(d).is_some_and(|i| i.pid == std::process::id()))
        .map(|d| d.logs().join("supervisor.log"))
        .next()
        .unwrap_or_else(|| PathBuf::from("/dev/null"));
    if let Ok(f) = std::fs::File::options().create(true).append(true).open(log) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        unsafe {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
        }
    }
}

fn graph(t: &topology::Topology, f: GraphFormat) -> String {
    let mut s = String::new();
    let label = |l: &topology::LinkSpec| {
        let mut x = units::fmt_ns(l.model.delay_ns);
        if l.delay_auto {
            x += " (light)";
        }
        x
    };
    match f {
        GraphFormat::Dot => {
            s += &format!("graph \"{}\" {{\n  node [shape=circle];\n", t.name);
            for n in &t.nodes {
                let shape = match n.role {
                    lightcone_agent::config::Role::Authority => "doublecircle",
                    lightcone_agent::config::Role::Gateway => "box",
                    _ => "circle",
                };
                s += &format!("  \"{}\" [shape={shape}];\n", n.name);
            }
            for l in &t.links {
                s += &format!(
                    "  \"{}\" -- \"{}\" [label=\"{}\"];\n",
                    t.nodes[l.a].name,
                    t.nodes[l.b].name,
                    label(l)
                );
            }
            s += "}\n";
        }
        GraphFormat::Mermaid => {
            s += "graph LR\n";
            let id = |i: usize| format!("n{i}");
            for (i, n) in t.nodes.iter().enumerate() {
                s += &format!("  {}[\"{}\"]\n", id(i), n.name);
            }
            for l in &t.links {
                s += &format!("  {} ---|\"{}\"| {}\n", id(l.a), label(l), id(l.b));
            }
        }
    }
    s
}

/// `lightcone run`: progress to stdout (stderr with --json), one line per failed expectation.
fn run_scenario(
    scenario: PathBuf,
    seed: Option<u64>,
    out: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    use lightcone::experiment;
    let (sc, _, _) = experiment::prepare(&scenario, seed).map_err(|e| match e {
        experiment::RunError::Scenario(e) => invalid_rendered(e),
        e => invalid(e),
    })?;
    need_root("run")?;
    let opts = experiment::RunOptions {
        scenario,
        seed,
        out,
    };
    let mut progress = Renderer::default();
    let o = experiment::run(&opts, |l| progress.line(l, json)).map_err(|e| {
        Failure(
            if e.is_invalid() {
                code::INVALID
            } else {
                code::FAILURE
            },
            anyhow!(e),
        )
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&o).expect("json"));
    } else {
        for v in &o.verdicts {
            println!(
                "{} {}: measured {} (expected {}{}){}",
                if v.pass { "PASS" } else { "FAIL" },
                v.expectation,
                v.measured,
                v.expected,
                match (&v.spec, &v.looser_than_spec) {
                    (Some(spec), Some(_)) => format!("; looser than spec: {spec}"),
                    (Some(spec), None) => format!("; spec {spec}"),
                    _ => String::new(),
                },
                if v.pass {
                    String::new()
                } else {
                    format!(" — {}", v.detail)
                }
            );
        }
        println!("report: {}", o.dir.join("report.html").display());
    }
    drop(progress);
    if o.passed {
        // With --json, stdout holds the JSON document only.
        if json {
            eprintln!("scenario {} (seed {}) passed", sc.name, o.seed);
        } else {
            println!("scenario {} (seed {}) passed", sc.name, o.seed);
        }
        Ok(())
    } else {
        let failed: Vec<&str> = o
            .verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(|v| v.expectation.as_str())
            .collect();
        Err(Failure(
            code::FAILURE,
            anyhow!(
                "scenario {} failed: {} (report: {})",
                sc.name,
                failed.join("; "),
                o.dir.join("report.html").display()
            ),
        ))
    }
}
