"""Tiny run configs for fast tests."""

import dataclasses

from pfn.config import RunConfig, TrainConfig
from pfn.model import ModelConfig
from priors import BNNPrior, Classification, GPPrior


def tiny_config(task: str = "regression", **train) -> RunConfig:
    base = GPPrior(max_features=3)
    prior = base if task == "regression" else Classification(base=BNNPrior(max_features=3), max_classes=4)
    model = ModelConfig(
        task=task, n_features=3, n_outputs=16 if task == "regression" else 4, d_model=16, n_layers=2, n_heads=2, d_ff=32
    )
    defaults = dict(
        steps=6,
        batch_size=4,
        accumulation=2,
        n_rows=24,
        min_train=2,
        max_train=16,
        lr=3e-3,
        warmup_steps=2,
        precision="fp32",
        checkpoint_every=2,
        log_every=2,
        border_datasets=100,
    )
    return RunConfig(name=f"tiny-{task}", prior=prior, model=model, train=TrainConfig(**{**defaults, **train}))


def replace_train(config: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))


def published_pfn_card(section: dict) -> dict:
    """The shipped card of a published benchmark section (a task of docs/results/*/X.json),
    checking that its PFN figures are of the shipped weights."""
    from pfn.checkpoint import read_card, resolve, shipped_names

    assert section["model"] in shipped_names()
    card = read_card(resolve(section["model"]))
    assert section["weights_sha256"] == card["weights_sha256"]
    return card
