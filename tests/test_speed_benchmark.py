import json

import pytest

from benchmarks.speed import run


def test_quick_speed_benchmark_times_every_learner(tmp_path):
    result = run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert (tmp_path / "speed.png").is_file()
    assert {"PFNClassifier", "CatBoost", "XGBoost", "RandomForest"} <= set(saved["learners"])
    pfn_s = saved["learners"]["PFNClassifier"]["fit_predict_s"]
    for row in saved["learners"].values():  # each learner's time over the PFN's, as the table prints it
        assert row["time_vs_pfn"] == pytest.approx(row["fit_predict_s"] / pfn_s)
    for row in result["learners"].values():
        assert row["fit_predict_s"] > 0 and 0.5 < row["roc_auc"] <= 1.0
