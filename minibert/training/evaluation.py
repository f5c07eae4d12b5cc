"""Classifier predictions over a whole data set, and their scores."""

import torch

from minibert.data.batching import sorted_batches
from minibert.data.features import EncodedDoc, collate, model_inputs
from minibert.text.encoding import pad_batch
from minibert.training.problems import problem


@torch.no_grad()
def predict_probabilities(model, docs: list[EncodedDoc], batch_size: int, device: torch.device,
                          autocast_context, hierarchical: bool, progress=None, *, pad_id: int) -> torch.Tensor:
    """Class probabilities (N, K) float32 in the order of `docs`; pad_id is the vocabulary's [PAD].
    A multi-label head's are each label's sigmoid, a single-label head's the softmax over classes.

    Batches are formed from documents sorted by length, so little compute goes to padding
    (on variable-length data this gives about twice the throughput of unsorted batches; see
    benchmarks/README.md). Hierarchical documents are streamed: no encoder call sees more than
    batch_size chunks (see predict_hierarchical).
    """
    model.eval()
    head = getattr(model, "module", model).head_config
    activation = problem(head.multi_label).activation
    if hierarchical:
        return predict_hierarchical(model, docs, batch_size, device, autocast_context, progress, pad_id=pad_id)
    probabilities = [None] * len(docs)
    for indices in sorted_batches([doc.length for doc in docs], batch_size):
        batch = collate([docs[i] for i in indices], hierarchical, pad_id, head.num_labels)
        with autocast_context:
            logits = model(**model_inputs(batch, device))
        for i, p in zip(indices, activation(logits.float()).cpu()):
            probabilities[i] = p
        if progress is not None:
            progress.update(len(indices))
    return torch.stack(probabilities) if probabilities else torch.zeros(0)


def chunk_groups(chunk_counts: list[int], max_chunks: int) -> list[list[int]]:
    """Documents (indices) grouped so a group holds at most max_chunks chunks, or is a single
    document with more; most chunks first, so documents of similar size share a group."""
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
    groups, current, size = [], [], 0
    for i in sorted(range(len(chunk_counts)), key=lambda i: -chunk_counts[i]):
        if current and size + chunk_counts[i] > max_chunks:
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += chunk_counts[i]
    return groups + ([current] if current else [])


@torch.no_grad()
def predict_hierarchical(model, docs: list[EncodedDoc], max_chunks: int, device: torch.device,
                         autocast_context, progress=None, *, pad_id: int) -> torch.Tensor:
    """Class probabilities (N, K) float32 of hierarchically encoded documents, encoding at most
    max_chunks chunks per encoder call.

    Without this bound one long text is one forward pass over all its chunks: a 5 MB text is about
    2,500 chunks of 510 tokens, whose activations need gigabytes even on a tiny model. Here each
    group's chunks go through the encoder in pieces of max_chunks; only their (C, F) features are
    kept, and the head pools them per document (BertClassifier.chunk_features / classify_chunks),
    which gives the same logits as one forward over all chunks.
    """
    model.eval()
    # A DistributedDataParallel wrapper does not expose the classifier's methods; its .module does.
    model = getattr(model, "module", model)
    activation = problem(model.head_config.multi_label).activation
    probabilities = [None] * len(docs)
    for group in chunk_groups([len(doc.chunks) for doc in docs], max_chunks):
        chunks = [chunk for i in group for chunk in docs[i].chunks]
        doc_index = torch.tensor([d for d, i in enumerate(group) for _ in docs[i].chunks], device=device)
        features = []
        for start in range(0, len(chunks), max_chunks):
            piece = pad_batch(chunks[start:start + max_chunks], pad_id=pad_id)
            with autocast_context:
                features.append(model.chunk_features(*(piece[name].to(device) for name in
                                                       ("input_ids", "token_type_ids", "attention_mask"))))
        with autocast_context:
            logits = model.classify_chunks(torch.cat(features), doc_index, len(group))
        for i, p in zip(group, activation(logits.float()).cpu()):
            probabilities[i] = p
        if progress is not None:
            progress.update(len(group))
    return torch.stack(probabilities) if probabilities else torch.zeros(0)
