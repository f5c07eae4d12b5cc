"""The unpadded encoder and varlen attention against the padded encoder and the padded kernels.

Equal math per real token: hidden states at real positions, pooled outputs and every parameter's
gradient agree with the padded encoder within float rounding, with padding present, in fp32 and
under bf16 autocast, in eval mode and in train mode with dropout off (dropout masks are drawn per
tensor shape, so with dropout on the two paths draw different masks).
"""

import pytest
import torch

from minibert.model import attention as attention_module
from minibert.model.attention import VARLEN_ATTENTION_IMPLEMENTATIONS, attention, attention_bias, varlen_attention
from minibert.model.bert import BertModel
from minibert.model.config import BertConfig
from minibert.model.packing import pack, pack_mask, unpack

from helpers import LENGTHS, NO_DROPOUT, TINY, batch, triton_kernel_or_skip

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and repeatable


def run(model, ids, types, mask, precision):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(ids, types, mask)
    g = torch.Generator().manual_seed(5)
    real = mask.bool()
    # A loss that reads every real position of every layer and the pooled output.
    weights = lambda x: torch.randn(x.shape, generator=g).to(x.device)  # drawn on the CPU: the same on any device
    loss = sum((h.float()[real] * weights(h[real])).sum() for h in out.hidden_states)
    loss = loss + (out.pooled_output.float() * weights(out.pooled_output)).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return out, grads


@pytest.mark.parametrize("precision, tol", [("fp32", 2e-5), ("bf16", 3e-2)])
@pytest.mark.parametrize("mode, attention_implementation", [
    ("eval", "auto"), ("eval", "blocked"), ("train", "auto"), ("train", "reference")])
def test_unpadded_encoder_equals_padded_on_real_tokens(precision, tol, mode, attention_implementation):
    config = BertConfig(**{**NO_DROPOUT.to_dict(), "attention_implementation": attention_implementation})
    torch.manual_seed(0)
    padded, unpadded = BertModel(config), BertModel(config, padding="unpadded")
    unpadded.load_state_dict(padded.state_dict())
    padded.train(mode == "train"), unpadded.train(mode == "train")
    ids, types, mask = batch()
    a, grads_a = run(padded, ids, types, mask, precision)
    b, grads_b = run(unpadded, ids, types, mask, precision)
    assert b.packing is not None and a.packing is None
    real = mask.bool()
    assert len(a.hidden_states) == len(b.hidden_states) == TINY.num_hidden_layers + 1
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert x.shape == y.shape and y.dtype == x.dtype
        assert (x[real].float() - y[real].float()).abs().max() < tol
        assert not y[~real].any()  # the unpadded encoder has zeros at padding
    assert (a.pooled_output.float() - b.pooled_output.float()).abs().max() < tol
    assert torch.equal(b.sequence_output, b.hidden_states[-1])
    for (name, _), ga, gb in zip(padded.named_parameters(), grads_a, grads_b):
        scale = ga.abs().max().clamp(min=1)
        assert ((ga - gb).abs().max() / scale) < tol * 5, name


def test_unpadded_training_with_dropout_runs_and_learns():
    torch.manual_seed(0)
    model = BertModel(TINY, padding="unpadded").train()
    ids, types, mask = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        out = model(ids, types, mask)
        loss = out.pooled_output.square().mean()  # drive the pooled outputs to 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert out.packing is not None and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_batches_that_cannot_be_packed_run_padded():
    torch.manual_seed(0)
    model = BertModel(TINY, padding="unpadded").eval()
    ids, types, mask = batch()
    left_padded = mask.flip(1)  # rows start with padding: position 0 is not a real token
    assert model(ids, types, left_padded).packing is None
    assert model(ids, types, torch.ones_like(mask)).packing is None  # nothing to remove
    with pytest.raises(ValueError, match="padding must be one of"):
        model.padding = "sometimes"


def test_pack_and_unpack_round_trip():
    ids, _, mask = batch()
    packing = pack_mask(mask)
    assert packing.cu_seqlens.tolist() == [0, 17, 28, 32, 33] and packing.cu_seqlens.dtype == torch.int32
    assert packing.max_seqlen == 17
    packed = pack(ids, packing)
    assert packed.tolist() == ids[mask.bool()].tolist()
    assert torch.equal(unpack(packed, packing), ids)  # ids are 0 at padding
    assert packing.positions.tolist()[17:28] == list(range(11))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("implementation", ["auto", "repad"])
def test_varlen_attention_equals_padded_attention(dtype, tol, implementation):
    """Packed q, k, v through varlen_attention equal the padded kernel's rows of real tokens."""
    B, N, T, D = len(LENGTHS), 3, 17, 8
    g = torch.Generator().manual_seed(2)
    _, _, mask = batch()
    q, k, v = (torch.randn(B, T, N, D, generator=g, dtype=dtype) for _ in range(3))
    packing = pack_mask(mask)
    packed = [pack(x, packing).requires_grad_() for x in (q, k, v)]  # (total, N, D)
    out = varlen_attention(*packed, packing.cu_seqlens, packing.max_seqlen, implementation=implementation)
    weights = torch.randn(out.shape, generator=g, dtype=dtype)
    grads = torch.autograd.grad((out * weights).sum(), packed)
    padded = [unpack(x.detach(), packing).transpose(1, 2).requires_grad_() for x in packed]  # (B, N, T, D)
    ref = attention(*padded, attention_bias(mask, torch.float32), 0.0, "reference").transpose(1, 2)
    ref_grads = torch.autograd.grad((ref * unpack(weights, packing)).sum(), padded)
    assert (pack(ref, packing) - out).abs().max() < tol
    for got, want in zip(grads, ref_grads):
        assert (pack(want.transpose(1, 2), packing) - got).abs().max() < tol


def test_triton_entry_is_in_the_table_and_says_what_it_needs():
    assert set(VARLEN_ATTENTION_IMPLEMENTATIONS) >= {"auto", "repad", "triton"}
    try:
        import minibert.model.kernels.varlen_attention  # noqa: F401  (lands with the Triton kernel)
    except ImportError:
        q = torch.zeros(2, 1, 4)
        with pytest.raises(RuntimeError, match="needs triton"):
            varlen_attention(q, q, q, torch.tensor([0, 2], dtype=torch.int32), 2, implementation="triton")


def test_unpadded_encoder_through_the_triton_kernel_equals_padded(monkeypatch):
    """The whole unpadded encoder with attention in the Triton kernel (the CUDA default), fp32,
    train mode without dropout: outputs at real positions and gradients equal the padded encoder's."""
    triton_kernel_or_skip()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setitem(attention_module.VARLEN_ATTENTION_IMPLEMENTATIONS, "auto",
                        attention_module.triton_varlen_attention)
    torch.manual_seed(0)
    padded, unpadded = BertModel(NO_DROPOUT).to(device), BertModel(NO_DROPOUT, padding="unpadded").to(device)
    unpadded.load_state_dict(padded.state_dict())
    ids, types, mask = (t.to(device) for t in batch())
    a, grads_a = run(padded, ids, types, mask, "fp32")
    b, grads_b = run(unpadded, ids, types, mask, "fp32")
    real = mask.bool()
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert (x[real] - y[real]).abs().max() < 2e-5
    assert (a.pooled_output - b.pooled_output).abs().max() < 2e-5
    for (name, _), ga, gb in zip(padded.named_parameters(), grads_a, grads_b):
        assert ((ga - gb).abs().max() / ga.abs().max().clamp(min=1)) < 1e-4, name
