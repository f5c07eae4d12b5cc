"""Yahoo! Answers (Zhang et al. 2015) -> train/dev/test.jsonl.

A text pair, as the paper's code feeds it: text = question title and content, text_b = the best
answer (segment B). The 10 topic names come from corpora.YAHOO_ANSWERS_CLASSES (checked against
classes.txt). Dev is a stratified part of the
1,400,000 training questions.

    python data/yahoo_answers/prepare.py --source /path/to/yahoo_answers_csv --out data/yahoo_answers/
"""

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the extracted yahoo_answers_csv folder (train.csv, test.csv)")
    args = parser.parse_args(argv)
    train, test = corpora.read_zhang_folder(args.source, corpora.YAHOO_ANSWERS_CLASSES,
                                            corpora.question_answer_pair)
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
