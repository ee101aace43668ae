//! The per-link Prometheus series, defined once for both engines, and the one renderer of
//! link metrics.
//!
//! - wire: the wire engine's `WireMetrics` registers a [`LinkSeries`] in the lab's registry and
//!   updates it as frames pass (every outcome, the achieved-delay histogram).
//! - netem: the kernel keeps the counters; on each scrape the supervisor reads every link
//!   end's root qdisc ([`super::netem::stats`]) and [`netem_families`] turns those readings
//!   into the same families. netem counts loss-model drops and queue-overflow drops in one
//!   counter, so its drops carry `outcome="dropped_loss_or_queue"` (wire splits them into
//!   `dropped_loss` and `dropped_queue`), and `lightcone_link_delay_seconds` (achieved
//!   delay) is absent: qdisc statistics do not time packets.
//!
//! [`render`] encodes families as Prometheus text; both engines' families go through it.

use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, Opts, Registry};

use super::netem::NetemStats;
use super::stats::{Direction, DELAY_BUCKETS_S};

/// The series of the longest wait per class ([`LinkSeries::wait`]).
pub const WAIT_MAX_SERIES: &str = "lightcone_link_wait_max_seconds";
/// The series of the longest part of a Class-A wait spent behind data
/// ([`LinkSeries::a_behind_data`]).
pub const A_BEHIND_DATA_SERIES: &str = "lightcone_link_class_a_behind_data_max_seconds";

/// `outcome` of netem's drops: the qdisc's one drop counter covers the loss model and a full
/// queue alike.
pub const NETEM_DROPPED: &str = "dropped_loss_or_queue";

/// `lightcone_link_packets_total{lab,link,direction,outcome}`,
/// `lightcone_link_delay_seconds{lab,link,direction}` (achieved one-way delay, real seconds),
/// `lightcone_link_configured_delay_seconds` and `lightcone_link_queue_depth` (packets).
#[derive(Debug, Clone)]
pub struct LinkSeries {
    pub packets: prometheus::IntCounterVec,
    pub delay: prometheus::HistogramVec,
    pub configured: prometheus::GaugeVec,
    pub depth: prometheus::IntGaugeVec,
    /// `lightcone_link_wait_max_seconds{lab,link,direction,class}`: the longest a frame of
    /// the class (`a`, `data`) waited for the direction's transmitter, real seconds (the
    /// queueing strict priority spares Class A; wire engine only).
    pub wait: prometheus::GaugeVec,
    /// `lightcone_link_class_a_behind_data_max_seconds{lab,link,direction}`: the longest
    /// part of a Class-A frame's wait spent behind a data frame that held the transmitter
    /// when it arrived (the rest was behind Class-A frames ahead of it), real seconds.
    pub a_behind_data: prometheus::GaugeVec,
    /// `lightcone_link_late_max_seconds{lab,link,direction}`: the latest the engine sent a
    /// frame, or gave a waiting frame the transmitter, after the time its model set, real
    /// seconds (wire engine only): a host that cannot keep up shows here, not as a slower
    /// link.
    pub late: prometheus::GaugeVec,
}

impl LinkSeries {
    pub fn new() -> Result<LinkSeries, prometheus::Error> {
        let labels = ["lab", "link", "direction"];
        Ok(LinkSeries {
            packets: prometheus::IntCounterVec::new(
                Opts::new(
                    "lightcone_link_packets_total",
                    "Frames offered to a link direction, by outcome",
                ),
                &["lab", "link", "direction", "outcome"],
            )?,
            delay: prometheus::HistogramVec::new(
                HistogramOpts::new(
                    "lightcone_link_delay_seconds",
                    "Achieved one-way delay of forwarded frames, real seconds",
                )
                .buckets(DELAY_BUCKETS_S.to_vec()),
                &labels,
            )?,
            configured: prometheus::GaugeVec::new(
                Opts::new(
                    "lightcone_link_configured_delay_seconds",
                    "Configured one-way delay, real seconds (emulated / time_scale)",
                ),
                &labels,
            )?,
            depth: prometheus::IntGaugeVec::new(
                Opts::new(
                    "lightcone_link_queue_depth",
                    "Frames queued on a link direction",
                ),
                &labels,
            )?,
            wait: prometheus::GaugeVec::new(
                Opts::new(
                    WAIT_MAX_SERIES,
                    "Longest wait of a frame of the class for the link direction's transmitter, real seconds",
                ),
                &["lab", "link", "direction", "class"],
            )?,
            a_behind_data: prometheus::GaugeVec::new(
                Opts::new(
                    A_BEHIND_DATA_SERIES,
                    "Longest part of a Class-A frame's wait spent behind a data frame, real seconds",
                ),
                &labels,
            )?,
            late: prometheus::GaugeVec::new(
                Opts::new(
                    "lightcone_link_late_max_seconds",
                    "Latest the engine sent a frame, or started a waiting one, after its model's time, real seconds",
                ),
                &labels,
            )?,
        })
    }

    /// How many series [`LinkSeries::collector`] hands out.
    const COLLECTORS: usize = 7;

    fn collector(&self, i: usize) -> Box<dyn prometheus::core::Collector> {
        match i {
            0 => Box::new(self.packets.clone()),
            1 => Box::new(self.delay.clone()),
            2 => Box::new(self.configured.clone()),
            3 => Box::new(self.depth.clone()),
            4 => Box::new(self.wait.clone()),
            5 => Box::new(self.a_behind_data.clone()),
            _ => Box::new(self.late.clone()),
        }
    }

    /// Unregister every series [`LinkSeries::register`] registered.
    pub fn unregister(&self, registry: &Registry) {
        for i in 0..Self::COLLECTORS {
            let _ = registry.unregister(self.collector(i));
        }
    }

    /// Register every series in `registry`; on error nothing stays registered.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        for i in 0..Self::COLLECTORS {
            if let Err(e) = registry.register(self.collector(i)) {
                for j in 0..i {
                    let _ = registry.unregister(self.collector(j));
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// One netem reading: the root qdisc of the interface at the sending end of `direction`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetemSample {
    pub link: String,
    pub direction: Direction,
    pub stats: NetemStats,
    /// Configured one-way delay, real seconds (emulated / time_scale).
    pub configured_delay_s: f64,
}

/// The link families of a netem lab from one reading of its qdiscs (see the module doc for
/// what differs from wire).
pub fn netem_families(lab: &str, samples: &[NetemSample]) -> Vec<MetricFamily> {
    let Ok(s) = LinkSeries::new() else {
        // Only fails on invalid metric names or labels, which are constants above.
        return Vec::new();
    };
    for x in samples {
        let l = [lab, x.link.as_str(), x.direction.label()];
        let out = |o: &str| s.packets.with_label_values(&[l[0], l[1], l[2], o]);
        out("forwarded").inc_by(x.stats.sent_packets);
        out(NETEM_DROPPED).inc_by(x.stats.dropped_packets);
        s.configured.with_label_values(&l).set(x.configured_delay_s);
        s.depth
            .with_label_values(&l)
            .set(i64::from(x.stats.queue_packets));
    }
    let reg = Registry::new();
    match s.register(&reg) {
        Ok(()) => reg.gather(),
        Err(_) => Vec::new(),
    }
}

/// This host's end of a link to another host, as [`cross_families`] shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossSample {
    pub link: String,
    pub to_host: String,
    /// The one-way delay configured end to end, real seconds.
    pub configured_s: f64,
    /// The underlay's one-way time to `to_host` measured at `up`, real seconds.
    pub underlay_s: f64,
    pub up: bool,
}

/// `lightcone_link_cross_delay_seconds{lab,link,to_host,part}`: for each link this host
/// sends on to another host, the one-way delay configured end to end
/// (`part="configured"`), the underlay's share measured at `up` (`"underlay"`), and what
/// this host's engine adds (`"shaped"`: configured − underlay); and
/// `lightcone_link_cross_up{lab,link,to_host}`. What a frame achieved is the engine's own
/// series (the wire engine's `lightcone_link_delay_seconds` of the link, `a_to_b` being
/// this host's sending direction); with the `host` label every host's part is told apart.
pub fn cross_families(lab: &str, ends: &[CrossSample]) -> Vec<MetricFamily> {
    let (Ok(delay), Ok(up)) = (
        prometheus::GaugeVec::new(
            Opts::new(
                "lightcone_link_cross_delay_seconds",
                "Link to another host, one way, real seconds: configured end to end, the underlay's measured share, and what this host shapes",
            ),
            &["lab", "link", "to_host", "part"],
        ),
        prometheus::IntGaugeVec::new(
            Opts::new(
                "lightcone_link_cross_up",
                "1 if this host's end of the link to another host is up",
            ),
            &["lab", "link", "to_host"],
        ),
    ) else {
        return Vec::new();
    };
    for e in ends {
        let part = |p: &str, v: f64| {
            delay
                .with_label_values(&[lab, e.link.as_str(), e.to_host.as_str(), p])
                .set(v)
        };
        part("configured", e.configured_s);
        part("underlay", e.underlay_s);
        part("shaped", (e.configured_s - e.underlay_s).max(0.0));
        up.with_label_values(&[lab, e.link.as_str(), e.to_host.as_str()])
            .set(i64::from(e.up));
    }
    let reg = Registry::new();
    if ends.is_empty()
        || reg.register(Box::new(delay)).is_err()
        || reg.register(Box::new(up)).is_err()
    {
        return Vec::new();
    }
    reg.gather()
}

/// Adds label `name="value"` to every series of `families` (kept in name order, as the
/// encoder expects): the `host` of a lab across hosts, whose two hosts each report their
/// end of a link between them under the same link name.
pub fn label_all(families: &mut [MetricFamily], name: &str, value: &str) {
    for f in families {
        for m in f.mut_metric() {
            let mut labels = m.take_label();
            let mut l = prometheus::proto::LabelPair::new();
            l.set_name(name.to_string());
            l.set_value(value.to_string());
            labels.push(l);
            labels.sort_by(|a, b| a.name().cmp(b.name()));
            m.set_label(labels);
        }
    }
}

/// Prometheus text exposition of `families` (the one renderer of link metrics).
pub fn render(families: &[MetricFamily]) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(families)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(link: &str, d: Direction, sent: u64, dropped: u64, q: u32) -> NetemSample {
        NetemSample {
            link: link.into(),
            direction: d,
            stats: NetemStats {
                sent_packets: sent,
                sent_bytes: sent * 100,
                dropped_packets: dropped,
                queue_packets: q,
                backlog_bytes: q * 100,
                requeues: 0,
                overlimits: 0,
            },
            configured_delay_s: 0.0025,
        }
    }

    #[test]
    fn netem_readings_render_as_the_link_families() {
        let text = render(&netem_families(
            "lab1",
            &[
                sample("a--b", Direction::AToB, 1234, 7, 3),
                sample("a--b", Direction::BToA, 99, 0, 0),
            ],
        ));
        for want in [
            r#"lightcone_link_packets_total{direction="a_to_b",lab="lab1",link="a--b",outcome="forwarded"} 1234"#,
            r#"lightcone_link_packets_total{direction="a_to_b",lab="lab1",link="a--b",outcome="dropped_loss_or_queue"} 7"#,
            r#"lightcone_link_packets_total{direction="b_to_a",lab="lab1",link="a--b",outcome="forwarded"} 99"#,
            r#"lightcone_link_packets_total{direction="b_to_a",lab="lab1",link="a--b",outcome="dropped_loss_or_queue"} 0"#,
            r#"lightcone_link_queue_depth{direction="a_to_b",lab="lab1",link="a--b"} 3"#,
            r#"lightcone_link_configured_delay_seconds{direction="b_to_a",lab="lab1",link="a--b"} 0.0025"#,
            "# TYPE lightcone_link_packets_total counter",
            "# TYPE lightcone_link_queue_depth gauge",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        // No achieved-delay histogram, and no wire-only outcomes, from qdisc counters.
        assert!(!text.contains("lightcone_link_delay_seconds"), "{text}");
        assert!(!text.contains("dropped_queue"), "{text}");
        assert!(!text.contains("dropped_down"), "{text}");
    }

    #[test]
    fn a_link_to_another_host_shows_its_configured_underlay_and_shaped_parts() {
        let mut fams = cross_families(
            "lab1",
            &[CrossSample {
                link: "a--b".into(),
                to_host: "vm2".into(),
                configured_s: 0.25,
                underlay_s: 0.125,
                up: true,
            }],
        );
        label_all(&mut fams, "host", "vm1");
        let text = render(&fams);
        for want in [
            r#"lightcone_link_cross_delay_seconds{host="vm1",lab="lab1",link="a--b",part="configured",to_host="vm2"} 0.25"#,
            r#"lightcone_link_cross_delay_seconds{host="vm1",lab="lab1",link="a--b",part="underlay",to_host="vm2"} 0.125"#,
            r#"lightcone_link_cross_delay_seconds{host="vm1",lab="lab1",link="a--b",part="shaped",to_host="vm2"} 0.125"#,
            r#"lightcone_link_cross_up{host="vm1",lab="lab1",link="a--b",to_host="vm2"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        assert!(cross_families("lab1", &[]).is_empty());
    }

    #[test]
    fn a_hosts_series_carry_its_name() {
        let mut fams = netem_families("lab1", &[sample("a--b", Direction::AToB, 5, 0, 0)]);
        label_all(&mut fams, "host", "vm2");
        let text = render(&fams);
        assert!(
            text.lines().any(|l| l
                == r#"lightcone_link_packets_total{direction="a_to_b",host="vm2",lab="lab1",link="a--b",outcome="forwarded"} 5"#),
            "{text}"
        );
        assert!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| l.contains(r#"host="vm2""#)),
            "{text}"
        );
    }

    #[test]
    fn wire_and_netem_families_render_identically_for_shared_series() {
        // The wire engine's families (same LinkSeries, registered in a lab registry) and
        // netem's go through one renderer with the same names, help and labels.
        let reg = Registry::new();
        let s = LinkSeries::new().unwrap();
        s.register(&reg).unwrap();
        let l = ["lab1", "a--b", "a_to_b"];
        s.packets
            .with_label_values(&["lab1", "a--b", "a_to_b", "forwarded"])
            .inc_by(1234);
        s.configured.with_label_values(&l).set(0.0025);
        s.depth.with_label_values(&l).set(3);
        let wire = render(&reg.gather());
        let netem = render(&netem_families(
            "lab1",
            &[sample("a--b", Direction::AToB, 1234, 7, 3)],
        ));
        let wire_lines: Vec<&str> = wire.lines().collect();
        for line in netem.lines().filter(|l| !l.contains(NETEM_DROPPED)) {
            assert!(wire_lines.contains(&line), "{line:?} not in wire's\n{wire}");
        }
    }

    #[test]
    fn no_readings_no_series() {
        assert!(render(&netem_families("lab1", &[])).is_empty());
    }

    #[test]
    fn a_failed_registration_leaves_nothing_registered() {
        let reg = Registry::new();
        // Something else owns the last family's name: registering fails at the fourth series.
        let squatter = prometheus::IntGaugeVec::new(
            Opts::new(
                "lightcone_link_queue_depth",
                "Frames queued on a link direction",
            ),
            &["lab", "link", "direction"],
        )
        .unwrap();
        reg.register(Box::new(squatter.clone())).unwrap();
        assert!(LinkSeries::new().unwrap().register(&reg).is_err());
        // The first three were rolled back: with the squatter gone, a full set registers.
        assert!(reg.unregister(Box::new(squatter)).is_ok());
        LinkSeries::new().unwrap().register(&reg).unwrap();
    }
}
