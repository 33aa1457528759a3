"""Bayesian optimisation with a PFN surrogate (scikit-optimize's conventions, minimisation).

The surrogate is a PFN trained on a prior over objective functions (the shipped ``bo``
checkpoint): given the points evaluated so far it predicts a bar distribution over the value at
any candidate point in one forward pass, with no model fitting. Acquisition functions are read
off that distribution: expected improvement (exact for a bar distribution), probability of
improvement and an optimistic quantile (the "upper confidence bound" of the negated objective).

Once enough points are evaluated (``gp_after``, default 20), an exact Gaussian process fitted
to them takes over from the PFN: the PFN's prior serves best while the points are few, and its
predictions stay less precise than a fitted GP's where many points pin the function down (see
docs/benchmarks.md, "Bayesian optimisation").

- :func:`minimize` runs a whole optimisation, like ``skopt.gp_minimize``;
- :class:`Optimizer` is the ask-and-tell interface (``ask()`` a point, ``tell(x, y)`` its value);
- :class:`PFNSampler` is an Optuna sampler (``pip install pfn[bo]``).

Dimensions are given as scikit-optimize does: ``(low, high)`` of floats (a real interval) or of
ints (an integer range), ``(low, high, "log-uniform")`` for a log scale, or a list of
categories. Points are searched in the unit cube: reals and integers are scaled to [0, 1]
(integers rounded back), categories are one-hot coded.

An objective value that is NaN or infinite, or an objective that raises in :func:`minimize`, is
recorded as a failed point (NaN in ``func_vals``): the surrogate sees it as the worst value
observed so far, no point is proposed that lies closer to a failed point than to every other
evaluated point (its region is avoided), and it is never the result.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import solve_triangular
from scipy.optimize import OptimizeResult
from scipy.special import ndtr
from scipy.stats import qmc
from sklearn.utils import check_random_state
from torch import Tensor

from pfn.heads import BarDistribution
from pfn.inference import PFN, _finite_outputs, load

ACQUISITIONS = ("EI", "PI", "UCB")
DEFAULT_MODEL = "bo"
# The trust region (after TuRBO, Eriksson et al. 2019), in unit-cube widths: its side starts at
# REGION_START, doubles (up to REGION_MAX) after REGION_SUCCESSES improvements in a row, halves
# after max(2, ceil(D / 2)) evaluations in a row that do not improve by REGION_MARGIN of the best
# value, and starts again once below REGION_MIN.
REGION_START, REGION_MIN, REGION_MAX = 0.8, 2.0**-6, 1.6
REGION_SUCCESSES = 3
REGION_MARGIN = 1e-3
DEFAULT_GP_AFTER = 20
# The GP that takes over (see _GaussianProcess): an RBF kernel of one lengthscale (unit-cube
# widths) and a noise share of the outputscale, both chosen by marginal likelihood on these grids.
GP_LENGTHSCALES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0)
GP_NOISE_SHARES = (1e-6, 1e-3, 1e-2, 1e-1)
_SQRT_2PI = math.sqrt(2 * math.pi)


# ---------------------------------------------------------------- acquisition functions


def expected_improvement(dist: BarDistribution, best: Tensor | float) -> Tensor:
    """E[max(best - Y, 0)] under each bar distribution (minimisation), exactly: uniform inner
    buckets in closed form, the half-normal tails through the normal's pdf and cdf. ``best``
    broadcasts against the batch shape; the result has the batch shape (float64)."""
    probs = dist.probs.double()  # [..., K]
    best = torch.as_tensor(best, dtype=torch.float64, device=probs.device)
    return (probs * _improvement_by_bucket(dist, best)).sum(-1)


def _improvement_by_bucket(dist: BarDistribution, best: Tensor) -> Tensor:
    """E[max(best - Y, 0) | Y in bucket k] for every bucket: [..., K] (float64) for ``best`` [...]
    (float64). Expected improvement is the probability-weighted sum of these, so for one
    incumbent they are computed once and every candidate's EI is one matrix-vector product."""
    borders = dist.borders.double()  # [K + 1]
    best = best[..., None]  # [..., 1]
    lo, hi = borders[:-1], borders[1:]  # [K]
    # inner buckets, Y ~ U[lo, hi]: E[(best - Y)+] = best - mid if best >= hi, (best - lo)² / 2w inside, else 0
    clipped = torch.minimum(best, hi)  # [..., K]
    inner = torch.where(best > lo, (clipped - lo) * (best - (clipped + lo) / 2) / (hi - lo), torch.zeros_like(clipped))
    # left tail: Y = b1 - s|Z|
    s_left = dist.left_scale.double()
    c = borders[1] - best  # [..., 1]
    left = torch.where(
        c <= 0,
        -c + s_left * math.sqrt(2 / math.pi),
        2 * (s_left * _phi(c / s_left) - c * _normal_sf(c / s_left)),
    )
    # right tail: Y = b_{K-1} + s|Z|
    s_right = dist.right_scale.double()
    c = best - borders[-2]  # [..., 1]
    right = torch.where(
        c > 0,
        2 * (c * (_normal_cdf(c / s_right) - 0.5) - s_right * (_phi(torch.zeros_like(c)) - _phi(c / s_right))),
        torch.zeros_like(c),
    )
    return torch.cat([left, inner[..., 1:-1], right], dim=-1)


def probability_of_improvement(dist: BarDistribution, best: Tensor | float) -> Tensor:
    """P(Y < best) under each distribution (minimisation)."""
    return dist.cdf(torch.as_tensor(best, dtype=dist.logits.dtype, device=dist.logits.device)).double()


def optimistic_quantile(dist: BarDistribution, kappa: float) -> Tensor:
    """The negated Φ(-kappa)-quantile of each distribution: the upper confidence bound of -Y,
    which for a normal is -(mean - kappa · std) (kappa = 1.96: the 2.5% quantile)."""
    level = 0.5 * math.erfc(kappa / math.sqrt(2))
    return -dist.quantile(level).double()


def _phi(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z**2) / _SQRT_2PI


def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2))


def _normal_sf(z: Tensor) -> Tensor:
    return 0.5 * torch.erfc(z / math.sqrt(2))


# ---------------------------------------------------------------- the search space


@dataclass(frozen=True)
class _Dimension:
    """One dimension: kind "real", "integer" or "categorical"; log scale for reals/integers."""

    kind: str
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    categories: tuple[Any, ...] = ()

    @property
    def width(self) -> int:
        """Columns in the unit cube: one, or one per category."""
        return len(self.categories) if self.kind == "categorical" else 1

    def _scaled(self, value: float) -> float:
        return math.log(value) if self.log else float(value)

    def encode(self, value: Any) -> list[float]:
        if self.kind == "categorical":
            return [float(value == c) for c in self.categories]
        lo, hi = self._scaled(self.low), self._scaled(self.high)
        return [(self._scaled(value) - lo) / (hi - lo)]

    def decode(self, u: np.ndarray) -> Any:
        if self.kind == "categorical":
            return self.categories[int(np.argmax(u))]
        lo, hi = self._scaled(self.low), self._scaled(self.high)
        value = lo + float(np.clip(u[0], 0.0, 1.0)) * (hi - lo)
        value = math.exp(value) if self.log else value
        if self.kind == "integer":
            return int(min(max(round(value), self.low), self.high))
        return float(min(max(value, self.low), self.high))

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(value == c for c in self.categories)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.kind == "integer" and value != round(value):
            return False
        return self.low <= value <= self.high


def _dimension(spec: Any, index: int) -> _Dimension:
    """A dimension from scikit-optimize's shorthand (see the module docstring)."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"dimension {index}: a categorical dimension needs at least one category")
        return _Dimension("categorical", categories=tuple(spec))
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            f"dimension {index}: expected (low, high), (low, high, 'uniform' | 'log-uniform') or a list of "
            f"categories, got {spec!r}"
        )
    low, high, *prior = spec
    prior = prior[0] if prior else "uniform"
    if prior not in ("uniform", "log-uniform"):
        raise ValueError(f"dimension {index}: prior must be 'uniform' or 'log-uniform', got {prior!r}")
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not math.isfinite(bound):
            raise ValueError(f"dimension {index}: bounds must be finite numbers, got {spec!r}")
    if low >= high:
        raise ValueError(f"dimension {index}: low must be below high, got low={low}, high={high}")
    if prior == "log-uniform" and low <= 0:
        raise ValueError(f"dimension {index}: a log-uniform dimension needs low > 0, got low={low}")
    integer = isinstance(low, numbers.Integral) and isinstance(high, numbers.Integral)
    return _Dimension("integer" if integer else "real", float(low), float(high), prior == "log-uniform")


# ---------------------------------------------------------------- the optimiser


class Optimizer:
    """Ask-and-tell Bayesian optimisation with a PFN surrogate (minimisation).

    dimensions: the search space (see the module docstring). n_initial_points: points drawn
    from a scrambled Sobol sequence before the surrogate is used. acq_func: "EI" (expected
    improvement), "PI" (probability of improvement) or "UCB" (the Φ(-kappa)-quantile, lowest
    first). n_candidates: random candidates per ask, to which the local refinement adds
    perturbations of the best ones. trust_region: search a box around the best point whose
    side grows after improvements and shrinks after failures to improve (after TuRBO; see
    :func:`trust_region_side`), the surrogate seeing the points inside it in the box's own
    coordinates; False searches the whole space. gp_after: from this many evaluated points on
    (failed ones included), an exact GP fitted to all of them replaces the PFN and the whole
    space is searched (see :class:`_GaussianProcess`); None keeps the PFN throughout. model: a
    shipped checkpoint's name, a path or a loaded :class:`~pfn.inference.PFN`. random_state:
    None, an int or a numpy RandomState.
    """

    def __init__(
        self,
        dimensions: Sequence[Any],
        n_initial_points: int = 5,
        acq_func: str = "EI",
        kappa: float = 1.96,
        n_candidates: int = 500,
        trust_region: bool = True,
        model: str | PFN = DEFAULT_MODEL,
        random_state: int | np.random.RandomState | None = None,
        gp_after: int | None = DEFAULT_GP_AFTER,
    ) -> None:
        if isinstance(dimensions, (str, bytes)) or not isinstance(dimensions, Sequence) or not dimensions:
            raise ValueError(f"dimensions must be a non-empty list of dimensions, got {dimensions!r}")
        if acq_func not in ACQUISITIONS:
            raise ValueError(f"unknown acq_func {acq_func!r}; choose one of {', '.join(ACQUISITIONS)}")
        if isinstance(n_initial_points, bool) or not isinstance(n_initial_points, numbers.Integral):
            raise TypeError(f"n_initial_points must be an integer, got {n_initial_points!r}")
        if n_initial_points < 0:
            raise ValueError(f"n_initial_points must be >= 0, got {n_initial_points}")
        if not (isinstance(n_candidates, numbers.Integral) and n_candidates >= 1):
            raise ValueError(f"n_candidates must be a positive integer, got {n_candidates!r}")
        if not (isinstance(kappa, numbers.Real) and kappa > 0):
            raise ValueError(f"kappa must be a positive number, got {kappa!r}")
        if not isinstance(trust_region, bool):
            raise TypeError(f"trust_region must be True or False, got {trust_region!r}")
        check_gp_after(gp_after)
        self.dimensions = [_dimension(spec, i) for i, spec in enumerate(dimensions)]
        self.n_initial_points = int(n_initial_points)
        self.acq_func = acq_func
        self.kappa = float(kappa)
        self.n_candidates = int(n_candidates)
        self.trust_region = trust_region
        self.gp_after = None if gp_after is None else int(gp_after)
        self.model = model if isinstance(model, PFN) else load(model)
        width = sum(d.width for d in self.dimensions)
        if width > self.model.config.n_features:
            raise ValueError(
                f"the search space needs {width} columns (categories count one each) but the surrogate takes at most "
                f"{self.model.config.n_features}"
            )
        self.max_train = int(self.model.card["train"]["max_train"])
        self.rng = check_random_state(random_state)
        sobol = qmc.Sobol(width, scramble=True, seed=int(self.rng.randint(2**31 - 1)))
        self._initial = self._snap(sobol.random_base2(max(self.n_initial_points - 1, 0).bit_length()))
        self.Xi: list[list[Any]] = []
        self.yi: list[float] = []

    # -------------------------------------------------------- public interface

    def ask(self) -> list[Any]:
        """The next point to evaluate: a list with one value per dimension."""
        n_ok = sum(math.isfinite(y) for y in self.yi)
        if len(self.yi) < self.n_initial_points:
            return self._decode(self._initial[len(self.yi)])
        if n_ok == 0:
            return self._decode(self._snap(self.rng.random_sample((1, self._initial.shape[1])))[0])
        return self._decode(self._maximise_acquisition())

    def tell(self, x: Sequence[Any], y: float) -> OptimizeResult:
        """Record that the objective at x is y (NaN or infinite: a failed point); returns the
        result so far. x is refused if it has the wrong length or a value outside its dimension."""
        x = list(x) if isinstance(x, (list, tuple, np.ndarray)) else x
        if not isinstance(x, list) or len(x) != len(self.dimensions):
            raise ValueError(f"x must be a list of {len(self.dimensions)} values (one per dimension), got {x!r}")
        for i, (value, dim) in enumerate(zip(x, self.dimensions, strict=True)):
            if not dim.contains(value):
                space = list(dim.categories) if dim.kind == "categorical" else (dim.low, dim.high)
                raise ValueError(f"x[{i}] = {value!r} lies outside dimension {i} ({dim.kind}, {space})")
        if isinstance(y, bool) or not isinstance(y, numbers.Real):
            raise TypeError(f"y must be a real number (NaN for a failed evaluation), got {y!r}")
        self.Xi.append([v.item() if isinstance(v, np.generic) else v for v in x])
        self.yi.append(float(y) if math.isfinite(y) else math.nan)
        return self.result()

    def result(self) -> OptimizeResult:
        """x and fun (the best point and value; None and NaN while no evaluation succeeded),
        x_iters and func_vals (every point and value told, failed ones as NaN)."""
        values = np.asarray(self.yi, dtype=float)
        ok = np.isfinite(values)
        best = int(np.nanargmin(values)) if ok.any() else None
        return OptimizeResult(
            x=None if best is None else self.Xi[best],
            fun=math.nan if best is None else float(values[best]),
            x_iters=[list(x) for x in self.Xi],
            func_vals=values,
            n_failed=int((~ok).sum()),
        )

    # -------------------------------------------------------- internals

    def _encode(self, x: Sequence[Any]) -> list[float]:
        return [u for value, dim in zip(x, self.dimensions, strict=True) for u in dim.encode(value)]

    def _decode(self, u: np.ndarray) -> list[Any]:
        out, start = [], 0
        for dim in self.dimensions:
            out.append(dim.decode(u[start : start + dim.width]))
            start += dim.width
        return out

    def _snap(self, u: np.ndarray) -> np.ndarray:
        """Unit-cube points [m, D] moved onto the space's grid (integers rounded, one-hot categories)."""
        snapped, start = u.copy(), 0
        for dim in self.dimensions:
            block = snapped[:, start : start + dim.width]
            if dim.kind == "categorical":
                block[:] = np.eye(dim.width)[block.argmax(1)]
            elif dim.kind == "integer":
                block[:, 0] = [dim.encode(dim.decode(row))[0] for row in block]
            start += dim.width
        return snapped

    def _train_rows(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The surrogate's train rows from points x [n, D] with values y [n] (NaN: failed; at
        least one finite): the points kept [n', D], transformed values [n'] (failed points at
        the worst value) and the incumbent (the lowest transformed value)."""
        ok = np.isfinite(y)
        if len(y) > self.max_train:  # the lowest values (failed points last) up to the model's context
            keep = np.argsort(np.where(ok, y, np.inf), kind="stable")[: self.max_train]
            x, y, ok = x[keep], y[keep], ok[keep]
        z = np.zeros_like(y)
        if ok.sum() > 1 and np.ptp(y[ok]) > 0:
            z[ok] = _power_standardise(y[ok])
        z[~ok] = z[ok].max()
        return x, z, float(z[ok].min())

    def _uses_gp(self, n_told: int) -> bool:
        """Whether a GP, not the PFN, is the surrogate after ``n_told`` evaluations (see gp_after)."""
        return self.gp_after is not None and n_told >= self.gp_after

    def _region(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The box searched, as its lower corner and sides [D] each in the unit cube: the whole
        cube without a trust region or once a GP is the surrogate; else a box of side
        :func:`trust_region_side` centred on the best point (categories keep their whole one-hot
        range), clipped to the cube and grown to hold the max(5, D + 2) evaluated points nearest
        the best one."""
        width = x.shape[1]
        if not self.trust_region or self._uses_gp(len(y)):
            return np.zeros(width), np.ones(width)
        ok = np.isfinite(y)
        centre = x[ok][np.argmin(y[ok])]  # [D]
        half = 0.5 * trust_region_side(y, self.n_initial_points, width)
        lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
        start = 0
        for dim in self.dimensions:
            if dim.kind == "categorical":
                lo[start : start + dim.width], hi[start : start + dim.width] = 0.0, 1.0
            start += dim.width
        nearest = np.argsort(np.abs(x - centre).max(1), kind="stable")[: max(5, width + 2)]
        lo, hi = np.minimum(lo, x[nearest].min(0)), np.maximum(hi, x[nearest].max(0))
        return lo, np.maximum(hi - lo, 1e-9)

    def _maximise_acquisition(self) -> np.ndarray:
        """The unit-cube point of highest acquisition in the searched box (see _region) among
        random candidates and local perturbations of the best of them (three rounds of
        shrinking steps), neither evaluated before nor closer to a failed point than to every
        other evaluated point. The surrogate sees the evaluated points inside the box, in the
        box's coordinates (the box mapped onto the unit cube). From ``gp_after`` points on, a GP
        fitted to all of them scores the whole cube instead."""
        x_all = np.asarray([self._encode(p) for p in self.Xi], dtype=np.float64)  # [n, D]
        y_all = np.asarray(self.yi, dtype=np.float64)  # [n]
        use_gp = self._uses_gp(len(y_all))
        lo, span = self._region(x_all, y_all)  # [D] each
        inside = np.all((x_all >= lo - 1e-12) & (x_all <= lo + span + 1e-12), axis=1)  # [n]
        x_train, y_train, best = self._train_rows((x_all[inside] - lo) / span, y_all[inside])
        score: _GaussianProcess | _Acquisition
        if use_gp:
            score = _GaussianProcess(x_train, y_train, best, self.acq_func, self.kappa)
        else:
            score = _Acquisition(self.model, x_train, y_train, best, self.acq_func, self.kappa)
        width = x_train.shape[1]

        def snap(u: np.ndarray) -> np.ndarray:  # box coordinates [m, D] onto the space's grid
            return np.clip((self._snap(lo + span * np.clip(u, 0, 1)) - lo) / span, 0, 1)

        candidates = [self.rng.random_sample((self.n_candidates, width))]
        top = self.rng.choice(np.argsort(y_train)[:5], 100)  # perturbations of the best points observed
        candidates.append(x_train[top] + 0.05 * self.rng.standard_normal((100, width)))
        u = snap(np.concatenate(candidates))
        values = score(u)
        for step in (0.1, 0.03, 0.01):
            starts = u[np.argsort(-values)[:10]]
            local = snap(starts.repeat(20, 0) + step * self.rng.standard_normal((200, width)))
            u, values = np.concatenate([u, local]), np.concatenate([values, score(local)])
        points = self._snap(lo + span * u)  # [m, D] in the unit cube
        pick = _best_allowed(points, values, x_all, ~np.isfinite(y_all))
        return points[pick] if pick is not None else self._snap(self.rng.random_sample((1, width)))[0]


def check_gp_after(gp_after: Any) -> None:
    """Refuse a ``gp_after`` that is neither None nor an integer of at least 2."""
    if gp_after is not None and (isinstance(gp_after, bool) or not isinstance(gp_after, numbers.Integral)):
        raise TypeError(f"gp_after must be an integer or None, got {gp_after!r}")
    if gp_after is not None and gp_after < 2:
        raise ValueError(f"gp_after must be at least 2 (a GP needs points to fit) or None, got {gp_after}")


def trust_region_side(values: np.ndarray, n_initial: int, width: int) -> float:
    """The trust region's side after the values [n] told so far (NaN: failed), replayed in
    order from the first value after the ``n_initial`` initial ones (see REGION_START): an
    improvement beats the best value before it by more than REGION_MARGIN of its size; a
    failed evaluation is a failure to improve. ``width``: the unit cube's dimension D."""
    patience = max(2, math.ceil(width / 2))
    side, successes, failures = REGION_START, 0, 0
    start = max(n_initial, 1)
    before = values[:start][np.isfinite(values[:start])]
    best = float(before.min()) if len(before) else math.inf
    for value in values[start:]:
        if math.isfinite(value) and (not math.isfinite(best) or value < best - REGION_MARGIN * abs(best)):
            successes, failures = successes + 1, 0
        else:
            successes, failures = 0, failures + 1
        if math.isfinite(value):
            best = min(best, float(value))
        if successes == REGION_SUCCESSES:
            side, successes = min(2 * side, REGION_MAX), 0
        if failures == patience:
            side, failures = side / 2, 0
        if side < REGION_MIN:
            side = REGION_START
    return side


def _best_allowed(u: np.ndarray, values: np.ndarray, x: np.ndarray, failed: np.ndarray) -> int | None:
    """The index of the candidate u [m, D] of highest finite value [m] (the first among equals)
    that is neither an evaluated point x [n, D] nor closer to a failed one (``failed`` [n]) than to
    every other; None if there is none. Distances are computed for the best candidates first,
    in chunks, since the best usually qualifies."""
    order = np.argsort(-values, kind="stable")  # best first, ties in order of position
    order = order[np.isfinite(values[order])]
    for chunk in np.array_split(order, np.arange(16, len(order), 64)):
        distance = np.sqrt(((u[chunk, None, :] - x[None]) ** 2).sum(-1))  # [c, n]
        seen = distance.min(1) < 1e-9  # already evaluated
        near_failure = failed[distance.argmin(1)]  # closer to a failed point than to any other
        allowed = ~(seen | near_failure)
        if allowed.any():
            return int(chunk[int(np.argmax(allowed))])
    return None


class _Acquisition:
    """The acquisition function given the train rows, evaluated at unit-cube points u [m, D]
    (float64 numpy) -> values [m] (float64 numpy).

    The train rows are encoded once (``PFN.encode_train``); each call runs the candidates
    through the cached keys and values. Expected improvement for one incumbent is linear in the
    bucket probabilities, so the improvement within each bucket is computed once and each
    candidate's EI is a dot product.
    """

    def __init__(self, model: PFN, x_train: np.ndarray, y_train: np.ndarray, best: float, acq: str, kappa: float):
        self.model, self.best, self.acq, self.kappa = model, best, acq, kappa
        xt, yt, _, self.used, _ = model.prepare(x_train[None], y_train[None], x_train[None, :1])
        self.cache = model.encode_train(xt, yt, self.used)
        self.improvement = None
        if acq == "EI":
            borders = model.borders.to(model.device)
            dist = BarDistribution(borders, torch.zeros(borders.numel() - 1, device=model.device), model.tail_scales)
            incumbent = torch.tensor(best, dtype=torch.float64, device=model.device)
            self.improvement = _improvement_by_bucket(dist, incumbent)  # [K]

    def logits(self, u: np.ndarray) -> Tensor:
        """Bucket logits [m, K] (float32) at the points u [m, D]."""
        x, _ = self.model.pad_features(torch.as_tensor(u, dtype=torch.float32)[None])  # [1, m, F]
        return self.model.predict_test(self.cache, x, self.used)[0]

    def __call__(self, u: np.ndarray) -> np.ndarray:
        logits = self.logits(u)
        if self.improvement is not None:
            values = logits.softmax(-1).double() @ self.improvement
        else:
            dist = BarDistribution(self.model.borders.to(logits.device), logits, self.model.tail_scales)
            values = (
                probability_of_improvement(dist, self.best)
                if self.acq == "PI"
                else optimistic_quantile(dist, self.kappa)
            )
        # outputs that are not finite make NaN values (cheaper to check than the logits)
        return _finite_outputs(values, torch.as_tensor(u)).cpu().numpy()


class _GaussianProcess:
    """An exact GP on the train rows as acquisition function, evaluated at unit-cube points
    u [m, D] -> values [m] (float64 numpy; higher is better, as :class:`_Acquisition`'s).

    Kernel: outputscale · exp(-|u - u'|² / (2 lengthscale²)) plus noise share · outputscale on the
    diagonal; the lengthscale and the noise share are the pair of GP_LENGTHSCALES × GP_NOISE_SHARES
    of highest marginal likelihood, the outputscale its closed-form maximum for each pair (zero
    prior mean: the values are standardised). The posterior at u is normal (mean, std of the
    noise-free value), so EI, PI and the optimistic quantile are closed forms.
    """

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, best: float, acq: str, kappa: float):
        self.x, self.best, self.acq, self.kappa = x_train, best, acq, kappa
        n = len(y_train)
        sq = ((x_train[:, None, :] - x_train[None, :, :]) ** 2).sum(-1)  # [n, n]
        fits = []  # (log marginal likelihood, lengthscale, Cholesky factor, K^-1 y, outputscale)
        for lengthscale in GP_LENGTHSCALES:
            correlation = np.exp(-0.5 * sq / lengthscale**2)
            for noise in GP_NOISE_SHARES:  # the largest keeps every matrix positive definite
                try:
                    chol = np.linalg.cholesky(correlation + noise * np.eye(n))
                except np.linalg.LinAlgError:
                    continue
                alpha = solve_triangular(
                    chol.T, solve_triangular(chol, y_train, lower=True)
                )  # [n] K^-1 y, outputscale 1
                scale = max(float(y_train @ alpha) / n, 1e-12)  # the outputscale's closed-form maximum
                likelihood = -0.5 * n * math.log(scale) - float(np.log(np.diag(chol)).sum())  # up to a constant
                fits.append((likelihood, lengthscale, chol, alpha, scale))
        _, self.lengthscale, self.chol, self.alpha, self.scale = max(fits, key=lambda fit: fit[0])

    def posterior(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean [m] and standard deviation [m] of the noise-free value at the points u [m, D]."""
        cross = np.exp(-0.5 * ((u[:, None, :] - self.x[None, :, :]) ** 2).sum(-1) / self.lengthscale**2)  # [m, n]
        mean = cross @ self.alpha  # the outputscale cancels in k^T K^-1 y
        v = solve_triangular(self.chol, cross.T, lower=True)  # [n, m]
        variance = self.scale * np.maximum(1.0 - (v**2).sum(0), 1e-12)
        return mean, np.sqrt(variance)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        mean, std = self.posterior(u)
        z = (self.best - mean) / std
        if self.acq == "EI":
            return (self.best - mean) * ndtr(z) + std * np.exp(-0.5 * z**2) / _SQRT_2PI
        if self.acq == "PI":
            return ndtr(z)
        return -(mean - self.kappa * std)


def _power_standardise(y: np.ndarray) -> np.ndarray:
    """Values [n] z-scored, through the Yeo-Johnson transform whose λ (on a grid of 61 values in
    [-2, 4]) maximises the normal likelihood, then z-scored again: long tails made normal-like."""
    y = (y - y.mean()) / y.std()
    lam = np.linspace(-2.0, 4.0, 61)[:, None]  # [L, 1]
    pos, neg = np.log1p(np.clip(y, 0, None)), np.log1p(np.clip(-y, 0, None))  # [n] each
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        up = np.where(lam == 0, pos, np.expm1(lam * pos) / lam)  # [L, n]
        down = np.where(lam == 2, neg, np.expm1((2 - lam) * neg) / (2 - lam))  # [L, n]
        z = np.where(y >= 0, up, -down)  # [L, n]
        llf = -0.5 * len(y) * np.log(z.var(1)) + (lam[:, 0] - 1) * (np.sign(y) * np.log1p(np.abs(y))).sum()
    llf = np.where(np.isfinite(llf), llf, -np.inf)
    best = z[int(np.argmax(llf))]
    return (best - best.mean()) / best.std() if np.isfinite(best).all() and best.std() > 0 else y


# ---------------------------------------------------------------- minimize


def minimize(
    func: Callable[[list[Any]], float],
    dimensions: Sequence[Any],
    n_calls: int = 50,
    n_initial_points: int = 5,
    acq_func: str = "EI",
    random_state: int | np.random.RandomState | None = None,
    model: str | PFN = DEFAULT_MODEL,
    trust_region: bool = True,
    gp_after: int | None = DEFAULT_GP_AFTER,
) -> OptimizeResult:
    """Minimise ``func`` (a list of values, one per dimension -> a number) over ``dimensions`` in
    ``n_calls`` evaluations, like ``skopt.gp_minimize``. A call that raises or returns NaN or
    infinity is recorded as failed (NaN in ``func_vals``) and its region avoided. Returns an
    OptimizeResult with ``x``, ``fun``, ``x_iters``, ``func_vals`` and ``n_failed``. ``trust_region``
    and ``gp_after``: see :class:`Optimizer`."""
    if isinstance(n_calls, bool) or not isinstance(n_calls, numbers.Integral) or n_calls < 1:
        raise ValueError(f"n_calls must be a positive integer, got {n_calls!r}")
    opt = Optimizer(
        dimensions,
        n_initial_points,
        acq_func,
        trust_region=trust_region,
        model=model,
        random_state=random_state,
        gp_after=gp_after,
    )
    for _ in range(n_calls):
        x = opt.ask()
        try:
            y = float(func(x))
        except Exception:  # noqa: BLE001 - a failed evaluation is data, not an error of the optimiser
            y = math.nan
        opt.tell(x, y)
    return opt.result()


def __getattr__(name: str) -> Any:
    """``PFNSampler`` imports Optuna when first used (Optuna is an optional dependency)."""
    if name == "PFNSampler":
        from pfn.bo_optuna import PFNSampler

        return PFNSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
