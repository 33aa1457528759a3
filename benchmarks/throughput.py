"""Training throughput (``pfn bench throughput``): how close a prior-fitting step comes to the
machine's matmul peak, and how long it waits for the prior sampler.

For each shipped model size (its card holds the config that trained it), a few training steps
are drawn exactly as the trainer draws them (:func:`pfn.train.draw_step`, at step numbers past
every row curriculum) and run through the trainer's own step (:func:`pfn.train.backward`,
gradient clipping, AdamW), side by side in one run:

- compute: forward + backward + optimizer, in fp32, with bf16 autocast (where its matmul peak
  makes it a contender), and in the faster of the two under ``torch.compile``
  (``train.compile``); FLOPs of forward + backward counted by torch's ``FlopCounterMode``
  (attention included) give the achieved GFLOP/s, set against the peak of a square matmul in
  fp32 and in bf16 measured in the same run;
- pipeline: whole steps (eager, in whichever of fp32 and bf16 made the faster step above, as
  the trainer's ``precision = "auto"`` picks) through the trainer's DataLoader with the prior
  sampled in the training loop, in a worker process, and in a worker process at lower
  priority; the share of step time spent waiting for data (the sampler share of the target),
  and the fastest whole step over the eager compute alone in the same precision (what the
  sampler costs where a worker competes with the model for the cores).

Writes ``throughput.json`` and ``throughput.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import pfn
from benchmarks.common import environment, pyplot
from pfn.checkpoint import write_json
from pfn.config import RunConfig, from_dict
from pfn.model import picks_plain_attention, plain_attention
from pfn.train import backward, build_model, build_optimizer, draw_step, measure_matmul, precision_context, step_loader

MODELS = ("tabular-clf", "tabular-reg", "linear", "gp")
# (rows N, train rows n) of one layer's attention, 16 datasets, the tabular models' 4 heads of 32
ATTENTION_SIZES = ((64, 32), (256, 128), (512, 256), (1024, 128), (1024, 256), (1024, 512), (1152, 1000))
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
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


def peak_gflops(dtype: torch.dtype, sizes: tuple[int, ...], trials: int = 5) -> float:
    """The best GFLOP/s of square matmuls of the given sizes over ``trials`` timings each (this
    machine's practical peak; a single timing can land low on a noisy machine, which would
    inflate every share of it)."""
    cpu = torch.device("cpu")
    return max(measure_matmul(cpu, dtype, size=size, repeats=3) for size in sizes for _ in range(trials))


def attention_kernels(sizes: tuple[tuple[int, int], ...], precisions: tuple[str, ...]) -> list[dict[str, Any]]:
    """Milliseconds of forward + backward of one layer's attention, with its inputs made as a
    block makes them (16 datasets of 128-wide rows, a projection, 4 heads of 32, the train rows'
    keys and values as views), by torch's fused kernel and by plain ops (best of 3), per size
    and precision, and which of the two the model's rule (:func:`pfn.model.attention`) picks."""
    kernels = {"fused": torch.nn.functional.scaled_dot_product_attention, "plain": plain_attention}
    rows = []
    for precision in precisions:
        for n_rows, n_train in sizes:
            ms = {name: _attention_ms(kernel, precision, n_rows, n_train) for name, kernel in kernels.items()}
            q, k = (torch.zeros(16, 4, n, 32, dtype=PRECISIONS[precision]) for n in (n_rows, n_train))
            picked = "plain" if picks_plain_attention(q, k) else "fused"
            rows.append({"precision": precision, "rows": n_rows, "train_rows": n_train, **ms, "picked": picked})
    return rows


def _attention_ms(kernel: Any, precision: str, n_rows: int, n_train: int, repeats: int = 3) -> float:
    """Best milliseconds of one attention layer's forward + backward, after one warm-up."""
    x = torch.randn(16, n_rows, 128, requires_grad=True)  # [B, N, D]
    weight = torch.randn(384, 128) * 0.1

    def heads(t: Tensor) -> Tensor:
        return t.view(16, t.shape[1], 4, 32).transpose(1, 2)  # [B, H, ., D/H]

    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with precision_context(torch.device("cpu"), precision):
            q, k, v = torch.nn.functional.linear(x, weight).split(128, dim=-1)  # 3 x [B, N, D]
            out = kernel(heads(q), heads(k[:, :n_train]), heads(v[:, :n_train]))  # [B, H, N, D/H]
        out.float().sum().backward()
        times.append(time.perf_counter() - start)
    return min(times[1:]) * 1e3


class StepTimer:
    """A fresh model and optimizer of ``config`` that time training steps on given batches."""

    def __init__(self, config: RunConfig, card: dict[str, Any], precision: str, compiled: bool) -> None:
        self.config = config
        self.model = build_model(config)
        if compiled:  # a fresh compile cache: dynamo's recompile limit counts graphs of every model
            torch._dynamo.reset()
        self.net = torch.compile(self.model, dynamic=True) if compiled else self.model
        self.optimizer = build_optimizer(config.train, self.model)
        self.autocast = precision_context(torch.device("cpu"), precision)
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
    config: RunConfig, card: dict[str, Any], batches: list[Any], step_flops: list[float], precision: str, compiled: bool
) -> dict[str, float]:
    """Mean step time and GFLOP/s in ``precision`` ("fp32" or "bf16" autocast), eager or under
    ``torch.compile``: each batch's fastest of three passes (as the matmul peak is the fastest of
    its trials: what the step achieves, not what other tenants of a shared machine cost it),
    after a warm-up on the first batch (on every batch when compiled: a new shape can compile)."""
    timer = StepTimer(config, card, precision, compiled)
    warm_up = sum(timer.step(batch, n_train) for batch, n_train in (batches if compiled else batches[:1]))
    passes = [[timer.step(batch, n_train) for batch, n_train in batches] for _ in range(3)]
    seconds = sum(min(times) for times in zip(*passes, strict=True))
    return {"step_s": seconds / len(batches), "gflops": sum(step_flops) / seconds / 1e9, "warm_up_s": warm_up}


def measure(name: str, n_steps: int, precisions: tuple[str, ...], compiled: bool) -> dict[str, Any]:
    """Every figure of one shipped model size; ``compiled``: also time the faster precision
    under ``torch.compile``."""
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
    compute = {p: time_variant(config, card, batches, step_flops, p, compiled=False) for p in precisions}
    # whole steps in the faster of fp32 and bf16, as the trainer's precision = "auto" picks
    precision = min(compute, key=lambda p: compute[p]["step_s"])
    if compiled:
        compute[f"{precision}, compiled"] = time_variant(config, card, batches, step_flops, precision, compiled=True)
    best = min(compute.values(), key=lambda v: v["step_s"])
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
    """Measure every model of MODELS (or ``model``) over 24 steps, and the attention kernels at
    ATTENTION_SIZES; ``quick``: linear, 2 steps, the smallest attention size.

    bf16 autocast is timed only where the bf16 matmul peak is at least half the fp32 one (else
    it cannot win, and on CPUs without bf16 units it would take minutes); ``torch.compile`` on
    the tabular models only (compiling every shape takes about a minute a model on a small CPU)."""
    names = [model] if model else (["linear"] if quick else list(MODELS))
    n_steps, sizes = (2, (256, 512)) if quick else (24, (512, 1024, 2048))
    peaks = {"fp32": peak_gflops(torch.float32, sizes), "bf16": peak_gflops(torch.bfloat16, sizes[:2])}
    precisions = ("fp32", "bf16") if peaks["bf16"] >= peaks["fp32"] / 2 else ("fp32",)
    models = {
        name: measure(name, n_steps, precisions, compiled=name.startswith("tabular") and not quick) for name in names
    }
    kernels = attention_kernels(ATTENTION_SIZES[:1] if quick else ATTENTION_SIZES, precisions)
    peak = max(peaks.values())
    for row in models.values():
        row["peak_share"] = max(v["gflops"] for v in row["compute"].values()) / peak
        row["sampler_share"] = min(p["wait_share"] for p in row["pipeline"].values())
        # what the sampler costs a whole step on this machine, waiting or competing for cores
        fastest_step = min(p["step_s"] for p in row["pipeline"].values())
        row["step_over_compute"] = fastest_step / row["compute"][row["pipeline_precision"]]["step_s"]
    result = {
        "benchmark": "throughput",
        "quick": quick,
        "steps": n_steps,
        "peak_gflops": peaks,
        "models": models,
        "attention_kernels": kernels,
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
    for row in result["attention_kernels"]:
        lines.append(
            f"attention {row['precision']}, {row['rows']} rows over {row['train_rows']} train rows: fused "
            f"{row['fused']:.1f} ms, plain {row['plain']:.1f} ms; the model runs {row['picked']}"
        )
    for name, target in result["targets"].items():
        lines.append(
            f"target {name}: peak share {target['peak_share']:.0%} (>= {TARGET_PEAK_SHARE:.0%}: "
            f"{'met' if target['peak_share_met'] else 'not met'}), sampler share {target['sampler_share']:.0%} "
            f"(<= {TARGET_SAMPLER_SHARE:.0%}: {'met' if target['sampler_share_met'] else 'not met'})"
        )
    return "\n".join(lines)
