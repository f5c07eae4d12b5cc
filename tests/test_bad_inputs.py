"""The bad-input catalogue: hostile and careless command lines against every script, each run as a
subprocess as a user would run it.

Every row names a script and its arguments over a small workspace (a tiny model, a tiny data set, a
corpus, a user's notes, an earlier run), the exit status it must end with, a pattern its stderr must
match, and whether the workspace may change. A refused command ends with status 2 and one line
`error: ...` naming the file, option or key, no traceback, and leaves every file of the workspace
byte for byte as it was. The data-loss rows (marked "loss") each failed before the output-path
policy (minibert/output_paths.py): the command deleted or overwrote a user's files.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, RECORDS, ROOT, SAMPLE_TEXT, make_tiny_model, write_split
from safetensors.torch import save_file

import pretrain
from minibert.checkpoints.classifier import save_classifier
from minibert.model.config import BertConfig
from minibert.model.heads import BertClassifier, HeadConfig
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer

TIMEOUT = 120


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The user's workspace: what the rows read, and what none of them may lose."""
    ws = tmp_path_factory.mktemp("workspace")
    model = make_tiny_model(ws / "model")
    (ws / "data").mkdir()
    for name, n, seed in (("train", 30, 1), ("dev", 9, 2), ("test", 9, 3)):
        write_split(ws / "data" / f"{name}.jsonl", n, seed)
    (ws / "one_class.jsonl").write_text("".join(json.dumps({"text": f"goal {i}", "label": "sport"}) + "\n"
                                                for i in range(6)))
    (ws / "notes").mkdir()
    (ws / "notes" / "ideas.txt").write_text("my notes\n")
    (ws / "corpus").mkdir()
    shutil.copy(SAMPLE_TEXT, ws / "corpus" / "text.txt")
    shutil.copy(FIXTURES / "tiny_google" / "vocab.txt", ws / "vocab.txt")
    (ws / "a_file").write_text("not a folder\n")
    (ws / "texts.jsonl").write_text('{"text": "football match"}\n{"text": "bank shares"}\n')
    # An earlier run: a run folder (config.json with metrics.jsonl) holding results the user keeps.
    (ws / "run").mkdir()
    (ws / "run" / "config.json").write_text(json.dumps({"output_dir": str(ws / "run")}) + "\n")
    (ws / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    (ws / "run" / "results.json").write_text('{"test_error": 0.1}\n')
    # A classifier folder (as train.py writes best/), untrained: the rows never get to its numbers.
    classifier = BertClassifier(BertConfig.from_json_file(model / "config.json"), HeadConfig(num_labels=3))
    save_classifier(ws / "classifier", classifier, ["business", "sport", "tech"],
                    TextEncoding(max_seq_length=24, head_tokens=6), FullTokenizer(model / "vocab.txt"),
                    model / "vocab.txt")
    (ws / "classifier.old").mkdir()  # a user's backup beside a folder the scripts swap
    (ws / "classifier.old" / "notes.txt").write_text("backup\n")
    (ws / "loop").symlink_to(ws / "loop")
    hf_folders(ws, model)
    multi_label_files(ws / "ml")
    run_folders(ws)
    return ws


def multi_label_files(folder: Path) -> None:
    """Multi-label splits: a good train and dev, a dev naming a label training never has (line 3),
    and a training file listing a label twice (line 2)."""
    folder.mkdir()
    rows = [(["sport"], "football goal"), (["business", "tech"], "bank software"), ([], "the a of"),
            (["tech"], "computer chip"), (["business"], "shares market"), (["sport", "tech"], "goal phone")]
    write = lambda name, rows: (folder / name).write_text(
        "".join(json.dumps({"text": text, "label": labels}) + "\n" for labels, text in rows))
    write("train.jsonl", rows)
    write("dev.jsonl", rows[:3])
    write("dev_unseen.jsonl", [*rows[:2], (["politics"], "vote")])
    write("twice.jsonl", [rows[0], (["tech", "tech"], "chip"), *rows[2:]])


def hf_folders(ws: Path, model: Path) -> None:
    """A Hugging Face folder whose pytorch_model.bin pickles more than tensors, and one whose
    config.json lacks num_attention_heads."""
    config = json.loads((model / "config.json").read_text())
    (ws / "hostile").mkdir()
    (ws / "hostile" / "config.json").write_text(json.dumps(config))
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2), "payload": Path("x")},
               ws / "hostile" / "pytorch_model.bin")
    (ws / "headless").mkdir()
    del config["num_attention_heads"]
    (ws / "headless" / "config.json").write_text(json.dumps(config))
    shutil.copy(model / "model.safetensors", ws / "headless" / "model.safetensors")


def run_folders(ws: Path) -> None:
    """Run folders of each kind, and two earlier runs whose last/trainer.pt is not save_run's: one a
    pickle of more than tensors, one of the right keys with a wrong type (their sums in run.json fit)."""
    for name, kind in (("pt_run", "pre-training"), ("ft_run", "fine-tuning"), ("hostile_run", ""), ("typed_run", "")):
        (ws / name / "last").mkdir(parents=True)
        (ws / name / "config.json").write_text(json.dumps({"output_dir": str(ws / name)}) + "\n")
        (ws / name / "metrics.jsonl").write_text('{"step": 1}\n')
        if kind:
            (ws / name / ".minibert_run.json").write_text(json.dumps({"kind": kind}) + "\n")
    trainers = {"hostile_run": {"optimizer": {}, "scheduler": {}, "scaler": {}, "rng": [], "state": {"x": Path("x")}},
                "typed_run": {"optimizer": "sgd", "scheduler": {}, "scaler": {}, "rng": [], "state": {}}}
    for name, trainer in trainers.items():
        last = ws / name / "last"
        save_file({"w": torch.zeros(2)}, last / "model.safetensors")
        torch.save(trainer, last / "trainer.pt")
        sums = {f: hashlib.sha256((last / f).read_bytes()).hexdigest() for f in ("model.safetensors", "trainer.pt")}
        (last / "run.json").write_text(json.dumps({"sha256": sums}))


def checksums(folder: Path) -> dict:
    """Every file under the folder (symlinks as their target text) -> sha256."""
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            sums[str(path)] = os.readlink(path)
        elif path.is_file():
            sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def run(args: list[str], cwd: Path = ROOT, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script, *rest = args
    return subprocess.run([sys.executable, str(ROOT / script), *rest], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


TRAIN = ["train.py", "--init", "{ws}/model", "--train_file", "{ws}/data/train.jsonl", "--dev_file",
         "{ws}/data/dev.jsonl", "--test_file", "{ws}/data/test.jsonl", "--max_seq_length", "24", "--head_tokens", "6",
         "--epochs", "1", "--batch_size", "8", "--device", "cpu", "--threads", "1", "--precision", "fp32"]
ML_TRAIN = [*TRAIN, "--train_file", "{ws}/ml/train.jsonl", "--dev_file", "{ws}/ml/dev.jsonl", "--test_file", "",
            "--output_dir", "{ws}/new_run"]
PRETRAIN = ["pretrain.py", "train", f"--init={FIXTURES / 'tiny_google'}", f"--input_file={RECORDS}",
            "--max_seq_length=64", "--max_predictions_per_seq=10", "--train_batch_size=2", "--num_train_steps=2",
            "--num_warmup_steps=1",
            "--device=cpu", "--threads=1", "--precision=fp32"]
REPRODUCE = ["reproduce.py", "table4", "--data_dir", "{ws}", "--datasets", "data", "--dry_run", "true"]
CREATE = ["pretrain.py", "create_data", "--input_file={ws}/corpus/text.txt", "--vocab_file={ws}/vocab.txt",
          "--max_seq_length=32", "--max_predictions_per_seq=5", "--dupe_factor=1"]


@dataclass
class Row:
    id: str
    args: list[str]
    message: str  # a pattern the one stderr line `error: ...` must match
    status: int = 2
    loss: bool = False  # a data-loss case: before the policy the command deleted or overwrote files
    cwd: str = ""  # "ws": run in the workspace instead of the repository root


ROWS = [
    # Data loss.
    Row("create_data into a folder of notes", [*CREATE, "--output_file={ws}/notes"],
        r"--output_file .*notes: holds files that are not create_data's records \(ideas.txt\)", loss=True),
    Row("create_data into the folder holding its corpus", [*CREATE, "--output_file={ws}/corpus"],
        r"--output_file .*corpus holds --input_file .*text.txt", loss=True),
    Row("create_data into the current folder", [*CREATE, "--output_file=."],
        r"--output_file .*(holds files that are not create_data's records|holds --input_file)", loss=True, cwd="ws"),
    Row("create_data into the vocabulary file", [*CREATE, "--output_file={ws}/vocab.txt"],
        r"--output_file .*vocab.txt is also --vocab_file", loss=True),
    Row("create_data into its input file", [*CREATE, "--output_file={ws}/corpus/text.txt"],
        r"--output_file .*text.txt is also --input_file", loss=True),
    Row("predict over the model's vocabulary", ["predict.py", "{ws}/classifier", "{ws}/texts.jsonl", "--output",
                                                "{ws}/classifier/vocab.txt"],
        r"--output .*classifier/vocab.txt is also MODEL", loss=True),
    Row("predict over the model's classifier.json", ["predict.py", "{ws}/classifier", "{ws}/texts.jsonl", "--output",
                                                     "{ws}/classifier/classifier.json"],
        r"--output .*classifier/classifier.json is also MODEL", loss=True),
    Row("predict over its preset", ["predict.py", "{ws}/classifier", "{ws}/texts.jsonl", "--preset",
                                    "{ws}/predict_preset.json", "--output", "{ws}/predict_preset.json"],
        r"--output .*predict_preset.json is also --preset", loss=True),
    Row("corpus over its source file", ["pretrain.py", "corpus", "--sources={ws}/corpus/text.txt",
                                        "--output_file={ws}/corpus/text.txt"],
        r"--output_file .*text.txt is also --sources", loss=True),
    Row("corpus over a data set it reads", ["pretrain.py", "corpus", "--sources=bbc_news", "--data_dir={ws}/datasets",
                                            "--output_file={ws}/datasets/bbc_news/train.jsonl"],
        r"--output_file .*bbc_news/train.jsonl is also --sources bbc_news", loss=True),
    Row("corpus over a data set not prepared yet", ["pretrain.py", "corpus", "--sources=sentiment",
                                                    "--data_dir={ws}/datasets",
                                                    "--output_file={ws}/datasets/imdb/train.jsonl"],
        r"--output_file .*imdb/train.jsonl is also --sources imdb", loss=True),
    Row("convert over another model", ["checkpoints_convert.py", str(FIXTURES / "tiny_google"), "{ws}/classifier",
                                       "--format", "hf"],
        r"classifier: holds another model .*--overwrite true replaces it", loss=True),
    Row("convert into a folder above its source", ["checkpoints_convert.py", "{ws}/model", "{ws}", "--format", "hf"],
        r"holds files that are not a checkpoint's|DST .* holds SRC", loss=True),
    Row("predict over its input", ["predict.py", "{ws}/classifier", "{ws}/texts.jsonl", "--output",
                                   "{ws}/texts.jsonl"],
        r"--output .*texts.jsonl is also INPUT", loss=True),
    Row("train into its init model", [*TRAIN, "--init", "{ws}/model", "--output_dir", "{ws}/model",
                                      "--overwrite_output_dir", "true"],
        r"--output_dir .*model is also --init", loss=True),
    Row("train over a folder that is not a run", [*TRAIN, "--output_dir", "{ws}/notes", "--overwrite_output_dir",
                                                  "true"],
        r"--output_dir .*notes: holds files that are not a minibert run's", loss=True),
    Row("overwrite a run with an infinite learning rate", [*TRAIN, "--output_dir", "{ws}/run",
                                                           "--overwrite_output_dir", "true", "--learning_rate", "inf"],
        r"--learning_rate inf: must be a finite number"),
    Row("overwrite a run with a missing test file", [*TRAIN, "--output_dir", "{ws}/run", "--overwrite_output_dir",
                                                     "true", "--test_file", "{ws}/nowhere.jsonl"],
        r"nowhere.jsonl"),
    Row("a new run over an earlier one", [*TRAIN, "--output_dir", "{ws}/run"],
        r"--output_dir .*run is not empty .*--overwrite_output_dir replaces it"),
    Row("reproduce into the data set it reads", [*REPRODUCE, "--output_dir", "{ws}/data"],
        r"--output_dir .*data is also --datasets data", loss=True),
    Row("reproduce into a folder of notes", [*REPRODUCE, "--output_dir", "{ws}/notes"],
        r"--output_dir notes|--output_dir .*notes: holds files that are not reproduce.py's .*ideas.txt", loss=True),
    Row("reproduce into the current folder", [*REPRODUCE, "--output_dir", "."],
        r"--output_dir .*(is also|holds) --data_dir", loss=True, cwd="ws"),
    Row("reproduce --datasets escaping its folder", [*REPRODUCE[:-4], "--datasets", "../data", "--output_dir",
                                                     "{ws}/new_run"],
        r"--datasets \.\./data: not a data set name", loss=True),
    # Crashes that were tracebacks.
    Row("train --output_dir is a file", [*TRAIN, "--output_dir", "{ws}/a_file"],
        r"--output_dir .*a_file: is a file, not a folder"),
    Row("pretrain train --output_dir is a file", [*PRETRAIN, "--output_dir={ws}/a_file"],
        r"--output_dir .*a_file: is a file, not a folder"),
    Row("pretrain train into the records it reads by glob", [*PRETRAIN, "--init={ws}/model", "--input_file={ws}/rec*",
                                                             "--output_dir={ws}/records",
                                                             "--overwrite_output_dir=true"],
        r"--output_dir .*records is also --input_file"),
    Row("vocab --output_file is a folder", ["pretrain.py", "vocab", "--input_file={ws}/corpus/text.txt",
                                            "--output_file={ws}/notes"],
        r"--output_file .*notes: is a folder; give a file name"),
    Row("corpus --output_file is the current folder", ["pretrain.py", "corpus", "--sources=sentiment",
                                                       "--output_file=."],
        r"--output_file \.: is a folder; give a file name", cwd="ws"),
    Row("train --output_dir in a symlink loop", [*TRAIN, "--output_dir", "{ws}/loop/run"],
        r"--output_dir .*loop/run: cannot be resolved"),
    Row("convert DST in a symlink loop", ["checkpoints_convert.py", str(FIXTURES / "tiny_google"), "{ws}/loop/x"],
        r"DST .*loop/x: cannot be resolved"),
    Row("reproduce --output_dir is a file", [*REPRODUCE, "--output_dir", "{ws}/a_file"],
        r"--output_dir .*a_file: is a file, not a folder"),
    # Silent mistakes.
    Row("reproduce --seeds twice the same", [*REPRODUCE, "--seeds", "1,1", "--output_dir", "{ws}/new_run"],
        r"--seeds 1,1: 1 given twice"),
    Row("reproduce --scale small with an --init it ignores", [*REPRODUCE, "--scale", "small", "--init",
                                                              "{ws}/nowhere", "--output_dir", "{ws}/new_run"],
        r"--init .*nowhere: --scale small fine-tunes its own model"),
    Row("reproduce --devices the machine lacks", [*REPRODUCE, "--devices", "cuda:99", "--output_dir", "{ws}/new_run"],
        r"--devices cuda:99: (CUDA is not available|this machine has)"),
    Row("reproduce without an experiment", ["reproduce.py"], r"usage: reproduce.py EXPERIMENT \[options\]"),
    Row("a key twice in --tasks_file", ["train.py", "--tasks_file", "{ws}/tasks.json", "--init", "{ws}/model",
                                        "--output_dir", "{ws}/new_run"],
        r"--tasks_file .*tasks.json: cannot read it \(key train given twice\)"),
    Row("a training split with one class", [*TRAIN, "--train_file", "{ws}/one_class.jsonl", "--output_dir",
                                            "{ws}/new_run"],
        r"one_class.jsonl: the training split has 1 class \(sport\): a classifier needs at least two"),
    # Ugly messages.
    Row("a pickle that is more than tensors", ["checkpoints_convert.py", "{ws}/hostile", "{ws}/new_run"],
        r"pytorch_model.bin: cannot read PyTorch weights file: it holds objects other than tensors"),
    Row("a config without num_attention_heads", ["checkpoints_convert.py", "{ws}/headless", "{ws}/new_run"],
        r"config.json: .*num_attention_heads missing from the config"),
    Row("an unknown data set", ["reproduce.py", "table4", "--scale", "small", "--datasets", "nosuch", "--data_dir",
                                "{ws}/data", "--output_dir", "{ws}/new_run", "--dry_run", "true"],
        r"nosuch/train.jsonl: no such file; there is no data/nosuch/prepare.py \(data sets that have one: ag_news"),
    Row("records made with another vocabulary", [*PRETRAIN, "--init={ws}/model", "--input_file={ws}/records",
                                                  "--max_seq_length=32", "--max_predictions_per_seq=5",
                                                  "--output_dir={ws}/new_run"],
        r"records: made with another vocab.txt than .*model/vocab.txt \(its manifest's vocab_sha256 differs\)"),
    Row("predict --task on a single-task model", ["predict.py", "{ws}/classifier", "{ws}/texts.jsonl", "--task",
                                                  "ag_news"],
        r"classifier.json: a single-task classifier, there is no task 'ag_news' to choose"),
    # Multi-label tasks.
    Row("a label list with --multi_label false", [*ML_TRAIN, "--multi_label", "false"],
        r"ml/train.jsonl:1: label must be a string or an integer, got list"),
    Row("a threshold outside (0, 1)", [*ML_TRAIN, "--threshold", "1.5"], r"--threshold 1.5: must be in \(0, 1\)"),
    Row("--thresholds dev without a dev split", [*ML_TRAIN, "--dev_file", "", "--thresholds", "dev"],
        r"--thresholds dev chooses each label's threshold on the dev split: give --dev_file"),
    Row("a label listed twice in one row", [*ML_TRAIN, "--train_file", "{ws}/ml/twice.jsonl"],
        r"ml/twice.jsonl:2: label 'tech' is listed twice"),
    Row("a dev label training never has", [*ML_TRAIN, "--dev_file", "{ws}/ml/dev_unseen.jsonl"],
        r"ml/dev_unseen.jsonl:3: label 'politics' not seen in training"),
    Row("class weights for a multi-label task", [*ML_TRAIN, "--class_weighted_loss", "true"],
        r"--class_weighted_loss applies to single-label tasks "
        r"\(a multi-label task weighs its labels with --pos_weight"),
    Row("a threshold for a single-label task", [*TRAIN, "--threshold", "0.3", "--output_dir", "{ws}/new_run"],
        r"--threshold applies to multi-label tasks, and this run has none"),
    Row("a multi-label metric for a single-label task", [*TRAIN, "--selection_metric", "hamming_loss",
                                                         "--output_dir", "{ws}/new_run"],
        r"--selection_metric hamming_loss: the single_label task task is scored by error, accuracy, macro_f1"),
    Row("predict --threshold with a single-label model", ["predict.py", "{ws}/classifier", "{ws}/texts.jsonl",
                                                          "--threshold", "0.3"],
        r"--threshold applies to a multi-label model; .*classifier is single-label"),
    # Earlier hardening.
    Row("an unknown flag", ["train.py", "--learning_rat", "1e-3"], r"unrecognized arguments: --learning_rat"),
    Row("a missing input file", ["predict.py", "{ws}/classifier", "{ws}/nowhere.jsonl"], r"nowhere.jsonl"),
    Row("a .txt training file", [*TRAIN, "--train_file", "{ws}/corpus/text.txt", "--output_dir", "{ws}/new_run"],
        r"text.txt: a .txt file holds one text per line and no labels; labelled data is a .jsonl"),
    Row("a bad preset key", ["train.py", "--preset", "{ws}/preset.json"],
        r"preset.json: unknown preset keys: learning_rat"),
    # Run folders: typed, locked; contradictory flags; trainer.pt read against its types.
    Row("train --overwrite_output_dir into a pre-training run", [*TRAIN, "--output_dir", "{ws}/pt_run",
                                                                 "--overwrite_output_dir", "true"],
        r"--output_dir .*pt_run holds a pre-training run \(pretrain.py train\), not a fine-tuning run", loss=True),
    Row("pretrain train --overwrite_output_dir into a fine-tuning run", [*PRETRAIN, "--output_dir={ws}/ft_run",
                                                                         "--overwrite_output_dir=true"],
        r"--output_dir .*ft_run holds a fine-tuning run \(train.py\), not a pre-training run", loss=True),
    Row("--resume with --overwrite_output_dir", [*TRAIN, "--output_dir", "{ws}/run", "--resume", "true",
                                                 "--overwrite_output_dir", "true"],
        r"^error: --resume continues the run in --output_dir and --overwrite_output_dir replaces it: give one"),
    Row("two presets", ["train.py", "--preset", "{ws}/preset.json", "--preset", "{ws}/preset.json"],
        r"--preset given 2 times \(.*preset.json, .*preset.json\): give one, or merge them into one file"),
    Row("--tasks with an explicit --train_file", ["train.py", "--tasks", "a,b", "--train_file", "{ws}/data/train.jsonl",
                                                  "--init", "{ws}/model", "--output_dir", "{ws}/new_run"],
        r"--train_file applies to single-task runs \(with --tasks or --tasks_file each task names its own files\)"),
    Row("a hostile trainer.pt on --resume", [*TRAIN, "--output_dir", "{ws}/hostile_run", "--resume", "true"],
        r"hostile_run/last/trainer.pt: holds objects other than tensors and plain values, which could run code when "
        r"loaded; refused \(save_run never writes such a file\)$"),
    Row("a trainer.pt with a wrong type on --resume", [*TRAIN, "--output_dir", "{ws}/typed_run", "--resume", "true"],
        r'typed_run/last/trainer.pt: optimizer is "sgd", expected dict$'),
]


@pytest.fixture(scope="module")
def inputs(ws):
    pretrain.main([a.replace("{ws}", str(ws)) for a in CREATE[1:]] + [f"--output_file={ws / 'records'}"])
    (ws / "tasks.json").write_text('[{"name": "a", "train": "x.jsonl", "train": "y.jsonl", "dev": "z.jsonl"}]\n')
    (ws / "preset.json").write_text('{"learning_rat": 0.001}\n')
    (ws / "predict_preset.json").write_text('{"batch_size": 8}\n')
    (ws / "datasets" / "bbc_news").mkdir(parents=True)
    shutil.copy(ws / "data" / "train.jsonl", ws / "datasets" / "bbc_news" / "train.jsonl")
    return ws


# Each row starts a Python with torch (several seconds on a busy 2-core machine): the data-loss rows
# run by default, the rest with the slow tests.
PARAMS = [pytest.param(row, id=row.id, marks=() if row.loss else pytest.mark.slow) for row in ROWS]


@pytest.mark.parametrize("row", PARAMS)
def test_bad_input_is_one_line_and_changes_nothing(inputs, row):
    ws = inputs
    before = checksums(ws)
    args = [a.replace("{ws}", str(ws)) for a in row.args]
    result = run(args, cwd=ws if row.cwd == "ws" else ROOT)
    assert result.returncode == row.status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert len(errors) == 1, result.stderr[-2000:]
    assert re.search(row.message, errors[0]), errors[0]
    assert checksums(ws) == before, "the workspace changed"
    assert not (ws / "new_run").exists()


def test_a_swap_keeps_a_users_backup_beside_the_destination(inputs):
    """files.replace_folder deleted <DST>.old, whatever it held (a user's backup)."""
    ws = inputs
    backup = checksums(ws / "classifier.old")
    result = run(["checkpoints_convert.py", str(FIXTURES / "tiny_google"), str(ws / "converted"), "--format", "hf"])
    assert result.returncode == 0, result.stderr[-2000:]
    (ws / "converted.old").mkdir()
    (ws / "converted.old" / "notes.txt").write_text("backup\n")
    result = run(["checkpoints_convert.py", str(ws / "converted"), str(ws / "converted"), "--format", "tf"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (ws / "converted.old" / "notes.txt").read_text() == "backup\n"
    assert checksums(ws / "classifier.old") == backup
    shutil.rmtree(ws / "converted")
    shutil.rmtree(ws / "converted.old")


@pytest.mark.slow
def test_reproduce_exits_1_with_a_summary_when_runs_fail(inputs, tmp_path):
    """Every run fails (its --init does not exist): the others still run, then one summary line and status 1."""
    ws = inputs
    result = run(["reproduce.py", "table4", "--data_dir", str(ws), "--datasets", "data", "--init", str(ws / "nowhere"),
                  "--output_dir", str(tmp_path / "out"), "--devices", "cpu"])
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stdout.count("failed: ") == 8 and "nowhere" in result.stdout
    assert result.stderr.splitlines()[-1].startswith("8 of 8 runs failed (listed above)")


@pytest.mark.slow
def test_vocab_larger_than_the_text_gives_is_a_warning(inputs, tmp_path):
    result = run(["pretrain.py", "vocab", f"--input_file={inputs / 'corpus' / 'text.txt'}",
                  f"--output_file={tmp_path / 'vocab.txt'}", "--vocab_size=100000"])
    assert result.returncode == 0, result.stderr[-2000:]
    size = len((tmp_path / "vocab.txt").read_text().splitlines())
    assert f"warning: --vocab_size 100000 asked for more entries than the text gives: the vocabulary has {size}" \
           in result.stdout


def signal_when(args: list[str], ready: Path, cwd: Path, number: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    """Start a run, send signal `number` once `ready` exists (the run is past its first step), wait for it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + TIMEOUT
    while not ready.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(number)
    out, err = process.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("number, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_last_and_exits_128_plus_its_number(inputs, tmp_path, number, status):
    """SIGTERM (a scheduler) and SIGINT (Ctrl-C) both finish the step, save last/ and exit 128 + the
    signal's number, with no KeyboardInterrupt traceback."""
    ws = inputs
    train = [a.replace("{ws}", str(ws)) for a in TRAIN]
    train[train.index("--epochs") + 1] = "200"
    result = signal_when([*train, "--output_dir", str(tmp_path / "ft"), "--log_every", "1"],
                         tmp_path / "ft" / "metrics.jsonl", ROOT, number)
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr[-2000:]
    assert (tmp_path / "ft" / "last" / "trainer.pt").is_file() and not (tmp_path / "ft" / "results.json").exists()
    step = torch.load(tmp_path / "ft" / "last" / "trainer.pt", weights_only=True)["state"]["step"]
    assert f"stopped by signal at step {step}" in result.stdout + result.stderr
    pretrain = [a.replace("{ws}", str(ws)) for a in PRETRAIN]
    pretrain[pretrain.index("--num_train_steps=2")] = "--num_train_steps=100000"
    result = signal_when([*pretrain, f"--output_dir={tmp_path / 'pt'}", "--log_every=1"],
                         tmp_path / "pt" / "metrics.jsonl", ROOT, number)
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr[-2000:]
    assert (tmp_path / "pt" / "last" / "trainer.pt").is_file() and not (tmp_path / "pt" / "final").exists()


@pytest.mark.slow
def test_ctrl_c_before_training_is_one_line_and_status_130(inputs, tmp_path):
    """Ctrl-C while the texts are read (no training loop yet): one line, status 130, no traceback."""
    ws = inputs
    big = tmp_path / "big.txt"
    big.write_text("football match report\n" * 2_000_000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal leaves it: a shell's background job (CI started with `&`) inherits it ignored,
    # and Python then installs no KeyboardInterrupt handler.
    process = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), str(ws / "classifier"), str(big), "--output",
                                str(tmp_path / "p.jsonl")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + TIMEOUT
    err = ""
    while "encoder on" not in err and process.poll() is None and time.time() < deadline:
        err += process.stderr.readline()
    process.send_signal(signal.SIGINT)
    out, rest = process.communicate(timeout=TIMEOUT)
    err += rest
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert err.splitlines()[-1] == "interrupted (Ctrl-C)", err[-2000:]
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.slow
def test_a_moved_run_folder_resumes(inputs, tmp_path):
    ws = inputs
    train = [a.replace("{ws}", str(ws)) for a in TRAIN]
    result = run([*train, "--output_dir", str(tmp_path / "a")])
    assert result.returncode == 0, result.stderr[-2000:]
    shutil.move(tmp_path / "a", tmp_path / "b")
    result = run([*train, "--output_dir", str(tmp_path / "b"), "--resume", "true"])
    assert result.returncode == 0, result.stderr[-2000:]
    # A trainer.pt that is not save_run's (its sums updated, so only its keys are wrong): one line.
    last = tmp_path / "b" / "last"
    torch.save({"state": {}}, last / "trainer.pt")
    sums = json.loads((last / "run.json").read_text())
    sums["sha256"]["trainer.pt"] = hashlib.sha256((last / "trainer.pt").read_bytes()).hexdigest()
    (last / "run.json").write_text(json.dumps(sums))
    result = run([*train, "--output_dir", str(tmp_path / "b"), "--resume", "true"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "trainer.pt: missing optimizer, scheduler, scaler, rng (not written by save_run)" in result.stderr


@pytest.mark.slow
def test_a_second_run_on_the_folder_of_a_running_one_refuses_and_the_first_goes_on(inputs, tmp_path):
    """Both on one new output folder: the second deleted the first's checkpoint in progress."""
    train = [a.replace("{ws}", str(inputs)) for a in TRAIN]
    train[train.index("--epochs") + 1] = "200"
    out = tmp_path / "ft"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, *train, "--output_dir", str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + TIMEOUT
        while not (out / "last" / "trainer.pt").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "last" / "trainer.pt").exists(), "the first run wrote no checkpoint"
        for extra in ([], ["--overwrite_output_dir", "true"], ["--resume", "true"]):
            second = run([*train, "--output_dir", str(out), *extra])
            assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
            assert re.fullmatch(rf"error: --output_dir {out} is in use by another run \(pid {first.pid} on .*train.py "
                                r".*\); wait for it to end or choose another folder\n", second.stderr), second.stderr
            assert (out / "last" / "trainer.pt").exists() and first.poll() is None
    finally:
        first.kill()
        first.wait()
