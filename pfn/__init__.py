"""pfn: prior-data fitted networks. ``pfn.load(name_or_path)`` returns a ready model."""

from pfn.checkpoint import CheckpointError, shipped_names
from pfn.config import ConfigError
from pfn.estimators import PFNClassifier, PFNRegressor, PredictiveDistribution
from pfn.heads import BarDistribution
from pfn.inference import PFN, load

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
