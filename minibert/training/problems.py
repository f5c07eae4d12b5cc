"""The two kinds of classification problem a task can be, in one table: what the head's logits
mean, the loss, how probabilities become decisions, and the scores a dev evaluation reports.

- single_label: K mutually exclusive classes; softmax, cross-entropy, the argmax decides
  (Google's run_classifier.py). Scored by error, accuracy, macro-F1 (classification_report).
- multi_label: K independent yes/no labels, one logit each; sigmoid, sigmoid cross-entropy averaged
  over examples and labels (the GoEmotions authors' bert_classifier.py, create_model with
  --multilabel); a label is predicted when its probability reaches its threshold (one global
  value, or one per label chosen on dev). Scored by micro/macro/example-averaged precision,
  recall and F1, subset accuracy and Hamming loss (multilabel_report).

A task's kind is its head's HeadConfig.multi_label; everything else reads the kind from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from minibert.training.metrics import classification_report

DEFAULT_THRESHOLD = 0.5  # a label is predicted when its sigmoid probability reaches this


@dataclass(frozen=True)
class Metric:
    """A score a dev evaluation can select the best model by."""

    higher_is_better: bool

    def cost(self, value: float) -> float:
        """The value as something to minimise (1 - value for a score in [0, 1] that grows)."""
        return 1.0 - value if self.higher_is_better else value


# Every metric --selection_metric may name; a task's report must hold it (Problem.metrics).
METRICS = {
    "error": Metric(False), "accuracy": Metric(True), "macro_f1": Metric(True), "micro_f1": Metric(True),
    "example_f1": Metric(True), "subset_accuracy": Metric(True), "hamming_loss": Metric(False),
}
# The scalar scores of a multi-label evaluation, as metrics.jsonl, results.json and the plot name them.
MULTI_LABEL_SCORES = ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1",
                      "example_precision", "example_recall", "example_f1", "subset_accuracy", "hamming_loss")


def single_label_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """logits (B, K), labels (B,) int64; weight (K,) class weights or None -> mean cross-entropy."""
    return F.cross_entropy(logits.float(), labels, weight=weight)


def multi_label_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """logits (B, K), labels (B, K) multi-hot float32; weight (K,) positive weights or None ->
    sigmoid cross-entropy averaged over examples and labels (GoEmotions bert_classifier.py:
    tf.nn.sigmoid_cross_entropy_with_logits, then tf.reduce_mean)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=weight)


def single_label_report(gold: list, probabilities: torch.Tensor, names: list[str], thresholds) -> dict:
    """classification_report of the argmax; `thresholds` is not used."""
    predicted = probabilities.argmax(-1).tolist() if len(gold) else []
    return classification_report(gold, predicted, names)


def multi_label_report(gold: list, probabilities: torch.Tensor, names: list[str], thresholds) -> dict:
    """multilabel_report of the labels whose probability reaches its threshold (a float, or one per label)."""
    predicted = probabilities.numpy() >= np.asarray(thresholds, dtype=np.float32)
    return multilabel_report(multi_hot_matrix(gold, len(names)), predicted, names)


@dataclass(frozen=True)
class Problem:
    """How one kind of task is trained, decided and scored."""

    name: str
    activation: Callable[[torch.Tensor], torch.Tensor]  # logits (B, K) float32 -> probabilities (B, K)
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    report: Callable[[list, torch.Tensor, list[str], object], dict]  # (gold, probabilities, names, thresholds)
    scores: tuple[str, ...]  # the report's scalar scores, as a dev record in metrics.jsonl holds them
    default_metric: str  # what --selection_metric auto selects by

    @property
    def metrics(self) -> tuple[str, ...]:
        """The METRICS a task of this kind can be selected by."""
        return tuple(name for name in self.scores if name in METRICS)


PROBLEMS = {
    False: Problem("single_label", lambda logits: F.softmax(logits, dim=-1), single_label_loss, single_label_report,
                   ("error", "accuracy", "macro_f1"), "error"),
    True: Problem("multi_label", torch.sigmoid, multi_label_loss, multi_label_report, MULTI_LABEL_SCORES, "macro_f1"),
}


def problem(multi_label: bool) -> Problem:
    """The Problem of a head (HeadConfig.multi_label)."""
    return PROBLEMS[bool(multi_label)]


def multi_hot_matrix(id_lists: list, num_labels: int) -> np.ndarray:
    """(N, K) bool: row i is True at the label ids of id_lists[i]."""
    matrix = np.zeros((len(id_lists), num_labels), dtype=bool)
    for row, ids in enumerate(id_lists):
        matrix[row, list(ids)] = True
    return matrix


def positive_weights(id_lists: list, num_labels: int) -> torch.Tensor:
    """(K,) float32 n_neg / n_pos per label from the training labels (a label never positive: 1)."""
    positives = multi_hot_matrix(id_lists, num_labels).sum(0).astype(np.float64)
    weights = np.where(positives > 0, (len(id_lists) - positives) / np.maximum(positives, 1), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def _ratio(numerator, denominator):
    """numerator / denominator elementwise, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _f1(precision, recall):
    return _ratio(2 * precision * recall, precision + recall)


def multilabel_report(gold: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    """Scores of (N, K) bool decisions against (N, K) bool gold labels.

    micro: precision/recall/F1 of all (example, label) decisions pooled; macro: the mean over labels
    of each label's precision/recall/F1 (a label never predicted has precision 0, one never gold
    recall 0, as scikit-learn's zero_division=0); example: the mean over examples of |P & G| / |P|,
    |P & G| / |G| and 2|P & G| / (|P| + |G|), an example with neither predicted nor gold labels
    counting 1 for all three; subset accuracy: share of examples whose predicted set is exactly the
    gold set; Hamming loss: share of wrong (example, label) decisions.
    """
    gold, predicted = gold.astype(bool), predicted.astype(bool)
    hits = (gold & predicted).sum(0)  # (K,)
    precision, recall = _ratio(hits, predicted.sum(0)), _ratio(hits, gold.sum(0))
    f1 = _f1(precision, recall)
    micro_p, micro_r = float(_ratio(hits.sum(), predicted.sum())), float(_ratio(hits.sum(), gold.sum()))
    row_hits, row_predicted, row_gold = (gold & predicted).sum(1), predicted.sum(1), gold.sum(1)
    empty = (row_predicted == 0) & (row_gold == 0)
    example_p = np.where(empty, 1.0, _ratio(row_hits, row_predicted))
    example_r = np.where(empty, 1.0, _ratio(row_hits, row_gold))
    example_f1 = np.where(empty, 1.0, _ratio(2 * row_hits, row_predicted + row_gold))
    n = len(gold)
    report = {
        "micro_precision": micro_p, "micro_recall": micro_r, "micro_f1": float(_f1(micro_p, micro_r)),
        "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "example_precision": float(example_p.mean()) if n else 0.0,
        "example_recall": float(example_r.mean()) if n else 0.0,
        "example_f1": float(example_f1.mean()) if n else 0.0,
        "subset_accuracy": float((gold == predicted).all(1).mean()) if n else 0.0,
        "hamming_loss": float((gold != predicted).mean()) if n else 0.0,
    }
    report["per_label"] = {name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                                  "support": int(gold[:, k].sum())} for k, name in enumerate(names)}
    report["count"] = n
    return report


def best_thresholds(gold: np.ndarray, probabilities: np.ndarray, default: float) -> list[float]:
    """Per label, the threshold t (a label is predicted when p >= t) with the highest F1 on these
    examples: gold (N, K) bool, probabilities (N, K). Only the observed probabilities can change a
    decision, so they are the candidates; of equal F1 the highest t wins. A label with no gold
    positive (F1 0 whatever t is) keeps `default`."""
    thresholds = []
    for k in range(gold.shape[1]):
        positives = int(gold[:, k].sum())
        if positives == 0:
            thresholds.append(float(default))
            continue
        order = np.argsort(-probabilities[:, k], kind="stable")
        p, g = probabilities[order, k], gold[order, k]
        hits = np.cumsum(g)  # true positives when the first i+1 (highest) are predicted
        last = np.r_[p[1:] != p[:-1], True]  # a cut only after the last of equal probabilities
        f1 = 2 * hits / (np.arange(1, len(p) + 1) + positives)
        f1 = np.where(last, f1, -1.0)
        best = np.flatnonzero(f1 == f1.max())[0]  # the fewest predicted: the highest threshold
        thresholds.append(float(p[best]))
    return thresholds
