"""reproduce.py's run: a table or figure of the paper planned (minibert.experiments.runner),
checked, run on one or more devices, and reported beside the published numbers.

With one device every run and pre-training stage runs in this process (no start-up cost); with
several, each runs in its own process (minibert.experiments.worker), its output in the run folder's
train.log or the job folder's pretrain.log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from minibert.cli import from_flat, option
from minibert.data import corpora
from minibert.errors import ConfigError, DataError
from minibert.experiments.dataset_stats import table1_markdown
from minibert.experiments.paper import EXPERIMENTS, TABLE1
from minibert.experiments.pretraining_jobs import corpus_needs, scaled_steps, vocab_beside
from minibert.experiments.report import PLOTS, markdown
from minibert.experiments.runner import SCALES, Inits, execute, jobs_of, plan, subset_data
from minibert.files import atomic_write_text
from minibert.finetune import FinetuneConfig, finetune
from minibert.finetune.config import TextOptions
from minibert.output_paths import check_output_folder, dataset_inputs, folder_inputs, visible_entries
from minibert.pretraining import STAGES
from minibert.resources import model_path
from minibert.text.tokenization import FullTokenizer
from minibert.training.machine import PRECISIONS, resolve_device
from minibert.training.run_folder import REPRODUCTION, write_kind

STATES = ("done", "resume", "new", "refused")
# A data set is a folder name under --data_dir: no path (a "../d" would be read and written outside).
DATASET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
OUTPUT_ENTRIES = {*SCALES, "table1.md"}  # what reproduce.py writes at the top of --output_dir
TABLE1_NAME = "table1"  # not an experiment: counts and lengths of the prepared data sets (dataset_stats)
PAPER_INIT = "uncased_L-12_H-768_A-12"  # the paper's English BERT-base (§5), Google's release folder


@dataclass(frozen=True)
class ReproduceConfig:
    experiment: str = option("", "which table or figure (table1: the prepared data sets' statistics beside the "
                             "paper's; nothing runs)", choices=("", TABLE1_NAME, *EXPERIMENTS))
    datasets: str = option("", "comma-separated data sets (data/<name>/); default: the ones the paper used")
    scale: str = option("paper", "paper: the paper's settings; small: a 2-core CPU budget (not the paper's setting)",
                        choices=tuple(SCALES))
    seeds: str = option("1", "comma-separated seeds; the table shows mean ± std over them")
    init: str = option(PAPER_INIT, "English BERT-base (Google release folder or any --init of train.py); --scale "
                       "small uses the embedded MiniLM (and refuses another --init), as table1 does while this "
                       "folder is not here")
    init_chinese: str = option("", "Chinese BERT-base for Sogou News (chinese_L-12_H-768_A-12)")
    init_large: str = option("", "BERT-large for Table 8 (uncased_L-24_H-1024_A-16)")
    data_dir: str = option("data", "folder of the prepared data sets, data/<name>/{train,dev,test}.jsonl")
    output_dir: str = option("runs/reproduce", "where runs, RESULTS.md and plots go")
    devices: str = option("auto", "comma-separated devices, one run at a time on each (auto: every GPU, else cpu)")
    precision: str = option("", "override the scale's precision for fine-tuning and pre-training (paper: fp32, "
                            "as the paper's code; small: auto); e.g. bf16 on recent GPUs", choices=("", *PRECISIONS))
    threads: int = option(0, "CPU threads per run (0 = torch's default)")
    resume: bool = option(True, "continue interrupted runs and pre-trainings from their last/ checkpoint "
                          "(false: start them again)")
    dry_run: bool = option(False, "print the plan (pre-training and fine-tuning: done / resume / new / refused) "
                           "and the table, run nothing")


def device_list(devices: str) -> list[str]:
    if devices != "auto":
        return [d.strip() for d in devices.split(",") if d.strip()]
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]


def comma_list(spec: str, flag: str) -> list[str]:
    """The names of a comma-separated option; one given twice is a ConfigError (it would plan every
    run twice)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{flag} {spec}: {', '.join(repeated)} given twice")
    return names


def checked_devices(devices: str) -> list[str]:
    """--devices as a list of devices this machine has, checked when the plan is built."""
    names = device_list(",".join(comma_list(devices, "--devices")))
    if not names:
        raise ConfigError(f"--devices {devices!r}: no device given (auto, cpu, cuda:N, ...)")
    for name in names:
        resolve_device(name, "--devices")
    return names


def checked_seeds(seeds: str) -> list[int]:
    names = comma_list(seeds, "--seeds")
    try:
        values = [int(s) for s in names]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    if not values or len(set(values)) != len(values):  # "1,01" is one seed twice
        raise ConfigError(f"--seeds {seeds!r}: give distinct integers, e.g. 1,2,3")
    return values


def checked_datasets(datasets: str, default: tuple[str, ...]) -> list[str]:
    """--datasets (the experiment's own when empty): names of folders under --data_dir, never a path."""
    names = comma_list(datasets, "--datasets") or list(default)
    for name in names:
        if not DATASET_NAME.fullmatch(name) or name.strip(".") == "":
            raise ConfigError(f"--datasets {name}: not a data set name (a folder under --data_dir, without a path)")
    return names


def check_init(init: str, scale) -> None:
    """A scale that fine-tunes its own model (small: the embedded MiniLM) would not use --init."""
    if scale.english_init and init != PAPER_INIT:
        raise ConfigError(f"--init {init}: --scale {scale.name} fine-tunes its own model ({scale.english_init}) "
                          "and would not use it; leave --init out, or use --scale paper")


def is_reproduce_output(folder: Path) -> bool:
    """A folder reproduce.py wrote: only its scales' folders and table1.md at the top."""
    return set(visible_entries(folder)) <= OUTPUT_ENTRIES


def check_output_dir(cfg: ReproduceConfig, datasets: list[str]) -> Path:
    """--output_dir by the output policy, before anything is read or written: never a file, the data
    folder, a data set, a model or a folder holding one, nor a folder of files reproduce.py did not write."""
    inits = [path for path in (cfg.init, cfg.init_chinese, cfg.init_large) if path and Path(path).exists()]
    inputs = [("--data_dir", cfg.data_dir), *dataset_inputs("--datasets", cfg.data_dir, datasets),
              *(entry for init in inits for entry in folder_inputs("--init", init))]
    return check_output_folder(cfg.output_dir, "--output_dir", is_reproduce_output,
                               f"reproduce.py's ({', '.join(sorted(OUTPUT_ENTRIES))})", inputs)


def prepare_hint(name: str) -> str:
    """How to make data set `name`: its data/<name>/prepare.py, or which data sets have one."""
    scripts = Path(__file__).resolve().parents[2] / "data"  # the repository's data/<name>/prepare.py
    if (scripts / name / "prepare.py").is_file():
        return f"prepare it with data/{name}/prepare.py"
    known = sorted(p.parent.name for p in scripts.glob("*/prepare.py"))
    return (f"there is no data/{name}/prepare.py (data sets that have one: {', '.join(known)}); put its "
            f"train.jsonl, dev.jsonl and test.jsonl in --data_dir/{name}/")


def data_folders(cfg: ReproduceConfig, datasets: list[str], scale, corpus_datasets: list[str] = ()) -> dict[str, Path]:
    """Each data set's prepared folder; a subset scale gets its stratified subset under output_dir.
    corpus_datasets: those only pre-training corpora read; one not prepared is left out (the plan
    refuses the rows that need it), while a missing data set to fine-tune on is an error. A dry run
    writes nothing (BBC News is not prepared, no subset is written)."""
    folders = {}
    for name in dict.fromkeys([*datasets, *corpus_datasets]):
        source = Path(cfg.data_dir) / name
        if name == "bbc_news" and cfg.dry_run and not (source / "train.jsonl").is_file():
            # the embedded data set, prepared on first use by a real run
            folders[name] = Path(cfg.output_dir) / scale.name / "data" / name if scale.train_examples else source
            continue
        if name == "bbc_news":
            corpora.ensure_bbc_news(source, lambda text: None)  # the embedded data set: prepared on first use
        if not (source / "train.jsonl").is_file() and name not in datasets:
            continue
        if not (source / "train.jsonl").is_file():
            raise DataError(f"{source}/train.jsonl: no such file; {prepare_hint(name)}")
        folders[name] = source
        if scale.train_examples:
            folders[name] = subset_data(source, Path(cfg.output_dir) / scale.name / "data" / name, scale,
                                        write=not cfg.dry_run)
    return folders


def run_in_process(config: FinetuneConfig, device: str) -> None:
    result = finetune(config)
    if result.get("stopped"):
        # The run finished its step and saved last/ on SIGTERM or SIGINT, then put the default handler
        # back: the runner ends as the signal asks (Ctrl-C: status 130), and the same command resumes it.
        os.kill(os.getpid(), result["signal"])


def run_as_subprocess(config: FinetuneConfig, device: str) -> None:
    """One fine-tuning process per run, its output in the run folder's train.log."""
    folder = Path(config.run.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / "reproduce_request.json"
    atomic_write_text(request, json.dumps(config.flat(), indent=2) + "\n")
    worker(["finetune", str(request)], folder / "train.log")


def pretrain_in_process(stages: list[tuple[str, dict]], device: str) -> None:
    """A pre-training job's stages (corpus, create_data, train) in this process."""
    for name, config in stages:
        function, config_class, _ = STAGES[name]
        result = function(from_flat(config_class, config, f"pre-training stage {name}"))
        if name == "train" and result.get("stopped"):
            # Pre-training finished its step and saved last/ on SIGTERM or SIGINT, then put the default
            # handler back: the runner now ends as the signal asks, and the same command resumes the job.
            os.kill(os.getpid(), result["signal"])


def pretrain_as_subprocess(stages: list[tuple[str, dict]], device: str) -> None:
    """One process per pre-training stage, their output in the job folder's pretrain.log."""
    folder = Path(stages[-1][1]["output_dir"]).parent  # the last stage is train, into JOB/run
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in stages:
        request = folder / f"reproduce_{name}.json"
        atomic_write_text(request, json.dumps(config, indent=2) + "\n")
        worker([name, str(request)], folder / "pretrain.log")


def worker(argv: list[str], log_file: Path) -> None:
    """`python -m minibert.experiments.worker KIND REQUEST.json`, appending its output to log_file."""
    with open(log_file, "a", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, "-m", "minibert.experiments.worker", *argv], stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        what = "fine-tuning" if argv[0] == "finetune" else f"pre-training stage {argv[0]}"
        raise RuntimeError(f"{what} exited with {done.returncode}; see {log_file}")


def check_before_running(runs, resume: bool) -> None:
    """Every pre-training stage's config is built before anything long starts (the fine-tuning
    configs were built by the plan); resume false restarts interrupted runs and pre-trainings."""
    for job in jobs_of(runs):
        if job.state == "resume" and not resume:
            job.state, job.resume = "new", False
        if job.state in ("new", "resume"):
            for name, config in job.stages("cpu"):
                from_flat(STAGES[name][1], config, f"pre-training {job.folder} ({name})")
    for run in runs:
        if run.state == "resume" and not resume:
            run.state = "new"
            run.config = replace(run.config, run=replace(run.config.run, resume=False, overwrite_output_dir=True))


def plan_lines(experiment, scale, runs) -> list[str]:
    """The pre-training jobs (one line each, with the runs waiting for them) and the runs' counts."""
    jobs, lines = jobs_of(runs), []
    if jobs:
        counts = {state: sum(job.state == state for job in jobs) for state in STATES}
        lines.append(f"further pre-training, scale {scale.name}: {len(jobs)} jobs - "
                     + ", ".join(f"{n} {s}" for s, n in counts.items()))
        for job in jobs:
            users = sum(run.job is job for run in runs)
            what = (f"{job.corpus} from {job.init}, {job.settings['num_train_steps']} steps of "
                    f"{job.settings['train_batch_size']}")
            lines.append(f"  {job.state:<7} {job.folder}: {what}; {users} runs fine-tune it"
                         + (f"; {job.refused}" if job.refused else ""))
    counts = {state: sum(run.state == state for run in runs) for state in STATES}
    return lines + [f"{experiment.title}, scale {scale.name}: {len(runs)} runs - "
                    + ", ".join(f"{n} {s}" for s, n in counts.items())]


def planned_runs(cfg: ReproduceConfig):
    """(experiment, scale, data sets, devices, runs) of the command line; every check before any run."""
    if not cfg.experiment:
        raise ConfigError(f"usage: reproduce.py EXPERIMENT [options]; EXPERIMENT is one of "
                          f"{', '.join([TABLE1_NAME, *EXPERIMENTS])}")
    scale = SCALES[cfg.scale]
    # Figure 3's points are the scale's saved pre-training steps (the paper: every 10k to 100k).
    experiment = scaled_steps(EXPERIMENTS[cfg.experiment], scale.pretrain, scale.name)
    datasets = checked_datasets(cfg.datasets, experiment.datasets)
    seeds, devices = checked_seeds(cfg.seeds), checked_devices(cfg.devices)
    check_init(cfg.init, scale)
    check_output_dir(cfg, datasets)
    extra = {k: v for k, v in (("precision", cfg.precision), ("threads", cfg.threads)) if v}
    folders = data_folders(cfg, datasets, scale, corpus_needs(experiment, datasets))
    inits = Inits(cfg.init, cfg.init_chinese, cfg.init_large)
    runs = plan(experiment, scale, datasets, seeds, inits, folders, Path(cfg.output_dir), extra)
    check_before_running(runs, cfg.resume)
    return experiment, scale, datasets, devices, runs


def subset_counts(data: Path, datasets: list[str]) -> str:
    """RESULTS.md's line of the examples each data set's subsets really hold (a data set smaller
    than the scale's subsets keeps all it has), or nothing at the paper's scale (no subsets)."""
    counts = []
    for name in datasets:
        files = [data / name / f"{split}.jsonl" for split in ("train", "dev", "test")]
        if all(f.is_file() for f in files):
            sizes = [sum(1 for line in f.open(encoding="utf-8") if line.strip()) for f in files]
            counts.append(f"{name} {sizes[0]} train / {sizes[1]} dev / {sizes[2]} test")
    return f"\nExamples used: {'; '.join(counts)}.\n" if counts else ""


def table1_tokenizer(init: str) -> FullTokenizer:
    """The tokenizer of model `init`, as the fine-tuning runs build it (do_lower_case, Google's rules)."""
    path = model_path(init)
    if not path.exists() and not any(path.parent.glob(f"{path.name}.*")):  # a folder, file or ckpt prefix
        raise ConfigError(f"--init {init}: no such model, whose vocabulary Table 1's WordPieces need")
    return FullTokenizer(vocab_beside(init), TextOptions().do_lower_case, TextOptions().tokenizer_variant)


def table1_tokenizers(cfg: ReproduceConfig) -> tuple[FullTokenizer, FullTokenizer, str]:
    """The tokenizers Table 1 counts WordPieces with (§5.1), and a sentence naming them: English, the
    model the scale fine-tunes (--init; the embedded MiniLM at --scale small, and while --init is left
    at its default and that folder is not here); Sogou News, --init_chinese's (the English one without
    it: both split CJK characters one per token)."""
    init = SCALES[cfg.scale].english_init or cfg.init
    if init == PAPER_INIT and not model_path(init).exists():
        init = "minilm"
    english = table1_tokenizer(init)
    chinese = table1_tokenizer(cfg.init_chinese) if cfg.init_chinese else english
    said = f"English with {english.vocab_file} ({len(english.vocab):,} tokens)"
    said += (f", Chinese with {chinese.vocab_file}" if cfg.init_chinese
             else ", Chinese with the same (no --init_chinese)")
    return english, chinese, said


def reproduce(cfg: ReproduceConfig, say=print) -> tuple[str, list]:
    """Plan, run (unless dry_run) and report; returns RESULTS.md's text and the runs. table1: the
    data sets' statistics (OUTPUT/table1.md), no runs. A dry run writes nothing: the text is returned."""
    if cfg.experiment == TABLE1_NAME:
        datasets = checked_datasets(cfg.datasets, tuple(TABLE1))
        text = table1_markdown(Path(cfg.data_dir), datasets, *table1_tokenizers(cfg))
        if not cfg.dry_run:
            check_output_dir(cfg, datasets)
            write_kind(Path(cfg.output_dir), REPRODUCTION)  # a reproduction's folder (minibert.training.run_folder)
            atomic_write_text(Path(cfg.output_dir) / "table1.md", text)
        return text, []
    experiment, scale, datasets, devices, runs = planned_runs(cfg)
    for line in plan_lines(experiment, scale, runs):
        say(line)
    if not cfg.dry_run:
        write_kind(Path(cfg.output_dir), REPRODUCTION)  # a reproduction's folder (minibert.training.run_folder)
        single = len(devices) == 1
        execute(runs, devices, run_in_process if single else run_as_subprocess, log=say,
                pretrain=pretrain_in_process if single else pretrain_as_subprocess)
    text = markdown(experiment, scale, runs, datasets) + subset_counts(Path(cfg.output_dir) / scale.name / "data",
                                                                   datasets)
    if cfg.dry_run:
        return text, runs
    out = Path(cfg.output_dir) / scale.name / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "RESULTS.md", text)
    if experiment.plot:
        for dataset in datasets:
            PLOTS[experiment.plot](experiment, runs, dataset, out / f"{experiment.name}_{dataset}.png")
    return text, runs
