"""From one simulated step to a whole training run: steps, wall time with a goodput allowance, GPU-hours,
cost from a dated price table (pricing/gpu_prices.yaml) and energy from each device's board power.

Energy is taken at board power for the whole wall time (an upper bound: a GPU draws less while
it waits), times the facility's PUE; its cost uses the table's electricity price."""

from __future__ import annotations

import math
from dataclasses import dataclass

from graphgen.config.pricing import GpuPrice, PriceTable, price_for

HOUR = 3600.0


@dataclass(frozen=True)
class TrainingRun:
    tokens: float
    steps: int
    goodput: float
    wall_s: float
    gpu_hours: float
    price: GpuPrice | None
    cost_usd: float | None
    energy_kwh: float | None
    energy_cost_usd: float | None
    pue: float | None

    @property
    def wall_days(self) -> float:
        return self.wall_s / 86400.0

    def as_dict(self) -> dict:
        p = self.price
        return {"tokens": self.tokens, "steps": self.steps, "goodput": self.goodput, "wall_days": self.wall_days,
                "gpu_hours": self.gpu_hours, "cost_usd": self.cost_usd,
                "price": None if p is None else {"usd_per_gpu_hour": p.usd_per_gpu_hour, "provider": p.provider,
                                                 "offer": p.offer, "date": p.date, "source": p.source},
                "energy_kwh": self.energy_kwh, "energy_cost_usd": self.energy_cost_usd, "pue": self.pue,
                "energy_basis": "board power for the whole wall time, times PUE (an upper bound)"}


def training_run(step_time_s: float, tokens_per_step: int, gpus: int, tokens: float, goodput: float,
                 device_name: str, board_power_w: float | None, prices: PriceTable | None,
                 offer: str = "on-demand") -> TrainingRun:
    """The run that trains `tokens` tokens: whole steps, the wall time stretched by 1 / goodput
    (failures, restarts, checkpoints), and what it costs at the table's lowest price of `offer`."""
    steps = max(1, math.ceil(tokens / tokens_per_step))
    wall = steps * step_time_s / goodput
    gpu_hours = gpus * wall / HOUR
    price = price_for(prices, device_name, offer) if prices else None
    cost = gpu_hours * price.usd_per_gpu_hour if price else None
    energy = energy_cost = pue = None
    if board_power_w and prices:
        pue = prices.energy.pue.value
        energy = gpu_hours * board_power_w / 1000.0 * pue
        energy_cost = energy * prices.energy.electricity.usd_per_kwh
    return TrainingRun(float(tokens), steps, goodput, wall, gpu_hours, price, cost, energy, energy_cost, pue)
