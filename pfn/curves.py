"""Learning-curve extrapolation with the shipped ``curves`` PFN.

``extrapolate(x_observed, y_observed, x_query)`` returns the predictive distribution of a
learning curve's values at ``x_query`` given its observed points, in one forward pass.

How inputs are mapped to what the network was trained on (see priors/curves.py):

- x: duplicated x are merged (their y averaged), points are sorted by x. With
  ``x_scale="log"`` (training-set sizes; x must be positive) x becomes
  t = (log x - log x_0) / (log x_end - log x_0), with ``x_scale="linear"`` (epochs, steps)
  t = (x - x_0) / (x_end - x_0), where x_0 is the first observed x and x_end the largest of
  all observed and queried x. So t runs over [0, 1] and any unit of x gives the same answer
  (linear: any affine map x -> a x + b with a > 0; log: any x -> a x). Queries before x_0 are
  refused. More than ``MAX_OBSERVED`` observed points are averaged in consecutive groups (x
  and y alike) down to that many, the most the network saw in training.
- y: the network predicts a lower-is-better value in about [0, 1] (an error rate).
  ``kind="error"``: y as given (in [0, 1], up to ``Y_MARGIN`` beyond for noisy estimates);
  ``kind="accuracy"``: 1 - y (y likewise);
  ``kind="loss"``: y / (2 · the largest observed y) (y >= 0), so that the largest observed loss
  is 0.5 and zero stays zero. The returned distribution is mapped back to the scale of y.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Literal

import numpy as np
import torch

from pfn.heads import BarDistribution
from pfn.inference import PFN, load

Kind = Literal["error", "accuracy", "loss"]
XScale = Literal["log", "linear"]
MAX_OBSERVED = 31  # the shipped model's largest number of train rows (its card's train.max_train)
Y_MARGIN = 0.1  # error rates and accuracies may stray this far beyond [0, 1] (noisy estimates, as in the prior)


class CurveDistribution:
    """Predictive distributions of a curve's values at m queries: y = loc + scale · Z with Z the
    network's bar distribution over lower-is-better values (scale < 0 for accuracies).
    Numpy in, numpy out; every method returns one value per query ([m])."""

    def __init__(self, bar: BarDistribution, loc: float, scale: float) -> None:
        self.bar = bar
        self.loc = loc
        self.scale = scale

    def _z(self, y: Any) -> torch.Tensor:
        values = np.asarray(y, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("y must be finite numbers")
        return torch.as_tensor((values - self.loc) / self.scale, dtype=torch.float32)

    def _y(self, z: torch.Tensor) -> np.ndarray:
        return self.loc + self.scale * z.double().numpy()

    def mean(self) -> np.ndarray:
        """The predictive mean at each query."""
        return self._y(self.bar.mean())

    def median(self) -> np.ndarray:
        """The predictive median at each query."""
        return self.quantile(0.5)

    def quantile(self, q: float) -> np.ndarray:
        """The q-quantile (0 < q < 1) at each query."""
        q = float(q)
        if not 0 < q < 1:
            raise ValueError(f"q must lie strictly between 0 and 1, got {q}")
        return self._y(self.bar.quantile(q if self.scale > 0 else 1 - q))

    def interval(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """The central interval holding probability ``alpha`` (e.g. 0.9): (lower, upper)."""
        alpha = float(alpha)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
        return self.quantile((1 - alpha) / 2), self.quantile((1 + alpha) / 2)

    def logpdf(self, y: Any) -> np.ndarray:
        """The log density at values y (a number or one per query)."""
        return self.bar.logpdf(self._z(y)).double().numpy() - math.log(abs(self.scale))

    def cdf(self, y: Any) -> np.ndarray:
        """P(Y <= y) at values y (a number or one per query)."""
        below = self.bar.cdf(self._z(y)).double().numpy()
        return below if self.scale > 0 else 1 - below


@functools.lru_cache(maxsize=4)
def _load(name: str) -> PFN:
    return load(name)


def extrapolate(
    x_observed: Any,
    y_observed: Any,
    x_query: Any,
    kind: Kind = "error",
    x_scale: XScale = "log",
    model: PFN | str | os.PathLike[str] = "curves",
) -> CurveDistribution:
    """The distribution of a learning curve's values at ``x_query`` [m] given its observed
    points (``x_observed``, ``y_observed`` [n], n >= 2 distinct x). ``kind``: what y is
    ("error", "accuracy" or "loss"); ``x_scale``: "log" for training-set sizes, "linear" for
    epochs; ``model``: a loaded PFN, a shipped name or a checkpoint path. The module docstring
    says how x and y are normalised. ValueError for bad input, naming it."""
    x, y, query = _curve_arrays(x_observed, y_observed, x_query)
    if kind not in ("error", "accuracy", "loss"):
        raise ValueError(f"kind must be 'error', 'accuracy' or 'loss', got {kind!r}")
    if x_scale not in ("log", "linear"):
        raise ValueError(f"x_scale must be 'log' (training-set sizes) or 'linear' (epochs), got {x_scale!r}")
    x, y = merge_duplicates(x, y)
    if query.min() < x[0]:
        raise ValueError(f"x_query must not precede the first observed x ({x[0]:g}); got {query.min():g}")
    if x_scale == "log":
        if x[0] <= 0:
            raise ValueError("x_scale='log' needs positive x (training-set sizes); use x_scale='linear' for epochs")
        x, query = np.log(x), np.log(query)
    end = max(x[-1], query.max())
    t, t_query = (x - x[0]) / (end - x[0]), (query - x[0]) / (end - x[0])
    loc, scale = _y_map(y, kind)
    z = (y - loc) / scale
    if len(t) > MAX_OBSERVED:
        groups = np.array_split(np.arange(len(t)), MAX_OBSERVED)
        t, z = np.array([t[g].mean() for g in groups]), np.array([z[g].mean() for g in groups])
    network = model if isinstance(model, PFN) else _load(str(model))
    bar = network.predict(t[:, None], z, t_query[:, None])
    return CurveDistribution(bar, loc, scale)


def _curve_arrays(x_observed: Any, y_observed: Any, x_query: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three inputs as 1-D finite float64 arrays, checked against each other."""
    arrays = []
    for name, value in (("x_observed", x_observed), ("y_observed", y_observed), ("x_query", x_query)):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be numbers: {error}") from None
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        arrays.append(array)
    x, y, query = arrays
    if x.shape != y.shape:
        raise ValueError(f"x_observed and y_observed must have the same length, got {x.size} and {y.size}")
    return x, y, query


def merge_duplicates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by x, the y of repeated x averaged; ValueError unless two distinct x remain."""
    if x.size >= 2 and bool((x[1:] > x[:-1]).all()):  # sorted and distinct already, as curves usually are
        return x, y
    unique, inverse = np.unique(x, return_inverse=True)
    if unique.size < 2:
        raise ValueError(f"need at least two observed points with distinct x, got {unique.size}")
    means = np.bincount(inverse, weights=y) / np.bincount(inverse)
    return unique, means


def _y_map(y: np.ndarray, kind: str) -> tuple[float, float]:
    """(loc, scale) with y = loc + scale · z, z the network's lower-is-better scale."""
    if kind == "loss":
        if y.min() < 0:
            raise ValueError(f"kind='loss' needs y >= 0, got a minimum of {y.min():g}")
        top = float(y.max())
        return 0.0, 2 * top if top > 0 else 1.0
    if y.min() < -Y_MARGIN or y.max() > 1 + Y_MARGIN:
        raise ValueError(f"kind={kind!r} needs y in [0, 1], got values in [{y.min():g}, {y.max():g}]")
    return (0.0, 1.0) if kind == "error" else (1.0, -1.0)
