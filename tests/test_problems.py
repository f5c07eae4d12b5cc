"""The problem table's pieces against hand-computed values: the positive weights, the loss,
decisions at a threshold, and selection by a score that grows or by mixed kinds of task. (The
multi-label scores and thresholds themselves: tests/test_multilabel_metrics.py.)"""

import numpy as np
import pytest
import torch

from minibert.finetune.selection import DevSelection, selection_of
from minibert.training.problems import positive_weights, problem


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


@pytest.mark.parametrize("thresholds, hamming_loss, subset_accuracy", [
    (0.5, 2 / 6, 2 / 3),  # predicted [x, y], [y], []: the second text wrong at both labels
    ([0.25, 0.75], 0.0, 1.0),  # predicted [x, y], [x], []: a probability equal to its threshold is predicted
])
def test_decisions_reach_the_threshold(thresholds, hamming_loss, subset_accuracy):
    probabilities = torch.tensor([[0.5, 0.75], [0.25, 0.625], [0.125, 0.125]])  # exact in float32
    report = problem(True).report([(0, 1), (0,), ()], probabilities, ["x", "y"], thresholds)
    assert report["hamming_loss"] == pytest.approx(hamming_loss)
    assert report["subset_accuracy"] == pytest.approx(subset_accuracy)
