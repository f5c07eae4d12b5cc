"""Sogou News -> train/dev/test.jsonl.

Zhang et al.'s sogou_news_csv (5 classes, pinyin) and the paper's Chinese 6-class set share the
CSV layout, so there is no built-in name table: names come from the classes.txt beside the CSVs,
else the labels stay the numbers "1".."C". Dev is a stratified part of train.

    python data/sogou_news/prepare.py --source /path/to/sogou_news_csv --out data/sogou_news/
"""

import argparse
from pathlib import Path

from minibert import corpora


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="the extracted sogou_news_csv folder (train.csv, test.csv)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    parser.add_argument("--dev_fraction", type=float, default=0.1, help="share of train held out as dev")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dev split")
    parser.add_argument("--exclude_texts", help="a .jsonl whose texts are dropped from train (test overlap)")
    args = parser.parse_args(argv)

    names = corpora.zhang_class_names(args.source)
    train = corpora.read_zhang_csv(Path(args.source) / "train.csv", names)
    test = corpora.read_zhang_csv(Path(args.source) / "test.csv", names)
    if args.exclude_texts:
        kept = corpora.drop_texts(train, args.exclude_texts)
        print(f"dropped {len(train) - len(kept):,} training texts found in {args.exclude_texts}")
        train = kept
    train, dev = corpora.split_off(train, args.dev_fraction, args.seed)
    counts = corpora.write_splits(args.out, {"train": train, "dev": dev, "test": test})
    print(corpora.format_counts(counts))


if __name__ == "__main__":
    main()
