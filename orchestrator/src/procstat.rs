//! CPU time of a process from `/proc/PID/stat`: what the experiment runner and the agents
//! bench measure an agent's overhead with (utime + stime over a window).

/// utime + stime of `pid` in clock ticks; `None` once the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after its last `)`.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(3) … utime(14) stime(15) → indices 11, 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 if it fails).
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_ticks_and_a_tick_rate() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(clock_ticks_per_s() > 0.0);
        assert_eq!(cpu_ticks(u32::MAX), None);
    }
}
