"""Scoring during fine-tuning: a model on a set of encoded examples, the dev evaluation that picks
the best model (a multi-task run's mean dev error over its tasks), and best/ itself."""

from __future__ import annotations

import json
import statistics

from tqdm import tqdm

from minibert.checkpoints.classifier import save_classifier, save_multitask_classifier
from minibert.finetune.model_setup import classifier_of
from minibert.finetune.tasks import SINGLE
from minibert.training.distributed import eval_shard, gather_rows
from minibert.training.evaluation import predict_probabilities
from minibert.training.metrics import classification_report
from minibert.training.run_context import RunContext


def evaluate(context: RunContext, model, docs, label_names: list[str], batch_size: int, hierarchical: bool,
             pad_id: int, desc: str) -> dict:
    """Scores on `docs`; under torchrun each rank predicts its share and all ranks get every row."""
    mine = eval_shard(len(docs), context.setup)
    with tqdm(total=len(mine), desc=desc, leave=False, unit="ex", disable=not context.is_main) as bar:
        probabilities = predict_probabilities(model, [docs[i] for i in mine], batch_size, context.device,
                                              context.autocast(), hierarchical, bar, pad_id=pad_id)
    probabilities = gather_rows(probabilities, mine, len(docs), context.setup)
    predicted = probabilities.argmax(-1).tolist() if len(docs) else []
    return classification_report([doc.label for doc in docs], predicted, label_names)


def evaluate_dev(context: RunContext, cfg, run, epoch: int) -> None:
    """Score every task's dev split (and the training subset of Figure 2), log it, keep the best model."""
    state, single = run.state, run.tasks[0].name == SINGLE
    reports = {}
    for task in run.tasks:
        tag = {} if single else {"task": task.name}
        if task.name in run.train_eval:
            report = score_task(context, cfg, run, task, run.train_eval[task.name], "train error")
            run.log.write(step=state.step, epoch=epoch, split="train_eval", **tag, **scores(report))
        reports[task.name] = report = score_task(context, cfg, run, task, task.dev_docs, "dev")
        if not single:
            run.log.write(step=state.step, epoch=epoch, split="dev_task", **tag, **scores(report))
    if single:
        summary = scores(reports[SINGLE])
        line = (f"dev error {100 * summary['error']:.2f}% (accuracy {100 * summary['accuracy']:.2f}%, "
                f"macro-F1 {summary['macro_f1']:.4f})")
    else:
        error = statistics.mean(r["error"] for r in reports.values())
        summary = {"error": error, "accuracy": 1 - error,
                   "macro_f1": statistics.mean(r["macro_f1"] for r in reports.values())}
        line = f"mean dev error {100 * error:.2f}% (" + ", ".join(
            f"{name} {100 * r['error']:.2f}%" for name, r in reports.items()) + ")"
    run.log.write(step=state.step, epoch=epoch, split="dev", **summary)
    better = state.record(summary["error"], state.step, cfg.evaluation.early_stopping)
    context.say(f"step {state.step}: {line}" + (" - best so far, saved" if better else ""))
    if better and context.is_main:
        save_best(context, cfg, run)


def score_task(context: RunContext, cfg, run, task, docs, what: str) -> dict:
    """One task's classifier (a multi-task model's view) on `docs`."""
    return evaluate(context, classifier_of(run.model, task.name), docs, task.labels, cfg.evaluation.eval_batch_size,
                    cfg.text.hierarchical, run.tokenizer.pad_id, f"{what} {task.name}".strip())


def scores(report: dict) -> dict:
    return {"error": report["error"], "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def save_best(context: RunContext, cfg, run) -> None:
    """best/: the classifier (every task's head for a multi-task run) with its config."""
    extra = {"train_config.json": json.dumps(cfg.flat(), indent=2) + "\n"}
    folder, vocab = context.out / "best", run.tokenizer.vocab_file
    if run.tasks[0].name == SINGLE:
        save_classifier(folder, run.model, run.tasks[0].labels, run.encoding, run.tokenizer, vocab, extra)
    else:
        save_multitask_classifier(folder, run.model, {t.name: t.labels for t in run.tasks}, run.encoding,
                                  run.tokenizer, vocab, extra)
