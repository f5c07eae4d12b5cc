"""Classification data: reading examples and label sets.

The project format is JSON Lines: {"text": ..., "text_b": ... (optional, pairs), "label": ...}.
A label may be a string or an integer; integers are kept as their string form ("1"), so a label
set is always a list of strings and a JSONL 1 and a CSV "1" name the same class. CSV/TSV files
with a header row and .txt files (one unlabelled text per line) are read too. Every example
remembers "path:line" and every problem is reported as "path:line: what is wrong".

Multi-label data: a JSONL label may be a list of names ({"label": ["joy", "love"]}; [] is a text
with no label); in CSV/TSV the names share one cell, joined by `label_separator` ("joy|love"; each
name is stripped of surrounding spaces, an empty cell is no label). Whether a file is multi-label is
decided per file by `multi_label`: False (the default: a list is a bad row), True, or "auto" (any
list in the file, or any cell holding the separator, makes it multi-label; a plain label is then a
list of one). A multi-label example's label is a tuple of names, in the file's order.
Splits and few-shot subsets are in minibert.data.splits, batching in minibert.data.batching.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import ConfigError, DataError
from minibert.files import atomic_file

_INTEGER = re.compile(r"-?[0-9]+")
BAD_ROW_POLICIES = ("error", "skip")
MULTI_LABEL_MODES = ("auto", True, False)


@dataclass(frozen=True)
class Example:
    """One classification example: `label` is a name (single-label), a tuple of names (multi-label;
    () for a text with no label), or None only for unlabelled data."""

    text: str
    text_b: str | None
    label: str | tuple[str, ...] | None
    source: str  # "path:line", for error messages


@dataclass(frozen=True)
class _Fields:
    text: str
    text_b: str
    label: str
    require_label: bool
    multi_label: bool | str = False
    label_separator: str | None = None
    cells: bool = False  # CSV/TSV, where an empty label cell of a multi-label file means no label


# Readers yield an Example per usable row and a message string per bad row;
# lines come from _decoded_lines as (line number, text, decoding error or None).
_Row = Example | str
_Lines = Iterable[tuple[int, str, str | None]]


def read_bytes(path: Path) -> bytes:
    """A data file's bytes; a missing or unreadable file is a DataError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def read_examples(path: str | os.PathLike, *, text_field: str = "text",
                  text_b_field: str = "text_b", label_field: str = "label",
                  require_label: bool = True, on_bad_row: str = "error",
                  multi_label: bool | str = False,
                  label_separator: str | None = None) -> tuple[list[Example], list[str]]:
    """Read a .jsonl/.json, .csv, .tsv or .txt file. Returns (examples, bad-row messages).

    With on_bad_row="error" the first bad row raises DataError (so the list is empty); with "skip"
    bad rows are left out and each is described in the list. A missing file, an unknown extension,
    a CSV header without the needed columns or a file with no usable example always raises.
    multi_label (False, True or "auto") and label_separator (CSV/TSV only): see the module notes;
    is_multi_label(examples) tells what "auto" decided.
    """
    path = Path(path)
    _check_format(path, path.suffix, on_bad_row, require_label)
    _check_multi_label(multi_label, label_separator)
    return parse_examples(read_bytes(path), path, text_field=text_field, text_b_field=text_b_field,
                          label_field=label_field, require_label=require_label, on_bad_row=on_bad_row,
                          multi_label=multi_label, label_separator=label_separator)


def parse_examples(data: bytes, path: str | os.PathLike, *, suffix: str | None = None, text_field: str = "text",
                   text_b_field: str = "text_b", label_field: str = "label",
                   require_label: bool = True, on_bad_row: str = "error",
                   multi_label: bool | str = False,
                   label_separator: str | None = None) -> tuple[list[Example], list[str]]:
    """read_examples on bytes already read: `path` names them in messages ("stdin" gives
    "stdin:3: ..."), `suffix` (default: the path's) picks the reader, e.g. ".txt"."""
    path = Path(path)
    suffix = (path.suffix if suffix is None else suffix).lower()
    _check_format(path, suffix, on_bad_row, require_label)
    _check_multi_label(multi_label, label_separator)
    fields = _Fields(text_field, text_b_field, label_field, require_label, multi_label, label_separator,
                     cells=suffix in (".csv", ".tsv"))
    rows = list(_READERS[suffix](path, _decoded_lines(data), fields))
    if multi_label is not False:  # the labels were kept as read until the file's kind is known
        multi = multi_label is True or any(_holds_list(row, fields) for row in rows)
        rows = [_settle_label(row, multi, fields) if isinstance(row, Example) else row for row in rows]
    examples, bad = [], []
    for row in rows:
        if isinstance(row, Example):
            examples.append(row)
        elif on_bad_row == "error":
            raise DataError(row)
        else:
            bad.append(row)
    if not examples:
        detail = f" ({len(bad)} bad rows, the first: {bad[0]})" if bad else ""
        raise DataError(f"{path}: no usable examples{detail}")
    return examples, bad


def _check_format(path: Path, suffix: str, on_bad_row: str, require_label: bool) -> None:
    _check_on_bad_row(on_bad_row)
    suffix = suffix.lower()
    if suffix not in _READERS:
        raise DataError(f"{path}: unknown extension {suffix!r} "
                        f"(expected one of {', '.join(_READERS)})")
    if suffix == ".txt" and require_label:
        raise DataError(f"{path}: a .txt file holds one text per line and no labels; labelled data is a .jsonl, "
                        ".csv or .tsv file with a label for every text")


def _check_on_bad_row(on_bad_row: str) -> None:
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")


def _check_multi_label(multi_label: bool | str, label_separator: str | None) -> None:
    if not (multi_label is True or multi_label is False or multi_label == "auto"):
        raise ConfigError(f"multi_label must be 'auto', true or false, got {multi_label!r}")
    if label_separator is not None and (not isinstance(label_separator, str) or not label_separator.strip()
                                        or "\n" in label_separator or "\r" in label_separator):
        raise ConfigError(f"label_separator must be a non-blank string on one line, got {label_separator!r}")


def _decoded_lines(data: bytes) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text with its line ending, decoding error or None) per physical line.

    Decoding each line on its own lets an invalid byte be reported with its line. bytes.splitlines
    breaks only at \\n, \\r\\n and \\r; str.splitlines would also break texts at U+2028 or U+0085.
    Undecodable lines still come back (with U+FFFD) so the CSV parser keeps its line count.
    """
    data = data.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte order mark, as Windows tools write
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            error = f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)"
            yield number, raw.decode("utf-8", errors="replace"), error


def _read_lines(path: Path, lines: _Lines, fields: _Fields, *, as_json: bool) -> Iterator[_Row]:
    """JSON Lines (one object per line) or plain text (one unlabelled text per line)."""
    for number, line, error in lines:
        where = f"{path}:{number}"
        if error is not None:
            yield f"{where}: {error}"
        elif not line.strip():
            if not as_json:  # in a .txt every line is a text: dropping one would shift the rest
                yield f"{where}: empty line (a .txt file holds one text per line)"
            continue  # blank lines are allowed anywhere in JSON Lines
        elif not as_json:
            yield Example(line.rstrip("\r\n"), None, None, where)
        else:
            try:
                record = json.loads(line, object_pairs_hook=_object_without_duplicates)
            except json.JSONDecodeError as e:
                yield f"{where}: malformed JSON ({e.msg} at column {e.colno})"
                continue
            except _DuplicateKey as e:
                yield f"{where}: duplicate key {e.args[0]!r} in a JSON object (which value is meant?)"
                continue
            if not isinstance(record, dict):
                yield f"{where}: expected a JSON object, got {type(record).__name__}"
            else:
                yield _make_example(record, where, fields)


class _DuplicateKey(Exception):
    """A JSON object names a key twice; json.loads would silently keep the last value."""


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return record


def _read_delimited(path: Path, lines: _Lines, fields: _Fields, delimiter: str) -> Iterator[_Row]:
    """CSV/TSV with a header row; quoted fields may hold delimiters and newlines (csv rules)."""
    undecodable = {}

    def texts() -> Iterator[str]:
        for number, line, error in lines:
            if error is not None:
                undecodable[number] = error
            yield line

    # strict=True makes a stray quote or an unclosed quoted field an error instead of silently
    # gluing the rest of the file into one field.
    reader = csv.reader(texts(), delimiter=delimiter, strict=True)
    header, end = None, 0  # end: physical lines consumed, so a record starts on line end + 1
    while True:
        start, row, problem = end + 1, None, None
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            problem = f"malformed {path.suffix[1:].upper()} ({e})"
        end = reader.line_num
        where = f"{path}:{start}"
        bad_lines = [n for n in range(start, end + 1) if n in undecodable]
        if bad_lines:
            where, problem = f"{path}:{bad_lines[0]}", undecodable[bad_lines[0]]
        if header is None and (problem or row):
            if problem:  # no later row can be read without the header
                raise DataError(f"{where}: header row: {problem}")
            header = _check_header(row, where, fields)
        elif problem:
            yield f"{where}: {problem}"
        elif not row:
            continue  # blank line
        elif len(row) != len(header):
            yield f"{where}: expected {len(header)} columns, got {len(row)}"
        else:
            yield _make_example(dict(zip(header, row)), where, fields)


def _check_header(header: list[str], where: str, fields: _Fields) -> list[str]:
    for name in [fields.text] + ([fields.label] if fields.require_label else []):
        if name not in header:
            columns = ", ".join(header)
            raise DataError(f"{where}: header has no column {name!r} (columns: {columns})")
    return header


_READERS: dict[str, Callable[[Path, _Lines, _Fields], Iterator[_Row]]] = {
    ".jsonl": lambda path, lines, fields: _read_lines(path, lines, fields, as_json=True),
    ".json": lambda path, lines, fields: _read_lines(path, lines, fields, as_json=True),
    ".csv": lambda path, lines, fields: _read_delimited(path, lines, fields, ","),
    ".tsv": lambda path, lines, fields: _read_delimited(path, lines, fields, "\t"),
    ".txt": lambda path, lines, fields: _read_lines(path, lines, fields, as_json=False),
}


def _make_example(record: Mapping[str, object], where: str, fields: _Fields) -> _Row:
    """Validate one record (a JSON object, or a CSV row keyed by the header) into an Example."""
    text = record.get(fields.text)
    if text is None:
        return f"{where}: missing field {fields.text!r}"
    if not isinstance(text, str):
        return f"{where}: field {fields.text!r} must be a string, got {type(text).__name__}"
    if not text.strip():
        return f"{where}: empty field {fields.text!r}"
    # A JSON null text_b means "no second text"; an empty string is more likely a broken pair.
    text_b = record.get(fields.text_b)
    if text_b is not None and (not isinstance(text_b, str) or not text_b.strip()):
        return f"{where}: field {fields.text_b!r} must be a non-empty string, got {text_b!r}"
    label = record.get(fields.label)
    if fields.multi_label is not False and isinstance(label, list):
        return Example(text, text_b, tuple(label), where)  # checked by _settle_label
    # Floats are refused (is 1.0 the class "1"?), and so is bool, although a subclass of int.
    if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
        kind = type(label).__name__
        return f"{where}: label must be a string or an integer, got {kind} {label!r}"
    if fields.multi_label is not False:
        return Example(text, text_b, None if label is None else str(label), where)  # checked by _settle_label
    if fields.cells and fields.label_separator and label is not None and fields.label_separator in label:
        return (f"{where}: label {label!r} holds the label separator {fields.label_separator!r}, but the task is "
                "single-label (multi_label false)")
    label = str(label) if label is not None and str(label).strip() else None
    if label is None and fields.require_label:
        return f"{where}: missing or empty label field {fields.label!r}"
    return Example(text, text_b, label, where)


def _holds_list(row: _Row, fields: _Fields) -> bool:
    """Whether a row read with multi_label "auto" makes its file multi-label."""
    if not isinstance(row, Example):
        return False
    label, separator = row.label, fields.label_separator
    return isinstance(label, tuple) or bool(fields.cells and separator and label and separator in label)


def _settle_label(example: Example, multi: bool, fields: _Fields) -> _Row:
    """An example whose label was kept as read, once the file is known to be multi-label or not."""
    label, where = example.label, example.source
    if not multi:  # "auto" on a file without lists: exactly as multi_label False reads it
        label = label if label is not None and label.strip() else None
        if label is None and fields.require_label:
            return f"{where}: missing or empty label field {fields.label!r}"
        return Example(example.text, example.text_b, label, where)
    if isinstance(label, tuple):
        names = _list_names(label, where)
    elif fields.cells and label is not None:
        parts = label.split(fields.label_separator) if fields.label_separator else [label]
        names = [part.strip() for part in parts] if label.strip() else []
        if "" in names:
            return f"{where}: empty label name in {label!r} (labels joined by {fields.label_separator!r})"
    elif label is not None and label.strip():
        names = [label]
    elif fields.require_label:
        return f"{where}: missing or empty label field {fields.label!r} (a text with no label has the label [])"
    else:
        return example
    if isinstance(names, str):
        return names
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        return f"{where}: label {repeated!r} is listed twice"
    return Example(example.text, example.text_b, tuple(names), where)


def _list_names(items: tuple, where: str) -> list[str] | str:
    """The names of a JSON label list (strings or integers, as single labels are), or a message."""
    names = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            return f"{where}: a label list holds only strings or integers, got {type(item).__name__} {item!r}"
        if not str(item).strip():
            return f"{where}: empty label name in the list {list(items)!r}"
        names.append(str(item))
    return names


class LabelSet:
    """The classes of a task, fixed by the training split; name i is the classifier's output i."""

    def __init__(self, names: Iterable[str]):
        self.names = tuple(names)
        if not self.names or len(set(self.names)) != len(self.names) \
                or not all(isinstance(name, str) for name in self.names):
            raise DataError(f"a label set needs distinct string names, got {list(self.names)}")
        self._index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_examples(cls, examples: Iterable[Example]) -> LabelSet:
        """Sorted names; numerically when all are integers, so "2" < "10" and "-1" < "0".

        Multi-label examples contribute every name of their lists; the order is the same rule.
        """
        names, path = set(), None
        for example in examples:
            if example.label is None:
                raise DataError(f"{example.source}: example has no label")
            if isinstance(example.label, tuple):
                names.update(example.label)
            else:
                names.add(example.label)
            path = path or example.source.rpartition(":")[0]
        if not names and path is not None:
            raise DataError(f"{path}: no example has a label (every label list is empty)")
        if names and all(_INTEGER.fullmatch(name) for name in names):
            return cls(sorted(names, key=lambda name: (int(name), name)))
        return cls(sorted(names))

    @classmethod
    def from_json(cls, names: list[str]) -> LabelSet:
        """The inverse of to_json; the saved order is kept because it defines the indices."""
        if not isinstance(names, list):
            raise DataError(f"a saved label set must be a list of names, got {names!r}")
        return cls(names)

    def to_json(self) -> list[str]:
        return list(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self.names == other.names

    def index(self, label: str | None, source: str) -> int:
        """The class index of `label`; DataError naming `source` for a missing or unseen label."""
        if label is None:
            raise DataError(f"{source}: example has no label")
        if label not in self._index:
            known = ", ".join(self.names[:20]) + (", ..." if len(self.names) > 20 else "")
            raise DataError(f"{source}: label {label!r} not seen in training (known: {known})")
        return self._index[label]

    def ids(self, labels: Iterable[str], source: str) -> list[int]:
        """The sorted class indices of a multi-label example's names; DataError naming `source` and
        the first name not seen in training."""
        return sorted(self.index(label, source) for label in labels)


def is_multi_label(examples: Iterable[Example]) -> bool:
    """Whether examples read by read_examples are multi-label (their labels are tuples of names)."""
    return any(isinstance(example.label, tuple) for example in examples)


def multi_hot(id_lists: Iterable[Iterable[int]], num_labels: int) -> np.ndarray:
    """(N, num_labels) float32: row i is 1.0 at the class indices of id_lists[i], else 0.0."""
    id_lists = list(id_lists)
    matrix = np.zeros((len(id_lists), num_labels), dtype=np.float32)
    for row, ids in enumerate(id_lists):
        matrix[row, list(ids)] = 1.0
    return matrix


def encode_labels(examples: Iterable[Example], label_set: LabelSet,
                  on_bad_row: str = "error") -> tuple[list, list[Example], list[str]]:
    """Class indices: an int per single-label example, a sorted list of ints per multi-label one
    (LabelSet.ids). Returns (indices, the examples kept, messages for the examples skipped); an
    unknown or missing label raises DataError, or with on_bad_row="skip" drops the example."""
    _check_on_bad_row(on_bad_row)
    indices, kept, bad = [], [], []
    for example in examples:
        try:
            if isinstance(example.label, tuple):
                indices.append(label_set.ids(example.label, example.source))
            else:
                indices.append(label_set.index(example.label, example.source))
            kept.append(example)
        except DataError as e:
            if on_bad_row == "error":
                raise
            bad.append(str(e))
    return indices, kept, bad


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one JSON object per line (UTF-8, non-ASCII as is); returns the number written.

    Written atomically (minibert.files.atomic_file): readers never see half a file and a failure
    leaves any old file untouched.
    """
    count = 0
    with atomic_file(path, "w") as f:
        for record in records:
            if not isinstance(record, dict):
                raise TypeError(f"record {count} is a {type(record).__name__}, not a dict")
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
