"""The attention computation, in one place.

Every encoder layer calls `attention()`; what runs underneath is picked here from a table, so a
custom fused kernel or unpadded execution can be added without touching the model.

Shapes: B batch, N heads, T tokens (Tq queries, Tk keys), D head size.
"""

import math

import torch
import torch.nn.functional as F

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
    """torch's fused scaled-dot-product attention, or `blocked_attention` where that is faster.

    On the CPU torch's fused kernels do not implement dropout: with dropout_p > 0 (training, BERT's
    0.1) scaled_dot_product_attention falls back to its unfused math path, which for the MiniLM
    8x512 shape takes 2-3x the time of `blocked_attention` (fwd + bwd, fp32 and bf16). Without
    dropout the fused CPU kernel is ~1.8x faster than `blocked_attention`. On CUDA the fused kernels
    handle dropout, so they are used there in every mode.
    """
    if dropout_p > 0 and q.device.type == "cpu":
        return blocked_attention(q, k, v, bias, dropout_p)
    if bias is not None:
        bias = bias.to(q.dtype)  # under autocast q may be bf16/fp16; the kernels want one dtype
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)


def reference_attention(q, k, v, bias, dropout_p: float) -> torch.Tensor:
    """The written-out formula of Google's attention_layer: softmax(q k^T / sqrt(D) + bias) v."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, N, Tq, Tk)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    # Google applies dropout to the attention probabilities (attention_probs_dropout_prob).
    probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
    return torch.matmul(probs, v)  # (B, N, Tq, D)


# Rows (batch x head) of the score matrix handled per step of `BlockedAttention`: blocks of at most
# 12 MB (12 heads at T=512 in fp32). That is under glibc's 32 MB mmap threshold, so each step's
# temporaries reuse heap memory instead of fresh pages (page faults cost ~35 ms per 100 MB here).
# MiniLM train 8x512, 2 threads on otherwise idle cores: whole-tensor steps 1.8 seq/s, 32 MB blocks
# 2.2, 12 MB 2.8, 4 MB 2.6, 1 MB 2.4 (smaller blocks stay in cache but launch more ops). When other
# jobs share the 2 cores, every multi-threaded op waits for a descheduled thread and fewer, larger
# steps win (attention fwd+bwd vs torch's math path: whole tensor 1.4x, 32 MB 1.3x, 12 MB 1.0x).
BLOCK_BYTES = 12 << 20


def dropout_keep_mask(shape: tuple[int, ...], dropout_p: float, device: torch.device) -> torch.Tensor:
    """Bernoulli(1 - dropout_p) keep mask (bool) of `shape`, drawn from torch's default generator.

    torch.bernoulli_ on the CPU spends ~7 ns per element; drawing 64-bit integers over the whole int64
    range and comparing each 16-bit quarter with a threshold spends ~2 ns, which matters for the
    B*N*T*T attention mask (25M elements per layer at 8x512). Seeded with torch.manual_seed, the same
    seed gives the same mask.
    Deviation from reference: the keep probability is 1 - dropout_p rounded to a multiple of 2^-16
    (0.899994 for 0.1; float32 bernoulli_ rounds it to 2^-24); the kept values are still scaled by
    exactly 1 / (1 - dropout_p).
    """
    numel = math.prod(shape)
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)
    threshold = round((1 - dropout_p) * 2**16) - 2**15  # int16 is uniform on [-2^15, 2^15)
    return (bits.view(torch.int16)[:numel] < threshold).view(shape)


def dropout(x: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """F.dropout(x, dropout_p, training=True), with `dropout_keep_mask` on the CPU (~3x cheaper).

    The encoder's hidden-state dropout uses it too. On CUDA, F.dropout's fused kernel is faster.
    """
    if dropout_p == 0 or x.device.type != "cpu":
        return F.dropout(x, dropout_p, training=dropout_p > 0)
    keep = dropout_keep_mask(x.shape, dropout_p, x.device).view(torch.uint8)  # uint8 -> float is fast
    return x * keep.to(x.dtype) * (1 / (1 - dropout_p))  # the scalar product rounds once, as F.dropout


def _probabilities(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T + bias) for (R, T, D) blocks; q already carries the 1/sqrt(D) factor. -> (R, T, T)"""
    if bias is None:
        scores = torch.bmm(q, k.transpose(1, 2))
    else:
        scores = torch.baddbmm(bias, q, k.transpose(1, 2))
    return torch.softmax(scores, dim=-1, out=scores)  # in place: one T x T buffer per block


class BlockedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(D) + bias) with dropout on the probabilities, in blocks of rows.

    Equals `reference_attention` with the given keep mask. Saves only q, k, v, bias, the mask (bool)
    and the output: the probabilities are recomputed block by block in backward, as FlashAttention
    does (Dao et al. 2022), so no B x N x T x T float tensor outlives a block.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, keep, dropout_p: float):
        """q, k, v: (B, N, T, D); bias: (B, 1, 1, T) or None; keep: (B, N, T, T) bool or None."""
        B, N, T, D = q.shape
        q = torch.mul(q, 1 / math.sqrt(D)).reshape(B * N, T, D)  # (BN, T, D), scaled once for fwd and bwd
        k, v = k.reshape(B * N, T, D), v.reshape(B * N, T, D)
        if bias is not None:
            bias = bias.to(q.dtype).expand(B, N, 1, T).reshape(B * N, 1, T)
        if keep is not None:
            keep = keep.reshape(B * N, T, T).view(torch.uint8)  # uint8 -> float converts ~6x faster than bool
        out = torch.empty_like(q)
        for rows in _row_blocks(B * N, T, q.element_size()):
            probs = _probabilities(q[rows], k[rows], None if bias is None else bias[rows])
            if keep is not None:
                probs.mul_(keep[rows].to(probs.dtype))  # in place: backward recomputes the dropped ones
            torch.bmm(probs, v[rows], out=out[rows])
        out.mul_(1 / (1 - dropout_p))  # inverted dropout: kept probabilities are scaled by 1/(1-p)
        ctx.save_for_backward(q, k, v, bias, keep, out)
        ctx.dropout_p = dropout_p
        return out.view(B, N, T, D)

    @staticmethod
    def backward(ctx, grad_out):
        # With P = softmax(S), A = P * keep / (1-p) and out = A v:
        #   dv = A^T dout,  dA = dout v^T,  dS = P * (dA * keep / (1-p) - delta),
        #   delta_i = sum_j A_ij dA_ij = dout_i . out_i   (FlashAttention's identity, so P need not be kept).
        # Computed as dS = (1/(1-p)) * (Pk * dA - P * delta * (1-p)) with Pk = P * keep; the scalar factors
        # are applied once to the (BN, T, D) results.
        q, k, v, bias, keep, out = ctx.saved_tensors
        B, N, T, D = grad_out.shape
        keep_scale = 1 / (1 - ctx.dropout_p)
        grad_out = grad_out.reshape(B * N, T, D)
        delta = (grad_out * out).sum(-1, keepdim=True).mul_(1 - ctx.dropout_p)  # (BN, T, 1)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for rows in _row_blocks(B * N, T, q.element_size()):
            probs = _probabilities(q[rows], k[rows], None if bias is None else bias[rows])
            kept = probs if keep is None else keep[rows].to(probs.dtype).mul_(probs)
            torch.bmm(kept.transpose(1, 2), grad_out[rows], out=grad_v[rows])
            grad_scores = torch.bmm(grad_out[rows], v[rows].transpose(1, 2))  # dA, (R, T, T)
            grad_scores.mul_(kept).addcmul_(probs, delta[rows], value=-1)  # dS (1-p)
            torch.bmm(grad_scores, k[rows], out=grad_q[rows])
            torch.bmm(grad_scores.transpose(1, 2), q[rows], out=grad_k[rows])
        grad_q.mul_(keep_scale / math.sqrt(D))  # dS k / sqrt(D)
        grad_k.mul_(keep_scale)  # dS^T q / sqrt(D): q carries the factor
        grad_v.mul_(keep_scale)
        shape = (B, N, T, D)
        return grad_q.view(shape), grad_k.view(shape), grad_v.view(shape), None, None, None


def _row_blocks(rows: int, T: int, element_size: int) -> list[slice]:
    step = max(1, BLOCK_BYTES // (T * T * element_size))
    return [slice(i, i + step) for i in range(0, rows, step)]


def blocked_attention(q, k, v, bias, dropout_p: float) -> torch.Tensor:
    """`BlockedAttention` with a fresh dropout mask; computes in q's dtype with autocast off inside."""
    B, N, T, _ = q.shape
    keep = dropout_keep_mask((B, N, T, T), dropout_p, q.device) if dropout_p > 0 else None
    # Autocast has already chosen the projections' dtype; inside the kernel the probabilities stay in
    # that dtype, as in `reference_attention` under autocast (matmul in bf16, softmax of bf16 in bf16).
    with torch.autocast(q.device.type, enabled=False):
        return BlockedAttention.apply(q, k.to(q.dtype), v.to(q.dtype), bias, keep, dropout_p)


ATTENTION_IMPLEMENTATIONS = {
    "sdpa": sdpa_attention,  # the default: the fastest exact kernel on CPU and CUDA
    "blocked": blocked_attention,
    "reference": reference_attention,
}


def attention(q, k, v, bias, dropout_p: float = 0.0, implementation: str = "sdpa") -> torch.Tensor:
    """Masked scaled-dot-product attention.

    q, k, v: (B, N, T, D); bias: additive (B, 1, 1, T) from `attention_bias`, or None.
    dropout_p: dropout on the attention probabilities (pass 0.0 in eval mode).
    Returns (B, N, T, D).
    """
    return ATTENTION_IMPLEMENTATIONS[implementation](q, k, v, bias, dropout_p)
