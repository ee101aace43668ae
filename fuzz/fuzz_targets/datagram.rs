#![no_main]
//! See `lightcone_fuzz_lab::datagram`: the input format, what it reaches and the
//! invariants it asserts.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lightcone_fuzz_lab::datagram::run(data));
