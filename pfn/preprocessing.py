"""Table preprocessing for the estimators, fitted on train rows only.

Steps for X: column typing (categorical or numeric), ordinal encoding of categoricals, median
imputation with a missing-value indicator column for every column that had NaN in the train
rows, removal of constant and duplicate columns, robust scaling (median, IQR / 1.349) and soft
clipping of outliers (c · asinh(x / c), near the identity inside ±c). Ensemble members then
apply one more transform: none, quantile (to a normal), Yeo-Johnson power or target encoding of
few-valued columns (:class:`TargetEncodedColumns`). Regression members may also see the target
through a quantile transform (:class:`QuantileTarget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OrdinalEncoder,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    TargetEncoder,
)

CLIP = 4.0
MemberTransform = Literal["none", "quantile", "power", "target"]


def soft_clip(x: np.ndarray) -> np.ndarray:
    """CLIP · asinh(x / CLIP): identity near 0, logarithmic beyond ±CLIP."""
    return CLIP * np.arcsinh(x / CLIP)


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


def resolve_categorical(frame: pd.DataFrame, categorical_features: str | Sequence[int | str]) -> list[int]:
    """Positions of the categorical columns: given by index or name, or with "auto" the columns
    of pandas dtype category/object/string/bool and object columns that are not numbers."""
    columns = list(frame.columns)
    if isinstance(categorical_features, str):
        if categorical_features != "auto":
            raise ValueError(
                f"categorical_features must be 'auto' or a list of indices/names, got {categorical_features!r}"
            )
        found = []
        for i, column in enumerate(columns):
            series = frame[column]
            if (
                isinstance(series.dtype, pd.CategoricalDtype)
                or pd.api.types.is_bool_dtype(series.dtype)
                or (pd.api.types.is_string_dtype(series.dtype) and not _is_numeric_object(series))
            ):
                found.append(i)
        return found
    positions = []
    for item in categorical_features:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not -len(columns) <= item < len(columns):
                raise ValueError(f"categorical_features index {item} is out of range for {len(columns)} columns")
            positions.append(int(item) % len(columns))
        elif item in columns:
            positions.append(columns.index(item))
        else:
            raise ValueError(f"categorical_features names {item!r}, which is not a column of X")
    return sorted(set(positions))


def _is_numeric_object(series: pd.Series) -> bool:
    if series.dtype != object:
        return False
    values = series.dropna()
    return len(values) > 0 and pd.to_numeric(values, errors="coerce").notna().all()


class TablePreprocessor:
    """Turns a table (DataFrame with positional or named columns) into a float matrix."""

    def __init__(self, categorical_features: str | Sequence[int | str] = "auto") -> None:
        self.categorical_features = categorical_features

    def fit(self, frame: pd.DataFrame) -> TablePreprocessor:
        self.categorical_ = resolve_categorical(frame, self.categorical_features)
        self.numeric_ = [i for i in range(frame.shape[1]) if i not in self.categorical_]
        self.encoder_ = None
        if self.categorical_:
            self.encoder_ = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=np.nan
            ).fit(self._categories(frame))
        self.pipeline_ = Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                ("select", DropConstantAndDuplicateColumns()),
                ("scale", RobustScaler(unit_variance=True)),
                ("clip", FunctionTransformer(soft_clip)),
            ]
        ).fit(self._matrix(frame))
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Float32 matrix [n, f] with no NaN."""
        return self.pipeline_.transform(self._matrix(frame)).astype(np.float32)

    def _categories(self, frame: pd.DataFrame) -> np.ndarray:
        part = frame.iloc[:, self.categorical_]
        return part.astype(object).where(part.notna(), np.nan).astype(str).where(part.notna(), np.nan).to_numpy()

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Numeric columns as floats and categoricals as ordinal codes, NaN kept: [n, d] float64."""
        out = np.empty((frame.shape[0], frame.shape[1]), dtype=np.float64)
        for i in self.numeric_:
            column = frame.iloc[:, i]
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isnan(values) & column.notna().to_numpy()
            if bad.any():
                example = column[bad].iloc[0]
                raise ValueError(
                    f"column {frame.columns[i]!r} is numeric but holds the non-numeric value {example!r}; "
                    "list it in categorical_features to encode it as a category"
                )
            if np.isinf(values).any():
                raise ValueError(
                    f"column {frame.columns[i]!r} of X contains inf; replace it with a finite value or NaN"
                )
            out[:, i] = values
        if self.categorical_:
            out[:, self.categorical_] = self.encoder_.transform(self._categories(frame))
        return out


def member_transform(
    kind: MemberTransform, n_rows: int, seed: int, classes: bool, max_columns: int
) -> TransformerMixin | None:
    """The extra transform of an ensemble member (None for "none"). "target" (unfitted: it needs
    the targets, class ids when ``classes``) encodes within ``max_columns`` output columns (see
    :class:`TargetEncodedColumns`)."""
    if kind == "none":
        return None
    if kind == "quantile":
        return QuantileTransformer(output_distribution="normal", n_quantiles=min(1000, n_rows), random_state=seed)
    if kind == "target":
        return TargetEncodedColumns(target="classes" if classes else "continuous", max_columns=max_columns, seed=seed)
    return PowerTransformer(method="yeo-johnson", standardize=True)


class TargetEncodedColumns(TransformerMixin, BaseEstimator):
    """Replaces every column with 3..max_levels distinct values on the fit rows (category codes,
    ratings, small counts) by its target encoding (sklearn's TargetEncoder), standardised: a
    code's encoding then says what the code does, which an arbitrary category order does not.

    target: "continuous" (one column each: the shrunk mean of y per value) or "classes" (y
    holds class ids; two classes: one column, the shrunk share of the second; k > 2: k - 1
    columns, the shrunk share of each class but the last). Columns are encoded in order while
    the output stays within max_columns; the rest pass through unchanged, encoded ones follow
    them. ``fit_transform`` cross-fits (``folds`` shuffled folds), so that a row's own target
    never enters its own encoding; ``transform`` encodes new rows by all fit rows."""

    def __init__(
        self,
        target: Literal["continuous", "classes"] = "continuous",
        max_levels: int = 30,
        max_columns: int = 100,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.max_levels = max_levels
        self.max_columns = max_columns
        self.folds = folds
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> TargetEncodedColumns:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Cross-fitted encodings of the fit rows X [n, f] with targets y [n]: [n, f'] with f' <=
        max(f, max_columns)."""
        if self.target not in ("continuous", "classes"):
            raise ValueError(f"target must be 'continuous' or 'classes', got {self.target!r}")
        levels = np.array([len(np.unique(column)) for column in X.T])  # [f]
        candidates = np.flatnonzero((levels >= 3) & (levels <= self.max_levels))
        n_classes = len(np.unique(y))
        if self.target == "classes" and n_classes < 2:
            candidates = candidates[:0]  # nothing to encode with a single class
        multiclass = self.target == "classes" and n_classes > 2
        width = n_classes - 1 if multiclass else 1  # output columns per encoded column
        room = len(candidates) if width == 1 else max(self.max_columns - X.shape[1], 0) // (width - 1)
        self.columns_ = candidates[:room]
        self.rest_ = np.setdiff1d(np.arange(X.shape[1]), self.columns_)
        if len(self.columns_) == 0:
            return np.array(X, dtype=np.float64)
        kind = "continuous" if self.target == "continuous" else ("multiclass" if multiclass else "binary")
        cv = KFold(min(self.folds, len(X)), shuffle=True, random_state=self.seed)
        self.encoder_ = TargetEncoder(target_type=kind, cv=cv)
        encoded = self.encoder_.fit_transform(X[:, self.columns_], y)  # [n, c] or [n, c * k], class-minor
        self.keep_ = np.flatnonzero(np.arange(encoded.shape[1]) % n_classes != n_classes - 1) if multiclass else None
        encoded = encoded if self.keep_ is None else encoded[:, self.keep_]  # [n, c * width]
        self.mean_ = encoded.mean(axis=0)
        self.scale_ = np.maximum(encoded.std(axis=0), 1e-6)
        return self._joined(X, encoded)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Encodings of new rows X [m, f] by all fit rows: [m, f']."""
        if len(self.columns_) == 0:
            return np.array(X, dtype=np.float64)
        encoded = self.encoder_.transform(X[:, self.columns_])
        return self._joined(X, encoded if self.keep_ is None else encoded[:, self.keep_])

    def _joined(self, X: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        """The pass-through columns of X, then the standardised encodings."""
        return np.concatenate([X[:, self.rest_], (encoded - self.mean_) / self.scale_], axis=1).astype(np.float64)


class QuantileTarget:
    """A monotone map of standardised targets to a standard normal shape (quantile transform,
    then standardised again), fitted on the train targets. Skewed or heavy-tailed targets then
    fall where the model's buckets are fine instead of in its coarse outer ones. Beyond the
    train targets' range it continues linearly with the slope of its outer 2% at that end, so
    that targets outside the train range keep a density (sklearn's QuantileTransformer alone
    clips there)."""

    def fit(self, z: np.ndarray) -> QuantileTarget:
        self.quantile_ = QuantileTransformer(output_distribution="normal", n_quantiles=min(1000, len(z)))
        mapped = self.quantile_.fit_transform(z.reshape(-1, 1))[:, 0]  # [n]
        self.mean_ = float(mapped.mean())
        self.scale_ = max(float(mapped.std()), 1e-6)
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
