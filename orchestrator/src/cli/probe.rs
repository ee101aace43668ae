//! `probe`: measure a link (RTT, loss, throughput) from its two namespaces and print it
//! beside its live configuration.

use std::time::Duration;

use anyhow::anyhow;
use lightcone::client::{Client, DEFAULT_TIMEOUT};
use lightcone::kernel::Netns;
use lightcone::link::probe::{self, ProbeOptions};
use lightcone::parse::units;

use super::{invalid, lab_plan, need_root, pick_lab, Failure};

/// `lightcone probe A B`.
pub(crate) fn cmd_probe(
    lab: Option<String>,
    a: String,
    b: String,
    count: u32,
    interval: String,
    burst: u32,
    json: bool,
) -> Result<(), Failure> {
    need_root("probe")?;
    let dir = pick_lab(lab)?;
    let p = lab_plan(&dir)?;
    let Some((l, ea, eb)) = p.link_ends(&a, &b) else {
        for n in [&a, &b] {
            if p.node_index(n).is_none() {
                return Err(invalid(anyhow!("lab {} has no node {n:?}", dir.lab)));
            }
        }
        return Err(invalid(anyhow!(
            "lab {} has no link between {a} and {b} (probe measures one link)",
            dir.lab
        )));
    };
    let interval = Duration::from_nanos(
        units::duration_ns(&interval).map_err(|e| invalid(anyhow!("--interval: {e}")))?,
    );
    // The live configuration may differ from the topology after `link set`.
    let live = Client::connect(&dir).and_then(|c| c.status(DEFAULT_TIMEOUT).ok());
    let na = Netns::open(&p.nodes[ea.node].netns)?;
    let nb = Netns::open(&p.nodes[eb.node].netns)?;
    let conf = live
        .as_ref()
        .and_then(|s| s.links.iter().find(|x| x.name == l.name));
    let ts = p.time_scale;
    let (cdelay, cjit, closs, crate_bps, up) = match &conf {
        Some(c) => (c.delay_s, c.jitter_s, c.loss, c.rate_bps, c.up),
        None => (
            l.model.delay_ns as f64 / 1e9,
            l.model.jitter_ns as f64 / 1e9,
            0.0,
            l.model.rate_bps,
            true,
        ),
    };
    // No probe counts as lost before the configured round trip could bring it back.
    let real = |emulated_s: f64| Duration::try_from_secs_f64(emulated_s / ts).unwrap_or_default();
    let opts = ProbeOptions {
        count,
        interval,
        throughput_packets: burst,
        expected_rtt: real(2.0 * cdelay),
        expected_jitter: real(cjit),
        ..Default::default()
    };
    let r = probe::probe(&na, ea.ip, &nb, eb.ip, &opts)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "link": l.name, "time_scale": ts, "sent": r.sent, "received": r.received,
                "measured": {"rtt_mean_s": r.rtt_mean_s, "rtt_p50_s": r.rtt_p50_s, "rtt_p99_s": r.rtt_p99_s, "loss": r.loss, "throughput_bps": r.throughput_bps},
                "configured": {"rtt_real_s": 2.0 * cdelay / ts, "jitter_real_s": cjit / ts, "loss_round_trip": 1.0 - (1.0 - closs).powi(2), "rate_bps": crate_bps, "up": up}
            })
        );
    } else {
        println!("probe {} ({} probes, time_scale {ts})", l.name, r.sent);
        println!("                 measured        configured");
        println!(
            "  rtt mean    {:>12}    {:>12}",
            ms(r.rtt_mean_s),
            ms(2.0 * cdelay / ts)
        );
        println!(
            "  rtt p50/p99 {:>12}    ± {} jitter each way",
            format!("{}/{}", ms(r.rtt_p50_s), ms(r.rtt_p99_s)),
            ms(cjit / ts)
        );
        println!(
            "  loss (rtt)  {:>11.2}%    {:>11.2}%{}",
            r.loss * 100.0,
            (1.0 - (1.0 - closs).powi(2)) * 100.0,
            if up { "" } else { " (link down)" }
        );
        if let Some(t) = r.throughput_bps {
            println!(
                "  throughput  {:>12}    {:>12}",
                format!("{:.2} Mbit/s", t / 1e6),
                crate_bps
                    .map(|b| format!("{:.2} Mbit/s", b as f64 * ts / 1e6))
                    .unwrap_or_else(|| "unlimited".into())
            );
        }
    }
    Ok(())
}

fn ms(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else {
        format!("{:.3} ms", s * 1e3)
    }
}
