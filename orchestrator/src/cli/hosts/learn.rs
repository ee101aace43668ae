//! What `up` learns of the hosts before it sends slices: each binary's identity and
//! underlay ([`identify`]), the underlay round trips and clocks, and what they change in the
//! slices ([`learn_hosts`]).

use anyhow::anyhow;
use lightcone::hosts::control::{parse_identity, ControllerRecord};
use lightcone::hosts::slice::{Controller, Slice};
use lightcone::hosts::ssh::Ssh;
use lightcone::hosts::{self, Hosts};
use lightcone::plan::Plan;

use super::{code, Failure, IDENTIFY_BOUND};

/// Between the binary check and the sessions: the underlay round trip between every two
/// hosts a link joins and every host's clock (into `rec`), then each slice's cross-host
/// ends (underlay addresses, half the round trip taken off each delay) and, when links
/// cross hosts, its lab-wide part. `Err`: a refusal; nothing was built anywhere.
pub(super) fn learn_hosts(
    ssh: &Ssh,
    hosts: &Hosts,
    whole: &Plan,
    underlays: &std::collections::BTreeMap<String, std::net::Ipv4Addr>,
    slices: &mut [(usize, Slice)],
    rec: &mut ControllerRecord,
    report: &mut impl FnMut(&str),
) -> Result<(), Failure> {
    let crossing = slices.iter().any(|(_, s)| !s.cross.is_empty());
    let spec = |name: &str| hosts.hosts.iter().find(|h| h.name == name);
    let mut pairs = std::collections::BTreeSet::new();
    for (_, s) in slices.iter() {
        for c in &s.cross {
            pairs.insert(if s.host < c.remote_host {
                (s.host.clone(), c.remote_host.clone())
            } else {
                (c.remote_host.clone(), s.host.clone())
            });
        }
    }
    let mut rtt = std::collections::BTreeMap::new();
    for (a, b) in &pairs {
        let (Some(ha), Some(hb), Some(ip_b)) = (spec(a), spec(b), underlays.get(b)) else {
            continue;
        };
        match lightcone::hosts::rtt::measure(ssh, ha, hb, *ip_b, 0, IDENTIFY_BOUND) {
            Ok(s) => {
                report(&format!(
                    "[{a}] underlay to {b}: round trip min {:.3} ms, p50 {:.3} ms, max {:.3} ms ({} of {} probes)",
                    s.min_ms, s.p50_ms, s.max_ms, s.received, s.sent
                ));
                rtt.insert((a.clone(), b.clone()), s.min_ms);
                rtt.insert((b.clone(), a.clone()), s.min_ms);
            }
            Err(e) => {
                return Err(Failure(code::FAILURE, anyhow!(
                    "the underlay from host {a} to host {b} ({ip_b}) could not be measured: {e}; check that UDP passes between the hosts' underlay addresses (`lightcone doctor --hosts`); nothing was built on any host"
                )));
            }
        }
    }
    for (k, (i, _)) in slices.iter().enumerate() {
        let h = &hosts.hosts[*i];
        rec.hosts[k].clock = lightcone::hosts::doctor::sample_clock(ssh, h);
        rec.hosts[k].underlay_rtt_ms = rtt
            .iter()
            .filter(|((from, _), _)| from == &h.name)
            .map(|((_, to), ms)| (to.clone(), *ms))
            .collect();
        match rec.hosts[k].clock {
            Some(c) => report(&format!(
                "[{}] clock {:+.3} ms ± {:.3} ms from this controller's",
                h.name, c.offset_ms, c.bound_ms
            )),
            None => report(&format!("[{}] clock: no answer within 5 s", h.name)),
        }
    }
    // 2c. The slices' cross-host ends: addresses, and the underlay's one-way time taken
    //     off each link's delay (so the link is as long as configured end to end).
    let mut refusal = None;
    for (_, s) in slices.iter_mut() {
        let time_scale = s.plan.time_scale;
        for c in &mut s.cross {
            c.local_addr = underlays.get(&s.host).copied();
            c.remote_addr = underlays.get(&c.remote_host).copied();
            let Some(ms) = rtt.get(&(s.host.clone(), c.remote_host.clone())) else {
                continue;
            };
            let one_way_ns = (ms * 1e6 / 2.0).round() as u64;
            let emulated = (one_way_ns as f64 * time_scale).round() as u64;
            if emulated > c.model.delay_ns {
                refusal.get_or_insert(format!(
                    "link {} between host {} and host {} is {:.3} ms one way ({:.3} ms real at time_scale {time_scale}), but the underlay alone takes {:.3} ms one way (half its measured round trip): keep it on one host (pin both cells to one host) or slow the lab (a smaller time_scale); nothing was built on any host",
                    c.link,
                    s.host,
                    c.remote_host,
                    c.model.delay_ns as f64 / 1e6,
                    c.model.delay_ns as f64 / 1e6 / time_scale,
                    one_way_ns as f64 / 1e6
                ));
                continue;
            }
            c.model.delay_ns -= emulated;
            c.underlay_one_way_ns = one_way_ns;
        }
    }
    // One lab over the hosts a link joins: the whole plan, a seed for the lab's keys
    // (from this machine's OS RNG), the epoch and each host's clock offset.
    if crossing && refusal.is_none() {
        let mut seed = [0u8; 32];
        if let Err(e) = lightcone::keys::fill(&mut rand::rngs::OsRng, &mut seed) {
            refusal = Some(format!("{e}; nothing was built on any host"));
        }
        let epoch = lightcone::hosts::rtt::realtime_ns();
        let lab_bound = rec
            .hosts
            .iter()
            .filter_map(|h| h.clock.map(|c| c.bound_ms))
            .fold(0.0, f64::max);
        for (k, (_, s)) in slices.iter_mut().enumerate() {
            let Some(c) = rec.hosts[k].clock else {
                refusal.get_or_insert(format!(
                    "host {}: its clock could not be sampled over ssh, and agents on hosts joined by a link count time from one epoch; nothing was built on any host",
                    s.host
                ));
                continue;
            };
            s.lab = Some(lightcone::hosts::slice::LabWide {
                plan: whole.clone(),
                secret_hex: hex::encode(seed),
                epoch_realtime_ns: epoch,
                clock_offset_ms: c.offset_ms,
                clock_offset_bound_ms: c.bound_ms,
                lab_clock_bound_ms: lab_bound,
            });
        }
    }
    match refusal {
        Some(msg) => Err(Failure(code::FAILURE, anyhow!(msg))),
        None => Ok(()),
    }
}

/// `BIN worker --identify` on the host: refuse a binary that is not ours. With `underlay`,
/// also the host's underlay interface (address and MTU), refused if it is missing or its
/// MTU is below what the hosts file says (the lab MTU was computed from that).
pub(super) fn identify(
    ssh: &Ssh,
    h: &hosts::HostSpec,
    ours: &Controller,
    underlay: bool,
) -> Result<Option<lightcone::hosts::control::Underlay>, Failure> {
    let mut args = vec![h.lightcone.as_str(), "worker", "--identify"];
    if underlay {
        args.extend(["--underlay", h.underlay.as_str()]);
    }
    let o = ssh.run(h, &args, IDENTIFY_BOUND).map_err(Failure::from)?;
    match (o.code, parse_identity(&o.stdout)) {
        (Some(0), Some(theirs)) if &theirs.binary() == ours => match theirs.underlay {
            Some(u) if u.mtu < h.mtu => Err(Failure(code::FAILURE, anyhow!(
                "host {}: underlay {} has MTU {}, the hosts file says {}: write `mtu: {}` for this host (or raise the interface's MTU); nothing was built on any host",
                h.name, u.name, u.mtu, h.mtu, u.mtu
            ))),
            Some(u) => Ok(Some(u)),
            None if underlay => Err(Failure(code::FAILURE, anyhow!(
                "host {}: `{} worker --identify --underlay {}` gave no underlay; nothing was built on any host",
                h.name, h.lightcone, h.underlay
            ))),
            None => Ok(None),
        },
        (Some(0), Some(theirs)) => Err(Failure(code::FAILURE, anyhow!(
            "host {}: {} is lightcone {} (sha256 {}), this controller is lightcone {} (sha256 {}): copy this build to the host (or name it with `lightcone:` in the hosts file); nothing was built on any host",
            h.name, h.lightcone, theirs.version, theirs.sha256, ours.version, ours.sha256
        ))),
        (Some(1), _) if underlay && o.stderr.contains("underlay: ") => Err(Failure(code::FAILURE, anyhow!(
            "host {}: {}; set `underlay:` for this host to the interface VXLAN packets leave by, with an IPv4 address (`lightcone doctor --hosts` checks it); nothing was built on any host",
            h.name, o.stderr.trim().trim_start_matches("error: ")
        ))),
        (Some(255), _) => Err(Failure(code::FAILURE, anyhow!(
            "host {}: ssh {} failed: {}; check it with `lightcone doctor --hosts` (ssh must log in without a prompt: BatchMode); nothing was built on any host",
            h.name, h.ssh, o.stderr.trim()
        ))),
        _ => Err(Failure(code::FAILURE, anyhow!(
            "host {}: `{} worker --identify` did not answer (exit {}): {}; install this lightcone build there (or name it with `lightcone:` in the hosts file); nothing was built on any host",
            h.name, h.lightcone,
            o.code.map(|c| c.to_string()).unwrap_or_else(|| "by signal".into()),
            if o.stderr.trim().is_empty() { o.stdout.trim() } else { o.stderr.trim() }
        ))),
    }
}
