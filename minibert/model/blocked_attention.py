"""Attention with dropout for the CPU, in blocks of rows, recomputing probabilities in backward.

On the CPU torch's fused scaled_dot_product_attention kernels do not implement dropout, so in
training (BERT's attention dropout 0.1) torch falls back to its unfused math path, which keeps the
whole B x N x T x T probability tensor and is slow. `BlockedAttention` computes the same formula
block by block and keeps only a one-byte dropout mask (measurements in benchmarks/README.md).

Shapes: B batch, N heads, Tq queries, Tk keys (Tq = Tk = T in self-attention over all tokens; Tq < Tk
when only some positions are queried, as in the encoder's reduced last layer), D head size,
R rows (batch x head) of one block.
"""

import math

import torch

from minibert.model.dropout import dropout_keep_mask

# Rows (batch x head) of the score matrix handled per step: blocks of at most 12 MB (12 heads at
# T=512 in fp32). That is under glibc's 32 MB mmap threshold, so each step's temporaries reuse heap
# memory instead of fresh pages; benchmarks/README.md has the block sizes that were measured.
BLOCK_BYTES = 12 << 20
# Probabilities (and their dropped copy) of one call kept from forward for backward when they take at
# most this many bytes: 16 x 128 tokens of MiniLM's 12 heads take 6.3 MB each in bf16. Larger calls
# (long texts, big batches) recompute them block by block in backward instead.
SAVED_BYTES = 32 << 20


def _probabilities(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T + bias) for q (R, Tq, D), k (R, Tk, D); q already carries the 1/sqrt(D) factor.
    -> (R, Tq, Tk)"""
    if bias is None:
        scores = torch.bmm(q, k.transpose(1, 2))
    else:
        scores = torch.baddbmm(bias, q, k.transpose(1, 2))
    return torch.softmax(scores, dim=-1, out=scores)  # in place: one Tq x Tk buffer per block


class BlockedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(D) + bias) with dropout on the probabilities, in blocks of rows.

    Equals `reference_attention` with the given keep mask. Saves q, k, v, bias, the mask (bool) and
    the output; the probabilities too when they fit `saved_bytes`, else they are recomputed block by
    block in backward, as FlashAttention does (Dao et al. 2022), so that no B x N x Tq x Tk float
    tensor of a large call outlives a block.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, keep, dropout_p: float, block_bytes: int = BLOCK_BYTES,
                saved_bytes: int = SAVED_BYTES):
        """q: (B, N, Tq, D); k, v: (B, N, Tk, D); bias: (B, 1, 1, Tk) or None; keep: (B, N, Tq, Tk)
        bool or None; block_bytes: the most bytes of scores computed at once; saved_bytes: the most
        bytes of probabilities kept for backward (`blocked_attention`)."""
        B, N, Tq, D = q.shape
        Tk = k.shape[2]
        q = torch.mul(q, 1 / math.sqrt(D)).reshape(B * N, Tq, D)  # (BN, Tq, D), scaled once for fwd and bwd
        k, v = k.reshape(B * N, Tk, D), v.reshape(B * N, Tk, D)
        if bias is not None:
            bias = bias.to(q.dtype).expand(B, N, 1, Tk).reshape(B * N, 1, Tk)
        if keep is not None:
            keep = keep.reshape(B * N, Tq, Tk).view(torch.uint8)  # uint8 -> float converts ~6x faster than bool
        out = torch.empty_like(q)
        saved = (1 if keep is None else 2) * B * N * Tq * Tk * q.element_size() <= saved_bytes
        blocks = [slice(0, B * N)] if saved else _row_blocks(B * N, Tq * Tk, q.element_size(), block_bytes)
        for rows in blocks:
            probs = _probabilities(q[rows], k[rows], None if bias is None else bias[rows])
            kept = probs
            if keep is not None:  # in place unless saved: backward then recomputes the dropped ones
                kept = probs * keep[rows].to(probs.dtype) if saved else probs.mul_(keep[rows].to(probs.dtype))
            torch.bmm(kept, v[rows], out=out[rows])
        out.mul_(1 / (1 - dropout_p))  # inverted dropout: kept probabilities are scaled by 1/(1-p)
        ctx.save_for_backward(q, k, v, bias, keep, out, *((probs, kept) if saved else (None, None)))
        ctx.dropout_p, ctx.block_bytes = dropout_p, block_bytes
        return out.view(B, N, Tq, D)

    @staticmethod
    def backward(ctx, grad_out):
        # With P = softmax(S), A = P * keep / (1-p) and out = A v:
        #   dv = A^T dout,  dA = dout v^T,  dS = P * (dA * keep / (1-p) - delta),
        #   delta_i = sum_j A_ij dA_ij = dout_i . out_i   (FlashAttention's identity, so P need not be kept).
        # Computed as dS = (1/(1-p)) * (Pk * dA - P * delta * (1-p)) with Pk = P * keep; the scalar factors
        # are applied once to the (BN, T, D) results.
        q, k, v, bias, keep, out, saved_probs, saved_kept = ctx.saved_tensors
        B, N, Tq, D = grad_out.shape
        Tk = k.shape[1]
        keep_scale = 1 / (1 - ctx.dropout_p)
        grad_out = grad_out.reshape(B * N, Tq, D)
        delta = (grad_out * out).sum(-1, keepdim=True).mul_(1 - ctx.dropout_p)  # (BN, Tq, 1)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        blocks = [slice(0, B * N)] if saved_probs is not None else _row_blocks(B * N, Tq * Tk, q.element_size(),
                                                                               ctx.block_bytes)
        for rows in blocks:
            probs, kept = _probabilities_and_kept(q, k, bias, keep, rows, saved_probs, saved_kept)
            torch.bmm(kept.transpose(1, 2), grad_out[rows], out=grad_v[rows])
            grad_scores = torch.bmm(grad_out[rows], v[rows].transpose(1, 2))  # dA, (R, Tq, Tk)
            grad_scores.mul_(kept).addcmul_(probs, delta[rows], value=-1)  # dS (1-p)
            torch.bmm(grad_scores, k[rows], out=grad_q[rows])
            torch.bmm(grad_scores.transpose(1, 2), q[rows], out=grad_k[rows])
        grad_q.mul_(keep_scale / math.sqrt(D))  # dS k / sqrt(D)
        grad_k.mul_(keep_scale)  # dS^T q / sqrt(D): q carries the factor
        grad_v.mul_(keep_scale)
        return (grad_q.view(B, N, Tq, D), grad_k.view(B, N, Tk, D), grad_v.view(B, N, Tk, D),
                None, None, None, None, None)


def _probabilities_and_kept(q, k, bias, keep, rows: slice, saved_probs, saved_kept) -> tuple:
    """Backward's P and P * keep for a block of rows: as forward saved them, else recomputed."""
    if saved_probs is not None:
        return saved_probs, saved_kept
    probs = _probabilities(q[rows], k[rows], None if bias is None else bias[rows])
    return probs, probs if keep is None else keep[rows].to(probs.dtype).mul_(probs)


def _row_blocks(rows: int, scores_per_row: int, element_size: int, block_bytes: int) -> list[slice]:
    """Slices of the BN rows with at most `block_bytes` of scores (Tq x Tk per row) each (at least one row)."""
    step = max(1, block_bytes // (scores_per_row * element_size))
    return [slice(i, i + step) for i in range(0, rows, step)]


def blocked_attention(q, k, v, bias, dropout_p: float, block_bytes: int = BLOCK_BYTES,
                      saved_bytes: int = SAVED_BYTES) -> torch.Tensor:
    """`BlockedAttention` with a fresh dropout mask; computes in q's dtype with autocast off inside.
    `block_bytes` bounds the scores computed at once (rows of one block); the default is the
    measured BLOCK_BYTES, and a smaller one makes small inputs cross several blocks. `saved_bytes`
    bounds the probabilities kept for backward (SAVED_BYTES; 0 recomputes them always)."""
    B, N, Tq, _ = q.shape
    keep = dropout_keep_mask((B, N, Tq, k.shape[2]), dropout_p, q.device) if dropout_p > 0 else None
    # Autocast has already chosen the projections' dtype; inside the kernel the probabilities stay in
    # that dtype, as in `reference_attention` under autocast (matmul in bf16, softmax of bf16 in bf16).
    with torch.autocast(q.device.type, enabled=False):
        return BlockedAttention.apply(q, k.to(q.dtype), v.to(q.dtype), bias, keep, dropout_p, block_bytes,
                                      saved_bytes)
