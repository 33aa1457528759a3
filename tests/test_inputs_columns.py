"""Every table a user has (issue 25): each column is typed and converted on its own, so any mix
of numpy, nullable, categorical, string, datetime and timedelta columns fits and predicts; what
cannot be read gets an error naming the column."""

import datetime

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from pfn import PFNClassifier, PFNRegressor
from pfn.preprocessing import TablePreprocessor, column_kind, column_values

N = 40


def every_kind(n: int = N, seed: int = 0) -> pd.DataFrame:
    """One column of every kind the estimators read, each with a missing value."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-03-01")
    frame = pd.DataFrame(
        {
            "float": rng.normal(size=n),
            "int": rng.integers(0, 100, n),
            "bool": rng.random(n) > 0.5,
            "Int64": pd.array(rng.integers(0, 5, n), dtype="Int64"),
            "Float64": pd.array(rng.normal(size=n), dtype="Float64"),
            "boolean": pd.array(rng.random(n) > 0.5, dtype="boolean"),
            "string": pd.array(rng.choice(["x", "y", "z"], n), dtype="string"),
            "str": rng.choice(["p", "q"], n).tolist(),
            "category": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "object": pd.Series(rng.choice(["u", "v"], n).tolist(), dtype=object),
            "numbers_as_objects": pd.Series(rng.normal(size=n).tolist(), dtype=object),
            "datetime": start + pd.to_timedelta(rng.integers(0, 1000, n), unit="h"),
            "datetime_tz": (start + pd.to_timedelta(rng.integers(0, 1000, n), unit="h")).tz_localize("Europe/Berlin"),
            "timedelta": pd.to_timedelta(rng.integers(0, 100, n), unit="min"),
            "period": pd.period_range("2020-01", periods=n, freq="M"),
            "interval": pd.arrays.IntervalArray.from_breaks(rng.integers(0, 3, n + 1).cumsum() * 1.0),
        }
    )
    for column in frame.columns:
        if column not in ("bool", "int", "str"):  # numpy bool/int columns cannot hold a missing value
            frame.loc[frame.index[column.__len__() % n], column] = None
    return frame


def target(frame: pd.DataFrame) -> np.ndarray:
    return frame["float"].fillna(0).to_numpy() + (frame["category"] == "red").to_numpy()


@pytest.mark.parametrize("convert", [False, True], ids=["as built", "convert_dtypes"])
@pytest.mark.parametrize("make", [PFNClassifier, PFNRegressor])
def test_every_column_kind_fits_and_predicts(make, convert):
    frame = every_kind()
    frame = frame.convert_dtypes() if convert else frame
    y = target(frame)
    y = y > np.median(y) if make is PFNClassifier else y
    est = make(n_estimators=2, random_state=0, show_progress=False).fit(frame, y)
    kinds = dict(zip(frame.columns, est.preprocessor_.kinds_, strict=True))
    assert kinds["datetime"] == kinds["datetime_tz"] == kinds["period"] == "datetime"
    assert kinds["timedelta"] == "timedelta"
    assert kinds["category"] == kinds["string"] == kinds["str"] == kinds["bool"] == kinds["boolean"] == "categorical"
    assert kinds["interval"] == "categorical"  # raised "is numeric but holds the non-numeric value Interval(...)"
    assert kinds["Int64"] == kinds["numbers_as_objects"] == "numeric"
    out = est.predict_proba(frame) if make is PFNClassifier else est.predict_dist(frame).interval(0.9)
    assert np.isfinite(np.asarray(out, dtype=np.float64)).all()
    assert est.score(frame, y) > (0.7 if make is PFNClassifier else 0.5)


def test_the_quickstart_frame_fits():
    """pandas 3 reads Python strings as its str dtype; check_array on the whole frame failed
    with "Cannot cast str dtype to float64"."""
    frame = pd.DataFrame(
        {
            "colour": pd.Categorical(["red", "blue", None, "red"]),
            "size": [1.0, None, 3.0, 2.5],
            "flag": [True, False, True, True],
        }
    )
    for table in (frame, frame.convert_dtypes(), frame.assign(word=["a", "b", None, "a"])):
        assert PFNClassifier(n_estimators=2, show_progress=False).fit(table, [0, 1, 0, 1]).predict(table).shape == (4,)


EPOCH = pd.Timestamp("1970-01-01")


def test_datetimes_are_seconds_since_the_epoch_whatever_their_dtype():
    naive = pd.Series(pd.to_datetime(["1970-01-01 00:00:10", "2024-02-29 12:00:00", None]))
    seconds = [10.0, (pd.Timestamp("2024-02-29 12:00") - EPOCH).total_seconds(), np.nan]
    versions = [
        naive,
        naive.astype("datetime64[s]"),
        naive.astype("datetime64[ms]"),
        naive.dt.tz_localize("UTC"),
        naive.dt.tz_localize("UTC").dt.tz_convert("America/New_York"),
        pd.Series([datetime.datetime(1970, 1, 1, 0, 0, 10), datetime.datetime(2024, 2, 29, 12), None], dtype=object),
    ]
    for version in versions:
        assert column_kind(version) == "datetime"
        np.testing.assert_array_equal(column_values(version, "datetime"), seconds)
    delta = pd.Series(pd.to_timedelta(["1.5s", "2 days", None]))
    assert column_kind(delta) == "timedelta"
    np.testing.assert_array_equal(column_values(delta, "timedelta"), [1.5, 172800.0, np.nan])
    late = pd.Series(np.array(["3000-01-01"], dtype="datetime64[s]"))  # beyond datetime64[ns]
    since_epoch = np.datetime64("3000-01-01", "s") - np.datetime64("1970-01-01", "s")
    np.testing.assert_array_equal(column_values(late, "datetime"), [since_epoch.astype(float)])


def test_datetime_predictions_do_not_depend_on_the_unit_or_time_zone():
    """A datetime column alone was read as nanoseconds (units differ by 1e9 between [ns] and
    [s]); next to a number it raised numpy's DTypePromotionError."""
    rng = np.random.default_rng(1)
    stamps = pd.Series(pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 10_000, 60), unit="h"))
    y = np.sin((stamps - stamps.min()).dt.total_seconds() / 3e6) + 0.1 * rng.normal(size=60)
    x = rng.normal(size=60)
    predictions = []
    for column in (stamps, stamps.astype("datetime64[s]"), stamps.dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")):
        frame = pd.DataFrame({"when": column, "x": x})
        reg = PFNRegressor(n_estimators=2, random_state=0, show_progress=False).fit(frame, y)
        predictions.append(reg.predict(frame))
    np.testing.assert_allclose(predictions[1], predictions[0], rtol=1e-6)
    np.testing.assert_allclose(predictions[2], predictions[0], rtol=1e-6)
    assert np.corrcoef(predictions[0], y)[0, 1] > 0.8


def test_nat_is_missing_with_an_indicator():
    frame = pd.DataFrame(
        {"when": pd.to_datetime(["2020-01-01", None, "2020-01-03", "2020-01-02"]), "x": [1.0, 2, 3, 4]}
    )
    matrix = TablePreprocessor().fit(frame).transform(frame)
    assert np.isfinite(matrix).all() and matrix.shape[1] == 3  # when, x, and when's missing indicator


def test_a_column_must_keep_its_kind_between_fit_and_predict():
    frame = pd.DataFrame({"when": pd.date_range("2020-01-01", periods=8), "x": np.arange(8.0)})
    reg = PFNRegressor(n_estimators=1, show_progress=False).fit(frame, np.arange(8.0))
    with pytest.raises(ValueError, match="column 'when' was read as datetime in fit but holds int64"):
        reg.predict(frame.assign(when=np.arange(8)))
    with pytest.raises(ValueError, match="column 'x' was read as numeric in fit but holds datetime64"):
        reg.predict(frame.assign(x=frame["when"]))


@pytest.mark.parametrize(
    "X, error, message",
    [
        (pd.DataFrame(np.ones((4, 3)), columns=["a", "b", "a"]), ValueError, r"duplicate column names \['a'\]"),
        (pd.DataFrame({"z": np.arange(4) + 1j, "x": np.ones(4)}), TypeError, "column 'z' holds complex numbers"),
        (pd.DataFrame({"z": pd.Series([1 + 1j, 2, 3, 4], dtype=object)}), TypeError, "column 'z' holds complex"),
        (np.ones((4, 2)) + 1j, ValueError, "Complex data not supported"),
        (pd.DataFrame({"s": pd.arrays.SparseArray([0.0, 1, 0, 0])}), TypeError, "column 's' is sparse"),
        (scipy.sparse.csr_matrix(np.eye(4)), TypeError, "toarray"),
        (pd.DataFrame(index=range(4)), ValueError, "0 feature"),
    ],
    ids=["duplicate names", "complex column", "complex objects", "complex array", "sparse column", "sparse", "empty"],
)
def test_unreadable_input_is_named(X, error, message):
    with pytest.raises(error, match=message):
        PFNRegressor(n_estimators=1, show_progress=False).fit(X, [0.0, 1.0, 2.0, 3.0])


def test_error_messages_show_python_scalars_not_numpy_reprs():
    with pytest.raises(ValueError, match=r"only one class \('a'\)"):
        PFNClassifier(n_estimators=1).fit(np.ones((3, 2)), np.array(["a", "a", "a"]))
    with pytest.raises(ValueError, match=r"Got 0 instead\.$"):
        PFNClassifier(n_estimators=np.int64(0)).fit(np.ones((3, 2)), [0, 1, 0])
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})
    with pytest.raises(ValueError, match=r"non-numeric value 'x'"):
        PFNClassifier(n_estimators=1, categorical_features=[np.int64(0)]).fit(frame, [0, 1, 0])
