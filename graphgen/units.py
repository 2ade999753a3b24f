"""Units in one place. Internally everything is bytes, FLOPs and seconds.

FLOPs count 2 per multiply-add. Bandwidths in configs are decimal GB/s (1e9 bytes/s) unless a
name says GiB; memory sizes in configs are GiB (2**30 bytes) because that is how HBM is sold
and reported by PyTorch.
"""

from __future__ import annotations

GB = 1e9
GIB = 2**30
MIB = 2**20
TERA = 1e12
US = 1e-6

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "tf32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "fp4": 0.5,  # NVFP4/MXFP4 elements; their block scales add 1/16 or 1/32 of a byte each (not counted)
}


def dtype_bytes(dtype: str) -> float:
    return DTYPE_BYTES[dtype]
