"""Training curves of checkpoints from their cards (``pfn bench training-curves``).

Every card records its loss against datasets seen (``training.curve``); this plots them, one
panel per task (classification cross-entropy, regression bar-distribution NLL), and writes
``training_curves.json`` (steps, datasets seen, wall time, final loss per model); the plot draws
a running mean over the points, which vary with the rows drawn per step. A model
trained in stages (``train.init_from``) is drawn stage after stage on one axis of datasets
seen since the first stage; an earlier stage whose card kept no curve leaves a gap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import environment, pyplot
from pfn.checkpoint import read_card, resolve, shipped_names, write_json

DEFAULT_MODELS = ("tabular-clf", "tabular-reg")
SMOOTH = 10  # curve points (each a mean over log_every steps) in the running mean drawn over them


def run(out: Path, quick: bool = False, model: str | None = None) -> dict[str, Any]:
    """Plot the curves of ``model`` (a name or path) or of the shipped tabular models."""
    names = [model] if model is not None else [n for n in DEFAULT_MODELS if n in shipped_names()]
    cards = {name: read_card(resolve(name)) for name in names}
    result = {
        "benchmark": "training-curves",
        "models": {
            name: {
                "task": card["task"],
                "steps": card["training"]["steps"],
                "datasets_seen": card["training"]["datasets_seen"],
                "wall_time_s": card["training"]["wall_time_s"],
                "final_loss": card["training"]["curve"][-1][2] if card["training"]["curve"] else None,
                "curve": card["training"]["curve"],
                "stages": stage_curves(card["training"]),
                "stage_labels": stage_labels(card["training"]),
            }
            for name, card in cards.items()
        },
        "environment": environment(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "training_curves.json", result)
    _plot(result["models"], out / "training_curves.png")
    for name, m in result["models"].items():
        print(
            f"{name}: {m['steps']} steps, {m['datasets_seen']} datasets, {m['wall_time_s'] / 3600:.2f} h, "
            f"final loss {m['final_loss']}"
        )
    return result


def _chain(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The training records of every stage, oldest first."""
    chain, stage = [training], training.get("init_from")
    while stage:
        chain.insert(0, stage)
        stage = stage.get("init_from")
    return chain


def stage_labels(training: dict[str, Any]) -> list[str]:
    """A name for every stage, oldest first: its config file's stem, from the command that
    trained it, or "stage N" where the command names none."""
    labels = []
    for index, stage in enumerate(_chain(training)):
        configs = [Path(word).stem for word in stage.get("command", "").split() if word.endswith(".toml")]
        labels.append(configs[0] if configs else f"stage {index + 1}")
    return labels


def stage_curves(training: dict[str, Any]) -> list[list[list[float]]]:
    """The curve of every stage, oldest first, with datasets seen counted from the first stage."""
    curves, offset = [], 0
    for stage in _chain(training):
        curves.append([[step, seen + offset, loss] for step, seen, loss in stage.get("curve", [])])
        offset += stage["datasets_seen"]
    return curves


def _running_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the up to ``window - 1`` values before it."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def _plot(models: dict[str, dict[str, Any]], path: Path) -> None:
    plt = pyplot()

    tasks = sorted({m["task"] for m in models.values()})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for name, m in models.items():
            if m["task"] != task:
                continue
            for index, curve in enumerate(m["stages"]):
                if curve:
                    label = name if len(m["stages"]) == 1 else m["stage_labels"][index]
                    seen, loss = [point[1] for point in curve], [point[2] for point in curve]
                    (line,) = ax.plot(seen, loss, alpha=0.3, linewidth=0.8)
                    ax.plot(seen, _running_mean(loss, SMOOTH), color=line.get_color(), label=label)
        ax.set_xscale("log")
        ax.set_xlabel("datasets seen")
        ax.set_ylabel("cross-entropy" if task == "classification" else "NLL (bar distribution)")
        ax.set_title(task)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
