"""TFRecord framing and tf.train.Example, against the TFRecord files Google's create_pretraining_data.py
wrote (tests/fixtures/pretraining_google, see its README) and by round trips."""

import json
import struct
from pathlib import Path

import pytest

from minibert.checkpoints.tfrecord import (Feature, bytes_feature, decode_example, encode_example, float_feature,
                                           frame_record, int64_feature, read_examples, read_records, write_examples)
from minibert.errors import DataError

from helpers import GOOGLE_FOLDERS, PRETRAINING, RECORDS


@pytest.mark.parametrize("folder", GOOGLE_FOLDERS)
def test_reads_googles_records_equal_to_their_decoded_json(folder):
    examples = list(read_examples(PRETRAINING / folder / "examples.tfrecord"))
    expected = [json.loads(line) for line in (PRETRAINING / folder / "features.jsonl").read_text().splitlines()]
    assert len(examples) == len(expected)
    for example, record in zip(examples, expected):
        assert {name: f.values for name, f in example.items()} == {
            name: value if isinstance(value, list) else [value] for name, value in record.items()}
        assert example["masked_lm_weights"].kind == "float" and example["input_ids"].kind == "int64"


def test_googles_records_survive_decode_and_encode(tmp_path):
    """minibert's writer -> Google-format reader gives the same features; the framing is TensorFlow's."""
    source = RECORDS
    examples = list(read_examples(source))
    assert write_examples(tmp_path / "copy.tfrecord", examples) == len(examples)
    assert list(read_examples(tmp_path / "copy.tfrecord")) == examples
    # Framing byte for byte: Google's records re-framed by minibert give Google's file.
    assert b"".join(frame_record(data) for data in read_records(source)) == source.read_bytes()


def test_every_feature_kind_round_trips(tmp_path):
    example = {"ints": int64_feature([0, 1, -1, 2**63 - 1, -2**63, 300]), "floats": float_feature([0.5, -2.0, 1e-3]),
               "bytes": bytes_feature([b"", b"abc", bytes(range(256))]), "empty": int64_feature([])}
    decoded = decode_example(encode_example(example))
    assert decoded["ints"] == example["ints"] and decoded["bytes"] == example["bytes"]
    assert decoded["floats"].values == pytest.approx([0.5, -2.0, 1e-3], rel=1e-7)  # stored as float32
    assert decoded["empty"] == Feature("int64", [])


def test_unpacked_repeated_ints_are_read():
    # Int64List with value written unpacked (field 1, wire type 0, one tag per value) is valid protobuf.
    int_list = b"\x08\x05\x08\x07"
    feature = b"\x1a" + bytes([len(int_list)]) + int_list
    entry = b"\x0a\x01x" + b"\x12" + bytes([len(feature)]) + feature
    features = b"\x0a" + bytes([len(entry)]) + entry
    assert decode_example(b"\x0a" + bytes([len(features)]) + features) == {"x": Feature("int64", [5, 7])}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def two_records():
    return [frame_record(encode_example({"a": int64_feature([i] * 5)})) for i in range(2)]


def test_bad_data_crc_names_file_and_record(tmp_path, two_records):
    second = bytearray(two_records[1])
    second[14] ^= 1  # a byte inside the data of record 2
    path = _write(tmp_path / "bad.tfrecord", two_records[0] + bytes(second))
    with pytest.raises(DataError, match=r"bad.tfrecord: record 2: crc mismatch in the data"):
        list(read_records(path))


def test_bad_length_crc(tmp_path, two_records):
    first = bytearray(two_records[0])
    first[9] ^= 0xFF
    path = _write(tmp_path / "bad.tfrecord", bytes(first))
    with pytest.raises(DataError, match=r"record 1: crc mismatch in the length"):
        list(read_records(path))


@pytest.mark.parametrize("cut", [3, 12, 20, -1])
def test_truncated_file_names_record(tmp_path, two_records, cut):
    data = two_records[0] + two_records[1]
    path = _write(tmp_path / "cut.tfrecord", data[: len(two_records[0]) + (cut % len(two_records[1]))])
    with pytest.raises(DataError, match=r"cut.tfrecord: record 2: truncated"):
        list(read_records(path))


def test_record_that_is_not_an_example(tmp_path):
    path = _write(tmp_path / "junk.tfrecord", frame_record(b"\x0a\x05ab"))
    with pytest.raises(DataError, match=r"junk.tfrecord: record 1: not a tf.train.Example"):
        list(read_examples(path))


def test_failed_write_leaves_nothing(tmp_path):
    def examples():
        yield {"a": int64_feature([1])}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_examples(tmp_path / "out.tfrecord", examples())
    assert list(tmp_path.iterdir()) == []


def test_length_is_little_endian_uint64(two_records):
    (length,) = struct.unpack_from("<Q", two_records[0])
    assert length == len(two_records[0]) - 16
