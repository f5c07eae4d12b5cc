"""Read and write TensorFlow checkpoints (the "TensorBundle" format) without TensorFlow.

A checkpoint with prefix P (e.g. `bert_model.ckpt`) is `P.index`, a sorted key/value table whose
key "" holds a BundleHeaderProto and whose other keys are variable names mapped to
BundleEntryProtos, and `P.data-00000-of-0000N`..., N shards of raw little-endian tensor bytes.

Table layout (tensorflow/core/lib/io/format.h, table_builder.cc; the same as LevelDB's SSTable):
    file    = data block*, metaindex block (empty), index block, 48-byte footer
    block   = record*, restart offsets (uint32 each), restart count (uint32), then a trailer:
              compression type (1 byte, 0 = none), masked crc32c of block + type byte (uint32)
    record  = varint shared, varint unshared, varint value_len, key[shared:], value
              (`shared` bytes are taken from the previous key; 0 at every restart point)
    footer  = metaindex and index BlockHandles (varint offset, varint size), zero-padded to
              40 bytes, then the magic number 0xdb4775248b80fb57 (little-endian)
The index block maps a separator key (>= every key of a data block, < every key of the next)
to the block's handle.

Protobufs (tensorflow/core/protobuf/tensor_bundle.proto), decoded by hand below:
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

from minibert.errors import CheckpointError

# DataType enum values from tensorflow/core/framework/types.proto.
_TF_TO_TORCH = {1: torch.float32, 3: torch.int32, 9: torch.int64, 14: torch.bfloat16,
                19: torch.float16}
_TORCH_TO_TF = {dtype: number for number, dtype in _TF_TO_TORCH.items()}
# Names of some other DataTypes, for error messages.
_OTHER_DTYPES = {2: "DT_DOUBLE", 4: "DT_UINT8", 6: "DT_INT8", 7: "DT_STRING", 10: "DT_BOOL",
                 20: "DT_RESOURCE", 21: "DT_VARIANT"}

_MAGIC = 0xDB4775248B80FB57  # kTableMagicNumber (format.h)
_FOOTER_SIZE = 48
_TRAILER_SIZE = 5
# TensorFlow's table defaults (table_options.h), kept by BundleWriter except compression, which
# it turns off. With these the writer reproduces TensorFlow's .index files byte for byte.
_TABLE_BLOCK_SIZE = 262144
_RESTART_INTERVAL = 16
_BUNDLE_VERSION = 1  # kTensorBundleVersion (tensor_bundle.h)


class _Malformed(Exception):
    """Internal: bytes that do not parse; the public functions add the file and tensor name."""


class _Entry(NamedTuple):
    """The fields of one BundleEntryProto that minibert uses."""
    dtype: int  # TensorFlow DataType number
    shape: tuple[int, ...]
    shard_id: int
    offset: int  # byte offset in the data shard
    size: int  # number of bytes
    crc: int  # masked crc32c of the bytes


def _mask_crc(crc: int) -> int:
    """TensorFlow's crc32c::Mask: rotate right by 15 bits and add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _signed(value: int) -> int:
    """Protobuf int32/int64 fields store negative numbers as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_message(buf: bytes) -> dict[int, list]:
    """Split a protobuf message into {field number: [values]}: varint and fixed-width fields
    become ints, length-delimited ones bytes. Unknown fields are skipped by their wire type."""
    if not isinstance(buf, bytes):
        raise _Malformed("a scalar field where a sub-message belongs")
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type in (1, 5):  # fixed64, fixed32
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire_type == 2:  # bytes or a sub-message
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        else:  # 3 and 4 are the deprecated groups, never used by these messages
            raise _Malformed(f"unexpected protobuf wire type {wire_type}")
        if pos > len(buf):
            raise _Malformed("truncated protobuf field")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields: dict[int, list], number: int, default=0):
    """Proto3 semantics: a missing field has its default; a repeated scalar keeps the last."""
    value = fields[number][-1] if number in fields else default
    if type(value) is not type(default):
        raise _Malformed(f"protobuf field {number} has the wrong wire type")
    return value


def _varint_field(number: int, value: int) -> bytes:
    # proto3 does not write scalar fields equal to their default 0.
    return _varint(number << 3) + _varint(value) if value else b""


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _parse_header(value: bytes) -> int:
    """Check a BundleHeaderProto; returns num_shards."""
    fields = _parse_message(value)
    num_shards = _signed(_last(fields, 1))
    if num_shards < 1:
        raise _Malformed(f"header has num_shards={num_shards}")
    if _last(fields, 2) != 0:
        raise _Malformed("tensor data is big-endian, this reader only handles little-endian")
    return num_shards


def _parse_entry(value: bytes, num_shards: int) -> _Entry:
    fields = _parse_message(value)
    if 7 in fields:
        raise _Malformed("is a partitioned variable (saved in slices), which is not supported")
    dtype = _last(fields, 1)
    if dtype not in _TF_TO_TORCH:
        name = _OTHER_DTYPES.get(dtype, "unknown")
        raise _Malformed(f"has unsupported dtype {dtype} ({name})")
    shape_fields = _parse_message(_last(fields, 2, b""))
    if _last(shape_fields, 3):
        raise _Malformed("has unknown rank")
    shape = tuple(_signed(_last(_parse_message(dim), 1)) for dim in shape_fields.get(2, []))
    if any(size < 0 for size in shape):
        raise _Malformed(f"has unknown dimensions in shape {list(shape)}")
    entry = _Entry(dtype, shape, _signed(_last(fields, 3)), _signed(_last(fields, 4)),
                   _signed(_last(fields, 5)), _last(fields, 6))
    if not 0 <= entry.shard_id < num_shards:
        raise _Malformed(f"points to shard {entry.shard_id} of a {num_shards}-shard checkpoint")
    expected = _TF_TO_TORCH[dtype].itemsize * math.prod(shape)
    if entry.size != expected or entry.offset < 0:
        raise _Malformed(f"has {entry.size} bytes at offset {entry.offset}, but shape "
                         f"{list(shape)} of {_TF_TO_TORCH[dtype]} needs {expected} bytes")
    return entry


def _encode_header(num_shards: int) -> bytes:
    # Endianness LITTLE is 0 and therefore not written, as TensorFlow does.
    return _varint_field(1, num_shards) + _bytes_field(3, _varint_field(1, _BUNDLE_VERSION))


def _encode_entry(entry: _Entry) -> bytes:
    # The shape is a set sub-message, so it is written even when empty (a scalar); a dimension
    # of size 0 is an empty Dim message.
    shape = b"".join(_bytes_field(2, _varint_field(1, size)) for size in entry.shape)
    crc = b"" if entry.crc == 0 else b"\x35" + struct.pack("<I", entry.crc)  # field 6, fixed32
    return (_varint_field(1, entry.dtype) + _bytes_field(2, shape)
            + _varint_field(3, entry.shard_id) + _varint_field(4, entry.offset)
            + _varint_field(5, entry.size) + crc)


def _read_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _read_varint(buf, pos)
    size, pos = _read_varint(buf, pos)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int]) -> bytes:
    """The contents of one block after checking it lies inside the file and its crc."""
    offset, size = handle
    end = offset + size
    if end + _TRAILER_SIZE > len(data) - _FOOTER_SIZE:
        raise _Malformed(f"block at offset {offset} of {size} bytes runs past the end of the table")
    contents, compression = data[offset:end], data[end]
    (stored_crc,) = struct.unpack_from("<I", data, end + 1)
    if _mask_crc(crc32c.crc32c(data[offset:end + 1])) != stored_crc:
        raise _Malformed(f"crc mismatch in block at offset {offset}")
    if compression != 0:
        raise _Malformed(f"block at offset {offset} is compressed (type {compression}), "
                         "which TensorFlow checkpoints never are")
    return contents


def _block_records(block: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of a block, undoing the shared-prefix compression."""
    if len(block) < 4:
        raise _Malformed("block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    records_end = len(block) - 4 - 4 * num_restarts
    if records_end < 0:
        raise _Malformed(f"block claims {num_restarts} restart points but has {len(block)} bytes")
    records, key, pos = [], b"", 0
    while pos < records_end:
        shared, pos = _read_varint(block, pos)
        unshared, pos = _read_varint(block, pos)
        value_len, pos = _read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > records_end:
            raise _Malformed(f"bad record at byte {pos} of a block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        records.append((key, block[pos:pos + value_len]))
        pos += value_len
    return records


def _read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of a table file, in key order."""
    if len(data) < _FOOTER_SIZE:
        raise _Malformed(f"{len(data)} bytes is shorter than the {_FOOTER_SIZE}-byte footer")
    footer = data[-_FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != _MAGIC:
        raise _Malformed("bad magic number (file truncated, or not a TensorFlow checkpoint index)")
    _metaindex, pos = _read_handle(footer, 0)  # TensorFlow's reader ignores the metaindex too
    index_handle, _ = _read_handle(footer, pos)
    records = []
    for _separator, handle in _block_records(_read_block(data, index_handle)):
        records += _block_records(_read_block(data, _read_handle(handle, 0)[0]))
    if any(a[0] >= b[0] for a, b in zip(records, records[1:])):
        raise _Malformed("keys are not in increasing order")
    return records


class _BlockBuilder:
    """Accumulates records, in key order, into one block with shared-prefix compression."""

    def __init__(self, restart_interval: int):
        self.restart_interval = restart_interval
        self.buf = bytearray()
        self.restarts = [0]
        self.count_since_restart = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count_since_restart < self.restart_interval:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:  # a restart point stores its key in full
            self.restarts.append(len(self.buf))
            self.count_since_restart = 0
        self.buf += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        self.buf += key[shared:] + value
        self.last_key = key
        self.count_since_restart += 1

    def size_estimate(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buf) + struct.pack(f"<{len(self.restarts) + 1}I", *self.restarts,
                                             len(self.restarts))


def _append_block(out: bytearray, contents: bytes) -> bytes:
    """Append a block and its trailer (no compression) to `out`; returns its encoded handle."""
    handle = _varint(len(out)) + _varint(len(contents))
    out += contents + b"\x00" + struct.pack("<I", _mask_crc(crc32c.crc32c(contents + b"\x00")))
    return handle


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (TableBuilder's FindShortestSeparator)."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= `key` (FindShortSuccessor): increment the first byte that is not 0xff."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _build_table(records: list[tuple[bytes, bytes]]) -> bytes:
    """The bytes of a table holding `records` (sorted by key), laid out as TableBuilder does."""
    out, index = bytearray(), _BlockBuilder(restart_interval=1)
    block = _BlockBuilder(_RESTART_INTERVAL)
    pending = None  # (last key, handle) of a written block: indexed once the next key is known
    for key, value in records:
        if pending is not None:
            index.add(_shortest_separator(pending[0], key), pending[1])
            pending = None
        block.add(key, value)
        if block.size_estimate() >= _TABLE_BLOCK_SIZE:
            pending = (key, _append_block(out, block.finish()))
            block = _BlockBuilder(_RESTART_INTERVAL)
    if block.buf:
        pending = (block.last_key, _append_block(out, block.finish()))
    if pending is not None:
        index.add(_short_successor(pending[0]), pending[1])
    metaindex_handle = _append_block(out, _BlockBuilder(_RESTART_INTERVAL).finish())
    index_handle = _append_block(out, index.finish())
    out += (metaindex_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", _MAGIC)
    return bytes(out)


def _resolve_prefix(path: str | Path) -> Path:
    """Accept a prefix, its .index or .data-* file, or a folder holding exactly one *.index."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.index"))
        if len(found) != 1:
            raise CheckpointError(f"{path}: expected exactly one *.index file in the folder, "
                                  f"found {[p.name for p in found]}")
        path = found[0]
    if path.name.endswith(".index"):
        return path.with_name(path.name[: -len(".index")])
    match = re.fullmatch(r"(.+)\.data-\d{5}-of-\d{5}", path.name)
    return path.with_name(match.group(1)) if match else path


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
        records = _read_table(data)
        if not records or records[0][0] != b"":
            raise _Malformed("no header entry (empty key)")
        num_shards = _parse_header(records[0][1])
    except _Malformed as err:
        raise CheckpointError(f"{path}: corrupt or truncated index: {err}") from None
    entries = {}
    for key, value in records[1:]:
        name = key.decode("utf-8", errors="backslashreplace")
        try:
            if key.startswith(b"\x00"):  # slice keys of partitioned variables start with 0x00
                raise _Malformed("is a slice of a partitioned variable, which is not supported")
            entries[name] = _parse_entry(value, num_shards)
        except _Malformed as err:
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
            if _mask_crc(crc32c.crc32c(raw.numpy())) != e.crc:
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
                                   raw.nbytes, _mask_crc(crc32c.crc32c(raw)))
                    records.append((name.encode("utf-8"), _encode_entry(entry)))
                    offset += raw.nbytes
        records = [(b"", _encode_header(num_shards))] + sorted(records)
        with _temp_file(Path(f"{prefix}.index"), temp_to_final) as f:
            f.write(_build_table(records))
        for temp, final in temp_to_final.items():  # dict order: data shards first, index last
            os.replace(temp, final)
    finally:
        for temp in temp_to_final:
            temp.unlink(missing_ok=True)


@contextlib.contextmanager
def _temp_file(final: Path, temp_to_final: dict[Path, Path]):
    """A temporary file next to `final`, recorded in `temp_to_final`, fsynced on close."""
    temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    temp_to_final[temp] = final
    with open(temp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
