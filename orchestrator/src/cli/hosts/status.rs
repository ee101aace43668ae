//! `status` of a multi-host lab: every host asked over ssh, merged.

use std::time::Duration;

use lightcone::hosts::control::ControlDir;
use lightcone::hosts::ssh::{control_root, Ssh};
use lightcone::state::LabDir;

/// `status` of a multi-host lab: each host's worker asked over ssh for its slice's
/// status; nodes gain `host`, and `hosts[]` says who holds what.
pub(crate) fn status_json(lab: &str) -> Option<serde_json::Value> {
    let ctl = ControlDir::new(lab).ok()?;
    let Some(rec) = ctl.read() else {
        if !ctl.exists() {
            return None;
        }
        return Some(
            serde_json::json!({"name": lab, "state": "stale", "hosts": [], "hint": format!("the controller record is unreadable; run `lightcone down {lab}`")}),
        );
    };
    let alive = rec.alive();
    let ssh = Ssh::new(lab, rec.ssh_config.clone(), &control_root()).ok();
    let mut nodes = Vec::new();
    let mut links = Vec::new();
    let mut hosts_out = Vec::new();
    for h in &rec.hosts {
        let mut error = None;
        if let (true, Some(ssh)) = (alive, &ssh) {
            match ssh.run(
                &h.spec(),
                &[&h.lightcone, "status", lab, "--json", "--local"],
                Duration::from_secs(20),
            ) {
                Ok(o) if o.code == Some(0) => {
                    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
                    let l = &v["labs"][0];
                    for n in l["nodes"].as_array().into_iter().flatten() {
                        let mut n = n.clone();
                        n["host"] = h.name.clone().into();
                        nodes.push(n);
                    }
                    for k in l["links"].as_array().into_iter().flatten() {
                        let mut k = k.clone();
                        k["host"] = h.name.clone().into();
                        links.push(k);
                    }
                }
                Ok(o) => {
                    error = Some(format!(
                        "`{} status` on the host: {}",
                        h.lightcone,
                        o.stderr.trim()
                    ))
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        hosts_out.push(serde_json::json!({
            "name": h.name,
            "ssh": h.ssh,
            "nodes": h.nodes,
            "worker_pid": h.worker_pid,
            "worker_state": h.worker,
            "worker_api": h.api,
            "message": h.message,
            "error": error,
            // Measured at `up`: the smallest round trip to each host it shares a link
            // with (empty: no link crosses from it), and its clock against the
            // controller's (null: the host did not answer).
            "underlay_rtt_ms": h.underlay_rtt_ms,
            "clock_offset_ms": h.clock.map(|c| c.offset_ms),
            "clock_offset_bound_ms": h.clock.map(|c| c.bound_ms),
        }));
    }
    Some(if alive {
        serde_json::json!({
            "name": lab,
            "state": "up",
            "controller_pid": rec.pid,
            "hosts": hosts_out,
            "nodes": nodes,
            "links": links,
        })
    } else {
        serde_json::json!({
            "name": lab,
            "state": "stale",
            "controller_pid": rec.pid,
            "hosts": hosts_out,
            "hint": format!("the controller is gone (its workers tore down when their sessions closed); run `lightcone down {lab}`"),
        })
    })
}

/// One line per multi-host lab for `status` without `--json`.
pub(crate) fn status_print(v: &serde_json::Value) {
    let name = v["name"].as_str().unwrap_or("?");
    if v["state"] != "up" {
        println!("{name}: stale ({})", v["hint"].as_str().unwrap_or(""));
        return;
    }
    let nodes = v["nodes"].as_array().map(|a| a.len()).unwrap_or(0);
    let running = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["agent"]["state"] == "running")
        .count();
    let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
    println!(
        "{name}: up on {} host(s) (controller pid {}), {nodes} nodes ({running} agents running)",
        hosts.len(),
        v["controller_pid"]
    );
    for h in hosts {
        println!(
            "  host {} ({}): {} nodes, worker {} pid {}{}",
            h["name"].as_str().unwrap_or("?"),
            h["ssh"].as_str().unwrap_or("?"),
            h["nodes"].as_array().map(|a| a.len()).unwrap_or(0),
            h["worker_state"].as_str().unwrap_or("?"),
            h["worker_pid"],
            h["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        // What `up` measured: the clock, and the underlay to each host a link joins.
        let mut measured = Vec::new();
        if let (Some(o), Some(b)) = (
            h["clock_offset_ms"].as_f64(),
            h["clock_offset_bound_ms"].as_f64(),
        ) {
            measured.push(format!("clock {o:+.3} ms ± {b:.3} ms"));
        }
        for (to, ms) in h["underlay_rtt_ms"].as_object().into_iter().flatten() {
            if let Some(ms) = ms.as_f64() {
                measured.push(format!("underlay to {to} {ms:.3} ms round trip"));
            }
        }
        if !measured.is_empty() {
            println!("    {}", measured.join(", "));
        }
    }
    for l in v["links"].as_array().into_iter().flatten() {
        if let Some(to) = l["to_host"].as_str() {
            println!(
                "  link {} from host {} to {to}: {}, delay {:.3} ms (underlay {:.3} ms of it), loss {:.2} %",
                l["name"].as_str().unwrap_or("?"),
                l["host"].as_str().unwrap_or("?"),
                if l["up"] == true { "up" } else { "DOWN" },
                l["delay_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                l["underlay_one_way_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                l["loss"].as_f64().unwrap_or(f64::NAN) * 100.0
            );
        }
    }
}

/// Lab names with a controller record, and those of `lightcone up` without one.
pub(crate) fn all_lab_names() -> (Vec<String>, Vec<LabDir>) {
    let ctl = ControlDir::all_names();
    let local = LabDir::all()
        .into_iter()
        .filter(|d| !ctl.contains(&d.lab))
        .collect();
    (ctl, local)
}
