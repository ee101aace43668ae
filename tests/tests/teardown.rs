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
fn down_of_a_200_node_wire_line_takes_under_2_5_s() {
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
    assert!(down.as_secs_f64() < 2.5, "down took {down:?}");
}
