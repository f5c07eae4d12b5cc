"""The attention computation, in one place.

Every encoder layer calls `attention()` (padded batches) or `varlen_attention()` (the unpadded
encoder's packed tokens); what runs underneath is picked here from tables, so a custom fused kernel
can be added without touching the model.

Shapes: B batch, N heads, T tokens (Tq queries, Tk keys), D head size; packed: total tokens,
cu_seqlens (B + 1,) int32 cumulative lengths, S = max_seqlen.
"""

import importlib
import math

import torch
import torch.nn.functional as F

from minibert.model.blocked_attention import blocked_attention
from minibert.model.packing import varlen_row_indices

# Google's modeling.py adds -10000 to the scores of padded keys (create_attention_mask_from_input_mask
# and attention_layer). In fp32 exp(-10000) is exactly 0, so this equals -inf masking for real rows,
# and a padded query row still attends to the real tokens, as in Google's outputs.
MASK_VALUE = -10000.0


def attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) mask with 1 = token, 0 = padding -> additive bias (B, 1, 1, T), or None if nothing is padded."""
    if bool(attention_mask.all()):
        return None  # no padding: lets the fused kernels take their fastest path
    bias = (1.0 - attention_mask.to(dtype)) * MASK_VALUE
    return bias[:, None, None, :]  # (B, 1, 1, T): broadcast over heads and queries


def sdpa_attention(q, k, v, bias, dropout_p: float) -> torch.Tensor:
    """torch's scaled_dot_product_attention (fused kernels where torch has them, else its math path)."""
    if bias is not None:
        bias = bias.to(q.dtype)  # under autocast q may be bf16/fp16; the kernels want one dtype
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)


def auto_attention(q, k, v, bias, dropout_p: float) -> torch.Tensor:
    """The fastest exact kernel for the device and mode: `blocked_attention` on the CPU with dropout
    (torch's fused CPU kernels have no dropout and its math path is slower), torch's SDPA otherwise
    (its fused CPU kernel beats the blocked one without dropout; on CUDA its kernels do dropout)."""
    if dropout_p > 0 and q.device.type == "cpu":
        return blocked_attention(q, k, v, bias, dropout_p)
    return sdpa_attention(q, k, v, bias, dropout_p)


def reference_attention(q, k, v, bias, dropout_p: float) -> torch.Tensor:
    """The written-out formula of Google's attention_layer: softmax(q k^T / sqrt(D) + bias) v."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, N, Tq, Tk)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    # Google applies dropout to the attention probabilities (attention_probs_dropout_prob).
    probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
    return torch.matmul(probs, v)  # (B, N, Tq, D)


ATTENTION_IMPLEMENTATIONS = {
    "auto": auto_attention,  # the default: picks the fastest exact kernel for device and mode
    "sdpa": sdpa_attention,
    "blocked": blocked_attention,
    "reference": reference_attention,
}


def attention(q, k, v, bias, dropout_p: float = 0.0, implementation: str = "auto") -> torch.Tensor:
    """Masked scaled-dot-product attention.

    q: (B, N, Tq, D); k, v: (B, N, Tk, D) (Tq = Tk for self-attention over all tokens, Tq < Tk when
    only some positions are queried); bias: additive (B, 1, 1, Tk) from `attention_bias`, or None.
    dropout_p: dropout on the attention probabilities (pass 0.0 in eval mode).
    Returns (B, N, Tq, D).
    """
    return ATTENTION_IMPLEMENTATIONS[implementation](q, k, v, bias, dropout_p)


# ------------------------------------------------------------------------------------------------
# Variable-length (packed) attention: FlashAttention-2's varlen layout.


def repad_varlen_attention(q, k, v, cu_seqlens, max_seqlen: int, dropout_p: float = 0.0,
                           softmax_scale: float | None = None, padded_implementation: str = "auto"):
    """Varlen attention on any device by re-padding inside attention only.

    The packed q, k, v are scattered into (B, N, S, D) with S = max_seqlen, the padded kernel
    ATTENTION_IMPLEMENTATIONS[padded_implementation] runs with the key-padding bias, and the real
    rows are gathered back. Everything outside attention stays packed; on the CPU the padded
    kernels (torch's fused SDPA, the blocked kernel with dropout) are faster than a per-sequence loop.
    """
    total, N, D = q.shape
    B = len(cu_seqlens) - 1
    if softmax_scale is not None and softmax_scale != 1 / math.sqrt(D):
        q = q * (softmax_scale * math.sqrt(D))  # the padded kernels scale by 1/sqrt(D)
    rows = varlen_row_indices(cu_seqlens, total, max_seqlen)  # (total,)
    bias = repadded_bias(cu_seqlens, max_seqlen, q.dtype)
    q, k, v = (repad(x, rows, B, max_seqlen) for x in (q, k, v))  # each (B, N, S, D)
    context = ATTENTION_IMPLEMENTATIONS[padded_implementation](q, k, v, bias, dropout_p)
    return context.transpose(1, 2).reshape(B * max_seqlen, N, D).index_select(0, rows)  # (total, N, D)


def repad(x: torch.Tensor, rows: torch.Tensor, batch: int, max_seqlen: int) -> torch.Tensor:
    """Packed (total, N, D) -> (B, N, S, D) with zeros at padding; rows from varlen_row_indices."""
    _, N, D = x.shape
    padded = x.new_zeros(batch * max_seqlen, N, D).index_copy(0, rows, x)
    return padded.view(batch, max_seqlen, N, D).transpose(1, 2)


def repadded_bias(cu_seqlens: torch.Tensor, max_seqlen: int, dtype: torch.dtype) -> torch.Tensor:
    """The key-padding bias (B, 1, 1, S) of the re-padded (B, S) batch, as `attention_bias`."""
    lengths = cu_seqlens.diff()
    padding = torch.arange(max_seqlen, device=cu_seqlens.device)[None, :] >= lengths[:, None]  # (B, S)
    return (padding.to(dtype) * MASK_VALUE)[:, None, None, :]


def packed_keys_attention(q, k, v, cu_seqlens, max_seqlen: int, dropout_p: float = 0.0,
                          implementation: str = "auto") -> torch.Tensor:
    """Some queries per sequence against all of that sequence's packed keys.

    q: (B, N, P, D), P queries of each sequence (the unpadded encoder's reduced last layer); k, v:
    (total, N, D) packed as in `varlen_attention`. The keys and values are re-padded to (B, N, S, D)
    and ATTENTION_IMPLEMENTATIONS[implementation] runs with the key-padding bias; with P much smaller
    than S this is a small part of the layer on any device. Returns (B, N, P, D).
    """
    B = len(cu_seqlens) - 1
    rows = varlen_row_indices(cu_seqlens, k.shape[0], max_seqlen)  # (total,)
    k, v = repad(k, rows, B, max_seqlen), repad(v, rows, B, max_seqlen)  # each (B, N, S, D)
    bias = repadded_bias(cu_seqlens, max_seqlen, q.dtype)
    return ATTENTION_IMPLEMENTATIONS[implementation](q, k, v, bias, dropout_p)


def _triton_varlen_attention():
    """The Triton CUDA kernel's varlen_attention, or None where it or Triton is not installed."""
    try:
        module = importlib.import_module("minibert.model.kernels.varlen_attention")
    except ImportError:  # no triton, or a build without the kernels package
        return None
    return getattr(module, "varlen_attention", None)


def triton_varlen_attention(q, k, v, cu_seqlens, max_seqlen: int, dropout_p: float = 0.0,
                            softmax_scale: float | None = None, padded_implementation: str = "auto"):
    """The fused Triton kernel (CUDA): outputs and gradients without any S x S tensor in memory."""
    kernel = _triton_varlen_attention()
    if kernel is None:
        raise RuntimeError("varlen attention 'triton' needs triton and minibert.model.kernels.varlen_attention")
    return kernel(q, k, v, cu_seqlens, max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale)


def auto_varlen_attention(q, k, v, cu_seqlens, max_seqlen: int, dropout_p: float = 0.0,
                          softmax_scale: float | None = None, padded_implementation: str = "auto"):
    """The Triton kernel on CUDA when it imports (with the padded implementation left at "auto"),
    re-padded attention otherwise."""
    if q.is_cuda and padded_implementation == "auto" and _triton_varlen_attention() is not None:
        return triton_varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale)
    return repad_varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, padded_implementation)


VARLEN_ATTENTION_IMPLEMENTATIONS = {
    "auto": auto_varlen_attention,
    "repad": repad_varlen_attention,
    "triton": triton_varlen_attention,
}


def varlen_attention(q, k, v, cu_seqlens, max_seqlen: int, dropout_p: float = 0.0,
                     softmax_scale: float | None = None, implementation: str = "auto",
                     padded_implementation: str = "auto") -> torch.Tensor:
    """Attention within each packed sequence (FlashAttention-2's varlen interface).

    q, k, v: (total, N, D); cu_seqlens: (B + 1,) int32; max_seqlen: the longest sequence;
    softmax_scale: None = 1/sqrt(D). padded_implementation names the ATTENTION_IMPLEMENTATIONS
    entry that re-padded attention uses (the model's config.attention_implementation).
    Returns (total, N, D).
    """
    return VARLEN_ATTENTION_IMPLEMENTATIONS[implementation](
        q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, padded_implementation)
