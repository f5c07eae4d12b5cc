"""Parity with Hugging Face transformers (test-only oracle) on the real all-MiniLM-L6-v2 weights."""

import pytest
import torch

from minibert.checkpoints.formats import load_pretrained
from minibert.model.bert import BertModel
from minibert.text.encoding import encode_batch
from minibert.text.tokenization import FullTokenizer

transformers = pytest.importorskip("transformers")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Quarterly profits at US media giant TimeWarner jumped 76% to $1.13bn (£600m).",
    "Un café, s'il vous plaît!",
    "short",
]
PAIRS = [("Is this a question?", "Yes, and this is the answer."), ("a", "b c d e f g")]


@pytest.fixture(scope="module")
def models(minilm_dir):
    ours = load_pretrained(minilm_dir, BertModel).eval()
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    return ours, theirs, FullTokenizer(minilm_dir / "vocab.txt", do_lower_case=True)


@pytest.mark.parametrize("texts, texts_b", [(SENTENCES, None), ([a for a, _ in PAIRS], [b for _, b in PAIRS])])
def test_real_tokens_match_transformers(models, texts, texts_b):
    ours, theirs, tokenizer = models
    batch = encode_batch(tokenizer, texts, texts_b, max_seq_length=64)
    with torch.no_grad():
        mine = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        ref = theirs(**batch, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    assert len(mine.hidden_states) == len(ref.hidden_states) == 7
    for a, b in zip(mine.hidden_states, ref.hidden_states):
        assert (a - b)[real].abs().max().item() < 2e-5
    assert (mine.pooled_output - ref.pooler_output).abs().max().item() < 2e-5
