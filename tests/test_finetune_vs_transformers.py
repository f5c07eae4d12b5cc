"""minibert's fine-tuning loop (what train.py runs) against the same training written with
transformers: BertForSequenceClassification with torch's fused AdamW over Hugging Face's decay
exclusions, its linear warm-up schedule and clip_grad_norm_, as Trainer steps. From the same
weights (the head minibert drew copied into transformers' classifier), with the batches minibert
drew, dropout off and in fp32, every step's loss must agree: the loss, optimizer, parameter
groups, schedule, clipping and gradient accumulation of the loop, for a single- and a multi-label
task."""

import types
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_model, write_multi_label_split

from minibert.checkpoints.formats import load_checkpoint, save_hf
from minibert.data.features import collate, encode_examples
from minibert.data.multitask import TaskFiles
from minibert.finetune import FinetuneConfig, FitHooks, finetune
from minibert.finetune.model_setup import load_init, load_tokenizer, new_classifier, text_encoding
from minibert.finetune.tasks import read_task

transformers = pytest.importorskip("transformers")

SEED = 7


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny BERT without dropout as a minibert folder and the same weights in the Hugging Face layout."""
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    hf = tmp_path_factory.mktemp("tiny_hf")
    save_hf(hf, load_checkpoint(folder))
    return folder, hf


def minibert_losses(cfg: FinetuneConfig) -> tuple[list[float], list[list[int]]]:
    """Every micro-batch's loss of minibert's run and the example indices of its batches, in order."""
    losses, batches = [], []
    hooks = FitHooks(loss=lambda step, task, loss: losses.append(loss.item()) or loss,
                     epoch_batches=lambda epoch, drawn: batches.extend(indices for _, indices in drawn))
    finetune(cfg, hooks)
    return losses, batches


def initial_head(cfg: FinetuneConfig, multi_label: bool, labels: list[str]) -> torch.nn.Linear:
    """The output layer minibert's run starts from: the run seeds torch, then builds the classifier."""
    torch.manual_seed(SEED)
    pretrained = load_init(cfg.init, cfg.text, cfg.classifier, print)
    task = types.SimpleNamespace(name="task", multi_label=multi_label, labels=labels)
    return new_classifier(pretrained, cfg.classifier, [task], cfg.multilabel.threshold).heads["task"].out


def transformers_losses(cfg: FinetuneConfig, hf_folder: Path, batches: list[list[int]], accumulate: int) -> list:
    files = TaskFiles("task", cfg.data.train_file, cfg.data.dev_file)
    train, labels, _, _ = read_task(files, cfg.data, SEED, print)
    multi_label = isinstance(train.labels[0], list)
    tokenizer = load_tokenizer(load_checkpoint(cfg.init), cfg.text, print)
    docs = encode_examples(train.examples, train.labels, tokenizer, text_encoding(cfg.text))
    model = transformers.BertForSequenceClassification.from_pretrained(
        hf_folder, num_labels=len(labels.names), attn_implementation="eager",
        problem_type="multi_label_classification" if multi_label else "single_label_classification")
    head = initial_head(cfg, multi_label, labels.names)
    with torch.no_grad():
        model.classifier.weight.copy_(head.weight)
        model.classifier.bias.copy_(head.bias)
    decayed = [not ("bias" in name or "LayerNorm" in name) for name, _ in model.named_parameters()]
    groups = [{"params": [p for p, d in zip(model.parameters(), decayed) if d == decay],
               "weight_decay": cfg.optim.weight_decay if decay else 0.0} for decay in (True, False)]
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.learning_rate, eps=1e-8, fused=True)
    steps = len(batches) // accumulate
    warmup = round(cfg.optim.warmup_proportion * steps)  # minibert's count of warm-up steps
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)
    model.train()
    losses = []
    for i, indices in enumerate(batches):
        batch = collate([docs[j] for j in indices], False, tokenizer.pad_id, len(labels.names))
        loss = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        (loss / accumulate).backward()
        losses.append(loss.item())
        if (i + 1) % accumulate == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    return losses


@pytest.mark.parametrize("kind, accumulate", [("single_label", 1), ("multi_label", 1), ("multi_label", 3)])
def test_every_step_loss_equals_transformers(model_folders, data, tmp_path, kind, accumulate):
    """Single-label: the topic data set (150 texts, 19 batches of 8 an epoch). Multi-label: 120 texts,
    15 micro-batches an epoch, one optimizer step per batch or per 3 (gradient accumulation)."""
    folder, hf_folder = model_folders
    if kind == "multi_label":
        data = tmp_path / "multi_label"
        data.mkdir()
        for name, n, seed in (("train", 120, 1), ("dev", 16, 2)):
            write_multi_label_split(data / f"{name}.jsonl", n, seed)
    cfg = FinetuneConfig.of(
        init=str(folder), train_file=str(data / "train.jsonl"), dev_file=str(data / "dev.jsonl"), test_file="",
        output_dir=str(tmp_path / "run"), max_seq_length=24, epochs=4, batch_size=8, grad_accum_steps=accumulate,
        eval_batch_size=16, batching="random", learning_rate=5e-3, layer_decay=1.0, optimizer="adamw",
        schedule="warmup_linear", warmup_proportion=0.1, weight_decay=0.01, max_grad_norm=0.5, dropout=0.0,
        device="cpu", seed=SEED, threads=1, precision="fp32")
    ours, batches = minibert_losses(cfg)
    assert len(ours) == len(batches) == 4 * (19 if kind == "single_label" else 15)
    theirs = transformers_losses(cfg, hf_folder, batches, accumulate)
    assert ours[0] - sum(ours[-5:]) / 5 > 0.02  # it learns: equal numbers are not a constant loss
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=2e-5, atol=1e-6)
