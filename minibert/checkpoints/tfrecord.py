"""TFRecord files of tf.train.Example records, read and written without TensorFlow.

A TFRecord file is a sequence of records, each framed as (tensorflow/core/lib/io/record_writer.cc)

    uint64  length                      little-endian
    uint32  masked crc32c of length     (the 8 length bytes)
    byte    data[length]
    uint32  masked crc32c of data

with TensorFlow's crc mask (minibert.checkpoints.sstable.mask_crc). Google's
create_pretraining_data.py writes one tf.train.Example per record
(tensorflow/core/example/{example,feature}.proto):

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }     map entry: { string key = 1; Feature value = 2; }
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Every problem (bad crc, a record cut short, bytes that are not an Example) raises DataError naming
the file and the record number (1-based).
"""

import contextlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import crc32c

from minibert.checkpoints.protobuf import Malformed, bytes_field, packed_floats, packed_varints, parse_message, varint
from minibert.checkpoints.sstable import mask_crc
from minibert.errors import DataError
from minibert.files import atomic_file

_INT64_MASK = (1 << 64) - 1  # negative int64 values are written as 64-bit two's complement
_KINDS = {1: "bytes", 2: "float", 3: "int64"}  # Feature's oneof field numbers
_FIELD_OF_KIND = {kind: number for number, kind in _KINDS.items()}


class Feature(NamedTuple):
    """One tf.train.Feature: kind is "int64", "float" or "bytes"; values a list of int/float/bytes."""
    kind: str
    values: list


def int64_feature(values: Iterable[int]) -> Feature:
    """Google's create_int_feature."""
    return Feature("int64", [int(v) for v in values])


def float_feature(values: Iterable[float]) -> Feature:
    """Google's create_float_feature (stored as float32)."""
    return Feature("float", [float(v) for v in values])


def bytes_feature(values: Iterable[bytes]) -> Feature:
    return Feature("bytes", [bytes(v) for v in values])


# ---------------------------------------------------------------------------------------------
# tf.train.Example


def _encode_list(feature: Feature) -> bytes:
    """The XxxList message of a feature: packed scalars, or one bytes field per value."""
    if feature.kind == "int64":
        packed = b"".join(varint(v & _INT64_MASK) for v in feature.values)
    elif feature.kind == "float":
        packed = struct.pack(f"<{len(feature.values)}f", *feature.values)
    elif feature.kind == "bytes":
        return b"".join(bytes_field(1, v) for v in feature.values)
    else:
        raise ValueError(f"unknown feature kind {feature.kind!r}; use int64, float or bytes")
    # An empty packed list is not written, as protobuf omits empty repeated fields.
    return bytes_field(1, packed) if packed else b""


def encode_example(features: dict[str, Feature]) -> bytes:
    """Serialise {name: Feature} as a tf.train.Example, map entries in the dict's order."""
    entries = b"".join(
        bytes_field(1, bytes_field(1, name.encode("utf-8"))
                    + bytes_field(2, bytes_field(_FIELD_OF_KIND[feature.kind], _encode_list(feature))))
        for name, feature in features.items())
    return bytes_field(1, entries)


def _decode_feature(data: bytes) -> Feature:
    fields = parse_message(data)
    kinds = [number for number in fields if number in _KINDS]
    if len(kinds) != 1:
        raise Malformed(f"a Feature must hold exactly one of bytes_list, float_list, int64_list; found {len(kinds)}")
    kind = _KINDS[kinds[0]]
    inner = fields[kinds[0]][-1]
    if not isinstance(inner, bytes):
        raise Malformed(f"{kind}_list is not a message")
    values = parse_message(inner).get(1, [])
    if kind == "int64":
        return Feature(kind, packed_varints(values))
    if kind == "float":
        return Feature(kind, packed_floats(values))
    if not all(isinstance(v, bytes) for v in values):
        raise Malformed("bytes_list holds a non-bytes value")
    return Feature(kind, values)


def decode_example(data: bytes) -> dict[str, Feature]:
    """Parse a serialised tf.train.Example into {name: Feature}. Raises Malformed."""
    features = {}
    for container in parse_message(data).get(1, []):
        if not isinstance(container, bytes):
            raise Malformed("Example.features is not a message")
        for entry in parse_message(container).get(1, []):
            if not isinstance(entry, bytes):
                raise Malformed("a Features map entry is not a message")
            fields = parse_message(entry)
            key, value = fields.get(1, [b""])[-1], fields.get(2, [b""])[-1]
            if not isinstance(key, bytes) or not isinstance(value, bytes):
                raise Malformed("a Features map entry has a non-message key or value")
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise Malformed(f"feature name {key!r} is not UTF-8") from None
            features[name] = _decode_feature(value)  # a repeated key keeps the last, as protobuf maps do
    return features


# ---------------------------------------------------------------------------------------------
# Record framing


def frame_record(data: bytes) -> bytes:
    """One record with its length, crcs and data, as TensorFlow's RecordWriter writes it."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", mask_crc(crc32c.crc32c(length))) + data
            + struct.pack("<I", mask_crc(crc32c.crc32c(data))))


def read_records(path: str | Path) -> Iterator[bytes]:
    """The data of every record of a TFRecord file, in order, each crc-checked.

    The file is read as a stream, so it may be larger than memory. Raises DataError naming the
    file and the record number on a short read or a crc mismatch.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        number = 0
        while header := f.read(12):
            number += 1
            where = f"{path}: record {number}"
            if len(header) < 12:
                raise DataError(f"{where}: truncated ({len(header)} of 12 header bytes)")
            (length,), (length_crc,) = struct.unpack_from("<Q", header), struct.unpack_from("<I", header, 8)
            if mask_crc(crc32c.crc32c(header[:8])) != length_crc:
                raise DataError(f"{where}: crc mismatch in the length field (corrupt file, or not a TFRecord file)")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise DataError(f"{where}: truncated (the file ends inside a {length}-byte record)")
            if mask_crc(crc32c.crc32c(data)) != struct.unpack("<I", footer)[0]:
                raise DataError(f"{where}: crc mismatch in the data (corrupt file)")
            yield data


def read_examples(path: str | Path) -> Iterator[dict[str, Feature]]:
    """Every record of a TFRecord file parsed as a tf.train.Example (see decode_example)."""
    for number, data in enumerate(read_records(path), start=1):
        try:
            yield decode_example(data)
        except Malformed as e:
            raise DataError(f"{path}: record {number}: not a tf.train.Example: {e}") from None


@contextlib.contextmanager
def tfrecord_writers(paths: Sequence[str | Path]) -> Iterator[list]:
    """Open TFRecord files for writing; yields one `write(data)` function per path.

    Files are written under temporary names and all renamed into place only when the block ends
    without an exception, so a failed run leaves no partial output (see minibert.files).
    """
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(atomic_file(path, "wb")) for path in paths]
        yield [lambda data, f=f: f.write(frame_record(data)) for f in files]


def write_examples(path: str | Path, examples: Iterable[dict[str, Feature]]) -> int:
    """Write tf.train.Examples to one TFRecord file atomically; returns how many."""
    count = 0
    with tfrecord_writers([path]) as (write,):
        for example in examples:
            write(encode_example(example))
            count += 1
    return count
