"""Bad options, bad data and earlier runs: train.py stops with one clear line before any long work,
and never loses an earlier run. Uses the tiny model and topic data of conftest.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, config

from minibert.cli import parse_config
from minibert.errors import ConfigError, DataError
from minibert.finetune import FinetuneConfig, FitHooks, finetune
from minibert.training.metrics_log import NonFiniteLoss

pytestmark = pytest.mark.usefixtures("keep_thread_count")  # train.main sets torch's thread count (--threads)


def folder_bytes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("option, value, message", [
    ("learning_rate", -1e-3, "--learning_rate -0.001: must be a finite number, at least 0"),
    ("learning_rate", float("inf"), "--learning_rate inf: must be a finite number, at least 0"),
    ("stage2_epochs", 3, r"^--stage2_epochs applies to multi-task runs \(--tasks\)$"),
    ("task_temperature", 2.0, r"^--task_temperature applies to multi-task runs \(--tasks\)$"),
    ("task_sampling", "random", r"^--task_sampling applies to multi-task runs \(--tasks\)$"),
    ("stage2_head", "fresh", r"^--stage2_head applies to multi-task runs \(--tasks\)$"),
    ("lstm_size", 8, "^--lstm_size applies to --head bilstm_attention$"),
    ("chunk_pooling", "max", r"^--chunk_pooling applies to hierarchical runs \(--hierarchical true\)$"),
    ("max_chunks", 4, r"^--max_chunks applies to hierarchical runs \(--hierarchical true\)$"),
    ("slanted_ratio", 10.0, "^--slanted_ratio applies to --schedule slanted_triangular$"),
    ("early_stopping", -1, "--early_stopping -1: must be at least 0"),
    ("train_fraction", 0.0, r"--train_fraction 0.0: must be in \(0, 1\]"),
    ("train_fraction", 1.5, r"--train_fraction 1.5: must be in \(0, 1\]"),
    ("log_every", 0, "--log_every 0: must be at least 1"),
    ("dropout", 1.0, r"--dropout 1.0: must be in \[0, 1\)"),
    ("warmup_proportion", 1.2, r"--warmup_proportion 1.2: must be in \[0, 1\]"),
    ("eval_batch_size", 0, "--eval_batch_size 0: must be at least 1"),
    ("max_seq_length", 3, "--max_seq_length 3: must be at least 4"),
    ("head_tokens", 23, "--head_tokens 23: head_tokens must be in 0..22"),
    ("layers", "9", "--layers 9: layers='9' needs layers the model"),
    ("max_seq_length", 65, "--max_seq_length 65 is more than the model's max_position_embeddings \\(64\\)"),
    ("precision", "fp16", "--precision fp16 needs a CUDA device"),
    ("device", "cuda:3", "--device cuda:3"),
    ("test_file", "nowhere.jsonl", "nowhere.jsonl: no such file"),
])
def test_bad_options_stop_before_anything_is_written(tiny_model, data, tmp_path, option, value, message):
    if option == "device" and torch.cuda.device_count() > 3:
        pytest.skip("this machine has a cuda:3")
    cfg = config(tiny_model, data, tmp_path / "run", **{option: value})
    with pytest.raises((ConfigError, DataError), match=message):
        finetune(cfg)
    assert not (tmp_path / "run").exists()


def test_an_earlier_run_is_never_replaced_silently(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    finetune(config(tiny_model, data, out, epochs=1))
    before = folder_bytes(out)
    with pytest.raises(ConfigError,
                       match="is not empty .*--resume continues that run, --overwrite_output_dir replaces it"):
        finetune(config(tiny_model, data, out, epochs=1))
    assert folder_bytes(out) == before
    # Even with --overwrite_output_dir, bad data stops the run before the old one is touched.
    (tmp_path / "bad.jsonl").write_text('{"text": "a text", "label": "sport"}\n{"text": ""}\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        finetune(config(tiny_model, data, out, epochs=1, overwrite_output_dir=True,
                          dev_file=str(tmp_path / "bad.jsonl")))
    assert folder_bytes(out) == before
    finetune(config(tiny_model, data, out, epochs=2, overwrite_output_dir=True))
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert max(json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()) == 38


def test_resume_refuses_changed_data_and_cleans_leftovers(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    train_file = tmp_path / "train.jsonl"
    train_file.write_bytes((data / "train.jsonl").read_bytes())
    finetune(config(tiny_model, data, out, epochs=1, train_file=str(train_file)))
    leftover = out / ".last.0123abcd.tmp"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half a file")
    with open(train_file, "a") as f:
        f.write(json.dumps({"text": "football goal", "label": "sport"}) + "\n")
    with pytest.raises(ConfigError, match="train.jsonl or .*dev.jsonl changed since the run"):
        finetune(config(tiny_model, data, out, epochs=1, resume=True, train_file=str(train_file)))
    finetune(config(tiny_model, data, out, epochs=1, resume=True, train_file=str(train_file), allow_data_change=True))
    assert not leftover.exists()


def test_a_corrupt_resume_checkpoint_names_its_file(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    finetune(config(tiny_model, data, out, epochs=1))
    weights = out / "last" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # one flipped bit in a tensor's bytes: safetensors itself would not notice
    weights.write_bytes(bytes(raw))
    with pytest.raises(Exception, match="last/model.safetensors: corrupt"):
        finetune(config(tiny_model, data, out, epochs=1, resume=True))


def test_a_non_finite_loss_stops_the_run_at_its_step(tiny_model, data, tmp_path):
    hooks = FitHooks(loss=lambda step, task, loss: loss * float("nan") if step == 3 else loss)
    with pytest.raises(NonFiniteLoss, match="became nan at optimizer step 3"):
        finetune(config(tiny_model, data, tmp_path / "run", grad_accum_steps=2), hooks)


def test_presets_get_the_flags_types_and_checks(tmp_path):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"freeze_encoder": "false", "epochs": "1", "layers": 4, "learning_rate": 1,
                                  "hierarchical": True}))
    cfg = parse_config(FinetuneConfig, ["--preset", str(preset)]).flat()
    assert [cfg[k] for k in ("freeze_encoder", "epochs", "layers", "learning_rate", "hierarchical")] == \
        [False, 1, "4", 1.0, True]
    for bad, message in [({"epochs": [1, 2]}, "epochs: expected int, got \\[1, 2\\]"),
                         ({"freeze_encoder": "maybe"}, "freeze_encoder: expected true or false"),
                         ({"epochs": 1.5}, "epochs: expected int, got 1.5"),
                         ({"init": None}, "init: expected str, got null")]:
        preset.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=message):
            parse_config(FinetuneConfig, ["--preset", str(preset)])
    with pytest.raises(SystemExit):  # no prefix matching: --epoch is not --epochs
        parse_config(FinetuneConfig, ["--epoch", "3"])


def test_scripts_print_bad_input_as_one_line(tiny_model, data, tmp_path):
    command = [sys.executable, "train.py", "--init", str(tiny_model), "--train_file", str(data / "train.jsonl"),
               "--dev_file", str(data / "dev.jsonl"), "--test_file", "", "--output_dir", str(tmp_path / "run"),
               "--max_seq_length", "512"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --max_seq_length 512 is more than the model's max_position_embeddings (64) in {tiny_model}"]
    done = subprocess.run(command + ["--debug"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" in done.stderr
    # An option of another mode is refused, not ignored; the multi-task hand-off is no flag.
    done = subprocess.run(command[:-2] + ["--stage2_epochs", "3"], cwd=ROOT, capture_output=True, text=True)
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2, ["error: --stage2_epochs applies to multi-task runs (--tasks)"])
    done = subprocess.run(command[:-2] + ["--init_task", "x"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "unrecognized arguments: --init_task x" in done.stderr


def test_hierarchical_training_caps_the_chunks_of_very_long_texts(tiny_model, data, tmp_path, capsys):
    """At 12 tokens a chunk holds 10 text tokens: a 300-word text has 30 chunks, over the cap of 16."""
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()][:20]
    rows[3]["text"] = " ".join([rows[3]["text"]] * 40)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    finetune(config(tiny_model, data, tmp_path / "run", train_file=str(tmp_path / "train.jsonl"), hierarchical=True,
                    max_seq_length=12, epochs=1))
    out = capsys.readouterr().out
    assert "have more than 16 chunks" in out and "train.jsonl:4" in out and "only their first 16 chunks" in out
