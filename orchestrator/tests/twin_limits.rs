//! Issue 13: the lab keeps its per-host cap of 10^4 nodes; the twin (`simulate`) reads up
//! to 10^6, and refuses more with its own words. Both refusals change nothing and say what
//! to do instead. Generated systems this large need a larger address pool than the
//! default /15 (65,536 link subnets), and the error says so.

use lightcone::plan::plan;
use lightcone::topology::{self, Host, LoadError, MAX_NODES, MAX_TWIN_NODES};

fn generated(clusters: u32, cells: u32, tiles: u32, extra: &str) -> String {
    format!(
        "name: big\n{extra}generate:\n  layers:\n    - {{radius_au: 1, clusters: {clusters}, cells: {cells}, tiles: {tiles}}}\n  cell_fabric: chords\n"
    )
}

fn error_of(src: &str, host: Host) -> String {
    match topology::parse_str_for(src, "big.yaml", host) {
        Ok(t) => panic!("expected an error, got {} nodes", t.nodes.len()),
        Err(LoadError::Invalid { rendered, .. }) => rendered,
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[test]
fn the_lab_keeps_its_cap_and_the_twin_reads_past_it() {
    // 2 x 5 x 2,000 = 20,000 tiles.
    let src = generated(2, 5, 2000, "");
    let lab = error_of(&src, Host::Lab);
    assert!(
        lab.contains(&format!(
            "the generator would make 20000 nodes; a lab on one host holds at most {MAX_NODES}"
        )),
        "{lab}"
    );
    assert!(lab.contains("discrete-event simulator"), "{lab}");
    // The default read is the lab's.
    assert!(topology::parse_str(&src, "big.yaml").is_err());
    let twin = topology::parse_str_for(&src, "big.yaml", Host::Twin).expect("the twin reads it");
    assert_eq!(twin.nodes.len(), 20_000);
    assert!(twin.links.len() > 20_000, "{} links", twin.links.len());
    let p = plan(&twin);
    assert_eq!(p.nodes.len(), 20_000);
}

#[test]
fn the_twin_refuses_more_than_a_million_with_its_own_words() {
    // 10 x 101 x 1,000 = 1,010,000 tiles: refused before anything is built.
    let e = error_of(&generated(10, 101, 1000, ""), Host::Twin);
    assert!(
        e.contains(&format!(
            "the generator would make 1010000 nodes; the digital twin simulates at most {MAX_TWIN_NODES}"
        )),
        "{e}"
    );
    assert!(e.contains("lower clusters, cells or tiles"), "{e}");
    assert!(e.contains("nothing was changed"), "{e}");
}

#[test]
fn past_the_default_pool_the_error_asks_for_a_larger_one_and_a_larger_one_reads() {
    // 40 x 1,000 tiles in chords cells: ~79,000 links, past the /15's 65,536.
    let e = error_of(&generated(4, 10, 1000, ""), Host::Twin);
    assert!(e.contains("holds 65536 link subnets"), "{e}");
    assert!(e.contains("use a larger pool"), "{e}");
    let t = topology::parse_str_for(
        &generated(4, 10, 1000, "addressing: {pool: 10.0.0.0/8}\n"),
        "big.yaml",
        Host::Twin,
    )
    .expect("a /8 holds them");
    assert_eq!(t.nodes.len(), 40_000);
}
