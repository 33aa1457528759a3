"""Checkpoint files: safetensors for tensors, a JSON card for everything else.

A shipped model is ``NAME.safetensors`` + ``NAME.json`` in ``pfn/weights/``. The card records
the sha256 of the weights file, so a truncated or altered file is refused. Nothing is ever
unpickled. Every file is written atomically (a temporary file in the same folder, then rename).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pfn.model import ModelConfig, PFNTransformer

CARD_FORMAT = "pfn-card/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_CARD_BYTES = 64 << 20  # shipped cards are 17-121 kB
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, torch.save's zip archive
# weights_dtype on the card -> the dtype name in the safetensors header
SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
REQUIRED_MODEL_FIELDS = ("task", "n_features", "n_outputs", "d_model", "n_layers", "n_heads", "d_ff")
# Sanity bounds on a card's architecture, checked before anything is built (the shipped models
# are at most 100 features, 500 buckets, d_model 128, 8 layers, d_ff 256 and 2.8 MB).
SIZE_LIMITS = {
    "n_features": 10_000,
    "n_outputs": 100_000,
    "d_model": 16_384,
    "n_layers": 256,
    "n_heads": 1_024,
    "d_ff": 65_536,
}
MAX_SIZE = 10_000  # any other integer field of the architecture
MAX_PARAMETERS = 1_000_000_000  # 4 GB in float32 (the shipped models have at most 0.7 million)
TEMPERATURE_RANGE = (0.01, 100.0)  # a card's inference.softmax_temperature (the shipped one is 0.8)
MAX_SMOOTHING = 1.0  # a card's inference.density_smoothing, in the units of its borders


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, altered or not a pfn checkpoint."""


@dataclass(frozen=True)
class InferenceConfig:
    """Settings a model predicts with by default, kept in its card's ``inference`` section.

    softmax_temperature: divides a classifier's logits (below 1 sharpens); chosen on the
    model's own prior by ``pfn bench temperature --update-card``.
    density_smoothing: a regression model's bucket probabilities are smoothed with a Gaussian
    kernel of this standard deviation, in the units of its borders (0: not; see
    pfn.heads.smoothing_matrix); chosen on the model's own prior by ``pfn bench smoothing
    --update-card``."""

    softmax_temperature: float = 1.0
    density_smoothing: float = 0.0

    @classmethod
    def from_card(cls, card: dict[str, Any], where: str = "the card") -> InferenceConfig:
        """The card's settings (a card from before the section keeps its temperature in
        ``quality.temperature.best``); a CheckpointError starting with ``where`` names a bad field."""
        section, field = card.get("inference"), "inference.softmax_temperature"
        if section is None:
            best = card.get("quality", {}).get("temperature", {}).get("best")
            section, field = ({} if best is None else {"softmax_temperature": best}), "quality.temperature.best"
        if not isinstance(section, dict):
            raise CheckpointError(f"{where}: inference must be an object (a JSON {{...}}), found {_show(section)}")
        unknown = sorted(set(section) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise CheckpointError(f"{where}: inference has unknown field(s) {unknown}")
        temperature = _number(section.get("softmax_temperature", 1.0))
        if temperature is None or not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1]:
            raise CheckpointError(
                f"{where}: {field} must be a number in [{TEMPERATURE_RANGE[0]}, {TEMPERATURE_RANGE[1]}] "
                f"(it divides the logits), found {_show(section.get('softmax_temperature'))}"
            )
        smoothing = _number(section.get("density_smoothing", 0.0))
        if smoothing is None or not 0 <= smoothing <= MAX_SMOOTHING:
            raise CheckpointError(
                f"{where}: inference.density_smoothing must be a number in [0, {MAX_SMOOTHING}] (the smoothing "
                f"kernel's standard deviation), found {_show(section.get('density_smoothing'))}"
            )
        task = card.get("model", {}).get("task") if isinstance(card.get("model"), dict) else None
        if smoothing > 0 and task != "regression":
            raise CheckpointError(
                f"{where}: inference.density_smoothing smooths a regression model's buckets; this card's "
                f"model.task is {_show(task)}: remove the field"
            )
        return cls(softmax_temperature=temperature, density_smoothing=smoothing)


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


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The weights path for a shipped name (a str) or a path (str or os.PathLike) to a
    .safetensors file, its .json card, their common stem, or a run folder holding model.json."""
    if isinstance(name_or_path, bytes) or not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            "a checkpoint is a shipped name or a path (str or pathlib.Path), "
            f"got {type(name_or_path).__name__}: {name_or_path!r:.80}; shipped names are {shipped_names()}"
        )
    if isinstance(name_or_path, str):
        if not name_or_path.strip():
            raise CheckpointError(f"the checkpoint name is empty: give one of {shipped_names()} or a path")
        if name_or_path in shipped_names():
            return WEIGHTS_DIR / f"{name_or_path}.safetensors"
    path = Path(name_or_path)
    if path.is_dir():
        if (path / "model.json").is_file():
            return path / "model.safetensors"
        raise CheckpointError(
            f"the folder {path} holds no checkpoint: expected model.json and model.safetensors (as `pfn train` writes)"
        )
    for candidate in (path, path.with_suffix(".json")):
        if candidate.is_file() and candidate.suffix in (".json", ".safetensors"):
            return candidate.with_suffix(".safetensors")
    if path.is_file():
        raise CheckpointError(
            f"{path} is not a checkpoint file: give a .safetensors file with its .json card beside it "
            "(or the card); pfn never unpickles, so .pt/.pkl/.bin files are not loaded"
        )
    raise CheckpointError(_not_found_message(name_or_path, path))


def _not_found_message(name_or_path: str | os.PathLike[str], path: Path) -> str:
    names = shipped_names()
    if not isinstance(name_or_path, str):
        if path.name in names:
            hint = f"{path.name!r} is a shipped name: pass the string {path.name!r}, not a Path, to load it"
        else:
            hint = "give the path of a .safetensors file with its .json card beside it, or of a run folder"
        return f"no checkpoint named {str(path)!r}: the path {path} does not exist; {hint} (shipped names are {names})"
    close = difflib.get_close_matches(name_or_path, names, n=1)
    return (
        f"no checkpoint named {name_or_path!r}: shipped names are {names}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; no file or folder {path} exists either: give the path of a .safetensors file with its .json card "
        "beside it, or of a run folder"
    )


def read_card(weights: Path) -> dict[str, Any]:
    """The JSON card beside ``weights``, as a dict with the pfn card format (not yet checked
    further; :func:`check_card` does that). Binary files, pickles included, are refused unread."""
    card_path = weights.with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"the card {card_path} is missing")
    size = card_path.stat().st_size
    if size > MAX_CARD_BYTES:
        raise CheckpointError(f"the card {card_path} has {size:,} bytes, more than a card can ({MAX_CARD_BYTES:,})")
    raw = card_path.read_bytes()
    if raw.startswith(PICKLE_MAGIC):
        raise CheckpointError(
            f"the card {card_path} is not a JSON card: it looks like a pickle or torch.save file, "
            "which pfn never loads; a card is the JSON text `pfn train` writes beside the weights"
        )
    try:
        card = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(
            f"the card {card_path} is not a JSON card: it holds binary data, not UTF-8 text"
        ) from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"the card {card_path} is not valid JSON: {error}") from None
    except RecursionError:
        raise CheckpointError(f"the card {card_path} is not a JSON card: it is nested too deeply") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"{card_path} is not a pfn card (expected format {CARD_FORMAT!r})")
    return card


def check_card(card: dict[str, Any], card_path: Path) -> ModelConfig:
    """Check every field that loading and prediction use (types, finiteness, order, sizes) and
    return the architecture the card names; raises CheckpointError naming the field."""

    def fail(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"the card {card_path}: {field} {problem}")

    for field in ("name", "weights_dtype", "weights_sha256"):
        if field in card and not isinstance(card[field], str):
            raise fail(field, f"must be a string, found {_show(card[field])}")
    for field in ("prior", "train", "training"):
        if field in card and not isinstance(card[field], dict):
            raise fail(field, f"must be an object (a JSON {{...}}), found {_show(card[field])}")
    if not re.fullmatch(r"[0-9a-f]{64}", card.get("weights_sha256", "")):
        raise fail("weights_sha256", "must be the 64 hex digits of the weights file's sha256")
    if card.get("weights_dtype") not in SAFETENSORS_DTYPES:
        raise fail(
            "weights_dtype", f"must be one of {sorted(SAFETENSORS_DTYPES)}, found {_show(card.get('weights_dtype'))}"
        )
    if "prior" in card and not isinstance(card["prior"].get("type", ""), str):
        raise fail("prior.type", f"must be a string, found {_show(card['prior']['type'])}")
    config = _model_config(card.get("model"), fail)
    if "task" in card and card["task"] != config.task:
        raise fail("task", f"is {_show(card['task'])} but model.task is {config.task!r}")
    if config.task == "regression":
        _check_borders(card.get("borders"), config.n_outputs + 1, fail)
        if card.get("tail_scales") is not None:
            _check_tail_scales(card["tail_scales"], fail)
    else:
        for field in ("borders", "tail_scales"):
            if card.get(field) is not None:
                raise fail(field, "belongs to regression cards; this card's model.task is 'classification'")
    if "quality" in card and not isinstance(card["quality"], dict):
        raise fail("quality", f"must be an object (a JSON {{...}}), found {_show(card['quality'])}")
    quality_temperature = card.get("quality", {}).get("temperature")
    if quality_temperature is not None and not isinstance(quality_temperature, dict):
        raise fail("quality.temperature", f"must be an object, found {_show(quality_temperature)}")
    InferenceConfig.from_card(card, f"the card {card_path}")
    return config


def _show(value: Any) -> str:
    """A short description of a card value for error messages."""
    return f"{value!r:.60} ({type(value).__name__})"


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is not a finite JSON number (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _model_config(section: Any, fail: Callable[[str, str], CheckpointError]) -> ModelConfig:
    """The card's ``model`` section checked field by field (types, then sizes) as a ModelConfig."""
    if not isinstance(section, dict):
        raise fail("model", f"must be an object with the architecture, found {_show(section)}")
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise fail("model", f"has fields {unknown} that no architecture has; known fields: {sorted(fields)}")
    missing = [name for name in REQUIRED_MODEL_FIELDS if name not in section]
    if missing:
        raise fail("model", f"lacks {missing}")
    for name, value in section.items():
        default = fields[name].default
        if isinstance(default, int):
            limit = SIZE_LIMITS.get(name, MAX_SIZE)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                raise fail(f"model.{name}", f"must be an integer in 0..{limit:,}, found {_show(value)}")
        elif isinstance(default, float):
            if _number(value) is None:
                raise fail(f"model.{name}", f"must be a finite number, found {_show(value)}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise fail(f"model.{name}", f"must be a string, found {_show(value)}")
    try:
        return ModelConfig(**section)
    except (TypeError, ValueError) as error:
        raise fail("model", f"is not a valid architecture: {error}") from None


def _check_borders(borders: Any, count: int, fail: Callable[[str, str], CheckpointError]) -> None:
    """Bucket borders: ``count`` finite numbers, strictly increasing in float32 (as they are used)."""
    if not isinstance(borders, list) or len(borders) != count:
        size = f"{len(borders)} entries" if isinstance(borders, list) else _show(borders)
        raise fail("borders", f"must be a list of {count} numbers (model.n_outputs + 1), found {size}")
    bad = next((i for i, b in enumerate(borders) if _number(b) is None), None)
    if bad is not None:
        raise fail(f"borders[{bad}]", f"must be a finite number, found {_show(borders[bad])}")
    with np.errstate(over="ignore"):
        single = np.asarray(borders, dtype=np.float64).astype(np.float32)
        widths = np.diff(single)
    if not np.isfinite(single).all() or not np.isfinite(widths).all():
        raise fail(
            "borders", f"must lie within float32's range (|b| < {np.finfo(np.float32).max:.3g} and finite widths)"
        )
    if not (widths > 0).all():
        i = int(np.argmax(widths <= 0))
        raise fail(
            "borders", f"must increase strictly, but borders[{i}] = {borders[i]} >= borders[{i + 1}] = {borders[i + 1]}"
        )


def _check_tail_scales(tails: Any, fail: Callable[[str, str], CheckpointError]) -> None:
    """Tail scales: two positive numbers that stay positive and finite in float32."""
    values = [_number(t) for t in tails] if isinstance(tails, list) and len(tails) == 2 else [None]
    tiny, huge = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
    if any(v is None or not tiny <= v <= huge for v in values):
        raise fail("tail_scales", f"must be two positive finite numbers [left, right] (or null), found {_show(tails)}")


def parameter_floor(config: ModelConfig) -> int:
    """The parameters in the architecture's weight matrices (biases, norms and embeddings come on
    top): a lower bound, computed without building anything, to refuse absurd cards early."""
    d, ff = config.d_model, config.d_ff
    return config.n_layers * (4 * d * d + 2 * d * ff) + config.n_features * d + d * ff + ff * config.n_outputs


def architecture_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of the architecture."""
    return {name: tuple(t.shape) for name, t in PFNTransformer(config).state_dict().items()}


def _header(weights: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's dtype and shape from the safetensors header (no tensor is read)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {error}") from None


def _check_tensors(
    weights: Path, card: dict[str, Any], found: dict[str, tuple[str, tuple[int, ...]]], config: ModelConfig
) -> None:
    """The header's tensor names, dtypes and shapes against the card's architecture; the model is
    built for its shapes only once the file holds at least its weight matrices."""
    in_file = sum(math.prod(shape) for _, shape in found.values())
    if in_file < parameter_floor(config):
        raise CheckpointError(
            f"the tensors in {weights} do not fit the card's architecture {card['model']}: the file holds "
            f"{in_file:,} weights, the architecture at least {parameter_floor(config):,}"
        )
    shapes = architecture_shapes(config)
    missing, extra = sorted(set(shapes) - set(found)), sorted(set(found) - set(shapes))
    if missing or extra:
        raise CheckpointError(
            f"the tensors in {weights} do not fit the card's architecture {card['model']}: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    dtype = SAFETENSORS_DTYPES[card["weights_dtype"]]
    for name, shape in shapes.items():
        if found[name][1] != shape:
            raise CheckpointError(
                f"the tensor {name!r} in {weights} has shape {list(found[name][1])}, but the card's architecture "
                f"{card['model']} needs {list(shape)}"
            )
        if found[name][0] != dtype:
            raise CheckpointError(
                f"the tensor {name!r} in {weights} is {found[name][0]}, but the card says weights_dtype "
                f"{card['weights_dtype']!r} ({dtype})"
            )


def load_model_files(name_or_path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The card and the tensors of a checkpoint. The card is checked field by field
    (:func:`check_card`) and its architecture's size bounded before anything is built; the
    weights file is checked against its sha256, and its tensors' names, dtypes and shapes
    against the architecture, before any tensor is read; NaN or infinite weights are refused."""
    weights = resolve(name_or_path)
    card = read_card(weights)
    config = check_card(card, weights.with_suffix(".json"))
    if parameter_floor(config) > MAX_PARAMETERS:
        raise CheckpointError(
            f"the card's architecture {card['model']} has over {parameter_floor(config):,} parameters, more than "
            f"pfn loads ({MAX_PARAMETERS:,})"
        )
    if not weights.is_file():
        raise CheckpointError(f"the weights file {weights} is missing")
    if sha256(weights) != card["weights_sha256"]:
        raise CheckpointError(f"{weights} does not match the sha256 in its card: the file is truncated or was altered")
    _check_tensors(weights, card, _header(weights), config)
    try:
        tensors = load_file(str(weights))
    except SafetensorError as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {error}") from None
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"the tensor {name!r} in {weights} holds NaN or infinite weights")
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
