"""pfn: prior-data fitted networks. ``pfn.load(name_or_path)`` returns a ready model.

Names load on first use (PEP 562), so ``import pfn`` is instant and the estimators import
neither torch nor the priors until they fit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "PFN": "pfn.inference",
    "load": "pfn.inference",
    "PFNClassifier": "pfn.estimators",
    "PFNRegressor": "pfn.estimators",
    "PredictiveDistribution": "pfn.estimators",
    "BarDistribution": "pfn.heads",
    "CheckpointError": "pfn.checkpoint",
    "shipped_names": "pfn.checkpoint",
    "ConfigError": "pfn.config",
}

if TYPE_CHECKING:
    from pfn.checkpoint import CheckpointError, shipped_names
    from pfn.config import ConfigError
    from pfn.estimators import PFNClassifier, PFNRegressor, PredictiveDistribution
    from pfn.heads import BarDistribution
    from pfn.inference import PFN, load


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pfn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "PFN",
    "PFNClassifier",
    "PFNRegressor",
    "PredictiveDistribution",
    "BarDistribution",
    "CheckpointError",
    "ConfigError",
    "load",
    "shipped_names",
]
