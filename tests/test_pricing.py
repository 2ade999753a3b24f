"""The price file and board powers: every number carries a source and a date; price_for picks the cheapest."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from graphgen.config import parse
from graphgen.config.pricing import OFFERS, PriceTable, price_for
from graphgen.errors import RankflowError
from rankflow.api import load_hardware
from rankflow.files import read_mapping

ROOT = Path(__file__).resolve().parent.parent
PRICE_FILE = ROOT / "pricing" / "gpu_prices.yaml"
HARDWARE = sorted((ROOT / "hardware_configs").glob("*.yaml"))


def shipped_data() -> dict:
    return read_mapping(PRICE_FILE, "price file")


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return parse(PriceTable, shipped_data(), str(PRICE_FILE))


def test_every_price_is_positive_dated_and_sourced(table):
    for gpu, entry in table.gpus.items():
        for p in entry.prices:
            assert math.isfinite(p.usd_per_gpu_hour) and p.usd_per_gpu_hour > 0, (gpu, p.provider)
            assert p.source.strip() and p.date.strip(), (gpu, p.provider)
            assert p.offer in OFFERS
    e = table.energy
    assert 0 < e.electricity.usd_per_kwh < 1 and e.electricity.source.strip() and e.electricity.year
    assert 1 <= e.pue.value < 3 and e.pue.source.strip() and e.pue.year


def test_priced_devices_are_hardware_config_devices(table):
    names = {load_hardware(p).device.name for p in HARDWARE}
    for gpu, entry in table.gpus.items():
        assert set(entry.devices) <= names, f"{gpu}: {set(entry.devices) - names} is no hardware config's device"


@pytest.mark.parametrize("device", ["A100-SXM4-80GB", "H100-SXM5-80GB", "H200-SXM-141GB", "B200"])
def test_the_main_gpus_have_an_on_demand_price(table, device):
    assert price_for(table, device) is not None


def test_h100_has_a_reserved_price(table):
    reserved = [o for o in OFFERS if "reserved" in o]
    assert any(price_for(table, "H100-SXM5-80GB", o) for o in reserved)


@pytest.mark.parametrize("path", HARDWARE, ids=lambda p: p.stem)
def test_every_hardware_config_has_a_sourced_board_power(path):
    device = load_hardware(path).device
    assert device.board_power_w is not None and device.board_power_w > 0
    assert device.sources.get("board_power_w", "").strip(), "cite where the board power comes from"


def test_price_for_picks_the_lowest_on_demand_price(table):
    for entry in table.gpus.values():
        on_demand = [p.usd_per_gpu_hour for p in entry.prices if p.offer == "on-demand"]
        chosen = price_for(table, entry.devices[0])
        if on_demand:
            assert chosen is not None and chosen.offer == "on-demand"
            assert chosen.usd_per_gpu_hour == min(on_demand)
        else:
            assert chosen is None


def test_price_for_unknown_device_or_missing_offer_is_none(table):
    assert price_for(table, "no-such-gpu") is None
    assert price_for(table, "H100-SXM5-96GB-HBM2e-500W") is None  # a shipped device with no price
    assert price_for(table, "MI300X", "3-year reserved") is None
    with pytest.raises(ValueError, match="unknown offer"):
        price_for(table, "H100-SXM5-80GB", "on demand")


def _table(prices: list[dict]) -> PriceTable:
    data = shipped_data()
    data["gpus"] = {"X": {"devices": ["X-GPU"], "prices": prices}}
    return parse(PriceTable, data, "test")


def test_price_for_breaks_ties_by_provider_name():
    row = {"offer": "on-demand", "usd_per_gpu_hour": 2.0, "date": "2026-01", "source": "s"}
    table = _table([{**row, "provider": "Zed"}, {**row, "provider": "Acme"},
                    {**row, "provider": "Bee", "usd_per_gpu_hour": 3.0}])
    assert price_for(table, "X-GPU").provider == "Acme"


def _refused(mutate) -> None:
    data = copy.deepcopy(shipped_data())
    mutate(data)
    with pytest.raises(RankflowError):
        parse(PriceTable, data, "test")


def _first_price(data: dict) -> dict:
    return next(iter(data["gpus"].values()))["prices"][0]


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda d: d.update(currency="EUR"), id="unknown-top-level-field"),
    pytest.param(lambda d: _first_price(d).update(region="us"), id="unknown-price-field"),
    pytest.param(lambda d: d["energy"]["pue"].update(notes="x"), id="unknown-energy-field"),
    pytest.param(lambda d: _first_price(d).update(usd_per_gpu_hour=float("nan")), id="nan-price"),
    pytest.param(lambda d: _first_price(d).update(usd_per_gpu_hour=float("inf")), id="inf-price"),
    pytest.param(lambda d: _first_price(d).update(usd_per_gpu_hour=0.0), id="zero-price"),
    pytest.param(lambda d: _first_price(d).update(usd_per_gpu_hour=-1.0), id="negative-price"),
    pytest.param(lambda d: _first_price(d).update(usd_per_gpu_hour="2.5"), id="price-as-string"),
    pytest.param(lambda d: d["energy"]["electricity"].update(usd_per_kwh=float("inf")), id="inf-electricity"),
    pytest.param(lambda d: d["energy"]["pue"].update(value=0.9), id="pue-below-one"),
    pytest.param(lambda d: _first_price(d).update(source=""), id="empty-source"),
    pytest.param(lambda d: _first_price(d).pop("date"), id="missing-date"),
    pytest.param(lambda d: _first_price(d).update(date="2026-13"), id="no-such-month"),
    pytest.param(lambda d: _first_price(d).update(date="2026-02-30"), id="no-such-day"),
    pytest.param(lambda d: _first_price(d).update(date="Sept 2026"), id="date-format"),
    pytest.param(lambda d: _first_price(d).update(offer="monthly"), id="unknown-offer"),
    pytest.param(lambda d: next(iter(d["gpus"].values()))["prices"].append(
        dict(next(iter(d["gpus"].values()))["prices"][0])), id="duplicate-provider-offer"),
    pytest.param(lambda d: d["gpus"].update(Dup={"devices": [next(iter(d["gpus"].values()))["devices"][0]],
                                                 "prices": [_first_price(d)]}), id="device-priced-twice"),
    pytest.param(lambda d: d.pop("energy"), id="missing-energy"),
])
def test_bad_price_data_is_refused(mutate):
    _refused(mutate)
