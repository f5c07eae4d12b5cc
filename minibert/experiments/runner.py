"""Plan and run the paper's experiments: rows x data sets x seeds -> one train.py run each.

A run's folder is OUTPUT/<scale>/<experiment>/<data set>/<row>/seed<k>/. A run whose results.json
exists is finished and skipped; one with a last/ checkpoint is continued with --resume (train.py
then gives the same result as an uninterrupted run); any other starts afresh. The library never
imports the scripts: whoever calls `execute` passes the function that runs one train.py config
(in-process for one device, a subprocess per run for several).
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from minibert.data.examples import write_jsonl
from minibert.data.splits import few_shot_subset
from minibert.errors import ConfigError, DataError
from minibert.experiments.paper import CHINESE, PAPER_RECIPE, TABLE1_TRAIN, Experiment, Row
from minibert.files import find_folder

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Scale:
    """A budget: the recipe every row starts from and how much data a run sees.

    train/dev/test_examples: a seeded stratified subset of each split (0 = all of it).
    curve_every / curve_train_examples: Figure 2's evaluation interval (optimizer steps) and the size
    of the training subset whose error is measured alongside dev.
    """

    name: str
    recipe: dict
    note: str
    train_examples: int = 0
    dev_examples: int = 0
    test_examples: int = 0
    curve_every: int = 100
    curve_train_examples: int = 2000
    english_init: str = ""  # "" = the runner's --init
    num_layers: int = 0  # the scale's own model's layers (0 = whatever --init has), for Table 3's rows


# Deviation from reference: --scale small is a budget, not the paper's setting. The embedded
# MiniLM (6 layers, 384 wide) at 128 tokens on 600 training examples with lr 1e-4 (MiniLM learns
# too little at 2e-5 in 100 steps) lets a whole table run on a 2-core CPU in under an hour.
# Hierarchical rows keep at most 4 chunks of 126 tokens: about the paper's 510-token span, and a
# bounded cost per text.
SCALES = {
    "paper": Scale("paper", PAPER_RECIPE, "the paper's settings: BERT-base, 512 tokens, full data sets"),
    "small": Scale("small", {**PAPER_RECIPE, "max_seq_length": 128, "learning_rate": 1e-4, "eval_batch_size": 64,
                             "max_chunks": 4},
                   "NOT the paper's setting: all-MiniLM-L6-v2, 128 tokens (hierarchical: at most 4 chunks), "
                   "lr 1e-4, stratified subsets of 600 train / 200 dev / 400 test examples", 600, 200, 400, curve_every=5,
                   curve_train_examples=200, english_init="minilm", num_layers=6),
}


@dataclass
class Run:
    """One train.py run: which experiment row, data set(s) and seed, its folder and TrainConfig values.

    refused: why it cannot run ("" if it can). state: "done", "resume", "new" or "refused" when
    planned; "failed" after an error (error holds the message).
    """

    experiment: str
    row: Row
    dataset: str
    seed: int
    folder: Path
    config: dict = field(default_factory=dict)
    refused: str = ""
    state: str = "new"
    error: str = ""


def slug(name: str) -> str:
    """A folder name for a row label: "hier. self-attention" -> "hier_self-attention"."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_").replace("._", "_")


def run_state(folder: Path) -> str:
    if (folder / "results.json").is_file():
        return "done"
    return "resume" if find_folder(folder / "last") is not None else "new"


@dataclass(frozen=True)
class Inits:
    """The pretrained checkpoints rows may ask for: English BERT-base, Chinese (Sogou), BERT-large."""

    english: str
    chinese: str = ""
    large: str = ""

    def for_run(self, scale: Scale, row: Row, dataset: str) -> tuple[str, str]:
        """(init, refusal reason or "")."""
        if row.config.get("init") == "large":
            return self.large, "" if self.large else "needs BERT-large: give --init_large"
        if dataset in CHINESE:
            return self.chinese, "" if self.chinese else "needs the Chinese BERT-base: give --init_chinese"
        return scale.english_init or self.english, ""


def few_shot_count(scale: Scale, dataset: str, proportion: float) -> int:
    """Figure 4 counts its examples from Table 1's training sizes (0.4% of IMDb = 100 reviews); a
    subset scale counts from its own subset, with at least 10 examples."""
    if scale.train_examples:
        return max(10, round(proportion * scale.train_examples))
    if dataset not in TABLE1_TRAIN:
        raise ConfigError(f"few-shot proportions count from Table 1's sizes, which do not list {dataset}")
    return round(proportion * TABLE1_TRAIN[dataset])


def plan(experiment: Experiment, scale: Scale, datasets: list[str], seeds: list[int], inits: Inits,
         data_folders: dict[str, Path], output_dir: Path, extra: dict | None = None) -> list[Run]:
    """Every run of the experiment's rows on `datasets` (the experiment's own when empty) x seeds.

    data_folders: data set -> folder holding {train,dev,test}.jsonl (already subset for the scale).
    extra: TrainConfig values for every run (e.g. precision). Nothing is run or written.
    """
    runs = []
    for row in experiment.rows:
        for dataset in datasets or experiment.datasets:
            for seed in seeds:
                # A multi-task row is one run over all the data sets, listed once per data set.
                group = "multitask" if row.multi_task else dataset
                folder = output_dir / scale.name / experiment.name / group / slug(row.name) / f"seed{seed}"
                run = _plan_one(experiment, row, dataset, seed, folder, scale, inits, data_folders, extra or {})
                if row.multi_task and run.config:
                    _multi_task(run, datasets or experiment.datasets, data_folders)
                runs.append(run)
    return runs


def _multi_task(run: Run, datasets, data_folders: dict[str, Path]) -> None:
    """Table 7's BERT-MFiT-FiT: train.py --tasks over every data set (their folders share a parent)."""
    parents = {data_folders[d].parent for d in datasets if d in data_folders}
    if len(parents) != 1 or not all(d in data_folders for d in datasets):
        run.refused, run.state, run.config = "multi-task needs every data set in one data folder", "refused", {}
        return
    for split in SPLITS:
        del run.config[f"{split}_file"]
    run.config.update(tasks=",".join(datasets), tasks_dir=str(parents.pop()))


def _plan_one(experiment, row, dataset, seed, folder, scale, inits, data_folders, extra) -> Run:
    run = Run(experiment.name, row, dataset, seed, folder)
    init, refused = inits.for_run(scale, row, dataset)
    if row.needs:
        run.refused = f"needs {row.needs}, which this version cannot make yet"
    elif refused:
        run.refused = refused
    elif scale.num_layers and row.config.get("layers", "").isdigit() and int(row.config["layers"]) > scale.num_layers:
        run.refused = f"needs layer {row.config['layers']}; the {scale.name} scale's model has {scale.num_layers}"
    if not run.refused and dataset not in data_folders:
        run.refused = f"no data for {dataset}"
    if run.refused:
        run.state = "refused"
        return run
    data = data_folders[dataset]
    config = {**scale.recipe, **{k: v for k, v in row.config.items() if k != "init"}, **extra,
              "init": init, "seed": seed, "output_dir": str(folder),
              **{f"{split}_file": str(data / f"{split}.jsonl") for split in SPLITS}}
    if experiment.plot == "curves":  # Figure 2: errors at regular steps, training error too
        config.update(eval_every=scale.curve_every, train_eval_count=scale.curve_train_examples)
    if experiment.plot == "few_shot" and row.x is not None and row.x < 1:
        config["train_count"] = few_shot_count(scale, dataset, row.x)
    run.config, run.state = config, run_state(folder)
    # The runner owns its run folders: an interrupted run continues; a folder without a checkpoint
    # (a run killed before its first one, or a failed one) starts again.
    run.config["resume" if run.state == "resume" else "overwrite_output_dir"] = True
    return run


def subset_data(source: Path, target: Path, scale: Scale, seed: int = 0) -> Path:
    """Seeded stratified subsets of source/{train,dev,test}.jsonl written to target/ (once: an existing
    complete target is reused, so every seed and row of a scale sees the same examples)."""
    if all((target / f"{split}.jsonl").is_file() for split in SPLITS):
        return target
    sizes = {"train": scale.train_examples, "dev": scale.dev_examples, "test": scale.test_examples}
    for split in SPLITS:
        path = source / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: no such file (prepare the data set with data/{source.name}/prepare.py)")
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if sizes[split] and sizes[split] < len(records):
            records = few_shot_subset(records, count=sizes[split], seed=seed, key=lambda r: r["label"])
        write_jsonl(target / f"{split}.jsonl", records)
    return target


def execute(runs: list[Run], devices: list[str], launch: Callable[[dict, str], None],
            log: Callable[[str], None] = lambda message: None) -> list[Run]:
    """Run every run that is not done or refused: one worker per device takes the next run from a
    queue, so each device runs one run at a time. launch(config, device) runs train.py with the
    config (device set by the worker). A failing run is marked "failed" and the others go on.
    Runs sharing a folder (a multi-task row) are launched once. Returns the runs that were pending."""
    pending = [run for run in runs if run.state in ("new", "resume")]
    by_folder: dict[Path, list[Run]] = {}  # a multi-task run is listed once per data set, launched once
    for run in pending:
        by_folder.setdefault(run.folder, []).append(run)
    work: queue.Queue[list[Run]] = queue.Queue()
    for group in by_folder.values():
        work.put(group)

    def worker(device: str) -> None:
        while True:
            try:
                group = work.get_nowait()
            except queue.Empty:
                return
            run = group[0]
            log(f"{'resuming' if run.state == 'resume' else 'starting'} {run.folder} on {device}")
            try:
                launch({**run.config, "device": device}, device)
                run.state = run_state(run.folder)
                if run.state != "done":
                    run.state, run.error = "failed", "train.py finished without results.json"
            except (Exception, SystemExit) as e:  # one bad run must not stop the queue; its message is reported
                run.state, run.error = "failed", str(e) or type(e).__name__
            for other in group[1:]:
                other.state, other.error = run.state, run.error
            log(f"{run.state} {run.folder}" + (f": {run.error}" if run.error else ""))

    threads = [threading.Thread(target=worker, args=(device,), daemon=True) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return pending
