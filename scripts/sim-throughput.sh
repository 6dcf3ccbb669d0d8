#!/bin/bash
# Measures `heappatrol simulate` accesses/second on a generated 10-million-access address trace
# (release build). Usage: scripts/sim-throughput.sh [ACCESSES] [FRAMES] [POLICY]
set -euo pipefail
cd "$(dirname "$0")/.."
accesses=${1:-10000000}
frames=${2:-4096}
policy=${3:-clock}
trace=$(mktemp /tmp/hp-trace.XXXXXX)
trap 'rm -f "$trace"' EXIT
# A working set of 8192 pages with a hot quarter: 80% of accesses to 2048 pages, 20% to all 8192.
awk -v n="$accesses" 'BEGIN { srand(7); for (i = 0; i < n; i++) {
  page = (rand() < 0.8) ? int(rand() * 2048) : int(rand() * 8192)
  printf "%s 0x%x\n", (rand() < 0.3 ? "W" : "R"), page * 4096 } }' > "$trace"
swift build -c release --scratch-path .build-workloads-release --product heappatrol >/dev/null
binary=.build-workloads-release/release/heappatrol
start=$(date +%s.%N)
"$binary" simulate "$trace" --frames "$frames" --policy "$policy" --json
end=$(date +%s.%N)
awk -v n="$accesses" -v s="$start" -v e="$end" \
  'BEGIN { printf "%d accesses in %.2f s: %.0f accesses/second\n", n, e - s, n / (e - s) }'
