"""Find the ASTRA-sim binary, run it on a trace set with a timeout, parse what it reports.

Everything a user can get wrong here (no binary, a crash, a hang, output that does not parse)
becomes a RankflowError with what to do next, never a traceback or a wrong number. So does output
that parses but cannot be a report (a step of 0 cycles, exposed time above the finish time, rank
ids other than 0..world-1, numbers of more than 18 digits). Output is read as it streams, keeping
only what is parsed and a short tail, and bounded in size, so a flood of output cannot exhaust memory.
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from graphgen.errors import RankflowError

ENV = "ASTRA_SIM_BIN"
BINARIES = {"aware": "AstraSim_Analytical_Congestion_Aware", "unaware": "AstraSim_Analytical_Congestion_Unaware"}
HOW_TO_GET = ("build ASTRA-sim's analytical backend from https://github.com/astra-sim/astra-sim "
              "(build/astra_analytical/build.sh) and set ASTRA_SIM_BIN to its build/bin directory or binary")
_FINISHED = re.compile(r"sys\[(\d+)\] finished, (\d+) cycles, exposed communication (\d+) cycles")
_EVENT = re.compile(r"(issue|callback),sys->id=(\d+), tick=(\d+), node->id=(\d+)")
MAX_DIGITS = 18                 # 10^18 cycles (ns) is 31 years: a longer number is not a time
OUTPUT_BYTES = 16 * 2**20       # stdout + stderr read at most: this plus OUTPUT_PER_RANK per rank
OUTPUT_PER_RANK = 4096          # (ASTRA-sim prints about 1.4 kB per rank)
LOG_BYTES = 2**30               # of the per-node event log (scalable mode)
LINE_BYTES = 64 * 2**10         # a longer line keeps its end (where a report line would be)
FIX_OUTPUT = "ASTRA-sim's output is not a valid report; to run it by hand keep the inputs with --chakra-out DIR"
OUTPUT = "its output"             # the field of an error in what the binary printed (the file is the binary)
WHERE = "--astra-bin, execution_backend.astra.binary or ASTRA_SIM_BIN"  # the three ways to name the binary


TEMPLATES = Path(__file__).resolve().parent.parent.parent / "astra_configs"


def template(name: str) -> str:
    """An ASTRA-sim input template shipped in astra_configs/."""
    return (TEMPLATES / name).read_text()


def find_binary(network: str, explicit: str | None = None) -> tuple[Path, str]:
    """The binary to run and the build it is ('aware' or 'unaware'): --astra-bin, else
    $ASTRA_SIM_BIN, naming a directory of ASTRA-sim's analytical binaries (the wanted build is taken
    from it) or one binary. A named binary is used as it is, except an aware build on a network only
    the unaware build takes: then its unaware sibling is used, or the error says what to point at."""
    given = explicit or os.environ.get(ENV)
    field = "--astra-bin" if explicit else ENV
    if not given:
        raise RankflowError("ASTRA-sim is not configured", field=ENV, fix=HOW_TO_GET)
    path = Path(given).absolute()  # it runs in a scratch directory: a relative path would name nothing there
    if path.is_dir():
        for candidate in (path / BINARIES[network], path / "bin" / BINARIES[network]):
            if candidate.is_file():
                return candidate, network
        raise RankflowError(f"no {BINARIES[network]} in {given}", field=field,
                            fix=f"point it at ASTRA-sim's build/astra_analytical/build/bin ({HOW_TO_GET})")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RankflowError(f"'{given}' is not an executable file", field=field, fix=HOW_TO_GET)
    build = next((net for net, name in BINARIES.items() if path.name == name), network)
    if build == "aware" and network == "unaware":
        sibling = path.parent / BINARIES["unaware"]
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return sibling, "unaware"
        raise RankflowError(f"'{given}' is the congestion-aware build, which takes one-dimensional networks only",
                            field=field, fix=f"point {field} at ASTRA-sim's bin directory, or at its "
                                             f"{BINARIES['unaware']} binary, for networks over several nodes")
    return path, build


@dataclass(frozen=True)
class AstraRun:
    finish_ns: dict[int, int]
    exposed_comm_ns: dict[int, int]
    node_times: dict[tuple[int, int], tuple[int, int]]  # (rank, node id) -> (issue tick, callback tick)
    log: str  # the output's last lines (the whole output is not kept)
    notes: tuple[str, ...] = ()


def _raise_nofile(limit: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, limit), hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _number(text: str, what: str) -> int:
    if len(text) > MAX_DIGITS:
        raise RankflowError(f"ASTRA-sim reported {what} of {len(text)} digits", field=OUTPUT, fix=FIX_OUTPUT)
    return int(text)


class _Lines:
    """Splits a byte stream into lines, decoded leniently; a line longer than LINE_BYTES keeps its end
    (where a report line would be), so a stream without newlines holds LINE_BYTES at most."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, data: bytes) -> list[str]:
        *done, rest = (self.rest + data).split(b"\n")
        self.rest = rest[-LINE_BYTES:]
        return [line[-LINE_BYTES:].decode(errors="replace") for line in done]

    def flush(self) -> list[str]:
        rest, self.rest = self.rest, b""
        return [rest.decode(errors="replace")] if rest else []


@dataclass
class _Report:
    """What is kept of ASTRA-sim's output as it streams: the finish lines, and a short tail."""

    finish: dict[int, int] = field(default_factory=dict)
    exposed: dict[int, int] = field(default_factory=dict)
    exiting: bool = False
    tail: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})

    def add(self, line: str, stream: str) -> None:
        m = _FINISHED.search(line)
        if m:
            rank = _number(m.group(1), "a rank id")
            self.finish[rank] = _number(m.group(2), "a finish time")
            self.exposed[rank] = _number(m.group(3), "an exposed time")
        self.exiting = self.exiting or "Exiting" in line
        if line.strip():
            tail = self.tail[stream]
            tail.append(line.strip()[:200])
            del tail[:-20]

    def last(self) -> str:
        return (self.tail["stderr"] or self.tail["stdout"] or ["no output"])[-1]

    def text(self) -> str:
        return "\n".join(self.tail["stdout"] + self.tail["stderr"])


def _chunks(proc: subprocess.Popen, deadline: float, limit: int) -> Iterator[tuple[str, bytes]]:
    """(stream, bytes) as the process writes them, until both pipes close. Past the deadline it
    raises TimeoutError, past `limit` bytes a RankflowError (the caller kills the process)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    total = 0
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            events = sel.select(timeout=remaining) if remaining > 0 else []
            if not events:
                raise TimeoutError
            for key, _ in events:
                data = os.read(key.fileobj.fileno(), 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                total += len(data)
                if total > limit:
                    raise RankflowError(f"ASTRA-sim printed more than {limit // 2**20} MiB", field=OUTPUT,
                                        fix=FIX_OUTPUT)
                yield key.data, data
    finally:
        sel.close()


def _stream(proc: subprocess.Popen, timeout_s: float, world: int) -> _Report:
    """Read the running process's output into a _Report; kill it on a hang or a flood."""
    report = _Report()
    splitters = {"stdout": _Lines(), "stderr": _Lines()}
    deadline = time.monotonic() + timeout_s
    try:
        for stream, data in _chunks(proc, deadline, OUTPUT_BYTES + OUTPUT_PER_RANK * world):
            for line in splitters[stream].feed(data):
                report.add(line, stream)
        for stream, splitter in splitters.items():
            for line in splitter.flush():
                report.add(line, stream)
        proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    except (TimeoutError, subprocess.TimeoutExpired):
        raise RankflowError(f"ASTRA-sim did not finish within {timeout_s:g} s", field="execution_backend.astra.timeout_s",
                            fix="raise the timeout or use execution_backend.astra.mode=scalable") from None
    finally:
        _kill_group(proc)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return report


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process and whatever it started (a wrapper script's children keep running otherwise)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            proc.kill()


def _check_report(report: _Report, world: int) -> None:
    """Finish lines that cannot be a step's report are refused, never turned into numbers."""
    ranks = set(report.finish)
    if ranks != set(range(world)):
        odd = sorted(ranks - set(range(world)))[:5]
        raise RankflowError(f"ASTRA-sim reported rank ids {odd} outside 0..{world - 1}", field=OUTPUT, fix=FIX_OUTPUT)
    if max(report.finish.values()) == 0:
        raise RankflowError("ASTRA-sim reported a step of 0 cycles", field=OUTPUT, fix=FIX_OUTPUT)
    over = next((r for r in sorted(ranks) if report.exposed[r] > report.finish[r]), None)
    if over is not None:
        raise RankflowError(f"ASTRA-sim reported rank {over}'s exposed communication ({report.exposed[over]} cycles) "
                            f"above its finish time ({report.finish[over]} cycles)", field=OUTPUT, fix=FIX_OUTPUT)


def _node_times(path: Path, ranks: set[int] | None) -> tuple[dict[tuple[int, int], tuple[int, int]], bool]:
    """(rank, node) -> (issue tick, callback tick) from ASTRA-sim's event log, for the ranks asked
    for (all if None), streamed and read up to LOG_BYTES; and whether the log was cut there."""
    times: dict[tuple[int, int], tuple[int, int]] = {}
    issue: dict[tuple[int, int], int] = {}
    if not path.exists():
        return times, False
    lines, read = _Lines(), 0
    with path.open("rb") as fh:
        while read < LOG_BYTES and (data := fh.read(min(2**20, LOG_BYTES - read))):
            read += len(data)
            for line in lines.feed(data):
                m = _EVENT.search(line)
                rank = _number(m.group(2), "a rank id") if m else -1
                if not m or (ranks is not None and rank not in ranks):
                    continue
                k, tick = (rank, _number(m.group(4), "a node id")), _number(m.group(3), "a tick")
                if m.group(1) == "issue":
                    issue[k] = tick
                elif k in issue and tick >= issue[k]:  # a callback before its issue is not a time
                    times[k] = (issue[k], tick)
        cut = bool(fh.read(1))
    return times, cut


CRASHES = (-6, -11)  # killed by SIGABRT or SIGSEGV


def _attempt(cmd: list[str], workdir: Path, binary: Path, timeout_s: float, world: int) -> tuple[int, _Report]:
    try:
        # Its own process group, so that a kill reaches anything it started too.
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=lambda: _raise_nofile(world + 256),
                                start_new_session=True)
    except OSError as exc:
        raise RankflowError(f"cannot run it: {exc.strerror}", file=str(binary), fix=HOW_TO_GET) from None
    report = _stream(proc, timeout_s, world)
    return proc.returncode, report


def run(binary: Path, workdir: Path, workload_prefix: str, system: Path, network: Path, memory: Path,
        comm_groups: Path | None, world: int, timeout_s: float, want_node_times: bool = False,
        node_ranks: set[int] | None = None) -> AstraRun:
    """Run the binary on the inputs and read its report; an error in what it printed names the binary
    (whichever of the three ways named it)."""
    try:
        return _run(binary, workdir, workload_prefix, system, network, memory, comm_groups, world, timeout_s,
                    want_node_times, node_ranks)
    except RankflowError as exc:
        if exc.file is not None or exc.field != OUTPUT:
            raise
        raise RankflowError(exc.message, file=str(binary), field=OUTPUT, fix=exc.fix) from None


def _run(binary: Path, workdir: Path, workload_prefix: str, system: Path, network: Path, memory: Path,
         comm_groups: Path | None, world: int, timeout_s: float, want_node_times: bool,
         node_ranks: set[int] | None) -> AstraRun:
    cmd = [str(binary), f"--workload-configuration={workload_prefix}", f"--system-configuration={system}",
           f"--network-configuration={network}", f"--remote-memory-configuration={memory}",
           f"--logging-folder={workdir / 'log'}"]
    if comm_groups is not None:
        cmd.append(f"--comm-group-configuration={comm_groups}")
    deadline = time.monotonic() + timeout_s
    returncode, report = _attempt(cmd, workdir, binary, timeout_s, world)
    notes: tuple[str, ...] = ()
    if returncode in CRASHES and len(report.finish) < world and deadline - time.monotonic() > 1.0:
        # The prebuilt analytical builds now and then abort on a corrupted heap mid-run (glibc's
        # "malloc_consolidate(): unaligned fastbin chunk"), an address-layout accident of the binary:
        # the same inputs run through on a second try, within what is left of the time limit.
        # No note: the numbers are the inputs', and the same inputs give the same document.
        returncode, report = _attempt(cmd, workdir, binary, deadline - time.monotonic(), world)
    if returncode != 0:
        last = report.last()
        if len(report.finish) == world and report.exiting:
            # Some ASTRA-sim builds crash in teardown after every rank has reported; the numbers stand.
            notes += (f"ASTRA-sim exited with code {returncode} during shutdown ({last}) after all "
                     f"{world} ranks had reported their finish times",)
        else:
            raise RankflowError(f"ASTRA-sim exited with code {returncode}: {last}", file=str(binary),
                                fix=f"point {WHERE} at ASTRA-sim's bin directory holding both analytical "
                                    "builds (networks over several nodes need AstraSim_Analytical_Congestion_Unaware); "
                                    "to run it by hand keep the inputs with --chakra-out DIR")
    if len(report.finish) != world:
        raise RankflowError(f"ASTRA-sim reported {len(report.finish)} of {world} ranks finishing", file=str(binary),
                            fix="the trace set may deadlock in ASTRA-sim; run with --chakra-out and inspect it")
    _check_report(report, world)
    node_times: dict[tuple[int, int], tuple[int, int]] = {}
    if want_node_times:
        node_times, cut = _node_times(workdir / "log" / "log.log", node_ranks)
        if cut:
            notes += (f"ASTRA-sim's event log was read up to {LOG_BYTES // 2**20} MiB; ops timed only after it "
                      "kept their analytical cost",)
    return AstraRun(report.finish, report.exposed, node_times, report.text(), notes)
