"""pfn.bo: acquisition functions, the ask-and-tell optimiser, minimize, the Optuna sampler, the
BO prior and the benchmark's quick mode."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import gen
from scipy.integrate import quad

import pfn
from pfn import bo
from pfn.heads import BarDistribution
from priors import BOGPPrior


@pytest.fixture(scope="module")
def model():
    return pfn.load("bo")


def _bar(seed: int, tails: tuple[float, float] | None) -> BarDistribution:
    borders = torch.cat([torch.tensor([-3.0]), torch.sort(torch.rand(9, generator=gen(seed)) * 4 - 2).values])
    borders = torch.cat([borders, torch.tensor([3.0])])  # 11 borders, 10 buckets
    logits = torch.randn(3, 10, generator=gen(seed + 1))
    return BarDistribution(borders.double(), logits.double(), tails)


@pytest.mark.parametrize("tails", [None, (0.4, 1.3)])
@pytest.mark.parametrize("best", [-4.0, -2.5, -0.3, 0.7, 2.9, 4.5])
def test_expected_improvement_matches_numerical_integration(tails, best):
    """Incumbents in the left tail, inner buckets and the right tail."""
    dist = _bar(3, tails)
    exact = bo.expected_improvement(dist, best)
    points = [b for b in dist.borders.tolist() if b < best]
    for i in range(3):

        def integrand(y, i=i):
            return (best - y) * math.exp(float(dist.logpdf(torch.full((3,), y, dtype=torch.float64))[i]))

        numeric = quad(integrand, -40.0, best, points=points or None, limit=200)[0]
        assert float(exact[i]) == pytest.approx(numeric, rel=1e-6, abs=1e-10)


def test_probability_of_improvement_and_optimistic_quantile():
    dist = _bar(5, (0.5, 0.5))
    assert torch.allclose(bo.probability_of_improvement(dist, 0.2), dist.cdf(0.2))
    level = 0.5 * math.erfc(1.0 / math.sqrt(2))  # kappa = 1: the 15.9% quantile
    assert torch.allclose(bo.optimistic_quantile(dist, 1.0), -dist.quantile(level))


def _told(model, acq_func="EI", n=20, d=3, fail=True):
    """An optimiser told n points of a quadratic in d dimensions (the third one failed)."""
    opt = bo.Optimizer([(0.0, 1.0)] * d, n_initial_points=0, acq_func=acq_func, model=model, random_state=0)
    rng = np.random.default_rng(0)
    for i in range(n):
        x = rng.random(d).tolist()
        opt.tell(x, math.nan if fail and i == 2 else _sphere(x))
    return opt


@pytest.mark.parametrize("acq_func", bo.ACQUISITIONS)
def test_candidate_scores_match_a_plain_forward_pass(model, acq_func):
    """The cached test-row pass and per-bucket EI against PFN.predict on train and candidate
    rows together and the acquisition functions applied to its bar distribution."""
    opt = _told(model, acq_func)
    x_all = np.asarray([opt._encode(p) for p in opt.Xi])
    x_train, y_train, best = opt._train_rows(x_all, np.asarray(opt.yi))
    acquisition = bo._Acquisition(model, x_train, y_train, best, acq_func, opt.kappa)
    u = np.random.default_rng(1).random((300, 3))
    dist = model.predict(x_train, y_train, u)
    reference = {
        "EI": lambda: bo.expected_improvement(dist, best),
        "PI": lambda: bo.probability_of_improvement(dist, best),
        "UCB": lambda: bo.optimistic_quantile(dist, opt.kappa),
    }[acq_func]().numpy()
    assert float((acquisition.logits(u) - dist.logits).abs().max()) < 1e-4
    atol = 1e-5 if acq_func == "UCB" else 1e-6  # the quantile is a float32 value of about 1
    np.testing.assert_allclose(acquisition(u), reference, rtol=0, atol=atol)


def test_best_allowed_candidate_matches_a_full_distance_matrix():
    """The candidate picked in chunks, best first, against every distance at once, with ties,
    evaluated candidates and candidates nearest a failed point."""
    rng = np.random.default_rng(0)
    for trial in range(50):
        x = rng.random((12, 2))
        failed = rng.random(12) < 0.3
        u = np.concatenate([rng.random((300, 2)), x[rng.integers(0, 12, 20)]])  # some evaluated already
        values = np.round(rng.random(len(u)), 1)  # many ties
        values[rng.integers(0, len(u), 40)] = -np.inf
        if trial % 10 == 0:
            values[: len(u) - 1] = -np.inf  # at most one finite value left
        distance = np.sqrt(((u[:, None, :] - x[None]) ** 2).sum(-1))
        excluded = (distance.min(1) < 1e-9) | failed[distance.argmin(1)]
        reference = np.where(excluded, -np.inf, values)
        expected = int(np.argmax(reference)) if np.isfinite(reference).any() else None
        assert bo._best_allowed(u, values, x, failed) == expected


def test_expected_improvement_by_bucket_is_exact_for_several_incumbents():
    """A batch of incumbents gives the same EI as one incumbent at a time."""
    dist = _bar(7, (0.4, 1.3))
    best = torch.tensor([-4.0, -0.3, 0.7, 4.5], dtype=torch.float64)
    batch = bo.expected_improvement(bo.BarDistribution(dist.borders, dist.logits[:1].expand(4, -1), (0.4, 1.3)), best)
    single = torch.stack([bo.expected_improvement(dist, float(b))[0] for b in best])
    assert torch.allclose(batch, single, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("dimensions", "message"),
    [
        ([(1.0, 1.0)], "low must be below high"),
        ([(0.0, 1.0), (5, 2)], "dimension 1: low must be below high"),
        ([(0.0, 1.0, "log-uniform")], "log-uniform dimension needs low > 0"),
        ([(0.0, 1.0, "normal")], "prior must be"),
        ([[]], "at least one category"),
        ([(0.0, math.inf)], "finite numbers"),
        ([], "non-empty list"),
        ([(0.0, 1.0)] * 19, "at most 18"),
    ],
)
def test_bad_dimensions_are_refused(model, dimensions, message):
    with pytest.raises(ValueError, match=message):
        bo.Optimizer(dimensions, model=model)


def test_unknown_acquisition_is_refused(model):
    with pytest.raises(ValueError, match="unknown acq_func 'LCB'; choose one of EI, PI, UCB"):
        bo.Optimizer([(0.0, 1.0)], acq_func="LCB", model=model)


def test_tell_refuses_points_outside_the_space(model):
    opt = bo.Optimizer([(0.0, 1.0), (1, 5), ["a", "b"]], model=model)
    with pytest.raises(ValueError, match="x must be a list of 3 values"):
        opt.tell([0.5, 2], 1.0)
    with pytest.raises(ValueError, match=r"x\[0\] = 1.5 lies outside dimension 0"):
        opt.tell([1.5, 2, "a"], 1.0)
    with pytest.raises(ValueError, match=r"x\[1\] = 2.5 lies outside dimension 1 \(integer"):
        opt.tell([0.5, 2.5, "a"], 1.0)
    with pytest.raises(ValueError, match=r"x\[2\] = 'c' lies outside"):
        opt.tell([0.5, 2, "c"], 1.0)
    with pytest.raises(TypeError, match="y must be a real number"):
        opt.tell([0.5, 2, "a"], "1.0")
    assert opt.Xi == []


def test_ask_tell_round_trip_with_mixed_dimensions(model):
    space = [(-2.0, 3.0), (1, 10), (1e-3, 1.0, "log-uniform"), ["relu", "tanh", None]]
    opt = bo.Optimizer(space, n_initial_points=3, n_candidates=200, model=model, random_state=0)
    for _ in range(8):
        x = opt.ask()
        assert -2 <= x[0] <= 3 and isinstance(x[0], float)
        assert isinstance(x[1], int) and 1 <= x[1] <= 10
        assert 1e-3 <= x[2] <= 1.0
        assert x[3] in ("relu", "tanh", None)
        result = opt.tell(x, (x[0] - 1) ** 2 + x[1] / 10 + (x[3] != "tanh"))
    assert len(result.x_iters) == 8 and result.func_vals.shape == (8,)
    assert result.fun == result.func_vals.min() and result.x == result.x_iters[int(result.func_vals.argmin())]
    again = bo.Optimizer(space, n_initial_points=3, n_candidates=200, model=model, random_state=0)
    first = again.ask()
    assert first == result.x_iters[0]  # the same random_state, the same points


def _sphere(x):
    return float(sum((v - 0.3) ** 2 for v in x))


def test_minimize_beats_random_search_on_a_simple_function(model):
    space = [(-1.0, 1.0)] * 3
    result = bo.minimize(_sphere, space, n_calls=20, random_state=1, model=model)
    rng = np.random.default_rng(1)
    random_best = min(_sphere(rng.uniform(-1, 1, 3)) for _ in range(20))
    assert result.fun < 0.3 * random_best
    assert len(result.x_iters) == 20 and result.n_failed == 0


def test_failed_evaluations_are_recorded_and_their_region_avoided(model):
    def func(x):
        if x[0] > 0.6:
            raise RuntimeError("simulation diverged")
        return math.nan if x[1] > 0.8 else _sphere(x)

    result = bo.minimize(func, [(0.0, 1.0), (0.0, 1.0)], n_calls=20, n_initial_points=4, random_state=0, model=model)
    failed = np.isnan(result.func_vals)
    assert failed.sum() == result.n_failed >= 1
    assert math.isfinite(result.fun) and result.x[0] <= 0.6 and result.x[1] <= 0.8
    points = np.array(result.x_iters)
    for i in range(4, 20):  # no proposal lies nearer a failed point than every other evaluated one
        nearest = np.linalg.norm(points[:i] - points[i], axis=1).argmin()
        assert not failed[nearest]


def test_all_evaluations_failing_gives_an_empty_result(model):
    result = bo.minimize(lambda x: math.nan, [(0.0, 1.0)], n_calls=4, n_initial_points=2, model=model, random_state=0)
    assert result.x is None and math.isnan(result.fun) and result.n_failed == 4


def test_optuna_sampler_with_float_int_categorical_and_failures(model):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def objective(trial):
        x = trial.suggest_float("x", -2.0, 2.0)
        n = trial.suggest_int("n", 1, 9, step=2)
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        kind = trial.suggest_categorical("kind", ["a", "b", None])
        if x > 1.5:
            raise RuntimeError("diverged")
        if x < -1.5:
            return math.nan
        return (x - 0.5) ** 2 + abs(n - 5) / 4 + abs(math.log10(lr) + 2) / 2 + (kind != "b")

    sampler = bo.PFNSampler(n_startup_trials=4, model=model, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=20, catch=(RuntimeError,))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 20 and len(complete) >= 10
    for t in study.trials:
        assert t.params["n"] in (1, 3, 5, 7, 9) and 1e-4 <= t.params["lr"] <= 1.0
        assert t.params["kind"] in ("a", "b", None)
    random = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    random.optimize(objective, n_trials=20, catch=(RuntimeError,))
    assert study.best_value < random.best_value


def test_optuna_sampler_maximises(model):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=bo.PFNSampler(n_startup_trials=3, model=model, seed=1))
    study.optimize(lambda t: -((t.suggest_float("x", 0.0, 10.0) - 7.0) ** 2), n_trials=12)
    assert abs(study.best_params["x"] - 7.0) < 0.5


def test_importing_pfn_bo_loads_neither_optuna_nor_botorch():
    code = "import sys, pfn, pfn.bo\nprint(sorted(m for m in ('optuna', 'botorch', 'pfn.bo') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pfn.bo']"


def test_bo_prior_draws_standard_inputs_and_refuses_bad_settings():
    batch = BOGPPrior(min_features=2, max_features=5, noise=0.0).sample(16, 40, 8, gen(0))
    assert batch.x.shape == (16, 40, 8) and batch.y.shape == (16, 40)
    assert 0 <= float(batch.x.min()) and float(batch.x.max()) <= 1
    for b in range(16):
        assert not batch.x[b, :, int(batch.used_features[b]) :].any()
    assert bool(torch.isfinite(batch.y).all()) and float(batch.y.std()) > 0.1
    with pytest.raises(ValueError, match="inputs must be 'uniform'"):
        BOGPPrior(inputs="normal")
    with pytest.raises(ValueError, match="warp_probability must be in"):
        BOGPPrior(warp_probability=1.5)


def test_bo_prior_lengthscales_grow_with_the_dimension():
    """Functions of 16 dimensions vary no faster along a line than those of 1 (the ½ log d rule):
    the mean squared change between neighbouring points on a diagonal stays within 2x."""

    def roughness(d):
        x = torch.linspace(0, 1, 50)[:, None].repeat(1, d)  # the main diagonal
        prior = BOGPPrior(min_features=d, max_features=d, noise=0.0, bowl_probability=0.0, warp_probability=0.0)
        y = torch.stack([prior.targets(x[None], torch.tensor([d]), gen(s))[0] for s in range(200)])
        return float((y.diff(dim=1) ** 2).mean())

    assert 0.5 < roughness(16) / roughness(1) < 2.0


@pytest.mark.slow
def test_benchmark_quick_mode(tmp_path):
    pytest.importorskip("botorch")
    pytest.importorskip("skopt")
    from benchmarks.bo import run

    result = run(tmp_path, quick=True)
    optimisers = result["summary"]["optimisers"]
    assert sorted(optimisers) == ["botorch", "pfn", "random", "skopt", "tpe"]
    assert all(0 <= row["mean_regret"] for row in optimisers.values())
    for method in ("pfn", "tpe", "botorch", "skopt"):  # model-based suggestions are timed, wall and CPU
        cpu, wall = optimisers[method]["median_suggest_cpu_s"], optimisers[method]["median_suggest_s"]
        assert 0 < cpu and 0 < wall
    runs = result["runs"]
    assert all(len(r["suggest_cpu_s"]) == len(r["suggest_s"]) for r in runs.values())
    assert all(r["suggest_s"] == [] for k, r in runs.items() if k.startswith("random/"))
    assert (tmp_path / "bo_regret.png").is_file() and (tmp_path / "bo_time.png").is_file()


def test_spread_diagnostic_reports_error_and_spread_at_evaluated_points():
    from benchmarks.bo_spread import FUNCTIONS, POINTS, spread

    figures = spread("bo")
    assert len(figures) == len(FUNCTIONS) * len(POINTS)
    assert all(0 <= error < 1 and 0 < std < 2 for error, std in figures.values())


def test_held_out_diagnostic_compares_the_surrogate_with_a_fitted_gp():
    from benchmarks.bo_spread import FUNCTIONS, POINTS, held_out

    figures = held_out("bo", designs=1, test_points=50)
    assert len(figures) == len(FUNCTIONS) * len(POINTS)
    assert all(0 < pfn_error < 5 and 0 < gp_error < 5 for pfn_error, gp_error in figures.values())
    assert figures["Branin-2, n=40"][1] < figures["Branin-2, n=15"][1]  # more points, a better fit


def test_on_prior_diagnostic_compares_the_surrogate_with_a_fitted_gp_on_its_own_prior():
    from benchmarks.bo_spread import on_prior

    few, more = on_prior("bo", functions=2, n=10, test_points=50), on_prior("bo", functions=2, n=40, test_points=50)
    assert list(more) == ["bo prior, d=3, n=40", "bo prior, d=6, n=40"]
    assert all(0 < pfn_error < 5 and 0 < gp_error < 5 for pfn_error, gp_error in more.values())
    assert more["bo prior, d=3, n=40"][0] < few["bo prior, d=3, n=10"][0]  # more points, a better surrogate


def test_trust_region_side_doubles_after_successes_halves_after_failures_and_restarts():
    d = 4  # patience: max(2, ceil(4 / 2)) = 2 failures in a row
    initial = [5.0, 4.0]
    assert bo.trust_region_side(np.array(initial), 2, d) == bo.REGION_START
    three_better = np.array(initial + [3.0, 2.0, 1.0])
    assert bo.trust_region_side(three_better, 2, d) == pytest.approx(min(2 * bo.REGION_START, bo.REGION_MAX))
    two_worse = np.array(initial + [4.0, math.nan])  # a tie and a failure: two failures to improve
    assert bo.trust_region_side(two_worse, 2, d) == pytest.approx(bo.REGION_START / 2)
    barely = np.array(initial + [4.0 * (1 - bo.REGION_MARGIN / 2)] * 2)  # within the margin: no improvement
    assert bo.trust_region_side(barely, 2, d) == pytest.approx(bo.REGION_START / 2)
    halvings = math.ceil(math.log2(bo.REGION_START / bo.REGION_MIN))  # then it starts again
    assert bo.trust_region_side(np.array(initial + [9.0] * (2 * halvings - 2)), 2, d) < bo.REGION_START
    assert bo.trust_region_side(np.array(initial + [9.0] * (2 * halvings)), 2, d) == bo.REGION_START


def test_trust_region_box_is_centred_on_the_best_point_and_spares_categories(model):
    opt = bo.Optimizer([(0.0, 1.0), (0.0, 1.0), ["a", "b"]], n_initial_points=2, model=model, random_state=0)
    rng = np.random.default_rng(3)
    points = [[float(rng.random()), float(rng.random()), "a" if i % 2 else "b"] for i in range(30)]
    for x in sorted(points, key=lambda x: (x[0] - 0.4) ** 2 + (x[1] - 0.6) ** 2):  # best first: no improvement
        opt.tell(x, (x[0] - 0.4) ** 2 + (x[1] - 0.6) ** 2)
    x_all = np.asarray([opt._encode(p) for p in opt.Xi])
    y_all = np.asarray(opt.yi)
    lo, span = opt._region(x_all, y_all)
    best = x_all[np.argmin(y_all)]
    side = bo.trust_region_side(y_all, 2, 4)
    assert side == pytest.approx(bo.REGION_START / 4)  # 14 halvings, two restarts after the 6th and 12th
    assert np.all(lo[:2] <= np.maximum(best[:2] - side / 2, 0) + 1e-12)  # holds the box around the best point
    assert np.all(lo[:2] + span[:2] >= np.minimum(best[:2] + side / 2, 1) - 1e-12)
    np.testing.assert_array_equal(lo[2:], 0.0)
    np.testing.assert_array_equal(span[2:], 1.0)  # the one-hot columns keep their whole range
    inside = np.all((x_all >= lo - 1e-12) & (x_all <= lo + span + 1e-12), axis=1)
    assert inside.sum() >= max(5, 4 + 2)  # grown to hold the points nearest the best one
    for _ in range(3):  # proposals lie in the box
        point = np.asarray(opt._encode(opt.ask()))
        assert np.all(point >= lo - 1e-9) and np.all(point <= lo + span + 1e-9)
    everywhere = bo.Optimizer([(0.0, 1.0)] * 2, model=model, trust_region=False)
    lo, span = everywhere._region(x_all[:, :2], y_all)
    np.testing.assert_array_equal(lo, 0.0)
    np.testing.assert_array_equal(span, 1.0)
    with pytest.raises(TypeError, match="trust_region must be True or False"):
        bo.Optimizer([(0.0, 1.0)], model=model, trust_region="yes")


def test_holdout_check_runs_the_optimisers_on_functions_the_benchmark_does_not_use():
    from benchmarks.bo import problems
    from benchmarks.bo_holdout import FUNCTIONS, regrets

    assert not {f"{name.lower()}-{dim}" for name, dim in FUNCTIONS} & {p.name for p in problems(False)}
    figures = regrets("bo", seeds=1, n_calls=8, arms=("pfn.bo", "PFN only"))
    assert len(figures) == len(FUNCTIONS)
    assert all(set(row) == {"pfn.bo", "PFN only"} for row in figures.values())
    assert all(0 <= value < 2 for row in figures.values() for value in row.values())


def _gp_data(n: int = 14, d: int = 3, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    y = np.sin(4 * x[:, 0]) + x[:, 1] ** 2 - x[:, 2] + 0.05 * rng.standard_normal(n)
    return x, (y - y.mean()) / y.std()


def test_gp_posterior_and_kernel_choice_match_scikit_learn():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    x, y = _gp_data()
    gp = bo._GaussianProcess(x, y, float(y.min()), "EI", 1.96)

    def kernel(scale, lengthscale, noise):
        return ConstantKernel(scale, "fixed") * RBF(lengthscale, "fixed") + WhiteKernel(noise * scale, "fixed")

    # the grid pair of highest marginal likelihood, each with its best outputscale (by a 1-D search)
    from scipy.optimize import minimize_scalar

    best = (-math.inf, None)
    for lengthscale in bo.GP_LENGTHSCALES:
        for noise in bo.GP_NOISE_SHARES:

            def neg_lml(log_scale, lengthscale=lengthscale, noise=noise):
                reference = GaussianProcessRegressor(kernel(math.exp(log_scale), lengthscale, noise), optimizer=None)
                return -reference.fit(x, y).log_marginal_likelihood_value_

            fit = minimize_scalar(neg_lml, bounds=(-8, 8), method="bounded", options={"xatol": 1e-6})
            if -fit.fun > best[0]:
                best = (-fit.fun, (lengthscale, noise, math.exp(fit.x)))
    lengthscale, noise, scale = best[1]
    assert gp.lengthscale == lengthscale
    assert gp.scale == pytest.approx(scale, rel=1e-3)
    reference = GaussianProcessRegressor(kernel(gp.scale, lengthscale, noise), optimizer=None).fit(x, y)
    u = np.random.default_rng(6).random((20, 3))
    mean, std = gp.posterior(u)
    ref_mean, ref_std = reference.predict(u, return_std=True)  # its std includes the noise
    np.testing.assert_allclose(mean, ref_mean, atol=1e-8)
    np.testing.assert_allclose(std**2 + noise * gp.scale, ref_std**2, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("acq", ["EI", "PI", "UCB"])
def test_gp_acquisitions_are_the_normal_closed_forms(acq):
    from scipy.stats import norm

    x, y = _gp_data()
    best = float(y.min())
    gp = bo._GaussianProcess(x, y, best, acq, 1.5)
    u = np.random.default_rng(7).random((5, 3))
    mean, std = gp.posterior(u)
    values = gp(u)
    for i in range(5):
        if acq == "EI":
            integral, _ = quad(
                lambda v, m=mean[i], s=std[i]: (best - v) * norm.pdf(v, m, s), mean[i] - 12 * std[i], best
            )
            assert values[i] == pytest.approx(max(integral, 0.0), abs=1e-9)
        elif acq == "PI":
            assert values[i] == pytest.approx(norm.cdf(best, mean[i], std[i]))
        else:
            assert values[i] == pytest.approx(-norm.ppf(norm.cdf(-1.5), mean[i], std[i]))


def test_the_gp_takes_over_from_gp_after_points_and_searches_the_whole_space(model, monkeypatch):
    built = []

    class Spy(bo._GaussianProcess):
        def __init__(self, x_train, *args):
            built.append(x_train.copy())
            super().__init__(x_train, *args)

    monkeypatch.setattr(bo, "_GaussianProcess", Spy)
    opt = bo.Optimizer([(0.0, 1.0), (-2.0, 2.0)], n_initial_points=4, gp_after=6, model=model, random_state=0)
    for i in range(8):
        x = opt.ask()
        assert len(built) == max(0, i - 5)  # asks 0..5 see fewer than 6 points: initial points, then the PFN
        opt.tell(x, float((x[0] - 0.3) ** 2 + (x[1] - 1.0) ** 2))
    np.testing.assert_allclose(built[-1], np.asarray([opt._encode(p) for p in opt.Xi[:7]]))  # all points, unit cube
    assert len(built) == 2
    never = bo.Optimizer([(0.0, 1.0)], n_initial_points=2, gp_after=None, model=model, random_state=0)
    for _ in range(4):
        never.tell(x := never.ask(), x[0] ** 2)
    assert len(built) == 2


@pytest.mark.parametrize(
    ("gp_after", "error", "message"),
    [(1, ValueError, "at least 2"), (True, TypeError, "gp_after must be an integer"), ("5", TypeError, "gp_after")],
)
def test_bad_gp_after_is_refused(model, gp_after, error, message):
    with pytest.raises(error, match=message):
        bo.Optimizer([(0.0, 1.0)], model=model, gp_after=gp_after)
    pytest.importorskip("optuna")
    with pytest.raises(error, match=message):
        bo.PFNSampler(model=model, gp_after=gp_after)


def test_optuna_sampler_hands_gp_after_to_the_optimiser(model, monkeypatch):
    optuna = pytest.importorskip("optuna")
    built = []

    class Spy(bo._GaussianProcess):
        def __init__(self, x_train, *args):
            built.append(len(x_train))
            super().__init__(x_train, *args)

    monkeypatch.setattr(bo, "_GaussianProcess", Spy)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=bo.PFNSampler(n_startup_trials=3, gp_after=5, model=model, seed=0))
    study.optimize(lambda t: (t.suggest_float("a", 0, 1) - 0.4) ** 2 + t.suggest_float("b", -1, 1) ** 2, n_trials=7)
    assert built == [5, 6]  # trials 5 and 6 (0-based) see 5 and 6 finished trials
