"""The prior interface: small composable samplers of synthetic datasets.

A prior is a frozen dataclass (its fields are its configuration) that draws a batch of
datasets from an explicit ``torch.Generator``. :class:`Prior` owns the plumbing shared by all
priors: argument validation, the number of used features per dataset, the input
distribution, and zero-padding up to the requested feature count. Subclasses only say how a
target is drawn given the inputs (:meth:`Prior.targets`).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import Tensor

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class Batch:
    """A batch of datasets drawn from a prior.

    x: [B, N, F] float32, features beyond ``used_features[b]`` are zero.
    y: [B, N] float32 targets (regression) or int64 class labels (classification).
    used_features: [B] int64, the number of used (leading) features of each dataset.
    clean_y: [B, N] float32, y without its observation noise, where the prior can tell the two
      apart (see :meth:`FunctionPrior.noisy_targets`); None where it cannot. A run with
      ``train.noise_free_targets`` learns to predict these at the test rows.
    """

    x: Tensor
    y: Tensor
    used_features: Tensor
    clean_y: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    @staticmethod
    def concat(batches: Sequence[Batch], order: Tensor | None = None) -> Batch:
        """The datasets of ``batches`` joined into one batch, taken in ``order`` [B] (indices into
        the joined datasets) if given; clean_y only if every part has it."""
        pick = (lambda t: t) if order is None else (lambda t: t[order])
        clean = [b.clean_y for b in batches]
        return Batch(
            x=pick(torch.cat([b.x for b in batches])),
            y=pick(torch.cat([b.y for b in batches])),
            used_features=pick(torch.cat([b.used_features for b in batches])),
            clean_y=None if any(c is None for c in clean) else pick(torch.cat(clean)),
        )


# ---------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Gamma:
    """A gamma hyperprior with shape ``concentration`` and ``rate`` (mean = concentration / rate)."""

    concentration: float
    rate: float

    def __post_init__(self) -> None:
        if not (self.concentration > 0 and self.rate > 0):
            raise ValueError(f"Gamma needs concentration > 0 and rate > 0, got {self}")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        rng = numpy_rng(generator)
        return torch.as_tensor(rng.gamma(self.concentration, 1.0 / self.rate, size=n), dtype=torch.float64)


@dataclass(frozen=True)
class LogUniform:
    """A log-uniform hyperprior on [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 < self.low <= self.high):
            raise ValueError(f"LogUniform needs 0 < low <= high, got {self}")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return torch.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))


@dataclass(frozen=True)
class Uniform:
    """A uniform hyperprior on [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Uniform needs low <= high, got {self}")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.low + (self.high - self.low) * torch.rand(n, generator=generator, dtype=torch.float64)


Hyper = float | Gamma | LogUniform | Uniform
HYPERPRIORS: dict[str, type] = {"gamma": Gamma, "loguniform": LogUniform, "uniform": Uniform}


def draw(param: Hyper, n: int, generator: torch.Generator) -> Tensor:
    """Draw ``n`` values [n] float64 of a hyperparameter: a fixed float or a hyperprior."""
    if isinstance(param, (int, float)):
        return torch.full((n,), float(param), dtype=torch.float64)
    return param.sample(n, generator)


def check_positive(name: str, param: Hyper, allow_zero: bool = False) -> None:
    """Reject a fixed hyperparameter that is not positive (hyperpriors validate themselves)."""
    if isinstance(param, (int, float)) and (param < 0 or (param == 0 and not allow_zero)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {param}")


def log_uniform_int(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high], log-uniformly distributed (small values as likely per octave)."""
    u = torch.rand(1, generator=generator, dtype=torch.float64).item()
    return min(high, int(math.exp(math.log(low) + u * math.log((high + 1) / low))))


def check_range(prior: Any, low: str, high: str) -> None:
    """Reject integer fields ``low`` and ``high`` of ``prior`` unless 1 <= low <= high."""
    lo, hi = getattr(prior, low), getattr(prior, high)
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= {low} <= {high}, got {lo}, {hi}")


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from ``generator`` (for distributions torch cannot draw with one)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- the interface


@dataclass(frozen=True)
class Prior(ABC):
    """Base of all priors: validates a request, then :meth:`draw` fills it."""

    name: ClassVar[str]

    @property
    def task(self) -> Task:
        """What the datasets' targets are: "regression" (floats) or "classification" (class ids)."""
        return "regression"

    @property
    def n_classes(self) -> int:
        """The largest number of classes this prior produces (0 for regression)."""
        return 0

    @property
    def separates_noise(self) -> bool:
        """Whether its batches carry ``clean_y``, the targets before their observation noise."""
        return False

    @abstractmethod
    def check_features(self, n_features: int) -> None:
        """Raise ValueError if this prior cannot fill ``n_features`` columns as configured."""

    def sample(self, batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Batch:
        """Draw ``batch_size`` datasets of ``n_rows`` rows and ``n_features`` (padded) columns."""
        if batch_size < 1 or n_rows < 1 or n_features < 1:
            raise ValueError(
                f"batch_size, n_rows and n_features must all be >= 1, got {batch_size}, {n_rows}, {n_features}"
            )
        self.check_features(n_features)
        return self.draw(batch_size, n_rows, n_features, generator)

    @abstractmethod
    def draw(self, batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Batch:
        """Draw a validated request (see :meth:`sample`)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description that :func:`priors.from_dict` turns back into this prior."""
        out: dict[str, Any] = {"type": self.name}
        for f in dataclasses.fields(self):
            out[f.name] = _to_jsonable(getattr(self, f.name))
        return out


@dataclass(frozen=True)
class FeatureRangePrior(Prior):
    """A prior whose datasets use min_features..max_features columns (``max_features=None``:
    up to the requested count); owns validating that range."""

    min_features: int = 1
    max_features: int | None = None

    def __post_init__(self) -> None:
        if self.min_features < 1:
            raise ValueError(f"min_features must be >= 1, got {self.min_features}")
        if self.max_features is not None and self.max_features < self.min_features:
            raise ValueError(f"max_features ({self.max_features}) must be >= min_features ({self.min_features})")

    def check_features(self, n_features: int) -> None:
        wanted = max(self.min_features, self.max_features or 0)
        if wanted > n_features:
            raise ValueError(
                f"{type(self).__name__} uses up to {wanted} features, more than the {n_features} "
                "columns requested; raise n_features or lower max_features/min_features"
            )


Inputs = Literal["uniform", "normal", "correlated", "categorical"]
INPUTS: tuple[str, ...] = get_args(Inputs)


@dataclass(frozen=True)
class FunctionPrior(FeatureRangePrior):
    """A prior that draws its inputs and a random function of them.

    inputs: "uniform" (U[0,1]) or "normal" (N(0,1)) independent features, "correlated":
    N(0,1) features that share latent factors (see :func:`correlated_normal`), as the columns of
    real tables often do (sizes and weights of one object, repeated measurements), or
    "categorical": correlated features cut into 2..max_levels levels each, coded in random order
    (see :func:`categorical_codes`), as tables of integer-coded categories are.
    The number of used features per dataset is uniform on [min_features, max_features]. Used
    features are the leading columns; the rest are zero.
    """

    inputs: Inputs = "uniform"
    max_levels: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {', '.join(map(repr, INPUTS))}, got {self.inputs!r}")
        if not (isinstance(self.max_levels, int) and self.max_levels >= 2):
            raise ValueError(
                f"max_levels must be an integer >= 2 (levels of categorical inputs), got {self.max_levels!r}"
            )

    def draw(self, batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Batch:
        high = n_features if self.max_features is None else self.max_features
        used = torch.randint(self.min_features, high + 1, (batch_size,), generator=generator)  # [B]
        if self.inputs == "uniform":
            x = torch.rand(batch_size, n_rows, n_features, generator=generator)  # [B, N, F]
        elif self.inputs == "normal":
            x = torch.randn(batch_size, n_rows, n_features, generator=generator)  # [B, N, F]
        elif self.inputs == "correlated":
            x = correlated_normal(batch_size, n_rows, n_features, generator)  # [B, N, F]
        else:
            latent = correlated_normal(batch_size, n_rows, n_features, generator)  # [B, N, F]
            x = categorical_codes(latent, generator, self.max_levels)  # [B, N, F]
        x = x * feature_mask(used, n_features)[:, None, :]  # [B, N, F]
        y, clean = self.noisy_targets(x, used, generator)  # [B, N] each (clean: or None)
        return Batch(x=x.float(), y=y.float(), used_features=used, clean_y=None if clean is None else clean.float())

    @abstractmethod
    def targets(self, x: Tensor, used: Tensor, generator: torch.Generator) -> Tensor:
        """Targets [B, N] for inputs x [B, N, F] whose columns beyond used [B] are zero."""

    @property
    def separates_noise(self) -> bool:
        return type(self).noisy_targets is not FunctionPrior.noisy_targets

    def noisy_targets(self, x: Tensor, used: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """The targets [B, N] and their values before the observation noise [B, N], or None
        where this prior does not tell them apart (the default); the same draws as :meth:`targets`."""
        return self.targets(x, used, generator), None


def correlated_normal(batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Tensor:
    """Features [B, N, F] with N(0, 1) marginals that share latent factors: per dataset, a share
    share ρ = 0.99 √u, u ~ U(0, 1), of every column's variance (median 0.7) comes from
    k ~ U{1..min(F, 3)} standard normal factors through N(0, 1) loadings (normalised per column);
    the rest is the column's own noise. Correlations between columns thus range from none to
    near-collinear."""
    k_max = min(n_features, 3)
    k = torch.randint(1, k_max + 1, (batch_size,), generator=generator)  # [B]
    share = 0.99 * torch.rand(batch_size, 1, 1, generator=generator).sqrt()  # [B, 1, 1]
    loadings = torch.randn(batch_size, k_max, n_features, generator=generator)  # [B, K, F]
    loadings = loadings * (torch.arange(k_max)[None, :] < k[:, None])[..., None]  # unused factors off
    loadings = loadings / loadings.norm(dim=1, keepdim=True).clamp_min(1e-12)  # unit variance per column
    factors = torch.randn(batch_size, n_rows, k_max, generator=generator)  # [B, N, K]
    own = torch.randn(batch_size, n_rows, n_features, generator=generator)  # [B, N, F]
    return share.sqrt() * (factors @ loadings) + (1 - share).sqrt() * own  # [B, N, F]


def categorical_codes(x: Tensor, generator: torch.Generator, max_levels: int = 6) -> Tensor:
    """Features x [B, N, F] cut into L ~ U{2..max_levels} levels per column at N(0, 1) cut points,
    the levels coded 0..L-1 in random order, then standardised per dataset and column: the
    integer codes of unordered categories, as many real tables store them."""
    batch, n_rows, n_features = x.shape
    levels = torch.randint(2, max_levels + 1, (batch, n_features), generator=generator)  # [B, F]
    slot = torch.arange(max_levels - 1)  # [C], cut slots; slot c is used when c < L - 1
    cuts = torch.randn(batch, n_features, max_levels - 1, generator=generator).sort(-1).values  # [B, F, C]
    cuts = cuts.masked_fill(slot >= (levels - 1)[..., None], math.inf)  # [B, F, C]
    rank = (x.permute(0, 2, 1)[..., None] > cuts[:, :, None, :]).sum(-1)  # [B, F, N], level by order
    keys = torch.rand(batch, n_features, max_levels, generator=generator)  # [B, F, Lmax]
    keys = keys.masked_fill(torch.arange(max_levels) >= levels[..., None], math.inf)
    order = keys.argsort(-1)  # [B, F, Lmax], first L entries a permutation of 0..L-1
    codes = order.gather(-1, rank).double()  # [B, F, N]
    codes = (codes - codes.mean(-1, keepdim=True)) / codes.std(-1, keepdim=True).clamp_min(1e-6)
    return codes.permute(0, 2, 1).float()  # [B, N, F]


def add_noise(y: Tensor, std: Tensor | float, generator: torch.Generator) -> Tensor:
    """y [B, N] plus Gaussian noise of standard deviation std (a float or [B])."""
    std = torch.as_tensor(std, dtype=y.dtype)
    if std.ndim == 1:
        std = std[:, None]  # [B, 1]
    return y + std * torch.randn(y.shape, generator=generator, dtype=y.dtype)


def feature_mask(used: Tensor, total: int) -> Tensor:
    """[B, total] float mask, 1 for the first used[b] columns of each dataset."""
    return (torch.arange(total)[None, :] < used[:, None]).float()


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Prior):
        return value.to_dict()
    if isinstance(value, (Gamma, LogUniform, Uniform)):
        kind = {Gamma: "gamma", LogUniform: "loguniform", Uniform: "uniform"}[type(value)]
        return {"dist": kind, **dataclasses.asdict(value)}
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- combinators


@dataclass(frozen=True)
class Mixture(Prior):
    """Each dataset comes from one of ``components``, chosen with probabilities ``weights``."""

    name: ClassVar[str] = "mixture"

    components: tuple[Prior, ...] = ()
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.components:
            raise ValueError("Mixture needs at least one component")
        if len(self.weights) != len(self.components):
            raise ValueError(f"Mixture has {len(self.components)} components but {len(self.weights)} weights")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"Mixture weights must be >= 0 with a positive sum, got {self.weights}")
        tasks = {c.task for c in self.components}
        if len(tasks) > 1:
            raise ValueError(f"Mixture components must share one task, got {sorted(tasks)}")

    @property
    def task(self) -> Task:
        return self.components[0].task

    @property
    def n_classes(self) -> int:
        return max(c.n_classes for c in self.components)

    @property
    def separates_noise(self) -> bool:
        return all(c.separates_noise for c in self.components)

    def check_features(self, n_features: int) -> None:
        for c in self.components:
            c.check_features(n_features)

    def draw(self, batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Batch:
        probs = torch.tensor(self.weights, dtype=torch.float64)
        which = torch.multinomial(probs, batch_size, replacement=True, generator=generator)  # [B]
        parts = []
        for k, component in enumerate(self.components):
            index = (which == k).nonzero().squeeze(1)  # [B_k]
            if len(index):
                parts.append((index, component.draw(len(index), n_rows, n_features, generator)))
        order = torch.cat([index for index, _ in parts]).argsort()  # [B]
        return Batch.concat([b for _, b in parts], order)


@dataclass(frozen=True)
class Wrapper(Prior):
    """A prior that changes the datasets of a ``base`` prior: it owns the plumbing (the base is
    checked and drawn first), subclasses write :meth:`change` and :meth:`check` their fields.
    ``base_task`` is the task the base must have (None: any); the wrapper keeps the base's task.
    ``keeps_clean_y``: whether :meth:`change` carries the base's ``clean_y`` over (changed as y is)."""

    base_task: ClassVar[Task | None] = "regression"
    keeps_clean_y: ClassVar[bool] = False

    base: Prior

    def __post_init__(self) -> None:
        if not isinstance(self.base, Prior):
            raise ValueError(f"{type(self).__name__} needs a base prior, got {self.base!r}")
        if self.base_task is not None and self.base.task != self.base_task:
            raise ValueError(f"{type(self).__name__} needs a {self.base_task} prior as its base")
        self.check()

    def check(self) -> None:
        """Raise ValueError naming a field of the wrapper that is out of range."""

    @property
    def task(self) -> Task:
        return self.base.task

    @property
    def n_classes(self) -> int:
        return self.base.n_classes

    @property
    def separates_noise(self) -> bool:
        return self.keeps_clean_y and self.base.separates_noise

    def check_features(self, n_features: int) -> None:
        self.base.check_features(n_features)

    def draw(self, batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Batch:
        return self.change(self.base.draw(batch_size, n_rows, n_features, generator), generator)

    @abstractmethod
    def change(self, batch: Batch, generator: torch.Generator) -> Batch:
        """The datasets of ``batch`` (drawn from the base) changed as this prior says."""


@dataclass(frozen=True)
class Classification(Wrapper):
    """Turns a regression prior into a classification prior with min_classes..max_classes classes.

    Per dataset, the number of classes is uniform on [min_classes, max_classes]. Classes are
    either intervals of y (ordinal) or, with probability ``prototype_fraction``, the cells of the
    nearest of k random prototype rows in a weighted space of y and the used features (classes
    with no order, like clusters; each feature's weight is log-uniform on [0.01, 1] and y's on
    [0.3, 3], so some features decide the class and others barely). For intervals, with
    probability ``rank_fraction`` the class thresholds are y values at distinct random ranks
    (every class occurs when the dataset has more rows than classes), otherwise they are drawn
    from a normal fitted to the dataset's y (classes may be rare or absent). Class labels are
    then randomly permuted.
    """

    name: ClassVar[str] = "classification"

    min_classes: int = 2
    max_classes: int = 10
    rank_fraction: float = 0.5
    prototype_fraction: float = 0.0

    def check(self) -> None:
        if not 0.0 <= self.prototype_fraction <= 1.0:
            raise ValueError(f"prototype_fraction must be in [0, 1], got {self.prototype_fraction}")
        if not 2 <= self.min_classes <= self.max_classes:
            raise ValueError(f"need 2 <= min_classes <= max_classes, got {self.min_classes} and {self.max_classes}")
        if not 0.0 <= self.rank_fraction <= 1.0:
            raise ValueError(f"rank_fraction must be in [0, 1], got {self.rank_fraction}")

    @property
    def task(self) -> Task:
        return "classification"

    @property
    def n_classes(self) -> int:
        return self.max_classes

    def change(self, batch: Batch, generator: torch.Generator) -> Batch:
        y = batch.y.double()  # [B, N]
        batch_size, n_rows = y.shape
        k_max = self.max_classes
        n_classes = torch.randint(self.min_classes, k_max + 1, (batch_size,), generator=generator)  # [B]
        # thresholds at distinct random ranks of y below the largest (so every class occurs)
        if n_rows > k_max - 1:
            ranks = torch.rand(batch_size, n_rows - 1, generator=generator).argsort(1)[:, : k_max - 1]  # [B, K-1]
        else:
            ranks = torch.randint(0, n_rows, (batch_size, k_max - 1), generator=generator)  # [B, K-1]
        by_rank = y.sort(dim=1).values.gather(1, ranks)  # [B, K-1]
        # thresholds drawn from a normal fitted to y
        spread = y.std(dim=1, keepdim=True).nan_to_num(0.0) if n_rows > 1 else torch.zeros_like(y[:, :1])
        by_value = y.mean(dim=1, keepdim=True) + spread * torch.randn(
            batch_size, k_max - 1, generator=generator, dtype=torch.float64
        )  # [B, K-1]
        use_rank = torch.rand(batch_size, 1, generator=generator) < self.rank_fraction  # [B, 1]
        thresholds = torch.where(use_rank, by_rank, by_value)  # [B, K-1]
        unused = torch.arange(k_max - 1)[None, :] >= (n_classes[:, None] - 1)  # [B, K-1]
        thresholds = thresholds.masked_fill(unused, float("inf"))
        labels = (y[:, :, None] > thresholds[:, None, :]).sum(-1)  # [B, N] in 0..n_classes-1
        if self.prototype_fraction > 0:  # (no extra draws otherwise: earlier configs sample as before)
            cells = _nearest_prototype(batch.x.double(), batch.used_features, y, n_classes, k_max, generator)
            use_cells = torch.rand(batch_size, 1, generator=generator) < self.prototype_fraction  # [B, 1]
            labels = torch.where(use_cells, cells, labels)
        # a random permutation of the first n_classes labels of each dataset
        keys = torch.rand(batch_size, k_max, generator=generator)  # [B, K]
        keys = keys + (torch.arange(k_max)[None, :] >= n_classes[:, None]).float() * 2.0
        permutation = keys.argsort(dim=1)  # [B, K]; entries < n_classes come first
        labels = permutation.gather(1, labels)  # [B, N]
        return Batch(x=batch.x, y=labels, used_features=batch.used_features)


def _nearest_prototype(
    x: Tensor, used: Tensor, y: Tensor, n_classes: Tensor, k_max: int, generator: torch.Generator
) -> Tensor:
    """Labels [B, N]: the index of the nearest of n_classes[b] prototype rows (random distinct
    rows when there are enough) in the space of y [B, N] and the used features of x [B, N, F],
    each dimension with a random weight (see Classification)."""
    batch, n_rows, n_features = x.shape
    scale = y.std(dim=1, keepdim=True).nan_to_num(1.0).clamp_min(1e-6) if n_rows > 1 else torch.ones_like(y[:, :1])
    y_weight = torch.exp(math.log(0.3) + math.log(10) * torch.rand(batch, 1, generator=generator, dtype=x.dtype))
    x_weight = torch.exp(math.log(0.01) + math.log(100) * torch.rand(batch, n_features, generator=generator))
    x_weight = x_weight.to(x.dtype) * feature_mask(used, n_features).to(x.dtype)  # [B, F]
    z = torch.cat([((y - y.mean(1, keepdim=True)) / scale * y_weight)[..., None], x * x_weight.sqrt()[:, None]], -1)
    if n_rows >= k_max:
        rows = torch.rand(batch, n_rows, generator=generator).argsort(1)[:, :k_max]  # [B, K]
    else:
        rows = torch.randint(0, n_rows, (batch, k_max), generator=generator)  # [B, K]
    prototypes = z.gather(1, rows[..., None].expand(-1, -1, z.shape[-1]))  # [B, K, F + 1]
    distance = torch.cdist(z, prototypes)  # [B, N, K]
    unused = torch.arange(k_max)[None, None, :] >= n_classes[:, None, None]  # [B, 1, K]
    return distance.masked_fill(unused, float("inf")).argmin(-1)  # [B, N]


@dataclass(frozen=True)
class IrrelevantFeatures(Wrapper):
    """Adds uninformative columns to a base prior's datasets, so a model learns to find the
    columns that matter (real tables often have many that do not).

    With probability ``probability`` a dataset gets k extra columns, k log-uniform on
    [1, max_ratio · used columns] (as room remains up to the requested count). Each is a copy of
    one of its columns with the rows shuffled: the same marginal, independent of the target.
    The used columns are then put in random order.
    """

    name: ClassVar[str] = "irrelevant_features"
    base_task: ClassVar[Task | None] = None
    keeps_clean_y: ClassVar[bool] = True

    probability: float = 0.3
    max_ratio: float = 3.0

    def check(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if self.max_ratio <= 0:
            raise ValueError(f"max_ratio must be > 0, got {self.max_ratio}")

    def change(self, batch: Batch, generator: torch.Generator) -> Batch:
        x, used = batch.x.clone(), batch.used_features.clone()  # [B, N, F], [B]
        batch_size, n_rows, n_features = x.shape
        add = torch.rand(batch_size, generator=generator) < self.probability  # [B]
        for b in add.nonzero().squeeze(1).tolist():
            f = int(used[b])
            most = min(n_features - f, math.floor(self.max_ratio * f))
            if most < 1:
                continue
            k = log_uniform_int(1, most, generator)
            sources = torch.randint(0, f, (k,), generator=generator)  # [k]
            shuffled = torch.stack([torch.randperm(n_rows, generator=generator) for _ in range(k)], 1)  # [N, k]
            x[b, :, f : f + k] = x[b, :, sources].gather(0, shuffled)  # [N, k]
            order = torch.randperm(f + k, generator=generator)  # [f + k]
            x[b, :, : f + k] = x[b, :, order]
            used[b] = f + k
        return Batch(x=x, y=batch.y, used_features=used, clean_y=batch.clean_y)


@dataclass(frozen=True)
class WarpedTargets(Wrapper):
    """Gives a regression prior's targets the shapes real targets often have. With probability
    ``probability`` a dataset's targets get one monotone warp, each kind equally likely:

    - skew: exp(s · z) with z the z-scored targets, s ~ U(0.3, 1.5), mirrored half the time
      (a long tail on one side: prices, counts);
    - spike: the lowest (or highest) fraction q ~ U(0.02, 0.3) of the rows all take one value,
      g ~ U(0, 3) standard deviations beyond the rest (zero-inflated targets: idle machines,
      no purchase);
    - levels: rounded to k ~ U{2..10} equally spaced levels between the extremes (ratings).

    The feature-target relation is kept: each warp is a non-decreasing function of the target.
    """

    name: ClassVar[str] = "warped_targets"

    probability: float = 0.3

    def check(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")

    def change(self, batch: Batch, generator: torch.Generator) -> Batch:
        y = batch.y.double().clone()  # [B, N]
        batch_size = len(y)
        warp = torch.rand(batch_size, generator=generator) < self.probability  # [B]
        for b in warp.nonzero().squeeze(1).tolist():
            kind, u = torch.randint(0, 3, (), generator=generator).item(), torch.rand(3, generator=generator).tolist()
            sign = 1.0 if u[0] < 0.5 else -1.0
            z = sign * (y[b] - y[b].mean()) / y[b].std().nan_to_num(1.0).clamp_min(1e-6)  # [N]
            if kind == 0:
                z = torch.exp((0.3 + 1.2 * u[1]) * z)
            elif kind == 1:
                low = z <= torch.quantile(z, 0.02 + 0.28 * u[1])  # [N]
                if bool((~low).any()):
                    z = torch.where(low, z[~low].min() - 3.0 * u[2], z)
            else:
                levels = 2 + int(9 * u[1])  # 2..10
                lo, hi = z.min(), z.max()
                z = lo + torch.round((z - lo) / (hi - lo).clamp_min(1e-12) * (levels - 1)) * (hi - lo) / (levels - 1)
            y[b] = sign * z
        return Batch(x=batch.x, y=y.float(), used_features=batch.used_features)


@dataclass(frozen=True)
class Standardized(Wrapper):
    """A regression prior whose targets are z-scored per dataset (mean 0, standard deviation 1
    over the dataset's rows), matching estimators that standardise targets before predicting."""

    name: ClassVar[str] = "standardized"
    keeps_clean_y: ClassVar[bool] = True

    def change(self, batch: Batch, generator: torch.Generator) -> Batch:
        y = batch.y.double()  # [B, N]
        n_rows = y.shape[1]
        scale = y.std(dim=1, keepdim=True).nan_to_num(1.0).clamp_min(1e-6) if n_rows > 1 else torch.ones_like(y)
        mean = y.mean(dim=1, keepdim=True)  # [B, 1]
        clean = None if batch.clean_y is None else ((batch.clean_y.double() - mean) / scale).float()
        return Batch(x=batch.x, y=((y - mean) / scale).float(), used_features=batch.used_features, clean_y=clean)
