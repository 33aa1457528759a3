"""Samplers of synthetic datasets: every prior draws a :class:`Batch` from a torch.Generator."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from priors.base import (
    HYPERPRIORS,
    Batch,
    Classification,
    FunctionPrior,
    Gamma,
    IrrelevantFeatures,
    LogUniform,
    Mixture,
    Prior,
    Standardized,
    Uniform,
    WarpedTargets,
    Wrapper,
)
from priors.bnn import BNNPrior
from priors.bo import BOGPPrior
from priors.curves import LearningCurvePrior
from priors.function_classes import LinearPrior, ReLUNetPrior, SparseLinearPrior, TreePrior
from priors.gp import GPPrior
from priors.scm import SCMPrior

PRIORS: dict[str, type[Prior]] = {
    cls.name: cls
    for cls in (
        GPPrior,
        BOGPPrior,
        BNNPrior,
        LearningCurvePrior,
        SCMPrior,
        LinearPrior,
        SparseLinearPrior,
        ReLUNetPrior,
        TreePrior,
        Mixture,
        Classification,
        Standardized,
        IrrelevantFeatures,
        WarpedTargets,
    )
}


def from_dict(spec: dict[str, Any]) -> Prior:
    """Build a prior from its description: ``{"type": NAME, field: value, ...}``.

    Nested priors (``base``, ``components``) are descriptions too; a hyperprior is written
    ``{"dist": "gamma" | "loguniform" | "uniform", ...its fields}``. Unknown types and keys
    raise ValueError naming them.
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"a prior description must be a table with a 'type' key, got {spec!r}")
    kind = spec["type"]
    if kind not in PRIORS:
        raise ValueError(f"unknown prior type {kind!r}; known types: {sorted(PRIORS)}")
    cls = PRIORS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(spec) - set(fields) - {"type"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} for prior {kind!r}; known keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _parse(value, hints[key], f"{kind}.{key}") for key, value in spec.items() if key != "type"}
    try:
        return cls(**kwargs)
    except TypeError as error:  # a required key missing, e.g. a wrapper's base
        raise ValueError(f"prior {kind!r}: {error}") from None


def _parse(value: Any, hint: Any, where: str) -> Any:
    if isinstance(value, dict) and "dist" in value:
        dist = dict(value)
        name = dist.pop("dist")
        if name not in HYPERPRIORS:
            raise ValueError(f"{where}: unknown hyperprior {name!r}; known: {sorted(HYPERPRIORS)}")
        try:
            return HYPERPRIORS[name](**dist)
        except TypeError as error:
            raise ValueError(f"{where}: bad fields for hyperprior {name!r}: {error}") from None
    if isinstance(value, dict):
        return from_dict(value)
    if isinstance(value, list):
        return tuple(_parse(v, _item_hint(hint), where) for v in value)
    return value


def _item_hint(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not types.NoneType]
    return typing.get_args(args[0])[0] if args and typing.get_args(args[0]) else Any


__all__ = [
    "Batch",
    "BNNPrior",
    "BOGPPrior",
    "Classification",
    "FunctionPrior",
    "GPPrior",
    "Gamma",
    "IrrelevantFeatures",
    "WarpedTargets",
    "Wrapper",
    "LearningCurvePrior",
    "LinearPrior",
    "LogUniform",
    "Mixture",
    "Prior",
    "ReLUNetPrior",
    "SCMPrior",
    "SparseLinearPrior",
    "Standardized",
    "TreePrior",
    "Uniform",
    "from_dict",
]
