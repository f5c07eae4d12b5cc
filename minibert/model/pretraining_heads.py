"""BERT's pre-training heads: masked LM and next-sentence prediction (run_pretraining.py).

Shapes: B batch, T tokens, P predicted positions per row, H hidden, V vocabulary.
Heads return logits; the losses live with the pre-training code.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.model.activations import ACTIVATIONS
from minibert.model.bert import BertModel, BertOutput, init_weights
from minibert.model.config import BertConfig


class MaskedLMHead(nn.Module):
    """get_masked_lm_output: dense + activation + LayerNorm, then the word embeddings as the decoder."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # cls/predictions/output_bias: the decoder has its own bias, initialised to zeros.
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (B, P, H), word_embeddings (V, H) -> logits (B, P, V)."""
        h = self.norm(self.act(self.transform(hidden)))
        # The decoder weight is tied to the input word embeddings (modeling.py get_embedding_table).
        return F.linear(h, word_embeddings, self.bias)


@dataclass
class PreTrainingOutput:
    mlm_logits: torch.Tensor  # (B, P, V) at the requested positions only
    nsp_logits: torch.Tensor  # (B, 2); label 0 = B follows A, 1 = B is random (Google's convention)
    encoder: BertOutput


class BertForPreTraining(nn.Module):
    """The encoder with the MLM and NSP heads, loadable from Google checkpoints with their cls/* variables."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config)
        # get_next_sentence_output: a plain linear layer on the pooled output.
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.mlm.apply(lambda module: init_weights(module, config.initializer_range))
        init_weights(self.nsp, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                masked_lm_positions: torch.Tensor | None = None) -> PreTrainingOutput:
        """Inputs (B, T); masked_lm_positions (B, P). Without positions, MLM logits cover every token.

        The heads read the last layer at [CLS] (NSP, through the pooler) and at the masked positions
        (MLM) only, so the encoder is asked for exactly those rows (BertModel.last_layer).
        """
        if masked_lm_positions is None:
            encoder = self.bert(input_ids, token_type_ids, attention_mask)
            hidden = encoder.sequence_output  # (B, T, H)
        else:
            cls = torch.zeros_like(masked_lm_positions[:, :1])
            encoder = self.bert(input_ids, token_type_ids, attention_mask,
                                last_layer_positions=torch.cat([cls, masked_lm_positions], 1))
            hidden = encoder.last_layer_at_positions[:, 1:]  # (B, P, H): gather_indexes' rows
        mlm_logits = self.mlm(hidden, self.bert.embeddings.word.weight)
        return PreTrainingOutput(mlm_logits, self.nsp(encoder.pooled_output), encoder)
