"""Structural-causal-model prior for tabular data (after TabPFN, with TabICL's tree mechanisms).

Per dataset: root causes (normal, uniform or clustered) feed a chain of random layers. A layer
is either an MLP layer (block-sparse random weights, a random activation, per-node noise) or a
tree layer (small random decision trees, each a piecewise-constant function of a few parent
nodes). Features and the target are read off random nodes, so some features are causes of the
target, some effects and some unrelated. Features are then warped, quantised, turned into
categorical codes (rank bins in random order) and given missing values, and finally scaled the
way the estimators scale a real table (median, IQR / 1.349, soft clip at ±4, missing -> 0 with
an indicator column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from sklearn import config_context
from sklearn.tree import DecisionTreeRegressor
from torch import Tensor

from priors.base import (
    Batch,
    FeatureRangePrior,
    Hyper,
    LogUniform,
    Uniform,
    check_positive,
    check_range,
    draw,
    log_uniform_int,
    numpy_rng,
)

ACTIVATIONS = ("tanh", "relu", "identity", "sin", "abs", "step", "square", "sigmoid")
CAUSES = ("normal", "uniform", "clustered")
CLIP = 4.0  # the estimators' soft-clip constant (pfn.preprocessing.CLIP)
IQR_TO_STD = 1.3489795  # IQR of a standard normal


def _activate(h: Tensor, name: str) -> Tensor:
    if name == "tanh":
        return torch.tanh(h)
    if name == "relu":
        return torch.relu(h)
    if name == "identity":
        return h
    if name == "sin":
        return torch.sin(h)
    if name == "abs":
        return h.abs()
    if name == "step":
        return (h > 0).to(h.dtype)
    if name == "square":
        return h * h
    return torch.sigmoid(h)


def _zscore(h: Tensor) -> Tensor:
    """Columns of h [N, W] to mean 0, standard deviation 1 (constant columns to 0)."""
    std = h.std(dim=0, keepdim=True) if h.shape[0] > 1 else torch.ones_like(h[:1])
    return (h - h.mean(dim=0, keepdim=True)) / std.nan_to_num(1.0).clamp_min(1e-6)


def robust_scale(x: Tensor) -> Tensor:
    """Scale columns of x [N, F] as the estimators do: subtract the median, divide by IQR / 1.349
    (a zero IQR counts as 1), soft-clip by 4·asinh(x / 4). NaN stays NaN."""
    q = torch.nanquantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype), dim=0)  # [3, F]
    iqr = (q[2] - q[0]).nan_to_num(0.0)
    scale = torch.where(iqr > 0, iqr, torch.ones_like(iqr)) / IQR_TO_STD  # [F]
    return CLIP * torch.asinh((x - q[1].nan_to_num(0.0)) / scale / CLIP)


@dataclass(frozen=True)
class SCMPrior(FeatureRangePrior):
    """Random structural causal models with MLP and tree mechanisms (regression targets).

    Structure: layers uniform on [min_layers, max_layers], width uniform on [min_width,
    max_width] (raised so that there are enough nodes for the features); each layer is a tree
    layer with probability ``tree_probability``. MLP weights are N(0, 1) on kept blocks
    (``edge_keep``: the fraction of (input block, output block) pairs that are connected);
    pre-activations are z-scored then multiplied by a gain (``gain``) before the activation;
    node noise has standard deviation ``node_noise``.
    Features: the used count is log-uniform on [min_features, max_features or the requested
    count]; a fraction of them (each drawn per dataset) is warped (exp or power), quantised to
    2..10 ordered levels, or made categorical (2..max_categories codes in random order). With
    probability ``missing_probability`` a dataset has missing values at a rate uniform on
    [0, max_missing_rate] in a random subset of columns, either completely at random or
    depending on the value; each such column gets an indicator column while room remains.
    Target: a node in the later half of the graph plus heteroscedastic Gaussian noise whose
    scale (``target_noise``) is modulated by another node.
    Feature nodes are drawn uniformly (``relevance_power`` 0) or, with a power p drawn per
    dataset, with probabilities proportional to (0.01 + r)^p, r a node's dependence on the
    target (the larger absolute correlation of the node or its square with the target node):
    at p = 0 many tables have no column that tells anything about the target.
    """

    name: ClassVar[str] = "scm"

    min_layers: int = 2
    max_layers: int = 5
    min_width: int = 4
    max_width: int = 32
    activations: tuple[str, ...] = ACTIVATIONS
    causes: tuple[str, ...] = CAUSES
    tree_probability: float = 0.3
    max_tree_depth: int = 5
    edge_keep: Hyper = Uniform(0.3, 1.0)
    gain: Hyper = LogUniform(0.5, 3.0)
    node_noise: Hyper = LogUniform(0.01, 0.5)
    target_noise: Hyper = LogUniform(0.001, 0.5)
    warp_fraction: Hyper = Uniform(0.0, 0.5)
    quantize_fraction: Hyper = Uniform(0.0, 0.3)
    categorical_fraction: Hyper = Uniform(0.0, 0.3)
    max_categories: int = 10
    missing_probability: float = 0.2
    max_missing_rate: float = 0.3
    relevance_power: Hyper = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "min_layers", "max_layers")
        check_range(self, "min_width", "max_width")
        for field, allowed in (("activations", ACTIVATIONS), ("causes", CAUSES)):
            chosen = getattr(self, field)
            if not chosen or set(chosen) - set(allowed):
                raise ValueError(f"{field} must be a non-empty subset of {allowed}, got {chosen}")
        for field in ("tree_probability", "missing_probability", "max_missing_rate"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must be in [0, 1], got {getattr(self, field)}")
        if self.max_missing_rate >= 1.0:
            raise ValueError(f"max_missing_rate must be < 1, got {self.max_missing_rate}")
        if not 1 <= self.max_tree_depth <= 12:
            raise ValueError(f"max_tree_depth must be in 1..12, got {self.max_tree_depth}")
        if self.max_categories < 2:
            raise ValueError(f"max_categories must be >= 2, got {self.max_categories}")
        check_positive("edge_keep", self.edge_keep)
        check_positive("gain", self.gain)
        fields = ("node_noise", "target_noise", "warp_fraction", "quantize_fraction", "categorical_fraction")
        for field in (*fields, "relevance_power"):
            check_positive(field, getattr(self, field), allow_zero=True)

    def draw(self, batch_size: int, n_rows: int, n_features: int, generator: torch.Generator) -> Batch:
        x = torch.zeros(batch_size, n_rows, n_features)  # [B, N, F]
        y = torch.zeros(batch_size, n_rows)  # [B, N]
        used = torch.zeros(batch_size, dtype=torch.long)  # [B]
        high = self.max_features or n_features
        for b in range(batch_size):
            n_used = log_uniform_int(self.min_features, high, generator)
            features, target = self._dataset(n_rows, n_used, generator)  # [N, f], [N]
            columns = self._observe(features, n_features, generator)  # [N, f']
            x[b, :, : columns.shape[1]] = columns
            y[b] = target
            used[b] = columns.shape[1]
        return Batch(x=x, y=y, used_features=used)

    def _one(self, param: Hyper, generator: torch.Generator) -> float:
        return float(draw(param, 1, generator).item())

    def _choice(self, options: tuple[str, ...], generator: torch.Generator) -> str:
        return options[int(torch.randint(0, len(options), (1,), generator=generator).item())]

    def _causes(self, n_rows: int, width: int, generator: torch.Generator) -> Tensor:
        kind = self._choice(self.causes, generator)
        if kind == "normal":
            return torch.randn(n_rows, width, generator=generator)  # [N, W]
        if kind == "uniform":
            return torch.rand(n_rows, width, generator=generator) * 2 - 1  # [N, W]
        n_clusters = int(torch.randint(2, 9, (1,), generator=generator).item())
        centres = 2 * torch.randn(n_clusters, width, generator=generator)  # [C, W]
        member = torch.randint(0, n_clusters, (n_rows,), generator=generator)  # [N]
        return centres[member] + torch.randn(n_rows, width, generator=generator)  # [N, W]

    def _mlp_layer(self, h: Tensor, width: int, generator: torch.Generator) -> Tensor:
        fan_in = h.shape[1]
        w = torch.randn(fan_in, width, generator=generator)  # [in, out]
        keep = min(1.0, self._one(self.edge_keep, generator))
        blocks_in, blocks_out = max(1, fan_in // 4), max(1, width // 4)
        mask = (torch.rand(blocks_in, blocks_out, generator=generator) < keep).float()  # [bi, bo]
        rows = torch.arange(fan_in) * blocks_in // fan_in  # [in] block of each input
        cols = torch.arange(width) * blocks_out // width  # [out]
        w = w * mask[rows][:, cols]
        pre = _zscore(h @ w + torch.randn(width, generator=generator)) * self._one(self.gain, generator)  # [N, W]
        return _activate(pre, self._choice(self.activations, generator))

    def _tree_layer(self, h: Tensor, width: int, generator: torch.Generator) -> Tensor:
        """Each output node: a random decision tree on 1..4 parents, fitted to random targets."""
        rng = numpy_rng(generator)
        n_rows, fan_in = h.shape
        parents_np = h.numpy()
        fit_rows = rng.choice(n_rows, size=min(n_rows, 256), replace=False)
        out = np.empty((n_rows, width), dtype=np.float32)
        n_trees = int(rng.integers(1, min(width, 4) + 1))
        groups = np.array_split(rng.permutation(width), n_trees)
        # the inputs are finite float32 and the parameters valid by construction: skipping
        # sklearn's checks (about half of this layer's time) leaves the fitted trees exactly the same
        with config_context(skip_parameter_validation=True):
            for group in groups:
                parents = rng.choice(fan_in, size=int(rng.integers(1, min(fan_in, 4) + 1)), replace=False)
                depth = int(rng.integers(1, self.max_tree_depth + 1))
                targets = rng.standard_normal((len(fit_rows), len(group)))  # float64, as trees fit
                tree = DecisionTreeRegressor(max_depth=depth, random_state=int(rng.integers(2**31)))
                tree.fit(np.ascontiguousarray(parents_np[fit_rows][:, parents]), targets, check_input=False)
                values = tree.predict(np.ascontiguousarray(parents_np[:, parents]), check_input=False)
                out[:, group] = values.reshape(n_rows, len(group))
        return torch.from_numpy(out)

    def _dataset(self, n_rows: int, n_used: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Raw features [N, n_used] and target [N] of one random SCM."""
        n_layers = int(torch.randint(self.min_layers, self.max_layers + 1, (1,), generator=generator).item())
        width = int(torch.randint(self.min_width, self.max_width + 1, (1,), generator=generator).item())
        width = max(width, math.ceil((n_used + 2) / n_layers))  # enough nodes for features + target
        noise = self._one(self.node_noise, generator)
        h = self._causes(n_rows, width, generator)  # [N, W]
        layers = [h]
        for _ in range(n_layers):
            if torch.rand(1, generator=generator).item() < self.tree_probability:
                h = self._tree_layer(h, width, generator)
            else:
                h = self._mlp_layer(h, width, generator)
            h = _zscore(h) + noise * torch.randn(n_rows, width, generator=generator)  # [N, W]
            layers.append(h)
        nodes = torch.cat(layers, dim=1)  # [N, (L + 1) W]
        first_late = width * (1 + n_layers // 2)  # the target comes from the later half
        target = int(torch.randint(first_late, nodes.shape[1], (1,), generator=generator).item())
        others = self._feature_order(nodes, target, generator)  # [(L + 1) W - 1], the target left out
        features = nodes[:, others[:n_used]]  # [N, n_used]
        modulator = _zscore(nodes[:, others[-1:]]).squeeze(1)  # [N], drives heteroscedasticity
        slope = torch.rand(1, generator=generator).item()
        scale = self._one(self.target_noise, generator) * torch.exp(slope * modulator.clamp(-3, 3))  # [N]
        y = _zscore(nodes[:, target : target + 1]).squeeze(1) + scale * torch.randn(n_rows, generator=generator)
        return features, y

    def _feature_order(self, nodes: Tensor, target: int, generator: torch.Generator) -> Tensor:
        """All node indices but the target's, in the order features are read off them."""
        if self.relevance_power == 0.0:  # (no extra draws: earlier configs sample as before)
            order = torch.randperm(nodes.shape[1], generator=generator)
            return order[order != target]
        z = _zscore(nodes)  # [N, M]
        squares = _zscore(z * z)  # [N, M]
        y = z[:, target : target + 1]  # [N, 1]
        dependence = torch.maximum((z * y).mean(0).abs(), (squares * y).mean(0).abs())  # [M]
        weights = (0.01 + dependence).pow(self._one(self.relevance_power, generator))  # [M]
        weights[target] = 0.0
        return torch.multinomial(weights, nodes.shape[1] - 1, replacement=False, generator=generator)

    def _observe(self, features: Tensor, n_columns: int, generator: torch.Generator) -> Tensor:
        """Warp, quantise, categorise, blank out and scale raw features [N, f] -> [N, f'] with
        f <= f' <= n_columns (f' - f missing-value indicator columns)."""
        n_rows, n_used = features.shape
        x = _zscore(features.double())  # [N, f]
        kind = torch.rand(n_used, generator=generator, dtype=torch.float64)  # [f], picks a treatment
        warp = self._one(self.warp_fraction, generator)
        quantize = warp + self._one(self.quantize_fraction, generator)
        categorical = quantize + self._one(self.categorical_fraction, generator)
        for j in range(n_used):
            column = x[:, j]
            if kind[j] < warp:
                if torch.rand(1, generator=generator).item() < 0.5:
                    column = torch.exp(column * (0.3 + 1.2 * torch.rand(1, generator=generator).item()))
                else:
                    power = math.exp(torch.randn(1, generator=generator).item() * 0.5)
                    column = column.sign() * column.abs() ** power
            elif kind[j] < categorical:
                top = 10 if kind[j] < quantize else self.max_categories
                levels = int(torch.randint(2, top + 1, (1,), generator=generator).item())
                column = self._rank_bins(column, levels, shuffle=kind[j] >= quantize, generator=generator)
            x[:, j] = column
        if torch.rand(1, generator=generator).item() < self.missing_probability and n_rows > 1:
            x = self._blank_out(x, generator)
        missing = torch.isnan(x)  # [N, f]
        x = robust_scale(x).nan_to_num(0.0)  # [N, f]
        has_missing = missing.any(dim=0).nonzero().squeeze(1)[: n_columns - n_used]  # [k]
        if len(has_missing):
            x = torch.cat([x, robust_scale(missing[:, has_missing].double())], dim=1)  # [N, f + k]
        return x.float()

    def _rank_bins(self, column: Tensor, levels: int, shuffle: bool, generator: torch.Generator) -> Tensor:
        """Codes 0..levels-1 from cut points at random ranks; in random order when ``shuffle``."""
        n = column.shape[0]
        cuts = column.sort().values[torch.randint(0, n, (levels - 1,), generator=generator)]  # [levels - 1]
        codes = (column[:, None] > cuts[None, :]).sum(1)  # [N]
        if shuffle:
            codes = torch.randperm(levels, generator=generator)[codes]
        return codes.double()

    def _blank_out(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Missing values in a random subset of columns, at random or depending on the value."""
        n_rows, n_used = x.shape
        rate = self.max_missing_rate * torch.rand(1, generator=generator, dtype=torch.float64).item()
        columns = torch.rand(n_used, generator=generator) < torch.rand(1, generator=generator).item()  # [f]
        if torch.rand(1, generator=generator).item() < 0.5:
            p = torch.full_like(x, rate)  # completely at random
        else:  # more likely missing at high (or low) values
            sign = torch.where(torch.rand(n_used, generator=generator) < 0.5, -1.0, 1.0).double()  # [f]
            p = 2 * rate * torch.sigmoid(2 * sign * _zscore(x.nan_to_num(0.0)))  # [N, f]
        blank = (torch.rand(x.shape, generator=generator, dtype=torch.float64) < p) & columns[None, :]
        blank[torch.randint(0, n_rows, (1,), generator=generator)] = False  # keep one observed row
        return x.masked_fill(blank, float("nan"))
