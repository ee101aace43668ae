//! Panic-to-dark (issue 18, the tile runtime's kill switch): a threshold-signed order makes
//! a tile, a cell or a layer stop transmitting user traffic at once and go dark entirely
//! [`DARK_GRACE`] later; only a threshold-signed undark lights it again.
//!
//! An [`Order`] names a scope, says dark or undark and carries a serial; it is valid when
//! its signature verifies under the authorities' threshold key (FROST t-of-n,
//! [`crate::trust::threshold`]: fewer than t authorities cannot produce one) and its
//! serial is above every serial this node accepted (a replayed order is refused). A node
//! takes an order from its operator ([`crate::io::Command::Order`]) or from a neighbour
//! (kind 35, new in protocol 3); if the order's scope holds it, it relays the order over
//! its links to the neighbours inside the same scope, then obeys: so one order given to
//! one tile of a connected cell reaches the whole cell.
//!
//! **The stages and the bound.** From the moment a node accepts a dark order it sends no
//! user traffic (kinds 8 kv and 10 data, its own or forwarded); control traffic (the relay
//! of the order, membership, routing) goes on for [`DARK_GRACE`] so the order spreads, and
//! from then on **no frame leaves the node** (checked where every datagram leaves,
//! `Node::emit`). A dark node still receives, so it can be lit again. The bound for a
//! scope: the order's flood time across the scope (its hop count × link delay) plus
//! [`DARK_GRACE`]; the sim test states and checks it. The spec gives no figure for the
//! kill switch ("a hardware-level panic or kill-switch").

use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use crate::addr::HierAddr;
use crate::time::Instant;
use crate::trust::threshold;
use crate::wire::{self, Dest};

/// How long a darkened node still sends control traffic (relaying the order) before no
/// frame leaves it.
pub const DARK_GRACE: Duration = Duration::from_secs(1);

/// An order's encoded length: serial, scope tag and six bytes, dark flag, signature.
pub const ORDER_LEN: usize = 8 + 1 + 6 + 1 + 64;

/// A threshold-signed order: dark or undark `scope` (a node, a cell or a layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub serial: u64,
    pub scope: Dest,
    pub dark: bool,
    pub sig: [u8; 64],
}

/// Why an order was refused. Nothing is changed by a refused order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("malformed order")]
    Malformed,
    #[error("an order's scope is a node, a cell or a layer")]
    BadScope,
    #[error("this node trusts no authorities' key (no threshold key set)")]
    NoKey,
    #[error("the order is not signed by a threshold of the authorities")]
    BadSignature,
    #[error("order serial {found} is not above the last accepted {last} (replayed)")]
    Replayed { found: u64, last: u64 },
}

/// An order names a node, a cell or a layer, in the wire's own destination encoding
/// (its first six bytes: no scope an order takes uses the other two).
fn scope_bytes(scope: Dest) -> Result<(u8, [u8; 6]), OrderError> {
    if matches!(scope, Dest::Cluster { .. } | Dest::Link) {
        return Err(OrderError::BadScope);
    }
    let (tag, b8) = scope.encode();
    let mut b = [0u8; 6];
    b.copy_from_slice(&b8[..6]);
    Ok((tag, b))
}

impl Order {
    const DOMAIN: &'static [u8] = b"lightcone/dark/v1";

    /// The message the authorities sign.
    pub fn message(serial: u64, scope: Dest, dark: bool) -> Result<Vec<u8>, OrderError> {
        let (tag, b) = scope_bytes(scope)?;
        let mut m = Self::DOMAIN.to_vec();
        m.extend_from_slice(&serial.to_be_bytes());
        m.push(tag);
        m.extend_from_slice(&b);
        m.push(u8::from(dark));
        Ok(m)
    }

    /// Signs an order with the shares of `signers` (at least t).
    pub fn sign(
        group: &threshold::Group,
        signers: &[&threshold::Share],
        serial: u64,
        scope: Dest,
        dark: bool,
        rng: &mut (impl rand::RngCore + rand::CryptoRng),
    ) -> Result<Order, threshold::ThresholdError> {
        let m = Order::message(serial, scope, dark)
            .map_err(|_| threshold::ThresholdError::Malformed)?;
        let sig = threshold::sign(group, signers, &m, rng)?;
        Ok(Order {
            serial,
            scope,
            dark,
            sig,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let (tag, b) = scope_bytes(self.scope).unwrap_or((0xff, [0; 6]));
        let mut w = Vec::with_capacity(ORDER_LEN);
        w.extend_from_slice(&self.serial.to_be_bytes());
        w.push(tag);
        w.extend_from_slice(&b);
        w.push(u8::from(self.dark));
        w.extend_from_slice(&self.sig);
        w
    }

    /// Total: any byte string gives an order or an error.
    pub fn decode(b: &[u8]) -> Result<Order, OrderError> {
        if b.len() != ORDER_LEN {
            return Err(OrderError::Malformed);
        }
        let serial = u64::from_be_bytes(b[..8].try_into().map_err(|_| OrderError::Malformed)?);
        let scope = match Dest::decode(b[8], &b[9..15]) {
            Ok(d @ (Dest::Node(_) | Dest::Cell { .. } | Dest::Layer { .. })) => d,
            _ => return Err(OrderError::BadScope),
        };
        let dark = match b[15] {
            0 => false,
            1 => true,
            _ => return Err(OrderError::Malformed),
        };
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[16..]);
        Ok(Order {
            serial,
            scope,
            dark,
            sig,
        })
    }

    /// True when the order's scope holds node `id` at `addr`.
    pub fn holds(&self, id: u32, addr: &HierAddr) -> bool {
        match self.scope {
            Dest::Node(n) => n == id,
            s => s.contains(addr),
        }
    }
}

/// A node's kill switch: the key orders must verify under, the last serial, and whether
/// (and since when) it is dark.
#[derive(Debug, Clone, Default)]
pub struct Darkness {
    key: Option<VerifyingKey>,
    last_serial: u64,
    /// Dark since this instant (user traffic stops; everything stops `DARK_GRACE` later).
    since: Option<Instant>,
    /// Orders refused, and frames kept in because of the darkness.
    pub refused: u64,
    pub suppressed: u64,
}

impl Darkness {
    /// Orders must verify under the authorities' threshold key `key`.
    pub fn set_key(&mut self, key: VerifyingKey) {
        self.key = Some(key);
    }

    /// Refuses every order with a serial at or below `serial` from now on (a restarted
    /// node is told the last serial its lab signed, so an old order is still a replay).
    pub fn set_floor(&mut self, serial: u64) {
        self.last_serial = self.last_serial.max(serial);
    }

    /// Dark since when, if dark.
    pub fn dark_since(&self) -> Option<Instant> {
        self.since
    }

    /// Checks `bytes` as an order for node `id` at `addr` at `now`. A valid order that
    /// holds this node changes its state and returns `Ok(Some(order))` (relay it inside its
    /// scope); a valid one for others returns `Ok(None)`. A refused one changes nothing
    /// but the refusal count.
    pub fn apply(
        &mut self,
        bytes: &[u8],
        id: u32,
        addr: &HierAddr,
        now: Instant,
    ) -> Result<Option<Order>, OrderError> {
        let r = self.check(bytes);
        let o = match r {
            Ok(o) => o,
            Err(e) => {
                self.refused += 1;
                return Err(e);
            }
        };
        self.last_serial = o.serial;
        if !o.holds(id, addr) {
            return Ok(None);
        }
        self.since = match (o.dark, self.since) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(now),
            (false, _) => None,
        };
        Ok(Some(o))
    }

    fn check(&self, bytes: &[u8]) -> Result<Order, OrderError> {
        let o = Order::decode(bytes)?;
        let key = self.key.as_ref().ok_or(OrderError::NoKey)?;
        let m = Order::message(o.serial, o.scope, o.dark)?;
        if !threshold::verify(key, &m, &o.sig) {
            return Err(OrderError::BadSignature);
        }
        if o.serial <= self.last_serial {
            return Err(OrderError::Replayed {
                found: o.serial,
                last: self.last_serial,
            });
        }
        Ok(o)
    }

    /// May a frame of `kind` leave now? Counts what it keeps in.
    pub fn may_emit(&mut self, now: Instant, kind: Option<u8>) -> bool {
        let Some(since) = self.since else {
            return true;
        };
        let user = matches!(kind, Some(wire::KIND_KV | wire::KIND_DATA));
        let ok = !user && now.saturating_since(since) < DARK_GRACE;
        self.suppressed += u64::from(!ok);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::threshold::dkg;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn addr(cell: u16) -> HierAddr {
        HierAddr {
            layer: 0,
            cluster: 0,
            cell,
            tile: 1,
        }
    }

    #[test]
    fn only_a_threshold_signed_fresh_order_darkens_and_only_its_scope() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (shares, group) = dkg(&[1, 2, 3, 4, 5], 3, &mut rng).unwrap();
        let all: Vec<_> = shares.values().collect();
        let cell1 = Dest::Cell {
            layer: 0,
            cluster: 0,
            cell: 1,
        };
        assert!(Order::sign(&group, &all[..2], 1, cell1, true, &mut rng).is_err());
        let o = Order::sign(&group, &all[..3], 1, cell1, true, &mut rng).unwrap();
        assert_eq!(Order::decode(&o.encode()), Ok(o));
        let mut d = Darkness::default();
        let t0 = Instant::ZERO;
        assert_eq!(
            d.apply(&o.encode(), 7, &addr(1), t0),
            Err(OrderError::NoKey)
        );
        d.set_key(group.key);
        // Tampered: the scope changed after signing.
        let mut forged = o;
        forged.scope = Dest::Layer { layer: 0 };
        assert_eq!(
            d.apply(&forged.encode(), 7, &addr(1), t0),
            Err(OrderError::BadSignature)
        );
        assert!(d.may_emit(t0, Some(wire::KIND_DATA)));
        // Another cell's node relays nothing and stays lit (but the serial is used).
        let mut other = d.clone();
        assert_eq!(other.apply(&o.encode(), 8, &addr(2), t0), Ok(None));
        assert!(other.dark_since().is_none());
        assert_eq!(d.apply(&o.encode(), 7, &addr(1), t0), Ok(Some(o)));
        assert!(
            !d.may_emit(t0, Some(wire::KIND_DATA)),
            "user traffic stops at once"
        );
        assert!(!d.may_emit(t0, Some(wire::KIND_KV)));
        assert!(d.may_emit(t0, Some(1)), "control traffic for the grace");
        assert!(!d.may_emit(t0 + DARK_GRACE, Some(1)), "then nothing");
        assert_eq!(
            d.apply(&o.encode(), 7, &addr(1), t0),
            Err(OrderError::Replayed { found: 1, last: 1 })
        );
        let undark = Order::sign(&group, &all[2..], 2, cell1, false, &mut rng).unwrap();
        assert!(d
            .apply(&undark.encode(), 7, &addr(1), t0)
            .unwrap()
            .is_some());
        assert!(d.may_emit(t0 + DARK_GRACE, Some(wire::KIND_DATA)));
        assert_eq!(d.refused, 3, "no key, forged, replayed");
        for junk in [&[][..], &[0u8; ORDER_LEN][..], &[0xffu8; 200][..]] {
            assert!(d.apply(junk, 7, &addr(1), t0).is_err());
        }
        assert!(Order::message(1, Dest::Link, true).is_err());
        // A restarted node told the lab's last serial refuses the old order.
        let mut fresh = Darkness::default();
        fresh.set_key(group.key);
        fresh.set_floor(2);
        assert_eq!(
            fresh.apply(&o.encode(), 7, &addr(1), t0),
            Err(OrderError::Replayed { found: 1, last: 2 })
        );
        assert!(fresh.dark_since().is_none());
    }
}
