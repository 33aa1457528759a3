import json
import subprocess
import sys

import pytest

import benchmarks
from pfn.cli import main


def write(path, text):
    path.write_text(text)
    return path


GOOD = """
name = "cli-tiny"
[prior]
type = "gp"
max_features = 2
[model]
n_features = 2
n_outputs = 8
d_model = 8
n_layers = 1
n_heads = 2
d_ff = 16
[train]
steps = 3
batch_size = 2
n_rows = 12
max_train = 8
precision = "fp32"
border_datasets = 100
"""


def test_train_runs_and_records_the_command(tmp_path, capsys):
    config = write(tmp_path / "c.toml", GOOD)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["training"]["steps"] == 3 and card["name"] == "cli-tiny"
    assert "step 3/3" in capsys.readouterr().out


def test_unknown_config_key_is_named(tmp_path, capsys):
    config = write(tmp_path / "c.toml", GOOD.replace("d_ff = 16", "d_ff = 16\nwidth = 3"))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "unknown key(s) ['width'] in [model]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_config_and_unknown_benchmark(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "no-such-bench"]) == 2
    known = sorted(benchmarks.REGISTRY)
    assert "throughput" in known and "function-classes" in known
    assert f"unknown benchmark 'no-such-bench'; known: {known}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, refused",
    [(["bench", "speed", "--update-card"], "--update-card"), (["bench", "gp", "--caps", "100"], "--caps")],
)
def test_a_benchmark_refuses_options_it_does_not_take(argv, refused, capsys):
    assert main(argv) == 2
    assert f"benchmark {argv[1]!r} takes no {refused}" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "pfn", "--help"], capture_output=True, text=True, check=True)
    assert "train" in result.stdout and "bench" in result.stdout


@pytest.mark.parametrize("argv", [["bench"], ["train"], ["fly"]])
def test_missing_or_unknown_arguments_exit_with_usage(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


@pytest.mark.slow  # runs all of `pfn demo` (make demo runs it too)
def test_demo_prints_a_table_with_every_learner(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for text in ("breast_cancer", "digits", "diabetes", "PFNClassifier", "PFNRegressor", "RandomForest"):
        assert text in out


def test_a_recipe_trains_its_stages_in_order_each_from_the_one_before(tmp_path, capsys):
    recipe = write(tmp_path / "r.toml", GOOD + "[[stages]]\n[stages.train]\nsteps = 2\nseed = 1\n")
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--quiet", "--stop-at", "2"]) == 0
    assert not (out / "model.json").exists() and "stage 1/2: step 2/3" in capsys.readouterr().out
    assert main(["train", str(recipe), "--out", str(out), "--quiet"]) == 0
    first = json.loads((out / "stage-1" / "model.json").read_text())
    last = json.loads((out / "model.json").read_text())
    assert first["training"]["steps"] == 3 and last["training"]["steps"] == 2
    assert last["training"]["init_from"]["weights_sha256"] == first["weights_sha256"]
    assert last["training"]["command"].endswith("# stage 2 of 2")
    assert main(["train", str(recipe), "--out", str(out), "--quiet"]) == 0  # finished: nothing to do
    assert json.loads((out / "model.json").read_text())["weights_sha256"] == last["weights_sha256"]
