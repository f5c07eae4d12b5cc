"""Encoder behaviour: fused attention equals the formula, padding invariance, config handling."""

import json

import pytest
import torch
from helpers import TINY  # odd sizes, as in Google's modeling_test.py

from minibert.model.attention import attention, attention_bias, reference_attention
from minibert.model.bert import BertModel, gather_positions
from minibert.model.config import BertConfig
from minibert.model.pretraining_heads import BertForPreTraining


def random_batch(B=3, T=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY.vocab_size, (B, T), generator=g)
    types = torch.randint(0, TINY.type_vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 11:] = 0
    mask[2, 4:] = 0
    return ids, types, mask


def test_attention_formula_by_hand():
    """One head, two keys, the second padded: all weight goes to the first key."""
    q = torch.tensor([[[[1.0, 0.0]]]])
    k = torch.tensor([[[[1.0, 0.0], [0.0, 50.0]]]])
    v = torch.tensor([[[[2.0, 3.0], [7.0, 9.0]]]])
    bias = attention_bias(torch.tensor([[1, 0]]), torch.float32)
    assert torch.allclose(reference_attention(q, k, v, bias, 0.0), torch.tensor([[[[2.0, 3.0]]]]))
    # Without the mask: softmax([1/sqrt2, 0]) weights.
    w = torch.softmax(torch.tensor([1 / 2 ** 0.5, 0.0]), 0)
    expected = w[0] * v[0, 0, 0] + w[1] * v[0, 0, 1]
    assert torch.allclose(reference_attention(q, k, v, None, 0.0)[0, 0, 0], expected)


@pytest.mark.parametrize("padded", [False, True])
def test_fused_attention_equals_reference_forward_and_backward(padded):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 9, dtype=torch.long)
    if padded:
        mask[1, 5:] = 0
    bias = attention_bias(mask, torch.float32)
    fused = attention(q, k, v, bias, 0.0, "sdpa")
    grads_fused = torch.autograd.grad(fused.square().sum(), (q, k, v))
    ref = attention(q, k, v, bias, 0.0, "reference")
    grads_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    assert (fused - ref).abs().max() < 1e-6
    for a, b in zip(grads_fused, grads_ref):
        assert (a - b).abs().max() < 1e-5


def test_model_with_reference_attention_equals_fused():
    ids, types, mask = random_batch()
    torch.manual_seed(0)
    fused = BertModel(TINY).eval()
    ref = BertModel(BertConfig(**{**TINY.to_dict(), "attention_implementation": "reference"})).eval()
    ref.load_state_dict(fused.state_dict())
    with torch.no_grad():
        a, b = fused(ids, types, mask), ref(ids, types, mask)
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert (x - y).abs().max() < 1e-5


def test_padding_invariance():
    """Appending padding changes no output at real positions, nor the pooled output."""
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    ids, types, mask = random_batch()
    extra = 8
    pad = lambda t: torch.cat([t, torch.zeros(t.shape[0], extra, dtype=t.dtype)], dim=1)
    with torch.no_grad():
        short = model(ids, types, mask)
        long = model(pad(ids), pad(types), pad(mask))
    real = mask.bool()
    for a, b in zip(short.hidden_states, long.hidden_states):
        assert (a[real] - b[:, : ids.shape[1]][real]).abs().max() < 1e-5
    assert (short.pooled_output - long.pooled_output).abs().max() < 1e-5
    # A single row alone equals the same row in a padded batch.
    with torch.no_grad():
        alone = model(ids[2:3, :4], types[2:3, :4], mask[2:3, :4])
    assert (alone.sequence_output[0] - short.sequence_output[2, :4]).abs().max() < 1e-5


def test_hidden_states_and_defaults():
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    ids, types, mask = random_batch()
    with torch.no_grad():
        out = model(ids)
        explicit = model(ids, torch.zeros_like(ids), torch.ones_like(ids))
    assert len(out.hidden_states) == TINY.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[-1], out.sequence_output)
    assert torch.equal(out.sequence_output, explicit.sequence_output)
    # The pooler is tanh(W h_[CLS] + b) of the last layer.
    expected = torch.tanh(out.sequence_output[:, 0] @ model.pooler.weight.T + model.pooler.bias)
    assert torch.allclose(out.pooled_output, expected, atol=1e-6)


def test_truncated_normal_init():
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=128))
    w = model.embeddings.word.weight
    assert w.abs().max() <= 0.04 + 1e-7  # cut at two standard deviations
    assert 0.015 < w.std() < 0.02  # std of a normal truncated at 2 sigma is 0.88 sigma
    assert torch.equal(model.layers[0].query.bias, torch.zeros(64))
    assert torch.equal(model.layers[0].attn_norm.weight, torch.ones(64))


def test_mlm_decoder_is_tied_and_gathers_positions():
    torch.manual_seed(0)
    model = BertForPreTraining(TINY).eval()
    assert not any("decoder" in name for name, _ in model.named_parameters())
    ids, types, mask = random_batch()
    positions = torch.tensor([[1, 3], [0, 2], [3, 3]])
    with torch.no_grad():
        out = model(ids, types, mask, masked_lm_positions=positions)
        full = model(ids, types, mask)
    expected = gather_positions(full.mlm_logits, positions)
    assert (out.mlm_logits - expected).abs().max() < 1e-5
    h = out.encoder.last_layer_at_positions[0, 2]  # [CLS], then the positions: row 0's position 3
    t = model.mlm.norm(torch.nn.functional.gelu(model.mlm.transform(h)))
    assert torch.allclose(out.mlm_logits[0, 1], t @ model.bert.embeddings.word.weight.T + model.mlm.bias, atol=1e-5)


def test_config_from_google_and_hf_dicts(tmp_path):
    google = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
              "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,
              "type_vocab_size": 2, "vocab_size": 21128, "directionality": "bidi",
              "pooler_type": "first_token_transform"}
    config, ignored = BertConfig.from_dict(google)
    assert config.vocab_size == 21128 and config.layer_norm_eps == 1e-12
    assert ignored == ["directionality", "pooler_type"]
    _, ignored = BertConfig.from_dict({**google, "my_new_key": 1})
    assert ignored[0] == "my_new_key"  # keys nobody knows are listed first
    with pytest.raises(ValueError, match="position_embedding_type"):
        BertConfig.from_dict({**google, "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig.from_dict({**google, "hidden_act": "swish"})
    with pytest.raises(ValueError, match="num_attention_heads"):
        BertConfig.from_dict({**google, "num_attention_heads": 7})
    bad = tmp_path / "bert_config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bert_config.json"):
        BertConfig.from_json_file(bad)
    bad.write_text(json.dumps({**google, "hidden_size": "big"}))
    with pytest.raises(ValueError, match="hidden_size must be int"):
        BertConfig.from_json_file(bad)
