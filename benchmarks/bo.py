"""Bayesian optimisation with the PFN surrogate against its peers (``pfn bench bo``).

Every optimiser minimises the same problems from the same seeds in one run: synthetic
functions (BoTorch's implementations; noisy variants add Gaussian noise of 10% of the gap
between the function's median and its optimum) and hyperparameter tuning of LightGBM on
scikit-learn's breast-cancer table (3-fold cross-validated log loss). Peers: random search,
Optuna's TPE, BoTorch (SingleTaskGP with LogEI, as its tutorials set it up) and
scikit-optimize's gp_minimize (its defaults).

The score is the normalised regret of the best point evaluated so far, by its noise-free
value: (f(best) - f*) / (median f - f*), with the median over 4,096 Sobol points (64 for the
tuning task; 1: as good as a typical random point, 0: the optimum; for the tuning task f* is the
lowest loss any run found). Also the wall time of each model-based suggestion. Results merge
into ``--out``'s ``bo.json`` by (optimiser, problem, seed), so optimisers can run separately
(``--learners``); a run keeps the results it finds there. Writes ``bo.json``,
``bo_regret.png`` and ``bo_time.png``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import qmc

from benchmarks.common import environment, load_for, pyplot, record_quality
from pfn import bo
from pfn.checkpoint import write_json
from pfn.inference import PFN

METHODS = ("pfn", "random", "tpe", "botorch", "skopt")
N_CALLS = 50
NOISE_SHARE = 0.1


@dataclass(frozen=True)
class Problem:
    """A minimisation problem on a box: ``func`` takes a point [d] and returns its noise-free value."""

    name: str
    bounds: list[tuple[float, float]]
    func: Callable[[np.ndarray], float]
    optimum: float | None  # None: the best value any run found
    noisy: bool = False
    median_points: int = 12  # log2 of the Sobol points whose median value normalises the regret


def _botorch_function(name: str, dim: int | None) -> tuple[list[tuple[float, float]], Callable, float]:
    from botorch.test_functions import synthetic

    f = getattr(synthetic, name)(dim=dim) if dim else getattr(synthetic, name)()
    bounds = [(float(lo), float(hi)) for lo, hi in f.bounds.T.tolist()]

    def func(x: np.ndarray) -> float:
        return float(f.evaluate_true(torch.as_tensor(np.asarray(x, dtype=np.float64))[None])[0])

    return bounds, func, float(f.optimal_value)


def _lightgbm_cv() -> Problem:
    """LightGBM on breast cancer: learning rate (log), leaves, min child samples, row and column
    subsampling, L2 penalty (log); 3-fold cross-validated log loss."""
    import lightgbm
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import cross_val_score

    X, y = load_breast_cancer(return_X_y=True)
    bounds = [(-3.0, 0.0), (2.0, 64.0), (2.0, 50.0), (0.3, 1.0), (0.3, 1.0), (-3.0, 1.0)]

    def func(x: np.ndarray) -> float:
        model = lightgbm.LGBMClassifier(
            n_estimators=50,
            learning_rate=10 ** x[0],
            num_leaves=int(round(x[1])),
            min_child_samples=int(round(x[2])),
            subsample=x[3],
            subsample_freq=1,
            colsample_bytree=x[4],
            reg_lambda=10 ** x[5],
            n_jobs=1,
            verbose=-1,
            random_state=0,
        )
        return float(-cross_val_score(model, X, y, cv=3, scoring="neg_log_loss").mean())

    return Problem("lightgbm-cv", bounds, func, None, median_points=6)


def problems(quick: bool) -> list[Problem]:
    """The benchmark's problems, in the order they run (``quick``: Branin and noisy Branin)."""
    specs = [("Branin", None), ("Hartmann", 6), ("Ackley", 5), ("Rosenbrock", 4), ("Levy", 6), ("Hartmann", 3)]
    out = []
    for name, dim in specs[:1] if quick else specs:
        bounds, func, optimum = _botorch_function(name, dim)
        out.append(Problem(name.lower() + (f"-{dim}" if dim else ""), bounds, func, optimum))
    out.insert(1, Problem("branin-noisy", out[0].bounds, out[0].func, out[0].optimum, noisy=True))
    if not quick:
        out.insert(3, _lightgbm_cv())
        out.append(Problem("hartmann-6-noisy", out[2].bounds, out[2].func, out[2].optimum, noisy=True))
    return out


def _median_value(problem: Problem) -> float:
    """The median noise-free value over 2^median_points scrambled Sobol points (seed 0) of the box."""
    lo, hi = np.array(problem.bounds).T
    points = qmc.scale(qmc.Sobol(len(lo), seed=0).random_base2(problem.median_points), lo, hi)
    return float(np.median([problem.func(p) for p in points]))


# ---------------------------------------------------------------- optimisers


class _Stopwatch:
    """Wall and process CPU seconds of each timed span: the suggestions of one optimisation (the
    run is one thread, so process CPU time is the optimiser's own work, whatever else the
    machine runs)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def start(self) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def stop(self, carry: tuple[float, float] = (0.0, 0.0)) -> None:
        """Record the span since start(), plus ``carry`` (wall, CPU) seconds timed before it."""
        self.wall.append(carry[0] + time.perf_counter() - self._start[0])
        self.cpu.append(carry[1] + time.process_time() - self._start[1])

    def lap(self) -> tuple[float, float]:
        """The (wall, CPU) seconds since start(), not recorded."""
        return time.perf_counter() - self._start[0], time.process_time() - self._start[1]


def _run_pfn(problem: Problem, objective: Callable, seed: int, n_calls: int, model: PFN) -> _Stopwatch:
    opt = bo.Optimizer(problem.bounds, model=model, random_state=seed)
    return _ask_tell(opt, objective, n_calls, opt.n_initial_points)


def _run_random(problem: Problem, objective: Callable, seed: int, n_calls: int, model: PFN) -> _Stopwatch:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(problem.bounds).T
    for _ in range(n_calls):
        objective(list(lo + (hi - lo) * rng.random(len(lo))))
    return _Stopwatch()


def _run_tpe(problem: Problem, objective: Callable, seed: int, n_calls: int, model: PFN) -> _Stopwatch:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    watch = _Stopwatch()

    def func(trial: Any) -> float:
        x = [trial.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(problem.bounds)]
        if trial.number >= 10:  # TPE's own startup trials are random
            watch.stop()
        return objective(x)

    for _ in range(n_calls):
        watch.start()
        study.optimize(func, n_trials=1)
    return watch


def _run_botorch(problem: Problem, objective: Callable, seed: int, n_calls: int, model: PFN) -> _Stopwatch:
    from botorch.acquisition.analytic import LogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood

    d = len(problem.bounds)
    bounds = torch.tensor(problem.bounds, dtype=torch.float64).T  # [2, d]
    n_init = max(5, 2 * d)  # Ax's Sobol rule
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Sobol's note on sample sizes that are not powers of 2
        x = qmc.scale(qmc.Sobol(d, seed=seed).random(n_init), *bounds.numpy())
    ys = [objective(list(p)) for p in x]
    xs = torch.as_tensor(x)
    watch = _Stopwatch()
    for _ in range(n_calls - n_init):
        watch.start()
        gp = SingleTaskGP(
            xs,
            -torch.tensor(ys, dtype=torch.float64)[:, None],
            input_transform=Normalize(d),
            outcome_transform=Standardize(1),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
            acq = LogExpectedImprovement(gp, best_f=-min(ys))
            candidate, _ = optimize_acqf(acq, bounds=bounds, q=1, num_restarts=10, raw_samples=512)
        watch.stop()
        ys.append(objective(candidate[0].tolist()))
        xs = torch.cat([xs, candidate])
    return watch


def _run_skopt(problem: Problem, objective: Callable, seed: int, n_calls: int, model: PFN) -> _Stopwatch:
    from skopt import Optimizer as SkoptOptimizer

    opt = SkoptOptimizer(problem.bounds, base_estimator="GP", random_state=seed)  # gp_minimize's defaults
    return _ask_tell(opt, objective, n_calls, 10)


def _ask_tell(opt: Any, objective: Callable, n_calls: int, n_initial: int) -> _Stopwatch:
    """Run an ask-and-tell optimiser; the seconds of each model-based suggestion: the ask and
    the tell before it (scikit-optimize fits its model in tell, pfn.bo works in ask)."""
    watch, told = _Stopwatch(), (0.0, 0.0)
    for i in range(n_calls):
        watch.start()
        x = opt.ask()
        if i >= n_initial:
            watch.stop(told)
        y = objective(x)
        watch.start()
        opt.tell(x, y)
        told = watch.lap()
    return watch


RUNNERS = {"pfn": _run_pfn, "random": _run_random, "tpe": _run_tpe, "botorch": _run_botorch, "skopt": _run_skopt}


def run_one(method: str, problem: Problem, seed: int, n_calls: int, model: PFN, noise: float) -> dict[str, Any]:
    """One optimisation: the noise-free values of the evaluated points in order, and the wall
    and process CPU seconds per model-based suggestion."""
    rng = np.random.default_rng(10_000 + seed)
    values: list[float] = []

    def objective(x: list[float]) -> float:
        value = problem.func(np.asarray(x, dtype=np.float64))
        values.append(value)
        return value + noise * float(rng.standard_normal()) if problem.noisy else value

    watch = RUNNERS[method](problem, objective, seed, n_calls, model)
    return {"values": values[:n_calls], "suggest_s": watch.wall, "suggest_cpu_s": watch.cpu}


# ---------------------------------------------------------------- the run


def run(
    out: Path,
    quick: bool = False,
    model: str | None = None,
    repeats: int | None = None,
    learner_names: list[str] | None = None,
    update_card: bool = False,
) -> dict[str, Any]:
    """Run every optimiser (or ``learner_names``) on every problem for ``repeats`` seeds (default
    10; ``quick``: 2 seeds, 12 evaluations, Branin and noisy Branin, no LightGBM)."""
    torch.set_num_threads(1)
    methods = list(learner_names or METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown optimiser(s) {unknown}; known: {list(METHODS)}")
    seeds = range(repeats or (2 if quick else 10))
    n_calls = 12 if quick else N_CALLS
    name = model or "bo"
    surrogate = load_for(name, "standardized", "bo")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bo.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    runs: dict[str, Any] = previous.get("runs", {}) if previous.get("n_calls") == n_calls else {}
    medians: dict[str, float] = previous.get("medians", {})
    for problem in problems(quick):
        if problem.name.removesuffix("-noisy") not in medians:
            medians[problem.name.removesuffix("-noisy")] = _median_value(problem)
        median = medians[problem.name.removesuffix("-noisy")]
        noise = NOISE_SHARE * (median - (problem.optimum if problem.optimum is not None else median))
        for seed in seeds:
            for method in methods:
                key = f"{method}/{problem.name}/{seed}"
                if key in runs:  # kept from an earlier run into --out (delete bo.json to redo)
                    continue
                runs[key] = run_one(method, problem, seed, n_calls, surrogate, noise)
                print(f"{key}: best {min(runs[key]['values']):.4g}", flush=True)
                write_json(path, {"n_calls": n_calls, "medians": medians, "runs": runs})
    result = {"environment": environment(), "model": name, "n_calls": n_calls, "medians": medians, "runs": runs}
    result["summary"] = summarise(result, [p.name for p in problems(quick)])
    write_json(path, result)
    plot(result, out)
    summary = result["summary"]
    if update_card and not quick and "pfn" in summary["optimisers"]:
        brief = {
            m: {k: row[k] for k in ("mean_regret", "median_suggest_s", "median_suggest_cpu_s")}
            for m, row in summary["optimisers"].items()
        }
        record_quality(
            name,
            "bo",
            {"command": result["environment"]["command"], **{k: summary[k] for k in ("n_calls", "problems", "seeds")}}
            | {"optimisers": brief},
        )
    return result


def summarise(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Per optimiser: mean normalised regret after n_calls evaluations (over the problems every
    optimiser ran from the same seeds, each the mean over seeds), per problem, the regret curve
    and the median seconds per suggestion."""
    runs, medians, n_calls = result["runs"], result["medians"], result["n_calls"]
    optimisers = sorted({k.split("/")[0] for k in runs}, key=METHODS.index)
    seeds = {(m, n): {k.split("/")[2] for k in runs if k.startswith(f"{m}/{n}/")} for m in optimisers for n in names}
    common = [
        n for n in names if seeds[optimisers[0], n] and all(seeds[m, n] == seeds[optimisers[0], n] for m in optimisers)
    ]
    optimum = {}
    for name in common:  # the tuning task's optimum: the lowest value any run found
        known = _known_optimum(name)
        optimum[name] = (
            known if known is not None else min(min(r["values"]) for k, r in runs.items() if f"/{name}/" in k)
        )
    summary: dict[str, Any] = {
        "n_calls": n_calls,
        "problems": common,  # those every optimiser ran from the same seeds; the means are over these
        "seeds": {n: len(seeds[optimisers[0], n]) for n in common},
        "optimisers": {},
    }
    for method in optimisers:
        curves, per_problem, times, cpu_times = {}, {}, [], []
        for name in common:
            base = medians[name.removesuffix("-noisy")]
            rows = [r for k, r in runs.items() if k.startswith(f"{method}/{name}/")]
            best = np.minimum.accumulate(np.array([r["values"] for r in rows]), axis=1)  # [seeds, n_calls]
            regret = np.clip((best - optimum[name]) / (base - optimum[name]), 0, None)
            curves[name] = regret.mean(0).tolist()
            per_problem[name] = {"regret": float(regret[:, -1].mean()), "seeds": len(rows)}
            times += [t for r in rows for t in r["suggest_s"]]
            cpu_times += [t for r in rows for t in r.get("suggest_cpu_s", [])]  # runs before CPU timing: none
        if per_problem:
            summary["optimisers"][method] = {
                "mean_regret": float(np.mean([p["regret"] for p in per_problem.values()])),
                "median_suggest_s": float(np.median(times)) if times else 0.0,
                "median_suggest_cpu_s": float(np.median(cpu_times)) if cpu_times else None,
                "problems": per_problem,
                "curve": np.mean(list(curves.values()), axis=0).tolist(),
            }
    return summary


def _known_optimum(name: str) -> float | None:
    if name == "lightgbm-cv":
        return None
    spec = name.removesuffix("-noisy").split("-")
    return _botorch_function(spec[0].capitalize(), int(spec[1]) if len(spec) > 1 else None)[2]


def plot(result: dict[str, Any], out: Path) -> None:
    """Mean normalised regret against evaluations, and seconds per suggestion, per optimiser."""
    plt = pyplot()
    optimisers = result["summary"]["optimisers"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, row in optimisers.items():
        ax.plot(range(1, len(row["curve"]) + 1), row["curve"], label=method)
    ax.set_yscale("log")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("mean normalised regret")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bo_regret.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    timed = {m: r for m, r in optimisers.items() if r["median_suggest_s"] > 0}
    cpu = all(r.get("median_suggest_cpu_s") for r in timed.values())  # runs from before CPU timing: wall
    key = "median_suggest_cpu_s" if cpu else "median_suggest_s"
    ax.barh(list(timed), [r[key] for r in timed.values()])
    ax.set_xscale("log")
    ax.set_xlabel(f"median {'CPU ' if cpu else ''}seconds per suggestion")
    fig.tight_layout()
    fig.savefig(out / "bo_time.png", dpi=120)
    plt.close(fig)
