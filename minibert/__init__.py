"""minibert: a from-scratch PyTorch BERT for text classification, exact to Google's checkpoints.

The public API, for users of Google's modeling.py / tokenization.py or of transformers:

    from minibert import BertModel, FullTokenizer, encode_batch, load_pretrained
    model = load_pretrained("uncased_L-12_H-768_A-12", BertModel).eval()

The package follows the data flow: text/ (tokenizer, framing, long texts) -> data/ (examples,
batches) -> model/ (config, encoder, attention, heads) -> training/ (optimizers, schedules, run
state) -> checkpoints/ (Google TF, Hugging Face and minibert formats).
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
