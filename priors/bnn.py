"""Bayesian-neural-network prior: a random MLP per dataset (Müller et al., 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from priors.base import FunctionPrior, Hyper, add_noise, check_positive, check_range, draw

ACTIVATIONS = ("tanh", "relu", "identity")


@dataclass(frozen=True)
class BNNPrior(FunctionPrior):
    """y = MLP(x) + noise with per-dataset depth, width, activation, weight scale and noise.

    Depth (hidden layers) and width are uniform on their ranges; the activation is drawn from
    ``activations``; weights are N(0, weight_std² / fan_in), each kept with probability
    1 - dropout (dropout drawn per dataset); Gaussian noise of std ``hidden_noise`` is added
    after every hidden layer and of std ``noise`` to the output.
    """

    name: ClassVar[str] = "bnn"

    min_layers: int = 1
    max_layers: int = 3
    min_width: int = 4
    max_width: int = 32
    activations: tuple[str, ...] = ACTIVATIONS
    weight_std: Hyper = 1.0
    dropout: Hyper = 0.0
    hidden_noise: Hyper = 0.0
    noise: Hyper = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "min_layers", "max_layers")
        check_range(self, "min_width", "max_width")
        unknown = set(self.activations) - set(ACTIVATIONS)
        if not self.activations or unknown:
            raise ValueError(f"activations must be a non-empty subset of {ACTIVATIONS}, got {self.activations}")
        check_positive("weight_std", self.weight_std)
        check_positive("dropout", self.dropout, allow_zero=True)
        check_positive("hidden_noise", self.hidden_noise, allow_zero=True)
        check_positive("noise", self.noise, allow_zero=True)
        if isinstance(self.dropout, (int, float)) and self.dropout >= 1:
            raise ValueError(f"dropout must be < 1, got {self.dropout}")

    def targets(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        return self.noisy_targets(x, used, generator)[0]

    def noisy_targets(self, x: Tensor, used: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The targets and the network's output before the output noise (hidden-unit noise,
        if any, stays in: it is part of the function)."""
        batch, _, f = x.shape
        w_max = self.max_width
        depth = torch.randint(self.min_layers, self.max_layers + 1, (batch,), generator=generator)  # [B]
        width = torch.randint(self.min_width, w_max + 1, (batch,), generator=generator)  # [B]
        choice = torch.randint(0, len(self.activations), (batch,), generator=generator)  # [B]
        activation = torch.tensor([ACTIVATIONS.index(a) for a in self.activations])[choice]  # [B]
        weight_std = draw(self.weight_std, batch, generator).float()[:, None, None]  # [B, 1, 1]
        keep = 1.0 - draw(self.dropout, batch, generator).float().clamp(0.0, 0.99)[:, None, None]  # [B, 1, 1]
        hidden_noise = draw(self.hidden_noise, batch, generator).float()[:, None, None]  # [B, 1, 1]
        units = (torch.arange(w_max)[None, :] < width[:, None]).float()[:, None, :]  # [B, 1, W]

        def layer(h: Tensor, fan_in: Tensor, n_out: int) -> Tensor:
            w = torch.randn(batch, h.shape[-1], n_out, generator=generator)  # [B, in, out]
            w = w * (torch.rand(w.shape, generator=generator) < keep).float()
            scale = weight_std / torch.sqrt(keep * fan_in.float().clamp_min(1)[:, None, None])  # [B, 1, 1]
            return h @ (w * scale)  # [B, N, out]

        pre = layer(x, used, w_max) * units  # [B, N, W]
        last = torch.zeros_like(pre)  # [B, N, W], the last hidden layer's output
        for i in range(self.max_layers):
            a = torch.stack([torch.tanh(pre), torch.relu(pre), pre])  # [3, B, N, W]
            post = a.gather(0, activation.view(1, batch, 1, 1).expand(1, *pre.shape)).squeeze(0)
            post = (post + hidden_noise * torch.randn(post.shape, generator=generator)) * units
            last = torch.where((depth == i + 1)[:, None, None], post, last)
            if i + 1 < self.max_layers:
                pre = layer(post, width, w_max) * units
        y = layer(last, width, 1).squeeze(-1)  # [B, N]
        return add_noise(y.double(), draw(self.noise, batch, generator), generator), y.double()
