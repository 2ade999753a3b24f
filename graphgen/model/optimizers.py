"""Optimizers: the bytes each keeps per trainable parameter and moves in its step.

One table serves both memory (states held) and time (the step is memory-bound): a new optimizer is
one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.registry import Registry


@dataclass(frozen=True)
class Optimizer:
    name: str
    state_bytes: float      # optimizer state per trainable parameter, beyond the fp32 master copy
    factored: bool = False  # second moment kept as a row and a column vector per matrix (Adafactor)
    step_flops: float = 12.0  # FLOPs per parameter of the update

    def step_bytes(self, low_precision_copy: bool) -> float:
        """HBM traffic per parameter of one step: read the fp32 gradient (4), read and write the fp32
        master weight (8), read and write every state (2 x state), write the low-precision copy the
        forward uses (2) and read the gradient again for its norm (4). AdamW: 34."""
        state = 0.0 if self.factored else self.state_bytes
        return 4 + 8 + 2 * state + (2 if low_precision_copy else 0) + 4


@dataclass(frozen=True)
class OptimizerImpl:
    """How a framework runs the update: the HBM bytes per parameter it moves beyond the one fused kernel of
    Optimizer.step_bytes, each element-wise op being its own kernel that writes and rereads its intermediate.
    An optimizer it does not list moves the fused kernel's bytes. (A gradient clip that rescales every
    step is the framework's, not the optimizer's: workload.grad_clip_rescale.)"""

    name: str
    extra_bytes: tuple[tuple[str, float], ...]
    source: str

    def extra(self, optimizer: str) -> float:
        return dict(self.extra_bytes).get(optimizer, 0.0)


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
OPTIMIZERS.add("adamw", Optimizer("adamw", 8.0))        # m and v in fp32
OPTIMIZERS.add("adam8bit", Optimizer("adam8bit", 2.0))  # m and v in 8 bits (Dettmers et al. 2022), scales < 1 %
OPTIMIZERS.add("sgd", Optimizer("sgd", 4.0))            # momentum in fp32
OPTIMIZERS.add("adafactor", Optimizer("adafactor", 4.0, factored=True))  # fp32 row/column second moments

OPTIMIZER_IMPLS: Registry[OptimizerImpl] = Registry("optimizer implementation")
OPTIMIZER_IMPLS.add("fused", OptimizerImpl(
    "fused", (), "one kernel over the parameters: apex / Transformer Engine FusedAdam (Megatron-LM, NeMo, "
                 "DeepSpeed), torch.optim.AdamW(fused=True)"))
# torch/optim/adamw.py _multi_tensor_adamw: mul_ (decay) 8, lerp_ 12, mul_ 8, addcmul_ 12, sqrt 8, div_ 8, add_ 8,
# addcdiv_ 16 = 80 B where the fused kernel's update moves 28 (gradient 4, master 8, m and v 16): 52 more.
OPTIMIZER_IMPLS.add("foreach", OptimizerImpl(
    "foreach", (("adamw", 52.0),),
    "pytorch/pytorch torch/optim/adamw.py _multi_tensor_adamw (the default on CUDA when neither fused nor foreach "
    "is given): eight multi-tensor element-wise passes"))
# mosaicml/composer composer/optim/decoupled_weight_decay.py DecoupledAdamW.adamw: per parameter mul_ 8, mul_ 8,
# add_ 12, mul_ 8, addcmul_ 12, sqrt 8, / 8, add_ 8, addcdiv_ 16 = 88 B against the fused update's 28: 60 more.
OPTIMIZER_IMPLS.add("per_tensor", OptimizerImpl(
    "per_tensor", (("adamw", 60.0),),
    "mosaicml/composer composer/optim/decoupled_weight_decay.py @v0.16.4 DecoupledAdamW.adamw: a Python loop over "
    "the parameters, each element-wise op its own kernel (nine per tensor)"))
