# Sourced by setup.sh and run.sh (which run as root): find a Rust toolchain for root.
#
# `sudo` resets PATH and HOME, so a toolchain that rustup installed for the user who typed
# `sudo` (~/.cargo/bin, ~/.rustup) is invisible to root, and its `cargo` proxy would look for
# toolchains in /root/.rustup. Use root's own toolchain if it works; else the sudo user's
# (or the rustup proxy on PATH), with RUSTUP_HOME pointing at its toolchains. Cargo's
# download cache stays root's ($HOME/.cargo), so root never writes into the user's ~/.cargo.
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
if [ -z "${RUSTUP_HOME:-}" ] && ! cargo --version >/dev/null 2>&1; then
  cands=()
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    cands+=("$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin")
  fi
  if command -v cargo >/dev/null 2>&1; then
    cands+=("$(dirname "$(readlink -f "$(command -v cargo)")")")
  fi
  for bin in "${cands[@]}"; do
    home=$(dirname "$(dirname "$bin")")
    if [ -x "$bin/cargo" ] && [ -d "$home/.rustup/toolchains" ]; then
      export PATH="$bin:$PATH"
      export RUSTUP_HOME="$home/.rustup"
      export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
      break
    fi
  done
fi
