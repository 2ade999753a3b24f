"""Which block builders a layer uses: its attention kind and its MLP kind, by registry name."""

from __future__ import annotations

from graphgen.config.model import ModelSpec


def layer_kind(m: ModelSpec, layer: int) -> tuple[str, str]:
    """(attention kind, MLP kind) of one layer: names in ATTENTION_BLOCKS and MLP_BLOCKS."""
    return ("mla" if m.mla is not None else m.attention_kind(layer)), ("moe" if m.is_moe(layer) else "dense")
