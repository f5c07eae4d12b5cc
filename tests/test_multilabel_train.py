"""Multi-label fine-tuning end to end on a tiny model: train.py and predict.py as a user runs them,
thresholds chosen on dev stored and used, the scores recomputed from the files the run writes, a
bit-identical resume, and a multi-task run mixing a single- and a multi-label task."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TOPIC_LABELS as LABELS
from helpers import make_tiny_model, run_interrupted, write_multi_label_split, write_split
from safetensors.torch import load_file

import predict
from minibert.cli import load_preset
from minibert.data.multitask import TaskFiles
from minibert.finetune import FinetuneConfig, finetune
from minibert.finetune.config import DataOptions
from minibert.finetune.tasks import read_task
from minibert.training.multilabel_metrics import multilabel_report
from minibert.training.problems import MULTI_LABEL_SCORES

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def ml_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("topics_ml")
    for name, n, seed in (("train", 120, 1), ("dev", 40, 2), ("test", 40, 3)):
        write_multi_label_split(folder / f"{name}.jsonl", n, seed)
    return folder


def options(init, data, out, **overrides) -> dict:
    values = dict(init=str(init), train_file=str(data / "train.jsonl"), dev_file=str(data / "dev.jsonl"),
                  test_file=str(data / "test.jsonl"), output_dir=str(out), max_seq_length=24, head_tokens=6,
                  epochs=4, batch_size=8, learning_rate=5e-3, layer_decay=0.9, eval_batch_size=16, log_every=2,
                  device="cpu", seed=7, threads=1, precision="fp32")
    values.update(overrides)
    return values


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=600,
                          env=env)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def as_matrix(label_lists, names) -> np.ndarray:
    return np.array([[name in labels for name in names] for labels in label_lists], dtype=bool)


def test_train_and_predict_a_multi_label_task(tiny_model, ml_data, tmp_path):
    """train.py (--thresholds dev) and predict.py in subprocesses; the scores in results.json equal
    those recomputed from dev_predictions.jsonl and from predict.py's output."""
    out = tmp_path / "run"
    flags = [f"--{k}={v}" for k, v in options(tiny_model, ml_data, out, thresholds="dev", pos_weight="true",
                                                                 tensorboard="true").items()]
    result = run("train.py", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "label lists, so the task is multi-label (3 labels)" in result.stdout
    assert "dev macro-F1" in result.stdout and "with thresholds chosen on dev" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["thresholds"] == "dev" and results["selection_metric"] == "macro_f1"
    test_gold = [json.loads(line)["label"] for line in (ml_data / "test.jsonl").read_text().splitlines()]
    every_label = multilabel_report(as_matrix(test_gold, LABELS), np.ones((40, 3)), 0.5, LABELS)
    assert results["test_macro_f1"] > every_label["macro_f1"] + 0.1  # better than predicting every label
    assert set(results["dev_per_label"]) == set(LABELS) and results["test_count"] == 40
    # --thresholds dev: dev is scored at the thresholds chosen on it, which are stored in best/.
    assert results["dev_macro_f1"] == results["dev_macro_f1_at_chosen_thresholds"]
    assert results["dev_macro_f1_at_chosen_thresholds"] >= results["dev_macro_f1_at_threshold"]
    assert "cross-fitted: each half of dev at the thresholds chosen on the other" in result.stdout
    assert 0 < results["dev_macro_f1_cross_fitted"] <= 1 and 0 < results["dev_micro_f1_cross_fitted"] <= 1
    head = json.loads((out / "best" / "classifier.json").read_text())["head"]
    assert head["multi_label"] is True and head["threshold"] == 0.5
    assert dict(zip(LABELS, head["thresholds"])) == results["dev_chosen_thresholds"]
    # The dev predictions file gives back results.json's dev scores.
    rows = read_jsonl(out / "dev_predictions.jsonl")
    dev_gold = [json.loads(line)["label"] for line in (ml_data / "dev.jsonl").read_text().splitlines()]
    assert [sorted(r["gold"]) for r in rows] == [sorted(g) for g in dev_gold]
    recomputed = multilabel_report(as_matrix(dev_gold, LABELS),
                                   as_matrix([r["predicted"] for r in rows], LABELS).astype(float), 0.5, LABELS)
    assert all(recomputed[k] == pytest.approx(results[f"dev_{k}"], abs=1e-12) for k in MULTI_LABEL_SCORES)
    dev_records = [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "dev"]
    assert dev_records and all(set(MULTI_LABEL_SCORES) <= set(r) for r in dev_records)
    assert max(r["macro_f1"] for r in dev_records) == next(r["macro_f1"] for r in dev_records
                                                          if r["step"] == results["best_step"])
    assert (out / "learning_curves.png").stat().st_size > 10_000
    # --tensorboard: the same dev scalars as metrics.jsonl.
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("dev/macro_f1")] == \
        [(r["step"], pytest.approx(r["macro_f1"], abs=1e-6)) for r in dev_records]

    # fp32 as in training: "auto" is bf16 on a CPU with native bf16, and this tiny model's
    # probabilities lie within 1e-4 of the thresholds.
    result = run("predict.py", str(out / "best"), str(ml_data / "test.jsonl"), "--output", str(tmp_path / "p.jsonl"),
                 "--precision", "fp32")
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = read_jsonl(tmp_path / "p.jsonl")
    thresholds = dict(zip(LABELS, head["thresholds"]))
    for p in predictions:
        assert set(p["probabilities"]) == set(LABELS)
        # Every label whose probability reaches its threshold (rounding to 6 digits aside).
        assert all((name in p["labels"]) == (q >= thresholds[name]) for name, q in p["probabilities"].items()
                   if abs(q - thresholds[name]) > 1e-5)
    recomputed = multilabel_report(as_matrix(test_gold, LABELS),
                                   as_matrix([p["labels"] for p in predictions], LABELS).astype(float), 0.5, LABELS)
    assert recomputed["macro_f1"] == pytest.approx(results["test_macro_f1"], abs=1e-12)
    # --threshold overrides the stored thresholds for one prediction run.
    records = predict.main(predict.PredictConfig(model=str(out / "best"), input=str(ml_data / "test.jsonl"),
                                                 output=str(tmp_path / "p2.jsonl"), threshold=0.999))
    assert all(set(r["labels"]) == {n for n, q in r["probabilities"].items() if q >= 0.999} for r in records)
    assert sum(map(len, (r["labels"] for r in records))) < sum(map(len, (p["labels"] for p in predictions)))


def test_multi_label_resume_gives_the_same_result(tiny_model, ml_data, tmp_path):
    values = dict(epochs=2, checkpoint_every=5, grad_accum_steps=2, batch_size=6, pos_weight=True, thresholds="dev")
    full = finetune(FinetuneConfig.of(**options(tiny_model, ml_data, tmp_path / "full", **values)))
    # 120 / 6 = 20 batches -> 10 steps per epoch; crash after step 13, mid-epoch 2; last/ holds step 10.
    run_interrupted(FinetuneConfig.of(**options(tiny_model, ml_data, tmp_path / "resumed", **values)), 13)
    resumed = finetune(FinetuneConfig.of(**options(tiny_model, ml_data, tmp_path / "resumed", resume=True, **values)))
    a = load_file(tmp_path / "full" / "best" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "best" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda result: {k: v for k, v in result.items() if k not in ("started", "finished", "wall_seconds")}
    assert resumed["best_step"] == full["best_step"] and resumed["test_macro_f1"] == full["test_macro_f1"]
    assert resumed["dev_chosen_thresholds"] == full["dev_chosen_thresholds"]
    assert {k: v for k, v in strip(resumed).items() if k.startswith(("dev_", "test_"))} == \
        {k: v for k, v in strip(full).items() if k.startswith(("dev_", "test_"))}
    drop = lambda path: [{k: v for k, v in r.items() if k != "examples_per_s"} for r in read_jsonl(path)]
    assert drop(tmp_path / "full" / "metrics.jsonl") == drop(tmp_path / "resumed" / "metrics.jsonl")
    assert (tmp_path / "full" / "dev_predictions.jsonl").read_text() == \
        (tmp_path / "resumed" / "dev_predictions.jsonl").read_text()


def test_a_multi_task_run_mixing_single_and_multi_label_tasks(tiny_model, ml_data, tmp_path):
    """Stage 1 selects by the mean of each task's cost (error; 1 - macro-F1); each task is scored
    and saved as its kind; stage 2 trains the multi-label task alone."""
    single = tmp_path / "topics"
    single.mkdir()
    for name, n, seed in (("train", 90, 1), ("dev", 30, 2), ("test", 30, 3)):
        write_split(single / f"{name}.jsonl", n, seed)
    tasks = [{"name": "topic", "train": str(single / "train.jsonl"), "dev": str(single / "dev.jsonl"),
              "test": str(single / "test.jsonl")},
             {"name": "tags", "train": str(ml_data / "train.jsonl"), "dev": str(ml_data / "dev.jsonl"),
              "test": str(ml_data / "test.jsonl")}]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    values = options(tiny_model, ml_data, tmp_path / "run", epochs=2, stage2_epochs=1,
                     tasks_file=str(tmp_path / "tasks.json"))
    for name in ("train_file", "dev_file", "test_file"):
        del values[name]
    results = finetune(FinetuneConfig.of(**values))
    out = tmp_path / "run"
    records = read_jsonl(out / "metrics.jsonl")
    per_task = {}
    for r in records:
        if r["split"] == "dev_task":
            per_task.setdefault(r["step"], {})[r["task"]] = r
    dev = [r for r in records if r["split"] == "dev"]
    for r in dev:  # the selection score, by hand
        assert r["mean_cost"] == pytest.approx((per_task[r["step"]]["topic"]["error"]
                                                + 1 - per_task[r["step"]]["tags"]["macro_f1"]) / 2)
        assert "hamming_loss" in per_task[r["step"]]["tags"] and "error" in per_task[r["step"]]["topic"]
    stage1 = json.loads((out / "multitask_results.json").read_text())
    assert stage1["best_step"] == min(dev, key=lambda r: r["mean_cost"])["step"]
    assert stage1["mean_dev_mean_cost"] == min(r["mean_cost"] for r in dev)
    assert set(results["multitask"]["tasks"]["tags"]) == {"dev_macro_f1", "dev_micro_f1", "test_macro_f1",
                                                          "test_micro_f1", "test_subset_accuracy"}
    assert "test_error" in results["multitask"]["tasks"]["topic"]
    assert "mean_dev_error" not in results["stage2"]  # only one task has an error
    heads = json.loads((out / "best" / "classifier.json").read_text())["tasks"]
    assert heads["tags"]["head"]["multi_label"] is True and "multi_label" not in heads["topic"]["head"]
    assert (out / "dev_predictions.tags.jsonl").is_file()
    assert (out / "stage2" / "tags" / "dev_predictions.jsonl").is_file()
    records = predict.main(predict.PredictConfig(model=str(out / "best"), task="tags",
                                                 input=str(ml_data / "test.jsonl"), output=str(tmp_path / "p.jsonl")))
    assert all("labels" in r and "label" not in r for r in records)


def test_the_goemotions_preset_is_the_reference_recipe():
    values = load_preset(FinetuneConfig, ROOT / "presets" / "goemotions.json")
    cfg = FinetuneConfig.of(**values)
    assert (cfg.text.max_seq_length, cfg.optim.batch_size, cfg.optim.learning_rate, cfg.optim.epochs,
            cfg.optim.warmup_proportion, cfg.multilabel.threshold, cfg.data.multi_label) == \
        (50, 16, 5e-5, 4, 0.1, 0.3, "true")
    deviations = json.loads((ROOT / "presets" / "goemotions.json").read_text())["_deviations"]
    assert all(key in values for name in deviations for key in name.split(", "))


def test_the_minilm_goemotions_preset_lists_every_change_from_the_reference():
    """presets/goemotions_minilm.json: each value where it departs from the reference preset (its own
    output folder aside) is named in its _deviations, and every name there is a field it sets."""
    reference = load_preset(FinetuneConfig, ROOT / "presets" / "goemotions.json")
    values = load_preset(FinetuneConfig, ROOT / "presets" / "goemotions_minilm.json")
    cfg = FinetuneConfig.of(**values)
    assert (cfg.optim.learning_rate, cfg.optim.epochs, cfg.multilabel.thresholds, cfg.multilabel.pos_weight) == \
        (1e-4, 3, "dev", True)
    changed = {key for key in reference.keys() | values.keys()
               if reference.get(key) != values.get(key)} - {"output_dir"}
    deviations = json.loads((ROOT / "presets" / "goemotions_minilm.json").read_text())["_deviations"]
    named = {key for name in deviations for key in name.split(", ")}
    assert changed <= named and named <= values.keys()


def test_a_csv_label_separator_makes_label_lists(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nfootball goal,sport|tech\nbank shares,business\nthe a of,\n")
    (tmp_path / "dev.csv").write_text("text,label\nphone chip,tech\n")
    files = TaskFiles("task", str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"), "")
    said = []
    train, labels, dev, _ = read_task(files, DataOptions(label_separator="|"), 1, said.append)
    assert list(labels.names) == ["business", "sport", "tech"]
    assert train.labels == [[1, 2], [0], []] and dev.labels == [[2]]
    assert "multi-label (3 labels)" in said[0]
