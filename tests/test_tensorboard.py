"""MetricsLog's optional TensorBoard events: the same numbers as metrics.jsonl, read back with
tensorboard's EventAccumulator; a resume purges the events after its step; without the package a
one-line ConfigError says how to install it."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import FIXTURES, PRETRAINING

import pretrain
from minibert.training.metrics_log import MetricsLog, scalars

RECORDS = [
    {"step": 1, "epoch": 0.5, "split": "train", "loss": 2.5, "lr": 1e-5, "examples_per_s": 40.0},
    {"step": 2, "epoch": 1.0, "split": "train", "loss": 2.0, "lr": 2e-5, "examples_per_s": 42.5},
    {"step": 2, "epoch": 1, "split": "dev", "error": 0.25, "accuracy": 0.75, "macro_f1": np.float64(0.5)},
    {"step": 2, "epoch": 1, "split": "dev_task", "task": "imdb", "error": 0.5, "stopped": True, "note": "x"},
    {"step": 3, "epoch": 1.5, "split": "train", "loss": 1.5, "lr": 1e-5, "examples_per_s": 41.0},
]


def test_scalars_are_the_records_numbers():
    assert scalars(RECORDS[0]) == {"train/epoch": 0.5, "train/loss": 2.5, "train/lr": 1e-5,
                                   "train/examples_per_s": 40.0}
    assert scalars(RECORDS[3]) == {"dev_task/imdb/epoch": 1.0, "dev_task/imdb/error": 0.5}
    assert scalars({"step": 4, "mlm_loss": 3}) == {"mlm_loss": 3.0}


def read_events(folder):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_events_match_metrics_jsonl_and_resume_purges(tmp_path):
    pytest.importorskip("tensorboard")
    log = MetricsLog(tmp_path / "metrics.jsonl", None, tensorboard_dir=tmp_path / "tb")
    for record in RECORDS:
        log.write(**record)
    log.close()
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    expected = {}
    for record in written:
        for tag, value in scalars(record).items():
            expected.setdefault(tag, []).append((record["step"], pytest.approx(value)))
    assert read_events(tmp_path / "tb") == expected
    assert expected["train/loss"] == [(1, 2.5), (2, 2.0), (3, 1.5)] and expected["dev/macro_f1"] == [(2, 0.5)]
    # Resumed from step 2: step 3 of the interrupted run is gone from both, the new one is there.
    log = MetricsLog(tmp_path / "metrics.jsonl", 2, tensorboard_dir=tmp_path / "tb")
    log.write(**{**RECORDS[4], "loss": 1.25})
    log.close()
    assert read_events(tmp_path / "tb")["train/loss"] == [(1, 2.5), (2, 2.0), (3, 1.25)]
    assert [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] == [
        1, 2, 2, 2, 3]


def test_other_ranks_write_no_events(tmp_path):
    log = MetricsLog(None, None, tensorboard_dir=tmp_path / "tb")
    log.write(**RECORDS[0])
    log.close()
    assert not (tmp_path / "tb").exists()


def test_without_tensorboard_one_line_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['tensorboard'] = None\n"  # as if it were not installed
            "from pathlib import Path\n"
            "from minibert.errors import ConfigError\n"
            "from minibert.training.metrics_log import MetricsLog\n"
            "try:\n"
            f"    MetricsLog(Path({str(tmp_path)!r}) / 'metrics.jsonl', None, "
            f"tensorboard_dir=Path({str(tmp_path)!r}) / 'tb')\n"
            "except ConfigError as e:\n"
            "    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout == ("TensorBoard logging needs the tensorboard package: pip install tensorboard "
                             "(or pip install minibert[tensorboard])\n"), result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_pretrain_writes_its_metrics_as_events(tmp_path):
    """pretrain.py train --tensorboard true: every train record's losses and learning rate as events."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    pretrain.main(["train", f"--init={FIXTURES / 'tiny_google'}",
                   f"--input_file={PRETRAINING / 'sample_text_64' / 'examples.tfrecord'}", "--train_batch_size=2",
                   "--max_seq_length=64", "--max_predictions_per_seq=10", "--num_train_steps=3",
                   "--num_warmup_steps=1", "--log_every=1", "--precision=fp32", "--threads=1",
                   f"--output_dir={out}", "--tensorboard=true"])
    records = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    events = read_events(out / "tensorboard")
    assert [step for step, _ in events["train/loss"]] == [r["step"] for r in records] == [1, 2, 3]
    assert [value for _, value in events["train/loss"]] == [r["loss"] for r in records]
    assert [value for _, value in events["train/lr"]] == [r["lr"] for r in records]
