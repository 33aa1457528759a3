"""The PFN against MLE-II and NUTS for a GP with hyperpriors (``pfn bench gp-hyper``).

On fresh datasets from the checkpoint's own GP prior, whose lengthscale, outputscale and noise
are drawn per dataset from hyperpriors (a seed no training step uses): for each number of train
rows, the mean test NLL and wall time of the PFN (one forward pass), of a GP with MLE-II
hyperparameters (gpytorch) and of the full Bayesian treatment: NUTS (pyro) over the
hyperparameters under the same hyperpriors, predicting with the mixture of the GP predictives
of its samples. Also the PFN's FLOPs per dataset (torch's counter, attention included) against
one thread's fp32 matmul peak: the share of the peak its batched forward pass reaches, and the
speed-up over MLE-II in a batch it would have at the peak. Writes ``gp_hyper.json``,
``gp_hyper_nll.png`` and ``gp_hyper_calibration.png``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

import priors
from benchmarks.common import WrongPriorError, calibration, draw_pit, environment, load_for, pyplot, record_quality
from benchmarks.gp_posterior import fit_mle, gaussian_nll, pfn_nll
from benchmarks.throughput import CPU_ATTENTION_FLOPS, peak_gflops
from pfn.checkpoint import write_json
from pfn.inference import PFN
from priors.base import Gamma, Hyper, LogUniform, Uniform
from priors.gp import JITTER, GPPrior, gp_predictive

SEED = 246_813_579  # training draws seeds from (run seed, step, index); this stream is separate
N_TEST = 50
HYPERPARAMETERS = ("lengthscale", "outputscale", "noise")


def _sample_hyper(name: str, param: Hyper, size: int) -> Tensor:
    """A pyro sample site [size] for one hyperparameter under its hyperprior (a fixed float is
    a constant). Log-uniform hyperpriors are sampled on the log scale."""
    if isinstance(param, (int, float)):
        return torch.full((size,), float(param), dtype=torch.float64)
    if isinstance(param, Gamma):
        prior = dist.Gamma(torch.tensor(param.concentration).double(), torch.tensor(param.rate).double())
        return pyro.sample(name, prior.expand([size]).to_event(1))
    if isinstance(param, LogUniform):
        low, high = torch.tensor(math.log(param.low)).double(), torch.tensor(math.log(param.high)).double()
        return pyro.sample(f"log_{name}", dist.Uniform(low, high).expand([size]).to_event(1)).exp()
    if isinstance(param, Uniform):
        low, high = torch.tensor(param.low).double(), torch.tensor(param.high).double()
        return pyro.sample(name, dist.Uniform(low, high).expand([size]).to_event(1))
    raise TypeError(f"unknown hyperprior {param!r}")


def _from_samples(samples: dict[str, Tensor], name: str, param: Hyper, n_samples: int, size: int) -> Tensor:
    """The NUTS draws [S, size] of one hyperparameter (undoing the log scale of _sample_hyper)."""
    if isinstance(param, (int, float)):
        return torch.full((n_samples, size), float(param), dtype=torch.float64)
    if isinstance(param, LogUniform):
        return samples[f"log_{name}"].exp()
    return samples[name]


def gp_hyper_model(prior: GPPrior) -> Any:
    """The pyro model: hyperparameters from the prior's hyperpriors, y ~ N(0, K + noise² I)."""

    def model(x: Tensor, y: Tensor) -> None:
        d = x.shape[-1]
        lengthscale = _sample_hyper("lengthscale", prior.lengthscale, d if prior.ard else 1)  # [d] or [1]
        outputscale = _sample_hyper("outputscale", prior.outputscale, 1)  # [1]
        noise = _sample_hyper("noise", prior.noise, 1)  # [1]
        ls = lengthscale[None] if prior.ard else lengthscale  # [1, d] or [1]
        k = prior.covariance(x[None], x[None], ls, outputscale)[0]  # [n, n]
        k = k + (noise**2 + JITTER * outputscale) * torch.eye(len(x), dtype=torch.float64)
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(len(x), dtype=torch.float64), covariance_matrix=k), obs=y)

    return model


def nuts_predictive(
    prior: GPPrior, x: Tensor, y: Tensor, x_test: Tensor, warmup: int, n_samples: int, seed: int
) -> tuple[Tensor, Tensor]:
    """NUTS over one dataset's hyperparameters (x [n, d], y [n]); the predictive mixture's
    component means and variances at x_test [m, d], each [S, m]."""
    pyro.set_rng_seed(seed)
    x, y, x_test = x.double(), y.double(), x_test.double()
    mcmc = MCMC(NUTS(gp_hyper_model(prior)), num_samples=n_samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(x, y)
    samples = mcmc.get_samples()
    d = x.shape[-1]
    lengthscale = _from_samples(samples, "lengthscale", prior.lengthscale, n_samples, d if prior.ard else 1)
    lengthscale = lengthscale if prior.ard else lengthscale[:, 0]  # [S, d] or [S]
    outputscale = _from_samples(samples, "outputscale", prior.outputscale, n_samples, 1)[:, 0]  # [S]
    noise = _from_samples(samples, "noise", prior.noise, n_samples, 1)[:, 0]  # [S]
    expand = (n_samples, *x.shape)
    return gp_predictive(
        prior, x.expand(expand), y.expand(n_samples, -1), x_test.expand(n_samples, *x_test.shape),
        lengthscale, outputscale, noise**2,
    )  # fmt: skip


def mixture_nll(y: Tensor, means: Tensor, variances: Tensor) -> Tensor:
    """Per-point NLL [m] of y [m] under an equal-weight mixture of N(means[s], variances[s])."""
    log_p = -gaussian_nll(y[None].double(), means, variances)  # [S, m]
    return -(torch.logsumexp(log_p, 0) - math.log(means.shape[0]))


def mixture_cdf(y: Tensor, means: Tensor, variances: Tensor) -> Tensor:
    """CDF [m] at y [m] of the equal-weight Gaussian mixture."""
    return torch.distributions.Normal(means, variances.sqrt()).cdf(y[None].double()).mean(0)


def evaluate(
    model: PFN,
    prior: GPPrior,
    n_datasets: int,
    grid: tuple[int, ...],
    nuts_budget: tuple[int, int],
    mle_iterations: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean NLL and seconds per dataset of PFN, MLE-II and NUTS at each n_train (``progress``:
    a progress bar of NUTS per n_train)."""
    batch = prior.sample(n_datasets, max(grid) + N_TEST, model.config.n_features, torch.Generator().manual_seed(SEED))
    x, y, d = batch.x, batch.y, batch.used_features
    x_test, y_test = x[:, -N_TEST:], y[:, -N_TEST:]
    nll: dict[str, list[float]] = {"pfn": [], "mle_gp": [], "nuts_gp": []}
    seconds: dict[str, list[float]] = {"pfn": [], "mle_gp": [], "nuts_gp": []}
    single: dict[str, list[float]] = {}  # seconds per dataset, one at a time (see _one_at_a_time)
    flops: list[float] = []  # of the PFN's forward pass, per dataset
    pits: dict[str, list[Tensor]] = {"PFN": [], "MLE-II": [], "NUTS": []}
    # one untimed call of the PFN and of MLE-II first, so that one-off costs (lazy initialisation
    # in torch and gpytorch) are not charged to the first grid point of either
    pfn_nll(model, x[:, : grid[0]], y[:, : grid[0]], x_test, y_test, d)
    fit_mle(x[:, : grid[0]], y[:, : grid[0]], prior.kernel, 2)
    for n in grid:
        x_train, y_train = x[:, :n], y[:, :n]
        start = time.perf_counter()
        nll["pfn"].append(pfn_nll(model, x_train, y_train, x_test, y_test, d).mean().item())
        seconds["pfn"].append((time.perf_counter() - start) / n_datasets)
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
            pits["PFN"].append(model.predict(x_train, y_train, x_test, used_features=d).cdf(y_test).reshape(-1))
        flops.append(counter.get_total_flops() / n_datasets)

        start = time.perf_counter()
        fitted = fit_mle(x_train, y_train, prior.kernel, mle_iterations)
        lengthscale = fitted["lengthscale"]
        mean, var = gp_predictive(
            prior, x_train, y_train, x_test, lengthscale, fitted["outputscale"], fitted["noise_var"]
        )
        seconds["mle_gp"].append((time.perf_counter() - start) / n_datasets)
        nll["mle_gp"].append(gaussian_nll(y_test.double(), mean, var).mean().item())
        pits["MLE-II"].append(torch.distributions.Normal(mean, var.sqrt()).cdf(y_test.double()).reshape(-1))

        for key, seconds_b in _one_at_a_time(model, prior, x_train, y_train, x_test, d, mle_iterations).items():
            single.setdefault(key, []).append(seconds_b)

        per_dataset, start = [], time.perf_counter()
        for b in tqdm(range(n_datasets), desc=f"NUTS, {n} train rows", disable=not progress):
            used = int(d[b])
            means, variances = nuts_predictive(
                prior, x_train[b, :, :used], y_train[b], x_test[b, :, :used], *nuts_budget, seed=SEED + b
            )
            per_dataset.append(mixture_nll(y_test[b], means, variances).mean().item())
            pits["NUTS"].append(mixture_cdf(y_test[b], means, variances))
        seconds["nuts_gp"].append((time.perf_counter() - start) / n_datasets)
        nll["nuts_gp"].append(float(np.mean(per_dataset)))
    mean_nll = {k: float(np.mean(v)) for k, v in nll.items()}
    mean_seconds = {k: float(np.mean(v)) for k, v in seconds.items()}
    mean_single = {k: float(np.mean(v)) for k, v in single.items()}
    peak = peak_gflops(torch.float32, (1024, 2048)) * 1e9  # FLOP/s
    at_peak = [f / peak for f in flops]  # the PFN's seconds per dataset if its matmuls ran at the peak
    return {
        "n_datasets": n_datasets,
        "n_test_per_dataset": N_TEST,
        "n_train_grid": list(grid),
        "nll": nll,
        "seconds_per_dataset": seconds,
        "mean_nll": mean_nll,
        "pfn_minus_mle": mean_nll["pfn"] - mean_nll["mle_gp"],
        "pfn_minus_nuts": mean_nll["pfn"] - mean_nll["nuts_gp"],
        "seconds_per_dataset_one_at_a_time": single,
        "speedup_over_mle": mean_seconds["mle_gp"] / mean_seconds["pfn"],
        "speedup_over_mle_one_at_a_time": mean_single["mle_gp"] / mean_single["pfn"],
        "speedup_over_mle_interleaved": mean_single["mle_gp_interleaved"] / mean_single["pfn_interleaved"],
        "speedup_over_nuts": mean_seconds["nuts_gp"] / mean_seconds["pfn"],
        "pfn_flops_per_dataset": flops,
        "fp32_peak_gflops": peak / 1e9,
        "pfn_batch_share_of_fp32_peak": float(np.mean(at_peak) / mean_seconds["pfn"]),
        "speedup_over_mle_at_fp32_peak": mean_seconds["mle_gp"] / float(np.mean(at_peak)),
        "nuts_budget": {"warmup": nuts_budget[0], "samples": nuts_budget[1]},
        "mle_iterations": mle_iterations,
        "calibration": {name: calibration(torch.cat(p)) for name, p in pits.items()},
    }


def _one_at_a_time(
    model: PFN, prior: GPPrior, x_train: Tensor, y_train: Tensor, x_test: Tensor, d: Tensor, mle_iterations: int
) -> dict[str, float]:
    """Mean seconds per dataset when each dataset is handled alone, as a user fits one table:
    the PFN's forward pass on its used columns, and MLE-II's fit and predictive (x [B, ., F]).
    Timed two ways: each method in its own loop over the datasets (``pfn``, ``mle_gp``), and
    alternating, so that each call starts with the caches the other method left behind
    (``pfn_interleaved``, ``mle_gp_interleaved``)."""

    def pfn_call(b: int) -> None:
        used = int(d[b])
        model.predict(x_train[b, :, :used], y_train[b], x_test[b, :, :used])

    def mle_call(b: int) -> None:
        one = slice(b, b + 1)
        fitted = fit_mle(x_train[one], y_train[one], prior.kernel, mle_iterations)
        gp_predictive(
            prior,
            x_train[one],
            y_train[one],
            x_test[one],
            fitted["lengthscale"],
            fitted["outputscale"],
            fitted["noise_var"],
        )

    def timed(call: Any, b: int) -> float:
        start = time.perf_counter()
        call(b)
        return time.perf_counter() - start

    calls = {"pfn": pfn_call, "mle_gp": mle_call}
    datasets = range(x_train.shape[0])
    seconds = {key: float(np.mean([timed(call, b) for b in datasets])) for key, call in calls.items()}
    interleaved = [[timed(call, b) for call in calls.values()] for b in datasets]  # [B, 2]
    for key, column in zip(calls, np.mean(interleaved, axis=0), strict=True):
        seconds[f"{key}_interleaved"] = float(column)
    return seconds


def check_hyperpriors(prior: GPPrior, name: str) -> None:
    """Refuse a GP prior with fixed hyperparameters: that is the ``gp`` benchmark's prior."""
    if prior.has_fixed_hyperparameters:
        raise WrongPriorError(
            f"benchmark 'gp-hyper' evaluates a 'gp' prior with hyperpriors, but {name!r} was trained on a 'gp' "
            "prior with fixed hyperparameters (use `pfn bench gp`)"
        )


def plot(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    labels = {"pfn": "PFN", "mle_gp": "GP, MLE-II", "nuts_gp": "GP, NUTS over hyperparameters"}
    for key, label in labels.items():
        ax.plot(result["n_train_grid"], result["nll"][key], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("train rows")
    ax.set_ylabel("mean test NLL (nats)")
    ax.set_title("GP with hyperpriors")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "gp_hyper_nll.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(9, 2.8))
    for ax, (name, cal) in zip(axes, result["calibration"].items(), strict=True):
        draw_pit(ax, name, cal)
    fig.tight_layout()
    fig.savefig(out / "gp_hyper_calibration.png", dpi=120)
    plt.close(fig)


def run(out: Path, quick: bool = False, model: str | None = None, update_card: bool = False) -> dict[str, Any]:
    """Run the benchmark; ``quick``: 3 datasets, 2 grid points, NUTS 20 + 20, 30 MLE-II steps."""
    name = model or "gp-hyper"
    loaded = load_for(name, "gp", "gp-hyper")
    prior = priors.from_dict(loaded.card["prior"])
    check_hyperpriors(prior, name)
    largest = min(100, loaded.card["train"]["max_train"])
    if quick:
        result = evaluate(loaded, prior, 3, (min(5, largest), largest), (20, 20), 30)
    else:
        grid = tuple(n for n in (2, 5, 10, 20, 50, 100) if n <= largest)
        result = evaluate(loaded, prior, 30, grid, (100, 100), 100, progress=True)
    report = {"benchmark": "gp-hyper", "model": name, "quick": quick, **result, "environment": environment()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gp_hyper.json", report)
    plot(report, out)
    print(summary(report))
    if update_card and not quick:
        keys = (
            "mean_nll",
            "pfn_minus_mle",
            "pfn_minus_nuts",
            "speedup_over_mle",
            "speedup_over_mle_one_at_a_time",
            "speedup_over_mle_interleaved",
            "speedup_over_nuts",
            "speedup_over_mle_at_fp32_peak",
            "pfn_batch_share_of_fp32_peak",
            "n_datasets",
        )
        record_quality(
            name, "gp_hyper_benchmark", {**{k: report[k] for k in keys}, "command": report["environment"]["command"]}
        )
    return report


def summary(report: dict[str, Any]) -> str:
    """A plain-text table of the result."""
    lines = [f"{'n_train':>8} {'PFN':>8} {'MLE-II':>8} {'NUTS':>8}"]
    for i, n in enumerate(report["n_train_grid"]):
        r = report["nll"]
        lines.append(f"{n:>8} {r['pfn'][i]:>8.4f} {r['mle_gp'][i]:>8.4f} {r['nuts_gp'][i]:>8.4f}")
    lines.append(
        f"PFN - MLE-II: {report['pfn_minus_mle']:+.4f} nats; PFN - NUTS: {report['pfn_minus_nuts']:+.4f} nats; "
        f"PFN {report['speedup_over_mle']:.0f}x faster than MLE-II in a batch, "
        f"{report['speedup_over_mle_one_at_a_time']:.0f}x one dataset at a time "
        f"({report['speedup_over_mle_interleaved']:.0f}x with the two methods' calls alternating), "
        f"{report['speedup_over_nuts']:.0f}x than NUTS"
    )
    lines.append(
        f"PFN batch at {report['pfn_batch_share_of_fp32_peak']:.0%} of one thread's fp32 matmul peak "
        f"({report['fp32_peak_gflops']:.0f} GFLOP/s); at the peak it would be "
        f"{report['speedup_over_mle_at_fp32_peak']:.0f}x faster than MLE-II in a batch"
    )
    return "\n".join(lines)
