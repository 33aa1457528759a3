"""Choices the estimators make by in-context validation on the train rows: how many columns
the ensemble members see, and how much weight each member gets.

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

Members differ in their input transform (and, for the regressor, target transform), and which
one suits a table differs from table to table (a power transform of skewed inputs helps on some
tables and costs 0.3 R² on others). The estimators therefore weight the members by stacking
their predictive distributions: each member is rebuilt on each half of the rows and predicts
the other half, and the weights optimise a proper score of the mixture on the held-out rows:
the log-likelihood for classes (:func:`likelihood_stacking`), the CRPS for regression
(:func:`quadratic_stacking`). For regression the log-likelihood rewards members that fit the
atoms of discrete targets while placing the mean worse (it cost 0.02 R²); the CRPS rewards a
well-placed mean. For classes the Brier score, the CRPS's analogue, did slightly worse
(CHANGELOG.md, estimator changes).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import KFold, StratifiedKFold

MIN_ROWS = 20  # fewer train rows: every column is kept (halves too small to validate on)
MIN_FEATURES = 3  # fewer columns: every column is kept
RANKING_TREES = 50
SEED = 0
FOLDS = 2
TOLERANCE = 0.1  # nats per held-out row: how much worse the wider set may validate than the best
PRIOR_ROWS = 50  # how strongly quadratic stacking weights are pulled towards equal ones
PSEUDO_ROWS = 1.0  # per member: the Dirichlet(2, ..., 2) prior of likelihood stacking
LOG_LIKELIHOOD_FLOOR = -700.0  # log densities below this (about 1e-304) count as this

HeldOutScore = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]


def folds(y: np.ndarray, classification: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The two-fold split of the rows (context, held out) that every validation here uses:
    stratified by class where every class has a row in each fold, seeded."""
    if classification and np.unique(y, return_counts=True)[1].min() >= FOLDS:
        return StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(y, y)
    return KFold(FOLDS, shuffle=True, random_state=SEED).split(y)


def likelihood_stacking(log_likelihood: np.ndarray, iterations: int = 500, tolerance: float = 1e-7) -> np.ndarray:
    """Mixture weights [M] of M members from their held-out log-likelihoods [n, M] (row i, member
    j): the weights that maximise the mixture's mean held-out log-likelihood, by EM, a posteriori
    under a Dirichlet(2, ..., 2) prior (``PSEUDO_ROWS`` per member), which pulls the weights
    towards equal ones when there are few rows."""
    n, m = log_likelihood.shape
    floored = np.maximum(log_likelihood, LOG_LIKELIHOOD_FLOOR)  # [n, M]
    likelihood = np.exp(floored - floored.max(axis=1, keepdims=True))  # [n, M], each row's best 1
    weights = np.full(m, 1.0 / m)
    for _ in range(iterations):
        joint = likelihood * weights  # [n, M]
        responsibility = joint / joint.sum(axis=1, keepdims=True)  # [n, M]
        updated = (responsibility.sum(axis=0) + PSEUDO_ROWS) / (n + m * PSEUDO_ROWS)
        converged = np.abs(updated - weights).max() < tolerance
        weights = updated
        if converged:
            break
    return weights


def quadratic_stacking(vectors: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mixture weights [M] of M members (non-negative, summing to one) that minimise the mean
    squared distance between the mixed vectors and the target vectors of n held-out rows:
    ``mean_i |sum_j w_j vectors[i, j] - target[i]|²`` for vectors [n, M, T] and target [n, T].
    With class probabilities and one-hot targets this is the Brier score; with CDFs on a grid
    (times the square root of the grid's widths) and the step at each target, the CRPS.
    Weights from few rows are noisy, and a mixture hedges: the minimiser w* is pulled towards
    equal weights as if ``PRIOR_ROWS`` more rows had found the members equal,
    (n w* + PRIOR_ROWS / M) / (n + PRIOR_ROWS)."""
    n, m, _ = vectors.shape
    gram = np.einsum("imt,ikt->mk", vectors, vectors) / n  # [M, M]
    cross = np.einsum("imt,it->m", vectors, target) / n  # [M]
    result = minimize(
        lambda w: w @ gram @ w - 2 * cross @ w,
        np.full(m, 1.0 / m),
        jac=lambda w: 2 * (gram @ w - cross),
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    if not result.success:
        warnings.warn(
            f"the stacking weights did not converge ({result.message}); the members are mixed equally",
            RuntimeWarning,
            stacklevel=3,
        )
        return np.full(m, 1.0 / m)
    weights = np.maximum(result.x, 0.0)
    shrink = n / (n + PRIOR_ROWS)
    return shrink * weights / weights.sum() + (1 - shrink) / m


def candidate_sizes(n_features: int) -> list[int]:
    """All columns, then halving (rounded up) down to 2: 13 -> [13, 7, 4, 2]."""
    sizes = [n_features]
    while sizes[-1] > 2:
        sizes.append(max(2, -(-sizes[-1] // 2)))
    return sizes


def rank_features(x: np.ndarray, y: np.ndarray, classification: bool) -> np.ndarray:
    """Column indices of x [n, f], most important first (random forest impurity importance)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # at use: slow to import

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
    scores = dict.fromkeys(sizes, 0.0)
    for context, held_out in folds(y, classification):
        order = rank_features(x[context], y[context], classification)
        for k in sizes:
            columns = np.sort(order[:k])
            score = held_out_score(x[np.ix_(context, columns)], y[context], x[np.ix_(held_out, columns)], y[held_out])
            scores[k] += score * len(held_out) / n
    best = max(sizes, key=lambda k: (scores[k], k))
    wide = max(k for k in sizes if scores[k] >= scores[best] - TOLERANCE)
    order = rank_features(x, y, classification)
    return Selection(np.sort(order[:best]), np.sort(order[:wide]), scores)
