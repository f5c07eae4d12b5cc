"""BERT encoder, numerically as in Google's modeling.py.

Shape legend: B batch, T tokens, H hidden size, N attention heads, D = H / N head size,
I intermediate size, L layers, V vocabulary.

The module attributes are short; `minibert/checkpoints.py` maps them to Google's and Hugging Face's
names with explicit tables.
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.attention import ATTENTION_IMPLEMENTATIONS, attention, attention_bias, dropout


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation Google's modeling.py has used since February 2019."""
    return F.gelu(x, approximate="tanh")


# hidden_act name -> function. "gelu" is the exact erf form the released checkpoints were trained
# with (REFERENCE §2); the tanh form has its own names (ours, and Hugging Face's two spellings).
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
}

# Keys of Hugging Face configs that describe the file, not the network: ignored and reported.
_METADATA_KEYS = {
    "architectures", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
    "use_cache", "gradient_checkpointing", "pad_token_id", "classifier_dropout", "output_past",
    "directionality", "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
    "pooler_size_per_head", "pooler_type", "id2label", "label2id", "problem_type",
}
# Keys whose non-default values change the network into one this encoder does not implement.
_UNSUPPORTED = {
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
    "chunk_size_feed_forward": 0,
}


@dataclass
class BertConfig:
    """Fields are exactly the keys of Google's bert_config.json, plus named extras with defaults."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    # Extras. Google hard-codes 1e-12 (modeling.py layer_norm); Hugging Face stores it.
    layer_norm_eps: float = 1e-12
    # Which entry of attention.ATTENTION_IMPLEMENTATIONS the layers call.
    attention_implementation: str = "sdpa"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), {int: int, float: (int, float), str: str}[f.type]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{f.name} must be {f.type.__name__}, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention_implementation {self.attention_implementation!r} is not one "
                             f"of {sorted(ATTENTION_IMPLEMENTATIONS)}")

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> tuple["BertConfig", list[str]]:
        """Build from a Google or Hugging Face config dict; returns (config, ignored keys)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        for key, default in _UNSUPPORTED.items():
            if key in values and values[key] != default:
                raise ValueError(f"{source}: {key}={values[key]!r} is not supported (only {default!r})")
        unknown = sorted(k for k in values if k not in fields and k not in _UNSUPPORTED)
        unexpected = [k for k in unknown if k not in _METADATA_KEYS]
        try:
            config = cls(**{k: v for k, v in values.items() if k in fields})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None
        return config, unexpected + [k for k in unknown if k in _METADATA_KEYS]

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read config: {e}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config must be a JSON object")
        return cls.from_dict(values, str(path))[0]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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

    @classmethod
    def from_pretrained(cls, path: str | Path, **config_overrides) -> "BertModel":
        """Load a Google TF checkpoint, a Hugging Face folder or a minibert folder (detected)."""
        # Imported here so that the model module does not depend on the checkpoint code.
        from minibert.checkpoints import load_pretrained

        return load_pretrained(cls, path, **config_overrides)

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
