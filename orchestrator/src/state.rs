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

#[derive(Debug)]
pub struct LabDir {
    pub lab: String,
    pub path: PathBuf,
}

impl LabDir {
    pub fn new(lab: &str) -> LabDir {
        LabDir {
            lab: lab.to_string(),
            path: state_root().join(lab),
        }
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

    /// Names of every lab with a state directory, sorted.
    pub fn all() -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(state_root())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
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
        fs::create_dir_all(dir.agents())?;
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

/// Start time of a process in clock ticks since boot, if it is alive.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is alive and is the process that was recorded.
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
