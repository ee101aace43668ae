//! Emulated time as the core sees it.
//!
//! The core never reads a clock (STYLE 1): every call into [`crate::node::Node`] carries
//! `now`, an [`Instant`] in emulated nanoseconds since the lab's epoch. The tokio driver
//! derives it from real elapsed time × `time_scale`; the harness advances it virtually.

use std::collections::BTreeMap;
use std::ops::{Add, Sub};
use std::time::Duration;

use lightcone_timing::{CoordTimestamp, TimeSource};
use serde::Serialize;

use crate::wire::WireStamp;

/// A point in emulated time: nanoseconds since the lab's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_nanos(ns: u64) -> Self {
        Instant(ns)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ns))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl std::fmt::Display for Instant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}

/// The timers of a node. Each key has at most one deadline; a stale expiry is a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TimerKey {
    ProbeTick,
    ProbeTimeout,
    IndirectTimeout,
    Suspicion,
    ForwardSweep,
    Gossip,
    Reclaim,
    KvRepair,
    RouteHello,
    RouteTriggered,
    RouteRefresh,
    Summary,
    /// The time layer's next sync poll or pulsar fix ([`NodeClock::next_timeout_ns`](lightcone_timing::NodeClock::next_timeout_ns)).
    Clock,
    /// Neighbourhood watch: judge and start forwarding audits, repeat accusations.
    Watch,
    /// `cell` puts awaiting acks: the next retransmission or timeout.
    KvAck,
    /// The thermal subsystem's round (issue 15): model step, descriptors, summaries, leases.
    Heat,
    /// Small-group BFT's round timer (issue 17; armed only while the group has work).
    Bft,
    /// The object store's round (issue 16): liveness news, repairs, timeouts.
    Store,
    /// A key rotation's switch to the new signing key, and the end of a rotated peer key's
    /// grace (issue 17).
    KeySwitch,
}

/// Most (key, deadline) places [`Timers`] remembers.
const MAX_REMEMBERED_DEADLINES: usize = 4096;

/// The node's timer table: the one owner of its deadlines (drivers ask
/// [`Node::poll_timeout`](crate::node::Node::poll_timeout) instead of keeping a copy).
///
/// Equal deadlines fire in the order they were set, call by call (timers set during one
/// call to the node in [`TimerKey`] order), a timer set to a deadline it was already given
/// once (and that has not passed) keeping its first place: the order the drivers' own
/// tables fired them in before the node owned the only table (one queue entry per key set,
/// valid while the key still had that deadline). Each call has an order stamp: the node's
/// own count of calls, or one the driver gives
/// ([`Node::set_call_order`](crate::node::Node::set_call_order)) to interleave many nodes.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    /// Deadline and its order stamp.
    slots: BTreeMap<TimerKey, (Instant, u64)>,
    /// The current call's order stamp.
    order: u64,
    /// The stamp of the first call that set each (key, deadline) not yet fired or passed.
    /// Bounded: passed deadlines are dropped at the start of every call, and a key is given
    /// a handful of future deadlines at most.
    first_set: BTreeMap<(TimerKey, Instant), u64>,
}

impl Timers {
    /// Entries held, per structure (see [`crate::Node::footprint`]).
    pub fn footprint(&self, out: &mut Vec<(&'static str, usize)>) {
        out.push(("timers.slots", self.slots.len()));
        out.push(("timers.first_set", self.first_set.len()));
    }
    pub fn set(&mut self, key: TimerKey, at: Instant) {
        if self.first_set.len() >= MAX_REMEMBERED_DEADLINES {
            // Forget superseded deadlines (only their place among equal deadlines is lost).
            let slots = &self.slots;
            self.first_set
                .retain(|(k, t), s| slots.get(k) == Some(&(*t, *s)));
        }
        let stamp = *self.first_set.entry((key, at)).or_insert(self.order);
        self.slots.insert(key, (at, stamp));
    }
    pub fn cancel(&mut self, key: TimerKey) {
        self.slots.remove(&key);
    }
    pub fn get(&self, key: TimerKey) -> Option<Instant> {
        self.slots.get(&key).map(|(at, _)| *at)
    }
    /// True (and the slot cleared) when `key` is really due at `now`.
    pub(crate) fn expire(&mut self, key: TimerKey, now: Instant) -> bool {
        match self.slots.get(&key) {
            Some((t, _)) if *t <= now => {
                // Fired: set to this deadline again, it takes a new place.
                self.first_set.remove(&(key, *t));
                self.slots.remove(&key);
                true
            }
            _ => false,
        }
    }
    /// Sets the order stamp of the current call (see [`Timers`]).
    pub(crate) fn set_order(&mut self, order: u64) {
        self.order = order;
    }
    /// Begins a call at `now`: deadlines before `now` have passed, so setting one again
    /// takes a new place.
    pub(crate) fn begin_call(&mut self, now: Instant) {
        self.first_set.retain(|(_, t), _| *t >= now);
    }
    /// Ends a call; the next call's stamp is one more unless the driver sets it.
    pub(crate) fn end_call(&mut self) {
        self.order += 1;
    }
    /// The earliest deadline; among equal deadlines the one set first.
    pub fn next(&self) -> Option<(TimerKey, Instant)> {
        self.next_ordered().map(|(k, t, _)| (k, t))
    }
    /// [`Timers::next`] with its order stamp.
    pub fn next_ordered(&self) -> Option<(TimerKey, Instant, u64)> {
        self.slots
            .iter()
            .min_by_key(|(k, (t, stamp))| (*t, *stamp, **k))
            .map(|(k, (t, stamp))| (*k, *t, *stamp))
    }
}

/// A coordinate-tagged timestamp for the wire.
pub fn stamp_to_wire(ts: &CoordTimestamp) -> WireStamp {
    let (source, stratum) = match ts.source {
        TimeSource::Unsynchronized => (0, 0),
        TimeSource::Authority => (1, 0),
        TimeSource::Hierarchy { stratum } => (2, stratum),
        TimeSource::Holdover { stratum } => (3, stratum),
        TimeSource::Pulsar => (4, 0),
    };
    let sigma_ps = if source == 0 || !ts.sigma_s.is_finite() {
        u64::MAX
    } else {
        // Saturating float → int conversion.
        (ts.sigma_s * 1e12).ceil() as u64
    };
    WireStamp {
        estimate_ns: ts.estimate_ns,
        sigma_ps,
        source,
        stratum,
    }
}

/// A wire stamp back into a coordinate-tagged timestamp made at `position_au`.
pub fn stamp_from_wire(w: &WireStamp, position_au: [f64; 3]) -> CoordTimestamp {
    let source = match w.source {
        1 => TimeSource::Authority,
        2 => TimeSource::Hierarchy { stratum: w.stratum },
        3 => TimeSource::Holdover { stratum: w.stratum },
        4 => TimeSource::Pulsar,
        _ => TimeSource::Unsynchronized,
    };
    CoordTimestamp {
        position_au,
        estimate_ns: w.estimate_ns,
        sigma_s: if source == TimeSource::Unsynchronized || w.sigma_ps == u64::MAX {
            f64::MAX
        } else {
            w.sigma_ps as f64 * 1e-12
        },
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    /// Equal deadlines fire in the order their calls set them, not in key order; within
    /// one call, in key order.
    #[test]
    fn equal_deadlines_fire_in_the_order_they_were_set() {
        let mut t = Timers::default();
        t.set_order(10);
        t.set(TimerKey::Watch, at(5));
        t.end_call();
        t.set_order(11);
        t.set(TimerKey::Summary, at(5));
        t.set(TimerKey::Gossip, at(5));
        t.end_call();
        let mut fired = Vec::new();
        while let Some((k, when)) = t.next() {
            assert!(t.expire(k, when));
            fired.push(k);
        }
        assert_eq!(
            fired,
            [TimerKey::Watch, TimerKey::Gossip, TimerKey::Summary]
        );
    }

    /// A deadline given again keeps its first place, even after the key was moved away or
    /// cancelled in between; once fired, the same deadline set again takes a new place.
    #[test]
    fn a_deadline_given_again_keeps_its_place_until_it_fires() {
        let mut t = Timers::default();
        t.set_order(1);
        t.set(TimerKey::Suspicion, at(9));
        t.end_call();
        t.set_order(2);
        t.set(TimerKey::Gossip, at(9));
        t.set(TimerKey::Suspicion, at(20));
        t.end_call();
        t.set_order(3);
        t.cancel(TimerKey::Suspicion);
        t.set(TimerKey::Suspicion, at(9));
        t.end_call();
        assert_eq!(t.next_ordered(), Some((TimerKey::Suspicion, at(9), 1)));
        assert!(t.expire(TimerKey::Suspicion, at(9)));
        t.set_order(4);
        t.begin_call(at(9));
        t.set(TimerKey::Suspicion, at(9));
        t.end_call();
        assert_eq!(t.next_ordered(), Some((TimerKey::Gossip, at(9), 2)));
        assert!(t.expire(TimerKey::Gossip, at(9)));
        assert_eq!(t.next_ordered(), Some((TimerKey::Suspicion, at(9), 4)));
    }

    /// A stale expiry (not yet due, or cancelled) is a no-op.
    #[test]
    fn a_stale_expiry_is_a_no_op() {
        let mut t = Timers::default();
        t.set(TimerKey::Gossip, at(5));
        assert!(!t.expire(TimerKey::Gossip, at(4)));
        t.cancel(TimerKey::Gossip);
        assert!(!t.expire(TimerKey::Gossip, at(5)));
        assert_eq!(t.next(), None);
    }
}
