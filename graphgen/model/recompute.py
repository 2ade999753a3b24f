"""Selective recompute by module, as Megatron-Core's `--recompute-modules` names them
(megatron/core/transformer/transformer_config.py, `recompute_modules`): which ops of a block each
module covers, and what recomputing it frees.

Recomputing a module keeps only its input: the tensors made inside it, and so the activations saved
by its later ops and by the op that consumes its output, are dropped and made again by re-running its
forward inside the backward. `core_attn` (Megatron's default) is the attention core the attention
builders mark themselves (Korthikanti et al. 2022): softmax, dropout and score tensors, nothing under a
fused flash kernel, which recomputes internally.
"""

from __future__ import annotations

from dataclasses import replace

from graphgen.model.ops import Op

# Ops of each module, by op name (an MTP module's ops carry a "mtpN." prefix).
MODULES: dict[str, frozenset[str]] = {
    "core_attn": frozenset(),  # marked by the attention builders (Op.recompute_selective)
    "layernorm": frozenset({"ln_attn", "ln_mlp"}),
    "mla_up_proj": frozenset({"mla_up", "rope"}),
    "mlp": frozenset({"fc1", "swiglu", "fc2"}),
    "moe_act": frozenset({"expert_act"}),
    "shared_experts": frozenset({"shared_fc1", "shared_act", "shared_fc2"}),
    "moe": frozenset({"router", "router_aux", "permute", "expert_fc1", "expert_act", "expert_fc2", "unpermute",
                      "shared_fc1", "shared_act", "shared_fc2"}),
}
DEFAULT_MODULES = ("core_attn",)


def _base(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def mark_recompute(ops: tuple[Op, ...], modules: tuple[str, ...]) -> tuple[Op, ...]:
    """The ops with recompute_selective and selective_freed_bytes set for the chosen modules."""
    if tuple(modules) == DEFAULT_MODULES:
        return ops
    names = frozenset().union(*(MODULES[m] for m in modules))
    inside = [_base(op.name) in names for op in ops]
    out = []
    for i, op in enumerate(ops):
        core = "core_attn" in modules and op.recompute_selective
        if inside[i]:
            # Kept: a module's input, i.e. what its first op saves; freed: everything later ops save.
            first = i == 0 or not inside[i - 1]
            out.append(replace(op, recompute_selective=True, selective_freed_bytes=0.0 if first else op.saved_bytes))
        elif i > 0 and inside[i - 1]:
            # The consumer of a recomputed module's output saves a tensor the recompute makes again.
            out.append(replace(op, recompute_selective=core, selective_freed_bytes=op.saved_bytes))
        elif core:
            out.append(op)
        else:
            out.append(replace(op, recompute_selective=False, selective_freed_bytes=0.0))
    return tuple(out)
