"""GoEmotions (multi-label): minibert's fine-tuning run against transformers' Trainer, same budget.

Both sides fine-tune the same model (the embedded all-MiniLM-L6-v2, loaded by each library from
the same folder) on the same prepared GoEmotions files, from the same token ids (minibert's
tokenizer, the first max_seq_length tokens, as the GoEmotions code's run_classifier), with the same
recipe: on the CPU in fp32 or bf16 autocast (--precision), AdamW (weight decay 0.01, not on biases
and LayerNorm), one learning rate for every layer, warm-up then linear decay, gradient norm clipped
at 1.0, dropout 0.1, randomly drawn batches, the same epochs, batch size, learning rate and seed, a
new output layer drawn from a normal with sd 0.02 (transformers' _init_weights; minibert with
--head_init normal, where its default is Google's truncated normal), a sigmoid cross-entropy loss
over the labels, dev scored after each epoch and the epoch with the best dev
macro-F1 at --threshold kept. Only the training code differs (with --head_init normal, the default here):

  minibert       minibert.finetune.finetune (what `python train.py` runs), multi_label true;
                 BertClassifier with a ClsHead over the pooled [CLS]
  transformers   BertForSequenceClassification(problem_type="multi_label_classification") with
                 its Trainer (eval_strategy epoch, load_best_model_at_end on dev macro-F1)

Each run is a process of its own (started with multiprocessing's spawn), and the two systems'
runs alternate (minibert, transformers, minibert, ...): "process" time is from start to exit
(imports, tokenizing, loading the model, training, scoring), "training" time is the training loop
with its per-epoch dev evaluation and checkpoints, "dev predict" the pass that gives this script
the kept model's dev probabilities (minibert's run also scores dev once more itself, as train.py
does after training: a pass counted in its process time only). Each process returns its dev
probabilities, and this script scores both with the same code
(minibert.training.multilabel_metrics): macro- and micro-F1 at the global threshold, and with each
label's threshold chosen on dev for its F1 (choose_thresholds; an optimistic number, since it is
chosen on the texts it is scored on, the same for both sides), and cross-fitted (cross_fitted_f1:
each half of dev decided by the thresholds chosen on the other half, as train.py reports it).

    python data/goemotions/prepare.py --source DIR --output_dir data/goemotions
    python benchmarks/goemotions_vs_transformers.py [--data data/goemotions] [--epochs 4]
        [--train_count N] [--max_seq_length 50] [--batch_size 16] [--learning_rate 5e-5]
        [--threshold 0.3] [--repeats 1] [--threads 0] [--precision fp32] [--head_init normal]
        [--minibert_preset FILE.json]

--systems minibert (or transformers) runs one system, for a run of each side by side on two cores
(each under `taskset -c N`, one thread). --repeats N runs each system N times, alternating, run r
at --seed + r in both systems, and prints each system's mean and standard deviation of the dev
F1 scores over those seeds beside the medians. --train_count N trains both on the same stratified N texts
(iterative stratification, few_shot_subset) for a quick run. --minibert_preset FILE.json gives
minibert's run other values for the options the two systems do not share (train.py's preset
format: {"batching": "length_grouped", "layer_decay": 0.95}, say): what minibert's own strategies
are worth against Trainer at the same epochs, learning rate, batch size, length, threshold, seed and
precision. Those shared options (SHARED) are refused there, in one line, before any run. --smoke
trains a tiny random BERT on a tiny synthetic multi-label set (seconds; a check that the script
runs, measures nothing). Needs transformers and accelerate (`pip install -e ".[bench]"`).
"""

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from minibert.checkpoints.classifier import load_classifier
from minibert.checkpoints.formats import checkpoint_of, save_hf
from minibert.cli import check_choices, load_preset
from minibert.data.examples import LabelSet, encode_labels, multi_hot, read_examples, write_jsonl
from minibert.data.features import encode_examples
from minibert.data.splits import few_shot_subset
from minibert.errors import ConfigError
from minibert.finetune import FinetuneConfig, FitHooks, finetune
from minibert.finetune.config import check_options
from minibert.model.bert import WEIGHT_INITS, BertModel
from minibert.model.config import BertConfig
from minibert.resources import model_path
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer
from minibert.training.evaluation import predict_probabilities
from minibert.training.multilabel_metrics import choose_thresholds, cross_fitted_f1, multilabel_report

SYSTEMS = ("minibert", "transformers")
WEIGHT_DECAY = 0.01  # Google's optimization.py and Trainer's usual setting
MAX_GRAD_NORM = 1.0
WARMUP = 0.1  # share of the optimizer steps (the GoEmotions code's warmup_proportion)
EVAL_BATCH_SIZE = 64
# minibert's options that this script sets from its own flags (--head_init included) or that both
# systems share: not changeable through --minibert_preset.
SHARED = ("init", "train_file", "dev_file", "test_file", "output_dir", "overwrite_output_dir", "multi_label",
          "threshold", "thresholds", "selection_metric", "max_seq_length", "epochs", "batch_size",
          "eval_batch_size", "learning_rate", "precision", "device", "threads", "seed", "head_init")
SMOKE_LABELS = ("anger", "joy", "fear", "surprise")  # --smoke: the synthetic set's labels, a word each
SMOKE_MODEL = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)


@dataclass(frozen=True)
class Recipe:
    """What both systems train with (the module notes list what is fixed)."""

    epochs: int
    learning_rate: float
    batch_size: int
    max_seq_length: int
    threshold: float
    seed: int
    threads: int
    precision: str  # fp32, or bf16: torch.autocast on the CPU in both libraries
    head_init: str  # minibert's draw of the new head (--head_init); transformers draws a plain normal
    minibert_options: tuple = ()  # (option, value) pairs of --minibert_preset, minibert's run only


@dataclass(frozen=True)
class Job:
    """One run: the system, the recipe, the model folder, the data files and where it writes."""

    system: str
    recipe: Recipe
    model: str
    train_file: str
    dev_file: str
    output_dir: str


# ------------------------------------------------------------------------------------------------
# Data


def read_split(path) -> list:
    examples, _ = read_examples(path, multi_label=True)
    return examples


def write_examples(path: Path, examples: list) -> str:
    write_jsonl(path, ({"text": e.text, "label": list(e.label)} for e in examples))
    return str(path)


def training_subset(data: Path, count: int, seed: int, work: Path) -> tuple[str, int]:
    """The training file both systems read and its size: the split itself, or a stratified subset
    of `count` texts (iterative stratification over the label lists) written into `work`."""
    train_file = data / "train.jsonl"
    examples = read_split(train_file)
    if not count:
        return str(train_file), len(examples)
    subset = few_shot_subset(examples, count=min(count, len(examples)), seed=seed, key=lambda e: list(e.label))
    return write_examples(work / "train.jsonl", subset), len(subset)


def smoke_text(labels: tuple, rng: random.Random) -> str:
    words = [*labels, *(f"w{rng.randrange(40)}" for _ in range(rng.randint(3, 12)))]
    rng.shuffle(words)
    return " ".join(words)


def write_smoke_data(work: Path) -> Path:
    """train.jsonl (48 texts) and dev.jsonl (24): each text holds the names of its labels (none to
    three of SMOKE_LABELS, some texts with none) among random filler words."""
    rng = random.Random(0)
    for name, count in (("train", 48), ("dev", 24)):
        rows = []
        for i in range(count):
            labels = tuple(sorted(rng.sample(SMOKE_LABELS, [1, 1, 2, 3, 0][i % 5])))
            rows.append({"text": smoke_text(labels, rng), "label": list(labels)})
        write_jsonl(work / f"{name}.jsonl", rows)
    return work


def write_smoke_model(folder: Path) -> str:
    """A tiny random BERT in the Hugging Face layout, whose vocabulary holds the synthetic words."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *SMOKE_LABELS, *(f"w{i}" for i in range(40))]
    words += [f"[unused{i}]" for i in range(SMOKE_MODEL.vocab_size - len(words))]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    save_hf(folder / "hf", checkpoint_of(BertModel(SMOKE_MODEL), vocab))
    return str(folder / "hf")


# ------------------------------------------------------------------------------------------------
# minibert: the library's fine-tuning run, then the best model's dev probabilities


def minibert_config(job: Job) -> FinetuneConfig:
    r = job.recipe
    recipe = dict(
        init=job.model, train_file=job.train_file, dev_file=job.dev_file, test_file="", output_dir=job.output_dir,
        overwrite_output_dir=True, multi_label="true", threshold=r.threshold, thresholds="fixed",
        selection_metric="macro_f1", max_seq_length=r.max_seq_length, truncation="head", do_lower_case=True,
        epochs=r.epochs, batch_size=r.batch_size, eval_batch_size=EVAL_BATCH_SIZE, batching="random",
        learning_rate=r.learning_rate, layer_decay=1.0, optimizer="adamw", schedule="warmup_linear",
        warmup_proportion=WARMUP, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM, dropout=0.1,
        precision=r.precision, device="cpu", threads=r.threads, seed=r.seed, head_init=r.head_init)
    return FinetuneConfig.of("--minibert_preset", **{**recipe, **dict(r.minibert_options)})


def run_minibert(job: Job) -> dict:
    """Fine-tune with minibert.finetune; training time from the first batch to the end of the last
    optimizer step's work (its dev evaluation and checkpoint)."""
    marks = {}
    hooks = FitHooks(epoch_batches=lambda epoch, batches: marks.setdefault("start", time.perf_counter()),
                     after_step=lambda step: marks.update(end=time.perf_counter()))
    finetune(minibert_config(job), hooks)
    start = time.perf_counter()
    saved = load_classifier(Path(job.output_dir) / "best")
    examples = read_split(job.dev_file)
    docs = encode_examples(examples, None, saved.tokenizer, saved.encoding)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if job.recipe.precision == "bf16"
                else contextlib.nullcontext())
    probabilities = predict_probabilities(saved.model, docs, EVAL_BATCH_SIZE, torch.device("cpu"),
                                          autocast, False, pad_id=saved.tokenizer.pad_id)
    return {"training_s": marks["end"] - marks["start"], "predict_s": time.perf_counter() - start,
            "labels": list(saved.labels), "probabilities": probabilities.numpy()}


# ------------------------------------------------------------------------------------------------
# transformers: BertForSequenceClassification (multi_label_classification) with its Trainer


class Encoded(torch.utils.data.Dataset):
    """Texts as minibert's tokenizer encodes them (the first max_seq_length tokens) with multi-hot labels."""

    def __init__(self, path: str, labels: LabelSet, tokenizer: FullTokenizer, encoding: TextEncoding):
        ids, examples, _ = encode_labels(read_split(path), labels)
        gold = multi_hot(ids, len(labels))
        self.items = []
        for example, row in zip(examples, gold):
            (input_ids, types), = encoding.encode(tokenizer.encode_text(example.text), None,
                                                  tokenizer.cls_id, tokenizer.sep_id)
            self.items.append({"input_ids": input_ids, "token_type_ids": types, "labels": row})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def collate(items: list[dict], pad_id: int) -> dict:
    """A batch padded to its longest text, with the attention mask and float multi-hot labels."""
    width = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, :len(item["input_ids"])] = torch.tensor(item["input_ids"])
        types[row, :len(item["token_type_ids"])] = torch.tensor(item["token_type_ids"])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(i["input_ids"]) for i in items])[:, None]).long()
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "labels": torch.from_numpy(np.stack([item["labels"] for item in items]))}


def trainer_arguments(transformers, job: Job):
    r = job.recipe
    return transformers.TrainingArguments(
        output_dir=job.output_dir, num_train_epochs=r.epochs,
        learning_rate=r.learning_rate, weight_decay=WEIGHT_DECAY, warmup_steps=WARMUP,
        lr_scheduler_type="linear", max_grad_norm=MAX_GRAD_NORM, per_device_train_batch_size=r.batch_size,
        per_device_eval_batch_size=EVAL_BATCH_SIZE, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="macro_f1", greater_is_better=True, save_total_limit=1,
        seed=r.seed, report_to=[], logging_steps=50, disable_tqdm=True, use_cpu=True, bf16=r.precision == "bf16",
        train_sampling_strategy="random")


def run_transformers(job: Job) -> dict:
    """Fine-tune with Trainer; training time is trainer.train() (with its per-epoch dev evaluation)."""
    import transformers

    transformers.logging.set_verbosity_error()  # the untrained classifier head is expected
    folder = Path(job.model)
    tokenizer = FullTokenizer(folder / "vocab.txt", do_lower_case=True)
    labels = LabelSet.from_examples(read_split(job.train_file))
    encoding = TextEncoding(job.recipe.max_seq_length, "head")
    train, dev = (Encoded(path, labels, tokenizer, encoding) for path in (job.train_file, job.dev_file))
    # The new classifier's weights are drawn in from_pretrained, before Trainer seeds anything: seeded
    # here, as minibert's run seeds its head, so a run can be repeated (unseeded, they would come from
    # the process's own random default seed).
    transformers.set_seed(job.recipe.seed)
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(folder), num_labels=len(labels), problem_type="multi_label_classification",
        id2label=dict(enumerate(labels.to_json())), attn_implementation="sdpa")

    def macro_f1(prediction):
        probabilities = torch.sigmoid(torch.from_numpy(prediction.predictions)).numpy()
        gold = prediction.label_ids.astype(bool)
        return {"macro_f1": multilabel_report(gold, probabilities, job.recipe.threshold, labels.to_json())["macro_f1"]}

    trainer = transformers.Trainer(model=model, args=trainer_arguments(transformers, job), train_dataset=train,
                                   eval_dataset=dev, compute_metrics=macro_f1,
                                   data_collator=lambda items: collate(items, tokenizer.pad_id))
    start = time.perf_counter()
    trainer.train()
    training_s = time.perf_counter() - start
    logits = trainer.predict(dev).predictions
    return {"training_s": training_s, "predict_s": time.perf_counter() - start - training_s, "labels": labels.to_json(),
            "probabilities": torch.sigmoid(torch.from_numpy(logits)).numpy()}


# ------------------------------------------------------------------------------------------------
# Runs and scores


def child(job: Job, results: Path) -> None:
    """One system's run in its own process; its timing and dev probabilities go to `results`."""
    if job.recipe.threads:
        torch.set_num_threads(job.recipe.threads)
    outcome = (run_minibert if job.system == "minibert" else run_transformers)(job)
    np.save(results / "probabilities.npy", outcome.pop("probabilities"))
    (results / "outcome.json").write_text(json.dumps(outcome), encoding="utf-8")


def timed_run(job: Job, results: Path) -> dict:
    """The run's process, start to exit; its outcome with process_s added."""
    results.mkdir(parents=True)
    process = multiprocessing.get_context("spawn").Process(target=child, args=(job, results))
    start = time.perf_counter()
    process.start()
    process.join()
    process_s = time.perf_counter() - start
    if process.exitcode != 0:
        raise SystemExit(f"error: the {job.system} run failed (exit code {process.exitcode}); its messages are above")
    outcome = json.loads((results / "outcome.json").read_text(encoding="utf-8"))
    return {**outcome, "process_s": process_s, "probabilities": np.load(results / "probabilities.npy")}


def dev_scores(outcome: dict, dev_file: str, threshold: float) -> dict:
    """Macro/micro-F1 at the global threshold and at per-label thresholds chosen on dev, the
    probabilities' columns taken in the order of the run's label names."""
    names = outcome["labels"]
    ids, _, _ = encode_labels(read_split(dev_file), LabelSet(names))
    gold = multi_hot(ids, len(names)).astype(bool)
    probabilities = outcome["probabilities"]
    chosen = choose_thresholds(probabilities, gold, threshold)
    at = {"global": multilabel_report(gold, probabilities, threshold, names),
          "chosen": multilabel_report(gold, probabilities, chosen, names),
          "cross_fitted": cross_fitted_f1(probabilities, gold, threshold)}
    return {f"{average}_f1_{rule}": at[rule][f"{average}_f1"] for rule in at for average in ("macro", "micro")}


def measure(jobs: dict, repeats: int, work: Path, train_count: int) -> dict:
    """Each system's runs (jobs: system -> Job), alternating, as {system: [row per repeat]}. Repeat r
    runs at seed + r in both systems: the seed draws the head's initial weights, the batch order
    and the dropout masks, and dev F1 moves with them, so repeats at one seed would time the code
    but say nothing about its spread."""
    rows = {system: [] for system in jobs}
    for repeat in range(repeats):
        for system, job in jobs.items():
            job = replace(job, recipe=replace(job.recipe, seed=job.recipe.seed + repeat))
            outcome = timed_run(job, work / f"{system}_{repeat}")
            scores = dev_scores(outcome, job.dev_file, job.recipe.threshold)
            speed = train_count * job.recipe.epochs / outcome["training_s"]
            rows[system].append({"seed": job.recipe.seed, "training_s": outcome["training_s"],
                                 "predict_s": outcome["predict_s"], "process_s": outcome["process_s"],
                                 "examples_per_s": speed, **scores})
            print(f"{system} run {repeat + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[system][-1].items()),
                  flush=True)
    return rows


def spread(values: list[float]) -> str:
    return f"mean {statistics.mean(values):.4f} sd {statistics.stdev(values):.4f}"


def report(rows: dict, threshold: float) -> None:
    """Medians over the repeats, and minibert / transformers."""
    columns = (("training_s", "training s"), ("predict_s", "dev predict s"), ("process_s", "process s"),
               ("examples_per_s", "train ex/s"),
               ("macro_f1_global", f"macro-F1 @{threshold:g}"), ("micro_f1_global", f"micro-F1 @{threshold:g}"),
               ("macro_f1_chosen", "macro-F1 dev-chosen"), ("micro_f1_chosen", "micro-F1 dev-chosen"),
               ("macro_f1_cross_fitted", "macro-F1 cross-fitted"), ("micro_f1_cross_fitted", "micro-F1 cross-fitted"))
    medians = {system: {key: statistics.median(row[key] for row in rows[system]) for key, _ in columns}
               for system in rows}
    print("\n| system | " + " | ".join(title for _, title in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for system in rows:
        print(f"| {system} | " + " | ".join(f"{medians[system][key]:.4g}" for key, _ in columns) + " |")
    for system, runs in rows.items() if any(len(runs) > 1 for runs in rows.values()) else ():
        print(f"{system} over seeds {', '.join(str(row['seed']) for row in runs)}: "
              + "; ".join(f"{title} {spread([row[key] for row in runs])}" for key, title in columns[4:]))
    if len(rows) < len(SYSTEMS):
        return  # --systems named one: the ratio comes from a run of the other beside it
    ours, theirs = medians["minibert"], medians["transformers"]
    print(f"\nminibert / transformers: training {theirs['training_s'] / ours['training_s']:.2f}x as fast, "
          f"whole process {theirs['process_s'] / ours['process_s']:.2f}x as fast; dev macro-F1 "
          f"{ours['macro_f1_global'] - theirs['macro_f1_global']:+.4f} at {threshold:g}, "
          f"{ours['macro_f1_chosen'] - theirs['macro_f1_chosen']:+.4f} with dev-chosen thresholds, "
          f"{ours['macro_f1_cross_fitted'] - theirs['macro_f1_cross_fitted']:+.4f} cross-fitted")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/goemotions", help="the folder prepare.py wrote (train/dev.jsonl)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train_count", type=int, default=0, help="train on this many stratified texts (0 = all)")
    parser.add_argument("--max_seq_length", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--threshold", type=float, default=0.3, help="the global decision threshold")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each system, alternating; run r at --seed + r (the F1 scores' spread)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads in each run (0 = torch's default)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32, or bf16 autocast in both libraries (for a CPU with native bf16: amx_bf16 or "
                        "avx512_bf16 in lscpu)")
    parser.add_argument("--head_init", choices=tuple(WEIGHT_INITS), default="normal",
                        help="how minibert draws its new head: normal (sd 0.02, as transformers' _init_weights "
                        "draws its classifier), or Google's truncated_normal")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma list of the systems to run (default both, alternating); one of them "
                        "runs beside a run of the other on another core, e.g. under taskset")
    parser.add_argument("--minibert_preset", default="",
                        help="JSON of minibert options (train.py's preset format) for minibert's run only; "
                             "the options both systems share are refused")
    parser.add_argument("--smoke", action="store_true", help="a tiny random BERT on 48 synthetic texts, one epoch: "
                        "checks that the script runs (seconds), measures nothing")
    return parser.parse_args()


def fail(message: str):
    """The one-line error and exit status 2 of a bad option, before any work."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_args(args) -> None:
    """A value no run can use, or --data without its files, as one line `error: ...`."""
    rules = [(args.epochs >= 1, "--epochs", "at least 1"), (args.repeats >= 1, "--repeats", "at least 1"),
             (args.train_count >= 0, "--train_count", "at least 0 (0 = all)"),
             (args.batch_size >= 1, "--batch_size", "at least 1"), (args.threads >= 0, "--threads", "at least 0"),
             (args.max_seq_length >= 4, "--max_seq_length", "at least 4"),
             (0 < args.learning_rate < 1, "--learning_rate", "in (0, 1)"),
             (0 < args.threshold < 1, "--threshold", "in (0, 1)")]
    for ok, option, requirement in rules:
        if not ok:
            fail(f"{option} {getattr(args, option[2:])}: must be {requirement}")
    if unknown := set(args.systems.split(",")) - set(SYSTEMS):
        fail(f"--systems {args.systems}: unknown {', '.join(sorted(unknown))} (known: {', '.join(SYSTEMS)})")
    for split in ("train", "dev"):
        if not args.smoke and not Path(args.data, f"{split}.jsonl").is_file():
            fail(f"--data {args.data}: no {split}.jsonl; write it with python data/goemotions/prepare.py "
                 f"--source DIR --output_dir {args.data}")


def minibert_options(path: str) -> tuple:
    """--minibert_preset's (option, value) pairs, checked as train.py checks a preset; a shared
    option or a bad value is one line `error: ...`."""
    if not path:
        return ()
    try:
        values = load_preset(FinetuneConfig, path)
        check_choices(FinetuneConfig, values, path)
    except ConfigError as e:
        fail(str(e))
    if shared := sorted(set(values) & set(SHARED)):
        fail(f"{path}: {', '.join(shared)}: set for both systems by this script's flags, not in --minibert_preset")
    return tuple(sorted(values.items()))


def check_minibert_run(job: Job) -> None:
    """minibert's run config as train.py checks it before any work (--minibert_preset's values
    together with the shared ones); a bad one is one line `error: ...`."""
    try:
        check_options(minibert_config(job))
    except ConfigError as e:
        fail(f"--minibert_preset: {e}")


def recipe_of(args) -> Recipe:
    return Recipe(args.epochs, args.learning_rate, args.batch_size, args.max_seq_length, args.threshold,
                  args.seed, args.threads, args.precision, args.head_init, minibert_options(args.minibert_preset))


def main():
    args = parse_args()
    check_args(args)
    needs_trainer = "transformers" in args.systems.split(",")
    if needs_trainer and importlib.util.find_spec("accelerate") is None:  # Trainer needs it, minibert does not
        if args.smoke:
            print("skipped: goemotions_vs_transformers.py needs accelerate (pip install -e '.[bench]')")
            return
        fail("needs transformers and accelerate: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="goemotions_bench_") as scratch:
        work = Path(scratch)
        if args.smoke:
            args.epochs, args.max_seq_length, args.batch_size, args.learning_rate = 1, 16, 8, 1e-3
            data, model = write_smoke_data(work), write_smoke_model(work / "model")
        else:
            data, model = Path(args.data), str(model_path("minilm"))
        recipe = recipe_of(args)
        train_file, train_count = training_subset(data, args.train_count, args.seed, work)
        jobs = {system: Job(system, recipe, model, train_file, str(data / "dev.jsonl"), str(work / f"{system}_out"))
                for system in SYSTEMS if system in args.systems.split(",")}
        if "minibert" in jobs:
            check_minibert_run(jobs["minibert"])
        print(f"{train_count} training texts, {len(read_split(str(data / 'dev.jsonl')))} dev texts, "
              f"recipe {asdict(recipe)}, model {model}", flush=True)
        report(measure(jobs, args.repeats, work, train_count), args.threshold)


if __name__ == "__main__":
    main()
