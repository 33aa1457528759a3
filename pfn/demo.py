"""``pfn demo``: PFNClassifier and PFNRegressor next to classic learners on scikit-learn's datasets."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split
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


def run_demo(seed: int = 0) -> list[dict[str, Any]]:
    """Fit every learner on a 75/25 split of each dataset; return one row per (dataset, learner)."""
    rows = []
    for task, datasets in (("classification", CLASSIFICATION), ("regression", REGRESSION)):
        for name, load in datasets.items():
            X, y = load(return_X_y=True)
            stratify = y if task == "classification" else None
            X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=seed, stratify=stratify)
            for learner, make in _learners(task, seed).items():
                start = time.perf_counter()
                model = make().fit(X_train, y_train)
                if task == "classification":
                    proba = model.predict_proba(X_test)
                    auc = (
                        roc_auc_score(y_test, proba[:, 1])
                        if proba.shape[1] == 2
                        else roc_auc_score(y_test, proba, multi_class="ovr")
                    )
                    scores = {"roc_auc": auc, "accuracy": accuracy_score(y_test, proba.argmax(1))}
                else:
                    scores = {"r2": r2_score(y_test, model.predict(X_test))}
                rows.append({"dataset": name, "learner": learner, **scores, "seconds": time.perf_counter() - start})
    return rows


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
    print(f"\n75/25 split, seed 0; seconds = fit + predict with {torch.get_num_threads()} torch threads")
