"""What train reads before its first step, each checked against the others: the model (from --init,
whose MLM/NSP heads may be missing, or new from --bert_config_file), its vocabulary, and the records
(their shapes, token ids and kind must fit the model and the flags)."""

import hashlib
import json
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path

import torch

from minibert.checkpoints.formats import load_checkpoint, load_state, state_of
from minibert.checkpoints.integrity import check_vocab
from minibert.data.pretraining_batches import DynamicMasking, RecordStream
from minibert.data.pretraining_instances import Vocabulary
from minibert.data.pretraining_records import read_records
from minibert.errors import CheckpointError, ConfigError, DataError
from minibert.files import sha256_file
from minibert.model.bert import num_parameters
from minibert.model.config import BertConfig
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.pretraining.config import InitOptions, PretrainConfig, RecordOptions
from minibert.pretraining.data_steps import expand_files
from minibert.resources import model_path
from minibert.text.tokenization import FullTokenizer
from minibert.training.run_context import RunContext


def read_inputs(cfg: PretrainConfig, context: RunContext) -> tuple[BertForPreTraining, Path, RecordStream,
                                                                  RecordStream | None]:
    """The model, its vocab.txt, and the training and (--eval_input_file) evaluation records, each
    checked against the others and the flags, before anything is written."""
    seed, records, mlm = cfg.run.seed, cfg.records, cfg.mlm
    model, vocab_file, report = build_model(cfg.model, seed)
    vocab, warnings = check_vocabulary(vocab_file, model.config)
    for warning in warnings:
        context.say(warning)
    masking = (DynamicMasking(vocab, mlm.masked_lm_prob, mlm.do_whole_word_mask, seed)
               if mlm.masking == "dynamic" else None)
    vocab_size = model.config.vocab_size
    stream = load_stream(records.input_file, records, seed, vocab_size, masking, "input_file", vocab_file,
                         context.say)
    eval_file = cfg.evaluation.eval_input_file  # read in file order, with its own masks
    eval_stream = (load_stream(eval_file, replace(records, shuffle=False), seed, vocab_size, None, "eval_input_file",
                               vocab_file, context.say) if eval_file else None)
    if records.max_seq_length > model.config.max_position_embeddings:
        raise ConfigError(f"--max_seq_length {records.max_seq_length} is more than the model's "
                          f"max_position_embeddings ({model.config.max_position_embeddings})")
    context.set_execution(model.bert)  # padding "padded" by default: every record at max_seq_length, as Google's
    context.say("\n".join(report))
    W, batch, steps = context.setup.world_size, cfg.optim.train_batch_size, cfg.optim.num_train_steps
    per_step = batch * W  # sequences per optimizer step, all processes
    context.say(f"{len(stream)} training records; {steps} steps of {per_step} sequences "
                f"= {steps * per_step / len(stream):.2f} epochs; precision {context.precision}"
                + (f"; {W} processes of {batch}" if context.setup.enabled else ""))
    return model, vocab_file, stream, eval_stream


def build_model(cfg: InitOptions, seed: int) -> tuple[BertForPreTraining, Path, list[str]]:
    """The model with every parameter from --init (heads it lacks are initialised and reported),
    or initialised from --bert_config_file; returns (model, vocab file, report lines)."""
    torch.manual_seed(seed)  # new heads (or a model from scratch) start from the same weights every run
    if not cfg.init:
        if not cfg.bert_config_file or not cfg.vocab_file:
            raise ConfigError("from scratch (no --init) needs --bert_config_file and --vocab_file")
        model = BertForPreTraining(read_config(cfg.bert_config_file))
        report = f"new model from {cfg.bert_config_file}: {num_parameters(model) / 1e6:.1f}M parameters"
        return model, Path(cfg.vocab_file), [report]
    checkpoint = load_checkpoint(model_path(cfg.init), cfg.bert_config_file or None)
    model = BertForPreTraining(checkpoint.config)
    initialised = [name for name in state_of(model) if name not in checkpoint.state]
    encoder_missing = [name for name in initialised if not name.startswith(("mlm.", "nsp."))]
    if encoder_missing:
        raise CheckpointError(f"{checkpoint.source}: missing encoder weights: {', '.join(encoder_missing)}")
    # Heads the checkpoint lacks (Hugging Face's MiniLM has no cls/* weights) keep their fresh init.
    unused = load_state(model, {**state_of(model), **checkpoint.state}, str(checkpoint.source))
    report = [f"loaded {checkpoint.source} ({checkpoint.format}, {num_parameters(model) / 1e6:.1f}M parameters)"]
    if initialised:
        report.append(f"initialised (not in the checkpoint): {', '.join(initialised)}")
    if unused or checkpoint.skipped:
        report.append(f"not used: {', '.join(unused + checkpoint.skipped)}")
    vocab = Path(cfg.vocab_file) if cfg.vocab_file else checkpoint.vocab_file
    if vocab is None:
        raise ConfigError(f"{cfg.init}: no vocab.txt beside the checkpoint; pass --vocab_file")
    return model, vocab, report


def read_config(path: str) -> BertConfig:
    try:
        config, _ = BertConfig.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}: bad config: {e}") from None
    return config


def check_vocabulary(vocab_file: Path, config: BertConfig) -> tuple[Vocabulary, list[str]]:
    """The vocabulary must be the model's (minibert.checkpoints.integrity.check_vocab); returns it
    and the warnings to show."""
    # Only ids are needed here (special tokens, "##" pieces), so the case check is off.
    tokenizer = FullTokenizer(vocab_file, do_lower_case=True, check_case=False)
    warnings = [f"warning: {warning}" for warning in check_vocab(tokenizer, config, vocab_file)]
    return Vocabulary.of(tokenizer), warnings


# Records and --next_sentence must agree: pairs, half with a random second segment, would teach
# masked-LM-only training text that does not follow on; single segments have no NSP labels at all.
NSP_MISMATCH = {
    True: "{source}: sentence-pair records (half the second segments are random text) with --next_sentence=false; "
          "make masked-LM-only records with create_data --next_sentence=false",
    False: "{source}: masked-LM-only records (create_data --next_sentence=false) have no next-sentence labels; "
           "train them with --next_sentence=false",
}


def record_paths(spec: str, flag: str) -> list[Path]:
    """The record files and folders of --input_file / --eval_input_file, in the given order."""
    # A glob such as records/x-* also matches the manifests create_data writes beside TFRecord files.
    return [p for p in expand_files(spec, flag) if not p.name.endswith(".tfrecord.manifest.json")]


def load_stream(spec: str, cfg: RecordOptions, seed: int, vocab_size: int, masking: DynamicMasking | None,
                flag: str, vocab_file: Path | None = None,
                say: Callable[[str], None] = lambda message: None) -> RecordStream:
    """The records of `spec` as one stream (shuffled with `seed` when cfg.shuffle), each source
    checked against the flags and the vocabulary (its size, and vocab_file's digest where create_data
    recorded the one it used). Records whose vocabulary cannot be checked (no manifest: Google's
    files, or copied without it) are a warning through `say`."""
    sources = [read_records(p, cfg.max_seq_length, cfg.max_predictions_per_seq) for p in record_paths(spec, flag)]
    for records in sources:
        if records.next_sentence != cfg.next_sentence:
            raise ConfigError(NSP_MISMATCH[records.next_sentence].format(source=records.source))
        made_with = records.manifest.get("vocab_sha256")
        if made_with and vocab_file is not None and made_with != sha256_file(vocab_file):
            raise ConfigError(f"{records.source}: made with another vocab.txt than {vocab_file} (its manifest's "
                              "vocab_sha256 differs): the token ids would mean other words")
        if not made_with and vocab_file is not None:
            say(f"warning: {records.source}: no manifest records the vocab.txt it was made with (Google's "
                f"records, or copied without their manifest): that it is {vocab_file} cannot be checked")
        largest = int(records.arrays["input_ids"].max(initial=0))
        if largest >= vocab_size:
            raise DataError(f"{records.source}: token id {largest} is outside the model's vocabulary "
                            f"({vocab_size} ids): records made with another vocab.txt")
    return RecordStream(sources, cfg.shuffle, seed, masking)


def records_sha256(spec: str, flag: str) -> str:
    """One digest of the records' bytes: every file of `spec`, and every file of a records folder in
    name order (what --resume compares, so a run does not continue on other data unnoticed)."""
    digest = hashlib.sha256()
    for path in record_paths(spec, flag):
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(sha256_file(file).encode())
    return digest.hexdigest()
