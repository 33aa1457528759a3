"""An Optuna sampler with a PFN surrogate: ``pfn.bo.PFNSampler`` (needs ``pip install pfn[bo]``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from pfn.bo import ACQUISITIONS, DEFAULT_GP_AFTER, DEFAULT_MODEL, Optimizer, check_gp_after
from pfn.inference import PFN, load


class PFNSampler(BaseSampler):
    """Bayesian optimisation for Optuna studies with a PFN surrogate (single objective).

    The first ``n_startup_trials`` trials, and parameters outside the space every trial shares,
    are sampled by ``independent_sampler`` (default: Optuna's RandomSampler). Then each trial
    takes the point :class:`pfn.bo.Optimizer` proposes given every finished trial. Float, int
    (with log scale or step) and categorical parameters are supported. Failed trials (the
    objective raised, with ``study.optimize(..., catch=(Exception,))``, or returned NaN) count
    as the worst value seen, so their neighbourhood is avoided; pruned trials are ignored.
    ``gp_after``: from this many finished trials on, a GP replaces the PFN (see
    :class:`pfn.bo.Optimizer`).
    """

    def __init__(
        self,
        n_startup_trials: int = 5,
        acq_func: str = "EI",
        model: str | PFN = DEFAULT_MODEL,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        gp_after: int | None = DEFAULT_GP_AFTER,
    ) -> None:
        if acq_func not in ACQUISITIONS:
            raise ValueError(f"unknown acq_func {acq_func!r}; choose one of {', '.join(ACQUISITIONS)}")
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be an integer >= 0, got {n_startup_trials!r}")
        check_gp_after(gp_after)
        self.n_startup_trials = n_startup_trials
        self.gp_after = gp_after
        self.acq_func = acq_func
        self.model = model if isinstance(model, PFN) else load(model)
        self._rng = np.random.RandomState(seed)
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._search_space = IntersectionSearchSpace()

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._independent.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space = self._search_space.calculate(study)
        return {name: dist for name, dist in space.items() if not dist.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        self._raise_error_if_multi_objective(study)
        names = sorted(search_space)
        finished = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if all(name in t.params for name in names)
        ]
        if sum(t.state == TrialState.COMPLETE for t in finished) < max(self.n_startup_trials, 1):
            return {}
        dims = [_dimension(search_space[name]) for name in names]
        opt = Optimizer(  # the startup trials count as its initial points (they start its trust region)
            dims,
            n_initial_points=self.n_startup_trials,
            acq_func=self.acq_func,
            model=self.model,
            random_state=self._rng,
            gp_after=self.gp_after,
        )
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        for t in finished:
            value = sign * t.value if t.state == TrialState.COMPLETE and t.value is not None else math.nan
            opt.tell([_to_point(search_space[name], t.params[name]) for name in names], value)
        x = opt.ask()
        return {name: _from_point(search_space[name], v) for name, v in zip(names, x, strict=True)}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._independent.after_trial(study, trial, state, values)


def _dimension(dist: BaseDistribution) -> tuple[Any, ...] | list[Any]:
    """The pfn.bo dimension of an Optuna distribution (a stepped one as an integer grid index)."""
    if isinstance(dist, CategoricalDistribution):
        return list(range(len(dist.choices)))
    if _stepped(dist):
        return (0, int(round((dist.high - dist.low) / dist.step)))
    if isinstance(dist, IntDistribution):
        return (int(dist.low), int(dist.high), "log-uniform" if dist.log else "uniform")
    if isinstance(dist, FloatDistribution):
        return (float(dist.low), float(dist.high), "log-uniform" if dist.log else "uniform")
    raise ValueError(f"PFNSampler does not support {type(dist).__name__}")


def _to_point(dist: BaseDistribution, value: Any) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.to_internal_repr(value)
    if _stepped(dist):
        return int(round((value - dist.low) / dist.step))
    return value


def _from_point(dist: BaseDistribution, value: Any) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[value]
    if _stepped(dist):
        return min(dist.low + value * dist.step, dist.high)
    return value


def _stepped(dist: BaseDistribution) -> bool:
    """Whether ``dist`` is a grid searched by its step index: a float with a step, an int with step > 1."""
    if isinstance(dist, FloatDistribution):
        return dist.step is not None
    return isinstance(dist, IntDistribution) and dist.step != 1
