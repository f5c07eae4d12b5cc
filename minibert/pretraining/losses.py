"""run_pretraining.py's losses and evaluation metrics for BertForPreTraining.

Shapes: B sequences, P predictions per sequence, V vocabulary. Batches are dicts of tensors with
Google's feature names (minibert.data.pretraining_batches).

    MLM loss = sum(w * nll) / (sum(w) + 1e-5)     over the gathered masked positions, w = masked_lm_weights
    NSP loss = mean cross-entropy of the pooled [CLS] classifier
    loss     = MLM + NSP

(get_masked_lm_output and get_next_sentence_output in Google's run_pretraining.py.)
"""

import torch
import torch.nn.functional as F

from minibert.model.pretraining_heads import BertForPreTraining, PreTrainingOutput

MLM_EPSILON = 1e-5  # run_pretraining.py: denominator = tf.reduce_sum(label_weights) + 1e-5


def pretraining_outputs(model: BertForPreTraining, batch: dict[str, torch.Tensor]) -> PreTrainingOutput:
    """The model on a batch of records (Google's feature names): MLM logits (B, P, V) at the
    masked_lm_positions, NSP logits (B, 2)."""
    return model(batch["input_ids"], batch["segment_ids"], batch["input_mask"], batch["masked_lm_positions"])


def masked_lm_nll(mlm_logits: torch.Tensor, masked_lm_ids: torch.Tensor) -> torch.Tensor:
    """logits (B, P, V), ids (B, P) -> negative log-likelihood (B, P) in float32."""
    log_probs = F.log_softmax(mlm_logits.float(), dim=-1)
    return -log_probs.gather(-1, masked_lm_ids.long().unsqueeze(-1)).squeeze(-1)


def pretraining_loss_terms(output: PreTrainingOutput, batch: dict[str, torch.Tensor],
                           weight_total: float, sequence_total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This micro-batch's share of the MLM and NSP losses of the whole optimizer-step batch.

    weight_total is sum(masked_lm_weights) and sequence_total the number of sequences over all
    micro-batches of the step, so the shares of the micro-batches add up to exactly Google's
    losses of the full batch (gradient accumulation changes nothing but summation order).
    Returns float32 scalars (mlm_share, nsp_share).
    """
    weights = batch["masked_lm_weights"].float()
    nll = masked_lm_nll(output.mlm_logits, batch["masked_lm_ids"])
    mlm = (weights * nll).sum() / (weight_total + MLM_EPSILON)
    nsp = F.cross_entropy(output.nsp_logits.float(), batch["next_sentence_labels"].long(), reduction="sum")
    return mlm, nsp / sequence_total


@torch.no_grad()
def evaluation_sums(output: PreTrainingOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sums for run_pretraining.py's metric_fn over one batch, as a float64 tensor:
    [sum w*nll, sum w*correct, sum w, nsp nll sum, nsp correct, sequences]."""
    weights = batch["masked_lm_weights"].double()
    nll = masked_lm_nll(output.mlm_logits, batch["masked_lm_ids"]).double()
    correct = (output.mlm_logits.argmax(-1) == batch["masked_lm_ids"]).double()
    labels = batch["next_sentence_labels"].long()
    nsp_nll = F.cross_entropy(output.nsp_logits.float(), labels, reduction="sum").double()
    nsp_correct = (output.nsp_logits.argmax(-1) == labels).double().sum()
    return torch.stack([(weights * nll).sum(), (weights * correct).sum(), weights.sum(), nsp_nll, nsp_correct,
                        torch.tensor(float(len(labels)), dtype=torch.float64)])


def evaluation_metrics(sums: torch.Tensor) -> dict[str, float]:
    """metric_fn's weighted means: masked_lm_loss and masked_lm_accuracy weigh every prediction by
    its weight; next_sentence_loss and next_sentence_accuracy are means over sequences."""
    mlm_nll, mlm_correct, weight, nsp_nll, nsp_correct, sequences = sums.tolist()
    return {"mlm_loss": mlm_nll / max(weight, 1e-12), "mlm_accuracy": mlm_correct / max(weight, 1e-12),
            "nsp_loss": nsp_nll / max(sequences, 1), "nsp_accuracy": nsp_correct / max(sequences, 1),
            "predictions": int(weight), "sequences": int(sequences)}
