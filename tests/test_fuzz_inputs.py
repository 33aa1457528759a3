"""Property-based fuzzing of both estimators and the low-level ``PFN.predict`` (issue 25).

Every input gives a correct prediction (finite, the right shape, probabilities summing to 1,
labels among ``classes_``) or a ValueError/TypeError raised by the package or scikit-learn's
validation with a message; never another exception (a torch RuntimeError, numpy's
DTypePromotionError, IndexError, KeyError, ZeroDivisionError, ...) and never a silent NaN.
The default suite draws a few hundred inputs; ``-m slow`` draws thousands.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pfn
from pfn import PFNClassifier, PFNRegressor

WIDTH = pfn.load("tabular-clf").config.n_features
KINDS = ["float", "int", "bool", "Int64", "Float64", "boolean", "string", "category", "object", "datetime", "interval"]
SCALES = [1e-300, 1e-8, 1.0, 1e8, 1e300]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def expected_error(error: BaseException) -> bool:
    """A plain ValueError/TypeError with a message, raised in the package or in scikit-learn
    (its validation) rather than deep inside numpy, pandas or torch Python code."""
    if type(error) not in (ValueError, TypeError) or not str(error):
        return False
    origin = traceback.extract_tb(error.__traceback__)[-1].filename.replace("\\", "/")
    return "/pfn/" in origin or "/sklearn/" in origin


def outcome(call: Callable[[], Any]) -> Any:
    """call's result, or None when it raised an expected error; anything else fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warnings are allowed; only their absence of NaN matters
            return call()
    except Exception as error:  # noqa: BLE001 - the test sorts every exception into allowed or not
        if expected_error(error):
            return None
        raise AssertionError(f"unexpected {type(error).__name__}: {error}") from error


@st.composite
def column(draw: st.DrawFn, kind: str, n: int) -> pd.Series:
    """A column of ``kind`` with n rows, missing values, infinities and wild scales mixed in."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    missing = rng.random(n) < draw(st.sampled_from([0.0, 0.0, 0.2, 1.0]))
    values = rng.normal(size=n) * draw(st.sampled_from(SCALES))
    if kind == "float":
        values[rng.random(n) < draw(st.sampled_from([0.0, 0.0, 0.1]))] = draw(st.sampled_from([np.inf, -np.inf]))
        return pd.Series(np.where(missing, np.nan, values))
    if kind == "int":
        return pd.Series(rng.integers(-5, 5, n) * draw(st.sampled_from([1, 10**15])))
    if kind == "bool":
        return pd.Series(rng.random(n) < 0.5)
    if kind in ("Int64", "boolean"):
        raw = rng.integers(-3, 3, n) if kind == "Int64" else rng.random(n) < 0.5
        return pd.Series(pd.array(raw, dtype=kind)).mask(pd.Series(missing))
    if kind == "Float64":
        return pd.Series(pd.array(values, dtype="Float64")).mask(pd.Series(missing))
    if kind in ("string", "category"):
        words = pd.Series(rng.choice(["a", "b", "c", "dd", ""], n), dtype=kind if kind == "string" else object)
        words = words.mask(pd.Series(missing))
        return words.astype("category") if kind == "category" else words
    if kind == "object":
        pool = [1, 2.5, "x", None, np.nan, True, "3"]
        return pd.Series([pool[i] for i in rng.integers(0, len(pool), n)], dtype=object)
    if kind == "interval":
        return pd.Series(pd.arrays.IntervalArray.from_breaks(rng.integers(0, 3, n + 1).cumsum() * 1.0))
    stamps = pd.Timestamp("2000-01-01") + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s")
    return pd.Series(stamps).mask(pd.Series(missing))


@st.composite
def tables(draw: st.DrawFn) -> tuple[Any, Any]:
    """Train and test tables: 1 to 6 columns (sometimes more than the model's width), 1 to 40
    train rows and 1 to 50 test rows (sometimes more than train rows), named by strings, ints
    or a mix; sometimes test columns of other kinds than in fit, or both as numpy arrays."""
    n_train, n_test = draw(st.integers(1, 40)), draw(st.integers(1, 50))
    wide = draw(st.sampled_from([False] * 9 + [True]))
    n_cols = WIDTH + draw(st.integers(1, 5)) if wide else draw(st.integers(1, 6))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(min(n_cols, 6))]
    kinds += ["float"] * (n_cols - len(kinds))
    naming = draw(st.sampled_from(["str", "str", "int", "mixed"]))
    names = [f"c{i}" if naming == "str" or (naming == "mixed" and i % 2) else i for i in range(n_cols)]
    full = pd.DataFrame({name: draw(column(kind, n_train + n_test)) for name, kind in zip(names, kinds, strict=True)})
    train, test = full.iloc[:n_train].reset_index(drop=True), full.iloc[n_train:].reset_index(drop=True)
    variant = draw(st.sampled_from(["same"] * 8 + ["other kinds", "numpy"]))
    if variant == "other kinds":
        test = pd.DataFrame({name: draw(column(draw(st.sampled_from(KINDS)), n_test)) for name in names})
    if variant == "numpy":
        return train.to_numpy(), test.to_numpy()
    return train, test


@st.composite
def class_labels(draw: st.DrawFn, n: int) -> np.ndarray:
    """n labels: ints, strings, bools, a mix of ints and strings, or many classes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["int", "str", "bool", "mixed", "many", "float", "category", "Int64"]))
    classes = draw(st.integers(1, 4)) if kind != "many" else draw(st.integers(11, 40))
    codes = rng.integers(0, classes, n)
    if kind == "str":
        return np.array([f"class {c}" for c in codes], dtype=object)
    if kind == "bool":
        return codes % 2 == 0
    if kind == "mixed":
        return np.array([c if c % 2 else f"c{c}" for c in codes], dtype=object)
    if kind == "float":
        return codes * 0.5
    if kind == "category":
        return pd.Series(codes).astype(str).astype("category")
    if kind == "Int64":  # nullable integers, sometimes with a missing label
        return pd.Series(pd.array(codes, dtype="Int64")).mask(pd.Series(rng.random(n) < 0.1))
    return codes


def check_classifier(clf: PFNClassifier, test: Any) -> None:
    proba = outcome(lambda: clf.predict_proba(test))
    if proba is None:
        return
    assert proba.shape == (len(test), len(clf.classes_))
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1.0)
    assert set(clf.predict(test)) <= set(clf.classes_)


def check_regressor(reg: PFNRegressor, test: Any) -> None:
    mean = outcome(lambda: reg.predict(test))
    if mean is None:
        return
    assert mean.shape == (len(test),) and np.isfinite(mean).all()
    dist = reg.predict_dist(test)
    lo, hi = dist.interval(0.9)
    assert np.isfinite(lo).all() and np.isfinite(hi).all() and (lo <= hi).all()
    assert np.isfinite(reg.predict_quantiles(test, [0.1, 0.9])).all()


def fuzz_estimators(data: st.DataObject) -> None:
    train, test = data.draw(tables())
    options = dict(n_estimators=data.draw(st.sampled_from([1, 2])), random_state=0, show_progress=False)
    if data.draw(st.booleans()):
        y = data.draw(class_labels(len(train)))
        clf = outcome(lambda: PFNClassifier(**options).fit(train, y))
        if clf is not None:
            check_classifier(clf, test)
    else:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        y = rng.normal(size=len(train)) * data.draw(st.sampled_from(SCALES)) + data.draw(st.sampled_from([0.0, 1e9]))
        if data.draw(st.sampled_from([False] * 5 + [True])):
            y[0] = data.draw(st.sampled_from([np.nan, np.inf, 1e308]))
        reg = outcome(lambda: PFNRegressor(**options).fit(train, y))
        if reg is not None:
            check_regressor(reg, test)


def fuzz_many_classes(data: st.DataObject) -> None:
    """11 to 100 classes on 30 to 300 rows (some classes with one row, some never in a member's
    subsample), any columns: the coupled passes over groups of classes."""
    n, k = data.draw(st.integers(30, 300)), data.draw(st.integers(11, 100))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(n, data.draw(st.integers(1, 8))))
    y = np.minimum(rng.geometric(data.draw(st.sampled_from([0.02, 0.1, 0.3])), n) - 1, k - 1)
    y[:k] = np.arange(k)[: min(k, n)]  # every class at least once where rows allow
    if data.draw(st.booleans()):
        x[rng.random(x.shape) < 0.2] = np.nan
    options = dict(
        n_estimators=data.draw(st.integers(1, 3)),
        max_train_rows=data.draw(st.sampled_from([40, 1024])),
        random_state=0,
        show_progress=False,
    )
    clf = outcome(lambda: PFNClassifier(**options).fit(x, y))
    if clf is not None:
        check_classifier(clf, rng.normal(size=(data.draw(st.integers(1, 70)), x.shape[1])))


@st.composite
def raw_array(draw: st.DrawFn, shape: tuple[int, ...]) -> Any:
    """An array-like of ``shape`` for PFN.predict: numbers at any scale, NaN/inf, ints, bools,
    strings, objects, complex numbers or a nested list."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["float", "float", "float32", "int", "bool", "str", "object", "complex", "list"]))
    values = rng.normal(size=shape) * draw(st.sampled_from([*SCALES, 1e20, 1e120]))
    if kind == "float" and draw(st.booleans()):
        values.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    converted = {
        "float": lambda: values,
        "float32": lambda: values.astype(np.float32),
        "int": lambda: values.astype(np.int64) if np.abs(values).max(initial=0) < 1e18 else values,
        "bool": lambda: values > 0,
        "str": lambda: values.astype(str),
        "object": lambda: values.astype(object),
        "complex": lambda: values + 1j,
        "list": lambda: values.tolist(),
    }
    return converted[kind]()


def fuzz_low_level(data: st.DataObject, model: pfn.PFN) -> None:
    n, m = data.draw(st.integers(1, 30)), data.draw(st.integers(1, 40))
    d = data.draw(st.sampled_from([1, 2, 5, WIDTH, WIDTH + 3]))
    x_train, x_test = data.draw(raw_array((n, d))), data.draw(raw_array((m, d)))
    if model.task == "classification":
        y = data.draw(st.sampled_from(["ids", "floats", "negative", "too many", "strings"]))
        codes = np.random.default_rng(n).integers(0, 3, n)
        y_train = {
            "ids": codes,
            "floats": codes.astype(np.float64),
            "negative": codes - 1,
            "too many": codes + model.config.n_outputs,
            "strings": codes.astype(str),
        }[y]
    else:
        y_train = data.draw(raw_array((n,)))
    out = outcome(lambda: model.predict(x_train, y_train, x_test))
    if out is None:
        return
    if model.task == "classification":
        probs = out.double().numpy()
        assert probs.shape == (m, model.config.n_outputs) and np.isfinite(probs).all()
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    else:
        assert np.isfinite(out.mean().numpy()).all() and out.mean().shape == (m,)
        assert np.isfinite(out.quantile(0.9).numpy()).all()


MODELS = {name: pfn.load(name) for name in ("tabular-clf", "tabular-reg")}


@FAST
@given(data=st.data())
def test_estimators_on_any_table(data: st.DataObject) -> None:
    fuzz_estimators(data)


@settings(FAST, max_examples=15)
@given(data=st.data())
def test_many_classes_on_any_rows(data: st.DataObject) -> None:
    fuzz_many_classes(data)


@FAST
@given(data=st.data(), name=st.sampled_from(sorted(MODELS)))
def test_low_level_predict_on_any_array(data: st.DataObject, name: str) -> None:
    fuzz_low_level(data, MODELS[name])


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_estimators_on_any_table_thoroughly(data: st.DataObject) -> None:
    fuzz_estimators(data)


@pytest.mark.slow
@SLOW
@given(data=st.data(), name=st.sampled_from(sorted(MODELS)))
def test_low_level_predict_on_any_array_thoroughly(data: st.DataObject, name: str) -> None:
    fuzz_low_level(data, MODELS[name])


@pytest.mark.slow
@settings(SLOW, max_examples=200)
@given(data=st.data())
def test_many_classes_on_any_rows_thoroughly(data: st.DataObject) -> None:
    fuzz_many_classes(data)
