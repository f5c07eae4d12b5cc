"""predict.py's checks before work, and prediction of hierarchical texts with bounded memory."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import predict
from minibert.checkpoints.classifier import save_classifier
from minibert.data.features import EncodedDocs, cap_chunks, collate, model_inputs
from minibert.errors import CheckpointError, ConfigError, DataError
from minibert.model.config import BertConfig
from minibert.model.heads import BertClassifier, HeadConfig
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer
from minibert.training.evaluation import chunk_groups, predict_probabilities

WORDS = "the a of and to in is capital france paris city river news sport market goal team".split()
CONFIG = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=20, max_position_embeddings=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and repeatable


def classifier(folder, head=None, max_seq_length=8, hierarchical=False):
    """A random classifier saved as train.py saves one; returns (model, tokenizer, encoding)."""
    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    torch.manual_seed(0)
    model = BertClassifier(CONFIG, head or HeadConfig(num_labels=3)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    tokenizer = FullTokenizer(vocab, check_case=False)
    encoding = TextEncoding(max_seq_length, head_tokens=2, hierarchical=hierarchical)
    save_classifier(folder, model, ["x", "y", "z"], encoding, tokenizer, vocab)
    return model, tokenizer, encoding


def test_output_folder_fails_before_the_model_is_loaded(tmp_path):
    # tmp_path holds no model: loading it first would fail with another error.
    for output in (tmp_path, f"{tmp_path / 'new'}/"):
        with pytest.raises(ConfigError, match=f"^--output {output}: is a folder; give a file name"):
            predict.main(predict.PredictConfig(model=str(tmp_path), input="x.txt", output=str(output)))
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=f"^--output {tmp_path / 'f' / 'p.jsonl'}: {tmp_path / 'f'} is a file"):
        predict.main(predict.PredictConfig(model=str(tmp_path), output=str(tmp_path / "f" / "p.jsonl")))


def test_empty_stdin_is_named_stdin(tmp_path, monkeypatch):
    classifier(tmp_path / "model")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n  \n")))
    with pytest.raises(DataError, match="^stdin: no texts"):
        predict.main(predict.PredictConfig(model=str(tmp_path / "model"), output=str(tmp_path / "p.jsonl")))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"paris news\n\xff\n")))
    with pytest.raises(DataError, match="^stdin:2: invalid UTF-8"):
        predict.main(predict.PredictConfig(model=str(tmp_path / "model"), output=str(tmp_path / "p.jsonl")))
    assert not (tmp_path / "p.jsonl").exists()


def test_leftovers_of_a_killed_run_are_removed(tmp_path, monkeypatch):
    classifier(tmp_path / "model")
    leftover = tmp_path / ".p.jsonl.1a2b3c4d.tmp"
    leftover.write_text("half")
    other = tmp_path / ".q.jsonl.1a2b3c4d.tmp"  # another file's temporary: not ours to delete
    other.write_text("half")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"paris news\nsport goal team\n")))
    records = predict.main(predict.PredictConfig(model=str(tmp_path / "model"), output=str(tmp_path / "p.jsonl")))
    assert not leftover.exists() and other.exists()
    assert [r["source"] for r in records] == ["stdin:1", "stdin:2"]
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


def test_max_seq_length_beyond_the_position_table_is_refused_at_load(tmp_path):
    classifier(tmp_path / "model")
    description = json.loads((tmp_path / "model" / "classifier.json").read_text())
    description["encoding"]["max_seq_length"] = 32  # the model has 16 positions
    (tmp_path / "model" / "classifier.json").write_text(json.dumps(description))
    (tmp_path / "in.txt").write_text("paris\n")
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'model'}: classifier.json encodes max_seq_length=32 "
                                              "tokens but the model has max_position_embeddings=16$"):
        predict.main(predict.PredictConfig(model=str(tmp_path / "model"), input=str(tmp_path / "in.txt"),
                                           output=str(tmp_path / "p.jsonl")))
    assert not (tmp_path / "p.jsonl").exists()


def test_errors_are_one_line_with_the_traceback_under_debug(tmp_path):
    (tmp_path / "in.txt").write_text("paris\n")
    command = [sys.executable, "predict.py", str(tmp_path / "nothing"), str(tmp_path / "in.txt")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=120)
    assert (result.returncode, result.stderr) == (
        2, f"error: {tmp_path / 'nothing'}: not a classifier saved by train.py (no classifier.json)\n")
    result = subprocess.run(command + ["--debug"], capture_output=True, text=True, cwd=Path(__file__).parent.parent,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" in result.stderr and "classifier.json" in result.stderr


# ---------------------------------------------------------------------------------------------
# Hierarchical texts: memory bounded by chunks per encoder call


def test_chunk_groups():
    assert chunk_groups([1, 5, 2, 9, 1, 1], 4) == [[3], [1], [2, 0, 4], [5]]  # 9 and 5 alone, then 2+1+1, 1
    assert sorted(i for g in chunk_groups([3] * 10, 7) for i in g) == list(range(10))
    with pytest.raises(ValueError, match="max_chunks must be >= 1"):
        chunk_groups([1], 0)


@pytest.mark.parametrize("pooling", ["mean", "max", "self_attention"])
def test_hierarchical_prediction_streams_chunks_and_matches_one_forward(tmp_path, pooling):
    model, tokenizer, encoding = classifier(tmp_path / "model", HeadConfig(num_labels=3, chunk_pooling=pooling),
                                            hierarchical=True)
    rng = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (n,), generator=rng)) for n in (140, 3, 20, 9, 1, 33)]
    docs = list(EncodedDocs.from_chunks([encoding.encode(tokenizer.encode_text(t), None, tokenizer.cls_id,
                                                         tokenizer.sep_id) for t in texts]))
    assert [len(d.chunks) for d in docs] == [24, 1, 4, 2, 1, 6]  # 6 tokens per chunk
    sizes = []
    hook = model.bert.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))
    streamed = predict_probabilities(model, docs, 4, torch.device("cpu"), torch.autocast("cpu", enabled=False),
                                     hierarchical=True, pad_id=tokenizer.pad_id)
    hook.remove()
    assert max(sizes) == 4 and sum(sizes) == 38  # every chunk once, never more than 4 per encoder call
    with torch.no_grad():  # one forward over all chunks of all documents
        expected = torch.softmax(model(**model_inputs(collate(docs, True, tokenizer.pad_id), torch.device("cpu"))), -1)
    assert (streamed - expected).abs().max() < 1e-5


def test_training_chunks_are_capped_with_a_message():
    docs = EncodedDocs.from_chunks([[([1], [0])] * n for n in (3, 9, 2, 12)], [0] * 4)
    sources = [f"train.jsonl:{i + 1}" for i in range(4)]
    capped, message = cap_chunks(docs, sources, 4)
    assert [len(d.chunks) for d in capped] == [3, 4, 2, 4]
    assert message == ("2 training text(s) have more than 4 chunks (the longest, train.jsonl:4, has 12): only their "
                       "first 4 chunks are trained on; set --max_chunks to choose the cap")
    assert cap_chunks(docs, sources, 12) == (docs, None)
