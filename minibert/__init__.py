"""minibert: a from-scratch PyTorch BERT for text classification, exact to Google's checkpoints.

The public API, for users of Google's modeling.py / tokenization.py or of transformers:

    from minibert import BertModel, FullTokenizer, encode_batch, load_pretrained
    model = load_pretrained("uncased_L-12_H-768_A-12", BertModel).eval()

The package follows the data flow:

    text/          tokenizer (Google-compatible), pair encoding, long-text windows, vocab building
    data/          examples and public data sets, batches, pre-training corpora, instances, records
    model/         config, encoder, attention (one dispatch point), classification and MLM/NSP heads
    checkpoints/   Google TF, Hugging Face and minibert formats, their name tables, TFRecord
    training/      optimizers, schedules, machine options and precision, metrics, resumable
                   checkpoints, distributed helpers, and the run context every kind of run shares
    finetune/      the fine-tuning run: option groups, tasks (one or many), its loop, results
    pretraining/   the pre-training subcommands (corpus, vocab, create_data, train) and its loop
    experiments/   the paper's tables as rows over typed configs, and the runner that reproduces them
    cli.py         command lines generated from the configs; errors.py, files.py, output_paths.py,
                   resources.py: errors, atomic writes, the output-path policy, packaged material
"""

import importlib

# name -> module that defines it. Resolved on first use (PEP 562), so `import minibert.text...` in
# a data preparation script does not pay for importing torch and every model module.
_PUBLIC = {
    "BertConfig": "minibert.model.config",
    "BertModel": "minibert.model.bert",
    "BertOutput": "minibert.model.bert",
    "BertForPreTraining": "minibert.model.pretraining_heads",
    "BertClassifier": "minibert.model.heads",
    "HeadConfig": "minibert.model.heads",
    "FullTokenizer": "minibert.text.tokenization",
    "encode_batch": "minibert.text.encoding",
    "TextEncoding": "minibert.text.encoding",
    "Checkpoint": "minibert.checkpoints.formats",
    "load_checkpoint": "minibert.checkpoints.formats",
    "load_pretrained": "minibert.checkpoints.formats",
    "save_checkpoint": "minibert.checkpoints.formats",
    "load_classifier": "minibert.checkpoints.classifier",
    "save_classifier": "minibert.checkpoints.classifier",
    "read_examples": "minibert.data.examples",
    "LabelSet": "minibert.data.examples",
    "MinibertError": "minibert.errors",
    "CheckpointError": "minibert.errors",
    "DataError": "minibert.errors",
    "ConfigError": "minibert.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'minibert' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
