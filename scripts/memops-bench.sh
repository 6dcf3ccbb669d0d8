#!/usr/bin/env bash
# The checked memory operations' cost: runs a program under the preload with check_memops=1 and
# check_memops=0, interleaved, and prints each run's wall and user time, the medians and the ratio.
#
#   scripts/memops-bench.sh [-n RUNS] [-b BUILD_DIR] [-- COMMAND ARGS...]
#
# Without a command it runs the microbenchmark `hp-fixture-c bench-memops` (HEAPPATROL_BENCH_ROUNDS,
# default here 2,000,000): memcpy/strlen/strncat/memcmp/memchr/memset between live heap blocks and
# the stack, no allocation in the loop. BUILD_DIR defaults to .build-memops-release, built here in
# release mode (HeapPatrolPreload and hp-fixture-c) unless it already has both.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
build=.build-memops-release
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) runs="$2"; shift 2 ;;
    -b) build="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [-n RUNS] [-b BUILD_DIR] [-- COMMAND ARGS...]" >&2; exit 2 ;;
  esac
done

if [[ ! -f "$build/release/libHeapPatrolPreload.so" || ! -x "$build/release/hp-fixture-c" ]]; then
  swift build -c release --scratch-path "$build" --product HeapPatrolPreload >&2
  swift build -c release --scratch-path "$build" --product hp-fixture-c >&2
fi
preload="$PWD/$build/release/libHeapPatrolPreload.so"
if [[ $# -eq 0 ]]; then
  export HEAPPATROL_BENCH_ROUNDS="${HEAPPATROL_BENCH_ROUNDS:-2000000}"
  set -- "$PWD/$build/release/hp-fixture-c" bench-memops
fi

python3 - "$runs" "$preload" "$@" <<'PY'
import os, resource, statistics, subprocess, sys, time

runs, preload, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
base = os.environ.get("HEAPPATROL_OPTIONS", "")
results = {"check_memops=1": [], "check_memops=0": []}

def run(option):
    options = f"{base},{option}" if base else option
    env = dict(os.environ, LD_PRELOAD=preload, HEAPPATROL_OPTIONS=options)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{option}: exit status {done.returncode}\n{done.stderr.decode(errors='replace')}")
    if b"ERROR: HeapPatrol" in done.stderr:
        sys.exit(f"{option}: HeapPatrol reported a finding\n{done.stderr.decode(errors='replace')}")
    return wall, after.ru_utime - before.ru_utime

for round in range(runs):
    for option in results:  # interleaved, so drift in the machine's load hits both alike
        wall, user = run(option)
        results[option].append((wall, user))
        print(f"run {round + 1} {option}: {wall:.3f} s wall, {user:.3f} s user", flush=True)

median = {option: (statistics.median(w for w, _ in r), statistics.median(u for _, u in r))
          for option, r in results.items()}
for option, (wall, user) in median.items():
    print(f"median {option}: {wall:.3f} s wall, {user:.3f} s user")
checked, unchecked = median["check_memops=1"], median["check_memops=0"]
print(f"ratio checked/unchecked: {checked[0] / unchecked[0]:.2f}x wall, "
      f"{checked[1] / unchecked[1]:.2f}x user")
PY
