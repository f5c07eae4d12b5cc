"""A fine-tuned classifier on disk: a minibert checkpoint folder plus classifier.json.

classifier.json holds what prediction needs besides the weights: the label names (their order
defines the output indices), the head configuration, how texts were encoded (truncation or
hierarchical chunks) and the tokenizer settings. A multi-task model (a TaskClassifier with a head
per task, architecture "MultiTaskClassifier") holds every task's head; its classifier.json has
"tasks": {name: {"labels", "head"}} instead, and load_classifier(folder, task) returns that task's
classifier.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minibert.checkpoints.formats import checkpoint_of, load_checkpoint, load_state, save_minibert, unfilled
from minibert.checkpoints.integrity import check_vocab
from minibert.errors import CheckpointError
from minibert.files import atomic_write_text, read_json_object, replace_folder
from minibert.model.heads import BertClassifier, HeadConfig, TaskClassifier
from minibert.schema import is_instance, typed
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import VARIANTS, FullTokenizer

CLASSIFIER_FILE = "classifier.json"


def classifier_architecture(head: HeadConfig, encoding: TextEncoding) -> str:
    """BertForSequenceClassification when the model is run_classifier's (dropout + linear on the pooled
    [CLS] of the last layer, one window per text), so Google's and Hugging Face's code read it the
    same; else BertClassifier, which only minibert can run."""
    standard = head.head == "cls" and head.layers == "last" and head.pooler and not encoding.hierarchical
    return "BertForSequenceClassification" if standard else "BertClassifier"


MULTI_LABEL_FIELDS = ("multi_label", "threshold", "thresholds")


def head_description(head: HeadConfig) -> dict:
    """classifier.json's "head": every field; a single-label head's file leaves out the multi-label
    ones (their defaults), so it reads as before they existed."""
    description = asdict(head)
    return description if head.multi_label else {k: v for k, v in description.items() if k not in MULTI_LABEL_FIELDS}


def store_thresholds(folder: str | Path, task: str | None, thresholds: list[float]) -> None:
    """Per-label thresholds chosen on dev into a saved classifier's classifier.json (`task`'s head of
    a multi-task model; None for a single-task one), where predict.py reads them."""
    path = Path(folder) / CLASSIFIER_FILE
    description = json.loads(path.read_text(encoding="utf-8"))
    part = description["tasks"][task] if task else description
    part["head"] = head_description(HeadConfig(**{**part["head"], "thresholds": thresholds}))
    atomic_write_text(path, json.dumps(description, indent=2, ensure_ascii=False) + "\n")


@dataclass
class SavedClassifier:
    model: BertClassifier
    labels: list[str]
    encoding: TextEncoding
    tokenizer: FullTokenizer
    warnings: list[str] = field(default_factory=list)  # for the caller to print (e.g. unused vocab rows)


def save_classifier(folder: str | Path, model: BertClassifier, labels: list[str], encoding: TextEncoding,
                    tokenizer: FullTokenizer, vocab_file: Path, extra_files: dict[str, str] | None = None) -> None:
    """A single-task classifier's folder (written as write_folder does)."""
    description = {
        "labels": labels,
        "head": head_description(model.head_config),
        "encoding": asdict(encoding),
        "tokenizer": {"do_lower_case": tokenizer.do_lower_case, "variant": tokenizer.variant_name},
    }
    checkpoint = checkpoint_of(model, vocab_file, classifier_architecture(model.head_config, encoding))
    write_folder(folder, checkpoint, description, extra_files)


def save_multitask_classifier(folder: str | Path, model: TaskClassifier, labels: dict[str, list[str]],
                              encoding: TextEncoding, tokenizer: FullTokenizer, vocab_file: Path,
                              extra_files: dict[str, str] | None = None) -> None:
    """A multi-task model with every head; labels: task -> its label names. Written like save_classifier."""
    description = {
        "tasks": {task: {"labels": labels[task], "head": head_description(head)}
                  for task, head in model.head_configs.items()},
        "encoding": asdict(encoding),
        "tokenizer": {"do_lower_case": tokenizer.do_lower_case, "variant": tokenizer.variant_name},
    }
    write_folder(folder, checkpoint_of(model, vocab_file, "MultiTaskClassifier"), description, extra_files)


def write_folder(folder: str | Path, checkpoint, description: dict, extra_files: dict[str, str] | None) -> None:
    """The checkpoint, classifier.json and the extra files, written under a temporary name and then
    swapped in (files.replace_folder)."""

    def fill(tmp: Path) -> None:
        save_minibert(tmp, checkpoint)
        atomic_write_text(tmp / CLASSIFIER_FILE, json.dumps(description, indent=2, ensure_ascii=False) + "\n")
        for name, text in (extra_files or {}).items():
            atomic_write_text(tmp / name, text)

    replace_folder(folder, fill)


@dataclass(frozen=True)
class TokenizerSettings:
    """classifier.json's "tokenizer": how the texts were tokenized in training."""

    do_lower_case: bool
    variant: str

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {self.variant!r}")


def read_description(description: dict, path: Path) -> tuple[HeadConfig, TextEncoding, list[str], TokenizerSettings]:
    """classifier.json's parts, each checked against its declared types (minibert.schema)."""
    missing = [key for key in ("head", "encoding", "labels", "tokenizer") if key not in description]
    if missing:
        raise CheckpointError(f"{path}: malformed (no {', '.join(missing)})")
    head = typed(HeadConfig, description["head"], f"{path}: head", CheckpointError)
    encoding = typed(TextEncoding, description["encoding"], f"{path}: encoding", CheckpointError)
    settings = typed(TokenizerSettings, description["tokenizer"], f"{path}: tokenizer", CheckpointError)
    labels = description["labels"]
    if not is_instance(labels, list[str]) or not labels:
        raise CheckpointError(f"{path}: labels must be a list of names, got {json.dumps(labels)[:80]}")
    repeated = sorted({name for name in labels if labels.count(name) > 1})
    if repeated:
        raise CheckpointError(f"{path}: label {', '.join(map(repr, repeated))} is listed twice")
    return head, encoding, labels, settings


def _choose_task(description: dict, task: str | None, description_file: Path) -> dict:
    """The single-task part of classifier.json: as it is, or the chosen task's of a multi-task model."""
    tasks = description.get("tasks")
    if tasks is None:
        if task:
            raise CheckpointError(f"{description_file}: a single-task classifier, there is no task {task!r} to choose")
        return description
    if task not in tasks:
        what = f"no task {task!r}" if task else "a multi-task model"
        raise CheckpointError(f"{description_file}: {what}; choose one of {', '.join(tasks)} (--task)")
    return {**description, **tasks[task]}


def load_classifier(folder: str | Path, task: str | None = None) -> SavedClassifier:
    """A classifier folder written by train.py; for a multi-task model, the classifier of `task`
    (the shared encoder with that task's head); None for a single-task model."""
    folder = Path(folder)
    description_file = folder / CLASSIFIER_FILE
    if not description_file.is_file():
        raise CheckpointError(f"{folder}: not a classifier saved by train.py (no {CLASSIFIER_FILE})")
    description = read_json_object(description_file, "classifier description", CheckpointError)
    # Outside the try below: a --task mistake is the user's, not a malformed file.
    description = _choose_task(description, task, description_file)
    head, encoding, labels, tokenizer_settings = read_description(description, description_file)
    if len(labels) != head.num_labels:
        raise CheckpointError(f"{description_file}: {len(labels)} labels but num_labels={head.num_labels}")
    checkpoint = load_checkpoint(folder)
    if checkpoint.vocab_file is None:
        raise CheckpointError(f"{folder}: no vocab.txt")
    if encoding.max_seq_length > checkpoint.config.max_position_embeddings:
        # Positions past the table would fail with an IndexError on the first long text, not at load.
        raise CheckpointError(f"{folder}: {description_file.name} encodes max_seq_length={encoding.max_seq_length} "
                              f"tokens but the model has max_position_embeddings="
                              f"{checkpoint.config.max_position_embeddings}")
    state = checkpoint.state
    if task:  # heads.<task>.* becomes the classifier's head.*; the other tasks' heads are left out
        prefix = f"heads.{task}."
        state = {("head." + name[len(prefix):] if name.startswith(prefix) else name): tensor
                 for name, tensor in state.items() if not name.startswith("heads.") or name.startswith(prefix)}
    model = unfilled(BertClassifier, checkpoint.config, head)
    unused = load_state(model, state, str(checkpoint.source))
    if unused:
        raise CheckpointError(f"{checkpoint.source}: tensors the classifier does not use: {', '.join(unused)}")
    tokenizer = FullTokenizer(checkpoint.vocab_file, do_lower_case=tokenizer_settings.do_lower_case,
                              variant=tokenizer_settings.variant, check_case=False)
    warnings = checkpoint.warnings + check_vocab(tokenizer, checkpoint.config, checkpoint.vocab_file)
    return SavedClassifier(model, labels, encoding, tokenizer, warnings)
