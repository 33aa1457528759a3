"""A prior over objective functions for Bayesian optimisation on [0, 1]^d (after PFNs4BO's HEBO+).

Each dataset is one objective: f ~ GP(0, Matérn-5/2) with ARD lengthscales, drawn on inputs
passed through a per-dimension Kumaraswamy warp, plus (sometimes) a quadratic bowl, observed
with Gaussian noise. Mixed with :class:`priors.BNNPrior` draws (non-stationary functions) and
z-scored per dataset in the recipe (``configs/bo.toml``), as :mod:`pfn.bo` standardises the
observed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from priors.base import FunctionPrior, Hyper, add_noise, check_positive, draw, feature_mask
from priors.gp import JITTER, GPPrior


@dataclass(frozen=True)
class BOGPPrior(FunctionPrior):
    """y = outputscale · f(w(x)) + bowl(x) + noise on x ~ U[0, 1]^d.

    - lengthscales (ARD, one per used dimension): log ℓ ~ N(log(lengthscale_median) +
      ½ log d, lengthscale_spread²), so that functions of many dimensions are not rougher than
      those of few (Hvarfner et al., 2024: the ½ log d scaling);
    - warping (probability ``warp_probability`` per dataset): w(x) = 1 - (1 - x^a)^b per
      dimension (the Kumaraswamy CDF), log a, log b ~ N(0, warp_spread²): optima pushed towards
      an edge, regions of fast and slow change;
    - outputscale and noise (standard deviation): a float or a hyperprior, per dataset;
    - bowl (probability ``bowl_probability``): c · Σ_j v_j (x_j - m_j)², m ~ U[0, 1]^d,
      v_j ~ U(0, 1), c ~ U(0, 2 · outputscale): an objective with a basin around its optimum.
    """

    name: ClassVar[str] = "bo_gp"

    lengthscale_median: float = 0.5
    lengthscale_spread: float = 0.75
    warp_probability: float = 0.5
    warp_spread: float = 0.5
    outputscale: Hyper = 1.0
    noise: Hyper = 0.05
    bowl_probability: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inputs != "uniform":
            raise ValueError(f"BOGPPrior draws inputs on [0, 1]^d: inputs must be 'uniform', got {self.inputs!r}")
        check_positive("lengthscale_median", self.lengthscale_median)
        check_positive("lengthscale_spread", self.lengthscale_spread, allow_zero=True)
        check_positive("warp_spread", self.warp_spread, allow_zero=True)
        check_positive("outputscale", self.outputscale)
        check_positive("noise", self.noise, allow_zero=True)
        for name in ("warp_probability", "bowl_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def targets(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        return self.noisy_targets(x, used, generator)[0]

    def noisy_targets(self, x: Tensor, used: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        batch, _, f = x.shape
        x = x.double()
        mask = feature_mask(used, f).double()  # [B, F]
        # Kumaraswamy warp of each used dimension (padded columns stay zero: 1 - (1 - 0)^b = 0)
        warp = (torch.rand(batch, 1, generator=generator) < self.warp_probability).double()  # [B, 1]
        log_ab = self.warp_spread * torch.randn(batch, 2, f, generator=generator, dtype=torch.float64)  # [B, 2, F]
        a, b = (1 + warp[:, :, None] * log_ab.expm1()).unbind(1)  # [B, F] each, 1 where not warped
        warped = 1 - (1 - x.clamp(0, 1) ** a[:, None, :]).clamp_min(0) ** b[:, None, :]  # [B, N, F]
        # ARD lengthscales, median growing as sqrt(d)
        loc = math.log(self.lengthscale_median) + 0.5 * used.double().log()  # [B]
        log_ls = loc[:, None] + self.lengthscale_spread * torch.randn(
            batch, f, generator=generator, dtype=torch.float64
        )
        lengthscale = log_ls.exp().clamp(0.01, 100.0)  # [B, F]
        outputscale = draw(self.outputscale, batch, generator)  # [B]
        kernel = GPPrior(kernel="matern52")
        cov = kernel.covariance(warped, warped, lengthscale, outputscale)  # [B, N, N]
        cov.diagonal(dim1=-2, dim2=-1).add_(JITTER * outputscale[:, None])
        chol = torch.linalg.cholesky(cov)  # [B, N, N]
        z = torch.randn(batch, x.shape[1], 1, generator=generator, dtype=torch.float64)  # [B, N, 1]
        y = (z.mT @ chol.mT).squeeze(1)  # [B, N]
        # a quadratic bowl around a random centre
        bowl = (torch.rand(batch, generator=generator) < self.bowl_probability).double()  # [B]
        centre = torch.rand(batch, 1, f, generator=generator, dtype=torch.float64)  # [B, 1, F]
        weight = torch.rand(batch, 1, f, generator=generator, dtype=torch.float64) * mask[:, None, :]  # [B, 1, F]
        depth = 2 * outputscale * torch.rand(batch, generator=generator, dtype=torch.float64) * bowl  # [B]
        y = y + depth[:, None] * (weight * (x - centre) ** 2).sum(-1)  # [B, N]
        return add_noise(y, draw(self.noise, batch, generator), generator), y
