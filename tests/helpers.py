"""What the test modules share: fixture paths, tiny models, tiny data sets and the configs over them.

Plain functions and constants; the pytest fixtures built on them are in conftest.py. pytest puts
tests/ on sys.path (the rootdir's conftest.py is imported in prepend mode), so a test module writes
`from helpers import ...`; no test module imports another (test_code_layout.py checks it).
"""

import json
import os
import random
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from minibert.checkpoints.formats import checkpoint_of, save_minibert
from minibert.cli import parse_config
from minibert.data.pretraining_instances import (
    Documents,
    Instances,
    InstanceSettings,
    Vocabulary,
    create_instances,
    read_documents,
)
from minibert.experiments.reproduction import ReproduceConfig, reproduce
from minibert.experiments.runner import Inits
from minibert.finetune import FinetuneConfig, FitHooks, finetune
from minibert.model.bert import BertModel
from minibert.model.config import BertConfig
from minibert.text.tokenization import FullTokenizer

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
TINY_GOOGLE = FIXTURES / "tiny_google"
VOCAB_FILE = TINY_GOOGLE / "vocab.txt"  # a real uncased vocabulary
PRETRAINING = FIXTURES / "pretraining_google"
GOOGLE_FOLDERS = ("sample_text_64", "sample_text_128", "sample_text_64_wwm")  # what Google's script wrote
SAMPLE_TEXT = PRETRAINING / "sample_text.txt"  # Google's sample corpus
RECORDS = PRETRAINING / "sample_text_64" / "examples.tfrecord"
STEPS = PRETRAINING / "steps_sample_text_64"  # Google's losses and final weights of the acceptance run

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ---------------------------------------------------------------------------------------------
# A tiny encoder in memory, and a batch for it.

# Odd sizes so that a transposed or mis-split dimension cannot hide (as in Google's modeling_test.py).
TINY = BertConfig(vocab_size=99, hidden_size=30, num_hidden_layers=3, num_attention_heads=5,
                  intermediate_size=37, max_position_embeddings=40, type_vocab_size=3)
NO_DROPOUT = BertConfig(**{**TINY.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
LENGTHS = (17, 11, 4, 1)  # a full row, two padded ones and a row of just [CLS]


def batch(lengths=LENGTHS, T=17, seed=0):
    """(input_ids, token_type_ids, attention_mask) for TINY: random tokens, zero after each row's length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY.vocab_size, (len(lengths), T), generator=g)
    types = torch.randint(0, TINY.type_vocab_size, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, types * mask, mask


def triton_kernel_or_skip():
    """The Triton varlen kernel where it can run here: on CUDA, or on the CPU under TRITON_INTERPRET=1."""
    pytest.importorskip("triton", reason="Triton is not installed (pip install -e '.[gpu]')")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1: Triton cannot run its kernels")
    from minibert.model.kernels.varlen_attention import varlen_attention as kernel
    return kernel


# ---------------------------------------------------------------------------------------------
# The topic data set (one task) and the tiny model folder over its words.

TOPICS = {
    "sport": "football match goal team player coach league season win score stadium cup",
    "business": "shares market profit bank company economy price investors growth sales trade firm",
    "tech": "computer software internet phone digital online users technology mobile network data chip",
}
FILLER = "the a of and to in is was for on that with as it at by from this have said will be".split()
TOPIC_WORDS = sorted(set(" ".join(TOPICS.values()).split()) | set(FILLER))


def write_split(path, n, seed, bad_row=False):
    """n rows of the topic data set: texts mix words of their topic with filler words; chance is 1/3."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            label = list(TOPICS)[i % 3]
            words = rng.choices(TOPICS[label].split(), k=rng.randint(4, 8)) + rng.choices(FILLER, k=rng.randint(5, 25))
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
        if bad_row:
            f.write(json.dumps({"text": "   ", "label": "sport"}) + "\n")


TOPIC_LABELS = sorted(TOPICS)


def write_multi_label_split(path: Path, n: int, seed: int) -> None:
    """n multi-label rows of the topic data set: texts about zero to two topics, labelled with the list
    of those topics."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            topics = rng.sample(TOPIC_LABELS, [1, 1, 2, 0][i % 4])
            words = [w for t in topics for w in rng.choices(TOPICS[t].split(), k=rng.randint(3, 6))]
            words += rng.choices(FILLER, k=rng.randint(4, 12))
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": topics}) + "\n")


def make_tiny_model(folder: Path, tokens: Iterable[str] = (",", ".", *TOPIC_WORDS), max_position_embeddings=64,
                    **config_overrides) -> Path:
    """A freshly initialised 2-layer BERT (hidden 32, seed 0) saved as a minibert folder; its vocabulary
    is the special tokens, then `tokens` in the order given (by default punctuation and the topic words)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + list(tokens)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=max_position_embeddings, **config_overrides)
    torch.manual_seed(0)
    save_minibert(folder, checkpoint_of(BertModel(config), folder / "vocab.txt"))
    return folder


def config(init, data, out, **overrides) -> FinetuneConfig:
    """A fine-tuning of the topic data set in `data` that learns it in seconds on one CPU thread."""
    values = dict(init=str(init), train_file=str(data / "train.jsonl"), dev_file=str(data / "dev.jsonl"),
                  test_file=str(data / "test.jsonl"), output_dir=str(out), max_seq_length=24, head_tokens=6,
                  epochs=5, batch_size=8, learning_rate=5e-3, layer_decay=0.9, eval_batch_size=16,
                  log_every=2, device="cpu", seed=7, pooler="false", threads=1, precision="fp32")
    values.update(overrides)
    return FinetuneConfig.of(**values)


# ---------------------------------------------------------------------------------------------
# Two tasks for multi-task runs: disjoint vocabularies (topic words, sentiment words) and shared filler.

TASKS = {
    "topics": {"sport": "football match goal team player coach league".split(),
               "business": "shares market profit bank company economy price".split(),
               "tech": "computer software internet phone digital online chip".split()},
    "sentiment": {"good": "great wonderful excellent loved superb delightful".split(),
                  "bad": "awful terrible boring hated dreadful poor".split()},
}
TASK_FILLER = "the a of and to in is was for on that with as it".split()
TASK_WORDS = sorted({w for classes in TASKS.values() for words in classes.values() for w in words} | set(TASK_FILLER))


def write_task(folder: Path, task: str, sizes=(60, 24, 30), seed=0):
    """The train, dev and test files of one of TASKS, with sizes rows each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    classes = TASKS[task]
    for split, n in zip(("train", "dev", "test"), sizes):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                label = list(classes)[i % len(classes)]
                words = rng.choices(classes[label], k=rng.randint(2, 4)) + rng.choices(TASK_FILLER, k=rng.randint(3, 8))
                rng.shuffle(words)
                f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")


# ---------------------------------------------------------------------------------------------
# Google's pre-training fixtures (tests/fixtures/pretraining_google, see its README).

ACCEPTANCE = ("--train_batch_size=4 --max_seq_length=64 --max_predictions_per_seq=10 --num_train_steps=20 "
              "--num_warmup_steps=0 --schedule=constant --learning_rate=1e-3 --optimizer=adam_weight_decay "
              "--weight_decay=0.01 --max_grad_norm=1.0 --shuffle=false --log_every=1 --precision=fp32").split()


def make_google_dir(folder: Path) -> Path:
    """A copy of tiny_google whose config has no dropout and the tanh GELU, as Google's run used."""
    folder.mkdir()
    for path in TINY_GOOGLE.glob("*"):
        if path.name.startswith(("bert_", "vocab")):
            shutil.copy(path, folder)
    config = json.loads((folder / "bert_config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, hidden_act="gelu_tanh")
    (folder / "bert_config.json").write_text(json.dumps(config))
    return folder


def create_data_args(folder: str, output: Path) -> list[str]:
    """pretrain.py create_data's arguments with the settings Google's script wrote `folder` with."""
    settings = json.loads((PRETRAINING / folder / "settings.json").read_text())
    return ["create_data", f"--input_file={SAMPLE_TEXT}", f"--output_file={output}",
            f"--vocab_file={VOCAB_FILE}", f"--do_lower_case={settings['do_lower_case']}",
            f"--do_whole_word_mask={settings['do_whole_word_mask']}",
            f"--max_seq_length={settings['max_seq_length']}",
            f"--max_predictions_per_seq={settings['max_predictions_per_seq']}",
            f"--random_seed={settings['seed']}", f"--dupe_factor={settings['dupe_factor']}",
            f"--masked_lm_prob={settings['masked_lm_prob']}", f"--short_seq_prob={settings['short_seq_prob']}"]


def google_instances(folder: str) -> tuple[Instances, FullTokenizer]:
    """The instances made of sample_text.txt with the settings Google's script wrote `folder` with
    (as create_data makes them), and the tokenizer that made them."""
    settings = json.loads((PRETRAINING / folder / "settings.json").read_text())
    tokenizer = FullTokenizer(VOCAB_FILE, settings["do_lower_case"])
    instances = create_instances(
        read_documents([SAMPLE_TEXT], tokenizer),
        InstanceSettings(settings["max_seq_length"], settings["max_predictions_per_seq"], settings["masked_lm_prob"],
                         settings["short_seq_prob"], settings["dupe_factor"], settings["do_whole_word_mask"]),
        Vocabulary.of(tokenizer), random.Random(settings["seed"]))
    return instances, tokenizer


def google_features(folder: str) -> list[dict]:
    """The features of the records Google's script wrote to `folder`, every value a list."""
    rows = [json.loads(line) for line in (PRETRAINING / folder / "features.jsonl").read_text().splitlines()]
    return [{k: v if isinstance(v, list) else [v] for k, v in row.items()} for row in rows]


# Synthetic documents: token t of sentence s of document d is 1000 * (d + 1) + 10 * s + t.
VOCAB = Vocabulary(cls_id=2, sep_id=3, mask_id=4, random_words=list(range(10_000)),
                   continuation=frozenset(range(9000, 10_000)))


def make_documents(shape: list[list[int]]) -> Documents:
    """shape[d][s] = number of tokens of sentence s of document d."""
    documents = Documents()
    for d, sentences in enumerate(shape):
        for s, length in enumerate(sentences):
            documents.add_sentence([1000 * (d + 1) + 10 * s + t for t in range(length)])
        documents.end_document()
    return documents


# ---------------------------------------------------------------------------------------------
# The reproduction runner.

INITS = Inits("bert-base", chinese="bert-chinese")


def parse_reproduce(argv: list[str]) -> ReproduceConfig:
    """reproduce.py's command line as a config."""
    return parse_config(ReproduceConfig, argv, positional=("experiment",))


def reproduce_text(cfg: ReproduceConfig) -> str:
    return reproduce(cfg)[0]


def make_run_folder(folder, error=None, last=False, **provenance):
    """A fine-tuning's output folder as the runner sees it: results.json when finished, last/ when interrupted."""
    folder.mkdir(parents=True, exist_ok=True)
    if error is not None:
        (folder / "results.json").write_text(json.dumps({"test_error": error, **provenance}))
    if last:
        (folder / "last").mkdir()


class Crash(Exception):
    """Raised by the step hook: the run ends there, as a kill would end it."""


def crash_after(step: int) -> FitHooks:
    """Hooks that end the run right after optimizer step `step` (and its checkpoint, if one is due)."""
    def after_step(done: int) -> None:
        if done == step:
            raise Crash(step)
    return FitHooks(after_step=after_step)


def run_interrupted(cfg, step):
    with pytest.raises(Crash):
        finetune(cfg, crash_after(step))
