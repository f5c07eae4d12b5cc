"""Scoring during fine-tuning: a classifier on a set of encoded examples, the dev evaluation that
picks the best model (a multi-task run's mean dev error over its tasks), and best/ itself."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.checkpoints.classifier import save_classifier, save_multitask_classifier
from minibert.model.heads import BertClassifier, TaskClassifier
from minibert.training.distributed import eval_shard, gather_rows
from minibert.training.evaluation import predict_probabilities
from minibert.training.metrics_log import MetricsLog
from minibert.training.problems import METRICS, problem
from minibert.training.run_context import RunContext


@dataclass
class DevSelection:
    """The best model by a dev score (--selection_metric), and early stopping after `patience`
    evaluations without a better one."""

    best_score: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped: bool = False  # early stopping fired
    metric: str = "error"  # what best_score is (Selection.name)
    higher_is_better: bool = False

    def record(self, score: float, step: int, patience: int) -> bool:
        """Score one evaluation; True when it is the best so far (the model is then saved)."""
        better = self.best_score is None or (score > self.best_score if self.higher_is_better
                                             else score < self.best_score)
        if better:
            self.best_score, self.best_step, self.evals_without_improvement = score, step, 0
        else:
            self.evals_without_improvement += 1
        self.stopped = patience > 0 and self.evals_without_improvement >= patience
        return better


@dataclass(frozen=True)
class Selection:
    """What the best model is chosen by: `name` of every task's report, averaged over tasks. A
    multi-task run whose tasks select by different metrics (--selection_metric auto over single-
    and multi-label tasks) averages their costs instead (error, 1 - macro_f1: METRICS' cost), named
    "mean_cost", lower is better."""

    per_task: dict[str, str]  # task -> its report's metric

    @property
    def name(self) -> str:
        names = set(self.per_task.values())
        return names.pop() if len(names) == 1 else "mean_cost"

    @property
    def higher_is_better(self) -> bool:
        return self.name in METRICS and METRICS[self.name].higher_is_better

    def score(self, reports: dict[str, dict]) -> float:
        if self.name in METRICS:
            return statistics.mean(reports[task][self.name] for task in self.per_task)
        return statistics.mean(METRICS[name].cost(reports[task][name]) for task, name in self.per_task.items())


def selection_of(metric: str, kinds: dict[str, bool]) -> Selection:
    """--selection_metric over the run's tasks (task -> multi-label); auto: each task's kind's default."""
    return Selection({task: metric if metric != "auto" else problem(multi).default_metric
                      for task, multi in kinds.items()})


@dataclass(frozen=True)
class Scoring:
    """How a classifier is run over examples to score it."""

    batch_size: int  # examples per forward pass
    hierarchical: bool  # texts are chunked and pooled (paper §5.3.1)
    pad_id: int  # the tokenizer's [PAD] id


def predict(context: RunContext, classifier: BertClassifier, docs, scoring: Scoring, desc: str) -> torch.Tensor:
    """Probabilities (N, K) of `docs`; under torchrun each rank predicts its share and all ranks get every row."""
    mine = eval_shard(len(docs), context.setup)
    with tqdm(total=len(mine), desc=desc, leave=False, unit="ex", disable=not context.is_main) as bar:
        probabilities = predict_probabilities(classifier, [docs[i] for i in mine], scoring.batch_size, context.device,
                                              context.autocast(), scoring.hierarchical, bar, pad_id=scoring.pad_id)
    return gather_rows(probabilities, mine, len(docs), context.setup)


def evaluate(context: RunContext, classifier: BertClassifier, docs, label_names: list[str], scoring: Scoring,
             desc: str) -> tuple[dict, torch.Tensor]:
    """The task's report (Problem.report) on `docs`, decided as the classifier's head says, and the
    probabilities (N, K) it was made from."""
    head = classifier.head_config
    probabilities = predict(context, classifier, docs, scoring, desc)
    return problem(head.multi_label).report([doc.label for doc in docs], probabilities, label_names,
                                            head.decision_thresholds), probabilities


def scores(report: dict, multi_label: bool) -> dict:
    """The report's scalar scores (Problem.scores), as a metrics.jsonl record holds them."""
    return {name: report[name] for name in problem(multi_label).scores}


def mean_scores(reports: dict[str, dict]) -> dict:
    """A multi-task run's dev summary: the mean of every score its tasks share (error and macro-F1
    for single-label tasks, accuracy = 1 - the mean error)."""
    if all("error" in r for r in reports.values()):
        error = statistics.mean(r["error"] for r in reports.values())
        return {"error": error, "accuracy": 1 - error,
                "macro_f1": statistics.mean(r["macro_f1"] for r in reports.values())}
    shared = [name for name in METRICS if all(name in r for r in reports.values())]
    return {name: statistics.mean(r[name] for r in reports.values()) for name in shared}


@dataclass(frozen=True)
class DevScores:
    """One dev evaluation: the score the best model is chosen by, its console line, and each task's
    dev probabilities (task -> (N, K)), which score the model again if it is kept as best/."""

    score: float
    line: str
    probabilities: dict[str, torch.Tensor]


def evaluate_dev(context: RunContext, model: TaskClassifier, tasks, scoring: Scoring, log: MetricsLog,
                 step: int, epoch: int, multitask: bool, train_eval: dict, selection: Selection) -> DevScores:
    """Score every task's dev split (and the training subset of Figure 2: train_eval, task -> docs)
    and log them; returns the score the best model is chosen by (`selection`), its line for the
    console and the dev probabilities."""
    reports, probabilities = {}, {}
    for task in tasks:
        tag = {"task": task.name} if multitask else {}
        classifier = model.classifier(task.name)
        if task.name in train_eval:
            report, _ = evaluate(context, classifier, train_eval[task.name], task.labels, scoring,
                                 f"train error {task.name}" if multitask else "train error")
            log.write(step=step, epoch=epoch, split="train_eval", **tag, **scores(report, task.multi_label))
        reports[task.name], probabilities[task.name] = evaluate(context, classifier, task.dev_docs, task.labels,
                                                                scoring, f"dev {task.name}" if multitask else "dev")
        if multitask:
            log.write(step=step, epoch=epoch, split="dev_task", **tag, **scores(reports[task.name], task.multi_label))
    summary = mean_scores(reports) if multitask else scores(reports[tasks[0].name], tasks[0].multi_label)
    score = selection.score(reports)
    extra = {selection.name: score} if selection.name not in summary else {}
    log.write(step=step, epoch=epoch, split="dev", **summary, **extra)
    return DevScores(score, dev_line(summary, reports, multitask, selection.name, score), probabilities)


def task_line(report: dict) -> str:
    """One task's dev scores for the console."""
    if "hamming_loss" in report:
        return (f"macro-F1 {report['macro_f1']:.4f}, micro-F1 {report['micro_f1']:.4f}, example-F1 "
                f"{report['example_f1']:.4f}, subset accuracy {100 * report['subset_accuracy']:.2f}%")
    return f"error {100 * report['error']:.2f}%"


def dev_line(summary: dict, reports: dict[str, dict], multitask: bool, metric: str, score: float) -> str:
    if multitask and metric == "error":
        return f"mean dev error {100 * summary['error']:.2f}% (" + ", ".join(
            f"{name} {100 * r['error']:.2f}%" for name, r in reports.items()) + ")"
    if multitask:
        return f"dev {metric} {score:.4f} (" + "; ".join(f"{name} {task_line(r)}" for name, r in reports.items()) + ")"
    if "hamming_loss" in summary:
        return f"dev {task_line(summary)}, Hamming loss {summary['hamming_loss']:.4f}"
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
