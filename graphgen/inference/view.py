"""The training-shaped view of an inference iteration: a forward-only step whose microbatch is the
iteration's batch and whose sequence is the tokens it processes (the prompt for a prefill, one token for
a decode step). Training-only plan fields (ZeRO, recompute, the pipeline schedule) have no meaning
without a backward pass and are set to their no-op values."""

from __future__ import annotations

from graphgen.config import ModelConfig, ParallelPlan
from graphgen.config.model import InferenceSpec


def query_len(spec: InferenceSpec) -> int:
    return spec.input_len if spec.phase == "prefill" else 1


def key_len(spec: InferenceSpec) -> int:
    """Keys the last query of the iteration attends to (its own included)."""
    return spec.input_len if spec.phase == "prefill" else spec.context() + 1


def fitted_defaults(mc: ModelConfig) -> ModelConfig:
    """The default prompt (2,048 tokens) shortened to leave room for the generated tokens in a model whose
    context is shorter than that plus them (GPT-3's 2,048): a default that cannot run is no default. A
    prompt length the user gave is kept (and refused if too long)."""
    spec, limit = mc.workload.inference, mc.model.max_position
    if limit is None or "input_len" in spec.model_fields_set or key_len(spec) <= limit:
        return mc
    spec = spec.model_copy(update={"input_len": max(1, limit - spec.output_len)})
    return mc.model_copy(update={"workload": mc.workload.model_copy(update={"inference": spec})})


def inference_view(mc: ModelConfig, plan: ParallelPlan) -> tuple[ModelConfig, ParallelPlan]:
    w = mc.workload
    spec = w.inference
    work = w.model_copy(update={"seq_len": query_len(spec), "micro_batch": spec.batch,
                                "global_batch": spec.batch * plan.dp})
    # Tensor-parallel MoE serving splits the iteration's tokens over the TP ranks for routing (vLLM's
    # sequence-parallel MoE, Megatron's inference path): each rank routes its own tokens, as under SP
    sp = plan.sp or (mc.model.moe is not None and plan.tp > 1)
    plan = plan.model_copy(update={"schedule": "inference", "virtual_stages": 1, "zero_stage": 0, "recompute": "none",
                                   "microbatches": None, "sp": sp})
    return ModelConfig(model=mc.model, workload=work), plan
