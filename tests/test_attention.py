"""The blocked CPU attention kernel against the written-out formula, with and without dropout."""

import math

import pytest
import torch

from minibert.model.attention import attention, attention_bias
from minibert.model.blocked_attention import BLOCK_BYTES, SAVED_BYTES, BlockedAttention, blocked_attention
from minibert.model.dropout import dropout, dropout_keep_mask

# Odd sizes: B=2, N=3, T=11, D=5, the second sequence padded after 7 tokens.
SHAPE = (2, 3, 11, 5)


def inputs(seed=0, dtype=torch.float32, padded=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(SHAPE, generator=g, dtype=dtype).requires_grad_() for _ in range(3))
    mask = torch.ones(SHAPE[0], SHAPE[2], dtype=torch.long)
    if padded:
        mask[1, 7:] = 0
    return q, k, v, attention_bias(mask, torch.float32)


def formula(q, k, v, bias, keep=None, dropout_p=0.0):
    """softmax(q k^T / sqrt(D) + bias), times keep / (1 - p), times v: Google's attention_layer."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1)
    if keep is not None:
        probs = probs * keep / (1 - dropout_p)
    return probs @ v


def value_and_grads(out, q, k, v, seed=1):
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    return (out,) + torch.autograd.grad((out * weights).sum(), (q, k, v))


@pytest.fixture(params=["probabilities saved", "recomputed, one block", "recomputed, several blocks"])
def kernel(request) -> tuple[int, int]:
    """The kernel's (block_bytes, saved_bytes): probabilities kept for backward (the default at these
    sizes), or recomputed in backward with all rows in one block or in blocks of 2 rows (the last one
    shorter)."""
    return {"probabilities saved": (BLOCK_BYTES, SAVED_BYTES), "recomputed, one block": (BLOCK_BYTES, 0),
            "recomputed, several blocks": (2 * SHAPE[2] ** 2 * 4, 0)}[request.param]


def assert_close(got, expected, tol):
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert (a - b).abs().max().item() < tol


@pytest.mark.parametrize("padded", [False, True])
def test_no_dropout_equals_formula(kernel, padded):
    q, k, v, bias = inputs(padded=padded)
    got = value_and_grads(blocked_attention(q, k, v, bias, 0.0, *kernel), q, k, v)
    assert_close(got, value_and_grads(formula(q, k, v, bias), q, k, v), 1e-5)


def test_dropout_equals_formula_with_the_same_mask(kernel):
    q, k, v, bias = inputs()
    keep = dropout_keep_mask((2, 3, 11, 11), 0.3, q.device)
    got = value_and_grads(BlockedAttention.apply(q, k, v, bias, keep, 0.3, *kernel), q, k, v)
    assert_close(got, value_and_grads(formula(q, k, v, bias, keep, 0.3), q, k, v), 1e-5)


@pytest.mark.parametrize("implementation", ["blocked", "sdpa", "reference"])
def test_fewer_queries_than_keys(kernel, implementation):
    """Queries at 4 of the 11 positions (the encoder's reduced last layer): the formula's rows, with
    the same dropout mask for the blocked kernel, values and gradients."""
    q, k, v, bias = inputs()
    q4 = q.detach()[:, :, [0, 3, 5, 6]].requires_grad_()  # (2, 3, 4, 5)
    if implementation == "blocked":
        out = blocked_attention(q4, k, v, bias, 0.0, *kernel)
    else:
        out = attention(q4, k, v, bias, 0.0, implementation)
    got = value_and_grads(out, q4, k, v)
    assert_close(got, value_and_grads(formula(q4, k, v, bias), q4, k, v), 1e-5)
    if implementation == "blocked":
        keep = dropout_keep_mask((2, 3, 4, 11), 0.3, q.device)
        got = value_and_grads(BlockedAttention.apply(q4, k, v, bias, keep, 0.3, *kernel), q4, k, v)
        assert_close(got, value_and_grads(formula(q4, k, v, bias, keep, 0.3), q4, k, v), 1e-5)


def test_dropout_mask_comes_from_the_seed():
    """blocked_attention draws its mask with dropout_keep_mask from torch's generator, so seeding repeats it."""
    q, k, v, bias = inputs()
    torch.manual_seed(5)
    got = blocked_attention(q, k, v, bias, 0.1)
    torch.manual_seed(5)
    keep = dropout_keep_mask((2, 3, 11, 11), 0.1, q.device)
    assert (got - formula(q, k, v, bias, keep, 0.1)).abs().max() < 1e-5
    # The default ("auto") implementation routes CPU attention with dropout to this kernel.
    torch.manual_seed(5)
    assert torch.equal(attention(q, k, v, bias, 0.1, "auto"), got)


def test_padded_keys_get_no_weight_and_no_gradient():
    q, k, v, bias = inputs()
    out, dq, dk, dv = value_and_grads(attention(q, k, v, bias, 0.2, "blocked"), q, k, v)
    assert dk[1, :, 7:].abs().max() == 0 and dv[1, :, 7:].abs().max() == 0
    # Changing the padded values changes nothing (same mask: same seed).
    v2 = v.detach().clone()
    v2[1, :, 7:] = 1e3
    torch.manual_seed(0)
    a = attention(q, k, v, bias, 0.2, "blocked")
    torch.manual_seed(0)
    b = attention(q, k, v2, bias, 0.2, "blocked")
    assert torch.equal(a, b)


def test_keep_mask_statistics():
    torch.manual_seed(0)
    keep = dropout_keep_mask((1000, 1001), 0.1, torch.device("cpu"))
    assert keep.dtype == torch.bool and keep.shape == (1000, 1001)
    assert abs(keep.float().mean().item() - 0.9) < 0.002  # 1M draws: standard error 0.0003
    # Each 64-bit draw gives four elements; all four positions keep at the same rate.
    by_position = keep.flatten()[: 4 * 250_000].view(-1, 4).float().mean(0)
    assert (by_position - 0.9).abs().max() < 0.003
    # Neighbouring elements are independent: P(both kept) = 0.81.
    flat = keep.flatten().float()
    assert abs((flat[1:] * flat[:-1]).mean().item() - 0.81) < 0.003


def test_dropout_is_unbiased():
    """Averaged over masks, attention with dropout equals attention without it."""
    q, k, v, bias = inputs()
    draws = 4000  # one call on the batch repeated: each copy gets its own mask
    torch.manual_seed(0)
    with torch.no_grad():
        out = blocked_attention(*(t.repeat(draws, 1, 1, 1) for t in (q, k, v, bias)), 0.3)
        exact = formula(q, k, v, bias)
    assert_unbiased(out.view(draws, *SHAPE), exact)


def assert_unbiased(draws, exact):
    """Every element's mean over the draws is within 5 standard errors of the exact value."""
    standard_error = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - exact).abs() / (standard_error + 1e-6)).max() < 5
    # A dropout that forgot to rescale by 1 / (1 - p) is ~100 standard errors off in the test above.


def test_hidden_dropout():
    x = torch.randn(3, 7, 13, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.25)
    torch.manual_seed(3)
    keep = dropout_keep_mask(x.shape, 0.25, x.device)
    assert torch.equal(y, torch.where(keep, x * (1 / 0.75), 0))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, keep.float() / 0.75)
    assert torch.equal(dropout(x, 0.0), x)


def test_bf16_autocast():
    """Under autocast the kernel computes in the projections' dtype and stays close to fp32."""
    q, k, v, bias = inputs()
    keep = dropout_keep_mask((2, 3, 11, 11), 0.1, q.device)
    expected = value_and_grads(formula(q, k, v, bias, keep, 0.1), q, k, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        qb, kb, vb = (t.bfloat16() for t in (q, k, v))  # what the Linear layers return under autocast
        out = BlockedAttention.apply(qb, kb, vb, bias, keep, 0.1)
    assert out.dtype == torch.bfloat16
    got = value_and_grads(out.float(), q, k, v)
    for a, b in zip(got, expected):
        assert (a - b).abs().max().item() < 0.1 * b.abs().max().item()
    # The dispatch point under autocast, with padding and a fresh mask: runs and keeps bf16.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias, 0.1).dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernels_equal_formula():
    q, k, v, bias = (t.cuda() if t is not None else None for t in inputs())
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    for implementation in ("sdpa", "auto"):
        got = value_and_grads(attention(q, k, v, bias, 0.0, implementation), q, k, v)
        assert_close(got, value_and_grads(formula(q, k, v, bias), q, k, v), 1e-4)
    keep = dropout_keep_mask((2, 3, 11, 11), 0.3, q.device)
    got = value_and_grads(BlockedAttention.apply(q, k, v, bias, keep, 0.3), q, k, v)
    assert_close(got, value_and_grads(formula(q, k, v, bias, keep, 0.3), q, k, v), 1e-4)
    # torch's fused CUDA dropout: unbiased on average.
    draws = 4000
    with torch.no_grad():
        out = attention(*(t.repeat(draws, 1, 1, 1) for t in (q, k, v, bias)), 0.3, "auto")
    assert_unbiased(out.view(draws, *SHAPE).float().cpu(), formula(q, k, v, bias).float().cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_saved_probabilities_give_the_recomputed_numbers(dtype):
    """Keeping the probabilities for backward changes the work, not one bit of the values or gradients."""
    q, k, v, bias = inputs(dtype=dtype)
    keep = dropout_keep_mask((2, 3, 11, 11), 0.3, q.device)
    saved, recomputed = (value_and_grads(BlockedAttention.apply(q, k, v, bias, keep, 0.3, BLOCK_BYTES, saved_bytes),
                                         q, k, v) for saved_bytes in (SAVED_BYTES, 0))
    assert all(torch.equal(a, b) for a, b in zip(saved, recomputed))
