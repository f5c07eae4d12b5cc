"""Checks that weights files are intact and fit their vocabulary, before anything uses them.

safetensors has no checksum of its own: a flipped byte in a tensor's data loads silently. minibert
therefore records a sha256 per weights file (in a minibert folder's minibert.json, or in a
`<file>.sha256` sidecar in sha256sum's format, which read_safetensors checks when it is there) and
verifies it on load. Every failure is a CheckpointError that names the file.
"""

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from minibert.errors import CheckpointError
from minibert.files import atomic_write_text, sha256_file
from minibert.model.config import BertConfig

SIDECAR_SUFFIX = ".sha256"
# How many embedding rows a vocab.txt may leave unused. Google's releases have none: vocab.txt has
# exactly vocab_size lines for BERT-Base/Large uncased (30522) and cased (28996), multilingual
# (105879 uncased, 119547 cased) and Chinese (21128). Other trainers pad the embedding matrix to a
# multiple of 8, 64 or 128 rows so its matmuls fill GPU tensor cores (NVIDIA's BERT, Megatron's
# make-vocab-size-divisible-by=128): that leaves fewer than 128 unused rows. A larger gap means the
# vocabulary belongs to another model, whose ids would hit the wrong embeddings.
MAX_UNUSED_VOCAB_ROWS = 127


def sidecar_of(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sha256_sidecar(path: str | Path) -> Path:
    """Write `<path>.sha256` in sha256sum's format ("<hex>  <name>"), so `sha256sum -c` checks it too."""
    path = Path(path)
    sidecar = sidecar_of(path)
    atomic_write_text(sidecar, f"{sha256_file(path)}  {path.name}\n")
    return sidecar


def verify_sha256(path: str | Path, expected: str, recorded_in: str | Path) -> None:
    """Raise CheckpointError naming `path` when its sha256 is not `expected`."""
    if sha256_file(path) != expected.strip().lower():
        raise CheckpointError(f"{path}: sha256 differs from the one recorded in {recorded_in} when it was "
                              "saved: the file is corrupt (or was changed after saving)")


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU; CheckpointError naming the file when it is
    missing, truncated, not safetensors, or differs from its `.sha256` sidecar (when there is one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    sidecar = sidecar_of(path)
    if sidecar.is_file():
        try:
            expected = sidecar.read_text(encoding="utf-8").split()[0]
        except (OSError, UnicodeDecodeError, IndexError) as e:
            raise CheckpointError(f"{sidecar}: cannot read the recorded sha256 ({e})") from None
        verify_sha256(path, expected, sidecar)
    try:
        return load_file(path)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file: {e}") from None


def check_finite(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """A NaN or infinite weight would train or predict NaN silently: refuse it, naming the tensors."""
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN or inf) in {', '.join(bad)}")


def check_vocab(vocab: int | object, config: BertConfig, vocab_file: str | Path) -> list[str]:
    """Check that a vocabulary fits a model's embedding matrix; returns warnings for the caller to
    print, raises CheckpointError naming `vocab_file` when they cannot work together.

    `vocab` is the number of tokens, or a tokenizer (anything with a `vocab` mapping). A vocabulary
    larger than vocab_size produces ids past the embedding matrix (an IndexError mid-run); one much
    smaller than vocab_size (see MAX_UNUSED_VOCAB_ROWS) belongs to another model.
    """
    size = vocab if isinstance(vocab, int) else len(vocab.vocab)
    unused = config.vocab_size - size
    if unused < 0:
        raise CheckpointError(f"{vocab_file}: {size} tokens but the model's vocab_size is {config.vocab_size}: "
                              "ids past vocab_size have no embedding (wrong vocabulary for this model)")
    if unused > MAX_UNUSED_VOCAB_ROWS:
        raise CheckpointError(f"{vocab_file}: {size} tokens but the model's vocab_size is {config.vocab_size} "
                              f"({unused} embedding rows no token reaches; Google's releases have none and "
                              f"padded models fewer than {MAX_UNUSED_VOCAB_ROWS + 1}): wrong vocabulary for this model")
    if unused:
        return [f"{vocab_file}: {size} tokens for vocab_size {config.vocab_size}: embedding rows "
                f"{size}..{config.vocab_size - 1} are unreachable (padding rows are harmless)"]
    return []
