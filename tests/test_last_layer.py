"""The last layer computed at the positions the heads read (BertModel.last_layer = "needed") against
the whole last layer (last_layer = "all").

Only keys and values mix rows in a transformer block, so the rows a head reads are the same
function of the inputs either way: logits, pooled outputs, MLM/NSP losses and every parameter's
gradient agree within float rounding, padded and unpadded, in eval mode and in train mode with
dropout off (with dropout on, the two draw masks of different shapes).
"""

import pytest
import torch
import torch.nn.functional as F

from minibert.model.attention import attention, attention_bias, packed_keys_attention
from minibert.model.bert import BertModel, gather_positions
from minibert.model.config import BertConfig
from minibert.model.heads import BertClassifier, HeadConfig, TaskClassifier
from minibert.model.packing import pack, pack_mask
from minibert.model.pretraining_heads import BertForPreTraining

from helpers import LENGTHS, NO_DROPOUT, batch

# helpers' tiny model (odd sizes, as in Google's modeling_test.py) with dropout off, unless a
# test turns it on, and its batch of a full row, two padded ones and a row of just [CLS].
TINY = NO_DROPOUT
PRECISIONS = [("fp32", 1e-5), ("bf16", 3e-2)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and repeatable


def positions_in(lengths=LENGTHS, P=4, seed=1):
    """(B, P): [CLS], then random real positions (repeats allowed, as zero-padded MLM positions)."""
    g = torch.Generator().manual_seed(seed)
    rest = [torch.randint(0, n, (P - 1,), generator=g) for n in lengths]
    return torch.cat([torch.zeros(len(lengths), 1, dtype=torch.long), torch.stack(rest)], 1)


def both_modes(model):
    """Yield the model with last_layer "needed" and then "all"."""
    for mode in ("needed", "all"):
        bert = model if isinstance(model, BertModel) else model.bert
        bert.last_layer = mode
        yield mode


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def assert_same(results, tol):
    """results: {mode: (tensors...)}; every tensor of "needed" equals the one of "all" within tol."""
    for a, b in zip(results["needed"], results["all"], strict=True):
        assert a.shape == b.shape
        assert max_diff(a, b) < tol * max(1.0, b.float().abs().max().item())


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def values_and_grads(model, outputs):
    """outputs and the gradient of a random weighting of them w.r.t. every parameter."""
    g = torch.Generator().manual_seed(7)
    loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outputs)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return tuple(o.detach() for o in outputs) + tuple(g for g in grads if g is not None)


@pytest.mark.parametrize("precision, tol", PRECISIONS)
@pytest.mark.parametrize("padding", ["padded", "unpadded"])
@pytest.mark.parametrize("mode, implementation", [
    ("eval", "auto"), ("train", "auto"), ("train", "blocked"), ("train", "reference")])
def test_encoder_rows_pooled_and_gradients_equal_the_full_layer(precision, tol, padding, mode, implementation):
    config = BertConfig(**{**TINY.to_dict(), "attention_implementation": implementation})
    torch.manual_seed(0)
    model = BertModel(config, padding=padding).train(mode == "train")
    ids, types, mask = batch()
    positions = positions_in()
    results = {}
    for last_layer in both_modes(model):
        with autocast(precision):
            out = model(ids, types, mask, last_layer_positions=positions)
        earlier = [out.hidden_states[i][mask.bool()] for i in range(config.num_hidden_layers)]
        results[last_layer] = values_and_grads(model, [out.last_layer_at_positions, out.pooled_output, *earlier])
    assert_same(results, tol)
    # And both equal the encoder asked for every position, gathered.
    with autocast(precision):
        full = model(ids, types, mask)
    assert max_diff(results["needed"][0], gather_positions(full.sequence_output, positions)) < tol
    assert max_diff(results["needed"][1], full.pooled_output) < tol


def test_the_reduced_output_cannot_be_misread():
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    ids, types, mask = batch()
    out = model(ids, types, mask, last_layer_positions=positions_in())
    assert len(out.hidden_states) == TINY.num_hidden_layers + 1
    assert out.hidden_states[1].shape == (4, 17, 30)
    for read in (lambda: out.sequence_output, lambda: out.hidden_states[-1], lambda: list(out.hidden_states),
                 lambda: out.hidden_states[1:]):
        with pytest.raises(ValueError, match="last_layer_at_positions"):
            read()
    model.last_layer = "all"
    out = model(ids, types, mask, last_layer_positions=positions_in())
    assert out.sequence_output.shape == (4, 17, 30)


def test_bad_positions_and_modes_are_refused():
    model = BertModel(TINY, padding="unpadded")
    ids, types, mask = batch()
    with pytest.raises(ValueError, match="column 0"):
        model(ids, types, mask, last_layer_positions=torch.ones(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="0..16"):
        model(ids, types, mask, last_layer_positions=torch.tensor([[0, 17]] * 4))
    with pytest.raises(ValueError, match="padded positions"):  # row 2 has 4 real tokens
        model(ids, types, mask, last_layer_positions=torch.tensor([[0, 5]] * 4))
    with pytest.raises(ValueError, match="last_layer must be one of"):
        model.last_layer = "some"


def test_reduced_last_layer_still_drops_out_in_training():
    """With dropout 0.1 in train mode, two calls differ (attention and hidden dropout on the rows);
    in eval mode they are equal."""
    config = BertConfig(**{**TINY.to_dict(), "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1})
    torch.manual_seed(0)
    model = BertModel(config).train()
    ids, types, mask = batch()
    with torch.no_grad():
        model.last_layer = "needed"
        first, second = (model(ids, types, mask, last_layer_positions=positions_in()) for _ in range(2))
        assert max_diff(first.last_layer_at_positions, second.last_layer_at_positions) > 1e-3
        # Only the last layer's dropout: the same earlier layers (seeded), different last-layer rows.
        torch.manual_seed(3)
        a = model(ids, types, mask, last_layer_positions=positions_in())
        model.layers[-1].dropout.p, model.layers[-1].attention_dropout = 0.0, 0.0
        torch.manual_seed(3)
        b = model(ids, types, mask, last_layer_positions=positions_in())
        assert torch.equal(a.hidden_states[2], b.hidden_states[2])
        assert max_diff(a.last_layer_at_positions, b.last_layer_at_positions) > 1e-3
        model.eval()
        first, second = (model(ids, types, mask, last_layer_positions=positions_in()) for _ in range(2))
        assert torch.equal(first.last_layer_at_positions, second.last_layer_at_positions)


@pytest.mark.parametrize("precision, tol", PRECISIONS)
@pytest.mark.parametrize("padding", ["padded", "unpadded"])
@pytest.mark.parametrize("head", [
    HeadConfig(num_labels=3, dropout=0.0),  # the default: pooled [CLS] of the last layer
    HeadConfig(num_labels=3, dropout=0.0, layers="last4", layer_combine="mean"),
    HeadConfig(num_labels=3, dropout=0.0, layers="last", pooler=False),
    HeadConfig(num_labels=3, dropout=0.0, head="bilstm_attention"),  # reads every token: the full layer
], ids=["cls", "last4-mean", "last-no-pooler", "bilstm"])
def test_classifier_logits_and_gradients_equal_the_full_layer(precision, tol, padding, head):
    torch.manual_seed(0)
    model = BertClassifier(TINY, head).train()
    model.bert.padding = padding
    ids, types, mask = batch()
    results = {}
    for last_layer in both_modes(model):
        with autocast(precision):
            logits = model(ids, types, mask)
        results[last_layer] = values_and_grads(model, [logits])
    assert_same(results, tol)


@pytest.mark.parametrize("padding", ["padded", "unpadded"])
@pytest.mark.parametrize("pooling", ["mean", "max", "self_attention"])
def test_hierarchical_chunks_equal_the_full_layer(padding, pooling):
    torch.manual_seed(0)
    model = BertClassifier(TINY, HeadConfig(num_labels=3, dropout=0.0, chunk_pooling=pooling)).train()
    model.bert.padding = padding
    ids, types, mask = batch()
    doc_index, num_docs = torch.tensor([0, 0, 1, 1]), 2
    results = {}
    for last_layer in both_modes(model):
        logits = model(ids, types, mask, doc_index=doc_index, num_docs=num_docs)
        features = model.chunk_features(ids, types, mask)
        pieces = model.classify_chunks(features, doc_index, num_docs)
        results[last_layer] = values_and_grads(model, [logits, features, pieces])
    assert_same(results, 1e-5)


def test_multitask_heads_each_get_what_they_read():
    torch.manual_seed(0)
    model = TaskClassifier(TINY, {"topic": HeadConfig(num_labels=3, dropout=0.0),
                                       "feat": HeadConfig(num_labels=2, dropout=0.0, head="bilstm_attention")}).train()
    ids, types, mask = batch()
    for padding in ("padded", "unpadded"):
        model.bert.padding = padding
        results = {}
        for last_layer in both_modes(model):
            logits = [model(task, ids, types, mask) for task in ("topic", "feat")]
            results[last_layer] = values_and_grads(model, logits)
        assert_same(results, 1e-5)


@pytest.mark.parametrize("precision, tol", PRECISIONS)
@pytest.mark.parametrize("padding", ["padded", "unpadded"])
def test_pretraining_losses_and_gradients_equal_the_full_layer(precision, tol, padding):
    torch.manual_seed(0)
    model = BertForPreTraining(TINY).train()
    model.bert.padding = padding
    ids, types, mask = batch()
    masked = positions_in(P=5)[:, 1:]  # real positions; row 3 has only [CLS], so it predicts at 0
    labels = torch.randint(0, TINY.vocab_size, masked.shape, generator=torch.Generator().manual_seed(2))
    results = {}
    for last_layer in both_modes(model):
        with autocast(precision):
            out = model(ids, types, mask, masked_lm_positions=masked)
        mlm = F.cross_entropy(out.mlm_logits.float().flatten(0, 1), labels.flatten())
        nsp = F.cross_entropy(out.nsp_logits.float(), torch.tensor([0, 1, 1, 0]))
        params = list(model.parameters())
        results[last_layer] = (mlm.detach(), nsp.detach(), *torch.autograd.grad(mlm + nsp, params))
    assert_same(results, tol)


@pytest.mark.parametrize("implementation", ["sdpa", "blocked", "reference"])
def test_packed_keys_attention_equals_padded_attention_rows(implementation):
    """Queries at some rows against packed keys = the padded kernel's output at those rows."""
    g = torch.Generator().manual_seed(0)
    B, N, T, D = len(LENGTHS), 3, 17, 5
    q, k, v = (torch.randn(B, T, N, D, generator=g) for _ in range(3))
    _, _, mask = batch()
    packing = pack_mask(mask)
    positions = positions_in()
    heads = lambda x: x.transpose(1, 2)  # (B, T, N, D) -> (B, N, T, D)
    expected = attention(heads(q), heads(k), heads(v), attention_bias(mask, torch.float32), 0.0, implementation)
    expected = expected.transpose(1, 2).gather(1, positions[..., None, None].expand(-1, -1, N, D))
    q_rows = heads(q.gather(1, positions[..., None, None].expand(-1, -1, N, D)))  # (B, N, P, D)
    got = packed_keys_attention(q_rows, pack(k, packing), pack(v, packing), packing.cu_seqlens,
                                packing.max_seqlen, 0.0, implementation)
    assert max_diff(got.transpose(1, 2), expected) < 1e-5
