//! Commands about nodes of a multi-host lab, run where the nodes are: routed over the
//! lab's ssh ([`route_to_host`]), and `probe` across a link between two hosts
//! ([`probe_across`]).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context};
use lightcone::hosts::control::{ControlDir, ControllerRecord, HostRecord};
use lightcone::hosts::ssh::{control_root, Ssh};
use lightcone::plan::Plan;

use super::status::{all_lab_names, status_json};
use super::{code, invalid, state, Failure, IDENTIFY_BOUND};

/// `lightcone probe A B` of a multi-host lab whose `a` and `b` are on two hosts: an echo in
/// `b`'s namespace on its host, probes from `a`'s namespace on its host (10 ms apart), both
/// over the lab's ssh ([`lightcone::hosts::rtt::measure_with`]), across the link between
/// them. Round trips and round-trip loss only: one-way figures would need the two hosts'
/// clocks, known only to their offset bounds. `None`: not a multi-host lab, or both nodes
/// on one host (the command is routed to it as it is).
#[allow(clippy::too_many_arguments)]
pub(crate) fn probe_across(
    lab: Option<&str>,
    a: &str,
    b: &str,
    count: u32,
    interval: &str,
    burst: u32,
    json: bool,
) -> Option<Result<u8, Failure>> {
    let (ctl, rec) = multi_host_lab(lab)?;
    let on = |n: &str| rec.hosts.iter().find(|h| h.nodes.iter().any(|m| m == n));
    let (ha, hb) = (on(a)?, on(b)?);
    if ha.name == hb.name {
        return None;
    }
    if burst > 0 || interval != "10ms" {
        return Some(Err(invalid(anyhow!(
            "{a} is on host {} and {b} on host {}: a probe across hosts sends one probe every 10 ms and no throughput burst (--interval and --burst are not built across hosts yet); nothing was sent",
            ha.name, hb.name
        ))));
    }
    Some(probe_between_hosts(&ctl, &rec, ha, hb, a, b, count, json))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn probe_between_hosts(
    ctl: &ControlDir,
    rec: &ControllerRecord,
    ha: &HostRecord,
    hb: &HostRecord,
    a: &str,
    b: &str,
    count: u32,
    json: bool,
) -> Result<u8, Failure> {
    if !rec.alive() {
        return Err(state(format!(
            "lab {} has a controller record whose controller is gone; run `lightcone down {}` to clean it up",
            rec.lab, rec.lab
        )));
    }
    let plan: Plan = std::fs::read(ctl.plan_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Failure(
                code::FAILURE,
                anyhow!("{} is missing or unreadable", ctl.plan_path().display()),
            )
        })?;
    let Some((l, ea, eb)) = plan.link_ends(a, b) else {
        return Err(invalid(anyhow!(
            "lab {} has no link between {a} and {b} (probe measures one link); nothing was sent",
            rec.lab
        )));
    };
    // The live configuration of the direction a sends (after `link set`), from a's host.
    let live = status_json(&rec.lab).and_then(|v| {
        v["links"].as_array().and_then(|ls| {
            ls.iter()
                .find(|x| x["name"] == l.name.as_str() && x["host"] == ha.name.as_str())
                .cloned()
        })
    });
    let ts = plan.time_scale;
    let delay_s = live
        .as_ref()
        .and_then(|x| x["delay_s"].as_f64())
        .unwrap_or(l.model.delay_ns as f64 / 1e9);
    let loss = live
        .as_ref()
        .and_then(|x| x["loss"].as_f64())
        .unwrap_or(0.0);
    let up = live.as_ref().map(|x| x["up"] != false).unwrap_or(true);
    let underlay_ms = live
        .as_ref()
        .and_then(|x| x["underlay_one_way_s"].as_f64())
        .unwrap_or(0.0)
        * 2e3;
    let configured_rtt_ms = 2.0 * delay_s / ts * 1e3;
    let wait =
        Duration::from_secs(2).max(Duration::from_secs_f64(3.0 * configured_rtt_ms / 1e3 + 0.5));
    let how = lightcone::hosts::rtt::Between {
        port: 0,
        echo_netns: Some(plan.nodes[eb.node].netns.clone()),
        ping_netns: Some(plan.nodes[ea.node].netns.clone()),
        count,
        wait,
    };
    let ssh = Ssh::new(&rec.lab, rec.ssh_config.clone(), &control_root()).map_err(invalid)?;
    let s = lightcone::hosts::rtt::measure_with(
        &ssh,
        &ha.spec(),
        &hb.spec(),
        eb.ip,
        &how,
        IDENTIFY_BOUND,
    )
    .map_err(|e| Failure(code::FAILURE, anyhow!("probe {}: {e}", l.name)))?;
    let lost = s.sent - s.received;
    // Each direction loses independently: the round trip survives both.
    let rt_loss = 1.0 - (1.0 - loss).powi(2);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "link": l.name,
                "from": a, "to": b,
                "from_host": ha.name, "to_host": hb.name,
                "count": s.sent,
                "received": s.received,
                "lost": lost,
                "rtt_ms": if s.received > 0 {
                    serde_json::json!({"min": s.min_ms, "p50": s.p50_ms, "max": s.max_ms})
                } else {
                    serde_json::Value::Null
                },
                "configured": {
                    "up": up,
                    "rtt_ms": configured_rtt_ms,
                    "underlay_rtt_ms": underlay_ms,
                    "loss_round_trip": rt_loss,
                },
                "one_way": "not measured across hosts (the hosts' clocks are known only to their offset bounds)",
            })
        );
    } else {
        println!(
            "probe {} across hosts {} -> {} ({} probes, time_scale {ts})",
            l.name, ha.name, hb.name, s.sent
        );
        println!("                       measured                  configured");
        if s.received > 0 {
            println!(
                "  rtt min/p50/max  {:9.3} / {:.3} / {:.3} ms   {configured_rtt_ms:.3} ms (underlay {underlay_ms:.3} ms of it){}",
                s.min_ms,
                s.p50_ms,
                s.max_ms,
                if up { "" } else { ", link DOWN" }
            );
        } else {
            println!(
                "  rtt              no answer                  {configured_rtt_ms:.3} ms{}",
                if up { "" } else { ", link DOWN" }
            );
        }
        println!(
            "  loss round trip  {lost} of {} ({:.2} %)            {:.2} %",
            s.sent,
            100.0 * f64::from(lost) / f64::from(s.sent.max(1)),
            100.0 * rt_loss
        );
        println!("  one-way delay and loss: not measured across hosts (clocks known only to their offset bounds)");
    }
    Ok(0)
}

/// Set on a command the controller routed to a host: run it there.
pub(super) const ROUTED_ENV: &str = "LIGHTCONE_ROUTED";
pub(super) const ROUTED_ENV_SET: &str = "LIGHTCONE_ROUTED=1";

/// A command about `nodes` of a lab that spans hosts runs on the host that holds them:
/// the same command line over ssh (each word quoted for the host's shell), with `--lab`
/// put in after its `tokens` subcommand words when the user left it out, its output and
/// exit code passed through. `None`: the lab is not a multi-host lab (run it here). Nodes
/// not in the lab are refused with nothing run; nodes on two hosts too, unless `spread`
/// (a link between hosts: each host changes its end, in hosts-file order, and the first
/// failure's exit code is the command's).
pub(crate) fn route_to_host(
    lab: Option<&str>,
    nodes: &[&str],
    tokens: usize,
    spread: bool,
) -> Option<Result<u8, Failure>> {
    let (_, rec) = multi_host_lab(lab)?;
    Some(forward(&rec, nodes, tokens, spread))
}

/// The multi-host lab a command about nodes means — `lab`, or the only lab up when that
/// is a multi-host one — with its controller record; `None`: run the command here (no
/// such lab, a local lab, or a command the controller already routed to this host).
pub(super) fn multi_host_lab(lab: Option<&str>) -> Option<(ControlDir, ControllerRecord)> {
    if std::env::var_os(ROUTED_ENV).is_some() {
        return None;
    }
    let lab = match lab {
        Some(l) => l.to_string(),
        None => match all_lab_names() {
            (ctl, local) if ctl.len() == 1 && local.is_empty() => ctl[0].clone(),
            _ => return None,
        },
    };
    let ctl = ControlDir::new(&lab).ok()?;
    let rec = ctl.read()?;
    Some((ctl, rec))
}

pub(super) fn forward(
    rec: &ControllerRecord,
    nodes: &[&str],
    tokens: usize,
    spread: bool,
) -> Result<u8, Failure> {
    let mut on: Vec<&HostRecord> = Vec::new();
    for n in nodes {
        match rec.hosts.iter().find(|h| h.nodes.iter().any(|m| m == n)) {
            Some(h) => on.push(h),
            None => {
                return Err(invalid(anyhow!(
                    "lab {} has no node {n} (its hosts hold {}); nothing was changed",
                    rec.lab,
                    rec.hosts
                        .iter()
                        .map(|h| format!("{}: {}", h.name, h.nodes.join(" ")))
                        .collect::<Vec<_>>()
                        .join("; ")
                )))
            }
        }
    }
    let Some(h) = on.first() else {
        return Err(invalid(anyhow!("no node named; nothing was changed")));
    };
    if let Some(other) = on.iter().find(|o| o.name != h.name).filter(|_| !spread) {
        return Err(invalid(anyhow!(
            "{} is on host {} and {} on host {}: a command about nodes on two hosts is not built yet (each host runs its own part of lab {}); nothing was changed",
            nodes[0],
            h.name,
            nodes[on.iter().position(|o| o.name == other.name).unwrap_or(0)],
            other.name,
            rec.lab
        )));
    }
    if !rec.alive() {
        return Err(state(format!(
            "lab {} has a controller record whose controller is gone; run `lightcone down {}` to clean it up",
            rec.lab, rec.lab
        )));
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--lab" || a.starts_with("--lab=")) {
        let at = tokens.min(args.len());
        args.splice(at..at, ["--lab".to_string(), rec.lab.clone()]);
    }
    let quoted: Vec<String> = args
        .iter()
        .map(|a| lightcone::hosts::ssh::sh_quote(a))
        .collect();
    let ssh = Ssh::new(&rec.lab, rec.ssh_config.clone(), &control_root()).map_err(invalid)?;
    // Each host once, in the controller record's (hosts-file) order.
    let mut code = 0u8;
    for h in rec
        .hosts
        .iter()
        .filter(|h| on.iter().any(|o| o.name == h.name))
    {
        let c = run_on(&ssh, h, &quoted)?;
        if code == 0 {
            code = c;
        }
    }
    Ok(code)
}

/// `quoted` (words already quoted for the host's shell) run by `h`'s `lightcone` over
/// `ssh`, marked as routed; its output here as it comes, its exit code returned.
pub(super) fn run_on(ssh: &Ssh, h: &HostRecord, quoted: &[String]) -> Result<u8, Failure> {
    // Marked, so the host runs it itself even when it is also the controller's machine
    // (whose controller record would route it again).
    let mut remote: Vec<&str> = vec!["env", ROUTED_ENV_SET, h.lightcone.as_str()];
    remote.extend(quoted.iter().map(String::as_str));
    let mut c = ssh.command(&h.spec(), &remote);
    c.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let status = c
        .status()
        .with_context(|| format!("run ssh to host {} ({})", h.name, h.ssh))?;
    match status.code() {
        Some(255) => Err(Failure(
            code::FAILURE,
            anyhow!(
                "host {}: ssh {} failed (exit 255); check it with `lightcone doctor --hosts`",
                h.name,
                h.ssh
            ),
        )),
        Some(c) => Ok(u8::try_from(c).unwrap_or(1)),
        None => Err(Failure(
            code::FAILURE,
            anyhow!("host {}: ssh ended by a signal", h.name),
        )),
    }
}
