"""Property-based tests: random shapes, dtypes, NaN patterns and label types. Every outcome is a
valid prediction or a documented ValueError, never a crash inside torch or a silent NaN."""

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pfn import PFNClassifier, PFNRegressor

DOCUMENTED = ("only one class", "contains inf", "y contains NaN", "Unknown label type")  # as scikit-learn
values = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False) | st.just(np.nan) | st.integers(-5, 5)


@st.composite
def tables(draw):
    n = draw(st.integers(2, 25))
    d = draw(st.integers(1, 5))
    X = draw(arrays(np.float64, (n, d), elements=values))
    as_frame = draw(st.booleans())
    if as_frame:
        frame = pd.DataFrame(X, columns=[f"c{i}" for i in range(d)])
        if draw(st.booleans()):  # one categorical column of strings, some missing
            frame["cat"] = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
        return frame, n
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    return X.astype(dtype), n


labels = st.sampled_from(
    [
        lambda n, rng: rng.integers(0, 3, n),
        lambda n, rng: rng.choice(["yes", "no"], n),
        lambda n, rng: rng.random(n) > 0.5,
        lambda n, rng: rng.choice([-1.5, 7.0, 100.0], n),
    ]
)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(table=tables(), make_labels=labels, seed=st.integers(0, 10))
def test_classifier_predicts_or_raises_a_documented_error(table, make_labels, seed):
    X, n = table
    y = make_labels(n, np.random.default_rng(seed))
    clf = PFNClassifier(n_estimators=2, random_state=seed, show_progress=False)
    try:
        clf.fit(X, y)
    except ValueError as error:
        assert any(text in str(error) for text in DOCUMENTED), error
        return
    proba = clf.predict_proba(X)
    assert proba.shape == (n, len(clf.classes_))
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1.0)
    assert set(clf.predict(X)) <= set(np.unique(y))


@SETTINGS
@given(table=tables(), y=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=25, max_size=25))
def test_regressor_predicts_finite_values(table, y):
    X, n = table
    reg = PFNRegressor(n_estimators=2, random_state=0, show_progress=False).fit(X, np.array(y[:n]))
    mean = reg.predict(X)
    assert mean.shape == (n,) and np.isfinite(mean).all()
    lo, hi = reg.predict_dist(X).interval(0.9)
    assert (lo <= hi).all()


anywhere = st.floats(allow_nan=False, allow_infinity=False)  # the whole float64 range, subnormals too


@SETTINGS
@given(
    X=arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 3)), elements=anywhere),
    y=st.lists(anywhere, min_size=20, max_size=20),
)
def test_features_and_targets_anywhere_in_the_float64_range_give_finite_predictions(X, y):
    n = len(X)
    reg = PFNRegressor(n_estimators=2, random_state=0, show_progress=False).fit(X, np.array(y[:n]))
    dist = reg.predict_dist(X)
    lo, hi = dist.interval(0.9)
    assert np.isfinite(dist.mean()).all() and np.isfinite(lo).all() and np.isfinite(hi).all()
    assert (lo <= hi).all()
