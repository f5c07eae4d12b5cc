"""Compact encoded documents and the token cache.

The reference is the way documents were kept before the compact storage: each example's chunks as
Python lists, straight from TextEncoding.encode, padded by pad_batch. The compact documents must
give the same lengths, hence the same batches, and exactly the same collated tensors.
"""

import json
import os
import random
import socket
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from minibert.data.batching import length_grouped_batches, random_batches, sorted_batches
from minibert.data.examples import Example
from minibert.data.features import (
    EncodedDocs,
    TokenArrays,
    cap_chunks,
    collate,
    encode_examples,
    encode_tokens,
    tokens_key,
)
from minibert.data.token_cache import KEY_FILE, TokenCache
from minibert.errors import DataError
from minibert.text.encoding import TextEncoding, pad_batch
from minibert.text.tokenization import FullTokenizer

ENCODINGS = {
    "single": TextEncoding(24, truncation="head_tail", head_tokens=6),
    "pairs": TextEncoding(24, truncation="head"),
    "hierarchical": TextEncoding(12, truncation="head", hierarchical=True),
}


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return FullTokenizer(minilm_dir / "vocab.txt", do_lower_case=True)


def make_examples(tokenizer, count: int, pairs: bool, seed: int = 0) -> list[Example]:
    """Texts of 1 to 60 words of the vocabulary (a few words split into several WordPieces)."""
    words = [w for w in tokenizer.vocab if w.isalpha() and w.islower()]
    rng = random.Random(seed)

    def text():
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
    return [Example(text(), text() if pairs else None, str(i % 3), f"data.jsonl:{i + 1}") for i in range(count)]


def reference_chunks(examples, tokenizer, encoding) -> list[list[tuple[list[int], list[int]]]]:
    """Every example's chunks as lists of int, as documents were kept before the compact storage."""
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    return [encoding.encode(tokenizer.encode_text(e.text),
                            None if e.text_b is None else tokenizer.encode_text(e.text_b), cls_id, sep_id)
            for e in examples]


def reference_batch(chunks, labels, indices, hierarchical, pad_id) -> dict:
    """What collate gave on those lists."""
    batch = pad_batch([chunk for i in indices for chunk in chunks[i]], pad_id=pad_id)
    batch["labels"] = torch.tensor([labels[i] for i in indices])
    if hierarchical:
        batch["doc_index"] = torch.tensor([d for d, i in enumerate(indices) for _ in chunks[i]])
        batch["num_docs"] = len(indices)
    return batch


def assert_same_batch(got: dict, expected: dict):
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert got[name].dtype == value.dtype and torch.equal(got[name], value), name
        else:
            assert got[name] == value, name


@pytest.mark.parametrize("kind", ENCODINGS)
def test_compact_documents_give_the_same_batches_as_lists(tokenizer, kind):
    encoding = ENCODINGS[kind]
    examples = make_examples(tokenizer, 150, pairs=kind == "pairs")
    labels = [i % 3 for i in range(len(examples))]
    docs = encode_examples(examples, labels, tokenizer, encoding)
    chunks = reference_chunks(examples, tokenizer, encoding)
    lengths = [sum(len(ids) for ids, _ in doc) for doc in chunks]
    assert docs.lengths.tolist() == lengths and [d.length for d in docs] == lengths
    assert docs.num_chunks.tolist() == [len(doc) for doc in chunks]
    assert [docs[i].chunks for i in range(len(docs))] == chunks
    if kind == "hierarchical":
        assert max(docs.num_chunks) > 3  # long texts make several chunks
    if kind == "pairs":
        assert all(1 in types for doc in chunks for _, types in doc)  # segment 1 is there and given back
    for batches in (length_grouped_batches(lengths, 8, seed=3), random_batches(lengths, 8, seed=4),
                    sorted_batches(lengths, 16)):
        for indices in batches[:6]:
            assert_same_batch(collate([docs[i] for i in indices], encoding.hierarchical, tokenizer.pad_id),
                              reference_batch(chunks, labels, indices, encoding.hierarchical, tokenizer.pad_id))


def test_a_token_takes_2_bytes_with_the_minilm_vocabulary(tokenizer):
    docs = encode_examples(make_examples(tokenizer, 300, pairs=False), None, tokenizer, ENCODINGS["single"])
    tokens = docs.tokens
    assert tokens.input_ids.dtype == np.uint16 and tokens.chunk_starts.dtype == np.int64
    assert len(tokenizer.vocab) == 30522 and tokens.input_ids.max() < len(tokenizer.vocab)
    # 2 bytes per id, plus 12 bytes per chunk and 8 per document: these 24-token windows average ~21 tokens.
    per_token = tokens.nbytes / tokens.num_tokens
    assert 2 < per_token < 3, per_token
    assert docs.labels == [-1] * 300


def test_ids_of_a_vocabulary_past_65536_are_int32():
    docs = EncodedDocs.from_chunks([[([2, 70000, 3], [0, 0, 0])], [([2, 65535, 3, 9, 3], [0, 0, 0, 1, 1])]], [0, 1])
    assert docs.tokens.input_ids.dtype == np.int32
    assert docs[0].chunks == [([2, 70000, 3], [0, 0, 0])] and docs[1].chunks == [([2, 65535, 3, 9, 3], [0, 0, 0, 1, 1])]
    small = EncodedDocs.from_chunks([[([2, 65535, 3], [0, 0, 0])]])
    assert small.tokens.input_ids.dtype == np.uint16 and small[0].chunks[0][0] == [2, 65535, 3]
    with pytest.raises(ValueError, match="0s then 1s"):
        EncodedDocs.from_chunks([[([2, 5, 3], [0, 1, 0])]])


def test_labels_are_kept_as_given():
    """A label may be any value (a list of ids for multi-label data): the tokens never hold it."""
    labels = [[0, 2], [], [1]]
    docs = EncodedDocs.from_chunks([[([2, 3], [0, 0])]] * 3, labels)
    assert docs.labels is labels and [d.label for d in docs] == labels
    with pytest.raises(ValueError, match="3 documents but 2 labels"):
        EncodedDocs.from_chunks([[([2, 3], [0, 0])]] * 3, [0, 1])


def test_capped_documents_share_the_tokens_and_equal_sliced_lists(tokenizer):
    encoding = ENCODINGS["hierarchical"]
    examples = make_examples(tokenizer, 40, pairs=False)
    docs = encode_examples(examples, [0] * 40, tokenizer, encoding)
    capped, message = cap_chunks(docs, [e.source for e in examples], 3)
    assert capped.tokens is docs.tokens and message.startswith(f"{int((docs.num_chunks > 3).sum())} training text(s)")
    chunks = [doc[:3] for doc in reference_chunks(examples, tokenizer, encoding)]
    assert [d.chunks for d in capped] == chunks
    assert capped.lengths.tolist() == [sum(len(ids) for ids, _ in doc) for doc in chunks]
    indices = list(range(0, 40, 3))
    assert_same_batch(collate([capped[i] for i in indices], True, 0),
                      reference_batch(chunks, [0] * 40, indices, True, 0))


# ---------------------------------------------------------------------------------------------
# The token cache in one process (the 2-process case is in test_distributed.py)


def counted_build(examples, tokenizer, encoding, calls: list):
    def build():
        calls.append(1)
        return asdict(encode_tokens(examples, tokenizer, encoding))
    return build


def test_the_cache_writes_once_and_maps_the_same_arrays(tokenizer, tmp_path):
    encoding, examples = ENCODINGS["pairs"], make_examples(tokenizer, 60, pairs=True)
    key, calls = tokens_key(examples, tokenizer, encoding), []
    cache = TokenCache(tmp_path / "cache")
    first = cache.arrays("t/train", key, counted_build(examples, tokenizer, encoding, calls))
    again = cache.arrays("t/train", key, counted_build(examples, tokenizer, encoding, calls))
    reader = TokenCache(tmp_path / "cache", writer=False).arrays("t/train", key, lambda: pytest.fail("a reader built"))
    assert len(calls) == 1 and all(isinstance(a, np.memmap) for a in again.values())
    expected = encode_tokens(examples, tokenizer, encoding)
    for arrays in (first, again, reader):
        for name in TokenArrays.FIELDS:
            want = getattr(expected, name)
            assert np.array_equal(arrays[name], want) and arrays[name].dtype == want.dtype
    docs = encode_examples(examples, [1] * 60, tokenizer, encoding, cache, "t/train")
    assert len(calls) == 1 and [d.chunks for d in docs] == reference_chunks(examples, tokenizer, encoding)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [p.name for p in (tmp_path / "cache").iterdir()
                                                                 if not p.name.startswith(".")]  # no temporary left


def test_a_stale_entry_is_never_read_and_is_replaced(tokenizer, tmp_path):
    encoding, examples = ENCODINGS["single"], make_examples(tokenizer, 30, pairs=False)
    cache, calls = TokenCache(tmp_path / "cache"), []
    cache.arrays("t/train", tokens_key(examples, tokenizer, encoding),
                 counted_build(examples, tokenizer, encoding, calls))
    cache.arrays("t/dev", tokens_key(examples[:5], tokenizer, encoding),
                 counted_build(examples[:5], tokenizer, encoding, calls))
    changed = examples[:29] + [replace(examples[29], text=examples[29].text + " more")]
    arrays = cache.arrays("t/train", tokens_key(changed, tokenizer, encoding),
                          counted_build(changed, tokenizer, encoding, calls))
    assert len(calls) == 3
    assert np.array_equal(arrays["input_ids"], encode_tokens(changed, tokenizer, encoding).input_ids)
    parts = sorted(json.loads((p / KEY_FILE).read_text())["key"]["part"] for p in (tmp_path / "cache").iterdir())
    assert parts == ["t/dev", "t/train"]  # the old train entry is gone, the dev entry kept


@pytest.mark.filterwarnings("ignore:vocabulary .* has no upper-case tokens")
def test_the_key_covers_texts_vocabulary_tokenizer_and_encoding(tokenizer, tmp_path, minilm_dir):
    examples = make_examples(tokenizer, 10, pairs=True)
    key = tokens_key(examples, tokenizer, ENCODINGS["pairs"])
    assert tokens_key(examples, tokenizer, ENCODINGS["pairs"]) == key
    vocab = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab[:-2] + vocab[-1:] + vocab[-2:-1]) + "\n", encoding="utf-8")
    others = [
        tokens_key([replace(examples[0], text_b=None)] + examples[1:], tokenizer, ENCODINGS["pairs"]),
        tokens_key([replace(examples[0], text=examples[0].text + examples[0].text_b[0], text_b=examples[0].text_b[1:])]
                   + examples[1:], tokenizer, ENCODINGS["pairs"]),  # the same characters, split elsewhere
        tokens_key(examples, tokenizer, replace(ENCODINGS["pairs"], max_seq_length=25)),
        tokens_key(examples, FullTokenizer(minilm_dir / "vocab.txt", do_lower_case=False, check_case=False),
                   ENCODINGS["pairs"]),
        tokens_key(examples, FullTokenizer(minilm_dir / "vocab.txt", variant="huggingface"), ENCODINGS["pairs"]),
        tokens_key(examples, FullTokenizer(tmp_path / "vocab.txt"), ENCODINGS["pairs"]),  # two ids swapped
    ]
    assert all(other != key for other in others) and len({json.dumps(k, sort_keys=True) for k in others}) == 6


def test_a_damaged_entry_is_rebuilt_by_the_writer_and_refused_by_a_reader(tokenizer, tmp_path):
    encoding, examples = ENCODINGS["single"], make_examples(tokenizer, 20, pairs=False)
    key, calls = tokens_key(examples, tokenizer, encoding), []
    cache = TokenCache(tmp_path / "cache")
    cache.arrays("t/train", key, counted_build(examples, tokenizer, encoding, calls))
    (entry,) = (tmp_path / "cache").iterdir()
    with open(entry / "input_ids.npy", "r+b") as f:
        f.truncate(os.path.getsize(entry / "input_ids.npy") - 2)  # a file cut short
    with pytest.raises(DataError, match="missing or damaged"):
        TokenCache(tmp_path / "cache", writer=False).arrays("t/train", key, lambda: pytest.fail("a reader built"))
    arrays = cache.arrays("t/train", key, counted_build(examples, tokenizer, encoding, calls))
    assert len(calls) == 2
    assert np.array_equal(arrays["input_ids"], encode_tokens(examples, tokenizer, encoding).input_ids)


def test_a_killed_writers_temporary_is_removed_and_never_read(tokenizer, tmp_path):
    encoding, examples = ENCODINGS["single"], make_examples(tokenizer, 20, pairs=False)
    key, calls = tokens_key(examples, tokenizer, encoding), []
    cache = TokenCache(tmp_path / "cache")
    cache.arrays("t/train", key, counted_build(examples, tokenizer, encoding, calls))
    (entry,) = (tmp_path / "cache").iterdir()
    temporary = entry.parent / f".{entry.name}.{socket.gethostname()}.tmp"
    entry.rename(temporary)  # as a writer killed before its rename leaves it
    with pytest.raises(DataError, match="missing or damaged"):
        TokenCache(tmp_path / "cache", writer=False).arrays("t/train", key, lambda: pytest.fail("a reader built"))
    cache.arrays("t/train", key, counted_build(examples, tokenizer, encoding, calls))
    assert len(calls) == 2 and [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]


def test_a_failed_writer_stops_every_process(tmp_path):
    said = []

    def agree(ok):
        said.append(ok)
        return ok

    def build():
        raise ValueError("bad text")
    with pytest.raises(ValueError, match="bad text"):
        TokenCache(tmp_path / "cache", agree=agree).arrays("t/train", {"k": 1}, build)
    assert said == [False]  # the writer tells the others, which then stop (no wait for an entry)
    with pytest.raises(DataError, match="the process encoding 't/train' failed"):
        TokenCache(tmp_path / "cache", writer=False, agree=lambda ok: False).arrays("t/train", {"k": 1}, build)
