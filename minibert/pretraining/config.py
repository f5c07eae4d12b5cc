"""The pre-training subcommands' configs: one dataclass each, whose fields are the command line's flags
(minibert.cli), named and defaulted as Google's scripts where Google has the flag. train's config is
made of option groups, like fine-tuning's, each read by the code it configures; its options are
checked by one rules table (check_options), as fine-tuning's are."""

from dataclasses import dataclass, field

from minibert.cli import FlatOptions, at_least, check_rules, finite_at_least, option
from minibert.data.pretraining_batches import MASKINGS
from minibert.data.pretraining_corpus import SPLITTERS
from minibert.text.vocab_building import MODEL_TYPES
from minibert.training.machine import MACHINE_RULES, TrainingMachineOptions
from minibert.training.metrics_log import TENSORBOARD_FOLDER, TENSORBOARD_HELP, require_tensorboard
from minibert.training.optimization import OPTIMIZERS
from minibert.training.run_context import RESUMABLE_CHANGES as SHARED_RESUMABLE_CHANGES
from minibert.training.schedules import SCHEDULES


@dataclass
class CorpusConfig:
    """corpus: Google's text format from the project's data sets."""
    sources: str = option("bbc_news", "comma-separated: a data set (within-task: imdb, yelp_polarity, yelp_full, trec, "
                          "yahoo_answers, ag_news, dbpedia, bbc_news), a domain (in-domain: sentiment, question, "
                          "topic), 'all' (cross-domain: the seven English sets), or a .jsonl/.txt file")
    output_file: str = option("corpora/bbc_news.txt", "the corpus; its manifest goes to OUTPUT.manifest.json")
    data_dir: str = option("data", "where the prepared data sets are (DATA_DIR/<name>/<split>.jsonl)")
    splits: str = option("train", "splits of the data sets to use; anything but train is recorded in the manifest")
    language: str = option("en", "en: spaCy sentences; zh: split after 。？！ (paper §5.2)", choices=tuple(SPLITTERS))
    spacy_model: str = option("", "an installed trained spaCy pipeline (e.g. en_core_web_sm); "
                              "empty = the rule-based sentencizer")
    shard_size_mb: float = option(0.0, "> 0: write shards of about this many MB, ending at documents, "
                                  "OUTPUT-0000K-of-0000N.txt (for create_data --sharded); 0 = one file")


@dataclass
class VocabConfig:
    """vocab: a WordPiece vocab.txt learned with sentencepiece."""
    input_file: str = option("", "corpus text (e.g. from `pretrain.py corpus`); comma-separated files or globs")
    output_file: str = option("vocab.txt", "the vocabulary to write (Google's format, read by FullTokenizer)")
    vocab_size: int = option(30522, "entries in vocab.txt (BERT-base: 30522)")
    do_lower_case: bool = option(True, "learn an uncased vocabulary")
    num_unused: int = option(99, "[unusedN] slots between [PAD] and [UNK] (Google's English vocabularies: 99)")
    model_type: str = option("bpe", "sentencepiece algorithm", choices=MODEL_TYPES)
    heldout_every: int = option(100, "hold out every N-th line to measure the vocabulary (0 = none)")
    max_sentences: int = option(2_000_000, "sentencepiece trains on at most this many lines (sampled)")


@dataclass
class CreateDataConfig:
    """create_data: create_pretraining_data.py."""
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


# Google's run_pretraining.py feeds every record padded to max_seq_length; --padding unpadded runs
# only the real tokens through the encoder's layers (the same math, in another summation order).
PADDED = TrainingMachineOptions(padding="padded")


@dataclass(frozen=True)
class InitOptions:
    """The model that trains and its vocabulary (Google: init_checkpoint, bert_config_file, vocab_file)."""
    init: str = option("", "start from: Google release folder or ckpt prefix, Hugging Face folder, minibert "
                       "folder, or 'minilm'; empty = from scratch with --bert_config_file (Google: init_checkpoint)")
    bert_config_file: str = option("", "model config: required from scratch; with --init it replaces the "
                                   "checkpoint's config (e.g. to change dropout or hidden_act)")
    vocab_file: str = option("", "vocabulary (default: vocab.txt beside --init); saved into final/")


@dataclass(frozen=True)
class RecordOptions:
    """The training records and what they must hold (checked against each record source)."""
    input_file: str = option("", "pre-training records: TFRecord files (Google's or create_data's) or create_data "
                             "folders; comma-separated, globs allowed")
    max_seq_length: int = option(128, "tokens per record (must match the records)")
    max_predictions_per_seq: int = option(20, "predictions per record (must match the records)")
    next_sentence: bool = option(True, "add the next-sentence loss (false: masked LM only, e.g. from scratch, on "
                                 "records from create_data --next_sentence=false)")
    shuffle: bool = option(True, "shuffle records every epoch (false: file order, as given)")


@dataclass(frozen=True)
class MaskingOptions:
    """Which tokens the masked LM predicts: the records' masks, or Google's rule drawn anew."""
    masking: str = option("static", "static: the records' masks (Google); dynamic: Google's rule drawn anew "
                          "per epoch and record", choices=MASKINGS)
    do_whole_word_mask: bool = option(False, "dynamic masking: mask whole words")
    masked_lm_prob: float = option(0.15, "dynamic masking: share of tokens to mask")


@dataclass(frozen=True)
class PretrainOptimOptions:
    """Optimizer steps, batch and schedule (Google's defaults = the paper's settings, §5.2)."""
    train_batch_size: int = option(32, "sequences per optimizer step")
    grad_accum_steps: int = option(1, "split each step's batch into this many forward passes (same result)")
    num_train_steps: int = option(100_000, "optimizer steps")
    num_warmup_steps: int = option(10_000, "linear warm-up steps")
    learning_rate: float = option(5e-5, "peak learning rate")
    optimizer: str = option("adam_weight_decay", "Google's AdamWeightDecay (no bias correction, eps 1e-6) or AdamW",
                            choices=tuple(OPTIMIZERS))
    schedule: str = option("google_warmup_linear", "learning-rate schedule", choices=tuple(SCHEDULES))
    weight_decay: float = option(0.01, "decoupled weight decay, not on biases and LayerNorm")
    max_grad_norm: float = option(1.0, "clip gradients to this global norm (0 = off)")


@dataclass(frozen=True)
class PretrainEvalOptions:
    """The evaluation records (MLM loss/accuracy, NSP accuracy) and when they are scored."""
    eval_input_file: str = option("", "records to evaluate on (MLM loss/accuracy, NSP accuracy)")
    eval_every: int = option(0, "evaluate every N steps (0 = at every checkpoint and at the end)")
    eval_batch_size: int = option(32, "sequences per evaluation forward pass")


@dataclass(frozen=True)
class PretrainRunOptions:
    """The output folder, seed, logging, checkpoints and resuming."""
    output_dir: str = option("runs/pretrain", "where final/, last/, metrics and plots go")
    seed: int = option(12345, "seed of new weights, dropout, shuffling and dynamic masks")
    log_every: int = option(10, "write a metrics.jsonl record of the last N steps' mean losses every N steps")
    save_checkpoints_steps: int = option(1000, "write last/ every N steps (and at the end, and on SIGTERM)")
    keep_checkpoints: int = option(1, "K > 1: every save_checkpoints_steps and at the end the model is also "
                                   "written as checkpoint-STEP/ (a minibert folder train.py --init reads), the "
                                   "K-1 newest kept (a SIGTERM stop writes none); e.g. the paper's Figure 3")
    resume: bool = option(False, "continue from output_dir/last/ (same result as an uninterrupted run)")
    allow_data_change: bool = option(False, "--resume even if the --input_file records changed since the run began")
    overwrite_output_dir: bool = option(False, "replace the earlier run in a non-empty output_dir")
    tensorboard: bool = option(False, TENSORBOARD_HELP)


@dataclass(frozen=True)
class PretrainConfig(FlatOptions):
    """train: run_pretraining.py (Google's flag names where Google has one)."""
    model: InitOptions = field(default_factory=InitOptions)
    records: RecordOptions = field(default_factory=RecordOptions)
    mlm: MaskingOptions = field(default_factory=MaskingOptions)
    optim: PretrainOptimOptions = field(default_factory=PretrainOptimOptions)
    evaluation: PretrainEvalOptions = field(default_factory=PretrainEvalOptions)
    machine: TrainingMachineOptions = field(default_factory=lambda: PADDED)
    run: PretrainRunOptions = field(default_factory=PretrainRunOptions)


# Options that may change between an interrupted run and its --resume (besides every run's); any
# other change is refused.
RESUMABLE_CHANGES = SHARED_RESUMABLE_CHANGES | {"save_checkpoints_steps", "keep_checkpoints", "eval_every",
                                                "eval_batch_size", "eval_input_file"}
# What a run writes into output_dir; --overwrite_output_dir removes these (and nothing else).
RUN_OUTPUTS = ("last", "final", "metrics.jsonl", "config.json", "pretraining_curves.png", "checkpoint-*",
               TENSORBOARD_FOLDER)


# (test, requirement) per option (minibert.cli.check_rules); non-finite numbers fail every test.
RULES = MACHINE_RULES | {
    "train_batch_size": (at_least(1), "at least 1"),
    "grad_accum_steps": (at_least(1), "at least 1"),
    "num_train_steps": (at_least(1), "at least 1"),
    "num_warmup_steps": (at_least(0), "at least 0"),
    "learning_rate": (finite_at_least(0), "a finite number, at least 0"),
    "weight_decay": (finite_at_least(0), "a finite number, at least 0"),
    "max_grad_norm": (finite_at_least(0), "a finite number, at least 0 (0 = no clipping)"),
    "eval_every": (at_least(0), "at least 0 (0 = with every checkpoint)"),
    "eval_batch_size": (at_least(1), "at least 1"),
    "log_every": (at_least(1), "at least 1"),
    "save_checkpoints_steps": (at_least(1), "at least 1"),
    "keep_checkpoints": (at_least(1), "at least 1"),
}


def check_options(cfg: PretrainConfig) -> None:
    """Every option value train cannot run with, as one ConfigError naming the option, before
    anything is read."""
    values = cfg.flat()
    check_rules(values, RULES)
    accum, steps = cfg.optim.grad_accum_steps, cfg.optim.num_train_steps
    check_rules(values, {  # rules between two options
        "train_batch_size": (lambda v: v % accum == 0, f"a multiple of --grad_accum_steps ({accum})"),
        "num_warmup_steps": (lambda v: v <= steps, f"at most --num_train_steps ({steps})")})
    if cfg.run.tensorboard:
        require_tensorboard()  # a one-line error naming the package, before anything is read


@dataclass(frozen=True)
class DefaultConfig(FlatOptions):
    """The embedded default: within-task further pre-training of MiniLM on BBC News (paper §5.4, ITPT)."""
    output_dir: str = option("runs/bbc_itpt", "corpora, records, and the pre-training run (output_dir/run)")
    num_train_steps: int = option(300, "optimizer steps (the paper: 100,000; the whole default takes about "
                                  "5 minutes on 2 idle cores)")
    train_batch_size: int = option(16, "sequences per step (the paper: 32)")
    max_seq_length: int = option(128, "tokens per record (the paper: 128)")
    learning_rate: float = option(1e-4, "peak learning rate (the paper: 5e-5; higher here because "
                                  "MiniLM's MLM/NSP heads start untrained)")
    machine: TrainingMachineOptions = field(default_factory=lambda: PADDED)
