import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import published_pfn_card
from scipy import stats
from sklearn.metrics import roc_auc_score

from benchmarks.common import splice_section
from benchmarks.tabular import (
    QUANTILE_LEVELS,
    DataLayoutError,
    Table,
    _begin_task,
    classification_scores,
    crps_from_quantiles,
    expected_calibration_error,
    pfn_fingerprint,
    regression_scores,
    run,
    split,
    tasks_in,
)
from pfn.cli import main


def _tables(folder):
    """A tiny data folder: two tables per task, with a categorical column and missing values."""
    rng = np.random.default_rng(0)
    for task in ("classification", "regression"):
        (folder / task).mkdir(parents=True)
        for i in range(2):
            n = 80 + 20 * i
            x = rng.normal(size=(n, 3))
            colour = rng.choice(["red", "green", "blue"], size=n)
            signal = x[:, 0] - x[:, 1] + (colour == "red")
            frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "colour": colour})
            frame.loc[rng.random(n) < 0.1, "c"] = np.nan
            frame["target"] = np.where(signal > 0, "yes", "no") if task == "classification" else signal
            frame.to_csv(folder / task / f"{task[:3]}{i}.csv", index=False)
    return folder


def test_binary_and_multiclass_scores_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet(np.ones(3), 300)
    scores = classification_scores(y, proba)
    assert scores["roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    binary = classification_scores(y % 2, np.stack([1 - proba[:, 0], proba[:, 0]], 1))
    assert binary["roc_auc"] == pytest.approx(roc_auc_score(y % 2, proba[:, 0]))
    assert scores["accuracy"] == pytest.approx(np.mean(proba.argmax(1) == y))


def test_expected_calibration_error_of_known_cases():
    y = np.array([0, 1] * 50)
    assert expected_calibration_error(y, np.eye(2)[y]) == 0.0  # confident and right
    assert expected_calibration_error(y, np.full((100, 2), 0.5)) == pytest.approx(0.0)  # 50% and right half
    assert expected_calibration_error(y, np.eye(2)[1 - y]) == pytest.approx(1.0)  # confident and wrong


def test_crps_from_quantiles_matches_the_gaussian_closed_form():
    y = np.array([-1.5, 0.0, 0.3, 2.0])
    quantiles = np.tile(stats.norm.ppf(QUANTILE_LEVELS), (4, 1))
    closed = np.mean(y * (2 * stats.norm.cdf(y) - 1) + 2 * stats.norm.pdf(y) - 1 / np.sqrt(np.pi))
    assert crps_from_quantiles(y, quantiles) == pytest.approx(closed, rel=0.02)


def test_regression_scores_are_in_units_of_the_train_spread():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    perfect = regression_scores(y, y, scale=2.0, dist=None)
    assert perfect["r2"] == 1.0 and perfect["rmse"] == 0.0 and "nll" not in perfect
    logpdf = stats.norm.logpdf(y, y, 2.0)
    quantiles = stats.norm.ppf(QUANTILE_LEVELS, y[:, None], 2.0)
    scored = regression_scores(y, y, scale=2.0, dist=(logpdf, quantiles))
    assert scored["nll"] == pytest.approx(stats.norm.logpdf(0.0) * -1)  # N(0, 1) at its mean
    assert scored["crps"] == pytest.approx(2 / 2 * (2 * stats.norm.pdf(0) - 1 / np.sqrt(np.pi)), rel=0.02)


def test_splits_are_disjoint_capped_stratified_and_repeatable():
    y = np.array(["a"] * 300 + ["b"] * 60)
    table = Table("t", "classification", pd.DataFrame({"x": np.arange(360.0)}), y)
    train, test = split(table, 100, 0)
    assert len(train) == 100 and not set(train) & set(test)
    assert (y[train] == "b").sum() in (16, 17)  # the class share kept
    np.testing.assert_array_equal(split(table, 100, 0)[0], train)
    assert not np.array_equal(split(table, 100, 1)[0], train)


def test_a_folder_without_the_layout_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("a,target\n1,2\n")
    with pytest.raises(DataLayoutError, match="classification/\\*.csv or regression/\\*.csv"):
        tasks_in(tmp_path)


def test_runs_add_up_and_the_report_is_spliced(tmp_path):
    data = _tables(tmp_path / "data")
    docs = tmp_path / "bench.md"
    docs.write_text(
        "# head\n<!-- tabular-classification:begin -->\nPLACEHOLDER\n<!-- tabular-classification:end -->\n"
        "<!-- tabular-regression:begin -->\n<!-- tabular-regression:end -->\ntail\n"
    )
    out = tmp_path / "out"
    run(out, data=data, caps=(40,), repeats=2, learner_names=["PFN", "kNN"], docs=docs)
    run(out, data=data, caps=(60,), repeats=2, learner_names=["LogisticRegression", "LinearRegression"])
    result = json.loads((out / "tabular.json").read_text())
    assert result["caps"] == [40, 60] and len(result["runs"]) == 2
    clf = result["tasks"]["classification"]["tables"]["cla0"]
    assert set(clf["40"]) == {"PFN", "kNN"} and set(clf["60"]) == {"LogisticRegression"}
    assert len(clf["40"]["PFN"]) == 2 and 0.5 < np.mean([s["roc_auc"] for s in clf["40"]["PFN"]]) <= 1
    reg = result["tasks"]["regression"]["tables"]["reg1"]["40"]["PFN"][0]
    assert {"r2", "rmse", "nll", "crps", "time_s"} <= set(reg)
    text = docs.read_text()
    assert text.startswith("# head") and text.endswith("tail\n") and "PLACEHOLDER" not in text
    assert "| PFN |" in text and "](out/classification.png)" in text
    assert (out / "classification.png").is_file() and (out / "tabular.md").is_file()
    run(out, data=data, caps=(40,), repeats=2, learner_names=["kNN"])  # already there: kept as it was
    again = json.loads((out / "tabular.json").read_text())["tasks"]["classification"]["tables"]["cla0"]
    assert again["40"]["kNN"] == clf["40"]["kNN"] and again["40"]["PFN"] == clf["40"]["PFN"]
    with pytest.raises(ValueError, match="same repeats"):
        run(out, data=data, caps=(40,), repeats=3, learner_names=["kNN"])


def test_splice_needs_its_markers(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text("no markers")
    with pytest.raises(ValueError, match="<!-- x:begin -->"):
        splice_section(path, "x", "text")


def test_cli_refuses_tabular_options_for_other_benchmarks(capsys):
    assert main(["bench", "gp", "--data", "somewhere"]) == 2
    assert "benchmark 'gp' takes no --data" in capsys.readouterr().err


def test_cli_names_the_expected_data_layout(tmp_path, capsys):
    assert main(["bench", "tabular", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "put each table (target in the last column) in the sub-folder of its task" in capsys.readouterr().err


def test_pfn_figures_are_redone_when_the_weights_settings_or_inference_code_change():
    figures = {"PFN": [{"roc_auc": 0.9}], "kNN": [{"roc_auc": 0.8}]}
    result = {"tasks": {"classification": {"model": "m", "tables": {"t": {"rows": 9, "100": dict(figures)}}}}}
    card = {"weights_sha256": "a" * 64, "quality": {"temperature": {"best": 0.9}, "tabular": {"roc_auc": 0.8}}}
    first = pfn_fingerprint(card)
    assert first == pfn_fingerprint({**card, "quality": {"temperature": {"best": 0.9}}})  # figures: same
    assert first != pfn_fingerprint({**card, "weights_sha256": "b" * 64})
    assert first != pfn_fingerprint({**card, "quality": {"temperature": {"best": 0.8}}})  # another temperature
    assert first != pfn_fingerprint({**card, "tail_scales": [1.0, 2.0]})
    # the temperature the estimator uses: the card's inference section where it has one
    assert first == pfn_fingerprint({**card, "inference": {"softmax_temperature": 0.9}})
    assert first != pfn_fingerprint({**card, "inference": {"softmax_temperature": 0.7}})
    _begin_task(result, "classification", "m", "a" * 64, first, pfn_runs=True)  # new section: nothing to keep
    result["tasks"]["classification"]["tables"]["t"]["100"] = dict(figures)
    _begin_task(result, "classification", "m", "a" * 64, first, pfn_runs=True)
    assert result["tasks"]["classification"]["tables"]["t"]["100"] == figures
    _begin_task(result, "classification", "m", "a" * 64, "changed inference code", pfn_runs=True)
    assert result["tasks"]["classification"]["tables"]["t"]["100"] == {"kNN": figures["kNN"]}


RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "tabular" / "tabular.json"


@pytest.mark.parametrize("task, metric", [("classification", "roc_auc"), ("regression", "r2")])
def test_the_shipped_cards_and_the_published_results_describe_the_same_weights(task, metric):
    """The published JSON's PFN figures are for the shipped weights and inference code, and the
    shipped card records the same figures (`--update-card`), so neither is left behind."""
    result = json.loads(RESULTS.read_text())
    section = result["tasks"][task]
    card = published_pfn_card(section)
    assert section["pfn_fingerprint"] == pfn_fingerprint(card)
    recorded = card["quality"]["tabular"]
    for cap, summary in result["summary"][task].items():
        assert recorded[cap]["PFN"][metric] == round(summary["learners"]["PFN"][metric], 4)
