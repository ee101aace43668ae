//! How the controller reaches a host: the OpenSSH client, nothing of our own. Every
//! command to a host goes through one multiplexed connection per (lab, host)
//! (`ControlMaster=auto`, a `ControlPath` under the state root), so the version check,
//! the worker's session and later `status` queries share one authentication.
//! `ControlPersist` is short ([`CONTROL_PERSIST_S`]): a master whose controller was
//! killed leaves within seconds of its last session, and `down` ends it at once
//! (`ssh -O exit`). `BatchMode=yes`: ssh never asks for a password or a host key on a
//! terminal — a host it cannot reach without asking is an error, not a prompt.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::HostSpec;

/// Seconds a master connection outlives its last session.
pub const CONTROL_PERSIST_S: u32 = 10;
/// Seconds ssh waits for a host to answer the TCP connection.
pub const CONNECT_TIMEOUT_S: u32 = 10;
/// `s` as one word for a POSIX shell: single-quoted, each `'` written `'\\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A unix socket path holds 107 bytes; ssh adds a 17-byte temporary suffix while it binds.
const SUN_PATH_MAX: usize = 107 - 17;

/// Where the control sockets of every lab live: `<state root>/.ssh/`.
pub fn control_root() -> PathBuf {
    crate::state::state_root().join(".ssh")
}

/// How one lab's ssh commands are made: the client configuration (`-F`) and the control
/// socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    pub config: Option<PathBuf>,
    /// The lab's control socket prefix: `<dir>/<12 hex of the lab name's SHA-256>-`.
    pub control_prefix: PathBuf,
}

/// The control socket path is too long for a unix socket (a long `LIGHTCONE_STATE_DIR`).
#[derive(Debug, thiserror::Error)]
#[error("ssh control socket path {0} is too long for a unix socket (at most {SUN_PATH_MAX} bytes); set LIGHTCONE_STATE_DIR to a shorter directory")]
pub struct PathTooLong(pub String);

impl Ssh {
    /// The ssh of lab `lab`, sockets under `dir` (normally [`control_root`]).
    pub fn new(lab: &str, config: Option<PathBuf>, dir: &Path) -> Result<Ssh, PathTooLong> {
        let tag = hex::encode(Sha256::digest(lab.as_bytes()));
        let control_prefix = dir.join(format!("{}-", &tag[..12]));
        // %C expands to 40 hex digits.
        let longest = control_prefix.as_os_str().len() + 40;
        if longest > SUN_PATH_MAX {
            return Err(PathTooLong(format!("{}%C", control_prefix.display())));
        }
        Ok(Ssh {
            config,
            control_prefix,
        })
    }

    /// The options every ssh of this lab gets, before the target.
    pub fn options(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["-T".into()];
        if let Some(c) = &self.config {
            a.push("-F".into());
            a.push(c.into());
        }
        for o in [
            "BatchMode=yes".to_string(),
            "ControlMaster=auto".to_string(),
            format!("ControlPath={}%C", self.control_prefix.display()),
            format!("ControlPersist={CONTROL_PERSIST_S}"),
            format!("ConnectTimeout={CONNECT_TIMEOUT_S}"),
            // A dead controller-host link is noticed within 15 s by the controller.
            "ServerAliveInterval=5".to_string(),
            "ServerAliveCountMax=3".to_string(),
        ] {
            a.push("-o".into());
            a.push(o.into());
        }
        a
    }

    /// The arguments of `ssh` running `remote` (words joined by spaces by ssh and run by
    /// the host's login shell; the callers pass only checked, shell-literal words).
    pub fn args(&self, host: &HostSpec, remote: &[&str]) -> Vec<OsString> {
        let mut a = self.options();
        a.push(host.ssh.clone().into());
        a.push("--".into());
        a.extend(remote.iter().map(OsString::from));
        a
    }

    /// `ssh … TARGET remote…` with stdin closed; the caller sets stdout/stderr. Its own
    /// process group: a Ctrl-C at the controller's terminal is the controller's to handle
    /// (it closes the sessions in order), not ssh's.
    pub fn command(&self, host: &HostSpec, remote: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("ssh");
        c.args(self.args(host, remote))
            .stdin(Stdio::null())
            .process_group(0);
        c
    }

    /// Run `remote` on `host` and collect its output, killing ssh after `bound`.
    pub fn run(
        &self,
        host: &HostSpec,
        remote: &[&str],
        bound: Duration,
    ) -> Result<Output, SshError> {
        let mut c = self.command(host, remote);
        run_bounded(&mut c, None, bound).map_err(|e| SshError::of(host, e))
    }

    /// [`Ssh::run`] with `input` as the remote command's stdin (a script for `sh -s`).
    pub fn run_with_input(
        &self,
        host: &HostSpec,
        remote: &[&str],
        input: &str,
        bound: Duration,
    ) -> Result<Output, SshError> {
        let mut c = self.command(host, remote);
        c.stdin(Stdio::piped());
        run_bounded(&mut c, Some(input.as_bytes().to_vec()), bound)
            .map_err(|e| SshError::of(host, e))
    }

    /// Ask this lab's running master connection to `host` to forward `local` (a port on
    /// this machine's loopback) to `remote` on the host's loopback (`ssh -O forward`). The
    /// forward lives in the master, so it ends with it (at `down`, or [`CONTROL_PERSIST_S`]
    /// after the lab's worker session closed) unless [`Ssh::cancel_forward`] ends it first.
    pub fn forward(&self, host: &HostSpec, local: u16, remote: u16) -> Result<(), String> {
        self.mux(host, "forward", local, remote)
    }

    /// End a forward [`Ssh::forward`] made (`ssh -O cancel`).
    pub fn cancel_forward(&self, host: &HostSpec, local: u16, remote: u16) -> Result<(), String> {
        self.mux(host, "cancel", local, remote)
    }

    fn mux(&self, host: &HostSpec, op: &str, local: u16, remote: u16) -> Result<(), String> {
        let mut a = self.options();
        a.extend([
            "-O".into(),
            op.into(),
            "-L".into(),
            format!("127.0.0.1:{local}:127.0.0.1:{remote}").into(),
            host.ssh.clone().into(),
        ]);
        let mut c = Command::new("ssh");
        c.args(a).stdin(Stdio::null());
        match run_bounded(&mut c, None, Duration::from_secs(10)) {
            Ok(o) if o.code == Some(0) => Ok(()),
            Ok(o) => Err(format!(
                "host {}: `ssh -O {op} -L {local}:…:{remote}` failed: {} (is the lab's master connection up? `lightcone status` shows its workers)",
                host.name,
                o.stderr.trim()
            )),
            Err(e) => Err(SshError::of(host, e).to_string()),
        }
    }

    /// End this lab's master connection to `host` (`ssh -O exit`); nothing if none runs.
    /// Also removes a socket file a killed master left.
    pub fn close_master(&self, host: &HostSpec) {
        let mut a = self.options();
        a.extend(["-O".into(), "exit".into(), host.ssh.clone().into()]);
        let _ = run_bounded(
            Command::new("ssh")
                .args(a)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            None,
            Duration::from_secs(5),
        );
    }
}

/// What a bounded ssh run gave.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// How running ssh failed (not the remote command's own exit code: see [`Output`]).
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("host {host}: cannot run ssh: {source}; install the OpenSSH client")]
    Spawn {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("host {host}: ssh {target} gave no answer within {}s", .bound.as_secs())]
    Timeout {
        host: String,
        target: String,
        bound: Duration,
    },
}

enum RunError {
    Spawn(std::io::Error),
    Timeout(Duration),
}

impl SshError {
    fn of(host: &HostSpec, e: RunError) -> SshError {
        match e {
            RunError::Spawn(source) => SshError::Spawn {
                host: host.name.clone(),
                source,
            },
            RunError::Timeout(bound) => SshError::Timeout {
                host: host.name.clone(),
                target: host.ssh.clone(),
                bound,
            },
        }
    }
}

/// Run `c` with piped output, killed after `bound`. Output is read on threads so a chatty
/// command cannot block on a full pipe; each stream is cut at 1 MiB.
fn run_bounded(
    c: &mut Command,
    input: Option<Vec<u8>>,
    bound: Duration,
) -> Result<Output, RunError> {
    use std::io::{Read, Write};
    let t0 = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(r) = r {
                let _ = r.take(1 << 20).read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t0.elapsed() < bound => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let took = t0.elapsed();
    let Some(status) = status else {
        return Err(RunError::Timeout(bound));
    };
    Ok(Output {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostSpec {
        crate::hosts::parse_str(
            "hosts:\n  h1: { ssh: root@h1, underlay: eth0, capacity: 3, lightcone: /opt/lightcone }\n",
            "hosts.yaml",
        )
        .unwrap()
        .hosts
        .remove(0)
    }

    #[test]
    fn every_command_is_batch_mode_and_multiplexed_under_the_labs_prefix() {
        let s = Ssh::new(
            "lab1",
            Some("/etc/lc/ssh_config".into()),
            Path::new("/run/lightcone/.ssh"),
        )
        .unwrap();
        let a: Vec<String> = s
            .args(&host(), &["/opt/lightcone", "worker", "--stdio"])
            .into_iter()
            .map(|o| o.into_string().unwrap())
            .collect();
        let tag = &hex::encode(Sha256::digest(b"lab1"))[..12];
        assert_eq!(
            a,
            [
                "-T",
                "-F",
                "/etc/lc/ssh_config",
                "-o",
                "BatchMode=yes",
                "-o",
                "ControlMaster=auto",
                "-o",
                &format!("ControlPath=/run/lightcone/.ssh/{tag}-%C"),
                "-o",
                "ControlPersist=10",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "ServerAliveInterval=5",
                "-o",
                "ServerAliveCountMax=3",
                "root@h1",
                "--",
                "/opt/lightcone",
                "worker",
                "--stdio",
            ]
        );
    }

    #[test]
    fn shell_quoting_keeps_a_word_whole() {
        assert_eq!(sh_quote("eth0"), "'eth0'");
        assert_eq!(sh_quote("a'b c"), "'a'\\''b c'");
    }

    #[test]
    fn a_control_path_too_long_for_a_socket_is_refused() {
        let long = Path::new("/").join("d".repeat(60));
        let e = Ssh::new("lab1", None, &long).unwrap_err();
        assert!(
            e.to_string()
                .contains("set LIGHTCONE_STATE_DIR to a shorter directory"),
            "{e}"
        );
        assert!(Ssh::new("lab1", None, Path::new("/run/lightcone/.ssh")).is_ok());
    }
}
