"""The classifier a fine-tuning run trains: the pretrained checkpoint checked against the options,
a new head per task (paper §5.3.2) or the heads of an earlier run, and its optimisation (layer-wise
learning rates, the schedule, loss scaling)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from minibert.checkpoints.classifier import load_classifier
from minibert.checkpoints.formats import Checkpoint, load_checkpoint, load_state
from minibert.checkpoints.integrity import check_vocab
from minibert.errors import ConfigError
from minibert.finetune.config import ClassifierOptions, OptimOptions, TextOptions
from minibert.finetune.tasks import Task
from minibert.model.bert import init_weights
from minibert.model.config import BertConfig
from minibert.model.heads import HEADS, BertClassifier, HeadConfig, TaskClassifier, layer_indices
from minibert.resources import model_path
from minibert.text.encoding import TextEncoding
from minibert.text.long_text import paper_head_tokens
from minibert.text.tokenization import FullTokenizer
from minibert.training.machine import grad_scaler
from minibert.training.optimization import build_optimizer, freeze_encoder, parameter_groups, unfreeze
from minibert.training.schedules import build_scheduler


def load_init(init: str, text: TextOptions, classifier: ClassifierOptions, say) -> Checkpoint:
    """The pretrained checkpoint, checked against the options that depend on it."""
    pretrained = load_checkpoint(model_path(init))
    if pretrained.vocab_file is None:
        raise ConfigError(f"--init {init}: no vocab.txt beside the checkpoint")
    for warning in pretrained.warnings:  # e.g. a key of a newer BERT variant, or a typo
        say(f"warning: {warning}")
    config = pretrained.config
    if text.max_seq_length > config.max_position_embeddings:
        raise ConfigError(f"--max_seq_length {text.max_seq_length} is more than the model's "
                          f"max_position_embeddings ({config.max_position_embeddings}) in {init}")
    try:
        layer_indices(classifier.layers, config.num_hidden_layers)
    except ValueError as e:
        raise ConfigError(f"--layers {classifier.layers}: {e}") from None
    return pretrained


def load_tokenizer(pretrained: Checkpoint, text: TextOptions, say) -> FullTokenizer:
    tokenizer = FullTokenizer(pretrained.vocab_file, text.do_lower_case, text.tokenizer_variant)
    for warning in check_vocab(tokenizer, pretrained.config, pretrained.vocab_file):
        say(f"warning: {warning}")
    return tokenizer


def text_encoding(text: TextOptions) -> TextEncoding:
    """How texts become model inputs; head_tokens 0 takes the paper's head+tail ratio (128 of 510)."""
    head_tokens = text.head_tokens or paper_head_tokens(text.max_seq_length)
    try:
        return TextEncoding(text.max_seq_length, text.truncation, head_tokens, text.hierarchical, text.max_chunks)
    except ValueError as e:
        raise ConfigError(f"--head_tokens {text.head_tokens}: {e}") from None


def resolve_pooler(pooler: str, layers: str, num_layers: int) -> bool:
    """--pooler auto: the tanh pooler only on the last layer's [CLS], the input it was trained on in
    pre-training. For any other layer selection the paper's code (xuyige/BERT4doc-Classification)
    classifies the raw [CLS] vectors, so auto turns the pooler off there."""
    if pooler == "auto":
        return layers in ("last", str(num_layers))
    return pooler == "true"


def head_config(classifier: ClassifierOptions, task: Task, num_layers: int, threshold: float) -> HeadConfig:
    """`task`'s head as the options say; a multi-label task's decides at `threshold` (--threshold)."""
    pooler = resolve_pooler(classifier.pooler, classifier.layers, num_layers)
    decisions = {"multi_label": True, "threshold": threshold} if task.multi_label else {}
    return HeadConfig(len(task.labels), classifier.head, classifier.layers, classifier.layer_combine, pooler,
                      classifier.chunk_pooling, classifier.dropout, classifier.lstm_size, classifier.attention_hops,
                      classifier.attention_size, **decisions)


def new_classifier(pretrained: Checkpoint, classifier: ClassifierOptions, tasks: list[Task],
                   threshold: float) -> TaskClassifier:
    """The pretrained encoder with a new head per task (one for a single-task run). Every encoder
    weight is loaded, strictly."""
    layers = pretrained.config.num_hidden_layers
    heads = {t.name: head_config(classifier, t, layers, threshold) for t in tasks}
    model = TaskClassifier(pretrained.config, heads, classifier.head_init)
    load_state(model.bert, pretrained.state, str(pretrained.source))
    return model


def load_stage1_classifier(folder, task: Task) -> BertClassifier:
    """Multi-task stage 2: the shared encoder and `task`'s trained head of the model in `folder`."""
    saved = load_classifier(folder, task.name)
    if saved.labels != task.labels:
        raise ConfigError(f"{folder}: task {task.name}'s head has labels {saved.labels}, not {task.labels}")
    return saved.model


def new_head(config: BertConfig, head: HeadConfig, head_init: str) -> torch.nn.Module:
    """A head initialised as TaskClassifier initialises one (WEIGHT_INITS[head_init], std initializer_range)."""
    module = HEADS[head.head](config, head)
    module.apply(lambda m: init_weights(m, config.initializer_range, head_init))
    return module


def stage2_classifier(folder, task: Task, head: str, head_init: str, seed: int) -> TaskClassifier:
    """Multi-task stage 2's start: the encoder (with the pooler) of the model in `folder` and `task`'s
    head from stage 1 (head "kept"), or a new one drawn as `head_init` says from torch.manual_seed(seed)
    (head "fresh": the paper's code saves only model.bert after stage 1, so its second stage starts a
    new classifier).
    The global generator is left as it was, so the run's dropout stream does not depend on the choice."""
    saved = load_stage1_classifier(folder, task)
    module = saved.head
    # A multi-label head's thresholds chosen on dev after stage 1 are chosen again after stage 2.
    head_config = replace(saved.head_config, thresholds=None)
    if head == "fresh":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = new_head(saved.config, head_config, head_init)
    return TaskClassifier.from_parts(saved.config, {task.name: head_config}, saved.bert, {task.name: module})


@dataclass
class Optimisation:
    """The optimizer (layer-wise lrs and Google's decay exclusions), its schedule and the loss scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler


def build_optimisation(optim: OptimOptions, model, total_steps: int, device: torch.device,
                       precision: str) -> Optimisation:
    """total_steps counts optimizer steps, i.e. after gradient accumulation."""
    groups = parameter_groups(model, lr=optim.learning_rate, weight_decay=optim.weight_decay,
                              layer_decay=optim.layer_decay, num_layers=model.config.num_hidden_layers)
    optimizer = build_optimizer(optim.optimizer, groups)
    schedule_options = {"ratio": optim.slanted_ratio} if optim.schedule == "slanted_triangular" else {}
    scheduler = build_scheduler(optimizer, optim.schedule, total_steps, round(optim.warmup_proportion * total_steps),
                                **schedule_options)
    return Optimisation(optimizer, scheduler, grad_scaler(device, precision))


def set_trainable(optim: OptimOptions, model, epoch: int, say) -> None:
    """BERT-Feat freezes the encoder; ULMFiT's gradual unfreezing adds a layer group each epoch."""
    if optim.freeze_encoder:
        freeze_encoder(model)
    elif optim.gradual_unfreezing:
        names = unfreeze(model, epoch, model.config.num_hidden_layers)
        say(f"epoch {epoch + 1}: training {', '.join(names)}")


def train_mode(optim: OptimOptions, model) -> None:
    model.train()
    if optim.freeze_encoder:
        model.bert.eval()  # BERT-Feat: fixed features, so no dropout inside the encoder
