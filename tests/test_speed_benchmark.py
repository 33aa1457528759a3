import json

from benchmarks.speed import run


def test_quick_speed_benchmark_times_every_learner(tmp_path):
    result = run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert (tmp_path / "speed.png").is_file()
    assert {"PFNClassifier", "CatBoost", "XGBoost", "RandomForest"} <= set(saved["learners"])
    assert saved["learners"]["PFNClassifier"]["time_vs_pfn"] == 1.0
    for row in result["learners"].values():
        assert row["fit_predict_s"] > 0 and 0.5 < row["roc_auc"] <= 1.0
