//! Named network namespaces under `/run/netns`, compatible with iproute2.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::KernelError;

/// Where iproute2 (and so we) keep named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The longest namespace name: it is a file name under `/run/netns`.
pub const NETNS_NAME_MAX: usize = 255;

/// An open handle on a named network namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
    fd: OwnedFd,
}

fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Make `/run/netns` a shared mount point, as `ip netns add` does, so a namespace mounted
/// there is visible in every mount namespace that shares it.
fn prepare_run_dir() -> Result<(), KernelError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = (|| {
            fs::create_dir_all(NETNS_RUN_DIR)
                .map_err(|e| KernelError::sys(format!("create {NETNS_RUN_DIR}"), e))?;
            let shared = || {
                mount(
                    None::<&str>,
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_SHARED | MsFlags::MS_REC,
                    None::<&str>,
                )
            };
            match shared() {
                Ok(()) => Ok(()),
                Err(nix::errno::Errno::EINVAL) => {
                    // Not a mount point yet: bind it onto itself, then make it shared.
                    mount(
                        Some(NETNS_RUN_DIR),
                        NETNS_RUN_DIR,
                        Some("none"),
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(|e| KernelError::sys("bind-mount /run/netns", io::Error::from(e)))?;
                    shared()
                        .map_err(|e| KernelError::sys("make /run/netns shared", io::Error::from(e)))
                }
                Err(e) => Err(KernelError::sys(
                    "make /run/netns shared",
                    io::Error::from(e),
                )),
            }
        })();
    });
    result
}

impl Netns {
    /// Create a named namespace, like `ip netns add NAME`, without spawning a process.
    ///
    /// Errors: [`KernelError::NamespaceExists`] if the name is taken (nothing changed). On
    /// any other error the half-made mount point is removed before returning.
    pub fn create(name: &str) -> Result<Netns, KernelError> {
        Netns::create_with(name, || {})
    }

    /// [`Netns::create`], running `init` inside the new namespace on the creating thread
    /// (one thread per namespace instead of two when the namespace needs set-up, such as
    /// sysctls under `/proc/sys/net`).
    pub fn create_with(
        name: &str,
        init: impl FnOnce() + Send + 'static,
    ) -> Result<Netns, KernelError> {
        prepare_run_dir()?;
        let path = path_of(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(KernelError::NamespaceExists(name.to_string()))
            }
            Err(e) => return Err(KernelError::sys(format!("create {}", path.display()), e)),
        }
        let target = path.clone();
        let made = std::thread::Builder::new()
            .name("lc-netns-new".into())
            .spawn(move || -> Result<(), KernelError> {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| KernelError::sys("unshare(CLONE_NEWNET)", io::Error::from(e)))?;
                init();
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| {
                    KernelError::sys(
                        format!("bind-mount namespace at {}", target.display()),
                        io::Error::from(e),
                    )
                })
            })
            .map_err(|e| KernelError::sys("spawn namespace thread", e))?
            .join()
            .map_err(|_| KernelError::ThreadPanicked)
            .and_then(|r| r);
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Netns::open(name)
    }

    /// Open an existing named namespace.
    pub fn open(name: &str) -> Result<Netns, KernelError> {
        let path = path_of(name);
        match File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => Ok(Netns {
                name: name.to_string(),
                fd: OwnedFd::from(f),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(KernelError::NoSuchNamespace(name.to_string()))
            }
            Err(e) => Err(KernelError::sys(format!("open {}", path.display()), e)),
        }
    }

    /// True if a namespace of that name is mounted.
    pub fn exists(name: &str) -> bool {
        path_of(name).exists()
    }

    /// Delete a named namespace, like `ip netns delete NAME`. Idempotent: a missing
    /// namespace is `Ok`. The namespace itself lives on while a process is still inside.
    pub fn delete(name: &str) -> Result<(), KernelError> {
        let path = path_of(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(KernelError::sys(
                    format!("unmount {}", path.display()),
                    io::Error::from(e),
                ))
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(KernelError::sys(format!("remove {}", path.display()), e)),
        }
    }

    /// Names of every namespace under `/run/netns`, sorted.
    pub fn list() -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(NETNS_RUN_DIR)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Run `f` on a dedicated OS thread that has entered this namespace. Sockets `f`
    /// creates stay bound to the namespace after the thread is gone.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, KernelError> {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("lc-netns".into())
                .spawn_scoped(s, || {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                        KernelError::sys(format!("setns into {}", self.name), io::Error::from(e))
                    })?;
                    Ok(f())
                })
                .map_err(|e| KernelError::sys("spawn namespace thread", e))?
                .join()
                .map_err(|_| KernelError::ThreadPanicked)?
        })
    }
}

/// Raise the soft open-file limit to the hard limit: a large lab holds one descriptor per
/// namespace and one netlink socket per namespace while it is being built.
///
/// As root the hard limit itself is raised first, to the kernel's `fs.nr_open` (at most
/// 2²⁰) where the kernel allows it (it needs `CAP_SYS_RESOURCE`). Nothing depends on it any
/// more for the wire engine, which holds one socket per namespace, not one per veth end.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(1 << 20);
        if nr_open > hard && setrlimit(Resource::RLIMIT_NOFILE, nr_open, nr_open).is_ok() {
            return;
        }
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
