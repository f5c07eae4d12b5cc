"""Turning a tokenized text into model inputs when it is longer than the model allows (paper §5.3.1).

BERT takes at most max_seq_length tokens including [CLS] and [SEP], so 510 content tokens at 512.
Truncation keeps a head, a tail, or both (head+tail: the first 128 and last 382 tokens was best in the
paper, Table 2); hierarchical encoding cuts the text into k = ceil(L / 510) chunks that are encoded
separately and combined by the classifier head.
"""

import math
from dataclasses import dataclass

from minibert.encoding import build_inputs, truncate_pair


def head_only(tokens: list[int], budget: int, head_tokens: int) -> list[int]:
    return tokens[:budget]


def tail_only(tokens: list[int], budget: int, head_tokens: int) -> list[int]:
    return tokens[max(0, len(tokens) - budget):]


def head_tail(tokens: list[int], budget: int, head_tokens: int) -> list[int]:
    """The first head_tokens and the last budget - head_tokens tokens (paper: 128 + 382)."""
    if len(tokens) <= budget:
        return tokens
    return tokens[:head_tokens] + tokens[len(tokens) - (budget - head_tokens):]


TRUNCATIONS = {"head": head_only, "tail": tail_only, "head_tail": head_tail}


def split_chunks(tokens: list[int], budget: int, max_chunks: int = 0) -> list[list[int]]:
    """k = ceil(L / budget) consecutive chunks (one empty chunk for an empty text).

    max_chunks > 0 caps k by keeping the first max_chunks chunks, bounding memory on very long texts.
    """
    k = max(1, math.ceil(len(tokens) / budget))
    if max_chunks > 0:
        k = min(k, max_chunks)
    return [tokens[i * budget:(i + 1) * budget] for i in range(k)]


@dataclass
class TextEncoding:
    """How texts become model inputs; saved with a classifier so prediction does the same."""

    max_seq_length: int = 512
    truncation: str = "head_tail"  # one of TRUNCATIONS
    head_tokens: int = 128  # head+tail: tokens kept from the start (the rest from the end)
    hierarchical: bool = False  # encode every 510-token chunk and let the head combine them
    max_chunks: int = 0  # hierarchical: at most this many chunks per text (0 = no cap)

    def __post_init__(self):
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {tuple(TRUNCATIONS)}, got {self.truncation!r}")
        if self.max_seq_length < 4:
            raise ValueError("max_seq_length must be at least 4")
        if self.truncation == "head_tail" and not 0 <= self.head_tokens <= self.max_seq_length - 2:
            raise ValueError(f"head_tokens must be in 0..{self.max_seq_length - 2} "
                             f"(max_seq_length - 2), got {self.head_tokens}")

    def encode(self, ids_a: list[int], ids_b: list[int] | None, cls_id: int, sep_id: int
               ) -> list[tuple[list[int], list[int]]]:
        """Token ids of one example -> (input_ids, token_type_ids) for each chunk (one without hierarchy)."""
        if ids_b is not None:
            if self.hierarchical:
                raise ValueError("hierarchical encoding takes single texts, not text pairs")
            # Pairs: Google's run_classifier removes tokens from the longer side (_truncate_seq_pair).
            a, b = truncate_pair(ids_a, ids_b, self.max_seq_length - 3)
            return [build_inputs(a, b, cls_id=cls_id, sep_id=sep_id)]
        budget = self.max_seq_length - 2
        if self.hierarchical:
            chunks = split_chunks(ids_a, budget, self.max_chunks)
        else:
            chunks = [TRUNCATIONS[self.truncation](ids_a, budget, self.head_tokens)]
        return [build_inputs(chunk, cls_id=cls_id, sep_id=sep_id) for chunk in chunks]
