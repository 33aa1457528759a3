"""The function-class benchmark: its learners against references, its prompts, its quick mode."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import gen
from helpers import tiny_config
from sklearn.linear_model import Ridge

import pfn
from benchmarks.common import WrongPriorError
from benchmarks.function_classes import (
    averaging,
    calibration,
    draw_prompts,
    evaluate_checkpoint,
    function_prior,
    least_squares,
    normaliser,
    ridge,
    run,
    target_standard_errors,
    targets,
    two_layer_net,
)
from pfn.train import train
from priors import LinearPrior, ReLUNetPrior, SparseLinearPrior, TreePrior

LINEAR = LinearPrior(min_features=5, max_features=5, noise=0.0)


def test_ridge_matches_scikit_learn_and_least_squares_interpolates():
    x, y, xq = torch.randn(3, 8, 5, generator=gen(1)), torch.randn(3, 8, generator=gen(2)), torch.randn(3, 4, 5)
    fits = [Ridge(alpha=0.25, fit_intercept=False).fit(a.numpy(), b.numpy()) for a, b in zip(x, y, strict=True)]
    expected = np.stack([fit.predict(q.numpy()) for fit, q in zip(fits, xq, strict=True)])
    torch.testing.assert_close(ridge(0.25)(x, y, xq), torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-5)
    few = x[:, :3]  # fewer examples than dimensions: the minimum-norm interpolant fits them exactly
    torch.testing.assert_close(least_squares(few, y[:, :3], few), y[:, :3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ridge(0.0)(few, y[:, :3], xq), least_squares(few, y[:, :3], xq))


def test_noiseless_linear_prompts_are_solved_exactly_from_d_examples():
    prompts = draw_prompts(LINEAR, 5, 6, 5, "none", seed=0)
    k = 5
    prediction = least_squares(prompts.x[:, :k], prompts.y[:, :k], prompts.x[:, k:])
    torch.testing.assert_close(prediction, prompts.f[:, k:], atol=1e-3, rtol=1e-3)


def test_bayes_optimal_ridge_beats_least_squares_on_noisy_linear_prompts():
    noisy = dataclasses.replace(LINEAR, noise=1.0)
    prompts = draw_prompts(noisy, 5, 400, 6, "none", seed=1)
    x, y, xq, f = prompts.x[:, :6], prompts.y[:, :6], prompts.x[:, 6:], prompts.f[:, 6:]
    error_ls = ((least_squares(x, y, xq) - f) ** 2).mean()
    error_ridge = ((ridge(1.0)(x, y, xq) - f) ** 2).mean()
    assert error_ridge < 0.8 * error_ls


@pytest.mark.parametrize(
    "prior",
    [LinearPrior(weight_std=2.0), SparseLinearPrior(k=3), ReLUNetPrior(hidden=50), TreePrior(depth=3)],
    ids=lambda p: p.name,
)
def test_predicting_zero_scores_one_in_every_function_class(prior):
    prior = dataclasses.replace(prior, min_features=6, max_features=6)
    f = draw_prompts(prior, 6, 2000, 4, "none", seed=8).f  # [B, R]
    assert f.pow(2).mean().item() / normaliser(prior, 6) == pytest.approx(1.0, rel=0.1)


def test_shifts_change_inputs_and_example_noise_as_described():
    skewed = draw_prompts(LINEAR, 5, 200, 30, "skewed", seed=2).x  # [B, R, d]
    assert skewed.pow(2).sum(-1).mean() == pytest.approx(5.0, rel=0.1)  # trace of the covariance is d
    cov = torch.einsum("bri,brj->ij", skewed, skewed) / (skewed.shape[0] * skewed.shape[1])
    assert torch.linalg.eigvalsh(cov).max() < 4.0  # rotations differ per dataset: no common direction
    one = torch.linalg.eigvalsh(skewed[0].T @ skewed[0] / skewed.shape[1])
    assert one.max() / one.min() > 10  # but each dataset is strongly skewed
    orthant = draw_prompts(LINEAR, 5, 10, 7, "orthant", seed=3).x
    signs = orthant[:, :7].sign()
    assert bool((signs == signs[:, :1]).all()) and bool((orthant[:, 7:].sign() == -signs[:, :1]).all())
    noisy = draw_prompts(LINEAR, 5, 300, 10, "noisy_outputs", seed=4)
    residual = noisy.y - noisy.f
    assert residual[:, :10].std() == pytest.approx(1.0, rel=0.1) and bool((residual[:, 10:] == 0).all())
    with pytest.raises(ValueError, match="unknown shift 'rotated'"):
        draw_prompts(LINEAR, 5, 1, 1, "rotated", seed=0)


def test_averaging_and_two_layer_net_learn_what_they_should():
    prompts = draw_prompts(LINEAR, 5, 50, 2000, "none", seed=5)
    x, y, xq, f = prompts.x[:, :2000], prompts.y[:, :2000], prompts.x[:, 2000:], prompts.f[:, 2000:]
    # with many examples averaging recovers w (E[y x] = w for x ~ N(0, I))
    assert ((averaging(x, y, xq) - f) ** 2).mean() / f.pow(2).mean() < 0.05
    small = draw_prompts(TreePrior(min_features=5, max_features=5, depth=2), 5, 4, 200, "none", seed=6)
    fitted = two_layer_net(small.x[:, :200], small.y[:, :200], small.x[:, :200], steps=200)
    assert ((fitted - small.f[:, :200]) ** 2).mean() < 0.5 * small.f[:, :200].var()


def test_calibration_of_uniform_pit_is_flat_with_nominal_coverage():
    result = calibration(torch.rand(100_000, generator=gen(7)))
    assert max(abs(h - 0.1) for h in result["pit_histogram"]) < 0.01
    assert result["coverage"]["0.9"] == pytest.approx(0.9, abs=0.01)


def test_linear_targets_follow_the_issue():
    ks = [1, 5, 10, 20]
    optimum = [max(10 - k, 0) / 10 for k in ks]
    errors = {"PFN": optimum, "least squares": [o + 0.02 for o in optimum]}  # sampling noise on the prompts
    result = {"prior_type": "linear", "ks": ks, "d": 10, "noise": 0.0, "error": {"none": errors}}
    assert targets(result)["met"] is True
    assert targets(result)["worst_gap_to_formula"] == 0.0
    errors["PFN"] = [o + 0.08 for o in optimum]
    assert targets(result) == {
        "worst_gap_to_optimum": pytest.approx(0.06),
        "worst_gap_to_formula": pytest.approx(0.08),
        "met": False,
    }
    noisy = {"prior_type": "linear", "ks": ks, "d": 10, "noise": 0.5}
    noisy["error"] = {"none": {"PFN": [1.05, 1.0, 1.0, 1.0], "ridge (Bayes-optimal λ)": [1.0, 1.0, 1.0, 1.0]}}
    assert targets(noisy)["met"] is True
    noisy["error"]["none"]["PFN"][0] = 1.11
    assert targets(noisy)["met"] is False
    noisy["standard_error"] = [{"gap": 0.1 * i, "ratio": 0.01 * i} for i in range(len(ks))]
    assert targets(noisy)["standard_error"] == 0.0  # the spread at the worst k (here k = 1)


def test_standard_errors_of_the_gap_and_the_ratio():
    optimum = torch.rand(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scaled = target_standard_errors(1.2 * optimum, optimum)  # the PFN's error a fixed multiple of the optimum's
    assert scaled["ratio"] == pytest.approx(0.0, abs=1e-12)
    assert scaled["gap"] == pytest.approx(0.2 * float(optimum.std()) / 20)
    shifted = target_standard_errors(optimum + 0.05, optimum)  # a constant gap has no spread
    assert shifted["gap"] == pytest.approx(0.0, abs=1e-12)


def test_quick_mode_on_a_tiny_linear_checkpoint_writes_json_and_plots(tmp_path):
    config = tiny_config()
    config = dataclasses.replace(config, prior=LinearPrior(min_features=3, max_features=3, noise=0.5))
    train(config, tmp_path / "run", progress=False)
    report = run(tmp_path / "out", quick=True, model=str(tmp_path / "run"))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["fc_calibration.png", "fc_run.png", "fc_run_shifts.png", "function_classes.json"]
    saved = json.loads((tmp_path / "out" / "function_classes.json").read_text())
    result = saved["results"][str(tmp_path / "run")]
    assert result["ks"] == [1, 3, 6]
    assert len(result["standard_error"]) == 3 and all(se["gap"] >= 0 for se in result["standard_error"])
    assert set(result["error"]) == {"none", "skewed", "scaled", "noisy_outputs", "orthant"}
    errors = result["error"]["none"]
    assert set(errors) >= {"PFN", "least squares", "ridge (Bayes-optimal λ)", "3-NN"}
    ratio = max(p / r for p, r in zip(errors["PFN"], errors["ridge (Bayes-optimal λ)"], strict=True))
    assert report["results"][str(tmp_path / "run")]["target"]["worst_ratio_to_ridge"] == pytest.approx(ratio)


def test_benchmark_refuses_a_checkpoint_of_another_prior(tmp_path):
    train(tiny_config(), tmp_path, progress=False)  # a GP prior
    with pytest.raises(WrongPriorError, match="function-class prior .* but .* was trained on a 'gp' prior"):
        run(tmp_path / "out", quick=True, model=str(tmp_path))


def test_shipped_linear_noisy_checkpoint_is_close_to_ridge_with_few_examples():
    model = pfn.load("linear-noisy")
    prior = function_prior(model, "linear-noisy")
    result = evaluate_checkpoint(model, prior, n_datasets=64, ks=(2, 5), shifts=("none",), quick=True)
    errors = result["error"]["none"]
    for pfn_error, ridge_error in zip(errors["PFN"], errors["ridge (Bayes-optimal λ)"], strict=True):
        assert pfn_error < 1.1 * ridge_error


def test_shipped_relu2_checkpoint_beats_nearest_neighbours_and_least_squares():
    model = pfn.load("relu2")
    prior = function_prior(model, "relu2")
    result = evaluate_checkpoint(model, prior, n_datasets=64, ks=(5, 15), shifts=("none",), quick=True)
    errors = result["error"]["none"]
    for i in range(2):
        assert errors["PFN"][i] < min(errors["3-NN"][i], errors["least squares"][i])
