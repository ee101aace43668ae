//! Datagram counters of a node, keyed by enums: what `/state` shows as
//! `datagrams.{direction}.{outcome}` and `bytes.{direction}`, and the agent exports as
//! `lightcone_datagrams_total{direction, outcome}`. The label strings are [`Direction::as_str`]
//! and [`Outcome::as_str`], the same words as when the keys were strings.

use std::collections::BTreeMap;

use crate::kv::KvRefusal;
use crate::wire::WireError;

/// The `direction` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Rx,
    Tx,
    Fwd,
    App,
    Kv,
    Watch,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
            Direction::Fwd => "fwd",
            Direction::App => "app",
            Direction::Kv => "kv",
            Direction::Watch => "watch",
        }
    }
}

/// The `outcome` label: what happened to a datagram (or a write, or a watch verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Received,
    Ok,
    Stopped,
    UnknownLink,
    Quarantined,
    TimeMalformed,
    Truncated,
    Oversize,
    BadMagic,
    UnknownVersion,
    UnknownKind,
    BadDestination,
    BadLength,
    Malformed,
    UnknownSender,
    BadSignature,
    Replay,
    StaleEpoch,
    Sent,
    NoRoute,
    OutboxFull,
    ByzantineDropped,
    TtlExpired,
    Loop,
    Delivered,
    Applied,
    CellAcknowledged,
    PutRetransmitted,
    CellTimedOut,
    KvMalformed,
    KvHlcAhead,
    KvStoreRefused,
    KvDuplicate,
    KvDeliveryRefused,
    Evidence,
    AccusedUs,
    AccusationsHeard,
    AccusationRefused,
    Readmitted,
    ClaimForged,
    ClaimUnsigned,
    SplitView,
    KeyRevoked,
    /// Our quarantine vote submitted to the cell's BFT group (watch `bft_verdicts`).
    VoteSubmitted,
    /// A conviction or re-admission the group's log decided, applied here.
    VerdictAgreed,
    /// App data delivered from a node whose key our BFT group had revoked (`app`): never,
    /// unless the refusal of revoked keys fails. Counted apart from that refusal, at
    /// delivery, so a regression shows in experiments (`revoked_key_accepted`).
    RevokedDelivered,
    /// A frame signed with a stolen key (`tx`, the `steal_key` test fault).
    Forged,
    /// A threshold-signed trust entry new here, applied and relayed (`watch`).
    TrustApplied,
    /// A newer certificate replaced a node's key here (issue 17's key rotation, `watch`).
    KeyRotated,
    /// A frame verified under a rotated peer's previous key, inside its grace (`rx`).
    RotationGrace,
    /// A trust entry already held (the flood's echo; not relayed) (`watch`).
    TrustDuplicate,
    /// A trust entry refused: malformed, or not signed by the authorities' threshold key
    /// (`watch`).
    TrustRefused,
    /// A neighbour's attestation of an approved build, accepted (`watch`, issue 18).
    AttestAdmitted,
    /// A valid attestation of a build the authorities did not approve (`watch`).
    AttestUnapproved,
    /// An attestation whose signature does not verify for its sender's current boot
    /// (`watch`).
    AttestForged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Received => "received",
            Outcome::Ok => "ok",
            Outcome::Stopped => "stopped",
            Outcome::UnknownLink => "unknown_link",
            Outcome::Quarantined => "quarantined",
            Outcome::TimeMalformed => "time_malformed",
            Outcome::Truncated => "truncated",
            Outcome::Oversize => "oversize",
            Outcome::BadMagic => "bad_magic",
            Outcome::UnknownVersion => "unknown_version",
            Outcome::UnknownKind => "unknown_kind",
            Outcome::BadDestination => "bad_destination",
            Outcome::BadLength => "bad_length",
            Outcome::Malformed => "malformed",
            Outcome::UnknownSender => "unknown_sender",
            Outcome::BadSignature => "bad_signature",
            Outcome::Replay => "replay",
            Outcome::StaleEpoch => "stale_epoch",
            Outcome::Sent => "sent",
            Outcome::NoRoute => "no_route",
            Outcome::OutboxFull => "outbox_full",
            Outcome::ByzantineDropped => "byzantine_dropped",
            Outcome::TtlExpired => "ttl_expired",
            Outcome::Loop => "loop",
            Outcome::Delivered => "delivered",
            Outcome::Applied => "applied",
            Outcome::CellAcknowledged => "cell_acknowledged",
            Outcome::PutRetransmitted => "put_retransmitted",
            Outcome::CellTimedOut => "cell_timed_out",
            Outcome::KvMalformed => "kv_malformed",
            Outcome::KvHlcAhead => "kv_hlc_ahead",
            Outcome::KvStoreRefused => "kv_store_refused",
            Outcome::KvDuplicate => "kv_duplicate",
            Outcome::KvDeliveryRefused => "kv_delivery_refused",
            Outcome::Evidence => "evidence",
            Outcome::AccusedUs => "accused_us",
            Outcome::AccusationsHeard => "accusations_heard",
            Outcome::AccusationRefused => "accusation_refused",
            Outcome::Readmitted => "readmitted",
            Outcome::ClaimForged => "claim_forged",
            Outcome::ClaimUnsigned => "claim_unsigned",
            Outcome::SplitView => "split_view",
            Outcome::KeyRevoked => "key_revoked",
            Outcome::VoteSubmitted => "vote_submitted",
            Outcome::VerdictAgreed => "verdict_agreed",
            Outcome::RevokedDelivered => "revoked_delivered",
            Outcome::Forged => "forged",
            Outcome::TrustApplied => "trust_applied",
            Outcome::KeyRotated => "key_rotated",
            Outcome::RotationGrace => "rotation_grace",
            Outcome::TrustDuplicate => "trust_duplicate",
            Outcome::TrustRefused => "trust_refused",
            Outcome::AttestAdmitted => "attest_admitted",
            Outcome::AttestUnapproved => "attest_unapproved",
            Outcome::AttestForged => "attest_forged",
        }
    }
}

impl From<&WireError> for Outcome {
    fn from(e: &WireError) -> Outcome {
        match e {
            WireError::Truncated => Outcome::Truncated,
            WireError::Oversize => Outcome::Oversize,
            WireError::BadMagic => Outcome::BadMagic,
            WireError::UnknownVersion(_) => Outcome::UnknownVersion,
            WireError::UnknownKind(_) => Outcome::UnknownKind,
            WireError::BadDestination(_) => Outcome::BadDestination,
            WireError::BadLength => Outcome::BadLength,
            WireError::Malformed => Outcome::Malformed,
            WireError::UnknownSender => Outcome::UnknownSender,
            WireError::BadSignature => Outcome::BadSignature,
            WireError::Replay => Outcome::Replay,
            WireError::StaleEpoch => Outcome::StaleEpoch,
        }
    }
}

impl From<KvRefusal> for Outcome {
    fn from(r: KvRefusal) -> Outcome {
        match r {
            KvRefusal::Malformed => Outcome::KvMalformed,
            KvRefusal::HlcAhead => Outcome::KvHlcAhead,
            KvRefusal::StoreRefused => Outcome::KvStoreRefused,
            KvRefusal::Duplicate => Outcome::KvDuplicate,
            KvRefusal::DeliveryRefused => Outcome::KvDeliveryRefused,
        }
    }
}

/// Datagram counters: (direction, outcome) → count, bytes per direction, and datagrams
/// sent per payload kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams: BTreeMap<(Direction, Outcome), u64>,
    pub bytes: BTreeMap<Direction, u64>,
    pub by_kind_tx: BTreeMap<&'static str, u64>,
    /// Frame authentication operations: `[signed, verified]` (what the digital twin's
    /// modelled crypto accounts for).
    pub auth_ops: [u64; 2],
}

impl Counters {
    pub(crate) fn count(&mut self, dir: Direction, outcome: Outcome) {
        self.add(dir, outcome, 1);
    }
    pub(crate) fn add(&mut self, dir: Direction, outcome: Outcome, n: u64) {
        *self.datagrams.entry((dir, outcome)).or_default() += n;
    }
    pub(crate) fn add_bytes(&mut self, dir: Direction, n: usize) {
        *self.bytes.entry(dir).or_default() += n as u64;
    }
    pub fn get(&self, dir: Direction, outcome: Outcome) -> u64 {
        self.datagrams.get(&(dir, outcome)).copied().unwrap_or(0)
    }
    /// Every datagram counter with its label strings (direction, outcome).
    pub fn labelled(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.datagrams
            .iter()
            .map(|((d, o), v)| (d.as_str(), o.as_str(), *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label strings are the metric label values dashboards and the runner read.
    #[test]
    fn labels_keep_their_words() {
        let all = [
            (Outcome::Received, "received"),
            (Outcome::Ok, "ok"),
            (Outcome::Stopped, "stopped"),
            (Outcome::UnknownLink, "unknown_link"),
            (Outcome::Quarantined, "quarantined"),
            (Outcome::TimeMalformed, "time_malformed"),
            (Outcome::Truncated, "truncated"),
            (Outcome::Oversize, "oversize"),
            (Outcome::BadMagic, "bad_magic"),
            (Outcome::UnknownVersion, "unknown_version"),
            (Outcome::UnknownKind, "unknown_kind"),
            (Outcome::BadDestination, "bad_destination"),
            (Outcome::BadLength, "bad_length"),
            (Outcome::Malformed, "malformed"),
            (Outcome::UnknownSender, "unknown_sender"),
            (Outcome::BadSignature, "bad_signature"),
            (Outcome::Replay, "replay"),
            (Outcome::StaleEpoch, "stale_epoch"),
            (Outcome::Sent, "sent"),
            (Outcome::NoRoute, "no_route"),
            (Outcome::OutboxFull, "outbox_full"),
            (Outcome::ByzantineDropped, "byzantine_dropped"),
            (Outcome::TtlExpired, "ttl_expired"),
            (Outcome::Loop, "loop"),
            (Outcome::Delivered, "delivered"),
            (Outcome::Applied, "applied"),
            (Outcome::CellAcknowledged, "cell_acknowledged"),
            (Outcome::PutRetransmitted, "put_retransmitted"),
            (Outcome::CellTimedOut, "cell_timed_out"),
            (Outcome::KvMalformed, "kv_malformed"),
            (Outcome::KvHlcAhead, "kv_hlc_ahead"),
            (Outcome::KvStoreRefused, "kv_store_refused"),
            (Outcome::KvDuplicate, "kv_duplicate"),
            (Outcome::KvDeliveryRefused, "kv_delivery_refused"),
            (Outcome::Evidence, "evidence"),
            (Outcome::AccusedUs, "accused_us"),
            (Outcome::AccusationsHeard, "accusations_heard"),
            (Outcome::AccusationRefused, "accusation_refused"),
            (Outcome::Readmitted, "readmitted"),
            (Outcome::ClaimForged, "claim_forged"),
            (Outcome::ClaimUnsigned, "claim_unsigned"),
            (Outcome::SplitView, "split_view"),
            (Outcome::KeyRevoked, "key_revoked"),
            (Outcome::VoteSubmitted, "vote_submitted"),
            (Outcome::VerdictAgreed, "verdict_agreed"),
            (Outcome::RevokedDelivered, "revoked_delivered"),
            (Outcome::Forged, "forged"),
            (Outcome::TrustApplied, "trust_applied"),
            (Outcome::KeyRotated, "key_rotated"),
            (Outcome::RotationGrace, "rotation_grace"),
            (Outcome::TrustDuplicate, "trust_duplicate"),
            (Outcome::TrustRefused, "trust_refused"),
            (Outcome::AttestAdmitted, "attest_admitted"),
            (Outcome::AttestUnapproved, "attest_unapproved"),
            (Outcome::AttestForged, "attest_forged"),
        ];
        for (o, s) in all {
            assert_eq!(o.as_str(), s);
        }
        for e in [
            WireError::BadMagic,
            WireError::Replay,
            WireError::StaleEpoch,
            WireError::UnknownVersion(9),
        ] {
            assert_eq!(Outcome::from(&e).as_str(), e.reason());
        }
        assert_eq!(Direction::Watch.as_str(), "watch");
        let kv = [
            (KvRefusal::Malformed, "kv_malformed"),
            (KvRefusal::HlcAhead, "kv_hlc_ahead"),
            (KvRefusal::StoreRefused, "kv_store_refused"),
            (KvRefusal::Duplicate, "kv_duplicate"),
            (KvRefusal::DeliveryRefused, "kv_delivery_refused"),
        ];
        for (r, s) in kv {
            assert_eq!(Outcome::from(r).as_str(), s);
        }
    }
}
