"""Placement transitions on the tensor-parallel axis, and Megatron's f/g operators derived from them.

Megatron-LM (Shoeybi et al. 2019, Korthikanti et al. 2022): the column-parallel linear's input
goes through `f` (forward identity, backward all-reduce); the row-parallel linear's output through
`g` (forward all-reduce, backward identity). Under sequence parallelism f becomes all-gather /
reduce-scatter and g becomes reduce-scatter / all-gather.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphgen.parallel.layout import (
    PARTIAL,
    REPLICATE,
    Collective,
    Kind,
    LayoutError,
    Placement,
    grad_produced,
    grad_required,
    shard,
    transition,
)

DIMS = ("seq", "hidden", "heads", "vocab")
ALL = [REPLICATE, PARTIAL, *(shard(d) for d in DIMS)]


# ------------------------------------------------------------------------------ transition table


@pytest.mark.parametrize(
    "src, dst, expected",
    [
        (PARTIAL, REPLICATE, Collective.ALL_REDUCE),
        (PARTIAL, shard("seq"), Collective.REDUCE_SCATTER),
        (PARTIAL, shard("hidden"), Collective.REDUCE_SCATTER),
        (shard("seq"), REPLICATE, Collective.ALL_GATHER),
        (shard("vocab"), REPLICATE, Collective.ALL_GATHER),
        (shard("seq"), shard("hidden"), Collective.ALL_TO_ALL),
        (shard("heads"), shard("seq"), Collective.ALL_TO_ALL),
        (REPLICATE, shard("seq"), None),
        (REPLICATE, shard("heads"), None),
        (REPLICATE, REPLICATE, None),
        (PARTIAL, PARTIAL, None),
        (shard("seq"), shard("seq"), None),
    ],
    ids=str,
)
def test_transition_table(src, dst, expected):
    assert transition(src, dst) is expected


@pytest.mark.parametrize("src", [REPLICATE, shard("seq"), shard("hidden")], ids=str)
def test_nothing_becomes_partial(src):
    with pytest.raises(LayoutError):
        transition(src, PARTIAL)


def test_layout_error_is_value_error():
    with pytest.raises(ValueError, match="R"):
        transition(REPLICATE, PARTIAL)


def test_full_table_exhaustive():
    """Every ordered pair of placements against the table written independently here."""
    def expected(src: Placement, dst: Placement):
        if src == dst:
            return None
        table = {
            (Kind.PARTIAL, Kind.REPLICATE): Collective.ALL_REDUCE,
            (Kind.PARTIAL, Kind.SHARD): Collective.REDUCE_SCATTER,
            (Kind.SHARD, Kind.REPLICATE): Collective.ALL_GATHER,
            (Kind.SHARD, Kind.SHARD): Collective.ALL_TO_ALL,
            (Kind.REPLICATE, Kind.SHARD): None,
        }
        if (src.kind, dst.kind) not in table:
            return LayoutError
        return table[(src.kind, dst.kind)]

    for src, dst in itertools.product(ALL, ALL):
        exp = expected(src, dst)
        if exp is LayoutError:
            with pytest.raises(LayoutError):
                transition(src, dst)
        else:
            assert transition(src, dst) is exp, (src, dst)


def test_placement_str():
    assert str(REPLICATE) == "R"
    assert str(PARTIAL) == "P"
    assert str(shard("seq")) == "S(seq)"
    assert shard("seq") == Placement(Kind.SHARD, "seq")
    assert shard("seq") != shard("hidden")


# ----------------------------------------------------------------------------- grad placements


def test_grad_required():
    # The grad of a partial sum is needed in full by every contributor.
    assert grad_required(PARTIAL) == REPLICATE
    assert grad_required(REPLICATE) == REPLICATE
    assert grad_required(shard("seq")) == shard("seq")
    assert grad_required(shard("heads")) == shard("heads")


def test_grad_produced():
    # Replicated input into sharded weights: this rank's grad is only its contribution.
    assert grad_produced(REPLICATE, shards_input=True) == PARTIAL
    assert grad_produced(REPLICATE, shards_input=False) == REPLICATE
    # A sharded input's grad is sharded the same way, whatever the weights.
    assert grad_produced(shard("heads"), shards_input=False) == shard("heads")
    assert grad_produced(shard("heads"), shards_input=True) == shard("heads")
    assert grad_produced(shard("seq"), shards_input=True) == shard("seq")


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(ALL), st.booleans())
def test_grad_placements_never_need_an_illegal_transition(out, shards_input):
    """Backward never asks the layout table for an impossible change: a produced grad can always
    be brought to any required grad placement that is not Partial."""
    produced = grad_produced(out, shards_input)
    for nxt in ALL:
        req = grad_required(nxt)
        assert req.kind is not Kind.PARTIAL
        if produced != req:
            transition(produced, req)  # must not raise


# ------------------------------------------------------------------- Megatron f / g, by derivation


def _walk(residual: Placement, op_in: Placement, op_out: Placement, shards_input: bool):
    """One op between two residual-stream ops (norm / residual add, placed like `residual`).

    Forward: residual -> op input, op output -> residual.
    Backward: the residual op needs its output grad as grad_required(residual) and hands on
    grad_produced(residual); the op needs grad_required(op_out) and produces
    grad_produced(op_in, shards_input), which the residual op upstream needs as
    grad_required(residual).
    """
    fwd_in = transition(residual, op_in)
    fwd_out = transition(op_out, residual)
    bwd_out = transition(grad_produced(residual, False), grad_required(op_out))
    bwd_in = transition(grad_produced(op_in, shards_input), grad_required(residual))
    return fwd_in, fwd_out, bwd_out, bwd_in


def test_column_parallel_f_operator_without_sp():
    # f: forward identity, backward all-reduce (Megatron's copy_to_tensor_model_parallel_region).
    fwd_in, _, _, bwd_in = _walk(REPLICATE, REPLICATE, shard("hidden"), shards_input=True)
    assert fwd_in is None
    assert bwd_in is Collective.ALL_REDUCE


def test_row_parallel_g_operator_without_sp():
    # g: forward all-reduce, backward identity (reduce_from_tensor_model_parallel_region).
    _, fwd_out, bwd_out, _ = _walk(REPLICATE, shard("hidden"), PARTIAL, shards_input=False)
    assert fwd_out is Collective.ALL_REDUCE
    assert bwd_out is None


def test_column_parallel_with_sequence_parallelism():
    # SP: residual is Shard(seq); f becomes all-gather forward, reduce-scatter backward.
    fwd_in, _, _, bwd_in = _walk(shard("seq"), REPLICATE, shard("hidden"), shards_input=True)
    assert fwd_in is Collective.ALL_GATHER
    assert bwd_in is Collective.REDUCE_SCATTER


def test_row_parallel_with_sequence_parallelism():
    # SP: g becomes reduce-scatter forward, all-gather backward.
    _, fwd_out, bwd_out, _ = _walk(shard("seq"), shard("hidden"), PARTIAL, shards_input=False)
    assert fwd_out is Collective.REDUCE_SCATTER
    assert bwd_out is Collective.ALL_GATHER


def test_megatron_mlp_block_collectives():
    """Column-parallel fc1 then row-parallel fc2 between residual-stream ops: exactly one
    all-reduce forward and one backward without SP; with SP one all-gather + one reduce-scatter
    each way (Korthikanti et al. 2022, Fig. 5)."""
    def block(resid: Placement) -> tuple[list, list]:
        ops = [  # (in, out, shards_input)
            (resid, resid, False),                     # layer norm
            (REPLICATE, shard("hidden"), True),        # fc1 (column parallel)
            (shard("hidden"), shard("hidden"), False),  # activation
            (shard("hidden"), PARTIAL, False),         # fc2 (row parallel)
            (resid, resid, False),                     # residual add
        ]
        fwd, cur = [], resid
        for i, o, _ in ops:
            fwd.append(transition(cur, i))
            cur = o
        fwd.append(transition(cur, resid))
        bwd, cur = [], grad_required(resid)
        for i, o, s in reversed(ops):
            bwd.append(transition(cur, grad_required(o)))
            cur = grad_produced(i, s)
        bwd.append(transition(cur, grad_required(resid)))
        return [c for c in fwd if c], [c for c in bwd if c]

    fwd, bwd = block(REPLICATE)
    assert fwd == [Collective.ALL_REDUCE]
    assert bwd == [Collective.ALL_REDUCE]
    fwd, bwd = block(shard("seq"))
    assert fwd == [Collective.ALL_GATHER, Collective.REDUCE_SCATTER]
    assert bwd == [Collective.ALL_GATHER, Collective.REDUCE_SCATTER]
