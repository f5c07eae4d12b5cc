"""pretrain.py vocab: sentencepiece pieces -> Google's WordPiece conventions, a vocabulary FullTokenizer
reads, and a from-scratch pipeline (vocab -> records -> 2-layer model) whose MLM loss falls."""

import json
import pytest
import torch

import pretrain
from minibert.text.tokenization import FullTokenizer
from minibert.text.vocab_building import to_wordpiece

from helpers import SAMPLE_TEXT


@pytest.fixture(autouse=True)
def keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_word_initial_pieces_stay_and_inner_pieces_get_hashes():
    assert to_wordpiece(["\u2581play", "ing", "\u2581", "\u2581the", "ing", "s"]) == ["play", "##ing", "the", "##s"]


def test_vocabulary_layout_and_coverage(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    pretrain.main(["vocab", f"--input_file={SAMPLE_TEXT}", f"--output_file={vocab_file}", "--vocab_size=400",
                   "--num_unused=5", "--heldout_every=0"])
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    assert len(tokens) == len(set(tokens)) <= 400
    assert tokens[:10] == ["[PAD]", "[unused0]", "[unused1]", "[unused2]", "[unused3]", "[unused4]",
                           "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "t" in tokens and "##t" in tokens and any(t.startswith("##") and len(t) > 3 for t in tokens)
    tokenizer = FullTokenizer(vocab_file, do_lower_case=True)
    text = SAMPLE_TEXT.read_text(encoding="utf-8")
    ids = tokenizer.encode_text(text)
    assert tokenizer.unk_id not in ids  # every character of the training text has a piece
    words = tokenizer.basic_tokenizer.tokenize(text)
    assert len(ids) < 2 * len(words)  # the learned pieces are longer than characters


def test_too_small_vocabulary_and_empty_corpus(tmp_path, script_error):
    with script_error(r"--vocab_size=50 is too small: the corpus has \d+ distinct characters"):
        pretrain.main(["vocab", f"--input_file={SAMPLE_TEXT}", f"--output_file={tmp_path / 'v.txt'}", "--vocab_size=50",
                       "--num_unused=0"])
    (tmp_path / "empty.txt").write_text("\n\n")
    with script_error(r"empty.txt: no text"):
        pretrain.main(["vocab", f"--input_file={tmp_path / 'empty.txt'}", f"--output_file={tmp_path / 'v.txt'}"])
    assert not (tmp_path / "v.txt").exists()


@pytest.mark.slow
def test_from_scratch_pipeline_mlm_loss_falls(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    pretrain.main(["vocab", f"--input_file={SAMPLE_TEXT}", f"--output_file={vocab_file}", "--vocab_size=400",
                   "--num_unused=5", "--heldout_every=0"])
    records = tmp_path / "records"
    pretrain.main(["create_data", f"--input_file={SAMPLE_TEXT}", f"--output_file={records}",
                   f"--vocab_file={vocab_file}", "--max_seq_length=64", "--max_predictions_per_seq=10",
                   "--dupe_factor=5"])
    size = len(vocab_file.read_text(encoding="utf-8").splitlines())
    config = {"vocab_size": size, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 96, "max_position_embeddings": 64, "hidden_act": "gelu"}
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    pretrain.main(["train", f"--bert_config_file={tmp_path / 'bert_config.json'}", f"--vocab_file={vocab_file}",
                   f"--input_file={records}", f"--output_dir={out}", "--max_seq_length=64",
                   "--max_predictions_per_seq=10", "--train_batch_size=16", "--num_train_steps=80",
                   "--num_warmup_steps=8", "--learning_rate=2e-3", "--log_every=10", "--threads=1"])
    losses = [r["mlm_loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert losses[-1] < losses[0] - 1.0, losses
