import copy
import json

import numpy as np
import pytest
import torch
from helpers import tiny_config

import pfn
from pfn import inference
from pfn.heads import BarDistribution, smoothing_matrix
from pfn.train import train


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    train(tiny_config(), path, progress=False)
    return pfn.load(path)


def test_numpy_and_tensor_inputs_agree(model):
    rng = np.random.default_rng(0)
    x, y = rng.random((25, 3)), rng.standard_normal(20)
    a = model.predict(x[:20], y, x[20:])
    b = model.predict(torch.tensor(x[:20]), torch.tensor(y), torch.tensor(x[20:]))
    assert isinstance(a, BarDistribution) and a.batch_shape == (5,)
    torch.testing.assert_close(a.logits, b.logits)
    for value in (a.mean(), a.median(), a.quantile(0.9), a.cdf(0.0), a.logpdf(np.zeros(5))):
        assert value.shape == (5,)
    assert a.quantile([0.1, 0.9]).shape == (5, 2) and a.sample(7).shape == (7, 5)


def test_batched_equals_unbatched(model):
    rng = np.random.default_rng(1)
    x, y = rng.random((3, 25, 3)), rng.standard_normal((3, 20))
    batched = model.predict(x[:, :20], y, x[:, 20:])
    assert batched.batch_shape == (3, 5)
    for i in range(3):
        one = model.predict(x[i, :20], y[i], x[i, 20:])
        torch.testing.assert_close(batched.logits[i], one.logits, rtol=1e-5, atol=1e-5)


def test_fewer_features_are_zero_padded(model):
    rng = np.random.default_rng(2)
    x, y = rng.random((25, 2)), rng.standard_normal(20)
    padded = np.c_[x, np.zeros(25)]
    a = model.predict(x[:20], y, x[20:])
    cache = model.model.encode_train(
        torch.tensor(padded[None, :20], dtype=torch.float32),
        torch.tensor(y[None], dtype=torch.float32),
        torch.tensor([2]),
    )
    b = model.model.predict_test(cache, torch.tensor(padded[None, 20:], dtype=torch.float32), torch.tensor([2]))
    torch.testing.assert_close(a.logits, b[0])


def test_datasets_of_different_widths_share_one_pass(model):
    """used_features [B] gives each zero-padded dataset its own width: the same as predicting each
    dataset alone on its used columns."""
    rng = np.random.default_rng(3)
    widths = torch.tensor([1, 3, 2])
    x, y = rng.random((3, 25, 3)), rng.standard_normal((3, 20))
    x = x * (np.arange(3)[None, None, :] < widths.numpy()[:, None, None])  # zero beyond each width
    together = model.predict(x[:, :20], y, x[:, 20:], used_features=widths)
    for i, used in enumerate(widths.tolist()):
        alone = model.predict(x[i, :20, :used], y[i], x[i, 20:, :used])
        torch.testing.assert_close(together.logits[i], alone.logits, rtol=1e-5, atol=1e-5)
    with pytest.warns(FutureWarning, match="renamed used_features"):
        old = model.predict(x[:, :20], y, x[:, 20:], n_features=widths)
    torch.testing.assert_close(old.logits, together.logits)
    with pytest.raises(TypeError, match="give used_features only"):
        model.predict(x[:, :20], y, x[:, 20:], widths, n_features=widths)


@pytest.mark.parametrize(
    "used_features, message",
    [
        ([1, 3], "integers of shape \\[3\\]"),
        ([1.0, 2.0, 3.0], "integers of shape"),
        ([0, 2, 3], "must lie in 1..3"),
        ([1, 2, 4], "must lie in 1..3"),
        ([1, 2, 2], "beyond used_features must be zero padding"),
    ],
)
def test_bad_used_features_raise_clear_errors(model, used_features, message):
    x = np.zeros((3, 25, 3))
    x[2, :, 2] = 1.0  # dataset 2 uses its third column
    with pytest.raises(ValueError, match=message):
        model.predict(x[:, :20], np.zeros((3, 20)), x[:, 20:], used_features=used_features)
    with pytest.raises(ValueError, match="for batched inputs"):
        model.predict(x[0, :20], np.zeros(20), x[0, 20:], used_features=[3])


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((5, 4)), np.zeros(5), np.zeros((2, 4))), "at most 3"),
        ((np.zeros((5, 3)), np.zeros(4), np.zeros((2, 3))), "inconsistent shapes"),
        ((np.zeros((5, 3)), np.zeros(5), np.zeros(3)), "expected x_train"),
        ((np.zeros((5, 3)), np.r_[np.zeros(4), np.nan], np.zeros((2, 3))), "y_train contains NaN"),
        ((np.zeros((5, 3)), np.zeros(5), np.full((2, 3), np.inf)), "x_test contains NaN or infinite"),
        ((np.zeros((0, 3)), np.zeros(0), np.zeros((2, 3))), "at least one train row"),
        ((np.zeros((5, 3)), np.array(["a"] * 5), np.zeros((2, 3))), "y_train must be numeric"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, args, message):
    with pytest.raises(ValueError, match=message):
        model.predict(*args)


def test_classification_labels_are_checked(tmp_path):
    train(tiny_config("classification"), tmp_path, progress=False)
    model = pfn.load(tmp_path)
    with pytest.raises(ValueError, match=r"class labels 0..3"):
        model.predict(np.zeros((3, 3)), np.array([0, 1, 7]), np.zeros((1, 3)))


@pytest.mark.parametrize("name", ["gp", "tabular-clf"])
def test_huge_inputs_give_the_limit_of_growing_inputs_not_nan(name):
    """Far from the prior the network's output stops changing as the inputs grow (its
    normalisations are scale-free): float32 reaches that limit by 1e12, and from FLOAT32_SAFE on
    predict computes in float64, where float32 went NaN (1e20) or wrong (1e19)."""
    model = pfn.load(name)
    rng = np.random.default_rng(0)
    x, x_test = rng.random((20, 2)), rng.random((5, 2))
    y = np.sin(6 * x[:, 0]) if model.task == "regression" else (x[:, 0] > 0.5).astype(float)

    def output(scale_x, scale_y=1.0):
        out = model.predict(x * scale_x, y * scale_y, x_test * scale_x)
        return out.logits if model.task == "regression" else out

    limit = output(1e12)
    assert inference.FLOAT32_SAFE == 1e15
    for scale in (0.99e15, 1.01e15, 1e19, 1e20, 1e39, 1e90):
        out = output(scale)
        assert bool(torch.isfinite(out).all())
        torch.testing.assert_close(out, limit, atol=2e-3, rtol=2e-3)
    if model.task == "classification":
        torch.testing.assert_close(output(1e20).sum(-1), torch.ones(5))
    else:
        torch.testing.assert_close(output(1.0, 1e20), output(1.0, 1e12), atol=2e-3, rtol=2e-3)


def test_inputs_beyond_float64s_reach_are_refused(model):
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"y_train holds values up to 1e\+200 in magnitude, .*rescale it"):
        model.predict(x, np.full(5, 1e200), x[:2])
    with pytest.raises(ValueError, match=r"x_test holds values up to 1e\+101"):
        model.predict(x, np.zeros(5), np.full((2, 3), -1e101))


def test_non_finite_outputs_are_refused_not_returned(model):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.model.decoder[-1].bias[0] = float("nan")
    x = np.zeros((5, 3))
    with pytest.raises(
        ValueError, match=r"the network's outputs are not finite for these inputs \(largest \|value\| 1\)"
    ):
        broken.predict(x, np.ones(5), x[:2])
    xt, yt, xq, used, _ = broken.prepare(x, np.ones(5), x[:2])
    with pytest.raises(ValueError, match="the network's outputs are not finite"):
        broken.predict_test(broken.encode_train(xt, yt, used), xq, used)


def test_complex_inputs_are_refused(model):
    x = torch.zeros(5, 3, dtype=torch.complex64)
    with pytest.raises(ValueError, match="x_train must be real numbers, got a torch.complex64 tensor"):
        model.predict(x, np.zeros(5), np.zeros((2, 3)))


def test_the_cards_density_smoothing_applies_to_every_prediction(tmp_path):
    train(tiny_config(), tmp_path, progress=False)
    card_path = tmp_path / "model.json"
    card = json.loads(card_path.read_text())
    raw = pfn.load(tmp_path)
    card_path.write_text(json.dumps({**card, "inference": {"density_smoothing": 0.3}}))
    smoothed = pfn.load(tmp_path)
    assert smoothed.density_smoothing == 0.3 and raw.density_smoothing == 0.0
    rng = np.random.default_rng(0)
    x, y = rng.random((25, 3)), rng.standard_normal(20)
    expected = raw.predict(x[:20], y, x[20:]).probs.double() @ smoothing_matrix(raw.borders, 0.3)  # [5, K]
    torch.testing.assert_close(smoothed.predict(x[:20], y, x[20:]).probs.double(), expected, atol=1e-6, rtol=0)
    xt, yt, xq, used, _ = smoothed.prepare(x[:20], y, x[20:])
    from_cache = smoothed.predict_test(smoothed.encode_train(xt, yt, used), xq, used)[0]  # the estimators' path
    torch.testing.assert_close(from_cache.softmax(-1).double(), expected, atol=1e-6, rtol=0)
    unsmoothed = smoothed.unsmoothed().predict(x[:20], y, x[20:])
    torch.testing.assert_close(unsmoothed.logits, raw.predict(x[:20], y, x[20:]).logits)


@pytest.mark.parametrize(
    "smoothing, borders, message",
    [(-0.1, True, "finite number >= 0"), (float("nan"), True, "finite number >= 0"), (0.1, False, "has none")],
)
def test_a_bad_density_smoothing_is_refused(model, smoothing, borders, message):
    with pytest.raises(ValueError, match=message):
        inference.PFN(model.model, model.card, model.borders if borders else None, None, smoothing)
