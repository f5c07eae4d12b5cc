"""Pre-training records: instances -> Google's features, written as TFRecord or minibert's own format.

The seven features are those of Google's write_instance_to_example_files (and the inputs of
run_pretraining.py), for N records, T = max_seq_length, P = max_predictions_per_seq:

    input_ids            (N, T) int   token ids after masking, zero-padded
    input_mask           (N, T) int   1 for tokens, 0 for padding
    segment_ids          (N, T) int   0 for [CLS] A [SEP], 1 for B [SEP], 0 for padding
    masked_lm_positions  (N, P) int   positions of the predictions, zero-padded
    masked_lm_ids        (N, P) int   the original ids there, zero-padded
    masked_lm_weights    (N, P) float 1.0 for real predictions, 0.0 for padding
    next_sentence_labels (N,)   int   1 = B is random, 0 = B follows A

An output path ending in ".tfrecord" gets Google's TFRecord of tf.train.Example (run_pretraining.py
reads it) and FILE.manifest.json beside it; any other path is a folder in minibert's format: one
.npy array per feature, read back memory-mapped (no parsing, so a file larger than memory trains at
full speed), and manifest.json. A manifest records how the records were made, and whether they are
sentence pairs for NSP or single segments for masked LM only ("next_sentence").
"""

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from minibert.checkpoints.tfrecord import encode_example, float_feature, int64_feature, read_examples, tfrecord_writers
from minibert.data.pretraining_instances import Instance
from minibert.errors import DataError
from minibert.files import atomic_file, atomic_write_text, read_json_object, replace_folder
from minibert.schema import typed

# Google's feature names in write_instance_to_example_files' order, with minibert's storage dtype.
FEATURES = {
    "input_ids": np.int32,
    "input_mask": np.int8,
    "segment_ids": np.int8,
    "masked_lm_positions": np.int32,
    "masked_lm_ids": np.int32,
    "masked_lm_weights": np.float32,
    "next_sentence_labels": np.int8,
}
NATIVE_FORMAT = "minibert-pretraining-records"
NATIVE_VERSION = 1


def is_tfrecord(path: str | Path) -> bool:
    return str(path).endswith(".tfrecord")


@dataclass
class Records:
    """The seven feature arrays of N records (numpy, possibly memory-mapped), and where they came from."""
    arrays: dict[str, np.ndarray]
    source: str
    # Sentence pairs with next-sentence labels (Google's), or single segments for masked LM only
    # (create_data --next_sentence=false), as the manifest says; Google's files have no manifest: pairs.
    next_sentence: bool = True
    manifest: dict = field(default_factory=dict)  # what create_data recorded ({} for Google's files)

    def __len__(self) -> int:
        return len(self.arrays["next_sentence_labels"])


def instance_arrays(instances: Sequence[Instance], max_seq_length: int, max_predictions: int) -> Records:
    """The padded feature arrays of `instances` (write_instance_to_example_files' padding)."""
    n = len(instances)
    arrays = {name: np.zeros((n, max_predictions if name.startswith("masked_lm") else max_seq_length), dtype)
              for name, dtype in FEATURES.items() if name != "next_sentence_labels"}
    arrays["next_sentence_labels"] = np.zeros(n, FEATURES["next_sentence_labels"])
    for row, instance in enumerate(instances):
        length, count = len(instance.tokens), len(instance.masked_positions)
        if length > max_seq_length or count > max_predictions:
            raise DataError(f"instance {row + 1} has {length} tokens and {count} predictions, more than "
                            f"max_seq_length={max_seq_length} / max_predictions_per_seq={max_predictions}")
        arrays["input_ids"][row, :length] = instance.tokens
        arrays["input_mask"][row, :length] = 1
        arrays["segment_ids"][row, instance.a_length:length] = 1
        arrays["masked_lm_positions"][row, :count] = instance.masked_positions
        arrays["masked_lm_ids"][row, :count] = instance.masked_labels
        arrays["masked_lm_weights"][row, :count] = 1.0
        arrays["next_sentence_labels"][row] = int(instance.is_random_next)
    return Records(arrays, "<instances>")


def _example_of(records: Records, row: int) -> dict:
    values = {name: array[row] for name, array in records.arrays.items()}
    example = {name: int64_feature(np.atleast_1d(values[name]).tolist()) for name in FEATURES}
    example["masked_lm_weights"] = float_feature(values["masked_lm_weights"].tolist())
    return example


CHUNK = 4096  # records padded at a time while writing


def write_records(paths: Sequence[str | Path], instances: Sequence[Instance], max_seq_length: int,
                  max_predictions: int, manifest: dict, chunk_size: int = CHUNK) -> list[int]:
    """Write instances round-robin over `paths` (record i to paths[i % len(paths)], as Google's
    write_instance_to_example_files); returns the count per path.

    Records are padded and written `chunk_size` at a time, so the padded copy of all instances is
    never in memory (the files are the same for any chunk size). Every path is written under a
    temporary name and renamed at the end, so an error leaves no partial output. A records folder
    holds `manifest` in its manifest.json; a TFRecord file gets it beside it, in FILE.manifest.json
    (Google's TFRecord has no room for it), with the counts and shapes added.
    `manifest["next_sentence"]` says whether the records are sentence pairs.
    """
    paths = [Path(p) for p in paths]
    kinds = {is_tfrecord(p) for p in paths}
    if len(kinds) != 1:
        raise DataError("output files must all end in .tfrecord or none of them")
    n, m = len(instances), len(paths)
    counts = [len(range(k, n, m)) for k in range(m)]
    shapes = {"max_seq_length": max_seq_length, "max_predictions_per_seq": max_predictions}
    if kinds == {True}:
        with tfrecord_writers(paths) as writers:
            for start in range(0, n, chunk_size):
                chunk = instance_arrays([instances[i] for i in range(start, min(n, start + chunk_size))],
                                        max_seq_length, max_predictions)
                for row in range(len(chunk)):
                    writers[(start + row) % m](encode_example(_example_of(chunk, row)))
        for path, count in zip(paths, counts):
            info = {"format": "tfrecord", "records": count, **shapes, **manifest}
            atomic_write_text(manifest_of(path), json.dumps(info, indent=2) + "\n")
        return counts
    for k, path in enumerate(paths):
        rows = range(k, n, m)
        replace_folder(path, lambda folder, rows=rows: _fill_native(folder, instances, rows, shapes, manifest,
                                                                    chunk_size))
    return counts


def manifest_of(tfrecord: Path) -> Path:
    """Where a TFRecord file's manifest is: beside it, FILE.manifest.json."""
    return tfrecord.with_name(tfrecord.name + ".manifest.json")


def _fill_native(folder: Path, instances: Sequence[Instance], rows: range, shapes: dict, manifest: dict,
                 chunk_size: int) -> None:
    """The records `rows` of `instances` as .npy files in `folder` (the temporary folder that
    replace_folder renames into place): each file's header first (the row count is known), then
    its rows appended `chunk_size` at a time. Plain writes, not a memory map: the written pages are not
    part of the process's memory."""
    widths = {name: shapes["max_predictions_per_seq"] if name.startswith("masked_lm") else shapes["max_seq_length"]
              for name in FEATURES}
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(atomic_file(folder / f"{name}.npy", "wb")) for name in FEATURES}
        for name, dtype in FEATURES.items():
            shape = (len(rows),) if name == "next_sentence_labels" else (len(rows), widths[name])
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(files[name], header)
        for start in range(0, len(rows), chunk_size):
            chunk = instance_arrays([instances[i] for i in rows[start:start + chunk_size]],
                                    shapes["max_seq_length"], shapes["max_predictions_per_seq"])
            for name, array in chunk.arrays.items():
                files[name].write(np.ascontiguousarray(array).tobytes())
    info = {"format": NATIVE_FORMAT, "version": NATIVE_VERSION, "records": len(rows), **shapes, **manifest}
    atomic_write_text(folder / "manifest.json", json.dumps(info, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Reading


def _read_tfrecord(path: Path, max_seq_length: int, max_predictions: int) -> Records:
    """All records of a TFRecord file in memory, checked as run_pretraining.py's FixedLenFeatures."""
    widths = {name: max_predictions if name.startswith("masked_lm") else max_seq_length for name in FEATURES}
    widths["next_sentence_labels"] = 1
    columns = {name: [] for name in FEATURES}
    for number, example in enumerate(read_examples(path), start=1):
        for name, width in widths.items():
            feature = example.get(name)
            if feature is None:
                raise DataError(f"{path}: record {number}: no feature {name!r}")
            if len(feature.values) != width:
                raise DataError(f"{path}: record {number}: {name} has {len(feature.values)} values, expected "
                                f"{width} (max_seq_length={max_seq_length}, max_predictions_per_seq={max_predictions})")
            columns[name].append(feature.values)
    if not columns["input_ids"]:
        raise DataError(f"{path}: no records")
    arrays = {name: np.asarray(values, dtype=FEATURES[name]).reshape(len(values), -1)
              for name, values in columns.items()}
    arrays["next_sentence_labels"] = arrays["next_sentence_labels"][:, 0]
    manifest = _tfrecord_manifest(path)
    return Records(arrays, str(path), manifest.get("next_sentence", True), manifest)


@dataclass
class RecordsManifest:
    """What write_records records in a manifest (manifest.json of a records folder, FILE.manifest.json
    beside a TFRecord file), with the keys create_data adds; read back against these types."""

    format: str
    records: int
    max_seq_length: int
    max_predictions_per_seq: int
    version: int | None = None  # records folders only
    next_sentence: bool = True  # manifests written before the key existed: sentence pairs
    vocab_size: int | None = None
    vocab_sha256: str = ""
    create_data: dict = field(default_factory=dict)  # create_data's options
    shard: dict = field(default_factory=dict)  # create_data --sharded: which shard of how many

    def __post_init__(self):
        if self.records < 0 or self.max_seq_length < 1 or self.max_predictions_per_seq < 0:
            raise ValueError(f"records={self.records}, max_seq_length={self.max_seq_length} and "
                             f"max_predictions_per_seq={self.max_predictions_per_seq} cannot be")


def read_manifest(path: Path, what: str) -> dict:
    """A records manifest, its known keys checked against RecordsManifest (a key given twice, a wrong
    type or an impossible count is one DataError naming the file and key); other keys a writer
    added are kept as they are."""
    manifest = read_json_object(path, what, DataError)
    if manifest.get("format") not in ("tfrecord", NATIVE_FORMAT):
        raise DataError(f"{path}: not a records manifest (format is {json.dumps(manifest.get('format'))})")
    known = {f.name for f in fields(RecordsManifest)}
    typed(RecordsManifest, {k: v for k, v in manifest.items() if k in known}, str(path), DataError)
    return manifest


def _tfrecord_manifest(path: Path) -> dict:
    """The manifest create_data wrote beside a TFRecord file; {} for Google's files, which have none."""
    sidecar = manifest_of(path)
    if not sidecar.exists():
        return {}
    return read_manifest(sidecar, f"the manifest of {path.name}")


def _read_native(path: Path, max_seq_length: int, max_predictions: int) -> Records:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: cannot read the manifest of a records folder: no such file")
    manifest = read_manifest(manifest_path, "the manifest of a records folder")
    if manifest["format"] != NATIVE_FORMAT or manifest.get("version") != NATIVE_VERSION:
        raise DataError(f"{manifest_path}: not a minibert pre-training records folder (version {NATIVE_VERSION})")
    if (manifest["max_seq_length"], manifest["max_predictions_per_seq"]) != (max_seq_length, max_predictions):
        raise DataError(f"{path}: records have max_seq_length={manifest['max_seq_length']}, max_predictions_per_seq="
                        f"{manifest['max_predictions_per_seq']}; the run asks for {max_seq_length} / {max_predictions}")
    arrays = {}
    for name, dtype in FEATURES.items():
        file = path / f"{name}.npy"
        try:
            # mmap: rows are read from disk as batches need them; allow_pickle=False never runs code.
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{file}: cannot read: {e}") from None
        if array.dtype != dtype or len(array) != manifest["records"]:
            raise DataError(f"{file}: expected {manifest['records']} rows of {np.dtype(dtype)}, "
                            f"found {len(array)} of {array.dtype}")
        arrays[name] = array
    # Folders written before the key existed held pairs (RecordsManifest checked its type).
    return Records(arrays, str(path), manifest.get("next_sentence", True), manifest)


def read_records(path: str | Path, max_seq_length: int, max_predictions: int) -> Records:
    """Records of one file: a TFRecord file (Google's or minibert's) or a minibert records folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_native(path, max_seq_length, max_predictions)
    return _read_tfrecord(path, max_seq_length, max_predictions)
