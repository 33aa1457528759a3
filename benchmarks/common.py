"""What every benchmark shares: loading a checkpoint that fits it, writing results."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import pfn
from pfn.checkpoint import CheckpointError, atomic_write, resolve, write_json

COVERAGE_LEVELS = (0.5, 0.8, 0.9)


class WrongPriorError(CheckpointError):
    """A benchmark was given a checkpoint trained on another prior than the one it evaluates."""


def load_for(model: str, prior_type: str, benchmark: str) -> pfn.PFN:
    """Load ``model`` and refuse it unless its card's prior is of type ``prior_type``."""
    loaded = pfn.load(model)
    found = loaded.card.get("prior", {}).get("type")
    if found != prior_type:
        raise WrongPriorError(
            f"benchmark {benchmark!r} evaluates a {prior_type!r} prior, but {model!r} was trained on a {found!r} prior"
        )
    return loaded


def environment() -> dict[str, Any]:
    """Where and how a benchmark ran."""
    return {
        "command": " ".join(["pfn", *sys.argv[1:]]) if Path(sys.argv[0]).name == "pfn" else " ".join(sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def record_quality(model: str, key: str, figures: dict[str, Any]) -> Path:
    """Store ``figures`` under ``quality[key]`` in the checkpoint's card (atomically)."""
    card_path = resolve(model).with_suffix(".json")
    card = pfn.checkpoint.read_card(card_path.with_suffix(".safetensors"))
    card.setdefault("quality", {})[key] = figures
    write_json(card_path, card)
    return card_path


def record_inference(model: str, **settings: Any) -> Path:
    """Set ``settings`` in the ``inference`` section of the checkpoint's card (checked, atomically)."""
    card_path = resolve(model).with_suffix(".json")
    card = pfn.checkpoint.read_card(card_path.with_suffix(".safetensors"))
    card["inference"] = {**card.get("inference", {}), **settings}
    pfn.checkpoint.InferenceConfig.from_card(card, f"the settings {settings}")
    write_json(card_path, card)
    return card_path


def splice_section(path: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``path``
    (atomically); ValueError if the markers are missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    document = path.read_text() if path.is_file() else ""
    if begin not in document or end not in document:
        raise ValueError(f"{path} needs the lines {begin!r} and {end!r} around the generated {name} section")
    head, rest = document.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write(path, lambda tmp: tmp.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}"))


def calibration(pit: Tensor) -> dict[str, Any]:
    """PIT histogram (10 bins, uniform if calibrated) and the coverage of central intervals."""
    histogram = torch.histc(pit.float(), bins=10, min=0.0, max=1.0) / pit.numel()
    coverage = {str(c): float(((pit >= (1 - c) / 2) & (pit <= (1 + c) / 2)).float().mean()) for c in COVERAGE_LEVELS}
    return {"pit_histogram": histogram.tolist(), "coverage": coverage}


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (imported when a benchmark plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_pit(ax: Any, title: str, result: dict[str, Any]) -> None:
    """A PIT histogram of :func:`calibration`'s result on a matplotlib axis (flat line at 0.1)."""
    ax.bar([i / 10 + 0.05 for i in range(10)], result["pit_histogram"], width=0.1)
    ax.axhline(0.1, color="k", ls=":")
    ax.set_title(f"{title}: 90% cover {result['coverage']['0.9']:.2f}", fontsize=8)
    ax.set_xlabel("PIT")
