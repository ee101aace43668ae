//! `task submit`: submit tasks to a node of a running lab (issue 15), through the supervisor.

use lightcone_core::heat::task::{TaskClassName, TaskSpec};

use super::{client_failure, invalid, pick_lab, supervisor_of, Failure};

/// `lightcone task submit NODE --compute N --duration D --class hot|cold [--count K]
/// [--memory-mib M] [--traffic-kbps T]`: prints the agent's answer for each task.
pub(crate) fn cmd_task_submit(
    node: String,
    lab: Option<String>,
    compute: u32,
    duration: String,
    class: String,
    count: u32,
    (memory_mib, traffic_kbps): (u32, u32),
) -> Result<(), Failure> {
    let duration_ns = lightcone::parse::units::duration_ns(&duration)
        .map_err(|e| invalid(anyhow::anyhow!("--duration: {e}")))?;
    let class = match class.as_str() {
        "hot" => TaskClassName::Hot,
        "cold" => TaskClassName::Cold,
        other => {
            return Err(invalid(anyhow::anyhow!(
                "--class must be hot or cold, got {other:?}"
            )))
        }
    };
    if count == 0 || count > 1024 {
        return Err(invalid(anyhow::anyhow!("--count must be 1 to 1024")));
    }
    let spec = TaskSpec {
        compute,
        memory_mib,
        bandwidth_mbps: 0,
        duration_ns,
        class,
        traffic_kbps,
    };
    let client = supervisor_of(&pick_lab(lab)?)?;
    for _ in 0..count {
        let r = client.task_submit(&node, &spec).map_err(client_failure)?;
        println!("task {node}: {r}");
    }
    Ok(())
}
