//! Bring-up and teardown of namespaces + links (no agents) for 100, 300 and 1,000 nodes,
//! both layouts. Needs root. Run: `cargo bench -p lightcone --bench lab`.
//! Target on the 2-core reference machine: 1,000 nodes up ≤ 5 s, down ≤ 3 s.

use std::time::Instant;

use lightcone::apply::{self, Layout};
use lightcone::plan::plan;
use lightcone::state::{LabDir, Ledger};
use lightcone::topology;

fn topo_src(lab: &str, nodes: usize) -> String {
    // Cells of 10 tiles on a ring, cells of a cluster on a star, clusters of 10 cells.
    let cells = nodes / 10;
    let clusters = cells.div_ceil(10);
    let per = cells / clusters;
    format!(
        "name: {lab}\ngenerate:\n  layers:\n    - {{radius_au: 1.0, clusters: {clusters}, cells: {per}, tiles: 10}}\n  cell_fabric: ring\n  links:\n    cell: {{delay: 1ms}}\n    cluster: {{delay: 5ms}}\n    layer: {{delay: 10ms}}\n"
    )
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("lab bench needs root (network namespaces)");
        std::process::exit(2);
    }
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("LIGHTCONE_STATE_DIR", tmp.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:>6} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "nodes", "links", "layout", "netns_s", "links_s", "addr_s", "up_s", "down_s"
    );
    for n in [100usize, 300, 1000] {
        for layout in [Layout::Direct, Layout::Wire] {
            let lab = format!("bench{n}{}", if layout == Layout::Wire { "w" } else { "d" });
            let topo = topology::parse_str(&topo_src(&lab, n), "bench").unwrap();
            let p = plan(&topo);
            let dir = LabDir::new(&lab).unwrap();
            let mut ledger = Ledger::create(&dir).unwrap();
            let t = Instant::now();
            let times = rt
                .block_on(apply::build(&p, layout, &mut ledger, |_, _, _| {}))
                .unwrap();
            let up = t.elapsed();
            let t = Instant::now();
            apply::teardown(&dir, None).unwrap();
            let down = t.elapsed();
            println!(
                "{:>6} {:>6} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                p.nodes.len(),
                p.links.len(),
                format!("{layout:?}").to_lowercase(),
                times.namespaces.as_secs_f64(),
                times.links.as_secs_f64(),
                times.addresses.as_secs_f64(),
                up.as_secs_f64(),
                down.as_secs_f64()
            );
        }
    }
}
