//! The lightcone node core: one sans-IO state machine, [`Node`], and its sub-machines.
//! No sockets, no clocks, no threads: this crate does not depend on tokio, hyper,
//! prometheus or nix, so the compiler keeps I/O out (`tests/check-core-deps.sh`).
//! Two drivers call it: the agent's tokio/UDP driver (`lightcone-agent`) and the
//! deterministic simulator (`lightcone-sim`).
//!
//! # Using a [`Node`] (the call order, as quinn-proto's `Connection` and str0m's `Rtc`)
//!
//! 1. **Construct** with [`Node::new`] (from an [`AgentConfig`]) or
//!    [`Node::with_directory`] (the simulator shares one [`Directory`]); optionally
//!    [`Node::with_time`], [`Node::set_boot_epoch`], [`Node::set_wire_epoch`],
//!    [`Node::raise_sequence_floor`] — all before starting. Errors are
//!    [`ConfigError`](config::ConfigError); nothing has started then.
//! 2. **Start** once with [`Node::start`]: sets the first timers and greets the neighbours
//!    (their datagrams land in the [`Outbox`]).
//! 3. **Handle inputs**, each with the current emulated time `now` (an [`Instant`], never
//!    earlier than the previous call's):
//!    - a datagram from neighbour `from`: [`Node::handle`] with [`Input::Datagram`];
//!    - an operator [`Command`]: [`Node::command`] returns its own
//!      `Result<`[`Reply`]`, `[`CommandError`]`>` at once. A `cell` put may answer
//!      [`Reply::Pending`]; the [`Event::KvWritten`] or [`Event::KvPutFailed`] carrying its
//!      request id comes later, from a later call;
//!    - time: when `now` reaches [`Node::poll_timeout`], call [`Node::handle_timeout`]; it
//!      fires the earliest due timer and returns its deadline, `None` when nothing is due
//!      (a spurious wake-up is a no-op). Call it again while it returns `Some`.
//! 4. **Poll the outputs** after every call: drain [`Outbox::transmits`] (datagrams to
//!    neighbours, in order) and [`Outbox::events`] (what happened, in order), then ask
//!    [`Node::poll_timeout`] again — any call may set, move or cancel timers. The node
//!    owns the only timer table ([`time::Timers`]): drivers keep none. A driver that
//!    puts many nodes' events of one instant on one line (the simulator) gives each call
//!    an order stamp first ([`Node::set_call_order`]) and queues the wake-up at
//!    [`Node::poll_timeout_order`]; equal deadlines then fire where they were set.
//!
//! Getters ([`Node::snapshot`], [`Node::counters`], [`Node::membership`], …) never change
//! state. The outbox is bounded: datagrams and events beyond its capacity are dropped and
//! counted. One seed and one input sequence always give one output sequence.
//!
//! # Rooms
//!
//! Vocabulary (imported by the sub-machines, importing none of them but the wire format):
//! [`addr`], [`byzantine`], [`io`], [`time`], [`directory`], [`params`], [`counters`],
//! [`view`]. Sub-machines: [`membership`] (SWIM + Lifeguard), [`routing`] (hierarchical
//! distance vector), [`watch`] (the neighbourhood watch), [`kv`] and [`causal`] (the
//! causally consistent replicated store), [`clock`] (the time layer), [`heat`] (heat as a
//! schedulable resource: thermal model, descriptors, leases, backpressure; off unless
//! configured). The format: [`wire`].
//! The composition: [`node`]. Configuration as data: [`config`].
pub mod addr;
pub mod byzantine;
pub mod causal;
pub mod claims;
pub mod clock;
pub mod config;
pub mod counters;
pub mod directory;
pub mod heat;
pub mod io;
pub mod kv;
pub mod membership;
pub mod node;
pub mod params;
pub mod routing;
// The erasure-coded object store (issue 16).
pub mod store;
pub mod time;
pub mod trust;
// Builds, protocol versions N and N−1, the tile runtime's orders (issue 18).
pub mod update;
pub mod view;
pub mod watch;
pub mod wire;

pub use config::AgentConfig;
pub use directory::Directory;
pub use io::{Command, CommandError, Event, Input, Outbox, Reply, Transmit};
pub use node::Node;
pub use time::{Instant, TimerKey};
