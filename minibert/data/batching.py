"""Batches of indices from example lengths: random or length-grouped for training, sorted for evaluation.

All work on a list of lengths and return lists of indices into it, so they know nothing of
tokenizers or tensors; callers gather and pad the examples themselves. BATCHINGS names the training
orders train.py's --batching chooses from.
"""

import random


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int,
                           group_factor: int = 50) -> list[list[int]]:
    """Training batches of indices into `lengths`: similar lengths within a batch, random order.

    Shuffled indices are cut into groups of batch_size * group_factor, each group is sorted by
    length (longest first) and cut into batches, then the batch order is shuffled: less padding
    than random batches, while each batch still comes from anywhere in the data. Deterministic
    per seed; only the last batch of the last group may be short.
    """
    if batch_size < 1 or group_factor < 1:
        raise ValueError(f"batch_size and group_factor must be >= 1, "
                         f"got {batch_size} and {group_factor}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = batch_size * group_factor
    batches = []
    for g in range(0, len(order), group):
        members = sorted(order[g:g + group], key=lambda i: -lengths[i])
        batches += [members[b:b + batch_size] for b in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def random_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Training batches of indices into `lengths`: a seeded random permutation cut into batches, as
    the paper's code (and Google's run_classifier) draws them: a RandomSampler under a DataLoader that
    keeps the short last batch. The lengths are not read; batches mix short and long texts, so they
    carry more padding than length-grouped ones."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]


# --batching: (lengths, batch_size, seed) -> one epoch's batches, every example exactly once.
BATCHINGS = {"length_grouped": length_grouped_batches, "random": random_batches}


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches of indices, longest first (ties in index order); callers restore order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
