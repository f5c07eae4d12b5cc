"""Classifier predictions over a whole data set, and their scores."""

import torch
import torch.nn.functional as F

from minibert.data.batching import sorted_batches
from minibert.data.features import EncodedDoc, collate, model_inputs


@torch.no_grad()
def predict_probabilities(model, docs: list[EncodedDoc], batch_size: int, device: torch.device,
                          autocast_context, hierarchical: bool, progress=None, *, pad_id: int) -> torch.Tensor:
    """Class probabilities (N, K) float32 in the order of `docs`; pad_id is the vocabulary's [PAD].

    Batches are formed from documents sorted by length, so little compute goes to padding
    (on variable-length data this gives about twice the throughput of unsorted batches; see
    benchmarks/README.md).
    """
    model.eval()
    probabilities = [None] * len(docs)
    for indices in sorted_batches([doc.length for doc in docs], batch_size):
        batch = collate([docs[i] for i in indices], hierarchical, pad_id)
        with autocast_context:
            logits = model(**model_inputs(batch, device))
        for i, p in zip(indices, F.softmax(logits.float(), dim=-1).cpu()):
            probabilities[i] = p
        if progress is not None:
            progress.update(len(indices))
    return torch.stack(probabilities) if probabilities else torch.zeros(0)
