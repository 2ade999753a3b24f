"""Strict field types shared by every config model.

Every config value is finite, of exactly its documented type (a boolean is not a number, a
string is not a number) and inside physical limits, so a typo can never silently become a
default or an Infinity in the output.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

# Upper bounds: far above any real system, low enough that arithmetic on them stays exact and
# bounded (a 10^23-layer model is a typo, not a plan).
MAX_COUNT = 1_000_000_000
MAX_DIM = 16_777_216


class Strict(BaseModel):
    """Unknown fields are errors; numbers must be finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _printable(text: str) -> str:
    # Names and labels end up in generated launch scripts, TOML, CSV and trace files: a newline or
    # other control character there could end a comment or a value and inject a line.
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text):
        raise ValueError("contains a control character (newline, carriage return, ...): use printable text")
    return text


Bool = StrictBool
Str = Annotated[StrictStr, Field(max_length=10_000), AfterValidator(_printable)]
PosInt = Annotated[StrictInt, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
DimInt = Annotated[StrictInt, Field(gt=0, le=MAX_DIM)]
LayerCount = Annotated[StrictInt, Field(gt=0, le=10_000)]  # the deepest published models have ~200 layers
MAX_FLOAT = 1e15  # the largest plain quantity a config takes (train_tokens, prices, ...)
PosFloat = Annotated[StrictFloat, Field(gt=0, le=MAX_FLOAT)]
NonNegFloat = Annotated[StrictFloat, Field(ge=0, le=MAX_FLOAT)]
# Rates (peak FLOP/s, bandwidths, memory sizes) and efficiencies bounded away from zero, so that no
# division by them can overflow to Infinity.
Rate = Annotated[StrictFloat, Field(ge=1e-6, le=1e12)]
Fraction = Annotated[StrictFloat, Field(ge=1e-4, le=1)]
