"""A regression model's density smoothing, chosen on its own prior (``pfn bench smoothing``).

A bar distribution with many narrow buckets gets a rough density from the network (each
bucket's logit carries its own error). Smoothing the bucket probabilities with a small Gaussian
kernel (pfn.heads.smoothing_matrix) averages that roughness away at the price of a little
extra spread. This benchmark draws fresh datasets from the prior on the model's card (a seed
stream that no training step, border draw or other benchmark uses), at train-row counts
spread geometrically over the card's training range, and scores the held-out rows' mean NLL
for kernel widths in multiples of the median inner bucket width, and for none. The choice is
made on prior data, never on what the model is judged on. ``--update-card`` records the
figures in ``quality.smoothing`` and the best width in ``inference.density_smoothing``, which
``PFN.predict`` (and so the estimators) then apply.

Writes ``smoothing.json`` and ``smoothing.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import priors
from benchmarks.common import environment, pyplot, record_inference, record_quality
from pfn.checkpoint import write_json
from pfn.config import ConfigError
from pfn.heads import BarDistribution, smoothed_logits, smoothing_matrix
from pfn.inference import PFN
from pfn.train import seed_for

MULTIPLES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)  # kernel widths / median inner bucket width
SEED_STREAM = 2**31 - 3  # a seed stream that no training step, border draw or other benchmark uses
N_TEST = 50
GRID_POINTS = 8


def train_rows(card: dict[str, Any]) -> list[int]:
    """Train-row counts spread geometrically over the card's training range (at most 1,024)."""
    train = card.get("train", {})
    low = max(int(train.get("min_train", 1)), 1)
    high = max(min(int(train.get("max_train", 200)), 1024), low)
    return sorted({int(round(n)) for n in np.geomspace(low, high, GRID_POINTS)})


def run(out: Path, quick: bool = False, model: str | None = None, update_card: bool = False) -> dict[str, Any]:
    """Score every width on fresh prior datasets (``quick``: 4 a row count, else 64)."""
    name = model or "gp"
    loaded = PFN.from_files(name).unsmoothed()
    if loaded.task != "regression":
        raise ConfigError(f"benchmark 'smoothing' needs a regression model, but {name!r} is {loaded.task}")
    card = loaded.card
    prior = priors.from_dict(card["prior"])
    borders = loaded.borders.double()
    median_width = float(borders[1:-1].diff().median())
    widths = [round(m * median_width, 6) for m in MULTIPLES]
    matrices = {w: smoothing_matrix(borders, w) for w in widths if w > 0}
    per_point = 4 if quick else 64
    grid = train_rows(card)
    nll: dict[float, list[float]] = {w: [] for w in widths}  # per train-row count
    for index, n in enumerate(grid):
        generator = torch.Generator().manual_seed(seed_for(card["train"].get("seed", 0), SEED_STREAM, index))
        batch = prior.sample(per_point, n + N_TEST, loaded.config.n_features, generator)
        x, y, used = batch.x, batch.y, batch.used_features
        logits = loaded.predict(x[:, :n], y[:, :n], x[:, n:], used_features=used).logits  # [B, N_TEST, K]
        for w in widths:
            smoothed = logits if w == 0 else smoothed_logits(logits, matrices[w])
            dist = BarDistribution(loaded.borders, smoothed, loaded.tail_scales)
            nll[w].append(float(dist.nll(y[:, n:]).mean()))
    table = {str(w): {"mean_nll": float(np.mean(v)), "nll_by_train_rows": v} for w, v in nll.items()}
    best = min(widths, key=lambda w: table[str(w)]["mean_nll"])
    result = {
        "benchmark": "smoothing",
        "quick": quick,
        "model": name,
        "weights_sha256": card["weights_sha256"],
        "median_bucket_width": median_width,
        "train_rows": grid,
        "datasets_per_train_rows": per_point,
        "test_rows": N_TEST,
        "widths": table,
        "best": best,
        "gain_nats": table["0.0"]["mean_nll"] - table[str(best)]["mean_nll"],
        "environment": environment(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "smoothing.json", result)
    _plot(result, out / "smoothing.png")
    if update_card and not quick:
        figures = {k: result[k] for k in ("best", "gain_nats", "median_bucket_width", "train_rows")}
        figures["mean_nll"] = {w: round(row["mean_nll"], 5) for w, row in table.items()}
        record_quality(name, "smoothing", {**figures, "command": result["environment"]["command"]})
        record_inference(name, density_smoothing=best)
    print(summary(result))
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    widths = [float(w) for w in result["widths"]]
    base = result["widths"]["0.0"]["mean_nll"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(widths, [result["widths"][str(w)]["mean_nll"] - base for w in widths], marker="o")
    ax.axhline(0, color="k", ls=":")
    ax.set_xlabel("smoothing kernel width (target units)")
    ax.set_ylabel("mean NLL minus unsmoothed")
    ax.set_title(f"{result['model']} on fresh datasets from its own prior", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(result: dict[str, Any]) -> str:
    lines = [f"{'width':>9} {'x bucket':>8} {'mean NLL':>9}"]
    for w, row in result["widths"].items():
        mark = "  <- best" if float(w) == result["best"] else ""
        multiple = float(w) / result["median_bucket_width"]
        lines.append(f"{float(w):>9.5f} {multiple:>8.1f} {row['mean_nll']:>9.5f}{mark}")
    lines.append(
        f"{result['datasets_per_train_rows']} prior datasets at each of {result['train_rows']} train rows, "
        f"{result['test_rows']} test rows each; gain {result['gain_nats']:.5f} nats; model {result['model']}"
    )
    return "\n".join(lines)
