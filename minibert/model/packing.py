"""Packing the real tokens of a padded batch into one (total_tokens, ...) tensor, and back.

The unpadded encoder (BertModel with padding="unpadded") runs every linear layer, LayerNorm, GELU
and dropout on the real tokens only, as FlashAttention-2's variable-length layout does: sequence b
occupies rows cu_seqlens[b]:cu_seqlens[b + 1] of the packed tensor, in the order of its tokens.

Shapes: B batch, T padded length, S = max_seqlen (longest real sequence), total = real tokens.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Packing:
    """Where the real tokens of a (B, T) batch are; computed once per batch by `pack_mask`."""

    indices: torch.Tensor  # (total,) int64: flat positions b * T + t of the real tokens, in order
    cu_seqlens: torch.Tensor  # (B + 1,) int32: cumulative real lengths, starting at 0
    max_seqlen: int  # S, the longest real sequence
    batch: int  # B
    length: int  # T

    @property
    def positions(self) -> torch.Tensor:
        """(total,) int64: the position t of each real token in its row (position embeddings)."""
        return self.indices % self.length

    @property
    def first_rows(self) -> torch.Tensor:
        """(B,) int64: the packed row of each sequence's first token ([CLS])."""
        return self.cu_seqlens[:-1].long()


def pack_mask(attention_mask: torch.Tensor) -> Packing | None:
    """(B, T) mask with 1 = token -> Packing, or None when the batch cannot be packed exactly.

    Packing needs every row to start with a real token: the pooler reads position 0, which a row
    that starts with padding (or is all padding) does not have among its real tokens. Those batches
    run padded. The two host syncs of the encoder's packed path (the number of real tokens, and S)
    happen here, once per batch; the layers then run without any.
    """
    mask = attention_mask.bool()
    if not bool(mask[:, 0].all()):
        return None
    lengths = mask.sum(1)  # (B,)
    indices = mask.flatten().nonzero().squeeze(1)  # (total,)
    cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    B, T = mask.shape
    return Packing(indices, cu_seqlens, int(lengths.max()), B, T)


def pack(x: torch.Tensor, packing: Packing) -> torch.Tensor:
    """(B, T, ...) -> (total, ...): the real tokens of x, row after row."""
    return x.flatten(0, 1).index_select(0, packing.indices)


def unpack(x: torch.Tensor, packing: Packing) -> torch.Tensor:
    """(total, ...) -> (B, T, ...) with zeros at padded positions (differentiable in x)."""
    padded = x.new_zeros((packing.batch * packing.length, *x.shape[1:]))
    return padded.index_copy(0, packing.indices, x).unflatten(0, (packing.batch, packing.length))


def varlen_row_indices(cu_seqlens: torch.Tensor, total: int, max_seqlen: int) -> torch.Tensor:
    """(total,) int64 flat positions b * S + t of each packed token in a (B, S) re-padded batch.

    From cu_seqlens alone and without host syncs (repeat_interleave is told its output size).
    """
    starts, lengths = cu_seqlens[:-1].long(), cu_seqlens.diff().long()
    row = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths,
                                  output_size=total)  # (total,) sequence of each token
    offset = torch.arange(total, device=cu_seqlens.device) - starts[row]  # position within it
    return row * max_seqlen + offset


def packed_rows(packing: Packing, positions: torch.Tensor) -> torch.Tensor:
    """positions (B, P) in the padded (B, T) batch -> their rows (B, P) int64 in the packed tensor.

    Raises ValueError when a position is a padded one: the unpadded encoder computes nothing there.
    """
    row_of = torch.full((packing.batch * packing.length,), -1, dtype=torch.long, device=positions.device)
    row_of[packing.indices] = torch.arange(len(packing.indices), device=positions.device)
    rows = row_of.view(packing.batch, packing.length).gather(1, positions)  # (B, P)
    if not bool((rows >= 0).all()):
        raise ValueError("last_layer_positions name padded positions, which the unpadded encoder does not compute")
    return rows
