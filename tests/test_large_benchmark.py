import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import published_pfn_card

from benchmarks import large
from benchmarks.tabular import DataLayoutError, Table, pfn_fingerprint
from pfn.cli import main
from pfn.config import ConfigError


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run through the command line (PFN and LightGBM on the two synthetic tables)."""
    out = tmp_path_factory.mktemp("large")
    assert main(["bench", "large", "--quick", "--out", str(out), "--threads", "1"]) == 0
    return out, json.loads((out / "large.json").read_text())


def test_quick_run_writes_every_documented_field(quick):
    out, result = quick
    assert {"large.json", "large.md", "classification.png", "regression.png"} <= {p.name for p in out.iterdir()}
    assert (result["benchmark"], result["quick"], result["repeats"]) == ("large", True, 1)
    assert (result["caps"], result["test_rows"]) == ([200, 400], 500)
    assert result["runs"][0]["learners"] == ["PFN", "LightGBM"]
    for task, metric in large.MAIN_METRIC.items():
        (table,) = result["tasks"][task]["tables"].values()
        for cap in ("200", "400"):
            for name in ("PFN", "LightGBM"):
                (figures,) = table["caps"][cap][name]
                assert set(large.METRICS[task]) | set(large.COSTS) <= set(figures)
                assert figures["train_rows"] == int(cap)
                assert figures["peak_rss_mb"] >= figures["rss_increase_mb"] > 0
                assert figures["fit_s"] > 0 and figures["fit_cpu_s"] > 0
        summary = result["summary"][task]
        assert set(summary["caps"]["400"]["learners"]) == {"PFN", "LightGBM"}
        assert 0.5 < summary["caps"]["400"]["learners"]["PFN"][metric] <= 1
        assert (summary["gains"]["from"], summary["gains"]["to"]) == (200, 400)
        assert set(summary["targets"]["PFN"]) == {
            "score_at_least_lightgbm",
            "gain_at_least_lightgbm",
            "memory_under_target",
        }


def test_split_nests_train_rows_and_keeps_test_rows_and_class_shares():
    rng = np.random.default_rng(0)
    y = rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1], size=5000)
    table = Table("t", "classification", pd.DataFrame({"x": rng.normal(size=5000)}), y)
    order, test = large.split(table, repeat=0, test_rows=2000)
    assert len(test) == 2000 and len(order) == 3000
    assert len(np.intersect1d(order, test)) == 0 and len(np.unique(order)) == 3000
    for prefix in (100, 1000):  # every prefix (the train rows at a cap) keeps the class shares
        shares = pd.Series(y[order[:prefix]]).value_counts(normalize=True)
        assert shares["c"] == pytest.approx(0.1, abs=0.02)
    again, test_again = large.split(table, repeat=0, test_rows=2000)
    np.testing.assert_array_equal(order, again)
    np.testing.assert_array_equal(test, test_again)
    assert not np.array_equal(large.split(table, repeat=1, test_rows=2000)[1], test)


@pytest.mark.parametrize(
    ("parameters", "error"),
    [({"no_such_parameter": True}, "TypeError"), ({"n_estimators": 0}, "InvalidParameterError")],
)
def test_a_variant_the_estimator_rejects_is_recorded_as_not_available(tmp_path, monkeypatch, parameters, error):
    monkeypatch.setitem(large.VARIANTS, "PFN-finetune", parameters)
    fits = []
    monkeypatch.setattr(large, "in_fresh_process", lambda *args: fits.append(args[1]) or _figures(args))
    result = large.run(tmp_path, quick=True, learner_names=["PFN-finetune", "LightGBM"])
    assert set(fits) == {"LightGBM"}
    for task in large.TASKS:
        assert result["tasks"][task]["not_available"]["PFN-finetune"].startswith(error)
        assert result["summary"][task]["not_available"]["PFN-finetune"].startswith(error)
        assert all(
            "PFN-finetune" not in per for t in result["tasks"][task]["tables"].values() for per in t["caps"].values()
        )
    assert "PFN-finetune: not available" in (tmp_path / "large.md").read_text()
    large.run(tmp_path, quick=True, learner_names=["PFN-finetune"])  # nothing to run: the record stays
    assert "PFN-finetune" in json.loads((tmp_path / "large.json").read_text())["summary"]["regression"]["not_available"]


def test_a_variant_that_becomes_available_is_no_longer_listed_as_missing():
    result = {"tasks": {}}
    begin = dict(
        task="regression",
        model="m",
        weights="w",
        fingerprints=dict.fromkeys(large.VARIANTS, "f"),
        variants_run=True,
        left_out={},
    )
    large._begin_task(result, missing={"PFN-finetune": "TypeError: no"}, checked=["PFN-finetune"], **begin)
    large._begin_task(result, missing={}, checked=["PFN-finetune"], **begin)
    assert result["tasks"]["regression"]["not_available"] == {}


def test_runs_with_other_learners_merge_and_finished_figures_are_kept(tmp_path, monkeypatch):
    fits = []
    monkeypatch.setattr(large, "in_fresh_process", lambda *args: fits.append(args[1]) or _figures(args))
    large.run(tmp_path, quick=True, learner_names=["LightGBM"])
    large.run(tmp_path, quick=True, learner_names=["RandomForest", "LightGBM"])
    assert fits == ["LightGBM"] * 4 + ["RandomForest"] * 4  # 2 tables x 2 caps; LightGBM's kept
    result = json.loads((tmp_path / "large.json").read_text())
    assert len(result["runs"]) == 2
    for task in large.TASKS:
        for table in result["tasks"][task]["tables"].values():
            assert all(set(per) == {"LightGBM", "RandomForest"} for per in table["caps"].values())
        assert set(result["summary"][task]["caps"]["200"]["learners"]) == {"LightGBM", "RandomForest"}


def test_a_cap_beyond_the_rows_reuses_the_largest_train_set(tmp_path, monkeypatch):
    monkeypatch.setitem(large.QUICK, "caps", (400, 800, 1600))  # the quick tables have 500 train rows
    fits = []
    monkeypatch.setattr(large, "in_fresh_process", lambda *args: fits.append(len(args[4])) or _figures(args))
    result = large.run(tmp_path, quick=True, learner_names=["LightGBM"])
    assert fits == [400, 500, 400, 500]
    for task in large.TASKS:
        (table,) = result["tasks"][task]["tables"].values()
        assert table["caps"]["800"] == table["caps"]["1600"]
        assert result["summary"][task]["caps"]["1600"]["tables_at_cap"] == 0


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs --data"):
        large.run(tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown learner"):
        large.run(tmp_path / "out", quick=True, learner_names=["GP"])
    with pytest.raises(DataLayoutError, match="no classification"):
        large.run(tmp_path / "out", data=tmp_path)
    (tmp_path / "regression").mkdir()
    pd.DataFrame({"x": range(100), "y": range(100)}).to_csv(tmp_path / "regression" / "small.csv", index=False)
    with pytest.raises(DataLayoutError, match="small"):
        large.run(tmp_path / "out", data=tmp_path)
    pd.DataFrame({"y": range(5000)}).to_csv(tmp_path / "regression" / "no-features.csv", index=False)
    with pytest.raises(DataLayoutError, match="target in the last column"):
        large.run(tmp_path / "out", data=tmp_path)
    assert main(["bench", "large", "--out", str(tmp_path / "cli")]) == 2


def test_results_of_another_setting_are_not_mixed(tmp_path, monkeypatch):
    monkeypatch.setattr(large, "in_fresh_process", lambda *args: _figures(args))
    large.run(tmp_path, quick=True, learner_names=["LightGBM"])
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="another --out"):
        large.run(tmp_path, data=tmp_path / "other", learner_names=["LightGBM"])


def _figures(args):
    """Stand-in figures of a fit + predict (the arguments of large.measure)."""
    train = args[4]
    scores = {"roc_auc": 0.8, "accuracy": 0.7, "log_loss": 0.5, "r2": 0.6, "nrmse": 0.5, "crps": 0.4}
    return {**scores, "train_rows": len(train), **dict.fromkeys(large.COSTS, 1.0)}


def test_new_pfn_code_redoes_the_figures_of_the_variants_it_changes_only(capsys):
    result = {"tasks": {}}
    begin = dict(task="regression", model="m", weights="w", variants_run=True, missing={}, checked=[], left_out={})
    old = {"PFN": "a", "PFN-retrieval": "a", "PFN-finetune": "b"}
    large._begin_task(result, fingerprints=old, **begin)
    caps = {"1000": {"PFN": [{}], "PFN-finetune": [{}], "LightGBM": [{}]}}
    result["tasks"]["regression"]["tables"]["t"] = {"caps": caps}
    large._begin_task(result, fingerprints=old, **begin)
    assert capsys.readouterr().out == ""
    large._begin_task(result, fingerprints={**old, "PFN-finetune": "c"}, **begin)  # the fine-tuning code changed
    assert set(caps["1000"]) == {"PFN", "LightGBM"}
    assert "its 1 earlier figures are redone" in capsys.readouterr().out
    large._begin_task(result, fingerprints=dict.fromkeys(old, "d"), **begin)  # the shared inference code changed
    assert set(caps["1000"]) == {"LightGBM"}


def test_a_task_without_a_table_large_enough_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(large, "in_fresh_process", lambda *args: _figures(args))
    data = tmp_path / "data"
    for task, n in (("classification", 100), ("regression", 4000)):
        (data / task).mkdir(parents=True)
        x = np.arange(n, dtype=float)
        target = np.where(x % 2 == 0, "a", "b") if task == "classification" else x
        pd.DataFrame({"x": x, "y": target}).to_csv(data / task / f"{task[:3]}.csv", index=False)
    result = large.run(tmp_path / "out", data=data, caps=[1000, 5000], learner_names=["LightGBM"])
    assert result["tasks"]["classification"]["left_out"] == {"cla": 100}
    assert result["summary"]["classification"]["caps"] == {}
    by_cap = result["summary"]["regression"]["caps"]
    assert (by_cap["1000"]["tables_at_cap"], by_cap["5000"]["tables_at_cap"]) == (1, 0)  # 2,000 train rows


def test_gains_and_targets_compare_the_pfn_with_lightgbm_and_catboost(tmp_path, monkeypatch):
    def figures(*args):
        name, rows = args[1], len(args[4])
        r2 = {"PFN": 0.55, "LightGBM": 0.5 + rows / 100_000, "CatBoost": 0.5}[name]
        seconds = {"PFN": 1.0, "LightGBM": 0.1, "CatBoost": 2.0}[name]
        return {**_figures(args), "r2": r2, "fit_s": seconds, "peak_rss_mb": 5000.0 if name == "CatBoost" else 500.0}

    monkeypatch.setattr(large, "in_fresh_process", figures)
    data = tmp_path / "data" / "regression"
    data.mkdir(parents=True)
    pd.DataFrame({"x": np.arange(4000.0), "y": np.arange(4000.0)}).to_csv(data / "t.csv", index=False)
    learners = ["PFN", "LightGBM", "CatBoost"]
    summary = large.run(tmp_path / "out", data=data.parent, caps=[1000, 2000], learner_names=learners)["summary"]
    gains = summary["regression"]["gains"]
    assert (gains["from"], gains["to"], gains["tables"]) == (1000, 2000, ["t"])
    assert gains["learners"]["PFN"] == 0 and gains["learners"]["LightGBM"] == pytest.approx(0.01)
    assert summary["regression"]["targets"]["PFN"] == {
        "score_at_least_lightgbm": True,
        "gain_at_least_lightgbm": False,
        "time_at_most_catboost": True,
        "memory_under_target": True,
    }


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_published_results_are_for_the_shipped_weights_and_inference_code(task):
    """docs/results/large holds PFN figures of the shipped model and today's inference code
    (and fine-tuning code, for the fine-tuned variant)."""
    result = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "large" / "large.json").read_text())
    section = result["tasks"][task]
    card = published_pfn_card(section)
    fingerprints = {name: pfn_fingerprint(card, fine_tuning="fine_tune" in p) for name, p in large.VARIANTS.items()}
    assert section["pfn_fingerprints"] == fingerprints
