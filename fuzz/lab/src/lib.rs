//! The bodies of lightcone's fuzz targets (issue 17: "a fuzz target on frame and log-entry
//! decoding runs in CI for a bounded time without a crash"), apart from libFuzzer so the
//! seed generator (`src/bin/seeds.rs`) and plain tests build them too.
//!
//! - [`datagram`]: byte strings into a real [`Node`] of a small lab (all sub-machines on),
//!   through [`Node::handle`]: frame parsing, authentication, the replay window and every
//!   wire kind's body decoding down to the store, heat, BFT, order and log messages.
//! - [`log`]: transparency-log entries, tree heads and their inclusion and consistency
//!   proofs ([`lightcone_core::trust::log`]).
//! - [`update`]: release manifests, the TUF bundle check and dark orders
//!   ([`lightcone_core::update`]).
//!
//! Every target asserts invariants besides "no panic" (each module says which).

pub mod datagram;
pub mod input;
pub mod lab;
pub mod log;
pub mod seeds;
pub mod update;

pub use lightcone_core::Node;

#[cfg(test)]
mod replay {
    //! Every checked-in input runs clean: the seeds (`fuzz/seeds/TARGET`) and the inputs
    //! that once crashed a target (`fuzz/regressions/TARGET`, kept after their fix so the
    //! defect cannot come back unseen). `tests/fuzz.sh` runs these tests before fuzzing.

    use std::path::Path;

    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut n = 0;
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            let mut paths: Vec<_> = entries
                .map(|e| e.expect("a directory entry").path())
                .collect();
            paths.sort();
            for p in paths {
                let data = std::fs::read(&p).expect("a readable input");
                if std::panic::catch_unwind(|| run(&data)).is_err() {
                    panic!("{} fails its target {target}", p.display());
                }
                n += 1;
            }
        }
        n
    }

    #[test]
    fn datagram_inputs_run_clean() {
        assert!(
            replay("datagram", crate::datagram::run) > 0,
            "no inputs found"
        );
    }

    #[test]
    fn log_decode_inputs_run_clean() {
        assert!(replay("log_decode", crate::log::run) > 0, "no inputs found");
    }

    #[test]
    fn update_decode_inputs_run_clean() {
        assert!(
            replay("update_decode", crate::update::run) > 0,
            "no inputs found"
        );
    }
}
