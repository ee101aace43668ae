#!/usr/bin/env bash
# Coverage-guided fuzzing of the core's decoders (issue 17), bounded in time: builds the
# cargo-fuzz targets in fuzz/ (libFuzzer, nightly, optimized with debug assertions and
# overflow checks on) and runs each for SECONDS_PER_TARGET (default 30) from its checked-in
# seeds (fuzz/seeds/TARGET: real signed frames, log entries and proofs, bundles and
# orders; regenerate with `cargo run --release -p lightcone-fuzz-lab --bin seeds --
# fuzz/seeds`). Prints libFuzzer's final line per target (executions, coverage,
# exec/s); fails on any crash, panic, broken invariant, leak or hang (per-input timeout
# 10 s), naming the artifact that reproduces it:
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET ARTIFACT
# Once fixed, an artifact goes to fuzz/regressions/TARGET: every fuzzing run starts from
# it, and the targets' bodies (fuzz/lab, a member of the main workspace) replay it, with
# the seeds, in the README's test suite.
#
#   tests/fuzz.sh [SECONDS_PER_TARGET]
#
# LIGHTCONE_FUZZ_SANITIZER (default none; address or memory as cargo-fuzz names them): the
# core is safe Rust, so panics, overflows and hangs need no sanitizer; AddressSanitizer
# checks the unsafe code of dependencies (SIMD codecs, hashes) but costs build time (CPU
# 3m56s against 2m35s for a fresh build here) and halves executions per second. CI runs the
# default, 20 s a target (.ci/run), to stay within its 4-minute fuzz budget: cargo-fuzz's
# install took 1m13s, a fresh build 2m35s of CPU on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/rust-env.sh

secs=${1:-30}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: tests/fuzz.sh [SECONDS_PER_TARGET]  (a whole number of seconds, at least 1; got '$secs')" >&2
  exit 2
fi
targets=(datagram log_decode update_decode)
sanitizer=${LIGHTCONE_FUZZ_SANITIZER:-none}

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
echo "== building the fuzz targets ($(cargo fuzz --version), sanitizer $sanitizer)"
cargo +nightly fuzz build -O -a -s "$sanitizer"
bin=fuzz/target/x86_64-unknown-linux-gnu/release

failed=0
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  log=fuzz/target/fuzz-$t.log
  mkdir -p "$corpus" "$artifacts"
  regressions=fuzz/regressions/$t
  mkdir -p "$regressions"
  echo "== fuzzing $t for ${secs} s (seeds: $(ls fuzz/seeds/$t | wc -l), past crashes: $(ls "$regressions" | wc -l))"
  # New inputs go to the ignored fuzz/corpus/TARGET; the seeds stay as checked in.
  if "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "fuzz/seeds/$t" "$regressions" >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | sed "s/^/$t: /"
    grep -E '^stat::number_of_executed_units' "$log" | sed "s/^/$t: /"
  else
    failed=1
    echo "FAILED: $t (libFuzzer's log: $log)" >&2
    grep -E 'panicked at|ERROR: |SUMMARY|Test unit written to|assertion' "$log" | head -20 >&2 || true
    tail -30 "$log" >&2
  fi
done
if [ "$failed" != 0 ]; then
  echo "fuzzing found a crash (reproduce: $bin/TARGET ARTIFACT)" >&2
  exit 1
fi
echo "fuzzing: no crash in ${#targets[@]} targets x ${secs} s"
