"""Dropout with a cheaper mask on the CPU, shared by the encoder's hidden states and attention."""

import math

import torch
import torch.nn.functional as F


def dropout_keep_mask(shape: tuple[int, ...], dropout_p: float, device: torch.device) -> torch.Tensor:
    """Bernoulli(1 - dropout_p) keep mask (bool) of `shape`, drawn from torch's default generator.

    One random 64-bit integer gives four 16-bit uniforms, each compared with a threshold: on the CPU
    this costs a fraction of torch.bernoulli_ per element, which matters for the B*N*T*T attention
    mask (benchmarks/README.md has the measurements). Seeded with torch.manual_seed, the same seed
    gives the same mask.
    Deviation from reference: the keep probability is 1 - dropout_p rounded to a multiple of 2^-16
    (0.899994 for 0.1; float32 bernoulli_ rounds it to 2^-24); the kept values are still scaled by
    exactly 1 / (1 - dropout_p).
    """
    numel = math.prod(shape)
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)
    threshold = round((1 - dropout_p) * 2**16) - 2**15  # int16 is uniform on [-2^15, 2^15)
    # The comparison in place (int16 0/1), then one byte each read as bool: on the CPU about a third of
    # what `bits < threshold` costs, whose bool output torch writes element by element.
    return bits.view(torch.int16)[:numel].lt_(threshold).to(torch.uint8).view(torch.bool).view(shape)


def dropout(x: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """F.dropout(x, dropout_p, training=True), with `dropout_keep_mask` on the CPU.

    On CUDA, F.dropout's fused kernel is faster and is used as it is.
    """
    if dropout_p == 0 or x.device.type != "cpu":
        return F.dropout(x, dropout_p, training=dropout_p > 0)
    keep = dropout_keep_mask(x.shape, dropout_p, x.device).view(torch.uint8)  # uint8 -> float is fast
    return x * keep.to(x.dtype) * (1 / (1 - dropout_p))  # the scalar product rounds once, as F.dropout
