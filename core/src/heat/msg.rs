//! The thermal subsystem's messages, carried in [`Payload::Heat`](crate::wire::Payload)
//! frames (wire kind 16), so each is signed by its sender like every frame. Quantities
//! travel as integers (milliwatts, parts per million, emulated ns): a forged frame can hold
//! no NaN. Decoding never panics; a frame that is short, long or out of range is refused
//! whole.

use crate::wire::Dest;

/// Most bytes of one message (far below a datagram's payload).
pub const MAX_MSG: usize = 256;

/// What a tile offers its cell (a signed Resource Descriptor: the frame is signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// The sender's emulated time of the reading, ns (newer replaces older).
    pub version: u64,
    pub compute_total: u32,
    pub compute_free: u32,
    pub memory_free_mib: u32,
    pub bandwidth_free_mbps: u32,
    /// Heat the tile can still take before 90 % load, mW.
    pub headroom_mw: u64,
    /// Thermal load, parts per million (1 000 000 = 100 %).
    pub load_ppm: u32,
    /// Radiator capacity, mW.
    pub capacity_mw: u64,
    /// Heat to reject now (own power + received), mW.
    pub heat_mw: u64,
    /// Heat passed to the shell outside now, mW.
    pub outward_mw: u64,
    /// True while the tile admits no heat-producing lease (backpressure).
    pub throttled: bool,
    /// When this tile's load last passed 90 %, emulated ns (0: below 90 % now).
    pub crossed_ns: u64,
}

/// A gateway's sum over a scope (cell → cluster → layer): placement beyond the cell reads
/// these, never a global view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatSummary {
    pub scope: Dest,
    pub version: u64,
    pub tiles: u32,
    pub compute_total: u64,
    pub compute_free: u64,
    pub capacity_mw: u64,
    pub heat_mw: u64,
    pub outward_mw: u64,
    /// The most loaded tile's load, ppm.
    pub max_load_ppm: u32,
    /// A tile of the scope with the most free compute (a placement target), and its free
    /// compute.
    pub best_tile: u32,
    pub best_free: u32,
    /// The earliest `crossed_ns` of a tile of the scope above 90 % now (0: none).
    pub crossed_ns: u64,
}

impl HeatSummary {
    /// The scope's thermal load, ppm (heat to reject over capacity).
    pub fn load_ppm(&self) -> u32 {
        ppm(self.heat_mw, self.capacity_mw)
    }
}

/// `num / den` in parts per million, saturating.
pub fn ppm(num: u64, den: u64) -> u32 {
    if den == 0 {
        return u32::MAX;
    }
    ((num as u128 * 1_000_000) / den as u128).min(u32::MAX as u128) as u32
}

/// The Class-A thermal signal a layer gateway sends down its layer (to cluster gateways,
/// they to cell gateways, they to their members): the heat landing on each tile from the
/// shell inside, and whether a shell outside is above 90 % (backpressure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellSignal {
    pub layer: u16,
    pub version: u64,
    /// Heat received from the shell inside, per tile of this layer, mW.
    pub received_per_tile_mw: u64,
    /// The most loaded shell outside this one, ppm (0 for the outermost).
    pub outer_load_ppm: u32,
    /// The shell that load belongs to.
    pub outer_layer: u16,
    /// True: stop admitting heat-producing leases and throttle running ones.
    pub throttle: bool,
    /// When the first tile of the shell outside passed 90 % in its current stretch above
    /// it, emulated ns (0: none above); the inner tiles measure their throttle lag from it.
    pub outer_crossed_ns: u64,
}

/// Hot/fast work goes inward, cold/deep work outward (the spec's recommendation 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskClass {
    Hot,
    Cold,
}

/// The terms of a lease: what the submitter asks a tile to run, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// Unique per submitter: its id in the high 32 bits, a counter below.
    pub id: u64,
    pub task: u64,
    pub compute: u32,
    pub memory_mib: u32,
    pub bandwidth_mbps: u32,
    pub class: TaskClass,
    /// The lease holds until this emulated instant unless renewed, ns.
    pub expiry_ns: u64,
    /// The task's end (submission + duration), ns: no renewal past it.
    pub end_ns: u64,
}

/// Why a tile refused a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NoCompute,
    NoMemory,
    NoHeadroom,
    Throttled,
    Expired,
    Unknown,
}

impl Refusal {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Refusal::NoCompute,
            1 => Refusal::NoMemory,
            2 => Refusal::NoHeadroom,
            3 => Refusal::Throttled,
            4 => Refusal::Expired,
            5 => Refusal::Unknown,
            _ => return None,
        })
    }
}

/// One message of the thermal subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatMsg {
    Descriptor(Descriptor),
    Summary(HeatSummary),
    Shell(ShellSignal),
    /// Submitter → tile: run this under these terms.
    Offer(LeaseTerms),
    /// Tile → submitter: taken until `expiry_ns` (the holder's signature on the contract).
    Accept {
        id: u64,
        expiry_ns: u64,
    },
    Refuse {
        id: u64,
        why: Refusal,
    },
    /// Submitter → holder: extend to `expiry_ns`.
    Renew {
        id: u64,
        expiry_ns: u64,
    },
    /// Holder → submitter: extended.
    Renewed {
        id: u64,
        expiry_ns: u64,
    },
    /// Either side: the lease is over (done, or given up).
    Release {
        id: u64,
    },
}

impl HeatMsg {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        match self {
            HeatMsg::Descriptor(d) => {
                w.push(1);
                put64(&mut w, d.version);
                put32(&mut w, d.compute_total);
                put32(&mut w, d.compute_free);
                put32(&mut w, d.memory_free_mib);
                put32(&mut w, d.bandwidth_free_mbps);
                put64(&mut w, d.headroom_mw);
                put32(&mut w, d.load_ppm);
                put64(&mut w, d.capacity_mw);
                put64(&mut w, d.heat_mw);
                put64(&mut w, d.outward_mw);
                w.push(u8::from(d.throttled));
                put64(&mut w, d.crossed_ns);
            }
            HeatMsg::Summary(s) => {
                w.push(2);
                put_scope(&mut w, s.scope);
                put64(&mut w, s.version);
                put32(&mut w, s.tiles);
                put64(&mut w, s.compute_total);
                put64(&mut w, s.compute_free);
                put64(&mut w, s.capacity_mw);
                put64(&mut w, s.heat_mw);
                put64(&mut w, s.outward_mw);
                put32(&mut w, s.max_load_ppm);
                put32(&mut w, s.best_tile);
                put32(&mut w, s.best_free);
                put64(&mut w, s.crossed_ns);
            }
            HeatMsg::Shell(s) => {
                w.push(3);
                w.extend_from_slice(&s.layer.to_be_bytes());
                put64(&mut w, s.version);
                put64(&mut w, s.received_per_tile_mw);
                put32(&mut w, s.outer_load_ppm);
                w.extend_from_slice(&s.outer_layer.to_be_bytes());
                w.push(u8::from(s.throttle));
                put64(&mut w, s.outer_crossed_ns);
            }
            HeatMsg::Offer(t) => {
                w.push(4);
                put64(&mut w, t.id);
                put64(&mut w, t.task);
                put32(&mut w, t.compute);
                put32(&mut w, t.memory_mib);
                put32(&mut w, t.bandwidth_mbps);
                w.push(match t.class {
                    TaskClass::Hot => 0,
                    TaskClass::Cold => 1,
                });
                put64(&mut w, t.expiry_ns);
                put64(&mut w, t.end_ns);
            }
            HeatMsg::Accept { id, expiry_ns } => {
                w.push(5);
                put64(&mut w, *id);
                put64(&mut w, *expiry_ns);
            }
            HeatMsg::Refuse { id, why } => {
                w.push(6);
                put64(&mut w, *id);
                w.push(why.code());
            }
            HeatMsg::Renew { id, expiry_ns } => {
                w.push(7);
                put64(&mut w, *id);
                put64(&mut w, *expiry_ns);
            }
            HeatMsg::Renewed { id, expiry_ns } => {
                w.push(8);
                put64(&mut w, *id);
                put64(&mut w, *expiry_ns);
            }
            HeatMsg::Release { id } => {
                w.push(9);
                put64(&mut w, *id);
            }
        }
        w
    }

    /// Decodes one message; the whole slice must be consumed.
    pub fn decode(b: &[u8]) -> Result<HeatMsg, BadMsg> {
        if b.len() > MAX_MSG {
            return Err(BadMsg);
        }
        let mut r = R { b, i: 0 };
        let m = match r.u8()? {
            1 => HeatMsg::Descriptor(Descriptor {
                version: r.u64()?,
                compute_total: r.u32()?,
                compute_free: r.u32()?,
                memory_free_mib: r.u32()?,
                bandwidth_free_mbps: r.u32()?,
                headroom_mw: r.u64()?,
                load_ppm: r.u32()?,
                capacity_mw: r.u64()?,
                heat_mw: r.u64()?,
                outward_mw: r.u64()?,
                throttled: r.bool()?,
                crossed_ns: r.u64()?,
            }),
            2 => HeatMsg::Summary(HeatSummary {
                scope: r.scope()?,
                version: r.u64()?,
                tiles: r.u32()?,
                compute_total: r.u64()?,
                compute_free: r.u64()?,
                capacity_mw: r.u64()?,
                heat_mw: r.u64()?,
                outward_mw: r.u64()?,
                max_load_ppm: r.u32()?,
                best_tile: r.u32()?,
                best_free: r.u32()?,
                crossed_ns: r.u64()?,
            }),
            3 => HeatMsg::Shell(ShellSignal {
                layer: r.u16()?,
                version: r.u64()?,
                received_per_tile_mw: r.u64()?,
                outer_load_ppm: r.u32()?,
                outer_layer: r.u16()?,
                throttle: r.bool()?,
                outer_crossed_ns: r.u64()?,
            }),
            4 => HeatMsg::Offer(LeaseTerms {
                id: r.u64()?,
                task: r.u64()?,
                compute: r.u32()?,
                memory_mib: r.u32()?,
                bandwidth_mbps: r.u32()?,
                class: match r.u8()? {
                    0 => TaskClass::Hot,
                    1 => TaskClass::Cold,
                    _ => return Err(BadMsg),
                },
                expiry_ns: r.u64()?,
                end_ns: r.u64()?,
            }),
            5 => HeatMsg::Accept {
                id: r.u64()?,
                expiry_ns: r.u64()?,
            },
            6 => HeatMsg::Refuse {
                id: r.u64()?,
                why: Refusal::from_code(r.u8()?).ok_or(BadMsg)?,
            },
            7 => HeatMsg::Renew {
                id: r.u64()?,
                expiry_ns: r.u64()?,
            },
            8 => HeatMsg::Renewed {
                id: r.u64()?,
                expiry_ns: r.u64()?,
            },
            9 => HeatMsg::Release { id: r.u64()? },
            _ => return Err(BadMsg),
        };
        if r.i != b.len() {
            return Err(BadMsg);
        }
        Ok(m)
    }
}

/// A thermal message that does not decode (refused whole; nothing changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed thermal message")]
pub struct BadMsg;

fn put64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put_scope(w: &mut Vec<u8>, d: Dest) {
    let (tag, l, cl, ce) = match d {
        Dest::Cell {
            layer,
            cluster,
            cell,
        } => (0u8, layer, cluster, cell),
        Dest::Cluster { layer, cluster } => (1, layer, cluster, 0),
        Dest::Layer { layer } => (2, layer, 0, 0),
        // Only scopes are summarised; anything else encodes as an invalid tag.
        Dest::Node(_) | Dest::Link => (255, 0, 0, 0),
    };
    w.push(tag);
    for v in [l, cl, ce] {
        w.extend_from_slice(&v.to_be_bytes());
    }
}

struct R<'a> {
    b: &'a [u8],
    i: usize,
}

impl R<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BadMsg> {
        let s = self.b.get(self.i..self.i + N).ok_or(BadMsg)?;
        self.i += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, BadMsg> {
        Ok(self.take::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool, BadMsg> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(BadMsg),
        }
    }
    fn u16(&mut self) -> Result<u16, BadMsg> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, BadMsg> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, BadMsg> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn scope(&mut self) -> Result<Dest, BadMsg> {
        let tag = self.u8()?;
        let (layer, cluster, cell) = (self.u16()?, self.u16()?, self.u16()?);
        match tag {
            0 => Ok(Dest::Cell {
                layer,
                cluster,
                cell,
            }),
            1 if cell == 0 => Ok(Dest::Cluster { layer, cluster }),
            2 if cluster == 0 && cell == 0 => Ok(Dest::Layer { layer }),
            _ => Err(BadMsg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<HeatMsg> {
        vec![
            HeatMsg::Descriptor(Descriptor {
                version: 7,
                compute_total: 64,
                compute_free: 10,
                memory_free_mib: 1,
                bandwidth_free_mbps: 2,
                headroom_mw: 3,
                load_ppm: 900_000,
                capacity_mw: 4,
                heat_mw: 5,
                outward_mw: 6,
                throttled: true,
                crossed_ns: 8,
            }),
            HeatMsg::Summary(HeatSummary {
                scope: Dest::Cluster {
                    layer: 1,
                    cluster: 2,
                },
                version: 1,
                tiles: 2,
                compute_total: 3,
                compute_free: 4,
                capacity_mw: 5,
                heat_mw: 6,
                outward_mw: 7,
                max_load_ppm: 8,
                best_tile: 9,
                best_free: 10,
                crossed_ns: 11,
            }),
            HeatMsg::Shell(ShellSignal {
                layer: 0,
                version: 1,
                received_per_tile_mw: 2,
                outer_load_ppm: 950_000,
                outer_layer: 1,
                throttle: true,
                outer_crossed_ns: 99,
            }),
            HeatMsg::Offer(LeaseTerms {
                id: 1 << 32 | 5,
                task: 3,
                compute: 8,
                memory_mib: 512,
                bandwidth_mbps: 10,
                class: TaskClass::Cold,
                expiry_ns: 10,
                end_ns: 20,
            }),
            HeatMsg::Accept {
                id: 1,
                expiry_ns: 2,
            },
            HeatMsg::Refuse {
                id: 1,
                why: Refusal::Throttled,
            },
            HeatMsg::Renew {
                id: 1,
                expiry_ns: 2,
            },
            HeatMsg::Renewed {
                id: 1,
                expiry_ns: 2,
            },
            HeatMsg::Release { id: 1 },
        ]
    }

    #[test]
    fn every_message_reads_back_and_every_truncation_or_extension_is_refused() {
        for m in samples() {
            let b = m.encode();
            assert_eq!(HeatMsg::decode(&b), Ok(m));
            for n in 0..b.len() {
                assert_eq!(HeatMsg::decode(&b[..n]), Err(BadMsg), "{m:?} cut at {n}");
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(HeatMsg::decode(&long), Err(BadMsg));
        }
        assert_eq!(HeatMsg::decode(&[10]), Err(BadMsg), "unknown tag");
        let mut bad_class = samples()[3].encode();
        bad_class[1 + 8 + 8 + 12] = 7;
        assert_eq!(HeatMsg::decode(&bad_class), Err(BadMsg));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = HeatMsg::decode(&b) {
                prop_assert_eq!(m.encode(), b);
            }
        }
    }
}
