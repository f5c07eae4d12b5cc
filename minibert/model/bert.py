"""BERT encoder, numerically as in Google's modeling.py.

Shape legend: B batch, T tokens, H hidden size, N attention heads, D = H / N head size,
I intermediate size, L layers, V vocabulary.

The module attributes are short; minibert/checkpoints/names.py maps them to Google's and Hugging
Face's names with explicit tables. Loading weights lives with the loaders
(minibert.checkpoints.load_pretrained), so the model knows nothing of files.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from minibert.model.activations import ACTIVATIONS
from minibert.model.attention import attention, attention_bias
from minibert.model.config import BertConfig
from minibert.model.dropout import dropout


@dataclass
class BertOutput:
    sequence_output: torch.Tensor  # (B, T, H) last layer
    pooled_output: torch.Tensor  # (B, H) tanh(W h_[CLS]) of the last layer
    hidden_states: tuple[torch.Tensor, ...]  # L + 1 tensors (B, T, H): embeddings, then each layer


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout (modeling.py embedding_postprocessor)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))  # (B, T, H)


class Layer(nn.Module):
    """One post-LN transformer block: x = LN(x + attn(x)); x = LN(x + ffn(x)) (modeling.py transformer_model)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H, I = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.attn_out = nn.Linear(H, H)
        self.attn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(H, I)
        self.ffn_out = nn.Linear(I, H)
        self.ffn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.attention_implementation = config.attention_implementation

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        return x.view(B, T, self.num_heads, H // self.num_heads).transpose(1, 2)  # (B, N, T, D)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        dropout_p = self.attention_dropout if self.training else 0.0
        context = attention(q, k, v, bias, dropout_p, self.attention_implementation)  # (B, N, T, D)
        context = context.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        # self.dropout holds the rate; attention.dropout draws the mask ~3x cheaper on the CPU.
        hidden_p = self.dropout.p if self.training else 0.0
        x = self.attn_norm(x + dropout(self.attn_out(context), hidden_p))
        hidden = self.act(self.ffn_in(x))  # (B, T, I)
        return self.ffn_norm(x + dropout(self.ffn_out(hidden), hidden_p))  # (B, T, H)


class BertModel(nn.Module):
    """The encoder: embeddings, L layers and the pooler."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T) integer tensors; mask 1 = token."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        bias = None if attention_mask is None else attention_bias(attention_mask, x.dtype)
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, bias)
            hidden_states.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, H): modeling.py pools the [CLS] token only
        return BertOutput(sequence_output=x, pooled_output=pooled, hidden_states=tuple(hidden_states))


def init_weights(module: nn.Module, std: float) -> None:
    """Google's create_initializer: truncated normal with stddev 0.02, cut at two standard deviations."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def num_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
