"""Truncation windows and hierarchical chunks on known token lists (paper §5.3.1)."""

import pytest

from minibert.text.encoding import TextEncoding
from minibert.text.long_text import head_only, head_tail, split_chunks, tail_only

TOKENS = list(range(100, 120))  # 20 tokens: 100..119
CLS, SEP = 1, 2


def test_truncation_windows():
    assert head_only(TOKENS, 6, 0) == [100, 101, 102, 103, 104, 105]
    assert tail_only(TOKENS, 6, 0) == [114, 115, 116, 117, 118, 119]
    assert head_tail(TOKENS, 6, 2) == [100, 101, 116, 117, 118, 119]
    assert head_tail(TOKENS, 6, 0) == tail_only(TOKENS, 6, 0)
    assert head_tail(TOKENS, 6, 6) == head_only(TOKENS, 6, 0)
    for strategy in (head_only, tail_only, head_tail):  # short texts are kept whole
        assert strategy(TOKENS[:5], 6, 2) == TOKENS[:5]


def test_paper_head_tail_at_512():
    tokens = list(range(1000))
    kept = TextEncoding(max_seq_length=512, truncation="head_tail", head_tokens=128).encode(tokens, None, CLS, SEP)
    (ids, types), = kept
    assert ids == [CLS] + list(range(128)) + list(range(1000 - 382, 1000)) + [SEP]
    assert types == [0] * 512


def test_chunks():
    assert split_chunks(TOKENS, 8) == [TOKENS[:8], TOKENS[8:16], TOKENS[16:]]  # k = ceil(20 / 8) = 3
    assert split_chunks(TOKENS, 10) == [TOKENS[:10], TOKENS[10:]]
    assert split_chunks(TOKENS, 8, max_chunks=2) == [TOKENS[:8], TOKENS[8:16]]
    assert split_chunks([], 8) == [[]]
    encoding = TextEncoding(max_seq_length=10, hierarchical=True, head_tokens=2)
    chunks = encoding.encode(TOKENS, None, CLS, SEP)
    assert [ids for ids, _ in chunks] == [[CLS, *TOKENS[:8], SEP], [CLS, *TOKENS[8:16], SEP], [CLS, *TOKENS[16:], SEP]]


def test_pairs_are_truncated_longest_first():
    encoding = TextEncoding(max_seq_length=9, head_tokens=2)
    (ids, types), = encoding.encode([10, 11, 12, 13, 14], [20, 21], CLS, SEP)
    # 6 content tokens fit: the longer side (A) loses tokens from its end until 4 + 2.
    assert ids == [CLS, 10, 11, 12, 13, SEP, 20, 21, SEP]
    assert types == [0] * 6 + [1] * 3
    with pytest.raises(ValueError, match="pairs"):
        TextEncoding(hierarchical=True).encode([1], [2], CLS, SEP)


def test_bad_settings():
    with pytest.raises(ValueError, match="truncation"):
        TextEncoding(truncation="middle")
    with pytest.raises(ValueError, match="head_tokens"):
        TextEncoding(max_seq_length=128, head_tokens=128)
