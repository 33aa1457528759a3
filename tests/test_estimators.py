"""PFNClassifier and PFNRegressor: the cache, the ensemble, preprocessing, limits, conformance."""

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import trapezoid
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import pfn
from pfn import PFNClassifier, PFNRegressor
from pfn.estimators import ROUNDS, couple_groups


@pytest.fixture(scope="module")
def clf_data():
    X, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=3, random_state=0)
    return X[:90], y[:90], X[90:], y[90:]


@pytest.fixture(scope="module")
def reg_data():
    X, y = make_regression(n_samples=120, n_features=5, noise=5.0, random_state=0)
    return X[:90], y[:90] + 100, X[90:], y[90:] + 100


def full_forward_proba(clf, X):
    """Probabilities of a 1-member classifier from one uncached forward pass over train + test rows."""
    member = clf.members_[0]
    x_train = clf._transformed(clf._train_X)[:, member.features]
    x_test = clf._transformed(X)[:, member.features]
    xt, yt, xq, used, _ = clf.pfn_.prepare(x_train, np.searchsorted(clf.classes_, clf._train_y), x_test)
    with torch.no_grad():
        logits = clf.pfn_.model(torch.cat([xt, xq], 1), yt, used)[0]  # [m, K]
    return torch.softmax(logits[:, : len(clf.classes_)].double() / clf._temperature(), -1).numpy()


def test_cache_matches_a_full_forward_pass_and_chunking(clf_data):
    X, y, X_test, _ = clf_data
    clf = PFNClassifier(n_estimators=1, random_state=0).fit(X, y)
    clf._train_X, clf._train_y = X, y
    cached = clf.predict_proba(X_test)
    np.testing.assert_allclose(cached, full_forward_proba(clf, X_test), atol=1e-5)
    chunked = clone(clf).set_params(chunk_rows=7).fit(X, y).predict_proba(X_test)
    np.testing.assert_allclose(chunked, cached, atol=1e-5)
    one_by_one = np.concatenate([clf.predict_proba(X_test[i : i + 1]) for i in range(len(X_test))])
    np.testing.assert_allclose(one_by_one, cached, atol=1e-5)


def test_single_member_is_deterministic_and_ensembles_are_seeded(clf_data):
    X, y, X_test, _ = clf_data
    a = PFNClassifier(n_estimators=1, random_state=0).fit(X, y).predict_proba(X_test)
    b = PFNClassifier(n_estimators=1, random_state=5).fit(X, y).predict_proba(X_test)
    np.testing.assert_array_equal(a, b)
    c = PFNClassifier(n_estimators=4, random_state=1).fit(X, y).predict_proba(X_test)
    d = PFNClassifier(n_estimators=4, random_state=1).fit(X, y).predict_proba(X_test)
    np.testing.assert_array_equal(c, d)
    np.testing.assert_allclose(c.sum(1), 1.0)


def test_classifier_learns_and_handles_odd_labels(clf_data):
    X, y, X_test, y_test = clf_data
    labels = np.array(["cat", "dog", "emu"])
    clf = PFNClassifier(random_state=0).fit(X, labels[y])
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    assert clf.score(X_test, labels[y_test]) > 0.5  # chance is 1/3
    assert set(clf.predict(X_test)) <= set(labels)


def test_regressor_distribution_is_consistent(reg_data):
    X, y, X_test, y_test = reg_data
    reg = PFNRegressor(random_state=0).fit(X, y)
    dist = reg.predict_dist(X_test)
    mean = reg.predict(X_test)
    np.testing.assert_allclose(mean, dist.mean())
    assert reg.score(X_test, y_test) > 0.5
    lo, hi = dist.interval(0.8)
    q = reg.predict_quantiles(X_test, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(q[:, 0], lo, rtol=1e-6)
    np.testing.assert_allclose(q[:, 1], dist.median(), rtol=1e-6)
    np.testing.assert_allclose(dist.cdf(q[:, 2]), 0.9, atol=1e-4)
    assert np.isfinite(dist.logpdf(y_test)).all() and dist.sample(5, random_state=0).shape == (5, len(X_test))
    # the target scale is mapped back: densities integrate to one on the original scale
    grid = np.linspace(mean[0] - 400, mean[0] + 400, 40_001)
    density = np.exp(dist.logpdf(np.repeat(grid[:, None], len(X_test), 1)))[:, 0]
    assert trapezoid(density, grid) == pytest.approx(1.0, abs=2e-3)


def test_constant_target_is_predicted_with_a_narrow_but_not_degenerate_distribution(reg_data):
    X, _, X_test, _ = reg_data
    reg = PFNRegressor(n_estimators=2).fit(X, np.full(len(X), 3.5))
    np.testing.assert_allclose(reg.predict(X_test), 3.5, rtol=0.01)
    lo, hi = reg.predict_dist(X_test).interval(0.9)
    assert (lo < 3.5).all() and (hi > 3.5).all()
    assert (hi - lo > 1e-3).all() and (hi - lo < 0.5).all()  # |3.5| / sqrt(90) = 0.37 is the scale


def test_a_far_spike_of_targets_is_predicted_by_the_tails_fitted_to_the_train_targets():
    """2.5% of the rows (marked by a column) have target 0, seven scales below the rest: the
    model's own tails would stop the predicted mean far short of them (see pfn.heads)."""
    rng = np.random.default_rng(0)
    x = rng.random((600, 3))
    spike = np.zeros(600, bool)
    spike[rng.choice(600, 15, replace=False)] = True
    x[:, 2] = spike
    y = np.where(spike, 0.0, 100 + 2 * x[:, 0] + rng.normal(0, 0.5, 600))
    reg = PFNRegressor(n_estimators=2, random_state=0).fit(x[:500], y[:500])
    fitted = reg.predict(x[500:][spike[500:]])
    assert reg.tail_scales_[0] > 2 * reg.pfn_.tail_scales[0] and reg.tail_scales_[1] == reg.pfn_.tail_scales[1]
    assert (fitted < 20).all() and np.median(np.abs(reg.predict(x[500:][~spike[500:]]) - 101)) < 1
    reg.tail_scales_ = reg.pfn_.tail_scales
    assert (reg.predict(x[500:][spike[500:]]) > fitted + 15).all()


def test_pandas_with_categoricals_and_missing_values():
    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame(
        {
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "size": rng.normal(size=n),
            "flag": rng.random(n) > 0.5,
            "city": rng.choice(["a", "b"], n).astype(object),
            "constant": 1.0,
        }
    )
    frame.loc[rng.random(n) < 0.2, "size"] = np.nan
    y = (frame["colour"] == "red").to_numpy() ^ frame["flag"].to_numpy()
    clf = PFNClassifier(n_estimators=2, random_state=0).fit(frame, y)
    assert clf.preprocessor_.categorical_ == [0, 2, 3]
    assert list(clf.feature_names_in_) == list(frame.columns)
    proba = clf.predict_proba(frame)
    assert np.isfinite(proba).all() and clf.score(frame, y) > 0.7
    unseen = frame.iloc[:3].copy()
    unseen["city"] = ["zzz", "a", None]
    assert clf.predict(unseen).shape == (3,)


def test_more_classes_than_the_head_couple_passes_over_groups_of_classes():
    """20 classes of two clusters each: the output codes this replaced scored 0.666 against a
    random forest's 0.730; passes over groups of at most 10 classes, coupled, score 0.728."""
    X, y = make_classification(
        n_samples=1500,
        n_features=20,
        n_informative=15,
        n_redundant=0,
        n_classes=20,
        n_clusters_per_class=2,
        class_sep=2.0,
        random_state=120,
    )
    X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=1000, random_state=0, stratify=y)
    clf = PFNClassifier(n_estimators=8, random_state=0, show_progress=False).fit(X_train, y_train)
    head = clf.pfn_.config.n_outputs
    assert len(clf.members_) == 8 * ROUNDS * 2 and np.allclose(clf.member_weights_, 1 / 8)
    for member in range(8):  # each round of each member partitions the classes into groups of <= head
        for round_parts in np.split(np.arange(member * 2 * ROUNDS, (member + 1) * 2 * ROUNDS), ROUNDS):
            labels = np.stack([clf.members_[j].target_map for j in round_parts])  # [groups, k]
            assert ((labels >= 0).sum(0) == 1).all() and ((labels >= 0).sum(1) <= head).all()
    proba = clf.predict_proba(X_test)
    assert proba.shape == (500, 20) and np.isfinite(proba).all() and np.allclose(proba.sum(1), 1.0)
    forest = RandomForestClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test)
    assert clf.score(X_test, y_test) >= forest - 0.03


def test_many_classes_choose_columns_and_string_labels_round_trip():
    """With 8 relevant columns of 40 and 26 classes, columns are chosen by in-context validation
    (passes over groups of classes, coupled); labels are strings."""
    X, y = make_classification(
        n_samples=520, n_features=40, n_informative=8, n_redundant=0, n_classes=26, class_sep=3.0, random_state=1
    )
    labels = np.array([chr(ord("a") + c) for c in y], dtype=object)
    clf = PFNClassifier(n_estimators=2, random_state=0, show_progress=False).fit(X[:390], labels[:390])
    assert list(clf.classes_) == list("abcdefghijklmnopqrstuvwxyz") and len(clf.features_) < 40
    assert clf.selection_scores_ and set(clf.predict(X[390:])) <= set(clf.classes_)
    assert clf.score(X[390:], labels[390:]) > 0.5  # chance is 1/26


def test_couple_groups_recovers_a_distribution_from_its_conditionals_and_means_full_groups():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(25), size=4)  # [m, k]
    groups = [np.sort(order[g::3]) for order in (rng.permutation(25) for _ in range(2)) for g in range(3)]
    conditionals = [p[:, g] / p[:, g].sum(1, keepdims=True) for g in groups]
    np.testing.assert_allclose(couple_groups(conditionals, groups, np.ones(6), 25), p, atol=1e-4)
    full = [rng.dirichlet(np.ones(5), size=4) for _ in range(3)]
    weights = np.array([0.5, 0.3, 0.2])
    mean = sum(w * q for w, q in zip(weights, full, strict=True))
    np.testing.assert_allclose(couple_groups(full, [np.arange(5)] * 3, weights, 5), mean, atol=1e-12)
    certain = [np.eye(5)[[0, 4]], np.zeros((2, 5))]  # probabilities 0 and 1 stay finite
    coupled = couple_groups(certain, [np.arange(5)] * 2, np.ones(2), 5)
    assert np.isfinite(coupled).all() and np.allclose(coupled.sum(1), 1) and (coupled.argmax(1) == [0, 4]).all()


def test_more_features_than_the_model_and_more_rows_than_the_limit():
    limit = pfn.load("tabular-clf").config.n_features
    X, y = make_classification(n_samples=300, n_features=limit + 20, n_informative=10, random_state=0)
    # without column selection each member sees its own random subset of the model's limit
    clf = PFNClassifier(n_estimators=3, max_train_rows=100, random_state=0, select_features=False).fit(X, y)
    assert all(len(m.features) == limit for m in clf.members_)
    assert len({tuple(m.features) for m in clf.members_}) == 3
    assert all(m.cache[0][0].shape[2] <= 100 for m in clf.members_)
    assert clf.score(X, y) > 0.7


def test_scikit_learn_composition(clf_data, reg_data):
    X, y, _, _ = clf_data
    pipe = make_pipeline(StandardScaler(), PFNClassifier(n_estimators=2, random_state=0))
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.5
    search = GridSearchCV(PFNClassifier(random_state=0), {"n_estimators": [1, 2]}, cv=2).fit(X, y)
    assert search.best_params_["n_estimators"] in (1, 2)
    Xr, yr, _, _ = reg_data
    assert cross_val_score(PFNRegressor(n_estimators=2), Xr, yr, cv=3).mean() > 0.3


def test_inside_a_column_transformer_pipeline():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"num": rng.normal(size=60), "word": rng.choice(["p", "q", "r"], 60)})
    y = (frame["num"] > 0).to_numpy()
    columns = ColumnTransformer([("num", StandardScaler(), ["num"]), ("word", OneHotEncoder(), ["word"])])
    pipe = make_pipeline(columns, PFNClassifier(n_estimators=2, random_state=0)).fit(frame, y)
    assert pipe.score(frame, y) > max(y.mean(), 1 - y.mean()) + 0.1  # learns beyond the majority class


@pytest.mark.parametrize("make", [PFNClassifier, PFNRegressor])
def test_pickle_and_joblib_round_trips_predict_identically(make, clf_data, tmp_path):
    X, y, X_test, _ = clf_data
    est = make(n_estimators=3, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X_test), est.predict(X_test))
    joblib.dump(est, tmp_path / "est.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "est.joblib").predict(X_test), est.predict(X_test))


@pytest.mark.parametrize(
    "fit_args, message",
    [
        ((np.array([[1.0, np.inf], [2.0, 3.0], [1.0, 1.0]]), [0, 1, 0]), "contains inf"),
        ((np.ones((4, 2)), [0, 1, np.nan, 1]), "y contains NaN"),
        ((np.ones((4, 2)), np.array([1, 1, 1, 1])), r"only one class \(1\);"),  # no np.int64(1)
        ((np.empty((0, 3)), []), "0 sample"),
        ((pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}), [0, 1, 0]), None),
    ],
)
def test_bad_fit_input_is_named(fit_args, message):
    clf = PFNClassifier(n_estimators=1)
    if message is None:  # strings in an "auto" frame are categorical: this fits
        clf.fit(*fit_args)
        with pytest.raises(ValueError, match="column 'b' is numeric but holds the non-numeric value 'x'"):
            PFNClassifier(n_estimators=1, categorical_features=["a"]).fit(*fit_args)
        return
    with pytest.raises(ValueError, match=message):
        clf.fit(*fit_args)


def test_bad_predict_input_is_named(clf_data):
    X, y, X_test, _ = clf_data
    with pytest.raises(NotFittedError):
        PFNClassifier().predict(X_test)
    clf = PFNClassifier(n_estimators=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 5 features, but PFNClassifier is expecting 6"):
        clf.predict(X_test[:, :5])
    named = PFNClassifier(n_estimators=1).fit(pd.DataFrame(X, columns=list("abcdef")), y)
    with pytest.raises(ValueError, match="feature names"):
        named.predict(pd.DataFrame(X_test, columns=list("abcdeg")))
    with pytest.raises(ValueError, match=r"'n_estimators' parameter of PFN\w+ must be an int in the range \[1, inf\)"):
        PFNClassifier(n_estimators=0).fit(X, y)


@parametrize_with_checks(
    [PFNClassifier(n_estimators=2, show_progress=False), PFNRegressor(n_estimators=2, show_progress=False)]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
def test_a_million_test_rows_in_bounded_memory():
    import resource

    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    clf = PFNClassifier(n_estimators=2, chunk_rows=8192, random_state=0, show_progress=False).fit(X, y)
    X_big = np.random.default_rng(0).normal(size=(1_000_000, 5))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    proba = clf.predict_proba(X_big)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert proba.shape == (1_000_000, 2) and np.isfinite(proba).all()
    assert grown_mib < 600, f"peak memory grew by {grown_mib:.0f} MiB"


def test_a_single_train_row_fits_without_warnings_and_a_distribution_as_wide_as_the_target():
    X = np.random.default_rng(0).normal(size=(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = PFNRegressor(show_progress=False).fit(X[:1], [3.0])
        lo, hi = reg.predict_dist(X).interval(0.9)
    assert reg.predict(X[:1])[0] == pytest.approx(3.0, rel=0.1)  # the row seen
    assert (lo < 3.0).all() and (hi > 3.0).all()
    assert (hi[1:] - lo[1:] > 3.0).all()  # rows unlike the one seen: a scale of |y|, not 4e-12


@pytest.mark.parametrize("show_progress, bar", [(None, False), (True, True), (False, False)])
def test_the_predict_bar_shows_where_asked_and_by_default_only_on_a_terminal(show_progress, bar, capsys):
    """Under pytest stderr is not a terminal: the default shows no bar, True forces one."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    clf = PFNClassifier(n_estimators=1, chunk_rows=8, show_progress=show_progress, random_state=0).fit(X, y)
    clf.predict_proba(rng.normal(size=(80, 3)))  # 10 chunks
    assert ("predict" in capsys.readouterr().err) == bar
    with pytest.raises(ValueError, match=r"'show_progress' parameter of PFN\w+ must be an instance of 'bool'"):
        PFNClassifier(show_progress="yes").fit(X, y)


@pytest.mark.parametrize(
    "estimator, params, name",
    [
        (PFNClassifier, {"softmax_temperature": 0.0}, "softmax_temperature"),
        (PFNClassifier, {"device": "gpu"}, "device"),
        (PFNRegressor, {"categorical_features": "all"}, "categorical_features"),
        (PFNRegressor, {"max_train_rows": 0}, "max_train_rows"),
        (PFNRegressor, {"random_state": "seven"}, "random_state"),
    ],
)
def test_parameters_are_checked_against_their_constraints_before_any_work(estimator, params, name):
    X, y = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match=f"'{name}' parameter of {estimator.__name__} must be"):
        estimator(**params).fit(X, y)
    assert name in estimator._parameter_constraints


def test_the_member_table_in_the_docs_is_the_schedule():
    from pathlib import Path

    words = {"as they are": "none", "as it is": "plain", "target-encoded": "target"}
    names, rows = ("columns", "classifier inputs", "regressor inputs", "regressor target"), {}
    for line in (Path(__file__).parents[1] / "docs" / "quickstart.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in names:
            rows[cells[0]] = [words.get(c, c) for c in cells[1:]]
    assert len(rows) == 4
    for name, estimator in (("classifier", PFNClassifier), ("regressor", PFNRegressor)):
        schedule = estimator.SCHEDULE
        assert [schedule.columns.at(i) for i in range(8)] == rows["columns"]
        assert [schedule.input_transform(i) for i in range(8)] == rows[f"{name} inputs"]
    assert [PFNRegressor.SCHEDULE.target.at(i) for i in range(8)] == rows["regressor target"]


@pytest.mark.parametrize("Estimator", [PFNClassifier, PFNRegressor])
def test_the_former_name_batch_size_still_chunks_with_a_future_warning(clf_data, Estimator):
    X, y, X_test, _ = clf_data
    est = Estimator(n_estimators=1, chunk_rows=5, random_state=0).fit(X, y)
    by_chunk_rows = est.predict(X_test)
    with pytest.warns(FutureWarning, match="batch_size was renamed chunk_rows"):
        by_batch_size = est.set_params(batch_size=5).predict(X_test)
    np.testing.assert_array_equal(by_batch_size, by_chunk_rows)
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter"):
        Estimator(batch_size=0).fit(X, y)
