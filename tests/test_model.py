"""The attention rule and its consequences: test rows are independent, train rows are a set."""

import pytest
import torch
from conftest import gen

import pfn.model
from pfn.model import ModelConfig, PFNTransformer, attention

# the architecture options that change the forward pass; each must keep the attention rule
VARIANTS = {
    "default": {},
    "thinking-rms-decay": {"thinking_rows": 3, "norm": "rms", "residual_decay": 0.9},
    "rbf": {"scalar_embedding": "rbf"},
    "cells": {"encoder": "cells"},
    "cells-rbf-thinking": {"encoder": "cells", "scalar_embedding": "rbf", "thinking_rows": 2},
}


def make_model(task="regression", n_outputs=20, **options):
    torch.manual_seed(0)
    model = PFNTransformer(
        ModelConfig(task=task, n_features=4, n_outputs=n_outputs, d_model=32, n_layers=3, n_heads=4, d_ff=64, **options)
    )
    for p in model.parameters():  # blocks start as the identity; make every path matter
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def data(task="regression"):
    g = gen(3)
    x = torch.randn(2, 30, 4, generator=g)
    y = torch.randn(2, 30, generator=g) if task == "regression" else torch.randint(0, 5, (2, 30), generator=g)
    return x, y, torch.tensor([4, 3])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_a_test_row_ignores_other_test_rows(task, variant):
    model, (x, y, d) = make_model(task, **VARIANTS[variant]), data(task)
    out = model(x, y[:, :20], d)  # [2, 10, K]
    x2 = x.clone()
    x2[:, 21:] = torch.randn(2, 9, 4, generator=gen(7)) * 5  # change every test row but the first
    out2 = model(x2, y[:, :20], d)
    torch.testing.assert_close(out2[:, 0], out[:, 0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out2[:, 1:], out[:, 1:])
    alone = model(x[:, :21], y[:, :20], d)  # the first test row on its own
    torch.testing.assert_close(alone[:, 0], out[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_predictions_are_invariant_to_train_row_order(task, variant):
    model, (x, y, d) = make_model(task, **VARIANTS[variant]), data(task)
    out = model(x, y[:, :20], d)
    perm = torch.randperm(20, generator=gen(5))
    x2 = torch.cat([x[:, perm], x[:, 20:]], dim=1)
    out2 = model(x2, y[:, perm], d)
    torch.testing.assert_close(out2, out, rtol=1e-5, atol=1e-5)


def test_predictions_depend_on_train_labels():
    model, (x, y, d) = make_model(), data()
    y2 = y.clone()
    y2[:, 3] += 2.0
    assert not torch.allclose(model(x, y[:, :20], d), model(x, y2[:, :20], d))


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_train_keys_give_the_same_outputs(variant):
    model, (x, y, d) = make_model(**VARIANTS[variant]), data()
    out = model(x, y[:, :20], d)
    cache = model.encode_train(x[:, :20], y[:, :20], d)
    thinking = VARIANTS[variant].get("thinking_rows", 0)
    sequences = 2 * (4 + 1) if model.config.encoder == "cells" else 2  # cells: one per column and the target
    assert len(cache) == 3 and cache[0][0].shape == (sequences, 4, 20 + thinking, 8)
    torch.testing.assert_close(model.predict_test(cache, x[:, 20:], d), out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.predict_test(cache, x[:, 25:], d), out[:, 5:], rtol=1e-5, atol=1e-5)


def test_a_block_asked_for_test_rows_only_returns_exactly_those_rows():
    block = make_model().blocks[0]
    h = torch.randn(2, 30, 32, generator=gen(4))
    full, kv = block(h, 20)
    test_only, kv_test_only = block(h, 20, test_only=True)
    assert test_only.shape == (2, 10, 32)
    torch.testing.assert_close(test_only, full[:, 20:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kv_test_only, kv)


@pytest.mark.parametrize("plain_max", [0, 2**23], ids=["fused kernel", "plain ops"])
def test_bf16_attention_matches_fp32_reference_with_either_kernel(monkeypatch, plain_max):
    monkeypatch.setattr(pfn.model, "PLAIN_ATTENTION_MAX_SCORES", plain_max)
    g = gen(5)
    q, k, v = (torch.randn(2, 4, n, 8, generator=g) * 2 for n in (30, 20, 20))
    grad = torch.randn(2, 4, 30, 8, generator=g)

    def value_and_grads(dtype, fn):
        leaves = [t.to(dtype, copy=True).requires_grad_() for t in (q, k, v)]
        out = fn(*leaves)
        out.backward(grad.to(dtype))
        return [out.float()] + [t.grad.float() for t in leaves]

    reference = value_and_grads(torch.float32, torch.nn.functional.scaled_dot_product_attention)
    for got, want in zip(value_and_grads(torch.bfloat16, attention), reference, strict=True):
        assert (got - want).norm() / want.norm() < 0.02  # bf16 rounding, not a wrong formula


def test_blocks_start_as_identity():
    torch.manual_seed(0)
    model = PFNTransformer(ModelConfig(n_features=4, n_outputs=10, d_model=16, n_layers=2, n_heads=2, d_ff=32))
    h = torch.randn(1, 7, 16)
    for block in model.blocks:
        torch.testing.assert_close(block(h, 3)[0], h)


def test_features_are_rescaled_by_the_used_count():
    """Zero-padding a 2-feature dataset to 4 columns scales its inputs by 4/2 before encoding."""
    model = make_model()
    x = torch.randn(1, 5, 4)
    x[..., 2:] = 0
    torch.testing.assert_close(model.embed_x(x, torch.tensor([2]))[0], model.embed_x(2 * x, torch.tensor([4]))[0])


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="task must be"):
        ModelConfig(task="ranking")


def test_at_least_one_train_row():
    model, (x, y, d) = make_model(), data()
    with pytest.raises(ValueError, match="at least one train row"):
        model(x, y[:, :0], d)


def test_thinking_rows_are_read_by_every_row_and_learned():
    model, (x, y, d) = make_model(thinking_rows=2), data()
    out = model(x, y[:, :20], d)
    with torch.no_grad():
        model.thinking[0] += 1.0
    assert not torch.allclose(model(x, y[:, :20], d), out)
    model(x, y[:, :20], d).sum().backward()
    assert model.thinking.grad is not None and model.thinking.grad.abs().sum() > 0


def test_residual_decay_scales_the_stream_before_each_block():
    """With decay r the stream entering block i is r**i times what left block i - 1: with every
    block the identity (as at initialisation) the decoder sees the embedding times r**(0+1+2)."""
    torch.manual_seed(0)
    config = ModelConfig(n_features=4, n_outputs=20, d_model=32, n_layers=3, n_heads=4, d_ff=64, residual_decay=0.5)
    model = PFNTransformer(config).eval()
    x, y, d = data()
    seen = []
    model.norm.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    model(x, y[:, :20], d)
    torch.testing.assert_close(seen[0], model.embed_x(x, d)[0][:, 20:] * 0.5**3)


def test_rms_norm_is_used_where_configured():
    model = make_model(norm="rms")
    assert isinstance(model.norm, torch.nn.RMSNorm) and isinstance(model.blocks[0].norm1, torch.nn.RMSNorm)
    assert isinstance(make_model().norm, torch.nn.LayerNorm)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"norm": "batch"}, "norm must be 'layer' or 'rms'"),
        ({"thinking_rows": -1}, "thinking_rows must be >= 0"),
        ({"residual_decay": 0.0}, "residual_decay must be in"),
    ],
)
def test_config_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**options)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_cell_encoder_is_invariant_to_column_order(task):
    model, (x, y, d) = make_model(task, encoder="cells", scalar_embedding="rbf"), data(task)
    d = torch.tensor([4, 4])
    out = model(x, y[:, :20], d)
    torch.testing.assert_close(model(x[:, :, [2, 0, 3, 1]], y[:, :20], d), out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(make_model(task)(x[:, :, [2, 0, 3, 1]], y[:, :20], d), make_model(task)(x, y[:, :20], d))


def test_the_cell_encoder_ignores_padded_columns():
    model, (x, y, d) = make_model(encoder="cells"), data()  # d = [4, 3]: dataset 1 pads column 3
    out = model(x, y[:, :20], d)
    x2 = x.clone()
    x2[1, :, 3] = 100.0
    torch.testing.assert_close(model(x2, y[:, :20], d), out, rtol=1e-5, atol=1e-5)
    alone = model(x[1:, :, :3], y[1:, :20], torch.tensor([3]))  # the same dataset without the padding
    torch.testing.assert_close(alone, out[1:], rtol=1e-5, atol=1e-5)


def test_rbf_embedding_expands_each_value_into_bumps():
    model = make_model(scalar_embedding="rbf")
    bumps = model._scalars(torch.tensor([[0.0, 3.0]]))  # [1, 2, 1 + RBF_CENTRES]
    assert bumps.shape == (1, 2, 1 + pfn.model.RBF_CENTRES) and bumps[0, 1, -1] == 1.0 and bumps[0, 0, 0] == 0.0
    assert model.x_encoder.in_features == 4 * (1 + pfn.model.RBF_CENTRES)
