"""Label texts with a classifier saved by train.py.

    python predict.py runs/bbc_minilm/best news.jsonl            # JSONL/CSV/TSV (field "text") or TXT
    cat texts.txt | python predict.py runs/bbc_minilm/best -      # one text per line from stdin
    python predict.py runs/multi/best news.jsonl --task ag_news   # one task of a multi-task model

Writes one JSON object per input text to --output (default stdout): the text's source line, the
predicted label and the probability of every label. Long texts are encoded as the model was
trained (head+tail truncation or hierarchical chunks, from the model's classifier.json).
Bad input (model folder, rows, --output) ends in one line `error: ...` and exit status 2 before
any text is encoded; --debug shows the traceback.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.checkpoints.classifier import load_classifier
from minibert.cli import option, run_script
from minibert.data.examples import parse_examples, read_examples
from minibert.data.features import encode_examples
from minibert.errors import ConfigError, DataError
from minibert.files import atomic_write_text, remove_leftovers
from minibert.training.evaluation import predict_probabilities
from minibert.training.precision import autocast, resolve_device


@dataclass
class PredictConfig:
    model: str = option("", "a classifier folder written by train.py (its best/ folder)")
    task: str = option("", "a multi-task model (train.py --tasks): the task whose head predicts")
    input: str = option("-", "a .jsonl/.csv/.tsv/.txt file, or - for one text per line on stdin")
    output: str = option("-", "where to write the JSON Lines predictions (- = stdout)")
    text_field: str = option("text", "column/key of the text")
    text_b_field: str = option("text_b", "column/key of the optional second text")
    batch_size: int = option(64, "texts per forward pass")
    precision: str = option("fp32", "fp32 or bf16 autocast", choices=("fp32", "bf16", "fp16"))
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    on_bad_row: str = option("error", "empty or malformed rows stop the run, or are skipped and reported",
                             choices=("error", "skip"))


def read_input(cfg: PredictConfig):
    if cfg.input != "-":
        return read_examples(cfg.input, text_field=cfg.text_field, text_b_field=cfg.text_b_field,
                             require_label=False, on_bad_row=cfg.on_bad_row)
    # stdin goes through the same reader (and its checks) as a .txt file; messages say "stdin:LINE".
    data = sys.stdin.buffer.read()
    if not data.strip():
        raise DataError("stdin: no texts (expected one text per line)")
    return parse_examples(data, "stdin", suffix=".txt", require_label=False, on_bad_row=cfg.on_bad_row)


def check_output(output: str) -> None:
    """Fail before any work when --output cannot be written; remove the hidden temporaries
    (`.NAME.*.tmp`) a killed earlier run left beside it."""
    if output == "-":
        return
    path = Path(output)
    if path.is_dir() or output.endswith(("/", "\\")):
        raise ConfigError(f"--output {output}: is a folder; give a file name, e.g. {path / 'predictions.jsonl'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"--output {output}: {path.parent} is a file, not a folder")
    remove_leftovers(path.parent, path.name)


def main(cfg: PredictConfig) -> list[dict]:
    if not cfg.model:
        raise SystemExit("usage: predict.py MODEL_FOLDER [INPUT] [--output FILE]")
    check_output(cfg.output)
    saved = load_classifier(cfg.model, cfg.task)
    for message in saved.warnings:
        print(f"warning: {message}", file=sys.stderr)
    device = resolve_device(cfg.device)
    saved.model.to(device)
    examples, bad = read_input(cfg)
    for message in bad:
        print(f"skipped {message}", file=sys.stderr)
    docs = encode_examples(examples, None, saved.tokenizer, saved.encoding)
    with tqdm(total=len(docs), desc="predict", unit="ex", file=sys.stderr) as bar:
        probabilities = predict_probabilities(saved.model, docs, cfg.batch_size, device,
                                              autocast(device, cfg.precision), saved.encoding.hierarchical, bar,
                                              pad_id=saved.tokenizer.pad_id)
    records = []
    for example, p in zip(examples, probabilities):
        records.append({"source": example.source, "label": saved.labels[int(torch.argmax(p))],
                        "probabilities": {name: round(float(q), 6) for name, q in zip(saved.labels, p)}})
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if cfg.output == "-":
        sys.stdout.write(lines)
    else:
        atomic_write_text(cfg.output, lines)
    return records


if __name__ == "__main__":
    run_script(main, PredictConfig, None, __doc__, positional=("model", "input"))
