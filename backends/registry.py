"""The backends by name. Entries are import paths, resolved on use, so that choosing the analytical
backend never imports ASTRA-sim's runner and no backend module imports another."""

from __future__ import annotations

import importlib

from graphgen.errors import RankflowError
from graphgen.registry import Registry

BACKENDS: Registry[str] = Registry("backend")
BACKENDS.add("analytical", "backends.analytical:AnalyticalBackend")
BACKENDS.add("astra", "backends.astra.backend:AstraBackend")


def get_backend(name: str, **options):
    """A backend instance by name; options go to its constructor."""
    if name not in BACKENDS:
        raise RankflowError(f"unknown backend '{name}'", field="execution_backend.model",
                            fix=f"use one of: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
