"""How sure a BO surrogate is at the points it has evaluated (a diagnostic of ``pfn bench bo``).

For each test function, the surrogate sees n scrambled-Sobol points with their values
(standardised as :class:`pfn.bo.Optimizer` does) and predicts at those same points: a GP on
noise-free values would put its mean on each value with a spread near zero. Printed per
function and n: the mean absolute error of the predictive mean and the mean predictive
standard deviation, in standardised units.

Run: ``python -m benchmarks.bo_spread MODEL [MODEL ...]`` (a shipped name or a card path).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
from scipy.stats import qmc

from benchmarks.bo import _botorch_function
from pfn.bo import _power_standardise
from pfn.inference import load

FUNCTIONS = (("Hartmann", 3), ("Hartmann", 6), ("Branin", None), ("Levy", 6))
POINTS = (15, 40)


def spread(model_name: str) -> dict[str, tuple[float, float]]:
    """{"Hartmann-6, n=40": (mean |mean - value|, mean standard deviation), ...} for the model."""
    model = load(model_name)
    out = {}
    for name, dim in FUNCTIONS:
        bounds, func, _ = _botorch_function(name, dim)
        lo, hi = np.array(bounds).T
        for n in POINTS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Sobol's note on sample sizes that are not powers of 2
                u = qmc.Sobol(len(lo), seed=1).random(n)  # [n, d] in the unit cube
            z = _power_standardise(np.array([func(p) for p in lo + (hi - lo) * u]))  # [n]
            dist = model.predict(u, z, u)
            error = float(np.abs(dist.mean().numpy() - z).mean())
            out[f"{name}-{len(lo)}, n={n}"] = (error, float(dist.variance().sqrt().numpy().mean()))
    return out


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        for key, (error, std) in spread(name).items():
            print(f"{name}  {key:18s}  error {error:.3f}  std {std:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["bo"])
