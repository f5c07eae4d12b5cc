"""Further pre-training of BERT (masked LM + next-sentence prediction) as Google's code does it.

    python pretrain.py                                # embedded default: MiniLM on BBC News text, CPU
    python pretrain.py corpus --sources=sentiment --output_file=corpora/sentiment.txt
    python pretrain.py create_data --input_file=corpus.txt --output_file=train.tfrecord --vocab_file=vocab.txt
    python pretrain.py train --init=uncased_L-12_H-768_A-12 --input_file=train.tfrecord --output_dir=runs/itpt

`create_data` is Google's create_pretraining_data.py (same flags, defaults and, for the same text,
vocabulary, settings and seed, the same records); `train` is run_pretraining.py's model and loss
(same flag names where Google has one). Each subcommand's options are the fields of its config
dataclass (minibert/pretraining/config.py); `python pretrain.py SUBCOMMAND --help` lists them.

A corpus larger than memory: `corpus --shard_size_mb=64` writes it as shards, streaming;
`create_data --sharded=true --num_workers=N` makes each shard's records in its own process (one
shard in memory per worker; not Google's: nothing mixes across shards), and `train --input_file`
takes the shards by glob. A set of shards replaces the earlier set of its name whole, and a glob
that matches shards of two sets is refused. `create_data --next_sentence=false` makes masked-LM-only records (one
segment of contiguous sentences, RoBERTa's DOC-SENTENCES) for `train --next_sentence=false`.

`train` writes to output_dir: final/ (a minibert folder with the MLM and NSP heads, which
`train.py --init` and `checkpoints_convert.py` read), last/ (what --resume continues from),
metrics.jsonl, pretraining_curves.png and config.json; SIGTERM finishes the step, saves last/ and
exits with status 143 (Ctrl-C: the same, status 130). create_data writes a .tfrecord file or a
records folder, replacing an earlier create_data output but never another folder (e.g. `.` or the
corpus' folder) or an input.
"""

from minibert.cli import run_subcommands
from minibert.pretraining import STAGES


def main(argv: list[str] | None = None):
    return run_subcommands(STAGES, argv, __doc__, default="default", output_files=("output_file",))


if __name__ == "__main__":
    main()
