#!/usr/bin/env bash
# Install what lightcone needs on a Debian/Ubuntu machine and build it. Idempotent: run
# it again and it only checks. Used by the README, by `tests/run.sh` (CI) and by the
# Vagrant VM's provisioning.
#
#   tests/as-root tests/setup.sh          # packages + release build (target/release/lightcone)
#   tests/as-root tests/setup.sh --deps   # packages only
# (tests/as-root: directly when root, through sudo otherwise)
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[ "${1:-}" = "--deps" ] && build=0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup needs root to install packages and, later, to create network namespaces: tests/as-root $0 (or sudo $0)" >&2
  exit 1
fi

# Packages: iproute2 and ping for labs and their tests, a C toolchain for crates that
# build C, prometheus for the telemetry tests, chromium for the dashboard's browser test,
# qemu/debootstrap for the netem VM test, OpenSSH (client and server) for the multi-host
# controller and its test (a private sshd on 127.0.0.1).
packages=(iproute2 iputils-ping build-essential pkg-config ca-certificates curl
          prometheus chromium chromium-driver
          qemu-system-x86 debootstrap e2fsprogs
          openssh-client openssh-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian prometheus package starts a system-wide server; lightcone starts its own per
# lab, so keep the packaged one from holding port 9090 and scraping nothing.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
  systemctl disable prometheus >/dev/null 2>&1 || true
fi

# The multi-host test starts its own sshd on 127.0.0.1 on a private port. If this run
# installed openssh-server and its package started the system sshd (listening on every
# address), stop and disable it again; an sshd that was there before is left alone.
if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null 2>&1 \
   && systemctl is-active --quiet ssh 2>/dev/null; then
  systemctl stop ssh || true
  systemctl disable ssh >/dev/null 2>&1 || true
fi
mkdir -p /run/sshd

# Rust: root's rustup toolchain, else the one of the user who ran sudo (see rust-env.sh);
# Debian's own cargo is too old.
. tests/rust-env.sh
if ! cargo --version >/dev/null 2>&1; then
  echo "no Rust toolchain found (for root, nor in ~${SUDO_USER:-}/.cargo). Install one with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi
rustc_minor=$(rustc --version | awk '{print $2}' | cut -d. -f2)
if [ "$rustc_minor" -lt 85 ]; then
  echo "rustc $(rustc --version | awk '{print $2}') is too old; lightcone needs 1.85 or newer (rustup update)." >&2
  exit 1
fi

if [ "$build" -eq 1 ]; then
  cargo build --release --workspace --bins
  echo "built: target/release/lightcone and target/release/lightcone-agent"
  echo "next: tests/as-root target/release/lightcone doctor   (checks this machine, names the link engine)"
fi
