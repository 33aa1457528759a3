"""Run configuration: one frozen dataclass per concern, read from a TOML file in ``configs/``."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import priors
from pfn.model import ModelConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A run configuration that cannot be used, with the reason."""


@dataclass(frozen=True)
class TrainConfig:
    """The prior-fitting recipe.

    batch_size datasets per optimizer step, drawn as ``accumulation`` micro-batches; each
    dataset has n_rows rows, cut into n_train train rows (n_train drawn per micro-batch from
    [min_train, max_train], half the time uniformly, half log-uniformly) and test rows.
    Row curriculum: with min_rows > 0, a step's row count is drawn log-uniformly from
    [min_rows, cap], where cap grows linearly from min_rows to n_rows over the first
    curriculum_fraction of the steps, and max_train shrinks in proportion (max_train · rows /
    n_rows, at least min_train); min_rows = 0 keeps every step at n_rows rows.
    The learning rate warms up linearly for warmup_steps, then follows a cosine to zero.
    init_from: a checkpoint (shipped name, weights path or run folder) whose weights start the
    run instead of a random initialisation: a later stage of a multi-stage schedule, e.g. on a
    re-weighted prior. Its architecture must equal [model]; a regression run keeps its borders.
    precision: "auto" times forward + backward of the schedule's last steps in fp32 and in bf16
    autocast on the training device and trains in the faster (see pfn.train.choose_precision).
    compile: run the model under ``torch.compile`` (dynamic shapes); it needs a C++ compiler on
    CPUs. Measured gains: docs/benchmarks.md, "Training throughput".
    optimizer: "adamw" for every weight, or "muon": Muon (orthogonalised momentum, its update
    scaled to AdamW's RMS so the same lr serves both) for the 2-D weights of the blocks and the
    decoder's hidden layer, AdamW for embeddings, biases, norms and the output layer.
    average_last, average_every: with average_last > 0, a snapshot of the weights is taken every
    average_every steps and the written model is the mean of the latest average_last snapshots
    (latest weight averaging); 0 writes the current weights.
    """

    steps: int = 1000
    batch_size: int = 32
    accumulation: int = 1
    n_rows: int = 256
    min_train: int = 1
    max_train: int = 200
    min_rows: int = 0
    curriculum_fraction: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50
    border_datasets: int = 2000
    init_from: str = ""
    optimizer: Literal["adamw", "muon"] = "adamw"
    average_last: int = 0
    average_every: int = 0

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "accumulation", "n_rows", "min_train", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.accumulation:
            raise ConfigError(
                f"train.batch_size ({self.batch_size}) must be divisible by train.accumulation ({self.accumulation})"
            )
        if not self.min_train <= self.max_train < self.n_rows:
            raise ConfigError(
                f"need train.min_train <= train.max_train < train.n_rows (at least one test row), got "
                f"{self.min_train}, {self.max_train}, {self.n_rows}"
            )
        if self.min_rows and not self.min_train < self.min_rows <= self.n_rows:
            raise ConfigError(
                f"train.min_rows must be 0 (no curriculum) or in (min_train, n_rows], got {self.min_rows} "
                f"with min_train={self.min_train}, n_rows={self.n_rows}"
            )
        if not 0.0 < self.curriculum_fraction <= 1.0:
            raise ConfigError(f"train.curriculum_fraction must be in (0, 1], got {self.curriculum_fraction}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"train.compile must be true or false, got {self.compile!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.optimizer not in ("adamw", "muon"):
            raise ConfigError(f"train.optimizer must be 'adamw' or 'muon', got {self.optimizer!r}")
        if self.average_last < 0 or (self.average_last > 0) != (self.average_every > 0):
            raise ConfigError(
                "train.average_last and train.average_every must both be 0 (no averaging) or both > 0, got "
                f"{self.average_last} and {self.average_every}"
            )
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip <= 0 or self.weight_decay < 0:
            raise ConfigError("train.lr and train.grad_clip must be > 0, warmup_steps and weight_decay >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a trained model: its name, prior, architecture and recipe."""

    name: str
    prior: priors.Prior
    model: ModelConfig
    train: TrainConfig

    def __post_init__(self) -> None:
        prior, model = self.prior, self.model
        if prior.task != model.task:
            raise ConfigError(f"the prior is a {prior.task} prior but the model's task is {model.task!r}")
        try:
            prior.check_features(model.n_features)
        except ValueError as error:
            raise ConfigError(f"prior and model.n_features={model.n_features} disagree: {error}") from None
        if model.task == "classification" and prior.n_classes > model.n_outputs:
            raise ConfigError(
                f"the prior makes up to {prior.n_classes} classes but the model's head has "
                f"n_outputs={model.n_outputs}; raise model.n_outputs or lower the prior's max_classes"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prior": self.prior.to_dict(),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }


def from_dict(spec: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a dict with sections name, prior, model, train."""
    unknown = set(spec) - {"name", "prior", "model", "train"}
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; known: name, prior, model, train")
    for key in ("name", "prior", "model"):
        if key not in spec:
            raise ConfigError(f"the config needs a {key!r} entry")
    try:
        prior = priors.from_dict(spec["prior"])
    except (ValueError, TypeError) as error:
        raise ConfigError(f"[prior]: {error}") from None
    return RunConfig(
        name=str(spec["name"]),
        prior=prior,
        model=_section(ModelConfig, spec["model"], "model"),
        train=_section(TrainConfig, spec.get("train", {}), "train"),
    )


def _section(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in [{where}]; known: {sorted(names)}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"[{where}]: {error}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML run configuration."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open("rb") as f:
        try:
            spec = tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return from_dict(spec)
