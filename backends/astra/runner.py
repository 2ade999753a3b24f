"""Find the ASTRA-sim binary, run it on a trace set with a timeout, parse what it reports.

Everything a user can get wrong here (no binary, a crash, a hang, output that does not parse)
becomes a RankflowError with what to do next, never a traceback or a wrong number.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from graphgen.errors import RankflowError

ENV = "ASTRA_SIM_BIN"
BINARIES = {"aware": "AstraSim_Analytical_Congestion_Aware", "unaware": "AstraSim_Analytical_Congestion_Unaware"}
HOW_TO_GET = ("build ASTRA-sim's analytical backend from https://github.com/astra-sim/astra-sim "
              "(build/astra_analytical/build.sh) and set ASTRA_SIM_BIN to its build/bin directory or binary")
_FINISHED = re.compile(r"sys\[(\d+)\] finished, (\d+) cycles, exposed communication (\d+) cycles")
_EVENT = re.compile(r"(issue|callback),sys->id=(\d+), tick=(\d+), node->id=(\d+)")


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
    path = Path(given)
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
    log: str
    notes: tuple[str, ...] = ()


def _raise_nofile(limit: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, limit), hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run(binary: Path, workdir: Path, workload_prefix: str, system: Path, network: Path, memory: Path,
        comm_groups: Path | None, world: int, timeout_s: float, want_node_times: bool = False) -> AstraRun:
    cmd = [str(binary), f"--workload-configuration={workload_prefix}", f"--system-configuration={system}",
           f"--network-configuration={network}", f"--remote-memory-configuration={memory}",
           f"--logging-folder={workdir / 'log'}"]
    if comm_groups is not None:
        cmd.append(f"--comm-group-configuration={comm_groups}")
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              preexec_fn=lambda: _raise_nofile(world + 256))
    except subprocess.TimeoutExpired:
        raise RankflowError(f"ASTRA-sim did not finish within {timeout_s:g} s", field="execution_backend.astra.timeout_s",
                            fix="raise the timeout or use execution_backend.astra.mode=scalable") from None
    except OSError as exc:
        raise RankflowError(f"cannot run {binary}: {exc.strerror}", field=ENV, fix=HOW_TO_GET) from None
    out = proc.stdout + proc.stderr
    finish, exposed = {}, {}
    for m in _FINISHED.finditer(out):
        finish[int(m.group(1))] = int(m.group(2))
        exposed[int(m.group(1))] = int(m.group(3))
    notes: tuple[str, ...] = ()
    if proc.returncode != 0:
        last = next((ln for ln in reversed(out.strip().splitlines()) if ln.strip()), "no output").strip()[:200]
        if len(finish) == world and "Exiting" in out:
            # Some ASTRA-sim builds crash in teardown after every rank has reported; the numbers stand.
            notes = (f"ASTRA-sim exited with code {proc.returncode} during shutdown ({last}) after all "
                     f"{world} ranks had reported their finish times",)
        else:
            raise RankflowError(f"ASTRA-sim ({binary.name}) exited with code {proc.returncode}: {last}", field=ENV,
                                fix="point ASTRA_SIM_BIN at ASTRA-sim's bin directory holding both analytical "
                                    "builds (networks over several nodes need AstraSim_Analytical_Congestion_Unaware); "
                                    "to run it by hand keep the inputs with --chakra-out DIR")
    if len(finish) != world:
        raise RankflowError(f"ASTRA-sim reported {len(finish)} of {world} ranks finishing", field=ENV,
                            fix="the trace set may deadlock in ASTRA-sim; run with --chakra-out and inspect it")
    node_times: dict[tuple[int, int], tuple[int, int]] = {}
    if want_node_times:
        path = workdir / "log" / "log.log"
        log = path.read_text(errors="replace") if path.exists() else ""
        issue: dict[tuple[int, int], int] = {}
        for m in _EVENT.finditer(log):
            k = (int(m.group(2)), int(m.group(4)))
            if m.group(1) == "issue":
                issue[k] = int(m.group(3))
            elif k in issue:
                node_times[k] = (issue[k], int(m.group(3)))
    return AstraRun(finish, exposed, node_times, out, notes)
