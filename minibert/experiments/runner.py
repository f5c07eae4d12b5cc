"""Plan and run the paper's experiments: rows x data sets x seeds -> one fine-tuning run each.

A run's folder is OUTPUT/<scale>/<experiment>/<data set>/<row>/seed<k>/. A run whose results.json
exists is finished and skipped; one with a last/ checkpoint is continued with --resume (train.py
then gives the same result as an uninterrupted run); any other starts afresh. Rows that fine-tune a
further pre-trained model get a PretrainJob (minibert.experiments.pretraining_jobs), one per corpus,
starting model and settings under OUTPUT/<scale>/pretrain/, shared by every run that needs it and
run before them. Whoever calls `execute` passes the functions that run one fine-tuning config and one
pre-training's stages (minibert.finetune and minibert.pretraining in-process for one device, a
train.py / pretrain.py process per run for several).
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from minibert.data.examples import write_jsonl
from minibert.data.splits import few_shot_subset
from minibert.errors import ConfigError, DataError
from minibert.experiments.paper import (CHINESE, PAPER_PRETRAIN, PAPER_RECIPE, TABLE1_TRAIN, Experiment, Row,
                                        table1_chunks)
from minibert.experiments.pretraining_jobs import (PretrainJob, check_settings, checkpoint_refusal, checkpoint_steps,
                                                   corpus_of, job_state, model_name, new_job, settings_digest)
from minibert.files import atomic_write_text, find_folder, sha256_file
from minibert.finetune.config import FinetuneConfig
from minibert.output_paths import DATASET_SPLITS

SPLITS = DATASET_SPLITS
SUBSET_MANIFEST = "subset.json"  # in a subset folder: the digests of the source files it was made from


@dataclass(frozen=True)
class Scale:
    """A budget: the recipe every row starts from and how much data a run sees.

    train/dev/test_examples: a seeded stratified subset of each split (0 = all of it).
    curve_every / curve_train_examples: Figure 2's evaluation interval (optimizer steps) and the size
    of the training subset whose error is measured alongside dev.
    pretrain: PretrainConfig values of every further pre-training (Figure 3 fine-tunes the model
    saved every save_checkpoints_steps).
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
    # Recipe values of the scale's hierarchical rows only; none: max_chunks from Table 1 (paper.table1_chunks).
    hierarchical: dict = field(default_factory=dict)
    num_layers: int = 0  # the scale's own model's layers (0 = whatever --init has), for Table 3's rows
    pretrain: dict = field(default_factory=lambda: dict(PAPER_PRETRAIN))
    # Whether a row's own pre-training settings (Row.pretrain_settings: Table 8's BERT-large) apply;
    # a budget scale's `pretrain` replaces them.
    row_pretrain: bool = True


# Deviation from reference: --scale small is a budget, not the paper's setting. The embedded
# MiniLM (6 layers, 384 wide) at 128 tokens on 600 training examples with lr 1e-4 (MiniLM learns
# too little at 2e-5 in 100 steps) lets a fine-tuning table run on a 2-core CPU in under an hour.
# Hierarchical rows keep at most 4 chunks of 126 tokens: about the paper's 510-token span, and a
# bounded cost per text. Further pre-training is pretrain.py's embedded budget (300 steps of 16
# sequences at lr 1e-4: MiniLM's MLM/NSP heads start untrained) on the subsets' training text,
# saved every 100 steps for Figure 3.
# A budget runs at the machine's fastest precision ("auto": bf16 where the CPU/GPU has it natively).
SMALL_PRETRAIN = {**PAPER_PRETRAIN, "train_batch_size": 16, "learning_rate": 1e-4, "num_train_steps": 300,
                  "num_warmup_steps": 30, "save_checkpoints_steps": 100, "precision": "auto"}
SCALES = {
    "paper": Scale("paper", PAPER_RECIPE, "the paper's settings: BERT-base, 512 tokens, full data sets"),
    "small": Scale("small", {**PAPER_RECIPE, "max_seq_length": 128, "learning_rate": 1e-4, "eval_batch_size": 64,
                             "precision": "auto"},
                   "NOT the paper's setting: all-MiniLM-L6-v2, 128 tokens (hierarchical: at most 4 chunks), "
                   "lr 1e-4 unless the row sets one (Figure 2, Table 4, Table 7's multi-task rows), stratified subsets of 600 train / 200 dev / 400 test examples; further pre-training: "
                   "300 steps of 16 sequences at lr 1e-4 on the subsets' training text", 600, 200, 400,
                   curve_every=5, curve_train_examples=200, english_init="minilm", num_layers=6,
                   hierarchical={"max_chunks": 4}, pretrain=SMALL_PRETRAIN, row_pretrain=False),
}


@dataclass
class Run:
    """One fine-tuning run: which experiment row, data set(s) and seed, its folder and its config.

    refused: why it cannot run ("" if it can). state: "done", "resume", "new" or "refused" when
    planned; "failed" after an error (error holds the message). job: the further pre-training it
    fine-tunes from (shared with every run that needs the same one), or None.
    """

    experiment: str
    row: Row
    dataset: str
    seed: int
    folder: Path
    config: FinetuneConfig | None = None  # None when refused
    refused: str = ""
    state: str = "new"
    error: str = ""
    job: PretrainJob | None = None

    @property
    def options(self) -> dict:
        """The config's flat {option: value} (empty when refused), as train.py's flags name them."""
        return self.config.flat() if self.config is not None else {}


def slug(name: str) -> str:
    """A folder name for a row label: "hier. self-attention" -> "hier_self-attention"."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_").replace("._", "_")


def run_status(folder: Path) -> str:
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

    data_folders: data set -> folder holding {train,dev,test}.jsonl (already subset for the scale),
    including the data sets the rows' pre-training corpora read. extra: fine-tuning options for every
    run (e.g. precision; threads and precision also go to pre-training). Nothing is run or written;
    a row naming an option fine-tuning does not have is a ConfigError here, before anything runs.
    """
    runs, jobs = [], _Jobs(scale, output_dir, data_folders, extra or {})
    for row in (row for row in experiment.rows if not row.published_only):
        for dataset in datasets or experiment.datasets:
            for seed in seeds:
                # A multi-task row is one run over all the data sets, listed once per data set.
                group = "multitask" if row.multi_task else dataset
                folder = output_dir / scale.name / experiment.name / group / slug(row.name) / f"seed{seed}"
                run, values = _plan_one(experiment, row, dataset, seed, folder, scale, inits, data_folders,
                                        extra or {}, jobs)
                if row.multi_task and values:
                    values = _multi_task(run, values, datasets or experiment.datasets, data_folders)
                if values:
                    run.config = FinetuneConfig.of(f"{experiment.name} row {row.name!r}", **values)
                runs.append(run)
    return runs


def _multi_task(run: Run, values: dict, datasets, data_folders: dict[str, Path]) -> dict:
    """Table 7's BERT-MFiT-FiT: one --tasks run over every data set (their folders share a parent)."""
    parents = {data_folders[d].parent for d in datasets if d in data_folders}
    if len(parents) != 1 or not all(d in data_folders for d in datasets):
        run.refused, run.state = "multi-task needs every data set in one data folder", "refused"
        return {}
    values = {k: v for k, v in values.items() if k not in {f"{split}_file" for split in SPLITS}}
    return {**values, "tasks": ",".join(datasets), "tasks_dir": str(parents.pop())}


def jobs_of(runs: list[Run]) -> list[PretrainJob]:
    """The distinct pre-training jobs of the runs, in plan order."""
    return list({id(run.job): run.job for run in runs if run.job is not None}.values())


class _Jobs:
    """The plan's pre-training jobs: one per corpus, starting model and settings, made on first use."""

    def __init__(self, scale: Scale, output_dir: Path, data_folders: dict[str, Path], extra: dict):
        self.root, self.scale = output_dir / scale.name / "pretrain", scale
        self.extra = {k: v for k, v in extra.items() if k in ("threads", "precision")}
        self.data_folders, self.jobs = data_folders, {}

    def for_row(self, row: Row, dataset: str, init: str) -> tuple[PretrainJob | None, str]:
        """The job `row` fine-tunes from on `dataset` when starting from `init`, and a refusal reason."""
        corpus, refused = corpus_of(row, dataset)
        if refused:
            return None, refused
        settings = {**self.scale.pretrain, **(row.pretrain_settings if self.scale.row_pretrain else {}), **self.extra}
        check_settings(settings, f"row {row.name!r}")
        folder = self.root / f"{slug(corpus)}_{slug(model_name(init))}_{settings_digest(corpus, init, settings)}"
        if folder not in self.jobs:
            self.jobs[folder] = new_job(corpus, init, folder, settings, self.data_folders)
        job = self.jobs[folder]
        if row.pretrain_step:  # Figure 3 fine-tunes the models saved along the way; other rows need only the end
            job.checkpoints = checkpoint_steps(settings)
        return job, job.refused or checkpoint_refusal(job, row.pretrain_step)


def _plan_one(experiment, row, dataset, seed, folder, scale, inits, data_folders, extra, jobs) -> tuple[Run, dict]:
    """The run of one row, data set and seed, and its options (empty when it is refused)."""
    run = Run(experiment.name, row, dataset, seed, folder)
    init, refused = inits.for_run(scale, row, dataset)
    if not refused and row.pretrain:  # fine-tune the further pre-trained model instead of init
        run.job, refused = jobs.for_row(row, dataset, init)
        if run.job is not None:
            init = str(run.job.model(row.pretrain_step))
    if refused:
        run.refused = refused
    elif scale.num_layers and row.config.get("layers", "").isdigit() and int(row.config["layers"]) > scale.num_layers:
        run.refused = f"needs layer {row.config['layers']}; the {scale.name} scale's model has {scale.num_layers}"
    if not run.refused and dataset not in data_folders:
        run.refused = f"no data for {dataset}"
    if run.refused:
        run.state = "refused"
        return run, {}
    data = data_folders[dataset]
    values = {**scale.recipe, **{k: v for k, v in row.config.items() if k != "init"}, **extra,
              "init": init, "seed": seed, "output_dir": str(folder),
              **{f"{split}_file": str(data / f"{split}.jsonl") for split in SPLITS}}
    if values.get("hierarchical"):
        # §5.3.1 encodes every chunk of a text. A budget scale caps them; the paper's scale keeps as many
        # as the data set's longest text in Table 1 fills (the library's default would train on 16).
        values.update(scale.hierarchical or {"max_chunks": table1_chunks(dataset, values["max_seq_length"])})
    if experiment.plot == "curves":  # Figure 2: errors at regular steps, training error too
        values.update(eval_every=scale.curve_every, train_eval_count=scale.curve_train_examples)
    if experiment.plot == "few_shot" and row.x is not None and row.x < 1:
        values["train_count"] = few_shot_count(scale, dataset, row.x)
    run.state = run_status(folder)
    # The runner owns its run folders: an interrupted run continues; a folder without a checkpoint
    # (a run killed before its first one, or a failed one) starts again.
    values["resume" if run.state == "resume" else "overwrite_output_dir"] = True
    return run, values


def subset_data(source: Path, target: Path, scale: Scale, seed: int = 0, write: bool = True) -> Path:
    """Seeded stratified subsets of source/{train,dev,test}.jsonl written to target/ (once: an existing
    target made from the same source files is reused, so every seed and row of a scale sees the same
    examples). Its subset.json records the source files' digests: subsets of files that have changed
    since (another --data_dir, a data set prepared again) are refused, as the runs made from them
    would mix with new ones. write=False (a dry run) checks and returns the target, writing nothing."""
    manifest = subset_manifest(source, scale, seed)
    recorded = read_subset_manifest(target)
    # The same files, sizes and seed give the same subsets, wherever the source folder now is.
    same = recorded is not None and all(recorded.get(key) == manifest[key] for key in ("sha256", "sizes", "seed"))
    if same and all((target / f"{split}.jsonl").is_file() for split in SPLITS):
        return target
    if not same and (recorded is not None or any((target / f"{split}.jsonl").is_file() for split in SPLITS)):
        made = (f"from {recorded.get('source')} with other contents or sizes" if recorded is not None
                else "before subsets recorded their source")
        raise DataError(f"{target}: subsets made {made}, not from {source} as it is now ({SUBSET_MANIFEST} "
                        "differs); the runs made from them would mix with new ones: give another --output_dir, "
                        f"or remove {target} and the runs of this scale")
    if not write:
        return target
    sizes = manifest["sizes"]
    for split in SPLITS:
        path = source / f"{split}.jsonl"
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if sizes[split] and sizes[split] < len(records):
            records = few_shot_subset(records, count=sizes[split], seed=seed, key=lambda r: r["label"])
        write_jsonl(target / f"{split}.jsonl", records)
    atomic_write_text(target / SUBSET_MANIFEST, json.dumps(manifest, indent=2) + "\n")  # last: the set is whole
    return target


def subset_manifest(source: Path, scale: Scale, seed: int) -> dict:
    """What a subset is made of: its source files' sha256, the subset sizes and the seed."""
    digests = {}
    for split in SPLITS:
        path = source / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: no such file (prepare the data set with data/{source.name}/prepare.py)")
        digests[split] = sha256_file(path)
    sizes = {"train": scale.train_examples, "dev": scale.dev_examples, "test": scale.test_examples}
    return {"source": str(source.resolve()), "sha256": digests, "sizes": sizes, "seed": seed}


def read_subset_manifest(target: Path) -> dict | None:
    """A subset folder's subset.json, or None where there is none (or it cannot be read)."""
    try:
        recorded = json.loads((target / SUBSET_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def execute(runs: list[Run], devices: list[str], launch: Callable[[dict, str], None],
            log: Callable[[str], None] = lambda message: None,
            pretrain: Callable[[list[tuple[str, dict]], str], None] | None = None) -> list[Run]:
    """Run every run that is not done or refused: one worker per device takes the next run from a
    queue, so each device runs one run at a time. launch(config, device) runs the fine-tuning
    FinetuneConfig (its device set by the worker). A failing run is marked "failed" and the others go on.
    Runs sharing a folder (a multi-task row) are launched once. Returns the runs that were pending.

    First, the same way, every pre-training job the pending runs need that is not done:
    pretrain(stages, device) runs its pretrain.py stages (PretrainJob.stages). A run whose job
    failed fails with the job's message, without being launched."""
    pending = [run for run in runs if run.state in ("new", "resume")]
    jobs = [job for job in jobs_of(pending) if job.state in ("new", "resume")]
    if jobs and pretrain is None:
        raise ValueError("execute: runs need pre-training but no pretrain function was given")

    def run_job(job: PretrainJob, device: str) -> None:
        log(f"{'resuming' if job.state == 'resume' else 'starting'} pre-training {job.folder} on {device}")
        try:
            pretrain(job.stages(device), device)
            job.state = job_state(job.folder)
            if job.state != "done":
                job.state = "failed"
                job.error = f"pretrain.py stopped before {job.run_dir / 'final'} (run again to resume)"
        except (Exception, SystemExit) as e:  # one bad job must not stop the others
            job.state, job.error = "failed", str(e) or type(e).__name__
        log(f"{job.state} pre-training {job.folder}" + (f": {job.error}" if job.error else ""))

    _drain(jobs, devices, run_job)
    for run in pending:
        if run.job is not None and run.job.state == "failed":
            run.state, run.error = "failed", f"pre-training {run.job.folder} failed: {run.job.error}"

    by_folder: dict[Path, list[Run]] = {}  # a multi-task run is listed once per data set, launched once
    for run in pending:
        if run.state != "failed":
            by_folder.setdefault(run.folder, []).append(run)

    def run_group(group: list[Run], device: str) -> None:
        run = group[0]
        log(f"{'resuming' if run.state == 'resume' else 'starting'} {run.folder} on {device}")
        try:
            launch(replace(run.config, machine=replace(run.config.machine, device=device)), device)
            run.state = run_status(run.folder)
            if run.state != "done":
                run.state, run.error = "failed", "train.py finished without results.json"
        except (Exception, SystemExit) as e:  # one bad run must not stop the queue; its message is reported
            run.state, run.error = "failed", str(e) or type(e).__name__
        for other in group[1:]:
            other.state, other.error = run.state, run.error
        log(f"{run.state} {run.folder}" + (f": {run.error}" if run.error else ""))

    _drain(list(by_folder.values()), devices, run_group)
    return pending


def _drain(items: list, devices: list[str], work: Callable[[object, str], None]) -> None:
    """One thread per device takes the next item from a shared queue until none is left. With one
    device the items run in this thread: pretrain.py's SIGTERM handler (stop after the step, save
    last/) can only be installed in the main thread, and Ctrl-C reaches the running item."""
    if len(devices) == 1:
        for item in items:
            work(item, devices[0])
        return
    todo: queue.Queue = queue.Queue()
    for item in items:
        todo.put(item)

    def worker(device: str) -> None:
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            work(item, device)

    threads = [threading.Thread(target=worker, args=(device,), daemon=True) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
