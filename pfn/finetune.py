"""Fine-tuning a PFN on the user's own table: gradient steps on random context/query splits of
its train rows with the PFN's own loss (cross-entropy or the bar distribution's NLL), stopped
early on a held-out fold (after TabPFN's and TabICL's fine-tuning, and LoCalPFN's).

Each step draws ``datasets`` splits of the training rows: a context of up to ``context_rows``
rows and up to ``query_rows`` query rows, the columns in a random order and (for classes) the
labels randomly permuted, as the prior taught the model. Every ``eval_every`` steps the
held-out rows are scored given a fixed context of training rows, and the weights with the best
held-out loss are remembered. Tuning stops after ``steps`` steps, ``patience`` scores without
improvement, or ``seconds`` of wall time (with a warning saying so).

Tuned weights are kept only on a gain beyond chance: their held-out loss must beat the untuned
model's by more than ``min_gain_se`` standard errors of the per-row loss differences (the best
of several noisy scores on a few hundred rows often looks better by chance). With a ``score``
(the estimators pass their whole ensemble), a further fold that tuning never sees decides as
well: the ensemble with the tuned weights must predict it better by the same rule, and score no
lower by the caller's ranking measure (ROC AUC for classes, minus the squared error for
numbers): a model tuned to a lower loss in one context, on the raw columns, can still rank
worse inside the ensemble's transformed, subsampled contexts.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pfn.heads import BarDistribution
from pfn.inference import PFN

MIN_ROWS = 40  # fewer train rows than this: too few to split into context, query and held-out rows
STACK = 4  # calls from the user's fit to fine_tune (fit, _fit_members, _fine_tuned): warnings point at fit


Score = Callable[[PFN, np.ndarray, np.ndarray], tuple[np.ndarray, float]]
"""(weights, context rows, held-out rows) -> the held-out rows' losses [h] and a ranking score
(higher is better; NaN: none), the rows as indices into the table's rows."""


class FineTuneWarning(UserWarning):
    """Fine-tuning was skipped or stopped before its steps ran out."""


@dataclass(frozen=True)
class FineTuneConfig:
    """How a PFN is tuned on a table (see the module docstring)."""

    steps: int = 100
    seconds: float | None = None
    lr: float = 1e-4
    datasets: int = 4
    context_rows: int = 1024
    query_rows: int = 256
    held_out: float = 0.2
    eval_every: int = 10
    patience: int = 3
    min_gain_se: float = 2.0


def fine_tune(
    pfn: PFN,
    x: np.ndarray,
    y: np.ndarray,
    config: FineTuneConfig,
    seed: int,
    progress: bool | None = None,
    score: Score | None = None,
) -> tuple[PFN, dict[str, Any]]:
    """A copy of ``pfn`` tuned on the rows x [n, f] (preprocessed, at most the model's columns)
    with encoded targets y [n] (class ids, or standardised floats within the model's buckets),
    and a report: steps taken, held-out losses before and after, why it stopped, which weights
    were kept. Returns ``pfn`` itself when tuning did not lower the held-out loss (with
    ``score``: also on a fold of its own, see the module docstring) or the table is too small
    to split. progress: a bar over the steps (None: where stderr is a terminal)."""
    if len(x) < MIN_ROWS:
        warnings.warn(
            f"fine-tuning skipped: {len(x)} train rows are too few to split into context, query and held-out "
            f"rows (at least {MIN_ROWS}); the model is used as it is",
            FineTuneWarning,
            stacklevel=STACK + 1,
        )
        return pfn, {"steps": 0, "stopped": "too few rows"}
    classes = pfn.task == "classification"
    rng = np.random.RandomState(seed)
    rows = np.arange(len(x))
    judged = held_out_rows(y, config.held_out, classes, rng) if score is not None else rows[:0]
    rows = np.setdiff1d(rows, judged)
    tuned, report = _tune(pfn, x[rows], y[rows], config, rng, progress)
    if tuned is pfn or score is None:
        return tuned, report
    (before, before_rank), (after, after_rank) = (score(model, rows, judged) for model in (pfn, tuned))
    significant, gain_se = _beats(before, after, config.min_gain_se)
    report.update(
        ensemble_before=round(float(before.mean()), 5),
        ensemble_after=round(float(after.mean()), 5),
        ensemble_gain_se=gain_se,
        rank_before=round(before_rank, 5),
        rank_after=round(after_rank, 5),
    )
    if not significant or after_rank < before_rank:
        return pfn, {**report, "kept": "untuned"}
    return tuned, report


def _tune(
    pfn: PFN, x: np.ndarray, y: np.ndarray, config: FineTuneConfig, rng: np.random.RandomState, progress: bool | None
) -> tuple[PFN, dict[str, Any]]:
    """The tuning loop of :func:`fine_tune` on the rows x [n, f], y [n], early stopping on a
    held-out fold of them; returns ``pfn`` itself unless the best weights beat it there."""
    classes = pfn.task == "classification"
    held = held_out_rows(y, config.held_out, classes, rng)
    train = np.setdiff1d(np.arange(len(x)), held)
    context = rng.choice(train, min(len(train), config.context_rows), replace=False)
    tuned = copy.deepcopy(pfn)
    model = tuned.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)

    def held_out_losses() -> np.ndarray:
        model.eval()
        with torch.inference_mode():
            return _row_losses(tuned, xt[context], yt[context], xt[held], yt[held]).double().cpu().numpy()

    start_rows = best_rows = held_out_losses()  # [h]
    best_state = copy.deepcopy(model.state_dict())
    report: dict[str, Any] = {"held_out_before": round(float(start_rows.mean()), 5), "stopped": "steps"}
    began, waited, step = time.perf_counter(), 0, 0
    bar = tqdm(total=config.steps, disable=None if progress is None else not progress, desc="fine-tune", unit="step")
    while step < config.steps:
        if config.seconds is not None and time.perf_counter() - began > config.seconds:
            report["stopped"] = "seconds"
            warnings.warn(
                f"fine-tuning stopped by its time budget ({config.seconds:g} s) after {step} of {config.steps} "
                "steps; the best weights so far are kept",
                FineTuneWarning,
                stacklevel=STACK + 2,
            )
            break
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = (
            sum(_row_losses(tuned, *_split(xt, yt, train, config, classes, rng)).mean() for _ in range(config.datasets))
            / config.datasets
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        bar.update()
        if step % config.eval_every == 0 or step == config.steps:
            rows = held_out_losses()
            if rows.mean() < best_rows.mean():
                best_rows, best_state, waited = rows, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= config.patience:
                    report["stopped"] = "no improvement"
                    break
    bar.close()
    model.eval()
    significant, gain_se = _beats(start_rows, best_rows, config.min_gain_se)
    report.update(
        steps=step,
        held_out_after=round(float(best_rows.mean()), 5),
        gain_se=gain_se,
        seconds=round(time.perf_counter() - began, 2),
    )
    if not significant:
        return pfn, {**report, "kept": "untuned"}
    model.load_state_dict(best_state)
    return tuned, {**report, "kept": "tuned"}


def _beats(before: np.ndarray, after: np.ndarray, min_gain_se: float) -> tuple[bool, float | None]:
    """Whether the per-row losses ``after`` [h] beat ``before`` [h] (the same rows) by more than
    ``min_gain_se`` standard errors of their differences, and the gain in standard errors."""
    gain = before - after  # [h]
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("inf")
    return bool(gain.mean() > min_gain_se * se), round(float(gain.mean()) / se, 2) if se > 0 else None


def held_out_rows(y: np.ndarray, fraction: float, classes: bool, rng: np.random.RandomState) -> np.ndarray:
    """The rows [h] held out for early stopping (per class for classes, each class keeping a row)."""
    if not classes:
        return np.sort(rng.choice(len(y), max(1, int(fraction * len(y))), replace=False))
    held = [
        rng.choice(rows, int(fraction * len(rows)), replace=False)
        for rows in (np.flatnonzero(y == c) for c in np.unique(y))
        if len(rows) > 1
    ]
    return np.sort(np.concatenate(held))


def _split(
    x: torch.Tensor,
    y: torch.Tensor,
    rows: np.ndarray,
    config: FineTuneConfig,
    classes: bool,
    rng: np.random.RandomState,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training dataset from ``rows``: context x [c, f], y [c] and query x [q, f], y [q],
    columns permuted and (classes) labels permuted."""
    n = len(rows)
    query = min(config.query_rows, max(1, n // 4))
    order = rng.permutation(rows)[: min(n, config.context_rows + query)]
    columns = torch.as_tensor(rng.permutation(x.shape[1]))
    xs, ys = x[order][:, columns], y[order]
    if classes:
        labels = torch.as_tensor(rng.permutation(int(y.max()) + 1), dtype=torch.float32)
        ys = labels[ys.long()]
    cut = len(order) - query
    return xs[:cut], ys[:cut], xs[cut:], ys[cut:]


def _row_losses(
    pfn: PFN, x_context: torch.Tensor, y_context: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor
) -> torch.Tensor:
    """The PFN's loss on each query row [q] given the context rows (one forward pass)."""
    rows, used = pfn.pad_features(torch.cat([x_context, x_query])[None])  # [1, c + q, F], [1]
    out = pfn.model(rows.to(pfn.device), y_context[None].to(pfn.device), used.to(pfn.device))[0].float()  # [q, K]
    target = y_query.to(pfn.device)
    if pfn.task == "classification":
        return F.cross_entropy(out, target.long(), reduction="none")
    return BarDistribution(pfn.borders.to(pfn.device), pfn.head_logits(out), pfn.tail_scales).nll(target)
