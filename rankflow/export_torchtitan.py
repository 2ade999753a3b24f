"""A torchtitan job TOML for a scenario.

Names are those of torchtitan/config/job_config.py at torchtitan v0.2.2 (commit
73a0e6979dd10b6b1904098eb3c8f62c18ab87ce), the last release configured by TOML (#2386, after it,
moved jobs to Python config registries). torchtitan takes a model by name and flavor, never by
dimensions, so the scenario's model must match a flavor the release ships.
"""

from __future__ import annotations

import math

from graphgen.scenario import Scenario
from rankflow.export_base import to_toml, unsupported

VERSION = "torchtitan v0.2.2"

# workload.optimizer_impl -> optimizer.implementation (torchtitan/config/job_config.py at v0.2.2)
_OPTIMIZER_IMPL = {"fused": "fused", "foreach": "foreach", "per_tensor": "for-loop"}

# (name, flavor) keyed by (layers, hidden, heads, kv_heads, routed experts or 0), from
# torchtitan/models/llama3/__init__.py and torchtitan/models/qwen3/__init__.py at v0.2.2
FLAVORS: dict[tuple[int, int, int, int, int], tuple[str, str]] = {
    (32, 4096, 32, 8, 0): ("llama3", "8B"), (80, 8192, 64, 8, 0): ("llama3", "70B"),
    (126, 16384, 128, 8, 0): ("llama3", "405B"),
    (28, 1024, 16, 8, 0): ("qwen3", "0.6B"), (28, 2048, 16, 8, 0): ("qwen3", "1.7B"),
    (36, 2560, 32, 8, 0): ("qwen3", "4B"), (36, 4096, 32, 8, 0): ("qwen3", "8B"),
    (40, 5120, 40, 8, 0): ("qwen3", "14B"), (64, 5120, 64, 8, 0): ("qwen3", "32B"),
    (48, 2048, 32, 4, 128): ("qwen3", "30B-A3B"), (94, 4096, 64, 4, 128): ("qwen3", "235B-A22B"),
}
# rankflow schedule -> torch.distributed.pipelining schedule name (get_schedule_class)
SCHEDULES = {"gpipe": "GPipe", "1f1b": "1F1B", "interleaved": "Interleaved1F1B", "zb-v": "ZBVZeroBubble",
             "dualpipev": "DualPipeV"}
# FSDP2 reshards parameters after forward (ZeRO-3) or keeps them to the backward (close to ZeRO-2)
_RESHARD = {2: "never", 3: "always"}


def _refuse(sc: Scenario, field: str, msg: str, fix: str):
    return unsupported(sc, "torchtitan", field, msg, fix)


def _flavor(sc: Scenario) -> tuple[str, str]:
    m = sc.model
    key = (m.layers, m.hidden, m.heads, m.n_kv_heads, m.moe.experts if m.moe else 0)
    if key not in FLAVORS:
        known = ", ".join(f"{n} {f}" for n, f in FLAVORS.values())
        raise _refuse(sc, "model", f"the job TOML names a model flavor, not its dimensions, and {m.name} "
                      f"(layers {m.layers}, hidden {m.hidden}, heads {m.heads}) matches none shipped",
                      f"register a flavor in torchtitan/models/<name>/__init__.py, or use one of: {known}")
    return FLAVORS[key]


def _check(sc: Scenario) -> None:
    p, w = sc.plan, sc.workload
    if p.zero_stage == 1:
        raise _refuse(sc, "parallelism.zero_stage", "FSDP2 shards gradients with the optimizer state: there is "
                      "no ZeRO-1", "use zero_stage 0 (DDP), 2 (reshard_after_forward never) or 3 (FSDP)")
    if p.zero_stage == 0 and 1 < p.dp < p.world:
        # parallelize_llama raises "DDP has not supported > 1D parallelism"
        raise _refuse(sc, "parallelism.zero_stage", "unsharded data parallelism (DDP) runs only as the sole "
                      "parallelism", "use zero_stage 2 or 3 (FSDP2) with tp, pp or cp")
    if p.tp > 1 and not p.sp:
        raise _refuse(sc, "parallelism.sp", "torchtitan's tensor parallelism always shards norms over the "
                      "sequence", "set parallelism.sp=true")
    if p.ep > 1 and p.etp not in (1, p.tp):
        raise _refuse(sc, "parallelism.etp", "expert_tensor_parallel_degree is either 1 or the tp degree",
                      f"set parallelism.etp=1 or {p.tp}")
    if p.cp > 1 and p.cp_algorithm == "a2a":
        raise _refuse(sc, "parallelism.cp_algorithm", "torchtitan's context parallelism rotates or gathers keys and "
                      "values (ring attention); it has no all-to-all (Ulysses) variant", "use ring or allgather")
    if p.moe_dispatcher == "allgather" and p.ep > 1:
        raise _refuse(sc, "parallelism.moe_dispatcher", "expert parallelism dispatches by all-to-all (standard "
                      "or deepep)", "set parallelism.moe_dispatcher=alltoall or deepep")
    if p.recompute == "selective":
        raise _refuse(sc, "parallelism.recompute", "op-level selective AC saves attention and recomputes the rest; "
                      "there is no module-level recompute of core_attn", "use recompute=full (recompute_every=k "
                      "gives selective_ac_option k) or none")
    if w.precision == "fp16":
        raise _refuse(sc, "workload.precision", "mixed_precision_param is bfloat16 or float32", "use bf16")
    if w.optimizer != "adamw":
        raise _refuse(sc, "workload.optimizer", f"the TOML's optimizer names are Adam and AdamW, not "
                      f"{w.optimizer}", "set workload.optimizer=adamw")
    if w.finetune.method != "full":
        raise _refuse(sc, "workload.finetune.method", "torchtitan pretrains every weight", "set method=full")
    if not w.flash_attention:
        raise _refuse(sc, "workload.flash_attention", "the flavor's attention is fused SDPA or flex; no TOML key "
                      "turns it off", "set workload.flash_attention=true")


def _pipeline(sc: Scenario) -> dict[str, object]:
    p = sc.plan
    if p.pp == 1:
        return {}
    if p.schedule not in SCHEDULES:
        raise _refuse(sc, "parallelism.schedule", f"torch.distributed.pipelining has no {p.schedule} schedule",
                      f"use one of: {', '.join(SCHEDULES)}")
    if p.stage_split == "balanced" or p.first_stage_layers is not None or p.last_stage_layers is not None:
        field = "parallelism.stage_split" if p.stage_split == "balanced" else "parallelism.first_stage_layers"
        raise _refuse(sc, field, "layers are split evenly, less one per stage for embedding and head",
                      "use stage_split=even without first/last_stage_layers")
    first, last = int(p.split_accounts_embedding), int(p.split_accounts_loss)
    chunks = p.pp * p.virtual_stages
    per_stage = math.ceil((sc.model.layers + first + last) / chunks)
    if math.ceil((sc.model.layers + first + last) / per_stage) != chunks:
        raise _refuse(sc, "parallelism.virtual_stages", f"pipeline_parallel_layers_per_stage cannot make {chunks} "
                      f"stages of {sc.model.layers} layers", "change virtual_stages or pp")
    return {"pipeline_parallel_degree": p.pp, "pipeline_parallel_schedule": SCHEDULES[p.schedule],
            "pipeline_parallel_layers_per_stage": per_stage,
            "pipeline_parallel_first_stage_less_layers": first, "pipeline_parallel_last_stage_less_layers": last,
            "pipeline_parallel_microbatch_size": sc.workload.micro_batch}


def _parallelism(sc: Scenario) -> dict[str, object]:
    p = sc.plan
    sharded = p.zero_stage >= 2
    out: dict[str, object] = {"data_parallel_replicate_degree": 1 if sharded else p.dp,
                              "data_parallel_shard_degree": p.dp if sharded else 1}
    if sharded:
        out["fsdp_reshard_after_forward"] = _RESHARD[p.zero_stage]
    out.update({"tensor_parallel_degree": p.tp, "context_parallel_degree": p.cp})
    if p.tp_overlap and p.tp > 1:
        out["enable_async_tensor_parallel"] = True  # effective only compiled: [compile] is on for it below
    if p.cp > 1:
        # PyTorch's alltoall rotation passes KV shards around the ring; allgather gathers them first
        out["context_parallel_rotate_method"] = "alltoall" if p.cp_algorithm == "ring" else "allgather"
    if sc.model.moe is not None:
        out.update({"expert_parallel_degree": p.ep, "expert_tensor_parallel_degree": p.etp,
                    "expert_parallel_comm_backend": "deepep" if p.moe_dispatcher == "deepep" else "standard"})
    return out | _pipeline(sc)


def _activation_checkpoint(sc: Scenario) -> dict[str, object]:
    p = sc.plan
    if p.recompute == "none":
        return {"mode": "none"}
    if p.recompute_every == 1:
        return {"mode": "full"}
    return {"mode": "selective", "selective_ac_option": str(p.recompute_every)}  # layer-level: every k-th block


def torchtitan(sc: Scenario) -> tuple[str, str]:
    name, flavor = _flavor(sc)  # the model first: no plan change makes an unknown model exportable
    _check(sc)
    w, p = sc.workload, sc.plan
    fp8 = w.precision == "fp8"
    # under pipelining local_batch_size is split into microbatches; without it the trainer accumulates
    # gradients over global / (local x dp) steps
    local = w.micro_batch * sc.microbatches if p.pp > 1 else w.micro_batch
    sections: dict[str, dict[str, object]] = {
        "job": {"description": f"{sc.model.name} on {sc.world} GPUs (rankflow export)"},
        "model": {"name": name, "flavor": flavor} | ({"converters": ["quantize.linear.float8"]} if fp8 else {}),
        "optimizer": {"name": "AdamW", "implementation": _OPTIMIZER_IMPL[w.optimizer_impl]},
        "training": {"local_batch_size": local, "global_batch_size": sc.global_batch, "seq_len": w.seq_len,
                     "mixed_precision_param": "float32" if w.precision == "fp32" else "bfloat16"},
        "parallelism": _parallelism(sc),
        "activation_checkpoint": _activation_checkpoint(sc),
        # torchtitan fuses norms, rotary and SwiGLU by compiling, and async TP needs the compiled model
        "compile": {"enable": w.fused_kernels or (p.tp_overlap and p.tp > 1)},
    }
    if fp8:
        fsdp = p.zero_stage >= 2
        sections["quantize.linear.float8"] = {"enable_fsdp_float8_all_gather": fsdp,
                                              "precompute_float8_dynamic_scale_for_fsdp": fsdp,
                                              "filter_fqns": ["output"]}
    header = (f"# {VERSION} job config for {sc.model.name} on {sc.world} GPUs, written by `rankflow export`.\n"
              "# Add [training] dataset, [model] hf_assets_path and [checkpoint] for your run.\n")
    return "torchtitan.toml", to_toml(sections, header)
