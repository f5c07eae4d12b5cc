"""Token ids -> model inputs: truncation, [CLS]/[SEP] framing, segment ids and padding.

The one path from texts to model inputs: TextEncoding frames each example (a long text's window or
chunks, or a pair truncated longest-first) and pad_batch pads a batch with the vocabulary's [PAD] id.
Reference: Google's run_classifier.py convert_single_example and _truncate_seq_pair.
Shapes: B batch, T padded length.
"""

from dataclasses import dataclass

import torch

from minibert.text.long_text import TRUNCATIONS, split_chunks


def truncate_pair(a, b, max_tokens):
    """Google's _truncate_seq_pair: drop one token at a time from the end of the longer list
    (from `b` on a tie) until len(a) + len(b) <= max_tokens. Returns new lists; inputs untouched.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    len_a, len_b = len(a), len(b)
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return list(a[:len_a]), list(b[:len_b])


def build_inputs(ids_a, ids_b=None, *, cls_id, sep_id):
    """[CLS] A [SEP] (segment 0) and, for pairs, B [SEP] (segment 1).

    Returns (input_ids, token_type_ids): two lists of int of length len(A) + 2 (+ len(B) + 1).
    """
    input_ids = [cls_id, *ids_a, sep_id]
    token_type_ids = [0] * len(input_ids)
    if ids_b is not None:
        input_ids += [*ids_b, sep_id]
        token_type_ids += [1] * (len(ids_b) + 1)
    return input_ids, token_type_ids


def pad_batch(sequences, pad_id=0, pad_to=None):
    """Pad (input_ids, token_type_ids) pairs to a batch of int64 tensors.

    Args:
      sequences: list of (input_ids, token_type_ids), two equal-length lists of int each.
      pad_id: id written at padded positions of input_ids (token_type_ids are padded with 0).
      pad_to: T, the padded length; None pads to the longest sequence. Shorter than a sequence
        raises ValueError (truncate first).

    Returns:
      {"input_ids", "token_type_ids", "attention_mask"}: int64 tensors of shape (B, T);
      attention_mask is 1 at tokens and 0 at padding.
    """
    longest = max((len(ids) for ids, _ in sequences), default=0)
    length = longest if pad_to is None else pad_to
    if longest > length:
        raise ValueError(f"a sequence has {longest} tokens, more than pad_to={pad_to}")
    input_ids, token_type_ids, attention_mask = [], [], []
    for i, (ids, types) in enumerate(sequences):
        if len(ids) != len(types):
            raise ValueError(f"sequence {i}: {len(ids)} input_ids but {len(types)} token_type_ids")
        n_pad = length - len(ids)
        input_ids.append([*ids, *[pad_id] * n_pad])
        token_type_ids.append([*types, *[0] * n_pad])
        attention_mask.append([1] * len(ids) + [0] * n_pad)
    shape = (len(sequences), length)
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.int64).reshape(shape),
        "token_type_ids": torch.tensor(token_type_ids, dtype=torch.int64).reshape(shape),
        "attention_mask": torch.tensor(attention_mask, dtype=torch.int64).reshape(shape),
    }


@dataclass
class TextEncoding:
    """How texts become model inputs; saved with a classifier so prediction does the same."""

    max_seq_length: int = 512
    truncation: str = "head_tail"  # one of TRUNCATIONS
    head_tokens: int = 128  # head+tail: tokens kept from the start (the rest from the end)
    hierarchical: bool = False  # encode every 510-token chunk and let the head combine them
    max_chunks: int = 0  # hierarchical: at most this many chunks per text (0 = no cap)

    def __post_init__(self):
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {tuple(TRUNCATIONS)}, got {self.truncation!r}")
        if self.max_seq_length < 4:
            raise ValueError("max_seq_length must be at least 4")
        if self.truncation == "head_tail" and not 0 <= self.head_tokens <= self.max_seq_length - 2:
            raise ValueError(f"head_tokens must be in 0..{self.max_seq_length - 2} "
                             f"(max_seq_length - 2), got {self.head_tokens}")

    def encode(self, ids_a: list[int], ids_b: list[int] | None, cls_id: int, sep_id: int
               ) -> list[tuple[list[int], list[int]]]:
        """Token ids of one example -> (input_ids, token_type_ids) for each chunk (one without hierarchy)."""
        if ids_b is not None:
            if self.hierarchical:
                raise ValueError("hierarchical encoding takes single texts, not text pairs")
            # Pairs: Google's run_classifier removes tokens from the longer side (_truncate_seq_pair).
            a, b = truncate_pair(ids_a, ids_b, self.max_seq_length - 3)
            return [build_inputs(a, b, cls_id=cls_id, sep_id=sep_id)]
        budget = self.max_seq_length - 2
        if self.hierarchical:
            chunks = split_chunks(ids_a, budget, self.max_chunks)
        else:
            chunks = [TRUNCATIONS[self.truncation](ids_a, budget, self.head_tokens)]
        return [build_inputs(chunk, cls_id=cls_id, sep_id=sep_id) for chunk in chunks]


def encode_batch(tokenizer, texts, texts_b=None, max_seq_length=512):
    """Tokenize, truncate, frame and pad a batch of texts (or text pairs) as Google's run_classifier.py.

    Single texts keep their first max_seq_length - 2 tokens; pairs are truncated longest-first to
    max_seq_length - 3 tokens. `tokenizer` needs encode_text(text) and the attributes cls_id,
    sep_id, pad_id (minibert.text.tokenization.FullTokenizer). The same TextEncoding and pad_batch
    frame the examples of train.py and predict.py.

    Returns the pad_batch dict: int64 tensors of shape (B, T), T = the longest framed sequence.
    """
    if texts_b is not None and len(texts_b) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(texts_b)} second texts")
    encoding = TextEncoding(max_seq_length, truncation="head")
    sequences = []
    for i, text in enumerate(texts):
        ids_b = None if texts_b is None else tokenizer.encode_text(texts_b[i])
        sequences += encoding.encode(tokenizer.encode_text(text), ids_b, tokenizer.cls_id, tokenizer.sep_id)
    return pad_batch(sequences, pad_id=tokenizer.pad_id)
