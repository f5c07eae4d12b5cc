"""Checkpoint conversion: bit-exact round trips, Hugging Face variants, clear errors, nothing skipped silently."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import checkpoints_convert
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
from minibert.checkpoints.tf_checkpoint import read_tf_checkpoint, write_tf_checkpoint
from minibert.errors import CheckpointError
from minibert.model.bert import BertModel
from minibert.model.config import BertConfig
from minibert.model.pretraining import BertForPreTraining


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
    cfg = checkpoints_convert.ConvertConfig(src=str(tiny_google), dst=str(tmp_path / "hf"), format="hf")
    checkpoints_convert.main(cfg)
    out = capsys.readouterr().out
    assert "read tf checkpoint" in out and "mapped 46 tensors (encoder + mlm + nsp)" in out
    assert "wrote hf checkpoint" in out and "[MASK] top 5:" in out
    assert detect_format(tmp_path / "hf") == "hf"
