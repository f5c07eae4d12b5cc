"""Tests of minibert.text.encoding: truncation, [CLS]/[SEP] framing and padding, by value."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.text.encoding import build_inputs, encode_batch, pad_batch, truncate_pair
from minibert.text.tokenization import FullTokenizer

from helpers import VOCAB_FILE


def google_truncate(a, b, max_length):
    """Google's _truncate_seq_pair as written there: pop in place from the longer list."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_length:
        (a if len(a) > len(b) else b).pop()
    return a, b


class TestTruncatePair:
    def test_hand_cases(self):
        assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([1, 2, 3], [6, 7])
        # Ties remove from the second list.
        assert truncate_pair([1, 2, 3], [4, 5, 6], 4) == ([1, 2], [4, 5])
        assert truncate_pair([1, 2, 3], [4, 5, 6], 5) == ([1, 2, 3], [4, 5])
        assert truncate_pair([1], [2, 3, 4, 5, 6, 7], 3) == ([1], [2, 3])
        assert truncate_pair([1, 2], [3], 0) == ([], [])
        assert truncate_pair([], [], 4) == ([], [])

    def test_returns_new_lists(self):
        a, b = [1, 2, 3], [4]
        new_a, new_b = truncate_pair(a, b, 10)
        assert (new_a, new_b) == (a, b) and new_a is not a and new_b is not b
        truncate_pair(a, b, 1)
        assert (a, b) == ([1, 2, 3], [4])

    def test_negative_budget(self):
        with pytest.raises(ValueError, match="max_tokens"):
            truncate_pair([1], [2], -1)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, 9)), st.lists(st.integers(0, 9)), st.integers(0, 30))
    def test_matches_google_pop_loop(self, a, b, max_tokens):
        assert truncate_pair(a, b, max_tokens) == google_truncate(a, b, max_tokens)


class TestBuildInputs:
    def test_single(self):
        assert build_inputs([5, 6], cls_id=101, sep_id=102) == ([101, 5, 6, 102], [0, 0, 0, 0])
        assert build_inputs([], cls_id=101, sep_id=102) == ([101, 102], [0, 0])

    def test_pair(self):
        assert build_inputs([5, 6], [7], cls_id=101, sep_id=102) == (
            [101, 5, 6, 102, 7, 102], [0, 0, 0, 0, 1, 1])
        assert build_inputs([5], [], cls_id=1, sep_id=2) == ([1, 5, 2, 2], [0, 0, 0, 1])


class TestPadBatch:
    def test_pads_to_longest(self):
        batch = pad_batch([([101, 5, 102], [0, 0, 0]), ([101, 5, 102, 7, 102], [0, 0, 0, 1, 1])], pad_id=0)
        assert torch.equal(batch["input_ids"], torch.tensor([[101, 5, 102, 0, 0], [101, 5, 102, 7, 102]]))
        assert torch.equal(batch["token_type_ids"], torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]))
        assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
        assert all(t.dtype == torch.int64 for t in batch.values())

    def test_pad_to_and_pad_id(self):
        batch = pad_batch([([1, 2], [0, 1])], pad_id=9, pad_to=4)
        assert batch["input_ids"].tolist() == [[1, 2, 9, 9]]
        assert batch["token_type_ids"].tolist() == [[0, 1, 0, 0]]
        assert batch["attention_mask"].tolist() == [[1, 1, 0, 0]]

    def test_errors_and_empty(self):
        with pytest.raises(ValueError, match="pad_to=2"):
            pad_batch([([1, 2, 3], [0, 0, 0])], pad_to=2)
        with pytest.raises(ValueError, match="sequence 0"):
            pad_batch([([1, 2], [0])])
        assert pad_batch([], pad_to=3)["input_ids"].shape == (0, 3)


@pytest.fixture(scope="module")
def tok():
    return FullTokenizer(VOCAB_FILE)


class TestEncodeBatch:
    def test_single_texts(self, tok):
        batch = encode_batch(tok, ["hello world", "unaffable"], max_seq_length=8)
        # hello=7592 world=2088; una=14477 ##ffa=20961 ##ble=3468
        assert batch["input_ids"].tolist() == [[101, 7592, 2088, 102, 0], [101, 14477, 20961, 3468, 102]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1] * 5]
        assert batch["token_type_ids"].tolist() == [[0] * 5, [0] * 5]

    def test_truncation(self, tok):
        ids = tok.encode_text("a b c d e f g h")
        single = encode_batch(tok, ["a b c d e f g h"], max_seq_length=6)
        assert single["input_ids"].tolist() == [[101, *ids[:4], 102]]
        pair = encode_batch(tok, ["a b c d e f g h"], ["hello world"], max_seq_length=7)
        assert pair["input_ids"].tolist() == [[101, *ids[:2], 102, 7592, 2088, 102]]
        assert pair["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1]]
        with pytest.raises(ValueError, match="max_seq_length"):
            encode_batch(tok, ["a"], ["b"], max_seq_length=2)
