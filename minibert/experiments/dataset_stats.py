"""Table 1 of the paper beside the prepared data sets: `reproduce.py table1` counts each data set's
train / dev / test examples and classes and measures its texts' lengths, next to the published
statistics (minibert.experiments.paper.TABLE1). Nothing is trained.

Lengths are in words (whitespace-separated, text and text_b together); a Chinese data set has no
spaces, so its length is in characters (non-space). The paper does not say which unit its lengths
count, so the columns show ours and the paper's side by side, not a check.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from minibert.experiments.paper import CHINESE, DATASET_TITLES, TABLE1

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class DatasetStats:
    """One prepared data set: examples per split, distinct labels, and its texts' lengths."""

    counts: dict[str, int]
    classes: int
    mean_length: float
    median_length: float
    over_512: float  # % of texts longer than 512 length units


def text_length(record: dict, chinese: bool) -> int:
    text = " ".join(record.get(k) or "" for k in ("text", "text_b"))
    return len("".join(text.split())) if chinese else len(text.split())


def dataset_stats(folder: Path, chinese: bool = False) -> DatasetStats | None:
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
                lengths.append(text_length(record, chinese))
    if not lengths:
        return DatasetStats(counts, 0, 0.0, 0.0, 0.0)
    return DatasetStats(counts, len(labels), statistics.mean(lengths), statistics.median(lengths),
                        100 * sum(n > 512 for n in lengths) / len(lengths))


def table1_markdown(data_dir: Path, datasets: list[str]) -> str:
    """Table 1 as Markdown: ours (counts, classes, mean / median length) beside the paper's; a data
    set that is not prepared is listed as such."""
    header = ["data set", "classes ours", "classes paper", "train ours", "dev ours", "train paper", "test ours",
              "test paper", "mean length ours", "median length ours", "avg length paper", "> 512 ours",
              "> 512 paper"]
    lines = ["### Table 1: statistics of the data sets", "",
             f"Ours: the prepared data sets under {data_dir} (dev is held out of the paper's train; lengths in "
             "words, Chinese in characters). Paper: Table 1 (its train includes our dev).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in datasets:
        stats = dataset_stats(data_dir / name, name in CHINESE)
        published = TABLE1.get(name)
        classes, avg, over, train, test = ((published[0], published[2], f"{published[4]:.2f}%",
                                            f"{published[5]:,}", f"{published[6]:,}") if published else ("",) * 5)
        if stats is None:
            cells = ["not prepared", classes, "", "", train, "", test, "", "", avg, "", over]
        else:
            n = stats.counts
            cells = [stats.classes, classes, f"{n['train']:,}", f"{n['dev']:,}", train, f"{n['test']:,}", test,
                     f"{stats.mean_length:.1f}", f"{stats.median_length:g}", avg, f"{stats.over_512:.2f}%", over]
        lines.append("| " + " | ".join(map(str, [DATASET_TITLES.get(name, name), *cells])) + " |")
    return "\n".join(lines) + "\n"
