"""Google's create_pretraining_data.py rules: the fixtures Google's script wrote are reproduced record
for record, and each rule is checked on its own on synthetic documents."""

import json
import random
from collections import Counter

import numpy as np
import pytest

import pretrain
from minibert.checkpoints.tfrecord import read_examples
from minibert.data.pretraining_instances import (InstanceSettings, instances_from_document, mask_tokens, masking_groups,
                                                 read_documents, truncate_seq_pair)
from minibert.data.pretraining_records import read_records
from minibert.errors import ConfigError, DataError
from minibert.text.tokenization import FullTokenizer

from helpers import (GOOGLE_FOLDERS, PRETRAINING, VOCAB, VOCAB_FILE, create_data_args, google_features,
                     google_instances, make_documents)


@pytest.mark.parametrize("folder", GOOGLE_FOLDERS)
def test_create_data_reproduces_googles_tfrecord(tmp_path, folder):
    pretrain.main(create_data_args(folder, tmp_path / "out.tfrecord"))
    mine = [{k: f.values for k, f in ex.items()} for ex in read_examples(tmp_path / "out.tfrecord")]
    assert mine == google_features(folder)


@pytest.mark.parametrize("folder", GOOGLE_FOLDERS)
def test_instances_equal_googles_instances(folder):
    """The tokens after masking, segments, labels and masked positions of Google's instances.jsonl."""
    instances, tokenizer = google_instances(folder)
    mine = [{"tokens": tokenizer.convert_ids_to_tokens(i.tokens),
             "segment_ids": [0] * i.a_length + [1] * (len(i.tokens) - i.a_length),
             "is_random_next": i.is_random_next, "masked_lm_positions": i.masked_positions.tolist(),
             "masked_lm_labels": tokenizer.convert_ids_to_tokens(i.masked_labels)} for i in instances]
    assert mine == [json.loads(line) for line in (PRETRAINING / folder / "instances.jsonl").read_text().splitlines()]


def test_native_format_holds_the_same_records(tmp_path):
    pretrain.main(create_data_args("sample_text_64", tmp_path / "records"))
    records = read_records(tmp_path / "records", 64, 10)
    assert isinstance(records.arrays["input_ids"], np.memmap)
    mine = [{name: np.atleast_1d(array[row]).tolist() for name, array in records.arrays.items()}
            for row in range(len(records))]
    assert mine == google_features("sample_text_64")


def test_several_outputs_are_written_round_robin(tmp_path):
    outputs = [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord", tmp_path / "c.tfrecord"]
    pretrain.main(create_data_args("sample_text_64", ",".join(map(str, outputs))))
    parts = [[{k: f.values for k, f in ex.items()} for ex in read_examples(p)] for p in outputs]
    expected = google_features("sample_text_64")
    assert [len(p) for p in parts] == [32, 32, 31]
    assert all(parts[i % 3][i // 3] == row for i, row in enumerate(expected))


# ---------------------------------------------------------------------------------------------
# Rules on synthetic documents (helpers.make_documents): token t of sentence s of document d is
# 1000 * (d + 1) + 10 * s + t.


class ScriptedRandom(random.Random):
    """random() returns the scripted values in turn; everything else is a seeded Random."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_truncation_cuts_the_longer_side_at_a_random_end():
    a, b = list(range(6)), list(range(10, 14))
    # a (6) is longer: front (0.3 < 0.5), then back; then both are 4: b on a tie, back, then a, front.
    truncate_seq_pair(a, b, 6, ScriptedRandom([0.3, 0.7, 0.9, 0.1]))
    assert a == [2, 3, 4] and b == [10, 11, 12]


def test_prediction_count_uses_pythons_round_min_one_and_cap():
    def count(length, cap=100):
        tokens = [2] + list(range(10, 10 + length - 2)) + [3]
        return len(mask_tokens(tokens, 0.15, cap, VOCAB, False, random.Random(0))[1])

    assert count(3) == 1  # round(0.45) = 0, at least one
    assert count(10) == 2  # round(1.5) = 2 (ties to even)
    assert count(30) == 4  # round(4.5) = 4 (ties to even), counting [CLS] and [SEP]
    assert count(100) == 15
    assert count(200, cap=20) == 20


def test_80_10_10_rule():
    rng, counts = random.Random(1), Counter()
    tokens = [2] + list(range(10, 138)) + [3]
    for _ in range(2000):
        masked, positions, labels = mask_tokens(tokens, 0.15, 20, VOCAB, False, rng)
        assert positions == sorted(positions) and labels == [tokens[p] for p in positions]
        assert 2 not in [tokens[p] for p in positions] and 3 not in [tokens[p] for p in positions]
        for p in positions:
            counts["mask" if masked[p] == 4 else "kept" if masked[p] == tokens[p] else "random"] += 1
        assert all(masked[i] == tokens[i] for i in range(len(tokens)) if i not in positions)
    total = sum(counts.values())
    assert total == 2000 * 20
    # Binomial standard deviations at n = 40,000: 0.2% for 80%, 0.15% for 10%; allow ~5 of them.
    assert abs(counts["mask"] / total - 0.8) < 0.01
    assert abs(counts["kept"] / total - 0.1) < 0.0075  # a random word equal to the token also counts as kept
    assert abs(counts["random"] / total - 0.1) < 0.0075


def test_whole_word_groups_include_pieces_after_sep():
    tokens = [2, 10, 9001, 9002, 11, 3, 9003, 12, 3]
    assert masking_groups(tokens, VOCAB, whole_word=True) == [[1, 2, 3], [4, 6], [7]]
    assert masking_groups(tokens, VOCAB, whole_word=False) == [[i] for i in (1, 2, 3, 4, 6, 7)]


def test_whole_word_masking_masks_whole_words_and_skips_groups_that_overshoot():
    tokens = [2] + [10, 9001, 9002, 11, 9003, 12, 13, 9004] * 5 + [3]
    words = masking_groups(tokens, VOCAB, whole_word=True)
    for seed in range(50):
        _, positions, _ = mask_tokens(tokens, 0.15, 5, VOCAB, True, random.Random(seed))
        assert len(positions) <= 5
        for word in words:
            assert set(word) <= set(positions) or not set(word) & set(positions)


def test_random_next_comes_from_another_document_and_unused_sentences_are_put_back():
    documents = make_documents([[5] * 12, [5] * 12, [5] * 12])
    settings = InstanceSettings(max_seq_length=33, max_predictions_per_seq=1, masked_lm_prob=0.01,
                                short_seq_prob=0.0, dupe_factor=1)
    seen_random = seen_real = 0
    for seed in range(20):
        instances = instances_from_document(documents, 0, settings, VOCAB, random.Random(seed))
        covered = set()
        for instance in instances:
            tokens = list(instance.tokens)
            for p, label in zip(instance.masked_positions, instance.masked_labels):
                tokens[p] = label  # the text before masking
            a, b = tokens[1:instance.a_length - 1], tokens[instance.a_length:-1]
            assert all(t // 1000 == 1 for t in a)
            if instance.is_random_next:
                seen_random += 1
                assert all(t // 1000 in (2, 3) for t in b)  # another document (3 tries are enough here)
            else:
                seen_real += 1
                assert all(t // 1000 == 1 for t in b) and min(b) > max(a)  # B continues A
                covered |= {(t % 1000) // 10 for t in b}
            covered |= {(t % 1000) // 10 for t in a}
        # Sentences left over after a random B are walked again, so every sentence is used.
        assert covered == set(range(12))
    assert seen_random and seen_real


def test_short_sequences_aim_below_the_maximum():
    documents = make_documents([[3] * 40, [3] * 40])
    long = InstanceSettings(max_seq_length=64, max_predictions_per_seq=5, short_seq_prob=0.0, dupe_factor=1)
    short = InstanceSettings(max_seq_length=64, max_predictions_per_seq=5, short_seq_prob=1.0, dupe_factor=1)
    rng = random.Random(3)
    lengths_long = [len(i.tokens) for i in instances_from_document(documents, 0, long, VOCAB, rng)]
    lengths_short = [len(i.tokens) for s in range(10)
                     for i in instances_from_document(documents, 0, short, VOCAB, random.Random(s))]
    assert max(lengths_long) <= 64 and np.mean(lengths_long) > 55
    assert np.mean(lengths_short) < np.mean(lengths_long)


def test_a_one_sentence_document_gets_a_random_next():
    documents = make_documents([[4], [6, 6]])
    settings = InstanceSettings(max_seq_length=20, max_predictions_per_seq=2, dupe_factor=1, short_seq_prob=0.0)
    (instance,) = instances_from_document(documents, 0, settings, VOCAB, random.Random(0))
    assert instance.is_random_next and instance.a_length == 6


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file and line, nothing written.


def test_non_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"a fine line.\n\nanother fine one.\nbroken \xff byte\n")
    with pytest.raises(DataError, match=r"bad.txt:4: not UTF-8"):
        read_documents([path], FullTokenizer(VOCAB_FILE))


def test_empty_corpus_is_an_error_and_writes_nothing(tmp_path, script_error):
    (tmp_path / "empty.txt").write_text("\n \n\n")
    with script_error(r"empty.txt: no text"):
        pretrain.main(["create_data", f"--input_file={tmp_path / 'empty.txt'}",
                       f"--output_file={tmp_path / 'out.tfrecord'}", f"--vocab_file={VOCAB_FILE}"])
    assert not (tmp_path / "out.tfrecord").exists()


def test_vocabulary_without_mask_is_an_error(tmp_path, script_error):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    (tmp_path / "text.txt").write_text("hello\n")
    with script_error(r"vocab.txt: the vocabulary lacks the special tokens \['\[MASK\]'\]"):
        pretrain.main(["create_data", f"--input_file={tmp_path / 'text.txt'}",
                       f"--output_file={tmp_path / 'out.tfrecord'}", f"--vocab_file={tmp_path / 'vocab.txt'}"])


def test_bad_settings_and_missing_inputs(tmp_path, script_error):
    with pytest.raises(ConfigError, match="max_seq_length=4"):
        InstanceSettings(max_seq_length=4).check()
    with script_error(r"nothing\*.txt matches no file"):
        pretrain.main(["create_data", f"--input_file={tmp_path}/nothing*.txt", "--output_file=x.tfrecord",
                       f"--vocab_file={VOCAB_FILE}"])


def test_documents_continue_across_files_as_in_googles_reader(tmp_path):
    """create_training_instances never closes a document at the end of a file; only blank lines do."""
    (tmp_path / "a.txt").write_text("the first line.\n\nsecond document.\n")
    (tmp_path / "b.txt").write_text("still the second document.\n\nthird document.\n  \n\n")
    documents = read_documents([tmp_path / "a.txt", tmp_path / "b.txt"], FullTokenizer(VOCAB_FILE))
    assert len(documents) == 3
    assert [len(documents.sentences(d)) for d in range(3)] == [1, 2, 1]
