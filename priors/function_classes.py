"""The function classes of in-context-learning studies (Garg et al., 2022).

Each draws a random function per dataset of the used features and adds optional Gaussian
output noise of standard deviation ``noise``. Inputs default to N(0, I).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from priors.base import FunctionPrior, Hyper, Inputs, add_noise, check_positive, draw, feature_mask


@dataclass(frozen=True)
class NoisyFunction(FunctionPrior):
    """A random function plus Gaussian noise of standard deviation ``noise`` (a float, or a
    hyperprior drawn per dataset)."""

    inputs: Inputs = "normal"
    noise: Hyper = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("noise", self.noise, allow_zero=True)

    def targets(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        y = self.function(x, used, generator)  # [B, N]
        if isinstance(self.noise, (int, float)):
            return add_noise(y, self.noise, generator) if self.noise > 0 else y
        return add_noise(y, draw(self.noise, x.shape[0], generator).to(y.dtype), generator)  # std [B]

    @abstractmethod
    def function(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        """The noise-free targets [B, N] of inputs x [B, N, F]."""


@dataclass(frozen=True)
class LinearPrior(NoisyFunction):
    """y = w · x with w ~ N(0, weight_std² I) over the used features."""

    name: ClassVar[str] = "linear"
    weight_std: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("weight_std", self.weight_std)

    def function(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        w = self.weight_std * torch.randn(x.shape[0], x.shape[2], generator=generator)  # [B, F]
        return torch.einsum("bnf,bf->bn", x, w * feature_mask(used, x.shape[2]))


@dataclass(frozen=True)
class SparseLinearPrior(NoisyFunction):
    """y = w · x where only ``k`` random used features have N(0, 1) weights."""

    name: ClassVar[str] = "sparse_linear"
    k: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def function(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        batch, _, f = x.shape
        mask = feature_mask(used, f)  # [B, F]
        keys = torch.rand(batch, f, generator=generator) + (1 - mask) * 2  # used features first
        chosen = keys.argsort(dim=1)[:, : self.k]  # [B, k]
        support = torch.zeros(batch, f).scatter_(1, chosen, 1.0) * mask  # [B, F]
        w = torch.randn(batch, f, generator=generator) * support  # [B, F]
        return torch.einsum("bnf,bf->bn", x, w)


@dataclass(frozen=True)
class ReLUNetPrior(NoisyFunction):
    """f(x) = sqrt(2 / hidden) · Σ_j a_j ReLU(w_j · x) with N(0, 1) weights."""

    name: ClassVar[str] = "relu2"
    hidden: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")

    def function(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        batch, _, f = x.shape
        w = torch.randn(batch, f, self.hidden, generator=generator)  # [B, F, H]
        a = torch.randn(batch, self.hidden, generator=generator)  # [B, H]
        h = torch.relu(x @ w)  # [B, N, H]; padded features are zero
        return math.sqrt(2.0 / self.hidden) * torch.einsum("bnh,bh->bn", h, a)


@dataclass(frozen=True)
class TreePrior(NoisyFunction):
    """A complete binary tree of ``depth`` splits on random used features, N(0, 1) leaf values;
    with ``n_trees`` > 1 the sum of that many independent trees over sqrt(n_trees) (an additive,
    boosting-like function of unit variance).

    Thresholds are the inputs' centre (0 for normal, correlated or categorical, 0.5 for uniform
    inputs) as in Garg et al., or with ``random_thresholds`` drawn from the input distribution.
    """

    name: ClassVar[str] = "tree"
    depth: int = 4
    random_thresholds: bool = False
    n_trees: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.depth <= 12:
            raise ValueError(f"depth must be in 1..12, got {self.depth}")
        if not 1 <= self.n_trees <= 256:
            raise ValueError(f"n_trees must be in 1..256, got {self.n_trees}")

    def function(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        total = self._tree(x, used, generator)  # [B, N]
        for _ in range(self.n_trees - 1):
            total = total + self._tree(x, used, generator)
        return total / math.sqrt(self.n_trees)

    def _tree(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        """One random tree's values [B, N] at inputs x [B, N, F]."""
        batch, n_rows, _ = x.shape
        n_internal = 2**self.depth - 1
        u = torch.rand(batch, n_internal, generator=generator)  # [B, I]
        split_feature = (u * used[:, None]).long()  # [B, I], a used feature per node
        if self.random_thresholds:
            if self.inputs != "uniform":
                threshold = torch.randn(batch, n_internal, generator=generator)
            else:
                threshold = torch.rand(batch, n_internal, generator=generator)
        else:
            threshold = torch.full((batch, n_internal), 0.5 if self.inputs == "uniform" else 0.0)
        leaves = torch.randn(batch, 2**self.depth, generator=generator)  # [B, L]
        node = torch.zeros(batch, n_rows, dtype=torch.long)  # [B, N], heap index of current node
        for _ in range(self.depth):
            feature = split_feature.gather(1, node)  # [B, N]
            value = x.gather(2, feature[..., None]).squeeze(-1)  # [B, N]
            go_right = (value > threshold.gather(1, node)).long()  # [B, N]
            node = 2 * node + 1 + go_right
        return leaves.gather(1, node - n_internal)  # [B, N]
