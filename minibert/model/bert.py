"""BERT encoder, numerically as in Google's modeling.py.

Shape legend: B batch, T tokens, H hidden size, N attention heads, D = H / N head size,
I intermediate size, L layers, V vocabulary.

The module attributes are short; minibert/checkpoints/names.py maps them to Google's and Hugging
Face's names with explicit tables. Loading weights lives with the loaders
(minibert.checkpoints.load_pretrained), so the model knows nothing of files.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from minibert.model.activations import ACTIVATIONS
from minibert.model.attention import attention, attention_bias, varlen_attention
from minibert.model.config import BertConfig
from minibert.model.dropout import dropout
from minibert.model.packing import Packing, pack, pack_mask, unpack


class PaddedLayers(Sequence):
    """The unpadded encoder's per-layer outputs, padded to (B, T, H) only when a caller reads one.

    Padded positions hold zeros (the padded encoder computes values there that no real token reads).
    """

    def __init__(self, packed: list[torch.Tensor], packing: Packing):
        self.packed, self.packing = packed, packing
        self._padded = {}

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        i = range(len(self))[i]
        if i not in self._padded:
            self._padded[i] = unpack(self.packed[i], self.packing)
        return self._padded[i]


@dataclass
class BertOutput:
    pooled_output: torch.Tensor  # (B, H) tanh(W h_[CLS]) of the last layer
    hidden_states: Sequence[torch.Tensor]  # L + 1 tensors (B, T, H): embeddings, then each layer
    packing: Packing | None = None  # where the real tokens are, when the encoder ran unpadded
    packed_hidden_states: list[torch.Tensor] | None = None  # unpadded: L + 1 tensors (total, H)

    @property
    def sequence_output(self) -> torch.Tensor:
        """(B, T, H): the last layer."""
        return self.hidden_states[-1]


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout (modeling.py embedding_postprocessor)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, H); or packed (total,) ids with their position_ids -> (total, H)."""
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(position_ids) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


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
        """Padded: x (B, T, H), bias (B, 1, 1, T) or None -> (B, T, H)."""
        B, T, H = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        dropout_p = self.attention_dropout if self.training else 0.0
        context = attention(q, k, v, bias, dropout_p, self.attention_implementation)  # (B, N, T, D)
        return self._output(x, context.transpose(1, 2).reshape(B, T, H))

    def forward_packed(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """Unpadded: x (total, H) of the real tokens -> (total, H); the same math per token."""
        total, H = x.shape
        q, k, v = (linear(x).view(total, self.num_heads, H // self.num_heads)
                   for linear in (self.query, self.key, self.value))  # each (total, N, D)
        dropout_p = self.attention_dropout if self.training else 0.0
        context = varlen_attention(q, k, v, packing.cu_seqlens, packing.max_seqlen, dropout_p,
                                   padded_implementation=self.attention_implementation)  # (total, N, D)
        return self._output(x, context.reshape(total, H))

    def _output(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The rest of the block, per token: x and context (..., H) -> (..., H)."""
        # self.dropout holds the rate; attention.dropout draws the mask ~3x cheaper on the CPU.
        hidden_p = self.dropout.p if self.training else 0.0
        x = self.attn_norm(x + dropout(self.attn_out(context), hidden_p))
        hidden = self.act(self.ffn_in(x))  # (..., I)
        return self.ffn_norm(x + dropout(self.ffn_out(hidden), hidden_p))  # (..., H)


class BertModel(nn.Module):
    """The encoder: embeddings, L layers and the pooler.

    `padding` says how a batch with padding runs (an execution choice, not part of the config):
      "padded"    every position of (B, T, H), as Google's modeling.py; outputs at padded positions
                  are Google's values there
      "unpadded"  the real tokens only, packed into (total, H) after a once-per-batch index
                  computation; attention through attention.varlen_attention; hidden states are
                  padded back (zeros at padding) only when read. The same math per real token, so
                  equal outputs at real positions and pooled outputs, up to float rounding
    A batch without padding, or whose rows do not all start with a real token, runs padded.
    """

    def __init__(self, config: BertConfig, padding: str = "padded"):
        super().__init__()
        self.config = config
        self.padding = padding
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.apply(lambda module: init_weights(module, config.initializer_range))

    @property
    def padding(self) -> str:
        return self._padding

    @padding.setter
    def padding(self, value: str) -> None:
        if value not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {value!r}")
        self._padding = value

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T) integer tensors; mask 1 = token."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.padding == "unpadded" and attention_mask is not None and not bool(attention_mask.all()):
            packing = pack_mask(attention_mask)
            if packing is not None:
                return self._forward_packed(input_ids, token_type_ids, packing)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        bias = None if attention_mask is None else attention_bias(attention_mask, x.dtype)
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, bias)
            hidden_states.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, H): modeling.py pools the [CLS] token only
        return BertOutput(pooled_output=pooled, hidden_states=tuple(hidden_states))

    def _forward_packed(self, input_ids, token_type_ids, packing: Packing) -> BertOutput:
        # Packing the ids (not the embedded vectors) gives the same (total, H) embeddings: each
        # token's sum and LayerNorm do not depend on other positions.
        x = self.embeddings(pack(input_ids, packing), pack(token_type_ids, packing), packing.positions)
        packed = [x]  # (total, H) each
        for layer in self.layers:
            x = layer.forward_packed(x, packing)
            packed.append(x)
        pooled = torch.tanh(self.pooler(x.index_select(0, packing.first_rows)))  # (B, H): [CLS] rows
        return BertOutput(pooled_output=pooled, hidden_states=PaddedLayers(packed, packing),
                          packing=packing, packed_hidden_states=packed)


PADDING_MODES = ("padded", "unpadded")


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
