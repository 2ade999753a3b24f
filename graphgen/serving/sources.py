"""Where requests come from: Poisson arrivals at a rate (open loop), a fixed number of users each sending
their next request when the previous completes (closed loop), or a trace given as text (CSV or JSON
lines). A source is an immutable config; `start()` gives the simulation a fresh stream, so one source can
be simulated many times (capacity search) with identical requests.

Randomness: each stream draws arrivals, input lengths and output lengths from three `random.Random`
instances seeded from (seed, purpose), so changing the rate keeps the lengths and scales the arrivals
exactly (common random numbers: a capacity search compares like with like)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from typing import Protocol

from graphgen.errors import RankflowError
from graphgen.serving.lengths import LengthDist
from graphgen.serving.model import Request

MAX_REQUESTS = 1_000_000  # beyond this a pure-Python simulation takes minutes; refuse rather than hang
TRACE_FIELDS = ("arrival_s", "input_len", "output_len")
# Latest arrival a simulation takes, seconds (about 115 days): at larger times a double cannot hold a
# millisecond latency added to them.
MAX_ARRIVAL_S = 1e7


class RequestStream(Protocol):
    total: int  # requests the stream issues in all

    def initial(self) -> list[Request]:
        """Requests known before the simulation starts, in arrival order."""
        ...

    def after_finish(self, finish_s: float) -> Request | None:
        """Told that a request finished at `finish_s`: the next request its user sends, if any (closed
        loop); open-loop streams return None."""
        ...


class RequestSource(Protocol):
    def start(self) -> RequestStream: ...


def check_count(n: int, field: str = "requests") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RankflowError(f"must be a whole number >= 1, got {n!r}", field=field, fix=f"set {field} >= 1")
    if n > MAX_REQUESTS:
        raise RankflowError(f"{n:,} requests is more than the {MAX_REQUESTS:,} the simulation accepts",
                            field=field, fix=f"simulate at most {MAX_REQUESTS:,} requests (the metrics "
                            "settle long before that)")


def _rng(seed: int, purpose: str) -> random.Random:
    # A str seed is hashed with SHA-512 by random.Random (not Python's salted hash): stable across runs.
    return random.Random(f"rankflow:{seed}:{purpose}")


def _lengths(dist: LengthDist, n: int, seed: int, purpose: str) -> list[int]:
    rng = _rng(seed, purpose)
    return [dist.sample(rng) for _ in range(n)]


@dataclass
class _OpenStream:
    requests: list[Request]

    @property
    def total(self) -> int:
        return len(self.requests)

    def initial(self) -> list[Request]:
        return list(self.requests)

    def after_finish(self, finish_s: float) -> Request | None:
        return None


@dataclass(frozen=True)
class PoissonSource:
    """`requests` requests with exponential inter-arrival times at `rate_per_s` requests/s."""

    rate_per_s: float
    requests: int
    input_len: LengthDist
    output_len: LengthDist
    seed: int = 0

    def __post_init__(self) -> None:
        check_count(self.requests)
        if not isinstance(self.rate_per_s, (int, float)) or not math.isfinite(self.rate_per_s) or self.rate_per_s <= 0:
            raise RankflowError(f"must be a finite rate > 0, got {self.rate_per_s!r}", field="rate_per_s",
                                fix="give the offered load in requests per second, e.g. 4.0")
        if self.requests / self.rate_per_s > MAX_ARRIVAL_S:
            raise RankflowError(f"{self.requests:,} requests at {self.rate_per_s:g}/s arrive over about "
                                f"{self.requests / self.rate_per_s:.3g} s, more than {MAX_ARRIVAL_S:g} s",
                                field="rate_per_s", fix="raise the rate or simulate fewer requests")

    def start(self) -> _OpenStream:
        rng = _rng(self.seed, "arrivals")
        ins = _lengths(self.input_len, self.requests, self.seed, "input")
        outs = _lengths(self.output_len, self.requests, self.seed, "output")
        t, reqs = 0.0, []
        for i in range(self.requests):
            t += rng.expovariate(1.0) / self.rate_per_s  # unit-rate draws scaled: same seed, any rate
            reqs.append(Request(i, t, ins[i], outs[i]))
        return _OpenStream(reqs)


@dataclass
class _ClosedStream:
    users: int
    think_s: float
    ins: list[int]
    outs: list[int]
    issued: int = 0

    @property
    def total(self) -> int:
        return len(self.ins)

    def _issue(self, at_s: float) -> Request:
        i = self.issued
        self.issued += 1
        return Request(i, at_s, self.ins[i], self.outs[i])

    def initial(self) -> list[Request]:
        return [self._issue(0.0) for _ in range(min(self.users, self.total))]

    def after_finish(self, finish_s: float) -> Request | None:
        return self._issue(finish_s + self.think_s) if self.issued < self.total else None


@dataclass(frozen=True)
class ClosedLoopSource:
    """`users` users send one request each at t = 0; each sends its next `think_s` after the previous
    one completes, until `requests` have been sent in all. Request i gets the i-th sampled lengths
    whichever user sends it, so the workload does not depend on finishing order."""

    users: int
    requests: int
    input_len: LengthDist
    output_len: LengthDist
    seed: int = 0
    think_s: float = 0.0

    def __post_init__(self) -> None:
        check_count(self.requests)
        check_count(self.users, "users")
        if not isinstance(self.think_s, (int, float)) or not math.isfinite(self.think_s) or self.think_s < 0:
            raise RankflowError(f"must be finite and >= 0, got {self.think_s!r}", field="think_s",
                                fix="set think_s to the seconds a user waits between requests (0 for none)")

    def start(self) -> _ClosedStream:
        return _ClosedStream(self.users, float(self.think_s),
                             _lengths(self.input_len, self.requests, self.seed, "input"),
                             _lengths(self.output_len, self.requests, self.seed, "output"))


@dataclass(frozen=True)
class TraceSource:
    """Requests replayed as given (ids are positions in arrival order)."""

    requests: tuple[Request, ...]

    def __post_init__(self) -> None:
        check_count(len(self.requests), "trace")
        for i, r in enumerate(self.requests):
            for name in ("input_len", "output_len"):
                value = getattr(r, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise RankflowError(f"request {i} has {name}={value!r}", field=f"requests[{i}].{name}",
                                        fix=f"give every request a whole-number {name} >= 1")
            if (not isinstance(r.arrival_s, (int, float)) or not math.isfinite(r.arrival_s)
                    or not 0 <= r.arrival_s <= MAX_ARRIVAL_S):
                raise RankflowError(f"request {i} arrives at {r.arrival_s!r}", field=f"requests[{i}].arrival_s",
                                    fix=f"give arrival times in seconds from 0 to {MAX_ARRIVAL_S:g}")

    def start(self) -> _OpenStream:
        return _OpenStream(list(self.requests))


def _field(row: dict, key: str, line: int, name: str) -> float | int:
    raw = row.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RankflowError(f"line {line}: {key} is missing", file=name, field=key,
                            fix=f"give every line {', '.join(TRACE_FIELDS)}")
    if key == "arrival_s":
        try:
            value = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or not 0 <= value <= MAX_ARRIVAL_S:
            raise RankflowError(f"line {line}: arrival_s must be from 0 to {MAX_ARRIVAL_S:g} s, got {raw!r}",
                                file=name, field=key, fix="give the arrival time in seconds from the start of the trace")
        return value
    if isinstance(raw, bool):
        value = 0
    elif isinstance(raw, float):
        value = int(raw) if raw.is_integer() else 0  # 128.0 from a JSON writer is fine, 12.5 is not
    else:
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = 0
    if value < 1:
        raise RankflowError(f"line {line}: {key} must be a whole number >= 1, got {raw!r}", file=name,
                            field=key, fix=f"give {key} as a positive token count")
    return value


def _csv_rows(text: str, name: str):
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames:  # "arrival_s, input_len" was said to lack the names it shows
        reader.fieldnames = [f.strip() for f in reader.fieldnames]
    missing = [k for k in TRACE_FIELDS if k not in (reader.fieldnames or [])]
    if missing:
        raise RankflowError(f"line 1: the CSV header lacks {', '.join(missing)}", file=name, field=missing[0],
                            fix=f"start the trace with the header line {','.join(TRACE_FIELDS)}")
    for row in reader:
        if None in row:
            raise RankflowError(f"line {reader.line_num}: more values than header columns", file=name,
                                field="line", fix="one value per header column on every line")
        if any(v for v in row.values()):
            yield reader.line_num, row


def _jsonl_rows(text: str, name: str):
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RankflowError(f"line {n}: not valid JSON ({e.msg})", file=name, field="line",
                                fix='write one object per line, e.g. {"arrival_s": 0.5, "input_len": 128, '
                                    '"output_len": 64}') from None
        if not isinstance(row, dict):
            raise RankflowError(f"line {n}: expected a JSON object", file=name, field="line",
                                fix=f"write one object per line with keys {', '.join(TRACE_FIELDS)}")
        yield n, row


def parse_trace(text: str, name: str = "trace") -> TraceSource:
    """A trace from its text: CSV with a header naming arrival_s,input_len,output_len, or JSON lines with
    those keys (detected by a first non-blank character of '{'). Rows are sorted by arrival (stably);
    a bad line raises RankflowError naming the line number and field."""
    # A byte-order mark (Excel's "CSV UTF-8") made the header "lack" its visible first name, and a JSON
    # array or a BOM'd JSON lines file was read as CSV: "the CSV header lacks arrival_s" for a .json file.
    text = text.removeprefix("\ufeff")
    stripped = text.lstrip()
    rows = _jsonl_rows(text, name) if stripped.startswith(("{", "[")) else _csv_rows(text, name)
    parsed = []
    for line, row in rows:
        parsed.append((_field(row, "arrival_s", line, name), _field(row, "input_len", line, name),
                       _field(row, "output_len", line, name), line))
        if len(parsed) > MAX_REQUESTS:
            check_count(len(parsed), "trace")
    if not parsed:
        raise RankflowError("the trace has no requests", file=name, field="trace",
                            fix=f"give at least one line with {', '.join(TRACE_FIELDS)}")
    parsed.sort(key=lambda r: r[0])
    return TraceSource(tuple(Request(i, a, int(n_in), int(n_out), (name, line))
                             for i, (a, n_in, n_out, line) in enumerate(parsed)))
