"""The engine's extension points: mixed layer kinds, registries, a schedule added as one class,
coarse and op-level lowering in agreement, and the package layering."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphgen.config import FineTune, Workload
from graphgen.ir import ComputeNode, Phase
from graphgen.model.finetune import FINETUNE_METHODS
from graphgen.model.flops import model_flops_per_token
from graphgen.model.optimizers import OPTIMIZERS
from graphgen.schedule import SCHEDULES, Schedule, Step
from tests.helpers import ROOT, TINY_LLAMA, layer_graph, program, run, scenario

SLIDING = dict(TINY_LLAMA, sliding_window=128, attention_pattern=["sliding", "full"])


def test_mixed_layers_get_their_own_blocks():
    sc = scenario(SLIDING, {"seq_len": 512, "global_batch": 2})
    lg = layer_graph(sc)
    kinds = [lg.unit_block(layer).kind for layer in range(4)]
    assert kinds == ["sliding/dense", "full/dense"] * 2
    flash = {k: lg.unit_block(i).op("flash_attention") for i, k in enumerate(kinds[:2])}
    # A window of 128 keys out of 512: causal full attention computes 1/2 of the score matrix, the
    # window (128 x 512 - 128 x 127 / 2) / 512^2.
    ratio = flash["sliding/dense"].flops / flash["full/dense"].flops
    assert ratio == pytest.approx((128 * 512 - 128 * 127 / 2) / 512**2 / 0.5)
    assert flash["sliding/dense"].seq_len == 128
    # Model FLOPs count the window in sliding layers; time falls between all-full and all-sliding.
    full, mixed = scenario(TINY_LLAMA, {"seq_len": 512, "global_batch": 2}), sc
    every = scenario(dict(TINY_LLAMA, sliding_window=128), {"seq_len": 512, "global_batch": 2})
    f = [model_flops_per_token(s.model, 512) for s in (full, mixed, every)]
    assert f[0] > f[1] > f[2]
    t = [run(s).step_time_s for s in (full, mixed, every)]
    assert t[0] > t[1] > t[2]


def test_a_window_wider_than_the_sequence_changes_nothing():
    wide = scenario(dict(TINY_LLAMA, sliding_window=4096), {"seq_len": 512, "global_batch": 2})
    plain = scenario(TINY_LLAMA, {"seq_len": 512, "global_batch": 2})
    assert run(wide).step_time_s == run(plain).step_time_s


def test_registries_name_what_the_config_accepts():
    assert set(typing.get_args(Workload.model_fields["optimizer"].annotation)) == set(OPTIMIZERS)
    assert set(typing.get_args(FineTune.model_fields["method"].annotation)) == set(FINETUNE_METHODS)
    assert OPTIMIZERS["adamw"].step_bytes(low_precision_copy=True) == 34  # the AdamW traffic the step uses


def test_optimizer_table_drives_both_memory_and_time():
    sgd = scenario(TINY_LLAMA, {"global_batch": 2, "optimizer": "sgd"})
    adam = scenario(TINY_LLAMA, {"global_batch": 2})
    r_sgd, r_adam = run(sgd), run(adam)
    (m_sgd,), (m_adam,) = r_sgd.memory, r_adam.memory
    assert m_adam.optimizer_states == pytest.approx(2 * m_sgd.optimizer_states)
    opt = [next(n for n in program(s).roles[0].nodes if n.name == "optimizer_step") for s in (sgd, adam)]
    assert opt[1].bytes / opt[0].bytes == pytest.approx(34 / 26)


class _SplitGPipe(Schedule):
    """GPipe with the backward split into input- and weight-gradient steps (all W steps last)."""

    name = "test-split-gpipe"
    phases = frozenset({"F", "Bi", "W"})

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        mbs = range(microbatches)
        return ([Step("F", m, 0) for m in mbs] + [Step("Bi", m, 0) for m in reversed(mbs)]
                + [Step("W", m, 0) for m in mbs])


@pytest.fixture
def split_schedule():
    SCHEDULES.add(_SplitGPipe.name, _SplitGPipe())
    yield _SplitGPipe.name
    SCHEDULES.remove(_SplitGPipe.name)


def test_a_schedule_is_one_class_and_w_steps_carry_the_weight_gradients(split_schedule):
    plain = scenario(TINY_LLAMA, {"global_batch": 4}, pp=2, schedule="gpipe", dp=2)
    split = scenario(TINY_LLAMA, {"global_batch": 4}, pp=2, schedule=split_schedule, dp=2)
    p_plain, p_split = program(plain), program(split)

    def flops(prog, phases):
        return sum(n.flops for r in prog.roles for n in r.nodes if isinstance(n, ComputeNode) and n.phase in phases)
    both = (Phase.BACKWARD, Phase.WGRAD)
    assert flops(p_split, both) == pytest.approx(flops(p_plain, both))
    assert flops(p_split, (Phase.WGRAD,)) > 0
    # Gradients are reduced after the weight-gradient steps, the only place they become final.
    for role in p_split.roles:
        grads = [n for n in role.nodes if n.phase is Phase.GRAD_SYNC]
        assert grads and all(role.nodes[d].phase is Phase.WGRAD for n in grads for d in n.deps)
    # Deferring W lets each stage hand its input gradient upstream sooner: the bubble shrinks.
    assert run(split).step_time_s < run(plain).step_time_s


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp=st.sampled_from([1, 2, 4]), pp=st.sampled_from([1, 2, 4]), dp=st.sampled_from([1, 2]),
       mb_per_pp=st.integers(1, 3), schedule=st.sampled_from(["gpipe", "1f1b", "interleaved"]),
       zero=st.sampled_from([0, 1, 2, 3]), recompute=st.sampled_from(["none", "selective", "full"]),
       overlap=st.booleans())
def test_coarse_lowering_agrees_with_op_level(tp, pp, dp, mb_per_pp, schedule, zero, recompute, overlap):
    v = 2 if schedule == "interleaved" and pp > 1 else 1
    schedule = "1f1b" if schedule == "interleaved" and pp == 1 else schedule
    sc = scenario(dict(TINY_LLAMA, layers=8), {"global_batch": dp * pp * mb_per_pp}, tp=tp, pp=pp, dp=dp,
                  schedule=schedule, virtual_stages=v, zero_stage=zero, recompute=recompute, sp=tp > 1,
                  overlap_grad_reduce=overlap, overlap_param_gather=overlap)
    ops, coarse = run(sc, "ops"), run(sc, "coarse")
    # The coarse nodes replay their items as the op-level nodes run: the same step, to rounding.
    assert coarse.step_time_s == pytest.approx(ops.step_time_s, rel=1e-9)
    assert coarse.breakdown.total == pytest.approx(coarse.step_time_s, rel=1e-9)
    assert coarse.breakdown.compute == pytest.approx(ops.breakdown.compute, rel=1e-6)
    assert coarse.memory == ops.memory and coarse.model_flops_per_step == ops.model_flops_per_step


# ------------------------------------------------------------------------------------ layering

PACKAGES = ("graphgen", "backends", "reports", "rankflow", "benchmarks")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            mods[name] = path
    return mods


def test_graphgen_imports_nothing_above_it():
    for name, path in _modules().items():
        if name.startswith("graphgen"):
            above = {m for m in _imports(path) if m.split(".")[0] in ("backends", "reports", "rankflow", "benchmarks")}
            assert not above, f"{name} imports {above}"


def test_no_import_cycles_between_modules():
    mods = _modules()
    graph = {name: {m for m in _imports(path) if m in mods and m != name} for name, path in mods.items()}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(m):], m]))
            if m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_modules_and_functions_stay_small():
    for name, path in _modules().items():
        if name.startswith("benchmarks"):
            continue  # scripts: reported by the before-stop hook, not held to the library's sizes
        text = path.read_text()
        assert len(text.splitlines()) <= 400, f"{name} has {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{name}.{node.name} is over 60 lines"


def test_file_io_stays_in_the_cli_and_writers():
    allowed = {"rankflow.files", "rankflow.outputs", "rankflow.cli", "rankflow.reference", "backends.astra.runner",
               "backends.astra.backend", "backends.chakra.reader"}
    for name, path in _modules().items():
        if name in allowed or name.startswith("benchmarks"):
            continue
        text = path.read_text()
        for call in ("open(", ".read_text(", ".write_text(", ".read_bytes(", ".write_bytes("):
            assert call not in text, f"{name} does file I/O ({call})"


def test_packed_samples_attend_within_themselves():
    # 4 samples of 512 tokens packed into a 2,048-token sequence: attention is four 512 x 512 triangles,
    # a quarter of one 2,048 triangle, timed at the 512-token kernel rate; model FLOPs count it the same way.
    from graphgen.model.flops import model_flops_per_token

    whole = scenario(TINY_LLAMA, {"seq_len": 2048, "global_batch": 4})
    packed = scenario(TINY_LLAMA, {"seq_len": 2048, "global_batch": 4, "packed_sample_len": 512})
    flash = {k: layer_graph(sc).unit_block(0).op("flash_attention") for k, sc in (("whole", whole), ("packed", packed))}
    assert flash["packed"].flops == pytest.approx(flash["whole"].flops / 4)
    assert flash["packed"].seq_len == 512 and flash["whole"].seq_len == 2048
    assert packed.workload.attention_len == 512 and whole.workload.attention_len == 2048
    res = {k: run(sc, "coarse") for k, sc in (("whole", whole), ("packed", packed))}
    assert res["packed"].step_time_s < res["whole"].step_time_s
    assert res["packed"].model_flops_per_step == pytest.approx(
        model_flops_per_token(packed.model, 512) * packed.tokens_per_step)
    assert 0 < res["packed"].model_flops_per_step / res["packed"].step_time_s / res["packed"].peak_flops_per_gpu <= 1
