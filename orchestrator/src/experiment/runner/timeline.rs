//! Timeline execution: each planned action at `t0 + at / time_scale` through the client,
//! load sessions started as their `load` steps come, progress and events recorded.

use std::time::Duration;

use super::super::expand::{Action, Planned};

/// How long before its instant a verb is sent to a lab over hosts: more than a request
/// through an ssh forward takes (a few ms on a LAN, tens under emulation).
pub(super) const SEND_AHEAD: Duration = Duration::from_millis(300);
use super::super::record::{Event, FailedInjection, Mark};
use super::load::{self, LoadCtx};
use crate::client::Client;
use crate::lab::LabStatus;
use crate::parse::units;

/// Records what playing `action` at `t_real_s` did: a mark for a fault that was injected
/// (what the plots and expectations assume happened), a failed injection (a failed verdict
/// line of its own) for one that was not. The lab runner and the twin both call it.
pub(crate) fn record_injection(
    action: &Action,
    t_real_s: f64,
    result: &Result<(), String>,
    marks: &mut Vec<Mark>,
    failed: &mut Vec<FailedInjection>,
) {
    let kind = action.kind();
    let node = match action {
        Action::Crash { node }
        | Action::Restart { node }
        | Action::Clock { node, .. }
        | Action::Byzantine { node, .. }
        | Action::StealKey { node, .. }
        | Action::RotateKey { node }
        | Action::Revoke { node, .. }
        | Action::Task { node, .. } => Some(node.clone()),
        _ => None,
    };
    let groups = match action {
        Action::Partition { groups } => groups.clone(),
        _ => Vec::new(),
    };
    match result {
        Ok(())
            if matches!(
                kind,
                "crash"
                    | "restart"
                    | "heal"
                    | "partition"
                    | "clock"
                    | "byzantine"
                    | "honest"
                    | "steal_key"
                    | "revoke"
                    | "rotate_key"
            ) || kind.starts_with("link") =>
        {
            marks.push(Mark {
                t_real_s,
                kind: kind.to_string(),
                node,
                groups,
            })
        }
        Ok(()) => {}
        Err(e) => failed.push(FailedInjection {
            t_real_s,
            action: action.describe(),
            error: e.clone(),
        }),
    }
}

/// What playing the timeline recorded.
pub(super) struct Played {
    pub events: Vec<Event>,
    /// The faults injected (a failed injection is not marked).
    pub marks: Vec<Mark>,
    pub failed_injections: Vec<FailedInjection>,
    /// The `rollout` step's outcome, when the timeline has one.
    pub rollout: Option<crate::experiment::record::RolloutOutcome>,
}

/// Plays `plan` from `ctx.t0` to the end of the scenario (`ctx.duration_ns` emulated) and
/// waits for the load sessions to end.
pub(super) fn play_all(
    plan: &[Planned],
    ctx: &LoadCtx<'_>,
    progress: &mut impl FnMut(&str),
) -> Played {
    let (t0, ts) = (ctx.t0, ctx.lab.ts);
    let mut played = Played {
        events: Vec::new(),
        marks: Vec::new(),
        failed_injections: Vec::new(),
        rollout: None,
    };
    let mut loads = Vec::new();
    let end_real = Duration::from_secs_f64(ctx.duration_ns as f64 / 1e9 / ts);
    // Wait until `until` (real, from t0), reporting the timeline's progress in between.
    let total_ms = end_real.as_millis() as u64;
    let mut throttle = crate::progress::Throttle::new(Duration::from_millis(250));
    let mut wait_until = |until: Duration, progress: &mut dyn FnMut(&str)| loop {
        let now = t0.elapsed();
        let done_ms = (now.as_millis() as u64).min(total_ms);
        if let Some(m) = throttle.tick("timeline", done_ms, total_ms) {
            progress(&m);
        }
        match until.checked_sub(now) {
            Some(d) if !d.is_zero() => std::thread::sleep(d.min(Duration::from_millis(250))),
            _ => break,
        }
    };
    // A lab over hosts: each verb leaves SEND_AHEAD before it is due, stamped with the
    // instant it is due on this machine's clock (each host adds its measured offset and
    // waits for it), so the ssh hop does not delay it and a link between hosts changes at
    // both ends at once. The instant recorded is the one stamped.
    let spread = ctx.api.is_spread();
    let t0_wall = std::time::SystemTime::now() - t0.elapsed();
    for p in plan {
        let at = Duration::from_secs_f64(p.at_ns as f64 / 1e9 / ts);
        wait_until(
            at.saturating_sub(if spread { SEND_AHEAD } else { Duration::ZERO }),
            progress,
        );
        let due = at.max(t0.elapsed());
        let stamped = spread.then(|| ctx.api.stamped(t0_wall + due));
        let api = stamped.as_ref().unwrap_or(ctx.api);
        let t = if spread {
            due.as_secs_f64()
        } else {
            t0.elapsed().as_secs_f64()
        };
        if let Action::CrashHolders {
            objects,
            shards,
            except,
        } = &p.action
        {
            // Aimed at the placement the puts recorded: one crash (and mark) per holder.
            let recorded = ctx.shared.lock().expect("shared").objects.clone();
            let crashes =
                match super::objects::holders_to_crash(&recorded, objects, *shards, except) {
                    Ok(v) => v.into_iter().map(|node| Action::Crash { node }).collect(),
                    Err(e) => {
                        played.failed_injections.push(FailedInjection {
                            t_real_s: t,
                            action: p.action.describe(),
                            error: e,
                        });
                        Vec::new()
                    }
                };
            for c in crashes {
                let t = t0.elapsed().as_secs_f64();
                let r = play(ctx.api, &c);
                record_injection(&c, t, &r, &mut played.marks, &mut played.failed_injections);
                progress(&format!(
                    "[{:>9} emulated | {:>7.2}s real] {} ({})",
                    units::fmt_ns((t * ts * 1e9) as u64),
                    t,
                    c.describe(),
                    p.action.describe()
                ));
                played.events.push(Event {
                    t_real_s: t,
                    t_emulated_s: t * ts,
                    kind: c.kind().into(),
                    detail: format!("{} ({})", c.describe(), p.action.describe()),
                    ok: r.is_ok(),
                    error: r.err(),
                });
            }
            continue;
        }
        let r = match &p.action {
            Action::Rollout {
                build,
                canary,
                soak_ns,
            } => {
                progress(&format!(
                    "[{:>9} emulated | {:>7.2}s real] {} (the timeline waits for it)",
                    units::fmt_ns((t * ts * 1e9) as u64),
                    t,
                    p.action.describe()
                ));
                let (r, outcome) =
                    super::rollout::play(&ctx.lab.name, build, canary, *soak_ns, ts, progress);
                played.rollout = Some(outcome);
                r
            }
            _ => play(api, &p.action),
        };
        load::start(ctx, &p.action, &mut loads);
        super::objects::start(
            ctx.api,
            ctx.shared,
            ctx.lab,
            ctx.class.as_ref(),
            ctx.seed,
            t0,
            p.at_ns,
            &p.action,
            &mut loads,
        );
        let kind = p.action.kind().to_string();
        record_injection(
            &p.action,
            t,
            &r,
            &mut played.marks,
            &mut played.failed_injections,
        );
        let line = format!(
            "[{:>9} emulated | {:>7.2}s real] {}{}",
            units::fmt_ns((t * ts * 1e9) as u64),
            t,
            p.action.describe(),
            match &r {
                Ok(()) => String::new(),
                Err(e) => format!(" — FAILED: {e}"),
            }
        );
        progress(&line);
        played.events.push(Event {
            t_real_s: t,
            t_emulated_s: t * ts,
            kind,
            detail: p.action.describe(),
            ok: r.is_ok(),
            error: r.err(),
        });
    }
    wait_until(end_real, progress);
    for l in loads {
        let _ = l.join();
    }
    let t_end = t0.elapsed().as_secs_f64();
    progress(&format!(
        "[{:>9} emulated | {:>7.2}s real] end of timeline",
        units::fmt_ns((t_end * ts * 1e9) as u64),
        t_end
    ));
    played
}

/// Plays one action through the supervisor's API; the error is what the events and the
/// failed-injection verdict show.
fn play(api: &Client, a: &Action) -> Result<(), String> {
    let r = match a {
        Action::LinkDown { a, b } => api.link_state(a, b, false).map(drop),
        Action::LinkUp { a, b } => api.link_state(a, b, true).map(drop),
        Action::LinkSet { a, b, change } => api.link_set(a, b, change).map(drop),
        Action::Crash { node } => api.crash(node).map(drop),
        Action::Restart { node } => api.restart(node).map(drop),
        Action::Clock { node, fault } => api.clock(node, &fault.request()).map(drop),
        Action::Partition { .. }
        | Action::Heal
        | Action::LoadStart { .. }
        | Action::ObjectsStart { .. } => Ok(()),
        Action::CrashHolders { .. } => {
            return Err("crash_holders is resolved by the timeline".into())
        }
        Action::Byzantine { node, behaviour } => api.byzantine(node, behaviour.names()).map(drop),
        Action::StealKey { node, thief } => api.steal_key(thief, node).map(drop),
        Action::RotateKey { node } => api.rotate_key(node).map(drop),
        Action::Revoke { node, by } => api.revoke_key(by, node).map(drop),
        Action::Task { node, count, spec } => {
            (0..*count).try_for_each(|_| api.task_submit(node, spec).map(drop))
        }
        Action::Rollout { .. } => return Err("a rollout is played by the timeline".into()),
    };
    r.map_err(|e| e.to_string())
}

/// Links whose delay is plotted: those the timeline touches (at most 6), else the first.
pub(super) fn watched_links(plan: &[Planned], st: &LabStatus) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for p in plan {
        if let Action::LinkDown { a, b } | Action::LinkUp { a, b } | Action::LinkSet { a, b, .. } =
            &p.action
        {
            if let Some(l) = st
                .links
                .iter()
                .find(|l| (l.a == *a && l.b == *b) || (l.a == *b && l.b == *a))
            {
                if !v.contains(&l.name) && v.len() < 6 {
                    v.push(l.name.clone());
                }
            }
        }
    }
    if v.is_empty() {
        v.extend(st.links.first().map(|l| l.name.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::super::action::Load;
    use super::*;

    #[test]
    fn an_injected_fault_is_marked_a_refused_one_is_a_failed_injection_only() {
        let (mut marks, mut failed) = (Vec::new(), Vec::new());
        let crash = Action::Crash { node: "t1".into() };
        record_injection(&crash, 2.0, &Ok(()), &mut marks, &mut failed);
        record_injection(
            &crash,
            3.0,
            &Err("not running".into()),
            &mut marks,
            &mut failed,
        );
        let load = Action::LoadStart {
            nodes: vec!["t1".into()],
            load: Load::default(),
        };
        record_injection(&load, 4.0, &Ok(()), &mut marks, &mut failed);
        assert_eq!(
            marks.len(),
            1,
            "only the injected crash is a mark: {marks:?}"
        );
        assert_eq!(
            (marks[0].kind.as_str(), marks[0].node.as_deref()),
            ("crash", Some("t1"))
        );
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].t_real_s, 3.0);
        assert_eq!(failed[0].error, "not running");
    }
}
