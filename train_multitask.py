"""Multi-task fine-tuning (paper §4.3 and §5.5, Table 7: BERT-MFiT-FiT), run by train.py --tasks.

    python train.py --tasks imdb,yelp_polarity,ag_news,dbpedia --init uncased_L-12_H-768_A-12 \
        --max_seq_length 512 --learning_rate 2e-5 --layer_decay 0.95 --output_dir runs/mfit

Stage 1 trains one shared encoder with a head per task: every batch comes from one task, an epoch
lists every task's batches and shuffles them (MT-DNN; --task_temperature samples instead), and the
best model is the one with the lowest mean dev error over the tasks. Stage 2 fine-tunes each task
alone from that model, keeping its head, with a lower learning rate (--stage2_lr_factor,
--stage2_epochs): a train.py run per task in output_dir/stage2/<task>/.

output_dir holds best/ (the multi-task model with every head; predict.py --task NAME uses one),
last/ (for --resume), metrics.jsonl (records carry their task), multitask_results.json (stage 1's
dev and test scores per task), stage2/<task>/ and results.json (every task's scores after each
stage, and their means). All single-task options apply to every task (truncation, hierarchical,
heads, layer decay, schedules, precision, few-shot subsets per task, resume, torchrun); not
supported: --compile. Under torchrun every process lists the same mixed epoch (same seed), so all
ranks train the same task at each step, each on its slice of that task's global batch.
"""

import json
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import train
from minibert.checkpoints.classifier import load_classifier, save_multitask_classifier
from minibert.checkpoints.formats import load_state
from minibert.data.batching import length_grouped_batches
from minibert.data.features import cap_chunks, collate, encode_examples, model_inputs
from minibert.data.multitask import epoch_schedule, read_tasks_file, task_counts, tasks_from_names
from minibert.data.splits import few_shot_subset
from minibert.errors import ConfigError
from minibert.files import atomic_write_text, sha256_file
from minibert.model.heads import HeadConfig, MultiTaskClassifier
from minibert.text.tokenization import FullTokenizer
from minibert.training.distributed import (Distributed, all_reduce_sum, barrier, device_for, gather_objects,
                                           init_distributed, no_sync, shard_batches, shutdown)
from minibert.training.metrics_log import LossWindow, MetricsLog
from minibert.training.optimization import optimizer_step
from minibert.training.plots import plot_learning_curves
from minibert.training.precision import autocast, resolve_device
from minibert.training.run_state import capture_rng, find_run, load_run, save_run

# The paper fine-tunes each task again "with a lower learning rate" and gives no value. Half the
# multi-task rate (1e-5 after 2e-5) keeps stage 2 inside the range Table 4 found safe for BERT-base
# while still moving the head and the top layers within one epoch; a smaller factor mostly
# reproduces the multi-task model.
STAGE2_OPTIONS = ("stage2_epochs", "stage2_lr_factor")


@dataclass
class Task:
    """One task's data, read and encoded at the start."""

    name: str
    labels: list[str]
    train_docs: list
    dev: train.Split
    test: train.Split | None
    dev_docs: list = field(default_factory=list)


@dataclass
class MultiTaskState:
    """Where stage 1 stands; saved in last/ and restored by --resume."""

    step: int = 0
    best_dev_error: float | None = None  # the mean over tasks
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped: bool = False
    stage1_done: bool = False
    window_loss: float = 0.0
    window_batches: int = 0
    data_sha256: str = ""
    world_size: int = 1  # processes (torchrun); a resume needs as many
    config: dict = field(default_factory=dict)


def resolve_tasks(cfg: train.TrainConfig):
    if cfg.tasks and cfg.tasks_file:
        raise ConfigError("give --tasks or --tasks_file, not both")
    return read_tasks_file(cfg.tasks_file) if cfg.tasks_file else tasks_from_names(cfg.tasks, cfg.tasks_dir)


def check_multitask_options(cfg: train.TrainConfig) -> None:
    rules = [("task_temperature", cfg.task_temperature > 0, "positive"),
             ("stage2_epochs", cfg.stage2_epochs >= 0, "at least 0 (0 = no second stage)"),
             ("stage2_lr_factor", 0 < cfg.stage2_lr_factor <= 1, "in (0, 1]")]
    for name, ok, requirement in rules:
        if not ok:
            raise ConfigError(f"--{name} {getattr(cfg, name)}: must be {requirement}")
    if cfg.compile:
        raise ConfigError("--compile is not supported with --tasks")
    if cfg.init_task:
        raise ConfigError("--init_task starts a single-task run from a multi-task model; it does not go with --tasks")


def read_task(cfg: train.TrainConfig, files, tokenizer, encoding) -> Task:
    """A task's splits, with the few-shot subset of its training split when asked for."""
    task_cfg = replace(cfg, train_file=files.train, dev_file=files.dev, test_file=files.test)
    examples, ids, labels = train.read_split(task_cfg, files.train, None)
    if cfg.train_count or cfg.train_fraction < 1:
        pairs = few_shot_subset(list(zip(examples, ids)), fraction=None if cfg.train_count else cfg.train_fraction,
                                count=cfg.train_count or None, seed=cfg.seed, key=lambda pair: pair[1])
        examples, ids = [p[0] for p in pairs], [p[1] for p in pairs]
    dev = train.Split(files.dev, *train.read_split(task_cfg, files.dev, labels)[:2])
    test = train.Split(files.test, *train.read_split(task_cfg, files.test, labels)[:2]) if files.test else None
    train_docs = encode_examples(examples, ids, tokenizer, encoding)
    if cfg.hierarchical and cfg.max_chunks == 0:  # as train.py: bounded memory for very long texts
        train_docs, message = cap_chunks(train_docs, [e.source for e in examples], train.TRAIN_CHUNK_CAP)
        if message:
            print(f"note: {files.name}: {message}")
    task = Task(files.name, list(labels.names), train_docs, dev, test)
    task.dev_docs = encode_examples(dev.examples, dev.labels, tokenizer, encoding)
    return task


def data_sha256(task_files) -> str:
    return "".join(sha256_file(path) for files in task_files for path in (files.train, files.dev))


def main(cfg: train.TrainConfig) -> dict:
    # Checks first: options, tasks, the output folder, the model and every split.
    train.check_options(cfg)
    check_multitask_options(cfg)
    task_files = resolve_tasks(cfg)
    out = Path(cfg.output_dir)
    train.check_output_dir(cfg, out)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    autocast(device, cfg.precision)
    setup = init_distributed(device.type)  # one process, or this process's rank under torchrun
    device = device_for(setup, device)
    say = tqdm.write if setup.is_main else (lambda text: None)  # rank 0 speaks for all
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    pretrained = train.load_init(cfg, say)
    tokenizer = FullTokenizer(pretrained.vocab_file, cfg.do_lower_case, cfg.tokenizer_variant)
    encoding = train.text_encoding(cfg)
    start = time.time()
    tasks = [read_task(cfg, files, tokenizer, encoding) for files in task_files]
    pooler = train.resolve_pooler(cfg.pooler, cfg.layers, pretrained.config.num_hidden_layers)
    heads = {t.name: HeadConfig(len(t.labels), cfg.head, cfg.layers, cfg.layer_combine, pooler, cfg.chunk_pooling,
                                cfg.dropout, cfg.lstm_size, cfg.attention_hops, cfg.attention_size) for t in tasks}
    model = MultiTaskClassifier(pretrained.config, heads)
    load_state(model.bert, pretrained.state, str(pretrained.source))  # every encoder weight, strictly
    for t in tasks:
        say(f"task {t.name}: {len(t.train_docs)} train / {len(t.dev_docs)} dev examples, {len(t.labels)} classes")
    say(f"tokenized in {time.time() - start:.1f}s" + (f"; {setup.world_size} processes" if setup.enabled else ""))
    model.to(device)
    model.bert.padding = cfg.padding  # resolved by train.main
    if setup.enabled:
        torch.manual_seed(cfg.seed + 1_000_003 * setup.rank)  # a dropout stream per rank, as in train.py

    # Optimisation over the mixed epoch: its length is the sum of all tasks' batches.
    def task_batches(epoch: int) -> dict[str, list[list[int]]]:
        """Each task's batches of this process: its rank's slice of global batches (train.epoch_batches)."""
        return {t.name: shard_batches(length_grouped_batches([d.length for d in t.train_docs],
                                                             cfg.batch_size * setup.world_size,
                                                             seed=cfg.seed + epoch + 7919 * i), setup)
                for i, t in enumerate(tasks)}

    batches_per_epoch = sum(task_counts({k: len(v) for k, v in task_batches(0).items()}).values())
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    optimizer, scheduler, scaler = train.build_optimisation(cfg, model, cfg.epochs * steps_per_epoch, device)
    weights = {t.name: train.class_weights([d.label for d in t.train_docs], len(t.labels)).to(device)
               for t in tasks} if cfg.class_weighted_loss else {}

    state = MultiTaskState(data_sha256=data_sha256(task_files), world_size=setup.world_size, config=asdict(cfg))
    if cfg.resume:
        state = resume(cfg, out, model, optimizer, scheduler, scaler, state, setup)
    if setup.is_main:
        train.start_output_dir(cfg, out)
    barrier(setup)
    log = MetricsLog(out / "metrics.jsonl" if setup.is_main else None, state.step if cfg.resume else None)
    window = LossWindow(state.window_loss, state.window_batches)
    views = {t.name: model.task_classifier(t.name) for t in tasks}  # shared modules, for evaluation

    def evaluate_dev(epoch: int) -> None:
        errors = []
        for t in tasks:
            report = train.evaluate(views[t.name], t.dev_docs, t.labels, cfg, device, tokenizer.pad_id,
                                    f"dev {t.name}", setup)
            log.write(step=state.step, epoch=epoch, split="dev_task", task=t.name, error=report["error"],
                      accuracy=report["accuracy"], macro_f1=report["macro_f1"])
            errors.append((report["error"], report["macro_f1"]))
        train.train_mode(cfg, model)
        mean_error = statistics.mean(e for e, _ in errors)
        log.write(step=state.step, epoch=epoch, split="dev", error=mean_error, accuracy=1 - mean_error,
                  macro_f1=statistics.mean(f for _, f in errors))
        better = state.best_dev_error is None or mean_error < state.best_dev_error
        say(f"step {state.step}: mean dev error {100 * mean_error:.2f}% ("
                   + ", ".join(f"{t.name} {100 * e:.2f}%" for t, (e, _) in zip(tasks, errors)) + ")"
                   + (" - best so far, saved" if better else ""))
        if better:
            state.best_dev_error, state.best_step, state.evals_without_improvement = mean_error, state.step, 0
            if setup.is_main:
                save_multitask_classifier(out / "best", model, {t.name: t.labels for t in tasks}, encoding, tokenizer,
                                          tokenizer.vocab_file,
                                          {"train_config.json": json.dumps(asdict(cfg), indent=2) + "\n"})
        else:
            state.evals_without_improvement += 1
        state.stopped = cfg.early_stopping > 0 and state.evals_without_improvement >= cfg.early_stopping

    docs = {t.name: t.train_docs for t in tasks}
    for epoch in range(state.step // steps_per_epoch, cfg.epochs):
        if state.stopped or state.stage1_done:
            break
        train.set_trainable(cfg, model, epoch)
        train.train_mode(cfg, model)
        train_model = train.wrap_for_training(cfg, model, setup, device)  # DDP under torchrun
        listed = epoch_schedule(task_batches(epoch), cfg.seed, epoch, cfg.task_temperature)
        # One optimizer step = grad_accum_steps micro-batches, each of one task.
        steps = [listed[i:i + cfg.grad_accum_steps] for i in range(0, len(listed), cfg.grad_accum_steps)]
        first = state.step - epoch * steps_per_epoch
        bar = tqdm(total=len(listed), initial=first * cfg.grad_accum_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="batch", disable=not setup.is_main)
        window_start, window_examples = time.time(), 0
        for s in range(first, len(steps)):
            for m, (task, micro_batch) in enumerate(steps[s]):
                batch = collate([docs[task][i] for i in micro_batch], cfg.hierarchical, tokenizer.pad_id)
                with no_sync(train_model, last_micro_batch=m + 1 == len(steps[s])):
                    with autocast(device, cfg.precision):
                        logits = train_model(task, **model_inputs(batch, device))
                    loss = F.cross_entropy(logits.float(), batch["labels"].to(device), weight=weights.get(task))
                    if cfg.head == "bilstm_attention" and cfg.attention_penalty:
                        loss = loss + cfg.attention_penalty * model.heads[task].penalty  # Lin et al. (2017) §2.2
                    scaler.scale(loss / len(steps[s])).backward()  # the step's gradient is the micro-batches' mean
                window.add(loss, state.step + 1)
                window_examples += len(micro_batch)
                bar.update(1)
            # Gradients are cleared to None, not zero: the other tasks' heads stay untouched.
            lr = optimizer_step(model, optimizer, scheduler, scaler, cfg.max_grad_norm, cfg.clip_mode)
            state.step += 1
            end_of_epoch = s + 1 == len(steps)
            if state.step % cfg.log_every == 0 or end_of_epoch:
                speed = window_examples * setup.world_size / (time.time() - window_start)
                mean_loss = window.mean(state.step, lambda sums: all_reduce_sum(sums, setup))
                log.write(step=state.step, epoch=epoch + (s + 1) / len(steps), split="train", loss=mean_loss, lr=lr,
                          examples_per_s=speed)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{speed:.1f}")
                window.reset()
                window_start, window_examples = time.time(), 0
            if train.evaluation_due(cfg, state.step, end_of_epoch):
                evaluate_dev(epoch + 1)
            if train.checkpoint_due(cfg, state.step, end_of_epoch):
                state.window_loss, state.window_batches = window.state()
                rng_states = gather_objects(capture_rng(), setup)  # every rank's dropout stream
                if setup.is_main:
                    save_run(out / "last", model, optimizer, scheduler, scaler, state, rng_states)
                barrier(setup)
            if state.stopped:
                say(f"early stopping: {cfg.early_stopping} evaluations without a better mean dev error")
                break
        bar.close()
    log.close()
    barrier(setup)  # best/ is complete before any rank reads it
    if not state.stage1_done:
        stage1 = evaluate_best(cfg, out, tasks, device, state, setup)
        state.stage1_done = True  # a --resume from here goes straight to stage 2
        rng_states = gather_objects(capture_rng(), setup)
        if setup.is_main:
            plot_learning_curves(log.records, out / "learning_curves.png")
            save_run(out / "last", model, optimizer, scheduler, scaler, state, rng_states)
        barrier(setup)
    else:
        stage1 = json.loads((out / "multitask_results.json").read_text(encoding="utf-8"))
    stage2 = run_stage2(cfg, out, task_files, say)
    results = finish(cfg, out, tasks, stage1, stage2) if setup.is_main else {}
    barrier(setup)
    shutdown(setup)
    return results


def resume(cfg, out: Path, model, optimizer, scheduler, scaler, fresh: MultiTaskState,
           setup: Distributed) -> MultiTaskState:
    """Restore stage 1 from out/last after checking the settings and the tasks' data are unchanged."""
    folder = find_run(out / "last")
    state = MultiTaskState(**load_run(folder, model, optimizer, scheduler, scaler, rank=setup.rank,
                                      world_size=setup.world_size))
    train.check_resumable(cfg, out, state.config, train.RESUMABLE_CHANGES | set(STAGE2_OPTIONS),
                          state.data_sha256 == fresh.data_sha256, "a task's train or dev file")
    if setup.is_main:
        print(f"resumed from {folder} at optimizer step {state.step}" + (" (stage 1 finished)" if state.stage1_done else ""))
    return state


def evaluate_best(cfg, out: Path, tasks: list[Task], device, state: MultiTaskState, setup: Distributed) -> dict:
    """Stage 1's best model on every task's dev and test split -> multitask_results.json."""
    results = {"best_step": state.best_step, "steps": state.step, "mean_dev_error": state.best_dev_error, "tasks": {}}
    for t in tasks:
        saved = load_classifier(out / "best", t.name)
        saved.model.to(device)
        saved.model.bert.padding = cfg.padding
        scores = {"labels": t.labels}
        for name, split in {"dev": t.dev, "test": t.test}.items():
            if split is None:
                continue
            split_docs = encode_examples(split.examples, split.labels, saved.tokenizer, saved.encoding)
            report = train.evaluate(saved.model, split_docs, t.labels, cfg, device, saved.tokenizer.pad_id,
                                    f"{name} {t.name}", setup)
            scores.update({f"{name}_{k}": v for k, v in report.items()})
        results["tasks"][t.name] = scores
    if setup.is_main:
        atomic_write_text(out / "multitask_results.json", json.dumps(results, indent=2) + "\n")
    return results


def run_stage2(cfg, out: Path, task_files, say=print) -> dict:
    """Each task alone from the multi-task model (its own head kept), at the lower learning rate.

    Each is a train.py run in stage2/<task>/: a finished one is kept, an interrupted one resumed.
    """
    results = {}
    if cfg.stage2_epochs == 0:
        return results
    for files in task_files:
        folder = out / "stage2" / files.name
        finished = (folder / "results.json").is_file()
        if cfg.resume and finished:
            results[files.name] = json.loads((folder / "results.json").read_text(encoding="utf-8"))
            continue
        resume_it = cfg.resume and find_run(folder / "last") is not None
        say(f"stage 2: {files.name} from the multi-task model at lr {cfg.learning_rate * cfg.stage2_lr_factor:.2e}")
        task_cfg = replace(cfg, tasks="", tasks_file="", train_file=files.train, dev_file=files.dev,
                           test_file=files.test, init=str(out / "best"), init_task=files.name,
                           learning_rate=cfg.learning_rate * cfg.stage2_lr_factor, epochs=cfg.stage2_epochs,
                           output_dir=str(folder), resume=resume_it, overwrite_output_dir=not resume_it)
        results[files.name] = train.main(task_cfg)
    return results


def finish(cfg, out: Path, tasks: list[Task], stage1: dict, stage2: dict) -> dict:
    """results.json: every task's dev and test error after stage 1 and after stage 2, and the means."""
    def summary(per_task: dict) -> dict:
        keys = ("dev_error", "test_error", "test_accuracy", "test_macro_f1")
        table = {task: {k: scores[k] for k in keys if k in scores} for task, scores in per_task.items()}
        means = {f"mean_{k}": statistics.mean(row[k] for row in table.values())
                 for k in ("dev_error", "test_error") if table and all(k in row for row in table.values())}
        return {"tasks": table, **means}

    results = {"tasks": [t.name for t in tasks], "multitask": summary(stage1["tasks"])}
    if stage2:
        results["stage2"] = summary(stage2)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    final = results.get("stage2", results["multitask"])
    for t in tasks:
        row = final["tasks"][t.name]
        errors = ", ".join(f"{split} error {100 * row[f'{split}_error']:.2f}%" for split in ("dev", "test")
                           if f"{split}_error" in row)
        print(f"{t.name}: {errors}")
    print(f"models: {out / 'best'} (every task's head; predict.py --task NAME)"
          + (f", {out / 'stage2'}/<task>/best" if stage2 else "") + f"  results: {out / 'results.json'}")
    return results
