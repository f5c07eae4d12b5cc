"""Further pre-training of BERT (masked LM + next-sentence prediction) as Google's code does it.

    config.py        the subcommands' configs (their fields are pretrain.py's flags; train's in
                     option groups, checked by one rules table)
    data_steps.py    corpus (data sets -> Google's text format), vocab (WordPiece vocab.txt),
                     create_data (create_pretraining_data.py; --sharded: one process per file)
    model_setup.py   the model from --init (missing MLM/NSP heads initialised) or a config, the
                     vocabulary and the records, each checked against the others and the flags
    losses.py        run_pretraining.py's MLM + NSP losses and evaluation metrics
    loop.py          train: run_pretraining.py's training loop on the shared run context
    embedded.py      the embedded default: MiniLM further pre-trained on BBC News text

STAGES maps each subcommand to (function, config class, help): pretrain.py's command lines and the
experiment runner's in-process stages both run from it.
"""

from minibert.pretraining.config import (CorpusConfig, CreateDataConfig, DefaultConfig, PretrainConfig,
                                         VocabConfig)
from minibert.pretraining.data_steps import build_corpus, build_vocabulary, create_data
from minibert.pretraining.embedded import embedded_default
from minibert.pretraining.loop import PretrainHooks, PretrainState, train

STAGES = {
    "default": (embedded_default, DefaultConfig, "the embedded job: MiniLM further pre-trained on BBC News training text"),
    "corpus": (build_corpus, CorpusConfig, "data sets -> Google's text format, one sentence per line (paper §4.2)"),
    "vocab": (build_vocabulary, VocabConfig, "learn a WordPiece vocab.txt with sentencepiece (pre-training from scratch)"),
    "create_data": (create_data, CreateDataConfig, "text -> pre-training records (Google's create_pretraining_data.py; "
                    "--sharded: one process per input file)"),
    "train": (train, PretrainConfig, "MLM + NSP pre-training from records (Google's run_pretraining.py)"),
}

__all__ = ["STAGES", "CorpusConfig", "VocabConfig", "CreateDataConfig", "PretrainConfig", "DefaultConfig",
           "PretrainHooks", "PretrainState", "build_corpus", "build_vocabulary", "create_data", "embedded_default",
           "train"]
