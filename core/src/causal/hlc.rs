//! Hybrid logical clocks (Kulkarni, Demirbas, Madappa, Avva, Leone: "Logical Physical Clocks
//! and Consistent Snapshots in Globally Distributed Databases", OPODIS 2014).
//!
//! An HLC timestamp is `(l, c)`: `l` is the largest physical time the node has heard of, `c`
//! a logical counter that orders events sharing the same `l`. Timestamps are totally ordered,
//! respect causality (`e → f ⇒ hlc(e) < hlc(f)`), and stay close to physical time: `l` never
//! runs more than the accepted clock offset ahead of the local physical clock.
//!
//! The paper assumes clocks are synchronised within ε. Here that bound is enforced instead of
//! assumed: a remote timestamp more than `max_offset_ns` ahead of our physical clock is
//! rejected with [`HlcError::RemoteTooFarAhead`] and the clock does not move. Without this a
//! single node with a wrong clock (or a forged message) drags every HLC in the system into
//! its future, and no one can ever get back. A star-spanning system must expect compromised
//! clocks (see the `time` module), so we refuse the jump and let the caller count it.
//!
//! The clock never reads time itself: every call takes `local_physical_ns`, the caller's
//! physical clock reading (the driver's scaled clock, or the simulator's virtual clock).

use std::fmt;
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

/// A hybrid logical clock timestamp. Ordered lexicographically by `(physical_ns, logical)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// The largest physical time (ns since the emulation epoch) this node has heard of.
    pub physical_ns: u64,
    /// Orders events that share `physical_ns`.
    pub logical: u32,
}

impl Hlc {
    /// The zero timestamp, smaller than every timestamp a clock issues.
    pub const ZERO: Hlc = Hlc {
        physical_ns: 0,
        logical: 0,
    };
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ns, self.logical)
    }
}

/// Why the clock refused to issue a timestamp. In every case the clock's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// A remote timestamp was further ahead of our physical clock than the configured bound.
    /// The message carrying it should be dropped (or quarantined) and counted.
    #[error(
        "remote HLC {remote} is {ahead_ns} ns ahead of local physical time {local_physical_ns} ns \
         (max offset {max_offset_ns} ns)"
    )]
    RemoteTooFarAhead {
        /// The rejected timestamp.
        remote: Hlc,
        /// Our physical clock reading at the time.
        local_physical_ns: u64,
        /// How far ahead it was.
        ahead_ns: u64,
        /// The configured bound.
        max_offset_ns: u64,
    },
    /// The logical counter would overflow: more than 2^32 events with no physical clock
    /// advance. Only a stalled physical clock can cause this; the caller should check it.
    #[error("HLC logical counter overflow at physical time {physical_ns} ns")]
    LogicalOverflow {
        /// The physical component at which the counter ran out.
        physical_ns: u64,
    },
}

/// The clock of one node: the last timestamp it issued, and the drift bound it enforces.
///
/// Call order: [`HlcClock::now`] for a local or send event, [`HlcClock::update`] when a
/// message carrying a remote timestamp is received. Both return a timestamp strictly greater
/// than every timestamp this clock issued before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HlcClock {
    last: Hlc,
    max_offset_ns: u64,
}

impl HlcClock {
    /// A clock that rejects remote timestamps more than `max_offset_ns` ahead of local physical
    /// time. Safe range: at least the worst honest clock error you expect between two nodes
    /// of a cell (the time module's σ bounds times a few); a light-minute system with
    /// disciplined clocks wants milliseconds to seconds.
    pub fn new(max_offset_ns: NonZeroU64) -> Self {
        Self {
            last: Hlc::ZERO,
            max_offset_ns: max_offset_ns.get(),
        }
    }

    /// The last timestamp this clock issued (or [`Hlc::ZERO`]).
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The configured drift bound.
    pub fn max_offset_ns(&self) -> u64 {
        self.max_offset_ns
    }

    /// Timestamp a local or send event at physical time `local_physical_ns`.
    pub fn now(&mut self, local_physical_ns: u64) -> Result<Hlc, HlcError> {
        let next = if local_physical_ns > self.last.physical_ns {
            Hlc {
                physical_ns: local_physical_ns,
                logical: 0,
            }
        } else {
            Hlc {
                physical_ns: self.last.physical_ns,
                logical: self.bump(self.last.logical)?,
            }
        };
        self.last = next;
        Ok(next)
    }

    /// Timestamp the receipt of a message stamped `remote`, at physical time
    /// `local_physical_ns`. The result is greater than both `remote` and every timestamp
    /// issued before. Errors leave the clock unchanged.
    pub fn update(&mut self, local_physical_ns: u64, remote: Hlc) -> Result<Hlc, HlcError> {
        let bound = local_physical_ns.saturating_add(self.max_offset_ns);
        if remote.physical_ns > bound {
            return Err(HlcError::RemoteTooFarAhead {
                remote,
                local_physical_ns,
                ahead_ns: remote.physical_ns - local_physical_ns,
                max_offset_ns: self.max_offset_ns,
            });
        }
        let last = self.last;
        let physical_ns = last
            .physical_ns
            .max(remote.physical_ns)
            .max(local_physical_ns);
        let logical = if physical_ns == last.physical_ns && physical_ns == remote.physical_ns {
            self.bump(last.logical.max(remote.logical))?
        } else if physical_ns == last.physical_ns {
            self.bump(last.logical)?
        } else if physical_ns == remote.physical_ns {
            self.bump(remote.logical)?
        } else {
            0
        };
        let next = Hlc {
            physical_ns,
            logical,
        };
        self.last = next;
        Ok(next)
    }

    fn bump(&self, logical: u32) -> Result<u32, HlcError> {
        logical.checked_add(1).ok_or(HlcError::LogicalOverflow {
            physical_ns: self.last.physical_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(max_offset_ns: u64) -> HlcClock {
        HlcClock::new(NonZeroU64::new(max_offset_ns).unwrap())
    }

    #[test]
    fn now_follows_physical_time_and_counts_when_it_stalls() {
        let mut c = clock(1_000);
        assert_eq!(
            c.now(100).unwrap(),
            Hlc {
                physical_ns: 100,
                logical: 0
            }
        );
        assert_eq!(
            c.now(100).unwrap(),
            Hlc {
                physical_ns: 100,
                logical: 1
            }
        );
        // Physical clock stepped backwards: HLC holds and counts.
        assert_eq!(
            c.now(50).unwrap(),
            Hlc {
                physical_ns: 100,
                logical: 2
            }
        );
        assert_eq!(
            c.now(200).unwrap(),
            Hlc {
                physical_ns: 200,
                logical: 0
            }
        );
    }

    #[test]
    fn update_takes_the_max_and_exceeds_the_remote() {
        let mut c = clock(1_000);
        c.now(100).unwrap();
        let remote = Hlc {
            physical_ns: 150,
            logical: 7,
        };
        assert_eq!(
            c.update(120, remote).unwrap(),
            Hlc {
                physical_ns: 150,
                logical: 8
            }
        );
        // Same physical component on both sides: max of the counters plus one.
        let remote = Hlc {
            physical_ns: 150,
            logical: 3,
        };
        assert_eq!(
            c.update(120, remote).unwrap(),
            Hlc {
                physical_ns: 150,
                logical: 9
            }
        );
        // Local physical time overtakes both: counter resets.
        assert_eq!(
            c.update(300, remote).unwrap(),
            Hlc {
                physical_ns: 300,
                logical: 0
            }
        );
    }

    #[test]
    fn a_remote_too_far_ahead_is_rejected_and_the_clock_does_not_move() {
        let mut c = clock(1_000);
        let before = c.now(10_000).unwrap();
        let remote = Hlc {
            physical_ns: 11_001,
            logical: 0,
        };
        let err = c.update(10_000, remote).unwrap_err();
        assert_eq!(
            err,
            HlcError::RemoteTooFarAhead {
                remote,
                local_physical_ns: 10_000,
                ahead_ns: 1_001,
                max_offset_ns: 1_000
            }
        );
        assert_eq!(c.last(), before);
        // Exactly at the bound is accepted.
        let ok = c
            .update(
                10_000,
                Hlc {
                    physical_ns: 11_000,
                    logical: 0,
                },
            )
            .unwrap();
        assert_eq!(
            ok,
            Hlc {
                physical_ns: 11_000,
                logical: 1
            }
        );
    }

    #[test]
    fn logical_overflow_is_an_error_not_a_wrap() {
        let mut c = clock(1_000);
        c.last = Hlc {
            physical_ns: 5,
            logical: u32::MAX,
        };
        assert!(matches!(
            c.now(5),
            Err(HlcError::LogicalOverflow { physical_ns: 5 })
        ));
        assert_eq!(c.last().logical, u32::MAX);
        // Physical progress recovers.
        assert_eq!(
            c.now(6).unwrap(),
            Hlc {
                physical_ns: 6,
                logical: 0
            }
        );
    }
}
