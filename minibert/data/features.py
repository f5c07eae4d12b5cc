"""From examples to batched tensors.

Documents are kept as lists of chunks (one chunk unless the encoding is hierarchical); a batch stacks
every chunk of its documents and records which document each chunk belongs to.
"""

from dataclasses import dataclass

import torch

from minibert.data.examples import Example, multi_hot
from minibert.text.encoding import TextEncoding, pad_batch


@dataclass
class EncodedDoc:
    chunks: list[tuple[list[int], list[int]]]  # (input_ids, token_type_ids) per chunk
    label: int | tuple[int, ...]  # class index, -1 when unknown (prediction); multi-label: the label ids

    @property
    def length(self) -> int:
        return sum(len(ids) for ids, _ in self.chunks)


def encode_examples(examples: list[Example], labels: list[int] | None, tokenizer,
                    encoding: TextEncoding) -> list[EncodedDoc]:
    """Tokenize (cached per word) and frame every example as the encoding says."""
    docs = []
    for i, example in enumerate(examples):
        ids_b = None if example.text_b is None else tokenizer.encode_text(example.text_b)
        chunks = encoding.encode(tokenizer.encode_text(example.text), ids_b, tokenizer.cls_id, tokenizer.sep_id)
        label = -1 if labels is None else labels[i]
        docs.append(EncodedDoc(chunks, tuple(label) if isinstance(label, list) else label))
    return docs


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
        batch["doc_index"] = torch.tensor([d for d, doc in enumerate(docs) for _ in doc.chunks])
        batch["num_docs"] = len(docs)
    return batch


def model_inputs(batch: dict, device: torch.device) -> dict:
    """The keyword arguments of BertClassifier.forward, moved to the device."""
    names = ("input_ids", "token_type_ids", "attention_mask", "doc_index")
    inputs = {name: batch[name].to(device, non_blocking=True) for name in names if name in batch}
    if "num_docs" in batch:
        inputs["num_docs"] = batch["num_docs"]
    return inputs


def cap_chunks(docs: list[EncodedDoc], sources: list[str], max_chunks: int) -> tuple[list[EncodedDoc], str | None]:
    """Training documents with at most max_chunks chunks each, and a message for the user (or None).

    Training backpropagates through every chunk of a document at once, so one very long text (a
    5 MB text is about 2,500 chunks of 510 tokens) would need gigabytes of activations. Longer
    documents keep their first max_chunks chunks, as --max_chunks does (long_text.split_chunks);
    `sources` ("path:line" per doc) name the longest one in the message.
    """
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
    over = [i for i, doc in enumerate(docs) if len(doc.chunks) > max_chunks]
    if not over:
        return docs, None
    longest = max(over, key=lambda i: len(docs[i].chunks))
    message = (f"{len(over)} training text(s) have more than {max_chunks} chunks (the longest, "
               f"{sources[longest]}, has {len(docs[longest].chunks)}): only their first {max_chunks} "
               "chunks are trained on; set --max_chunks to choose the cap")
    capped = [EncodedDoc(doc.chunks[:max_chunks], doc.label) if len(doc.chunks) > max_chunks else doc
              for doc in docs]
    return capped, message
