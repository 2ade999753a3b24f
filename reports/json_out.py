"""Result -> the versioned JSON document (see README 'Output schema'). Pure; the CLI writes it."""

from __future__ import annotations

import json
from typing import Any

from backends.base import HFU_DEFINITION, INFERENCE_MFU_DEFINITION, MFU_DEFINITION, SCHEMA_VERSION, Result
from graphgen.units import GIB


def result_to_dict(r: Result) -> dict[str, Any]:
    b = r.breakdown
    return {
        "schema": "rankflow.result",
        "schema_version": SCHEMA_VERSION,
        "backend": r.backend,
        "model": r.model,
        "hardware": r.hardware,
        "device": r.device,
        "gpus": r.gpus,
        "plan": dict(r.plan),
        "step_time_s": r.step_time_s,
        "tokens_per_step": r.tokens_per_step,
        "global_batch_sequences": r.global_batch,
        "microbatches": r.microbatches,
        "throughput": {"tokens_per_s": r.tokens_per_s, "tokens_per_s_per_gpu": r.tokens_per_s_per_gpu},
        "flops": {
            "model_flops_per_step": r.model_flops_per_step,
            "hardware_flops_per_step": r.hardware_flops_per_step,
            "model_tflops_per_gpu": r.model_tflops_per_gpu,
            "hardware_tflops_per_gpu": r.hardware_tflops_per_gpu,
            "peak_tflops_per_gpu": r.peak_flops_per_gpu / 1e12,
            "mfu": r.mfu,
            "hfu": r.hfu,
            "mfu_definition": INFERENCE_MFU_DEFINITION if r.inference else MFU_DEFINITION,
            "hfu_definition": HFU_DEFINITION,
        },
        "breakdown_s": {
            "compute": b.compute,
            "exposed_comm": dict(b.exposed_comm),
            "pipeline_bubble": b.pipeline_bubble,
            "stragglers": b.stragglers,
            "critical_role": r.critical_role,
        },
        "roles": [{"role": t.role, "finish_s": t.finish_s, "compute_s": t.compute_s, "nodes": t.nodes}
                  for t in r.roles],
        "memory": memory_dict(r.memory),
        "layer_table": [dict(row) for row in r.layer_table],
        "framework": dict(r.framework) if r.framework else None,
        "training_run": dict(r.training_run) if r.training_run else None,
        "inference": dict(r.inference) if r.inference else None,
        "notes": list(r.notes),
    }


def memory_dict(memory) -> dict[str, Any]:
    return {
            "fits": all(m.fits for m in memory),
            "roles": [{
                "role": m.role, "weights_gib": m.weights / GIB, "master_weights_gib": m.master_weights / GIB,
                "gradients_gib": m.gradients / GIB, "optimizer_states_gib": m.optimizer_states / GIB,
                "activations_gib": m.activations / GIB, "transient_gib": m.transient / GIB,
                "comm_buffers_gib": m.comm_buffers / GIB, "allocated_gib": m.allocated / GIB,
                "allocator_slack_gib": m.fragmentation / GIB, "kv_cache_gib": m.kv_cache / GIB,
                "kv_blocks": m.kv_blocks,
                "reserved_gib": m.reserved / GIB, "total_gib": m.total / GIB, "capacity_gib": m.capacity / GIB,
                "headroom_gib": m.headroom / GIB, "fits": m.fits,
                "trainable_params": m.trainable_params} for m in memory],
    }


def memory_dumps(sc, memory) -> str:
    """The --memory-only document: schema 'rankflow.memory', same memory block as the full result."""
    p, w = sc.plan, sc.workload
    doc = {"schema": "rankflow.memory", "schema_version": SCHEMA_VERSION, "model": sc.model.name,
           "hardware": sc.hardware.name, "device": sc.hardware.device.name, "gpus": sc.world,
           "plan": {"tp": p.tp, "sp": p.sp, "pp": p.pp, "dp": p.dp, "schedule": p.schedule,
                    "virtual_stages": p.virtual_stages, "zero_stage": p.zero_stage, "recompute": p.recompute,
                    "micro_batch": w.micro_batch, "seq_len": w.seq_len, "precision": w.precision,
                    "finetune": w.finetune.method},
           "memory": memory_dict(memory)}
    return json.dumps(doc, indent=2) + "\n"


def dumps(r: Result) -> str:
    """Deterministic text: fixed key order, no timestamps, no environment."""
    return json.dumps(result_to_dict(r), indent=2) + "\n"
