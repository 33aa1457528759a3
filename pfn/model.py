"""The set-valued transformer of a PFN.

Two encoders (``ModelConfig.encoder``):

- "rows": a row is one token, enc_x(x) (+ enc_y(y) for a train row), with x's features in
  fixed slots of one linear map;
- "cells": every cell is a token, enc(x_ij) from one shared scalar encoder, plus a target cell
  per row (enc_y(y) for a train row, a learned "unknown" vector for a test row). Each block
  first lets the cells of a row attend to each other (feature attention: no column has a
  position, so the model is invariant to the order of the columns), then each column's cells
  attend along the rows; a test row's output is read from its target cell.

There is no positional encoding over rows, so the model is a function of sets. In every
row-wise attention all rows attend to the train rows only: train rows never see test rows, and a
test row sees no other test row. Hence (a) the train rows' per-layer keys and values do not
depend on the test rows and can be cached (:meth:`PFNTransformer.encode_train`), and (b) a test
row's output depends only on itself and the set of train rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a PFN.

    task: "regression" (bar-distribution head with n_outputs buckets) or "classification"
        (n_outputs classes). n_features: the most columns a dataset may have, the padded
        width of every input (each dataset's own count of used columns is passed separately).
    norm: "layer" (LayerNorm) or "rms" (RMSNorm) in the blocks and before the decoder.
    thinking_rows: learned tokens that join the train rows in every layer (all rows attend to
        them, they attend to the train rows and each other): scratch space for the model.
    residual_decay: the residual stream is multiplied by residual_decay**i before block i
        (1.0: no decay).
    encoder: "rows" or "cells" (see the module docstring). With "cells" no weight depends on
        n_features, which only bounds the columns a dataset may have.
    scalar_embedding: "linear" (each value enters as itself) or "rbf" (as itself and
        RBF_CENTRES Gaussian bumps on [-3, 3], a radial-basis expansion of each scalar).
    """

    task: Literal["regression", "classification"] = "regression"
    n_features: int = 5
    n_outputs: int = 500
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 256
    norm: Literal["layer", "rms"] = "layer"
    thinking_rows: int = 0
    residual_decay: float = 1.0
    encoder: Literal["rows", "cells"] = "rows"
    scalar_embedding: Literal["linear", "rbf"] = "linear"

    def __post_init__(self) -> None:
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        for name in ("n_features", "d_model", "n_layers", "n_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_outputs < 2:
            raise ValueError(f"n_outputs must be >= 2 (buckets or classes), got {self.n_outputs}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.norm not in ("layer", "rms"):
            raise ValueError(f"norm must be 'layer' or 'rms', got {self.norm!r}")
        if self.thinking_rows < 0:
            raise ValueError(f"thinking_rows must be >= 0, got {self.thinking_rows}")
        if not 0.0 < self.residual_decay <= 1.0:
            raise ValueError(f"residual_decay must be in (0, 1], got {self.residual_decay}")
        if self.encoder not in ("rows", "cells"):
            raise ValueError(f"encoder must be 'rows' or 'cells', got {self.encoder!r}")
        if self.scalar_embedding not in ("linear", "rbf"):
            raise ValueError(f"scalar_embedding must be 'linear' or 'rbf', got {self.scalar_embedding!r}")

    @property
    def scalar_width(self) -> int:
        """Numbers each input value becomes before the linear encoder (see scalar_embedding)."""
        return 1 if self.scalar_embedding == "linear" else 1 + RBF_CENTRES

    def make_norm(self) -> nn.Module:
        """The normalisation layer the config names, over d_model."""
        return nn.LayerNorm(self.d_model) if self.norm == "layer" else nn.RMSNorm(self.d_model)


KVCache = list[tuple[Tensor, Tensor]]  # per layer: keys, values [B·C, H, T + n_train, D/H] (C = 1 for "rows")
RBF_CENTRES = 8  # Gaussian bumps of width 6 / RBF_CENTRES on [-3, 3] (scalar_embedding = "rbf")

# In bf16 on a CPU (measured on AVX-512 without AMX), PyTorch's fused (flash) attention is
# 1.6-3.6x slower than three plain ops at short contexts, until the score tensor outgrows the
# last-level cache; in fp32 and on GPUs the fused kernel wins. Measured by `pfn bench throughput`
# (docs/benchmarks.md, "Training throughput").
PLAIN_ATTENTION_MAX_SCORES = 2**23  # elements of the [B, H, N, n] score tensor (16 MB in bf16)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ / √(D/H)) v for q [B, H, N, D/H], k and v [B, H, n, D/H] -> [B, H, N, D/H],
    by the faster kernel for the dtype, device and size (see PLAIN_ATTENTION_MAX_SCORES).
    mask [B, 1, 1, n] (bool, True: attend) leaves keys out."""
    if picks_plain_attention(q, k):
        return plain_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def picks_plain_attention(q: Tensor, k: Tensor) -> bool:
    """Whether :func:`attention` runs plain ops (else torch's fused kernel) for q and k."""
    b, h, n_query, _ = q.shape
    small = b * h * n_query * k.shape[2] <= PLAIN_ATTENTION_MAX_SCORES
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and small


def plain_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """:func:`attention` as three plain ops (the score tensor is materialised)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [B, H, N, n]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # [B, H, N, D/H]


class Block(nn.Module):
    """Pre-norm transformer block whose attention reads keys and values of train rows only."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.norm1 = config.make_norm()
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = config.make_norm()
        self.ff1 = nn.Linear(d, config.d_ff)
        self.ff2 = nn.Linear(config.d_ff, d)
        zeros = [self.out, self.ff2]
        if config.encoder == "cells":  # attention across the cells of a row
            self.norm_f = config.make_norm()
            self.qkv_f = nn.Linear(d, 3 * d)
            self.out_f = nn.Linear(d, d)
            zeros.append(self.out_f)
        for zero in zeros:  # each block starts as the identity
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)  # [B, H, N, D/H]

    def forward(
        self,
        h: Tensor,
        n_train: int | None,
        kv: tuple[Tensor, Tensor] | None = None,
        test_only: bool = False,
        columns: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Row tokens h [B, N, D], or cell tokens h [B, N, C, D] with ``columns`` [B, C] (bool:
        a real column), whose rows first mix their cells, then each column runs as a sequence of
        rows: the same as below on [B·C, N, D], with the result back as [B, N', C, D]."""
        if h.ndim == 3:
            return self._along_rows(h, n_train, kv, test_only)
        b, n, c, d = h.shape
        a = self.norm_f(h).reshape(b * n, c, d)
        q, k, v = (self._heads(t) for t in self.qkv_f(a).split(d, dim=-1))  # 3 x [B·N, H, C, D/H]
        mask = columns[:, None, None, None, :].expand(b, n, 1, 1, c).reshape(b * n, 1, 1, c)
        o = attention(q, k, v, mask).transpose(1, 2).reshape(b, n, c, d)  # [B, N, C, D]
        h = h + self.out_f(o)
        flat = h.transpose(1, 2).reshape(b * c, n, d)  # [B·C, N, D]
        flat, kv = self._along_rows(flat, n_train, kv, test_only)
        return flat.view(b, c, -1, d).transpose(1, 2), kv  # [B, N', C, D]

    def _along_rows(
        self, h: Tensor, n_train: int | None, kv: tuple[Tensor, Tensor] | None, test_only: bool
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """h [B, N, D]. Either n_train (the first n_train rows are train rows; keys and values
        come from them) or kv, cached train keys/values. Returns (h [B, N, D], (k, v)); with
        test_only (and n_train), h holds only the test rows, [B, N - n_train, D]: the last block
        needs no outputs for train rows, since nothing reads them."""
        a = self.norm1(h)
        d = a.shape[-1]
        if kv is None:
            q, k, v = self.qkv(a).split(d, dim=-1)  # 3 x [B, N, D]
            k, v = self._heads(k[:, :n_train]), self._heads(v[:, :n_train])  # [B, H, n, D/H]
            if test_only:
                q, h = q[:, n_train:], h[:, n_train:]  # [B, N - n, D]
        else:
            q = F.linear(a, self.qkv.weight[:d], self.qkv.bias[:d])  # [B, N, D]
            k, v = kv
        o = attention(self._heads(q), k, v)  # [B, H, N, D/H]
        h = h + self.out(o.transpose(1, 2).reshape(h.shape))  # [B, N, D]
        h = h + self.ff2(F.gelu(self.ff1(self.norm2(h))))  # [B, N, D]
        return h, (k, v)


class PFNTransformer(nn.Module):
    """x-encoder, y-encoder, blocks and an output MLP; see the module docstring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        cells = config.encoder == "cells"
        self.x_encoder = nn.Linear(config.scalar_width * (1 if cells else config.n_features), d)
        if config.task == "classification":
            self.y_encoder: nn.Module = nn.Embedding(config.n_outputs, d)
        else:
            self.y_encoder = nn.Linear(1, d)
        if cells:
            self.unknown_y = nn.Parameter(torch.randn(d))  # a test row's target cell
        if config.thinking_rows:
            self.thinking = nn.Parameter(torch.randn(config.thinking_rows, d))  # [T, D]
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = config.make_norm()
        self.decoder = nn.Sequential(nn.Linear(d, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.n_outputs))

    def _scalars(self, x: Tensor) -> Tensor:
        """x [..., F] -> [..., F, W]: each value, and with "rbf" its Gaussian bumps."""
        if self.config.scalar_embedding == "linear":
            return x[..., None]
        centres = torch.linspace(-3.0, 3.0, RBF_CENTRES, dtype=x.dtype, device=x.device)
        bumps = torch.exp(-0.5 * ((x[..., None] - centres) * (RBF_CENTRES / 6.0)) ** 2)
        return torch.cat([x[..., None], bumps], dim=-1)

    def embed_x(self, x: Tensor, used: Tensor) -> tuple[Tensor, Tensor | None]:
        """x [B, N, F] with zero padding beyond used [B] -> (tokens, columns).

        "rows": tokens [B, N, D], columns None; features are rescaled by F / used so the
        input scale does not depend on the used count. "cells": tokens [B, N, C + 1, D] for the
        first C = max(used) columns and a target cell holding the "unknown" vector;
        columns [B, C + 1] marks the real ones (True) against padding."""
        if self.config.encoder == "rows":
            scale = self.config.n_features / used.to(x.dtype).clamp_min(1)  # [B]
            x = x * scale[:, None, None]
            if self.config.scalar_embedding == "linear":
                return self.x_encoder(x), None
            return self.x_encoder(self._scalars(x).flatten(-2)), None
        c = int(used.max())
        cells = self.x_encoder(self._scalars(x[:, :, :c]))  # [B, N, C, D]
        unknown = self.unknown_y.to(cells.dtype).expand(*cells.shape[:2], 1, -1)  # [B, N, 1, D]
        columns = torch.arange(c + 1, device=x.device) < used[:, None]  # [B, C + 1]
        columns[:, c] = True  # the target cell
        return torch.cat([cells, unknown], dim=2), columns

    def embed_y(self, y: Tensor) -> Tensor:
        """y [B, n] -> [B, n, D]."""
        if self.config.task == "classification":
            return self.y_encoder(y.long())
        return self.y_encoder(y.to(self.x_encoder.weight.dtype)[..., None])

    def _train_tokens(self, h_train: Tensor, y_train: Tensor) -> Tensor:
        """Train rows' tokens with their targets, behind the thinking rows: [B, T + n, (C + 1,) D]."""
        y = self.embed_y(y_train)  # [B, n, D]
        if h_train.ndim == 3:
            h_train = h_train + y
        else:  # the target cell holds y
            h_train = torch.cat([h_train[:, :, :-1], y[:, :, None].to(h_train.dtype)], dim=2)
        if not self.config.thinking_rows:
            return h_train
        thinking = self.thinking.to(h_train.dtype)  # [T, D]
        if h_train.ndim == 4:
            thinking = thinking[:, None].expand(-1, h_train.shape[2], -1)  # [T, C + 1, D]
        return torch.cat([thinking.expand(h_train.shape[0], *thinking.shape), h_train], dim=1)

    def _decode(self, h: Tensor) -> Tensor:
        """Test rows' tokens [B, M, (C + 1,) D] -> outputs [B, M, n_outputs] (cells: the target cell)."""
        return self.decoder(self.norm(h if h.ndim == 3 else h[:, :, -1]))

    def _decayed(self, h: Tensor, layer: int) -> Tensor:
        decay = self.config.residual_decay
        return h if decay == 1.0 or layer == 0 else h * decay**layer

    def forward(self, x: Tensor, y_train: Tensor, used: Tensor) -> Tensor:
        """x [B, N, F] (train rows first), y_train [B, n], used [B] -> outputs for the
        test rows [B, N - n, n_outputs] (bucket logits or class logits)."""
        n_train = y_train.shape[1]
        if n_train < 1:
            raise ValueError("a PFN needs at least one train row")
        h, columns = self.embed_x(x, used)  # [B, N, (C + 1,) D]
        h_train = self._train_tokens(h[:, :n_train], y_train)  # [B, T + n, (C + 1,) D]
        h = torch.cat([h_train, h[:, n_train:]], dim=1)  # [B, T + N, (C + 1,) D]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # the last block keeps test rows only
            h, _ = block(self._decayed(h, i), h_train.shape[1], test_only=i == last, columns=columns)
        return self._decode(h)  # [B, N - n, n_outputs]

    def encode_train(self, x_train: Tensor, y_train: Tensor, used: Tensor) -> KVCache:
        """The train rows' keys and values in every layer, to reuse for any test rows."""
        h, columns = self.embed_x(x_train, used)
        h = self._train_tokens(h, y_train)  # [B, T + n, (C + 1,) D]
        cache: KVCache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(self._decayed(h, i), h.shape[1], columns=columns)
            cache.append(kv)
        return cache

    def predict_test(self, cache: KVCache, x_test: Tensor, used: Tensor) -> Tensor:
        """Outputs [B, M, n_outputs] for x_test [B, M, F] given a cache from encode_train."""
        h, columns = self.embed_x(x_test, used)  # [B, M, (C + 1,) D]
        for i, (block, kv) in enumerate(zip(self.blocks, cache, strict=True)):
            h, _ = block(self._decayed(h, i), None, kv, columns=columns)
        return self._decode(h)
