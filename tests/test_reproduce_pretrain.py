"""The runner's further pre-training stage: one shared job per corpus and starting model, Table 5's
corpora, Figure 3's checkpoints, skip/resume of jobs, refusals, and a tiny Figure 3 end to end."""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import INITS, make_run_folder, make_tiny_model, parse_reproduce, reproduce_text

from minibert.cli import from_flat
from minibert.errors import ConfigError
from minibert.experiments import reproduction
from minibert.experiments.paper import ENGLISH7, EXPERIMENTS, FIGURE3, PAPER_PRETRAIN, TABLE5, TABLE6, Experiment, Row
from minibert.experiments.pretraining_jobs import TRAIN_KEYS, job_state, scaled_steps
from minibert.experiments.runner import SCALES, Inits, execute, jobs_of, plan
from minibert.pretraining import STAGES, PretrainConfig

PRESETS = Path(__file__).resolve().parent.parent / "presets" / "pretrain"


def folders(tmp_path, names):
    return {name: tmp_path / "data" / name for name in names}


def by_row(runs):
    return {(run.row.name, run.dataset, run.seed): run for run in runs}


def corpus_and_model(job) -> str:
    """A job folder's name without its settings digest: imdb_bert-base_1a2b3c4d -> imdb_bert-base."""
    name, digest = job.folder.name.rsplit("_", 1)
    assert len(digest) == 8 and int(digest, 16) >= 0, job.folder
    return name


def test_one_job_per_corpus_and_model_shared_by_rows_data_sets_and_seeds(tmp_path):
    out = tmp_path / "out"
    data = folders(tmp_path, ENGLISH7)
    runs = plan(TABLE5, SCALES["paper"], [], [1, 2], INITS, data, out)
    jobs = jobs_of(runs)
    # Table 5: a corpus per row but "w/o pretrain"; each fine-tuned on the seven sets with both seeds.
    assert sorted(map(corpus_and_model, jobs)) == sorted(
        f"{c}_bert-base" for c in ("imdb", "yelp_polarity", "yelp_full", "sentiment", "trec", "yahoo_answers",
                                   "question", "ag_news", "dbpedia", "topic", "all"))
    assert all(sum(run.job is job for run in runs) == 7 * 2 for job in jobs)
    runs = by_row(runs)
    sentiment = runs["all sentiment", "trec", 2]
    assert sentiment.options["init"] == str(sentiment.job.folder / "run/final")
    assert sentiment.job.folder.parent == out / "paper/pretrain"
    assert (runs["w/o pretrain", "imdb", 1].options["init"] == "bert-base"
            and runs["w/o pretrain", "imdb", 1].job is None)
    # The paper's settings (§5.2), records from the data folders' training text only.
    job = sentiment.job
    train, create_data = job.train_config(), job.create_data_config()
    assert {k: train[k] for k in PAPER_PRETRAIN if k != "dupe_factor"} == {
        k: v for k, v in PAPER_PRETRAIN.items() if k != "dupe_factor"}
    assert (create_data["dupe_factor"], create_data["max_seq_length"], create_data["max_predictions_per_seq"]) == (
        5, 128, 20)  # the paper's code's README: dupe_factor 5
    assert train["precision"] == "fp32" and "dupe_factor" not in train
    assert (job.corpus, job.data_dir, job.language, job.train_config()["keep_checkpoints"]) == (
        "sentiment", tmp_path / "data", "en", 1)
    assert runs["IMDb", "imdb", 1].job.checkpoints == ()  # only Figure 3's job keeps its 10k-step models
    # Table 6 names corpora by the data set: ITPT = the data set's own (the same folder as Table 5's
    # IMDb row), IDPT = its domain, CDPT = all seven.
    table6 = by_row(plan(TABLE6, SCALES["paper"], ["imdb", "trec"], [1], INITS, data, out))
    assert table6["BERT-ITPT-FiT", "imdb", 1].options["init"] == runs["IMDb", "imdb", 1].options["init"]
    assert table6["BERT-IDPT-FiT", "trec", 1].options["init"] == str(runs["all question", "trec", 1].job.folder
                                                                     / "run/final")
    assert corpus_and_model(table6["BERT-CDPT-FiT", "imdb", 1].job) == "all_bert-base"


def test_table8_pre_trains_bert_large_with_its_own_settings_in_its_own_folder(tmp_path):
    """§5.7: BERT-large is further pre-trained with batch 24 for 120K steps (the rest as §5.2)."""
    out, data = tmp_path / "out", folders(tmp_path, ENGLISH7)
    large = by_row(plan(EXPERIMENTS["table8"], SCALES["paper"], ["imdb"], [1],
                        Inits("bert-base", large="/m/bert-large"), data, out))
    base, big = large["BERT-base + ITPT", "imdb", 1].job, large["BERT-large + ITPT", "imdb", 1].job
    assert (corpus_and_model(base), corpus_and_model(big)) == ("imdb_bert-base", "imdb_bert-large")
    assert {k: big.train_config()[k] for k in ("train_batch_size", "num_train_steps", "precision")} == {
        "train_batch_size": 24, "num_train_steps": 120_000, "precision": "fp32"}
    assert {k: big.train_config()[k] for k in ("max_seq_length", "learning_rate", "num_warmup_steps")} == {
        "max_seq_length": 128, "learning_rate": 5e-5, "num_warmup_steps": 10_000}
    assert (base.train_config()["train_batch_size"], base.train_config()["num_train_steps"]) == (32, 100_000)
    assert large["BERT-large + ITPT", "imdb", 1].options["precision"] == "fp32"
    # The same corpus and model with other settings is another folder: the digest names the settings.
    same_model = by_row(plan(EXPERIMENTS["table8"], SCALES["paper"], ["imdb"], [1],
                             Inits("/m/bert-large", large="/m/bert-large"), data, out))
    assert same_model["BERT-base + ITPT", "imdb", 1].job.folder != same_model["BERT-large + ITPT", "imdb", 1].job.folder
    # --precision overrides the recipe's fp32 for fine-tuning and pre-training alike, in another folder.
    bf16 = by_row(plan(EXPERIMENTS["table8"], SCALES["paper"], ["imdb"], [1], Inits("bert-base", large="/m/bert-large"),
                       data, out, {"precision": "bf16"}))
    job = bf16["BERT-large + ITPT", "imdb", 1].job
    assert job.train_config()["precision"] == "bf16" and job.folder != big.folder
    assert bf16["BERT-large", "imdb", 1].options["precision"] == "bf16"


def test_a_misspelt_or_missing_pre_training_setting_is_an_error_when_the_plan_is_built(tmp_path):
    data = folders(tmp_path, ["imdb"])
    typo = Experiment("typo", "A typo", ("imdb",),
                      (Row("ITPT", pretrain="imdb", pretrain_settings={"num_train_step": 5}),))
    with pytest.raises(ConfigError, match="^row 'ITPT': pre-training unknown setting num_train_step$"):
        plan(typo, SCALES["paper"], [], [1], INITS, data, tmp_path)
    unsaved = {k: v for k, v in PAPER_PRETRAIN.items() if k != "save_checkpoints_steps"}
    scale = replace(SCALES["paper"], pretrain=unsaved)
    with pytest.raises(ConfigError, match="^row 'ITPT': pre-training missing save_checkpoints_steps$"):
        plan(replace(typo, rows=(Row("ITPT", pretrain="imdb"),)), scale, [], [1], INITS, data, tmp_path)


def test_presets_hold_the_runners_paper_settings():
    """presets/pretrain write out the settings the runner uses at the paper scale."""
    for path in sorted(PRESETS.glob("*.json")):
        preset = json.loads(path.read_text())
        train = {k: v for k, v in PAPER_PRETRAIN.items() if k in TRAIN_KEYS}
        assert {k: preset[k] for k in train} == train, path.name
        # create_data's settings are in the records command the preset gives.
        assert f"--dupe_factor={PAPER_PRETRAIN['dupe_factor']}" in preset["_paper"], path.name
        PretrainConfig.of(path.name, **{k: v for k, v in preset.items() if not k.startswith("_")})


def test_refusals_name_what_is_missing(tmp_path):
    runs = by_row(plan(TABLE5, SCALES["small"], ["imdb"], [1], INITS, folders(tmp_path, ["imdb"]), tmp_path))
    assert runs["all sentiment", "imdb", 1].refused == (
        "pre-training on sentiment needs data sets that are not prepared: yelp_polarity, yelp_full "
        "(data/<name>/prepare.py)")
    assert runs["IMDb", "imdb", 1].state == "new" and runs["w/o pretrain", "imdb", 1].state == "new"
    sogou = folders(tmp_path, ["sogou_news"])
    table6 = by_row(plan(TABLE6, SCALES["paper"], ["sogou_news"], [1], INITS, sogou, tmp_path))
    assert table6["BERT-IDPT-FiT", "sogou_news", 1].refused.startswith("no in-domain corpus for sogou_news")
    assert "English text" in table6["BERT-CDPT-FiT", "sogou_news", 1].refused
    itpt = table6["BERT-ITPT-FiT", "sogou_news", 1].job  # Sogou's own text, split after 。？！, Chinese BERT
    assert (itpt.corpus, itpt.language, itpt.init) == (str(sogou["sogou_news"] / "train.jsonl"), "zh", "bert-chinese")
    imdb = folders(tmp_path, ["imdb"])
    table8 = by_row(plan(EXPERIMENTS["table8"], SCALES["paper"], ["imdb"], [1], INITS, imdb, tmp_path))
    assert table8["BERT-large + ITPT", "imdb", 1].refused == "needs BERT-large: give --init_large"


def test_figure3_fine_tunes_the_checkpoint_of_each_step(tmp_path):
    paper = by_row(plan(FIGURE3, SCALES["paper"], [], [1], INITS, folders(tmp_path, ["imdb"]), tmp_path))
    run_dir = paper["10k", "imdb", 1].job.run_dir
    assert corpus_and_model(paper["10k", "imdb", 1].job) == "imdb_bert-base"
    assert [paper[f"{k}k", "imdb", 1].options["init"] for k in (10, 50, 100)] == [
        str(run_dir / f"checkpoint-{k}000") for k in (10, 50, 100)]
    assert paper["0", "imdb", 1].options["init"] == "bert-base" and paper["100k", "imdb", 1].row.paper == {"imdb": 4.37}
    assert len(jobs_of(list(paper.values()))) == 1
    assert scaled_steps(FIGURE3, SCALES["paper"].pretrain, "paper") is FIGURE3
    # The small scale keeps its model every 100 of its 300 steps: Figure 3's points, labelled so.
    small = scaled_steps(FIGURE3, SCALES["small"].pretrain, "small")
    assert [(row.name, row.x, row.pretrain_step) for row in small.rows] == [
        ("0", 0, 0), ("100 steps", 100, 100), ("200 steps", 200, 200), ("300 steps (paper: 100k)", 300, 300)]
    assert "NOT the paper's" in small.x_label and small.rows[-1].paper == {"imdb": 4.37}
    runs = plan(small, SCALES["small"], [], [1, 2], INITS, folders(tmp_path, ["imdb"]), tmp_path)
    job = jobs_of(runs)[0]
    assert job.train_config()["keep_checkpoints"] == 4 and job.train_config()["save_checkpoints_steps"] == 100
    assert corpus_and_model(job) == "imdb_minilm"
    assert [run.options["init"] for run in runs if run.seed == 2] == ["minilm"] + [
        str(job.run_dir / f"checkpoint-{s}") for s in (100, 200, 300)]
    # A step the scale does not save is refused, as is a checkpoint missing from a finished job.
    odd = replace(FIGURE3, rows=(Row("150", {}, pretrain="within", pretrain_step=150),))
    assert plan(odd, SCALES["small"], [], [1], INITS, folders(tmp_path, ["imdb"]), tmp_path)[0].refused == \
        "no model after 150 pre-training steps: this scale keeps 100, 200, 300"
    (job.run_dir / "final").mkdir(parents=True)
    again = plan(small, SCALES["small"], [], [1], INITS, folders(tmp_path, ["imdb"]), tmp_path)
    assert again[1].refused == (f"{job.run_dir / 'checkpoint-100'} is missing: the pre-training finished without "
                                f"its checkpoints (run for another experiment first); delete {job.run_dir} "
                                "to pre-train again")


def test_only_figure3s_job_keeps_the_10k_step_checkpoints(tmp_path):
    """Every 10k-step model of a BERT-base job is 440 MB: only Figure 3 fine-tunes them, so only the
    job a Figure 3 row needs keeps them (keep_checkpoints K keeps the K-1 newest checkpoint-STEP/)."""
    data = folders(tmp_path, ENGLISH7)
    figure3 = jobs_of(plan(FIGURE3, SCALES["paper"], [], [1], INITS, data, tmp_path))
    assert [job.checkpoints for job in figure3] == [tuple(range(10_000, 100_001, 10_000))]
    assert figure3[0].train_config()["keep_checkpoints"] == 11
    for name, datasets in (("table5", []), ("table6", ["imdb"]), ("table7", []), ("figure4", []),
                           ("table8", ["imdb"])):
        jobs = jobs_of(plan(EXPERIMENTS[name], SCALES["paper"], datasets, [1], INITS, data, tmp_path))
        assert jobs and all(job.checkpoints == () and job.train_config()["keep_checkpoints"] == 1
                            for job in jobs), name
        if name == "table6":  # the same IMDb pre-training (one folder), without Figure 3's checkpoints
            assert figure3[0].folder in {job.folder for job in jobs}
    small = jobs_of(plan(scaled_steps(FIGURE3, SCALES["small"].pretrain, "small"), SCALES["small"], [], [1], INITS,
                         data, tmp_path))
    assert small[0].train_config()["keep_checkpoints"] == 4


TINY = Experiment("tiny", "Tiny", ("imdb",), (
    Row("FiT", {}), Row("ITPT", {}, pretrain="within"), Row("ITPT 2", {"layer_decay": 0.9}, pretrain="within"),
))


def test_finished_job_skipped_interrupted_resumed(tmp_path):
    out = tmp_path / "out"
    data = folders(tmp_path, ["imdb", "trec"])
    runs = plan(TINY, SCALES["small"], ["imdb", "trec"], [1], INITS, data, out)
    imdb, trec = jobs_of(runs)
    assert (imdb.state, trec.state) == ("new", "new")
    # trec: finished; imdb: its records made, then interrupted after a checkpoint.
    (trec.run_dir / "final").mkdir(parents=True)
    (imdb.folder / "records").mkdir(parents=True)
    (imdb.folder / "records" / "manifest.json").write_text("{}")
    (imdb.run_dir / "last").mkdir(parents=True)
    runs = plan(TINY, SCALES["small"], ["imdb", "trec"], [1], INITS, data, out)
    imdb, trec = jobs_of(runs)
    assert (imdb.state, trec.state) == ("resume", "done") and trec.stages("cpu") == []
    [(stage, config)] = imdb.stages("cuda:1")
    assert stage == "train" and config["resume"] and not config["overwrite_output_dir"]
    assert (config["device"], config["input_file"], config["output_dir"]) == (
        "cuda:1", str(imdb.folder / "records"), str(imdb.run_dir))
    launched = []

    def pretrain_stages(stages, device):
        launched.append([name for name, _ in stages])
        (Path(stages[-1][1]["output_dir"]) / "final").mkdir()

    def launch(config, device):
        assert config.init == "minilm" or config.init.endswith("run/final")
        make_run_folder(Path(config.run.output_dir), error=0.1)

    execute(runs, ["cpu"], launch, pretrain=pretrain_stages)
    assert launched == [["train"]]  # once for the two imdb rows; trec's is finished
    assert all(run.state == "done" for run in runs) and job_state(imdb.folder) == "done"


def test_new_job_runs_every_stage_and_a_failed_job_fails_its_runs(tmp_path):
    runs = plan(TINY, SCALES["small"], [], [1, 2], INITS, folders(tmp_path, ["imdb"]), tmp_path)
    [job] = jobs_of(runs)
    stages = dict(job.stages("cpu"))
    assert list(stages) == ["corpus", "create_data", "train"]
    assert stages["corpus"] == {"sources": "imdb", "output_file": str(job.folder / "corpus.txt"),
                                "data_dir": str(tmp_path / "data"), "language": "en"}
    assert stages["create_data"]["vocab_file"].endswith("vocab.txt")  # MiniLM's
    assert (stages["create_data"]["max_seq_length"], stages["create_data"]["max_predictions_per_seq"]) == (128, 20)
    assert stages["train"]["overwrite_output_dir"] and not stages["train"]["resume"]
    for name, config in stages.items():  # every stage is a valid pretrain.py config
        from_flat(STAGES[name][1], config, name)
    fine_tuned = []

    def broken(stages, device):
        raise SystemExit("pretrain.py: --input_file: no records")

    execute(runs, ["cpu"], lambda config, device: fine_tuned.append(config), pretrain=broken)
    assert fine_tuned and all("run/final" not in c.init for c in fine_tuned)  # only the FiT row ran
    failed = [run for run in runs if run.job is not None]
    assert len(failed) == 4 and {run.error for run in failed} == {
        f"pre-training {job.folder} failed: pretrain.py: --input_file: no records"}


def test_a_folder_of_another_pretraining_is_not_overwritten(tmp_path):
    runs = plan(TINY, SCALES["small"], [], [1], INITS, folders(tmp_path, ["imdb"]), tmp_path)
    [job] = jobs_of(runs)
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "config.json").write_text(json.dumps({**job.train_config(), "num_train_steps": 50,
                                                         "device": "cuda", "precision": "bf16"}))
    [job] = jobs_of(plan(TINY, SCALES["small"], [], [1], INITS, folders(tmp_path, ["imdb"]), tmp_path))
    assert job.state == "refused" and job.refused == (
        f"{job.run_dir} holds a pre-training with other num_train_steps: move it away or use another --output_dir")


def write_split(folder, n, rng):
    topics = {"sport": "goal team match coach".split(), "money": "bank price market shares".split()}
    filler = "the a of and to in is".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("dev", 20), ("test", 20)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(count):
                label = "sport" if i % 2 else "money"
                sentences = [" ".join(rng.sample(topics[label], 3) + rng.sample(filler, 2)) + "." for _ in range(3)]
                f.write(json.dumps({"text": " ".join(sentences), "label": label}) + "\n")
    return {w for ws in topics.values() for w in ws} | set(filler) | {"."}


def test_command_line_dry_run_lists_the_jobs(tmp_path, capsys):
    words = write_split(tmp_path / "data" / "imdb", 30, random.Random(0))
    model = make_tiny_model(tmp_path / "model", sorted(words))
    argv = ["table5", "--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"),
            "--datasets", "imdb", "--init", str(model), "--dry_run", "true"]
    text = reproduce_text(parse_reproduce(argv))
    printed = capsys.readouterr().out
    assert "further pre-training, scale paper: 11 jobs - 0 done, 0 resume, 1 new, 10 refused" in printed
    [line] = [line for line in printed.splitlines() if line.startswith("  new ")]
    assert line.startswith(f"  new     {tmp_path / 'out/paper/pretrain/imdb_model_'}")
    assert line.endswith(f": imdb from {model}, 100000 steps of 32; 1 runs fine-tune it")
    assert "12 runs - 0 done, 0 resume, 2 new, 10 refused" in printed
    assert "pre-training on sentiment needs data sets that are not prepared: yelp_polarity, yelp_full" in text
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_figure3_end_to_end_at_a_tiny_scale(tmp_path, monkeypatch, capsys):
    """Figure 3 on a tiny model and a two-topic data set: one pre-training (corpus, records, 4 steps
    with a model kept every 2), three fine-tunings from 0, 2 and 4 steps, the table and the PNG; a
    second call skips everything."""
    torch.set_num_threads(1)
    words = write_split(tmp_path / "data" / "topics", 40, random.Random(0))
    model = make_tiny_model(tmp_path / "model", sorted(words))
    tiny_scale = replace(SCALES["small"], recipe={**SCALES["small"].recipe, "max_seq_length": 24, "epochs": 4,
                                                  "batch_size": 4, "learning_rate": 2e-3, "threads": 1},
                         english_init=str(model), train_examples=40, dev_examples=20, test_examples=20,
                         pretrain={**SCALES["small"].pretrain, "train_batch_size": 4, "max_seq_length": 32,
                                   "max_predictions_per_seq": 5, "num_train_steps": 4, "num_warmup_steps": 0,
                                   "save_checkpoints_steps": 2, "learning_rate": 1e-3, "precision": "fp32",
                                   "threads": 1})
    monkeypatch.setitem(SCALES, "small", tiny_scale)
    argv = ["figure3", "--scale", "small", "--datasets", "topics", "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out"), "--devices", "cpu"]
    first = reproduce_text(parse_reproduce(argv))
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in first.splitlines()
            if line.startswith("| ") and "method" not in line}
    assert list(rows) == ["0", "2 steps", "4 steps (paper: 100k)"]
    assert all(0 <= float(error) <= 100 for error in rows.values()), first
    [job] = (tmp_path / "out/small/pretrain").glob("topics_model_*")
    assert sorted(p.name for p in (job / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    manifest = json.loads((job / "corpus.txt.manifest.json").read_text())
    assert [s["file"] for s in manifest["sources"]] == [str(tmp_path / "out/small/data/topics/train.jsonl")]
    png = tmp_path / "out/small/figure3/figure3_topics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert reproduce_text(parse_reproduce(argv)) == first
    printed = capsys.readouterr().out
    assert "1 jobs - 1 done" in printed and "3 runs - 3 done" in printed


def test_resume_false_starts_an_interrupted_job_again(tmp_path):
    data = folders(tmp_path, ["imdb"])
    [job] = jobs_of(plan(TINY, SCALES["small"], [], [1], INITS, data, tmp_path))
    (job.run_dir / "last").mkdir(parents=True)
    runs = plan(TINY, SCALES["small"], [], [1], INITS, data, tmp_path)
    cfg = parse_reproduce(["table5", "--resume", "false"])
    reproduction.check_before_running(runs, cfg.resume)
    [job] = jobs_of(runs)
    train_config = dict(job.stages("cpu"))["train"]
    assert job.state == "new" and not train_config["resume"] and train_config["overwrite_output_dir"]


@pytest.mark.slow
def test_pretrain_stages_as_processes(tmp_path):
    """With several devices each stage is a pretrain.py process logging to the job's pretrain.log;
    a failing stage stops the job with the log's path."""
    (tmp_path / "texts.jsonl").write_text(json.dumps({"text": "One sentence. And another one.", "label": "x"}) + "\n")
    job = tmp_path / "job"
    stages = [("corpus", {"sources": str(tmp_path / "texts.jsonl"), "output_file": str(job / "corpus.txt")}),
              ("train", {"input_file": str(job / "records"), "output_dir": str(job / "run"), "num_train_steps": 0})]
    with pytest.raises(RuntimeError, match=f"pre-training stage train exited with 2; see {job / 'pretrain.log'}"):
        reproduction.pretrain_as_subprocess(stages, "cpu")
    assert (job / "corpus.txt").read_text() == "One sentence.\nAnd another one.\n\n"
    log = (job / "pretrain.log").read_text()
    assert "wrote 1 documents" in log and "--num_train_steps 0: must be at least 1" in log
    assert json.loads((job / "reproduce_corpus.json").read_text()) == stages[0][1]
