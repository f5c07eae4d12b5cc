"""The public API: every name `from minibert import ...` offers, and the README's first example."""

import numpy as np
import torch

import minibert
from minibert import (
    BertClassifier,
    BertConfig,
    BertForPreTraining,
    BertModel,
    CheckpointError,
    ConfigError,
    DataError,
    FullTokenizer,
    HeadConfig,
    LabelSet,
    MinibertError,
    TextEncoding,
    encode_batch,
    load_checkpoint,
    load_classifier,
    load_pretrained,
    read_examples,
    save_checkpoint,
    save_classifier,
)


def test_every_public_name_resolves_to_its_definition():
    for name in minibert.__all__:
        value = getattr(minibert, name)
        assert value.__name__ == name and value.__module__.startswith("minibert."), name
    assert issubclass(CheckpointError, MinibertError) and issubclass(DataError, MinibertError)
    assert issubclass(ConfigError, ValueError)
    assert {BertClassifier, BertConfig, HeadConfig, LabelSet, TextEncoding, load_checkpoint, load_classifier,
            read_examples, save_checkpoint, save_classifier} <= {getattr(minibert, n) for n in minibert.__all__}


def test_readme_example_gives_googles_numbers(tiny_google):
    """The README's snippet on the Google-written fixture: tokenize, encode, run, compare with Google."""
    model = load_pretrained(tiny_google, BertModel).eval()
    tokenizer = FullTokenizer(tiny_google / "vocab.txt", do_lower_case=True)
    batch = encode_batch(tokenizer, ["a first text", "another one"], max_seq_length=16)
    assert batch["input_ids"][0].tolist()[:5] == [101, *tokenizer.convert_tokens_to_ids(["a", "first", "text"]), 102]
    with torch.no_grad():
        out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert out.sequence_output.shape == (2, 5, 32) and len(out.hidden_states) == 3
    # The pre-training model on Google's own golden batch: its logits are Google's.
    golden = np.load(tiny_google / "golden.npz")
    pretraining = load_pretrained(tiny_google, BertForPreTraining).eval()
    with torch.no_grad():
        got = pretraining(torch.tensor(golden["input_ids"]), torch.tensor(golden["segment_ids"]),
                          torch.tensor(golden["input_mask"]),
                          masked_lm_positions=torch.tensor(golden["masked_lm_positions"]))
    assert np.abs(got.nsp_logits.numpy() - golden["next_sentence_logits"]).max() < 1e-5
