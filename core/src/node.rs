//! The sans-IO node: one state machine composing every protocol of the agent (membership,
//! routing, the watch, the replicated store, the time layer). The call order is on the
//! crate root; the vocabulary it speaks lives in [`crate::io`], [`crate::time`] and
//! [`crate::view`].
//!
//! The node never reads a clock, a socket or OS randomness: time comes in as `now`,
//! randomness from a ChaCha8 generator seeded from the configuration, and every collection
//! iterates in order, so one seed and one input sequence always give one output sequence.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lightcone_timing::{CoordTimestamp, NodeClock, TimeMessage, TimeMetrics};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::addr::{HierAddr, Role};
use crate::byzantine::Byzantine;
use crate::causal::Dot;
use crate::clock::{clock_config_in, lab_sky, TimeLayer};
use crate::config::{AgentConfig, ConfigError};
use crate::counters::{Counters, Direction, Outcome};
use crate::directory::Directory;
use crate::io::{Command, CommandError, Effects, Event, Input, Outbox, Reply, Transmit};
use crate::kv::{Durability, Replica, Written};
use crate::membership::Membership;
use crate::params::Params;
use crate::routing::{Level, Locality, Routing};
use crate::time::{stamp_from_wire, stamp_to_wire, Instant, TimerKey, Timers};
use crate::view::{dest_name, RouteView, Snapshot, SummaryView, TimeView};
use crate::watch::Watch;
use crate::wire::{
    self, Dest, Header, MemberState, Payload, ReplayWindow, Summary, Update, WireError, WireStamp,
};

/// Farthest a frame's HLC is adopted ahead of our own physical time: one emulated day.
const MAX_HLC_AHEAD_NS: u64 = 86_400_000_000_000;

/// Most `cell` puts awaiting acks at once; more are refused.
pub const MAX_PENDING_PUTS: usize = 1024;

/// A `cell` put awaiting acks.
#[derive(Debug, Clone)]
struct PendingPut {
    request: u64,
    key: String,
    written: Written,
    /// The broadcast, for retransmission to members whose ack is missing.
    bytes: Vec<u8>,
    /// Nodes known to hold the write (this node first).
    holders: Vec<u32>,
    needed: usize,
    deadline: Instant,
    retry_at: Instant,
}

/// The node.
#[derive(Debug, Clone)]
pub struct Node {
    id: u32,
    addr: HierAddr,
    role: Role,
    dir: Arc<Directory>,
    key: SigningKey,
    rng: ChaCha8Rng,
    params: Params,
    seq: u64,
    hlc: u64,
    timers: Timers,
    membership: Membership,
    routing: Routing,
    replay: BTreeMap<u32, ReplayWindow>,
    /// This boot's epoch (see the `wire` module: frames are bound to it).
    boot_epoch: u32,
    /// The latest boot epoch heard from each peer ([`wire::FIRST_EPOCH`] until then).
    peer_epochs: BTreeMap<u32, u32>,
    /// When we last told a peer our boot epoch after rejecting its stale frame.
    boot_notices: BTreeMap<u32, Instant>,
    /// When we last sent a peer our membership view to catch up on (`sync_membership`).
    synced: BTreeMap<u32, Instant>,
    counters: Counters,
    summaries: BTreeMap<Dest, (u32, Summary, Instant)>,
    stopped: bool,
    now: Instant,
    fx: Effects,
    pending: VecDeque<Transmit>,
    kv: Replica,
    /// `cell` puts awaiting acks, by the write's dot.
    puts: BTreeMap<Dot, PendingPut>,
    time: Option<TimeLayer>,
    watch: Watch,
    byzantine: Byzantine,
    lie_cursor: usize,
    /// The thermal subsystem (issue 15); `None`: off, and the node behaves as before it.
    heat: Option<crate::heat::machine::Heat>,
    /// The object store (issue 16); `None`: off, and the node behaves as before it.
    store: Option<crate::store::tile::StoreTile>,
    /// Our membership incarnation and since when (for the watch's lie check).
    incarnation_since: (u64, Instant),
    /// Neighbours already hinted to membership as quiet (cleared when heard again).
    quiet_hinted: BTreeSet<u32>,
    /// Signatures of claims we verified, to relay them (watch `signed_claims`).
    claim_sigs: crate::claims::ClaimSigs,
    /// Our transparency log and the heads our cell gossips (watch `log_heads`).
    cell_log: crate::trust::CellLog,
    /// Certified and revoked keys under the authorities' threshold key, once set.
    trust: Option<crate::trust::threshold::TrustStore>,
    /// Small-group BFT among the cell's members (issue 17); `None`: off.
    bft: Option<Box<crate::trust::bft::Replica>>,
    /// Keys whose revocation our BFT group decided (refused like threshold revocations).
    bft_revoked: BTreeMap<[u8; 32], u32>,
    /// Decided BFT entries already applied.
    bft_applied: usize,
    /// Quarantine verdicts decided by the BFT group (watch `bft_verdicts`).
    verdicts: Option<Box<crate::trust::verdicts::Verdicts>>,
    /// The cell's agreed heat lease table (trust option `bft_leases`).
    leases: Option<Box<crate::heat::grants::LeaseTable>>,
    /// The build this node runs and its neighbours' protocol versions (issue 18).
    update: crate::update::Versions,
    /// Our measured build and our neighbours' attestations (issue 18's tile runtime).
    attest: crate::update::attest::Attestation,
    /// A key we were given to impersonate its node with (the `steal_key` test fault).
    stolen: Option<Box<Stolen>>,
    /// Peers whose key a newer certificate replaced (issue 17's key rotation), by node.
    rotated: BTreeMap<u32, Rotated>,
    /// Our own rotation: the certified new key and when we start signing with it.
    key_switch: Option<Box<(SigningKey, Instant)>>,
}

/// How long after a key rotation's certificate is applied at the rotating node it starts
/// signing with the new key: the certificate's flood runs ahead of its new frames (a flood
/// takes the fastest path to every node, a frame a route no faster), so receivers know
/// the new key before they see it.
pub const KEY_SWITCH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a receiver still takes a rotated peer's previous key after it applied the
/// new certificate: frames signed before the switch ([`KEY_SWITCH_AFTER`]) and still in
/// flight, on a path up to 4 s slower than the certificate's flood. Never a revoked key.
pub const ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The key `n` signs with: its rotated one, else the directory's (what
/// [`Node::peer_key`] gives, for borrows that must not take all of the node).
fn key_of(
    rotated: &BTreeMap<u32, Rotated>,
    dir: &Directory,
    n: u32,
) -> Option<ed25519_dalek::VerifyingKey> {
    match rotated.get(&n) {
        Some(r) => Some(r.key),
        None => dir.get(n).map(|e| e.key),
    }
}

/// A peer's rotated key: the certified one, its serial, and the previous key with the end
/// of its grace.
#[derive(Debug, Clone)]
struct Rotated {
    key: ed25519_dalek::VerifyingKey,
    serial: u64,
    previous: ed25519_dalek::VerifyingKey,
    grace_until: Instant,
    /// The previous key's replay window, split off at the new key's first frame.
    old_window: Option<ReplayWindow>,
}

/// The `steal_key` test fault's state: whose key, the key, the last sequence number used.
#[derive(Debug, Clone)]
struct Stolen {
    node: u32,
    key: ed25519_dalek::SigningKey,
    seq: u64,
}

impl Node {
    /// Entries held per structure: what a tile's memory grows with (the twin prints the
    /// sums over all tiles). Counts, not bytes.
    pub fn footprint(&self) -> Vec<(&'static str, usize)> {
        let mut out = vec![
            ("node.replay", self.replay.len()),
            ("node.peer_epochs", self.peer_epochs.len()),
            ("node.boot_notices", self.boot_notices.len()),
            ("node.synced", self.synced.len()),
            ("node.summaries", self.summaries.len()),
            ("node.puts", self.puts.len()),
            ("node.quiet_hinted", self.quiet_hinted.len()),
            ("node.attest", self.attest.len()),
            ("node.pending", self.pending.len()),
            ("claims.sigs", self.claim_sigs.len()),
            ("cell_log.len", self.cell_log.log.len() as usize),
            ("bft_revoked", self.bft_revoked.len()),
            (
                "verdicts",
                self.verdicts.as_ref().map_or(0, |v| v.footprint()),
            ),
            ("lease_grants", self.leases.as_ref().map_or(0, |t| t.len())),
        ];
        self.timers.footprint(&mut out);
        self.membership.footprint(&mut out);
        self.routing.footprint(&mut out);
        self.cell_log.witness.footprint(&mut out);
        self.watch.footprint(&mut out);
        self.update.footprint(&mut out);
        out
    }
    /// Builds a node from the orchestrator's configuration, with default parameters.
    pub fn new(cfg: &AgentConfig, now: Instant) -> Result<Node, ConfigError> {
        Node::new_in(cfg, Arc::new(Directory::from_peers(&cfg.peers)?), now)
    }

    /// [`Node::new`] with a directory shared read-only with other nodes of the same
    /// process (a multi-tile agent builds one for all its tiles); `cfg.peers` is not read.
    pub fn new_in(
        cfg: &AgentConfig,
        dir: Arc<Directory>,
        now: Instant,
    ) -> Result<Node, ConfigError> {
        let secret: [u8; 32] = hex::decode(&cfg.secret_key_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(ConfigError::BadSecretKey)?;
        let time = match (clock_config_in(cfg, &dir)?, &cfg.time) {
            (Some(c), Some(t)) => {
                let mut clock = NodeClock::new(c, now.as_nanos())?;
                // Across hosts, ground truth is each host's placement of the lab's epoch.
                clock.set_truth_uncertainty(cfg.epoch_uncertainty_ns as f64 * cfg.time_scale / 1e9);
                Some(TimeLayer::new(clock, Arc::new(lab_sky(t.sky_seed))))
            }
            _ => None,
        };
        let links: Vec<(u32, u64)> = cfg
            .neighbors
            .iter()
            .map(|n| (n.id, n.delay_emulated_ns))
            .collect();
        let mut params = Params::default();
        if let Some(t) = &cfg.trust {
            params.watch.with_trust(t);
        }
        // Acks cross the host's scheduler, whose latency is real time: give them at least
        // 2 s (retries every 250 ms) of it at any time scale.
        if cfg.time_scale.is_finite() && cfg.time_scale > 1.0 {
            params.kv_ack_timeout = params.kv_ack_timeout.mul_f64(cfg.time_scale.min(1e6));
            params.kv_ack_retry = params.kv_ack_retry.mul_f64(cfg.time_scale.min(1e6));
        }
        let mut node = if cfg.certificates.is_empty() {
            Node::with_directory(cfg.id, cfg.seed, secret, &links, dir.clone(), params, now)?
        } else {
            // Rotated keys (issue 17): every certificate must verify under the authorities'
            // key; our secret may be the one our newest certificate names.
            let group = cfg
                .authorities_key_hex
                .as_deref()
                .and_then(|h| hex::decode(h.trim()).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                .ok_or(ConfigError::BadAuthoritiesKey)?;
            let mut store = crate::trust::threshold::TrustStore::new(group);
            for (entry, e) in cfg.certificate_entries()?.iter().enumerate() {
                store.apply(e).map_err(|e| ConfigError::BadCertificate {
                    entry,
                    why: e.to_string(),
                })?;
            }
            Node::with_certified_key(
                cfg.id,
                cfg.seed,
                secret,
                &links,
                dir.clone(),
                params,
                now,
                store,
            )?
        };
        if let Some(t) = &cfg.thermal {
            node.heat = Some(crate::heat::machine::Heat::new(t, cfg.id, &dir, now)?);
            node.sync_heat_modes();
        }
        if let Some(v) = cfg.protocol_version {
            node.set_build(crate::update::Build::new(v)?);
        }
        if let Some(s) = &cfg.store {
            node = node.with_store(s, now)?;
        }
        Ok(match time {
            Some(t) => node.with_time(t),
            None => node,
        })
    }

    /// Gives the node a time layer (call before [`Node::start`]).
    pub fn with_time(mut self, time: TimeLayer) -> Node {
        self.time = Some(time);
        self
    }

    /// Builds a node from parts (the harness shares one directory among all nodes).
    /// `links` are (neighbour id, one-way delay in emulated ns).
    pub fn with_directory(
        id: u32,
        seed: u64,
        secret: [u8; 32],
        links: &[(u32, u64)],
        dir: Arc<Directory>,
        params: Params,
        now: Instant,
    ) -> Result<Node, ConfigError> {
        let me = dir.get(id).ok_or(ConfigError::UnknownSelf(id))?.clone();
        let key = SigningKey::from_bytes(&secret);
        if key.verifying_key() != me.key {
            return Err(ConfigError::KeyMismatch);
        }
        Node::from_parts(id, seed, key, links, dir, params, now, None)
    }

    /// [`Node::with_directory`] for a node whose keys may have been rotated (issue 17):
    /// `trust` holds the authorities' certificates (already checked), and `secret` may be
    /// the key our newest certificate names instead of the directory's. Every certificate
    /// naming another key than the directory's is taken as a rotation (no grace: old news).
    #[allow(clippy::too_many_arguments)]
    pub fn with_certified_key(
        id: u32,
        seed: u64,
        secret: [u8; 32],
        links: &[(u32, u64)],
        dir: Arc<Directory>,
        params: Params,
        now: Instant,
        trust: crate::trust::threshold::TrustStore,
    ) -> Result<Node, ConfigError> {
        let key = SigningKey::from_bytes(&secret);
        let vk = key.verifying_key();
        let mine = dir.get(id).ok_or(ConfigError::UnknownSelf(id))?.key;
        let certified = trust
            .certificate(id)
            .is_some_and(|c| c.key == vk.to_bytes());
        if vk != mine && !certified {
            return Err(ConfigError::KeyMismatch);
        }
        Node::from_parts(id, seed, key, links, dir, params, now, Some(trust))
    }

    /// [`Node::with_directory`] without the key check: the caller checked `key` (the
    /// directory's, or one a verified certificate names).
    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        id: u32,
        seed: u64,
        key: SigningKey,
        links: &[(u32, u64)],
        dir: Arc<Directory>,
        params: Params,
        now: Instant,
        trust: Option<crate::trust::threshold::TrustStore>,
    ) -> Result<Node, ConfigError> {
        let me = dir.get(id).ok_or(ConfigError::UnknownSelf(id))?.clone();
        let cell = dir.ids_where(|a| a.same_cell(&me.addr));
        // Sequence numbers start at `now` so a restarted node is newer than anything it
        // sent before (the driver raises the floor to wall-clock ns). The incarnation
        // starts at 0 like every member's: nothing to announce at lab start, and a node
        // restarted after being declared dead learns it from the first ack (buddy
        // piggyback) and refutes with a higher incarnation.
        let floor = now.as_nanos().max(1);
        let membership = Membership::new(id, 0, &cell, params.swim.clone());
        let routing = Routing::new(id, dir.clone(), links, params.route.clone());
        let bft_verdicts = params.watch.bft_verdicts || params.watch.bft_leases;
        let mut node = Node {
            id,
            addr: me.addr,
            role: me.role,
            dir,
            key,
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: params.clone(),
            seq: floor,
            hlc: 0,
            timers: Timers::default(),
            membership,
            routing,
            replay: BTreeMap::new(),
            boot_epoch: wire::FIRST_EPOCH,
            peer_epochs: BTreeMap::new(),
            boot_notices: BTreeMap::new(),
            synced: BTreeMap::new(),
            counters: Counters::default(),
            summaries: BTreeMap::new(),
            stopped: false,
            now,
            fx: Effects::default(),
            pending: VecDeque::new(),
            kv: Replica::new(id, 0),
            puts: BTreeMap::new(),
            time: None,
            watch: Watch::new(id, params.watch.clone()),
            byzantine: Byzantine::default(),
            lie_cursor: 0,
            heat: None,
            store: None,
            incarnation_since: (0, now),
            quiet_hinted: BTreeSet::new(),
            claim_sigs: Default::default(),
            cell_log: Default::default(),
            trust: None,
            bft: None,
            bft_revoked: BTreeMap::new(),
            bft_applied: 0,
            verdicts: None,
            leases: None,
            update: Default::default(),
            attest: Default::default(),
            stolen: None,
            rotated: BTreeMap::new(),
            key_switch: None,
        };
        if trust.is_some() {
            node.trust = trust;
            node.learn_rotations(now, false);
        }
        if bft_verdicts {
            node.enable_bft(crate::trust::bft::BftParams::default())?;
        }
        Ok(node)
    }

    /// This node's public identity key.
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Trusts the authorities' threshold key `group`: from now on revocations signed by it
    /// can be applied ([`Node::apply_trust_entry`]). Sends nothing.
    pub fn set_trust(&mut self, group: ed25519_dalek::VerifyingKey) {
        // A store already under this key (certificates from the configuration) is kept.
        if self.trust.as_ref().is_none_or(|t| t.group() != &group) {
            self.trust = Some(crate::trust::threshold::TrustStore::new(group));
        }
        self.update.dark.set_key(group);
    }

    /// Records the authorities' certificate of the directory (`sig`, checked by the caller
    /// under their key, see [`Directory::check_certificate`]) in our transparency log: the
    /// first entry of every node's log when the lab certifies its directory (issue 17).
    pub fn log_directory_certificate(&mut self, sig: &[u8; 64]) {
        let msg = self.dir.certified_message();
        let mut body = <sha2::Sha256 as sha2::Digest>::digest(&msg).to_vec();
        body.extend_from_slice(sig);
        self.cell_log.record(&crate::trust::log::Entry {
            kind: crate::trust::log::EntryKind::DirectoryCertificate,
            subject: 0,
            body,
        });
    }

    /// The nodes whose key a newer certificate replaced here, in order.
    pub fn rotated_nodes(&self) -> Vec<u32> {
        self.rotated.keys().copied().collect()
    }

    /// The key `id` signs with now: its newest certificate's, else the directory's.
    pub fn peer_key(&self, id: u32) -> Option<ed25519_dalek::VerifyingKey> {
        key_of(&self.rotated, &self.dir, id)
    }

    /// Takes every certificate in the trust store whose key differs from the one we use
    /// for its node as a rotation (grace from `now` when `grace`, else none: certificates
    /// from a configuration are old news). Returns the nodes rotated.
    fn learn_rotations(&mut self, now: Instant, grace: bool) -> Vec<u32> {
        let Some(t) = self.trust.as_ref() else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (subject, c) in t.certificates() {
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&c.key) else {
                continue;
            };
            let Some(current) = self.peer_key(*subject) else {
                continue;
            };
            let older = self
                .rotated
                .get(subject)
                .is_some_and(|r| r.serial >= c.serial);
            if current == key || older {
                continue;
            }
            changed.push((*subject, key, c.serial, current));
        }
        let until = if grace { now + ROTATION_GRACE } else { now };
        let mut out = Vec::new();
        for (subject, key, serial, previous) in changed {
            self.rotated.insert(
                subject,
                Rotated {
                    key,
                    serial,
                    previous,
                    grace_until: until,
                    old_window: None,
                },
            );
            if let Some(b) = self.bft.as_mut() {
                b.rekey(subject, key);
                if !grace {
                    b.retire(subject);
                }
            }
            out.push(subject);
        }
        if grace && !out.is_empty() {
            self.arm_key_switch();
        }
        out
    }

    /// Arms [`TimerKey::KeySwitch`] at the earliest pending switch or grace end.
    fn arm_key_switch(&mut self) {
        let now = self.now;
        let next = self
            .rotated
            .values()
            .map(|r| r.grace_until)
            .filter(|t| *t > now)
            .chain(self.key_switch.as_ref().map(|k| k.1))
            .min();
        match next {
            Some(at) => self.timers.set(TimerKey::KeySwitch, at),
            None => self.timers.cancel(TimerKey::KeySwitch),
        }
    }

    /// [`TimerKey::KeySwitch`]: our own switch to a rotated key, and the end of rotated
    /// peers' grace (their BFT votes under the previous key stop counting too).
    fn on_key_switch(&mut self, now: Instant) {
        if self.key_switch.as_ref().is_some_and(|k| k.1 <= now) {
            if let Some(k) = self.key_switch.take() {
                let (key, _) = *k;
                if let Some(b) = self.bft.as_mut() {
                    b.set_signing_key(key.clone());
                }
                self.key = key;
                self.fx.events.push(Event::KeyRotated {
                    node: self.id,
                    serial: self.rotated.get(&self.id).map_or(0, |r| r.serial),
                });
            }
        }
        let over: Vec<u32> = self
            .rotated
            .iter()
            .filter(|(_, r)| r.grace_until <= now)
            .map(|(n, _)| *n)
            .collect();
        if let Some(b) = self.bft.as_mut() {
            for n in over {
                b.retire(n);
            }
        }
        self.arm_key_switch();
    }

    /// `Command::RotateKey`: checks the certificate names us and `secret`'s key, applies
    /// and floods it, and switches keys [`KEY_SWITCH_AFTER`] later.
    fn rotate_key(
        &mut self,
        now: Instant,
        secret: &SigningKey,
        certificate: &[u8],
    ) -> Result<(), CommandError> {
        let bad = |why: String| Err(CommandError::Rotation(why));
        let e = match crate::trust::log::Entry::decode(certificate) {
            Ok(e) => e,
            Err(e) => return bad(format!("malformed entry: {e}")),
        };
        if e.kind != crate::trust::log::EntryKind::Certificate || e.subject != self.id {
            return bad(format!(
                "a {:?} entry about node {}, not a certificate of this node ({})",
                e.kind, e.subject, self.id
            ));
        }
        let vk = secret.verifying_key();
        if e.body.get(..32) != Some(&vk.to_bytes()[..]) {
            return bad("the certificate names another key than the secret given".into());
        }
        if vk == self.key.verifying_key() {
            return bad("the new key is the key this node signs with now".into());
        }
        let Some(t) = self.trust.as_ref() else {
            return bad("this node trusts no authorities (no authorities_key_hex)".into());
        };
        // Checked on a copy first: a refused certificate changes nothing.
        let mut probe = t.clone();
        match probe.apply(&e) {
            Ok(true) => {}
            Ok(false) => return bad("not newer than the certificate this node holds".into()),
            Err(err) => return bad(err.to_string()),
        }
        self.on_trust_entry(certificate, None)?;
        self.key_switch = Some(Box::new((secret.clone(), now + KEY_SWITCH_AFTER)));
        self.arm_key_switch();
        Ok(())
    }

    /// Applies a threshold-signed certificate or revocation entry (checked first; a bad
    /// entry is an error and changes nothing). A revoked key's frames are refused from the
    /// next datagram on, at the destination and in transit (counted `key_revoked`).
    pub fn apply_trust_entry(
        &mut self,
        e: &crate::trust::log::Entry,
    ) -> Result<bool, crate::trust::threshold::ThresholdError> {
        let new = match self.trust.as_mut() {
            Some(t) => t.apply(e)?,
            None => return Err(crate::trust::threshold::ThresholdError::BadSignature),
        };
        if new {
            // Every threshold-signed entry goes into our transparency log (issue 17):
            // certificates, revocations and approvals beside the quarantine verdicts.
            self.cell_log.record(e);
        }
        if new && e.kind == crate::trust::log::EntryKind::Certificate {
            let now = self.now;
            for n in self.learn_rotations(now, true) {
                self.counters.count(Direction::Watch, Outcome::KeyRotated);
                if n != self.id {
                    self.fx.events.push(Event::KeyRotated {
                        node: n,
                        serial: self.rotated.get(&n).map_or(0, |r| r.serial),
                    });
                }
            }
        }
        if new && e.kind == crate::trust::log::EntryKind::BuildApproval {
            // Neighbours that attested this build are admitted now.
            let Some(t) = self.trust.as_ref() else {
                return Ok(new);
            };
            let now = self.now;
            for n in self.attest.recheck(|h| t.is_approved(h)) {
                self.counters
                    .count(Direction::Watch, Outcome::AttestAdmitted);
                self.routing.admit(n, now);
            }
        }
        Ok(new)
    }

    /// Sets what this node runs, measured at start (issue 18's attestation,
    /// [`crate::update::attest`]): signed at [`Node::start`] and shown to every neighbour.
    /// Call before [`Node::start`].
    pub fn set_measurement(&mut self, m: crate::update::attest::Measurement) {
        self.attest.set_measurement(m);
    }

    /// Requires attestation from neighbours: from now on one is taken into routing only
    /// with a build approved by `approvals` (threshold-signed `BuildApproval` entries,
    /// checked under the authorities' key: call [`Node::set_trust`] first) or by one that
    /// arrives later as a trust entry. A bad entry is an error, and nothing is changed.
    /// Call before [`Node::start`].
    pub fn require_attestation(
        &mut self,
        approvals: &[crate::trust::log::Entry],
    ) -> Result<(), crate::trust::threshold::ThresholdError> {
        let Some(t) = self.trust.as_ref() else {
            return Err(crate::trust::threshold::ThresholdError::BadSignature);
        };
        let mut t = t.clone();
        for e in approvals {
            if e.kind != crate::trust::log::EntryKind::BuildApproval {
                return Err(crate::trust::threshold::ThresholdError::WrongKind);
            }
            t.apply(e)?;
        }
        self.trust = Some(t);
        self.attest.require();
        self.routing.set_gated();
        Ok(())
    }

    /// Our attestation and what we know of our neighbours' (`/state`'s `attest`).
    pub fn attestation(&self) -> crate::update::attest::AttestView {
        self.attest.view()
    }

    /// A trust entry from the operator (`from` None) or neighbour `from`: checked against
    /// the authorities' threshold key and applied; when it is new here, relayed over every
    /// link but the one it came on (a flood that ends: a node relays an entry once).
    fn on_trust_entry(&mut self, bytes: &[u8], from: Option<u32>) -> Result<(), CommandError> {
        let refused = |s: &mut Self, why: String| {
            s.counters.count(Direction::Watch, Outcome::TrustRefused);
            Err(CommandError::Trust(why))
        };
        let e = match crate::trust::log::Entry::decode(bytes) {
            Ok(e) => e,
            Err(e) => return refused(self, format!("malformed entry: {e}")),
        };
        let new = match self.apply_trust_entry(&e) {
            Ok(new) => new,
            Err(err) => return refused(self, err.to_string()),
        };
        if !new {
            self.counters
                .count(Direction::Watch, Outcome::TrustDuplicate);
            return Ok(());
        }
        self.counters.count(Direction::Watch, Outcome::TrustApplied);
        if e.kind == crate::trust::log::EntryKind::Revocation {
            self.fx
                .events
                .push(Event::KeyRevokedByAuthorities { node: e.subject });
        }
        // Approvals flood like revocations: every tile must know every approved build.
        let links: Vec<u32> = self
            .routing
            .neighbors()
            .filter(|n| Some(*n) != from)
            .collect();
        for n in links {
            self.fx.send_link(n, Payload::Trust(bytes.to_vec()));
        }
        Ok(())
    }

    /// Runs `build` (issue 18: its protocol version and any deliberate defect). Call
    /// before [`Node::start`]; the default build is version [`wire::VERSION`], sound.
    pub fn set_build(&mut self, build: crate::update::Build) {
        let seed = rand::RngCore::next_u64(&mut self.rng.clone());
        self.update.set_build(build, seed);
    }

    /// The build this node runs (its protocol version and any deliberate defect).
    pub fn build(&self) -> crate::update::Build {
        self.update.build()
    }

    /// Refuses runtime orders with a serial at or below `serial` (see
    /// [`crate::update::dark::Darkness::set_floor`]). Sends nothing.
    pub fn set_order_floor(&mut self, serial: u64) {
        self.update.dark.set_floor(serial);
    }

    /// The kill switch's state: dark since when, orders refused, frames kept in.
    pub fn darkness(&self) -> &crate::update::dark::Darkness {
        &self.update.dark
    }

    /// The build this node runs, its neighbours' versions and its per-version counts.
    pub fn versions(&self) -> &crate::update::Versions {
        &self.update
    }

    /// Sets this boot's epoch for the replicated store (see [`Replica`]): every boot of a node
    /// must use a different one. Call before [`Node::start`]; the replica is still empty.
    pub fn set_boot_epoch(&mut self, epoch: u32) {
        self.kv = Replica::new(self.id, epoch);
    }

    /// Sets this boot's wire epoch: [`wire::FIRST_EPOCH`] for a node's first boot, one more
    /// for each restart (the supervisor counts them). Frames bound to another boot of this
    /// node — captured before a restart — are rejected as stale. Call before
    /// [`Node::start`]; 0 is taken as the first epoch.
    pub fn set_wire_epoch(&mut self, epoch: u32) {
        self.boot_epoch = epoch.max(wire::FIRST_EPOCH);
    }

    /// This boot's wire epoch.
    pub fn wire_epoch(&self) -> u32 {
        self.boot_epoch
    }

    /// Raises the sequence-number floor (the driver passes wall-clock ns so a restarted
    /// agent is never mistaken for a replay). Call before [`Node::start`].
    pub fn raise_sequence_floor(&mut self, floor: u64) {
        self.seq = self.seq.max(floor);
    }

    /// Schedules the first timers and greets the neighbours.
    pub fn start(&mut self, now: Instant, out: &mut Outbox) {
        self.now = now;
        self.timers.begin_call(now);
        if self.boot_epoch == wire::FIRST_EPOCH {
            self.kv.first_boot();
        }
        self.membership.start(now, &mut self.rng, &mut self.timers);
        self.timers.set(TimerKey::RouteHello, now);
        let r = self.params.route.refresh_interval;
        self.timers.set(TimerKey::RouteRefresh, now + r);
        self.timers
            .set(TimerKey::Summary, now + self.params.summary_interval);
        let rep = self.params.kv_repair_interval;
        self.timers.set(TimerKey::KvRepair, now + rep + rep / 2);
        // A booting node asks every neighbour for its table: an empty *full* advert, which
        // no table ever is (a full advert always carries the sender's own entry).
        let neighbours: Vec<u32> = self.routing.neighbors().collect();
        self.attest
            .sign(&self.key, self.params.auth, self.id, self.boot_epoch);
        if let Some(p) = self.attest.payload(false) {
            self.counters.auth_ops[0] += 1;
            for &n in &neighbours {
                self.attest.sent(n, now);
                self.fx.send_link(n, p.clone());
            }
        }
        for n in neighbours {
            self.fx.send_link(
                n,
                Payload::Route {
                    full: true,
                    entries: Vec::new(),
                },
            );
        }
        let first = now + self.params.swim.startup_grace + self.params.watch.audit_fast;
        self.timers.set(TimerKey::Watch, first);
        self.arm_clock();
        if let Some(h) = &self.heat {
            self.timers.set(TimerKey::Heat, now + h.interval());
        }
        if let Some(s) = &self.store {
            self.timers.set(TimerKey::Store, now + s.interval());
        }
        self.flush(now, out);
    }

    // ---- the object store (issue 16; `crate::store::tile` holds the rest) ----

    /// Gives the node the object store (call before [`Node::start`]); on an error the
    /// node is unchanged.
    pub fn with_store(
        mut self,
        cfg: &crate::store::config::StoreConfig,
        now: Instant,
    ) -> Result<Node, ConfigError> {
        let me = crate::store::tile::tile_of(self.id, &self.addr);
        let seed = self.params_seed();
        self.store = Some(crate::store::tile::StoreTile::new(cfg, me, seed, now)?);
        Ok(self)
    }

    /// The object store, when on.
    pub fn store(&self) -> Option<&crate::store::tile::StoreTile> {
        self.store.as_ref()
    }

    /// The placement seed: the same on every node of a lab (placement and steward
    /// election must agree), so derived from the directory, not the node's own seed.
    fn params_seed(&self) -> u64 {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        for e in &self.dir.peers {
            sha2::Digest::update(&mut h, e.key.as_bytes());
        }
        let d: [u8; 32] = sha2::Digest::finalize(h).into();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }

    /// Tells the store who is alive: cell-mates from membership, other cells by route.
    fn store_observe(&mut self, now: Instant, fx: &mut crate::store::tile::Effects) {
        let Some(st) = self.store.as_mut() else {
            return;
        };
        let (me, my, m, r) = (self.id, self.addr, &self.membership, &self.routing);
        let alive = |id: u32, a: &crate::addr::HierAddr| {
            if id == me {
                true
            } else if a.same_cell(&my) {
                matches!(
                    m.state_of(id),
                    Some(MemberState::Alive | MemberState::Suspect)
                )
            } else {
                r.next_hop(Dest::Node(id)).is_some()
            }
        };
        let epochs = &self.peer_epochs;
        let epoch = |id: u32| epochs.get(&id).copied().unwrap_or(wire::FIRST_EPOCH);
        st.observe(now, &self.dir, alive, epoch, fx);
    }

    /// The store's round (timer [`TimerKey::Store`]).
    fn on_store_tick(&mut self, now: Instant) {
        let mut fx = crate::store::tile::Effects::default();
        self.store_observe(now, &mut fx);
        let kv = &self.kv;
        let Some(st) = self.store.as_mut() else {
            return;
        };
        st.learn_from_kv(kv.store().keys(), |k| kv.get(k));
        st.tick(now, &mut fx);
        let next = now + st.interval();
        self.timers.set(TimerKey::Store, next);
        self.store_effects(now, fx);
    }

    /// A store frame from `src` (its overlay frame verified).
    fn on_store_msg(&mut self, now: Instant, src: u32, bytes: &[u8]) {
        let mut fx = crate::store::tile::Effects::default();
        self.store_observe(now, &mut fx);
        let Some(st) = self.store.as_mut() else {
            return;
        };
        st.on_frame(now, src, bytes, &mut fx);
        self.store_effects(now, fx);
    }

    /// A client's `object put` / `object get`.
    fn on_store_command(&mut self, now: Instant, c: &Command) -> Result<Reply, CommandError> {
        let mut fx = crate::store::tile::Effects::default();
        self.store_observe(now, &mut fx);
        let st = self.store.as_mut().ok_or(CommandError::NoStore)?;
        let request = match c {
            Command::ObjectPut {
                request,
                object,
                data,
            } => st
                .put(now, *request, object, data, &mut fx)
                .map(|()| *request),
            Command::ObjectGet { request, object } => {
                st.get(now, *request, object, &mut fx).map(|()| *request)
            }
            _ => return Ok(Reply::Done),
        };
        self.store_effects(now, fx);
        let request = request.map_err(|e| CommandError::Store(e.to_string()))?;
        Ok(Reply::Pending { request })
    }

    fn store_effects(&mut self, now: Instant, fx: crate::store::tile::Effects) {
        for (to, b) in fx.sends {
            self.fx.send(Dest::Node(to), Payload::Store(b));
        }
        for (key, value) in fx.kv_writes {
            // Local: the kv's anti-entropy spreads it over the cell; a refusal (a full
            // replica) leaves the metadata in the shard frames only.
            let _ = self.put(now, 0, &key, &value, Durability::Local);
        }
        self.fx.events.extend(fx.events);
    }

    /// Gives the node the thermal subsystem (call before [`Node::start`]); the error names
    /// the parameter that cannot be used, and the node is unchanged then.
    pub fn with_heat(
        mut self,
        cfg: &crate::heat::config::ThermalConfig,
        now: Instant,
    ) -> Result<Node, ConfigError> {
        self.heat = Some(crate::heat::machine::Heat::new(
            cfg, self.id, &self.dir, now,
        )?);
        self.sync_heat_modes();
        Ok(self)
    }

    /// Tells the thermal subsystem whether leases go through the BFT log and whether it
    /// plays byzantine `double_lease`.
    fn sync_heat_modes(&mut self) {
        let by_log = self.leases.is_some() && self.bft.is_some();
        let double = self.byzantine.double_lease;
        if let Some(h) = self.heat.as_mut() {
            h.set_bft_leases(by_log);
            h.set_double_lease(double);
        }
    }

    /// The thermal subsystem, when on.
    pub fn heat(&self) -> Option<&crate::heat::machine::Heat> {
        self.heat.as_ref()
    }

    /// One thermal round (timer [`TimerKey::Heat`]).
    fn on_heat_tick(&mut self, now: Instant) {
        let live = live_cell(self.id, &self.membership);
        let Some(h) = self.heat.as_mut() else {
            return;
        };
        let mut sends = Vec::new();
        h.on_tick(now, &live, &self.dir, &mut sends);
        let next = now + h.interval();
        self.timers.set(TimerKey::Heat, next);
        let data = h.take_data();
        for (to, m) in sends {
            self.fx.send(Dest::Node(to), Payload::Heat(m.encode()));
        }
        self.submit_grants(now);
        // Tasks' input streams: workload, after the round's Class-A messages.
        for (to, bytes) in data {
            self.counters.count(Direction::App, Outcome::Sent);
            self.fx.send(Dest::Node(to), Payload::Data(vec![0; bytes]));
        }
    }

    /// A thermal message from `src` (its frame verified).
    fn on_heat_msg(&mut self, now: Instant, src: u32, bytes: &[u8]) {
        let live = live_cell(self.id, &self.membership);
        let Some(h) = self.heat.as_mut() else {
            return;
        };
        let Ok(m) = crate::heat::msg::HeatMsg::decode(bytes) else {
            h.note_bad_message();
            return;
        };
        let mut sends = Vec::new();
        h.on_message(now, src, m, &live, &self.dir, &mut sends);
        for (to, m) in sends {
            self.fx.send(Dest::Node(to), Payload::Heat(m.encode()));
        }
        self.submit_grants(now);
    }

    /// Signs the thermal subsystem's queued lease grants and submits them to the cell's
    /// BFT log (`bft_leases`; see [`crate::heat::grants`]).
    fn submit_grants(&mut self, now: Instant) {
        let Some(h) = self.heat.as_mut() else { return };
        let grants = h.take_grants();
        if grants.is_empty() {
            return;
        }
        let Some(b) = self.bft.as_mut() else { return };
        let mut outs = Vec::new();
        for g in grants {
            let entry = g.to_entry(b.group(), &self.key);
            // Refused only when the pending queue is full (4,096 entries): the grant is
            // lost as an offer in a lost datagram is; the owner places the task again
            // after the expiry it sent.
            let _ = b.submit(now, entry, &mut outs);
        }
        self.bft_after(now, outs);
    }

    // ---- getters ----

    pub fn id(&self) -> u32 {
        self.id
    }
    pub fn addr(&self) -> HierAddr {
        self.addr
    }
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    pub fn routing(&self) -> &Routing {
        &self.routing
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn locality(&self) -> &Locality {
        &self.routing.locality
    }
    pub fn summaries(&self) -> impl Iterator<Item = (&Dest, &(u32, Summary, Instant))> {
        self.summaries.iter()
    }
    /// Earliest pending timer and its key (for tests; drivers use [`Node::poll_timeout`]).
    pub fn next_timer(&self) -> Option<(TimerKey, Instant)> {
        self.timers.next()
    }

    /// When the node next needs [`Node::handle_timeout`]: its earliest timer deadline.
    /// `None` when no timer is set or the node has stopped. Ask again after every call
    /// that changes state (inputs can set, move or cancel timers).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        self.timers.next().map(|(_, at)| at)
    }

    /// [`Node::poll_timeout`] with the order stamp of the call that set that timer (see
    /// [`Node::set_call_order`]): a driver interleaving many nodes' events of the same
    /// instant (the simulator) wakes the node at `(deadline, stamp)` in its own order.
    pub fn poll_timeout_order(&self) -> Option<(Instant, u64)> {
        if self.stopped {
            return None;
        }
        self.timers.next_ordered().map(|(_, at, stamp)| (at, stamp))
    }

    /// Gives the next call into the node (`start`, `handle`, `command`, `handle_timeout`)
    /// an order stamp: timers it sets carry it, and equal deadlines fire lowest stamp
    /// first. Only a driver that orders many nodes' calls on one line needs it (the
    /// simulator passes its queue's sequence numbers); without it the node counts its own
    /// calls. Stamps must not decrease.
    pub fn set_call_order(&mut self, order: u64) {
        self.timers.set_order(order);
    }

    /// Fires the earliest timer due at `now` (deadline `<= now`; equal deadlines in the
    /// order they were set, see [`Timers`]) and writes what follows into `out`. Returns that timer's
    /// deadline (so a driver can measure how late it fired), or `None` when nothing is due
    /// — a spurious or early wake-up is a no-op. Call it while it returns `Some`: each
    /// call fires one timer, so a timer re-armed for `now` by another fires in turn.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let (key, at) = self.timers.next().filter(|(_, at)| *at <= now)?;
        self.handle(now, Input::Timer(key), out);
        Some(at)
    }
    pub fn watch(&self) -> &Watch {
        &self.watch
    }
    /// The cell-replicated KV store (causal layer).
    pub fn kv(&self) -> &Replica {
        &self.kv
    }
    pub fn member_counts(&self) -> [u32; 3] {
        self.membership.counts()
    }
    /// The time layer, if configured.
    pub fn time(&self) -> Option<&TimeLayer> {
        self.time.as_ref()
    }

    /// The clock's metrics against ground truth at `now` (the driver passes true emulated
    /// time). Advances the emulated oscillator to `now` — the only state it touches.
    pub fn time_metrics(&mut self, now: Instant) -> Option<TimeMetrics> {
        self.time.as_mut().map(|t| t.clock.metrics(now.as_nanos()))
    }

    /// The `time` section of `/state` (advances the emulated oscillator to `now`).
    pub fn time_view(&mut self, now: Instant) -> Option<TimeView> {
        let t = self.time.as_mut()?;
        let ns = now.as_nanos();
        let metrics = t.clock.metrics(ns);
        let stamp = t.clock.timestamp(ns);
        let unsynchronized = t.clock.unsync_reason(ns);
        let st = t.clock.sync_stats();
        Some(TimeView {
            role: t.clock.config().role,
            servers: t.clock.config().servers.iter().map(|s| s.server).collect(),
            stratum: t.clock.sync().stratum(),
            server: t.clock.sync().server(),
            unsynchronized,
            metrics,
            stamp,
            requests_sent: st.requests_sent,
            responses_accepted: st.responses_accepted,
            responses_rejected: st.responses_rejected,
            pulsar_fixes_total: t.clock.pulsar().fixes_total(),
            pulsar_missed_total: t.clock.pulsar().missed_total(),
            faults: t.faults.clone(),
        })
    }

    /// A coordinate-tagged timestamp for `now` from this node's clock (`None` without a
    /// time layer).
    pub fn timestamp(&mut self, now: Instant) -> Option<CoordTimestamp> {
        self.time
            .as_mut()
            .map(|t| t.clock.timestamp(now.as_nanos()))
    }

    /// Physical time for the hybrid logical clocks: the clock's best estimate of lab time
    /// (its raw reading while unsynchronized), not the ground truth `now`; `now` itself
    /// only without a time layer.
    fn physical_ns(&mut self, now: Instant) -> u64 {
        match self.time.as_mut() {
            Some(t) => t.clock.timestamp(now.as_nanos()).estimate_ns.max(0) as u64,
            None => now.as_nanos(),
        }
    }

    fn arm_clock(&mut self) {
        if let Some(t) = &self.time {
            let at = Instant::from_nanos(t.clock.next_timeout_ns());
            if self.timers.get(TimerKey::Clock) != Some(at) {
                self.timers.set(TimerKey::Clock, at);
            }
        }
    }

    /// Sends what the clock queued as authenticated `Payload::Time` datagrams.
    fn flush_clock(&mut self) {
        let Some(t) = self.time.as_mut() else { return };
        for o in t.out.drain(..) {
            self.fx
                .send(Dest::Node(o.to), Payload::Time(o.msg.encode()));
        }
        self.arm_clock();
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut counters = BTreeMap::new();
        for (d, o, v) in self.counters.labelled() {
            counters.insert(format!("datagrams.{d}.{o}"), v);
        }
        for (d, v) in &self.counters.bytes {
            counters.insert(format!("bytes.{}", d.as_str()), *v);
        }
        let locality = Level::ALL
            .iter()
            .map(|l| {
                (
                    l.as_str().to_string(),
                    self.routing.locality.bytes[*l as usize],
                )
            })
            .collect();
        Snapshot {
            node: self
                .dir
                .get(self.id)
                .map(|e| e.name.clone())
                .unwrap_or_default(),
            id: self.id,
            addr: self.addr.to_string(),
            role: self.role,
            now_emulated_s: self.now.as_secs_f64(),
            incarnation: self.membership.incarnation(),
            local_health: self.membership.local_health(),
            members: self.membership.view(),
            routes: self
                .routing
                .table()
                .iter()
                .map(|(d, r)| RouteView {
                    dest: dest_name(d),
                    route: *r,
                })
                .collect(),
            quarantine: self.routing.quarantined().iter().copied().collect(),
            revoked: self.revoked_nodes(),
            protocol_version: self.update.build().version,
            attest: {
                let v = self.attest.view();
                (v.build.is_some() || v.required).then_some(v)
            },
            byzantine: {
                let mut b = self.byzantine.names();
                if self.stolen.is_some() {
                    b.push("steal_key");
                }
                b
            },
            watch: self.watch.view(),
            counters,
            locality,
            kv: {
                let (keys, writes) = self.kv.store().writes_seen();
                crate::view::KvView {
                    keys,
                    synced: !self.kv.needs_sync(),
                    writes,
                }
            },
            store: self.store.as_ref().map(|st| crate::view::StoreView {
                shards: st.store().inventory(),
            }),
            time: None,
            thermal: None,
            verdicts: self
                .verdicts
                .as_ref()
                .map(|v| v.view(self.bft.as_ref().map_or(0, |b| b.decided().len()))),
            trust: self.trust.as_ref().map(|_| crate::view::TrustView {
                log_size: self.cell_log.log.len(),
                log_root: hex::encode(self.cell_log.log.root()),
                rotated: self.rotated.iter().map(|(n, r)| (*n, r.serial)).collect(),
                key: hex::encode(self.key.verifying_key().as_bytes()),
            }),
            summaries: self
                .summaries
                .iter()
                .map(|(d, (from, s, t))| SummaryView {
                    scope: dest_name(d),
                    from: *from,
                    summary: *s,
                    received_emulated_s: t.as_secs_f64(),
                    taken: stamp_from_wire(
                        &s.stamp,
                        self.dir
                            .get(*from)
                            .map(|e| e.position_au)
                            .unwrap_or([0.0; 3]),
                    ),
                })
                .collect(),
        }
    }

    // ---- the one entry point ----

    /// Feeds one input at emulated time `now` and writes what follows into `out`.
    pub fn handle(&mut self, now: Instant, input: Input<'_>, out: &mut Outbox) {
        if self.stopped {
            if let Input::Datagram { .. } = input {
                self.counters.count(Direction::Rx, Outcome::Stopped);
            }
            return;
        }
        self.now = self.now.max(now);
        self.timers.begin_call(now);
        match input {
            Input::Datagram { from, bytes } => self.on_datagram(now, from, bytes),
            Input::Timer(key) => {
                if self.timers.expire(key, now) {
                    self.on_timer(now, key);
                }
            }
        }
        self.flush(now, out);
    }

    /// Carries out an operator command at emulated time `now`, writes what follows (its
    /// datagrams, events such as [`Event::Stopped`]) into `out`, and returns its result:
    /// each command's answer is its own, so one refusal fails only its own request. A
    /// `cell` put may answer [`Reply::Pending`]; its [`Event::KvWritten`] or
    /// [`Event::KvPutFailed`] comes later, carrying the request id. A stopped node refuses
    /// every command ([`CommandError::Stopped`]).
    pub fn command(
        &mut self,
        now: Instant,
        c: &Command,
        out: &mut Outbox,
    ) -> Result<Reply, CommandError> {
        if self.stopped {
            return Err(CommandError::Stopped);
        }
        self.now = self.now.max(now);
        self.timers.begin_call(now);
        let r = self.on_command(now, c);
        self.flush(now, out);
        r
    }

    fn on_command(&mut self, now: Instant, c: &Command) -> Result<Reply, CommandError> {
        match c {
            Command::Quarantine { node } => {
                self.routing.set_quarantine(*node, true);
                self.membership.declare_dead(now, *node, &mut self.fx);
                self.arm_triggered(now);
            }
            Command::Unquarantine { node } => self.routing.set_quarantine(*node, false),
            Command::Byzantine(b) => {
                self.byzantine = *b;
                if *b == Byzantine::default() {
                    self.stolen = None;
                }
                self.sync_heat_modes();
            }
            Command::StealKey { node, key } => {
                let e = self.dir.get(*node).ok_or(CommandError::NoSuchNode(*node))?;
                if *node == self.id {
                    return Err(CommandError::OwnKey);
                }
                if key.verifying_key() != e.key {
                    return Err(CommandError::NotTheKey(*node));
                }
                self.stolen = Some(Box::new(Stolen {
                    node: *node,
                    key: (**key).clone(),
                    // Far above any sequence number the owner has used: receivers take
                    // the forged frames, and their replay windows then refuse the owner's.
                    seq: 1 << 40,
                }));
            }
            Command::Send { dst, data } => {
                if data.len() > wire::MAX_BLOB {
                    return Err(CommandError::DataTooLarge);
                } else if *dst == self.id || self.dir.get(*dst).is_none() {
                    return Err(CommandError::NoSuchNode(*dst));
                }
                self.counters.count(Direction::App, Outcome::Sent);
                self.fx.send(Dest::Node(*dst), Payload::Data(data.clone()));
            }
            Command::SendTime { dst, data } => {
                if data.len() > wire::MAX_BLOB {
                    return Err(CommandError::TimePayloadTooLarge);
                }
                self.fx.send(Dest::Node(*dst), Payload::Time(data.clone()));
            }
            Command::ClockFault(f) => {
                let t = self.time.as_mut().ok_or(CommandError::NoTimeLayer)?;
                t.clock.inject(now.as_nanos(), *f);
                if t.faults.len() >= 16 {
                    t.faults.remove(0);
                }
                t.faults.push(*f);
            }
            Command::Put {
                request,
                key,
                value,
                durability,
            } => return self.put(now, *request, key, value, *durability),
            Command::Get { key } => {
                let value = self.kv.get(key);
                let (versions, context) = self.kv.versions(key);
                let (dots, siblings) = versions.into_iter().unzip();
                return Ok(Reply::KvValue {
                    key: key.clone(),
                    value,
                    siblings,
                    dots,
                    context,
                });
            }
            Command::BftRevoke { node } => {
                // The key the node signs with now (its rotated one, if any).
                let key = self
                    .peer_key(*node)
                    .ok_or(CommandError::NoSuchNode(*node))?;
                let entry = crate::trust::log::Entry {
                    kind: crate::trust::log::EntryKind::Revocation,
                    subject: *node,
                    body: key.as_bytes().to_vec(),
                };
                let b = self.bft.as_mut().ok_or(CommandError::NoBft)?;
                let mut outs = Vec::new();
                b.submit(now, entry.encode(), &mut outs)
                    .map_err(|e| CommandError::Bft(e.to_string()))?;
                self.bft_after(now, outs);
            }
            Command::Order(bytes) => {
                self.on_order(now, bytes, None)
                    .map_err(CommandError::Order)?;
            }
            Command::TrustEntry(bytes) => self.on_trust_entry(bytes, None)?,
            Command::RotateKey {
                secret,
                certificate,
            } => self.rotate_key(now, secret, certificate)?,
            Command::ObjectPut { .. } | Command::ObjectGet { .. } => {
                return self.on_store_command(now, c);
            }
            Command::TaskSubmit(spec) => {
                let h = self.heat.as_mut().ok_or(CommandError::NoThermal)?;
                let task = h
                    .submit(now, *spec)
                    .map_err(|e| CommandError::Task(e.to_string()))?;
                return Ok(Reply::TaskSubmitted { task });
            }
            Command::Shutdown => {
                for (_, p) in std::mem::take(&mut self.puts) {
                    self.put_failed(p, "the agent is stopping".into());
                }
                self.timers.cancel(TimerKey::KvAck);
                self.membership.leave();
                // Tell a few members directly so the departure spreads before we go.
                let mut fx = std::mem::take(&mut self.fx);
                let routing = &self.routing;
                let reach = |n: u32| routing.reaches(n, now);
                self.membership.on_gossip_tick(
                    now,
                    &mut self.rng,
                    &reach,
                    &mut fx,
                    &mut self.timers,
                );
                self.fx = fx;
                self.flush_sends(now);
                self.stopped = true;
                self.fx.events.push(Event::Stopped);
            }
        }
        Ok(Reply::Done)
    }

    fn on_timer(&mut self, now: Instant, key: TimerKey) {
        let mut watch_due = false;
        let mut fx = std::mem::take(&mut self.fx);
        let routing = &self.routing;
        let rtt = |n: u32| routing.one_way(n).mul_f64(3.0);
        let reach = |n: u32| routing.reaches(n, now);
        let (m, rng, t) = (&mut self.membership, &mut self.rng, &mut self.timers);
        match key {
            TimerKey::ProbeTick => m.on_probe_tick(now, rng, &rtt, &reach, &mut fx, t),
            TimerKey::ProbeTimeout => m.on_probe_timeout(now, rng, &rtt, &reach, &mut fx, t),
            TimerKey::IndirectTimeout => m.on_indirect_timeout(now, &mut fx, t),
            TimerKey::Suspicion => m.on_suspicion_timer(now, &mut fx, t),
            TimerKey::ForwardSweep => m.on_forward_sweep(now, &mut fx, t),
            TimerKey::Gossip => m.on_gossip_tick(now, rng, &reach, &mut fx, t),
            TimerKey::Reclaim => m.on_reclaim_tick(now, rng, &mut fx, t),
            TimerKey::KvRepair => {
                use rand::seq::SliceRandom;
                let mut choose = |from: &[u32]| from.choose(rng).copied();
                for (peer, b) in self.kv.maintenance(m.active(), &mut choose) {
                    fx.send(Dest::Node(peer), Payload::Kv(b));
                }
                t.set(TimerKey::KvRepair, now + self.params.kv_repair_interval);
            }
            TimerKey::RouteHello => {
                // A neighbour that went quiet is probed at the next period (see
                // `Membership::probe_next`), once per quiet spell.
                let quiet = self.routing.quiet_neighbors(now);
                for &n in &quiet {
                    if self.quiet_hinted.insert(n) {
                        self.membership.probe_next(now, n, &mut self.timers);
                    }
                }
                self.quiet_hinted.retain(|n| quiet.contains(n));
                self.routing.sweep(now);
                // A neighbour that stops advertising a destination without a withdrawal
                // reaching us (a lost triggered update; a full refresh simply omits it) would
                // otherwise leave the route in our table for good.
                self.routing.expire_entries(now);
                let neighbours: Vec<(u32, Duration)> = self
                    .routing
                    .neighbors()
                    .map(|n| (n, self.routing.link_delay(n).unwrap_or_default()))
                    .collect();
                for (n, hello) in self.update.hellos_due(now, &neighbours) {
                    fx.send_link(n, hello);
                }
                // Neighbours heard from without a valid attestation are asked again.
                let unattested: Vec<(u32, Duration)> = neighbours
                    .iter()
                    .copied()
                    .filter(|(n, _)| self.routing.heard_lately(*n, now))
                    .collect();
                if let Some(p) = self.attest.payload(false) {
                    for n in self.attest.due(now, &unattested) {
                        fx.send_link(n, p.clone());
                    }
                }
                // A neighbour that gets a repeat needs no keepalive: anything heard proves
                // the link.
                let mut repeated = BTreeSet::new();
                for (n, chunks) in self.routing.take_repeats(now) {
                    repeated.insert(n);
                    for entries in chunks {
                        fx.send_link(
                            n,
                            Payload::Route {
                                full: false,
                                entries,
                            },
                        );
                    }
                }
                for n in self.routing.hello_due(now) {
                    if repeated.contains(&n) {
                        continue;
                    }
                    fx.send_link(
                        n,
                        Payload::Route {
                            full: false,
                            entries: Vec::new(),
                        },
                    );
                }
                let h = self.params.route.hello_interval;
                // Check four times per hello interval so keepalives are never late by more
                // than a quarter interval.
                self.timers.set(TimerKey::RouteHello, now + h / 4);
            }
            TimerKey::RouteTriggered => {
                for (n, chunks) in self.routing.take_triggered(now) {
                    for entries in chunks {
                        fx.send_link(
                            n,
                            Payload::Route {
                                full: false,
                                entries,
                            },
                        );
                    }
                }
            }
            TimerKey::RouteRefresh => {
                // Up or not yet heard (see `Routing::advert_targets`).
                for n in self.routing.advert_targets() {
                    for entries in self.routing.full_advert(n) {
                        fx.send_link(
                            n,
                            Payload::Route {
                                full: true,
                                entries,
                            },
                        );
                    }
                }
                self.timers.set(
                    TimerKey::RouteRefresh,
                    now + self.params.route.refresh_interval,
                );
            }
            TimerKey::Summary => {
                self.on_summary_tick(now, &mut fx);
                self.timers
                    .set(TimerKey::Summary, now + self.params.summary_interval);
            }
            // Need the whole node, not the borrows above: run after them.
            TimerKey::Watch => watch_due = true,
            TimerKey::KvAck => {}
            TimerKey::Heat => {}
            TimerKey::Bft => {}
            TimerKey::Store => {}
            TimerKey::KeySwitch => {}
            TimerKey::Clock => {
                if let Some(t) = self.time.as_mut() {
                    let ns = now.as_nanos();
                    t.clock.poll(ns, &t.sky, &mut t.out);
                    // One coverage sample per clock event (sync poll or pulsar fix).
                    t.clock.sample(ns);
                }
            }
        }
        self.fx = fx;
        self.flush_clock();
        if watch_due {
            self.on_watch_tick(now);
        }
        if key == TimerKey::KvAck {
            self.on_put_tick(now);
        }
        if key == TimerKey::Heat {
            self.on_heat_tick(now);
        }
        if key == TimerKey::Bft {
            self.on_bft_tick(now);
        }
        if key == TimerKey::Store {
            self.on_store_tick(now);
        }
        if key == TimerKey::KeySwitch {
            self.on_key_switch(now);
        }
    }

    /// A client write: into the replica, to every live cell member, and answered now
    /// (`local`, or a cell whose quorum is this node alone) or once enough members ack.
    fn put(
        &mut self,
        now: Instant,
        request: u64,
        key: &str,
        value: &[u8],
        d: Durability,
    ) -> Result<Reply, CommandError> {
        let needed = Durability::cell_quorum(self.dir.ids_where(|a| a.same_cell(&self.addr)).len());
        if d == Durability::Cell && needed > 1 && self.puts.len() >= MAX_PENDING_PUTS {
            return Err(CommandError::TooManyPendingPuts(MAX_PENDING_PUTS));
        }
        let phys = self.physical_ns(now);
        let (bytes, written) = self
            .kv
            .put(phys, key, value.to_vec())
            .map_err(|e| CommandError::Kv(e.to_string()))?;
        for m in self.membership.active().to_vec() {
            self.fx.send(Dest::Node(m), Payload::Kv(bytes.clone()));
        }
        match (d, written.dot) {
            (Durability::Cell, Some(dot)) if needed > 1 => {
                self.puts.insert(
                    dot,
                    PendingPut {
                        request,
                        key: key.to_string(),
                        written,
                        bytes,
                        holders: vec![self.id],
                        needed,
                        deadline: now + self.params.kv_ack_timeout,
                        retry_at: now + self.params.kv_ack_retry,
                    },
                );
                self.arm_puts();
                Ok(Reply::Pending { request })
            }
            _ => Ok(Reply::KvWritten {
                request,
                key: key.to_string(),
                written,
                durability: d,
                holders: vec![self.id],
            }),
        }
    }

    /// `src` (the signed source of a KV ack) holds these writes of ours.
    fn on_put_acks(&mut self, src: u32, dots: &[Dot]) {
        for dot in dots {
            let Some(p) = self.puts.get_mut(dot) else {
                continue;
            };
            if !p.holders.contains(&src) {
                p.holders.push(src);
            }
            if p.holders.len() >= p.needed {
                if let Some(p) = self.puts.remove(dot) {
                    self.counters
                        .count(Direction::Kv, Outcome::CellAcknowledged);
                    self.fx.events.push(Event::KvWritten {
                        request: p.request,
                        key: p.key,
                        written: p.written,
                        durability: Durability::Cell,
                        holders: p.holders,
                    });
                }
            }
        }
        self.arm_puts();
    }

    /// Puts past their deadline fail; the others are sent again to live members whose ack
    /// is missing when their retry is due.
    fn on_put_tick(&mut self, now: Instant) {
        let expired: Vec<Dot> = self
            .puts
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(d, _)| *d)
            .collect();
        for d in expired {
            if let Some(p) = self.puts.remove(&d) {
                let reason = format!(
                    "indeterminate: {} of the {} cell members needed held the write after {:?}; it stands on this node and may still spread",
                    p.holders.len(),
                    p.needed,
                    self.params.kv_ack_timeout
                );
                self.put_failed(p, reason);
            }
        }
        let active = self.membership.active().to_vec();
        let retry = self.params.kv_ack_retry;
        let mut resend = Vec::new();
        for p in self.puts.values_mut() {
            if p.retry_at <= now {
                p.retry_at = now + retry;
                for m in active.iter().filter(|m| !p.holders.contains(m)) {
                    resend.push((*m, p.bytes.clone()));
                }
            }
        }
        for (m, b) in resend {
            self.counters
                .count(Direction::Kv, Outcome::PutRetransmitted);
            self.fx.send(Dest::Node(m), Payload::Kv(b));
        }
        self.arm_puts();
    }

    fn put_failed(&mut self, p: PendingPut, reason: String) {
        self.counters.count(Direction::Kv, Outcome::CellTimedOut);
        self.fx.events.push(Event::KvPutFailed {
            request: p.request,
            key: p.key,
            written: p.written,
            holders: p.holders,
            needed: p.needed as u32,
            reason,
        });
    }

    fn arm_puts(&mut self) {
        match self.puts.values().map(|p| p.deadline.min(p.retry_at)).min() {
            Some(at) if self.timers.get(TimerKey::KvAck) != Some(at) => {
                self.timers.set(TimerKey::KvAck, at)
            }
            Some(_) => {}
            None => self.timers.cancel(TimerKey::KvAck),
        }
    }

    /// Neighbourhood watch tick: judge the audits that are due, start new ones, repeat our
    /// accusations. See [`crate::watch`].
    fn on_watch_tick(&mut self, now: Instant) {
        let m = &self.membership;
        let alive = |x: u32| m.state_of(x) == Some(MemberState::Alive);
        let r = &self.routing;
        let link = |n: u32| crate::watch::LinkState {
            heard: r.heard_lately(n, now),
            silences: r.silences(n),
            keepalive: r.keepalive(n),
        };
        for s in self.watch.judge(now, &alive, &link) {
            self.on_evidence(now, s);
        }
        // What we hold before expiry, to withdraw what lapses (only when our votes go to
        // the group's log: no copy on every tick otherwise).
        let held: Vec<u32> = match self.verdicts {
            Some(_) => self.watch.evidence().keys().copied().collect(),
            None => Vec::new(),
        };
        for s in self.watch.expire(now) {
            self.readmit(s);
        }
        if self.verdicts.is_some() {
            use crate::trust::verdicts::Op;
            // Evidence that lapsed: withdraw our vote; terms over here: vote to re-admit.
            let lapsed = held
                .into_iter()
                .filter(|s| !self.watch.evidence().contains_key(s));
            let mut votes: Vec<(u32, Op)> = lapsed.map(|s| (s, Op::Withdraw)).collect();
            votes.extend(
                self.watch
                    .agreed_terms_over(now)
                    .into_iter()
                    .map(|s| (s, Op::Readmit)),
            );
            for (s, op) in votes {
                self.vote(now, s, op);
            }
        }
        let neighbours: Vec<u32> = self
            .routing
            .neighbors()
            .filter(|n| self.routing.neighbor_up(*n) && !self.routing.is_quarantined(*n))
            .collect();
        for s in neighbours {
            if !self.watch.audit_due(now, s) {
                continue;
            }
            let targets: Vec<u32> = self
                .routing
                .audit_targets(s)
                .into_iter()
                .filter(|x| self.membership.state_of(*x) == Some(MemberState::Alive))
                .collect();
            let r = &self.routing;
            let rtt = |x: u32| r.one_way(x) * 2;
            if let Some(e) = self.watch.audit(now, s, &targets, &rtt, r.silences(s)) {
                self.fx.send(
                    Dest::Node(e.to),
                    Payload::Watch {
                        nonce: e.nonce,
                        reply: false,
                    },
                );
            }
        }
        for s in self.watch.accusations_due(now) {
            self.accuse(s);
        }
        if self.byzantine.false_accuse {
            self.false_accusations(now);
        }
        if self.stolen.is_some() {
            self.send_forged(now);
        }
        if self.params.watch.log_heads {
            self.gossip_heads(now);
        }
        // The tick runs at the fast cadence; each neighbour's audits keep their own.
        let next = now + self.params.watch.audit_fast;
        self.timers.set(TimerKey::Watch, next);
    }

    /// We hold new evidence against `s`: no transit through it and no belief in its
    /// membership claims here, and a vote toward the quorum to the cell and our neighbours.
    /// (Not a quarantine yet: one node's evidence can be a mistake.)
    fn on_evidence(&mut self, now: Instant, s: u32) {
        self.counters.count(Direction::Watch, Outcome::Evidence);
        self.routing.distrust(s);
        self.membership
            .discredit(now, s, &mut self.fx, &mut self.timers);
        self.arm_triggered(now);
        self.accuse(s);
        if self.agreed_by_group(s) {
            self.vote(now, s, crate::trust::verdicts::Op::Accuse);
        } else if self.watch.check_quorum(now, s) {
            self.convict(now, s, now.as_nanos());
        }
    }

    /// True when the group's log decides `s`'s quarantine (watch `bft_verdicts`, and `s` a
    /// member of our BFT group): votes we hear about it then convict nobody here.
    fn agreed_by_group(&self, s: u32) -> bool {
        self.verdicts.is_some() && self.bft.as_ref().is_some_and(|b| b.group().is_member(s))
    }

    /// Submits our vote `op` about `s` to the group (once per standing vote; see
    /// [`crate::trust::verdicts`]).
    fn vote(&mut self, now: Instant, s: u32, op: crate::trust::verdicts::Op) {
        if !self.agreed_by_group(s) {
            return;
        }
        let (Some(v), Some(b)) = (self.verdicts.as_mut(), self.bft.as_mut()) else {
            return;
        };
        let Some(vote) = v.vote(s, op) else { return };
        let entry = vote.to_entry(b.group(), &self.key);
        let mut outs = Vec::new();
        // Refused only when the pending queue is full (4,096 entries): the vote is lost,
        // as a vote in a lost datagram would be; counted by the replica.
        if b.submit(now, entry, &mut outs).is_ok() {
            self.counters
                .count(Direction::Watch, Outcome::VoteSubmitted);
        }
        self.bft_after(now, outs);
    }

    /// The group's votes against convicted `s` lapsed after its term (see [`crate::watch`]):
    /// lift the quarantine. Its membership comes back through its own refutation (dead
    /// members are probed now and then), and the watch audits it afresh.
    fn readmit(&mut self, s: u32) {
        self.counters.count(Direction::Watch, Outcome::Readmitted);
        self.routing.set_quarantine(s, false);
        self.routing.trust_again(s);
        self.fx.events.push(Event::Readmitted { node: s });
    }

    fn accuse(&mut self, s: u32) {
        // Every cell member, not only those we believe alive: a liar's claims may have us
        // believe them dead.
        let mut to: std::collections::BTreeSet<u32> = self.membership.members().collect();
        to.extend(self.routing.neighbors());
        to.remove(&s);
        to.remove(&self.id);
        for n in to {
            self.fx.send(Dest::Node(n), Payload::Accuse { node: s });
        }
    }

    /// The quorum of accusers holds against `s`: quarantine it and declare it dead. `stamp`
    /// goes into the verdict's log entry: the time here for a conviction by the votes we
    /// heard, the agreed log's slot for one the group decided (so every member's entry is
    /// the same).
    fn convict(&mut self, now: Instant, s: u32, stamp: u64) {
        self.counters.count(Direction::Watch, Outcome::Quarantined);
        let accusers = match self.verdicts.as_ref() {
            Some(v) if self.agreed_by_group(s) => v.accusers(s),
            _ => self.watch.accusers_of(s),
        };
        if self.params.watch.log_heads {
            let mut body = stamp.to_be_bytes().to_vec();
            for a in &accusers {
                body.extend_from_slice(&a.to_be_bytes());
            }
            body.truncate(crate::trust::log::MAX_BODY);
            self.cell_log.record(&crate::trust::log::Entry {
                kind: crate::trust::log::EntryKind::QuarantineVerdict,
                subject: s,
                body,
            });
        }
        self.routing.set_quarantine(s, true);
        self.membership.declare_dead(now, s, &mut self.fx);
        self.membership
            .discredit(now, s, &mut self.fx, &mut self.timers);
        self.arm_triggered(now);
        self.fx
            .events
            .push(Event::Quarantined { node: s, accusers });
    }

    /// Gossips signed tree heads to the cell (watch `log_heads`, see [`crate::trust`]).
    fn gossip_heads(&mut self, now: Instant) {
        self.cell_log.set_split(self.id, self.byzantine.split_log);
        let every = self.params.watch.accuse_interval;
        let who = (self.id, self.boot_epoch);
        let Some(due) = self.cell_log.heads_due(now, every, who, &self.key) else {
            return;
        };
        let to: Vec<u32> = self
            .membership
            .members()
            .filter(|n| *n != self.id)
            .collect();
        for n in to {
            let own = if n % 2 == 1 { due.odd } else { due.even };
            let mut heads = vec![own];
            heads.extend(due.others.iter().copied());
            self.fx.send(Dest::Node(n), Payload::TreeHeads(heads));
        }
    }

    /// Byzantine `false_accuse`: accuse every other node of our cluster, to every one of
    /// them (a coalition member trying to get honest nodes quarantined).
    fn false_accusations(&mut self, now: Instant) {
        let me = self.addr;
        if self.verdicts.is_some() {
            // ... and votes against every member of our group, in the agreed log.
            let id = self.id;
            let group: Vec<u32> = self
                .bft
                .as_ref()
                .map_or(Vec::new(), |b| b.group().members().to_vec());
            for s in group.into_iter().filter(|s| *s != id) {
                self.vote(now, s, crate::trust::verdicts::Op::Accuse);
            }
        }
        let ids = self.dir.ids_where(|a| a.same_cluster(&me));
        for to in ids.iter().copied().filter(|n| *n != self.id) {
            for node in ids.iter().copied().filter(|n| *n != self.id && *n != to) {
                self.fx.send(Dest::Node(to), Payload::Accuse { node });
            }
        }
    }

    /// Byzantine `lie_membership`: claims about live members, first-hand, at the
    /// incarnation we know them by — so each refutation is met by a new lie.
    fn lies(&mut self) -> Vec<Update> {
        let victims: Vec<u32> = self.membership.active().to_vec();
        let mut out = Vec::new();
        for _ in 0..victims.len().min(2) {
            let v = victims[self.lie_cursor % victims.len()];
            self.lie_cursor = self.lie_cursor.wrapping_add(1);
            // `forge_accuser` names another member as the accuser.
            let from = if self.byzantine.forge_accuser {
                victims.iter().copied().find(|x| *x != v).unwrap_or(self.id)
            } else {
                self.id
            };
            out.push(Update {
                node: v,
                state: MemberState::Dead,
                incarnation: self.membership.incarnation_of(v).unwrap_or(0),
                from,
            });
        }
        out
    }

    /// Gateways carry membership summaries upward: cell gateway → cluster gateway → layer
    /// gateway → the other layers' gateways. The cell gateway is the lowest-id live
    /// `Role::Gateway` member of the cell (else the lowest live id), so it fails over with
    /// membership; cluster and layer gateways are fixed by the directory.
    fn on_summary_tick(&mut self, now: Instant, fx: &mut Effects) {
        let my = self.addr;
        let cell_scope = Dest::cell_of(&my);
        let live_cell: Vec<u32> = std::iter::once(self.id)
            .chain(
                self.membership
                    .active()
                    .iter()
                    .copied()
                    .filter(|n| self.membership.state_of(*n) == Some(MemberState::Alive)),
            )
            .collect();
        let gw = live_cell
            .iter()
            .copied()
            .filter(|i| self.dir.get(*i).is_some_and(|e| e.role == Role::Gateway))
            .min()
            .or(live_cell.iter().copied().min());
        let version = now.as_nanos();
        // Without a time layer the stamp says "unsynchronized" and carries the raw `now`.
        let stamp = match self.timestamp(now) {
            Some(ts) => stamp_to_wire(&ts),
            None => WireStamp {
                estimate_ns: now.as_nanos().min(i64::MAX as u64) as i64,
                sigma_ps: u64::MAX,
                source: 0,
                stratum: 0,
            },
        };
        if gw == Some(self.id) {
            let [alive, suspect, dead] = self.membership.counts();
            let s = Summary {
                scope: cell_scope,
                alive,
                suspect,
                dead,
                version,
                stamp,
            };
            self.summaries.insert(cell_scope, (self.id, s, now));
            let cluster = Dest::Cluster {
                layer: my.layer,
                cluster: my.cluster,
            };
            if let Some(cgw) = self.dir.gateway_of(cluster) {
                if cgw != self.id {
                    fx.send(Dest::Node(cgw), Payload::Summary(s));
                }
            }
        }
        // Aggregate one level up if we are that level's gateway.
        for (scope, child_level) in [
            (
                Dest::Cluster {
                    layer: my.layer,
                    cluster: my.cluster,
                },
                0u8,
            ),
            (Dest::Layer { layer: my.layer }, 1u8),
        ] {
            if self.dir.gateway_of(scope) != Some(self.id) {
                continue;
            }
            let mut agg = Summary {
                scope,
                alive: 0,
                suspect: 0,
                dead: 0,
                version,
                stamp,
            };
            let mut any = false;
            for (d, (_, s, _)) in &self.summaries {
                let child = match (child_level, d) {
                    (0, Dest::Cell { .. }) | (1, Dest::Cluster { .. }) => scope.holds_scope(d),
                    _ => false,
                };
                if child {
                    agg.alive += s.alive;
                    agg.suspect += s.suspect;
                    agg.dead += s.dead;
                    any = true;
                }
            }
            if !any {
                continue;
            }
            self.summaries.insert(scope, (self.id, agg, now));
            let targets: Vec<u32> = if child_level == 0 {
                self.dir
                    .gateway_of(Dest::Layer { layer: my.layer })
                    .into_iter()
                    .collect()
            } else {
                let layers: std::collections::BTreeSet<u16> =
                    self.dir.peers.iter().map(|e| e.addr.layer).collect();
                layers
                    .into_iter()
                    .filter(|l| *l != my.layer)
                    .filter_map(|l| self.dir.gateway_of(Dest::Layer { layer: l }))
                    .collect()
            };
            for t in targets {
                if t != self.id {
                    fx.send(Dest::Node(t), Payload::Summary(agg));
                }
            }
        }
    }

    fn on_datagram(&mut self, now: Instant, from: u32, bytes: &[u8]) {
        self.counters.count(Direction::Rx, Outcome::Received);
        self.counters.add_bytes(Direction::Rx, bytes.len());
        if !self.routing.is_neighbor(from) {
            self.counters.count(Direction::Rx, Outcome::UnknownLink);
            return;
        }
        if self.routing.is_quarantined(from) {
            self.counters.count(Direction::Rx, Outcome::Quarantined);
            return;
        }
        let frame = match wire::parse(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.counters.count(Direction::Rx, Outcome::from(&e));
                return;
            }
        };
        let h = frame.header;
        if let Err(e) = self.update.admit(frame.version, h.kind) {
            self.counters.count(Direction::Rx, Outcome::from(&e));
            return;
        }
        if self.routing.is_quarantined(h.src)
            || matches!(h.dst, Dest::Node(d) if self.routing.is_quarantined(d))
        {
            self.counters.count(Direction::Rx, Outcome::Quarantined);
            return;
        }
        if self.trust_refuses(h.src) {
            self.counters.count(Direction::Rx, Outcome::KeyRevoked);
            return;
        }
        if self.bft_refuses(h.src) {
            self.counters.count(Direction::Rx, Outcome::KeyRevoked);
            return;
        }
        let was_up = self.routing.neighbor_up(from);
        if self.routing.heard(from, now) {
            // We dropped its adverts when the link went down here (a silence, a claim of
            // its death): ask for its table, or wait for the periodic refresh without it.
            let ask = Payload::Route {
                full: true,
                entries: Vec::new(),
            };
            self.fx.send_link(from, ask);
        }
        if !was_up {
            self.arm_triggered(now);
        }
        if !self.routing.is_local(h.dst) {
            if h.src == self.id {
                // Our own source, arriving from a link: a frame of ours that came back
                // round a loop, or another's frame made to look like ours. Passing it on
                // would put our name on what we did not send (found by the datagram
                // fuzz target, fuzz/regressions/datagram).
                self.counters.count(Direction::Fwd, Outcome::Loop);
                return;
            }
            self.forward(now, from, bytes, h.ttl, h.dst);
            return;
        }
        if let Err(e) = self.accept(now, &frame, from) {
            self.counters.count(Direction::Rx, Outcome::from(&e));
            return;
        }
        let payload = match frame.decode_payload() {
            Ok(p) => p,
            Err(e) => {
                self.counters.count(Direction::Rx, Outcome::from(&e));
                return;
            }
        };
        self.counters.count(Direction::Rx, Outcome::Ok);
        // A sender's clock is adopted only within a day of now (as the kv layer's; `now`,
        // not the time layer's estimate, which costs more per frame): an
        // authenticated but lying peer must not push ours to the end of time, where the
        // next frame's HLC would overflow (fuzz/regressions/datagram/crash-c211e553…).
        if h.hlc <= now.as_nanos().saturating_add(MAX_HLC_AHEAD_NS) {
            self.hlc = self.hlc.max(h.hlc);
        }
        self.dispatch(now, from, h.src, payload);
    }

    fn accept(
        &mut self,
        now: Instant,
        frame: &wire::Frame<'_>,
        from: u32,
    ) -> Result<(), WireError> {
        let h = frame.header;
        if h.src == self.id {
            return Err(WireError::Replay);
        }
        if h.dst == Dest::Link && h.src != from {
            return Err(WireError::BadDestination(4));
        }
        let key = self.peer_key(h.src).ok_or(WireError::UnknownSender)?;
        self.counters.auth_ops[1] += 1;
        let mut via_previous = false;
        if let Err(e) = frame.verify_with(&key, self.params.auth) {
            // A rotated peer's previous key, for frames it signed before its switch that
            // are still in flight (never a revoked key, never after the grace).
            let r = self.rotated.get(&h.src).filter(|r| now < r.grace_until);
            let Some(r) = r else { return Err(e) };
            if self.key_is_revoked(r.previous.as_bytes()) {
                return Err(e);
            }
            self.counters.auth_ops[1] += 1;
            frame.verify_with(&r.previous, self.params.auth)?;
            self.counters.count(Direction::Rx, Outcome::RotationGrace);
            via_previous = true;
        }
        // Epochs and the window change only after the signature holds, so forgeries
        // cannot move them.
        let known = self.peer_epoch(h.src);
        if h.src_epoch < known {
            return Err(WireError::StaleEpoch); // an earlier boot of the sender
        }
        if h.src_epoch > known {
            // The sender restarted: a new boot, a fresh window.
            self.peer_epochs.insert(h.src, h.src_epoch);
            self.replay.remove(&h.src);
            self.update.forget(h.src);
            // Its new boot may run another build: it attests again before it routes.
            self.attest.forget(h.src);
            self.routing.unadmit(h.src);
            // A cell neighbour rebooted with a fresh view (one its peers had not yet
            // declared dead, or it would be caught up as below): catch it up. Neighbours
            // only, so a quick reboot costs a few frames per link, not one per member.
            if from == h.src && self.membership.is_member(h.src) {
                self.sync_membership(now, h.src);
            }
        }
        let bound_to = match h.dst {
            Dest::Node(_) | Dest::Link => self.boot_epoch,
            // No single receiver to bind to (no protocol sends these today).
            Dest::Cell { .. } | Dest::Cluster { .. } | Dest::Layer { .. } => 0,
        };
        if h.dst_epoch != bound_to {
            // Captured before our restart, or sent by a peer that has not heard of it.
            self.boot_notice(now, h.src);
            return Err(WireError::StaleEpoch);
        }
        // A rotated key gets a window of its own from its first frame on: sequence numbers
        // pushed up under the previous key (by a thief holding it, say) cannot silence the
        // new key's frames; the previous key's frames keep the old window for their grace.
        let window = match self.rotated.get_mut(&h.src) {
            Some(r) if via_previous && r.old_window.is_some() => r.old_window.as_mut(),
            Some(r) if !via_previous && r.old_window.is_none() => {
                r.old_window = Some(self.replay.remove(&h.src).unwrap_or_default());
                None
            }
            _ => None,
        };
        let fresh = match window {
            Some(w) => w.accept(h.seq),
            None => self.replay.entry(h.src).or_default().accept(h.seq),
        };
        if !fresh {
            return Err(WireError::Replay);
        }
        Ok(())
    }

    /// The boot epoch we last heard from `peer`.
    fn peer_epoch(&self, peer: u32) -> u32 {
        self.peer_epochs
            .get(&peer)
            .copied()
            .unwrap_or(wire::FIRST_EPOCH)
    }

    /// Sends `peer`, whose view is behind ours (it rebooted, or it was cut off long enough
    /// to be declared dead), what it missed: see [`Membership::sync_for`]. At most once a
    /// second per peer, so its frames cannot make us a traffic amplifier.
    fn sync_membership(&mut self, now: Instant, peer: u32) {
        let second = Duration::from_secs(1);
        if self
            .synced
            .get(&peer)
            .is_some_and(|t| now.saturating_since(*t) < second)
        {
            return;
        }
        self.synced.retain(|_, t| now.saturating_since(*t) < second);
        self.synced.insert(peer, now);
        for updates in self.membership.sync_for(peer) {
            self.fx.send(Dest::Node(peer), Payload::Gossip { updates });
        }
    }

    /// Tells `peer` our boot epoch (it sent a frame bound to another), at most once a
    /// second per peer so replayed frames cannot make us a traffic amplifier.
    fn boot_notice(&mut self, now: Instant, peer: u32) {
        let due = self
            .boot_notices
            .get(&peer)
            .is_none_or(|t| now.saturating_since(*t) >= Duration::from_secs(1));
        if due {
            self.boot_notices.insert(peer, now);
            self.fx.send(Dest::Node(peer), Payload::Boot);
        }
    }

    fn forward(&mut self, now: Instant, from: u32, bytes: &[u8], ttl: u8, dst: Dest) {
        if dst == Dest::Link {
            return;
        }
        if self.byzantine.drop_forwarding {
            self.counters
                .count(Direction::Fwd, Outcome::ByzantineDropped);
            return;
        }
        if self.update.defect_drops() {
            return; // a defective build (issue 18's rollout-bad): silent, like the bug
        }
        if ttl <= 1 {
            self.counters.count(Direction::Fwd, Outcome::TtlExpired);
            return;
        }
        let Some(next) = self.routing.next_hop(dst) else {
            self.counters.count(Direction::Fwd, Outcome::NoRoute);
            return;
        };
        if next == from && self.routing.neighbors().count() > 1 {
            // Would bounce straight back: a transient loop while routes converge.
            self.counters.count(Direction::Fwd, Outcome::Loop);
            return;
        }
        let mut b = bytes.to_vec();
        wire::set_ttl(&mut b, ttl - 1);
        self.counters.count(Direction::Fwd, Outcome::Ok);
        self.emit(now, next, b);
    }

    fn dispatch(&mut self, now: Instant, link: u32, src: u32, p: Payload) {
        let mut lied: Vec<u32> = Vec::new();
        let mut convicted: Vec<u32> = Vec::new();
        let mut acked: Vec<Dot> = Vec::new();
        let mut heat_msg: Option<Vec<u8>> = None;
        let mut bft_msg: Option<Vec<u8>> = None;
        let mut order: Option<Vec<u8>> = None;
        let mut trust_msg: Option<Vec<u8>> = None;
        let mut store_msg: Option<Vec<u8>> = None;
        let phys = match p {
            Payload::Kv(_) => self.physical_ns(now),
            _ => 0,
        };
        // A member we hold dead speaks (its frame is authentic): it rebooted, or a cut
        // kept it away; either way its view missed what happened meanwhile.
        if self.membership.state_of(src) == Some(MemberState::Dead)
            && !self.routing.is_quarantined(src)
        {
            self.sync_membership(now, src);
        }
        let mut fx = std::mem::take(&mut self.fx);
        let routing = &self.routing;
        let rtt = |n: u32| routing.one_way(n).mul_f64(3.0);
        let m = &mut self.membership;
        let t = &mut self.timers;
        let in_cell = m.is_member(src);
        let mut p = match p {
            // Signed claims (see `claims`): forged ones are evidence against the sender.
            p if self.params.watch.signed_claims => {
                let (rotated, dir) = (&self.rotated, &self.dir);
                let (p, o) = crate::claims::open(
                    p,
                    |n| key_of(rotated, dir, n),
                    self.params.auth,
                    &mut self.claim_sigs,
                );
                self.counters
                    .add(Direction::Watch, Outcome::ClaimForged, o.forged as u64);
                self.counters
                    .add(Direction::Watch, Outcome::ClaimUnsigned, o.unsigned as u64);
                if o.forged > 0 && self.watch.on_forged_claim(now, src) {
                    lied.push(src);
                }
                p
            }
            Payload::Signed { inner, .. } => *inner,
            p => p,
        };
        if let Some(updates) = p.updates_mut() {
            // Claims made by a node we quarantine or hold evidence against are not
            // believed, whoever relays them.
            let w = &self.watch;
            updates.retain(|u| {
                !self.routing.is_quarantined(u.from) && !w.evidence().contains_key(&u.from)
            });
            // First-hand claims that we are suspect or dead (see `watch`).
            let me = self.id;
            for u in updates.iter() {
                if u.node == me && u.from == src && u.state != MemberState::Alive {
                    self.counters.count(Direction::Watch, Outcome::AccusedUs);
                    if self
                        .watch
                        .on_claim(now, src, u.incarnation, self.incarnation_since)
                    {
                        lied.push(src);
                    }
                }
            }
        }
        match p {
            Payload::Ping { probe, updates } => {
                m.apply(now, &updates, &mut fx, t);
                if in_cell {
                    m.on_ping(src, probe, &mut fx);
                }
            }
            Payload::Ack { probe, updates } => {
                m.apply(now, &updates, &mut fx, t);
                m.on_ack(src, probe, &mut fx);
            }
            Payload::PingReq {
                probe,
                target,
                updates,
            } => {
                m.apply(now, &updates, &mut fx, t);
                if in_cell && m.is_member(target) {
                    m.on_ping_req(now, src, (probe, target), &rtt, &mut fx, t);
                }
            }
            Payload::Nack { probe } => m.on_nack(probe),
            Payload::Gossip { updates } => m.apply(now, &updates, &mut fx, t),
            Payload::Route { full, entries } => {
                if full && entries.is_empty() {
                    self.routing.table_requested(link);
                } else {
                    self.routing.on_advert(link, now, &entries);
                    self.update.advert_heard(link);
                }
            }
            Payload::Summary(s) => {
                let fresher = self
                    .summaries
                    .get(&s.scope)
                    .is_none_or(|(_, old, _)| s.version > old.version);
                if fresher && self.dir.gateway_of(s.scope).is_some() {
                    self.summaries.insert(s.scope, (src, s, now));
                }
            }
            Payload::Kv(bytes) => {
                if in_cell {
                    let r = self.kv.receive(phys, src, &bytes);
                    for (to, b) in r.sends {
                        fx.send(Dest::Node(to), Payload::Kv(b));
                    }
                    if !r.acked.is_empty() {
                        acked = r.acked;
                    }
                    for reason in r.refused {
                        self.counters.count(Direction::Kv, Outcome::from(reason));
                    }
                    self.counters
                        .add(Direction::Kv, Outcome::Applied, r.applied);
                }
            }
            Payload::Time(data) => match self.time.as_mut() {
                Some(tl) => match TimeMessage::decode(&data) {
                    Ok(msg) => tl.clock.handle(now.as_nanos(), src, msg, &mut tl.out),
                    Err(_) => self.counters.count(Direction::Rx, Outcome::TimeMalformed),
                },
                None => fx.events.push(Event::TimePayload { src, data }),
            },
            Payload::Data(data) => {
                self.counters.count(Direction::App, Outcome::Delivered);
                if self.bft_refuses(src) || self.trust_refuses(src) {
                    self.counters
                        .count(Direction::App, Outcome::RevokedDelivered);
                }
                fx.events.push(Event::Delivered { src, data })
            }
            Payload::Watch { nonce, reply } => {
                if reply {
                    self.watch.on_reply(src, nonce);
                } else {
                    // Back over the link the echo came in on: an audit tests the audited
                    // neighbour's hand-over both ways, not whatever route we would take.
                    let p = Payload::Watch { nonce, reply: true };
                    fx.sends.push((Dest::Node(src), Some(link), p));
                }
            }
            Payload::Accuse { node } => {
                self.counters
                    .count(Direction::Watch, Outcome::AccusationsHeard);
                // Votes only from the accused's cell or its cluster's gateways.
                if !crate::watch::may_accuse(&self.dir, src, node) {
                    self.counters
                        .count(Direction::Watch, Outcome::AccusationRefused);
                } else if self.agreed_by_group(node) {
                    // The group's log decides: a vote counts only as an entry in it.
                } else if self.watch.on_accuse(now, src, node) {
                    convicted.push(node);
                }
            }
            // Its news, the sender's boot epoch, was taken from the header on acceptance.
            // A neighbour that rejected our boot's first frames as bound to its earlier boot
            // lost our table request with them: ask again, once, unless it advertised to us
            // already (issue 18: an update restarts tiles one after another).
            Payload::Boot => {
                if src == link && self.update.table_lost(link) {
                    let ask = Payload::Route {
                        full: true,
                        entries: Vec::new(),
                    };
                    fx.send_link(link, ask);
                }
            }
            // Unwrapped above.
            Payload::Signed { .. } => {}
            Payload::TreeHeads(heads) => {
                if self.params.watch.log_heads && in_cell {
                    let (rotated, dir) = (&self.rotated, &self.dir);
                    let key = |n| key_of(rotated, dir, n);
                    for signer in self.cell_log.observe(self.id, &heads, key) {
                        self.counters.count(Direction::Watch, Outcome::SplitView);
                        if self.watch.on_split_view(now, signer) {
                            lied.push(signer);
                        }
                    }
                }
            }
            Payload::Heat(bytes) => heat_msg = Some(bytes),
            Payload::Bft(bytes) => bft_msg = Some(bytes),
            // Only a neighbour's own hello says what it speaks.
            Payload::Hello { min, max, reply } if src == link => {
                if let Some(answer) = self.update.on_hello(link, min, max, reply) {
                    fx.sends.push((Dest::Link, Some(link), answer));
                }
            }
            Payload::Order(bytes) => order = Some(bytes),
            // Only a neighbour's own attestation, of its current boot.
            Payload::Attest {
                build,
                config,
                reply,
                sig,
            } if src == link => {
                let m = crate::update::attest::Measurement { build, config };
                self.on_attest(now, link, m, reply, &sig, &mut fx);
            }
            Payload::Attest { .. } => {}
            Payload::Trust(bytes) => trust_msg = Some(bytes),
            Payload::Hello { .. } => {}
            Payload::Store(bytes) => store_msg = Some(bytes),
        }
        // Membership deaths of neighbours take their links down at once — unless the
        // neighbour spoke to us within its keepalive interval: then the claim is wrong (a
        // liar's, or stale) and taking the link down would only hurt routing.
        let dead_links: Vec<u32> = fx
            .events
            .iter()
            .filter_map(|e| match e {
                Event::MemberChanged {
                    node,
                    state: MemberState::Dead,
                    ..
                } => Some(*node),
                _ => None,
            })
            .filter(|n| self.routing.is_neighbor(*n) && !self.routing.heard_lately(*n, now))
            .collect();
        for n in dead_links {
            self.routing.link_down(n);
        }
        let inc = self.membership.incarnation();
        if inc != self.incarnation_since.0 {
            self.incarnation_since = (inc, now);
        }
        self.fx = fx;
        for s in lied {
            self.on_evidence(now, s);
        }
        for s in convicted {
            self.convict(now, s, now.as_nanos());
        }
        if !acked.is_empty() {
            self.on_put_acks(src, &acked);
        }
        if let Some(b) = heat_msg {
            self.on_heat_msg(now, src, &b);
        }
        if let Some(b) = bft_msg {
            self.on_bft_msg(now, src, &b);
        }
        if let Some(b) = order {
            // A refused order from a neighbour is counted by the kill switch, no more.
            let _ = self.on_order(now, &b, Some(link));
        }
        if let Some(b) = trust_msg {
            // A refused entry from a neighbour is counted (`trust_refused`), no more.
            let _ = self.on_trust_entry(&b, Some(link));
        }
        if let Some(b) = store_msg {
            self.on_store_msg(now, src, &b);
        }
        self.flush_clock();
        if self.routing.has_pending_update() {
            self.arm_triggered(now);
        }
    }

    /// Neighbour `n`'s attestation (see [`crate::update::attest`]): checked under its key
    /// for its current boot; an approved build admits it to routing when we require
    /// attestation. One that is not a reply is answered with ours.
    fn on_attest(
        &mut self,
        now: Instant,
        n: u32,
        m: crate::update::attest::Measurement,
        reply: bool,
        sig: &[u8; 64],
        fx: &mut Effects,
    ) {
        use crate::update::attest::Verdict;
        let Some(key) = self.peer_key(n) else {
            return;
        };
        let epoch = self.peer_epoch(n);
        let trust = self.trust.as_ref();
        self.counters.auth_ops[1] += 1;
        let verdict = self
            .attest
            .on_attest(n, epoch, &key, self.params.auth, m, sig, |h| {
                trust.is_some_and(|t| t.is_approved(h))
            });
        match verdict {
            Verdict::Forged => {
                self.counters.count(Direction::Watch, Outcome::AttestForged);
                return;
            }
            Verdict::Unapproved => {
                self.counters
                    .count(Direction::Watch, Outcome::AttestUnapproved);
                if self.attest.required() {
                    // Out of routing, should it have been in (only a key that signs two
                    // measurements in one boot could get here from an admitted peer).
                    self.routing.unadmit(n);
                    fx.events.push(Event::AttestRefused {
                        node: n,
                        build: m.build,
                    });
                }
            }
            Verdict::Admitted { newly } => {
                if newly {
                    self.counters
                        .count(Direction::Watch, Outcome::AttestAdmitted);
                    if self.attest.required() {
                        self.routing.admit(n, now);
                    }
                }
            }
        }
        if !reply {
            if let Some(p) = self.attest.payload(true) {
                fx.sends.push((Dest::Link, Some(n), p));
            }
        }
    }

    /// A runtime order (issue 18, [`crate::update::dark`]) from the operator or from
    /// neighbour `from`: relayed to our neighbours inside its scope, then obeyed.
    fn on_order(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: Option<u32>,
    ) -> Result<(), crate::update::dark::OrderError> {
        let Some(o) = self.update.dark.apply(bytes, self.id, &self.addr, now)? else {
            return Ok(());
        };
        let inside: Vec<u32> = self
            .routing
            .neighbors()
            .filter(|n| Some(*n) != from)
            .filter(|n| self.dir.get(*n).is_some_and(|e| o.holds(*n, &e.addr)))
            .collect();
        for n in inside {
            self.fx.send_link(n, Payload::Order(bytes.to_vec()));
        }
        Ok(())
    }

    fn arm_triggered(&mut self, now: Instant) {
        if self.timers.get(TimerKey::RouteTriggered).is_none() {
            self.timers.set(
                TimerKey::RouteTriggered,
                now + self.params.route.triggered_delay,
            );
        }
    }

    /// The `steal_key` fault: a data frame signed with the stolen key, as its owner, to
    /// each other member of the owner's cell, routed like our own frames. Receivers cannot
    /// tell it from the owner's until their group revokes the key.
    fn send_forged(&mut self, now: Instant) {
        let Some((victim, auth)) = self.stolen.as_ref().map(|s| (s.node, self.params.auth)) else {
            return;
        };
        let Some(va) = self.dir.get(victim).map(|e| e.addr) else {
            return;
        };
        let me = self.id;
        let payload = Payload::Data(b"forged".to_vec());
        for to in self
            .dir
            .ids_where(|a| a.same_cell(&va))
            .into_iter()
            .filter(|t| *t != victim && *t != me)
        {
            let dst = Dest::Node(to);
            let Some(next) = self.routing.next_hop(dst) else {
                self.counters.count(Direction::Tx, Outcome::NoRoute);
                continue;
            };
            let hlc = self.next_hlc(now);
            let (src_epoch, dst_epoch) = (self.peer_epoch(victim), self.peer_epoch(to));
            let version = self.update.send_version(dst, next);
            let Some(st) = self.stolen.as_mut() else {
                return;
            };
            st.seq += 1;
            let header = Header {
                kind: payload.kind(),
                ttl: wire::DEFAULT_TTL,
                src: victim,
                dst,
                seq: st.seq,
                hlc,
                src_epoch,
                dst_epoch,
            };
            let bytes = wire::encode_versioned(&header, &payload, &st.key, auth, version);
            self.counters.count(Direction::Tx, Outcome::Forged);
            self.emit(now, next, bytes);
        }
    }

    fn next_hlc(&mut self, now: Instant) -> u64 {
        // Hybrid of physical (emulated ns) and logical time in one u64: never behind the
        // clock, never behind anything received, strictly increasing.
        let phys = self.physical_ns(now);
        self.hlc = self.hlc.saturating_add(1).max(phys);
        self.hlc
    }

    fn emit(&mut self, now: Instant, to: u32, bytes: Vec<u8>) {
        // Panic-to-dark: every datagram leaves through here.
        if !self.update.dark.may_emit(now, bytes.get(3).copied()) {
            return;
        }
        self.counters.add_bytes(Direction::Tx, bytes.len());
        self.routing.sent(to, now);
        self.pending.push_back(Transmit { to, bytes });
    }

    fn flush_sends(&mut self, now: Instant) {
        let sends = std::mem::take(&mut self.fx.sends);
        for (dst, via, mut payload) in sends {
            let liar = self.byzantine.lie_membership || self.byzantine.forge_accuser;
            if liar && payload.updates_mut().is_some() {
                let lies = self.lies();
                if let Some(updates) = payload.updates_mut() {
                    updates.truncate(wire::MAX_UPDATES - lies.len());
                    updates.extend(lies);
                }
            }
            if self.params.watch.signed_claims {
                payload = crate::claims::seal(
                    payload,
                    self.id,
                    &self.key,
                    self.params.auth,
                    &self.claim_sigs,
                    self.byzantine.forge_accuser,
                );
            }
            let next = match (dst, via) {
                (Dest::Link, Some(n)) => Some(n),
                (_, Some(n)) if !self.routing.is_quarantined(n) => Some(n),
                (d, _) if self.routing.is_local(d) => None,
                (d, _) => self.routing.next_hop(d),
            };
            let Some(next) = next else {
                self.counters.count(Direction::Tx, Outcome::NoRoute);
                continue;
            };
            self.seq += 1;
            let header = Header {
                kind: payload.kind(),
                ttl: if dst == Dest::Link {
                    1
                } else {
                    wire::DEFAULT_TTL
                },
                src: self.id,
                dst,
                seq: self.seq,
                hlc: self.next_hlc(now),
                src_epoch: self.boot_epoch,
                dst_epoch: match dst {
                    Dest::Node(d) => self.peer_epoch(d),
                    Dest::Link => self.peer_epoch(next),
                    Dest::Cell { .. } | Dest::Cluster { .. } | Dest::Layer { .. } => 0,
                },
            };
            let version = self.update.send_version(dst, next);
            let bytes =
                wire::encode_versioned(&header, &payload, &self.key, self.params.auth, version);
            self.counters.auth_ops[0] += 1;
            let acct = if dst == Dest::Link {
                Dest::Node(next)
            } else {
                dst
            };
            let workload = matches!(payload, Payload::Kv(_) | Payload::Data(_));
            self.routing.account(acct, bytes.len(), workload);
            *self
                .counters
                .by_kind_tx
                .entry(payload.kind_name())
                .or_default() += 1;
            self.counters.count(Direction::Tx, Outcome::Sent);
            self.emit(now, next, bytes);
        }
    }

    fn flush(&mut self, now: Instant, out: &mut Outbox) {
        if self.routing.has_pending_update() {
            self.arm_triggered(now);
        }
        self.flush_sends(now);
        if self.heat.is_some() {
            crate::heat::outbox::class_a_first(&mut self.pending);
        }
        for t in self.pending.drain(..) {
            if !out.push_transmit(t) {
                self.counters.count(Direction::Tx, Outcome::OutboxFull);
            }
        }
        for e in self.fx.events.drain(..) {
            out.push_event(e);
        }
        self.timers.end_call();
    }
}

// ---- Small-group BFT (issue 17): the glue between the node and `trust::bft`. ----
impl Node {
    /// Turns on small-group BFT: this node's group is its cell (every directory member
    /// with its address's cell, keys from the directory), frames of kind 30. Off unless
    /// called; call before the node has BFT work (an idle replica sets no timer). The
    /// error says why the group cannot be formed; nothing changes then.
    pub fn enable_bft(
        &mut self,
        params: crate::trust::bft::BftParams,
    ) -> Result<(), crate::trust::bft::BftError> {
        use crate::trust::bft::{Group, Replica};
        let me = self.addr;
        let ids = self.dir.ids_where(|a| a.same_cell(&me));
        let keys = ids
            .iter()
            .filter_map(|i| self.peer_key(*i).map(|k| (*i, k)))
            .collect();
        // The group id binds signatures to this cell: its lowest member id.
        let gid = ids.first().copied().unwrap_or(self.id);
        let group = Group::new(gid, keys, self.params.auth)?;
        if self.params.watch.bft_verdicts {
            let v =
                crate::trust::verdicts::Verdicts::new(self.id, &group, self.params.watch.quorum);
            self.verdicts = Some(Box::new(v));
        }
        let r = Replica::new(group, self.id, self.key.clone(), params)?;
        self.bft = Some(Box::new(r));
        if self.params.watch.bft_leases {
            self.leases = Some(Box::default());
        }
        self.sync_heat_modes();
        Ok(())
    }

    /// The BFT replica, when on.
    pub fn bft(&self) -> Option<&crate::trust::bft::Replica> {
        self.bft.as_deref()
    }

    /// The group's agreed quarantine verdicts (watch `bft_verdicts`), when on.
    pub fn verdicts(&self) -> Option<&crate::trust::verdicts::Verdicts> {
        self.verdicts.as_deref()
    }

    /// The cell's agreed heat lease table (trust option `bft_leases`), when on.
    pub fn lease_table(&self) -> Option<&crate::heat::grants::LeaseTable> {
        self.leases.as_deref()
    }

    /// Applies a decided lease grant to the agreed table (every member alike); the grant's
    /// holder takes or extends the lease when the table accepts it.
    fn apply_grant(&mut self, now: Instant, d: &crate::trust::bft::Decision) {
        use crate::heat::grants::Outcome;
        let (Some(t), Some(b)) = (self.leases.as_mut(), self.bft.as_ref()) else {
            return;
        };
        // A rejected grant is counted by the table and changes nothing.
        let Ok(o) = t.apply(&d.entry, b.group()) else {
            return;
        };
        if o.grant().holder != self.id {
            return;
        }
        let live = live_cell(self.id, &self.membership);
        let Some(h) = self.heat.as_mut() else { return };
        let mut sends = Vec::new();
        h.on_grant(
            now,
            o.grant(),
            matches!(o, Outcome::Renewed(_)),
            &live,
            &self.dir,
            &mut sends,
        );
        for (to, m) in sends {
            self.fx.send(Dest::Node(to), Payload::Heat(m.encode()));
        }
    }

    /// The nodes whose keys this node refuses: revoked by its cell's BFT group or by the
    /// authorities' threshold key, each once, in order.
    pub fn revoked_nodes(&self) -> Vec<u32> {
        self.bft_revoked
            .values()
            .copied()
            .chain(self.trust.iter().flat_map(|t| t.revoked_nodes()))
            .collect::<std::collections::BTreeSet<u32>>()
            .into_iter()
            .collect()
    }

    /// Keys our BFT group revoked, with the node each belonged to.
    pub fn bft_revoked(&self) -> &BTreeMap<[u8; 32], u32> {
        &self.bft_revoked
    }

    /// Whether the authorities revoked `src`'s directory key.
    fn trust_refuses(&self, src: u32) -> bool {
        match (self.trust.as_ref(), self.peer_key(src)) {
            (Some(t), Some(k)) => t.is_revoked(k.as_bytes()),
            _ => false,
        }
    }

    fn bft_refuses(&self, src: u32) -> bool {
        !self.bft_revoked.is_empty()
            && self
                .peer_key(src)
                .is_some_and(|k| self.bft_revoked.contains_key(k.as_bytes()))
    }

    /// Whether `key` was revoked, by the authorities or our BFT group.
    fn key_is_revoked(&self, key: &[u8; 32]) -> bool {
        self.bft_revoked.contains_key(key) || self.trust.as_ref().is_some_and(|t| t.is_revoked(key))
    }

    /// Applies a decided quarantine vote: a conviction or re-admission the whole group
    /// reaches at the same log slot.
    fn apply_verdict(&mut self, now: Instant, d: &crate::trust::bft::Decision) {
        use crate::trust::verdicts::Change;
        let (Some(v), Some(b)) = (self.verdicts.as_mut(), self.bft.as_ref()) else {
            return;
        };
        match v.apply(d.slot, &d.entry, b.group()) {
            Some(Change::Convicted { node, .. }) if node != self.id => {
                self.counters
                    .count(Direction::Watch, Outcome::VerdictAgreed);
                self.watch.record_agreed(now, node);
                self.convict(now, node, d.slot);
            }
            Some(Change::Readmitted { node, .. }) if node != self.id => {
                self.counters
                    .count(Direction::Watch, Outcome::VerdictAgreed);
                self.watch.end_agreed(node);
                self.readmit(node);
            }
            _ => {}
        }
    }

    fn on_bft_msg(&mut self, now: Instant, src: u32, bytes: &[u8]) {
        let Some(b) = self.bft.as_mut() else { return };
        let mut outs = Vec::new();
        // A refused message is counted by the replica (forged, not_member, malformed…).
        let _ = b.handle_bytes(now, src, bytes, &mut outs);
        self.bft_after(now, outs);
    }

    fn on_bft_tick(&mut self, now: Instant) {
        let Some(b) = self.bft.as_mut() else { return };
        let mut outs = Vec::new();
        b.handle_timeout(now, &mut outs);
        self.bft_after(now, outs);
    }

    /// Sends the replica's messages, applies new decisions, re-arms its timer.
    fn bft_after(&mut self, now: Instant, outs: Vec<crate::trust::bft::Out>) {
        use crate::trust::bft::Out;
        let Some(b) = self.bft.as_ref() else { return };
        let members: Vec<u32> = b.group().members().to_vec();
        for o in outs {
            match o {
                Out::To(to, m) => self.fx.send(Dest::Node(to), Payload::Bft(m.encode())),
                Out::All(m) => {
                    let bytes = m.encode();
                    for to in members.iter().copied().filter(|t| *t != self.id) {
                        self.fx.send(Dest::Node(to), Payload::Bft(bytes.clone()));
                    }
                }
            }
        }
        let Some(b) = self.bft.as_ref() else { return };
        let new: Vec<crate::trust::bft::Decision> = b.decided()[self.bft_applied..].to_vec();
        self.bft_applied += new.len();
        for d in new {
            // Every member checks a decided entry the same way: a quarantine vote (see
            // `trust::verdicts`), or a revocation naming a node and exactly its directory
            // key. Anything else is ordered but not applied.
            let Ok(e) = crate::trust::log::Entry::decode(&d.entry) else {
                continue;
            };
            if e.kind == crate::trust::log::EntryKind::QuarantineVerdict {
                self.apply_verdict(now, &d);
                continue;
            }
            if e.kind == crate::trust::log::EntryKind::LeaseGrant {
                self.apply_grant(now, &d);
                continue;
            }
            let key_ok = self
                .peer_key(e.subject)
                .is_some_and(|k| k.as_bytes()[..] == e.body[..]);
            if e.kind == crate::trust::log::EntryKind::Revocation && key_ok {
                let mut k = [0u8; 32];
                k.copy_from_slice(&e.body);
                self.bft_revoked.insert(k, e.subject);
                self.fx.events.push(Event::KeyRevokedByGroup {
                    node: e.subject,
                    slot: d.slot,
                });
            }
        }
        match self.bft.as_ref().and_then(|b| b.poll_timeout()) {
            Some(at) if self.timers.get(TimerKey::Bft) != Some(at) => {
                self.timers.set(TimerKey::Bft, at)
            }
            Some(_) => {}
            None => self.timers.cancel(TimerKey::Bft),
        }
    }
}

/// This node and the live members of its cell, ascending.
fn live_cell(me: u32, m: &Membership) -> Vec<u32> {
    let mut v: Vec<u32> = std::iter::once(me)
        .chain(
            m.active()
                .iter()
                .copied()
                .filter(|n| m.state_of(*n) == Some(MemberState::Alive)),
        )
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod footprint_tests {
    use super::*;

    /// Inline sizes of a tile's state (what `lightcone simulate` holds once per tile);
    /// `--nocapture` prints them. The per-peer replay window stays 24 bytes (a `u128`
    /// field made it 32) and a destination 8.
    #[test]
    fn inline_sizes_of_a_tile() {
        let sizes = [
            ("Node", std::mem::size_of::<Node>()),
            ("Membership", std::mem::size_of::<Membership>()),
            ("Routing", std::mem::size_of::<Routing>()),
            ("Watch", std::mem::size_of::<Watch>()),
            ("Replica", std::mem::size_of::<Replica>()),
            ("Counters", std::mem::size_of::<Counters>()),
            ("Params", std::mem::size_of::<Params>()),
            ("Effects", std::mem::size_of::<Effects>()),
            ("TimeLayer", std::mem::size_of::<Option<TimeLayer>>()),
            ("Timers", std::mem::size_of::<Timers>()),
            ("Byzantine", std::mem::size_of::<Byzantine>()),
            ("CellLog", std::mem::size_of::<crate::trust::CellLog>()),
            ("Versions", std::mem::size_of::<crate::update::Versions>()),
            ("ReplayWindow", std::mem::size_of::<ReplayWindow>()),
            (
                "Heat",
                std::mem::size_of::<Option<crate::heat::machine::Heat>>(),
            ),
            (
                "StoreTile",
                std::mem::size_of::<Option<crate::store::tile::StoreTile>>(),
            ),
            (
                "TrustStore",
                std::mem::size_of::<Option<crate::trust::threshold::TrustStore>>(),
            ),
            ("Replica(kv)", std::mem::size_of::<Replica>()),
            ("SigningKey", std::mem::size_of::<SigningKey>()),
            ("ChaCha8Rng", std::mem::size_of::<ChaCha8Rng>()),
            ("Watch", std::mem::size_of::<Watch>()),
            ("ClaimSigs", std::mem::size_of::<crate::claims::ClaimSigs>()),
            ("Build", std::mem::size_of::<crate::update::Build>()),
            ("Dest", std::mem::size_of::<Dest>()),
            ("Route", std::mem::size_of::<crate::routing::Route>()),
        ];
        for (name, s) in sizes {
            println!("size_of {name} = {s}");
        }
        assert_eq!(std::mem::size_of::<ReplayWindow>(), 24);
        assert_eq!(std::mem::size_of::<Dest>(), 8);
    }
}
