"""The few protobuf wire-format pieces minibert needs, decoded and encoded by hand (no protobuf package).

A message is a sequence of (tag, value) pairs; tag = field number << 3 | wire type. Wire types:
0 varint, 1 fixed64, 2 length-delimited (bytes, strings, sub-messages, packed repeated scalars),
5 fixed32. Used by the TF checkpoint index (minibert.checkpoints.tf_checkpoint) and by
tf.train.Example records (minibert.checkpoints.tfrecord). Errors are `Malformed`; the callers add
the file and record.
"""

import struct

from minibert.checkpoints.sstable import Malformed, read_varint, varint

__all__ = ["Malformed", "bytes_field", "last", "packed_floats", "packed_varints", "parse_message", "signed",
           "varint_field", "read_varint", "varint"]


def signed(value: int) -> int:
    """Protobuf int32/int64 fields store negative numbers as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_message(buf: bytes) -> dict[int, list]:
    """Split a protobuf message into {field number: [values]}: varint and fixed-width fields
    become ints, length-delimited ones bytes. Unknown fields are skipped by their wire type."""
    if not isinstance(buf, bytes):
        raise Malformed("a scalar field where a sub-message belongs")
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type in (1, 5):  # fixed64, fixed32
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire_type == 2:  # bytes or a sub-message
            length, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        else:  # 3 and 4 are the deprecated groups, never used by these messages
            raise Malformed(f"unexpected protobuf wire type {wire_type}")
        if pos > len(buf):
            raise Malformed("truncated protobuf field")
        fields.setdefault(number, []).append(value)
    return fields


def last(fields: dict[int, list], number: int, default=0):
    """Proto3 semantics: a missing field has its default; a repeated scalar keeps the last."""
    value = fields[number][-1] if number in fields else default
    if type(value) is not type(default):
        raise Malformed(f"protobuf field {number} has the wrong wire type")
    return value


def packed_varints(values: list) -> list[int]:
    """The values of a repeated int64 field, packed (one bytes value) or not (ints), in order,
    as signed 64-bit integers. Parsers must accept both encodings (protobuf encoding guide)."""
    out = []
    for value in values:
        if isinstance(value, int):
            out.append(signed(value))
            continue
        pos = 0
        while pos < len(value):
            number, pos = read_varint(value, pos)
            out.append(signed(number))
    return out


def packed_floats(values: list) -> list[float]:
    """The values of a repeated float field (fixed32), packed or not, as Python floats."""
    out = []
    for value in values:
        if isinstance(value, int):  # one unpacked fixed32
            out.append(struct.unpack("<f", value.to_bytes(4, "little"))[0])
        elif len(value) % 4:
            raise Malformed(f"packed float field of {len(value)} bytes, not a multiple of 4")
        else:
            out.extend(struct.unpack(f"<{len(value) // 4}f", value))
    return out


def varint_field(number: int, value: int) -> bytes:
    # proto3 does not write scalar fields equal to their default 0.
    return varint(number << 3) + varint(value) if value else b""


def bytes_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload
