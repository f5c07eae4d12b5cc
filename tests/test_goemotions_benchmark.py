"""benchmarks/goemotions_vs_transformers.py: the dev scores it gives both systems against a hand
count, whatever order a system lists its labels in, and its bad options (one line, exit 2, before
any work). Its --smoke run is what the benchmarks' smoke test runs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minibert.data.examples import write_jsonl

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as `python benchmarks/NAME.py` sees its folder
    import goemotions_vs_transformers
    return goemotions_vs_transformers


def test_dev_scores_by_hand_in_either_label_order(bench, tmp_path):
    dev = tmp_path / "dev.jsonl"
    write_jsonl(dev, [{"text": "one", "label": ["a"]}, {"text": "two", "label": ["a", "b"]},
                      {"text": "three", "label": []}, {"text": "four", "label": ["b"]}])
    # Columns a, b. At 0.3: a predicted for texts 1, 2, 3 (TP 2, FP 1, F1 4/5); b for text 2 only
    # (TP 1, FN 1, F1 2/3). Micro: TP 3, predicted 4, gold 4 -> 3/4. Chosen thresholds: a at 0.5
    # keeps texts 1, 2 (F1 1); b's best cut keeps texts 2 and 4 (0.2 >= t, F1 1).
    probabilities = np.array([[0.9, 0.1], [0.6, 0.8], [0.4, 0.05], [0.1, 0.2]], dtype=np.float32)
    expected = {"macro_f1_global": (4 / 5 + 2 / 3) / 2, "micro_f1_global": 3 / 4,
                "macro_f1_chosen": 1.0, "micro_f1_chosen": 1.0}
    # Cross-fitted (2 folds, the fixed permutation of seed 0 over 4 texts): each half decided by the
    # thresholds chosen on the other half, as cross_fitted_f1 (tested by hand in test_multilabel_metrics).
    gold = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=bool)
    cross = bench.cross_fitted_f1(probabilities, gold, 0.3)
    expected |= {"macro_f1_cross_fitted": cross["macro_f1"], "micro_f1_cross_fitted": cross["micro_f1"]}
    for labels, columns in ((["a", "b"], [0, 1]), (["b", "a"], [1, 0])):
        outcome = {"labels": labels, "probabilities": probabilities[:, columns]}
        assert bench.dev_scores(outcome, str(dev), 0.3) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("argv, pattern", [
    (["--threshold", "1.5"], r"^error: --threshold 1.5: must be in \(0, 1\)\n$"),
    (["--epochs", "0"], r"^error: --epochs 0: must be at least 1\n$"),
    (["--train_count", "-1"], r"^error: --train_count -1: must be at least 0"),
    (["--systems", "minibert,peft"],
     r"^error: --systems minibert,peft: unknown peft \(known: minibert, transformers\)\n$"),
    (["--data", "{tmp}/none"], r"^error: --data .*/none: no train.jsonl; write it with python "
                               r"data/goemotions/prepare.py --source DIR --output_dir .*/none\n$"),
])
def test_bad_options_stop_before_any_work(bench, monkeypatch, tmp_path, script_error, argv, pattern):
    monkeypatch.setattr(sys, "argv", ["goemotions_vs_transformers.py", *(a.format(tmp=tmp_path) for a in argv)])
    with script_error(pattern):
        bench.main()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("preset, pattern", [
    ({"epochs": 3, "learning_rate": 1e-4},
     r"^error: .*/minibert.json: epochs, learning_rate: set for both systems by this script's flags, "
     r"not in --minibert_preset\n$"),
    ({"head_init": "normal"}, r"^error: .*/minibert.json: head_init: set for both systems"),
    ({"batching": "sorted"}, r"^error: .*/minibert.json: batching='sorted' is not one of length_grouped, random\n$"),
    ({"layer_decay": 0}, r"^error: --minibert_preset: --layer_decay 0.0: must be in \(0, 1\]\n$"),
    ({"warmup": 0.1}, r"^error: .*/minibert.json: unknown preset keys: warmup\n$"),
])
def test_a_bad_minibert_preset_stops_before_any_run(bench, monkeypatch, tmp_path, script_error, preset, pattern):
    """--minibert_preset is checked as train.py checks a preset, and may not change what both
    systems share: one line, exit 2, nothing run (the smoke data would be written by a run)."""
    path = tmp_path / "minibert.json"
    path.write_text(json.dumps(preset), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["goemotions_vs_transformers.py", "--smoke", "--systems", "minibert",
                                      "--minibert_preset", str(path)])
    with script_error(pattern):
        bench.main()
    assert list(tmp_path.iterdir()) == [path]


def test_minibert_preset_reaches_minibert_run(bench, monkeypatch, tmp_path):
    """Its values reach minibert's fine-tuning config beside the flags' shared recipe."""
    path = tmp_path / "minibert.json"
    path.write_text(json.dumps({"batching": "length_grouped", "layer_decay": 0.95}), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["goemotions_vs_transformers.py", "--minibert_preset", str(path),
                                      "--learning_rate", "3e-5"])
    job = bench.Job("minibert", bench.recipe_of(bench.parse_args()), "model", "train.jsonl", "dev.jsonl", "out")
    values = bench.minibert_config(job).flat()
    assert (values["batching"], values["layer_decay"], values["learning_rate"]) == ("length_grouped", 0.95, 3e-5)


def test_one_system_runs_alone_and_prints_its_row_only(bench, monkeypatch, capsys):
    """--systems minibert --smoke: minibert's row, no transformers run and no ratio line."""
    monkeypatch.setattr(sys, "argv", ["goemotions_vs_transformers.py", "--smoke", "--systems", "minibert",
                                      "--threads", "1"])
    bench.main()
    out = capsys.readouterr().out
    assert "minibert run 1:" in out and "| minibert |" in out
    assert "transformers run" not in out and "minibert / transformers" not in out


@pytest.mark.parametrize("head_init", ["normal", "truncated_normal"])
def test_head_init_is_minibert_runs_own(bench, monkeypatch, head_init):
    """--head_init becomes the --head_init of minibert's fine-tuning run."""
    monkeypatch.setattr(sys, "argv", ["goemotions_vs_transformers.py", "--head_init", head_init])
    job = bench.Job("minibert", bench.recipe_of(bench.parse_args()), "model", "train.jsonl", "dev.jsonl", "out")
    assert bench.minibert_config(job).classifier.head_init == head_init


def test_repeats_run_at_successive_seeds_and_print_the_spread_over_them(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["goemotions_vs_transformers.py", "--smoke", "--systems", "minibert",
                                      "--threads", "1", "--repeats", "2", "--seed", "7"])
    bench.main()
    out = capsys.readouterr().out
    assert "minibert run 1: seed 7," in out and "minibert run 2: seed 8," in out
    assert "minibert over seeds 7, 8: macro-F1 @0.3 mean " in out
