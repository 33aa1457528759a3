import json

import pytest
from helpers import tiny_config

import pfn
from benchmarks.smoothing import MULTIPLES, run, train_rows
from pfn.checkpoint import read_card
from pfn.config import ConfigError
from pfn.train import train


@pytest.fixture
def run_dir(tmp_path):
    train(tiny_config(), tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_train_rows_spread_over_the_cards_range():
    assert train_rows({"train": {"min_train": 1, "max_train": 200}}) == [1, 2, 5, 10, 21, 44, 94, 200]
    assert train_rows({"train": {"min_train": 4, "max_train": 4}}) == [4]
    assert max(train_rows({"train": {"min_train": 4, "max_train": 5000}})) == 1024


def test_the_best_width_is_the_lowest_nll_and_goes_to_the_card_only_when_asked(run_dir, tmp_path):
    before = read_card(run_dir / "model.safetensors")
    result = run(tmp_path / "quick", quick=True, model=str(run_dir))
    assert (tmp_path / "quick" / "smoothing.png").is_file()
    assert read_card(run_dir / "model.safetensors") == before  # quick runs never touch the card
    nll = {float(w): row["mean_nll"] for w, row in result["widths"].items()}
    assert len(nll) == len(MULTIPLES) and 0.0 in nll and result["best"] == min(nll, key=nll.get)
    assert result["gain_nats"] == pytest.approx(nll[0.0] - nll[result["best"]])

    result = run(tmp_path / "full", model=str(run_dir), update_card=True)
    card = json.loads((run_dir / "model.json").read_text())
    assert card["inference"]["density_smoothing"] == result["best"]
    assert card["quality"]["smoothing"]["best"] == result["best"]
    assert pfn.load(run_dir).density_smoothing == result["best"]
    again = run(tmp_path / "again", quick=True, model=str(run_dir))  # scores the raw buckets, whatever the card says
    assert again["widths"] == run(tmp_path / "again", quick=True, model=str(run_dir))["widths"]
    assert again["widths"]["0.0"]["mean_nll"] == pytest.approx(
        json.loads((tmp_path / "quick" / "smoothing.json").read_text())["widths"]["0.0"]["mean_nll"]
    )


def test_a_classifier_is_refused(tmp_path):
    train(tiny_config("classification"), tmp_path / "clf", progress=False)
    with pytest.raises(ConfigError, match="needs a regression model"):
        run(tmp_path / "out", quick=True, model=str(tmp_path / "clf"))
