//! The optical clock hierarchy: a sans-IO two-way time transfer state machine.
//!
//! Stratum-0 authorities (optical clocks) define the lab's time scale; layer stratum-1 nodes
//! (rubidium/maser) follow an authority; cell nodes (OCXO holdover oscillators) follow their
//! stratum-1. Each client periodically exchanges a request/response pair with its servers —
//! the two-way scheme of IEEE 1588 (PTP delay request–response) and of two-way satellite time
//! and frequency transfer (TWSTFT, ITU-R TF.1153):
//!
//! ```text
//! client  t1 ──── SyncRequest ────▶ t2  server     offset of the client's raw clock:
//!         t4 ◀─── SyncResponse ─── t3               z = ((t4−t3) − (t2−t1) + Δ_cal)/2
//!                                                  RTT = (t4−t1) − (t3−t2)
//! ```
//!
//! `t1`, `t4` are the client's *raw* oscillator readings, `t2`, `t3` the server's *served*
//! time (its raw reading minus its own offset estimate). `Δ_cal` is the calibrated path
//! asymmetry (delay client→server minus server→client). Two-way transfer cancels the path
//! delay exactly when the two directions are equal; an uncalibrated asymmetry Δ biases z by
//! Δ/2 and **cannot be observed** from the exchange. Assumption (documented, and carried in σ):
//! each link's asymmetry is calibrated to within `asymmetry_bound_s`, so the residual bias is
//! at most `asymmetry_bound_s/2`; σ counts it as one sigma, `(asymmetry_bound_s/2)²`.
//!
//! Queueing jitter enters as extra one-way delay. Two mechanisms handle it:
//! * `correction_s` fields play the role of PTP's correctionField: a transparent clock on the
//!   path adds the residence time it measured; the client subtracts it;
//! * what is left shows as RTT above the window minimum; the offset error it causes is at
//!   most half that excess (NTP's error bound), so each sample's variance is
//!   `timestamp_noise_s² + (excess/2)² + floor²` — jittery samples are down-weighted, not
//!   trusted. `floor` = ¼ of the window's (median − minimum) RTT covers the queueing that
//!   even the minimum-RTT sample still carries (≈ 0 with transparent clocks);
//! * a client does not lock before [`LOCK_AFTER_SAMPLES`] responses and starts from the
//!   minimum-RTT one (NTP's clock filter), so one unlucky first sample cannot anchor it.
//!
//! With three or more servers (a stratum-1 following several authorities) the latest
//! offset from each is compared by Marzullo's intersection ([`crate::fuse`], k = 5): a
//! server outside the majority is a falseticker, its responses are ignored and the client
//! moves to a truechimer — an internally detectable lie never reaches the cell. With one or
//! two servers there is no majority; the pulsar check is then the only defence.
//!
//! Wire format: the messages are serde types, and [`TimeMessage::encode`]/[`decode`] give
//! a strict fixed 13/50-byte layout for the agent's opaque time payload.
//!
//! [`decode`]: TimeMessage::decode
//!
//! The offsets feed an offset+frequency Kalman filter ([`crate::fusion::OffsetFreqKalman`])
//! whose process noise comes from the local oscillator model; in holdover the reported σ
//! grows as the oscillator model says ([`crate::OscillatorParams::holdover_variance_s2`]). A
//! run of `step_after` consecutive innovations beyond `step_gate_sigma` that lie on one
//! line in time is taken as a phase step (constant innovations) or frequency step (linear
//! ones) of the reference or of our own clock (PTP servos' step threshold, generalised):
//! the filter re-locks with the fitted offset and frequency. Two honesty guards keep σ
//! covering the error: while unexplained outliers are pending, σ² includes the largest of
//! them; and when the mean normalized innovation squared over the last [`NIS_WINDOW`]
//! updates exceeds 1, the filter covariance is scaled up by it.
//!
//! **Start-up burst** (NTP's `iburst`): a client without a lock polls every
//! `burst_interval_ns` instead of every `poll_interval_ns`, for at most `burst_polls` polls,
//! so the [`LOCK_AFTER_SAMPLES`] exchanges it needs before trusting a path take a fraction of
//! a second instead of eight poll intervals; then the normal cadence. While it has no lock,
//! [`TimeSync::unsync_reason`] says why.
//!
//! **Time input**: every method takes `true_now_ns: u64`, emulated ns since the lab epoch.
//! It drives timers only; measurements use the local raw clock readings (`ClockStamp`) the
//! caller supplies, as real hardware would.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::fusion::OffsetFreqKalman;
use crate::{check_range, ClockStamp, OscillatorParams, TimeSource, TimingError};

/// Node id as the agent's wire format uses it.
pub type PeerId = u32;

/// Most servers a client may be configured with.
pub const MAX_SERVERS: usize = 8;
/// Most requests awaiting a response (oldest dropped first).
pub const MAX_PENDING: usize = 64;
/// RTT history per server for the minimum-RTT reference.
pub const RTT_WINDOW: usize = 64;
/// Responses needed before a client first locks: it learns the path's RTT floor and
/// starts from the minimum-RTT sample among them (NTP's clock-filter idea).
pub const LOCK_AFTER_SAMPLES: usize = 8;
/// Updates over which the innovation consistency (mean NIS) is tracked.
pub const NIS_WINDOW: usize = 16;
/// Deepest stratum; deeper clients report this.
pub const MAX_STRATUM: u8 = 15;

/// Request of a two-way exchange. The client keeps `t1` locally.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub seq: u32,
    /// Residence/queueing time added by transparent clocks on the way, s (0 if none).
    pub correction_s: f64,
}

/// Response of a two-way exchange.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub seq: u32,
    /// Server's served time when the request arrived.
    pub t2: ClockStamp,
    /// Server's served time when the response left.
    pub t3: ClockStamp,
    /// The request's `correction_s`, echoed.
    pub request_correction_s: f64,
    /// Residence/queueing time added on the way back, s.
    pub correction_s: f64,
    /// Server's own σ at `t3`, s.
    pub sigma_s: f64,
    /// Server's stratum (0 = authority).
    pub stratum: u8,
}

/// Everything the time layer puts on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeMessage {
    Request(SyncRequest),
    Response(SyncResponse),
}

/// Encoded size of a [`TimeMessage::Request`], bytes.
pub const REQUEST_WIRE_LEN: usize = 13;
/// Encoded size of a [`TimeMessage::Response`], bytes.
pub const RESPONSE_WIRE_LEN: usize = 50;

impl TimeMessage {
    /// Compact fixed-layout little-endian encoding for the agent's opaque time payload:
    /// tag (1 = request, 2 = response), then the fields in declaration order (`ClockStamp`
    /// as i64 ns + u16 ps, floats as IEEE-754 f64).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(RESPONSE_WIRE_LEN);
        match self {
            TimeMessage::Request(r) => {
                b.push(1);
                b.extend_from_slice(&r.seq.to_le_bytes());
                b.extend_from_slice(&r.correction_s.to_le_bytes());
            }
            TimeMessage::Response(r) => {
                b.push(2);
                b.extend_from_slice(&r.seq.to_le_bytes());
                for t in [r.t2, r.t3] {
                    b.extend_from_slice(&t.ns.to_le_bytes());
                    b.extend_from_slice(&t.ps.to_le_bytes());
                }
                for f in [r.request_correction_s, r.correction_s, r.sigma_s] {
                    b.extend_from_slice(&f.to_le_bytes());
                }
                b.push(r.stratum);
            }
        }
        b
    }

    /// Strict decoding of [`TimeMessage::encode`]'s format: exact length, known tag,
    /// `ps < 1000`, finite floats, σ ≥ 0, stratum ≤ [`MAX_STRATUM`]. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<TimeMessage, TimingError> {
        let mut rd = Reader(bytes);
        let msg = match rd.u8()? {
            1 => {
                let seq = rd.u32()?;
                let correction_s = rd.f64()?;
                TimeMessage::Request(SyncRequest { seq, correction_s })
            }
            2 => {
                let seq = rd.u32()?;
                let t2 = rd.stamp()?;
                let t3 = rd.stamp()?;
                let request_correction_s = rd.f64()?;
                let correction_s = rd.f64()?;
                let sigma_s = rd.f64()?;
                if sigma_s < 0.0 {
                    return Err(TimingError::Malformed("negative sigma"));
                }
                let stratum = rd.u8()?;
                if stratum > MAX_STRATUM {
                    return Err(TimingError::Malformed("stratum above 15"));
                }
                TimeMessage::Response(SyncResponse {
                    seq,
                    t2,
                    t3,
                    request_correction_s,
                    correction_s,
                    sigma_s,
                    stratum,
                })
            }
            _ => return Err(TimingError::Malformed("unknown tag")),
        };
        if !rd.0.is_empty() {
            return Err(TimingError::Malformed("trailing bytes"));
        }
        Ok(msg)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TimingError> {
        if self.0.len() < N {
            return Err(TimingError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, TimingError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, TimingError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn f64(&mut self) -> Result<f64, TimingError> {
        let v = f64::from_le_bytes(self.take()?);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(TimingError::Malformed("non-finite float"))
        }
    }
    fn stamp(&mut self) -> Result<ClockStamp, TimingError> {
        let ns = i64::from_le_bytes(self.take()?);
        let ps = u16::from_le_bytes(self.take()?);
        if ps >= 1000 {
            return Err(TimingError::Malformed("ps >= 1000"));
        }
        Ok(ClockStamp { ns, ps })
    }
}

/// A message to send.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub to: PeerId,
    pub msg: TimeMessage,
}

/// One upstream server and what is known about the path to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerLink {
    pub server: PeerId,
    /// Calibrated asymmetry: delay client→server minus server→client, s.
    pub asymmetry_cal_s: f64,
    /// Bound on the calibration's residual error, s (≥ 0).
    pub asymmetry_bound_s: f64,
}

/// Configuration of a [`TimeSync`]. Safe ranges are checked by `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyncConfig {
    /// Poll period, emulated ns (1 ms ..= 1 day).
    pub poll_interval_ns: u64,
    /// Without an accepted response for this many polls the node is in holdover (1..=1000).
    pub holdover_after_polls: u32,
    /// σ of one hardware timestamp, s (0 ..= 1 s).
    pub timestamp_noise_s: f64,
    /// σ an authority claims for its own realisation of the time scale, s.
    pub authority_sigma_s: f64,
    /// Innovation gate (in σ) for step detection (3 ..= 1e6).
    pub step_gate_sigma: f64,
    /// Consecutive gated innovations that mean "the reference stepped" (1..=100).
    pub step_after: u32,
    /// Poll spacing while the client has no lock yet (the start-up burst), emulated ns
    /// (0: no burst; else 1 ms ..= `poll_interval_ns`).
    #[serde(default = "default_burst_interval_ns")]
    pub burst_interval_ns: u64,
    /// Most polls of the start-up burst (0..=1000); then the normal cadence, lock or not.
    #[serde(default = "default_burst_polls")]
    pub burst_polls: u32,
}

fn default_burst_interval_ns() -> u64 {
    SyncConfig::default().burst_interval_ns
}

fn default_burst_polls() -> u32 {
    SyncConfig::default().burst_polls
}

impl SyncConfig {
    /// A cadence of one exchange per `poll_interval_ns`, with a start-up burst at 1/16 of
    /// it (at least 1 ms): the 8 exchanges of the first lock take half an interval.
    pub fn with_poll_interval(mut self, poll_interval_ns: u64) -> SyncConfig {
        self.poll_interval_ns = poll_interval_ns;
        self.burst_interval_ns = (poll_interval_ns / 16).max(1_000_000).min(poll_interval_ns);
        self
    }
}

/// Why a client has no time yet (`None` from [`TimeSync::unsync_reason`] once it has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsyncReason {
    /// No request has gone out yet, or the first ones are still in flight.
    AwaitingFirstExchange,
    /// Requests went out and nothing came back: the servers are down, unreachable, or
    /// unsynchronized themselves (a server answers only once it has time to serve).
    NoServerReachable,
    /// Answers arrive; the client is collecting the exchanges it needs before it trusts a
    /// path ([`LOCK_AFTER_SAMPLES`]).
    CollectingSamples,
    /// Answers arrive but are refused (malformed, implausible, or from outvoted servers).
    ResponsesRejected,
}

impl UnsyncReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            UnsyncReason::AwaitingFirstExchange => "awaiting_first_exchange",
            UnsyncReason::NoServerReachable => "no_server_reachable",
            UnsyncReason::CollectingSamples => "collecting_samples",
            UnsyncReason::ResponsesRejected => "responses_rejected",
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            poll_interval_ns: 1_000_000_000,
            holdover_after_polls: 5,
            timestamp_noise_s: 20e-12,
            authority_sigma_s: 10e-12,
            step_gate_sigma: 10.0,
            step_after: 3,
            burst_interval_ns: 62_500_000,
            burst_polls: 32,
        }
    }
}

impl SyncConfig {
    pub fn validate(&self) -> Result<(), TimingError> {
        check_range(
            "poll_interval_ns",
            self.poll_interval_ns as f64,
            1e6,
            86_400e9,
            "1 ms ..= 1 day",
        )?;
        check_range(
            "holdover_after_polls",
            self.holdover_after_polls as f64,
            1.0,
            1000.0,
            "1..=1000",
        )?;
        check_range(
            "timestamp_noise_s",
            self.timestamp_noise_s,
            0.0,
            1.0,
            "0..=1 s",
        )?;
        check_range(
            "authority_sigma_s",
            self.authority_sigma_s,
            0.0,
            1.0,
            "0..=1 s",
        )?;
        check_range("step_gate_sigma", self.step_gate_sigma, 3.0, 1e6, "3..=1e6")?;
        check_range("step_after", self.step_after as f64, 1.0, 100.0, "1..=100")?;
        if self.burst_interval_ns != 0 {
            check_range(
                "burst_interval_ns",
                self.burst_interval_ns as f64,
                1e6,
                self.poll_interval_ns as f64,
                "0 or 1 ms ..= poll_interval_ns",
            )?;
        }
        check_range(
            "burst_polls",
            self.burst_polls as f64,
            0.0,
            1000.0,
            "0..=1000",
        )?;
        Ok(())
    }
}

/// A time estimate of the local raw clock: `offset_s` = raw reading − true time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub offset_s: f64,
    pub sigma_s: f64,
    pub source: TimeSource,
    /// Time since the last accepted measurement, s (0 for an authority).
    pub age_s: f64,
}

impl Estimate {
    /// Best estimate of true time given the raw local reading.
    pub fn true_time(&self, local: ClockStamp) -> ClockStamp {
        local.offset_by(-self.offset_s)
    }
}

/// Is this node the root of the hierarchy or a client of it?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SyncRole {
    /// Stratum-0: its raw clock *is* the lab's time scale.
    Authority,
    /// Follows the best of these servers (lowest stratum, then lowest σ).
    Client { servers: Vec<ServerLink> },
}

#[derive(Debug, Clone, PartialEq)]
struct Lock {
    kalman: OffsetFreqKalman,
    /// Local raw time the Kalman state refers to.
    at: ClockStamp,
    /// Local raw time of the last accepted response.
    last_update: ClockStamp,
    server: PeerId,
    stratum: u8,
    server_sigma_s: f64,
    asym_sigma_s: f64,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStats {
    pub requests_sent: u64,
    pub responses_accepted: u64,
    pub responses_rejected: u64,
    pub steps: u64,
    /// Times a server was newly outvoted by the others (Marzullo selection).
    pub falsetickers_flagged: u64,
}

/// The two-way time transfer state machine. Call order:
///
/// * getters: [`TimeSync::estimate`], [`TimeSync::next_timeout_ns`], [`TimeSync::stats`];
/// * inputs: [`TimeSync::handle`] (a received message), [`TimeSync::on_timer`] (at or after
///   `next_timeout_ns`; early calls are harmless no-ops);
/// * commands: [`TimeSync::set_served_bias_s`] (fault: a lying server).
///
/// Outputs are pushed into the caller's `Vec<Outgoing>` (at most [`MAX_SERVERS`] per call).
#[derive(Debug, Clone)]
pub struct TimeSync {
    cfg: SyncConfig,
    params: OscillatorParams,
    q: (f64, f64),
    role: SyncRole,
    next_poll_ns: u64,
    next_seq: u32,
    pending: BTreeMap<(PeerId, u32), ClockStamp>,
    rtts: BTreeMap<PeerId, VecDeque<f64>>,
    lock: Option<Lock>,
    /// Samples (z, rtt, midpoint, server) collected before the first lock (fewer than
    /// LOCK_AFTER_SAMPLES per server, so ≤ LOCK_AFTER_SAMPLES × MAX_SERVERS).
    learning: Vec<(f64, f64, ClockStamp, PeerId)>,
    /// The latest run of gated innovations (midpoint, innovation, r), at most `step_after`.
    outliers: VecDeque<(ClockStamp, f64, f64)>,
    /// Latest (midpoint, offset, total variance) per server, for the selection.
    last_meas: BTreeMap<PeerId, (ClockStamp, f64, f64)>,
    falsetickers: std::collections::BTreeSet<PeerId>,
    /// Normalized innovations squared of the last [`NIS_WINDOW`] updates.
    nis: VecDeque<f64>,
    served_bias_s: f64,
    stats: SyncStats,
    /// Polls of the start-up burst left.
    burst_left: u32,
}

impl TimeSync {
    /// `params` is the local oscillator's model (for process noise and holdover growth).
    /// `first_poll_ns` is when the first requests go out (stagger nodes with it). Errors
    /// leave nothing behind: too many servers, bad config, non-finite calibration.
    pub fn new(
        cfg: SyncConfig,
        params: OscillatorParams,
        role: SyncRole,
        first_poll_ns: u64,
    ) -> Result<Self, TimingError> {
        cfg.validate()?;
        params.validate()?;
        if let SyncRole::Client { servers } = &role {
            if servers.is_empty() || servers.len() > MAX_SERVERS {
                return Err(TimingError::InvalidParameter {
                    name: "servers.len()",
                    value: servers.len() as f64,
                    expected: "1..=8",
                });
            }
            for s in servers {
                check_range(
                    "asymmetry_cal_s",
                    s.asymmetry_cal_s,
                    -1e3,
                    1e3,
                    "|x| <= 1000 s",
                )?;
                check_range(
                    "asymmetry_bound_s",
                    s.asymmetry_bound_s,
                    0.0,
                    1e3,
                    "0..=1000 s",
                )?;
            }
        }
        Ok(TimeSync {
            cfg,
            q: params.kalman_process_noise(),
            params,
            role,
            next_poll_ns: first_poll_ns,
            next_seq: 0,
            pending: BTreeMap::new(),
            rtts: BTreeMap::new(),
            lock: None,
            outliers: VecDeque::new(),
            nis: VecDeque::new(),
            last_meas: BTreeMap::new(),
            falsetickers: std::collections::BTreeSet::new(),
            learning: Vec::new(),
            served_bias_s: 0.0,
            stats: SyncStats::default(),
            burst_left: if cfg.burst_interval_ns > 0 {
                cfg.burst_polls
            } else {
                0
            },
        })
    }

    pub fn role(&self) -> &SyncRole {
        &self.role
    }
    pub fn stats(&self) -> SyncStats {
        self.stats
    }
    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// When [`TimeSync::on_timer`] wants to run next (authorities never poll: `u64::MAX`).
    pub fn next_timeout_ns(&self) -> u64 {
        match self.role {
            SyncRole::Authority => u64::MAX,
            SyncRole::Client { .. } => self.next_poll_ns,
        }
    }

    /// Fault injection: this node serves time shifted by `bias_s` (a compromised or
    /// miscalibrated server). Non-finite values are ignored; clamped to ±1 s.
    pub fn set_served_bias_s(&mut self, bias_s: f64) {
        if bias_s.is_finite() {
            self.served_bias_s = bias_s.clamp(-1.0, 1.0);
        }
    }

    fn holdover_threshold_s(&self) -> f64 {
        self.cfg.holdover_after_polls as f64 * self.cfg.poll_interval_ns as f64 * 1e-9
    }

    /// The current estimate of the local raw clock's offset at raw reading `local`, or
    /// `None` before the first accepted exchange.
    ///
    /// σ² = max(P_filter(now), P_no-noise(now) + holdover_variance(age)) + σ_server² +
    /// (asymmetry_bound/2)²: the filter's own prediction, or — if larger — the oscillator
    /// model's holdover growth since the last update; plus everything upstream.
    pub fn estimate(&self, local: ClockStamp) -> Option<Estimate> {
        match &self.role {
            SyncRole::Authority => Some(Estimate {
                offset_s: 0.0,
                sigma_s: self.cfg.authority_sigma_s,
                source: TimeSource::Authority,
                age_s: 0.0,
            }),
            SyncRole::Client { .. } => {
                let l = self.lock.as_ref()?;
                let dt = local.seconds_since(l.at).max(0.0);
                let age = local.seconds_since(l.last_update).max(0.0);
                // If recent innovations were larger than the filter predicted (mean NIS > 1),
                // its covariance is too optimistic: scale it up by that ratio.
                let inflation = if self.nis.is_empty() {
                    1.0
                } else {
                    (self.nis.iter().sum::<f64>() / self.nis.len() as f64).max(1.0)
                };
                // Unexplained outliers pending (a step or frequency jump not yet confirmed):
                // we may be off by as much as the largest of them.
                let pending = self.outliers.iter().map(|o| o.1 * o.1).fold(0.0, f64::max);
                let v = propagated_variance_s2(&l.kalman, dt, age, self.q, &self.params)
                    * inflation
                    + pending
                    + l.server_sigma_s.powi(2)
                    + l.asym_sigma_s.powi(2);
                let source = if age > self.holdover_threshold_s() {
                    TimeSource::Holdover { stratum: l.stratum }
                } else {
                    TimeSource::Hierarchy { stratum: l.stratum }
                };
                Some(Estimate {
                    offset_s: l.kalman.offset_after(dt),
                    sigma_s: v.sqrt(),
                    source,
                    age_s: age,
                })
            }
        }
    }

    /// Stratum this node serves at (`None` if it cannot serve yet).
    pub fn stratum(&self) -> Option<u8> {
        match self.role {
            SyncRole::Authority => Some(0),
            SyncRole::Client { .. } => self.lock.as_ref().map(|l| l.stratum),
        }
    }

    /// Timer input: sends one request to every configured server when the poll is due.
    pub fn on_timer(&mut self, true_now_ns: u64, local: ClockStamp, out: &mut Vec<Outgoing>) {
        let SyncRole::Client { servers } = &self.role else {
            return;
        };
        if true_now_ns < self.next_poll_ns {
            return;
        }
        for s in servers {
            self.next_seq = self.next_seq.wrapping_add(1);
            self.pending.insert((s.server, self.next_seq), local);
            out.push(Outgoing {
                to: s.server,
                msg: TimeMessage::Request(SyncRequest {
                    seq: self.next_seq,
                    correction_s: 0.0,
                }),
            });
            self.stats.requests_sent += 1;
        }
        while self.pending.len() > MAX_PENDING {
            // Oldest by sequence number (wrapping ignored: 2³² polls is centuries).
            let oldest = *self
                .pending
                .iter()
                .min_by_key(|(k, _)| k.1)
                .map(|(k, _)| k)
                .expect("non-empty");
            self.pending.remove(&oldest);
        }
        if self.lock.is_none() && self.burst_left > 0 {
            // Start-up burst: the next exchange soon, until the first lock.
            self.burst_left -= 1;
            self.next_poll_ns = true_now_ns.saturating_add(self.cfg.burst_interval_ns);
            return;
        }
        self.burst_left = 0;
        let period = self.cfg.poll_interval_ns;
        // Next multiple of the period after now, keeping the node's phase.
        let behind = (true_now_ns - self.next_poll_ns) / period + 1;
        self.next_poll_ns = self
            .next_poll_ns
            .saturating_add(behind.saturating_mul(period));
    }

    /// Why this client has no time yet; `None` once it has a lock (and for an authority).
    pub fn unsync_reason(&self) -> Option<UnsyncReason> {
        let SyncRole::Client { servers } = &self.role else {
            return None;
        };
        if self.lock.is_some() {
            return None;
        }
        let s = &self.stats;
        Some(if !self.learning.is_empty() {
            UnsyncReason::CollectingSamples
        } else if s.responses_rejected > 0 {
            UnsyncReason::ResponsesRejected
        } else if s.requests_sent <= servers.len() as u64 {
            // The first round may still be in flight.
            UnsyncReason::AwaitingFirstExchange
        } else {
            UnsyncReason::NoServerReachable
        })
    }

    /// Message input. `local` is the raw clock reading when the message arrived; a response
    /// to a request is sent immediately with t2 = t3 (the driver should send it at once; any
    /// delay it adds becomes path asymmetry — report it in `correction_s` if measured).
    pub fn handle(
        &mut self,
        _true_now_ns: u64,
        local: ClockStamp,
        from: PeerId,
        msg: TimeMessage,
        out: &mut Vec<Outgoing>,
    ) {
        match msg {
            TimeMessage::Request(req) => {
                let Some(est) = self.estimate(local) else {
                    return; // cannot serve time we do not have
                };
                let Some(stratum) = self.stratum() else {
                    return;
                };
                let served = est.true_time(local).offset_by(self.served_bias_s);
                let corr = if req.correction_s.is_finite() {
                    req.correction_s
                } else {
                    0.0
                };
                out.push(Outgoing {
                    to: from,
                    msg: TimeMessage::Response(SyncResponse {
                        seq: req.seq,
                        t2: served,
                        t3: served,
                        request_correction_s: corr,
                        correction_s: 0.0,
                        sigma_s: est.sigma_s,
                        stratum,
                    }),
                });
            }
            TimeMessage::Response(resp) => {
                if !self.accept_response(local, from, resp) {
                    self.stats.responses_rejected += 1;
                }
            }
        }
    }

    /// The server the filter follows (`None` before the first lock or for an authority).
    pub fn server(&self) -> Option<PeerId> {
        self.lock.as_ref().map(|l| l.server)
    }

    /// Servers currently outvoted by the others (empty with fewer than 3 fresh servers).
    pub fn falsetickers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.falsetickers.iter().copied()
    }

    fn update_falsetickers(&mut self, now: ClockStamp, threshold_s: f64) {
        let freq = self.lock.as_ref().map(|l| l.kalman.x[1]).unwrap_or(0.0);
        let fresh: Vec<(PeerId, f64, f64)> = self
            .last_meas
            .iter()
            .filter(|(_, m)| now.seconds_since(m.0).abs() <= threshold_s)
            .map(|(&id, m)| (id, m.1 + freq * now.seconds_since(m.0), m.2.max(0.0).sqrt()))
            .collect();
        let mut next = std::collections::BTreeSet::new();
        if fresh.len() >= 3 {
            let pairs: Vec<(f64, f64)> = fresh.iter().map(|f| (f.1, f.2)).collect();
            if let Some(f) = crate::fusion::fuse(&pairs, crate::fusion::DEFAULT_ALARM_K) {
                next.extend(f.falsetickers.iter().map(|&i| fresh[i].0));
            }
        }
        self.stats.falsetickers_flagged += next.difference(&self.falsetickers).count() as u64;
        self.falsetickers = next;
    }

    fn accept_response(&mut self, t4: ClockStamp, from: PeerId, r: SyncResponse) -> bool {
        let SyncRole::Client { servers } = &self.role else {
            return false;
        };
        let Some(link) = servers.iter().find(|s| s.server == from).copied() else {
            return false;
        };
        let Some(t1) = self.pending.remove(&(from, r.seq)) else {
            return false; // unknown, duplicate or expired
        };
        let (cf, cr) = (r.request_correction_s, r.correction_s);
        if ![cf, cr, r.sigma_s].iter().all(|v| v.is_finite()) || r.sigma_s < 0.0 {
            return false;
        }
        let fwd = r.t2.seconds_since(t1) - cf;
        let back = t4.seconds_since(r.t3) - cr;
        let rtt = fwd + back;
        if !(rtt.is_finite() && rtt >= -1e-9) {
            return false;
        }
        let z = (back - fwd + link.asymmetry_cal_s) / 2.0;
        if !(z.abs() <= crate::timestamp::MAX_OFFSET_S
            && rtt <= 2.0 * crate::timestamp::MAX_OFFSET_S)
        {
            return false; // a day off or worse: garbage, not a clock
        }
        let hist = self.rtts.entry(from).or_default();
        hist.push_back(rtt);
        while hist.len() > RTT_WINDOW {
            hist.pop_front();
        }
        let min_rtt = hist.iter().copied().fold(f64::INFINITY, f64::min);
        let mut sorted: Vec<f64> = hist.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let median_rtt = sorted[sorted.len() / 2];
        let window_len = hist.len();
        let excess = (rtt - min_rtt).max(0.0);
        // Even the minimum-RTT sample carries some unmeasured queueing; a quarter of the
        // window's median-minus-minimum spread is a conservative floor for it (≈ 0 when
        // transparent clocks remove the queueing).
        let floor = (median_rtt - min_rtt) / 4.0;
        let r_var = self.cfg.timestamp_noise_s.powi(2) + (excess / 2.0).powi(2) + floor.powi(2);
        // The offset measured is the average over the exchange: it belongs to its midpoint.
        let mid = ClockStamp::from_total_ps((t1.total_ps() + t4.total_ps()) / 2);
        let stratum = r.stratum.saturating_add(1).min(MAX_STRATUM);
        let threshold = self.holdover_threshold_s();
        // NTP-style selection across servers (Marzullo): with ≥ 3 fresh servers, those
        // outside the majority's intersection are falsetickers and are not followed.
        let total_var = r_var + r.sigma_s.powi(2) + (link.asymmetry_bound_s / 2.0).powi(2);
        self.last_meas.insert(from, (mid, z, total_var));
        self.update_falsetickers(mid, threshold);
        if self.falsetickers.contains(&from) {
            return false;
        }
        let mut start = (z, r_var, mid);
        if self.lock.is_none() {
            // Learn the path's RTT floor before trusting any offset (per server: RTTs of
            // different paths are not comparable).
            self.learning.push((z, rtt, mid, from));
            let mine = self.learning.iter().filter(|e| e.3 == from).count();
            if mine < LOCK_AFTER_SAMPLES || window_len < LOCK_AFTER_SAMPLES {
                self.stats.responses_accepted += 1;
                return true;
            }
            let best = self
                .learning
                .iter()
                .copied()
                .filter(|e| e.3 == from)
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("non-empty");
            let r0 = self.cfg.timestamp_noise_s.powi(2)
                + ((best.1 - min_rtt).max(0.0) / 2.0).powi(2)
                + floor.powi(2);
            start = (best.0, r0, best.2);
            self.learning.clear();
        }

        if let Some(l) = &self.lock {
            // Stay with the current server unless this one is better, ours went quiet, or
            // ours was outvoted.
            let stale = t4.seconds_since(l.last_update) > threshold;
            let outvoted = self.falsetickers.contains(&l.server);
            if from != l.server && !(stale || outvoted || stratum < l.stratum) {
                return false;
            }
        }
        let mut relock_at: Option<Relock> = self.lock.is_none().then_some((start.0, start.1, None));
        if let Some(l) = &mut self.lock {
            let dt = mid.seconds_since(l.at);
            if dt < 0.0 {
                return false; // older than the state: reordered
            }
            l.kalman.predict(dt, self.q.0, self.q.1);
            l.at = mid;
            let Some(inn) = l.kalman.innovation(z, r_var) else {
                return false;
            };
            if inn.normalized() > self.cfg.step_gate_sigma {
                self.outliers.push_back((mid, inn.residual_s, r_var));
                while self.outliers.len() > self.cfg.step_after as usize {
                    self.outliers.pop_front();
                }
                if self.outliers.len() < self.cfg.step_after as usize {
                    return false; // an outlier until proven a step
                }
                // The filter only predicted through the run, so a phase step of the
                // reference (or our clock) shows as constant innovations and a frequency
                // step as innovations growing linearly in time. Fit ν = a + b·τ (τ ≤ 0 is
                // time before this sample); if the points sit on the line the run is real:
                // re-lock at offset + a with frequency + b. A run that does not fit is noise.
                let pts: Vec<(f64, f64, f64)> = self
                    .outliers
                    .iter()
                    .map(|&(t, nu, rv)| (t.seconds_since(mid), nu, rv))
                    .collect();
                let n = pts.len() as f64;
                let tm = pts.iter().map(|p| p.0).sum::<f64>() / n;
                let nm = pts.iter().map(|p| p.1).sum::<f64>() / n;
                let stt = pts.iter().map(|p| (p.0 - tm).powi(2)).sum::<f64>();
                let slope = if stt > 0.0 {
                    pts.iter().map(|p| (p.0 - tm) * (p.1 - nm)).sum::<f64>() / stt
                } else {
                    0.0
                };
                let at_now = nm - slope * tm;
                let rmax = pts.iter().map(|p| p.2).fold(0.0, f64::max);
                let gate = self.cfg.step_gate_sigma;
                let resid = |p: &(f64, f64, f64)| p.1 - (at_now + slope * p.0);
                if !pts
                    .iter()
                    .all(|p| resid(p).abs() <= gate * (p.2 + rmax).sqrt())
                {
                    return false;
                }
                let spread = pts.iter().map(|p| resid(p).powi(2)).sum::<f64>() / n;
                let freq_var = if stt > 0.0 {
                    (rmax + spread) / stt
                } else {
                    self.params.initial_freq_sigma.max(1e-12).powi(2)
                };
                relock_at = Some((
                    l.kalman.x[0] + at_now,
                    rmax + spread,
                    Some((l.kalman.x[1] + slope, l.kalman.p[1][1] + freq_var)),
                ));
                start.2 = mid;
                self.stats.steps += 1;
            } else {
                self.outliers.clear();
                self.nis
                    .push_back(inn.residual_s.powi(2) / inn.variance_s2.max(1e-300));
                while self.nis.len() > NIS_WINDOW {
                    self.nis.pop_front();
                }
                l.kalman.update(z, r_var);
            }
        }
        if let Some((z0, r0, freq)) = relock_at {
            let freq_sigma = self.params.initial_freq_sigma.max(1e-12);
            let mut k = OffsetFreqKalman::new(z0, r0, freq_sigma);
            if let Some((f, fv)) = freq {
                k.x[1] = f;
                k.p[1][1] = fv.max(self.q.1 * 100.0);
            }
            self.outliers.clear();
            self.nis.clear();
            self.lock = Some(Lock {
                kalman: k,
                at: start.2,
                last_update: t4,
                server: from,
                stratum,
                server_sigma_s: r.sigma_s,
                asym_sigma_s: link.asymmetry_bound_s / 2.0,
            });
        } else if let Some(l) = &mut self.lock {
            l.last_update = t4;
            l.server = from;
            l.stratum = stratum;
            l.server_sigma_s = r.sigma_s;
            l.asym_sigma_s = link.asymmetry_bound_s / 2.0;
        }
        self.stats.responses_accepted += 1;
        true
    }
}

/// How to (re)start the filter: offset, offset variance, and optionally (frequency,
/// frequency variance) carried over from the previous lock.
type Relock = (f64, f64, Option<(f64, f64)>);

/// Offset variance `dt` after the filter state, `age` after the last update:
/// max(P_filter(dt), P_no-noise(dt) + holdover_variance(age)).
pub(crate) fn propagated_variance_s2(
    k: &OffsetFreqKalman,
    dt_s: f64,
    age_s: f64,
    q: (f64, f64),
    params: &OscillatorParams,
) -> f64 {
    let filt = k.covariance_after(dt_s, q.0, q.1)[0][0];
    let det = k.covariance_after(dt_s, 0.0, 0.0)[0][0] + params.holdover_variance_s2(age_s);
    filt.max(det).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(asym_cal_s: f64) -> TimeSync {
        TimeSync::new(
            SyncConfig::default(),
            OscillatorParams::ocxo_holdover(),
            SyncRole::Client {
                servers: vec![ServerLink {
                    server: 0,
                    asymmetry_cal_s: asym_cal_s,
                    asymmetry_bound_s: 1e-9,
                }],
            },
            0,
        )
        .unwrap()
    }

    fn authority() -> TimeSync {
        TimeSync::new(
            SyncConfig::default(),
            OscillatorParams::optical(),
            SyncRole::Authority,
            0,
        )
        .unwrap()
    }

    /// One exchange with constant clocks: client raw = true + x, server = truth; forward
    /// delay d_f, back d_r.
    fn exchange(c: &mut TimeSync, a: &mut TimeSync, t_ns: u64, x_s: f64, df_s: f64, dr_s: f64) {
        let mut out = Vec::new();
        c.on_timer(t_ns, ClockStamp::from_true_ns(t_ns, x_s), &mut out);
        assert_eq!(out.len(), 1);
        let t2_ns = t_ns + (df_s * 1e9) as u64;
        let mut back = Vec::new();
        a.handle(
            t2_ns,
            ClockStamp::from_true_ns(t2_ns, 0.0),
            1,
            out[0].msg,
            &mut back,
        );
        assert_eq!(back.len(), 1);
        let t4_ns = t2_ns + (dr_s * 1e9) as u64;
        let mut none = Vec::new();
        c.handle(
            t4_ns,
            ClockStamp::from_true_ns(t4_ns, x_s),
            0,
            back[0].msg,
            &mut none,
        );
        assert!(none.is_empty());
    }

    #[test]
    fn a_client_bursts_until_its_first_lock_then_polls_at_the_normal_cadence() {
        let (mut c, mut a) = (client(0.0), authority());
        let burst = SyncConfig::default().burst_interval_ns;
        assert_eq!(c.unsync_reason(), Some(UnsyncReason::AwaitingFirstExchange));
        let mut t = 0;
        for k in 0..LOCK_AFTER_SAMPLES {
            assert!(c.estimate(ClockStamp::from_true_ns(t, 0.0)).is_none());
            exchange(&mut c, &mut a, t, 0.0, 0.001, 0.001);
            if k + 1 < LOCK_AFTER_SAMPLES {
                assert_eq!(c.unsync_reason(), Some(UnsyncReason::CollectingSamples));
                assert_eq!(c.next_timeout_ns(), t + burst, "burst spacing");
            }
            t = c.next_timeout_ns();
        }
        assert!(c.estimate(ClockStamp::from_true_ns(t, 0.0)).is_some());
        assert_eq!(c.unsync_reason(), None);
        // Locked after 8 × 62.5 ms instead of 8 s; the next poll after that is a normal one.
        assert!(t <= 8 * burst, "{t}");
        let mut out = Vec::new();
        c.on_timer(t, ClockStamp::from_true_ns(t, 0.0), &mut out);
        assert_eq!(
            c.next_timeout_ns(),
            t + SyncConfig::default().poll_interval_ns
        );

        // Unanswered, the burst stops after `burst_polls` polls and says why.
        let mut lonely = client(0.0);
        let mut t = 0;
        for _ in 0..SyncConfig::default().burst_polls {
            lonely.on_timer(t, ClockStamp::from_true_ns(t, 0.0), &mut out);
            t = lonely.next_timeout_ns();
        }
        assert_eq!(
            lonely.unsync_reason(),
            Some(UnsyncReason::NoServerReachable)
        );
        lonely.on_timer(t, ClockStamp::from_true_ns(t, 0.0), &mut out);
        assert_eq!(
            lonely.next_timeout_ns() - t,
            SyncConfig::default().poll_interval_ns,
            "back to the normal cadence"
        );
        // The spacing is checked: at most the poll interval.
        let bad = SyncConfig {
            burst_interval_ns: 2_000_000_000,
            ..SyncConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(
            SyncConfig::default()
                .with_poll_interval(2_000_000_000)
                .burst_interval_ns,
            125_000_000
        );
    }

    #[test]
    fn symmetric_path_recovers_offset_exactly() {
        let (mut c, mut a) = (client(0.0), authority());
        for k in 0..10u64 {
            exchange(&mut c, &mut a, k * 1_000_000_000, 3.5e-6, 0.01, 0.01);
        }
        let e = c
            .estimate(ClockStamp::from_true_ns(10_000_000_000, 3.5e-6))
            .unwrap();
        assert!((e.offset_s - 3.5e-6).abs() < 1e-11, "{e:?}");
        assert_eq!(e.source, TimeSource::Hierarchy { stratum: 1 });
        assert!(e.sigma_s >= 0.5e-9 && e.sigma_s < 1e-9);
        assert_eq!(c.stats().responses_accepted, 10);
    }

    #[test]
    fn asymmetry_biases_by_half_unless_calibrated() {
        // Forward 10 ms + 40 ns, back 10 ms: Δ = 40 ns → bias −20 ns when uncalibrated.
        let (mut c, mut a) = (client(0.0), authority());
        let (mut cal, mut a2) = (client(40e-9), authority());
        for k in 0..10u64 {
            exchange(&mut c, &mut a, k * 1_000_000_000, 0.0, 0.010_000_04, 0.01);
            exchange(
                &mut cal,
                &mut a2,
                k * 1_000_000_000,
                0.0,
                0.010_000_04,
                0.01,
            );
        }
        let local = ClockStamp::from_true_ns(10_000_000_000, 0.0);
        let e = c.estimate(local).unwrap();
        assert!((e.offset_s + 20e-9).abs() < 1e-11, "{e:?}");
        assert!(cal.estimate(local).unwrap().offset_s.abs() < 1e-11);
    }

    #[test]
    fn holdover_sigma_grows_and_source_changes() {
        let (mut c, mut a) = (client(0.0), authority());
        for k in 0..30u64 {
            exchange(&mut c, &mut a, k * 1_000_000_000, 0.0, 0.001, 0.001);
        }
        let at = |s: u64| {
            c.estimate(ClockStamp::from_true_ns(s * 1_000_000_000, 0.0))
                .unwrap()
        };
        let (e0, e1, e2) = (at(30), at(1000), at(10_000));
        assert!(matches!(e0.source, TimeSource::Hierarchy { .. }));
        assert_eq!(e1.source, TimeSource::Holdover { stratum: 1 });
        assert!(e0.sigma_s < e1.sigma_s && e1.sigma_s < e2.sigma_s);
        let model = OscillatorParams::ocxo_holdover()
            .holdover_variance_s2(e2.age_s)
            .sqrt();
        assert!(e2.sigma_s >= model, "{} < {}", e2.sigma_s, model);
    }

    #[test]
    fn server_step_is_followed_after_step_after_samples() {
        let (mut c, mut a) = (client(0.0), authority());
        for k in 0..20u64 {
            exchange(&mut c, &mut a, k * 1_000_000_000, 0.0, 0.001, 0.001);
        }
        a.set_served_bias_s(1e-6); // the authority now lies by +1 µs
        for k in 20..23u64 {
            exchange(&mut c, &mut a, k * 1_000_000_000, 0.0, 0.001, 0.001);
        }
        assert_eq!(c.stats().steps, 1);
        // Our raw clock is now 1 µs *behind* what the server says.
        let e = c
            .estimate(ClockStamp::from_true_ns(23_000_000_000, 0.0))
            .unwrap();
        assert!((e.offset_s + 1e-6).abs() < 1e-9, "{e:?}");
        assert_eq!(c.stats().responses_rejected, 2);
    }

    #[test]
    fn junk_responses_are_rejected() {
        let mut c = client(0.0);
        let mut out = Vec::new();
        c.on_timer(0, ClockStamp::default(), &mut out);
        let bad = SyncResponse {
            seq: 1,
            t2: ClockStamp::default(),
            t3: ClockStamp::default(),
            request_correction_s: f64::NAN,
            correction_s: 0.0,
            sigma_s: 1e-9,
            stratum: 0,
        };
        c.handle(
            1,
            ClockStamp::default(),
            0,
            TimeMessage::Response(bad),
            &mut out,
        );
        // Unknown server and unknown sequence number.
        let ok = SyncResponse {
            request_correction_s: 0.0,
            ..bad
        };
        c.handle(
            1,
            ClockStamp::default(),
            7,
            TimeMessage::Response(ok),
            &mut out,
        );
        c.handle(
            1,
            ClockStamp::default(),
            0,
            TimeMessage::Response(SyncResponse { seq: 99, ..ok }),
            &mut out,
        );
        assert_eq!(c.stats().responses_rejected, 3);
        assert!(c.estimate(ClockStamp::default()).is_none());
        // A node without time does not answer requests.
        let mut o2 = Vec::new();
        c.handle(
            1,
            ClockStamp::default(),
            5,
            TimeMessage::Request(SyncRequest {
                seq: 1,
                correction_s: 0.0,
            }),
            &mut o2,
        );
        assert!(o2.is_empty());
    }

    #[test]
    fn pending_is_bounded_and_config_checked() {
        let mut c = client(0.0);
        let mut out = Vec::new();
        for k in 0..1000u64 {
            c.on_timer(k * 1_000_000_000, ClockStamp::default(), &mut out);
        }
        assert_eq!(out.len(), 1000);
        assert!(c.pending.len() <= MAX_PENDING);
        let cfg = SyncConfig {
            timestamp_noise_s: f64::NAN,
            ..SyncConfig::default()
        };
        assert!(TimeSync::new(cfg, OscillatorParams::ideal(), SyncRole::Authority, 0).is_err());
        let none = SyncRole::Client { servers: vec![] };
        assert!(TimeSync::new(SyncConfig::default(), OscillatorParams::ideal(), none, 0).is_err());
    }

    fn arb_stamp() -> impl proptest::strategy::Strategy<Value = ClockStamp> {
        use proptest::prelude::*;
        (any::<i64>(), 0u16..1000).prop_map(|(ns, ps)| ClockStamp { ns, ps })
    }

    proptest::proptest! {
        #[test]
        fn codec_roundtrips(
            seq in proptest::prelude::any::<u32>(),
            t2 in arb_stamp(),
            t3 in arb_stamp(),
            c1 in -1.0f64..1.0,
            c2 in -1.0f64..1.0,
            sigma in 0.0f64..1.0,
            stratum in 0u8..=MAX_STRATUM,
        ) {
            let req = TimeMessage::Request(SyncRequest { seq, correction_s: c1 });
            let e = req.encode();
            proptest::prop_assert_eq!(e.len(), REQUEST_WIRE_LEN);
            proptest::prop_assert_eq!(TimeMessage::decode(&e).unwrap(), req);
            let resp = TimeMessage::Response(SyncResponse {
                seq, t2, t3, request_correction_s: c1, correction_s: c2, sigma_s: sigma, stratum,
            });
            let e = resp.encode();
            proptest::prop_assert_eq!(e.len(), RESPONSE_WIRE_LEN);
            proptest::prop_assert_eq!(TimeMessage::decode(&e).unwrap(), resp);
        }

        #[test]
        fn arbitrary_responses_never_panic_or_poison_the_estimate(
            msgs in proptest::collection::vec(
                (0u32..4, proptest::prelude::any::<i64>(), proptest::prelude::any::<f64>(),
                 proptest::prelude::any::<f64>(), 0u8..20),
                1..40,
            )
        ) {
            let mut c = client(0.0);
            let mut out = Vec::new();
            for (i, (seq, ns, f1, f2, stratum)) in msgs.into_iter().enumerate() {
                let now = i as u64 * 1_000_000_000;
                c.on_timer(now, ClockStamp::from_true_ns(now, 0.0), &mut out);
                let resp = SyncResponse {
                    seq,
                    t2: ClockStamp { ns, ps: 0 },
                    t3: ClockStamp { ns, ps: 0 },
                    request_correction_s: f1,
                    correction_s: f2,
                    sigma_s: f2,
                    stratum,
                };
                c.handle(now, ClockStamp::from_true_ns(now + 1, 0.0), 0,
                         TimeMessage::Response(resp), &mut out);
                if let Some(e) = c.estimate(ClockStamp::from_true_ns(now + 2, 0.0)) {
                    proptest::prop_assert!(!e.offset_s.is_nan() && !e.sigma_s.is_nan());
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let _ = TimeMessage::decode(&bytes);
        }
    }

    #[test]
    fn decode_rejects_malformed() {
        let ok = TimeMessage::Response(SyncResponse {
            seq: 1,
            t2: ClockStamp { ns: 1, ps: 2 },
            t3: ClockStamp { ns: 3, ps: 4 },
            request_correction_s: 0.0,
            correction_s: 0.0,
            sigma_s: 1e-9,
            stratum: 2,
        })
        .encode();
        assert!(TimeMessage::decode(&ok).is_ok());
        assert!(TimeMessage::decode(&ok[..49]).is_err());
        let mut long = ok.clone();
        long.push(0);
        assert!(TimeMessage::decode(&long).is_err());
        let mut bad_tag = ok.clone();
        bad_tag[0] = 9;
        assert!(TimeMessage::decode(&bad_tag).is_err());
        let mut bad_ps = ok.clone();
        bad_ps[13..15].copy_from_slice(&1000u16.to_le_bytes());
        assert!(TimeMessage::decode(&bad_ps).is_err());
        let mut nan = ok.clone();
        nan[25..33].copy_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(
            TimeMessage::decode(&nan),
            Err(TimingError::Malformed("non-finite float"))
        );
        let mut deep = ok;
        deep[49] = 16;
        assert!(TimeMessage::decode(&deep).is_err());
        assert!(TimeMessage::decode(&[]).is_err());
    }

    #[test]
    fn messages_roundtrip_through_json() {
        let m = TimeMessage::Response(SyncResponse {
            seq: 3,
            t2: ClockStamp { ns: -5, ps: 7 },
            t3: ClockStamp { ns: 9, ps: 999 },
            request_correction_s: 1e-6,
            correction_s: 2e-6,
            sigma_s: 1e-9,
            stratum: 1,
        });
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<TimeMessage>(&j).unwrap(), m);
    }
}
