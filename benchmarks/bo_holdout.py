""":mod:`pfn.bo` on functions ``pfn bench bo`` does not use (a check that its settings, chosen
on the benchmark's functions, carry over).

For each of BoTorch's functions below, 50 evaluations from 5 seeds of each arm: ``pfn.bo`` as
it is (the PFN, then a GP from ``gp_after`` points on), the PFN throughout (``gp_after=None``,
with the trust region), and BoTorch as ``pfn bench bo`` runs it. Printed per function: the mean
normalised regret (f(best) - f*) / (median f - f*), the median over 1,024 Sobol points of the
box, as in ``pfn bench bo``.

Run: ``python -m benchmarks.bo_holdout [MODEL]`` (default: the shipped ``bo``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks.bo import Problem, _botorch_function, _median_value, run_one
from pfn import bo
from pfn.inference import load

FUNCTIONS = (("Griewank", 5), ("StyblinskiTang", 4), ("Michalewicz", 5), ("DixonPrice", 4), ("SixHumpCamel", None))
ARMS = ("pfn.bo", "PFN only", "BoTorch")
SEEDS = 5
N_CALLS = 50


def regrets(
    model_name: str = "bo", seeds: int = SEEDS, n_calls: int = N_CALLS, arms: Sequence[str] = ARMS
) -> dict[str, dict[str, float]]:
    """{"Griewank-5": {arm: mean regret over the seeds}, ...} for the ``arms`` (of ARMS)."""
    model = load(model_name)
    out = {}
    for name, dim in FUNCTIONS:
        bounds, func, optimum = _botorch_function(name, dim)
        problem = Problem(name, bounds, func, optimum, median_points=10)
        median = _median_value(problem)
        out[f"{name}-{len(bounds)}"] = row = {}
        for arm in arms:
            if arm == "BoTorch":
                best = [min(run_one("botorch", problem, s, n_calls, model, 0.0)["values"]) for s in range(seeds)]
            else:
                gp_after = bo.DEFAULT_GP_AFTER if arm == "pfn.bo" else None
                best = [
                    bo.minimize(func, bounds, n_calls, random_state=s, model=model, gp_after=gp_after).fun
                    for s in range(seeds)
                ]
            row[arm] = float(np.mean(np.clip((np.array(best) - optimum) / (median - optimum), 0, None)))
    return out


def main(args: list[str]) -> None:
    torch.set_num_threads(1)
    figures = regrets(args[0] if args else "bo")
    for key, row in figures.items():
        print(f"{key:18s}  " + "  ".join(f"{arm} {value:.4f}" for arm, value in row.items()))
    print(f"{'mean':18s}  " + "  ".join(f"{arm} {np.mean([r[arm] for r in figures.values()]):.4f}" for arm in ARMS))


if __name__ == "__main__":
    main(sys.argv[1:])
