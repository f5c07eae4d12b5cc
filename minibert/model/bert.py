"""BERT encoder, numerically as in Google's modeling.py.

Shape legend: B batch, T tokens, H hidden size, N attention heads, D = H / N head size,
I intermediate size, L layers, V vocabulary, P positions at which a caller reads the last layer.

The module attributes are short; minibert/checkpoints/names.py maps them to Google's and Hugging
Face's names with explicit tables. Loading weights lives with the loaders
(minibert.checkpoints.load_pretrained), so the model knows nothing of files.
"""

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minibert.model.activations import ACTIVATIONS
from minibert.model.attention import attention, attention_bias, packed_keys_attention, varlen_attention
from minibert.model.config import BertConfig
from minibert.model.dropout import dropout
from minibert.model.kept_gradient import KeptGradientEmbedding
from minibert.model.packing import Packing, pack, pack_mask, packed_rows, unpack

PADDING_MODES = ("padded", "unpadded")
LAST_LAYER_MODES = ("needed", "all")
CHECKPOINTING_MODES = ("off", "layers")


class Choice:
    """A string attribute that takes one of `choices`, checked whenever it is set (BertModel's
    execution modes, which callers switch on a loaded model)."""

    def __init__(self, choices: tuple[str, ...]):
        self.choices = choices

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj, value: str) -> None:
        if value not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.choices}, got {value!r}")
        obj.__dict__[self.name] = value


class HiddenStates(Sequence):
    """The encoder's L + 1 hidden states as a read-only sequence: embeddings, then each layer.

    `stored` holds the ones the encoder computed, as it left them (None where it did not keep
    them, see BertModel.forward's keep_hidden_states): (B, T, H) from the padded encoder, or
    (total, H) from the unpadded one, padded back to (B, T, H) on first read when a
    `packing` is given (zeros at padded positions; the padded encoder computes values there that no
    real token reads). `length` is L + 1 even when the last layer was computed at some positions only
    (BertModel.last_layer = "needed"): reading it then raises instead of returning something else, so a
    head that needs every token cannot misread the output; its rows are BertOutput.last_layer_at_positions.
    """

    def __init__(self, stored: list[torch.Tensor], length: int, packing: Packing | None = None):
        self.stored, self.length, self.packing = stored, length, packing
        self._padded = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        i = range(len(self))[i]
        if i >= len(self.stored):
            # Not IndexError: iterating would then stop silently one layer early.
            raise ValueError(f"hidden state {i} (the last layer) was computed at last_layer_positions only: "
                             "read BertOutput.last_layer_at_positions, or set BertModel.last_layer = 'all'")
        if self.stored[i] is None:
            raise ValueError(f"hidden state {i} was not kept: the encoder ran with keep_hidden_states "
                             "(the layers its head reads); call it without to keep every layer")
        if self.packing is None:
            return self.stored[i]
        if i not in self._padded:
            self._padded[i] = unpack(self.stored[i], self.packing)
        return self._padded[i]


@dataclass
class BertOutput:
    """What the encoder returns.

    With `last_layer_positions` (B, P) in BertModel.forward, the last layer exists at those positions
    only: `last_layer_at_positions` (B, P, H) holds it (column 0 is [CLS]), and reading
    hidden_states[L] (or sequence_output) raises, unless the model ran with last_layer = "all".
    """

    pooled_output: torch.Tensor  # (B, H) tanh(W h_[CLS]) of the last layer
    hidden_states: Sequence[torch.Tensor]  # L + 1 tensors (B, T, H): embeddings, then each layer
    packing: Packing | None = None  # where the real tokens are, when the encoder ran unpadded
    packed_hidden_states: Sequence[torch.Tensor] | None = None  # unpadded: L + 1 tensors (total, H)
    last_layer_positions: torch.Tensor | None = None  # (B, P) int64, the positions asked for
    last_layer_at_positions: torch.Tensor | None = None  # (B, P, H): the last layer at those positions

    @property
    def sequence_output(self) -> torch.Tensor:
        """(B, T, H): the last layer."""
        return self.hidden_states[-1]

    def cls_vectors(self, i: int) -> torch.Tensor:
        """(B, H): the [CLS] vector of hidden state i (0 = embeddings, L = last layer), from wherever
        the encoder has it (without padding a packed layer back)."""
        if self.last_layer_at_positions is not None and i == len(self.hidden_states) - 1:
            return self.last_layer_at_positions[:, 0]
        if self.packing is not None:
            return self.packed_hidden_states[i].index_select(0, self.packing.first_rows)
        return self.hidden_states[i][:, 0]


def gather_positions(sequence: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """sequence (B, T, H), positions (B, P) -> (B, P, H) (run_pretraining.py gather_indexes)."""
    index = positions.long().unsqueeze(-1).expand(-1, -1, sequence.shape[-1])  # (B, P, H)
    return sequence.gather(1, index)


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout (modeling.py embedding_postprocessor)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = KeptGradientEmbedding(config.vocab_size, config.hidden_size)  # V x H gradient in kept memory
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

    @staticmethod
    def _project(x: torch.Tensor, linears: Sequence[nn.Module]) -> list[torch.Tensor]:
        """x (..., H) through several of the block's H -> H projections: one (..., H) output each.

        In training under autocast, as one matrix product with their weights stacked, split back into
        views: the same products per output, but x is read and cast to the low precision once, not
        once per projection, and backward takes x's gradient from one product instead of casting and
        adding one per projection (1-2.5% of a bf16 training step, benchmarks/README.md). In fp32
        there is no cast to save, and separate products keep backward's sums in the order of Google's
        and Hugging Face's code (one gradient per projection, added). Without gradients (inference)
        stacking the weights on every call would cost more than it saves on small batches. Projections
        that are not plain nn.Linear (predict.py --quantize int8) also run one by one."""
        fuse = (torch.is_grad_enabled() and torch.is_autocast_enabled(x.device.type)
                and all(type(linear) is nn.Linear for linear in linears))
        if not fuse:
            return [linear(x) for linear in linears]
        weight = torch.cat([linear.weight for linear in linears])
        bias = torch.cat([linear.bias for linear in linears])
        return list(F.linear(x, weight, bias).split(x.shape[-1], dim=-1))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Padded: x (B, T, H), bias (B, 1, 1, T) or None -> (B, T, H)."""
        return self._attend(x, x, bias)

    def forward_at(self, x: torch.Tensor, bias: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        """The block's output at some positions only: x (B, T, H), positions (B, P) -> (B, P, H).

        Keys and values come from every token, queries and the rest of the block from the P rows:
        each output row is the same function of x as in `forward`.
        """
        return self._attend(gather_positions(x, positions), x, bias)

    def _attend(self, rows: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """rows (B, P, H) attend to the tokens x (B, T, H) -> the block's output at the rows (B, P, H)."""
        B, P, H = rows.shape
        if rows is x:
            q, k, v = self._project(x, (self.query, self.key, self.value))
        else:
            q, (k, v) = self.query(rows), self._project(x, (self.key, self.value))
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        dropout_p = self.attention_dropout if self.training else 0.0
        context = attention(q, k, v, bias, dropout_p, self.attention_implementation)  # (B, N, P, D)
        return self._output(rows, context.transpose(1, 2).reshape(B, P, H))

    def forward_packed(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """Unpadded: x (total, H) of the real tokens -> (total, H); the same math per token."""
        total, H = x.shape
        q, k, v = (projected.view(total, self.num_heads, H // self.num_heads)
                   for projected in self._project(x, (self.query, self.key, self.value)))  # each (total, N, D)
        dropout_p = self.attention_dropout if self.training else 0.0
        context = varlen_attention(q, k, v, packing.cu_seqlens, packing.max_seqlen, dropout_p,
                                   padded_implementation=self.attention_implementation)  # (total, N, D)
        return self._output(x, context.reshape(total, H))

    def forward_packed_at(self, x: torch.Tensor, packing: Packing, rows: torch.Tensor) -> torch.Tensor:
        """Unpadded, at some tokens only: x (total, H), rows (B, P) packed row indices -> (B, P, H).

        Queries at the rows attend to all real tokens of their sequence (keys re-padded to
        (B, N, S, D) inside attention only); the rest of the block runs on the B * P rows.
        """
        total, H = x.shape
        B, P = rows.shape
        selected = x.index_select(0, rows.flatten()).view(B, P, H)
        k, v = (projected.view(total, self.num_heads, H // self.num_heads)
                for projected in self._project(x, (self.key, self.value)))
        dropout_p = self.attention_dropout if self.training else 0.0
        context = packed_keys_attention(self._heads(self.query(selected)), k, v, packing.cu_seqlens,
                                        packing.max_seqlen, dropout_p, self.attention_implementation)  # (B, N, P, D)
        return self._output(selected, context.transpose(1, 2).reshape(B, P, H))

    def _output(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The rest of the block, per token: x and context (..., H) -> (..., H)."""
        # self.dropout holds the rate; model/dropout.py's dropout draws the mask ~3x cheaper on the CPU.
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

    `last_layer` says which rows of the last layer run when the caller names the positions it will
    read (forward's last_layer_positions; the classifier heads and BertForPreTraining do):
      "needed"    queries, attention output, FFN and LayerNorms at those positions only; keys and
                  values of every token. No row of the transformer depends on another row except
                  through keys and values, so this changes no number, only which rows are computed:
                  a [CLS] classifier skips ~5/6 of its last layer, pre-training (21 of 128 rows) ~70%
      "all"       every position, then the requested rows are gathered (the plain computation)

    `checkpointing` trades compute for memory when gradients are recorded (activation checkpointing):
      "off"       autograd keeps every layer's intermediate activations for backward
      "layers"    each layer that runs at every token keeps only its input and runs again in backward,
                  from the same RNG state, so with the same dropout masks: the same numbers for about
                  one more forward pass of compute; backward holds the L layer inputs and one layer's
                  intermediate activations at a time instead of all L layers' (README.md has the costs)
    """

    padding = Choice(PADDING_MODES)
    last_layer = Choice(LAST_LAYER_MODES)
    checkpointing = Choice(CHECKPOINTING_MODES)

    def __init__(self, config: BertConfig, padding: str = "padded", last_layer: str = "needed",
                 checkpointing: str = "off"):
        super().__init__()
        self.config = config
        self.padding = padding
        self.last_layer = last_layer
        self.checkpointing = checkpointing
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                last_layer_positions: torch.Tensor | None = None,
                keep_hidden_states: Collection[int] | None = None) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T) integer tensors; mask 1 = token.

        last_layer_positions: (B, P) integer positions at which the caller reads the last layer,
        column 0 being 0 ([CLS], which the pooler reads); they are then in the output's
        last_layer_at_positions (B, P, H), and with last_layer = "needed" the last layer is computed
        there only (BertOutput says what that leaves readable). None: every position, as Google's.
        keep_hidden_states: the indices of hidden_states the caller reads (0 = embeddings, i = layer
        i); the others are let go as soon as the next layer has read them, so that inference holds
        about one layer's activations instead of all of them (in training autograd keeps them
        anyway). None keeps every one.
        """
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if last_layer_positions is not None:
            last_layer_positions = last_layer_positions.long()
            check_positions(last_layer_positions, input_ids.shape[1])
        if self.padding == "unpadded" and attention_mask is not None and not bool(attention_mask.all()):
            packing = pack_mask(attention_mask)
            if packing is not None:
                return self._forward_packed(input_ids, token_type_ids, packing, last_layer_positions,
                                            keep_hidden_states)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        bias = None if attention_mask is None else attention_bias(attention_mask, x.dtype)
        x, states, last_layer_done = self._run_layers(x, lambda layer, x: layer(x, bias), last_layer_positions,
                                                      keep_hidden_states)
        if last_layer_positions is None:
            pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, H): modeling.py pools the [CLS] token only
            return BertOutput(pooled_output=pooled, hidden_states=states)
        if last_layer_done:
            selected = gather_positions(x, last_layer_positions)
        else:  # "needed": the last layer at the positions only
            selected = self.layers[-1].forward_at(x, bias, last_layer_positions)
        return self._output_at(selected, last_layer_positions, states)

    def _forward_packed(self, input_ids, token_type_ids, packing: Packing,
                        last_layer_positions: torch.Tensor | None,
                        keep_hidden_states: Collection[int] | None) -> BertOutput:
        # Packing the ids (not the embedded vectors) gives the same (total, H) embeddings: each
        # token's sum and LayerNorm do not depend on other positions.
        x = self.embeddings(pack(input_ids, packing), pack(token_type_ids, packing), packing.positions)
        x, packed, last_layer_done = self._run_layers(x, lambda layer, x: layer.forward_packed(x, packing),
                                                      last_layer_positions, keep_hidden_states)
        padded = HiddenStates(packed.stored, packed.length, packing)  # (B, T, H) on first read
        if last_layer_positions is None:
            pooled = torch.tanh(self.pooler(x.index_select(0, packing.first_rows)))  # (B, H): [CLS] rows
            return BertOutput(pooled_output=pooled, hidden_states=padded, packing=packing,
                              packed_hidden_states=packed)
        rows = packed_rows(packing, last_layer_positions)  # (B, P)
        if last_layer_done:
            selected = x[rows]  # (B, P, H)
        else:  # "needed": the last layer at the positions only
            selected = self.layers[-1].forward_packed_at(x, packing, rows)
        return self._output_at(selected, last_layer_positions, padded, packed, packing)

    def _run_layers(self, x: torch.Tensor, step, last_layer_positions: torch.Tensor | None,
                    keep_hidden_states: Collection[int] | None) -> tuple[torch.Tensor, HiddenStates, bool]:
        """The embeddings' output x through the layers that run at every token: all of them, or all
        but the last when the caller names positions and last_layer is "needed". step(layer, x) runs
        one layer. Returns the last output, the hidden states (those in keep_hidden_states and the
        last one computed, which the pooler and the heads read; None = all) and whether the last
        layer ran at every token."""
        last_layer_done = last_layer_positions is None or self.last_layer == "all"
        layers = self.layers if last_layer_done else self.layers[:-1]
        keep = range(len(layers) + 1) if keep_hidden_states is None else {*keep_hidden_states, len(layers)}
        if self.checkpointing == "layers" and torch.is_grad_enabled():
            step = recomputed(step)
        stored = [x if 0 in keep else None]
        for i, layer in enumerate(layers, start=1):
            x = step(layer, x)
            stored.append(x if i in keep else None)
        return x, HiddenStates(stored, len(self.layers) + 1), last_layer_done

    def _output_at(self, selected: torch.Tensor, positions: torch.Tensor, hidden_states: HiddenStates,
                   packed_hidden_states: HiddenStates | None = None, packing: Packing | None = None) -> BertOutput:
        """The output when the last layer was asked for at `positions` (B, P): selected (B, P, H)."""
        pooled = torch.tanh(self.pooler(selected[:, 0]))  # (B, H): [CLS] is column 0 (check_positions)
        return BertOutput(pooled_output=pooled, hidden_states=hidden_states, packing=packing,
                          packed_hidden_states=packed_hidden_states, last_layer_positions=positions,
                          last_layer_at_positions=selected)


def recomputed(step):
    """step(layer, x) under activation checkpointing: only x is kept for backward, where the layer
    runs again. preserve_rng_state restores torch's CPU generator and that of x's device before the
    rerun, so dropout (model/dropout.py on the CPU, F.dropout on CUDA, the Triton kernel's Philox seed
    drawn from the CPU generator) draws the masks of the forward pass; the non-reentrant variant
    works with inputs that need no gradient and with autocast, which it records and reapplies."""
    return lambda layer, x: checkpoint(step, layer, x, use_reentrant=False, preserve_rng_state=True)


def check_positions(positions: torch.Tensor, length: int) -> None:
    """last_layer_positions (B, P) must start with [CLS] (the pooler reads column 0) and lie in
    0..T-1. One host sync, on the small (B, P) tensor."""
    if positions.dim() != 2 or positions.shape[1] == 0:
        raise ValueError(f"last_layer_positions must be (B, P) with P >= 1, got shape {tuple(positions.shape)}")
    if not bool(((positions[:, 0] == 0) & (positions >= 0).all(1) & (positions < length).all(1)).all()):
        raise ValueError(f"last_layer_positions must have 0 ([CLS]) in column 0 and lie in 0..{length - 1}")


def truncated_normal_(weight: torch.Tensor, std: float) -> None:
    """Google's create_initializer (modeling.py): a normal cut at two standard deviations, so its
    draws have a standard deviation of 0.88 std."""
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def plain_normal_(weight: torch.Tensor, std: float) -> None:
    """The paper's code (xuyige/BERT4doc-Classification, modeling.py: BertForSequenceClassification's
    init_weights, "slightly different from the TF version") and transformers' _init_weights."""
    nn.init.normal_(weight, std=std)


# How a new weight matrix is drawn (init_weights); a fine-tuning run's new heads take --head_init.
WEIGHT_INITS = {"truncated_normal": truncated_normal_, "normal": plain_normal_}
GOOGLE_INIT = "truncated_normal"  # every new module's weights unless a run says otherwise


def init_weights(module: nn.Module, std: float, weights: str = GOOGLE_INIT) -> None:
    """A new module's parameters: Linear and Embedding weights drawn as WEIGHT_INITS[weights] says
    with stddev `std` (initializer_range, 0.02), biases 0, LayerNorm the identity."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        WEIGHT_INITS[weights](module.weight, std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def num_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
