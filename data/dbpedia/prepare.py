"""DBpedia ontology (Zhang et al. 2015) -> train/dev/test.jsonl.

Text = title and abstract joined by a space; the 14 class names come from corpora.DBPEDIA_CLASSES
(checked against classes.txt). Dev is a stratified part of the 560,000 training entries.

    python data/dbpedia/prepare.py --source /path/to/dbpedia_csv --out data/dbpedia/
"""

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the extracted dbpedia_csv folder (train.csv, test.csv)")
    args = parser.parse_args(argv)
    train, test = corpora.read_zhang_folder(args.source, corpora.DBPEDIA_CLASSES)
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
