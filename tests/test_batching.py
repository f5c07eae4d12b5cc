"""minibert.data.batching: random and length-grouped training batches and sorted evaluation batches."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.data.batching import length_grouped_batches, random_batches, sorted_batches

LENGTHS = [(i * 37) % 101 + 1 for i in range(1003)]


def test_random_batches():
    """--batching random: a seeded permutation cut into batches (the last may be short)."""
    batches = random_batches(LENGTHS, batch_size=8, seed=1)
    assert [len(b) for b in batches] == [8] * 125 + [3]
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))  # every example once
    assert random_batches(LENGTHS, 8, seed=1) == batches and random_batches(LENGTHS, 8, seed=2) != batches
    assert [i for b in batches for i in b] != list(range(len(LENGTHS)))
    assert random_batches([], 8, seed=1) == []
    with pytest.raises(ValueError):
        random_batches(LENGTHS, 0, seed=1)


def test_length_grouped_batches():
    batches = length_grouped_batches(LENGTHS, batch_size=8, seed=1, group_factor=5)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert [len(b) for b in batches].count(8) == len(batches) - 1  # only one short batch
    for batch in batches:
        assert [LENGTHS[i] for i in batch] == sorted((LENGTHS[i] for i in batch), reverse=True)
    # within a group of 40 the batches are sorted, so a batch spans a small range of lengths
    spread = sum(LENGTHS[b[0]] - LENGTHS[b[-1]] for b in batches) / len(batches)
    assert spread < 25  # random batches of 8 from lengths 1..101 spread about 70
    assert length_grouped_batches(LENGTHS, 8, seed=1, group_factor=5) == batches
    assert length_grouped_batches(LENGTHS, 8, seed=2, group_factor=5) != batches
    # the batch order is shuffled: not globally sorted by length
    firsts = [LENGTHS[b[0]] for b in batches]
    assert firsts != sorted(firsts, reverse=True)
    assert length_grouped_batches([], 8, seed=1) == []
    with pytest.raises(ValueError):
        length_grouped_batches(LENGTHS, 0, seed=1)


def test_length_grouped_batches_single_group_is_fully_sorted():
    batches = length_grouped_batches(LENGTHS, batch_size=10, seed=5, group_factor=200)
    flat = sorted(batches, key=lambda b: -LENGTHS[b[0]])
    assert [LENGTHS[i] for b in flat for i in b] == sorted(LENGTHS, reverse=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 512), max_size=300), st.integers(1, 17), st.integers(1, 4),
       st.integers(0, 2**32))
def test_length_grouped_batches_properties(lengths, batch_size, group_factor, seed):
    batches = length_grouped_batches(lengths, batch_size, seed, group_factor)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert sum(len(b) < batch_size for b in batches) <= 1
    for b in batches:
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_sorted_batches():
    lengths = [3, 9, 1, 9, 4]
    assert sorted_batches(lengths, 2) == [[1, 3], [4, 0], [2]]
    batches = sorted_batches(LENGTHS, 16)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS, reverse=True)
    assert sorted_batches([], 4) == []
