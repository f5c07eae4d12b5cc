"""The sorted key/value table format of TensorFlow checkpoint indexes (LevelDB's SSTable).

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

read_table and build_table handle whole files; the varint and masked-crc32c helpers are shared
with minibert.checkpoints.protobuf and the tensor code of minibert.checkpoints.tf_checkpoint.
"""

import struct

import crc32c

_MAGIC = 0xDB4775248B80FB57  # kTableMagicNumber (format.h)
_FOOTER_SIZE = 48
_TRAILER_SIZE = 5
# TensorFlow's table defaults (table_options.h), kept by BundleWriter except compression, which
# it turns off. With these the writer reproduces TensorFlow's .index files byte for byte.
TABLE_BLOCK_SIZE = 262144  # bytes of a data block before the next one starts
_RESTART_INTERVAL = 16


class Malformed(Exception):
    """Bytes that do not parse (a table here, a protobuf in minibert.checkpoints.protobuf); the public
    functions of tf_checkpoint and tfrecord add the file and the tensor or record."""


def mask_crc(crc: int) -> int:
    """TensorFlow's crc32c::Mask: rotate right by 15 bits and add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise Malformed("varint longer than 10 bytes")


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int]) -> bytes:
    """The contents of one block after checking it lies inside the file and its crc."""
    offset, size = handle
    end = offset + size
    if end + _TRAILER_SIZE > len(data) - _FOOTER_SIZE:
        raise Malformed(f"block at offset {offset} of {size} bytes runs past the end of the table")
    contents, compression = data[offset:end], data[end]
    (stored_crc,) = struct.unpack_from("<I", data, end + 1)
    if mask_crc(crc32c.crc32c(data[offset:end + 1])) != stored_crc:
        raise Malformed(f"crc mismatch in block at offset {offset}")
    if compression != 0:
        raise Malformed(f"block at offset {offset} is compressed (type {compression}), "
                         "which TensorFlow checkpoints never are")
    return contents


def _block_records(block: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of a block, undoing the shared-prefix compression."""
    if len(block) < 4:
        raise Malformed("block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    records_end = len(block) - 4 - 4 * num_restarts
    if records_end < 0:
        raise Malformed(f"block claims {num_restarts} restart points but has {len(block)} bytes")
    records, key, pos = [], b"", 0
    while pos < records_end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > records_end:
            raise Malformed(f"bad record at byte {pos} of a block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        records.append((key, block[pos:pos + value_len]))
        pos += value_len
    return records


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of a table file, in key order."""
    if len(data) < _FOOTER_SIZE:
        raise Malformed(f"{len(data)} bytes is shorter than the {_FOOTER_SIZE}-byte footer")
    footer = data[-_FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != _MAGIC:
        raise Malformed("bad magic number (file truncated, or not a TensorFlow checkpoint index)")
    _metaindex, pos = _read_handle(footer, 0)  # TensorFlow's reader ignores the metaindex too
    index_handle, _ = _read_handle(footer, pos)
    records = []
    for _separator, handle in _block_records(_read_block(data, index_handle)):
        records += _block_records(_read_block(data, _read_handle(handle, 0)[0]))
    if any(a[0] >= b[0] for a, b in zip(records, records[1:])):
        raise Malformed("keys are not in increasing order")
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
        self.buf += varint(shared) + varint(len(key) - shared) + varint(len(value))
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
    handle = varint(len(out)) + varint(len(contents))
    out += contents + b"\x00" + struct.pack("<I", mask_crc(crc32c.crc32c(contents + b"\x00")))
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


def build_table(records: list[tuple[bytes, bytes]], block_size: int = TABLE_BLOCK_SIZE) -> bytes:
    """The bytes of a table holding `records` (sorted by key), laid out as TableBuilder does: a data
    block ends once it holds `block_size` bytes or more (TensorFlow's default unless given)."""
    out, index = bytearray(), _BlockBuilder(restart_interval=1)
    block = _BlockBuilder(_RESTART_INTERVAL)
    pending = None  # (last key, handle) of a written block: indexed once the next key is known
    for key, value in records:
        if pending is not None:
            index.add(_shortest_separator(pending[0], key), pending[1])
            pending = None
        block.add(key, value)
        if block.size_estimate() >= block_size:
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
