"""A fine-tuning run's results: the best model scored on dev and test (results.json), the learning
curves, and for a multi-task run stage 1's scores per task (multitask_results.json) and every
task's scores after each stage with their means (results.json)."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from minibert.checkpoints.classifier import load_classifier, store_thresholds
from minibert.data.features import encode_examples
from minibert.files import atomic_write_text
from minibert.finetune.selection import Scoring, predict
from minibert.finetune.tasks import Task
from minibert.training.multilabel_metrics import (
    choose_thresholds,
    cross_fitted_f1,
    label_names_per_text,
    multilabel_report,
)
from minibert.training.plots import plot_learning_curves
from minibert.training.problems import MULTI_LABEL_SCORES, problem
from minibert.training.run_context import RunContext


def score_best(context: RunContext, task: Task, eval_batch_size: int, multitask: bool, thresholds: str,
               dev_probabilities: torch.Tensor | None = None) -> dict:
    """best/'s classifier (its head for `task` when it holds every task's) on the task's dev and test
    splits. Test is predicted as prediction reads the folder (its tokenizer and encoding); so is dev,
    unless `dev_probabilities` gives the probabilities of the dev evaluation that saved best/ (the
    same weights, on the run's encoded dev split): then dev is not predicted again. A multi-label
    task's per-label thresholds are chosen on dev first (stored in best/ with --thresholds dev) and
    decide its dev and test labels."""
    saved = load_classifier(context.out / "best", task.name if multitask else "")
    saved.model.to(context.device)
    context.set_execution(saved.model.bert)
    scoring = Scoring(eval_batch_size, saved.encoding.hierarchical, saved.tokenizer.pad_id)
    splits = {name: split for name, split in {"dev": task.dev, "test": task.test}.items() if split is not None}
    head, scores = saved.model.head_config, {}
    for name, split in splits.items():
        if name == "dev" and dev_probabilities is not None:
            probabilities, gold = dev_probabilities, [doc.label for doc in task.dev_docs]
        else:
            docs = encode_examples(split.examples, split.labels, saved.tokenizer, saved.encoding)
            probabilities = predict(context, saved.model, docs, scoring, f"{name} {task.name}" if multitask else name)
            gold = [doc.label for doc in docs]
        if task.multi_label and name == "dev":
            tuned = tune_thresholds(context, task, gold, probabilities.numpy(), head.threshold, multitask, thresholds)
            scores.update(tuned)
            if thresholds == "dev":  # as best/ now stores them, and prediction reads them
                head = replace(head, thresholds=list(tuned["dev_chosen_thresholds"].values()))
        report = problem(task.multi_label).report(gold, probabilities, task.labels, head.decision_thresholds)
        scores.update({f"{name}_{k}": v for k, v in report.items()})
    return scores


def tune_thresholds(context: RunContext, task: Task, gold: list, probabilities, threshold: float, multitask: bool,
                    thresholds: str) -> dict:
    """A multi-label task's per-label thresholds that maximise each label's F1 on the dev
    `probabilities` (stored in best/ with --thresholds dev), the dev macro/micro-F1 at the global
    `threshold` and at those (optimistic: chosen and scored on the same texts) and cross-fitted
    (each half of dev decided by the thresholds chosen on the other half), and every dev text's gold
    and predicted labels in output_dir/dev_predictions[.TASK].jsonl."""
    chosen = choose_thresholds(probabilities, gold, threshold).tolist()
    at_global = multilabel_report(gold, probabilities, threshold, task.labels)
    at_chosen = multilabel_report(gold, probabilities, chosen, task.labels)
    cross_fitted = cross_fitted_f1(probabilities, gold, threshold)
    if context.is_main:
        if thresholds == "dev":
            store_thresholds(context.out / "best", task.name if multitask else None, chosen)
        rows = label_names_per_text(gold, probabilities, chosen if thresholds == "dev" else threshold, task.labels)
        name = f"dev_predictions.{task.name}.jsonl" if multitask else "dev_predictions.jsonl"
        atomic_write_text(context.out / name, "".join(json.dumps({"source": example.source, **row}, ensure_ascii=False)
                                                      + "\n" for example, row in zip(task.dev.examples, rows)))
    context.barrier()  # best/ holds the thresholds before any rank reads it again
    return {"threshold": threshold, "thresholds": thresholds,
            "dev_chosen_thresholds": dict(zip(task.labels, chosen)),
            **{f"dev_{avg}_f1_at_threshold": at_global[f"{avg}_f1"] for avg in ("macro", "micro")},
            **{f"dev_{avg}_f1_at_chosen_thresholds": at_chosen[f"{avg}_f1"] for avg in ("macro", "micro")},
            **{f"dev_{avg}_f1_cross_fitted": cross_fitted[f"{avg}_f1"] for avg in ("macro", "micro")}}


def single_task_results(context: RunContext, task: Task, state, records: list[dict], eval_batch_size: int,
                        thresholds: str, best_dev_probabilities: dict) -> dict:
    """results.json and learning_curves.png of a single-task run (rank 0 writes them);
    best_dev_probabilities: task -> best/'s dev probabilities where the run has them (Training's)."""
    selection = {"selection_metric": state.selection.metric} if task.multi_label else {}
    scores = score_best(context, task, eval_batch_size, False, thresholds, best_dev_probabilities.get(task.name))
    results = {"best_step": state.selection.best_step, "steps": state.step, "labels": task.labels, **selection,
               **context.provenance(), **scores}
    if context.is_main:
        atomic_write_text(context.out / "results.json", json.dumps(results, indent=2) + "\n")
        plot_learning_curves(records, context.out / "learning_curves.png")
    return results


def stage1_results(context: RunContext, tasks: list[Task], state, eval_batch_size: int, thresholds: str,
                   best_dev_probabilities: dict) -> dict:
    """Multi-task stage 1's best model on every task's dev and test split -> multitask_results.json."""
    results = {"best_step": state.selection.best_step, "steps": state.step,
               f"mean_dev_{state.selection.metric}": state.selection.best_score,
               "tasks": {t.name: {"labels": t.labels, **score_best(context, t, eval_batch_size, True, thresholds,
                                                                   best_dev_probabilities.get(t.name))}
                         for t in tasks}}
    if context.is_main:
        atomic_write_text(context.out / "multitask_results.json", json.dumps(results, indent=2) + "\n")
    return results


SUMMARY_KEYS = {False: ("dev_error", "test_error", "test_accuracy", "test_macro_f1"),  # single-label task
                True: ("dev_macro_f1", "dev_micro_f1", "test_macro_f1", "test_micro_f1", "test_subset_accuracy")}


def summary(per_task: dict) -> dict:
    """Each task's dev and test scores, and the means over tasks (error; macro-F1 where a task is
    multi-label, over the tasks that all have it)."""
    kinds = {task: "dev_hamming_loss" in scores for task, scores in per_task.items()}
    table = {task: {k: scores[k] for k in SUMMARY_KEYS[kinds[task]] if k in scores}
             for task, scores in per_task.items()}
    averaged = ("dev_error", "test_error") + (("dev_macro_f1", "test_macro_f1") if any(kinds.values()) else ())
    means = {f"mean_{k}": statistics.mean(scores[k] for scores in per_task.values())
             for k in averaged if per_task and all(k in scores for scores in per_task.values())}
    return {"tasks": table, **means}


def multitask_results(out: Path, tasks: list[Task], stage1: dict, stage2: dict) -> dict:
    """results.json of a multi-task run: every task after stage 1 and after stage 2, and the means."""
    results = {"tasks": [t.name for t in tasks], "multitask": summary(stage1["tasks"])}
    if stage2:
        results["stage2"] = summary(stage2)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def multi_label_lines(results: dict) -> list[str]:
    """A multi-label run's scores for the console: dev at both threshold rules, test, the worst labels."""
    rule = "thresholds chosen on dev" if results["thresholds"] == "dev" else f"threshold {results['threshold']}"
    lines = [f"best model (step {results['best_step']}, by dev {results['selection_metric']}): dev macro-F1 "
             f"{results['dev_macro_f1_at_threshold']:.4f} / micro-F1 {results['dev_micro_f1_at_threshold']:.4f} at "
             f"threshold {results['threshold']}, {results['dev_macro_f1_at_chosen_thresholds']:.4f} / "
             f"{results['dev_micro_f1_at_chosen_thresholds']:.4f} with thresholds chosen on dev "
             f"({results['dev_macro_f1_cross_fitted']:.4f} / {results['dev_micro_f1_cross_fitted']:.4f} "
             f"cross-fitted: each half of dev at the thresholds chosen on the other)"]
    for split in ("dev", "test") if "test_macro_f1" in results else ("dev",):
        lines.append(f"{split} ({rule}): " + ", ".join(f"{name.replace('_', ' ')} {results[f'{split}_{name}']:.4f}"
                                                       for name in MULTI_LABEL_SCORES)
                     + f" on {results[f'{split}_count']} examples")
        per_label = results[f"{split}_per_label"]
        worst = sorted(per_label, key=lambda name: per_label[name]["f1"])[:5]
        lines.append(f"{split} lowest F1: " + ", ".join(f"{name} {per_label[name]['f1']:.3f} "
                                                          f"(support {per_label[name]['support']})" for name in worst))
    return lines


def task_summary(row: dict) -> str:
    """One task's line of a multi-task run's summary (a multi-label task's has no error)."""
    if "dev_error" not in row:
        return ", ".join(f"{split} macro-F1 {row[f'{split}_macro_f1']:.4f}, micro-F1 {row[f'{split}_micro_f1']:.4f}"
                         for split in ("dev", "test") if f"{split}_macro_f1" in row)
    return ", ".join(f"{split} error {100 * row[f'{split}_error']:.2f}%" for split in ("dev", "test")
                     if f"{split}_error" in row)


def summary_lines(results: dict, output_dir: str | Path) -> list[str]:
    """What train.py prints at the end of a run."""
    out = Path(output_dir)
    if "multitask" not in results:
        if "dev_hamming_loss" in results:
            lines = multi_label_lines(results) + [f"dev predictions: {out / 'dev_predictions.jsonl'}"]
        else:
            lines = [f"best model (step {results['best_step']}): dev error {100 * results['dev_error']:.2f}%"]
        if "test_error" in results:
            lines.append(f"test error {100 * results['test_error']:.2f}% "
                         f"(accuracy {100 * results['test_accuracy']:.2f}%, macro-F1 {results['test_macro_f1']:.4f}) "
                         f"on {results['test_count']} examples")
        return lines + [f"model: {out / 'best'}  metrics: {out / 'results.json'}, {out / 'metrics.jsonl'}  "
                        f"plot: {out / 'learning_curves.png'}", f"predict: python predict.py {out / 'best'} FILE"]
    final = results.get("stage2", results["multitask"])
    lines = [f"{task}: {task_summary(row)}" for task, row in final["tasks"].items()]
    return lines + [f"models: {out / 'best'} (every task's head; predict.py --task NAME)"
                    + (f", {out / 'stage2'}/<task>/best" if "stage2" in results else "")
                    + f"  results: {out / 'results.json'}"]
