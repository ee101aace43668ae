#!/usr/bin/env bash
# The sans-IO crates have no I/O dependencies (issues 12, 13): fails, naming the crate, if
# tokio, hyper, prometheus, nix, libc, mio, axum, pnet or rtnetlink is among the normal
# dependencies (direct or transitive) of lightcone-core or lightcone-link (the link model
# and shaper the wire engine and the simulator share). Import circles are checked by
# tests/tests/imports.rs. Run from the workspace root after `. tests/rust-env.sh`.
set -euo pipefail
for krate in lightcone-core lightcone-link; do
  tree=$(cargo tree -p "$krate" -e normal --prefix none --format '{p}')
  bad=$(echo "$tree" | awk '{print $1}' | grep -E '^(tokio|hyper|prometheus|nix|libc|mio|axum|pnet.*|rtnetlink|netlink-.*)$' | sort -u || true)
  if [ -n "$bad" ]; then
    for c in $bad; do
      echo "FAIL: $krate depends on $c:" >&2
      cargo tree -p "$krate" -e normal -i "$c" >&2 || true
    done
    exit 1
  fi
  echo "$krate: $(echo "$tree" | awk '{print $1}' | sort -u | wc -l) crates, none of tokio|hyper|prometheus|nix|libc|mio|axum|pnet|rtnetlink|netlink"
done
