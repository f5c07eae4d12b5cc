"""Yahoo! Answers (Zhang et al. 2015) -> train/dev/test.jsonl.

Text = question title, question content and best answer joined by spaces; the 10 topic names come
from corpora.YAHOO_ANSWERS_CLASSES (checked against classes.txt). Dev is a stratified part of the
1,400,000 training questions.

    python data/yahoo_answers/prepare.py --source /path/to/yahoo_answers_csv --out data/yahoo_answers/
"""

import argparse
from pathlib import Path

from minibert import corpora


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="the extracted yahoo_answers_csv folder (train.csv, test.csv)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    parser.add_argument("--dev_fraction", type=float, default=0.1, help="share of train held out as dev")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dev split")
    parser.add_argument("--exclude_texts", help="a .jsonl whose texts are dropped from train (test overlap)")
    args = parser.parse_args(argv)

    names = corpora.zhang_class_names(args.source, corpora.YAHOO_ANSWERS_CLASSES)
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
