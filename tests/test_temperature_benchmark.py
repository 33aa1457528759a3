import json
import shutil

import numpy as np
import pytest
from sklearn.datasets import make_classification

from benchmarks.temperature import TEMPERATURES, prior_datasets, run
from pfn import PFNClassifier
from pfn.checkpoint import WEIGHTS_DIR, read_card
from pfn.config import ConfigError


@pytest.fixture
def clf_copy(tmp_path):
    """A copy of the shipped classifier whose card the test may change."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(WEIGHTS_DIR / f"tabular-clf{suffix}", tmp_path / f"model{suffix}")
    return tmp_path / "model.safetensors"


def test_prior_datasets_are_fresh_and_usable(clf_copy):
    card = read_card(clf_copy)
    datasets = prior_datasets(card, 4)
    assert [len(x_train) + len(x_test) for x_train, _, x_test, _ in datasets] == [150, 450, 1500, 150]
    for x_train, y_train, x_test, y_test in datasets:
        assert x_train.shape[1] == x_test.shape[1] >= 1
        assert set(np.unique(y_test)) <= set(np.unique(y_train)) and len(np.unique(y_train)) >= 2


def test_quick_run_scores_every_temperature_and_records_the_best(clf_copy, tmp_path):
    before = read_card(clf_copy)
    result = run(tmp_path / "out", quick=True, model=str(clf_copy))
    saved = json.loads((tmp_path / "out" / "temperature.json").read_text())
    assert (tmp_path / "out" / "temperature.png").is_file()
    assert [float(t) for t in saved["temperatures"]] == list(TEMPERATURES)
    losses = {float(t): row["log_loss"] for t, row in saved["temperatures"].items()}
    assert result["best"] == min(losses, key=losses.get)
    assert read_card(clf_copy) == before  # quick runs never touch the card


def test_the_default_temperature_comes_from_the_card(clf_copy):
    X, y = make_classification(n_samples=80, n_features=5, n_classes=3, n_informative=3, random_state=0)
    card_path = clf_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.pop("inference", None)
    card.setdefault("quality", {}).pop("temperature", None)
    card_path.write_text(json.dumps(card))

    def proba(model, **params):
        fitted = PFNClassifier(model=model, n_estimators=2, random_state=0, **params).fit(X[:60], y[:60])
        return fitted.predict_proba(X[60:])

    plain = proba(str(clf_copy))
    np.testing.assert_allclose(plain, proba(str(clf_copy), softmax_temperature=1.0))
    older = {"quality": {"temperature": {"best": 0.5}}}  # where cards from before the inference section kept it
    for section in ({"inference": {"softmax_temperature": 0.5}}, older):
        card_path.write_text(json.dumps({**card, **section}))
        from_card = proba(str(card_path))
        np.testing.assert_allclose(from_card, proba(str(card_path), softmax_temperature=0.5))
        assert not np.allclose(from_card, plain)


def test_refuses_a_regression_model(tmp_path):
    with pytest.raises(ConfigError, match="needs a classification model"):
        run(tmp_path, quick=True, model="tabular-reg")
