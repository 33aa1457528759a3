"""Retrieval contexts (pfn.retrieval) and the estimators' context="retrieval"."""

import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pfn import PFNClassifier, PFNRegressor
from pfn.retrieval import Retrieval


def table(n=3000, f=4, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, f).astype(np.float32)
    y = (np.sin(3 * x[:, 0]) + x[:, 1] > 0.8).astype(int) + (x[:, 2] > 1.5)  # 3 classes, uneven
    return x, y


def test_each_context_holds_the_random_half_and_the_nearest_rows_by_class_share():
    x, y = table()
    index = Retrieval.fit(x, y, size=256, classes=True, seed=0)
    xq = table(500, seed=1)[0]
    groups = index.contexts(xq)
    assert np.array_equal(np.sort(np.concatenate([rows for rows, _ in groups])), np.arange(500))
    shares = np.bincount(y) / len(y)
    random_half = groups[0][1][:128]
    for rows, context in groups:
        assert len(context) == 256 and len(np.unique(context)) == 256
        assert np.array_equal(context[:128], random_half)
        near = context[128:]
        counts = np.bincount(y[near], minlength=3)
        assert np.all(counts >= 1) and np.abs(counts - 128 * shares).max() <= 1
        assert (
            np.linalg.norm(x[near] - xq[rows].mean(0), axis=1).mean()
            < np.linalg.norm(x[random_half] - xq[rows].mean(0), axis=1).mean()
        )


def test_a_rows_context_does_not_depend_on_the_rows_it_is_predicted_with():
    x, y = table()
    index = Retrieval.fit(x, y.astype(np.float32), size=256, classes=False, seed=0)
    xq = table(200, seed=1)[0]
    together = {int(r): tuple(context) for rows, context in index.contexts(xq) for r in rows}
    for r in range(0, 200, 37):
        ((rows, context),) = index.contexts(xq[r : r + 1])
        assert together[r] == tuple(context)


def test_retrieval_needs_more_rows_than_a_context():
    x, y = table(100)
    with pytest.raises(ValueError, match=r"more train rows \(100\) than a context holds \(128\)"):
        Retrieval.fit(x, y, size=128, classes=True, seed=0)


@pytest.mark.parametrize("Estimator", [PFNClassifier, PFNRegressor])
def test_retrieval_is_the_plain_model_when_the_rows_fit_one_context(Estimator):
    x, y = table(150)
    plain = Estimator(n_estimators=2, random_state=0).fit(x[:100], y[:100]).predict(x[100:])
    retrieval = Estimator(n_estimators=2, context="retrieval", random_state=0).fit(x[:100], y[:100])
    np.testing.assert_array_equal(retrieval.predict(x[100:]), plain)


@pytest.mark.parametrize("Estimator", [PFNClassifier, PFNRegressor])
def test_retrieval_predictions_are_row_by_row_and_survive_pickling(Estimator):
    x, y = table(700)
    est = Estimator(n_estimators=2, max_train_rows=64, context="retrieval", random_state=0).fit(x[:600], y[:600])
    assert all(member.cache is None and member.retrieval is not None for member in est.members_)
    batch = est.predict(x[600:])
    one_by_one = np.concatenate([est.predict(x[i : i + 1]) for i in range(600, 700)])
    np.testing.assert_allclose(one_by_one, batch, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(x[600:]), batch)
    if Estimator is PFNRegressor:
        lower, upper = est.predict_dist(x[600:]).interval(0.9)
        assert np.all(lower < upper)


def test_retrieval_sees_local_structure_that_a_subsample_misses(monkeypatch):
    # without the neighbour-target columns, which carry some of it to a subsample too
    monkeypatch.setattr(PFNClassifier, "_neighbour_targets", lambda self, x, y: None)
    x, y = table(4000)
    y = (y > 0).astype(int)
    scores = {}
    for context in ("subsample", "retrieval"):
        clf = PFNClassifier(n_estimators=1, max_train_rows=128, context=context, random_state=0)
        scores[context] = roc_auc_score(y[3000:], clf.fit(x[:3000], y[:3000]).predict_proba(x[3000:])[:, 1])
    assert scores["retrieval"] > scores["subsample"] + 0.01, scores
