"""Read and write TensorFlow checkpoints (the "TensorBundle" format) without TensorFlow.

A checkpoint with prefix P (e.g. `bert_model.ckpt`) is `P.index`, a sorted key/value table
(LevelDB's SSTable, read and written by minibert.checkpoints.sstable) whose key "" holds a BundleHeaderProto
and whose other keys are variable names mapped to BundleEntryProtos, and
`P.data-00000-of-0000N`..., N shards of raw little-endian tensor bytes.

Protobufs (tensorflow/core/protobuf/tensor_bundle.proto), decoded by hand below
(with minibert.checkpoints.protobuf):
    BundleHeaderProto { int32 num_shards = 1; Endianness endianness = 2; VersionDef version = 3; }
    BundleEntryProto  { DataType dtype = 1; TensorShapeProto shape = 2; int32 shard_id = 3;
                        int64 offset = 4; int64 size = 5; fixed32 crc32c = 6;
                        repeated TensorSliceProto slices = 7; }
    TensorShapeProto  { repeated Dim dim = 2; bool unknown_rank = 3; }  Dim { int64 size = 1; }
Tensor bytes are assumed to be in this machine's (little-endian) byte order.
"""

import contextlib
import math
import os
import re
import struct
from pathlib import Path
from typing import NamedTuple

import crc32c
import torch

from minibert.checkpoints.protobuf import bytes_field, last, parse_message, signed, varint_field
from minibert.checkpoints.sstable import Malformed, build_table, mask_crc, read_table
from minibert.errors import CheckpointError
from minibert.files import commit, temp_path

# DataType enum values from tensorflow/core/framework/types.proto.
_TF_TO_TORCH = {1: torch.float32, 3: torch.int32, 9: torch.int64, 14: torch.bfloat16,
                19: torch.float16}
_TORCH_TO_TF = {dtype: number for number, dtype in _TF_TO_TORCH.items()}
# Names of some other DataTypes, for error messages.
_OTHER_DTYPES = {2: "DT_DOUBLE", 4: "DT_UINT8", 6: "DT_INT8", 7: "DT_STRING", 10: "DT_BOOL",
                 20: "DT_RESOURCE", 21: "DT_VARIANT"}

_BUNDLE_VERSION = 1  # kTensorBundleVersion (tensor_bundle.h)


class _Entry(NamedTuple):
    """The fields of one BundleEntryProto that minibert uses."""
    dtype: int  # TensorFlow DataType number
    shape: tuple[int, ...]
    shard_id: int
    offset: int  # byte offset in the data shard
    size: int  # number of bytes
    crc: int  # masked crc32c of the bytes


def _parse_header(value: bytes) -> int:
    """Check a BundleHeaderProto; returns num_shards."""
    fields = parse_message(value)
    num_shards = signed(last(fields, 1))
    if num_shards < 1:
        raise Malformed(f"header has num_shards={num_shards}")
    if last(fields, 2) != 0:
        raise Malformed("tensor data is big-endian, this reader only handles little-endian")
    return num_shards


def _parse_entry(value: bytes, num_shards: int) -> _Entry:
    fields = parse_message(value)
    if 7 in fields:
        raise Malformed("is a partitioned variable (saved in slices), which is not supported")
    dtype = last(fields, 1)
    if dtype not in _TF_TO_TORCH:
        name = _OTHER_DTYPES.get(dtype, "unknown")
        raise Malformed(f"has unsupported dtype {dtype} ({name})")
    shape_fields = parse_message(last(fields, 2, b""))
    if last(shape_fields, 3):
        raise Malformed("has unknown rank")
    shape = tuple(signed(last(parse_message(dim), 1)) for dim in shape_fields.get(2, []))
    if any(size < 0 for size in shape):
        raise Malformed(f"has unknown dimensions in shape {list(shape)}")
    entry = _Entry(dtype, shape, signed(last(fields, 3)), signed(last(fields, 4)),
                   signed(last(fields, 5)), last(fields, 6))
    if not 0 <= entry.shard_id < num_shards:
        raise Malformed(f"points to shard {entry.shard_id} of a {num_shards}-shard checkpoint")
    expected = _TF_TO_TORCH[dtype].itemsize * math.prod(shape)
    if entry.size != expected or entry.offset < 0:
        raise Malformed(f"has {entry.size} bytes at offset {entry.offset}, but shape "
                         f"{list(shape)} of {_TF_TO_TORCH[dtype]} needs {expected} bytes")
    return entry


def _encode_header(num_shards: int) -> bytes:
    # Endianness LITTLE is 0 and therefore not written, as TensorFlow does.
    return varint_field(1, num_shards) + bytes_field(3, varint_field(1, _BUNDLE_VERSION))


def _encode_entry(entry: _Entry) -> bytes:
    # The shape is a set sub-message, so it is written even when empty (a scalar); a dimension
    # of size 0 is an empty Dim message.
    shape = b"".join(bytes_field(2, varint_field(1, size)) for size in entry.shape)
    crc = b"" if entry.crc == 0 else b"\x35" + struct.pack("<I", entry.crc)  # field 6, fixed32
    return (varint_field(1, entry.dtype) + bytes_field(2, shape)
            + varint_field(3, entry.shard_id) + varint_field(4, entry.offset)
            + varint_field(5, entry.size) + crc)


def find_tf_prefix(path: str | Path) -> Path | None:
    """The checkpoint prefix a path names, or None if it names no TF checkpoint.

    Accepts a prefix (`bert_model.ckpt`), its .index or .data-* file, or a folder holding one
    *.index file; in a training folder with several, TF's `checkpoint` state file names the latest
    (model_checkpoint_path: "..."), and without it the choice is an error.
    """
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        if not indexes:
            return None
        state_file = path / "checkpoint"
        if state_file.is_file():
            for line in state_file.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    return path / line.split(":", 1)[1].strip().strip('"')
        raise CheckpointError(f"{path}: several TF checkpoints ({', '.join(p.name for p in indexes)}); "
                              "name one by its prefix")
    if path.name.endswith(".index") and path.is_file():
        return path.with_name(path.name[: -len(".index")])
    match = re.fullmatch(r"(.+)\.data-\d{5}-of-\d{5}", path.name)
    if match and path.is_file():
        return path.with_name(match.group(1))
    return path if Path(f"{path}.index").is_file() else None


def _resolve_prefix(path: str | Path) -> Path:
    prefix = find_tf_prefix(path)
    if prefix is None:
        raise CheckpointError(f"{path}: no TF checkpoint: no {Path(path).name}.index beside it, and not a "
                              "folder holding one *.index file")
    return prefix


def _shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def _read_index(prefix: Path) -> tuple[int, dict[str, _Entry]]:
    """Parse `prefix.index`; returns (num_shards, {name: entry}) in name order."""
    path = Path(f"{prefix}.index")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint index {path}: {err.strerror}") from None
    try:
        records = read_table(data)
        if not records or records[0][0] != b"":
            raise Malformed("no header entry (empty key)")
        num_shards = _parse_header(records[0][1])
    except Malformed as err:
        raise CheckpointError(f"{path}: corrupt or truncated index: {err}") from None
    entries = {}
    for key, value in records[1:]:
        name = key.decode("utf-8", errors="backslashreplace")
        try:
            if key.startswith(b"\x00"):  # slice keys of partitioned variables start with 0x00
                raise Malformed("is a slice of a partitioned variable, which is not supported")
            entries[name] = _parse_entry(value, num_shards)
        except Malformed as err:
            raise CheckpointError(f"{path}: tensor {name!r} {err}") from None
    return num_shards, entries


def list_tf_variables(prefix: str | Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """{TF variable name: (torch dtype, shape)} in name order, read from the .index file only."""
    _, entries = _read_index(_resolve_prefix(prefix))
    return {name: (_TF_TO_TORCH[e.dtype], e.shape) for name, e in entries.items()}


def _read_shard(path: Path, entries: dict[str, _Entry]) -> dict[str, torch.Tensor]:
    """Read and crc-check the tensors `entries` places in one data shard."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"missing data shard {path}") from None
    with f:
        file_size = os.fstat(f.fileno()).st_size
        tensors = {}
        # Entries in offset order, so the file is read front to back.
        for name, e in sorted(entries.items(), key=lambda item: item[1].offset):
            if e.offset + e.size > file_size:
                raise CheckpointError(f"data shard {path} is {file_size} bytes, too short for "
                                      f"tensor {name!r} at bytes {e.offset}..{e.offset + e.size}")
            # Read straight into a fresh tensor: it owns (aligned, writable) memory and the
            # shard never has to sit in memory twice.
            raw = torch.empty(e.size, dtype=torch.uint8)
            f.seek(e.offset)
            f.readinto(raw.numpy())
            if mask_crc(crc32c.crc32c(raw.numpy())) != e.crc:
                raise CheckpointError(f"crc32c mismatch for tensor {name!r} in {path} "
                                      "(the data shard is corrupt)")
            tensors[name] = raw.view(_TF_TO_TORCH[e.dtype]).reshape(e.shape)
    return tensors


def read_tf_checkpoint(prefix: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a TensorFlow checkpoint, {TF variable name: tensor} in name order.

    `prefix` is the checkpoint prefix (`.../bert_model.ckpt`), its .index file, or a folder with
    exactly one *.index file. Tensors keep their stored dtype (float32, float16, bfloat16,
    int32 or int64) and shape, live on the CPU and own their memory. Every tensor's crc32c and
    every index block's crc32c is checked; any problem raises CheckpointError.
    """
    prefix = _resolve_prefix(prefix)
    num_shards, entries = _read_index(prefix)
    tensors: dict[str, torch.Tensor] = {}
    for shard in range(num_shards):
        in_shard = {name: e for name, e in entries.items() if e.shard_id == shard}
        if in_shard:
            tensors.update(_read_shard(_shard_path(prefix, shard, num_shards), in_shard))
    return {name: tensors[name] for name in entries}


def write_tf_checkpoint(prefix: str | Path, tensors: dict[str, torch.Tensor],
                        num_shards: int = 1) -> None:
    """Write `tensors` as `prefix.index` and `prefix.data-NNNNN-of-MMMMM` files.

    The files are what TensorFlow's BundleWriter produces (sorted keys, header entry, masked
    crc32c of every tensor and block, no compression, tensor bytes in name order). Tensor i in
    name order goes to shard i % num_shards. Each file is written under a temporary name in the
    same folder and renamed into place at the end, the index last.
    """
    prefix = Path(prefix)
    if num_shards < 1:
        raise CheckpointError(f"writing {prefix}: num_shards must be >= 1, got {num_shards}")
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"writing {prefix}: {name!r} is not a non-empty name mapped "
                                  "to a tensor")
        if tensor.dtype not in _TORCH_TO_TF:
            raise CheckpointError(f"writing {prefix}: tensor {name!r} has dtype {tensor.dtype}; "
                                  f"supported: {sorted(map(str, _TORCH_TO_TF))}")
    names = sorted(tensors, key=lambda name: name.encode("utf-8"))  # the table's byte order
    prefix.parent.mkdir(parents=True, exist_ok=True)
    temp_to_final: dict[Path, Path] = {}
    try:
        records = []
        for shard in range(num_shards):
            with _temp_file(_shard_path(prefix, shard, num_shards), temp_to_final) as f:
                offset = 0
                for name in names[shard::num_shards]:
                    tensor = tensors[name].detach().cpu().contiguous()
                    raw = tensor.reshape(-1).view(torch.uint8).numpy()
                    f.write(raw)
                    entry = _Entry(_TORCH_TO_TF[tensor.dtype], tuple(tensor.shape), shard, offset,
                                   raw.nbytes, mask_crc(crc32c.crc32c(raw)))
                    records.append((name.encode("utf-8"), _encode_entry(entry)))
                    offset += raw.nbytes
        records = [(b"", _encode_header(num_shards))] + sorted(records)
        with _temp_file(Path(f"{prefix}.index"), temp_to_final) as f:
            f.write(build_table(records))
        for temp, final in temp_to_final.items():  # dict order: data shards first, index last
            commit(temp, final)
    finally:
        for temp in temp_to_final:
            temp.unlink(missing_ok=True)


@contextlib.contextmanager
def _temp_file(final: Path, temp_to_final: dict[Path, Path]):
    """A temporary file next to `final`, recorded in `temp_to_final` for files.commit."""
    temp = temp_path(final)
    temp_to_final[temp] = final
    with open(temp, "wb") as f:
        yield f
