"""The tasks of a fine-tuning run: a single-task run is a mixture of one task (named ONE_TASK).

A task is its split files, read and checked at the start (the label set comes from its training
split), its training examples encoded once, and its dev examples encoded for the evaluations. An
epoch's micro-batches are (task, example indices) pairs: one task's batches in their --batching
order, or every task's mixed as the multi-task schedule lists them (minibert.data.multitask).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from minibert.data import corpora
from minibert.data.batching import BATCHINGS
from minibert.data.examples import LabelSet, encode_labels, is_multi_label, read_examples
from minibert.data.features import cap_chunks, encode_examples
from minibert.data.multitask import TaskFiles, epoch_schedule, read_tasks_file, redrawn_batches, tasks_from_names
from minibert.data.splits import few_shot_subset
from minibert.errors import DataError
from minibert.files import sha256_file
from minibert.finetune.config import (BBC_DIR, TRAIN_CHUNK_CAP, DataOptions, FinetuneConfig, MultiTaskOptions,
                                      OptimOptions)
from minibert.text.encoding import TextEncoding
from minibert.training.distributed import Distributed, shard_batches
from minibert.training.problems import positive_weights

ONE_TASK = "task"  # the name of a single-task run's task (its head's key in the model's table of heads)
# Each task's batch order has its own seed: seed + epoch + TASK_SEED_STRIDE * (the task's index).
TASK_SEED_STRIDE = 7919


@dataclass
class Split:
    """One data split, read and checked at the start; encoded when needed."""

    path: str
    examples: list
    labels: list[int]


@dataclass
class Task:
    """One task's data: its label names, encoded training and dev examples, and its splits."""

    name: str
    labels: list[str]
    train_path: str
    train_docs: list
    dev: Split
    test: Split | None
    dev_docs: list = field(default_factory=list)
    multi_label: bool = False  # several labels per text (minibert.training.problems)


def task_files(cfg: FinetuneConfig) -> list[TaskFiles]:
    """The run's tasks' files: --tasks / --tasks_file, or the one task of --train_file etc."""
    options: MultiTaskOptions = cfg.multitask
    if options.tasks_file:
        return read_tasks_file(options.tasks_file)
    if options.tasks:
        return tasks_from_names(options.tasks, options.tasks_dir)
    return [TaskFiles(ONE_TASK, cfg.data.train_file, cfg.data.dev_file, cfg.data.test_file)]


def ensure_default_data(data: DataOptions, say) -> None:
    """Prepare the embedded BBC News splits on first use, when the run reads the default files."""
    defaults = DataOptions()
    if (data.train_file, data.dev_file, data.test_file) == (defaults.train_file, defaults.dev_file, defaults.test_file):
        corpora.ensure_bbc_news(BBC_DIR, say)


READ_MULTI_LABEL = {"auto": "auto", "true": True, "false": False}  # --multi_label -> read_examples' multi_label


def read_split(data: DataOptions, path: str, labels: LabelSet | None, say,
               multi_label: bool | str = False) -> tuple[Split, LabelSet]:
    """One split's examples and label ids (a sorted list of ids per multi-label example); the label
    set comes from the training split."""
    examples, bad = read_examples(path, text_field=data.text_field, text_b_field=data.text_b_field,
                                  label_field=data.label_field, on_bad_row=data.on_bad_row,
                                  multi_label=multi_label, label_separator=data.label_separator or None)
    labels = labels or LabelSet.from_examples(examples)
    ids, examples, unknown = encode_labels(examples, labels, data.on_bad_row)
    for message in bad + unknown:
        say(f"skipped {message}")
    if bad or unknown:
        say(f"{path}: skipped {len(bad) + len(unknown)} bad rows")
    return Split(path, examples, ids), labels


def read_task(files: TaskFiles, data: DataOptions, seed: int, say) -> tuple[Split, LabelSet, Split, Split | None]:
    """A task's splits (train, with the few-shot subset when asked for; dev; test or None). The
    training split says whether the task is multi-label (--multi_label auto); dev and test are read
    as the same kind."""
    train, labels = read_split(data, files.train, None, say, READ_MULTI_LABEL[data.multi_label])
    multi_label = is_multi_label(train.examples)
    if multi_label and data.multi_label == "auto":
        say(f"{files.train}: label lists, so the task is multi-label ({len(labels.names)} labels); "
            "--multi_label false refuses them")
    if len(labels.names) < 2 and not multi_label:
        raise DataError(f"{files.train}: the training split has {len(labels.names)} class"
                        f"{'' if len(labels.names) == 1 else 'es'} ({', '.join(labels.names)}): a classifier "
                        "needs at least two")
    if data.train_count or data.train_fraction < 1:
        pairs = few_shot_subset(list(zip(train.examples, train.labels)), count=data.train_count or None,
                                fraction=None if data.train_count else data.train_fraction, seed=seed,
                                key=lambda pair: pair[1])
        train = Split(train.path, [p[0] for p in pairs], [p[1] for p in pairs])
    dev = read_split(data, files.dev, labels, say, multi_label)[0]
    test = read_split(data, files.test, labels, say, multi_label)[0] if files.test else None
    return train, labels, dev, test


def encode_task(name: str, splits, tokenizer, encoding: TextEncoding, say) -> Task:
    """A task's training and dev examples as encoded documents; `say` prints a message about the task."""
    train, labels, dev, test = splits
    train_docs = encode_examples(train.examples, train.labels, tokenizer, encoding)
    if encoding.hierarchical and encoding.max_chunks == 0:
        # Deviation from the paper (which encodes every chunk): training backpropagates through all
        # chunks of a text at once, so one very long text could need gigabytes; beyond
        # TRAIN_CHUNK_CAP chunks (8,160 tokens at 512) only the first are trained on, with a message.
        # Evaluation and prediction stream chunks and use every one.
        train_docs, message = cap_chunks(train_docs, [e.source for e in train.examples], TRAIN_CHUNK_CAP)
        if message:
            say(f"note: {message}")
    dev_docs = encode_examples(dev.examples, dev.labels, tokenizer, encoding)
    return Task(name, list(labels.names), train.path, train_docs, dev, test, dev_docs,
                is_multi_label(train.examples))


def data_names(tasks: list[Task]) -> str:
    """The data a --resume checks, as its error names it."""
    if len(tasks) > 1:
        return "a task's train or dev file"
    return f"{tasks[0].train_path} or {tasks[0].dev.path}"


def data_sha256(files: list[TaskFiles]) -> str:
    """One digest of every task's train and dev file: --resume refuses other data."""
    digest = hashlib.sha256()
    for task in files:
        for path in (task.train, task.dev):
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def epoch_micro_batches(tasks: list[Task], optim: OptimOptions, multitask: MultiTaskOptions, seed: int, epoch: int,
                        setup: Distributed) -> list[tuple[str, list[int]]]:
    """This process's micro-batches of an epoch as (task, example indices).

    Each task's global batches of world_size * batch_size examples are drawn every epoch as
    --batching says (length-grouped or random; multi-task --task_sampling random redraws each batch
    instead), and this rank takes its slice of each (minibert.training.distributed). One task's
    batches keep that order; several tasks' are listed and mixed by epoch_schedule (every rank lists
    the same mixed epoch, so all ranks train the same task at each step).
    """
    size = optim.batch_size * setup.world_size
    redraw = len(tasks) > 1 and multitask.task_sampling == "random"
    batches = {}
    for i, t in enumerate(tasks):
        task_seed = seed + epoch + TASK_SEED_STRIDE * i
        drawn = (redrawn_batches(len(t.train_docs), size, task_seed) if redraw else
                 BATCHINGS[optim.batching]([d.length for d in t.train_docs], size, task_seed))
        batches[t.name] = shard_batches(drawn, setup)
    if len(tasks) == 1:
        return [(tasks[0].name, batch) for batch in batches[tasks[0].name]]
    return epoch_schedule(batches, seed, epoch, multitask.task_temperature)


def loss_weights(task: Task, optim: OptimOptions, pos_weight: bool) -> torch.Tensor | None:
    """The weight of `task`'s loss (Problem.loss): class weights of a single-label task with
    --class_weighted_loss, positive weights of a multi-label one with --pos_weight, else None."""
    labels = [d.label for d in task.train_docs]
    if task.multi_label:
        return positive_weights(labels, len(task.labels)) if pos_weight else None
    return class_weights(labels, len(task.labels)) if optim.class_weighted_loss else None


def class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """w_c = N / (K * n_c): each class contributes equally to the loss."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_labels).float()
    return len(labels) / (num_labels * counts.clamp(min=1))
