"""Checkpoint files: safetensors for tensors, a JSON card for everything else.

A shipped model is ``NAME.safetensors`` + ``NAME.json`` in ``pfn/weights/``. The card records
the sha256 of the weights file, so a truncated or altered file is refused. Nothing is ever
unpickled. Every file is written atomically (a temporary file in the same folder, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

CARD_FORMAT = "pfn-card/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, altered or not a pfn checkpoint."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints and cards are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(path: Path, state_dict: dict[str, torch.Tensor], card: dict[str, Any], dtype: torch.dtype) -> None:
    """Write weights (cast to ``dtype``) to ``path`` (.safetensors) and the card beside it (.json)."""
    path = Path(path).with_suffix(".safetensors")
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    dtype_name = str(dtype).removeprefix("torch.")
    card = {**card, "format": CARD_FORMAT, "weights_dtype": dtype_name, "weights_sha256": sha256(path)}
    write_json(path.with_suffix(".json"), card)


def shipped_names() -> list[str]:
    """Names of the checkpoints that ship inside the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def resolve(name_or_path: str | Path) -> Path:
    """The weights path for a shipped name or a path to a .safetensors/.json file or its stem."""
    candidate = Path(name_or_path)
    shipped = isinstance(name_or_path, str) and candidate.name == name_or_path
    if shipped and (WEIGHTS_DIR / f"{name_or_path}.json").is_file():
        return WEIGHTS_DIR / f"{name_or_path}.safetensors"
    for path in (candidate, candidate.with_suffix(".json"), candidate / "model.json"):
        if path.is_file() and path.suffix in (".json", ".safetensors"):
            return path.with_suffix(".safetensors")
    raise CheckpointError(
        f"no checkpoint named {str(name_or_path)!r}: shipped names are {shipped_names()}; "
        "or give the path of a .safetensors file with its .json card beside it"
    )


def read_card(weights: Path) -> dict[str, Any]:
    card_path = weights.with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"the card {card_path} is missing")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"the card {card_path} is not valid JSON: {error}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"{card_path} is not a pfn card (expected format {CARD_FORMAT!r})")
    return card


def load_model_files(name_or_path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The card and the tensors of a checkpoint, checked against the card's sha256."""
    weights = resolve(name_or_path)
    card = read_card(weights)
    if not weights.is_file():
        raise CheckpointError(f"the weights file {weights} is missing")
    if sha256(weights) != card.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match the sha256 in its card: the file is truncated or was altered")
    try:
        tensors = load_file(str(weights))
    except SafetensorError as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {error}") from None
    return card, tensors


def save_state(path: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """A training state in one file: tensors plus JSON metadata, written atomically."""
    metadata = {"pfn_train_state": json.dumps(state)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read the training state {path}: {error}") from None
    if "pfn_train_state" not in metadata:
        raise CheckpointError(f"{path} is not a pfn training state")
    return tensors, json.loads(metadata["pfn_train_state"])
