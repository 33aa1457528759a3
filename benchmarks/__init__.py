"""Benchmarks, each run by ``pfn bench NAME``; every one writes JSON and plots to ``--out``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# name -> "module:function"; modules import lazily so the CLI starts fast
REGISTRY: dict[str, str] = {
    "bnn": "benchmarks.bnn_posterior:run",
    "bo": "benchmarks.bo:run",
    "curves": "benchmarks.curves:run",
    "function-classes": "benchmarks.function_classes:run",
    "gp": "benchmarks.gp_posterior:run",
    "gp-hyper": "benchmarks.gp_hyper:run",
    "large": "benchmarks.large:run",
    "recipe": "benchmarks.recipe:run",
    "smoothing": "benchmarks.smoothing:run",
    "speed": "benchmarks.speed:run",
    "tabular": "benchmarks.tabular:run",
    "throughput": "benchmarks.throughput:run",
    "temperature": "benchmarks.temperature:run",
    "training-curves": "benchmarks.training_curves:run",
}


def get(name: str) -> Callable[..., dict[str, Any]]:
    """The run function of benchmark ``name`` (ValueError listing the known names)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(REGISTRY)}")
    module, function = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), function)
