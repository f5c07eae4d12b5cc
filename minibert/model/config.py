"""BertConfig: the keys of Google's bert_config.json, read from Google or Hugging Face config files."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import ConfigError
from minibert.files import read_json_object
from minibert.model.activations import ACTIVATIONS
from minibert.model.attention import ATTENTION_IMPLEMENTATIONS

# Keys of Hugging Face configs that describe the file, not the network: ignored and reported.
METADATA_KEYS = {
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


# The keys that size the model: a config without one gets the default, named when it does not fit.
ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


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
    attention_implementation: str = "auto"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), {int: int, float: (int, float), str: str}[f.type]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"{f.name} must be {f.type.__name__}, got {value!r}")
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("initializer_range", "layer_norm_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(f"attention_implementation {self.attention_implementation!r} is not one "
                             f"of {sorted(ATTENTION_IMPLEMENTATIONS)}")

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> tuple["BertConfig", list[str]]:
        """Build from a Google or Hugging Face config dict; returns (config, ignored keys)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        for key, default in _UNSUPPORTED.items():
            if key in values and values[key] != default:
                raise ConfigError(f"{source}: {key}={values[key]!r} is not supported (only {default!r})")
        unknown = sorted(k for k in values if k not in fields and k not in _UNSUPPORTED)
        unexpected = [k for k in unknown if k not in METADATA_KEYS]
        try:
            config = cls(**{k: v for k, v in values.items() if k in fields})
        except (TypeError, ValueError) as e:
            missing = [k for k in ARCHITECTURE_KEYS if k not in values]  # their defaults may be what clashes
            raise ConfigError(f"{source}: {e}" + (f" ({', '.join(missing)} missing from the config: the default "
                                                 "was used)" if missing else "")) from None
        return config, unexpected + [k for k in unknown if k in METADATA_KEYS]

    @classmethod
    def from_json_file(cls, path: str | Path, with_ignored: bool = False):
        """The config in a JSON file (Google's bert_config.json or Hugging Face's config.json); with
        with_ignored, (config, ignored keys). Every error names the file (and the key)."""
        values = read_json_object(path, "config", ConfigError)
        config, ignored = cls.from_dict(values, str(path))
        return (config, ignored) if with_ignored else config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
