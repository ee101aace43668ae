#!/usr/bin/env bash
# The whole test suite: format, lints, unit/property/snapshot tests, end-to-end tests in
# real namespaces, the netem VM test, a lab across two VMs. Needs root. CI runs exactly
# this (.ci/run).
#
#   tests/as-root tests/run.sh     (root directly, or through sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/rust-env.sh
# One clean build, not an edit loop: incremental caches would add ~5 GB to target/ (a
# clean run measured 4.6 GB in target/debug/incremental) for nothing. A developer's own
# setting wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

bash tests/setup.sh --deps

# Each step's header says when it started, so a slow CI run shows where its time went.
suite_t0=$(date +%s)
section() { echo "== $* [at $(($(date +%s) - suite_t0)) s]"; }

cleanup() {
  # Whatever a failed test left behind: labs (through lightcone's own teardown) and any
  # namespace or qemu process a test made itself.
  if [ -x target/debug/lightcone ]; then target/debug/lightcone down --all >/dev/null 2>&1 || true; fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(lc-|lct-)' || true); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  pkill -f 'qemu-system-x86_64.*lightcone' 2>/dev/null || true
}
trap cleanup EXIT

section "setup script is idempotent (second run changes nothing)"
bash tests/setup.sh --deps | tee /tmp/lightcone-setup-2.log
if grep -q '^installing:' /tmp/lightcone-setup-2.log; then
  echo "second setup run still installed packages" >&2
  exit 1
fi
section "Vagrantfile"
if ! command -v vagrant >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vagrant >/dev/null
fi
# No provider (VirtualBox, libvirt) can run here; validate the configuration itself.
vagrant validate --ignore-provider
section "fmt"
cargo fmt --all -- --check
section "clippy"
cargo clippy --workspace --all-targets -- -D warnings
section "core crate has no I/O dependencies"
bash tests/check-core-deps.sh
section "build"
cargo build --workspace --bins
section "unit, property, snapshot and namespace tests"
cargo test --workspace --exclude lightcone-e2e --no-fail-fast
section "end-to-end tests (real labs, one at a time: agents need the CPU)"
cargo test -p lightcone-e2e --no-fail-fast -- --test-threads=1
if [ -x tests/vm/netem-vm.sh ] && [ "${LIGHTCONE_SKIP_VM:-0}" != 1 ]; then
  section "netem engine in a VM"
  bash tests/vm/netem-vm.sh
  # Two qemu guests as two hosts, one lab across them over real ssh (issue 19), driven by
  # the binaries the build step above made.
  section "a lab across two VMs"
  LIGHTCONE_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug" bash tests/vm/multihost-vm.sh
fi

section "leftovers"
left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(lc-|lct-)' || true)
if [ -n "$left" ]; then
  echo "tests left namespaces behind: $left" >&2
  exit 1
fi
# What the build left on disk (stop 27's CI ran out of it): printed, so a growth shows.
echo "target/ holds $(du -sh target 2>/dev/null | cut -f1) after the suite; $(df -h --output=avail . | tail -1 | tr -d ' ') free"
echo "all tests passed in $(($(date +%s) - suite_t0)) s"
