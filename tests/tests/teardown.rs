//! Issue 11, item 8: `lightcone down` of a wire-engine lab is quick. The engine's AF_PACKET
//! sockets each wait for an RCU grace period when closed; closed one by one, a 200-node
//! line took 6.5 s to come down. Real kernel, real binaries; needs root.

use std::time::Instant;

use lightcone_e2e::*;

/// A line of `n` nodes, `n - 1` links.
fn line(n: usize) -> String {
    let mut s = String::from("name: x\ntime_scale: 1\nnodes:\n");
    for i in 0..n {
        s += &format!("  n{i}: {{}}\n");
    }
    s += "links:\n";
    for i in 1..n {
        s += &format!("  - endpoints: [n{}, n{i}]\n", i - 1);
    }
    s
}

#[test]
fn down_of_a_200_node_wire_line_takes_under_2_s() {
    require_root();
    let t = TestLab::from_src("down200", &line(200));
    let t0 = Instant::now();
    t.up(&["--no-agents"]);
    let up = t0.elapsed();
    assert_eq!(lab_namespaces(&t.lab).len(), 201);
    let t0 = Instant::now();
    let out = lc_ok(&["down", &t.lab]);
    let down = t0.elapsed();
    println!("200-node wire line without agents: up {up:?}, down {down:?}");
    assert!(out.contains("is down"), "{out}");
    assert_gone(&t.lab);
    assert!(down.as_secs_f64() < 2.0, "down took {down:?}");
}

/// `down` while `up` is still starting agents: the supervisor stops the start-up and tears
/// down what it made (the wire engine's sockets closed concurrently) instead of dying by
/// SIGTERM's default action, which closed the sockets one by one at exit.
#[test]
fn down_while_agents_are_starting_stops_the_start_up_quickly() {
    require_root();
    let t = TestLab::from_src("downmid", &line(200));
    let up = std::process::Command::new(lightcone_bin())
        .args([
            "up",
            t.file.to_str().expect("utf-8"),
            "--detach",
            "--link-engine",
            "wire",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn up");
    let agents = std::path::Path::new("/run/lightcone")
        .join(&t.lab)
        .join("agents");
    let started = || {
        std::fs::read_dir(&agents)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "sock"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(std::time::Duration::from_secs(60), || started() >= 10),
        "agents did not start"
    );
    let t0 = Instant::now();
    let out = lc_ok(&["down", &t.lab]);
    let down = t0.elapsed();
    let up = up.wait_with_output().expect("up output");
    let up_text =
        String::from_utf8_lossy(&up.stderr).into_owned() + &String::from_utf8_lossy(&up.stdout);
    println!(
        "down while agents were starting: {down:?}; up said: {}",
        up_text.lines().last().unwrap_or("")
    );
    assert!(out.contains("is down"), "{out}");
    assert_gone(&t.lab);
    assert!(down.as_secs_f64() < 2.0, "down took {down:?}");
    assert!(
        up_text.contains("interrupted while starting agents"),
        "up was not interrupted while starting agents (too late?):\n{up_text}"
    );
    assert!(!up.status.success());
}
