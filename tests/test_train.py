import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from helpers import replace_train, tiny_config

import pfn
import priors
from pfn.checkpoint import (
    CheckpointError,
    load_model_files,
    load_state,
    read_card,
    resolve,
    save_state,
    shipped_names,
)
from pfn.cli import main
from pfn.config import ConfigError, RunConfig, TrainConfig, from_dict, load_config, load_recipe
from pfn.model import ModelConfig
from pfn.train import build_model, build_optimizer, choose_precision, draw_sizes, learning_rate, train
from priors import Classification, GPPrior, LinearPrior


def weights(run_dir):
    tensors, state = load_state(run_dir / "state.safetensors")
    return tensors, state


@pytest.mark.parametrize(
    "curriculum",
    [{}, {"min_rows": 8}, {"optimizer": "muon", "average_last": 2, "average_every": 2}],
    ids=["fixed-rows", "row-curriculum", "muon-averaged"],
)
def test_resume_continues_exactly(tmp_path, curriculum):
    config = tiny_config(**curriculum)
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", stop_at=3, progress=False)
    _, state = weights(tmp_path / "resumed")
    assert state["step"] == 3
    train(config, tmp_path / "resumed", progress=False)
    a, state_a = weights(tmp_path / "straight")
    b, state_b = weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert state_a["curve"] == state_b["curve"] and state_b["datasets_seen"] == 6 * 4
    model_a, model_b = (load_model_files(tmp_path / run / "model.safetensors")[1] for run in ("straight", "resumed"))
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = build_model(tiny_config())
    optimizers = build_optimizer(replace_train(tiny_config(), optimizer="muon").train, model)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for group in optimizers.parts["muon"].param_groups for p in group["params"]}
    adamw = {names[id(p)] for group in optimizers.parts["optim"].param_groups for p in group["params"]}
    assert muon == {n for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks.")} | {
        "decoder.0.weight"
    }
    assert {"x_encoder.weight", "decoder.2.weight", "blocks.0.qkv.bias"} <= adamw and not muon & adamw
    assert len(muon) + len(adamw) == len(names)
    assert set(build_optimizer(tiny_config().train, model).parts) == {"optim"}


def test_the_written_model_is_the_mean_of_the_latest_snapshots(tmp_path):
    config = replace_train(tiny_config(), average_last=2, average_every=2, checkpoint_every=6)
    train(config, tmp_path / "run", progress=False)
    tensors, _ = load_state(tmp_path / "run" / "state.safetensors")
    written = load_model_files(tmp_path / "run" / "model.safetensors")[1]
    name = "blocks.0.qkv.weight"
    snapshots = [tensors[f"average.{j}.{name}"] for j in range(2)]
    torch.testing.assert_close(written[name], (snapshots[0] + snapshots[1]) / 2)
    assert not torch.equal(snapshots[1], snapshots[0]) and torch.equal(tensors[f"model.{name}"], snapshots[1])


def test_the_card_records_process_cpu_time(tmp_path):
    state = train(tiny_config(), tmp_path / "run", progress=False)
    training = read_card(tmp_path / "run" / "model.json")["training"]
    assert training["cpu_hours_measure"] == "process CPU time"
    assert 0 < state.cpu_seconds <= torch.get_num_threads() * state.wall_time_s + 0.5
    assert training["cpu_hours"] == round(state.cpu_seconds / 3600, 3)


def test_resume_refuses_another_config(tmp_path):
    train(tiny_config(), tmp_path, stop_at=2, progress=False)
    with pytest.raises(CheckpointError, match=r"different config \(sections differing: \['train'\]\)"):
        train(tiny_config(lr=1e-2), tmp_path, progress=False)


def test_resume_accepts_a_state_saved_before_a_config_field_existed(tmp_path):
    config = tiny_config()
    train(config, tmp_path, stop_at=2, progress=False)
    tensors, state = load_state(tmp_path / "state.safetensors")
    del state["config"]["train"]["init_from"]  # as written by an older version
    save_state(tmp_path / "state.safetensors", tensors, state)
    assert train(config, tmp_path, progress=False).step == 6


def test_a_later_stage_starts_from_the_earlier_weights_and_records_them(tmp_path):
    first = tiny_config()
    train(first, tmp_path / "stage1", progress=False)
    stage1 = json.loads((tmp_path / "stage1" / "model.json").read_text())
    second = dataclasses.replace(
        replace_train(first, init_from=str(tmp_path / "stage1"), steps=4, lr=1e-9, warmup_steps=1),
        prior=GPPrior(max_features=3, lengthscale=0.3),
    )
    train(second, tmp_path / "stage2", stop_at=1, progress=False)
    start, _ = weights(tmp_path / "stage2")
    end, _ = weights(tmp_path / "stage1")
    for key in (k for k in start if k.startswith("model.")):  # one step at lr 1e-9 moves nothing visible
        torch.testing.assert_close(start[key], end[key], atol=1e-6, rtol=0)
    train(second, tmp_path / "stage2", progress=False)
    card = json.loads((tmp_path / "stage2" / "model.json").read_text())
    assert card["borders"] == stage1["borders"]  # buckets keep their meaning across stages
    origin = card["training"]["init_from"]
    assert origin["weights_sha256"] == stage1["weights_sha256"] and origin["steps"] == 6
    assert origin["curve"] == stage1["training"]["curve"]
    assert card["training"]["total_datasets_seen"] == 6 * 4 + 4 * 4
    third = replace_train(second, init_from=str(tmp_path / "stage2"))
    train(third, tmp_path / "stage3", progress=False)
    card3 = json.loads((tmp_path / "stage3" / "model.json").read_text())
    assert card3["training"]["init_from"]["init_from"]["weights_sha256"] == stage1["weights_sha256"]
    assert card3["training"]["total_datasets_seen"] == 6 * 4 + 2 * 4 * 4


def test_a_later_stage_must_keep_the_architecture(tmp_path):
    train(tiny_config(), tmp_path / "stage1", progress=False)
    wider = dataclasses.replace(
        replace_train(tiny_config(), init_from=str(tmp_path / "stage1")),
        model=ModelConfig(n_features=3, n_outputs=16, d_model=32, n_layers=2, n_heads=2, d_ff=32),
    )
    with pytest.raises(ConfigError, match="must keep the architecture"):
        train(wider, tmp_path / "stage2", progress=False)
    with pytest.raises(ConfigError, match="init_from='nowhere' cannot be read"):
        train(replace_train(tiny_config(), init_from="nowhere"), tmp_path / "stage3", progress=False)


def test_checkpoint_files_are_written_atomically_and_loadable(tmp_path):
    state = train(tiny_config(), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors", "state.safetensors"]
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["training"]["steps"] == 6 and card["training"]["datasets_seen"] == 24
    assert card["prior"]["type"] == "gp" and len(card["borders"]) == 17
    assert len(card["tail_scales"]) == 2 and min(card["tail_scales"]) > 0
    assert card["training"]["curve"] == state.curve and len(state.curve) == 3
    model = pfn.load(tmp_path / "model.safetensors")
    assert model.card == card


def test_a_state_from_before_tail_scales_gets_them_without_training_further(tmp_path):
    train(tiny_config(), tmp_path, progress=False)
    tensors, state = load_state(tmp_path / "state.safetensors")
    scales = state.pop("tail_scales")
    save_state(tmp_path / "state.safetensors", tensors, state)
    train(tiny_config(), tmp_path, progress=False)
    again, state = load_state(tmp_path / "state.safetensors")
    assert state["tail_scales"] == scales and state["step"] == 6
    assert all(torch.equal(tensors[k], again[k]) for k in tensors)
    assert json.loads((tmp_path / "model.json").read_text())["tail_scales"] == scales


def test_training_reduces_the_loss(tmp_path):
    config = RunConfig(
        name="linear-1d",
        prior=LinearPrior(min_features=1, max_features=1, noise=0.1),
        model=ModelConfig(n_features=1, n_outputs=32, d_model=32, n_layers=2, n_heads=2, d_ff=64),
        train=TrainConfig(
            steps=150,
            batch_size=16,
            n_rows=40,
            min_train=2,
            max_train=20,
            lr=3e-3,
            warmup_steps=10,
            precision="fp32",
            checkpoint_every=150,
            log_every=25,
            border_datasets=200,
        ),
    )
    curve = train(config, tmp_path, progress=False).curve
    assert curve[-1][2] < curve[0][2] - 0.3, curve


def test_classification_run_predicts_probabilities(tmp_path):
    train(tiny_config("classification"), tmp_path, progress=False)
    model = pfn.load(tmp_path)
    x = torch.randn(10, 3)
    probs = model.predict(x[:6], torch.tensor([0, 1, 2, 0, 1, 2]), x[6:])
    assert probs.shape == (4, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=100, warmup_steps=10, lr=1.0, max_train=10, n_rows=20)
    rates = [learning_rate(config, s) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False)) and rates[-1] < 1e-3


def test_train_sizes_cover_the_range():
    config = TrainConfig(min_train=1, max_train=200, n_rows=256)
    g = torch.Generator().manual_seed(0)
    rows, sizes = zip(*(draw_sizes(config, 0, g) for _ in range(2000)), strict=True)
    assert set(rows) == {256} and min(sizes) == 1 and max(sizes) == 200
    assert sum(s <= 10 for s in sizes) > 300  # the log-uniform half favours small train sets


def test_row_curriculum_grows_rows_and_keeps_test_rows():
    config = TrainConfig(steps=1000, min_rows=16, n_rows=512, min_train=4, max_train=448, curriculum_fraction=0.5)
    g = torch.Generator().manual_seed(0)
    first = [draw_sizes(config, 0, g) for _ in range(200)]
    assert {rows for rows, _ in first} == {16}
    late = [draw_sizes(config, 900, g) for _ in range(3000)]
    rows = [r for r, _ in late]
    assert min(rows) < 32 and max(rows) > 400 and max(rows) <= 512
    assert all(4 <= n_train < r and n_train <= 448 * r // 512 + 4 for r, n_train in late)
    middle = [draw_sizes(config, 250, g)[0] for _ in range(2000)]  # cap halfway up: 264 rows
    assert max(middle) <= 264


def test_test_rows_cut_each_step_to_its_train_rows_plus_test_rows():
    full = TrainConfig(min_train=1, max_train=200, n_rows=264)
    cut = dataclasses.replace(full, test_rows=64)
    sizes = [draw_sizes(full, 0, torch.Generator().manual_seed(s)) for s in range(500)]
    cut_sizes = [draw_sizes(cut, 0, torch.Generator().manual_seed(s)) for s in range(500)]
    assert [n for _, n in cut_sizes] == [n for _, n in sizes]  # the same train-row counts
    assert all(rows == min(264, n + 64) for rows, n in cut_sizes)
    assert sum(rows for rows, _ in cut_sizes) < 0.6 * sum(rows for rows, _ in sizes)
    with pytest.raises(ConfigError, match="test_rows"):
        TrainConfig(test_rows=-1)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_auto_precision_picks_the_faster_timed_step(task):
    config = tiny_config(task, precision="auto", accumulation=1)
    borders = [-3.0 + 6.0 * i / 16 for i in range(17)] if task == "regression" else None
    precision, measured = choose_precision(config, torch.device("cpu"), borders, (1.0, 1.0) if borders else None)
    assert measured["fp32_gflops"] > 0 and measured["bf16_gflops"] > 0
    if measured["bf16_gflops"] < measured["fp32_gflops"] / 2:  # a CPU without bf16 units: steps not timed
        assert precision == "fp32" and "bf16_step_s" not in measured
    else:
        assert precision == min(("fp32", "bf16"), key=lambda p: measured[f"{p}_step_s"])


def test_a_compiled_run_trains_the_same_parameters(tmp_path):
    eager = train(tiny_config(steps=3), tmp_path / "eager", progress=False)
    compiled = train(tiny_config(steps=3, compile=True), tmp_path / "compiled", progress=False)
    assert compiled.config["train"]["compile"] and eager.step == compiled.step == 3
    (a, _), (b, _) = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    for key in a:
        if key.startswith("model."):
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_a_fixed_precision_is_not_measured():
    assert choose_precision(tiny_config(precision="bf16"), torch.device("cpu"), None, None) == ("bf16", {})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(model={"n_features": 3, "n_outputs": 16, "d_modell": 8}), r"unknown key\(s\) \['d_modell'\] in \[mod"),
        (dict(trian={}), r"unknown config key\(s\) \['trian'\]"),
        (dict(train={"max_train": 300, "n_rows": 256}), "at least one test row"),
        (dict(train={"compile": "yes"}), "train.compile must be true or false"),
        (dict(train={"min_rows": 2, "min_train": 4}), "train.min_rows must be 0"),
        (dict(train={"optimizer": "sgd"}), "train.optimizer must be 'adamw' or 'muon'"),
        (dict(train={"average_last": 3}), "average_last and train.average_every must both be 0"),
        (dict(model={"n_features": 3, "n_outputs": 16, "norm": "batch"}), r"\[model\]: norm must be"),
        (dict(prior={"type": "gp", "max_features": 8}), "uses up to 8 features, more than the 3"),
    ],
)
def test_config_errors_name_the_problem(change, message):
    spec = {
        "name": "t",
        "prior": {"type": "gp", "max_features": 3},
        "model": {"n_features": 3, "n_outputs": 16},
        **change,
    }
    with pytest.raises(ConfigError, match=message):
        from_dict(spec)


def test_more_classes_than_the_head_fails_before_training():
    with pytest.raises(ConfigError, match="up to 10 classes but the model's head has n_outputs=4"):
        RunConfig(
            name="c",
            prior=Classification(base=GPPrior(), max_classes=10),
            model=ModelConfig(task="classification", n_features=5, n_outputs=4),
            train=TrainConfig(),
        )


def test_replace_train_helper_keeps_other_sections():
    config = replace_train(tiny_config(), steps=9)
    assert config.train.steps == 9 and config.prior == tiny_config().prior


def test_training_curves_are_plotted_from_the_card(tmp_path):
    pytest.importorskip("matplotlib")  # the bench extra
    from benchmarks.training_curves import run as plot_curves

    train(tiny_config("classification"), tmp_path / "run", progress=False)
    result = plot_curves(tmp_path / "out", model=str(tmp_path / "run" / "model.json"))
    (entry,) = result["models"].values()
    assert entry["steps"] == 6 and entry["datasets_seen"] == 24 and len(entry["curve"]) == 3
    assert entry["final_loss"] == entry["curve"][-1][2]
    assert (tmp_path / "out" / "training_curves.png").is_file()


def test_training_curves_of_a_staged_model_continue_on_one_axis(tmp_path):
    pytest.importorskip("matplotlib")  # the bench extra
    from benchmarks.training_curves import run as plot_curves
    from benchmarks.training_curves import stage_labels

    first = tiny_config()
    train(first, tmp_path / "stage1", progress=False)
    second = replace_train(first, init_from=str(tmp_path / "stage1"), steps=4, seed=1)
    train(second, tmp_path / "stage2", progress=False)
    result = plot_curves(tmp_path / "out", model=str(tmp_path / "stage2" / "model.json"))
    (entry,) = result["models"].values()
    one, two = entry["stages"]
    assert [p[1] for p in one] == [8, 16, 24]  # stage 1: 2 steps of 4 datasets per curve point
    assert [p[1] for p in two] == [24 + 8, 24 + 16]  # stage 2 starts where stage 1 ended
    assert [p[2] for p in two] == [p[2] for p in entry["curve"]]
    assert entry["stage_labels"] == ["stage 1", "stage 2"]  # train() called without a command
    named = {"command": "pfn train configs/b.toml --out x", "init_from": {"command": "pfn train a.toml"}}
    assert stage_labels(named) == ["a", "b"]


ROOT = Path(__file__).resolve().parents[1]


RECIPES = sorted((ROOT / "configs").glob("**/*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_in_the_repository_passes_a_dry_run(path, capsys):
    """A dry run resolves every stage (prior against model, classes against head, the chain of
    architectures) and draws a dataset from each stage's prior, training nothing."""
    assert main(["train", str(path), "--dry-run", "--out", "runs/x"]) == 0
    assert capsys.readouterr().out.count("stage ") == len(load_recipe(path).stages)


def test_configs_hold_one_recipe_per_shipped_model_and_the_ablations():
    assert sorted(p.stem for p in (ROOT / "configs").glob("*.toml")) == shipped_names()
    assert all(p.parent.name == "ablations" for p in RECIPES if p.stem not in shipped_names())


def _stage_records(card):
    """The card's stages, first to last: the earlier stages' records, then the card's own."""
    records, stage = [], card["training"].get("init_from")
    while stage:
        records.insert(0, stage)
        stage = stage.get("init_from")
    return [*records, {**card["training"], "prior": card["prior"]}]


@pytest.mark.parametrize("name", shipped_names())
def test_each_shipped_checkpoint_is_rebuilt_by_its_recipe_stage_by_stage(name):
    """configs/NAME.toml has one stage per stage the card records, each with the prior, step count
    and datasets that stage trained on, and the last with the card's model and schedule."""
    card = read_card(resolve(name))
    recipe = load_recipe(ROOT / "configs" / f"{name}.toml")
    records = _stage_records(card)
    assert len(recipe.stages) == len(records)
    for stage, record in zip(recipe.stages, records, strict=True):
        assert stage.prior.to_dict() == priors.from_dict(record["prior"]).to_dict()
        assert (stage.train.steps, stage.train.steps * stage.train.batch_size) == (
            record["steps"],
            record["datasets_seen"],
        )
    last = recipe.stages[-1]
    assert last.model == ModelConfig(**card["model"])  # cards from before a field carry its default
    trained = {k: v for k, v in card["train"].items() if k != "init_from"}
    assert {k: v for k, v in dataclasses.asdict(last.train).items() if k in trained} == trained


def test_a_stage_changes_train_keys_and_replaces_the_prior(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        'name = "r"\n[prior]\ntype = "gp"\nmax_features = 3\nlengthscale = 0.5\n'
        "[model]\nn_features = 3\nn_outputs = 16\n[train]\nsteps = 10\nlr = 0.001\n"
        "[[stages]]\n[stages.train]\nlr = 0.0005\n"
        '[[stages]]\n[stages.prior]\ntype = "linear"\nmax_features = 3\n'
    )
    recipe = load_recipe(path)
    first, second, third = recipe.stages
    assert (second.train.lr, second.train.steps, second.prior) == (0.0005, 10, first.prior)
    assert (
        third.train.lr == 0.0005
        and third.prior.to_dict() == priors.from_dict({"type": "linear", "max_features": 3}).to_dict()
    )
    configs = recipe.stage_configs(tmp_path / "run")
    assert [c.train.init_from for c in configs] == [
        "",
        str(tmp_path / "run" / "stage-1"),
        str(tmp_path / "run" / "stage-2"),
    ]
    assert recipe.folders(tmp_path / "run")[-1] == tmp_path / "run"


@pytest.mark.parametrize(
    "stage, message",
    [
        ("[stages.model]\nd_model = 64\n", "stage 2 changes \\[model\\].*the architecture must stay"),
        ('[stages.train]\ninit_from = "gp"\n', "stage 2 sets train.init_from"),
        ("[stages.data]\nx = 1\n", r"stage 2: unknown key\(s\) \['data'\]"),
        ("[stages.train]\nlr = -1.0\n", r"stage 2: \[train\]: train.lr and train.grad_clip must be > 0"),
    ],
)
def test_a_bad_stage_is_refused_with_its_number(tmp_path, stage, message):
    path = tmp_path / "r.toml"
    path.write_text(
        'name = "r"\n[prior]\ntype = "gp"\nmax_features = 3\n[model]\nn_features = 3\nn_outputs = 16\n'
        "[[stages]]\n" + stage
    )
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def test_load_config_reads_one_stage_and_points_recipes_to_load_recipe(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        'name = "r"\n[prior]\ntype = "gp"\nmax_features = 3\n[model]\nn_features = 3\nn_outputs = 16\n'
        "[[stages]]\n[stages.train]\nlr = 0.0001\n"
    )
    with pytest.raises(ConfigError, match="is a recipe of 2 stages; read it with load_recipe"):
        load_config(path)


@dataclasses.dataclass(frozen=True)
class _ScriptPrior(priors.FunctionPrior):
    """A prior defined in a script, not registered in priors.PRIORS."""

    name: ClassVar[str] = "script-only"

    def targets(self, x, n_features, generator):
        return x[..., 0] + 0.1 * torch.randn(x.shape[:2], generator=generator)


def test_a_run_of_an_unregistered_prior_resumes(tmp_path):
    config = dataclasses.replace(tiny_config(), prior=_ScriptPrior(max_features=3))
    assert "script-only" not in priors.PRIORS
    train(config, tmp_path / "run", stop_at=3, progress=False)
    assert train(config, tmp_path / "run", progress=False).step == 6
    with pytest.raises(CheckpointError, match="sections differing: \\['prior'\\]"):
        train(dataclasses.replace(config, prior=_ScriptPrior(max_features=2)), tmp_path / "run", progress=False)


def test_without_a_terminal_progress_is_logged_every_log_every_steps(tmp_path, caplog):
    with caplog.at_level("INFO", logger="pfn.train"):
        train(tiny_config(), tmp_path / "logged")  # pytest captures stderr: no terminal, so no bar
    lines = [r.getMessage() for r in caplog.records if r.name == "pfn.train"]
    assert [line.split(",")[0].split(": ")[1] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"]
    caplog.clear()
    with caplog.at_level("INFO", logger="pfn.train"):
        train(tiny_config(), tmp_path / "quiet", progress=False)
    assert not [r for r in caplog.records if r.name == "pfn.train"]


def test_noise_free_targets_train_on_the_targets_before_the_noise(tmp_path, monkeypatch):
    config = dataclasses.replace(
        tiny_config(noise_free_targets=True), prior=priors.BOGPPrior(max_features=3, noise=0.5)
    )  # tiny_config's GPPrior separates its noise too
    seen = []
    original = pfn.train.loss_fn

    def spy(config_, out, target, borders, tails):
        seen.append(target.clone())
        return original(config_, out, target, borders, tails)

    monkeypatch.setattr(pfn.train, "loss_fn", spy)
    train(replace_train(config, steps=1, accumulation=1), tmp_path / "run", progress=False)
    batch, n_train = pfn.train.draw_step(config, 0, range(config.train.batch_size))
    assert torch.equal(seen[0], batch.clean_y[:, n_train:]) and not torch.equal(seen[0], batch.y[:, n_train:])
    with pytest.raises(ConfigError, match="noise_free_targets needs a regression prior that separates.*'linear'"):
        dataclasses.replace(config, prior=LinearPrior(max_features=3))
    with pytest.raises(ConfigError, match="train.noise_free_targets must be true or false"):
        replace_train(config, noise_free_targets="yes")
