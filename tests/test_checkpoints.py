"""Checkpoint conversion: bit-exact round trips, Hugging Face variants, clear errors, nothing skipped silently."""

import dataclasses
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minibert.checkpoints.conversion import ConvertConfig
from minibert.checkpoints.conversion import convert as convert_checkpoint
from minibert.checkpoints.formats import (
    Checkpoint,
    architecture_of,
    detect_format,
    load_checkpoint,
    load_pretrained,
    load_state,
    save_checkpoint,
    state_of,
)
from minibert.checkpoints.classifier import load_classifier, save_classifier
from minibert.checkpoints.integrity import check_vocab, read_safetensors, write_sha256_sidecar
from minibert.checkpoints.tf_checkpoint import read_tf_checkpoint, write_tf_checkpoint
from minibert.errors import CheckpointError, ConfigError
from minibert.model.bert import BertModel
from minibert.model.config import BertConfig
from minibert.training.problems import problem
from minibert.model.heads import BertClassifier, HeadConfig
from minibert.model.pretraining_heads import BertForPreTraining
from minibert.text.encoding import TextEncoding
from minibert.text.tokenization import FullTokenizer


def assert_same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


def test_google_release_loads_with_every_variable_mapped(tiny_google):
    checkpoint = load_checkpoint(tiny_google)
    assert checkpoint.format == "tf" and checkpoint.skipped == []
    assert checkpoint.vocab_file == tiny_google / "vocab.txt"
    lines = (tiny_google / "variables.txt").read_text().split("\n")
    assert len(checkpoint.state) == len([line for line in lines if line.strip()])
    tf = read_tf_checkpoint(tiny_google / "bert_model.ckpt")
    # Kernels are transposed, everything else copied.
    assert torch.equal(checkpoint.state["bert.layers.1.ffn_in.weight"],
                       tf["bert/encoder/layer_1/intermediate/dense/kernel"].t())
    assert torch.equal(checkpoint.state["nsp.weight"], tf["cls/seq_relationship/output_weights"])
    assert torch.equal(checkpoint.state["mlm.bias"], tf["cls/predictions/output_bias"])
    # The prefix and the .index file name the same checkpoint.
    for path in (tiny_google / "bert_model.ckpt", tiny_google / "bert_model.ckpt.index"):
        assert_same_tensors(load_checkpoint(path).state, checkpoint.state)


def test_google_round_trip_is_bit_exact(tiny_google, tmp_path):
    original = read_tf_checkpoint(tiny_google / "bert_model.ckpt")
    save_checkpoint(tmp_path / "mb", load_checkpoint(tiny_google), "minibert")
    assert detect_format(tmp_path / "mb") == "minibert"
    save_checkpoint(tmp_path / "tf", load_checkpoint(tmp_path / "mb"), "tf")
    assert detect_format(tmp_path / "tf") == "tf"
    assert_same_tensors(read_tf_checkpoint(tmp_path / "tf" / "bert_model.ckpt"), original)
    config = json.loads((tmp_path / "tf" / "bert_config.json").read_text())
    assert config == json.loads((tiny_google / "bert_config.json").read_text())
    assert (tmp_path / "tf" / "vocab.txt").read_bytes() == (tiny_google / "vocab.txt").read_bytes()
    # And through a Hugging Face folder too.
    save_checkpoint(tmp_path / "hf", load_checkpoint(tmp_path / "mb"), "hf")
    save_checkpoint(tmp_path / "tf2", load_checkpoint(tmp_path / "hf"), "tf")
    assert_same_tensors(read_tf_checkpoint(tmp_path / "tf2"), original)


def test_hf_round_trip_is_bit_exact(minilm_dir, tmp_path):
    original = load_file(minilm_dir / "model.safetensors")
    checkpoint = load_checkpoint(minilm_dir)
    assert checkpoint.format == "hf"
    assert checkpoint.skipped == ["bert.embeddings.position_ids (buffer)"]
    save_checkpoint(tmp_path / "mb", checkpoint, "minibert")
    save_checkpoint(tmp_path / "hf", load_checkpoint(tmp_path / "mb"), "hf")
    written = load_file(tmp_path / "hf" / "model.safetensors")
    del original["embeddings.position_ids"]
    assert_same_tensors(written, original)  # same names (no `bert.` prefix for an encoder) and bits


def test_optimizer_state_and_classifier_of_a_fine_tuned_google_checkpoint(tiny_google, tmp_path):
    """run_classifier output: adam slots and global_step are skipped and reported; output_* is the head."""
    tensors = read_tf_checkpoint(tiny_google / "bert_model.ckpt")
    tensors = {k: v for k, v in tensors.items() if not k.startswith("cls/")}
    g = torch.Generator().manual_seed(0)
    tensors["output_weights"] = torch.randn(3, 32, generator=g)
    tensors["output_bias"] = torch.randn(3, generator=g)
    tensors["bert/pooler/dense/kernel/adam_m"] = torch.zeros(32, 32)
    tensors["bert/pooler/dense/kernel/adam_v"] = torch.zeros(32, 32)
    tensors["global_step"] = torch.tensor(1000, dtype=torch.int64)
    folder = tmp_path / "finetuned"
    folder.mkdir()
    shutil.copy(tiny_google / "bert_config.json", folder)
    write_tf_checkpoint(folder / "model.ckpt-1000", tensors)
    checkpoint = load_checkpoint(folder)
    assert sorted(checkpoint.skipped) == ["bert/pooler/dense/kernel/adam_m (optimizer state)",
                                          "bert/pooler/dense/kernel/adam_v (optimizer state)",
                                          "global_step (optimizer state)"]
    assert torch.equal(checkpoint.state["head.out.weight"], tensors["output_weights"])
    assert torch.equal(checkpoint.state["head.out.bias"], tensors["output_bias"])
    # The converter loads it into run_classifier's model (encoder + pooled-[CLS] linear head).
    convert(folder, tmp_path / "converted")
    assert_same_tensors(load_checkpoint(tmp_path / "converted").state, checkpoint.state)
    # The classifier travels to Hugging Face as BertForSequenceClassification and back.
    save_checkpoint(tmp_path / "hf", checkpoint, "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    assert_same_tensors(load_checkpoint(tmp_path / "hf").state, checkpoint.state)


def random_pretraining_state(seed=0):
    config = BertConfig(vocab_size=51, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=20, max_position_embeddings=16)
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    for p in model.parameters():  # no ones or zeros: a mapping mistake must show
        torch.nn.init.normal_(p)
    return config, state_of(model)


@pytest.mark.parametrize("variant", ["prefixed", "bare_encoder", "legacy_gamma_beta", "pytorch_bin"])
def test_hf_folder_variants(tmp_path, variant):
    config, state = random_pretraining_state()
    if variant == "bare_encoder":
        state = {k: v for k, v in state.items() if k.startswith("bert.")}
    save_checkpoint(tmp_path / "hf", Checkpoint(config, state, "minibert", tmp_path, None, architecture_of(state)), "hf")
    file = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(file)
    assert any(k.startswith("bert.") for k in tensors) == (variant != "bare_encoder")
    if variant == "legacy_gamma_beta":
        rename = lambda k: k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        tensors = {rename(k): v for k, v in tensors.items()}
        save_file(tensors, file)
    if variant == "pytorch_bin":
        # Hugging Face's .bin files also hold the tied decoder copy.
        tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
        torch.save(tensors, tmp_path / "hf" / "pytorch_model.bin")
        file.unlink()
    checkpoint = load_checkpoint(tmp_path / "hf")
    assert_same_tensors(checkpoint.state, state)
    if variant == "pytorch_bin":
        assert checkpoint.skipped == ["cls.predictions.decoder.weight (tied to bert.embeddings.word_embeddings.weight)"]


def test_transformers_reads_our_hf_output(tiny_google, tmp_path):
    transformers = pytest.importorskip("transformers")
    save_checkpoint(tmp_path / "hf", load_checkpoint(tiny_google), "hf")
    theirs = transformers.BertForPreTraining.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    ours = load_pretrained(tiny_google, BertForPreTraining).eval()
    golden = np.load(tiny_google / "golden.npz")
    ids, types, mask = (torch.from_numpy(golden[k]).long() for k in ("input_ids", "segment_ids", "input_mask"))
    with torch.no_grad():
        a = ours(ids, types, mask)
        b = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
    assert (a.mlm_logits - b.prediction_logits).abs().max() < 1e-4
    assert (a.nsp_logits - b.seq_relationship_logits).abs().max() < 1e-5


def test_errors_name_the_problem(tiny_google, tmp_path):
    config, state = random_pretraining_state()
    save_checkpoint(tmp_path / "hf", Checkpoint(config, state, "minibert", tmp_path, None, architecture_of(state)), "hf")
    file = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(file)
    # A tensor no table knows.
    save_file({**tensors, "bert.encoder.layer.0.attention.self.rotary.weight": torch.zeros(2)}, file)
    with pytest.raises(CheckpointError, match="rotary"):
        load_checkpoint(tmp_path / "hf")
    # An untied decoder.
    save_file({**tensors, "cls.predictions.decoder.weight": torch.zeros(51, 12)}, file)
    with pytest.raises(CheckpointError, match="decoder.weight differs"):
        load_checkpoint(tmp_path / "hf")
    # A truncated file.
    save_file(tensors, file)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path / "hf")
    # A config that contradicts the tensors: every mismatch is listed.
    file.write_bytes(data)
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config.to_dict(), "hidden_size": 15}))
    with pytest.raises(CheckpointError, match="(?s)bert.embeddings.word.weight: \\(51, 12\\).*nsp.weight"):
        load_checkpoint(tmp_path / "hf")
    # A Google checkpoint read with too few layers in its config.
    folder = tmp_path / "tf"
    shutil.copytree(tiny_google, folder)
    cfg = json.loads((folder / "bert_config.json").read_text())
    (folder / "bert_config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    with pytest.raises(CheckpointError, match="layer_1/attention/self/query/kernel"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(tmp_path / "nothing")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pytorch_bin_never_executes_code(tmp_path):
    config, _ = random_pretraining_state()
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Exploit()}, f)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(CheckpointError, match="pytorch_model.bin"):
            load_checkpoint(folder)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


def test_load_state_is_strict_and_reports_unused_heads(tiny_google):
    checkpoint = load_checkpoint(tiny_google)
    encoder = BertModel(checkpoint.config)
    unused = load_state(encoder, checkpoint.state, "tiny")
    assert sorted(unused) == sorted(k for k in checkpoint.state if not k.startswith("bert."))
    assert torch.equal(encoder.pooler.weight, checkpoint.state["bert.pooler.weight"])
    partial = {k: v for k, v in checkpoint.state.items() if k not in ("mlm.bias", "bert.layers.0.key.bias")}
    with pytest.raises(CheckpointError, match="missing: bert.layers.0.key.bias, mlm.bias"):
        load_state(BertForPreTraining(checkpoint.config), partial, "tiny")


def test_convert_script(tiny_google, tmp_path, capsys):
    cfg = ConvertConfig(src=str(tiny_google), dst=str(tmp_path / "hf"), format="hf")
    convert_checkpoint(cfg)
    out = capsys.readouterr().out
    assert "read tf checkpoint" in out and "mapped 46 tensors (encoder + mlm + nsp)" in out
    assert "wrote hf checkpoint" in out and "[MASK] top 5:" in out
    assert detect_format(tmp_path / "hf") == "hf"


# ---------------------------------------------------------------------------------------------
# Integrity: checksums, non-finite weights, what each format can hold


WORDS = "the a of and to in is capital france paris city river news sport market goal team".split()


def write_vocab(folder, size):
    """A vocab.txt of exactly `size` tokens (specials, words, then filler tokens)."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tokens += [f"tok{i}" for i in range(size - len(tokens))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens[:size]) + "\n")
    return folder / "vocab.txt"


def minibert_folder(folder, seed=0):
    """A minibert folder holding random pre-training weights (vocab_size 51) and a 51-token vocab."""
    config, state = random_pretraining_state(seed)
    vocab = write_vocab(folder, config.vocab_size)
    save_checkpoint(folder, Checkpoint(config, state, "minibert", folder, vocab, architecture_of(state)))
    return folder, state


def test_flipped_byte_in_minibert_weights_is_refused(tmp_path):
    folder, state = minibert_folder(tmp_path / "m")
    assert_same_tensors(load_checkpoint(folder).state, state)
    file = folder / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor: still a valid safetensors file
    file.write_bytes(bytes(data))
    assert load_file(file)  # safetensors itself does not notice
    with pytest.raises(CheckpointError, match=f"^{file}: sha256 differs from the one recorded in .*minibert.json"):
        load_checkpoint(folder)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weight_is_refused_naming_the_tensor(tmp_path, value):
    config, state = random_pretraining_state()
    state["bert.layers.1.key.bias"][3] = value
    state["nsp.weight"][0, 0] = value
    save_checkpoint(tmp_path / "hf", Checkpoint(config, state, "minibert", tmp_path, None, architecture_of(state)), "hf")
    with pytest.raises(CheckpointError, match="non-finite values \\(NaN or inf\\) in bert.layers.1.key.bias, nsp.weight$"):
        load_checkpoint(tmp_path / "hf")


def test_save_tf_refuses_a_layer_norm_eps_google_cannot_store(tmp_path):
    config, state = random_pretraining_state()
    config = dataclasses.replace(config, layer_norm_eps=1e-5)
    checkpoint = Checkpoint(config, state, "minibert", tmp_path, None, architecture_of(state))
    with pytest.raises(CheckpointError, match="layer_norm_eps=1e-05 cannot be stored in Google's bert_config.json"):
        save_checkpoint(tmp_path / "tf", checkpoint, "tf")
    assert not (tmp_path / "tf").exists()
    save_checkpoint(tmp_path / "hf", checkpoint, "hf")  # Hugging Face stores it
    assert load_checkpoint(tmp_path / "hf").config.layer_norm_eps == 1e-5


def classifier_folder(folder, head, hierarchical=False, max_seq_length=16, vocab_size=51):
    """A train.py-style classifier folder (random weights) over a small vocabulary."""
    config = BertConfig(vocab_size=vocab_size, hidden_size=12, num_hidden_layers=4, num_attention_heads=3,
                        intermediate_size=20, max_position_embeddings=16)
    torch.manual_seed(1)
    model = BertClassifier(config, head)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    vocab = write_vocab(folder.parent / (folder.name + "_vocab"), 51)
    tokenizer = FullTokenizer(vocab, check_case=False)
    encoding = TextEncoding(max_seq_length, head_tokens=4, hierarchical=hierarchical)
    save_classifier(folder, model.eval(), ["a", "b", "c"], encoding, tokenizer, vocab)
    return model.eval(), tokenizer


def test_classifier_heads_hf_and_tf_cannot_express_are_refused(tmp_path):
    classifier_folder(tmp_path / "first4", HeadConfig(num_labels=3, layers="first4", layer_combine="mean"))
    for fmt in ("hf", "tf"):
        with pytest.raises(CheckpointError, match="BertClassifier.*has no equivalent.*keep it as a minibert folder"):
            convert(tmp_path / "first4", tmp_path / fmt, fmt)
        assert not (tmp_path / fmt).exists() and leftovers(tmp_path) == []
    convert(tmp_path / "first4", tmp_path / "copy", "minibert")  # minibert keeps the head and its description
    assert (tmp_path / "copy" / "classifier.json").read_text() == (tmp_path / "first4" / "classifier.json").read_text()
    assert torch.equal(load_classifier(tmp_path / "copy").model.head.out.weight,
                       load_classifier(tmp_path / "first4").model.head.out.weight)
    (tmp_path / "copy" / "classifier.json").unlink()  # without its description the head cannot be rebuilt
    with pytest.raises(CheckpointError, match="a minibert-only classifier head needs the classifier.json"):
        convert(tmp_path / "copy", tmp_path / "again")


def test_standard_classifier_converts_and_transformers_reads_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours, tokenizer = classifier_folder(tmp_path / "std", HeadConfig(num_labels=3))
    convert(tmp_path / "std", tmp_path / "hf", "hf")
    convert(tmp_path / "std", tmp_path / "tf", "tf")
    assert load_checkpoint(tmp_path / "tf").architecture == "BertForSequenceClassification"
    theirs = transformers.BertForSequenceClassification.from_pretrained(
        str(tmp_path / "hf"), attn_implementation="eager").eval()
    ids = torch.tensor([[2] + tokenizer.encode_text("the capital of france is paris") + [3]])
    with torch.no_grad():
        a = ours(ids)
        b = theirs(input_ids=ids).logits
    assert (a - b).abs().max() < 1e-5


def test_multi_label_classifier_converts_and_transformers_reads_it_as_multi_label(tmp_path):
    """The Hugging Face export of a multi-label head: problem_type and the label names in config.json,
    the same logits, and transformers' own loss for it (BCEWithLogitsLoss) equal to minibert's."""
    transformers = pytest.importorskip("transformers")
    head = HeadConfig(num_labels=3, multi_label=True, threshold=0.3, thresholds=[0.2, 0.4, 0.6])
    ours, tokenizer = classifier_folder(tmp_path / "ml", head)
    convert(tmp_path / "ml", tmp_path / "hf", "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "a", "1": "b", "2": "c"} and config["label2id"] == {"a": 0, "b": 1, "c": 2}
    theirs = transformers.BertForSequenceClassification.from_pretrained(
        str(tmp_path / "hf"), attn_implementation="eager").eval()
    assert theirs.config.problem_type == "multi_label_classification" and theirs.config.id2label[2] == "c"
    ids = torch.tensor([[2] + tokenizer.encode_text("the capital of france is paris") + [3],
                        [2] + tokenizer.encode_text("the capital of spain is madrid") + [3]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    with torch.no_grad():
        a = ours(ids)
        out = theirs(input_ids=ids, labels=labels)
    assert (a - out.logits).abs().max() < 1e-5
    assert abs(problem(True).loss(a, labels, None).item() - out.loss.item()) < 1e-5
    # A single-label classifier's export names its labels and keeps transformers' default problem type.
    classifier_folder(tmp_path / "sl", HeadConfig(num_labels=3))
    convert(tmp_path / "sl", tmp_path / "hf_sl", "hf")
    config = json.loads((tmp_path / "hf_sl" / "config.json").read_text())
    assert "problem_type" not in config and config["id2label"] == {"0": "a", "1": "b", "2": "c"}


# ---------------------------------------------------------------------------------------------
# The converter never loses the destination


def convert(src, dst, fmt="minibert", check=None, **options):
    cfg = ConvertConfig(src=str(src), dst=str(dst), format=fmt, **options)
    convert_checkpoint(cfg, check) if check else convert_checkpoint(cfg)


def leftovers(folder):
    """Temporary or old copies a failed conversion could leave beside the destination."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")))


def snapshot(folder):
    """Every entry of a folder, with the bytes of its files."""
    return {p.name: p.read_bytes() if p.is_file() else snapshot(p) for p in sorted(folder.iterdir())}


def test_convert_validates_everything_before_touching_dst(tiny_google, tmp_path):
    convert(tiny_google, tmp_path / "dst", "hf")
    before = snapshot(tmp_path / "dst")
    # A Hugging Face folder missing one tensor.
    src, _ = minibert_folder(tmp_path / "m")
    convert(src, tmp_path / "hf", "hf")
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    del tensors["bert.encoder.layer.1.attention.self.key.bias"]
    save_file(tensors, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CheckpointError, match="cannot load into BertForPreTraining\n  missing: bert.layers.1.key.bias$"):
        convert(tmp_path / "hf", tmp_path / "dst", "hf")
    assert snapshot(tmp_path / "dst") == before and leftovers(tmp_path) == []


def test_convert_keeps_dst_when_the_written_model_fails_its_check(tiny_google, tmp_path):
    convert(tiny_google, tmp_path / "dst", "hf")
    before = snapshot(tmp_path / "dst")

    def failing_check(folder, expected, do_lower_case, say):
        assert (folder / "bert_model.ckpt.index").is_file()  # the new model was written, under a temporary name
        raise CheckpointError("sanity check failed")

    src, _ = minibert_folder(tmp_path / "m")
    with pytest.raises(CheckpointError, match="sanity check failed"):
        convert(src, tmp_path / "dst", "tf", check=failing_check, overwrite=True)
    assert snapshot(tmp_path / "dst") == before and leftovers(tmp_path) == []


def google_release(tiny_google, folder):
    """The files of a Google release folder (the fixture folder also holds test material)."""
    folder.mkdir()
    for name in ("bert_config.json", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "vocab.txt"):
        shutil.copy(tiny_google / name, folder / name)
    return folder


def test_convert_into_a_folder_of_another_format_leaves_one_model(tiny_google, tmp_path, capsys):
    dst = google_release(tiny_google, tmp_path / "dst")
    src, state = minibert_folder(tmp_path / "m")
    before = snapshot(dst)
    with pytest.raises(CheckpointError, match=f"^{dst}: holds another model .*--overwrite true replaces it"):
        convert(src, dst, "hf")
    assert snapshot(dst) == before
    convert(src, dst, "hf", overwrite=True)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert detect_format(dst) == "hf"
    assert_same_tensors(load_checkpoint(dst).state, state)  # the new model, not the old TF one
    assert "[MASK] top 5:" in capsys.readouterr().out


def test_convert_refuses_a_destination_with_other_files(tiny_google, tmp_path):
    dst = tmp_path / "dst"
    shutil.copytree(tiny_google, dst)
    (dst / "notes.txt").write_text("mine")
    (dst / "runs").mkdir()
    (dst / "runs" / "metrics.jsonl").write_text("{}\n")
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=f"^{dst}: holds files that are not a checkpoint's \\(README.md, golden.npz, "
                                              "golden_tanh.npz, inputs.txt, notes.txt, runs/, variables.txt\\)"):
        convert(tiny_google, dst, "hf")
    assert snapshot(tmp_path) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="a file, not a folder"):
        convert(tiny_google, tmp_path / "file", "hf")


def test_convert_keeps_a_users_backup_and_a_symlinked_destination(tiny_google, tmp_path, capsys):
    (tmp_path / "dst.old").mkdir()
    (tmp_path / "dst.old" / "notes.txt").write_text("my backup")
    target = tmp_path / "models" / "hf"
    target.mkdir(parents=True)
    (tmp_path / "dst").symlink_to(target)
    convert(tiny_google, tmp_path / "dst", "hf")
    assert (tmp_path / "dst").is_symlink() and detect_format(target) == "hf"
    assert f"is a symlink to {target}" in capsys.readouterr().out
    convert(tiny_google, tmp_path / "dst", "tf", overwrite=True)  # a second swap: the old side is its own
    assert (tmp_path / "dst.old" / "notes.txt").read_text() == "my backup"
    assert leftovers(tmp_path) == ["dst.old"] and leftovers(target.parent) == []


def test_convert_in_place(tiny_google, tmp_path):
    folder = google_release(tiny_google, tmp_path / "release")
    convert(folder, folder, "hf")
    assert detect_format(folder) == "hf" and not list(folder.glob("*.ckpt*"))
    assert_same_tensors(load_checkpoint(folder).state, load_checkpoint(tiny_google).state)
    convert(folder, folder, "tf")  # and back
    assert detect_format(folder) == "tf" and not (folder / "model.safetensors").exists()
    assert_same_tensors(load_checkpoint(folder).state, load_checkpoint(tiny_google).state)
    assert leftovers(tmp_path) == []


def run_script(script, *args):
    return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, timeout=120)


def test_convert_errors_are_one_line_with_the_traceback_under_debug(tmp_path):
    result = run_script("checkpoints_convert.py", tmp_path / "nothing", tmp_path / "dst")
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'nothing'}: no checkpoint found (expected a TF checkpoint prefix " \
                            "or .index file, or a folder with model.safetensors or pytorch_model.bin)\n"
    result = run_script("checkpoints_convert.py", tmp_path / "nothing", tmp_path / "dst", "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr and "CheckpointError" in result.stderr
    assert not (tmp_path / "dst").exists()


# ---------------------------------------------------------------------------------------------
# Config files, vocabularies, weights files


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 0}, "num_attention_heads must be at least 1, got 0"),
    ({"intermediate_size": -20}, "intermediate_size must be at least 1, got -20"),
    ({"num_attention_heads": 5}, "hidden_size 12 is not a multiple of num_attention_heads 5"),
    ({"hidden_size": "12"}, "hidden_size must be int, got '12'"),
    ({"hidden_dropout_prob": "0.1"}, "hidden_dropout_prob must be float, got '0.1'"),
    ({"num_hidden_layers": 2.0}, "num_hidden_layers must be int, got 2.0"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, change, message):
    folder, _ = minibert_folder(tmp_path / "m")
    config_file = folder / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **change}))
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(config_file))}: {re.escape(message)}$"):
        load_checkpoint(folder)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(config_file))}: {re.escape(message)}$"):
        BertConfig.from_json_file(config_file)


def test_config_that_is_not_an_object(tmp_path):
    folder, _ = minibert_folder(tmp_path / "m")
    (folder / "config.json").write_text("[12, 2]")
    with pytest.raises(CheckpointError, match="config.json: a config must be a JSON object, got list$"):
        load_checkpoint(folder)


def test_unknown_config_keys_are_reported(tmp_path, capsys):
    folder, _ = minibert_folder(tmp_path / "m")
    config_file = folder / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "hiden_size": 768,
                                       "model_type": "bert"}))
    checkpoint = load_checkpoint(folder)
    assert checkpoint.ignored_config_keys == ["hiden_size", "model_type"]
    assert checkpoint.warnings == [f"{config_file}: unknown config keys ignored: hiden_size"]  # not file metadata
    with pytest.warns(UserWarning, match="unknown config keys ignored: hiden_size$"):
        load_pretrained(folder)
    convert(folder, tmp_path / "out")
    assert "ignored config keys: hiden_size, model_type" in capsys.readouterr().out


def test_check_vocab(tmp_path):
    config = BertConfig(vocab_size=30522)
    assert check_vocab(30522, config, "v.txt") == []
    assert check_vocab(FullTokenizer(write_vocab(tmp_path, 30522), check_case=False), config, "v.txt") == []
    # Padded embedding matrices (to a multiple of 128 rows) leave up to 127 unreachable rows.
    assert check_vocab(30522 - 127, config, "v.txt") == [
        "v.txt: 30395 tokens for vocab_size 30522: embedding rows 30395..30521 are unreachable (padding rows are harmless)"]
    with pytest.raises(CheckpointError, match="^v.txt: 30394 tokens but the model's vocab_size is 30522 \\(128 embedding rows"):
        check_vocab(30522 - 128, config, "v.txt")
    with pytest.raises(CheckpointError, match="^v.txt: 30523 tokens but the model's vocab_size is 30522: ids past"):
        check_vocab(30523, config, "v.txt")


def test_converter_and_classifier_check_the_vocabulary(tmp_path, capsys):
    folder, _ = minibert_folder(tmp_path / "m")
    write_vocab(folder, 48)  # 3 rows of the 51 unreachable
    convert(folder, tmp_path / "out")
    assert f"warning: {folder / 'vocab.txt'}: 48 tokens for vocab_size 51" in capsys.readouterr().out
    write_vocab(folder, 52)
    with pytest.raises(CheckpointError, match="52 tokens but the model's vocab_size is 51"):
        convert(folder, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    classifier_folder(tmp_path / "c", HeadConfig(num_labels=3), vocab_size=54)
    assert load_classifier(tmp_path / "c").warnings == [
        f"{tmp_path / 'c' / 'vocab.txt'}: 51 tokens for vocab_size 54: embedding rows 51..53 are unreachable "
        "(padding rows are harmless)"]


def test_read_safetensors_names_the_file_and_checks_its_sidecar(tmp_path):
    file = tmp_path / "last" / "optimizer.safetensors"
    file.parent.mkdir()
    save_file({"m": torch.arange(6.0)}, file)
    assert torch.equal(read_safetensors(file)["m"], torch.arange(6.0))  # no sidecar: nothing to verify
    assert write_sha256_sidecar(file).read_text().endswith("  optimizer.safetensors\n")
    assert torch.equal(read_safetensors(file)["m"], torch.arange(6.0))
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x40
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"^{file}: sha256 differs from the one recorded in {file}.sha256"):
        read_safetensors(file)
    file.write_bytes(bytes(data[:40]))
    (tmp_path / "last" / "optimizer.safetensors.sha256").unlink()
    with pytest.raises(CheckpointError, match=f"^{file}: cannot read safetensors file"):
        read_safetensors(file)
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'nothing.safetensors'}: no such file$"):
        read_safetensors(tmp_path / "nothing.safetensors")
