"""Train a PFN on a prior of your own in a few CPU-minutes: random sinusoids.

Run from the repository root:  python docs/examples/custom_prior.py
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

import pfn
from pfn.config import RunConfig, TrainConfig
from pfn.model import ModelConfig
from pfn.train import train
from priors import FunctionPrior
from priors.base import add_noise


@dataclass(frozen=True)
class SinePrior(FunctionPrior):
    """y = a · sin(2π f x + φ) + noise on one U[0, 1] feature, with random a, f, φ per dataset."""

    name: ClassVar[str] = "sine"
    noise: float = 0.1

    def targets(self, x: torch.Tensor, n_features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch = x.shape[0]
        amplitude = 0.5 + torch.rand(batch, 1, generator=generator)  # [B, 1]
        frequency = 0.5 + 2.5 * torch.rand(batch, 1, generator=generator)  # [B, 1]
        phase = 2 * math.pi * torch.rand(batch, 1, generator=generator)  # [B, 1]
        f = amplitude * torch.sin(2 * math.pi * frequency * x[..., 0] + phase)  # [B, N]
        return add_noise(f, self.noise, generator)


def main() -> None:
    torch.set_num_threads(1)
    config = RunConfig(
        name="sine",
        prior=SinePrior(min_features=1, max_features=1),
        model=ModelConfig(task="regression", n_features=1, n_outputs=100, d_model=64, n_layers=3, n_heads=4, d_ff=128),
        train=TrainConfig(
            steps=6000,
            batch_size=16,
            n_rows=60,
            min_train=2,
            max_train=40,
            lr=1e-3,
            warmup_steps=100,
            precision="fp32",
            checkpoint_every=1000,
            log_every=1000,
        ),
    )
    state = train(config, "runs/sine")  # resumes if interrupted
    print("loss curve (step, datasets seen, mean NLL):", state["curve"])

    model = pfn.load("runs/sine")
    rng = np.random.default_rng(0)
    x_train = rng.random((12, 1))
    y_train = np.sin(2 * math.pi * 1.5 * x_train[:, 0]) + 0.1 * rng.standard_normal(12)
    x_test = np.linspace(0, 1, 5)[:, None]
    dist = model.predict(x_train, y_train, x_test)
    band = dist.quantile([0.05, 0.95])
    truth = np.sin(2 * math.pi * 1.5 * x_test[:, 0])
    for x, m, (lo, hi), t in zip(x_test[:, 0], dist.mean().tolist(), band.tolist(), truth, strict=True):
        print(f"x={x:.2f}  mean={m:+.2f}  90% band=[{lo:+.2f}, {hi:+.2f}]  true f={t:+.2f}")


if __name__ == "__main__":
    main()
