"""Multi-label metrics, and per-label thresholds chosen on dev.

Shapes: N texts, L labels. Gold labels are a list of N class-index lists or an (N, L) 0/1 matrix
(minibert.data.examples.multi_hot); probabilities are (N, L) sigmoid outputs; thresholds are one
float for every label or an (L,) vector. A label is predicted when its probability reaches its
threshold, p >= t, as the GoEmotions code does (bert_classifier.py, metric_fn_multi:
`probabilities >= FLAGS.eval_prob_threshold`).

Zero division, everywhere the same, as scikit-learn's zero_division=0: a ratio whose denominator
is 0 is 0. So a label never predicted has precision 0, a label without gold texts has recall 0, and
a label with neither has precision, recall and F1 0 (and still counts in the macro average); a text
with no gold and no predicted label has example precision, recall and F1 0, though it is an exact
match for subset accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minibert.data.examples import multi_hot


def gold_matrix(gold, num_labels: int) -> np.ndarray:
    """(N, num_labels) bool from class-index lists or from a 0/1 matrix."""
    if isinstance(gold, np.ndarray) and gold.ndim == 2:
        matrix = gold
    elif len(gold) and not isinstance(gold[0], (list, tuple)):
        matrix = np.asarray(gold)
    else:
        matrix = multi_hot(gold, num_labels)
    if matrix.shape[1:] != (num_labels,) or not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"gold must be index lists or an (N, {num_labels}) 0/1 matrix, got shape {matrix.shape}")
    return matrix.astype(bool)


def predict_labels(probabilities, thresholds) -> np.ndarray:
    """(N, L) bool: probabilities >= thresholds (a float, or an (L,) vector, one per label)."""
    probabilities = np.asarray(probabilities)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if probabilities.ndim != 2 or thresholds.shape not in ((), (probabilities.shape[1],)):
        raise ValueError(f"need (N, L) probabilities and a threshold or L of them, got shapes "
                         f"{probabilities.shape} and {thresholds.shape}")
    return probabilities >= thresholds


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (the module's zero-division rule)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _scores(true_positive, predicted, gold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from counts; F1 = 2 TP / (predicted + gold), the harmonic mean."""
    return (_ratio(true_positive, predicted), _ratio(true_positive, gold),
            _ratio(2 * np.asarray(true_positive), np.asarray(predicted) + np.asarray(gold)))


def _label_counts(predicted: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label (L,): texts predicted and gold (true positives), predicted, gold."""
    return (predicted & gold).sum(0), predicted.sum(0), gold.sum(0)


def multilabel_report(gold, probabilities, thresholds, names: Sequence[str]) -> dict:
    """Every multi-label metric of N texts at the given thresholds.

    Returns micro_/macro_/example_ precision, recall and f1 (micro: from the counts summed over
    labels; macro: the mean of the per-label scores; example: the mean over texts of each text's
    scores between its predicted and gold sets), subset_accuracy (predicted set == gold set),
    hamming_loss (the share of the N * L decisions that are wrong), per_label
    {name: precision, recall, f1, support (gold texts), predicted (texts)}, count (N) and the
    thresholds used (an L-long list). Zero division: see the module notes.
    """
    predicted = predict_labels(probabilities, thresholds)
    gold = gold_matrix(gold, len(names))
    if predicted.shape != gold.shape:
        raise ValueError(f"gold {gold.shape} and probabilities {predicted.shape} differ in shape")
    hits = predicted & gold
    label_tp, label_predicted, label_gold = _label_counts(predicted, gold)
    precision, recall, f1 = _scores(label_tp, label_predicted, label_gold)
    micro = _scores(label_tp.sum(), label_predicted.sum(), label_gold.sum())
    example = _scores(hits.sum(1), predicted.sum(1), gold.sum(1))
    report = {f"{average}_{name}": float(np.mean(values)) if len(np.shape(values)) else float(values)
              for average, scores in (("micro", micro), ("macro", (precision, recall, f1)), ("example", example))
              for name, values in zip(("precision", "recall", "f1"), scores)}
    report.update(
        subset_accuracy=float((predicted == gold).all(1).mean()) if len(gold) else 0.0,
        hamming_loss=float((predicted != gold).mean()) if gold.size else 0.0,
        per_label={name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(label_gold[i]), "predicted": int(label_predicted[i])}
                   for i, name in enumerate(names)},
        count=len(gold),
        thresholds=np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(names),)).tolist(),
    )
    return report


def label_names_per_text(gold, probabilities, thresholds, names: Sequence[str]) -> list[dict]:
    """Per text {"gold": [names], "predicted": [names]}, each in class-index order."""
    predicted = predict_labels(probabilities, thresholds)
    gold = gold_matrix(gold, len(names))
    return [{"gold": [names[i] for i in np.flatnonzero(g)], "predicted": [names[i] for i in np.flatnonzero(p)]}
            for g, p in zip(gold, predicted)]


def choose_thresholds(probabilities, gold, default: float) -> np.ndarray:
    """(L,) float64: per label, the threshold that maximises that label's F1 on these texts (dev).

    With p >= t, a threshold only matters through how many of the label's distinct probability
    values it admits, so the candidates are the cuts between consecutive distinct values, sorted
    once per label (O(N log N)): cutting below the k highest texts gives F1 = 2 TP_k / (k + gold).
    The threshold returned for a cut between the values v > w is their midpoint (w = 0 below the
    lowest value), taken in the probabilities' dtype and replaced by v itself in the rare case that
    rounding leaves it outside (w, v]; so p >= t selects exactly the chosen texts. Ties in F1 go to
    the highest threshold (the fewest texts predicted). A label without gold texts here has F1 0 at
    every threshold (the module's zero-division rule) and keeps `default`.
    """
    probabilities = np.asarray(probabilities)
    gold = gold_matrix(gold, probabilities.shape[1])
    thresholds = np.full(probabilities.shape[1], default, dtype=np.float64)
    for label in range(probabilities.shape[1]):
        positives = int(gold[:, label].sum())
        if positives:
            thresholds[label] = _best_threshold(probabilities[:, label], gold[:, label], positives)
    return thresholds


def _best_threshold(probabilities: np.ndarray, gold: np.ndarray, positives: int) -> float:
    order = np.argsort(-probabilities, kind="stable")
    values = probabilities[order]
    true_positives = np.cumsum(gold[order])
    ends = np.flatnonzero(np.append(values[:-1] > values[1:], True))  # the last text of each distinct value
    f1 = 2 * true_positives[ends] / (ends + 1 + positives)
    end = ends[int(np.argmax(f1))]  # argmax takes the first maximum: the highest threshold
    upper = values[end]
    lower = values[end + 1] if end + 1 < len(values) else upper.dtype.type(0)
    middle = upper.dtype.type((float(upper) + float(lower)) / 2)
    inside = lower < middle <= upper or (end + 1 == len(values) and middle <= upper)
    return float(middle if inside else upper)


def cross_fitted_f1(probabilities, gold, default: float, folds: int = 2) -> dict:
    """Macro- and micro-F1 of per-label thresholds chosen on dev, estimated without scoring them on
    the texts they were chosen on: the texts are dealt into `folds` parts by a fixed permutation
    (seed 0), each part is decided by the thresholds `choose_thresholds` picks on the other parts,
    and all decisions are scored together. F1 at thresholds chosen and scored on the same texts is
    optimistic (each label's cut fits those texts); this estimate is slightly pessimistic instead
    (each choice sees (folds-1)/folds of the texts). -> {"macro_f1", "micro_f1", "folds"}"""
    probabilities = np.asarray(probabilities)
    gold = gold_matrix(gold, probabilities.shape[1])
    part = np.random.default_rng(0).permutation(len(gold)) % folds
    predicted = np.zeros_like(gold)
    for fold in range(folds):
        chosen = choose_thresholds(probabilities[part != fold], gold[part != fold], default)
        predicted[part == fold] = predict_labels(probabilities[part == fold], chosen)
    label_tp, label_predicted, label_gold = _label_counts(predicted, gold)
    macro_f1 = float(np.mean(_scores(label_tp, label_predicted, label_gold)[2]))
    micro_f1 = float(_scores(label_tp.sum(), label_predicted.sum(), label_gold.sum())[2])
    return {"macro_f1": macro_f1, "micro_f1": micro_f1, "folds": folds}
