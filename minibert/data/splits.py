"""Seeded, stratified splits and few-shot subsets.

The helpers work on any objects through `key` (the class of an item), so the corpus preparation
scripts use them on raw records before anything is tokenized, and train.py on examples. When `key`
gives a list or tuple (the labels of a multi-label item, names or ids), the split or subset is made
by iterative stratification (Sechidis, Tsoumakas and Vlahavas 2011, "On the stratification of
multi-label data"), so that each label is represented in each part where that is possible.
"""

import heapq
import random
from collections.abc import Callable, Hashable, Sequence


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

    Multi-label items (`key` gives label lists): round(fraction * n) items held out (at least 1 and
    at most n - 1 for 0 < fraction < 1 and n >= 2), chosen by iterative_stratification so that each
    label of 2+ items has items on both sides where possible.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    label_lists = _label_lists(examples, key)
    if label_lists is not None:
        return _stratified_split_multi_label(examples, label_lists, fraction, seed)
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

    Multi-label items (`key` gives label lists): max(1, round(fraction * n)) or `count` (1 to n)
    items, chosen by iterative_stratification with each label of 2+ items given at least one in the
    subset where possible; subsets of different sizes are not nested.
    """
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    label_lists = _label_lists(examples, key)
    if label_lists is not None:
        return _few_shot_multi_label(examples, label_lists, fraction, count, seed)
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


def _label_lists(items: list, key: Callable) -> list[Sequence] | None:
    """The items' label lists when `key` gives lists or tuples (multi-label), else None."""
    keys = [key(item) for item in items]
    lists = [isinstance(k, (list, tuple)) for k in keys]
    if not any(lists):
        return None
    if not all(lists):
        raise ValueError("key gives a label list for some items and a single label for others")
    return keys


def _stratified_split_multi_label(items: list, label_lists: list, fraction: float, seed: int) -> tuple[list, list]:
    n = len(items)
    held = round(fraction * n)
    if 0 < fraction < 1 and n >= 2:
        held = min(max(held, 1), n - 1)
    parts = iterative_stratification(label_lists, [n - held, held], seed)
    return [x for x, p in zip(items, parts) if p == 0], [x for x, p in zip(items, parts) if p == 1]


def _few_shot_multi_label(items: list, label_lists: list, fraction: float | None, count: int | None,
                          seed: int) -> list:
    n = len(items)
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        count = max(1, round(fraction * n))
    elif not 1 <= count <= n:
        raise ValueError(f"count must be between 1 and the number of examples ({n}), got {count}")
    parts = iterative_stratification(label_lists, [count, n - count], seed)
    return [x for x, p in zip(items, parts) if p == 0]


def iterative_stratification(label_lists: Sequence[Sequence[Hashable]], sizes: Sequence[int],
                             seed: int) -> list[int]:
    """The part (0 .. len(sizes) - 1) of each item, part j getting exactly sizes[j] items.

    Sechidis et al. (2011), Algorithm 1: label l of n_l items wants n_l * sizes[j] / n of them in
    part j. Repeatedly the label with the fewest items still unassigned (ties: at random) has those
    items placed, each in the part that wants that label most (ties: the part with the most room
    left, then at random); items without labels come last, each to the part with the most room.
    Two additions: a part is full at sizes[j] items (the paper lets parts overshoot), so sizes are
    exact; and a label of at least as many items as there are non-empty parts wants at least 1 in
    each of them, so rare labels reach every part where possible. Items are visited in one seeded
    shuffle and every tie is broken by the seeded generator: the result depends only on the seed.
    """
    n = len(label_lists)
    if sum(sizes) != n or any(size < 0 for size in sizes):
        raise ValueError(f"sizes must be non-negative and sum to the {n} items, got {list(sizes)}")
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    label_index: dict[Hashable, int] = {}
    item_labels = [sorted({label_index.setdefault(label, len(label_index)) for label in labels})
                   for labels in label_lists]
    members: list[list[int]] = [[] for _ in label_index]
    for i in order:
        for label in item_labels[i]:
            members[label].append(i)
    open_parts = sum(1 for size in sizes if size > 0)
    wanted = [[max(len(m) * size / n, 1.0) if size > 0 and len(m) >= open_parts else len(m) * size / n
               for m in members] for size in sizes]  # wanted[j][label]
    room, remaining = list(sizes), [len(m) for m in members]
    part: list[int | None] = [None] * n

    def place(i: int, j: int) -> None:
        part[i] = j
        room[j] -= 1
        for label in item_labels[i]:
            wanted[j][label] -= 1
            remaining[label] -= 1

    while any(remaining):
        fewest = min(r for r in remaining if r > 0)
        label = rng.choice([m for m, r in enumerate(remaining) if r == fewest])
        for i in members[label]:
            if part[i] is None:
                place(i, _best_part([(wanted[j][label], room[j]) for j in range(len(sizes))], room, rng))
    for i in order:
        if part[i] is None:
            place(i, _best_part([(room[j],) for j in range(len(sizes))], room, rng))
    return part


def _best_part(scores: list[tuple], room: list[int], rng: random.Random) -> int:
    """The part with room left and the highest score tuple; ties at random."""
    candidates = [j for j in range(len(room)) if room[j] > 0]
    best = max(scores[j] for j in candidates)
    return rng.choice([j for j in candidates if scores[j] == best])
