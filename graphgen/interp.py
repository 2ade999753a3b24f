"""Piecewise-linear interpolation in log x, the one rule every measured curve (efficiency versus GEMM size,
sequence length, message size; attention's forward/backward ratio) is read with. No imports: config
validators and the cost model both use it."""

from __future__ import annotations

import math
from collections.abc import Sequence


def interpolate_points(pts: Sequence[tuple[float, float]], x: float) -> float:
    """y at x along [x, y] points sorted by x, linear in log x, held flat past either end."""
    if x <= pts[0][0]:
        return pts[0][1]
    if x >= pts[-1][0]:
        return pts[-1][1]
    lx = math.log(x)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x <= x1:
            f = (lx - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + f * (y1 - y0)
    return pts[-1][1]


ATTENTION_BWD_FLOPS = 2.5  # backward / forward FLOPs of fused attention, as FlashAttention's benchmarks count them


def direction_shares(ratio: float) -> tuple[float, float]:
    """(forward, backward) rate as a share of the fwd+bwd rate when forward runs `ratio` x backward's rate
    and backward does 2.5 x forward's FLOPs: the two together take the combined rate's time."""
    forward = (1.0 + ATTENTION_BWD_FLOPS * ratio) / (1.0 + ATTENTION_BWD_FLOPS)
    return forward, forward / ratio
