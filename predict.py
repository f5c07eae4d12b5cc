"""Label texts with a classifier saved by train.py.

    python predict.py runs/bbc_minilm/best news.jsonl            # JSONL/CSV/TSV (field "text") or TXT
    cat texts.txt | python predict.py runs/bbc_minilm/best -      # one text per line from stdin
    python predict.py runs/multi/best news.jsonl --task ag_news   # one task of a multi-task model

Writes one JSON object per input text to --output (default stdout): the text's source line, the
predicted label and the probability of every label. A multi-label model writes "labels": every label
whose probability reaches its threshold (possibly none; the model's, stored by train.py, or
--threshold), and every label's probability. Long texts are encoded as the model was
trained (head+tail truncation or hierarchical chunks, from the model's classifier.json).
Bad input (model folder, rows, --output) ends in one line `error: ...` and exit status 2 before
any text is encoded; --debug shows the traceback. --output may not be the input file, the model
folder or a file in it, nor the --preset file.
"""

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from minibert.checkpoints.classifier import load_classifier
from minibert.cli import FlatOptions, at_least, check_rules, option, run_script
from minibert.data.examples import BAD_ROW_POLICIES, parse_examples, read_examples
from minibert.data.features import encode_examples
from minibert.errors import ConfigError, DataError
from minibert.files import atomic_write_text, remove_leftovers
from minibert.output_paths import check_output_file, folder_inputs
from minibert.training.evaluation import predict_probabilities
from minibert.training.machine import (MACHINE_RULES, MachineOptions, autocast, quantize_linear_int8,
                                       resolve_machine)


@dataclass(frozen=True)
class PredictConfig(FlatOptions):
    model: str = option("", "a classifier folder written by train.py (its best/ folder)")
    task: str = option("", "a multi-task model (train.py --tasks): the task whose head predicts")
    input: str = option("-", "a .jsonl/.csv/.tsv/.txt file, or - for one text per line on stdin")
    output: str = option("-", "where to write the JSON Lines predictions (- = stdout)")
    text_field: str = option("text", "column/key of the text")
    text_b_field: str = option("text_b", "column/key of the optional second text")
    batch_size: int = option(64, "texts per forward pass")
    machine: MachineOptions = field(default_factory=MachineOptions)
    quantize: str = option("none", "int8: dynamic int8 quantization of the linear layers (CPU, runs in fp32)",
                           choices=("none", "int8"))
    on_bad_row: str = option("error", "empty or malformed rows stop the run, or are skipped and reported",
                             choices=BAD_ROW_POLICIES)
    threshold: float = option(0.0, "multi-label model: predict the labels whose probability reaches this, instead "
                              "of the thresholds stored with the model (0 = those)")


RULES = MACHINE_RULES | {  # minibert.cli.check_rules
    "batch_size": (at_least(1), "at least 1"),
    "threshold": (lambda v: 0 <= v < 1, "in (0, 1), or 0 for the model's thresholds"),
}


def check_options(cfg: PredictConfig) -> None:
    """Option values predict cannot run with, as one ConfigError naming the option."""
    check_rules(cfg.flat(), RULES)
    if cfg.quantize == "int8" and cfg.machine.device not in ("cpu", "auto"):
        raise ConfigError(f"--quantize int8 runs on the CPU only: --device {cfg.machine.device}; use --device cpu")


def read_input(cfg: PredictConfig):
    if cfg.input != "-":
        # Labels are not read, but a multi-label file's lists are no bad rows (multi_label "auto").
        return read_examples(cfg.input, text_field=cfg.text_field, text_b_field=cfg.text_b_field,
                             require_label=False, on_bad_row=cfg.on_bad_row, multi_label="auto")
    # stdin goes through the same reader (and its checks) as a .txt file; messages say "stdin:LINE".
    data = sys.stdin.buffer.read()
    if not data.strip():
        raise DataError("stdin: no texts (expected one text per line)")
    return parse_examples(data, "stdin", suffix=".txt", require_label=False, on_bad_row=cfg.on_bad_row)


def check_output(cfg: PredictConfig) -> None:
    """Fail before any work when --output cannot be written (a folder, under a file, the input);
    remove the hidden temporaries (`.NAME.*.tmp`) a killed earlier run
    left beside it."""
    if cfg.output == "-":
        return
    if cfg.output.endswith(("/", "\\")):
        raise ConfigError(f"--output {cfg.output}: is a folder; give a file name, e.g. {Path(cfg.output) / 'predictions.jsonl'}")
    inputs = [("INPUT", cfg.input if cfg.input != "-" else "")] + folder_inputs("MODEL", cfg.model)
    path = check_output_file(cfg.output, "--output", inputs)
    remove_leftovers(path.parent, path.name)


def decide(saved, threshold: float, source: str, p: torch.Tensor) -> dict:
    """One text's record: the argmax label, or a multi-label model's labels at their thresholds."""
    head = saved.model.head_config
    record = {"source": source}
    if head.multi_label:
        # Compared in float64, as train.py's scores compare them (multilabel_metrics.predict_labels).
        thresholds = torch.tensor(threshold or head.decision_thresholds, dtype=torch.float64)
        record["labels"] = [name for name, yes in zip(saved.labels, (p.double() >= thresholds).tolist()) if yes]
    else:
        record["label"] = saved.labels[int(torch.argmax(p))]
    record["probabilities"] = {name: round(float(q), 6) for name, q in zip(saved.labels, p)}
    return record


def main(cfg: PredictConfig) -> list[dict]:
    if not cfg.model:
        raise SystemExit("usage: predict.py MODEL_FOLDER [INPUT] [--output FILE]")
    check_output(cfg)
    check_options(cfg)
    machine = replace(cfg.machine, device="cpu") if cfg.quantize == "int8" else cfg.machine  # auto: the CPU for int8
    device, precision, padding = resolve_machine(machine)  # fp16 without CUDA is refused before any work
    saved = load_classifier(cfg.model, cfg.task)
    if cfg.threshold and not saved.model.head_config.multi_label:
        raise ConfigError(f"--threshold applies to a multi-label model; {cfg.model} is single-label "
                          "(the argmax decides)")
    for message in saved.warnings:
        print(f"warning: {message}", file=sys.stderr)
    model = saved.model.to(device)
    model.bert.padding = padding
    if cfg.quantize == "int8":
        model, precision = quantize_linear_int8(model), "fp32"  # int8 products, fp32 elsewhere
    print(f"precision {precision}{', int8 linear layers' if cfg.quantize == 'int8' else ''}, "
          f"{model.bert.padding} encoder on {device}", file=sys.stderr)
    examples, bad = read_input(cfg)
    for message in bad:
        print(f"skipped {message}", file=sys.stderr)
    docs = encode_examples(examples, None, saved.tokenizer, saved.encoding)
    with tqdm(total=len(docs), desc="predict", unit="ex", file=sys.stderr) as bar:
        probabilities = predict_probabilities(model, docs, cfg.batch_size, device,
                                              autocast(device, precision), saved.encoding.hierarchical, bar,
                                              pad_id=saved.tokenizer.pad_id)
    records = [decide(saved, cfg.threshold, example.source, p) for example, p in zip(examples, probabilities)]
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if cfg.output == "-":
        sys.stdout.write(lines)
    else:
        atomic_write_text(cfg.output, lines)
    return records


if __name__ == "__main__":
    run_script(main, PredictConfig, None, __doc__, positional=("model", "input"), output_files=("output",))
