"""The recipe ladder (``pfn bench recipe``): training recipes side by side at one CPU budget.

Each arm is the base config (``--config``, default ``configs/gp.toml``) with a few changes to
its [model] and [train] sections (:data:`ARMS`; ``a+b`` combines arms a and b). Every arm gets
the same budget of process CPU time (``--budget`` minutes, one thread): the baseline's step count
is the budget over the calibrated cost of its steps (timed at points across its schedule, drawing
the datasets included); every other arm's is the baseline's times the ratio of the two step
costs, timed side by side on the same datasets. Each arm trains its full schedule (warm-up and
cosine) to its count with ``pfn.train.train``, same seed and prior as the others; the table
reports the process CPU time each actually took.

Reported per arm: steps, datasets seen, process CPU minutes and wall minutes of training, ms
per step, the loss on held-out datasets of the prior (a seed stream no training step uses;
sizes drawn as in training), and by the prior's kind:

- a GP prior: the mean NLL gap to the exact GP posterior predictive over 1–200 train rows;
- a tabular classification / regression prior: mean ROC AUC / R² of the PFN estimator with
  the arm's weights on the public tables at <= 1,000 train rows (``pfn bench tabular``'s
  splits; ``--repeats`` of them, default 1).

Runs are resumable: each arm lives in ``OUT/ARM/`` (its plan, training state, weights and
scores), and a rerun continues unfinished arms and reuses finished ones. Writes
``recipe.json`` and ``recipe.md`` (the table) to ``OUT``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import environment
from benchmarks.throughput import StepTimer
from pfn.checkpoint import read_card, write_json
from pfn.config import ConfigError, RunConfig, load_config
from pfn.inference import PFN
from pfn.train import (
    MODEL_FILE,
    build_model,
    choose_precision,
    draw_sizes,
    draw_step,
    loss_fn,
    seed_for,
    target_support,
    train,
)

HELDOUT_SEED = 31_415_926  # no training run uses this seed; held-out datasets come from its stream
HELDOUT_DATASETS = "fixed-horizon"  # names the held-out set; scores made on another are redone
CALIBRATION_STEPS = 20  # steps timed per arm, chosen by calibration_steps
GP_GRID = (1, 2, 5, 10, 20, 50, 100, 200)
GP_TEST_ROWS = 50

Change = dict[str, dict[str, Any]]  # section ("model" / "train") -> field -> value or f(base value)

BASELINE = "baseline"
ARMS: dict[str, Change] = {
    BASELINE: {},
    "muon": {"train": {"optimizer": "muon"}},
    "lr-x3": {"train": {"lr": lambda lr: 3 * lr}},
    "thinking-16": {"model": {"thinking_rows": 16}},
    "rms-decay": {"model": {"norm": "rms", "residual_decay": 0.95}},
    "lawa": {"train": {"average_last": 10, "average_every": 1}},  # average_every: set to a 40th of the steps
    "rbf": {"model": {"scalar_embedding": "rbf"}},
    "cells": {"model": {"encoder": "cells"}},
    "wide-shallow": {"model": {"d_model": 192, "n_layers": 2, "n_heads": 4, "d_ff": 384}},
    "deep-narrow": {"model": {"d_model": 96, "n_layers": 8, "n_heads": 4, "d_ff": 192}},
    "test-64": {"train": {"test_rows": 64}},
    "batch-x2": {"train": {"batch_size": lambda size: 2 * size}},
}
# "cells" is left out by default: on the tabular prior (up to 100 columns) a step costs about 160x
# a "rows" step on one CPU thread (37 against 0.23 s, bf16), a few dozen steps in a 30-minute budget
DEFAULT_ARMS = tuple(arm for arm in ARMS if arm != "cells")


def arm_change(arm: str) -> Change:
    """The change an arm name makes: one of :data:`ARMS`, or several joined by ``+``."""
    change: Change = {}
    for part in arm.split("+"):
        if part not in ARMS:
            raise ConfigError(f"unknown recipe arm {part!r} in {arm!r}; known: {sorted(ARMS)} (join with '+')")
        for section, fields in ARMS[part].items():
            change.setdefault(section, {}).update(fields)
    return change


def arm_config(base: RunConfig, arm: str, steps: int | None = None) -> RunConfig:
    """The base config with the arm's change; with ``steps``, its schedule scaled to that count."""
    sections = {"model": base.model, "train": base.train}
    for section, fields in arm_change(arm).items():
        current = sections[section]
        values = {k: v(getattr(current, k)) if callable(v) else v for k, v in fields.items()}
        sections[section] = dataclasses.replace(current, **values)
    train_config = sections["train"]
    if steps is not None:
        train_config = dataclasses.replace(
            train_config,
            steps=steps,
            warmup_steps=min(train_config.warmup_steps, max(1, steps // 10)),
            checkpoint_every=max(1, min(train_config.checkpoint_every, steps // 10)),
            log_every=max(1, min(train_config.log_every, steps // 50)),
            average_every=max(1, steps // 40) if train_config.average_last else 0,
        )
    elif train_config.average_last:
        train_config = dataclasses.replace(train_config, average_every=max(1, train_config.steps // 40))
    return RunConfig(name=f"{base.name}-{arm}", prior=base.prior, model=sections["model"], train=train_config)


def _timer(config: RunConfig) -> StepTimer:
    """The throughput benchmark's step timer for a fresh model of ``config``. A step's cost does not
    depend on where a regression head's borders lie, so they are spread evenly over [-4, 4]
    rather than drawn from the prior (a small draw of a prior with discrete targets repeats
    values, which equal-mass borders refuse)."""
    support: dict[str, Any] = {}
    if config.model.task == "regression":
        support["borders"] = torch.linspace(-4.0, 4.0, config.model.n_outputs + 1).tolist()
        support["tail_scales"] = [1.0, 1.0]
    return StepTimer(config, support, config.train.precision, compiled=False)


def _cpu_seconds(timer: StepTimer, batch: Any, n_train: int) -> float:
    """Process CPU seconds of one training step of ``timer`` on one step's datasets."""
    start = time.process_time()
    timer.step(batch, n_train)
    return time.process_time() - start


def calibration_steps(config: RunConfig, k: int = CALIBRATION_STEPS) -> list[int]:
    """``k`` steps of ``config``'s schedule that stand for all of them: the steps at the (j + 0.5)/k
    quantiles of a step's cost in matmul work (every step's sizes drawn, no data): per dataset,
    rows × (2 d_model + d_ff + train rows), the projections, the feed-forward layer and the
    attention to the train rows of each row. Row counts are heavy-tailed (log-uniform up to
    1,152 on the tabular priors), so k evenly spaced steps can miss the mean cost by half."""
    tc, m = config.train, config.model
    cost = []
    for step in range(tc.steps):
        rows, n_train = draw_sizes(tc, step, torch.Generator().manual_seed(seed_for(tc.seed, step)))
        cost.append(rows * (2 * m.d_model + m.d_ff + n_train))
    order = np.argsort(cost, kind="stable")
    return [int(order[int((j + 0.5) / k * len(order))]) for j in range(k)]


def calibrate(configs: Sequence[RunConfig], repeats: int = 2) -> list[float]:
    """Process CPU seconds of one training step (drawing the datasets included) of each config, on
    the datasets of its :func:`calibration_steps`, the configs' steps interleaved so that a change
    in the machine's speed touches all of them alike."""
    timers = [_timer(c) for c in configs]
    batches: list[list[Any]] = [[] for _ in configs]  # per config, per calibration step
    draws = [0.0] * len(configs)
    for k, config in enumerate(configs):
        for step in calibration_steps(config):
            start = time.process_time()
            batches[k].append(draw_step(config, step, range(config.train.batch_size)))
            draws[k] += time.process_time() - start
    for k, timer in enumerate(timers):  # warm-up
        _cpu_seconds(timer, *batches[k][0])
    totals = [0.0] * len(timers)
    for _ in range(repeats):
        for point in range(CALIBRATION_STEPS):
            for k, timer in enumerate(timers):
                totals[k] += _cpu_seconds(timer, *batches[k][point])
    return [(total / repeats + draw) / CALIBRATION_STEPS for total, draw in zip(totals, draws, strict=True)]


def heldout_loss(model: PFN, config: RunConfig, n_steps: int) -> float:
    """Mean training loss of ``model`` on ``n_steps`` batches of datasets from the prior's
    held-out seed stream, with row and train-row counts drawn as at the end of a long schedule
    (past any row curriculum): the same datasets for every arm, whatever its step count."""
    horizon = 10**6
    train_config = dataclasses.replace(config.train, seed=HELDOUT_SEED, steps=horizon)
    held = dataclasses.replace(config, train=train_config)
    borders = model.borders if config.model.task == "regression" else None
    losses = []
    with torch.no_grad():
        for k in range(n_steps):
            batch, n_train = draw_step(held, horizon - 1 - k, range(config.train.batch_size))
            out = model.model(batch.x, batch.y[:, :n_train], batch.used_features)
            losses.append(loss_fn(config, out.float(), batch.y[:, n_train:], borders, model.tail_scales).item())
    return float(np.mean(losses))


def gp_gap(model: PFN, config: RunConfig, n_datasets: int) -> dict[str, Any]:
    """Mean NLL gap (nats per test point) of the PFN to the exact GP posterior predictive."""
    from benchmarks.gp_posterior import gaussian_nll, pfn_nll

    prior = config.prior
    generator = torch.Generator().manual_seed(seed_for(HELDOUT_SEED, 1))
    batch = prior.sample(n_datasets, max(GP_GRID) + GP_TEST_ROWS, config.model.n_features, generator)
    x, y, d = batch.x, batch.y, batch.used_features
    x_test, y_test = x[:, -GP_TEST_ROWS:], y[:, -GP_TEST_ROWS:]
    gaps = []
    for n in GP_GRID:
        with torch.no_grad():
            pfn = pfn_nll(model, x[:, :n], y[:, :n], x_test, y_test, d).mean().item()
        mean, var = prior.posterior_predictive(x[:, :n], y[:, :n], x_test)
        gaps.append(pfn - gaussian_nll(y_test.double(), mean, var).mean().item())
    return {
        "gp_gap_nats": float(np.mean(gaps)),
        "gp_gap_per_n_train": {str(n): g for n, g in zip(GP_GRID, gaps, strict=True)},
    }


def table_score(weights: Path, task: str, data: Path, repeats: int, quick: bool) -> dict[str, Any]:
    """Mean ROC AUC (classification) or R² (regression) of the PFN estimator with these weights
    on the public tables at <= 1,000 train rows (``pfn bench tabular``'s splits)."""
    from benchmarks import tabular

    metric = tabular.MAIN_METRIC[task]
    with tempfile.TemporaryDirectory() as tmp:
        view = Path(tmp) / "data"
        view.mkdir()
        (view / task).symlink_to((data / task).resolve())
        result = tabular.run(
            Path(tmp) / "out",
            quick=quick,
            model=str(weights),
            data=view,
            caps=(1000,),
            repeats=repeats,
            learner_names=[tabular.PFN_LEARNER],
        )
    cap = str(result["caps"][-1])
    section = result["summary"][task][cap]
    return {
        f"tables_{metric}": section["learners"][tabular.PFN_LEARNER][metric],
        "tables": section["tables"],
        "cap": cap,
    }


def _plan(base: RunConfig, arm: str, folder: Path, budget_s: float, precision: str) -> dict[str, Any]:
    """The arm's step count (saved in ``folder/plan.json``, reused by a rerun). The baseline's is the
    budget over its calibrated step cost; any other arm's is the baseline's times the ratio of the
    two step costs measured side by side, so that every arm gets the baseline's CPU time even
    where the machine's speed moved between calibrations."""
    plan_path = folder / "plan.json"
    if plan_path.is_file():
        return json.loads(plan_path.read_text())

    def probe(name: str) -> RunConfig:
        config = arm_config(base, name)
        return dataclasses.replace(config, train=dataclasses.replace(config.train, precision=precision))

    if arm == BASELINE:
        per_step = calibrate([probe(BASELINE)])[0]
        plan = {
            "budget_cpu_s": budget_s,
            "calibrated_cpu_s_per_step": per_step,
            "steps": max(10, int(budget_s / per_step)),
        }
    else:
        baseline = _plan(base, BASELINE, folder.parent / BASELINE, budget_s, precision)
        arm_s, base_s = calibrate([probe(arm), probe(BASELINE)])
        steps = max(10, int(baseline["steps"] * base_s / arm_s))
        plan = {"budget_cpu_s": budget_s, "cost_relative_to_baseline": arm_s / base_s, "steps": steps}
    write_json(plan_path, plan)
    return plan


def run_arm(
    base: RunConfig,
    arm: str,
    folder: Path,
    budget_s: float,
    precision: str,
    evaluate: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """Plan (calibrate), train (resuming) and score one arm in ``folder``."""
    plan = _plan(base, arm, folder, budget_s, precision)
    config = arm_config(base, arm, plan["steps"])
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision=precision))
    scores_path = folder / "scores.json"
    if scores_path.is_file():
        scores = json.loads(scores_path.read_text())
        if scores.get("heldout_datasets") != HELDOUT_DATASETS:  # scored on an earlier held-out set
            scores.update(evaluate(folder / MODEL_FILE, config, heldout_only=True))
            write_json(scores_path, scores)
        return scores
    train(config, folder, command=f"pfn bench recipe (arm {arm})", progress=False)
    card = read_card(folder / MODEL_FILE)
    t = card["training"]
    scores = {
        "arm": arm,
        "change": {s: {k: getattr(getattr(config, s), k) for k in f} for s, f in arm_change(arm).items()},
        "steps": t["steps"],
        "datasets_seen": t["datasets_seen"],
        "cpu_minutes": round(60 * t["cpu_hours"], 2),
        "wall_minutes": round(t["wall_time_s"] / 60, 2),
        "ms_per_step": round(1000 * 3600 * t["cpu_hours"] / t["steps"], 1),
        "parameters": sum(p.numel() for p in build_model(config).parameters()),
        "model": dataclasses.asdict(config.model),
        **evaluate(folder / MODEL_FILE, config),
    }
    write_json(scores_path, scores)
    return scores


def run(
    out: Path,
    quick: bool = False,
    model: str | None = None,
    config: str | Path = Path("configs") / "gp.toml",
    arms: Sequence[str] = DEFAULT_ARMS,
    budget_minutes: float = 30.0,
    data: str | Path = Path("..") / "shared" / "datasets",
    repeats: int = 1,
) -> dict[str, Any]:
    """Train and score every arm; ``quick``: a few CPU seconds per arm, small evaluations."""
    if model is not None:
        raise ConfigError("pfn bench recipe trains its own models; give --config, not --model")
    base = load_config(config)
    for arm in arms:
        arm_config(base, arm)  # every arm resolves before any trains
    budget_s = (0.05 if quick else budget_minutes) * 60
    if budget_s <= 0 or repeats < 1:
        raise ConfigError(f"--budget must be > 0 minutes and --repeats >= 1, got {budget_minutes}, {repeats}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    precision = base.train.precision
    if precision == "auto":
        borders = tails = None
        if base.model.task == "regression":
            borders, tails = target_support(base)
        precision = choose_precision(base, torch.device("cpu"), borders, tails)[0]
    kind = "gp" if base.prior.to_dict().get("type") == "gp" else base.model.task

    def evaluate(weights: Path, arm_config_: RunConfig, heldout_only: bool = False) -> dict[str, Any]:
        model_ = PFN.from_files(weights)
        scores = {
            "heldout_loss": heldout_loss(model_, arm_config_, 2 if quick else 32),
            "heldout_datasets": HELDOUT_DATASETS,
        }
        if heldout_only:
            return scores
        if kind == "gp":
            scores.update(gp_gap(model_, arm_config_, 16 if quick else 300))
        else:
            scores.update(table_score(weights, kind, Path(data), repeats, quick))
        return scores

    rows = []
    for arm in arms:
        rows.append(run_arm(base, arm, out / arm, budget_s, precision, evaluate))
        print(_line(rows[-1]), flush=True)
    result = {
        "benchmark": "recipe",
        "config": str(config),
        "budget_cpu_minutes": budget_s / 60,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "arms": rows,
        "environment": environment(),
    }
    write_json(out / "recipe.json", result)
    (out / "recipe.md").write_text(table(result))
    print(table(result))
    return result


def _line(row: dict[str, Any]) -> str:
    figures = {k: v for k, v in row.items() if k in ("heldout_loss", "gp_gap_nats", "tables_roc_auc", "tables_r2")}
    return f"{row['arm']}: {row['steps']} steps, {row['cpu_minutes']} CPU-min, " + ", ".join(
        f"{k} {v:.4f}" for k, v in figures.items()
    )


def table(result: dict[str, Any]) -> str:
    """The arms side by side, as a Markdown table."""
    metrics = [m for m in ("heldout_loss", "gp_gap_nats", "tables_roc_auc", "tables_r2") if m in result["arms"][0]]
    head = ["arm", "params", "steps", "datasets", "CPU-min", "wall-min", "ms/step", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["arms"]:
        cells = [
            row["arm"],
            f"{row['parameters']:,}",
            str(row["steps"]),
            f"{row['datasets_seen']:,}",
            f"{row['cpu_minutes']:.1f}",
            f"{row['wall_minutes']:.1f}",
            f"{row['ms_per_step']:.0f}",
        ]
        cells += [
            f"{row[m]:.4f}" if isinstance(row[m], float) and math.isfinite(row[m]) else str(row[m]) for m in metrics
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
