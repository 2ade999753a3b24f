"""Token-length distributions for synthetic request sources: fixed, uniform, and normal or lognormal
clipped to [1, max]. Each samples from a `random.Random` the caller seeds, never the global RNG, so a
seed fixes every length."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from graphgen.errors import RankflowError
from graphgen.registry import Registry


class LengthDist(Protocol):
    def sample(self, rng: random.Random) -> int:
        """One length in tokens, >= 1."""
        ...

    def upper_tokens(self) -> int:
        """The largest length it can return (for checks before simulating)."""
        ...


def _positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RankflowError(f"must be a whole number >= 1, got {value!r}", field=name,
                            fix=f"set {name} to a positive token count")


def _finite(value: float, name: str, low: float = 0.0) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise RankflowError(f"must be a finite number >= {low:g}, got {value!r}", field=name,
                            fix=f"set {name} to a finite number >= {low:g}")


@dataclass(frozen=True)
class FixedLength:
    tokens: int

    def __post_init__(self) -> None:
        _positive(self.tokens, "tokens")

    def sample(self, rng: random.Random) -> int:
        return self.tokens

    def upper_tokens(self) -> int:
        return self.tokens


@dataclass(frozen=True)
class UniformLength:
    """Whole numbers lo..hi, both included, equally likely."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        _positive(self.lo, "lo")
        _positive(self.hi, "hi")
        if self.hi < self.lo:
            raise RankflowError(f"hi ({self.hi}) is below lo ({self.lo})", field="hi", fix="set hi >= lo")

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.lo, self.hi)

    def upper_tokens(self) -> int:
        return self.hi


def _clip(x: float, hi: int) -> int:
    # Compare before rounding: a wide normal (std 1e308) draws +-inf, which round() cannot convert.
    if x >= hi:
        return hi
    return round(x) if x >= 1 else 1


@dataclass(frozen=True)
class NormalLength:
    """Normal(mean, std) rounded and clipped to [1, max_tokens] (clipping, not resampling, keeps one draw
    per sample so a seed maps to the same sequence whatever the bounds)."""

    mean: float
    std: float
    max_tokens: int

    def __post_init__(self) -> None:
        _finite(self.mean, "mean")
        _finite(self.std, "std")
        _positive(self.max_tokens, "max_tokens")

    def sample(self, rng: random.Random) -> int:
        return _clip(rng.gauss(self.mean, self.std), self.max_tokens)

    def upper_tokens(self) -> int:
        return self.max_tokens


@dataclass(frozen=True)
class LognormalLength:
    """exp(Normal(ln median, sigma)) rounded and clipped to [1, max_tokens]; request lengths in public
    traces (ShareGPT, Azure LLM inference) are long-tailed, which a lognormal fits better than a normal."""

    median: float
    sigma: float
    max_tokens: int

    def __post_init__(self) -> None:
        _finite(self.median, "median", low=1.0)
        _finite(self.sigma, "sigma")
        _positive(self.max_tokens, "max_tokens")

    def sample(self, rng: random.Random) -> int:
        # random.lognormvariate's draw, capped in log space: a wide sigma would overflow exp()
        x = rng.normalvariate(math.log(self.median), self.sigma)
        return _clip(math.exp(min(x, math.log(self.max_tokens) + 1.0)), self.max_tokens)

    def upper_tokens(self) -> int:
        return self.max_tokens


# Config name -> constructor from keyword fields, so a config file can say {"kind": "uniform", ...}.
LENGTHS: Registry[type] = Registry("length distribution")
LENGTHS.add("fixed", FixedLength)
LENGTHS.add("uniform", UniformLength)
LENGTHS.add("normal", NormalLength)
LENGTHS.add("lognormal", LognormalLength)


def length_from_dict(spec: dict, field: str = "length") -> LengthDist:
    """{"kind": "uniform", "lo": 16, "hi": 512} -> UniformLength(16, 512)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in LENGTHS:
        raise RankflowError(f"unknown length distribution {kind!r}", field=f"{field}.kind",
                            fix=f"use one of: {', '.join(LENGTHS)}")
    try:
        return LENGTHS[kind](**spec)
    except TypeError as e:
        raise RankflowError(f"bad fields for {kind}: {e}", field=field,
                            fix="see graphgen.serving.lengths for each kind's fields") from None
