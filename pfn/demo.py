"""``pfn demo``: PFNClassifier and PFNRegressor next to classic learners on scikit-learn's datasets."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pfn.estimators import PFNClassifier, PFNRegressor

CLASSIFICATION = {"breast_cancer": load_breast_cancer, "wine": load_wine, "digits": load_digits}
REGRESSION = {"diabetes": load_diabetes}


def _learners(task: str, seed: int) -> dict[str, Callable[[], Any]]:
    if task == "classification":
        learners = {
            "PFNClassifier": lambda: PFNClassifier(random_state=seed, show_progress=False),
            "LogisticRegression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
            "RandomForest": lambda: RandomForestClassifier(random_state=seed),
        }
        extra = "XGBClassifier"
    else:
        learners = {
            "PFNRegressor": lambda: PFNRegressor(random_state=seed, show_progress=False),
            "Ridge": lambda: make_pipeline(StandardScaler(), Ridge()),
            "RandomForest": lambda: RandomForestRegressor(random_state=seed),
        }
        extra = "XGBRegressor"
    try:
        import xgboost

        learners["XGBoost"] = lambda: getattr(xgboost, extra)(random_state=seed)
    except ImportError:
        pass
    return learners


FOLDS = 5


def run_demo(seed: int = 0, folds: int = FOLDS) -> list[dict[str, Any]]:
    """Cross-validate every learner on each dataset (``folds`` folds, stratified for classes, every
    row tested once); return one row per (dataset, learner): mean scores and seconds per fold."""
    rows = []
    for task, datasets in (("classification", CLASSIFICATION), ("regression", REGRESSION)):
        for name, load in datasets.items():
            X, y = load(return_X_y=True)
            splitter = (StratifiedKFold if task == "classification" else KFold)(folds, shuffle=True, random_state=seed)
            results: dict[str, list[dict[str, float]]] = defaultdict(list)
            for train, test in splitter.split(X, y):
                for learner, make in _learners(task, seed).items():
                    results[learner].append(_fit_and_score(task, make(), X[train], y[train], X[test], y[test]))
            for learner, scores in results.items():
                mean = {key: sum(s[key] for s in scores) / len(scores) for key in scores[0]}
                rows.append({"dataset": name, "learner": learner, **mean})
    return rows


def _fit_and_score(task: str, model: Any, X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> dict[str, float]:
    """Scores of ``model`` fitted on the train rows, and the seconds fit + predict took."""
    start = time.perf_counter()
    model.fit(X_train, y_train)
    if task == "classification":
        proba = model.predict_proba(X_test)
        binary = proba.shape[1] == 2
        auc = roc_auc_score(y_test, proba[:, 1]) if binary else roc_auc_score(y_test, proba, multi_class="ovr")
        scores = {"roc_auc": auc, "accuracy": accuracy_score(y_test, proba.argmax(1))}
    else:
        scores = {"r2": r2_score(y_test, model.predict(X_test))}
    return {**scores, "seconds": time.perf_counter() - start}


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'dataset':<14} {'learner':<20} {'ROC AUC':>8} {'accuracy':>9} {'R²':>7} {'seconds':>8}"]
    for row in rows:
        cells = [f"{row[k]:.3f}" if k in row else "" for k in ("roc_auc", "accuracy", "r2")]
        lines.append(
            f"{row['dataset']:<14} {row['learner']:<20} {cells[0]:>8} {cells[1]:>9} {cells[2]:>7} "
            f"{row['seconds']:>8.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    print(format_table(run_demo()))
    print(
        f"\nmeans over {FOLDS}-fold cross-validation (seed 0); seconds = fit + predict per fold with "
        f"{torch.get_num_threads()} torch threads"
    )
