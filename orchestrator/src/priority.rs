//! The priorities of the lab's processes: the supervisor (its wire engine thread with it)
//! outranks the agents and Prometheus it starts. A leaf: `supervisor` raises itself, and
//! `agents`, `tilegroups` and `telemetry` reset each child between fork and exec.

/// The nice value the supervisor runs at: the emulated physics (the wire engine's links)
/// and the lab's control surfaces (API, `/metrics`, faults) outrank the system under test.
/// At 10⁴ tiles on two cores the 157 agent processes, all runnable, left the supervisor's
/// threads a 1/159 share each: `/metrics` did not answer in minutes and link delays were
/// the scheduler's. Its children (agents, Prometheus) start at [`CHILD_NICE`], so an
/// overloaded host shows up where it should, as the agents' timer lateness.
pub const SUPERVISOR_NICE: i32 = -20;
/// The nice value of the supervisor's children: the ordinary one.
pub const CHILD_NICE: i32 = 0;

/// Sets this thread (the supervisor's, before its runtime and wire engine start: threads
/// inherit it) to [`SUPERVISOR_NICE`]; the line says what happened (needs CAP_SYS_NICE).
pub fn raise() -> String {
    // SAFETY: setpriority on the calling thread (who = 0) only reads its arguments.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SUPERVISOR_NICE) };
    if r == 0 {
        format!("supervisor at nice {SUPERVISOR_NICE} (links and control outrank agents at nice {CHILD_NICE})")
    } else {
        format!(
            "supervisor priority not raised ({}): on an overloaded host its links and API share the CPU with every agent",
            std::io::Error::last_os_error()
        )
    }
}

/// For a child between fork and exec: back to [`CHILD_NICE`] (async-signal-safe).
pub fn reset_child() -> std::io::Result<()> {
    // SAFETY: setpriority is a plain syscall, async-signal-safe.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, CHILD_NICE) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
