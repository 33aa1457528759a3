"""Training throughput (``pfn bench throughput``): how close a prior-fitting step comes to the
machine's matmul peak, and how long it waits for the prior sampler.

For each shipped model size (its card holds the config that trained it), a few training steps
are drawn exactly as the trainer draws them (:func:`pfn.train.draw_step`, at step numbers past
every row curriculum) and run through the trainer's own step (:func:`pfn.train.backward`,
gradient clipping, AdamW), side by side in one run:

- compute: forward + backward + optimizer, in fp32, with bf16 autocast (where its matmul peak
  makes it a contender), and under ``torch.compile``; FLOPs of forward + backward counted by
  torch's ``FlopCounterMode`` (attention included) give the achieved GFLOP/s, set against the
  peak of a square matmul in fp32 and in bf16 measured in the same run;
- pipeline: whole steps (in whichever of fp32 and bf16 made the faster step above; the trainer's
  ``precision = "auto"`` decides by the matmul peak instead) through the trainer's DataLoader with
  the prior sampled in the training loop, in a worker process, and in a worker process at lower
  priority; the share of step time spent waiting for data (the sampler share of the target), and
  the fastest whole step over the compute alone (what the sampler costs where a worker competes
  with the model for the cores).

Writes ``throughput.json`` and ``throughput.png``.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import pfn
from benchmarks.common import environment, pyplot
from pfn.checkpoint import write_json
from pfn.config import RunConfig, from_dict
from pfn.train import backward, build_model, draw_step, measure_matmul, step_loader

MODELS = ("tabular-clf", "tabular-reg", "linear", "gp")
PIPELINES = {"in the loop": (0, 0), "1 worker": (1, 0), "1 worker, nice 10": (1, 10)}  # (workers, nice)
TARGET_PEAK_SHARE = 0.30
TARGET_SAMPLER_SHARE = 0.10


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


# FlopCounterMode counts the CUDA attention kernels but not the CPU one the model runs here
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def peak_gflops(dtype: torch.dtype, sizes: tuple[int, ...]) -> float:
    """The best GFLOP/s of square matmuls of the given sizes (this machine's practical peak)."""
    return max(measure_matmul(torch.device("cpu"), dtype, size=size, repeats=3) for size in sizes)


class StepTimer:
    """A fresh model and optimizer of ``config`` that time training steps on given batches."""

    def __init__(self, config: RunConfig, card: dict[str, Any], precision: str, compiled: bool) -> None:
        self.config = config
        self.model = build_model(config)
        self.net = torch.compile(self.model, dynamic=True) if compiled else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        self.autocast: AbstractContextManager = (
            torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        )
        regression = config.model.task == "regression"
        self.borders = torch.tensor(card["borders"]) if regression else None
        self.tails = tuple(card["tail_scales"]) if regression and card.get("tail_scales") else None

    def gradient(self, batch: Any, n_train: int) -> float:
        return backward(self.config, self.net, batch, n_train, 1, self.autocast, self.borders, self.tails)

    def step(self, batch: Any, n_train: int) -> float:
        """Seconds of one optimizer step on ``batch``."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self.gradient(batch, n_train)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        return time.perf_counter() - start


def flops(config: RunConfig, card: dict[str, Any], batch: Any, n_train: int) -> float:
    """FLOPs of forward + backward of one step (the optimizer's elementwise work left out)."""
    timer = StepTimer(config, card, "fp32", compiled=False)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        timer.gradient(batch, n_train)
    return float(counter.get_total_flops())


def pipeline(
    config: RunConfig, card: dict[str, Any], steps: range, precision: str, workers: int, nice: int
) -> dict[str, float]:
    """Seconds per step and the share spent waiting for data, through the trainer's DataLoader,
    with steps in ``precision`` ("fp32" or "bf16")."""
    timer = StepTimer(config, card, precision, compiled=False)
    loader = step_loader(config, range(config.train.batch_size), steps, workers, nice)
    waited = 0.0
    start = tick = time.perf_counter()
    for batch, n_train in loader:
        waited += time.perf_counter() - tick
        timer.step(batch, n_train)
        tick = time.perf_counter()
    total = time.perf_counter() - start
    return {"step_s": total / len(steps), "wait_share": waited / total}


def time_variant(
    config: RunConfig, card: dict[str, Any], batches: list[Any], step_flops: list[float], variant: str
) -> dict[str, float]:
    """Mean step time and GFLOP/s of one variant ("fp32", "bf16" autocast, "compiled"): the faster
    of two passes over the batches, after a warm-up on the first batch (on every batch for
    "compiled": each new shape compiles)."""
    timer = StepTimer(config, card, "bf16" if variant == "bf16" else "fp32", compiled=variant == "compiled")
    warm_up = sum(timer.step(batch, n_train) for batch, n_train in (batches if variant == "compiled" else batches[:1]))
    seconds = min(sum(timer.step(batch, n_train) for batch, n_train in batches) for _ in range(2))
    return {"step_s": seconds / len(batches), "gflops": sum(step_flops) / seconds / 1e9, "warm_up_s": warm_up}


def measure(name: str, n_steps: int, variants: tuple[str, ...]) -> dict[str, Any]:
    """Every figure of one shipped model size."""
    card = pfn.load(name).card
    config = from_dict({key: card[key] for key in ("name", "prior", "model", "train")})
    steps = range(config.train.steps - n_steps, config.train.steps)
    everyone = range(config.train.batch_size)
    sample_s, batches = [], []
    for step in steps:
        start = time.perf_counter()
        batches.append(draw_step(config, step, everyone))
        sample_s.append(time.perf_counter() - start)
    step_flops = [flops(config, card, batch, n_train) for batch, n_train in batches]
    tokens = sum(batch.x.shape[0] * batch.x.shape[1] for batch, _ in batches)
    compute = {variant: time_variant(config, card, batches, step_flops, variant) for variant in variants}
    best = min(compute.values(), key=lambda v: v["step_s"])
    # whole steps in the faster of fp32 and bf16 (a bf16 machine trains in bf16 where it wins)
    precision = min((v for v in ("fp32", "bf16") if v in compute), key=lambda v: compute[v]["step_s"])
    return {
        "model": {key: card["model"][key] for key in ("d_model", "n_layers", "n_features", "n_outputs")},
        "parameters": sum(p.numel() for p in build_model(config).parameters()),
        "batch_size": config.train.batch_size,
        "tokens_per_step": tokens / n_steps,
        "datasets_per_s": config.train.batch_size / best["step_s"],
        "tokens_per_s": tokens / n_steps / best["step_s"],
        "gflop_per_step": float(np.mean(step_flops)) / 1e9,
        "sample_s": float(np.mean(sample_s)),
        "compute": compute,
        "pipeline_precision": precision,
        "pipeline": {name: pipeline(config, card, steps, precision, *setting) for name, setting in PIPELINES.items()},
    }


def run(out: Path, quick: bool = False, model: str | None = None) -> dict[str, Any]:
    """Measure every model of MODELS (or ``model``) over 24 steps; ``quick``: linear, 2 steps.

    bf16 autocast is timed only where the bf16 matmul peak is at least half the fp32 one (else
    it cannot win, and on CPUs without bf16 units it would take minutes); ``torch.compile`` on
    the first model only (compiling every shape takes minutes on a small CPU)."""
    names = [model] if model else (["linear"] if quick else list(MODELS))
    n_steps, sizes = (2, (256, 512)) if quick else (24, (512, 1024, 2048))
    peaks = {"fp32": peak_gflops(torch.float32, sizes), "bf16": peak_gflops(torch.bfloat16, sizes[:2])}
    variants = ("fp32", "bf16") if peaks["bf16"] >= peaks["fp32"] / 2 else ("fp32",)
    models = {
        name: measure(name, n_steps, variants + ("compiled",) if i == 0 and not quick else variants)
        for i, name in enumerate(names)
    }
    peak = max(peaks.values())
    for row in models.values():
        row["peak_share"] = max(v["gflops"] for v in row["compute"].values()) / peak
        row["sampler_share"] = min(p["wait_share"] for p in row["pipeline"].values())
        # what the sampler costs a whole step on this machine, waiting or competing for cores
        fastest_step = min(p["step_s"] for p in row["pipeline"].values())
        row["step_over_compute"] = fastest_step / min(v["step_s"] for v in row["compute"].values())
    result = {
        "benchmark": "throughput",
        "quick": quick,
        "steps": n_steps,
        "peak_gflops": peaks,
        "models": models,
        "targets": {
            name: {
                "peak_share": row["peak_share"],
                "peak_share_met": row["peak_share"] >= TARGET_PEAK_SHARE,
                "sampler_share": row["sampler_share"],
                "sampler_share_met": row["sampler_share"] <= TARGET_SAMPLER_SHARE,
            }
            for name, row in models.items()
            if name.startswith("tabular")
        },
        "environment": environment(),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "throughput.json", result)
    _plot(result, out / "throughput.png")
    print(summary(result))
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    models = result["models"]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    names = list(models)
    variants = sorted({v for row in models.values() for v in row["compute"]})
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        values = [models[n]["compute"].get(variant, {}).get("gflops", 0.0) for n in names]
        ax.bar(np.arange(len(names)) + i * width, values, width, label=f"training step, {variant}")
    for dtype, style in (("fp32", "-"), ("bf16", ":")):
        ax.axhline(result["peak_gflops"][dtype], color="k", linestyle=style, label=f"matmul peak, {dtype}")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"Training step against the matmul peak ({result['environment']['torch_threads']} threads)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(result: dict[str, Any]) -> str:
    peaks = result["peak_gflops"]
    lines = [f"matmul peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s"]
    for name, row in result["models"].items():
        variants = ", ".join(
            f"{v} {c['step_s'] * 1e3:.0f} ms ({c['gflops']:.1f} GFLOP/s)" for v, c in row["compute"].items()
        )
        pipes = ", ".join(
            f"{w}: {p['step_s'] * 1e3:.0f} ms/step, waits {p['wait_share']:.0%}" for w, p in row["pipeline"].items()
        )
        lines.append(
            f"{name}: {row['parameters']:,} parameters, {row['tokens_per_step']:.0f} rows/step, "
            f"{row['gflop_per_step']:.2f} GFLOP/step; {variants}; {row['peak_share']:.0%} of peak; "
            f"{row['datasets_per_s']:.0f} datasets/s, {row['tokens_per_s']:.0f} tokens/s; "
            f"sampler {row['sample_s'] * 1e3:.0f} ms/step; pipeline ({row['pipeline_precision']}) {pipes}; "
            f"fastest pipeline step = {row['step_over_compute']:.2f} × compute alone"
        )
    for name, target in result["targets"].items():
        lines.append(
            f"target {name}: peak share {target['peak_share']:.0%} (>= {TARGET_PEAK_SHARE:.0%}: "
            f"{'met' if target['peak_share_met'] else 'not met'}), sampler share {target['sampler_share']:.0%} "
            f"(<= {TARGET_SAMPLER_SHARE:.0%}: {'met' if target['sampler_share_met'] else 'not met'})"
        )
    return "\n".join(lines)
