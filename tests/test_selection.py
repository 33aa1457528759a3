"""In-context validation (column selection, stacking weights), the regressor's quantile-target
members and target-encoding members."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.integrate import trapezoid
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import TargetEncoder

from pfn import PFNClassifier, PFNRegressor
from pfn.preprocessing import QuantileTarget, TablePreprocessor, TargetEncodedColumns
from pfn.selection import (
    PRIOR_ROWS,
    PSEUDO_ROWS,
    TOLERANCE,
    candidate_sizes,
    likelihood_stacking,
    quadratic_stacking,
    select_features,
)


def gaussian_least_squares_score(x_context, y_context, x_held, y_held):
    """Held-out log-likelihood of least squares with the context's residual spread."""
    fit = LinearRegression().fit(x_context, y_context)
    spread = np.std(y_context - fit.predict(x_context)) + 1e-9
    return float(stats.norm.logpdf(y_held, fit.predict(x_held), spread).mean())


def test_candidate_sizes_halve_down_to_two():
    assert candidate_sizes(13) == [13, 7, 4, 2]
    assert candidate_sizes(100) == [100, 50, 25, 13, 7, 4, 2]
    assert candidate_sizes(3) == [3, 2]


def test_selection_keeps_the_informative_columns_and_drops_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 12))
    y = x[:, 0] + 2 * x[:, 3] + 0.1 * rng.normal(size=120)
    selection = select_features(x, y, False, gaussian_least_squares_score, max_features=100)
    kept, scores = selection.best, selection.scores
    assert set(kept) >= {0, 3} and len(kept) < 12
    assert sorted(scores) == [2, 3, 6, 12] and scores[len(kept)] == max(scores.values())
    assert list(kept) == sorted(kept)
    assert set(selection.wide) >= set(kept)  # the wider set holds the best one
    within = [k for k in scores if scores[k] >= scores[len(kept)] - TOLERANCE]
    assert len(selection.wide) == max(within)


@pytest.mark.parametrize(
    ("by_size", "best", "wide"),
    [
        ({8: -0.68, 4: -0.60, 2: -0.62}, 4, 8),  # all columns within the tolerance: the wide set is all
        ({8: -0.90, 4: -0.60, 2: -0.62}, 4, 4),  # more columns clearly worse: no wider set
        ({8: -0.75, 4: -0.65, 2: -0.60}, 2, 4),  # the widest within the tolerance, not always all
    ],
)
def test_the_wide_set_is_the_most_columns_within_the_tolerance(by_size, best, wide):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(80, 8)), rng.normal(size=80)

    def score_by_size(x_context, y_context, x_held, y_held):
        return by_size[x_context.shape[1]]

    selection = select_features(x, y, False, score_by_size, max_features=100)
    assert (len(selection.best), len(selection.wide)) == (best, wide)
    assert set(selection.best) <= set(selection.wide)


def test_selection_respects_the_model_limit_and_skips_small_tables():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 10)), rng.normal(size=60)
    selection = select_features(x, y, False, gaussian_least_squares_score, max_features=4)
    assert len(selection.best) <= 4 and len(selection.wide) <= 4 and max(selection.scores) == 4
    selection = select_features(x[:19], y[:19], False, gaussian_least_squares_score, 100)
    assert list(selection.best) == list(selection.wide) == list(range(10)) and selection.scores == {}


def test_estimators_see_the_selected_columns():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 12))
    y = 3 * X[:, 0] + 2 * X[:, 1] + 0.1 * rng.normal(size=200)
    reg = PFNRegressor(n_estimators=2, random_state=0, show_progress=False).fit(X, y)
    assert {0, 1} <= set(reg.features_) and len(reg.features_) < 12
    reg4 = PFNRegressor(n_estimators=4, random_state=0, show_progress=False).fit(X, y)
    pools = [reg4.features_, reg4.features_, reg4.wide_features_, reg4.wide_features_]
    for member, pool in zip(reg4.members_, pools, strict=True):  # half the members see the wide set
        assert sorted(member.features) == sorted(pool)
    assert reg.score(X, y) > 0.9
    whole = PFNRegressor(n_estimators=1, select_features=False, show_progress=False).fit(X, y)
    assert list(whole.features_) == list(range(12)) and whole.selection_scores_ == {}
    again = PFNRegressor(n_estimators=2, random_state=1, show_progress=False).fit(X, y)
    assert list(again.features_) == list(reg.features_)  # fixed seeds: deterministic
    with pytest.raises(ValueError, match=r"'select_features' parameter of PFN\w+ must be an instance of 'bool'"):
        PFNClassifier(select_features="yes").fit(X, y > 0)


def test_a_quantile_member_is_mapped_back_onto_the_model_buckets():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(150, 3))
    y = np.exp(X[:, 0] + 0.3 * rng.normal(size=150))  # skewed target
    reg = PFNRegressor(n_estimators=2, select_features=False, random_state=0, show_progress=False).fit(X, y)
    member = reg.members_[1]
    assert member.target_map is not None and reg.members_[0].target_map is None
    x = reg._transformed(X[:4])
    logits = reg._member_forward(member, x)  # [4, K]
    mapped = reg._member_probs(member, logits)  # [4, K]
    # reference: draws from the member's own distribution, mapped back through the inverse
    # quantile transform (and its linear continuation beyond the train range), binned on the
    # model's buckets
    draws = reg._bar(logits).sample(200_000, torch.Generator().manual_seed(0)).double().numpy()  # [S, 4]
    target = member.target_map
    back = target.quantile_.inverse_transform((draws * target.scale_ + target.mean_).reshape(-1, 1))
    back = back.reshape(draws.shape)
    top, bottom = target.transform(np.array([target.high_, target.low_]))
    back = np.where(draws > top, target.high_ + (draws - top) / target.high_slope_, back)
    back = np.where(draws < bottom, target.low_ - (bottom - draws) / target.low_slope_, back)
    borders = reg.pfn_.borders.double().numpy()
    for row in range(4):
        counts = np.histogram(np.clip(back[:, row], borders[0], borders[-1]), borders)[0] / len(back)
        np.testing.assert_allclose(counts, mapped[row], atol=4e-3)
    np.testing.assert_allclose(mapped.sum(axis=1), 1.0, atol=1e-9)


def test_members_input_transforms_by_task():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 3))
    y = X[:, 0] + 0.1 * rng.normal(size=60)
    reg8 = PFNRegressor(n_estimators=8, select_features=False, random_state=0, show_progress=False).fit(X, y)
    kinds = [type(m.transform).__name__ if m.transform is not None else None for m in reg8.members_]
    assert kinds == [None, "PowerTransformer", None, "PowerTransformer"] + ["TargetEncodedColumns"] * 4
    assert [m.target_map is not None for m in reg8.members_] == [False, True] * 4
    # every pairing of input transform and column set among the first four members, and of
    # target transform and column set among the target-encoding ones
    assert len({(kinds[i], i // 2 % 2) for i in range(4)}) == 4
    assert len({(m.target_map is not None, i // 2 % 2) for i, m in enumerate(reg8.members_) if i >= 4}) == 4
    clf = PFNClassifier(n_estimators=8, select_features=False, random_state=0, show_progress=False).fit(X, y > 0)
    kinds = [type(m.transform).__name__ if m.transform is not None else None for m in clf.members_]
    assert kinds == [None, "QuantileTransformer", "PowerTransformer", None] + ["TargetEncodedColumns"] * 4
    assert all(m.transform.target == "classes" for m in clf.members_[4:])


def test_target_encoding_replaces_few_valued_columns_by_their_target_means():
    rng = np.random.default_rng(11)
    n = 600
    code = rng.integers(0, 6, n)  # a 6-level category code in arbitrary order
    effect = np.array([0.5, -2.0, 1.5, 0.0, -1.0, 2.5])
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n), code]).astype(float)  # continuous, binary, code
    y = X[:, 0] + effect[code] + 0.3 * rng.normal(size=n)
    encoding = TargetEncodedColumns(seed=0)
    out = encoding.fit_transform(X, y)
    assert list(encoding.columns_) == [2]  # only the code: the binary and continuous columns pass through
    np.testing.assert_array_equal(out[:, :2], X[:, :2])
    assert out[:, 2].mean() == pytest.approx(0.0, abs=1e-9) and out[:, 2].std() == pytest.approx(1.0)
    levels = encoding.transform(np.column_stack([np.zeros(6), np.zeros(6), np.arange(6)]))[:, 2]  # [6]
    assert stats.spearmanr(levels, effect).statistic == pytest.approx(1.0)  # codes ordered by what they do
    reference = TargetEncoder(target_type="continuous").fit(X[:, [2]], y).transform(np.arange(6)[:, None])[:, 0]
    np.testing.assert_allclose(levels, (reference - encoding.mean_[0]) / encoding.scale_[0], rtol=1e-6)


def test_target_encoding_of_classes_gives_the_shares_of_all_classes_but_one():
    rng = np.random.default_rng(14)
    n = 900
    code = rng.integers(0, 5, n)
    share = rng.dirichlet(np.ones(3), size=5)  # [5 levels, 3 classes]
    y = np.array([rng.choice(3, p=share[c]) for c in code])
    X = np.column_stack([rng.normal(size=n), code, rng.integers(0, 4, n)]).astype(float)  # continuous, two codes
    encoding = TargetEncodedColumns(target="classes", seed=0)
    out = encoding.fit_transform(X, y)
    assert out.shape == (n, 1 + 2 * 2)  # the continuous column, then 2 shares per code column
    np.testing.assert_array_equal(out[:, 0], X[:, 0])
    new = encoding.transform(np.column_stack([np.zeros(5), np.arange(5), np.zeros(5)]))  # [5, 5]
    for k in range(2):  # the shares of classes 0 and 1 by level, as the encoder estimated them
        assert stats.spearmanr(new[:, 1 + k], share[:, k]).statistic > 0.8
    binary = TargetEncodedColumns(target="classes", seed=0).fit_transform(X, (y == 1).astype(int))
    assert binary.shape == (n, 3)  # one share per code column with two classes
    narrow = TargetEncodedColumns(target="classes", max_columns=4, seed=0)
    assert narrow.fit_transform(X, y).shape == (n, 4)  # room for one encoded column only
    assert list(narrow.columns_) == [1]


def test_target_encoding_of_the_fit_rows_never_uses_their_own_targets():
    """With a target unrelated to a 40-level code, an in-sample encoding correlates with the
    target (each row's own target is in its level's mean); the cross-fitted one does not."""
    rng = np.random.default_rng(12)
    in_sample, cross_fitted = [], []
    for _ in range(20):
        X = rng.integers(0, 40, (120, 1)).astype(float)
        y = rng.normal(size=120)
        encoding = TargetEncodedColumns(max_levels=50, seed=0)
        cross_fitted.append(np.corrcoef(encoding.fit_transform(X, y)[:, 0], y)[0, 1])
        in_sample.append(np.corrcoef(encoding.transform(X)[:, 0], y)[0, 1])
    assert np.mean(in_sample) > 0.3
    assert np.mean(cross_fitted) < 0.1


def test_target_encoding_members_are_fitted_on_each_context_only():
    """Validation rebuilds a member on part of the rows: its encoding must come from those rows."""
    rng = np.random.default_rng(13)
    X = np.column_stack([rng.normal(size=200), rng.integers(0, 5, 200)]).astype(float)
    y = X[:, 0] + np.array([0.0, 2.0, -1.0, 1.0, -2.0])[X[:, 1].astype(int)]
    reg = PFNRegressor(n_estimators=5, select_features=False, random_state=0, show_progress=False).fit(X, y)
    member = reg.members_[4]
    assert isinstance(member.transform, TargetEncodedColumns)
    x = reg._transformed(X)
    plan = reg._plan(4, len(x), None, np.random.RandomState(0))
    template = reg._fit_transform(plan, x)
    assert not hasattr(template, "columns_")  # left unfitted: fitted per context in _build
    z = ((y - reg.y_mean_) / reg.y_scale_).astype(np.float32)
    first, second = reg._build(plan, template, x[:100], z[:100]), reg._build(plan, template, x[100:], z[100:])
    assert not hasattr(template, "columns_")
    assert first.transform is not second.transform
    np.testing.assert_allclose(first.transform.encoder_.target_mean_, z[:100].mean(), rtol=1e-5)
    np.testing.assert_allclose(second.transform.encoder_.target_mean_, z[100:].mean(), rtol=1e-5)


def test_likelihood_stacking_recovers_the_weights_of_a_mixture():
    rng = np.random.default_rng(6)
    n = 20_000
    from_first = rng.random(n) < 0.7
    y = np.where(from_first, rng.normal(-2, 1, n), rng.normal(2, 1, n))
    log_likelihood = np.stack([stats.norm.logpdf(y, -2, 1), stats.norm.logpdf(y, 2, 1)], axis=1)  # [n, 2]
    np.testing.assert_allclose(likelihood_stacking(log_likelihood), [0.7, 0.3], atol=0.01)
    # a third member that explains nothing better gets (almost) no weight
    worse = np.concatenate([log_likelihood, stats.norm.logpdf(y, 0, 10)[:, None]], axis=1)
    weights = likelihood_stacking(worse)
    assert weights[2] < 0.01 and weights.sum() == pytest.approx(1.0)
    # with few rows the prior pulls the weights towards equal ones; a zero density counts as finite
    few = np.array([[0.0, -np.inf], [0.0, -np.inf]])  # 2 rows, member 1 gives them no density
    np.testing.assert_allclose(likelihood_stacking(few), [(2 + PSEUDO_ROWS) / (2 + 2 * PSEUDO_ROWS), 0.25])


def test_quadratic_stacking_minimises_the_brier_score_on_the_simplex():
    rng = np.random.default_rng(6)
    n, k = 4000, 3

    def pulled(weights, rows):  # the minimiser pulled towards equal weights by the prior rows
        return (rows * np.asarray(weights) + PRIOR_ROWS / len(weights)) / (rows + PRIOR_ROWS)

    y = rng.integers(k, size=n)
    onehot = np.eye(k)[y]
    truth = 0.8 * onehot + 0.2 / k  # a calibrated member
    members = np.stack([truth, np.full((n, k), 1 / k), np.roll(truth, 1, axis=1)], axis=1)  # [n, 3, k]
    np.testing.assert_allclose(quadratic_stacking(members, onehot), pulled([1, 0, 0], n), atol=1e-6)
    # two members that are each half right: the mixture beats either, the weights are equal
    left = np.where(rng.random((n, 1)) < 0.5, onehot, 1 / k)
    right = np.where(left == onehot, 1 / k, onehot)  # right where left is vague and vice versa
    np.testing.assert_allclose(quadratic_stacking(np.stack([left, right], axis=1), onehot), [0.5, 0.5], atol=0.02)
    # reference: a brute-force search over the simplex
    members = rng.dirichlet(np.ones(k), size=(n, 3))  # [n, 3, k]
    grid = [np.array([a, b, 1 - a - b]) for a in np.linspace(0, 1, 101) for b in np.linspace(0, 1 - a, 101)]
    brier = [np.mean(np.sum((np.tensordot(members, w, axes=([1], [0])) - onehot) ** 2, axis=1)) for w in grid]
    best = grid[int(np.argmin(brier))]
    np.testing.assert_allclose(quadratic_stacking(members, onehot), pulled(best, n), atol=0.02)
    # few rows: the weights stay near equal
    few = quadratic_stacking(np.stack([truth, np.roll(truth, 1, axis=1)], axis=1)[:10], onehot[:10])
    np.testing.assert_allclose(few, pulled([1, 0], 10), atol=1e-6)
    assert few[1] > 0.4


def test_quadratic_stacking_says_when_it_falls_back_to_equal_weights(monkeypatch):
    from scipy.optimize import OptimizeResult

    from pfn import selection

    failed = OptimizeResult(x=np.array([0.9, 0.1]), success=False, message="Iteration limit reached")
    monkeypatch.setattr(selection, "minimize", lambda *args, **kwargs: failed)
    vectors, target = np.ones((4, 2, 3)), np.ones((4, 3))
    with pytest.warns(
        RuntimeWarning, match="did not converge .Iteration limit reached.; the members are mixed equally"
    ):
        np.testing.assert_array_equal(quadratic_stacking(vectors, target), [0.5, 0.5])


def test_estimators_weight_members_by_their_held_out_score():
    rng = np.random.default_rng(7)
    X = np.exp(2 * rng.normal(size=(300, 3)))  # heavily skewed inputs
    y = X[:, 0] + 0.1 * rng.normal(size=300)
    reg = PFNRegressor(n_estimators=4, random_state=0, show_progress=False).fit(X, y)
    weights = reg.member_weights_
    assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert len(set(np.round(weights, 6))) > 1  # the members differ, so do their weights
    # the predictive distribution is the weighted mixture of the members' own distributions
    x = reg._transformed(X[:5])
    singles = [reg._member_probs(m, reg._member_forward(m, x)) for m in reg.members_]  # [5, K] each
    mixed = reg._distribution(np.tensordot(weights, np.stack(singles), axes=1))
    np.testing.assert_allclose(reg.predict_dist(X[:5]).cdf(y[:5]), mixed.cdf(y[:5]), atol=1e-9)
    np.testing.assert_allclose(reg.predict(X[:5]), mixed.mean(), rtol=1e-9)
    equal = PFNRegressor(n_estimators=4, weight_members=False, random_state=0, show_progress=False).fit(X, y)
    np.testing.assert_array_equal(equal.member_weights_, np.full(4, 0.25))
    X2 = rng.normal(size=(120, 4))
    clf = PFNClassifier(n_estimators=3, random_state=0, show_progress=False).fit(X2, X2[:, 0] > 0)
    proba = [clf._member_probs(m, clf._member_forward(m, clf._transformed(X2))) for m in clf.members_]
    np.testing.assert_allclose(clf.predict_proba(X2), np.tensordot(clf.member_weights_, np.stack(proba), axes=1))
    small = PFNClassifier(n_estimators=3, random_state=0, show_progress=False).fit(X2[:15], X2[:15, 0] > 0)
    np.testing.assert_array_equal(small.member_weights_, np.full(3, 1 / 3))  # too few rows to validate
    with pytest.raises(ValueError, match=r"'weight_members' parameter of PFN\w+ must be an instance of 'bool'"):
        PFNRegressor(weight_members=1).fit(X, y)


def test_the_regressor_stacks_by_the_crps():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(100, 2))
    reg = PFNRegressor(n_estimators=2, random_state=0, show_progress=False).fit(X, X[:, 0])
    probs = np.stack([reg._member_probs(m, reg._member_forward(m, reg._transformed(X[:3]))) for m in reg.members_], 1)
    y = np.array([-0.5, 0.1, 1.0])
    vectors, target = reg._crps_vectors(probs, y)  # [3, 2, T], [3, T]
    crps = ((vectors - target[:, None]) ** 2).sum(axis=2)  # [3, 2]
    # reference: the integral of (F(t) - 1[t >= y])² over the inner buckets, on a fine grid (y = 0.1
    # lies inside a bucket, so the step falls between bucket borders)
    borders = reg.pfn_.borders.double().numpy()
    grid = np.linspace(borders[1], borders[-2], 200_001)
    for j in range(2):
        cdf = reg._bar(np.log(np.maximum(probs[:, j], 1e-300))).cdf(torch.as_tensor(grid)[:, None]).numpy().T  # [3, G]
        reference = trapezoid((cdf - (grid >= y[:, None])) ** 2, grid, axis=1)
        np.testing.assert_allclose(crps[:, j], reference, rtol=1e-4, atol=1e-6)


def test_quantile_target_continues_beyond_the_train_range():
    rng = np.random.default_rng(8)
    z = rng.exponential(size=400)
    z = (z - z.mean()) / z.std()
    target = QuantileTarget().fit(z)
    grid = np.linspace(z.min() - 3, z.max() + 3, 20_001)
    mapped = target.transform(grid)
    assert (np.diff(mapped) > 0).all()  # strictly increasing, also beyond the train range
    inside = (grid >= z.min()) & (grid <= z.max())
    reference = (target.quantile_.transform(grid[inside, None])[:, 0] - target.mean_) / target.scale_
    np.testing.assert_allclose(mapped[inside], reference)  # the quantile transform on the range
    for end, sign, slope in ((target.high_, 1, target.high_slope_), (target.low_, -1, target.low_slope_)):
        at, beyond = target.transform(np.array([end, end + sign * 1e-3]))  # continuous at the ends
        assert beyond - at == pytest.approx(sign * 1e-3 * slope)
    # a regressor with quantile members gives targets beyond the train range a usable density
    X = rng.normal(size=(200, 2))
    y = np.exp(X[:, 0])
    reg = PFNRegressor(n_estimators=2, weight_members=False, random_state=0, show_progress=False).fit(X, y)
    quantile_member = reg.members_[1]
    probs = reg._member_probs(quantile_member, reg._member_forward(quantile_member, reg._transformed(X[:3])))
    assert (reg._distribution(probs).logpdf(np.full(3, 1.2 * y.max())) > -50).all()


def test_quantile_target_uses_every_train_target_so_refits_agree():
    """Beyond 10,000 targets scikit-learn's QuantileTransformer subsamples at random by default;
    the regressor's quantile members must map the same targets the same way on every fit."""
    z = np.random.default_rng(3).standard_t(3, size=12_000)
    grid = np.linspace(-4, 4, 101)
    first, second = QuantileTarget().fit(z), QuantileTarget().fit(z)
    np.testing.assert_array_equal(first.transform(grid), second.transform(grid))
    ranks = (np.argsort(np.argsort(z)) + 0.5) / len(z)  # the empirical CDF at each target
    np.testing.assert_allclose(stats.norm.cdf(first.quantile_.transform(z[:, None])[:, 0]), ranks, atol=1e-3)


def test_target_encoding_takes_listed_category_columns_of_any_number_of_levels():
    rng = np.random.default_rng(15)
    n = 800
    city, count, flag = rng.integers(0, 60, n), rng.integers(0, 60, n), rng.integers(0, 2, n)
    X = np.column_stack([count, city, flag]).astype(float)  # 60 values, a 60-level code, a 2-level code
    y = rng.normal(size=60)[city] + 0.1 * rng.normal(size=n)
    assert len(TargetEncodedColumns(seed=0).fit(X, y).columns_) == 0  # 60 values: beyond max_levels
    listed = TargetEncodedColumns(categorical=(1, 2), seed=0).fit(X, y)
    assert list(listed.columns_) == [1]  # the 2-level code stays: its encoding would only rescale it
    out = listed.transform(X)  # count, flag, then the encodings of city and (appended) count
    assert out.shape == (n, 4) and list(listed.appended_) == [0]
    assert np.corrcoef(out[:, 2], y)[0, 1] > 0.95  # the code now says what it does


def test_columns_of_many_repeated_values_keep_them_and_get_their_encoding_appended():
    """An id stored as a number (200 levels, each on 10 rows) acts by its value, not its order:
    its encoding is appended; a continuous column (no repeats) is left alone."""
    rng = np.random.default_rng(16)
    n = 2000
    ident = rng.permutation(np.repeat(np.arange(200), 10))
    effect = rng.normal(size=200)
    X = np.column_stack([rng.normal(size=n), ident]).astype(float)
    y = effect[ident] + 0.2 * X[:, 0] + 0.1 * rng.normal(size=n)
    encoding = TargetEncodedColumns(seed=0)
    out = encoding.fit_transform(X, y)
    assert len(encoding.columns_) == 0 and list(encoding.appended_) == [1]
    np.testing.assert_array_equal(out[:, :2], X)  # both columns kept as they are
    new = encoding.transform(np.column_stack([np.zeros(200), np.arange(200)]))[:, 2]
    assert stats.spearmanr(new, effect).statistic > 0.9  # the appended column says what each id does
    assert np.corrcoef(out[:, 2], y)[0, 1] > 0.8  # cross-fitted, yet informative
    assert TargetEncodedColumns(repeats=0, seed=0).fit_transform(X, y).shape == (n, 2)
    assert TargetEncodedColumns(repeats=11, seed=0).fit_transform(X, y).shape == (n, 2)  # 10 rows a value
    assert TargetEncodedColumns(max_columns=2, seed=0).fit_transform(X, y).shape == (n, 2)  # no room


def test_the_preprocessor_says_which_output_columns_hold_category_codes():
    rng = np.random.default_rng(16)
    n = 50
    frame = pd.DataFrame(
        {
            "constant": np.ones(n),
            "size": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),  # adds an indicator column
            "city": pd.Categorical(rng.choice(["a", "b", "c", "d"], n)),
            "copy": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame["copy_again"] = frame["copy"]  # dropped as a duplicate
    prep = TablePreprocessor().fit(frame)
    out = prep.transform(frame)
    assert out.shape[1] == 5  # size, city, copy, colour, size's missing indicator
    assert list(prep.categorical_columns_) == [1, 3]
    for column, name in zip(prep.categorical_columns_, ["city", "colour"], strict=True):
        assert len(np.unique(out[:, column])) == frame[name].nunique()


def test_a_member_that_sees_a_subsample_encodes_by_every_train_row():
    rng = np.random.default_rng(17)
    n = 400
    code = rng.integers(0, 8, n)
    X = np.column_stack([rng.normal(size=n), code]).astype(float)
    y = X[:, 0] + rng.normal(size=8)[code]
    reg = PFNRegressor(n_estimators=5, max_train_rows=100, select_features=False, random_state=0, show_progress=False)
    reg.fit(X, y)
    member = reg.members_[4]
    assert isinstance(member.transform, TargetEncodedColumns)
    z = (y - reg.y_mean_) / reg.y_scale_
    np.testing.assert_allclose(member.transform.encoder_.target_mean_, z.mean(), rtol=1e-5, atol=1e-6)
    every_row = PFNRegressor(n_estimators=5, select_features=False, random_state=0, show_progress=False).fit(X, y)
    rows = member.cache[0][0].shape[-2], every_row.members_[4].cache[0][0].shape[-2]  # cached rows (+ thinking rows)
    assert rows[1] - rows[0] == n - 100  # the context holds the member's 100 rows only


def test_a_many_level_category_with_a_strong_effect_is_learned():
    """A 40-level city column (more levels than a numeric column is target-encoded for): its
    ordinal codes are in arbitrary order, its target encoding is not."""
    rng = np.random.default_rng(18)
    n = 1400
    city = rng.integers(0, 40, n)
    x = rng.normal(size=(n, 3))
    y = 1.5 * rng.normal(size=40)[city] + 0.5 * x[:, 0] + 0.3 * rng.normal(size=n)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(city=[f"city {c}" for c in city])
    reg = PFNRegressor(random_state=0, show_progress=False).fit(frame[:700], y[:700])
    assert reg.score(frame[700:], y[700:]) > 0.85


def test_validation_sees_at_most_validation_rows_while_members_see_max_train_rows(monkeypatch):
    import pfn.estimators as estimators

    monkeypatch.setattr(estimators, "VALIDATION_ROWS", 60)
    rng = np.random.default_rng(19)
    n = 300
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0.8).astype(int)  # about a fifth of the rows in class 1
    clf = PFNClassifier(n_estimators=2, max_train_rows=120, random_state=0, show_progress=False).fit(X, y)
    rows = clf._validation_rows(n, y)
    assert 58 <= len(rows) <= 60 and len(np.unique(rows)) == len(rows)  # each class's quota rounded down
    assert abs(y[rows].mean() - y.mean()) <= 2 / 58  # stratified by class
    np.testing.assert_array_equal(rows, clf._validation_rows(n, y))  # fixed seed
    cached = [member.cache[0][0].shape[-2] for member in clf.members_]  # context rows (+ thinking rows)
    thinking = clf.pfn_.config.thinking_rows
    assert all(118 + thinking <= rows <= 120 + thinking for rows in cached)  # max_train_rows, not the validation's
    assert len(clf._validation_rows(50, y[:50])) == 50  # fewer rows than the cap: all of them
