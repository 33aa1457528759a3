"""The bar distribution checked against numerical integration and Monte-Carlo."""

import bisect
import math

import numpy as np
import pytest
import torch
from conftest import gen
from scipy import stats
from scipy.integrate import quad

from pfn.estimators import PredictiveDistribution
from pfn.heads import (
    BarDistribution,
    dataset_tail_scales,
    equal_mass_borders,
    prior_tail_scales,
    smoothed_logits,
    smoothing_matrix,
)


@pytest.fixture
def dist():
    borders = equal_mass_borders(torch.randn(50_000, generator=gen()), 40)
    logits = 2 * torch.randn(3, 40, generator=gen(1))
    logits[1, 0] = logits[2, -1] = 4.0  # heavy left tail in one, heavy right tail in another
    return BarDistribution(borders.double(), logits.double())


def integrate(dist, j, fn=lambda y: 1.0, lo=-60.0, hi=60.0):
    """∫ fn(y) pdf_j(y) dy over [lo, hi], split at the bucket borders (scipy quad)."""
    one = BarDistribution(dist.borders, dist.logits[j])
    inner = [b for b in dist.borders.tolist() if lo < b < hi]

    def f(y):
        return fn(y) * one.logpdf(torch.tensor(y, dtype=torch.float64)).exp().item()

    edges = [lo, *inner, hi]
    return sum(integrate_quad(f, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True))


def integrate_quad(f, a, b):
    return quad(f, a, b, epsabs=1e-11, epsrel=1e-11, limit=200)[0]


def test_equal_mass_borders_split_samples_evenly():
    samples = torch.randn(100_000, generator=gen())
    borders = equal_mass_borders(samples, 10)
    counts = torch.histogram(samples, borders).hist
    assert borders.shape == (11,) and counts.min() >= 9_990 and counts.max() <= 10_010


def test_density_integrates_to_one_and_cdf_is_its_integral(dist):
    for j in range(3):
        assert integrate(dist, j) == pytest.approx(1.0, abs=1e-8)
        for y in (-3.0, -0.7, 0.0, 0.3, 2.5, 5.0):
            assert dist.cdf(y)[j].item() == pytest.approx(integrate(dist, j, hi=y), abs=1e-8)


def test_mean_and_variance_match_integration(dist):
    for j in range(3):
        mean = integrate(dist, j, lambda y: y)
        var = integrate(dist, j, lambda y: y * y) - mean**2
        assert dist.mean()[j].item() == pytest.approx(mean, abs=1e-8)
        assert dist.variance()[j].item() == pytest.approx(var, abs=1e-7)


def test_quantile_inverts_cdf_including_tails(dist):
    levels = torch.tensor([1e-4, 0.01, 0.2, 0.5, 0.77, 0.99, 0.9999], dtype=torch.float64)
    q = dist.quantile(levels)  # [3, 7]
    assert q.shape == (3, 7)
    torch.testing.assert_close(dist.cdf(q.T).T, levels.expand(3, -1), atol=1e-7, rtol=0)
    assert bool((q[:, 0] < dist.borders[1]).all()) and bool((q[:, -1] > dist.borders[-2]).all())
    torch.testing.assert_close(dist.median(), dist.quantile(0.5))


def test_samples_follow_the_distribution(dist):
    draws = dist.sample(20_000, gen(2))  # [n, 3]
    assert draws.shape == (20_000, 3)
    for j in range(3):
        one = BarDistribution(dist.borders, dist.logits[j])
        p = stats.kstest(draws[:, j].numpy(), lambda y, one=one: one.cdf(torch.as_tensor(y)).numpy()).pvalue
        assert p > 1e-3


def test_nll_equals_minus_log_probability_over_width_inside():
    borders = torch.tensor([-2.0, -1.0, 0.0, 0.5, 2.0])
    logits = torch.tensor([0.1, 0.4, -0.3, 0.2])
    d = BarDistribution(borders, logits)
    p = logits.softmax(-1)
    torch.testing.assert_close(d.nll(0.25), -torch.log(p[2] / 0.5))
    torch.testing.assert_close(d.nll(-0.5), -torch.log(p[1] / 1.0))
    # tails: half-normal with half its mass inside the outer bucket
    torch.testing.assert_close(d.cdf(-1.0), p[0])
    torch.testing.assert_close(d.cdf(-2.0), p[0] / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(1 - d.cdf(2.0), p[-1] / 2, atol=1e-6, rtol=0)


def test_accepts_numpy_and_broadcasts(dist):
    y = np.array([0.1, -0.2, 0.3])
    assert dist.logpdf(y).shape == (3,)
    assert dist.cdf(0.0).shape == (3,)
    assert dist.logpdf(np.zeros((5, 3))).shape == (5, 3)


@pytest.mark.parametrize("bad", [0.0, 1.0, [0.5, 1.2], -0.1, float("nan"), [0.5, float("nan")]])
def test_quantile_rejects_levels_outside_0_1(dist, bad):
    with pytest.raises(ValueError, match=r"q \(the quantile levels\) must lie strictly between 0 and 1, got"):
        dist.quantile(bad)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda d: d.logpdf(np.zeros(5)),
            ValueError,
            r"y has shape \(5,\), which does not broadcast against the batch shape \(3,\)",
        ),
        (lambda d: d.cdf(np.zeros((2, 4))), ValueError, r"y has shape \(2, 4\), .*batch shape \(3,\)"),
        (lambda d: d.nll([0.0, 1.0]), ValueError, r"y has shape \(2,\)"),
        (lambda d: d.logpdf("abc"), TypeError, "y must be real numbers, got ndarray"),
        (lambda d: d.cdf([1.0, None, 2.0]), TypeError, "y must be real numbers"),
        (lambda d: d.cdf(np.array([1 + 2j, 0, 0])), TypeError, "y must be real numbers"),
        (lambda d: d.logpdf([[0.0], [0.0, 1.0]]), ValueError, "y must be a number or an array of numbers"),
        (lambda d: d.logpdf(np.array([0.0, np.nan, 1.0])), ValueError, "y contains NaN"),
        (lambda d: d.cdf_at([0.0, np.nan]), ValueError, "points contains NaN"),
        (lambda d: d.cdf_at(["a"]), TypeError, "points must be real numbers"),
        (
            lambda d: d.quantile([[0.1, 0.9]]),
            ValueError,
            r"q \(the quantile levels\) must be a scalar or 1-D, got shape \(1, 2\)",
        ),
        (lambda d: d.quantile("0.5"), TypeError, "q must be real numbers"),
        (lambda d: d.sample(0), ValueError, r"n \(the number of draws\) must be at least 1, got 0"),
        (lambda d: d.sample(-3), ValueError, "must be at least 1, got -3"),
        (lambda d: d.sample(2.5), TypeError, r"n \(the number of draws\) must be an integer, got float 2.5"),
        (lambda d: d.sample(True), TypeError, "must be an integer, got bool"),
        (lambda d: d.sample(4, 0), TypeError, "generator must be a torch.Generator or None, got int"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_expected_shape(dist, call, error, message):
    with pytest.raises(error, match=message):
        call(dist)


@pytest.mark.parametrize(
    "borders, logits, error, message",
    [
        ([0.0, 1.0, 2.0], torch.zeros(2), TypeError, "borders must be a floating-point tensor, got list"),
        (torch.arange(3), torch.zeros(2), TypeError, "borders must be a floating-point tensor"),
        (torch.arange(3.0), np.zeros(2), TypeError, "logits must be a floating-point tensor, got ndarray"),
        (
            torch.zeros(2, 3),
            torch.zeros(2),
            ValueError,
            r"borders must be 1-D with at least 3 entries, got shape \(2, 3\)",
        ),
        (torch.arange(3.0), torch.tensor(0.0), ValueError, r"logits \[..., K\] must have K = 2 buckets"),
        (torch.tensor([0.0, 2.0, 1.0]), torch.zeros(2), ValueError, "borders must be finite and strictly increasing"),
        (torch.tensor([0.0, 1.0, 1.0]), torch.zeros(2), ValueError, "borders must be finite and strictly increasing"),
        (torch.tensor([0.0, float("nan"), 1.0]), torch.zeros(2), ValueError, "finite and strictly increasing"),
        (torch.tensor([0.0, 1.0, float("inf")]), torch.zeros(2), ValueError, "finite and strictly increasing"),
        (torch.tensor([0.0, 1.0, 1.0 + 1e-12], dtype=torch.float64), torch.zeros(2), ValueError, "in torch.float32"),
    ],
)
def test_constructor_refuses_bad_borders_and_logits(borders, logits, error, message):
    with pytest.raises(error, match=message):
        BarDistribution(borders, logits)


def test_tail_scales_of_the_wrong_type_are_refused():
    with pytest.raises(TypeError, match="tail_scales must be real numbers"):
        BarDistribution(torch.arange(3.0), torch.zeros(2), ("a", 1.0))


def test_infinite_values_give_the_limits_not_nan(dist):
    y = torch.tensor([float("inf"), float("-inf"), float("inf")], dtype=torch.float64)
    assert dist.logpdf(y).tolist() == [float("-inf")] * 3
    expected = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(dist.cdf(y), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(dist.cdf_at(y[:2]), expected[:2].expand(3, 2), atol=1e-12, rtol=0)


def test_numpy_integers_are_sizes(dist):
    assert dist.sample(np.int64(4), gen()).shape == (4, 3)
    torch.testing.assert_close(dist.sample(np.int64(4), gen()), dist.sample(4, gen()))


def test_the_estimators_distribution_checks_through_the_bar(dist):
    """PredictiveDistribution (what PFNRegressor.predict_dist returns) delegates to the bar
    distribution, so its arguments are checked with the same messages."""
    wrapped = PredictiveDistribution(dist, 10.0, 2.0)
    with pytest.raises(
        ValueError, match=r"y has shape \(5,\), which does not broadcast against the batch shape \(3,\)"
    ):
        wrapped.logpdf(np.zeros(5))
    with pytest.raises(ValueError, match="y contains NaN"):
        wrapped.cdf([0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match=r"n \(the number of draws\) must be at least 1, got 0"):
        wrapped.sample(0, random_state=0)
    with pytest.raises(ValueError, match="strictly between 0 and 1, got 1.5"):
        wrapped.quantile([0.5, 1.5])
    with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
        wrapped.interval(1.0)
    # on the original scale: loc + scale * Z
    np.testing.assert_allclose(wrapped.cdf(10.0 + 2.0 * 0.3), dist.cdf(0.3).numpy())


def test_constructor_checks_shapes():
    with pytest.raises(ValueError, match=r"K = 4 buckets \(one fewer than the borders\), got shape \(3,\)"):
        BarDistribution(torch.arange(5.0), torch.zeros(3))
    with pytest.raises(ValueError, match="repeated values"):
        equal_mass_borders(torch.zeros(100), 4)


def test_prior_tail_scales_match_the_mean_excess_beyond_the_outer_borders():
    samples = torch.randn(200_000, generator=gen(2), dtype=torch.float64)
    borders = equal_mass_borders(samples, 20).double()
    left, right = prior_tail_scales(samples, borders)
    for scale, excess in (
        (left, borders[1] - samples[samples < borders[1]]),
        (right, samples[samples > borders[-2]] - borders[-2]),
    ):
        assert scale * np.sqrt(2 / np.pi) == pytest.approx(float(excess.mean()), rel=1e-9)
    # with all mass in the right tail, the mean is the border plus the tail's mean excess
    logits = torch.full((20,), -60.0, dtype=torch.float64)
    logits[-1] = 0.0
    d = BarDistribution(borders, logits, (left, right))
    assert float(d.mean()) == pytest.approx(float(borders[-2]) + right * np.sqrt(2 / np.pi), rel=1e-6)
    assert integrate(d, ..., lambda y: 1.0) == pytest.approx(1.0, abs=1e-6)
    for bad in ((1.0, 0.0), (1.0, float("nan")), (1.0,), (1e-50, 1.0)):
        with pytest.raises(ValueError, match="tail_scales must be two positive numbers"):
            BarDistribution(borders.float(), logits.float(), bad)
    with pytest.raises(ValueError, match="no samples lie beyond the outer borders"):
        prior_tail_scales(torch.zeros(10), borders)


def test_a_datasets_tail_scales_pool_its_excess_with_the_prior():
    borders = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)  # inner outer borders at -2.5 and 2.5
    targets = torch.tensor([-5.5, -3.5, 0.0, 1.0, 2.0])  # two beyond the left border, none beyond the right
    left, right = dataset_tail_scales(targets, borders, prior=(1.0, 2.0), prior_rows=2.0)
    to_scale = np.sqrt(np.pi / 2)
    assert left == pytest.approx(((3.0 + 1.0) * to_scale + 2.0 * 1.0) / (2 + 2.0))
    assert right == 2.0  # nothing beyond: the prior's
    many = torch.full((10_000,), -7.5, dtype=torch.float64)  # the data outweighs the prior
    assert dataset_tail_scales(many, borders, (1.0, 2.0))[0] == pytest.approx(5.0 * to_scale, rel=1e-3)


def test_cdf_at_shared_points_matches_the_broadcast_cdf(dist):
    points = torch.linspace(-5, 5, 41, dtype=torch.float64)
    shared = dist.cdf_at(points)  # [3, 41]
    broadcast = dist.cdf(points[:, None].expand(-1, 3))  # [41, 3]
    torch.testing.assert_close(shared, broadcast.T)


def definition(d, j, y):
    """(log density, cdf) of distribution j of d at the number y, from the definition in the
    module docstring, in Python floats: the reference for the vectorised methods, which skip the
    tails' formulas when no value lies in a tail."""
    b, p = d.borders.tolist(), d.logits[j].double().softmax(-1).tolist()
    k = bisect.bisect_left(b[1:-1], y)  # as torch.bucketize: b[k] < y <= b[k + 1]
    if k in (0, len(p) - 1):
        scale, beyond = (float(d.left_scale), b[1] - y) if k == 0 else (float(d.right_scale), y - b[-2])
        log_density = math.log(2 / scale) - 0.5 * math.log(2 * math.pi) - 0.5 * (beyond / scale) ** 2
        share = math.erf(beyond / (scale * math.sqrt(2)))  # of the tail's mass, from its border outwards
        within = 1 - share if k == 0 else share
        return math.log(p[k]) + log_density, sum(p[:k]) + p[k] * within
    return math.log(p[k] / (b[k + 1] - b[k])), sum(p[:k]) + p[k] * (y - b[k]) / (b[k + 1] - b[k])


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_logpdf_and_cdf_match_the_definition_with_and_without_values_in_the_tails(dist, dtype, tolerance):
    d = BarDistribution(dist.borders.to(dtype), dist.logits.to(dtype), (0.3, 0.5))
    inner = torch.linspace(float(d.borders[1]) + 0.01, float(d.borders[-2]), 25, dtype=dtype)
    mixed = torch.linspace(-4.0, 4.0, 25, dtype=dtype)  # both tails and the inner buckets
    assert mixed[0] < d.borders[1] and mixed[-1] > d.borders[-2]
    for y in (inner, mixed):
        grid = y[:, None].expand(-1, 3)  # [25, 3]
        expected = torch.tensor([[definition(d, j, float(v)) for j in range(3)] for v in y], dtype=torch.float64)
        torch.testing.assert_close(d.logpdf(grid).double(), expected[..., 0], atol=tolerance, rtol=tolerance)
        torch.testing.assert_close(d.cdf(grid).double(), expected[..., 1], atol=tolerance, rtol=tolerance)
        torch.testing.assert_close(d.cdf_at(y).double(), expected[..., 1].T, atol=tolerance, rtol=tolerance)


def test_smoothing_a_bucketed_gaussian_widens_it_by_the_kernel():
    """On buckets much narrower than the kernel, smoothing N(mu, s²) gives N(mu, s² + h²)."""
    borders = torch.cat([torch.tensor([-30.0]), torch.linspace(-4, 4, 801), torch.tensor([30.0])]).double()
    mu, s, h = 0.3, 0.4, 0.2
    cdf = torch.special.ndtr((borders[1:-1] - mu) / s)
    probs = torch.cat([cdf[:1], cdf.diff(), 1 - cdf[-1:]])
    smoothed = smoothed_logits(probs.log(), smoothing_matrix(borders, h)).softmax(-1)
    wide = torch.special.ndtr((borders[1:-1] - mu) / math.hypot(s, h))
    expected = torch.cat([wide[:1], wide.diff(), 1 - wide[-1:]])
    torch.testing.assert_close(smoothed, expected, atol=1e-5, rtol=0)


def test_smoothing_keeps_mass_and_leaves_wide_buckets_and_the_tails_alone():
    borders = torch.tensor([-9.0, -2.0, 0.0, 2.0, 9.0]).double()
    matrix = smoothing_matrix(borders, 0.01)  # buckets 200 kernel widths wide
    torch.testing.assert_close(matrix.sum(1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(matrix, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    matrix = smoothing_matrix(borders, 3.0)
    assert matrix[0, 0] == matrix[-1, -1] == 1.0 and bool((matrix[1:-1, 0] > 0.1).all())


@pytest.mark.parametrize("width", [0.0, -0.1, math.inf, math.nan])
def test_smoothing_refuses_a_width_that_is_not_positive(width):
    with pytest.raises(ValueError, match="width .* must be positive and finite"):
        smoothing_matrix(torch.linspace(-1, 1, 5), width)
