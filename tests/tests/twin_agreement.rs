//! Issue 13, "agreement with the lab": the same small scenario (the shipped cell topology,
//! twelve tiles on a ring, sixteen crashes 10 s apart, each tile restarted 8 s after its
//! crash) with the same seed, played once by `lightcone run` in a real lab and by `lightcone
//! simulate`, gives the same verdicts, and the median of the per-crash detection times
//! agrees within the tolerance stated at [`MEDIAN_TOLERANCE`]. Needs root (the lab); run it
//! under the lab lock (`flock -o /tmp/lightcone-lab.lock cargo test -p lightcone-e2e --test
//! twin_agreement`). About 180 s: the lab plays 162 s of real time.

use std::collections::BTreeMap;
use std::path::Path;

use lightcone_e2e::*;

/// Crashes of the scenario: (at s, tile), 10 s apart, eight tiles twice; each is restarted
/// `RESTART_AFTER_S` later, so one tile at most is down at a time (a tile down while another
/// crashes cannot report it, and the crash's "all cell peers" time then waits for its
/// rejoin).
const CRASHES: &[(u32, &str)] = &[
    (2, "l0c0k0t3"),
    (12, "l0c0k0t7"),
    (22, "l0c0k0t10"),
    (32, "l0c0k0t5"),
    (42, "l0c0k0t1"),
    (52, "l0c0k0t9"),
    (62, "l0c0k0t4"),
    (72, "l0c0k0t8"),
    (82, "l0c0k0t3"),
    (92, "l0c0k0t7"),
    (102, "l0c0k0t10"),
    (112, "l0c0k0t5"),
    (122, "l0c0k0t1"),
    (132, "l0c0k0t9"),
    (142, "l0c0k0t4"),
    (152, "l0c0k0t8"),
];
const RESTART_AFTER_S: u32 = 8;

/// The figure: "detection times whose medians agree within 20 %". Detection is
/// SWIM's randomized probe order plus Lifeguard's suspicion timeout, so a single crash's time
/// (until all eleven cell peers report it) is a draw from a distribution: in the twin, over
/// seeds 7–46 of this scenario (320 crashes, release build, session 12), median 2.745 s,
/// σ 0.608 s, 1.714–6.365 s. The lab's nodes draw their probe orders from their own seeds,
/// the twin mixes the scenario seed in (`twin/config.rs`), so the two runs see different
/// draws of the same distribution, not the same draws. So the twin plays the scenario under
/// [`TWIN_SEEDS`] seeds (256 draws: its median is then close to the distribution's), and
/// the lab's median over its sixteen crashes must lie within 20 % of the twin's (the
/// reference: the better-known median) or one protocol period (500 ms, the granularity at
/// which a probe round finds the crash), whichever is larger.
///
/// Why sixteen crashes: with eight, the lab's median is itself a wide draw. Session 17's
/// CI run of eight measured lab median 2.232 s against the twin's 2.766 s (0.534 s apart,
/// past the then tolerance of 20 % of the *lab's* median, floor 0.5 s), and two local
/// runs of the same binary right after gave 2.534, 2.971 s (and session 12's 2.778 s): a
/// lab that behaves like the twin, failing on the spread of an eight-draw median (σ ≈ 0.22 s
/// in the twin; the four lab medians 2.778, 2.232, 2.534, 2.971 have a sample standard
/// deviation of 0.32 s). Sixteen draws narrow it by √2, and the
/// tolerance is now taken of the reference's median, not of the noisier side's; the bound
/// (20 %, the issue's) is unchanged.
const MEDIAN_TOLERANCE: f64 = 0.20;
const PROTOCOL_PERIOD_S: f64 = 0.5;
/// Seeds the twin plays the scenario under (the scenario's own seed first).
const TWIN_SEEDS: u64 = 16;
const SEED: u64 = 7;

fn scenario(dir: &Path, lab: &str) -> std::path::PathBuf {
    let topo = topology_file(dir, &shipped("cell.yaml"), lab);
    let mut timeline = String::new();
    for (at, tile) in CRASHES {
        timeline += &format!("  - {{ at: {at}s, crash: {tile} }}\n");
        timeline += &format!("  - {{ at: {}s, restart: {tile} }}\n", at + RESTART_AFTER_S);
    }
    let src = format!(
        "name: agree\ntopology: {}\nseed: {SEED}\nduration: 162s\ntimeline:\n{timeline}expect:\n  - detection_time < 10s\n  - false_quarantines == 0\n",
        topo.display()
    );
    let p = dir.join("agree.yaml");
    std::fs::write(&p, src).expect("write scenario");
    p
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
        .expect("report json")
}

/// Each expectation's text and whether it passed.
fn verdicts(r: &serde_json::Value) -> BTreeMap<String, bool> {
    r["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .map(|v| {
            (
                v["expectation"].as_str().unwrap_or("?").to_string(),
                v["pass"].as_bool().expect("pass"),
            )
        })
        .collect()
}

/// The per-crash detection times (s) from detection_time's detail: "per crash, all cell
/// peers: l0c0k0t3: 1.234s by 11 peers; …".
fn detections(r: &serde_json::Value) -> Vec<f64> {
    let v = r["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|v| {
            v["expectation"]
                .as_str()
                .is_some_and(|e| e.starts_with("detection_time"))
        })
        .expect("a detection_time verdict");
    let note = v["detail"].as_str().expect("detail");
    // In crash order: a tile crashed twice has two entries, the first for its first crash.
    let mut out = Vec::new();
    let mut rest = note;
    for (_, tile) in CRASHES {
        let Some((_, after)) = rest.split_once(&format!("{tile}: ")) else {
            panic!(
                "no detection of {tile} (crash {} of {}) in {note:?}",
                out.len() + 1,
                CRASHES.len()
            );
        };
        let figure = after.split(" by ").next().unwrap_or("");
        out.push(seconds(figure).unwrap_or_else(|| panic!("{figure:?} in {note:?}")));
        rest = after;
    }
    out
}

/// "1.234s", "850ms" (the report's `fmt_ns`) → seconds.
fn seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    for (unit, mult) in [
        ("ms", 1e-3),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ns", 1e-9),
        ("s", 1.0),
    ] {
        if let Some(n) = s.strip_suffix(unit) {
            return n.trim().parse::<f64>().ok().map(|x| x * mult);
        }
    }
    None
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The comparison itself, so its failure can be shown without a lab.
fn agree(lab: &[f64], twin: &[f64]) -> Result<(), String> {
    let (ml, mt) = (median(lab), median(twin));
    let tol = (MEDIAN_TOLERANCE * mt).max(PROTOCOL_PERIOD_S);
    if (ml - mt).abs() <= tol {
        Ok(())
    } else {
        Err(format!(
            "median detection: lab {ml:.3} s {lab:?}, twin {mt:.3} s {twin:?}, differ by {:.3} s > {tol:.3} s",
            (ml - mt).abs()
        ))
    }
}

#[test]
fn the_comparison_fails_when_the_medians_part() {
    assert!(agree(&[2.0, 2.2, 2.4, 2.6], &[2.1, 2.3, 2.5, 2.9]).is_ok());
    assert!(agree(&[2.0, 2.2, 2.4, 2.6], &[3.5, 3.9, 4.0, 4.1]).is_err());
    // The floor: half a second apart at a 1 s median is one protocol period.
    assert!(agree(&[1.0, 1.0], &[1.5, 1.5]).is_ok());
    assert!(agree(&[1.0, 1.0], &[1.6, 1.6]).is_err());
    assert_eq!(seconds("1.234s"), Some(1.234));
    assert_eq!(seconds("850ms"), Some(0.85));
}

#[test]
fn lab_and_twin_agree_on_the_cell_scenario() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lab = lab_name("agree");
    let sc = scenario(tmp.path(), &lab);
    let guard = LabGuard(lab.clone());
    let lab_out = tmp.path().join("lab");
    let twin_out = tmp.path().join("twin");
    let o = lc(&[
        "run",
        sc.to_str().unwrap(),
        "--out",
        lab_out.to_str().unwrap(),
    ]);
    let lab_text = format!(
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    drop(guard);
    assert_gone(&lab);
    let mut twin_text = String::new();
    let mut dt = Vec::new();
    let mut twin_ok = true;
    for seed in SEED..SEED + TWIN_SEEDS {
        let out = twin_out.join(seed.to_string());
        let t = lc(&[
            "simulate",
            sc.to_str().unwrap(),
            "--seed",
            &seed.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let rt = report(&out);
        if seed == SEED {
            twin_text = format!(
                "exit {:?}\n{}\n{}",
                t.status.code(),
                String::from_utf8_lossy(&t.stdout),
                String::from_utf8_lossy(&t.stderr)
            );
            assert_eq!(
                verdicts(&report(&lab_out)),
                verdicts(&rt),
                "verdicts differ\nlab:\n{lab_text}\ntwin:\n{twin_text}"
            );
        }
        twin_ok &= t.status.success();
        dt.extend(detections(&rt));
    }
    assert!(
        o.status.success() && twin_ok,
        "lab:\n{lab_text}\ntwin (seed {SEED}):\n{twin_text}"
    );
    let dl = detections(&report(&lab_out));
    eprintln!(
        "detection per crash (s): lab {dl:?} (median {:.3}), twin over seeds {SEED}..{} median {:.3} of {} draws",
        median(&dl),
        SEED + TWIN_SEEDS - 1,
        median(&dt),
        dt.len()
    );
    agree(&dl, &dt).unwrap_or_else(|e| panic!("{e}\nlab:\n{lab_text}\ntwin:\n{twin_text}"));
}
