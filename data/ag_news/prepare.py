"""AG's News (Zhang et al. 2015) -> train/dev/test.jsonl.

Text = "title - description", as the paper's code (xuyige/BERT4doc-Classification) joins them for
fine-tuning, and "title" alone, which further pre-training corpora write on its own line as the
paper's code does; names World, Sports, Business, Sci/Tech (corpora.AG_NEWS_CLASSES, checked
against classes.txt). Dev is a stratified part of the 120,000
training articles.

    python data/ag_news/prepare.py --source /path/to/ag_news_csv --out data/ag_news/
"""

from minibert.data import corpora


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__,
                                    "the extracted ag_news_csv folder (train.csv, test.csv)")
    args = parser.parse_args(argv)
    train, test = corpora.read_zhang_folder(args.source, corpora.AG_NEWS_CLASSES,
                                            corpora.title_dash_description)
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
