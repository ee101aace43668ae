//! `NodeClock`: everything the node agent embeds for time — the emulated hardware clock,
//! the optical-hierarchy sync, the pulsar receiver, the compromise check, metrics and fault
//! injection — behind one sans-IO type.
//!
//! Call order (quinn-style):
//! * getters: [`NodeClock::next_timeout_ns`], [`NodeClock::estimate`],
//!   [`NodeClock::timestamp`], [`NodeClock::metrics`];
//! * inputs: [`NodeClock::handle`] (a [`TimeMessage`] received), [`NodeClock::poll`] (timer
//!   due; spurious calls are no-ops);
//! * commands: [`NodeClock::inject`] (faults), [`NodeClock::sample`] (record a metrics
//!   sample for the coverage ratio).
//!
//! Selection of the node's best time: the hierarchy (authority/hierarchy/holdover) unless a
//! compromise alarm is active and the pulsar estimate is available, then the pulsars
//! (an insider can forge the hierarchy, not the sky); with no hierarchy at all, the pulsars;
//! else unsynchronized. The compromise check (fusion module) runs at every pulsar fix,
//! comparing the fix with the hierarchy estimate at the same instant.

use serde::{Deserialize, Serialize};

use crate::fusion::{CompromiseMonitor, DEFAULT_ALARM_K};
use crate::pulsar::{PulsarArray, PulsarClock, PulsarConfig};
use crate::sync::{Outgoing, SyncRole, SyncStats};
use crate::timestamp::ROUNDING_SIGMA_S;
use crate::{
    derive_seed, ClockStamp, CoordTimestamp, Estimate, Oscillator, OscillatorParams, PeerId,
    ServerLink, SyncConfig, TimeMessage, TimeSource, TimeSync, TimingError,
};

/// Where the node sits in the time hierarchy; picks the default oscillator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Stratum-0 optical clock (`role: authority` in the topology).
    Authority,
    /// Layer stratum-1 (hydrogen maser by default).
    Stratum1,
    /// Cell node with an OCXO holdover oscillator.
    Cell,
}

/// Everything needed to build a [`NodeClock`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeClockConfig {
    pub id: PeerId,
    pub role: NodeRole,
    pub position_au: [f64; 3],
    pub oscillator: OscillatorParams,
    pub sync: SyncConfig,
    /// Upstream servers (ignored for an authority; 1..=8 otherwise).
    pub servers: Vec<ServerLink>,
    pub pulsar: PulsarConfig,
    /// k of the compromise check (see [`crate::fusion`]).
    pub alarm_k: f64,
    /// Seed of this node's RNG streams (derive it from the lab seed and the node id).
    pub seed: u64,
}

impl NodeClockConfig {
    /// Defaults for a role: optical / hydrogen maser / OCXO, 1 s polls, 1 h pulsar fixes,
    /// k = 5.
    pub fn preset(
        id: PeerId,
        role: NodeRole,
        position_au: [f64; 3],
        servers: Vec<ServerLink>,
        seed: u64,
    ) -> Self {
        let oscillator = match role {
            NodeRole::Authority => OscillatorParams::optical(),
            NodeRole::Stratum1 => OscillatorParams::hydrogen_maser(),
            NodeRole::Cell => OscillatorParams::ocxo_holdover(),
        };
        NodeClockConfig {
            id,
            role,
            position_au,
            oscillator,
            sync: SyncConfig::default(),
            servers,
            pulsar: PulsarConfig::default(),
            alarm_k: DEFAULT_ALARM_K,
            seed,
        }
    }
}

/// Faults the `lightcone fault clock …` verbs map onto.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockFault {
    /// The hardware clock's phase jumps (`--step`), s.
    Step { offset_s: f64 },
    /// The hardware clock's frequency changes (`--drift`), fractional.
    Drift { freq_offset: f64 },
    /// The node serves time shifted by this much while its own clock is fine — a
    /// compromised (lying) stratum-0 authority. 0 clears it.
    ServeBias { offset_s: f64 },
    /// The node loses (or regains) sight of all pulsars.
    PulsarLoss { lost: bool },
}

/// What an agent exports (see issue 5, "Metrics").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeMetrics {
    /// `lightcone_time_error_seconds`: best estimate minus ground truth, s (NaN if
    /// unsynchronized).
    pub true_error_s: f64,
    /// `lightcone_time_sigma_seconds` (∞ if unsynchronized).
    pub sigma_s: f64,
    /// |error| ≤ 3σ for this sample.
    pub within_3sigma: bool,
    /// Share of recorded samples (synchronized ones) with |error| ≤ 3σ; 1 with none.
    pub coverage_ratio: f64,
    /// Samples recorded by [`NodeClock::sample`] while synchronized.
    pub samples_total: u64,
    /// Time since the hierarchy last delivered an accepted measurement, s (0 for an
    /// authority, ∞ if never).
    pub holdover_age_s: f64,
    pub in_holdover: bool,
    /// `lightcone_time_alarms_total`.
    pub alarms_total: u64,
    pub alarm_active: bool,
    pub source: TimeSource,
    /// σ of the pulsar-only estimate, s (∞ when unavailable).
    pub pulsar_sigma_s: f64,
    /// Hierarchy steps followed (reference jumps).
    pub steps_total: u64,
}

/// One node's time subsystem. See the module doc for the call order.
#[derive(Debug, Clone)]
pub struct NodeClock {
    cfg: NodeClockConfig,
    osc: Oscillator,
    sync: TimeSync,
    pulsar: PulsarClock,
    monitor: CompromiseMonitor,
    samples: u64,
    covered: u64,
    /// How well this node's ground truth is known, s: a sample counts as within 3σ when
    /// |error| ≤ 3σ + this (0 but for a lab across hosts, whose hosts place the lab's
    /// epoch on their own clocks to within a measured bound).
    truth_uncertainty_s: f64,
}

impl NodeClock {
    /// Builds a node whose clock powers up at `start_ns`. Errors leave nothing behind.
    pub fn new(cfg: NodeClockConfig, start_ns: u64) -> Result<Self, TimingError> {
        let osc = Oscillator::new(cfg.oscillator, derive_seed(cfg.seed, 1), start_ns)?;
        let role = match cfg.role {
            NodeRole::Authority => SyncRole::Authority,
            _ => SyncRole::Client {
                servers: cfg.servers.clone(),
            },
        };
        // Stagger the first poll within one period (of the start-up burst, if any) so
        // nodes do not poll in lockstep.
        let period = match cfg.sync.burst_interval_ns {
            0 => cfg.sync.poll_interval_ns,
            b => b.min(cfg.sync.poll_interval_ns),
        }
        .max(1);
        let first_poll = start_ns + derive_seed(cfg.seed, 2) % period;
        let sync = TimeSync::new(cfg.sync, cfg.oscillator, role, first_poll)?;
        let pulsar = PulsarClock::new(
            cfg.pulsar,
            cfg.oscillator,
            cfg.position_au,
            derive_seed(cfg.seed, 3),
            start_ns,
        )?;
        Ok(NodeClock {
            monitor: CompromiseMonitor::new(cfg.alarm_k),
            cfg,
            osc,
            sync,
            pulsar,
            samples: 0,
            covered: 0,
            truth_uncertainty_s: 0.0,
        })
    }

    /// Widens the within-3σ test (and so the coverage ratio) by `s`, the uncertainty of
    /// the ground truth errors are measured against; a negative or non-finite `s` is 0.
    pub fn set_truth_uncertainty(&mut self, s: f64) {
        self.truth_uncertainty_s = if s.is_finite() && s > 0.0 { s } else { 0.0 };
    }

    pub fn id(&self) -> PeerId {
        self.cfg.id
    }
    pub fn config(&self) -> &NodeClockConfig {
        &self.cfg
    }
    pub fn oscillator(&self) -> &Oscillator {
        &self.osc
    }
    pub fn sync(&self) -> &TimeSync {
        &self.sync
    }
    pub fn pulsar(&self) -> &PulsarClock {
        &self.pulsar
    }
    pub fn monitor(&self) -> &CompromiseMonitor {
        &self.monitor
    }
    pub fn sync_stats(&self) -> SyncStats {
        self.sync.stats()
    }

    /// Why the node has no time at `true_now_ns` (`None` when it has: hierarchy, holdover,
    /// pulsars or its own authority clock).
    pub fn unsync_reason(&mut self, true_now_ns: u64) -> Option<crate::sync::UnsyncReason> {
        let local = self.osc.read(true_now_ns);
        match self.best(local) {
            Some(_) => None,
            None => Some(
                self.sync
                    .unsync_reason()
                    .unwrap_or(crate::sync::UnsyncReason::AwaitingFirstExchange),
            ),
        }
    }

    /// Earliest time [`NodeClock::poll`] has work to do, ns.
    pub fn next_timeout_ns(&self) -> u64 {
        self.sync
            .next_timeout_ns()
            .min(self.pulsar.next_timeout_ns())
    }

    /// Message input (a time datagram from `from`); replies go into `out`.
    pub fn handle(
        &mut self,
        true_now_ns: u64,
        from: PeerId,
        msg: TimeMessage,
        out: &mut Vec<Outgoing>,
    ) {
        let local = self.osc.read(true_now_ns);
        self.sync.handle(true_now_ns, local, from, msg, out);
    }

    /// Timer input: sync polls and pulsar fixes that are due (each runs the compromise
    /// check). Early or repeated calls do nothing.
    pub fn poll(&mut self, true_now_ns: u64, sky: &PulsarArray, out: &mut Vec<Outgoing>) {
        let local = self.osc.read(true_now_ns);
        self.sync.on_timer(true_now_ns, local, out);
        let x = self.osc.phase_error_s();
        let hier = self.sync.estimate(local);
        let hint = hier.map(|h| h.offset_s);
        if let Some(fix) = self.pulsar.poll(true_now_ns, x, local, hint, sky) {
            if let Some(h) = hier {
                self.monitor
                    .check(h.offset_s, h.sigma_s, fix.offset_s, fix.sigma_s);
            }
        }
    }

    /// The node's best estimate of its raw clock offset at `true_now_ns` (advances the
    /// emulated clock). `None` when unsynchronized.
    pub fn estimate(&mut self, true_now_ns: u64) -> Option<Estimate> {
        let local = self.osc.read(true_now_ns);
        self.best(local)
    }

    fn best(&self, local: ClockStamp) -> Option<Estimate> {
        let h = self.sync.estimate(local);
        let p = self.pulsar.estimate(local);
        match (h, p) {
            (Some(_), Some(p)) if self.monitor.alarm_active() => Some(p),
            (Some(h), _) => Some(h),
            (None, p) => p,
        }
    }

    /// Hierarchy and pulsar estimates combined by [`crate::fuse`] (Marzullo selection, then
    /// inverse-variance weighting) at the node's alarm k; `None` when either is missing or
    /// they disagree. Index 0 is the hierarchy, 1 the pulsars.
    pub fn fused(&mut self, true_now_ns: u64) -> Option<crate::Fused> {
        let local = self.osc.read(true_now_ns);
        let h = self.sync.estimate(local)?;
        let p = self.pulsar.estimate(local)?;
        crate::fuse(
            &[(h.offset_s, h.sigma_s), (p.offset_s, p.sigma_s)],
            self.monitor.k(),
        )
    }

    /// A coordinate-tagged timestamp for "now".
    pub fn timestamp(&mut self, true_now_ns: u64) -> CoordTimestamp {
        let local = self.osc.read(true_now_ns);
        match self.best(local) {
            Some(e) => {
                let t = e.true_time(local).total_ps();
                CoordTimestamp {
                    position_au: self.cfg.position_au,
                    estimate_ns: (t.div_euclid(1000) + i128::from(t.rem_euclid(1000) >= 500))
                        .clamp(i64::MIN as i128, i64::MAX as i128)
                        as i64,
                    sigma_s: (e.sigma_s.powi(2) + ROUNDING_SIGMA_S.powi(2)).sqrt(),
                    source: e.source,
                }
            }
            None => CoordTimestamp {
                position_au: self.cfg.position_au,
                estimate_ns: local.ns,
                // Finite so the stamp survives JSON (which has no ∞); the source says it all.
                sigma_s: f64::MAX,
                source: TimeSource::Unsynchronized,
            },
        }
    }

    /// Metrics at `true_now_ns` against ground truth, without recording a sample.
    pub fn metrics(&mut self, true_now_ns: u64) -> TimeMetrics {
        let local = self.osc.read(true_now_ns);
        let x = self.osc.phase_error_s();
        let best = self.best(local);
        let hier = self.sync.estimate(local);
        let (err, sigma, source) = match best {
            // Time = raw − offset estimate, so its error is x − offset estimate.
            Some(e) => (x - e.offset_s, e.sigma_s, e.source),
            None => (f64::NAN, f64::INFINITY, TimeSource::Unsynchronized),
        };
        let within = err.is_finite() && err.abs() <= 3.0 * sigma + self.truth_uncertainty_s;
        let holdover_age_s = hier.map(|h| h.age_s).unwrap_or(f64::INFINITY);
        TimeMetrics {
            true_error_s: err,
            sigma_s: sigma,
            within_3sigma: within,
            coverage_ratio: if self.samples == 0 {
                1.0
            } else {
                self.covered as f64 / self.samples as f64
            },
            samples_total: self.samples,
            holdover_age_s,
            in_holdover: matches!(hier.map(|h| h.source), Some(TimeSource::Holdover { .. })),
            alarms_total: self.monitor.alarms_total(),
            alarm_active: self.monitor.alarm_active(),
            source,
            pulsar_sigma_s: self
                .pulsar
                .estimate(local)
                .map(|p| p.sigma_s)
                .unwrap_or(f64::INFINITY),
            steps_total: self.sync.stats().steps,
        }
    }

    /// Records one sample into the coverage ratio (unsynchronized samples are not counted)
    /// and returns the metrics including it.
    pub fn sample(&mut self, true_now_ns: u64) -> TimeMetrics {
        let m = self.metrics(true_now_ns);
        if m.source != TimeSource::Unsynchronized {
            self.samples += 1;
            self.covered += u64::from(m.within_3sigma);
        }
        TimeMetrics {
            coverage_ratio: if self.samples == 0 {
                1.0
            } else {
                self.covered as f64 / self.samples as f64
            },
            samples_total: self.samples,
            ..m
        }
    }

    /// Fault injection at `true_now_ns`.
    pub fn inject(&mut self, true_now_ns: u64, fault: ClockFault) {
        self.osc.advance_to(true_now_ns);
        match fault {
            ClockFault::Step { offset_s } => self.osc.inject_step(offset_s),
            ClockFault::Drift { freq_offset } => self.osc.inject_drift(freq_offset),
            ClockFault::ServeBias { offset_s } => self.sync.set_served_bias_s(offset_s),
            ClockFault::PulsarLoss { lost } => self.pulsar.set_lost(lost),
        }
    }

    /// Fault: hide one pulsar from this node.
    pub fn set_pulsar_lost(&mut self, idx: usize, lost: bool) {
        self.pulsar.set_pulsar_lost(idx, lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_its_own_reference_and_unsynced_cell_says_so() {
        let sky = PulsarArray::standard(1);
        let cfg = NodeClockConfig::preset(0, NodeRole::Authority, [1.0, 0.0, 0.0], vec![], 5);
        let mut a = NodeClock::new(cfg, 0).unwrap();
        let m = a.metrics(1_000_000_000);
        assert_eq!(m.source, TimeSource::Authority);
        assert!(m.true_error_s.abs() < 1e-12 && m.within_3sigma);
        let mut out = Vec::new();
        a.poll(3_600_000_000_000, &sky, &mut out);
        let f = a.fused(3_600_000_000_000).expect("healthy sources agree");
        assert_eq!(f.truechimers, vec![0, 1]);
        assert!(
            f.offset_s.abs() < 5e-11,
            "dominated by the 10 ps authority: {}",
            f.offset_s
        );
        a.inject(2_000_000_000, ClockFault::Step { offset_s: 1e-6 });
        assert!((a.metrics(3_600_000_000_000).true_error_s - 1e-6).abs() < 1e-12);
        // A 1 µs error is outside 3σ — unless ground truth itself is known only to ± 2 µs
        // (a lab across hosts), when it cannot be told from a correct clock.
        assert!(!a.metrics(3_600_000_000_000).within_3sigma);
        a.set_truth_uncertainty(2e-6);
        assert!(a.metrics(3_600_000_000_000).within_3sigma);
        a.set_truth_uncertainty(f64::NAN);
        assert!(!a.metrics(3_600_000_000_000).within_3sigma);
        a.poll(7_200_000_000_000, &sky, &mut out);
        // Its own pulsar fix sees the 1 µs step: the authority flags itself.
        assert_eq!(a.metrics(7_200_000_000_000).alarms_total, 1);
        assert!(
            a.fused(7_200_000_000_000).is_none(),
            "the sources now disagree"
        );

        let server = ServerLink {
            server: 0,
            asymmetry_cal_s: 0.0,
            asymmetry_bound_s: 1e-9,
        };
        let cell = NodeClockConfig::preset(1, NodeRole::Cell, [1.0, 0.0, 0.0], vec![server], 6);
        let mut c = NodeClock::new(cell, 0).unwrap();
        let m = c.sample(1_000);
        assert_eq!(m.source, TimeSource::Unsynchronized);
        assert_eq!(m.samples_total, 0);
        assert!(!m.within_3sigma && m.sigma_s.is_infinite());
        let ts = c.timestamp(1_000);
        assert_eq!(ts.source, TimeSource::Unsynchronized);
        let back: CoordTimestamp =
            serde_json::from_str(&serde_json::to_string(&ts).unwrap()).unwrap();
        assert_eq!(back, ts);
    }
}
