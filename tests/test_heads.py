"""Classification strategies: layer selection and combination, chunk pooling, BERT-Feat head."""

import types

import pytest
import torch
from helpers import make_tiny_model

from minibert.checkpoints.formats import load_checkpoint
from minibert.finetune.config import ClassifierOptions
from minibert.finetune.model_setup import new_classifier
from minibert.model.config import BertConfig
from minibert.model.heads import BertClassifier, HeadConfig, attention_penalty, group_chunks, layer_indices

CONFIG = BertConfig(vocab_size=60, hidden_size=12, num_hidden_layers=6, num_attention_heads=3,
                    intermediate_size=20, max_position_embeddings=32)


def batch(B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


def test_layer_indices():
    assert layer_indices("last", 12) == [12]
    assert layer_indices("first4", 12) == [1, 2, 3, 4]
    assert layer_indices("last4", 12) == [9, 10, 11, 12]
    assert layer_indices("all", 12) == list(range(1, 13))
    assert layer_indices("0", 12) == [0]  # the embedding output
    with pytest.raises(ValueError, match="13"):
        layer_indices("13", 12)


@pytest.mark.parametrize("layers, combine, pooler", [
    ("last", "concat", True), ("last", "concat", False), ("0", "concat", False), ("3", "concat", True),
    ("first4", "concat", False), ("last4", "mean", False), ("all", "max", False), ("last4", "mean", True)])
def test_cls_features_are_the_chosen_layers(layers, combine, pooler):
    torch.manual_seed(0)
    model = BertClassifier(CONFIG, HeadConfig(num_labels=4, layers=layers, layer_combine=combine,
                                              pooler=pooler, dropout=0.0)).eval()
    ids, mask = batch()
    with torch.no_grad():
        encoded = model.bert(ids, None, mask)
        logits = model(ids, None, mask)
    vectors = torch.stack([encoded.hidden_states[i][:, 0] for i in layer_indices(layers, 6)])  # (n, B, H)
    expected = {"concat": torch.cat(list(vectors), -1), "mean": vectors.mean(0), "max": vectors.amax(0)}[combine]
    if pooler:
        expected = torch.tanh(model.bert.pooler(expected))
    assert model.head.out.in_features == expected.shape[-1]
    assert torch.allclose(logits, model.head.out(expected), atol=1e-6)


@pytest.mark.parametrize("padding", ["padded", "unpadded"])
def test_encoder_keeps_only_the_hidden_states_asked_for(padding):
    """keep_hidden_states (what the classifiers pass: the layers their head reads): those and the
    last layer are returned exactly as without it; reading another one names the option."""
    torch.manual_seed(0)
    model = BertClassifier(CONFIG, HeadConfig(num_labels=4, layers="first4", pooler=False)).eval()
    model.bert.padding = padding
    ids, mask = batch()
    with torch.no_grad():
        full = model.bert(ids, None, mask)
        kept = model.bert(ids, None, mask, keep_hidden_states=model.head.hidden_states_read())
    assert model.head.hidden_states_read() == [1, 2, 3, 4]
    for i in (1, 2, 3, 4, 6):
        assert torch.equal(kept.hidden_states[i], full.hidden_states[i])
    assert torch.equal(kept.pooled_output, full.pooled_output)
    for i in (0, 5):
        with pytest.raises(ValueError, match=f"hidden state {i} was not kept: .*keep_hidden_states"):
            kept.hidden_states[i]


def test_default_head_is_run_classifier():
    """Pooled output of the last layer -> dropout -> linear, as Google's run_classifier.py."""
    torch.manual_seed(0)
    model = BertClassifier(CONFIG, HeadConfig(num_labels=3)).eval()
    ids, mask = batch()
    with torch.no_grad():
        expected = model.head.out(model.bert(ids, None, mask).pooled_output)
        assert torch.allclose(model(ids, None, mask), expected)


def test_group_chunks():
    features = torch.arange(12.0).reshape(6, 2)  # chunks of docs [0, 0, 1, 2, 2, 2]
    padded, mask = group_chunks(features, torch.tensor([0, 0, 1, 2, 2, 2]), 3)
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert padded[0, :2].tolist() == [[0, 1], [2, 3]] and padded[1, 0].tolist() == [4, 5]
    assert padded[2].tolist() == [[6, 7], [8, 9], [10, 11]]


@pytest.mark.parametrize("pooling", ["mean", "max", "self_attention"])
def test_hierarchical_pooling_values(pooling):
    torch.manual_seed(0)
    model = BertClassifier(CONFIG, HeadConfig(num_labels=2, chunk_pooling=pooling, dropout=0.0)).eval()
    ids, mask = batch(B=5)
    doc_index = torch.tensor([0, 0, 0, 1, 1])
    with torch.no_grad():
        logits = model(ids, None, mask, doc_index=doc_index, num_docs=2)
        pooled = model.bert(ids, None, mask).pooled_output  # (5, H): one feature per chunk
    docs = [pooled[:3], pooled[3:]]
    if pooling == "mean":
        expected = torch.stack([d.mean(0) for d in docs])
    elif pooling == "max":
        expected = torch.stack([d.amax(0) for d in docs])
    else:
        attention = model.head.chunk_pooling
        weights = [torch.softmax(attention.score(torch.tanh(attention.proj(d))).squeeze(-1), 0) for d in docs]
        expected = torch.stack([w @ d for w, d in zip(weights, docs)])
    assert torch.allclose(logits, model.head.out(expected), atol=1e-5)
    # A document alone gives the same logits as inside the batch.
    with torch.no_grad():
        alone = model(ids[3:], None, mask[3:], doc_index=torch.tensor([0, 0]), num_docs=1)
    assert torch.allclose(alone[0], logits[1], atol=1e-5)


def test_bert_feat_head_ignores_padding():
    torch.manual_seed(0)
    model = BertClassifier(CONFIG, HeadConfig(num_labels=3, head="bilstm_attention", lstm_size=5,
                                              attention_hops=2, attention_size=7)).eval()
    ids, mask = batch()
    with torch.no_grad():
        logits = model(ids, None, mask)
        short = model(ids[1:2, :6], None, mask[1:2, :6])  # row 1 without its padding
    assert logits.shape == (3, 3)
    assert torch.allclose(short[0], logits[1], atol=1e-5)
    with pytest.raises(ValueError, match="truncation"):
        model(ids, None, mask, doc_index=torch.tensor([0, 0, 1]), num_docs=2)


def test_head_config_errors():
    with pytest.raises(ValueError, match="pooler"):
        HeadConfig(num_labels=2, layers="last4", layer_combine="concat", pooler=True)
    with pytest.raises(ValueError, match="chunk_pooling"):
        HeadConfig(num_labels=2, chunk_pooling="median")
    with pytest.raises(ValueError, match="layers"):
        HeadConfig(num_labels=2, layers="middle")


def test_attention_penalty_by_hand():
    """Lin et al.'s ||A A^T - I||_F^2: zero for hops on distinct tokens; for r = 2 uniform hops over
    T = 4 tokens A A^T is all 1/4, so P = 2 (1/4 - 1)^2 + 2 (1/4)^2 = 1.25."""
    distinct = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])  # (B=1, T=4, r=2)
    uniform = torch.full((1, 4, 2), 0.25)
    assert attention_penalty(distinct).item() == 0.0
    assert attention_penalty(uniform).item() == pytest.approx(1.25)
    assert attention_penalty(torch.cat([distinct, uniform])).item() == pytest.approx(0.625)  # batch mean


@pytest.mark.parametrize("head_init, sd, beyond_two_sd", [("truncated_normal", 0.8796 * 0.02, 0.0),
                                                         ("normal", 0.02, 0.0455)])
def test_head_init_draws_the_chosen_distribution(tmp_path, head_init, sd, beyond_two_sd):
    """--head_init, on a head of 2,000 labels x 32 features: the hand-computed spread of each
    distribution (std initializer_range 0.02). A normal cut at 2 sigma (Google's) has sd
    sigma * sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) = 0.8796 sigma and no draw beyond 2 sigma; a plain
    normal (the paper's code, transformers) has sd sigma and 2 (1 - Phi(2)) = 4.55% of its draws beyond."""
    pretrained = load_checkpoint(make_tiny_model(tmp_path))
    task = types.SimpleNamespace(name="task", multi_label=False, labels=[str(i) for i in range(2000)])
    torch.manual_seed(0)
    head = new_classifier(pretrained, ClassifierOptions(head_init=head_init), [task], 0.5).heads["task"].out
    weights = head.weight.detach()
    assert weights.std().item() == pytest.approx(sd, rel=0.015)
    assert (weights.abs() > 0.04).float().mean().item() == pytest.approx(beyond_two_sd, abs=0.004)
    assert torch.equal(head.bias, torch.zeros_like(head.bias))
