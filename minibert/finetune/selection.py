"""Scoring during fine-tuning: a classifier on a set of encoded examples, the dev evaluation that
picks the best model (a multi-task run's mean dev error over its tasks), and best/ itself."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from minibert.checkpoints.classifier import save_classifier, save_multitask_classifier
from minibert.model.heads import BertClassifier, TaskClassifier
from minibert.training.distributed import eval_shard, gather_rows
from minibert.training.evaluation import predict_probabilities
from minibert.training.metrics import classification_report
from minibert.training.metrics_log import MetricsLog
from minibert.training.run_context import RunContext


@dataclass
class DevSelection:
    """The best model by dev error, and early stopping after `patience` evaluations without a better one."""

    best_dev_error: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped: bool = False  # early stopping fired

    def record(self, error: float, step: int, patience: int) -> bool:
        """Score one evaluation; True when it is the best so far (the model is then saved)."""
        better = self.best_dev_error is None or error < self.best_dev_error
        if better:
            self.best_dev_error, self.best_step, self.evals_without_improvement = error, step, 0
        else:
            self.evals_without_improvement += 1
        self.stopped = patience > 0 and self.evals_without_improvement >= patience
        return better


@dataclass(frozen=True)
class Scoring:
    """How a classifier is run over examples to score it."""

    batch_size: int  # examples per forward pass
    hierarchical: bool  # texts are chunked and pooled (paper §5.3.1)
    pad_id: int  # the tokenizer's [PAD] id


def evaluate(context: RunContext, classifier: BertClassifier, docs, label_names: list[str], scoring: Scoring,
             desc: str) -> dict:
    """Scores on `docs`; under torchrun each rank predicts its share and all ranks get every row."""
    mine = eval_shard(len(docs), context.setup)
    with tqdm(total=len(mine), desc=desc, leave=False, unit="ex", disable=not context.is_main) as bar:
        probabilities = predict_probabilities(classifier, [docs[i] for i in mine], scoring.batch_size, context.device,
                                              context.autocast(), scoring.hierarchical, bar, pad_id=scoring.pad_id)
    probabilities = gather_rows(probabilities, mine, len(docs), context.setup)
    predicted = probabilities.argmax(-1).tolist() if len(docs) else []
    return classification_report([doc.label for doc in docs], predicted, label_names)


def scores(report: dict) -> dict:
    return {"error": report["error"], "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def mean_scores(reports: dict[str, dict]) -> dict:
    """A multi-task run's dev summary: the mean error and macro-F1 over its tasks."""
    error = statistics.mean(r["error"] for r in reports.values())
    return {"error": error, "accuracy": 1 - error, "macro_f1": statistics.mean(r["macro_f1"] for r in reports.values())}


def evaluate_dev(context: RunContext, model: TaskClassifier, tasks, scoring: Scoring, log: MetricsLog,
                 step: int, epoch: int, multitask: bool, train_eval: dict) -> tuple[dict, str]:
    """Score every task's dev split (and the training subset of Figure 2: train_eval, task -> docs)
    and log them; returns the summary the best model is chosen by (the mean over a multi-task run's
    tasks) and its line for the console."""
    reports = {}
    for task in tasks:
        tag = {"task": task.name} if multitask else {}
        classifier = model.classifier(task.name)
        if task.name in train_eval:
            report = evaluate(context, classifier, train_eval[task.name], task.labels, scoring,
                              f"train error {task.name}" if multitask else "train error")
            log.write(step=step, epoch=epoch, split="train_eval", **tag, **scores(report))
        reports[task.name] = evaluate(context, classifier, task.dev_docs, task.labels, scoring,
                                      f"dev {task.name}" if multitask else "dev")
        if multitask:
            log.write(step=step, epoch=epoch, split="dev_task", **tag, **scores(reports[task.name]))
    summary = mean_scores(reports) if multitask else scores(*reports.values())
    log.write(step=step, epoch=epoch, split="dev", **summary)
    return summary, dev_line(summary, reports, multitask)


def dev_line(summary: dict, reports: dict[str, dict], multitask: bool) -> str:
    if multitask:
        return f"mean dev error {100 * summary['error']:.2f}% (" + ", ".join(
            f"{name} {100 * r['error']:.2f}%" for name, r in reports.items()) + ")"
    return (f"dev error {100 * summary['error']:.2f}% (accuracy {100 * summary['accuracy']:.2f}%, "
            f"macro-F1 {summary['macro_f1']:.4f})")


def save_best(folder: Path, model: TaskClassifier, tasks, encoding, tokenizer, multitask: bool, config: dict) -> None:
    """best/: the classifier (every task's head for a multi-task run) with the run's config."""
    extra = {"train_config.json": json.dumps(config, indent=2) + "\n"}
    if multitask:
        save_multitask_classifier(folder, model, {t.name: t.labels for t in tasks}, encoding, tokenizer,
                                  tokenizer.vocab_file, extra)
    else:
        save_classifier(folder, model.classifier(tasks[0].name), tasks[0].labels, encoding, tokenizer,
                        tokenizer.vocab_file, extra)
