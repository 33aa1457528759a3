"""The trust region of :mod:`pfn.bo` on functions ``pfn bench bo`` does not use (a check that its
settings, chosen on the benchmark's functions, carry over).

For each of BoTorch's functions below, :func:`pfn.bo.minimize` runs 50 evaluations from 5
seeds with and without the trust region; printed per function: the mean normalised regret
(f(best) - f*) / (median f - f*), the median over 1,024 Sobol points of the box, as in
``pfn bench bo``.

Run: ``python -m benchmarks.bo_holdout [MODEL]`` (default: the shipped ``bo``).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from benchmarks.bo import Problem, _botorch_function, _median_value
from pfn import bo
from pfn.inference import load

FUNCTIONS = (("Griewank", 5), ("StyblinskiTang", 4), ("Michalewicz", 5), ("DixonPrice", 4), ("SixHumpCamel", None))
SEEDS = 5
N_CALLS = 50


def regrets(model_name: str = "bo", seeds: int = SEEDS, n_calls: int = N_CALLS) -> dict[str, tuple[float, float]]:
    """{"Griewank-5": (mean regret with the trust region, without), ...}."""
    model = load(model_name)
    out = {}
    for name, dim in FUNCTIONS:
        bounds, func, optimum = _botorch_function(name, dim)
        median = _median_value(Problem(name, bounds, func, optimum, median_points=10))
        pair = []
        for trust_region in (True, False):
            best = [
                bo.minimize(func, bounds, n_calls, random_state=s, model=model, trust_region=trust_region).fun
                for s in range(seeds)
            ]
            pair.append(float(np.mean(np.clip((np.array(best) - optimum) / (median - optimum), 0, None))))
        out[f"{name}-{len(bounds)}"] = (pair[0], pair[1])
    return out


def main(args: list[str]) -> None:
    torch.set_num_threads(1)
    figures = regrets(args[0] if args else "bo")
    for key, (with_region, without) in figures.items():
        print(f"{key:18s}  trust region {with_region:.4f}  whole cube {without:.4f}")
    means = np.mean(list(figures.values()), axis=0)
    print(f"{'mean':18s}  trust region {means[0]:.4f}  whole cube {means[1]:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
