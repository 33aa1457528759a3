"""A prior over learning curves: error against epochs or training-set size.

Each dataset is one curve on a grid of ``n_rows`` points, sorted by x, so that the trainer's
first rows (the train rows) are an observed prefix and the rest are to be extrapolated. The
single input feature is the normalised position t in [0, 1]: t = 0 at the first point, t = 1 at
the last, linear in x for epoch-like grids and linear in log x for training-set sizes
(``log_scale_probability``). Targets are lower-is-better values (error rates) mostly in [0, 1].

A curve is drawn from one of the parametric families of the learning-curve literature
(:data:`FAMILIES`, each written in its error, i.e. decreasing, form; with probability
``combination_probability`` a convex combination of two), on a raw x grid: x from 1 to
x_max ~ logU(10, 2000) for epochs, x from x_0 ~ logU(4, 256) to x_0 · logU(4, 4096) for sizes.
Its parameters are drawn through three interpretable quantities: the error y_0 at the first
point, the asymptote c and a rate (or half-way point) spread log-uniformly so that curves range
from converged early to still falling at the end; the family's amplitude is then solved so that
f(x_0) = y_0. A share of curves is ill-behaved (``ill_behaved_probability``, each kind equally
likely): a flat start, a plateau, a late drop, a peak or a late rise. Gaussian noise of standard
deviation σ ~ logU(noise_low, noise_high) at the first point, shrinking as exp(-γ t),
γ ~ U(0, 3), is added. The grid points are t_i = v_i^p, p ~ logU(0.2, 3), with v evenly spaced
or sorted uniform draws (endpoints 0 and 1 kept), so observed points may be dense or sparse.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from priors.base import Batch, Prior, numpy_rng

Array = np.ndarray


def pow3(x: Array, c: Array, a: Array, alpha: Array) -> Array:
    """c + a x^(-α)."""
    return c + a * x ** (-alpha)


def pow4(x: Array, c: Array, a: Array, b: Array, alpha: Array) -> Array:
    """c + a (x + b)^(-α)."""
    return c + a * (x + b) ** (-alpha)


def log_power(x: Array, c: Array, a: Array, b: Array, alpha: Array) -> Array:
    """c + a / (1 + (x / e^b)^α)."""
    return c + a / (1 + (x / np.exp(b)) ** alpha)


def exp3(x: Array, c: Array, a: Array, b: Array) -> Array:
    """c + a e^(-b x)."""
    return c + a * np.exp(-b * x)


def exp4(x: Array, c: Array, a: Array, b: Array, alpha: Array) -> Array:
    """c + a e^(-b x^α)."""
    return c + a * np.exp(-b * x**alpha)


def mmf(x: Array, alpha: Array, beta: Array, kappa: Array, delta: Array) -> Array:
    """Morgan-Mercer-Flodin: α - (α - β) / (1 + (κ x)^δ) (β at x = 0, α as x → ∞)."""
    return alpha - (alpha - beta) / (1 + (kappa * x) ** delta)


def janoschek(x: Array, alpha: Array, beta: Array, kappa: Array, delta: Array) -> Array:
    """α - (α - β) e^(-κ x^δ)."""
    return alpha - (alpha - beta) * np.exp(-kappa * x**delta)


def weibull(x: Array, alpha: Array, beta: Array, kappa: Array, delta: Array) -> Array:
    """α - (α - β) e^(-(κ x)^δ)."""
    return alpha - (alpha - beta) * np.exp(-((kappa * x) ** delta))


def ilog2(x: Array, c: Array, a: Array) -> Array:
    """c + a / log(x + 1)."""
    return c + a / np.log(x + 1)


FAMILIES: dict[str, Callable[..., Array]] = {
    "pow3": pow3,
    "pow4": pow4,
    "log_power": log_power,
    "exp3": exp3,
    "exp4": exp4,
    "mmf": mmf,
    "janoschek": janoschek,
    "weibull": weibull,
    "ilog2": ilog2,
}
ILL_BEHAVED = ("flat_start", "plateau", "late_drop", "peak", "late_rise")


# per family: the number of uniform numbers its parameters are drawn from (see family_parameters)
FAMILY_DIMS = {
    "pow3": 1,
    "pow4": 2,
    "log_power": 2,
    "exp3": 1,
    "exp4": 2,
    "mmf": 2,
    "janoschek": 2,
    "weibull": 2,
    "ilog2": 0,
}


def family_parameters(family: str, x0: Array, x_max: Array, y0: Array, c: Array, u: Array) -> tuple[Array, ...]:
    """Parameters [n, 1] of ``family`` (in its formula's order) for curves that start at y0 at
    x0, tend to c and fall at a rate relative to the grid's range [x0, x_max], all [n, 1];
    u [n, FAMILY_DIMS[family]] holds U(0, 1) numbers that set the rate and shape (a
    deterministic map, so a sampler can work on u)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown curve family {family!r}; known: {sorted(FAMILIES)}")

    def spread(k: int, low: float, high: float, log: bool = True) -> Array:
        v = u[:, k : k + 1]
        return np.exp(math.log(low) + v * math.log(high / low)) if log else low + v * (high - low)

    gap = y0 - c
    if family in ("log_power", "mmf"):
        half = np.exp(np.log(x0 / 2) + u[:, :1] * np.log(8 * x_max / x0))  # a half-way point, x0 / 2 .. 4 x_max
    if family == "pow3":
        alpha = spread(0, 0.05, 2.5)
        return c, gap * x0**alpha, alpha
    if family == "pow4":
        alpha, b = spread(0, 0.05, 2.5), x0 * spread(1, 0, 3, log=False)
        return c, gap * (x0 + b) ** alpha, b, alpha
    if family == "log_power":
        alpha = spread(1, 0.3, 4, log=False)
        return c, gap * (1 + (x0 / half) ** alpha), np.log(half), alpha
    if family == "exp3":
        b = spread(0, 0.3, 30) / x_max
        return c, gap * np.exp(b * x0), b
    if family == "exp4":
        alpha = spread(1, 0.2, 1.5, log=False)
        b = spread(0, 0.3, 30) / x_max**alpha
        return c, gap * np.exp(b * x0**alpha), b, alpha
    if family == "mmf":
        delta = spread(1, 0.3, 3, log=False)
        kappa = 1 / half
        return c, c + gap * (1 + (kappa * x0) ** delta), kappa, delta
    if family == "janoschek":
        delta = spread(1, 0.2, 1.5, log=False)
        kappa = spread(0, 0.3, 30) / x_max**delta
        return c, c + gap * np.exp(kappa * x0**delta), kappa, delta
    if family == "weibull":
        delta = spread(1, 0.2, 1.5, log=False)
        kappa = spread(0, 0.3, 30) ** (1 / delta) / x_max
        return c, c + gap * np.exp((kappa * x0) ** delta), kappa, delta
    return c, gap * np.log(x0 + 1)


def start_and_asymptote(u: Array) -> tuple[Array, Array]:
    """The first point's value y0 and the asymptote c, both [n, 1], from u [n, 2] in (0, 1):
    c = 0.9 u_0², y0 = c + (0.98 - c) u_1^1.5."""
    c = 0.9 * u[:, :1] ** 2
    return c + (0.98 - c) * u[:, 1:2] ** 1.5, c


def grid(n: int, n_rows: int, log_probability: float, rng: np.random.Generator) -> tuple[Array, Array]:
    """Positions t [n, N] in [0, 1] (sorted, t_0 = 0, t_N-1 = 1) and raw x [n, N] (epochs from 1,
    or log-spaced training-set sizes)."""
    even = np.linspace(0, 1, n_rows)[None, :].repeat(n, 0)
    spread = np.sort(rng.uniform(0, 1, (n, n_rows)), axis=1)
    spread[:, 0], spread[:, -1] = 0.0, 1.0
    v = np.where(rng.uniform(size=(n, 1)) < 0.5, even, spread)
    t = v ** np.exp(rng.uniform(math.log(0.2), math.log(3), (n, 1)))  # [n, N]
    log_scale = rng.uniform(size=(n, 1)) < log_probability
    x0_sizes = np.exp(rng.uniform(math.log(4), math.log(256), (n, 1)))
    ratio = np.exp(rng.uniform(math.log(4), math.log(4096), (n, 1)))
    epochs_max = np.exp(rng.uniform(math.log(10), math.log(2000), (n, 1)))
    x = np.where(log_scale, x0_sizes * ratio**t, 1 + t * (epochs_max - 1))
    return t, x


def ill_behave(t: Array, y: Array, rng: np.random.Generator) -> Array:
    """Curves y [N] at positions t [N] with one random ill-behaviour (see ILL_BEHAVED)."""
    kind = ILL_BEHAVED[rng.integers(len(ILL_BEHAVED))]
    if kind in ("flat_start", "plateau"):  # the curve waits: evaluate it at an earlier position
        start = rng.uniform(0.05, 0.6)
        length = start if kind == "flat_start" else rng.uniform(0.05, 0.4)
        begin = 0.0 if kind == "flat_start" else rng.uniform(0.05, 0.7)
        end = min(begin + length, 1.0)
        waited = np.clip(t - begin, 0, end - begin)
        return np.interp(t - waited, t, y)
    level = y - y.min()
    if kind == "late_drop":  # e.g. a learning-rate decay: a further share of the error goes
        at, width = rng.uniform(0.3, 0.95), rng.uniform(0.005, 0.05)
        return y - rng.uniform(0.1, 0.6) * (y + 0.05 * level) / (1 + np.exp(-(t - at) / width))
    if kind == "peak":  # a bump, as in double descent
        at, width = rng.uniform(0.05, 0.9), rng.uniform(0.02, 0.2)
        return y + rng.uniform(0.02, 0.3) * (1 - y) * np.exp(-0.5 * ((t - at) / width) ** 2)
    at = rng.uniform(0.3, 0.95)  # late rise: overfitting
    return y + rng.uniform(0.01, 0.3) * (1 - y) * np.clip(t - at, 0, None) / (1 - at)


@dataclass(frozen=True)
class LearningCurvePrior(Prior):
    """Learning curves from parametric families with noise and ill-behaved shares (module doc).

    families: names from :data:`FAMILIES` (equally likely); log_scale_probability: share of
    curves over log-spaced training-set sizes (the rest over epochs); noise_low, noise_high:
    range of the noise's standard deviation at the first point; ill_behaved_probability: share
    of ill-behaved curves; combination_probability: share of convex combinations of two
    families.
    """

    name: ClassVar[str] = "learning_curve"

    families: tuple[str, ...] = tuple(FAMILIES)
    log_scale_probability: float = 0.5
    noise_low: float = 1e-4
    noise_high: float = 0.05
    ill_behaved_probability: float = 0.3
    combination_probability: float = 0.3

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        if not self.families or unknown:
            raise ValueError(f"families must name some of {sorted(FAMILIES)}, got {list(self.families)}")
        for key in ("log_scale_probability", "ill_behaved_probability", "combination_probability"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0 < self.noise_low <= self.noise_high:
            raise ValueError(f"need 0 < noise_low <= noise_high, got {self.noise_low}, {self.noise_high}")

    def check_features(self, n_features: int) -> None:
        """A curve has one input, its position; any n_features >= 1 holds it."""

    def draw(self, batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Batch:
        rng = numpy_rng(generator)
        t, _, y = self.curves(batch_size, n_rows, rng)
        x = torch.zeros(batch_size, n_rows, n_features)
        x[:, :, 0] = torch.as_tensor(t, dtype=torch.float32)
        return Batch(
            x=x, y=torch.as_tensor(y, dtype=torch.float32), used_features=torch.ones(batch_size, dtype=torch.long)
        )

    def clean_curves(self, n: int, n_rows: int, rng: np.random.Generator) -> tuple[Array, Array, Array, list[str]]:
        """Noise-free curves before ill-behaviour: t [n, N], raw x [n, N], y [n, N] and each
        curve's family (a '+'-joined pair for combinations)."""
        t, x = grid(n, n_rows, self.log_scale_probability, rng)
        x0, x_max = x[:, :1], x[:, -1:]
        y0, c = start_and_asymptote(rng.uniform(size=(n, 2)))
        names = [self.families[i] for i in rng.integers(len(self.families), size=n)]
        y = np.empty((n, n_rows))
        for family in sorted(set(names)):  # a fixed order: the draws must not depend on string hashing
            rows = np.array([name == family for name in names])
            u = rng.uniform(size=(int(rows.sum()), FAMILY_DIMS[family]))
            params = family_parameters(family, x0[rows], x_max[rows], y0[rows], c[rows], u)
            y[rows] = FAMILIES[family](x[rows], *params)
        combine = rng.uniform(size=n) < self.combination_probability
        for i in np.flatnonzero(combine):
            other = self.families[rng.integers(len(self.families))]
            u = rng.uniform(size=(1, FAMILY_DIMS[other]))
            params = family_parameters(other, x0[i : i + 1], x_max[i : i + 1], y0[i : i + 1], c[i : i + 1], u)
            w = rng.uniform()
            y[i] = w * y[i] + (1 - w) * FAMILIES[other](x[i : i + 1], *params)[0]
            names[i] = f"{names[i]}+{other}"
        return t, x, y, names

    def curves(self, n: int, n_rows: int, rng: np.random.Generator) -> tuple[Array, Array, Array]:
        """Positions t [n, N], raw x [n, N] and noisy curves y [n, N] (float64)."""
        t, x, y, _ = self.clean_curves(n, n_rows, rng)
        for i in np.flatnonzero(rng.uniform(size=n) < self.ill_behaved_probability):
            y[i] = ill_behave(t[i], y[i], rng)
        sigma = np.exp(rng.uniform(math.log(self.noise_low), math.log(self.noise_high), (n, 1)))
        decay = rng.uniform(0, 3, (n, 1))
        return t, x, y + sigma * np.exp(-decay * t) * rng.standard_normal((n, n_rows))
