//! The kernel side of a lab: network namespaces and netlink, with no `ip`/`tc` processes.
//!
//! Namespaces are made the way iproute2 makes them (unshare on a thread, bind-mount the
//! thread's `ns/net` under `/run/netns`), so `ip netns list` and `ip netns exec` see them.
//! Every setns happens on a dedicated OS thread that exits afterwards, never on a tokio
//! worker: a thread's network namespace is sticky and would leak into unrelated tasks.
pub mod netlink;
pub mod netns;

pub use netlink::{add_address, create_veth, handle_in, ifindex, set_up};
pub use netns::Netns;

/// What went wrong talking to the kernel. Each variant says whether anything was changed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A namespace of that name exists already; nothing was changed.
    #[error("network namespace {0:?} exists already")]
    NamespaceExists(String),
    /// The namespace is not there; nothing was changed.
    #[error("network namespace {0:?} does not exist")]
    NoSuchNamespace(String),
    /// A system call failed; `what` says which step, and whether it left anything behind.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel rejected a netlink request.
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// No such interface in that namespace; nothing was changed.
    #[error("no interface {0:?}")]
    NoSuchInterface(String),
    /// The thread that entered a namespace panicked (a bug in lightcone).
    #[error("namespace worker thread panicked")]
    ThreadPanicked,
}

impl KernelError {
    pub(crate) fn sys(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        KernelError::Sys {
            what: what.into(),
            source: source.into(),
        }
    }
    pub(crate) fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        KernelError::Netlink {
            what: what.into(),
            source,
        }
    }
    /// The errno of a netlink or system-call failure, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Sys { source, .. } => source.raw_os_error(),
            KernelError::Netlink {
                source: rtnetlink::Error::NetlinkError(e),
                ..
            } => e.code.map(|c| -c.get()),
            _ => None,
        }
    }
}
