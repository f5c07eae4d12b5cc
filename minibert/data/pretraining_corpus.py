"""Pre-training corpora in Google's text format from the project's data sets (paper §4.2, §5.4).

Google's create_pretraining_data.py reads one sentence per line with a blank line between
documents. The paper further pre-trains on

    within-task   the target data set's training text
    in-domain     the training text of every data set of the target's domain (DOMAINS below)
    cross-domain  the training text of all seven English data sets

Each example (its `text`, and `text_b` when present) is one document. Only training splits are
used unless the caller names others, and the manifest written next to the corpus records which
(the paper's code put AG's News test text into its corpus; that is never done silently here).
Yelp F. and Yelp P. are built from the same reviews, so the Yelp rule of Table 5's caption is
applied: Yelp F. text that appears in Yelp P.'s test set is dropped, and the reverse.

Sentences are split with spaCy: its rule-based sentencizer by default (no model download), or a
trained pipeline the user names (the paper's code loads en_core_web_md); Chinese text splits after
"。", "？" and "！" (paper §5.2). An AG's News title is written as its own line before its
description's sentences, as the paper's code's generate_corpus_agnews.py does.
Everything streams: one document at a time is in memory, apart from the hashes of the other
Yelp set's test texts. A large corpus can be written as shards of a given size (CorpusFiles), which
`create_data --sharded` turns into records one file per process.
"""

import hashlib
import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from minibert.errors import ConfigError, DataError
from minibert.data.pretraining_shards import earlier_shards, remove_paths, shard_name
from minibert.files import atomic_write_text, commit, temp_path
from minibert.output_paths import dataset_inputs

DOMAINS = {
    "sentiment": ("imdb", "yelp_polarity", "yelp_full"),
    "question": ("trec", "yahoo_answers"),
    "topic": ("ag_news", "dbpedia"),
}
ENGLISH_DATASETS = tuple(name for names in DOMAINS.values() for name in names)
CROSS_DOMAIN = "all"  # the source name of the cross-domain corpus
# Table 5: Yelp F. and Yelp P. share reviews; each drops the other's test texts from its training text.
OVERLAP_PARTNERS = {"yelp_full": "yelp_polarity", "yelp_polarity": "yelp_full"}
_CHINESE_END = re.compile(r"(?<=[。？！])")  # split after the separator, which stays with its sentence
_WHITESPACE = re.compile(r"\s+")


@dataclass
class CorpusReport:
    """What went into a corpus, written as its manifest."""
    sources: list[dict] = field(default_factory=list)  # {"name", "file", "split", "documents", "dropped_overlap"}
    documents: int = 0
    sentences: int = 0
    segmenter: str = ""
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the corpus file, or its shards in order


def expand_sources(spec: str, data_dir: Path, splits: tuple[str, ...]) -> list[tuple[str, str, Path]]:
    """Comma-separated sources -> (data set name, split, file) triples.

    A source is a data set name (within-task), a domain name (in-domain), "all" (cross-domain) or
    a path to a .jsonl / .txt file of the user's.
    """
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item == CROSS_DOMAIN:
            names = ENGLISH_DATASETS
        elif item in DOMAINS:
            names = DOMAINS[item]
        elif item in ENGLISH_DATASETS or item == "bbc_news":
            names = (item,)
        elif Path(item).suffix in (".jsonl", ".txt"):
            if not Path(item).is_file():
                raise ConfigError(f"--sources: {item}: no such file")
            out.append((Path(item).stem, "user", Path(item)))
            continue
        else:
            raise ConfigError(f"--sources: {item!r} is not a data set ({', '.join(ENGLISH_DATASETS)}, bbc_news), "
                              f"a domain ({', '.join(DOMAINS)}), {CROSS_DOMAIN!r}, or a .jsonl/.txt file")
        for name in names:
            for split in splits:
                path = data_dir / name / f"{split}.jsonl"
                if not path.is_file():
                    raise ConfigError(f"{path} is missing: prepare it with python data/{name}/prepare.py")
                out.append((name, split, path))
    if not out:
        raise ConfigError("--sources is required")
    return out


def corpus_inputs(spec: str, data_dir: Path) -> list[tuple[str, Path]]:
    """What `corpus --sources=SPEC` reads (output_paths.Inputs): the user's .jsonl/.txt files and,
    for data set, domain and cross-domain names, those data sets under `data_dir` with the Yelp
    partner whose test texts are dropped, including files not yet prepared. Unknown names are left
    to expand_sources, which says what is wrong with them."""
    names, files = [], []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item == CROSS_DOMAIN:
            names += ENGLISH_DATASETS
        elif item in DOMAINS or item in ENGLISH_DATASETS or item == "bbc_news":
            names += DOMAINS.get(item, (item,))
        elif Path(item).suffix in (".jsonl", ".txt"):
            files.append(("--sources", Path(item)))
    names += [OVERLAP_PARTNERS[name] for name in names if name in OVERLAP_PARTNERS]
    return files + dataset_inputs("--sources", data_dir, dict.fromkeys(names))


def iter_documents(path: Path, text_fields: tuple[str, ...] = ("text", "text_b")) -> Iterator[tuple[int, str, str]]:
    """(line number, text, title) per document of a .jsonl file (the text fields joined by a
    newline) or a .txt file (one document per line), streamed. Bad lines raise DataError naming file
    and line. A record with a "title" its text starts with (AG's News: "title - description",
    data/ag_news/prepare.py) gives the title apart and the text without it; else title is ""."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            if path.suffix == ".txt":
                yield number, line.strip(), ""
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not a JSON object ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_fields[0]), str):
                raise DataError(f"{path}:{number}: no string field {text_fields[0]!r}")
            parts = [record[k] for k in text_fields if isinstance(record.get(k), str) and record[k].strip()]
            title = record.get("title")
            if isinstance(title, str) and title.strip() and parts and parts[0].startswith(title):
                parts[0] = parts[0][len(title):].removeprefix(" - ")
                yield number, "\n".join(part for part in parts if part.strip()), title.strip()
                continue
            yield number, "\n".join(parts), ""


def text_key(text: str) -> bytes:
    """The identity of a text for the overlap rule: whitespace-normalised, hashed (16 bytes)."""
    return hashlib.blake2b(_WHITESPACE.sub(" ", text).strip().encode("utf-8"), digest_size=16).digest()


def overlap_keys(data_dir: Path, name: str) -> tuple[set[bytes], str]:
    """Keys of the partner Yelp set's test texts, and a note for the manifest."""
    partner = OVERLAP_PARTNERS[name]
    test = data_dir / partner / "test.jsonl"
    if not test.is_file():
        return set(), f"{name}: overlap rule not applied, {test} is missing (prepare {partner} to apply it)"
    return {text_key(text) for _, text, _ in iter_documents(test)}, f"{name}: dropped texts found in {test}"


# ---------------------------------------------------------------------------------------------
# Sentence splitters: text of one document -> list of sentences


def chinese_splitter() -> Callable[[list[str]], Iterator[list[str]]]:
    def split(texts):
        for text in texts:
            yield [s.strip() for line in text.splitlines() for s in _CHINESE_END.split(line) if s.strip()]
    return split


def spacy_splitter(model: str, batch_size: int = 64) -> Callable[[list[str]], Iterator[list[str]]]:
    """spaCy sentences: "" = spacy.blank("en") + the rule-based sentencizer, else a trained pipeline
    (it must be installed; nothing is downloaded)."""
    import spacy  # imported here: only corpus building needs it

    # Deviation from reference: the paper's code splits with spaCy's statistical en_core_web_md, which
    # is not on the package index (a model download); the default here is the rule-based sentencizer
    # (punctuation rules; it splits at some abbreviations the parser keeps). CorpusConfig.spacy_model
    # (--spacy_model en_core_web_md) uses the statistical model where it is installed.
    if model:
        try:
            nlp = spacy.load(model)
        except OSError as e:
            raise ConfigError(f"--spacy_model {model}: not installed ({e})") from None
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
    nlp.max_length = max(nlp.max_length, 10_000_000)  # long documents are fine for a sentencizer

    def split(texts):
        # A line break ends a sentence (titles, paragraphs); spaCy splits each line further.
        # Lines stream through nlp.pipe in batches, tagged with their document's number.
        def lines():
            for number, text in enumerate(texts):
                parts = [line for line in text.splitlines() if line.strip()] or [""]
                for i, line in enumerate(parts):
                    yield line, (number, i == len(parts) - 1)

        sentences: list[str] = []
        for doc, (_, last) in nlp.pipe(lines(), as_tuples=True, batch_size=batch_size):
            sentences += [s.text.strip() for s in doc.sents if s.text.strip()]
            if last:
                yield sentences
                sentences = []
    return split


SPLITTERS = {"en": spacy_splitter, "zh": lambda model: chinese_splitter()}


class CorpusFiles:
    """Where the corpus goes: one file, or shards of about `shard_bytes` each that end at document
    boundaries (OUTPUT-00000-of-0000N.txt, the count known only at the end). Everything is written
    under temporary names and renamed into place together when the corpus is complete, so a failed
    run leaves no partial corpus (minibert.files)."""

    def __init__(self, output: Path, shard_bytes: int = 0):
        self.output, self.shard_bytes = output, shard_bytes
        self.temps: list[Path] = []
        self.file, self.size = None, 0

    def write_document(self, lines: list[str]) -> None:
        if self.file is None or (self.shard_bytes and self.size >= self.shard_bytes):
            self._next_file()
        text = "\n".join(lines) + "\n\n"
        self.file.write(text)
        self.size += len(text.encode("utf-8"))

    def _next_file(self) -> None:
        if self.file is not None:
            self.file.close()
        self.temps.append(temp_path(self.output))
        self.file, self.size = open(self.temps[-1], "w", encoding="utf-8", newline="\n"), 0

    def paths(self) -> list[Path]:
        """The final names (after commit)."""
        if not self.shard_bytes:
            return [self.output]
        n = len(self.temps)
        return [Path(shard_name(str(self.output), k, n, ".txt")) for k in range(n)]

    def commit(self) -> list[Path]:
        self.file.close()
        for temp, path in zip(self.temps, self.paths()):
            commit(temp, path)
        return self.paths()

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        for temp in self.temps:
            temp.unlink(missing_ok=True)


def write_corpus(output: Path, sources: list[tuple[str, str, Path]], splitter, segmenter: str, data_dir: Path,
                 progress: Callable[[int], None] | None = None, shard_bytes: int = 0) -> CorpusReport:
    """Write the corpus (one sentence per line, a blank line after every document) atomically, as
    one file or, with shard_bytes > 0, as shards of about that size (CorpusFiles), and its
    manifest next to `output` (`<output>.manifest.json`). One document at a time is in memory. The
    shards of an earlier corpus of that name that this one did not overwrite are removed once it is
    complete, so a glob of its shards reads only this corpus."""
    report = CorpusReport(segmenter=segmenter)
    output.parent.mkdir(parents=True, exist_ok=True)
    files = CorpusFiles(output, shard_bytes)
    try:
        for name, split, path in sources:
            # The Yelp rule concerns training text; a user who adds dev/test text chose to include it.
            drop, note = overlap_keys(data_dir, name) if name in OVERLAP_PARTNERS and split == "train" else (set(), "")
            if note:
                report.notes.append(note)
            entry = {"name": name, "split": split, "file": str(path), "documents": 0, "dropped_overlap": 0,
                     "titles": 0}
            titles: deque[str] = deque()  # the titles of the texts the splitter has taken, in order

            def texts():
                for _, text, title in iter_documents(path):
                    if drop and text_key(text) in drop:
                        entry["dropped_overlap"] += 1
                        continue
                    titles.append(title)
                    yield text

            for sentences in splitter(texts()):
                # The paper's code (generate_corpus_agnews.py) writes an AG title as its own line, not
                # sentence-split, before the description's sentences.
                title = titles.popleft()
                entry["titles"] += bool(title)
                # A sentence is one line: whitespace inside it (newlines included) becomes one space.
                lines = [_WHITESPACE.sub(" ", s) for s in ([title] if title else []) + sentences]
                if not lines:
                    continue
                files.write_document(lines)
                entry["documents"] += 1
                report.sentences += len(lines)
                if progress is not None:
                    progress(1)
            if name == "ag_news" and entry["documents"] and not entry["titles"]:
                report.notes.append(f"{path}: no record has a title field, so titles stay in the first sentence "
                                    "(prepare ag_news again to write them on their own line, as the paper's code)")
            report.documents += entry["documents"]
            report.sources.append(entry)
        if report.documents == 0:
            raise DataError(f"{', '.join(str(p) for _, _, p in sources)}: no text to write")
        report.files = [str(p) for p in files.commit()]
    except BaseException:
        files.discard()
        raise
    # The corpus replaces an earlier one of its name whole: its shards that this one has not overwritten.
    earlier = [p for p in earlier_shards(str(output), ".txt", report.files) if p.is_file()]
    remove_paths(earlier)
    if earlier:
        report.notes.append(f"removed {len(earlier)} shards of an earlier corpus named {output}")
    manifest = {"corpus": str(output), "files": report.files, "documents": report.documents,
                "sentences": report.sentences, "splits": sorted({s["split"] for s in report.sources}),
                "sources": report.sources, "segmenter": report.segmenter, "notes": report.notes}
    atomic_write_text(manifest_path(output), json.dumps(manifest, indent=2) + "\n")
    return report


def manifest_path(corpus: Path) -> Path:
    return corpus.with_name(corpus.name + ".manifest.json")
