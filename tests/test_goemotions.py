"""data/goemotions/prepare.py and minibert.data.goemotions on a tiny copy of the distributed format
written here (tab-separated, CSV quoting, label ids), and once on the real files when
MINIBERT_GOEMOTIONS_DIR names a folder holding them."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minibert.data.examples import LabelSet, is_multi_label, read_examples

REPO = Path(__file__).resolve().parents[1]
EMOTIONS = ["anger", "annoyance", "joy", "love", "sadness", "neutral"]
EKMAN = {"anger": ["anger", "annoyance"], "joy": ["joy", "love"], "sadness": ["sadness"]}
SENTIMENT = {"negative": ["anger", "annoyance", "sadness"], "positive": ["joy", "love"]}
TRAIN = ('"Three words, no subtlety. ""Dude. Stop."" "\t0,1\tid1\n'
         "so happy for you\t2,3\tid2\n"
         "ok then\t5\tid3\n"
         "this is sad but I love it\t4,3\tid4\n")
DEV = "grr\t1\tid5\nyay\t2\tid6\n"


def load_prepare():
    spec = importlib.util.spec_from_file_location("prepare_goemotions", REPO / "data" / "goemotions" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def distributed(folder: Path, **overrides) -> Path:
    """A GoEmotions data folder as distributed; overrides replace a file's content (None: leave it out)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train.tsv": TRAIN, "dev.tsv": DEV, "emotions.txt": "\n".join(EMOTIONS) + "\n",
             "ekman_mapping.json": json.dumps(EKMAN), "sentiment_dict.json": json.dumps(SENTIMENT)}
    files.update(overrides)
    for name, content in files.items():
        if content is not None:
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def prepare(source, out, *args):
    load_prepare().main(["--source", str(source), "--output_dir", str(out), *map(str, args)])
    return {path.stem: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            for path in sorted(out.glob("*.jsonl"))}


def labels(records):
    return [record["label"] for record in records]


def test_original_taxonomy(tmp_path, capsys):
    splits = prepare(distributed(tmp_path / "src"), tmp_path / "out")
    assert list(splits) == ["dev", "train"]  # no test.tsv, no test.jsonl
    assert splits["train"][0] == {"text": 'Three words, no subtlety. "Dude. Stop."', "label": ["anger", "annoyance"],
                                  "id": "id1"}
    assert labels(splits["train"]) == [["anger", "annoyance"], ["joy", "love"], ["neutral"], ["sadness", "love"]]
    assert labels(splits["dev"]) == [["annoyance"], ["joy"]]
    report = capsys.readouterr().out
    assert [line.split() for line in report.splitlines()] == [
        ["label", "train", "dev"], ["love", "2", "0"], ["anger", "1", "0"], ["annoyance", "1", "1"],
        ["joy", "1", "1"], ["neutral", "1", "0"], ["sadness", "1", "0"], ["texts", "4", "2"],
        ["2+", "labels", "3", "0"]]
    # What train.py reads: a multi-label task whose label set is the names.
    examples, _ = read_examples(tmp_path / "out" / "train.jsonl", multi_label="auto")
    assert is_multi_label(examples)
    assert LabelSet.from_examples(examples).names == ("anger", "annoyance", "joy", "love", "neutral", "sadness")


def test_ekman_and_sentiment_collapse_duplicates_and_keep_neutral(tmp_path):
    source = distributed(tmp_path / "src")
    ekman = prepare(source, tmp_path / "ekman", "--taxonomy", "ekman")
    assert labels(ekman["train"]) == [["anger"], ["joy"], ["neutral"], ["sadness", "joy"]]
    sentiment = prepare(source, tmp_path / "sentiment", "--taxonomy", "sentiment")
    assert labels(sentiment["train"]) == [["negative"], ["positive"], ["neutral"], ["negative", "positive"]]
    assert labels(sentiment["dev"]) == [["negative"], ["positive"]]


def test_test_split_from_the_folder_or_a_file(tmp_path):
    source = distributed(tmp_path / "src", **{"test.tsv": "meh\t5\tid7\n"})
    assert labels(prepare(source, tmp_path / "a")["test"]) == [["neutral"]]
    elsewhere = tmp_path / "mine.tsv"
    elsewhere.write_text("love it\t3\tid8\n", encoding="utf-8")
    assert labels(prepare(source, tmp_path / "b", "--test_file", elsewhere)["test"]) == [["love"]]


@pytest.mark.parametrize("override, message", [
    ({"train.tsv": TRAIN + "no ids\t\tid9\n"}, r"train.tsv:5: label ids must be comma-separated numbers, got ''$"),
    ({"train.tsv": TRAIN + "x\t6\tid9\n"}, r"train.tsv:5: label id 6 is not a line of emotions.txt \(0..5\)$"),
    ({"dev.tsv": "x\t1,1\tid9\n"}, r"dev.tsv:1: label id 1 given twice$"),
    ({"dev.tsv": "x\t1\n"}, r"dev.tsv:1: expected 3 tab-separated fields \(text, label ids, comment id\), got 2$"),
    ({"dev.tsv": " \t1\tid\n"}, r"dev.tsv:1: empty text$"),
    ({"dev.tsv": 'ok\t1\tid\n"bad"quote\t1\tid\n'}, r"dev.tsv:2: malformed TSV"),
    ({"dev.tsv": b"ok\t1\tid\ncaf\xe9\t1\tid\n"}, r"dev.tsv:2: invalid UTF-8 \(byte 0xe9\)$"),
    ({"dev.tsv": None}, r"dev.tsv: no such file$"),
    ({"emotions.txt": "anger\nanger\n"}, r"emotions.txt:2: name 'anger' given twice$"),
    ({"emotions.txt": "anger\n\njoy\n"}, r"emotions.txt:2: empty name"),
])
def test_bad_source_files(tmp_path, script_error, override, message):
    source = distributed(tmp_path / "src", **override)
    with script_error(r"^error: \S*" + message):
        prepare(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written when any file is bad


@pytest.mark.parametrize("mapping, message", [
    ({"anger": ["anger"], "joy": ["joy", "love"], "sadness": ["sadness"]}, r"no group for 'annoyance'$"),
    ({**EKMAN, "other": ["joy"]}, r"'joy' is in two groups \('joy' and 'other'\)$"),
    ({**EKMAN, "other": ["grief"]}, r"'grief' in group 'other' is not a name of emotions.txt$"),
    ({"anger": "anger"}, r"group 'anger' must be a list of emotion names"),
    (["anger"], r"expected a JSON object"),
])
def test_bad_mapping(tmp_path, script_error, mapping, message):
    source = distributed(tmp_path / "src", **{"ekman_mapping.json": json.dumps(mapping)})
    with script_error(r"^error: \S*ekman_mapping.json: " + message):
        prepare(source, tmp_path / "out", "--taxonomy", "ekman")


def test_outputs_never_replace_inputs(tmp_path, script_error):
    source = distributed(tmp_path / "src")
    victim = tmp_path / "out" / "test.jsonl"
    victim.parent.mkdir()
    victim.write_text("mine\n")
    with script_error(r"^error: --output_dir \S*test.jsonl is also --test_file"):
        prepare(source, tmp_path / "out", "--test_file", victim)
    assert victim.read_text() == "mine\n"
    with script_error(r"^error: \S*nowhere: no such folder"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    with script_error("invalid choice: 'plutchik'"):
        prepare(source, tmp_path / "out", "--taxonomy", "plutchik")


def test_help_runs_from_repo_root():
    result = subprocess.run([sys.executable, "data/goemotions/prepare.py", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--taxonomy {original,ekman,sentiment}" in result.stdout, result.stderr


@pytest.mark.slow
def test_the_distributed_files(tmp_path):
    folder = os.environ.get("MINIBERT_GOEMOTIONS_DIR")
    if not folder:
        pytest.skip("set MINIBERT_GOEMOTIONS_DIR to the GoEmotions data folder to run this check")
    splits = prepare(Path(folder), tmp_path / "out")
    assert (len(splits["train"]), len(splits["dev"])) == (43_410, 5_426)
    multi = sum(len(record["label"]) > 1 for record in splits["train"])
    assert multi == 7_102 and round(100 * multi / 43_410) == 16
    assert len({name for record in splits["train"] for name in record["label"]}) == 28
    ekman = prepare(Path(folder), tmp_path / "ekman", "--taxonomy", "ekman")
    assert {name for record in ekman["train"] for name in record["label"]} == \
        {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"}
