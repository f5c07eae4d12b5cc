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


@pytest.mark.parametrize("padding", ["padded", "unpadded"])
def test_bf16_autocast_gradients_match_transformers(minilm_dir, padding):
    """Under bf16 autocast (dropout off), the encoder's pooled output and the gradients of its
    attention projections (one stacked product on the CPU), feed-forward and embeddings agree with
    transformers' separate projections within bf16 rounding, with padding and without."""
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    ours = load_pretrained(minilm_dir, BertModel, **no_dropout).train()
    ours.padding = padding
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager", **no_dropout).train()
    tokenizer = FullTokenizer(minilm_dir / "vocab.txt", do_lower_case=True)
    batch = encode_batch(tokenizer, SENTENCES, None, max_seq_length=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mine = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).pooled_output
        ref = theirs(**batch).pooler_output
    assert (mine.float() - ref.float()).abs().max().item() < 2e-2
    mine.float().square().sum().backward()
    ref.float().square().sum().backward()
    names = {"layers.{i}.query.weight": "encoder.layer.{i}.attention.self.query.weight",
             "layers.{i}.key.weight": "encoder.layer.{i}.attention.self.key.weight",
             "layers.{i}.value.weight": "encoder.layer.{i}.attention.self.value.weight",
             "layers.{i}.query.bias": "encoder.layer.{i}.attention.self.query.bias",
             "layers.{i}.ffn_in.weight": "encoder.layer.{i}.intermediate.dense.weight"}
    ours_params, theirs_params = dict(ours.named_parameters()), dict(theirs.named_parameters())
    pairs = [(a.format(i=i), b.format(i=i)) for i in (0, 5) for a, b in names.items()]
    pairs.append(("embeddings.word.weight", "embeddings.word_embeddings.weight"))
    for a, b in pairs:
        g, h = ours_params[a].grad, theirs_params[b].grad
        assert g.dtype == torch.float32 and h.abs().max() > 0
        assert (g - h).abs().max().item() < 0.03 * h.abs().max().item(), a
