"""Seeded, stratified splits and few-shot subsets.

The helpers work on any objects through `key` (the class of an item), so the corpus preparation
scripts use them on raw records before anything is tokenized, and train.py on examples.
"""

import heapq
import random
from collections.abc import Callable


def _by_class(items: list, key: Callable) -> list[list[int]]:
    """Indices grouped by class, classes in order of first appearance (so deterministic)."""
    groups: dict[object, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return list(groups.values())


def stratified_split(examples: list, fraction: float, seed: int,
                     key: Callable = lambda e: e.label) -> tuple[list, list]:
    """Split into (rest, held_out) with round(fraction * n_c) items of each class c held out.

    For 0 < fraction < 1 a class keeps at least 1 item in rest and, when it has 2 or more, gives at
    least 1 to held_out: training sees every class, held_out every class that can be split.
    round is Python's (half to even). Both lists keep the input order.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    held = set()
    for members in _by_class(examples, key):
        k = round(fraction * len(members))
        if 0 < fraction < 1:
            k = min(max(k, 1), len(members) - 1)
        held.update(rng.sample(members, k))
    rest = [x for i, x in enumerate(examples) if i not in held]
    return rest, [x for i, x in enumerate(examples) if i in held]


def few_shot_subset(examples: list, *, fraction: float | None = None, count: int | None = None,
                    seed: int, key: Callable = lambda e: e.label) -> list:
    """A seeded, stratified subset for learning curves (the paper's 0.4% ... 100% of IMDb).

    Either `fraction`: max(1, round(fraction * n_c)) of each class c; or `count` in total, one per
    class and then shared by Webster's method (each next item to the class with the largest
    n_c / (a_c + 0.5)), which unlike largest remainders never takes from a class as count grows.
    Each class is shuffled once with the seed and a prefix taken, so for one seed a larger fraction
    or count gives a superset. The subset keeps the input order.
    """
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    rng = random.Random(seed)
    classes = _by_class(examples, key)
    for members in classes:
        rng.shuffle(members)
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        sizes = [max(1, round(fraction * len(members))) for members in classes]
    else:
        if not len(classes) <= count <= len(examples):
            raise ValueError(f"count must be between the number of classes ({len(classes)}) and "
                             f"the number of examples ({len(examples)}), got {count}")
        sizes = [1] * len(classes)
        heap = [(-len(members) / 1.5, c) for c, members in enumerate(classes) if len(members) > 1]
        for _ in range(count - len(classes)):
            _, c = heapq.heappop(heap)  # ties go to the class seen first
            sizes[c] += 1
            if sizes[c] < len(classes[c]):
                heapq.heappush(heap, (-len(classes[c]) / (sizes[c] + 0.5), c))
    chosen = sorted(i for members, size in zip(classes, sizes) for i in members[:size])
    return [examples[i] for i in chosen]
