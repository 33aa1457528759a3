"""The recipe ladder: arms resolve to configs, train to one CPU budget, and are scored."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_tabular_benchmark import _tables

from benchmarks import recipe
from pfn.config import ConfigError, load_config
from pfn.train import draw_sizes, seed_for


def write_config(path, task):
    prior = (
        '[prior]\ntype = "gp"\nmax_features = 3\n'
        if task == "regression"
        else '[prior]\ntype = "classification"\nmax_classes = 3\n[prior.base]\ntype = "gp"\nmax_features = 3\n'
    )
    path.write_text(
        f'name = "tiny-{task}"\n{prior}'
        f'[model]\ntask = "{task}"\nn_features = 3\nn_outputs = {16 if task == "regression" else 3}\n'
        "d_model = 16\nn_layers = 2\nn_heads = 2\nd_ff = 32\n"
        "[train]\nsteps = 100\nbatch_size = 4\nn_rows = 40\nmax_train = 30\nwarmup_steps = 20\n"
        'precision = "fp32"\nborder_datasets = 100\n'
    )
    return path


def test_arms_combine_and_unknown_arms_are_named(tmp_path):
    base = load_config(write_config(tmp_path / "c.toml", "regression"))
    config = recipe.arm_config(base, "muon+lr-x3+thinking-16")
    assert config.train.optimizer == "muon" and config.train.lr == pytest.approx(3 * base.train.lr)
    assert config.model.thinking_rows == 16 and config.name == "tiny-regression-muon+lr-x3+thinking-16"
    rows = recipe.arm_config(base, "test-64+batch-x2").train
    assert rows.test_rows == 64 and rows.batch_size == 2 * base.train.batch_size
    with pytest.raises(ConfigError, match=r"unknown recipe arm 'adam' in 'muon\+adam'; known: \["):
        recipe.arm_config(base, "muon+adam")


def test_step_timing_draws_no_targets_from_the_prior(tmp_path, monkeypatch):
    """Timing a regression arm must not need equal-mass borders from a draw of its prior (a prior
    of discrete targets repeats values in a small draw, and those borders are refused)."""
    base = load_config(write_config(tmp_path / "c.toml", "regression"))

    def refuse(config):
        raise ValueError("prior samples have repeated values")

    monkeypatch.setattr(recipe, "target_support", refuse)
    (seconds,) = recipe.calibrate([base], repeats=1)
    assert seconds > 0


def test_calibration_steps_stand_for_the_whole_schedule(tmp_path):
    """The timed steps' mean row count matches the schedule's under a row curriculum of
    log-uniform (heavy-tailed) row counts, where 20 evenly spaced steps miss it by 22%."""
    base = load_config(write_config(tmp_path / "c.toml", "regression"))
    train = dataclasses.replace(base.train, steps=2000, n_rows=1152, min_rows=16, max_train=1024, test_rows=0)
    model = dataclasses.replace(base.model, d_model=128, n_heads=4, d_ff=256)  # the tabular models' size
    config = dataclasses.replace(base, train=train, model=model)
    steps = recipe.calibration_steps(config)
    assert len(steps) == recipe.CALIBRATION_STEPS == len(set(steps)) and all(0 <= s < 2000 for s in steps)

    def rows(step):
        return draw_sizes(train, step, torch.Generator().manual_seed(seed_for(train.seed, step)))[0]

    mean = np.mean([rows(s) for s in range(2000)])
    assert abs(np.mean([rows(s) for s in steps]) / mean - 1) < 0.05


def test_an_arms_schedule_is_scaled_to_its_step_count(tmp_path):
    base = load_config(write_config(tmp_path / "c.toml", "regression"))
    config = recipe.arm_config(base, "lawa", steps=400)
    assert config.train.steps == 400 and config.train.warmup_steps == 20
    assert config.train.average_last == 10 and config.train.average_every == 10
    assert recipe.arm_config(base, "baseline", steps=50).train.warmup_steps == 5


def test_a_quick_ladder_trains_each_arm_to_the_budget_and_reuses_finished_arms(tmp_path):
    config = write_config(tmp_path / "c.toml", "regression")
    result = recipe.run(tmp_path / "out", quick=True, config=config, arms=["baseline", "muon+rms-decay"])
    rows = {row["arm"]: row for row in result["arms"]}
    for row in rows.values():
        plan = json.loads((tmp_path / "out" / row["arm"] / "plan.json").read_text())
        assert row["steps"] == plan["steps"] >= 10 and row["datasets_seen"] == 4 * row["steps"]
        assert row["heldout_loss"] > 0 and set(row["gp_gap_per_n_train"]) == {str(n) for n in recipe.GP_GRID}
    assert rows["muon+rms-decay"]["model"]["norm"] == "rms"
    plan = json.loads((tmp_path / "out" / "muon+rms-decay" / "plan.json").read_text())
    ratio = plan["cost_relative_to_baseline"]  # timed side by side with the baseline
    assert plan["steps"] == max(10, int(rows["baseline"]["steps"] / ratio))
    assert "| muon+rms-decay |" in (tmp_path / "out" / "recipe.md").read_text()
    again = recipe.run(tmp_path / "out", quick=True, config=config, arms=["baseline"])
    assert again["arms"][0] == rows["baseline"]


def test_a_classification_arm_is_scored_on_the_tables(tmp_path):
    _tables(tmp_path / "data")
    config = write_config(tmp_path / "c.toml", "classification")
    row = recipe.run(tmp_path / "out", quick=True, config=config, arms=["baseline"], data=tmp_path / "data")["arms"][0]
    assert 0.5 < row["tables_roc_auc"] <= 1.0 and row["tables"] == 2


def test_the_ladder_takes_a_config_not_a_model(tmp_path):
    with pytest.raises(ConfigError, match="give --config, not --model"):
        recipe.run(tmp_path, quick=True, model="gp")


def test_the_held_out_datasets_do_not_depend_on_an_arms_step_count(tmp_path, monkeypatch):
    base = load_config(write_config(tmp_path / "c.toml", "regression"))
    seen = []
    monkeypatch.setattr(recipe, "loss_fn", lambda config, out, y, borders, tails: seen.append(y.clone()) or y.sum())

    class Model:
        borders, tail_scales = None, None

        @staticmethod
        def model(x, y_train, n_features):
            return x

    for steps in (100, 5000):
        recipe.heldout_loss(Model, recipe.arm_config(base, "baseline", steps=steps), 3)
    assert all(torch.equal(a, b) for a, b in zip(seen[:3], seen[3:], strict=True))
