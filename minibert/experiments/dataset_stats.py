"""Table 1 of the paper beside the prepared data sets: `reproduce.py table1` counts each data set's
train / dev / test examples and classes and measures its texts' lengths, next to the published
statistics (minibert.experiments.paper.TABLE1). Nothing is trained.

Lengths are in WordPieces, as the paper's (§5.1: "the statistics of the length of the documents in the
datasets are based on the word pieces"): the tokens of text and text_b together, without [CLS] and
[SEP], from the tokenizer of the model the experiments fine-tune (reproduction.table1_tokenizers).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from minibert.experiments.paper import CHINESE, DATASET_TITLES, TABLE1
from minibert.text.tokenization import FullTokenizer

SPLITS = ("train", "dev", "test")
# Table 1's "exceeding ratio": the share of texts longer than BERT's 512 positions, in WordPieces.
LONG_TEXT = 512


@dataclass(frozen=True)
class DatasetStats:
    """One prepared data set: examples per split, distinct labels, and its texts' lengths (WordPieces)."""

    counts: dict[str, int]
    classes: int
    mean_length: float
    median_length: float
    max_length: int
    over_512: float  # % of texts longer than 512 WordPieces


def text_length(record: dict, tokenizer: FullTokenizer) -> int:
    """The WordPieces of a record's text and text_b."""
    return sum(len(tokenizer.encode_text(record.get(k) or "")) for k in ("text", "text_b"))


def dataset_stats(folder: Path, tokenizer: FullTokenizer) -> DatasetStats | None:
    """The statistics of folder/{train,dev,test}.jsonl over all splits; None if train is missing."""
    if not (folder / "train.jsonl").is_file():
        return None
    counts, labels, lengths = dict.fromkeys(SPLITS, 0), set(), []
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as f:  # streamed: Yahoo! Answers' train is 1.4M records
            for line in filter(str.strip, f):
                record = json.loads(line)
                counts[split] += 1
                labels.add(str(record.get("label")))
                lengths.append(text_length(record, tokenizer))
    if not lengths:
        return DatasetStats(counts, 0, 0.0, 0.0, 0, 0.0)
    return DatasetStats(counts, len(labels), statistics.mean(lengths), statistics.median(lengths), max(lengths),
                        100 * sum(n > LONG_TEXT for n in lengths) / len(lengths))


def _published(name: str) -> list[str]:
    """Table 1's classes, train, test, average, max and > 512 cells ("" for a data set it lacks)."""
    if name not in TABLE1:
        return [""] * 6
    classes, _, average, longest, over, train, test = TABLE1[name]
    return [str(classes), f"{train:,}", f"{test:,}", str(average), f"{longest:,}", f"{over:.2f}%"]


def table1_markdown(data_dir: Path, datasets: list[str], english: FullTokenizer, chinese: FullTokenizer,
                    vocabularies: str) -> str:
    """Table 1 as Markdown: ours (counts, classes, mean / median / max length) beside the paper's; a
    data set that is not prepared is listed as such. english / chinese: the tokenizers lengths are
    counted with (Sogou News with chinese); vocabularies: a sentence naming them."""
    header = ["data set", "classes ours", "classes paper", "train ours", "dev ours", "train paper", "test ours",
              "test paper", "mean length ours", "median length ours", "avg length paper", "max length ours",
              "max length paper", "> 512 ours", "> 512 paper"]
    lines = ["### Table 1: statistics of the data sets", "",
             f"Ours: the prepared data sets under {data_dir} (dev is held out of the paper's train). Lengths in "
             f"WordPieces of text and text_b, without [CLS] and [SEP], as the paper's (§5.1): {vocabularies}. "
             "Paper: Table 1 (its train includes our dev).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in datasets:
        stats = dataset_stats(data_dir / name, chinese if name in CHINESE else english)
        classes, train, test, average, longest, over = _published(name)
        if stats is None:
            cells = ["not prepared", classes, "", "", train, "", test, "", "", average, "", longest, "", over]
        else:
            n = stats.counts
            cells = [stats.classes, classes, f"{n['train']:,}", f"{n['dev']:,}", train, f"{n['test']:,}", test,
                     f"{stats.mean_length:.1f}", f"{stats.median_length:g}", average, f"{stats.max_length:,}",
                     longest, f"{stats.over_512:.2f}%", over]
        lines.append("| " + " | ".join(map(str, [DATASET_TITLES.get(name, name), *cells])) + " |")
    return "\n".join(lines) + "\n"
