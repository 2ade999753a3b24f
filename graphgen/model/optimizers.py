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


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
OPTIMIZERS.add("adamw", Optimizer("adamw", 8.0))        # m and v in fp32
OPTIMIZERS.add("adam8bit", Optimizer("adam8bit", 2.0))  # m and v in 8 bits (Dettmers et al. 2022), scales < 1 %
OPTIMIZERS.add("sgd", Optimizer("sgd", 4.0))            # momentum in fp32
OPTIMIZERS.add("adafactor", Optimizer("adafactor", 4.0, factored=True))  # fp32 row/column second moments
