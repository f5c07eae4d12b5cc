"""A whole fine-tuning run: every check first, then the one loop (minibert.finetune.loop), then the
results. A multi-task run (paper §4.3, §5.5: BERT-MFiT-FiT) is stage 1 over all tasks, then stage 2:
the same loop again on each task alone, from stage 1's best model with that task's head (or a fresh
one, --stage2_head), at a lower learning rate, in output_dir/stage2/<task>/ (a finished one is kept,
an interrupted one resumed).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from minibert.data.multitask import TaskFiles
from minibert.finetune.config import FinetuneConfig, MultiTaskOptions, check_options, check_problem_options
from minibert.finetune.loop import FitHooks, Training, fit, prepare_training
from minibert.finetune.model_setup import load_init, load_tokenizer, new_classifier, stage2_classifier, text_encoding
from minibert.finetune.results import multitask_results, single_task_results, stage1_results, task_summary
from minibert.finetune.tasks import Task, data_sha256, encode_task, ensure_default_data, read_task, task_files
from minibert.model.bert import num_parameters
from minibert.training.last_checkpoint import check_output_dir, find_run
from minibert.training.plots import plot_learning_curves
from minibert.training.run_context import RunContext, open_run
from minibert.training.run_folder import FINE_TUNING


def finetune(cfg: FinetuneConfig, hooks: FitHooks | None = None) -> dict:
    """Fine-tune as `cfg` says; returns results.json's contents (on rank 0 of a torchrun job; {} on
    the other ranks). Bad options, data or models raise a MinibertError (ConfigError, DataError,
    CheckpointError) before the output folder is touched."""
    check_options(cfg)
    encoding = text_encoding(cfg.text)
    files = task_files(cfg)
    context = open_run(cfg.machine, cfg.run.output_dir, cfg.run.resume, cfg.run.overwrite_output_dir,
                       run_inputs(cfg), FINE_TUNING)
    # "auto" precision and padding as resolved: config.json, results.json and --resume see these.
    cfg = replace(cfg, machine=replace(cfg.machine, precision=context.precision, padding=context.padding))
    context.seed(cfg.run.seed)
    if context.is_main:
        ensure_default_data(cfg.data, context.say)
    context.barrier()
    context.say(f"precision {context.precision}, {context.padding} encoder on {context.device}")
    pretrained = load_init(cfg.init, cfg.text, cfg.classifier, context.say)
    tokenizer = load_tokenizer(pretrained, cfg.text, context.say)
    start = time.time()
    splits = [read_task(f, cfg.data, cfg.run.seed, context.say) for f in files]
    multitask = cfg.multitask.enabled
    tasks = [encode_task(f.name, s, tokenizer, encoding, task_say(context, f.name, multitask), context.token_cache())
             for f, s in zip(files, splits)]
    check_problem_options(cfg, {t.name: t.multi_label for t in tasks})
    model = new_classifier(pretrained, cfg.classifier, tasks, cfg.multilabel.threshold)
    for t in tasks:
        task_say(context, t.name, multitask)(f"{len(t.train_docs)} train / {len(t.dev_docs)} dev examples, "
                                             f"{len(t.labels)} classes ({', '.join(t.labels)})")
    context.say(f"tokenized in {time.time() - start:.1f}s; model {num_parameters(model) / 1e6:.1f}M parameters"
                + (f"; {context.setup.world_size} processes" if context.setup.enabled else ""))
    training = train_tasks(context, cfg, model, tasks, tokenizer, encoding, data_sha256(files), hooks)
    if training.signalled:
        return stopped(context, training, training.signalled)
    if not multitask:
        results = single_task_results(context, tasks[0], training.state, training.log.records,
                                      cfg.evaluation.eval_batch_size, cfg.multilabel.thresholds,
                                      training.best_dev_probabilities)
    else:
        results = multitask_stages(context, cfg, training, files, tokenizer, encoding, hooks)
    context.close()
    return results if context.is_main else {}


def task_say(context: RunContext, name: str, multitask: bool):
    """context.say for messages about one task: a multi-task run names the task."""
    return (lambda text: context.say(f"{name}: {text}")) if multitask else context.say


def multitask_stages(context: RunContext, cfg: FinetuneConfig, training: Training, files: list[TaskFiles],
                     tokenizer, encoding, hooks: FitHooks | None) -> dict:
    """After stage 1 (`training`): its scores, then stage 2 on each task; results.json's contents."""
    stage1 = finish_stage1(context, cfg, training)
    stage2 = {}
    for t, f in zip(training.tasks, files) if cfg.multitask.stage2_epochs else ():
        stage2[t.name] = run_stage2(context, cfg, t, f, tokenizer, encoding, hooks)
        if stage2[t.name].get("stopped"):
            return stopped(context, None, stage2[t.name]["signal"])
    results = multitask_results(context.out, training.tasks, stage1, stage2) if context.is_main else {}
    context.barrier()
    return results


def stopped(context: RunContext, training: Training | None, signal_number: int) -> dict:
    """A run a signal stopped: last/ is saved; the result says so (train.py then exits 128 + the signal's
    number: 143 for SIGTERM, 130 for SIGINT)."""
    context.close()
    return {"stopped": True, "signal": signal_number, "step": training.state.step if training else None}


def run_inputs(cfg: FinetuneConfig) -> list[tuple[str, str]]:
    """(option, path) of what the run reads: the output folder may not be, or hold, any of them."""
    data, multi = cfg.data, cfg.multitask
    named = [("--init", cfg.init if cfg.init != "minilm" else ""), ("--tasks_file", multi.tasks_file)]
    if multi.tasks:
        return named + [("--tasks_dir", f"{multi.tasks_dir}/{name.strip()}") for name in multi.tasks.split(",")]
    return named + [("--train_file", data.train_file), ("--dev_file", data.dev_file), ("--test_file", data.test_file)]


def train_tasks(context: RunContext, cfg: FinetuneConfig, model, tasks, tokenizer, encoding, data_digest: str,
                hooks: FitHooks | None) -> Training:
    """The model on its device, a dropout stream per rank, then the loop; returns the finished Training."""
    model.to(context.device)
    context.set_execution(model.bert)
    context.seed_rank(cfg.run.seed)
    training = prepare_training(context, cfg, model, tasks, tokenizer, encoding, data_digest)
    fit(context, cfg, training, hooks or FitHooks())
    return training


def finish_stage1(context: RunContext, cfg: FinetuneConfig, training: Training) -> dict:
    """Stage 1's scores (multitask_results.json); once written, last/ records that stage 1 is done,
    so a --resume goes straight on with stage 2."""
    if training.state.stage1_done:
        return json.loads((context.out / "multitask_results.json").read_text(encoding="utf-8"))
    stage1 = stage1_results(context, training.tasks, training.state, cfg.evaluation.eval_batch_size,
                            cfg.multilabel.thresholds, training.best_dev_probabilities)
    training.state.stage1_done = True
    if context.is_main:
        plot_learning_curves(training.log.records, context.out / "learning_curves.png")
    opt = training.optimisation
    context.checkpoint(training.model, opt.optimizer, opt.scheduler, opt.scaler, training.state)
    return stage1


def run_stage2(context: RunContext, cfg: FinetuneConfig, task: Task, files: TaskFiles, tokenizer, encoding,
               hooks: FitHooks | None) -> dict:
    """One task alone from stage 1's best model (the shared encoder and, with --stage2_head kept, its
    own head; fresh: a new head), at stage2_lr_factor times the learning rate, for stage2_epochs, with
    stage2_batch_size and stage2_layer_decay where set, in output_dir/stage2/<task>/."""
    folder = context.out / "stage2" / task.name
    if cfg.run.resume and (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text(encoding="utf-8"))
    resume = cfg.run.resume and find_run(folder / "last") is not None
    stage_cfg = replace(
        cfg, data=replace(cfg.data, train_file=files.train, dev_file=files.dev, test_file=files.test),
        optim=replace(cfg.optim, learning_rate=cfg.optim.learning_rate * cfg.multitask.stage2_lr_factor,
                      epochs=cfg.multitask.stage2_epochs,
                      batch_size=cfg.multitask.stage2_batch_size or cfg.optim.batch_size,
                      layer_decay=cfg.multitask.stage2_layer_decay or cfg.optim.layer_decay),
        run=replace(cfg.run, output_dir=str(folder), resume=resume, overwrite_output_dir=not resume),
        multitask=MultiTaskOptions())
    context.say(f"stage 2: {task.name} from the multi-task model at lr {stage_cfg.optim.learning_rate:.2e}")
    check_output_dir(folder, resume, overwrite=True)
    stage = replace(context, out=folder)
    stage.seed(cfg.run.seed)
    model = stage2_classifier(context.out / "best", task, cfg.multitask.stage2_head, cfg.classifier.head_init,
                              cfg.run.seed)
    if hooks is not None and hooks.stage2_start is not None:
        hooks.stage2_start(task.name, model)
    training = train_tasks(stage, stage_cfg, model, [task], tokenizer, encoding, data_sha256([files]), hooks)
    if training.signalled:
        return {"stopped": True, "signal": training.signalled}
    results = single_task_results(stage, task, training.state, training.log.records, cfg.evaluation.eval_batch_size,
                                  cfg.multilabel.thresholds, training.best_dev_probabilities)
    stage.say(f"stage 2: {task.name}: {task_summary(results)}")
    return results
