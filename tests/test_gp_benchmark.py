"""The GP benchmark's quick mode and the shipped ``gp`` checkpoint against the exact posterior."""

import json

import pytest
import torch
from helpers import tiny_config

import pfn
import priors
from benchmarks.common import WrongPriorError, load_for
from benchmarks.gp_posterior import evaluate, gaussian_nll, run
from pfn.train import train


def test_gaussian_nll_matches_scipy():
    from scipy import stats

    y, m, v = torch.tensor([0.3, -1.0]), torch.tensor([0.0, 0.5]), torch.tensor([2.0, 0.3])
    expected = -stats.norm(m.numpy(), v.sqrt().numpy()).logpdf(y.numpy())
    torch.testing.assert_close(gaussian_nll(y, m, v), torch.tensor(expected, dtype=torch.float32))


def test_quick_mode_writes_json_and_plots(tmp_path):
    result = run(tmp_path, quick=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gp.json", "gp_1d.png", "gp_nll.png"]
    saved = json.loads((tmp_path / "gp.json").read_text())
    assert saved["mean_gap_nats"] == pytest.approx(result["mean_gap_nats"])
    exact, mle = saved["mean_nll"]["exact_gp"], saved["mean_nll"]["mle_gp"]
    # the exact posterior is Bayes-optimal: on average no method beats it
    assert sum(exact) <= sum(mle) and sum(exact) <= sum(saved["mean_nll"]["pfn"])


def test_shipped_gp_is_close_to_the_exact_posterior():
    model = pfn.load("gp")
    prior = priors.from_dict(model.card["prior"])
    result = evaluate(model, prior, n_datasets=60, grid=(2, 20, 100), mle_iterations=5)
    assert result["mean_gap_nats"] < 0.1, result["pfn_minus_exact"]


def test_benchmark_refuses_a_model_of_another_prior(tmp_path):
    train(tiny_config("classification"), tmp_path, progress=False)
    with pytest.raises(WrongPriorError, match="evaluates a 'gp' prior, but .* was trained on a 'classification'"):
        load_for(str(tmp_path), "gp", "gp")
