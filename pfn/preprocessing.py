"""Table preprocessing for the estimators, fitted on train rows only.

Steps for X: column typing (numeric, categorical, datetime or timedelta; :func:`column_kinds`),
ordinal encoding of categoricals, datetimes as seconds since 1970-01-01 UTC and timedeltas as
seconds (:func:`column_values`), an exact power-of-two rescaling of every column to magnitudes below 1
(:class:`PowerOfTwoScale`, so that no statistic overflows or underflows), median imputation with a
missing-value indicator column for every column that had NaN in the train rows, removal of
constant and duplicate columns, robust scaling (median, IQR / 1.349) and soft clipping of
outliers (c · asinh(x / c), near the identity inside ±c). Ensemble members then apply one more
transform: none, quantile (to a normal), Yeo-Johnson power or target encoding of few-valued
columns (:class:`TargetEncodedColumns`). Regression targets are standardised robustly
(:class:`TargetScale`); regression members may also see them through a quantile transform
(:class:`QuantileTarget`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import sklearn
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from sklearn.utils.fixes import parse_version

CLIP = 4.0
FLOAT_MAX = float(np.finfo(np.float64).max)
BEYOND = 64  # new feature values count as at most 2**BEYOND times the fit rows' largest magnitude
FENCE_TAIL = 0.01  # target fences start from the 1% and 99% quantiles ...
FENCE_ROWS = 3  # ... or further in, so that at least 3 rows lie beyond each (at most the quartiles)
FENCE = 5.0  # ... and lie this many times the quantile's distance from the median beyond it
INTERVAL = 0.9  # the central interval whose few-row width TargetScale matches (see few_rows_factor)
WIDEN_ALL_ROWS = 3  # from this many train rows the quantile-target members are widened too (quantile_target_factor)
MemberTransform = Literal["none", "quantile", "power", "target"]
ColumnKind = Literal["numeric", "categorical", "datetime", "timedelta"]


def plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar it holds (for error messages: 1, not np.int64(1))."""
    return value.item() if isinstance(value, np.generic) else value


def soft_clip(x: np.ndarray) -> np.ndarray:
    """CLIP · asinh(x / CLIP): identity near 0, logarithmic beyond ±CLIP."""
    return CLIP * np.arcsinh(x / CLIP)


def power_of_two_shift(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """The exponents e (per ``axis`` reduction) with max |values| / 2**e in [0.5, 1) (0 where
    all are 0), NaN ignored."""
    return np.frexp(np.nanmax(np.abs(values), axis=axis, initial=0.0))[1]


class PowerOfTwoScale(TransformerMixin, BaseEstimator):
    """Divides each column by a power of two (exactly) so that its fit rows' largest magnitude
    lies in [0.5, 1): sums, differences and squares of them then neither overflow nor
    underflow, and scikit-learn's RobustScaler (which takes scales below 10 · eps for 0) reads
    a column of 1e-300s as it reads one of 1s. The later steps are scale-free, so this changes
    nothing else. New values beyond 2**64 times the fit rows' largest magnitude count as that
    (the soft clip puts them beyond 170 anyway)."""

    def fit(self, X: np.ndarray, y: object = None) -> PowerOfTwoScale:
        self.shift_ = power_of_two_shift(X, axis=0)  # [f]
        self.bound_ = np.ldexp(1.0, np.minimum(self.shift_ + BEYOND, 1023))  # [f] on X's scale
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.ldexp(np.clip(X, -self.bound_, self.bound_), -self.shift_)


class DropConstantAndDuplicateColumns(TransformerMixin, BaseEstimator):
    """Drops columns that are constant or equal to an earlier column on the fit rows
    (keeps one column if all would go, so a model always has an input)."""

    def fit(self, X: np.ndarray, y: object = None) -> DropConstantAndDuplicateColumns:
        constant = np.nanmax(X, axis=0) == np.nanmin(X, axis=0) if len(X) else np.ones(X.shape[1], bool)
        _, first = np.unique(X.T, axis=0, return_index=True)
        duplicate = np.ones(X.shape[1], bool)
        duplicate[first] = False
        keep = ~constant & ~duplicate
        if not keep.any():
            keep[0] = True
        self.keep_ = keep
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return X[:, self.keep_]


def check_column_names(frame: pd.DataFrame) -> None:
    """Raise a ValueError naming the duplicate column names of ``frame``, if any."""
    names = pd.Index(frame.columns)
    duplicated = [plain(name) for name in names[names.duplicated()].unique()]
    if duplicated:
        raise ValueError(f"X has duplicate column names {duplicated}; give every column its own name")


def column_kind(series: pd.Series) -> ColumnKind:
    """How "auto" reads a column: datetime (datetime64 with or without a time zone, period, or
    objects that are all datetimes or dates), timedelta (timedelta64 or timedelta objects),
    categorical (category, interval (as pd.cut's bins, which are categories of intervals), bool,
    boolean, str/string, and object columns that are not all numbers) or numeric (every other
    int/float, nullable Int/Float, and object columns of numbers). Sparse and complex columns
    raise a TypeError naming the column."""
    dtype, name = series.dtype, plain(series.name)
    if isinstance(dtype, pd.SparseDtype):
        raise TypeError(f"column {name!r} is sparse ({dtype}); pass a dense table (DataFrame.sparse.to_dense())")
    inferred = pd.api.types.infer_dtype(series, skipna=True) if dtype is np.dtype(object) else None
    if pd.api.types.is_complex_dtype(dtype) or inferred == "complex" or _numbers(series).dtype.kind == "c":
        raise TypeError(
            f"column {name!r} holds complex numbers; pass their real and imaginary parts as two columns "
            "(np.real, np.imag)"
        )
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "timedelta"
    if inferred in ("datetime", "datetime64", "date"):
        return "datetime"
    if inferred in ("timedelta", "timedelta64"):
        return "timedelta"
    if (
        isinstance(dtype, (pd.CategoricalDtype, pd.IntervalDtype))
        or pd.api.types.is_bool_dtype(dtype)
        or (pd.api.types.is_string_dtype(dtype) and not _is_numeric_object(series))
    ):
        return "categorical"
    return "numeric"


def column_kinds(frame: pd.DataFrame, categorical_features: str | Sequence[int | str]) -> list[ColumnKind]:
    """The kind of every column: ``column_kind`` with "auto", else the listed columns (by
    index or name) categorical and the others as "auto" reads them, but never categorical."""
    kinds = [column_kind(frame.iloc[:, i]) for i in range(frame.shape[1])]
    if isinstance(categorical_features, str):
        if categorical_features != "auto":
            raise ValueError(
                f"categorical_features must be 'auto' or a list of indices/names, got {categorical_features!r}"
            )
        return kinds
    listed = _listed_columns(frame, categorical_features)
    return ["categorical" if i in listed else ("numeric" if k == "categorical" else k) for i, k in enumerate(kinds)]


def _listed_columns(frame: pd.DataFrame, categorical_features: Sequence[int | str]) -> set[int]:
    """Positions of the columns listed by index or name."""
    columns = list(frame.columns)
    positions = set()
    for item in categorical_features:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not -len(columns) <= item < len(columns):
                raise ValueError(f"categorical_features index {plain(item)} is out of range for {len(columns)} columns")
            positions.add(int(item) % len(columns))
        elif item in columns:
            positions.add(columns.index(item))
        else:
            raise ValueError(f"categorical_features names {plain(item)!r}, which is not a column of X")
    return positions


def _numbers(series: pd.Series) -> pd.Series:
    """An object column's non-missing values as numbers (NaN where not a number); other
    columns: an empty float series."""
    if series.dtype != object:
        return pd.Series([], dtype=np.float64)
    return pd.to_numeric(series.dropna(), errors="coerce")


def _is_numeric_object(series: pd.Series) -> bool:
    numbers = _numbers(series)
    return len(numbers) > 0 and bool(numbers.notna().all())


def column_values(series: pd.Series, kind: ColumnKind) -> np.ndarray:
    """A non-categorical column as floats [n], missing values (NaN, None, NA, NaT) as NaN:
    numbers as they are, datetimes as seconds since 1970-01-01 00:00 UTC (naive ones read as
    UTC, aware ones converted to it, periods at their start), timedeltas as seconds."""
    name = plain(series.name)
    if kind == "datetime":
        if isinstance(series.dtype, pd.PeriodDtype):
            series = series.dt.start_time
        elif not pd.api.types.is_datetime64_any_dtype(series.dtype):
            series = pd.to_datetime(series, utc=True)  # objects that are all datetimes or dates
        if series.dt.tz is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        instants = series.to_numpy()  # datetime64 in the column's own unit, NaT for missing
        return (instants - np.datetime64(0, "s")) / np.timedelta64(1, "s")  # in numpy: no unit overflows
    if kind == "timedelta":
        return pd.to_timedelta(series).to_numpy() / np.timedelta64(1, "s")
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & series.notna().to_numpy()
    if bad.any():
        raise ValueError(
            f"column {name!r} is numeric but holds the non-numeric value {plain(series[bad].iloc[0])!r}; "
            "list it in categorical_features to encode it as a category"
        )
    if np.isinf(values).any():
        raise ValueError(f"column {name!r} of X contains inf; replace it with a finite value or NaN")
    return values


class TablePreprocessor:
    """Turns a table (DataFrame with positional or named columns) into a float matrix."""

    def __init__(self, categorical_features: str | Sequence[int | str] = "auto") -> None:
        self.categorical_features = categorical_features

    def fit(self, frame: pd.DataFrame) -> TablePreprocessor:
        check_column_names(frame)
        self.kinds_ = column_kinds(frame, self.categorical_features)
        self.categorical_ = [i for i, kind in enumerate(self.kinds_) if kind == "categorical"]
        self.encoder_ = None
        if self.categorical_:
            self.encoder_ = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=np.nan
            ).fit(self._categories(frame))
        from sklearn.impute import SimpleImputer  # at use: it imports sklearn.neighbors, slow to import

        self.pipeline_ = Pipeline(
            [
                ("magnitude", PowerOfTwoScale()),
                ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                ("select", DropConstantAndDuplicateColumns()),
                ("scale", RobustScaler(unit_variance=True)),
                ("clip", FunctionTransformer(soft_clip)),
            ]
        )
        self.pipeline_.fit(self._matrix(frame))
        # output columns holding category codes: the input's categoricals (indicators follow them), as kept
        codes = np.isin(np.arange(len(self.pipeline_["impute"].get_feature_names_out())), self.categorical_)
        self.categorical_columns_ = np.flatnonzero(codes[self.pipeline_["select"].keep_])
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Float32 matrix [n, f] with no NaN or inf."""
        check_column_names(frame)
        return self.pipeline_.transform(self._matrix(frame)).astype(np.float32)

    def _categories(self, frame: pd.DataFrame) -> np.ndarray:
        part = frame.iloc[:, self.categorical_].astype(object)
        return part.where(part.notna(), np.nan).astype(str).where(part.notna(), np.nan).to_numpy()

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Non-categorical columns as floats (see column_values) and categoricals as ordinal
        codes, NaN kept: [n, d] float64."""
        out = np.empty((frame.shape[0], frame.shape[1]), dtype=np.float64)
        for i, kind in enumerate(self.kinds_):
            if kind != "categorical":
                out[:, i] = column_values(self._checked(frame.iloc[:, i], kind), kind)
        if self.categorical_:
            out[:, self.categorical_] = self.encoder_.transform(self._categories(frame))
        return out

    @staticmethod
    def _checked(series: pd.Series, kind: ColumnKind) -> pd.Series:
        """The column, if it is (or is read as) of the kind it had in fit as far as datetimes and
        timedeltas go: a number never passes for a time or the other way round."""
        now = column_kind(series) if series.notna().any() else kind
        if kind != now and {kind, now} & {"datetime", "timedelta"}:
            raise ValueError(
                f"column {plain(series.name)!r} was read as {kind} in fit but holds {series.dtype} values now "
                f"(read as {now}); pass the same kind of column as in fit"
            )
        return series


def member_transform(
    kind: MemberTransform,
    n_rows: int,
    seed: int,
    classes: bool,
    max_columns: int,
    categorical: Sequence[int] = (),
) -> TransformerMixin | None:
    """The extra transform of an ensemble member (None for "none"). "target" (unfitted: it needs
    the targets, class ids when ``classes``) encodes within ``max_columns`` output columns, the
    ``categorical`` columns (category codes) first (see :class:`TargetEncodedColumns`)."""
    if kind == "none":
        return None
    if kind == "quantile":
        return QuantileTransformer(output_distribution="normal", n_quantiles=min(1000, n_rows), random_state=seed)
    if kind == "target":
        return TargetEncodedColumns(
            target="classes" if classes else "continuous",
            categorical=tuple(int(c) for c in categorical),
            max_columns=max_columns,
            seed=seed,
        )
    return PowerTransformer(method="yeo-johnson", standardize=True)


class CrossFittedTargetColumns(TransformerMixin, BaseEstimator):
    """Base of the transformers that make columns from the target: ``fit_transform`` cross-fits
    on the fit rows (a row's own target never enters its own columns), ``transform`` uses all fit
    rows. Subclasses store ``target`` ("continuous" or "classes") and write both methods."""

    target: str

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> CrossFittedTargetColumns:
        self.fit_transform(X, y)
        return self

    def _check_target(self) -> None:
        if self.target not in ("continuous", "classes"):
            raise ValueError(f"target must be 'continuous' or 'classes', got {self.target!r}")


class TargetEncodedColumns(CrossFittedTargetColumns):
    """Replaces the ``categorical`` columns (category codes, however many levels) and every other
    column with 3..max_levels distinct values on the fit rows (ratings, small counts) by their
    target encodings (sklearn's TargetEncoder), standardised: a code's encoding then says what
    the code does, which an arbitrary category order does not. Columns of fewer than 3 values
    stay as they are (their encoding would only rescale them). Every other column of more
    than max_levels values that repeat at least ``repeats`` times on average (ids stored as
    numbers, ages, counts) keeps its values and gets its encoding appended as well: whether it
    acts by its order or by its value, the model sees both (0: none appended).

    target: "continuous" (one column each: the shrunk mean of y per value) or "classes" (y
    holds class ids; two classes: one column, the shrunk share of the second; k > 2: k - 1
    columns, the shrunk share of each class but the last). Columns are encoded in order (the
    categorical ones first) while
    the output stays within max_columns, then the appended ones; the rest pass through unchanged,
    the encodings follow them. ``fit_transform`` cross-fits (``folds`` shuffled folds), so that a row's own target
    never enters its own encoding; ``transform`` encodes new rows by all fit rows."""

    def __init__(
        self,
        target: Literal["continuous", "classes"] = "continuous",
        categorical: tuple[int, ...] = (),
        max_levels: int = 30,
        repeats: int = 3,
        max_columns: int = 100,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.categorical = categorical
        self.max_levels = max_levels
        self.repeats = repeats
        self.max_columns = max_columns
        self.folds = folds
        self.seed = seed

    def fit_transform(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Cross-fitted encodings of the fit rows X [n, f] with targets y [n]: [n, f'] with f' <=
        max(f, max_columns)."""
        self._check_target()
        levels = np.array([len(np.unique(column)) for column in X.T])  # [f]
        categorical = np.zeros(X.shape[1], bool)
        categorical[list(self.categorical)] = True  # an index beyond X's columns raises here
        few = (levels >= 3) & (levels <= self.max_levels)
        candidates = np.concatenate([np.flatnonzero(categorical & (levels >= 3)), np.flatnonzero(few & ~categorical)])
        repeated = np.flatnonzero(~categorical & (levels > self.max_levels) & (levels * self.repeats <= len(X)))
        if self.repeats < 1:
            repeated = repeated[:0]
        n_classes = len(np.unique(y))
        if self.target == "classes" and n_classes < 2:
            candidates, repeated = candidates[:0], repeated[:0]  # nothing to encode with a single class
        multiclass = self.target == "classes" and n_classes > 2
        width = n_classes - 1 if multiclass else 1  # output columns per encoded column
        room = len(candidates) if width == 1 else max(self.max_columns - X.shape[1], 0) // (width - 1)
        self.columns_ = candidates[:room]
        left = self.max_columns - X.shape[1] - (width - 1) * len(self.columns_)  # room for appended encodings
        self.appended_ = repeated[: max(left, 0) // width]
        self.rest_ = np.setdiff1d(np.arange(X.shape[1]), self.columns_)
        if len(self._encoded) == 0:
            return np.array(X, dtype=np.float64)
        kind = "continuous" if self.target == "continuous" else ("multiclass" if multiclass else "binary")
        self.encoder_ = _target_encoder(kind, min(self.folds, len(X)), self.seed)
        with warnings.catch_warnings():  # StratifiedKFold on scikit-learn < 1.9, see _target_encoder
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            encoded = self.encoder_.fit_transform(X[:, self._encoded], y)  # [n, c] or [n, c * k], class-minor
        self.keep_ = np.flatnonzero(np.arange(encoded.shape[1]) % n_classes != n_classes - 1) if multiclass else None
        encoded = encoded if self.keep_ is None else encoded[:, self.keep_]  # [n, c * width]
        self.mean_ = encoded.mean(axis=0)
        self.scale_ = np.maximum(encoded.std(axis=0), 1e-6)
        return self._joined(X, encoded)

    @property
    def _encoded(self) -> np.ndarray:
        """The columns encoded: the replaced ones, then the appended ones."""
        return np.concatenate([self.columns_, self.appended_])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Encodings of new rows X [m, f] by all fit rows: [m, f']."""
        if len(self._encoded) == 0:
            return np.array(X, dtype=np.float64)
        encoded = self.encoder_.transform(X[:, self._encoded])
        return self._joined(X, encoded if self.keep_ is None else encoded[:, self.keep_])

    def _joined(self, X: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        """The pass-through columns of X, then the standardised encodings."""
        return np.concatenate([X[:, self.rest_], (encoded - self.mean_) / self.scale_], axis=1).astype(np.float64)


MAX_ONE_HOT = 100  # one-hot columns of a category column in NeighbourTargets' distances


class NeighbourTargets(CrossFittedTargetColumns):
    """Appends to each row the mean target of its ``neighbours`` nearest fit rows: one column
    for continuous targets or two classes (the share of the second), k - 1 for k classes (the
    share of each class but the last), standardised. Distances are Euclidean over the other
    columns standardised and the ``categorical`` columns (category codes) one-hot (at most
    ``MAX_ONE_HOT`` columns each: the most frequent levels, then the rarer ones and levels unseen
    in fit as one column, or none where every level has its own).
    ``fit_transform`` cross-fits (``folds`` shuffled folds: a fit row's neighbours come from the
    other folds, so its own target never enters its estimate); ``transform`` uses all fit rows.
    A model that sees a sample of a large table then still sees what every row says near each
    row (ids or times shared by groups of rows, repeated entities)."""

    def __init__(
        self,
        target: Literal["continuous", "classes"] = "continuous",
        categorical: tuple[int, ...] = (),
        neighbours: int = 50,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.categorical = categorical
        self.neighbours = neighbours
        self.folds = folds
        self.seed = seed

    def fit_transform(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """X [n, f] with the cross-fitted neighbour means of its rows appended: [n, f + width]."""
        from sklearn.neighbors import NearestNeighbors  # at use: it is slow to import

        self._check_target()
        if len(X) <= self.folds:
            raise ValueError(f"NeighbourTargets needs more fit rows than folds ({self.folds}), got {len(X)}")
        codes, rest = list(self.categorical), np.setdiff1d(np.arange(X.shape[1]), list(self.categorical))
        one_hot = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_ONE_HOT, sparse_output=False)
        self.one_hot_ = one_hot.fit(X[:, codes]) if codes else None
        self.scaler_ = StandardScaler().fit(X[:, rest]) if len(rest) else None
        space = self._space(X)  # [n, d]
        if self.target == "continuous":
            self.values_ = np.asarray(y, dtype=np.float64).reshape(-1, 1)  # [n, 1]
        else:
            classes = np.unique(y)
            shown = classes[1:] if len(classes) == 2 else classes[:-1]
            self.values_ = (y[:, None] == shown[None, :]).astype(np.float64)  # [n, width]
        near = np.empty_like(self.values_)
        for fit_rows, out_rows in KFold(self.folds, shuffle=True, random_state=self.seed).split(X):
            index = NearestNeighbors(n_neighbors=min(self.neighbours, len(fit_rows))).fit(space[fit_rows])
            near[out_rows] = self.values_[fit_rows][index.kneighbors(space[out_rows], return_distance=False)].mean(1)
        self.index_ = NearestNeighbors(n_neighbors=min(self.neighbours, len(X))).fit(space)
        self.mean_ = near.mean(axis=0)
        self.scale_ = np.maximum(near.std(axis=0), 1e-6)
        return self._joined(X, near)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """New rows X [m, f] with the mean targets of their nearest fit rows appended: [m, f + width]."""
        index = self.index_.kneighbors(self._space(X), return_distance=False)  # [m, k]
        return self._joined(X, self.values_[index].mean(axis=1))

    def _space(self, X: np.ndarray) -> np.ndarray:
        """The columns distances are measured in [n, d]: the other columns standardised, then the codes one-hot."""
        codes = list(self.categorical)
        parts = []
        if self.scaler_ is not None:
            parts.append(self.scaler_.transform(X[:, np.setdiff1d(np.arange(X.shape[1]), codes)]))
        if self.one_hot_ is not None:
            parts.append(self.one_hot_.transform(X[:, codes]))
        return np.concatenate(parts, axis=1)

    def _joined(self, X: np.ndarray, near: np.ndarray) -> np.ndarray:
        return np.concatenate([X, (near - self.mean_) / self.scale_], axis=1).astype(X.dtype)


def _target_encoder(kind: str, folds: int, seed: int) -> TargetEncoder:
    """scikit-learn's TargetEncoder cross-fitting on ``folds`` shuffled folds. From scikit-learn
    1.9 on, shuffled KFold for every target; before (no splitter accepted), the same folds for
    continuous targets and StratifiedKFold's for classes."""
    if parse_version(sklearn.__version__) >= parse_version("1.9"):
        return TargetEncoder(target_type=kind, cv=KFold(folds, shuffle=True, random_state=seed))
    return TargetEncoder(target_type=kind, cv=folds, shuffle=True, random_state=seed)


class QuantileTarget:
    """A monotone map of standardised targets to a normal shape (quantile transform, then
    standardised again and divided by :func:`quantile_target_factor`, so that from 3 rows on
    the member sees its targets as narrowed by the few-rows widening as the other members do),
    fitted on the train targets. Skewed or heavy-tailed targets then fall where the model's
    buckets are fine instead of in its coarse outer ones. Beyond the train targets' range it
    continues linearly with the slope of its outer 2% at that end, so that targets outside the
    train range keep a density (sklearn's QuantileTransformer alone clips there)."""

    def fit(self, z: np.ndarray) -> QuantileTarget:
        # every train target (sklearn subsamples 10,000 at random by default): exact quantiles, and
        # the same map on every fit
        n = len(z)
        self.quantile_ = QuantileTransformer(output_distribution="normal", n_quantiles=min(1000, n), subsample=n)
        mapped = self.quantile_.fit_transform(z.reshape(-1, 1))[:, 0]  # [n]
        self.mean_ = float(mapped.mean())
        self.scale_ = max(float(mapped.std()), 1e-6) * quantile_target_factor(len(z))
        distinct = np.unique(z)  # [u], sorted
        self.low_, self.high_ = float(distinct[0]), float(distinct[-1])
        self.bottom_, self.top_ = (float(t) for t in self._inside(np.array([self.low_, self.high_])))
        if len(distinct) < 2:  # a constant target: any increasing continuation will do
            self.low_slope_ = self.high_slope_ = 1.0
        else:
            self.low_slope_ = self._outer_slope(distinct)
            self.high_slope_ = self._outer_slope(distinct[::-1])
        return self

    def _outer_slope(self, distinct: np.ndarray) -> float:
        """The map's mean slope over the outer 2% of the distinct train targets [u] (sorted away
        from the end in question), leaving out the outermost one, which the quantile transform
        puts at ±5.2 whatever the sample size."""
        u = len(distinct)
        first, last = distinct[min(1, u - 2)], distinct[min(max(2, math.ceil(0.02 * u)), u - 1)]
        mapped = self._inside(np.array([first, last]))  # [2]
        return float((mapped[1] - mapped[0]) / (last - first))

    def _inside(self, z: np.ndarray) -> np.ndarray:
        """The map on the train range (z clipped to it)."""
        clipped = np.clip(np.asarray(z, dtype=np.float64), self.low_, self.high_).reshape(-1, 1)
        return (self.quantile_.transform(clipped)[:, 0] - self.mean_) / self.scale_

    def cdf(self, member_cdf: Callable[[np.ndarray], Any], z: np.ndarray) -> np.ndarray:
        """The CDF at standardised targets z [P] of a distribution the member predicts over its
        targets (``member_cdf`` maps member targets [P] to CDF values [m, P])."""
        return np.asarray(member_cdf(self.transform(z)))  # [m, P]

    def transform(self, z: np.ndarray) -> np.ndarray:
        """The member's targets for standardised targets z (any 1-D array)."""
        z = np.asarray(z, dtype=np.float64)
        inside = self._inside(z)
        above = self.top_ + (z - self.high_) * self.high_slope_
        below = self.bottom_ - (self.low_ - z) * self.low_slope_
        return np.where(z > self.high_, above, np.where(z < self.low_, below, inside))


def few_rows_factor(n: int) -> float:
    """How much wider than the sample standard deviation of n >= 2 targets their scale is
    taken: Student's t quantile (n - 1 degrees of freedom) over the normal's at the ``INTERVAL``
    level, times √(1 + 1/n) (4.7 at 2 rows, 2.1 at 3, 1.4 at 5, 1.2 at 10, 1.03 at 50). The
    model was trained on targets standardised by their population's mean and standard deviation
    and treats the location and scale it is given as known; from n rows both are uncertain, and
    this widening makes a normal predictive's central interval at that level the t predictive's
    for a new target (the √(1 + 1/n) is the uncertainty of the mean)."""
    level = (1 + INTERVAL) / 2
    return float(stats.t.ppf(level, n - 1) / stats.norm.ppf(level) * math.sqrt(1 + 1 / n))


def quantile_target_factor(n: int) -> float:
    """The few-rows widening of the quantile-target members (:class:`QuantileTarget`), whose
    transform re-standardises their targets and so undoes :class:`TargetScale`'s: the same
    :func:`few_rows_factor` from ``WIDEN_ALL_ROWS`` (3) rows on, none below. With 2 rows the
    unwidened quantile members are what gives the mixture its heavy tails (widened too, the
    2-row mean NLL rose from 3.4 to 17.6 on linear tables; docs/quickstart.md)."""
    return few_rows_factor(n) if n >= WIDEN_ALL_ROWS else 1.0


class TargetScale:
    """Robust standardisation of regression targets y [n] (finite floats). Location and scale are
    the mean and standard deviation (ddof 1, as the prior's) of the targets winsorised at fences
    q_t - 5 (median - q_t) and q_(1-t) + 5 (q_(1-t) - median) beyond the t and 1 - t quantiles
    (t = 1%, or more so that 3 rows lie beyond each, at most 25%; where a quantile is the median,
    the mean absolute deviation from it stands in): a few wild targets (up to 1% of the rows,
    and at least 3) cannot move them, each tail's fence grows with that tail (a skewed target
    keeps its long tail), and without outliers they are the plain mean and standard deviation.
    The scale is widened for
    few rows (:func:`few_rows_factor`). Targets without spread (one row, a constant) give no
    scale; they get |location| / √n (1 / √n at 0), the standard deviation had one more row at
    distance |location| been seen: one row's magnitude, shrinking as more equal rows come. The
    statistics are computed on the targets divided by a power of two (largest magnitude in
    [0.5, 1)), so none overflows or underflows anywhere in the float64 range."""

    def fit(self, y: np.ndarray) -> TargetScale:
        y = np.asarray(y, dtype=np.float64)
        self.shift_ = int(power_of_two_shift(y))
        u = np.ldexp(y, -self.shift_)  # [n], within ±1
        if np.ptp(u) == 0:
            self.location_ = float(u[0])
            self.spread_ = (abs(self.location_) or 1.0) / math.sqrt(len(u))
            return self
        tail = min(max(FENCE_TAIL, FENCE_ROWS / len(u)), 0.25)
        low, median, high = np.quantile(u, [tail, 0.5, 1 - tail])
        deviation = float(np.mean(np.abs(u - median)))
        below, above = (median - low) or deviation, (high - median) or deviation
        kept = np.clip(u, low - FENCE * below, high + FENCE * above)
        self.location_ = float(np.mean(kept))
        deviations = kept - self.location_  # [n]; rescaled again, so that their squares cannot underflow
        exponent = int(power_of_two_shift(deviations))
        spread = float(np.ldexp(np.std(np.ldexp(deviations, -exponent), ddof=1), exponent))
        # at least the smallest normal float times the largest target (below, spreads underflow)
        self.spread_ = max(spread * few_rows_factor(len(u)), float(np.finfo(np.float64).tiny))
        return self

    @property
    def loc(self) -> float:
        """The location on the targets' scale."""
        return float(np.ldexp(self.location_, self.shift_))

    @property
    def scale(self) -> float:
        """The scale on the targets' scale (at most the largest float)."""
        with np.errstate(over="ignore"):
            return float(min(np.ldexp(self.spread_, self.shift_), FLOAT_MAX))

    def transform(self, y: np.ndarray) -> np.ndarray:
        """Standardised targets [n] (float64; ±inf where they exceed the float range)."""
        with np.errstate(over="ignore"):
            return (np.ldexp(np.asarray(y, dtype=np.float64), -self.shift_) - self.location_) / self.spread_
