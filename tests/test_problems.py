"""The problem table's multi-label pieces against hand-computed values and brute force: the scores,
the per-label thresholds chosen on dev, the positive weights, the loss, and selection by a score
that grows."""

import numpy as np
import pytest
import torch

from minibert.finetune.selection import DevSelection, selection_of
from minibert.training.problems import best_thresholds, multilabel_report, positive_weights, problem


def test_multilabel_report_by_hand():
    """Three labels over four texts: partial matches, an empty prediction, a text with no gold label
    predicted empty, and label c never predicted."""
    names = ["a", "b", "c"]
    gold = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool)
    predicted = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=bool)
    r = multilabel_report(gold, predicted, names)
    # Per label: a TP 2 FP 0 FN 0; b TP 0 FP 1 FN 2; c TP 0 FP 0 FN 1.
    assert r["per_label"] == {"a": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2},
                              "b": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
                              "c": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}}
    assert r["macro_precision"] == pytest.approx(1 / 3) and r["macro_f1"] == pytest.approx(1 / 3)
    # Micro: TP 2, predicted 3, gold 5.
    assert r["micro_precision"] == pytest.approx(2 / 3) and r["micro_recall"] == pytest.approx(2 / 5)
    assert r["micro_f1"] == pytest.approx(2 * 2 / (3 + 5))
    # Per text (P, R, F1): (1, 1/2, 2/3), (1/2, 1/2, 1/2), empty and empty (1, 1, 1), none predicted (0, 0, 0).
    assert r["example_precision"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert r["example_recall"] == pytest.approx((0.5 + 0.5 + 1 + 0) / 4)
    assert r["example_f1"] == pytest.approx((2 / 3 + 0.5 + 1 + 0) / 4)
    assert r["subset_accuracy"] == pytest.approx(1 / 4)  # only the empty text
    assert r["hamming_loss"] == pytest.approx(4 / 12)  # wrong: (0,b), (1,b), (1,c), (3,b)
    assert r["count"] == 4


def test_thresholds_chosen_on_dev_equal_a_brute_force_search():
    rng = np.random.default_rng(3)
    gold = rng.random((40, 4)) < np.array([0.5, 0.2, 0.1, 0.0])  # the last label never positive
    probabilities = np.round(rng.random((40, 4)), 2).astype(np.float32)  # rounded: ties on purpose
    probabilities[gold] = np.minimum(probabilities[gold] + 0.3, 0.99)
    chosen = best_thresholds(gold, probabilities, default=0.5)
    assert gold[:, :3].any(0).all()
    for k in range(3):
        def f1(t):
            predicted = probabilities[:, k] >= t
            hits = (predicted & gold[:, k]).sum()
            return 2 * hits / (predicted.sum() + gold[:, k].sum())
        candidates = sorted(set(probabilities[:, k].tolist()))
        best = max(f1(t) for t in candidates)
        # The highest threshold of those with the best F1.
        assert chosen[k] == max(t for t in candidates if f1(t) == pytest.approx(best, abs=1e-12))
    assert chosen[3] == 0.5


def test_positive_weights_are_negatives_over_positives():
    weights = positive_weights([(0,), (0, 1), (), (2,)], 4)
    assert weights.tolist() == [2 / 2, 3 / 1, 3 / 1, 1.0]  # label 3 never positive: 1


def test_multi_label_loss_is_the_mean_sigmoid_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    by_hand = [-np.log(1 / (1 + np.exp(-2.0))), -np.log(1 - 1 / (1 + np.exp(1.0))),
               -np.log(1 - 1 / (1 + np.exp(-0.5))), -np.log(1 / (1 + np.exp(-3.0)))]
    assert problem(True).loss(logits, labels, None).item() == pytest.approx(np.mean(by_hand), rel=1e-6)
    # pos_weight w multiplies the positive terms: label 1's positive (example 2) counts 3 times.
    weighted = problem(True).loss(logits, labels, torch.tensor([1.0, 3.0])).item()
    assert weighted == pytest.approx((by_hand[0] + by_hand[1] + by_hand[2] + 3 * by_hand[3]) / 4, rel=1e-6)


def test_selection_by_a_score_that_grows_and_by_mixed_kinds():
    selection = DevSelection(metric="macro_f1", higher_is_better=True)
    assert [selection.record(f1, step, patience=2) for step, f1 in enumerate([0.2, 0.5, 0.4, 0.5])] == \
        [True, True, False, False]
    assert selection.best_score == 0.5 and selection.best_step == 1 and selection.stopped
    mixed = selection_of("auto", {"topics": False, "emotions": True})
    assert (mixed.name, mixed.higher_is_better) == ("mean_cost", False)
    reports = {"topics": {"error": 0.2}, "emotions": {"macro_f1": 0.6}}
    assert mixed.score(reports) == pytest.approx((0.2 + 0.4) / 2)
    assert selection_of("auto", {"emotions": True}).name == "macro_f1"
    assert selection_of("micro_f1", {"a": True, "b": True}).score(
        {"a": {"micro_f1": 0.5}, "b": {"micro_f1": 0.7}}) == pytest.approx(0.6)


@pytest.mark.parametrize("thresholds, expected", [
    (0.5, [[1, 1], [0, 1], [0, 0]]),
    ([0.2, 0.9], [[1, 1], [1, 0], [0, 0]]),  # a probability equal to its threshold is predicted
])
def test_decisions_reach_the_threshold(thresholds, expected):
    probabilities = torch.tensor([[0.5, 0.9], [0.2, 0.89], [0.1, 0.1]])
    report = problem(True).report([(0, 1), (0,), ()], probabilities, ["x", "y"], thresholds)
    gold = np.array([[1, 1], [1, 0], [0, 0]], dtype=bool)
    assert report == multilabel_report(gold, np.array(expected, dtype=bool), ["x", "y"])
