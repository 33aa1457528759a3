"""How well a BO surrogate knows the function (a diagnostic of ``pfn bench bo``).

- ``spread``: the surrogate sees n scrambled-Sobol points with their values (standardised as
  :class:`pfn.bo.Optimizer` does) and predicts at those same points: a GP on noise-free values
  would put its mean on each value with a spread near zero. Per function and n: the mean
  absolute error of the predictive mean and the mean predictive standard deviation.
- ``held_out``: n uniform random points, their values z-scored; the mean squared error of the
  predictive mean at 300 other random points, for the surrogate and for BoTorch's SingleTaskGP
  with its hyperparameters fitted (5 random designs per function and n).

- ``on_prior``: the same for functions of the ``bo`` prior itself (GP draws of 3 and 6
  dimensions with ARD lengthscales, without warping or bowl, noise 0.001; 10 each), against the
  fitted GP: how precise the surrogate is where nothing is out of its prior.

All in standardised units. Run: ``python -m benchmarks.bo_spread MODEL [MODEL ...]`` (a shipped
name or a card path); ``--held-out`` or ``--on-prior`` prints that table instead.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from scipy.stats import qmc

from benchmarks.bo import _botorch_function
from pfn.bo import _power_standardise
from pfn.inference import load

FUNCTIONS = (("Hartmann", 3), ("Hartmann", 6), ("Branin", None), ("Levy", 6))
POINTS = (15, 40)


def _cases() -> Iterator[tuple[str, np.ndarray, np.ndarray, Callable[[np.ndarray], float], int]]:
    """(label, lower and upper bounds [d] each, the function, n) for every function and n."""
    for name, dim in FUNCTIONS:
        bounds, func, _ = _botorch_function(name, dim)
        lo, hi = np.array(bounds).T
        for n in POINTS:
            yield f"{name}-{len(lo)}, n={n}", lo, hi, func, n


def spread(model_name: str) -> dict[str, tuple[float, float]]:
    """{"Hartmann-6, n=40": (mean |mean - value|, mean standard deviation), ...} for the model."""
    model = load(model_name)
    out = {}
    for label, lo, hi, func, n in _cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Sobol's note on sample sizes that are not powers of 2
            u = qmc.Sobol(len(lo), seed=1).random(n)  # [n, d] in the unit cube
        z = _power_standardise(np.array([func(p) for p in lo + (hi - lo) * u]))  # [n]
        dist = model.predict(u, z, u)
        error = float(np.abs(dist.mean().numpy() - z).mean())
        out[label] = (error, float(dist.variance().sqrt().numpy().mean()))
    return out


def held_out(model_name: str, designs: int = 5, test_points: int = 300) -> dict[str, tuple[float, float]]:
    """{"Hartmann-3, n=40": (the surrogate's mean squared error, the fitted GP's), ...}."""
    model = load(model_name)
    out = {}
    for label, lo, hi, func, n in _cases():
        errors = []
        for seed in range(designs):
            rng = np.random.default_rng(seed)
            u, q = rng.random((n, len(lo))), rng.random((test_points, len(lo)))  # [n, d], [t, d]
            y, yq = (np.array([func(p) for p in lo + (hi - lo) * points]) for points in (u, q))
            errors.append(_errors(model, u, y, q, yq))
        out[label] = tuple(float(e) for e in np.mean(errors, axis=0))
    return out


def on_prior(
    model_name: str, functions: int = 10, n: int = 40, test_points: int = 300
) -> dict[str, tuple[float, float]]:
    """{"bo prior, d=3, n=40": (the surrogate's mean squared error, the fitted GP's), ...}."""
    from priors.bo import BOGPPrior

    model = load(model_name)
    out = {}
    for d in (3, 6):
        prior = BOGPPrior(min_features=d, max_features=d, warp_probability=0.0, bowl_probability=0.0, noise=0.001)
        batch = prior.draw(functions, n + test_points, d, torch.Generator().manual_seed(0))
        x, y = batch.x.double().numpy(), batch.y.double().numpy()  # [B, N, d], [B, N]
        errors = [_errors(model, x[i, :n], y[i, :n], x[i, n:], y[i, n:]) for i in range(functions)]
        out[f"bo prior, d={d}, n={n}"] = tuple(float(e) for e in np.mean(errors, axis=0))
    return out


def _errors(model, u: np.ndarray, y: np.ndarray, q: np.ndarray, yq: np.ndarray) -> tuple[float, float]:
    """Mean squared errors at the points q [t, d] of the surrogate's and a fitted GP's means, given
    the points u [n, d] with values y [n] (all z-scored by y's mean and deviation)."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    z, zq = (y - y.mean()) / y.std(), (yq - y.mean()) / y.std()
    pfn_mean = model.predict(u, z, q).mean().numpy()
    gp = SingleTaskGP(torch.as_tensor(u), torch.as_tensor(z)[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BoTorch's notes on input scaling
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    with torch.no_grad():
        gp_mean = gp.posterior(torch.as_tensor(q)).mean[:, 0].numpy()
    return float(np.mean((pfn_mean - zq) ** 2)), float(np.mean((gp_mean - zq) ** 2))


def main(args: list[str]) -> None:
    torch.set_num_threads(1)
    names = [a for a in args if a not in ("--held-out", "--on-prior")] or ["bo"]
    for name in names:
        if "--held-out" in args or "--on-prior" in args:
            table = held_out(name) if "--held-out" in args else on_prior(name)
            for key, (pfn_error, gp_error) in table.items():
                print(f"{name}  {key:18s}  mse {pfn_error:.3f}  fitted GP {gp_error:.3f}")
        else:
            for key, (error, std) in spread(name).items():
                print(f"{name}  {key:18s}  error {error:.3f}  std {std:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
