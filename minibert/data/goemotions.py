"""GoEmotions (Demszky et al., ACL 2020) as its authors distribute it -> multi-label train/dev/test.jsonl.

The folder (google-research, goemotions/data) holds:
- train.tsv (43,410 Reddit comments), dev.tsv (5,426) and, where a user has it, test.tsv (5,427):
  no header; text, comma-separated label ids, comment id. A text holding a quote is quoted as CSV
  does it (in quotes, each inner quote doubled), so the rows are read with the csv module.
- emotions.txt: the 28 names, label id = line number from 0 (27 emotions, then neutral).
- ekman_mapping.json and sentiment_dict.json: {coarse name: [emotion names]}, the paper's two
  coarser taxonomies (Ekman's 6; positive, negative, ambiguous). neutral is in neither and stays
  neutral; a comment whose emotions map to one coarse name twice keeps it once.

Each record is {"text", "label": [names, in the order of the row's ids], "id": the comment id};
the text is stripped of surrounding spaces. Every problem is one DataError naming the file (and
line). data/goemotions/prepare.py is the command line.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

from minibert.data.examples import read_bytes, write_jsonl
from minibert.errors import ConfigError, DataError
from minibert.output_paths import check_output_file

# taxonomy -> the mapping file of the distributed folder (None: the 28 labels as they are)
TAXONOMIES = {"original": None, "ekman": "ekman_mapping.json", "sentiment": "sentiment_dict.json"}
NEUTRAL = "neutral"
_LABEL_IDS = re.compile(r"[0-9]+(,[0-9]+)*")


def _read_text(path: Path) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x})") from None


def read_emotion_names(path: str | Path) -> tuple[str, ...]:
    """emotions.txt: one name per line, the line number from 0 being the label id."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = tuple(line.strip() for line in lines)
    for number, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}:{number}: empty name (the line number from 0 is the label id)")
        if name in names[:number - 1]:
            raise DataError(f"{path}:{number}: name {name!r} given twice")
    if len(names) < 2:
        raise DataError(f"{path}: expected the emotion names, one per line; found {len(names)}")
    return names


def read_taxonomy(path: str | Path, emotions: tuple[str, ...]) -> dict[str, str]:
    """A mapping file ({coarse: [emotions]}) as {emotion: coarse}; every emotion but neutral must be
    in exactly one group."""
    path = Path(path)
    try:
        groups = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(groups, dict):
        raise DataError(f"{path}: expected a JSON object {{coarse name: [emotion names]}}")
    mapping = {}
    for group, members in groups.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise DataError(f"{path}: group {group!r} must be a list of emotion names, got {members!r}")
        for member in members:
            if member not in emotions:
                raise DataError(f"{path}: {member!r} in group {group!r} is not a name of emotions.txt")
            if member in mapping:
                raise DataError(f"{path}: {member!r} is in two groups ({mapping[member]!r} and {group!r})")
            mapping[member] = group
    missing = [name for name in emotions if name not in mapping and name != NEUTRAL]
    if missing:
        raise DataError(f"{path}: no group for {', '.join(map(repr, missing))}")
    return mapping


def read_goemotions_tsv(path: str | Path, emotions: tuple[str, ...],
                        mapping: dict[str, str] | None = None) -> list[dict]:
    """The records of one split file; labels are emotion names, or their groups with `mapping`."""
    path = Path(path)
    reader = csv.reader(_read_text(path).splitlines(keepends=True), delimiter="\t", strict=True)
    records = []
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row:
                continue  # a blank line
            if len(row) != 3:
                raise DataError(f"{where}: expected 3 tab-separated fields (text, label ids, comment id), got {len(row)}")
            text, ids, comment = row
            if not text.strip():
                raise DataError(f"{where}: empty text")
            records.append({"text": text.strip(), "label": _names(ids, emotions, mapping, where), "id": comment})
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed TSV ({e})") from None
    if not records:
        raise DataError(f"{path}: no comments")
    return records


def _names(ids: str, emotions: tuple[str, ...], mapping: dict[str, str] | None, where: str) -> list[str]:
    if not _LABEL_IDS.fullmatch(ids):
        raise DataError(f"{where}: label ids must be comma-separated numbers, got {ids!r}")
    numbers = [int(i) for i in ids.split(",")]
    for i, number in enumerate(numbers):
        if number >= len(emotions):
            raise DataError(f"{where}: label id {number} is not a line of emotions.txt (0..{len(emotions) - 1})")
        if number in numbers[:i]:
            raise DataError(f"{where}: label id {number} given twice")
    names = [emotions[number] for number in numbers]
    if mapping is not None:
        names = [mapping.get(name, name) for name in names]  # neutral, in no group, stays neutral
    return list(dict.fromkeys(names))  # a group reached twice is one label


def split_files(source: str | Path, test_file: str | Path | None = None) -> dict[str, Path]:
    """{split: file}: source/train.tsv and dev.tsv, and test_file (default: source/test.tsv where it exists)."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: no such folder (expected GoEmotions' data folder: train.tsv, dev.tsv, "
                        "emotions.txt, ...)")
    files = {"train": source / "train.tsv", "dev": source / "dev.tsv"}
    if test_file or (source / "test.tsv").is_file():
        files["test"] = Path(test_file) if test_file else source / "test.tsv"
    return files


def prepare_goemotions(source: str | Path, output_dir: str | Path, taxonomy: str = "original",
                       test_file: str | Path | None = None) -> dict[str, list[dict]]:
    """Read every split of `source` (split_files) in `taxonomy` and write output_dir/<split>.jsonl.

    Every output is checked against the inputs first (minibert.output_paths) and every file is
    read before anything is written. Returns {split: records}.
    """
    if taxonomy not in TAXONOMIES:
        raise ConfigError(f"taxonomy must be one of {', '.join(TAXONOMIES)}, got {taxonomy!r}")
    files = split_files(source, test_file)
    inputs = [("--source", Path(source) / "emotions.txt")] + [
        ("--test_file" if split == "test" and test_file else "--source", path) for split, path in files.items()]
    if TAXONOMIES[taxonomy]:
        inputs.append(("--source", Path(source) / TAXONOMIES[taxonomy]))
    outputs = {split: check_output_file(Path(output_dir) / f"{split}.jsonl", "--output_dir", inputs)
               for split in files}
    emotions = read_emotion_names(Path(source) / "emotions.txt")
    mapping = read_taxonomy(Path(source) / TAXONOMIES[taxonomy], emotions) if TAXONOMIES[taxonomy] else None
    splits = {split: read_goemotions_tsv(path, emotions, mapping) for split, path in files.items()}
    for split, records in splits.items():
        write_jsonl(outputs[split], records)
    return splits


def format_label_counts(splits: dict[str, list[dict]]) -> str:
    """A table: texts per label (most frequent in train first) and split, then the number of texts
    and of texts with two or more labels."""
    counts = {split: Counter(name for record in records for name in record["label"])
              for split, records in splits.items()}
    labels = [name for name, _ in counts["train"].most_common()]
    labels += sorted({name for counter in counts.values() for name in counter} - set(labels))
    rows = [(name, [counter[name] for counter in counts.values()]) for name in labels]
    rows.append(("texts", [len(records) for records in splits.values()]))
    rows.append(("2+ labels", [sum(len(r["label"]) > 1 for r in records) for records in splits.values()]))
    width = max(len(name) for name, _ in rows)
    lines = ["label".ljust(width) + "".join(f"{split:>10}" for split in splits)]
    lines += [name.ljust(width) + "".join(f"{n:>10,}" for n in cells) for name, cells in rows]
    return "\n".join(lines)
