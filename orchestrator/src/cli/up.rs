//! `up` (in the foreground, or `--detach`ed: the same binary re-executed as the hidden
//! `__supervise`, its progress relayed until the lab is ready) and `__supervise`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, Context};
use lightcone::lab::SupervisorInfo;
use lightcone::link::engine::EngineChoice;
use lightcone::progress::Renderer;
use lightcone::state::LabDir;
use lightcone::supervisor::{self, UpOptions};

use super::{code, engine_arg, load, need_root, state, Failure};

/// `lightcone up FILE [--detach]`.
pub(crate) fn cmd_up(
    file: PathBuf,
    detach: bool,
    link_engine: EngineChoice,
    no_agents: bool,
    port: u16,
    prometheus: bool,
    time_scale: Option<f64>,
) -> Result<(), Failure> {
    let topo = load(&file)?;
    supervisor::check_not_up(&topo.name).map_err(|e| state(e.to_string()))?;
    need_root("up")?;
    if link_engine == EngineChoice::Netem {
        let a = lightcone::link::netem::kernel_has_netem();
        if !a.is_available() {
            return Err(Failure(code::FAILURE, anyhow!("--link-engine netem: {a}. Use --link-engine wire (works on any kernel) or the Vagrant VM")));
        }
    }
    if detach {
        up_detached(&file, link_engine, no_agents, port, prometheus, time_scale)
    } else {
        let opts = up_options(file, link_engine, no_agents, port, prometheus, time_scale);
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

/// The supervisor's options from `up`'s flags (the detached supervisor gets the same).
fn up_options(
    file: PathBuf,
    engine: EngineChoice,
    no_agents: bool,
    port: u16,
    prometheus: bool,
    time_scale: Option<f64>,
) -> UpOptions {
    UpOptions {
        topology: file,
        engine,
        agents: !no_agents,
        port,
        prometheus,
        time_scale,
        cross: Vec::new(),
        lab_wide: None,
        origin: Vec::new(),
        host: None,
    }
}

/// `--time-scale S`: a number in the range a topology's `time_scale` may take.
pub(crate) fn parse_time_scale(s: &str) -> Result<f64, String> {
    use lightcone::topology::{TIME_SCALE_MAX, TIME_SCALE_MIN};
    match s.parse::<f64>() {
        Ok(t) if (TIME_SCALE_MIN..=TIME_SCALE_MAX).contains(&t) => Ok(t),
        _ => Err(format!(
            "must be a number between {TIME_SCALE_MIN} and {TIME_SCALE_MAX} (emulated seconds per real second), got {s:?}"
        )),
    }
}

/// `lightcone __supervise`: the detached supervisor; progress and `READY` on stdout.
pub(crate) fn cmd_supervise(
    file: PathBuf,
    link_engine: EngineChoice,
    no_agents: bool,
    port: u16,
    prometheus: bool,
    time_scale: Option<f64>,
) -> Result<(), Failure> {
    let opts = up_options(file, link_engine, no_agents, port, prometheus, time_scale);
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

/// Start the supervisor as a daemon and relay its progress until it is ready.
fn up_detached(
    file: &Path,
    engine: EngineChoice,
    no_agents: bool,
    port: u16,
    prometheus: bool,
    time_scale: Option<f64>,
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
    if let Some(t) = time_scale {
        c.arg("--time-scale").arg(t.to_string());
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
    Err(exited_before_up(&mut child, "supervisor"))
}

/// A detached child (`who`: the supervisor, or a multi-host lab's controller) ended its
/// stdout before saying `READY`: its exit code (1 if it claims success) and its stderr's
/// words, or that it exited early.
pub(super) fn exited_before_up(child: &mut std::process::Child, who: &str) -> Failure {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let code = match child.wait() {
        Ok(st) => st.code().unwrap_or(1) as u8,
        Err(e) => return Failure(code::FAILURE, anyhow!("wait for {who}: {e}")),
    };
    let msg = err.trim().trim_start_matches("error: ").to_string();
    Failure(
        if code == 0 { 1 } else { code },
        anyhow!(if msg.is_empty() {
            format!("{who} exited before the lab was up")
        } else {
            msg
        }),
    )
}

/// After `READY`, the parent stops reading: point stdout/stderr at the supervisor's log.
fn detach_stdio() {
    let log = LabDir::all()
        .into_iter()
        .filter(|d| SupervisorInfo::read(d).is_some_and(|i| i.pid == std::process::id()))
        .map(|d| d.logs().join("supervisor.log"))
        .next()
        .unwrap_or_else(|| PathBuf::from("/dev/null"));
    redirect_stdio(&log);
}

/// Point this process's stdout and stderr at `log` (appended): once a detached child has
/// said `READY`, nobody reads its output.
pub(super) fn redirect_stdio(log: &std::path::Path) {
    if let Ok(f) = std::fs::File::options().create(true).append(true).open(log) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: dup2 on descriptors this process owns.
        unsafe {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
        }
    }
}
