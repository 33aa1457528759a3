"""Neighbour-target columns (pfn.preprocessing.NeighbourTargets) and the estimators' use of
them on tables with more rows than a member's context."""

import pickle

import numpy as np
import pytest
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from pfn import PFNClassifier, PFNRegressor
from pfn.preprocessing import NeighbourTargets


def standardised(X: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """X and the other arrays, standardised by X's column means and deviations."""
    mean, scale = X.mean(axis=0), X.std(axis=0)
    return [(a - mean) / scale for a in (X, *others)]


def test_fit_rows_get_the_mean_target_of_their_nearest_rows_in_the_other_folds():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)) * [1.0, 5.0, 0.2]
    y = X[:, 0] + 0.1 * rng.normal(size=200)
    columns = NeighbourTargets(neighbours=7, folds=5, seed=3)
    out = columns.fit_transform(X, y)
    (space,), expected = standardised(X), np.empty(200)
    for fit, held in KFold(5, shuffle=True, random_state=3).split(X):
        expected[held] = KNeighborsRegressor(7).fit(space[fit], y[fit]).predict(space[held])
    np.testing.assert_allclose(out[:, :3], X)
    np.testing.assert_allclose(out[:, 3] * columns.scale_ + columns.mean_, expected)
    assert abs(out[:, 3].mean()) < 1e-9 and out[:, 3].std() == pytest.approx(1.0)


def test_new_rows_get_the_mean_target_of_their_nearest_fit_rows():
    rng = np.random.default_rng(1)
    X, new = rng.normal(size=(150, 2)), rng.normal(size=(40, 2))
    y = np.sin(3 * X[:, 0])
    columns = NeighbourTargets(neighbours=5).fit(X, y)
    space, new_space = standardised(X, new)
    expected = KNeighborsRegressor(5).fit(space, y).predict(new_space)
    np.testing.assert_allclose(columns.transform(new)[:, 2] * columns.scale_ + columns.mean_, expected)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_classes_get_the_shares_of_every_class_but_the_last(n_classes):
    rng = np.random.default_rng(2)
    X, new = rng.normal(size=(300, 2)), rng.normal(size=(50, 2))
    y = np.digitize(X[:, 0], np.quantile(X[:, 0], np.linspace(0, 1, n_classes + 1)[1:-1]))
    columns = NeighbourTargets(target="classes", neighbours=9).fit(X, y)
    out = columns.transform(new)
    space, new_space = standardised(X, new)
    proba = KNeighborsClassifier(9).fit(space, y).predict_proba(new_space)
    shown = proba[:, 1:] if n_classes == 2 else proba[:, :-1]
    assert out.shape == (50, 2 + max(n_classes - 1, 1))
    np.testing.assert_allclose(out[:, 2:] * columns.scale_ + columns.mean_, shown, atol=1e-12)


def test_category_codes_are_compared_one_hot_not_by_their_order():
    """Codes 0..3 in one column: as numbers, code 1 lies next to codes 0 and 2; one-hot, every
    other code is equally far, so a row's neighbours are the rows of its own code."""
    codes = np.repeat(np.arange(4.0), 40)
    X = np.column_stack([np.zeros(160), codes])
    effect = np.array([0.0, 10.0, -10.0, 3.0])
    y = effect[codes.astype(int)]
    columns = NeighbourTargets(categorical=(1,), neighbours=20).fit(X, y)
    out = columns.transform(np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 7.0]]))  # 7: a code never seen
    np.testing.assert_allclose((out[:, 2] * columns.scale_ + columns.mean_)[:2], [10.0, -10.0])


def test_a_table_of_category_codes_only():
    codes = np.column_stack([np.repeat(np.arange(3.0), 30), np.tile(np.arange(2.0), 45)])
    y = codes[:, 0] * 2 + codes[:, 1]
    columns = NeighbourTargets(categorical=(0, 1), neighbours=15).fit(codes, y)
    out = columns.transform(np.array([[2.0, 1.0]]))
    assert out[0, 2] * columns.scale_[0] + columns.mean_[0] == pytest.approx(5.0)  # its 15 exact matches


def test_too_few_rows_for_the_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="needs more fit rows than folds"):
        NeighbourTargets(folds=5).fit(np.zeros((4, 2)), np.arange(4.0))


def high_frequency_table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A target that varies fast along its one column: a sample of a hundred rows blurs it, the
    rows' nearest neighbours among thousands do not."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 1))
    return x, np.sin(40 * x[:, 0]) + 0.1 * rng.normal(size=n)


@pytest.mark.parametrize("Estimator", [PFNClassifier, PFNRegressor])
def test_estimators_add_the_columns_only_beyond_a_context_and_keep_them_through_pickling(Estimator):
    x, y = high_frequency_table(400, 3)
    y = (y > 0).astype(int) if Estimator is PFNClassifier else y
    small = Estimator(n_estimators=2, max_train_rows=400, random_state=0, show_progress=False).fit(x, y)
    assert small.neighbours_ is None
    large = Estimator(n_estimators=2, max_train_rows=100, random_state=0, show_progress=False).fit(x[:300], y[:300])
    assert isinstance(large.neighbours_, NeighbourTargets)
    assert large.wide_features_.max() <= 1 and large._transformed(x[300:]).shape == (100, 2)
    predicted = large.predict(x[300:])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(large)).predict(x[300:]), predicted)


def test_no_neighbour_columns_with_more_classes_than_the_head():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(260, 2))
    y = np.arange(260) % 13  # 13 classes, the head has 10
    clf = PFNClassifier(n_estimators=1, max_train_rows=100, random_state=0, show_progress=False).fit(x, y)
    assert clf.neighbours_ is None


def test_the_neighbour_columns_carry_what_the_rows_outside_a_context_say(monkeypatch):
    from sklearn.metrics import r2_score

    import pfn.estimators as estimators

    x, y = high_frequency_table(3200, 5)
    scores = {}
    for label in ("with", "without"):
        if label == "without":
            monkeypatch.setattr(estimators.PFNRegressor, "_neighbour_targets", lambda self, x, y: None)
        reg = PFNRegressor(n_estimators=2, max_train_rows=128, random_state=0, show_progress=False)
        scores[label] = r2_score(y[3000:], reg.fit(x[:3000], y[:3000]).predict(x[3000:]))
    assert scores["with"] > scores["without"] + 0.1, scores
