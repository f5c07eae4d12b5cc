"""The scripts on a CUDA device: the same numbers as on the CPU, and the GPU-only paths (bf16 and
fp16 autocast, the Triton varlen kernel under --padding auto). NCCL needs two GPUs: train.py
under torchrun runs one process per GPU, and a single process joins no group.

Skipped without a CUDA device (CI has none); run them on a GPU machine with
`python -m pytest -m gpu`. The CPU runs they compare with are the ones the rest of the suite checks
against Google's and Hugging Face's numbers. Matrix products stay in exact fp32 (torch leaves TF32
off for them by default), so fp32 runs differ from the CPU's only by the order of additions.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import predict
import pretrain
from minibert.finetune import finetune
from minibert.checkpoints import names
from minibert.checkpoints.formats import load_checkpoint
from minibert.model.kernels import triton_available

from helpers import ACCEPTANCE, PRETRAINING, STEPS, config, make_google_dir, make_tiny_model, write_split

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda")
    make_tiny_model(folder / "model")
    make_tiny_model(folder / "model_no_dropout", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    for name, n, seed in (("train", 150, 1), ("dev", 30, 2), ("test", 45, 3)):
        write_split(folder / f"{name}.jsonl", n, seed)
    return folder


def records(out: Path, split: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


@pytest.mark.parametrize("padding", ["padded", "unpadded"])
def test_fp32_training_on_cuda_equals_the_cpu_run(files, tmp_path, padding):
    """Dropout off (the devices draw different masks), fp32, 5 epochs: every logged loss of the CUDA
    run (padded: torch's SDPA; unpadded: the Triton varlen kernel where Triton is installed, else
    attention re-padded) equals the CPU run's, and both learn the topics."""
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = config(files / "model_no_dropout", files, tmp_path / device, dropout=0.0, log_every=1,
                     padding=padding if device == "cuda" else "padded", device=device)
        runs[device] = finetune(cfg)
    cpu, cuda = records(tmp_path / "cpu", "train"), records(tmp_path / "cuda", "train")
    assert [r["step"] for r in cpu] == [r["step"] for r in cuda] and len(cpu) == 95
    worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(cpu, cuda))
    print(f"\n{padding}: largest relative loss difference CPU vs CUDA over {len(cpu)} steps: {worst:.2e}")
    assert worst < 1e-4
    assert runs["cpu"]["test_accuracy"] > 0.8 and runs["cuda"]["test_accuracy"] == runs["cpu"]["test_accuracy"]


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_mixed_precision_on_cuda_learns_and_predicts(files, tmp_path, precision):
    """auto is bf16 on GPUs with native bf16 and takes the Triton kernel (padding auto); fp16 runs
    with loss scaling. Both learn the topics; predict.py on the GPU agrees with training's test score."""
    cfg = config(files / "model", files, tmp_path / "run", precision=precision, padding="auto", device="cuda")
    results = finetune(cfg)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    assert results["precision"] == (expected if precision == "auto" else "fp16")
    assert saved["padding"] == ("unpadded" if triton_available() else "padded")  # auto: the kernel where it imports
    assert results["test_accuracy"] > 0.8  # chance is 1/3
    predictions = predict.main(predict.PredictConfig.of(model=str(tmp_path / "run" / "best"),
                                                        input=str(files / "test.jsonl"),
                                                        output=str(tmp_path / "p.jsonl"), device="cuda",
                                                        precision=results["precision"]))
    gold = [json.loads(line)["label"] for line in (files / "test.jsonl").read_text().splitlines()]
    accuracy = sum(p["label"] == g for p, g in zip(predictions, gold)) / len(gold)
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1 / 45)  # at most one borderline text


def test_pretraining_on_cuda_matches_googles_run(tmp_path, monkeypatch):
    """test_pretrain's acceptance run (Google's 20 steps of run_pretraining.py) on the GPU."""
    init = make_google_dir(tmp_path / "init")
    monkeypatch.chdir(PRETRAINING)
    out = tmp_path / "out"
    pretrain.main(["train", f"--init={init}", "--input_file=sample_text_64/examples.tfrecord", f"--output_dir={out}",
                   *ACCEPTANCE, "--device=cuda"])
    expected = json.loads((STEPS / "steps.json").read_text())["steps"]
    mine = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert [r["step"] for r in mine] == [s["step"] for s in expected]
    worst = max(abs(m[k] - g[k]) / abs(g[k]) for m, g in zip(mine, expected) for k in ("loss", "mlm_loss", "nsp_loss"))
    checkpoint = load_checkpoint(out / "final")
    final = np.load(STEPS / "final.npz")
    table = {tf: ours for ours, tf, _ in names.expand(checkpoint.config.num_hidden_layers)}
    weights = 0.0
    for tf_name in final.files:
        value = checkpoint.state[table[tf_name]].numpy()
        value = value.T if names.tf_is_transposed(tf_name) else value
        weights = max(weights, float(np.abs(value - final[tf_name]).max()))
    print(f"\nCUDA vs Google: losses within {worst:.2e} relative, final weights within {weights:.2e}")
    assert worst < 1e-5 and weights < 2e-5  # the CPU run's tolerances



@pytest.mark.parametrize("padding", ["padded", "unpadded"])
def test_gradient_checkpointing_on_cuda_same_gradients_less_memory(padding):
    """bf16 autocast with dropout on CUDA (F.dropout's CUDA generator; unpadded: the Triton kernel's
    Philox seed): the same loss and gradients with each layer recomputed, and less memory allocated."""
    from minibert.model.bert import BertModel
    from minibert.model.config import BertConfig

    config = BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512)
    torch.manual_seed(0)
    model = BertModel(config, padding=padding).cuda().train()
    ids = torch.randint(1, 1000, (16, 512), device="cuda")
    mask = (torch.arange(512, device="cuda")[None] < torch.randint(20, 513, (16, 1), device="cuda")).long()

    def run(checkpointing):
        model.checkpointing = checkpointing
        torch.manual_seed(1)
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, attention_mask=mask)
        loss = out.pooled_output.float().square().sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return loss, grads, torch.cuda.max_memory_allocated() - resident

    loss, grads, memory = run("off")
    loss_ckpt, grads_ckpt, memory_ckpt = run("layers")
    assert torch.allclose(loss, loss_ckpt, rtol=1e-5)
    # bf16, and CUDA kernels may add in another order on the rerun; other dropout masks differ by O(1).
    for g, g_ckpt in zip(grads, grads_ckpt):
        assert (g - g_ckpt).abs().max() <= 2e-2 * g.abs().max().clamp(min=1e-6)
    assert memory_ckpt < 0.6 * memory, (memory, memory_ckpt)
