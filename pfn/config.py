"""Run configuration: one frozen dataclass per concern, read from a TOML file in ``configs/``.

A file is a recipe: name, [prior], [model] and [train] make the first stage; each
``[[stages]]`` entry after them changes some of those sections and starts from the weights of
the stage before it. A stage's ``[stages.prior]`` replaces the prior whole; its
``[stages.train]`` (and ``[stages.model]``, which must leave the architecture as it was) change
the named keys only.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pfn.model import ModelConfig

if TYPE_CHECKING:  # the priors (and gpytorch) load only when a config is built
    import priors

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
    test_rows: with test_rows > 0, a step's datasets hold its n_train train rows and test_rows
    test rows (at most the step's row count), so a step with few train rows costs less; 0 makes
    every row past the train rows a test row.
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
    noise_free_targets: regression only, with a prior that separates the observation noise
    (``Prior.separates_noise``): the test rows' targets are their values before the noise, so
    the model predicts the function rather than a new noisy observation (train rows keep their
    noise). A Bayesian-optimisation surrogate needs this: its expected improvement at an
    evaluated point is then near zero, as a GP's is.
    """

    steps: int = 1000
    batch_size: int = 32
    accumulation: int = 1
    n_rows: int = 256
    min_train: int = 1
    max_train: int = 200
    min_rows: int = 0
    test_rows: int = 0
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
    noise_free_targets: bool = False

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
        if self.test_rows < 0:
            raise ConfigError(f"train.test_rows must be 0 (every row past the train rows) or > 0, got {self.test_rows}")
        if not 0.0 < self.curriculum_fraction <= 1.0:
            raise ConfigError(f"train.curriculum_fraction must be in (0, 1], got {self.curriculum_fraction}")
        for name in ("compile", "noise_free_targets"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"train.{name} must be true or false, got {getattr(self, name)!r}")
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
        if self.train.noise_free_targets and not (model.task == "regression" and prior.separates_noise):
            raise ConfigError(
                f"train.noise_free_targets needs a regression prior that separates the observation noise, but the "
                f"prior {prior.name!r} does not (among the function priors the GP-based and BNN ones do, wrapped only "
                "in mixture, standardized or irrelevant_features): drop train.noise_free_targets or change the prior"
            )
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
        import priors

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


@dataclass(frozen=True)
class Recipe:
    """A model's whole training: its stages in order. Stage k > 1 starts from the weights of
    stage k - 1 (so the architecture stays), which :meth:`stage_configs` makes explicit."""

    name: str
    stages: tuple[RunConfig, ...]

    def __post_init__(self) -> None:
        if self.stages[0].train.init_from and len(self.stages) > 1:
            raise ConfigError("a recipe with stages trains its first stage from scratch: remove train.init_from")
        for k, (before, stage) in enumerate(zip(self.stages, self.stages[1:], strict=False), start=2):
            if stage.train.init_from:
                raise ConfigError(f"stage {k} sets train.init_from: a stage starts from the stage before it")
            if stage.model != before.model:
                raise ConfigError(
                    f"stage {k} changes [model] ({dataclasses.asdict(stage.model)} after "
                    f"{dataclasses.asdict(before.model)}): a stage starts from the weights before it, so the "
                    "architecture must stay"
                )

    def folders(self, out: Path) -> list[Path]:
        """Where each stage's run lives: the last in ``out`` (so ``out`` holds the model), earlier
        ones in ``out/stage-K``."""
        return [Path(out) / f"stage-{k}" for k in range(1, len(self.stages))] + [Path(out)]

    def stage_configs(self, out: Path) -> list[RunConfig]:
        """The stages with train.init_from pointing at the folder of the stage before."""
        folders = self.folders(out)
        configs = [self.stages[0]]
        for folder, stage in zip(folders, self.stages[1:], strict=False):
            configs.append(dataclasses.replace(stage, train=dataclasses.replace(stage.train, init_from=str(folder))))
        return configs


def read_toml(path: str | Path) -> dict[str, Any]:
    """The contents of a TOML file, or a ConfigError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open("rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` on top: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in change.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def recipe_from_dict(spec: dict[str, Any]) -> Recipe:
    """A Recipe from a dict: the first stage's sections, and ``stages`` (a list of changes)."""
    spec = dict(spec)
    changes = spec.pop("stages", [])
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise ConfigError("stages must be an array of tables ([[stages]] entries)")
    stages, current = [from_dict(spec)], spec
    for k, change in enumerate(changes, start=2):
        unknown = set(change) - {"prior", "model", "train"}
        if unknown:
            raise ConfigError(f"stage {k}: unknown key(s) {sorted(unknown)}; a stage changes prior, model or train")
        current = {
            **merged(current, {k: v for k, v in change.items() if k != "prior"}),
            **({"prior": change["prior"]} if "prior" in change else {}),
        }
        try:
            stages.append(from_dict(current))
        except ConfigError as error:
            raise ConfigError(f"stage {k}: {error}") from None
    return Recipe(name=stages[0].name, stages=tuple(stages))


def load_recipe(path: str | Path) -> Recipe:
    """Read a TOML recipe (one stage or several)."""
    return recipe_from_dict(read_toml(path))


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML run configuration of one stage (a recipe with stages: :func:`load_recipe`)."""
    recipe = load_recipe(path)
    if len(recipe.stages) > 1:
        raise ConfigError(f"{path} is a recipe of {len(recipe.stages)} stages; read it with load_recipe")
    return recipe.stages[0]
