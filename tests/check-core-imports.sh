#!/usr/bin/env bash
# The core crate's files must not import each other in a circle (issue 12): every
# `crate::MODULE` path in code (comments and doc links excluded) is an edge from the file's
# top-level module to MODULE; `tsort` fails on a loop. Sub-machines must not import `node`
# (the composition): only lib.rs may name it.
# Run from the workspace root: bash tests/check-core-imports.sh [CRATE_SRC_DIR]
set -euo pipefail
src=${1:-core/src}
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for f in $(find "$src" -name '*.rs' | sort); do
  rel=${f#"$src"/}
  mod=${rel%%/*}
  mod=${mod%.rs}
  [ "$mod" = lib ] && continue
  # Code only: drop line comments (`//`, `///`, `//!`).
  sed -e 's#//.*$##' "$f" |
    { grep -o 'crate::[a-z_][a-z_0-9]*' || true; } |
    sed 's/^crate:://' | sort -u |
    while read -r to; do
      if [ "$to" != "$mod" ]; then
        echo "$mod $to" >>"$edges"
      fi
    done
  echo "$mod $mod" >>"$edges" # every module is a node of the graph
done
if grep -E '^[a-z_0-9]+ node$' "$edges" | grep -v '^node node$'; then
  echo "FAIL: the modules above import \`node\` (the composition); use the vocabulary modules" >&2
  exit 1
fi
if ! order=$(tsort "$edges" 2>&1); then
  echo "$order" >&2
  echo "FAIL: import circle between the files of $src (tsort found a loop above)" >&2
  exit 1
fi
if echo "$order" | grep -q 'loop'; then
  echo "$order" >&2
  echo "FAIL: import circle between the files of $src" >&2
  exit 1
fi
echo "no import circle in $src ($(sort -u "$edges" | awk '$1!=$2' | wc -l) edges); dependency order, users first:"
echo "$order" | tr '\n' ' '
echo
