"""The PFN against MCMC and variational inference for a Bayesian neural network (``pfn bench bnn``).

As in the PFN paper (Müller et al., 2022): on fresh datasets from the checkpoint's own
fixed-architecture BNN prior (a seed no training step uses), the test NLL and wall time of the
PFN (one forward pass), of NUTS (pyro) at several sample budgets and of mean-field SVI
(Bayes-by-backprop, pyro's AutoNormal guide) at several step budgets, all on the exact model
that generated the data. Reports, for each baseline, the wall time it needs to reach the PFN's
NLL as a multiple of the PFN's. Writes ``bnn.json``, ``bnn_nll_time.png`` and
``bnn_calibration.png`` to the output folder.
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
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import Tensor
from tqdm.auto import tqdm

import priors
from benchmarks.common import calibration, draw_pit, environment, load_for, pyplot, record_quality
from pfn.checkpoint import write_json
from pfn.inference import PFN
from priors.bnn import BNNPrior

SEED = 135_792_468  # training draws seeds from (run seed, step, index); this stream is separate
N_TEST = 100
N_DATASETS = 20  # the gap to NUTS varies from dataset to dataset by about 0.03 nats (standard deviation)
NUTS_BUDGETS = ((25, 25), (50, 50), (100, 100), (200, 200))  # (warmup, samples)
SVI_BUDGETS = (100, 300, 1000, 3000)  # optimisation steps
PREDICTIVE_SAMPLES = 200  # SVI draws from the guide for its predictive
QUICK_NUTS, QUICK_SVI = ((10, 10), (20, 20)), (50, 100)


def check_fixed_architecture(prior: BNNPrior) -> None:
    """The baselines need the exact model: one depth, width and activation, fixed weight scale
    and noise, no dropout or hidden noise (ValueError naming what varies otherwise)."""
    varying = [
        name
        for name, fixed in [
            ("layers", prior.min_layers == prior.max_layers),
            ("width", prior.min_width == prior.max_width),
            ("features", prior.min_features == prior.max_features),
            ("activations", len(prior.activations) == 1),
            ("weight_std", isinstance(prior.weight_std, (int, float))),
            ("noise", isinstance(prior.noise, (int, float)) and prior.noise > 0),
            ("dropout", prior.dropout == 0),
            ("hidden_noise", prior.hidden_noise == 0),
        ]
        if not fixed
    ]
    if varying:
        raise ValueError(
            f"the BNN benchmark needs a fixed-architecture prior with output noise; this one varies or lacks: {varying}"
        )


def mlp(x: Tensor, weights: list[Tensor], activation: str) -> Tensor:
    """The prior's network without biases: x [..., n, d], weights [..., in, out] -> f [..., n]."""
    act = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda h: h}[activation]
    h = x
    for w in weights[:-1]:
        h = act(h @ w)
    return (h @ weights[-1])[..., 0]


def bnn_model(prior: BNNPrior) -> Any:
    """The pyro model of the prior: weights N(0, weight_std² / fan_in), y ~ N(f(x), noise²)."""
    d, width = prior.max_features, prior.max_width
    shapes = [(d, width)] + [(width, width)] * (prior.max_layers - 1) + [(width, 1)]

    def model(x: Tensor, y: Tensor | None = None) -> None:
        weights = [
            pyro.sample(
                f"w{i}", dist.Normal(0.0, prior.weight_std / math.sqrt(fan_in)).expand([fan_in, out]).to_event(2)
            )
            for i, (fan_in, out) in enumerate(shapes)
        ]
        f = mlp(x, weights, prior.activations[0])
        pyro.sample("y", dist.Normal(f, float(prior.noise)).to_event(1), obs=y)

    return model, len(shapes)


def predictive_nll(samples: dict[str, Tensor], n_layers: int, prior: BNNPrior, x: Tensor, y: Tensor) -> Tensor:
    """Per-point NLL [m] of the posterior predictive: a mixture over S weight samples."""
    weights = [samples[f"w{i}"] for i in range(n_layers)]  # [S, in, out] each
    f = mlp(x[None], weights, prior.activations[0])  # [S, m]
    log_p = dist.Normal(f, float(prior.noise)).log_prob(y[None])  # [S, m]
    return -(torch.logsumexp(log_p, 0) - math.log(f.shape[0]))


def pit_of_mixture(samples: dict[str, Tensor], n_layers: int, prior: BNNPrior, x: Tensor, y: Tensor) -> Tensor:
    """CDF of the posterior predictive at the observed y: [m]."""
    f = mlp(x[None], [samples[f"w{i}"] for i in range(n_layers)], prior.activations[0])  # [S, m]
    return dist.Normal(f, float(prior.noise)).cdf(y[None]).mean(0)


def run_nuts(prior: BNNPrior, x: Tensor, y: Tensor, warmup: int, n_samples: int, seed: int) -> dict[str, Tensor]:
    pyro.set_rng_seed(seed)
    model, _ = bnn_model(prior)
    # the TorchScript-compiled potential: the same sampler, 1.4x faster on this model
    kernel = NUTS(model, jit_compile=True, ignore_jit_warnings=True)
    mcmc = MCMC(kernel, num_samples=n_samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(x, y)
    return mcmc.get_samples()


def run_svi(prior: BNNPrior, x: Tensor, y: Tensor, steps: int, seed: int) -> dict[str, Tensor]:
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    model, n_layers = bnn_model(prior)
    guide = AutoNormal(model, init_scale=0.05)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(steps):
        svi.step(x, y)
    sites = [f"w{i}" for i in range(n_layers)]
    with torch.no_grad():
        return Predictive(model, guide=guide, num_samples=PREDICTIVE_SAMPLES, return_sites=sites)(x)


def evaluate(
    model: PFN,
    prior: BNNPrior,
    n_datasets: int,
    n_train: int,
    nuts_budgets: tuple[tuple[int, int], ...],
    svi_budgets: tuple[int, ...],
    progress: bool = False,
) -> dict[str, Any]:
    """Mean test NLL and mean seconds per dataset of every method and budget (``progress``: a
    progress bar per budget)."""
    check_fixed_architecture(prior)
    d = prior.max_features
    batch = prior.sample(n_datasets, n_train + N_TEST, model.config.n_features, torch.Generator().manual_seed(SEED))
    x, y = batch.x[:, :, :d], batch.y  # [B, R, d], [B, R] float32
    x_train, y_train, x_test, y_test = x[:, :n_train], y[:, :n_train], x[:, n_train:], y[:, n_train:]

    pfn_dist = model.predict(x_train, y_train, x_test)  # also the untimed warm-up call
    pfn_nll = pfn_dist.nll(y_test).mean(1)  # [B]
    results: dict[str, Any] = {
        "pfn": {"nll": float(pfn_nll.mean()), **time_pfn(model, x_train, y_train, x_test)},
        "nuts": [],
        "svi": [],
    }
    pits: dict[str, Tensor] = {"PFN": pfn_dist.cdf(y_test).reshape(-1)}
    per_dataset: dict[str, list[float]] = {"PFN": pfn_nll.tolist()}  # NLL of each dataset
    _, n_layers = bnn_model(prior)
    for warmup, n_samples in nuts_budgets:
        nll, seconds, pit = [], [], []
        for b in tqdm(range(n_datasets), desc=f"NUTS {warmup}+{n_samples}", disable=not progress):
            start = time.perf_counter()
            samples = run_nuts(prior, x_train[b], y_train[b], warmup, n_samples, SEED + b)
            seconds.append(time.perf_counter() - start)
            nll.append(float(predictive_nll(samples, n_layers, prior, x_test[b], y_test[b]).mean()))
            pit.append(pit_of_mixture(samples, n_layers, prior, x_test[b], y_test[b]))
        results["nuts"].append(
            {"warmup": warmup, "samples": n_samples, "nll": float(np.mean(nll)), "seconds": float(np.mean(seconds))}
        )
        per_dataset[f"NUTS {warmup}+{n_samples}"] = nll
        pits["NUTS"] = torch.cat(pit)  # the largest budget's, after the loop
    for steps in svi_budgets:
        nll, seconds, pit = [], [], []
        for b in tqdm(range(n_datasets), desc=f"SVI {steps}", disable=not progress):
            start = time.perf_counter()
            samples = run_svi(prior, x_train[b], y_train[b], steps, SEED + b)
            seconds.append(time.perf_counter() - start)
            nll.append(float(predictive_nll(samples, n_layers, prior, x_test[b], y_test[b]).mean()))
            pit.append(pit_of_mixture(samples, n_layers, prior, x_test[b], y_test[b]))
        results["svi"].append({"steps": steps, "nll": float(np.mean(nll)), "seconds": float(np.mean(seconds))})
        pits["SVI"] = torch.cat(pit)
    best = min(results["nuts"], key=lambda r: r["nll"])
    gap = np.subtract(per_dataset["PFN"], per_dataset[f"NUTS {best['warmup']}+{best['samples']}"])  # [B]
    pfn_seconds = results["pfn"]["seconds"]
    return {
        "n_datasets": n_datasets,
        "n_train": n_train,
        "n_test": N_TEST,
        **results,
        "pfn_minus_best_nuts": float(gap.mean()),
        "pfn_minus_best_nuts_standard_error": float(gap.std(ddof=1) / math.sqrt(len(gap))) if len(gap) > 1 else None,
        "time_ratio_to_reach_pfn": {
            "nuts": time_ratio(results["nuts"], results["pfn"]["nll"], pfn_seconds),
            "svi": time_ratio(results["svi"], results["pfn"]["nll"], pfn_seconds),
        },
        "nll_per_dataset": per_dataset,
        "calibration": {name: calibration(pit) for name, pit in pits.items()},
    }


def time_pfn(model: PFN, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> dict[str, float]:
    """The PFN's mean seconds per dataset one dataset at a time, as a user fits one table
    (``seconds``, the figure compared with the baselines, which also handle one dataset per
    run), and with all datasets in one forward pass (``seconds_batch``). Call once untimed first."""
    n_datasets, one = x_train.shape[0], []
    for b in range(n_datasets):
        start = time.perf_counter()
        model.predict(x_train[b], y_train[b], x_test[b])
        one.append(time.perf_counter() - start)
    start = time.perf_counter()
    model.predict(x_train, y_train, x_test)
    return {"seconds": float(np.mean(one)), "seconds_batch": (time.perf_counter() - start) / n_datasets}


def time_ratio(budgets: list[dict[str, Any]], pfn_nll: float, pfn_seconds: float) -> dict[str, Any]:
    """The first budget (in time order) whose NLL is at most the PFN's, as a multiple of the
    PFN's time; if none is, a lower bound: the largest budget's time over the PFN's."""
    ordered = sorted(budgets, key=lambda r: r["seconds"])
    for r in ordered:
        if r["nll"] <= pfn_nll:
            return {"reached": True, "ratio": r["seconds"] / pfn_seconds}
    return {"reached": False, "ratio_at_least": ordered[-1]["seconds"] / pfn_seconds}


def plot(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, label in (("nuts", "NUTS"), ("svi", "SVI (mean-field)")):
        runs = result[key]
        ax.plot([r["seconds"] for r in runs], [r["nll"] for r in runs], marker="o", label=label)
    ax.scatter([result["pfn"]["seconds"]], [result["pfn"]["nll"]], color="k", marker="*", s=120, zorder=3, label="PFN")
    ax.axhline(result["pfn"]["nll"], color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("wall time per dataset (s)")
    ax.set_ylabel("mean test NLL (nats)")
    ax.set_title(f"BNN posterior, {result['n_train']} train rows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bnn_nll_time.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(result["calibration"]), figsize=(3 * len(result["calibration"]), 2.8))
    for ax, (name, cal) in zip(np.atleast_1d(axes), result["calibration"].items(), strict=True):
        draw_pit(ax, name, cal)
    fig.tight_layout()
    fig.savefig(out / "bnn_calibration.png", dpi=120)
    plt.close(fig)


def run(out: Path, quick: bool = False, model: str | None = None, update_card: bool = False) -> dict[str, Any]:
    """Run the benchmark on N_DATASETS datasets; ``quick``: 2 datasets, two small budgets of each
    baseline."""
    name = model or "bnn"
    loaded = load_for(name, "bnn", "bnn")
    prior = priors.from_dict(loaded.card["prior"])
    n_train = min(100, loaded.card["train"]["max_train"])
    if quick:
        result = evaluate(loaded, prior, 2, n_train, QUICK_NUTS, QUICK_SVI)
    else:
        result = evaluate(loaded, prior, N_DATASETS, n_train, NUTS_BUDGETS, SVI_BUDGETS, progress=True)
    report = {"benchmark": "bnn", "model": name, "quick": quick, **result, "environment": environment()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bnn.json", report)
    plot(report, out)
    print(summary(report))
    if update_card and not quick:
        record_quality(
            name,
            "bnn_benchmark",
            {
                "pfn_nll": round(report["pfn"]["nll"], 4),
                "pfn_minus_best_nuts": round(report["pfn_minus_best_nuts"], 4),
                "pfn_minus_best_nuts_standard_error": round(report["pfn_minus_best_nuts_standard_error"], 4),
                "time_ratio_to_reach_pfn": report["time_ratio_to_reach_pfn"],
                "n_datasets": report["n_datasets"],
                "n_train": report["n_train"],
                "command": report["environment"]["command"],
            },
        )
    return report


def summary(report: dict[str, Any]) -> str:
    """A plain-text table of the result."""
    lines = [f"{'method':>22} {'NLL':>8} {'s/dataset':>10}"]
    lines.append(f"{'PFN':>22} {report['pfn']['nll']:>8.4f} {report['pfn']['seconds']:>10.4f}")
    lines.append(f"{'PFN, batched':>22} {report['pfn']['nll']:>8.4f} {report['pfn']['seconds_batch']:>10.4f}")
    for r in report["nuts"]:
        lines.append(
            f"{'NUTS ' + str(r['warmup']) + '+' + str(r['samples']):>22} {r['nll']:>8.4f} {r['seconds']:>10.3f}"
        )
    for r in report["svi"]:
        label = f"SVI {r['steps']} steps"
        lines.append(f"{label:>22} {r['nll']:>8.4f} {r['seconds']:>10.3f}")
    se = report["pfn_minus_best_nuts_standard_error"]
    lines.append(f"PFN - best NUTS: {report['pfn_minus_best_nuts']:+.4f} nats" + (f" (± {se:.4f})" if se else ""))
    lines.append(f"time to reach the PFN's NLL, as a multiple of the PFN's: {report['time_ratio_to_reach_pfn']}")
    return "\n".join(lines)
