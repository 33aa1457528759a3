"""The PFN against the exact GP posterior (``pfn bench gp``).

On fresh datasets from the checkpoint's own GP prior (a seed no training step uses), for each
number of train rows: mean test NLL of the PFN, of the exact GP posterior predictive with the
true hyperparameters (the Bayes-optimal limit) and of a GP whose lengthscale, outputscale and
noise are fitted by maximising the marginal likelihood (MLE-II, gpytorch); and the wall time
of each. Also the head's floor: the NLL of the exact predictive put into the checkpoint's own
buckets (each bucket's probability its Gaussian mass: the best bar distribution over these
borders, up to the shape of the outer buckets' tails) minus the exact NLL, the part of the gap
that no weights can close. The PFN predicts with its card's density smoothing (``pfn bench
smoothing``), if any; the gap without it is reported as well. Writes
``gp.json``, ``gp_nll.png`` and ``gp_1d.png`` to the output folder.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import gpytorch
import numpy as np
import torch
from torch import Tensor

import priors
from benchmarks.common import environment, load_for, pyplot, record_quality
from pfn.checkpoint import write_json
from pfn.heads import BarDistribution
from pfn.inference import PFN
from priors.gp import GPPrior, gp_predictive

SEED = 987_654_321  # training draws seeds from (run seed, step, index); this stream is separate
N_TRAIN_GRID = (1, 2, 5, 10, 20, 50, 100, 200)
N_TEST = 50


def gaussian_nll(y: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Per-point negative log density of y under N(mean, var)."""
    return 0.5 * (torch.log(2 * math.pi * var) + (y - mean) ** 2 / var)


class _BatchGP(gpytorch.models.ExactGP):
    """Independent zero-mean GPs, one per dataset, fitted together (their likelihoods add up)."""

    def __init__(self, x: Tensor, y: Tensor, likelihood: gpytorch.likelihoods.Likelihood, kernel: str) -> None:
        super().__init__(x, y, likelihood)
        batch = torch.Size([x.shape[0]])
        base = (
            gpytorch.kernels.RBFKernel(batch_shape=batch)
            if kernel == "rbf"
            else gpytorch.kernels.MaternKernel(nu=2.5, batch_shape=batch)
        )
        self.mean = gpytorch.means.ZeroMean(batch_shape=batch)
        self.covar = gpytorch.kernels.ScaleKernel(base, batch_shape=batch)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.covar(x))


def fit_mle(x: Tensor, y: Tensor, kernel: str, iterations: int) -> dict[str, Tensor]:
    """MLE-II hyperparameters per dataset: x [B, n, F], y [B, n] -> lengthscale, outputscale,
    noise variance, each [B] (Adam, lr 0.1, from gpytorch's default initialisation)."""
    x, y = x.double(), y.double()
    likelihood = gpytorch.likelihoods.GaussianLikelihood(batch_shape=torch.Size([x.shape[0]])).double()
    model = _BatchGP(x, y, likelihood, kernel).double()
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = -mll(model(x), y).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return {
            "lengthscale": model.covar.base_kernel.lengthscale.reshape(-1).detach(),
            "outputscale": model.covar.outputscale.reshape(-1).detach(),
            "noise_var": likelihood.noise.reshape(-1).detach(),
        }


def pfn_nll(model: PFN, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, d: Tensor) -> Tensor:
    """Per-dataset mean NLL [B] of the PFN, all datasets in one forward pass (d [B]: each one's
    used feature count; the prior pads the rest with zeros)."""
    return model.predict(x_train, y_train, x_test, used_features=d).nll(y_test).mean(1)


def bucketed_gaussian(
    borders: Tensor, tail_scales: tuple[float, float] | None, mean: Tensor, var: Tensor
) -> BarDistribution:
    """The bar distribution over ``borders`` [K + 1] whose bucket probabilities are the masses
    of N(mean, var) (any shape) in each bucket, the outer buckets taking the Gaussian's tails."""
    borders = borders.double()
    gaussian = torch.distributions.Normal(mean.double().unsqueeze(-1), var.double().sqrt().unsqueeze(-1))
    cdf = gaussian.cdf(borders[1:-1])  # [..., K - 1]
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf, torch.ones_like(cdf[..., :1])], dim=-1)  # [..., K + 1]
    return BarDistribution(borders, cdf.diff(dim=-1).clamp_min(1e-300).log(), tail_scales)


def evaluate(model: PFN, prior: GPPrior, n_datasets: int, grid: tuple[int, ...], mle_iterations: int) -> dict[str, Any]:
    """NLL and time of each method at each n_train, on n_datasets fresh datasets."""
    generator = torch.Generator().manual_seed(SEED)
    n_features = model.config.n_features
    batch = prior.sample(n_datasets, max(grid) + N_TEST, n_features, generator)
    x, y, d = batch.x, batch.y, batch.used_features
    x_test, y_test = x[:, -N_TEST:], y[:, -N_TEST:]
    rows: dict[str, list[float]] = {"pfn": [], "exact_gp": [], "mle_gp": []}
    times: dict[str, list[float]] = {"pfn": [], "exact_gp": [], "mle_gp": []}
    floor: list[float] = []
    unsmoothed: list[float] = []  # the PFN's NLL without the card's density smoothing (if it has one)
    for n in grid:
        x_train, y_train = x[:, :n], y[:, :n]
        start = time.perf_counter()
        rows["pfn"].append(pfn_nll(model, x_train, y_train, x_test, y_test, d).mean().item())
        times["pfn"].append(time.perf_counter() - start)
        if model.density_smoothing > 0:
            raw = pfn_nll(model.unsmoothed(), x_train, y_train, x_test, y_test, d)
            unsmoothed.append(raw.mean().item())

        start = time.perf_counter()
        mean, var = prior.posterior_predictive(x_train, y_train, x_test)
        exact = gaussian_nll(y_test.double(), mean, var)
        rows["exact_gp"].append(exact.mean().item())
        times["exact_gp"].append(time.perf_counter() - start)
        bucketed = bucketed_gaussian(model.borders, model.tail_scales, mean, var)
        floor.append((bucketed.nll(y_test.double()) - exact).mean().item())

        start = time.perf_counter()
        fitted = fit_mle(x_train, y_train, prior.kernel, mle_iterations)
        mean, var = gp_predictive(
            prior, x_train, y_train, x_test, fitted["lengthscale"], fitted["outputscale"], fitted["noise_var"]
        )
        rows["mle_gp"].append(gaussian_nll(y_test.double(), mean, var).mean().item())
        times["mle_gp"].append(time.perf_counter() - start)
    gaps = [p - e for p, e in zip(rows["pfn"], rows["exact_gp"], strict=True)]
    raw_gaps = [p - e for p, e in zip(unsmoothed, rows["exact_gp"], strict=True)] if unsmoothed else gaps
    return {
        "n_datasets": n_datasets,
        "n_test_per_dataset": N_TEST,
        "n_train_grid": list(grid),
        "mean_nll": rows,
        "pfn_minus_exact": gaps,
        "mean_gap_nats": float(np.mean(gaps)),
        "density_smoothing": model.density_smoothing,
        "unsmoothed_minus_exact": raw_gaps,
        "mean_unsmoothed_gap_nats": float(np.mean(raw_gaps)),
        "n_buckets": int(model.borders.numel() - 1),
        "head_floor": floor,
        "mean_head_floor_nats": float(np.mean(floor)),
        "wall_time_s": times,
        "time_per_dataset_ms": {k: 1000 * float(np.sum(v)) / (n_datasets * len(grid)) for k, v in times.items()},
        "mle_iterations": mle_iterations,
    }


def plot_nll(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    labels = {"pfn": "PFN", "exact_gp": "exact GP (true hyperparameters)", "mle_gp": "GP, MLE-II hyperparameters"}
    for key, label in labels.items():
        ax.plot(result["n_train_grid"], result["mean_nll"][key], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("train rows")
    ax.set_ylabel("mean test NLL (nats)")
    ax.set_title(f"GP prior: PFN vs exact posterior (gap {result['mean_gap_nats']:.3f} nats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_1d(model: PFN, prior: GPPrior, path: Path, n_train: int = 8) -> None:
    """The PFN's predictive mean and 90% band over the exact GP's on one 1-D dataset."""
    plt = pyplot()

    one_d = dataclasses.replace(prior, min_features=1, max_features=1)
    batch = one_d.sample(1, n_train, 1, torch.Generator().manual_seed(SEED + 1))
    x_train, y_train = batch.x, batch.y
    grid = torch.linspace(0, 1, 200)[None, :, None]  # [1, 200, 1]
    dist = model.predict(x_train[0], y_train[0], grid[0])
    mean, var = one_d.posterior_predictive(x_train, y_train, grid)
    sd = var.sqrt()[0]
    g = grid[0, :, 0].numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.fill_between(
        g,
        (mean[0] - 1.645 * sd).numpy(),
        (mean[0] + 1.645 * sd).numpy(),
        alpha=0.25,
        color="C1",
        label="exact GP 90% band",
    )
    ax.plot(g, mean[0].numpy(), color="C1", label="exact GP mean")
    band = dist.quantile([0.05, 0.95])  # [200, 2]
    ax.plot(g, dist.mean().numpy(), color="C0", label="PFN mean")
    ax.plot(g, band[:, 0].numpy(), color="C0", ls="--", label="PFN 90% band")
    ax.plot(g, band[:, 1].numpy(), color="C0", ls="--")
    ax.scatter(x_train[0, :, 0], y_train[0], color="k", zorder=3, label="train rows")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out: Path, quick: bool = False, model: str | None = None, update_card: bool = False) -> dict[str, Any]:
    """Run the benchmark; ``quick`` uses 40 datasets, 4 grid points and 30 MLE-II iterations."""
    name = model or "gp"
    loaded = load_for(name, "gp", "gp")
    prior = priors.from_dict(loaded.card["prior"])
    if quick:
        result = evaluate(loaded, prior, n_datasets=40, grid=(1, 5, 20, 100), mle_iterations=30)
    else:
        result = evaluate(loaded, prior, n_datasets=500, grid=N_TRAIN_GRID, mle_iterations=100)
    result = {"benchmark": "gp", "model": name, "quick": quick, **result, "environment": environment()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gp.json", result)
    plot_nll(result, out / "gp_nll.png")
    plot_1d(loaded, prior, out / "gp_1d.png")
    print(summary(result))
    if update_card and not quick:
        record_quality(
            name,
            "gp_benchmark",
            {
                "mean_gap_nats": round(result["mean_gap_nats"], 4),
                "head_floor_nats": round(result["mean_head_floor_nats"], 4),
                "density_smoothing": result["density_smoothing"],
                "unsmoothed_gap_nats": round(result["mean_unsmoothed_gap_nats"], 4),
                "pfn_minus_exact": [round(g, 4) for g in result["pfn_minus_exact"]],
                "n_train_grid": result["n_train_grid"],
                "n_datasets": result["n_datasets"],
                "command": result["environment"]["command"],
            },
        )
    return result


def summary(result: dict[str, Any]) -> str:
    """A plain-text table of the result."""
    lines = [f"{'n_train':>8} {'PFN':>8} {'exact GP':>9} {'MLE-II':>8} {'gap':>7} {'floor':>7}"]
    for i, n in enumerate(result["n_train_grid"]):
        r = result["mean_nll"]
        lines.append(
            f"{n:>8} {r['pfn'][i]:>8.4f} {r['exact_gp'][i]:>9.4f} {r['mle_gp'][i]:>8.4f} "
            f"{result['pfn_minus_exact'][i]:>7.4f} {result['head_floor'][i]:>7.4f}"
        )
    t = result["time_per_dataset_ms"]
    lines.append(f"mean gap PFN - exact GP: {result['mean_gap_nats']:.4f} nats over {result['n_datasets']} datasets")
    if result["density_smoothing"] > 0:
        lines.append(
            f"  (with the card's density smoothing {result['density_smoothing']}; without it "
            f"{result['mean_unsmoothed_gap_nats']:.4f} nats)"
        )
    lines.append(
        f"head floor (the exact predictive in the model's {result['n_buckets']} buckets): "
        f"{result['mean_head_floor_nats']:.4f} nats"
    )
    lines.append(
        f"time per dataset and n_train: PFN {t['pfn']:.2f} ms, exact GP {t['exact_gp']:.2f} ms, "
        f"MLE-II {t['mle_gp']:.2f} ms"
    )
    return "\n".join(lines)
