"""Yelp Review Full (Zhang et al. 2015) -> train/dev/test.jsonl.

Labels are the stars "1".."5" (the archive has no classes.txt). Dev is a stratified part of the
650,000 training reviews. Fine-tuning uses the whole training set, as the paper does: it removes the
Yelp P. test texts found in Yelp F. train only from the further pre-training corpora (Table 5
caption). For such a corpus, --exclude_texts data/yelp_polarity/test.jsonl drops them.

    python data/yelp_full/prepare.py --source /path/to/yelp_review_full_csv --out data/yelp_full/
"""

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the extracted yelp_review_full_csv folder (train.csv, test.csv)")
    args = parser.parse_args(argv)
    train, test = corpora.read_zhang_folder(args.source, corpora.YELP_FULL_CLASSES)
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
