"""Reading and writing Google TF, Hugging Face and minibert checkpoints.

Every format is read into one `Checkpoint`: a BertConfig and a state dict under minibert's canonical
names (minibert/checkpoints/names.py). Nothing is skipped silently: optimizer state, tied copies and
buffers are listed in `Checkpoint.skipped`; a variable that no table knows, a shape that contradicts
the config, a non-finite value or a parameter the model lacks is an error naming every offender.

A minibert folder is config.json + vocab.txt + model.safetensors (canonical names) + minibert.json,
which records the architecture and the sha256 of the weights file: safetensors has no checksum of its
own, so a flipped byte would otherwise load silently.
"""

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minibert.checkpoints import names
from minibert.checkpoints.integrity import check_finite, read_safetensors, verify_sha256
from minibert.checkpoints.tf_checkpoint import find_tf_prefix, read_tf_checkpoint, write_tf_checkpoint
from minibert.errors import CheckpointError
from minibert.files import atomic_save_safetensors, atomic_write_text, read_json_object, sha256_file
from minibert.model.bert import BertModel
from minibert.model.config import METADATA_KEYS, BertConfig
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.schema import typed

FORMATS = ("minibert", "hf", "tf")
MINIBERT_METADATA = {"format": "pt", "producer": "minibert"}
MINIBERT_FILE = "minibert.json"
HEAD_PREFIXES = ("mlm.", "nsp.", "head.", "heads.")  # heads.<task>.: multi-task
# What a checkpoint holds, by Hugging Face's class names where Hugging Face and Google can hold it.
# "BertClassifier" is a classifier whose head only minibert has (other layers than the last, no
# pooler, chunk or BERT-Feat heads): Hugging Face's BertForSequenceClassification and Google's
# run_classifier always classify the pooled last layer, so such a head would load there silently wrong.
PORTABLE_ARCHITECTURES = ("BertModel", "BertForPreTraining", "BertForSequenceClassification")
ARCHITECTURES = PORTABLE_ARCHITECTURES + ("BertClassifier", "MultiTaskClassifier")


@dataclass
class Checkpoint:
    config: BertConfig
    state: dict[str, torch.Tensor]  # canonical minibert names -> tensors (dtype as stored)
    format: str  # one of FORMATS
    source: Path  # the weights file, or the TF checkpoint prefix
    vocab_file: Path | None  # vocab.txt next to the weights, when there is one
    architecture: str  # one of ARCHITECTURES
    skipped: list[str] = field(default_factory=list)  # "name (reason)" for every tensor not loaded
    ignored_config_keys: list[str] = field(default_factory=list)  # unknown keys first, then file metadata
    config_file: Path | None = None  # the config the BertConfig was read from

    @property
    def warnings(self) -> list[str]:
        """What a caller should tell the user (the library does not print): config keys that are
        neither BertConfig fields nor known file metadata, so a typo in a key never goes unnoticed."""
        unknown = [key for key in self.ignored_config_keys if key not in METADATA_KEYS]
        if not unknown:
            return []
        return [f"{self.config_file}: unknown config keys ignored: {', '.join(unknown)}"]


def architecture_of(state: dict[str, torch.Tensor]) -> str:
    """What a state dict from a Google or Hugging Face file holds, from its head names."""
    if "nsp.weight" in state or "mlm.bias" in state:
        return "BertForPreTraining"
    return "BertForSequenceClassification" if "head.out.weight" in state else "BertModel"


def checkpoint_of(model: torch.nn.Module, vocab_file: Path | None, architecture: str | None = None) -> Checkpoint:
    """A model's weights as a Checkpoint; the architecture comes from the model's class (a
    classifier passes its own, see minibert.checkpoints.classifier)."""
    if architecture is None:
        kinds = {BertModel: "BertModel", BertForPreTraining: "BertForPreTraining"}
        if type(model) not in kinds:
            raise TypeError(f"give the architecture of a {type(model).__name__}")
        architecture = kinds[type(model)]
    return Checkpoint(model.config, state_of(model), "minibert", Path("<memory>"), vocab_file, architecture)


# ---------------------------------------------------------------------------------------------
# Finding what a path holds


def detect_format(path: str | Path) -> str:
    """'tf', 'hf' or 'minibert' for a checkpoint path (folder, TF prefix or .index file)."""
    path = Path(path)
    if find_tf_prefix(path) is not None:
        return "tf"
    if (path / "model.safetensors").is_file():
        try:
            with open(path / "model.safetensors", "rb") as f:
                header_size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(min(header_size, 100_000_000)))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path / 'model.safetensors'}: not a safetensors file ({e})") from None
        producer = header.get("__metadata__", {}).get("producer")
        return "minibert" if producer == "minibert" else "hf"
    if (path / "pytorch_model.bin").is_file():
        return "hf"
    raise CheckpointError(f"{path}: no checkpoint found (expected a TF checkpoint prefix or .index file, "
                          "or a folder with model.safetensors or pytorch_model.bin)")


def load_checkpoint(path: str | Path, config_file: str | Path | None = None) -> Checkpoint:
    """Read any supported checkpoint into minibert names. config_file overrides the one found beside it."""
    path = Path(path)
    fmt = detect_format(path)
    loader = {"tf": _load_tf, "hf": _load_hf, "minibert": _load_minibert}[fmt]
    checkpoint = loader(path, None if config_file is None else Path(config_file))
    _check_shapes(checkpoint)
    check_finite(checkpoint.state, checkpoint.source)
    return checkpoint


def _read_config(candidates: list[Path]) -> tuple[BertConfig, list[str], Path]:
    """The first config file that exists; CheckpointError naming the file and the key when it is bad."""
    for candidate in candidates:
        if candidate.is_file():
            try:
                config, ignored = BertConfig.from_json_file(candidate, with_ignored=True)
            except ValueError as e:  # ConfigError; its message starts with the file name
                raise CheckpointError(str(e)) from None
            return config, ignored, candidate
    raise CheckpointError(f"no config found: looked for {', '.join(str(c) for c in candidates)}")


def _vocab_beside(folder: Path) -> Path | None:
    return folder / "vocab.txt" if (folder / "vocab.txt").is_file() else None


# ---------------------------------------------------------------------------------------------
# Google TF checkpoints


def _load_tf(path: Path, config_file: Path | None) -> Checkpoint:
    prefix = find_tf_prefix(path)
    folder = prefix.parent
    config, ignored, config_path = _read_config([config_file] if config_file else
                                                [folder / "bert_config.json", folder / "config.json"])
    table = {tf: (ours, names.tf_is_transposed(tf)) for ours, tf, _ in names.expand(config.num_hidden_layers)}
    state, skipped, unknown = {}, [], []
    for tf_name, tensor in read_tf_checkpoint(prefix).items():
        if names.is_tf_optimizer_state(tf_name):
            skipped.append(f"{tf_name} (optimizer state)")
        elif tf_name in table:
            ours, transposed = table[tf_name]
            state[ours] = tensor.t().contiguous() if transposed else tensor
        else:
            unknown.append(tf_name)
    if unknown:
        raise CheckpointError(f"{prefix}: variables with no minibert equivalent (wrong config, "
                              f"num_hidden_layers={config.num_hidden_layers}?): {', '.join(unknown)}")
    return Checkpoint(config, state, "tf", prefix, _vocab_beside(folder), architecture_of(state), skipped, ignored,
                      config_path)


def save_tf(folder: str | Path, checkpoint: Checkpoint) -> Path:
    """Write folder/bert_model.ckpt.{index,data-00000-of-00001}, bert_config.json and vocab.txt."""
    folder = Path(folder)
    _check_portable(checkpoint, "Google's TF format")
    if checkpoint.config.layer_norm_eps != BertConfig.layer_norm_eps:
        # Google's modeling.py hard-codes epsilon 1e-12 and bert_config.json has no key for it.
        raise CheckpointError(f"layer_norm_eps={checkpoint.config.layer_norm_eps} cannot be stored in Google's "
                              "bert_config.json (Google's code always uses 1e-12): save as minibert or hf")
    table = {ours: tf for ours, tf, _ in names.expand(checkpoint.config.num_hidden_layers)}
    tensors = {}
    for ours, tensor in checkpoint.state.items():
        if ours not in table:
            raise CheckpointError(f"{ours} has no Google TF equivalent")
        tf_name = table[ours]
        tensors[tf_name] = tensor.t().contiguous() if names.tf_is_transposed(tf_name) else tensor
    config = checkpoint.config.to_dict()
    del config["layer_norm_eps"], config["attention_implementation"]  # Google's keys only
    _write_common(folder, config, checkpoint.vocab_file, "bert_config.json")
    write_tf_checkpoint(folder / "bert_model.ckpt", tensors)
    return folder / "bert_model.ckpt"


# ---------------------------------------------------------------------------------------------
# Hugging Face folders


def _read_hf_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    file = folder / "model.safetensors"
    if file.is_file():
        return read_safetensors(file), file
    file = folder / "pytorch_model.bin"
    try:
        # weights_only=True: the unpickler builds tensors and plain containers only, never runs code.
        tensors = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or hostile pickles
        text = str(e).strip()
        # torch's refusal is several lines advising weights_only=False, which would run the pickle's code.
        reason = ("it holds objects other than tensors, which could run code when loaded" if "Weights only load"
                  in text else (text.splitlines()[0] if text else type(e).__name__))
        raise CheckpointError(f"{file}: cannot read PyTorch weights file: {reason}") from None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise CheckpointError(f"{file}: expected a dict of tensors")
    return tensors, file


def _hf_name(name: str) -> str:
    """Normalise legacy LayerNorm names and add the `bert.` prefix that BertModel files lack."""
    for legacy, modern in names.HF_LEGACY_SUFFIXES.items():
        if name.endswith(legacy) and "LayerNorm" in name:
            name = name[: -len(legacy)] + modern
    if not name.startswith(("bert.", "cls.", "classifier.")):
        name = "bert." + name
    return name


def _load_hf(folder: Path, config_file: Path | None) -> Checkpoint:
    config, ignored, config_path = _read_config([config_file or folder / "config.json"])
    table = {hf: ours for ours, _, hf in names.expand(config.num_hidden_layers)}
    raw, file = _read_hf_tensors(folder)
    tensors = {_hf_name(name): tensor for name, tensor in raw.items()}
    state, skipped, unknown = {}, [], []
    for name, tensor in tensors.items():
        if name in names.HF_BUFFERS:
            skipped.append(f"{name} (buffer)")
        elif name in names.HF_TIED:
            twin = names.HF_TIED[name]
            if twin in tensors and not torch.equal(tensors[twin], tensor):
                raise CheckpointError(f"{file}: {name} differs from {twin}; untied MLM decoders are not supported")
            skipped.append(f"{name} (tied to {twin})")
        elif name in table:
            state[table[name]] = tensor
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(f"{file}: tensors with no minibert equivalent: {', '.join(unknown)}")
    return Checkpoint(config, state, "hf", file, _vocab_beside(folder), architecture_of(state), skipped, ignored,
                      config_path)


def save_hf(folder: str | Path, checkpoint: Checkpoint) -> Path:
    """Write a Hugging Face folder: config.json, model.safetensors, vocab.txt.

    With heads the names carry the `bert.` prefix (as BertForPreTraining saves them); an encoder alone
    is saved without it (as BertModel saves it). Tied tensors are not written, as transformers does.
    """
    folder = Path(folder)
    _check_portable(checkpoint, "Hugging Face's BertForSequenceClassification")
    table = {ours: hf for ours, _, hf in names.expand(checkpoint.config.num_hidden_layers)}
    has_heads = any(name.startswith(HEAD_PREFIXES) for name in checkpoint.state)
    tensors = {}
    for ours, tensor in checkpoint.state.items():
        if ours not in table:
            raise CheckpointError(f"{ours} has no Hugging Face equivalent")
        hf = table[ours]
        tensors[hf if has_heads else hf.removeprefix("bert.")] = tensor.contiguous()
    config = checkpoint.config.to_dict()
    del config["attention_implementation"]
    config.update(model_type="bert", architectures=[checkpoint.architecture])
    if "head.out.weight" in checkpoint.state:
        config["num_labels"] = checkpoint.state["head.out.weight"].shape[0]
    _write_common(folder, config, checkpoint.vocab_file, "config.json")
    atomic_save_safetensors(tensors, folder / "model.safetensors", {"format": "pt"})
    return folder


# ---------------------------------------------------------------------------------------------
# minibert folders


def _load_minibert(folder: Path, config_file: Path | None) -> Checkpoint:
    config, ignored, config_path = _read_config([config_file or folder / "config.json"])
    file = folder / "model.safetensors"
    metadata = _read_minibert_metadata(folder)
    expected = metadata.get("sha256", {}).get(file.name)
    if expected is not None:
        verify_sha256(file, str(expected), folder / MINIBERT_FILE)
    state = read_safetensors(file)
    architecture = metadata.get("architecture", architecture_of(state))
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"{folder / MINIBERT_FILE}: unknown architecture {architecture!r}")
    return Checkpoint(config, state, "minibert", file, _vocab_beside(folder), architecture, [], ignored, config_path)


def _read_minibert_metadata(folder: Path) -> dict:
    """minibert.json, or {} for folders written before it existed (nothing to verify then)."""
    path = folder / MINIBERT_FILE
    if not path.exists():
        return {}
    metadata = read_json_object(path, "minibert.json", CheckpointError)
    typed(MinibertMetadata, metadata, str(path), CheckpointError)
    return metadata


@dataclass
class MinibertMetadata:
    """minibert.json as save_minibert writes it, read back against these types."""

    architecture: str | None = None  # None: architecture_of(the weights), as before the key existed
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> its digest


def save_minibert(folder: str | Path, checkpoint: Checkpoint) -> Path:
    """Write minibert's folder: config.json, vocab.txt, model.safetensors (canonical names) and
    minibert.json (architecture and the weights' sha256)."""
    folder = Path(folder)
    _write_common(folder, checkpoint.config.to_dict(), checkpoint.vocab_file, "config.json")
    state = {name: tensor.contiguous() for name, tensor in checkpoint.state.items()}
    atomic_save_safetensors(state, folder / "model.safetensors", MINIBERT_METADATA)
    metadata = {"architecture": checkpoint.architecture,
                "sha256": {"model.safetensors": sha256_file(folder / "model.safetensors")}}
    atomic_write_text(folder / MINIBERT_FILE, json.dumps(metadata, indent=2) + "\n")
    return folder


SAVERS = {"minibert": save_minibert, "hf": save_hf, "tf": save_tf}


def save_checkpoint(folder: str | Path, checkpoint: Checkpoint, fmt: str = "minibert") -> Path:
    if fmt not in SAVERS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; choose from {', '.join(FORMATS)}")
    return SAVERS[fmt](folder, checkpoint)


# ---------------------------------------------------------------------------------------------
# Shared checks and atomic writes


def _check_portable(checkpoint: Checkpoint, target: str) -> None:
    if checkpoint.architecture not in PORTABLE_ARCHITECTURES:
        raise CheckpointError(f"{checkpoint.source}: this classifier's head ({checkpoint.architecture}) has no "
                              f"equivalent in {target}, which classifies the pooled last layer: "
                              "keep it as a minibert folder")


def _check_shapes(checkpoint: Checkpoint) -> None:
    """Every tensor whose shape the config fixes must have that shape; list all mismatches."""
    with torch.device("meta"):
        expected = BertForPreTraining(checkpoint.config).state_dict()
    problems = [f"{name}: {tuple(t.shape)} in file, config expects {tuple(expected[name].shape)}"
                for name, t in checkpoint.state.items()
                if name in expected and tuple(t.shape) != tuple(expected[name].shape)]
    if problems:
        raise CheckpointError(f"{checkpoint.source}: shapes do not match the config:\n  " + "\n  ".join(problems))


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's tensors under canonical names (a bare BertModel lives under `bert.`)."""
    prefix = "bert." if isinstance(model, BertModel) else ""
    return {prefix + name: tensor for name, tensor in model.state_dict().items()}


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Fill every parameter of `model` exactly once from canonical `state`.

    Returns the names in `state` that the model does not use (heads of another model). Raises
    CheckpointError listing every missing name, shape mismatch and unusable extra name otherwise.
    """
    prefix = "bert." if isinstance(model, BertModel) else ""
    expected = state_of(model)
    missing = [name for name in expected if name not in state]
    mismatched = [f"{name}: {tuple(state[name].shape)} in file, model has {tuple(t.shape)}"
                  for name, t in expected.items() if name in state and state[name].shape != t.shape]
    unused = [name for name in state if name not in expected]
    extra = [name for name in unused if not name.startswith(HEAD_PREFIXES)]
    if missing or mismatched or extra:
        parts = [f"{source}: cannot load into {type(model).__name__}"]
        parts += [f"missing: {', '.join(missing)}"] if missing else []
        parts += [f"shape mismatches: {'; '.join(mismatched)}"] if mismatched else []
        parts += [f"unexpected: {', '.join(extra)}"] if extra else []
        raise CheckpointError("\n  ".join(parts))
    model.load_state_dict({name[len(prefix):]: state[name] for name in expected}, strict=True)
    return unused


def unfilled(build, *args) -> torch.nn.Module:
    """`build(*args)` with uninitialised CPU memory for every tensor, for load_state to fill right
    after (it refuses to leave any tensor unfilled). Skips the random initialisation: about a second
    for MiniLM (truncated normal draws over 22M numbers), and the global random stream is not touched."""
    with torch.device("meta"):
        model = build(*args)
    return model.to_empty(device="cpu")


def load_pretrained(path: str | Path, model_class=BertModel, **config_overrides):
    """`model_class(config)` with every parameter loaded from any checkpoint (see load_state).

    model_class is BertModel (the encoder) or BertForPreTraining (with the MLM and NSP heads);
    config_overrides change config fields, e.g. hidden_act="gelu_tanh" or attention dropout.
    Config keys the file has but BertConfig does not know are reported with warnings.warn (the
    library does not print; load_checkpoint's Checkpoint.warnings gives them as strings).
    """
    checkpoint = load_checkpoint(path)
    for message in checkpoint.warnings:
        warnings.warn(message, stacklevel=2)
    try:
        config = dataclasses.replace(checkpoint.config, **config_overrides)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad config override: {e}") from None
    model = model_class(config)
    load_state(model, checkpoint.state, str(checkpoint.source))
    return model


def _write_common(folder: Path, config: dict, vocab_file: Path | None, config_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / config_name, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if vocab_file is not None and Path(vocab_file).resolve() != (folder / "vocab.txt").resolve():
        atomic_write_text(folder / "vocab.txt", Path(vocab_file).read_text(encoding="utf-8"))
