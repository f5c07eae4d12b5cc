"""Files minibert writes and reads back are checked against their declared types: a bad value in
classifier.json or in last/'s run state is one error naming the file, the key and the value."""

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from minibert.checkpoints.classifier import load_classifier, save_classifier
from minibert.errors import CheckpointError
from minibert.model.config import BertConfig
from minibert.model.heads import BertClassifier, HeadConfig
from minibert.schema import is_instance, typed
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "news", "sport"]) + "\n")
    config = BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=12, max_position_embeddings=16)
    torch.manual_seed(0)
    save_classifier(folder / "model", BertClassifier(config, HeadConfig(num_labels=2)), ["a", "b"],
                    TextEncoding(16, head_tokens=2), FullTokenizer(vocab, check_case=False), vocab)
    return folder / "model"


def edited(saved: Path, tmp_path: Path, edit) -> Path:
    """A copy of the saved classifier whose classifier.json `edit` changed."""
    folder = tmp_path / "edited"
    folder.mkdir()
    for path in saved.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    description = json.loads((folder / "classifier.json").read_text())
    edit(description)
    (folder / "classifier.json").write_text(json.dumps(description))
    return folder


CASES = [
    (lambda d: d["head"].update(pooler="false"), 'head: pooler is "false", expected true or false'),
    (lambda d: d["tokenizer"].update(do_lower_case="false"), 'tokenizer: do_lower_case is "false", expected true'),
    (lambda d: d["head"].update(dropout="0.1"), 'head: dropout is "0.1", expected a number'),
    (lambda d: d["head"].update(num_labels=True), "head: num_labels is true, expected an integer"),
    (lambda d: d.update(labels=["a", "a"]), "label 'a' is listed twice"),
    (lambda d: d.update(labels="ab"), 'labels must be a list of names, got "ab"'),
    (lambda d: d["tokenizer"].update(variant="bogus"), "tokenizer: variant must be one of"),
    (lambda d: d["encoding"].update(chunks=3), "encoding: unknown key 'chunks'"),
    (lambda d: d.pop("encoding"), r"malformed \(no encoding\)"),
]


@pytest.mark.parametrize("edit,message", CASES)
def test_a_bad_classifier_json_value_is_named(saved, tmp_path, edit, message):
    folder = edited(saved, tmp_path, edit)
    with pytest.raises(CheckpointError, match=f"classifier.json: .*{message}"):
        load_classifier(folder)


def test_predict_says_it_in_one_line(saved, tmp_path):
    folder = edited(saved, tmp_path, lambda d: d["head"].update(pooler="false"))
    (tmp_path / "in.txt").write_text("news\n")
    run = subprocess.run([sys.executable, "predict.py", str(folder), str(tmp_path / "in.txt"), "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f'error: {folder / "classifier.json"}: head: pooler is "false", '
                                               "expected true or false"]


def test_the_saved_file_loads_as_written(saved):
    assert load_classifier(saved).labels == ["a", "b"]


@dataclass
class Example:
    count: int
    share: float = 0.5
    names: list[str] = field(default_factory=list)
    best: float | None = None


def test_types_follow_the_declaration():
    assert typed(Example, {"count": 2, "share": 1, "names": ["x"], "best": None}, "f", CheckpointError) == \
        Example(2, 1, ["x"], None)
    for values, message in (({"count": 2.0}, "count is 2.0, expected an integer"),
                            ({"count": 1, "share": True}, "share is true, expected a number"),
                            ({"count": 1, "names": ["x", 3]}, r"names is \[\"x\", 3\], expected list"),
                            ({"count": 1, "best": "0.3"}, 'best is "0.3", expected a number or null'),
                            ({}, "missing key 'count'")):
        with pytest.raises(CheckpointError, match=f"^f: {message}"):
            typed(Example, values, "f", CheckpointError)
    assert is_instance({"a": [1.0]}, dict[str, list[float]]) and not is_instance({"a": [True]}, dict[str, list[float]])
