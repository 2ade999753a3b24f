"""Pipeline schedules: per-stage order of forward (F) and backward (B) steps.

The interleaved reference below is written from Megatron-LM's
`forward_backward_pipelining_with_interleaving` (megatron/core/pipeline_parallel/schedules.py:
`get_pp_rank_microbatches`, `get_schedule_table`, `get_model_chunk_id`), with the default
`microbatch_group_size_per_vp_stage = pp`; the microbatch of a backward step is the oldest
forward of that chunk still waiting (Megatron pops `input_tensors[chunk]` in FIFO order).
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphgen.schedule import Step, stage_order

# --------------------------------------------------------------------------- references


def megatron_1f1b(pp: int, rank: int, M: int) -> list[tuple[str, int, int]]:
    """forward_backward_pipelining_without_interleaving."""
    warmup = min(pp - rank - 1, M)
    remaining = M - warmup
    out = [("F", i, 0) for i in range(warmup)]
    for i in range(remaining):
        out.append(("F", warmup + i, 0))
        out.append(("B", i, 0))
    out += [("B", remaining + i, 0) for i in range(warmup)]
    return out


def megatron_interleaved(pp: int, rank: int, M: int, v: int) -> list[tuple[str, int, int]]:
    group = pp  # config.microbatch_group_size_per_vp_stage defaults to pp
    total = M * v
    # get_schedule_table: for each group of `group` microbatches, all chunks in turn
    table: list[tuple[int, int]] = []
    for lo in range(0, M, group):
        hi = M if lo + group >= M else lo + group
        table += [(mb, c) for c in range(v) for mb in range(lo, hi)]
    assert len(table) == total

    def chunk_id(k: int, forward: bool) -> int:
        c = table[k % total][1]
        return c if forward else v - 1 - c

    warmup = (pp - rank - 1) * 2 + (v - 1) * group
    warmup = min(warmup, total)
    remaining = total - warmup

    waiting: list[deque] = [deque() for _ in range(v)]
    out: list[tuple[str, int, int]] = []

    def fwd(k: int) -> None:
        mb, c = table[k]
        assert c == chunk_id(k, True)
        waiting[c].append(mb)
        out.append(("F", mb, c))

    def bwd(k: int) -> None:
        c = chunk_id(k, False)
        out.append(("B", waiting[c].popleft(), c))

    for k in range(warmup):
        fwd(k)
    for k in range(remaining):
        fwd(k + warmup)
        bwd(k)
    for k in range(remaining, total):
        bwd(k)
    return out


def as_tuples(order: list[Step]) -> list[tuple[str, int, int]]:
    return [(s.phase, s.microbatch, s.chunk) for s in order]


# ------------------------------------------------------------------- literal expected orders


def test_interleaved_pp2_v2_m4_literal():
    # Worked by hand from Megatron's code: warm-up (pp-r-1)*2 + (v-1)*pp = 4 on rank 0, 2 on rank 1.
    assert as_tuples(stage_order("interleaved", 2, 0, 4, 2)) == [
        ("F", 0, 0), ("F", 1, 0), ("F", 0, 1), ("F", 1, 1),
        ("F", 2, 0), ("B", 0, 1), ("F", 3, 0), ("B", 1, 1),
        ("F", 2, 1), ("B", 0, 0), ("F", 3, 1), ("B", 1, 0),
        ("B", 2, 1), ("B", 3, 1), ("B", 2, 0), ("B", 3, 0),
    ]
    assert as_tuples(stage_order("interleaved", 2, 1, 4, 2)) == [
        ("F", 0, 0), ("F", 1, 0),
        ("F", 0, 1), ("B", 0, 1), ("F", 1, 1), ("B", 1, 1),
        ("F", 2, 0), ("B", 0, 0), ("F", 3, 0), ("B", 1, 0),
        ("F", 2, 1), ("B", 2, 1), ("F", 3, 1), ("B", 3, 1),
        ("B", 2, 0), ("B", 3, 0),
    ]


@pytest.mark.parametrize("pp, v, M", [(2, 2, 4), (4, 2, 8), (4, 3, 8), (2, 3, 6), (4, 2, 16), (8, 2, 16)])
def test_interleaved_matches_megatron(pp, v, M):
    for rank in range(pp):
        assert as_tuples(stage_order("interleaved", pp, rank, M, v)) == megatron_interleaved(pp, rank, M, v), rank


def test_interleaved_pp4_v2_m8_warmup_lengths():
    # Forwards before the first backward: min((pp-r-1)*2 + (v-1)*pp, M*v) = 10, 8, 6, 4.
    for rank, warm in enumerate([10, 8, 6, 4]):
        order = stage_order("interleaved", 4, rank, 8, 2)
        first_b = next(i for i, s in enumerate(order) if s.phase == "B")
        assert first_b == warm + 1  # warm-up forwards, then the first steady-state forward


def test_1f1b_literal():
    assert as_tuples(stage_order("1f1b", 4, 0, 6)) == [
        ("F", 0, 0), ("F", 1, 0), ("F", 2, 0),
        ("F", 3, 0), ("B", 0, 0), ("F", 4, 0), ("B", 1, 0), ("F", 5, 0), ("B", 2, 0),
        ("B", 3, 0), ("B", 4, 0), ("B", 5, 0),
    ]
    assert as_tuples(stage_order("1f1b", 4, 3, 3)) == [
        ("F", 0, 0), ("B", 0, 0), ("F", 1, 0), ("B", 1, 0), ("F", 2, 0), ("B", 2, 0)]
    # fewer microbatches than warm-up slots: all forwards, then all backwards
    assert as_tuples(stage_order("1f1b", 8, 0, 3)) == [
        ("F", 0, 0), ("F", 1, 0), ("F", 2, 0), ("B", 0, 0), ("B", 1, 0), ("B", 2, 0)]


def test_gpipe_literal():
    assert as_tuples(stage_order("gpipe", 4, 2, 3)) == [
        ("F", 0, 0), ("F", 1, 0), ("F", 2, 0), ("B", 2, 0), ("B", 1, 0), ("B", 0, 0)]


def test_unknown_schedule_raises():
    with pytest.raises(KeyError, match="zero_bubble"):
        stage_order("zero_bubble", 2, 0, 4)


# ------------------------------------------------------------------------------ properties


def check_complete(order: list[Step], M: int, v: int) -> None:
    """Every (microbatch, chunk) gets exactly one F and one B, and F comes first."""
    keys = {(m, c) for m in range(M) for c in range(v)}
    f_at = {}
    b_at = {}
    for i, s in enumerate(order):
        assert s.phase in ("F", "B")
        where = f_at if s.phase == "F" else b_at
        assert (s.microbatch, s.chunk) not in where, f"duplicate {s}"
        where[(s.microbatch, s.chunk)] = i
    assert set(f_at) == keys
    assert set(b_at) == keys
    assert len(order) == 2 * M * v
    for k in keys:
        assert f_at[k] < b_at[k], k


def max_in_flight(order: list[Step]) -> int:
    live = peak = 0
    for s in order:
        live += 1 if s.phase == "F" else -1
        peak = max(peak, live)
    return peak


def runs_to_completion(orders: list[list[Step]], v: int) -> bool:
    """Execute every stage's order with only the data dependencies of a pipeline: F of global
    chunk g = c*pp + s needs F of g-1, B of g needs B of g+1 (and its own F). A valid schedule
    never deadlocks."""
    pp = len(orders)
    G = pp * v
    pos = [0] * pp
    done: set[tuple[str, int, int]] = set()
    progressed = True
    while progressed:
        progressed = False
        for s in range(pp):
            while pos[s] < len(orders[s]):
                step = orders[s][pos[s]]
                g = step.chunk * pp + s
                if step.phase == "F":
                    ready = g == 0 or ("F", step.microbatch, g - 1) in done
                else:
                    ready = ("F", step.microbatch, g) in done and (
                        g == G - 1 or ("B", step.microbatch, g + 1) in done)
                if not ready:
                    break
                done.add((step.phase, step.microbatch, g))
                pos[s] += 1
                progressed = True
    return all(pos[s] == len(orders[s]) for s in range(pp))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 16), st.data())
def test_gpipe_properties(pp, M, data):
    stage = data.draw(st.integers(0, pp - 1))
    order = stage_order("gpipe", pp, stage, M)
    check_complete(order, M, 1)
    assert all(s.phase == "F" for s in order[:M])
    assert max_in_flight(order) == M


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 24), st.data())
def test_1f1b_properties(pp, M, data):
    stage = data.draw(st.integers(0, pp - 1))
    order = stage_order("1f1b", pp, stage, M)
    check_complete(order, M, 1)
    # at most pp - stage microbatches are held at once (and exactly that many when M allows)
    assert max_in_flight(order) == min(pp - stage, M)
    # forwards and backwards each run in microbatch order
    assert [s.microbatch for s in order if s.phase == "F"] == list(range(M))
    assert [s.microbatch for s in order if s.phase == "B"] == list(range(M))
    assert as_tuples(order) == megatron_1f1b(pp, stage, M)


@st.composite
def interleaved_cases(draw):
    pp = draw(st.integers(2, 8))
    v = draw(st.integers(2, 4))
    k = draw(st.integers(2, 4))  # M = k * pp with k >= 2 (make_scenario requires M % pp == 0)
    stage = draw(st.integers(0, pp - 1))
    return pp, stage, k * pp, v


@settings(max_examples=80, deadline=None)
@given(interleaved_cases())
def test_interleaved_properties(case):
    pp, stage, M, v = case
    order = stage_order("interleaved", pp, stage, M, v)
    check_complete(order, M, v)
    assert all(0 <= s.chunk < v for s in order)
    assert as_tuples(order) == megatron_interleaved(pp, stage, M, v)
    # forwards of each chunk run in microbatch order, and so do backwards
    for c in range(v):
        assert [s.microbatch for s in order if s.phase == "F" and s.chunk == c] == list(range(M))
        assert [s.microbatch for s in order if s.phase == "B" and s.chunk == c] == list(range(M))
    # in flight: warm-up forwards + 1, as in Megatron's steady state
    warm = min((pp - stage - 1) * 2 + (v - 1) * pp, M * v)
    assert max_in_flight(order) == min(warm + 1, M * v)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["gpipe", "1f1b", "interleaved"]), st.integers(1, 6), st.integers(1, 4), st.data())
def test_schedules_never_deadlock(schedule, pp, k, data):
    v = data.draw(st.integers(1, 3)) if schedule == "interleaved" else 1
    M = k * pp if schedule == "interleaved" else data.draw(st.integers(1, 12))
    orders = [stage_order(schedule, pp, s, M, v) for s in range(pp)]
    assert runs_to_completion(orders, v)


def test_deadlock_checker_detects_a_bad_order():
    """The checker above can fail: stage 1 running its backwards newest-first blocks the pipeline."""
    orders = [stage_order("1f1b", 2, s, 4) for s in range(2)]
    assert runs_to_completion(orders, 1)
    bs = iter([s for s in orders[1] if s.phase == "B"][::-1])
    orders[1] = [next(bs) if s.phase == "B" else s for s in orders[1]]
    assert not runs_to_completion(orders, 1)


@pytest.mark.parametrize("pp, v", [(2, 2), (4, 2), (4, 3)])
def test_interleaved_with_as_many_microbatches_as_stages_is_complete(pp, v):
    # M == pp: the edge of Megatron's warm-up rule; the order must still be a valid schedule.
    orders = [stage_order("interleaved", pp, s, pp, v) for s in range(pp)]
    for order in orders:
        check_complete(order, pp, v)
    assert runs_to_completion(orders, v)
    # stage 0 needs every forward before its first backward under either Megatron rule
    assert as_tuples(orders[0]) == megatron_interleaved(pp, 0, pp, v)
