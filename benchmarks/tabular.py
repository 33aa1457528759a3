"""The tabular PFNs against classic learners on real tables (``pfn bench tabular``).

``--data DIR`` holds ``classification/*.csv`` and/or ``regression/*.csv`` (target in the last
column; string columns are categorical; empty cells are missing). For every table, every cap
on the train rows and every repeat: a stratified (classification) or plain random split, the
train part cut to the cap (stratified), the test part to at most 2,000 rows; every learner with
its default settings is fitted and scored on the same rows. Classification: ROC AUC (one-vs-rest
macro average over the classes present in the test rows), accuracy, log loss, expected
calibration error (top label, 15 bins). Regression: R², RMSE (also divided by the test targets'
standard deviation), and for learners with a predictive distribution (the PFN, the GP) NLL and
CRPS in units of the train targets' standard deviation. Time: fit + predict seconds.
The GPs (scikit-learn) run up to 500 train rows only: the regressor fits its kernel (constant ×
RBF + white noise) by marginal likelihood; the classifier, whose Laplace fit per class and
kernel search took minutes per table, keeps a fixed RBF of length scale sqrt(d) on
standardised inputs.

Writes ``tabular.json`` (every figure; later runs add to it, see :func:`run`),
``tabular.md`` (the report) and plots. ``--docs FILE`` splices the report into FILE.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from benchmarks.common import environment, pyplot, record_quality, splice_section
from pfn import estimators, finetune, heads, inference, preprocessing, retrieval, selection
from pfn import model as transformer
from pfn.checkpoint import InferenceConfig, read_card, resolve, write_json
from pfn.config import ConfigError
from pfn.estimators import PFNClassifier, PFNRegressor

TASKS = ("classification", "regression")
DEFAULT_MODELS = {"classification": "tabular-clf", "regression": "tabular-reg"}
CAPS = (100, 500, 1000)
REPEATS = 5
TEST_FRACTION = 0.33
MAX_TEST_ROWS = 2000
SEED = 20261124
PFN_LEARNER = "PFN"
METRICS = {
    "classification": ("roc_auc", "accuracy", "log_loss", "ece", "time_s"),
    "regression": ("r2", "rmse", "nrmse", "nll", "crps", "time_s"),
}
# learners too slow beyond this many train rows (the GPs: O(n³) per fit, per class for the
# classifier) are not run at larger caps
MAX_ROWS = {"GP": 500}
MAIN_METRIC = {"classification": "roc_auc", "regression": "r2"}
INFERENCE_MODULES = (estimators, heads, inference, preprocessing, retrieval, selection, transformer)


class DataLayoutError(ConfigError):
    """A data folder that does not have the layout the benchmark reads."""


@dataclass(frozen=True)
class Table:
    """One benchmark table: features X (strings are categorical, NaN missing) and target y."""

    name: str
    task: str
    X: pd.DataFrame
    y: np.ndarray


def load_tables(data: Path, task: str, names: Sequence[str] | None = None) -> list[Table]:
    """The tables of ``data/<task>/*.csv`` (sorted by name; only ``names`` when given)."""
    folder = Path(data) / task
    files = sorted(folder.glob("*.csv"))
    if names is not None:
        files = [f for f in files if f.stem in names]
    tables = []
    for path in files:
        frame = pd.read_csv(path)
        if frame.shape[1] < 2:
            raise DataLayoutError(f"{path} needs at least one feature column and the target in the last column")
        y = frame.iloc[:, -1]
        if y.isna().any():
            raise DataLayoutError(f"{path}: the target column has {int(y.isna().sum())} missing values")
        X = frame.iloc[:, :-1]
        target = y.astype(str).to_numpy() if task == "classification" else y.to_numpy(dtype=np.float64)
        tables.append(Table(name=path.stem, task=task, X=X, y=target))
    return tables


def tasks_in(data: Path) -> list[str]:
    """The tasks whose sub-folders of ``data`` hold CSV files."""
    data = Path(data)
    if not data.is_dir():
        raise DataLayoutError(f"--data {data} is not a folder")
    found = [t for t in TASKS if any((data / t).glob("*.csv"))]
    if not found:
        raise DataLayoutError(
            f"{data} has no classification/*.csv or regression/*.csv; put each table (target in the "
            "last column) in the sub-folder of its task"
        )
    return found


def split(table: Table, cap: int, repeat: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices of one repeat, the train part cut to ``cap`` rows."""
    seed = SEED + 1000 * repeat
    rows = np.arange(len(table.y))
    stratify = table.y if table.task == "classification" else None
    train, test = train_test_split(rows, test_size=TEST_FRACTION, random_state=seed, stratify=stratify)
    train = _cut(train, cap, table.y if stratify is not None else None, seed)
    test = _cut(test, MAX_TEST_ROWS, table.y if stratify is not None else None, seed + 1)
    return train, test


def _cut(rows: np.ndarray, size: int, y: np.ndarray | None, seed: int) -> np.ndarray:
    """``size`` of ``rows``, stratified by y when given and possible (see _strata)."""
    if len(rows) <= size:
        return rows
    strata = None if y is None else _strata(y[rows], len(rows) - size)
    if strata is None:
        return np.random.default_rng(seed).choice(rows, size=size, replace=False)
    kept, _ = train_test_split(rows, train_size=size, random_state=seed, stratify=strata)
    return kept


def _strata(y: np.ndarray, left_out: int) -> np.ndarray | None:
    """y, or None (a plain random cut) when stratifying is impossible: a class with a single row,
    or fewer rows left out than there are classes."""
    _, counts = np.unique(y, return_counts=True)
    return y if counts.min() >= 2 and left_out >= len(counts) else None


# ---------------------------------------------------------------- learners


def _shrink(X: np.ndarray) -> np.ndarray:
    """Divide by sqrt(columns): a unit RBF length scale then equals sqrt(d) on standardised inputs."""
    return X / np.sqrt(max(X.shape[1], 1))


def _encoded(estimator: Any, one_hot: bool, shrink: bool = False) -> Any:
    """estimator behind imputation, categorical encoding (one-hot or ordinal) and scaling
    (and with ``shrink`` a division by sqrt(columns))."""
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        if one_hot
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
    )
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    columns = ColumnTransformer(
        [
            ("categorical", categorical, make_column_selector(dtype_exclude="number")),
            ("numeric", numeric, make_column_selector(dtype_include="number")),
        ]
    )
    if shrink:
        return make_pipeline(columns, FunctionTransformer(_shrink), estimator)
    return make_pipeline(columns, estimator)


class _CatBoost:
    """CatBoost with its native categorical handling (string columns, missing as a category)."""

    def __init__(self, task: str, threads: int) -> None:
        from catboost import CatBoostClassifier, CatBoostRegressor

        cls = CatBoostClassifier if task == "classification" else CatBoostRegressor
        self.model = cls(verbose=0, random_seed=0, thread_count=threads, allow_writing_files=False)

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        self.categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        for c in self.categorical:
            X[c] = X[c].astype(object).where(X[c].notna(), "missing").astype(str)
        return X

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> _CatBoost:
        self.model.fit(self._frame(X), y, cat_features=self.categorical)
        self.classes_ = getattr(self.model, "classes_", None)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(self._frame(X))).reshape(len(X), -1)[:, 0]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._frame(X))


def learners(task: str, model: str, threads: int) -> dict[str, Callable[[], Any]]:
    """Factories of the learners, all with default settings (the PFN first)."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from xgboost import XGBClassifier, XGBRegressor

    if task == "classification":
        return {
            PFN_LEARNER: lambda: PFNClassifier(model=model, random_state=0, show_progress=False),
            "LogisticRegression": lambda: _encoded(LogisticRegression(max_iter=1000), one_hot=True),
            "kNN": lambda: _encoded(KNeighborsClassifier(), one_hot=True),
            "RandomForest": lambda: _encoded(RandomForestClassifier(random_state=0, n_jobs=threads), one_hot=False),
            "XGBoost": lambda: _encoded(XGBClassifier(random_state=0, n_jobs=threads), one_hot=False),
            "LightGBM": lambda: _encoded(LGBMClassifier(random_state=0, n_jobs=threads, verbose=-1), one_hot=False),
            "CatBoost": lambda: _CatBoost(task, threads),
            "GP": lambda: _encoded(
                GaussianProcessClassifier(RBF(1.0), optimizer=None, random_state=0), one_hot=True, shrink=True
            ),
        }
    gp_kernel = ConstantKernel() * RBF(1.0) + WhiteKernel()
    return {
        PFN_LEARNER: lambda: PFNRegressor(model=model, random_state=0, show_progress=False),
        "LinearRegression": lambda: _encoded(LinearRegression(), one_hot=True),
        "kNN": lambda: _encoded(KNeighborsRegressor(), one_hot=True),
        "RandomForest": lambda: _encoded(RandomForestRegressor(random_state=0, n_jobs=threads), one_hot=False),
        "XGBoost": lambda: _encoded(XGBRegressor(random_state=0, n_jobs=threads), one_hot=False),
        "LightGBM": lambda: _encoded(LGBMRegressor(random_state=0, n_jobs=threads, verbose=-1), one_hot=False),
        "CatBoost": lambda: _CatBoost(task, threads),
        "GP": lambda: _encoded(GaussianProcessRegressor(gp_kernel, normalize_y=True, random_state=0), one_hot=True),
    }


# ---------------------------------------------------------------- metrics


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: y [n] class indices, proba [n, k]."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
            for b in range(bins)
            if (which == b).any()
        )
    )


def classification_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Scores of proba [n, k] (columns: all classes of the table) for y [n] class indices."""
    proba = np.clip(proba, 1e-12, None)
    proba = proba / proba.sum(axis=1, keepdims=True)
    present = [c for c in range(proba.shape[1]) if 0 < (y == c).sum() < len(y)]
    if proba.shape[1] == 2:
        auc = roc_auc_score(y, proba[:, 1])
    else:
        auc = float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    return {
        "roc_auc": float(auc),
        "accuracy": float(accuracy_score(y, proba.argmax(axis=1))),
        "log_loss": float(log_loss(y, proba, labels=np.arange(proba.shape[1]))),
        "ece": expected_calibration_error(y, proba),
    }


def regression_scores(
    y: np.ndarray, mean: np.ndarray, scale: float, dist: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, float]:
    """R², RMSE, RMSE / std(y); with dist = (logpdf [n], quantiles [n, Q] at QUANTILE_LEVELS)
    also NLL and CRPS in units of ``scale`` (the train targets' standard deviation)."""
    rmse = float(np.sqrt(np.mean((y - mean) ** 2)))
    out = {"r2": float(r2_score(y, mean)), "rmse": rmse, "nrmse": rmse / max(float(np.std(y)), 1e-12)}
    if dist is not None:
        logpdf, quantiles = dist
        out["nll"] = float(np.mean(-logpdf) - math.log(scale))
        out["crps"] = float(crps_from_quantiles(y, quantiles) / scale)
    return out


QUANTILE_LEVELS = (np.arange(99) + 0.5) / 99


def crps_from_quantiles(y: np.ndarray, quantiles: np.ndarray) -> float:
    """CRPS ≈ 2 · mean pinball loss over QUANTILE_LEVELS; y [n], quantiles [n, Q]."""
    diff = y[:, None] - quantiles  # [n, Q]
    pinball = np.maximum(QUANTILE_LEVELS * diff, (QUANTILE_LEVELS - 1) * diff)
    return float(2 * pinball.mean())


def _fit_score(make: Callable[[], Any], table: Table, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    X_train, X_test = table.X.iloc[train], table.X.iloc[test]
    start = time.perf_counter()
    if table.task == "classification":
        classes, codes = np.unique(table.y, return_inverse=True)
        learner = make().fit(X_train, codes[train])
        proba = np.zeros((len(test), len(classes)))
        proba[:, np.asarray(learner.classes_, dtype=int)] = learner.predict_proba(X_test)
        elapsed = time.perf_counter() - start
        scores = classification_scores(codes[test], proba)
    else:
        y_train = table.y[train]
        learner = make().fit(X_train, y_train)
        dist = None
        if isinstance(learner, PFNRegressor):
            predictive = learner.predict_dist(X_test)
            mean = predictive.mean()
            dist = (predictive.logpdf(table.y[test]), predictive.quantile(QUANTILE_LEVELS))
        elif isinstance(learner, Pipeline) and isinstance(learner[-1], GaussianProcessRegressor):
            mean, std = learner.predict(X_test, return_std=True)
            std = np.maximum(std, 1e-9)
            dist = (norm.logpdf(table.y[test], mean, std), norm.ppf(QUANTILE_LEVELS, mean[:, None], std[:, None]))
        else:
            mean = learner.predict(X_test)
        elapsed = time.perf_counter() - start
        scores = regression_scores(table.y[test], np.asarray(mean), max(float(np.std(y_train)), 1e-12), dist)
    scores["time_s"] = elapsed
    return scores


# ---------------------------------------------------------------- the run


def run(
    out: Path,
    quick: bool = False,
    model: str | None = None,
    update_card: bool = False,
    data: str | Path = Path("..") / "shared" / "datasets",
    caps: Sequence[int] = CAPS,
    repeats: int = REPEATS,
    learner_names: Sequence[str] | None = None,
    docs: str | Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark; ``quick``: three tables per task, one repeat, 100 train rows.

    model: a checkpoint to use in place of the shipped model of its task (its card says which).
    learner_names: run only these learners. Results add up in ``out/tabular.json`` and an
    interrupted run continues: figures already there for a (table, cap, learner) are kept, except
    the PFN's when its weights or the package's inference code changed (see
    :func:`pfn_fingerprint`); delete the file (or use another ``out``) to redo them.
    """
    out = Path(out)
    models = dict(DEFAULT_MODELS)
    if model is not None:
        models[read_card(resolve(model))["task"]] = model
    if quick:
        caps, repeats = (100,), 1
    caps = tuple(int(c) for c in caps)
    if not caps or min(caps) < 2 or repeats < 1:
        raise ConfigError(f"caps must be integers >= 2 and repeats >= 1, got caps={caps}, repeats={repeats}")
    threads = torch.get_num_threads()
    known = {n for task in TASKS for n in learners(task, "", 1)}
    if set(learner_names or ()) - known:
        raise ConfigError(f"unknown learner(s) {sorted(set(learner_names) - known)}; known: {sorted(known)}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tabular.json"

    def start(result: dict[str, Any]) -> None:
        result["caps"] = sorted(set(result["caps"]) | set(caps))
        result["runs"].append(environment())

    _update(path, repeats, quick, start)
    for task in tasks_in(Path(data)):
        tables = load_tables(Path(data), task)
        if quick:
            tables = sorted(tables, key=lambda t: len(t.y))[:3]
        factories = learners(task, models[task], threads)
        chosen = [n for n in factories if learner_names is None or n in learner_names]
        card = read_card(resolve(models[task]))
        begin = partial(
            _begin_task,
            task=task,
            model=models[task],
            weights=card["weights_sha256"],
            fingerprint=pfn_fingerprint(card),
            pfn_runs=PFN_LEARNER in chosen,
        )
        _update(path, repeats, quick, begin)
        for table in tables:
            for cap in caps:
                splits = [split(table, cap, r) for r in range(repeats)]
                for name in chosen:
                    done = _read(path)["tasks"][task]["tables"].get(table.name, {}).get(str(cap), {})
                    if cap > MAX_ROWS.get(name, cap) or name in done:
                        continue
                    scores = [_fit_score(factories[name], table, tr, te) for tr, te in splits]

                    store = partial(_store, table=table, cap=cap, name=name, scores=scores)
                    _update(path, repeats, quick, store)  # each figure is stored as soon as it exists
                done = _read(path)["tasks"][task]["tables"].get(table.name, {}).get(str(cap), {})
                print(f"{task} {table.name} cap {cap}: " + _line(done, MAIN_METRIC[task]), flush=True)
    result = _update(path, repeats, quick, lambda result: result.update(summary=summarise(result)))
    plot(result, out)
    (out / "tabular.md").write_text("\n".join(f"## {t}\n\n{report(result, t)}" for t in result["summary"]))
    if docs is not None:
        docs = Path(docs)
        prefix = os.path.relpath(out, docs.parent) + "/"
        for task in result["summary"]:
            splice_section(docs, f"tabular-{task}", report(result, task, prefix))
    if update_card and not quick:
        for task, section in result["summary"].items():
            record_quality(result["tasks"][task]["model"], "tabular", _card_figures(section, task, out))
    print(summary_text(result))
    return result


def pfn_fingerprint(card: dict[str, Any], fine_tuning: bool = False) -> str:
    """sha256 of the PFN's weights' sha256, the card's settings that the estimators read (the
    classifier's softmax temperature, the regressor's tail scales) and the source of the modules
    that turn them into predictions (with ``fine_tuning``, the fine-tuning module's as well):
    figures measured with other weights, settings or inference code are redone."""
    classifier = card.get("task") != "regression"
    settings = {
        "temperature": InferenceConfig.from_card(card).softmax_temperature if classifier else None,
        "tail_scales": card.get("tail_scales"),
    }
    digest = hashlib.sha256(card["weights_sha256"].encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for module in (*INFERENCE_MODULES, finetune) if fine_tuning else INFERENCE_MODULES:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


def _begin_task(result: dict[str, Any], task: str, model: str, weights: str, fingerprint: str, pfn_runs: bool) -> None:
    """Add the task's section; when the PFN runs with other weights or inference code than
    before, drop its figures."""
    section = result["tasks"].setdefault(task, {"model": model, "tables": {}})
    if pfn_runs and section.get("pfn_fingerprint") != fingerprint:
        for entry in section["tables"].values():
            for per_cap in entry.values():
                if isinstance(per_cap, dict):
                    per_cap.pop(PFN_LEARNER, None)
        section.update(model=model, weights_sha256=weights, pfn_fingerprint=fingerprint)


def _store(result: dict[str, Any], table: Table, cap: int, name: str, scores: list[dict[str, float]]) -> None:
    entry = result["tasks"][table.task]["tables"].setdefault(
        table.name, {"rows": len(table.y), "features": table.X.shape[1]}
    )
    entry.setdefault(str(cap), {})[name] = scores


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _update(path: Path, repeats: int, quick: bool, change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Apply ``change`` to the results in ``path`` under a file lock and write them back, so
    that several runs (e.g. baselines and the PFN in two processes) can add to one file."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            result = _read(path)
            if result.get("repeats") != repeats or result.get("quick") != quick:
                raise ConfigError(
                    f"{path} holds a run with {result.get('repeats')} repeats (quick={result.get('quick')}); "
                    "results add up only across runs with the same repeats and quick setting: use another --out"
                )
        else:
            result = {"benchmark": "tabular", "caps": [], "repeats": repeats, "quick": quick, "tasks": {}, "runs": []}
        change(result)
        write_json(path, result)
    return result


def _line(per_cap: dict[str, list[dict[str, float]]], metric: str) -> str:
    return ", ".join(f"{n} {np.mean([s[metric] for s in runs]):.3f}" for n, runs in per_cap.items())


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per task and cap: each learner's mean of every metric over tables (each table's mean over
    repeats), mean rank by the task's main metric, and the number of tables it ranks first on."""
    out: dict[str, Any] = {}
    for task, section in result["tasks"].items():
        metric = MAIN_METRIC[task]
        out[task] = {}
        for cap in result["caps"]:
            per_table = {
                name: {
                    n: {m: float(np.mean([s[m] for s in runs if m in s])) for m in METRICS[task] if m in runs[0]}
                    for n, runs in entry[str(cap)].items()
                }
                for name, entry in section["tables"].items()
                if str(cap) in entry
            }
            names = sorted({n for table in per_table.values() for n in table})
            complete = {t: v for t, v in per_table.items() if set(v) == set(names)}
            ranks = {n: [] for n in names}
            for scores in complete.values():
                order = pd.Series({n: scores[n][metric] for n in names}).rank(ascending=False)
                for n in names:
                    ranks[n].append(float(order[n]))
            out[task][str(cap)] = {
                "tables": len(complete),
                "learners": {
                    n: {
                        **{
                            m: float(np.mean([complete[t][n][m] for t in complete]))
                            for m in METRICS[task]
                            if all(m in complete[t][n] for t in complete) and complete
                        },
                        "mean_rank": float(np.mean(ranks[n])) if complete else math.nan,
                        "wins": int(sum(r == 1.0 for r in ranks[n])),
                    }
                    for n in names
                },
            }
    return out


def _card_figures(section: dict[str, Any], task: str, out: Path) -> dict[str, Any]:
    """Per cap: table count, and each learner's mean main metric and mean rank."""
    metric = MAIN_METRIC[task]
    per_cap = {
        cap: {
            "tables": s["tables"],
            **{
                n: {metric: round(v[metric], 4), "mean_rank": round(v["mean_rank"], 2)}
                for n, v in s["learners"].items()
            },
        }
        for cap, s in section.items()
    }
    return {"benchmark": f"pfn bench tabular; every figure in {out / 'tabular.json'}", **per_cap}


# ---------------------------------------------------------------- report


def summary_text(result: dict[str, Any]) -> str:
    lines = []
    for task, by_cap in result["summary"].items():
        metric = MAIN_METRIC[task]
        for cap, s in by_cap.items():
            lines.append(f"{task}, train rows <= {cap}, {s['tables']} tables:")
            for n, v in sorted(s["learners"].items(), key=lambda kv: kv[1]["mean_rank"]):
                lines.append(f"  {n:<20} {metric} {v[metric]:.4f}  rank {v['mean_rank']:.2f}  {v['time_s']:.2f} s")
    return "\n".join(lines)


def report(result: dict[str, Any], task: str, image_prefix: str = "") -> str:
    """The Markdown report of one task: summary per cap, per-table figures at the largest cap,
    the plot (linked as ``image_prefix`` + file name)."""
    by_cap = result["summary"][task]
    metric = MAIN_METRIC[task]
    cols = [m for m in METRICS[task] if m != "time_s"]
    commands = sorted({run["command"] for run in result["runs"]})
    lines = [
        f"PFN: `{result['tasks'][task]['model']}`. Commands: " + "; ".join(f"`{c}`" for c in commands) + ". "
        f"{result['repeats']} repeats per table; test rows: {int(TEST_FRACTION * 100)}% of the table (at most "
        f"{MAX_TEST_ROWS}). Every learner uses its default settings and sees the same rows. Means over tables "
        "of each table's mean over repeats; rank 1 is best on the main metric; time is fit + predict seconds "
        "per table and repeat.",
        "",
    ]
    for cap, s in by_cap.items():
        lines.append(f"Train rows ≤ {cap}, {s['tables']} tables:")
        lines.append("")
        lines.append("| learner | " + " | ".join(cols) + " | mean rank | wins | time s |")
        lines.append("|---|" + "---:|" * (len(cols) + 3))
        for n, v in sorted(s["learners"].items(), key=lambda kv: -kv[1][metric]):
            cells = [f"{v[m]:.4f}" if m in v else "–" for m in cols]
            lines.append(
                f"| {n} | " + " | ".join(cells) + f" | {v['mean_rank']:.2f} | {v['wins']} | {v['time_s']:.2f} |"
            )
        lines.append("")
    cap = str(max(int(c) for c in by_cap))
    tables = {name: entry for name, entry in result["tasks"][task]["tables"].items() if cap in entry}
    names = list(by_cap[cap]["learners"])
    lines.append(f"Per table, {metric} at train rows ≤ {cap} (mean over repeats; best in bold):")
    lines.append("")
    lines.append("| table | rows | features | " + " | ".join(names) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(names))
    for tname, entry in tables.items():
        values = {n: float(np.mean([s[metric] for s in entry[cap][n]])) for n in names if n in entry[cap]}
        best = max(values.values())
        cells = [
            (f"**{values[n]:.3f}**" if values[n] == best else f"{values[n]:.3f}") if n in values else "–" for n in names
        ]
        lines.append(f"| {tname} | {entry['rows']} | {entry['features']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"![{task}]({image_prefix}{task}.png)")
    lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], out: Path) -> None:
    """Per task: the main metric against the train-row cap for every learner, and time."""
    plt = pyplot()

    for task, by_cap in result["summary"].items():
        metric = MAIN_METRIC[task]
        caps = [int(c) for c in by_cap]
        names = sorted({n for s in by_cap.values() for n in s["learners"]}, key=lambda n: n != PFN_LEARNER)
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, n in enumerate(names):
            style = {"color": "C0", "lw": 2.5, "zorder": 3} if n == PFN_LEARNER else {"color": f"C{i + 1}", "lw": 1}
            ran = [c for c in caps if n in by_cap[str(c)]["learners"]]
            a.plot(ran, [by_cap[str(c)]["learners"][n][metric] for c in ran], marker="o", label=n, **style)
            b.plot(ran, [by_cap[str(c)]["learners"][n]["time_s"] for c in ran], marker="o", label=n, **style)
        a.set_xscale("log")
        a.set_xlabel("train rows (cap)")
        a.set_ylabel(f"mean {metric}")
        b.set_xscale("log")
        b.set_yscale("log")
        b.set_xlabel("train rows (cap)")
        b.set_ylabel("fit + predict s")
        a.legend(fontsize=7)
        fig.suptitle(f"{task}: {len(result['tasks'][task]['tables'])} tables, {result['repeats']} repeats")
        fig.tight_layout()
        fig.savefig(out / f"{task}.png", dpi=110)
        plt.close(fig)
