"""The GP-hyperprior benchmark: its pyro model's likelihood, its mixture NLL, its quick mode."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import gen
from helpers import tiny_config
from pyro import poutine
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from torch.utils.flop_counter import FlopCounterMode

import pfn
import priors
from benchmarks.common import WrongPriorError
from benchmarks.gp_hyper import gp_hyper_model, mixture_nll, run
from benchmarks.gp_posterior import fit_mle, gaussian_nll, pfn_nll
from benchmarks.throughput import CPU_ATTENTION_FLOPS
from pfn.train import train
from priors import GPPrior, LogUniform
from priors.gp import gp_predictive

HYPER = GPPrior(
    lengthscale=LogUniform(0.1, 1.0), outputscale=LogUniform(0.3, 3.0), noise=LogUniform(0.01, 0.3), max_features=2
)


def test_pyro_marginal_likelihood_matches_scikit_learn():
    x, y = torch.rand(12, 2, generator=gen(1)).double(), torch.randn(12, generator=gen(2)).double()
    ls, scale, noise = 0.4, 1.7, 0.2
    values = {
        "log_lengthscale": torch.tensor([math.log(ls)]).double(),
        "log_outputscale": torch.tensor([math.log(scale)]).double(),
        "log_noise": torch.tensor([math.log(noise)]).double(),
    }
    trace = poutine.trace(poutine.condition(gp_hyper_model(HYPER), data=values)).get_trace(x, y)
    log_likelihood = trace.nodes["y"]["fn"].log_prob(y).item()
    kernel = ConstantKernel(scale, "fixed") * RBF(ls, "fixed") + WhiteKernel(noise**2, "fixed")
    expected = GaussianProcessRegressor(kernel, optimizer=None).fit(x.numpy(), y.numpy()).log_marginal_likelihood()
    assert log_likelihood == pytest.approx(expected, rel=1e-4)  # up to the jitter on the diagonal


def test_covariance_is_differentiable_in_the_hyperparameters():
    ls = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    x = torch.rand(1, 5, 2, generator=gen(3))
    k = HYPER.covariance(x, x, ls, torch.ones(1, dtype=torch.float64))
    k.sum().backward()
    assert ls.grad is not None and ls.grad.item() > 0  # longer lengthscales raise every covariance


def test_mixture_of_identical_components_is_one_gaussian():
    y, mean, var = torch.randn(6), torch.randn(6).double(), torch.rand(6).double() + 0.1
    mixture = mixture_nll(y, mean.expand(4, 6), var.expand(4, 6))
    torch.testing.assert_close(mixture, gaussian_nll(y.double(), mean, var))


def test_quick_mode_on_a_tiny_checkpoint_writes_json_and_plots(tmp_path):
    train(dataclasses.replace(tiny_config(), prior=HYPER), tmp_path / "run", progress=False)
    report = run(tmp_path / "out", quick=True, model=str(tmp_path / "run"))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["gp_hyper.json", "gp_hyper_calibration.png", "gp_hyper_nll.png"]
    saved = json.loads((tmp_path / "out" / "gp_hyper.json").read_text())
    assert saved["n_train_grid"] == [5, 16] and set(saved["calibration"]) == {"PFN", "MLE-II", "NUTS"}
    assert saved["pfn_minus_mle"] == pytest.approx(np.mean(report["nll"]["pfn"]) - np.mean(report["nll"]["mle_gp"]))
    assert all(math.isfinite(v) for v in saved["nll"]["nuts_gp"])
    alone = saved["seconds_per_dataset_one_at_a_time"]
    assert set(alone) == {"pfn", "mle_gp", "pfn_interleaved", "mle_gp_interleaved"}
    assert all(len(seconds) == 2 and min(seconds) > 0 for seconds in alone.values())
    assert saved["speedup_over_mle_one_at_a_time"] == pytest.approx(np.mean(alone["mle_gp"]) / np.mean(alone["pfn"]))
    interleaved = np.mean(alone["mle_gp_interleaved"]) / np.mean(alone["pfn_interleaved"])
    assert saved["speedup_over_mle_interleaved"] == pytest.approx(interleaved)
    at_peak = np.mean(saved["pfn_flops_per_dataset"]) / (saved["fp32_peak_gflops"] * 1e9)  # seconds
    batch = saved["seconds_per_dataset"]
    assert saved["speedup_over_mle_at_fp32_peak"] == pytest.approx(np.mean(batch["mle_gp"]) / at_peak)
    assert saved["pfn_batch_share_of_fp32_peak"] == pytest.approx(at_peak / np.mean(batch["pfn"]))
    # the batch's count per dataset (3 datasets of different widths) is one dataset's alone
    model = pfn.load(tmp_path / "run")
    for n, batched in zip(saved["n_train_grid"], saved["pfn_flops_per_dataset"], strict=True):
        x = torch.rand(n + report["n_test_per_dataset"], 1)
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
            model.predict(x[:n], torch.randn(n), x[n:])
        assert batched == counter.get_total_flops() > 0


def test_benchmark_refuses_a_gp_checkpoint_with_fixed_hyperparameters(tmp_path):
    train(tiny_config(), tmp_path, progress=False)
    with pytest.raises(WrongPriorError, match="with hyperpriors, but .* fixed hyperparameters"):
        run(tmp_path / "out", quick=True, model=str(tmp_path))


def test_shipped_gp_hyper_beats_mle_ii_on_small_datasets_of_its_prior():
    model = pfn.load("gp-hyper")
    prior = priors.from_dict(model.card["prior"])
    batch = prior.sample(24, 3 + 50, model.config.n_features, torch.Generator().manual_seed(7))
    x, y, d = batch.x, batch.y, batch.used_features
    x_train, y_train, x_test, y_test = x[:, :3], y[:, :3], x[:, 3:], y[:, 3:]
    pfn_mean = pfn_nll(model, x_train, y_train, x_test, y_test, d).mean().item()
    fitted = fit_mle(x_train, y_train, prior.kernel, 100)
    mean, var = gp_predictive(
        prior, x_train, y_train, x_test, fitted["lengthscale"], fitted["outputscale"], fitted["noise_var"]
    )
    mle_mean = gaussian_nll(y_test.double(), mean, var).mean().item()
    assert pfn_mean < mle_mean - 0.2, (pfn_mean, mle_mean)
