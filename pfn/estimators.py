"""scikit-learn estimators on a PFN: ``PFNClassifier`` and ``PFNRegressor`` on one shared base.

``fit`` preprocesses the train rows, chooses the columns the members see (pfn.selection),
plans the ensemble members (columns, transforms, label order), weights them by stacking their
held-out predictions (pfn.selection) and runs the train rows through the transformer once per
member (with more classes than the head, once per group of classes of each member; see
couple_groups), keeping every layer's keys and values (train rows never attend to test rows,
so these do not depend on what is predicted later). ``predict`` then only runs test rows, in chunks of
``chunk_rows``, and mixes the members' predictions with their weights.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Hidden, Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data
from tqdm.auto import tqdm

from pfn.preprocessing import (
    FLOAT_MAX,
    MemberTransform,
    NeighbourTargets,
    QuantileTarget,
    TablePreprocessor,
    TargetScale,
    check_column_names,
    member_transform,
    plain,
)
from pfn.selection import FOLDS, MIN_ROWS, Selection, folds, likelihood_stacking, quadratic_stacking, select_features
from pfn.selection import SEED as SELECTION_SEED

if TYPE_CHECKING:  # torch and the model load at fit, so that importing the estimators stays light
    import torch

    from pfn.heads import BarDistribution
    from pfn.inference import PFN
    from pfn.model import KVCache
    from pfn.retrieval import Retrieval

_LOADED: dict[tuple[str, str], PFN] = {}
ROW_BLOCK = 64  # test rows go through the model in whole blocks (zero-padded), see _member_forward
ROUNDS = 2  # with more classes than the head: partitions of the classes into groups per member
COUPLING_ITERATIONS = 300  # at most, see couple_groups
COUPLING_TOLERANCE = 1e-6  # largest change of a probability at which couple_groups stops
PROBABILITY_FLOOR = 1e-100  # conditional probabilities below this count as this in couple_groups
VALIDATION_ROWS = 2048  # at most this many train rows in in-context validation (see _validation_rows)
TUNING_CONTEXT_ROWS = 1024  # at most this many context rows per fine-tuning step (the trained context)
NEIGHBOURS = 50  # beyond max_train_rows rows, each row's mean target among this many nearest train rows is a column


def _load(model: str, device: str) -> PFN:
    """Load a checkpoint once per process and device (models are read-only after loading)."""
    from pfn.inference import PFN

    key = (str(model), device)
    if key not in _LOADED:
        _LOADED[key] = PFN.from_files(model).to(device)
    return _LOADED[key]


@dataclass(frozen=True)
class Cycle:
    """A member setting that takes ``values`` in turn, each for ``every`` consecutive members."""

    values: tuple[Any, ...]
    every: int = 1

    def at(self, index: int) -> Any:
        return self.values[index // self.every % len(self.values)]


@dataclass(frozen=True)
class MemberSchedule:
    """What each ensemble member sees, by its index; members vary in every way at once, and the
    stacking weights choose per table (see pfn.selection).

    columns: "selected" (the columns chosen by validation, ``features_``) or "wide" (a wider
    set, ``wide_features_``: columns that validation on half the rows under-rated still count).
    encoding: "target" (every categorical column of 3 or more levels and every other column with
    3..30 distinct values through its cross-fitted target encoding, and every column of more
    values that repeat at least 3 times on average with its encoding appended, fitted on every
    train row, pfn.preprocessing.TargetEncodedColumns) or None (``transform`` instead).
    transform: the member's input transform (pfn.preprocessing.member_transform).
    target: "plain" or "quantile" (regressor: the targets through a quantile transform)."""

    columns: Cycle
    encoding: Cycle
    transform: Cycle
    target: Cycle = Cycle(("plain",))

    def input_transform(self, index: int) -> MemberTransform:
        """Member ``index``'s extra input transform: its encoding, else its transform."""
        return self.encoding.at(index) or self.transform.at(index)


@dataclass(frozen=True)
class _Plan:
    """What makes one ensemble member, drawn before it sees any rows."""

    index: int
    features: np.ndarray  # [f'] column indices into the preprocessed matrix
    rows: np.ndarray  # [n'] the train rows it sees (all, or a subsample beyond max_train_rows unless
    # context="retrieval")
    transform: MemberTransform  # its extra input transform
    seed: int  # the transform's seed
    parts: tuple[np.ndarray | None, ...]  # classifier: per part, [k] model label of each class (-1: not
    # in the part); regressor: (None,)


@dataclass
class _Member:
    """One forward pass of an ensemble member (the member itself, or with more classes than the
    head one part of it): its feature order/subset, extra transform, target map, and either the
    cache of its train rows or, with more of them than a context holds, their retrieval index."""

    features: np.ndarray  # [f] column indices into the preprocessed matrix
    transform: TransformerMixin | None
    target_map: Any  # classifier: [k] model label of each class (-1: not in this part); regressor:
    # QuantileTarget or None
    cache: KVCache | None
    retrieval: Retrieval | None = None


class _Weighted(NamedTuple):
    """A member's outputs [m, K] for some test rows, with the member and its stacking weight."""

    member: _Member
    weight: float
    output: np.ndarray


class _PFNBase(BaseEstimator):
    """Shared plumbing; see PFNClassifier and PFNRegressor for the parameters."""

    _task: ClassVar[str]
    SCHEDULE: ClassVar[MemberSchedule]
    _default_model: ClassVar[str]

    def __init__(
        self,
        model: str | None = None,
        n_estimators: int = 8,
        select_features: bool = True,
        weight_members: bool = True,
        categorical_features: str | list[int | str] = "auto",
        max_train_rows: int = 1024,
        context: str = "subsample",
        fine_tune: bool | int = False,
        fine_tune_seconds: float | None = None,
        chunk_rows: int = 1024,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        show_progress: bool | None = None,
        batch_size: int | str = "deprecated",
    ) -> None:
        self.model = model
        self.n_estimators = n_estimators
        self.select_features = select_features
        self.weight_members = weight_members
        self.categorical_features = categorical_features
        self.max_train_rows = max_train_rows
        self.context = context
        self.fine_tune = fine_tune
        self.fine_tune_seconds = fine_tune_seconds
        self.chunk_rows = chunk_rows
        self.device = device
        self.random_state = random_state
        self.show_progress = show_progress
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        return tags

    # ------------------------------------------------------------ validation

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "model": [str, os.PathLike, None],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "select_features": ["boolean"],
        "weight_members": ["boolean"],
        "categorical_features": [StrOptions({"auto"}), list],
        "max_train_rows": [Interval(Integral, 1, None, closed="left")],
        "context": [StrOptions({"subsample", "retrieval"})],
        "fine_tune": ["boolean", Interval(Integral, 1, None, closed="left")],
        "fine_tune_seconds": [Interval(Real, 0, None, closed="neither"), None],
        "chunk_rows": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), Hidden(StrOptions({"deprecated"}))],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "random_state": ["random_state"],
        "show_progress": ["boolean", None],
    }

    def _check_params(self) -> None:
        try:
            self._validate_params()  # scikit-learn's check against _parameter_constraints
        except InvalidParameterError as error:  # its message shows numpy scalars as np.int64(0): plain values
            message = str(error)
            for value in self.get_params(deep=False).values():
                if isinstance(value, np.generic):
                    message = message.replace(repr(value), repr(plain(value)))
            raise InvalidParameterError(message) from None
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'")

    def _chunk_rows(self) -> int:
        """Test rows per forward pass: ``chunk_rows``, or the deprecated ``batch_size`` if given."""
        if isinstance(self.batch_size, str):
            return self.chunk_rows
        warnings.warn(
            "the parameter batch_size was renamed chunk_rows (test rows per forward pass); batch_size is "
            "deprecated and will be removed in a future version, so pass chunk_rows instead",
            FutureWarning,
            stacklevel=3,
        )
        return int(self.batch_size)

    def _check_y_given(self, y: Any) -> None:
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")

    def _frame(self, X: Any, reset: bool) -> pd.DataFrame:
        """Validate X (shape, names, column count) and return it as a DataFrame. A DataFrame's
        columns are checked one by one later (pfn.preprocessing.column_kind), never as one mixed
        array; other input goes through scikit-learn's check_array (sparse input is refused)."""
        if isinstance(X, pd.DataFrame):
            check_column_names(X)
            for size, what in zip(X.shape, ("sample", "feature"), strict=True):
                if size == 0:
                    raise ValueError(
                        f"Found array with 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required "
                        f"by {type(self).__name__}."
                    )
            validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        array = check_array(X, dtype=None, ensure_all_finite=False, estimator=self)
        validate_data(self, array, reset=reset, skip_check_array=True)
        return pd.DataFrame(array)

    def _transformed(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "members_")
        x = self.preprocessor_.transform(self._frame(X, reset=False))  # [m, f]
        return x if self.neighbours_ is None else self.neighbours_.transform(x)  # [m, f (+ width)]

    # ------------------------------------------------------------ fitting

    def _fit_members(self, frame: pd.DataFrame, y: np.ndarray, stratify: np.ndarray | None) -> None:
        """Preprocess, then build each member with its train keys/values cached.
        frame: validated X (see _frame); y: targets [n] as fit passes them (see _targets)."""
        if len(y) != len(frame):
            raise ValueError(f"X has {len(frame)} rows but y has {len(y)}")
        self.preprocessor_ = TablePreprocessor(self.categorical_features).fit(frame)
        x = self.preprocessor_.transform(frame)  # [n, f]
        import torch

        device = "cuda" if self.device == "auto" and torch.cuda.is_available() else self.device.replace("auto", "cpu")
        self.pfn_ = _load(self.model or self._default_model, device)
        if self.pfn_.task != self._task:
            raise ValueError(
                f"{type(self).__name__} needs a {self._task} model, but {self.model!r} is a {self.pfn_.task} model"
            )
        y = self._targets(y)  # [n]
        self.neighbours_ = self._neighbour_targets(x, y)
        if self.neighbours_ is not None:
            x = self.neighbours_.fit_transform(x, y)  # [n, f + width], cross-fitted
        selection = self._selection(x, y, stratify)
        self.features_, self.wide_features_, self.selection_scores_ = selection.best, selection.wide, selection.scores
        rng = check_random_state(self.random_state)
        plans = [self._plan(i, len(x), stratify, rng) for i in range(self.n_estimators)]
        transforms = [self._fit_transform(plan, x) for plan in plans]
        # the tuning seed is drawn after the plans: tuning that keeps the untuned weights leaves the fit as without it
        if self.fine_tune:
            self.fine_tune_report_ = self._fine_tuned(plans, transforms, x, y, stratify, int(rng.randint(2**31)))
        else:
            self.fine_tune_report_ = None
        weights, held_out = self._member_weights(plans, transforms, x, y, stratify)  # [M]
        self._fit_head(y, held_out)
        self.members_ = [
            self._build(plan, transform, x, y, part, plan.rows)
            for plan, transform in zip(plans, transforms, strict=True)
            for part in plan.parts
        ]
        self.member_weights_ = np.repeat(weights, [len(plan.parts) for plan in plans])

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """The encoded targets [n] the members are fitted on (class ids or standardised floats),
        from the targets [n] that fit passed on (the model is loaded)."""
        raise NotImplementedError

    def _neighbour_targets(self, x: np.ndarray, y: np.ndarray) -> NeighbourTargets | None:
        """With more train rows x [n, f] than a member's context holds, the (unfitted) columns of
        each row's mean target among its NEIGHBOURS nearest train rows, so that what the rows
        outside a context say reaches the members; None otherwise, and with more classes than
        the model's head (k - 1 columns each)."""
        classes = self._task == "classification"
        if len(x) <= self.max_train_rows or (classes and len(np.unique(y)) > self.pfn_.config.n_outputs):
            return None
        return NeighbourTargets(
            target="classes" if classes else "continuous",
            categorical=tuple(int(c) for c in self.preprocessor_.categorical_columns_),
            neighbours=NEIGHBOURS,
            seed=SELECTION_SEED,  # fixed folds, as the selection's: the members' draws stay as without it
        )

    def _fit_head(self, y: np.ndarray, held_out: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Fit what turns the mixed members' outputs into predictions beyond the model, from the
        encoded train targets y [n] and the ensemble's in-context validation (``held_out``:
        its mixed predictions [v, P] of validation rows and their targets [v]; None where it
        did not run): the regressor's tails; the classifier needs nothing."""

    def _fine_tuned(
        self,
        plans: list[_Plan],
        transforms: list[TransformerMixin | None],
        x: np.ndarray,
        y: np.ndarray,
        stratify: np.ndarray | None,
        seed: int,
    ) -> dict[str, Any]:
        """Tune ``pfn_`` on the train rows x [n, f] (the selected columns) with encoded targets
        y [n], the planned ensemble judging the tuned weights on rows tuning never saw (see
        pfn.finetune); returns its report."""
        from pfn.finetune import FineTuneConfig, FineTuneWarning, fine_tune

        if self._task == "classification" and len(self.classes_) > self.pfn_.config.n_outputs:
            warnings.warn(
                f"fine-tuning skipped: {len(self.classes_)} classes are more than the model's head "
                f"({self.pfn_.config.n_outputs}); the model is used as it is",
                FineTuneWarning,
                stacklevel=4,
            )
            return {"steps": 0, "stopped": "too many classes"}
        steps = FineTuneConfig.steps if self.fine_tune is True else int(self.fine_tune)
        context_rows = min(self.max_train_rows, TUNING_CONTEXT_ROWS)
        config = FineTuneConfig(steps=steps, seconds=self.fine_tune_seconds, context_rows=context_rows)
        columns = self.features_[: self.pfn_.config.n_features]

        def score(weights: PFN, context: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, float]:
            if len(context) > self.max_train_rows:
                strata = None if stratify is None else stratify[context]
                rng = np.random.RandomState(SELECTION_SEED)
                context = context[_subsample(len(context), self.max_train_rows, strata, rng)]
            untuned, self.pfn_ = self.pfn_, weights
            try:
                members = [
                    self._build(plan, transform, x[context], y[context], part)
                    for plan, transform in zip(plans, transforms, strict=True)
                    for part in plan.parts
                ]
                outputs = [_Weighted(m, 1.0 / len(members), self._member_forward(m, x[held])) for m in members]
                return self._held_out_losses(self._mix(outputs), y[held])
            finally:
                self.pfn_ = untuned

        x_tune = x[:, columns].astype(np.float32)
        self.pfn_, report = fine_tune(self.pfn_, x_tune, y, config, seed, self.show_progress, score)
        return report

    def _held_out_losses(self, probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """The ensemble's loss on each held-out row from its predictions [h, P] (see _mix) of the
        encoded targets y [h], and a ranking score of them (higher is better; NaN: none)."""
        raise NotImplementedError

    def _validation_rows(self, n: int, stratify: np.ndarray | None) -> np.ndarray:
        """The train rows that in-context validation (feature selection, stacking weights, the
        regressor's tails) uses: all, or a fixed-seed subsample of ``max_train_rows`` but at most
        VALIDATION_ROWS (its two-fold contexts are half that: validation picks which columns and
        members suit the table, and on more rows costs more than the fit itself)."""
        size = min(self.max_train_rows, VALIDATION_ROWS)
        if n <= size:
            return np.arange(n)
        return _subsample(n, size, stratify, np.random.RandomState(SELECTION_SEED))

    def _selection(self, x: np.ndarray, y: np.ndarray, stratify: np.ndarray | None) -> Selection:
        """The preprocessed columns the members see (see pfn.selection)."""
        rows = self._validation_rows(len(x), stratify)
        if not self.select_features or not self._can_select(y[rows]):
            return Selection(np.arange(x.shape[1]), np.arange(x.shape[1]))
        limit = self.pfn_.config.n_features
        return select_features(x[rows], y[rows], self._task == "classification", self._held_out_score, limit)

    def _member_weights(
        self,
        plans: list[_Plan],
        transforms: list[TransformerMixin | None],
        x: np.ndarray,
        y: np.ndarray,
        stratify: np.ndarray | None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """Stacking weights [M] of the planned members (see pfn.selection): every member rebuilt
        on each half of the validation rows (with its input transform as fitted on all its rows)
        predicts the other half. Equal weights with ``weight_members=False``, one member, or
        too few rows to validate on. Also the validation: the members' predictions mixed with
        those weights [v, P] and the validation rows' targets [v] (None where it did not run)."""
        rows = self._validation_rows(len(x), stratify)
        if not self.weight_members or len(plans) == 1 or len(rows) < MIN_ROWS or not self._can_weight():
            return np.full(len(plans), 1.0 / len(plans)), None
        x_val, y_val = x[rows], y[rows]
        held_out_probs: np.ndarray | None = None  # [n, M, P], P known after the first prediction
        for context, held_out in folds(y_val, self._task == "classification"):
            for j, (plan, transform) in enumerate(zip(plans, transforms, strict=True)):
                parts = [self._build(plan, transform, x_val[context], y_val[context], part) for part in plan.parts]
                outputs = [_Weighted(p, 1.0, self._member_forward(p, x_val[held_out])) for p in parts]
                probs = self._mix(outputs)  # [h, P]
                if held_out_probs is None:
                    held_out_probs = np.zeros((len(rows), len(plans), probs.shape[1]))
                held_out_probs[held_out, j] = probs
        weights = self._stacking(held_out_probs, y_val)
        return weights, (np.einsum("vmp,m->vp", held_out_probs, weights), y_val)

    def _stacking(self, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Weights [M] from the members' held-out predictions [n, M, P] (see _mix) of
        the encoded targets y [n], by the task's proper score (see pfn.selection)."""
        raise NotImplementedError

    def _can_select(self, y: np.ndarray) -> bool:
        """Whether in-context validation on the rows with encoded targets y can choose columns
        (see _held_out_score)."""
        return True

    def _can_weight(self) -> bool:
        """Whether the members can be weighted by stacking (see _member_weights)."""
        return True

    def _held_out_score(
        self, x_context: np.ndarray, y_context: np.ndarray, x_held: np.ndarray, y_held: np.ndarray
    ) -> float:
        """The model's mean log-likelihood of y_held given the context rows (one forward pass)."""
        raise NotImplementedError

    def _plan(self, index: int, n: int, stratify: np.ndarray | None, rng: np.random.RandomState) -> _Plan:
        """Member ``index`` of the ensemble on n train rows, as the estimator's SCHEDULE says;
        member 0 keeps the columns' order, the others permute them."""
        schedule = self.SCHEDULE
        pool = self.features_ if schedule.columns.at(index) == "selected" else self.wide_features_  # [f']
        f, limit = len(pool), self.pfn_.config.n_features
        order = np.arange(f) if index == 0 else rng.permutation(f)
        if f > limit:
            order = np.sort(rng.permutation(f)[:limit]) if index == 0 else order[:limit]
        every_row = n <= self.max_train_rows or self.context == "retrieval"
        rows = np.arange(n) if every_row else _subsample(n, self.max_train_rows, stratify, rng)
        seed = int(rng.randint(2**31))
        return _Plan(index, pool[order], rows, schedule.input_transform(index), seed, self._parts(index, rng))

    def _parts(self, index: int, rng: np.random.RandomState) -> tuple[np.ndarray | None, ...]:
        """Classifier: the forward passes (parts) of member ``index``, each the model label of
        every class ([k], -1 for classes outside the part); regressor: one part, (None,)."""
        return (None,)

    def _fit_transform(self, plan: _Plan, x: np.ndarray) -> TransformerMixin | None:
        """The member's extra input transform for the train rows x [n, f] (preprocessed). One
        that never sees the targets is fitted here once, on the member's rows, and reused in
        validation (a Yeo-Johnson fit takes about 0.1 s on 1,000 rows × 20 columns); one that
        needs them (a target encoding) is returned unfitted and fitted by _build on each
        context's rows, so that validation never encodes with held-out targets."""
        classes, limit = self._task == "classification", self.pfn_.config.n_features
        codes = np.flatnonzero(np.isin(plan.features, self.preprocessor_.categorical_columns_))  # of the member's
        transform = member_transform(plan.transform, len(plan.rows), plan.seed, classes, limit, codes)
        if transform is None or _needs_targets(transform):
            return transform
        return transform.fit(x[plan.rows][:, plan.features])

    def _build(
        self,
        plan: _Plan,
        transform: TransformerMixin | None,
        x: np.ndarray,
        y: np.ndarray,
        part: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> _Member:
        """One ``part`` (default: the first, the only one but with more classes than the head) of
        the member of ``plan`` on the train rows x [n, f] (preprocessed) with encoded targets
        y [n]: its context is ``rows`` of them (default: all), the part's rows of those. An input
        transform that needs the targets (a target encoding) is fitted here on all n rows,
        cross-fitted, so that a member that sees a subsample still encodes by every row; its
        target map is fitted on the targets of the part's rows; the context's keys and values
        are cached."""
        context = np.ones(len(y), bool)
        if rows is not None:
            context[:] = False
            context[rows] = True
        part_rows, y_part, target_map = self._member_targets(plan, plan.parts[0] if part is None else part, y)
        x_part, context = x[part_rows][:, plan.features], context[part_rows]  # [n', f'], [n']
        if transform is not None and _needs_targets(transform):
            transform = clone(transform)
            x_member = transform.fit_transform(x_part, y_part)[context].astype(np.float32)  # cross-fitted
        elif transform is not None:
            x_member = transform.transform(x_part[context]).astype(np.float32)
        else:
            x_member = x_part[context]
        y_member = y_part[context]
        member = _Member(features=plan.features, transform=transform, target_map=target_map, cache=None)
        if len(x_member) > self.max_train_rows:  # context="retrieval": a context per group of test rows
            from pfn.retrieval import Retrieval

            classes = self._task == "classification"
            member.retrieval = Retrieval.fit(x_member, y_member, self.max_train_rows, classes, plan.seed)
        else:
            member.cache = self._encode(x_member, y_member)
        return member

    def _encode(self, x: np.ndarray, y: np.ndarray) -> KVCache:
        """The model's cache of train rows x [n, f'] (as the member sees them) with targets y [n]."""
        import torch

        xt, used = self.pfn_.pad_features(torch.as_tensor(x)[None])  # [1, n, F], [1]
        return self.pfn_.encode_train(xt, torch.as_tensor(y, dtype=torch.float32)[None], used)

    def _member_targets(
        self, plan: _Plan, part: np.ndarray | None, y: np.ndarray
    ) -> tuple[np.ndarray | slice, np.ndarray, Any]:
        """For the encoded targets y [n'] of the member of ``plan``: the rows that ``part`` of it
        sees, the targets it sees for them, and how they map."""
        raise NotImplementedError

    def _member_probs(self, member: _Member, output: np.ndarray) -> np.ndarray:
        """One member's predictions from its outputs [m, K]: class probabilities [m, k] for the
        classifier (given that the class is one of its part's), bucket probabilities [m, K]
        over standardised targets for the regressor."""
        raise NotImplementedError

    def _mix(self, outputs: list[_Weighted]) -> np.ndarray:
        """The predictions [m, P] of weighted members from their outputs: class probabilities
        [m, k] for the classifier, bucket probabilities [m, K] for the regressor."""
        raise NotImplementedError

    # ------------------------------------------------------------ prediction

    def _predict_chunks(self, X: Any, reduce: Callable[[list[_Weighted]], np.ndarray]) -> np.ndarray:
        """``reduce`` of the weighted members' outputs ([chunk, K] each) for every chunk of
        ``chunk_rows`` test rows, concatenated: memory stays bounded by the chunk, whatever the
        number of rows."""
        x = self._transformed(X)  # [m, f]
        weighted = list(zip(self.members_, self.member_weights_, strict=True))
        size = self._chunk_rows()
        chunks = range(0, len(x), size)
        results = []
        # tqdm's disable=None: a bar only where stderr is a terminal; show_progress=True forces one
        disable = len(chunks) < 8 or (None if self.show_progress is None else not self.show_progress)
        for start in tqdm(chunks, disable=disable, desc="predict", unit="chunk"):
            part = x[start : start + size]
            results.append(reduce([_Weighted(m, float(w), self._member_forward(m, part)) for m, w in weighted]))
        return np.concatenate(results)

    def _member_forward(self, member: _Member, x: np.ndarray) -> np.ndarray:
        """The model's outputs [m, K] for preprocessed test rows x [m, f] seen by one member.
        The rows are zero-padded to whole blocks of ``ROW_BLOCK``: matrix products pick their
        kernels by the row count, and below 16 rows they round differently, so without the
        padding a row's output would depend on how many rows it is predicted with."""
        x_member = x[:, member.features]
        if member.transform is not None:
            x_member = member.transform.transform(x_member).astype(np.float32)
        if member.retrieval is None:
            return self._forward(member.cache, x_member)
        out = np.empty((len(x_member), self._output_size()), dtype=np.float32)  # [m, K]
        for rows, context in member.retrieval.contexts(x_member):
            cache = self._encode(member.retrieval.x[context], member.retrieval.y[context])
            out[rows] = self._forward(cache, x_member[rows])
        return out

    def _forward(self, cache: KVCache, x: np.ndarray) -> np.ndarray:
        """The model's outputs [m, K] for test rows x [m, f'] (as a member sees them) given a
        cache of train rows."""
        import torch

        m = len(x)
        padded = np.zeros((-(-m // ROW_BLOCK) * ROW_BLOCK, x.shape[1]), dtype=np.float32)  # [m', f']
        padded[:m] = x
        xq, used = self.pfn_.pad_features(torch.as_tensor(padded)[None])  # [1, m', F], [1]
        return self.pfn_.predict_test(cache, xq, used)[0, :m].cpu().numpy()  # [m, K]

    def _output_size(self) -> int:
        """K: the model's outputs per row (classes of the head, or buckets)."""
        return self.pfn_.config.n_outputs


def _needs_targets(transform: TransformerMixin) -> bool:
    """Whether an input transform is fitted on the targets too (sklearn's target tags)."""
    return transform.__sklearn_tags__().target_tags.required


def _subsample(n: int, size: int, stratify: np.ndarray | None, rng: np.random.RandomState) -> np.ndarray:
    """``size`` row indices out of n, stratified by ``stratify`` when given (every class kept)."""
    if stratify is None:
        return np.sort(rng.choice(n, size, replace=False))
    classes, counts = np.unique(stratify, return_counts=True)
    quota = np.maximum(1, np.floor(counts * size / n)).astype(int)
    rows = [
        rng.choice(np.flatnonzero(stratify == c), min(q, cnt), replace=False)
        for c, q, cnt in zip(classes, quota, counts, strict=True)
    ]
    return np.sort(np.concatenate(rows))


class PFNClassifier(ClassifierMixin, _PFNBase):
    """A PFN as a scikit-learn classifier: one forward pass, no training on your data.

    Parameters
    ----------
    model : shipped checkpoint name or path (default: the shipped "tabular-clf").
    n_estimators : ensemble members; they differ in feature order, class-label permutation,
        columns and input transform, as the class's ``SCHEDULE`` says (some replace the
        categorical columns and the columns with 3..30 distinct values by their cross-fitted
        target encodings, the shares of each class per value, and append the encodings of
        columns whose many values repeat); beyond ``max_train_rows`` every member also sees
        the neighbour columns (``context``). 1 is exact and deterministic.
        With k classes, more than the model's head (10), each member makes 2 random
        partitions of the classes into ceil(k / 10) groups and runs one forward pass per group
        on the rows of its classes (2 ceil(k / 10) passes per member; ``members_`` lists the
        passes); the passes' probabilities given the group are coupled into one distribution
        (pfn.estimators.couple_groups).
    select_features : rank the columns by a random forest's importance and let the members see
        only the top ones, as many as two-fold in-context validation on the train rows prefers
        (all, half, a quarter, ... down to 2; see pfn.selection). Fixed seeds: deterministic.
        Skipped below 20 train rows or 3 columns, and with more classes than the model's head
        when a class has fewer than 2 validation rows (there each candidate costs the passes of
        member 0's groups).
        The chosen columns are ``features_`` (of the preprocessed matrix), the scores
        ``selection_scores_``. Half the members (2, 3, 6, 7, ...) see ``wide_features_``: the
        most columns that validate within 0.1 nats per row of the best (validation on half the
        rows under-rates columns that pay off only with more rows).
    weight_members : mix the members with stacking weights instead of equally: each member is
        rebuilt on each half of the train rows and predicts the other half, and the weights
        maximise the mixture's held-out log-likelihood (EM; see pfn.selection). The weights are
        ``member_weights_``. Equal weights below 20 train rows and with more classes than the
        model's head. Costs about two more fits per member, on half the rows each.
    softmax_temperature : divides the logits before the softmax (below 1 sharpens). None: the
        temperature chosen on the model's own prior and recorded on its card by
        ``pfn bench temperature --update-card`` (1.0 for a card without one).
    categorical_features : "auto" (pandas category/object/string/bool columns and non-numeric
        object columns) or a list of column indices or names.
    max_train_rows : at most this many train rows in a member's context (with more classes than
        the head, its groups' passes share them); in-context validation uses at most 2,048 of
        them. The classifier's default, 4,096, is four times the context it was trained on:
        on larger tables more rows per context kept raising its ROC AUC, at about three
        times the fit time of 1,024, the regressor's default (its R² did not gain); see
        docs/benchmarks.md, "Tables of 1,000–50,000 rows".
    context : how a table with more train rows than ``max_train_rows`` is seen. "subsample":
        each member sees a stratified random subsample of them. "retrieval": each member keeps
        them all, cut into k-means cells, and a test row is predicted from its cell's context:
        half a random sample of the train rows (fixed per member), half the train rows nearest
        the cell's centre (per class, by the classes' shares); see pfn.retrieval. Slower to
        predict (a context per cell the test rows fall in), it uses every row. Either way,
        beyond ``max_train_rows`` rows every row gets its class shares (regressor: its mean
        target) among its 50 nearest train rows as columns, cross-fitted for the train rows
        (``neighbours_``, pfn.preprocessing.NeighbourTargets; not with more classes than the
        model's head).
    fine_tune : False, or gradient steps on the train rows before predicting (True: 100): random
        context/query splits of them with the model's own loss, stopped early on a held-out
        fifth, and kept only if they lower its loss (see pfn.finetune; the tuned weights live in
        the fitted estimator, ``fine_tune_report_`` says what happened).
    fine_tune_seconds : a wall-time budget for fine-tuning (None: none); tuning that runs out of
        it stops with a warning and keeps its best weights.
    chunk_rows : test rows per forward pass; memory is bounded by it.
    device : "auto" (CUDA when available), "cpu" or "cuda".
    random_state : seeds the members' permutations, subsamples and transforms.
    show_progress : a progress bar for large predictions: None (default) where stderr is a
        terminal, True always, False never.
    batch_size : deprecated, the former name of ``chunk_rows``.
    """

    _task = "classification"
    _default_model = "tabular-clf"
    SCHEDULE = MemberSchedule(
        columns=Cycle(("selected", "wide"), every=2),
        encoding=Cycle((None, "target"), every=4),
        transform=Cycle(("none", "quantile", "power")),
    )
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_PFNBase._parameter_constraints,
        "softmax_temperature": [Interval(Real, 0, None, closed="neither"), None],
    }

    def __init__(
        self,
        model: str | None = None,
        n_estimators: int = 8,
        softmax_temperature: float | None = None,
        select_features: bool = True,
        weight_members: bool = True,
        categorical_features: str | list[int | str] = "auto",
        max_train_rows: int = 4096,
        context: str = "subsample",
        fine_tune: bool | int = False,
        fine_tune_seconds: float | None = None,
        chunk_rows: int = 1024,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        show_progress: bool | None = None,
        batch_size: int | str = "deprecated",
    ) -> None:
        super().__init__(
            model,
            n_estimators,
            select_features,
            weight_members,
            categorical_features,
            max_train_rows,
            context,
            fine_tune,
            fine_tune_seconds,
            chunk_rows,
            device,
            random_state,
            show_progress,
            batch_size,
        )
        self.softmax_temperature = softmax_temperature

    def fit(self, X: Any, y: Any) -> PFNClassifier:
        """Preprocess the train rows and cache their keys/values for every member."""
        self._check_params()
        self._check_y_given(y)
        frame = self._frame(X, reset=True)
        y = column_or_1d(y, warn=True)
        if pd.isna(y).any():
            raise ValueError("y contains NaN; drop those rows or fill the labels")
        try:
            self.classes_, encoded = np.unique(y, return_inverse=True)
        except TypeError:  # labels that do not compare with each other (np.unique sorts them)
            kinds = sorted({type(label).__name__ for label in y})
            raise TypeError(
                f"y mixes labels of types {kinds} that cannot be sorted together; give every label one type "
                "(e.g. y.astype(str))"
            ) from None
        check_classification_targets(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y has only one class ({plain(self.classes_[0])!r}); a classifier needs at least two")
        self._fit_members(frame, encoded, stratify=encoded)
        return self

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """The class ids as they are."""
        return y

    def _parts(self, index: int, rng: np.random.RandomState) -> tuple[np.ndarray, ...]:
        """The member's forward passes, each the model label of every class [k] (-1: not in that
        pass). Up to the head's size, one pass with a permutation of 0..k-1 (the prior labels
        classes 0..k-1; member 0 keeps the order). Beyond it, ``ROUNDS`` random partitions of the
        classes into g = ceil(k / head) groups of near-equal size, one pass per group on the rows
        of its classes, labelled in a random order: each pass is a problem of at most ``head``
        classes as the model was trained on, and the passes' conditional probabilities are
        coupled into one distribution (see couple_groups)."""
        k, head = len(self.classes_), self.pfn_.config.n_outputs
        if k <= head:
            return (np.arange(k) if index == 0 else rng.permutation(k),)
        groups = -(-k // head)
        parts = []
        for _ in range(ROUNDS):
            order = rng.permutation(k)
            for g in range(groups):
                members = order[g::groups]
                labels = np.full(k, -1)
                labels[members] = rng.permutation(len(members))
                parts.append(labels)
        return tuple(parts)

    def _member_targets(
        self, plan: _Plan, part: np.ndarray | None, y: np.ndarray
    ) -> tuple[np.ndarray | slice, np.ndarray, Any]:
        """The rows of the part's classes, their class ids relabelled by the part's labels."""
        labels = part[y]  # [n']
        rows = labels >= 0
        return rows, labels[rows], part

    def _coded(self) -> bool:
        """Whether there are more classes than the head (passes over groups of classes)."""
        return len(self.classes_) > self.pfn_.config.n_outputs

    def _can_select(self, y: np.ndarray) -> bool:
        """Up to the head's size always; beyond it when every class has a row in each validation
        fold (then every group of classes has context rows)."""
        return not self._coded() or np.unique(y, return_counts=True)[1].min() >= FOLDS

    def _can_weight(self) -> bool:
        """Up to the head's size (beyond it, members are mixed equally)."""
        return not self._coded()

    def _held_out_score(
        self, x_context: np.ndarray, y_context: np.ndarray, x_held: np.ndarray, y_held: np.ndarray
    ) -> float:
        """One forward pass up to the head's size; beyond it, one per group of classes of member
        0's parts (see _parts), coupled (couple_groups)."""
        parts = self._parts(0, np.random.RandomState(SELECTION_SEED))
        groups, probs = [], []
        for part in parts:
            labels = part[y_context]  # [n]
            rows = labels >= 0
            out = self.pfn_.predict(x_context[rows], labels[rows], x_held).cpu().double().numpy()  # [m, K]
            groups.append(np.flatnonzero(part >= 0))
            probs.append(out[:, part[groups[-1]]])
        coupled = couple_groups(probs, groups, np.ones(len(parts)), len(self.classes_))  # [m, k]
        return float(np.log(np.maximum(coupled[np.arange(len(y_held)), y_held], 1e-12)).mean())

    def _held_out_losses(self, probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """The log loss of each row, and the ROC AUC among the classes present (one against the
        rest, averaged)."""
        from sklearn.metrics import roc_auc_score

        losses = -np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))  # [h]
        present = np.unique(y)
        if len(present) < 2:
            return losses, math.nan
        scores = probs[:, present] / np.maximum(probs[:, present].sum(1, keepdims=True), 1e-300)  # [h, c]
        if len(present) == 2:
            return losses, float(roc_auc_score(y == present[1], scores[:, 1]))
        return losses, float(roc_auc_score(y, scores, multi_class="ovr", labels=present))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities [m, n_classes]: the members' probabilities mixed with their
        weights, or with more classes than the head, the members' passes over groups of classes
        coupled into one distribution (see couple_groups). Rows sum to 1."""
        return self._predict_chunks(X, self._mix)

    def _temperature(self) -> float:
        if self.softmax_temperature is not None:
            return float(self.softmax_temperature)
        from pfn.checkpoint import InferenceConfig

        return InferenceConfig.from_card(self.pfn_.card).softmax_temperature

    def _part_probs(self, member: _Member, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The classes [s] of one member's part and its probabilities of them [m, s] from its
        logits [m, K]."""
        classes = np.flatnonzero(member.target_map >= 0)  # [s]
        return classes, _softmax(output[:, member.target_map[classes]] / self._temperature())

    def _member_probs(self, member: _Member, output: np.ndarray) -> np.ndarray:
        """Class probabilities [m, k] from one member's logits [m, K]: over the classes of its
        part, 0 for the others."""
        classes, part = self._part_probs(member, output)
        probs = np.zeros((len(output), len(self.classes_)))
        probs[:, classes] = part
        return probs

    def _stacking(self, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """By the log-likelihood: the members' probabilities [n, M, k] of the true classes."""
        return likelihood_stacking(np.log(np.maximum(probs[np.arange(len(y)), :, y], 1e-300)))

    def _mix(self, outputs: list[_Weighted]) -> np.ndarray:
        """Class probabilities [m, k] from the members' logits [m, K] (see couple_groups): the
        weighted mean of the members' probabilities when every pass sees every class."""
        classes, probs = zip(*(self._part_probs(member, logits) for member, _, logits in outputs), strict=True)
        weights = np.array([weight for _, weight, _ in outputs])
        return couple_groups(list(probs), list(classes), weights, len(self.classes_))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class PFNRegressor(RegressorMixin, _PFNBase):
    """A PFN as a scikit-learn regressor with a full predictive distribution per row.

    Targets are standardised robustly (pfn.preprocessing.TargetScale: the mean and standard
    deviation of the targets winsorised at quantile-based fences, the scale widened for few rows,
    |y| / √n for targets without spread) and mapped back; the model sees them clipped to its
    buckets' range, so that the bar distribution's tails carry outliers.
    Every second member (1, 3, ...) sees them through a quantile transform to a normal shape
    fitted on the train targets (widened for few rows as the others' from 3 rows on), so that
    skewed and heavy-tailed targets fall where the model's buckets are fine; its distribution is
    mapped back onto the model's buckets. Members 1 and 3
    see the inputs through a Yeo-Johnson power transform; members 4..7 see every categorical
    column (any number of levels) and every column with 3..30 distinct values (ratings, small
    counts) replaced by its cross-fitted target encoding, and every column of more values that
    repeat at least 3 times on average (ids stored as numbers, ages) with its encoding appended
    (pfn.preprocessing.TargetEncodedColumns), in every pairing of target transform and column
    set; from member 8 the cycle repeats. (Unlike the classifier's, no member sees its inputs
    through a quantile transform.) Members' predictive distributions
    are mixed with their stacking weights.
    Parameters as PFNClassifier's (without softmax_temperature); default model "tabular-reg",
    default ``max_train_rows`` 1024.
    """

    _task = "regression"
    _default_model = "tabular-reg"
    # Which input transform suits a table differs (a power transform of skewed inputs cost 0.3 R²
    # on one table), so the stacking weights choose; a quantile transform of the inputs lost
    # regression accuracy (CHANGELOG.md, estimator changes).
    SCHEDULE = MemberSchedule(
        columns=Cycle(("selected", "wide"), every=2),
        encoding=Cycle((None, "target"), every=4),
        transform=Cycle(("none", "power")),
        target=Cycle(("plain", "quantile")),
    )

    def fit(self, X: Any, y: Any) -> PFNRegressor:
        """Preprocess the train rows, standardise y and cache the members' keys/values. The
        standardisation is ``y_mean_`` (location) and ``y_scale_`` (see pfn.preprocessing.TargetScale)."""
        self._check_params()
        self._check_y_given(y)
        frame = self._frame(X, reset=True)
        y = column_or_1d(
            check_array(y, ensure_2d=False, dtype=np.float64, ensure_all_finite=True, input_name="y"), warn=True
        )
        self.target_scale_ = TargetScale().fit(y)
        self.y_mean_, self.y_scale_ = self.target_scale_.loc, self.target_scale_.scale
        self._fit_members(frame, y, stratify=None)
        return self

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Standardised targets, clipped to the range of the model's buckets (beyond which its
        prior had no targets): the tail buckets carry what lies outside."""
        borders = self.pfn_.borders
        return np.clip(self.target_scale_.transform(y), float(borders[0]), float(borders[-1])).astype(np.float32)

    def _fit_head(self, y: np.ndarray, held_out: tuple[np.ndarray, np.ndarray] | None) -> None:
        """The tails of the predictive distributions (``tail_scales_``): the model's, or those
        fitted to how far the train targets beyond its outer buckets lie (see
        pfn.heads.dataset_tail_scales), whichever gives the validation rows' targets the lower
        squared error of the predictive mean (the tails fitted on each fold's context rows, as
        the members were); the model's without a validation. Fitted tails
        win where a spike of targets lies far out (zeros far below the rest, say) and lose
        where a long tail's rows differ in how far out they lie."""
        from pfn.heads import dataset_tail_scales

        model = self._bar(np.zeros((1, self._output_size())))  # the model's tails (or the width rule's)
        self.tail_scales_ = (float(model.left_scale), float(model.right_scale))
        fitted = dataset_tail_scales(y, self.pfn_.borders, self.tail_scales_)
        if held_out is None or fitted == self.tail_scales_:
            return
        probs, y_val = held_out
        errors = np.zeros(2)  # [fitted, the model's]: squared errors, each fold's tails fitted on its context
        for context, rows in folds(y_val, classification=False):
            own = dataset_tail_scales(y_val[context], self.pfn_.borders, self.tail_scales_)
            for i, tails in enumerate((own, self.tail_scales_)):
                errors[i] += np.sum((self._mixture(probs[rows], tails).mean().numpy() - y_val[rows]) ** 2)
        if errors[0] < errors[1]:
            self.tail_scales_ = fitted

    def _held_out_losses(self, probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """The negative log density of each row, and minus the squared error of the mean."""
        import torch

        bar = self._bar(np.log(np.maximum(probs, 1e-300)))  # the model's tails: the ensemble's are fitted later
        losses = bar.nll(torch.as_tensor(y, dtype=torch.float64)).double().numpy()  # [h]
        return losses, -float(np.mean((bar.mean().double().numpy() - y) ** 2))

    def _held_out_score(
        self, x_context: np.ndarray, y_context: np.ndarray, x_held: np.ndarray, y_held: np.ndarray
    ) -> float:
        import torch

        return float(self.pfn_.predict(x_context, y_context, x_held).logpdf(torch.as_tensor(y_held)).mean())

    def _member_targets(
        self, plan: _Plan, part: np.ndarray | None, y: np.ndarray
    ) -> tuple[np.ndarray | slice, np.ndarray, Any]:
        """All rows; standardised targets y [n'], through a quantile transform for the members
        whose schedule says so."""
        if self.SCHEDULE.target.at(plan.index) == "plain":
            return slice(None), y, None
        target_map = QuantileTarget().fit(y)
        return slice(None), target_map.transform(y).astype(np.float32), target_map

    def _bar(self, logits: np.ndarray | torch.Tensor) -> BarDistribution:
        """The model's bar distribution over standardised targets for logits [m, K], with the
        model's own tails (a member's prediction before it is mapped and mixed)."""
        import torch

        from pfn.heads import BarDistribution

        return BarDistribution(
            self.pfn_.borders.double().cpu(), torch.as_tensor(logits).double(), self.pfn_.tail_scales
        )

    def _member_probs(self, member: _Member, output: np.ndarray) -> np.ndarray:
        """One member's bucket probabilities [m, K] on the model's buckets over standardised
        targets. A quantile member's distribution over its transformed targets is mapped back
        through its CDF at the buckets' borders."""
        if member.target_map is None:
            return _softmax(output)
        borders = self.pfn_.borders.double().cpu().numpy()  # [K + 1]
        cdf = member.target_map.cdf(self._bar(output).cdf_at, borders[1:-1])  # [m, K - 1]
        edges = np.concatenate([np.zeros((len(cdf), 1)), cdf, np.ones((len(cdf), 1))], axis=1)  # [m, K + 1]
        return np.maximum(np.diff(edges, axis=1), 0.0)

    def _stacking(self, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
        """By the CRPS (see _crps_vectors)."""
        return quadratic_stacking(*self._crps_vectors(probs, y))

    def _crps_vectors(self, probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The CRPS on the model's inner buckets as squared distances (pfn.selection.quadratic_stacking),
        exactly: [n, M, 4T] from each member's bucket probabilities [n, M, K] against targets
        [n, 4T] from the standardised y [n] (the two tail buckets are left out). Within a bucket
        of width w the CDF is linear, and the bucket holding y splits at y into a piece of length
        r·w where the step is 0 and one of length (1 - r)·w where it is 1 (r is 0 or 1 for the
        other buckets); over a piece of length l where F runs from a to b against the step s,
        ∫(F - s)² = l·((a + b)/2 - s)² + l·(b - a)²/12: two squared terms per piece, each linear
        in the member's CDF, so the CRPS of a mixture is the squared distance of the mixed vectors."""
        borders = self.pfn_.borders.double().cpu().numpy()[1:-1]  # [T + 1] inner borders
        width = np.diff(borders)  # [T]
        cdf = np.cumsum(probs, axis=2)[:, :, :-1]  # [n, M, T + 1] at the inner borders
        lo, hi = cdf[:, :, :-1], cdf[:, :, 1:]  # [n, M, T] at each bucket's two ends
        r = np.clip((y[:, None] - borders[:-1]) / width, 0.0, 1.0)[:, None, :]  # [n, 1, T] share below y
        at_y = lo + r * (hi - lo)  # [n, M, T] the CDF at y (where y lies in the bucket)
        below, above = np.sqrt(r * width), np.sqrt((1 - r) * width)  # [n, 1, T]
        vectors = np.concatenate(
            [
                below * (lo + at_y) / 2,  # the piece below y, against 0
                below * (at_y - lo) / np.sqrt(12),
                above * (at_y + hi) / 2,  # the piece above y, against 1
                above * (hi - at_y) / np.sqrt(12),
            ],
            axis=2,
        )
        zeros = np.zeros_like(r[:, 0])  # [n, T]
        return vectors, np.concatenate([zeros, zeros, above[:, 0], zeros], axis=1)

    def _mix(self, outputs: list[_Weighted]) -> np.ndarray:
        """The members' bucket probabilities [m, K] (see _member_probs), mixed with their weights."""
        mixed = np.zeros_like(outputs[0].output, dtype=np.float64)  # [m, K]
        for member, weight, logits in outputs:
            mixed += weight * self._member_probs(member, logits)
        return mixed

    def _mixture(self, probs: np.ndarray, tails: tuple[float, float] | None = None) -> BarDistribution:
        """The mixed bar distribution over standardised targets for bucket probabilities [m, K],
        with ``tails`` (default: ``tail_scales_``)."""
        import torch

        from pfn.heads import BarDistribution

        logits = torch.as_tensor(np.log(np.maximum(probs, 1e-300)))
        return BarDistribution(self.pfn_.borders.double().cpu(), logits, tails or self.tail_scales_)

    def _distribution(self, probs: np.ndarray) -> PredictiveDistribution:
        return PredictiveDistribution(self._mixture(probs), self.y_mean_, self.y_scale_)

    def predict_dist(self, X: Any) -> PredictiveDistribution:
        """The predictive distribution of every row (numpy in, numpy out). It holds K bucket
        probabilities per row; for millions of rows use predict / predict_quantiles, which
        reduce chunk by chunk."""
        return self._distribution(self._predict_chunks(X, self._mix))

    def predict(self, X: Any) -> np.ndarray:
        """The predictive mean of each row."""
        return self._predict_chunks(X, lambda outputs: self._distribution(self._mix(outputs)).mean())

    def predict_quantiles(self, X: Any, quantiles: Any = (0.1, 0.5, 0.9)) -> np.ndarray:
        """Quantiles [m, len(quantiles)] of each row's predictive distribution."""
        levels = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
        return self._predict_chunks(X, lambda outputs: self._distribution(self._mix(outputs)).quantile(levels))


def couple_groups(probs: list[np.ndarray], groups: list[np.ndarray], weights: np.ndarray, k: int) -> np.ndarray:
    """One distribution over k classes [m, k] from J conditional ones: probs[j] [m, s_j] is pass
    j's probability of each class of its group, groups[j] [s_j] those classes (indices; every
    class in some group), weights [J] (> 0). The result p minimises
    sum_j weights_j KL(probs_j || p restricted to group j), found by the fixed-point iteration of
    Hastie and Tibshirani's pairwise coupling generalised to groups (Zadrozny 2002):
    p_c <- sum_j w_j probs_jc / sum_{j: c in group j} w_j / p(group j), normalised, at most
    ``COUPLING_ITERATIONS`` times (each about 4 m sum_j s_j flops, in two products with the
    sparse group matrix). When every group holds every class this is the weighted mean of probs
    after one step. Conditional probabilities are floored at ``PROBABILITY_FLOOR`` so that every
    p stays positive."""
    sizes = [len(group) for group in groups]
    rows, columns = np.repeat(np.arange(len(groups)), sizes), np.concatenate(groups)
    member = sparse.csr_array((np.ones(len(rows)), (rows, columns)), shape=(len(groups), k))  # [J, k]
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)  # [J]
    numerator = np.zeros((len(probs[0]), k))  # [m, k]
    for weight, prob, group in zip(w, probs, groups, strict=True):
        numerator[:, group] += weight * np.maximum(prob, PROBABILITY_FLOOR)
    p = numerator / numerator.sum(axis=1, keepdims=True)  # [m, k]
    for _ in range(COUPLING_ITERATIONS):
        in_group = np.maximum((member @ p.T).T, PROBABILITY_FLOOR)  # [m, J]
        updated = numerator / (member.T @ (w / in_group).T).T  # [m, k]
        updated /= updated.sum(axis=1, keepdims=True)
        converged = np.abs(updated - p).max() < COUPLING_TOLERANCE
        p = updated
        if converged:
            break
    return p


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class PredictiveDistribution:
    """Predictive distributions of m rows on the original target scale: loc + scale · Z, with
    Z a bar distribution. Numpy in, numpy out. Values beyond the float64 range saturate at
    ±1.8e308 instead of overflowing."""

    def __init__(self, bar: BarDistribution, loc: float, scale: float) -> None:
        self.bar = bar
        self.loc = loc
        self.scale = scale

    def _z(self, y: Any) -> torch.Tensor:
        """Standardised values of target values y (a number or an array of numbers); a TypeError
        or ValueError naming ``y`` for anything else."""
        try:
            values = np.asarray(y)
        except ValueError as error:  # ragged nested sequences
            raise ValueError(f"y must be a number or an array of numbers, got a ragged sequence: {error}") from None
        if values.dtype.kind not in "iuf":
            raise TypeError(
                f"y must be a number or an array of numbers (target values), got {plain(y)!r} "
                f"({type(y).__name__} of dtype {values.dtype})"
            )
        import torch

        with np.errstate(over="ignore"):
            return torch.as_tensor((values.astype(np.float64) - self.loc) / self.scale)

    def _y(self, z: torch.Tensor) -> np.ndarray:
        """Original-scale values of standardised ones."""
        with np.errstate(over="ignore"):
            return np.clip(self.loc + self.scale * z.numpy(), -FLOAT_MAX, FLOAT_MAX)

    def mean(self) -> np.ndarray:
        return self._y(self.bar.mean())

    def median(self) -> np.ndarray:
        return self._y(self.bar.median())

    def quantile(self, q: Any) -> np.ndarray:
        """q scalar -> [m]; q 1-D of length Q -> [m, Q]."""
        return self._y(self.bar.quantile(q))

    def interval(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """The central interval holding probability ``alpha`` (scipy's convention): (lower, upper)."""
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise TypeError(
                f"alpha must be a number strictly between 0 and 1 (e.g. 0.9), got {plain(alpha)!r} "
                f"({type(alpha).__name__})"
            )
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be strictly between 0 and 1, got {plain(alpha)!r}")
        bounds = self.quantile([(1 - alpha) / 2, (1 + alpha) / 2])
        return bounds[:, 0], bounds[:, 1]

    def logpdf(self, y: Any) -> np.ndarray:
        """The log density at target values y (broadcast against the m rows)."""
        return self.bar.logpdf(self._z(y)).numpy() - math.log(self.scale)

    def cdf(self, y: Any) -> np.ndarray:
        """The CDF at target values y (broadcast against the m rows)."""
        return self.bar.cdf(self._z(y)).numpy()

    def sample(self, n: int, random_state: int | None = None) -> np.ndarray:
        """n draws per row: [n, m]."""
        import torch

        seed = check_random_state(random_state).randint(2**31)
        return self._y(self.bar.sample(n, torch.Generator().manual_seed(int(seed))))
