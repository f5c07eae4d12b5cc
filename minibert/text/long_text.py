"""Which tokens of a long text reach the model (paper §5.3.1): truncation windows and chunks.

BERT takes at most max_seq_length tokens including [CLS] and [SEP], so 510 content tokens at 512.
Truncation keeps a head, a tail, or both (head+tail: the first 128 and last 382 tokens was best in the
paper, Table 2); hierarchical encoding cuts the text into k = ceil(L / 510) chunks that are encoded
separately and combined by the classifier head.
"""

import math


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

# Paper §5.3.1: head+tail keeps the first 128 of the 510 content tokens of a 512-token sequence.
PAPER_HEAD_TOKENS, PAPER_BUDGET = 128, 510


def paper_head_tokens(max_seq_length: int) -> int:
    """The head of head+tail at the paper's ratio 128 / 510 of the content budget (max_seq_length - 2):
    128 at 512 tokens, 32 at 128 tokens."""
    return round(PAPER_HEAD_TOKENS / PAPER_BUDGET * (max_seq_length - 2))


def split_chunks(tokens: list[int], budget: int, max_chunks: int = 0) -> list[list[int]]:
    """k = ceil(L / budget) consecutive chunks (one empty chunk for an empty text).

    max_chunks > 0 caps k by keeping the first max_chunks chunks, bounding memory on very long texts.
    """
    k = max(1, math.ceil(len(tokens) / budget))
    if max_chunks > 0:
        k = min(k, max_chunks)
    return [tokens[i * budget:(i + 1) * budget] for i in range(k)]
