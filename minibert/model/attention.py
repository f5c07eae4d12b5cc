"""The attention computation, in one place.

Every encoder layer calls `attention()`; what runs underneath is picked here from a table, so a
custom fused kernel or unpadded execution can be added without touching the model.

Shapes: B batch, N heads, T tokens (Tq queries, Tk keys), D head size.
"""

import math

import torch
import torch.nn.functional as F

from minibert.model.blocked_attention import blocked_attention

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

    q, k, v: (B, N, T, D); bias: additive (B, 1, 1, T) from `attention_bias`, or None.
    dropout_p: dropout on the attention probabilities (pass 0.0 in eval mode).
    Returns (B, N, T, D).
    """
    return ATTENTION_IMPLEMENTATIONS[implementation](q, k, v, bias, dropout_p)
