"""The written-out formula of variable-length attention, in plain torch: one sequence at a time.

The reference for the Triton kernel's tests and a fallback where Triton cannot run (the CPU without
the interpreter). Same layout as `varlen_attention`: q, k, v (T, N, D) packed, int32 cu_seqlens (B + 1,).
"""

import math

import torch

from minibert.model.dropout import dropout


def varlen_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    keep: torch.Tensor | None = None,
    softmax_scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale) v for each sequence, with dropout on the probabilities.

    q, k, v: (T, N, D); cu_seqlens: (B + 1,) sequence starts, then T; max_seqlen: the longest sequence.
    keep: the dropout keep mask, bool (N, T, max_seqlen) as `philox_keep_mask` writes it ([h, i, j]:
    query i, key j of i's sequence); without it and with dropout_p > 0 the mask comes from torch's
    generator (minibert.model.dropout). Kept probabilities are scaled by 1 / (1 - dropout_p).
    Computes in fp32 at least (float64 stays float64), returns (T, N, D) in q's dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    bounds = cu_seqlens.tolist()
    if max((b - a for a, b in zip(bounds, bounds[1:])), default=0) > max_seqlen:
        raise ValueError(f"varlen_attention_reference: a sequence is longer than max_seqlen={max_seqlen}")
    for start, end in zip(bounds, bounds[1:]):
        qs, ks, vs = (t[start:end].transpose(0, 1).to(dtype) for t in (q, k, v))  # (N, L, D)
        probs = torch.softmax(qs @ ks.transpose(1, 2) * scale, dim=-1)  # (N, L, L)
        if keep is not None:
            probs = probs * keep[:, start:end, : end - start] / (1 - dropout_p)
        elif dropout_p > 0:
            probs = dropout(probs, dropout_p)
        out[start:end] = (probs @ vs).transpose(0, 1)  # (L, N, D)
    return out.to(q.dtype)
