"""The classifier's softmax temperature, chosen on its own prior (``pfn bench temperature``).

Draws fresh datasets from the prior on the classifier's card (a seed stream no training step
uses), fits ``PFNClassifier`` with its default settings and scores the held-out rows at each
temperature: log loss and expected calibration error. The choice is made on prior data, never
on the benchmark tables the model is judged on. ``--update-card`` records the figures and the
best temperature in the card: the figures in ``quality.temperature``, the setting in
``inference.softmax_temperature``, where ``PFNClassifier`` takes its default temperature from.

Writes ``temperature.json`` and ``temperature.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import log_loss

import priors
from benchmarks.common import environment, pyplot, record_inference, record_quality
from benchmarks.tabular import DEFAULT_MODELS, expected_calibration_error
from pfn.checkpoint import write_json
from pfn.config import ConfigError
from pfn.estimators import PFNClassifier
from pfn.inference import PFN
from pfn.train import seed_for

TEMPERATURES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)
ROWS = (150, 450, 1500)  # per dataset; two thirds are train rows
SEED_STREAM = 2**31 - 2  # a seed stream that no training step (nor the border draw) uses


def prior_datasets(card: dict[str, Any], count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` (x_train, y_train, x_test, y_test) from the card's prior, sizes cycling through
    ROWS; datasets whose test rows hold a class that the train rows lack are skipped."""
    prior = priors.from_dict(card["prior"])
    n_features = card["model"]["n_features"]
    seed = card["train"]["seed"]
    out, index = [], 0
    while len(out) < count:
        rows = ROWS[len(out) % len(ROWS)]
        batch = prior.sample(1, rows, n_features, torch.Generator().manual_seed(seed_for(seed, SEED_STREAM, index)))
        index += 1
        x = batch.x[0, :, : int(batch.used_features[0])].numpy()  # [N, f]
        y = batch.y[0].numpy()  # [N]
        cut = 2 * rows // 3
        if len(np.unique(y[:cut])) >= 2 and set(np.unique(y[cut:])) <= set(np.unique(y[:cut])):
            out.append((x[:cut], y[:cut], x[cut:], y[cut:]))
    return out


def run(out: Path, quick: bool = False, model: str | None = None, update_card: bool = False) -> dict[str, Any]:
    """Score every temperature on fresh prior datasets (``quick``: 3 datasets, else 90)."""
    model = model or DEFAULT_MODELS["classification"]
    loaded = PFN.from_files(model)
    if loaded.task != "classification":
        raise ConfigError(f"benchmark 'temperature' needs a classification model, but {model!r} is {loaded.task}")
    datasets = prior_datasets(loaded.card, 3 if quick else 90)
    scores: dict[float, dict[str, list[float]]] = {t: {"log_loss": [], "ece": []} for t in TEMPERATURES}
    for x_train, y_train, x_test, y_test in datasets:
        estimator = PFNClassifier(model=model, random_state=0, show_progress=False).fit(x_train, y_train)
        for temperature in TEMPERATURES:
            estimator.softmax_temperature = temperature
            proba = estimator.predict_proba(x_test)
            scores[temperature]["log_loss"].append(log_loss(y_test, proba, labels=estimator.classes_))
            scores[temperature]["ece"].append(expected_calibration_error(y_test, proba))
    table = {
        str(t): {"log_loss": float(np.mean(s["log_loss"])), "ece": float(np.mean(s["ece"]))} for t, s in scores.items()
    }
    best = min(TEMPERATURES, key=lambda t: table[str(t)]["log_loss"])
    result = {
        "benchmark": "temperature",
        "quick": quick,
        "model": str(model),
        "weights_sha256": loaded.card["weights_sha256"],
        "datasets": len(datasets),
        "rows": list(ROWS),
        "temperatures": table,
        "best": best,
        "environment": environment(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "temperature.json", result)
    _plot(table, out / "temperature.png")
    if update_card and not quick:
        figures = {k: result[k] for k in ("best", "datasets", "rows", "temperatures")}
        record_quality(model, "temperature", {**figures, "command": result["environment"]["command"]})
        record_inference(model, softmax_temperature=result["best"])
    print(summary(result))
    return result


def _plot(table: dict[str, dict[str, float]], path: Path) -> None:
    plt = pyplot()

    temps = [float(t) for t in table]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, metric in zip(axes, ("log_loss", "ece"), strict=True):
        ax.plot(temps, [table[t][metric] for t in table], marker="o")
        ax.set_xlabel("softmax temperature")
        ax.set_ylabel(metric.replace("_", " "))
    fig.suptitle("PFNClassifier on fresh datasets from its own prior")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(result: dict[str, Any]) -> str:
    lines = [f"{'temperature':>11} {'log loss':>9} {'ECE':>7}"]
    for t, row in result["temperatures"].items():
        mark = "  <- best" if float(t) == result["best"] else ""
        lines.append(f"{float(t):>11.2f} {row['log_loss']:>9.4f} {row['ece']:>7.4f}{mark}")
    lines.append(f"{result['datasets']} prior datasets of {result['rows']} rows (2/3 train), model {result['model']}")
    return "\n".join(lines)
