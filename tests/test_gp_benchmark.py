"""The GP benchmark's quick mode and the shipped ``gp`` checkpoint against the exact posterior."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config

import pfn
import priors
from benchmarks.common import WrongPriorError, load_for
from benchmarks.gp_posterior import bucketed_gaussian, evaluate, gaussian_nll, run
from pfn.train import train


def test_gaussian_nll_matches_scipy():
    from scipy import stats

    y, m, v = torch.tensor([0.3, -1.0]), torch.tensor([0.0, 0.5]), torch.tensor([2.0, 0.3])
    expected = -stats.norm(m.numpy(), v.sqrt().numpy()).logpdf(y.numpy())
    torch.testing.assert_close(gaussian_nll(y, m, v), torch.tensor(expected, dtype=torch.float32))


def test_bucketed_gaussian_puts_each_buckets_gaussian_mass_in_it():
    from scipy import stats

    borders = torch.tensor([-3.0, -1.0, -0.2, 0.5, 2.0, 4.0])
    mean, var = torch.tensor([0.3, -1.5]), torch.tensor([0.5, 2.0])
    y = torch.tensor([0.1, 0.4])  # both in the bucket (-0.2, 0.5]
    normal = stats.norm(mean.numpy(), var.sqrt().numpy())
    mass = normal.cdf(0.5) - normal.cdf(-0.2)
    expected = -np.log(mass / 0.7)
    torch.testing.assert_close(bucketed_gaussian(borders, (1.0, 1.0), mean, var).nll(y), torch.tensor(expected))


def test_bucketed_gaussian_approaches_the_gaussian_as_buckets_narrow():
    mean, var = torch.tensor([0.2, -0.4]).double(), torch.tensor([0.3, 0.05]).double()
    y = mean + var.sqrt() * torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = gaussian_nll(y, mean, var)
    # expected excess NLL of K equal buckets on [-6, 6]: about width² / (24 var), so 100 times less per 10x
    gaps = [
        (bucketed_gaussian(torch.linspace(-6, 6, k + 1), (1.0, 1.0), mean, var).nll(y) - exact).mean().item()
        for k in (50, 500, 5000)
    ]
    assert gaps[0] > 30 * gaps[1] > 0 and gaps[2] < 1e-4, gaps


def test_quick_mode_writes_json_and_plots(tmp_path):
    result = run(tmp_path, quick=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gp.json", "gp_1d.png", "gp_nll.png"]
    saved = json.loads((tmp_path / "gp.json").read_text())
    assert saved["mean_gap_nats"] == pytest.approx(result["mean_gap_nats"])
    exact, mle = saved["mean_nll"]["exact_gp"], saved["mean_nll"]["mle_gp"]
    # the exact posterior is Bayes-optimal: on average no method beats it
    assert sum(exact) <= sum(mle) and sum(exact) <= sum(saved["mean_nll"]["pfn"])
    # the exact predictive in the model's buckets is within a small part of the PFN's gap
    assert abs(saved["mean_head_floor_nats"]) < saved["mean_gap_nats"] / 3


def test_shipped_gp_is_close_to_the_exact_posterior():
    model = pfn.load("gp")
    prior = priors.from_dict(model.card["prior"])
    result = evaluate(model, prior, n_datasets=60, grid=(2, 20, 100), mle_iterations=5)
    assert result["mean_gap_nats"] < 0.1, result["pfn_minus_exact"]


def test_a_smoothed_model_is_scored_with_and_without_its_smoothing():
    model = pfn.load("gp")
    prior = priors.from_dict(model.card["prior"])
    smoothed = pfn.PFN(model.model, model.card, model.borders, model.tail_scales, density_smoothing=0.01)
    with_it = evaluate(smoothed, prior, n_datasets=20, grid=(2, 50), mle_iterations=2)
    without = evaluate(model.unsmoothed(), prior, n_datasets=20, grid=(2, 50), mle_iterations=2)
    assert with_it["density_smoothing"] == 0.01 and without["density_smoothing"] == 0.0
    np.testing.assert_allclose(with_it["unsmoothed_minus_exact"], without["pfn_minus_exact"], atol=1e-6)
    assert without["unsmoothed_minus_exact"] == without["pfn_minus_exact"]
    assert with_it["pfn_minus_exact"] != without["pfn_minus_exact"]


def test_benchmark_refuses_a_model_of_another_prior(tmp_path):
    train(tiny_config("classification"), tmp_path, progress=False)
    with pytest.raises(WrongPriorError, match="evaluates a 'gp' prior, but .* was trained on a 'classification'"):
        load_for(str(tmp_path), "gp", "gp")
