//! A lab's state directory and its ownership ledger.
//!
//! Every lab owns `<root>/<lab>/` (root: `$LIGHTCONE_STATE_DIR`, default `/run/lightcone`,
//! a tmpfs like `/run/netns`, so both vanish together at reboot). The ledger
//! (`ledger.jsonl`) lists every namespace and process the lab creates, written and synced
//! *before* the object is created, so `down` removes exactly what `up` made — even after a
//! crash or `kill -9` in the middle of `up` — and running it twice is harmless.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Root of all lab state directories.
pub fn state_root() -> PathBuf {
    std::env::var_os("LIGHTCONE_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/lightcone"))
}

/// One object a lab owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A named network namespace (`/run/netns/<name>`).
    Netns { name: String },
    /// A process the lab started; `start_time` (clock ticks since boot, from
    /// `/proc/<pid>/stat`) guards against killing a recycled pid.
    Process {
        pid: u32,
        start_time: u64,
        what: String,
    },
}

/// A lab's state directory: `<root>/<lab>/`, for a lab name that passed
/// [`valid_lab_name`](crate::topology::valid_lab_name).
#[derive(Debug)]
pub struct LabDir {
    pub lab: String,
    pub path: PathBuf,
}

/// A lab name that is not one (`../../tmp/x`, `/tmp/x`, `Foo`): refused before any path is
/// built from it, so nothing was read or changed.
#[derive(Debug, thiserror::Error)]
#[error("{name:?} is not a lab name ({rule})", rule = crate::topology::LAB_NAME_RULE)]
pub struct BadLabName {
    pub name: String,
}

impl LabDir {
    /// The state directory of lab `lab`; a name that breaks the lab name rule is refused,
    /// so no path outside the state root can ever be built from one.
    pub fn new(lab: &str) -> Result<LabDir, BadLabName> {
        if !crate::topology::valid_lab_name(lab) {
            return Err(BadLabName {
                name: lab.to_string(),
            });
        }
        Ok(LabDir {
            lab: lab.to_string(),
            path: state_root().join(lab),
        })
    }

    /// Remove the lab's state directory and all it holds; a missing one is fine. Second
    /// line of defence behind [`LabDir::new`]: only a real directory (not a symlink) whose
    /// canonical path is `<canonical root>/<lab>` is removed, so nothing outside the state
    /// root can go, whatever the `LabDir` holds. On refusal nothing was removed.
    pub fn remove(&self) -> io::Result<()> {
        remove_within(&state_root(), &self.path, &self.lab)
    }
    pub fn ledger_path(&self) -> PathBuf {
        self.path.join("ledger.jsonl")
    }
    pub fn exists(&self) -> bool {
        self.path.exists()
    }
    pub fn plan_path(&self) -> PathBuf {
        self.path.join("plan.json")
    }
    pub fn topology_path(&self) -> PathBuf {
        self.path.join("topology.yaml")
    }
    pub fn supervisor_path(&self) -> PathBuf {
        self.path.join("supervisor.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }
    pub fn agents(&self) -> PathBuf {
        self.path.join("agents")
    }
    /// The nodes' secret keys, one 0600 file each (see [`crate::keys`]).
    pub fn keys(&self) -> PathBuf {
        self.path.join("keys")
    }

    /// Every lab with a state directory, sorted by name. Entries whose name is not a lab
    /// name (nothing lightcone made) are left alone.
    pub fn all() -> Vec<LabDir> {
        let mut v: Vec<LabDir> = fs::read_dir(state_root())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|n| LabDir::new(&n).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.lab.cmp(&b.lab));
        v
    }

    /// Names of every lab with a state directory, sorted.
    pub fn all_names() -> Vec<String> {
        LabDir::all().into_iter().map(|d| d.lab).collect()
    }
}

/// Remove `dir` recursively only if it is a real directory named `lab` directly under
/// `root` once both are canonical (no `..`, no symlink anywhere on the way out of `root`).
fn remove_within(root: &Path, dir: &Path, lab: &str) -> io::Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let refuse = |why: String| {
        Err(io::Error::other(format!(
            "refusing to remove {}: {why}; nothing was removed",
            dir.display()
        )))
    };
    if !meta.is_dir() {
        return refuse("it is not a directory (a symlink or a file)".into());
    }
    let root = fs::canonicalize(root)?;
    let real = fs::canonicalize(dir)?;
    if real.parent() != Some(root.as_path()) || real.file_name() != Some(lab.as_ref()) {
        return refuse(format!(
            "it is {}, not the state directory {}/{lab}",
            real.display(),
            root.display()
        ));
    }
    fs::remove_dir_all(&real)
}

/// The append-only ledger of a lab.
pub struct Ledger {
    file: File,
}

impl Ledger {
    /// Create the lab directory and an empty ledger. Fails if the directory exists.
    pub fn create(dir: &LabDir) -> io::Result<Ledger> {
        fs::create_dir_all(state_root())?;
        fs::create_dir(&dir.path)?;
        fs::create_dir_all(dir.logs())?;
        // Agents' control sockets and configs, and the node keys: root's only.
        create_private_dir(&dir.agents())?;
        create_private_dir(&dir.keys())?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.ledger_path())?;
        Ok(Ledger { file })
    }

    /// Reopen an existing ledger for appending.
    pub fn open(dir: &LabDir) -> io::Result<Ledger> {
        let file = OpenOptions::new().append(true).open(dir.ledger_path())?;
        Ok(Ledger { file })
    }

    /// Record entries and make them durable before the caller creates the objects.
    pub fn record(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    /// Every entry of a lab's ledger; a torn last line (crash mid-write) is ignored, since
    /// its object was never created.
    pub fn read(dir: &LabDir) -> Vec<Entry> {
        let Ok(f) = File::open(dir.ledger_path()) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

/// State letter and start time (clock ticks since boot) of a process from
/// `/proc/<pid>/stat`, if the pid exists (alive or not yet reaped).
fn process_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Create a directory only its owner can enter (0700).
fn create_private_dir(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(p)
}

/// Write `bytes` to a new or existing file readable by its owner only (0600): created with
/// that mode, and an existing file's mode is narrowed before anything is written.
pub fn write_private(p: &Path, bytes: &[u8]) -> io::Result<()> {
    write_private_unsynced(p, bytes)?;
    OpenOptions::new().write(true).open(p)?.sync_data()
}

/// [`write_private`] without the `fsync`: for the files that live no longer than the
/// lab's processes (node keys, agent configs, tile lists). A host crash ends those
/// processes too, and `down` removes the state directory whatever its files hold; while a
/// thousand `fsync`s cost seconds where `/run` is on disk (2.8 s for 1,026 files measured
/// here). The ledger keeps its `fsync` ([`Ledger::record`]): it must outlive a crash.
pub fn write_private_unsynced(p: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

/// Start time of a process in clock ticks since boot, if it is alive (a zombie, dead but
/// not yet reaped by its parent, is not).
pub fn process_start_time(pid: u32) -> Option<u64> {
    process_stat(pid)
        .filter(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
        .map(|(_, start)| start)
}

/// True when `pid` is alive and is the process that was recorded: not a zombie (a
/// `kill -9`ed supervisor whose parent never reaps it keeps its pid and start time) and not
/// a recycled pid (another start time).
pub fn same_process(pid: u32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// Pids of every process whose network namespace is the one mounted at `netns_path`.
pub fn processes_in_netns(netns_path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = fs::metadata(netns_path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(m) = fs::metadata(format!("/proc/{pid}/ns/net")) {
            if m.dev() == target.dev() && m.ino() == target.ino() {
                out.push(pid);
            }
        }
    }
    out
}

/// Of the namespaces mounted at `paths`, the names of those that hold at least one process
/// (one pass over `/proc`).
pub fn inhabited_netns(paths: impl Iterator<Item = PathBuf>) -> std::collections::BTreeSet<String> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    let mut by_inode: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in paths {
        if let (Ok(m), Some(name)) = (fs::metadata(&p), p.file_name().and_then(|n| n.to_str())) {
            by_inode.insert((m.dev(), m.ino()), name.to_string());
        }
    }
    let mut out = std::collections::BTreeSet::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        if !e
            .file_name()
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if let Ok(m) = fs::metadata(e.path().join("ns/net")) {
            if let Some(name) = by_inode.get(&(m.dev(), m.ino())) {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// SHA-256 of a file.
pub fn file_digest(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    file_digest(path).map(hex::encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_that_are_paths_are_refused() {
        for bad in [
            "../../tmp/x",
            "/tmp/x",
            "..",
            ".",
            "",
            "a/b",
            "Lab",
            "a_b",
            "-a",
            &"a".repeat(33),
        ] {
            let e = LabDir::new(bad).expect_err(bad);
            assert!(e.to_string().contains("is not a lab name"), "{e}");
        }
        let d = LabDir::new("ok-lab-1").unwrap();
        assert_eq!(d.path, state_root().join("ok-lab-1"));
    }

    #[test]
    fn removal_stays_inside_the_state_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("xyz");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("sub/f"), "keep").unwrap();
        // A path that leaves the root, however spelled, is refused.
        for p in [outside.clone(), root.join("../xyz")] {
            let e = remove_within(&root, &p, "xyz").unwrap_err();
            assert!(e.to_string().contains("refusing to remove"), "{e}");
        }
        // A symlink in the root pointing outside is refused too (not followed, not removed).
        std::os::unix::fs::symlink(&outside, root.join("xyz")).unwrap();
        let e = remove_within(&root, &root.join("xyz"), "xyz").unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert_eq!(fs::read_to_string(outside.join("sub/f")).unwrap(), "keep");
        // A real lab directory under the root goes; a missing one is no error.
        fs::create_dir_all(root.join("lab1/logs")).unwrap();
        remove_within(&root, &root.join("lab1"), "lab1").unwrap();
        assert!(!root.join("lab1").exists());
        remove_within(&root, &root.join("lab1"), "lab1").unwrap();
    }

    #[test]
    fn a_zombie_is_not_the_process_that_was_recorded() {
        // A child that exits and is not waited for stays a zombie: its pid and start time
        // are still in /proc, as a kill -9ed supervisor's are when nobody reaps it.
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = process_start_time(pid).expect("child alive");
        assert!(same_process(pid, start));
        assert!(!same_process(pid, start + 1), "another start time");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while process_stat(pid).map(|s| s.0) != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "never a zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(process_stat(pid).map(|s| s.1), Some(start));
        assert!(!same_process(pid, start), "a zombie counts as alive");
        child.wait().unwrap();
    }

    #[test]
    fn private_files_are_0600_even_when_they_existed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("k");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"secret").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), "secret");
    }
}
