#![no_main]
//! See `lightcone_fuzz_lab::log`: the input format, what it reaches and the
//! invariants it asserts.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lightcone_fuzz_lab::log::run(data));
