"""Fit + predict time of PFNClassifier against CatBoost, XGBoost and RandomForest (``pfn bench speed``).

1,000 train rows, 1,000 test rows, 20 features (a scikit-learn ``make_classification`` task),
default settings for every learner, timed side by side in one run (median of ``repeats``).
Writes ``speed.json`` and ``speed.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score

from benchmarks.common import environment, pyplot
from pfn.checkpoint import write_json
from pfn.estimators import PFNClassifier


def learners(model: str | None) -> dict[str, Callable[[], Any]]:
    """The learners with default settings; the boosting libraries are skipped when not installed."""
    out: dict[str, Callable[[], Any]] = {
        "PFNClassifier": lambda: PFNClassifier(model=model, random_state=0, show_progress=False)
    }
    try:
        from catboost import CatBoostClassifier

        out["CatBoost"] = lambda: CatBoostClassifier(
            verbose=0, random_seed=0, thread_count=torch.get_num_threads(), allow_writing_files=False
        )
    except ImportError:
        pass
    try:
        from xgboost import XGBClassifier

        out["XGBoost"] = lambda: XGBClassifier(random_state=0, n_jobs=torch.get_num_threads())
    except ImportError:
        pass
    out["RandomForest"] = lambda: RandomForestClassifier(random_state=0, n_jobs=torch.get_num_threads())
    return out


def run(out: Path, quick: bool = False, model: str | None = None) -> dict[str, Any]:
    """Time every learner; ``quick`` uses 200 + 200 rows and one repeat."""
    n_train, n_test, repeats = (200, 200, 1) if quick else (1000, 1000, 3)
    X, y = make_classification(n_samples=n_train + n_test, n_features=20, n_informative=10, random_state=0)
    X_train, X_test, y_train, y_test = X[:n_train], X[n_train:], y[:n_train], y[n_train:]
    rows = {}
    for name, make in learners(model).items():
        times, auc = [], float("nan")
        for _ in range(repeats):
            start = time.perf_counter()
            proba = make().fit(X_train, y_train).predict_proba(X_test)[:, 1]
            times.append(time.perf_counter() - start)
            auc = roc_auc_score(y_test, proba)
        rows[name] = {"fit_predict_s": float(np.median(times)), "all_s": times, "roc_auc": auc}
    pfn_time = rows["PFNClassifier"]["fit_predict_s"]
    for row in rows.values():
        row["time_vs_pfn"] = row["fit_predict_s"] / pfn_time
    result = {
        "benchmark": "speed",
        "quick": quick,
        "n_train": n_train,
        "n_test": n_test,
        "n_features": 20,
        "repeats": repeats,
        "learners": rows,
        "environment": environment(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "speed.json", result)
    _plot(rows, out / "speed.png", f"{n_train} train × {n_test} test rows × 20 features")
    print(summary(result))
    return result


def _plot(rows: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3))
    names = list(rows)
    ax.barh(names, [rows[n]["fit_predict_s"] for n in names], color=["C0"] + ["C7"] * (len(names) - 1))
    ax.set_xlabel("fit + predict seconds")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(result: dict[str, Any]) -> str:
    lines = [f"{'learner':<15} {'fit+predict s':>14} {'× PFN time':>11} {'ROC AUC':>8}"]
    for name, row in result["learners"].items():
        lines.append(f"{name:<15} {row['fit_predict_s']:>14.3f} {row['time_vs_pfn']:>11.2f} {row['roc_auc']:>8.3f}")
    lines.append(
        f"{result['n_train']} train × {result['n_test']} test rows × 20 features, median of "
        f"{result['repeats']}, {result['environment']['torch_threads']} torch threads"
    )
    return "\n".join(lines)
