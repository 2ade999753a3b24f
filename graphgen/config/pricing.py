"""The price file (pricing/gpu_prices.yaml): dated GPU rental list prices and the energy price, each sourced.

Parsing from dicts only, like the other config models; rankflow.files reads the file. Prices are list
prices read on a date, not quotes: what a GPU-hour cost on that provider's public page that day.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal, get_args

from pydantic import Field, StrictInt, StringConstraints, field_validator, model_validator

from graphgen.config.base import Rate, Str, Strict

# What was bought. "reserved" is a committed term the provider's rate card does not state; the
# 1- and 3-year offers name their term.
Offer = Literal["on-demand", "spot", "reserved", "1-year reserved", "3-year reserved"]
OFFERS: tuple[str, ...] = get_args(Offer)

Text = Annotated[Str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
_DATE = re.compile(r"\d{4}-\d{2}(-\d{2})?")
Year = Annotated[StrictInt, Field(ge=1990, le=2100)]


def _check_date(value: str) -> str:
    """YYYY-MM or YYYY-MM-DD, and a real calendar month or day."""
    if not _DATE.fullmatch(value):
        raise ValueError("date must be YYYY-MM or YYYY-MM-DD")
    datetime.date.fromisoformat(value if len(value) == 10 else value + "-01")
    return value


class GpuPrice(Strict):
    """One provider's list price for one offer of a GPU, per GPU-hour, on a date."""

    provider: Text = Field(description="Who sells it, with the product line where one provider has several.")
    offer: Offer = Field(description="on-demand, spot, reserved (term not stated), 1-year reserved or 3-year reserved.")
    usd_per_gpu_hour: Rate = Field(description="US dollars per GPU-hour (an 8-GPU instance's price over 8).")
    date: Str = Field(description="When the price was read or took effect, YYYY-MM or YYYY-MM-DD.")
    source: Text = Field(description="The provider's page, and the public record that read it on that date.")
    note: Str = Field("", max_length=2000, description="What the price covers or leaves out.")

    _date = field_validator("date")(lambda cls, v: _check_date(v))


class GpuPrices(Strict):
    """The prices of one GPU type and the hardware-config devices they apply to."""

    devices: list[Text] = Field(min_length=1, description="device.name of each hardware config priced by this entry.")
    prices: list[GpuPrice] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_price_per_offer(self) -> GpuPrices:
        seen: set[tuple[str, str]] = set()
        for p in self.prices:
            key = (p.provider, p.offer)
            if key in seen:
                raise ValueError(f"two {p.offer} prices from {p.provider}: keep one (the latest)")
            seen.add(key)
        return self


class ElectricityPrice(Strict):
    usd_per_kwh: Annotated[float, Field(gt=0, le=10, strict=True)] = Field(description="US dollars per kWh.")
    year: Year = Field(description="The year the average covers.")
    source: Text


class Pue(Strict):
    value: Annotated[float, Field(ge=1, le=5, strict=True)] = Field(
        description="Power usage effectiveness: facility power over IT power.")
    year: Year = Field(description="The year the figure covers.")
    source: Text


class Energy(Strict):
    """What a kWh at the GPU costs: electricity at the meter times the facility overhead (PUE)."""

    electricity: ElectricityPrice
    pue: Pue


class PriceTable(Strict):
    gpus: dict[Text, GpuPrices] = Field(min_length=1, description="GPU type -> its devices and prices.")
    energy: Energy

    @model_validator(mode="after")
    def _device_priced_once(self) -> PriceTable:
        owner: dict[str, str] = {}
        for gpu, entry in self.gpus.items():
            for device in entry.devices:
                if device in owner:
                    raise ValueError(f"device {device!r} is listed under both {owner[device]!r} and {gpu!r}")
                owner[device] = gpu
        return self


def price_for(table: PriceTable, device_name: str, offer: str = "on-demand") -> GpuPrice | None:
    """The lowest price of `offer` for the device named `device_name` (a hardware config's device.name),
    ties broken by provider name; None when the table has no such price."""
    if offer not in OFFERS:
        raise ValueError(f"unknown offer {offer!r}; one of {', '.join(OFFERS)}")
    for entry in table.gpus.values():
        if device_name in entry.devices:
            candidates = [p for p in entry.prices if p.offer == offer]
            return min(candidates, key=lambda p: (p.usd_per_gpu_hour, p.provider), default=None)
    return None
