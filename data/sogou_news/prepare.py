"""Sogou News -> train/dev/test.jsonl.

Zhang et al.'s sogou_news_csv (5 classes, pinyin) and the paper's Chinese 6-class set share the
CSV layout, so there is no built-in name table: names come from the classes.txt beside the CSVs,
else the labels stay the numbers "1".."C". Dev is a stratified part of train.

    python data/sogou_news/prepare.py --source /path/to/sogou_news_csv --out data/sogou_news/
"""

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the extracted sogou_news_csv folder (train.csv, test.csv)")
    args = parser.parse_args(argv)
    train, test = corpora.read_zhang_folder(args.source)
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
