"""Output heads: the bar ("Riemann") distribution for regression and equal-mass borders.

A bar distribution over K buckets with borders b_0 < ... < b_K puts probability p_k on bucket
k. Inner buckets spread it uniformly. The two outer buckets become half-normals, starting at
the inner border and extending to ∓infinity (full support). Their scales are given
(``tail_scales``, which training derives from the prior, see :func:`prior_tail_scales`, and the
estimators from the train targets, see :func:`dataset_tail_scales`) or by
default chosen so that half of the tail's mass lies within the bucket's width:
s = width / Φ⁻¹(0.75). The scales do not change what the bucket probabilities mean (a tail's
density shape is a constant of the loss given the bucket), only the density, mean and quantiles
within the tails.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

HALF_MASS_Z = 0.6744897501960817  # Φ⁻¹(0.75): a half-normal has half its mass below this many scales
TO_SCALE = math.sqrt(math.pi / 2)  # a half-normal's scale over its mean
TAIL_PRIOR_ROWS = 2.0  # the prior's tail scale counts as this many targets (see dataset_tail_scales)
ArrayLike = Tensor | np.ndarray | float | list


def equal_mass_borders(samples: Tensor, n_buckets: int) -> Tensor:
    """K + 1 borders [K + 1] whose buckets hold equal shares of ``samples`` (any shape)."""
    if n_buckets < 2:
        raise ValueError(f"n_buckets must be >= 2, got {n_buckets}")
    flat = samples.flatten().double()
    if flat.numel() < n_buckets:
        raise ValueError(f"need at least {n_buckets} samples for {n_buckets} buckets, got {flat.numel()}")
    borders = torch.quantile(flat, torch.linspace(0, 1, n_buckets + 1, dtype=torch.float64))
    if not bool((borders.diff() > 0).all()):
        raise ValueError("prior samples have repeated values, so equal-mass borders are not distinct")
    return borders.float()


def prior_tail_scales(samples: Tensor, borders: Tensor) -> tuple[float, float]:
    """Half-normal scales (left, right) for the outer buckets whose means match the mean excess
    of ``samples`` beyond the inner outer borders (borders[1] and borders[-2]): a half-normal of
    scale s has mean s·sqrt(2/π). The equal-mass outer borders are the samples' extremes, so
    the default width rule makes the tails as wide as the most extreme draw."""
    below, above = _excess(samples, borders)
    if below.numel() == 0 or above.numel() == 0:
        raise ValueError("no samples lie beyond the outer borders; draw more samples to estimate the tails")
    return float(below.mean()) * TO_SCALE, float(above.mean()) * TO_SCALE


def dataset_tail_scales(
    targets: Tensor, borders: Tensor, prior: tuple[float, float], prior_rows: float = TAIL_PRIOR_ROWS
) -> tuple[float, float]:
    """The tail scales (left, right) for one dataset's (standardised) targets: per tail, the
    mean excess of its targets beyond the inner outer border, as a half-normal scale (see
    :func:`prior_tail_scales`), pooled with the ``prior`` scale as if that came from
    ``prior_rows`` targets more. The prior's alone where no target lies beyond. A model knows
    how likely a test row is to fall in a tail; how far out it lies is the dataset's own (a
    spike of zeros five standard deviations below the rest of the targets, say)."""
    out = []
    for excess, scale in zip(_excess(targets, borders), prior, strict=True):
        n = excess.numel()
        out.append((float(excess.sum()) * TO_SCALE + prior_rows * scale) / (n + prior_rows))
    return out[0], out[1]


def _excess(samples: Tensor, borders: Tensor) -> tuple[Tensor, Tensor]:
    """How far the samples beyond each inner outer border lie beyond it: below [n_lo], above [n_hi]."""
    flat = torch.as_tensor(samples).flatten().double()
    lo, hi = float(borders[1]), float(borders[-2])
    return lo - flat[flat < lo], flat[flat > hi] - hi


def smoothing_matrix(borders: Tensor, width: float) -> Tensor:
    """[K, K] (float64): row i is where smoothing moves inner bucket i's probability, the masses
    that N(midpoint_i, width²) puts in each bucket (the outer buckets take what lies beyond the
    inner borders); the outer buckets keep their own. Rows sum to 1, so ``probs @ matrix`` are
    bucket probabilities again: a density convolved with the kernel where buckets are narrower
    than ``width``, nearly unchanged where they are wider."""
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width (the smoothing kernel's standard deviation) must be positive and finite, got {width}")
    b = borders.double().cpu()
    mids = (b[1:] + b[:-1]) / 2  # [K]
    cdf = torch.special.ndtr((b[None, 1:-1] - mids[:, None]) / width)  # [K, K - 1]
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf, torch.ones_like(cdf[:, :1])], dim=1)  # [K, K + 1]
    matrix = cdf.diff(dim=1)  # [K, K]
    matrix[0], matrix[-1] = 0.0, 0.0
    matrix[0, 0] = matrix[-1, -1] = 1.0
    return matrix


def smoothed_logits(logits: Tensor, matrix: Tensor) -> Tensor:
    """Logits [..., K] of the bucket probabilities ``softmax(logits) @ matrix`` (a
    :func:`smoothing_matrix`), in the logits' dtype; computed in float64 and floored at 1e-300."""
    probs = logits.double().softmax(-1) @ matrix.to(logits.device)  # [..., K]
    return probs.clamp_min(1e-300).log().to(logits.dtype)


class BarDistribution:
    """A batch of bar distributions: borders [K + 1], logits [..., K] -> batch shape [...];
    ``tail_scales`` (left, right) are the outer half-normals' scales (default: the width rule).

    Methods take numpy arrays, tensors or floats and return tensors of the batch shape
    (``quantile`` with several levels appends them as a last dimension; ``sample(n)``
    prepends n).
    """

    def __init__(self, borders: Tensor, logits: Tensor, tail_scales: tuple[float, float] | None = None) -> None:
        for name, t in (("borders", borders), ("logits", logits)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {_describe(t)}")
        if borders.ndim != 1 or borders.numel() < 3:
            raise ValueError(f"borders must be 1-D with at least 3 entries, got shape {tuple(borders.shape)}")
        if logits.ndim == 0 or logits.shape[-1] != borders.numel() - 1:
            raise ValueError(
                f"logits [..., K] must have K = {borders.numel() - 1} buckets (one fewer than the borders), "
                f"got shape {tuple(logits.shape)}"
            )
        self.borders = borders.to(logits.device, logits.dtype)  # [K + 1]
        self.logits = logits  # [..., K]
        self.widths = self.borders.diff()  # [K]
        if not (bool((self.widths > 0).all()) and math.isfinite(float(self.borders.abs().max()))):
            raise ValueError(f"borders must be finite and strictly increasing in {logits.dtype}")
        if tail_scales is None:
            self.left_scale = self.widths[0] / HALF_MASS_Z
            self.right_scale = self.widths[-1] / HALF_MASS_Z
        else:
            scales = _numbers(tail_scales, "tail_scales", self.logits)
            if scales.shape != (2,) or not 0 < float(scales.min()) <= float(scales.max()) < math.inf:  # NaN fails
                raise ValueError(
                    f"tail_scales must be two positive numbers (left, right), finite in {logits.dtype}; "
                    f"got {tail_scales!r}"
                )
            self.left_scale, self.right_scale = scales.unbind()

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:-1]

    @property
    def probs(self) -> Tensor:
        """Bucket probabilities [..., K]."""
        return self.logits.softmax(-1)

    def _values(self, value: ArrayLike, name: str) -> Tensor:
        """``value`` as a tensor that broadcasts against the batch shape, without NaN."""
        t = _numbers(value, name, self.logits)
        try:  # numpy's check: torch.broadcast_shapes imports torch._refs (a quarter second) on first use
            np.broadcast_shapes(t.shape, self.batch_shape)
        except ValueError:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}, which does not broadcast against the batch shape "
                f"{tuple(self.batch_shape)}: give a scalar, one value per distribution (shape "
                f"{tuple(self.batch_shape)}) or values of shape [..., {', '.join(map(str, self.batch_shape))}]"
            ) from None
        if bool(t.isnan().any()):
            raise ValueError(f"{name} contains NaN")
        return t

    def _bucket(self, y: Tensor) -> Tensor:
        """Bucket index of y (any shape) in 0..K-1; values beyond the outer borders go to the tails."""
        return torch.bucketize(y, self.borders[1:-1].contiguous())

    def _tails(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """Whether bucket indices k are the left and the right (half-normal) outer bucket."""
        return k == 0, k == self.widths.numel() - 1

    def logpdf(self, y: ArrayLike) -> Tensor:
        """Log density at y (broadcast against the batch shape; -inf at ±inf)."""
        y = self._values(y, "y")
        log_probs = self.logits.log_softmax(-1)  # [..., K]
        y, log_probs = torch.broadcast_tensors(y[..., None], log_probs)
        y = y[..., 0].contiguous()
        k = self._bucket(y)
        log_p = log_probs.gather(-1, k[..., None]).squeeze(-1)
        log_density = log_p - self.widths[k].log()  # uniform within a bucket
        left, right = self._tails(k)
        if bool((left | right).any()):  # the outer buckets' half-normals, skipped when no y lies in them
            left_tail = log_p + _half_normal_logpdf(self.borders[1] - y, self.left_scale)
            right_tail = log_p + _half_normal_logpdf(y - self.borders[-2], self.right_scale)
            log_density = torch.where(left, left_tail, torch.where(right, right_tail, log_density))
        return log_density

    def nll(self, y: ArrayLike) -> Tensor:
        """Negative log density at y: the prior-fitting loss."""
        return -self.logpdf(y)

    def cdf(self, y: ArrayLike) -> Tensor:
        """P(Y <= y) (broadcast against the batch shape)."""
        y = self._values(y, "y")
        probs = self.probs  # [..., K]
        y, probs = torch.broadcast_tensors(y[..., None], probs)
        y = y[..., 0].contiguous()
        k = self._bucket(y)
        p = probs.gather(-1, k[..., None]).squeeze(-1)
        below = probs.cumsum(-1).gather(-1, k[..., None]).squeeze(-1) - p  # mass of buckets < k
        return (below + p * self._within(y, k)).clamp(0, 1)

    def _within(self, y: Tensor, k: Tensor) -> Tensor:
        """The share of bucket k's mass below y (uniform inside, half-normal in the tails)."""
        share = ((y - self.borders[k]) / self.widths[k]).clamp(0, 1)
        left, right = self._tails(k)
        if bool((left | right).any()):  # skipped when no y lies in the outer buckets
            left_share = torch.erfc((self.borders[1] - y).clamp_min(0) / (self.left_scale * math.sqrt(2)))
            right_share = torch.erf((y - self.borders[-2]).clamp_min(0) / (self.right_scale * math.sqrt(2)))
            share = torch.where(left, left_share, torch.where(right, right_share, share))
        return share

    def cdf_at(self, points: ArrayLike) -> Tensor:
        """P(Y <= point) of every distribution at the same P points: [..., P] (cheaper than
        broadcasting ``cdf`` when many distributions share the points)."""
        points = _numbers(points, "points", self.logits).reshape(-1)  # [P]
        if bool(points.isnan().any()):
            raise ValueError("points contains NaN")
        probs = self.probs  # [..., K]
        k = self._bucket(points)  # [P]
        below = (probs.cumsum(-1) - probs)[..., k]  # [..., P] mass of the buckets before each point's
        return (below + probs[..., k] * self._within(points, k)).clamp(0, 1)

    def _inverse(self, k: Tensor, r: Tensor) -> Tensor:
        """The value at fraction r in [0, 1] of bucket k's mass (float64)."""
        borders = self.borders.double()
        r = r.double().clamp(1e-12, 1 - 1e-12)
        inner = borders[k] + r * borders.diff()[k]
        left = borders[1] - self.left_scale.double() * math.sqrt(2) * torch.erfinv(1 - r)
        right = borders[-2] + self.right_scale.double() * math.sqrt(2) * torch.erfinv(r)
        last = self.widths.numel() - 1
        return torch.where(k == 0, left, torch.where(k == last, right, inner))

    def quantile(self, q: ArrayLike) -> Tensor:
        """The q-quantile; a scalar q gives the batch shape, a 1-D q of length Q gives [..., Q]."""
        q = _numbers(q, "q", self.logits, torch.float64)
        if q.ndim > 1:
            raise ValueError(f"q (the quantile levels) must be a scalar or 1-D, got shape {tuple(q.shape)}")
        outside = ~((q > 0) & (q < 1))  # NaN included
        if bool(outside.any()):
            raise ValueError(
                f"q (the quantile levels) must lie strictly between 0 and 1, got {q[outside].reshape(-1)[0].item()}"
            )
        levels = q.reshape(-1)  # [Q]
        probs = self.probs.double()  # [..., K]
        cum = probs.cumsum(-1)  # [..., K]
        cum = cum / cum[..., -1:]
        target = levels.expand(*probs.shape[:-1], -1).contiguous()  # [..., Q]
        k = torch.searchsorted(cum.contiguous(), target).clamp(max=probs.shape[-1] - 1)  # [..., Q]
        below = (cum - probs).gather(-1, k)
        r = (target - below) / probs.gather(-1, k).clamp_min(1e-300)
        out = self._inverse(k, r).to(self.logits.dtype)  # [..., Q]
        return out[..., 0] if q.ndim == 0 else out

    def median(self) -> Tensor:
        return self.quantile(0.5)

    def mean(self) -> Tensor:
        """Expected value."""
        mids = (self.borders[:-1] + self.borders[1:]) / 2
        tail = math.sqrt(2 / math.pi)
        mids = mids.clone()
        mids[0] = self.borders[1] - self.left_scale * tail
        mids[-1] = self.borders[-2] + self.right_scale * tail
        return (self.probs * mids).sum(-1)

    def variance(self) -> Tensor:
        """Variance (inner buckets uniform, tails half-normal)."""
        lo, hi = self.borders[:-1], self.borders[1:]
        second = (lo**2 + lo * hi + hi**2) / 3  # E[Y²] within each bucket, uniform
        second = second.clone()
        second[0] = _shifted_half_normal_second_moment(self.borders[1], -self.left_scale)
        second[-1] = _shifted_half_normal_second_moment(self.borders[-2], self.right_scale)
        return ((self.probs * second).sum(-1) - self.mean() ** 2).clamp_min(0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws [n, ...] (float), on the distribution's device. The random numbers come from
        ``generator``'s device (a CPU generator gives the same draws for a GPU distribution)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"n (the number of draws) must be an integer, got {_describe(n)}")
        if n < 1:
            raise ValueError(f"n (the number of draws) must be at least 1, got {n}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {_describe(generator)}")
        n = int(n)
        probs = self.probs.reshape(-1, self.probs.shape[-1]).double()  # [P, K]
        source = probs.device if generator is None else generator.device
        k = torch.multinomial(probs.to(source), n, replacement=True, generator=generator)  # [P, n]
        r = torch.rand(k.shape, generator=generator, dtype=torch.float64, device=source)  # [P, n]
        draws = self._inverse(k.to(probs.device), r.to(probs.device)).to(self.logits.dtype)  # [P, n]
        return draws.T.reshape(n, *self.batch_shape)


def _describe(value: Any) -> str:
    """A short description of an argument for error messages."""
    return f"{type(value).__name__} {value!r:.60}"


def _numbers(value: ArrayLike, name: str, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``value`` (tensor, array, number or list) as a real tensor of ``like``'s device and dtype
    (or ``dtype``); TypeError for strings, objects, booleans and complex numbers."""
    if isinstance(value, Tensor):
        real = value.dtype != torch.bool and not value.is_complex()
    else:
        try:
            value = np.asarray(value)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"{name} must be a number or an array of numbers: {error}") from None
        real = value.dtype.kind in "iuf"
    if not real:
        raise TypeError(f"{name} must be real numbers, got {_describe(value)}")
    return torch.as_tensor(value, dtype=dtype or like.dtype, device=like.device)


def _shifted_half_normal_second_moment(edge: Tensor, signed_scale: Tensor) -> Tensor:
    """E[(edge + signed_scale · |Z|)²] for Z ~ N(0, 1)."""
    return edge**2 + 2 * edge * signed_scale * math.sqrt(2 / math.pi) + signed_scale**2


def _half_normal_logpdf(z: Tensor, scale: Tensor) -> Tensor:
    """log density of a half-normal of the given scale at z >= 0 (z < 0 is clamped to 0)."""
    z = z.clamp_min(0)
    return math.log(2) - scale.log() - 0.5 * math.log(2 * math.pi) - 0.5 * (z / scale) ** 2
