//! The versioned, signed binary wire format of the overlay.
//!
//! One datagram is one overlay frame:
//!
//! ```text
//! offset  size  field
//!  0       2    magic "LC"
//!  2       1    version (VERSION; other versions are counted and dropped)
//!  3       1    payload kind
//!  4       1    TTL (decremented per hop; excluded from the signature)
//!  5       1    destination tag (node / cell / cluster / layer / link-local)
//!  6       2    payload length (big endian)
//!  8       4    source node id
//! 12       8    destination (node id, or layer/cluster/cell of a scope)
//! 20       8    sequence number (per source, strictly increasing; replay window)
//! 28       8    hybrid logical clock of the source (seam for the causal layer)
//! 36       4    source boot epoch (which boot of the source sent it)
//! 40       4    destination boot epoch (the boot of the destination it is bound to; 0 for
//!               scope destinations, which name no single receiver)
//! 44       n    payload
//! 44+n    64    ed25519 signature of the source over bytes 0..44+n with TTL zeroed
//! ```
//!
//! The origin signs once; transit nodes only check structure and TTL, and the destination
//! verifies the signature, the boot epochs and the replay window (like IPsec AH: mutable
//! fields zeroed). Decoding is total: any byte string yields a frame or a [`WireError`],
//! never a panic.
//!
//! **Boot epochs** (version 2): a receiver's replay windows live in memory, so a restarted
//! receiver would accept a frame captured before its restart. Instead of persisting the
//! windows, every frame is bound to the receiver's boot: each boot of a node has an epoch
//! (1 for a node's first boot, higher for each restart), carried in the source-epoch field
//! of everything it sends. Peers learn it from any authenticated frame (a signed claim of
//! the sender; epochs only move forward) and write it into the destination-epoch field of
//! what they send it; a node accepts only frames bound to its current epoch, so a frame
//! captured before a restart is stale. A sender that used an old epoch learns the new one
//! from the receiver's reply, or from a [`Payload::Boot`] notice the receiver sends (at most
//! one per sender per second) when it rejects a stale frame — the handshake. Frames from an
//! earlier boot of the *sender* are stale too.
//!
//! **Versions N and N−1** (issue 18): the header layout is the same in every version this
//! code parses ([`VERSION_MIN`]..=[`VERSION_MAX`]); which versions a node *accepts*, and
//! which it sends to each neighbour, is its build's ([`crate::update`]): a node of version
//! N accepts N and N−1 and negotiates per neighbour with [`Payload::Hello`]. Version 3 is
//! version 2 plus kinds 34–37 ([`kind_since`]); every other kind means the same in both.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::addr::HierAddr;

pub const MAGIC: [u8; 2] = *b"LC";
pub const VERSION: u8 = 2;
/// Lowest version this code parses: version 1 (no boot epochs) had another header layout.
pub const VERSION_MIN: u8 = 2;
/// Highest version this code parses (the newest protocol it implements).
pub const VERSION_MAX: u8 = 3;
pub const HEADER_LEN: usize = 44;
/// The boot epoch of a node's first boot: what every peer assumes until told otherwise.
pub const FIRST_EPOCH: u32 = 1;
pub const SIG_LEN: usize = 64;
/// Largest datagram we send or accept: fits a 1500-byte MTU with IP/UDP headers.
pub const MAX_DATAGRAM: usize = 1400;
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN - SIG_LEN;
const TTL_OFFSET: usize = 4;
/// Default hop limit of a fresh frame.
pub const DEFAULT_TTL: u8 = 32;
/// Membership updates per message, at most (bounds piggyback size).
pub const MAX_UPDATES: usize = 64;
/// Route entries per advertisement datagram, at most.
pub const MAX_ROUTE_ENTRIES: usize = 90;
/// Opaque payloads (KV, time, data) are limited by the datagram.
pub const MAX_BLOB: usize = MAX_PAYLOAD - 2;

/// Why a datagram was rejected. Nothing is changed in the node's state by a rejected
/// datagram except the counter for its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum WireError {
    #[error("datagram too short")]
    Truncated,
    #[error("datagram larger than {MAX_DATAGRAM} bytes")]
    Oversize,
    #[error("bad magic")]
    BadMagic,
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    #[error("unknown payload kind {0}")]
    UnknownKind(u8),
    #[error("unknown destination tag {0}")]
    BadDestination(u8),
    #[error("length field disagrees with datagram size")]
    BadLength,
    #[error("malformed payload")]
    Malformed,
    #[error("unknown sender")]
    UnknownSender,
    #[error("bad signature")]
    BadSignature,
    #[error("replayed or too old sequence number")]
    Replay,
    #[error("bound to another boot of the receiver, or sent by an earlier boot of the sender")]
    StaleEpoch,
}

impl WireError {
    /// Stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::Oversize => "oversize",
            WireError::BadMagic => "bad_magic",
            WireError::UnknownVersion(_) => "unknown_version",
            WireError::UnknownKind(_) => "unknown_kind",
            WireError::BadDestination(_) => "bad_destination",
            WireError::BadLength => "bad_length",
            WireError::Malformed => "malformed",
            WireError::UnknownSender => "unknown_sender",
            WireError::BadSignature => "bad_signature",
            WireError::Replay => "replay",
            WireError::StaleEpoch => "stale_epoch",
        }
    }
}

/// Where a frame goes: one node, any node inside a scope (anycast to the first node on the
/// path that lies inside it), or the neighbour on the link it is sent over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dest {
    Node(u32),
    Cell {
        layer: u16,
        cluster: u16,
        cell: u16,
    },
    Cluster {
        layer: u16,
        cluster: u16,
    },
    Layer {
        layer: u16,
    },
    /// Link-local: consumed by whichever neighbour receives it, never forwarded.
    Link,
}

impl Dest {
    pub fn cell_of(a: &HierAddr) -> Dest {
        Dest::Cell {
            layer: a.layer,
            cluster: a.cluster,
            cell: a.cell,
        }
    }
    /// True when `addr` lies inside this scope (node and link destinations: never).
    pub fn contains(&self, a: &HierAddr) -> bool {
        match *self {
            Dest::Cell {
                layer,
                cluster,
                cell,
            } => a.layer == layer && a.cluster == cluster && a.cell == cell,
            Dest::Cluster { layer, cluster } => a.layer == layer && a.cluster == cluster,
            Dest::Layer { layer } => a.layer == layer,
            Dest::Node(_) | Dest::Link => false,
        }
    }
    /// True when `inner` is the scope one level below this one and lies inside it (a cell
    /// of this cluster, a cluster of this layer); summaries roll up along it.
    pub fn holds_scope(&self, inner: &Dest) -> bool {
        match (*self, *inner) {
            (
                Dest::Cluster { layer, cluster },
                Dest::Cell {
                    layer: l,
                    cluster: c,
                    ..
                },
            ) => layer == l && cluster == c,
            (Dest::Layer { layer }, Dest::Cluster { layer: l, .. }) => layer == l,
            _ => false,
        }
    }
    /// Tag and bytes as on the wire (also how runtime orders name their scope).
    pub(crate) fn encode(&self) -> (u8, [u8; 8]) {
        let mut b = [0u8; 8];
        let tag = match *self {
            Dest::Node(id) => {
                b[..4].copy_from_slice(&id.to_be_bytes());
                0
            }
            Dest::Cell {
                layer,
                cluster,
                cell,
            } => {
                b[..2].copy_from_slice(&layer.to_be_bytes());
                b[2..4].copy_from_slice(&cluster.to_be_bytes());
                b[4..6].copy_from_slice(&cell.to_be_bytes());
                1
            }
            Dest::Cluster { layer, cluster } => {
                b[..2].copy_from_slice(&layer.to_be_bytes());
                b[2..4].copy_from_slice(&cluster.to_be_bytes());
                2
            }
            Dest::Layer { layer } => {
                b[..2].copy_from_slice(&layer.to_be_bytes());
                3
            }
            Dest::Link => 4,
        };
        (tag, b)
    }
    /// The inverse of `encode`; `b` holds at least 6 bytes.
    pub(crate) fn decode(tag: u8, b: &[u8]) -> Result<Dest, WireError> {
        let u16at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Ok(match tag {
            0 => Dest::Node(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            1 => Dest::Cell {
                layer: u16at(0),
                cluster: u16at(2),
                cell: u16at(4),
            },
            2 => Dest::Cluster {
                layer: u16at(0),
                cluster: u16at(2),
            },
            3 => Dest::Layer { layer: u16at(0) },
            4 => Dest::Link,
            t => return Err(WireError::BadDestination(t)),
        })
    }
}

/// A member's state in SWIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
}

impl MemberState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
        }
    }
}

/// A membership update, piggybacked on probes or gossiped. `from` is the node that
/// asserted a suspicion or death (Lifeguard counts independent confirmations by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Update {
    pub node: u32,
    pub state: MemberState,
    pub incarnation: u64,
    pub from: u32,
}

/// One distance-vector entry. `cost_us` is in emulated microseconds; `hops` bounds loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteEntry {
    pub dest: Dest,
    pub cost_us: u32,
    pub hops: u8,
}

/// A membership summary of one scope (cell, cluster or layer), carried up by gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Summary {
    #[serde(skip)]
    pub scope: Dest,
    pub alive: u32,
    pub suspect: u32,
    pub dead: u32,
    /// Monotonic per reporting gateway: newer summaries replace older ones.
    pub version: u64,
    /// When the reporting gateway took the summary, on its own clock.
    pub stamp: WireStamp,
}

/// A coordinate-tagged timestamp on the wire (issue 5): the sender's best estimate of lab
/// time, its σ and where it comes from. The position is not sent: it is the sender's, which
/// every node knows from the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct WireStamp {
    pub estimate_ns: i64,
    /// σ in picoseconds, saturating (`u64::MAX` when unsynchronized).
    pub sigma_ps: u64,
    /// 0 unsynchronized, 1 authority, 2 hierarchy, 3 holdover, 4 pulsar.
    pub source: u8,
    /// Stratum for hierarchy and holdover, else 0.
    pub stratum: u8,
}

/// Highest valid [`WireStamp::source`].
pub const STAMP_SOURCE_MAX: u8 = 4;

/// The payload of a frame; the kind byte selects the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Ping {
        probe: u32,
        updates: Vec<Update>,
    },
    Ack {
        probe: u32,
        updates: Vec<Update>,
    },
    PingReq {
        probe: u32,
        target: u32,
        updates: Vec<Update>,
    },
    /// Lifeguard: the helper could not reach the target (it is alive itself).
    Nack {
        probe: u32,
    },
    Gossip {
        updates: Vec<Update>,
    },
    Route {
        full: bool,
        entries: Vec<RouteEntry>,
    },
    Summary(Summary),
    /// Causal-layer payload (KV replication), opaque here.
    Kv(Vec<u8>),
    /// Time-transfer payload (`lightcone_timing`), opaque here.
    Time(Vec<u8>),
    /// Application data, delivered as an event.
    Data(Vec<u8>),
    /// Neighbourhood watch: a forwarding audit echo (`reply` false) or its answer.
    Watch {
        nonce: u32,
        reply: bool,
    },
    /// Neighbourhood watch: the sender has its own evidence that `node` is byzantine (a
    /// vote toward quarantining it; see [`crate::watch`]).
    Accuse {
        node: u32,
    },
    /// "This is my boot": sent to a peer whose frame was bound to an earlier boot of ours;
    /// the header's source epoch is the news. Empty.
    Boot,
    /// Signed membership claims (issue 17, kind 28): a ping, ack, ping-req or gossip whose
    /// suspect/dead updates each carry their accuser's signature, in update order
    /// ([`crate::claims`]). Sent only when the watch's `signed_claims` is on.
    Signed {
        inner: Box<Payload>,
        sigs: Vec<[u8; SIG_LEN]>,
    },
    /// Signed tree heads of transparency logs (issue 17, kind 29): the sender's own and
    /// others' it holds, at most [`MAX_TREE_HEADS`] (see [`crate::trust::log`]).
    TreeHeads(Vec<crate::trust::log::TreeHead>),
    /// The thermal subsystem's messages (`crate::heat::msg`), opaque here. Kind 16.
    Heat(Vec<u8>),
    /// Small-group BFT among a cell's members (issue 17, kind 30): one
    /// [`crate::trust::bft::Msg`], encoded, opaque here. Sent only when BFT is enabled.
    Bft(Vec<u8>),
    /// Version negotiation (issue 18, kind 34, new in version 3): the protocol versions the
    /// sender accepts, `min..=max`; `reply` when it answers a hello. Link-local.
    Hello {
        min: u8,
        max: u8,
        reply: bool,
    },
    /// A threshold-signed runtime order (issue 18, kind 35, new in version 3: panic-to-dark
    /// and undark, [`crate::update::dark`]), opaque here.
    Order(Vec<u8>),
    /// The object store's messages (`crate::store::msg`, their own kinds 20–25 inside),
    /// opaque here. Kind 20 (kinds 20–27 are the store's).
    Store(Vec<u8>),
    /// A threshold-signed trust entry (issue 17, kind 38): a certificate
    /// or a revocation ([`crate::trust::threshold`]), flooded over every link by each node
    /// that applies it first. Opaque here.
    Trust(Vec<u8>),
    /// An attestation (issue 18's tile runtime, kind 39): the SHA-256 of the sender's agent
    /// build and of its configuration, signed with its tile key for its current boot
    /// ([`crate::update::attest`]); `reply` when it answers one. Link-local.
    Attest {
        build: [u8; 32],
        config: [u8; 32],
        reply: bool,
        sig: [u8; 64],
    },
}

/// Kind of [`Payload::Data`] (workload traffic).
pub const KIND_DATA: u8 = 10;
/// Kind of [`Payload::Kv`] (workload traffic).
pub const KIND_KV: u8 = 8;
/// Kind of [`Payload::Heat`] (kinds 16–19 are the thermal subsystem's).
pub const KIND_HEAT: u8 = 16;
/// Kind of [`Payload::Store`] (kinds 20–27 are the object store's).
pub const KIND_STORE: u8 = 20;

/// Highest payload kind.
pub const KIND_MAX: u8 = KIND_BFT;
/// Small-group BFT messages (issue 17; kinds 30–33 are the BFT's).
pub const KIND_BFT: u8 = 30;
/// Signed membership claims (issue 17's kinds are 28-39).
pub const KIND_SIGNED: u8 = 28;
/// Signed tree heads of transparency logs.
pub const KIND_TREE_HEADS: u8 = 29;
/// Tree heads per datagram, at most.
pub const MAX_TREE_HEADS: usize = 8;
/// Version negotiation (issue 18's kinds are 34–37).
pub const KIND_HELLO: u8 = 34;
/// Threshold-signed runtime orders (panic-to-dark, undark).
pub const KIND_ORDER: u8 = 35;
/// Threshold-signed trust entries, flooded (certificates, revocations). Issue 17's range
/// (28–39), so version 2 carries it: every node, whatever its build, must be able to learn
/// that a key is revoked (a version-2 build older than this kind drops it as unknown).
pub const KIND_TRUST: u8 = 38;
/// Attestation of a node's build (issue 18's tile runtime). In issue 17's range (28–39),
/// so version 2 carries it too: every build must prove what it runs, or a tile could skip
/// attestation by speaking N−1.
pub const KIND_ATTEST: u8 = 39;

/// Whether a datagram is Class-A traffic (issue 15): control and safety — membership,
/// routing, time, thermal signals and leases, trust, orders — rather than workload data
/// (kinds 8 kv, 10 data and 20 object-store shards). The agents mark Class A with DSCP CS6
/// so links give it strict priority; what does not parse as a frame counts as data.
pub fn is_class_a(datagram: &[u8]) -> bool {
    match (datagram.get(0..2), datagram.get(3)) {
        (Some(m), Some(&kind)) if m == MAGIC => !matches!(kind, KIND_KV | KIND_DATA | KIND_STORE),
        _ => false,
    }
}

/// The protocol version that introduced payload kind `kind`: 3 for issue 18's kinds
/// (34–37), 2 for every other (version 2 is the oldest this code speaks). A node of an
/// older version drops a newer kind as unknown (counted `unknown_kind`), never fatally.
pub fn kind_since(kind: u8) -> u8 {
    match kind {
        34..=37 => 3,
        _ => 2,
    }
}

impl Payload {
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Ping { .. } => 1,
            Payload::Ack { .. } => 2,
            Payload::PingReq { .. } => 3,
            Payload::Nack { .. } => 4,
            Payload::Gossip { .. } => 5,
            Payload::Route { .. } => 6,
            Payload::Summary(_) => 7,
            Payload::Kv(_) => 8,
            Payload::Time(_) => 9,
            Payload::Data(_) => 10,
            Payload::Watch { .. } => 11,
            Payload::Accuse { .. } => 12,
            Payload::Boot => 13,
            Payload::Signed { .. } => KIND_SIGNED,
            Payload::TreeHeads(_) => KIND_TREE_HEADS,
            Payload::Heat(_) => KIND_HEAT,
            Payload::Bft(_) => KIND_BFT,
            Payload::Hello { .. } => KIND_HELLO,
            Payload::Order(_) => KIND_ORDER,
            Payload::Store(_) => KIND_STORE,
            Payload::Trust(_) => KIND_TRUST,
            Payload::Attest { .. } => KIND_ATTEST,
        }
    }

    /// The membership updates a payload carries (pings, acks, ping-reqs and gossip).
    pub fn updates_mut(&mut self) -> Option<&mut Vec<Update>> {
        match self {
            Payload::Ping { updates, .. }
            | Payload::Ack { updates, .. }
            | Payload::PingReq { updates, .. }
            | Payload::Gossip { updates } => Some(updates),
            Payload::Signed { inner, .. } => inner.updates_mut(),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Payload::Ping { .. } => "ping",
            Payload::Ack { .. } => "ack",
            Payload::PingReq { .. } => "ping_req",
            Payload::Nack { .. } => "nack",
            Payload::Gossip { .. } => "gossip",
            Payload::Route { .. } => "route",
            Payload::Summary(_) => "summary",
            Payload::Kv(_) => "kv",
            Payload::Time(_) => "time",
            Payload::Data(_) => "data",
            Payload::Watch { .. } => "watch",
            Payload::Accuse { .. } => "accuse",
            Payload::Boot => "boot",
            Payload::Signed { .. } => "signed",
            Payload::TreeHeads(_) => "tree_heads",
            Payload::Heat(_) => "heat",
            Payload::Bft(_) => "bft",
            Payload::Hello { .. } => "hello",
            Payload::Order(_) => "order",
            Payload::Store(_) => "store",
            Payload::Trust(_) => "trust",
            Payload::Attest { .. } => "attest",
        }
    }

    /// Bytes of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        let mut w = Vec::new();
        self.encode(&mut w);
        w.len()
    }

    fn encode(&self, w: &mut Vec<u8>) {
        match self {
            Payload::Ping { probe, updates } | Payload::Ack { probe, updates } => {
                w.extend_from_slice(&probe.to_be_bytes());
                put_updates(w, updates);
            }
            Payload::PingReq {
                probe,
                target,
                updates,
            } => {
                w.extend_from_slice(&probe.to_be_bytes());
                w.extend_from_slice(&target.to_be_bytes());
                put_updates(w, updates);
            }
            Payload::Nack { probe } => w.extend_from_slice(&probe.to_be_bytes()),
            Payload::Gossip { updates } => put_updates(w, updates),
            Payload::Route { full, entries } => {
                w.push(u8::from(*full));
                let n = entries.len().min(MAX_ROUTE_ENTRIES);
                w.push(n as u8);
                for e in &entries[..n] {
                    let (tag, b) = e.dest.encode();
                    w.push(tag);
                    w.extend_from_slice(&b);
                    w.extend_from_slice(&e.cost_us.to_be_bytes());
                    w.push(e.hops);
                }
            }
            Payload::Summary(s) => {
                let (tag, b) = s.scope.encode();
                w.push(tag);
                w.extend_from_slice(&b);
                w.extend_from_slice(&s.alive.to_be_bytes());
                w.extend_from_slice(&s.suspect.to_be_bytes());
                w.extend_from_slice(&s.dead.to_be_bytes());
                w.extend_from_slice(&s.version.to_be_bytes());
                w.extend_from_slice(&s.stamp.estimate_ns.to_be_bytes());
                w.extend_from_slice(&s.stamp.sigma_ps.to_be_bytes());
                w.push(s.stamp.source);
                w.push(s.stamp.stratum);
            }
            Payload::Kv(b)
            | Payload::Time(b)
            | Payload::Data(b)
            | Payload::Heat(b)
            | Payload::Store(b) => {
                let n = b.len().min(MAX_BLOB);
                w.extend_from_slice(&(n as u16).to_be_bytes());
                w.extend_from_slice(&b[..n]);
            }
            Payload::Watch { nonce, reply } => {
                w.extend_from_slice(&nonce.to_be_bytes());
                w.push(u8::from(*reply));
            }
            Payload::Accuse { node } => w.extend_from_slice(&node.to_be_bytes()),
            Payload::Boot => {}
            Payload::Signed { inner, sigs } => {
                let start = w.len();
                w.push(inner.kind());
                w.extend_from_slice(&[0, 0]);
                inner.encode(w);
                let n = (w.len() - start - 3) as u16;
                w[start + 1..start + 3].copy_from_slice(&n.to_be_bytes());
                w.push(sigs.len().min(MAX_UPDATES) as u8);
                for s in sigs.iter().take(MAX_UPDATES) {
                    w.extend_from_slice(s);
                }
            }
            Payload::TreeHeads(heads) => {
                let n = heads.len().min(MAX_TREE_HEADS);
                w.push(n as u8);
                for h in &heads[..n] {
                    w.extend_from_slice(&h.encode());
                }
            }
            Payload::Hello { min, max, reply } => {
                w.extend_from_slice(&[*min, *max, u8::from(*reply)]);
            }
            Payload::Bft(b) | Payload::Order(b) | Payload::Trust(b) => {
                let n = b.len().min(MAX_BLOB);
                w.extend_from_slice(&(n as u16).to_be_bytes());
                w.extend_from_slice(&b[..n]);
            }
            Payload::Attest {
                build,
                config,
                reply,
                sig,
            } => {
                w.extend_from_slice(build);
                w.extend_from_slice(config);
                w.push(u8::from(*reply));
                w.extend_from_slice(sig);
            }
        }
    }

    /// Decodes a payload of the given kind; the whole slice must be consumed.
    pub fn decode(kind: u8, b: &[u8]) -> Result<Payload, WireError> {
        let mut r = Reader { b, i: 0 };
        let p = match kind {
            1 => Payload::Ping {
                probe: r.u32()?,
                updates: r.updates()?,
            },
            2 => Payload::Ack {
                probe: r.u32()?,
                updates: r.updates()?,
            },
            3 => Payload::PingReq {
                probe: r.u32()?,
                target: r.u32()?,
                updates: r.updates()?,
            },
            4 => Payload::Nack { probe: r.u32()? },
            5 => Payload::Gossip {
                updates: r.updates()?,
            },
            6 => {
                let full = r.bool()?;
                let n = r.u8()? as usize;
                if n > MAX_ROUTE_ENTRIES {
                    return Err(WireError::Malformed);
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let tag = r.u8()?;
                    let dest = Dest::decode(tag, r.take(8)?).map_err(|_| WireError::Malformed)?;
                    entries.push(RouteEntry {
                        dest,
                        cost_us: r.u32()?,
                        hops: r.u8()?,
                    });
                }
                Payload::Route { full, entries }
            }
            7 => {
                let tag = r.u8()?;
                let scope = Dest::decode(tag, r.take(8)?).map_err(|_| WireError::Malformed)?;
                Payload::Summary(Summary {
                    scope,
                    alive: r.u32()?,
                    suspect: r.u32()?,
                    dead: r.u32()?,
                    version: r.u64()?,
                    stamp: WireStamp {
                        estimate_ns: r.u64()? as i64,
                        sigma_ps: r.u64()?,
                        source: match r.u8()? {
                            s @ 0..=STAMP_SOURCE_MAX => s,
                            _ => return Err(WireError::Malformed),
                        },
                        stratum: r.u8()?,
                    },
                })
            }
            8..=10 => {
                let n = r.u16()? as usize;
                if n > MAX_BLOB {
                    return Err(WireError::Malformed);
                }
                let v = r.take(n)?.to_vec();
                match kind {
                    8 => Payload::Kv(v),
                    9 => Payload::Time(v),
                    _ => Payload::Data(v),
                }
            }
            11 => Payload::Watch {
                nonce: r.u32()?,
                reply: r.bool()?,
            },
            12 => Payload::Accuse { node: r.u32()? },
            13 => Payload::Boot,
            KIND_SIGNED => {
                let kind = r.u8()?;
                if !matches!(kind, 1 | 2 | 3 | 5) {
                    return Err(WireError::Malformed);
                }
                let n = r.u16()? as usize;
                let inner = Payload::decode(kind, r.take(n)?)?;
                let k = r.u8()? as usize;
                let mut sigs = Vec::with_capacity(k.min(MAX_UPDATES));
                for _ in 0..k {
                    let mut s = [0u8; SIG_LEN];
                    s.copy_from_slice(r.take(SIG_LEN)?);
                    sigs.push(s);
                }
                let mut inner = inner;
                let claims = inner.updates_mut().map_or(0, |u| {
                    u.iter().filter(|u| u.state != MemberState::Alive).count()
                });
                if claims != sigs.len() {
                    return Err(WireError::Malformed);
                }
                Payload::Signed {
                    inner: Box::new(inner),
                    sigs,
                }
            }
            KIND_TREE_HEADS => {
                use crate::trust::log::TreeHead;
                let n = r.u8()? as usize;
                if n > MAX_TREE_HEADS {
                    return Err(WireError::Malformed);
                }
                let mut heads = Vec::with_capacity(n);
                for _ in 0..n {
                    let b = r.take(TreeHead::LEN)?;
                    heads.push(TreeHead::decode(b).map_err(|_| WireError::Malformed)?);
                }
                Payload::TreeHeads(heads)
            }
            KIND_HEAT => {
                let n = r.u16()? as usize;
                if n > MAX_BLOB {
                    return Err(WireError::Malformed);
                }
                Payload::Heat(r.take(n)?.to_vec())
            }
            KIND_HELLO => {
                let (min, max, reply) = (r.u8()?, r.u8()?, r.bool()?);
                if min > max {
                    return Err(WireError::Malformed);
                }
                Payload::Hello { min, max, reply }
            }
            KIND_BFT | KIND_ORDER | KIND_STORE | KIND_TRUST => {
                let n = r.u16()? as usize;
                if n > MAX_BLOB {
                    return Err(WireError::Malformed);
                }
                let blob = r.take(n)?.to_vec();
                match kind {
                    KIND_BFT => Payload::Bft(blob),
                    KIND_STORE => Payload::Store(blob),
                    KIND_TRUST => Payload::Trust(blob),
                    _ => Payload::Order(blob),
                }
            }
            KIND_ATTEST => {
                let mut build = [0u8; 32];
                build.copy_from_slice(r.take(32)?);
                let mut config = [0u8; 32];
                config.copy_from_slice(r.take(32)?);
                let reply = r.bool()?;
                let mut sig = [0u8; 64];
                sig.copy_from_slice(r.take(64)?);
                Payload::Attest {
                    build,
                    config,
                    reply,
                    sig,
                }
            }
            k => return Err(WireError::UnknownKind(k)),
        };
        if r.i != b.len() {
            return Err(WireError::Malformed);
        }
        Ok(p)
    }
}

fn put_updates(w: &mut Vec<u8>, updates: &[Update]) {
    let n = updates.len().min(MAX_UPDATES);
    w.push(n as u8);
    for u in &updates[..n] {
        w.extend_from_slice(&u.node.to_be_bytes());
        w.push(match u.state {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
        });
        w.extend_from_slice(&u.incarnation.to_be_bytes());
        w.extend_from_slice(&u.from.to_be_bytes());
    }
}

/// Encoded size of one update.
pub const UPDATE_LEN: usize = 17;

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.i.checked_add(n).ok_or(WireError::Malformed)?;
        let s = self.b.get(self.i..end).ok_or(WireError::Malformed)?;
        self.i = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed),
        }
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn updates(&mut self) -> Result<Vec<Update>, WireError> {
        let n = self.u8()? as usize;
        if n > MAX_UPDATES {
            return Err(WireError::Malformed);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let node = self.u32()?;
            let state = match self.u8()? {
                0 => MemberState::Alive,
                1 => MemberState::Suspect,
                2 => MemberState::Dead,
                _ => return Err(WireError::Malformed),
            };
            v.push(Update {
                node,
                state,
                incarnation: self.u64()?,
                from: self.u32()?,
            });
        }
        Ok(v)
    }
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub ttl: u8,
    pub src: u32,
    pub dst: Dest,
    pub seq: u64,
    pub hlc: u64,
    /// The sender's boot epoch.
    pub src_epoch: u32,
    /// The boot epoch of the receiver the frame is bound to (0 for scope destinations).
    pub dst_epoch: u32,
}

/// A structurally valid frame borrowed from a datagram; the signature is not yet checked.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub header: Header,
    /// The protocol version the origin sent it at (signed; in `VERSION_MIN..=VERSION_MAX`).
    pub version: u8,
    pub payload: &'a [u8],
    signed: &'a [u8],
    sig: &'a [u8],
}

/// How frames are authenticated.
///
/// `Ed25519` is the protocol, and the only mode the driver uses. `TestDigest` exists for
/// the debug-build harness, where unoptimised curve arithmetic costs milliseconds per
/// message: the "signature" is SHA-256(public key ‖ message), which detects corruption,
/// forgery by a party that uses another sender's id *without* its public key, and replays,
/// but authenticates nothing (public keys are public). Never use it outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    Ed25519,
    TestDigest,
    /// The digital twin's modelled signatures (`lightcone simulate` above its real-crypto
    /// size, or when asked): HMAC-SHA256 under a secret only the simulation's cores hold,
    /// over the sender's public key and the message. Honest frames verify exactly as with
    /// Ed25519; a frame not made by the claimed sender's core (forged, tampered, garbage)
    /// fails as a bad signature. It costs ~1 µs instead of Ed25519's ~20–50 µs, and the
    /// twin adds the measured Ed25519 cost of every op it stands for to its CPU tally.
    /// Never the default: only the twin sets it ([`Params::auth`](crate::params::Params)).
    Modelled([u8; 32]),
}

/// The modelled "signature": HMAC-SHA256(secret, public key ‖ message), zero-padded.
pub(crate) fn modelled_sig(secret: &[u8; 32], pk: &VerifyingKey, msg: &[u8]) -> [u8; SIG_LEN] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC takes a key of any length");
    mac.update(pk.as_bytes());
    mac.update(msg);
    let mut sig = [0u8; SIG_LEN];
    sig[..32].copy_from_slice(&mac.finalize().into_bytes());
    sig
}

pub(crate) fn digest_sig(pk: &VerifyingKey, msg: &[u8]) -> [u8; SIG_LEN] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(pk.as_bytes());
    h.update(msg);
    let mut sig = [0u8; SIG_LEN];
    sig[..32].copy_from_slice(&h.finalize());
    sig
}

/// Encodes and signs a frame with Ed25519.
pub fn encode(header: &Header, payload: &Payload, key: &SigningKey) -> Vec<u8> {
    encode_with(header, payload, key, Auth::Ed25519)
}

/// Encodes a frame and authenticates it as `auth` says.
pub fn encode_with(header: &Header, payload: &Payload, key: &SigningKey, auth: Auth) -> Vec<u8> {
    encode_versioned(header, payload, key, auth, VERSION)
}

/// [`encode_with`] at protocol version `version` (the node picks it per neighbour, see
/// [`crate::update`]); the layout is the same in every version this code speaks.
pub fn encode_versioned(
    header: &Header,
    payload: &Payload,
    key: &SigningKey,
    auth: Auth,
    version: u8,
) -> Vec<u8> {
    debug_assert!((VERSION_MIN..=VERSION_MAX).contains(&version));
    let mut w = Vec::with_capacity(128);
    w.extend_from_slice(&MAGIC);
    w.push(version);
    w.push(payload.kind());
    w.push(0); // TTL, zero while signing
    let (tag, dst) = header.dst.encode();
    w.push(tag);
    w.extend_from_slice(&[0, 0]); // length, patched below
    w.extend_from_slice(&header.src.to_be_bytes());
    w.extend_from_slice(&dst);
    w.extend_from_slice(&header.seq.to_be_bytes());
    w.extend_from_slice(&header.hlc.to_be_bytes());
    w.extend_from_slice(&header.src_epoch.to_be_bytes());
    w.extend_from_slice(&header.dst_epoch.to_be_bytes());
    payload.encode(&mut w);
    let len = w.len() - HEADER_LEN;
    debug_assert!(
        len <= MAX_PAYLOAD,
        "payload builders must respect MAX_PAYLOAD"
    );
    w[6..8].copy_from_slice(&(len as u16).to_be_bytes());
    let sig = match auth {
        Auth::Ed25519 => key.sign(&w).to_bytes(),
        Auth::TestDigest => digest_sig(&key.verifying_key(), &w),
        Auth::Modelled(secret) => modelled_sig(&secret, &key.verifying_key(), &w),
    };
    w.extend_from_slice(&sig);
    w[TTL_OFFSET] = header.ttl;
    w
}

/// Parses the structure of a datagram (no signature check, no payload decode).
pub fn parse(b: &[u8]) -> Result<Frame<'_>, WireError> {
    if b.len() > MAX_DATAGRAM {
        return Err(WireError::Oversize);
    }
    if b.len() < 3 {
        return Err(WireError::Truncated);
    }
    if b[0..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if !(VERSION_MIN..=VERSION_MAX).contains(&b[2]) {
        return Err(WireError::UnknownVersion(b[2]));
    }
    if b.len() < HEADER_LEN + SIG_LEN {
        return Err(WireError::Truncated);
    }
    let len = u16::from_be_bytes([b[6], b[7]]) as usize;
    if HEADER_LEN + len + SIG_LEN != b.len() {
        return Err(WireError::BadLength);
    }
    let kind = b[3];
    if !(1..=KIND_MAX).contains(&kind)
        && !(KIND_HELLO..=KIND_ORDER).contains(&kind)
        && kind != KIND_TRUST
        && kind != KIND_ATTEST
    {
        return Err(WireError::UnknownKind(kind));
    }
    let dst = Dest::decode(b[5], &b[12..20])?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[20..28]);
    let mut hlc = [0u8; 8];
    hlc.copy_from_slice(&b[28..36]);
    let header = Header {
        kind,
        ttl: b[TTL_OFFSET],
        src: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        dst,
        seq: u64::from_be_bytes(seq),
        hlc: u64::from_be_bytes(hlc),
        src_epoch: u32::from_be_bytes([b[36], b[37], b[38], b[39]]),
        dst_epoch: u32::from_be_bytes([b[40], b[41], b[42], b[43]]),
    };
    Ok(Frame {
        header,
        version: b[2],
        payload: &b[HEADER_LEN..HEADER_LEN + len],
        signed: &b[..HEADER_LEN + len],
        sig: &b[HEADER_LEN + len..],
    })
}

impl Frame<'_> {
    /// Checks the source's Ed25519 signature (TTL zeroed).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), WireError> {
        self.verify_with(key, Auth::Ed25519)
    }

    pub fn verify_with(&self, key: &VerifyingKey, auth: Auth) -> Result<(), WireError> {
        let mut msg = self.signed.to_vec();
        msg[TTL_OFFSET] = 0;
        if auth == Auth::TestDigest {
            return if digest_sig(key, &msg)[..] == *self.sig {
                Ok(())
            } else {
                Err(WireError::BadSignature)
            };
        }
        if let Auth::Modelled(secret) = auth {
            return if modelled_sig(&secret, key, &msg)[..] == *self.sig {
                Ok(())
            } else {
                Err(WireError::BadSignature)
            };
        }
        let sig = Signature::from_slice(self.sig).map_err(|_| WireError::BadSignature)?;
        key.verify(&msg, &sig).map_err(|_| WireError::BadSignature)
    }
    pub fn decode_payload(&self) -> Result<Payload, WireError> {
        Payload::decode(self.header.kind, self.payload)
    }
}

/// Rewrites the TTL of an encoded frame in place (forwarding).
pub fn set_ttl(b: &mut [u8], ttl: u8) {
    if b.len() > TTL_OFFSET {
        b[TTL_OFFSET] = ttl;
    }
}

/// Per-sender anti-replay window (RFC 4303 §3.4.3 style): the highest sequence seen and a
/// bitmap of the `WINDOW` sequences below it. Older or repeated sequences are rejected.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    highest: u64,
    /// The 128-bit window as two words (low, high): a `u128` field aligns the struct to
    /// 16 bytes (32 in all), and a tile keeps one window per peer it hears from, ~10^3 in
    /// a cell; as words it is 24.
    bits: [u64; 2],
}

impl ReplayWindow {
    pub const WINDOW: u64 = 128;

    /// Accepts `seq` once; returns false for a replay or a sequence too old to judge.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        let mut bits = (u128::from(self.bits[1]) << 64) | u128::from(self.bits[0]);
        let accepted = if seq > self.highest {
            let shift = seq - self.highest;
            bits = if shift >= Self::WINDOW {
                0
            } else {
                bits << shift
            };
            bits |= 1;
            self.highest = seq;
            true
        } else {
            let back = self.highest - seq;
            let mask = 1u128 << back.min(Self::WINDOW - 1);
            if back >= Self::WINDOW || bits & mask != 0 {
                false
            } else {
                bits |= mask;
                true
            }
        };
        self.bits = [bits as u64, (bits >> 64) as u64];
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    #[test]
    fn roundtrip_and_verify() {
        let k = key(1);
        let h = Header {
            kind: 0,
            ttl: 7,
            src: 3,
            dst: Dest::Node(9),
            seq: 42,
            hlc: 5,
            src_epoch: 3,
            dst_epoch: 7,
        };
        let p = Payload::Ping {
            probe: 11,
            updates: vec![Update {
                node: 2,
                state: MemberState::Suspect,
                incarnation: 4,
                from: 3,
            }],
        };
        let b = encode(&h, &p, &k);
        let f = parse(&b).unwrap();
        assert_eq!(
            f.header,
            Header {
                ttl: 7,
                kind: 1,
                ..h
            }
        );
        assert_eq!(f.header.ttl, 7);
        assert_eq!(f.header.kind, 1);
        assert_eq!(f.decode_payload().unwrap(), p);
        f.verify(&k.verifying_key()).unwrap();
        assert_eq!(
            f.verify(&key(2).verifying_key()),
            Err(WireError::BadSignature)
        );
        // TTL is mutable in transit and not covered by the signature.
        let mut b2 = b.clone();
        set_ttl(&mut b2, 1);
        parse(&b2).unwrap().verify(&k.verifying_key()).unwrap();
        // Any other bit flip breaks the signature.
        let mut b3 = b.clone();
        b3[21] ^= 1;
        assert_eq!(
            parse(&b3).unwrap().verify(&k.verifying_key()),
            Err(WireError::BadSignature)
        );
        // The boot epochs are signed: rebinding a frame to another boot breaks it.
        for at in [36, 43] {
            let mut b4 = b.clone();
            b4[at] ^= 1;
            assert_eq!(
                parse(&b4).unwrap().verify(&k.verifying_key()),
                Err(WireError::BadSignature)
            );
        }
        // The boot notice is an empty payload of kind 13.
        let n = encode(&h, &Payload::Boot, &k);
        assert_eq!(n.len(), HEADER_LEN + SIG_LEN);
        assert_eq!(parse(&n).unwrap().decode_payload().unwrap(), Payload::Boot);
    }

    #[test]
    fn workload_is_data_and_everything_else_class_a() {
        let h = Header {
            kind: 0,
            ttl: 7,
            src: 3,
            dst: Dest::Node(9),
            seq: 1,
            hlc: 1,
            src_epoch: 1,
            dst_epoch: 1,
        };
        let frame = |p: &Payload| encode(&h, p, &key(1));
        assert!(is_class_a(&frame(&Payload::Boot)));
        assert!(is_class_a(&frame(&Payload::Ping {
            probe: 1,
            updates: vec![]
        })));
        assert!(is_class_a(&frame(&Payload::Heat(vec![1, 2]))));
        assert!(!is_class_a(&frame(&Payload::Data(b"x".to_vec()))));
        assert!(!is_class_a(&frame(&Payload::Store(vec![0; 8]))));
        assert!(!is_class_a(b"garbage"));
        assert!(!is_class_a(&[]));
    }

    #[test]
    fn unknown_version_and_truncation() {
        let k = key(1);
        let h = Header {
            kind: 0,
            ttl: 1,
            src: 0,
            dst: Dest::Link,
            seq: 1,
            hlc: 0,
            src_epoch: 1,
            dst_epoch: 1,
        };
        let mut b = encode(&h, &Payload::Nack { probe: 1 }, &k);
        assert!(parse(&b[..b.len() - 1]).is_err());
        b[2] = 9;
        assert_eq!(parse(&b).unwrap_err(), WireError::UnknownVersion(9));
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10));
        assert!(!w.accept(10));
        assert!(w.accept(8));
        assert!(!w.accept(8));
        assert!(w.accept(300));
        assert!(!w.accept(10), "too old");
        assert!(w.accept(299));
        assert!(!w.accept(0));
    }
}
