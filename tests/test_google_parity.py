"""Parity with Google's own outputs on a checkpoint written by Google's code (fixtures/tiny_google)."""

import numpy as np
import pytest
import torch

from minibert.checkpoints.formats import load_pretrained
from minibert.model.pretraining_heads import BertForPreTraining

TOLERANCE = 1e-5  # fp32 PyTorch vs Google's fp32 TF (fixture README: ~1e-5 expected)


def run(folder, golden_file, last_layer="needed", **overrides):
    """Google's inputs through our model; last_layer "needed" (the default) computes the last layer at
    [CLS] and the masked positions only, "all" at every position (so every hidden state can be read)."""
    golden = dict(np.load(folder / golden_file))
    model = load_pretrained(folder, BertForPreTraining, **overrides).eval()
    model.bert.last_layer = last_layer
    as_long = lambda name: torch.from_numpy(golden[name]).long()
    with torch.no_grad():
        out = model(as_long("input_ids"), as_long("segment_ids"), as_long("input_mask"),
                    masked_lm_positions=as_long("masked_lm_positions"))
    return golden, out


def max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    assert tuple(ours.shape) == theirs.shape
    return (ours.double() - torch.from_numpy(theirs).double()).abs().max().item()


@pytest.mark.parametrize("golden_file, hidden_act", [("golden.npz", "gelu"), ("golden_tanh.npz", "gelu_tanh")])
def test_every_output_matches_google(tiny_google, golden_file, hidden_act):
    golden, out = run(tiny_google, golden_file, "all", hidden_act=hidden_act)
    hidden = out.encoder.hidden_states
    assert len(hidden) == 3
    assert max_diff(hidden[0], golden["embedding_output"]) < TOLERANCE
    for i in range(2):
        assert max_diff(hidden[i + 1], golden["all_encoder_layers"][i]) < TOLERANCE
    assert max_diff(out.encoder.sequence_output, golden["sequence_output"]) < TOLERANCE
    assert max_diff(out.encoder.pooled_output, golden["pooled_output"]) < TOLERANCE
    assert max_diff(out.mlm_logits.reshape(-1, out.mlm_logits.shape[-1]), golden["masked_lm_logits"]) < TOLERANCE
    assert max_diff(out.nsp_logits, golden["next_sentence_logits"]) < TOLERANCE


@pytest.mark.parametrize("golden_file, hidden_act", [("golden.npz", "gelu"), ("golden_tanh.npz", "gelu_tanh")])
def test_default_last_layer_at_the_read_positions_matches_google(tiny_google, golden_file, hidden_act):
    """The default computes the last layer at [CLS] and the masked positions only: Google's logits,
    pooled output and the embeddings and earlier layers, within the same tolerance."""
    golden, out = run(tiny_google, golden_file, hidden_act=hidden_act)
    assert max_diff(out.encoder.hidden_states[1], golden["all_encoder_layers"][0]) < TOLERANCE
    assert max_diff(out.encoder.pooled_output, golden["pooled_output"]) < TOLERANCE
    assert max_diff(out.mlm_logits.reshape(-1, out.mlm_logits.shape[-1]), golden["masked_lm_logits"]) < TOLERANCE
    assert max_diff(out.nsp_logits, golden["next_sentence_logits"]) < TOLERANCE


@pytest.mark.parametrize("golden_file, hidden_act", [("golden.npz", "gelu"), ("golden_tanh.npz", "gelu_tanh")])
def test_losses_match_google(tiny_google, golden_file, hidden_act):
    """Google's run_pretraining.py loss formulas applied to our logits give Google's losses."""
    golden, out = run(tiny_google, golden_file, hidden_act=hidden_act)
    log_probs = torch.log_softmax(out.mlm_logits.double(), dim=-1).reshape(-1, out.mlm_logits.shape[-1])
    ids = torch.from_numpy(golden["masked_lm_ids"]).long().reshape(-1)
    weights = torch.from_numpy(golden["masked_lm_weights"]).double().reshape(-1)
    example_loss = -log_probs[torch.arange(len(ids)), ids]
    assert max_diff(example_loss, golden["masked_lm_example_loss"]) < 1e-4
    mlm_loss = (weights * example_loss).sum() / (weights.sum() + 1e-5)
    assert abs(mlm_loss.item() - golden["masked_lm_loss"].item()) < 1e-5
    nsp_log_probs = torch.log_softmax(out.nsp_logits.double(), dim=-1)
    assert max_diff(nsp_log_probs, golden["next_sentence_log_probs"]) < TOLERANCE


def test_gelu_forms_are_told_apart(tiny_google):
    """The erf model misses the tanh golden by far more than the tolerance (and the reverse)."""
    golden, out = run(tiny_google, "golden_tanh.npz", hidden_act="gelu")
    assert max_diff(out.mlm_logits.reshape(-1, out.mlm_logits.shape[-1]), golden["masked_lm_logits"]) > 1e-4
