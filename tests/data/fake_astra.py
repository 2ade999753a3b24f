#!/usr/bin/env python3
"""Stands in for an ASTRA-sim binary in tests of the runner's parsing and error handling.

It counts the trace files, prints ASTRA-sim's finish line for each rank (rank r finishes at
(r + 1) x 1000 cycles), and misbehaves on request through FAKE_ASTRA_MODE: crash, hang, garbage, crash_at_exit, nonutf8.
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
if mode == "hang":
    time.sleep(60)
if mode == "garbage":
    print("nothing useful")
    sys.exit(0)
if mode == "nonutf8":
    sys.stdout.buffer.write(b"\xff\xfe binary noise \x80\n")
    sys.stdout.flush()
crash_at_exit = mode == "crash_at_exit"
for r in range(world):
    print(f"[2026-01-01T00:00:00+0000] [I] <workload>: sys[{r}] finished, {(r + 1) * 1000} cycles, "
          f"exposed communication {(r + 1) * 100} cycles.")
if crash_at_exit:
    print("[system] [warning] Exiting")
    print("malloc_consolidate(): unaligned fastbin chunk detected", file=sys.stderr)
    sys.exit(-6 & 0xFF)
