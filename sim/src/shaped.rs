//! Shaped links: a link direction carried by the lab's own [`Shaper`] (`lightcone-link`),
//! so a [`LinkModel`] means in the simulator what it means on the wire engine — delay and
//! jitter with its distribution and correlation, random or Gilbert–Elliott loss,
//! duplication, corruption, reordering, rate and queue.
//!
//! The simulator drives the shaper as the wire engine does, with virtual time for real
//! time (time scale 1: the simulator's nanoseconds are emulated nanoseconds): each datagram
//! a node sends over a shaped direction is offered at `now` as the frame that would carry
//! it in a lab ([`udp_frame_len`]: 42 bytes of Ethernet, IPv4 and UDP headers, which rate
//! and byte limits count); every copy the shaper delivers is queued at its delivery time,
//! behind the events already queued for that instant (the wire engine's heap orders by
//! time, then arrival); when it comes due it is released from the shaper's queue, counted
//! in the direction's [`Tally`] and handed to the node as an ordinary datagram. A corrupted
//! copy does what it does in a lab ([`corruption_of`]): a flipped source-MAC bit goes
//! unnoticed and the datagram arrives intact; any other bit fails the receiving host's
//! checks and the datagram never reaches the node (counted lost; the node's own checks
//! against damaged bytes are exercised with [`Sim::inject`]). Taking a shaped direction
//! down discards the copies on it, as the wire engine's flush does. Every random decision comes from the shaper's ChaCha8 stream,
//! seeded from the model (which [`Sim::set_link_model_all`] derives from the simulation's
//! seed), never from the simulator's own generator: unshaped links, and so the golden trace
//! hashes, draw exactly as before.
//!
//! Links start unshaped (fixed delay, `set_loss` probability); shaping is per direction and
//! stays until the simulation ends.
//!
//! Traffic classes (issue 15) work as on the wire engine: each datagram is offered with its
//! class ([`lightcone_core::wire::is_class_a`], what the agents mark DSCP CS6), and on a
//! direction with a rate a copy that cannot start at once waits in its class's FIFO
//! ([`Verdict::Wait`]); an `Ev::ShapedStart` event at the time the shaper names starts the
//! waiting copies ([`Shaper::start_next`]: Class A before data), each then queued at its
//! delivery time like any other copy.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lightcone_core::time::Instant;
use lightcone_link::frame::{corruption_of, udp_frame_len, Corruption};
use lightcone_link::model::{link_seed, LinkModel, LossModel, ModelError};
use lightcone_link::shaper::{Class, Delivery, Shaper, Verdict};
use lightcone_link::tally::Tally;

use crate::{Ev, Sim};

/// Why [`Sim::set_link_model`] refused a model. Nothing was changed.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkModelError {
    /// The topology has no link from the first node to the second.
    NoSuchLink { from: u32, to: u32 },
    /// The model itself is invalid.
    Model(ModelError),
}

impl std::fmt::Display for LinkModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkModelError::NoSuchLink { from, to } => {
                write!(f, "no link from node {from} to node {to} in the topology")
            }
            LinkModelError::Model(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LinkModelError {}

/// One shaped link direction: the lab's shaper and what it did.
#[derive(Debug, Clone)]
struct ShapedLink {
    shaper: Shaper,
    tally: Tally,
    /// Copies waiting for the transmitter, per class ([`Class::index`]): bytes, offer
    /// number, time offered.
    waiting: [VecDeque<(Vec<u8>, u64, Instant)>; 2],
    /// When an `Ev::ShapedStart` for this direction is queued.
    start_at: Option<Instant>,
}

/// The simulation's shaped directions, and whether their tallies keep delay histograms.
#[derive(Debug, Clone)]
pub(crate) struct Shaped {
    links: BTreeMap<(u32, u32), ShapedLink>,
    delay_histograms: bool,
}

impl Default for Shaped {
    fn default() -> Self {
        Shaped {
            links: BTreeMap::new(),
            delay_histograms: true,
        }
    }
}

impl Sim {
    /// Carries the direction `from → to` by a [`Shaper`] for `model` (emulated time is the
    /// simulator's time; the model's `delay_ns` replaces the topology's delay, its `seed`
    /// seeds the direction's decisions). Setting a model on a shaped direction changes it
    /// as a diff ([`Shaper::set_model`]: queue, random streams and burst state kept).
    ///
    /// # Errors
    /// [`LinkModelError`] if there is no such link or the model is invalid; nothing changed.
    pub fn set_link_model(
        &mut self,
        from: u32,
        to: u32,
        model: LinkModel,
    ) -> Result<(), LinkModelError> {
        let Some(link) = self.links.get(&(from, to)) else {
            return Err(LinkModelError::NoSuchLink { from, to });
        };
        model.validate().map_err(LinkModelError::Model)?;
        let up = link.up;
        match self.shaped.links.get_mut(&(from, to)) {
            Some(s) => s.shaper.set_model(model),
            None => {
                let mut shaper = Shaper::new(model, 1.0);
                shaper.set_up(up);
                let tally = if self.shaped.delay_histograms {
                    Tally::default()
                } else {
                    Tally::counts_only()
                };
                self.shaped.links.insert(
                    (from, to),
                    ShapedLink {
                        shaper,
                        tally,
                        waiting: Default::default(),
                        start_at: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// Shapes both directions of the link `a`–`b` the way the wire engine does for a lab's
    /// link: `a → b` with `model`, `b → a` with [`LinkModel::reversed`] (the same model on
    /// its own random stream). Give it a plan's link (`a`, `b`, `model`) and the link means
    /// here what it means in the lab.
    ///
    /// # Errors
    /// [`LinkModelError`] if there is no such link or the model is invalid; nothing changed.
    pub fn shape_link(&mut self, a: u32, b: u32, model: &LinkModel) -> Result<(), LinkModelError> {
        for (from, to) in [(a, b), (b, a)] {
            if !self.links.contains_key(&(from, to)) {
                return Err(LinkModelError::NoSuchLink { from, to });
            }
        }
        model.validate().map_err(LinkModelError::Model)?;
        self.set_link_model(b, a, model.reversed())?;
        self.set_link_model(a, b, model.clone())
    }

    /// Shapes every link with `template`, keeping each link's own delay (its light-time)
    /// as `delay_ns`. Seeds follow the lab's rule: the `k`-th link (in order of its node
    /// pair, lower id first) gets [`link_seed`]`(seed, k)` from the simulation's seed for
    /// its lower → higher direction and [`LinkModel::reversed`] of that for the other, so
    /// one simulation seed gives one set of link decisions. `template.delay_ns` and
    /// `template.seed` are not used.
    ///
    /// # Errors
    /// [`LinkModelError::Model`] if the template is invalid; nothing changed.
    pub fn set_link_model_all(&mut self, template: &LinkModel) -> Result<(), LinkModelError> {
        template.validate().map_err(LinkModelError::Model)?;
        let pairs: Vec<(u32, u32, u64)> = self
            .links
            .iter()
            .filter(|((a, b), _)| a < b)
            .map(|((a, b), l)| (*a, *b, l.delay.as_nanos() as u64))
            .collect();
        for (k, (a, b, delay_ns)) in pairs.into_iter().enumerate() {
            let model = LinkModel {
                delay_ns,
                seed: link_seed(self.seed, k as u64),
                ..template.clone()
            };
            self.shape_link(a, b, &model)?;
        }
        Ok(())
    }

    /// Whether directions shaped from now on keep a delay histogram in their tally (default
    /// yes: quantiles; a jittered direction then holds a few kilobytes of buckets). A
    /// simulation of millions of directions turns it off and keeps counts and mean delays.
    pub fn set_link_delay_histograms(&mut self, on: bool) {
        self.shaped.delay_histograms = on;
    }

    /// The model of the shaped direction `from → to` (`None`: unshaped or no such link).
    pub fn link_model(&self, from: u32, to: u32) -> Option<&LinkModel> {
        self.shaped.links.get(&(from, to)).map(|s| s.shaper.model())
    }

    /// What the shaped direction `from → to` did so far (`None`: unshaped or no such link).
    pub fn link_tally(&self, from: u32, to: u32) -> Option<&Tally> {
        self.shaped.links.get(&(from, to)).map(|s| &s.tally)
    }

    /// Sends `bytes` over the direction `from → to` now, as if node `from` had (traffic of
    /// the test's own, for probing a link). Unshaped directions carry it with their delay
    /// and loss like any datagram.
    pub fn send_over(&mut self, from: u32, to: u32, bytes: Vec<u8>) {
        let call = self.begin_call();
        let mut out = self.outbox();
        out.transmits
            .push_back(lightcone_core::io::Transmit { to, bytes });
        // `from` may be down or absent from the datagram's point of view: only the link
        // matters here, so process its transmits without a node call.
        self.process(from, call, out);
    }

    /// Whether `from → to` is shaped (then [`Sim::offer_shaped`] carries its datagrams).
    pub(crate) fn is_shaped(&self, from: u32, to: u32) -> bool {
        self.shaped.links.contains_key(&(from, to))
    }

    /// Offers a datagram of call `call` to the shaped direction `from → to` and queues each
    /// copy the shaper delivers, after `position` (advanced per copy).
    pub(crate) fn offer_shaped(
        &mut self,
        from: u32,
        to: u32,
        bytes: Vec<u8>,
        call: u64,
        position: &mut u64,
    ) {
        let now = self.now;
        let Some(s) = self.shaped.links.get_mut(&(from, to)) else {
            return;
        };
        let class = if lightcone_core::wire::is_class_a(&bytes) {
            Class::A
        } else {
            Class::Data
        };
        let verdict = s
            .shaper
            .offer_class(now.as_nanos(), udp_frame_len(bytes.len()), class);
        let offer = s.tally.offer(&verdict);
        let (first, duplicate) = match verdict {
            Verdict::Deliver { first, duplicate } => {
                for d in std::iter::once(&first).chain(duplicate.as_ref()) {
                    s.tally.waited(class, d);
                }
                (first, duplicate)
            }
            Verdict::Wait { copies } => {
                for _ in 0..copies {
                    s.waiting[class.index()].push_back((bytes.clone(), offer, now));
                }
                self.arm_shaped_start(from, to, call, position);
                return;
            }
            Verdict::Drop(_) => {
                self.lost += 1;
                return;
            }
        };
        for copy in std::iter::once(first).chain(duplicate) {
            *position += 1;
            self.queue.push(copy_event(
                &copy,
                (from, to),
                bytes.clone(),
                (offer, now),
                (call, *position),
            ));
        }
    }

    /// Queues an `Ev::ShapedStart` for `from → to` when its shaper says the next waiting
    /// copy starts, unless one is queued as early.
    fn arm_shaped_start(&mut self, from: u32, to: u32, call: u64, position: &mut u64) {
        let Some(s) = self.shaped.links.get_mut(&(from, to)) else {
            return;
        };
        let Some(at) = s.shaper.next_start_real_ns().map(Instant::from_nanos) else {
            return;
        };
        if s.start_at.is_some_and(|t| t <= at) {
            return;
        }
        s.start_at = Some(at);
        *position += 1;
        self.queue
            .push(Reverse((at, call, *position, Ev::ShapedStart { from, to })));
    }

    /// `Ev::ShapedStart`: starts the waiting copies of `from → to` whose transmitter has
    /// freed, queueing each at its delivery time, and arms the next start.
    pub(crate) fn shaped_start(&mut self, from: u32, to: u32, call: u64) {
        let now = self.now;
        let Some(s) = self.shaped.links.get_mut(&(from, to)) else {
            return;
        };
        if s.start_at != Some(now) {
            return; // stale: flushed, or re-armed earlier
        }
        s.start_at = None;
        let mut position = 0;
        while let Some((class, d)) = s.shaper.start_next(now.as_nanos()) {
            let Some((bytes, offer, sent)) = s.waiting[class.index()].pop_front() else {
                break; // cannot happen: the FIFOs follow the shaper's queues
            };
            s.tally.started(&d);
            s.tally.waited(class, &d);
            position += 1;
            self.queue.push(copy_event(
                &d,
                (from, to),
                bytes,
                (offer, sent),
                (call, position),
            ));
        }
        self.arm_shaped_start(from, to, call, &mut position);
    }

    /// A shaped copy of a `len`-byte datagram left the far end: free its queue space and
    /// count it.
    pub(crate) fn shaped_arrived(
        &mut self,
        from: u32,
        to: u32,
        len: usize,
        offer: u64,
        sent: Instant,
    ) {
        let now = self.now;
        if let Some(s) = self.shaped.links.get_mut(&(from, to)) {
            s.shaper.release(udp_frame_len(len));
            s.tally
                .deliver(offer, now.saturating_since(sent).as_nanos() as u64);
        }
    }

    /// The shaped directions among `keys` go up or down; going down discards the copies on
    /// them (counted as `dropped_down` and lost).
    pub(crate) fn set_shaped_up(&mut self, keys: &[(u32, u32)], up: bool) {
        let mut cut = BTreeSet::new();
        for k in keys {
            if let Some(s) = self.shaped.links.get_mut(k) {
                s.shaper.set_up(up);
                if !up {
                    cut.insert(*k);
                    let n = s.shaper.flush_waiting();
                    let n = (n[0] + n[1]) as u64;
                    s.waiting = Default::default();
                    s.start_at = None;
                    s.tally.flush(n);
                    self.lost += n;
                }
            }
        }
        if cut.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.queue);
        let mut keep = Vec::with_capacity(queue.len());
        for e in queue.into_vec() {
            match &e.0 .3 {
                Ev::Shaped {
                    from, to, bytes, ..
                } if cut.contains(&(*from, *to)) => {
                    if let Some(s) = self.shaped.links.get_mut(&(*from, *to)) {
                        s.shaper.release(udp_frame_len(bytes.len()));
                        s.tally.flush(1);
                    }
                    self.lost += 1;
                }
                _ => keep.push(e),
            }
        }
        self.queue = keep.into();
    }

    /// `set_loss_all` on the shaped directions.
    pub(crate) fn set_shaped_loss_all(&mut self, loss_ppm: u32) {
        let keys: Vec<(u32, u32)> = self.shaped.links.keys().copied().collect();
        for k in keys {
            self.set_shaped_loss(k, loss_ppm);
        }
    }

    /// `set_loss` on a shaped direction: its model's loss becomes random loss of
    /// `loss_ppm` parts per million (uncorrelated), as a diff.
    pub(crate) fn set_shaped_loss(&mut self, key: (u32, u32), loss_ppm: u32) {
        if let Some(s) = self.shaped.links.get_mut(&key) {
            let mut m = s.shaper.model().clone();
            m.loss = if loss_ppm == 0 {
                LossModel::None
            } else {
                LossModel::Random {
                    probability: (f64::from(loss_ppm) / 1e6).min(1.0),
                    correlation: 0.0,
                }
            };
            s.shaper.set_model(m);
        }
    }
}

/// The queue entry of a shaped copy of `bytes` over `from → to` (offer number and send time
/// `sent`), due at its delivery, ordered by (`call`, `position`) among same-time events; a
/// copy corrupted where the receiving host's checks drop it is marked `discard`.
fn copy_event(
    d: &Delivery,
    (from, to): (u32, u32),
    bytes: Vec<u8>,
    (offer, sent): (u64, Instant),
    (call, position): (u64, u64),
) -> Reverse<(Instant, u64, u64, Ev)> {
    let discard = d
        .corrupt_bit
        .is_some_and(|bit| corruption_of(bit) == Corruption::Dropped);
    Reverse((
        Instant::from_nanos(d.at_real_ns),
        call,
        position,
        Ev::Shaped {
            to,
            from,
            bytes,
            offer,
            sent,
            discard,
        },
    ))
}
