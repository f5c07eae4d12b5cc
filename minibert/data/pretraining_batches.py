"""Batches of pre-training records in a resumable order, with static or dynamic masking.

The records of all input files form one list of N records, read as an endless stream: record
position p is row order(epoch)[p % N] with epoch = p // N, where order(epoch) is the file order
(shuffle off) or a permutation seeded by (seed, epoch). A run's data position is therefore one
integer, the number of records consumed, and a resumed run continues mid-epoch exactly.

Masking modes:
  static   the masks stored in the records (Google: fixed when the instances were created, with
           dupe_factor differently masked copies of the text). The default.
  dynamic  each time a record is used the stored masks are undone and Google's masking rule
           (create_masked_lm_predictions: 80% [MASK], 10% kept, 10% random word) is drawn again
           from a random.Random seeded by (seed, epoch, record), so every epoch sees new masks and
           a resumed run draws the same ones.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from minibert.data.pretraining_instances import Vocabulary, mask_tokens
from minibert.data.pretraining_records import FEATURES, Records
from minibert.errors import DataError

# --masking: the records' own masks (Google), or Google's rule drawn anew per epoch and record.
MASKINGS = ("static", "dynamic")


@dataclass(frozen=True)
class DynamicMasking:
    """Google's masking settings, applied when batches are built."""
    vocab: Vocabulary
    masked_lm_prob: float = 0.15
    whole_word: bool = False
    seed: int = 12345


class RecordStream:
    """The records of several sources as one endless, optionally shuffled stream (see module doc)."""

    def __init__(self, sources: Sequence[Records], shuffle: bool, seed: int,
                 masking: DynamicMasking | None = None):
        if not sources or not all(len(s) for s in sources):
            raise DataError("no pre-training records: " + ", ".join(s.source for s in sources if not len(s)))
        self.sources = list(sources)
        self.ends = np.cumsum([len(s) for s in sources])  # global row r lives in source searchsorted(ends, r, "right")
        self.shuffle, self.seed, self.masking = shuffle, seed, masking
        self._order_epoch, self._order = -1, None

    def __len__(self) -> int:
        return int(self.ends[-1])

    def order(self, epoch: int) -> np.ndarray:
        """Global row indexes in the order of `epoch` (cached for the current epoch)."""
        if epoch != self._order_epoch:
            n = len(self)
            # Deviation from reference: Google's input_fn shuffles the file list and then records in a
            # 100-record buffer; a full permutation per epoch mixes far better and is just as cheap here.
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                           else np.arange(n))
            self._order_epoch = epoch
        return self._order

    def rows(self, start: int, count: int) -> list[tuple[int, int]]:
        """(epoch, global row) of the records at stream positions start .. start+count-1."""
        n = len(self)
        return [(p // n, int(self.order(p // n)[p % n])) for p in range(start, start + count)]

    def _row(self, row: int) -> dict[str, np.ndarray]:
        k = int(np.searchsorted(self.ends, row, side="right"))
        local = row - (int(self.ends[k - 1]) if k else 0)
        return {name: np.asarray(array[local]) for name, array in self.sources[k].arrays.items()}

    def batch(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """The records at stream positions start .. start+count-1 as a batch of int64/float32 tensors."""
        rows = []
        for epoch, row in self.rows(start, count):
            record = self._row(row)
            if self.masking is not None:
                record = remask(record, self.masking, epoch, row)
            rows.append(record)
        return stack(rows)


def stack(rows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Rows of feature arrays -> (B, ...) tensors: ids and labels int64, weights float32."""
    out = {}
    for name in FEATURES:
        array = np.stack([r[name] for r in rows])
        out[name] = torch.from_numpy(array.astype(np.float32 if name == "masked_lm_weights" else np.int64))
    return out


def remask(record: dict[str, np.ndarray], masking: DynamicMasking, epoch: int, row: int) -> dict[str, np.ndarray]:
    """The record with its stored masks undone and Google's masking drawn anew for (seed, epoch, row)."""
    length = int(record["input_mask"].sum())
    tokens = record["input_ids"][:length].astype(np.int64)
    count = int(record["masked_lm_weights"].sum())
    tokens[record["masked_lm_positions"][:count]] = record["masked_lm_ids"][:count]  # the original text
    max_predictions = len(record["masked_lm_positions"])
    # One integer seed per (seed, epoch, row): random.Random hashes it, so nearby seeds are unrelated.
    rng = random.Random((masking.seed << 80) | (epoch << 40) | row)
    masked, positions, labels = mask_tokens(tokens.tolist(), masking.masked_lm_prob, max_predictions,
                                            masking.vocab, masking.whole_word, rng)
    out = dict(record)
    out["input_ids"] = record["input_ids"].copy()
    out["input_ids"][:length] = masked
    for name, values in (("masked_lm_positions", positions), ("masked_lm_ids", labels),
                         ("masked_lm_weights", [1.0] * len(positions))):
        padded = np.zeros_like(record[name])
        padded[:len(values)] = values
        out[name] = padded
    return out
