#!/usr/bin/env bash
# One command for the whole benchmark: installs the peers that are missing (Debian's electric-fence
# and duma; scudo with GWP-ASan comes with the Swift toolchain), builds HeapPatrol's preload library
# in release mode and the C benchmarks, then runs every workload under every tool interleaved and
# prints medians and ratios to glibc (markdown + CSV).
#
#   scripts/bench/run.sh [--quick] [--runs N] [--ops N] [--sampling N] [--strace-ops N] [--tools a,b]
#                        [--no-programs]
#
# Tools: glibc, heappatrol (every block guarded), heappatrol-sample (sample=N, default 5000),
# efence, duma, gwp-asan-all (scudo, every allocation guarded), gwp-asan-sampled (scudo defaults).
#
# Never run by the test suite: it takes minutes and wants a quiet machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${BENCH_OUT:-$root/.build-bench}"
mkdir -p "$out"

need=()
dpkg -s electric-fence >/dev/null 2>&1 || need+=(electric-fence)
dpkg -s duma >/dev/null 2>&1 || need+=(duma)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
if ((${#need[@]})); then
  echo "installing peers: ${need[*]}" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

cc=${CC:-cc}
$cc -O2 -pthread -o "$out/malloc_bench" "$root/scripts/bench/malloc_bench.c"
$cc -O2 -pthread -o "$out/syscall_floor" "$root/scripts/bench/syscall_floor.c"
$cc -O2 -o "$out/measure" "$root/scripts/bench/measure.c"

# HP_SCRATCH: a build directory of your own (e.g. while others build in .build).
scratch=(${HP_SCRATCH:+--scratch-path "$HP_SCRATCH"})
(cd "$root" && swift build -c release "${scratch[@]}" --product HeapPatrolPreload >&2 &&
  swift build -c release "${scratch[@]}" --product hp-fixture-swift >&2) || {
  echo "warning: release build of HeapPatrol failed; heappatrol columns will be missing" >&2
}
bin="$(cd "$root" && swift build -c release "${scratch[@]}" --show-bin-path)"

# A Swift package's test bundle (XCTest tests of Fixtures/SamplePackage), run directly.
bundle="$out/sample-package/debug/SamplePackagePackageTests.xctest"
swift build --package-path "$root/Fixtures/SamplePackage" --build-tests \
  --scratch-path "$out/sample-package" >&2 || echo "warning: the sample package's tests did not build" >&2

# A real repository for `git log`: this one if it has history, else a generated one.
repo="$root"
if [ "$(git -C "$repo" rev-list --count HEAD 2>/dev/null || echo 0)" -lt 50 ]; then
  repo="$out/git-repo"
  if [ ! -d "$repo/.git" ]; then
    git init -q "$repo"
    for i in $(seq 1 300); do
      echo "line $i" >>"$repo/file$((i % 17)).txt"
      git -C "$repo" add -A && git -C "$repo" -c user.name=bench -c user.email=bench@example.invalid commit -qm "change $i"
    done
  fi
fi

exec python3 "$root/scripts/bench/bench.py" \
  --malloc-bench "$out/malloc_bench" --syscall-floor "$out/syscall_floor" --measure "$out/measure" \
  --preload "$bin/libHeapPatrolPreload.so" --swift-program "$bin/hp-fixture-swift" \
  --git-repo "$repo" --swift-bundle "$bundle" --csv "$out/bench-results.csv" "$@"
