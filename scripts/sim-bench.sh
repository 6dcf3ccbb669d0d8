#!/bin/sh
# Builds the page simulator's benchmark in release mode and runs it. Usage: scripts/sim-bench.sh [scale]
set -e
cd "$(dirname "$0")/.."
swift build -c release --product sim-bench --scratch-path .build-sim-bench >/dev/null
exec .build-sim-bench/release/sim-bench "$@"
