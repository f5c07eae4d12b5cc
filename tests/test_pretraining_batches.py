"""The record stream (order, epochs, resumable position) and dynamic masking statistics."""

from collections import Counter

import numpy as np
import torch

from minibert.data.pretraining_batches import DynamicMasking, RecordStream, remask
from minibert.data.pretraining_instances import Vocabulary
from minibert.data.pretraining_records import read_records
from minibert.text.tokenization import FullTokenizer

from helpers import RECORDS, VOCAB_FILE

VOCAB = Vocabulary.of(FullTokenizer(VOCAB_FILE))


def records():
    return read_records(RECORDS, 64, 10)


def original_text(batch: dict, row: int) -> torch.Tensor:
    ids = batch["input_ids"][row].clone()
    count = int(batch["masked_lm_weights"][row].sum())
    ids[batch["masked_lm_positions"][row, :count]] = batch["masked_lm_ids"][row, :count]
    return ids


def test_file_order_wraps_into_the_next_epoch():
    stream = RecordStream([records(), records()], shuffle=False, seed=1)
    assert len(stream) == 190
    assert stream.rows(188, 4) == [(0, 188), (0, 189), (1, 0), (1, 1)]
    first = stream.batch(0, 3)
    assert torch.equal(first["input_ids"], torch.from_numpy(records().arrays["input_ids"][:3]).long())
    assert first["masked_lm_weights"].dtype == torch.float32 and first["next_sentence_labels"].shape == (3,)


def test_shuffled_epochs_are_permutations_that_depend_on_seed_and_epoch():
    stream = RecordStream([records()], shuffle=True, seed=7)
    epoch0 = [row for _, row in stream.rows(0, 95)]
    epoch1 = [row for _, row in stream.rows(95, 95)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(95)) and epoch0 != epoch1
    again = RecordStream([records()], shuffle=True, seed=7)
    assert [row for _, row in again.rows(40, 10)] == epoch0[40:50]  # a resumed stream continues mid-epoch
    assert [row for _, row in RecordStream([records()], shuffle=True, seed=8).rows(0, 95)] != epoch0


def test_dynamic_masks_are_redrawn_per_epoch_and_reproducible():
    masking = DynamicMasking(VOCAB, seed=3)
    stream = RecordStream([records()], shuffle=False, seed=3, masking=masking)
    epoch0, epoch1 = stream.batch(0, 95), stream.batch(95, 95)
    static = RecordStream([records()], shuffle=False, seed=3).batch(0, 95)
    for row in range(95):
        assert torch.equal(original_text(epoch0, row), original_text(static, row))  # same text underneath
        assert torch.equal(original_text(epoch1, row), original_text(static, row))
    assert not torch.equal(epoch0["masked_lm_positions"], epoch1["masked_lm_positions"])
    assert not torch.equal(epoch0["masked_lm_positions"], static["masked_lm_positions"])
    again = RecordStream([records()], shuffle=False, seed=3, masking=masking).batch(95, 95)
    assert all(torch.equal(again[k], epoch1[k]) for k in again)


def test_dynamic_masking_follows_googles_rule():
    """Prediction count min(P, max(1, round(0.15 * length))); 80% [MASK], 10% kept, 10% random."""
    source = records()
    record = {name: np.asarray(array[0]) for name, array in source.arrays.items()}
    length = int(record["input_mask"].sum())
    original = original_text({k: torch.from_numpy(np.asarray(v)[None]) for k, v in record.items()}, 0).numpy()
    counts, trials = Counter(), 3000
    for epoch in range(trials):
        masked = remask(record, DynamicMasking(VOCAB, seed=0), epoch, 0)
        count = int(masked["masked_lm_weights"].sum())
        assert count == min(10, max(1, round(0.15 * length)))
        positions = masked["masked_lm_positions"][:count]
        assert list(positions) == sorted(positions) and all(original[positions] == masked["masked_lm_ids"][:count])
        assert not set(original[positions]) & {VOCAB.cls_id, VOCAB.sep_id}
        for p in positions:
            new = masked["input_ids"][p]
            counts["mask" if new == VOCAB.mask_id else "kept" if new == original[p] else "random"] += 1
    total = sum(counts.values())
    assert abs(counts["mask"] / total - 0.8) < 0.012
    assert abs(counts["kept"] / total - 0.1) < 0.01
    assert abs(counts["random"] / total - 0.1) < 0.01


def test_dynamic_whole_word_masking_masks_every_piece_of_a_word():
    source = records()
    tokenizer = FullTokenizer(VOCAB_FILE)
    masking = DynamicMasking(VOCAB, masked_lm_prob=0.3, whole_word=True, seed=5)
    for row in range(20):
        record = {name: np.asarray(array[row]) for name, array in source.arrays.items()}
        masked = remask(record, masking, 0, row)
        count = int(masked["masked_lm_weights"].sum())
        chosen = set(masked["masked_lm_positions"][:count].tolist())
        length = int(record["input_mask"].sum())
        text = original_text({k: torch.from_numpy(np.asarray(v)[None]) for k, v in record.items()}, 0)[:length]
        tokens = tokenizer.convert_ids_to_tokens(text.tolist())
        for i in range(1, length):
            # a "##" piece is masked exactly when the piece before it is (special tokens aside)
            if tokens[i].startswith("##") and tokens[i - 1] not in ("[CLS]", "[SEP]"):
                assert (i in chosen) == (i - 1 in chosen), (row, i, tokens[i - 1:i + 1])
