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
/// down what it made instead of dying by SIGTERM's default action (which, when the engine
/// held one socket per veth end, closed them one by one at exit).
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

/// Interfaces of the host's own namespace whose name mentions `needle` (a lab's veth ends
/// live in its namespaces; none may ever be left in the host's).
fn host_links(needle: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 11 item 8 / issue 14: a 200-tile wire lab with agents in 4 processes (50 tiles
/// each) comes up as a user runs it, every tile running and answering when `up` returns,
/// and goes down in under 2 s leaving no namespace, veth, process or state behind; the
/// agents add under 1.5 s to `up` over the same lab without agents. (The 1,000-node
/// figures against issue 11's 3 s / 2 s are the benchmark's: `cargo bench --bench lab`.)
#[test]
fn a_grouped_200_tile_lab_comes_up_answering_and_goes_down_in_2_s_leaving_nothing() {
    require_root();
    let src = line(200).replace(
        "time_scale: 1\n",
        "time_scale: 1\nagents: { tiles_per_process: 50 }\n",
    );
    // The same lab without agents first, for the agents' share of `up` (the host's load
    // moves the kernel's share between runs; the agents' start is what this test checks).
    let bare = TestLab::from_src("grp200b", &src);
    let t0 = Instant::now();
    bare.up(&["--no-agents"]);
    let up_bare = t0.elapsed();
    lc_ok(&["down", &bare.lab]);
    assert_gone(&bare.lab);
    let t = TestLab::from_src("grp200", &src);
    let t0 = Instant::now();
    let out = t.up(&[]);
    let up = t0.elapsed();
    let window = fidelity_window_s(&out).unwrap_or_else(|| panic!("no fidelity line: {out}"));
    assert!(out.contains("200 tiles in 4 agent processes"), "{out}");
    assert_eq!(lab_namespaces(&t.lab).len(), 201);
    let st: serde_json::Value =
        serde_json::from_str(&lc_ok(&["status", &t.lab, "--json"])).expect("status json");
    let nodes = st["labs"][0]["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 200);
    let pids: std::collections::BTreeSet<u64> = nodes
        .iter()
        .map(|n| {
            assert_eq!(n["agent"]["state"], "running", "{}", n["name"]);
            n["agent"]["pid"].as_u64().expect("pid")
        })
        .collect();
    assert_eq!(pids.len(), 4, "tiles are not in 4 processes: {pids:?}");
    // Answering, not only started: every tile's control socket takes a request now.
    for (i, n) in nodes.iter().enumerate() {
        let sock = format!("/run/lightcone/{}/agents/{i}.sock", t.lab);
        let mut s = std::os::unix::net::UnixStream::connect(&sock)
            .unwrap_or_else(|e| panic!("{}: {sock}: {e}", n["name"]));
        use std::io::{Read, Write};
        s.write_all(b"GET /state HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 200"), "{}: {reply}", n["name"]);
    }
    let t0 = Instant::now();
    let out = lc_ok(&["down", &t.lab]);
    let down = t0.elapsed();
    println!(
        "200-tile wire lab, 4 agent processes: up {up:?} (without agents {up_bare:?}), down {down:?}"
    );
    assert!(out.contains("is down"), "{out}");
    assert_gone(&t.lab);
    assert!(host_links(&t.lab).is_empty(), "{:?}", host_links(&t.lab));
    // Starting 200 tiles at once costs well under a second; one by one (each a round trip
    // to a process busy with the tiles already started) it cost seconds. Not counted: the
    // window `up` then spends reading the agents' timer lateness (issue 14; 2-15 s, its
    // length printed), a deliberate wait, not the start's cost.
    let agents_share = up.as_secs_f64() - up_bare.as_secs_f64() - window;
    assert!(
        agents_share < 1.5,
        "agents added {agents_share:.2} s to up ({up:?} against {up_bare:?} without, less the {window} s lateness window)"
    );
    assert!(down.as_secs_f64() < 2.0, "down took {down:?}");
}
