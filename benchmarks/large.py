"""Tables of 1,000–50,000 rows: the PFN and its variants against boosted trees (``pfn bench large``).

``--data DIR`` holds ``classification/*.csv`` and/or ``regression/*.csv`` (target in the last
column; string columns are categorical; empty cells are missing), as for ``pfn bench tabular``;
tables with fewer than twice the test rows (4,000) are left out. Per table and repeat, 2,000 test
rows are drawn once (stratified for classification); the other rows are put in one random order
(for classification interleaved by class, so that every prefix keeps the class shares) and the
train rows at a cap are its first ``min(cap, rows left)``: train sets are nested across caps. A
cap above a table's rows repeats its largest train set (the figures are copied, not refitted).

Every learner runs with its default settings; the PFN variants are the estimators with the
parameters of :data:`VARIANTS`. A variant whose parameters the installed estimator rejects
(TypeError or scikit-learn's InvalidParameterError) is recorded as not available. Scores:
classification ROC AUC (one-vs-rest macro average), accuracy, log loss; regression R², RMSE over
the test targets' standard deviation (nrmse) and CRPS in units of the train targets' standard
deviation (the PFN's from its predictive distribution; a point prediction's CRPS is its absolute
error). Costs: fit and predict seconds, wall and process CPU (all threads), and memory: every
fit + predict runs in a fresh process forked from a server that has imported the benchmark
(``multiprocessing`` forkserver), which reports its peak resident memory (``peak_rss_mb``,
``getrusage``'s ``ru_maxrss``) and how much that peak rose during fit + predict (``rss_increase_mb``).

Writes ``large.json`` (every figure; runs with other ``--learners`` or caps add to it and an
interrupted run continues, see :func:`run`), ``large.md`` (the report) and a plot per task.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import make_classification, make_regression
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import InvalidParameterError

from benchmarks.common import environment, pyplot
from benchmarks.tabular import (
    QUANTILE_LEVELS,
    DataLayoutError,
    Table,
    _strata,
    classification_scores,
    learners,
    load_tables,
    pfn_fingerprint,
    regression_scores,
    tasks_in,
)
from pfn.checkpoint import read_card, resolve, write_json
from pfn.config import ConfigError
from pfn.estimators import PFNClassifier, PFNRegressor

# PFN variant -> the estimator parameters that make it (on top of the defaults)
VARIANTS: dict[str, dict[str, Any]] = {
    "PFN": {},
    "PFN-retrieval": {"context": "retrieval"},
    "PFN-finetune": {"fine_tune": True},
}
BASELINES = ("LightGBM", "XGBoost", "CatBoost", "RandomForest")
LEARNERS = (*VARIANTS, *BASELINES)
TASKS = ("classification", "regression")
DEFAULT_MODELS = {"classification": "tabular-clf", "regression": "tabular-reg"}
CAPS = (1000, 5000, 10000, 50000)
TEST_ROWS = 2000
REPEATS = 1
SEED = 20261205
GAIN_CAPS = (1000, 10000)  # the PFN's gain between these caps is compared with LightGBM's
MEMORY_TARGET_MB = 4096
QUICK = {"caps": (200, 400), "test_rows": 500, "rows": 1000, "learners": ("PFN", "LightGBM")}
MAIN_METRIC = {"classification": "roc_auc", "regression": "r2"}
METRICS = {"classification": ("roc_auc", "accuracy", "log_loss"), "regression": ("r2", "nrmse", "crps")}
COSTS = ("fit_s", "predict_s", "fit_cpu_s", "predict_cpu_s", "peak_rss_mb", "rss_increase_mb")


# ---------------------------------------------------------------- rows


def split(table: Table, repeat: int, test_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The train rows in the order the caps take them (the train rows at a cap are a prefix)
    and the ``test_rows`` test rows of one repeat."""
    seed = SEED + 1000 * repeat
    rng = np.random.default_rng(seed)
    rows = np.arange(len(table.y))
    classification = table.task == "classification"
    stratify = _strata(table.y, min(test_rows, len(rows) - test_rows)) if classification else None
    rest, test = train_test_split(rows, test_size=test_rows, random_state=seed, stratify=stratify)
    if not classification:
        return rng.permutation(rest), test
    # the k-th row of a class with c rows sorts at (k + u) / c: every prefix keeps the class shares
    key = np.empty(len(rest))
    for label in np.unique(table.y[rest]):
        members = np.flatnonzero(table.y[rest] == label)
        key[members] = (rng.permutation(len(members)) + rng.random(len(members))) / len(members)
    return rest[np.argsort(key, kind="stable")], test


# ---------------------------------------------------------------- learners


def make_learner(task: str, name: str, model: str, threads: int) -> Any:
    """A learner with default settings; a PFN variant with the parameters of VARIANTS."""
    if name in VARIANTS:
        estimator = PFNClassifier if task == "classification" else PFNRegressor
        return estimator(model=model, random_state=0, show_progress=False, **VARIANTS[name])
    return learners(task, model, threads)[name]()


def unavailable(task: str, model: str, names: Sequence[str]) -> dict[str, str]:
    """The PFN variants among ``names`` whose parameters the installed estimator rejects, with why."""
    missing = {}
    for name in names:
        if name not in VARIANTS:
            continue
        try:
            make_learner(task, name, model, 1)._validate_params()
        except (TypeError, InvalidParameterError) as error:
            missing[name] = f"{type(error).__name__}: {error}"
    return missing


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (ru_maxrss is bytes on macOS, KB elsewhere)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def measure(table: Table, name: str, model: str, threads: int, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Fit and predict one learner (in a process of its own, see :func:`in_fresh_process`):
    its scores, seconds and memory."""
    torch.set_num_threads(threads)
    learner = make_learner(table.task, name, model, threads)
    X_train, X_test = table.X.iloc[train], table.X.iloc[test]
    before = _peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    if table.task == "classification":
        classes, codes = np.unique(table.y, return_inverse=True)
        learner.fit(X_train, codes[train])
        fit_s, fit_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        proba = np.zeros((len(test), len(classes)))
        proba[:, np.asarray(learner.classes_, dtype=int)] = learner.predict_proba(X_test)
        scores = classification_scores(codes[test], proba)
    else:
        y_train, y_test = table.y[train], table.y[test]
        learner.fit(X_train, y_train)
        fit_s, fit_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        dist = None
        if isinstance(learner, PFNRegressor):
            predictive = learner.predict_dist(X_test)
            mean = predictive.mean()
            dist = (predictive.logpdf(y_test), predictive.quantile(QUANTILE_LEVELS))
        else:
            mean = learner.predict(X_test)
        scale = max(float(np.std(y_train)), 1e-12)
        scores = regression_scores(y_test, np.asarray(mean), scale, dist)
        scores.setdefault("crps", float(np.mean(np.abs(y_test - mean)) / scale))  # a point prediction's CRPS
    peak = _peak_rss_mb()
    return {
        **scores,
        "train_rows": len(train),
        "fit_s": fit_s,
        "predict_s": time.perf_counter() - wall - fit_s,
        "fit_cpu_s": fit_cpu_s,
        "predict_cpu_s": time.process_time() - cpu - fit_cpu_s,
        "peak_rss_mb": peak,
        "rss_increase_mb": peak - before,
    }


def in_fresh_process(*args: Any) -> dict[str, float]:
    """:func:`measure` in a new process (forked from a server that has imported this module),
    so that its peak memory is this fit + predict's alone."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure, *args).result()


# ---------------------------------------------------------------- tables


def quick_tables(folder: Path) -> None:
    """Write two small synthetic tables (one per task, a categorical column, missing values) to ``folder``."""
    rng = np.random.default_rng(0)
    n = QUICK["rows"]
    X, y = make_classification(n_samples=n, n_features=6, n_informative=4, random_state=0)
    Xr, yr = make_regression(n_samples=n, n_features=6, n_informative=4, noise=10.0, random_state=0)
    for task, x, target in (("classification", X, np.where(y == 1, "yes", "no")), ("regression", Xr, yr)):
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
        frame["colour"] = np.where(x[:, 0] > 0, "red", rng.choice(["green", "blue"], size=n))
        frame.loc[rng.random(n) < 0.05, "x5"] = np.nan
        frame["target"] = target
        (folder / task).mkdir(parents=True, exist_ok=True)
        frame.to_csv(folder / task / f"synthetic-{task[:3]}.csv", index=False)


def usable(tables: list[Table], test_rows: int) -> tuple[list[Table], dict[str, int]]:
    """The tables with at least twice ``test_rows`` rows, and the rows of those left out."""
    kept = [t for t in tables if len(t.y) >= 2 * test_rows]
    return kept, {t.name: len(t.y) for t in tables if len(t.y) < 2 * test_rows}


# ---------------------------------------------------------------- the run


def run(
    out: Path,
    quick: bool = False,
    model: str | None = None,
    data: str | Path | None = None,
    caps: Sequence[int] = CAPS,
    repeats: int = REPEATS,
    learner_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark on the tables in ``data`` (required unless ``quick``: two synthetic
    tables, caps 200 and 400, 500 test rows, PFN and LightGBM unless ``learner_names``).

    model: a checkpoint to use in place of the shipped model of its task (its card says which).
    Results add up in ``out/large.json``: figures already there for a (table, cap, learner) are
    kept, except the PFN variants' when the weights or the package's inference code changed
    (:func:`benchmarks.tabular.pfn_fingerprint`); delete the file (or use another ``out``) to redo them.
    """
    out = Path(out)
    test_rows = QUICK["test_rows"] if quick else TEST_ROWS
    if quick:
        caps, repeats = QUICK["caps"], 1
        learner_names = learner_names or QUICK["learners"]
    elif data is None:
        raise ConfigError("pfn bench large needs --data DIR (classification/*.csv and/or regression/*.csv)")
    caps = tuple(sorted({int(c) for c in caps}))
    if not caps or caps[0] < 2 or repeats < 1:
        raise ConfigError(f"caps must be integers >= 2 and repeats >= 1, got caps={caps}, repeats={repeats}")
    chosen = [n for n in LEARNERS if learner_names is None or n in learner_names]
    if set(learner_names or ()) - set(LEARNERS):
        raise ConfigError(f"unknown learner(s) {sorted(set(learner_names) - set(LEARNERS))}; known: {list(LEARNERS)}")
    models = dict(DEFAULT_MODELS)
    if model is not None:
        models[read_card(resolve(model))["task"]] = model
    out.mkdir(parents=True, exist_ok=True)
    path = out / "large.json"
    settings = {"repeats": repeats, "test_rows": test_rows, "quick": quick}
    threads = torch.get_num_threads()

    def start(result: dict[str, Any]) -> None:
        result["caps"] = sorted(set(result["caps"]) | set(caps))
        result["runs"].append({**environment(), "learners": chosen, "cpu_count": multiprocessing.cpu_count()})

    _update(path, settings, start)
    with tempfile.TemporaryDirectory() as synthetic:
        if quick:
            data = Path(synthetic)
            quick_tables(data)
        found = {task: usable(load_tables(Path(data), task), test_rows) for task in tasks_in(Path(data))}
        if not any(tables for tables, _ in found.values()):
            rows = {name: n for _, left_out in found.values() for name, n in left_out.items()}
            raise DataLayoutError(
                f"{data}: no table has the {2 * test_rows} rows the benchmark needs ({test_rows} test rows "
                f"and as many for training); rows: {rows}"
            )
        for task, (tables, left_out) in found.items():
            missing = unavailable(task, models[task], chosen)
            for name, reason in missing.items():
                print(f"{task}: {name} not available, recorded as such ({reason})", flush=True)
            card = read_card(resolve(models[task]))
            begin = partial(
                _begin_task,
                task=task,
                model=models[task],
                weights=card["weights_sha256"],
                fingerprints={
                    name: pfn_fingerprint(card, fine_tuning="fine_tune" in parameters)
                    for name, parameters in VARIANTS.items()
                },
                variants_run=any(n in VARIANTS and n not in missing for n in chosen),
                missing=missing,
                checked=[n for n in chosen if n in VARIANTS],
                left_out=left_out,
            )
            _update(path, settings, begin)
            for table in tables:
                _run_table(path, settings, table, caps, [n for n in chosen if n not in missing], models[task], threads)
    result = _update(path, settings, lambda result: result.update(summary=summarise(result)))
    plot(result, out)
    (out / "large.md").write_text(report(result))
    print(summary_text(result))
    return result


def _run_table(
    path: Path, settings: dict[str, Any], table: Table, caps: Sequence[int], names: list[str], model: str, threads: int
) -> None:
    """Every cap and learner of one table not yet in ``path``, each stored as soon as it is measured."""
    splits = [split(table, r, settings["test_rows"]) for r in range(settings["repeats"])]
    train_max = len(splits[0][0])
    for cap in caps:
        rows = min(cap, train_max)
        for name in names:
            entry = _read(path)["tasks"][table.task]["tables"].get(table.name, {"caps": {}})["caps"]
            if name in entry.get(str(cap), {}):
                continue
            same = [c for c, per in entry.items() if name in per and per[name][0]["train_rows"] == rows]
            if same:  # a cap beyond the table's rows: the figures of the same train rows
                scores = entry[same[0]][name]
            else:
                scores = [in_fresh_process(table, name, model, threads, order[:rows], test) for order, test in splits]
            _update(path, settings, partial(_store, table=table, cap=cap, name=name, scores=scores))
        done = _read(path)["tasks"][table.task]["tables"].get(table.name, {"caps": {}})["caps"].get(str(cap), {})
        metric = MAIN_METRIC[table.task]
        line = ", ".join(f"{n} {np.mean([s[metric] for s in runs]):.3f}" for n, runs in done.items())
        print(f"{table.task} {table.name} {rows} train rows (cap {cap}): {line or 'no learner to run'}", flush=True)


def _begin_task(
    result: dict[str, Any],
    task: str,
    model: str,
    weights: str,
    fingerprints: dict[str, str],
    variants_run: bool,
    missing: dict[str, str],
    checked: list[str],
    left_out: dict[str, int],
) -> None:
    """Add the task's section; record which variants are not available (forget those that now
    are); when a PFN variant runs, drop the figures of every variant measured with other weights
    or inference code (``fingerprints``: variant -> its :func:`benchmarks.tabular.pfn_fingerprint`)."""
    section = result["tasks"].setdefault(task, {"model": model, "tables": {}, "not_available": {}, "left_out": {}})
    for name in checked:
        section["not_available"].pop(name, None)
    section["not_available"].update(missing)
    section["left_out"].update(left_out)
    if not variants_run:
        return
    stored = section.get("pfn_fingerprints", {})
    changed = [name for name in VARIANTS if stored.get(name) != fingerprints[name]]
    dropped = sum(
        per_cap.pop(name, None) is not None
        for entry in section["tables"].values()
        for per_cap in entry["caps"].values()
        for name in changed
    )
    if dropped:
        print(f"{task}: the PFN's weights or inference code changed; its {dropped} earlier figures are redone")
    section.update(model=model, weights_sha256=weights, pfn_fingerprints=fingerprints)


def _store(result: dict[str, Any], table: Table, cap: int, name: str, scores: list[dict[str, float]]) -> None:
    entry = result["tasks"][table.task]["tables"].setdefault(
        table.name, {"rows": len(table.y), "features": table.X.shape[1], "caps": {}}
    )
    entry["caps"].setdefault(str(cap), {})[name] = scores


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _update(path: Path, settings: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Apply ``change`` to the results in ``path`` under a file lock and write them back
    atomically, so that several runs (e.g. the baselines and a PFN variant) can add to one file."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            result = _read(path)
            found = {key: result.get(key) for key in settings}
            if found != settings:
                raise ConfigError(
                    f"{path} holds a run with {found}; results add up only across runs with the same "
                    f"{', '.join(settings)} ({settings} here): use another --out"
                )
        else:
            result = {"benchmark": "large", **settings, "caps": [], "tasks": {}, "runs": []}
        change(result)
        write_json(path, result)
    return result


# ---------------------------------------------------------------- summary


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per task: per cap, each learner's mean of every score and cost over the tables that have
    every learner's figures at that cap (each table's mean over repeats; ``peak_rss_mb_max``: the
    largest peak); the gain of the main score between GAIN_CAPS; the issue's targets per PFN variant."""
    out: dict[str, Any] = {}
    for task, section in result["tasks"].items():
        by_cap: dict[str, Any] = {}
        for cap in result["caps"]:
            per_table = {
                name: {
                    n: {k: float(np.mean([s[k] for s in runs])) for k in runs[0]}
                    for n, runs in entry["caps"][str(cap)].items()
                }
                for name, entry in section["tables"].items()
                if str(cap) in entry["caps"]
            }
            names = [n for n in LEARNERS if any(n in t for t in per_table.values())]
            complete = {t: v for t, v in per_table.items() if all(n in v for n in names)}
            if not complete:
                continue
            by_cap[str(cap)] = {
                "tables": sorted(complete),
                "tables_at_cap": sum(v[names[0]]["train_rows"] == cap for v in complete.values()),
                "mean_train_rows": float(np.mean([v[names[0]]["train_rows"] for v in complete.values()])),
                "learners": {
                    n: {
                        **{k: float(np.mean([v[n][k] for v in complete.values()])) for k in (*METRICS[task], *COSTS)},
                        "peak_rss_mb_max": float(max(v[n]["peak_rss_mb"] for v in complete.values())),
                    }
                    for n in names
                },
            }
        out[task] = {
            "caps": by_cap,
            "not_available": section["not_available"],
            "gains": gains(section, by_cap, task),
        }
        out[task]["targets"] = targets(out[task], task)
    return out


def gains(section: dict[str, Any], by_cap: dict[str, Any], task: str) -> dict[str, Any]:
    """Each learner's mean main score at the higher cap of GAIN_CAPS (or the largest cap below it)
    minus that at the lower (or the smallest cap), on the tables both caps' summaries share."""
    caps = sorted(int(c) for c in by_cap)
    if len(caps) < 2:
        return {}
    low = GAIN_CAPS[0] if GAIN_CAPS[0] in caps else caps[0]
    high = max([c for c in caps if c <= GAIN_CAPS[1] and c > low], default=caps[-1])
    shared = sorted(set(by_cap[str(low)]["tables"]) & set(by_cap[str(high)]["tables"]))
    names = set(by_cap[str(low)]["learners"]) & set(by_cap[str(high)]["learners"])
    metric = MAIN_METRIC[task]

    def mean(cap: int, name: str) -> float:
        per_table = section["tables"]
        return float(np.mean([np.mean([s[metric] for s in per_table[t]["caps"][str(cap)][name]]) for t in shared]))

    return {
        "from": low,
        "to": high,
        "tables": shared,
        "learners": {n: mean(high, n) - mean(low, n) for n in LEARNERS if n in names},
    }


def targets(summary: dict[str, Any], task: str) -> dict[str, dict[str, bool]]:
    """Per PFN variant, where the reference learners ran: main score at the gain's upper cap at
    least LightGBM's; gain at least LightGBM's; fit + predict there no slower than CatBoost's;
    the largest peak memory at the largest cap under MEMORY_TARGET_MB."""
    by_cap, gain = summary["caps"], summary["gains"]
    if not by_cap:
        return {}
    metric = MAIN_METRIC[task]
    at = by_cap.get(str(gain.get("to")), {}).get("learners", {})
    largest = by_cap[max(by_cap, key=int)]["learners"]
    out = {}
    for name in VARIANTS:
        checks = {}
        if name in at and "LightGBM" in at:
            checks["score_at_least_lightgbm"] = at[name][metric] >= at["LightGBM"][metric]
        if name in gain.get("learners", {}) and "LightGBM" in gain["learners"]:
            checks["gain_at_least_lightgbm"] = gain["learners"][name] >= gain["learners"]["LightGBM"]
        if name in at and "CatBoost" in at:
            seconds = {n: at[n]["fit_s"] + at[n]["predict_s"] for n in (name, "CatBoost")}
            checks["time_at_most_catboost"] = seconds[name] <= seconds["CatBoost"]
        if name in largest:
            checks["memory_under_target"] = largest[name]["peak_rss_mb_max"] < MEMORY_TARGET_MB
        if checks:
            out[name] = checks
    return out


# ---------------------------------------------------------------- report


def summary_text(result: dict[str, Any]) -> str:
    lines = []
    for task, summary in result["summary"].items():
        metric = MAIN_METRIC[task]
        for cap, s in summary["caps"].items():
            lines.append(f"{task}, cap {cap}, {len(s['tables'])} tables:")
            for n, v in s["learners"].items():
                lines.append(
                    f"  {n:<14} {metric} {v[metric]:.4f}  fit {v['fit_s']:.1f} s  predict {v['predict_s']:.1f} s"
                    f"  peak {v['peak_rss_mb_max']:.0f} MB"
                )
        for n, reason in summary["not_available"].items():
            lines.append(f"  {n:<14} not available: {reason}")
        if summary["gains"]:
            g = summary["gains"]
            lines.append(
                f"  gain {g['from']} -> {g['to']}: " + ", ".join(f"{n} {v:+.4f}" for n, v in g["learners"].items())
            )
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    """The Markdown report: per task and cap, every learner's mean scores and costs; the gains,
    the targets and the variants not available."""
    commands = sorted({run["command"] for run in result["runs"]})
    lines = [
        "Commands: " + "; ".join(f"`{c}`" for c in commands) + f". {result['repeats']} repeat(s) per table, "
        f"{result['test_rows']} test rows. Means over the tables that have every learner's figures at the cap; "
        "seconds per table and repeat (wall, and process CPU of all threads); peak: the largest peak resident "
        "memory of a fit + predict process.",
        "",
    ]
    for task, summary in result["summary"].items():
        metrics = METRICS[task]
        lines += [f"## {task}", ""]
        for cap, s in summary["caps"].items():
            lines += [
                f"Cap {cap}: {len(s['tables'])} tables, {s['mean_train_rows']:,.0f} train rows on average "
                f"({s['tables_at_cap']} tables have {int(cap):,}):",
                "",
            ]
            lines.append("| learner | " + " | ".join(metrics) + " | fit s | predict s | CPU s | peak MB |")
            lines.append("|---|" + "---:|" * (len(metrics) + 4))
            for n, v in s["learners"].items():
                cpu = v["fit_cpu_s"] + v["predict_cpu_s"]
                lines.append(
                    f"| {n} | "
                    + " | ".join(f"{v[m]:.4f}" for m in metrics)
                    + f" | {v['fit_s']:.2f} | {v['predict_s']:.2f} | {cpu:.2f} | {v['peak_rss_mb_max']:.0f} |"
                )
            lines.append("")
        if summary["gains"]:
            g = summary["gains"]
            lines.append(
                f"Gain in mean {MAIN_METRIC[task]} from cap {g['from']} to {g['to']} ({len(g['tables'])} tables): "
                + ", ".join(f"{n} {v:+.4f}" for n, v in g["learners"].items())
                + "."
            )
            lines.append("")
        for n, checks in summary["targets"].items():
            lines.append(
                f"Targets, {n}: " + ", ".join(f"{k} {'yes' if ok else 'no'}" for k, ok in checks.items()) + "."
            )
        for n, reason in summary["not_available"].items():
            lines.append(f"{n}: not available ({reason}).")
        lines += ["", f"![{task}]({task}.png)", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], out: Path) -> None:
    """Per task: the main score and the fit + predict seconds against the cap, one line per learner."""
    plt = pyplot()
    for task, summary in result["summary"].items():
        by_cap = summary["caps"]
        if not by_cap:
            continue
        metric = MAIN_METRIC[task]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, n in enumerate(LEARNERS):
            ran = [int(c) for c in by_cap if n in by_cap[c]["learners"]]
            if not ran:
                continue
            style = {"lw": 2.5, "zorder": 3} if n in VARIANTS else {"lw": 1}
            values = [by_cap[str(c)]["learners"][n] for c in ran]
            a.plot(ran, [v[metric] for v in values], marker="o", color=f"C{i}", label=n, **style)
            b.plot(ran, [v["fit_s"] + v["predict_s"] for v in values], marker="o", color=f"C{i}", label=n, **style)
        for axis, label in ((a, f"mean {metric}"), (b, "fit + predict s")):
            axis.set_xscale("log")
            axis.set_xlabel("train rows (cap)")
            axis.set_ylabel(label)
        b.set_yscale("log")
        a.legend(fontsize=7)
        fig.suptitle(f"{task}: {len(result['tasks'][task]['tables'])} tables, {result['repeats']} repeat(s)")
        fig.tight_layout()
        fig.savefig(out / f"{task}.png", dpi=110)
        plt.close(fig)
