"""Activation checkpointing (BertModel.checkpointing = "layers"): the same numbers for less memory.

With dropout on, the losses and every gradient equal those of the run without it: each layer runs
again in backward from the same RNG state, so with the same dropout masks (different masks would
change the gradients by far more than the tolerance). Padded and unpadded, with the last layer at
some positions only, and through the Triton varlen kernel (its Philox seed comes from the CPU
generator). The memory saving is measured as the peak RSS of a fresh process.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from minibert.model import attention as attention_module
from minibert.model.bert import BertModel

from helpers import TINY, batch, triton_kernel_or_skip

pytestmark = pytest.mark.usefixtures("one_thread")


def loss_and_grads(model, ids, types, mask, positions=None):
    """A loss reading every kept hidden state and the pooled output; its gradients. Seeded, so the
    dropout masks are drawn from the same generator state in both runs."""
    torch.manual_seed(11)
    out = model(ids, types, mask, last_layer_positions=positions)
    g = torch.Generator().manual_seed(5)
    weights = lambda x: torch.randn(x.shape, generator=g).to(x.device)
    states = [h for h in out.hidden_states.stored if h is not None]
    loss = sum((h * weights(h)).sum() for h in states) + (out.pooled_output * weights(out.pooled_output)).sum()
    if out.last_layer_at_positions is not None:
        loss = loss + (out.last_layer_at_positions * weights(out.last_layer_at_positions)).sum()
    return loss, torch.autograd.grad(loss, list(model.parameters()))


def assert_same_run(model, ids, types, mask, positions=None, tol=1e-6):
    model.checkpointing = "off"
    loss_a, grads_a = loss_and_grads(model, ids, types, mask, positions)
    model.checkpointing = "layers"
    loss_b, grads_b = loss_and_grads(model, ids, types, mask, positions)
    assert torch.allclose(loss_a, loss_b, rtol=tol, atol=tol)
    for (name, _), ga, gb in zip(model.named_parameters(), grads_a, grads_b):
        assert (ga - gb).abs().max() <= tol * ga.abs().max().clamp(min=1), name
    # Dropout is on: another mask moves the gradients (the test would catch a mask drawn anew).
    model.checkpointing = "off"
    torch.manual_seed(12)
    out = model(ids, types, mask, last_layer_positions=positions)
    assert not torch.equal(out.pooled_output, model(ids, types, mask, last_layer_positions=positions).pooled_output)


@pytest.mark.parametrize("padding", ["padded", "unpadded"])
@pytest.mark.parametrize("positions", [None, torch.tensor([[0, 3], [0, 5], [0, 1], [0, 0]])])
def test_checkpointed_layers_give_the_same_loss_and_gradients_with_dropout(padding, positions):
    torch.manual_seed(0)
    model = BertModel(TINY, padding=padding).train()
    assert TINY.hidden_dropout_prob > 0 and TINY.attention_probs_dropout_prob > 0
    assert_same_run(model, *batch(), positions)


def test_checkpointing_is_off_by_default_and_idle_without_gradients():
    model = BertModel(TINY)
    assert model.checkpointing == "off"
    with pytest.raises(ValueError, match="checkpointing must be one of"):
        model.checkpointing = "on"
    model.checkpointing = "layers"
    with torch.no_grad():  # no autograd graph: nothing to recompute, the plain forward runs
        model.eval()(*batch())


@pytest.mark.slow  # ~30 s in Triton's CPU interpreter
def test_checkpointed_layers_through_the_triton_kernel_with_dropout(monkeypatch):
    """The GPU's default path (unpadded, Triton varlen attention), here in the interpreter: the
    recomputed forward draws the same Philox seed, so the same attention dropout mask."""
    triton_kernel_or_skip()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setitem(attention_module.VARLEN_ATTENTION_IMPLEMENTATIONS, "auto",
                        attention_module.triton_varlen_attention)
    torch.manual_seed(0)
    model = BertModel(TINY, padding="unpadded").to(device).train()
    assert_same_run(model, *(t.to(device) for t in batch()), tol=1e-5)


# A forward and backward of a mid-size encoder in a fresh process: its peak RSS (MB) before the
# forward pass (torch, the model, the batch) and at the end, and the seconds the two passes took.
MEMORY_SCRIPT = """
import json, resource, sys, time, torch
from minibert.model.bert import BertModel
from minibert.model.config import BertConfig
torch.set_num_threads(1)
peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
config = BertConfig(vocab_size=1000, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                    intermediate_size=1536, max_position_embeddings=256)
model = BertModel(config, checkpointing=sys.argv[1]).train()
ids = torch.randint(1, 1000, (16, 256))
before = peak_mb()
start = time.perf_counter()
out = model(ids, attention_mask=torch.ones_like(ids))
(out.sequence_output.square().mean() + out.pooled_output.sum()).backward()
seconds = time.perf_counter() - start
print(json.dumps({"before_mb": before, "peak_mb": peak_mb(), "seconds": seconds}))
"""


def measure(checkpointing: str) -> dict:
    """MEMORY_SCRIPT's numbers. glibc's malloc would keep freed blocks under its (adaptive, up to
    32 MB) mmap threshold in the heap, so RSS would count memory that autograd let go long ago; a
    fixed 128 KB threshold returns every tensor of that size to the system when it is freed."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, checkpointing], capture_output=True, text=True,
                            check=True, env=env)
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_checkpointing_lowers_the_peak_memory():
    """6 layers, hidden 384, 16 x 256 tokens, fp32, padded, dropout on. Measured on 2 shared CPU
    cores: the forward and backward pass add 772 MB to the process's peak without checkpointing and
    394 MB with it (the layer inputs, plus one layer's recomputed activations during backward)."""
    plain, checkpointed = measure("off"), measure("layers")
    added = lambda m: m["peak_mb"] - m["before_mb"]
    assert added(checkpointed) < 0.65 * added(plain), (plain, checkpointed)
