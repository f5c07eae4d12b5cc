"""A fine-tuning run's results: the best model scored on dev and test (results.json), the learning
curves, and for a multi-task run stage 1's scores per task (multitask_results.json) and every
task's scores after each stage with their means (results.json)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from minibert.checkpoints.classifier import load_classifier
from minibert.data.features import encode_examples
from minibert.finetune.selection import Scoring, evaluate
from minibert.finetune.tasks import Task
from minibert.files import atomic_write_text
from minibert.training.plots import plot_learning_curves
from minibert.training.run_context import RunContext


def score_best(context: RunContext, task: Task, eval_batch_size: int, multitask: bool) -> dict:
    """best/'s classifier (its head for `task` when it holds every task's) on the task's dev and test
    splits, as prediction reads it: tokenizer and encoding from the folder."""
    saved = load_classifier(context.out / "best", task.name if multitask else "")
    saved.model.to(context.device)
    context.set_execution(saved.model.bert)
    scores = {}
    for name, split in {"dev": task.dev, "test": task.test}.items():
        if split is None:
            continue
        docs = encode_examples(split.examples, split.labels, saved.tokenizer, saved.encoding)
        scoring = Scoring(eval_batch_size, saved.encoding.hierarchical, saved.tokenizer.pad_id)
        report = evaluate(context, saved.model, docs, task.labels, scoring, f"{name} {task.name}" if multitask else name)
        scores.update({f"{name}_{k}": v for k, v in report.items()})
    return scores


def single_task_results(context: RunContext, task: Task, state, records: list[dict], eval_batch_size: int) -> dict:
    """results.json and learning_curves.png of a single-task run (rank 0 writes them)."""
    results = {"best_step": state.selection.best_step, "steps": state.step, "labels": task.labels,
               **context.provenance(), **score_best(context, task, eval_batch_size, multitask=False)}
    if context.is_main:
        atomic_write_text(context.out / "results.json", json.dumps(results, indent=2) + "\n")
        plot_learning_curves(records, context.out / "learning_curves.png")
    return results


def stage1_results(context: RunContext, tasks: list[Task], state, eval_batch_size: int) -> dict:
    """Multi-task stage 1's best model on every task's dev and test split -> multitask_results.json."""
    results = {"best_step": state.selection.best_step, "steps": state.step,
               "mean_dev_error": state.selection.best_dev_error,
               "tasks": {t.name: {"labels": t.labels, **score_best(context, t, eval_batch_size, multitask=True)}
                         for t in tasks}}
    if context.is_main:
        atomic_write_text(context.out / "multitask_results.json", json.dumps(results, indent=2) + "\n")
    return results


def summary(per_task: dict) -> dict:
    """Each task's dev and test scores, and the means over tasks."""
    keys = ("dev_error", "test_error", "test_accuracy", "test_macro_f1")
    table = {task: {k: scores[k] for k in keys if k in scores} for task, scores in per_task.items()}
    means = {f"mean_{k}": statistics.mean(row[k] for row in table.values())
             for k in ("dev_error", "test_error") if table and all(k in row for row in table.values())}
    return {"tasks": table, **means}


def multitask_results(out: Path, tasks: list[Task], stage1: dict, stage2: dict) -> dict:
    """results.json of a multi-task run: every task after stage 1 and after stage 2, and the means."""
    results = {"tasks": [t.name for t in tasks], "multitask": summary(stage1["tasks"])}
    if stage2:
        results["stage2"] = summary(stage2)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def summary_lines(results: dict, output_dir: str | Path) -> list[str]:
    """What train.py prints at the end of a run."""
    out = Path(output_dir)
    if "multitask" not in results:
        lines = [f"best model (step {results['best_step']}): dev error {100 * results['dev_error']:.2f}%"]
        if "test_error" in results:
            lines.append(f"test error {100 * results['test_error']:.2f}% (accuracy {100 * results['test_accuracy']:.2f}%, "
                         f"macro-F1 {results['test_macro_f1']:.4f}) on {results['test_count']} examples")
        return lines + [f"model: {out / 'best'}  metrics: {out / 'results.json'}, {out / 'metrics.jsonl'}  "
                        f"plot: {out / 'learning_curves.png'}", f"predict: python predict.py {out / 'best'} FILE"]
    final = results.get("stage2", results["multitask"])
    lines = [f"{task}: " + ", ".join(f"{split} error {100 * row[f'{split}_error']:.2f}%" for split in ("dev", "test")
                                     if f"{split}_error" in row) for task, row in final["tasks"].items()]
    return lines + [f"models: {out / 'best'} (every task's head; predict.py --task NAME)"
                    + (f", {out / 'stage2'}/<task>/best" if "stage2" in results else "")
                    + f"  results: {out / 'results.json'}"]

