"""The Triton variable-length attention kernel against the written-out formula.

Without a GPU the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, set in conftest.py)
on tiny fp32 shapes; with one, the same tests run the compiled kernels on CUDA, and the `gpu` tests
add bf16/fp16 against torch's SDPA. The formula here pads the packed batch to (B, N, L, L) with a key
mask, in float64: a different computation from both the kernel and the package's per-sequence
reference. Triton 3.9's interpreter multiplies bf16 bit patterns as integers in tl.dot, so bf16 is
checked on the GPU only.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

NO_TRITON = "Triton is not installed (pip install -e '.[gpu]'); it runs these kernels on the CPU under TRITON_INTERPRET=1"
pytest.importorskip("triton", reason=NO_TRITON)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1: Triton cannot run its kernels", allow_module_level=True)

from minibert.errors import MinibertError  # noqa: E402
from minibert.model.kernels import varlen_attention as varlen_module  # noqa: E402
from minibert.model.kernels import varlen_attention_reference  # noqa: E402
from minibert.model.kernels.varlen_attention import (  # noqa: E402
    Blocks,
    Tiles,
    philox_keep_mask,
    varlen_attention,
    varlen_attention_forward,
)

# A sequence of one token, an empty one, odd lengths, exactly one 16-row block and one that spills
# into a third block; odd head count and head size.
LENGTHS = [1, 7, 0, 16, 21]
N, D = 3, 5


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and repeatable


@pytest.fixture(params=["16x16 tiles", pytest.param("mixed tiles", marks=pytest.mark.slow)])
def small_tiles(request) -> Tiles:
    """Tiles of 16 (16, 32 mixed) so that the short test sequences cross several blocks."""
    if request.param == "16x16 tiles":
        return Tiles(Blocks(16, 16), Blocks(16, 16), Blocks(16, 16), delta_rows=16, keep=Blocks(16, 16))
    return Tiles(Blocks(16, 32), Blocks(32, 16), Blocks(16, 32), delta_rows=16, keep=Blocks(16, 16))


def packed_batch(lengths, heads=N, head_dim=D, dtype=torch.float32, seed=0):
    """q, k, v (T, N, D) as views of one (T, 3, N, D) tensor, as a fused QKV projection gives them
    (token stride 3 N D), plus cu_seqlens and max_seqlen."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(sum(lengths), 3, heads, head_dim, generator=g).to(DEVICE, dtype).requires_grad_()
    cu_seqlens = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device=DEVICE)
    return qkv, (qkv[:, 0], qkv[:, 1], qkv[:, 2]), cu_seqlens, max(lengths)


def pad(x, cu_seqlens, L):
    """(T, N, ...) packed -> (B, N, L, ...) zero-padded, differentiable."""
    bounds = cu_seqlens.tolist()
    rows = torch.cat([torch.arange(b * L, b * L + e - s) for b, (s, e) in enumerate(zip(bounds, bounds[1:]))])
    B = len(bounds) - 1
    padded = x.new_zeros(B * L, *x.shape[1:]).index_copy(0, rows.to(x.device), x)
    return padded.view(B, L, *x.shape[1:]).transpose(1, 2), rows.to(x.device)


def formula(q, k, v, cu_seqlens, L, keep=None, dropout_p=0.0):
    """float64 softmax(q k^T / sqrt(D) with keys of other sequences masked) * keep / (1 - p) @ v.

    Returns out (T, N, D) and the log-sum-exp of the scaled scores (N, T)."""
    (qp, rows), (kp, _), (vp, _) = (pad(t.double(), cu_seqlens, L) for t in (q, k, v))  # (B, N, L, D)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    position = torch.arange(L, device=q.device)
    # Padded query rows attend to every key (finite, dropped at the end) so that no NaN reaches a gradient.
    allowed = (position[None, :, None] >= lengths[:, None, None]) | (position[None, None, :] < lengths[:, None, None])
    scores = (qp @ kp.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # (B, N, L, L)
    if keep is not None:
        keep_padded, _ = pad(keep.transpose(0, 1).double(), cu_seqlens, L)  # (B, N, L, max_seqlen)
        probs = probs * keep_padded[..., :L] / (1 - dropout_p)
    out = (probs @ vp).transpose(1, 2).flatten(0, 1)[rows]  # (B, L, N, D) -> (T, N, D)
    lse = torch.logsumexp(scores, -1).transpose(1, 2).flatten(0, 1)[rows]  # (T, N)
    return out, lse.T


def gradients(out, inputs, seed=1):
    """d(sum(out * w))/d inputs for a fixed random w, in float64."""
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device, out.dtype)
    return [g.double() for g in torch.autograd.grad((out * w).sum(), inputs)]


def max_error(a, b):
    return (a.double() - b.double()).abs().max().item()


def test_forward_and_lse_equal_formula(small_tiles):
    _, (q, k, v), cu_seqlens, max_seqlen = packed_batch(LENGTHS)
    with torch.no_grad():
        out, lse = varlen_attention_forward(q, k, v, cu_seqlens, max_seqlen, 0.0, 1 / math.sqrt(D), 2**32, 0,
                                            small_tiles)
        expected_out, expected_lse = formula(q, k, v, cu_seqlens, max_seqlen)
    assert out.shape == q.shape and out.dtype == torch.float32
    assert lse.shape == (N, sum(LENGTHS)) and lse.dtype == torch.float32
    assert max_error(out, expected_out) < 2e-6
    assert max_error(lse, expected_lse) < 2e-6
    # The package's per-sequence reference agrees with the padded formula, and so with the kernel.
    reference = varlen_attention_reference(q.double(), k.double(), v.double(), cu_seqlens, max_seqlen)
    assert max_error(reference, expected_out) < 1e-12


def test_gradients_equal_formula(small_tiles):
    qkv, (q, k, v), cu_seqlens, max_seqlen = packed_batch(LENGTHS)
    (got,) = gradients(varlen_attention(q, k, v, cu_seqlens, max_seqlen, tiles=small_tiles), [qkv])
    (expected,) = gradients(formula(q, k, v, cu_seqlens, max_seqlen)[0], [qkv])
    for i, name in enumerate("qkv"):
        assert max_error(got[:, i], expected[:, i]) < 5e-6, name


def test_custom_ops_trace_under_torch_compile(small_tiles):
    """The kernels are torch custom ops with fake implementations: torch.compile captures a function
    around varlen_attention in one graph (fullgraph: no graph break at the kernel), and the compiled
    function's outputs and gradients equal the package's per-sequence reference. aot_eager traces
    forward and backward through the ops without generating code; opcheck tests their registration."""
    qkv, (q, k, v), cu_seqlens, max_seqlen = packed_batch(LENGTHS)
    torch.library.opcheck(varlen_module._forward_op,
                          (q, k, v, cu_seqlens, max_seqlen, 0.0, 0.5, 2**32, 0, small_tiles.as_ints()))

    def attend(qkv):
        q, k, v = (qkv[:, i] * 1.5 for i in range(3))
        return varlen_attention(q.contiguous(), k.contiguous(), v.contiguous(), cu_seqlens, max_seqlen,
                                tiles=small_tiles).tanh()

    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    out = compiled(qkv)
    scaled = (qkv * 1.5).detach().requires_grad_()
    expected = varlen_attention_reference(*scaled.unbind(1), cu_seqlens, max_seqlen).tanh()
    assert max_error(out, expected) < 2e-6
    (got,), (reference,) = gradients(out, [qkv]), gradients(expected, [scaled])
    assert max_error(got, 1.5 * reference) < 1e-5


def test_softmax_scale():
    _, (q, k, v), cu_seqlens, max_seqlen = packed_batch([9, 4])
    with torch.no_grad():
        got = varlen_attention(q, k, v, cu_seqlens, max_seqlen, softmax_scale=0.7)
        expected, _ = formula(q * (0.7 * math.sqrt(D)), k, v, cu_seqlens, max_seqlen)
    assert max_error(got, expected) < 2e-6


def test_dropout_equals_formula_with_the_kernels_mask(small_tiles):
    """Forward and backward with dropout equal the formula with the keep mask the hook hands out:
    so backward regenerates exactly the forward's mask."""
    qkv, (q, k, v), cu_seqlens, max_seqlen = packed_batch(LENGTHS)
    masks = []
    out = varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.3, keep_mask_hook=masks.append,
                           tiles=small_tiles)
    (keep,) = masks
    assert keep.dtype == torch.bool and keep.shape == (N, sum(LENGTHS), max_seqlen)
    expected, _ = formula(q, k, v, cu_seqlens, max_seqlen, keep, 0.3)
    assert max_error(out, expected) < 2e-6
    (got,) = gradients(out, [qkv])
    (expected_grad,) = gradients(expected, [qkv])
    assert max_error(got, expected_grad) < 5e-6
    # Positions past a query's own sequence are never kept; some real ones are dropped.
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds, bounds[1:]):
        assert not keep[:, start:end, end - start:].any()
    assert 0 < keep.float().sum() < N * sum(n * n for n in LENGTHS)
    # The package's reference takes the same mask.
    reference = varlen_attention_reference(q.double(), k.double(), v.double(), cu_seqlens, max_seqlen, 0.3, keep)
    assert max_error(reference, expected) < 1e-12


def philox4x32_10(counter, key):
    """Philox4x32-10 (Salmon et al. 2011, Random123) in numpy: counter 4 x uint32 arrays, key 2 x uint32."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    low = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & low, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & low
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & low, (k1 + np.uint64(0xBB67AE85)) & low
    return c0, c1, c2, c3


def test_numpy_philox_matches_random123():
    # Random123's known-answer vector for philox4x32-10 with zero counter and key (kat_vectors).
    words = philox4x32_10([[0]] * 4, (0, 0))
    assert [int(w[0]) for w in words] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_keep_mask_is_the_documented_philox_stream():
    """Key k of query i (packed index) in head h is kept when word k % 4 of Philox4x32-10 keyed by
    the seed, on counter (k // 4, i, h, offset), has top 24 bits / 2^24 >= p."""
    lengths, heads, p = [5, 13, 0, 2], 2, 0.4
    cu_seqlens = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device=DEVICE)
    seed, offset = 2**40 + 12345, 77
    keep = philox_keep_mask(seed, offset, cu_seqlens, max(lengths), heads, p).cpu().numpy()
    expected = np.zeros_like(keep)
    start = 0
    for length in lengths:
        h, i, j = np.meshgrid(np.arange(heads), np.arange(start, start + length), np.arange(length), indexing="ij")
        words = philox4x32_10([j // 4, i, h, np.full_like(h, offset)], (seed & 0xFFFFFFFF, seed >> 32))
        word = np.choose(j % 4, words)
        expected[h, i, j] = (word >> np.uint64(8)).astype(np.float64) / 2**24 >= p
        start += length
    assert np.array_equal(keep, expected)


def test_dropout_statistics():
    """Keep rate, independence of neighbours and of the four words of one Philox call, and the
    1 / (1 - p) scaling, measured on the kernel itself."""
    lengths, heads, p = [160, 67], 2, 0.1
    qkv, (q, k, v), cu_seqlens, max_seqlen = packed_batch(lengths, heads=heads, head_dim=16)
    with torch.no_grad():
        q.zero_()  # uniform probabilities 1 / L ...
        v.fill_(1.0)  # ... so each output is (kept keys / L) / (1 - p)
    masks = []
    with torch.no_grad():
        out = varlen_attention(q, k, v, cu_seqlens, max_seqlen, p, keep_mask_hook=masks.append).double()
    keep = masks[0].cpu()
    spans = ((0, 160), (160, 227))
    real = [keep[:, s:e, : e - s] for s, e in spans]  # (heads, L, L) per sequence
    kept = torch.cat([r.flatten() for r in real]).double()
    sigma = math.sqrt(p * (1 - p) / kept.numel())  # 60k draws: 0.0012
    assert abs(kept.mean().item() - (1 - p)) < 4 * sigma
    for quarter in range(4):  # keys 4g + quarter use word `quarter` of call g
        rate = torch.cat([r[..., quarter::4].flatten() for r in real]).double().mean().item()
        assert abs(rate - (1 - p)) < 8 * sigma
    long = real[0].double()
    pairs_keys, pairs_queries = long[..., 1:] * long[..., :-1], long[:, 1:] * long[:, :-1]
    for pairs in (pairs_keys, pairs_queries):  # P(both kept) = (1 - p)^2 if independent
        assert abs(pairs.mean().item() - (1 - p) ** 2) < 4 * math.sqrt(0.81 * 0.19 / pairs.numel())
    # Scaling: out = kept / (L (1 - p)) exactly, and 1 on average over the 454 rows.
    for (s, e), r in zip(spans, real):
        expected = r.double().sum(-1).T / ((e - s) * (1 - p))  # (L, heads)
        assert max_error(out[s:e, :, 0].cpu(), expected) < 1e-5
    row_sigma = math.sqrt(p / (1 - p) / 67)  # the shorter sequence bounds the per-row spread
    assert abs(out[..., 0].mean().item() - 1) < 4 * row_sigma / math.sqrt(out.shape[0] * heads)


def test_seed_comes_from_torch_generator():
    _, (q, k, v), cu_seqlens, max_seqlen = packed_batch([13, 6])
    runs = []
    for seed in (1, 1, 2):
        masks = []
        torch.manual_seed(seed)
        with torch.no_grad():
            out = varlen_attention(q, k, v, cu_seqlens, max_seqlen, 0.2, keep_mask_hook=masks.append)
        runs.append((out, masks[0]))
    (out1, keep1), (out1_again, keep1_again), (out2, keep2) = runs
    assert torch.equal(keep1, keep1_again) and torch.equal(out1, out1_again)
    real = keep1.new_zeros(keep1.shape)
    real[:, :13, :13], real[:, 13:, :6] = True, True
    differing = (keep1 != keep2)[real].double().mean().item()
    assert 0.2 < differing / (2 * 0.2 * 0.8) < 1.8  # independent masks differ at rate 2 p (1 - p)
    assert not torch.equal(out1, out2)


@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_head_sizes_with_default_tiles(head_dim):
    """BERT's head sizes with the GPU tile table as it is (sequences shorter than one tile)."""
    qkv, (q, k, v), cu_seqlens, max_seqlen = packed_batch([3, 40], heads=2, head_dim=head_dim)
    masks = []
    out = varlen_attention(q, k, v, cu_seqlens, max_seqlen, 0.1, keep_mask_hook=masks.append)
    expected, _ = formula(q, k, v, cu_seqlens, max_seqlen, masks[0], 0.1)
    assert max_error(out, expected) < 2e-6
    assert max_error(gradients(out, [qkv])[0], gradients(expected, [qkv])[0]) < 1e-5


@pytest.mark.parametrize("head_dim", [64, 128])
def test_fp16_inputs(head_dim):
    """fp16 in, fp32 accumulation, with the bf16/fp16 tile table: within fp16 rounding of the
    float64 formula on the same inputs."""
    qkv, (q, k, v), cu_seqlens, max_seqlen = packed_batch([3, 40], heads=2, head_dim=head_dim, dtype=torch.float16)
    out = varlen_attention(q, k, v, cu_seqlens, max_seqlen)
    expected, _ = formula(q, k, v, cu_seqlens, max_seqlen)
    assert out.dtype == torch.float16
    assert max_error(out, expected) < 2e-3  # outputs ~0.3: a few fp16 ulps
    (got,), (expected_grad,) = gradients(out, [qkv]), gradients(expected, [qkv])
    assert max_error(got, expected_grad) < 1e-2 * expected_grad.abs().max().item()


def test_bad_inputs_get_one_clear_message():
    _, (q, k, v), cu_seqlens, max_seqlen = packed_batch([4, 3])
    with pytest.raises(MinibertError, match="cu_seqlens must be int32"):
        varlen_attention(q, k, v, cu_seqlens.long(), max_seqlen)
    with pytest.raises(MinibertError, match="one shape"):
        varlen_attention(q, k[:5], v, cu_seqlens, max_seqlen)
    with pytest.raises(MinibertError, match="head size 160"):
        big = torch.zeros(7, 1, 160, device=DEVICE)
        varlen_attention(big, big, big, cu_seqlens, max_seqlen)
    with pytest.raises(MinibertError, match="max_seqlen must be a Python int"):
        varlen_attention(q, k, v, cu_seqlens, torch.tensor(max_seqlen))
    with pytest.raises(MinibertError, match="dropout_p"):
        varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p=1.0)


def test_importing_minibert_needs_no_triton():
    code = "import sys, minibert, minibert.model.bert, minibert.model.kernels; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_kernels_compile_for_gpus():
    """The interpreter accepts code that the compiler refuses: lower the kernels with their real
    tiles to cubins for sm_90 (H100/H200) and check their shared memory (no GPU needed)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    script = os.path.join(os.path.dirname(__file__), "compile_varlen_kernels.py")
    command = [sys.executable, script, "90", "bf16,fp32", "64,128"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- on a GPU: bf16 / fp16 against torch's SDPA on the padded batch ----------------------------


def sdpa_padded(q, k, v, cu_seqlens, L):
    """torch's scaled_dot_product_attention on the padded (B, N, L, D) batch with a key mask."""
    (qp, rows), (kp, _), (vp, _) = (pad(t, cu_seqlens, L) for t in (q, k, v))
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    mask = torch.arange(L, device=q.device)[None, :] < lengths[:, None]  # (B, L) real keys
    out = torch.nn.functional.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask[:, None, None, :])
    return out.transpose(1, 2).reshape(-1, *q.shape[1:])[rows]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_compiled_kernel_against_sdpa_on_gpu(dtype, head_dim):
    """At BERT-base's shape (12 heads of 64) and with heads of 128, lengths 1..512: the kernel's
    error against the float64 formula is at most about SDPA's own error in the same dtype, for the
    output and all gradients (the compiled tiles of each dtype, several blocks per sequence)."""
    g = torch.Generator().manual_seed(0)
    lengths = [1, 512, *torch.randint(1, 513, (10,), generator=g).tolist()]
    qkv, (q, k, v), cu_seqlens, max_seqlen = packed_batch(lengths, heads=12, head_dim=head_dim, dtype=dtype)
    expected = formula(q, k, v, cu_seqlens, max_seqlen)[0]
    expected_grads = gradients(expected, [qkv])[0].unbind(1)  # dq, dk, dv
    results = {}
    for name, out in (("kernel", varlen_attention(q, k, v, cu_seqlens, max_seqlen)),
                      ("sdpa", sdpa_padded(q, k, v, cu_seqlens, max_seqlen))):
        results[name] = [max_error(out, expected)] + [max_error(a, b) for a, b in zip(
            gradients(out, [qkv])[0].unbind(1), expected_grads)]
    slack = {torch.bfloat16: 1e-3, torch.float16: 1e-4, torch.float32: 1e-5}[dtype]  # ~ a rounding step of each
    for ours, theirs in zip(results["kernel"], results["sdpa"]):
        assert ours <= 2 * theirs + slack, results
