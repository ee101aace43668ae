#!/usr/bin/env bash
# The twin-scale bench's system (cells of 1,000 chords tiles, 1 % loss) with its timeline
# compressed into 12 s of virtual time: for memory measurements and trace-identity checks
# (docs/twin-scale.md section 5), where the bench's 50 s timeline would take too long.
#
#   benches/twin-mem-scenario.sh TILES DURATION FILE     (DURATION >= 12s)
#   target/release/lightcone simulate FILE --crypto modelled --out DIR --json
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 TILES DURATION FILE" >&2; exit 2; }
n=$1; D=$2; f=$3
case $n in
  1000) L=1 C=1 K=1 ;; 2000) L=1 C=1 K=2 ;; 5000) L=1 C=1 K=5 ;;
  10000) L=1 C=2 K=5 ;; 100000) L=2 C=5 K=10 ;;
  *) echo "no shape for $n tiles (use 1000 2000 5000 10000 100000)" >&2; exit 2 ;;
esac
layers=""
for ((l = 0; l < L; l++)); do
  layers+="      - { radius_au: 1.$l, clusters: $C, cells: $K, tiles: 1000, authorities: 0 }"$'\n'
done
last="l0c$((C - 1))k$((K - 1))"
cat > "$f" <<YAML
name: twinmem-$n
topology:
  name: twinmem-$n
  seed: 13
  addressing: { pool: 10.0.0.0/8 }
  generate:
    layers:
$layers    cell_fabric: chords
    cluster_fabric: ring
    layer_fabric: ring
    links:
      cell: { delay: 2ms, loss: 1% }
      cluster: { delay: 5ms }
      layer: { delay: 10ms }
      system: { delay: 20ms }
seed: 13
duration: $D
timeline:
  - { at: 0s, load: { nodes: "l0c0k0t10*", keys: 6, interval: 250ms, until: 10s } }
  - { at: 1s, crash: l0c0k0t500 }
  - { at: 5s, restart: l0c0k0t500 }
  - at: 6s
    partition: [[${last}t300, ${last}t301]]
  - { at: 8s, heal: }
expect:
  - detection_time < 10s
  - converged_after_heal <= 10s
  - causal_anomalies == 0
  - no_acknowledged_write_lost
  - false_quarantines == 0
YAML
