"""Yelp Review Polarity (Zhang et al. 2015) -> train/dev/test.jsonl.

Labels 1, 2 -> "negative", "positive" (the archive has no classes.txt; its readme.txt says so).
Dev is a stratified part of the 560,000 training reviews.

    python data/yelp_polarity/prepare.py --source /path/to/yelp_review_polarity_csv --out data/yelp_polarity/
"""

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the extracted yelp_review_polarity_csv folder (train.csv, test.csv)")
    args = parser.parse_args(argv)
    train, test = corpora.read_zhang_folder(args.source, corpora.YELP_POLARITY_CLASSES)
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
