"""Fine-tuning on the user's table (pfn.finetune and the estimators' fine_tune)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from sklearn.utils._param_validation import InvalidParameterError

from pfn import PFNClassifier, PFNRegressor, load
from pfn.finetune import FineTuneConfig, FineTuneWarning, fine_tune


def clf_rows(n=160, seed=0):
    x, y = make_classification(n_samples=n, n_features=5, n_informative=3, random_state=seed)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32), y


def test_tuning_lowers_the_held_out_loss_or_keeps_the_model_untouched():
    x, y = clf_rows()
    shipped = load("tabular-clf")
    before = {k: v.clone() for k, v in shipped.model.state_dict().items()}
    tuned, report = fine_tune(shipped, x, y, FineTuneConfig(steps=6, lr=3e-4, eval_every=2), seed=0)
    assert report["held_out_after"] <= report["held_out_before"] and report["steps"] <= 6
    if report["kept"] == "tuned":
        assert tuned is not shipped and any(not torch.equal(v, before[k]) for k, v in tuned.model.state_dict().items())
    else:
        assert tuned is shipped
    assert all(torch.equal(v, before[k]) for k, v in shipped.model.state_dict().items())  # the original intact


def test_tuned_weights_are_kept_only_on_a_held_out_gain_beyond_its_noise():
    x, y = clf_rows(300, seed=1)
    shipped = load("tabular-clf")
    config = FineTuneConfig(steps=20, lr=1e-3, eval_every=2, patience=10)
    tuned, report = fine_tune(shipped, x, y, config, seed=0)
    assert (report["kept"] == "tuned") == (report["gain_se"] > config.min_gain_se)
    assert (tuned is shipped) == (report["kept"] == "untuned")
    strict, report = fine_tune(shipped, x, y, FineTuneConfig(steps=20, lr=1e-3, eval_every=2, min_gain_se=1e6), seed=0)
    assert strict is shipped and report["kept"] == "untuned"
    if report["held_out_after"] < report["held_out_before"]:  # a gain, but not one beyond its noise
        assert 0 < report["gain_se"] < 1e6


def test_with_a_score_the_tuned_weights_must_also_win_on_rows_tuning_never_saw(monkeypatch):
    import pfn.finetune

    x, y = clf_rows(300, seed=1)
    shipped, other = load("tabular-clf"), object()
    tuned_on = []
    monkeypatch.setattr(
        pfn.finetune, "_tune", lambda model, x, *args: tuned_on.append(len(x)) or (other, {"kept": "tuned"})
    )
    seen = []

    def scorer(losses, ranks):  # per-row losses and ranking score of (untuned, tuned)
        def score(model, context, held):
            seen.append((set(context), set(held)))
            i = int(model is other)
            return losses[i] + 0.1 * (np.arange(len(held)) % 2), ranks[i]

        return score

    config = FineTuneConfig()
    kept, report = fine_tune(shipped, x, y, config, seed=0, score=scorer((1.0, 0.5), (0.80, 0.81)))
    assert kept is other and report["kept"] == "tuned" and report["ensemble_gain_se"] > config.min_gain_se
    context, held = seen[0]
    assert not context & held and context | held == set(range(len(y))) and tuned_on == [len(context)]
    assert len(held) == pytest.approx(config.held_out * len(y), abs=2)
    worse_rank, report = fine_tune(shipped, x, y, config, seed=0, score=scorer((1.0, 0.5), (0.80, 0.79)))
    assert worse_rank is shipped and report["kept"] == "untuned"  # a lower loss but a lower ROC AUC
    worse_loss, report = fine_tune(shipped, x, y, config, seed=0, score=scorer((0.5, 1.0), (0.80, 0.81)))
    assert worse_loss is shipped and report["kept"] == "untuned" and report["ensemble_gain_se"] < 0
    no_rank, report = fine_tune(shipped, x, y, config, seed=0, score=scorer((1.0, 0.5), (np.nan, np.nan)))
    assert no_rank is other  # no ranking score (one class held out): the loss decides


@pytest.mark.parametrize("Estimator", [PFNClassifier, PFNRegressor])
def test_the_estimators_judge_tuning_by_their_ensemble(Estimator):
    if Estimator is PFNClassifier:
        x, y = clf_rows(300, seed=1)
    else:
        x, y = make_regression(n_samples=300, n_features=4, noise=3.0, random_state=0)
    est = Estimator(n_estimators=2, fine_tune=20, random_state=0).fit(x, y)
    report = est.fine_tune_report_
    if report["kept"] == "tuned":
        assert report["ensemble_gain_se"] > 2 and report["rank_after"] >= report["rank_before"]
    elif "ensemble_before" in report:  # the tuning loop kept its weights, the ensemble did not
        assert report["ensemble_gain_se"] <= 2 or report["rank_after"] < report["rank_before"]
    if "rank_before" in report:
        assert (0.5 < report["rank_before"] <= 1) if Estimator is PFNClassifier else report["rank_before"] < 0


@pytest.mark.parametrize("Estimator", [PFNClassifier, PFNRegressor])
def test_tuning_that_keeps_the_untuned_weights_predicts_as_the_plain_estimator(Estimator, monkeypatch):
    import pfn.finetune

    monkeypatch.setattr(pfn.finetune, "fine_tune", lambda model, *args: (model, {"steps": 3, "kept": "untuned"}))
    if Estimator is PFNClassifier:
        x, y = clf_rows()
    else:
        x, y = make_regression(n_samples=160, n_features=4, noise=3.0, random_state=0)
    plain = Estimator(n_estimators=4, random_state=0).fit(x[:120], y[:120])
    tuned = Estimator(n_estimators=4, fine_tune=3, random_state=0).fit(x[:120], y[:120])
    assert tuned.fine_tune_report_["kept"] == "untuned"
    np.testing.assert_array_equal(tuned.predict(x[120:]), plain.predict(x[120:]))


def test_a_table_too_small_to_split_falls_back_to_the_plain_model_with_a_warning():
    x, y = clf_rows(30)
    shipped = load("tabular-clf")
    with pytest.warns(FineTuneWarning, match="30 train rows are too few to split"):
        tuned, report = fine_tune(shipped, x, y, FineTuneConfig(steps=5), seed=0)
    assert tuned is shipped and report["stopped"] == "too few rows"


def test_a_time_budget_that_cannot_be_met_stops_early_and_says_so():
    x, y = clf_rows()
    clf = PFNClassifier(n_estimators=1, fine_tune=50, fine_tune_seconds=1e-6, random_state=0)
    with pytest.warns(FineTuneWarning, match=r"stopped by its time budget \(1e-06 s\) after 0 of 50 steps"):
        clf.fit(x, y)
    assert clf.fine_tune_report_["stopped"] == "seconds"


@pytest.mark.parametrize("Estimator", [PFNClassifier, PFNRegressor])
def test_a_tuned_estimator_pickles_and_predicts_the_same(Estimator):
    if Estimator is PFNClassifier:
        x, y = clf_rows()
    else:
        x, y = make_regression(n_samples=160, n_features=4, noise=3.0, random_state=0)
    est = Estimator(n_estimators=1, fine_tune=4, random_state=0).fit(x[:120], y[:120])
    assert est.fine_tune_report_["steps"] >= 1
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(x[120:]), est.predict(x[120:]))
    assert PFNClassifier().fine_tune is False and est.get_params()["fine_tune"] == 4


def test_fine_tune_parameters_are_checked():
    x, y = clf_rows()
    with pytest.raises(InvalidParameterError, match="'fine_tune' parameter"):
        PFNClassifier(fine_tune=0).fit(x, y)
    with pytest.raises(InvalidParameterError, match="'fine_tune_seconds' parameter"):
        PFNClassifier(fine_tune=True, fine_tune_seconds=-1.0).fit(x, y)


def test_fine_tuning_shows_a_progress_bar_when_asked(capsys):
    x, y = clf_rows()
    PFNClassifier(n_estimators=1, fine_tune=2, show_progress=True, random_state=0).fit(x, y)
    assert "fine-tune" in capsys.readouterr().err
    PFNClassifier(n_estimators=1, fine_tune=2, show_progress=False, random_state=0).fit(x, y)
    assert "fine-tune" not in capsys.readouterr().err


def test_the_classifiers_held_out_scores_are_log_loss_and_roc_auc():
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 50)  # [h, 3]
    y = rng.integers(0, 3, 50)
    losses, auc = PFNClassifier()._held_out_losses(probs, y)
    assert losses.mean() == pytest.approx(log_loss(y, probs))
    assert auc == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    two = np.where(y == 1, 2, y)  # class 1 absent: the ROC AUC of class 2 against class 0
    _, auc = PFNClassifier()._held_out_losses(probs, two)
    assert auc == pytest.approx(roc_auc_score(two == 2, probs[:, 2] / (probs[:, 0] + probs[:, 2])))
    assert np.isnan(PFNClassifier()._held_out_losses(probs, np.zeros(50, int))[1])
