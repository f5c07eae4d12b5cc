"""TREC question classification (Li and Roth 2002), 6 coarse classes -> train/dev/test.jsonl.

Train is train_5500.label (5,452 questions), test is TREC_10.label (500); the fine class is dropped.
Dev is a stratified part of train.

    python data/trec/prepare.py --source /path/to/folder_with_the_label_files --out data/trec/
"""

from pathlib import Path

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the folder holding train_5500.label and TREC_10.label")
    args = parser.parse_args(argv)
    train = corpora.read_trec(Path(args.source) / "train_5500.label")
    test = corpora.read_trec(Path(args.source) / "TREC_10.label")
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
