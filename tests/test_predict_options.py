"""predict.py's speed options: --precision auto, --threads, --quantize int8, and the saved precision."""

import json

import pytest
import torch

import predict
from minibert.finetune import finetune
from minibert.errors import ConfigError
from minibert.training.machine import resolve_precision

from helpers import config

pytestmark = pytest.mark.usefixtures("keep_thread_count")  # predict.main sets torch's thread count (--threads)


@pytest.fixture(scope="module")
def trained(tiny_model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = finetune(config(tiny_model, data, out, epochs=3, precision="auto"))
    return out / "best", results


def predictions(model, data, tmp_path, **options):
    options = {"device": "cpu", **options}
    cfg = predict.PredictConfig.of(model=str(model), input=str(data / "test.jsonl"),
                                output=str(tmp_path / "p.jsonl"), **options)
    return predict.main(cfg)


def test_precision_auto_is_resolved_saved_and_printed(trained, capsys):
    _, results = trained
    assert results["precision"] == resolve_precision("auto", torch.device("cpu"))
    saved = json.loads((trained[0].parent / "config.json").read_text())
    assert saved["padding"] == "unpadded"  # auto on the CPU
    assert saved["precision"] == results["precision"]  # the resolved name, never "auto"


def test_int8_agrees_with_fp32_on_most_texts(trained, data, tmp_path, capsys):
    fp32 = predictions(trained[0], data, tmp_path, precision="fp32")
    int8 = predictions(trained[0], data, tmp_path, quantize="int8", threads=1)
    assert "int8 linear layers" in capsys.readouterr().err
    assert torch.get_num_threads() == 1
    same = sum(a["label"] == b["label"] for a, b in zip(fp32, int8)) / len(fp32)
    assert same >= 0.9, same
    gaps = [abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(fp32, int8) for k in a["probabilities"]]
    assert 0 < max(gaps) < 0.2  # quantization changes the numbers, a little


def test_int8_needs_the_cpu(trained, data, tmp_path):
    with pytest.raises(ConfigError, match="--quantize int8 runs on the CPU only: --device cuda:0; use --device cpu"):
        predictions(trained[0], data, tmp_path, quantize="int8", precision="fp32", device="cuda:0")
    assert predictions(trained[0], data, tmp_path, quantize="int8", device="auto")  # auto: int8 on the CPU


def test_bad_threads_and_batch_size_are_refused(trained, data, tmp_path):
    with pytest.raises(ConfigError, match=r"^--threads -1: must be at least 0 \(0 = torch's default\)$"):
        predictions(trained[0], data, tmp_path, threads=-1)
    with pytest.raises(ConfigError, match="^--batch_size 0: must be at least 1$"):
        predictions(trained[0], data, tmp_path, batch_size=0)
    assert not (tmp_path / "p.jsonl").exists()


def test_unpadded_and_padded_predictions_agree(trained, data, tmp_path, capsys):
    unpadded = predictions(trained[0], data, tmp_path, precision="fp32", padding="unpadded")
    padded = predictions(trained[0], data, tmp_path, precision="fp32", padding="padded")
    assert "padded encoder" in capsys.readouterr().err
    for a, b in zip(unpadded, padded):
        assert a["label"] == b["label"]
        assert all(abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-5 for k in a["probabilities"])
