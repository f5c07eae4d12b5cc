"""TREC question classification (Li and Roth 2002), 6 coarse classes -> train/dev/test.jsonl.

Train is train_5500.label (5,452 questions), test is TREC_10.label (500); the fine class is dropped.
Dev is a stratified part of train.

    python data/trec/prepare.py --source /path/to/folder_with_the_label_files --out data/trec/
"""

import argparse
from pathlib import Path

from minibert import corpora


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="the folder holding train_5500.label and TREC_10.label")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    parser.add_argument("--dev_fraction", type=float, default=0.1, help="share of train held out as dev")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dev split")
    parser.add_argument("--exclude_texts", help="a .jsonl whose texts are dropped from train (test overlap)")
    args = parser.parse_args(argv)

    train = corpora.read_trec(Path(args.source) / "train_5500.label")
    test = corpora.read_trec(Path(args.source) / "TREC_10.label")
    if args.exclude_texts:
        kept = corpora.drop_texts(train, args.exclude_texts)
        print(f"dropped {len(train) - len(kept):,} training texts found in {args.exclude_texts}")
        train = kept
    train, dev = corpora.split_off(train, args.dev_fraction, args.seed)
    counts = corpora.write_splits(args.out, {"train": train, "dev": dev, "test": test})
    print(corpora.format_counts(counts))


if __name__ == "__main__":
    main()
