"""How many columns the estimators' ensemble members see: rank them, then validate in context.

A small PFN is hurt by many weak or irrelevant columns: it has to find the relevant ones from
the context rows alone. The estimators therefore rank the columns by a random forest's impurity
importance and choose how many of the top ones to keep by two-fold in-context validation: each
half of the train rows is the context for predicting the other half (the ranking refitted on the
context half only, so the held-out half never informs it). The candidate sizes are all columns
(at most as many as the model takes), half, a quarter, ... down to 2; the size with the highest
mean held-out log-likelihood wins (ties go to the larger). Seeds are fixed: the same table
always gives the same columns.

Validation sees half the rows as context, the final model all of them, so it under-rates
columns that only pay off with more rows (rule-like targets over every column). Against that
bias the selection also names a wider set: the most columns whose held-out log-likelihood is
within ``TOLERANCE`` nats per row of the best; the estimators let half their members see it.
Where more columns clearly hurt (many irrelevant ones) the wider set is the chosen one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import KFold, StratifiedKFold

MIN_ROWS = 20  # fewer train rows: every column is kept (halves too small to validate on)
MIN_FEATURES = 3  # fewer columns: every column is kept
RANKING_TREES = 50
SEED = 0
FOLDS = 2
TOLERANCE = 0.1  # nats per held-out row: how much worse the wider set may validate than the best

HeldOutScore = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]


def candidate_sizes(n_features: int) -> list[int]:
    """All columns, then halving (rounded up) down to 2: 13 -> [13, 7, 4, 2]."""
    sizes = [n_features]
    while sizes[-1] > 2:
        sizes.append(max(2, -(-sizes[-1] // 2)))
    return sizes


def rank_features(x: np.ndarray, y: np.ndarray, classification: bool) -> np.ndarray:
    """Column indices of x [n, f], most important first (random forest impurity importance)."""
    forest_type = RandomForestClassifier if classification else RandomForestRegressor
    forest = forest_type(n_estimators=RANKING_TREES, max_features="sqrt", random_state=SEED).fit(x, y)
    return np.argsort(-forest.feature_importances_, kind="stable")


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_features`: column indices (in their original order) of the
    best-validating size and of the widest size within ``TOLERANCE`` of it, and the mean held-out
    log-likelihood of every candidate size (empty when selection was skipped)."""

    best: np.ndarray
    wide: np.ndarray
    scores: dict[int, float] = field(default_factory=dict)


def select_features(
    x: np.ndarray, y: np.ndarray, classification: bool, held_out_score: HeldOutScore, max_features: int
) -> Selection:
    """Choose columns of x [n, f] by two-fold in-context validation. ``held_out_score(x_context,
    y_context, x_held_out, y_held_out)`` is the PFN's mean log-likelihood of the held-out
    targets; ``max_features`` is the most columns the model takes."""
    n, f = x.shape
    if n < MIN_ROWS or f < MIN_FEATURES:
        return Selection(np.arange(f), np.arange(f))
    sizes = candidate_sizes(min(f, max_features))
    counts = np.unique(y, return_counts=True)[1] if classification else None
    if classification and counts.min() >= FOLDS:
        splits = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(x, y)
    else:
        splits = KFold(FOLDS, shuffle=True, random_state=SEED).split(x)
    scores = dict.fromkeys(sizes, 0.0)
    for context, held_out in splits:
        order = rank_features(x[context], y[context], classification)
        for k in sizes:
            columns = np.sort(order[:k])
            score = held_out_score(x[np.ix_(context, columns)], y[context], x[np.ix_(held_out, columns)], y[held_out])
            scores[k] += score * len(held_out) / n
    best = max(sizes, key=lambda k: (scores[k], k))
    wide = max(k for k in sizes if scores[k] >= scores[best] - TOLERANCE)
    order = rank_features(x, y, classification)
    return Selection(np.sort(order[:best]), np.sort(order[:wide]), scores)
