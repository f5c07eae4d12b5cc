"""Metric values on hand-computed cases."""

import pytest

from minibert.training.metrics import classification_report, confusion_matrix


def test_hand_computed_report():
    gold = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    report = classification_report(gold, pred, ["a", "b", "c"])
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["error"] == pytest.approx(2 / 6)
    # a: P 2/2, R 2/3 -> F1 0.8; b: P 1/2, R 1/2 -> 0.5; c: P 1/2, R 1/1 -> 2/3
    assert report["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                        "support": 3}
    assert report["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert report["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_absent_and_never_predicted_classes_score_zero():
    report = classification_report([0, 0], [0, 1], ["a", "b", "c"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["per_class"]["c"]["f1"] == 0.0
    assert report["macro_f1"] == pytest.approx((2 / 3) / 3)  # a: P 1, R 1/2


def test_lengths_must_match():
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 2)
