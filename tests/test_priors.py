import dataclasses
import math
import typing

import numpy as np
import pytest
import torch
from conftest import gen
from scipy import stats
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.tree import DecisionTreeRegressor

import priors
from priors import (
    BNNPrior,
    Classification,
    Gamma,
    GPPrior,
    IrrelevantFeatures,
    LinearPrior,
    LogUniform,
    Mixture,
    ReLUNetPrior,
    SCMPrior,
    SparseLinearPrior,
    Standardized,
    TreePrior,
    WarpedTargets,
    scm,
)
from priors.base import categorical_codes, correlated_normal
from priors.gp import JITTER, gp_predictive
from priors.scm import robust_scale

ALL = [
    GPPrior(),
    GPPrior(
        kernel="matern52",
        lengthscale=Gamma(2.0, 4.0),
        outputscale=LogUniform(0.5, 2.0),
        noise=Gamma(2, 20),
        ard=True,
        inputs="normal",
    ),
    BNNPrior(),
    BNNPrior(inputs="correlated"),
    LinearPrior(),
    LinearPrior(inputs="correlated", max_features=4),
    SparseLinearPrior(k=2),
    ReLUNetPrior(),
    TreePrior(),
    Mixture(components=(GPPrior(), LinearPrior(inputs="uniform")), weights=(0.3, 0.7)),
    Classification(base=BNNPrior(), max_classes=5),
    Standardized(base=GPPrior(outputscale=4.0)),
    IrrelevantFeatures(base=LinearPrior(max_features=3), probability=0.7),
    WarpedTargets(base=BNNPrior(), probability=0.7),
]


@pytest.mark.parametrize("prior", ALL, ids=lambda p: p.name)
def test_shapes_padding_and_reproducibility(prior):
    a = prior.sample(8, 30, 6, gen(1))
    b = prior.sample(8, 30, 6, gen(1))
    c = prior.sample(8, 30, 6, gen(2))
    assert a.x.shape == (8, 30, 6) and a.x.dtype == torch.float32
    assert a.y.shape == (8, 30)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    unused = torch.arange(6)[None, :] >= a.used_features[:, None]  # [B, F]
    assert bool((a.x.abs().sum(1)[unused] == 0).all())
    assert bool((a.x.abs().sum(1)[~unused] > 0).all())
    assert bool(torch.isfinite(a.y.float()).all())
    assert priors.from_dict(prior.to_dict()) == prior


def test_used_features_cover_the_range():
    batch = GPPrior(min_features=2, max_features=4).sample(400, 3, 5, gen())
    assert set(batch.used_features.tolist()) == {2, 3, 4}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: GPPrior(lengthscale=-1.0), "lengthscale must be > 0"),
        (lambda: GPPrior(noise=-0.1), "noise must be >= 0"),
        (lambda: GPPrior(kernel="cosine"), "kernel must be"),
        (lambda: Gamma(-1, 1), "concentration > 0"),
        (lambda: GPPrior(min_features=3, max_features=2), "max_features"),
        (lambda: Mixture(components=(GPPrior(),), weights=(0.5, 0.5)), "1 components but 2 weights"),
        (lambda: Mixture(components=(GPPrior(), Classification(base=GPPrior())), weights=(1, 1)), "one task"),
        (lambda: Classification(base=GPPrior(), min_classes=1), "min_classes"),
        (lambda: BNNPrior(activations=("swish",)), "activations"),
        (lambda: LinearPrior(inputs="lognormal"), "inputs must be one of 'uniform', 'normal', 'correlated'"),
    ],
)
def test_impossible_settings_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "args, message",
    [((0, 10, 5), "batch_size, n_rows and n_features must all be >= 1"), ((4, 10, 3), "more than the 3 columns")],
)
def test_impossible_requests_are_rejected(args, message):
    with pytest.raises(ValueError, match=message):
        GPPrior(max_features=5).sample(*args, gen())


def test_from_dict_names_unknown_keys_and_types():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lenghtscale'\]"):
        priors.from_dict({"type": "gp", "lenghtscale": 0.5})
    with pytest.raises(ValueError, match="unknown prior type 'gpp'"):
        priors.from_dict({"type": "gpp"})
    spec = {
        "type": "mixture",
        "components": [
            {"type": "gp", "lengthscale": {"dist": "gamma", "concentration": 2, "rate": 3}},
            {"type": "linear"},
        ],
        "weights": [1, 2],
    }
    prior = priors.from_dict(spec)
    assert prior.components[0].lengthscale == Gamma(2, 3) and prior.weights == (1, 2)


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_gp_covariance_matches_the_textbook_formula(kernel):
    x1, x2 = torch.rand(1, 7, 3, generator=gen()), torch.rand(1, 4, 3, generator=gen(1))
    k = GPPrior(kernel=kernel).covariance(x1, x2, torch.tensor([0.6]), torch.tensor([2.0]))[0]
    r = torch.cdist(x1[0].double(), x2[0].double()) / 0.6
    if kernel == "rbf":
        expected = 2.0 * torch.exp(-0.5 * r**2)
    else:
        expected = 2.0 * (1 + math.sqrt(5) * r + 5 / 3 * r**2) * torch.exp(-math.sqrt(5) * r)
    torch.testing.assert_close(k, expected)


def test_gp_samples_are_whitened_by_the_prior_covariance():
    """y ~ N(0, K + σ²I): L⁻¹y must be standard normal (checked with a KS test)."""
    prior = GPPrior(lengthscale=0.3, noise=0.2, max_features=2)
    batch = prior.sample(300, 12, 2, gen(3))
    n = batch.x.shape[0]
    cov = prior.covariance(batch.x, batch.x, torch.full((n,), 0.3), torch.ones(n)) + 0.04 * torch.eye(12)
    z = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), batch.y.double()[..., None], upper=False)
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("ard", [False, True])
def test_gp_targets_equal_the_textbook_draw(ard):
    """f = chol(K + jitter · I) z, y = f + noise · ε, from the same random stream (the sampler adds
    the jitter in place and multiplies on the factor's transpose)."""
    hyper = {"lengthscale": LogUniform(0.1, 1.0), "outputscale": LogUniform(0.3, 3.0), "noise": LogUniform(0.01, 0.3)}
    prior = GPPrior(**hyper, ard=ard)  # gp-hyper's hyperpriors
    x, n_features = torch.rand(6, 40, 3, generator=gen(5)), torch.tensor([1, 2, 3, 3, 2, 1])
    y = prior.targets(x, n_features, gen(6))  # [B, N]
    generator = gen(6)
    drawn = prior.draw_hyperparameters(n_features, generator)
    lengthscale = drawn["lengthscale"]
    if ard:  # padded to the 3 columns as the sampler does; the padded columns of x are used here
        lengthscale = torch.nn.functional.pad(lengthscale, (0, 3 - lengthscale.shape[1]), value=1.0)
    cov = prior.covariance(x, x, lengthscale, drawn["outputscale"])  # [B, N, N]
    jitter = JITTER * drawn["outputscale"][:, None, None] * torch.eye(40, dtype=torch.float64)
    z = torch.randn(6, 40, 1, generator=generator, dtype=torch.float64)  # [B, N, 1]
    f = (torch.linalg.cholesky(cov + jitter) @ z).squeeze(-1)  # [B, N]
    expected = f + drawn["noise"][:, None] * torch.randn(6, 40, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_gp_posterior_matches_scikit_learn():
    prior = GPPrior(kernel="matern52", lengthscale=0.4, outputscale=1.5, noise=0.3)
    batch = prior.sample(1, 25, 2, gen(4))
    x_train, y_train, x_test = batch.x[:, :20], batch.y[:, :20], batch.x[:, 20:]
    mean, var = prior.posterior_predictive(x_train, y_train, x_test)
    kernel = ConstantKernel(1.5) * Matern(0.4, nu=2.5) + WhiteKernel(0.09)
    gpr = GaussianProcessRegressor(kernel, optimizer=None).fit(x_train[0].numpy(), y_train[0].numpy())
    ref_mean, ref_sd = gpr.predict(x_test[0].numpy(), return_std=True)
    np.testing.assert_allclose(mean[0].numpy(), ref_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var[0].numpy(), ref_sd**2, rtol=1e-4, atol=1e-5)
    # per-dataset hyperparameters take the same path
    mean2, _ = gp_predictive(prior, x_train, y_train, x_test, torch.tensor([0.4]), torch.tensor([1.5]), 0.09)
    torch.testing.assert_close(mean, mean2)


def test_gp_posterior_refuses_hyperpriors():
    with pytest.raises(ValueError, match="fixed hyperparameters"):
        GPPrior(lengthscale=Gamma(2, 2)).posterior_predictive(
            torch.zeros(1, 2, 1), torch.zeros(1, 2), torch.zeros(1, 1, 1)
        )


def test_correlated_inputs_have_unit_marginals_and_span_independent_to_collinear():
    x = correlated_normal(300, 4000, 4, gen(3))  # [B, N, F]
    torch.testing.assert_close(x.mean(1), torch.zeros(300, 4), atol=0.1, rtol=0)
    torch.testing.assert_close(x.var(1), torch.ones(300, 4), atol=0.12, rtol=0)
    corr = torch.stack([torch.corrcoef(d.T) for d in x])  # [B, F, F]
    strongest = corr.masked_fill(torch.eye(4, dtype=torch.bool), 0).abs().amax(dim=(1, 2))  # [B]
    assert (strongest < 0.2).float().mean() > 0.02  # some datasets near independent
    assert (strongest > 0.9).float().mean() > 0.05  # some near collinear
    assert strongest.median() > 0.5
    one_column = correlated_normal(50, 2000, 1, gen(3))  # a single column is still N(0, 1)
    torch.testing.assert_close(one_column.var(1), torch.ones(50, 1), atol=0.12, rtol=0)


def test_categorical_inputs_are_few_standardised_levels_in_random_order():
    latent = correlated_normal(200, 500, 3, gen(4))  # [B, N, F]
    x = categorical_codes(latent, gen(5))  # [B, N, F]
    torch.testing.assert_close(x.mean(1), torch.zeros(200, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(1), torch.ones(200, 3), atol=1e-4, rtol=0)
    counts = torch.tensor([[len(torch.unique(x[b, :, f])) for f in range(3)] for b in range(200)])  # [B, F]
    assert counts.min() >= 1 and counts.max() <= 6
    assert set(counts.flatten().tolist()) >= {2, 3, 4, 5, 6}
    # each level is an interval of the latent column, but the codes are not in the latent's order
    monotone = []
    for b in range(50):
        for f in range(3):
            order = latent[b, :, f].argsort()
            steps = x[b, order, f].diff()
            assert (steps != 0).sum() == counts[b, f] - 1  # one change per cut point
            monotone.append(bool((steps >= 0).all() or (steps <= 0).all()))
    assert 0.2 < np.mean(monotone) < 0.9  # 2 levels are always monotone, more levels rarely
    batch = TreePrior(inputs="categorical", depth=3, n_trees=4, max_features=5).sample(8, 300, 5, gen(6))
    for xb, yb, used in zip(batch.x, batch.y, batch.used_features, strict=True):
        assert (xb[:, used:] == 0).all()
        _, group = torch.unique(xb[:, :used], dim=0, return_inverse=True)  # rows with equal codes
        for g in group.unique():
            assert yb[group == g].unique().numel() == 1  # a noiseless tree is a function of the codes


def test_categorical_inputs_take_up_to_max_levels():
    batch = TreePrior(inputs="categorical", max_levels=16, max_features=3, min_features=3).sample(64, 2000, 3, gen(7))
    counts = [len(torch.unique(batch.x[b, :, f])) for b in range(64) for f in range(3)]
    assert max(counts) > 10 and max(counts) <= 16
    with pytest.raises(ValueError, match="max_levels must be an integer >= 2"):
        TreePrior(inputs="categorical", max_levels=1)


def test_linear_prior_is_exactly_linear_in_the_used_features():
    batch = LinearPrior(min_features=4, max_features=4).sample(5, 20, 6, gen())
    for x, y in zip(batch.x, batch.y, strict=True):
        w, residual, *_ = np.linalg.lstsq(x[:, :4].numpy(), y.numpy(), rcond=None)
        assert residual.item() < 1e-8


def test_sparse_linear_uses_k_features():
    batch = SparseLinearPrior(k=3, min_features=8, max_features=8).sample(10, 40, 8, gen())
    for x, y in zip(batch.x, batch.y, strict=True):
        w = np.linalg.lstsq(x.numpy(), y.numpy(), rcond=None)[0]
        assert (np.abs(w) > 1e-4).sum() == 3


def test_tree_prior_is_piecewise_constant_with_at_most_16_leaves():
    batch = TreePrior(depth=4).sample(10, 500, 5, gen())
    for y in batch.y:
        assert 1 < len(torch.unique(y)) <= 16


def test_tree_ensemble_is_the_scaled_sum_of_its_trees():
    """n_trees trees summed over sqrt(n_trees): the same draws as the single trees one after another,
    and unit variance whatever the count."""
    x = torch.randn(4, 300, 5, generator=gen(3))
    used = torch.full((4,), 5)
    single, ensemble = TreePrior(depth=3), TreePrior(depth=3, n_trees=4)
    generator = gen(8)
    trees = [single.function(x, used, generator) for _ in range(4)]
    torch.testing.assert_close(ensemble.function(x, used, gen(8)), sum(trees) / 2.0)
    many = TreePrior(depth=3, n_trees=64).sample(64, 400, 5, gen(2)).y
    assert abs(float(many.var()) - 1.0) < 0.15
    with pytest.raises(ValueError, match="n_trees must be in 1..256"):
        TreePrior(n_trees=0)


def test_relu_net_is_positively_homogeneous_in_scale():
    """f(x) = Σ a_j ReLU(w_j·x) has f(c·x) = c·f(x): same seed with inputs scaled gives scaled y."""
    prior = ReLUNetPrior(min_features=3, max_features=3)
    batch = prior.sample(4, 50, 3, gen(9))
    y_scaled = prior.function(batch.x * 3.0, batch.used_features, gen(5))
    y_plain = prior.function(batch.x, batch.used_features, gen(5))
    torch.testing.assert_close(y_scaled, 3.0 * y_plain, rtol=1e-4, atol=1e-4)


def test_bnn_prior_respects_noise_free_determinism_and_scale():
    prior = BNNPrior(noise=0.0, min_layers=2, max_layers=2, activations=("identity",))
    batch = prior.sample(6, 40, 3, gen())
    for x, y, d in zip(batch.x, batch.y, batch.used_features, strict=True):  # identity MLP -> linear map
        design = np.c_[x[:, :d].numpy(), np.ones(40)]
        assert np.linalg.lstsq(design, y.numpy(), rcond=None)[1].item() < 1e-6 * max(1.0, float((y**2).sum()))


def test_function_noise_may_be_drawn_per_dataset():
    fixed = LinearPrior(max_features=2, noise=0.3)
    assert torch.equal(fixed.sample(4, 30, 2, gen(7)).y, fixed.sample(4, 30, 2, gen(7)).y)
    clean = LinearPrior(max_features=2).sample(200, 400, 2, gen(7))
    noisy = LinearPrior(max_features=2, noise=LogUniform(0.01, 1.0)).sample(200, 400, 2, gen(7))
    assert torch.equal(clean.x, noisy.x)  # the function is drawn first, the noise after
    std = (noisy.y - clean.y).std(1)  # [B]: each dataset's own noise level
    assert 0.005 < std.min() < 0.02 and 0.7 < std.max() < 1.1
    assert priors.from_dict(LinearPrior(noise=LogUniform(0.01, 1.0)).to_dict()).noise == LogUniform(0.01, 1.0)


def test_mixture_draws_components_in_proportion():
    mix = Mixture(components=(LinearPrior(noise=0.0), TreePrior()), weights=(0.25, 0.75))
    batch = mix.sample(400, 60, 3, gen())
    tree_like = torch.tensor([len(torch.unique(y)) <= 8 for y in batch.y]).float().mean().item()
    assert abs(tree_like - 0.75) < 0.08


def test_classification_adapter_labels_and_permutation():
    prior = Classification(base=GPPrior(), min_classes=2, max_classes=6, rank_fraction=1.0)
    batch = prior.sample(200, 80, 5, gen())
    assert batch.y.dtype == torch.int64
    counts = [len(torch.unique(y)) for y in batch.y]
    assert min(counts) >= 2 and max(counts) == 6
    for y in batch.y:  # with rank thresholds every class 0..k-1 occurs
        assert torch.unique(y).tolist() == list(range(len(torch.unique(y))))
    # the class order is random: label 0 is not always the smallest y
    first = [
        y[batch_y.argmin()].item() for y, batch_y in zip(batch.y, GPPrior().sample(200, 80, 5, gen()).y, strict=True)
    ]
    assert len(set(first)) > 1


def test_prototype_classes_are_unordered_cells_and_leave_interval_sampling_unchanged():
    base = GPPrior(max_features=3)
    cells = Classification(base=base, max_classes=6, prototype_fraction=1.0).sample(100, 60, 4, gen(1))
    intervals = Classification(base=base, max_classes=6, rank_fraction=1.0).sample(100, 60, 4, gen(1))
    base_y = base.sample(100, 60, 4, gen(1)).y

    def ordinal(labels, y):  # each class is an interval of y: sorted by y, labels change k-1 times
        changes = (labels[y.argsort()].diff() != 0).sum().item()
        return changes == len(torch.unique(labels)) - 1

    for labels in cells.y:
        assert torch.unique(labels).tolist() == list(range(len(torch.unique(labels))))  # every cell has its prototype
    assert all(ordinal(lab, y) for lab, y in zip(intervals.y, base_y, strict=True))
    assert sum(ordinal(lab, y) for lab, y in zip(cells.y, base_y, strict=True)) < 50
    default = Classification(base=base, max_classes=6).sample(10, 30, 4, gen(2))
    explicit = Classification(base=base, max_classes=6, prototype_fraction=0.0).sample(10, 30, 4, gen(2))
    assert torch.equal(default.y, explicit.y)
    with pytest.raises(ValueError, match="prototype_fraction must be in"):
        Classification(base=base, prototype_fraction=2.0)


def test_standardized_targets_have_zero_mean_and_unit_variance():
    batch = Standardized(base=LinearPrior(weight_std=5.0)).sample(20, 50, 3, gen())
    torch.testing.assert_close(batch.y.double().mean(1), torch.zeros(20, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.y.double().std(1), torch.ones(20, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs a regression prior"):
        Standardized(base=Classification(base=GPPrior()))


def test_irrelevant_features_are_shuffled_copies_and_keep_the_signal():
    base = LinearPrior(min_features=2, max_features=2, noise=0.0)
    batch = IrrelevantFeatures(base=base, probability=1.0, max_ratio=3.0).sample(40, 50, 8, gen())
    assert bool((batch.used_features > 2).all() and (batch.used_features <= 8).all())
    assert batch.used_features.max() > 4  # up to 3x the used columns are added
    for x, y, d in zip(batch.x, batch.y, batch.used_features, strict=True):
        columns = x[:, :d].numpy()
        assert np.linalg.lstsq(columns, y.numpy(), rcond=None)[1].item() < 1e-8  # y = x @ w survives
        distinct = {tuple(np.sort(c)) for c in columns.T}  # every added column has a source's values
        assert len(distinct) == 2
        assert len({tuple(c) for c in columns.T}) == d  # ...in another row order
        assert bool((x[:, d:] == 0).all())


def test_irrelevant_features_with_probability_zero_leave_the_base_unchanged():
    base = GPPrior(max_features=3)
    plain = base.sample(10, 20, 6, gen(5))
    wrapped = IrrelevantFeatures(base=base, probability=0.0).sample(10, 20, 6, gen(5))
    assert torch.equal(plain.x, wrapped.x) and torch.equal(plain.y, wrapped.y)
    assert IrrelevantFeatures(base=Classification(base=base)).task == "classification"
    with pytest.raises(ValueError, match="probability must be in"):
        IrrelevantFeatures(base=base, probability=1.5)


def test_warped_targets_keep_the_order_and_take_the_three_shapes():
    base = GPPrior(max_features=2, noise=0.01)
    plain = base.sample(60, 80, 2, gen(6))
    warped = WarpedTargets(base=base, probability=1.0).sample(60, 80, 2, gen(6))
    assert torch.equal(plain.x, warped.x) and bool(torch.isfinite(warped.y).all())
    skews, spikes, levels = 0, 0, 0
    for before, after in zip(plain.y.double(), warped.y.double(), strict=True):
        order = torch.argsort(before)
        assert bool((after[order].diff() >= -1e-5 * after.abs().max()).all())  # non-decreasing in y
        distinct = len(torch.unique(after))
        third_moment = (((after - after.mean()) / after.std()) ** 3).mean().abs()
        levels += distinct <= 10
        spikes += 10 < distinct < 80
        skews += distinct == 80 and bool(third_moment > 0.5)
    assert skews > 5 and spikes > 5 and levels > 5  # each kind about a third of the 60
    untouched = WarpedTargets(base=base, probability=0.0).sample(60, 80, 2, gen(6))
    assert torch.equal(untouched.y, plain.y)
    with pytest.raises(ValueError, match="needs a regression prior"):
        WarpedTargets(base=Classification(base=base))
    with pytest.raises(ValueError, match="probability must be in"):
        WarpedTargets(base=base, probability=-0.1)


# ---------------------------------------------------------------- the SCM prior


def test_scm_draws_finite_padded_reproducible_tables():
    prior = SCMPrior(max_features=12, missing_probability=0.5)
    a, b = prior.sample(6, 40, 16, gen(3)), prior.sample(6, 40, 16, gen(3))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert bool(torch.isfinite(a.x).all() and torch.isfinite(a.y).all())
    unused = torch.arange(16)[None, :] >= a.used_features[:, None]  # [B, F]
    assert bool((a.x.abs().sum(1)[unused] == 0).all())
    assert int(a.used_features.max()) <= 16
    assert priors.from_dict(prior.to_dict()) == prior


def test_scm_features_are_scaled_like_the_estimators_scale_a_table():
    from sklearn.preprocessing import RobustScaler

    from pfn.preprocessing import soft_clip

    x = torch.randn(200, 5, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0, 100.0]) + 7
    expected = soft_clip(RobustScaler(unit_variance=True).fit_transform(x.numpy()))
    np.testing.assert_allclose(robust_scale(x).numpy(), expected, rtol=1e-6, atol=1e-9)


def test_scm_categorical_columns_have_few_codes():
    prior = SCMPrior(
        min_features=4,
        max_features=4,
        warp_fraction=0.0,
        quantize_fraction=0.0,
        categorical_fraction=1.0,
        max_categories=3,
        missing_probability=0.0,
    )
    batch = prior.sample(10, 200, 4, gen())
    for table in batch.x:
        for column in table.T:
            assert 1 <= len(torch.unique(column)) <= 3


def test_scm_missing_values_come_with_indicator_columns():
    prior = SCMPrior(min_features=3, max_features=3, missing_probability=1.0, max_missing_rate=0.9)
    batch = prior.sample(20, 100, 8, gen())
    assert int(batch.used_features.min()) >= 3 and int(batch.used_features.max()) > 3
    for table, used in zip(batch.x, batch.used_features, strict=True):
        for column in table[:, 3:used].T:  # the indicator columns: two values, missing or not
            assert len(torch.unique(column)) == 2


def test_scm_tree_mechanism_is_piecewise_constant():
    prior = SCMPrior(
        min_layers=1, max_layers=1, tree_probability=1.0, max_tree_depth=3, node_noise=0.0, target_noise=0.0
    )
    y = prior.sample(10, 300, 5, gen()).y
    for target in y:  # a depth-3 tree has at most 8 leaves
        assert len(torch.unique(target)) <= 8


def test_scm_tree_layer_skips_sklearn_checks_without_changing_the_trees(monkeypatch):
    """The tree layer fits and predicts with check_input=False for speed; trees fitted through
    sklearn's input checks give exactly the same nodes."""

    class CheckedTree(DecisionTreeRegressor):
        def fit(self, X, y, sample_weight=None, check_input=True):
            return super().fit(X, y, sample_weight=sample_weight, check_input=True)

        def predict(self, X, check_input=True):
            return super().predict(X, check_input=True)

    prior = SCMPrior()
    h = torch.randn(300, 12, generator=gen(1))
    fast = prior._tree_layer(h, 12, gen(2))
    monkeypatch.setattr(scm, "DecisionTreeRegressor", CheckedTree)
    assert torch.equal(prior._tree_layer(h, 12, gen(2)), fast)
    assert len(torch.unique(fast[:, 0])) > 1


def test_scm_relevance_power_reads_features_off_nodes_that_depend_on_the_target():
    def best_dependence(prior):  # per dataset: the strongest |correlation| of a column (or its square) with y
        batch = prior.sample(60, 200, 8, gen(4))
        out = []
        for x, y, d in zip(batch.x.double(), batch.y.double(), batch.used_features, strict=True):
            z = torch.cat([x[:, :d], x[:, :d] ** 2], 1)
            z = (z - z.mean(0)) / z.std(0).clamp_min(1e-9)
            out.append(((z * ((y - y.mean()) / y.std())[:, None]).mean(0).abs().max()).item())
        return np.array(out)

    uniform = best_dependence(SCMPrior(max_features=3, missing_probability=0.0))
    relevant = best_dependence(SCMPrior(max_features=3, missing_probability=0.0, relevance_power=3.0))
    assert np.median(relevant) > np.median(uniform) + 0.1
    assert (relevant < 0.1).mean() < (uniform < 0.1).mean()  # fewer tables with nothing to learn


def test_scm_classification_covers_2_to_10_classes():
    batch = Classification(base=SCMPrior(), max_classes=10).sample(200, 60, 10, gen())
    counts = {int(torch.unique(y).numel()) for y in batch.y}
    assert 2 in counts and max(counts) >= 9 and int(batch.y.max()) <= 9


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SCMPrior(activations=("swish",)), "activations must be a non-empty subset"),
        (lambda: SCMPrior(max_missing_rate=1.0), "max_missing_rate must be < 1"),
        (lambda: SCMPrior(min_layers=3, max_layers=2), "min_layers <= max_layers"),
        (lambda: SCMPrior(max_categories=1), "max_categories must be >= 2"),
    ],
)
def test_scm_rejects_impossible_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_wrapper_writes_one_method_and_the_base_owns_the_plumbing():
    @dataclasses.dataclass(frozen=True)
    class Doubled(priors.Wrapper):
        name: typing.ClassVar[str] = "doubled"
        base_task: typing.ClassVar[str | None] = None

        def change(self, batch, generator):
            return priors.Batch(x=batch.x, y=2 * batch.y, used_features=batch.used_features)

    base = Classification(base=GPPrior(max_features=4), max_classes=3)
    wrapped = Doubled(base=base)
    assert wrapped.task == "classification" and wrapped.n_classes == 3
    torch.testing.assert_close(wrapped.sample(3, 20, 4, gen(5)).y, 2 * base.sample(3, 20, 4, gen(5)).y)
    with pytest.raises(ValueError, match="GPPrior uses up to 4 features, more than the 2 columns"):
        wrapped.sample(1, 20, 2, gen())  # the base's feature check
    with pytest.raises(ValueError, match="Doubled needs a base prior, got 'gp'"):
        Doubled(base="gp")


def test_a_wrapper_description_without_its_base_is_refused_by_name():
    with pytest.raises(ValueError, match="prior 'standardized': .*missing 1 required .*'base'"):
        priors.from_dict({"type": "standardized"})


def test_priors_that_separate_noise_carry_the_targets_before_it():
    bo = priors.BOGPPrior(max_features=3, noise=0.2)
    bnn = BNNPrior(max_features=3, noise=0.3)
    for prior, std in ((bo, 0.2), (bnn, 0.3)):
        batch = prior.sample(64, 200, 3, gen(3))
        assert prior.separates_noise and batch.clean_y.shape == batch.y.shape
        assert abs(float((batch.y - batch.clean_y).std()) - std) < 0.02  # exactly the observation noise
        assert torch.equal(prior.sample(64, 200, 3, gen(3)).y, batch.y)  # the same draws as before
    quiet = priors.BOGPPrior(max_features=3, noise=0.0).sample(4, 50, 3, gen(1))
    assert torch.allclose(quiet.y, quiet.clean_y)
    # wrappers that change y as a function of the dataset change clean_y the same way, or drop it
    standardized = Standardized(base=Mixture(components=(bo, bnn), weights=(0.5, 0.5)))
    batch = standardized.sample(8, 100, 3, gen(5))
    raw = Mixture(components=(bo, bnn), weights=(0.5, 0.5)).sample(8, 100, 3, gen(5))
    scale = raw.y.double().std(1, keepdim=True)
    expected = (raw.clean_y.double() - raw.y.double().mean(1, keepdim=True)) / scale
    assert standardized.separates_noise and torch.allclose(batch.clean_y.double(), expected, atol=1e-5)
    assert IrrelevantFeatures(base=bo).separates_noise
    for prior in (WarpedTargets(base=bo), Mixture(components=(bo, LinearPrior()), weights=(0.5, 0.5)), LinearPrior()):
        assert not prior.separates_noise
    assert WarpedTargets(base=bo).sample(4, 30, 3, gen()).clean_y is None
