#!/usr/bin/env python3
"""Stands in for an ASTRA-sim binary in tests of the runner's parsing and error handling.

It counts the trace files, prints ASTRA-sim's finish line for each rank (rank r finishes at
10**9 + (r + 1) x 1000 cycles, past any test model's compute), and misbehaves on request through FAKE_ASTRA_MODE:
crash, hang, hang_child (its child sleeps), garbage, crash_at_exit, nonutf8, abort (SIGABRT mid-run every time), abort_once (only the first time in
a working directory); reports that parse but are bogus: zero (0 cycles), exposed_over (exposed above finish),
offset (ranks 1..world), early (finishes before the rank's own compute could run),
huge (a finish of 10**400 cycles), huge_rank (a rank id of 5000 digits), bad_log (an event log with a 400-digit tick);
floods: flood (FAKE_ASTRA_FLOOD_MIB MiB of lines before the report), flood_line (as much without a newline).
"""

import glob
import os
import sys
import time

mode = os.environ.get("FAKE_ASTRA_MODE", "ok")
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
prefix = args["--workload-configuration"]
world = len(glob.glob(prefix + ".*.et"))
if mode == "crash":
    print("terminate called after throwing an instance of 'std::runtime_error'", file=sys.stderr)
    sys.exit(134)
if mode in ("abort", "abort_once"):  # glibc's heap check aborting the process mid-run (SIGABRT)
    marker = os.path.join(os.getcwd(), "aborted-once")
    if mode == "abort" or not os.path.exists(marker):
        open(marker, "w").close()
        print("malloc_consolidate(): unaligned fastbin chunk detected", file=sys.stderr, flush=True)
        os.abort()
if mode == "hang":
    time.sleep(60)
if mode == "hang_child":  # a wrapper whose child would outlive a kill of the wrapper alone
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    with open(os.environ["FAKE_ASTRA_PIDFILE"], "w") as fh:
        fh.write(str(child.pid))
    child.wait()
if mode == "garbage":
    print("nothing useful")
    sys.exit(0)
if mode == "nonutf8":
    sys.stdout.buffer.write(b"\xff\xfe binary noise \x80\n")
    sys.stdout.flush()
if mode in ("flood", "flood_line"):
    mib = int(os.environ.get("FAKE_ASTRA_FLOOD_MIB", "32"))
    block = ("x" * 1023 + ("\n" if mode == "flood" else "x")) * 1024
    for _ in range(mib):
        sys.stdout.write(block)
if mode == "bad_log":
    log = args["--logging-folder"]
    os.makedirs(log, exist_ok=True)
    with open(os.path.join(log, "log.log"), "w") as fh:
        fh.write("issue,sys->id=0, tick=1, node->id=0\ncallback,sys->id=0, tick=" + "9" * 400 + ", node->id=0\n")
crash_at_exit = mode == "crash_at_exit"
for r in range(world):
    rank = r + 1 if mode == "offset" else "1" * 5000 if mode == "huge_rank" and r == 0 else r
    cycles = (0 if mode == "zero" else 10**400 if mode == "huge" and r == 0 else (r + 1) * 1000 if mode == "early"
              else 10**9 + (r + 1) * 1000)
    exposed = cycles + 1 if mode == "exposed_over" else (r + 1) * 100 if cycles else 0
    print(f"[2026-01-01T00:00:00+0000] [I] <workload>: sys[{rank}] finished, {cycles} cycles, "
          f"exposed communication {exposed} cycles.")
if crash_at_exit:
    print("[system] [warning] Exiting")
    print("malloc_consolidate(): unaligned fastbin chunk detected", file=sys.stderr)
    sys.exit(-6 & 0xFF)
