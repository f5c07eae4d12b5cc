"""Converting a BERT checkpoint between Google TF, Hugging Face and minibert folders
(checkpoints_convert.py): every tensor loaded into the model the checkpoint holds, the new folder
built under a temporary name, read back, compared tensor by tensor, run on a sentence, and only then
swapped in for DST."""


import json
from dataclasses import dataclass
from pathlib import Path

import torch

from minibert.checkpoints.classifier import CLASSIFIER_FILE, load_classifier
from minibert.checkpoints.formats import FORMATS, Checkpoint, load_checkpoint, load_state, save_checkpoint
from minibert.checkpoints.integrity import check_vocab
from minibert.cli import option
from minibert.errors import CheckpointError, ConfigError
from minibert.files import TEMP_SUFFIX, atomic_write_text, replace_folder
from minibert.output_paths import Inputs, check_not_input, resolve, visible_entries
from minibert.model.bert import BertModel
from minibert.model.heads import BertClassifier, HeadConfig
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.text.encoding import build_inputs, pad_batch
from minibert.text.tokenization import FullTokenizer

SANITY_TEXT = ("the capital of france is", "[MASK]", ".")
# Files a checkpoint folder of one of the three formats (or a train.py classifier folder) holds, by
# name or pattern; a destination folder may hold only these, since the new model replaces them all.
CHECKPOINT_FILES = (
    "config.json", "bert_config.json", "vocab.txt", "model.safetensors", "pytorch_model.bin", "*.ckpt*",
    "checkpoint", "minibert.json", CLASSIFIER_FILE, "train_config.json", "model.safetensors.sha256",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
)
# What train.py writes beside a classifier's weights; kept when the output is a minibert folder.
CLASSIFIER_FILES = (CLASSIFIER_FILE, "train_config.json")


@dataclass
class ConvertConfig:
    src: str = option("", "checkpoint to read: TF prefix/folder, Hugging Face folder or minibert folder")
    dst: str = option("", "folder to write (replaced as a whole; may be SRC's folder)")
    overwrite: bool = option(False, "replace a DST that holds another model (without it, DST must be new, "
                             "empty or SRC's own folder)")
    format: str = option("minibert", "format to write", choices=FORMATS)
    config: str = option("", "config JSON to use instead of the one beside SRC")
    do_lower_case: bool = option(True, "lower-case the sanity sentence (False for cased vocabularies)")


def model_for(checkpoint: Checkpoint, src: Path) -> torch.nn.Module:
    """The model whose parameters are exactly the checkpoint's tensors (strictly loaded).

    MLM + NSP heads -> BertForPreTraining; a classifier head -> BertClassifier (its classifier.json
    when SRC is a train.py folder, else run_classifier's head); otherwise the encoder, which accepts
    lone pre-training head tensors (e.g. transformers' BertForMaskedLM) whose shapes load_checkpoint
    has already checked against the config.
    """
    state = checkpoint.state
    if (src / CLASSIFIER_FILE).is_file():
        return load_classifier(src).model  # validates classifier.json, the vocabulary and every tensor
    if checkpoint.architecture == "BertClassifier":
        raise CheckpointError(f"{checkpoint.source}: a minibert-only classifier head needs the "
                              f"{CLASSIFIER_FILE} train.py wrote beside it")
    if "head.out.weight" in state:
        model = BertClassifier(checkpoint.config, HeadConfig(num_labels=state["head.out.weight"].shape[0]))
    elif "mlm.bias" in state and "nsp.weight" in state:
        model = BertForPreTraining(checkpoint.config)
    else:
        model = BertModel(checkpoint.config)
    load_state(model, state, str(checkpoint.source))  # raises on anything missing or unknown
    return model.eval()


def foreign_files(dst: Path) -> list[str]:
    """Entries of an existing DST that replacing it would delete but that belong to no checkpoint
    (a user's notes, another run, a sub-folder). minibert's leftover temporaries are fine."""
    if not dst.exists():
        return []
    if not dst.is_dir():
        return [f"{dst.name} (a file, not a folder)"]
    foreign = []
    for entry in sorted(dst.iterdir()):
        ours = entry.is_file() and any(entry.match(pattern) for pattern in CHECKPOINT_FILES)
        leftover = entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)
        if not ours and not leftover:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def check_destination(dst: Path, src_folder: Path, inputs: Inputs, overwrite: bool, say=print) -> Path:
    """DST resolved (a symlink is followed and reported; a loop is refused). DST is replaced as a
    whole (so it holds one model afterwards, not the new one beside an old one of another format
    that would load first): refuse when that would delete a user's files, a model other than SRC's
    without --overwrite, or an input (a folder above SRC's, the --config file)."""
    target = resolve(dst, "DST")
    if dst.is_symlink():
        say(f"DST {dst} is a symlink to {target}: writing there (the link stays)")
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{dst}: a file, not a folder")
    if target != src_folder:  # converting in place is allowed: SRC is read into memory first
        check_not_input(target, "DST", [("SRC", src_folder), *inputs])
    foreign = foreign_files(target)
    if foreign:
        raise CheckpointError(f"{dst}: holds files that are not a checkpoint's ({', '.join(foreign)}); "
                              "converting replaces the whole folder: move them or choose another folder")
    if target.is_dir() and visible_entries(target) and target != src_folder and not overwrite:
        raise CheckpointError(f"{dst}: holds another model ({', '.join(visible_entries(target)[:5])}); "
                              "--overwrite true replaces it")
    return target


def sanity_forward(folder: Path, expected: Checkpoint, do_lower_case: bool, say=print) -> None:
    """Load the written folder back, check it holds exactly the tensors read from SRC, and run one
    sentence through it."""
    written = load_checkpoint(folder)
    differ = sorted(set(written.state) ^ set(expected.state)) + sorted(
        name for name in set(written.state) & set(expected.state)
        if not torch.equal(written.state[name].to(expected.state[name].dtype), expected.state[name]))
    if differ:
        raise CheckpointError(f"{folder}: the written checkpoint differs from the source in {', '.join(differ)}")
    has_mlm = "mlm.bias" in written.state and "nsp.weight" in written.state
    model = (BertForPreTraining if has_mlm else BertModel)(written.config).eval()
    load_state(model, written.state, str(written.source))
    if written.vocab_file is None:
        say("sanity forward skipped: no vocab.txt beside the checkpoint")
        return
    tokenizer = FullTokenizer(written.vocab_file, do_lower_case=do_lower_case, check_case=False)
    before, mask, after = SANITY_TEXT
    # [MASK] is inserted by id: the basic tokenizer would split the text "[MASK]" at its brackets.
    ids = tokenizer.encode_text(before) + [tokenizer.vocab[mask]] + tokenizer.encode_text(after)
    batch = pad_batch([build_inputs(ids, cls_id=tokenizer.vocab["[CLS]"], sep_id=tokenizer.vocab["[SEP]"])])
    with torch.no_grad():
        if has_mlm:
            out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
            top = out.mlm_logits[0, len(tokenizer.encode_text(before)) + 1].topk(5).indices.tolist()
            pooled = out.encoder.pooled_output
            say(f"sanity forward: '{' '.join(SANITY_TEXT)}' -> [MASK] top 5: "
                  f"{tokenizer.convert_ids_to_tokens(top)}")
        else:
            pooled = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).pooled_output
    say(f"sanity forward: pooled output norm {pooled.norm().item():.4f}, first values "
          f"{[round(v, 4) for v in pooled[0, :4].tolist()]}")


def write_hf_labels(config_file: Path, classifier_file: Path) -> None:
    """A train.py classifier's labels in a Hugging Face config.json (id2label, label2id), and for a
    multi-label head problem_type "multi_label_classification", so transformers' pipelines name
    the labels and BertForSequenceClassification's loss is the sigmoid cross-entropy."""
    description = json.loads(classifier_file.read_text(encoding="utf-8"))
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["id2label"] = {str(i): name for i, name in enumerate(description["labels"])}
    config["label2id"] = {name: i for i, name in enumerate(description["labels"])}
    if description["head"].get("multi_label"):
        config["problem_type"] = "multi_label_classification"
    atomic_write_text(config_file, json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def convert(cfg: ConvertConfig, check=sanity_forward, say=print) -> None:
    """Convert as `cfg` says. check(folder, checkpoint, do_lower_case, say): the written folder's
    check before it is swapped in (a hook: an exception there leaves DST as it was)."""
    if not cfg.src or not cfg.dst:
        raise ConfigError("usage: checkpoints_convert.py SRC DST [--format minibert|hf|tf]")
    checkpoint = load_checkpoint(cfg.src, cfg.config or None)
    c = checkpoint.config
    say(f"read {checkpoint.format} checkpoint {checkpoint.source}: {c.num_hidden_layers} layers, hidden "
          f"{c.hidden_size}, {c.num_attention_heads} heads, vocab {c.vocab_size}, hidden_act {c.hidden_act}")
    heads = sorted({name.split(".")[0] for name in checkpoint.state} - {"bert"})
    say(f"mapped {len(checkpoint.state)} tensors (encoder{''.join(' + ' + h for h in heads)})")
    for line in checkpoint.skipped:
        say(f"skipped: {line}")
    if checkpoint.ignored_config_keys:
        say(f"ignored config keys: {', '.join(checkpoint.ignored_config_keys)}")
    if checkpoint.vocab_file is None:
        say("warning: no vocab.txt beside the source; the output has no vocabulary")
    else:
        for message in check_vocab(FullTokenizer(checkpoint.vocab_file, check_case=False), c, checkpoint.vocab_file):
            say(f"warning: {message}")
    # Everything is validated before DST is touched: the model SRC holds takes every tensor.
    src_folder = resolve(Path(checkpoint.source).parent, "SRC")
    model_for(checkpoint, src_folder)
    dst = check_destination(Path(cfg.dst), src_folder, [("--config", cfg.config)],
                            cfg.overwrite, say)
    # SRC may be DST's folder: its tensors are in memory and its vocab.txt is copied while the old
    # folder still exists (replace_folder swaps only after fill returns).

    def fill(folder: Path) -> None:
        save_checkpoint(folder, checkpoint, cfg.format)
        if cfg.format == "hf" and (src_folder / CLASSIFIER_FILE).is_file():
            write_hf_labels(folder / "config.json", src_folder / CLASSIFIER_FILE)
        for name in CLASSIFIER_FILES if cfg.format == "minibert" else ():
            # The head's description travels with a minibert classifier, so it stays a classifier.
            if (src_folder / name).is_file():
                atomic_write_text(folder / name, (src_folder / name).read_text(encoding="utf-8"))
        check(folder, checkpoint, cfg.do_lower_case, say)

    # DST is written as a new folder and swapped in only when the sanity check passed, so a failure
    # leaves the old DST (or none) as it was and no partial folder behind.
    replace_folder(dst, fill)
    say(f"wrote {cfg.format} checkpoint to {dst}")

