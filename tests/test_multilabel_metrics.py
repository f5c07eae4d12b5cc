"""Multi-label metrics against hand-computed values (and scikit-learn when it happens to be
installed), and per-label thresholds chosen on dev against a brute-force search."""

from fractions import Fraction

import numpy as np
import pytest

from minibert.training.multilabel_metrics import (
    choose_thresholds,
    cross_fitted_f1,
    gold_matrix,
    label_names_per_text,
    multilabel_report,
    predict_labels,
)

NAMES = ["a", "b", "c"]
# At threshold 0.5: text 0 partly right, text 1 one extra, text 2 predicts nothing, text 3 wrong,
# text 4 exact; label c is never predicted (its highest probability is 0.45).
GOLD = [[0, 1], [1], [0, 2], [2], [1]]
PROBABILITIES = np.array([[0.9, 0.2, 0.1],
                          [0.6, 0.7, 0.3],
                          [0.4, 0.1, 0.2],
                          [0.8, 0.3, 0.45],
                          [0.1, 0.95, 0.05]], dtype=np.float32)


def f(numerator, denominator=1):
    return float(Fraction(numerator, denominator))


def test_report_by_hand():
    report = multilabel_report(GOLD, PROBABILITIES, 0.5, NAMES)
    # Per label (TP, FP, FN): a (1, 2, 1), b (2, 0, 1), c (0, 0, 2).
    assert report["per_label"] == {
        "a": {"precision": f(1, 3), "recall": f(1, 2), "f1": f(2, 5), "support": 2, "predicted": 3},
        "b": {"precision": 1.0, "recall": f(2, 3), "f1": f(4, 5), "support": 3, "predicted": 2},
        "c": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0}}
    expected = {
        "micro_precision": f(3, 5), "micro_recall": f(3, 7), "micro_f1": f(1, 2),   # TP 3, FP 2, FN 4
        "macro_precision": f(4, 9), "macro_recall": f(7, 18), "macro_f1": f(2, 5),
        # texts: (P, R, F1) = (1, 1/2, 2/3), (1/2, 1, 2/3), (0, 0, 0), (0, 0, 0), (1, 1, 1)
        "example_precision": f(1, 2), "example_recall": f(1, 2), "example_f1": f(7, 15),
        "subset_accuracy": f(1, 5), "hamming_loss": f(6, 15)}
    assert {key: report[key] for key in expected} == pytest.approx(expected, abs=1e-12)
    assert report["count"] == 5 and report["thresholds"] == [0.5, 0.5, 0.5]


def test_per_label_thresholds_and_gold_as_matrix():
    # c's threshold 0.4 admits text 3 (0.45): c becomes TP 1, FN 1 -> F1 2/3.
    gold = gold_matrix(GOLD, 3)
    assert gold.tolist() == [[True, True, False], [False, True, False], [True, False, True],
                             [False, False, True], [False, True, False]]
    report = multilabel_report(gold.astype(np.float32), PROBABILITIES, [0.5, 0.5, 0.4], NAMES)
    assert report["per_label"]["c"]["f1"] == pytest.approx(f(2, 3))
    assert report["macro_f1"] == pytest.approx(f(28, 45))
    assert report["thresholds"] == [0.5, 0.5, pytest.approx(0.4)]
    # A threshold is reached at equality (p >= t).
    assert predict_labels([[0.5, 0.49]], 0.5).tolist() == [[True, False]]


def test_zero_division_convention():
    # Label 1 has no gold text and is never predicted; text 1 has no gold and no predicted label.
    report = multilabel_report([[0], []], [[0.9, 0.1], [0.2, 0.1]], 0.5, ["x", "y"])
    assert report["per_label"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
    assert report["macro_f1"] == 0.5 and report["micro_f1"] == 1.0
    assert report["example_f1"] == 0.5 and report["subset_accuracy"] == 1.0 and report["hamming_loss"] == 0.0


def test_names_per_text():
    assert label_names_per_text(GOLD, PROBABILITIES, 0.5, NAMES) == [
        {"gold": ["a", "b"], "predicted": ["a"]}, {"gold": ["b"], "predicted": ["a", "b"]},
        {"gold": ["a", "c"], "predicted": []}, {"gold": ["c"], "predicted": ["a"]},
        {"gold": ["b"], "predicted": ["b"]}]


def test_shape_errors():
    with pytest.raises(ValueError):
        multilabel_report(GOLD, PROBABILITIES, [0.5, 0.5], NAMES)
    with pytest.raises(ValueError):
        multilabel_report(GOLD[:4], PROBABILITIES, 0.5, NAMES)
    with pytest.raises(ValueError):
        gold_matrix(np.array([[0, 2, 0]]), 3)


def test_against_scikit_learn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gold = (rng.random((60, 5)) < 0.3).astype(int)
    gold[gold.sum(1) == 0, 0] = 1  # every text has a gold label (scikit-learn's rule for empty texts differs)
    probabilities = rng.random((60, 5))
    report = multilabel_report(gold, probabilities, 0.6, list("vwxyz"))
    predicted = (probabilities >= 0.6).astype(int)
    for average in ("micro", "macro", "samples"):
        p, r, f1, _ = metrics.precision_recall_fscore_support(gold, predicted, average=average, zero_division=0)
        name = "example" if average == "samples" else average
        assert [report[f"{name}_{k}"] for k in ("precision", "recall", "f1")] == pytest.approx([p, r, f1])
    assert report["subset_accuracy"] == pytest.approx(metrics.accuracy_score(gold, predicted))
    assert report["hamming_loss"] == pytest.approx(metrics.hamming_loss(gold, predicted))


# --- thresholds chosen on dev --------------------------------------------------------------------

def test_thresholds_by_hand():
    # F1 at the cuts below 0.9, 0.8, 0.6, 0.3 (2 gold): 2/3, 1/2, 4/5, 2/3: the cut below 0.6.
    # Label 1 ties 2/3 below 0.9 and below 0.2 (all four): the higher cut wins.
    # Label 2 has no gold text: it keeps the default.
    probabilities = np.array([[0.9, 0.9, 0.5], [0.8, 0.7, 0.5], [0.6, 0.5, 0.5], [0.3, 0.2, 0.5]])
    gold = [[0, 1], [], [0], [1]]
    thresholds = choose_thresholds(probabilities, gold, default=0.3)
    assert thresholds.tolist() == pytest.approx([0.45, 0.8, 0.3])
    assert predict_labels(probabilities, thresholds)[:, 0].tolist() == [True, True, True, False]


def test_thresholds_at_the_edges_keep_the_chosen_texts():
    # Predicting every text is best for label 0 even where a probability is exactly 0.
    probabilities = np.array([[0.0], [0.0], [0.3]], dtype=np.float32)
    thresholds = choose_thresholds(probabilities, [[0], [0], [0]], default=0.5)
    assert thresholds.tolist() == [0.0] and predict_labels(probabilities, thresholds).all()
    # Adjacent float32 values: their midpoint rounds (half to even) onto the lower, 0.25 (mantissa 0),
    # which would admit it; the threshold must be the upper value itself.
    lower = np.float32(0.25)
    upper = np.nextafter(lower, np.float32(1))
    probabilities = np.array([[upper], [lower]], dtype=np.float32)
    thresholds = choose_thresholds(probabilities, [[0], []], default=0.5)
    assert predict_labels(probabilities, thresholds)[:, 0].tolist() == [True, False]
    assert thresholds.tolist() == [float(upper)]


def test_cross_fitted_f1_by_hand():
    # The fixed permutation deals texts 1, 3, 4 into part 0 and texts 0, 2, 5 into part 1.
    # Label 0, chosen on part 1 (0.9 gold, 0.7, 0.2 gold): F1 2/3, 1/2, 4/5 at the three cuts, so
    # below 0.2 (t = 0.1): texts 1, 3, 4 all predicted. Chosen on part 0 (0.8 gold, 0.6 gold, 0.4):
    # the cut below 0.6 (t = 0.5, F1 1): texts 0 and 2 predicted, 5 not. Together: predicted 0-4,
    # gold 0, 1, 3, 5: TP 3, F1 6/9. (Chosen on all six texts, predicting all gives F1 0.8.)
    # Label 1 has no gold text: the default 0.3 predicts text 0, F1 0.
    probabilities = np.array([[0.9, 0.5], [0.8, 0.1], [0.7, 0.1], [0.6, 0.1], [0.4, 0.1], [0.2, 0.1]])
    gold = [[0], [0], [], [0], [], [0]]
    assert multilabel_report(gold, probabilities, choose_thresholds(probabilities, gold, 0.3),
                             ["a", "b"])["per_label"]["a"]["f1"] == pytest.approx(0.8)
    scores = cross_fitted_f1(probabilities, gold, default=0.3)
    assert scores == pytest.approx({"macro_f1": (2 / 3 + 0) / 2, "micro_f1": 6 / 10, "folds": 2}, abs=1e-12)


def brute_force(probabilities, gold, grid):
    """Per label, the predicted set of the highest grid threshold with the best F1, and that F1."""
    best = []
    for label in range(probabilities.shape[1]):
        scores = [multilabel_report(gold[:, [label]], probabilities[:, [label]], t, ["x"])["macro_f1"] for t in grid]
        top = max(scores)
        t = max(t for t, score in zip(grid, scores) if score == top)
        best.append((probabilities[:, label] >= t, top))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_equal_a_brute_force_search(seed):
    # Probabilities on a 0.01 grid (many ties); the 0.005 grid holds a threshold for every cut.
    rng = np.random.default_rng(seed)
    gold = rng.random((80, 6)) < np.array([0.5, 0.2, 0.05, 0.02, 0.3, 0.0])
    probabilities = np.round(np.clip(0.35 * gold + 0.65 * rng.random((80, 6)), 0, 1), 2)
    thresholds = choose_thresholds(probabilities, gold, default=0.25)
    grid = np.arange(0, 201) / 200
    chosen = predict_labels(probabilities, thresholds)
    for label, (predicted, f1) in enumerate(brute_force(probabilities, gold.astype(int), grid)):
        if not gold[:, label].any():
            assert thresholds[label] == 0.25
            continue
        assert chosen[:, label].tolist() == predicted.tolist()
        report = multilabel_report(gold[:, [label]], probabilities[:, [label]], thresholds[label], ["x"])
        assert report["macro_f1"] == f1 > 0
