#!/usr/bin/env python3
"""Runs every workload under every allocator, interleaved (A B C A B C ...), and prints medians and
ratios to glibc from that one run, as a markdown table and CSV.

Invoked by scripts/bench/run.sh, which installs the peers and builds what is needed; see its --help.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def find_library(package, stem):
    """The shared object a Debian package installs, e.g. libefence.so.0."""
    try:
        files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        return None
    hits = sorted(f for f in files if os.path.basename(f).startswith(stem) and ".so" in f and os.path.isfile(f))
    return hits[0] if hits else None


def scudo_library():
    for root in ["/opt/swift/usr/lib/clang"]:
        if not os.path.isdir(root):
            continue
        for version in sorted(os.listdir(root)):
            path = os.path.join(root, version, "lib/linux/libclang_rt.scudo_standalone-x86_64.so")
            if os.path.isfile(path):
                return path
    return None


def tools(args):
    """name -> environment additions (None = not available, with the reason)."""
    out = {"glibc": ({}, None)}
    preload = args.preload
    if preload and os.path.isfile(preload):
        base = "detect_leaks=0,text_report=0"
        out["heappatrol"] = ({"LD_PRELOAD": preload, "HEAPPATROL_OPTIONS": base}, None)
        # mprotect guard pages with the VMA budget: past ~32k live blocks new ones get canaries.
        out["heappatrol-mprotect"] = (
            {"LD_PRELOAD": preload, "HEAPPATROL_OPTIONS": base + ",guard=mprotect"}, None)
        if args.sampling:
            out["heappatrol-sample"] = (
                {"LD_PRELOAD": preload, "HEAPPATROL_OPTIONS": base + ",sample=" + str(args.sampling)},
                None,
            )
    else:
        out["heappatrol"] = (None, "libHeapPatrolPreload.so not built")
    efence = find_library("electric-fence", "libefence.so")
    out["efence"] = ({"LD_PRELOAD": efence}, None) if efence else (None, "electric-fence not installed")
    duma = find_library("duma", "libduma.so")
    # DUMA's default 1-byte alignment kills many programs; 16 is what programs expect of malloc.
    out["duma"] = (
        ({"LD_PRELOAD": duma, "DUMA_ALIGNMENT": "16", "DUMA_DISABLE_BANNER": "1"}, None)
        if duma
        else (None, "duma not installed")
    )
    scudo = scudo_library()
    if scudo:
        out["gwp-asan-all"] = (
            {
                "LD_PRELOAD": scudo,
                "SCUDO_OPTIONS": "GWP_ASAN_Enabled=1:GWP_ASAN_SampleRate=1:"
                "GWP_ASAN_MaxSimultaneousAllocations=%d" % args.gwp_slots,
            },
            None,
        )
        out["gwp-asan-sampled"] = ({"LD_PRELOAD": scudo}, None)
    else:
        out["gwp-asan-all"] = (None, "scudo runtime not found in the toolchain")
    return out


MEASURE = None  # path of the measure launcher (set in main)


def run_measured(command, env_add, timeout, cwd=None, stdin_data=None):
    """Runs one command; returns status, wall time and the child's own rusage (peak RSS, minor
    faults) from wait4, with stdout/stderr captured through files (no pipe can fill up)."""
    env = dict(os.environ)
    env.update(env_add)
    report = tempfile.NamedTemporaryFile(delete=False)
    report.close()
    command = [MEASURE, report.name, "--"] + list(command)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        if stdin_data is not None:
            inp.write(stdin_data)
            inp.seek(0)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(command, env=env, cwd=cwd, stdin=inp, stdout=out, stderr=err)
        except FileNotFoundError as error:
            return {"status": "missing", "wall": 0, "stdout": b"", "stderr": str(error).encode()}
        status, usage = None, None
        while True:
            pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                _, raw, usage = os.wait4(proc.pid, 0)
                status = "timeout"
                break
            time.sleep(0.002)
        wall = time.monotonic() - start
        proc.returncode = 0  # reaped by wait4 above; keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        if status == "timeout":
            text = "timeout"
        elif status == 0:
            text = "ok"
        elif status < 0:
            text = "signal %d" % -status
        else:
            text = "exit %d" % status
        measured = parse_kv(open(report.name, "rb").read())
        os.unlink(report.name)
        return {"status": text, "wall": wall, "stdout": out.read(), "stderr": err.read(),
                "maxrss_kb": int(measured["maxrss_kb"]) if "maxrss_kb" in measured else None,
                "minflt": int(measured["minflt"]) if "minflt" in measured else None}


def parse_kv(text):
    result = {}
    for line in text.decode(errors="replace").splitlines():
        if "=" not in line:
            continue
        for pair in line.split():
            if "=" in pair:
                key, value = pair.split("=", 1)
                result[key] = value
    return result


def microbench_workloads(args):
    bench = args.malloc_bench
    w = []
    w.append(("a: churn, 1k live", [bench, "1000", str(args.ops), "1"], args.timeout))
    w.append(("b: churn, 100k live", [bench, "100000", str(args.ops), "1"], args.timeout))
    if not args.quick:
        w.append(("b: churn, 1M live", [bench, "1000000", str(args.ops), "1"], args.timeout * 3))
    w.append(("c: churn, 1k live, 8 threads", [bench, "1000", str(args.ops), "8"], args.timeout))
    return w


def program_workloads(args):
    w = []
    py = shutil.which("python3")
    if py:
        script = (
            "import json\n"
            "data=[{'id':i,'name':'n%d'%i,'tags':['a','b',i%7],'v':i*0.5} for i in range(200000)]\n"
            "s=json.dumps(data)\nassert json.loads(s)==data\nprint(len(s))\n"
        )
        w.append(("d: python3 JSON 200k", [py, "-c", script], args.timeout * 4, None))
    sqlite = shutil.which("sqlite3")
    if sqlite:
        sql = "create table t(a integer primary key, b text);begin;" + "".join(
            "insert into t(b) values('row %d');" % i for i in range(20000)
        ) + "commit;select count(*), sum(length(b)) from t;"
        w.append(("d: sqlite3 20k inserts", [sqlite, ":memory:"], args.timeout * 4, sql.encode()))
    git = shutil.which("git")
    if git and args.git_repo:
        w.append(("d: git log", [git, "-C", args.git_repo, "log", "--stat", "-n", "300"], args.timeout * 4, None))
    if args.swift_program and os.path.isfile(args.swift_program):
        # hp-fixture-swift's correct program: Dictionary/Array/String churn.
        w.append(("d: Swift churn", [args.swift_program, "good"], args.timeout * 4, None))
    if args.swift_bundle and os.path.exists(args.swift_bundle):
        w.append(("d: Swift test bundle", [args.swift_bundle], args.timeout * 6, None))
    return w


def syscalls_per_op(args, available):
    """Workload (a) shortened to --strace-ops operations under `strace -c -f`, once per tool: the
    syscalls of the whole run (start-up included, so a few hundred of them are not the allocator's)
    divided by the malloc/free pairs. The tool's environment goes to the traced program only (-E)."""
    strace = shutil.which("strace")
    if not strace:
        print("skipping syscalls per op: strace not installed", file=sys.stderr)
        return {}
    result = {}
    live = 1000
    for tool, env_add in available.items():
        summary = tempfile.NamedTemporaryFile(delete=False)
        summary.close()
        command = [strace, "-c", "-f", "-o", summary.name]
        for key, value in env_add.items():
            command += ["-E", "%s=%s" % (key, value)]
        command += [args.malloc_bench, str(live), str(args.strace_ops), "1"]
        try:
            subprocess.run(command, capture_output=True, timeout=args.timeout * 4)
            total = None
            for line in open(summary.name).read().splitlines():
                fields = line.split()
                if fields and fields[-1] == "total":
                    # "100.00  seconds  usecs/call  calls  [errors]  total"
                    numbers = [f for f in fields[:-1] if f.replace(".", "").isdigit()]
                    total = int(numbers[3]) if len(numbers) >= 4 else int(numbers[-1])
            if total is not None:
                result[tool] = total / float(live + args.strace_ops)
        except (subprocess.TimeoutExpired, ValueError, IndexError) as error:
            print("strace run for %s failed: %s" % (tool, error), file=sys.stderr)
        finally:
            os.unlink(summary.name)
    return result


def median(values):
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--malloc-bench", required=True)
    parser.add_argument("--syscall-floor", required=True)
    parser.add_argument("--measure", required=True)
    parser.add_argument("--preload")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ops", type=int, default=200000)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--gwp-slots", type=int, default=4096)
    parser.add_argument("--sampling", type=int, default=5000,
                        help="also run heappatrol with sample=N (0 = no sampling column)")
    parser.add_argument("--strace-ops", type=int, default=20000,
                        help="ops of the short workload-(a) run under strace -c per tool (0 = skip)")
    parser.add_argument("--tools", default="", help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="skip the 1M-live workload")
    parser.add_argument("--no-programs", action="store_true")
    parser.add_argument("--git-repo")
    parser.add_argument("--swift-program")
    parser.add_argument("--swift-bundle")
    parser.add_argument("--csv", default="bench-results.csv")
    args = parser.parse_args()
    global MEASURE
    MEASURE = args.measure

    available = {}
    for name, (env_add, reason) in tools(args).items():
        if args.tools and name not in args.tools.split(","):
            continue
        if env_add is None:
            print("skipping %s: %s" % (name, reason), file=sys.stderr)
        else:
            available[name] = env_add

    rows = []  # (workload, tool, run, metrics)
    workloads = [(n, c, t, None) for n, c, t in microbench_workloads(args)]
    if not args.no_programs:
        workloads += program_workloads(args)

    # Warm-up: one untimed run of each workload under glibc (page cache, binaries).
    for name, command, timeout, stdin_data in workloads:
        run_measured(command, {}, timeout, stdin_data=stdin_data)

    for run in range(args.runs):
        for name, command, timeout, stdin_data in workloads:
            for tool, env_add in available.items():
                result = run_measured(command, env_add, timeout, stdin_data=stdin_data)
                kv = parse_kv(result.get("stdout", b"")) if name[0] in "abc" else {}
                progress = parse_kv(result.get("stderr", b""))
                status = result["status"]
                if kv.get("status") == "failed":
                    status = "failed"
                metrics = {
                    "status": status,
                    "wall": result.get("wall"),
                    "ops_per_sec": float(kv["ops_per_sec"]) if "ops_per_sec" in kv and status == "ok" else None,
                    "maxrss_kb": result.get("maxrss_kb"),
                    "minflt": result.get("minflt"),
                    "reached": int(progress.get("reached", kv.get("reached", 0)) or 0) if name[0] == "b" else None,
                }
                rows.append((name, tool, run, metrics))
                print("run %d %-32s %-18s %s" % (run + 1, name, tool, json.dumps(
                    {k: v for k, v in metrics.items() if v is not None})), file=sys.stderr)

    syscalls = syscalls_per_op(args, available) if args.strace_ops else {}

    floor = {}
    for line in subprocess.run([args.syscall_floor], capture_output=True).stdout.decode().splitlines():
        kv = parse_kv(line.encode())
        for key in ("guard_pair_ns", "mprotect_pair_ns"):
            if key in kv:
                floor["%s_%sthread" % (key, kv.get("threads", "?"))] = kv[key]

    # Aggregate: medians per (workload, tool); ratios to glibc.
    table = []
    for name, *_ in workloads:
        glibc_ok = [m for (w, t, _, m) in rows if w == name and t == "glibc" and m["status"] == "ok"]
        glibc_speed = median([m["ops_per_sec"] for m in glibc_ok if m["ops_per_sec"]])
        glibc_wall = median([m["wall"] for m in glibc_ok])
        for tool in available:
            runs = [m for (w, t, _, m) in rows if w == name and t == tool]
            ok = [m for m in runs if m["status"] == "ok"]
            entry = {"workload": name, "tool": tool, "ok_runs": "%d/%d" % (len(ok), len(runs))}
            if ok:
                speed = median([m["ops_per_sec"] for m in ok if m["ops_per_sec"]])
                wall = median([m["wall"] for m in ok])
                entry["ops_per_sec"] = speed
                entry["wall_s"] = wall
                entry["slowdown_vs_glibc"] = (
                    glibc_speed / speed if speed and glibc_speed else (wall / glibc_wall if glibc_wall else None)
                )
                entry["maxrss_kb"] = median([m["maxrss_kb"] for m in ok if m["maxrss_kb"]])
                entry["minflt"] = median([m["minflt"] for m in ok if m["minflt"] is not None])
            else:
                entry["failure"] = runs[0]["status"] if runs else "not run"
            if name.startswith("a:") and tool in syscalls:
                entry["syscalls_per_op"] = syscalls[tool]
            reached = [m["reached"] for m in runs if m.get("reached")]
            if reached:
                entry["live_reached"] = max(reached)
            table.append(entry)

    columns = ["workload", "tool", "ok_runs", "ops_per_sec", "wall_s", "slowdown_vs_glibc", "maxrss_kb",
               "minflt", "syscalls_per_op", "live_reached", "failure"]

    def fmt(value):
        if value is None:
            return ""
        if isinstance(value, float):
            return "%.3g" % value if value < 1000 else "{:,.0f}".format(value)
        if isinstance(value, int):
            return "{:,}".format(value)
        return str(value)

    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for entry in table:
        print("| " + " | ".join(fmt(entry.get(c)) for c in columns) + " |")
    print("\nSyscall floor per malloc/free pair (ns): %s" % " ".join("%s=%s" % kv for kv in floor.items()))
    hp = [e for e in table if e["tool"] == "heappatrol" and e["workload"].startswith("a:") and e.get("ops_per_sec")]
    if hp and floor.get("guard_pair_ns_1thread"):
        pair_ns = 1e9 / hp[0]["ops_per_sec"]
        print("HeapPatrol ns per pair on (a): %.0f = %.2fx the single-thread guard-marker floor" % (
            pair_ns, pair_ns / float(floor["guard_pair_ns_1thread"])))
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for entry in table:
            writer.writerow(entry)
    print("CSV written to %s" % args.csv)


if __name__ == "__main__":
    main()
