"""The attention rule and its consequences: test rows are independent, train rows are a set."""

import pytest
import torch
from conftest import gen

import pfn.model
from pfn.model import ModelConfig, PFNTransformer, attention


def make_model(task="regression", n_outputs=20):
    torch.manual_seed(0)
    model = PFNTransformer(
        ModelConfig(task=task, n_features=4, n_outputs=n_outputs, d_model=32, n_layers=3, n_heads=4, d_ff=64)
    )
    for p in model.parameters():  # blocks start as the identity; make every path matter
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def data(task="regression"):
    g = gen(3)
    x = torch.randn(2, 30, 4, generator=g)
    y = torch.randn(2, 30, generator=g) if task == "regression" else torch.randint(0, 5, (2, 30), generator=g)
    return x, y, torch.tensor([4, 3])


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_a_test_row_ignores_other_test_rows(task):
    model, (x, y, d) = make_model(task), data(task)
    out = model(x, y[:, :20], d)  # [2, 10, K]
    x2 = x.clone()
    x2[:, 21:] = torch.randn(2, 9, 4, generator=gen(7)) * 5  # change every test row but the first
    out2 = model(x2, y[:, :20], d)
    torch.testing.assert_close(out2[:, 0], out[:, 0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out2[:, 1:], out[:, 1:])
    alone = model(x[:, :21], y[:, :20], d)  # the first test row on its own
    torch.testing.assert_close(alone[:, 0], out[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_predictions_are_invariant_to_train_row_order(task):
    model, (x, y, d) = make_model(task), data(task)
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


def test_cached_train_keys_give_the_same_outputs():
    model, (x, y, d) = make_model(), data()
    out = model(x, y[:, :20], d)
    cache = model.encode_train(x[:, :20], y[:, :20], d)
    assert len(cache) == 3 and cache[0][0].shape == (2, 4, 20, 8)
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
    torch.testing.assert_close(model.embed_x(x, torch.tensor([2])), model.embed_x(2 * x, torch.tensor([4])))


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="task must be"):
        ModelConfig(task="ranking")


def test_at_least_one_train_row():
    model, (x, y, d) = make_model(), data()
    with pytest.raises(ValueError, match="at least one train row"):
        model(x, y[:, :0], d)
