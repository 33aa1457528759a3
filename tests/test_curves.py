"""The learning-curve prior, pfn.curves.extrapolate with the shipped `curves` model, and the
curves benchmark's pieces."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import gen

import pfn
import priors
from pfn.curves import MAX_OBSERVED, extrapolate, merge_duplicates
from priors.curves import (
    FAMILIES,
    FAMILY_DIMS,
    LearningCurvePrior,
    family_parameters,
    grid,
    start_and_asymptote,
)

# each family at (x, parameters) against its formula written out with math
FORMULAS = {
    "pow3": ((3.0, 0.1, 0.5, 0.7), lambda x, c, a, al: c + a * x**-al),
    "pow4": ((3.0, 0.1, 0.5, 2.0, 0.7), lambda x, c, a, b, al: c + a * (x + b) ** -al),
    "log_power": ((3.0, 0.1, 0.5, 1.2, 2.0), lambda x, c, a, b, al: c + a / (1 + (x / math.exp(b)) ** al)),
    "exp3": ((3.0, 0.1, 0.5, 0.4), lambda x, c, a, b: c + a * math.exp(-b * x)),
    "exp4": ((3.0, 0.1, 0.5, 0.4, 0.8), lambda x, c, a, b, al: c + a * math.exp(-b * x**al)),
    "mmf": ((3.0, 0.1, 0.6, 0.5, 1.5), lambda x, al, be, k, d: al - (al - be) / (1 + (k * x) ** d)),
    "janoschek": ((3.0, 0.1, 0.6, 0.5, 1.5), lambda x, al, be, k, d: al - (al - be) * math.exp(-k * x**d)),
    "weibull": ((3.0, 0.1, 0.6, 0.5, 1.5), lambda x, al, be, k, d: al - (al - be) * math.exp(-((k * x) ** d))),
    "ilog2": ((3.0, 0.1, 0.5), lambda x, c, a: c + a / math.log(x + 1)),
}


@pytest.fixture(scope="module")
def model():
    return pfn.load("curves")


def prior_draws(n, seed=0):
    return LearningCurvePrior().curves(n, 32, np.random.default_rng(seed))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_matches_its_formula(family):
    (x, *params), formula = FORMULAS[family]
    assert float(FAMILIES[family](np.array(x), *params)) == pytest.approx(formula(x, *params), rel=1e-12)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sampled_parameters_start_at_y0_and_fall_towards_c(family):
    rng = np.random.default_rng(1)
    n = 200
    t, x = grid(n, 32, 0.5, rng)
    y0, c = start_and_asymptote(rng.uniform(size=(n, 2)))
    params = family_parameters(family, x[:, :1], x[:, -1:], y0, c, rng.uniform(size=(n, FAMILY_DIMS[family])))
    y = FAMILIES[family](x, *params)
    np.testing.assert_allclose(y[:, 0], y0[:, 0], rtol=1e-6)
    assert (np.diff(y, axis=1) <= 1e-9).all()  # error curves: non-increasing
    assert (y >= c - 1e-9).all() and (c >= 0).all() and (y0 <= 0.98 + 1e-12).all()


def test_prior_draws_have_the_documented_shape_and_ranges():
    batch = LearningCurvePrior().sample(64, 32, 3, gen(0))
    assert batch.x.shape == (64, 32, 3) and batch.y.shape == (64, 32)
    t = batch.x[:, :, 0]
    assert (batch.x[:, :, 1:] == 0).all() and (batch.used_features == 1).all()
    assert (t[:, 0] == 0).all() and (t[:, -1] == 1).all() and (t.diff(dim=1) >= 0).all()
    assert batch.y.min() > -0.2 and batch.y.max() < 1.2
    again = LearningCurvePrior().sample(64, 32, 3, gen(0))
    assert torch.equal(batch.y, again.y)
    _, x, _ = prior_draws(500)
    sizes = x[:, 0] > 1  # log-spaced training-set sizes start at 4 or more, epochs at 1
    assert 0.4 < sizes.mean() < 0.6 and (x[~sizes, 0] == 1).all()


def test_prior_round_trips_and_refuses_bad_fields():
    prior = LearningCurvePrior(families=("pow3", "mmf"), noise_high=0.01)
    assert priors.from_dict(prior.to_dict()) == prior
    with pytest.raises(ValueError, match="families must name"):
        LearningCurvePrior(families=("pow3", "cubic"))
    with pytest.raises(ValueError, match="ill_behaved_probability"):
        LearningCurvePrior(ill_behaved_probability=1.5)
    with pytest.raises(ValueError, match="noise_low <= noise_high"):
        LearningCurvePrior(noise_low=0.1, noise_high=0.01)


def test_intervals_are_calibrated_on_prior_draws(model):
    t, x, y = prior_draws(300, seed=7)
    covered, pit = [], []
    for i in range(len(y)):
        scale = "log" if x[i, 0] > 1 else "linear"
        dist = extrapolate(x[i, :8], y[i, :8], x[i, -1:], x_scale=scale, model=model)
        lower, upper = dist.interval(0.9)
        covered.append(lower[0] <= y[i, -1] <= upper[0])
        pit.append(dist.cdf(y[i, -1])[0])
    assert 0.84 <= np.mean(covered) <= 0.96
    assert 0.4 <= np.median(pit) <= 0.6


def test_extrapolate_is_invariant_to_the_units_of_x(model):
    x = np.array([1.0, 2, 3, 5, 8, 10])
    y = 0.2 + 0.5 * np.exp(-x / 4)
    query = np.array([12.0, 20])
    base = extrapolate(x, y, query, x_scale="linear", model=model)
    moved = extrapolate(3.5 * x - 7, y, 3.5 * query - 7, x_scale="linear", model=model)
    np.testing.assert_allclose(base.mean(), moved.mean(), atol=1e-5)
    sizes = np.array([16.0, 32, 64, 128])
    log_base = extrapolate(sizes, y[:4], [1024.0], model=model)
    log_scaled = extrapolate(sizes / 16, y[:4], [64.0], model=model)
    np.testing.assert_allclose(log_base.interval(0.9), log_scaled.interval(0.9), atol=1e-5)


def test_accuracy_and_loss_map_back_to_their_scale(model):
    x, error = np.array([16.0, 32, 64, 128]), np.array([0.5, 0.4, 0.33, 0.3])
    query = np.array([512.0, 2048])
    e = extrapolate(x, error, query, kind="error", model=model)
    a = extrapolate(x, 1 - error, query, kind="accuracy", model=model)
    np.testing.assert_allclose(a.mean(), 1 - e.mean(), atol=1e-6)
    np.testing.assert_allclose(a.quantile(0.2), 1 - e.quantile(0.8), atol=1e-6)
    np.testing.assert_allclose(a.cdf(0.7), 1 - e.cdf(0.3), atol=1e-6)
    np.testing.assert_allclose(a.logpdf(0.7), e.logpdf(0.3), atol=1e-5)
    assert (a.median() > a.interval(0.9)[0]).all() and (a.median() < a.interval(0.9)[1]).all()
    loss = extrapolate(x, 3 * error, query, kind="loss", model=model)
    one = extrapolate(x, error, query, kind="loss", model=model)
    np.testing.assert_allclose(loss.mean(), 3 * one.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss.logpdf(3 * one.median()), one.logpdf(one.median()) - math.log(3), atol=1e-5)


def test_duplicates_are_averaged_order_ignored_and_long_curves_grouped(model):
    x, y = np.array([16.0, 32, 64, 128]), np.array([0.5, 0.4, 0.33, 0.3])
    base = extrapolate(x, y, [1024.0], model=model)
    messy = extrapolate([64, 16, 128, 32, 64], [0.32, 0.5, 0.3, 0.4, 0.34], [1024.0], model=model)
    np.testing.assert_allclose(base.mean(), messy.mean(), atol=1e-6)
    epochs = np.arange(1.0, 101)
    long = extrapolate(epochs, 0.1 + 0.4 * epochs**-0.5, [200.0], x_scale="linear", model=model)
    assert len(epochs) > MAX_OBSERVED and 0.1 < float(long.median()[0]) < 0.15


def test_merge_duplicates_sorts_and_averages_repeats_and_passes_sorted_distinct_points():
    x, y = np.array([1.0, 2, 4, 8]), np.array([0.5, 0.4, 0.3, 0.25])
    for order in ([0, 1, 2, 3], [2, 0, 3, 1]):  # the second through np.unique
        merged_x, merged_y = merge_duplicates(x[order], y[order])
        np.testing.assert_array_equal(merged_x, x)
        np.testing.assert_array_equal(merged_y, y)
    merged_x, merged_y = merge_duplicates(np.array([4.0, 1, 2, 2]), np.array([0.3, 0.5, 0.4, 0.2]))
    np.testing.assert_array_equal(merged_x, [1.0, 2, 4])
    np.testing.assert_allclose(merged_y, [0.5, 0.3, 0.3])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (([16.0], [0.4], [64.0]), {}, "at least two observed points with distinct x"),
        (([16.0, 16.0], [0.4, 0.3], [64.0]), {}, "at least two observed points with distinct x"),
        (([16.0, np.nan], [0.4, 0.3], [64.0]), {}, "x_observed contains NaN"),
        (([16.0, 32.0], [0.4, np.inf], [64.0]), {}, "y_observed contains NaN"),
        (([16.0, 32.0], [0.4], [64.0]), {}, "same length"),
        (([16.0, 32.0], [0.4, 0.3], []), {}, "x_query must be a non-empty 1-D array"),
        (([16.0, 32.0], [0.4, 0.3], [8.0]), {}, "must not precede the first observed x"),
        (([0.0, 1.0], [0.4, 0.3], [8.0]), {}, "use x_scale='linear' for epochs"),
        (([16.0, 32.0], [1.2, 0.3], [64.0]), {}, r"needs y in \[0, 1\]"),
        (([16.0, 32.0], [-1.0, 0.3], [64.0]), {"kind": "loss"}, "needs y >= 0"),
        (([16.0, 32.0], [0.4, 0.3], [64.0]), {"kind": "f1"}, "kind must be"),
        (([16.0, 32.0], [0.4, 0.3], [64.0]), {"x_scale": "sqrt"}, "x_scale must be"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(model, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extrapolate(*args, model=model, **kwargs)


def test_distribution_refuses_bad_levels(model):
    dist = extrapolate([16.0, 32.0], [0.4, 0.3], [64.0], model=model)
    with pytest.raises(ValueError, match="alpha"):
        dist.interval(1.0)
    with pytest.raises(ValueError, match="q must lie"):
        dist.quantile(0.0)


def test_least_squares_fits_recover_their_own_curves():
    from benchmarks.curves import fit_predict

    x = np.array([16.0, 23, 32, 45, 64, 91, 128, 181, 256])
    truth = FAMILIES["pow3"](np.array([4096.0]) / 16, 0.12, 0.4, 0.6)
    _, sigma, ok = fit_predict("pow3", x, FAMILIES["pow3"](x / 16, 0.12, 0.4, 0.6), np.array([4096.0]))
    prediction, _, _ = fit_predict("pow3", x, FAMILIES["pow3"](x / 16, 0.12, 0.4, 0.6), np.array([4096.0]))
    assert ok and sigma == pytest.approx(1e-3) and prediction[0] == pytest.approx(truth[0], abs=1e-4)
    weibull = FAMILIES["weibull"](x / 16, 0.1, 0.7, 0.2, 0.8)
    prediction, _, ok = fit_predict("weibull", x, weibull, np.array([4096.0]))
    assert ok and prediction[0] == pytest.approx(FAMILIES["weibull"](256.0, 0.1, 0.7, 0.2, 0.8), abs=1e-3)


def test_lcdb_curves_keep_the_requested_split_only(tmp_path):
    from benchmarks.curves import lcdb_curves

    rows = ["openmlid,learner,size_train,size_test,outer_seed,inner_seed,traintime,score_train,score_valid,score_test"]
    for openmlid in (3, 4):
        for seed in (0, 1):
            for size in (16, 32, 64):
                rows.append(f"{openmlid},knn,{size},10,0,{seed},0.1,1.0,{0.6 + 0.1 * seed + size / 1000},0.7")
    path = tmp_path / "database-accuracy.csv"
    path.write_text("\n".join(rows) + "\n")
    (curve,) = lcdb_curves(path, "odd")
    assert curve["openmlid"] == 3 and curve["learner"] == "knn"
    np.testing.assert_allclose(curve["x"], [16, 32, 64])
    np.testing.assert_allclose(curve["y"], [1 - 0.65 - s / 1000 for s in (16, 32, 64)])
    with pytest.raises(ValueError, match="split must be one of"):
        lcdb_curves(path, "all")


def test_quick_benchmark_writes_its_report(tmp_path):
    pytest.importorskip("emcee")
    pytest.importorskip("matplotlib")
    from benchmarks.curves import lcdb_csv, run

    try:
        csv = lcdb_csv(None)
    except FileNotFoundError:
        pytest.skip("LCDB (pip install lcdb) is not installed")
    report = run(tmp_path, quick=True, data=str(csv))
    saved = json.loads((tmp_path / "curves.json").read_text())
    assert saved["split"] == "odd" and report["lcdb"]["n_curves"] == 15
    assert set(saved["lcdb"]["cuts"]) == {"1/16", "1/8", "1/4"}
    assert np.isfinite(saved["prior"]["nll"]["PFN"]) and saved["prior"]["speedup_over_mcmc"] > 1
    assert (tmp_path / "curves_lcdb.png").is_file()


def test_prior_draws_do_not_depend_on_the_process():
    code = (
        "import numpy as np; from priors.curves import LearningCurvePrior; "
        "print(LearningCurvePrior().curves(64, 32, np.random.default_rng(5))[2].sum().hex())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1 and outputs != {""}
