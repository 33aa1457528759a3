"""The BNN benchmark: its pyro model is the prior's model, its NLLs and ratios, its quick mode."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import gen
from helpers import tiny_config
from pyro.infer import Predictive
from scipy import stats

import pfn
import priors
from benchmarks.bnn_posterior import (
    bnn_model,
    check_fixed_architecture,
    mlp,
    predictive_nll,
    run,
    run_svi,
    time_ratio,
)
from benchmarks.common import WrongPriorError
from pfn.train import train
from priors import BNNPrior

FIXED = BNNPrior(
    inputs="normal", min_features=2, max_features=2, min_layers=2, max_layers=2, min_width=4, max_width=4,
    activations=("tanh",), noise=0.1,
)  # fmt: skip


def test_pyro_model_draws_the_same_targets_as_the_prior():
    batch = FIXED.sample(3000, 2, 2, gen(1))  # two rows per dataset: y's spread and their correlation
    model, n_layers = bnn_model(FIXED)
    x = torch.randn(3000, 2, 2, generator=gen(2))
    weights = Predictive(model, num_samples=3000, parallel=True)(x[0])  # the model's weight priors, [S, in, out]
    f = mlp(x, [weights[f"w{i}"] for i in range(n_layers)], "tanh")  # [3000, 2]
    draws = f + 0.1 * torch.randn(f.shape, generator=gen(3))
    assert stats.ks_2samp(batch.y[:, 0].numpy(), draws[:, 0].numpy()).pvalue > 0.001
    assert stats.ks_2samp(batch.y[:, 0].abs().numpy(), draws[:, 0].abs().numpy()).pvalue > 0.001


def test_predictive_nll_of_identical_samples_is_the_gaussian_nll():
    _, n_layers = bnn_model(FIXED)
    weights = {f"w{i}": torch.randn(1, *shape).expand(5, *shape) for i, shape in enumerate([(2, 4), (4, 4), (4, 1)])}
    x, y = torch.randn(7, 2), torch.randn(7)
    f = mlp(x, [weights[f"w{i}"][0] for i in range(n_layers)], "tanh")
    expected = -stats.norm(f.numpy(), 0.1).logpdf(y.numpy())
    torch.testing.assert_close(predictive_nll(weights, n_layers, FIXED, x, y), torch.tensor(expected).float())


def test_time_ratio_finds_the_first_budget_that_reaches_the_pfn():
    budgets = [{"nll": 0.5, "seconds": 10.0}, {"nll": 0.1, "seconds": 100.0}, {"nll": 0.3, "seconds": 1.0}]
    assert time_ratio(budgets, pfn_nll=0.3, pfn_seconds=0.01) == {"reached": True, "ratio": pytest.approx(100.0)}
    assert time_ratio(budgets, pfn_nll=0.05, pfn_seconds=0.01) == {"reached": False, "ratio_at_least": 10_000.0}


@pytest.mark.parametrize(
    "change, named",
    [({"max_layers": 3}, "layers"), ({"activations": ("tanh", "relu")}, "activations"), ({"noise": 0.0}, "noise")],
)
def test_a_prior_the_baselines_cannot_model_exactly_is_refused(change, named):
    with pytest.raises(ValueError, match=f"fixed-architecture prior .*{named}"):
        check_fixed_architecture(dataclasses.replace(FIXED, **change))


def test_quick_mode_on_a_tiny_bnn_checkpoint_writes_json_and_plots(tmp_path):
    config = dataclasses.replace(tiny_config(), prior=dataclasses.replace(FIXED, max_features=2))
    train(config, tmp_path / "run", progress=False)
    report = run(tmp_path / "out", quick=True, model=str(tmp_path / "run"))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["bnn.json", "bnn_calibration.png", "bnn_nll_time.png"]
    saved = json.loads((tmp_path / "out" / "bnn.json").read_text())
    assert [r["samples"] for r in saved["nuts"]] == [10, 20] and [r["steps"] for r in saved["svi"]] == [50, 100]
    assert saved["pfn_minus_best_nuts"] == pytest.approx(report["pfn"]["nll"] - min(r["nll"] for r in report["nuts"]))
    assert all(math.isfinite(r["nll"]) for r in saved["nuts"] + saved["svi"])
    assert set(saved["calibration"]) == {"PFN", "NUTS", "SVI"}
    per_dataset = saved["nll_per_dataset"]
    assert set(per_dataset) == {"PFN", "NUTS 10+10", "NUTS 20+20"} and all(len(v) == 2 for v in per_dataset.values())
    assert np.mean(per_dataset["PFN"]) == pytest.approx(saved["pfn"]["nll"], abs=1e-6)
    assert saved["pfn_minus_best_nuts_standard_error"] > 0
    assert saved["pfn"]["seconds"] > 0 and saved["pfn"]["seconds_batch"] > 0


def test_benchmark_refuses_a_checkpoint_of_another_prior(tmp_path):
    train(tiny_config(), tmp_path, progress=False)
    with pytest.raises(WrongPriorError, match="evaluates a 'bnn' prior, but .* was trained on a 'gp' prior"):
        run(tmp_path / "out", quick=True, model=str(tmp_path))


def test_shipped_bnn_beats_100_steps_of_svi_on_fresh_datasets_of_its_prior():
    model = pfn.load("bnn")
    prior = priors.from_dict(model.card["prior"])
    d = prior.max_features
    batch = prior.sample(3, 200, model.config.n_features, torch.Generator().manual_seed(11))
    x, y = batch.x[:, :, :d], batch.y
    pfn_nll = model.predict(x[:, :100], y[:, :100], x[:, 100:]).nll(y[:, 100:]).mean().item()
    _, n_layers = bnn_model(prior)
    svi = [
        predictive_nll(run_svi(prior, x[b, :100], y[b, :100], 100, b), n_layers, prior, x[b, 100:], y[b, 100:]).mean()
        for b in range(3)
    ]
    assert pfn_nll < float(torch.stack(svi).mean()) - 0.1, (pfn_nll, svi)
