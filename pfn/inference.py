"""A loaded PFN: the transformer, its card and the low-level ``predict``."""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pfn.checkpoint import InferenceConfig, load_model_files
from pfn.heads import BarDistribution, smoothed_logits, smoothing_matrix
from pfn.model import KVCache, ModelConfig, PFNTransformer

# predict computes in float32 while every |input| is at most FLOAT32_SAFE (the shipped models'
# float32 outputs break down between 1e18 and 1e19, where the first normalisation's variance
# overflows), in float64 up to FLOAT64_SAFE (that variance overflows float64 near 1e154).
FLOAT32_SAFE = 1e15
FLOAT64_SAFE = 1e100


class PFN:
    """A trained PFN. ``card`` is its JSON card as a dict; ``predict`` runs one forward pass."""

    def __init__(
        self,
        model: PFNTransformer,
        card: dict[str, Any],
        borders: Tensor | None,
        tail_scales: tuple[float, float] | None = None,
        density_smoothing: float = 0.0,
    ) -> None:
        self.model = model.eval()
        self.card = card
        self.borders = borders  # [K + 1] for regression models, else None
        self.tail_scales = tail_scales  # the bar distribution's (left, right) tails; None: the width rule
        if not (math.isfinite(density_smoothing) and density_smoothing >= 0):
            raise ValueError(f"density_smoothing must be a finite number >= 0, got {density_smoothing}")
        if density_smoothing > 0 and borders is None:
            raise ValueError("density_smoothing smooths a regression model's buckets; this model has none")
        self.density_smoothing = density_smoothing  # see InferenceConfig
        # [K, K] float64 (pfn.heads.smoothing_matrix), None without smoothing
        self._smoothing = smoothing_matrix(borders, density_smoothing) if density_smoothing > 0 else None

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> PFN:
        self.model.to(device)
        return self

    @classmethod
    def from_files(cls, name_or_path: str | os.PathLike[str]) -> PFN:
        """Load a checkpoint; :func:`pfn.checkpoint.load_model_files` checks the card and weights."""
        card, tensors = load_model_files(name_or_path)
        model = PFNTransformer(ModelConfig(**card["model"]))
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
        borders = tail_scales = None
        if model.config.task == "regression":
            borders = torch.tensor(card["borders"], dtype=torch.float32)
            tails = card.get("tail_scales")  # cards from before tail scales have none: the width rule
            if tails is not None:
                tail_scales = (float(tails[0]), float(tails[1]))
        return cls(model, card, borders, tail_scales, InferenceConfig.from_card(card).density_smoothing)

    def unsmoothed(self) -> PFN:
        """The same network and card without the card's density smoothing (its raw buckets)."""
        return PFN(self.model, self.card, self.borders, self.tail_scales)

    def head_logits(self, out: Tensor) -> Tensor:
        """The network's outputs [..., K] as the logits it predicts with: a regression model's
        after the card's density smoothing (differentiable), else ``out``."""
        return out if self._smoothing is None else smoothed_logits(out, self._smoothing)

    def prepare(
        self, x_train: Any, y_train: Any, x_test: Any, used_features: Any = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
        """Validate and batch inputs: x_train [B, n, F], y_train [B, n], x_test [B, m, F] (padded
        to the model's feature count), used_features [B], and whether a batch dim was given.
        ``used_features`` [B] (batched inputs only): each dataset's used (leading) columns, the
        rest being zeros, so datasets of different widths share one forward pass. The tensors are
        float32, or float64 when some |value| exceeds FLOAT32_SAFE (see :meth:`predict`)."""
        xt, x_largest = _as_float_tensor(x_train, "x_train")
        yt, y_largest = _as_float_tensor(y_train, "y_train")
        xq, q_largest = _as_float_tensor(x_test, "x_test")
        if max(x_largest, y_largest, q_largest) <= FLOAT32_SAFE:
            xt, yt, xq = xt.float(), yt.float(), xq.float()
        batched = xt.ndim == 3
        if not batched:
            if xt.ndim != 2 or yt.ndim != 1 or xq.ndim != 2:
                raise ValueError(
                    "expected x_train [n, d], y_train [n], x_test [m, d] (or with a leading batch dim); got "
                    f"shapes {tuple(xt.shape)}, {tuple(yt.shape)}, {tuple(xq.shape)}"
                )
            xt, yt, xq = xt[None], yt[None], xq[None]
        if yt.ndim != 2 or xq.ndim != 3:
            raise ValueError(
                f"batched inputs need shapes [B, n, d], [B, n], [B, m, d]; got {tuple(yt.shape)}, {tuple(xq.shape)}"
            )
        if xt.shape[:2] != yt.shape or xt.shape[0] != xq.shape[0] or xt.shape[2] != xq.shape[2]:
            raise ValueError(
                f"inconsistent shapes: x_train {tuple(xt.shape)}, y_train {tuple(yt.shape)}, x_test {tuple(xq.shape)}"
            )
        n_train, d = xt.shape[1], xt.shape[2]
        if n_train < 1:
            raise ValueError("need at least one train row")
        if d > self.config.n_features:
            raise ValueError(f"the inputs have {d} features but this model takes at most {self.config.n_features}")
        if self.task == "classification":
            if bool((yt != yt.round()).any()) or bool((yt < 0).any()) or bool((yt >= self.config.n_outputs).any()):
                raise ValueError(f"y_train must hold class labels 0..{self.config.n_outputs - 1}")
        used = self._used_features(used_features, xt, xq, batched)  # [B]
        xt, padded = self.pad_features(xt)  # [B, n, F], [B]
        xq, _ = self.pad_features(xq)  # [B, m, F]
        return xt, yt, xq, padded if used is None else used, batched

    @staticmethod
    def _used_features(used_features: Any, xt: Tensor, xq: Tensor, batched: bool) -> Tensor | None:
        """``used_features`` checked against the batched inputs [B, ., d] (None when not given)."""
        if used_features is None:
            return None
        if not batched:
            raise ValueError("used_features is for batched inputs [B, n, d]; leave it out for a single dataset")
        used = torch.as_tensor(used_features)
        if used.shape != (xt.shape[0],) or used.is_floating_point():
            raise ValueError(f"used_features must be integers of shape [{xt.shape[0]}], got {tuple(used.shape)}")
        d = xt.shape[2]
        if bool((used < 1).any()) or bool((used > d).any()):
            raise ValueError(f"used_features must lie in 1..{d} (the inputs' column count), got {used.tolist()}")
        beyond = torch.arange(d) >= used[:, None]  # [B, d]
        if bool((xt * beyond[:, None]).any()) or bool((xq * beyond[:, None]).any()):
            raise ValueError("columns beyond used_features must be zero padding; some hold values")
        return used.long()

    def pad_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zero-pad x [B, r, d] to the model's feature count: x [B, r, F] and the used count [B]."""
        d = x.shape[-1]
        used = torch.full((x.shape[0],), max(d, 1), dtype=torch.long)  # [B]
        return torch.nn.functional.pad(x, (0, self.config.n_features - d)), used

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Inference mode (no autograd records); on a GPU also bf16 autocast (fp32 on CPU, where
        bf16 is rarely faster)."""
        device = self.device.type
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            yield

    def encode_train(self, x_train: Tensor, y_train: Tensor, used: Tensor) -> KVCache:
        """The train rows' per-layer keys and values (see PFNTransformer.encode_train)."""
        device = self.device
        with self.inference():
            return self.model.encode_train(x_train.to(device), y_train.to(device), used.to(device))

    def predict_test(self, cache: KVCache, x_test: Tensor, used: Tensor) -> Tensor:
        """fp32 outputs [B, m, K] for x_test [B, m, F] given ``cache`` from :meth:`encode_train`
        (regression: bucket logits after the card's density smoothing)."""
        with self.inference():
            out = self.model.predict_test(cache, x_test.to(self.device), used.to(self.device)).float()
        return self.head_logits(_finite_outputs(out, x_test))

    def predict(
        self, x_train: Any, y_train: Any, x_test: Any, used_features: Any = None, *, n_features: Any = None
    ) -> BarDistribution | Tensor:
        """One forward pass. Regression: a BarDistribution over y_test [m] (or [B, m]), after the
        card's density smoothing (:meth:`unsmoothed` for the raw buckets);
        classification: class probabilities [m, K] (or [B, m, K]) over the head's K classes.
        ``used_features`` [B]: per-dataset column counts of zero-padded batched inputs (see
        prepare); ``n_features`` is its former name, deprecated.

        Inputs with some |value| above FLOAT32_SAFE (1e15) run through a float64 copy of the
        network (in float32 its first normalisation overflows from about 1e19 and is inexact
        before); above FLOAT64_SAFE (1e100) they are refused, as are NaN and infinite values."""
        if n_features is not None:
            if used_features is not None:
                raise TypeError("give used_features only; n_features is its deprecated former name")
            warnings.warn(
                "PFN.predict(n_features=...) is renamed used_features=...; "
                "n_features will be removed in a future version",
                FutureWarning,
                stacklevel=2,
            )
            used_features = n_features
        xt, yt, xq, used, batched = self.prepare(x_train, y_train, x_test, used_features)
        device = self.device
        rows = torch.cat([xt, xq], dim=1).to(device)  # [B, n + m, F], train rows first
        if rows.dtype == torch.float64:
            with torch.inference_mode():
                model = copy.deepcopy(self.model).double()
                out = model(rows, yt.to(device), used.to(device)).float()  # [B, m, K]
        else:
            with self.inference():
                out = self.model(rows, yt.to(device), used.to(device)).float()  # [B, m, K]
        out = _finite_outputs(out if batched else out[0], rows, yt)
        if self.task == "classification":
            return out.softmax(-1)
        return BarDistribution(self.borders.to(device), self.head_logits(out), self.tail_scales)


def _finite_outputs(out: Tensor, *inputs: Tensor) -> Tensor:
    """``out`` if it is finite; else a ValueError naming the inputs' largest magnitude."""
    if math.isfinite(_largest(out)):
        return out
    largest = max(_largest(t) for t in inputs)
    raise ValueError(
        f"the network's outputs are not finite for these inputs (largest |value| {largest:.3g}): "
        "rescale x and y to the range of the model's prior (its card's 'prior'), e.g. standardise them"
    )


def _largest(t: Tensor) -> float:
    """The largest |value| of t (0 if it is empty; NaN if it holds NaN): one reduction, several
    times faster than torch.isfinite(t).all() on the network's outputs."""
    return float(t.abs().max()) if t.numel() else 0.0


def _as_float_tensor(value: Any, name: str) -> tuple[Tensor, float]:
    """``value`` as a float64 tensor (on its device if a tensor) and its largest |value|, refused
    if it is not numeric, holds NaN or infinite values, or holds values beyond FLOAT64_SAFE."""
    if isinstance(value, Tensor) and value.is_complex():
        raise ValueError(f"{name} must be real numbers, got a {value.dtype} tensor")
    try:
        t = value.detach().double() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value, np.float64))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from None
    largest = _largest(t)
    if not math.isfinite(largest):
        raise ValueError(f"{name} contains NaN or infinite values: drop or impute those rows first")
    if largest > FLOAT64_SAFE:
        raise ValueError(
            f"{name} holds values up to {largest:.3g} in magnitude, beyond what the network can compute with "
            f"(|value| <= {FLOAT64_SAFE:.0e}): rescale it to the range of the model's prior, e.g. standardise it"
        )
    return t, largest


def load(name_or_path: str | os.PathLike[str]) -> PFN:
    """Load a shipped checkpoint by name (a str; see ``pfn.shipped_names()``) or from a path (str
    or pathlib.Path) to its .safetensors file, its .json card or its run folder. Raises
    CheckpointError for a missing, altered or invalid checkpoint, TypeError for another type."""
    return PFN.from_files(name_or_path)
