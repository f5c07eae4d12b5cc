"""IMDb (Maas et al. 2011) -> train/dev/test.jsonl; dev is a stratified part of the 25,000 train.

    python data/imdb/prepare.py --source /path/to/aclImdb --out data/imdb/
"""

import argparse
from pathlib import Path

from minibert import corpora


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="the extracted aclImdb folder (holds train/ and test/)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    parser.add_argument("--dev_fraction", type=float, default=0.1, help="share of train held out as dev")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dev split")
    parser.add_argument("--exclude_texts", help="a .jsonl whose texts are dropped from train (test overlap)")
    args = parser.parse_args(argv)

    train = corpora.read_aclimdb(args.source, "train")
    test = corpora.read_aclimdb(args.source, "test")
    if args.exclude_texts:
        kept = corpora.drop_texts(train, args.exclude_texts)
        print(f"dropped {len(train) - len(kept):,} training texts found in {args.exclude_texts}")
        train = kept
    train, dev = corpora.split_off(train, args.dev_fraction, args.seed)
    counts = corpora.write_splits(args.out, {"train": train, "dev": dev, "test": test})
    print(corpora.format_counts(counts))


if __name__ == "__main__":
    main()
