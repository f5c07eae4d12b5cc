"""IMDb (Maas et al. 2011) -> train/dev/test.jsonl; dev is a stratified part of the 25,000 train.

    python data/imdb/prepare.py --source /path/to/aclImdb --out data/imdb/
"""

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the extracted aclImdb folder (holds train/ and test/)")
    args = parser.parse_args(argv)
    train = corpora.read_aclimdb(args.source, "train")
    test = corpora.read_aclimdb(args.source, "test")
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
