//! `lightcone`: YAML topology in, network namespaces joined by optical-backbone links out.
//!
//! This file holds the command line (clap) and dispatches each subcommand to its `cmd_*`
//! function in [`cli`].

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::{Failure, Rendered};
use lightcone::link::engine::EngineChoice;
use lightcone::parse::diag::error_chain;

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
    /// Print the plan (namespaces, interfaces, addresses, link parameters) of a topology;
    /// with `--hosts`, which node goes on which host and which links cross hosts (exit 2
    /// if the lab cannot be placed).
    Plan {
        file: PathBuf,
        /// A hosts file (hosts with ssh target, underlay interface, capacity; pins).
        #[arg(long)]
        hosts: Option<PathBuf>,
        /// Print the slice of the plan this host's worker builds (JSON for
        /// `lightcone worker --stdio`) instead of the placement.
        #[arg(long, requires = "hosts")]
        slice: Option<String>,
    },
    /// Print the topology as a graph (DOT for Graphviz, or Mermaid).
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Bring a lab up: namespaces, links, agents, API and dashboard.
    ///
    /// "Up" means every namespace, link and agent tile is running and answering on its
    /// control socket, and the API listens. It does not mean converged: membership, routes
    /// and time sync settle afterwards (`lightcone run` waits for that before its timeline).
    Up {
        file: PathBuf,
        /// Return once the lab is up (see above), leaving a supervisor process that owns it
        /// (with `--hosts`: a controller process holding every host's ssh session).
        #[arg(long, short)]
        detach: bool,
        /// A hosts file: place the lab on its hosts and start one `lightcone worker` on
        /// each over OpenSSH (issue 19; today only placements without links between hosts).
        #[arg(long, conflicts_with_all = ["port", "prometheus", "time_scale"])]
        hosts: Option<PathBuf>,
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
        /// Emulated seconds per real second, overriding the topology's `time_scale`
        /// (0.001 to 100000): a host that cannot keep a lab at 1 runs it slower.
        #[arg(long, value_parser = cli::parse_time_scale)]
        time_scale: Option<f64>,
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
        /// Only the labs this machine runs itself, never a multi-host lab's view through
        /// its controller (what the controller asks each host).
        #[arg(long)]
        local: bool,
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
    /// Rotate NODE's key: the lab's authorities certify a fresh key (a threshold-signed
    /// certificate with the next serial), the node floods the certificate and signs with
    /// the new key a second later; every node takes the old key for 5 s more, then refuses
    /// it (`/state` `trust.rotated`). The node stays in service; a restart keeps the new key.
    RotateKey {
        node: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Ask the cell's BFT group (the topology's `trust: { bft_verdicts: true }`), through
    /// member BY, to revoke NODE's key: once decided, every member refuses frames signed
    /// with it (`/state` `revoked`, `lightcone_datagrams_total{outcome="key_revoked"}`).
    RevokeKey {
        node: String,
        /// A member of NODE's cell that submits the revocation to its group.
        #[arg(long)]
        by: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Objects in a running lab's erasure-coded store (issue 16).
    Object {
        #[command(subcommand)]
        action: ObjectCmd,
    },
    /// Tasks on a running lab's thermal subsystem (issue 15).
    Task {
        #[command(subcommand)]
        action: TaskCmd,
    },
    /// Capability tokens for a running lab's agents (issue 17): every state-changing
    /// request to an agent's control socket needs one (`Authorization: Bearer TOKEN`);
    /// requests through the supervisor get one minted for them.
    Token {
        #[command(subcommand)]
        action: TokenCmd,
    },
    /// Panic-to-dark (issue 18): sign an order with t of the lab's authority shares and
    /// hand it to a running agent in SCOPE (a node, a cell `l0c0k1`, a layer `l0`); the
    /// scope stops sending user traffic at once and every frame 1 s later. Only `undark`
    /// lights it again.
    Dark(cli::OrderArgs),
    /// Light a dark scope again with a threshold-signed undark order (see `dark`).
    Undark(cli::OrderArgs),
    /// Staged rollout of an agent build in a running lab: a threshold-signed release,
    /// then canary cell -> its cluster -> its layer -> all, each stage held to health
    /// gates over a soak; a gate that fires rolls the stage back and halts.
    Update {
        #[command(subcommand)]
        action: UpdateCmd,
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
        /// A hosts file: bring the lab up over its hosts when it is not up yet (a lab
        /// already up over hosts is used without it). Verbs go to the hosts holding their
        /// nodes, stamped with the instant they are due.
        #[arg(long)]
        hosts: Option<PathBuf>,
    },
    /// Simulate a scenario in the digital twin: the same scenario file, plan, core,
    /// expectations and run directory as `run`, in virtual time, without a lab or root.
    /// Prints the verdicts and the simulation's figures (events, events/s, wall time, peak
    /// memory, seed, crypto mode). Exit 1 if any expectation failed.
    Simulate {
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
        /// Signatures: `real` (Ed25519 on every frame), `modelled` (exact outcome for
        /// honest frames, forged ones rejected, Ed25519's measured cost accounted), or
        /// `auto`: real up to 1,000 nodes, modelled above.
        #[arg(long, default_value = "auto")]
        crypto: lightcone::twin::crypto::CryptoMode,
    },
    /// Check that this machine can run labs: privileges, namespaces, veth, netem,
    /// AF_PACKET, descriptors, binaries, leftovers; says which link engine `auto` picks.
    /// Exit 1 if any check fails. Creates a throwaway namespace and removes it.
    Doctor {
        /// Print the checks as JSON (fields: checks[{name, status, reason, fix}],
        /// auto_engine{engine, why}, ok).
        #[arg(long)]
        json: bool,
        /// Check every host of a hosts file over ssh instead (ssh, root, binary, VXLAN,
        /// netem, underlay MTU, clock offset); creates and removes a scratch namespace on
        /// each.
        #[arg(long)]
        hosts: Option<PathBuf>,
    },
    /// Print a shell completion script, e.g. `lightcone completions bash >
    /// /etc/bash_completion.d/lightcone`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Build one host's slice of a multi-host lab (issue 19): the slice is the first line
    /// of stdin (JSON, from `lightcone plan FILE --hosts H --slice HOST`); progress, ready
    /// and errors are JSON lines on stdout; everything is torn down when stdin closes.
    Worker {
        /// Talk over stdin/stdout (the only transport so far: an ssh session's).
        #[arg(long, conflicts_with = "identify")]
        stdio: bool,
        /// Print this binary's version and SHA-256 as one JSON line (what the controller
        /// checks before it starts a worker) and exit.
        #[arg(long)]
        identify: bool,
        /// With --identify: also the IPv4 address and MTU of this underlay interface (the
        /// controller gives them to the other hosts' VXLAN ends).
        #[arg(long, requires = "identify", value_name = "IFACE")]
        underlay: Option<String>,
        /// Answer underlay round-trip probes on this address (prints `{"port":P}`) until
        /// stdin closes (at most 60 s): the controller measures the underlay between hosts.
        #[arg(long, value_name = "IP", conflicts_with_all = ["stdio", "identify", "ping"])]
        echo: Option<std::net::Ipv4Addr>,
        /// Send underlay round-trip probes to an `--echo` (IP:PORT) and print the round
        /// trips as JSON.
        #[arg(long, value_name = "IP:PORT", conflicts_with_all = ["stdio", "identify"])]
        ping: Option<std::net::SocketAddrV4>,
        /// The UDP port `--echo` binds (0: any free one).
        #[arg(long, default_value_t = 0, requires = "echo")]
        port: u16,
        /// Probes `--ping` sends (10 ms apart).
        #[arg(long, default_value_t = 20, requires = "ping")]
        count: u32,
        /// How long `--ping` waits for late answers after its last probe, ms.
        #[arg(long, default_value_t = 2000, requires = "ping")]
        wait_ms: u64,
        /// Bind `--echo`'s or `--ping`'s socket in this lab namespace (a node's).
        #[arg(long)]
        netns: Option<String>,
    },
    #[command(hide = true, name = "__control")]
    Control {
        file: PathBuf,
        #[arg(long)]
        hosts: PathBuf,
        #[arg(long, value_enum)]
        link_engine: EngineChoice,
        #[arg(long)]
        no_agents: bool,
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
        #[arg(long, value_parser = cli::parse_time_scale)]
        time_scale: Option<f64>,
    },
}

#[derive(Subcommand)]
enum UpdateCmd {
    /// Print the stages (canary cell -> cluster -> layer -> all) with their node counts.
    Plan {
        lab: String,
        /// The canary cell (`lLcCkK`); default: the lab's first cell of tiles.
        #[arg(long)]
        canary: Option<String>,
    },
    /// Sign a release of the build with t of the lab's authority shares and roll it out
    /// (runs in the foreground; exit 1 if a gate halted it).
    Start(cli::StartArgs),
    /// The rollout's state (from the lab's state directory; any process).
    Status {
        lab: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop the running rollout and roll back every node it updated.
    Abort { lab: String },
    /// Approve a build for attestation with t of the lab's authority shares, without
    /// rolling it out (agents then take a tile that runs it into routing).
    Approve {
        lab: String,
        /// The agent binary to approve.
        #[arg(long)]
        build: PathBuf,
    },
}

#[derive(Subcommand)]
enum LinkCmd {
    /// Set link parameters (units as in topologies: 20ms, 1%, 10Mbit).
    Set {
        #[command(flatten)]
        ends: LinkEnds,
        #[command(flatten)]
        params: LinkParams,
    },
    /// Take a link down (100 % loss).
    Down(LinkEnds),
    /// Bring a link back up.
    Up(LinkEnds),
}

/// `link set`'s parameters; an absent one stays as it is.
#[derive(clap::Args)]
struct LinkParams {
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
}

/// The link a `link` command means: its two ends, on which lab.
#[derive(clap::Args)]
struct LinkEnds {
    a: String,
    b: String,
    #[arg(long)]
    lab: Option<String>,
}

#[derive(Subcommand)]
enum ObjectCmd {
    /// Store an object through a node (the topology needs a `store:` section).
    Put {
        node: String,
        id: String,
        /// The object's bytes as text; or --file.
        value: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Read an object back through a node; its bytes go to stdout.
    Get {
        node: String,
        id: String,
        #[arg(long)]
        lab: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a token from the lab's operator key (root only): for OP (kv-write,
    /// object-put, task-submit, send, fault, order, revoke), optionally only keys starting
    /// with PREFIX and only node N, valid for D (1s to 1d).
    Mint {
        #[arg(long)]
        op: String,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        ttl: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Print TOKEN narrowed by one more block of checks (offline, public key only).
    Attenuate {
        token: String,
        #[arg(long)]
        op: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Revoke TOKEN (and its attenuations) at every running agent of the lab.
    Revoke {
        token: String,
        #[arg(long)]
        lab: Option<String>,
    },
}

#[derive(Subcommand)]
enum TaskCmd {
    /// Submit tasks to a node: it places them under leases on tiles with headroom.
    Submit {
        node: String,
        #[arg(long)]
        lab: Option<String>,
        /// Compute units per task.
        #[arg(long)]
        compute: u32,
        /// How long each runs (emulated), e.g. 60s.
        #[arg(long)]
        duration: String,
        /// hot (fast, inward) or cold (deep, outward).
        #[arg(long, default_value = "cold")]
        class: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        memory_mib: u32,
        /// The task's input stream: kbit per emulated second its owner sends the tile that
        /// holds it (workload traffic over the overlay; 0: none).
        #[arg(long, default_value_t = 0)]
        traffic_kbps: u32,
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
        /// Comma-separated: lie_membership, drop_forwarding, false_accuse, forge_accuser,
        /// split_log, double_lease.
        #[arg(long, group = "mode", value_delimiter = ',')]
        behaviour: Vec<String>,
        /// Make the node honest again (also ends a steal-key).
        #[arg(long, group = "mode")]
        honest: bool,
    },
    /// Hand THIEF another node's secret key: it signs a data frame as that node to the
    /// node's cell at every watch tick (until `fault byzantine THIEF --honest`). The cell
    /// cannot tell them apart until its BFT group revokes the key (`revoke-key`).
    StealKey {
        thief: String,
        /// Whose key is stolen.
        #[arg(long)]
        key_of: String,
        #[arg(long)]
        lab: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.cmd,
        Cmd::Supervise { .. } | Cmd::Worker { .. } | Cmd::Control { .. }
    ) {
        // `lightcone status | head` ends quietly, as other tools do, instead of panicking
        // on EPIPE. The supervisor and the worker keep ignoring SIGPIPE: they must outlive
        // a closed pipe (a worker whose controller died still tears its lab down).
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let routed = match route(&cli.cmd) {
        Some(Ok(code)) => return ExitCode::from(code),
        Some(Err(e)) => Err(e),
        None => run(cli),
    };
    match routed {
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

/// A command about nodes of a multi-host lab runs on the host holding them (issue 19; see
/// `cli::route_to_host`): the node arguments and how many subcommand words precede them.
fn route(cmd: &Cmd) -> Option<Result<u8, Failure>> {
    let (lab, nodes, tokens): (&Option<String>, Vec<&str>, usize) = match cmd {
        Cmd::Exec { lab, node, .. } => (lab, vec![node], 1),
        Cmd::Probe {
            lab,
            a,
            b,
            count,
            interval,
            burst,
            json,
        } => {
            if let Some(r) =
                cli::probe_across(lab.as_deref(), a, b, *count, interval, *burst, *json)
            {
                return Some(r);
            }
            (lab, vec![a, b], 1)
        }
        // A link between hosts: each host changes its end.
        Cmd::Link { action } => {
            let (LinkCmd::Set { ends, .. } | LinkCmd::Down(ends) | LinkCmd::Up(ends)) = action;
            return cli::route_to_host(ends.lab.as_deref(), &[&ends.a, &ends.b], 2, true);
        }
        Cmd::Fault { action } => match action {
            FaultCmd::Crash { node, lab }
            | FaultCmd::Restart { node, lab }
            | FaultCmd::Clock { node, lab, .. }
            | FaultCmd::Byzantine { node, lab, .. } => (lab, vec![node], 2),
            FaultCmd::StealKey { thief, key_of, lab } => (lab, vec![thief, key_of], 2),
        },
        _ => return None,
    };
    cli::route_to_host(lab.as_deref(), &nodes, tokens, false)
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

/// One `cmd_*` per subcommand.
fn run(cli: Cli) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Validate { file } => cli::cmd_validate(&file),
        Cmd::Plan { file, hosts, slice } => {
            cli::cmd_plan(&file, hosts.as_deref(), slice.as_deref())
        }
        Cmd::Graph { file, format } => cli::cmd_graph(&file, format),
        Cmd::Up {
            file,
            hosts: Some(hosts),
            detach,
            link_engine,
            no_agents,
            ..
        } => cli::cmd_up_hosts(file, hosts, detach, link_engine, no_agents),
        Cmd::Control {
            file,
            hosts,
            link_engine,
            no_agents,
        } => cli::cmd_control(file, hosts, link_engine, no_agents),
        Cmd::Up {
            file,
            hosts: None,
            detach,
            link_engine,
            no_agents,
            port,
            prometheus,
            time_scale,
        } => cli::cmd_up(
            file,
            detach,
            link_engine,
            no_agents,
            port,
            prometheus,
            time_scale,
        ),
        Cmd::Supervise {
            file,
            link_engine,
            no_agents,
            port,
            prometheus,
            time_scale,
        } => cli::cmd_supervise(file, link_engine, no_agents, port, prometheus, time_scale),
        Cmd::Down { lab, all } => cli::cmd_down(lab, all),
        Cmd::Worker {
            echo: Some(ip),
            port,
            netns,
            ..
        } => cli::cmd_worker_echo(ip, port, netns),
        Cmd::Worker {
            ping: Some(to),
            count,
            wait_ms,
            netns,
            ..
        } => cli::cmd_worker_ping(to, count, wait_ms, netns),
        Cmd::Worker {
            stdio,
            identify,
            underlay,
            ..
        } => cli::cmd_worker(stdio, identify, underlay),
        Cmd::Status { lab, json, local } => cli::cmd_status(lab, json, local),
        Cmd::Doctor { json, hosts: None } => cli::cmd_doctor(json),
        Cmd::Doctor {
            json,
            hosts: Some(h),
        } => cli::cmd_doctor_hosts(&h, json),
        Cmd::Completions { shell } => cli::cmd_completions(shell),
        Cmd::Run {
            scenario,
            seed,
            out,
            json,
            hosts,
        } => cli::cmd_run(scenario, seed, out, json, hosts),
        Cmd::Simulate {
            scenario,
            seed,
            out,
            json,
            crypto,
        } => cli::cmd_simulate(scenario, seed, out, json, crypto),
        Cmd::Dark(a) => cli::cmd_order(true, a),
        Cmd::Undark(a) => cli::cmd_order(false, a),
        Cmd::Update { action } => match action {
            UpdateCmd::Plan { lab, canary } => cli::cmd_update_plan(lab, canary),
            UpdateCmd::Start(a) => cli::cmd_update_start(a),
            UpdateCmd::Status { lab, json } => cli::cmd_update_status(lab, json),
            UpdateCmd::Abort { lab } => cli::cmd_update_abort(lab),
            UpdateCmd::Approve { lab, build } => cli::cmd_update_approve(lab, build),
        },
        Cmd::Exec { lab, node, cmd } => cli::cmd_exec(lab, node, cmd),
        Cmd::Link { action } => cli::cmd_link(action),
        Cmd::Object { action } => match action {
            ObjectCmd::Put {
                node,
                id,
                value,
                file,
                lab,
            } => cli::cmd_object_put(node, id, value, file, lab),
            ObjectCmd::Get { node, id, lab } => cli::cmd_object_get(node, id, lab),
        },
        Cmd::Task {
            action:
                TaskCmd::Submit {
                    node,
                    lab,
                    compute,
                    duration,
                    class,
                    count,
                    memory_mib,
                    traffic_kbps,
                },
        } => cli::cmd_task_submit(
            node,
            lab,
            compute,
            duration,
            class,
            count,
            (memory_mib, traffic_kbps),
        ),
        Cmd::Token { action } => match action {
            TokenCmd::Mint {
                op,
                scope,
                node,
                ttl,
                lab,
            } => cli::cmd_token_mint(lab, op, scope, node, ttl),
            TokenCmd::Attenuate {
                token,
                op,
                scope,
                node,
                ttl,
                lab,
            } => cli::cmd_token_attenuate(lab, token, op, scope, node, ttl),
            TokenCmd::Revoke { token, lab } => cli::cmd_token_revoke(lab, token),
        },
        Cmd::Fault { action } => match action {
            FaultCmd::Crash { node, lab } => cli::cmd_crash_restart(cli::Life::Crash, node, lab),
            FaultCmd::Restart { node, lab } => {
                cli::cmd_crash_restart(cli::Life::Restart, node, lab)
            }
            FaultCmd::Clock {
                node,
                lab,
                step,
                drift,
                bias,
                pulsar_loss,
                pulsar_restore,
            } => cli::cmd_clock(node, lab, step, drift, bias, pulsar_loss, pulsar_restore),
            FaultCmd::Byzantine {
                node,
                lab,
                behaviour,
                honest,
            } => cli::cmd_byzantine(node, lab, behaviour, honest),
            FaultCmd::StealKey { thief, key_of, lab } => cli::cmd_steal_key(thief, key_of, lab),
        },
        Cmd::RevokeKey { node, by, lab } => cli::cmd_revoke_key(node, by, lab),
        Cmd::RotateKey { node, lab } => cli::cmd_rotate_key(node, lab),
        Cmd::Probe {
            lab,
            a,
            b,
            count,
            interval,
            burst,
            json,
        } => cli::cmd_probe(lab, a, b, count, interval, burst, json),
    }
}
