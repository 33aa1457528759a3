"""Prior-fitting: draw datasets from the prior, cut them into train and test rows, and fit the
transformer to predict the test rows (NLL for regression, cross-entropy for classification).

Every dataset is drawn from a generator seeded by (run seed, step, its index in the global
batch), so a run that stops and resumes from its training state continues exactly as an
uninterrupted run, and a data-parallel run (``torchrun``, see :mod:`pfn.distributed`) on any
number of processes sees exactly the datasets of a one-process run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import platform
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

import priors
from pfn import distributed
from pfn.checkpoint import CheckpointError, load_model_files, load_state, save_model, save_state
from pfn.config import ConfigError, RunConfig, TrainConfig, from_dict
from pfn.heads import BarDistribution, equal_mass_borders, prior_tail_scales
from pfn.model import ModelConfig, PFNTransformer
from priors import Batch

STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
BORDER_STREAM = 2**31 - 1  # a seed stream that no training step uses
CPU_MEASURE = "process CPU time"  # what a card's cpu_hours counts (older cards: wall time x threads)

logger = logging.getLogger(__name__)


def seed_for(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, step, index...)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def draw_sizes(config: TrainConfig, step: int, generator: torch.Generator) -> tuple[int, int]:
    """(rows, train rows) of a step's datasets: rows follow the row curriculum (see TrainConfig);
    train rows are half the time uniform, half log-uniform on [min_train, the step's max_train];
    with test_rows > 0 the rows are cut to the train rows plus test_rows."""
    n_rows, lo, hi = config.n_rows, config.min_train, config.max_train
    if config.min_rows:
        ramp = min(1.0, step / max(1.0, config.curriculum_fraction * config.steps))
        cap = config.min_rows + ramp * (config.n_rows - config.min_rows)  # a float: rows may reach cap + 1
        u = torch.rand(1, generator=generator, dtype=torch.float64).item()
        n_rows = min(
            config.n_rows, int(math.exp(math.log(config.min_rows) + u * math.log((cap + 1) / config.min_rows)))
        )
        hi = max(lo, min(n_rows - 1, config.max_train * n_rows // config.n_rows))
    u = torch.rand(2, generator=generator, dtype=torch.float64)
    if u[0] < 0.5:
        n_train = lo + int(u[1] * (hi - lo + 1))
    else:
        n_train = min(hi, int(math.exp(math.log(lo) + u[1].item() * (math.log(hi + 1) - math.log(lo)))))
    if config.test_rows:
        n_rows = min(n_rows, n_train + config.test_rows)
    return n_rows, n_train


def prior_targets(config: RunConfig) -> Tensor:
    """Targets of ``train.border_datasets`` datasets drawn from the prior (its own seed stream)."""
    generator = torch.Generator().manual_seed(seed_for(config.train.seed, BORDER_STREAM))
    chunk = 100
    return torch.cat(
        [
            config.prior.sample(chunk, config.train.n_rows, config.model.n_features, generator).y
            for _ in range(max(1, config.train.border_datasets // chunk))
        ]
    )


def target_support(config: RunConfig, borders: list[float] | None = None) -> tuple[list[float], list[float]]:
    """The bar distribution's borders (equal-mass on targets drawn from the prior, unless given,
    as by an earlier stage) and its tail scales from the same draws."""
    targets = prior_targets(config)
    edges = equal_mass_borders(targets, config.model.n_outputs) if borders is None else torch.tensor(borders)
    return edges.tolist(), list(prior_tail_scales(targets, edges))


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to config.lr, then a cosine decay to zero at config.steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def measure_matmul(device: torch.device, dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a square matmul of the given size and dtype on ``device``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def choose_precision(
    config: RunConfig, device: torch.device, borders: list[float] | None, tail_scales: tuple[float, float] | None
) -> tuple[str, dict[str, float]]:
    """The precision to train in and the measurements that decided it: with ``precision =
    "auto"``, the faster of fp32 and bf16 autocast over forward + backward of the schedule's last
    steps (row counts past every curriculum), timed on a fresh model. bf16 is not timed where its
    matmul runs at under half the fp32 speed (a CPU without bf16 units: minutes a step)."""
    tc = config.train
    if tc.precision != "auto":
        return tc.precision, {}
    fp32 = measure_matmul(device, torch.float32)
    bf16 = measure_matmul(device, torch.bfloat16, size=256 if device.type == "cpu" else 1024)
    measured = {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1)}
    if bf16 < fp32 / 2:
        return "fp32", measured
    model = build_model(config).to(device)
    borders_t = torch.tensor(borders, device=device) if borders is not None else None
    batches = [draw_step(config, step, range(tc.batch_size)) for step in range(max(0, tc.steps - 3), tc.steps)]
    seconds = {
        precision: _seconds_per_step(
            config, model, batches, precision_context(device, precision), borders_t, tail_scales
        )
        for precision in ("fp32", "bf16")
    }
    measured.update({f"{precision}_step_s": round(s, 4) for precision, s in seconds.items()})
    return min(seconds, key=seconds.__getitem__), measured


def precision_context(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast on ``device`` for precision "bf16", else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def _seconds_per_step(
    config: RunConfig,
    model: nn.Module,
    batches: list[tuple[Batch, int]],
    context: AbstractContextManager,
    borders: Tensor | None,
    tail_scales: tuple[float, float] | None,
) -> float:
    """Mean seconds of forward + backward over ``batches``, after a warm-up on the first."""
    device = next(model.parameters()).device
    for index, (batch, n_train) in enumerate([batches[0], *batches]):
        if index == 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        backward(config, model, batch, n_train, 1, context, borders, tail_scales)
        model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / len(batches)


def hardware(device: torch.device) -> dict[str, Any]:
    """A description of the machine a run trained on."""
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def loss_fn(
    config: RunConfig,
    out: Tensor,
    y_test: Tensor,
    borders: Tensor | None,
    tail_scales: tuple[float, float] | None = None,
) -> Tensor:
    """Mean NLL (bar distribution) or cross-entropy of out [B, M, K] against y_test [B, M]."""
    if config.model.task == "classification":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y_test.reshape(-1).long())
    return BarDistribution(borders, out, tail_scales).nll(y_test).mean()


class Optimizers:
    """The run's optimizers as one: AdamW alone, or Muon for the hidden 2-D weights with AdamW for
    the rest (see TrainConfig.optimizer). AdamW runs as one fused kernel (on CPUs about 4x faster
    than the default multi-tensor loop: 0.3 against 1.6 ms for a 0.6M-parameter model)."""

    def __init__(self, config: TrainConfig, model: nn.Module) -> None:
        named = list(model.named_parameters())
        hidden = [p for n, p in named if config.optimizer == "muon" and _muon_weight(n, p)]
        rest = [p for n, p in named if not any(p is h for h in hidden)]
        self.parts: dict[str, torch.optim.Optimizer] = {
            "optim": torch.optim.AdamW(rest, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        }
        if hidden:
            self.parts["muon"] = torch.optim.Muon(
                hidden, lr=config.lr, weight_decay=config.weight_decay, adjust_lr_fn="match_rms_adamw"
            )

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts.values() for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts.values():
            part.step()

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors named ``PART.INDEX.KEY`` and each part's param groups, to save in a state."""
        tensors, groups = {}, {}
        for name, part in self.parts.items():
            sd = part.state_dict()
            for index, slots in sd["state"].items():
                for key, value in slots.items():
                    tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value).clone()
            groups[name] = sd["param_groups"]
        return tensors, groups

    def restore(self, tensors: dict[str, Tensor], groups: dict[str, Any]) -> None:
        """Load what :meth:`state_tensors` saved (a state from AdamW-only runs keeps its layout)."""
        if "param_groups" in groups:
            groups = {"optim": groups["param_groups"]}
        for name, part in self.parts.items():
            state: dict[int, dict[str, Tensor]] = {}
            for key, value in tensors.items():
                prefix, index, slot = key.split(".", 2)
                if prefix == name:
                    state.setdefault(int(index), {})[slot] = value
            part.load_state_dict({"state": state, "param_groups": groups[name]})


def _muon_weight(name: str, parameter: Tensor) -> bool:
    """Whether Muon updates this parameter: the 2-D weights of the blocks and the decoder's hidden layer."""
    return parameter.ndim == 2 and (name.startswith("blocks.") or name == "decoder.0.weight")


def build_optimizer(config: TrainConfig, model: nn.Module) -> Optimizers:
    """The run's optimizers over ``model``'s parameters (see :class:`Optimizers`)."""
    return Optimizers(config, model)


def build_model(config: RunConfig) -> PFNTransformer:
    """A freshly initialised transformer, seeded by the run seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return PFNTransformer(config.model)


def check_stage(config: RunConfig) -> None:
    """What a dry run checks of a stage, training nothing: its model builds and its prior draws a
    dataset at the stage's smallest row count (a ConfigError says what failed)."""
    build_model(config)
    rows = config.train.min_rows or config.train.n_rows
    try:
        config.prior.sample(1, min(rows, 64), config.model.n_features, torch.Generator().manual_seed(0))
    except (ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"{config.name}: its prior cannot draw a dataset: {error}") from None


def initial_weights(config: RunConfig) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The weights and card of ``config.train.init_from``, checked against ``config.model``."""
    source = config.train.init_from
    try:
        card, tensors = load_model_files(source)
    except CheckpointError as error:
        raise ConfigError(f"train.init_from={source!r} cannot be read: {error}") from None
    try:
        same = ModelConfig(**card.get("model", {})) == config.model
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ConfigError(
            f"train.init_from={source!r} has the architecture {card.get('model')}, but [model] is "
            f"{dataclasses.asdict(config.model)}; a later stage must keep the architecture of the checkpoint it "
            "starts from"
        )
    return {k: v.float() for k, v in tensors.items()}, card


def stage_record(card: dict[str, Any], source: str) -> dict[str, Any]:
    """What a later stage's card records of the checkpoint it started from (with its own origin)."""
    training = card.get("training", {})
    keys = ("command", "steps", "datasets_seen", "wall_time_s", "cpu_hours", "hardware", "curve", "init_from")
    return {
        "checkpoint": source,
        "name": card.get("name"),
        "weights_sha256": card.get("weights_sha256"),
        **{k: training[k] for k in keys if k in training},
        "prior": card.get("prior"),
    }


def _stages(state: TrainState) -> list[dict[str, Any]]:
    """The earlier stages of a run, oldest first."""
    stages, stage = [], state.init_from
    while stage:
        stages.insert(0, stage)
        stage = stage.get("init_from")
    return stages


def make_card(config: RunConfig, state: TrainState, command: str) -> dict[str, Any]:
    """The JSON card of a model trained to ``state`` (totals include earlier stages)."""
    card = config.to_dict()
    card["task"] = config.model.task
    cpu_hours = round(state.cpu_seconds / 3600, 3) if "gpu" not in state.hardware else None
    stages = _stages(state)
    card["training"] = {
        "command": command,
        "steps": state.step,
        "datasets_seen": state.datasets_seen,
        "wall_time_s": round(state.wall_time_s, 1),
        "cpu_hours": cpu_hours,
        "cpu_hours_measure": state.cpu_measure,
        "sampler_wait_s": round(state.sampler_wait_s, 1),
        "hardware": state.hardware,
        "precision": state.precision,
        "precision_measurement": state.precision_measurement,
        "torch": torch.__version__,
        "curve": state.curve,
    }
    if stages:
        card["training"]["init_from"] = state.init_from
        card["training"]["total_datasets_seen"] = state.datasets_seen + sum(s["datasets_seen"] for s in stages)
        if cpu_hours is not None and all(s.get("cpu_hours") is not None for s in stages):
            card["training"]["total_cpu_hours"] = round(cpu_hours + sum(s["cpu_hours"] for s in stages), 3)
    if state.borders is not None:
        card["borders"] = state.borders
        card["tail_scales"] = state.tail_scales
    card["quality"] = state.quality
    return card


def averaged_weights(model: nn.Module, snapshots: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The mean of the weight snapshots (latest weight averaging), or the model's own weights."""
    if not snapshots:
        return model.state_dict()
    return {k: torch.stack([s[k].float() for s in snapshots]).mean(0) for k in snapshots[0]}


class StepDatasets(Dataset):
    """One rank's datasets of each training step, by step number (see :func:`draw_step`); a
    DataLoader's worker processes draw them ahead of the step that uses them."""

    def __init__(self, config: RunConfig, indices: range) -> None:
        self.config, self.indices = config, indices

    def __len__(self) -> int:
        return self.config.train.steps

    def __getitem__(self, step: int) -> tuple[Batch, int]:
        return draw_step(self.config, step, self.indices)


def draw_step(config: RunConfig, step: int, indices: range) -> tuple[Batch, int]:
    """The datasets ``indices`` of step ``step``'s global batch, and the step's train-row count.

    Each dataset comes from its own generator seeded by (run seed, step, index in the global
    batch), the step's row and train-row counts from one seeded by (run seed, step): a slice of
    the batch is the same whichever process draws it, so N processes see what one process sees."""
    tc = config.train
    n_rows, n_train = draw_sizes(tc, step, torch.Generator().manual_seed(seed_for(tc.seed, step)))
    parts = [
        config.prior.sample(
            1, n_rows, config.model.n_features, torch.Generator().manual_seed(seed_for(tc.seed, step, i))
        )
        for i in indices
    ]
    return Batch.concat(parts), n_train


def step_loader(config: RunConfig, indices: range, steps: range, workers: int, nice: int = 0) -> DataLoader:
    """The datasets ``indices`` of every step in ``steps``, in order: drawn in the loop (workers
    = 0) or ahead of it by worker processes, run ``nice`` levels below the trainer's priority."""
    return DataLoader(
        StepDatasets(config, indices),
        batch_size=None,
        sampler=steps,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        worker_init_fn=functools.partial(_lower_priority, nice) if workers and nice else None,
    )


def _lower_priority(nice: int, worker_id: int) -> None:
    os.nice(nice)


def _snapshots(tensors: dict[str, Tensor], keep: int) -> list[dict[str, Tensor]]:
    """The weight snapshots ``average.J.NAME`` saved in a training state, oldest first."""
    snapshots: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("average."):
            _, j, name = key.split(".", 2)
            snapshots.setdefault(int(j), {})[name] = value
    return [snapshots[j] for j in sorted(snapshots)][-keep:] if keep else []


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the defaults of fields added since filled in. A prior of a type that
    is not registered in ``priors.PRIORS`` (one defined in a script) stays as it was saved."""
    if saved["prior"].get("type") in priors.PRIORS:
        return from_dict(saved).to_dict()
    return {
        **saved,
        "model": dataclasses.asdict(ModelConfig(**saved["model"])),
        "train": dataclasses.asdict(TrainConfig(**saved["train"])),
    }


@dataclass
class TrainState:
    """What a run carries from step to step besides tensors; saved as the JSON of its state file.

    ``curve`` holds [step, datasets seen, mean loss] every ``log_every`` steps; ``cpu_seconds``
    is process CPU time summed over the processes (``cpu_measure`` says so); ``borders`` and
    ``tail_scales`` are the regression head's support (None for classification); ``init_from``
    records the checkpoint an earlier stage wrote, with its own origin inside it."""

    config: dict[str, Any]
    precision: str
    precision_measurement: dict[str, float]
    borders: list[float] | None = None
    tail_scales: list[float] | None = None
    init_from: dict[str, Any] | None = None
    step: int = 0
    datasets_seen: int = 0
    wall_time_s: float = 0.0
    cpu_seconds: float = 0.0
    cpu_measure: str = CPU_MEASURE
    sampler_wait_s: float = 0.0
    curve: list[list[float]] = field(default_factory=list)
    loss_window: list[float] = field(default_factory=list)  # losses since the last curve point
    hardware: dict[str, Any] = field(default_factory=dict)
    replicas: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)  # each optimizer's param groups
    quality: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainState:
        """A state read back from a state file, with what older versions did not save filled in
        (every migration of the state is here)."""
        saved = dict(saved)
        hw = saved.get("hardware", {})  # states from before process CPU time: their best estimate
        saved.setdefault("cpu_seconds", saved["wall_time_s"] * hw.get("torch_threads", 1) * hw.get("processes", 1))
        saved.setdefault("cpu_measure", f"wall time x threads until step {saved['step']}, then {CPU_MEASURE}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


def initial_state(config: RunConfig, dev: torch.device, state_path: Path) -> tuple[dict[str, Tensor], TrainState]:
    """The saved training state (tensors, state) in ``state_path``, or a fresh one (no tensors
    unless ``train.init_from`` gives starting weights)."""
    tc = config.train
    if state_path.is_file():
        tensors, saved = load_state(state_path)
        state = TrainState.from_saved(saved)
        if _with_defaults(state.config) != config.to_dict():
            old = _with_defaults(state.config)
            changed = sorted(k for k in config.to_dict() if old.get(k) != config.to_dict()[k])
            raise CheckpointError(
                f"{state_path.parent} holds a run of a different config (sections differing: {changed}); "
                "use another --out folder or the original config"
            )
        return tensors, state
    tensors, origin = {}, None
    if tc.init_from:
        weights, init_card = initial_weights(config)
        tensors = {f"model.{k}": v for k, v in weights.items()}
        origin = stage_record(init_card, tc.init_from)
    borders = tail_scales = None
    if config.model.task == "regression":
        borders, tail_scales = target_support(config, init_card["borders"] if origin else None)
    precision, measured = choose_precision(config, dev, borders, tail_scales)
    state = TrainState(
        config=config.to_dict(),
        precision=precision,
        precision_measurement=measured,
        borders=borders,
        tail_scales=tail_scales,
        init_from=origin,
    )
    return tensors, state


def backward(
    config: RunConfig,
    net: nn.Module,
    batch: Batch,
    n_train: int,
    accumulation: int,
    autocast: AbstractContextManager,
    borders: Tensor | None,
    tail_scales: tuple[float, float] | None,
) -> float:
    """Accumulate the gradient of the mean loss over ``batch`` (the first n_train rows of each
    dataset are train rows) in ``accumulation`` micro-batches; returns that loss. A
    DistributedDataParallel ``net`` averages gradients over the processes at the last micro-batch."""
    device = next(net.parameters()).device
    micro = len(batch) // accumulation
    total = 0.0
    targets = batch.clean_y if config.train.noise_free_targets else batch.y  # [B, N]
    for index in range(accumulation):
        part = slice(index * micro, (index + 1) * micro)
        x, y, used = batch.x[part].to(device), batch.y[part].to(device), batch.used_features[part].to(device)
        target = targets[part, n_train:].to(device)  # [b, N - n]
        sync = index == accumulation - 1 or not isinstance(net, DistributedDataParallel)
        with autocast, nullcontext() if sync else net.no_sync():
            out = net(x, y[:, :n_train], used)  # [b, N - n, K]
        loss = loss_fn(config, out.float(), target, borders, tail_scales) / accumulation
        loss.backward()
        total += loss.item()
    return total


def train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    command: str = "",
    stop_at: int | None = None,
    device: str = "cpu",
    backend: str = "auto",
    sampler_workers: int = 0,
    progress: bool = True,
) -> TrainState:
    """Fit a PFN to ``config.prior``, writing ``out_dir/state.safetensors`` (resumable training
    state) and ``out_dir/model.safetensors`` + ``model.json`` (weights and card) every
    ``checkpoint_every`` steps. Resumes from an existing state in ``out_dir``. ``stop_at`` ends
    this run at that step (the schedule still spans ``config.train.steps``; run again to go on).

    Progress: a bar where stderr is a terminal, else a line logged (``logging``, logger
    ``pfn.train``) every ``log_every`` steps; ``progress=False`` shows neither.

    Under ``torchrun`` the run is data-parallel (DistributedDataParallel; ``backend`` "auto"
    takes nccl on GPUs, gloo on CPUs): the global batch ``train.batch_size`` is split across the
    processes, each drawing only its slice (see :func:`draw_step`); rank 0 logs and writes.
    ``sampler_workers`` > 0 draws the prior's datasets in that many worker processes, ahead of
    the step that uses them. Returns the final training state."""
    if sampler_workers < 0:
        raise ConfigError(f"sampler_workers must be >= 0, got {sampler_workers}")
    procs, dev = distributed.start(device, backend)
    finished = False
    try:
        run = _Run(config, Path(out_dir), procs, dev, command)
        run.fit(stop_at, sampler_workers, progress)
        finished = True
    finally:
        procs.close(wait=finished)
    return run.state


class _Run:
    """One training run: :meth:`__init__` sets it up from its folder (a saved state or a fresh
    start), :meth:`step` takes one optimizer step, :meth:`checkpoint` writes state, weights and card."""

    def __init__(
        self, config: RunConfig, out_dir: Path, procs: distributed.Processes, dev: torch.device, command: str
    ) -> None:
        tc = config.train
        if tc.batch_size % (procs.world_size * tc.accumulation):
            raise ConfigError(
                f"train.batch_size ({tc.batch_size}) must be divisible by the number of processes "
                f"({procs.world_size}) times train.accumulation ({tc.accumulation}); change the process count "
                "or the config"
            )
        self.config, self.out_dir, self.procs, self.dev, self.command = config, out_dir, procs, dev, command
        loaded: Any = None
        if procs.is_main:
            try:
                loaded = initial_state(config, dev, out_dir / STATE_FILE)
            except (ConfigError, CheckpointError) as error:  # every rank raises it, none waits for rank 0
                loaded = error
        loaded = procs.broadcast(loaded)
        if isinstance(loaded, Exception):
            raise loaded
        tensors, self.state = loaded
        self.model = build_model(config).to(dev)
        self.optimizer = build_optimizer(tc, self.model)
        if tensors:
            self.model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer_tensors = {k: v for k, v in tensors.items() if k.split(".", 1)[0] in self.optimizer.parts}
        if optimizer_tensors or self.state.optimizer:
            self.optimizer.restore(optimizer_tensors, self.state.optimizer)
        self.snapshots = _snapshots(tensors, tc.average_last)
        self.state.hardware = {**hardware(dev), "processes": procs.world_size}
        compiled = torch.compile(self.model, dynamic=True) if tc.compile else self.model
        self.net = (
            compiled
            if procs.backend is None
            else DistributedDataParallel(compiled, device_ids=[dev.index] if dev.index is not None else None)
        )
        regression = self.state.borders is not None
        self.borders = torch.tensor(self.state.borders, device=dev) if regression else None
        if regression and self.state.tail_scales is None:  # a state from before tail scales
            self.state.tail_scales = target_support(config, self.state.borders)[1]
            self.checkpoint()  # written at once, also when the run had finished
        self.tail_scales = tuple(self.state.tail_scales) if regression else None
        self.autocast = precision_context(dev, self.state.precision)

    def fit(self, stop_at: int | None, sampler_workers: int, progress: bool) -> None:
        """Train from the state's step to ``train.steps`` (or ``stop_at``), checkpointing on the way."""
        tc, state = self.config.train, self.state
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        show = progress and self.procs.is_main
        bar = tqdm(total=end, initial=state.step, disable=None if show else True, desc=self.config.name, unit="step")
        log = show and bar.disable  # no terminal: a log line in place of the bar
        loader = step_loader(self.config, self.procs.shard(tc.batch_size), range(state.step, end), sampler_workers)
        self.model.train()
        tick, cpu_tick = time.perf_counter(), time.process_time()
        for batch, n_train in loader:
            state.sampler_wait_s += time.perf_counter() - tick
            loss = self.step(batch, n_train)
            now, cpu_now = time.perf_counter(), time.process_time()
            state.wall_time_s += now - tick  # drawing the datasets (in this process or not) and the step
            state.cpu_seconds += self.procs.sum(cpu_now - cpu_tick, self.dev)  # process CPU time, all processes
            tick, cpu_tick = now, cpu_now
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
            if log and state.step % tc.log_every == 0:
                logger.info(
                    "%s: step %d/%d, loss %.4f, %.1f CPU-min",
                    self.config.name,
                    state.step,
                    end,
                    state.curve[-1][2],
                    state.cpu_seconds / 60,
                )
            if state.step % tc.checkpoint_every == 0 or state.step == end:
                self.checkpoint()
        bar.close()

    def step(self, batch: Batch, n_train: int) -> float:
        """One optimizer step on ``batch`` (its first n_train rows are train rows); its mean loss."""
        tc, state = self.config.train, self.state
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(tc, state.step)
        self.optimizer.zero_grad(set_to_none=True)
        total = backward(
            self.config, self.net, batch, n_train, tc.accumulation, self.autocast, self.borders, self.tail_scales
        )
        total = self.procs.mean(total, self.dev)
        if not math.isfinite(total):
            raise FloatingPointError(f"the training loss became {total} at step {state.step}; lower train.lr")
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        state.step += 1
        state.datasets_seen += tc.batch_size
        if tc.average_last and state.step % tc.average_every == 0:
            self.snapshots.append({k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
            del self.snapshots[: -tc.average_last]
        state.loss_window.append(total)
        if state.step % tc.log_every == 0:
            state.curve.append([state.step, state.datasets_seen, round(float(np.mean(state.loss_window)), 5)])
            state.loss_window = []
        return total

    def checkpoint(self) -> None:
        """Write the training state, and the weights (averaged if the recipe says so) with their card."""
        procs, state = self.procs, self.state
        digests = procs.replica_digests(self.model)
        if len(set(digests)) > 1:
            raise RuntimeError(f"the model replicas of the {procs.world_size} processes diverged at step {state.step}")
        state.replicas = {"processes": procs.world_size, "backend": procs.backend, "parameter_sha256": digests}
        if not procs.is_main:
            return
        tensors = {f"model.{k}": v.detach().cpu() for k, v in self.model.state_dict().items()}
        opt_tensors, state.optimizer = self.optimizer.state_tensors()
        tensors.update({k: v.cpu() for k, v in opt_tensors.items()})
        for j, snapshot in enumerate(self.snapshots):
            tensors.update({f"average.{j}.{k}": v for k, v in snapshot.items()})
        save_state(self.out_dir / STATE_FILE, tensors, state.to_dict())
        weights = averaged_weights(self.model, self.snapshots)
        save_model(self.out_dir / MODEL_FILE, weights, make_card(self.config, state, self.command), torch.float32)
