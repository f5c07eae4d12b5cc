"""GoEmotions (Demszky et al., ACL 2020): Reddit comments, 27 emotions + neutral, multi-label ->
train/dev(/test).jsonl with label names (lists).

--source is the folder as its authors distribute it (google-research, goemotions/data): train.tsv
(43,410 comments), dev.tsv (5,426), emotions.txt, ekman_mapping.json, sentiment_dict.json. The test
split (5,427) is read from --test_file, or from test.tsv in --source where it is. --taxonomy
ekman or sentiment maps the emotions to the paper's coarser labels (neutral stays neutral).

    python data/goemotions/prepare.py --source /path/to/goemotions/data --output_dir data/goemotions
"""

import argparse
from pathlib import Path

from minibert.data import goemotions
from minibert.errors import MinibertError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="the distributed data folder (train.tsv, dev.tsv, ...)")
    parser.add_argument("--taxonomy", default="original", choices=list(goemotions.TAXONOMIES),
                        help="the 28 labels (original), Ekman's 6 + neutral, or sentiment's 3 + neutral")
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parent), help="output folder")
    parser.add_argument("--test_file", help="the test split's .tsv (default: test.tsv in --source, if there)")
    args = parser.parse_args(argv)
    try:
        splits = goemotions.prepare_goemotions(args.source, args.output_dir, args.taxonomy, args.test_file)
    except MinibertError as e:
        parser.exit(2, f"error: {e}\n")
    print(goemotions.format_label_counts(splits))


if __name__ == "__main__":
    main()
