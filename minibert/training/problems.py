"""The two kinds of classification problem a task can be, in one table: what the head's logits
mean, the loss, how probabilities become decisions, and the scores a dev evaluation reports.

- single_label: K mutually exclusive classes; softmax, cross-entropy, the argmax decides
  (Google's run_classifier.py). Scored by error, accuracy, macro-F1 (classification_report).
- multi_label: K independent yes/no labels, one logit each; sigmoid, sigmoid cross-entropy averaged
  over examples and labels (the GoEmotions authors' bert_classifier.py, create_model with
  --multilabel); a label is predicted when its probability reaches its threshold (one global
  value, or one per label chosen on dev). Scored by micro/macro/example-averaged precision,
  recall and F1, subset accuracy and Hamming loss (minibert.training.multilabel_metrics).

A task's kind is its head's HeadConfig.multi_label; everything else reads the kind from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from minibert.data.examples import multi_hot
from minibert.training.metrics import classification_report
from minibert.training.multilabel_metrics import multilabel_report

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
    return multilabel_report(gold, probabilities.numpy(), thresholds, names)


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


def positive_weights(id_lists: list, num_labels: int) -> torch.Tensor:
    """(K,) float32 n_neg / n_pos per label from the training labels (a label never positive: 1)."""
    positives = multi_hot(id_lists, num_labels).sum(0).astype(np.float64)
    weights = np.where(positives > 0, (len(id_lists) - positives) / np.maximum(positives, 1), 1.0)
    return torch.tensor(weights, dtype=torch.float32)
