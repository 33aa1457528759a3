"""What every benchmark shares: loading a checkpoint that fits it, writing results."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import torch

import pfn
from pfn.checkpoint import CheckpointError, atomic_write, resolve, write_json


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
