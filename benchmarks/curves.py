"""Learning-curve extrapolation (``pfn bench curves``): the ``curves`` checkpoint through
:func:`pfn.curves.extrapolate`.

(a) Fresh curves from the checkpoint's own prior (a seed no training step uses), observed up to
4, 8 or 16 of 32 points: the log-likelihood of the remaining points under the PFN, under MCMC
(emcee) over the same parametric families with the prior's own parameter distributions and
noise model (one chain per family, the families weighted by BIC), and under least-squares fits
(scipy's curve_fit) of pow3, pow4, mmf4 and wbl4 with Gaussian residuals; process CPU time per
curve (one thread; on a shared machine CPU time is steadier than wall time).

(b) Real curves of LCDB 1.0 (the ``lcdb`` package's ``database-accuracy.csv``): a curve is the
validation error (1 - accuracy) of one learner on one OpenML dataset at each training-set size
(anchor), averaged over LCDB's seeds. Observing the anchors up to 1/16, 1/8 or 1/4 of the largest
anchor, each method predicts the error at the largest: the PFN (median; x_scale="log"), the
least-squares fits (their predictions clipped to [0, 1]; a fit that fails predicts the last
value) and the last observed value. Mean absolute error, mean log-likelihood and the coverage of
90% intervals (the fits': Gaussian with the residual standard deviation). ``split`` selects the
datasets with odd (development) or even (held-out) OpenML ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import logsumexp

import priors
from benchmarks.common import environment, load_for, pyplot, record_quality
from pfn.checkpoint import write_json
from pfn.curves import extrapolate
from priors.curves import FAMILIES, FAMILY_DIMS, LearningCurvePrior, family_parameters, start_and_asymptote

SEED = 30_303_030
N_ROWS = 32
PRIOR_CUTS = (4, 8, 16)
LCDB_CUTS = (16, 8, 4)  # observe anchors up to largest / cut
FITS = {"pow3": "pow3", "pow4": "pow4", "mmf4": "mmf", "wbl4": "weibull"}
SPLITS = ("odd", "even")
Z90 = 1.6448536269514722
BASELINES_VERSION = "1"  # change when a baseline's code changes: stored results are then recomputed


# ---------------------------------------------------------------- baselines, kept between runs


class BaselineStore:
    """The baselines' results (MCMC, least-squares fits), which do not depend on the PFN, kept in
    OUT/baselines.json with the CPU seconds each took, keyed by a digest of the method and its
    inputs (and BASELINES_VERSION): a rerun into the same folder, e.g. for a new checkpoint,
    reuses them instead of spending the same CPU time again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.reused = 0

    def get(self, method: str, compute: Any, *inputs: Any) -> tuple[Any, float]:
        """(result, CPU seconds) of ``compute()``, from the store when these inputs were seen."""
        digest = hashlib.sha256(f"{BASELINES_VERSION}/{method}".encode())
        for value in inputs:
            digest.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
        key = digest.hexdigest()
        if key in self.entries:
            self.reused += 1
            return self.entries[key]["result"], self.entries[key]["seconds"]
        start = time.process_time()
        result = compute()
        seconds = time.process_time() - start
        self.entries[key] = {"result": result, "seconds": seconds}
        if len(self.entries) % 500 == 0:
            self.save()  # a run stopped midway keeps most of its work
        return result, seconds

    def save(self) -> None:
        write_json(self.path, self.entries)


# ---------------------------------------------------------------- least-squares fits


def fit_curve(family: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Least-squares parameters of FAMILIES[family] on x' = x / x[0] (from the first of a few
    starts that converges) and the residual standard deviation; None if every start fails."""
    from scipy.optimize import curve_fit

    f, scaled = FAMILIES[family], x / x[0]
    top, last = float(y[0]), float(y[-1])
    starts, bounds = {
        "pow3": ([last, top - last, 0.5], ([-1, -np.inf, 0], [2, np.inf, 5])),
        "pow4": ([last, top - last, 1.0, 0.5], ([-1, -np.inf, -0.99, 0], [2, np.inf, 1e3, 5])),
        "mmf": ([last, top, 0.5, 1.0], ([-1, -np.inf, 1e-6, 0], [2, np.inf, 1e3, 10])),
        "weibull": ([last, top, 0.5, 1.0], ([-1, -np.inf, 1e-6, 0], [2, np.inf, 1e3, 10])),
    }[family]
    best, best_cost = None, np.inf
    for shift in (1.0, 0.5, 2.0):
        p0 = np.clip([v * shift if k > 1 else v for k, v in enumerate(starts)], bounds[0], bounds[1])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = curve_fit(f, scaled, y, p0=p0, bounds=bounds, maxfev=4000)
        except (RuntimeError, ValueError):
            continue
        cost = float(((f(scaled, *params) - y) ** 2).sum())
        if np.isfinite(cost) and cost < best_cost:
            best, best_cost = params, cost
            break
    if best is None:
        return None
    return best, math.sqrt(best_cost / max(len(y) - len(best), 1))


def fit_predict(family: str, x: np.ndarray, y: np.ndarray, query: np.ndarray) -> tuple[list[float], float, bool]:
    """Predictions at query (clipped to [-0.1, 1.1] on the error scale), the residual
    standard deviation (at least 1e-3) and whether the fit succeeded (else the last value)."""
    fitted = fit_curve(family, x, y)
    if fitted is None:
        return [float(y[-1])] * len(query), max(float(np.std(y)), 1e-3), False
    params, sigma = fitted
    with np.errstate(all="ignore"):
        prediction = FAMILIES[family](query / x[0], *params)
    prediction = np.where(np.isfinite(prediction), prediction, y[-1])
    return np.clip(prediction, -0.1, 1.1).tolist(), max(sigma, 1e-3), True


def gaussian_logpdf(y: np.ndarray, mean: np.ndarray, sd: np.ndarray | float) -> np.ndarray:
    return -0.5 * ((y - mean) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


# ---------------------------------------------------------------- MCMC over the prior's families


def mcmc_logpdf(
    prior: LearningCurvePrior,
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    n_obs: int,
    steps: int,
    seed: int,
) -> np.ndarray:
    """log p(y[n_obs:] | y[:n_obs]) per held-out point under the prior's clean families: one
    emcee chain (32 walkers, ``steps`` steps, the second half kept) per family over the unit
    cube the prior maps to parameters (y0 and c, the family's own numbers, the noise's σ and
    decay), the families mixed with BIC weights."""
    import emcee

    x0, x_max = x[:1][None], x[-1:][None]
    lo, hi = math.log(prior.noise_low), math.log(prior.noise_high)

    def curves(theta: np.ndarray, family: str, at: slice) -> tuple[np.ndarray, np.ndarray]:
        """Means and noise sds [W, points] of parameter vectors theta [W, D] at x[at]."""
        y0, c = start_and_asymptote(theta[:, :2])
        k = FAMILY_DIMS[family]
        params = family_parameters(family, x0, x_max, y0, c, theta[:, 2 : 2 + k])
        with np.errstate(all="ignore"):
            mean = FAMILIES[family](x[None, at], *params)
        sigma = np.exp(lo + theta[:, 2 + k : 3 + k] * (hi - lo))
        return mean, sigma * np.exp(-3 * theta[:, 3 + k : 4 + k] * t[None, at])

    def log_prob(theta: np.ndarray, family: str) -> np.ndarray:
        inside = ((theta > 0) & (theta < 1)).all(1)
        mean, sd = curves(np.clip(theta, 1e-9, 1 - 1e-9), family, slice(0, n_obs))
        value = gaussian_logpdf(y[None, :n_obs], mean, sd).sum(1)
        return np.where(inside & np.isfinite(value), value, -np.inf)

    rng = np.random.default_rng(seed)
    scores, evidence = [], []
    for family in prior.families:
        dims = 4 + FAMILY_DIMS[family]
        sampler = emcee.EnsembleSampler(32, dims, log_prob, args=(family,), vectorize=True)
        sampler.random_state = rng.bit_generator.state
        sampler.run_mcmc(rng.uniform(size=(32, dims)), steps)
        chain = sampler.get_chain(discard=steps // 2, flat=True)[::4]  # [S, D]
        mean, sd = curves(chain, family, slice(n_obs, None))
        scores.append(logsumexp(gaussian_logpdf(y[None, n_obs:], mean, sd), axis=0) - math.log(len(chain)))
        evidence.append(float(sampler.get_log_prob().max()) - 0.5 * dims * math.log(n_obs))
    weights = np.array(evidence) - logsumexp(evidence)
    return logsumexp(np.array(scores) + weights[:, None], axis=0)


def prior_benchmark(model: Any, n_curves: int, steps: int, store: BaselineStore) -> dict[str, Any]:
    """Part (a): held-out log-likelihood and seconds per curve of the PFN, MCMC and the fits."""
    prior = priors.from_dict(model.card["prior"])
    t, x, y = prior.curves(n_curves, N_ROWS, np.random.default_rng(SEED))
    # warm-up, untimed, of all that is timed below: first calls are slow
    extrapolate(x[0, :2], y[0, :2], x[0, 2:], x_scale="linear", model=model).logpdf(y[0, 2:])
    methods = ("PFN", "MCMC", *FITS)
    loglik: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    per_cut: dict[str, dict[str, list[float]]] = {str(c): {m: [] for m in methods} for c in PRIOR_CUTS}
    for i in range(n_curves):
        n_obs = PRIOR_CUTS[i % len(PRIOR_CUTS)]
        start = time.process_time()
        scale = "log" if x[i, -1] / x[i, 0] > 1 and _is_geometric(x[i]) else "linear"
        dist = extrapolate(x[i, :n_obs], y[i, :n_obs], x[i, n_obs:], x_scale=scale, model=model)
        found = {"PFN": dist.logpdf(y[i, n_obs:])}
        seconds["PFN"] += time.process_time() - start
        mcmc, spent = store.get(
            f"mcmc/{steps}/{n_obs}/{SEED + i}/{prior.to_dict()}",
            lambda: mcmc_logpdf(prior, t[i], x[i], y[i], n_obs, steps, SEED + i).tolist(),  # noqa: B023
            t[i],
            x[i],
            y[i],
        )
        found["MCMC"], seconds["MCMC"] = np.array(mcmc), seconds["MCMC"] + spent
        for name, family in FITS.items():
            (mean, sd, _), spent = store.get(
                f"fit/{family}",
                lambda family=family: fit_predict(family, x[i, :n_obs], y[i, :n_obs], x[i, n_obs:]),  # noqa: B023
                x[i, :n_obs],
                y[i, :n_obs],
                x[i, n_obs:],
            )
            found[name] = gaussian_logpdf(y[i, n_obs:], np.array(mean), sd)
            seconds[name] += spent
        for m in methods:
            loglik[m].append(float(np.mean(found[m])))
            per_cut[str(n_obs)][m].append(float(np.mean(found[m])))
    result = {
        "n_curves": n_curves,
        "mcmc_steps": steps,
        "nll": {m: -float(np.mean(v)) for m, v in loglik.items()},
        "nll_standard_error": {m: float(np.std(v) / math.sqrt(len(v))) for m, v in loglik.items()},
        "nll_by_observed": {c: {m: -float(np.mean(v)) for m, v in d.items()} for c, d in per_cut.items()},
        "seconds_per_curve": {m: s / n_curves for m, s in seconds.items()},
    }
    result["speedup_over_mcmc"] = result["seconds_per_curve"]["MCMC"] / result["seconds_per_curve"]["PFN"]
    result["target_met"] = bool(result["nll"]["PFN"] < result["nll"]["MCMC"] and result["speedup_over_mcmc"] >= 1000)
    return result


def _is_geometric(x: np.ndarray) -> bool:
    """Whether a prior grid was drawn log-spaced (training-set sizes) rather than as epochs."""
    return bool(x[0] > 1.0 + 1e-9)


# ---------------------------------------------------------------- LCDB


def lcdb_csv(data: str | None) -> Path:
    """The LCDB accuracy table: ``data`` (a CSV path) or the one inside the installed lcdb package."""
    if data:
        return Path(data)
    spec = importlib.util.find_spec("lcdb")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "benchmark 'curves' needs LCDB: pip install lcdb (or pass --data database-accuracy.csv)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "database-accuracy.csv"


def lcdb_curves(path: Path, split: str) -> list[dict[str, Any]]:
    """The curves of the datasets in ``split``: openmlid, learner, anchors and mean validation error."""
    import pandas as pd

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    table = pd.read_csv(path, usecols=["openmlid", "learner", "size_train", "score_valid"])
    table = table[table.openmlid % 2 == (1 if split == "odd" else 0)]
    table = table.assign(error=1 - table.score_valid).groupby(["openmlid", "learner", "size_train"]).error.mean()
    curves = []
    for (openmlid, learner), curve in table.groupby(level=[0, 1]):
        sizes = curve.index.get_level_values("size_train").to_numpy(dtype=np.float64)
        errors = curve.to_numpy(dtype=np.float64)
        if np.isfinite(errors).all():
            curves.append({"openmlid": int(openmlid), "learner": str(learner), "x": sizes, "y": errors})
    return curves


def lcdb_benchmark(model: Any, curves: list[dict[str, Any]], store: BaselineStore) -> dict[str, Any]:
    """Part (b): per cut, MAE, log-likelihood and 90% coverage at the largest anchor."""
    methods = ("PFN", *FITS, "last value")
    out: dict[str, Any] = {}
    examples = []
    shown = set(np.linspace(0, len(curves) - 1, 12).round().astype(int).tolist())
    for cut in LCDB_CUTS:
        error: dict[str, list[float]] = {m: [] for m in methods}
        loglik: dict[str, list[float]] = {m: [] for m in methods if m != "last value"}
        covered: dict[str, list[bool]] = {m: [] for m in methods if m != "last value"}
        failed = {m: 0 for m in FITS}
        for index, curve in enumerate(curves):
            x, y = curve["x"], curve["y"]
            seen = x <= x[-1] / cut
            if seen.sum() < 2:
                continue
            xo, yo, target = x[seen], y[seen], y[-1]
            dist = extrapolate(xo, yo, x[-1:], kind="error", x_scale="log", model=model)
            lower, upper = dist.interval(0.9)
            error["PFN"].append(abs(float(dist.median()[0]) - target))
            loglik["PFN"].append(float(dist.logpdf(target)[0]))
            covered["PFN"].append(bool(lower[0] <= target <= upper[0]))
            for name, family in FITS.items():
                (mean, sd, ok), _ = store.get(
                    f"fit/{family}",
                    lambda family=family: fit_predict(family, xo, yo, x[-1:]),  # noqa: B023
                    xo,
                    yo,
                    x[-1:],
                )
                prediction = float(np.clip(mean[0], 0, 1))
                failed[name] += not ok
                error[name].append(abs(prediction - target))
                loglik[name].append(float(gaussian_logpdf(target, prediction, sd)))
                covered[name].append(bool(abs(target - prediction) <= Z90 * sd))
            error["last value"].append(abs(yo[-1] - target))
            if cut == 8 and index in shown:
                examples.append({**curve, "median": float(dist.median()[0]), "interval": [lower[0], upper[0]]})
        mae = {m: float(np.mean(v)) for m, v in error.items()}
        best = min(FITS, key=lambda m: mae[m])
        out[f"1/{cut}"] = {
            "n_curves": len(error["PFN"]),
            "mae": mae,
            "mae_standard_error": {m: float(np.std(v) / math.sqrt(len(v))) for m, v in error.items()},
            "loglik": {m: float(np.mean(v)) for m, v in loglik.items()},
            "coverage_90": {m: float(np.mean(v)) for m, v in covered.items()},
            "fits_failed": failed,
            "best_fit": best,
            "target_met": bool(mae["PFN"] < mae[best] and 0.85 <= np.mean(covered["PFN"]) <= 0.95),
        }
    return {"cuts": out, "examples": examples}


# ---------------------------------------------------------------- plots


def plot_lcdb(result: dict[str, Any], split: str, path: Path) -> None:
    plt = pyplot()
    cuts = list(result["cuts"])
    methods = list(result["cuts"][cuts[0]]["mae"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        values = [result["cuts"][c]["mae"][method] for c in cuts]
        axes[0].bar(np.arange(len(cuts)) + k * width, values, width, label=method)
        if method in result["cuts"][cuts[0]]["coverage_90"]:
            coverage = [result["cuts"][c]["coverage_90"][method] for c in cuts]
            axes[1].bar(np.arange(len(cuts)) + k * width, coverage, width, label=method)
    for ax, label in zip(axes, ("mean absolute error at the largest anchor", "coverage of 90% intervals"), strict=True):
        ax.set_xticks(np.arange(len(cuts)) + 0.4 - width / 2, [f"observed up to {c}" for c in cuts])
        ax.set_ylabel(label)
    axes[1].axhspan(0.85, 0.95, color="grey", alpha=0.2)
    axes[1].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"LCDB learning curves, {split} OpenML ids")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_prior(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, nll in result["nll"].items():
        seconds = result["seconds_per_curve"][method]
        ax.scatter([seconds], [nll], s=40 if method == "PFN" else 20, color="k" if method == "PFN" else None)
        ax.annotate(method, (seconds, nll), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("CPU seconds per curve")
    ax.set_ylabel("NLL per held-out point")
    ax.set_title(f"{result['n_curves']} fresh prior curves")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(result: dict[str, Any], path: Path) -> None:
    examples = result["examples"]
    if not examples:
        return
    plt = pyplot()
    cols = 4
    rows = math.ceil(len(examples) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.5 * rows), squeeze=False)
    for ax, curve in zip(axes.flat, examples, strict=False):
        x, y = np.asarray(curve["x"]), np.asarray(curve["y"])
        seen = x <= x[-1] / 8
        ax.plot(x[seen], y[seen], "o-", ms=3, color="k", label="observed")
        ax.plot(x[~seen], y[~seen], "o:", ms=3, color="grey", label="held out")
        ax.errorbar(
            [x[-1] * 1.15],
            [curve["median"]],
            yerr=[[curve["median"] - curve["interval"][0]], [curve["interval"][1] - curve["median"]]],
            fmt="s",
            color="C3",
            label="PFN median, 90%",
        )
        ax.set_xscale("log")
        ax.set_title(f"{curve['openmlid']} {curve['learner'].split('.')[-1]}", fontsize=8)
    for ax in list(axes.flat)[len(examples) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- entry point


def run(
    out: Path,
    quick: bool = False,
    model: str | None = None,
    split: str = "odd",
    data: str | None = None,
    update_card: bool = False,
) -> dict[str, Any]:
    """Both parts on ``model`` (default the shipped ``curves``): 60 prior curves with 1,000
    MCMC steps per family, every LCDB curve of ``split``. ``quick``: 3 prior curves with 100
    MCMC steps, 15 LCDB curves. Baseline results stored in ``out`` by an earlier run are reused
    (see BaselineStore); the report counts them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name = model or "curves"
    loaded = load_for(name, "learning_curve", "curves")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = BaselineStore(out / "baselines.json")
    prior_result = prior_benchmark(loaded, 3 if quick else 60, 100 if quick else 1000, store)
    store.save()
    curves = lcdb_curves(lcdb_csv(data), split)
    if quick:
        curves = curves[:: max(1, len(curves) // 15)][:15]
    lcdb_result = lcdb_benchmark(loaded, curves, store)
    store.save()
    report = {
        "benchmark": "curves",
        "model": name,
        "quick": quick,
        "split": split,
        "prior": prior_result,
        "lcdb": {"n_curves": len(curves), "n_datasets": len({c["openmlid"] for c in curves}), **lcdb_result},
        "baselines_reused": store.reused,
        "environment": environment(),
    }
    examples = report["lcdb"].pop("examples")
    write_json(out / "curves.json", report)
    plot_prior(prior_result, out / "curves_prior.png")
    plot_lcdb(report["lcdb"], split, out / "curves_lcdb.png")
    plot_examples({"examples": examples}, out / "curves_examples.png")
    print(summary(report))
    if update_card and not quick and split == "odd":
        record_quality(
            name,
            "curves",
            {
                "prior_nll": prior_result["nll"],
                "prior_seconds_per_curve": prior_result["seconds_per_curve"],
                "lcdb_odd": {
                    c: {k: r[k] for k in ("mae", "coverage_90", "loglik")} for c, r in report["lcdb"]["cuts"].items()
                },
                "command": report["environment"]["command"],
            },
        )
    return report


def summary(report: dict[str, Any]) -> str:
    """Plain-text tables of both parts."""
    prior = report["prior"]
    lines = [f"(a) {prior['n_curves']} prior curves, NLL per held-out point and seconds per curve:"]
    for m, v in prior["nll"].items():
        lines.append(
            f"{m:>12} NLL {v:8.3f} ± {prior['nll_standard_error'][m]:.3f}  {prior['seconds_per_curve'][m]:.4f} s"
        )
    lines.append(f"PFN {prior['speedup_over_mcmc']:.0f}x faster than MCMC; target met: {prior['target_met']}")
    lcdb = report["lcdb"]
    lines.append(f"(b) LCDB, {report['split']} ids: {lcdb['n_curves']} curves of {lcdb['n_datasets']} datasets")
    for cut, r in lcdb["cuts"].items():
        lines.append(f"observed up to {cut} of the largest anchor ({r['n_curves']} curves), best fit {r['best_fit']}")
        for m, v in r["mae"].items():
            extra = (
                f"  loglik {r['loglik'][m]:8.3f}  90% coverage {r['coverage_90'][m]:.3f}" if m in r["loglik"] else ""
            )
            lines.append(f"{m:>12} MAE {v:.4f}{extra}")
        lines.append(f"target met: {r['target_met']}")
    return "\n".join(lines)
