#!/usr/bin/env bash
# The core crate has no I/O dependencies (issue 12): fails, naming the crate, if tokio,
# hyper, prometheus, nix, libc, mio or axum is among lightcone-core's normal dependencies
# (direct or transitive). Import circles are checked by tests/tests/imports.rs.
# Run from the workspace root after `. tests/rust-env.sh`.
set -euo pipefail
tree=$(cargo tree -p lightcone-core -e normal --prefix none --format '{p}')
bad=$(echo "$tree" | awk '{print $1}' | grep -E '^(tokio|hyper|prometheus|nix|libc|mio|axum)$' | sort -u || true)
if [ -n "$bad" ]; then
  for c in $bad; do
    echo "FAIL: lightcone-core depends on $c:" >&2
    cargo tree -p lightcone-core -e normal -i "$c" >&2 || true
  done
  exit 1
fi
echo "lightcone-core: $(echo "$tree" | awk '{print $1}' | sort -u | wc -l) crates, none of tokio|hyper|prometheus|nix|libc|mio|axum"
