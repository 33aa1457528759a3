"""Numbers at the edges (issue 25): features and targets anywhere in the float64 range, wild
targets, one row, few rows, and rows predicted in batches of any size."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor

from pfn import PFNClassifier, PFNRegressor
from pfn.preprocessing import FLOAT_MAX, TablePreprocessor, TargetScale, few_rows_factor

HUGE = FLOAT_MAX / 1.01


def test_features_anywhere_in_the_float64_range_give_finite_inputs():
    rng = np.random.default_rng(0)
    n = 50
    X = np.column_stack(
        [
            rng.choice([-HUGE, HUGE], n) * rng.random(n),  # ±1.8e308: medians and IQRs overflowed
            rng.normal(size=n) * 1e-300,
            rng.normal(size=n) * 1e299 + 1e300,
            np.where(rng.random(n) < 0.8, 0.0, 1e-310),  # IQR 0, subnormal
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre = TablePreprocessor().fit(pd.DataFrame(X))
        wild = np.array([[HUGE, -HUGE, HUGE, HUGE], [-HUGE, HUGE, -HUGE, -HUGE], [0.0, 0.0, 0.0, 0.0]])
        for rows in (X, wild):  # rows far beyond the fit rows' range too
            assert np.isfinite(pre.transform(pd.DataFrame(rows))).all()
    y = X[:, 2] > 1e300
    clf = PFNClassifier(n_estimators=2, random_state=0, show_progress=False).fit(X, y)
    assert np.isfinite(clf.predict_proba(np.vstack([X, wild]))).all() and clf.score(X, y) > 0.8


def test_scaling_a_column_by_a_power_of_two_changes_nothing():
    """The overflow guard divides by powers of two, exactly: the inputs the model sees are the same."""
    rng = np.random.default_rng(1)
    X = rng.lognormal(size=(40, 3))
    scaled = X * np.array([2.0**900, 1.0, 2.0**-900])
    np.testing.assert_array_equal(
        TablePreprocessor().fit(pd.DataFrame(X)).transform(pd.DataFrame(X)),
        TablePreprocessor().fit(pd.DataFrame(scaled)).transform(pd.DataFrame(scaled)),
    )


@pytest.mark.parametrize("magnitude", [1e160, 1e300, HUGE])
def test_targets_anywhere_in_the_float64_range_give_finite_predictions(magnitude):
    """Targets above ~1e154 gave -inf: the standard deviation overflowed."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    y = np.clip(X[:, 0] / 3, -1, 1) * magnitude
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = PFNRegressor(n_estimators=2, random_state=0, show_progress=False).fit(X, y)
        dist = reg.predict_dist(X)
        mean, (lo, hi) = dist.mean(), dist.interval(0.9)
    assert np.isfinite(mean).all() and np.isfinite(lo).all() and np.isfinite(hi).all()
    assert np.corrcoef(mean / magnitude, y / magnitude)[0, 1] > 0.9
    assert np.isfinite(dist.logpdf(y) + np.log(magnitude)).all()


def test_target_scale_is_robust_and_agrees_with_the_plain_one_without_outliers():
    y = np.random.default_rng(3).normal(5.0, 2.0, 400)
    plain = TargetScale().fit(y)
    assert plain.loc == pytest.approx(y.mean()) and plain.scale == pytest.approx(y.std(ddof=1) * few_rows_factor(400))
    wild = TargetScale().fit(np.append(y, 1e8))
    assert abs(wild.loc - plain.loc) < 0.1 and wild.scale < 1.3 * plain.scale  # a plain std: 5e6
    for seed in range(5):  # a long tail is no outlier: the fences follow it
        skewed = np.random.default_rng(seed).lognormal(0.0, 2.0, 300)
        ratio = TargetScale().fit(skewed).scale / (skewed.std(ddof=1) * few_rows_factor(300))
        assert 0.5 < ratio <= 1.0
    huge = TargetScale().fit(np.array([HUGE, -HUGE, 0.0, HUGE / 2]))
    assert np.isfinite([huge.loc, huge.scale]).all() and huge.scale > 0
    assert np.isfinite(huge.transform(np.array([HUGE, -HUGE]))).all()


def test_one_wild_target_does_not_wreck_the_other_predictions():
    """One target of 1e8 among 400 standard-normal ones moved the median absolute error from
    0.08 to 27,000; a random forest stays at 0.09."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = X[:, 0] + 0.5 * np.sin(2 * X[:, 1]) + 0.1 * rng.normal(size=600)
    y = y / y[:400].std()
    y_train = y[:400].copy()
    y_train[7] = 1e8
    pfn = PFNRegressor(n_estimators=4, random_state=0, show_progress=False).fit(X[:400], y_train).predict(X[400:])
    forest = RandomForestRegressor(n_estimators=50, random_state=0).fit(X[:400], y_train).predict(X[400:])
    pfn_error, forest_error = np.median(np.abs(pfn - y[400:])), np.median(np.abs(forest - y[400:]))
    assert pfn_error <= 2 * forest_error, (pfn_error, forest_error)


def linear_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """y = linear in 2 columns + noise, offset; n train rows and 200 test rows."""
    w, noise, offset = rng.normal(size=2), rng.uniform(0.2, 1.0), 5 * rng.normal()
    X = rng.normal(size=(n + 200, 2))
    y = X @ w + noise * rng.normal(size=n + 200) + offset
    return X[:n], y[:n], X[n:], y[n:]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_intervals_from_few_rows_are_not_overconfident(n):
    """Central 80% and 90% intervals from 2, 3 and 5 train rows cover at least their level minus
    0.05 (not overconfident) and at most plus 0.075 (not uselessly wide): 40 linear tables,
    default settings. Measured with the two-stage Muon regressor: 0.857 / 0.948 with 2 rows (with
    two points the noise is barely known, so wide intervals are the honest answer); with the
    eight-stage regressor 0.76 / 0.90, 0.82 / 0.92 and 0.79 / 0.89.
    With the few-rows widening on the plain members only (the quantile-target members'
    transform undid it) they covered 0.76 / 0.89, 0.71 / 0.85 and 0.72 / 0.84; before any
    widening a 90% interval covered 42% with 2 rows and 64% with 3: the targets were scaled by
    their own standard deviation, which the model takes as known."""
    levels = np.array([0.8, 0.9])
    covered = []
    for seed in range(40):
        X, y, X_test, y_test = linear_data(n, np.random.default_rng(1000 * n + seed))
        dist = PFNRegressor(random_state=seed, show_progress=False).fit(X, y).predict_dist(X_test)
        covered.append([np.mean((y_test >= lo) & (y_test <= hi)) for lo, hi in map(dist.interval, levels)])
    coverage = np.mean(covered, axis=0)  # [2]
    assert ((coverage > levels - 0.05) & (coverage < levels + 0.075)).all(), coverage


@pytest.mark.parametrize("make", [PFNClassifier, PFNRegressor])
def test_a_rows_prediction_does_not_depend_on_its_batch(make):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(150, 4))
    y = X[:, 0] + X[:, 1] ** 2
    y_train = y[:100] > 1 if make is PFNClassifier else y[:100]
    est = make(n_estimators=2, random_state=0, show_progress=False).fit(X[:100], y_train)
    method = est.predict_proba if make is PFNClassifier else lambda rows: est.predict_quantiles(rows, [0.1, 0.5, 0.9])
    full = method(X)
    for size in (1, 7, 64, 65):
        parts = np.concatenate([method(X[i : i + size]) for i in range(0, len(X), size)])
        np.testing.assert_array_equal(parts, full)
    order = rng.permutation(len(X))
    np.testing.assert_array_equal(method(X[order]), full[order])
    chunked = est.set_params(chunk_rows=16).predict(X)
    np.testing.assert_array_equal(chunked, est.set_params(chunk_rows=1024).predict(X))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda d: d.interval("0.9"), TypeError, r"alpha must be a number strictly between 0 and 1.*'0\.9' \(str\)"),
        (lambda d: d.interval(True), TypeError, r"alpha must be a number .*True \(bool\)"),
        (lambda d: d.interval(float("nan")), ValueError, "alpha must be strictly between 0 and 1, got nan"),
        (lambda d: d.logpdf("a"), TypeError, r"y must be a number or an array of numbers .*'a' \(str"),
        (lambda d: d.cdf([1 + 2j]), TypeError, r"y must be a number or an array of numbers .*complex"),
        (lambda d: d.cdf([[1.0], [1.0, 2.0]]), ValueError, "y must be a number or an array of numbers, got a ragged"),
    ],
)
def test_distribution_arguments_that_are_not_numbers_are_named(call, error, message):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    dist = PFNRegressor(n_estimators=1).fit(X, X[:, 0]).predict_dist(X[:3])
    with pytest.raises(error, match=message):
        call(dist)
    assert np.isfinite(dist.logpdf(np.zeros(3))).all() and dist.interval(np.float32(0.5))[0].shape == (3,)
