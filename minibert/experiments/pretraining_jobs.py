"""Further pre-training jobs of the runner (paper §5.4): one per corpus, starting model and settings,
shared by every row, data set and seed that fine-tunes from it.

A job's folder is OUTPUT/<scale>/pretrain/<corpus>_<model>_<digest>/, the digest a short hash of every
setting that changes the model it makes (settings_digest: corpus, starting model, create_data's and
train's values, precision; not where or how fast it runs), so two pre-trainings never share a folder:

    corpus.txt (+ .manifest.json)   pretrain.py corpus: the training text, one sentence per line
    records/                        pretrain.py create_data: Google's instances, as a records folder
    run/                            pretrain.py train: final/, last/, checkpoint-STEP/, metrics.jsonl

Each stage is skipped once its output is complete (the corpus manifest is written after the corpus,
the records folder is swapped in whole) and training continues from run/last/ when it was
interrupted, so the same command picks up where it stopped. The library runs nothing: `stages()`
lists the pretrain.py subcommands still to run with their config values, and the caller runs them
(in this process or as pretrain.py processes).

Corpora are built from training splits only (Table 5's rule; dev and test text never enter), read
from the same data folders the fine-tuning runs use, so a subset scale pre-trains on its subsets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from minibert.data.pretraining_corpus import CROSS_DOMAIN, DOMAINS, ENGLISH_DATASETS, manifest_path
from minibert.cli import flat_fields
from minibert.errors import ConfigError
from minibert.experiments.paper import BEST_EXP_I, CHINESE, IN_DOMAIN, WITHIN, Experiment, Row
from minibert.files import find_folder
from minibert.pretraining.config import CreateDataConfig, PretrainConfig
from minibert.resources import model_path

# Names `pretrain.py corpus --sources` knows; any other data set's text is given as its train.jsonl.
CORPUS_NAMES = {*ENGLISH_DATASETS, *DOMAINS, CROSS_DOMAIN, "bbc_news"}
# Train-config keys that may differ from a finished or interrupted run's config.json without it
# being another pre-training (where and how fast it runs, not what it learns); left out of the digest.
RUNTIME_KEYS = {"device", "threads", "resume", "overwrite_output_dir", "keep_checkpoints"}
# A job's settings are create_data's and train's options by name (one key may go to both, e.g.
# max_seq_length); the runner fills in the rest (files, the starting model, device, resume).
_FILLED_IN = {"input_file", "output_file", "vocab_file", "output_dir", "init", "device", "resume",
              "overwrite_output_dir", "keep_checkpoints"}
CREATE_DATA_KEYS = {f.name for f in fields(CreateDataConfig)} - _FILLED_IN
TRAIN_KEYS = {f.name for f, _ in flat_fields(PretrainConfig)} - _FILLED_IN
# What a scale must say: the shape of the records and how long, how big and how often train runs.
REQUIRED_SETTINGS = ("max_seq_length", "max_predictions_per_seq", "train_batch_size", "learning_rate",
                     "num_train_steps", "num_warmup_steps", "save_checkpoints_steps")


def check_settings(settings: dict, where: str) -> None:
    """A misspelt setting (neither create_data's nor train's) or a missing one is a ConfigError."""
    unknown = sorted(set(settings) - CREATE_DATA_KEYS - TRAIN_KEYS)
    missing = [k for k in REQUIRED_SETTINGS if k not in settings]
    problems = ([f"unknown setting{'s' * (len(unknown) > 1)} {', '.join(unknown)}"] if unknown else []) + (
        [f"missing {', '.join(missing)}"] if missing else [])
    if problems:
        raise ConfigError(f"{where}: pre-training {'; '.join(problems)}")


def settings_digest(corpus: str, init: str, settings: dict) -> str:
    """8 hex digits naming everything that changes the pre-trained model (not RUNTIME_KEYS)."""
    kept = {k: v for k, v in settings.items() if k not in RUNTIME_KEYS}
    text = json.dumps({"corpus": corpus, "init": init, **kept}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def corpus_of(row: Row, dataset: str) -> tuple[str, str]:
    """The `--sources` of the corpus `row` pre-trains on when fine-tuning `dataset`, and a refusal
    reason ("" if none): WITHIN is the data set itself, IN_DOMAIN its domain (§5.4.2)."""
    corpus = row.pretrain
    if corpus == WITHIN:
        corpus = dataset
    elif corpus == IN_DOMAIN:
        corpus = next((domain for domain, names in DOMAINS.items() if dataset in names), "")
        if not corpus:
            return "", f"no in-domain corpus for {dataset}: §5.4.2 puts only the seven English data sets in domains"
    if dataset in CHINESE and corpus != dataset:
        return "", f"the {corpus} corpus is English text and {dataset} fine-tunes the Chinese BERT (the paper: -)"
    return corpus, ""


def corpus_datasets(corpus: str) -> tuple[str, ...]:
    """The data sets whose training text the corpus reads."""
    if corpus == CROSS_DOMAIN:
        return ENGLISH_DATASETS
    return DOMAINS.get(corpus, (corpus,))


def checkpoint_steps(settings: dict) -> tuple[int, ...]:
    """The steps after which a pre-training saves: every save_checkpoints_steps up to the end."""
    every, total = settings["save_checkpoints_steps"], settings["num_train_steps"]
    return tuple(range(every, total + 1, every))


def model_name(init: str) -> str:
    """A short name of the starting model for the job's folder: a release folder's name, "minilm"."""
    path = Path(init)
    return path.parent.name if path.name.startswith("bert_model.ckpt") else path.name


def vocab_beside(init: str) -> Path:
    """The vocab.txt of the starting model (beside its weights), which create_data must use."""
    folder = model_path(init)
    vocab = (folder if folder.is_dir() else folder.parent) / "vocab.txt"
    if not vocab.is_file():
        raise ConfigError(f"{init}: no vocab.txt beside the model, which the pre-training records need")
    return vocab


@dataclass
class PretrainJob:
    """One further pre-training: corpus -> records -> pretrain.py train, in `folder`.

    corpus: pretrain.py corpus --sources (or a train.jsonl path). settings: PretrainConfig values
    of the scale (the paper's §5.2 or a budget) plus the runner's (threads, precision).
    checkpoints: the steps kept as run/checkpoint-STEP/, () for none: only a job that Figure 3 fine-tunes
    keeps them (the runner sets them for a row with a pretrain_step), the others just run/final/. state: "done",
    "resume", "new" or "refused" when planned, "failed" after an error. resume: continue from
    run/last/ when it exists (False: start again).
    """

    corpus: str
    init: str
    folder: Path
    data_dir: Path
    language: str
    settings: dict
    checkpoints: tuple[int, ...] = ()
    refused: str = ""
    state: str = "new"
    error: str = ""
    resume: bool = True

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"

    def model(self, step: int = 0) -> Path:
        """The folder train.py --init reads: the model after `step` steps, or at the end (0)."""
        return self.run_dir / (f"checkpoint-{step}" if step else "final")

    def train_config(self) -> dict:
        """PretrainConfig values, without the device and the resume choice."""
        # keep_checkpoints K keeps the K-1 newest checkpoint-STEP/ (a SIGTERM stop writes none).
        keep = len(self.checkpoints) + 1 if self.checkpoints else 1
        return {**{k: v for k, v in self.settings.items() if k in TRAIN_KEYS}, "init": self.init,
                "input_file": str(self.folder / "records"), "output_dir": str(self.run_dir), "keep_checkpoints": keep}

    def create_data_config(self) -> dict:
        """CreateDataConfig values, without the vocabulary (the one beside the starting model)."""
        return {**{k: v for k, v in self.settings.items() if k in CREATE_DATA_KEYS},
                "input_file": str(self.folder / "corpus.txt"), "output_file": str(self.folder / "records")}

    def stages(self, device: str) -> list[tuple[str, dict]]:
        """The pretrain.py subcommands still to run, in order, with their config values."""
        if job_state(self.folder) == "done":
            return []
        stages = []
        corpus, records = self.folder / "corpus.txt", self.folder / "records"
        records_done = (records / "manifest.json").is_file()
        if not records_done and not manifest_path(corpus).is_file():
            stages.append(("corpus", {"sources": self.corpus, "output_file": str(corpus),
                                      "data_dir": str(self.data_dir), "language": self.language}))
        if not records_done:  # Google's create_pretraining_data.py defaults for what the settings leave out
            stages.append(("create_data", {**self.create_data_config(), "vocab_file": str(vocab_beside(self.init))}))
        resume = self.resume and find_folder(self.run_dir / "last") is not None
        stages.append(("train", {**self.train_config(), "device": device, "resume": resume,
                                 "overwrite_output_dir": not resume}))
        return stages


def job_state(folder: Path) -> str:
    """done (run/final/ exists), resume (run/last/ exists) or new."""
    if find_folder(folder / "run" / "final") is not None:
        return "done"
    return "resume" if find_folder(folder / "run" / "last") is not None else "new"


def new_job(corpus: str, init: str, folder: Path, settings: dict, data_folders: dict[str, Path]) -> PretrainJob:
    """The job, refused when a data set of its corpus is not prepared or its folder holds a
    pre-training with other settings (which it must not overwrite)."""
    names = corpus_datasets(corpus)
    missing = [name for name in names if name not in data_folders]
    parents = {data_folders[name].parent for name in names if name in data_folders}
    # A name pretrain.py corpus knows reads DATA_DIR/<name>/train.jsonl (and applies the Yelp rule);
    # any other data set (Sogou News, one of the user's) is given as its file.
    source = corpus if corpus in CORPUS_NAMES else str(data_folders.get(corpus, Path(corpus)) / "train.jsonl")
    job = PretrainJob(source, init, folder, next(iter(parents)) if parents else Path(),
                      "zh" if set(names) <= CHINESE else "en", settings)
    if missing:
        job.refused = (f"pre-training on {corpus} needs data sets that are not prepared: {', '.join(missing)} "
                       f"(data/<name>/prepare.py)")
    elif len(parents) > 1:
        job.refused = f"pre-training on {corpus} needs its data sets in one data folder"
    else:
        job.refused = _conflict(job)
    job.state = "refused" if job.refused else job_state(folder)
    return job


def _conflict(job: PretrainJob) -> str:
    """Why the job's folder cannot be used ("" if it can): a config.json of other settings."""
    saved = job.run_dir / "config.json"
    if not saved.is_file():
        return ""
    earlier = json.loads(saved.read_text(encoding="utf-8"))
    # config.json holds the precision "auto" resolved to.
    ignored = RUNTIME_KEYS | ({"precision"} if job.settings.get("precision", "auto") == "auto" else set())
    changed = sorted(k for k, v in job.train_config().items() if k not in ignored and earlier.get(k) != v)
    if changed:
        return (f"{job.run_dir} holds a pre-training with other {', '.join(changed)}: move it away or use "
                "another --output_dir")
    return ""


def checkpoint_refusal(job: PretrainJob, step: int) -> str:
    """Why a row cannot fine-tune the job's model after `step` steps ("" if it can)."""
    if not step:
        return ""
    if step not in job.checkpoints:
        return f"no model after {step} pre-training steps: this scale keeps {', '.join(map(str, job.checkpoints))}"
    if job.state == "done" and find_folder(job.model(step)) is None:
        # The same pre-training run first for a row that needs only its end (Table 5, 6, 8, Figure 4)
        # kept no checkpoint-STEP/.
        return (f"{job.model(step)} is missing: the pre-training finished without its checkpoints (run for "
                f"another experiment first); delete {job.run_dir} to pre-train again")
    return ""


def scaled_steps(experiment: Experiment, settings: dict, scale_name: str) -> Experiment:
    """Figure 3 at a scale whose pre-training saves at other steps than the paper's 10k, ..., 100k:
    a point per saved model, the last one beside the paper's full pre-training (100k)."""
    steps = checkpoint_steps(settings)
    points = [row for row in experiment.rows if row.pretrain_step]
    if experiment.plot != "steps" or [row.pretrain_step for row in points] == list(steps):
        return experiment
    first = [row for row in experiment.rows if not row.pretrain_step]
    last = points[-1] if points else Row("", BEST_EXP_I, pretrain=WITHIN)
    rows = [replace(last, name=f"{s} steps" + (" (paper: 100k)" if s == steps[-1] else ""),
                    paper=last.paper if s == steps[-1] else {}, x=s, pretrain_step=s) for s in steps]
    return replace(experiment, rows=(*first, *rows),
                   x_label=f"within-task pre-training steps ({scale_name} scale, NOT the paper's 10k-100k)")


def corpus_needs(experiment: Experiment, datasets: list[str]) -> list[str]:
    """Every data set whose training text the experiment's pre-training corpora read."""
    names = {}
    for row in experiment.rows:
        for dataset in datasets if row.pretrain else ():
            corpus, refused = corpus_of(row, dataset)
            names.update(dict.fromkeys(() if refused else corpus_datasets(corpus)))
    return list(names)
