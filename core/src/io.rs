//! The node's I/O vocabulary: what goes in ([`Input`], [`Command`]) and what comes out
//! ([`Transmit`], [`Event`], gathered in a bounded [`Outbox`]); [`Effects`] is what the
//! sub-machines ask for during one call, before the node addresses and signs it.

use std::collections::VecDeque;

use lightcone_timing::ClockFault;
use serde::Serialize;

use crate::byzantine::Byzantine;
use crate::causal::{Dot, DotContext};
use crate::kv::{Durability, Written};
use crate::time::TimerKey;
use crate::wire::{Dest, MemberState, Payload};

/// An operator command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A client write. Answered at once by [`Reply::KvWritten`] (`local`, or a cell whose
    /// quorum is this node alone) or [`Reply::Pending`]: then later by the
    /// [`Event::KvWritten`] or [`Event::KvPutFailed`] carrying `request`, the caller's id
    /// for it. A put refused at once is a [`CommandError`].
    Put {
        request: u64,
        key: String,
        value: Vec<u8>,
        durability: Durability,
    },
    Get {
        key: String,
    },
    Quarantine {
        node: u32,
    },
    Unquarantine {
        node: u32,
    },
    /// Send application bytes to a node over the overlay.
    Send {
        dst: u32,
        data: Vec<u8>,
    },
    /// Send an opaque time-transfer payload (the `lightcone_timing` seam) to a node.
    SendTime {
        dst: u32,
        data: Vec<u8>,
    },
    /// Inject a fault into the node's clock (`lightcone fault clock`). Fails with
    /// [`CommandError::NoTimeLayer`] when the node has no time layer.
    ClockFault(ClockFault),
    /// Make this node byzantine (a test fault: `lightcone fault byzantine`), or honest
    /// again with every behaviour off.
    Byzantine(Byzantine),
    /// Announce our own departure and stop.
    Shutdown,
    /// Submit a task (a capsule) owned by this node: placed under a lease (issue 15).
    /// Answered by [`Reply::TaskSubmitted`]; refused with [`CommandError::NoThermal`] or
    /// [`CommandError::Task`].
    TaskSubmit(crate::heat::task::TaskSpec),
    /// Ask this node's BFT group (its cell, issue 17) to revoke `node`'s directory key:
    /// once decided, every member refuses frames signed with it. Refused with
    /// [`CommandError::NoBft`] when BFT is off, [`CommandError::Bft`] otherwise.
    BftRevoke {
        node: u32,
    },
    /// A test fault (the scenario verb `steal_key`): this node holds `node`'s signing key,
    /// stolen, and at every watch tick sends a data frame signed as `node` to each other
    /// member of `node`'s cell, until it is made honest again
    /// ([`Command::Byzantine`] with every behaviour off). Refused, changing nothing, with
    /// [`CommandError::NoSuchNode`] or [`CommandError::NotTheKey`] (the key is not the
    /// one the directory holds for `node`: nothing to impersonate with).
    StealKey {
        node: u32,
        key: Box<ed25519_dalek::SigningKey>,
    },
    /// A threshold-signed runtime order (issue 18: panic-to-dark or undark, the bytes of a
    /// [`crate::update::dark::Order`]): checked, obeyed if its scope holds this node and
    /// relayed inside the scope. Refused with [`CommandError::Order`], changing nothing.
    Order(Vec<u8>),
    /// A threshold-signed trust entry (issue 17: the bytes of a
    /// [`crate::trust::log::Entry`], a certificate or a revocation signed by the
    /// authorities' threshold key): checked, applied, and flooded over every link; each node
    /// relays an entry only the first time it learns from it, so the flood ends. Refused with
    /// [`CommandError::Trust`], changing nothing.
    TrustEntry(Vec<u8>),
    /// Key rotation (issue 17): `certificate` is the bytes of a threshold-signed
    /// [`crate::trust::log::EntryKind::Certificate`] entry for this node and `secret`'s
    /// public key, with a serial above any certificate this node holds for itself. The
    /// node applies it and floods it (signed with its old key, which every node still
    /// takes), and signs with `secret` from [`crate::node::KEY_SWITCH_AFTER`] on. Refused
    /// with [`CommandError::Rotation`], changing nothing.
    RotateKey {
        secret: Box<ed25519_dalek::SigningKey>,
        certificate: Vec<u8>,
    },
    /// Store `data` as erasure-coded object `object` (issue 16). Answered by
    /// [`Reply::Pending`], then by [`Event::ObjectStored`] or [`Event::ObjectPutFailed`]
    /// carrying `request`; refused with [`CommandError::NoStore`] or
    /// [`CommandError::Store`].
    ObjectPut {
        request: u64,
        object: String,
        data: Vec<u8>,
    },
    /// Read object `object`: [`Reply::Pending`], then [`Event::ObjectRead`] or
    /// [`Event::ObjectReadFailed`] carrying `request`.
    ObjectGet {
        request: u64,
        object: String,
    },
}

/// An input to [`Node::handle`](crate::node::Node::handle).
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A datagram that arrived over the link to neighbour `from`.
    Datagram { from: u32, bytes: &'a [u8] },
    /// Fire timer `key` if it is due (a stale or early expiry is a no-op). Drivers call
    /// [`Node::handle_timeout`](crate::node::Node::handle_timeout) instead; this is for
    /// tests that aim at one timer.
    Timer(TimerKey),
}

/// What a [`Command`] returns at once (see [`Node::command`](crate::node::Node::command)).
/// The variants that answer a client are shaped like the events that used to carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Done (quarantine, byzantine, send, clock fault, shutdown).
    Done,
    /// A get's answer.
    KvValue {
        key: String,
        /// The resolved value (greatest `(hlc, dot)`).
        value: Option<Vec<u8>>,
        /// Every concurrent sibling, in `(hlc, dot)` order (the last is `value`).
        siblings: Vec<Vec<u8>>,
        /// The dot of each sibling, in the same order.
        dots: Vec<Dot>,
        /// Every write of the key this replica has seen (held or overwritten by a held one).
        context: DotContext,
    },
    /// A put acknowledged at once: held by `holders` (this node), enough for `durability`.
    KvWritten {
        request: u64,
        key: String,
        /// The write's dot and the context it overwrote.
        written: Written,
        durability: Durability,
        holders: Vec<u32>,
    },
    /// A `cell` put taken and sent to the members: the [`Event::KvWritten`] or
    /// [`Event::KvPutFailed`] with this `request` answers it later.
    Pending { request: u64 },
    /// A task taken: its id (placement follows at the next thermal round).
    TaskSubmitted { task: u64 },
}

/// Why a command was refused. Nothing was changed by a refused command, except that a
/// refused put may have advanced the node's hybrid logical clock. The messages are the
/// ones the agent sends its HTTP clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("data too large")]
    DataTooLarge,
    #[error("no node {0} to send to")]
    NoSuchNode(u32),
    #[error("time payload too large")]
    TimePayloadTooLarge,
    #[error("this node has no time layer")]
    NoTimeLayer,
    #[error("{0} cell writes already await acknowledgement; retry later")]
    TooManyPendingPuts(usize),
    /// The replicated store refused the write (its message).
    #[error("{0}")]
    Kv(String),
    #[error("the agent is stopping")]
    Stopped,
    #[error("this node has no thermal subsystem (the topology has no `thermal:` section)")]
    NoThermal,
    /// The task was refused (its message); nothing changed.
    #[error("{0}")]
    Task(String),
    #[error("this node runs no BFT group (the topology's `trust: {{ bft_verdicts: true }}` turns the cells' groups on)")]
    NoBft,
    #[error("the key given is not node {0}'s directory key")]
    NotTheKey(u32),
    #[error("a node cannot steal its own key")]
    OwnKey,
    /// The BFT group refused the entry (its message); nothing changed.
    #[error("{0}")]
    Bft(String),
    /// A trust entry was refused (why); nothing changed.
    #[error("trust entry refused: {0}")]
    Trust(String),
    /// A key rotation was refused (why); nothing changed.
    #[error("key rotation refused: {0}")]
    Rotation(String),
    /// A runtime order was refused (why); nothing changed.
    #[error("order refused: {0}")]
    Order(crate::update::dark::OrderError),
    #[error("this node has no object store (the topology has no `store:` section)")]
    NoStore,
    /// The store refused the put or read (its message); nothing changed.
    #[error("{0}")]
    Store(String),
}

/// Something the node reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    MemberChanged {
        node: u32,
        state: MemberState,
        incarnation: u64,
    },
    /// We heard we were suspected or declared dead and raised our incarnation.
    Refuted {
        incarnation: u64,
    },
    Delivered {
        src: u32,
        data: Vec<u8>,
    },
    /// An opaque time-transfer payload for the timing layer.
    TimePayload {
        src: u32,
        data: Vec<u8>,
    },
    /// A `cell` put answered [`Reply::Pending`] is acknowledged: held by `holders` (this
    /// node first), enough for `durability`.
    KvWritten {
        request: u64,
        key: String,
        /// The write's dot and the context it overwrote.
        written: Written,
        durability: Durability,
        holders: Vec<u32>,
    },
    /// A `cell` put did not reach its quorum in time (or the node stopped): indeterminate —
    /// it stands here and may still reach the others.
    KvPutFailed {
        request: u64,
        key: String,
        written: Written,
        holders: Vec<u32>,
        needed: u32,
        reason: String,
    },
    /// The neighbourhood watch quarantined `node`: `accusers` (us included when we hold
    /// evidence ourselves) reached the quorum.
    Quarantined {
        node: u32,
        accusers: Vec<u32>,
    },
    Stopped,
    /// The neighbourhood watch lifted its quarantine of `node`: its term was over and the
    /// votes against it lapsed.
    Readmitted {
        node: u32,
    },
    /// The cell's BFT group decided a revocation of `node`'s key at `slot` of its log:
    /// frames signed with that key are refused from now on.
    KeyRevokedByGroup {
        node: u32,
        slot: u64,
    },
    /// A revocation of `node`'s key signed by the authorities' threshold key reached this
    /// node (from its operator or a neighbour) and was new here: frames signed with that
    /// key are refused from now on, here and in transit.
    KeyRevokedByAuthorities {
        node: u32,
    },
    /// `node`'s key was rotated (issue 17): a newer threshold-signed certificate names
    /// another key (`serial`: the certificate's). For our own node: we sign with the new
    /// key from now on.
    KeyRotated {
        node: u32,
        serial: u64,
    },
    /// Neighbour `node` attested a build the authorities did not approve (SHA-256
    /// `build`): it is not taken into routing (issue 18's attestation).
    AttestRefused {
        node: u32,
        build: [u8; 32],
    },
    /// An object put answered [`Reply::Pending`] is held: every shard acknowledged, or
    /// more than k of them once the ack timeout passed (repair restores the rest).
    ObjectStored {
        request: u64,
        object: String,
    },
    /// An object put failed (at most k shards acknowledged in time).
    ObjectPutFailed {
        request: u64,
        object: String,
        reason: String,
    },
    /// An object read: the object's bytes, reconstructed from k verified shards.
    ObjectRead {
        request: u64,
        data: Vec<u8>,
    },
    /// An object read failed (too few good shards reachable, or a bad metadata).
    ObjectReadFailed {
        request: u64,
        reason: String,
    },
    /// A stripe this node repaired is back at full redundancy, `after_ms` (emulated) after
    /// the first of its lost holders was declared dead or came back empty.
    StripeRepaired {
        object: String,
        after_ms: u64,
    },
    /// Fewer than k shards of this object survive: it is lost (reported once, by the
    /// stripe's steward).
    ObjectLost {
        object: String,
    },
}

/// A datagram to send to a neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: u32,
    pub bytes: Vec<u8>,
}

/// Everything a call into the [`Node`](crate::node::Node) produced. Bounded: datagrams beyond the bound are
/// dropped and counted (like a full NIC queue), and so are events. Timers are not here:
/// the node keeps them, and drivers ask [`Node::poll_timeout`](crate::node::Node::poll_timeout).
#[derive(Debug, Default)]
pub struct Outbox {
    pub transmits: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    pub dropped_transmits: u64,
    pub dropped_events: u64,
    cap_transmits: usize,
    cap_events: usize,
}

impl Outbox {
    pub fn new(cap_transmits: usize, cap_events: usize) -> Self {
        Outbox {
            cap_transmits,
            cap_events,
            ..Default::default()
        }
    }
    pub(crate) fn push_transmit(&mut self, t: Transmit) -> bool {
        if self.transmits.len() >= self.cap_transmits.max(1) {
            self.dropped_transmits += 1;
            return false;
        }
        self.transmits.push_back(t);
        true
    }
    pub(crate) fn push_event(&mut self, e: Event) {
        if self.events.len() >= self.cap_events.max(1) {
            self.dropped_events += 1;
        } else {
            self.events.push_back(e);
        }
    }
}

/// What sub-machines ask for during one call; flushed into the outbox by the node.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub(crate) sends: Vec<(Dest, Option<u32>, Payload)>,
    pub events: Vec<Event>,
}

impl Effects {
    pub fn send(&mut self, dst: Dest, p: Payload) {
        self.sends.push((dst, None, p));
    }
    pub(crate) fn send_link(&mut self, to: u32, p: Payload) {
        self.sends.push((Dest::Link, Some(to), p));
    }
}
