//! The **wire** engine: a userspace link emulator that forwards every L2 frame between two
//! veth ends (normally both in the lab's "wire" namespace), each direction shaped by its
//! own [`Shaper`]. It runs where the kernel has no `sch_netem`, holds delay × bandwidth far
//! beyond netem's queue, and measures what it does.
//!
//! # How
//! One OS thread runs the event loop for every link. All ends the engine serves sit in a few
//! namespaces (a lab has exactly one: its wire namespace), and the engine keeps **one
//! AF_PACKET socket per namespace**, bound to ifindex 0 (every interface): `recvmsg`'s
//! `sockaddr_ll.sll_ifindex` names the end a frame came in on, a map ifindex → (link, end)
//! kept by the loop as links come and go says which link and direction it belongs to, and
//! the frame leaves with `sendto` to the other end's ifindex. Frames from interfaces that
//! are no link's end (`lo`, an end whose link was removed) are dropped and counted
//! ([`WireEngine::ignored_frames`]). So a 10⁴-node lab's 21,220 ends cost one descriptor,
//! not 21,220: the engine fits under any `RLIMIT_NOFILE`, and there is nothing to close
//! but one socket per namespace at teardown (each AF_PACKET close waits for a network RCU
//! grace period, 12–22 ms on the reference machine). A namespace's socket lives until the
//! engine stops, also when its last link is removed.
//!
//! The loop is `epoll` over those sockets plus an `eventfd` for commands, and a binary heap
//! of frames ordered by the real time they are due. It sends what is due, then sleeps in
//! `epoll_pwait2` (ns timeout) until the next frame is due or a socket is readable. It wakes
//! [`EARLY_WAKE_NS`] before a deadline and spins the rest, with the thread's timer slack
//! at 1 ns, so frames leave within a few µs of their time on an idle host.
//!
//! Sockets are opened with `libc` directly, not `pnet`: pnet's datalink channel hides its
//! descriptor and binds to one interface. Each socket is `socket(AF_PACKET, SOCK_RAW, 0)` —
//! protocol 0 so nothing is queued before it is configured — then bound to ifindex 0 with
//! `ETH_P_ALL`, non-blocking, `PACKET_IGNORE_OUTGOING` (we never re-capture our own
//! transmissions, nor anything else sent on the namespace's interfaces),
//! `PACKET_QDISC_BYPASS`, a [`RCVBUF_BYTES`] receive buffer (`SO_RCVBUFFORCE`, we run as
//! root; one buffer now holds every end's backlog) and `PACKET_VNET_HDR`. The virtio-net
//! header is what makes veth work: a frame from a local socket carries a *partial* checksum
//! (checksum offload) and may be a GSO super-frame; the header carries both facts across, so
//! the kernel completes the checksum and segments on the far side exactly as it would have.
//! When a frame is corrupted, its checksum is completed here first (as netem does), so the
//! flipped bit is seen by the receiver's checks. `SO_TIMESTAMPNS` gives each frame the
//! time the kernel received it; that, not the moment the loop got round to reading it, is
//! the frame's arrival, so a loop that gets the CPU late on a busy host still delivers on
//! time as long as it wakes before the frame is due.
//!
//! # Limits
//! Memory is bounded by the shapers' queue caps
//! ([`lightcone_link::shaper::HARD_CAP_BYTES`] per direction) plus one 64 KiB receive
//! buffer; frames larger than that are dropped and counted as `dropped_queue`. A frame the
//! kernel refuses to send is counted in `tx_errors`. Taking a link down discards what is on
//! it (a cut fibre loses its light); those frames count as `dropped_down`.
//!
//! # Measured
//! Per link and direction: frames forwarded and dropped by reason, queue depth, and the
//! achieved one-way delay (real seconds from the frame's arrival at this engine to its
//! transmission) as a histogram; optionally as Prometheus series (see [`WireMetrics`]).
//! `Drop` of the [`WireEngine`] stops the thread and closes every socket.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prometheus::{Gauge, Histogram, IntCounter, IntGauge, Registry};

use super::metrics::LinkSeries;
/// The engines' shared stats vocabulary, re-exported where the wire engine's callers
/// have always found it.
pub use super::stats::{Direction, LinkStats, DELAY_BUCKETS_S};
use crate::kernel::{KernelError, Netns};
use lightcone_link::model::LinkModel;
use lightcone_link::shaper::{Class, Drop as DropReason, Shaper, Verdict};

/// Wake this long before a frame is due and spin the rest (timer wake-up latency).
pub const EARLY_WAKE_NS: u64 = 20_000;
/// Largest frame accepted (a GSO super-frame on veth is at most 64 KiB).
pub const MAX_FRAME_BYTES: usize = 65_536;
/// Frames read from one socket before the loop looks at its timers again.
const READ_BUDGET: usize = 64;
/// Receive buffer asked for on every socket: one socket holds the backlog of every end in
/// its namespace (the kernel charges each frame's `truesize`, ≈ 0.8 KiB for a 64-byte
/// frame, so this holds ≈ 80,000 small frames; memory is taken only as frames wait).
pub const RCVBUF_BYTES: libc::c_int = 64 << 20;
const SNDBUF_BYTES: libc::c_int = 4 << 20;
/// Size of `struct virtio_net_hdr`.
const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
// linux/if_packet.h (not all in the libc crate)
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Errors of the wire engine. Each says whether anything changed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// `time_scale` must be finite and > 0; nothing was started.
    #[error("time_scale must be finite and positive, got {0}")]
    InvalidTimeScale(f64),
    /// A socket or event-loop system call failed; the link (or engine) was not added.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Entering a namespace failed; the link was not added.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A link with that id exists; nothing changed.
    #[error("link {0:?} exists already")]
    LinkExists(String),
    /// No link with that id; nothing changed.
    #[error("no link {0:?}")]
    NoSuchLink(String),
    /// The interface is an end of a link already (or both ends of the new link are the
    /// same interface): one frame can belong to one link only. Nothing changed.
    #[error("interface {port} is already an end of link {link:?}")]
    PortInUse { port: String, link: String },
    /// Registering metrics failed; nothing was registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The event loop is gone (it panicked); nothing changed.
    #[error("wire event loop is not running")]
    Stopped,
}

fn sys(what: impl Into<String>) -> WireError {
    WireError::Sys {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

/// One end of a link: an interface in a named namespace. The engine receives and sends on
/// it through its one socket in that namespace (opened with the namespace's first end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// Interface `ifname` in namespace `netns`: the engine looks its index up there.
    Netns { netns: String, ifname: String },
    /// Interface index `ifindex` in namespace `netns`, looked up by the caller (a lab's
    /// 10⁴ ends are looked up in one pass in the wire namespace, not one `setns` each).
    Index { netns: String, ifindex: u32 },
}

impl PortSpec {
    fn netns(&self) -> &str {
        match self {
            PortSpec::Netns { netns, .. } | PortSpec::Index { netns, .. } => netns,
        }
    }
}

/// An end as the loop knows it: (namespace, ifindex).
type Port = (String, u32);

#[derive(Debug)]
struct PromDir {
    forwarded: IntCounter,
    dropped_loss: IntCounter,
    dropped_queue: IntCounter,
    dropped_down: IntCounter,
    delay: Histogram,
    configured: Gauge,
    depth: IntGauge,
    /// Longest wait for the transmitter, per class ([`Class::index`]).
    wait: [Gauge; 2],
    /// Longest part of a Class-A wait spent behind data.
    a_behind_data: Gauge,
    /// Latest a frame left (or started) after its model's time.
    late: Gauge,
}

#[derive(Debug, Default)]
struct DirCounters {
    up: AtomicU64,
    forwarded: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_down: AtomicU64,
    tx_errors: AtomicU64,
    queue_packets: AtomicU64,
    queue_bytes: AtomicU64,
    configured_delay_ns: AtomicU64,
    delay_sum_ns: AtomicU64,
    delay_buckets: [AtomicU64; DELAY_BUCKETS_S.len() + 1],
    /// Class-A frames forwarded (DSCP CS6/CS7) and their achieved delays.
    class_a_forwarded: AtomicU64,
    class_a_delay_sum_ns: AtomicU64,
    class_a_delay_max_ns: AtomicU64,
    /// Longest wait for the transmitter per class ([`Class::index`]), real ns.
    wait_max_ns: [AtomicU64; 2],
    /// Longest part of a Class-A copy's wait spent behind a data frame, real ns.
    a_behind_data_max_ns: AtomicU64,
    /// Latest the loop sent a frame, or started a waiting copy, after its due time, real ns.
    late_max_ns: AtomicU64,
    prom: Option<PromDir>,
}

impl DirCounters {
    fn dropped(&self, why: DropReason, n: u64) {
        let (c, p) = match why {
            DropReason::Loss => (
                &self.dropped_loss,
                self.prom.as_ref().map(|p| &p.dropped_loss),
            ),
            DropReason::Queue => (
                &self.dropped_queue,
                self.prom.as_ref().map(|p| &p.dropped_queue),
            ),
            DropReason::Down => (
                &self.dropped_down,
                self.prom.as_ref().map(|p| &p.dropped_down),
            ),
        };
        c.fetch_add(n, Ordering::Relaxed);
        if let Some(p) = p {
            p.inc_by(n);
        }
    }

    fn late(&self, ns: u64) {
        let prev = self.late_max_ns.fetch_max(ns, Ordering::Relaxed);
        if ns > prev {
            if let Some(p) = &self.prom {
                p.late.set(ns as f64 / 1e9);
            }
        }
    }

    fn forwarded(&self, delay_ns: u64, class: Class) {
        if class == Class::A {
            self.class_a_forwarded.fetch_add(1, Ordering::Relaxed);
            self.class_a_delay_sum_ns
                .fetch_add(delay_ns, Ordering::Relaxed);
            self.class_a_delay_max_ns
                .fetch_max(delay_ns, Ordering::Relaxed);
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        self.delay_sum_ns.fetch_add(delay_ns, Ordering::Relaxed);
        let s = delay_ns as f64 / 1e9;
        let i = DELAY_BUCKETS_S.partition_point(|b| *b < s);
        self.delay_buckets[i].fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.prom {
            p.forwarded.inc();
            p.delay.observe(s);
        }
    }

    /// A copy of class `class` started after the wait its delivery `d` says.
    fn waited(&self, class: Class, d: &lightcone_link::shaper::Delivery) {
        let waited_ns = d.waited_real_ns;
        let prev = self.wait_max_ns[class.index()].fetch_max(waited_ns, Ordering::Relaxed);
        if waited_ns > prev {
            if let Some(p) = &self.prom {
                p.wait[class.index()].set(waited_ns as f64 / 1e9);
            }
        }
        if class == Class::A {
            let behind = d.waited_behind_data_real_ns;
            let prev = self
                .a_behind_data_max_ns
                .fetch_max(behind, Ordering::Relaxed);
            if behind > prev {
                if let Some(p) = &self.prom {
                    p.a_behind_data.set(behind as f64 / 1e9);
                }
            }
        }
    }

    fn queue(&self, s: &Shaper) {
        self.queue_packets
            .store(u64::from(s.queued_packets()), Ordering::Relaxed);
        self.queue_bytes.store(s.queued_bytes(), Ordering::Relaxed);
        if let Some(p) = &self.prom {
            p.depth.set(i64::from(s.queued_packets()));
        }
    }

    fn configured(&self, s: &Shaper) {
        let ns = s.configured_delay_real_ns();
        self.configured_delay_ns.store(ns, Ordering::Relaxed);
        self.up.store(u64::from(s.is_up()), Ordering::Relaxed);
        if let Some(p) = &self.prom {
            p.configured.set(ns as f64 / 1e9);
        }
    }

    fn snapshot(&self, link: &str, direction: Direction) -> LinkStats {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            link: link.to_string(),
            direction,
            up: ld(&self.up) != 0,
            forwarded: ld(&self.forwarded),
            dropped_loss: ld(&self.dropped_loss),
            dropped_queue: ld(&self.dropped_queue),
            dropped_down: ld(&self.dropped_down),
            tx_errors: ld(&self.tx_errors),
            queue_packets: ld(&self.queue_packets),
            queue_bytes: ld(&self.queue_bytes),
            configured_delay_s: ld(&self.configured_delay_ns) as f64 / 1e9,
            delay_buckets: self.delay_buckets.iter().map(ld).collect(),
            delay_sum_s: ld(&self.delay_sum_ns) as f64 / 1e9,
            class_a_forwarded: ld(&self.class_a_forwarded),
            class_a_delay_sum_s: ld(&self.class_a_delay_sum_ns) as f64 / 1e9,
            class_a_delay_max_s: ld(&self.class_a_delay_max_ns) as f64 / 1e9,
            late_max_s: ld(&self.late_max_ns) as f64 / 1e9,
        }
    }
}

/// The Prometheus series of the wire engine, registered once per lab: the shared
/// [`LinkSeries`] (`lightcone_link_packets_total{lab,link,direction,outcome}` with outcome
/// forwarded / dropped_loss / dropped_queue / dropped_down, `lightcone_link_delay_seconds`,
/// `lightcone_link_configured_delay_seconds`, `lightcone_link_queue_depth`), updated as
/// frames pass; and the engine's own `lightcone_wire_ignored_frames_total{lab}` (frames
/// from interfaces that are no link's end: [`WireEngine::ignored_frames`]).
#[derive(Debug, Clone)]
pub struct WireMetrics {
    lab: String,
    packets: prometheus::IntCounterVec,
    delay: prometheus::HistogramVec,
    configured: prometheus::GaugeVec,
    depth: prometheus::IntGaugeVec,
    wait: prometheus::GaugeVec,
    a_behind_data: prometheus::GaugeVec,
    late: prometheus::GaugeVec,
    ignored: IntCounter,
}

/// `lightcone_wire_ignored_frames_total`: frames the wire engine received on interfaces
/// that are no link's end, and dropped.
fn ignored_counter(lab: Option<&str>) -> Result<IntCounter, prometheus::Error> {
    let mut o = prometheus::Opts::new(
        "lightcone_wire_ignored_frames_total",
        "Frames the wire engine received on interfaces that are no link's end, dropped",
    );
    if let Some(lab) = lab {
        o = o.const_label("lab", lab);
    }
    IntCounter::with_opts(o)
}

impl WireMetrics {
    /// Create the series and register them in `registry`. On error nothing stays
    /// registered.
    pub fn register(registry: &Registry, lab: &str) -> Result<Self, WireError> {
        let s = LinkSeries::new()?;
        let ignored = ignored_counter(Some(lab))?;
        s.register(registry)?;
        if let Err(e) = registry.register(Box::new(ignored.clone())) {
            s.unregister(registry);
            return Err(e.into());
        }
        Ok(WireMetrics {
            lab: lab.to_string(),
            packets: s.packets,
            delay: s.delay,
            configured: s.configured,
            depth: s.depth,
            wait: s.wait,
            a_behind_data: s.a_behind_data,
            late: s.late,
            ignored,
        })
    }

    fn dir(&self, link: &str, d: Direction) -> PromDir {
        let l = [self.lab.as_str(), link, d.label()];
        let out = |o: &str| self.packets.with_label_values(&[l[0], l[1], l[2], o]);
        PromDir {
            forwarded: out("forwarded"),
            dropped_loss: out("dropped_loss"),
            dropped_queue: out("dropped_queue"),
            dropped_down: out("dropped_down"),
            delay: self.delay.with_label_values(&l),
            configured: self.configured.with_label_values(&l),
            depth: self.depth.with_label_values(&l),
            wait: Class::ALL.map(|c| self.wait.with_label_values(&[l[0], l[1], l[2], c.as_str()])),
            a_behind_data: self.a_behind_data.with_label_values(&l),
            late: self.late.with_label_values(&l),
        }
    }

    fn forget(&self, link: &str) {
        for d in [Direction::AToB, Direction::BToA] {
            let l = [self.lab.as_str(), link, d.label()];
            for o in ["forwarded", "dropped_loss", "dropped_queue", "dropped_down"] {
                let _ = self.packets.remove_label_values(&[l[0], l[1], l[2], o]);
            }
            let _ = self.delay.remove_label_values(&l);
            let _ = self.configured.remove_label_values(&l);
            let _ = self.depth.remove_label_values(&l);
            for c in Class::ALL {
                let _ = self
                    .wait
                    .remove_label_values(&[l[0], l[1], l[2], c.as_str()]);
            }
            let _ = self.a_behind_data.remove_label_values(&l);
            let _ = self.late.remove_label_values(&l);
        }
    }
}

enum Cmd {
    /// The socket of a namespace the engine had none in.
    Socket {
        netns: String,
        fd: OwnedFd,
        reply: mpsc::SyncSender<Result<(), WireError>>,
    },
    Add {
        id: String,
        ports: [Port; 2],
        shapers: Box<[Shaper; 2]>,
        counters: [Arc<DirCounters>; 2],
        reply: mpsc::SyncSender<Result<(), WireError>>,
    },
    SetModel {
        id: String,
        models: Box<[Option<LinkModel>; 2]>,
        reply: mpsc::SyncSender<Result<(), WireError>>,
    },
    SetUp {
        id: String,
        up: bool,
        reply: mpsc::SyncSender<Result<(), WireError>>,
    },
    Remove {
        id: String,
        reply: mpsc::SyncSender<Result<(), WireError>>,
    },
    Stop,
}

type Counters = BTreeMap<String, [Arc<DirCounters>; 2]>;

/// The engine: owns the event-loop thread and every link's sockets. `Drop` stops it.
///
/// Methods may be called from any thread; each waits until the loop has applied it.
pub struct WireEngine {
    time_scale: f64,
    cmds: mpsc::Sender<Cmd>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
    /// Says the event loop has returned (its sockets are being closed).
    stopped: Option<mpsc::Receiver<()>>,
    counters: Arc<Mutex<Counters>>,
    metrics: Option<WireMetrics>,
    /// Namespaces the loop has a socket in (held while one is being opened, so two links
    /// added at once into a new namespace open one socket).
    sockets: Mutex<std::collections::BTreeSet<String>>,
    /// Frames from interfaces that are no link's end (see the module doc); the series
    /// in `metrics` when there are metrics, else an unregistered counter.
    ignored: IntCounter,
}

impl std::fmt::Debug for WireEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireEngine")
            .field("time_scale", &self.time_scale)
            .finish_non_exhaustive()
    }
}

impl WireEngine {
    /// Start the event loop, without Prometheus series.
    pub fn start(time_scale: f64) -> Result<Self, WireError> {
        Self::start_with_metrics(time_scale, None)
    }

    /// Start the event loop; every link added later gets series in `metrics`.
    pub fn start_with_metrics(
        time_scale: f64,
        metrics: Option<WireMetrics>,
    ) -> Result<Self, WireError> {
        if !(time_scale.is_finite() && time_scale > 0.0) {
            return Err(WireError::InvalidTimeScale(time_scale));
        }
        // SAFETY: plain syscalls; results checked, fds wrapped at once.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(sys("epoll_create1"));
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(sys("eventfd"));
        }
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        let wake_loop = wake.try_clone().map_err(|e| WireError::Sys {
            what: "dup eventfd".into(),
            source: e,
        })?;
        epoll_add(epoll.as_raw_fd(), wake_loop.as_raw_fd(), TOKEN_WAKE)?;
        let (tx, rx) = mpsc::channel();
        let (stopped_tx, stopped) = mpsc::channel();
        let ignored = match &metrics {
            Some(m) => m.ignored.clone(),
            None => ignored_counter(None)?,
        };
        let ignored_loop = ignored.clone();
        let thread = std::thread::Builder::new()
            .name("lc-wire".into())
            .spawn(move || {
                boost_this_thread();
                let mut l = Loop {
                    epoll,
                    wake: wake_loop,
                    cmds: rx,
                    sockets: Vec::new(),
                    links: Vec::new(),
                    by_id: BTreeMap::new(),
                    heap: BinaryHeap::new(),
                    kicks: BinaryHeap::new(),
                    seq: 0,
                    buf: vec![0u8; VNET_HDR_LEN + MAX_FRAME_BYTES],
                    ignored: ignored_loop,
                };
                l.run();
                let sockets = std::mem::take(&mut l.sockets);
                drop(l);
                let _ = stopped_tx.send(());
                // one close per namespace, each waiting for an RCU grace period
                drop(sockets);
            })
            .map_err(|e| WireError::Sys {
                what: "spawn wire thread".into(),
                source: e,
            })?;
        Ok(WireEngine {
            time_scale,
            cmds: tx,
            wake,
            thread: Some(thread),
            stopped: Some(stopped),
            counters: Arc::new(Mutex::new(BTreeMap::new())),
            metrics,
            sockets: Mutex::new(std::collections::BTreeSet::new()),
            ignored,
        })
    }

    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    fn call(
        &self,
        make: impl FnOnce(mpsc::SyncSender<Result<(), WireError>>) -> Cmd,
    ) -> Result<(), WireError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.cmds
            .send(make(reply))
            .map_err(|_| WireError::Stopped)?;
        self.kick();
        answer.recv().map_err(|_| WireError::Stopped)?
    }

    fn kick(&self) {
        let one: u64 = 1;
        // SAFETY: 8-byte write to our eventfd; failure (counter full) still wakes the loop.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Add link `id` between ends `a` and `b`, shaped by `a_to_b` and `b_to_a`, up.
    /// On error the link was not added; a namespace socket opened for it stays with the
    /// engine.
    pub fn add_link(
        &self,
        id: &str,
        a: PortSpec,
        b: PortSpec,
        a_to_b: LinkModel,
        b_to_a: LinkModel,
    ) -> Result<(), WireError> {
        if self
            .counters
            .lock()
            .expect("counters lock")
            .contains_key(id)
        {
            return Err(WireError::LinkExists(id.to_string()));
        }
        let ports = [self.port(a)?, self.port(b)?];
        let shapers = [
            Shaper::new(a_to_b, self.time_scale),
            Shaper::new(b_to_a, self.time_scale),
        ];
        let counters = [Direction::AToB, Direction::BToA].map(|d| {
            let c = DirCounters {
                prom: self.metrics.as_ref().map(|m| m.dir(id, d)),
                ..DirCounters::default()
            };
            Arc::new(c)
        });
        for (c, s) in counters.iter().zip(&shapers) {
            c.configured(s);
        }
        self.call(|reply| Cmd::Add {
            id: id.to_string(),
            ports,
            shapers: Box::new(shapers),
            counters: counters.clone(),
            reply,
        })?;
        self.counters
            .lock()
            .expect("counters lock")
            .insert(id.to_string(), counters);
        Ok(())
    }

    /// Resolve `p` to (namespace, ifindex), opening the namespace's socket if the loop has
    /// none there yet (both in one visit to the namespace).
    fn port(&self, p: PortSpec) -> Result<Port, WireError> {
        let mut known = self.sockets.lock().expect("sockets lock");
        let netns = p.netns().to_string();
        let need_socket = !known.contains(&netns);
        if let PortSpec::Index { ifindex, .. } = p {
            if !need_socket {
                return Ok((netns, ifindex));
            }
        }
        let ns = Netns::open(&netns)?;
        let (ifindex, fd) = ns
            .run(|| -> Result<(u32, Option<OwnedFd>), WireError> {
                let ifindex = match &p {
                    PortSpec::Netns { ifname, .. } => ifindex_of(ifname)?,
                    PortSpec::Index { ifindex, .. } => *ifindex,
                };
                let fd = if need_socket {
                    Some(open_packet_socket()?)
                } else {
                    None
                };
                Ok((ifindex, fd))
            })?
            .map_err(|e| match e {
                WireError::Sys { what, source } => WireError::Sys {
                    what: format!("{what} (namespace {netns})"),
                    source,
                },
                e => e,
            })?;
        if let Some(fd) = fd {
            self.call(|reply| Cmd::Socket {
                netns: netns.clone(),
                fd,
                reply,
            })?;
            known.insert(netns.clone());
        }
        Ok((netns, ifindex))
    }

    /// Frames the engine received on interfaces that are no link's end, and dropped.
    pub fn ignored_frames(&self) -> u64 {
        self.ignored.get()
    }

    /// Change the model of one or both directions as a diff: frames already queued keep
    /// their delivery times, random streams continue. On error nothing changed.
    pub fn set_model(
        &self,
        id: &str,
        a_to_b: Option<LinkModel>,
        b_to_a: Option<LinkModel>,
    ) -> Result<(), WireError> {
        self.call(|reply| Cmd::SetModel {
            id: id.to_string(),
            models: Box::new([a_to_b, b_to_a]),
            reply,
        })
    }

    /// Take link `id` down (both directions drop everything, queued frames are discarded)
    /// or bring it back up.
    pub fn set_up(&self, id: &str, up: bool) -> Result<(), WireError> {
        self.call(|reply| Cmd::SetUp {
            id: id.to_string(),
            up,
            reply,
        })
    }

    /// Remove link `id`: its queued frames are discarded; frames arriving on its ends from
    /// now on are ignored (counted in [`WireEngine::ignored_frames`]).
    pub fn remove_link(&self, id: &str) -> Result<(), WireError> {
        self.call(|reply| Cmd::Remove {
            id: id.to_string(),
            reply,
        })?;
        self.counters.lock().expect("counters lock").remove(id);
        if let Some(m) = &self.metrics {
            m.forget(id);
        }
        Ok(())
    }

    /// Counters of every link and direction, ordered by link id then direction.
    pub fn stats(&self) -> Vec<LinkStats> {
        let map = self.counters.lock().expect("counters lock");
        map.iter()
            .flat_map(|(id, c)| {
                [
                    c[0].snapshot(id, Direction::AToB),
                    c[1].snapshot(id, Direction::BToA),
                ]
            })
            .collect()
    }
}

impl WireEngine {
    /// Stop the event loop now (no frame moves after this returns) and close the engine's
    /// sockets (one per namespace) in the background; the returned thread ends when they
    /// are closed. Dropping the engine instead does both and waits.
    pub fn stop(mut self) -> Option<JoinHandle<()>> {
        let _ = self.cmds.send(Cmd::Stop);
        self.kick();
        if let Some(stopped) = self.stopped.take() {
            // Err: the loop is gone already (it panicked); nothing moves either way.
            let _ = stopped.recv();
        }
        self.thread.take()
    }
}

impl Drop for WireEngine {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Stop);
        self.kick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Real-time priority (`SCHED_FIFO`) of the event-loop thread. Being late is the one thing
/// a link emulator must not be: on a busy host a normal thread woken for a due frame can
/// wait milliseconds for the CPU (EEVDF lets the running task finish its slice), while a
/// FIFO thread preempts at once. The loop sleeps whenever nothing is due within
/// [`EARLY_WAKE_NS`], so it only holds a core while frames flow; the kernel's RT
/// throttling still leaves others 5 % of it under a flood.
pub const LOOP_RT_PRIORITY: libc::c_int = 1;
/// Nice value used instead when `SCHED_FIFO` is not permitted.
pub const LOOP_NICE: libc::c_int = -20;

/// 1 ns timer slack and [`LOOP_RT_PRIORITY`] (else [`LOOP_NICE`]) for the calling thread.
/// Best effort: without the privilege the loop runs at normal priority and the measured
/// delays say so.
fn boost_this_thread() {
    // SAFETY: prctl/sched_setscheduler/setpriority on the calling thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        let param = libc::sched_param {
            sched_priority: LOOP_RT_PRIORITY,
        };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 {
            return;
        }
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, LOOP_NICE) != 0 {
            tracing::warn!(
                "wire: cannot raise event-loop priority: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// `setsockopt` of an int option; true when the kernel took it.
pub fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: an int option on our socket.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// The index of interface `ifname` in the calling thread's namespace.
pub fn ifindex_of(ifname: &str) -> Result<u32, WireError> {
    let cname = std::ffi::CString::new(ifname).map_err(|_| WireError::Sys {
        what: format!("interface name {ifname:?}"),
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    // SAFETY: NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(sys(format!("interface {ifname}")));
    }
    Ok(ifindex)
}

/// The engine's AF_PACKET socket for every interface of the calling thread's namespace,
/// configured as the module doc says.
fn open_packet_socket() -> Result<OwnedFd, WireError> {
    // SAFETY: socket creation; wrapped at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(sys("socket(AF_PACKET)"));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let r = fd.as_raw_fd();
    if !setsockopt_int(r, libc::SOL_PACKET, PACKET_VNET_HDR, 1) {
        return Err(sys("PACKET_VNET_HDR"));
    }
    if !setsockopt_int(r, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) {
        return Err(sys("PACKET_IGNORE_OUTGOING"));
    }
    if !enable_rx_timestamps(r) {
        return Err(sys("SO_TIMESTAMPNS"));
    }
    // Optional speed-ups: fine to run without them.
    let _ = setsockopt_int(r, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1);
    if !setsockopt_int(r, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF_BYTES) {
        let _ = setsockopt_int(r, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF_BYTES);
    }
    if !setsockopt_int(r, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SNDBUF_BYTES) {
        let _ = setsockopt_int(r, libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF_BYTES);
    }
    let sll = sockaddr_ll(0);
    // SAFETY: bind with a properly sized sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            r,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(sys("bind AF_PACKET to every interface"));
    }
    Ok(fd)
}

/// The `ETH_P_ALL` link-layer address of interface `ifindex` (0: every interface).
fn sockaddr_ll(ifindex: u32) -> libc::sockaddr_ll {
    // SAFETY: a zeroed sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    sll
}

const TOKEN_WAKE: u64 = u64::MAX;

fn epoll_add(epfd: RawFd, fd: RawFd, token: u64) -> Result<(), WireError> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: registering a live descriptor.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(sys("epoll_ctl ADD"));
    }
    Ok(())
}

/// Monotonic clock, ns. The shaper's `now`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME`, ns: the clock of the kernel's receive timestamps.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `SO_TIMESTAMPNS` (asm-generic, as on x86-64 and aarch64; equal to `SCM_TIMESTAMPNS`).
const SO_TIMESTAMPNS: libc::c_int = 35;

/// Ask the kernel to stamp every received packet (`SO_TIMESTAMPNS`, realtime clock).
pub fn enable_rx_timestamps(fd: RawFd) -> bool {
    setsockopt_int(fd, libc::SOL_SOCKET, SO_TIMESTAMPNS, 1)
}

/// `recv` that also returns the kernel's receive timestamp (realtime ns), if there is one.
/// Stamps taken by the kernel when the packet arrived make measured delays independent of
/// how late this thread got the CPU.
pub fn recv_stamped(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, Option<u64>)> {
    recv_stamped_from(fd, buf, flags, None)
}

/// [`recv_stamped`] that also fills in the sender's address (`from`).
fn recv_stamped_from(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
    from: Option<&mut libc::sockaddr_ll>,
) -> io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8]; // 64 bytes, aligned for cmsghdr
                              // SAFETY: zeroed msghdr is valid; pointers below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(from) = from {
        msg.msg_name = (from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    }
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: msg points at live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the kernel filled msg_control; we read only the first header and check it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null()
            && (*c).cmsg_level == libc::SOL_SOCKET
            && (*c).cmsg_type == SO_TIMESTAMPNS
            && (*c).cmsg_len as usize
                >= libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize
        {
            let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
            stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
    }
    Ok((n as usize, stamp))
}

/// A frame waiting for its time. Ordered by (time, arrival sequence) so equal times keep
/// arrival order.
struct Pending {
    at_ns: u64,
    seq: u64,
    slot: usize,
    generation: u64,
    dir: usize,
    arrived_ns: u64,
    class: Class,
    /// virtio-net header followed by the frame.
    data: Vec<u8>,
}

/// A frame copy waiting for its direction's transmitter (the shaper said
/// [`Verdict::Wait`]): its bytes and arrival time.
struct Waiting {
    arrived_ns: u64,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at_ns, self.seq) == (o.at_ns, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // reversed: BinaryHeap is a max-heap, we want the earliest first
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at_ns, o.seq).cmp(&(self.at_ns, self.seq))
    }
}

struct LinkSlot {
    id: String,
    generation: u64,
    /// Each end: (index into `Loop::sockets`, ifindex).
    ports: [(usize, u32); 2],
    shapers: [Shaper; 2],
    counters: [Arc<DirCounters>; 2],
    /// Per direction and class ([`Class::index`]), the copies waiting for the transmitter,
    /// in the order the shaper keeps them.
    waiting: [[VecDeque<Waiting>; 2]; 2],
    /// Per direction, when the loop will next start a waiting copy (an entry in `kicks`).
    kick_at: [Option<u64>; 2],
}

/// The engine's socket in one namespace and the link ends it serves there.
struct NsSocket {
    netns: String,
    fd: OwnedFd,
    /// ifindex → (link slot, end). Looked up per frame, never iterated.
    ends: BTreeMap<u32, (usize, usize)>,
}

struct Loop {
    epoll: OwnedFd,
    wake: OwnedFd,
    cmds: mpsc::Receiver<Cmd>,
    /// Indexed by epoll token; only ever grows (see the module doc).
    sockets: Vec<NsSocket>,
    links: Vec<Option<LinkSlot>>,
    by_id: BTreeMap<String, usize>,
    heap: BinaryHeap<Pending>,
    /// When a direction's transmitter frees and a waiting copy starts:
    /// (real ns, slot, generation, direction), earliest first.
    kicks: BinaryHeap<Reverse<(u64, usize, u64, usize)>>,
    seq: u64,
    buf: Vec<u8>,
    ignored: IntCounter,
}

impl Loop {
    fn run(&mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut generation = 0u64;
        loop {
            self.send_due();
            let next = [
                self.heap.peek().map(|p| p.at_ns),
                self.kicks.peek().map(|k| k.0 .0),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = next.map(|at| {
                let now = monotonic_ns();
                at.saturating_sub(now).saturating_sub(EARLY_WAKE_NS)
            });
            let ts;
            let tsp = match timeout {
                Some(ns) => {
                    ts = libc::timespec {
                        tv_sec: (ns / 1_000_000_000) as libc::time_t,
                        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
                    };
                    &ts as *const libc::timespec
                }
                None => std::ptr::null(),
            };
            // SAFETY: events buffer outlives the call; tsp null or valid.
            let n = unsafe {
                libc::epoll_pwait2(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    tsp,
                    std::ptr::null(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("wire: epoll_pwait2: {e}; event loop stops");
                return;
            }
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if token == TOKEN_WAKE {
                    if !self.commands(&mut generation) {
                        return;
                    }
                } else {
                    self.read_socket(token as usize);
                    // under a flood, keep due frames on time between read batches
                    self.send_due();
                }
            }
        }
    }

    /// Apply queued commands; false when told to stop.
    fn commands(&mut self, generation: &mut u64) -> bool {
        let mut v = 0u64;
        // SAFETY: drain the eventfd counter.
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Stop => return false,
                Cmd::Socket { netns, fd, reply } => {
                    let _ = reply.send(self.add_socket(netns, fd));
                }
                Cmd::Add {
                    id,
                    ports,
                    shapers,
                    counters,
                    reply,
                } => {
                    let _ = reply.send(self.add_link(id, ports, *shapers, counters, generation));
                }
                Cmd::SetModel { id, models, reply } => {
                    let r = match self.by_id.get(&id).and_then(|s| self.links[*s].as_mut()) {
                        None => Err(WireError::NoSuchLink(id)),
                        Some(l) => {
                            for (d, m) in (*models).into_iter().enumerate() {
                                if let Some(m) = m {
                                    l.shapers[d].set_model(m);
                                    l.counters[d].configured(&l.shapers[d]);
                                }
                            }
                            Ok(())
                        }
                    };
                    let _ = reply.send(r);
                }
                Cmd::SetUp { id, up, reply } => {
                    let r = match self.by_id.get(&id).copied() {
                        None => Err(WireError::NoSuchLink(id)),
                        Some(slot) => {
                            if !up {
                                self.flush(slot, DropReason::Down);
                            }
                            let l = self.links[slot].as_mut().expect("slot of live id");
                            for d in 0..2 {
                                l.shapers[d].set_up(up);
                                l.counters[d].configured(&l.shapers[d]);
                            }
                            Ok(())
                        }
                    };
                    let _ = reply.send(r);
                }
                Cmd::Remove { id, reply } => {
                    let r = match self.by_id.remove(&id) {
                        None => Err(WireError::NoSuchLink(id)),
                        Some(slot) => {
                            self.flush(slot, DropReason::Down);
                            if let Some(l) = self.links[slot].take() {
                                for (sock, ifindex) in l.ports {
                                    self.sockets[sock].ends.remove(&ifindex);
                                }
                            }
                            Ok(())
                        }
                    };
                    let _ = reply.send(r);
                }
            }
        }
        true
    }

    /// Serve namespace `netns` through `fd` from now on. A second socket for a namespace
    /// (cannot happen: the engine opens them under its lock) is refused and closed.
    fn add_socket(&mut self, netns: String, fd: OwnedFd) -> Result<(), WireError> {
        if self.sockets.iter().any(|s| s.netns == netns) {
            return Err(WireError::Sys {
                what: format!("a second socket for namespace {netns}"),
                source: io::ErrorKind::AlreadyExists.into(),
            });
        }
        epoll_add(
            self.epoll.as_raw_fd(),
            fd.as_raw_fd(),
            self.sockets.len() as u64,
        )?;
        self.sockets.push(NsSocket {
            netns,
            fd,
            ends: BTreeMap::new(),
        });
        Ok(())
    }

    /// Carry link `id` between `ports`; on error nothing changed.
    fn add_link(
        &mut self,
        id: String,
        ports: [Port; 2],
        shapers: [Shaper; 2],
        counters: [Arc<DirCounters>; 2],
        generation: &mut u64,
    ) -> Result<(), WireError> {
        if self.by_id.contains_key(&id) {
            return Err(WireError::LinkExists(id));
        }
        let mut ends = [(0usize, 0u32); 2];
        for (end, (netns, ifindex)) in ends.iter_mut().zip(&ports) {
            let sock = self
                .sockets
                .iter()
                .position(|s| &s.netns == netns)
                .ok_or_else(|| WireError::Sys {
                    what: format!("no socket in namespace {netns}"),
                    source: io::ErrorKind::NotFound.into(),
                })?;
            if let Some((slot, _)) = self.sockets[sock].ends.get(ifindex) {
                let link = self.links[*slot].as_ref().map_or("?", |l| l.id.as_str());
                return Err(WireError::PortInUse {
                    port: format!("{netns}:#{ifindex}"),
                    link: link.to_string(),
                });
            }
            *end = (sock, *ifindex);
        }
        if ends[0] == ends[1] {
            return Err(WireError::PortInUse {
                port: format!("{}:#{}", ports[0].0, ports[0].1),
                link: id,
            });
        }
        let slot = self
            .links
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.links.len());
        *generation += 1;
        for (side, (sock, ifindex)) in ends.iter().enumerate() {
            self.sockets[*sock].ends.insert(*ifindex, (slot, side));
        }
        let l = LinkSlot {
            id: id.clone(),
            generation: *generation,
            ports: ends,
            shapers,
            counters,
            waiting: Default::default(),
            kick_at: [None; 2],
        };
        if slot == self.links.len() {
            self.links.push(Some(l));
        } else {
            self.links[slot] = Some(l);
        }
        self.by_id.insert(id, slot);
        Ok(())
    }

    /// Discard every queued frame of a link, counting them as `why`.
    fn flush(&mut self, slot: usize, why: DropReason) {
        let Some(l) = self.links[slot].as_mut() else {
            return;
        };
        let g = l.generation;
        let heap = std::mem::take(&mut self.heap);
        let mut keep = Vec::with_capacity(heap.len());
        for p in heap.into_vec() {
            if p.slot == slot && p.generation == g {
                l.shapers[p.dir].release(p.data.len() - VNET_HDR_LEN);
                l.counters[p.dir].dropped(why, 1);
            } else {
                keep.push(p);
            }
        }
        for d in 0..2 {
            let n = l.shapers[d].flush_waiting();
            l.counters[d].dropped(why, (n[0] + n[1]) as u64);
            l.waiting[d] = Default::default();
            l.kick_at[d] = None;
            l.counters[d].queue(&l.shapers[d]);
        }
        self.heap = BinaryHeap::from(keep);
    }

    fn read_socket(&mut self, sock: usize) {
        let Some(fd) = self.sockets.get(sock).map(|s| s.fd.as_raw_fd()) else {
            return;
        };
        for _ in 0..READ_BUDGET {
            let mut from = sockaddr_ll(0);
            let (n, stamp) = match recv_stamped_from(
                fd,
                &mut self.buf,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                Some(&mut from),
            ) {
                Ok(r) => r,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock
                        && e.kind() != io::ErrorKind::Interrupted
                    {
                        tracing::warn!("wire: recv in {}: {e}", self.sockets[sock].netns);
                    }
                    return;
                }
            };
            let Some(&(slot, side)) = self.sockets[sock].ends.get(&(from.sll_ifindex as u32))
            else {
                self.ignored.inc();
                continue;
            };
            let Some(l) = self.links.get_mut(slot).and_then(Option::as_mut) else {
                self.ignored.inc();
                continue;
            };
            // The frame's time is when the kernel received it, not when we got round to
            // reading it: a late read does not stretch the emulated delay.
            let mono = monotonic_ns();
            let now = match stamp {
                Some(real) => mono.saturating_sub(realtime_ns().saturating_sub(real)),
                None => mono,
            };
            let dir = side; // frames read at end a travel a→b
            if n < VNET_HDR_LEN || n > self.buf.len() {
                l.counters[dir].dropped(DropReason::Queue, 1);
                continue;
            }
            let frame_len = n - VNET_HDR_LEN;
            let class = frame_class(&self.buf[VNET_HDR_LEN..n]);
            match l.shapers[dir].offer_class(now, frame_len, class) {
                Verdict::Drop(why) => l.counters[dir].dropped(why, 1),
                Verdict::Wait { copies } => {
                    for _ in 0..copies {
                        l.waiting[dir][class.index()].push_back(Waiting {
                            arrived_ns: now,
                            data: self.buf[..n].to_vec(),
                        });
                    }
                    arm_kick(l, slot, dir, &mut self.kicks);
                }
                Verdict::Deliver { first, duplicate } => {
                    for d in std::iter::once(first).chain(duplicate) {
                        launch(
                            (&mut self.heap, &mut self.seq),
                            &l.counters[dir],
                            (slot, l.generation, dir, class),
                            d,
                            now,
                            self.buf[..n].to_vec(),
                        );
                    }
                }
            }
            l.counters[dir].queue(&l.shapers[dir]);
        }
    }

    /// Starts the waiting copies whose transmitter has freed (see
    /// [`Shaper::start_next`]): each becomes a pending frame due at its delivery time.
    fn start_due(&mut self) {
        let now = monotonic_ns();
        while let Some(&Reverse((at, slot, generation, dir))) = self.kicks.peek() {
            if at > now {
                return;
            }
            self.kicks.pop();
            let Some(l) = self.links.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if l.generation != generation || l.kick_at[dir] != Some(at) {
                continue; // a stale entry: flushed, or re-armed earlier
            }
            l.kick_at[dir] = None;
            l.counters[dir].late(now - at);
            while let Some((class, d)) = l.shapers[dir].start_next(now) {
                let Some(w) = l.waiting[dir][class.index()].pop_front() else {
                    break; // cannot happen: the FIFOs follow the shaper's queues
                };
                launch(
                    (&mut self.heap, &mut self.seq),
                    &l.counters[dir],
                    (slot, generation, dir, class),
                    d,
                    w.arrived_ns,
                    w.data,
                );
            }
            arm_kick(l, slot, dir, &mut self.kicks);
        }
    }

    fn send_due(&mut self) {
        self.start_due();
        loop {
            let Some(top) = self.heap.peek() else { return };
            let now = monotonic_ns();
            if top.at_ns > now {
                return;
            }
            let p = self.heap.pop().expect("peeked");
            let Some(l) = self.links.get_mut(p.slot).and_then(Option::as_mut) else {
                continue;
            };
            if l.generation != p.generation {
                continue;
            }
            let (sock, ifindex) = l.ports[1 - p.dir];
            let to = sockaddr_ll(ifindex);
            // SAFETY: sending our buffer on our socket to a properly sized address.
            let rc = unsafe {
                libc::sendto(
                    self.sockets[sock].fd.as_raw_fd(),
                    p.data.as_ptr().cast(),
                    p.data.len(),
                    libc::MSG_DONTWAIT,
                    (&to as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            let sent_ns = monotonic_ns();
            l.shapers[p.dir].release(p.data.len() - VNET_HDR_LEN);
            let c = &l.counters[p.dir];
            if rc < 0 {
                c.tx_errors.fetch_add(1, Ordering::Relaxed);
            } else {
                c.forwarded(sent_ns.saturating_sub(p.arrived_ns), p.class);
            }
            c.late(sent_ns.saturating_sub(p.at_ns));
            c.queue(&l.shapers[p.dir]);
        }
    }
}

/// A copy starts: its wait is counted, its bit flipped if it is corrupted, and it goes on
/// the heap due at its delivery. `at`: (link slot, its generation, direction, class).
fn launch(
    (heap, seq): (&mut BinaryHeap<Pending>, &mut u64),
    counters: &DirCounters,
    (slot, generation, dir, class): (usize, u64, usize, Class),
    d: lightcone_link::shaper::Delivery,
    arrived_ns: u64,
    mut data: Vec<u8>,
) {
    counters.waited(class, &d);
    if let Some(bit) = d.corrupt_bit {
        corrupt(&mut data, bit);
    }
    *seq += 1;
    heap.push(Pending {
        at_ns: d.at_real_ns,
        seq: *seq,
        slot,
        generation,
        dir,
        arrived_ns,
        class,
        data,
    });
}

/// Schedules the next start of direction `dir`'s waiting copies, if any wait and none is
/// scheduled as early.
fn arm_kick(
    l: &mut LinkSlot,
    slot: usize,
    dir: usize,
    kicks: &mut BinaryHeap<Reverse<(u64, usize, u64, usize)>>,
) {
    if let Some(t) = l.shapers[dir].next_start_real_ns() {
        if l.kick_at[dir].is_none_or(|k| t < k) {
            l.kick_at[dir] = Some(t);
            kicks.push(Reverse((t, slot, l.generation, dir)));
        }
    }
}

/// The traffic class of an Ethernet frame: by the DSCP of an IPv4 or IPv6 packet
/// ([`Class::of_dscp`]: CS6/CS7 are Class A); anything else (ARP, unmarked) is data.
pub fn frame_class(frame: &[u8]) -> Class {
    let Some(ethertype) = frame.get(12..14) else {
        return Class::Data;
    };
    match (ethertype, frame.get(14), frame.get(15)) {
        ([0x08, 0x00], Some(v), Some(tos)) if v >> 4 == 4 => Class::of_dscp(tos >> 2),
        ([0x86, 0xdd], Some(a), Some(b)) if a >> 4 == 6 => {
            Class::of_dscp(((a & 0x0f) << 2) | (b >> 6))
        }
        _ => Class::Data,
    }
}

/// Flip `bit` of the frame behind the virtio-net header in `data`, completing a partial
/// checksum first so the receiver can see the damage.
fn corrupt(data: &mut [u8], bit: usize) {
    let (hdr, frame) = data.split_at_mut(VNET_HDR_LEN);
    if hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
        let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
        if start + offset + 2 <= frame.len() {
            // The field holds the pseudo-header sum; summing over it completes the checksum.
            let mut sum: u32 = 0;
            for chunk in frame[start..].chunks(2) {
                let w = if chunk.len() == 2 {
                    u16::from_be_bytes([chunk[0], chunk[1]])
                } else {
                    u16::from_be_bytes([chunk[0], 0])
                };
                sum += u32::from(w);
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let csum = !(sum as u16);
            frame[start + offset..start + offset + 2].copy_from_slice(&csum.to_be_bytes());
            hdr[0] &= !VIRTIO_NET_HDR_F_NEEDS_CSUM;
        }
    }
    if let Some(b) = frame.get_mut(bit / 8) {
        *b ^= 0x80 >> (bit % 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_completes_partial_checksum_then_flips_one_bit() {
        // A UDP checksum over bytes [4..]: field at offset 2 holds the pseudo sum 0x1234.
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        frame[6..8].copy_from_slice(&4u16.to_le_bytes());
        frame[8..10].copy_from_slice(&2u16.to_le_bytes());
        frame.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x01, 0x12, 0x34, 0xf0, 0x0f]);
        let mut c = frame.clone();
        corrupt(&mut c, 0);
        assert_eq!(c[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
        assert_eq!(c[VNET_HDR_LEN], 0xaa ^ 0x80);
        // the completed checksum verifies as a receiver does it: the ones-complement sum
        // of the range (checksum included) plus the pseudo-header sum is 0xffff
        let body = &c[VNET_HDR_LEN + 4..];
        let mut sum: u32 = 0x1234u32
            + body
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum::<u32>();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn delay_buckets_double_from_ten_microseconds() {
        assert_eq!(DELAY_BUCKETS_S[0], 1e-5);
        assert!((DELAY_BUCKETS_S[28] / DELAY_BUCKETS_S[27] - 2.0).abs() < 1e-12);
        const { assert!(DELAY_BUCKETS_S[28] > 2600.0) };
    }

    #[test]
    fn invalid_time_scale_is_refused() {
        assert!(matches!(
            WireEngine::start(0.0),
            Err(WireError::InvalidTimeScale(_))
        ));
    }

    #[test]
    fn an_end_in_a_missing_namespace_is_refused_and_changes_nothing() {
        let e = WireEngine::start(1.0).expect("engine");
        let missing = "lc-wire-test-no-such-namespace";
        for (a, b) in [
            (
                PortSpec::Netns {
                    netns: missing.into(),
                    ifname: "x".into(),
                },
                PortSpec::Index {
                    netns: missing.into(),
                    ifindex: 2,
                },
            ),
            (
                PortSpec::Index {
                    netns: missing.into(),
                    ifindex: 2,
                },
                PortSpec::Index {
                    netns: missing.into(),
                    ifindex: 3,
                },
            ),
        ] {
            let r = e.add_link("l", a, b, LinkModel::default(), LinkModel::default());
            assert!(
                matches!(r, Err(WireError::Kernel(KernelError::NoSuchNamespace(ref n))) if n == missing),
                "{r:?}"
            );
        }
        assert!(e.stats().is_empty());
        assert!(e.sockets.lock().expect("sockets").is_empty());
        assert!(matches!(e.remove_link("l"), Err(WireError::NoSuchLink(_))));
        assert_eq!(e.ignored_frames(), 0);
    }

    #[test]
    fn metrics_register_once_per_registry() {
        let r = Registry::new();
        let m = WireMetrics::register(&r, "lab").expect("first");
        assert!(WireMetrics::register(&r, "lab").is_err());
        m.dir("x", Direction::AToB).forwarded.inc();
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.contains(&"lightcone_link_packets_total".to_string()));
    }

    /// How late the loop ran is kept as a maximum, in `LinkStats` and in the lab's
    /// `lightcone_link_late_max_seconds` alike.
    #[test]
    fn lateness_is_a_maximum_in_stats_and_series() {
        let r = Registry::new();
        let m = WireMetrics::register(&r, "lab").expect("register");
        let c = DirCounters {
            prom: Some(m.dir("x", Direction::AToB)),
            ..DirCounters::default()
        };
        c.late(5_000_000);
        c.late(1_000);
        assert_eq!(c.snapshot("x", Direction::AToB).late_max_s, 0.005);
        let text = super::super::metrics::render(&r.gather());
        assert!(
            text.contains(
                "lightcone_link_late_max_seconds{direction=\"a_to_b\",lab=\"lab\",link=\"x\"} 0.005"
            ),
            "{text}"
        );
    }

    /// `ignored_frames` was only a method; the supervisor's /metrics (the lab registry's
    /// families) carries it as `lightcone_wire_ignored_frames_total{lab}`, one counter
    /// with the engine's own count.
    #[test]
    fn ignored_frames_are_a_series_in_the_lab_registry() {
        let r = Registry::new();
        let m = WireMetrics::register(&r, "lab1").expect("register");
        let e = WireEngine::start_with_metrics(1.0, Some(m)).expect("engine");
        let value = |r: &Registry| {
            let fams = r.gather();
            let f = fams
                .iter()
                .find(|f| f.name() == "lightcone_wire_ignored_frames_total")
                .expect("the ignored-frames family is exported");
            let m = &f.get_metric()[0];
            assert_eq!(m.get_label()[0].name(), "lab");
            assert_eq!(m.get_label()[0].value(), "lab1");
            m.get_counter().value()
        };
        assert_eq!(value(&r), 0.0);
        e.ignored.inc_by(3);
        assert_eq!(e.ignored_frames(), 3);
        assert_eq!(value(&r), 3.0);
        let text = super::super::metrics::render(&r.gather());
        assert!(
            text.contains("lightcone_wire_ignored_frames_total{lab=\"lab1\"} 3"),
            "{text}"
        );
    }
}
