"""The set-valued transformer of a PFN.

Rows are tokens; there is no positional encoding, so the model is a function of sets.
A train row's token is enc_x(x) + enc_y(y); a test row's token is enc_x(x) alone. In every
layer all rows attend to the train rows only: train rows never see test rows, and a test row
sees no other test row. Hence (a) the train rows' per-layer keys and values do not depend on
the test rows and can be cached (:meth:`PFNTransformer.encode_train`), and (b) a test row's
output depends only on itself and the set of train rows.
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
        (n_outputs classes). n_features: the padded feature count the x-encoder takes.
    """

    task: Literal["regression", "classification"] = "regression"
    n_features: int = 5
    n_outputs: int = 500
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 256

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


KVCache = list[tuple[Tensor, Tensor]]  # per layer: keys, values [B, H, n_train, D/H]

# In bf16 on a CPU (measured on AVX-512 without AMX), PyTorch's fused (flash) attention is
# 1.6-3.6x slower than three plain ops at short contexts, until the score tensor outgrows the
# last-level cache; in fp32 and on GPUs the fused kernel wins. Measured by `pfn bench throughput`
# (docs/benchmarks.md, "Training throughput").
PLAIN_ATTENTION_MAX_SCORES = 2**23  # elements of the [B, H, N, n] score tensor (16 MB in bf16)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q kᵀ / √(D/H)) v for q [B, H, N, D/H], k and v [B, H, n, D/H] -> [B, H, N, D/H],
    by the faster kernel for the dtype, device and size (see PLAIN_ATTENTION_MAX_SCORES)."""
    return plain_attention(q, k, v) if picks_plain_attention(q, k) else F.scaled_dot_product_attention(q, k, v)


def picks_plain_attention(q: Tensor, k: Tensor) -> bool:
    """Whether :func:`attention` runs plain ops (else torch's fused kernel) for q and k."""
    b, h, n_query, _ = q.shape
    small = b * h * n_query * k.shape[2] <= PLAIN_ATTENTION_MAX_SCORES
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and small


def plain_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """:func:`attention` as three plain ops (the score tensor is materialised)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [B, H, N, n]
    return scores.softmax(dim=-1) @ v  # [B, H, N, D/H]


class Block(nn.Module):
    """Pre-norm transformer block whose attention reads keys and values of train rows only."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, config.d_ff)
        self.ff2 = nn.Linear(config.d_ff, d)
        for zero in (self.out, self.ff2):  # each block starts as the identity
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)  # [B, H, N, D/H]

    def forward(
        self, h: Tensor, n_train: int | None, kv: tuple[Tensor, Tensor] | None = None, test_only: bool = False
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
        self.x_encoder = nn.Linear(config.n_features, d)
        if config.task == "classification":
            self.y_encoder: nn.Module = nn.Embedding(config.n_outputs, d)
        else:
            self.y_encoder = nn.Linear(1, d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        self.decoder = nn.Sequential(nn.Linear(d, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.n_outputs))

    def embed_x(self, x: Tensor, n_features: Tensor) -> Tensor:
        """x [B, N, F] with zero padding beyond n_features [B] -> [B, N, D]; features are
        rescaled by F / n_features so the input scale does not depend on the used count."""
        scale = self.config.n_features / n_features.to(x.dtype).clamp_min(1)  # [B]
        return self.x_encoder(x * scale[:, None, None])

    def embed_y(self, y: Tensor) -> Tensor:
        """y [B, n] -> [B, n, D]."""
        if self.config.task == "classification":
            return self.y_encoder(y.long())
        return self.y_encoder(y.to(self.x_encoder.weight.dtype)[..., None])

    def forward(self, x: Tensor, y_train: Tensor, n_features: Tensor) -> Tensor:
        """x [B, N, F] (train rows first), y_train [B, n], n_features [B] -> outputs for the
        test rows [B, N - n, n_outputs] (bucket logits or class logits)."""
        n_train = y_train.shape[1]
        if n_train < 1:
            raise ValueError("a PFN needs at least one train row")
        h = self.embed_x(x, n_features)  # [B, N, D]
        h = torch.cat([h[:, :n_train] + self.embed_y(y_train), h[:, n_train:]], dim=1)  # [B, N, D]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h, _ = block(h, n_train, test_only=i == last)  # the last block keeps test rows only
        return self.decoder(self.norm(h))  # [B, N - n, n_outputs]

    def encode_train(self, x_train: Tensor, y_train: Tensor, n_features: Tensor) -> KVCache:
        """The train rows' keys and values in every layer, to reuse for any test rows."""
        h = self.embed_x(x_train, n_features) + self.embed_y(y_train)  # [B, n, D]
        cache: KVCache = []
        for block in self.blocks:
            h, kv = block(h, h.shape[1])
            cache.append(kv)
        return cache

    def predict_test(self, cache: KVCache, x_test: Tensor, n_features: Tensor) -> Tensor:
        """Outputs [B, M, n_outputs] for x_test [B, M, F] given a cache from encode_train."""
        h = self.embed_x(x_test, n_features)  # [B, M, D]
        for block, kv in zip(self.blocks, cache, strict=True):
            h, _ = block(h, None, kv)
        return self.decoder(self.norm(h))
