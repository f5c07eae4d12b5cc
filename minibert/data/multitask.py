"""Multi-task fine-tuning data (paper §4.3, Exp-III): which tasks, and the order of their batches.

Every batch holds examples of one task only, so each goes through its own head. The paper's code for
this step is xuyige/BERT4doc-Classification's codes/fine-tuning/run_classifier_multitask.py (the
model with a classifier per task is modeling_multitask.py there). Each epoch it shuffles a list
holding every task's number of full batches (len // batch of its training set) and, for each entry,
takes the first batch of a new iterator over that task's RandomSampler: every batch is a fresh random
draw of `batch` examples of its task, so within an epoch an example can come twice or not at all.

Two ways to fill the list, --task_sampling: "listed" (the default) lists every batch of every task's
epoch (each example once per epoch, as MT-DNN (Liu et al. 2019) does) and shuffles them; "random"
follows the paper's code: the same shuffled list of tasks, each entry a batch drawn afresh
(redrawn_batches). Either way a task's share of the batches is its share of the data. Temperature
sampling (temperature > 1) flattens the mix towards small tasks while keeping the epoch's length.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import ConfigError
from minibert.files import refuse_repeated_keys
from minibert.schema import typed


@dataclass(frozen=True)
class TaskFiles:
    """One task: its name (the key of its head) and its split files ("" = no test split)."""

    name: str
    train: str
    dev: str
    test: str = ""


def _check_name(name: str, where: str) -> str:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ConfigError(f"{where}: task names use letters, digits, _ and -, got {name!r}")
    return name


def tasks_from_names(names: str, data_dir: str | Path = "data") -> list[TaskFiles]:
    """--tasks imdb,ag_news -> data/<name>/{train,dev,test}.jsonl (the prepare.py layout)."""
    tasks = []
    for name in (part.strip() for part in names.split(",")):
        folder = Path(data_dir) / _check_name(name, "--tasks")
        tasks.append(TaskFiles(name, *(str(folder / f"{split}.jsonl") for split in ("train", "dev", "test"))))
    return _distinct(tasks, "--tasks")


def read_tasks_file(path: str | Path) -> list[TaskFiles]:
    """--tasks_file: a JSON list of {"name", "train", "dev", "test" (optional)} objects."""
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=refuse_repeated_keys)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: bad JSON or a key given twice
        raise ConfigError(f"--tasks_file {path}: cannot read it ({e})") from None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"--tasks_file {path}: expected a non-empty JSON list of tasks")
    tasks = []
    for i, item in enumerate(items):
        where = f"{path}: task {i}"
        entry = typed(TaskEntry, item, where, ConfigError)
        tasks.append(TaskFiles(_check_name(entry.name, where), entry.train, entry.dev, entry.test))
    return _distinct(tasks, f"--tasks_file {path}")


@dataclass
class TaskEntry:
    """One task of a --tasks_file, read against these types."""

    name: str
    train: str
    dev: str
    test: str = ""  # none

    def __post_init__(self):
        if not self.train or not self.dev:
            raise ValueError("train and dev must name files")


def _distinct(tasks: list[TaskFiles], where: str) -> list[TaskFiles]:
    names = [task.name for task in tasks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{where}: task {', '.join(repeated)} given twice")
    if len(tasks) < 2:
        raise ConfigError(f"{where}: multi-task fine-tuning needs at least two tasks")
    return tasks


def task_counts(batches_per_task: dict[str, int], temperature: float = 1.0) -> dict[str, int]:
    """How many batches of each task one epoch lists; the total is always the sum of all tasks' batches.

    temperature 1: every batch of every task once (each task in proportion to its size, MT-DNN).
    temperature T > 1: task t gets a share proportional to n_t^(1/T) (Arivazhagan et al. 2019),
    rounded by largest remainder (ties to the task listed first) so the counts add up exactly.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    total = sum(batches_per_task.values())
    if temperature == 1:
        return dict(batches_per_task)
    weights = {task: n ** (1 / temperature) for task, n in batches_per_task.items()}
    exact = {task: total * w / sum(weights.values()) for task, w in weights.items()}
    counts = {task: int(x) for task, x in exact.items()}
    by_remainder = sorted(exact, key=lambda task: -(exact[task] - counts[task]))  # stable: ties keep order
    for task in by_remainder[: total - sum(counts.values())]:
        counts[task] += 1
    return counts


def redrawn_batches(num_examples: int, batch_size: int, seed: int) -> list[list[int]]:
    """One task's epoch under --task_sampling random, as the paper's code draws it: num_examples //
    batch_size batches, each batch_size distinct examples drawn afresh (the first batch of a new
    RandomSampler permutation), independently of the other batches. Seeded, so a resumed run draws
    the same batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    # Deviation from reference: the paper's code lists len // batch batches per task, none for a task
    # smaller than one batch; such a task gets one batch of all its examples here rather than none.
    count = max(1, num_examples // batch_size)
    return [rng.sample(range(num_examples), min(batch_size, num_examples)) for _ in range(count)]


def epoch_schedule(batches: dict[str, list[list[int]]], seed: int, epoch: int,
                   temperature: float = 1.0) -> list[tuple[str, list[int]]]:
    """The epoch's micro-batches as (task, example indices of that task), shuffled across tasks.

    batches: each task's batches for this epoch (already shuffled within the task). A task listed
    more often than it has batches (temperature > 1 on a small task) goes through them again; one
    listed less often takes its first batches, a different set each epoch. The order depends only
    on (seed, epoch), so a resumed run lists the same batches.
    """
    counts = task_counts({task: len(b) for task, b in batches.items()}, temperature)
    listed = [(task, batches[task][i % len(batches[task])]) for task in batches for i in range(counts[task])]
    random.Random(seed * 1_000_003 + epoch).shuffle(listed)
    return listed
