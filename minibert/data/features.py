"""From examples to batched tensors.

A document is a list of chunks (one chunk unless the encoding is hierarchical); a batch stacks
every chunk of its documents and records which document each chunk belongs to.

Encoded documents are kept compactly (EncodedDocs): every chunk's input_ids concatenated in one
numpy array (uint16 when the vocabulary has at most 65,536 ids, else int32) with int64 offsets, so
a token costs about 2 bytes (4 with a larger vocabulary) plus a few bytes per chunk and document,
where Python lists of ints cost about 19. Token type ids are not stored: TextEncoding frames a chunk
as [CLS] A [SEP] (segment 0) then, for pairs, B [SEP] (segment 1), so one count per chunk (its
segment-0 tokens) gives them back. Labels are kept apart from the tokens, as given (a plain list),
so the token arrays can be shared between processes (minibert.data.token_cache).
"""

from __future__ import annotations

import array
import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from minibert.data.examples import Example, multi_hot
from minibert.data.token_cache import TokenCache
from minibert.files import sha256_file
from minibert.text.encoding import TextEncoding, pad_batch

UINT16_IDS = 1 << 16  # vocabularies up to this many ids store a token in 2 bytes, larger ones in 4
TOKEN_FORMAT = 1  # the token cache's key: change it when encode_tokens gives other arrays for the same inputs


@dataclass(frozen=True)
class TokenArrays:
    """Every chunk of every document, concatenated: the part of encoded documents that does not
    depend on labels (what a node's processes share through the token cache)."""

    input_ids: np.ndarray  # (tokens,) uint16 or int32: the chunks' input_ids one after another
    chunk_starts: np.ndarray  # (chunks + 1,) int64: chunk c is input_ids[chunk_starts[c]:chunk_starts[c + 1]]
    segment_a: np.ndarray  # (chunks,) int32: tokens of segment 0 ([CLS] A [SEP]); the rest are segment 1
    doc_starts: np.ndarray  # (docs + 1,) int64: document d is chunks doc_starts[d]:doc_starts[d + 1]

    FIELDS = ("input_ids", "chunk_starts", "segment_a", "doc_starts")

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.FIELDS)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)


def ids_typecode(vocab_size: int) -> str:
    """array.array's code for token ids of a vocabulary of vocab_size ids: 'H' (uint16) or 'i' (int32)."""
    return "H" if vocab_size <= UINT16_IDS else "i"


class TokenArraysBuilder:
    """Documents added one at a time into growing C arrays (never a Python list per token)."""

    def __init__(self, vocab_size: int):
        self.ids = array.array(ids_typecode(vocab_size))
        self.chunk_starts, self.segment_a = array.array("q", [0]), array.array("i")
        self.doc_starts = array.array("q", [0])

    def add(self, chunks: list[tuple[list[int], list[int]]]) -> None:
        """One document: its (input_ids, token_type_ids) per chunk, as TextEncoding.encode gives them."""
        for ids, types in chunks:
            segment_a = types.count(0)
            if len(ids) != len(types) or types != [0] * segment_a + [1] * (len(types) - segment_a):
                raise ValueError("a chunk's token_type_ids must be 0s then 1s, as many as its input_ids")
            self.ids.extend(ids)
            self.chunk_starts.append(len(self.ids))
            self.segment_a.append(segment_a)
        self.doc_starts.append(len(self.segment_a))

    def arrays(self) -> TokenArrays:
        # Views of the C arrays' buffers: no copy (each may hold up to about 6% of growth room).
        return TokenArrays(*(np.frombuffer(a, dtype=a.typecode)
                             for a in (self.ids, self.chunk_starts, self.segment_a, self.doc_starts)))


class EncodedDocs(Sequence):
    """Encoded documents: shared token arrays, this process's labels, and an optional chunk cap.

    docs[i] is an EncodedDoc (a view: its chunks are read from the arrays when asked for);
    docs.lengths (docs,) int64 are the documents' token counts, as batching reads them.
    """

    def __init__(self, tokens: TokenArrays, labels: list | None = None, max_chunks: int = 0):
        """labels: one per document, kept as given (-1 for each when None: prediction); max_chunks
        > 0 keeps only each document's first max_chunks chunks (the token arrays are not copied)."""
        count = len(tokens.doc_starts) - 1
        if labels is not None and len(labels) != count:
            raise ValueError(f"{count} documents but {len(labels)} labels")
        self.tokens = tokens
        self.labels = [-1] * count if labels is None else labels
        self.first_chunks = tokens.doc_starts[:-1]
        self.num_chunks = np.diff(tokens.doc_starts)  # (docs,) int64
        if max_chunks > 0:
            self.num_chunks = np.minimum(self.num_chunks, max_chunks)
        starts = tokens.chunk_starts
        self.lengths = starts[self.first_chunks + self.num_chunks] - starts[self.first_chunks]  # (docs,) int64

    @classmethod
    def from_chunks(cls, docs: list[list[tuple[list[int], list[int]]]], labels: list | None = None) -> EncodedDocs:
        """Documents given as lists of (input_ids, token_type_ids) chunks (tests, benchmarks)."""
        builder = TokenArraysBuilder(1 + max((max(ids, default=0) for doc in docs for ids, _ in doc), default=0))
        for chunks in docs:
            builder.add(chunks)
        return cls(builder.arrays(), labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> EncodedDoc:
        if not -len(self) <= index < len(self):
            raise IndexError(f"document {index} of {len(self)}")
        return EncodedDoc(self, index % len(self))

    def __iter__(self) -> Iterator[EncodedDoc]:
        return (EncodedDoc(self, i) for i in range(len(self)))

    def chunks(self, index: int) -> list[tuple[list[int], list[int]]]:
        """Document `index`'s (input_ids, token_type_ids) per chunk, as lists of int."""
        tokens, first = self.tokens, int(self.first_chunks[index])
        starts = tokens.chunk_starts[first:first + int(self.num_chunks[index]) + 1].tolist()
        ids = tokens.input_ids[starts[0]:starts[-1]].tolist()
        chunks = []
        for c, segment_a in enumerate(tokens.segment_a[first:first + len(starts) - 1].tolist()):
            size = starts[c + 1] - starts[c]
            token_types = [0] * segment_a + [1] * (size - segment_a)
            chunks.append((ids[starts[c] - starts[0]:starts[c + 1] - starts[0]], token_types))
        return chunks


class EncodedDoc:
    """One encoded document of an EncodedDocs: chunks (list of (input_ids, token_type_ids) lists),
    label (-1 when unknown), length (its tokens) and num_chunks."""

    __slots__ = ("docs", "index")

    def __init__(self, docs: EncodedDocs, index: int):
        self.docs, self.index = docs, index

    @property
    def chunks(self) -> list[tuple[list[int], list[int]]]:
        return self.docs.chunks(self.index)

    @property
    def label(self):
        return self.docs.labels[self.index]

    @property
    def length(self) -> int:
        return int(self.docs.lengths[self.index])

    @property
    def num_chunks(self) -> int:
        return int(self.docs.num_chunks[self.index])


def encode_tokens(examples: list[Example], tokenizer, encoding: TextEncoding) -> TokenArrays:
    """Tokenize (cached per word) and frame every example as the encoding says."""
    builder = TokenArraysBuilder(len(tokenizer.vocab))
    for example in examples:
        ids_b = None if example.text_b is None else tokenizer.encode_text(example.text_b)
        builder.add(encoding.encode(tokenizer.encode_text(example.text), ids_b, tokenizer.cls_id, tokenizer.sep_id))
    return builder.arrays()


def tokens_key(examples: list[Example], tokenizer, encoding: TextEncoding) -> dict:
    """Everything encode_tokens' arrays depend on, as JSON values: the texts as read (a digest), the
    vocabulary file's bytes (a digest), the tokenizer's settings, the encoding and the storage format."""
    texts = hashlib.sha256()
    for example in examples:
        for text in (example.text, example.text_b):
            data = b"" if text is None else text.encode("utf-8", "surrogatepass")
            texts.update(b"-" if text is None else b"%d:" % len(data))  # framed: ("ab", "c") != ("a", "bc")
            texts.update(data)
    variant = {field.name: _plain(getattr(tokenizer.variant, field.name))
               for field in dataclasses.fields(tokenizer.variant)}
    return {"format": TOKEN_FORMAT, "examples": len(examples), "texts_sha256": texts.hexdigest(),
            "vocab_sha256": sha256_file(tokenizer.vocab_file), "vocab_size": len(tokenizer.vocab),
            "do_lower_case": tokenizer.do_lower_case, "variant": tokenizer.variant_name,
            "variant_settings": variant, "encoding": dataclasses.asdict(encoding)}


def _plain(value):
    """A setting as a JSON value that is the same in every process (sets sorted, functions named)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if callable(value):
        return f"{getattr(value, '__module__', None)}.{getattr(value, '__qualname__', repr(value))}"
    return value


def encode_examples(examples: list[Example], labels: list | None, tokenizer, encoding: TextEncoding,
                    cache: TokenCache | None = None, part: str = "") -> EncodedDocs:
    """Every example tokenized and framed as the encoding says, with its label (-1 each when labels is
    None; a multi-label example's list of label ids becomes a tuple). With a cache
    (minibert.data.token_cache) the node encodes once: its writer process encodes and saves the
    arrays under `part` (e.g. "task/train"), every process maps them."""
    if labels is not None:
        labels = [tuple(label) if isinstance(label, list) else label for label in labels]
    if cache is None or not cache.shared:  # no key needed: hashing every text would be wasted work
        return EncodedDocs(encode_tokens(examples, tokenizer, encoding), labels)
    arrays = cache.arrays(part, tokens_key(examples, tokenizer, encoding),
                          lambda: dataclasses.asdict(encode_tokens(examples, tokenizer, encoding)))
    return EncodedDocs(TokenArrays(**arrays), labels)


def collate(docs: list[EncodedDoc], hierarchical: bool, pad_id: int, num_labels: int = 0) -> dict:
    """Documents -> model inputs (C, T) padded with pad_id (the vocabulary's [PAD]) to the batch's
    longest chunk, and labels: (B,) int64 class indices, or for multi-label documents (B, num_labels)
    float32 multi-hot rows.

    With hierarchical encoding, doc_index (C,) and num_docs tell the head how to regroup chunks.
    """
    batch = pad_batch([chunk for doc in docs for chunk in doc.chunks], pad_id=pad_id)
    if docs and isinstance(docs[0].label, tuple):
        batch["labels"] = torch.from_numpy(multi_hot([doc.label for doc in docs], num_labels))
    else:
        batch["labels"] = torch.tensor([doc.label for doc in docs])
    if hierarchical:
        batch["doc_index"] = torch.tensor([d for d, doc in enumerate(docs) for _ in range(doc.num_chunks)])
        batch["num_docs"] = len(docs)
    return batch


def model_inputs(batch: dict, device: torch.device) -> dict:
    """The keyword arguments of BertClassifier.forward, moved to the device."""
    names = ("input_ids", "token_type_ids", "attention_mask", "doc_index")
    inputs = {name: batch[name].to(device, non_blocking=True) for name in names if name in batch}
    if "num_docs" in batch:
        inputs["num_docs"] = batch["num_docs"]
    return inputs


def cap_chunks(docs: EncodedDocs, sources: list[str], max_chunks: int) -> tuple[EncodedDocs, str | None]:
    """Training documents with at most max_chunks chunks each, and a message for the user (or None).

    Training backpropagates through every chunk of a document at once, so one very long text (a
    5 MB text is about 2,500 chunks of 510 tokens) would need gigabytes of activations. Longer
    documents keep their first max_chunks chunks, as --max_chunks does (long_text.split_chunks);
    `sources` ("path:line" per doc) name the longest one in the message. The token arrays are
    shared, not copied.
    """
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
    over = np.flatnonzero(docs.num_chunks > max_chunks)
    if not len(over):
        return docs, None
    longest = int(over[np.argmax(docs.num_chunks[over])])  # the first of the longest
    message = (f"{len(over)} training text(s) have more than {max_chunks} chunks (the longest, "
               f"{sources[longest]}, has {docs.num_chunks[longest]}): only their first {max_chunks} "
               "chunks are trained on; set --max_chunks to choose the cap")
    return EncodedDocs(docs.tokens, docs.labels, max_chunks), message
