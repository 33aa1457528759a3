"""Column selection by in-context validation, and the regressor's quantile-target members."""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LinearRegression

from pfn import PFNClassifier, PFNRegressor
from pfn.selection import TOLERANCE, candidate_sizes, select_features


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
    with pytest.raises(ValueError, match="select_features must be True or False"):
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
    mixed = reg._mixture([np.zeros_like(logits), logits])  # member 0: equal probabilities
    mapped = 2 * mixed - 1 / mixed.shape[1]  # member 1's share alone
    # reference: draws from the member's own distribution, mapped back through the inverse
    # quantile transform, binned on the model's buckets
    draws = reg._bar(logits).sample(200_000, torch.Generator().manual_seed(0)).double().numpy()  # [S, 4]
    quantile = member.target_map.quantile_
    back = quantile.inverse_transform((draws * member.target_map.scale_ + member.target_map.mean_).reshape(-1, 1))
    back = back.reshape(draws.shape)
    borders = reg.pfn_.borders.double().numpy()
    for row in range(4):
        counts = np.histogram(np.clip(back[:, row], borders[0], borders[-1]), borders)[0] / len(back)
        np.testing.assert_allclose(counts, mapped[row], atol=4e-3)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-9)


def test_members_input_transforms_by_task():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 3))
    y = X[:, 0] + 0.1 * rng.normal(size=60)
    reg = PFNRegressor(n_estimators=4, select_features=False, random_state=0, show_progress=False).fit(X, y)
    kinds = [type(m.transform).__name__ if m.transform is not None else None for m in reg.members_]
    assert kinds == [None, "PowerTransformer", None, "PowerTransformer"]  # no quantile transform of inputs
    assert [m.target_map is not None for m in reg.members_] == [False, True, False, True]
    clf = PFNClassifier(n_estimators=3, select_features=False, random_state=0, show_progress=False).fit(X, y > 0)
    kinds = [type(m.transform).__name__ if m.transform is not None else None for m in clf.members_]
    assert kinds == [None, "QuantileTransformer", "PowerTransformer"]
