"""Tests of minibert.checkpoints.tf_checkpoint and minibert.checkpoints.sstable against a checkpoint
written by TensorFlow itself.

The fixture tests/fixtures/tiny_google/bert_model.ckpt was written by TensorFlow 2.15 (see the
README there). Reading it is checked against variables.txt and against a decode by hand of the
raw bytes; writing is checked by reproducing TensorFlow's files byte for byte. Corrupted copies
are made under tmp_path; the fixture is never modified.
"""

import shutil
import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.checkpoints import sstable, tf_checkpoint
from minibert.checkpoints.tf_checkpoint import list_tf_variables, read_tf_checkpoint, write_tf_checkpoint
from minibert.errors import CheckpointError

from helpers import TINY_GOOGLE

PREFIX = TINY_GOOGLE / "bert_model.ckpt"
DATA = TINY_GOOGLE / "bert_model.ckpt.data-00000-of-00001"
INDEX = TINY_GOOGLE / "bert_model.ckpt.index"

# Entries read by hand from `xxd bert_model.ckpt.index`: the bytes after the key are the
# BundleEntryProto fields offset (tag 0x20), size (0x28) and crc32c (0x35, fixed32), so the
# values below do not depend on the parser under test.
#   word_embeddings: 20 80 44 | 28 80 ba ee 01 | 35 eb 86 59 c2
#   output_weights:  20 f0 91 fb 01 | 28 80 02 | 35 47 a8 67 c4
HAND_DECODED = {
    "bert/embeddings/word_embeddings":
        (bytes.fromhex("208044 2880baee01 35eb8659c2"), 8704, (30522, 32), 0xC25986EB),
    "cls/seq_relationship/output_weights":
        (bytes.fromhex("20f091fb01 288002 3547a867c4"), 4114672, (2, 32), 0xC467A847),
}


@pytest.fixture(scope="module")
def fixture_tensors():
    return read_tf_checkpoint(PREFIX)


def copy_fixture(tmp_path: Path) -> Path:
    for path in (INDEX, DATA):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "bert_model.ckpt"


def masked_crc(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- reading TensorFlow's fixture ----------------------------------------------------------------

def test_fixture_names_and_shapes_match_variables_txt(fixture_tensors):
    expected = {}
    for line in (TINY_GOOGLE / "variables.txt").read_text().splitlines():
        name, shape = line.split("\t")
        expected[name] = tuple(int(d) for d in shape.strip("[]").split(","))
    assert list(fixture_tensors) == list(expected)  # same names, in sorted order
    assert {n: tuple(t.shape) for n, t in fixture_tensors.items()} == expected
    assert list_tf_variables(PREFIX) == {n: (torch.float32, s) for n, s in expected.items()}


def test_fixture_values_are_plausible(fixture_tensors):
    # The fixture's variables are seeded random values, not BERT's usual 0.02 initialisation:
    # kernels have std about 0.18, LayerNorm gammas are near 1 with std about 0.1.
    for name, tensor in fixture_tensors.items():
        assert torch.isfinite(tensor).all(), name
        assert tensor.std() > 0.03, name  # no constant (all zeros / all ones) tensor
        if name.endswith("kernel"):
            assert 0.15 < tensor.std() < 0.2, name
            assert abs(tensor.mean()) < 0.03, name
        if name.endswith("gamma"):
            assert abs(tensor.mean() - 1) < 0.05, name
    firsts = {tuple(t.flatten()[:2].tolist()) for t in fixture_tensors.values()}
    assert len(firsts) == len(fixture_tensors)  # every tensor holds its own values


@pytest.mark.parametrize("name", sorted(HAND_DECODED))
def test_fixture_matches_hand_decode_of_the_raw_bytes(fixture_tensors, name):
    entry_bytes, offset, shape, crc = HAND_DECODED[name]
    assert entry_bytes in INDEX.read_bytes()
    count = shape[0] * shape[1]
    raw = DATA.read_bytes()[offset:offset + 4 * count]
    assert masked_crc(raw) == crc
    by_struct = np.array(struct.unpack(f"<{count}f", raw), dtype=np.float32).reshape(shape)
    np.testing.assert_array_equal(fixture_tensors[name].numpy(), by_struct)


def test_returned_tensors_own_writable_memory(fixture_tensors):
    tensors = read_tf_checkpoint(PREFIX)
    for tensor in tensors.values():
        assert tensor.untyped_storage().nbytes() == tensor.nbytes  # not a view into a buffer
    tensors["bert/pooler/dense/bias"].mul_(2.0)  # writable, and no other tensor changes
    assert torch.equal(tensors["bert/pooler/dense/bias"],
                       2 * fixture_tensors["bert/pooler/dense/bias"])
    for name, tensor in tensors.items():
        if name != "bert/pooler/dense/bias":
            assert torch.equal(tensor, fixture_tensors[name])


def test_prefix_can_be_the_index_file_or_the_folder(fixture_tensors, tmp_path):
    for form in (INDEX, str(INDEX), TINY_GOOGLE, DATA):
        assert list_tf_variables(form) == list_tf_variables(PREFIX)
    shutil.copy(INDEX, tmp_path / "a.index")
    shutil.copy(INDEX, tmp_path / "b.index")
    with pytest.raises(CheckpointError, match="several TF checkpoints"):
        read_tf_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="nope.index"):
        read_tf_checkpoint(tmp_path / "nope")


# --- writing ----------------------------------------------------------------------------------

def test_writer_reproduces_tensorflows_files_byte_for_byte(fixture_tensors, tmp_path):
    write_tf_checkpoint(tmp_path / "bert_model.ckpt", fixture_tensors)
    assert (tmp_path / INDEX.name).read_bytes() == INDEX.read_bytes()
    assert (tmp_path / DATA.name).read_bytes() == DATA.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [DATA.name, INDEX.name]  # no temp files
    for name, tensor in read_tf_checkpoint(tmp_path / "bert_model.ckpt").items():
        assert torch.equal(tensor, fixture_tensors[name]), name


def test_index_with_many_blocks_reads_back(fixture_tensors, tmp_path):
    write_tf_checkpoint(tmp_path / "ckpt", fixture_tensors, num_shards=2)
    index = tmp_path / "ckpt.index"
    records = sstable.read_table(index.read_bytes())
    assert sstable.build_table(records) == index.read_bytes()  # the writer's table, TensorFlow's block size
    index.write_bytes(sstable.build_table(records, block_size=200))  # a few entries per data block
    data = index.read_bytes()
    footer = data[-48:]
    _metaindex, pos = sstable._read_handle(footer, 0)
    index_handle, _ = sstable._read_handle(footer, pos)
    index_block = sstable._read_block(data, index_handle)
    assert len(sstable._block_records(index_block)) >= 5  # one record per data block
    for name, tensor in read_tf_checkpoint(tmp_path / "ckpt").items():
        assert torch.equal(tensor, fixture_tensors[name]), name


def all_dtypes_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40, 3.5])
    return {
        "a/float32_3d": torch.randn(3, 5, 7, generator=g),
        "a/float32_scalar": torch.tensor(-2.25),
        "b/float16": torch.randn(11, generator=g).half(),
        "b/bfloat16_2d": torch.randn(4, 9, generator=g).bfloat16(),
        "c/int32_scalar": torch.tensor(-123456, dtype=torch.int32),
        "c/int32": torch.tensor([-(2**31), 2**31 - 1, 0, 5], dtype=torch.int32),
        "c/int64": torch.tensor([-(2**63), 2**63 - 1, 1], dtype=torch.int64),
        "d/empty_int64": torch.zeros(0, 3, dtype=torch.int64),
        "d/empty_bfloat16": torch.zeros(2, 0, dtype=torch.bfloat16),
        "e/specials": specials,
        "e/specials_half": specials.half(),
        "f/non_contiguous": torch.arange(12.0).reshape(3, 4).t(),
        "global_step": torch.tensor(100000, dtype=torch.int64),
        "ünïcode/名前": torch.ones(2),
    }


@pytest.mark.parametrize("num_shards", [1, 3])
def test_round_trip_of_all_dtypes_and_shapes(tmp_path, num_shards):
    tensors = all_dtypes_tensors()
    write_tf_checkpoint(tmp_path / "ckpt", tensors, num_shards=num_shards)
    shards = sorted(p.name for p in tmp_path.glob("ckpt.data-*"))
    assert shards == [f"ckpt.data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
    listed = list_tf_variables(tmp_path / "ckpt")
    back = read_tf_checkpoint(tmp_path / "ckpt")
    assert list(back) == list(listed) == sorted(tensors, key=str.encode)
    for name, tensor in tensors.items():
        assert listed[name] == (tensor.dtype, tuple(tensor.shape)), name
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        # Bitwise comparison, so NaN, -0.0 and denormals count.
        assert torch.equal(back[name].contiguous().view(-1).view(torch.uint8),
                           tensor.contiguous().view(-1).view(torch.uint8)), name


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=0, max_size=80, unique=True),
       st.sampled_from([1, 64, 512]))
def test_table_round_trip_with_any_keys_and_block_size(keys, block_size):
    # Random byte keys (shared prefixes, 0xff bytes) exercise prefix compression, restart
    # points, and the separators written into the index block.
    records = [(b"", b"header")] + [(k, k[::-1] * 3) for k in sorted(keys)]
    assert sstable.read_table(sstable.build_table(records, block_size)) == records


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_raise_only_malformed_on_garbage(garbage):
    # Arbitrary bytes (the block crc would stop most of these first) either parse or raise the
    # internal error that the public functions turn into CheckpointError; never anything else.
    fixture_entry = sstable.read_table(INDEX.read_bytes())[1][1]
    for parse, data in [(lambda b: tf_checkpoint._parse_entry(b, 1), garbage),
                        (lambda b: tf_checkpoint._parse_entry(b, 1), fixture_entry + garbage),
                        (tf_checkpoint._parse_header, garbage),
                        (sstable._block_records, garbage),
                        (sstable.read_table, garbage + INDEX.read_bytes()[-48:])]:
        try:
            parse(data)
        except sstable.Malformed:
            pass


def test_writer_refuses_unsupported_dtype_and_writes_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="'w'.*float64"):
        write_tf_checkpoint(tmp_path / "ckpt", {"v": torch.ones(2), "w": torch.ones(2).double()})
    assert list(tmp_path.iterdir()) == []


def test_writer_failure_leaves_no_files(tmp_path):
    """A failure in the middle of writing: the first shard is written, then the second one's tensor
    has no data to copy out (a meta tensor). Neither temporary file nor any final name is left."""
    tensors = {"a": torch.ones(2), "b": torch.ones(2, device="meta")}  # "a" to shard 0, "b" to shard 1
    with pytest.raises(NotImplementedError, match="meta tensor"):
        write_tf_checkpoint(tmp_path / "ckpt", tensors, num_shards=2)
    assert list(tmp_path.iterdir()) == []


# --- errors -----------------------------------------------------------------------------------

def test_flipped_byte_in_data_names_the_tensor(tmp_path):
    prefix = copy_fixture(tmp_path)
    data = bytearray(DATA.read_bytes())
    data[8704 + 1000] ^= 0x01  # inside word_embeddings
    (tmp_path / DATA.name).write_bytes(data)
    with pytest.raises(CheckpointError, match=r"crc32c mismatch .*word_embeddings.*data-00000"):
        read_tf_checkpoint(prefix)
    list_tf_variables(prefix)  # the index alone is still fine


def test_truncated_data_file_names_tensor_and_file(tmp_path):
    prefix = copy_fixture(tmp_path)
    (tmp_path / DATA.name).write_bytes(DATA.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001 is 4114828 bytes, too short "
                                              r"for tensor 'cls/seq_relationship/output_weights'"):
        read_tf_checkpoint(prefix)


@pytest.mark.parametrize("keep", [0, 20, 1000, 1906])
def test_truncated_index_names_the_file(tmp_path, keep):
    prefix = copy_fixture(tmp_path)
    (tmp_path / INDEX.name).write_bytes(INDEX.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match=r"bert_model.ckpt.index: corrupt or truncated"):
        list_tf_variables(prefix)


# Byte ranges in the fixture's index (from its footer): data block 0x000-0x71c, metaindex
# block 0x722-0x729, index block 0x72f-0x73d, each followed by a 5-byte trailer (type, crc);
# the footer starts at 0x743.
@pytest.mark.parametrize("position, message", [
    (0x050, "crc mismatch in block at offset 0"),  # data block contents
    (0x71D, "crc mismatch in block at offset 0"),  # data block compression type
    (0x720, "crc mismatch in block at offset 0"),  # data block crc
    (0x738, "crc mismatch in block at offset 1839"),  # index block contents
    (0x740, "crc mismatch in block at offset 1839"),  # index block crc
    (0x746, "runs past the end"),  # footer: index block handle
    (0x76F, "bad magic number"),  # footer: magic number
    (0x725, None),  # metaindex block, which TensorFlow's reader ignores too
])
def test_corrupted_index_names_the_file(tmp_path, position, message):
    prefix = copy_fixture(tmp_path)
    index = bytearray(INDEX.read_bytes())
    index[position] ^= 0x40
    (tmp_path / INDEX.name).write_bytes(index)
    if message is None:
        assert list_tf_variables(prefix) == list_tf_variables(PREFIX)
        return
    with pytest.raises(CheckpointError, match=rf"bert_model.ckpt.index: corrupt .*{message}"):
        read_tf_checkpoint(prefix)


def test_missing_shard_is_named(tmp_path):
    write_tf_checkpoint(tmp_path / "ckpt", all_dtypes_tensors(), num_shards=3)
    (tmp_path / "ckpt.data-00001-of-00003").unlink()
    assert len(list_tf_variables(tmp_path / "ckpt")) == len(all_dtypes_tensors())
    with pytest.raises(CheckpointError, match=r"missing data shard .*ckpt.data-00001-of-00003"):
        read_tf_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize("dtype_number, label", [(2, "DT_DOUBLE"), (7, "DT_STRING")])
def test_unsupported_dtype_names_tensor_and_number(tmp_path, dtype_number, label):
    # An index whose entry for 'odd' says the dtype under test: the BundleEntryProto's field 1 (tag
    # 0x08, first in the entry) rewritten from DT_FLOAT (1), and the table rebuilt around it.
    write_tf_checkpoint(tmp_path / "ckpt", {"ok": torch.ones(2), "odd": torch.ones(2)})
    index = tmp_path / "ckpt.index"
    records = dict(sstable.read_table(index.read_bytes()))
    assert records[b"odd"][:2] == b"\x08\x01"
    records[b"odd"] = bytes([0x08, dtype_number]) + records[b"odd"][2:]
    index.write_bytes(sstable.build_table(sorted(records.items())))
    for read in (list_tf_variables, read_tf_checkpoint):
        with pytest.raises(CheckpointError, match=rf"ckpt.index: tensor 'odd' has unsupported "
                                                  rf"dtype {dtype_number} \({label}\)"):
            read(tmp_path / "ckpt")


def test_partitioned_variable_is_refused(tmp_path):
    records = sstable.read_table(INDEX.read_bytes())
    key, value = records[5]
    records[5] = (key, value + b"\x3a\x00")  # an (empty) `slices` field, number 7
    (tmp_path / "p.index").write_bytes(sstable.build_table(records))
    with pytest.raises(CheckpointError, match=rf"tensor '{key.decode()}' is a partitioned"):
        list_tf_variables(tmp_path / "p")
